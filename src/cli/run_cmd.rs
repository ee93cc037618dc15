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
    let (reporter, prompter, interactive) = crate::cli::reporter_and_prompter(args.output);
    let cloud = globals
        .cloud(plan.plan.provider, plan.plan.aws.as_ref())
        .await?;
    // A rehearsal gets only the reading half of the cloud; the engine cannot reach a mutating call.
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
    let summary = engine::run(plan.clone(), access, options, reporter.clone(), prompter).await?;
    if args.output == OutputFormat::Text {
        if args.dry_run {
            reporter.line("dry run finished: nothing was changed");
        } else if let Some(file) = &summary.state_file {
            reporter.line(&format!("state: {}", file.display()));
        }
        if let Some(report) = &summary.report {
            reporter.line(&format!("evidence report: {}", report.display()));
        }
    }
    Ok(exit_code::OK)
}
