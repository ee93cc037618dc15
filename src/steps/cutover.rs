//! `cutover`: move clients from the source to the target without losing a write, in gh-ost's model.
//!
//! 1. Hold (postponed cutover) until released: `ecmigrate cutover PLAN`, removing the flag file, or the
//!    prompt; the stream keeps tailing meanwhile and `status` shows the run `waiting` with its lag.
//! 2. Fence: `CLIENT PAUSE <max_write_pause_ms> WRITE` on the source primary, then prove that every change
//!    made before the pause has been received (a PING on the subscribed connection, answered in order
//!    after the notifications), and copy everything pending.
//! 3. Switch (strategy), disconnect the application's clients from the source (their paused writes are
//!    dropped and retried on the new endpoint), unpause. A failed switch, or a fence that would outlast its
//!    bound, unpauses, goes back to 1 and retries with backoff; after `fence_attempts` the step fails and
//!    can be resumed.
//! 4. Keep copying the source's changes for the record's TTL plus `grace_seconds` (clients that still hold
//!    the old address); report how many came late.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::data::connect::RedisEndpoint;
use crate::data::copier::{Copier, CopyOptions};
use crate::data::fence::WriteFence;
use crate::data::stream::StreamCopy;
use crate::engine::StepContext;
use crate::error::{Error, Result};
use crate::plan::CutoverStep;
use crate::steps::switch::{Switch, Switched, run_command};
use crate::steps::{
    StepOutcome, load_token, obj, require_group, source_data_endpoint, target_data_endpoint,
};
use serde_json::Map;

/// Written by `ecmigrate cutover PLAN` into the plan's state folder; the waiting run consumes it.
pub const RELEASE_FILE: &str = "cutover.release";

/// Random keys per database compared inside the fence, and the TTL difference allowed there.
const SPOT_CHECK_KEYS: u64 = 100;
const SPOT_CHECK_TTL_MS: i64 = 5000;

/// Test-only fault injection: `MS:N` delays the first N fences by MS milliseconds inside the pause.
const FAULT_FENCE_DELAY: &str = "ECMIGRATE_FAULT_FENCE_DELAY";

