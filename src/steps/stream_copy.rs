//! `stream_copy`: replay every change captured since before the snapshot onto the restored target (each
//! key from the source's current state), reconcile in full if the capture may have missed anything, then
//! keep tailing in the background until `cutover`.

use std::sync::Arc;

use serde_json::json;

use crate::data::copier::{Copier, CopyOptions};
use crate::data::stream::{StreamCopy, StreamStatus, Tailer};
use crate::engine::StepContext;
use crate::error::{Error, Result};
use crate::plan::StreamCopyStep;
use crate::steps::{
    StepOutcome, load_token, obj, require_group, source_data_endpoint, start_capture,
    target_data_endpoint,
};

pub async fn run(ctx: &StepContext, _spec: &StreamCopyStep) -> Result<StepOutcome> {
    if ctx.dry_run() {
        let plan = &ctx.plan.plan;
        require_group(ctx, &plan.source.replication_group_id).await?;
        require_group(ctx, &plan.target.replication_group_id).await?;
        ctx.note(
            "would replay the changes captured since before the snapshot onto the target (strings: PTTL + MGET → \
             MSET or SET PXAT; other types: DUMP + PTTL → RESTORE REPLACE ABSTTL; DEL for keys gone), reconcile in full \
             after any gap, and tail until cutover",
        );
        return Ok(StepOutcome::done(obj(vec![("dry_run", json!(true))])));
    }
    let (status, gap) = ensure_stream(ctx)
        .await?
        .expect("a real run of a streaming plan has a stream");
    Ok(StepOutcome::done(obj(vec![
        ("changes_replayed", json!(status.replayed)),
        ("reconcile_passes", json!(status.reconciles)),
        ("gap", json!(gap)),
        ("keys_copied", json!(status.copy.keys_copied)),
        ("keys_deleted", json!(status.copy.keys_deleted)),
    ])))
}

/// The run's stream, established if this process has none yet: the capture joined to a copier, caught up
/// (with a full reconcile after any gap, such as a capture started by a resumed run), and tailed in the
/// background. `None` for a rehearsal or a plan without `stream_copy`.
pub async fn ensure_stream(ctx: &StepContext) -> Result<Option<(StreamStatus, Option<String>)>> {
    if ctx.dry_run() || !crate::steps::plan_streams(&ctx.plan) {
        return Ok(None);
    }
    if let Some(stream) = ctx.live.lock().await.stream.clone() {
        return Ok(Some((stream.lock().await.status(), None)));
    }
    let plan = &ctx.plan.plan;
    let source = require_group(ctx, &plan.source.replication_group_id).await?;
    let target = require_group(ctx, &plan.target.replication_group_id).await?;
    // A resumed run has no capture from before the snapshot: start one now, with a gap to reconcile.
    start_capture(ctx, &source, false).await?;
    let capture = ctx.live.lock().await.capture.take();
    let capture = match capture {
        Some(c) => c,
        None => {
            return Err(Error::failed(
                "internal: no capture to stream from",
                "run the plan again",
            ));
        }
    };
    let src = source_data_endpoint(ctx, &source)?;
    let dst = target_data_endpoint(ctx, &target, load_token(ctx).await?)?;
    let copier = Arc::new(Copier::new(src, dst, CopyOptions::default()));
    let mut stream = StreamCopy::new(copier, capture);

    let progress = ctx.progress_reporter("keys reconciled");
    let gap = stream.catch_up(&progress).await.map_err(|e| {
        Error::failed(
            e,
            "check both data endpoints; run again to resume (a full reconcile follows)",
        )
    })?;
    if let Some(why) = &gap {
        ctx.note(format!(
            "the capture had a gap ({why}): a full reconcile pass copied every key and deleted what the source no longer has"
        ));
    }
    let status = stream.status();
    ctx.note(format!(
        "{} captured changes replayed; {} pending; tailing until cutover",
        status.replayed, status.capture.pending
    ));

    // Tail in the background; keep a status file so `ecmigrate status` can show the lag.
    let status_file = ctx.state_folder().join("stream.json");
    write_status(&status_file, &status);
    let stream = Arc::new(tokio::sync::Mutex::new(stream));
    let tailer = Tailer::start(
        stream.clone(),
        Box::new(move |s: &StreamStatus| write_status(&status_file, s)),
    );
    let mut live = ctx.live.lock().await;
    live.stream = Some(stream);
    live.tailer = Some(tailer);
    Ok(Some((status, gap)))
}

/// The live streaming status beside the state (best effort: it is for display only).
fn write_status(path: &std::path::Path, status: &StreamStatus) {
    let mut body = serde_json::to_value(status).unwrap_or_default();
    if let Some(obj) = body.as_object_mut() {
        obj.insert("updated_at".into(), json!(chrono::Utc::now().to_rfc3339()));
    }
    let _ = crate::engine::state::write_atomic(path, body.to_string().as_bytes());
}

/// After the switch and its tail: stop the background tailer, copy what arrived meanwhile, stop capturing.
pub async fn finish(ctx: &StepContext) -> Result<Option<serde_json::Value>> {
    let (tailer, stream) = {
        let mut live = ctx.live.lock().await;
        (live.tailer.take(), live.stream.take())
    };
    if let Some(t) = tailer {
        t.stop()
            .await
            .map_err(|e| Error::failed(e, "run again to resume; a full reconcile follows"))?;
    }
    let Some(stream) = stream else {
        return Ok(None);
    };
    let mut s = stream.lock().await;
    s.catch_up(&|_, _| {})
        .await
        .map_err(|e| Error::failed(e, "run again to resume; a full reconcile follows"))?;
    s.capture.stop();
    let status = s.status();
    Ok(Some(json!({
        "changes_replayed": status.replayed,
        "reconcile_passes": status.reconciles,
        "events": status.capture.events,
    })))
}
