//! `verify --full` on the bulk lane (`data::resp`), in the copier's shape: per source primary one scanner
//! (SCAN, in batches as [`crate::data::keyscan`] orders them) feeding a bounded channel, read by lanes
//! that each compare one batch at a time on connections of their own (one to the source primary, one
//! per target primary it routes to), all lanes of all primaries in flight at once. Memory stays
//! bounded: the channel holds at most two batches per lane, a cluster's scanner gathers at most 4 MiB
//! of key names, and a round trip may read at most `max_batch_reply_bytes` of replies per side.
//!
//! Why not the redis crate's connections, as before: the comparison read each key with TYPE, PTTL and a
//! typed read on both sides and parsed every reply into owned values; measured on 1M keys it checked
//! 135k keys/s where the copy it checked moved 358k. The servers' CPU bounds both; the comparison asks
//! each side what the copy asks the source (see [`super::batch`]), so it costs the target more than the
//! copy's writes do. Measured on 1M keys (plain source, TLS + AUTH target, 2 busy cores, 3 alternating
//! runs, medians): 0.59 of the old verifier's wall time and 0.33 of its CPU; 1.38 times the wall time
//! of a copy of the same keys, its own process using 1.8 times the copy's CPU. Since then (payload
//! comparison of hashtable sets, encoded heads, the lane's own decoder; 200k keys, 3 alternating runs):
//! the verifier's own CPU 0.22-0.23 s against the copy's 0.17-0.22 s, both servers' CPU alike in both,
//! so a verify costs about what the copy it checks costs, its servers reading where the copy's target
//! writes. Then the target asked once a batch instead of twice (see [`super::batch`]), measured on 300k
//! keys seeded by `scripts/bench/seed.py` (plain source, TLS + AUTH target, Redis 7.0.15, 2 cores shared
//! with another engineer's builds, load 2-7): `ecmigrate copy`, then `verify --full` before and after,
//! 18 rounds; CPU from /proc of each server and /usr/bin/time of ecmigrate; medians of each round's
//! ratio to its copy: wall 1.03 before, 1.03 after (0.82-1.45 round by round); CPU of all three
//! processes 1.10 before, 1.06 after (target server 1.20 then 1.11, the verifier's own 1.17 then 1.12,
//! the source 0.99 then 0.98). After against before in the same rounds: CPU 0.95, wall 0.99; in 10 more
//! alternating runs of the verifier alone, its own CPU 1.00 and wall 1.02 of before: a few percent of
//! the servers' CPU at best, within this machine's noise. The same keys from a 3-primary plain cluster
//! into a 4-primary TLS + AUTH one, 6 rounds: wall 1.16 of the copy before, 0.99 after (0.92-1.30), CPU
//! 1.18 then 1.05. What is left is mostly the target's: in `INFO commandstats` its PTTLs took 1.8-2.1
//! µs a key where the source's took 1.2-1.4 (the source reads keys in SCAN's order, just touched by
//! SCAN; the target in an order not its own), and its DUMPs 8-9 µs a non-string, where a copy's target
//! takes one MSET per batch and a RESTORE (5.4 µs).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::{Mutex, mpsc};

use super::batch::{Batch, BatchError, Conns, Found};
use super::{Pass, VerifyOptions};
use crate::data::error::{DataError, Peer, Role};
use crate::data::keyscan::{Order, scan_keys};
use crate::data::resp::{KeyBatch, PipeConn};

/// Compare every key of database `db` of source primary `s`: its scanner and `lanes` lanes.
pub(super) async fn verify_primary(
    pass: &Pass<'_>,
    db: i64,
    s: usize,
    lanes: usize,
    options: &VerifyOptions,
) -> Result<(), DataError> {
    // Bounded: the scanner waits when the lanes fall behind, so memory does not grow with the keyspace.
    let (tx, rx) = mpsc::channel::<KeyBatch>(lanes * 2);
    let rx = Mutex::new(rx);
    let source = pass.routed.source.shards[s].endpoint.with_db(db);
    let scan_conn = PipeConn::open(&source)
        .await
        .map_err(|e| e.role(Role::Source))?;
    let limit = AtomicUsize::new(options.batch.max(1));
    let routed = &pass.routed;
    let order = Order::between(&routed.source, &routed.target);
    let scanner = scan_keys(
        scan_conn,
        Peer::from(&source),
        "verify",
        options.batch,
        order,
        tx,
    );
    let work = (0..lanes).map(|_| {
        let (rx, limit) = (&rx, &limit);
        async move {
            let mut lane = Lane {
                pass,
                db,
                s,
                options,
                limit,
                conns: Conns::default(),
            };
            loop {
                let next = rx.lock().await.recv().await;
                let Some(found) = next else {
                    return Ok::<(), DataError>(());
                };
                lane.verify(&found.keys()).await?;
            }
        }
    });
    // try_join: a lane's error drops the scanner, which would otherwise wait forever on a full channel
    // that no lane reads any more.
    tokio::try_join!(scanner, futures_util::future::try_join_all(work))?;
    Ok(())
}

