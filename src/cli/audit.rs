//! `ecmigrate audit [--provider aws|sandbox] [--regions LIST | --all-regions] [--output json]`: every
//! replication group of every region asked for, its encryption state, and the path that fits it. A region
//! that refuses (not opted in, no permission) is reported beside the groups and the others are still read.
//! Exits 1 when any group anywhere is not fully encrypted, or when a region could not be read (the audit is
//! incomplete; with --all-regions a region the account has not opted into does not count), to gate a
//! pipeline. `fleet plan` audits through the same [`audit_regions`].

use clap::Args;
use futures_util::StreamExt;
use serde::Serialize;

use crate::cli::Globals;
use crate::cloud::ReplicationGroup;
use crate::error::{Error, Result, exit_code};
use crate::fleet::RegionOutcome;
use crate::plan::Provider;
use crate::ui::OutputFormat;

#[derive(Args, Debug)]
pub struct AuditArgs {
    #[arg(long, value_enum, default_value = "sandbox")]
    pub provider: ProviderArg,
    #[command(flatten)]
    pub regions: RegionArgs,
    #[arg(long, value_enum, default_value = "text")]
    pub output: OutputFormat,
}

/// Which regions to read (provider `aws`); neither flag: the current region (`--region`, AWS_REGION, the
/// profile's).
#[derive(Args, Debug, Clone, Default)]
pub struct RegionArgs {
    /// Regions to read, comma-separated (e.g. `us-east-1,eu-west-1`).
    #[arg(long, value_delimiter = ',', conflicts_with = "all_regions")]
    pub regions: Vec<String>,
    /// Every region where ElastiCache is offered (the SSM public parameters of the service).
    #[arg(long)]
    pub all_regions: bool,
}

/// The region label of sandbox groups.
pub const SANDBOX_REGION: &str = "sandbox";

/// How many regions are read at once: enough to finish 30-odd regions in a few round trips, few enough to
/// stay far below any account's DescribeReplicationGroups rate.
const REGIONS_AT_ONCE: usize = 6;

