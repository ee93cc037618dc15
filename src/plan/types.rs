//! The version-1 plan schema as serde types. Unknown fields are errors everywhere.

use std::collections::BTreeMap;
use std::path::PathBuf;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Plan {
    /// Plan format version; only 1 exists.
    pub version: u32,
    /// Name of the migration; state lives in `<state-dir>/<name>/`, so it must be a plain folder name.
    pub name: String,
    #[serde(default)]
    pub provider: Provider,
    /// AWS settings; only with `provider: aws`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aws: Option<AwsSettings>,
    pub source: SourceSpec,
    /// The new encrypted group. Left out, the plan changes the source in place: it may then only list
    /// `preflight`, `enable_transit` and `rotate_auth_token`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<TargetSpec>,
    pub steps: Vec<StepSpec>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Provider {
    /// The embedded sandbox of local redis-server processes.
    #[default]
    Sandbox,
    /// Amazon ElastiCache and KMS through the AWS SDK.
    Aws,
}

impl Provider {
    pub fn as_str(self) -> &'static str {
        match self {
            Provider::Sandbox => "sandbox",
            Provider::Aws => "aws",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AwsSettings {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SourceSpec {
    pub replication_group_id: String,
    /// `host:port` to reach the source's data plane (for example through a tunnel).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_endpoint: Option<String>,
    /// A client certificate (PEM) to present over TLS, for endpoints that require one; with
    /// `tls_client_key`; relative to the plan's folder.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_client_cert: Option<PathBuf>,
    /// The client certificate's private key (PEM), with `tls_client_cert`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_client_key: Option<PathBuf>,
    /// A private CA (PEM) for TLS to the source once `enable_transit` turned it on (ElastiCache's
    /// certificates chain to public roots; a tunnel or a test may need another); relative to the plan's
    /// folder. Only in a plan without `target`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_ca_file: Option<PathBuf>,
    /// Where the source's current AUTH token is kept (`file` or `secrets_manager`), for
    /// `rotate_auth_token`: the new token is generated into the same store, as a pending version first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_token: Option<AuthTokenSpec>,
    /// The RBAC users and user group `migrate_to_rbac` creates and moves the source to (the AUTH token
    /// is deleted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<TargetAuth>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum TransitEncryptionMode {
    /// Only TLS connections are accepted.
    #[default]
    Required,
    /// TLS and plain connections are both accepted.
    Preferred,
}

impl TransitEncryptionMode {
    pub fn as_str(self) -> &'static str {
        match self {
            TransitEncryptionMode::Required => "required",
            TransitEncryptionMode::Preferred => "preferred",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TargetSpec {
    pub replication_group_id: String,
    /// KMS key id, ARN or `alias/NAME`; absent = the service-managed key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kms_key_id: Option<String>,
    #[serde(default)]
    pub transit_encryption_mode: TransitEncryptionMode,
    /// Where the AUTH token comes from. The plan never holds the token itself. Exactly one of
    /// `auth_token` and `auth.rbac`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_token: Option<AuthTokenSpec>,
    /// Role-based access control instead of an AUTH token: users and a user group created before the
    /// group, which is created with `UserGroupIds` (never with `AuthToken`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<TargetAuth>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_node_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub num_cache_clusters: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub num_node_groups: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas_per_node_group: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_subnet_group_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub security_group_ids: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_parameter_group_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags: Option<BTreeMap<String, String>>,
    /// `host:port` to reach the target's data plane (for example through a tunnel).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_endpoint: Option<String>,
    /// A private CA (PEM) for TLS to the target's data plane; relative to the plan's folder.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_ca_file: Option<PathBuf>,
    /// A client certificate (PEM) to present to the target's data plane; with `tls_client_key`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_client_cert: Option<PathBuf>,
    /// The client certificate's private key (PEM), with `tls_client_cert`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_client_key: Option<PathBuf>,
}

/// How clients authenticate to the target besides `auth_token`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TargetAuth {
    pub rbac: RbacSpec,
}

/// ElastiCache RBAC for the target: the users to create (each password kept in a token store, never in
/// the plan), the user group holding them, and the user the data plane (copy, verify, cutover) signs in
/// as.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RbacSpec {
    /// The user group created for the target (CreateUserGroup), then named in `UserGroupIds`.
    pub user_group_id: String,
    /// The users created and put in the group; one must be named `default`.
    pub users: Vec<RbacUser>,
    /// The `user_id` of the user ecmigrate's data plane signs in as (it needs read and write on every
    /// key: the copy writes them all).
    pub data_plane_user: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RbacUser {
    /// CreateUser `UserId`: unique in the account and region.
    pub user_id: String,
    /// The name clients sign in with (`AUTH NAME PASSWORD`).
    pub user_name: String,
    /// The Redis ACL rules of the user, for example `on ~* +@all`; without passwords (they come from
    /// `password`).
    pub access_string: String,
    /// Where the user's password is kept: a store like `auth_token`'s (`generate: true` creates it).
    pub password: AuthTokenSpec,
}

/// A token-protected source moved to RBAC in place (a plan without `target`), as AWS documents the move
/// from AUTH: `source.auth.rbac`'s users and user group created, then ModifyReplicationGroup
/// `UserGroupIdsToAdd=[group]` with `AuthTokenUpdateStrategy=DELETE`; afterwards the data plane user signs
/// in and the token alone no longer does (unless the plan's default user has it as its password).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MigrateToRbacStep {
    /// Give up waiting for the users, the user group and the modification after this many seconds
    /// (60..=86400, default 3600).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_seconds: Option<u64>,
}

impl TargetSpec {
    /// The target's RBAC settings, when it uses a user group instead of an AUTH token.
    pub fn rbac(&self) -> Option<&RbacSpec> {
        self.auth.as_ref().map(|a| &a.rbac)
    }

    /// Every secret store of the target: its AUTH token's, or each RBAC user's password's.
    pub fn secret_specs(&self) -> Vec<&AuthTokenSpec> {
        let users = self.rbac().into_iter().flat_map(|r| &r.users);
        self.auth_token
            .iter()
            .chain(users.map(|u| &u.password))
            .collect()
    }
}

impl RbacSpec {
    /// The user the data plane signs in as (validation checked it is listed).
    pub fn data_plane(&self) -> Option<&RbacUser> {
        self.users
            .iter()
            .find(|u| u.user_id.eq_ignore_ascii_case(&self.data_plane_user))
    }
}

/// Where the AUTH token lives. Exactly one of `file` / `env` / `secrets_manager`; `generate: true` needs
/// `file` or `secrets_manager`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AuthTokenSpec {
    /// Generate a new token and keep it in `file` (written with mode 0600).
    #[serde(default)]
    pub generate: bool,
    /// File holding the token (relative to the plan's folder).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<PathBuf>,
    /// Environment variable holding an existing token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<String>,
    /// AWS Secrets Manager secret (name or ARN) holding the token, or receiving a generated one. In the
    /// sandbox, its stand-in keeps secrets in 0600 files under the sandbox folder.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secrets_manager: Option<String>,
}

/// One step of the plan, tagged by `kind`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum StepSpec {
    Preflight(PreflightStep),
    EnableTransit(EnableTransitStep),
    RotateAuthToken(RotateAuthTokenStep),
    MigrateToRbac(MigrateToRbacStep),
    Backup(BackupStep),
    RestoreEncrypted(RestoreEncryptedStep),
    StreamCopy(StreamCopyStep),
    Verify(VerifyStep),
    Cutover(CutoverStep),
    DeleteSource(DeleteSourceStep),
}

impl StepSpec {
    pub fn kind(&self) -> StepKind {
        match self {
            StepSpec::Preflight(_) => StepKind::Preflight,
            StepSpec::EnableTransit(_) => StepKind::EnableTransit,
            StepSpec::RotateAuthToken(_) => StepKind::RotateAuthToken,
            StepSpec::MigrateToRbac(_) => StepKind::MigrateToRbac,
            StepSpec::Backup(_) => StepKind::Backup,
            StepSpec::RestoreEncrypted(_) => StepKind::RestoreEncrypted,
            StepSpec::StreamCopy(_) => StepKind::StreamCopy,
            StepSpec::Verify(_) => StepKind::Verify,
            StepSpec::Cutover(_) => StepKind::Cutover,
            StepSpec::DeleteSource(_) => StepKind::DeleteSource,
        }
    }
}

/// Step kinds in the only order a plan may list them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepKind {
    Preflight,
    EnableTransit,
    RotateAuthToken,
    MigrateToRbac,
    Backup,
    RestoreEncrypted,
    StreamCopy,
    Verify,
    Cutover,
    DeleteSource,
}

impl StepKind {
    /// Every kind, in the only order a plan may list them.
    pub const ALL: [StepKind; 10] = [
        StepKind::Preflight,
        StepKind::EnableTransit,
        StepKind::RotateAuthToken,
        StepKind::MigrateToRbac,
        StepKind::Backup,
        StepKind::RestoreEncrypted,
        StepKind::StreamCopy,
        StepKind::Verify,
        StepKind::Cutover,
        StepKind::DeleteSource,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            StepKind::Preflight => "preflight",
            StepKind::EnableTransit => "enable_transit",
            StepKind::RotateAuthToken => "rotate_auth_token",
            StepKind::MigrateToRbac => "migrate_to_rbac",
            StepKind::Backup => "backup",
            StepKind::RestoreEncrypted => "restore_encrypted",
            StepKind::StreamCopy => "stream_copy",
            StepKind::Verify => "verify",
            StepKind::Cutover => "cutover",
            StepKind::DeleteSource => "delete_source",
        }
    }
}

