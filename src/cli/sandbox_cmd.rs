//! `ecmigrate sandbox up|status|delete-group|down|kms`: the embedded stand-in for ElastiCache and KMS.

use clap::Subcommand;
use serde_json::Value;

use crate::cli::Globals;
use crate::error::{Error, Result, exit_code};
use crate::ui::OutputFormat;

#[derive(Subcommand, Debug)]
pub enum SandboxCommand {
    /// Start an unencrypted group of local redis-server nodes seeded with keys.
    Up {
        #[arg(long, default_value = "orders")]
        group: String,
        /// Cluster mode enabled with this many shards (the 16384 slots spread evenly); absent = cluster mode
        /// disabled (one primary).
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..=10))]
        shards: Option<u32>,
        /// Replicas (per shard on a cluster).
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(0..=5))]
        replicas: u32,
        #[arg(long, default_value_t = 10_000)]
        keys: u64,
    },
    /// Groups, nodes, snapshots, aliases and KMS keys of the sandbox.
    Status {
        #[arg(long, value_enum, default_value = "text")]
        output: OutputFormat,
    },
    /// Delete one sandbox group: its processes, node folders and aliases, and the snapshots taken of it.
    DeleteGroup {
        /// The group's id (see `ecmigrate sandbox status`).
        id: String,
        /// Keep the snapshots taken of the group.
        #[arg(long)]
        keep_snapshots: bool,
    },
    /// Stop every sandbox process.
    Down,
    /// Sandbox KMS keys (alias/ALIAS).
    #[command(subcommand)]
    Kms(KmsCommand),
}

#[derive(Subcommand, Debug)]
pub enum KmsCommand {
    Create { alias: String },
    Disable { alias: String },
    Enable { alias: String },
}

fn sandbox_error(what: &str, e: crate::cloud::CloudError) -> Error {
    Error::failed(
        format!("{what}: {e}"),
        "see `ecmigrate sandbox status`; `ecmigrate sandbox down` stops everything",
    )
}

pub async fn run(globals: &Globals, command: SandboxCommand) -> Result<i32> {
    let sandbox = globals.sandbox()?;
    match command {
        SandboxCommand::Up {
            group,
            shards,
            replicas,
            keys,
        } => {
            crate::plan::rules::check_group_id(&group).map_err(|rule| {
                Error::usage(
                    format!("--group `{group}`: {rule}"),
                    "use an ElastiCache-style id such as `orders`",
                )
            })?;
            let bar = (keys > 0 && crate::ui::stdout_is_terminal()).then(|| {
                let b = indicatif::ProgressBar::new(keys);
                b.set_style(crate::ui::progress_style(
                    "seeding {bar:30} {human_pos}/{human_len} keys ({rate})",
                ));
                b
            });
            let progress = |done: u64, _total: u64| {
                if let Some(b) = &bar {
                    b.set_position(done);
                }
            };
            let note = |line: &str| eprintln!("{line}");
            let g = match shards {
                None => sandbox.up(&group, replicas, keys, &progress).await,
                Some(n) => {
                    sandbox
                        .up_cluster(&group, n, replicas, keys, &progress, &note)
                        .await
                }
            }
            .map_err(|e| sandbox_error("sandbox up", e))?;
            if let Some(b) = bar {
                b.finish_and_clear();
            }
            let endpoint = g
                .primary_endpoint
                .map(|e| e.to_string())
                .unwrap_or_default();
            let shape = match g.cluster_enabled {
                true => format!(
                    "cluster mode enabled, {} shard(s), configuration endpoint",
                    g.num_node_groups
                ),
                false => "cluster mode disabled".to_string(),
            };
            println!(
                "sandbox group `{}` is {} at {endpoint} ({shape}; {} node(s), unencrypted, {keys} keys); alias `{}-endpoint`",
                g.id,
                g.status,
                g.nodes.len(),
                g.id
            );
        }
        SandboxCommand::Status { output } => {
            let status = sandbox
                .status()
                .await
                .map_err(|e| sandbox_error("sandbox status", e))?;
            let v = serde_json::to_value(&status).expect("status serializes");
            match output {
                OutputFormat::Json => println!("{v}"),
                OutputFormat::Text => print_status(&v),
            }
        }
        SandboxCommand::DeleteGroup { id, keep_snapshots } => {
            delete_group(&sandbox, &id, keep_snapshots).await?;
        }
        SandboxCommand::Down => {
            let n = sandbox
                .down()
                .await
                .map_err(|e| sandbox_error("sandbox down", e))?;
            println!("stopped {n} sandbox process(es)");
        }
        SandboxCommand::Kms(k) => {
            let key = match &k {
                KmsCommand::Create { alias } => sandbox.kms_create(alias),
                KmsCommand::Disable { alias } => sandbox.kms_set_enabled(alias, false),
                KmsCommand::Enable { alias } => sandbox.kms_set_enabled(alias, true),
            }
            .map_err(|e| sandbox_error("sandbox kms", e))?;
            println!(
                "KMS key {} ({}): {}",
                key.aliases.join(", "),
                key.key_id,
                key.key_state
            );
        }
    }
    Ok(exit_code::OK)
}

