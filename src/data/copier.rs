//! The copier: moves keys from a source to a target with only what ElastiCache allows (SCAN, PTTL, MGET and
//! MSET / SET for strings, DUMP and RESTORE for the other types, and type-wise reads for keys too large for
//! one write).
//!
//! Speed comes from pipelining batches and keeping several batches in flight over several connections;
//! memory stays bounded because batches flow through a bounded channel and big keys are streamed in chunks.
//! TTLs are written as absolute expiry times (`SET … PXAT`, `RESTORE … ABSTTL`) taken from the source's
//! clock, so they do not drift by the copy's own delay. A key gone from the source is deleted on the target.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use redis::aio::MultiplexedConnection;
use serde::Serialize;
use tokio::sync::{Mutex, mpsc};

use crate::data::connect::{RedisEndpoint, connect};
use crate::data::resp::{LaneError, PipeConn, Reply};

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

/// Keys of one SCAN reply, stored end to end in one buffer (one allocation per batch, not per key).
struct KeyBatch {
    bytes: Vec<u8>,
    ends: Vec<usize>,
}

impl KeyBatch {
    fn keys(&self) -> Vec<&[u8]> {
        let mut start = 0;
        self.ends
            .iter()
            .map(|&end| {
                let key = &self.bytes[start..end];
                start = end;
                key
            })
            .collect()
    }
}