impl std::fmt::Display for StepKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PreflightStep {}

/// In-transit encryption switched on in place (a plan without `target`): mode `preferred` (plain and TLS
/// together), a hold while the clients move to TLS, then mode `required` (TLS only).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EnableTransitStep {
    /// Also hold while this file exists (relative to the plan's folder); the hold is always released by
    /// `ecmigrate cutover PLAN` or the prompt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub postpone_flag_file: Option<String>,
    /// Give up waiting for each modification after this many seconds (60..=86400, default 3600).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_seconds: Option<u64>,
}

/// The source's AUTH token rotated in place (a plan without `target`), in the order the ElastiCache API
/// reference gives: a new token generated into `source.auth_token`'s store as a pending version;
/// ModifyReplicationGroup `AuthTokenUpdateStrategy=ROTATE` (old and new both open the group); the new
/// version made current; a hold while the clients move to it; then `SET` (only the new one opens it).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RotateAuthTokenStep {
    /// Also hold while this file exists (relative to the plan's folder); the hold is always released by
    /// `ecmigrate cutover PLAN` or the prompt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub postpone_flag_file: Option<String>,
    /// Give up waiting for each modification after this many seconds (60..=86400, default 3600).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_seconds: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BackupStep {
    /// Default `<source>-ecmigrate-<run id>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot_name: Option<String>,
    /// Give up waiting for the snapshot after this many seconds (60..=86400, default 3600).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_seconds: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RestoreEncryptedStep {
    /// Give up waiting for the new group after this many seconds (60..=86400, default 3600).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_seconds: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StreamCopyStep {}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct VerifyStep {
    /// Number of keys sampled per database (1..=1000000, default 1000). Not with `full: true`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sample: Option<u64>,
    /// Compare every key.
    #[serde(default)]
    pub full: bool,
    /// TTLs may differ by this many milliseconds (0..=600000, default 5000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_tolerance_ms: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum CutoverStrategy {
    /// Repoint a sandbox endpoint alias (`alias` field).
    SandboxAlias,
    /// Print what to change and wait for the operator's confirmation.
    Manual,
    /// Upsert a Route53 CNAME (`hosted_zone_id`, `record_name`) to the target's primary endpoint.
    Route53,
    /// Run the operator's `command` with the new endpoint in its environment.
    Command,
}

