//! What one cloud call needs from IAM on AWS: the API operations `cloud/aws/*.rs` sends for it, each on the
//! narrowest resources the service authorizes it against, and the permissions the service checks on the
//! caller's behalf while serving it. Every grant says why, here: the policy itself holds no comments.

use serde_json::{Value, json};

use super::{Call, Scope};
use crate::plan::{CutoverStrategy, Plan, StepSpec};

/// One action on some resources, maybe under a condition.
#[derive(Debug, Clone)]
pub struct Grant {
    pub action: &'static str,
    pub resources: std::collections::BTreeSet<String>,
    /// `Value::Null` when there is none.
    pub condition: Value,
    /// An operation ecmigrate sends, or (`false`) one the service authorizes on the caller's behalf.
    pub called: bool,
    pub why: &'static str,
}

/// The names the plan gives (or the defaults the steps derive) that the ARNs are built from.
pub(super) struct Names {
    source: String,
    target: String,
    /// Snapshot names: the plan's, or the pattern of the defaults `<source>-ecmigrate-<run>` and
    /// `<source>-ecmigrate-final-<run>` (the run id is only known when it starts).
    backup_snapshot: String,
    final_snapshot: String,
    kms_key: Option<String>,
    /// Every Secrets Manager secret the plan names (the target's token or RBAC passwords, else the
    /// source's token).
    secrets: Vec<String>,
    /// RBAC: the user ids and the user group id the restore creates.
    users: Vec<String>,
    user_group: Option<String>,
    zone: Option<String>,
    record: Option<String>,
    parameter_group: Option<String>,
    subnet_group: Option<String>,
}

impl Names {
    pub(super) fn of(plan: &Plan) -> Names {
        let source = plan.source.replication_group_id.clone();
        let default = format!("{source}-ecmigrate-*");
        let mut backup_snapshot = default.clone();
        let mut final_snapshot = default;
        let (mut zone, mut record) = (None, None);
        for step in &plan.steps {
            match step {
                StepSpec::Backup(b) => {
                    if let Some(n) = &b.snapshot_name {
                        backup_snapshot = n.clone();
                    }
                }
                StepSpec::DeleteSource(d) => {
                    if let Some(n) = &d.final_snapshot_name {
                        final_snapshot = n.clone();
                    }
                }
                StepSpec::Cutover(c) if c.strategy == CutoverStrategy::Route53 => {
                    zone = c
                        .hosted_zone_id
                        .as_deref()
                        .map(|z| z.trim_start_matches("/hostedzone/").to_string());
                    record = c
                        .record_name
                        .as_deref()
                        .map(|r| r.trim_end_matches('.').to_ascii_lowercase());
                }
                _ => {}
            }
        }
        // An in-place plan (no target) names only its source: its calls use nothing else.
        let t = plan.target.as_ref();
        // The RBAC users and group: the target's, or those `migrate_to_rbac` moves the source to.
        let rbac = t
            .and_then(|t| t.rbac())
            .or_else(|| plan.source.auth.as_ref().map(|a| &a.rbac));
        Names {
            source,
            target: t
                .map(|t| t.replication_group_id.clone())
                .unwrap_or_default(),
            backup_snapshot,
            final_snapshot,
            kms_key: t.and_then(|t| t.kms_key_id.clone()),
            secrets: match t {
                Some(t) => t
                    .secret_specs()
                    .into_iter()
                    .filter_map(|s| s.secrets_manager.clone())
                    .collect(),
                None => plan
                    .source
                    .auth_token
                    .iter()
                    .chain(
                        rbac.into_iter()
                            .flat_map(|r| r.users.iter().map(|u| &u.password)),
                    )
                    .filter_map(|s| s.secrets_manager.clone())
                    .collect(),
            },
            users: t
                .and_then(|t| t.rbac())
                .map(|r| {
                    r.users
                        .iter()
                        .map(|u| u.user_id.to_ascii_lowercase())
                        .collect()
                })
                .unwrap_or_default(),
            user_group: t.and_then(|t| t.rbac()).map(|r| r.user_group_id.clone()),
            zone,
            record,
            parameter_group: t.and_then(|t| t.cache_parameter_group_name.clone()),
            subnet_group: t.and_then(|t| t.cache_subnet_group_name.clone()),
        }
    }
}

struct Arns<'a> {
    scope: &'a Scope,
}

