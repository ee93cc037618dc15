//! `ecmigrate terraform PLAN [--output text|json] [--out FILE]`: the Terraform hand-off of a migration
//! whose `restore_encrypted` step finished (`handoff::terraform`). Text: the HCL on stdout (or in FILE).
//! JSON: the HCL and the addresses, import id and token reference it uses.

use std::path::PathBuf;

use clap::Args;

use crate::cli::Globals;
use crate::engine::state::{RunStatus, StatePaths};
use crate::error::{Error, Result, exit_code};
use crate::handoff::terraform::{self, HandoffError, Names};
use crate::ui::OutputFormat;

#[derive(Args, Debug)]
#[command(after_help = "\
The file holds an `import` block and an `aws_elasticache_replication_group` resource matching the new
group as the cloud describes it (encryption, KMS key, TLS mode, node type, shards or nodes, subnet and
security groups, parameter group, port), the AUTH token as a sensitive variable or, with a Secrets Manager
token store, a `data \"aws_secretsmanager_secret_version\"` read (never the token itself), and a `removed`
block with `destroy = false` for the old group. Put it in place of the old group's resource block;
`terraform plan` shows the import and no replacement.

Exit codes: 0 written; 1 the new group could not be described or is gone; 2 the plan's run has not
finished `restore_encrypted` (or was rolled back), or invalid input.")]
pub struct TerraformArgs {
    pub plan: PathBuf,
    /// `json`: the HCL, with the addresses, import id and token reference it uses.
    #[arg(long, value_enum, default_value = "text")]
    pub output: OutputFormat,
    /// Write the HCL to FILE instead of stdout (e.g. `ecmigrate.tf` in the team's configuration).
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// Terraform name of the new group's resource (default: its id, `-` as `_`).
    #[arg(long, value_name = "NAME")]
    pub resource_name: Option<String>,
    /// Terraform name the configuration gives the old group (default: its id, `-` as `_`).
    #[arg(long, value_name = "NAME")]
    pub old_resource_name: Option<String>,
}

pub async fn run(globals: &Globals, args: TerraformArgs) -> Result<i32> {
    let plan = crate::plan::load(&args.plan)?;
    plan.needs_target("terraform")?;
    let shown = args.plan.display();
    let names = Names::new(
        &plan,
        args.resource_name.as_deref(),
        args.old_resource_name.as_deref(),
    )
    .map_err(|e| into_error(e, &shown.to_string()))?;
    let state = StatePaths::new(&globals.state_dir, &plan.plan.name).load()?;
    // Refused before any cloud is set up: an unfinished run needs no credentials to be told so.
    terraform::ready(state.as_ref(), &plan).map_err(|e| into_error(e, &shown.to_string()))?;
    let cloud = globals
        .cloud(plan.plan.provider, plan.plan.aws.as_ref())
        .await?;
    let handoff = terraform::handoff(state.as_ref(), &plan, cloud.as_ref(), names)
        .await
        .map_err(|e| into_error(e, &shown.to_string()))?;
    let hcl = handoff.hcl();
    if let Some(path) = &args.out {
        crate::engine::state::write_atomic(path, hcl.as_bytes()).map_err(|e| {
            Error::failed(
                format!("cannot write {}: {e}", path.display()),
                "check the folder exists and is writable",
            )
        })?;
    }
    match args.output {
        OutputFormat::Json => {
            let body = serde_json::json!({
                "hcl": hcl,
                "resource": handoff.resource_address(),
                "import_id": handoff.group.id,
                "removed": handoff.removed_address(),
                "token": handoff.token,
                "run_state": handoff.run_state.as_str(),
                "written": args.out,
            });
            println!(
                "{}",
                serde_json::to_string_pretty(&body).unwrap_or_default()
            );
        }
        OutputFormat::Text if args.out.is_none() => print!("{hcl}"),
        OutputFormat::Text => {}
    }
    if let Some(path) = &args.out {
        eprintln!("written: {}", path.display());
    }
    if handoff.run_state != RunStatus::Done {
        eprintln!(
            "note: the run is {} (it has not finished): clients may still use `{}`; `ecmigrate status {shown}` shows where it stands",
            handoff.run_state.as_str(),
            handoff.old_group_id
        );
    }
    Ok(exit_code::OK)
}

/// The hand-off's refusal as the user-facing error, with what to do next.
fn into_error(e: HandoffError, plan: &str) -> Error {
    let message = e.to_string();
    match e {
        HandoffError::BadName { .. } => Error::usage(
            message,
            "a Terraform name starts with a letter or `_` and holds letters, digits, `_` and `-`",
        ),
        HandoffError::NoRestoreStep { .. } => Error::usage(
            message,
            "the Terraform hand-off is of a plan that creates an encrypted group (`kind: restore_encrypted`)",
        ),
        HandoffError::NotRun { .. } => {
            Error::usage(message, format!("run it first: ecmigrate run {plan}"))
        }
        HandoffError::NotRestored { .. } => Error::usage(
            message,
            format!(
                "finish it with `ecmigrate run {plan}`; `ecmigrate status {plan}` shows where it stands"
            ),
        ),
        HandoffError::RolledBack { .. } => Error::usage(
            message,
            "keep the Terraform configuration of the source; nothing was written",
        ),
        HandoffError::TargetGone { .. } => Error::failed(
            message,
            "check the group's id and region (`ecmigrate audit`); it may have been deleted outside ecmigrate",
        ),
        HandoffError::Describe { .. } => Error::failed(
            message,
            "check the credentials and region (provider aws) or the sandbox (--sandbox-dir), then run it again",
        ),
    }
}