pub async fn run(ctx: &StepContext, spec: &CutoverStep) -> Result<StepOutcome> {
    let plan = &ctx.plan.plan;
    let source = require_group(ctx, &plan.source.replication_group_id).await?;
    let target = require_group(ctx, &plan.target.replication_group_id).await?;
    let switch = Switch::new(spec, &source, &target, "cutover")?;
    if ctx.dry_run() {
        if spec.postpone || spec.postpone_flag_file.is_some() {
            ctx.note("would hold before the switch until released (`ecmigrate cutover PLAN`), tailing meanwhile");
        }
        let details = switch.rehearse(ctx).await?;
        ctx.note(format!(
            "would pause writes on the source for at most {} ms (CLIENT PAUSE WRITE), prove the capture caught up, copy what is pending, switch, {}unpause, then copy late writes for the record's TTL + {} s",
            spec.max_write_pause().as_millis(),
            if spec.disconnect_clients() { "disconnect the source's clients, " } else { "" },
            spec.grace().as_secs()
        ));
        return Ok(StepOutcome::done(obj(vec![
            ("strategy", json!(spec.strategy.as_str())),
            ("dry_run", json!(true)),
            ("switch", details),
        ])));
    }
    // A resumed run after the switch was made must not copy from the source again: clients write to the
    // target now, and a reconcile would overwrite their writes with the source's older values.
    if let Some(switched) = ctx.intent("switched") {
        ctx.note(
            "the switch was made by an earlier attempt; nothing is copied from the source any more",
        );
        let mut outputs = switched.as_object().cloned().unwrap_or_default();
        outputs.insert("resumed_after_switch".into(), json!(true));
        return Ok(StepOutcome::done(outputs));
    }
    let source_endpoint = source_data_endpoint(ctx, &source)?;
    crate::steps::stream_copy::ensure_stream(ctx).await?;

    let mut attempts: Vec<Value> = Vec::new();
    let mut released_by = Vec::new();
    // Held before the first attempt and after a failed switch; a fence past its bound retries at once.
    let mut needs_release = true;
    let done = loop {
        if needs_release && let Some(by) = hold(ctx, spec).await? {
            released_by.push(by);
        }
        let attempt = attempts.len() as u32 + 1;
        let outcome = match before_switch(ctx, spec, &switch).await {
            Ok(()) => {
                let stream = ctx.live.lock().await.stream.clone();
                fenced_switch(
                    ctx,
                    spec,
                    &switch,
                    &source_endpoint,
                    stream.as_ref(),
                    attempt,
                )
                .await
            }
            Err(e) => Err(FenceFailure {
                kind: FailureKind::Switch,
                message: e,
                write_pause: None,
            }),
        };
        match outcome {
            Ok(done) => {
                attempts.push(json!({ "attempt": attempt, "outcome": "switched",
                                      "write_pause_ms": done.write_pause.as_millis() as u64 }));
                record_attempts(ctx, &attempts)?;
                break done;
            }
            Err(failure) => {
                attempts.push(json!({ "attempt": attempt, "outcome": failure.kind.as_str(),
                                      "error": failure.message,
                                      "write_pause_ms": failure.write_pause.map(|d| d.as_millis() as u64) }));
                record_attempts(ctx, &attempts)?;
                if let FailureKind::Fatal = failure.kind {
                    return Err(Error::failed(
                        failure.message,
                        "the source is unpaused and clients were not moved; run the same command again to resume",
                    ));
                }
                ctx.note(format!(
                    "attempt {attempt} of {}: {} — the source is unpaused, clients stay on it",
                    spec.fence_attempts(),
                    failure.message
                ));
                if attempt >= spec.fence_attempts() {
                    return Err(Error::failed(
                        format!(
                            "the cutover did not complete in {attempt} attempts; last: {}",
                            failure.message
                        ),
                        "the source is unpaused and clients were not moved; fix the cause (or raise `max_write_pause_ms` / `fence_attempts`), then run the same command again",
                    ));
                }
                // A failed switch goes back to the hold: a postponed cutover needs a new release.
                let backoff = Duration::from_millis(500 * 2u64.pow(attempt.min(6)))
                    .min(Duration::from_secs(30));
                needs_release = failure.kind == FailureKind::Switch;
                if !(needs_release && is_held(spec)) {
                    ctx.note(format!("retrying in {} ms", backoff.as_millis()));
                    tokio::time::sleep(backoff).await;
                }
            }
        }
    };

    // The switch stands from here on; what follows only adds evidence and late writes.
    let mut outputs = obj(vec![
        ("strategy", json!(spec.strategy.as_str())),
        ("now", json!(switch.to.group_id)),
        ("endpoint", json!(switch.to.endpoint)),
        ("switch", done.switched.details.clone()),
        ("write_pause_ms", json!(done.write_pause.as_millis() as u64)),
        (
            "max_write_pause_ms",
            json!(spec.max_write_pause().as_millis() as u64),
        ),
        ("fence_attempts", json!(attempts.len())),
        ("attempts", json!(attempts)),
        ("released_by", json!(released_by)),
        ("clients_disconnected", json!(done.disconnected)),
        ("keys_copied_in_fence", json!(done.copied_in_fence)),
        ("verified_at_switch", json!(done.verified_at_switch)),
    ]);
    ctx.record_intent("switched", Value::Object(outputs.clone()))?;
    ctx.note(format!(
        "switched to `{}`: writes paused {} ms (bound {} ms), {} key(s) copied inside the fence, {} client connection(s) moved",
        switch.to.group_id,
        done.write_pause.as_millis(),
        spec.max_write_pause().as_millis(),
        done.copied_in_fence,
        done.disconnected.len()
    ));
    switch.settle(ctx, &done.switched).await?;
    if let Some(hook) = &spec.after_switch
        && let Err(e) = run_command(ctx, "after_switch", hook, &switch.env(ctx)).await
    {
        ctx.note(format!("{e} (the switch stands)"));
        outputs.insert("after_switch_error".into(), json!(e));
    }
    if let Some(tail) = tail_after_switch(ctx, spec, &done).await? {
        outputs.insert("late".into(), tail);
    }
    if let Some(v) = crate::steps::stream_copy::finish(ctx).await? {
        outputs.insert("stream".into(), v);
    }
    Ok(StepOutcome::done(outputs))
}

