//! `ecmigrate run PLAN [--dry-run] [--yes] [--output text|json]`.

use std::path::PathBuf;
use std::sync::Arc;

use clap::Args;

use crate::cli::Globals;
use crate::cloud::CloudRead;
use crate::engine::{self, CloudAccess, RunOptions};
use crate::error::{Result, exit_code};
use crate::ui::OutputFormat;

#[derive(Args, Debug)]
pub struct RunArgs {
    pub plan: PathBuf,
    /// Rehearse: run every check and print every call that would be made; change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Do not prompt; destructive steps also need `confirm:` in the plan.
    #[arg(long, short = 'y')]
    pub yes: bool,
    #[arg(long, value_enum, default_value = "text")]
    pub output: OutputFormat,
}

pub async fn run(globals: &Globals, args: RunArgs) -> Result<i32> {
    let plan = Arc::new(crate::plan::load(&args.plan)?);
    let (reporter, prompter, interactive) =
        crate::cli::reporter_and_prompter(args.output, globals.verbose);
    let cloud = globals
        .cloud(plan.plan.provider, plan.plan.aws.as_ref())
        .await?;
    // A rehearsal gets only the reading half of the cloud; the engine cannot reach a mutating call.
    let cloud_for_report: Arc<dyn CloudRead> = cloud.clone();
    let access = if args.dry_run {
        let reader: Arc<dyn CloudRead> = cloud;
        CloudAccess::ReadOnly(reader)
    } else {
        CloudAccess::Real(cloud)
    };
    let options = RunOptions {
        dry_run: args.dry_run,
        yes: args.yes,
        interactive,
        state_dir: globals.state_dir.clone(),
    };
    let steps = Arc::new(crate::steps::Steps::default());
    let summary = engine::run(
        plan.clone(),
        access,
        options,
        steps,
        reporter.clone(),
        prompter,
    )
    .await?;
    // The evidence pack of a finished run (written again when it is missing).
    let report = if args.dry_run {
        None
    } else {
        evidence_report(&plan, &summary, cloud_for_report.as_ref(), &reporter).await
    };
    if summary.already_done {
        let message = format!(
            "plan `{}` is already done (run {}): nothing to do",
            plan.plan.name, summary.state.run_id
        );
        match args.output {
            OutputFormat::Json => println!(
                "{}",
                serde_json::json!({ "event": "already_done", "plan": plan.plan.name, "run_id": summary.state.run_id })
            ),
            OutputFormat::Text => reporter.line(&message),
        }
    }
    if args.output == OutputFormat::Text {
        if args.dry_run {
            reporter.line(&reporter.plan_summary());
            reporter.line("dry run finished: nothing was changed");
        } else if let Some(file) = &summary.state_file {
            reporter.line(&format!("state: {}", file.display()));
        }
        if let Some(report) = &report {
            reporter.line(&format!("evidence report: {}", report.display()));
        }
    }
    Ok(exit_code::OK)
}

/// Write the evidence report of a finished run, unless it is already there; a failure is said, not fatal
/// (`ecmigrate run` again writes it).
async fn evidence_report(
    plan: &crate::plan::LoadedPlan,
    summary: &engine::RunSummary,
    cloud: &dyn CloudRead,
    reporter: &crate::ui::Reporter,
) -> Option<PathBuf> {
    let dir = summary.state_file.as_ref()?.parent()?.to_path_buf();
    // The evidence pack is of a migration (before/after of two groups); an in-place change has its
    // outputs in the state (`ecmigrate status`).
    if summary.state.state != crate::engine::state::RunStatus::Done || plan.plan.is_in_place() {
        return None;
    }
    let markdown = dir.join("report.md");
    let complete = ["report.json", "report.html"]
        .iter()
        .all(|f| dir.join(f).exists());
    if summary.already_done && markdown.exists() && complete {
        return Some(markdown);
    }
    match crate::report::write(&summary.state, plan, cloud, &dir).await {
        Ok(files) => Some(files.markdown),
        Err(e) => {
            use crate::engine::events::{Event, EventListener};
            reporter.event(&Event::Note {
                kind: crate::plan::StepKind::DeleteSource,
                message: format!(
                    "the evidence report could not be written: {e} (run `ecmigrate run PLAN` again to write it)"
                ),
            });
            None
        }
    }
}
