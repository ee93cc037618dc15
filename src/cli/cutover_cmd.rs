//! `ecmigrate cutover PLAN [--no-wait] [--timeout-seconds N] [--output json]`: release a postponed cutover
//! of the run in progress (from another shell), then follow it until the switch is made or fails; on a plan
//! with `enable_transit`, release its hold in mode `preferred` and follow it until TLS is required.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::Args;
use serde_json::{Value, json};

use crate::cli::Globals;
use crate::engine::state::{RunState, RunStatus, StatePaths, StepStatus, write_atomic};
use crate::error::{Error, Result, exit_code};
use crate::plan::StepKind;
use crate::steps::cutover::RELEASE_FILE;
use crate::steps::records::CutoverIntent;
use crate::ui::OutputFormat;

#[derive(Args, Debug)]
pub struct CutoverArgs {
    pub plan: PathBuf,
    /// Release and return at once, without following the switch.
    #[arg(long)]
    pub no_wait: bool,
    /// Give up following the switch after this long (the release stands).
    #[arg(long, default_value_t = 600)]
    pub timeout_seconds: u64,
    #[arg(long, value_enum, default_value = "text")]
    pub output: OutputFormat,
}

pub async fn run(globals: &Globals, args: CutoverArgs) -> Result<i32> {
    let plan = crate::plan::load(&args.plan)?;
    if let Some((index, spec)) = plan.plan.enable_transit_step() {
        return release_transit(globals, &args, &plan, index, spec).await;
    }
    let Some((index, spec)) = plan.plan.cutover_step() else {
        return Err(Error::usage(
            format!("plan `{}` has no cutover step", plan.plan.name),
            "add a `cutover` step to the plan (or an `enable_transit` step to a plan without `target`)",
        ));
    };
    let paths = StatePaths::new(&globals.state_dir, &plan.plan.name);
    let state = paths.load()?;
    if state.as_ref().is_some_and(|s| {
        s.steps
            .get(index)
            .is_some_and(|r| r.status == StepStatus::Done)
    }) {
        return report(
            &args,
            StepKind::Cutover,
            "already_done",
            "the cutover was already made",
            cutover_outputs(state.as_ref()),
        );
    }
    if !paths.is_locked() {
        return Err(Error::failed(
            format!(
                "no run of plan `{}` is in progress to release",
                plan.plan.name
            ),
            format!(
                "start it with `ecmigrate run {}`: it holds at the cutover and waits for this command",
                args.plan.display()
            ),
        ));
    }
    let attempts_before = attempts(state.as_ref(), index);
    release(&paths, &plan, spec.postpone_flag_file.as_deref())?;
    if args.no_wait {
        return report(
            &args,
            StepKind::Cutover,
            "released",
            "the cutover was released",
            Value::Null,
        );
    }
    if args.output == OutputFormat::Text {
        println!(
            "cutover of `{}` released; following the switch…",
            plan.plan.name
        );
    }
    follow(&args, &paths, index, attempts_before.len()).await
}

/// Write the release the waiting run consumes (and remove the plan's flag file, if it has one).
fn release(
    paths: &StatePaths,
    plan: &crate::plan::LoadedPlan,
    flag_file: Option<&str>,
) -> Result<()> {
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

/// Release the hold of `enable_transit` (mode `preferred`, clients moving to TLS) and follow the step
/// until the group requires TLS and a plain-text connection was refused.
async fn release_transit(
    globals: &Globals,
    args: &CutoverArgs,
    plan: &crate::plan::LoadedPlan,
    index: usize,
    spec: &crate::plan::EnableTransitStep,
) -> Result<i32> {
    let paths = StatePaths::new(&globals.state_dir, &plan.plan.name);
    let step_status =
        |state: Option<&RunState>| state.and_then(|s| s.steps.get(index)).map(|r| r.status);
    let outputs = |state: Option<&RunState>| {
        state
            .and_then(|s| s.outputs_of(StepKind::EnableTransit))
            .map(|o| Value::Object(o.clone()))
            .unwrap_or(Value::Null)
    };
    let state = paths.load()?;
    if step_status(state.as_ref()) == Some(StepStatus::Done) {
        let text = "TLS was already required";
        return report(
            args,
            StepKind::EnableTransit,
            "already_done",
            text,
            outputs(state.as_ref()),
        );
    }
    if !paths.is_locked() {
        return Err(Error::failed(
            format!(
                "no run of plan `{}` is in progress to release",
                plan.plan.name
            ),
            format!(
                "start it with `ecmigrate run {}`: it holds in mode `preferred` and waits for this command",
                args.plan.display()
            ),
        ));
    }
    release(&paths, plan, spec.postpone_flag_file.as_deref())?;
    if args.no_wait {
        let text = "released: the group will require TLS";
        return report(args, StepKind::EnableTransit, "released", text, Value::Null);
    }
    if args.output == OutputFormat::Text {
        println!(
            "`{}` released; following the switch to TLS only…",
            plan.plan.name
        );
    }
    let started = Instant::now();
    loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let state = paths.load()?;
        match step_status(state.as_ref()) {
            Some(StepStatus::Done) => {
                let text = "the group requires TLS now; a plain-text connection was refused";
                return report(
                    args,
                    StepKind::EnableTransit,
                    "required",
                    text,
                    outputs(state.as_ref()),
                );
            }
            Some(StepStatus::Failed) => {
                let error = state
                    .as_ref()
                    .and_then(|s| s.steps.get(index))
                    .and_then(|r| r.error.clone())
                    .unwrap_or_default();
                return Err(Error::failed(
                    format!("enable_transit failed: {error}"),
                    format!(
                        "fix the cause and run `ecmigrate run {}` to resume",
                        args.plan.display()
                    ),
                ));
            }
            _ => {}
        }
        if !paths.is_locked() {
            return Err(Error::failed(
                "the run stopped before TLS was required",
                format!(
                    "see `ecmigrate status {0}`; resume with `ecmigrate run {0}`",
                    args.plan.display()
                ),
            ));
        }
        if started.elapsed() > Duration::from_secs(args.timeout_seconds) {
            return Err(Error::failed(
                format!(
                    "TLS was not required within {} s (the release stands)",
                    args.timeout_seconds
                ),
                format!("follow it with `ecmigrate status {}`", args.plan.display()),
            ));
        }
    }
}