fn is_held(spec: &CutoverStep) -> bool {
    spec.postpone || spec.postpone_flag_file.is_some()
}

fn record_attempts(ctx: &StepContext, attempts: &[Value]) -> Result<()> {
    ctx.record_intent("attempts", json!(attempts))
}

/// The `before_switch` hook and the manual strategy's confirmation, both outside the fence.
async fn before_switch(
    ctx: &StepContext,
    spec: &CutoverStep,
    switch: &Switch<'_>,
) -> std::result::Result<(), String> {
    if let Some(hook) = &spec.before_switch {
        run_command(ctx, "before_switch", hook, &switch.env(ctx)).await?;
    }
    switch.prepare(ctx).map_err(|e| e.to_string())
}

/// Hold a postponed cutover until it is released; `None` when there is nothing to hold. Meanwhile the
/// run is `waiting` and the stream keeps tailing (its lag is in `stream.json`, shown by `status`).
async fn hold(ctx: &StepContext, spec: &CutoverStep) -> Result<Option<String>> {
    let flag: Option<PathBuf> = spec
        .postpone_flag_file
        .as_ref()
        .map(|f| ctx.plan.resolve(std::path::Path::new(f)));
    let flag_at_start = flag.as_ref().is_some_and(|f| f.exists());
    if !spec.postpone && !flag_at_start {
        return Ok(None);
    }
    let release = ctx.state_folder().join(RELEASE_FILE);
    ctx.set_run_waiting(true)?;
    let mut ways = vec![format!("`ecmigrate cutover {}`", ctx.plan.path.display())];
    if let Some(f) = &flag {
        ways.push(format!("removing {}", f.display()));
    }
    let mut prompt = (ctx.options.interactive && !ctx.options.yes).then(|| {
        ways.push("answering the prompt".into());
        ask_in_background(ctx.prompter.clone())
    });
    ctx.note(format!(
        "cutover postponed: changes keep streaming to the target; release it by {}",
        ways.join(", or ")
    ));
    let started = Instant::now();
    let by = loop {
        if release.exists() {
            let _ = std::fs::remove_file(&release);
            break "ecmigrate cutover".to_string();
        }
        if let Some(f) = &flag
            && !f.exists()
            && (flag_at_start || !spec.postpone)
        {
            break format!("{} removed", f.display());
        }
        if let Some(rx) = &mut prompt {
            match rx.try_recv() {
                Ok(true) => break "the prompt".to_string(),
                Ok(false) => {
                    ctx.note("not released; still waiting for `ecmigrate cutover`");
                    prompt = None;
                }
                Err(tokio::sync::oneshot::error::TryRecvError::Empty) => {}
                Err(_) => prompt = None,
            }
        }
        ctx.waiting("the cutover release", "postponed", started);
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    ctx.set_run_waiting(false)?;
    ctx.note(format!("cutover released by {by}"));
    Ok(Some(by))
}

/// Ask on the terminal without blocking the run. A plain thread, not the runtime's blocking pool: a
/// question left unanswered (released another way) must not keep the process from exiting.
fn ask_in_background(
    prompter: std::sync::Arc<dyn crate::ui::Prompter>,
) -> tokio::sync::oneshot::Receiver<bool> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let answer = prompter
            .confirm("Cut over now (pause writes, switch the endpoint)?")
            .unwrap_or(false);
        let _ = tx.send(answer);
    });
    rx
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FailureKind {
    /// The fence would have outlasted its bound, or the capture had a gap: retry.
    Fence,
    /// The switch (or the hook before it) failed: retry; a postponed cutover holds again.
    Switch,
    /// Nothing to retry (the data plane broke): fail the step.
    Fatal,
}

