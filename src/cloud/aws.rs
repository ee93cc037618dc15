//! The real cloud: Amazon ElastiCache and KMS through the official AWS SDK.
//!
//! Credentials come from the standard chain; the region and profile from the plan (`aws.region`,
//! `aws.profile`), overridden by `--region` / `--profile`. `AWS_ENDPOINT_URL` (and the service-specific
//! `AWS_ENDPOINT_URL_ELASTICACHE` / `AWS_ENDPOINT_URL_KMS`) and `AWS_MAX_ATTEMPTS` are honoured by
//! aws-config itself, which is how the tests point the binary at a local moto server.
//!
//! No SDK type leaves this module: everything is mapped onto the domain types of `cloud`.

use std::collections::BTreeMap;
use std::path::PathBuf;

use async_trait::async_trait;
use aws_config::BehaviorVersion;
use aws_sdk_elasticache::config::http::HttpResponse;
use aws_sdk_elasticache::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_elasticache::types as ec;

use crate::secret::Secret;

use super::{
    CloudError, CloudRead, CloudResult, CloudWrite, CreateEncryptedGroup, DnsRecord, Endpoint,
    KmsKey, Node, NodeRole, ReplicationGroup, Snapshot,
};

/// ElastiCache, KMS, Secrets Manager and Route53 clients for one account and region.
pub struct Aws {
    ec: aws_sdk_elasticache::Client,
    kms: aws_sdk_kms::Client,
    secrets: aws_sdk_secretsmanager::Client,
    dns: aws_sdk_route53::Client,
}

impl Aws {
    /// Build the clients from the standard credential chain. `region` / `profile` override what the
    /// environment and the shared config files say.
    pub async fn connect(region: Option<String>, profile: Option<String>) -> CloudResult<Aws> {
        let mut loader = aws_config::defaults(BehaviorVersion::latest());
        if let Some(profile) = profile {
            loader = loader.profile_name(profile);
        }
        if let Some(region) = region {
            loader = loader.region(aws_config::Region::new(region));
        }
        let config = loader.load().await;
        if config.region().is_none() {
            return Err(CloudError::invalid(
                "no AWS region: set `aws.region` in the plan, pass --region, or set AWS_REGION",
            ));
        }
        Ok(Aws {
            ec: aws_sdk_elasticache::Client::new(&config),
            kms: aws_sdk_kms::Client::new(&config),
            secrets: aws_sdk_secretsmanager::Client::new(&config),
            dns: aws_sdk_route53::Client::new(&config),
        })
    }

    /// The details a replication group does not carry itself: engine version, subnet group, security
    /// groups, parameter group, port and windows, from one of its member cache clusters.
    async fn member_cluster(&self, id: &str) -> CloudResult<Option<ec::CacheCluster>> {
        match self
            .ec
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
    async fn tags(&self, arn: Option<&str>) -> BTreeMap<String, String> {
        let Some(arn) = arn else {
            return BTreeMap::new();
        };
        match self
            .ec
            .list_tags_for_resource()
            .resource_name(arn)
            .send()
            .await
        {
            Ok(out) => out
                .tag_list()
                .iter()
                .filter_map(|t| Some((t.key()?.to_string(), t.value().unwrap_or("").to_string())))
                .collect(),
            Err(_) => BTreeMap::new(),
        }
    }

    async fn to_group(&self, g: &ec::ReplicationGroup) -> CloudResult<ReplicationGroup> {
        let id = g.replication_group_id().unwrap_or_default().to_string();
        let cluster_enabled = g.cluster_enabled().unwrap_or(false);
        let transit = g.transit_encryption_enabled().unwrap_or(false);
        let node_groups = g.node_groups();
        let members = g.member_clusters();
        let num_node_groups = (node_groups.len() as u32).max(1);
        let nodes_per_node_group = node_groups
            .iter()
            .map(|ng| ng.node_group_members().len() as u32)
            .max()
            .filter(|n| *n > 0)
            .unwrap_or_else(|| (members.len() as u32 / num_node_groups).max(1));

        let mut nodes = Vec::new();
        for ng in node_groups {
            for m in ng.node_group_members() {
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
                    tls: transit,
                });
            }
        }
        let (primary_endpoint, reader_endpoint) = if cluster_enabled {
            (g.configuration_endpoint().and_then(endpoint), None)
        } else {
            let first = node_groups.first();
            (
                first
                    .and_then(|ng| ng.primary_endpoint())
                    .and_then(endpoint),
                first.and_then(|ng| ng.reader_endpoint()).and_then(endpoint),
            )
        };

