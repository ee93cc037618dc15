//! The typed comparison: each key read as a value of its type (GET, HGETALL, SMEMBERS, ...) on the
//! redis crate's connections, unordered collections sorted, so that two different encodings of one
//! value compare equal. It decides every key the bulk lane cannot (types that differ, DUMP payloads
//! that differ), and every key of a sample, a spot check and a recheck.

use futures_util::TryFutureExt;
use redis::Value as RValue;
use redis::aio::MultiplexedConnection;

use super::failed;
use crate::data::connect::{RedisEndpoint, connect};
use crate::data::error::{DataError, Role};

/// Whether two PTTLs agree: both without an expiry (or both gone) alike, else within the tolerance.
pub(super) fn ttls_agree(source: i64, target: i64, ttl_tolerance_ms: i64) -> bool {
    if source < 0 || target < 0 {
        source == target
    } else {
        (source - target).abs() <= ttl_tolerance_ms
    }
}

/// What a TTL outside the tolerance reads as.
pub(super) fn ttl_differs(source: i64, target: i64) -> String {
    format!("TTL {source} ms on the source, {target} ms on the target")
}

/// Connections to one database of both sides, and the endpoints their errors name. Cloned by every
/// batch that needs them: the redis crate's connections multiplex the concurrent batches' commands.
#[derive(Clone)]
pub(super) struct Sides {
    pub(super) s: MultiplexedConnection,
    d: MultiplexedConnection,
    source: RedisEndpoint,
    target: RedisEndpoint,
}

impl Sides {
    pub(super) async fn open(
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
    pub(super) fn err(&self, role: Role) -> impl Fn(redis::RedisError) -> DataError + use<> {
        let endpoint = match role {
            Role::Source => self.source.clone(),
            Role::Target => self.target.clone(),
        };
        move |e| failed(&endpoint, role, &e)
    }

    /// [`compare_keys`] on these connections.
    pub(super) async fn compare<'k>(
        &mut self,
        batch: &'k [Vec<u8>],
        ttl_tolerance_ms: i64,
    ) -> Result<Compared<'k>, DataError> {
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

/// How a redis error on the source, and on the target, reads.
type SideErrors<'a> = (
    &'a (dyn Fn(redis::RedisError) -> DataError + Sync),
    &'a (dyn Fn(redis::RedisError) -> DataError + Sync),
);

/// What a typed comparison found: the keys that differ, with what differs, and how many keys of the
/// batch have a TTL on the target.
pub(super) struct Compared<'k> {
    pub(super) differ: Vec<(&'k [u8], String)>,
    pub(super) target_expiring: u64,
}

/// The keys of `batch` that differ, with what differs. Two pipelined round trips per side: types and
/// TTLs, then values; both sides are read concurrently.
async fn compare_keys<'k>(
    s: &mut MultiplexedConnection,
    d: &mut MultiplexedConnection,
    batch: &'k [Vec<u8>],
    ttl_tolerance_ms: i64,
    (src_err, dst_err): SideErrors<'_>,
) -> Result<Compared<'k>, DataError> {
    let (s_meta, d_meta) = tokio::try_join!(
        types_and_ttls(s, batch).map_err(src_err),
        types_and_ttls(d, batch).map_err(dst_err)
    )?;
    let target_expiring = d_meta.iter().filter(|(_, ttl)| *ttl >= 0).count() as u64;
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
        if !ttls_agree(s_ttl, d_ttl, ttl_tolerance_ms) {
            differ.push((key, ttl_differs(s_ttl, d_ttl)));
        }
    }
    Ok(Compared {
        differ,
        target_expiring,
    })
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