impl FailureKind {
    fn as_str(self) -> &'static str {
        match self {
            FailureKind::Fence => "fence_timeout",
            FailureKind::Switch => "switch_failed",
            FailureKind::Fatal => "failed",
        }
    }
}

struct FenceFailure {
    kind: FailureKind,
    message: String,
    write_pause: Option<Duration>,
}

struct FenceDone {
    switched: Switched,
    write_pause: Duration,
    disconnected: Vec<crate::data::connect::ConnectedClient>,
    copied_in_fence: u64,
    /// The sample compared inside the fence (a streamed plan only).
    verified_at_switch: Option<Value>,
    /// Capture events counted when the pause was lifted (late changes are counted from here).
    events_at_release: u64,
}

/// One fenced attempt: pause, prove, copy, switch, disconnect, unpause. The pause is always lifted.
async fn fenced_switch(
    ctx: &StepContext,
    spec: &CutoverStep,
    switch: &Switch<'_>,
    paused: &RedisEndpoint,
    stream: Option<&Arc<tokio::sync::Mutex<StreamCopy>>>,
    attempt: u32,
) -> std::result::Result<FenceDone, FenceFailure> {
    let fatal = |e: crate::data::DataError| FenceFailure {
        kind: FailureKind::Fatal,
        message: e.into(),
        write_pause: None,
    };
    let bound = spec.max_write_pause();
    // Holding the stream keeps the background tailer out until the fence is over.
    let mut stream = match stream {
        Some(s) => Some(s.lock().await),
        None => None,
    };
    // Catch up before pausing, so the fence has little left to copy.
    if let Some(s) = stream.as_mut() {
        s.catch_up(&|_, _| {}).await.map_err(fatal)?;
    }
    ctx.call(
        "ClientPause",
        json!({ "endpoint": paused.display_url(), "mode": "WRITE", "timeout_ms": bound.as_millis() as u64 }),
    );
    let mut fence = WriteFence::pause(paused, bound).await.map_err(fatal)?;
    let inside = async {
        if let Some(delay) = injected_delay(attempt) {
            tokio::time::sleep(delay).await;
        }
        let mut copied = 0;
        let mut verified = None;
        if let Some(s) = stream.as_mut() {
            s.capture
                .confirm_received(fence.remaining())
                .await
                .map_err(|e| (FailureKind::Fence, format!("fence not proven: {e}")))?;
            if let Some(gap) = s.capture.gap().await {
                return Err((
                    FailureKind::Fence,
                    format!("the capture had a gap ({gap}); reconciling before the next attempt"),
                ));
            }
            copied = s.drain().await.map_err(|e| (FailureKind::Fatal, e.into()))?;
            // Both sides are still now (writes paused, clients not moved yet): compare a sample.
            let (from, to) = s.copier.endpoints();
            let (compared, differ) =
                crate::data::verify::spot_check(from, to, SPOT_CHECK_KEYS, SPOT_CHECK_TTL_MS)
                    .await
                    .map_err(|e| (FailureKind::Fatal, e.into()))?;
            if !differ.is_empty() {
                let first: Vec<String> = differ
                    .iter()
                    .take(3)
                    .map(|m| format!("db{} {}: {}", m.db, m.key, m.reason))
                    .collect();
                return Err((
                    FailureKind::Fence,
                    format!(
                        "the check at the switch found {} of {compared} sampled keys differing ({})",
                        differ.len(),
                        first.join("; ")
                    ),
                ));
            }
            verified = Some(json!({ "keys_compared": compared, "differing": 0 }));
        }
        // The switch starts only while half the bound is left, so it ends inside the pause.
        if fence.remaining() < bound / 2 {
            return Err((
                FailureKind::Fence,
                format!(
                    "catching up inside the fence took {} ms, past half of max_write_pause_ms ({} ms)",
                    fence.elapsed().as_millis(),
                    bound.as_millis()
                ),
            ));
        }
        let switched = switch
            .switch(ctx)
            .await
            .map_err(|e| (FailureKind::Switch, e))?;
        if fence.remaining().is_zero() {
            ctx.note(format!(
                "the switch outlasted the write pause ({} ms): writes made on the source since are copied by the tail",
                bound.as_millis()
            ));
        }
        let disconnected = if spec.disconnect_clients() {
            fence.disconnect_clients().await.unwrap_or_else(|e| {
                ctx.note(format!("could not disconnect the source's clients: {e}"));
                Vec::new()
            })
        } else {
            Vec::new()
        };
        Ok((switched, disconnected, copied, verified))
    }
    .await;
    let (write_pause, unpaused) = fence.release().await;
    if let Err(e) = unpaused {
        ctx.note(format!(
            "{e}: the source lifts the pause by itself after {} ms",
            bound.as_millis()
        ));
    }
    let events_at_release = stream
        .as_ref()
        .map(|s| s.capture.status().events)
        .unwrap_or(0);
    drop(stream);
    match inside {
        Ok((switched, disconnected, copied_in_fence, verified_at_switch)) => Ok(FenceDone {
            switched,
            write_pause,
            disconnected,
            copied_in_fence,
            verified_at_switch,
            events_at_release,
        }),
        Err((kind, message)) => Err(FenceFailure {
            kind,
            message,
            write_pause: Some(write_pause),
        }),
    }
}

