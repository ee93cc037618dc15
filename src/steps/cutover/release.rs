//! Releasing a postponed cutover from outside the run that holds it (`ecmigrate cutover PLAN`, and
//! `fleet cutover DIR` for every waiting plan of a fleet), and following the switch in the state.

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::engine::state::{RunState, RunStatus, StatePaths, StepStatus, write_atomic};
use crate::error::{Error, Result};
use crate::plan::{CutoverStep, LoadedPlan, StepKind};
use crate::steps::records::CutoverIntent;

use super::RELEASE_FILE;

/// Write the release the waiting run consumes (and remove the plan's flag file, if it has one).
pub fn release(paths: &StatePaths, plan: &LoadedPlan, spec: &CutoverStep) -> Result<()> {
    release_flag(paths, plan, spec.postpone_flag_file.as_deref())
}

/// Write the release a waiting hold consumes (a cutover's, or `enable_transit`'s), and remove the step's
/// flag file, if it has one.
pub fn release_flag(paths: &StatePaths, plan: &LoadedPlan, flag_file: Option<&str>) -> Result<()> {
    write_atomic(
        &paths.dir.join(RELEASE_FILE),
        b"released by ecmigrate cutover\n",
    )
    .map_err(|e| {
        Error::failed(
            format!("cannot write the release: {e}"),
            "check the permissions of --state-dir",
        )
    })?;
    if let Some(flag) = flag_file {
        let _ = std::fs::remove_file(plan.resolve(std::path::Path::new(flag)));
    }
    Ok(())
}

/// How a released cutover ended, as its state shows it.
pub enum Followed {
    /// The switch was made: the step's outputs (or the switch recorded so far).
    Switched(Value),
    /// The step failed, with its error.
    Failed(String),
    /// The switch failed and the run holds again (a new release is needed), with the last error.
    WaitingAgain(String),
    /// No process holds the plan any more, and the cutover is not done.
    Stopped,
    /// Still going after the bound.
    TimedOut,
}

/// Follow the released cutover (step `index`) in the state until the switch is made, fails, the run
/// waits again, stops, or `limit` passes. `attempts_before`: the fence attempts recorded at the release.
pub async fn follow(
    paths: &StatePaths,
    index: usize,
    attempts_before: usize,
    limit: Duration,
) -> Result<Followed> {
    let started = Instant::now();
    loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let state = paths.load()?;
        let record = state.as_ref().and_then(|s| s.steps.get(index));
        match record.map(|r| r.status) {
            Some(StepStatus::Done) => {
                return Ok(Followed::Switched(cutover_outputs(state.as_ref())));
            }
            Some(StepStatus::Failed) => {
                let error = record.and_then(|r| r.error.clone()).unwrap_or_default();
                return Ok(Followed::Failed(error));
            }
            _ => {}
        }
        if let Some(switched) = record.and_then(|r| r.intent_as::<CutoverIntent>().switched) {
            return Ok(Followed::Switched(
                serde_json::to_value(switched).expect("outputs serialize"),
            ));
        }
        let now = attempts(state.as_ref(), index);
        let waiting_again = state
            .as_ref()
            .is_some_and(|s| s.state == RunStatus::Waiting)
            && now.len() > attempts_before
            && !paths.dir.join(RELEASE_FILE).exists();
        if waiting_again {
            let last = now.last().cloned().unwrap_or(Value::Null);
            return Ok(Followed::WaitingAgain(
                last["error"].as_str().unwrap_or("no detail").to_string(),
            ));
        }
        if !paths.is_locked() {
            return Ok(Followed::Stopped);
        }
        if started.elapsed() > limit {
            return Ok(Followed::TimedOut);
        }
    }
}

/// The fence attempts recorded in the cutover step's intent.
pub fn attempts(state: Option<&RunState>, index: usize) -> Vec<Value> {
    state
        .and_then(|s| s.steps.get(index))
        .map(|r| r.intent_as::<CutoverIntent>().attempts)
        .unwrap_or_default()
}

/// The finished cutover step's outputs (`null` when it has not finished).
pub fn cutover_outputs(state: Option<&RunState>) -> Value {
    state
        .and_then(|s| s.outputs_of(StepKind::Cutover))
        .map(|o| Value::Object(o.clone()))
        .unwrap_or(Value::Null)
}
