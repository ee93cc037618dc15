//! Where each group of a fleet stands, read from the files alone (the manifest, each plan's `state.json`,
//! its lock and its evidence pack): what `fleet status` prints, `fleet cutover` releases and the fleet
//! report records. Nothing here calls the cloud.

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::engine::state::{RunState, RunStatus, StatePaths, StepStatus};
use crate::error::Result;
use crate::fleet::{FleetGroup, Manifest};

/// One group of the manifest and where it stands.
#[derive(Debug, Clone, Serialize)]
pub struct GroupStatus {
    pub region: String,
    pub replication_group_id: String,
    /// The plan file, relative to the fleet folder; `None`: skipped.
    pub plan: Option<PathBuf>,
    pub plan_name: Option<String>,
    pub target_id: Option<String>,
    /// `skipped`, `not_started`, `running`, `waiting` (at a postponed cutover), `interrupted`, `failed`,
    /// `done`, `rolled_back`.
    pub state: String,
    /// A process holds the plan's lock now.
    pub active: bool,
    /// The first step not finished, when the run has not.
    pub next_step: Option<String>,
    /// The failed step's error.
    pub error: Option<String>,
    /// Why the group has no plan.
    pub skipped: Option<String>,
    /// The plan's state folder (its evidence pack is `report.md` / `report.html` / `report.json` there).
    pub state_folder: Option<PathBuf>,
    /// The evidence pack's Markdown, when written.
    pub report: Option<PathBuf>,
    #[serde(skip)]
    pub recorded: Option<RunState>,
}

impl GroupStatus {
    pub fn is_waiting(&self) -> bool {
        self.state == RunStatus::Waiting.as_str()
    }

    pub fn is_done(&self) -> bool {
        self.state == RunStatus::Done.as_str()
    }

    /// The `ecmigrate …` argument naming this plan from where the operator stands: the fleet folder
    /// joined with the plan file.
    pub fn plan_path(&self, dir: &Path) -> Option<PathBuf> {
        self.plan.as_ref().map(|p| dir.join(p))
    }
}

/// Every group of the manifest, in its order.
pub fn read(dir: &Path, manifest: &Manifest, state_dir: &Path) -> Result<Vec<GroupStatus>> {
    manifest
        .groups
        .iter()
        .map(|g| group_status(dir, g, state_dir))
        .collect()
}

/// The plan's name: the manifest's, else the plan file's `name`.
pub fn plan_name(dir: &Path, group: &FleetGroup) -> Result<Option<String>> {
    if let Some(name) = &group.plan_name {
        return Ok(Some(name.clone()));
    }
    match &group.plan {
        Some(file) => Ok(Some(crate::plan::load(&dir.join(file))?.plan.name)),
        None => Ok(None),
    }
}

fn group_status(dir: &Path, group: &FleetGroup, state_dir: &Path) -> Result<GroupStatus> {
    let mut status = GroupStatus {
        region: group.region.clone(),
        replication_group_id: group.replication_group_id.clone(),
        plan: group.plan.clone(),
        plan_name: None,
        target_id: group.target_id.clone(),
        state: "skipped".into(),
        active: false,
        next_step: None,
        error: None,
        skipped: group.skipped.clone(),
        state_folder: None,
        report: None,
        recorded: None,
    };
    let Some(name) = plan_name(dir, group)? else {
        return Ok(status);
    };
    let paths = StatePaths::new(state_dir, &name);
    let recorded = paths.load()?;
    status.active = paths.is_locked();
    status.state = recorded
        .as_ref()
        .map_or(RunStatus::NotStarted, |s| s.state)
        .shown(status.active)
        .to_string();
    if let Some(state) = &recorded {
        status.next_step = state
            .steps
            .iter()
            .find(|s| !matches!(s.status, StepStatus::Done | StepStatus::Skipped))
            .map(|s| s.kind.to_string());
        status.error = state.steps.iter().find_map(|s| s.error.clone());
    }
    let report = paths.dir.join("report.md");
    status.report = report.exists().then_some(report);
    status.state_folder = Some(paths.dir);
    status.plan_name = Some(name);
    status.recorded = recorded;
    Ok(status)
}

/// `path` as seen from `from` (both made absolute first), for the links of the fleet report.
pub fn relative_to(path: &Path, from: &Path) -> PathBuf {
    // Canonical where it exists (a symlinked temp folder must not break the climb), else its folder's.
    let absolute = |p: &Path| {
        let p = std::env::current_dir()
            .map(|d| d.join(p))
            .unwrap_or_else(|_| p.to_path_buf());
        std::fs::canonicalize(&p)
            .or_else(|e| match (p.parent(), p.file_name()) {
                (Some(parent), Some(name)) => std::fs::canonicalize(parent).map(|d| d.join(name)),
                _ => Err(e),
            })
            .unwrap_or(p)
    };
    let (path, from) = (absolute(path), absolute(from));
    let (a, b): (Vec<_>, Vec<_>) = (path.components().collect(), from.components().collect());
    let common = a.iter().zip(&b).take_while(|(x, y)| x == y).count();
    let mut out = PathBuf::new();
    for _ in common..b.len() {
        out.push("..");
    }
    for c in &a[common..] {
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::relative_to;
    use std::path::Path;

    #[test]
    fn a_path_relative_to_a_folder_climbs_out_of_it() {
        let dir = tempfile::tempdir().unwrap();
        let fleet = dir.path().join("fleet");
        let report = dir.path().join("state").join("orders").join("report.md");
        std::fs::create_dir_all(&fleet).unwrap();
        std::fs::create_dir_all(report.parent().unwrap()).unwrap();
        std::fs::write(&report, "x").unwrap();
        assert_eq!(
            relative_to(&report, &fleet),
            Path::new("../state/orders/report.md")
        );
        assert_eq!(
            relative_to(&fleet.join("a.yaml"), &fleet),
            Path::new("a.yaml")
        );
    }
}
