//! The rules a parsed plan must follow, beyond what its types already enforce. Every broken rule is
//! collected; nothing stops at the first one.

use std::path::Path;

mod in_place;
mod rbac;

use super::rules;
use super::types::*;
use in_place::{check_hold_fields, check_in_place_steps, check_source_auth_token};

/// One broken rule: the dotted field path and the rule in words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Finding {
    pub field: String,
    pub rule: String,
}

#[derive(Default)]
struct Findings(Vec<Finding>);

impl Findings {
    fn add(&mut self, field: impl Into<String>, rule: impl Into<String>) {
        self.0.push(Finding {
            field: field.into(),
            rule: rule.into(),
        });
    }

    fn check(&mut self, field: impl Into<String>, result: Result<(), String>) {
        if let Err(rule) = result {
            self.add(field, rule);
        }
    }
}

/// Every rule the plan breaks, in document order as far as practical.
pub(crate) fn validate(plan: &Plan) -> Vec<Finding> {
    let mut f = Findings::default();
    if plan.version != 1 {
        f.add(
            "version",
            format!(
                "must be 1, the only plan version this ecmigrate knows (got {})",
                plan.version
            ),
        );
    }
    f.check("name", rules::check_plan_name(&plan.name));
    check_aws(plan, &mut f);
    check_source(plan, &mut f);
    check_target(plan, &mut f);
    check_steps(plan, &mut f);
    f.0
}

fn check_aws(plan: &Plan, f: &mut Findings) {
    let Some(aws) = &plan.aws else { return };
    if plan.provider != Provider::Aws {
        f.add(
            "aws",
            format!("the `aws` block is only allowed with `provider: aws` (this plan uses `provider: {}`)", plan.provider.as_str()),
        );
        return;
    }
    if let Some(region) = &aws.region {
        f.check("aws.region", rules::check_region(region));
        if let Some(key) = plan.target.as_ref().and_then(|t| t.kms_key_id.as_ref()) {
            f.check("target.kms_key_id", rules::check_key_in_region(key, region));
        }
    }
    if let Some(profile) = &aws.profile {
        f.check("aws.profile", rules::check_profile(profile));
    }
}

fn check_source(plan: &Plan, f: &mut Findings) {
    f.check(
        "source.replication_group_id",
        rules::check_group_id(&plan.source.replication_group_id),
    );
    if let Some(ep) = &plan.source.data_endpoint {
        f.check("source.data_endpoint", rules::check_endpoint(ep));
    }
    if let Some(p) = &plan.source.tls_ca_file {
        check_path(f, "source.tls_ca_file", p);
        if !plan.is_in_place() {
            f.add(
                "source.tls_ca_file",
                "is only allowed in a plan without `target` (the source of a migration is reached as it is)",
            );
        }
    }
    check_client_cert(
        f,
        "source",
        &plan.source.tls_client_cert,
        &plan.source.tls_client_key,
    );
    check_source_auth_token(plan, f);
}

/// `tls_client_cert` and `tls_client_key` come together: a certificate is useless without its key.
fn check_client_cert(
    f: &mut Findings,
    side: &str,
    cert: &Option<std::path::PathBuf>,
    key: &Option<std::path::PathBuf>,
) {
    match (cert, key) {
        (Some(c), Some(k)) => {
            check_path(f, &format!("{side}.tls_client_cert"), c);
            check_path(f, &format!("{side}.tls_client_key"), k);
        }
        (Some(_), None) => f.add(
            format!("{side}.tls_client_key"),
            "is required with `tls_client_cert`: the certificate's private key (PEM)",
        ),
        (None, Some(_)) => f.add(
            format!("{side}.tls_client_cert"),
            "is required with `tls_client_key`: the client certificate (PEM) the key belongs to",
        ),
        (None, None) => {}
    }
}