impl Arns<'_> {
    fn ec(&self, kind: &str, name: &str) -> String {
        format!(
            "arn:aws:elasticache:{}:{}:{kind}:{name}",
            self.scope.region.value, self.scope.account.value
        )
    }
    fn group(&self, id: &str) -> String {
        self.ec("replicationgroup", id)
    }
    /// The cache clusters of a group: `<group>-001`..`-006`, or `<group>-0001-001`..`-0500-006` in cluster
    /// mode. `-0*` keeps `orders-0*` from matching the clusters of `orders-enc`.
    fn members(&self, id: &str) -> String {
        self.ec("cluster", &format!("{id}-0*"))
    }
    fn snapshot(&self, name: &str) -> String {
        self.ec("snapshot", name)
    }
    /// The key the plan names, and the alias a condition must match when it names it by alias (the
    /// key's own ARN is then unknown until it is described).
    fn kms_key(&self, key: &str) -> (String, Option<String>) {
        let (region, account) = (&self.scope.region.value, &self.scope.account.value);
        if let Some(rest) = key.strip_prefix("arn:") {
            let parts: Vec<&str> = rest.splitn(5, ':').collect();
            if let [partition, _, r, a, resource] = parts.as_slice() {
                if resource.starts_with("alias/") {
                    return (
                        format!("arn:{partition}:kms:{r}:{a}:key/*"),
                        Some(resource.to_string()),
                    );
                }
                return (key.to_string(), None);
            }
        }
        if key.starts_with("alias/") {
            return (
                format!("arn:aws:kms:{region}:{account}:key/*"),
                Some(key.to_string()),
            );
        }
        (format!("arn:aws:kms:{region}:{account}:key/{key}"), None)
    }
    /// A secret by ARN, or by name: Secrets Manager appends `-` and six random characters to the ARN.
    fn secret(&self, id: &str) -> String {
        if id.starts_with("arn:") {
            return id.to_string();
        }
        format!(
            "arn:aws:secretsmanager:{}:{}:secret:{id}-??????",
            self.scope.region.value, self.scope.account.value
        )
    }
}

fn grant(action: &'static str, resources: &[String], why: &'static str) -> Grant {
    Grant {
        action,
        resources: resources.iter().cloned().collect(),
        condition: Value::Null,
        called: true,
        why,
    }
}

impl Grant {
    fn on_behalf(mut self) -> Grant {
        self.called = false;
        self
    }
    fn when(mut self, condition: Value) -> Grant {
        self.condition = condition;
        self
    }
}

/// The ARNs of the plan's secrets (a `*`-free placeholder when it names none).
fn secret_arns(arns: &Arns<'_>, n: &Names) -> Vec<String> {
    if n.secrets.is_empty() {
        return vec![arns.secret("")];
    }
    n.secrets.iter().map(|s| arns.secret(s)).collect()
}

