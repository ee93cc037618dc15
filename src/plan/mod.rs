//! The plan: reading the file within bounds, YAML parsing (serde-saphyr), validation that names file,
//! line, field and rule, and the JSON Schema export. Nothing here touches the network.

mod file;
mod positions;
pub mod rules;
pub mod types;
mod validate;

#[cfg(test)]
mod shape_tests;
#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};

pub use file::MAX_PLAN_BYTES;
pub use types::*;

use crate::error::{Error, PlanIssue, Result};
use positions::Positions;

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
    /// Refuse (exit 2, nothing changed) a command that works on a migration's new group when the plan
    /// changes its source in place (no `target`).
    pub fn needs_target(&self, command: &str) -> Result<()> {
        if !self.plan.is_in_place() {
            return Ok(());
        }
        Err(Error::usage(
            format!(
                "`ecmigrate {command}` works on a migration to a new group, and plan `{}` has no `target`: it changes `{}` in place",
                self.plan.name, self.plan.source.replication_group_id
            ),
            format!(
                "`ecmigrate status {}` shows the in-place change; `ecmigrate cutover {}` releases its hold",
                self.path.display(),
                self.path.display()
            ),
        ))
    }

    /// A path from the plan, resolved against the plan's folder.
    pub fn resolve(&self, p: &Path) -> PathBuf {
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.dir.join(p)
        }
    }
}

/// The most issues listed for one plan; the rest are counted in one closing line.
pub const MAX_LISTED_ISSUES: usize = 20;