fn injected_delay(attempt: u32) -> Option<Duration> {
    let spec = std::env::var(FAULT_FENCE_DELAY).ok()?;
    let (ms, times) = spec.split_once(':')?;
    (attempt <= times.parse().ok()?).then(|| Duration::from_millis(ms.parse().unwrap_or(0)))
}

/// After the switch: keep copying the source's changes for the record's TTL plus the grace period, then
/// report how many arrived after the pause was lifted (late writes, and keys that expired meanwhile).
async fn tail_after_switch(
    ctx: &StepContext,
    spec: &CutoverStep,
    done: &FenceDone,
) -> Result<Option<Value>> {
    let Some(stream) = ctx.live.lock().await.stream.clone() else {
        return Ok(None);
    };
    let window = done.switched.ttl + spec.grace();
    let started = Instant::now();
    while started.elapsed() < window {
        ctx.waiting(
            "late writes to the old endpoint",
            &format!("tailing for {} s", window.as_secs()),
            started,
        );
        tokio::time::sleep(Duration::from_millis(200).min(window)).await;
    }
    let late = stream
        .lock()
        .await
        .capture
        .status()
        .events
        .saturating_sub(done.events_at_release);
    if late > 0 {
        ctx.note(format!(
            "{late} change(s) reached the source after the switch (clients on the old address, or expiries); all were copied"
        ));
    }
    Ok(Some(
        json!({ "tail_seconds": window.as_secs(), "late_changes": late }),
    ))
}

