//! The fleet report, for the auditor: `DIR/fleet-report.{json,md,html}`, every group of the audit (from
//! the manifest), what was done with it (migrated, waiting at the cutover, failed, skipped and why), its
//! encryption before (the audit) and after (the plan's evidence pack, which described the new group when
//! the run finished), links to each plan's evidence pack, and a summary line to quote. Built from the
//! files alone: it can be written again at any time (`fleet report DIR`), and never holds a token.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use crate::engine::state::write_atomic;
use crate::error::{Error, Result};
use crate::fleet::status::{GroupStatus, relative_to};
use crate::fleet::{FleetGroup, Manifest};
use crate::report::doc::{Block, Doc};

pub const BASENAME: &str = "fleet-report";

/// The paths written.
pub struct FleetReportFiles {
    pub json: PathBuf,
    pub markdown: PathBuf,
    pub html: PathBuf,
    /// The summary line, as the documents open with it.
    pub summary: String,
}

/// One group's row: what was done, before and after.
fn group_row(dir: &Path, group: &FleetGroup, status: &GroupStatus) -> Value {
    let evidence: Value = status
        .state_folder
        .as_ref()
        .and_then(|f| std::fs::read_to_string(f.join("report.json")).ok())
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or(Value::Null);
    let target_after = &evidence["target"]["after"];
    let (outcome, after) = match (status.plan.as_ref(), status.state.as_str()) {
        (None, _) => (
            "skipped",
            json!({
                "group": group.replication_group_id,
                "at_rest": group.at_rest_encryption_enabled,
                "in_transit": group.transit_encryption_enabled,
            }),
        ),
        (Some(_), "done") if target_after.is_object() => (
            "migrated",
            json!({
                "group": target_after["ReplicationGroupId"],
                "at_rest": target_after["AtRestEncryptionEnabled"],
                "in_transit": target_after["TransitEncryptionEnabled"],
            }),
        ),
        (Some(_), "done") => ("migrated", json!({ "group": status.target_id })),
        (Some(_), "waiting") => ("waiting", Value::Null),
        (Some(_), "failed") => ("failed", Value::Null),
        (Some(_), "rolled_back") => ("rolled_back", Value::Null),
        (Some(_), "not_started") => ("not_started", Value::Null),
        (Some(_), _) => ("in_progress", Value::Null),
    };
    let pack = |file: &str| {
        status
            .state_folder
            .as_ref()
            .map(|f| f.join(file))
            .filter(|p| p.exists())
            .map(|p| relative_to(&p, dir))
    };
    json!({
        "region": group.region,
        "replication_group_id": group.replication_group_id,
        "engine_version": group.engine_version,
        "recommended_path": group.recommended_path,
        "plan": group.plan,
        "plan_name": status.plan_name,
        "target_id": group.target_id,
        "outcome": outcome,
        "state": status.state,
        "next_step": status.next_step,
        "error": status.error,
        "skipped": group.skipped,
        "before": {
            "at_rest": group.at_rest_encryption_enabled,
            "in_transit": group.transit_encryption_enabled,
        },
        "after": after,
        "evidence": {
            "markdown": pack("report.md"),
            "html": pack("report.html"),
            "json": pack("report.json"),
        },
    })
}

fn both_on(v: &Value) -> bool {
    v["at_rest"] == true && v["in_transit"] == true
}

