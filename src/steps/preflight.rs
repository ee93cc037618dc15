//! `preflight`: every check an operator would make by hand, before anything changes. All checks run; any
//! failure refuses the migration (exit 3) with one hint per failed check.

use serde_json::json;

use crate::eligibility::{engine_major, engine_supports_encryption, node_type_supports_encryption};
use crate::engine::{StepContext, StepOutcome};
use crate::error::{Error, Refusal, Result};
use crate::plan::{CutoverStrategy, PreflightStep, StepSpec, rules};
use crate::steps::{cloud_error, kms_key_ref, obj, token_store};

pub(crate) struct Checks<'a> {
    pub(crate) ctx: &'a StepContext,
    pub(crate) refusals: Vec<Refusal>,
}

impl Checks<'_> {
    pub(crate) fn pass(&self, name: &str, detail: impl Into<String>) {
        self.ctx.check(name, true, detail);
    }
    pub(crate) fn refuse(
        &mut self,
        name: &str,
        message: impl Into<String>,
        hint: impl Into<String>,
    ) {
        let message = message.into();
        self.ctx.check(name, false, message.clone());
        self.refusals.push(Refusal {
            check: name.into(),
            message,
            hint: hint.into(),
        });
    }
}

pub async fn run(ctx: &StepContext, _spec: &PreflightStep) -> Result<StepOutcome> {
    let plan = &ctx.plan.plan;
    if plan.is_in_place() {
        return crate::steps::enable_transit::preflight::run(ctx).await;
    }
    let mut c = Checks {
        ctx,
        refusals: Vec::new(),
    };
    let source_id = &plan.source.replication_group_id;
    let target_id = &plan.target().replication_group_id;

    // Source: exists, available, not already encrypted, engine supports encryption.
    let source = ctx
        .cloud
        .describe_group(source_id)
        .await
        .map_err(|e| cloud_error("describing the source", e))?;
    match &source {
        None => c.refuse(
            "source_exists",
            format!("source replication group `{source_id}` does not exist"),
            format!(
                "check source.replication_group_id and the provider ({})",
                ctx.cloud.provider()
            ),
        ),
        Some(g) => check_source(ctx, &mut c, g).await,
    }

    // Target id free.
    match ctx.cloud.describe_group(target_id).await.map_err(|e| cloud_error("describing the target", e))? {
        None => c.pass("target_id_free", format!("`{target_id}` is free")),
        Some(g) => c.refuse(
            "target_id_free",
            format!("target replication group `{target_id}` already exists (status {})", g.status),
            "choose another target.replication_group_id, or delete the existing group if it is a leftover",
        ),
    }
    let kms_arn = check_kms_key(ctx, &mut c).await?;
    let store = check_target_secrets(ctx, &mut c).await;
    if let (Some(g), Some(rbac)) = (&source, ctx.plan.plan.target().rbac()) {
        crate::steps::rbac::preflight(ctx, &mut c, g, rbac).await?;
    }
    check_cutover_alias(ctx, &mut c).await?;
    let unencrypted = match &source {
        Some(_) => list_unencrypted_snapshots(ctx, &mut c).await?,
        None => Vec::new(),
    };

    if !c.refusals.is_empty() {
        return Err(Error::PreflightRefused {
            refusals: c.refusals,
        });
    }
    Ok(StepOutcome::done(&obj(vec![
        (
            "source_engine_version",
            json!(source.as_ref().map(|g| g.engine_version.clone())),
        ),
        ("kms_key_id", json!(kms_arn)),
        ("auth_token_store", json!(store.to_string())),
        ("unencrypted_snapshots", json!(unencrypted)),
        (
            "source_before",
            source
                .as_ref()
                .map(|g| g.encryption_attributes())
                .unwrap_or_default(),
        ),
    ])))
}

