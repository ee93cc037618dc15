//! The least-privilege IAM policy of a plan (`ecmigrate iam-policy`): the cloud calls each of the plan's
//! steps makes ([`calls_of`]), the AWS permissions each call needs (`grants`), merged into one policy
//! document scoped to the plan's ARNs. A step the plan lacks adds nothing.
//!
//! [`calls_of`] is the one list to keep in step with the step files: every `ctx.cloud` / `ctx.write` call a
//! step makes (directly or through `access` / `auth` / `backup::encryption_key`) is named there under its
//! step; `grants` mirrors what `cloud/aws/*.rs` sends for one call (a group describe is three operations).
//! The moto test `iam_policy_*` runs a plan and checks that what moto saw is exactly what this says.

mod grants;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;
use serde_json::{Value, json};

use crate::plan::{CutoverStrategy, Plan, StepSpec};

pub use grants::Grant;

/// One call of the `CloudRead` / `CloudWrite` traits a step makes on `provider: aws`, with what it names.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Call {
    /// `describe_group(id)`.
    DescribeGroup(String),
    /// `list_snapshots(Some(source))`.
    ListSourceSnapshots,
    /// `describe_snapshot` of a snapshot this plan names (pre-migration or final).
    DescribeSnapshot,
    /// `describe_key(target.kms_key_id)`.
    DescribeKey,
    /// `key_rotation_enabled(key ARN)`: preflight's warning when rotation is off.
    KeyRotationStatus,
    /// `get_secret(target.auth_token.secrets_manager)`.
    GetSecret,
    /// `put_secret`: a generated token kept in Secrets Manager.
    PutSecret,
    /// `create_snapshot(source, ..)`, encrypted with the plan's key.
    CreateSnapshot,
    /// `create_group_from_snapshot`: the encrypted target.
    CreateGroup,
    /// `delete_group(id)`.
    DeleteGroup(String),
    /// `modify_transit(id, mode)`: in-transit encryption switched on in place (`enable_transit`).
    ModifyTransit(String),
    /// `modify_auth_token(id, ..)`: the AUTH token rotated in place (`rotate_auth_token`).
    ModifyAuthToken(String),
    /// `get_secret_version`, `put_secret_pending`, `move_secret_stage`: a rotated token staged in
    /// `source.auth_token.secrets_manager` (pending, then current).
    StageSecret,
    /// `modify_to_user_group(id, ..)`: the source moved from its AUTH token to RBAC (`migrate_to_rbac`).
    ModifyToUserGroup(String),
    /// `describe_user`, `describe_user_group`: the plan's RBAC ids (preflight, restore).
    DescribeRbac,
    /// `create_user`, `create_user_group`: the target's RBAC users and user group.
    CreateRbac,
    /// `dns_record(zone, name)`.
    DnsRecord,
    /// `upsert_cname(zone, name, ..)`.
    UpsertCname,
    /// `dns_change_status(change)`.
    DnsChangeStatus,
}

/// What `ecmigrate run` does after the steps of every run that ends (the evidence report): a describe of
/// both groups. Named like a step in the policy's notes.
pub const REPORT: &str = "report";

