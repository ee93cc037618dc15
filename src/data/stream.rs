//! Streaming copy: a capture and a copier together. Replay what the capture saw (each key from the
//! source's current state), reconcile in full whenever the capture may have missed something, and tail
//! until told to stop. Used by the `stream_copy` step and by `ecmigrate copy --live`.
//!
//! The run's background [`Tailer`] never gives up on a failed round: it retries with a bounded backoff,
//! PINGs each side to say which one fails ([`StreamHealth`], in the status the run writes for `status`),
//! and once both answer, closes the gap with a full reconcile pass — a failed round may have taken keys
//! off the pending set without copying them, and a target that restarted may have lost what it held.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use redis::aio::MultiplexedConnection;
use serde::Serialize;

use crate::data::capture::{Capture, CaptureStatus};
use crate::data::connect::{RedisEndpoint, connect};
use crate::data::copier::{Copier, CopyCounts};
use crate::data::error::{DataError, Role};

mod health;
pub use health::{HealthChange, Side, StreamHealth, Trouble};

/// The first retry of a failed round waits this long; each next one twice as long, up to [`MAX_RETRY`].
pub const FIRST_RETRY: Duration = Duration::from_millis(200);
/// The longest wait between two retries of a failed round.
pub const MAX_RETRY: Duration = Duration::from_secs(5);
/// A healthy, idle tailer PINGs both sides this often, so a dead side is seen without any write.
const PROBE_EVERY: Duration = Duration::from_secs(1);
/// A PING unanswered for this long is a failure (connecting has its own 5 s bound).
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);
/// While waiting to retry, the status is reported at least this often (so `status` never sees it stale).
const STATUS_EVERY: Duration = Duration::from_secs(1);

pub struct StreamCopy {
    pub copier: Arc<Copier>,
    pub capture: Capture,
    /// Full reconcile passes made (each one after a gap).
    pub reconciles: u64,
    /// Captured changes replayed.
    pub replayed: u64,
    /// Which side fails, as the background tailer last found it.
    pub health: StreamHealth,
    /// What the node of each side is (`source primary`, `target primary`), for errors; `None`: errors
    /// are returned as the copier words them.
    nodes: Option<[String; 2]>,
    /// The tailer's PING connection to each side, kept while it answers.
    probes: [Option<MultiplexedConnection>; 2],
}

#[derive(Debug, Clone, Serialize)]
pub struct StreamStatus {
    pub capture: CaptureStatus,
    pub copy: CopyCounts,
    pub reconciles: u64,
    pub replayed: u64,
    pub health: StreamHealth,
}

impl StreamCopy {
    pub fn new(copier: Arc<Copier>, capture: Capture) -> Self {
        StreamCopy {
            copier,
            capture,
            reconciles: 0,
            replayed: 0,
            health: StreamHealth::default(),
            nodes: None,
            probes: [None, None],
        }
    }

    /// Name the node each side's endpoint is (`source primary`, `target primary`): errors then say
    /// which one failed, not only its address.
    pub fn name_nodes(&mut self, source: impl Into<String>, target: impl Into<String>) {
        self.nodes = Some([source.into(), target.into()]);
    }

    pub fn status(&self) -> StreamStatus {
        StreamStatus {
            capture: self.capture.status(),
            copy: self.copier.stats.counts(),
            reconciles: self.reconciles,
            replayed: self.replayed,
            health: self.health.clone(),
        }
    }

    /// Copy everything and delete what the source no longer has. The gap is cleared *before* the pass, so a
    /// gap that opens during it is kept for the next one.
    pub async fn reconcile(
        &mut self,
        progress: &(dyn Fn(u64, u64) + Send + Sync),
    ) -> Result<(), DataError> {
        self.reconcile_pass(progress)
            .await
            .map_err(|e| self.named(e))
    }

    async fn reconcile_pass(
        &mut self,
        progress: &(dyn Fn(u64, u64) + Send + Sync),
    ) -> Result<(), DataError> {
        self.capture.reset_gap().await?;
        // A gap on a cluster may be a failover or a slot migration: route by the topologies as they are.
        self.copier.forget_routes().await;
        self.copier.copy_all(progress).await?;
        self.copier.delete_extraneous().await?;
        self.reconciles += 1;
        Ok(())
    }

    /// Replay every pending change. Returns how many keys were replayed. A failure marks a gap: the keys
    /// of the failed batch are off the pending set, so only a full reconcile pass can bring them back.
    pub async fn drain(&mut self) -> Result<u64, DataError> {
        self.drain_pending().await.map_err(|e| self.named(e))
    }

    async fn drain_pending(&mut self) -> Result<u64, DataError> {
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
                if let Err(e) = self.copier.copy_keys(db, &keys).await {
                    self.capture.mark_gap(format!(
                        "a replay of captured changes failed ({}); its keys were not copied",
                        self.describe(&e)
                    ));
                    return Err(e);
                }
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
        self.catch_up_raw(progress).await.map_err(|e| self.named(e))
    }

