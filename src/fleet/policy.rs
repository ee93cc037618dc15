//! The fleet policy (`fleet plan --policy POLICY.yaml`): version 1, validated, with a JSON Schema
//! (`fleet schema`). It says once what every plan of the fleet looks like; per-group values come from
//! patterns with `{group}` (the source group's id) and `{region}` (its region; `sandbox` on the sandbox).
//! This module owns the policy's types, its rules, and the rendering of a pattern for one group.

use std::collections::BTreeMap;
use std::path::Path;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::error::{Error, PlanIssue, Result};
use crate::plan::{CutoverStrategy, Provider, TransitEncryptionMode};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    /// Policy format version; only 1 exists.
    pub version: u32,
    #[serde(default)]
    pub provider: Provider,
    /// Regions to audit when the command line names none (provider `aws`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub regions: Vec<String>,
    /// Source group ids to consider (`*` matches any run of characters); empty: every group.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub include: Vec<String>,
    /// Source group ids to leave alone (`*` as in `include`); listed with the reason "excluded".
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exclude: Vec<String>,
    /// The KMS key per region (id, ARN or `alias/NAME`); `"*"` for every region not named. A region with
    /// no key gets the service-managed key.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub kms_keys: BTreeMap<String, String>,
    /// The new group's id (default `{group}-enc`).
    #[serde(default = "default_target_id")]
    pub target_id: String,
    /// Each plan's name, its state folder (default `{group}`; `{region}-{group}` when ids repeat across
    /// regions).
    #[serde(default = "default_plan_name")]
    pub plan_name: String,
    #[serde(default)]
    pub transit_encryption_mode: TransitEncryptionMode,
    /// Where each group's AUTH token is kept.
    pub auth_token: TokenPolicy,
    /// Replay the writes made since before the snapshot, and tail until the cutover (default true).
    #[serde(default = "yes")]
    pub stream_copy: bool,
    /// Compare every key (true, the default) or a sample of 1000 keys per database.
    #[serde(default = "yes")]
    pub verify_full: bool,
    pub cutover: CutoverPolicy,
    /// Delete each source after its cutover (a final snapshot first, encrypted). Default false.
    #[serde(default)]
    pub delete_source: bool,
}

/// Exactly one of `secrets_manager` / `file` / `env`; `generate` (default true) needs a store it can
/// write (`secrets_manager` or `file`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TokenPolicy {
    #[serde(default = "yes")]
    pub generate: bool,
    /// Secret name pattern, e.g. `ecmigrate/{region}/{group}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secrets_manager: Option<String>,
    /// Token file pattern, relative to the fleet folder, e.g. `tokens/{group}.token`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    /// Environment variable pattern holding existing tokens, e.g. `TOKEN_{group}` (no `-` allowed there).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CutoverPolicy {
    pub strategy: CutoverStrategy,
    /// Hold each plan before its switch until released (`ecmigrate cutover PLAN` or `fleet cutover DIR`).
    #[serde(default)]
    pub postpone: bool,
    /// Sandbox alias pattern (strategy `sandbox_alias`), e.g. `{group}-endpoint`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alias: Option<String>,
    /// Route53 hosted zone per region (strategy `route53`); `"*"` for every region not named.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub hosted_zone_ids: BTreeMap<String, String>,
    /// Route53 record pattern (strategy `route53`), e.g. `{group}.{region}.cache.example.com`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub record_name: Option<String>,
    /// Switch command pattern (strategy `command`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<String>,
    /// Longest write pause per group (100..=30000 ms, default 3000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_write_pause_ms: Option<u64>,
    /// Hours each source stays sealed (writes paused) after its cutover's tail (0..=168, default 24;
    /// 0: no seal).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seal_source_hours: Option<u64>,
}

fn yes() -> bool {
    true
}
fn default_target_id() -> String {
    "{group}-enc".into()
}
fn default_plan_name() -> String {
    "{group}".into()
}

/// The placeholders a pattern may hold.
const PLACEHOLDERS: [&str; 2] = ["{group}", "{region}"];

/// `pattern` for one group.
pub fn render(pattern: &str, group: &str, region: &str) -> String {
    pattern
        .replace("{group}", group)
        .replace("{region}", region)
}

/// The value for `region` in a per-region map: its own entry, else `"*"`.
pub fn for_region<'a>(map: &'a BTreeMap<String, String>, region: &str) -> Option<&'a str> {
    map.get(region).or_else(|| map.get("*")).map(String::as_str)
}

