//! `backup`: a manual snapshot of the source, encrypted with the target's KMS key (safety invariant 6).
//! The snapshot name is recorded before the call, so a resumed run waits for that snapshot.

use serde_json::json;

use crate::engine::{StepContext, StepOutcome};
use crate::error::Result;
use crate::plan::{BackupStep, StepKind};
use crate::steps::live::LiveStream;
use crate::steps::records::{BackupIntent, BackupOutputs, PreflightResolved};
use crate::steps::{cloud_error, plan_streams, require_group, timeout, wait_for_snapshot};

pub async fn run(ctx: &StepContext, spec: &BackupStep, live: &LiveStream) -> Result<StepOutcome> {
    let source_id = ctx.plan.plan.source.replication_group_id.clone();
    let name = match ctx.intent::<BackupIntent>().snapshot_name {
        Some(recorded) => recorded,
        None => spec
            .snapshot_name
            .clone()
            .unwrap_or_else(|| format!("{source_id}-ecmigrate-{}", ctx.run_id)),
    };
    let kms_key = encryption_key(ctx).await?;

    match ctx
        .cloud
        .describe_snapshot(&name)
        .await
        .map_err(|e| cloud_error("describing the snapshot", e))?
    {
        Some(existing) => {
            ctx.note(format!(
                "snapshot `{name}` was already requested; waiting for it"
            ));
            if plan_streams(&ctx.plan) && !ctx.dry_run() {
                let source = require_group(ctx, &source_id).await?;
                live.start_capture(ctx, &source, false).await?;
            }
            if existing.source_group != source_id {
                return Err(crate::error::Error::failed(
                    format!(
                        "snapshot `{name}` exists but belongs to `{}`",
                        existing.source_group
                    ),
                    "choose another backup.snapshot_name",
                ));
            }
        }
        None => {
            let source = require_group(ctx, &source_id).await?;
            // Changes are captured from before the snapshot, so none made after it is lost.
            if plan_streams(&ctx.plan) {
                if ctx.dry_run() {
                    ctx.note("would subscribe to the source's keyspace notifications before the snapshot");
                } else {
                    live.start_capture(ctx, &source, true).await?;
                }
            }
            ctx.record_intent(&BackupIntent {
                snapshot_name: Some(name.clone()),
            })?;
            ctx.call_labeled(
                "CreateSnapshot",
                json!({ "ReplicationGroupId": source_id, "SnapshotName": name, "KmsKeyId": kms_key }),
                &kms_label(ctx),
            );
            ctx.write
                .create_snapshot(&source_id, &name, kms_key.as_deref())
                .await
                .map_err(|e| cloud_error("CreateSnapshot", e))?;
        }
    }

    let snapshot = wait_for_snapshot(ctx, &name, timeout(spec.timeout_seconds)).await?;
    Ok(StepOutcome::done(&BackupOutputs {
        encrypted: snapshot.encrypted(),
        snapshot_name: snapshot.name,
        kms_key_id: snapshot.kms_key_id,
    }))
}

/// The plan's name for the key in a body's `KmsKeyId` (an alias, say, where the body has the ARN).
pub fn kms_label(ctx: &StepContext) -> Vec<(&'static str, String)> {
    crate::steps::kms_key_ref(ctx)
        .map(|k| ("KmsKeyId", k))
        .into_iter()
        .collect()
}

/// The key snapshots are sealed with: the one preflight resolved, else the plan's or the default.
pub async fn encryption_key(ctx: &StepContext) -> Result<Option<String>> {
    if let Some(arn) = ctx
        .outputs_of::<PreflightResolved>(StepKind::Preflight)
        .and_then(|o| o.kms_key_id)
    {
        return Ok(Some(arn));
    }
    match crate::steps::kms_key_ref(ctx) {
        None => Ok(None),
        Some(key) => match ctx
            .cloud
            .describe_key(&key)
            .await
            .map_err(|e| cloud_error("describing the KMS key", e))?
        {
            Some(k) => Ok(Some(k.arn)),
            None => Ok(Some(key)),
        },
    }
}
