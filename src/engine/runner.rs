//! The run loop: admit the plan against the ledger, then run each step that has not finished, recording
//! its start, outputs or error, through a [`StepRunner`] the binary wires in. The engine knows no step by
//! name: the runner says what a step does and what must be released when the run ends.

use std::sync::Arc;
use std::time::Instant;

use chrono::Utc;
use serde::Serialize;
use serde_json::{Map, Value};

use crate::cloud::dry_run::DryRunCloud;
use crate::cloud::{CloudRead, CloudWrite};
use crate::engine::events::{Event, EventListener, EventSink};
use crate::engine::ledger::{Admission, Ledger, admit};
use crate::engine::state::{RunState, RunStatus, StateLock, StatePaths, StepStatus};
use crate::engine::tokens::{DryRunTokenSink, RealTokenSink};
use crate::engine::{CloudAccess, Prompter, RunOptions, StepContext, TokenSink, new_run_id};
use crate::error::{Error, Refusal, Result};
use crate::plan::{LoadedPlan, StepSpec};

/// What a finished step leaves in the state file.
pub struct StepOutcome {
    pub outputs: Map<String, Value>,
    /// The step had nothing to do (recorded as `skipped`).
    pub skipped: bool,
}

impl StepOutcome {
    /// A finished step and its outputs (a serde struct of the step's, or a map).
    pub fn done<T: Serialize>(outputs: &T) -> Self {
        let outputs = match serde_json::to_value(outputs).expect("outputs serialize") {
            Value::Object(map) => map,
            other => panic!("a step's outputs must serialize to an object, got {other}"),
        };
        StepOutcome {
            outputs,
            skipped: false,
        }
    }
}

/// What the steps are: the engine calls it, the steps implement it, the binary wires the two.
#[async_trait::async_trait]
pub trait StepRunner: Send + Sync {
    /// Refuse a plan before anything runs (a confirmation that cannot be given, say).
    fn check_plan(&self, plan: &LoadedPlan, options: &RunOptions) -> Result<()>;
    /// Run (or resume) one step.
    async fn run_step(&self, spec: &StepSpec, ctx: &StepContext) -> Result<StepOutcome>;
    /// The run ended, done or failed: stop whatever the steps left running (a change stream, say).
    async fn finish(&self);
}

/// The outcome of `run`.
pub struct RunSummary {
    pub state: RunState,
    pub state_file: Option<std::path::PathBuf>,
    /// The plan had finished before this run: nothing ran.
    pub already_done: bool,
}

/// The reading and writing halves of the cloud, the rehearsal overlay (dry run only), and the token sink.
struct CloudHandles {
    read: Arc<dyn CloudRead>,
    write: Arc<dyn CloudWrite>,
    dry_run: Option<Arc<DryRunCloud>>,
    tokens: Arc<dyn TokenSink>,
}

fn cloud_handles(cloud: CloudAccess, dry_run: bool) -> Result<CloudHandles> {
    match (cloud, dry_run) {
        (CloudAccess::Real(c), false) => Ok(CloudHandles {
            read: c.clone(),
            write: c,
            dry_run: None,
            tokens: Arc::new(RealTokenSink),
        }),
        (CloudAccess::ReadOnly(reader), true) => {
            let d = Arc::new(DryRunCloud::new(reader));
            Ok(CloudHandles {
                read: d.clone(),
                write: d.clone(),
                dry_run: Some(d),
                tokens: Arc::new(DryRunTokenSink),
            })
        }
        (_, dry_run) => Err(Error::failed(
            format!(
                "internal: a {} was handed the wrong kind of cloud access",
                if dry_run { "rehearsal" } else { "real run" }
            ),
            "report this bug; nothing was changed",
        )),
    }
}

