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
//! 5. Seal the source ([`seal`]): writes paused on its primaries for `seal_source_hours`, what changed
//!    before copied, the stream stopped; a client still on the old nodes fails instead of being lost.

mod fence;
pub mod release;
pub mod rollback;
mod seal;

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::engine::{StepContext, StepOutcome};
use crate::error::{Error, Result};
use crate::plan::CutoverStep;
pub use crate::steps::hold::RELEASE_FILE;
use crate::steps::hold::{Hold, hold};
use crate::steps::live::LiveStream;
use crate::steps::records::{CutoverIntent, CutoverOutputs, LateWrites};
use crate::steps::switch::{Switch, run_command};
use crate::steps::{require_group, source_data_endpoint};
use fence::{FailureKind, FenceDone, FenceFailure, before_switch, fenced_switch};
use seal::seal_source;

pub async fn run(ctx: &StepContext, spec: &CutoverStep, live: &LiveStream) -> Result<StepOutcome> {
    let plan = &ctx.plan.plan;
    let source = require_group(ctx, &plan.source.replication_group_id).await?;
    let target = require_group(ctx, &plan.target().replication_group_id).await?;
    let switch = Switch::new(spec, &source, &target, "cutover")?;
    if ctx.dry_run() {
        return rehearse(ctx, spec, &switch, &source).await;
    }
    let source_endpoint = source_data_endpoint(ctx, &source)?;
    // A resumed run after the switch was made must not copy from the source again: clients write to the
    // target now, and a reconcile would overwrite their writes with the source's older values.
    let mut intent: CutoverIntent = ctx.intent();
    if let Some(mut switched) = intent.switched {
        ctx.note(
            "the switch was made by an earlier attempt; nothing is copied from the source any more",
        );
        switched.resumed_after_switch = Some(true);
        // The tail may not have ended: seal now, so that no write reaches the source unseen from here.
        let labels = switch.from.pause_labels();
        switched.sealed = seal_source(ctx, spec, &source_endpoint, &labels, None).await;
        return Ok(StepOutcome::done(&switched));
    }
    live.ensure(ctx).await?;

    let (done, attempts, released_by) =
        switch_with_retries(ctx, spec, &switch, &source_endpoint, live, &mut intent).await?;

    // The switch stands from here on; what follows only adds evidence and late writes.
    let mut outputs = CutoverOutputs {
        strategy: spec.strategy.as_str().to_string(),
        now: switch.to.group_id.clone(),
        endpoint: switch.to.endpoint.clone(),
        switch: done.switched.details.clone(),
        write_pause_ms: done.write_pause.as_millis() as u64,
        max_write_pause_ms: spec.max_write_pause().as_millis() as u64,
        primaries_paused: done.primaries_paused,
        subscriptions_proven: done.subscriptions_proven,
        fence_attempts: attempts.len(),
        attempts,
        released_by,
        clients_disconnected: done.disconnected.clone(),
        keys_copied_in_fence: done.copied_in_fence,
        verified_at_switch: done.verified_at_switch.clone(),
        after_switch_error: None,
        late: None,
        stream: None,
        resumed_after_switch: None,
        sealed: None,
        rolled_back: None,
    };
    intent.switched = Some(outputs.clone());
    ctx.record_intent(&intent)?;
    ctx.note(format!(
        "switched to `{}`: writes paused {} ms (bound {} ms) on {} primar{}, {} key(s) copied inside the fence, {} client connection(s) moved",
        switch.to.group_id,
        done.write_pause.as_millis(),
        spec.max_write_pause().as_millis(),
        done.primaries_paused,
        if done.primaries_paused == 1 { "y" } else { "ies" },
        done.copied_in_fence,
        done.disconnected.len()
    ));
    switch.settle(ctx, &done.switched).await?;
    if let Some(hook) = &spec.after_switch
        && let Err(e) = run_command(ctx, "after_switch", hook, &switch.env(ctx)).await
    {
        ctx.note(format!("{e} (the switch stands)"));
        outputs.after_switch_error = Some(e);
    }
    outputs.late = tail_after_switch(ctx, spec, &done, live).await?;
    let labels = switch.from.pause_labels();
    outputs.sealed = seal_source(ctx, spec, &source_endpoint, &labels, Some(live)).await;
    outputs.stream = live.finish().await?;
    Ok(StepOutcome::done(&outputs))
}

