//! The control plane: what ecmigrate asks of ElastiCache and KMS, as traits with two real implementations
//! (`sandbox`: local redis-server processes; `aws`: the AWS SDK) and a dry-run wrapper.
//!
//! Reads and mutations are separate traits on purpose: the dry-run wrapper is built from a reader only, so
//! a rehearsal has no way to reach a mutating call of the real cloud.

pub mod aws;
pub mod dry_run;
#[cfg(any(test, feature = "test-hooks"))]
pub mod faults;
pub mod sandbox;

use std::collections::BTreeMap;
use std::path::PathBuf;

use async_trait::async_trait;
use serde::Serialize;

use crate::secret::Secret;

/// Errors any cloud can return. Provider-specific detail is flattened into `message`.
#[derive(Debug, thiserror::Error)]
pub enum CloudError {
    #[error("{what} `{id}` was not found")]
    NotFound { what: &'static str, id: String },
    #[error("{what} `{id}` already exists")]
    AlreadyExists { what: &'static str, id: String },
    #[error("{message}")]
    InvalidRequest { message: String },
    /// Throttling, 5xx, connection resets: worth retrying.
    #[error("transient error: {message}")]
    Transient { message: String },
    #[error("{message}")]
    Other { message: String },
}

impl CloudError {
    pub fn other(message: impl Into<String>) -> Self {
        CloudError::Other {
            message: message.into(),
        }
    }
    pub fn invalid(message: impl Into<String>) -> Self {
        CloudError::InvalidRequest {
            message: message.into(),
        }
    }
    pub fn is_transient(&self) -> bool {
        matches!(self, CloudError::Transient { .. })
    }
}

pub type CloudResult<T> = Result<T, CloudError>;

/// A `host:port` pair.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Endpoint {
    pub host: String,
    pub port: u16,
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.host, self.port)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum NodeRole {
    Primary,
    Replica,
}

#[derive(Debug, Clone, Serialize)]
pub struct Node {
    pub id: String,
    pub role: NodeRole,
    pub endpoint: Endpoint,
    pub tls: bool,
}

/// A replication group as `DescribeReplicationGroups` reports it, reduced to what ecmigrate uses.
#[derive(Debug, Clone, Serialize)]
pub struct ReplicationGroup {
    pub id: String,
    /// `ReplicationGroupDescription`; `None` when the cloud does not report one.
    pub description: Option<String>,
    /// `creating`, `available`, `modifying`, `deleting`, `create-failed`, `snapshotting`.
    pub status: String,
    pub engine: String,
    pub engine_version: String,
    pub at_rest_encryption_enabled: bool,
    pub transit_encryption_enabled: bool,
    pub transit_encryption_mode: Option<String>,
    pub auth_token_enabled: bool,
    /// `UserGroupIds`: the RBAC user groups of the group (empty without RBAC).
    pub user_group_ids: Vec<String>,
    pub kms_key_id: Option<String>,
    pub cache_node_type: String,
    pub cluster_enabled: bool,
    pub num_node_groups: u32,
    /// Nodes per node group, primary included.
    pub nodes_per_node_group: u32,
    /// `AutomaticFailover` is `enabled` (or `enabling`); `None` when the cloud does not report it.
    pub automatic_failover_enabled: Option<bool>,
    /// `MultiAZ` is `enabled`; `None` when the cloud does not report it.
    pub multi_az_enabled: Option<bool>,
    pub primary_endpoint: Option<Endpoint>,
    pub reader_endpoint: Option<Endpoint>,
    pub nodes: Vec<Node>,
    pub cache_subnet_group_name: Option<String>,
    pub security_group_ids: Vec<String>,
    pub cache_parameter_group_name: Option<String>,
    pub port: Option<u16>,
    pub preferred_maintenance_window: Option<String>,
    pub snapshot_window: Option<String>,
    pub tags: BTreeMap<String, String>,
}

impl ReplicationGroup {
    pub fn is_available(&self) -> bool {
        self.status == "available"
    }
    pub fn fully_encrypted(&self) -> bool {
        self.at_rest_encryption_enabled && self.transit_encryption_enabled
    }

