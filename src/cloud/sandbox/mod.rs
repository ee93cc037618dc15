//! The embedded stand-in for ElastiCache + KMS: real `redis-server` processes on 127.0.0.1, state in a
//! folder (default `.ecmigrate/sandbox/`).
//!
//! Layout of the folder:
//! - `registry.json` (0600): groups, snapshots, aliases, KMS keys (with their key material); `.lock` guards
//!   every read-modify-write of it.
//! - `ca/ca.pem`, `ca/ca.key` (0600): the sandbox CA.
//! - `nodes/<group>/<n>/`: one folder per node: `redis.conf` (0600; the only place an AUTH token is kept),
//!   `redis.pid`, `redis.log`, `tls.crt`/`tls.key` on encrypted groups, `nodes.conf` on a cluster node.
//!   Cluster nodes go shard by shard, each shard's primary first; `nodes/<group>/restore-<n>/` is the
//!   short-lived stand-alone server of a restore by copy (see `restore`).
//! - `snapshots/<name>.sealed` (AES-256-GCM, data key wrapped by a sandbox KMS key) or `<name>.rdb` (plain,
//!   only for a snapshot of an unencrypted group taken without a key); a cluster's snapshot is one such
//!   file per shard, `<name>.shard-0001.sealed`, ...
//!
//! Cluster-mode-enabled groups (`sandbox up --shards N`, or a restore with `cluster_enabled`): every node
//! runs `cluster-enabled yes` with its own cluster bus port; the sandbox forms the cluster itself, as the
//! control plane does (slots spread evenly over the primaries), and a group is `available` only once every
//! node reports `cluster_state:ok`. On an encrypted cluster, clients, replication and the cluster bus are
//! TLS-only (`tls-cluster yes`). The first primary's address stands in for the configuration endpoint.
//! - `locks/<group>.lock`: held by whoever is creating or deleting a group's nodes (the calling process, or
//!   a reader that finishes the work of a caller that was killed); `locks/snapshots/<name>.lock`: held by
//!   whoever is writing a snapshot. The kernel releases a lock when its holder dies, so a record still
//!   marked `creating`/`deleting` whose lock is free is work whose process is gone: like a control plane,
//!   the sandbox finishes it on the next look (any describe, list or `sandbox status`), independent of the
//!   process that asked.
//!
//! Group status as describe reports it:
//! - `creating`: registered; nodes starting or not yet ready (PING over TLS+AUTH where needed, replicas
//!   `master_link_status:up`, at least the simulated provisioning time, [`PROVISIONING_DELAY_ENV`], since
//!   creation). Describe restarts a node of a creating group whose process is gone, like a control plane
//!   finishing its work.
//! - `available`: stored once every node was ready; reported while all its processes run.
//! - `stopped`: an available group none of whose processes run (killed, machine rebooted); `degraded`: some
//!   of them run. Nothing restarts such a group (its data lived only in memory): delete it, or `sandbox down`.
//! - `create-failed`: a creation that could not finish: a node could not come up (redis-server refused to
//!   start or exited while loading, the snapshot could not be opened, e.g. its key was disabled); its
//!   processes are stopped; delete it.
//! - `deleting`: stored first by a delete, which then stops the processes and removes the group; a delete
//!   whose caller died is finished by the next look, so the group goes `deleting` → gone.
//!
//! Snapshot status: `creating` from the request until its file is written, then `available`; a request
//! whose process died is redone by the next look (the snapshot then holds the data of that moment), and
//! `failed` when that cannot be done (the group is gone or has no running node, the key is disabled).
//!
//! No process outlives its group: every start attempt first stops any redis-server standing in the node's
//! folder (one a killed caller started but never recorded, or one of a timed-out attempt), a failed attempt
//! stops its own, and delete, create-failed and `down` stop every redis-server whose working folder lies in
//! the group's folder, found through `/proc` whether recorded or not.
//!
//! `down` stops every process and removes every group (and its node folders) from the registry; snapshots,
//! aliases, KMS keys and the CA stay. `sandbox delete-group` removes one group, its aliases and (unless
//! kept) its snapshots.
//!
//! Where the code lives:
//! - this file: the [`Sandbox`] handle, its folder layout and the helpers its parts share;
//! - `admin`: the `sandbox up/status/down/delete-group` and `sandbox kms` operations and their JSON types;
//! - `groups`: group records, the work locks, the status a describe reports, creation, failure, deletion;
//! - `nodes`: one node's lifecycle (files, start, record) and the data-plane checks on running nodes;
//! - `cluster`: shards, slots, forming a cluster, cluster seeding; `restore`: restoring by copy;
//! - `snapshots`: snapshot requests, files (SAVE, sealing, unsealing), finishing orphaned requests, records;
//! - `cloud_impl`: the `CloudRead`/`CloudWrite` implementation on top of those;
//! - `registry`, `process`, `kms`, `tls`: registry.json, redis-server processes, KMS keys, certificates;
//! - `test_hooks` (feature `test-hooks` only): points where a test may hold the process to kill it there.

