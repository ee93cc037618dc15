//! `cutover`: point clients at the target. `sandbox_alias` repoints the sandbox's endpoint alias;
//! `manual` prints exactly what to change and waits for the operator's confirmation.

use serde_json::json;

use crate::engine::StepContext;
use crate::error::{Error, Result};
use crate::plan::{CutoverStep, CutoverStrategy};
use crate::steps::{StepOutcome, cloud_error, obj, require_group, token_store};

pub async fn run(ctx: &StepContext, spec: &CutoverStep) -> Result<StepOutcome> {
    let plan = &ctx.plan.plan;
    let source_id = &plan.source.replication_group_id;
    let target_id = &plan.target.replication_group_id;
    let target = require_group(ctx, target_id).await?;
    if spec.postpone {
        return Err(Error::usage(
            "a postponed cutover (`postpone: true`) is not available in this version",
            "remove `postpone` from the cutover step",
        ));
    }
    // Everything captured so far reaches the target before clients move.
    let caught_up = if ctx.dry_run() {
        None
    } else {
        crate::steps::stream_copy::pause_and_catch_up(ctx).await?
    };
    let mut outcome = match spec.strategy {
        CutoverStrategy::SandboxAlias => {
            let alias = spec.alias.clone().ok_or_else(|| {
                Error::usage("the cutover step needs `alias`", "add `alias: NAME`")
            })?;
            let current = ctx
                .cloud
                .resolve_alias(&alias)
                .await
                .map_err(|e| cloud_error("resolving the alias", e))?;
            if current.as_deref() == Some(target_id.as_str()) {
                ctx.note(format!("alias `{alias}` already points at `{target_id}`"));
            } else {
                ctx.call(
                    "PointAlias",
                    json!({ "alias": alias, "from": current, "to": target_id }),
                );
                ctx.write
                    .point_alias(&alias, target_id)
                    .await
                    .map_err(|e| cloud_error("repointing the alias", e))?;
            }
            Ok(StepOutcome::done(obj(vec![
                ("strategy", json!("sandbox_alias")),
                ("alias", json!(alias)),
                ("previous", json!(current)),
                ("now", json!(target_id)),
            ])))
        }
        CutoverStrategy::Manual => {
            let endpoint = target
                .primary_endpoint
                .as_ref()
                .map(|e| e.to_string())
                .unwrap_or_default();
            ctx.note(format!(
                "repoint every client of `{source_id}` to `{target_id}`: endpoint {endpoint}, TLS on, AUTH token from {}",
                token_store(&ctx.plan)
            ));
            if !ctx.dry_run() && !ctx.options.yes {
                let confirmed = ctx
                    .prompter
                    .confirm("Have all clients been repointed to the new endpoint?")?;
                if !confirmed {
                    return Err(Error::failed(
                        "the operator did not confirm the cutover",
                        "repoint the clients, then run again",
                    ));
                }
            }
            Ok(StepOutcome::done(obj(vec![
                ("strategy", json!("manual")),
                ("now", json!(target_id)),
                ("endpoint", json!(endpoint)),
            ])))
        }
        CutoverStrategy::Route53 | CutoverStrategy::Command => Err(Error::usage(
            format!(
                "the `{}` cutover strategy is not available in this version",
                spec.strategy.as_str()
            ),
            "use `manual` or `sandbox_alias`",
        )),
    }?;
    // Writes that reached the source during the switch.
    let finished = if ctx.dry_run() {
        None
    } else {
        crate::steps::stream_copy::finish(ctx).await?
    };
    if let Some(v) = caught_up {
        outcome.outputs.insert("catch_up".into(), v);
    }
    if let Some(v) = finished {
        outcome.outputs.insert("stream".into(), v);
    }
    Ok(outcome)
}
