//! The `CloudRead`/`CloudWrite` implementation of the sandbox: the ElastiCache, KMS and Secrets Manager
//! calls the migration makes, on top of the groups, nodes and snapshots parts.

use std::collections::BTreeMap;
use std::path::PathBuf;

use super::cluster::MAX_SHARDS;
use super::registry;
use super::{DEFAULT_KEY_ALIAS, MAX_REPLICAS, Sandbox, check_id, check_name, kms};
use crate::cloud::{
    AuthTokenUpdate, CloudError, CloudRead, CloudResult, CloudWrite, CreateEncryptedGroup,
    CreateUser, GroupAuth, KmsKey, ReplicationGroup, STAGE_CURRENT, SecretVersion, Snapshot, User,
    UserGroup,
};
use crate::secret::Secret;
use async_trait::async_trait;

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
        self.settle_snapshot(name).await?;
        let reg = registry::load(&self.dir)?;
        Ok(reg.snapshots.get(name).map(|s| Self::to_snapshot(&reg, s)))
    }

    async fn list_snapshots(&self, group: Option<&str>) -> CloudResult<Vec<Snapshot>> {
        self.settle_snapshots().await?;
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

    async fn describe_user(&self, user_id: &str) -> CloudResult<Option<User>> {
        self.describe_user_rec(user_id)
    }

    async fn describe_user_group(&self, id: &str) -> CloudResult<Option<UserGroup>> {
        self.describe_user_group_rec(id)
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
        Ok(self.secret_version(id, STAGE_CURRENT)?.map(|v| v.value))
    }

    async fn get_secret_version(
        &self,
        id: &str,
        stage: &str,
    ) -> CloudResult<Option<SecretVersion>> {
        self.secret_version(id, stage)
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
        self.request_snapshot(group, name, kms_key_id).await
    }

    async fn create_group_from_snapshot(&self, req: &CreateEncryptedGroup) -> CloudResult<()> {
        check_id(&req.id)?;
        if !req.cluster_enabled && req.num_node_groups != 1 {
            return Err(CloudError::invalid(format!(
                "num_node_groups is {} but cluster mode is disabled: a cluster-mode-disabled group has one node group",
                req.num_node_groups
            )));
        }
        if req.cluster_enabled && !(1..=MAX_SHARDS).contains(&req.num_node_groups) {
            return Err(CloudError::invalid(format!(
                "num_node_groups is {}: a sandbox cluster has 1 to {MAX_SHARDS} node groups (each node is a local process)",
                req.num_node_groups
            )));
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
        // The nodes' own secret: the AUTH token, or on an RBAC group the password of the sandbox's
        // administrative user (the users' passwords are in the registry, hashed).
        let (secret, user_group_id) = match &req.auth {
            GroupAuth::Token(token) => {
                crate::plan::rules::check_auth_token(token.expose())
                    .map_err(|e| CloudError::invalid(format!("auth token: {e}")))?;
                (token.clone(), None)
            }
            GroupAuth::UserGroup(id) => {
                let reg = registry::load(&self.dir)?;
                let found = super::rbac::user_group(&reg, id)?;
                if found.engine != req.engine {
                    return Err(CloudError::invalid(format!(
                        "user group `{id}` is for {}, the group for {}",
                        found.engine, req.engine
                    )));
                }
                (crate::secret::generate_token(), Some(id.clone()))
            }
        };
        let group_dir = self.group_dir(&req.id);
        self.settle_snapshot(&req.snapshot_name).await?;
        let _work = self.group_lock(&req.id, true)?;
        self.prepare_reuse_locked(&req.id).await?;
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
            let by_copy = req.cluster_enabled || !snap.shard_files.is_empty();
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
            g.cluster_enabled = req.cluster_enabled;
            g.num_node_groups = req.num_node_groups;
            g.restore_by_copy = by_copy;
            g.restore_pending = by_copy;
            g.description = req.description.clone();
            g.at_rest_encryption_enabled = true;
            g.transit_encryption_enabled = true;
            g.transit_encryption_mode = Some(mode.to_string());
            g.auth_token_enabled = user_group_id.is_none();
            g.user_group_id = user_group_id.clone();
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
        if let Err(e) = self.finish_group(&req.id, Some(&secret), &|_| {}).await {
            self.fail_group(&req.id, &e.to_string()).await;
            return Err(e);
        }
        Ok(())
    }

    async fn delete_group(&self, id: &str) -> CloudResult<()> {
        self.group_rec(id)?;
        let _work = self.group_lock(id, true)?;
        self.delete_locked(id).await.map(|_| ())
    }

    async fn modify_transit(&self, group: &str, mode: &str) -> CloudResult<()> {
        self.modify_transit_mode(group, mode).await
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
        self.put_secret_current(id, value)
    }

    async fn put_secret_pending(
        &self,
        id: &str,
        version_id: &str,
        value: &Secret,
    ) -> CloudResult<()> {
        Sandbox::put_secret_pending(self, id, version_id, value)
    }

    async fn move_secret_stage(
        &self,
        id: &str,
        stage: &str,
        to: Option<&str>,
        from: Option<&str>,
    ) -> CloudResult<()> {
        Sandbox::move_secret_stage(self, id, stage, to, from)
    }

    async fn modify_to_user_group(&self, group: &str, user_group_id: &str) -> CloudResult<()> {
        self.move_to_user_group(group, user_group_id).await
    }

    async fn create_user(&self, request: &CreateUser) -> CloudResult<()> {
        self.create_user_rec(request)
    }

    async fn create_user_group(
        &self,
        id: &str,
        engine: &str,
        user_ids: &[String],
        _tags: &BTreeMap<String, String>,
    ) -> CloudResult<()> {
        self.create_user_group_rec(id, engine, user_ids)
    }

    async fn modify_auth_token(
        &self,
        group: &str,
        token: &Secret,
        strategy: AuthTokenUpdate,
    ) -> CloudResult<()> {
        self.modify_auth(group, token, strategy).await
    }
}
