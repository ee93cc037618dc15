//! `ecmigrate fleet …`: many groups, in many regions, one plan each, from a fleet folder (`DIR/fleet.json`
//! and the plans beside it).

use clap::Subcommand;

use crate::cli::Globals;
use crate::cli::fleet_run_cmd;
use crate::error::Result;

#[derive(Subcommand, Debug)]
pub enum FleetCommand {
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
            FleetCommand::Run(a) => a.output,
            FleetCommand::Status(a) => a.output,
            FleetCommand::Cutover(a) => a.output,
            FleetCommand::Report(_) => crate::ui::OutputFormat::Text,
        };
        format == crate::ui::OutputFormat::Json
    }
}

pub async fn run(globals: &Globals, command: FleetCommand) -> Result<i32> {
    match command {
        FleetCommand::Run(a) => fleet_run_cmd::run(globals, a).await,
        FleetCommand::Status(a) => fleet_run_cmd::status(globals, a),
        FleetCommand::Cutover(a) => fleet_run_cmd::cutover(globals, a).await,
        FleetCommand::Report(a) => fleet_run_cmd::report(globals, a),
    }
}
