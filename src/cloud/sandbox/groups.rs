//! Replication groups: their registry records and how they appear to callers, the per-group work lock,
//! bringing a creating group's nodes up, the status a describe reports (which progresses a creating group,
//! see the module docs of `sandbox`), and marking a creation failed.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::time::Duration;

use chrono::Utc;

use super::cluster::{self, Note};
use super::process::{self, HOST, RDB};
use super::registry::{self, GroupRec, NodeRec, Role};
use super::{STOP_GRACE, Sandbox, blocking, io, provisioning_delay_from_env, role};
use crate::cloud::{CloudError, CloudResult, Endpoint, Node, ReplicationGroup};
use crate::secret::Secret;

impl Sandbox {
    /// The per-group work lock: held by whoever creates or deletes a group's nodes. Blocking when `wait`.
    pub(super) fn group_lock(&self, id: &str, wait: bool) -> CloudResult<Option<File>> {
        self.work_lock(&format!("{id}.lock"), wait)
    }

    /// A work lock under `locks/` (`rel` is the file's path there). The kernel releases it when its holder
    /// dies, however it dies: a free lock on a resource still marked as in progress means its worker is
    /// gone, and whoever takes the lock may finish the work (see the module docs of `sandbox`).
    pub(super) fn work_lock(&self, rel: &str, wait: bool) -> CloudResult<Option<File>> {
        let path = self.dir.join("locks").join(rel);
        let folder = path.parent().expect("a lock file has a folder");
        std::fs::create_dir_all(folder).map_err(|e| io("create", folder, e))?;
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

    pub(super) fn new_group_rec(&self, id: &str, replicas: u32) -> GroupRec {
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
            user_group_id: None,
            kms_key_id: None,
            created_at: Utc::now(),
            source_snapshot: None,
            nodes: Vec::new(),
            replicas,
            cluster_enabled: false,
            num_node_groups: 1,
            restore_by_copy: false,
            restore_pending: false,
            cache_subnet_group_name: None,
            security_group_ids: Vec::new(),
            cache_parameter_group_name: None,
            preferred_maintenance_window: None,
            snapshot_window: None,
            tags: BTreeMap::new(),
            failure: None,
        }
    }

    pub(super) fn group_rec(&self, id: &str) -> CloudResult<GroupRec> {
        registry::load(&self.dir)?
            .groups
            .remove(id)
            .ok_or_else(|| CloudError::NotFound {
                what: "replication group",
                id: id.to_string(),
            })
    }

