//! One retry budget per service, account and region for every client of a process (`fleet run`).
//!
//! AWS throttles each API per account and region. N plans of one region that each retried on their own
//! would send N times the retries into the same throttled API, and each would back off only on its own
//! errors. The SDK's adaptive retry keeps a token bucket (the retry quota) and a client-side rate limiter
//! (cut on every throttling answer) per [`RetryPartition`]; a custom partition shared by every client of
//! one service, account and region makes those the fleet's: a throttling answer to one plan slows the
//! sends of all of them, and their retries draw on one quota. The account is the credentials' profile
//! (the process knows no account id before it calls STS, which ecmigrate never needs).

use std::collections::HashMap;
use std::sync::Mutex;

use aws_config::retry::{RetryConfig, RetryMode};
use aws_sdk_elasticache::config::retry::{RetryPartition, TokenBucket};

/// The retry partitions of one process, one per service, profile and region, handed out to every
/// client built with [`super::Aws::connect_shared`].
pub struct SharedRetry {
    /// The retry quota of each partition; `None`: the SDK's default (500 tokens, 5 per retry).
    quota: Option<usize>,
    partitions: Mutex<HashMap<String, RetryPartition>>,
}

impl Default for SharedRetry {
    fn default() -> Self {
        SharedRetry::new()
    }
}

impl SharedRetry {
    pub fn new() -> Self {
        SharedRetry {
            quota: None,
            partitions: Mutex::new(HashMap::new()),
        }
    }

    /// Partitions with a retry quota of `tokens` (tests drain it on purpose).
    #[cfg(test)]
    pub(super) fn with_quota(tokens: usize) -> Self {
        SharedRetry {
            quota: Some(tokens),
            partitions: Mutex::new(HashMap::new()),
        }
    }

    /// The partition of `service` in `region` for `profile` (the account): the same one, sharing its
    /// token bucket and rate limiter, on every call with the same three.
    pub(super) fn partition(
        &self,
        service: &str,
        region: &str,
        profile: Option<&str>,
    ) -> RetryPartition {
        let name = format!(
            "ecmigrate-{service}-{}-{region}",
            profile.unwrap_or("default")
        );
        let mut partitions = self.partitions.lock().expect("lock");
        partitions
            .entry(name.clone())
            .or_insert_with(|| {
                let mut partition = RetryPartition::custom(name);
                if let Some(tokens) = self.quota {
                    partition = partition.token_bucket(TokenBucket::new(tokens));
                }
                partition.build()
            })
            .clone()
    }
}