/// The cloud calls `step` makes, in the order the step makes them (repeats dropped).
pub fn calls_of(plan: &Plan, step: &StepSpec) -> Vec<Call> {
    use Call::*;
    let source = || DescribeGroup(plan.source.replication_group_id.clone());
    if plan.is_in_place() {
        // Validation allows only these steps without a target.
        let secret = plan
            .source
            .auth_token
            .as_ref()
            .is_some_and(|t| t.secrets_manager.is_some());
        return match step {
            StepSpec::EnableTransit(_) => vec![
                source(),
                ModifyTransit(plan.source.replication_group_id.clone()),
            ],
            StepSpec::RotateAuthToken(_) if secret => vec![
                source(),
                StageSecret,
                ModifyAuthToken(plan.source.replication_group_id.clone()),
            ],
            StepSpec::RotateAuthToken(_) => vec![
                source(),
                ModifyAuthToken(plan.source.replication_group_id.clone()),
            ],
            StepSpec::MigrateToRbac(_) => vec![
                source(),
                DescribeRbac,
                GetSecret,
                CreateRbac,
                ModifyToUserGroup(plan.source.replication_group_id.clone()),
            ],
            StepSpec::Preflight(_) if plan.source.auth.is_some() => vec![source(), DescribeRbac],
            StepSpec::Preflight(_) if secret => vec![source(), StageSecret],
            _ => vec![source()],
        };
    }
    let target = || DescribeGroup(plan.target().replication_group_id.clone());
    let key = plan.target().kms_key_id.is_some();
    let specs = plan.target().secret_specs();
    let in_secrets = |t: &crate::plan::AuthTokenSpec| {
        t.secrets_manager.is_some() && t.file.is_none() && t.env.is_none()
    };
    let secret = specs.iter().any(|t| in_secrets(t));
    let generated_secret = specs.iter().any(|t| in_secrets(t) && t.generate);
    let rbac = plan.target().rbac().is_some();
    let mut calls = Vec::new();
    let mut add = |call: Call, when: bool| {
        if when && !calls.contains(&call) {
            calls.push(call);
        }
    };
    match step {
        StepSpec::Preflight(_) => {
            add(source(), true);
            add(target(), true);
            add(DescribeKey, key);
            add(KeyRotationStatus, key);
            add(GetSecret, secret);
            add(DescribeRbac, rbac);
            add(ListSourceSnapshots, true);
        }
        StepSpec::Backup(_) => {
            // `encryption_key`: the key preflight resolved, else a describe of the plan's key.
            add(DescribeKey, key);
            add(DescribeSnapshot, true);
            add(source(), true);
            add(CreateSnapshot, true);
        }
        StepSpec::RestoreEncrypted(_) => {
            add(target(), true);
            add(source(), true);
            add(GetSecret, secret);
            add(PutSecret, generated_secret);
            add(DescribeRbac, rbac);
            add(CreateRbac, rbac);
            add(DescribeKey, key);
            add(CreateGroup, true);
            // A target of this run whose creation failed is deleted and created again.
            add(
                DeleteGroup(plan.target().replication_group_id.clone()),
                true,
            );
        }
        // The change stream, the verifier and the cutover open both groups, the target with its token.
        StepSpec::StreamCopy(_) | StepSpec::Verify(_) => {
            add(source(), true);
            add(target(), true);
            add(GetSecret, secret);
        }
        StepSpec::Cutover(c) => {
            add(source(), true);
            add(target(), true);
            add(GetSecret, secret);
            let route53 = c.strategy == CutoverStrategy::Route53;
            add(DnsRecord, route53);
            add(UpsertCname, route53);
            add(DnsChangeStatus, route53);
        }
        StepSpec::DeleteSource(_) => {
            add(source(), true);
            add(DescribeKey, key);
            add(DescribeSnapshot, true);
            add(CreateSnapshot, true);
            add(DeleteGroup(plan.source.replication_group_id.clone()), true);
        }
        StepSpec::EnableTransit(_) | StepSpec::RotateAuthToken(_) | StepSpec::MigrateToRbac(_) => {}
    }
    calls
}

/// The calls of the report written after a run: both groups described.
pub fn report_calls(plan: &Plan) -> Vec<Call> {
    if plan.is_in_place() {
        // An in-place plan writes no evidence report (see `cli::run_cmd`).
        return Vec::new();
    }
    vec![
        Call::DescribeGroup(plan.source.replication_group_id.clone()),
        Call::DescribeGroup(plan.target().replication_group_id.clone()),
    ]
}

/// Where a value of the ARNs came from: the command line, the plan, or nothing (`*`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Setting {
    pub value: String,
    /// `--region`, `aws.region`, `target.kms_key_id`, `target.auth_token.secrets_manager`, or
    /// `placeholder` (the value is `*`: replace it before use).
    pub source: String,
}

impl Setting {
    fn placeholder() -> Setting {
        Setting {
            value: "*".into(),
            source: "placeholder".into(),
        }
    }
    pub fn is_placeholder(&self) -> bool {
        self.source == "placeholder"
    }
}

/// The account and region the ARNs name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Scope {
    pub region: Setting,
    pub account: Setting,
}

