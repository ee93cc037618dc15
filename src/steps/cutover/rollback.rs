//! `ecmigrate rollback`: clients back to the source, with the writes the target took since the switch.
//! Allowed from the switch until the source is deleted; afterwards `run` refuses the plan.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::cloud::Cloud;
use crate::data::connect::RedisEndpoint;
use crate::data::copier::{Copier, CopyOptions};
use crate::data::fence;
use crate::data::stream::StreamCopy;
use crate::engine::events::EventListener;
use crate::engine::state::{RunState, RunStatus, StepStatus};
use crate::engine::{Prompter, RunOptions, Session, StepContext};
use crate::error::{Error, Result};
use crate::plan::{CutoverStep, LoadedPlan, StepKind};
use crate::steps::cutover::fence::{FailureKind, FenceFailure, before_switch, fenced_switch};
use crate::steps::records::{
    CutoverIntent, CutoverOutputs, DeleteSourceIntent, RollbackOutputs, Sealed,
};
use crate::steps::switch::Switch;
use crate::steps::{load_login, require_group, source_data_endpoint, target_data_endpoint};

/// `ecmigrate rollback`: clients back to the source, with the writes made on the target since the switch.
/// The same model in reverse: capture the target, copy it onto the source in full (the target has been
/// the truth since the switch), fence the target, prove, copy what is pending, switch back with the same
/// strategy, disconnect the target's clients, unpause, and tail the target for the grace period.
async fn switch_back(ctx: &StepContext, spec: &CutoverStep) -> Result<RollbackOutputs> {
    let plan = &ctx.plan.plan;
    let source = require_group(ctx, &plan.source.replication_group_id).await?;
    let target = require_group(ctx, &plan.target().replication_group_id).await?;
    let switch = Switch::new(spec, &target, &source, "rollback")?;
    let source_endpoint = source_data_endpoint(ctx, &source)?;
    let target_endpoint = target_data_endpoint(ctx, &target, load_login(ctx).await?)?;
    // The copy back writes to the source: the seal goes first. The record decides as much as the plan
    // (an edit to `seal_source_hours` after the cutover must not leave the copy back waiting on it).
    let on_record = recorded_seal(ctx).filter(|s| s.primaries > 0);
    let mut seal_lifted = None;
    if spec.seal().is_some() || on_record.is_some() {
        let labels = switch.to.pause_labels();
        match lift_seal(ctx, &source_endpoint, &labels, on_record.is_some()).await {
            Ok(closed) => seal_lifted = Some(closed),
            Err(e) => {
                // A lift can fail half way: what it unpaused is paused again.
                if let Some(sealed) = &on_record {
                    reseal(ctx, &source_endpoint, sealed).await;
                }
                return Err(e);
            }
        }
    }
    match copy_back_and_switch(
        ctx,
        spec,
        &switch,
        &target_endpoint,
        source_endpoint.clone(),
    )
    .await
    {
        Ok(mut outputs) => {
            outputs.seal_lifted = seal_lifted;
            Ok(outputs)
        }
        Err(failure) => {
            match (&on_record, failure.may_have_switched) {
                // Clients stay on the target: the source is sealed again for what was left of its seal.
                (Some(sealed), false) => reseal(ctx, &source_endpoint, sealed).await,
                // Sealing a source that clients may be back on would stall them for hours.
                (Some(_), true) => ctx.note(
                    "the switch back may have been made, so the source is not sealed again: check where clients point, then run `ecmigrate rollback` again",
                ),
                (None, _) => {}
            }
            Err(failure.error)
        }
    }
}

/// A rollback that failed, and whether clients may already point at the source again (a switch was
/// attempted, or the failure came after it).
struct RollbackFailure {
    error: Error,
    may_have_switched: bool,
}

/// The seal as it stands on record ([`CutoverIntent::seal_on_record`]).
fn recorded_seal(ctx: &StepContext) -> Option<Sealed> {
    let finished = ctx
        .outputs_of::<CutoverOutputs>(StepKind::Cutover)
        .and_then(|o| o.sealed);
    ctx.intent::<CutoverIntent>().seal_on_record(finished)
}

/// Lift the seal on the source. When one is on record (`on_record`), the lift is recorded before it is
/// made: a lift that fails half way, or a run killed after it, leaves `status` saying so.
async fn lift_seal(
    ctx: &StepContext,
    source_endpoint: &RedisEndpoint,
    labels: &[(&str, String)],
    on_record: bool,
) -> Result<usize> {
    ctx.call_labeled(
        "LiftSeal",
        json!({ "endpoint": source_endpoint.display_url() }),
        labels,
    );
    if on_record {
        let mut intent: CutoverIntent = ctx.intent();
        intent.seal_lifted_at = Some(chrono::Utc::now().to_rfc3339());
        intent.resealed = None;
        ctx.record_intent(&intent)?;
    }
    let closed = fence::lift(source_endpoint).await.map_err(|e| {
        Error::failed(
            format!("the seal on the source could not be lifted: {e}"),
            "check the source's data endpoint; run `ecmigrate rollback` again",
        )
    })?;
    ctx.note(format!(
        "lifted the seal on the source: it takes writes again; {} connection(s) of clients left on it closed, their waiting writes dropped",
        closed.len()
    ));
    Ok(closed.len())
}

