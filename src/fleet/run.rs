//! `fleet run`: every plan of a fleet folder, each exactly as `ecmigrate run` runs it (its own state,
//! lock and journal under the state dir, so a fleet run killed and started again resumes each plan where
//! it stopped, and a finished plan is "already done"), as tokio tasks of one process, at most
//! `parallel` at a time.
//!
//! A plan waiting at a postponed cutover gives its slot to the next plan: it only tails its stream, and
//! the point of postponing is to bring every group to its cutover and release them together (`fleet
//! cutover DIR`, or `ecmigrate cutover PLAN` one by one). The fleet run goes on while plans wait — the
//! waiting run lives in this process — and ends when every plan is done, failed, or was not started.
//!
//! The runner emits [`FleetEvent`]s and hands each plan the engine listener a [`FleetObserver`] gives it;
//! only the observer (`ui`) draws.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::cloud::{Cloud, CloudRead};
use crate::engine::events::EventListener;
use crate::engine::state::{RunStatus, StatePaths};
use crate::engine::{self, CloudAccess, NoPrompter, RunOptions};
use crate::error::{Error, Result, exit_code};
use crate::fleet::Manifest;
use crate::plan::LoadedPlan;

/// How a fleet run was asked to go.
#[derive(Debug, Clone)]
pub struct FleetOptions {
    /// At most this many plans run at once (a plan waiting at its cutover does not count).
    pub parallel: usize,
    pub dry_run: bool,
    /// Every plan runs as `ecmigrate run --yes` (destructive steps still need `confirm:` in the plan).
    pub yes: bool,
    /// A failed plan does not stop the fleet from starting the others.
    pub keep_going: bool,
    pub state_dir: PathBuf,
}

/// Which plan, which group, where: how every line and JSON object of a fleet run names its plan.
#[derive(Debug, Clone, Serialize)]
pub struct PlanLabel {
    pub plan: String,
    pub group: String,
    pub region: String,
}

/// One plan of the fleet, loaded.
pub struct FleetPlan {
    pub label: PlanLabel,
    /// The plan file as the operator names it (the fleet folder joined with the manifest's path).
    pub file: PathBuf,
    pub plan: Arc<LoadedPlan>,
}

/// How one plan of a fleet run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Done,
    /// It had finished before this fleet run: nothing ran.
    AlreadyDone,
    /// `--dry-run`: rehearsed, nothing changed.
    Rehearsed,
    Failed,
    /// Another process holds the plan's lock: nothing ran.
    Busy,
    /// Not started: an earlier plan failed (and no `--keep-going`).
    NotStarted,
}

#[derive(Debug, Clone, Serialize)]
pub struct PlanResult {
    #[serde(flatten)]
    pub label: PlanLabel,
    pub outcome: Outcome,
    /// What `ecmigrate run PLAN` would have exited with.
    pub exit_code: i32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
    /// The evidence pack's Markdown.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub report: Option<PathBuf>,
}

/// What a fleet run says besides its plans' own events.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum FleetEvent {
    FleetStarted {
        plans: usize,
        parallel: usize,
        dry_run: bool,
    },
    PlanStarted {
        #[serde(flatten)]
        label: PlanLabel,
    },
    /// The plan holds at its postponed cutover (its slot goes to the next plan).
    PlanWaiting {
        #[serde(flatten)]
        label: PlanLabel,
        release: String,
    },
    PlanFinished(PlanResult),
    FleetFinished {
        plans: Vec<PlanResult>,
        exit_code: i32,
    },
}

/// Where the runner's output goes: the engine listener of each plan, and the fleet's own events.
pub trait FleetObserver: Send + Sync {
    fn plan_listener(&self, label: &PlanLabel) -> Arc<dyn EventListener>;
    fn fleet_event(&self, event: &FleetEvent);
}

/// The cloud a plan runs against (the binary wires it: the sandbox, or AWS clients sharing one retry
/// budget per region).
#[async_trait::async_trait]
pub trait CloudSource: Send + Sync {
    async fn cloud(&self, plan: &LoadedPlan) -> Result<Arc<dyn Cloud>>;
}