impl Scope {
    /// The region from `--region`, else the plan's `aws.region`, else an ARN in the plan; the account from
    /// an ARN in the plan (the plan has no account field). What is not known is a `*` placeholder.
    pub fn of(plan: &Plan, region_flag: Option<&str>) -> Scope {
        let t = plan.target.as_ref();
        let arns = [
            ("target.kms_key_id", t.and_then(|t| t.kms_key_id.as_deref())),
            (
                "target.auth_token.secrets_manager",
                t.and_then(|t| {
                    t.secret_specs()
                        .into_iter()
                        .find_map(|s| s.secrets_manager.as_deref())
                }),
            ),
        ];
        // arn:PARTITION:SERVICE:REGION:ACCOUNT:...
        let from_arn = |index: usize| {
            arns.iter().find_map(|(field, value)| {
                let part = (*value)?.strip_prefix("arn:")?.split(':').nth(index)?;
                (!part.is_empty()).then(|| Setting {
                    value: part.to_string(),
                    source: (*field).to_string(),
                })
            })
        };
        let region = match (
            region_flag,
            plan.aws.as_ref().and_then(|a| a.region.as_deref()),
        ) {
            (Some(r), _) => Setting {
                value: r.to_string(),
                source: "--region".into(),
            },
            (None, Some(r)) => Setting {
                value: r.to_string(),
                source: "aws.region".into(),
            },
            (None, None) => from_arn(2).unwrap_or_else(Setting::placeholder),
        };
        Scope {
            region,
            account: from_arn(3).unwrap_or_else(Setting::placeholder),
        }
    }
}

/// One action of the policy, with why it is there (kept here, not in the JSON: a policy holds no comments).
#[derive(Debug, Clone, Serialize)]
pub struct ActionNote {
    pub action: String,
    /// An API operation ecmigrate sends (`true`), or a permission the service checks on the caller's behalf
    /// while serving one (`false`: tags on create, the KMS grant ElastiCache makes).
    pub called: bool,
    /// The steps (and `report`) that need it.
    pub steps: Vec<String>,
    pub resources: Vec<String>,
    pub why: String,
}

/// The policy of a plan, the scope its ARNs were written for, and a note per action.
#[derive(Debug, Clone, Serialize)]
pub struct IamPolicy {
    pub policy: PolicyDocument,
    pub region: Setting,
    pub account: Setting,
    pub actions: Vec<ActionNote>,
}

impl IamPolicy {
    /// The API operations the plan's run sends, `service:Operation`.
    pub fn called_actions(&self) -> BTreeSet<String> {
        self.actions
            .iter()
            .filter(|a| a.called)
            .map(|a| a.action.clone())
            .collect()
    }
    /// Every action the policy allows.
    pub fn all_actions(&self) -> BTreeSet<String> {
        self.actions.iter().map(|a| a.action.clone()).collect()
    }
}

/// The least-privilege policy for running `plan` on AWS: the grants of every call of every step, merged
/// per action, then grouped into one statement per set of resources and condition.
pub fn policy(plan: &Plan, region_flag: Option<&str>) -> IamPolicy {
    let scope = Scope::of(plan, region_flag);
    let names = grants::Names::of(plan);
    let mut per_step: Vec<(String, Vec<Call>)> = plan
        .steps
        .iter()
        .map(|s| (s.kind().as_str().to_string(), calls_of(plan, s)))
        .collect();
    if !plan.steps.is_empty() && !plan.is_in_place() {
        per_step.push((REPORT.to_string(), report_calls(plan)));
    }
    // (action, condition) -> merged grant and the steps that need it.
    let mut merged: BTreeMap<(String, String), (Grant, BTreeSet<String>)> = BTreeMap::new();
    for (step, calls) in &per_step {
        for call in calls {
            for g in grants::grants(call, &names, &scope) {
                let key = (g.action.to_string(), g.condition.to_string());
                let entry = merged
                    .entry(key)
                    .or_insert_with(|| (g.clone(), BTreeSet::new()));
                entry.0.resources.extend(g.resources.iter().cloned());
                entry.0.resources = without_covered(&entry.0.resources);
                entry.0.called |= g.called;
                entry.1.insert(step.clone());
            }
        }
    }
    let actions = merged
        .values()
        .map(|(g, steps)| ActionNote {
            action: g.action.to_string(),
            called: g.called,
            steps: step_order(steps),
            resources: g.resources.iter().cloned().collect(),
            why: g.why.to_string(),
        })
        .collect();
    IamPolicy {
        policy: document(merged.values().map(|(g, _)| g)),
        region: scope.region,
        account: scope.account,
        actions,
    }
}

