//! ElastiCache: replication groups and snapshots, read and written, and the mapping of the SDK's group
//! and snapshot shapes onto `cloud::ReplicationGroup` / `cloud::Snapshot`.

use std::collections::BTreeMap;

use aws_sdk_elasticache::Client;
use aws_sdk_elasticache::types as ec;

use super::{map_err, none_if_not_found};
use crate::cloud::{
    AuthTokenUpdate, CloudError, CloudResult, CreateEncryptedGroup, Endpoint, GroupAuth, Node,
    NodeRole, ReplicationGroup, Snapshot,
};
use crate::secret::Secret;

pub(super) async fn describe_group(ec: &Client, id: &str) -> CloudResult<Option<ReplicationGroup>> {
    let out = none_if_not_found(
        ec.describe_replication_groups()
            .replication_group_id(id)
            .send()
            .await
            .map_err(|e| map_err(e, "replication group", id)),
    )?;
    match out.as_ref().and_then(|o| o.replication_groups().first()) {
        Some(g) => Ok(Some(to_group(ec, g).await?)),
        None => Ok(None),
    }
}

pub(super) async fn list_groups(ec: &Client) -> CloudResult<Vec<ReplicationGroup>> {
    let mut pages = ec.describe_replication_groups().into_paginator().send();
    let mut groups = Vec::new();
    while let Some(page) = pages.next().await {
        let page = page.map_err(|e| map_err(e, "replication groups", "*"))?;
        for g in page.replication_groups() {
            groups.push(to_group(ec, g).await?);
        }
    }
    Ok(groups)
}

pub(super) async fn describe_snapshot(ec: &Client, name: &str) -> CloudResult<Option<Snapshot>> {
    let out = none_if_not_found(
        ec.describe_snapshots()
            .snapshot_name(name)
            .send()
            .await
            .map_err(|e| map_err(e, "snapshot", name)),
    )?;
    Ok(out
        .as_ref()
        .and_then(|o| {
            o.snapshots()
                .iter()
                .find(|s| s.snapshot_name() == Some(name))
        })
        .map(to_snapshot))
}

pub(super) async fn list_snapshots(ec: &Client, group: Option<&str>) -> CloudResult<Vec<Snapshot>> {
    let mut request = ec.describe_snapshots();
    if let Some(g) = group {
        request = request.replication_group_id(g);
    }
    let mut pages = request.into_paginator().send();
    let mut snapshots = Vec::new();
    while let Some(page) = pages.next().await {
        let page = match page {
            Ok(p) => p,
            Err(e) => match map_err(e, "snapshots of", group.unwrap_or("*")) {
                CloudError::NotFound { .. } => break,
                other => return Err(other),
            },
        };
        snapshots.extend(
            page.snapshots()
                .iter()
                .map(to_snapshot)
                .filter(|s| group.is_none_or(|g| s.source_group == g)),
        );
    }
    Ok(snapshots)
}

pub(super) async fn create_snapshot(
    ec: &Client,
    group: &str,
    name: &str,
    kms_key_id: Option<&str>,
) -> CloudResult<()> {
    let tags = BTreeMap::from([
        ("ecmigrate:source".to_string(), group.to_string()),
        ("ecmigrate:managed".to_string(), "true".to_string()),
    ]);
    ec.create_snapshot()
        .replication_group_id(group)
        .snapshot_name(name)
        .set_kms_key_id(kms_key_id.map(str::to_string))
        .set_tags(Some(ec_tags(&tags)))
        .send()
        .await
        .map_err(|e| map_err(e, "snapshot", name))?;
    Ok(())
}

