//! The verifier: compares two Redis endpoints (each a single primary or a cluster, see [`routing`])
//! database by database: key counts, then a sample (or every key) by type, value and TTL within a
//! tolerance.
//!
//! Who owns what: this module the report, the key counts and the order of a pass; [`bulk`] the full
//! comparison (`verify --full`), shaped like the copier's bulk lane: a scanner per source primary, lanes
//! of pipelined batches in flight, a bound on the bytes a round trip reads; [`batch`] one such batch,
//! cheap comparisons first; [`typed`] the comparison of values as values, which has the last word on
//! every key the cheap ones cannot settle, and does all of a sample's; [`routing`] the topologies and
//! the connections the typed comparison shares.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};

use redis::aio::MultiplexedConnection;
use serde::Serialize;

use crate::data::connect::{RedisEndpoint, connect};
use crate::data::copier::{DEFAULT_BATCH, DEFAULT_CONCURRENCY};
use crate::data::error::{DataError, Role};

mod batch;
mod bulk;
mod expiry;
mod payload;
mod routing;
mod typed;

use batch::TargetTtls;
use routing::{Routed, sample_share};

/// Tuning of a full comparison: the copier's shape (see [`crate::data::copier::CopyOptions`]), and its
/// defaults, since both are bounded by the same servers' CPU.
#[derive(Debug, Clone)]
pub struct VerifyOptions {
    /// Batches in flight at once, shared by the source primaries (each batch on its own connections).
    pub concurrency: usize,
    /// Keys per pipelined batch.
    pub batch: usize,
    /// Bytes of replies one round trip of a batch may read, on each side: a batch that exceeds it is
    /// split in halves, and a single key above it is compared alone by the typed comparison.
    pub max_batch_reply_bytes: usize,
    /// Ask the target the TTL only of the keys that have one on the source, and prove by count that
    /// the others have none there ([`expiry`]); where the proof does not hold (either side changed
    /// during the pass), compare again asking every key's TTL. Off while writes are expected (a live
    /// copy runs): the proof would not hold, and the second pass would double the time.
    pub count_target_ttls: bool,
}

impl Default for VerifyOptions {
    fn default() -> Self {
        VerifyOptions {
            concurrency: DEFAULT_CONCURRENCY,
            batch: DEFAULT_BATCH,
            // As the copier's: 32 lanes × 1 MiB × (2 for a read buffer) × (2 sides) stays near 128 MiB
            // even when every lane carries large values.
            max_batch_reply_bytes: 1 << 20,
            count_target_ttls: true,
        }
    }
}

#[derive(Debug, Clone, Copy)]
pub enum VerifyMode {
    /// Up to this many distinct keys per database, drawn with RANDOMKEY.
    Sample(u64),
    /// Every key (SCAN).
    Full,
}

#[derive(Debug, Clone, Serialize)]
pub struct Mismatch {
    pub db: i64,
    pub key: String,
    pub reason: String,
}

#[derive(Debug, Clone, Serialize, Default)]
pub struct VerifyReport {
    /// db → (source keys, target keys)
    pub key_counts: BTreeMap<i64, (u64, u64)>,
    pub keys_compared: u64,
    pub mismatch_count: u64,
    /// The first differences found (at most 20).
    pub mismatches: Vec<Mismatch>,
    /// Every differing key up to a bound (for a re-check once pending writes are copied).
    #[serde(skip)]
    pub differing: Vec<(i64, Vec<u8>)>,
    /// How a full comparison checked the target's TTLs (none for a sample, which asks every key's).
    pub ttl_check: Option<String>,
}

impl VerifyReport {
    pub fn passed(&self) -> bool {
        self.mismatch_count == 0 && self.key_counts.values().all(|(a, b)| a == b)
    }

    fn record(&mut self, db: i64, key: &[u8], reason: String) {
        self.mismatch_count += 1;
        if self.differing.len() < 100_000 {
            self.differing.push((db, key.to_vec()));
        }
        if self.mismatches.len() < 20 {
            self.mismatches.push(Mismatch {
                db,
                key: String::from_utf8_lossy(key).into_owned(),
                reason,
            });
        }
    }
}

/// Key count per database from `INFO keyspace`.
pub async fn keyspace(conn: &mut MultiplexedConnection) -> redis::RedisResult<BTreeMap<i64, u64>> {
    let info: String = redis::cmd("INFO").arg("keyspace").query_async(conn).await?;
    Ok(expiry::Counts::parse(&info).keys_per_db())
}

