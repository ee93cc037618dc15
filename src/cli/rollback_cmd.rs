//! `ecmigrate rollback PLAN [--yes] [--output text|json]`: point clients back at the source and copy the
//! writes the target took since the switch; allowed until the source is deleted.

use std::path::PathBuf;
use std::sync::Arc;

use clap::Args;
use serde_json::json;

use crate::cli::Globals;
use crate::engine::RunOptions;
use crate::error::{Result, exit_code};
use crate::ui::OutputFormat;

#[derive(Args, Debug)]
pub struct RollbackArgs {
    pub plan: PathBuf,
    /// Do not ask for confirmation.
    #[arg(long, short = 'y')]
    pub yes: bool,
    #[arg(long, value_enum, default_value = "text")]
    pub output: OutputFormat,
}

pub async fn run(globals: &Globals, args: RollbackArgs) -> Result<i32> {
    let plan = Arc::new(crate::plan::load(&args.plan)?);
    plan.needs_target("rollback")?;
    let (reporter, prompter, interactive) =
        crate::cli::reporter_and_prompter(args.output, globals.verbose);
    let cloud = globals
        .cloud(plan.plan.provider, plan.plan.aws.as_ref())
        .await?;
    let options = RunOptions {
        dry_run: false,
        yes: args.yes,
        interactive,
        state_dir: globals.state_dir.clone(),
    };
    let state = crate::steps::cutover::rollback::rollback(
        plan.clone(),
        cloud,
        options,
        reporter.clone(),
        prompter,
    )
    .await?;
    let rolled_back = crate::steps::cutover::rollback::rolled_back_outputs(&state);
    match args.output {
        OutputFormat::Json => println!(
            "{}",
            json!({ "plan": plan.plan.name, "state": state.state.as_str(), "rolled_back": rolled_back })
        ),
        OutputFormat::Text => reporter.line(&format!(
            "plan `{}` is rolled back: clients point at `{}` again; `ecmigrate run` will refuse this plan",
            plan.plan.name, plan.plan.source.replication_group_id
        )),
    }
    Ok(exit_code::OK)
}
