//! The embedded stand-in for ElastiCache + KMS: real `redis-server` processes on 127.0.0.1, state in a
//! folder (default `.ecmigrate/sandbox/`).
//!
//! Layout of the folder:
//! - `registry.json` (0600): groups, snapshots, aliases, KMS keys (with their key material); `.lock` guards
//!   every read-modify-write of it.
//! - `ca/ca.pem`, `ca/ca.key` (0600): the sandbox CA.
//! - `nodes/<group>/<n>/`: one folder per node: `redis.conf` (0600; the only place an AUTH token is kept),
//!   `redis.pid`, `redis.log`, `tls.crt`/`tls.key` on encrypted groups.
//! - `snapshots/<name>.sealed` (AES-256-GCM, data key wrapped by a sandbox KMS key) or `<name>.rdb` (plain,
//!   only for a snapshot of an unencrypted group taken without a key).
//! - `locks/<group>.lock`: held by whoever is creating a group's nodes (the creating call, or a describe that
//!   finishes the work of a creating call that was killed).
//!
//! Group status as describe reports it:
//! - `creating`: registered; nodes starting or not yet ready (PING over TLS+AUTH where needed, replicas
//!   `master_link_status:up`, at least `ECMIGRATE_SANDBOX_CREATE_DELAY_MS` since creation). Describe
//!   restarts a node of a creating group whose process is gone, like a control plane finishing its work.
//! - `available`: stored once every node was ready; reported while all its processes run.
//! - `stopped`: an available group none of whose processes run (killed, machine rebooted); `degraded`: some
//!   of them run. Nothing restarts such a group (its data lived only in memory): delete it, or `sandbox down`.
//! - `create-failed`: a creation that could not finish (e.g. the snapshot's key was disabled before a node
//!   could be started); its processes are stopped; delete it.
//!
//! `down` stops every process and removes every group (and its node folders) from the registry; snapshots,
//! aliases, KMS keys and the CA stay.

mod kms;
mod process;
mod registry;
mod tls;

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use chrono::Utc;
use serde::Serialize;

use self::process::{HOST, NodeConfig, RDB, StartError, TlsFiles};
use self::registry::{GroupRec, NodeRec, Registry, Role, SnapshotRec};
use crate::cloud::{
    CloudError, CloudRead, CloudResult, CloudWrite, CreateEncryptedGroup, Endpoint, KmsKey, Node,
    NodeRole, ReplicationGroup, Snapshot,
};
use crate::data::connect::{RedisEndpoint, connect};
use crate::secret::Secret;

pub use self::kms::DEFAULT_KEY_ALIAS;

/// Env var: minimum time (ms) a restored group stays `creating` after its creation.
pub const CREATE_DELAY_ENV: &str = "ECMIGRATE_SANDBOX_CREATE_DELAY_MS";

const MAX_REPLICAS: u32 = 5;
const STOP_GRACE: Duration = Duration::from_secs(5);

/// The sandbox cloud, rooted at one folder.
#[derive(Debug, Clone)]
pub struct Sandbox {
    dir: PathBuf,
    /// Overrides `ECMIGRATE_SANDBOX_CREATE_DELAY_MS` for this handle.
    create_delay: Option<Duration>,
}

/// `sandbox status --output json`.
#[derive(Debug, Clone, Serialize)]
pub struct SandboxStatus {
    pub ca_file: String,
    pub groups: Vec<SandboxGroup>,
    pub snapshots: Vec<SandboxSnapshot>,
    /// Alias name -> group id.
    pub aliases: BTreeMap<String, String>,
    pub kms_keys: Vec<KmsKey>,
}

#[derive(Debug, Clone, Serialize)]
pub struct SandboxGroup {
    pub replication_group_id: String,
    pub status: String,
    pub at_rest_encryption_enabled: bool,
    pub transit_encryption_enabled: bool,
    pub transit_encryption_mode: Option<String>,
    pub auth_token_enabled: bool,
    pub kms_key_id: Option<String>,
    pub engine_version: String,
    pub nodes: Vec<SandboxNode>,
}

#[derive(Debug, Clone, Serialize)]
pub struct SandboxNode {
    pub id: String,
    pub role: NodeRole,
    pub host: String,
    pub port: u16,
    pub tls: bool,
    pub pid: Option<i32>,
    pub running: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct SandboxSnapshot {
    pub name: String,
    pub source_group: String,
    pub status: String,
    pub encrypted: bool,
    pub kms_key_id: Option<String>,
    pub path: String,
}

fn io(what: &str, path: &Path, e: std::io::Error) -> CloudError {
    CloudError::other(format!("sandbox: cannot {what} {}: {e}", path.display()))
}

fn role(r: Role) -> NodeRole {
    match r {
        Role::Primary => NodeRole::Primary,
        Role::Replica => NodeRole::Replica,
    }
}

fn check_id(id: &str) -> CloudResult<()> {
    crate::plan::rules::check_group_id(id).map_err(|e| CloudError::invalid(format!("`{id}`: {e}")))
}

/// Names of snapshots and aliases end up in file names: keep them simple.
fn check_name(what: &str, name: &str) -> CloudResult<()> {
    let ok = !name.is_empty()
        && name.len() <= 255
        && name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
    if ok {
        Ok(())
    } else {
        Err(CloudError::invalid(format!(
            "`{name}` is not a valid {what} name (letters, digits, `-`, `_`, `.`; starting with a letter or digit)"
        )))
    }
}

fn create_delay() -> Duration {
    std::env::var(CREATE_DELAY_ENV)
        .ok()
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_millis)
        .unwrap_or(Duration::ZERO)
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> CloudResult<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| CloudError::other(format!("sandbox: background task failed: {e}")))
}