/// Whether `id` matches a pattern where `*` stands for any run of characters.
pub fn matches(pattern: &str, id: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == id;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !id.starts_with(first) || id.len() < first.len() + last.len() || !id.ends_with(last) {
        return false;
    }
    let mut rest = &id[first.len()..id.len() - last.len()];
    for middle in &parts[1..parts.len() - 1] {
        match rest.find(middle) {
            Some(at) => rest = &rest[at + middle.len()..],
            None => return false,
        }
    }
    true
}

impl Policy {
    /// Read and validate a policy file; every broken rule is listed, naming the field.
    pub fn load(path: &Path) -> Result<Policy> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| {
            Error::usage(
                format!("cannot read the fleet policy {file}: {e}"),
                "pass the policy with --policy; `ecmigrate fleet schema` prints its schema",
            )
        })?;
        let policy: Policy = serde_saphyr::from_str(&text).map_err(|e| Error::InvalidPlan {
            issues: vec![issue(&file, "(policy)", e.to_string())],
        })?;
        let issues: Vec<PlanIssue> = policy
            .broken_rules()
            .into_iter()
            .map(|(field, rule)| issue(&file, &field, rule))
            .collect();
        if issues.is_empty() {
            Ok(policy)
        } else {
            Err(Error::InvalidPlan { issues })
        }
    }

    /// Every rule the policy breaks, as (field, rule). What a rendered plan breaks is found by the plan's
    /// own validation, per group.
    pub fn broken_rules(&self) -> Vec<(String, String)> {
        let mut broken = Vec::new();
        let mut rule = |field: &str, text: String| broken.push((field.to_string(), text));
        if self.version != 1 {
            rule(
                "version",
                format!("must be 1 (the only policy version), not {}", self.version),
            );
        }
        for (i, r) in self.regions.iter().enumerate() {
            if let Err(e) = crate::plan::rules::check_region(r) {
                rule(&format!("regions[{i}]"), e);
            }
        }
        if self.provider == Provider::Sandbox && !self.regions.is_empty() {
            rule(
                "regions",
                "the sandbox has no regions; only with `provider: aws`".into(),
            );
        }
        for (region, _) in self
            .kms_keys
            .iter()
            .chain(&self.cutover.hosted_zone_ids)
            .filter(|(r, _)| r.as_str() != "*")
        {
            if let Err(e) = crate::plan::rules::check_region(region) {
                rule(&format!("a per-region map's key `{region}`"), e);
            }
        }
        let mut patterns = vec![
            ("target_id", Some(&self.target_id)),
            ("plan_name", Some(&self.plan_name)),
            (
                "auth_token.secrets_manager",
                self.auth_token.secrets_manager.as_ref(),
            ),
            ("auth_token.file", self.auth_token.file.as_ref()),
            ("auth_token.env", self.auth_token.env.as_ref()),
            ("cutover.alias", self.cutover.alias.as_ref()),
            ("cutover.record_name", self.cutover.record_name.as_ref()),
            ("cutover.command", self.cutover.command.as_ref()),
        ];
        for (field, pattern) in patterns.drain(..) {
            if let Some(p) = pattern
                && let Some(unknown) = unknown_placeholder(p)
            {
                rule(
                    field,
                    format!(
                        "`{unknown}` is not a placeholder; only {} exist",
                        PLACEHOLDERS.join(" and ")
                    ),
                );
            }
        }
        if !self.target_id.contains("{group}") {
            rule(
                "target_id",
                "must contain `{group}`: every group needs its own new group".into(),
            );
        }
        if !self.plan_name.contains("{group}") {
            rule(
                "plan_name",
                "must contain `{group}`: every plan needs its own state folder".into(),
            );
        }
        let t = &self.auth_token;
        let stores = [&t.secrets_manager, &t.file, &t.env]
            .iter()
            .filter(|s| s.is_some())
            .count();
        if stores != 1 {
            rule(
                "auth_token",
                format!("needs exactly one of `secrets_manager`, `file`, `env` (got {stores})"),
            );
        }
        if t.generate && t.env.is_some() {
            rule(
                "auth_token.generate",
                "cannot generate into `env`; use `secrets_manager` or `file`, or set `generate: false`"
                    .into(),
            );
        }
        for (store, pattern) in [("secrets_manager", &t.secrets_manager), ("file", &t.file)] {
            if let Some(p) = pattern
                && !p.contains("{group}")
            {
                rule(
                    &format!("auth_token.{store}"),
                    "must contain `{group}`: one token per group".into(),
                );
            }
        }
        let c = &self.cutover;
        let (needs, field): (&[(&str, bool)], _) = match c.strategy {
            CutoverStrategy::SandboxAlias => (&[("alias", c.alias.is_some())], "sandbox_alias"),
            CutoverStrategy::Route53 => (
                &[
                    ("hosted_zone_ids", !c.hosted_zone_ids.is_empty()),
                    ("record_name", c.record_name.is_some()),
                ],
                "route53",
            ),
            CutoverStrategy::Command => (&[("command", c.command.is_some())], "command"),
            CutoverStrategy::Manual => (&[], "manual"),
        };
        for (name, given) in needs {
            if !given {
                rule(
                    &format!("cutover.{name}"),
                    format!("is required with strategy `{field}`"),
                );
            }
        }
        if self.provider == Provider::Sandbox && c.strategy == CutoverStrategy::Route53 {
            rule(
                "cutover.strategy",
                "`route53` needs `provider: aws`; the sandbox repoints with `sandbox_alias`".into(),
            );
        }
        broken
    }
}

