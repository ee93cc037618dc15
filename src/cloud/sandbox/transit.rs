//! In-transit encryption switched on in place, as ModifyReplicationGroup does it on ElastiCache, on the
//! running nodes and without a restart (a restart would lose the data: sandbox nodes keep no RDB).
//!
//! - `preferred`: every node keeps its plain-text port (`plain_port` in the registry and in `sandbox
//!   status`) and gains a TLS port (`tls-port`, the sandbox CA's certificate), both served together; the
//!   node's client `port` is the TLS one from now on. Replicas follow their primary over TLS.
//! - `required`: the plain-text listener is closed (`port 0`) and the connections made through it are
//!   closed (`CLIENT KILL LADDR`), as ElastiCache drops the unencrypted connections.
//!
//! Both are `CONFIG SET` on redis-server 7 (`port` and `tls-port` can change at runtime); `redis.conf`
//! is written again so a node started later comes up the same way. A cluster-mode-enabled group would
//! also need TLS on its cluster bus, which redis-server cannot switch at runtime: it is refused.

use redis::aio::MultiplexedConnection;

use super::process::{self, HOST, NodeConfig, TlsFiles};
use super::registry::{self, GroupRec, Role};
use super::{Sandbox, tls};
use crate::cloud::{CloudError, CloudResult};
use crate::data::connect::{RedisEndpoint, connect};

fn refused(message: String) -> CloudError {
    CloudError::invalid(message)
}

async fn config_set(
    con: &mut MultiplexedConnection,
    node: &str,
    pairs: &[(&str, String)],
) -> CloudResult<()> {
    let mut cmd = redis::cmd("CONFIG");
    cmd.arg("SET");
    for (k, v) in pairs {
        cmd.arg(*k).arg(v);
    }
    cmd.query_async::<()>(con)
        .await
        .map_err(|e| CloudError::other(format!("sandbox: node {node}: CONFIG SET failed: {e}")))
}

impl Sandbox {
    /// ModifyReplicationGroup `TransitEncryptionEnabled=true`, `TransitEncryptionMode=mode`, applied at
    /// once. The rules AWS applies: `preferred` first, `required` only after it.
    pub(super) async fn modify_transit_mode(&self, id: &str, mode: &str) -> CloudResult<()> {
        let _work = self.group_lock(id, true)?;
        let g = self.group_rec(id)?;
        let status = self.live_status(id).await?;
        if status != "available" {
            return Err(refused(format!(
                "InvalidReplicationGroupState: replication group `{id}` is `{status}`, not `available`"
            )));
        }
        if g.cluster_enabled {
            return Err(refused(format!(
                "sandbox: in-place transit encryption of the cluster-mode-enabled group `{id}` is not modelled (its cluster bus cannot switch to TLS at runtime)"
            )));
        }
        let current = g.transit_encryption_mode.as_deref();
        match (g.transit_encryption_enabled, current, mode) {
            (false, _, "preferred") => self.open_tls(g).await,
            (false, _, "required") => Err(refused(format!(
                "InvalidParameterCombination: `{id}` has no in-transit encryption; set TransitEncryptionMode to `preferred` first, then `required`"
            ))),
            (true, Some("preferred"), "required") => self.close_plain(g).await,
            (true, now, "preferred" | "required") => Err(refused(format!(
                "InvalidParameterCombination: `{id}` is already in transit encryption mode `{}`; no modification requested",
                now.unwrap_or("required")
            ))),
            (_, _, other) => Err(refused(format!(
                "TransitEncryptionMode must be `preferred` or `required` (got `{other}`)"
            ))),
        }
    }