fn rolled_back(plan: &LoadedPlan) -> Error {
    Error::PreflightRefused {
        refusals: vec![Refusal {
            check: "rolled_back".into(),
            message: format!(
                "plan `{}` was rolled back: clients point at the source `{}` again",
                plan.plan.name, plan.plan.source.replication_group_id
            ),
            hint: match &plan.plan.target {
                Some(target) => format!(
                    "to migrate again, delete the target `{}` (or choose another target id) and give the plan a new `name`; `ecmigrate status PLAN` shows the rollback",
                    target.replication_group_id
                ),
                // An in-place plan that reuses the name of a rolled-back migration.
                None => "give the plan a new `name`: this one's state is of a rolled-back migration; `ecmigrate status PLAN` shows it".into(),
            },
        }],
    }
}

/// Run (or resume, or rehearse) a plan.
pub async fn run(
    plan: Arc<LoadedPlan>,
    cloud: CloudAccess,
    options: RunOptions,
    steps: Arc<dyn StepRunner>,
    reporter: Arc<dyn EventListener>,
    prompter: Arc<dyn Prompter>,
) -> Result<RunSummary> {
    let paths = StatePaths::new(&options.state_dir, &plan.plan.name);
    // Refuse a recorded state that cannot go on before anything else (a rehearsal holds no lock).
    admit(paths.load()?, &plan.plan, new_run_id)?;
    steps.check_plan(&plan, &options)?;
    let handles = cloud_handles(cloud, options.dry_run)?;
    let lock = if options.dry_run {
        if paths.is_locked() {
            reporter.event(&Event::Note {
                kind: plan.plan.steps[0].kind(),
                message: "another ecmigrate process is running this plan now; the rehearsal reads the state it had saved"
                    .into(),
            });
        }
        None
    } else {
        Some(StateLock::acquire(&paths)?)
    };
    // Admitted again under the lock: another run may have finished in between.
    let (mut state, admission) = admit(paths.load()?, &plan.plan, new_run_id)?;
    match admission {
        Admission::RolledBack => return Err(rolled_back(&plan)),
        Admission::Done => {
            return Ok(RunSummary {
                state,
                state_file: Some(paths.state_file()),
                already_done: true,
            });
        }
        _ => {}
    }
    let resumed = matches!(admission, Admission::Resume { .. });
    let mut listeners: Vec<Arc<dyn EventListener>> = vec![reporter];
    if let Some(lock) = &lock {
        listeners.push(Arc::new(lock.journal()));
    }
    let events = EventSink::new(listeners);
    state.state = RunStatus::Running;
    let ledger = Arc::new(Ledger::new(state, lock));
    // The plan that runs is recorded before any step does.
    ledger.update(|_| ())?;
    announce(&events, &ledger, &plan, &options, admission, resumed);
    let started = Instant::now();
    let result = run_steps(
        &plan, &options, &handles, &ledger, &events, &prompter, &*steps,
    )
    .await;
    steps.finish().await;
    let finished = match &result {
        Ok(()) => ledger.update(|s| s.state = RunStatus::Done).map(|_| "done"),
        Err(_) => Ok("failed"),
    };
    events.emit(Event::RunFinished {
        state: finished.as_ref().map_or("failed", |s| s).into(),
        elapsed_ms: started.elapsed().as_millis() as u64,
    });
    result?;
    finished?;
    Ok(RunSummary {
        state: ledger.snapshot(),
        state_file: (!options.dry_run).then(|| paths.state_file()),
        already_done: false,
    })
}

/// Journal how the run was admitted: started over, the accepted edits, and the start itself.
fn announce(
    events: &EventSink,
    ledger: &Ledger,
    plan: &LoadedPlan,
    options: &RunOptions,
    admission: Admission,
    resumed: bool,
) {
    let (run_id, plan_checksum) = ledger.read(|s| (s.run_id.clone(), s.plan_checksum.clone()));
    match admission {
        Admission::StartedOver { previous_run_id } => events.emit(Event::StartedOver {
            previous_run_id,
            run_id: run_id.clone(),
        }),
        Admission::Resume { accepted } if !accepted.is_empty() => {
            events.emit(Event::PlanChangeAccepted {
                run_id: run_id.clone(),
                fields: accepted,
                plan_checksum,
            })
        }
        _ => {}
    }
    events.emit(Event::RunStarted {
        plan: plan.plan.name.clone(),
        run_id,
        dry_run: options.dry_run,
        resumed,
        steps: plan.plan.steps.len(),
    });
}

