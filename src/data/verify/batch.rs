//! One batch of `verify --full` on the bulk lane: the same reads on both sides, cheap comparisons first,
//! and the keys they cannot settle handed to the typed comparison ([`super::typed`]).
//!
//! Round one asks the source what a copy asks it: a PTTL per key and one MGET (per slot, on a cluster),
//! which answers strings, most keys, with their bytes and everything else with nil. Round two asks the
//! target the same (the PTTL only of keys with a TTL on the source, where the pass proves the rest by
//! count: [`TargetTtls`]), in the same round trip DUMP of the keys that are not strings on the source, while
//! the source is asked for their DUMP: three round trips a batch, as a copy makes (two to the source,
//! one to the target), where asking both sides each round made four (each round trip costs the
//! verifier and the server a write, a read and a wake-up). Strings are compared byte for byte, DUMP
//! payloads without their 10-byte trailer (the RDB version and a CRC64 over it): equal bodies are the
//! same value, on any two Redis versions. Not DUMP for every key: it makes each server try to compress
//! and checksum every value, and the servers' CPU is what bounds a comparison, as it bounds a copy.
//!
//! Equal values need not have equal DUMP bodies: a hashtable-encoded set or hash dumps its members in
//! its own table's order, and a 6.2 server writes a ziplist where 7.0 writes a listpack. Bodies of the
//! first kind are compared member by member in any order ([`super::payload`]). Keys whose bodies still
//! differ, and keys that are a string on one side only, go to the typed comparison, which reads
//! them as values and has the last word, as it had for every key before. What the bulk lane reports
//! itself (a key missing on the target, a string's bytes, a TTL outside the tolerance) it reports in
//! the typed comparison's words.

use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::LazyLock;

use futures_util::TryFutureExt;

use super::VerifyOptions;
use super::payload::same_members;
use super::routing::Routed;
use super::typed::{ttl_differs, ttls_agree};
use crate::data::error::{DataError, Peer, Role};
use crate::data::resp::{Head, LaneError, PipeConn, Reply};
use crate::data::topology::{Topology, key_slot};

/// The trailer of a DUMP payload: a 2-byte RDB version and an 8-byte CRC64.
const DUMP_TRAILER: usize = 10;

/// Why one batch was not compared.
pub(super) enum BatchError {
    /// A side's replies exceeded `max_batch_reply_bytes`: split the batch and compare again.
    TooLarge,
    Failed(DataError),
}

impl From<DataError> for BatchError {
    fn from(e: DataError) -> Self {
        BatchError::Failed(e)
    }
}

/// A lane's connections: one to its source primary, one per target primary (by index) that a batch
/// routed to, each with the endpoint its errors name. Opened on first use.
#[derive(Default)]
pub(super) struct Conns {
    src: Option<(PipeConn, Peer)>,
    dst: Vec<Option<(PipeConn, Peer)>>,
}

impl Conns {
    /// Whether every connection `batch` needs is open already.
    pub(super) fn ready(&self, batch: &Batch<'_>) -> bool {
        self.src.is_some()
            && batch
                .targets
                .iter()
                .all(|g| self.dst.get(g.shard).is_some_and(Option::is_some))
    }

    /// Open the connections `batch` needs that are not open (database `db`, source primary `s`).
    pub(super) async fn open(
        &mut self,
        routed: &Routed,
        db: i64,
        s: usize,
        batch: &Batch<'_>,
        options: &VerifyOptions,
    ) -> Result<(), DataError> {
        let open = |role: Role, shard: usize| async move {
            let endpoint = routed.topology(role).shards[shard].endpoint.with_db(db);
            let mut conn = PipeConn::open(&endpoint).await.map_err(|e| e.role(role))?;
            conn.set_reply_cap(options.max_batch_reply_bytes);
            let peer = Peer {
                role: Some(role),
                ..Peer::from(&endpoint)
            };
            Ok::<_, DataError>((conn, peer))
        };
        if self.src.is_none() {
            self.src = Some(open(Role::Source, s).await?);
        }
        self.dst.resize_with(routed.target.shards.len(), || None);
        for group in &batch.targets {
            if self.dst[group.shard].is_none() {
                self.dst[group.shard] = Some(open(Role::Target, group.shard).await?);
            }
        }
        Ok(())
    }
}

