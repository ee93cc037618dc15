//! Replication groups: their registry records and how they appear to callers, the per-group work lock,
//! bringing a creating group's nodes up, the status a describe reports (which progresses a creating group,
//! see the module docs of `sandbox`), and marking a creation failed.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::time::Duration;

use chrono::Utc;

use super::process::{self, HOST, RDB};
use super::registry::{self, GroupRec, NodeRec, Role};
use super::{STOP_GRACE, Sandbox, blocking, io, provisioning_delay_from_env, role};
use crate::cloud::{CloudError, CloudResult, Endpoint, Node, ReplicationGroup};
use crate::secret::Secret;

impl Sandbox {
    /// The per-group work lock (creating nodes). Blocking.
    pub(super) fn group_lock(&self, id: &str, wait: bool) -> CloudResult<Option<File>> {
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
    pub(super) async fn finish_group(&self, id: &str, token: Option<&Secret>) -> CloudResult<()> {
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
    /// Status as describe reports it; progresses a creating group (see the module docs).
    pub(super) async fn live_status(&self, id: &str) -> CloudResult<String> {
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

    /// Mark a group create-failed and stop its processes.
    pub(super) async fn fail_group(&self, id: &str, why: &str) {
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
}