    /// The attributes an auditor checks, named as DescribeReplicationGroups names them.
    pub fn encryption_attributes(&self) -> serde_json::Value {
        serde_json::json!({
            "ReplicationGroupId": self.id,
            "Status": self.status,
            "AtRestEncryptionEnabled": self.at_rest_encryption_enabled,
            "TransitEncryptionEnabled": self.transit_encryption_enabled,
            "TransitEncryptionMode": self.transit_encryption_mode,
            "AuthTokenEnabled": self.auth_token_enabled,
            "KmsKeyId": self.kms_key_id,
        })
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Snapshot {
    pub name: String,
    pub source_group: String,
    /// `creating`, `available`, `failed`, `deleting`.
    pub status: String,
    /// The key the snapshot is encrypted with; `None` = not encrypted.
    pub kms_key_id: Option<String>,
    /// `manual` or `automated`.
    pub source: String,
}

impl Snapshot {
    pub fn encrypted(&self) -> bool {
        self.kms_key_id.is_some()
    }
}

/// Everything CreateReplicationGroup needs to restore a snapshot into an encrypted group.
#[derive(Debug, Clone)]
pub struct CreateEncryptedGroup {
    pub id: String,
    pub description: String,
    pub snapshot_name: String,
    pub engine: String,
    pub engine_version: String,
    pub cache_node_type: String,
    pub cluster_enabled: bool,
    pub num_node_groups: u32,
    pub replicas_per_node_group: u32,
    /// `None` = the service-managed key.
    pub kms_key_id: Option<String>,
    pub transit_encryption_mode: String,
    pub auth: GroupAuth,
    pub cache_subnet_group_name: Option<String>,
    pub security_group_ids: Vec<String>,
    pub cache_parameter_group_name: Option<String>,
    pub port: Option<u16>,
    pub preferred_maintenance_window: Option<String>,
    pub snapshot_window: Option<String>,
    pub tags: BTreeMap<String, String>,
}

/// How a new group authenticates clients: an AUTH token (`AuthToken`), or RBAC users (`UserGroupIds`).
/// One or the other, never both: a group created with a user group has no token.
#[derive(Debug, Clone)]
pub enum GroupAuth {
    Token(Secret),
    UserGroup(String),
}

/// Everything CreateUser needs. `passwords` go to the cloud and nowhere else.
#[derive(Debug, Clone)]
pub struct CreateUser {
    pub user_id: String,
    pub user_name: String,
    /// `redis` or `valkey` (the API reference's options), the engine of the group it will serve.
    pub engine: String,
    pub access_string: String,
    pub passwords: Vec<Secret>,
    pub tags: BTreeMap<String, String>,
}

/// An RBAC user as DescribeUsers reports it.
#[derive(Debug, Clone, Serialize)]
pub struct User {
    pub user_id: String,
    pub user_name: String,
    /// `active`, `modifying`, `deleting`.
    pub status: String,
    pub engine: String,
    pub user_group_ids: Vec<String>,
}

/// An RBAC user group as DescribeUserGroups reports it.
#[derive(Debug, Clone, Serialize)]
pub struct UserGroup {
    pub user_group_id: String,
    /// `creating`, `active`, `modifying`, `deleting`.
    pub status: String,
    pub engine: String,
    pub user_ids: Vec<String>,
    pub replication_groups: Vec<String>,
}

/// A KMS key as `DescribeKey` reports it.
#[derive(Debug, Clone, Serialize)]
pub struct KmsKey {
    pub key_id: String,
    pub arn: String,
    /// `Enabled`, `Disabled`, `PendingDeletion`, ...
    pub key_state: String,
    /// `SYMMETRIC_DEFAULT`, `RSA_2048`, ...
    pub key_spec: String,
    /// `ENCRYPT_DECRYPT`, `SIGN_VERIFY`, ...
    pub key_usage: String,
    pub aliases: Vec<String>,
}

impl KmsKey {
    pub fn usable_for_elasticache(&self) -> Result<(), String> {
        if self.key_state != "Enabled" {
            return Err(format!("key state is {} (must be Enabled)", self.key_state));
        }
        if self.key_spec != "SYMMETRIC_DEFAULT" {
            return Err(format!(
                "key spec is {} (must be SYMMETRIC_DEFAULT)",
                self.key_spec
            ));
        }
        if self.key_usage != "ENCRYPT_DECRYPT" {
            return Err(format!(
                "key usage is {} (must be ENCRYPT_DECRYPT)",
                self.key_usage
            ));
        }
        Ok(())
    }
}

/// What a rehearsal and a run both read.
#[async_trait]
pub trait CloudRead: Send + Sync {
    /// `sandbox` or `aws`.
    fn provider(&self) -> &'static str;
    async fn describe_group(&self, id: &str) -> CloudResult<Option<ReplicationGroup>>;
    async fn list_groups(&self) -> CloudResult<Vec<ReplicationGroup>>;
    async fn describe_snapshot(&self, name: &str) -> CloudResult<Option<Snapshot>>;
    /// Snapshots taken of `group` (all snapshots when `None`).
    async fn list_snapshots(&self, group: Option<&str>) -> CloudResult<Vec<Snapshot>>;
    /// `key_id` may be an id, an ARN or `alias/NAME`; `None` when the key does not exist.
    async fn describe_key(&self, key_id: &str) -> CloudResult<Option<KmsKey>>;
    /// Customer managed keys with an alias (for the wizard to offer).
    async fn list_keys(&self) -> CloudResult<Vec<KmsKey>>;
    /// The key ElastiCache uses when a plan names none.
    fn default_kms_key(&self) -> Option<String>;
    /// The group an endpoint alias points at (sandbox DNS stand-in), `None` if there is no such alias.
    async fn resolve_alias(&self, alias: &str) -> CloudResult<Option<String>>;
    /// CA the target's data plane certificates chain to, when it is not a public one.
    fn data_plane_ca(&self) -> Option<PathBuf>;
    /// The value of a Secrets Manager secret (name or ARN); `None` when there is no such secret.
    async fn get_secret(&self, id: &str) -> CloudResult<Option<Secret>>;
    /// The version of a secret that carries the staging label `stage` (`AWSCURRENT`, `AWSPENDING`,
    /// `AWSPREVIOUS`); `None` when no version carries it (or there is no such secret).
    async fn get_secret_version(&self, id: &str, stage: &str)
    -> CloudResult<Option<SecretVersion>>;
    /// An RBAC user (DescribeUsers with `UserId`); `None` when there is none of that id.
    async fn describe_user(&self, user_id: &str) -> CloudResult<Option<User>>;
    /// An RBAC user group (DescribeUserGroups with `UserGroupId`); `None` when there is none.
    async fn describe_user_group(&self, id: &str) -> CloudResult<Option<UserGroup>>;
    /// A DNS record clients resolve (Route53): `None` when the zone has no record of that name.
    async fn dns_record(&self, zone: &str, name: &str) -> CloudResult<Option<DnsRecord>> {
        let _ = zone;
        Err(CloudError::other(format!(
            "DNS record `{name}`: Route53 is only reachable with `provider: aws`"
        )))
    }
    /// Whether the key (id or ARN, not an alias) rotates its material yearly; `None` where rotation is
    /// not modelled (sandbox).
    async fn key_rotation_enabled(&self, key: &str) -> CloudResult<Option<bool>> {
        let _ = key;
        Ok(None)
    }
    /// Who the credentials are (account, principal ARN); `None` where there is no such thing (sandbox).
    async fn caller_identity(&self) -> CloudResult<Option<CallerIdentity>> {
        Ok(None)
    }
    /// The status of a DNS change: `PENDING` or `INSYNC`.
    async fn dns_change_status(&self, change_id: &str) -> CloudResult<String> {
        Err(CloudError::other(format!(
            "DNS change `{change_id}`: Route53 is only reachable with `provider: aws`"
        )))
    }
}

pub use aws::account::CallerIdentity;

/// A DNS name as compared: without case and without the final dot.
pub(crate) fn dns_name_key(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

/// One version of a Secrets Manager secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretVersion {
    pub version_id: String,
    pub value: Secret,
}

/// Secrets Manager's staging labels.
pub const STAGE_CURRENT: &str = "AWSCURRENT";
pub const STAGE_PENDING: &str = "AWSPENDING";
pub const STAGE_PREVIOUS: &str = "AWSPREVIOUS";

/// `AuthTokenUpdateStrategy` of ModifyReplicationGroup, in the only order the API reference allows:
/// `ROTATE` adds the new token beside the old one, `SET` ("allowed only after ROTATE") keeps only it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthTokenUpdate {
    Rotate,
    Set,
}

impl AuthTokenUpdate {
    pub fn as_str(self) -> &'static str {
        match self {
            AuthTokenUpdate::Rotate => "ROTATE",
            AuthTokenUpdate::Set => "SET",
        }
    }
}

/// A DNS record as Route53 holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DnsRecord {
    /// `CNAME`, `A`, ...
    pub record_type: String,
    pub value: String,
    pub ttl: u64,
}

