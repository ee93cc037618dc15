//! `ecmigrate audit [--provider aws|sandbox] [--output json]`: every replication group, its encryption
//! state, and the path that fits it. Exits 1 when any group is not fully encrypted, to gate a pipeline.

use clap::Args;
use serde::Serialize;

use crate::cli::Globals;
use crate::cloud::ReplicationGroup;
use crate::error::{Error, Result, exit_code};
use crate::plan::Provider;
use crate::ui::OutputFormat;

#[derive(Args, Debug)]
pub struct AuditArgs {
    #[arg(long, value_enum, default_value = "sandbox")]
    pub provider: ProviderArg,
    #[arg(long, value_enum, default_value = "text")]
    pub output: OutputFormat,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum ProviderArg {
    Sandbox,
    Aws,
}

#[derive(Serialize)]
pub struct AuditedGroup {
    pub replication_group_id: String,
    pub status: String,
    pub engine_version: String,
    pub at_rest_encryption_enabled: bool,
    pub transit_encryption_enabled: bool,
    pub transit_encryption_mode: Option<String>,
    pub auth_token_enabled: bool,
    pub eligible: bool,
    pub recommended_path: String,
}

/// The path that fits a group: already encrypted, transit enabled in place, or recreated.
pub fn assess(g: &ReplicationGroup) -> AuditedGroup {
    let crate::eligibility::Assessment {
        eligible,
        recommended_path,
    } = crate::eligibility::assess(g);
    AuditedGroup {
        replication_group_id: g.id.clone(),
        status: g.status.clone(),
        engine_version: g.engine_version.clone(),
        at_rest_encryption_enabled: g.at_rest_encryption_enabled,
        transit_encryption_enabled: g.transit_encryption_enabled,
        transit_encryption_mode: g.transit_encryption_mode.clone(),
        auth_token_enabled: g.auth_token_enabled,
        eligible,
        recommended_path,
    }
}

pub async fn run(globals: &Globals, args: AuditArgs) -> Result<i32> {
    let provider = match args.provider {
        ProviderArg::Sandbox => Provider::Sandbox,
        ProviderArg::Aws => Provider::Aws,
    };
    let cloud = globals.cloud(provider, None).await?;
    let mut groups = cloud.list_groups().await.map_err(|e| {
        Error::failed(
            format!("listing replication groups: {e}"),
            "check the provider's credentials and region",
        )
    })?;
    groups.sort_by(|a, b| (a.fully_encrypted(), &a.id).cmp(&(b.fully_encrypted(), &b.id)));
    let audited: Vec<AuditedGroup> = groups.iter().map(assess).collect();
    let unencrypted = groups.iter().filter(|g| !g.fully_encrypted()).count();
    match args.output {
        OutputFormat::Json => println!("{}", serde_json::json!({ "groups": audited })),
        OutputFormat::Text => {
            println!(
                "{:<28} {:<10} {:<8} {:<8} {:<10} {:<6} RECOMMENDED",
                "GROUP", "STATUS", "ENGINE", "AT-REST", "TRANSIT", "AUTH"
            );
            for a in &audited {
                println!(
                    "{:<28} {:<10} {:<8} {:<8} {:<10} {:<6} {}",
                    a.replication_group_id,
                    a.status,
                    a.engine_version,
                    yes_no(a.at_rest_encryption_enabled),
                    if a.transit_encryption_enabled {
                        a.transit_encryption_mode.clone().unwrap_or("yes".into())
                    } else {
                        "no".into()
                    },
                    yes_no(a.auth_token_enabled),
                    a.recommended_path
                );
            }
            if audited.is_empty() {
                println!("(no replication groups)");
            }
            println!(
                "{unencrypted} of {} group(s) not fully encrypted",
                audited.len()
            );
        }
    }
    Ok(if unencrypted > 0 {
        exit_code::FAILED
    } else {
        exit_code::OK
    })
}

fn yes_no(b: bool) -> &'static str {
    if b { "yes" } else { "no" }
}