/// Steps in plan order, `report` last.
fn step_order(steps: &BTreeSet<String>) -> Vec<String> {
    let mut out: Vec<String> = crate::plan::StepKind::ALL
        .iter()
        .map(|k| k.as_str().to_string())
        .filter(|k| steps.contains(k))
        .collect();
    if steps.contains(REPORT) {
        out.push(REPORT.to_string());
    }
    out
}

/// An IAM policy document, its elements in the order IAM's own examples list them.
#[derive(Debug, Clone, Serialize)]
pub struct PolicyDocument {
    #[serde(rename = "Version")]
    pub version: &'static str,
    #[serde(rename = "Statement")]
    pub statement: Vec<Statement>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Statement {
    #[serde(rename = "Sid")]
    pub sid: String,
    #[serde(rename = "Effect")]
    pub effect: &'static str,
    #[serde(rename = "Action")]
    pub action: Vec<String>,
    /// One ARN as a string (`"*"` for actions that authorize no resource), more as a list.
    #[serde(rename = "Resource")]
    pub resource: Value,
    #[serde(rename = "Condition", skip_serializing_if = "Value::is_null")]
    pub condition: Value,
}

/// The policy document: one statement per (service, resources, condition), actions sorted.
fn document<'a>(grants: impl Iterator<Item = &'a Grant>) -> PolicyDocument {
    type Key = (usize, BTreeSet<String>, String);
    let mut groups: BTreeMap<Key, (BTreeSet<&'static str>, &'a Value)> = BTreeMap::new();
    for g in grants {
        let key = (
            service_rank(g.action),
            g.resources.clone(),
            g.condition.to_string(),
        );
        groups
            .entry(key)
            .or_insert_with(|| (BTreeSet::new(), &g.condition))
            .0
            .insert(g.action);
    }
    let mut counters: BTreeMap<&str, usize> = BTreeMap::new();
    let statement = groups
        .iter()
        .map(|((_, resources, _), (actions, condition))| {
            let service = service_name(actions.iter().next().copied().unwrap_or(""));
            let n = counters.entry(service).or_insert(0);
            *n += 1;
            let resource = match resources.iter().collect::<Vec<_>>().as_slice() {
                [one] => json!(one),
                many => json!(many),
            };
            Statement {
                sid: format!("{service}{n}"),
                effect: "Allow",
                action: actions.iter().map(|a| a.to_string()).collect(),
                resource,
                condition: (*condition).clone(),
            }
        })
        .collect();
    PolicyDocument {
        version: "2012-10-17",
        statement,
    }
}

/// `resources` without those another one's trailing `*` already covers.
fn without_covered(resources: &BTreeSet<String>) -> BTreeSet<String> {
    resources
        .iter()
        .filter(|r| {
            !resources.iter().any(|p| {
                p != *r
                    && p.strip_suffix('*')
                        .is_some_and(|prefix| r.starts_with(prefix))
            })
        })
        .cloned()
        .collect()
}

const SERVICES: [(&str, &str); 4] = [
    ("elasticache", "ElastiCache"),
    ("kms", "Kms"),
    ("secretsmanager", "SecretsManager"),
    ("route53", "Route53"),
];

fn service_rank(action: &str) -> usize {
    let prefix = action.split(':').next().unwrap_or("");
    SERVICES
        .iter()
        .position(|(p, _)| *p == prefix)
        .unwrap_or(SERVICES.len())
}

fn service_name(action: &str) -> &'static str {
    SERVICES
        .get(service_rank(action))
        .map(|(_, name)| *name)
        .unwrap_or("Other")
}
