//! The real cloud: Amazon ElastiCache, KMS, Secrets Manager and Route53 through the official AWS SDK.
//!
//! Credentials come from the standard chain; the region and profile from the plan (`aws.region`,
//! `aws.profile`), overridden by `--region` / `--profile`. `AWS_ENDPOINT_URL` (and the service-specific
//! `AWS_ENDPOINT_URL_ELASTICACHE` / `AWS_ENDPOINT_URL_KMS`) and `AWS_MAX_ATTEMPTS` are honoured by
//! aws-config itself, which is how the tests point the binary at a local moto server.
//!
//! This module owns the `Aws` type (one client per service), the mapping of SDK errors onto `CloudError`
//! and the `CloudRead` / `CloudWrite` impls, which hand each call to the file of the service it talks to:
//! `elasticache`, `kms`, `secrets` (Secrets Manager) and `route53`. No SDK type leaves this module:
//! everything is mapped onto the domain types of `cloud`.

pub mod account;
mod elasticache;
mod kms;
mod rbac;
#[cfg(test)]
mod rbac_tests;
mod retry;
mod route53;
mod secrets;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::path::PathBuf;

use async_trait::async_trait;
use aws_config::BehaviorVersion;
use aws_sdk_elasticache::config::http::HttpResponse;
use aws_sdk_elasticache::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};

use crate::secret::Secret;

use super::{
    AuthTokenUpdate, CloudError, CloudRead, CloudResult, CloudWrite, CreateEncryptedGroup,
    DnsRecord, KmsKey, ReplicationGroup, SecretVersion, Snapshot,
};

pub use elasticache::create_engine_version;
pub use retry::SharedRetry;

/// ElastiCache, KMS, Secrets Manager, Route53 and STS (who is calling) clients for one account and region.
pub struct Aws {
    ec: aws_sdk_elasticache::Client,
    kms: aws_sdk_kms::Client,
    secrets: aws_sdk_secretsmanager::Client,
    dns: aws_sdk_route53::Client,
    sts: aws_sdk_sts::Client,
}

impl Aws {
    /// Build the clients from the standard credential chain. `region` / `profile` override what the
    /// environment and the shared config files say.
    pub async fn connect(region: Option<String>, profile: Option<String>) -> CloudResult<Aws> {
        let config = load_config(region, profile.clone()).await?;
        Ok(Aws {
            ec: aws_sdk_elasticache::Client::new(&config),
            kms: aws_sdk_kms::Client::new(&config),
            secrets: aws_sdk_secretsmanager::Client::new(&config),
            dns: aws_sdk_route53::Client::new(&config),
            sts: aws_sdk_sts::Client::new(&config),
        })
    }

    /// As [`Aws::connect`], with adaptive retry and the retry partitions of `shared`: every client of
    /// the same service, profile and region built this way shares one retry quota and one rate limiter
    /// (see [`SharedRetry`]), so the plans of a fleet back off together.
    pub async fn connect_shared(
        region: Option<String>,
        profile: Option<String>,
        shared: &SharedRetry,
    ) -> CloudResult<Aws> {
        let config = load_config(region, profile.clone()).await?;
        Ok(Aws::with_shared_retry(&config, profile.as_deref(), shared))
    }

    fn with_shared_retry(
        config: &aws_config::SdkConfig,
        profile: Option<&str>,
        shared: &SharedRetry,
    ) -> Aws {
        let region = config.region().map(|r| r.to_string()).unwrap_or_default();
        let retry = retry::adaptive(config.retry_config());
        let partition = |service: &str| shared.partition(service, &region, profile);
        Aws {
            ec: aws_sdk_elasticache::Client::from_conf(
                aws_sdk_elasticache::config::Builder::from(config)
                    .retry_config(retry.clone())
                    .retry_partition(partition("elasticache"))
                    .build(),
            ),
            kms: aws_sdk_kms::Client::from_conf(
                aws_sdk_kms::config::Builder::from(config)
                    .retry_config(retry.clone())
                    .retry_partition(partition("kms"))
                    .build(),
            ),
            secrets: aws_sdk_secretsmanager::Client::from_conf(
                aws_sdk_secretsmanager::config::Builder::from(config)
                    .retry_config(retry.clone())
                    .retry_partition(partition("secretsmanager"))
                    .build(),
            ),
            // Route53 is a global service: one partition whatever the region.
            dns: aws_sdk_route53::Client::from_conf(
                aws_sdk_route53::config::Builder::from(config)
                    .retry_config(retry)
                    .retry_partition(shared.partition("route53", "global", profile))
                    .build(),
            ),
            // Once per evidence pack: the SDK's own retry is enough.
            sts: aws_sdk_sts::Client::new(config),
        }
    }
}

/// The SDK's configuration from the standard chain, `region` / `profile` winning; a region is required.
async fn load_config(
    region: Option<String>,
    profile: Option<String>,
) -> CloudResult<aws_config::SdkConfig> {
    let config = load_config_any_region(region, profile).await;
    if config.region().is_none() {
        return Err(CloudError::invalid(
            "no AWS region: set `aws.region` in the plan, pass --region, or set AWS_REGION",
        ));
    }
    Ok(config)
}

