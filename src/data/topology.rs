//! The shape of a Redis data plane behind one endpoint: a single primary (cluster mode disabled, databases
//! 0–15), or a cluster's primaries and the hash slots each owns; and the key → slot hash that routes a
//! key to its primary.
//!
//! Only what ElastiCache allows is asked: `INFO cluster`, then `CLUSTER SHARDS` (Redis 7 and later) or
//! `CLUSTER SLOTS` before it. The topology is read, never changed. Every primary's endpoint keeps the TLS
//! setting, CA file and password of the endpoint it was found from: a cluster's nodes share them.

use redis::Value;

use crate::data::connect::{RedisEndpoint, connect};
use crate::data::error::{DataError, Peer};

/// Hash slots of a Redis cluster.
pub const SLOTS: usize = 16384;

/// One primary, the slot ranges it owns (inclusive; the whole range for a single primary), and its
/// replicas as the cluster announces them (none known for a single primary).
#[derive(Debug, Clone)]
pub struct Shard {
    pub endpoint: RedisEndpoint,
    pub slots: Vec<(u16, u16)>,
    pub replicas: Vec<RedisEndpoint>,
}

/// The primaries behind an endpoint, in slot order (the first slot each owns).
#[derive(Debug, Clone)]
pub struct Topology {
    /// Cluster mode enabled: keys live in database 0 only, and multi-key commands must stay in one slot.
    pub cluster: bool,
    pub shards: Vec<Shard>,
    /// Slot → index into `shards` (a cluster only; empty for a single primary).
    owner: Vec<u16>,
}

impl Topology {
    /// A single primary: one shard, the endpoint itself, every database.
    pub fn single(endpoint: &RedisEndpoint) -> Topology {
        Topology {
            cluster: false,
            shards: vec![Shard {
                endpoint: endpoint.clone(),
                slots: vec![(0, (SLOTS - 1) as u16)],
                replicas: Vec::new(),
            }],
            owner: Vec::new(),
        }
    }

    /// Find out what `endpoint` (any node) belongs to.
    pub async fn discover(endpoint: &RedisEndpoint) -> Result<Topology, DataError> {
        Topology::discover_on(&mut connect(endpoint).await?, endpoint).await
    }

