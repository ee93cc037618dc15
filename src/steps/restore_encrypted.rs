//! `restore_encrypted`: create the target group from the backup snapshot with at-rest encryption (the
//! target's KMS key) and in-transit encryption with an AUTH token or RBAC users (`steps::rbac`), copying the source's shape unless the
//! plan overrides it. The target id is the deterministic name a resumed run looks for.

use std::collections::BTreeMap;

use serde_json::json;

use crate::cloud::{CreateEncryptedGroup, GroupAuth};
use crate::engine::{Poll, StepContext, StepOutcome, wait_until};
use crate::error::{Error, Result};
use crate::plan::{RestoreEncryptedStep, StepKind, rules};
use crate::secret::generate_token;
use crate::steps::access::{Deleted, delete_group_and_wait};
use crate::steps::backup::{encryption_key, kms_label};
use crate::steps::records::{BackupOutputs, RestoreIntent};
use crate::steps::{
    SecretKind, cloud_error, keep_token, obj, read_token, require_group, timeout, token_store,
};

pub async fn run(ctx: &StepContext, spec: &RestoreEncryptedStep) -> Result<StepOutcome> {
    let plan = &ctx.plan.plan;
    let target_id = plan.target().replication_group_id.clone();
    let snapshot_name = ctx
        .outputs_of::<BackupOutputs>(StepKind::Backup)
        .map(|o| o.snapshot_name)
        .ok_or_else(|| {
            Error::failed(
                "no finished backup to restore from",
                "the plan needs a `backup` step before `restore_encrypted`",
            )
        })?;

    let existing = ctx
        .cloud
        .describe_group(&target_id)
        .await
        .map_err(|e| cloud_error("describing the target", e))?;
    let store = token_store(&ctx.plan);
    match existing {
        Some(group) => adopt(ctx, &group)?,
        None => create(ctx, spec, &snapshot_name).await?,
    }
    let mut group = wait_for_target(ctx, spec).await?;
    if group.status == "create-failed" {
        // Ours (adopt checked it): delete it and create it again, once in this run.
        recreate(ctx, spec, &group, &snapshot_name).await?;
        group = wait_for_target(ctx, spec).await?;
        if group.status == "create-failed" {
            return Err(Error::failed(
                format!("creating `{target_id}` failed twice"),
                "see the cloud's events for the group (sandbox: the node logs under its folder); run again to delete it and try once more",
            ));
        }
    }
    let rbac = plan.target().rbac();
    let authenticated = match rbac {
        Some(r) => group.user_group_ids.contains(&r.user_group_id),
        None => group.auth_token_enabled,
    };
    if !group.at_rest_encryption_enabled || !group.transit_encryption_enabled || !authenticated {
        let auth = match rbac {
            Some(r) => format!("user group {} {authenticated}", r.user_group_id),
            None => format!("AUTH {authenticated}"),
        };
        return Err(Error::failed(
            format!(
                "target `{target_id}` came up without full encryption (at rest {}, in transit {}, {auth})",
                group.at_rest_encryption_enabled, group.transit_encryption_enabled,
            ),
            "do not cut over: delete the target and check the account's ElastiCache settings",
        ));
    }
    Ok(StepOutcome::done(&obj(vec![
        ("target_id", json!(group.id)),
        (
            "primary_endpoint",
            json!(group.primary_endpoint.as_ref().map(|e| e.to_string())),
        ),
        // A cluster-mode-enabled group reports its configuration endpoint where others report a
        // primary endpoint (`cloud::ReplicationGroup::primary_endpoint` holds it): say which it is.
        ("cluster_enabled", json!(group.cluster_enabled)),
        ("num_node_groups", json!(group.num_node_groups)),
        (
            "at_rest_encryption_enabled",
            json!(group.at_rest_encryption_enabled),
        ),
        (
            "transit_encryption_enabled",
            json!(group.transit_encryption_enabled),
        ),
        (
            "transit_encryption_mode",
            json!(group.transit_encryption_mode),
        ),
        ("auth_token_enabled", json!(group.auth_token_enabled)),
        ("user_group_ids", json!(group.user_group_ids)),
        ("kms_key_id", json!(group.kms_key_id)),
        // With RBAC: the store of the data plane user's password.
        ("auth_token_store", json!(store.to_string())),
    ])))
}

