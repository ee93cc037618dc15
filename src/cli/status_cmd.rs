//! `ecmigrate status PLAN [--output json]`: where a run stands, from its state file.

use std::path::PathBuf;

use clap::Args;
use serde_json::json;

use crate::cli::Globals;
use crate::engine::state::{RunStatus, StatePaths, StepStatus};
use crate::error::{Result, exit_code};
use crate::ui::OutputFormat;

#[derive(Args, Debug)]
pub struct StatusArgs {
    pub plan: PathBuf,
    #[arg(long, value_enum, default_value = "text")]
    pub output: OutputFormat,
}

pub fn run(globals: &Globals, args: StatusArgs) -> Result<i32> {
    let plan = crate::plan::load(&args.plan)?;
    let paths = StatePaths::new(&globals.state_dir, &plan.plan.name);
    let state = paths.load()?;
    let active = paths.is_locked();
    let run_state = state
        .as_ref()
        .map(|s| s.state)
        .unwrap_or(RunStatus::NotStarted);
    let steps: Vec<serde_json::Value> = plan
        .plan
        .steps
        .iter()
        .enumerate()
        .map(|(i, spec)| {
            let record = state.as_ref().and_then(|s| s.steps.get(i));
            json!({
                "kind": spec.kind(),
                "status": record.map(|r| r.status).unwrap_or(StepStatus::Pending),
                "attempt": record.map(|r| r.attempt).unwrap_or(0),
                "outputs": record.map(|r| serde_json::Value::Object(r.outputs.clone())).unwrap_or(json!({})),
                "error": record.and_then(|r| r.error.clone()),
                "started_at": record.and_then(|r| r.started_at),
                "finished_at": record.and_then(|r| r.finished_at),
            })
        })
        .collect();
    // The live stream's lag, as the run's tailer last wrote it.
    let stream: Option<serde_json::Value> = std::fs::read_to_string(paths.dir.join("stream.json"))
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok());
    let next = steps
        .iter()
        .find(|s| !matches!(s["status"].as_str(), Some("done") | Some("skipped")))
        .and_then(|s| s["kind"].as_str().map(str::to_string));
    match args.output {
        OutputFormat::Json => {
            let body = json!({
                "plan": plan.plan.name,
                "state": run_state.as_str(),
                "active": active,
                "run_id": state.as_ref().map(|s| s.run_id.clone()),
                "state_file": paths.state_file(),
                "next_step": next,
                "stream": stream,
                "report": paths.dir.join("report.md").exists().then(|| paths.dir.join("report.md")),
                "steps": steps,
            });
            println!("{body}");
        }
        OutputFormat::Text => {
            let run_id = state.as_ref().map(|s| s.run_id.as_str()).unwrap_or("-");
            let activity = if active {
                " (a run is in progress now)"
            } else {
                ""
            };
            println!(
                "plan `{}`: {}{activity}, run {run_id}",
                plan.plan.name,
                run_state.as_str()
            );
            for (i, s) in steps.iter().enumerate() {
                let status = s["status"].as_str().unwrap_or("?");
                let err = s["error"]
                    .as_str()
                    .map(|e| format!(" — {e}"))
                    .unwrap_or_default();
                println!(
                    "  [{}] {:<18} {status}{err}",
                    i + 1,
                    s["kind"].as_str().unwrap_or("?")
                );
            }
            if let Some(st) = &stream {
                println!(
                    "stream: {} changes replayed, {} pending (oldest {} ms), {} reconcile pass(es); as of {}",
                    st["replayed"],
                    st["capture"]["pending"],
                    st["capture"]["oldest_pending_ms"],
                    st["reconciles"],
                    st["updated_at"].as_str().unwrap_or("?")
                );
            }
            match (run_state, next) {
                (RunStatus::Done, _) => {
                    println!("the migration is finished");
                    let report = paths.dir.join("report.md");
                    if report.exists() {
                        println!(
                            "evidence report: {} (and report.json beside it)",
                            report.display()
                        );
                    }
                }
                (RunStatus::RolledBack, _) => println!(
                    "rolled back: clients point at `{}` again; `ecmigrate run` refuses this plan",
                    plan.plan.source.replication_group_id
                ),
                (RunStatus::Waiting, _) if active => println!(
                    "waiting at the cutover; release it with: ecmigrate cutover {}",
                    args.plan.display()
                ),
                (RunStatus::NotStarted, _) => {
                    println!("next: ecmigrate run {}", args.plan.display())
                }
                (_, Some(step)) if !active => {
                    println!(
                        "next: `{step}`; resume with: ecmigrate run {}",
                        args.plan.display()
                    )
                }
                _ => {}
            }
        }
    }
    Ok(exit_code::OK)
}