    /// [`Topology::discover`] on a connection already open to `endpoint` (for callers that read the
    /// topology again and again, such as the capture's per-round check).
    pub async fn discover_on(
        conn: &mut redis::aio::MultiplexedConnection,
        endpoint: &RedisEndpoint,
    ) -> Result<Topology, DataError> {
        let failed = |what: &'static str| {
            move |e: redis::RedisError| {
                DataError::redis(endpoint, &e)
                    .command(what)
                    .context(format!(
                        "reading the topology of {}",
                        endpoint.display_url()
                    ))
            }
        };
        let info: String = redis::cmd("INFO")
            .arg("cluster")
            .query_async(conn)
            .await
            .map_err(failed("INFO"))?;
        if !cluster_enabled(&info) {
            return Ok(Topology::single(endpoint));
        }
        let primaries = match redis::cmd("CLUSTER")
            .arg("SHARDS")
            .query_async::<Value>(conn)
            .await
        {
            Ok(reply) => parse_shards(&reply, endpoint.tls),
            // Before Redis 7: CLUSTER SHARDS is an unknown command.
            Err(_) => {
                let reply: Value = redis::cmd("CLUSTER")
                    .arg("SLOTS")
                    .query_async(conn)
                    .await
                    .map_err(failed("CLUSTER SLOTS"))?;
                parse_slots(&reply)
            }
        }
        .map_err(|message| DataError::Protocol {
            peer: Peer::from(endpoint),
            message: format!(
                "reading the topology of {}: {message}",
                endpoint.display_url()
            ),
        })?;
        Topology::cluster(endpoint, primaries).map_err(|message| DataError::Unsupported {
            peer: Peer::from(endpoint),
            message: format!(
                "the cluster of {} {message}; wait until CLUSTER INFO says cluster_state:ok",
                endpoint.display_url()
            ),
        })
    }

    /// A cluster of primaries on 127.0.0.1:7000, 7001, ... owning these slot ranges, one each (tests of
    /// routing that need no server).
    #[cfg(test)]
    pub(crate) fn local_cluster(ranges: &[(u16, u16)]) -> Topology {
        let primaries = (0u16..)
            .zip(ranges)
            .map(|(i, &range)| Primary {
                host: "127.0.0.1".into(),
                port: 7000 + i,
                slots: vec![range],
                replicas: Vec::new(),
            })
            .collect();
        Topology::cluster(&RedisEndpoint::plain("127.0.0.1", 7000), primaries)
            .expect("every slot owned by one primary")
    }

    /// A cluster from its primaries (`host`, `port`, slot ranges): every slot must have exactly one owner.
    fn cluster(given: &RedisEndpoint, primaries: Vec<Primary>) -> Result<Topology, String> {
        let mut primaries: Vec<Primary> = primaries
            .into_iter()
            .filter(|p| !p.slots.is_empty())
            .collect();
        primaries.sort_by_key(|p| p.slots.iter().map(|r| r.0).min());
        let mut owner = vec![u16::MAX; SLOTS];
        for (i, p) in primaries.iter().enumerate() {
            for &(start, end) in &p.slots {
                if start > end || end as usize >= SLOTS {
                    return Err(format!("announces the slot range {start}-{end}"));
                }
                for slot in start..=end {
                    if owner[slot as usize] != u16::MAX {
                        return Err(format!("announces slot {slot} on two primaries"));
                    }
                    owner[slot as usize] = i as u16;
                }
            }
        }
        if let Some(slot) = owner.iter().position(|&o| o == u16::MAX) {
            return Err(format!("has no primary for slot {slot}"));
        }
        let at = |(host, port): (String, u16)| RedisEndpoint {
            host,
            port,
            db: 0,
            ..given.clone()
        };
        let shards = primaries
            .into_iter()
            .map(|p| Shard {
                endpoint: at((p.host, p.port)),
                slots: p.slots,
                replicas: p.replicas.into_iter().map(at).collect(),
            })
            .collect();
        Ok(Topology {
            cluster: true,
            shards,
            owner,
        })
    }

    /// The shard that owns `slot` (0 for a single primary).
    pub fn shard_of_slot(&self, slot: u16) -> usize {
        if self.cluster {
            self.owner[slot as usize] as usize
        } else {
            0
        }
    }

    /// The shard that holds `key` (0 for a single primary).
    pub fn shard_of(&self, key: &[u8]) -> usize {
        if self.cluster {
            self.owner[key_slot(key) as usize] as usize
        } else {
            0
        }
    }

    /// Every node known: the primaries, then their replicas.
    pub fn nodes(&self) -> Vec<RedisEndpoint> {
        let primaries = self.shards.iter().map(|s| s.endpoint.clone());
        let replicas = self.shards.iter().flat_map(|s| s.replicas.iter().cloned());
        primaries.chain(replicas).collect()
    }

    /// Which primary owns which slots, as `host:port=start-end,…` per primary: two readings that differ
    /// mean a failover or a slot migration happened between them.
    pub fn slot_map(&self) -> Vec<String> {
        self.shards
            .iter()
            .map(|s| {
                let ranges: Vec<String> = s.slots.iter().map(|(a, b)| format!("{a}-{b}")).collect();
                format!(
                    "{}:{}={}",
                    s.endpoint.host,
                    s.endpoint.port,
                    ranges.join(",")
                )
            })
            .collect()
    }

    /// How the operator reads it: `a cluster of 3 primaries`, `a single primary`.
    pub fn describe(&self) -> String {
        if self.cluster {
            format!("a cluster of {} primaries", self.shards.len())
        } else {
            "a single primary".to_string()
        }
    }
}

/// `cluster_enabled:1` in `INFO cluster`.
fn cluster_enabled(info: &str) -> bool {
    info.lines().any(|l| l.trim() == "cluster_enabled:1")
}