        let member = match members.first() {
            Some(m) => self.member_cluster(m).await?,
            None => None,
        };
        let member = member.as_ref();
        let engine_version = member
            .and_then(|c| c.engine_version())
            .unwrap_or_default()
            .to_string();
        let engine = g
            .engine()
            .or_else(|| member.and_then(|c| c.engine()))
            .unwrap_or("redis")
            .to_string();
        let port = member
            .and_then(|c| c.cache_nodes().first())
            .and_then(|n| n.endpoint())
            .and_then(|e| e.port())
            .or_else(|| primary_endpoint.as_ref().map(|e| e.port as i32))
            .and_then(|p| u16::try_from(p).ok());

        Ok(ReplicationGroup {
            status: g.status().unwrap_or("unknown").to_string(),
            engine,
            engine_version,
            at_rest_encryption_enabled: g.at_rest_encryption_enabled().unwrap_or(false),
            transit_encryption_enabled: transit,
            transit_encryption_mode: g.transit_encryption_mode().map(|m| m.as_str().to_string()),
            auth_token_enabled: g.auth_token_enabled().unwrap_or(false),
            kms_key_id: g.kms_key_id().map(str::to_string),
            cache_node_type: g
                .cache_node_type()
                .or_else(|| member.and_then(|c| c.cache_node_type()))
                .unwrap_or_default()
                .to_string(),
            cluster_enabled,
            num_node_groups,
            nodes_per_node_group,
            primary_endpoint,
            reader_endpoint,
            nodes,
            cache_subnet_group_name: member
                .and_then(|c| c.cache_subnet_group_name())
                .map(str::to_string),
            security_group_ids: member
                .map(|c| {
                    c.security_groups()
                        .iter()
                        .filter_map(|s| s.security_group_id().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default(),
            cache_parameter_group_name: member
                .and_then(|c| c.cache_parameter_group())
                .and_then(|p| p.cache_parameter_group_name())
                .map(str::to_string),
            port,
            preferred_maintenance_window: member
                .and_then(|c| c.preferred_maintenance_window())
                .map(str::to_string),
            snapshot_window: g
                .snapshot_window()
                .or_else(|| member.and_then(|c| c.snapshot_window()))
                .map(str::to_string),
            tags: self.tags(g.arn()).await,
            id,
        })
    }
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

/// The engine version CreateReplicationGroup accepts: from Redis 6 on, ElastiCache takes `MAJOR.MINOR`
/// (it reports the patch level, e.g. `7.0.7`, but creates by `7.0`); before that, the full version.
pub fn create_engine_version(described: &str) -> String {
    let parts: Vec<&str> = described.split('.').collect();
    match parts.first().and_then(|m| m.parse::<u32>().ok()) {
        Some(major) if major >= 6 && parts.len() > 2 => format!("{}.{}", parts[0], parts[1]),
        _ => described.to_string(),
    }
}

fn ec_tags(tags: &BTreeMap<String, String>) -> Vec<ec::Tag> {
    tags.iter()
        .map(|(k, v)| ec::Tag::builder().key(k).value(v).build())
        .collect()
}

/// Map an SDK error onto `CloudError`: not found, already exists, transient (throttling, 5xx, timeouts,
/// connection failures) or other. The message carries the service's code and message, never the request.
fn map_err<E>(e: SdkError<E, HttpResponse>, what: &'static str, id: &str) -> CloudError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let code = e.code().unwrap_or("").to_string();
    let message = e.message().unwrap_or("").to_string();
    let status = match &e {
        SdkError::ServiceError(s) => Some(s.raw().status().as_u16()),
        SdkError::ResponseError(r) => Some(r.raw().status().as_u16()),
        _ => None,
    };
    let transient = matches!(e, SdkError::TimeoutError(_) | SdkError::DispatchFailure(_))
        || status.is_some_and(|s| s >= 500 || s == 429)
        || code.contains("Throttl")
        || code == "RequestLimitExceeded"
        || code == "TooManyRequestsException";
    let detail = if code.is_empty() {
        format!("{what} `{id}`: {}", DisplayErrorContext(&e))
    } else if message.is_empty() {
        format!("{what} `{id}`: {code}")
    } else {
        format!("{what} `{id}`: {code}: {message}")
    };
    if code.contains("NotFound") {
        CloudError::NotFound {
            what,
            id: id.to_string(),
        }
    } else if code.contains("AlreadyExists") {
        CloudError::AlreadyExists {
            what,
            id: id.to_string(),
        }
    } else if transient {
        CloudError::Transient { message: detail }
    } else if code.starts_with("InvalidParameter") || code.contains("Invalid") {
        CloudError::InvalidRequest { message: detail }
    } else {
        CloudError::Other { message: detail }
    }
}

/// `Ok(None)` for a not-found error, the error otherwise.
fn none_if_not_found<T>(r: Result<T, CloudError>) -> CloudResult<Option<T>> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(CloudError::NotFound { .. }) => Ok(None),
        Err(e) => Err(e),
    }
}

#[async_trait]
impl CloudRead for Aws {
    fn provider(&self) -> &'static str {
        "aws"
    }