/// Seal the source again after a rollback that lifted the seal and then failed, until the recorded seal
/// would have ended, and record what holds; `status` says the seal is lifted when this fails.
async fn reseal(ctx: &StepContext, source_endpoint: &RedisEndpoint, recorded: &Sealed) {
    let Some(left) = recorded.time_left() else {
        return;
    };
    let outcome = match fence::seal(source_endpoint, left).await {
        Ok(outcome) => outcome,
        Err(e) => {
            ctx.note(format!(
                "the rollback did not finish, and the source could not be sealed again: {e}"
            ));
            return;
        }
    };
    let error = outcome.refusal();
    ctx.note(format!(
        "the rollback did not finish: the source is sealed again on {} of {} primaries until the seal's end{}",
        outcome.paused,
        outcome.primaries,
        error.as_ref().map(|e| format!(" ({e})")).unwrap_or_default()
    ));
    let mut intent: CutoverIntent = ctx.intent();
    intent.seal_lifted_at = None;
    intent.resealed = Some(Sealed {
        primaries: outcome.paused,
        refused: outcome.refused.len(),
        keys_copied: 0,
        error,
        ..recorded.clone()
    });
    if let Err(e) = ctx.record_intent(&intent) {
        ctx.note(format!(
            "the new seal could not be recorded in the state: {e}"
        ));
    }
}

/// The copy back onto the source, the fence on the target and the switch back.
async fn copy_back_and_switch(
    ctx: &StepContext,
    spec: &CutoverStep,
    switch: &Switch<'_>,
    target_endpoint: &RedisEndpoint,
    source_endpoint: RedisEndpoint,
) -> std::result::Result<RollbackOutputs, RollbackFailure> {
    let before = |error| RollbackFailure {
        error,
        may_have_switched: false,
    };
    let after = |error| RollbackFailure {
        error,
        may_have_switched: true,
    };
    let stream = copy_target_back(ctx, target_endpoint, source_endpoint)
        .await
        .map_err(before)?;
    ctx.note("the target's keys are back on the source; fencing the target to switch back");

    let mut attempts = Vec::new();
    // A failed switch may still have been made (a lost response, a command that acted, then failed).
    let mut switch_tried = false;
    let done = loop {
        let attempt = attempts.len() as u32 + 1;
        let outcome = match before_switch(ctx, spec, switch).await {
            Ok(()) => {
                let outcome =
                    fenced_switch(ctx, spec, switch, target_endpoint, Some(&stream), attempt).await;
                switch_tried |= matches!(&outcome, Err(f) if f.kind == FailureKind::Switch);
                outcome
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
                    let error = Error::failed(
                        format!("the rollback did not complete: {}", failure.message),
                        "clients stay on the target, which is unpaused; fix the cause and run `ecmigrate rollback` again",
                    );
                    return Err(RollbackFailure {
                        error,
                        may_have_switched: switch_tried,
                    });
                }
                ctx.note(format!(
                    "rollback attempt {attempt}: {}; retrying",
                    failure.message
                ));
                tokio::time::sleep(Duration::from_millis(500 * 2u64.pow(attempt.min(6)))).await;
            }
        }
    };
    let mut intent: CutoverIntent = ctx.intent();
    intent.rollback_switched = Some(done.switched.details.clone());
    ctx.record_intent(&intent).map_err(after)?;
    switch.settle(ctx, &done.switched).await.map_err(after)?;
    tail_target(ctx, &stream, done.switched.ttl + spec.grace())
        .await
        .map_err(after)?;
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
    Ok(RollbackOutputs {
        now: switch.to.group_id.clone(),
        switch: done.switched.details.clone(),
        write_pause_ms: done.write_pause.as_millis() as u64,
        keys_copied_back: status.copy.keys_copied,
        keys_deleted_on_source: status.copy.keys_deleted,
        late_changes: late,
        clients_disconnected: done.disconnected.clone(),
        attempts: attempts.len() + 1,
        seal_lifted: None,
        rolled_back_at: chrono::Utc::now().to_rfc3339(),
    })
}