fn check_path(f: &mut Findings, field: &str, p: &Path) {
    if p.as_os_str().is_empty() {
        f.add(field, "must not be empty: give a path (relative paths are resolved against the plan's folder)");
    }
}

fn check_target(plan: &Plan, f: &mut Findings) {
    let Some(t) = &plan.target else { return };
    f.check(
        "target.replication_group_id",
        rules::check_group_id(&t.replication_group_id),
    );
    if t.replication_group_id
        .eq_ignore_ascii_case(&plan.source.replication_group_id)
    {
        f.add(
            "target.replication_group_id",
            "must differ from `source.replication_group_id` (ElastiCache ids are not case-sensitive): the migration creates a new group",
        );
    }
    if let Some(k) = &t.kms_key_id {
        f.check("target.kms_key_id", rules::check_kms_key_id(k));
    }
    rbac::check_target_auth(t, f);
    check_shape(t, f);
    check_group_settings(t, f);
    if let Some(ep) = &t.data_endpoint {
        f.check("target.data_endpoint", rules::check_endpoint(ep));
    }
    if let Some(p) = &t.tls_ca_file {
        check_path(f, "target.tls_ca_file", p);
    }
    check_client_cert(f, "target", &t.tls_client_cert, &t.tls_client_key);
}

/// A token store (`target.auth_token`, an RBAC user's `password`) at `at`: exactly one store,
/// `generate` only with a store ecmigrate can write.
fn check_token_store(at: &str, a: &AuthTokenSpec, f: &mut Findings) {
    match (&a.file, &a.env, &a.secrets_manager) {
        (Some(_), Some(_), _) => f.add(
            format!("{at}.env"),
            "give exactly one of `file`, `env` or `secrets_manager`, not several",
        ),
        (Some(_), None, Some(_)) | (None, Some(_), Some(_)) => f.add(
            format!("{at}.secrets_manager"),
            "give exactly one of `file`, `env` or `secrets_manager`, not several",
        ),
        (None, None, None) if !a.generate => {
            let what = if at.ends_with("password") {
                "the password"
            } else {
                "the AUTH token"
            };
            f.add(
                at,
                format!("must say where {what} is: `file: PATH`, `env: NAME` or `secrets_manager: SECRET` (or `generate: true` with `file` or `secrets_manager`)"),
            )
        }
        _ => {}
    }
    if a.generate && a.file.is_none() && a.secrets_manager.is_none() {
        f.add(
            format!("{at}.generate"),
            "`generate: true` needs `file` or `secrets_manager`: a generated token must be stored where ecmigrate can write it",
        );
    }
    if let Some(id) = &a.secrets_manager {
        f.check(format!("{at}.secrets_manager"), rules::check_secret_id(id));
    }
    if let Some(p) = &a.file {
        check_path(f, &format!("{at}.file"), p);
    }
    if let Some(env) = &a.env {
        f.check(format!("{at}.env"), rules::check_env_name(env));
    }
}

/// Node type and node counts of the new group.
fn check_shape(t: &TargetSpec, f: &mut Findings) {
    if let Some(v) = &t.cache_node_type {
        f.check("target.cache_node_type", rules::check_cache_node_type(v));
    }
    if let Some(n) = t.num_cache_clusters {
        f.check(
            "target.num_cache_clusters",
            rules::check_range(n.into(), 1, 6),
        );
    }
    if let Some(n) = t.num_node_groups {
        f.check(
            "target.num_node_groups",
            rules::check_range(n.into(), 1, 500),
        );
        if t.num_cache_clusters.is_some() {
            f.add(
                "target.num_node_groups",
                "`num_cache_clusters` and `num_node_groups` are mutually exclusive: give one (cluster mode disabled or enabled)",
            );
        }
    }
    if let Some(n) = t.replicas_per_node_group {
        f.check(
            "target.replicas_per_node_group",
            rules::check_range(n.into(), 0, 5),
        );
    }
}