    async fn describe_group(&self, id: &str) -> CloudResult<Option<ReplicationGroup>> {
        let out = none_if_not_found(
            self.ec
                .describe_replication_groups()
                .replication_group_id(id)
                .send()
                .await
                .map_err(|e| map_err(e, "replication group", id)),
        )?;
        match out.as_ref().and_then(|o| o.replication_groups().first()) {
            Some(g) => Ok(Some(self.to_group(g).await?)),
            None => Ok(None),
        }
    }

    async fn list_groups(&self) -> CloudResult<Vec<ReplicationGroup>> {
        let mut pages = self
            .ec
            .describe_replication_groups()
            .into_paginator()
            .send();
        let mut groups = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| map_err(e, "replication groups", "*"))?;
            for g in page.replication_groups() {
                groups.push(self.to_group(g).await?);
            }
        }
        Ok(groups)
    }

    async fn describe_snapshot(&self, name: &str) -> CloudResult<Option<Snapshot>> {
        let out = none_if_not_found(
            self.ec
                .describe_snapshots()
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

    async fn list_snapshots(&self, group: Option<&str>) -> CloudResult<Vec<Snapshot>> {
        let mut request = self.ec.describe_snapshots();
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

    async fn list_keys(&self) -> CloudResult<Vec<KmsKey>> {
        let mut names = Vec::new();
        let mut pages = self.kms.list_aliases().into_paginator().send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| map_err(e, "KMS aliases", "*"))?;
            names.extend(
                page.aliases()
                    .iter()
                    .filter(|a| a.target_key_id().is_some())
                    .filter_map(|a| a.alias_name().map(str::to_string))
                    .filter(|n| !n.starts_with("alias/aws/")),
            );
        }
        let mut keys = Vec::new();
        for name in names {
            if let Some(k) = self.describe_key(&name).await? {
                keys.push(k);
            }
        }
        Ok(keys)
    }

    async fn describe_key(&self, key_id: &str) -> CloudResult<Option<KmsKey>> {
        let out = match self.kms.describe_key().key_id(key_id).send().await {
            Ok(out) => out,
            Err(e) => {
                return none_if_not_found(Err(map_err(e, "KMS key", key_id)));
            }
        };
        let Some(meta) = out.key_metadata() else {
            return Ok(None);
        };
        let id = meta.key_id().to_string();
        // Aliases are informative only: best-effort.
        let aliases = match self.kms.list_aliases().key_id(&id).send().await {
            Ok(a) => a
                .aliases()
                .iter()
                .filter_map(|a| a.alias_name().map(str::to_string))
                .collect(),
            Err(_) => Vec::new(),
        };
        Ok(Some(KmsKey {
            arn: meta.arn().map(str::to_string).unwrap_or_else(|| id.clone()),
            key_id: id,
            key_state: meta
                .key_state()
                .map(|s| s.as_str().to_string())
                .unwrap_or_else(|| "Unknown".into()),
            key_spec: meta
                .key_spec()
                .map(|s| s.as_str().to_string())
                .unwrap_or_else(|| "SYMMETRIC_DEFAULT".into()),
            key_usage: meta
                .key_usage()
                .map(|s| s.as_str().to_string())
                .unwrap_or_else(|| "ENCRYPT_DECRYPT".into()),
            aliases,
        }))
    }

    /// No KmsKeyId is sent: ElastiCache then uses its service-managed key.
    fn default_kms_key(&self) -> Option<String> {
        None
    }

    async fn resolve_alias(&self, _alias: &str) -> CloudResult<Option<String>> {
        Ok(None)
    }

    /// ElastiCache's certificates chain to a public CA.
    fn data_plane_ca(&self) -> Option<PathBuf> {
        None
    }

    async fn get_secret(&self, id: &str) -> CloudResult<Option<Secret>> {
        let out = self.secrets.get_secret_value().secret_id(id).send().await;
        let value = none_if_not_found(out.map_err(|e| map_err(e, "secret", id)))?;
        Ok(value.and_then(|v| v.secret_string().map(Secret::new)))
    }

    async fn dns_record(&self, zone: &str, name: &str) -> CloudResult<Option<DnsRecord>> {
        let out = self
            .dns
            .list_resource_record_sets()
            .hosted_zone_id(zone)
            .start_record_name(name)
            .max_items(10)
            .send()
            .await
            .map_err(|e| map_err(e, "DNS record", name))?;
        let wanted = super::dns_name_key(name);
        Ok(out
            .resource_record_sets()
            .iter()
            .find(|r| super::dns_name_key(r.name()) == wanted)
            .map(|r| DnsRecord {
                record_type: r.r#type().as_str().to_string(),
                value: r
                    .resource_records()
                    .first()
                    .map(|v| v.value().to_string())
                    .unwrap_or_default(),
                ttl: r.ttl().unwrap_or(0).max(0) as u64,
            }))
    }

    async fn dns_change_status(&self, change_id: &str) -> CloudResult<String> {
        let out = self
            .dns
            .get_change()
            .id(change_id)
            .send()
            .await
            .map_err(|e| map_err(e, "DNS change", change_id))?;
        Ok(out
            .change_info()
            .map(|c| c.status().as_str().to_string())
            .unwrap_or_default())
    }
}

