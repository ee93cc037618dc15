//! `ecmigrate report PLAN [--format md|html|json]`: the evidence pack of a finished run (`report.md` and
//! `report.html`, `report.json` beside the state), written again from the state and a fresh describe of both groups, and
//! printed in the chosen format.

use std::path::PathBuf;

use clap::Args;

use crate::cli::Globals;
use crate::engine::state::{RunStatus, StatePaths};
use crate::error::{Error, Result, exit_code};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ReportFormat {
    Md,
    Html,
    Json,
}

#[derive(Args, Debug)]
pub struct ReportArgs {
    pub plan: PathBuf,
    /// What to print: the Markdown report, the HTML page or the JSON (all three files are written).
    #[arg(long, value_enum, default_value = "md")]
    pub format: ReportFormat,
}

pub async fn run(globals: &Globals, args: ReportArgs) -> Result<i32> {
    let plan = crate::plan::load(&args.plan)?;
    plan.needs_target("report")?;
    let paths = StatePaths::new(&globals.state_dir, &plan.plan.name);
    let Some(state) = paths.load()? else {
        return Err(Error::usage(
            format!("plan `{}` has not been run", plan.plan.name),
            format!("run it first: ecmigrate run {}", args.plan.display()),
        ));
    };
    if state.state == RunStatus::RolledBack {
        return Err(Error::usage(
            format!(
                "plan `{}` was rolled back: clients use the source `{}` again, so there is no migration to give evidence of",
                plan.plan.name, plan.plan.source.replication_group_id
            ),
            format!(
                "`ecmigrate status {}` shows the rollback; the pack of the migration before it is kept as rolled-back-report.* in the state folder",
                args.plan.display()
            ),
        ));
    }
    if state.state != RunStatus::Done {
        return Err(Error::usage(
            format!(
                "the run of plan `{}` has not finished (it is {}): the evidence pack is of a finished migration",
                plan.plan.name,
                state.state.as_str()
            ),
            format!(
                "finish it with `ecmigrate run {}`; `ecmigrate status {}` shows where it stands",
                args.plan.display(),
                args.plan.display()
            ),
        ));
    }
    let cloud = globals
        .cloud(plan.plan.provider, plan.plan.aws.as_ref())
        .await?;
    let files = crate::report::write(&state, &plan, cloud.as_ref(), &paths.dir)
        .await
        .map_err(|e| {
            Error::failed(
                format!("the evidence report could not be written: {e}"),
                "check disk space and permissions of the state folder (--state-dir)",
            )
        })?;
    let shown = match args.format {
        ReportFormat::Md => &files.markdown,
        ReportFormat::Html => &files.html,
        ReportFormat::Json => &files.json,
    };
    let text = std::fs::read_to_string(shown).map_err(|e| {
        Error::failed(
            format!("cannot read {}: {e}", shown.display()),
            "check the state folder",
        )
    })?;
    print!("{text}");
    if !text.ends_with('\n') {
        println!();
    }
    eprintln!(
        "written: {}, {} and {}",
        files.markdown.display(),
        files.html.display(),
        files.json.display()
    );
    Ok(exit_code::OK)
}