/// Follow the released cutover in the state until the switch is made, fails, or the run waits again.
async fn follow(
    args: &CutoverArgs,
    paths: &StatePaths,
    index: usize,
    attempts_before: usize,
) -> Result<i32> {
    let started = Instant::now();
    let limit = Duration::from_secs(args.timeout_seconds);
    loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let state = paths.load()?;
        let record = state.as_ref().and_then(|s| s.steps.get(index));
        match record.map(|r| r.status) {
            Some(StepStatus::Done) => {
                return report(
                    args,
                    StepKind::Cutover,
                    "switched",
                    "the cutover was made",
                    cutover_outputs(state.as_ref()),
                );
            }
            Some(StepStatus::Failed) => {
                let error = record.and_then(|r| r.error.clone()).unwrap_or_default();
                return Err(Error::failed(
                    format!("the cutover failed: {error}"),
                    format!(
                        "the source is unpaused; fix the cause and run `ecmigrate run {}` to resume",
                        args.plan.display()
                    ),
                ));
            }
            _ => {}
        }
        if let Some(switched) = record.and_then(|r| r.intent_as::<CutoverIntent>().switched) {
            let switched = serde_json::to_value(switched).expect("outputs serialize");
            return report(
                args,
                StepKind::Cutover,
                "switched",
                "the cutover was made",
                switched,
            );
        }
        let now = attempts(state.as_ref(), index);
        let waiting_again = state
            .as_ref()
            .is_some_and(|s| s.state == RunStatus::Waiting)
            && now.len() > attempts_before
            && !paths.dir.join(RELEASE_FILE).exists();
        if waiting_again {
            let last = now.last().cloned().unwrap_or(Value::Null);
            return Err(Error::failed(
                format!(
                    "the switch failed ({}); the source is unpaused and the run waits again",
                    last["error"].as_str().unwrap_or("no detail")
                ),
                format!(
                    "fix the cause, then release again with `ecmigrate cutover {}`",
                    args.plan.display()
                ),
            ));
        }
        if !paths.is_locked() {
            return Err(Error::failed(
                "the run stopped before finishing the cutover",
                format!(
                    "see `ecmigrate status {}`; resume with `ecmigrate run {}`",
                    args.plan.display(),
                    args.plan.display()
                ),
            ));
        }
        if started.elapsed() > limit {
            return Err(Error::failed(
                format!(
                    "the cutover did not finish within {} s (the release stands)",
                    limit.as_secs()
                ),
                format!("follow it with `ecmigrate status {}`", args.plan.display()),
            ));
        }
    }
}

fn attempts(state: Option<&RunState>, index: usize) -> Vec<Value> {
    state
        .and_then(|s| s.steps.get(index))
        .map(|r| r.intent_as::<CutoverIntent>().attempts)
        .unwrap_or_default()
}

fn cutover_outputs(state: Option<&RunState>) -> Value {
    state
        .and_then(|s| s.outputs_of(StepKind::Cutover))
        .map(|o| Value::Object(o.clone()))
        .unwrap_or(Value::Null)
}

fn report(
    args: &CutoverArgs,
    step: StepKind,
    outcome: &str,
    text: &str,
    outputs: Value,
) -> Result<i32> {
    match args.output {
        OutputFormat::Json => println!(
            "{}",
            json!({ "plan": args.plan, "outcome": outcome, "step": step, "outputs": outputs })
        ),
        OutputFormat::Text => {
            let pause = outputs["write_pause_ms"]
                .as_u64()
                .map(|ms| format!(": writes paused {ms} ms"))
                .unwrap_or_default();
            let late = outputs["late"]["late_changes"]
                .as_u64()
                .map(|n| format!(", {n} late change(s) copied"))
                .unwrap_or_default();
            println!("{text}{pause}{late}");
        }
    }
    Ok(exit_code::OK)
}
