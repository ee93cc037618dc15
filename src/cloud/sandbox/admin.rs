//! The sandbox's own operations, beyond what a cloud offers: `sandbox up` (an unencrypted, seeded source
//! group, cluster mode disabled or, with shards, enabled), `sandbox status` (everything the folder holds, with live status, and its JSON types), `sandbox
//! delete-group` (one group, its aliases and snapshots), `sandbox down` and stopping every process, and
//! `sandbox kms` (create, enable, disable keys).

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;

use super::cluster::{MAX_SHARDS, Note, slots_text};
use super::process::{self, HOST};
use super::registry::{self, GroupRec, NodeRec};
use super::{MAX_REPLICAS, STOP_GRACE, Sandbox, blocking, check_id, kms, role};
use crate::cloud::{CloudError, CloudResult, Endpoint, KmsKey, NodeRole, ReplicationGroup};

/// `sandbox status --output json`.
#[derive(Debug, Clone, Serialize)]
pub struct SandboxStatus {
    pub ca_file: String,
    pub groups: Vec<SandboxGroup>,
    pub snapshots: Vec<SandboxSnapshot>,
    /// Alias name -> group id.
    pub aliases: BTreeMap<String, String>,
    /// Alias name -> the endpoint it stands for: the group's primary endpoint, or a cluster's
    /// configuration endpoint (aliases of groups that are gone are left out).
    pub alias_endpoints: BTreeMap<String, Endpoint>,
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
    pub cluster_enabled: bool,
    /// Shards; 1 on a cluster-mode-disabled group.
    pub num_node_groups: u32,
    /// A cluster's configuration endpoint (any primary's address stands in for it); `None` otherwise.
    pub configuration_endpoint: Option<Endpoint>,
    pub nodes: Vec<SandboxNode>,
    /// Why a `create-failed` group failed.
    pub failure: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct SandboxNode {
    pub id: String,
    pub role: NodeRole,
    pub host: String,
    /// The client port: the TLS port when `tls`.
    pub port: u16,
    pub tls: bool,
    /// The plain-text port served beside the TLS one while the group's transit encryption mode is
    /// `preferred` (`None` otherwise).
    pub plain_port: Option<u16>,
    pub pid: Option<i32>,
    pub running: bool,
    /// The node group, 0-based (0 on a cluster-mode-disabled group).
    pub shard: u32,
    /// The hash slots of the node's shard, `"0-5460"`, on a cluster; `None` otherwise.
    pub slots: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct SandboxSnapshot {
    pub name: String,
    pub source_group: String,
    pub status: String,
    pub encrypted: bool,
    pub kms_key_id: Option<String>,
    /// The (first) file; a cluster's snapshot has one per shard, see `shard_paths`.
    pub path: String,
    /// A cluster's snapshot: the file of each shard, in shard order; empty otherwise.
    pub shard_paths: Vec<String>,
    /// Why a `failed` snapshot failed.
    pub failure: Option<String>,
}

/// What `sandbox delete-group` removed.
#[derive(Debug, Clone, Serialize)]
pub struct SandboxRemoved {
    pub replication_group_id: String,
    /// redis-server processes that were running and were stopped.
    pub processes_stopped: usize,
    /// Aliases that pointed at the group.
    pub aliases: Vec<String>,
    /// Snapshots taken of the group that were removed (none with `--keep-snapshots`).
    pub snapshots: Vec<String>,
}

impl Sandbox {
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
        self.up_group(id, None, replicas, keys, progress, &|_| {})
            .await
    }

    /// [`Self::up`] for a cluster-mode-enabled group: `shards` primaries sharing the 16384 slots evenly,
    /// `replicas` replicas each, every seeded key on the primary owning its slot; `<id>-endpoint` points at
    /// its configuration endpoint. Returns once every node reports `cluster_state:ok` and the replicas
    /// caught up; `note` gets a line on each step of forming the cluster.
    pub async fn up_cluster(
        &self,
        id: &str,
        shards: u32,
        replicas: u32,
        keys: u64,
        progress: &(dyn Fn(u64, u64) + Send + Sync),
        note: Note<'_>,
    ) -> CloudResult<ReplicationGroup> {
        if !(1..=MAX_SHARDS).contains(&shards) {
            return Err(CloudError::invalid(format!(
                "a sandbox cluster has 1 to {MAX_SHARDS} shards (asked {shards}): each node is a local process"
            )));
        }
        self.up_group(id, Some(shards), replicas, keys, progress, note)
            .await
    }

    async fn up_group(
        &self,
        id: &str,
        shards: Option<u32>,
        replicas: u32,
        keys: u64,
        progress: &(dyn Fn(u64, u64) + Send + Sync),
        note: Note<'_>,
    ) -> CloudResult<ReplicationGroup> {
        check_id(id)?;
        if replicas > MAX_REPLICAS {
            return Err(CloudError::invalid(format!(
                "at most {MAX_REPLICAS} replicas per group (asked {replicas})"
            )));
        }
        let _work = self.group_lock(id, true)?;
        self.prepare_reuse_locked(id).await?;
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
            let mut rec = self.new_group_rec(id, replicas);
            if let Some(n) = shards {
                rec.cluster_enabled = true;
                rec.num_node_groups = n;
            }
            reg.groups.insert(id.to_string(), rec);
            Ok(())
        })?;
        let result = async {
            self.finish_group(id, None, note).await?;
            let group = self.group_rec(id)?;
            if group.cluster_enabled {
                self.seed_cluster(&group, keys, progress).await?;
            } else {
                let primary = &group.nodes[0];
                let mut conn = self.connect_node(&group, primary).await?;
                crate::data::seed::seed(&mut conn, keys, progress)
                    .await
                    .map_err(|e| {
                        CloudError::other(format!("sandbox: seeding `{id}` failed: {e}"))
                    })?;
            }
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

    /// Everything the sandbox holds, with live group status. Like any look, it finishes the work of
    /// callers that died (snapshots still `creating`, groups `creating` or `deleting`).
    pub async fn status(&self) -> CloudResult<SandboxStatus> {
        self.settle_snapshots().await?;
        let mut groups = Vec::new();
        for id in registry::load(&self.dir)?.groups.keys() {
            let status = match self.live_status(id).await {
                Ok(s) => s,
                Err(CloudError::NotFound { .. }) => continue,
                Err(e) => return Err(e),
            };
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
                cluster_enabled: g.cluster_enabled,
                num_node_groups: g.num_node_groups,
                configuration_endpoint: g
                    .cluster_enabled
                    .then(|| self.to_group(g, String::new()).primary_endpoint)
                    .flatten(),
                nodes: g.nodes.iter().map(|n| status_node(g, n)).collect(),
                failure: g.failure.clone(),
            });
        }
        let reg = registry::load(&self.dir)?;
        let alias_endpoints = reg
            .aliases
            .iter()
            .filter_map(|(alias, id)| {
                let g = reg.groups.get(id)?;
                Some((
                    alias.clone(),
                    self.to_group(g, String::new()).primary_endpoint?,
                ))
            })
            .collect();
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
                    shard_paths: s
                        .shard_files
                        .iter()
                        .map(|f| self.dir.join(f).display().to_string())
                        .collect(),
                    failure: s.failure.clone(),
                })
                .collect(),
            aliases: reg.aliases.clone(),
            alias_endpoints,
            kms_keys: reg.kms_keys.values().map(kms::to_kms_key).collect(),
        })
    }

    /// Delete group `id` as `sandbox delete-group` does: its processes and node folders (as a
    /// DeleteReplicationGroup), the aliases pointing at it, and unless `keep_snapshots` the snapshots taken
    /// of it. `NotFound` for an unknown id.
    pub async fn remove_group(
        &self,
        id: &str,
        keep_snapshots: bool,
    ) -> CloudResult<SandboxRemoved> {
        check_id(id)?;
        self.group_rec(id)?;
        let _work = self.group_lock(id, true)?;
        let processes_stopped = match self.group_rec(id) {
            Ok(_) => self.delete_locked(id).await?,
            // A reader finished its delete while we waited for the lock.
            Err(CloudError::NotFound { .. }) => 0,
            Err(e) => return Err(e),
        };
        let (aliases, snapshots) = registry::update(&self.dir, |reg| {
            let aliases: Vec<String> = reg
                .aliases
                .iter()
                .filter(|(_, group)| *group == id)
                .map(|(alias, _)| alias.clone())
                .collect();
            aliases.iter().for_each(|a| {
                reg.aliases.remove(a);
            });
            let snapshots: Vec<String> = reg
                .snapshots
                .values()
                .filter(|s| !keep_snapshots && s.source_group == id)
                .map(|s| s.name.clone())
                .collect();
            Ok((aliases, snapshots))
        })?;
        self.remove_snapshots(&snapshots)?;
        Ok(SandboxRemoved {
            replication_group_id: id.to_string(),
            processes_stopped,
            aliases,
            snapshots,
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
        // Nodes started by a run that was killed before it recorded them, or whose pidfile a retried start
        // replaced: every redis-server standing in a node folder.
        pids.extend(process::pids_under(&self.dir.join("nodes")));
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
}

/// A node as `sandbox status` shows it, with its live process.
fn status_node(g: &GroupRec, n: &NodeRec) -> SandboxNode {
    let pid = process::node_pid(&n.dir, n.pid);
    SandboxNode {
        id: n.id.clone(),
        role: role(n.role),
        host: HOST.into(),
        port: n.port,
        tls: n.tls,
        plain_port: n.plain_port,
        pid: pid.or(n.pid),
        running: pid.is_some(),
        shard: n.shard,
        slots: g
            .cluster_enabled
            .then(|| slots_text(n.shard, g.num_node_groups)),
    }
}
