//! Cluster-mode-enabled groups: where each node sits (shard, role, slots), the key-to-slot function the
//! seeder routes by, forming the cluster the way the ElastiCache control plane does (CLUSTER MEET, ADDSLOTSRANGE,
//! REPLICATE: inside the sandbox these stand in for the control plane), waiting for `cluster_state:ok`, and
//! seeding keys onto the primary that owns each key's slot.
//!
//! The slot function here is private to the sandbox on purpose: the data plane keeps its own
//! (`src/data/topology.rs`); both follow the Redis Cluster specification (CRC16/XMODEM of the key, or of its
//! first non-empty `{hashtag}`, modulo 16384).

use std::time::{Duration, Instant};

use redis::aio::MultiplexedConnection;

use super::Sandbox;
use super::process::HOST;
use super::registry::{GroupRec, NodeRec, Role};
use crate::cloud::{CloudError, CloudResult};

/// Hash slots of a Redis cluster.
pub const SLOTS: u32 = 16_384;

/// Node groups a sandbox cluster may have: each node is a real process on this machine.
pub const MAX_SHARDS: u32 = 10;

/// How long the nodes of a new cluster may take to agree (`cluster_state:ok` everywhere).
const FORM_LIMIT: Duration = Duration::from_secs(120);

/// A progress line while a cluster forms (`sandbox up` prints it; a restore passes a no-op).
pub type Note<'a> = &'a (dyn Fn(&str) + Send + Sync);

/// The hash slot of `key`, as the data plane computes it (one slot function for the whole crate).
pub fn key_slot(key: &[u8]) -> u32 {
    u32::from(crate::data::topology::key_slot(key))
}

/// The slots shard `shard` of `shards` owns, inclusive: an even spread, rounded as `redis-cli --cluster
/// create` rounds it (3 shards: 0-5460, 5461-10922, 10923-16383).
pub fn shard_slots(shard: u32, shards: u32) -> (u32, u32) {
    // round((s + 1) * SLOTS / shards - 1), in integers.
    let end = |s: u32| match s + 1 == shards {
        true => SLOTS - 1,
        false => (2 * ((s + 1) * SLOTS - shards) + shards) / (2 * shards),
    };
    let start = match shard {
        0 => 0,
        s => end(s - 1) + 1,
    };
    (start, end(shard))
}

/// The shard that owns `slot`.
pub fn shard_of_slot(slot: u32, shards: u32) -> u32 {
    (0..shards)
        .find(|s| shard_slots(*s, shards).1 >= slot)
        .unwrap_or(shards - 1)
}

/// `"0-5460"`.
pub fn slots_text(shard: u32, shards: u32) -> String {
    let (a, b) = shard_slots(shard, shards);
    format!("{a}-{b}")
}

/// Nodes the group has when complete.
pub fn node_count(group: &GroupRec) -> u32 {
    group.num_node_groups.max(1) * (1 + group.replicas)
}

/// Node `index` of the group: its shard and whether it is that shard's primary. Nodes are laid out shard
/// by shard, the primary first.
pub fn place(group: &GroupRec, index: u32) -> (u32, bool) {
    let per_shard = 1 + group.replicas;
    (index / per_shard, index.is_multiple_of(per_shard))
}

/// `<group>-001` on a cluster-mode-disabled group; `<group>-0001-001` (shard, node) on a cluster, as
/// ElastiCache names the member clusters.
pub fn node_id(group: &GroupRec, index: u32) -> String {
    if !group.cluster_enabled {
        return format!("{}-{:03}", group.id, index + 1);
    }
    let per_shard = 1 + group.replicas;
    format!(
        "{}-{:04}-{:03}",
        group.id,
        index / per_shard + 1,
        index % per_shard + 1
    )
}

/// The primary of each shard, in shard order.
pub fn primaries(group: &GroupRec) -> Vec<&NodeRec> {
    let mut p: Vec<&NodeRec> = group
        .nodes
        .iter()
        .filter(|n| n.role == Role::Primary)
        .collect();
    p.sort_by_key(|n| n.shard);
    p
}

/// The `myself` line of `CLUSTER NODES`: (node id, flags, master id, slot fields).
struct Myself {
    id: String,
    flags: String,
    master: String,
    slots: usize,
}

fn transient(node: &NodeRec, e: impl std::fmt::Display) -> CloudError {
    CloudError::Transient {
        message: format!("{}: {e}", node.id),
    }
}

async fn cluster_nodes(conn: &mut MultiplexedConnection, node: &NodeRec) -> CloudResult<String> {
    redis::cmd("CLUSTER")
        .arg("NODES")
        .query_async::<String>(conn)
        .await
        .map_err(|e| transient(node, e))
}