/// The request as the operator should see it: every field, the token redacted. The node counts are those
/// `cloud::aws` sends: shards and replicas per shard (with cluster mode and automatic failover on) for a
/// cluster-mode-enabled target, else the number of nodes.
fn create_params(r: &CreateEncryptedGroup) -> serde_json::Value {
    let shape = if r.cluster_enabled {
        json!({
            "ClusterMode": "enabled",
            "AutomaticFailoverEnabled": true,
            "NumNodeGroups": r.num_node_groups,
            "ReplicasPerNodeGroup": r.replicas_per_node_group,
        })
    } else {
        json!({ "NumCacheClusters": r.replicas_per_node_group + 1 })
    };
    let mut params = json!({
        "ReplicationGroupId": r.id,
        "SnapshotName": r.snapshot_name,
        "Engine": r.engine,
        "EngineVersion": r.engine_version,
        "CacheNodeType": r.cache_node_type,
        "AtRestEncryptionEnabled": true,
        "KmsKeyId": r.kms_key_id,
        "TransitEncryptionEnabled": true,
        "TransitEncryptionMode": r.transit_encryption_mode,
        "CacheSubnetGroupName": r.cache_subnet_group_name,
        "SecurityGroupIds": r.security_group_ids,
        "CacheParameterGroupName": r.cache_parameter_group_name,
        "Port": r.port,
        "Tags": r.tags,
    });
    if let (Some(params), Some(shape)) = (params.as_object_mut(), shape.as_object()) {
        params.extend(shape.clone());
        match &r.auth {
            GroupAuth::Token(_) => params.insert("AuthToken".into(), json!("<redacted>")),
            GroupAuth::UserGroup(id) => params.insert("UserGroupIds".into(), json!([id])),
        };
    }
    params
}

/// A target that exists already: ours if an earlier attempt recorded the intent to create it, or if its
/// tags name this plan and run (the state may have been written before the tags were: either is enough).
fn adopt(ctx: &StepContext, group: &crate::cloud::ReplicationGroup) -> Result<()> {
    let plan = &ctx.plan.plan;
    let target_id = &plan.target().replication_group_id;
    let tagged_ours = group.tags.get("ecmigrate:plan") == Some(&plan.name)
        && group.tags.get("ecmigrate:run") == Some(&ctx.run_id);
    if ctx.intent::<RestoreIntent>().target_id.is_none() {
        if !tagged_ours {
            return Err(Error::failed(
                format!("target `{target_id}` exists but this run did not create it"),
                "choose another target.replication_group_id",
            ));
        }
        let mut intent = ctx.intent::<RestoreIntent>();
        intent.target_id = Some(target_id.clone());
        ctx.record_intent(&intent)?;
    }
    ctx.note(format!(
        "target `{target_id}` was already requested (status {}); waiting for it",
        group.status
    ));
    Ok(())
}

