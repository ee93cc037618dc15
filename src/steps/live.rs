//! The run's change stream, with one owner: the step runner holds a [`LiveStream`] for the whole run and
//! hands it to the steps that start it (`backup`), feed and tail it (`stream_copy`, `verify`), and end it
//! (`cutover`); whatever is left running when the run ends is stopped by [`LiveStream::shutdown`].

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::cloud::ReplicationGroup;
use crate::data::copier::{Copier, CopyOptions};
use crate::data::stream::{LiveState, StreamCopy, StreamStatus, Tailer};
use crate::engine::StepContext;
use crate::error::{Error, Result};
use crate::steps::{
    NOTIFICATIONS_FIX, load_token, plan_streams, require_group, source_data_endpoint,
    target_data_endpoint,
};

/// A stream shared by the steps of one run (cheap to clone).
pub type SharedStream = Arc<tokio::sync::Mutex<StreamCopy>>;

/// What the stream had done when the cutover ended it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StreamSummary {
    pub changes_replayed: u64,
    pub reconcile_passes: u64,
    pub events: u64,
}

#[derive(Clone, Default)]
pub struct LiveStream {
    state: Arc<tokio::sync::Mutex<LiveState>>,
}

impl LiveStream {
    /// The stream, if this process has established one.
    pub async fn stream(&self) -> Option<SharedStream> {
        self.state.lock().await.stream.clone()
    }

    /// Subscribe to the source's changes (for `stream_copy`), unless already subscribed in this process.
    /// `before_snapshot`: whether this happens before the backup snapshot is requested; if not, the
    /// capture is marked as having a gap, which `stream_copy` closes with a full reconcile pass.
    pub async fn start_capture(
        &self,
        ctx: &StepContext,
        source: &ReplicationGroup,
        before_snapshot: bool,
    ) -> Result<()> {
        let mut live = self.state.lock().await;
        if live.capture.is_some() || live.stream.is_some() {
            return Ok(());
        }
        let endpoint = source_data_endpoint(ctx, source)?;
        let style = crate::data::capture::detect_style(&endpoint, true)
            .await
            .map_err(|e| Error::failed(e, NOTIFICATIONS_FIX))?;
        let spill = ctx.state_folder().join("capture.spill");
        let _ = std::fs::remove_file(&spill);
        let capture = crate::data::capture::Capture::start(endpoint, style, spill, 1_000_000)
            .await
            .map_err(|e| {
                Error::failed(
                    e,
                    "check that the source's data plane is reachable (source.data_endpoint)",
                )
            })?;
        if !before_snapshot {
            capture.mark_gap("the capture started after the snapshot (a resumed run)");
        }
        ctx.note(format!(
            "capturing changes of `{}` (keyspace notifications){}",
            source.id,
            if before_snapshot {
                " from before the snapshot"
            } else {
                "; a full reconcile pass will close the gap"
            }
        ));
        live.capture = Some(capture);
        live.started_before_snapshot = before_snapshot;
        Ok(())
    }

    /// The run's stream, established if this process has none yet: the capture joined to a copier,
    /// caught up (with a full reconcile after any gap, such as a capture started by a resumed run), and
    /// tailed in the background. `None` for a rehearsal or a plan without `stream_copy`.
    pub async fn ensure(
        &self,
        ctx: &StepContext,
    ) -> Result<Option<(StreamStatus, Option<String>)>> {
        if ctx.dry_run() || !plan_streams(&ctx.plan) {
            return Ok(None);
        }
        if let Some(stream) = self.stream().await {
            return Ok(Some((stream.lock().await.status(), None)));
        }
        let plan = &ctx.plan.plan;
        let source = require_group(ctx, &plan.source.replication_group_id).await?;
        let target = require_group(ctx, &plan.target.replication_group_id).await?;
        // A resumed run has no capture from before the snapshot: start one now, with a gap to reconcile.
        self.start_capture(ctx, &source, false).await?;
        let Some(capture) = self.state.lock().await.capture.take() else {
            return Err(Error::failed(
                "internal: no capture to stream from",
                "run the plan again",
            ));
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
        let mut live = self.state.lock().await;
        live.stream = Some(stream);
        live.tailer = Some(tailer);
        Ok(Some((status, gap)))
    }

    /// After the switch and its tail: stop the background tailer, copy what arrived meanwhile, stop
    /// capturing.
    pub async fn finish(&self) -> Result<Option<StreamSummary>> {
        let (tailer, stream) = {
            let mut live = self.state.lock().await;
            (live.tailer.take(), live.stream.take())
        };
        let hint = "run again to resume; a full reconcile follows";
        if let Some(t) = tailer {
            t.stop().await.map_err(|e| Error::failed(e, hint))?;
        }
        let Some(stream) = stream else {
            return Ok(None);
        };
        let mut s = stream.lock().await;
        s.catch_up(&|_, _| {})
            .await
            .map_err(|e| Error::failed(e, hint))?;
        s.capture.stop();
        let status = s.status();
        Ok(Some(StreamSummary {
            changes_replayed: status.replayed,
            reconcile_passes: status.reconciles,
            events: status.capture.events,
        }))
    }

    /// Stop any tailing and capture still running when the run ends.
    pub async fn shutdown(&self) {
        let mut live = self.state.lock().await;
        if let Some(tailer) = live.tailer.take() {
            let _ = tailer.stop().await;
        }
        if let Some(stream) = live.stream.take() {
            stream.lock().await.capture.stop();
        }
        if let Some(capture) = live.capture.take() {
            capture.stop();
        }
    }
}

/// The live streaming status beside the state (best effort: it is for display only).
fn write_status(path: &std::path::Path, status: &StreamStatus) {
    let mut body = serde_json::to_value(status).unwrap_or_default();
    if let Some(obj) = body.as_object_mut() {
        obj.insert("updated_at".into(), json!(chrono::Utc::now().to_rfc3339()));
    }
    let _ = crate::engine::state::write_atomic(path, body.to_string().as_bytes());
}
