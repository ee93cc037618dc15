//! `preflight` of a plan without `target` (a change in place): the source exists and is available; for
//! `enable_transit`, it runs an engine that can take TLS in place (Redis OSS 7.0+ or Valkey 7.2+, see
//! `eligibility::in_place_transit_supported`), is not already `required`, and is in a VPC (a cache subnet
//! group; ElastiCache has TLS only there); for `rotate_auth_token`, see its own `preflight`. All checks
//! run; any failure refuses (exit 3).

use serde_json::json;

use crate::cloud::ReplicationGroup;
use crate::eligibility::{in_place_transit_supported, terraform_replaces_below};
use crate::engine::{StepContext, StepOutcome};
use crate::error::{Error, Result};
use crate::plan::StepKind;
use crate::steps::cloud_error;
use crate::steps::obj;
use crate::steps::preflight::Checks;

pub async fn run(ctx: &StepContext) -> Result<StepOutcome> {
    let id = &ctx.plan.plan.source.replication_group_id;
    let mut c = Checks {
        ctx,
        refusals: Vec::new(),
    };
    let group = ctx
        .cloud
        .describe_group(id)
        .await
        .map_err(|e| cloud_error("describing the source", e))?;
    let Some(g) = group else {
        c.refuse(
            "source_exists",
            format!("source replication group `{id}` does not exist"),
            format!(
                "check source.replication_group_id and the provider ({})",
                ctx.cloud.provider()
            ),
        );
        return Err(Error::PreflightRefused {
            refusals: c.refusals,
        });
    };
    c.pass("source_exists", format!("`{id}` exists"));
    if g.is_available() {
        c.pass("source_available", format!("`{id}` is available"));
    } else {
        c.refuse(
            "source_available",
            format!("source `{id}` is `{}`, not `available`", g.status),
            "wait until the group is available (no modification or snapshot in progress), then run again",
        );
    }
    let kinds: Vec<StepKind> = ctx.plan.plan.steps.iter().map(|s| s.kind()).collect();
    if kinds.contains(&StepKind::EnableTransit) {
        transit_checks(ctx, &g, &mut c);
    }
    if kinds.contains(&StepKind::RotateAuthToken) {
        let transit_first = kinds.contains(&StepKind::EnableTransit);
        crate::steps::rotate_auth_token::preflight::checks(ctx, &g, transit_first, &mut c).await;
    }
    if kinds.contains(&StepKind::MigrateToRbac)
        && let Some(auth) = &ctx.plan.plan.source.auth
    {
        let transit_first = kinds.contains(&StepKind::EnableTransit);
        if !(g.transit_encryption_enabled || transit_first) || !g.auth_token_enabled {
            c.refuse(
                "source_token",
                format!(
                    "`{id}` has TLS {} and an AUTH token {}: `migrate_to_rbac` moves a group with both to RBAC",
                    g.transit_encryption_enabled, g.auth_token_enabled
                ),
                "turn in-transit encryption on first (an `enable_transit` step) and give the group a token",
            );
        }
        for secret in crate::steps::rbac_secrets(&ctx.plan, &auth.rbac, "source.auth.rbac") {
            crate::steps::preflight::check_secret(ctx, &mut c, &secret).await;
        }
        crate::steps::rbac::preflight(ctx, &mut c, &g, &auth.rbac).await?;
    }
    if !c.refusals.is_empty() {
        return Err(Error::PreflightRefused {
            refusals: c.refusals,
        });
    }
    Ok(StepOutcome::done(&obj(vec![
        ("source_engine", json!(g.engine)),
        ("source_engine_version", json!(g.engine_version)),
        ("source_before", g.encryption_attributes()),
    ])))
}

/// What `enable_transit` needs of the group.
fn transit_checks(ctx: &StepContext, g: &ReplicationGroup, c: &mut Checks<'_>) {
    let id = &g.id;
    match in_place_transit_supported(&g.engine, &g.engine_version) {
        Ok(()) => c.pass(
            "engine_version",
            format!(
                "{} {} can switch in-transit encryption on in place",
                g.engine, g.engine_version
            ),
        ),
        Err(rule) => c.refuse(
            "engine_version",
            rule,
            "upgrade the engine (Redis OSS 7.0 or later, Valkey 7.2 or later) first, or migrate to a new encrypted group (a plan with `target`)",
        ),
    }
    if let Some(note) = terraform_replaces_below(&g.engine, &g.engine_version) {
        ctx.note(note);
    }
    match (
        g.transit_encryption_enabled,
        g.transit_encryption_mode.as_deref(),
    ) {
        (true, Some("preferred")) => c.pass(
            "transit_not_required",
            format!("`{id}` is already `preferred`: a resumed change finishes it"),
        ),
        (true, mode) => c.refuse(
            "transit_not_required",
            format!(
                "`{id}` already has in-transit encryption in mode `{}`",
                mode.unwrap_or("required")
            ),
            "nothing to do in place; remove the plan, or migrate to a new group for at-rest encryption",
        ),
        (false, _) => c.pass(
            "transit_not_required",
            format!("`{id}` has no in-transit encryption yet"),
        ),
    }
    if g.cluster_enabled && ctx.cloud.provider() == "sandbox" {
        c.refuse(
            "cluster_mode",
            format!("`{id}` is a cluster-mode-enabled sandbox group"),
            "the sandbox does not model in-place TLS on a cluster (its cluster bus cannot switch at runtime); try it on a cluster-mode-disabled group",
        );
    }
    if ctx.cloud.provider() == "aws" {
        match &g.cache_subnet_group_name {
            Some(name) => c.pass(
                "cache_subnet_group",
                format!("`{id}` is in a VPC (cache subnet group `{name}`)"),
            ),
            None => c.refuse(
                "cache_subnet_group",
                format!("`{id}` reports no cache subnet group: in-transit encryption needs a group in a VPC"),
                "a group outside a VPC (EC2-Classic) cannot take TLS; migrate it into a VPC first",
            ),
        }
    }
}