/// Subnet and parameter groups, security groups, port and tags of the new group.
fn check_group_settings(t: &TargetSpec, f: &mut Findings) {
    for (field, name) in [
        ("target.cache_subnet_group_name", &t.cache_subnet_group_name),
        (
            "target.cache_parameter_group_name",
            &t.cache_parameter_group_name,
        ),
    ] {
        if let Some(name) = name
            && (name.trim().is_empty() || name.chars().count() > 255)
        {
            f.add(
                field,
                "must be 1 to 255 characters, or left out to use the source's",
            );
        }
    }
    if let Some(ids) = &t.security_group_ids {
        for (i, id) in ids.iter().enumerate() {
            f.check(
                format!("target.security_group_ids[{i}]"),
                rules::check_security_group_id(id),
            );
        }
    }
    if let Some(port) = t.port {
        f.check("target.port", rules::check_range(port.into(), 1, 65535));
    }
    if let Some(tags) = &t.tags {
        f.check("target.tags", rules::check_tag_count(tags.len()));
        for (k, v) in tags {
            f.check(format!("target.tags.{k}"), rules::check_tag(k, v));
        }
    }
}

fn check_steps(plan: &Plan, f: &mut Findings) {
    if plan.steps.is_empty() {
        let order = StepKind::ALL.map(StepKind::as_str).join(", ");
        f.add("steps", format!("must list at least the `preflight`, `backup` and `restore_encrypted` steps (in the order {order})"));
        return;
    }
    let seen = check_step_order(plan, f);
    if plan.is_in_place() {
        check_in_place_steps(plan, &seen, f);
    } else {
        check_required_steps(&seen, f);
    }
    let backup_name = plan.steps.iter().find_map(|s| match s {
        StepSpec::Backup(b) => b.snapshot_name.as_deref(),
        _ => None,
    });
    for (i, step) in plan.steps.iter().enumerate() {
        check_step_fields(plan, step, i, backup_name, f);
    }
}

/// Each kind listed once and in `StepKind::ALL`'s order. Returns where each kind was first listed.
fn check_step_order(plan: &Plan, f: &mut Findings) -> Vec<(StepKind, usize)> {
    let order = StepKind::ALL.map(StepKind::as_str).join(", ");
    let mut seen: Vec<(StepKind, usize)> = Vec::new();
    for (i, step) in plan.steps.iter().enumerate() {
        let kind = step.kind();
        if let Some((_, j)) = seen.iter().find(|(k, _)| *k == kind) {
            f.add(
                format!("steps[{i}].kind"),
                format!(
                    "`{kind}` appears twice (first as steps[{j}]); each step may be listed once"
                ),
            );
            continue;
        }
        if let Some((later, _)) = seen
            .iter()
            .filter(|(k, _)| *k > kind)
            .min_by_key(|(_, j)| *j)
        {
            f.add(
                format!("steps[{i}].kind"),
                format!("`{kind}` must come before `{later}` (steps keep the order {order})"),
            );
        }
        seen.push((kind, i));
    }
    seen
}

/// The three steps every plan has, and the two `delete_source` needs before it.
fn check_required_steps(seen: &[(StepKind, usize)], f: &mut Findings) {
    let index_of = |k: StepKind| seen.iter().find(|(s, _)| *s == k).map(|(_, i)| *i);
    if let Some(i) = index_of(StepKind::EnableTransit) {
        f.add(
            format!("steps[{i}].kind"),
            "`enable_transit` changes the source in place: it is only allowed in a plan without `target` (a migration's new group gets TLS when it is created)",
        );
    }
    if let Some(i) = index_of(StepKind::RotateAuthToken) {
        f.add(
            format!("steps[{i}].kind"),
            "`rotate_auth_token` changes the source's token in place: it is only allowed in a plan without `target` (a migration's new group gets a new token when it is created)",
        );
    }
    if let Some(i) = index_of(StepKind::MigrateToRbac) {
        f.add(
            format!("steps[{i}].kind"),
            "`migrate_to_rbac` moves the source to RBAC in place: it is only allowed in a plan without `target` (a migration's new group takes `target.auth.rbac`)",
        );
    }
    for required in [
        StepKind::Preflight,
        StepKind::Backup,
        StepKind::RestoreEncrypted,
    ] {
        if index_of(required).is_none() {
            f.add("steps", format!("a `{required}` step is required"));
        }
    }
    if let Some(d) = index_of(StepKind::DeleteSource) {
        for needed in [StepKind::Verify, StepKind::Cutover] {
            if index_of(needed).is_none_or(|i| i >= d) {
                f.add(
                    format!("steps[{d}].kind"),
                    format!(
                        "`delete_source` needs a `{needed}` step before it: the source may only be deleted after cutover and a passed verify"
                    ),
                );
            }
        }
    }
}