impl Sandbox {
    /// Open (and create if missing) a sandbox folder. Starts no process. Creates the sandbox CA.
    pub fn open(dir: &Path) -> CloudResult<Sandbox> {
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        std::fs::create_dir_all(dir).map_err(|e| io("create", dir, e))?;
        let dir = std::path::absolute(dir).map_err(|e| io("resolve", dir, e))?;
        let sandbox = Sandbox {
            dir,
            create_delay: None,
        };
        let _lock = registry::lock(&sandbox.dir)?;
        tls::ensure_ca(&sandbox.dir)?;
        Ok(sandbox)
    }

    /// Keep restored groups `creating` at least `delay` after creation (instead of the env var's value).
    pub fn with_create_delay(mut self, delay: Duration) -> Self {
        self.create_delay = Some(delay);
        self
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// PEM of the sandbox CA (created by `open`).
    /// The Secrets Manager stand-in: one 0600 file per secret, named by the hex of its id.
    fn secret_store(&self, id: &str) -> crate::secret::TokenStore {
        let name: String = id.bytes().map(|b| format!("{b:02x}")).collect();
        crate::secret::TokenStore::File(self.dir.join("secrets-manager").join(name))
    }

    pub fn ca_file(&self) -> PathBuf {
        tls::ca_cert_path(&self.dir)
    }

    fn group_dir(&self, id: &str) -> PathBuf {
        self.dir.join("nodes").join(id)
    }

    fn snapshot_path(&self, rec: &SnapshotRec) -> PathBuf {
        self.dir.join(&rec.file)
    }

    /// The per-group work lock (creating nodes). Blocking.
    fn group_lock(&self, id: &str, wait: bool) -> CloudResult<Option<File>> {
        let locks = self.dir.join("locks");
        std::fs::create_dir_all(&locks).map_err(|e| io("create", &locks, e))?;
        let path = locks.join(format!("{id}.lock"));
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| io("open", &path, e))?;
        if wait {
            file.lock().map_err(|e| io("lock", &path, e))?;
            return Ok(Some(file));
        }
        match file.try_lock() {
            Ok(()) => Ok(Some(file)),
            Err(std::fs::TryLockError::WouldBlock) => Ok(None),
            Err(std::fs::TryLockError::Error(e)) => Err(io("lock", &path, e)),
        }
    }

    /// How to reach a node of `group` (TLS with the sandbox CA and the AUTH token on an encrypted group).
    fn endpoint(&self, group: &GroupRec, node: &NodeRec) -> RedisEndpoint {
        let mut e = RedisEndpoint::plain(HOST, node.port);
        if node.tls {
            e.tls = true;
            e.ca_file = Some(self.ca_file());
        }
        if group.auth_token_enabled {
            e.password = process::read_password(&node.dir);
        }
        e
    }

    async fn connect_node(
        &self,
        group: &GroupRec,
        node: &NodeRec,
    ) -> CloudResult<redis::aio::MultiplexedConnection> {
        connect(&self.endpoint(group, node))
            .await
            .map_err(|e| CloudError::Transient { message: e.into() })
    }

    // ----- public API -----

    /// Create an unencrypted group `id` (1 primary + `replicas` replicas), point `<id>-endpoint` at it and
    /// seed `keys` keys. Returns once the replicas have caught up. An existing group with no running process
    /// (after a reboot) is replaced; a running one is refused.
    pub async fn up(
        &self,
        id: &str,
        replicas: u32,
        keys: u64,
        progress: &(dyn Fn(u64, u64) + Send + Sync),
    ) -> CloudResult<ReplicationGroup> {
        check_id(id)?;
        if replicas > MAX_REPLICAS {
            return Err(CloudError::invalid(format!(
                "at most {MAX_REPLICAS} replicas per group (asked {replicas})"
            )));
        }
        let _work = self.group_lock(id, true)?;
        let group_dir = self.group_dir(id);
        registry::update(&self.dir, |reg| {
            if let Some(old) = reg.groups.get(id) {
                if old
                    .nodes
                    .iter()
                    .any(|n| process::node_pid(&n.dir, n.pid).is_some())
                {
                    return Err(CloudError::AlreadyExists {
                        what: "replication group",
                        id: id.to_string(),
                    });
                }
                if old.at_rest_encryption_enabled {
                    return Err(CloudError::invalid(format!(
                        "`{id}` is a stopped encrypted group; delete it first (or run `ecmigrate sandbox down`)"
                    )));
                }
            }
            let _ = std::fs::remove_dir_all(&group_dir);
            reg.groups
                .insert(id.to_string(), self.new_group_rec(id, replicas));
            Ok(())
        })?;
        let result = async {
            self.finish_group(id, None).await?;
            let group = self.group_rec(id)?;
            let primary = &group.nodes[0];
            let mut conn = self.connect_node(&group, primary).await?;
            crate::data::seed::seed(&mut conn, keys, progress)
                .await
                .map_err(|e| CloudError::other(format!("sandbox: seeding `{id}` failed: {e}")))?;
            self.wait_replicas_caught_up(&group, Duration::from_secs(120))
                .await?;
            registry::update(&self.dir, |reg| {
                if let Some(g) = reg.groups.get_mut(id) {
                    g.status = "available".into();
                }
                reg.aliases.insert(format!("{id}-endpoint"), id.to_string());
                Ok(())
            })
        }
        .await;
        if let Err(e) = result {
            self.fail_group(id, &e.to_string()).await;
            return Err(e);
        }
        let group = self.group_rec(id)?;
        Ok(self.to_group(&group, "available".into()))
    }

