//! The fleet: many groups, in many regions, migrated by one plan each. This module owns the fleet folder's
//! manifest (`DIR/fleet.json`, written by `fleet plan`): every audited group, what was decided for it (a
//! plan, or the reason it has none), so `fleet run`, `fleet status`, `fleet cutover` and the fleet report
//! all read the same list. Each plan is an ordinary plan: `ecmigrate run DIR/<file>` runs it alone, with its
//! own state and lock.

pub mod cutover;
pub mod plan;
pub mod policy;
pub mod report;
pub mod run;
pub mod status;

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::plan::Provider;

/// The manifest's file name inside a fleet folder.
pub const MANIFEST: &str = "fleet.json";

/// `DIR/fleet.json`: what `fleet plan` found and decided.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Manifest format version; only 1 exists.
    pub version: u32,
    pub provider: Provider,
    /// When `fleet plan` wrote it (RFC 3339).
    pub created_at: String,
    /// The SHA-256 of the policy file the plans were written from.
    pub policy_sha256: String,
    /// Every region audited, with the ones that refused.
    pub regions: Vec<RegionOutcome>,
    /// Every group of the audit, planned or not.
    pub groups: Vec<FleetGroup>,
}

/// One audited region: read, or refused (opt-in, permissions) with the error.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegionOutcome {
    pub region: String,
    /// `None`: the region was read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refused: Option<String>,
}

/// One audited group and what the fleet does with it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FleetGroup {
    /// The region (provider `aws`), `sandbox` on the sandbox.
    pub region: String,
    pub replication_group_id: String,
    pub engine_version: String,
    pub cluster_enabled: bool,
    pub at_rest_encryption_enabled: bool,
    pub transit_encryption_enabled: bool,
    /// The audit's path: `recreate`, `in_place_transit`, `already_encrypted`, `ineligible: …`.
    pub recommended_path: String,
    /// The plan written for it, relative to the fleet folder; `None` when it gets none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan: Option<PathBuf>,
    /// The plan's name (its state folder), with `plan`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan_name: Option<String>,
    /// The new group's id, with `plan`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_id: Option<String>,
    /// Why no plan was written (already encrypted, ineligible, in-place transit is the path, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skipped: Option<String>,
}

impl Manifest {
    /// Read `DIR/fleet.json`.
    pub fn load(dir: &Path) -> Result<Manifest> {
        let path = dir.join(MANIFEST);
        let text = std::fs::read_to_string(&path).map_err(|e| {
            Error::usage(
                format!("cannot read the fleet manifest {}: {e}", path.display()),
                "write the fleet folder with `ecmigrate fleet plan --policy POLICY.yaml --out DIR`",
            )
        })?;
        let manifest: Manifest = serde_json::from_str(&text).map_err(|e| {
            Error::usage(
                format!("{} is not a fleet manifest: {e}", path.display()),
                "write the fleet folder again with `ecmigrate fleet plan`",
            )
        })?;
        if manifest.version != 1 {
            return Err(Error::usage(
                format!(
                    "{}: version {} is not supported (only 1)",
                    path.display(),
                    manifest.version
                ),
                "write the fleet folder again with this ecmigrate's `fleet plan`",
            ));
        }
        Ok(manifest)
    }

    /// Write `DIR/fleet.json` (whole, through a temp file, so a reader never sees half of it).
    pub fn save(&self, dir: &Path) -> Result<()> {
        let path = dir.join(MANIFEST);
        let temp = dir.join(format!(".{MANIFEST}.tmp"));
        let text = serde_json::to_string_pretty(self).unwrap_or_default();
        std::fs::write(&temp, text + "\n")
            .and_then(|()| std::fs::rename(&temp, &path))
            .map_err(|e| {
                Error::failed(
                    format!("cannot write {}: {e}", path.display()),
                    "check that the fleet folder is writable and the disk has room",
                )
            })
    }

    /// The groups that have a plan, in manifest order.
    pub fn planned(&self) -> impl Iterator<Item = &FleetGroup> {
        self.groups.iter().filter(|g| g.plan.is_some())
    }
}