/// Load the plan of every planned group. One that does not load stops the fleet before anything runs
/// (nothing changed), naming its file.
pub fn load_plans(dir: &Path, manifest: &Manifest) -> Result<Vec<FleetPlan>> {
    let mut plans: Vec<FleetPlan> = Vec::new();
    for group in manifest.planned() {
        let file = dir.join(group.plan.as_ref().expect("planned"));
        let plan = crate::plan::load(&file)?;
        if let Some(other) = plans.iter().find(|p| p.plan.plan.name == plan.plan.name) {
            return Err(Error::usage(
                format!(
                    "{} and {} have the same name `{}`: they would share one state folder",
                    other.file.display(),
                    file.display(),
                    plan.plan.name
                ),
                "give each plan of the fleet its own `name` (`fleet plan` does)",
            ));
        }
        plans.push(FleetPlan {
            label: PlanLabel {
                plan: plan.plan.name.clone(),
                group: group.replication_group_id.clone(),
                region: group.region.clone(),
            },
            file,
            plan: Arc::new(plan),
        });
    }
    Ok(plans)
}

/// The exit code of a fleet run: a failed plan makes it 1; else a plan held by another process, 4.
pub fn fleet_exit_code(results: &[PlanResult]) -> i32 {
    if results.iter().any(|r| r.outcome == Outcome::Failed) {
        exit_code::FAILED
    } else if results.iter().any(|r| r.outcome == Outcome::Busy) {
        exit_code::BUSY
    } else {
        exit_code::OK
    }
}

/// A running plan's slot, given back when the plan waits at its cutover (or ends).
type Slot = Arc<Mutex<Option<OwnedSemaphorePermit>>>;

/// Run every plan, at most `options.parallel` at a time, in order; returns each plan's result.
pub async fn run(
    plans: Vec<FleetPlan>,
    options: FleetOptions,
    clouds: Arc<dyn CloudSource>,
    observer: Arc<dyn FleetObserver>,
) -> Vec<PlanResult> {
    observer.fleet_event(&FleetEvent::FleetStarted {
        plans: plans.len(),
        parallel: options.parallel,
        dry_run: options.dry_run,
    });
    let order: Vec<String> = plans.iter().map(|p| p.label.plan.clone()).collect();
    let slots = Arc::new(Semaphore::new(options.parallel.max(1)));
    let failed = Arc::new(AtomicBool::new(false));
    let mut running = Vec::new();
    let mut results = Vec::new();
    for fleet_plan in plans {
        let permit = slots.clone().acquire_owned().await.expect("never closed");
        if failed.load(Ordering::SeqCst) && !options.keep_going {
            drop(permit);
            let result = not_started(&fleet_plan.label);
            observer.fleet_event(&FleetEvent::PlanFinished(result.clone()));
            results.push(result);
            continue;
        }
        let slot: Slot = Arc::new(Mutex::new(Some(permit)));
        let task = tokio::spawn(run_plan(
            fleet_plan,
            options.clone(),
            clouds.clone(),
            observer.clone(),
            slot,
            failed.clone(),
        ));
        running.push(task);
    }
    for task in running {
        let result = task.await.unwrap_or_else(|e| PlanResult {
            label: PlanLabel {
                plan: "?".into(),
                group: "?".into(),
                region: "?".into(),
            },
            outcome: Outcome::Failed,
            exit_code: exit_code::FAILED,
            error: Some(format!("internal: the plan's task ended abnormally: {e}")),
            hint: Some("report this bug; run the fleet again to resume".into()),
            report: None,
        });
        results.push(result);
    }
    // In the manifest's order, whatever order they finished in.
    results.sort_by_key(|r| order.iter().position(|n| *n == r.label.plan));
    let code = fleet_exit_code(&results);
    observer.fleet_event(&FleetEvent::FleetFinished {
        plans: results.clone(),
        exit_code: code,
    });
    results
}

fn not_started(label: &PlanLabel) -> PlanResult {
    PlanResult {
        label: label.clone(),
        outcome: Outcome::NotStarted,
        exit_code: exit_code::FAILED,
        error: Some("not started: an earlier plan of the fleet failed".into()),
        hint: Some(
            "fix the failed plan and run the fleet again (finished plans are not run again), or pass --keep-going"
                .into(),
        ),
        report: None,
    }
}

