//! One node's lifecycle and health: its folder, certificate and `redis.conf`, starting its redis-server
//! (another port on a clash) and recording it in the registry; then reaching it (endpoint, connection) and
//! the data-plane checks the control plane makes on running nodes (PING, replication link and offsets).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use super::process::{self, HOST, NodeConfig, RDB, StartError, TlsFiles};
use super::registry::{self, GroupRec, NodeRec, Role};
use super::{STOP_GRACE, Sandbox, blocking, cluster, io, set_mode, tls};
use crate::cloud::{CloudError, CloudResult};
use crate::data::connect::{RedisEndpoint, connect};
use crate::secret::Secret;

/// The ports of one start attempt.
struct Ports {
    /// The client port (the TLS port on an encrypted group).
    port: u16,
    plain_port: Option<u16>,
    /// The cluster bus port of a cluster node.
    bus_port: Option<u16>,
}

/// What every start attempt of one node shares (see `Sandbox::prepare_node`).
struct NodeSetup<'a> {
    group: &'a GroupRec,
    /// 0 is the primary; on a cluster, nodes go shard by shard (see `cluster::place`).
    index: u32,
    /// The node group, 0-based.
    shard: u32,
    primary: bool,
    /// `<group>-001`, ... (`<group>-0001-001`, ... on a cluster).
    id: String,
    /// `nodes/<group>/<index>/`.
    dir: PathBuf,
    /// `tls.crt` and `tls.key` on an encrypted group.
    cert: Option<(PathBuf, PathBuf)>,
    /// The primary's port, on a replica of a cluster-mode-disabled group (a cluster replica is attached
    /// with CLUSTER REPLICATE once the nodes met).
    replica_of: Option<u16>,
    token: Option<&'a Secret>,
}

impl Sandbox {
    /// How to reach a node of `group` (TLS with the sandbox CA and the AUTH token on an encrypted group).
    pub(super) fn endpoint(&self, group: &GroupRec, node: &NodeRec) -> RedisEndpoint {
        let mut e = RedisEndpoint::plain(HOST, node.port);
        if node.tls {
            e.tls = true;
            e.ca_file = Some(self.ca_file());
        }
        if group.auth_token_enabled || group.user_group_id.is_some() {
            e.password = process::read_password(&node.dir);
        }
        if group.user_group_id.is_some() {
            e.username = Some(super::rbac::SANDBOX_ADMIN_USER.to_string());
        }
        e
    }

    pub(super) async fn connect_node(
        &self,
        group: &GroupRec,
        node: &NodeRec,
    ) -> CloudResult<redis::aio::MultiplexedConnection> {
        connect(&self.endpoint(group, node))
            .await
            .map_err(|e| CloudError::Transient { message: e.into() })
    }

    /// Write the node's files, start it (new port on a clash) and record it. No process of an attempt
    /// survives it unrecorded: each attempt first stops any redis-server standing in the node's folder (one
    /// whose starter was killed before recording it, or a restart's predecessor), and a failed attempt
    /// stops its own process (a start that timed out may still come up later).
    pub(super) async fn start_node(
        &self,
        group: &GroupRec,
        index: u32,
        existing: Option<&NodeRec>,
        token: Option<&Secret>,
    ) -> CloudResult<()> {
        let setup = self.prepare_node(group, index, token)?;
        let mut last = String::new();
        for attempt in 0..8 {
            self.stop_strays(&setup).await?;
            // A restarted node keeps its port when it can: clients and replicas know it.
            let port = match existing {
                Some(n) if attempt == 0 => n.port,
                _ => process::free_port()?,
            };
            let plain_port = if group.transit_encryption_mode.as_deref() == Some("preferred") {
                Some(process::free_port()?)
            } else {
                None
            };
            // Chosen on its own: the classic port + 10000 may not exist (above 65535) or be taken.
            let bus_port = match (group.cluster_enabled, existing) {
                (false, _) => None,
                (true, Some(n)) if attempt == 0 && n.bus_port.is_some() => n.bus_port,
                (true, _) => Some(process::free_port()?),
            };
            let ports = Ports {
                port,
                plain_port,
                bus_port,
            };
            let failure = match self.try_start(&setup, &ports).await? {
                Ok(pid) => return self.record_node(&setup, &ports, pid),
                Err(failure) => failure,
            };
            self.stop_strays(&setup).await?;
            match failure {
                StartError::PortClash => last = format!("port {port} was taken"),
                StartError::Failed(e) => {
                    return Err(CloudError::other(format!(
                        "sandbox: node {}: {e}",
                        setup.id
                    )));
                }
            }
        }
        Err(CloudError::other(format!(
            "sandbox: node {} could not get a port ({last})",
            setup.id
        )))
    }