/// Compare `source` and `target` (each a single primary or a cluster): key counts per database summed
/// over primaries, then a sample or every key, with the default [`VerifyOptions`].
pub async fn verify(
    source: &RedisEndpoint,
    target: &RedisEndpoint,
    mode: VerifyMode,
    ttl_tolerance_ms: i64,
    progress: &(dyn Fn(u64, u64) + Send + Sync),
) -> Result<VerifyReport, DataError> {
    let options = VerifyOptions::default();
    verify_with(source, target, mode, ttl_tolerance_ms, &options, progress).await
}

/// [`verify`] with these options.
pub async fn verify_with(
    source: &RedisEndpoint,
    target: &RedisEndpoint,
    mode: VerifyMode,
    ttl_tolerance_ms: i64,
    options: &VerifyOptions,
    progress: &(dyn Fn(u64, u64) + Send + Sync),
) -> Result<VerifyReport, DataError> {
    let routed = Routed::discover(source, target).await?;
    let src_shards = routed.shard_counts(Role::Source).await?;
    let src_counts = summed(&src_shards);
    let dst_counts = summed(&routed.shard_counts(Role::Target).await?);
    let mut counted = VerifyReport::default();
    let dbs: BTreeSet<i64> = src_counts
        .keys()
        .chain(dst_counts.keys())
        .copied()
        .collect();
    for db in &dbs {
        counted.key_counts.insert(
            *db,
            (
                src_counts.get(db).copied().unwrap_or(0),
                dst_counts.get(db).copied().unwrap_or(0),
            ),
        );
    }
    let total: u64 = match mode {
        VerifyMode::Full => src_counts.values().sum(),
        VerifyMode::Sample(n) => src_counts.values().map(|c| (*c).min(n)).sum(),
    };
    let pass = |target_ttls| Pass {
        routed: &routed,
        report: std::sync::Mutex::new(counted.clone()),
        seen: std::sync::Mutex::new(BTreeMap::new()),
        ttl_tolerance_ms,
        target_ttls,
        done: AtomicU64::new(0),
        total,
        progress,
    };
    let mut report = match mode {
        VerifyMode::Full if options.count_target_ttls => {
            let before = expiry::Still::read(&routed).await?;
            let run = pass(TargetTtls::OfExpiring);
            let (mut report, seen) = run.run(&src_shards, &src_counts, mode, options).await?;
            let after = expiry::Still::read(&routed).await?;
            match expiry::prove(&before, &after, &seen) {
                Ok(how) => {
                    report.ttl_check = Some(how);
                    report
                }
                Err(why) => {
                    let again = pass(TargetTtls::Every);
                    let (mut report, _) =
                        again.run(&src_shards, &src_counts, mode, options).await?;
                    report.ttl_check = Some(format!(
                        "every key's TTL asked on the target, in a second pass: {why}"
                    ));
                    report
                }
            }
        }
        _ => {
            let only = pass(TargetTtls::Every);
            let (mut report, _) = only.run(&src_shards, &src_counts, mode, options).await?;
            if let VerifyMode::Full = mode {
                report.ttl_check = Some("every key's TTL asked on the target".to_string());
            }
            report
        }
    };
    recount_live(&routed, &mut report).await?;
    Ok(report)
}

/// Per database, the sum of the primaries' key counts.
fn summed(shards: &[BTreeMap<i64, u64>]) -> BTreeMap<i64, u64> {
    let mut out = BTreeMap::new();
    for counts in shards {
        for (db, keys) in counts {
            *out.entry(*db).or_insert(0) += keys;
        }
    }
    out
}

/// One comparison under way: where keys are read, what was found, the progress so far. Shared by the
/// batches in flight.
struct Pass<'a> {
    routed: &'a Routed,
    report: std::sync::Mutex<VerifyReport>,
    /// Per database: the keys compared and, of them, those the target said have a TTL.
    seen: std::sync::Mutex<BTreeMap<i64, expiry::Seen>>,
    ttl_tolerance_ms: i64,
    target_ttls: TargetTtls,
    done: AtomicU64,
    total: u64,
    progress: &'a (dyn Fn(u64, u64) + Send + Sync),
}