async fn run_steps(
    plan: &Arc<LoadedPlan>,
    options: &RunOptions,
    handles: &CloudHandles,
    ledger: &Arc<Ledger>,
    events: &EventSink,
    prompter: &Arc<dyn Prompter>,
    steps: &dyn StepRunner,
) -> Result<()> {
    for (index, spec) in plan.plan.steps.iter().enumerate() {
        let (status, previous_attempt) =
            ledger.read(|s| (s.steps[index].status, s.steps[index].attempt));
        if matches!(status, StepStatus::Done | StepStatus::Skipped) {
            events.emit(Event::StepSkipped {
                index,
                kind: spec.kind(),
                reason: "finished in an earlier attempt".into(),
            });
            continue;
        }
        let attempt = previous_attempt + 1;
        ledger.update(|s| {
            let r = &mut s.steps[index];
            r.status = StepStatus::Running;
            r.attempt = attempt;
            r.started_at = Some(Utc::now());
            r.error = None;
        })?;
        events.emit(Event::StepStarted {
            index,
            kind: spec.kind(),
            attempt,
        });
        let step_started = Instant::now();
        let ctx = StepContext {
            plan: plan.clone(),
            run_id: ledger.read(|s| s.run_id.clone()),
            cloud: handles.read.clone(),
            write: handles.write.clone(),
            tokens: handles.tokens.clone(),
            events: events.clone(),
            prompter: prompter.clone(),
            options: options.clone(),
            kind: spec.kind(),
            index,
            ledger: ledger.clone(),
            dry_run_cloud: handles.dry_run.clone(),
        };
        match steps.run_step(spec, &ctx).await {
            Ok(outcome) => {
                record_done(ledger, events, index, spec, outcome, step_started)?;
                events.check()?;
            }
            Err(err) => return Err(record_failed(ledger, events, index, spec, err)?),
        }
    }
    Ok(())
}

fn record_done(
    ledger: &Ledger,
    events: &EventSink,
    index: usize,
    spec: &StepSpec,
    outcome: StepOutcome,
    started: Instant,
) -> Result<()> {
    let status = if outcome.skipped {
        StepStatus::Skipped
    } else {
        StepStatus::Done
    };
    ledger.update(|s| {
        let r = &mut s.steps[index];
        r.status = status;
        r.outputs = outcome.outputs.clone();
        r.finished_at = Some(Utc::now());
    })?;
    events.emit(Event::StepDone {
        index,
        kind: spec.kind(),
        elapsed_ms: started.elapsed().as_millis() as u64,
        outputs: Value::Object(outcome.outputs),
    });
    Ok(())
}

/// Record a failed step; returns the error the command ends with.
fn record_failed(
    ledger: &Ledger,
    events: &EventSink,
    index: usize,
    spec: &StepSpec,
    err: Error,
) -> Result<Error> {
    let message = err.to_string();
    let hint = err.hint();
    ledger.update(|s| {
        let r = &mut s.steps[index];
        r.status = StepStatus::Failed;
        r.error = Some(message.clone());
        s.state = RunStatus::Failed;
    })?;
    events.emit(Event::StepFailed {
        index,
        kind: spec.kind(),
        error: message,
        hint: hint.clone(),
    });
    Ok(match err {
        Error::PreflightRefused { .. }
        | Error::Interrupted
        | Error::Usage { .. }
        | Error::StepFailed { .. } => err,
        other => Error::StepFailed {
            step: spec.kind().to_string(),
            message: other.to_string(),
            hint,
        },
    })
}