/// The keys of one target primary in a batch, and their MGET runs.
pub(super) struct Group {
    shard: usize,
    /// Indexes into the batch's keys, ascending.
    idx: Vec<usize>,
    /// Ranges of `idx`, each one MGET (one slot each on a cluster).
    runs: Vec<Range<usize>>,
}

/// One batch, routed: its keys (sorted by slot when either side is a cluster, so that each slot's keys
/// are adjacent), the source's MGET runs, and the keys of each target primary.
pub(super) struct Batch<'k> {
    keys: Vec<&'k [u8]>,
    runs: Vec<Range<usize>>,
    pub(super) targets: Vec<Group>,
}

/// What a batch found: keys that differ, keys left to the typed comparison, the source's reply bytes
/// per key (which size the next batches), and how many keys the target said have a TTL.
pub(super) struct Found {
    pub(super) differ: Vec<(Vec<u8>, String)>,
    pub(super) typed: Vec<Vec<u8>>,
    pub(super) bytes_per_key: usize,
    pub(super) target_expiring: u64,
}

/// Which keys' TTLs a batch asks the target.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum TargetTtls {
    /// Every key's.
    Every,
    /// Only of the keys with a TTL on the source; the pass proves by count that the others have none
    /// there (see [`super::expiry`]). Four keys in five have no TTL in a typical cache, and a PTTL was
    /// the target's costliest read per key.
    OfExpiring,
}

/// One side's answer to round one: the PTTLs asked and, for a string, its bytes.
struct Read<'r> {
    pttls: Vec<i64>,
    values: Vec<Option<&'r [u8]>>,
}

