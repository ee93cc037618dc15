//! `ecmigrate plan validate|schema`.

use std::path::PathBuf;

use clap::Subcommand;

use crate::error::{Result, exit_code};

#[derive(Subcommand, Debug)]
pub enum PlanCommand {
    /// Parse and validate a plan; every problem is listed with file, line, field and rule.
    Validate { plan: PathBuf },
    /// Print the JSON Schema of plan version 1 (for editors).
    Schema,
}

pub fn run(command: PlanCommand) -> Result<i32> {
    match command {
        PlanCommand::Validate { plan } => {
            let loaded = crate::plan::load(&plan)?;
            let change = match &loaded.plan.target {
                Some(t) => format!(
                    "{} → {}",
                    loaded.plan.source.replication_group_id, t.replication_group_id
                ),
                None => format!("{} in place", loaded.plan.source.replication_group_id),
            };
            println!(
                "{}: valid plan `{}` ({change}, {} steps)",
                plan.display(),
                loaded.plan.name,
                loaded.plan.steps.len()
            );
        }
        PlanCommand::Schema => println!("{}", crate::plan::schema_json()),
    }
    Ok(exit_code::OK)
}