/// The first `{…}` in `pattern` that is not a known placeholder.
fn unknown_placeholder(pattern: &str) -> Option<String> {
    let mut rest = pattern;
    while let Some(open) = rest.find('{') {
        let close = rest[open..].find('}').map(|c| open + c + 1)?;
        let found = &rest[open..close];
        if !PLACEHOLDERS.contains(&found) {
            return Some(found.to_string());
        }
        rest = &rest[close..];
    }
    None
}

fn issue(file: &str, field: &str, rule: String) -> PlanIssue {
    PlanIssue {
        file: file.to_string(),
        line: None,
        field: field.to_string(),
        rule,
    }
}

/// The JSON Schema of policy version 1, for editors.
pub fn schema_json() -> String {
    serde_json::to_string_pretty(&schemars::schema_for!(Policy)).expect("schema serializes")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(yaml: &str) -> Policy {
        serde_saphyr::from_str(yaml).expect("policy parses")
    }

    const MINIMAL: &str = "version: 1\nauth_token: { secrets_manager: 'ecmigrate/{region}/{group}' }\ncutover: { strategy: manual }\n";

    #[test]
    fn a_minimal_policy_is_valid_with_its_defaults() {
        let p = policy(MINIMAL);
        assert!(p.broken_rules().is_empty(), "{:?}", p.broken_rules());
        assert_eq!(render(&p.target_id, "orders", "eu-west-1"), "orders-enc");
        assert!(p.stream_copy && p.verify_full && p.auth_token.generate);
        assert!(!p.delete_source);
    }

    #[test]
    fn every_broken_rule_names_its_field() {
        let p = policy(
            "version: 2\nregions: [mars-1]\ntarget_id: new-{name}\nplan_name: fixed\nauth_token: { env: TOKEN }\ncutover: { strategy: route53 }\n",
        );
        let fields: Vec<String> = p.broken_rules().into_iter().map(|(f, _)| f).collect();
        for field in [
            "version",
            "regions[0]",
            "target_id",
            "plan_name",
            "auth_token.generate",
            "cutover.hosted_zone_ids",
            "cutover.record_name",
        ] {
            assert!(
                fields.iter().any(|f| f == field),
                "{field} not in {fields:?}"
            );
        }
    }

    #[test]
    fn per_region_values_fall_back_to_the_star_entry() {
        let map: BTreeMap<String, String> = [("*", "alias/all"), ("eu-west-1", "alias/eu")]
            .into_iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect();
        assert_eq!(for_region(&map, "eu-west-1"), Some("alias/eu"));
        assert_eq!(for_region(&map, "us-east-1"), Some("alias/all"));
        assert_eq!(for_region(&BTreeMap::new(), "us-east-1"), None);
    }

    #[test]
    fn the_example_policy_is_valid() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("plans/fleet-policy.yaml");
        let p = Policy::load(&path).expect("plans/fleet-policy.yaml is a valid policy");
        assert_eq!(p.provider, Provider::Aws);
        assert_eq!(for_region(&p.kms_keys, "eu-west-1"), Some("alias/cache-eu"));
    }

    #[test]
    fn star_patterns_match_runs_of_characters() {
        assert!(matches("orders-*", "orders-eu"));
        assert!(matches("*-prod", "cart-prod"));
        assert!(matches("a*b*c", "a-x-b-y-c"));
        assert!(!matches("a*b*c", "a-x-c"));
        assert!(!matches("orders", "orders-eu"));
        assert!(matches("*", "anything"));
    }
}