/// Roll a cut-over run back: clients to the source again, with the writes the target took since the
/// switch. Allowed from the switch until the source is deleted; afterwards `run` refuses the plan.
pub async fn rollback(
    plan: Arc<LoadedPlan>,
    cloud: Arc<dyn Cloud>,
    options: RunOptions,
    reporter: Arc<dyn EventListener>,
    prompter: Arc<dyn Prompter>,
) -> Result<RunState> {
    let yes = options.yes;
    let Some((index, spec)) = plan.plan.cutover_step().map(|(i, c)| (i, c.clone())) else {
        return Err(Error::usage(
            format!(
                "plan `{}` has no cutover step, so there is nothing to roll back",
                plan.plan.name
            ),
            "clients were never moved by this plan",
        ));
    };
    let Some(session) = Session::open(plan.clone(), cloud, options, reporter, prompter)? else {
        return Err(Error::usage(
            format!("plan `{}` has not been run", plan.plan.name),
            "there is nothing to roll back",
        ));
    };
    let state = session.state();
    if state.state == RunStatus::RolledBack {
        retire_evidence(&session.context(index));
        return Ok(state);
    }
    check_rollback_possible(&plan, &state, index)?;
    if !yes
        && !session.prompter().confirm(&format!(
            "Point clients back at `{}` and copy the target's writes to it?",
            plan.plan.source.replication_group_id
        ))?
    {
        return Err(Error::failed(
            "the rollback was not confirmed",
            "run `ecmigrate rollback PLAN` again and confirm, or pass --yes",
        ));
    }
    let state_before = state.state;
    session.update(|s| s.state = RunStatus::Running)?;
    let ctx = session.context(index);
    match switch_back(&ctx, &spec).await {
        Ok(outputs) => {
            let outputs = serde_json::to_value(outputs).expect("outputs serialize");
            session.update(|s| {
                s.steps[index].outputs.insert("rolled_back".into(), outputs);
                s.state = RunStatus::RolledBack;
            })?;
            retire_evidence(&ctx);
            Ok(session.state())
        }
        Err(e) => {
            // Once clients were switched back, the plan must never run on to delete the source.
            session.update(|s| {
                let switched_back = s.steps[index]
                    .intent_as::<CutoverIntent>()
                    .rollback_switched
                    .is_some();
                s.state = if switched_back {
                    RunStatus::RolledBack
                } else {
                    state_before
                };
            })?;
            if session.state().state == RunStatus::RolledBack {
                retire_evidence(&ctx);
            }
            Err(e)
        }
    }
}

/// The evidence pack of a finished run that was then rolled back no longer describes where clients
/// are: it is kept, renamed `rolled-back-report.*`, so that nobody hands it on as the migration's.
fn retire_evidence(ctx: &StepContext) {
    let dir = ctx.state_folder();
    for ext in ["md", "json", "html"] {
        let from = dir.join(format!("report.{ext}"));
        if from.exists() {
            let to = dir.join(format!("rolled-back-report.{ext}"));
            if let Err(e) = std::fs::rename(&from, &to) {
                ctx.note(format!(
                    "{} could not be renamed after the rollback ({e}): it describes the migration, not where clients are now",
                    from.display()
                ));
            }
        }
    }
}

/// A rollback needs the switch made and the source not (being) deleted.
fn check_rollback_possible(plan: &LoadedPlan, state: &RunState, index: usize) -> Result<()> {
    let record = &state.steps[index];
    let switched =
        record.status == StepStatus::Done || record.intent_as::<CutoverIntent>().switched.is_some();
    if !switched {
        return Err(Error::usage(
            "the cutover has not switched clients yet, so there is nothing to roll back",
            "to stop the migration, stop the run; the source keeps serving clients",
        ));
    }
    let deleting = state.steps.iter().any(|r| {
        r.kind == StepKind::DeleteSource
            && (r.status == StepStatus::Done
                || r.intent_as::<DeleteSourceIntent>().deleting.is_some())
    });
    if deleting {
        return Err(Error::usage(
            format!(
                "the source `{}` was deleted: a rollback is no longer possible",
                plan.plan.source.replication_group_id
            ),
            "restore the source from its final snapshot if you need it back",
        ));
    }
    Ok(())
}

/// The cutover's outputs with the rollback's, as `ecmigrate rollback` reports them.
pub fn rolled_back_outputs(state: &RunState) -> Option<RollbackOutputs> {
    let record = state.steps.iter().find(|r| r.kind == StepKind::Cutover)?;
    serde_json::from_value(record.outputs.get("rolled_back")?.clone()).ok()
}

/// Capture the target and copy all of it onto the source: which keys changed on the target since the
/// switch is not known, so the capture starts with a gap that a full pass closes.
async fn copy_target_back(
    ctx: &StepContext,
    target_endpoint: &crate::data::connect::RedisEndpoint,
    source_endpoint: crate::data::connect::RedisEndpoint,
) -> Result<Arc<tokio::sync::Mutex<StreamCopy>>> {
    let style = crate::data::capture::detect_style(target_endpoint, true)
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
    Ok(stream)
}

/// After the switch back: copy the target's late writes (clients still on its address) for `window`.
async fn tail_target(
    ctx: &StepContext,
    stream: &Arc<tokio::sync::Mutex<StreamCopy>>,
    window: Duration,
) -> Result<()> {
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
    Ok(())
}