    /// Stop every redis-server standing in the node's folder.
    async fn stop_strays(&self, setup: &NodeSetup<'_>) -> CloudResult<()> {
        let dir = setup.dir.clone();
        blocking(move || process::stop_under(&dir, &[], STOP_GRACE)).await?;
        Ok(())
    }

    /// Everything a node needs before its first start attempt: its folder (0700), its certificate on an
    /// encrypted group, its primary's port on a replica, and a restored primary's RDB.
    fn prepare_node<'a>(
        &self,
        group: &'a GroupRec,
        index: u32,
        token: Option<&'a Secret>,
    ) -> CloudResult<NodeSetup<'a>> {
        let dir = self.group_dir(&group.id).join(index.to_string());
        std::fs::create_dir_all(&dir).map_err(|e| io("create", &dir, e))?;
        set_mode(&dir, 0o700)?;
        let id = cluster::node_id(group, index);
        let (shard, primary) = cluster::place(group, index);
        let cert = if group.transit_encryption_enabled {
            Some(tls::write_node_cert(&self.dir, &dir, &id)?)
        } else {
            None
        };
        let replica_of = if primary || group.cluster_enabled {
            None
        } else {
            Some(
                group
                    .nodes
                    .first()
                    .map(|p| p.port)
                    .ok_or_else(|| CloudError::other("sandbox: no primary yet"))?,
            )
        };
        // A restored primary loads its data from the snapshot, decrypted next to it for the load only (a
        // group restored by copy gets its data once its nodes run instead, see `restore`).
        if index == 0
            && !group.restore_by_copy
            && let Some(snap) = &group.source_snapshot
        {
            let rdb = self.open_snapshot(snap)?;
            registry::write_atomic(&dir.join(RDB), &rdb, 0o600)?;
        }
        Ok(NodeSetup {
            group,
            index,
            shard,
            primary,
            id,
            dir,
            cert,
            replica_of,
            token,
        })
    }

    /// One start attempt: `redis.conf` for these ports, then `redis-server` (blocking, off the runtime).
    async fn try_start(
        &self,
        setup: &NodeSetup<'_>,
        ports: &Ports,
    ) -> CloudResult<Result<i32, StartError>> {
        let cfg = NodeConfig {
            port: ports.port,
            plain_port: ports.plain_port,
            tls: setup.cert.as_ref().map(|(cert, key)| TlsFiles {
                cert: cert.clone(),
                key: key.clone(),
                ca: self.ca_file(),
            }),
            password: setup.token,
            acl_users: match &setup.group.user_group_id {
                Some(id) => super::rbac::acl_lines(&registry::load(&self.dir)?, id)?,
                None => Vec::new(),
            },
            replica_of: setup.replica_of,
            cluster_bus_port: ports.bus_port,
        };
        process::write_conf(&setup.dir, &cfg)?;
        let dir = setup.dir.clone();
        blocking(move || process::start(&dir)).await
    }

    /// Put a started node into its slot of the group's record (a restarted node replaces its old entry).
    fn record_node(&self, setup: &NodeSetup<'_>, ports: &Ports, pid: i32) -> CloudResult<()> {
        let rec = NodeRec {
            id: setup.id.clone(),
            role: if setup.primary {
                Role::Primary
            } else {
                Role::Replica
            },
            port: ports.port,
            plain_port: ports.plain_port,
            tls: setup.group.transit_encryption_enabled,
            dir: setup.dir.clone(),
            pid: Some(pid),
            shard: setup.shard,
            bus_port: ports.bus_port,
        };
        let gid = &setup.group.id;
        registry::update(&self.dir, |reg| {
            let g = reg
                .groups
                .get_mut(gid)
                .ok_or_else(|| CloudError::NotFound {
                    what: "replication group",
                    id: gid.clone(),
                })?;
            match g.nodes.get_mut(setup.index as usize) {
                Some(slot) => *slot = rec,
                None => g.nodes.push(rec),
            }
            Ok(())
        })
    }

    /// Wait until `node` answers PING; fails at once when its process is gone (it exited while loading).
    pub(super) async fn wait_ping(
        &self,
        group: &GroupRec,
        node: &NodeRec,
        limit: Duration,
    ) -> CloudResult<()> {
        let deadline = Instant::now() + limit;
        loop {
            match self.ping(group, node).await {
                Ok(()) => return Ok(()),
                Err(_) if process::node_pid(&node.dir, node.pid).is_none() => {
                    return Err(CloudError::other(format!(
                        "sandbox: node {} exited before it answered (see {})",
                        node.id,
                        node.dir.join(process::LOGFILE).display()
                    )));
                }
                Err(e) if Instant::now() > deadline => return Err(e),
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    }

    async fn ping(&self, group: &GroupRec, node: &NodeRec) -> CloudResult<()> {
        let mut conn = self.connect_node(group, node).await?;
        redis::cmd("PING")
            .query_async::<String>(&mut conn)
            .await
            .map(|_| ())
            .map_err(|e| CloudError::Transient {
                message: format!("{}: {e}", node.id),
            })
    }

    async fn info_replication(&self, group: &GroupRec, node: &NodeRec) -> CloudResult<String> {
        let mut conn = self.connect_node(group, node).await?;
        redis::cmd("INFO")
            .arg("replication")
            .query_async::<String>(&mut conn)
            .await
            .map_err(|e| CloudError::Transient {
                message: format!("{}: {e}", node.id),
            })
    }

    /// Every node answers PING and every replica's link to the primary is up.
    /// On a cluster, also every node reports `cluster_state:ok`, and a restore by copy is done.
    pub(super) async fn ready(&self, group: &GroupRec) -> bool {
        if group.nodes.len() != cluster::node_count(group) as usize || group.restore_pending {
            return false;
        }
        if group.cluster_enabled && !self.cluster_ready(group).await {
            return false;
        }
        for node in &group.nodes {
            if process::node_pid(&node.dir, node.pid).is_none()
                || self.ping(group, node).await.is_err()
            {
                return false;
            }
            if node.role == Role::Replica {
                match self.info_replication(group, node).await {
                    Ok(info) if info.lines().any(|l| l.trim() == "master_link_status:up") => {}
                    _ => return false,
                }
            }
        }
        !(group.source_snapshot.is_some() && group.nodes[0].dir.join(RDB).exists())
    }

    pub(super) async fn wait_replicas_caught_up(
        &self,
        group: &GroupRec,
        limit: Duration,
    ) -> CloudResult<()> {
        let offset = |info: &str| {
            info.lines()
                .find_map(|l| l.trim().strip_prefix("master_repl_offset:"))
                .and_then(|v| v.parse::<i64>().ok())
                .unwrap_or(-1)
        };
        let deadline = Instant::now() + limit;
        let mut targets = Vec::new();
        for primary in cluster::primaries(group) {
            let info = self.info_replication(group, primary).await?;
            targets.push((primary.shard, offset(&info)));
        }
        for node in group.nodes.iter().filter(|n| n.role == Role::Replica) {
            let target = targets
                .iter()
                .find(|(shard, _)| *shard == node.shard)
                .map_or(i64::MAX, |(_, o)| *o);
            loop {
                let info = self.info_replication(group, node).await.unwrap_or_default();
                if info.lines().any(|l| l.trim() == "master_link_status:up")
                    && offset(&info) >= target
                {
                    break;
                }
                if Instant::now() > deadline {
                    return Err(CloudError::other(format!(
                        "sandbox: replica {} did not catch up",
                        node.id
                    )));
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        Ok(())
    }
}