/// The environment's retry settings (`AWS_MAX_ATTEMPTS`, backoff) in adaptive mode: the rate limiter that
/// a shared partition shares only acts in that mode.
pub(super) fn adaptive(configured: Option<&RetryConfig>) -> RetryConfig {
    configured
        .cloned()
        .unwrap_or_else(RetryConfig::standard)
        .with_retry_mode(RetryMode::Adaptive)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use aws_config::retry::{RetryConfig, RetryMode};
    use aws_sdk_elasticache::config::{
        BehaviorVersion, Credentials, Region, SharedCredentialsProvider,
    };
    use aws_sdk_elasticache::error::ErrorMetadata;
    use aws_sdk_elasticache::operation::describe_snapshots::{
        DescribeSnapshotsError, DescribeSnapshotsOutput,
    };
    use aws_smithy_mocks::{
        MockResponseInterceptor, Rule, RuleMode, create_mock_http_client, mock,
    };

    use super::SharedRetry;
    use crate::cloud::CloudRead;
    use crate::cloud::aws::Aws;

    /// The clients one plan of `region` gets from `shared`, ElastiCache answering by `rule`.
    fn plan_clients(shared: &SharedRetry, region: &str, rule: &Rule) -> Aws {
        let sdk = aws_config::SdkConfig::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new(region.to_string()))
            .credentials_provider(SharedCredentialsProvider::new(Credentials::new(
                "a", "b", None, None, "test",
            )))
            .http_client(create_mock_http_client())
            // As AWS_MAX_ATTEMPTS=3 would say; the short backoff keeps the test fast.
            .retry_config(
                RetryConfig::standard()
                    .with_max_attempts(3)
                    .with_initial_backoff(Duration::from_millis(1))
                    .with_max_backoff(Duration::from_millis(2)),
            )
            .build();
        let aws = Aws::with_shared_retry(&sdk, None, shared);
        let ec = aws
            .ec
            .config()
            .to_builder()
            .interceptor(
                MockResponseInterceptor::new()
                    .rule_mode(RuleMode::Sequential)
                    .with_rule(rule),
            )
            .build();
        Aws {
            ec: aws_sdk_elasticache::Client::from_conf(ec),
            ..aws
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

    /// Throttled twice, then answered.
    fn throttled_twice() -> Rule {
        mock!(aws_sdk_elasticache::Client::describe_snapshots)
            .sequence()
            .error(throttling)
            .times(2)
            .output(|| DescribeSnapshotsOutput::builder().build())
            .build()
    }

    #[test]
    fn clients_of_one_region_share_a_partition_and_retry_adaptively() {
        let shared = SharedRetry::new();
        let rule = throttled_twice();
        let a = plan_clients(&shared, "us-east-1", &rule);
        let b = plan_clients(&shared, "us-east-1", &rule);
        let other = plan_clients(&shared, "eu-west-1", &rule);
        let partition = |aws: &Aws| aws.ec.config().retry_partition().cloned().unwrap();
        assert_eq!(partition(&a), partition(&b));
        assert_ne!(partition(&a), partition(&other));
        assert_eq!(
            partition(&a).to_string(),
            "ecmigrate-elasticache-default-us-east-1"
        );
        let kms = |aws: &Aws| aws.kms.config().retry_partition().cloned().unwrap();
        assert_eq!(kms(&a), kms(&b));
        assert_ne!(
            kms(&a),
            partition(&a),
            "each service is throttled on its own"
        );
        let retry = a.ec.config().retry_config().unwrap();
        assert_eq!(retry.mode(), RetryMode::Adaptive);
        assert_eq!(
            retry.max_attempts(),
            3,
            "the environment's attempts are kept"
        );
    }

    /// What no single client shows: plan A's throttling spends the region's retry quota, so plan B, of
    /// the same region, retries less (here: not at all) instead of adding its own retries to a throttled
    /// API; a plan of another region keeps its own quota and retries through.
    #[tokio::test]
    async fn throttling_of_one_plan_spends_the_retry_quota_of_every_plan_of_its_region() {
        // Two retries' worth (5 tokens each): A's throttled call keeps one of them spent.
        let shared = SharedRetry::with_quota(10);
        let rule_a = throttled_twice();
        let a = plan_clients(&shared, "us-east-1", &rule_a);
        a.list_snapshots(None).await.expect("A retries through");
        assert_eq!(rule_a.num_calls(), 3);

        let rule_b = throttled_twice();
        let b = plan_clients(&shared, "us-east-1", &rule_b);
        let e = b.list_snapshots(None).await.unwrap_err();
        assert!(e.is_transient(), "{e:?}");
        assert_eq!(
            rule_b.num_calls(),
            2,
            "B retried once (the quota A left), not twice"
        );

        let rule_c = throttled_twice();
        let c = plan_clients(&shared, "eu-west-1", &rule_c);
        c.list_snapshots(None)
            .await
            .expect("another region's quota is whole");
        assert_eq!(rule_c.num_calls(), 3);

        // Without the shared partition (each plan its own quota), B would have retried through as well.
        let rule_alone = throttled_twice();
        let alone = plan_clients(&SharedRetry::with_quota(10), "us-east-1", &rule_alone);
        alone.list_snapshots(None).await.expect("its own quota");
        assert_eq!(rule_alone.num_calls(), 3);
    }
}