/// The fields of step `i`; `backup_name` is the backup step's snapshot name, if it gives one.
fn check_step_fields(
    plan: &Plan,
    step: &StepSpec,
    i: usize,
    backup_name: Option<&str>,
    f: &mut Findings,
) {
    let at = |field: &str| format!("steps[{i}].{field}");
    match step {
        StepSpec::Preflight(_) | StepSpec::StreamCopy(_) => {}
        StepSpec::EnableTransit(e) => {
            check_hold_fields(e.timeout_seconds, e.postpone_flag_file.as_deref(), &at, f)
        }
        StepSpec::RotateAuthToken(r) => {
            check_hold_fields(r.timeout_seconds, r.postpone_flag_file.as_deref(), &at, f)
        }
        StepSpec::MigrateToRbac(m) => check_hold_fields(m.timeout_seconds, None, &at, f),
        StepSpec::Backup(b) => {
            if let Some(n) = &b.snapshot_name {
                f.check(at("snapshot_name"), rules::check_snapshot_name(n));
            }
            if let Some(t) = b.timeout_seconds {
                f.check(at("timeout_seconds"), rules::check_range(t, 60, 86400));
            }
        }
        StepSpec::RestoreEncrypted(r) => {
            if let Some(t) = r.timeout_seconds {
                f.check(at("timeout_seconds"), rules::check_range(t, 60, 86400));
            }
        }
        StepSpec::Verify(v) => {
            if let Some(s) = v.sample {
                f.check(at("sample"), rules::check_range(s, 1, 1_000_000));
                if v.full {
                    f.add(
                        at("sample"),
                        "`sample` and `full: true` exclude each other: give one",
                    );
                }
            }
            if let Some(t) = v.ttl_tolerance_ms {
                f.check(at("ttl_tolerance_ms"), rules::check_range(t, 0, 600_000));
            }
        }
        StepSpec::Cutover(c) => check_cutover(plan, c, i, f),
        StepSpec::DeleteSource(d) => check_delete_source(plan, d, i, backup_name, f),
    }
}

fn check_delete_source(
    plan: &Plan,
    d: &DeleteSourceStep,
    i: usize,
    backup_name: Option<&str>,
    f: &mut Findings,
) {
    let at = |field: &str| format!("steps[{i}].{field}");
    if let Some(t) = d.drain_timeout_seconds {
        f.check(at("drain_timeout_seconds"), rules::check_range(t, 0, 86400));
    }
    if let Some(n) = &d.final_snapshot_name {
        f.check(at("final_snapshot_name"), rules::check_snapshot_name(n));
        if backup_name.is_some_and(|b| b.eq_ignore_ascii_case(n)) {
            f.add(
                at("final_snapshot_name"),
                "must differ from the backup step's `snapshot_name`: both snapshots are kept",
            );
        }
    }
    if let Some(c) = &d.confirm
        && c != &plan.source.replication_group_id
    {
        f.add(
            at("confirm"),
            "must equal `source.replication_group_id` exactly, or be left out",
        );
    }
}