    /// Everything the sandbox holds, with live group status.
    pub async fn status(&self) -> CloudResult<SandboxStatus> {
        let reg = registry::load(&self.dir)?;
        let mut groups = Vec::new();
        for id in reg.groups.keys() {
            let status = self.live_status(id).await?;
            let reg = registry::load(&self.dir)?;
            let Some(g) = reg.groups.get(id) else {
                continue;
            };
            groups.push(SandboxGroup {
                replication_group_id: g.id.clone(),
                status,
                at_rest_encryption_enabled: g.at_rest_encryption_enabled,
                transit_encryption_enabled: g.transit_encryption_enabled,
                transit_encryption_mode: g.transit_encryption_mode.clone(),
                auth_token_enabled: g.auth_token_enabled,
                kms_key_id: g.kms_key_id.clone(),
                engine_version: g.engine_version.clone(),
                nodes: g
                    .nodes
                    .iter()
                    .map(|n| {
                        let pid = process::node_pid(&n.dir, n.pid);
                        SandboxNode {
                            id: n.id.clone(),
                            role: role(n.role),
                            host: HOST.into(),
                            port: n.port,
                            tls: n.tls,
                            pid: pid.or(n.pid),
                            running: pid.is_some(),
                        }
                    })
                    .collect(),
            });
        }
        Ok(SandboxStatus {
            ca_file: self.ca_file().display().to_string(),
            groups,
            snapshots: reg
                .snapshots
                .values()
                .map(|s| SandboxSnapshot {
                    name: s.name.clone(),
                    source_group: s.source_group.clone(),
                    status: s.status.clone(),
                    encrypted: s.kms_key_id.is_some(),
                    kms_key_id: s
                        .kms_key_id
                        .as_ref()
                        .and_then(|k| reg.kms_keys.get(k))
                        .map(|k| k.arn.clone()),
                    path: self.snapshot_path(s).display().to_string(),
                })
                .collect(),
            aliases: reg.aliases.clone(),
            kms_keys: reg.kms_keys.values().map(kms::to_kms_key).collect(),
        })
    }

    /// Stop every redis-server of this sandbox (SIGTERM, SIGKILL after 5 s) and wait until they are gone;
    /// then remove every group and its node folders from the registry. Returns how many processes stopped.
    pub async fn down(&self) -> CloudResult<usize> {
        let me = self.clone();
        blocking(move || me.down_blocking()).await?
    }

    /// `down`, synchronously.
    pub fn down_blocking(&self) -> CloudResult<usize> {
        let stopped = self.stop_all_blocking();
        let nodes = self.dir.join("nodes");
        registry::update(&self.dir, |reg| {
            for id in std::mem::take(&mut reg.groups).into_keys() {
                let _ = std::fs::remove_dir_all(nodes.join(&id));
            }
            Ok(())
        })?;
        Ok(stopped)
    }

    /// Kill every redis-server this sandbox started (registry pids and pidfiles under `nodes/`), leaving the
    /// registry as it is. For Drop guards and `down`. Returns how many were running.
    pub fn stop_all_blocking(&self) -> usize {
        let mut pids = Vec::new();
        if let Ok(reg) = registry::load(&self.dir) {
            for n in reg.groups.values().flat_map(|g| g.nodes.iter()) {
                pids.extend(process::node_pid(&n.dir, n.pid));
            }
        }
        // Nodes started by a run that was killed before it recorded them.
        if let Ok(groups) = std::fs::read_dir(self.dir.join("nodes")) {
            for g in groups.flatten() {
                if let Ok(nodes) = std::fs::read_dir(g.path()) {
                    for n in nodes.flatten() {
                        pids.extend(process::node_pid(&n.path(), None));
                    }
                }
            }
        }
        pids.sort_unstable();
        pids.dedup();
        process::stop_pids(&pids, STOP_GRACE)
    }