/// Read, parse and validate a plan file. Every problem found is reported at once (the first
/// [`MAX_LISTED_ISSUES`] of them listed). Only a regular file of at most [`MAX_PLAN_BYTES`] is read.
pub fn load(path: &Path) -> Result<LoadedPlan> {
    let file = path.display().to_string();
    let text = file::read_bounded(path).map_err(|(line, rule)| Error::InvalidPlan {
        issues: vec![PlanIssue {
            file: file.clone(),
            line,
            field: "(file)".into(),
            rule,
        }],
    })?;
    let plan = parse_str(&text, &file)?;
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

/// Parse and validate plan text; `file` is the name used in issues.
pub fn parse_str(text: &str, file: &str) -> Result<Plan> {
    let positions = Positions::of(text);
    // A key given twice, a second document, nesting too deep: said in the plan's terms, all at once,
    // before serde (which would stop at the first, in its own terms).
    if !positions.structure().is_empty() {
        let issues = positions
            .structure()
            .iter()
            .map(|s| PlanIssue {
                file: file.to_string(),
                line: Some(s.line),
                field: s.field.clone(),
                rule: s.rule.clone(),
            })
            .collect();
        return Err(invalid(issues, file));
    }
    let plan: Plan = serde_saphyr::from_str(text).map_err(|e| Error::InvalidPlan {
        issues: vec![yaml_issue(&e, &positions, file)],
    })?;
    let issues: Vec<PlanIssue> = validate::validate(&plan)
        .into_iter()
        .map(|f| PlanIssue {
            file: file.to_string(),
            line: positions.line_of(&f.field),
            field: f.field,
            rule: f.rule,
        })
        .collect();
    if issues.is_empty() {
        Ok(plan)
    } else {
        Err(invalid(issues, file))
    }
}

/// The plan error for `issues`: the first [`MAX_LISTED_ISSUES`], then one line counting the rest (a
/// 10,000-step plan is not 10,000 lines of output).
fn invalid(mut issues: Vec<PlanIssue>, file: &str) -> Error {
    if issues.len() > MAX_LISTED_ISSUES {
        let more = issues.len() - MAX_LISTED_ISSUES;
        issues.truncate(MAX_LISTED_ISSUES);
        issues.push(PlanIssue {
            file: file.to_string(),
            line: None,
            field: "(plan)".into(),
            rule: format!(
                "… and {} more (only the first {MAX_LISTED_ISSUES} are listed; fix these and validate again)",
                file::thousands(more as u64)
            ),
        });
    }
    Error::InvalidPlan { issues }
}

/// The JSON Schema of plan version 1, for editors.
pub fn schema_json() -> String {
    serde_json::to_string_pretty(&schemars::schema_for!(Plan)).expect("schema serializes")
}

fn quoted_list(names: &[&str]) -> String {
    names
        .iter()
        .map(|n| format!("`{n}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The kind of a value serde found (`string`, `integer`, ...), without the value itself: the value
/// might be a secret pasted in the wrong place.
fn kind_only(unexpected: &str) -> String {
    let kind = unexpected.split([' ', '"', '`']).next().unwrap_or("value");
    match kind {
        "string" | "char" => "a string".into(),
        "integer" | "floating" => "a number".into(),
        "boolean" => "a boolean".into(),
        "sequence" => "a list".into(),
        "map" => "a mapping".into(),
        "unit" | "null" => "an empty value".into(),
        other => other.to_string(),
    }
}

/// Where a parser or serde error points: its `(line, column)` and the field path found there.
struct ErrorAt<'p> {
    positions: &'p Positions,
    pos: Option<(usize, usize)>,
    here: Option<String>,
}

impl ErrorAt<'_> {
    /// The mapping that holds the error's position.
    fn mapping(&self) -> Option<&str> {
        self.pos.and_then(|p| self.positions.mapping_at(p))
    }

    /// The field at the error's position, or `(yaml)` when none is known.
    fn here_or_yaml(&self) -> String {
        self.here.clone().unwrap_or_else(|| "(yaml)".into())
    }
}

fn yaml_issue(err: &serde_saphyr::Error, positions: &Positions, file: &str) -> PlanIssue {
    let inner = err.without_snippet();
    let pos = inner
        .location()
        .filter(|l| l.line() > 0)
        .map(|l| (l.line() as usize, l.column() as usize));
    let at = ErrorAt {
        positions,
        pos,
        here: pos.and_then(|p| positions.path_at(p)).map(str::to_string),
    };
    let (field, rule) = field_and_rule(original(inner), &at);
    let (field, rule) = if field.is_empty() {
        let want =
            "the plan must be a mapping with `version`, `name`, `source`, `target` and `steps`";
        ("(document)".to_string(), format!("{want} ({rule})"))
    } else {
        (field, rule)
    };
    let line = positions
        .line_of(&field)
        .filter(|_| !field.starts_with('('))
        .or(pos.map(|p| p.0));
    PlanIssue {
        file: file.to_string(),
        line,
        field,
        rule,
    }
}

/// The error itself, without the wrappers that say where an alias was used or add a snippet (the
/// position is taken from the wrapper: the use, in the plan's text).
fn original(mut err: &serde_saphyr::Error) -> &serde_saphyr::Error {
    use serde_saphyr::Error as E;
    while let E::AliasError { error, .. } | E::WithSnippet { error, .. } = err {
        err = error;
    }
    err
}

/// The field an error is about and the rule it broke, in words (an empty field: the document itself).
fn field_and_rule(inner: &serde_saphyr::Error, at: &ErrorAt) -> (String, String) {
    use serde_saphyr::Error as E;
    match inner {
        E::SerdeUnknownField {
            field, expected, ..
        } => unknown_field(at, field, expected),
        E::SerdeMissingField { field, .. } => (
            join_field(at.mapping().unwrap_or_default(), field),
            format!("missing required field `{field}`"),
        ),
        E::SerdeInvalidType {
            unexpected,
            expected,
            ..
        }
        | E::SerdeInvalidValue {
            unexpected,
            expected,
            ..
        } => {
            let field = buffered_culprit(at.positions, at.pos, expected)
                .unwrap_or_else(|| at.here_or_yaml());
            (
                field,
                format!(
                    "expected {}, found {}",
                    expected_words(expected),
                    kind_only(unexpected)
                ),
            )
        }
        E::SerdeUnknownVariant {
            variant, expected, ..
        } => unknown_variant(at, variant, expected),
        // The walk of [`Positions`] finds these first; serde's own checks stay as a backstop, in the
        // plan's words too.
        E::DuplicateMappingKey { key, .. } => (
            match key {
                Some(k) => join_field(at.mapping().unwrap_or_default(), k),
                None => at.here_or_yaml(),
            },
            "is given twice: a field appears once in its mapping; keep one".into(),
        ),
        E::MultipleDocuments { .. } => (
            "(document)".into(),
            "a plan is one YAML document; this file has more than one: keep one".into(),
        ),
        E::Budget { breach, .. } => (at.here_or_yaml(), budget_words(breach)),
        E::AliasReplayLimitExceeded { .. }
        | E::AliasExpansionLimitExceeded { .. }
        | E::AliasReplayStackDepthExceeded { .. } => (at.here_or_yaml(), ALIASES_RULE.into()),
        other if at.positions.broken().is_some() => syntax_error(at, &other.to_string()),
        other => {
            let text = other.to_string();
            let msg = message_only(&text);
            let rule = match msg.strip_prefix("invalid ") {
                Some(t) if ["u8", "u16", "u32", "u64"].contains(&t) => {
                    "expected a whole number".to_string()
                }
                _ => format!("not a valid plan: {msg}"),
            };
            (at.here_or_yaml(), rule)
        }
    }
}

const ALIASES_RULE: &str =
    "uses anchors (`&name`) and aliases (`*name`) more than any plan needs: write the values out";

/// A bound of the YAML reader, in the plan's terms: no real plan comes near any of them.
fn budget_words(breach: &serde_saphyr::budget::BudgetBreach) -> String {
    use serde_saphyr::budget::BudgetBreach as B;
    match breach {
        B::ScalarBytes { .. } => "its values add up to more than 64 MiB once aliases (`*name`) are expanded, far more than any plan holds: write the values out".into(),
        B::Nodes { .. } | B::Events { .. } => {
            "holds more than 250,000 values, far more than any plan: a plan is a few dozen".into()
        }
        B::Depth { .. } => format!(
            "nesting deeper than {} levels: a plan is at most {} levels deep",
            positions::MAX_DEPTH,
            positions::MAX_DEPTH
        ),
        B::Aliases { .. }
        | B::Anchors { .. }
        | B::AliasAnchorRatio { .. }
        | B::RecordedAnchorEvents { .. }
        | B::RecordedAnchorBytes { .. } => ALIASES_RULE.into(),
        _ => "is larger or more complex than any plan (a bound of the YAML reader was reached)".into(),
    }
}

fn unknown_field(at: &ErrorAt, field: &str, expected: &[&str]) -> (String, String) {
    // The position is the unknown key itself, or (inside buffered step mappings) the mapping.
    let path = join_field(at.mapping().unwrap_or_default(), field);
    let rule = if path.starts_with("target.auth_token") {
        format!(
            "unknown field `{field}`: the plan never holds the AUTH token itself; use `file: PATH` or `env: NAME` (and `generate: true` to create one)"
        )
    } else {
        format!(
            "unknown field `{field}`; expected one of {}",
            quoted_list(expected)
        )
    };
    (path, rule)
}

fn unknown_variant(at: &ErrorAt, variant: &str, expected: &[&str]) -> (String, String) {
    // Values of 16 characters or more are not repeated: they could be an AUTH token pasted into the
    // wrong field (a valid token has at least 16 characters).
    let shown = if variant.chars().count() < 16 {
        format!("unknown value `{variant}`")
    } else {
        "unknown value".to_string()
    };
    // Step mappings are buffered: the position is the step's start, the culprit its `kind`.
    let field = match at.mapping() {
        Some(m) if expected.contains(&"preflight") => format!("{m}.kind"),
        _ => at.here_or_yaml(),
    };
    (
        field,
        format!("{shown}; expected one of {}", quoted_list(expected)),
    )
}

/// A syntax error: name the collection the parser was reading.
fn syntax_error(at: &ErrorAt, text: &str) -> (String, String) {
    let field = match at.positions.broken() {
        Some("") | None => "(yaml)".to_string(),
        Some(p) => p.to_string(),
    };
    let noticed = at
        .pos
        .map(|(l, c)| format!(" (noticed at line {l}, column {c})"))
        .unwrap_or_default();
    (
        field,
        format!("not valid YAML: {}{noticed}", message_only(text)),
    )
}

/// Serde's name of an expected type in words.
fn expected_words(expected: &str) -> String {
    match expected {
        "u8" | "u16" | "u32" | "u64" | "usize" => "a whole number".into(),
        "a boolean" | "bool" => "`true` or `false`".into(),
        other => other.to_string(),
    }
}

/// Inside a buffered step mapping serde reports type errors at the step's start; find the child whose
/// scalar does not fit the expected type.
fn buffered_culprit(
    positions: &Positions,
    pos: Option<(usize, usize)>,
    expected: &str,
) -> Option<String> {
    let pos = pos?;
    let mapping = positions.mapping_at(pos)?;
    if positions.get(mapping)?.start != pos {
        return None;
    }
    // The scalar fields of step mappings by type: serde only says which type it expected.
    let wanted: &[&str] = match expected {
        "u8" | "u16" | "u32" | "u64" | "usize" => {
            &["timeout_seconds", "sample", "ttl_tolerance_ms"]
        }
        "a boolean" | "bool" => &["full", "postpone"],
        _ => &["snapshot_name", "final_snapshot_name", "confirm", "alias"],
    };
    let fits = |v: &str| match expected {
        "u8" | "u16" | "u32" | "u64" | "usize" => v.parse::<u64>().is_ok(),
        "a boolean" | "bool" => matches!(v, "true" | "false"),
        _ => true,
    };
    positions
        .children(mapping)
        .into_iter()
        .filter(|(p, _)| p.rsplit('.').next().is_some_and(|k| wanted.contains(&k)))
        .find(|(_, e)| e.scalar.as_deref().is_none_or(|v| !fits(v)))
        .map(|(p, _)| p.to_string())
}

fn join_field(parent: &str, field: &str) -> String {
    if parent.is_empty() {
        field.to_string()
    } else {
        format!("{parent}.{field}")
    }
}

/// The first line of a parser message without its ` at line L, column C` suffix (the issue has the line).
fn message_only(s: &str) -> &str {
    let s = s.lines().next().unwrap_or(s).trim();
    let s = s.strip_prefix("error: ").unwrap_or(s);
    match s.rfind(" at line ") {
        Some(i) => &s[..i],
        None => s,
    }
}