/// A primary as CLUSTER SHARDS or CLUSTER SLOTS announces it.
#[derive(Debug, Clone, PartialEq)]
struct Primary {
    host: String,
    port: u16,
    slots: Vec<(u16, u16)>,
    /// `(host, port)` of each replica.
    replicas: Vec<(String, u16)>,
}

/// The fields of a map reply: a RESP3 map, or a RESP2 array of alternating names and values.
fn fields(v: &Value) -> Vec<(String, &Value)> {
    match v {
        Value::Map(pairs) => pairs
            .iter()
            .filter_map(|(k, v)| Some((text(k)?, v)))
            .collect(),
        Value::Array(items) => items
            .chunks(2)
            .filter_map(|p| Some((text(&p[0])?, p.get(1)?)))
            .collect(),
        _ => Vec::new(),
    }
}

fn text(v: &Value) -> Option<String> {
    match v {
        Value::BulkString(b) => Some(String::from_utf8_lossy(b).into_owned()),
        Value::SimpleString(s) => Some(s.clone()),
        Value::VerbatimString { text, .. } => Some(text.clone()),
        _ => None,
    }
}

fn int(v: &Value) -> Option<i64> {
    match v {
        Value::Int(i) => Some(*i),
        other => text(other)?.parse().ok(),
    }
}

fn items(v: &Value) -> &[Value] {
    match v {
        Value::Array(items) | Value::Set(items) => items,
        _ => &[],
    }
}

fn port(v: Option<i64>) -> Option<u16> {
    v.and_then(|p| u16::try_from(p).ok()).filter(|&p| p > 0)
}

/// The primaries of a `CLUSTER SHARDS` reply. A node is reached at its `endpoint` (what clients are told,
/// the node's DNS name on ElastiCache) or, where that is unknown, its `ip`; at its `tls-port` when the
/// given endpoint is TLS.
fn parse_shards(reply: &Value, tls: bool) -> Result<Vec<Primary>, String> {
    let mut out = Vec::new();
    for shard in items(reply) {
        let shard = fields(shard);
        let get = |name: &str| shard.iter().find(|(k, _)| k == name).map(|(_, v)| *v);
        let bounds: Vec<i64> = get("slots")
            .map(items)
            .unwrap_or(&[])
            .iter()
            .filter_map(int)
            .collect();
        let slots = slot_pairs(&bounds)?;
        let nodes = get("nodes").map(items).unwrap_or(&[]);
        let role_of = |node: &[(String, &Value)]| {
            node.iter()
                .find(|(k, _)| k == "role")
                .and_then(|(_, v)| text(v))
        };
        let nodes: Vec<Vec<(String, &Value)>> = nodes.iter().map(fields).collect();
        let Some(node) = nodes
            .iter()
            .find(|n| role_of(n).as_deref() == Some("master"))
        else {
            if slots.is_empty() {
                continue;
            }
            return Err("CLUSTER SHARDS names slots without a primary".into());
        };
        let (host, port) = node_address(node, tls)?;
        // A replica that is not online (failed, still loading) cannot hold clients worth moving.
        let replicas = nodes
            .iter()
            .filter(|n| role_of(n).as_deref() == Some("replica"))
            .filter(|n| {
                n.iter()
                    .find(|(k, _)| k == "health")
                    .and_then(|(_, v)| text(v))
                    .is_none_or(|h| h == "online")
            })
            .map(|n| node_address(n, tls))
            .collect::<Result<Vec<_>, _>>()?;
        out.push(Primary {
            host,
            port,
            slots,
            replicas,
        });
    }
    Ok(out)
}

/// Where a node of a `CLUSTER SHARDS` reply is reached.
fn node_address(node: &[(String, &Value)], tls: bool) -> Result<(String, u16), String> {
    let field = |name: &str| node.iter().find(|(k, _)| k == name).map(|(_, v)| *v);
    let host = field("endpoint")
        .and_then(text)
        .filter(|h| !h.is_empty() && h != "?")
        .or_else(|| field("ip").and_then(text))
        .ok_or("CLUSTER SHARDS names a node without an address")?;
    let (plain, secure) = (
        port(field("port").and_then(int)),
        port(field("tls-port").and_then(int)),
    );
    let port = if tls {
        secure.or(plain)
    } else {
        plain.or(secure)
    }
    .ok_or("CLUSTER SHARDS names a node without a port")?;
    Ok((host, port))
}

