//! `delete_source`: only after cutover and a passed verify, and only with the operator's confirmation:
//! take a final snapshot encrypted with the target's key, then delete the source without an unencrypted
//! final snapshot (safety invariant 6).

use serde_json::json;

use crate::engine::events::labels::FINAL_SNAPSHOT;
use crate::engine::{StepContext, StepOutcome};
use crate::error::{Error, Result};
use crate::plan::{DeleteSourceStep, StepKind};
use crate::steps::access::{Deleted, delete_group_and_wait};
use crate::steps::backup::{encryption_key, kms_label};
use crate::steps::records::{CutoverOutputs, DeleteSourceIntent, DeleteSourceOutputs};
use crate::steps::{cloud_error, timeout, wait_for_snapshot};

pub async fn run(ctx: &StepContext, spec: &DeleteSourceStep) -> Result<StepOutcome> {
    let source_id = ctx.plan.plan.source.replication_group_id.clone();
    if !ctx.dry_run() {
        check_cut_over_and_verified(ctx)?;
    }
    let mut intent: DeleteSourceIntent = ctx.intent();
    let final_name = match intent.final_snapshot_name.clone() {
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
    if intent.deleting.is_some() {
        // The deletion was requested by an earlier attempt: finish it. Nothing is checked again (the
        // source's nodes may already be gone), and nothing is asked again.
        ctx.note(format!(
            "the deletion of `{source_id}` was requested by an earlier attempt; finishing it"
        ));
        let requested = source.as_ref().is_none_or(|g| g.status == "deleting");
        delete_group_and_wait(
            ctx,
            &source_id,
            !requested,
            Deleted::Underway,
            Some(&final_name),
        )
        .await?;
        let forced = intent.forced_with_clients.take();
        return Ok(done(&final_name, &source_id, forced));
    }
    if source.is_none() {
        return Err(Error::failed(
            format!("source `{source_id}` does not exist"),
            "nothing to delete",
        ));
    }

    if !ctx.dry_run() && intent.confirmed.is_none() {
        confirm(ctx, spec, &source_id)?;
        intent.confirmed = Some(true);
        ctx.record_intent(&intent)?;
    }

    // Nobody but us may still be using the source.
    let forced = drain_clients(ctx, spec, source.as_ref().expect("checked above")).await?;

    // The final snapshot, encrypted with the target's key.
    let kms_key = encryption_key(ctx).await?;
    if ctx
        .cloud
        .describe_snapshot(&final_name)
        .await
        .map_err(|e| cloud_error("describing the final snapshot", e))?
        .is_none()
    {
        intent.final_snapshot_name = Some(final_name.clone());
        ctx.record_intent(&intent)?;
        let mut labels = kms_label(ctx);
        labels.push((FINAL_SNAPSHOT, final_name.clone()));
        ctx.call_labeled(
            "CreateSnapshot",
            json!({ "ReplicationGroupId": source_id, "SnapshotName": final_name, "KmsKeyId": kms_key }),
            &labels,
        );
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

    // The report carries them: the source was deleted while these clients still used it.
    let forced = (!forced.is_empty()).then_some(forced);
    intent.deleting = Some(true);
    intent.forced_with_clients = forced.clone();
    ctx.record_intent(&intent)?;
    delete_group_and_wait(ctx, &source_id, true, Deleted::Underway, Some(&final_name)).await?;
    Ok(done(&final_name, &source_id, forced))
}

/// Wait (up to `drain_timeout_seconds`) until no client other than ecmigrate's is connected to any node of
/// the source (its primary and replicas; every primary and replica of a cluster, readers included); refuse
/// after that, unless `force`. Returns the clients a forced deletion went ahead with.
async fn drain_clients(
    ctx: &StepContext,
    spec: &DeleteSourceStep,
    source: &crate::cloud::ReplicationGroup,
) -> Result<Vec<crate::data::connect::ConnectedClient>> {
    let endpoint = crate::steps::source_data_endpoint(ctx, source)?;
    let limit = std::time::Duration::from_secs(spec.drain_timeout_seconds.unwrap_or(300));
    let started = std::time::Instant::now();
    let describe = |c: &[crate::data::connect::ConnectedClient]| {
        c.iter()
            .map(|c| {
                format!(
                    "{} (name `{}`, connected {} s, last command `{}`)",
                    c.addr, c.name, c.age_seconds, c.last_command
                )
            })
            .collect::<Vec<_>>()
            .join("; ")
    };
    loop {
        let clients = clients_of_every_node(&endpoint).await.map_err(|e| {
            Error::failed(
                e,
                "check that the source's data plane is reachable (source.data_endpoint)",
            )
        })?;
        if clients.is_empty() {
            ctx.check(
                "clients_drained",
                true,
                "no client other than ecmigrate is connected to the source",
            );
            return Ok(Vec::new());
        }
        if ctx.dry_run() {
            ctx.note(format!("{} client(s) still use the source; the real run waits up to {} s for them to leave: {}", clients.len(), limit.as_secs(), describe(&clients)));
            return Ok(Vec::new());
        }
        if spec.force {
            ctx.note(format!(
                "force: deleting although {} client(s) are connected: {}",
                clients.len(),
                describe(&clients)
            ));
            return Ok(clients);
        }
        if started.elapsed() >= limit {
            return Err(Error::failed(
                format!(
                    "{} client(s) other than ecmigrate are still connected to `{}`: {}",
                    clients.len(),
                    source.id,
                    describe(&clients)
                ),
                "repoint those clients to the new endpoint and run again (or set `force: true` on the step to delete anyway)",
            ));
        }
        ctx.waiting(
            &format!("clients of {} to leave", source.id),
            &format!("{} connected", clients.len()),
            started,
        );
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
}

fn done(
    final_name: &str,
    source_id: &str,
    forced_with_clients: Option<Vec<crate::data::connect::ConnectedClient>>,
) -> StepOutcome {
    StepOutcome::done(&DeleteSourceOutputs {
        final_snapshot_name: final_name.to_string(),
        deleted: source_id.to_string(),
        forced_with_clients,
    })
}

/// The source goes only after a finished cutover and a passed verify; with a stream, the cutover compared
/// a sample inside its fence, when both sides were still: the verify that counts, since writes went on
/// after the `verify` step.
fn check_cut_over_and_verified(ctx: &StepContext) -> Result<()> {
    if !ctx.step_done(StepKind::Cutover) || !ctx.step_done(StepKind::Verify) {
        return Err(Error::failed(
            "the source can only be deleted after a finished cutover and a passed verify",
            "run the plan's cutover and verify steps first",
        ));
    }
    if crate::steps::plan_streams(&ctx.plan) {
        let checked = ctx
            .outputs_of::<CutoverOutputs>(StepKind::Cutover)
            .and_then(|o| o.verified_at_switch)
            .filter(|v| v.differing == 0);
        match checked {
            Some(v) => ctx.check(
                "verified_at_switch",
                true,
                format!(
                    "{} sampled keys were identical on both sides inside the cutover's write fence",
                    v.keys_compared
                ),
            ),
            None => {
                return Err(Error::failed(
                    "the cutover recorded no passed comparison at the switch, so the source is kept",
                    "roll back with `ecmigrate rollback PLAN` and run the plan again, or delete the source by hand after checking the target",
                ));
            }
        }
    }
    Ok(())
}

/// The operator's confirmation: `--yes` with `confirm: <source id>` in the plan, or the id typed.
fn confirm(ctx: &StepContext, spec: &DeleteSourceStep, source_id: &str) -> Result<()> {
    let confirmed = if ctx.options.yes && spec.confirm.as_deref() == Some(source_id) {
        true
    } else if ctx.options.interactive {
        ctx.prompter.confirm_typed(
            &format!("Type the source group id `{source_id}` to delete it (a final encrypted snapshot is kept)"),
            source_id,
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
    Ok(())
}

/// The application's clients on every node behind `endpoint` (the node itself for a single primary whose
/// replicas are not announced; a cluster's primaries and replicas), each client's `addr` prefixed with the
/// node it is connected to when there is more than one node.
async fn clients_of_every_node(
    endpoint: &crate::data::connect::RedisEndpoint,
) -> std::result::Result<Vec<crate::data::connect::ConnectedClient>, crate::data::DataError> {
    let topology = crate::data::topology::Topology::discover(endpoint).await?;
    let nodes = topology.nodes();
    let mut out = Vec::new();
    for node in &nodes {
        for mut client in crate::data::connect::foreign_clients(node).await? {
            if nodes.len() > 1 {
                client.addr = format!("{} on {}:{}", client.addr, node.host, node.port);
            }
            out.push(client);
        }
    }
    Ok(out)
}