/// Create the target from the snapshot: the token stored first (or the RBAC users and user group
/// created), the intent recorded, then the call.
async fn create(ctx: &StepContext, spec: &RestoreEncryptedStep, snapshot_name: &str) -> Result<()> {
    let plan = &ctx.plan.plan;
    let target_id = plan.target().replication_group_id.clone();
    let source = require_group(ctx, &plan.source.replication_group_id).await?;
    // The shape is checked before anything is written, the token included.
    let shape = Shape::of(ctx, &source)?;
    let store = token_store(&ctx.plan);
    let mut labels = kms_label(ctx);
    let auth = match plan.target().rbac() {
        Some(rbac) => {
            crate::steps::rbac::ensure_user_group(ctx, rbac, &source.engine, spec.timeout_seconds)
                .await?
        }
        None => {
            labels.push(("AuthToken", store.to_string()));
            GroupAuth::Token(target_token(ctx, &store).await?)
        }
    };
    let request = request(ctx, &source, &shape, snapshot_name, auth).await?;
    let mut intent = ctx.intent::<RestoreIntent>();
    intent.target_id = Some(target_id.clone());
    ctx.record_intent(&intent)?;
    ctx.call_labeled("CreateReplicationGroup", create_params(&request), &labels);
    ctx.write
        .create_group_from_snapshot(&request)
        .await
        .map_err(|e| cloud_error("CreateReplicationGroup", e))?;
    Ok(())
}

/// The target's token: the stored one, or (`generate: true`) a new one, kept before the group that
/// requires it exists; either way it must meet the AUTH rules.
async fn target_token(
    ctx: &StepContext,
    store: &crate::secret::TokenStore,
) -> Result<crate::secret::Secret> {
    let plan = &ctx.plan.plan;
    let token = match read_token(ctx, store)
        .await
        .map_err(|e| Error::failed(e, "check target.auth_token"))?
    {
        Some(t) => t,
        None if plan
            .target()
            .auth_token
            .as_ref()
            .is_some_and(|t| t.generate) =>
        {
            let t = generate_token();
            keep_token(ctx, store, &t, SecretKind::AuthToken).await?;
            t
        }
        None => {
            return Err(Error::failed(
                format!("no AUTH token in {store}"),
                "put the token there or use `generate: true`",
            ));
        }
    };
    rules::check_auth_token(token.expose()).map_err(|rule| {
        Error::failed(
            format!("the AUTH token in {store} is invalid: {rule}"),
            "replace the token",
        )
    })?;

    Ok(token)
}

/// The target's cluster mode, node counts and parameter group: the plan's, else the source's; checked
/// against the API reference's rules (`check_shape`, `parameter_group`).
pub(crate) struct Shape {
    pub(crate) cluster_enabled: bool,
    pub(crate) num_node_groups: u32,
    pub(crate) replicas_per_node_group: u32,
    pub(crate) cache_parameter_group_name: Option<String>,
}

impl Shape {
    fn of(ctx: &StepContext, source: &crate::cloud::ReplicationGroup) -> Result<Shape> {
        let shape = Shape::planned(ctx, source).map_err(|rule| {
            Error::failed(
                format!("the target cannot be created as planned: {rule}"),
                "change the target's settings in the plan and run again; nothing was created",
            )
        })?;
        if shape.cluster_enabled && shape.num_node_groups > DEFAULT_SHARD_QUOTA {
            ctx.note(format!(
                "{} shards: more than the default quota of {DEFAULT_SHARD_QUOTA} shards per cluster; the account needs a raised quota",
                shape.num_node_groups
            ));
        }
        Ok(shape)
    }

    /// The shape the plan asks for, or the rule of the API reference it breaks (preflight asks too, so
    /// a shape AWS would refuse is refused before the backup).
    pub(crate) fn planned(
        ctx: &StepContext,
        source: &crate::cloud::ReplicationGroup,
    ) -> std::result::Result<Shape, String> {
        let t = &ctx.plan.plan.target();
        let replicas = match (t.replicas_per_node_group, t.num_cache_clusters) {
            (Some(r), _) => r,
            (None, Some(n)) => n.saturating_sub(1),
            (None, None) => source.nodes_per_node_group.saturating_sub(1),
        };
        // Shards in the plan turn cluster mode on (preflight checked the source allows it).
        let cluster_enabled = source.cluster_enabled || t.num_node_groups.is_some();
        let num_node_groups = t.num_node_groups.unwrap_or(source.num_node_groups);
        check_shape(
            &source.engine_version,
            cluster_enabled,
            num_node_groups,
            replicas,
        )?;
        let cache_parameter_group_name = parameter_group(
            t.cache_parameter_group_name.as_deref(),
            source.cache_parameter_group_name.as_deref(),
            source.cluster_enabled,
            cluster_enabled,
        )?;
        Ok(Shape {
            cluster_enabled,
            num_node_groups,
            replicas_per_node_group: replicas,
            cache_parameter_group_name,
        })
    }
}

