//! Streaming copy: a capture and a copier together. Replay what the capture saw (each key from the
//! source's current state), reconcile in full whenever the capture may have missed something, and tail
//! until told to stop. Used by the `stream_copy` step and by `ecmigrate copy --live`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

use crate::data::capture::{Capture, CaptureStatus};
use crate::data::copier::{Copier, CopyCounts};
use crate::data::error::DataError;

pub struct StreamCopy {
    pub copier: Arc<Copier>,
    pub capture: Capture,
    /// Full reconcile passes made (each one after a gap).
    pub reconciles: u64,
    /// Captured changes replayed.
    pub replayed: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct StreamStatus {
    pub capture: CaptureStatus,
    pub copy: CopyCounts,
    pub reconciles: u64,
    pub replayed: u64,
}

impl StreamCopy {
    pub fn new(copier: Arc<Copier>, capture: Capture) -> Self {
        StreamCopy {
            copier,
            capture,
            reconciles: 0,
            replayed: 0,
        }
    }

    pub fn status(&self) -> StreamStatus {
        StreamStatus {
            capture: self.capture.status(),
            copy: self.copier.stats.counts(),
            reconciles: self.reconciles,
            replayed: self.replayed,
        }
    }

    /// Copy everything and delete what the source no longer has. The gap is cleared *before* the pass, so a
    /// gap that opens during it is kept for the next one.
    pub async fn reconcile(
        &mut self,
        progress: &(dyn Fn(u64, u64) + Send + Sync),
    ) -> Result<(), DataError> {
        self.capture.reset_gap().await?;
        self.copier.copy_all(progress).await?;
        self.copier.delete_extraneous().await?;
        self.reconciles += 1;
        Ok(())
    }

    /// Replay every pending change. Returns how many keys were replayed.
    pub async fn drain(&mut self) -> Result<u64, DataError> {
        let mut total = 0u64;
        loop {
            let batch = self.capture.take(10_000)?;
            if batch.is_empty() {
                return Ok(total);
            }
            let mut by_db: BTreeMap<i64, Vec<Vec<u8>>> = BTreeMap::new();
            for (db, key) in batch {
                by_db.entry(db).or_default().push(key);
            }
            for (db, keys) in by_db {
                self.copier.copy_keys(db, &keys).await?;
                total += keys.len() as u64;
                self.replayed += keys.len() as u64;
            }
        }
    }

    /// Bring the target up to date: a full reconcile if the capture had a gap, then the pending changes.
    /// Returns the gap that forced a reconcile, if one did.
    pub async fn catch_up(
        &mut self,
        progress: &(dyn Fn(u64, u64) + Send + Sync),
    ) -> Result<Option<String>, DataError> {
        let gap = self.capture.gap().await;
        if gap.is_some() {
            self.reconcile(progress).await?;
        }
        self.drain().await?;
        Ok(gap)
    }

    /// Tail until `stop` resolves, then catch up one last time. `tick` is called after every round.
    pub async fn tail_until(
        &mut self,
        stop: impl std::future::Future<Output = ()>,
        tick: &(dyn Fn(&StreamStatus) + Send + Sync),
        progress: &(dyn Fn(u64, u64) + Send + Sync),
    ) -> Result<(), DataError> {
        tokio::pin!(stop);
        loop {
            tokio::select! {
                _ = &mut stop => break,
                _ = self.capture.wait_for_change(Duration::from_millis(200)) => {}
            }
            self.catch_up(progress).await?;
            tick(&self.status());
        }
        self.catch_up(progress).await?;
        tick(&self.status());
        Ok(())
    }
}

/// The streaming state of one run, shared by the steps that start, feed and stop it: the capture from
/// `backup` on, then the stream (capture + copier) from `stream_copy` on, tailed in the background until
/// `cutover`.
#[derive(Default)]
pub struct LiveState {
    /// Started, not yet joined to a copier (between backup and stream_copy).
    pub capture: Option<Capture>,
    /// Whether the capture was subscribed before the snapshot was requested (else it has a gap).
    pub started_before_snapshot: bool,
    pub stream: Option<Arc<tokio::sync::Mutex<StreamCopy>>>,
    pub tailer: Option<Tailer>,
}

/// A background task replaying changes as they come, until stopped.
pub struct Tailer {
    stop: Arc<(std::sync::atomic::AtomicBool, tokio::sync::Notify)>,
    task: tokio::task::JoinHandle<Result<(), DataError>>,
}

impl Tailer {
    /// Tail `stream`; every round, `on_round` sees its status (for progress and the status file).
    pub fn start(
        stream: Arc<tokio::sync::Mutex<StreamCopy>>,
        on_round: Box<dyn Fn(&StreamStatus) + Send + Sync>,
    ) -> Tailer {
        let stop = Arc::new((
            std::sync::atomic::AtomicBool::new(false),
            tokio::sync::Notify::new(),
        ));
        let stopped = stop.clone();
        let task = tokio::spawn(async move {
            loop {
                if stopped.0.load(std::sync::atomic::Ordering::SeqCst) {
                    return Ok(());
                }
                // Wait for a change (or a short tick), holding no lock, so others can take the stream.
                let wait = {
                    let s = stream.lock().await;
                    s.capture.has_pending()
                };
                if !wait {
                    tokio::select! {
                        _ = stopped.1.notified() => return Ok(()),
                        _ = tokio::time::sleep(Duration::from_millis(100)) => {}
                    }
                }
                let mut s = stream.lock().await;
                s.catch_up(&|_, _| {}).await?;
                on_round(&s.status());
            }
        });
        Tailer { stop, task }
    }

    /// Stop after the current round; the error of a failed round, if any.
    pub async fn stop(self) -> Result<(), DataError> {
        self.stop.0.store(true, std::sync::atomic::Ordering::SeqCst);
        self.stop.1.notify_one();
        match self.task.await {
            Ok(r) => r,
            Err(e) if e.is_cancelled() => Ok(()),
            Err(e) => Err(DataError::Internal(format!("the tailer stopped: {e}"))),
        }
    }
}