/// One plan, as `ecmigrate run PLAN` runs it, with its evidence pack when it is done.
async fn run_plan(
    fleet_plan: FleetPlan,
    options: FleetOptions,
    clouds: Arc<dyn CloudSource>,
    observer: Arc<dyn FleetObserver>,
    slot: Slot,
    failed: Arc<AtomicBool>,
) -> PlanResult {
    let label = fleet_plan.label.clone();
    observer.fleet_event(&FleetEvent::PlanStarted {
        label: label.clone(),
    });
    let watcher = (!options.dry_run).then(|| {
        tokio::spawn(watch_waiting(
            StatePaths::new(&options.state_dir, &label.plan),
            fleet_plan.file.clone(),
            label.clone(),
            observer.clone(),
            slot.clone(),
        ))
    });
    let outcome = run_engine(&fleet_plan, &options, clouds.as_ref(), observer.as_ref()).await;
    if let Some(w) = watcher {
        w.abort();
    }
    slot.lock().expect("lock").take();
    let result = match outcome {
        Ok((outcome, report)) => PlanResult {
            label,
            outcome,
            exit_code: exit_code::OK,
            error: None,
            hint: None,
            report,
        },
        Err(e) => {
            let busy = matches!(e, Error::Busy { .. });
            if !busy {
                failed.store(true, Ordering::SeqCst);
            }
            PlanResult {
                label,
                outcome: if busy { Outcome::Busy } else { Outcome::Failed },
                exit_code: e.exit_code(),
                error: Some(e.to_string()),
                hint: Some(e.hint()),
                report: None,
            }
        }
    };
    observer.fleet_event(&FleetEvent::PlanFinished(result.clone()));
    result
}

async fn run_engine(
    fleet_plan: &FleetPlan,
    options: &FleetOptions,
    clouds: &dyn CloudSource,
    observer: &dyn FleetObserver,
) -> Result<(Outcome, Option<PathBuf>)> {
    let plan = fleet_plan.plan.clone();
    let cloud = clouds.cloud(&plan).await?;
    let reader: Arc<dyn CloudRead> = cloud.clone();
    let access = if options.dry_run {
        CloudAccess::ReadOnly(reader.clone())
    } else {
        CloudAccess::Real(cloud)
    };
    let run_options = RunOptions {
        dry_run: options.dry_run,
        yes: options.yes,
        // Several plans at once cannot share one terminal's prompts: the fleet asked once, up front.
        interactive: false,
        state_dir: options.state_dir.clone(),
    };
    let summary = engine::run(
        plan.clone(),
        access,
        run_options,
        Arc::new(crate::steps::Steps::default()),
        observer.plan_listener(&fleet_plan.label),
        Arc::new(NoPrompter),
    )
    .await?;
    if options.dry_run {
        return Ok((Outcome::Rehearsed, None));
    }
    let dir = StatePaths::new(&options.state_dir, &plan.plan.name).dir;
    // A pack that cannot be written is not a failed migration: `fleet run` again writes it.
    let report = crate::report::ensure(
        &summary.state,
        &plan,
        reader.as_ref(),
        &dir,
        summary.already_done,
    )
    .await
    .ok()
    .flatten();
    let outcome = if summary.already_done {
        Outcome::AlreadyDone
    } else {
        Outcome::Done
    };
    Ok((outcome, report))
}

/// While the plan runs: when its state says it waits at the postponed cutover, say so once and give its
/// slot to the next plan.
async fn watch_waiting(
    paths: StatePaths,
    file: PathBuf,
    label: PlanLabel,
    observer: Arc<dyn FleetObserver>,
    slot: Slot,
) {
    let mut said = false;
    loop {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let waiting = paths
            .load()
            .ok()
            .flatten()
            .is_some_and(|s| s.state == RunStatus::Waiting);
        if waiting && !said {
            said = true;
            slot.lock().expect("lock").take();
            observer.fleet_event(&FleetEvent::PlanWaiting {
                label: label.clone(),
                release: format!("ecmigrate cutover {}", file.display()),
            });
        } else if !waiting {
            // Released, or held again after a failed switch: a new hold is said again.
            said = false;
        }
    }
}