/// As [`load_config`], with or without a region (the account-wide reads find their own).
async fn load_config_any_region(
    region: Option<String>,
    profile: Option<String>,
) -> aws_config::SdkConfig {
    let mut loader = aws_config::defaults(BehaviorVersion::latest());
    if let Some(profile) = profile {
        loader = loader.profile_name(profile);
    }
    if let Some(region) = region {
        loader = loader.region(aws_config::Region::new(region));
    }
    loader.load().await
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

// The trait impls only route: a trait impl cannot be split across files, so each call goes to the
// service file whose client it uses.
#[async_trait]
impl CloudRead for Aws {
    fn provider(&self) -> &'static str {
        "aws"
    }

    async fn describe_group(&self, id: &str) -> CloudResult<Option<ReplicationGroup>> {
        elasticache::describe_group(&self.ec, id).await
    }

    async fn list_groups(&self) -> CloudResult<Vec<ReplicationGroup>> {
        elasticache::list_groups(&self.ec).await
    }

    async fn describe_snapshot(&self, name: &str) -> CloudResult<Option<Snapshot>> {
        elasticache::describe_snapshot(&self.ec, name).await
    }

    async fn list_snapshots(&self, group: Option<&str>) -> CloudResult<Vec<Snapshot>> {
        elasticache::list_snapshots(&self.ec, group).await
    }

    async fn list_keys(&self) -> CloudResult<Vec<KmsKey>> {
        kms::list_keys(&self.kms).await
    }

    async fn describe_key(&self, key_id: &str) -> CloudResult<Option<KmsKey>> {
        kms::describe_key(&self.kms, key_id).await
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
        secrets::get_secret(&self.secrets, id).await
    }

    async fn get_secret_version(
        &self,
        id: &str,
        stage: &str,
    ) -> CloudResult<Option<SecretVersion>> {
        secrets::get_secret_version(&self.secrets, id, stage).await
    }

    async fn describe_user(&self, user_id: &str) -> CloudResult<Option<crate::cloud::User>> {
        rbac::describe_user(&self.ec, user_id).await
    }

    async fn describe_user_group(&self, id: &str) -> CloudResult<Option<crate::cloud::UserGroup>> {
        rbac::describe_user_group(&self.ec, id).await
    }

    async fn key_rotation_enabled(&self, key: &str) -> CloudResult<Option<bool>> {
        kms::key_rotation_enabled(&self.kms, key).await.map(Some)
    }
    async fn caller_identity(&self) -> CloudResult<Option<super::CallerIdentity>> {
        account::caller_identity_of(&self.sts).await.map(Some)
    }
    async fn dns_record(&self, zone: &str, name: &str) -> CloudResult<Option<DnsRecord>> {
        route53::dns_record(&self.dns, zone, name).await
    }

    async fn dns_change_status(&self, change_id: &str) -> CloudResult<String> {
        route53::dns_change_status(&self.dns, change_id).await
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
        elasticache::create_snapshot(&self.ec, group, name, kms_key_id).await
    }

    async fn create_group_from_snapshot(&self, r: &CreateEncryptedGroup) -> CloudResult<()> {
        elasticache::create_group_from_snapshot(&self.ec, r).await
    }

    async fn delete_group(&self, id: &str) -> CloudResult<()> {
        elasticache::delete_group(&self.ec, id).await
    }

    async fn modify_transit(&self, group: &str, mode: &str) -> CloudResult<()> {
        elasticache::modify_transit(&self.ec, group, mode).await
    }

    async fn modify_auth_token(
        &self,
        group: &str,
        token: &Secret,
        strategy: AuthTokenUpdate,
    ) -> CloudResult<()> {
        elasticache::modify_auth_token(&self.ec, group, token, strategy).await
    }

    async fn modify_to_user_group(&self, group: &str, user_group_id: &str) -> CloudResult<()> {
        rbac::modify_to_user_group(&self.ec, group, user_group_id).await
    }

    async fn create_user(&self, r: &crate::cloud::CreateUser) -> CloudResult<()> {
        rbac::create_user(&self.ec, r).await
    }

    async fn create_user_group(
        &self,
        id: &str,
        engine: &str,
        user_ids: &[String],
        tags: &BTreeMap<String, String>,
    ) -> CloudResult<()> {
        rbac::create_user_group(&self.ec, id, engine, user_ids, tags).await
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
        route53::upsert_cname(&self.dns, zone, name, value, ttl).await
    }

    async fn put_secret(
        &self,
        id: &str,
        value: &Secret,
        tags: &BTreeMap<String, String>,
    ) -> CloudResult<()> {
        secrets::put_secret(&self.secrets, id, value, tags).await
    }

    async fn put_secret_pending(
        &self,
        id: &str,
        version_id: &str,
        value: &Secret,
    ) -> CloudResult<()> {
        secrets::put_secret_pending(&self.secrets, id, version_id, value).await
    }

    async fn move_secret_stage(
        &self,
        id: &str,
        stage: &str,
        to: Option<&str>,
        from: Option<&str>,
    ) -> CloudResult<()> {
        secrets::move_secret_stage(&self.secrets, id, stage, to, from).await
    }
}
