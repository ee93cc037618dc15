//! What steps record in the ledger, as types: each step's intent (written before its mutating call and
//! read back by a resumed attempt) and the outputs that later steps, `status`, `rollback` and the report
//! read. The JSON they serialize to is the state file's format; absent fields stay absent.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::data::connect::ConnectedClient;
use crate::steps::live::StreamSummary;

/// `backup`: the snapshot name, before CreateSnapshot.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct BackupIntent {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot_name: Option<String>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct BackupOutputs {
    pub snapshot_name: String,
    pub kms_key_id: Option<String>,
    pub encrypted: bool,
}

/// The part of preflight's outputs later steps use: the KMS key it resolved (an ARN), and the source's
/// engine version (the target is created with it).
#[derive(Debug, Default, Deserialize)]
pub struct PreflightResolved {
    #[serde(default)]
    pub kms_key_id: Option<String>,
    #[serde(default)]
    pub source_engine_version: Option<String>,
}

/// The part of `restore_encrypted`'s outputs the Terraform hand-off reads: the group it made, its key as
/// the group reported it, and where its token is kept (a reference, never the token).
#[derive(Debug, Default, Deserialize)]
pub struct RestoreOutputs {
    #[serde(default)]
    pub target_id: Option<String>,
    #[serde(default)]
    pub kms_key_id: Option<String>,
    #[serde(default)]
    pub auth_token_store: Option<String>,
}

/// `restore_encrypted`: the target id before CreateReplicationGroup, and (RBAC) each user and the user
/// group before it is created.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct RestoreIntent {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_id: Option<String>,
    #[serde(flatten)]
    pub rbac: RbacIntent,
}

/// The RBAC users and user group a step (`restore_encrypted`, `migrate_to_rbac`) is about to create:
/// part of that step's intent (`StepContext::merge_intent`).
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct RbacIntent {
    /// Lowercase user ids, each recorded before its CreateUser.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub users: Vec<String>,
    /// Recorded before CreateUserGroup.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_group: Option<String>,
}

/// `migrate_to_rbac`: the RBAC part, and the modification once requested and once answered.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct MigrateRbacIntent {
    #[serde(flatten)]
    pub rbac: RbacIntent,
    #[serde(default)]
    pub modify_requested: bool,
    #[serde(default)]
    pub modify_accepted: bool,
}

/// The sample compared inside the cutover's fence, while both sides were still.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SpotCheck {
    pub keys_compared: u64,
    pub differing: u64,
}

/// The late writes counted after the switch.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LateWrites {
    pub tail_seconds: u64,
    pub late_changes: u64,
}

/// The source sealed after the cutover's tail: writes paused on its primaries until `until`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Sealed {
    /// The primaries paused.
    pub primaries: usize,
    /// The primaries that refused the pause (a partial seal).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub refused: usize,
    pub hours: u64,
    pub until: String,
    /// Keys changed on the source before the seal, copied once it held.
    pub keys_copied: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Sealed {
    /// How long the seal still holds by itself: `None` once `until` has passed (or cannot be read).
    pub fn time_left(&self) -> Option<std::time::Duration> {
        let until = chrono::DateTime::parse_from_rfc3339(&self.until).ok()?;
        (until.with_timezone(&chrono::Utc) - chrono::Utc::now())
            .to_std()
            .ok()
            .filter(|d| !d.is_zero())
    }

    /// Whether `until` has passed.
    pub fn ran_out(&self) -> bool {
        chrono::DateTime::parse_from_rfc3339(&self.until)
            .is_ok_and(|until| until < chrono::Utc::now())
    }
}

/// `cutover`'s outputs; recorded as the intent `switched` the moment the switch stands.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CutoverOutputs {
    pub strategy: String,
    /// The group clients use now.
    pub now: String,
    pub endpoint: crate::cloud::Endpoint,
    pub switch: Value,
    pub write_pause_ms: u64,
    pub max_write_pause_ms: u64,
    /// The source's primaries the fence paused together (every primary of a cluster).
    #[serde(default)]
    pub primaries_paused: usize,
    /// The capture's subscriptions (one per primary) whose in-band proof the fence had.
    #[serde(default)]
    pub subscriptions_proven: usize,
    pub fence_attempts: usize,
    pub attempts: Vec<Value>,
    pub released_by: Vec<String>,
    pub clients_disconnected: Vec<ConnectedClient>,
    pub keys_copied_in_fence: u64,
    pub verified_at_switch: Option<SpotCheck>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after_switch_error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub late: Option<LateWrites>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<StreamSummary>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resumed_after_switch: Option<bool>,
    /// The seal after the tail (none when the plan asks for none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sealed: Option<Sealed>,
    /// Added by `ecmigrate rollback`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rolled_back: Option<RollbackOutputs>,
}