#[async_trait]
impl CloudWrite for Aws {
    async fn create_snapshot(
        &self,
        group: &str,
        name: &str,
        kms_key_id: Option<&str>,
    ) -> CloudResult<()> {
        let tags = BTreeMap::from([
            ("ecmigrate:source".to_string(), group.to_string()),
            ("ecmigrate:managed".to_string(), "true".to_string()),
        ]);
        self.ec
            .create_snapshot()
            .replication_group_id(group)
            .snapshot_name(name)
            .set_kms_key_id(kms_key_id.map(str::to_string))
            .set_tags(Some(ec_tags(&tags)))
            .send()
            .await
            .map_err(|e| map_err(e, "snapshot", name))?;
        Ok(())
    }

    async fn create_group_from_snapshot(&self, r: &CreateEncryptedGroup) -> CloudResult<()> {
        let mut request = self
            .ec
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
            .auth_token(r.auth_token.expose())
            .set_cache_subnet_group_name(r.cache_subnet_group_name.clone())
            .set_cache_parameter_group_name(r.cache_parameter_group_name.clone())
            .set_port(r.port.map(i32::from))
            .set_preferred_maintenance_window(r.preferred_maintenance_window.clone())
            .set_snapshot_window(r.snapshot_window.clone())
            .set_tags(Some(ec_tags(&r.tags)));
        if !r.security_group_ids.is_empty() {
            request = request.set_security_group_ids(Some(r.security_group_ids.clone()));
        }
        request = if r.cluster_enabled {
            request
                .num_node_groups(r.num_node_groups as i32)
                .replicas_per_node_group(r.replicas_per_node_group as i32)
        } else {
            // Cluster mode disabled: the documented parameter is NumCacheClusters (primary + replicas).
            request.num_cache_clusters(r.replicas_per_node_group as i32 + 1)
        };
        match request.send().await {
            Ok(_) => Ok(()),
            Err(e) => Err(redact(map_err(e, "replication group", &r.id), r)),
        }
    }

    async fn delete_group(&self, id: &str) -> CloudResult<()> {
        // Deliberately no FinalSnapshotIdentifier: the final snapshot was taken encrypted beforehand.
        self.ec
            .delete_replication_group()
            .replication_group_id(id)
            .retain_primary_cluster(false)
            .send()
            .await
            .map_err(|e| map_err(e, "replication group", id))?;
        Ok(())
    }

    async fn point_alias(&self, alias: &str, _group: &str) -> CloudResult<()> {
        Err(CloudError::other(format!(
            "endpoint alias `{alias}`: not supported on aws; use the manual cutover"
        )))
    }