    /// Create a KMS key with alias `alias/<alias>`, Enabled.
    pub fn kms_create(&self, alias: &str) -> CloudResult<KmsKey> {
        registry::update(&self.dir, |reg| {
            kms::create(reg, alias).map(|k| kms::to_kms_key(&k))
        })
    }

    /// Enable or disable a key (`alias` may be a bare alias name, `alias/NAME`, an id or an ARN).
    pub fn kms_set_enabled(&self, alias: &str, enabled: bool) -> CloudResult<KmsKey> {
        registry::update(&self.dir, |reg| {
            let key_ref = if alias.starts_with("alias/")
                || alias.starts_with("arn:")
                || kms::find(reg, alias).is_some()
            {
                alias.to_string()
            } else {
                kms::alias_name(alias)
            };
            let id =
                kms::resolve_or_default(reg, &key_ref)?.ok_or_else(|| CloudError::NotFound {
                    what: "KMS key",
                    id: key_ref.clone(),
                })?;
            let key = reg.kms_keys.get_mut(&id).expect("resolved key");
            key.enabled = enabled;
            Ok(kms::to_kms_key(key))
        })
    }

    // ----- groups -----

    fn new_group_rec(&self, id: &str, replicas: u32) -> GroupRec {
        GroupRec {
            id: id.to_string(),
            description: format!("sandbox group {id}"),
            status: "creating".into(),
            engine: "redis".into(),
            engine_version: process::redis_version(),
            at_rest_encryption_enabled: false,
            transit_encryption_enabled: false,
            transit_encryption_mode: None,
            auth_token_enabled: false,
            kms_key_id: None,
            created_at: Utc::now(),
            source_snapshot: None,
            nodes: Vec::new(),
            replicas,
            cache_subnet_group_name: None,
            security_group_ids: Vec::new(),
            cache_parameter_group_name: None,
            preferred_maintenance_window: None,
            snapshot_window: None,
            tags: BTreeMap::new(),
            failure: None,
        }
    }

    fn group_rec(&self, id: &str) -> CloudResult<GroupRec> {
        registry::load(&self.dir)?
            .groups
            .remove(id)
            .ok_or_else(|| CloudError::NotFound {
                what: "replication group",
                id: id.to_string(),
            })
    }

    fn to_group(&self, g: &GroupRec, status: String) -> ReplicationGroup {
        let endpoint = |n: &NodeRec| Endpoint {
            host: HOST.into(),
            port: n.port,
        };
        let primary = g.nodes.iter().find(|n| n.role == Role::Primary);
        ReplicationGroup {
            id: g.id.clone(),
            status,
            engine: g.engine.clone(),
            engine_version: g.engine_version.clone(),
            at_rest_encryption_enabled: g.at_rest_encryption_enabled,
            transit_encryption_enabled: g.transit_encryption_enabled,
            transit_encryption_mode: g.transit_encryption_mode.clone(),
            auth_token_enabled: g.auth_token_enabled,
            kms_key_id: g.kms_key_id.clone(),
            cache_node_type: "cache.sandbox.micro".into(),
            cluster_enabled: false,
            num_node_groups: 1,
            nodes_per_node_group: 1 + g.replicas,
            primary_endpoint: primary.map(endpoint),
            reader_endpoint: g
                .nodes
                .iter()
                .find(|n| n.role == Role::Replica)
                .or(primary)
                .map(endpoint),
            nodes: g
                .nodes
                .iter()
                .map(|n| Node {
                    id: n.id.clone(),
                    role: role(n.role),
                    endpoint: endpoint(n),
                    tls: n.tls,
                })
                .collect(),
            cache_subnet_group_name: g.cache_subnet_group_name.clone(),
            security_group_ids: g.security_group_ids.clone(),
            cache_parameter_group_name: g.cache_parameter_group_name.clone(),
            port: primary.map(|n| n.port),
            preferred_maintenance_window: g.preferred_maintenance_window.clone(),
            snapshot_window: g.snapshot_window.clone(),
            tags: g.tags.clone(),
        }
    }

    /// Bring every node of a creating group up: start missing nodes, restart dead ones. The caller holds the
    /// group's work lock. `token`: the AUTH token when known (else read from an existing node's redis.conf).
    async fn finish_group(&self, id: &str, token: Option<&Secret>) -> CloudResult<()> {
        let group = self.group_rec(id)?;
        let token = match (group.auth_token_enabled, token) {
            (false, _) => None,
            (true, Some(t)) => Some(t.clone()),
            (true, None) => {
                let from_conf = std::fs::read_dir(self.group_dir(id))
                    .ok()
                    .into_iter()
                    .flatten()
                    .flatten()
                    .find_map(|e| process::read_password(&e.path()));
                Some(from_conf.ok_or_else(|| {
                    CloudError::invalid(format!(
                        "the AUTH token of `{id}` is lost (no node configuration holds it)"
                    ))
                })?)
            }
        };
        for index in 0..=group.replicas {
            let group = self.group_rec(id)?;
            let existing = group.nodes.get(index as usize).cloned();
            if let Some(n) = &existing
                && process::node_pid(&n.dir, n.pid).is_some()
            {
                continue;
            }
            self.start_node(&group, index, existing.as_ref(), token.as_ref())
                .await?;
        }
        // A restored primary that loaded its RDB while we were away: remove the plaintext file.
        if group.source_snapshot.is_some() {
            let group = self.group_rec(id)?;
            let primary = &group.nodes[0];
            if primary.dir.join(RDB).exists() {
                self.wait_ping(&group, primary, Duration::from_secs(300))
                    .await?;
                let _ = std::fs::remove_file(primary.dir.join(RDB));
            }
        }
        Ok(())
    }