pub(super) async fn create_group_from_snapshot(
    ec: &Client,
    r: &CreateEncryptedGroup,
) -> CloudResult<()> {
    let mut request = ec
        .create_replication_group()
        .replication_group_id(&r.id)
        .replication_group_description(&r.description)
        .snapshot_name(&r.snapshot_name)
        .engine(&r.engine)
        .engine_version(create_engine_version(&r.engine_version))
        .cache_node_type(&r.cache_node_type)
        .at_rest_encryption_enabled(true)
        .set_kms_key_id(r.kms_key_id.clone())
        .transit_encryption_enabled(true)
        .transit_encryption_mode(ec::TransitEncryptionMode::from(
            r.transit_encryption_mode.as_str(),
        ))
        .set_cache_subnet_group_name(r.cache_subnet_group_name.clone())
        .set_cache_parameter_group_name(r.cache_parameter_group_name.clone())
        .set_port(r.port.map(i32::from))
        .set_preferred_maintenance_window(r.preferred_maintenance_window.clone())
        .set_snapshot_window(r.snapshot_window.clone())
        .set_tags(Some(ec_tags(&r.tags)));
    if !r.security_group_ids.is_empty() {
        request = request.set_security_group_ids(Some(r.security_group_ids.clone()));
    }
    // One or the other: AWS refuses a group with both, and a user group replaces the token.
    request = match &r.auth {
        GroupAuth::Token(token) => request.auth_token(token.expose()),
        GroupAuth::UserGroup(id) => request.user_group_ids(id),
    };
    request = if r.cluster_enabled {
        // The API reference: "AutomaticFailoverEnabled must be enabled for ... (cluster mode enabled)
        // replication groups" (default false; the service answers InvalidParameterValue "cannot be created
        // with auto failover turned off", with 0 replicas too). ClusterMode says what the shard counts
        // mean instead of leaving it to the parameter group alone.
        request
            .cluster_mode(ec::ClusterMode::Enabled)
            .automatic_failover_enabled(true)
            .num_node_groups(r.num_node_groups as i32)
            .replicas_per_node_group(r.replicas_per_node_group as i32)
    } else {
        // Cluster mode disabled: the documented parameter is NumCacheClusters (primary + replicas).
        request.num_cache_clusters(r.replicas_per_node_group as i32 + 1)
    };
    match request.send().await {
        Ok(_) => Ok(()),
        Err(e) => {
            let token = match &r.auth {
                GroupAuth::Token(t) => vec![t.expose()],
                GroupAuth::UserGroup(_) => vec![],
            };
            Err(redact(map_err(e, "replication group", &r.id), &token))
        }
    }
}

pub(super) async fn delete_group(ec: &Client, id: &str) -> CloudResult<()> {
    // Deliberately no FinalSnapshotIdentifier: the final snapshot was taken encrypted beforehand.
    ec.delete_replication_group()
        .replication_group_id(id)
        .retain_primary_cluster(false)
        .send()
        .await
        .map_err(|e| map_err(e, "replication group", id))?;
    Ok(())
}

/// ModifyReplicationGroup: in-transit encryption on, in `mode`, applied now (not at the next maintenance
/// window). AWS takes `preferred` only together with `TransitEncryptionEnabled=true` on a group without
/// TLS, and `required` only after `preferred`.
pub(super) async fn modify_transit(ec: &Client, id: &str, mode: &str) -> CloudResult<()> {
    ec.modify_replication_group()
        .replication_group_id(id)
        .transit_encryption_enabled(true)
        .transit_encryption_mode(ec::TransitEncryptionMode::from(mode))
        .apply_immediately(true)
        .send()
        .await
        .map_err(|e| map_err(e, "replication group", id))?;
    Ok(())
}

pub(super) async fn modify_auth_token(
    ec: &Client,
    id: &str,
    token: &Secret,
    strategy: AuthTokenUpdate,
) -> CloudResult<()> {
    ec.modify_replication_group()
        .replication_group_id(id)
        .auth_token(token.expose())
        .auth_token_update_strategy(ec::AuthTokenUpdateStrategyType::from(strategy.as_str()))
        .apply_immediately(true)
        .send()
        .await
        .map_err(|e| map_err(e, "replication group", id))?;
    Ok(())
}

/// The engine version CreateReplicationGroup accepts: from Redis 6 on, ElastiCache takes `MAJOR.MINOR`
/// (it reports the patch level, e.g. `7.0.7`, but creates by `7.0`); before that, the full version.
pub fn create_engine_version(described: &str) -> String {
    let parts: Vec<&str> = described.split('.').collect();
    match parts.first().and_then(|m| m.parse::<u32>().ok()) {
        Some(major) if major >= 6 && parts.len() > 2 => format!("{}.{}", parts[0], parts[1]),
        _ => described.to_string(),
    }
}

/// The details a replication group does not carry itself: engine version, subnet group, security
/// groups, parameter group, port and windows, from one of its member cache clusters.
async fn member_cluster(ec: &Client, id: &str) -> CloudResult<Option<ec::CacheCluster>> {
    match ec
        .describe_cache_clusters()
        .cache_cluster_id(id)
        .show_cache_node_info(true)
        .send()
        .await
    {
        Ok(out) => Ok(out.cache_clusters().first().cloned()),
        Err(e) => match map_err(e, "cache cluster", id) {
            CloudError::NotFound { .. } => Ok(None),
            other => Err(other),
        },
    }
}