/// One lane of one source primary: its connections, and the batch size shared with the primary's other
/// lanes.
struct Lane<'p, 'a> {
    pass: &'p Pass<'a>,
    db: i64,
    s: usize,
    options: &'p VerifyOptions,
    /// Keys per batch now: `options.batch`, halved each time a batch's replies exceed their bound, and
    /// sized again from the bytes per key of each batch that fits.
    limit: &'p AtomicUsize,
    conns: Conns,
}

impl Lane<'_, '_> {
    /// Compare `keys` (one batch of the scanner) in batches of the current limit and record what
    /// differs. A batch whose replies exceed their bound is split in halves; a single key whose value
    /// alone exceeds it is compared by the typed comparison, which reads it whole as the verifier always
    /// did.
    async fn verify(&mut self, keys: &[&[u8]]) -> Result<(), DataError> {
        let limit = self.limit.load(Ordering::Relaxed).max(1);
        let mut queue: VecDeque<&[&[u8]]> = keys.chunks(limit).collect();
        while let Some(keys) = queue.pop_front() {
            match self.verify_batch(keys).await {
                Ok(found) => {
                    self.fit_limit(found.bytes_per_key);
                    self.pass
                        .tally(self.db, keys.len(), found.differ, found.target_expiring);
                }
                Err(BatchError::Failed(e)) => return Err(e),
                Err(BatchError::TooLarge) if keys.len() > 1 => {
                    let half = keys.len().div_ceil(2);
                    self.limit.fetch_min(half, Ordering::Relaxed);
                    let (first, second) = keys.split_at(half);
                    queue.push_front(second);
                    queue.push_front(first);
                }
                Err(BatchError::TooLarge) => {
                    self.pass
                        .compare_typed(self.db, &[keys[0].to_vec()])
                        .await?;
                }
            }
        }
        Ok(())
    }

    /// One batch, on this lane's connections. A batch that fails on connections opened earlier is tried
    /// once more on new ones: a server may have closed an idle connection (a timeout, a failover, `CLIENT
    /// KILL`), and a comparison only reads. Connections that failed, or whose replies exceeded the bound,
    /// are out of step for good and are closed.
    async fn verify_batch(&mut self, keys: &[&[u8]]) -> Result<Found, BatchError> {
        let routed = self.pass.routed;
        let batch = Batch::route(keys, &routed.source, &routed.target);
        let mut reused = self.conns.ready(&batch);
        loop {
            self.conns
                .open(routed, self.db, self.s, &batch, self.options)
                .await?;
            let result = batch
                .compare(
                    &mut self.conns,
                    self.pass.ttl_tolerance_ms,
                    self.pass.target_ttls,
                )
                .await;
            match result {
                Ok(mut found) => {
                    if !found.typed.is_empty() {
                        let differ = routed
                            .compare(self.db, &found.typed, self.pass.ttl_tolerance_ms)
                            .await?;
                        found.differ.extend(differ);
                    }
                    return Ok(found);
                }
                Err(e) => {
                    self.conns = Conns::default();
                    if !reused || matches!(e, BatchError::TooLarge) {
                        return Err(e);
                    }
                    reused = false;
                }
            }
        }
    }

    /// Size the next batches from this one's replies: half the reply bound at this many bytes per key, at
    /// most `options.batch`.
    fn fit_limit(&self, bytes_per_key: usize) {
        let fit = (self.options.max_batch_reply_bytes / 2 / bytes_per_key.max(1))
            .clamp(1, self.options.batch.max(1));
        self.limit.store(fit, Ordering::Relaxed);
    }
}