/// Shards per cluster without a quota increase ("from 1 to 90 shards", the API reference).
const DEFAULT_SHARD_QUOTA: u32 = 90;

/// The node counts CreateReplicationGroup accepts, as its API reference gives them: 0 to 5 replicas per
/// node group; cluster mode disabled has one node group; cluster mode enabled has at least one, and at
/// most 500 nodes in all (shards × (1 + replicas)) from engine 5.0.6 on, 250 before. The plan's own
/// fields were range-checked at load (`plan::validate`); this also covers counts taken from the source.
pub fn check_shape(
    engine_version: &str,
    cluster_enabled: bool,
    num_node_groups: u32,
    replicas_per_node_group: u32,
) -> std::result::Result<(), String> {
    if replicas_per_node_group > 5 {
        return Err(format!(
            "{replicas_per_node_group} replicas per node group; ReplicasPerNodeGroup must be 0 to 5"
        ));
    }
    if !cluster_enabled {
        return match num_node_groups {
            1 => Ok(()),
            n => Err(format!(
                "{n} node groups with cluster mode disabled; NumNodeGroups must be omitted or 1 then"
            )),
        };
    }
    if num_node_groups == 0 {
        return Err("0 node groups; a cluster-mode-enabled group has at least 1".into());
    }
    let below_5_0_6 = version_below(engine_version, [5, 0, 6]);
    let limit: u64 = if below_5_0_6 { 250 } else { 500 };
    let nodes = u64::from(num_node_groups) * (1 + u64::from(replicas_per_node_group));
    if nodes > limit {
        let engine = if below_5_0_6 {
            format!("engine {engine_version}, below 5.0.6")
        } else {
            "engine 5.0.6 or later".to_string()
        };
        return Err(format!(
            "{num_node_groups} shards of {} nodes make {nodes} nodes; a cluster holds at most {limit} ({engine})",
            1 + replicas_per_node_group
        ));
    }
    Ok(())
}

/// `version < floor`, comparing the numbers of `MAJOR.MINOR.PATCH` (missing parts are 0); `false` when
/// the version is unknown or not numeric.
fn version_below(version: &str, floor: [u32; 3]) -> bool {
    let parts: Option<Vec<u32>> = version.split('.').map(|p| p.parse().ok()).collect();
    match parts {
        Some(p) if !p.is_empty() => {
            let at = |i: usize| p.get(i).copied().unwrap_or(0);
            [at(0), at(1), at(2)] < floor
        }
        _ => false,
    }
}

/// The parameter group of the target. A cluster-mode-enabled group needs one with `cluster-enabled yes`
/// (the API reference names `default.redis3.2.cluster.on` for it): the plan's group is used as given,
/// unless it is a default group whose name says the other mode; the source's is kept when the mode is
/// kept; when the plan turns cluster mode on, the source's default group becomes its `.cluster.on`
/// twin, and a custom one is refused (ecmigrate cannot make one).
pub fn parameter_group(
    planned: Option<&str>,
    source_group: Option<&str>,
    source_cluster_enabled: bool,
    cluster_enabled: bool,
) -> std::result::Result<Option<String>, String> {
    const ON: &str = ".cluster.on";
    let is_default = |name: &str| name.starts_with("default.");
    if let Some(name) = planned {
        if is_default(name) && name.ends_with(ON) != cluster_enabled {
            let mode = if cluster_enabled {
                "enabled"
            } else {
                "disabled"
            };
            return Err(format!(
                "target.cache_parameter_group_name `{name}` is a default group for the other cluster mode; the target has cluster mode {mode}"
            ));
        }
        return Ok(Some(name.to_string()));
    }
    let Some(name) = source_group else {
        return Ok(None);
    };
    if source_cluster_enabled == cluster_enabled || !cluster_enabled {
        return Ok(Some(name.to_string()));
    }
    if is_default(name) && !name.ends_with(ON) {
        return Ok(Some(format!("{name}{ON}")));
    }
    Err(format!(
        "target.num_node_groups turns cluster mode on, but the source's parameter group `{name}` is for cluster mode disabled; set target.cache_parameter_group_name to a group with cluster-enabled yes"
    ))
}