    async fn upsert_cname(
        &self,
        zone: &str,
        name: &str,
        value: &str,
        ttl: u64,
    ) -> CloudResult<String> {
        use aws_sdk_route53::types::{
            Change, ChangeAction, ChangeBatch, ResourceRecord, ResourceRecordSet, RrType,
        };
        let invalid = |e: aws_sdk_route53::error::BuildError| CloudError::invalid(e.to_string());
        let record = ResourceRecordSet::builder()
            .name(name)
            .r#type(RrType::Cname)
            .ttl(ttl as i64)
            .resource_records(
                ResourceRecord::builder()
                    .value(value)
                    .build()
                    .map_err(invalid)?,
            )
            .build()
            .map_err(invalid)?;
        let batch = ChangeBatch::builder()
            .comment("ecmigrate cutover")
            .changes(
                Change::builder()
                    .action(ChangeAction::Upsert)
                    .resource_record_set(record)
                    .build()
                    .map_err(invalid)?,
            )
            .build()
            .map_err(invalid)?;
        let out = self
            .dns
            .change_resource_record_sets()
            .hosted_zone_id(zone)
            .change_batch(batch)
            .send()
            .await
            .map_err(|e| map_err(e, "DNS record", name))?;
        Ok(out
            .change_info()
            .map(|c| c.id().to_string())
            .unwrap_or_default())
    }

    async fn put_secret(
        &self,
        id: &str,
        value: &Secret,
        tags: &BTreeMap<String, String>,
    ) -> CloudResult<()> {
        // A new version of an existing secret, else a new secret. Errors name the secret, never the value.
        let put = self
            .secrets
            .put_secret_value()
            .secret_id(id)
            .secret_string(value.expose())
            .send()
            .await;
        match put.map_err(|e| map_err(e, "secret", id)) {
            Ok(_) => Ok(()),
            Err(CloudError::NotFound { .. }) => {
                let tags = tags
                    .iter()
                    .map(|(k, v)| {
                        aws_sdk_secretsmanager::types::Tag::builder()
                            .key(k)
                            .value(v)
                            .build()
                    })
                    .collect();
                self.secrets
                    .create_secret()
                    .name(id)
                    .description("ElastiCache AUTH token written by ecmigrate")
                    .secret_string(value.expose())
                    .set_tags(Some(tags))
                    .send()
                    .await
                    .map_err(|e| map_err(e, "secret", id))?;
                Ok(())
            }
            Err(e) => Err(e),
        }
    }
}

