//! The plan: YAML parsing (serde-saphyr), validation that names file, line, field and rule, and the JSON
//! Schema export. Nothing here touches the network.

pub mod rules;
pub mod types;

use std::path::{Path, PathBuf};

pub use types::*;

use crate::error::{Error, PlanIssue, Result};

/// A parsed and validated plan with where it came from.
#[derive(Debug, Clone)]
pub struct LoadedPlan {
    pub plan: Plan,
    /// The path as the user gave it (used in messages).
    pub path: PathBuf,
    /// The plan's folder: relative paths in the plan are resolved against it.
    pub dir: PathBuf,
}

impl LoadedPlan {
    /// A path from the plan, resolved against the plan's folder.
    pub fn resolve(&self, p: &Path) -> PathBuf {
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.dir.join(p)
        }
    }
}

/// Read, parse and validate a plan file. Every problem found is reported at once.
pub fn load(path: &Path) -> Result<LoadedPlan> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::InvalidPlan {
        issues: vec![PlanIssue {
            file: path.display().to_string(),
            line: None,
            field: "(file)".into(),
            rule: format!("the plan file must be readable: {e}"),
        }],
    })?;
    let plan: Plan = serde_saphyr::from_str(&text).map_err(|e| Error::InvalidPlan {
        issues: vec![PlanIssue {
            file: path.display().to_string(),
            line: None,
            field: "(yaml)".into(),
            rule: e.to_string(),
        }],
    })?;
    let dir = path
        .parent()
        .map(Path::to_path_buf)
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or_else(|| PathBuf::from("."));
    Ok(LoadedPlan {
        plan,
        path: path.to_path_buf(),
        dir,
    })
}

/// The JSON Schema of plan version 1, for editors.
pub fn schema_json() -> String {
    serde_json::to_string_pretty(&schemars::schema_for!(Plan)).expect("schema serializes")
}
