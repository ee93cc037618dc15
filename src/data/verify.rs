//! The verifier: compares two Redis endpoints database by database: key counts, then a sample (or every
//! key) by type, value and TTL within a tolerance. Values are compared as values, never as DUMP bytes: the
//! DUMP of an identical hashtable-encoded set can order its members differently.

use std::collections::{BTreeMap, BTreeSet};

use redis::Value as RValue;
use redis::aio::MultiplexedConnection;
use serde::Serialize;

use crate::data::connect::{RedisEndpoint, connect};

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
}

impl VerifyReport {
    pub fn passed(&self) -> bool {
        self.mismatch_count == 0 && self.key_counts.values().all(|(a, b)| a == b)
    }

    fn record(&mut self, db: i64, key: &[u8], reason: String) {
        self.mismatch_count += 1;
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

pub async fn verify(
    source: &RedisEndpoint,
    target: &RedisEndpoint,
    mode: VerifyMode,
    ttl_tolerance_ms: i64,
    progress: &(dyn Fn(u64, u64) + Send + Sync),
) -> Result<VerifyReport, String> {
    let mut src = connect(source).await?;
    let mut dst = connect(target).await?;
    let err = |e: redis::RedisError| format!("verify: {e}");
    let src_counts = keyspace(&mut src).await.map_err(err)?;
    let dst_counts = keyspace(&mut dst).await.map_err(err)?;
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
    let mut done = 0u64;
    for (db, count) in &src_counts {
        let mut s = connect(&source.with_db(*db)).await?;
        let mut d = connect(&target.with_db(*db)).await?;
        let keys: Vec<Vec<u8>> = match mode {
            VerifyMode::Sample(n) => sample_keys(&mut s, n.min(*count)).await.map_err(err)?,
            VerifyMode::Full => Vec::new(),
        };
        let mut compare_batch =
            async |batch: &[Vec<u8>], report: &mut VerifyReport| -> Result<(), String> {
                for key in batch {
                    if let Some(reason) = compare_key(&mut s, &mut d, key, ttl_tolerance_ms)
                        .await
                        .map_err(err)?
                    {
                        report.record(*db, key, reason);
                    }
                    report.keys_compared += 1;
                }
                Ok(())
            };
        match mode {
            VerifyMode::Sample(_) => {
                for chunk in keys.chunks(200) {
                    compare_batch(chunk, &mut report).await?;
                    done += chunk.len() as u64;
                    progress(done, total);
                }
            }
            VerifyMode::Full => {
                let mut scan_conn = connect(&source.with_db(*db)).await?;
                let mut cursor: u64 = 0;
                loop {
                    let (next, batch): (u64, Vec<Vec<u8>>) = redis::cmd("SCAN")
                        .arg(cursor)
                        .arg("COUNT")
                        .arg(1000)
                        .query_async(&mut scan_conn)
                        .await
                        .map_err(err)?;
                    compare_batch(&batch, &mut report).await?;
                    done += batch.len() as u64;
                    progress(done.min(total), total);
                    cursor = next;
                    if cursor == 0 {
                        break;
                    }
                }
            }
        }
    }
    Ok(report)
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

/// `None` when the key matches; otherwise what differs.
async fn compare_key(
    s: &mut MultiplexedConnection,
    d: &mut MultiplexedConnection,
    key: &[u8],
    ttl_tolerance_ms: i64,
) -> redis::RedisResult<Option<String>> {
    let (s_type, s_ttl) = type_and_ttl(s, key).await?;
    let (d_type, d_ttl) = type_and_ttl(d, key).await?;
    if s_type == "none" {
        // Gone from the source while we looked (expired or deleted): nothing to compare.
        return Ok(None);
    }
    if s_type != d_type {
        return Ok(Some(if d_type == "none" {
            "missing on the target".into()
        } else {
            format!("type {s_type} on the source, {d_type} on the target")
        }));
    }
    let s_val = read_value(s, key, &s_type).await?;
    let d_val = read_value(d, key, &d_type).await?;
    if s_val != d_val {
        return Ok(Some(format!("{s_type} value differs")));
    }
    let ttl_ok = match (s_ttl, d_ttl) {
        (a, b) if a < 0 || b < 0 => a == b,
        (a, b) => (a - b).abs() <= ttl_tolerance_ms,
    };
    if !ttl_ok {
        return Ok(Some(format!(
            "TTL {s_ttl} ms on the source, {d_ttl} ms on the target"
        )));
    }
    Ok(None)
}

async fn type_and_ttl(
    c: &mut MultiplexedConnection,
    key: &[u8],
) -> redis::RedisResult<(String, i64)> {
    redis::pipe()
        .cmd("TYPE")
        .arg(key)
        .cmd("PTTL")
        .arg(key)
        .query_async(c)
        .await
}

/// A canonical form of the value: unordered collections sorted.
async fn read_value(
    c: &mut MultiplexedConnection,
    key: &[u8],
    kind: &str,
) -> redis::RedisResult<Vec<Vec<u8>>> {
    let value: RValue = match kind {
        "string" => redis::cmd("GET").arg(key).query_async(c).await?,
        "hash" => redis::cmd("HGETALL").arg(key).query_async(c).await?,
        "list" => {
            redis::cmd("LRANGE")
                .arg(key)
                .arg(0)
                .arg(-1)
                .query_async(c)
                .await?
        }
        "set" => redis::cmd("SMEMBERS").arg(key).query_async(c).await?,
        "zset" => {
            redis::cmd("ZRANGE")
                .arg(key)
                .arg(0)
                .arg(-1)
                .arg("WITHSCORES")
                .query_async(c)
                .await?
        }
        "stream" => {
            redis::cmd("XRANGE")
                .arg(key)
                .arg("-")
                .arg("+")
                .query_async(c)
                .await?
        }
        _ => redis::cmd("DUMP").arg(key).query_async(c).await?,
    };
    let mut flat = Vec::new();
    flatten(&value, &mut flat);
    match kind {
        "set" => flat.sort(),
        "hash" => {
            let mut pairs: Vec<Vec<u8>> = flat.chunks(2).map(|p| p.concat_with_sep()).collect();
            pairs.sort();
            flat = pairs;
        }
        _ => {}
    }
    Ok(flat)
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