/// `ecmigrate rollback`: clients back to the source, with the writes made on the target since the switch.
/// The same model in reverse: capture the target, copy it onto the source in full (the target has been
/// the truth since the switch), fence the target, prove, copy what is pending, switch back with the same
/// strategy, disconnect the target's clients, unpause, and tail the target for the grace period.
pub async fn rollback(ctx: &StepContext, spec: &CutoverStep) -> Result<Map<String, Value>> {
    let plan = &ctx.plan.plan;
    let source = require_group(ctx, &plan.source.replication_group_id).await?;
    let target = require_group(ctx, &plan.target.replication_group_id).await?;
    let switch = Switch::new(spec, &target, &source, "rollback")?;
    let source_endpoint = source_data_endpoint(ctx, &source)?;
    let target_endpoint = target_data_endpoint(ctx, &target, load_token(ctx).await?)?;
    let style = crate::data::capture::detect_style(&target_endpoint, true)
        .await
        .map_err(|e| {
            Error::failed(
                format!("the target cannot report its changes: {e}"),
                "a rollback copies the target's writes back by capture: give the target a parameter group with notify-keyspace-events `KEA`, then run `ecmigrate rollback` again",
            )
        })?;
    let spill = ctx.state_folder().join("rollback.spill");
    let _ = std::fs::remove_file(&spill);
    let capture =
        crate::data::capture::Capture::start(target_endpoint.clone(), style, spill, 1_000_000)
            .await
            .map_err(|e| {
                Error::failed(
                    e,
                    "check the target's data endpoint; run `ecmigrate rollback` again",
                )
            })?;
    // Which keys changed on the target since the switch is not known: copy all of it back.
    capture.mark_gap("rollback: the target has taken writes since the switch");
    let copier = Arc::new(Copier::new(
        target_endpoint.clone(),
        source_endpoint,
        CopyOptions::default(),
    ));
    let stream = Arc::new(tokio::sync::Mutex::new(StreamCopy::new(copier, capture)));
    {
        let progress = ctx.progress_reporter("keys copied back to the source");
        stream.lock().await.catch_up(&progress).await.map_err(|e| {
            Error::failed(
                e,
                "check both data endpoints; run `ecmigrate rollback` again",
            )
        })?;
    }
    ctx.note("the target's keys are back on the source; fencing the target to switch back");

    let mut attempts = Vec::new();
    let done = loop {
        let attempt = attempts.len() as u32 + 1;
        let outcome = match before_switch(ctx, spec, &switch).await {
            Ok(()) => {
                fenced_switch(ctx, spec, &switch, &target_endpoint, Some(&stream), attempt).await
            }
            Err(e) => Err(FenceFailure {
                kind: FailureKind::Switch,
                message: e,
                write_pause: None,
            }),
        };
        match outcome {
            Ok(done) => break done,
            Err(failure) => {
                attempts.push(json!({ "attempt": attempt, "outcome": failure.kind.as_str(), "error": failure.message }));
                if failure.kind == FailureKind::Fatal || attempt >= spec.fence_attempts() {
                    return Err(Error::failed(
                        format!("the rollback did not complete: {}", failure.message),
                        "clients stay on the target, which is unpaused; fix the cause and run `ecmigrate rollback` again",
                    ));
                }
                ctx.note(format!(
                    "rollback attempt {attempt}: {}; retrying",
                    failure.message
                ));
                tokio::time::sleep(Duration::from_millis(500 * 2u64.pow(attempt.min(6)))).await;
            }
        }
    };
    ctx.record_intent("rollback_switched", done.switched.details.clone())?;
    switch.settle(ctx, &done.switched).await?;
    let window = done.switched.ttl + spec.grace();
    let started = Instant::now();
    while started.elapsed() < window {
        ctx.waiting(
            "late writes to the target",
            &format!("tailing for {} s", window.as_secs()),
            started,
        );
        stream
            .lock()
            .await
            .catch_up(&|_, _| {})
            .await
            .map_err(|e| {
                Error::failed(
                    e,
                    "the switch back stands; run `ecmigrate rollback` again to copy the rest",
                )
            })?;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let s = stream.lock().await;
    s.capture.stop();
    let late = s
        .capture
        .status()
        .events
        .saturating_sub(done.events_at_release);
    let status = s.status();
    ctx.note(format!(
        "rolled back to `{}`: target writes paused {} ms, {} key(s) copied back, {late} late change(s)",
        switch.to.group_id,
        done.write_pause.as_millis(),
        status.copy.keys_copied
    ));
    Ok(obj(vec![
        ("now", json!(switch.to.group_id)),
        ("switch", done.switched.details.clone()),
        ("write_pause_ms", json!(done.write_pause.as_millis() as u64)),
        ("keys_copied_back", json!(status.copy.keys_copied)),
        ("keys_deleted_on_source", json!(status.copy.keys_deleted)),
        ("late_changes", json!(late)),
        ("clients_disconnected", json!(done.disconnected)),
        ("attempts", json!(attempts.len() + 1)),
        ("rolled_back_at", json!(chrono::Utc::now().to_rfc3339())),
    ]))
}