/// Belt and braces: no error message may carry the AUTH token, whatever the service echoes back.
fn redact(e: CloudError, r: &CreateEncryptedGroup) -> CloudError {
    let token = r.auth_token.expose();
    let clean = |s: String| {
        if token.is_empty() {
            s
        } else {
            s.replace(token, "<redacted>")
        }
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

#[cfg(test)]
mod tests {
    use super::create_engine_version;

    #[test]
    fn engine_version_for_create() {
        assert_eq!(create_engine_version("7.0.7"), "7.0");
        assert_eq!(create_engine_version("7.1"), "7.1");
        assert_eq!(create_engine_version("6.2.6"), "6.2");
        assert_eq!(create_engine_version("5.0.6"), "5.0.6");
        assert_eq!(create_engine_version("4.0.10"), "4.0.10");
    }
}

/// The SDK side without a network: aws-smithy-mocks answers in place of ElastiCache, to show what moto
/// cannot: throttling and 5xx faults are survived, and the exact shape of CreateReplicationGroup.
#[cfg(test)]
mod mock_tests {
    use std::collections::BTreeMap;
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use aws_sdk_elasticache::config::retry::RetryConfig;
    use aws_sdk_elasticache::config::{BehaviorVersion, Credentials, Region};
    use aws_sdk_elasticache::error::ErrorMetadata;
    use aws_sdk_elasticache::operation::create_replication_group::{
        CreateReplicationGroupError, CreateReplicationGroupInput, CreateReplicationGroupOutput,
    };
    use aws_sdk_elasticache::operation::describe_snapshots::{
        DescribeSnapshotsError, DescribeSnapshotsOutput,
    };
    use aws_smithy_mocks::{
        MockResponseInterceptor, Rule, RuleMode, create_mock_http_client, mock,
    };

    use super::{Aws, ec};
    use crate::cloud::{CloudError, CloudRead, CloudWrite, CreateEncryptedGroup};
    use crate::secret::Secret;

    fn aws_with(rules: &[&Rule], max_attempts: u32) -> Aws {
        let mut interceptor = MockResponseInterceptor::new().rule_mode(RuleMode::Sequential);
        for rule in rules {
            interceptor = interceptor.with_rule(rule);
        }
        let conf = aws_sdk_elasticache::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new("us-east-1"))
            .credentials_provider(Credentials::new("a", "b", None, None, "test"))
            .http_client(create_mock_http_client())
            .interceptor(interceptor)
            .retry_config(
                RetryConfig::standard()
                    .with_max_attempts(max_attempts)
                    .with_initial_backoff(Duration::from_millis(1))
                    .with_max_backoff(Duration::from_millis(2)),
            )
            .build();
        let kms_conf = aws_sdk_kms::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(aws_sdk_kms::config::Region::new("us-east-1"))
            .credentials_provider(aws_sdk_kms::config::Credentials::new(
                "a", "b", None, None, "test",
            ))
            .http_client(create_mock_http_client())
            .build();
        Aws {
            ec: aws_sdk_elasticache::Client::from_conf(conf),
            kms: aws_sdk_kms::Client::from_conf(kms_conf),
            secrets: aws_sdk_secretsmanager::Client::from_conf(
                aws_sdk_secretsmanager::Config::builder()
                    .behavior_version(BehaviorVersion::latest())
                    .region(aws_sdk_secretsmanager::config::Region::new("us-east-1"))
                    .credentials_provider(aws_sdk_secretsmanager::config::Credentials::new(
                        "a", "b", None, None, "test",
                    ))
                    .http_client(create_mock_http_client())
                    .build(),
            ),
            dns: aws_sdk_route53::Client::from_conf(
                aws_sdk_route53::Config::builder()
                    .behavior_version(BehaviorVersion::latest())
                    .region(aws_sdk_route53::config::Region::new("us-east-1"))
                    .credentials_provider(aws_sdk_route53::config::Credentials::new(
                        "a", "b", None, None, "test",
                    ))
                    .http_client(create_mock_http_client())
                    .build(),
            ),
        }
    }

    fn throttling() -> DescribeSnapshotsError {
        DescribeSnapshotsError::generic(
            ErrorMetadata::builder()
                .code("Throttling")
                .message("Rate exceeded")
                .build(),
        )
    }

    fn one_snapshot() -> DescribeSnapshotsOutput {
        DescribeSnapshotsOutput::builder()
            .snapshots(
                ec::Snapshot::builder()
                    .snapshot_name("orders-ecmigrate-1")
                    .replication_group_id("orders")
                    .snapshot_status("available")
                    .kms_key_id("arn:aws:kms:us-east-1:123456789012:key/k")
                    .build(),
            )
            .build()
    }

    #[tokio::test]
    async fn throttling_and_5xx_are_retried_and_the_describe_succeeds() {
        let rule = mock!(aws_sdk_elasticache::Client::describe_snapshots)
            .sequence()
            .error(throttling)
            .http_status(503, None)
            .output(one_snapshot)
            .build();
        let aws = aws_with(&[&rule], 3);
        let s = aws
            .describe_snapshot("orders-ecmigrate-1")
            .await
            .expect("survives throttling and a 503")
            .expect("snapshot");
        assert_eq!(s.status, "available");
        assert!(s.encrypted());
        assert_eq!(rule.num_calls(), 3);
    }

    #[tokio::test]
    async fn throttling_past_the_sdk_retries_is_transient_so_the_wait_retries() {
        let rule = mock!(aws_sdk_elasticache::Client::describe_snapshots)
            .sequence()
            .error(throttling)
            .times(2)
            .build();
        let aws = aws_with(&[&rule], 1);
        let e = aws.describe_snapshot("x").await.unwrap_err();
        assert!(e.is_transient(), "{e:?}");
        let rule = mock!(aws_sdk_elasticache::Client::describe_snapshots)
            .sequence()
            .http_status(500, None)
            .build();
        let e = aws_with(&[&rule], 1)
            .describe_snapshot("x")
            .await
            .unwrap_err();
        assert!(e.is_transient(), "{e:?}");
    }

    fn request(cluster_enabled: bool) -> CreateEncryptedGroup {
        CreateEncryptedGroup {
            id: "orders-enc".into(),
            description: "encrypted copy of orders".into(),
            snapshot_name: "orders-ecmigrate-1".into(),
            engine: "redis".into(),
            engine_version: "7.0.7".into(),
            cache_node_type: "cache.r7g.large".into(),
            cluster_enabled,
            num_node_groups: if cluster_enabled { 3 } else { 1 },
            replicas_per_node_group: 1,
            kms_key_id: Some("arn:aws:kms:us-east-1:123456789012:key/k".into()),
            transit_encryption_mode: "required".into(),
            auth_token: Secret::new("Secret-token-value-0123456789abcdef"),
            cache_subnet_group_name: Some("subnets-a".into()),
            security_group_ids: vec!["sg-1".into(), "sg-2".into()],
            cache_parameter_group_name: Some("params".into()),
            port: Some(6380),
            preferred_maintenance_window: Some("sun:05:00-sun:06:00".into()),
            snapshot_window: Some("03:00-04:00".into()),
            tags: BTreeMap::from([("team".to_string(), "orders".to_string())]),
        }
    }

    async fn captured_create(cluster_enabled: bool) -> CreateReplicationGroupInput {
        let seen: Arc<Mutex<Option<CreateReplicationGroupInput>>> = Arc::default();
        let sink = seen.clone();
        let rule = mock!(aws_sdk_elasticache::Client::create_replication_group)
            .match_requests(move |input| {
                *sink.lock().unwrap() = Some(input.clone());
                true
            })
            .then_output(|| CreateReplicationGroupOutput::builder().build());
        aws_with(&[&rule], 1)
            .create_group_from_snapshot(&request(cluster_enabled))
            .await
            .expect("create");
        seen.lock().unwrap().take().expect("request seen")
    }

    #[tokio::test]
    async fn create_replication_group_carries_encryption_and_the_copied_settings() {
        let r = captured_create(false).await;
        assert_eq!(r.replication_group_id(), Some("orders-enc"));
        assert_eq!(r.snapshot_name(), Some("orders-ecmigrate-1"));
        assert_eq!(r.at_rest_encryption_enabled(), Some(true));
        assert_eq!(
            r.kms_key_id(),
            Some("arn:aws:kms:us-east-1:123456789012:key/k")
        );
        assert_eq!(r.transit_encryption_enabled(), Some(true));
        assert_eq!(
            r.transit_encryption_mode(),
            Some(&ec::TransitEncryptionMode::Required)
        );
        assert_eq!(r.auth_token(), Some("Secret-token-value-0123456789abcdef"));
        assert_eq!(r.engine(), Some("redis"));
        assert_eq!(r.engine_version(), Some("7.0"));
        assert_eq!(r.cache_node_type(), Some("cache.r7g.large"));
        assert_eq!(r.num_cache_clusters(), Some(2));
        assert_eq!(r.replicas_per_node_group(), None);
        assert_eq!(r.num_node_groups(), None);
        assert_eq!(r.cache_subnet_group_name(), Some("subnets-a"));
        assert_eq!(r.security_group_ids(), ["sg-1", "sg-2"]);
        assert_eq!(r.cache_parameter_group_name(), Some("params"));
        assert_eq!(r.port(), Some(6380));
        assert_eq!(
            r.preferred_maintenance_window(),
            Some("sun:05:00-sun:06:00")
        );
        assert_eq!(r.snapshot_window(), Some("03:00-04:00"));
        assert_eq!(r.tags().len(), 1);

        let r = captured_create(true).await;
        assert_eq!(r.num_node_groups(), Some(3));
        assert_eq!(r.replicas_per_node_group(), Some(1));
        assert_eq!(r.num_cache_clusters(), None);
    }

    #[tokio::test]
    async fn an_error_of_create_never_carries_the_token() {
        let rule = mock!(aws_sdk_elasticache::Client::create_replication_group).then_error(|| {
            CreateReplicationGroupError::generic(
                ErrorMetadata::builder()
                    .code("InvalidParameterValue")
                    .message("bad AuthToken Secret-token-value-0123456789abcdef")
                    .build(),
            )
        });
        let e = aws_with(&[&rule], 1)
            .create_group_from_snapshot(&request(false))
            .await
            .unwrap_err();
        let text = e.to_string();
        assert!(matches!(e, CloudError::InvalidRequest { .. }), "{e:?}");
        assert!(!text.contains("Secret-token-value"), "{text}");
    }
}