    pub(super) fn to_group(&self, g: &GroupRec, status: String) -> ReplicationGroup {
        let endpoint = |n: &NodeRec| Endpoint {
            host: HOST.into(),
            port: n.port,
        };
        // On a cluster, any primary's address stands in for the configuration endpoint, which AWS reports
        // in place of a primary endpoint (and no reader endpoint).
        let primary = g.nodes.iter().find(|n| n.role == Role::Primary);
        let reader = match g.cluster_enabled {
            true => None,
            false => g.nodes.iter().find(|n| n.role == Role::Replica).or(primary),
        };
        ReplicationGroup {
            id: g.id.clone(),
            description: Some(g.description.clone()),
            status,
            engine: g.engine.clone(),
            engine_version: g.engine_version.clone(),
            at_rest_encryption_enabled: g.at_rest_encryption_enabled,
            transit_encryption_enabled: g.transit_encryption_enabled,
            transit_encryption_mode: g.transit_encryption_mode.clone(),
            auth_token_enabled: g.auth_token_enabled,
            user_group_ids: g.user_group_id.iter().cloned().collect(),
            kms_key_id: g.kms_key_id.clone(),
            cache_node_type: "cache.sandbox.micro".into(),
            cluster_enabled: g.cluster_enabled,
            num_node_groups: g.num_node_groups,
            nodes_per_node_group: 1 + g.replicas,
            // The sandbox has no failover and no availability zones to report.
            automatic_failover_enabled: None,
            multi_az_enabled: None,
            primary_endpoint: primary.map(endpoint),
            reader_endpoint: reader.map(endpoint),
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
    /// A cluster's nodes are then joined (see `form_cluster`), and a restore by copy is made.
    pub(super) async fn finish_group(
        &self,
        id: &str,
        token: Option<&Secret>,
        note: Note<'_>,
    ) -> CloudResult<()> {
        let group = self.group_rec(id)?;
        let secured = group.auth_token_enabled || group.user_group_id.is_some();
        let token = match (secured, token) {
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
        for index in 0..cluster::node_count(&group) {
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
        if group.cluster_enabled {
            self.form_cluster(id, note).await?;
        }
        if group.restore_pending {
            self.restore_by_copy(id, token.as_ref()).await?;
        } else if group.source_snapshot.is_some() && !group.restore_by_copy {
            // A restored primary that loaded its RDB while we were away: remove the plaintext file.
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
    /// Status as describe reports it; progresses a creating group and finishes a delete whose caller died
    /// (see the module docs). `NotFound` when the group is gone (also when this call finished its delete).
    pub(super) async fn live_status(&self, id: &str) -> CloudResult<String> {
        let group = self.group_rec(id)?;
        match group.status.as_str() {
            "creating" | "deleting" => {}
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
        // Finish the work unless someone else is doing it right now.
        let Some(_work) = self.group_lock(id, false)? else {
            return Ok(group.status);
        };
        let group = self.group_rec(id)?;
        match group.status.as_str() {
            "creating" => self.progress_creation(id).await,
            "deleting" => {
                self.finish_delete(id).await?;
                Err(CloudError::NotFound {
                    what: "replication group",
                    id: id.to_string(),
                })
            }
            _ => Ok(group.status),
        }
    }

    /// One round of work on a creating group (the caller holds its work lock): nodes started, then
    /// `available` once ready and old enough. A node that cannot come up (redis-server refuses to start,
    /// exits while loading, the snapshot cannot be opened) makes the group `create-failed`, as ElastiCache
    /// reports a creation that cannot finish; a transient error leaves it `creating` for the next look.
    async fn progress_creation(&self, id: &str) -> CloudResult<String> {
        match self.finish_group(id, None, &|_| {}).await {
            Ok(()) => {}
            Err(CloudError::Transient { .. }) => return Ok("creating".into()),
            Err(e) => {
                // The group itself may be gone; otherwise its creation cannot finish.
                self.group_rec(id)?;
                self.fail_group(id, &e.to_string()).await;
                return Ok("create-failed".into());
            }
        }
        let group = self.group_rec(id)?;
        let old_enough = Utc::now()
            .signed_duration_since(group.created_at)
            .to_std()
            .unwrap_or_default()
            >= self
                .create_delay
                .unwrap_or_else(provisioning_delay_from_env);
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

    /// Mark a group `deleting` (it must exist), so that a caller killed from here on leaves a delete that
    /// the next reader finishes; then finish it. The caller holds the group's work lock. Returns how many
    /// processes were stopped.
    pub(super) async fn delete_locked(&self, id: &str) -> CloudResult<usize> {
        registry::update(&self.dir, |reg| {
            let g = reg.groups.get_mut(id).ok_or_else(|| CloudError::NotFound {
                what: "replication group",
                id: id.to_string(),
            })?;
            g.status = "deleting".into();
            Ok(())
        })?;
        super::hook("delete_requested").await;
        self.finish_delete(id).await
    }

    /// Before a group id is created (again), with its work lock held: finish a delete whose caller died,
    /// and stop every redis-server still standing in the folder of a group that has no recorded running
    /// node (or no record), so none outlives the folder that is about to be replaced.
    pub(super) async fn prepare_reuse_locked(&self, id: &str) -> CloudResult<()> {
        match self.group_rec(id) {
            Ok(g) if g.status == "deleting" => self.finish_delete(id).await.map(|_| ()),
            Ok(g)
                if g.nodes
                    .iter()
                    .any(|n| process::node_pid(&n.dir, n.pid).is_some()) =>
            {
                Ok(())
            }
            Ok(_) | Err(CloudError::NotFound { .. }) => {
                let group_dir = self.group_dir(id);
                blocking(move || process::stop_under(&group_dir, &[], STOP_GRACE))
                    .await
                    .map(|_| ())
            }
            Err(e) => Err(e),
        }
    }

    /// Stop every process of a group (recorded, named by a pidfile, or merely standing in its folder),
    /// remove its folder, then its record. The caller holds the group's work lock.
    pub(super) async fn finish_delete(&self, id: &str) -> CloudResult<usize> {
        let recorded = match self.group_rec(id) {
            Ok(g) => g
                .nodes
                .iter()
                .filter_map(|n| process::node_pid(&n.dir, n.pid))
                .collect(),
            Err(CloudError::NotFound { .. }) => Vec::new(),
            Err(e) => return Err(e),
        };
        let group_dir = self.group_dir(id);
        let stopped = blocking(move || {
            let stopped = process::stop_under(&group_dir, &recorded, STOP_GRACE);
            match std::fs::remove_dir_all(&group_dir) {
                Ok(()) => Ok(stopped),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(stopped),
                Err(e) => Err(io("remove", &group_dir, e)),
            }
        })
        .await??;
        registry::update(&self.dir, |reg| {
            reg.groups.remove(id);
            Ok(())
        })?;
        Ok(stopped)
    }

    /// Mark a group create-failed and stop its processes (every one standing in its folder too).
    pub(super) async fn fail_group(&self, id: &str, why: &str) {
        let Ok(group) = self.group_rec(id) else {
            return;
        };
        let pids: Vec<i32> = group
            .nodes
            .iter()
            .filter_map(|n| process::node_pid(&n.dir, n.pid))
            .collect();
        let group_dir = self.group_dir(id);
        let _ = blocking(move || process::stop_under(&group_dir, &pids, STOP_GRACE)).await;
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
}
