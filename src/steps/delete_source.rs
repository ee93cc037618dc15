//! `delete_source`: only after cutover and a passed verify, and only with the operator's confirmation:
//! take a final snapshot encrypted with the target's key, then delete the source without an unencrypted
//! final snapshot (safety invariant 6).

use serde_json::json;

use crate::engine::{Poll, StepContext, wait_until};
use crate::error::{Error, Result};
use crate::plan::{DeleteSourceStep, StepKind};
use crate::steps::backup::encryption_key;
use crate::steps::{StepOutcome, cloud_error, obj, timeout, wait_for_snapshot};

pub async fn run(ctx: &StepContext, spec: &DeleteSourceStep) -> Result<StepOutcome> {
    let source_id = ctx.plan.plan.source.replication_group_id.clone();
    if !ctx.dry_run() && (!ctx.step_done(StepKind::Cutover) || !ctx.step_done(StepKind::Verify)) {
        return Err(Error::failed(
            "the source can only be deleted after a finished cutover and a passed verify",
            "run the plan's cutover and verify steps first",
        ));
    }
    let final_name = match ctx
        .intent("final_snapshot_name")
        .and_then(|v| v.as_str().map(str::to_string))
    {
        Some(n) => n,
        None => spec
            .final_snapshot_name
            .clone()
            .unwrap_or_else(|| format!("{source_id}-ecmigrate-final-{}", ctx.run_id)),
    };

    let source = ctx
        .cloud
        .describe_group(&source_id)
        .await
        .map_err(|e| cloud_error("describing the source", e))?;
    if source.is_none() && ctx.intent("deleting").is_some() {
        ctx.note(format!("`{source_id}` is already gone"));
        return Ok(done(&final_name, &source_id));
    }
    if source.is_none() {
        return Err(Error::failed(
            format!("source `{source_id}` does not exist"),
            "nothing to delete",
        ));
    }

    if !ctx.dry_run() && ctx.intent("confirmed").is_none() {
        let confirmed = if ctx.options.yes && spec.confirm.as_deref() == Some(source_id.as_str()) {
            true
        } else if ctx.options.interactive {
            ctx.prompter.confirm_typed(
                &format!("Type the source group id `{source_id}` to delete it (a final encrypted snapshot is kept)"),
                &source_id,
            )?
        } else {
            false
        };
        if !confirmed {
            return Err(Error::failed(
                format!("deleting `{source_id}` was not confirmed"),
                format!(
                    "type the group id at the prompt, or add `confirm: {source_id}` to the step and pass --yes"
                ),
            ));
        }
        ctx.record_intent("confirmed", json!(true))?;
    }

    // The final snapshot, encrypted with the target's key.
    let kms_key = encryption_key(ctx).await?;
    if ctx
        .cloud
        .describe_snapshot(&final_name)
        .await
        .map_err(|e| cloud_error("describing the final snapshot", e))?
        .is_none()
    {
        ctx.record_intent("final_snapshot_name", json!(final_name))?;
        ctx.call("CreateSnapshot", json!({ "ReplicationGroupId": source_id, "SnapshotName": final_name, "KmsKeyId": kms_key }));
        ctx.write
            .create_snapshot(&source_id, &final_name, kms_key.as_deref())
            .await
            .map_err(|e| cloud_error("CreateSnapshot (final)", e))?;
    }
    let snapshot = wait_for_snapshot(ctx, &final_name, timeout(None)).await?;
    if !snapshot.encrypted() {
        return Err(Error::failed(
            format!(
                "the final snapshot `{final_name}` is not encrypted; the source was not deleted"
            ),
            "check the KMS key; an unencrypted copy must not be left behind",
        ));
    }

    ctx.record_intent("deleting", json!(true))?;
    ctx.call(
        "DeleteReplicationGroup",
        json!({ "ReplicationGroupId": source_id, "RetainPrimaryCluster": false }),
    );
    ctx.write
        .delete_group(&source_id)
        .await
        .map_err(|e| cloud_error("DeleteReplicationGroup", e))?;
    wait_until(
        ctx,
        &format!("deletion of {source_id}"),
        timeout(None),
        || async {
            Ok(match ctx.cloud.describe_group(&source_id).await? {
                None => Poll::Ready(()),
                // Deletion is under way and cannot be undone; the group is no longer usable.
                Some(g) if g.status == "deleting" => Poll::Ready(()),
                Some(g) => Poll::Pending(g.status),
            })
        },
    )
    .await?;
    Ok(done(&final_name, &source_id))
}

fn done(final_name: &str, source_id: &str) -> super::StepOutcome {
    StepOutcome::done(obj(vec![
        ("final_snapshot_name", json!(final_name)),
        ("deleted", json!(source_id)),
    ]))
}
