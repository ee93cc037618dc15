//! `restore_encrypted`: create the target group from the backup snapshot with at-rest encryption (the
//! target's KMS key) and in-transit encryption with an AUTH token, copying the source's shape unless the
//! plan overrides it. The target id is the deterministic name a resumed run looks for.

use std::collections::BTreeMap;

use serde_json::json;

use crate::cloud::CreateEncryptedGroup;
use crate::engine::{Poll, StepContext, StepOutcome, wait_until};
use crate::error::{Error, Result};
use crate::plan::{RestoreEncryptedStep, StepKind, rules};
use crate::secret::generate_token;
use crate::steps::access::{Deleted, delete_group_and_wait};
use crate::steps::backup::encryption_key;
use crate::steps::records::{BackupOutputs, RestoreIntent};
use crate::steps::{cloud_error, keep_token, obj, read_token, require_group, timeout, token_store};

pub async fn run(ctx: &StepContext, spec: &RestoreEncryptedStep) -> Result<StepOutcome> {
    let plan = &ctx.plan.plan;
    let target_id = plan.target.replication_group_id.clone();
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
        None => create(ctx, &snapshot_name, &store).await?,
    }
    let mut group = wait_for_target(ctx, spec).await?;
    if group.status == "create-failed" {
        // Ours (adopt checked it): delete it and create it again, once in this run.
        recreate(ctx, &group, &snapshot_name, &store).await?;
        group = wait_for_target(ctx, spec).await?;
        if group.status == "create-failed" {
            return Err(Error::failed(
                format!("creating `{target_id}` failed twice"),
                "see the cloud's events for the group (sandbox: the node logs under its folder); run again to delete it and try once more",
            ));
        }
    }
    if !group.at_rest_encryption_enabled
        || !group.transit_encryption_enabled
        || !group.auth_token_enabled
    {
        return Err(Error::failed(
            format!(
                "target `{target_id}` came up without full encryption (at rest {}, in transit {}, AUTH {})",
                group.at_rest_encryption_enabled,
                group.transit_encryption_enabled,
                group.auth_token_enabled
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
        ("kms_key_id", json!(group.kms_key_id)),
        ("auth_token_store", json!(store.to_string())),
    ])))
}

/// The request as the operator should see it: every field, the token redacted.
fn create_params(r: &CreateEncryptedGroup) -> serde_json::Value {
    json!({
        "ReplicationGroupId": r.id,
        "SnapshotName": r.snapshot_name,
        "Engine": r.engine,
        "EngineVersion": r.engine_version,
        "CacheNodeType": r.cache_node_type,
        "NumNodeGroups": r.num_node_groups,
        "ReplicasPerNodeGroup": r.replicas_per_node_group,
        "AtRestEncryptionEnabled": true,
        "KmsKeyId": r.kms_key_id,
        "TransitEncryptionEnabled": true,
        "TransitEncryptionMode": r.transit_encryption_mode,
        "AuthToken": "<redacted>",
        "CacheSubnetGroupName": r.cache_subnet_group_name,
        "SecurityGroupIds": r.security_group_ids,
        "CacheParameterGroupName": r.cache_parameter_group_name,
        "Port": r.port,
        "Tags": r.tags,
    })
}

/// A target that exists already: ours if an earlier attempt recorded the intent to create it, or if its
/// tags name this plan and run (the state may have been written before the tags were: either is enough).
fn adopt(ctx: &StepContext, group: &crate::cloud::ReplicationGroup) -> Result<()> {
    let plan = &ctx.plan.plan;
    let target_id = &plan.target.replication_group_id;
    let tagged_ours = group.tags.get("ecmigrate:plan") == Some(&plan.name)
        && group.tags.get("ecmigrate:run") == Some(&ctx.run_id);
    if ctx.intent::<RestoreIntent>().target_id.is_none() {
        if !tagged_ours {
            return Err(Error::failed(
                format!("target `{target_id}` exists but this run did not create it"),
                "choose another target.replication_group_id",
            ));
        }
        ctx.record_intent(&RestoreIntent {
            target_id: Some(target_id.clone()),
        })?;
    }
    ctx.note(format!(
        "target `{target_id}` was already requested (status {}); waiting for it",
        group.status
    ));
    Ok(())
}

