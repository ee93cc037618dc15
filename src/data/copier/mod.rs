//! The copier: moves keys from a source to a target with only what ElastiCache allows (SCAN, PTTL, MGET and
//! MSET / SET for strings, DUMP and RESTORE for the other types, and type-wise reads for keys too large for
//! one write).
//!
//! Speed comes from pipelining batches and keeping several batches in flight over several connections;
//! memory stays bounded because batches flow through a bounded channel and big keys are streamed in chunks.
//! TTLs are written as absolute expiry times (`SET … PXAT`, `RESTORE … ABSTTL`) taken from the source's
//! clock, so they do not drift by the copy's own delay. A key gone from the source is deleted on the target.
//!
//! Either side may be a cluster: keys are routed by slot to the pair of primaries that holds them (one
//! scanner per source primary), and multi-key commands never span two slots.
//!
//! Who owns what: this module the options, the counters, and one pair of primaries with its lanes;
//! [`route`] the [`Copier`]: both topologies, the routing of keys to pairs (and again after a MOVED or
//! ASK), the replay of given keys; [`scan`] the full copy (SCAN feeding the lanes) and the reconcile's
//! delete pass;
//! [`batch`] one pipelined batch on one lane, and the splitting of batches too large for their bound;
//! [`big_key`] the type-wise copy in chunks of a key too large for one write.

mod batch;
mod big_key;
mod route;
mod scan;

pub use route::Copier;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use serde::Serialize;
use tokio::sync::Mutex;

use crate::data::connect::RedisEndpoint;
use crate::data::error::{DataError, Peer, Role};
use crate::data::resp::{LaneError, PipeConn, Reply};
use crate::data::topology::key_slot;

/// Tuning of a copy.
#[derive(Debug, Clone)]
pub struct CopyOptions {
    /// Batches in flight at once (each on its own pair of connections).
    pub concurrency: usize,
    /// Keys per pipelined batch.
    pub batch: usize,
    /// Keys whose estimated size exceeds this are copied type-wise in chunks instead of one RESTORE.
    pub max_restore_bytes: u64,
    /// Elements (or bytes, for strings: ×1024) per chunk of a big key.
    pub chunk_items: usize,
    /// Bytes of source replies one round trip of a batch may read (the memory bound of a lane: its read
    /// buffer grows to at most about twice this, and the target's commands hold the same values once
    /// more). Batches are sized from the bytes per key of the last one to stay under half of it; a batch
    /// that still exceeds it is split in halves, and a single key above it is read alone (a string
    /// measured with STRLEN first), up to the RESTORE bound, above which it goes type-wise in chunks.
    pub max_batch_reply_bytes: usize,
}

/// Batches in flight by default. Measured with `ecmigrate copy` on the bulk lane (1M keys, plain source,
/// TLS + AUTH target, 2 cores, 4 alternating runs each, medians): 32 × 500 keys moved 370k and 364k
/// keys/s in two sets, against 306k for 16 × 1,000, 354k and 303k for 16 × 500, 342k for 24 × 400,
/// 285k for 32 × 250 and 262k for 8 × 2,000. The source's CPU bounds a copy: small batches cost it less
/// per key (2.25 s of CPU per 1M keys at 500, 2.72 s at 1,000, 3.17 s at 2,000), their keys still being
/// in its caches when PTTL and MGET follow SCAN, and many of them in flight keep it busy while others
/// wait on the target.
pub const DEFAULT_CONCURRENCY: usize = 32;
/// Keys per pipelined batch by default (see [`DEFAULT_CONCURRENCY`]).
pub const DEFAULT_BATCH: usize = 500;

impl Default for CopyOptions {
    fn default() -> Self {
        CopyOptions {
            concurrency: DEFAULT_CONCURRENCY,
            batch: DEFAULT_BATCH,
            max_restore_bytes: 64 << 20,
            chunk_items: 1000,
            // 32 lanes × 1 MiB × (2 for the read buffer + 1 for the target's commands): under 100 MiB
            // even when every lane carries large values. Batches stay at 500 keys while values
            // average under 1 KiB, and shrink beyond.
            max_batch_reply_bytes: 1 << 20,
        }
    }
}