impl Pass<'_> {
    /// Compare every database of the source: a sample of each primary's keys, or all of them, every
    /// primary at once. Returns the report and what was seen per database.
    async fn run(
        self,
        src_shards: &[BTreeMap<i64, u64>],
        src_counts: &BTreeMap<i64, u64>,
        mode: VerifyMode,
        options: &VerifyOptions,
    ) -> Result<(VerifyReport, BTreeMap<i64, expiry::Seen>), DataError> {
        for (db, count) in src_counts {
            // The source primaries holding keys of this database, and how many each holds.
            let holders: Vec<(usize, u64)> = src_shards
                .iter()
                .enumerate()
                .map(|(s, counts)| (s, counts.get(db).copied().unwrap_or(0)))
                .filter(|(_, held)| *held > 0)
                .collect();
            match mode {
                VerifyMode::Sample(n) => {
                    for (s, held) in holders {
                        let mut sides = self.routed.sides(*db, s, 0).await?;
                        let keys = sample_keys(&mut sides.s, sample_share(n, held, *count))
                            .await
                            .map_err(sides.err(Role::Source))?;
                        for chunk in keys.chunks(200) {
                            self.compare_typed(*db, chunk).await?;
                        }
                    }
                }
                VerifyMode::Full => {
                    // Every primary at once, each with its share of the lanes, as a copy does: the
                    // batches in flight, and the memory they hold, stay what a single primary's
                    // comparison holds.
                    let lanes = options.concurrency.max(1).div_ceil(holders.len().max(1));
                    let scans = holders
                        .iter()
                        .map(|(s, _)| bulk::verify_primary(&self, *db, *s, lanes, options));
                    futures_util::future::try_join_all(scans).await?;
                }
            }
        }
        Ok((
            self.report.into_inner().expect("a comparison panicked"),
            self.seen.into_inner().expect("a comparison panicked"),
        ))
    }

    /// Record a compared batch of `compared` keys of database `db`, what differs in it, and how many
    /// of its keys the target said have a TTL.
    fn tally(
        &self,
        db: i64,
        compared: usize,
        differ: Vec<(Vec<u8>, String)>,
        target_expiring: u64,
    ) {
        {
            let mut report = self.report.lock().expect("a comparison panicked");
            for (key, reason) in differ {
                report.record(db, &key, reason);
            }
            report.keys_compared += compared as u64;
            let mut seen = self.seen.lock().expect("a comparison panicked");
            let seen = seen.entry(db).or_default();
            seen.compared += compared as u64;
            seen.target_expiring += target_expiring;
        }
        let done = self.done.fetch_add(compared as u64, Ordering::Relaxed) + compared as u64;
        (self.progress)(done.min(self.total), self.total);
    }

    /// Compare a batch of database `db` by type and value ([`typed`]) and record what differs.
    async fn compare_typed(&self, db: i64, batch: &[Vec<u8>]) -> Result<(), DataError> {
        let (differ, target_expiring) = self
            .routed
            .compare_counting(db, batch, self.ttl_tolerance_ms)
            .await?;
        self.tally(db, batch.len(), differ, target_expiring);
        Ok(())
    }
}

/// Key count per database of one side, from `INFO keyspace`.
/// Keys per database behind `endpoint`: `INFO keyspace` of every primary (one for a single primary),
/// summed, the primaries read at once.
pub async fn keyspace_of_every_primary(
    endpoint: &RedisEndpoint,
    role: Role,
) -> Result<BTreeMap<i64, u64>, DataError> {
    let topology = crate::data::topology::Topology::discover(endpoint)
        .await
        .map_err(|e| e.role(role))?;
    let reads = topology
        .shards
        .iter()
        .map(|s| key_counts(&s.endpoint, role));
    Ok(summed(&futures_util::future::try_join_all(reads).await?))
}

async fn key_counts(endpoint: &RedisEndpoint, role: Role) -> Result<BTreeMap<i64, u64>, DataError> {
    let mut conn = connect(endpoint).await.map_err(|e| e.role(role))?;
    keyspace(&mut conn)
        .await
        .map_err(|e| failed(endpoint, role, &e))
}

/// INFO keyspace also counts keys whose TTL has passed but that the server has not reclaimed yet, and
/// the two sides reclaim at their own pace. Where the counts differ, count the live keys with SCAN,
/// which skips (and reclaims) expired ones.
async fn recount_live(routed: &Routed, report: &mut VerifyReport) -> Result<(), DataError> {
    for (db, counts) in report.key_counts.iter_mut() {
        if counts.0 != counts.1 {
            let (mut live_src, mut live_dst) = (0, 0);
            for endpoint in routed.endpoints(Role::Source, *db) {
                live_src += scan_count(&endpoint, Role::Source).await?;
            }
            for endpoint in routed.endpoints(Role::Target, *db) {
                live_dst += scan_count(&endpoint, Role::Target).await?;
            }
            *counts = (live_src, live_dst);
        }
    }
    Ok(())
}