async fn myself(conn: &mut MultiplexedConnection, node: &NodeRec) -> CloudResult<Myself> {
    let text = cluster_nodes(conn, node).await?;
    let line = text
        .lines()
        .find(|l| {
            l.split_whitespace()
                .nth(2)
                .is_some_and(|f| f.contains("myself"))
        })
        .ok_or_else(|| transient(node, "CLUSTER NODES has no `myself` line"))?;
    let f: Vec<&str> = line.split_whitespace().collect();
    Ok(Myself {
        id: f[0].to_string(),
        flags: f.get(2).copied().unwrap_or_default().to_string(),
        master: f.get(3).copied().unwrap_or_default().to_string(),
        slots: f.len().saturating_sub(8),
    })
}

/// `cluster_state:ok` in `CLUSTER INFO`.
pub async fn state_ok(conn: &mut MultiplexedConnection) -> bool {
    redis::cmd("CLUSTER")
        .arg("INFO")
        .query_async::<String>(conn)
        .await
        .is_ok_and(|info| info.lines().any(|l| l.trim() == "cluster_state:ok"))
}

/// `cluster_state:ok`, and the node's table settled: exactly `nodes` entries, none still in a MEET
/// handshake. Right after forming, a node can list a peer twice (its handshake entry and the entry
/// gossip brought) until the handshake resolves; a group is not available until that has settled.
async fn settled(conn: &mut MultiplexedConnection, node: &NodeRec, nodes: usize) -> bool {
    if !state_ok(conn).await {
        return false;
    }
    cluster_nodes(conn, node).await.is_ok_and(|table| {
        table.lines().count() == nodes && !table.lines().any(|l| l.contains("handshake"))
    })
}

impl Sandbox {
    /// Connections to every node of `group`, in node order.
    async fn connect_all(&self, group: &GroupRec) -> CloudResult<Vec<MultiplexedConnection>> {
        let mut conns = Vec::with_capacity(group.nodes.len());
        for n in &group.nodes {
            conns.push(self.connect_node(group, n).await?);
        }
        Ok(conns)
    }

    /// Join every started node of cluster group `id` into one cluster: each meets the first node, each
    /// primary takes its shard's slots, each replica follows its shard's primary; then wait (bounded) until
    /// every node reports `cluster_state:ok`. Idempotent: a step already done is skipped, so a restarted
    /// node or a resumed creation goes through it again safely. The caller holds the group's work lock.
    pub(super) async fn form_cluster(&self, id: &str, note: Note<'_>) -> CloudResult<()> {
        let group = self.group_rec(id)?;
        let first = group.nodes.first().ok_or_else(|| {
            CloudError::other(format!("sandbox: cluster `{id}` has no node to form from"))
        })?;
        let bus = first.bus_port.ok_or_else(|| {
            CloudError::other(format!(
                "sandbox: node {} has no cluster bus port",
                first.id
            ))
        })?;
        let mut conns = self.connect_all(&group).await?;
        note(&format!(
            "forming cluster `{id}`: {} shard(s), {} node(s)",
            group.num_node_groups,
            group.nodes.len()
        ));
        for (node, conn) in group.nodes.iter().zip(conns.iter_mut()).skip(1) {
            redis::cmd("CLUSTER")
                .arg("MEET")
                .arg(HOST)
                .arg(first.port)
                .arg(bus)
                .query_async::<()>(conn)
                .await
                .map_err(|e| transient(node, format!("CLUSTER MEET: {e}")))?;
        }
        for (node, conn) in group.nodes.iter().zip(conns.iter_mut()) {
            if node.role == Role::Primary && myself(conn, node).await?.slots == 0 {
                let (a, b) = shard_slots(node.shard, group.num_node_groups);
                redis::cmd("CLUSTER")
                    .arg("ADDSLOTSRANGE")
                    .arg(a)
                    .arg(b)
                    .query_async::<()>(conn)
                    .await
                    .map_err(|e| transient(node, format!("CLUSTER ADDSLOTSRANGE {a} {b}: {e}")))?;
            }
        }
        self.await_all_known(&group, &mut conns).await?;
        let mut primary_ids = Vec::new();
        for (node, conn) in group.nodes.iter().zip(conns.iter_mut()) {
            if node.role == Role::Primary {
                primary_ids.push((node.shard, myself(conn, node).await?.id));
            }
        }
        for (node, conn) in group.nodes.iter().zip(conns.iter_mut()) {
            if node.role != Role::Replica {
                continue;
            }
            let Some((_, primary)) = primary_ids.iter().find(|(s, _)| *s == node.shard) else {
                return Err(CloudError::other(format!(
                    "sandbox: shard {} of `{id}` has no primary",
                    node.shard
                )));
            };
            let me = myself(conn, node).await?;
            if !(me.flags.contains("slave") && me.master == *primary) {
                redis::cmd("CLUSTER")
                    .arg("REPLICATE")
                    .arg(primary)
                    .query_async::<()>(conn)
                    .await
                    .map_err(|e| transient(node, format!("CLUSTER REPLICATE: {e}")))?;
            }
        }
        self.await_state_ok(&group, &mut conns, note).await
    }

