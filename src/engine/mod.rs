//! The step engine: runs a plan's steps in order, checkpoints each one, resumes after a crash, refuses a
//! changed plan, and rehearses (`--dry-run`) down the same path. It knows nothing about snapshots: steps do.
//!
//! A rehearsal is enforced by construction: the engine is handed only a *reader* of the cloud and wraps it
//! in [`DryRunCloud`]; no state file, lock or token file is written, because the engine holds no
//! [`StateLock`] (the only thing that can write state) and steps get a token sink that refuses to write.

pub mod events;
pub mod state;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::Utc;
use serde_json::{Map, Value};

use crate::cloud::dry_run::DryRunCloud;
use crate::cloud::{Cloud, CloudRead, CloudWrite};
use crate::error::{Error, Result};
use crate::plan::{LoadedPlan, StepKind};
use crate::secret::{Secret, TokenStore};
use crate::ui::Prompter;
use events::{Event, EventListener, EventSink};
use state::{RunState, RunStatus, StateLock, StatePaths, StepStatus};

/// How a run was asked to go.
#[derive(Debug, Clone)]
pub struct RunOptions {
    pub dry_run: bool,
    /// `--yes`: destructive steps proceed without a prompt (with `confirm:` in the plan).
    pub yes: bool,
    /// A person is at a terminal and can answer prompts.
    pub interactive: bool,
    pub state_dir: std::path::PathBuf,
}

/// The cloud a run uses: a real one, or (dry run) only a reader of it.
pub enum CloudAccess {
    Real(Arc<dyn Cloud>),
    ReadOnly(Arc<dyn CloudRead>),
}

/// Where a step may keep a generated token. The rehearsal's sink only checks that it could.
pub trait TokenSink: Send + Sync {
    fn save(&self, store: &TokenStore, token: &Secret) -> std::result::Result<(), String>;
}

struct RealTokenSink;
impl TokenSink for RealTokenSink {
    fn save(&self, store: &TokenStore, token: &Secret) -> std::result::Result<(), String> {
        store.save(token)
    }
}

struct DryRunTokenSink;
impl TokenSink for DryRunTokenSink {
    fn save(&self, store: &TokenStore, _token: &Secret) -> std::result::Result<(), String> {
        store.check_writable()
    }
}

/// The persistence of a run: a locked state file for a real run, memory only for a rehearsal.
struct Ledger {
    state: Mutex<RunState>,
    lock: Option<StateLock>,
}

impl Ledger {
    fn update<R>(&self, f: impl FnOnce(&mut RunState) -> R) -> Result<R> {
        let mut state = self.state.lock().expect("state lock");
        let r = f(&mut state);
        state.updated_at = Utc::now();
        if let Some(lock) = &self.lock {
            lock.save(&state)?;
        }
        Ok(r)
    }

    /// Read the state without copying all of it.
    fn read<R>(&self, f: impl FnOnce(&RunState) -> R) -> R {
        f(&self.state.lock().expect("state lock"))
    }

    fn snapshot(&self) -> RunState {
        self.state.lock().expect("state lock").clone()
    }
}

/// What a step sees: the plan, the cloud, earlier steps' outputs, and ways to record and report.
pub struct StepContext {
    pub plan: Arc<LoadedPlan>,
    pub run_id: String,
    pub cloud: Arc<dyn CloudRead>,
    pub write: Arc<dyn CloudWrite>,
    pub tokens: Arc<dyn TokenSink>,
    pub events: EventSink,
    pub prompter: Arc<dyn Prompter>,
    pub options: RunOptions,
    pub kind: StepKind,
    index: usize,
    ledger: Arc<Ledger>,
    dry_run_cloud: Option<Arc<DryRunCloud>>,
    /// The run's change capture and streaming copy, shared by the steps that start, feed and stop it.
    pub live: Arc<tokio::sync::Mutex<crate::data::stream::LiveState>>,
}

impl StepContext {
    pub fn dry_run(&self) -> bool {
        self.options.dry_run
    }

    /// This plan's state folder (for files a step keeps beside the state, such as the capture's spill).
    pub fn state_folder(&self) -> std::path::PathBuf {
        self.options.state_dir.join(&self.plan.plan.name)
    }

    /// Whether `group` exists only in this rehearsal (its data plane cannot be reached).
    pub fn is_simulated(&self, group: &str) -> bool {
        self.dry_run_cloud
            .as_ref()
            .is_some_and(|c| c.is_simulated_group(group))
    }

    /// This step's intent recorded in an earlier attempt.
    pub fn intent(&self, key: &str) -> Option<Value> {
        self.ledger
            .read(|s| s.steps[self.index].intent.get(key).cloned())
    }

    /// A text recorded as this step's intent in an earlier attempt (a resource name, say).
    pub fn intent_str(&self, key: &str) -> Option<String> {
        self.intent(key)
            .and_then(|v| v.as_str().map(str::to_string))
    }