impl CutoverStrategy {
    pub fn as_str(self) -> &'static str {
        match self {
            CutoverStrategy::SandboxAlias => "sandbox_alias",
            CutoverStrategy::Manual => "manual",
            CutoverStrategy::Route53 => "route53",
            CutoverStrategy::Command => "command",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CutoverStep {
    pub strategy: CutoverStrategy,
    /// The sandbox alias to repoint (strategy `sandbox_alias` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alias: Option<String>,
    /// The Route53 hosted zone of the record (strategy `route53` only), e.g. `Z0123456789ABCDEFGHIJ`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hosted_zone_id: Option<String>,
    /// The CNAME clients resolve (strategy `route53` only), e.g. `orders.cache.example.com`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub record_name: Option<String>,
    /// The switch command (strategy `command` only), run by `sh -c` with `ECMIGRATE_NEW_ENDPOINT`,
    /// `ECMIGRATE_NEW_READER_ENDPOINT`, `ECMIGRATE_PORT`, `ECMIGRATE_TLS` and `ECMIGRATE_TOKEN_REF` set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<String>,
    /// Hold before the switch until released (`ecmigrate cutover PLAN`, or a prompt on a terminal).
    #[serde(default)]
    pub postpone: bool,
    /// Hold before the switch while this file exists (relative to the plan's folder).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub postpone_flag_file: Option<String>,
    /// Longest write pause on the source (100..=30000 ms, default 3000); past it the fence is lifted and
    /// retried.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_write_pause_ms: Option<u64>,
    /// Fence attempts before the step fails (1..=20, default 5).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fence_attempts: Option<u32>,
    /// After the switch, keep copying the source's changes for the record's TTL plus this long (0..=3600 s,
    /// default 10), for clients that still hold the old address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grace_seconds: Option<u64>,
    /// After that tail, keep writes paused on every primary of the source (`CLIENT PAUSE WRITE`) for this
    /// long (0..=168 h, default 24; 0: never), so that a client still on the old nodes waits and fails
    /// instead of writing where nothing copies any more. Lifted by `ecmigrate rollback`; delete_source
    /// ends it with the group.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seal_source_hours: Option<u64>,
    /// Close the application's connections to the source inside the fence, so they reconnect to the new
    /// endpoint (default true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disconnect_clients: Option<bool>,
    /// A command run just before the fence (same environment as `command`); a failure holds the cutover.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub before_switch: Option<String>,
    /// A command run after the switch (same environment); a failure is reported, the switch stands.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after_switch: Option<String>,
}

impl Plan {
    /// The new group. Only for steps and commands of a plan that has one: validation refuses every step
    /// but `preflight` and `enable_transit` in a plan without `target`, and the commands that need a target
    /// check [`Plan::is_in_place`] first.
    pub fn target(&self) -> &TargetSpec {
        self.target
            .as_ref()
            .expect("a plan without `target` only runs in-place steps (checked by validation)")
    }

    /// The plan changes the source in place (no `target`).
    pub fn is_in_place(&self) -> bool {
        self.target.is_none()
    }

    /// The `enable_transit` step and its index, if the plan has one.
    pub fn enable_transit_step(&self) -> Option<(usize, &EnableTransitStep)> {
        self.steps.iter().enumerate().find_map(|(i, s)| match s {
            StepSpec::EnableTransit(e) => Some((i, e)),
            _ => None,
        })
    }

    /// The first in-place step that holds for the operator (`enable_transit`, `rotate_auth_token`) at or
    /// after step `from`, with its index and its hold's flag file.
    pub fn in_place_hold_step(&self, from: usize) -> Option<(usize, StepKind, Option<&str>)> {
        self.steps
            .iter()
            .enumerate()
            .skip(from)
            .find_map(|(i, s)| match s {
                StepSpec::EnableTransit(e) => {
                    Some((i, StepKind::EnableTransit, e.postpone_flag_file.as_deref()))
                }
                StepSpec::RotateAuthToken(r) => Some((
                    i,
                    StepKind::RotateAuthToken,
                    r.postpone_flag_file.as_deref(),
                )),
                _ => None,
            })
    }

    /// The cutover step and its index, if the plan has one.
    pub fn cutover_step(&self) -> Option<(usize, &CutoverStep)> {
        self.steps.iter().enumerate().find_map(|(i, s)| match s {
            StepSpec::Cutover(c) => Some((i, c)),
            _ => None,
        })
    }
}

impl CutoverStep {
    pub fn max_write_pause(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.max_write_pause_ms.unwrap_or(3000))
    }
    pub fn fence_attempts(&self) -> u32 {
        self.fence_attempts.unwrap_or(5)
    }
    pub fn grace(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.grace_seconds.unwrap_or(10))
    }
    pub fn disconnect_clients(&self) -> bool {
        self.disconnect_clients.unwrap_or(true)
    }
    /// How long the source stays sealed after the tail; none when the plan says 0.
    pub fn seal(&self) -> Option<std::time::Duration> {
        match self.seal_source_hours.unwrap_or(24) {
            0 => None,
            hours => Some(std::time::Duration::from_secs(hours * 3600)),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DeleteSourceStep {
    /// Default `<source>-ecmigrate-final-<run id>`; taken encrypted with the target's key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub final_snapshot_name: Option<String>,
    /// The source's id, typed out: required to delete without a TTY (with `--yes`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub confirm: Option<String>,
    /// Wait this long (0..=86400 s, default 300) for clients other than ecmigrate's to leave the source.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drain_timeout_seconds: Option<u64>,
    /// Delete even while other clients are connected (recorded as a warning in the report).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub force: bool,
}