/// `[start, end, start, end, ...]` as ranges.
fn slot_pairs(bounds: &[i64]) -> Result<Vec<(u16, u16)>, String> {
    if !bounds.len().is_multiple_of(2) {
        return Err("a slot range has no end".into());
    }
    bounds
        .chunks(2)
        .map(|p| match (u16::try_from(p[0]), u16::try_from(p[1])) {
            (Ok(a), Ok(b)) => Ok((a, b)),
            _ => Err(format!("slot range {}-{} is out of bounds", p[0], p[1])),
        })
        .collect()
}

/// The primaries of a `CLUSTER SLOTS` reply: `[start, end, [host, port, id, …], replicas…]` per range.
fn parse_slots(reply: &Value) -> Result<Vec<Primary>, String> {
    let mut out: Vec<Primary> = Vec::new();
    for range in items(reply) {
        let parts = items(range);
        let (Some(start), Some(end), Some(node)) = (
            parts.first().and_then(int),
            parts.get(1).and_then(int),
            parts.get(2).map(items),
        ) else {
            return Err("CLUSTER SLOTS answered a range oddly".into());
        };
        let host = node
            .first()
            .and_then(text)
            .ok_or("CLUSTER SLOTS names a primary without an address")?;
        let port = port(node.get(1).and_then(int))
            .ok_or("CLUSTER SLOTS names a primary without a port")?;
        let range = slot_pairs(&[start, end])?[0];
        let replicas = parts[3..]
            .iter()
            .filter_map(|r| {
                let r = items(r);
                Some((
                    r.first().and_then(text)?,
                    self::port(r.get(1).and_then(int))?,
                ))
            })
            .collect();
        match out.iter_mut().find(|p| p.host == host && p.port == port) {
            Some(p) => p.slots.push(range),
            None => out.push(Primary {
                host,
                port,
                slots: vec![range],
                replicas,
            }),
        }
    }
    Ok(out)
}

/// CRC16/XMODEM (polynomial 0x1021, initial value 0), table-driven: the hash of Redis Cluster's slots.
const CRC16_TABLE: [u16; 256] = {
    let mut table = [0u16; 256];
    let mut i = 0;
    while i < 256 {
        let mut crc = (i as u16) << 8;
        let mut bit = 0;
        while bit < 8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
            bit += 1;
        }
        table[i] = crc;
        i += 1;
    }
    table
};

pub fn crc16(bytes: &[u8]) -> u16 {
    bytes.iter().fold(0u16, |crc, &b| {
        (crc << 8) ^ CRC16_TABLE[((crc >> 8) as u8 ^ b) as usize]
    })
}

/// The slot of `key`: CRC16 of its hash tag — what lies between the first `{` and the first `}` after
/// it, when that is not empty — or of the whole key, modulo 16384.
pub fn key_slot(key: &[u8]) -> u16 {
    crc16(hash_tag(key)) % SLOTS as u16
}

fn hash_tag(key: &[u8]) -> &[u8] {
    if let Some(open) = key.iter().position(|&b| b == b'{')
        && let Some(len) = key[open + 1..].iter().position(|&b| b == b'}')
        && len > 0
    {
        return &key[open + 1..open + 1 + len];
    }
    key
}

/// A hash tag `{ecmigrate-tmp-N}` whose slot is `slot`: a temporary key built as this tag followed by a
/// key lives on the same primary, in the same slot, as the key itself (so it can be RENAMEd over it).
pub fn same_slot_tag(slot: u16) -> Vec<u8> {
    (0u32..)
        .map(|n| format!("ecmigrate-tmp-{n}"))
        .find(|tag| key_slot(tag.as_bytes()) == slot)
        .map(|tag| format!("{{{tag}}}").into_bytes())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests;