/// Create the target from the snapshot: the token stored first, the intent recorded, then the call.
async fn create(
    ctx: &StepContext,
    snapshot_name: &str,
    store: &crate::secret::TokenStore,
) -> Result<()> {
    let plan = &ctx.plan.plan;
    let target_id = plan.target.replication_group_id.clone();
    let source = require_group(ctx, &plan.source.replication_group_id).await?;
    let token = target_token(ctx, store).await?;
    let request = request(ctx, &source, snapshot_name, token).await?;
    ctx.record_intent(&RestoreIntent {
        target_id: Some(target_id.clone()),
    })?;
    ctx.call("CreateReplicationGroup", create_params(&request));
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
        None if plan.target.auth_token.generate => {
            let t = generate_token();
            keep_token(ctx, store, &t).await?;
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

/// The CreateReplicationGroup request: the plan's target settings, else the source's.
async fn request(
    ctx: &StepContext,
    source: &crate::cloud::ReplicationGroup,
    snapshot_name: &str,
    token: crate::secret::Secret,
) -> Result<CreateEncryptedGroup> {
    let plan = &ctx.plan.plan;
    let target_id = plan.target.replication_group_id.clone();
    let t = &plan.target;
    let replicas = match (t.replicas_per_node_group, t.num_cache_clusters) {
        (Some(r), _) => r,
        (None, Some(n)) => n.saturating_sub(1),
        (None, None) => source.nodes_per_node_group.saturating_sub(1),
    };
    let mut tags: BTreeMap<String, String> = source.tags.clone();
    if let Some(extra) = &t.tags {
        tags.extend(extra.clone());
    }
    tags.insert("ecmigrate:plan".into(), plan.name.clone());
    tags.insert("ecmigrate:run".into(), ctx.run_id.clone());
    tags.insert("ecmigrate:source".into(), source.id.clone());
    Ok(CreateEncryptedGroup {
        id: target_id.clone(),
        description: format!(
            "encrypted copy of {} (ecmigrate plan {})",
            source.id, plan.name
        ),
        snapshot_name: snapshot_name.to_string(),
        engine: source.engine.clone(),
        engine_version: source.engine_version.clone(),
        cache_node_type: t
            .cache_node_type
            .clone()
            .unwrap_or(source.cache_node_type.clone()),
        // Shards in the plan turn cluster mode on (preflight checked the source allows it).
        cluster_enabled: source.cluster_enabled || t.num_node_groups.is_some(),
        num_node_groups: t.num_node_groups.unwrap_or(source.num_node_groups),
        replicas_per_node_group: replicas,
        kms_key_id: encryption_key(ctx).await?,
        transit_encryption_mode: t.transit_encryption_mode.as_str().to_string(),
        auth_token: token,
        cache_subnet_group_name: t
            .cache_subnet_group_name
            .clone()
            .or(source.cache_subnet_group_name.clone()),
        security_group_ids: t
            .security_group_ids
            .clone()
            .unwrap_or(source.security_group_ids.clone()),
        cache_parameter_group_name: t
            .cache_parameter_group_name
            .clone()
            .or(source.cache_parameter_group_name.clone()),
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
    let target_id = &ctx.plan.plan.target.replication_group_id;
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
    group: &crate::cloud::ReplicationGroup,
    snapshot_name: &str,
    store: &crate::secret::TokenStore,
) -> Result<()> {
    let target_id = &group.id;
    ctx.note(format!(
        "creating `{target_id}` failed (status create-failed); it is this run's: deleting it and creating it again"
    ));
    delete_group_and_wait(ctx, target_id, true, Deleted::Gone).await?;
    create(ctx, snapshot_name, store).await
}
