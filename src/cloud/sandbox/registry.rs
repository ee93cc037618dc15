//! The sandbox registry: one JSON file with every group, snapshot, alias and KMS key.
//!
//! Every read-modify-write holds an exclusive lock on `<dir>/.lock` and replaces the file atomically
//! (temp file, fsync, rename, fsync of the folder), so several processes may share one sandbox folder.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::cloud::{CloudError, CloudResult};

pub const REGISTRY_FILE: &str = "registry.json";
const LOCK_FILE: &str = ".lock";

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Registry {
    #[serde(default)]
    pub groups: BTreeMap<String, GroupRec>,
    #[serde(default)]
    pub snapshots: BTreeMap<String, SnapshotRec>,
    #[serde(default)]
    pub aliases: BTreeMap<String, String>,
    /// By key id.
    #[serde(default)]
    pub kms_keys: BTreeMap<String, KeyRec>,
    /// RBAC users, by user id (lowercase, as ElastiCache stores it).
    #[serde(default)]
    pub users: BTreeMap<String, UserRec>,
    /// RBAC user groups, by id.
    #[serde(default)]
    pub user_groups: BTreeMap<String, UserGroupRec>,
}

/// An RBAC user. Its passwords are kept only as SHA-256 hashes, the form a Redis ACL rule takes
/// (`#<hex>`): the sandbox never holds them in clear.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UserRec {
    pub user_id: String,
    pub user_name: String,
    pub engine: String,
    pub access_string: String,
    pub password_sha256: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UserGroupRec {
    pub id: String,
    pub engine: String,
    pub user_ids: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Primary,
    Replica,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NodeRec {
    /// `<group>-001`, `<group>-002`, ...
    pub id: String,
    pub role: Role,
    /// The port clients use: the TLS port on an encrypted group.
    pub port: u16,
    /// A second, plain-text port (transit mode `preferred` only).
    #[serde(default)]
    pub plain_port: Option<u16>,
    pub tls: bool,
    /// The node's folder: `nodes/<group>/<n>/`.
    pub dir: PathBuf,
    pub pid: Option<i32>,
    /// The node group (shard) it belongs to, 0-based; always 0 on a cluster-mode-disabled group.
    #[serde(default)]
    pub shard: u32,
    /// The cluster bus port (`cluster-port`), chosen on its own: a free port + 10000 may exceed 65535.
    #[serde(default)]
    pub bus_port: Option<u16>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GroupRec {
    pub id: String,
    pub description: String,
    /// Stored status: `creating`, `available`, `create-failed`, `deleting`. What describe reports is
    /// computed from it and the processes (see the module docs of `sandbox`).
    pub status: String,
    pub engine: String,
    pub engine_version: String,
    pub at_rest_encryption_enabled: bool,
    pub transit_encryption_enabled: bool,
    pub transit_encryption_mode: Option<String>,
    pub auth_token_enabled: bool,
    /// The RBAC user group whose users the nodes let in (instead of an AUTH token).
    #[serde(default)]
    pub user_group_id: Option<String>,
    /// ARN of the KMS key (at-rest encrypted groups only).
    pub kms_key_id: Option<String>,
    pub created_at: DateTime<Utc>,
    /// The snapshot an encrypted group was restored from.
    pub source_snapshot: Option<String>,
    pub nodes: Vec<NodeRec>,
    /// Replicas the group should have per node group (nodes are added as they start).
    pub replicas: u32,
    /// Cluster mode enabled: the nodes run `cluster-enabled yes` and the slots are spread evenly over
    /// `num_node_groups` primaries.
    #[serde(default)]
    pub cluster_enabled: bool,
    /// Node groups (shards); 1 on a cluster-mode-disabled group.
    #[serde(default = "one")]
    pub num_node_groups: u32,
    /// Restored by copying the snapshot's keys into the running nodes (a cluster target, or a snapshot of
    /// a cluster), not by a primary loading the RDB at start; set at creation.
    #[serde(default)]
    pub restore_by_copy: bool,
    /// A restore by copy that has not finished yet: the group stays `creating`.
    #[serde(default)]
    pub restore_pending: bool,
    pub cache_subnet_group_name: Option<String>,
    pub security_group_ids: Vec<String>,
    pub cache_parameter_group_name: Option<String>,
    pub preferred_maintenance_window: Option<String>,
    pub snapshot_window: Option<String>,
    pub tags: BTreeMap<String, String>,
    #[serde(default)]
    pub failure: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SnapshotRec {
    pub name: String,
    pub source_group: String,
    /// `creating`, `available` or `failed`.
    pub status: String,
    /// Id of the KMS key the snapshot is sealed with; `None` = plain RDB.
    pub kms_key_id: Option<String>,
    /// Relative to the sandbox folder: `snapshots/<name>.rdb` or `snapshots/<name>.sealed`.
    pub file: PathBuf,
    pub created_at: DateTime<Utc>,
    /// Why a snapshot is `failed`.
    #[serde(default)]
    pub failure: Option<String>,
    /// A snapshot of a cluster-mode-enabled group: one file per shard (in shard order, each sealed like
    /// `file`, relative to the sandbox folder); empty for a cluster-mode-disabled group, whose data is `file`.
    #[serde(default)]
    pub shard_files: Vec<PathBuf>,
}

fn one() -> u32 {
    1
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct KeyRec {
    pub id: String,
    pub arn: String,
    /// `alias/NAME`.
    pub aliases: Vec<String>,
    pub enabled: bool,
    /// 32 bytes of key material, hex. registry.json is 0600 for this reason.
    pub material_hex: String,
    pub created_at: DateTime<Utc>,
}

fn io_err(what: &str, path: &Path, e: std::io::Error) -> CloudError {
    CloudError::other(format!("sandbox: cannot {what} {}: {e}", path.display()))
}

/// Read the registry without a lock (the file is always replaced atomically).
pub fn load(dir: &Path) -> CloudResult<Registry> {
    let path = dir.join(REGISTRY_FILE);
    match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map_err(|e| CloudError::other(format!("sandbox: {} is corrupt: {e}", path.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Registry::default()),
        Err(e) => Err(io_err("read", &path, e)),
    }
}

/// An exclusive lock on the sandbox folder, released on drop.
pub struct Lock {
    _file: File,
}

pub fn lock(dir: &Path) -> CloudResult<Lock> {
    let path = dir.join(LOCK_FILE);
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(&path)
        .map_err(|e| io_err("open", &path, e))?;
    file.lock().map_err(|e| io_err("lock", &path, e))?;
    Ok(Lock { _file: file })
}

/// Write `bytes` to `path` atomically with mode `mode`.
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> CloudResult<()> {
    let parent = path.parent().unwrap_or(Path::new("."));
    let tmp = parent.join(format!(
        ".{}.tmp-{}",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("file"),
        std::process::id()
    ));
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)
        .map_err(|e| io_err("write", &tmp, e))?;
    file.write_all(bytes)
        .and_then(|_| file.sync_all())
        .map_err(|e| io_err("write", &tmp, e))?;
    drop(file);
    std::fs::rename(&tmp, path).map_err(|e| io_err("replace", path, e))?;
    if let Ok(d) = File::open(parent) {
        let _ = d.sync_all();
    }
    Ok(())
}

pub fn save(dir: &Path, registry: &Registry) -> CloudResult<()> {
    let bytes = serde_json::to_vec_pretty(registry)
        .map_err(|e| CloudError::other(format!("sandbox: cannot encode the registry: {e}")))?;
    write_atomic(&dir.join(REGISTRY_FILE), &bytes, 0o600)
}

/// Run `f` on the registry under the exclusive lock and save what it leaves.
pub fn update<T>(dir: &Path, f: impl FnOnce(&mut Registry) -> CloudResult<T>) -> CloudResult<T> {
    let _lock = lock(dir)?;
    let mut registry = load(dir)?;
    let out = f(&mut registry)?;
    save(dir, &registry)?;
    Ok(out)
}
