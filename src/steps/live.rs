//! The run's change stream, with one owner: the step runner holds a [`LiveStream`] for the whole run and
//! hands it to the steps that start it (`backup`), feed and tail it (`stream_copy`, `verify`), and end it
//! (`cutover`); whatever is left running when the run ends is stopped by [`LiveStream::shutdown`].

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::cloud::ReplicationGroup;
use crate::data::copier::{Copier, CopyOptions};
use crate::data::stream::{HealthChange, LiveState, StreamCopy, StreamStatus, Tailer, TailerHooks};
use crate::engine::StepContext;
use crate::engine::events::Event;
use crate::error::{Error, Result};
use crate::steps::{
    NOTIFICATIONS_FIX, load_login, plan_streams, require_group, source_data_endpoint,
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
        let target = require_group(ctx, &plan.target().replication_group_id).await?;
        // A resumed run has no capture from before the snapshot: start one now, with a gap to reconcile.
        self.start_capture(ctx, &source, false).await?;
        let Some(capture) = self.state.lock().await.capture.take() else {
            return Err(Error::failed(
                "internal: no capture to stream from",
                "run the plan again",
            ));
        };
        let src = source_data_endpoint(ctx, &source)?;
        let dst = target_data_endpoint(ctx, &target, load_login(ctx).await?)?;
        let copier = Arc::new(Copier::new(src, dst, CopyOptions::default()));
        let mut stream = StreamCopy::new(copier, capture);
        // The data endpoints are the groups' primaries (or a tunnel to them): errors say which failed.
        stream.name_nodes("source primary", "target primary");

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

        // Tail in the background; keep a status file so `ecmigrate status` can show the lag and what
        // fails, and say in the run's output when a side starts failing and when it recovers.
        let status_file = ctx.state_folder().join("stream.json");
        write_status(&status_file, &status, "tailing");
        let stream = Arc::new(tokio::sync::Mutex::new(stream));
        let (events, kind) = (ctx.events.clone(), ctx.kind);
        let file = status_file.clone();
        let hooks = TailerHooks {
            on_status: Box::new(move |s: &StreamStatus| write_status(&file, s, "tailing")),
            on_health: Box::new(move |change: &HealthChange| {
                events.emit(Event::Note {
                    kind,
                    message: health_note(change),
                })
            }),
        };
        let tailer = Tailer::start(stream.clone(), hooks);
        let mut live = self.state.lock().await;
        live.stream = Some(stream);
        live.tailer = Some(tailer);
        live.status_file = Some(status_file);
        Ok(Some((status, gap)))
    }

    /// After the switch and its tail: stop the background tailer, copy what arrived meanwhile, stop
    /// capturing.
    pub async fn finish(&self) -> Result<Option<StreamSummary>> {
        let (tailer, stream, status_file) = {
            let mut live = self.state.lock().await;
            (
                live.tailer.take(),
                live.stream.take(),
                live.status_file.take(),
            )
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
        if let Some(file) = &status_file {
            write_status(file, &status, "finished");
        }
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
            let s = stream.lock().await;
            s.capture.stop();
            if let Some(file) = live.status_file.take() {
                write_status(&file, &s.status(), "stopped");
            }
        }
        if let Some(capture) = live.capture.take() {
            capture.stop();
        }
    }
}

/// The live streaming status beside the state (best effort: it is for display only). `stream`:
/// `tailing` while the run tails, `finished` after the cutover ended it, `stopped` when the run ended
/// with the stream still running (a failure); `status` calls a `tailing` file that is not kept fresh
/// stale.
fn write_status(path: &std::path::Path, status: &StreamStatus, stream: &str) {
    let mut body = serde_json::to_value(status).unwrap_or_default();
    if let Some(obj) = body.as_object_mut() {
        obj.insert("stream".into(), json!(stream));
        obj.insert("updated_at".into(), json!(chrono::Utc::now().to_rfc3339()));
    }
    let _ = crate::engine::state::write_atomic(path, body.to_string().as_bytes());
}

/// What the run's output says when a side of the stream starts failing, and when it recovers.
fn health_note(change: &HealthChange) -> String {
    match change {
        HealthChange::Failing { side, trouble } => format!(
            "the stream cannot copy: {} {}: {}; retrying (every {} ms doubling to {} s) until it answers, then a full reconcile pass; `ecmigrate status` shows it",
            side.as_str(),
            trouble.state,
            trouble.error,
            crate::data::stream::FIRST_RETRY.as_millis(),
            crate::data::stream::MAX_RETRY.as_secs()
        ),
        HealthChange::Reconciled { gap } => format!(
            "the capture had a gap ({gap}): a full reconcile pass copied every key and deleted what the source no longer has"
        ),
        HealthChange::Recovered {
            side,
            trouble,
            caught_up,
        } => {
            let secs = (chrono::Utc::now() - trouble.since).num_milliseconds() as f64 / 1000.0;
            format!(
                "the stream recovered: the {} answers again after {secs:.1} s ({} {}){}",
                side.as_str(),
                trouble.retries,
                if trouble.retries == 1 {
                    "retry"
                } else {
                    "retries"
                },
                if *caught_up {
                    "; a full reconcile pass brought the target up to date"
                } else {
                    ""
                }
            )
        }
    }
}
