//! `ecmigrate fleet …`: many groups at once, one ordinary plan each (`crate::fleet`).

use std::path::PathBuf;

use clap::{Args, Subcommand};

use crate::cli::Globals;
use crate::cli::audit::{RegionArgs, audit_regions};
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
