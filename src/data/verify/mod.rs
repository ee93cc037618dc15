//! The verifier: compares two Redis endpoints (each a single primary or a cluster, see [`routing`])
//! database by database: key counts, then a sample (or every key) by type, value and TTL within a
//! tolerance. Values are compared as values, never as DUMP bytes: the
//! DUMP of an identical hashtable-encoded set can order its members differently.

use std::collections::{BTreeMap, BTreeSet};

use futures_util::TryFutureExt;
use redis::Value as RValue;
use redis::aio::MultiplexedConnection;
use serde::Serialize;

use crate::data::connect::{RedisEndpoint, connect};
use crate::data::error::{DataError, Role};

mod routing;

use routing::{Routed, sample_share};

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
    let mut out = BTreeMap::new();
    for line in info.lines() {
        let Some(rest) = line.strip_prefix("db") else {
            continue;
        };
        let Some((db, fields)) = rest.split_once(':') else {
            continue;
        };
        let keys = fields
            .split(',')
            .find_map(|f| f.strip_prefix("keys="))
            .and_then(|k| k.parse().ok())
            .unwrap_or(0);
        if let Ok(db) = db.parse() {
            out.insert(db, keys);
        }
    }
    Ok(out)
}

/// Compare `source` and `target` (each a single primary or a cluster): key counts per database summed
/// over primaries, then a sample or every key.
pub async fn verify(
    source: &RedisEndpoint,
    target: &RedisEndpoint,
    mode: VerifyMode,
    ttl_tolerance_ms: i64,
    progress: &(dyn Fn(u64, u64) + Send + Sync),
) -> Result<VerifyReport, DataError> {
    let mut routed = Routed::discover(source, target).await?;
    let src_shards = routed.shard_counts(Role::Source).await?;
    let src_counts = summed(&src_shards);
    let dst_counts = summed(&routed.shard_counts(Role::Target).await?);
    let mut report = VerifyReport::default();
    let dbs: BTreeSet<i64> = src_counts
        .keys()
        .chain(dst_counts.keys())
        .copied()
        .collect();
    for db in &dbs {
        report.key_counts.insert(
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
    let mut pass = Pass {
        routed: &mut routed,
        report: &mut report,
        ttl_tolerance_ms,
        done: 0,
        total,
        progress,
    };
    for (db, count) in &src_counts {
        for (s, counts) in src_shards.iter().enumerate() {
            let held = counts.get(db).copied().unwrap_or(0);
            match mode {
                _ if held == 0 => {}
                VerifyMode::Sample(n) => {
                    let sides = pass.routed.sides(*db, s, 0).await?;
                    let keys = sample_keys(&mut sides.s, sample_share(n, held, *count))
                        .await
                        .map_err(sides.err(Role::Source))?;
                    for chunk in keys.chunks(200) {
                        pass.compare(*db, chunk).await?;
                    }
                }
                VerifyMode::Full => pass.scan_primary(*db, s).await?,
            }
        }
    }
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

/// One comparison under way: where keys are read, what was found, the progress so far.
struct Pass<'a> {
    routed: &'a mut Routed,
    report: &'a mut VerifyReport,
    ttl_tolerance_ms: i64,
    done: u64,
    total: u64,
    progress: &'a (dyn Fn(u64, u64) + Send + Sync),
}

impl Pass<'_> {
    /// Compare a batch of database `db` and record what differs.
    async fn compare(&mut self, db: i64, batch: &[Vec<u8>]) -> Result<(), DataError> {
        for (key, reason) in self
            .routed
            .compare(db, batch, self.ttl_tolerance_ms)
            .await?
        {
            self.report.record(db, &key, reason);
        }
        self.report.keys_compared += batch.len() as u64;
        self.done += batch.len() as u64;
        (self.progress)(self.done.min(self.total), self.total);
        Ok(())
    }

    /// Compare every key of database `db` of source primary `s` (SCAN).
    async fn scan_primary(&mut self, db: i64, s: usize) -> Result<(), DataError> {
        let db_source = self.routed.endpoints(Role::Source, db).swap_remove(s);
        let mut scan_conn = connect(&db_source)
            .await
            .map_err(|e| e.role(Role::Source))?;
        let mut cursor: u64 = 0;
        loop {
            let (next, batch): (u64, Vec<Vec<u8>>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("COUNT")
                .arg(1000)
                .query_async(&mut scan_conn)
                .await
                .map_err(|e| failed(&db_source, Role::Source, &e))?;
            self.compare(db, &batch).await?;
            cursor = next;
            if cursor == 0 {
                return Ok(());
            }
        }
    }
}

/// Key count per database of one side, from `INFO keyspace`.
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

/// Connections to one database of both sides, and the endpoints their errors name.
struct Sides {
    s: MultiplexedConnection,
    d: MultiplexedConnection,
    source: RedisEndpoint,
    target: RedisEndpoint,
}

impl Sides {
    async fn open(
        source: &RedisEndpoint,
        target: &RedisEndpoint,
        db: i64,
    ) -> Result<Sides, DataError> {
        let (source, target) = (source.with_db(db), target.with_db(db));
        Ok(Sides {
            s: connect(&source).await.map_err(|e| e.role(Role::Source))?,
            d: connect(&target).await.map_err(|e| e.role(Role::Target))?,
            source,
            target,
        })
    }

    /// How a redis error on one side reads.
    fn err(&self, role: Role) -> impl Fn(redis::RedisError) -> DataError + use<> {
        let endpoint = match role {
            Role::Source => self.source.clone(),
            Role::Target => self.target.clone(),
        };
        move |e| failed(&endpoint, role, &e)
    }

    /// [`compare_keys`] on these connections.
    async fn compare<'k>(
        &mut self,
        batch: &'k [Vec<u8>],
        ttl_tolerance_ms: i64,
    ) -> Result<Vec<(&'k [u8], String)>, DataError> {
        let (src_err, dst_err) = (self.err(Role::Source), self.err(Role::Target));
        compare_keys(
            &mut self.s,
            &mut self.d,
            batch,
            ttl_tolerance_ms,
            (&src_err, &dst_err),
        )
        .await
    }
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
    let mut routed = Routed::discover(source, target).await?;
    let shards = routed.shard_counts(Role::Source).await?;
    // Sample and compare on the same connections per database: this runs inside the write pause.
    for (db, count) in summed(&shards) {
        for (s, counts) in shards.iter().enumerate() {
            let held = counts.get(&db).copied().unwrap_or(0);
            if held == 0 {
                continue;
            }
            let sides = routed.sides(db, s, 0).await?;
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
    let mut routed = Routed::discover(source, target).await?;
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

/// How a redis error on the source, and on the target, reads.
type SideErrors<'a> = (
    &'a (dyn Fn(redis::RedisError) -> DataError + Sync),
    &'a (dyn Fn(redis::RedisError) -> DataError + Sync),
);

/// The keys of `batch` that differ, with what differs. Two pipelined round trips per side: types and
/// TTLs, then values; both sides are read concurrently.
async fn compare_keys<'k>(
    s: &mut MultiplexedConnection,
    d: &mut MultiplexedConnection,
    batch: &'k [Vec<u8>],
    ttl_tolerance_ms: i64,
    (src_err, dst_err): SideErrors<'_>,
) -> Result<Vec<(&'k [u8], String)>, DataError> {
    let (s_meta, d_meta) = tokio::try_join!(
        types_and_ttls(s, batch).map_err(src_err),
        types_and_ttls(d, batch).map_err(dst_err)
    )?;
    let mut differ = Vec::new();
    let mut to_read: Vec<(usize, String)> = Vec::new();
    for (i, key) in batch.iter().enumerate() {
        let ((s_type, _), (d_type, _)) = (&s_meta[i], &d_meta[i]);
        if s_type == "none" {
            // Gone from the source while we looked (expired or deleted): nothing to compare.
            continue;
        }
        if s_type != d_type {
            differ.push((
                key.as_slice(),
                if d_type == "none" {
                    "missing on the target".to_string()
                } else {
                    format!("type {s_type} on the source, {d_type} on the target")
                },
            ));
            continue;
        }
        to_read.push((i, s_type.clone()));
    }
    let (s_vals, d_vals) = tokio::try_join!(
        read_values(s, batch, &to_read).map_err(src_err),
        read_values(d, batch, &to_read).map_err(dst_err)
    )?;
    for (n, (i, kind)) in to_read.iter().enumerate() {
        let key = batch[*i].as_slice();
        if s_vals[n] != d_vals[n] {
            differ.push((key, format!("{kind} value differs")));
            continue;
        }
        let (s_ttl, d_ttl) = (s_meta[*i].1, d_meta[*i].1);
        let ttl_ok = match (s_ttl, d_ttl) {
            (a, b) if a < 0 || b < 0 => a == b,
            (a, b) => (a - b).abs() <= ttl_tolerance_ms,
        };
        if !ttl_ok {
            differ.push((
                key,
                format!("TTL {s_ttl} ms on the source, {d_ttl} ms on the target"),
            ));
        }
    }
    Ok(differ)
}

async fn types_and_ttls(
    c: &mut MultiplexedConnection,
    keys: &[Vec<u8>],
) -> redis::RedisResult<Vec<(String, i64)>> {
    if keys.is_empty() {
        return Ok(Vec::new());
    }
    let mut pipe = redis::pipe();
    for key in keys {
        pipe.cmd("TYPE").arg(key).cmd("PTTL").arg(key);
    }
    let flat: Vec<RValue> = pipe.query_async(c).await?;
    Ok(flat
        .chunks(2)
        .map(|p| {
            let kind = match &p[0] {
                RValue::SimpleString(t) => t.clone(),
                RValue::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
                _ => "none".into(),
            };
            let ttl = match p.get(1) {
                Some(RValue::Int(t)) => *t,
                _ => -2,
            };
            (kind, ttl)
        })
        .collect())
}

/// Canonical values of `keys[i]` for each `(i, type)`, in one pipeline.
async fn read_values(
    c: &mut MultiplexedConnection,
    keys: &[Vec<u8>],
    which: &[(usize, String)],
) -> redis::RedisResult<Vec<Vec<Vec<u8>>>> {
    if which.is_empty() {
        return Ok(Vec::new());
    }
    let mut pipe = redis::pipe();
    for (i, kind) in which {
        let key = &keys[*i];
        match kind.as_str() {
            "string" => pipe.cmd("GET").arg(key),
            "hash" => pipe.cmd("HGETALL").arg(key),
            "list" => pipe.cmd("LRANGE").arg(key).arg(0).arg(-1),
            "set" => pipe.cmd("SMEMBERS").arg(key),
            "zset" => pipe.cmd("ZRANGE").arg(key).arg(0).arg(-1).arg("WITHSCORES"),
            "stream" => pipe.cmd("XRANGE").arg(key).arg("-").arg("+"),
            _ => pipe.cmd("DUMP").arg(key),
        };
    }
    let values: Vec<RValue> = pipe.query_async(c).await?;
    Ok(values
        .iter()
        .zip(which)
        .map(|(v, (_, kind))| canonical(v, kind))
        .collect())
}

/// A canonical form of a value: unordered collections sorted.
fn canonical(value: &RValue, kind: &str) -> Vec<Vec<u8>> {
    let mut flat = Vec::new();
    flatten(value, &mut flat);
    match kind {
        "set" => flat.sort(),
        "hash" => {
            let mut pairs: Vec<Vec<u8>> = flat.chunks(2).map(|p| p.concat_with_sep()).collect();
            pairs.sort();
            flat = pairs;
        }
        _ => {}
    }
    flat
}

trait ConcatWithSep {
    fn concat_with_sep(&self) -> Vec<u8>;
}

impl ConcatWithSep for [Vec<u8>] {
    /// Joins a field and its value with a length prefix so that distinct pairs never collide.
    fn concat_with_sep(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for part in self {
            out.extend_from_slice(&(part.len() as u64).to_be_bytes());
            out.extend_from_slice(part);
        }
        out
    }
}

fn flatten(v: &RValue, out: &mut Vec<Vec<u8>>) {
    match v {
        RValue::BulkString(b) => out.push(b.clone()),
        RValue::SimpleString(s) => out.push(s.clone().into_bytes()),
        RValue::Int(i) => out.push(i.to_string().into_bytes()),
        RValue::Double(d) => out.push(d.to_string().into_bytes()),
        RValue::Array(items) | RValue::Set(items) => items.iter().for_each(|i| flatten(i, out)),
        RValue::Map(pairs) => pairs.iter().for_each(|(k, v)| {
            flatten(k, out);
            flatten(v, out);
        }),
        RValue::Nil => out.push(b"(nil)".to_vec()),
        other => out.push(format!("{other:?}").into_bytes()),
    }
}