/// The mutating calls. Only the real clouds implement it; a dry run never holds one.
#[async_trait]
pub trait CloudWrite: Send + Sync {
    /// Take a manual snapshot of `group`, encrypted with `kms_key_id` when given.
    async fn create_snapshot(
        &self,
        group: &str,
        name: &str,
        kms_key_id: Option<&str>,
    ) -> CloudResult<()>;
    async fn create_group_from_snapshot(&self, request: &CreateEncryptedGroup) -> CloudResult<()>;
    /// Delete a group. There is deliberately no final-snapshot parameter: the final snapshot is taken
    /// beforehand, encrypted (safety invariant 6).
    async fn delete_group(&self, id: &str) -> CloudResult<()>;
    async fn point_alias(&self, alias: &str, group: &str) -> CloudResult<()>;
    /// In-transit encryption on an existing group, in place: ModifyReplicationGroup with
    /// `TransitEncryptionEnabled=true`, `TransitEncryptionMode=mode` (`preferred`, then `required`) and
    /// `ApplyImmediately=true`. The group goes `modifying`, then `available` in the new mode.
    async fn modify_transit(&self, group: &str, mode: &str) -> CloudResult<()>;
    /// The AUTH token of an existing group, in place: ModifyReplicationGroup with `AuthToken=token`,
    /// `AuthTokenUpdateStrategy=strategy` and `ApplyImmediately=true`.
    async fn modify_auth_token(
        &self,
        group: &str,
        token: &Secret,
        strategy: AuthTokenUpdate,
    ) -> CloudResult<()>;
    /// The move from AUTH to RBAC, in place: ModifyReplicationGroup `UserGroupIdsToAdd=[user_group_id]`,
    /// `AuthTokenUpdateStrategy=DELETE`, `ApplyImmediately=true` (DELETE is "allowed only when
    /// transitioning to RBAC"). The group goes `modifying`, then `available` with the user group.
    async fn modify_to_user_group(&self, group: &str, user_group_id: &str) -> CloudResult<()>;
    /// CreateUser.
    async fn create_user(&self, request: &CreateUser) -> CloudResult<()>;
    /// CreateUserGroup `id` of `engine` holding `user_ids`; the group goes `creating`, then `active`.
    async fn create_user_group(
        &self,
        id: &str,
        engine: &str,
        user_ids: &[String],
        tags: &BTreeMap<String, String>,
    ) -> CloudResult<()>;
    /// Create or replace the CNAME `name` in `zone` with `value`; returns the change id to wait on.
    async fn upsert_cname(
        &self,
        zone: &str,
        name: &str,
        value: &str,
        ttl: u64,
    ) -> CloudResult<String> {
        let _ = (zone, value, ttl);
        Err(CloudError::other(format!(
            "DNS record `{name}`: Route53 is only reachable with `provider: aws`"
        )))
    }
    /// Store `value` as the secret `id`: a new secret (with `tags`), or a new version of an existing one.
    async fn put_secret(
        &self,
        id: &str,
        value: &Secret,
        tags: &BTreeMap<String, String>,
    ) -> CloudResult<()>;
    /// A new version `version_id` of the existing secret `id`, labelled `AWSPENDING` only
    /// (PutSecretValue with `ClientRequestToken=version_id`: sent again, the same request is a no-op).
    async fn put_secret_pending(
        &self,
        id: &str,
        version_id: &str,
        value: &Secret,
    ) -> CloudResult<()>;
    /// UpdateSecretVersionStage: the label `stage` moved to version `to` (from `from`, the version that
    /// carries it now), or only removed from `from` when `to` is `None`. Moving `AWSCURRENT` labels the
    /// version it left `AWSPREVIOUS`.
    async fn move_secret_stage(
        &self,
        id: &str,
        stage: &str,
        to: Option<&str>,
        from: Option<&str>,
    ) -> CloudResult<()>;
}

/// A cloud a run can change.
pub trait Cloud: CloudRead + CloudWrite {}
impl<T: CloudRead + CloudWrite> Cloud for T {}