impl<'k> Batch<'k> {
    pub(super) fn route(keys: &[&'k [u8]], source: &Topology, target: &Topology) -> Batch<'k> {
        let mut keys = keys.to_vec();
        let slots: Vec<u16> = if source.cluster || target.cluster {
            keys.sort_by_cached_key(|k| key_slot(k));
            keys.iter().map(|k| key_slot(k)).collect()
        } else {
            Vec::new()
        };
        let slot = |i: usize| slots.get(i).copied().unwrap_or(0);
        let runs = slot_runs((0..keys.len()).map(slot), source.cluster);
        let mut by_shard: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
        for i in 0..keys.len() {
            let shard = if target.cluster {
                target.shard_of_slot(slot(i))
            } else {
                0
            };
            by_shard.entry(shard).or_default().push(i);
        }
        let targets = by_shard
            .into_iter()
            .map(|(shard, idx)| Group {
                runs: slot_runs(idx.iter().map(|&i| slot(i)), target.cluster),
                shard,
                idx,
            })
            .collect();
        Batch {
            keys,
            runs,
            targets,
        }
    }

    /// Compare the batch on `conns` (every one of them open).
    pub(super) async fn compare(
        &self,
        conns: &mut Conns,
        ttl_tolerance_ms: i64,
        target_ttls: TargetTtls,
    ) -> Result<Found, BatchError> {
        let Conns { src, dst } = conns;
        let (src, src_peer) = src.as_mut().expect("the source connection is open");
        // The target primaries of this batch: what each is asked (and how its errors read), and its
        // connection, apart so that the replies of all of them can be held at once.
        let (mut asked, mut dsts): (Vec<(&Group, &Peer)>, Vec<&mut PipeConn>) = (vec![], vec![]);
        for (shard, slot) in dst.iter_mut().enumerate() {
            if let Some(group) = self.targets.iter().find(|g| g.shard == shard) {
                let (conn, peer) = slot.as_mut().expect("the target connection is open");
                asked.push((group, &*peer));
                dsts.push(conn);
            }
        }
        let n = self.keys.len();
        src.take_read_bytes();

        // Round one: PTTL and MGET on the source. Its strings are kept (one buffer) while its
        // connection serves round two.
        let all: Vec<usize> = (0..n).collect();
        queue_reads(src, &self.keys, &all, &all, &self.runs);
        let replies = src.round_trip().await.map_err(lane_err(Role::Source))?;
        let Read {
            pttls: s_pttls,
            values,
        } = read(&replies, n, &self.runs, src_peer)?;
        let mut s_bytes = Vec::with_capacity(replies_bytes(&values));
        let s_values: Vec<Option<Range<usize>>> = values
            .iter()
            .map(|v| {
                v.map(|b| {
                    s_bytes.extend_from_slice(b);
                    s_bytes.len() - b.len()..s_bytes.len()
                })
            })
            .collect();
        drop(replies);
        // The keys the source holds that are not strings: compared by DUMP.
        let dump: Vec<usize> = (0..n)
            .filter(|&i| s_values[i].is_none() && s_pttls[i] != -2)
            .collect();

        // Round two, on both sides at once: DUMP of those on the source; on the target PTTL of the keys
        // `target_ttls` asks and MGET of every key, then DUMP of those (one round trip per target
        // primary).
        let per_group: Vec<Vec<usize>> = asked
            .iter()
            .map(|(group, _)| {
                let mine = dump.iter().copied();
                mine.filter(|i| group.idx.binary_search(i).is_ok())
                    .collect()
            })
            .collect();
        let ttls_of: Vec<Vec<usize>> = asked
            .iter()
            .map(|(group, _)| match target_ttls {
                TargetTtls::Every => group.idx.clone(),
                TargetTtls::OfExpiring => {
                    let mine = group.idx.iter().copied();
                    mine.filter(|&i| s_pttls[i] >= 0).collect()
                }
            })
            .collect();
        queue_dumps(src, &self.keys, &dump);
        for ((((group, _), conn), mine), ttls) in asked
            .iter()
            .zip(dsts.iter_mut())
            .zip(&per_group)
            .zip(&ttls_of)
        {
            queue_reads(conn, &self.keys, ttls, &group.idx, &group.runs);
            queue_dumps(conn, &self.keys, mine);
        }
        let src_dumps = async {
            if dump.is_empty() {
                Ok(Vec::new())
            } else {
                src.round_trip().await.map_err(lane_err(Role::Source))
            }
        };
        let (src_replies, dst_replies) = tokio::try_join!(
            src_dumps,
            futures_util::future::try_join_all(
                dsts.iter_mut()
                    .map(|conn| conn.round_trip().map_err(lane_err(Role::Target)))
            )
        )?;
        // The target's PTTL of each key it was asked (none where it was not), and its strings.
        let mut d_pttls: Vec<Option<i64>> = vec![None; n];
        let mut d_values: Vec<Option<&[u8]>> = vec![None; n];
        // Each key's DUMP payload on each side, by its index in the batch (none for a string or a key gone).
        let mut d_dump: Vec<Option<&[u8]>> = vec![None; n];
        for ((((group, peer), mine), ttls), replies) in
            asked.iter().zip(&per_group).zip(&ttls_of).zip(&dst_replies)
        {
            let reads = ttls.len() + group.runs.len();
            if replies.len() != reads + mine.len() {
                return Err(odd(peer, "every PTTL, MGET and DUMP"));
            }
            let got = read(&replies[..reads], ttls.len(), &group.runs, peer)?;
            for (&i, pttl) in ttls.iter().zip(got.pttls) {
                d_pttls[i] = Some(pttl);
            }
            for (&i, value) in group.idx.iter().zip(got.values) {
                d_values[i] = value;
            }
            for (&i, payload) in mine
                .iter()
                .zip(payloads(&replies[reads..], mine.len(), peer)?)
            {
                d_dump[i] = payload;
            }
        }
        let mut s_dump: Vec<Option<&[u8]>> = vec![None; n];
        for (&i, payload) in dump
            .iter()
            .zip(payloads(&src_replies, dump.len(), src_peer)?)
        {
            s_dump[i] = payload;
        }
        let (mut differ, mut typed) = (Vec::new(), Vec::new());
        for i in 0..n {
            let (sp, dp) = (s_pttls[i], d_pttls[i]);
            // A TTL the target was not asked is the pass's to prove (by count), not the batch's.
            let ttl = || match dp {
                Some(dp) if !ttls_agree(sp, dp, ttl_tolerance_ms) => Some(ttl_differs(sp, dp)),
                _ => None,
            };
            let s_value = s_values[i].clone().map(|r| &s_bytes[r]);
            let why = match (s_value, d_values[i]) {
                // Gone from the source while we looked (expired or deleted): nothing to compare.
                _ if sp == -2 => None,
                _ if dp == Some(-2) => Some("missing on the target".to_string()),
                (Some(a), Some(b)) if a != b => Some("string value differs".to_string()),
                (Some(_), Some(_)) => ttl(),
                (None, None) => match (s_dump[i].and_then(body), d_dump[i].and_then(body)) {
                    (Some(a), Some(b)) if a == b || same_members(a, b) => ttl(),
                    _ => {
                        typed.push(i);
                        None
                    }
                },
                // A string on one side only: the typed comparison names both types.
                _ => {
                    typed.push(i);
                    None
                }
            };
            if let Some(why) = why {
                differ.push((self.keys[i].to_vec(), why));
            }
        }
        Ok(Found {
            differ,
            typed: typed.into_iter().map(|i| self.keys[i].to_vec()).collect(),
            bytes_per_key: src.take_read_bytes() / n.max(1),
            target_expiring: d_pttls.iter().flatten().filter(|&&p| p >= 0).count() as u64,
        })
    }
}

/// Ranges of a sequence of slots, one per run of equal slots; the whole sequence where the side is no
/// cluster (a single primary takes an MGET of any keys).
fn slot_runs(slots: impl Iterator<Item = u16>, cluster: bool) -> Vec<Range<usize>> {
    let mut runs: Vec<Range<usize>> = Vec::new();
    let mut last = None;
    for (i, slot) in slots.enumerate() {
        match runs.last_mut() {
            Some(run) if !cluster || last == Some(slot) => run.end = i + 1,
            _ => runs.push(i..i + 1),
        }
        last = Some(slot);
    }
    runs
}

/// The heads of the commands a batch sends per key, encoded once: encoding every command whole was a
/// ninth of the verifier's instructions (callgrind, 200k keys).
static PTTL: LazyLock<Head> = LazyLock::new(|| Head::new(2, b"PTTL"));
static DUMP: LazyLock<Head> = LazyLock::new(|| Head::new(2, b"DUMP"));
/// A one-key MGET: on a cluster most slot runs of a batch are one key long.
static MGET_ONE: LazyLock<Head> = LazyLock::new(|| Head::new(2, b"MGET"));

/// Queue a PTTL for each key of `ttls`, then an MGET per run of `idx` (`runs` are ranges of `idx`).
fn queue_reads(
    conn: &mut PipeConn,
    keys: &[&[u8]],
    ttls: &[usize],
    idx: &[usize],
    runs: &[Range<usize>],
) {
    for &i in ttls {
        conn.command_head(&PTTL).arg(keys[i]);
    }
    for run in runs {
        if run.len() == 1 {
            conn.command_head(&MGET_ONE);
        } else {
            conn.command(1 + run.len()).arg(b"MGET");
        }
        for &i in &idx[run.clone()] {
            conn.arg(keys[i]);
        }
    }
}

/// Bytes of the strings of a side's round one.
fn replies_bytes(values: &[Option<&[u8]>]) -> usize {
    values.iter().flatten().map(|v| v.len()).sum()
}

fn queue_dumps(conn: &mut PipeConn, keys: &[&[u8]], idx: &[usize]) {
    for &i in idx {
        conn.command_head(&DUMP).arg(keys[i]);
    }
}

/// A failed round trip of one side: over its reply bound (split and compare again), or failed.
fn lane_err(role: Role) -> impl Fn(LaneError) -> BatchError {
    move |e| match e {
        LaneError::TooLarge { .. } => BatchError::TooLarge,
        broken => BatchError::Failed(DataError::from(broken).role(role).context("verify")),
    }
}

/// An error reply among `replies`, as an error naming the side that refused.
fn refused(replies: &[Reply<'_>], peer: &Peer) -> Result<(), BatchError> {
    match replies.iter().find_map(Reply::error) {
        Some(e) => Err(BatchError::Failed(DataError::Refused {
            peer: peer.clone(),
            command: None,
            message: format!("verify: the {} refused a command: {e}", side(peer)),
        })),
        None => Ok(()),
    }
}

fn odd(peer: &Peer, what: &str) -> BatchError {
    BatchError::Failed(DataError::Protocol {
        peer: peer.clone(),
        message: format!("verify: the {} did not answer {what}", side(peer)),
    })
}

fn side(peer: &Peer) -> &'static str {
    match peer.role {
        Some(Role::Target) => "target",
        _ => "source",
    }
}

/// A side's replies to [`queue_reads`]: `ttls` PTTLs, then an MGET per run.
fn read<'r>(
    replies: &'r [Reply<'_>],
    ttls: usize,
    runs: &[Range<usize>],
    peer: &Peer,
) -> Result<Read<'r>, BatchError> {
    refused(replies, peer)?;
    if replies.len() != ttls + runs.len() {
        return Err(odd(peer, "every PTTL and MGET"));
    }
    let n = runs.last().map_or(0, |r| r.end);
    let pttls = replies[..ttls]
        .iter()
        .map(|r| r.int().ok_or_else(|| odd(peer, "PTTL with a number")))
        .collect::<Result<Vec<i64>, _>>()?;
    let mut values = Vec::with_capacity(n);
    for (run, reply) in runs.iter().zip(&replies[ttls..]) {
        match reply {
            Reply::Array(got) if got.len() == run.len() => {
                for value in got {
                    values.push(match value {
                        Reply::Bulk(b) => Some(*b),
                        Reply::Nil => None,
                        _ => return Err(odd(peer, "MGET with values")),
                    });
                }
            }
            _ => return Err(odd(peer, "MGET")),
        }
    }
    Ok(Read { pttls, values })
}