/// Tags of a resource; best-effort (a missing permission must not stop a describe).
async fn tags(ec: &Client, arn: Option<&str>) -> BTreeMap<String, String> {
    let Some(arn) = arn else {
        return BTreeMap::new();
    };
    match ec.list_tags_for_resource().resource_name(arn).send().await {
        Ok(out) => out
            .tag_list()
            .iter()
            .filter_map(|t| Some((t.key()?.to_string(), t.value().unwrap_or("").to_string())))
            .collect(),
        Err(_) => BTreeMap::new(),
    }
}

/// A group as DescribeReplicationGroups reports it, completed by one member cluster and its tags (the
/// two further calls, in that order; a failing member describe ends it before the tags are asked for).
async fn to_group(ec: &Client, g: &ec::ReplicationGroup) -> CloudResult<ReplicationGroup> {
    let member = match g.member_clusters().first() {
        Some(m) => member_cluster(ec, m).await?,
        None => None,
    };
    let tags = tags(ec, g.arn()).await;
    Ok(group_from(g, member.as_ref(), tags))
}

/// The domain group from the SDK's group, its first member cluster (when there is one) and its tags:
/// settings the group does not report itself come from the member. A cluster-mode-enabled group's
/// `primary_endpoint` is its configuration endpoint (`group_endpoints`).
pub(super) fn group_from(
    g: &ec::ReplicationGroup,
    member: Option<&ec::CacheCluster>,
    tags: BTreeMap<String, String>,
) -> ReplicationGroup {
    let cluster_enabled = g.cluster_enabled().unwrap_or(false);
    let transit = g.transit_encryption_enabled().unwrap_or(false);
    let (num_node_groups, nodes_per_node_group) = node_layout(g);
    let (primary_endpoint, reader_endpoint) = group_endpoints(g, cluster_enabled);
    let port = member_port(member, primary_endpoint.as_ref());
    let engine = g.engine().or_else(|| member.and_then(|c| c.engine()));
    let cache_node_type = g
        .cache_node_type()
        .or_else(|| member.and_then(|c| c.cache_node_type()));
    let snapshot_window = g
        .snapshot_window()
        .or_else(|| member.and_then(|c| c.snapshot_window()));
    ReplicationGroup {
        id: g.replication_group_id().unwrap_or_default().to_string(),
        description: g.description().map(str::to_string),
        status: g.status().unwrap_or("unknown").to_string(),
        engine: engine.unwrap_or("redis").to_string(),
        engine_version: member
            .and_then(|c| c.engine_version())
            .unwrap_or_default()
            .to_string(),
        at_rest_encryption_enabled: g.at_rest_encryption_enabled().unwrap_or(false),
        transit_encryption_enabled: transit,
        transit_encryption_mode: g.transit_encryption_mode().map(|m| m.as_str().to_string()),
        auth_token_enabled: g.auth_token_enabled().unwrap_or(false),
        user_group_ids: g.user_group_ids().to_vec(),
        kms_key_id: g.kms_key_id().map(str::to_string),
        cache_node_type: cache_node_type.unwrap_or_default().to_string(),
        cluster_enabled,
        num_node_groups,
        nodes_per_node_group,
        automatic_failover_enabled: g.automatic_failover().map(|f| {
            matches!(
                f,
                ec::AutomaticFailoverStatus::Enabled | ec::AutomaticFailoverStatus::Enabling
            )
        }),
        multi_az_enabled: g.multi_az().map(|m| *m == ec::MultiAzStatus::Enabled),
        primary_endpoint,
        reader_endpoint,
        nodes: group_nodes(g, transit),
        cache_subnet_group_name: member
            .and_then(|c| c.cache_subnet_group_name())
            .map(str::to_string),
        security_group_ids: member.map(security_group_ids).unwrap_or_default(),
        cache_parameter_group_name: member
            .and_then(|c| c.cache_parameter_group())
            .and_then(|p| p.cache_parameter_group_name())
            .map(str::to_string),
        port,
        preferred_maintenance_window: member
            .and_then(|c| c.preferred_maintenance_window())
            .map(str::to_string),
        snapshot_window: snapshot_window.map(str::to_string),
        tags,
    }
}

