//! `stream_copy`: replay every change captured since before the snapshot onto the restored target (each
//! key from the source's current state), reconcile in full if the capture may have missed anything, then
//! keep tailing in the background until `cutover`.

use serde_json::json;

use crate::engine::{StepContext, StepOutcome};
use crate::error::{Error, Result};
use crate::plan::StreamCopyStep;
use crate::steps::live::LiveStream;
use crate::steps::{obj, require_group};

pub async fn run(
    ctx: &StepContext,
    _spec: &StreamCopyStep,
    live: &LiveStream,
) -> Result<StepOutcome> {
    if ctx.dry_run() {
        let plan = &ctx.plan.plan;
        require_group(ctx, &plan.source.replication_group_id).await?;
        require_group(ctx, &plan.target().replication_group_id).await?;
        ctx.note(
            "would replay the changes captured since before the snapshot onto the target (strings: PTTL + MGET → \
             MSET or SET PXAT; other types: DUMP + PTTL → RESTORE REPLACE ABSTTL; DEL for keys gone), reconcile in full \
             after any gap, and tail until cutover",
        );
        return Ok(StepOutcome::done(&obj(vec![("dry_run", json!(true))])));
    }
    let Some((status, gap)) = live.ensure(ctx).await? else {
        return Err(Error::failed(
            "internal: a real run of a streaming plan has no stream",
            "report this bug; run the plan again to resume",
        ));
    };
    Ok(StepOutcome::done(&obj(vec![
        ("changes_replayed", json!(status.replayed)),
        ("reconcile_passes", json!(status.reconciles)),
        ("gap", json!(gap)),
        ("keys_copied", json!(status.copy.keys_copied)),
        ("keys_deleted", json!(status.copy.keys_deleted)),
    ])))
}