    /// Record what the step is about to create, durably, before the mutating call.
    pub fn record_intent(&self, key: &str, value: Value) -> Result<()> {
        let index = self.index;
        self.ledger.update(|s| {
            s.steps[index].intent.insert(key.to_string(), value);
        })
    }

    /// Outputs of an earlier finished step.
    pub fn outputs_of(&self, kind: StepKind) -> Option<Map<String, Value>> {
        self.ledger.read(|s| s.outputs_of(kind).cloned())
    }

    pub fn step_done(&self, kind: StepKind) -> bool {
        self.ledger.read(|s| s.step_done(kind))
    }

    pub fn check(&self, name: &str, ok: bool, detail: impl Into<String>) {
        self.events.emit(Event::Check {
            kind: self.kind,
            name: name.into(),
            ok,
            detail: detail.into(),
        });
    }

    pub fn note(&self, message: impl Into<String>) {
        self.events.emit(Event::Note {
            kind: self.kind,
            message: message.into(),
        });
    }

    /// Report a mutating call (made now, or in a rehearsal, one that would be made).
    pub fn call(&self, operation: &str, params: Value) {
        self.events.emit(Event::Call {
            kind: self.kind,
            operation: operation.into(),
            params,
            dry_run: self.options.dry_run,
        });
    }

    /// Mark the whole run as waiting for the operator (a postponed cutover) or running again.
    pub fn set_run_waiting(&self, waiting: bool) -> Result<()> {
        self.ledger.update(|s| {
            s.state = if waiting {
                RunStatus::Waiting
            } else {
                RunStatus::Running
            };
        })
    }

    pub fn waiting(&self, what: &str, status: &str, started: Instant) {
        if self.events.waiting_changed(what, status) {
            self.events.emit(Event::Waiting {
                kind: self.kind,
                what: what.into(),
                status: status.into(),
                elapsed_ms: started.elapsed().as_millis() as u64,
            });
        }
    }

    /// A progress callback for long data work (copies, comparisons), reporting as this step.
    pub fn progress_reporter(&self, what: &'static str) -> impl Fn(u64, u64) + Send + Sync + use<> {
        let events = self.events.clone();
        let kind = self.kind;
        move |done, total| {
            events.emit(Event::Progress {
                kind,
                what: what.into(),
                done,
                total,
            })
        }
    }

    pub fn progress(&self, what: &str, done: u64, total: u64) {
        self.events.emit(Event::Progress {
            kind: self.kind,
            what: what.into(),
            done,
            total,
        });
    }
}

/// The reading and writing halves of the cloud, the rehearsal overlay (dry run only), and the token sink.
type CloudHandles = (
    Arc<dyn CloudRead>,
    Arc<dyn CloudWrite>,
    Option<Arc<DryRunCloud>>,
    Arc<dyn TokenSink>,
);

/// The outcome of `run`.
pub struct RunSummary {
    pub state: RunState,
    pub state_file: Option<std::path::PathBuf>,
    /// The evidence report (`report.md`) of a finished run.
    pub report: Option<std::path::PathBuf>,
}

