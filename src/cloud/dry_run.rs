//! The rehearsal cloud. It is built from a *reader* of the real cloud, so no mutating call can reach it:
//! every mutation is reported as a call that would be made and recorded in an in-memory overlay, so the
//! rest of the run sees the resources it "created" (as available) and walks the same path as a real run.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;

use crate::secret::Secret;

use super::{
    AuthTokenUpdate, CloudError, CloudRead, CloudResult, CloudWrite, CreateEncryptedGroup,
    CreateUser, DnsRecord, Endpoint, GroupAuth, KmsKey, Node, NodeRole, ReplicationGroup,
    SecretVersion, Snapshot, User, UserGroup,
};

/// The change id a simulated DNS upsert returns (reported `INSYNC`).
const DRY_RUN_CHANGE: &str = "dry-run";

#[derive(Default)]
struct Overlay {
    snapshots: BTreeMap<String, Snapshot>,
    groups: BTreeMap<String, ReplicationGroup>,
    deleted_groups: BTreeSet<String>,
    aliases: BTreeMap<String, String>,
    secrets: BTreeMap<String, Secret>,
    users: BTreeMap<String, User>,
    user_groups: BTreeMap<String, UserGroup>,
    /// (zone, name) → record.
    dns: BTreeMap<(String, String), DnsRecord>,
}

pub struct DryRunCloud {
    real: Arc<dyn CloudRead>,
    overlay: Mutex<Overlay>,
}

impl DryRunCloud {
    pub fn new(real: Arc<dyn CloudRead>) -> Self {
        DryRunCloud {
            real,
            overlay: Mutex::new(Overlay::default()),
        }
    }

    fn overlay(&self) -> std::sync::MutexGuard<'_, Overlay> {
        self.overlay.lock().expect("overlay lock")
    }

    /// Whether `id` exists only in this rehearsal (so its data plane cannot be reached).
    pub fn is_simulated_group(&self, id: &str) -> bool {
        self.overlay().groups.contains_key(id)
    }
}

#[async_trait]
impl CloudRead for DryRunCloud {
    fn provider(&self) -> &'static str {
        self.real.provider()
    }

    async fn describe_group(&self, id: &str) -> CloudResult<Option<ReplicationGroup>> {
        {
            let overlay = self.overlay();
            if overlay.deleted_groups.contains(id) {
                return Ok(None);
            }
            if let Some(g) = overlay.groups.get(id) {
                return Ok(Some(g.clone()));
            }
        }
        self.real.describe_group(id).await
    }

    async fn list_groups(&self) -> CloudResult<Vec<ReplicationGroup>> {
        let mut groups = self.real.list_groups().await?;
        let overlay = self.overlay();
        groups.retain(|g| !overlay.deleted_groups.contains(&g.id));
        groups.extend(overlay.groups.values().cloned());
        Ok(groups)
    }

    async fn describe_snapshot(&self, name: &str) -> CloudResult<Option<Snapshot>> {
        if let Some(s) = self.overlay().snapshots.get(name) {
            return Ok(Some(s.clone()));
        }
        self.real.describe_snapshot(name).await
    }

    async fn list_snapshots(&self, group: Option<&str>) -> CloudResult<Vec<Snapshot>> {
        let mut snapshots = self.real.list_snapshots(group).await?;
        snapshots.extend(
            self.overlay()
                .snapshots
                .values()
                .filter(|s| group.is_none_or(|g| s.source_group == g))
                .cloned(),
        );
        Ok(snapshots)
    }

    async fn describe_key(&self, key_id: &str) -> CloudResult<Option<KmsKey>> {
        self.real.describe_key(key_id).await
    }

    async fn list_keys(&self) -> CloudResult<Vec<KmsKey>> {
        self.real.list_keys().await
    }

    fn default_kms_key(&self) -> Option<String> {
        self.real.default_kms_key()
    }

    async fn resolve_alias(&self, alias: &str) -> CloudResult<Option<String>> {
        if let Some(g) = self.overlay().aliases.get(alias) {
            return Ok(Some(g.clone()));
        }
        self.real.resolve_alias(alias).await
    }

    fn data_plane_ca(&self) -> Option<PathBuf> {
        self.real.data_plane_ca()
    }

    async fn key_rotation_enabled(&self, key: &str) -> CloudResult<Option<bool>> {
        self.real.key_rotation_enabled(key).await
    }
    async fn caller_identity(&self) -> CloudResult<Option<super::CallerIdentity>> {
        self.real.caller_identity().await
    }
    async fn dns_record(&self, zone: &str, name: &str) -> CloudResult<Option<DnsRecord>> {
        let simulated = self
            .overlay()
            .dns
            .get(&(zone.to_string(), super::dns_name_key(name)))
            .cloned();
        match simulated {
            Some(r) => Ok(Some(r)),
            None => self.real.dns_record(zone, name).await,
        }
    }

    async fn dns_change_status(&self, change_id: &str) -> CloudResult<String> {
        if change_id == DRY_RUN_CHANGE {
            return Ok("INSYNC".into());
        }
        self.real.dns_change_status(change_id).await
    }

    async fn describe_user(&self, user_id: &str) -> CloudResult<Option<User>> {
        let simulated = self
            .overlay()
            .users
            .get(&user_id.to_ascii_lowercase())
            .cloned();
        match simulated {
            Some(u) => Ok(Some(u)),
            None => self.real.describe_user(user_id).await,
        }
    }

    async fn describe_user_group(&self, id: &str) -> CloudResult<Option<UserGroup>> {
        let simulated = self.overlay().user_groups.get(id).cloned();
        match simulated {
            Some(g) => Ok(Some(g)),
            None => self.real.describe_user_group(id).await,
        }
    }

    async fn get_secret(&self, id: &str) -> CloudResult<Option<Secret>> {
        if let Some(s) = self.overlay().secrets.get(id) {
            return Ok(Some(s.clone()));
        }
        self.real.get_secret(id).await
    }

    async fn get_secret_version(
        &self,
        id: &str,
        stage: &str,
    ) -> CloudResult<Option<SecretVersion>> {
        self.real.get_secret_version(id, stage).await
    }
}

