//! `ecmigrate cutover PLAN [--no-wait] [--timeout-seconds N] [--output json]`: release a postponed cutover
//! of the run in progress (from another shell), then follow it until the switch is made or fails; on a plan
//! that changes its source in place, release the hold of its step (`enable_transit` in mode `preferred`,
//! `rotate_auth_token` while both tokens are valid) and follow it until the step is done.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::Args;
use serde_json::{Value, json};

use crate::cli::Globals;
use crate::engine::state::{RunState, StatePaths, StepStatus};
use crate::error::{Error, Result, exit_code};
use crate::plan::StepKind;
use crate::steps::cutover::release::{self, Followed, attempts, cutover_outputs};
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
    if plan.plan.is_in_place() {
        return release_in_place(globals, &args, &plan).await;
    }
    let Some((index, spec)) = plan.plan.cutover_step() else {
        return Err(Error::usage(
            format!("plan `{}` has no cutover step", plan.plan.name),
            "add a `cutover` step to the plan",
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
    release::release(&paths, &plan, spec)?;
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

/// What `cutover` says of each in-place step it releases.
struct InPlaceWords {
    already: &'static str,
    waits_in: &'static str,
    released: &'static str,
    following: &'static str,
    done_state: &'static str,
    done: &'static str,
    stopped: &'static str,
}

fn in_place_words(kind: StepKind) -> InPlaceWords {
    match kind {
        StepKind::RotateAuthToken => InPlaceWords {
            already: "the AUTH token was already rotated",
            waits_in: "it holds while both AUTH tokens are valid",
            released: "released: the group will accept only the new AUTH token",
            following: "following the switch to the new token only",
            done_state: "rotated",
            done: "only the new AUTH token opens the group now; the old one was refused",
            stopped: "the run stopped before the old AUTH token was retired",
        },
        _ => InPlaceWords {
            already: "TLS was already required",
            waits_in: "it holds in mode `preferred`",
            released: "released: the group will require TLS",
            following: "following the switch to TLS only",
            done_state: "required",
            done: "the group requires TLS now; a plain-text connection was refused",
            stopped: "the run stopped before TLS was required",
        },
    }
}

/// Release the hold of the plan's in-place step that is not done yet (`enable_transit` in mode
/// `preferred`, `rotate_auth_token` with both tokens valid) and follow it until it is done.
async fn release_in_place(
    globals: &Globals,
    args: &CutoverArgs,
    plan: &crate::plan::LoadedPlan,
) -> Result<i32> {
    let paths = StatePaths::new(&globals.state_dir, &plan.plan.name);
    let state = paths.load()?;
    let step_status = |state: Option<&RunState>, index: usize| {
        state.and_then(|s| s.steps.get(index)).map(|r| r.status)
    };
    // The first holding step not done; with all done, the last one (to say so).
    let mut found = plan.plan.in_place_hold_step(0).ok_or_else(|| {
        Error::usage(
            format!("plan `{}` has no step to release", plan.plan.name),
            "a plan without `target` holds in `enable_transit` or `rotate_auth_token`",
        )
    })?;
    while step_status(state.as_ref(), found.0) == Some(StepStatus::Done) {
        match plan.plan.in_place_hold_step(found.0 + 1) {
            Some(next) => found = next,
            None => break,
        }
    }
    let (index, kind, flag) = found;
    let words = in_place_words(kind);
    let outputs = |state: Option<&RunState>| {
        state
            .and_then(|s| s.outputs_of(kind))
            .map(|o| Value::Object(o.clone()))
            .unwrap_or(Value::Null)
    };
    if step_status(state.as_ref(), index) == Some(StepStatus::Done) {
        return report(
            args,
            kind,
            "already_done",
            words.already,
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
                "start it with `ecmigrate run {}`: {} and waits for this command",
                args.plan.display(),
                words.waits_in
            ),
        ));
    }
    release::release_flag(&paths, plan, flag)?;
    if args.no_wait {
        return report(args, kind, "released", words.released, Value::Null);
    }
    if args.output == OutputFormat::Text {
        println!("`{}` released; {}…", plan.plan.name, words.following);
    }
    let started = Instant::now();
    loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let state = paths.load()?;
        match step_status(state.as_ref(), index) {
            Some(StepStatus::Done) => {
                return report(
                    args,
                    kind,
                    words.done_state,
                    words.done,
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
                    format!("{kind} failed: {error}"),
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
                words.stopped,
                format!(
                    "see `ecmigrate status {0}`; resume with `ecmigrate run {0}`",
                    args.plan.display()
                ),
            ));
        }
        if started.elapsed() > Duration::from_secs(args.timeout_seconds) {
            return Err(Error::failed(
                format!(
                    "{kind} was not done within {} s (the release stands)",
                    args.timeout_seconds
                ),
                format!("follow it with `ecmigrate status {}`", args.plan.display()),
            ));
        }
    }
}

/// Follow the released cutover until the switch is made or fails, in the command's words.
async fn follow(
    args: &CutoverArgs,
    paths: &StatePaths,
    index: usize,
    attempts_before: usize,
) -> Result<i32> {
    let limit = Duration::from_secs(args.timeout_seconds);
    let plan = args.plan.display();
    match release::follow(paths, index, attempts_before, limit).await? {
        Followed::Switched(outputs) => report(
            args,
            StepKind::Cutover,
            "switched",
            "the cutover was made",
            outputs,
        ),
        Followed::Failed(error) => Err(Error::failed(
            format!("the cutover failed: {error}"),
            format!(
                "the source is unpaused; fix the cause and run `ecmigrate run {plan}` to resume"
            ),
        )),
        Followed::WaitingAgain(error) => Err(Error::failed(
            format!("the switch failed ({error}); the source is unpaused and the run waits again"),
            format!("fix the cause, then release again with `ecmigrate cutover {plan}`"),
        )),
        Followed::Stopped => Err(Error::failed(
            "the run stopped before finishing the cutover",
            format!("see `ecmigrate status {plan}`; resume with `ecmigrate run {plan}`"),
        )),
        Followed::TimedOut => Err(Error::failed(
            format!(
                "the cutover did not finish within {} s (the release stands)",
                limit.as_secs()
            ),
            format!("follow it with `ecmigrate status {plan}`"),
        )),
    }
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