/// The target's `ReplicationGroupDescription`.
pub(crate) fn description(source_id: &str, plan_name: &str) -> String {
    format!("encrypted copy of {source_id} (ecmigrate plan {plan_name})")
}

/// The CreateReplicationGroup request: the plan's target settings, else the source's.
async fn request(
    ctx: &StepContext,
    source: &crate::cloud::ReplicationGroup,
    shape: &Shape,
    snapshot_name: &str,
    auth: GroupAuth,
) -> Result<CreateEncryptedGroup> {
    let plan = &ctx.plan.plan;
    let target_id = plan.target().replication_group_id.clone();
    let t = &plan.target();
    let mut tags: BTreeMap<String, String> = source.tags.clone();
    if let Some(extra) = &t.tags {
        tags.extend(extra.clone());
    }
    tags.insert("ecmigrate:plan".into(), plan.name.clone());
    tags.insert("ecmigrate:run".into(), ctx.run_id.clone());
    tags.insert("ecmigrate:source".into(), source.id.clone());
    Ok(CreateEncryptedGroup {
        id: target_id.clone(),
        description: description(&source.id, &plan.name),
        snapshot_name: snapshot_name.to_string(),
        engine: source.engine.clone(),
        engine_version: source.engine_version.clone(),
        cache_node_type: t
            .cache_node_type
            .clone()
            .unwrap_or(source.cache_node_type.clone()),
        cluster_enabled: shape.cluster_enabled,
        num_node_groups: shape.num_node_groups,
        replicas_per_node_group: shape.replicas_per_node_group,
        kms_key_id: encryption_key(ctx).await?,
        transit_encryption_mode: t.transit_encryption_mode.as_str().to_string(),
        auth,
        cache_subnet_group_name: t
            .cache_subnet_group_name
            .clone()
            .or(source.cache_subnet_group_name.clone()),
        security_group_ids: t
            .security_group_ids
            .clone()
            .unwrap_or(source.security_group_ids.clone()),
        cache_parameter_group_name: shape.cache_parameter_group_name.clone(),
        port: t.port.or(source.port),
        preferred_maintenance_window: source.preferred_maintenance_window.clone(),
        snapshot_window: source.snapshot_window.clone(),
        tags,
    })
}

/// Wait until the target is available, or its creation failed (`create-failed`, returned as it is).
async fn wait_for_target(
    ctx: &StepContext,
    spec: &RestoreEncryptedStep,
) -> Result<crate::cloud::ReplicationGroup> {
    let target_id = &ctx.plan.plan.target().replication_group_id;
    wait_until(
        ctx,
        &format!("replication group {target_id}"),
        timeout(spec.timeout_seconds),
        || async {
            Ok(match ctx.cloud.describe_group(target_id).await? {
                Some(g) if g.is_available() || g.status == "create-failed" => Poll::Ready(g),
                Some(g) => Poll::Pending(g.status),
                None => Poll::Pending("not visible yet".into()),
            })
        },
    )
    .await
}