/// The grants of one call.
pub(super) fn grants(call: &Call, n: &Names, scope: &Scope) -> Vec<Grant> {
    let arns = Arns { scope };
    match call {
        Call::DescribeGroup(id) => vec![
            grant(
                "elasticache:DescribeReplicationGroups",
                &[arns.group(id)],
                "reads the group's status, encryption, shape and endpoints",
            ),
            grant(
                "elasticache:DescribeCacheClusters",
                &[arns.members(id)],
                "reads what the group does not report itself (engine version, subnet and security groups, parameter group, port, windows) from its first member cluster",
            ),
            grant(
                "elasticache:ListTagsForResource",
                &[arns.group(id)],
                "reads the group's tags, copied onto the target (best-effort: without it the tags are not copied)",
            ),
        ],
        Call::ListSourceSnapshots => vec![grant(
            "elasticache:DescribeSnapshots",
            &[arns.snapshot("*")],
            "preflight lists the source's existing snapshots, whose names are not known in advance, to report unencrypted ones",
        )],
        Call::DescribeSnapshot => vec![grant(
            "elasticache:DescribeSnapshots",
            &[
                arns.snapshot(&n.backup_snapshot),
                arns.snapshot(&n.final_snapshot),
            ],
            "waits for the snapshot this run takes (and finds it again on resume)",
        )],
        Call::DescribeKey => describe_key(&arns, n),
        Call::KeyRotationStatus => key_rotation_status(&arns, n),
        Call::GetSecret => vec![grant(
            "secretsmanager:GetSecretValue",
            &secret_arns(&arns, n),
            "reads the target's AUTH token (or its RBAC users' passwords)",
        )],
        Call::PutSecret => {
            let secret = secret_arns(&arns, n);
            vec![
                grant(
                    "secretsmanager:PutSecretValue",
                    &secret,
                    "keeps a generated AUTH token as a new version of an existing secret",
                ),
                grant(
                    "secretsmanager:CreateSecret",
                    &secret,
                    "keeps a generated AUTH token in a new secret when none exists",
                ),
                grant(
                    "secretsmanager:TagResource",
                    &secret,
                    "CreateSecret sends tags (ecmigrate:plan); Secrets Manager then also checks TagResource",
                )
                .on_behalf(),
            ]
        }
        Call::CreateSnapshot => {
            let snapshots = [
                arns.snapshot(&n.backup_snapshot),
                arns.snapshot(&n.final_snapshot),
            ];
            let mut out = vec![
                grant(
                    "elasticache:CreateSnapshot",
                    &[
                        arns.group(&n.source),
                        arns.members(&n.source),
                        snapshots[0].clone(),
                        snapshots[1].clone(),
                    ],
                    "takes the pre-migration and final snapshots of the source, encrypted with the plan's key",
                ),
                grant(
                    "elasticache:AddTagsToResource",
                    &snapshots,
                    "CreateSnapshot sends tags (ecmigrate:source, ecmigrate:managed); ElastiCache then also checks AddTagsToResource",
                )
                .on_behalf(),
            ];
            out.extend(kms_for_elasticache(&arns, n));
            out
        }
        Call::CreateGroup => {
            let or_any = |name: &Option<String>| name.clone().unwrap_or_else(|| "*".into());
            let mut out = vec![
                grant(
                    "elasticache:CreateReplicationGroup",
                    &[
                        arns.group(&n.target),
                        arns.members(&n.target),
                        arns.snapshot(&n.backup_snapshot),
                        // The source's, unless the plan names them: known only at run time.
                        arns.ec("parametergroup", &or_any(&n.parameter_group)),
                        arns.ec("subnetgroup", &or_any(&n.subnet_group)),
                    ]
                    .into_iter()
                    .chain(n.user_group.iter().map(|g| arns.ec("usergroup", g)))
                    .collect::<Vec<_>>(),
                    "creates the encrypted target from the pre-migration snapshot, in the source's (or the plan's) subnet and parameter groups",
                ),
                grant(
                    "elasticache:AddTagsToResource",
                    &[arns.group(&n.target), arns.members(&n.target)],
                    "CreateReplicationGroup sends tags (the source's and ecmigrate's); ElastiCache then also checks AddTagsToResource",
                )
                .on_behalf(),
            ];
            out.extend(kms_for_elasticache(&arns, n));
            out
        }
        Call::DescribeRbac => {
            vec![
                grant(
                    "elasticache:DescribeUsers",
                    &[arns.ec("user", "*")],
                    "checks that the plan's RBAC user ids are free, and waits for the users (DescribeUsers filtered by UserId)",
                ),
                grant(
                    "elasticache:DescribeUserGroups",
                    &[arns.ec("usergroup", "*")],
                    "checks that the plan's user group id is free, and waits until it is active",
                ),
            ]
        }
        Call::CreateRbac => {
            let users: Vec<String> = n.users.iter().map(|u| arns.ec("user", u)).collect();
            let group = arns.ec("usergroup", n.user_group.as_deref().unwrap_or_default());
            let mut both = users.clone();
            both.push(group.clone());
            vec![
                grant(
                    "elasticache:CreateUser",
                    &users,
                    "creates the plan's RBAC users, each with its password from its store",
                ),
                grant(
                    "elasticache:CreateUserGroup",
                    &both,
                    "creates the user group holding the plan's users, named in the target's UserGroupIds",
                ),
                grant(
                    "elasticache:AddTagsToResource",
                    &both,
                    "CreateUser and CreateUserGroup send tags (ecmigrate:plan, ecmigrate:run); ElastiCache then also checks AddTagsToResource",
                )
                .on_behalf(),
            ]
        }
        Call::DeleteGroup(id) => vec![grant(
            "elasticache:DeleteReplicationGroup",
            &[arns.group(id)],
            "deletes the source once it is cut over and verified (delete_source), or a target of this run whose creation failed, to create it again (restore_encrypted)",
        )],
        Call::ModifyTransit(id) => vec![grant(
            "elasticache:ModifyReplicationGroup",
            &[arns.group(id)],
            "turns in-transit encryption on in place: mode `preferred`, then, once released, `required` (enable_transit)",
        )],
        Call::ModifyToUserGroup(id) => vec![grant(
            "elasticache:ModifyReplicationGroup",
            &[
                arns.group(id),
                arns.ec("usergroup", n.user_group.as_deref().unwrap_or_default()),
            ],
            "moves the group from its AUTH token to RBAC: UserGroupIdsToAdd with AuthTokenUpdateStrategy DELETE (migrate_to_rbac)",
        )],
        Call::ModifyAuthToken(id) => vec![grant(
            "elasticache:ModifyReplicationGroup",
            &[arns.group(id)],
            "rotates the AUTH token in place: AuthTokenUpdateStrategy ROTATE, then, once released, SET (rotate_auth_token)",
        )],
        Call::StageSecret => {
            let secret = secret_arns(&arns, n);
            vec![
                grant(
                    "secretsmanager:GetSecretValue",
                    &secret,
                    "reads the current, pending and previous versions of the source's AUTH token",
                ),
                grant(
                    "secretsmanager:PutSecretValue",
                    &secret,
                    "keeps the rotated AUTH token as a new version labelled AWSPENDING",
                ),
                grant(
                    "secretsmanager:UpdateSecretVersionStage",
                    &secret,
                    "makes the rotated token's version AWSCURRENT once both tokens open the group",
                ),
            ]
        }
        Call::DnsRecord => vec![grant(
            "route53:ListResourceRecordSets",
            &[hosted_zone(n)],
            "reads the CNAME clients resolve, to keep its TTL and say what it pointed at",
        )],
        Call::UpsertCname => vec![
            grant(
                "route53:ChangeResourceRecordSets",
                &[hosted_zone(n)],
                "upserts the cutover's CNAME, and only it, to the target's endpoint",
            )
            .when(json!({
                "ForAllValues:StringEquals": {
                    "route53:ChangeResourceRecordSetsNormalizedRecordNames": [n.record.clone().unwrap_or_default()],
                    "route53:ChangeResourceRecordSetsRecordTypes": ["CNAME"],
                    "route53:ChangeResourceRecordSetsActions": ["UPSERT"],
                }
            })),
        ],
        Call::DnsChangeStatus => vec![grant(
            "route53:GetChange",
            &["arn:aws:route53:::change/*".to_string()],
            "waits until the record change is INSYNC; its id is only known once the record is changed",
        )],
    }
}