fn check_cutover(plan: &Plan, c: &CutoverStep, i: usize, f: &mut Findings) {
    let at = |field: &str| format!("steps[{i}].{field}");
    let strategy = c.strategy.as_str();
    check_cutover_strategy(plan, c, i, f);
    let only_with = [
        ("alias", c.alias.is_some(), CutoverStrategy::SandboxAlias),
        (
            "hosted_zone_id",
            c.hosted_zone_id.is_some(),
            CutoverStrategy::Route53,
        ),
        (
            "record_name",
            c.record_name.is_some(),
            CutoverStrategy::Route53,
        ),
        ("command", c.command.is_some(), CutoverStrategy::Command),
    ];
    for (field, given, allowed) in only_with {
        if given && c.strategy != allowed {
            f.add(
                at(field),
                format!(
                    "`{field}` is only allowed with strategy `{}` (this step uses `{strategy}`)",
                    allowed.as_str()
                ),
            );
        }
    }
    if let Some(ms) = c.max_write_pause_ms {
        f.check(
            at("max_write_pause_ms"),
            rules::check_range(ms, 100, 30_000),
        );
    }
    if let Some(n) = c.fence_attempts {
        f.check(at("fence_attempts"), rules::check_range(n as u64, 1, 20));
    }
    if let Some(s) = c.grace_seconds {
        f.check(at("grace_seconds"), rules::check_range(s, 0, 3600));
    }
    if let Some(h) = c.seal_source_hours {
        f.check(at("seal_source_hours"), rules::check_range(h, 0, 168));
    }
    for (field, value) in [
        ("postpone_flag_file", &c.postpone_flag_file),
        ("before_switch", &c.before_switch),
        ("after_switch", &c.after_switch),
    ] {
        if value.as_deref().is_some_and(|v| v.trim().is_empty()) {
            f.add(at(field), "must not be empty; leave the field out instead");
        }
    }
}

/// What the step's strategy needs: the provider it works with and its own fields.
fn check_cutover_strategy(plan: &Plan, c: &CutoverStep, i: usize, f: &mut Findings) {
    let at = |field: &str| format!("steps[{i}].{field}");
    match c.strategy {
        CutoverStrategy::SandboxAlias => {
            if plan.provider != Provider::Sandbox {
                f.add(
                    at("strategy"),
                    "strategy `sandbox_alias` needs `provider: sandbox`; use `route53`, `command` or `manual` with AWS",
                );
            }
            match &c.alias {
                None => f.add(
                    at("alias"),
                    "strategy `sandbox_alias` needs `alias`: the sandbox endpoint alias to repoint",
                ),
                Some(a) => f.check(at("alias"), rules::check_alias(a)),
            }
        }
        CutoverStrategy::Route53 => {
            if plan.provider != Provider::Aws {
                f.add(
                    at("strategy"),
                    "strategy `route53` needs `provider: aws`; use `sandbox_alias` with the sandbox",
                );
            }
            match &c.hosted_zone_id {
                None => f.add(
                    at("hosted_zone_id"),
                    "strategy `route53` needs `hosted_zone_id`: the zone of the record clients resolve",
                ),
                Some(z) => f.check(at("hosted_zone_id"), rules::check_hosted_zone_id(z)),
            }
            match &c.record_name {
                None => f.add(
                    at("record_name"),
                    "strategy `route53` needs `record_name`: the CNAME clients resolve",
                ),
                Some(n) => f.check(at("record_name"), rules::check_dns_name(n)),
            }
        }
        CutoverStrategy::Command => match &c.command {
            None => f.add(
                at("command"),
                "strategy `command` needs `command`: the shell command that repoints the clients",
            ),
            Some(cmd) if cmd.trim().is_empty() => f.add(at("command"), "must not be empty"),
            Some(_) => {}
        },
        CutoverStrategy::Manual => {}
    }
}