/// Run (or resume, or rehearse) a plan.
pub async fn run(
    plan: Arc<LoadedPlan>,
    cloud: CloudAccess,
    options: RunOptions,
    reporter: Arc<dyn EventListener>,
    prompter: Arc<dyn Prompter>,
) -> Result<RunSummary> {
    let paths = StatePaths::new(&options.state_dir, &plan.plan.name);
    // A run that created nothing (preflight refused, say) starts over with the plan as it is now.
    let existing = paths
        .load()?
        .filter(|s| !s.nothing_created() || s.check_resumable_with(&plan.plan).is_ok());
    if let Some(state) = &existing {
        state.check_resumable_with(&plan.plan)?;
    }
    crate::steps::confirmations_possible(&plan, &options)?;

    let (cloud_read, cloud_write, dry_run_cloud, tokens): CloudHandles =
        match (cloud, options.dry_run) {
            (CloudAccess::Real(c), false) => (c.clone(), c, None, Arc::new(RealTokenSink)),
            (CloudAccess::ReadOnly(reader), true) => {
                let d = Arc::new(DryRunCloud::new(reader));
                (d.clone(), d.clone(), Some(d), Arc::new(DryRunTokenSink))
            }
            (_, dry_run) => {
                return Err(Error::failed(
                    format!(
                        "internal: a {} was handed the wrong kind of cloud access",
                        if dry_run { "rehearsal" } else { "real run" }
                    ),
                    "report this bug; nothing was changed",
                ));
            }
        };

    let resumed = existing.is_some();
    let (lock, mut state) = if options.dry_run {
        (
            None,
            existing.unwrap_or_else(|| RunState::new(&plan.plan, new_run_id())),
        )
    } else {
        let lock = StateLock::acquire(&paths)?;
        // Read again under the lock: another run may have finished in between.
        let state = paths
            .load()?
            .unwrap_or_else(|| RunState::new(&plan.plan, new_run_id()));
        (Some(lock), state)
    };
    if state.state == RunStatus::RolledBack {
        return Err(Error::PreflightRefused {
            refusals: vec![crate::error::Refusal {
                check: "rolled_back".into(),
                message: format!(
                    "plan `{}` was rolled back: clients point at the source `{}` again",
                    plan.plan.name, plan.plan.source.replication_group_id
                ),
                hint: format!(
                    "to migrate again, delete the target `{}` (or choose another target id) and give the plan a new `name`; `ecmigrate status PLAN` shows the rollback",
                    plan.plan.target.replication_group_id
                ),
            }],
        });
    }
    if state.state == RunStatus::Done {
        let report = paths.dir.join("report.md");
        return Ok(RunSummary {
            report: report.exists().then_some(report),
            state,
            state_file: Some(paths.state_file()),
        });
    }
    // Compatible changes to pending steps: take their new checksums.
    for (record, spec) in state.steps.iter_mut().zip(&plan.plan.steps) {
        if record.status == StepStatus::Pending {
            record.checksum = state::checksum(spec);
        }
    }

    let mut listeners: Vec<Arc<dyn EventListener>> = vec![reporter];
    if let Some(lock) = &lock {
        listeners.push(Arc::new(lock.journal()));
    }
    let events = EventSink::new(listeners);
    state.state = RunStatus::Running;
    let ledger = Arc::new(Ledger {
        state: Mutex::new(state.clone()),
        lock,
    });
    ledger.update(|_| ())?;
    let started = Instant::now();
    let live = Arc::new(tokio::sync::Mutex::new(
        crate::data::stream::LiveState::default(),
    ));
    events.emit(Event::RunStarted {
        plan: plan.plan.name.clone(),
        run_id: state.run_id.clone(),
        dry_run: options.dry_run,
        resumed,
        steps: plan.plan.steps.len(),
    });

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
            cloud: cloud_read.clone(),
            write: cloud_write.clone(),
            tokens: tokens.clone(),
            events: events.clone(),
            prompter: prompter.clone(),
            options: options.clone(),
            kind: spec.kind(),
            index,
            ledger: ledger.clone(),
            dry_run_cloud: dry_run_cloud.clone(),
            live: live.clone(),
        };
        match crate::steps::execute(spec, &ctx).await {
            Ok(outcome) => {
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
                    elapsed_ms: step_started.elapsed().as_millis() as u64,
                    outputs: Value::Object(outcome.outputs),
                });
            }
            Err(err) => {
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
                    error: message.clone(),
                    hint: hint.clone(),
                });
                shutdown_live(&live).await;
                events.emit(Event::RunFinished {
                    state: "failed".into(),
                    elapsed_ms: started.elapsed().as_millis() as u64,
                });
                return Err(match err {
                    Error::PreflightRefused { .. } | Error::Interrupted | Error::Usage { .. } => {
                        err
                    }
                    Error::StepFailed { .. } => err,
                    other => Error::StepFailed {
                        step: spec.kind().to_string(),
                        message: other.to_string(),
                        hint,
                    },
                });
            }
        }
    }
    ledger.update(|s| s.state = RunStatus::Done)?;
    shutdown_live(&live).await;
    let report = if options.dry_run {
        None
    } else {
        match crate::report::write(&ledger.snapshot(), &plan, cloud_read.as_ref(), &paths.dir).await
        {
            Ok(files) => Some(files.markdown),
            Err(e) => {
                events.emit(Event::Note {
                    kind: StepKind::DeleteSource,
                    message: format!("the evidence report could not be written: {e}"),
                });
                None
            }
        }
    };
    events.emit(Event::RunFinished {
        state: "done".into(),
        elapsed_ms: started.elapsed().as_millis() as u64,
    });
    Ok(RunSummary {
        state: ledger.snapshot(),
        state_file: (!options.dry_run).then(|| paths.state_file()),
        report,
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
    let paths = StatePaths::new(&options.state_dir, &plan.plan.name);
    let not_possible = |message: String, hint: &str| Error::Usage {
        message,
        hint: hint.to_string(),
    };
    let Some((index, spec)) = plan.plan.cutover_step().map(|(i, c)| (i, c.clone())) else {
        return Err(not_possible(
            format!(
                "plan `{}` has no cutover step, so there is nothing to roll back",
                plan.plan.name
            ),
            "clients were never moved by this plan",
        ));
    };
    let lock = StateLock::acquire(&paths)?;
    let Some(mut state) = paths.load()? else {
        return Err(not_possible(
            format!("plan `{}` has not been run", plan.plan.name),
            "there is nothing to roll back",
        ));
    };
    if state.state == RunStatus::RolledBack {
        return Ok(state);
    }
    let switched = state.steps[index].status == StepStatus::Done
        || state.steps[index].intent.contains_key("switched");
    if !switched {
        return Err(not_possible(
            "the cutover has not switched clients yet, so there is nothing to roll back".into(),
            "to stop the migration, stop the run; the source keeps serving clients",
        ));
    }
    if state.step_done(StepKind::DeleteSource)
        || state
            .steps
            .iter()
            .any(|r| r.kind == StepKind::DeleteSource && r.intent.contains_key("deleting"))
    {
        return Err(not_possible(
            format!(
                "the source `{}` was deleted: a rollback is no longer possible",
                plan.plan.source.replication_group_id
            ),
            "restore the source from its final snapshot if you need it back",
        ));
    }
    if !options.yes
        && !prompter.confirm(&format!(
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
    state.state = RunStatus::Running;
    let events = EventSink::new(vec![reporter, Arc::new(lock.journal())]);
    let ledger = Arc::new(Ledger {
        state: Mutex::new(state),
        lock: Some(lock),
    });
    ledger.update(|_| ())?;
    let tokens: Arc<dyn TokenSink> = Arc::new(RealTokenSink);
    let ctx = StepContext {
        plan: plan.clone(),
        run_id: ledger.read(|s| s.run_id.clone()),
        cloud: cloud.clone(),
        write: cloud,
        tokens,
        events: events.clone(),
        prompter,
        options,
        kind: StepKind::Cutover,
        index,
        ledger: ledger.clone(),
        dry_run_cloud: None,
        live: Arc::new(tokio::sync::Mutex::new(Default::default())),
    };
    match crate::steps::cutover::rollback(&ctx, &spec).await {
        Ok(outputs) => {
            ledger.update(|s| {
                s.steps[index]
                    .outputs
                    .insert("rolled_back".into(), Value::Object(outputs));
                s.state = RunStatus::RolledBack;
            })?;
            Ok(ledger.snapshot())
        }
        Err(e) => {
            // Once clients were switched back, the plan must never run on to delete the source.
            ledger.update(|s| {
                s.state = if s.steps[index].intent.contains_key("rollback_switched") {
                    RunStatus::RolledBack
                } else {
                    state_before
                };
            })?;
            Err(e)
        }
    }
}

/// Stop any tailing and capture still running when the run ends.
async fn shutdown_live(live: &tokio::sync::Mutex<crate::data::stream::LiveState>) {
    let mut live = live.lock().await;
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

fn new_run_id() -> String {
    let mut bytes = [0u8; 3];
    aws_lc_rs::rand::fill(&mut bytes).expect("random");
    format!(
        "{}-{:02x}{:02x}{:02x}",
        Utc::now().format("%Y%m%d%H%M%S"),
        bytes[0],
        bytes[1],
        bytes[2]
    )
}

/// Poll `probe` until it yields a value, bounded by `timeout`; transient cloud errors back off and retry.
pub async fn wait_until<T, F, Fut>(
    ctx: &StepContext,
    what: &str,
    timeout: Duration,
    mut probe: F,
) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = std::result::Result<Poll<T>, crate::cloud::CloudError>>,
{
    let started = Instant::now();
    let mut interval = Duration::from_millis(200);
    let mut transient_failures = 0u32;
    loop {
        match probe().await {
            Ok(Poll::Ready(v)) => return Ok(v),
            Ok(Poll::Pending(status)) => {
                transient_failures = 0;
                ctx.waiting(what, &status, started);
            }
            Ok(Poll::Failed(message)) => {
                return Err(Error::failed(
                    format!("{what}: {message}"),
                    "see the cloud's events for the cause; fix it and run again to resume",
                ));
            }
            Err(e) if e.is_transient() && transient_failures < 20 => {
                transient_failures += 1;
                ctx.waiting(what, "retrying after a transient error", started);
            }
            Err(e) => {
                return Err(Error::failed(
                    format!("{what}: {e}"),
                    "run the same command again to resume; it picks up what was already created",
                ));
            }
        }
        if started.elapsed() >= timeout {
            return Err(Error::failed(
                format!("{what}: still not ready after {}s", timeout.as_secs()),
                "run the same command again to keep waiting, or raise `timeout_seconds` in the step",
            ));
        }
        tokio::time::sleep(interval).await;
        interval = (interval * 2).min(if ctx.plan.plan.provider == crate::plan::Provider::Aws {
            Duration::from_secs(15)
        } else {
            Duration::from_secs(1)
        });
    }
}

/// One answer of a wait probe.
pub enum Poll<T> {
    Ready(T),
    /// Not yet; the cloud's current status.
    Pending(String),
    /// Will never be ready.
    Failed(String),
}