mod admin;
mod auth_token;
mod cloud_impl;
mod cluster;
mod groups;
mod kms;
mod nodes;
mod process;
mod rbac;
mod registry;
mod restore;
mod secrets;
mod snapshots;
#[cfg(feature = "test-hooks")]
mod test_hooks;
mod tls;
mod transit;

#[cfg(test)]
mod lifecycle_tests;
#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};
use std::time::Duration;

use self::registry::{Role, SnapshotRec};
use crate::cloud::{CloudError, CloudResult, NodeRole};

pub use self::admin::{SandboxGroup, SandboxNode, SandboxRemoved, SandboxSnapshot, SandboxStatus};
pub use self::kms::DEFAULT_KEY_ALIAS;

/// Sandbox setting, not a fault hook: the env var holding the simulated provisioning time (ms), the minimum
/// time a restored group stays `creating` after its creation, as a real ElastiCache creation takes minutes.
/// Unset or unparsable means no delay; [`Sandbox::with_create_delay`] overrides it for one handle.
pub const PROVISIONING_DELAY_ENV: &str = "ECMIGRATE_SANDBOX_CREATE_DELAY_MS";

const MAX_REPLICAS: u32 = 5;
const STOP_GRACE: Duration = Duration::from_secs(5);

/// The sandbox cloud, rooted at one folder.
#[derive(Debug, Clone)]
pub struct Sandbox {
    dir: PathBuf,
    /// Overrides `ECMIGRATE_SANDBOX_CREATE_DELAY_MS` for this handle.
    create_delay: Option<Duration>,
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

/// The simulated provisioning time set by [`PROVISIONING_DELAY_ENV`] (zero when unset or unparsable).
fn provisioning_delay_from_env() -> Duration {
    std::env::var(PROVISIONING_DELAY_ENV)
        .ok()
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_millis)
        .unwrap_or(Duration::ZERO)
}

/// A point where a test may hold this process to kill it there (feature `test-hooks`; nothing otherwise).
async fn hook(point: &'static str) {
    #[cfg(feature = "test-hooks")]
    test_hooks::hold(point).await;
    #[cfg(not(feature = "test-hooks"))]
    let _ = point;
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> CloudResult<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| CloudError::other(format!("sandbox: background task failed: {e}")))
}

fn set_mode(path: &Path, mode: u32) -> CloudResult<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(|e| io("chmod", path, e))
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
    pub fn ca_file(&self) -> PathBuf {
        tls::ca_cert_path(&self.dir)
    }

    fn group_dir(&self, id: &str) -> PathBuf {
        self.dir.join("nodes").join(id)
    }

    fn snapshot_path(&self, rec: &SnapshotRec) -> PathBuf {
        self.dir.join(&rec.file)
    }
}