/// `cutover`'s intent: the attempts so far, the switch once it stands, and a rollback's switch back.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct CutoverIntent {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attempts: Vec<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub switched: Option<CutoverOutputs>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollback_switched: Option<Value>,
    /// When a rollback lifted the seal on the source (recorded before the lift); cleared when a failed
    /// rollback sealed it again, or a resumed cutover sealed it anew.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seal_lifted_at: Option<String>,
    /// The seal as a failed rollback left it when it sealed the source again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resealed: Option<Sealed>,
}

impl CutoverIntent {
    /// The seal as it stands on record: as a failed rollback left it, else as the cutover recorded it
    /// (`finished`: in its outputs once done; else in this intent from the moment it held).
    pub fn seal_on_record(self, finished: Option<Sealed>) -> Option<Sealed> {
        self.resealed
            .or(finished)
            .or_else(|| self.switched.and_then(|s| s.sealed))
    }
}

/// What `ecmigrate rollback` did.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RollbackOutputs {
    pub now: String,
    pub switch: Value,
    pub write_pause_ms: u64,
    pub keys_copied_back: u64,
    pub keys_deleted_on_source: u64,
    pub late_changes: u64,
    pub clients_disconnected: Vec<ConnectedClient>,
    pub attempts: usize,
    /// Connections closed when the seal on the source was lifted (none: the plan had no seal).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seal_lifted: Option<usize>,
    pub rolled_back_at: String,
}

/// `delete_source`: the confirmation, the final snapshot's name, and the deletion, each before its call.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct DeleteSourceIntent {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub confirmed: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub final_snapshot_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deleting: Option<bool>,
    /// The clients a forced deletion went ahead with, recorded with the deletion for the report.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forced_with_clients: Option<Vec<ConnectedClient>>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct DeleteSourceOutputs {
    pub final_snapshot_name: String,
    pub deleted: String,
    /// The clients a forced deletion went ahead with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forced_with_clients: Option<Vec<ConnectedClient>>,
}

/// `enable_transit`: what was sent and decided, recorded before each mutation so a resumed run never
/// sends a modification again that the cloud already took.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct TransitIntent {
    /// The plain-text endpoint (`host:port`) clients used before: after `required` a connection to it
    /// must be refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plain_endpoint: Option<String>,
    /// ModifyReplicationGroup mode `preferred`: about to be sent (`requested`), answered (`accepted`).
    #[serde(default)]
    pub preferred_requested: bool,
    #[serde(default)]
    pub preferred_accepted: bool,
    /// What released the hold (`ecmigrate cutover`, the prompt, the flag file removed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub released_by: Option<String>,
    /// ModifyReplicationGroup mode `required`, as above.
    #[serde(default)]
    pub required_requested: bool,
    #[serde(default)]
    pub required_accepted: bool,
}

/// `enable_transit`'s outputs.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TransitOutputs {
    pub group_id: String,
    /// `required`.
    pub transit_encryption_mode: String,
    /// Where clients connect now, over TLS (`host:port`).
    pub tls_endpoint: String,
    /// The plain-text endpoint clients used before, and why a connection to it failed after `required`.
    pub plain_endpoint: String,
    pub plain_refused: String,
    pub released_by: String,
    /// What the cloud reported after the last modification (`TransitEncryptionEnabled`, `…Mode`).
    pub reported: serde_json::Value,
}

/// What `rotate_auth_token` has done, recorded before and after each change so a resumed run never
/// repeats one the cloud took.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RotationIntent {
    /// The new token's version id in Secrets Manager (the PutSecretValue `ClientRequestToken`), derived
    /// from the plan and the run, so a resumed run finds its own pending version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version_id: Option<String>,
    /// ModifyReplicationGroup `ROTATE`: about to be sent (`requested`), answered (`accepted`).
    #[serde(default)]
    pub rotate_requested: bool,
    #[serde(default)]
    pub rotate_accepted: bool,
    /// The new token's version made current in its store (the old one kept as the previous).
    #[serde(default)]
    pub promoted: bool,
    /// What released the hold.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub released_by: Option<String>,
    /// ModifyReplicationGroup `SET`, as above.
    #[serde(default)]
    pub set_requested: bool,
    #[serde(default)]
    pub set_accepted: bool,
    /// Why a connection with the old token failed after `SET`, recorded before the old token is
    /// removed from its store (a resumed run can no longer try it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub old_token_refused: Option<String>,
}

/// `rotate_auth_token`'s outputs. Tokens never appear: only their store.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RotationOutputs {
    pub group_id: String,
    /// Where the new (now only) token is kept, e.g. `secretsmanager:orders/auth`.
    pub token_store: String,
    /// The new token's version id in Secrets Manager (`None` for a file).
    pub version_id: Option<String>,
    pub released_by: String,
    /// Why a connection with the old token failed after `SET`.
    pub old_token_refused: String,
    /// What the cloud reported after the last modification.
    pub reported: serde_json::Value,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}