/// Every group of every region read, with the region, and each region's outcome.
pub struct RegionAudit {
    pub groups: Vec<(String, ReplicationGroup)>,
    pub regions: Vec<RegionOutcome>,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum ProviderArg {
    Sandbox,
    Aws,
}

#[derive(Serialize)]
pub struct AuditedGroup {
    pub region: String,
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
pub fn assess(region: &str, g: &ReplicationGroup) -> AuditedGroup {
    let crate::eligibility::Assessment {
        eligible,
        recommended_path,
    } = crate::eligibility::assess(g);
    AuditedGroup {
        region: region.to_string(),
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

/// A region code as AWS spells them, before any call.
fn check_region(region: &str) -> Result<()> {
    crate::plan::rules::check_region(region).map_err(|rule| {
        Error::usage(
            format!("--regions: `{region}` {rule}"),
            "list region codes separated by commas, e.g. --regions us-east-1,eu-west-1, or use --all-regions",
        )
    })
}

/// Read every group of the regions asked for. Bad region names are refused before any call; a region
/// that refuses is recorded in its outcome, and the others are still read.
pub async fn audit_regions(
    globals: &Globals,
    provider: Provider,
    which: &RegionArgs,
) -> Result<RegionAudit> {
    if provider == Provider::Sandbox {
        if !which.regions.is_empty() || which.all_regions {
            return Err(Error::usage(
                "--regions / --all-regions: the sandbox has no regions",
                "drop the flag, or audit AWS with --provider aws",
            ));
        }
        let cloud = globals.cloud(provider, None).await?;
        let groups = cloud.list_groups().await.map_err(|e| {
            Error::failed(
                format!("listing replication groups: {e}"),
                "check the sandbox with `ecmigrate sandbox status`",
            )
        })?;
        return Ok(RegionAudit {
            groups: groups
                .into_iter()
                .map(|g| (SANDBOX_REGION.to_string(), g))
                .collect(),
            regions: vec![RegionOutcome {
                region: SANDBOX_REGION.to_string(),
                refused: None,
            }],
        });
    }
    let regions = if which.all_regions {
        crate::cloud::aws::account::elasticache_regions(globals.region.clone(), globals.profile.clone())
            .await
            .map_err(|e| {
                Error::failed(
                    format!("listing the regions where ElastiCache is offered: {e}"),
                    "allow ssm:GetParametersByPath on the public parameters, or name the regions with --regions",
                )
            })?
    } else if which.regions.is_empty() {
        vec![globals.current_region().await?]
    } else {
        for r in &which.regions {
            check_region(r)?;
        }
        let mut regions = which.regions.clone();
        regions.sort();
        regions.dedup();
        regions
    };
    let outcomes: Vec<(String, std::result::Result<Vec<ReplicationGroup>, String>)> =
        futures_util::stream::iter(regions)
            .map(|region| async move {
                let listed = match globals.cloud_in_region(&region).await {
                    Ok(cloud) => cloud.list_groups().await.map_err(|e| e.to_string()),
                    Err(e) => Err(e.to_string()),
                };
                (region, listed)
            })
            .buffered(REGIONS_AT_ONCE)
            .collect()
            .await;
    let mut audit = RegionAudit {
        groups: Vec::new(),
        regions: Vec::new(),
    };
    for (region, listed) in outcomes {
        match listed {
            Ok(groups) => {
                audit
                    .groups
                    .extend(groups.into_iter().map(|g| (region.clone(), g)));
                audit.regions.push(RegionOutcome {
                    region,
                    refused: None,
                });
            }
            Err(e) => audit.regions.push(RegionOutcome {
                region,
                refused: Some(e),
            }),
        }
    }
    Ok(audit)
}

pub async fn run(globals: &Globals, args: AuditArgs) -> Result<i32> {
    let provider = match args.provider {
        ProviderArg::Sandbox => Provider::Sandbox,
        ProviderArg::Aws => Provider::Aws,
    };
    let RegionAudit {
        mut groups,
        regions,
    } = audit_regions(globals, provider, &args.regions).await?;
    let refused: Vec<&RegionOutcome> = regions.iter().filter(|r| r.refused.is_some()).collect();
    if refused.len() == regions.len() {
        let (region, why) = (
            &refused[0].region,
            refused[0].refused.as_deref().unwrap_or(""),
        );
        return Err(Error::failed(
            format!("no region could be read; {region}: {why}"),
            "check the credentials, the region and the permission elasticache:DescribeReplicationGroups",
        ));
    }
    groups.sort_by(|(ra, a), (rb, b)| {
        (a.fully_encrypted(), ra, &a.id).cmp(&(b.fully_encrypted(), rb, &b.id))
    });
    let audited: Vec<AuditedGroup> = groups.iter().map(|(r, g)| assess(r, g)).collect();
    let unencrypted = groups.iter().filter(|(_, g)| !g.fully_encrypted()).count();
    // A gate must not pass on what it did not see: a region that could not be read fails the audit,
    // except, with --all-regions, one the account has not opted into (AWS answers those with an
    // unrecognized-client error: the list names every region of the service).
    let unread: Vec<&RegionOutcome> = refused
        .iter()
        .copied()
        .filter(|r| !(args.regions.all_regions && not_opted_in(r.refused.as_deref().unwrap_or(""))))
        .collect();
    match args.output {
        OutputFormat::Json => println!(
            "{}",
            serde_json::json!({ "groups": audited, "regions": regions, "complete": unread.is_empty() })
        ),
        OutputFormat::Text => {
            print_table(&audited, &regions, unencrypted);
            if !unread.is_empty() {
                println!(
                    "the audit is incomplete: {} region(s) could not be read ({})",
                    unread.len(),
                    unread
                        .iter()
                        .map(|r| r.region.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                );
            }
        }
    }
    Ok(if unencrypted > 0 || !unread.is_empty() {
        exit_code::FAILED
    } else {
        exit_code::OK
    })
}

fn print_table(audited: &[AuditedGroup], regions: &[RegionOutcome], unencrypted: usize) {
    println!(
        "{:<16} {:<28} {:<10} {:<8} {:<8} {:<10} {:<6} RECOMMENDED",
        "REGION", "GROUP", "STATUS", "ENGINE", "AT-REST", "TRANSIT", "AUTH"
    );
    for a in audited {
        println!(
            "{:<16} {:<28} {:<10} {:<8} {:<8} {:<10} {:<6} {}",
            a.region,
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
    for r in regions {
        if let Some(why) = &r.refused {
            println!("region {} refused: {why}", r.region);
        }
    }
    let read = regions.iter().filter(|r| r.refused.is_none()).count();
    println!(
        "{unencrypted} of {} group(s) not fully encrypted, in {read} region(s) read{}",
        audited.len(),
        match regions.len() - read {
            0 => String::new(),
            n => format!(" ({n} refused)"),
        }
    );
}

/// Whether a region's error is AWS's answer for a region the account has not opted into.
fn not_opted_in(error: &str) -> bool {
    [
        "UnrecognizedClient",
        "InvalidClientTokenId",
        "OptInRequired",
        "AuthFailure",
    ]
    .iter()
    .any(|code| error.contains(code))
}

fn yes_no(b: bool) -> &'static str {
    if b { "yes" } else { "no" }
}
