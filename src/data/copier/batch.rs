//! One batch on one lane: the pipelined reads from the source and writes to the target that copy most
//! keys, the retry on fresh connections, and what happens to a batch whose replies exceed their bound
//! (split in halves, a single key read alone, or handed to the big-key path).

use std::collections::VecDeque;
use std::sync::atomic::Ordering;

use tokio::sync::Mutex;

use super::{BatchError, Err, Lane, Pair, cerr, expiry_at, lane_err};
use crate::data::error::{DataError, Role};
use crate::data::resp::{PipeConn, Reply};

/// What one batch writes to the target, and the keys it leaves to the other paths. Indexes are into the
/// batch's keys.
#[derive(Default)]
struct Planned {
    copied: u64,
    deleted: u64,
    /// Commands queued on the target.
    writes: usize,
    /// Above the RESTORE bound: copied type-wise in chunks, with their PTTL.
    big: Vec<(usize, i64)>,
    /// Gone from the source: deleted on the target.
    gone: Vec<usize>,
    /// Not strings: read with DUMP, with their PTTL.
    other: Vec<(usize, i64)>,
}

/// What a batch's first round trip to the source said: its clock, and each key's PTTL and value (nil
/// for a missing key or a non-string), borrowing the source's read buffer.
struct SourceRead<'r, 'a> {
    now_ms: i64,
    pttls: Vec<i64>,
    values: Vec<&'r Reply<'a>>,
}