    /// Write the node's files, start it (new port on a clash) and record it.
    async fn start_node(
        &self,
        group: &GroupRec,
        index: u32,
        existing: Option<&NodeRec>,
        token: Option<&Secret>,
    ) -> CloudResult<()> {
        let node_dir = self.group_dir(&group.id).join(index.to_string());
        std::fs::create_dir_all(&node_dir).map_err(|e| io("create", &node_dir, e))?;
        set_mode(&node_dir, 0o700)?;
        let node_id = format!("{}-{:03}", group.id, index + 1);
        let tls_files = if group.transit_encryption_enabled {
            let (cert, key) = tls::write_node_cert(&self.dir, &node_dir, &node_id)?;
            Some((cert, key))
        } else {
            None
        };
        let primary_port = if index == 0 {
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
        // A restored primary loads its data from the snapshot, decrypted next to it for the load only.
        if index == 0
            && let Some(snap) = &group.source_snapshot
        {
            let rdb = self.open_snapshot(snap)?;
            registry::write_atomic(&node_dir.join(RDB), &rdb, 0o600)?;
        }
        let mut last = String::new();
        for _attempt in 0..8 {
            let port = match existing {
                Some(n) if _attempt == 0 => n.port,
                _ => process::free_port()?,
            };
            let plain_port = if group.transit_encryption_mode.as_deref() == Some("preferred") {
                Some(process::free_port()?)
            } else {
                None
            };
            let cfg = NodeConfig {
                port,
                plain_port,
                tls: tls_files.as_ref().map(|(cert, key)| TlsFiles {
                    cert: cert.clone(),
                    key: key.clone(),
                    ca: self.ca_file(),
                }),
                password: token,
                replica_of: primary_port,
            };
            process::write_conf(&node_dir, &cfg)?;
            let dir = node_dir.clone();
            match blocking(move || process::start(&dir)).await? {
                Ok(pid) => {
                    let rec = NodeRec {
                        id: node_id.clone(),
                        role: if index == 0 {
                            Role::Primary
                        } else {
                            Role::Replica
                        },
                        port,
                        plain_port,
                        tls: group.transit_encryption_enabled,
                        dir: node_dir.clone(),
                        pid: Some(pid),
                    };
                    let gid = group.id.clone();
                    return registry::update(&self.dir, |reg| {
                        let g = reg
                            .groups
                            .get_mut(&gid)
                            .ok_or_else(|| CloudError::NotFound {
                                what: "replication group",
                                id: gid.clone(),
                            })?;
                        match g.nodes.get_mut(index as usize) {
                            Some(slot) => *slot = rec,
                            None => g.nodes.push(rec),
                        }
                        Ok(())
                    });
                }
                Err(StartError::PortClash) => last = format!("port {port} was taken"),
                Err(StartError::Failed(e)) => {
                    return Err(CloudError::other(format!("sandbox: node {node_id}: {e}")));
                }
            }
        }
        Err(CloudError::other(format!(
            "sandbox: node {node_id} could not get a port ({last})"
        )))
    }

    async fn wait_ping(
        &self,
        group: &GroupRec,
        node: &NodeRec,
        limit: Duration,
    ) -> CloudResult<()> {
        let deadline = Instant::now() + limit;
        loop {
            match self.ping(group, node).await {
                Ok(()) => return Ok(()),
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
    async fn ready(&self, group: &GroupRec) -> bool {
        if group.nodes.len() != 1 + group.replicas as usize {
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

    async fn wait_replicas_caught_up(&self, group: &GroupRec, limit: Duration) -> CloudResult<()> {
        let offset = |info: &str| {
            info.lines()
                .find_map(|l| l.trim().strip_prefix("master_repl_offset:"))
                .and_then(|v| v.parse::<i64>().ok())
                .unwrap_or(-1)
        };
        let deadline = Instant::now() + limit;
        let target = offset(&self.info_replication(group, &group.nodes[0]).await?);
        for node in group.nodes.iter().skip(1) {
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

    /// Status as describe reports it; progresses a creating group (see the module docs).
    async fn live_status(&self, id: &str) -> CloudResult<String> {
        let group = self.group_rec(id)?;
        match group.status.as_str() {
            "creating" => {}
            "available" => {
                let alive = group
                    .nodes
                    .iter()
                    .filter(|n| process::node_pid(&n.dir, n.pid).is_some())
                    .count();
                return Ok(match alive {
                    0 => "stopped",
                    a if a < group.nodes.len() => "degraded",
                    _ => "available",
                }
                .into());
            }
            other => return Ok(other.into()),
        }
        // Creating: finish the work unless someone else is doing it right now.
        let Some(_work) = self.group_lock(id, false)? else {
            return Ok("creating".into());
        };
        let group = self.group_rec(id)?;
        if group.status != "creating" {
            return Ok(group.status);
        }
        match self.finish_group(id, None).await {
            Ok(()) => {}
            Err(e @ CloudError::InvalidRequest { .. }) => {
                self.fail_group(id, &e.to_string()).await;
                return Ok("create-failed".into());
            }
            Err(_) => return Ok("creating".into()),
        }
        let group = self.group_rec(id)?;
        let old_enough = Utc::now()
            .signed_duration_since(group.created_at)
            .to_std()
            .unwrap_or_default()
            >= self.create_delay.unwrap_or_else(create_delay);
        if old_enough && self.ready(&group).await {
            registry::update(&self.dir, |reg| {
                if let Some(g) = reg.groups.get_mut(id)
                    && g.status == "creating"
                {
                    g.status = "available".into();
                }
                Ok(())
            })?;
            return Ok("available".into());
        }
        Ok("creating".into())
    }

    /// Mark a group create-failed and stop its processes.
    async fn fail_group(&self, id: &str, why: &str) {
        let Ok(group) = self.group_rec(id) else {
            return;
        };
        let pids: Vec<i32> = group
            .nodes
            .iter()
            .filter_map(|n| process::node_pid(&n.dir, n.pid))
            .collect();
        let _ = blocking(move || process::stop_pids(&pids, STOP_GRACE)).await;
        if let Some(primary) = group.nodes.first() {
            let _ = std::fs::remove_file(primary.dir.join(RDB));
        }
        let _ = std::fs::remove_file(self.group_dir(id).join("0").join(RDB));
        let why = why.to_string();
        let _ = registry::update(&self.dir, |reg| {
            if let Some(g) = reg.groups.get_mut(id) {
                g.status = "create-failed".into();
                g.failure = Some(why);
            }
            Ok(())
        });
    }

    // ----- snapshots -----

    /// The RDB bytes of a snapshot (unsealed with its key, which must be Enabled).
    fn open_snapshot(&self, name: &str) -> CloudResult<Vec<u8>> {
        let reg = registry::load(&self.dir)?;
        let snap = reg
            .snapshots
            .get(name)
            .ok_or_else(|| CloudError::NotFound {
                what: "snapshot",
                id: name.to_string(),
            })?;
        let path = self.snapshot_path(snap);
        let bytes = std::fs::read(&path).map_err(|e| io("read", &path, e))?;
        match &snap.kms_key_id {
            None => Ok(bytes),
            Some(key_id) => {
                let key = kms::usable(&reg, key_id, &format!("decrypt snapshot `{name}`"))?;
                kms::unseal(key, &bytes)
            }
        }
    }

    async fn take_snapshot(&self, group: &GroupRec, rec: &SnapshotRec) -> CloudResult<()> {
        let node = group
            .nodes
            .iter()
            .rev()
            .find(|n| process::node_pid(&n.dir, n.pid).is_some())
            .ok_or_else(|| {
                CloudError::invalid(format!("group `{}` has no running node", group.id))
            })?;
        let mut conn = self.connect_node(group, node).await?;
        let rdb_path = node.dir.join(RDB);
        let saved = redis::cmd("SAVE").query_async::<()>(&mut conn).await;
        let bytes = std::fs::read(&rdb_path);
        let _ = std::fs::remove_file(&rdb_path);
        saved
            .map_err(|e| CloudError::other(format!("sandbox: SAVE on {} failed: {e}", node.id)))?;
        let bytes = bytes.map_err(|e| io("read", &rdb_path, e))?;
        let out = match &rec.kms_key_id {
            None => bytes,
            Some(key_id) => {
                let reg = registry::load(&self.dir)?;
                let key = kms::usable(&reg, key_id, &format!("encrypt snapshot `{}`", rec.name))?;
                kms::seal(key, bytes)?
            }
        };
        let dest = self.snapshot_path(rec);
        std::fs::create_dir_all(dest.parent().expect("snapshots folder"))
            .map_err(|e| io("create", &dest, e))?;
        registry::write_atomic(&dest, &out, 0o600)
    }

    fn to_snapshot(reg: &Registry, s: &SnapshotRec) -> Snapshot {
        Snapshot {
            name: s.name.clone(),
            source_group: s.source_group.clone(),
            status: s.status.clone(),
            kms_key_id: s.kms_key_id.as_ref().map(|k| {
                reg.kms_keys
                    .get(k)
                    .map(|k| k.arn.clone())
                    .unwrap_or_else(|| k.clone())
            }),
            source: "manual".into(),
        }
    }
}

fn set_mode(path: &Path, mode: u32) -> CloudResult<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(|e| io("chmod", path, e))
}

#[async_trait]
impl CloudRead for Sandbox {
    fn provider(&self) -> &'static str {
        "sandbox"
    }

    async fn describe_group(&self, id: &str) -> CloudResult<Option<ReplicationGroup>> {
        if !registry::load(&self.dir)?.groups.contains_key(id) {
            return Ok(None);
        }
        let status = match self.live_status(id).await {
            Ok(s) => s,
            Err(CloudError::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(e),
        };
        match registry::load(&self.dir)?.groups.get(id) {
            Some(g) => Ok(Some(self.to_group(g, status))),
            None => Ok(None),
        }
    }

    async fn list_groups(&self) -> CloudResult<Vec<ReplicationGroup>> {
        let mut out = Vec::new();
        for id in registry::load(&self.dir)?.groups.keys() {
            out.extend(self.describe_group(id).await?);
        }
        Ok(out)
    }

    async fn describe_snapshot(&self, name: &str) -> CloudResult<Option<Snapshot>> {
        let reg = registry::load(&self.dir)?;
        Ok(reg.snapshots.get(name).map(|s| Self::to_snapshot(&reg, s)))
    }

    async fn list_snapshots(&self, group: Option<&str>) -> CloudResult<Vec<Snapshot>> {
        let reg = registry::load(&self.dir)?;
        Ok(reg
            .snapshots
            .values()
            .filter(|s| group.is_none_or(|g| s.source_group == g))
            .map(|s| Self::to_snapshot(&reg, s))
            .collect())
    }

    async fn describe_key(&self, key_id: &str) -> CloudResult<Option<KmsKey>> {
        let reg = registry::load(&self.dir)?;
        if let Some(k) = kms::find(&reg, key_id) {
            return Ok(Some(kms::to_kms_key(k)));
        }
        registry::update(&self.dir, |reg| {
            Ok(kms::resolve_or_default(reg, key_id)?
                .and_then(|id| reg.kms_keys.get(&id))
                .map(kms::to_kms_key))
        })
    }

    fn default_kms_key(&self) -> Option<String> {
        Some(DEFAULT_KEY_ALIAS.to_string())
    }

    async fn resolve_alias(&self, alias: &str) -> CloudResult<Option<String>> {
        Ok(registry::load(&self.dir)?.aliases.get(alias).cloned())
    }

    async fn list_keys(&self) -> CloudResult<Vec<KmsKey>> {
        let reg = registry::load(&self.dir)?;
        Ok(reg
            .kms_keys
            .values()
            .map(kms::to_kms_key)
            .filter(|k| k.aliases.iter().any(|a| !a.starts_with("alias/aws/")))
            .collect())
    }

    fn data_plane_ca(&self) -> Option<PathBuf> {
        Some(self.ca_file())
    }

    async fn get_secret(&self, id: &str) -> CloudResult<Option<Secret>> {
        self.secret_store(id).load().map_err(CloudError::other)
    }
}

#[async_trait]
impl CloudWrite for Sandbox {
    async fn create_snapshot(
        &self,
        group: &str,
        name: &str,
        kms_key_id: Option<&str>,
    ) -> CloudResult<()> {
        check_name("snapshot", name)?;
        let rec = registry::update(&self.dir, |reg| {
            if reg.snapshots.contains_key(name) {
                return Err(CloudError::AlreadyExists {
                    what: "snapshot",
                    id: name.to_string(),
                });
            }
            let g = reg.groups.get(group).ok_or_else(|| CloudError::NotFound {
                what: "replication group",
                id: group.to_string(),
            })?;
            let key_ref = kms_key_id
                .map(str::to_string)
                .or_else(|| g.kms_key_id.clone());
            let key = match key_ref {
                Some(k) => {
                    let id = kms::resolve_or_default(reg, &k)?.ok_or_else(|| {
                        CloudError::invalid(format!("KMS key `{k}` does not exist"))
                    })?;
                    Some(
                        kms::usable(reg, &id, &format!("encrypt snapshot `{name}`"))?
                            .id
                            .clone(),
                    )
                }
                None => None,
            };
            let ext = if key.is_some() { "sealed" } else { "rdb" };
            let rec = SnapshotRec {
                name: name.to_string(),
                source_group: group.to_string(),
                status: "creating".into(),
                kms_key_id: key,
                file: PathBuf::from("snapshots").join(format!("{name}.{ext}")),
                created_at: Utc::now(),
            };
            reg.snapshots.insert(name.to_string(), rec.clone());
            Ok(rec)
        })?;
        let group_rec = self.group_rec(group)?;
        match self.take_snapshot(&group_rec, &rec).await {
            Ok(()) => registry::update(&self.dir, |reg| {
                if let Some(s) = reg.snapshots.get_mut(name) {
                    s.status = "available".into();
                }
                Ok(())
            }),
            Err(e) => {
                let _ = std::fs::remove_file(self.snapshot_path(&rec));
                let _ = registry::update(&self.dir, |reg| {
                    reg.snapshots.remove(name);
                    Ok(())
                });
                Err(e)
            }
        }
    }

    async fn create_group_from_snapshot(&self, req: &CreateEncryptedGroup) -> CloudResult<()> {
        check_id(&req.id)?;
        if req.cluster_enabled || req.num_node_groups != 1 {
            return Err(CloudError::invalid(
                "the sandbox supports cluster-mode-disabled groups only (one node group)",
            ));
        }
        if req.replicas_per_node_group > MAX_REPLICAS {
            return Err(CloudError::invalid(format!(
                "at most {MAX_REPLICAS} replicas per node group"
            )));
        }
        let mode = req.transit_encryption_mode.as_str();
        if mode != "required" && mode != "preferred" {
            return Err(CloudError::invalid(format!(
                "transit_encryption_mode must be `required` or `preferred` (got `{mode}`)"
            )));
        }
        crate::plan::rules::check_auth_token(req.auth_token.expose())
            .map_err(|e| CloudError::invalid(format!("auth token: {e}")))?;
        let group_dir = self.group_dir(&req.id);
        let _work = self.group_lock(&req.id, true)?;
        registry::update(&self.dir, |reg| {
            if reg.groups.contains_key(&req.id) {
                return Err(CloudError::AlreadyExists {
                    what: "replication group",
                    id: req.id.clone(),
                });
            }
            let snap =
                reg.snapshots
                    .get(&req.snapshot_name)
                    .ok_or_else(|| CloudError::NotFound {
                        what: "snapshot",
                        id: req.snapshot_name.clone(),
                    })?;
            if snap.status != "available" {
                return Err(CloudError::invalid(format!(
                    "snapshot `{}` is {}, not available",
                    snap.name, snap.status
                )));
            }
            if let Some(k) = snap.kms_key_id.clone() {
                kms::usable(
                    reg,
                    &k,
                    &format!("restore snapshot `{}`", req.snapshot_name),
                )?;
            }
            let key_ref = req
                .kms_key_id
                .clone()
                .unwrap_or_else(|| DEFAULT_KEY_ALIAS.to_string());
            let key_id = kms::resolve_or_default(reg, &key_ref)?.ok_or_else(|| {
                CloudError::invalid(format!("KMS key `{key_ref}` does not exist"))
            })?;
            let key = kms::usable(reg, &key_id, &format!("encrypt group `{}`", req.id))?;
            let mut g = self.new_group_rec(&req.id, req.replicas_per_node_group);
            g.description = req.description.clone();
            g.at_rest_encryption_enabled = true;
            g.transit_encryption_enabled = true;
            g.transit_encryption_mode = Some(mode.to_string());
            g.auth_token_enabled = true;
            g.kms_key_id = Some(key.arn.clone());
            g.source_snapshot = Some(req.snapshot_name.clone());
            g.cache_subnet_group_name = req.cache_subnet_group_name.clone();
            g.security_group_ids = req.security_group_ids.clone();
            g.cache_parameter_group_name = req.cache_parameter_group_name.clone();
            g.preferred_maintenance_window = req.preferred_maintenance_window.clone();
            g.snapshot_window = req.snapshot_window.clone();
            g.tags = req.tags.clone();
            let _ = std::fs::remove_dir_all(&group_dir);
            reg.groups.insert(req.id.clone(), g);
            Ok(())
        })?;
        if let Err(e) = self.finish_group(&req.id, Some(&req.auth_token)).await {
            self.fail_group(&req.id, &e.to_string()).await;
            return Err(e);
        }
        Ok(())
    }

    async fn delete_group(&self, id: &str) -> CloudResult<()> {
        let group = self.group_rec(id)?;
        let _work = self.group_lock(id, true)?;
        let dirs: Vec<PathBuf> = group.nodes.iter().map(|n| n.dir.clone()).collect();
        let recorded: Vec<Option<i32>> = group.nodes.iter().map(|n| n.pid).collect();
        let group_dir = self.group_dir(id);
        blocking(move || {
            let mut pids: Vec<i32> = dirs
                .iter()
                .zip(recorded)
                .filter_map(|(d, p)| process::node_pid(d, p))
                .collect();
            if let Ok(entries) = std::fs::read_dir(&group_dir) {
                pids.extend(
                    entries
                        .flatten()
                        .filter_map(|e| process::node_pid(&e.path(), None)),
                );
            }
            pids.sort_unstable();
            pids.dedup();
            process::stop_pids(&pids, STOP_GRACE);
            let _ = std::fs::remove_dir_all(&group_dir);
        })
        .await?;
        registry::update(&self.dir, |reg| {
            reg.groups.remove(id);
            Ok(())
        })?;
        Ok(())
    }

    async fn point_alias(&self, alias: &str, group: &str) -> CloudResult<()> {
        check_name("alias", alias)?;
        registry::update(&self.dir, |reg| {
            if !reg.groups.contains_key(group) {
                return Err(CloudError::NotFound {
                    what: "replication group",
                    id: group.to_string(),
                });
            }
            reg.aliases.insert(alias.to_string(), group.to_string());
            Ok(())
        })
    }

    async fn put_secret(
        &self,
        id: &str,
        value: &Secret,
        _tags: &BTreeMap<String, String>,
    ) -> CloudResult<()> {
        self.secret_store(id).save(value).map_err(CloudError::other)
    }
}
