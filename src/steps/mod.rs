//! One file per step kind, and the [`Steps`] runner the engine drives them through. Each step is idempotent
//! on resume: it records its intent before a mutating call and, when run again, finds what it already
//! created and waits for it instead of creating a second one. Steps reach the control plane only through
//! `cloud` traits and the data plane only through `data`; what they record is typed in [`records`].

pub mod access;
pub mod auth;
pub mod backup;
pub mod cutover;
pub mod delete_source;
pub mod enable_transit;
pub mod endpoints;
pub mod hold;
pub mod iam;
pub mod live;
pub mod migrate_to_rbac;
pub mod preflight;
pub mod rbac;
pub mod records;
pub mod restore_encrypted;
pub mod rotate_auth_token;
pub mod stream_copy;
pub mod switch;
pub mod verify;

use serde_json::{Map, Value};

use crate::engine::{RunOptions, StepContext, StepOutcome, StepRunner};
use crate::error::{Error, Result};
use crate::plan::{LoadedPlan, StepSpec};

pub use access::{
    DEFAULT_TIMEOUT, cloud_error, kms_key_ref, require_group, timeout, wait_for_snapshot,
    wait_group_available,
};
pub use auth::{
    Login, SecretKind, TargetSecret, keep_token, load_login, rbac_secrets, read_token, store_of,
    target_secrets, token_store,
};
pub use endpoints::{source_data_endpoint, target_data_endpoint};
use live::LiveStream;

/// The steps of one run, as the engine sees them. It owns the run's change stream.
#[derive(Default)]
pub struct Steps {
    live: LiveStream,
}

#[async_trait::async_trait]
impl StepRunner for Steps {
    fn check_plan(&self, plan: &LoadedPlan, options: &RunOptions) -> Result<()> {
        confirmations_possible(plan, options)
    }

    async fn run_step(&self, spec: &StepSpec, ctx: &StepContext) -> Result<StepOutcome> {
        let live = &self.live;
        match spec {
            StepSpec::Preflight(s) => preflight::run(ctx, s).await,
            StepSpec::EnableTransit(s) => enable_transit::run(ctx, s).await,
            StepSpec::RotateAuthToken(s) => rotate_auth_token::run(ctx, s).await,
            StepSpec::MigrateToRbac(s) => migrate_to_rbac::run(ctx, s).await,
            StepSpec::Backup(s) => backup::run(ctx, s, live).await,
            StepSpec::RestoreEncrypted(s) => restore_encrypted::run(ctx, s).await,
            StepSpec::StreamCopy(s) => stream_copy::run(ctx, s, live).await,
            StepSpec::Verify(s) => verify::run(ctx, s, live).await,
            StepSpec::Cutover(s) => cutover::run(ctx, s, live).await,
            StepSpec::DeleteSource(s) => delete_source::run(ctx, s).await,
        }
    }

    async fn finish(&self) {
        self.live.shutdown().await;
    }
}

pub fn obj(pairs: Vec<(&str, Value)>) -> Map<String, Value> {
    pairs.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
}

/// Refused before anything runs: steps that need a confirmation that cannot be given (no terminal, and
/// no `--yes` with `confirm:`).
pub fn confirmations_possible(plan: &LoadedPlan, options: &RunOptions) -> Result<()> {
    if options.interactive || options.dry_run {
        return Ok(());
    }
    for spec in &plan.plan.steps {
        match spec {
            StepSpec::DeleteSource(d)
                if !options.yes
                    || d.confirm.as_deref()
                        != Some(plan.plan.source.replication_group_id.as_str()) =>
            {
                return Err(Error::usage(
                    "`delete_source` needs a confirmation and there is no terminal to ask on",
                    format!(
                        "add `confirm: {}` to the delete_source step and pass --yes, or run from a terminal",
                        plan.plan.source.replication_group_id
                    ),
                ));
            }
            StepSpec::Cutover(c)
                if c.strategy == crate::plan::CutoverStrategy::Manual && !options.yes =>
            {
                return Err(Error::usage(
                    "the `manual` cutover asks the operator to confirm the switch and there is no terminal",
                    "run from a terminal, or pass --yes once the clients have been repointed",
                ));
            }
            _ => {}
        }
    }
    Ok(())
}

/// Whether the plan streams changes (has a `stream_copy` step).
pub fn plan_streams(plan: &LoadedPlan) -> bool {
    plan.plan
        .steps
        .iter()
        .any(|s| matches!(s, StepSpec::StreamCopy(_)))
}

/// What to change when keyspace notifications are off.
pub const NOTIFICATIONS_FIX: &str = "set notify-keyspace-events to `KEA` on the source (on ElastiCache: in a custom \
    parameter group attached to the group; self-managed: CONFIG SET notify-keyspace-events KEA), or remove the \
    stream_copy step and stop writes before the backup";