impl Pair {
    /// Copy `keys` of database `db` on one lane, in batches of the current limit. A batch whose replies
    /// exceed their bound is split in halves (and the next batches start no larger, until a batch that
    /// fits sizes them again); a single key whose value alone exceeds it is read alone.
    pub(super) async fn copy_on_lane(
        &self,
        db: i64,
        lane: &Mutex<Lane>,
        keys: &[&[u8]],
    ) -> Result<(), Err> {
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
                    let mut conn = PipeConn::open(&self.source.with_db(db))
                        .await
                        .map_err(|e| e.role(Role::Source))?;
                    conn.set_reply_cap(self.options.max_batch_reply_bytes);
                    conn
                }
            };
            let mut dst = match lane.dst.take() {
                Some(conn) => conn,
                None => PipeConn::open(&self.target.with_db(db))
                    .await
                    .map_err(|e| e.role(Role::Target))?,
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
        let mut src = PipeConn::open(&self.source.with_db(db))
            .await
            .map_err(|e| e.role(Role::Source))?;
        src.command(1).arg(b"TIME");
        src.command(2).arg(b"PTTL").arg(key);
        src.command(2).arg(b"STRLEN").arg(key);
        let replies = src.round_trip().await.map_err(lane_err(Role::Source))?;
        let now_ms = self.time_ms(db, replies.first())?;
        let pttl = replies.get(1).and_then(Reply::int).unwrap_or(-2);
        let length = replies.get(2).and_then(Reply::int).unwrap_or(0);
        drop(replies);
        if length as u64 > self.options.max_restore_bytes {
            return self.copy_in_chunks(db, key, expiry_at(now_ms, pttl)).await;
        }
        let cap = usize::try_from(self.options.max_restore_bytes).unwrap_or(usize::MAX);
        src.set_reply_cap(cap.saturating_add(64 << 10));
        let mut dst = PipeConn::open(&self.target.with_db(db))
            .await
            .map_err(|e| e.role(Role::Target))?;
        match self.copy_batch(db, &mut src, &mut dst, &[key]).await {
            Ok(()) => Ok(()),
            Err(BatchError::Failed(e)) => Err(e),
            // A non-string whose DUMP is above the RESTORE bound.
            Err(BatchError::TooLarge) => {
                self.copy_in_chunks(db, key, expiry_at(now_ms, pttl)).await
            }
        }
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
        let pxat = self.target_pxat(dst).await?;
        // The source's CPU bounds a copy, and every command costs it a parse and a dispatch: one PTTL per
        // key, but one MGET for all the values (nil for a missing key or a non-string).
        src.command(1).arg(b"TIME");
        for key in keys {
            src.command(2).arg(b"PTTL").arg(key);
        }
        // In a cluster, one MGET (and one MSET) per slot: a multi-key command must stay in one slot.
        let runs = self.slot_runs(keys);
        for run in &runs {
            src.command(1 + run.len()).arg(b"MGET");
            for key in &keys[run.clone()] {
                src.arg(key);
            }
        }
        let replies = src.round_trip().await.map_err(cerr(Role::Source))?;
        let read = self.source_read(db, &replies, &runs)?;
        let now_ms = read.now_ms;
        let mut plan = Planned::default();
        self.queue_values(dst, keys, &read, &runs, pxat, &mut plan);
        drop(replies);
        if !plan.other.is_empty() {
            self.queue_dumps(db, src, dst, keys, now_ms, &mut plan)
                .await?;
        }
        for &i in &plan.gone {
            dst.command(2).arg(b"DEL").arg(keys[i]);
            plan.writes += 1;
            plan.deleted += 1;
        }
        if plan.writes > 0 {
            let replies = dst.round_trip().await.map_err(cerr(Role::Target))?;
            if let Some(e) = replies.iter().find_map(Reply::error) {
                return Err(BatchError::Failed(DataError::Refused {
                    peer: self.peer(Role::Target, db),
                    command: None,
                    message: format!("copy: the target refused a write: {e}"),
                }));
            }
        }
        for (i, pttl) in plan.big {
            self.copy_in_chunks(db, keys[i], expiry_at(now_ms, pttl))
                .await?;
        }
        self.stats
            .keys_copied
            .fetch_add(plan.copied, Ordering::Relaxed);
        self.stats
            .keys_deleted
            .fetch_add(plan.deleted, Ordering::Relaxed);
        Ok(())
    }

    /// Whether the target takes `SET … PXAT`, asked once per copier (`INFO server`).
    async fn target_pxat(&self, dst: &mut PipeConn) -> Result<bool, Err> {
        let pxat = *self
            .target_has_pxat
            .get_or_try_init(|| async {
                dst.command(2).arg(b"INFO").arg(b"server");
                let replies = dst.round_trip().await.map_err(lane_err(Role::Target))?;
                let info = match replies.first() {
                    Some(Reply::Bulk(text)) => String::from_utf8_lossy(text).into_owned(),
                    _ => String::new(),
                };
                Ok::<bool, Err>(server_version(&info) >= (6, 2))
            })
            .await?;
        Ok(pxat)
    }

    /// The replies of a batch's first round trip to the source (TIME, a PTTL per key, an MGET per slot
    /// run), checked.
    fn source_read<'r, 'a>(
        &self,
        db: i64,
        replies: &'r [Reply<'a>],
        runs: &[std::ops::Range<usize>],
    ) -> Result<SourceRead<'r, 'a>, BatchError> {
        self.refused(replies, Role::Source, db)?;
        let now_ms = self.time_ms(db, replies.first())?;
        let keys = runs.last().map_or(0, |r| r.end);
        let mut values = Vec::with_capacity(keys);
        for (n, run) in runs.iter().enumerate() {
            match replies.get(1 + keys + n) {
                Some(Reply::Array(got)) if got.len() == run.len() => values.extend(got),
                _ => {
                    return Err(BatchError::Failed(self.odd_reply(
                        Role::Source,
                        db,
                        "copy: the source did not answer MGET",
                    )));
                }
            }
        }
        let mut pttls = Vec::with_capacity(keys);
        for reply in &replies[1..=keys] {
            match reply.int() {
                Some(pttl) => pttls.push(pttl),
                None => {
                    return Err(BatchError::Failed(self.odd_reply(
                        Role::Source,
                        db,
                        format!("copy: the source answered PTTL with {reply:?}"),
                    )));
                }
            }
        }
        Ok(SourceRead {
            now_ms,
            pttls,
            values,
        })
    }

    /// Queue the writes of the strings read with MGET; sort the other keys into `plan` (big, gone, or
    /// to read with DUMP).
    fn queue_values(
        &self,
        dst: &mut PipeConn,
        keys: &[&[u8]],
        read: &SourceRead<'_, '_>,
        runs: &[std::ops::Range<usize>],
        pxat: bool,
        plan: &mut Planned,
    ) {
        let (values, pttls) = (&read.values, &read.pttls);
        let abs = |pttl: i64| expiry_at(read.now_ms, pttl);
        let bound = self.options.max_restore_bytes;
        // Strings without a TTL go in one MSET (it replaces any value and TTL, as SET does): one command for
        // the target to parse instead of one per key.
        let mut mset: Vec<(&[u8], &[u8])> = Vec::new();
        let mut run_ends = runs.iter().map(|r| r.end).peekable();
        for (i, (value, &pttl)) in values.iter().zip(pttls).enumerate() {
            // A slot run ends: its strings go in one MSET (a multi-key command stays in one slot).
            if run_ends.next_if(|&end| end == i).is_some() {
                flush_mset(dst, &mut mset, plan);
            }
            match value {
                Reply::Bulk(value) if value.len() as u64 > bound => plan.big.push((i, pttl)),
                Reply::Bulk(value) if pttl >= 0 => {
                    let (key, at) = (keys[i], abs(pttl));
                    if pxat {
                        dst.command(5).arg(b"SET").arg(key).arg(value);
                        dst.arg(b"PXAT").arg_int(at);
                    } else {
                        dst.command(3).arg(b"SET").arg(key).arg(value);
                        dst.command(3).arg(b"PEXPIREAT").arg(key).arg_int(at);
                        plan.writes += 1;
                    }
                    plan.writes += 1;
                    plan.copied += 1;
                }
                Reply::Bulk(value) => mset.push((keys[i], value)),
                // Missing (PTTL -2), or not a string: DUMP tells which.
                _ if pttl == -2 => plan.gone.push(i),
                _ => plan.other.push((i, pttl)),
            }
        }
        flush_mset(dst, &mut mset, plan);
    }

    /// Read the non-strings of `plan` with DUMP and queue their RESTOREs; those above the RESTORE bound
    /// join the big keys, those gone the deletions.
    async fn queue_dumps(
        &self,
        db: i64,
        src: &mut PipeConn,
        dst: &mut PipeConn,
        keys: &[&[u8]],
        now_ms: i64,
        plan: &mut Planned,
    ) -> Result<(), BatchError> {
        let bound = self.options.max_restore_bytes;
        // The PTTL read with the batch serves: a key changed since then is notified and copied again
        // by a live copy, as a key changed just after its DUMP would be.
        for (i, _) in &plan.other {
            src.command(2).arg(b"DUMP").arg(keys[*i]);
        }
        let replies = src.round_trip().await.map_err(cerr(Role::Source))?;
        self.refused(&replies, Role::Source, db)?;
        if replies.len() != plan.other.len() {
            return Err(BatchError::Failed(self.odd_reply(
                Role::Source,
                db,
                "copy: the source did not answer every DUMP",
            )));
        }
        for (&(i, pttl), reply) in plan.other.iter().zip(&replies) {
            match reply {
                Reply::Bulk(payload) if payload.len() as u64 > bound => plan.big.push((i, pttl)),
                Reply::Bulk(payload) => {
                    let at = expiry_at(now_ms, pttl);
                    dst.command(if at > 0 { 6 } else { 5 })
                        .arg(b"RESTORE")
                        .arg(keys[i])
                        .arg_int(at)
                        .arg(payload)
                        .arg(b"REPLACE");
                    if at > 0 {
                        dst.arg(b"ABSTTL");
                    }
                    plan.writes += 1;
                    plan.copied += 1;
                }
                Reply::Nil => plan.gone.push(i),
                other => {
                    return Err(BatchError::Failed(self.odd_reply(
                        Role::Source,
                        db,
                        format!("copy: the source answered DUMP with {other:?}"),
                    )));
                }
            }
        }
        Ok(())
    }

    /// Milliseconds since the epoch from the source's TIME reply (seconds, microseconds).
    fn time_ms(&self, db: i64, reply: Option<&Reply<'_>>) -> Result<i64, Err> {
        match reply {
            Some(Reply::Array(t)) if t.len() == 2 => {
                let secs = t[0].int().unwrap_or(0);
                let micros = t[1].int().unwrap_or(0);
                Ok(secs * 1000 + micros / 1000)
            }
            _ => Err(self.odd_reply(Role::Source, db, "copy: the source did not answer TIME")),
        }
    }
}

/// Queue one MSET of the strings gathered (if any) and start the next gathering.
fn flush_mset(dst: &mut PipeConn, mset: &mut Vec<(&[u8], &[u8])>, plan: &mut Planned) {
    if mset.is_empty() {
        return;
    }
    dst.command(1 + 2 * mset.len()).arg(b"MSET");
    for (key, value) in mset.iter() {
        dst.arg(key).arg(value);
    }
    plan.writes += 1;
    plan.copied += mset.len() as u64;
    mset.clear();
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

#[cfg(test)]
mod tests {
    use super::server_version;

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