/// The source's own checks: available, unencrypted, an engine and node type that support encryption, a
/// subnet group (AWS), its keyspace for cluster mode, and notifications for a streamed plan.
async fn check_source(ctx: &StepContext, c: &mut Checks<'_>, g: &crate::cloud::ReplicationGroup) {
    let plan = &ctx.plan.plan;
    let source_id = &plan.source.replication_group_id;
    c.pass("source_exists", format!("`{source_id}` exists"));
    if g.is_available() {
        c.pass("source_available", format!("`{source_id}` is available"));
    } else {
        c.refuse(
            "source_available",
            format!("source `{source_id}` is `{}`, not `available`", g.status),
            "wait until the group is available (no modification or snapshot in progress), then run again",
        );
    }
    if g.fully_encrypted() {
        c.refuse(
            "source_unencrypted",
            format!("source `{source_id}` already has at-rest and in-transit encryption"),
            "nothing to migrate: the group is already encrypted",
        );
    } else if g.at_rest_encryption_enabled {
        c.refuse(
            "source_unencrypted",
            format!("source `{source_id}` already has at-rest encryption; only in-transit encryption is missing"),
            if engine_major(&g.engine_version) >= 7 {
                "enable in-transit encryption in place instead of recreating: ModifyReplicationGroup with TransitEncryptionEnabled and TransitEncryptionMode preferred, move the clients to TLS, then mode required".to_string()
            } else {
                format!(
                    "in-place in-transit encryption needs engine 7.0 or later (this is {}): upgrade the engine, then enable it in place (mode preferred, then required)",
                    g.engine_version
                )
            },
        );
    } else {
        c.pass(
            "source_unencrypted",
            "at-rest encryption is off: a new group is needed",
        );
    }
    match engine_supports_encryption(&g.engine_version) {
        Ok(()) => c.pass(
            "engine_version",
            format!("engine {} supports encryption", g.engine_version),
        ),
        Err(rule) => c.refuse(
            "engine_version",
            rule,
            "upgrade the source's engine (3.2.6, 4.0.10 or later) before migrating",
        ),
    }
    let node_type = plan
        .target()
        .cache_node_type
        .clone()
        .unwrap_or_else(|| g.cache_node_type.clone());
    match node_type_supports_encryption(&node_type) {
        Ok(()) => c.pass(
            "node_type",
            format!("node type {node_type} supports encryption"),
        ),
        Err(rule) => c.refuse(
            "node_type",
            rule,
            "set target.cache_node_type to a current-generation type (for example cache.r7g.large or cache.t4g.medium)",
        ),
    }
    if ctx.cloud.provider() == "aws" {
        match plan
            .target()
            .cache_subnet_group_name
            .clone()
            .or_else(|| g.cache_subnet_group_name.clone())
        {
            Some(name) => c.pass(
                "cache_subnet_group",
                format!("the target goes into cache subnet group `{name}`"),
            ),
            None => c.refuse(
                "cache_subnet_group",
                format!("no cache subnet group: `{source_id}` reports none and the plan names none"),
                "set target.cache_subnet_group_name to a cache subnet group of the VPC the clients use",
            ),
        }
    }
    check_cluster_mode(ctx, c, g).await;
    match crate::steps::restore_encrypted::Shape::planned(ctx, g) {
        Ok(shape) => c.pass(
            "target_shape",
            format!(
                "{} node group(s) of 1 primary and {} replica(s){}",
                shape.num_node_groups,
                shape.replicas_per_node_group,
                shape
                    .cache_parameter_group_name
                    .as_deref()
                    .map(|p| format!(", parameter group {p}"))
                    .unwrap_or_default()
            ),
        ),
        Err(rule) => c.refuse(
            "target_shape",
            format!("the target cannot be created as planned: {rule}"),
            "change target.num_node_groups / replicas_per_node_group / cache_parameter_group_name in the plan",
        ),
    }
    if crate::steps::plan_streams(&ctx.plan) {
        check_notifications(ctx, c, g).await;
    }
}

/// The KMS key the target and the snapshots are encrypted with: it exists, is enabled and symmetric.
/// Returns its ARN.
async fn check_kms_key(ctx: &StepContext, c: &mut Checks<'_>) -> Result<Option<String>> {
    let key_ref = kms_key_ref(ctx);
    let mut kms_arn = None;
    match &key_ref {
        // Without a key, the snapshots of an unencrypted source would be unencrypted copies of its data
        // (safety invariant 6): refuse before anything is taken.
        None => c.refuse(
            "kms_key",
            "no KMS key to encrypt the pre-migration and final snapshots with",
            "set target.kms_key_id to a customer managed key (id, ARN or alias/NAME); the service-managed key cannot encrypt a snapshot of an unencrypted group",
        ),
        Some(key) => match ctx.cloud.describe_key(key).await.map_err(|e| cloud_error("describing the KMS key", e))? {
            None => c.refuse(
                "kms_key",
                format!("KMS key `{key}` does not exist"),
                "check target.kms_key_id (key id, ARN or alias/NAME) and the region; in the sandbox: `ecmigrate sandbox kms create NAME`",
            ),
            Some(k) => match k.usable_for_elasticache() {
                Ok(()) => {
                    c.pass("kms_key", format!("`{key}` is enabled, symmetric, for encrypt/decrypt"));
                    note_key_rotation(ctx, &k.arn).await;
                    kms_arn = Some(k.arn.clone());
                }
                Err(why) => c.refuse(
                    "kms_key",
                    format!("KMS key `{key}` cannot be used: {why}"),
                    "enable the key or choose a symmetric ENCRYPT_DECRYPT key (sandbox: `ecmigrate sandbox kms enable NAME`)",
                ),
            },
        },
    }

    Ok(kms_arn)
}