async fn delete_group(
    sandbox: &crate::cloud::sandbox::Sandbox,
    id: &str,
    keep_snapshots: bool,
) -> Result<()> {
    crate::plan::rules::check_group_id(id).map_err(|rule| {
        Error::usage(
            format!("sandbox delete-group: group id `{id}`: {rule}"),
            "see `ecmigrate sandbox status` for the groups there are",
        )
    })?;
    let removed = match sandbox.remove_group(id, keep_snapshots).await {
        Ok(r) => r,
        Err(crate::cloud::CloudError::NotFound { .. }) => {
            return Err(Error::usage(
                format!("sandbox delete-group: group id `{id}`: no such sandbox group"),
                "see `ecmigrate sandbox status` for the groups there are",
            ));
        }
        Err(e) => return Err(sandbox_error("sandbox delete-group", e)),
    };
    let list = |names: &[String]| {
        if names.is_empty() {
            "none".to_string()
        } else {
            names.join(", ")
        }
    };
    println!(
        "deleted sandbox group `{}`: stopped {} process(es); aliases removed: {}; snapshots removed: {}{}",
        removed.replication_group_id,
        removed.processes_stopped,
        list(&removed.aliases),
        list(&removed.snapshots),
        if keep_snapshots {
            " (--keep-snapshots)"
        } else {
            ""
        }
    );
    Ok(())
}

fn print_status(v: &Value) {
    let s = |v: &Value| {
        v.as_str()
            .map(str::to_string)
            .unwrap_or_else(|| v.to_string())
    };
    println!("CA: {}", s(&v["ca_file"]));
    println!("groups:");
    for g in v["groups"].as_array().into_iter().flatten() {
        println!(
            "  {:<24} {:<13} at-rest={} transit={} auth={}",
            s(&g["replication_group_id"]),
            s(&g["status"]),
            g["at_rest_encryption_enabled"],
            g["transit_encryption_enabled"],
            g["auth_token_enabled"]
        );
        if let Some(why) = g["failure"].as_str() {
            println!("      failed: {why}");
        }
        let cluster = g["cluster_enabled"] == true;
        if cluster {
            let ep = &g["configuration_endpoint"];
            println!(
                "      cluster mode enabled: {} shard(s), configuration endpoint {}:{}",
                g["num_node_groups"],
                s(&ep["host"]),
                ep["port"]
            );
        }
        for n in g["nodes"].as_array().into_iter().flatten() {
            let shard = match cluster {
                true => format!(" shard={} slots={}", n["shard"], s(&n["slots"])),
                false => String::new(),
            };
            // Transit mode `preferred`: the plain-text port served beside the TLS one.
            let plain = match n["plain_port"].as_u64() {
                Some(p) => format!(" plain={}:{p}", s(&n["host"])),
                None => String::new(),
            };
            println!(
                "      {:<8} {}:{} tls={}{plain}{shard}",
                s(&n["role"]),
                s(&n["host"]),
                n["port"],
                n["tls"]
            );
        }
    }
    println!("snapshots:");
    for snap in v["snapshots"].as_array().into_iter().flatten() {
        let shards = match snap["shard_paths"].as_array().map_or(0, Vec::len) {
            0 => String::new(),
            n => format!(" shards={n} (one file each)"),
        };
        println!(
            "  {:<48} {:<9} of {:<20} encrypted={}{shards}",
            s(&snap["name"]),
            s(&snap["status"]),
            s(&snap["source_group"]),
            snap["encrypted"]
        );
        if let Some(why) = snap["failure"].as_str() {
            println!("      failed: {why}");
        }
    }
    println!("aliases:");
    for (name, group) in v["aliases"].as_object().into_iter().flatten() {
        match v["alias_endpoints"].get(name) {
            Some(ep) => println!(
                "  {name} -> {} ({}:{})",
                s(group),
                s(&ep["host"]),
                ep["port"]
            ),
            None => println!("  {name} -> {}", s(group)),
        }
    }
    if let Some(keys) = v.get("kms_keys").and_then(Value::as_array) {
        println!("kms keys:");
        for k in keys {
            println!("  {}", k);
        }
    }
}