fn is_held(spec: &CutoverStep) -> bool {
    spec.postpone || spec.postpone_flag_file.is_some()
}

/// After the switch: keep copying the source's changes for the record's TTL plus the grace period, then
/// report how many arrived after the pause was lifted (late writes, and keys that expired meanwhile).
async fn tail_after_switch(
    ctx: &StepContext,
    spec: &CutoverStep,
    done: &FenceDone,
    live: &LiveStream,
) -> Result<Option<LateWrites>> {
    let Some(stream) = live.stream().await else {
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
    Ok(Some(LateWrites {
        tail_seconds: window.as_secs(),
        late_changes: late,
    }))
}

/// What the rehearsal says of the cutover: the hold, the fence and its bound, the switch it would make.
async fn rehearse(
    ctx: &StepContext,
    spec: &CutoverStep,
    switch: &Switch<'_>,
    source: &crate::cloud::ReplicationGroup,
) -> Result<StepOutcome> {
    if spec.postpone || spec.postpone_flag_file.is_some() {
        ctx.note("would hold before the switch until released (`ecmigrate cutover PLAN`), tailing meanwhile");
    }
    // The fence's pause, as the run would report it, before the switch it surrounds.
    let paused_url = source_data_endpoint(ctx, source)?.display_url();
    ctx.call_labeled(
        "ClientPause",
        fence::pause_params(paused_url.clone(), spec.max_write_pause()),
        &switch.from.pause_labels(),
    );
    let details = switch.rehearse(ctx).await?;
    ctx.note(format!(
        "inside the pause (CLIENT PAUSE WRITE, at most {} ms): prove the capture caught up, copy what is pending, switch, {}unpause; then copy late writes for the record's TTL + {} s{}",
        spec.max_write_pause().as_millis(),
        if spec.disconnect_clients() { "disconnect the source's clients, " } else { "" },
        spec.grace().as_secs(),
        match spec.seal() {
            Some(hold) => format!(", then seal the source (writes paused {} h)", hold.as_secs() / 3600),
            None => String::new(),
        }
    ));
    if let Some(hold) = spec.seal() {
        ctx.call_labeled(
            "SealSource",
            seal::seal_params(paused_url, hold),
            &switch.from.pause_labels(),
        );
    }
    Ok(StepOutcome::done(&json!({
        "strategy": spec.strategy.as_str(),
        "dry_run": true,
        "switch": details,
    })))
}

/// Hold, fence and switch until an attempt switches; a failed switch holds again, a fence past its bound
/// retries with backoff, and after `fence_attempts` (or a fatal error) the step fails, unpaused.
/// Returns the attempt that switched, every attempt, and what released each hold.
async fn switch_with_retries(
    ctx: &StepContext,
    spec: &CutoverStep,
    switch: &Switch<'_>,
    source_endpoint: &crate::data::connect::RedisEndpoint,
    live: &LiveStream,
    intent: &mut CutoverIntent,
) -> Result<(FenceDone, Vec<Value>, Vec<String>)> {
    let mut attempts: Vec<Value> = Vec::new();
    let mut released_by = Vec::new();
    // Held before the first attempt and after a failed switch; a fence past its bound retries at once.
    let mut needs_release = true;
    let done = loop {
        if needs_release && let Some(by) = hold(ctx, &Hold::cutover(spec)).await? {
            released_by.push(by);
        }
        let attempt = attempts.len() as u32 + 1;
        let outcome = match before_switch(ctx, spec, switch).await {
            Ok(()) => {
                let stream = live.stream().await;
                fenced_switch(ctx, spec, switch, source_endpoint, stream.as_ref(), attempt).await
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
                intent.attempts = attempts.clone();
                ctx.record_intent(intent)?;
                break done;
            }
            Err(failure) => {
                attempts.push(json!({ "attempt": attempt, "outcome": failure.kind.as_str(),
                                      "error": failure.message,
                                      "write_pause_ms": failure.write_pause.map(|d| d.as_millis() as u64) }));
                intent.attempts = attempts.clone();
                ctx.record_intent(intent)?;
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

    Ok((done, attempts, released_by))
}