#[async_trait]
impl CloudWrite for DryRunCloud {
    async fn create_snapshot(
        &self,
        group: &str,
        name: &str,
        kms_key_id: Option<&str>,
    ) -> CloudResult<()> {
        self.overlay().snapshots.insert(
            name.to_string(),
            Snapshot {
                name: name.to_string(),
                source_group: group.to_string(),
                status: "available".into(),
                kms_key_id: kms_key_id.map(str::to_string),
                source: "manual".into(),
            },
        );
        Ok(())
    }

    async fn create_group_from_snapshot(&self, r: &CreateEncryptedGroup) -> CloudResult<()> {
        let endpoint = Endpoint {
            host: "(not created: dry run)".into(),
            port: r.port.unwrap_or(6379),
        };
        let group = ReplicationGroup {
            id: r.id.clone(),
            description: Some(r.description.clone()),
            status: "available".into(),
            engine: r.engine.clone(),
            engine_version: r.engine_version.clone(),
            at_rest_encryption_enabled: true,
            transit_encryption_enabled: true,
            transit_encryption_mode: Some(r.transit_encryption_mode.clone()),
            auth_token_enabled: matches!(r.auth, GroupAuth::Token(_)),
            user_group_ids: match &r.auth {
                GroupAuth::UserGroup(id) => vec![id.clone()],
                GroupAuth::Token(_) => vec![],
            },
            kms_key_id: r.kms_key_id.clone(),
            cache_node_type: r.cache_node_type.clone(),
            cluster_enabled: r.cluster_enabled,
            num_node_groups: r.num_node_groups,
            nodes_per_node_group: r.replicas_per_node_group + 1,
            // What the request asks for (`cloud::aws` turns failover on for a cluster only).
            automatic_failover_enabled: Some(r.cluster_enabled),
            multi_az_enabled: Some(false),
            primary_endpoint: Some(endpoint.clone()),
            reader_endpoint: None,
            nodes: vec![Node {
                id: format!("{}-001", r.id),
                role: NodeRole::Primary,
                endpoint,
                tls: true,
            }],
            cache_subnet_group_name: r.cache_subnet_group_name.clone(),
            security_group_ids: r.security_group_ids.clone(),
            cache_parameter_group_name: r.cache_parameter_group_name.clone(),
            port: r.port,
            preferred_maintenance_window: r.preferred_maintenance_window.clone(),
            snapshot_window: r.snapshot_window.clone(),
            tags: r.tags.clone(),
        };
        self.overlay().groups.insert(r.id.clone(), group);
        Ok(())
    }