/// Copies keys between two endpoints, database by database.
pub struct Copier {
    source: RedisEndpoint,
    target: RedisEndpoint,
    options: CopyOptions,
    pools: Mutex<BTreeMap<i64, Arc<DbPool>>>,
    /// Whether the target takes `SET … PXAT` (Redis 6.2 and later); older ones get SET + PEXPIREAT.
    target_has_pxat: tokio::sync::OnceCell<bool>,
    /// Keys per batch now: `options.batch`, halved each time a batch's replies exceed their bound.
    batch_limit: AtomicUsize,
    pub stats: Arc<CopyStats>,
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

impl Copier {
    /// Where keys are copied from and to.
    pub fn endpoints(&self) -> (&RedisEndpoint, &RedisEndpoint) {
        (&self.source, &self.target)
    }
}

type Err = String;

fn rerr(e: redis::RedisError) -> Err {
    format!("copy: {e}")
}

/// A failed round trip where no reply bound applies (or its excess is an error too).
fn lane_err(e: LaneError) -> Err {
    format!("copy: {e}")
}

/// A failed round trip of a batch: over its reply bound (split and retry), or failed.
fn cerr(e: LaneError) -> BatchError {
    match e {
        LaneError::TooLarge(_) => BatchError::TooLarge,
        broken => BatchError::Failed(lane_err(broken)),
    }
}

/// The first error reply among `replies`, as an error naming what was refused.
fn refused(replies: &[Reply<'_>], side: &str) -> Result<(), Err> {
    match replies.iter().find_map(Reply::error) {
        Some(e) => Err(format!("copy: the {side} refused a command: {e}")),
        None => Ok(()),
    }
}

impl Copier {
    pub fn new(source: RedisEndpoint, target: RedisEndpoint, options: CopyOptions) -> Copier {
        let options_batch = options.batch.max(1);
        Copier {
            source,
            target,
            options,
            pools: Mutex::new(BTreeMap::new()),
            target_has_pxat: tokio::sync::OnceCell::new(),
            batch_limit: AtomicUsize::new(options_batch),
            stats: Arc::new(CopyStats::default()),
        }
    }

    pub fn source(&self) -> &RedisEndpoint {
        &self.source
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

    /// Copy `keys` of database `db` on one lane, in batches of the current limit. A batch whose replies
    /// exceed their bound is split in halves (and the next batches start no larger, until a batch that
    /// fits sizes them again); a single key whose value alone exceeds it is read alone.
    async fn copy_on_lane(&self, db: i64, lane: &Mutex<Lane>, keys: &[&[u8]]) -> Result<(), Err> {
        let mut lane = lane.lock().await;
        let limit = self.batch_limit.load(Ordering::Relaxed).max(1);
        let mut queue: VecDeque<&[&[u8]]> = keys.chunks(limit).collect();
        while let Some(batch) = queue.pop_front() {
            match self.copy_batch_on_lane(db, &mut lane, batch).await {
                Ok(()) => {}
                Err(BatchError::Failed(e)) => return Err(e),
                Err(BatchError::TooLarge) => {
                    self.stats.oversized_batches.fetch_add(1, Ordering::Relaxed);
                    if batch.len() > 1 {
                        let half = batch.len().div_ceil(2);
                        self.batch_limit.fetch_min(half, Ordering::Relaxed);
                        let (first, second) = batch.split_at(half);
                        queue.push_front(second);
                        queue.push_front(first);
                    } else {
                        self.copy_alone(db, batch[0]).await?;
                    }
                }
            }
        }
        Ok(())
    }

    /// One batch on one lane, opening its connections if needed. A batch that fails on connections opened
    /// earlier is tried once more on new ones: a server may have closed an idle connection (a timeout, a
    /// failover, `CLIENT KILL`), and a batch is idempotent (it reads the source's current state and writes
    /// it). The connections are out of the lane while the batch runs and go back only after it succeeded:
    /// one that failed, or whose batch was cancelled mid-reply (a sibling batch's error drops it), is out of
    /// step for good and is closed.
    async fn copy_batch_on_lane(
        &self,
        db: i64,
        lane: &mut Lane,
        keys: &[&[u8]],
    ) -> Result<(), BatchError> {
        let mut reused = lane.src.is_some() && lane.dst.is_some();
        loop {
            let mut src = match lane.src.take() {
                Some(conn) => conn,
                None => {
                    let mut conn = PipeConn::open(&self.source.with_db(db)).await?;
                    conn.set_reply_cap(self.options.max_batch_reply_bytes);
                    conn
                }
            };
            let mut dst = match lane.dst.take() {
                Some(conn) => conn,
                None => PipeConn::open(&self.target.with_db(db)).await?,
            };
            src.take_read_bytes();
            let result = self.copy_batch(db, &mut src, &mut dst, keys).await;
            if result.is_ok() {
                self.fit_batch_limit(src.take_read_bytes(), keys.len());
                lane.src = Some(src);
                lane.dst = Some(dst);
                return result;
            }
            if !reused || matches!(result, Err(BatchError::TooLarge)) {
                return result;
            }
            reused = false;
        }
    }

    /// Size the next batches from this one's replies: half the reply bound at this many bytes per key, at
    /// most `options.batch`. Values that grow shrink the batches before they hit the bound; after one large
    /// value was copied alone, the next batch of small ones sets the limit back up.
    fn fit_batch_limit(&self, reply_bytes: usize, keys: usize) {
        let per_key = (reply_bytes / keys.max(1)).max(1);
        let fit =
            (self.options.max_batch_reply_bytes / 2 / per_key).clamp(1, self.options.batch.max(1));
        self.batch_limit.store(fit, Ordering::Relaxed);
    }

    /// One key whose value alone exceeded the reply bound: a string's length first (STRLEN), type-wise in
    /// chunks above the RESTORE bound, else read alone with its reply bounded by the RESTORE bound; a
    /// non-string whose DUMP exceeds that bound goes type-wise in chunks too.
    async fn copy_alone(&self, db: i64, key: &[u8]) -> Result<(), Err> {
        let mut src = PipeConn::open(&self.source.with_db(db)).await?;
        src.command(1).arg(b"TIME");
        src.command(2).arg(b"PTTL").arg(key);
        src.command(2).arg(b"STRLEN").arg(key);
        let replies = src.round_trip().await.map_err(lane_err)?;
        let now_ms = time_ms(replies.first())?;
        let pttl = replies.get(1).and_then(Reply::int).unwrap_or(-2);
        let length = replies.get(2).and_then(Reply::int).unwrap_or(0);
        drop(replies);
        if length as u64 > self.options.max_restore_bytes {
            return self.copy_in_chunks(db, key, expiry_at(now_ms, pttl)).await;
        }
        let cap = usize::try_from(self.options.max_restore_bytes).unwrap_or(usize::MAX);
        src.set_reply_cap(cap.saturating_add(64 << 10));
        let mut dst = PipeConn::open(&self.target.with_db(db)).await?;
        match self.copy_batch(db, &mut src, &mut dst, &[key]).await {
            Ok(()) => Ok(()),
            Err(BatchError::Failed(e)) => Err(e),
            // A non-string whose DUMP is above the RESTORE bound.
            Err(BatchError::TooLarge) => {
                self.copy_in_chunks(db, key, expiry_at(now_ms, pttl)).await
            }
        }
    }

    /// One key type-wise in chunks, on ordinary connections opened for it.
    async fn copy_in_chunks(&self, db: i64, key: &[u8], expiry_ms: i64) -> Result<(), Err> {
        let mut s = connect(&self.source.with_db(db)).await?;
        let mut d = connect(&self.target.with_db(db)).await?;
        copy_big_key(&mut s, &mut d, key, expiry_ms, self.options.chunk_items).await?;
        self.stats.big_keys.fetch_add(1, Ordering::Relaxed);
        self.stats.keys_copied.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Databases of the source that hold keys (from `INFO keyspace`).
    pub async fn source_databases(&self) -> Result<BTreeMap<i64, u64>, Err> {
        let mut conn = connect(&self.source).await?;
        crate::data::verify::keyspace(&mut conn).await.map_err(rerr)
    }

    /// Copy every key of every database of the source (SCAN). `progress(done, total)` is called per batch.
    pub async fn copy_all(
        &self,
        progress: &(dyn Fn(u64, u64) + Send + Sync),
    ) -> Result<CopyCounts, Err> {
        let dbs = self.source_databases().await?;
        let total: u64 = dbs.values().sum();
        for db in dbs.keys() {
            self.copy_db(*db, total, progress).await?;
        }
        Ok(self.stats.counts())
    }

    async fn copy_db(
        &self,
        db: i64,
        total: u64,
        progress: &(dyn Fn(u64, u64) + Send + Sync),
    ) -> Result<(), Err> {
        let pool = self.pool(db).await;
        let workers = pool.lanes.len();
        // Bounded: the scanner waits when the workers fall behind, so memory does not grow with the keyspace.
        let (tx, rx) = mpsc::channel::<KeyBatch>(workers * 2);
        let rx = Arc::new(Mutex::new(rx));
        let mut scan_conn = PipeConn::open(&self.source.with_db(db)).await?;
        let batch = self.options.batch;
        let scanner = async move {
            // The cursor is sent back as the server wrote it (an unsigned 64-bit number).
            let mut cursor: Vec<u8> = b"0".to_vec();
            loop {
                scan_conn
                    .command(4)
                    .arg(b"SCAN")
                    .arg(&cursor)
                    .arg(b"COUNT")
                    .arg_int(batch as i64);
                let replies = scan_conn.round_trip().await.map_err(lane_err)?;
                refused(&replies, "source")?;
                let (next, keys) = match replies.first() {
                    Some(Reply::Array(parts)) if parts.len() == 2 => match (&parts[0], &parts[1]) {
                        (Reply::Bulk(next), Reply::Array(keys)) => (next.to_vec(), keys),
                        _ => return Err("copy: the source answered SCAN oddly".into()),
                    },
                    _ => return Err("copy: the source answered SCAN oddly".into()),
                };
                let mut found = KeyBatch {
                    bytes: Vec::with_capacity(keys.len() * 32),
                    ends: Vec::with_capacity(keys.len()),
                };
                for key in keys {
                    let Reply::Bulk(key) = key else {
                        return Err(
                            "copy: the source answered SCAN with a key that is not a string".into(),
                        );
                    };
                    found.bytes.extend_from_slice(key);
                    found.ends.push(found.bytes.len());
                }
                if !found.ends.is_empty() && tx.send(found).await.is_err() {
                    break; // the workers stopped on an error, which they report
                }
                if next == b"0" {
                    break;
                }
                cursor = next;
            }
            Ok::<(), Err>(())
        };
        let work = pool.lanes.iter().map(|lane| {
            let rx = rx.clone();
            async move {
                loop {
                    let next = rx.lock().await.recv().await;
                    let Some(found) = next else {
                        return Ok::<(), Err>(());
                    };
                    let keys = found.keys();
                    self.copy_on_lane(db, lane, &keys).await?;
                    let done = self
                        .stats
                        .keys_scanned
                        .fetch_add(keys.len() as u64, Ordering::Relaxed)
                        + keys.len() as u64;
                    progress(done.min(total), total);
                }
            }
        });
        // try_join: a worker's error drops the scanner, which would otherwise wait forever on a full
        // channel that no worker reads any more.
        tokio::try_join!(scanner, futures_util::future::try_join_all(work))?;
        Ok(())
    }

    /// Copy these keys of database `db` from the source's current state: copied if present, deleted on the
    /// target if gone (the replay of captured changes).
    pub async fn copy_keys(&self, db: i64, keys: &[Vec<u8>]) -> Result<(), Err> {
        if keys.is_empty() {
            return Ok(());
        }
        let pool = self.pool(db).await;
        let batches: Vec<Vec<&[u8]>> = keys
            .chunks(self.options.batch)
            .map(|chunk| chunk.iter().map(Vec::as_slice).collect())
            .collect();
        // At most one batch per lane in flight.
        for wave in batches.chunks(pool.lanes.len()) {
            let jobs = wave
                .iter()
                .zip(&pool.lanes)
                .map(|(batch, lane)| self.copy_on_lane(db, lane, batch));
            futures_util::future::try_join_all(jobs).await?;
        }
        Ok(())
    }

    /// One batch. Strings (most keys) are read with MGET and written with MSET (no TTL) or SET … PXAT:
    /// DUMP would make the source serialize, compress and checksum each value, and the source's CPU is
    /// what bounds a copy. One round trip to the source (its clock, each key's PTTL, one MGET; a
    /// non-string reads as nil), a second only for the non-strings (DUMP), then one to the target
    /// (MSET, SET, RESTORE … ABSTTL, or DEL for keys gone). Keys above the size bound go type-wise in
    /// chunks instead.
    async fn copy_batch(
        &self,
        db: i64,
        src: &mut PipeConn,
        dst: &mut PipeConn,
        keys: &[&[u8]],
    ) -> Result<(), BatchError> {
        let pxat = *self
            .target_has_pxat
            .get_or_try_init(|| async {
                dst.command(2).arg(b"INFO").arg(b"server");
                let replies = dst.round_trip().await.map_err(lane_err)?;
                let info = match replies.first() {
                    Some(Reply::Bulk(text)) => String::from_utf8_lossy(text).into_owned(),
                    _ => String::new(),
                };
                Ok::<bool, Err>(server_version(&info) >= (6, 2))
            })
            .await?;
        // The source's CPU bounds a copy, and every command costs it a parse and a dispatch: one PTTL per
        // key, but one MGET for all the values (nil for a missing key or a non-string).
        src.command(1).arg(b"TIME");
        for key in keys {
            src.command(2).arg(b"PTTL").arg(key);
        }
        src.command(1 + keys.len()).arg(b"MGET");
        for key in keys {
            src.arg(key);
        }
        let replies = src.round_trip().await.map_err(cerr)?;
        refused(&replies, "source")?;
        let now_ms = time_ms(replies.first())?;
        let values = match replies.get(1 + keys.len()) {
            Some(Reply::Array(values)) if values.len() == keys.len() => values,
            _ => {
                return Err(BatchError::Failed(
                    "copy: the source did not answer MGET".into(),
                ));
            }
        };
        let mut pttls = Vec::with_capacity(keys.len());
        for reply in &replies[1..=keys.len()] {
            match reply.int() {
                Some(pttl) => pttls.push(pttl),
                None => {
                    return Err(BatchError::Failed(format!(
                        "copy: the source answered PTTL with {reply:?}"
                    )));
                }
            }
        }
        let abs = |pttl: i64| expiry_at(now_ms, pttl);
        let bound = self.options.max_restore_bytes;
        let (mut copied, mut deleted, mut writes) = (0u64, 0u64, 0usize);
        let mut big: Vec<(usize, i64)> = Vec::new();
        let mut gone: Vec<usize> = Vec::new();
        let mut other: Vec<(usize, i64)> = Vec::new();
        // Strings without a TTL go in one MSET (it replaces any value and TTL, as SET does): one command for
        // the target to parse instead of one per key.
        let mut mset: Vec<(&[u8], &[u8])> = Vec::new();
        for (i, (value, &pttl)) in values.iter().zip(&pttls).enumerate() {
            match value {
                Reply::Bulk(value) if value.len() as u64 > bound => big.push((i, pttl)),
                Reply::Bulk(value) if pttl >= 0 => {
                    let (key, at) = (keys[i], abs(pttl));
                    if pxat {
                        dst.command(5).arg(b"SET").arg(key).arg(value);
                        dst.arg(b"PXAT").arg_int(at);
                    } else {
                        dst.command(3).arg(b"SET").arg(key).arg(value);
                        dst.command(3).arg(b"PEXPIREAT").arg(key).arg_int(at);
                        writes += 1;
                    }
                    writes += 1;
                    copied += 1;
                }
                Reply::Bulk(value) => mset.push((keys[i], value)),
                // Missing (PTTL -2), or not a string: DUMP tells which.
                _ if pttl == -2 => gone.push(i),
                _ => other.push((i, pttl)),
            }
        }
        if !mset.is_empty() {
            dst.command(1 + 2 * mset.len()).arg(b"MSET");
            for (key, value) in &mset {
                dst.arg(key).arg(value);
            }
            writes += 1;
            copied += mset.len() as u64;
        }
        drop(replies);
        if !other.is_empty() {
            // The PTTL read with the batch serves: a key changed since then is notified and copied again
            // by a live copy, as a key changed just after its DUMP would be.
            for (i, _) in &other {
                src.command(2).arg(b"DUMP").arg(keys[*i]);
            }
            let replies = src.round_trip().await.map_err(cerr)?;
            refused(&replies, "source")?;
            if replies.len() != other.len() {
                return Err(BatchError::Failed(
                    "copy: the source did not answer every DUMP".into(),
                ));
            }
            for (&(i, pttl), reply) in other.iter().zip(&replies) {
                match reply {
                    Reply::Bulk(payload) if payload.len() as u64 > bound => big.push((i, pttl)),
                    Reply::Bulk(payload) => {
                        let at = abs(pttl);
                        dst.command(if at > 0 { 6 } else { 5 })
                            .arg(b"RESTORE")
                            .arg(keys[i])
                            .arg_int(at)
                            .arg(payload)
                            .arg(b"REPLACE");
                        if at > 0 {
                            dst.arg(b"ABSTTL");
                        }
                        writes += 1;
                        copied += 1;
                    }
                    Reply::Nil => gone.push(i),
                    other => {
                        return Err(BatchError::Failed(format!(
                            "copy: the source answered DUMP with {other:?}"
                        )));
                    }
                }
            }
        }
        for &i in &gone {
            dst.command(2).arg(b"DEL").arg(keys[i]);
            writes += 1;
            deleted += 1;
        }
        if writes > 0 {
            let replies = dst.round_trip().await.map_err(cerr)?;
            if let Some(e) = replies.iter().find_map(Reply::error) {
                return Err(BatchError::Failed(format!(
                    "copy: the target refused a write: {e}"
                )));
            }
        }
        for (i, pttl) in big {
            self.copy_in_chunks(db, keys[i], abs(pttl)).await?;
        }
        self.stats.keys_copied.fetch_add(copied, Ordering::Relaxed);
        self.stats
            .keys_deleted
            .fetch_add(deleted, Ordering::Relaxed);
        Ok(())
    }

    /// Delete keys of the target that the source no longer has (the second half of a reconcile pass).
    pub async fn delete_extraneous(&self) -> Result<u64, Err> {
        let mut dst_conn = connect(&self.target).await?;
        let dbs = crate::data::verify::keyspace(&mut dst_conn)
            .await
            .map_err(rerr)?;
        let mut deleted = 0u64;
        for db in dbs.keys() {
            let mut scan = connect(&self.target.with_db(*db)).await?;
            let mut src = connect(&self.source.with_db(*db)).await?;
            let mut dst = connect(&self.target.with_db(*db)).await?;
            let mut cursor: u64 = 0;
            loop {
                let (next, keys): (u64, Vec<Vec<u8>>) = redis::cmd("SCAN")
                    .arg(cursor)
                    .arg("COUNT")
                    .arg(self.options.batch)
                    .query_async(&mut scan)
                    .await
                    .map_err(rerr)?;
                if !keys.is_empty() {
                    let mut exists = redis::pipe();
                    for k in &keys {
                        exists.cmd("EXISTS").arg(k);
                    }
                    let present: Vec<bool> = exists.query_async(&mut src).await.map_err(rerr)?;
                    let missing: Vec<&Vec<u8>> = keys
                        .iter()
                        .zip(present)
                        .filter(|(_, p)| !p)
                        .map(|(k, _)| k)
                        .collect();
                    if !missing.is_empty() {
                        let mut del = redis::pipe();
                        for k in &missing {
                            del.cmd("DEL").arg(*k).ignore();
                        }
                        let _: () = del.query_async(&mut dst).await.map_err(rerr)?;
                        deleted += missing.len() as u64;
                    }
                }
                cursor = next;
                if cursor == 0 {
                    break;
                }
            }
        }
        self.stats
            .keys_deleted
            .fetch_add(deleted, Ordering::Relaxed);
        Ok(deleted)
    }
}

/// The absolute expiry (ms since the epoch) of a key with this PTTL read at `now_ms`, or 0 for none. PTTL 0
/// is a key expiring within this millisecond: it keeps an expiry (now), never becomes persistent.
fn expiry_at(now_ms: i64, pttl: i64) -> i64 {
    if pttl >= 0 { now_ms + pttl } else { 0 }
}

/// Milliseconds since the epoch from a TIME reply (seconds, microseconds).
fn time_ms(reply: Option<&Reply<'_>>) -> Result<i64, Err> {
    match reply {
        Some(Reply::Array(t)) if t.len() == 2 => {
            let secs = t[0].int().unwrap_or(0);
            let micros = t[1].int().unwrap_or(0);
            Ok(secs * 1000 + micros / 1000)
        }
        _ => Err("copy: the source did not answer TIME".into()),
    }
}

/// `(major, minor)` of `redis_version` (or Valkey's `valkey_version`) in `INFO server`; (0, 0) if absent.
fn server_version(info: &str) -> (u32, u32) {
    info.lines()
        .find_map(|l| {
            l.strip_prefix("valkey_version:")
                .or_else(|| l.strip_prefix("redis_version:"))
        })
        .map(|v| {
            let mut parts = v.trim().split('.').map(|p| p.parse().unwrap_or(0));
            (parts.next().unwrap_or(0), parts.next().unwrap_or(0))
        })
        .unwrap_or((0, 0))
}

/// Copy one key type-wise into a temporary key on the target, then RENAME it over the real one (so readers
/// never see half a key) and set its absolute expiry.
async fn copy_big_key(
    src: &mut MultiplexedConnection,
    dst: &mut MultiplexedConnection,
    key: &[u8],
    abs_expiry_ms: i64,
    chunk: usize,
) -> Result<(), Err> {
    let kind: String = redis::cmd("TYPE")
        .arg(key)
        .query_async(src)
        .await
        .map_err(rerr)?;
    let mut tmp = key.to_vec();
    tmp.extend_from_slice(b":ecmigrate-tmp");
    let _: () = redis::cmd("DEL")
        .arg(&tmp)
        .query_async(dst)
        .await
        .map_err(rerr)?;
    let mut wrote_any = false;
    match kind.as_str() {
        "string" => {
            let step = (chunk * 1024) as i64;
            let mut offset = 0i64;
            loop {
                let part: Vec<u8> = redis::cmd("GETRANGE")
                    .arg(key)
                    .arg(offset)
                    .arg(offset + step - 1)
                    .query_async(src)
                    .await
                    .map_err(rerr)?;
                if part.is_empty() && wrote_any {
                    break;
                }
                let _: () = redis::cmd("APPEND")
                    .arg(&tmp)
                    .arg(&part)
                    .query_async(dst)
                    .await
                    .map_err(rerr)?;
                wrote_any = true;
                if (part.len() as i64) < step {
                    break;
                }
                offset += step;
            }
        }
        "list" => {
            let mut start = 0i64;
            loop {
                let items: Vec<Vec<u8>> = redis::cmd("LRANGE")
                    .arg(key)
                    .arg(start)
                    .arg(start + chunk as i64 - 1)
                    .query_async(src)
                    .await
                    .map_err(rerr)?;
                if items.is_empty() {
                    break;
                }
                let _: () = redis::cmd("RPUSH")
                    .arg(&tmp)
                    .arg(&items)
                    .query_async(dst)
                    .await
                    .map_err(rerr)?;
                wrote_any = true;
                start += items.len() as i64;
            }
        }
        "hash" | "set" | "zset" => {
            let (scan, write) = match kind.as_str() {
                "hash" => ("HSCAN", "HSET"),
                "set" => ("SSCAN", "SADD"),
                _ => ("ZSCAN", "ZADD"),
            };
            let mut cursor: u64 = 0;
            loop {
                let (next, items): (u64, Vec<Vec<u8>>) = redis::cmd(scan)
                    .arg(key)
                    .arg(cursor)
                    .arg("COUNT")
                    .arg(chunk)
                    .query_async(src)
                    .await
                    .map_err(rerr)?;
                if !items.is_empty() {
                    let mut cmd = redis::cmd(write);
                    cmd.arg(&tmp);
                    if kind == "zset" {
                        // ZSCAN yields member, score; ZADD takes score, member.
                        for pair in items.chunks(2) {
                            cmd.arg(&pair[1]).arg(&pair[0]);
                        }
                    } else {
                        cmd.arg(&items);
                    }
                    let _: () = cmd.query_async(dst).await.map_err(rerr)?;
                    wrote_any = true;
                }
                cursor = next;
                if cursor == 0 {
                    break;
                }
            }
        }
        "none" => {
            let _: () = redis::cmd("DEL")
                .arg(key)
                .query_async(dst)
                .await
                .map_err(rerr)?;
            return Ok(());
        }
        other => {
            return Err(format!(
                "copy: key `{}` of type {other} is larger than one RESTORE allows and has no chunked copy",
                String::from_utf8_lossy(key)
            ));
        }
    }
    if !wrote_any {
        return Ok(());
    }
    let _: () = redis::cmd("RENAME")
        .arg(&tmp)
        .arg(key)
        .query_async(dst)
        .await
        .map_err(rerr)?;
    if abs_expiry_ms > 0 {
        let _: () = redis::cmd("PEXPIREAT")
            .arg(key)
            .arg(abs_expiry_ms)
            .query_async(dst)
            .await
            .map_err(rerr)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::{expiry_at, server_version};

    #[test]
    fn a_pttl_of_zero_keeps_an_expiry_and_only_negative_ones_mean_none() {
        assert_eq!(expiry_at(1_700_000_000_000, 0), 1_700_000_000_000);
        assert_eq!(expiry_at(1_700_000_000_000, 250), 1_700_000_000_250);
        assert_eq!(expiry_at(1_700_000_000_000, -1), 0);
        assert_eq!(expiry_at(1_700_000_000_000, -2), 0);
    }

    #[test]
    fn server_versions_decide_between_pxat_and_pexpireat() {
        assert_eq!(
            server_version("# Server\r\nredis_version:7.0.15\r\n"),
            (7, 0)
        );
        assert_eq!(
            server_version("redis_version:6.2.14\r\nredis_git_sha1:0\r\n"),
            (6, 2)
        );
        assert!(server_version("redis_version:6.0.5\r\n") < (6, 2));
        assert_eq!(server_version("valkey_version:8.1.0\r\n"), (8, 1));
        assert_eq!(server_version("no version here"), (0, 0));
    }
}