    /// `preferred`: a TLS port beside the plain one on every node, then the replicas re-attached over TLS.
    async fn open_tls(&self, mut g: GroupRec) -> CloudResult<()> {
        let ca = self.ca_file();
        for node in g.nodes.iter_mut() {
            let (cert, key) = tls::write_node_cert(&self.dir, &node.dir, &node.id)?;
            let mut con = connect(&RedisEndpoint::plain(HOST, node.port))
                .await
                .map_err(|e| CloudError::Transient { message: e.into() })?;
            let files = [
                ("tls-cert-file", cert.to_string_lossy().into_owned()),
                ("tls-key-file", key.to_string_lossy().into_owned()),
                ("tls-ca-cert-file", ca.to_string_lossy().into_owned()),
                ("tls-auth-clients", "no".into()),
                ("tls-replication", "yes".into()),
            ];
            config_set(&mut con, &node.id, &files).await?;
            let mut last = None;
            for _ in 0..8 {
                let tls_port = process::free_port()?;
                match config_set(&mut con, &node.id, &[("tls-port", tls_port.to_string())]).await {
                    Ok(()) => {
                        last = None;
                        node.plain_port = Some(node.port);
                        node.port = tls_port;
                        node.tls = true;
                        break;
                    }
                    // Taken meanwhile by another process: another free port.
                    Err(e) => last = Some(e),
                }
            }
            if let Some(e) = last {
                return Err(e);
            }
        }
        let primary_tls = g.nodes[0].port;
        for node in g.nodes.iter().filter(|n| n.role == Role::Replica) {
            let mut con = connect(&RedisEndpoint::plain(
                HOST,
                node.plain_port.unwrap_or(node.port),
            ))
            .await
            .map_err(|e| CloudError::Transient { message: e.into() })?;
            redis::cmd("REPLICAOF")
                .arg(HOST)
                .arg(primary_tls)
                .query_async::<()>(&mut con)
                .await
                .map_err(|e| {
                    CloudError::other(format!("sandbox: node {}: REPLICAOF: {e}", node.id))
                })?;
        }
        g.transit_encryption_enabled = true;
        g.transit_encryption_mode = Some("preferred".into());
        self.save_transit(&g)?;
        self.wait_replicas_caught_up(&g, std::time::Duration::from_secs(20))
            .await
    }

    /// `required`: the plain listener closed on every node and the connections made through it dropped.
    async fn close_plain(&self, mut g: GroupRec) -> CloudResult<()> {
        for i in 0..g.nodes.len() {
            let node = g.nodes[i].clone();
            let mut con = self.connect_node(&g, &node).await?;
            config_set(&mut con, &node.id, &[("port", "0".into())]).await?;
            if let Some(plain) = node.plain_port {
                redis::cmd("CLIENT")
                    .arg("KILL")
                    .arg("LADDR")
                    .arg(format!("{HOST}:{plain}"))
                    .query_async::<i64>(&mut con)
                    .await
                    .map_err(|e| {
                        CloudError::other(format!("sandbox: node {}: CLIENT KILL: {e}", node.id))
                    })?;
            }
            g.nodes[i].plain_port = None;
        }
        g.transit_encryption_mode = Some("required".into());
        self.save_transit(&g)
    }

    /// The group's new transit state in the registry, and every node's `redis.conf` to match.
    fn save_transit(&self, g: &GroupRec) -> CloudResult<()> {
        let primary_port = g.nodes[0].port;
        for node in &g.nodes {
            let password = process::read_password(&node.dir);
            let cfg = NodeConfig {
                port: node.port,
                plain_port: node.plain_port,
                tls: Some(TlsFiles {
                    cert: node.dir.join("tls.crt"),
                    key: node.dir.join("tls.key"),
                    ca: self.ca_file(),
                }),
                password: password.as_ref(),
                acl_users: Vec::new(),
                replica_of: (node.role == Role::Replica).then_some(primary_port),
                cluster_bus_port: None,
            };
            process::write_conf(&node.dir, &cfg)?;
        }
        registry::update(&self.dir, |reg| {
            let rec = reg
                .groups
                .get_mut(&g.id)
                .ok_or_else(|| CloudError::NotFound {
                    what: "replication group",
                    id: g.id.clone(),
                })?;
            rec.transit_encryption_enabled = g.transit_encryption_enabled;
            rec.transit_encryption_mode = g.transit_encryption_mode.clone();
            rec.nodes = g.nodes.clone();
            Ok(())
        })
    }
}