/// A failed command of the verifier: `verify: <error>`, naming the side.
fn failed(endpoint: &RedisEndpoint, role: Role, e: &redis::RedisError) -> DataError {
    DataError::redis(endpoint, e).role(role).context("verify")
}

/// Keys SCAN returns in one database (live keys; SCAN may repeat a key while the table is rehashing, so
/// this is exact on a quiet database).
async fn scan_count(endpoint: &RedisEndpoint, role: Role) -> Result<u64, DataError> {
    let mut conn = connect(endpoint).await.map_err(|e| e.role(role))?;
    let mut cursor: u64 = 0;
    let mut n = 0u64;
    loop {
        let (next, keys): (u64, Vec<redis::Value>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("COUNT")
            .arg(1000)
            .query_async(&mut conn)
            .await
            .map_err(|e| failed(endpoint, role, &e))?;
        n += keys.len() as u64;
        cursor = next;
        if cursor == 0 {
            return Ok(n);
        }
    }
}

/// A quick comparison for a moment when both sides are still (inside the cutover's write fence): up to
/// `per_db` random keys of every database of the source, shared by its primaries. Returns how many keys
/// were compared and those that differ.
pub async fn spot_check(
    source: &RedisEndpoint,
    target: &RedisEndpoint,
    per_db: u64,
    ttl_tolerance_ms: i64,
) -> Result<(u64, Vec<Mismatch>), DataError> {
    let (mut compared, mut differ) = (0u64, Vec::new());
    let routed = Routed::discover(source, target).await?;
    let shards = routed.shard_counts(Role::Source).await?;
    // Sample and compare on the same connections per database: this runs inside the write pause.
    for (db, count) in summed(&shards) {
        for (s, counts) in shards.iter().enumerate() {
            let held = counts.get(&db).copied().unwrap_or(0);
            if held == 0 {
                continue;
            }
            let mut sides = routed.sides(db, s, 0).await?;
            let sample = sample_keys(&mut sides.s, sample_share(per_db, held, count))
                .await
                .map_err(sides.err(Role::Source))?;
            let found = routed.compare(db, &sample, ttl_tolerance_ms).await?;
            differ.extend(found.into_iter().map(|(key, reason)| Mismatch {
                db,
                key: String::from_utf8_lossy(&key).into_owned(),
                reason,
            }));
            compared += sample.len() as u64;
        }
    }
    Ok((compared, differ))
}

/// Compare again only these keys (after a live copy caught up): which still differ, and how.
pub async fn recheck(
    source: &RedisEndpoint,
    target: &RedisEndpoint,
    keys: &[(i64, Vec<u8>)],
    ttl_tolerance_ms: i64,
) -> Result<Vec<Mismatch>, DataError> {
    let mut by_db: BTreeMap<i64, Vec<Vec<u8>>> = BTreeMap::new();
    for (db, key) in keys {
        by_db.entry(*db).or_default().push(key.clone());
    }
    let routed = Routed::discover(source, target).await?;
    let mut out = Vec::new();
    for (db, keys) in by_db {
        for chunk in keys.chunks(1000) {
            let differ = routed.compare(db, chunk, ttl_tolerance_ms).await?;
            out.extend(differ.into_iter().map(|(key, reason)| Mismatch {
                db,
                key: String::from_utf8_lossy(&key).into_owned(),
                reason,
            }));
        }
    }
    Ok(out)
}

async fn sample_keys(conn: &mut MultiplexedConnection, n: u64) -> redis::RedisResult<Vec<Vec<u8>>> {
    let mut seen = BTreeSet::new();
    let mut attempts = 0;
    while (seen.len() as u64) < n && attempts < n * 3 + 10 {
        let want = (n - seen.len() as u64).min(500);
        let mut pipe = redis::pipe();
        for _ in 0..want {
            pipe.cmd("RANDOMKEY");
        }
        let keys: Vec<Option<Vec<u8>>> = pipe.query_async(conn).await?;
        attempts += want;
        seen.extend(keys.into_iter().flatten());
    }
    Ok(seen.into_iter().collect())
}