    async fn catch_up_raw(
        &mut self,
        progress: &(dyn Fn(u64, u64) + Send + Sync),
    ) -> Result<Option<String>, DataError> {
        let gap = self.capture.gap().await;
        if gap.is_some() {
            self.reconcile_pass(progress).await?;
        }
        self.drain_pending().await?;
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

    /// Which side an error concerns: its peer's role, else the endpoint it names.
    fn side_of(&self, e: &DataError) -> Side {
        let Some(peer) = e.peer() else {
            return Side::Local;
        };
        let (source, target) = self.copier.endpoints();
        let is = |ep: &RedisEndpoint| ep.host == peer.host && ep.port == peer.port;
        match peer.role {
            Some(Role::Source) => Side::Source,
            Some(Role::Target) => Side::Target,
            None if is(source) => Side::Source,
            None if is(target) => Side::Target,
            None => Side::Local,
        }
    }

    /// How errors name the node of `side`: as named, else by the side.
    fn node(&self, side: Side) -> String {
        match (&self.nodes, side) {
            (Some(n), Side::Source) => n[0].clone(),
            (Some(n), Side::Target) => n[1].clone(),
            _ => side.as_str().to_string(),
        }
    }

    /// The error's text with its node named after its address: `cannot connect to rediss://…:6380/0
    /// (target primary): …`.
    pub fn describe(&self, e: &DataError) -> String {
        let text = e.to_string();
        let side = self.side_of(e);
        let Some(peer) = e.peer().filter(|_| side != Side::Local) else {
            return text;
        };
        let url = peer.to_string();
        let tagged = format!("{url} ({})", self.node(side));
        if text.contains(&url) {
            text.replacen(&url, &tagged, 1)
        } else {
            format!("{tagged}: {text}")
        }
    }

    /// An error as the stream returns it: preceded by its node, once the nodes are named.
    fn named(&self, e: DataError) -> DataError {
        let side = self.side_of(&e);
        if self.nodes.is_none() || side == Side::Local {
            return e;
        }
        let node = self.node(side);
        e.context(node)
    }

    /// PING one side on a kept connection (a new one after an error), bounded.
    async fn probe(&mut self, side: Side) -> Result<(), DataError> {
        let (source, target) = self.copier.endpoints();
        let (endpoint, role) = match side {
            Side::Source => (source.clone(), Role::Source),
            _ => (target.clone(), Role::Target),
        };
        let mut conn = match self.probes[side.index()].take() {
            Some(c) => c,
            None => connect(&endpoint).await.map_err(|e| e.role(role))?,
        };
        let ping = redis::cmd("PING");
        let pong = ping.query_async::<redis::Value>(&mut conn);
        match tokio::time::timeout(PROBE_TIMEOUT, pong).await {
            Ok(Ok(_)) => {
                self.probes[side.index()] = Some(conn);
                Ok(())
            }
            Ok(Err(e)) => Err(DataError::redis(&endpoint, &e)
                .role(role)
                .context(format!("PING {}", endpoint.display_url()))),
            Err(_) => Err(DataError::Timeout {
                peer: crate::data::Peer {
                    role: Some(role),
                    ..crate::data::Peer::from(&endpoint)
                },
                message: format!(
                    "PING {}: no answer within {} ms",
                    endpoint.display_url(),
                    PROBE_TIMEOUT.as_millis()
                ),
            }),
        }
    }

    /// One round of the background tailer. With `probe`, each side is PINGed first, and a side that
    /// does not answer skips the copy. A failure is recorded against its side and marks a gap (a full
    /// reconcile pass follows once everything answers); a side that answered this round, and did not
    /// fail in it, has recovered. Returns the health changes to announce.
    async fn tailer_round(&mut self, probe: bool) -> Vec<HealthChange> {
        let mut changes = Vec::new();
        let mut failed: Vec<(Side, DataError)> = Vec::new();
        let mut answered: Vec<Side> = Vec::new();
        let mut caught_up = false;
        if probe {
            for side in [Side::Source, Side::Target] {
                match self.probe(side).await {
                    Ok(()) => answered.push(side),
                    Err(e) => failed.push((side, e)),
                }
            }
        }
        let was_failing = self.health.failing();
        if failed.is_empty() {
            match self.catch_up_raw(&|_, _| {}).await {
                Ok(gap) => {
                    // A gap after a failure is announced by the recovery; any other is announced here.
                    if let Some(gap) = gap.filter(|_| !was_failing) {
                        changes.push(HealthChange::Reconciled { gap });
                    }
                    caught_up = true;
                    answered.extend([Side::Source, Side::Target, Side::Local]);
                }
                Err(e) => failed.push((self.side_of(&e), e)),
            }
        }
        for (side, e) in &failed {
            let text = self.describe(e);
            self.capture.mark_gap(format!(
                "the stream could not copy for a while ({text}); a full reconcile pass follows"
            ));
            changes.extend(self.health.fail(*side, e, text));
        }
        for side in answered {
            if !failed.iter().any(|(s, _)| *s == side) {
                changes.extend(self.health.recover(side, caught_up));
            }
        }
        changes
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
    /// Where the stream's status is kept for `ecmigrate status`, once tailing.
    pub status_file: Option<std::path::PathBuf>,
}

/// What the tailer tells its owner (it has no step context to report through).
pub struct TailerHooks {
    /// After every round, and at least every second while waiting to retry: the stream's status.
    pub on_status: Box<dyn Fn(&StreamStatus) + Send + Sync>,
    /// Once when a side starts failing, once when it recovers.
    pub on_health: Box<dyn Fn(&HealthChange) + Send + Sync>,
}

/// The wait before the next retry of a failed round: [`FIRST_RETRY`], doubling up to [`MAX_RETRY`].
struct Backoff {
    next: Duration,
}

impl Backoff {
    fn new() -> Backoff {
        Backoff { next: FIRST_RETRY }
    }

    fn next(&mut self) -> Duration {
        let wait = self.next;
        self.next = (wait * 2).min(MAX_RETRY);
        wait
    }

    fn reset(&mut self) {
        self.next = FIRST_RETRY;
    }
}

type StopSignal = Arc<(std::sync::atomic::AtomicBool, tokio::sync::Notify)>;

/// A background task replaying changes as they come, until stopped. A failed round is retried with
/// backoff for as long as it takes; the stream's health says what fails meanwhile.
pub struct Tailer {
    stop: StopSignal,
    task: tokio::task::JoinHandle<()>,
}

impl Tailer {
    /// Tail `stream`, reporting through `hooks`.
    pub fn start(stream: Arc<tokio::sync::Mutex<StreamCopy>>, hooks: TailerHooks) -> Tailer {
        let stop: StopSignal = Arc::new((
            std::sync::atomic::AtomicBool::new(false),
            tokio::sync::Notify::new(),
        ));
        let task = tokio::spawn(tail(stream, hooks, stop.clone()));
        Tailer { stop, task }
    }

    /// Stop after the current round. Only a tailer that panicked is an error: failed rounds are in the
    /// stream's health, and whoever stops the tailer catches up once more anyway.
    pub async fn stop(self) -> Result<(), DataError> {
        self.stop.0.store(true, std::sync::atomic::Ordering::SeqCst);
        self.stop.1.notify_one();
        match self.task.await {
            Ok(()) => Ok(()),
            Err(e) if e.is_cancelled() => Ok(()),
            Err(e) => Err(DataError::Internal(format!("the tailer stopped: {e}"))),
        }
    }
}

/// The tailer's loop: wait for a change (or a short tick; or the backoff after a failure), holding no
/// lock so others can take the stream, then one round with the stream held.
async fn tail(stream: Arc<tokio::sync::Mutex<StreamCopy>>, hooks: TailerHooks, stop: StopSignal) {
    let mut backoff = Backoff::new();
    let mut last_probe = Instant::now();
    loop {
        if stop.0.load(std::sync::atomic::Ordering::SeqCst) {
            return;
        }
        let (pending, failing) = {
            let s = stream.lock().await;
            (s.capture.has_pending(), s.health.failing())
        };
        if failing {
            if !wait_to_retry(backoff.next(), &stream, &hooks, &stop).await {
                return;
            }
        } else if !pending {
            tokio::select! {
                _ = stop.1.notified() => return,
                _ = tokio::time::sleep(Duration::from_millis(100)) => {}
            }
        }
        let mut s = stream.lock().await;
        let probe = failing || last_probe.elapsed() >= PROBE_EVERY;
        if probe {
            last_probe = Instant::now();
        }
        let changes = s.tailer_round(probe).await;
        if !s.health.failing() {
            backoff.reset();
        }
        for change in &changes {
            (hooks.on_health)(change);
        }
        (hooks.on_status)(&s.status());
    }
}

/// Sleep `wait`, reporting the status every [`STATUS_EVERY`] meanwhile. `false` when told to stop.
async fn wait_to_retry(
    wait: Duration,
    stream: &tokio::sync::Mutex<StreamCopy>,
    hooks: &TailerHooks,
    stop: &StopSignal,
) -> bool {
    let until = tokio::time::Instant::now() + wait;
    loop {
        let now = tokio::time::Instant::now();
        if now >= until {
            return true;
        }
        tokio::select! {
            _ = stop.1.notified() => return false,
            _ = tokio::time::sleep((until - now).min(STATUS_EVERY)) => {}
        }
        if tokio::time::Instant::now() < until {
            (hooks.on_status)(&stream.lock().await.status());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_retry_backoff_doubles_from_200_ms_to_5_s_and_starts_over_after_a_recovery() {
        let mut b = Backoff::new();
        let waits: Vec<u64> = (0..7).map(|_| b.next().as_millis() as u64).collect();
        assert_eq!(waits, [200, 400, 800, 1600, 3200, 5000, 5000]);
        b.reset();
        assert_eq!(b.next(), FIRST_RETRY);
    }
}