/// A key whose material never rotates is allowed, and said: most security baselines ask for yearly
/// rotation, and turning it on later needs no change to the group.
async fn note_key_rotation(ctx: &StepContext, arn: &str) {
    match ctx.cloud.key_rotation_enabled(arn).await {
        Ok(Some(false)) => {
            let region = arn.split(':').nth(3).filter(|r| !r.is_empty());
            ctx.note(format!(
                "warning: KMS key {arn} has automatic rotation off; turn it on with `aws kms enable-key-rotation --key-id {arn}{}`",
                region.map(|r| format!(" --region {r}")).unwrap_or_default()
            ));
        }
        Ok(_) => {}
        Err(e) => ctx.note(format!(
            "warning: cannot read the rotation status of KMS key {arn}: {e}"
        )),
    }
}

/// Every secret of the target (its AUTH token, or each RBAC user's password): an existing one must meet
/// the AUTH rules (ElastiCache applies them to RBAC passwords too), a generated one needs a writable
/// store. Returns the store of the data plane's secret.
async fn check_target_secrets(ctx: &StepContext, c: &mut Checks<'_>) -> crate::secret::TokenStore {
    for secret in crate::steps::target_secrets(&ctx.plan) {
        check_secret(ctx, c, &secret).await;
    }
    token_store(&ctx.plan)
}

pub(crate) async fn check_secret(
    ctx: &StepContext,
    c: &mut Checks<'_>,
    secret: &crate::steps::TargetSecret<'_>,
) {
    let (store, field) = (&secret.store, &secret.field);
    let (name, what) = if field == "target.auth_token" {
        ("auth_token".to_string(), "token")
    } else {
        (format!("secret {field}"), "password")
    };
    if let Err((problem, fix)) = store.check_permissions() {
        c.refuse(
            &format!("{name} permissions"),
            problem,
            format!("{fix}, then run again; nothing was changed"),
        );
        return;
    }
    match crate::steps::read_token(ctx, store).await {
        Ok(Some(token)) => match rules::check_auth_token(token.expose()) {
            Ok(()) => c.pass(&name, format!("the {what} in {store} meets the AUTH rules")),
            Err(rule) => c.refuse(&name, format!("the {what} in {store} is invalid: {rule}"), "replace it, or remove the file and use `generate: true`"),
        },
        Ok(None) if secret.spec.generate => match store.check_writable() {
            Ok(()) => c.pass(&name, format!("a new {what} will be generated and kept in {store}")),
            Err(why) => c.refuse(&name, format!("cannot keep a generated {what} in {store}: {why}"), format!("point {field}.file at a writable path")),
        },
        Ok(None) => c.refuse(
            &name,
            format!("no {what} in {store}"),
            "put it there (16-128 printable ASCII characters; the only special characters AWS permits are ! & # $ ^ < > -), or use `generate: true` with a file",
        ),
        Err(why) => c.refuse(&name, why, format!("check the store named in {field}")),
    }
}

async fn check_cutover_alias(ctx: &StepContext, c: &mut Checks<'_>) -> Result<()> {
    let plan = &ctx.plan.plan;
    let source_id = &plan.source.replication_group_id;
    for step in &plan.steps {
        if let StepSpec::Cutover(cut) = step
            && cut.strategy == CutoverStrategy::SandboxAlias
            && let Some(alias) = &cut.alias
        {
            match ctx
                .cloud
                .resolve_alias(alias)
                .await
                .map_err(|e| cloud_error("resolving the alias", e))?
            {
                Some(g) if &g == source_id => c.pass(
                    "cutover_alias",
                    format!("alias `{alias}` points at `{source_id}`"),
                ),
                Some(g) => c.refuse(
                    "cutover_alias",
                    format!("alias `{alias}` points at `{g}`, not at the source `{source_id}`"),
                    "check the cutover step's alias",
                ),
                None => c.refuse(
                    "cutover_alias",
                    format!("alias `{alias}` does not exist"),
                    "check the cutover step's alias (`ecmigrate sandbox status` lists them)",
                ),
            }
        }
    }

    Ok(())
}