/// Counters shared by the workers of a copy; readable while it runs.
#[derive(Debug, Default)]
pub struct CopyStats {
    pub keys_scanned: AtomicU64,
    pub keys_copied: AtomicU64,
    pub keys_deleted: AtomicU64,
    pub big_keys: AtomicU64,
    /// Batches whose replies exceeded `max_batch_reply_bytes` (split, or read key by key).
    pub oversized_batches: AtomicU64,
}

/// A snapshot of the counters.
#[derive(Debug, Clone, Copy, Serialize, Default)]
pub struct CopyCounts {
    pub keys_scanned: u64,
    pub keys_copied: u64,
    pub keys_deleted: u64,
    pub big_keys: u64,
    pub oversized_batches: u64,
}

impl CopyStats {
    pub fn counts(&self) -> CopyCounts {
        CopyCounts {
            keys_scanned: self.keys_scanned.load(Ordering::Relaxed),
            keys_copied: self.keys_copied.load(Ordering::Relaxed),
            keys_deleted: self.keys_deleted.load(Ordering::Relaxed),
            big_keys: self.big_keys.load(Ordering::Relaxed),
            oversized_batches: self.oversized_batches.load(Ordering::Relaxed),
        }
    }
}

/// One pair of bulk-lane connections (source, target) of one database; opened on first use and dropped
/// after an error, since a connection that failed mid-reply can never be trusted to be in step again.
#[derive(Default)]
struct Lane {
    src: Option<PipeConn>,
    dst: Option<PipeConn>,
}

/// The lanes of one database, `concurrency` of them.
struct DbPool {
    lanes: Vec<Mutex<Lane>>,
}

/// Copies keys between one source primary and one target primary, database by database: the lanes, the
/// batches and the big keys. [`Copier`] routes each key to the pair of its primaries.
struct Pair {
    source: RedisEndpoint,
    target: RedisEndpoint,
    options: CopyOptions,
    /// Either side is a cluster: multi-key commands (MGET, MSET) only ever within one slot, and a big
    /// key's temporary key in its slot. The keys of a batch come sorted by slot.
    slotted: bool,
    pools: Mutex<BTreeMap<i64, Arc<DbPool>>>,
    /// Whether the target takes `SET … PXAT` (Redis 6.2 and later); older ones get SET + PEXPIREAT.
    target_has_pxat: tokio::sync::OnceCell<bool>,
    /// Keys per batch now: `options.batch`, halved each time a batch's replies exceed their bound.
    batch_limit: AtomicUsize,
    stats: Arc<CopyStats>,
}

/// Why one batch was not copied.
enum BatchError {
    /// The source's replies exceeded `max_batch_reply_bytes`: nothing was written, split and retry.
    TooLarge,
    Failed(Err),
}

impl From<Err> for BatchError {
    fn from(e: Err) -> Self {
        BatchError::Failed(e)
    }
}

type Err = DataError;

/// A failed command on an ordinary connection to one side: `copy: <error>`.
fn rerr(endpoint: &RedisEndpoint, role: Role) -> impl Fn(redis::RedisError) -> Err + '_ {
    move |e| DataError::redis(endpoint, &e).role(role).context("copy")
}

/// A failed round trip where no reply bound applies (or its excess is an error too).
fn lane_err(role: Role) -> impl Fn(LaneError) -> Err {
    move |e| DataError::from(e).role(role).context("copy")
}

/// A failed round trip of a batch: over its reply bound (split and retry), or failed.
fn cerr(role: Role) -> impl Fn(LaneError) -> BatchError {
    move |e| match e {
        LaneError::TooLarge { .. } => BatchError::TooLarge,
        broken => BatchError::Failed(lane_err(role)(broken)),
    }
}

impl Pair {
    fn new(
        source: RedisEndpoint,
        target: RedisEndpoint,
        options: CopyOptions,
        slotted: bool,
        stats: Arc<CopyStats>,
    ) -> Pair {
        let options_batch = options.batch.max(1);
        Pair {
            source,
            target,
            options,
            slotted,
            pools: Mutex::new(BTreeMap::new()),
            target_has_pxat: tokio::sync::OnceCell::new(),
            batch_limit: AtomicUsize::new(options_batch),
            stats,
        }
    }