/// `(num_node_groups, nodes_per_node_group)`: at least one node group; nodes per group from the largest
/// group, or, when the groups list no members, from the member clusters spread over the groups.
fn node_layout(g: &ec::ReplicationGroup) -> (u32, u32) {
    let node_groups = g.node_groups();
    let num_node_groups = (node_groups.len() as u32).max(1);
    let nodes_per_node_group = node_groups
        .iter()
        .map(|ng| ng.node_group_members().len() as u32)
        .max()
        .filter(|n| *n > 0)
        .unwrap_or_else(|| (g.member_clusters().len() as u32 / num_node_groups).max(1));
    (num_node_groups, nodes_per_node_group)
}

/// Every node group member with a read endpoint, primary or replica as it currently serves.
fn group_nodes(g: &ec::ReplicationGroup, tls: bool) -> Vec<Node> {
    let mut nodes = Vec::new();
    for m in g
        .node_groups()
        .iter()
        .flat_map(|ng| ng.node_group_members())
    {
        let Some(ep) = m.read_endpoint().and_then(endpoint) else {
            continue;
        };
        let role = if m.current_role() == Some("primary") {
            NodeRole::Primary
        } else {
            NodeRole::Replica
        };
        nodes.push(Node {
            id: m.cache_cluster_id().unwrap_or_default().to_string(),
            role,
            endpoint: ep,
            tls,
        });
    }
    nodes
}

/// `(primary, reader)`: the configuration endpoint in cluster mode (no reader endpoint), else the first
/// node group's primary and reader endpoints.
fn group_endpoints(
    g: &ec::ReplicationGroup,
    cluster_enabled: bool,
) -> (Option<Endpoint>, Option<Endpoint>) {
    if cluster_enabled {
        return (g.configuration_endpoint().and_then(endpoint), None);
    }
    let first = g.node_groups().first();
    (
        first
            .and_then(|ng| ng.primary_endpoint())
            .and_then(endpoint),
        first.and_then(|ng| ng.reader_endpoint()).and_then(endpoint),
    )
}

/// The port of the member's first cache node, else the primary endpoint's.
fn member_port(member: Option<&ec::CacheCluster>, primary: Option<&Endpoint>) -> Option<u16> {
    member
        .and_then(|c| c.cache_nodes().first())
        .and_then(|n| n.endpoint())
        .and_then(|e| e.port())
        .or_else(|| primary.map(|e| e.port as i32))
        .and_then(|p| u16::try_from(p).ok())
}

fn security_group_ids(c: &ec::CacheCluster) -> Vec<String> {
    c.security_groups()
        .iter()
        .filter_map(|s| s.security_group_id().map(str::to_string))
        .collect()
}

fn endpoint(e: &ec::Endpoint) -> Option<Endpoint> {
    Some(Endpoint {
        host: e.address()?.to_string(),
        port: u16::try_from(e.port()?).ok()?,
    })
}

fn to_snapshot(s: &ec::Snapshot) -> Snapshot {
    Snapshot {
        name: s.snapshot_name().unwrap_or_default().to_string(),
        source_group: s
            .replication_group_id()
            .or(s.cache_cluster_id())
            .unwrap_or_default()
            .to_string(),
        status: s.snapshot_status().unwrap_or("unknown").to_string(),
        kms_key_id: s.kms_key_id().filter(|k| !k.is_empty()).map(str::to_string),
        source: s.snapshot_source().unwrap_or("manual").to_string(),
    }
}

pub(super) fn ec_tags(tags: &BTreeMap<String, String>) -> Vec<ec::Tag> {
    tags.iter()
        .map(|(k, v)| ec::Tag::builder().key(k).value(v).build())
        .collect()
}

/// Belt and braces: no error message may carry a secret sent (an AUTH token, a user's passwords),
/// whatever the service echoes back.
pub(super) fn redact(e: CloudError, secrets: &[&str]) -> CloudError {
    let clean = |s: String| {
        secrets
            .iter()
            .filter(|t| !t.is_empty())
            .fold(s, |s, t| s.replace(t, "<redacted>"))
    };
    match e {
        CloudError::InvalidRequest { message } => CloudError::InvalidRequest {
            message: clean(message),
        },
        CloudError::Transient { message } => CloudError::Transient {
            message: clean(message),
        },
        CloudError::Other { message } => CloudError::Other {
            message: clean(message),
        },
        other => other,
    }
}