/// A target of this run whose creation failed: there is nothing for the operator to fix, so delete it and
/// create it again, saying so.
async fn recreate(
    ctx: &StepContext,
    spec: &RestoreEncryptedStep,
    group: &crate::cloud::ReplicationGroup,
    snapshot_name: &str,
) -> Result<()> {
    let target_id = &group.id;
    ctx.note(format!(
        "creating `{target_id}` failed (status create-failed); it is this run's: deleting it and creating it again"
    ));
    delete_group_and_wait(ctx, target_id, true, Deleted::Gone, None).await?;
    create(ctx, spec, snapshot_name).await
}

#[cfg(test)]
mod tests {
    use super::{check_shape, parameter_group, version_below};

    #[test]
    fn node_counts_follow_the_create_replication_group_rules() {
        assert!(check_shape("7.0.7", false, 1, 5).is_ok());
        assert!(check_shape("7.0.7", false, 1, 6).is_err());
        assert!(check_shape("7.0.7", false, 2, 1).is_err());
        assert!(check_shape("7.0.7", true, 0, 1).is_err());
        assert!(check_shape("7.0.7", true, 3, 0).is_ok());
        // 500 nodes at most from 5.0.6 on: 83 shards of 6 nodes, or 500 shards of 1.
        assert!(check_shape("7.0.7", true, 83, 5).is_ok());
        assert!(check_shape("7.0.7", true, 84, 5).is_err());
        assert!(check_shape("5.0.6", true, 500, 0).is_ok());
        assert!(check_shape("7.1", true, 501, 0).is_err());
        // 250 below 5.0.6.
        assert!(check_shape("5.0.5", true, 250, 0).is_ok());
        let e = check_shape("5.0.5", true, 126, 1).unwrap_err();
        assert!(e.contains("252 nodes") && e.contains("at most 250"), "{e}");
        assert!(check_shape("4.0.10", true, 300, 0).is_err());
        // An unknown version gets the larger limit rather than a refusal.
        assert!(check_shape("", true, 300, 0).is_ok());
    }

    #[test]
    fn versions_compare_by_number() {
        assert!(version_below("5.0.5", [5, 0, 6]));
        assert!(version_below("4.0.10", [5, 0, 6]));
        assert!(!version_below("5.0.6", [5, 0, 6]));
        assert!(!version_below("5.0.10", [5, 0, 6]));
        assert!(!version_below("6.2", [5, 0, 6]));
        assert!(!version_below("", [5, 0, 6]));
        assert!(!version_below("7.x", [5, 0, 6]));
    }

    #[test]
    fn a_cluster_target_gets_a_cluster_parameter_group() {
        let on = |planned, source, source_cluster| {
            parameter_group(planned, source, source_cluster, true)
        };
        // Kept when the mode is kept.
        assert_eq!(
            on(None, Some("default.redis7.cluster.on"), true),
            Ok(Some("default.redis7.cluster.on".into()))
        );
        assert_eq!(
            parameter_group(None, Some("custom"), false, false),
            Ok(Some("custom".into()))
        );
        assert_eq!(on(None, None, false), Ok(None));
        // Turned on: the default group's twin, a custom group refused.
        assert_eq!(
            on(None, Some("default.redis7"), false),
            Ok(Some("default.redis7.cluster.on".into()))
        );
        assert_eq!(
            on(None, Some("default.redis6.x"), false),
            Ok(Some("default.redis6.x.cluster.on".into()))
        );
        let e = on(None, Some("orders-params"), false).unwrap_err();
        assert!(
            e.contains("orders-params") && e.contains("cache_parameter_group_name"),
            "{e}"
        );
        // The plan's group as given, unless a default group names the other mode.
        assert_eq!(
            on(Some("my-cluster-params"), Some("default.redis7"), false),
            Ok(Some("my-cluster-params".into()))
        );
        assert!(on(Some("default.redis7"), None, false).is_err());
        assert!(parameter_group(Some("default.redis7.cluster.on"), None, false, false).is_err());
    }
}