    async fn delete_group(&self, id: &str) -> CloudResult<()> {
        let mut overlay = self.overlay();
        overlay.groups.remove(id);
        overlay.deleted_groups.insert(id.to_string());
        Ok(())
    }

    async fn upsert_cname(
        &self,
        zone: &str,
        name: &str,
        value: &str,
        ttl: u64,
    ) -> CloudResult<String> {
        self.overlay().dns.insert(
            (zone.to_string(), super::dns_name_key(name)),
            DnsRecord {
                record_type: "CNAME".into(),
                value: value.to_string(),
                ttl,
            },
        );
        Ok(DRY_RUN_CHANGE.into())
    }

    /// Never reaches the real cloud: the group as it is, in the new mode, in the overlay (so the rest of
    /// the rehearsal sees the change).
    async fn modify_transit(&self, group: &str, mode: &str) -> CloudResult<()> {
        let simulated = self.overlay().groups.get(group).cloned();
        let current = match simulated {
            Some(g) => Some(g),
            None => self.real.describe_group(group).await?,
        };
        let mut g = current.ok_or_else(|| CloudError::NotFound {
            what: "replication group",
            id: group.to_string(),
        })?;
        g.transit_encryption_enabled = true;
        g.transit_encryption_mode = Some(mode.to_string());
        self.overlay().groups.insert(group.to_string(), g);
        Ok(())
    }

    /// Never reaches the real cloud; the rehearsal of a rotation changes nothing the rest of it reads.
    async fn modify_auth_token(
        &self,
        _group: &str,
        _token: &Secret,
        _strategy: AuthTokenUpdate,
    ) -> CloudResult<()> {
        Ok(())
    }

    /// Never reaches the real cloud: the group as it is, with the user group and no token, in the overlay.
    async fn modify_to_user_group(&self, group: &str, user_group_id: &str) -> CloudResult<()> {
        let simulated = self.overlay().groups.get(group).cloned();
        let current = match simulated {
            Some(g) => Some(g),
            None => self.real.describe_group(group).await?,
        };
        let mut g = current.ok_or_else(|| CloudError::NotFound {
            what: "replication group",
            id: group.to_string(),
        })?;
        g.auth_token_enabled = false;
        g.user_group_ids = vec![user_group_id.to_string()];
        self.overlay().groups.insert(group.to_string(), g);
        Ok(())
    }

    /// The user, active, in the overlay; its passwords are not kept.
    async fn create_user(&self, r: &CreateUser) -> CloudResult<()> {
        self.overlay().users.insert(
            r.user_id.to_ascii_lowercase(),
            User {
                user_id: r.user_id.to_ascii_lowercase(),
                user_name: r.user_name.clone(),
                status: "active".into(),
                engine: r.engine.clone(),
                user_group_ids: vec![],
            },
        );
        Ok(())
    }

    async fn create_user_group(
        &self,
        id: &str,
        engine: &str,
        user_ids: &[String],
        _tags: &BTreeMap<String, String>,
    ) -> CloudResult<()> {
        self.overlay().user_groups.insert(
            id.to_string(),
            UserGroup {
                user_group_id: id.to_string(),
                status: "active".into(),
                engine: engine.to_string(),
                user_ids: user_ids.to_vec(),
                replication_groups: vec![],
            },
        );
        Ok(())
    }

    async fn point_alias(&self, alias: &str, group: &str) -> CloudResult<()> {
        self.overlay()
            .aliases
            .insert(alias.to_string(), group.to_string());
        Ok(())
    }

    async fn put_secret(
        &self,
        id: &str,
        value: &Secret,
        _tags: &BTreeMap<String, String>,
    ) -> CloudResult<()> {
        self.overlay().secrets.insert(id.to_string(), value.clone());
        Ok(())
    }

    async fn put_secret_pending(
        &self,
        _id: &str,
        _version_id: &str,
        _value: &Secret,
    ) -> CloudResult<()> {
        Ok(())
    }

    async fn move_secret_stage(
        &self,
        _id: &str,
        _stage: &str,
        _to: Option<&str>,
        _from: Option<&str>,
    ) -> CloudResult<()> {
        Ok(())
    }
}
