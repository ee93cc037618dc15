//! `ecmigrate fleet …`: many groups, in many regions, one plan each, from a fleet folder (`DIR/fleet.json`
//! and the plans beside it): `plan` and `schema` here, `run`/`status`/`cutover`/`report` in
//! `fleet_run_cmd`.

use std::path::PathBuf;

use clap::{Args, Subcommand};

use crate::cli::Globals;
use crate::cli::audit::{RegionArgs, audit_regions};
use crate::cli::fleet_run_cmd;
use crate::error::{Result, exit_code};
use crate::fleet::Manifest;
use crate::fleet::policy::Policy;
use crate::ui::OutputFormat;

#[derive(Subcommand, Debug)]
pub enum FleetCommand {
    /// Audit the regions and write one plan per migratable unencrypted group, from a policy, into DIR.
    Plan(FleetPlanArgs),
    /// Print the JSON Schema of the fleet policy file.
    Schema,
    /// Run every plan of the fleet folder, at most N at a time; run it again to resume every plan.
    Run(fleet_run_cmd::FleetRunArgs),
    /// Where each group of the fleet stands.
    Status(fleet_run_cmd::FleetStatusArgs),
    /// Release the postponed cutover of every plan of the fleet waiting at it, and follow the switches.
    Cutover(fleet_run_cmd::FleetCutoverArgs),
    /// Write the fleet report again (DIR/fleet-report.md, .html, .json) and print its summary.
    Report(fleet_run_cmd::FleetReportArgs),
}

impl FleetCommand {
    /// Whether the command was asked for JSON output.
    pub fn wants_json(&self) -> bool {
        let format = match self {
            FleetCommand::Plan(a) => a.output,
            FleetCommand::Run(a) => a.output,
            FleetCommand::Status(a) => a.output,
            FleetCommand::Cutover(a) => a.output,
            FleetCommand::Schema | FleetCommand::Report(_) => OutputFormat::Text,
        };
        format == OutputFormat::Json
    }
}

#[derive(Args, Debug)]
pub struct FleetPlanArgs {
    /// The fleet policy (YAML; `ecmigrate fleet schema` prints its schema; the provider is the policy's).
    #[arg(long)]
    pub policy: PathBuf,
    /// The fleet folder to write: one plan per group and `fleet.json`.
    #[arg(long)]
    pub out: PathBuf,
    /// Regions to audit (provider `aws`); neither this nor --all-regions: the policy's `regions`, else the
    /// current region.
    #[command(flatten)]
    pub regions: RegionArgs,
    #[arg(long, value_enum, default_value = "text")]
    pub output: OutputFormat,
}

pub async fn run(globals: &Globals, command: FleetCommand) -> Result<i32> {
    match command {
        FleetCommand::Plan(args) => plan(globals, args).await,
        FleetCommand::Schema => {
            println!("{}", crate::fleet::policy::schema_json());
            Ok(exit_code::OK)
        }
        FleetCommand::Run(a) => fleet_run_cmd::run(globals, a).await,
        FleetCommand::Status(a) => fleet_run_cmd::status(globals, a),
        FleetCommand::Cutover(a) => fleet_run_cmd::cutover(globals, a).await,
        FleetCommand::Report(a) => fleet_run_cmd::report(globals, a),
    }
}

async fn plan(globals: &Globals, args: FleetPlanArgs) -> Result<i32> {
    let policy = Policy::load(&args.policy)?;
    let mut which = args.regions.clone();
    if which.regions.is_empty() && !which.all_regions {
        which.regions = policy.regions.clone();
    }
    let audit = audit_regions(globals, policy.provider, &which).await?;
    let decided = crate::fleet::plan::decide(
        &policy,
        &crate::engine::state::checksum(&policy),
        &audit.groups,
        audit.regions,
    )?;
    let written = crate::fleet::plan::write(&args.out, &decided)?;
    let manifest = &decided.manifest;
    match args.output {
        OutputFormat::Json => println!("{}", serde_json::to_string(manifest).unwrap_or_default()),
        OutputFormat::Text => print_decisions(&args, manifest, &written),
    }
    Ok(exit_code::OK)
}

fn print_decisions(args: &FleetPlanArgs, manifest: &Manifest, written: &[(PathBuf, bool)]) {
    for (g, (path, changed)) in manifest.planned().zip(written) {
        println!(
            "plan    {:<16} {:<28} -> {:<28} {}{}",
            g.region,
            g.replication_group_id,
            g.target_id.as_deref().unwrap_or(""),
            path.display(),
            if *changed { "" } else { " (unchanged)" }
        );
    }
    for g in manifest.groups.iter().filter(|g| g.plan.is_none()) {
        println!(
            "skip    {:<16} {:<28} {}",
            g.region,
            g.replication_group_id,
            g.skipped.as_deref().unwrap_or("")
        );
    }
    for r in manifest.regions.iter() {
        if let Some(why) = &r.refused {
            println!("refused {:<16} {why}", r.region);
        }
    }
    let planned = manifest.planned().count();
    println!(
        "{planned} plan(s) written to {}, {} group(s) skipped, {} region(s) read{}; next: ecmigrate fleet run {} --dry-run",
        args.out.display(),
        manifest.groups.len() - planned,
        manifest
            .regions
            .iter()
            .filter(|r| r.refused.is_none())
            .count(),
        match manifest
            .regions
            .iter()
            .filter(|r| r.refused.is_some())
            .count()
        {
            0 => String::new(),
            n => format!(" ({n} refused)"),
        },
        args.out.display()
    );
}