/// Unencrypted snapshots that already exist stay the operator's to handle: listed (invariant 6).
async fn list_unencrypted_snapshots(ctx: &StepContext, c: &mut Checks<'_>) -> Result<Vec<String>> {
    let source_id = &ctx.plan.plan.source.replication_group_id;
    let snaps = ctx
        .cloud
        .list_snapshots(Some(source_id))
        .await
        .map_err(|e| cloud_error("listing snapshots", e))?;
    let unencrypted: Vec<String> = snaps
        .iter()
        .filter(|s| !s.encrypted())
        .map(|s| s.name.clone())
        .collect();
    if unencrypted.is_empty() {
        c.pass(
            "unencrypted_snapshots",
            "no unencrypted snapshot of the source exists",
        );
    } else {
        ctx.note(format!(
            "unencrypted snapshots of `{source_id}` exist and will be left alone: {} (delete them once the migration is done)",
            unencrypted.join(", ")
        ));
    }
    Ok(unencrypted)
}

/// `stream_copy` needs keyspace notifications on the source. Where CONFIG is blocked (ElastiCache), a real
/// run writes a probe key with a 2 s expiry and waits for its notification; a rehearsal only reports that.
async fn check_notifications(
    ctx: &StepContext,
    c: &mut Checks<'_>,
    g: &crate::cloud::ReplicationGroup,
) {
    let endpoint = match crate::steps::source_data_endpoint(ctx, g) {
        Ok(e) => e,
        Err(e) => {
            return c.refuse(
                "keyspace_notifications",
                e.to_string(),
                "set source.data_endpoint",
            );
        }
    };
    match crate::data::capture::detect_style(&endpoint, !ctx.dry_run()).await {
        Ok(style) => c.pass("keyspace_notifications", format!("the source notifies every change ({style:?})")),
        Err(crate::data::DataError::Refused { command: Some(cmd), .. }) if ctx.dry_run() && cmd == "CONFIG" => c.pass(
            "keyspace_notifications",
            "CONFIG is blocked here: the real run writes a probe key (2 s expiry) to check notifications",
        ),
        Err(why) => c.refuse("keyspace_notifications", why, crate::steps::NOTIFICATIONS_FIX),
    }
}

/// The target keeps the source's cluster mode unless the plan asks for shards (`num_node_groups`). A
/// cluster-mode-enabled group has database 0 only, so the snapshot of a cluster-mode-disabled source with
/// keys in other databases cannot be restored into one; and restore cannot turn cluster mode off.
async fn check_cluster_mode(
    ctx: &StepContext,
    c: &mut Checks<'_>,
    g: &crate::cloud::ReplicationGroup,
) {
    let t = &ctx.plan.plan.target();
    if g.cluster_enabled {
        if t.num_cache_clusters.is_some() {
            c.refuse(
                "cluster_mode",
                format!("`{}` has cluster mode enabled; `num_cache_clusters` would turn it off, which a restore cannot do", g.id),
                "remove target.num_cache_clusters (use num_node_groups / replicas_per_node_group)",
            );
        } else {
            c.pass(
                "cluster_mode",
                format!("cluster mode enabled, {} shard(s), kept", g.num_node_groups),
            );
        }
        return;
    }
    let nodes = g.nodes.len().max(g.nodes_per_node_group as usize);
    if t.num_node_groups.is_none() {
        c.pass(
            "cluster_mode",
            format!("{nodes} node(s), cluster mode disabled, kept"),
        );
        return;
    }
    // The plan turns cluster mode on: every key must be in database 0.
    let keyspace = async {
        let endpoint = crate::steps::source_data_endpoint(ctx, g).map_err(|e| e.to_string())?;
        let mut conn = crate::data::connect::connect(&endpoint).await?;
        crate::data::verify::keyspace(&mut conn)
            .await
            .map_err(|e| e.to_string())
    };
    match keyspace.await {
        Ok(dbs) => {
            let others: Vec<String> =
                dbs.iter().filter(|(db, keys)| **db != 0 && **keys > 0).map(|(db, keys)| format!("db{db} ({keys} keys)")).collect();
            if others.is_empty() {
                c.pass("cluster_mode", "cluster mode will be enabled; every key is in database 0");
            } else {
                c.refuse(
                    "cluster_mode",
                    format!(
                        "target.num_node_groups turns cluster mode on, which has database 0 only, but `{}` has keys in {}",
                        g.id,
                        others.join(", ")
                    ),
                    "remove target.num_node_groups to keep cluster mode disabled, or move those keys to database 0 first",
                );
            }
        }
        Err(why) => c.refuse(
            "cluster_mode",
            format!("target.num_node_groups turns cluster mode on, and the source's databases cannot be checked: {why}"),
            "set source.data_endpoint so preflight can check that every key is in database 0, or remove target.num_node_groups",
        ),
    }
}