    async fn pool(&self, db: i64) -> Arc<DbPool> {
        let mut pools = self.pools.lock().await;
        pools
            .entry(db)
            .or_insert_with(|| {
                let lanes = (0..self.options.concurrency.max(1))
                    .map(|_| Mutex::new(Lane::default()))
                    .collect();
                Arc::new(DbPool { lanes })
            })
            .clone()
    }

    /// One side's endpoint in database `db`, as errors name it.
    fn peer(&self, role: Role, db: i64) -> Peer {
        let endpoint = match role {
            Role::Source => &self.source,
            Role::Target => &self.target,
        };
        Peer {
            db,
            role: Some(role),
            ..Peer::from(endpoint)
        }
    }

    /// A reply of one side that is not what was asked for.
    fn odd_reply(&self, role: Role, db: i64, message: impl Into<String>) -> Err {
        DataError::Protocol {
            peer: self.peer(role, db),
            message: message.into(),
        }
    }

    /// The first error reply among `replies`, as an error naming what was refused.
    fn refused(&self, replies: &[Reply<'_>], role: Role, db: i64) -> Result<(), Err> {
        match replies.iter().find_map(Reply::error) {
            Some(e) => Err(DataError::Refused {
                peer: self.peer(role, db),
                command: None,
                message: format!("copy: the {} refused a command: {e}", side(role)),
            }),
            None => Ok(()),
        }
    }

    /// Copy `keys` of database `db` on lane `lane` of this pair (sorted by slot first when either side
    /// is a cluster, so that each slot's keys are adjacent).
    async fn copy_on(&self, db: i64, lane: usize, keys: &[&[u8]]) -> Result<(), Err> {
        let sorted;
        let keys = if self.slotted {
            let mut by_slot = keys.to_vec();
            by_slot.sort_by_cached_key(|k| key_slot(k));
            sorted = by_slot;
            &sorted[..]
        } else {
            keys
        };
        let pool = self.pool(db).await;
        self.copy_on_lane(db, &pool.lanes[lane % pool.lanes.len()], keys)
            .await
    }

    /// Index ranges of `keys` that share a slot (the whole batch when neither side is a cluster): each
    /// is one MGET on the source and one MSET on the target.
    fn slot_runs(&self, keys: &[&[u8]]) -> Vec<std::ops::Range<usize>> {
        if !self.slotted {
            return std::iter::once(0..keys.len()).collect();
        }
        let mut runs = Vec::new();
        let mut start = 0;
        let mut current = keys.first().map(|k| key_slot(k));
        for (i, key) in keys.iter().enumerate().skip(1) {
            let slot = Some(key_slot(key));
            if slot != current {
                runs.push(start..i);
                (start, current) = (i, slot);
            }
        }
        if !keys.is_empty() {
            runs.push(start..keys.len());
        }
        runs
    }
}

/// How errors name a side.
fn side(role: Role) -> &'static str {
    match role {
        Role::Source => "source",
        Role::Target => "target",
    }
}

/// The absolute expiry (ms since the epoch) of a key with this PTTL read at `now_ms`, or 0 for none. PTTL 0
/// is a key expiring within this millisecond: it keeps an expiry (now), never becomes persistent.
fn expiry_at(now_ms: i64, pttl: i64) -> i64 {
    if pttl >= 0 { now_ms + pttl } else { 0 }
}

#[cfg(test)]
mod tests {
    use super::expiry_at;

    #[test]
    fn a_pttl_of_zero_keeps_an_expiry_and_only_negative_ones_mean_none() {
        assert_eq!(expiry_at(1_700_000_000_000, 0), 1_700_000_000_000);
        assert_eq!(expiry_at(1_700_000_000_000, 250), 1_700_000_000_250);
        assert_eq!(expiry_at(1_700_000_000_000, -1), 0);
        assert_eq!(expiry_at(1_700_000_000_000, -2), 0);
    }
}