fn hosted_zone(n: &Names) -> String {
    format!(
        "arn:aws:route53:::hostedzone/{}",
        n.zone.as_deref().unwrap_or("*")
    )
}

/// `kms:ResourceAliases` when the plan names its key by alias, merged into `extra`.
fn alias_condition(alias: Option<String>, extra: Value) -> Value {
    let mut condition = extra;
    if let Some(alias) = alias {
        if condition.is_null() {
            condition = json!({});
        }
        condition["ForAnyValue:StringEquals"] = json!({ "kms:ResourceAliases": alias });
    }
    condition
}

fn key_rotation_status(arns: &Arns<'_>, n: &Names) -> Vec<Grant> {
    let Some(key) = &n.kms_key else {
        return Vec::new();
    };
    let (resource, alias) = arns.kms_key(key);
    vec![
        grant(
            "kms:GetKeyRotationStatus",
            &[resource],
            "warns in preflight when the key's automatic rotation is off",
        )
        .when(alias_condition(alias, Value::Null)),
    ]
}

fn describe_key(arns: &Arns<'_>, n: &Names) -> Vec<Grant> {
    let Some(key) = &n.kms_key else {
        return Vec::new();
    };
    let (resource, alias) = arns.kms_key(key);
    vec![
        grant(
            "kms:DescribeKey",
            &[resource],
            "checks that the plan's key exists, is enabled and symmetric, and resolves its ARN",
        )
        .when(alias_condition(alias, Value::Null)),
        grant(
            "kms:ListAliases",
            &["*".to_string()],
            "names the key's aliases in the run's record; ListAliases authorizes no resource, so it cannot be scoped",
        ),
    ]
}

/// What ElastiCache does with the caller's permissions when it encrypts a snapshot or a group with a
/// customer managed key: it creates a grant on the key for itself, and uses data keys. Only through
/// ElastiCache (`kms:ViaService`), and the grant only for an AWS resource.
fn kms_for_elasticache(arns: &Arns<'_>, n: &Names) -> Vec<Grant> {
    let Some(key) = &n.kms_key else {
        return Vec::new();
    };
    let (resource, alias) = arns.kms_key(key);
    let region = &arns.scope.region.value;
    let via = if region == "*" {
        json!({ "StringLike": { "kms:ViaService": "elasticache.*.amazonaws.com" } })
    } else {
        json!({ "StringEquals": { "kms:ViaService": format!("elasticache.{region}.amazonaws.com") } })
    };
    let resources = [resource];
    let mut grant_condition = via.clone();
    grant_condition["Bool"] = json!({ "kms:GrantIsForAWSResource": "true" });
    vec![
        grant(
            "kms:CreateGrant",
            &resources,
            "ElastiCache creates a grant on the customer managed key, with the caller's permissions, to encrypt the snapshot or the group's nodes",
        )
        .on_behalf()
        .when(alias_condition(alias.clone(), grant_condition)),
        grant(
            "kms:GenerateDataKey",
            &resources,
            "ElastiCache generates the data key that encrypts the snapshot or the group, with the caller's permissions",
        )
        .on_behalf()
        .when(alias_condition(alias.clone(), via.clone())),
        grant(
            "kms:Decrypt",
            &resources,
            "ElastiCache decrypts that data key, and the encrypted pre-migration snapshot it restores the target from",
        )
        .on_behalf()
        .when(alias_condition(alias, via)),
    ]
}