    /// Wait until every node lists every other one in `CLUSTER NODES` (a replica can only follow a
    /// primary it knows).
    async fn await_all_known(
        &self,
        group: &GroupRec,
        conns: &mut [MultiplexedConnection],
    ) -> CloudResult<()> {
        let deadline = Instant::now() + FORM_LIMIT;
        loop {
            let mut missing = None;
            for (node, conn) in group.nodes.iter().zip(conns.iter_mut()) {
                let known = cluster_nodes(conn, node).await?.lines().count();
                if known < group.nodes.len() {
                    missing = Some(format!(
                        "{} knows {known} of {}",
                        node.id,
                        group.nodes.len()
                    ));
                    break;
                }
            }
            let Some(missing) = missing else {
                return Ok(());
            };
            if Instant::now() > deadline {
                return Err(CloudError::other(format!(
                    "sandbox: the nodes of `{}` did not meet within {FORM_LIMIT:?} ({missing})",
                    group.id
                )));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Wait until every node reports `cluster_state:ok` with its node table settled, with a progress line
    /// on each change.
    async fn await_state_ok(
        &self,
        group: &GroupRec,
        conns: &mut [MultiplexedConnection],
        note: Note<'_>,
    ) -> CloudResult<()> {
        let started = Instant::now();
        let mut last = usize::MAX;
        loop {
            let mut ok = 0;
            for (node, conn) in group.nodes.iter().zip(conns.iter_mut()) {
                ok += usize::from(settled(conn, node, group.nodes.len()).await);
            }
            if ok != last {
                note(&format!(
                    "cluster `{}`: cluster_state ok on {ok}/{} node(s) ({:.1}s)",
                    group.id,
                    group.nodes.len(),
                    started.elapsed().as_secs_f64()
                ));
                last = ok;
            }
            if ok == group.nodes.len() {
                return Ok(());
            }
            if started.elapsed() > FORM_LIMIT {
                return Err(CloudError::other(format!(
                    "sandbox: cluster `{}` did not reach cluster_state:ok on every node within {FORM_LIMIT:?} ({ok}/{} ok)",
                    group.id,
                    group.nodes.len()
                )));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Every node of a cluster group reports `cluster_state:ok`.
    pub(super) async fn cluster_ready(&self, group: &GroupRec) -> bool {
        for node in &group.nodes {
            let Ok(mut conn) = self.connect_node(group, node).await else {
                return false;
            };
            if !state_ok(&mut conn).await {
                return false;
            }
        }
        true
    }

    /// Seed `keys` keys (the seeder's names and values) onto cluster group `group`, each written to the
    /// primary that owns its slot, in batches of the seeder's size.
    pub(super) async fn seed_cluster(
        &self,
        group: &GroupRec,
        keys: u64,
        progress: &(dyn Fn(u64, u64) + Send + Sync),
    ) -> CloudResult<()> {
        use crate::data::seed;
        let shards = group.num_node_groups;
        let owners = primaries(group);
        let mut conns = Vec::new();
        for n in &owners {
            conns.push(self.connect_node(group, n).await?);
        }
        progress(0, keys);
        let mut done = 0;
        while done < keys {
            let end = (done + seed::BATCH).min(keys);
            let mut pipes: Vec<(redis::Pipeline, usize)> =
                (0..shards).map(|_| (redis::pipe(), 0)).collect();
            for i in done..end {
                let shard = shard_of_slot(key_slot(seed::key_name(i).as_bytes()), shards);
                let (pipe, count) = &mut pipes[shard as usize];
                seed::add_key(pipe, i);
                *count += 1;
            }
            for (((pipe, count), conn), node) in pipes.iter().zip(conns.iter_mut()).zip(&owners) {
                if *count > 0 {
                    pipe.query_async::<()>(conn).await.map_err(|e| {
                        CloudError::other(format!("sandbox: seeding {} failed: {e}", node.id))
                    })?;
                }
            }
            done = end;
            progress(done, keys);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_cover_every_slot_once() {
        for shards in 1..=MAX_SHARDS {
            let mut next = 0;
            for s in 0..shards {
                let (a, b) = shard_slots(s, shards);
                assert_eq!(a, next, "{shards} shards");
                assert!(b >= a);
                assert_eq!(shard_of_slot(a, shards), s);
                assert_eq!(shard_of_slot(b, shards), s);
                next = b + 1;
            }
            assert_eq!(next, SLOTS);
        }
        assert_eq!(slots_text(0, 3), "0-5460");
        assert_eq!(slots_text(1, 3), "5461-10922");
        assert_eq!(slots_text(2, 3), "10923-16383");
    }
}