fn plural(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// The quotable lines: the planned groups now encrypted (with what remains), then the whole audit.
fn summaries(manifest: &Manifest, rows: &[Value]) -> (String, String) {
    let planned: Vec<&Value> = rows.iter().filter(|r| !r["plan"].is_null()).collect();
    let regions = |rows: &[&Value]| {
        rows.iter()
            .filter_map(|r| r["region"].as_str())
            .collect::<BTreeSet<_>>()
            .len()
    };
    let migrated = planned
        .iter()
        .filter(|r| r["outcome"] == "migrated" && both_on(&r["after"]))
        .count();
    let mut parts = vec![format!(
        "{migrated} of {} in {} now encrypted at rest and in transit",
        plural(planned.len(), "planned group", "planned groups"),
        plural(regions(&planned), "region", "regions")
    )];
    for (outcome, words) in [
        ("waiting", "waiting at the cutover"),
        ("in_progress", "in progress or interrupted"),
        ("failed", "failed"),
        ("not_started", "not started"),
        ("rolled_back", "rolled back"),
    ] {
        let n = planned.iter().filter(|r| r["outcome"] == outcome).count();
        if n > 0 {
            parts.push(format!("{n} {words}"));
        }
    }
    let mut reasons: BTreeMap<String, usize> = BTreeMap::new();
    for r in rows.iter().filter(|r| r["plan"].is_null()) {
        *reasons
            .entry(r["skipped"].as_str().unwrap_or("no plan").to_string())
            .or_default() += 1;
    }
    if !reasons.is_empty() {
        let skipped: usize = reasons.values().sum();
        let why: Vec<String> = reasons.iter().map(|(r, n)| format!("{n} {r}")).collect();
        parts.push(format!("{skipped} skipped: {}", why.join(", ")));
    }
    let all: Vec<&Value> = rows.iter().collect();
    let encrypted = rows.iter().filter(|r| both_on(&r["after"])).count();
    let refused: Vec<&str> = manifest
        .regions
        .iter()
        .filter(|r| r.refused.is_some())
        .map(|r| r.region.as_str())
        .collect();
    let refused = if refused.is_empty() {
        String::new()
    } else {
        format!(
            " ({} refused the audit: {})",
            plural(refused.len(), "region", "regions"),
            refused.join(", ")
        )
    };
    let audit = format!(
        "{encrypted} of {} audited in {} {} encrypted at rest and in transit{refused}.",
        plural(all.len(), "group", "groups"),
        plural(regions(&all), "region", "regions"),
        if all.len() == 1 { "is" } else { "are" }
    );
    (format!("{}.", parts.join("; ")), audit)
}

fn yes_no(v: &Value) -> String {
    match v {
        Value::Bool(true) => "yes".into(),
        Value::Bool(false) => "**no**".into(),
        _ => "—".into(),
    }
}

fn document(report: &Value) -> Doc {
    let mut blocks = vec![
        Block::Para(format!("**{}**", report["summary"].as_str().unwrap_or(""))),
        Block::Para(report["audit_summary"].as_str().unwrap_or("").to_string()),
        Block::Heading("Groups".into()),
    ];
    let rows = report["groups"].as_array().cloned().unwrap_or_default();
    blocks.push(Block::Table {
        head: [
            "region",
            "group",
            "what was done",
            "before: at rest",
            "before: in transit",
            "after: group",
            "after: at rest",
            "after: in transit",
            "evidence",
        ]
        .map(String::from)
        .to_vec(),
        rows: rows
            .iter()
            .map(|r| {
                let done = match r["outcome"].as_str().unwrap_or("") {
                    "skipped" => format!("skipped: {}", r["skipped"].as_str().unwrap_or("no plan")),
                    "migrated" => format!(
                        "migrated to `{}`",
                        r["after"]["group"].as_str().unwrap_or("?")
                    ),
                    "waiting" => "waiting at the postponed cutover".into(),
                    "failed" => format!(
                        "failed in `{}`: {}",
                        r["next_step"].as_str().unwrap_or("?"),
                        r["error"].as_str().unwrap_or("")
                    ),
                    "not_started" => "not started".into(),
                    "rolled_back" => "rolled back (clients on the source again)".into(),
                    _ => format!(
                        "{} (at `{}`)",
                        r["state"].as_str().unwrap_or("?"),
                        r["next_step"].as_str().unwrap_or("?")
                    ),
                };
                let links: Vec<String> = ["markdown", "html", "json"]
                    .iter()
                    .filter_map(|k| r["evidence"][k].as_str())
                    .map(|p| {
                        let name = Path::new(p)
                            .file_name()
                            .and_then(|n| n.to_str())
                            .unwrap_or(p);
                        format!("[{name}]({p})")
                    })
                    .collect();
                vec![
                    r["region"].as_str().unwrap_or("").to_string(),
                    format!("`{}`", r["replication_group_id"].as_str().unwrap_or("")),
                    done,
                    yes_no(&r["before"]["at_rest"]),
                    yes_no(&r["before"]["in_transit"]),
                    r["after"]["group"]
                        .as_str()
                        .map(|g| format!("`{g}`"))
                        .unwrap_or_else(|| "—".into()),
                    yes_no(&r["after"]["at_rest"]),
                    yes_no(&r["after"]["in_transit"]),
                    if links.is_empty() {
                        "—".into()
                    } else {
                        links.join(" · ")
                    },
                ]
            })
            .collect(),
    });
    blocks.push(Block::Heading("Regions audited".into()));
    blocks.push(Block::List(
        report["regions"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .map(|r| match r["refused"].as_str() {
                Some(why) => format!("{}: refused ({why})", r["region"].as_str().unwrap_or("?")),
                None => format!("{}: read", r["region"].as_str().unwrap_or("?")),
            })
            .collect(),
    ));
    blocks.push(Block::Heading("This report".into()));
    blocks.push(Block::List(vec![
        format!("written at {}", report["written_at"].as_str().unwrap_or("?")),
        format!(
            "from the fleet manifest `fleet.json` written at {} (provider {}) from the policy with SHA-256 `{}`",
            report["manifest"]["created_at"].as_str().unwrap_or("?"),
            report["manifest"]["provider"].as_str().unwrap_or("?"),
            report["manifest"]["policy_sha256"].as_str().unwrap_or("?")
        ),
        "the encryption after a migration is the one the plan's evidence pack recorded when its run finished; each pack holds the control statement, the snapshots, the verification and the write pause of its group".into(),
    ]));
    Doc {
        title: "Fleet report: rule EC-014, ElastiCache encryption at rest and in transit".into(),
        blocks,
    }
}

/// Build the fleet report from the manifest and each plan's state, and write it into the fleet folder.
pub fn write(dir: &Path, manifest: &Manifest, state_dir: &Path) -> Result<FleetReportFiles> {
    let statuses = crate::fleet::status::read(dir, manifest, state_dir)?;
    let rows: Vec<Value> = manifest
        .groups
        .iter()
        .zip(&statuses)
        .map(|(g, s)| group_row(dir, g, s))
        .collect();
    let (summary, audit_summary) = summaries(manifest, &rows);
    let report = json!({
        "version": 1,
        "written_at": chrono::Utc::now(),
        "summary": summary,
        "audit_summary": audit_summary,
        "manifest": {
            "created_at": manifest.created_at,
            "provider": manifest.provider.as_str(),
            "policy_sha256": manifest.policy_sha256,
        },
        "regions": manifest.regions,
        "groups": rows,
    });
    let doc = document(&report);
    let file = |ext: &str| dir.join(format!("{BASENAME}.{ext}"));
    let body = serde_json::to_string_pretty(&report).expect("json");
    for (path, text) in [
        (file("json"), body),
        (file("md"), doc.markdown()),
        (file("html"), doc.html()),
    ] {
        write_atomic(&path, text.as_bytes()).map_err(|e| {
            Error::failed(
                format!("cannot write {}: {e}", path.display()),
                "check that the fleet folder is writable",
            )
        })?;
    }
    Ok(FleetReportFiles {
        json: file("json"),
        markdown: file("md"),
        html: file("html"),
        summary: format!("{summary} {audit_summary}"),
    })
}