/// Round two's replies of one side: a DUMP payload (or nil, for a key gone since) per key.
fn payloads<'r>(
    replies: &'r [Reply<'_>],
    n: usize,
    peer: &Peer,
) -> Result<Vec<Option<&'r [u8]>>, BatchError> {
    refused(replies, peer)?;
    if replies.len() != n {
        return Err(odd(peer, "every DUMP"));
    }
    replies
        .iter()
        .map(|r| match r {
            Reply::Bulk(p) => Ok(Some(*p)),
            Reply::Nil => Ok(None),
            _ => Err(odd(peer, "DUMP with a payload")),
        })
        .collect()
}

/// A DUMP payload without its trailer (none if it is too short to have one).
fn body(payload: &[u8]) -> Option<&[u8]> {
    payload
        .len()
        .checked_sub(DUMP_TRAILER)
        .map(|end| &payload[..end])
}

#[cfg(test)]
mod tests {
    use super::{body, slot_runs};

    #[test]
    fn slot_runs_split_only_where_the_side_is_a_cluster() {
        let slots = [3u16, 3, 7, 9, 9, 9];
        assert_eq!(slot_runs(slots.into_iter(), false), vec![0..6]);
        assert_eq!(slot_runs(slots.into_iter(), true), vec![0..2, 2..3, 3..6]);
        assert!(slot_runs(std::iter::empty(), true).is_empty());
    }

    #[test]
    fn dump_bodies_leave_out_the_version_and_checksum() {
        let a = b"\x00\x03abc\x0a\x00\x01\x02\x03\x04\x05\x06\x07\x08";
        let b = b"\x00\x03abc\x0b\x00\x09\x09\x09\x09\x09\x09\x09\x09";
        assert_eq!(body(a), Some(&b"\x00\x03abc"[..]));
        assert_eq!(body(a), body(b));
        assert_eq!(body(b"short"), None);
    }
}
