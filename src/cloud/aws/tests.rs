//! Unit tests of the SDK side without a network: aws-smithy-mocks answers in place of ElastiCache, to
//! show what moto cannot: throttling and 5xx faults are survived, and the exact shape of
//! CreateReplicationGroup.

use std::collections::{BTreeMap, BTreeSet};
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
use aws_sdk_elasticache::types as ec;
use aws_smithy_mocks::{MockResponseInterceptor, Rule, RuleMode, create_mock_http_client, mock};

use super::{Aws, create_engine_version};
use crate::cloud::{CloudError, CloudRead, CloudWrite, CreateEncryptedGroup, GroupAuth};
use crate::plan::rules::check_auth_token;
use crate::secret::{Secret, generate_token};

#[test]
fn engine_version_for_create() {
    assert_eq!(create_engine_version("7.0.7"), "7.0");
    assert_eq!(create_engine_version("7.1"), "7.1");
    assert_eq!(create_engine_version("6.2.6"), "6.2");
    assert_eq!(create_engine_version("5.0.6"), "5.0.6");
    assert_eq!(create_engine_version("4.0.10"), "4.0.10");
}

pub(super) fn aws_with(rules: &[&Rule], max_attempts: u32) -> Aws {
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
        sts: aws_sdk_sts::Client::from_conf(
            aws_sdk_sts::Config::builder()
                .behavior_version(BehaviorVersion::latest())
                .region(aws_sdk_sts::config::Region::new("us-east-1"))
                .credentials_provider(aws_sdk_sts::config::Credentials::new(
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

pub(super) fn request(cluster_enabled: bool) -> CreateEncryptedGroup {
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
        auth: GroupAuth::Token(Secret::new("Secret-token-value-0123456789abcdef")),
        cache_subnet_group_name: Some("subnets-a".into()),
        security_group_ids: vec!["sg-1".into(), "sg-2".into()],
        cache_parameter_group_name: Some("params".into()),
        port: Some(6380),
        preferred_maintenance_window: Some("sun:05:00-sun:06:00".into()),
        snapshot_window: Some("03:00-04:00".into()),
        tags: BTreeMap::from([("team".to_string(), "orders".to_string())]),
    }
}

/// The CreateReplicationGroup requests the SDK sends for `requests`, in order, through one client.
pub(super) async fn captured_creates(
    requests: &[CreateEncryptedGroup],
) -> Vec<CreateReplicationGroupInput> {
    let seen: Arc<Mutex<Vec<CreateReplicationGroupInput>>> = Arc::default();
    let sink = seen.clone();
    let rule = mock!(aws_sdk_elasticache::Client::create_replication_group)
        .match_requests(move |input| {
            sink.lock().unwrap().push(input.clone());
            true
        })
        .sequence()
        .output(|| CreateReplicationGroupOutput::builder().build())
        .repeatedly()
        .build();
    let aws = aws_with(&[&rule], 1);
    for r in requests {
        aws.create_group_from_snapshot(r).await.expect("create");
    }
    std::mem::take(&mut *seen.lock().unwrap())
}

async fn captured_create(cluster_enabled: bool) -> CreateReplicationGroupInput {
    let mut seen = captured_creates(&[request(cluster_enabled)]).await;
    assert_eq!(seen.len(), 1, "one request sent");
    seen.remove(0)
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

    assert_eq!(r.cluster_mode(), None);
    assert_eq!(r.automatic_failover_enabled(), None);

    // Cluster mode enabled, as the API reference asks: shards and replicas per shard (not
    // NumCacheClusters), cluster mode said, and automatic failover on ("must be enabled for ... cluster
    // mode enabled replication groups").
    let r = captured_create(true).await;
    assert_eq!(r.num_node_groups(), Some(3));
    assert_eq!(r.replicas_per_node_group(), Some(1));
    assert_eq!(r.num_cache_clusters(), None);
    assert_eq!(r.cluster_mode(), Some(&ec::ClusterMode::Enabled));
    assert_eq!(r.automatic_failover_enabled(), Some(true));
    assert!(r.node_group_configuration().is_empty());
}

/// A cluster-mode-enabled group as DescribeReplicationGroups reports it on AWS: a configuration endpoint,
/// node groups with slots and members but no primary, reader or member endpoints. moto reports the same
/// shape, except that it has no member cache clusters to describe.
fn cluster_group() -> ec::ReplicationGroup {
    let member = |id: &str| ec::NodeGroupMember::builder().cache_cluster_id(id).build();
    let shard = |n: u32, slots: &str| {
        ec::NodeGroup::builder()
            .node_group_id(format!("{n:04}"))
            .slots(slots)
            .node_group_members(member(&format!("orders-{n:04}-001")))
            .node_group_members(member(&format!("orders-{n:04}-002")))
            .build()
    };
    ec::ReplicationGroup::builder()
        .replication_group_id("orders")
        .status("available")
        .cluster_enabled(true)
        .configuration_endpoint(
            ec::Endpoint::builder()
                .address("clustercfg.orders.abc123.use1.cache.amazonaws.com")
                .port(6379)
                .build(),
        )
        .node_groups(shard(1, "0-8191"))
        .node_groups(shard(2, "8192-16383"))
        .build()
}

#[test]
fn a_cluster_groups_endpoint_is_its_configuration_endpoint() {
    let g = super::elasticache::group_from(&cluster_group(), None, BTreeMap::new());
    assert!(g.cluster_enabled);
    assert_eq!((g.num_node_groups, g.nodes_per_node_group), (2, 2));
    let ep = g.primary_endpoint.expect("the configuration endpoint");
    assert_eq!(
        (ep.host.as_str(), ep.port),
        ("clustercfg.orders.abc123.use1.cache.amazonaws.com", 6379)
    );
    assert_eq!(g.reader_endpoint, None);
    // No member reports an endpoint: the data plane finds the primaries through the configuration
    // endpoint (CLUSTER SHARDS), not through this list.
    assert!(g.nodes.is_empty(), "{:?}", g.nodes);
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

/// The AUTH token rule as the current CreateReplicationGroup API reference states it, written out here
/// so that it is checked independently of `plan::rules`: 16 to 128 printable ASCII characters, and
/// "The only permitted printable special characters are !, &, #, $, ^, <, >, and -. Other printable
/// special characters cannot be used in the AUTH token." `Err` names what breaks it, never the token.
fn aws_auth_token_rule(token: &str) -> Result<(), String> {
    let len = token.chars().count();
    if !(16..=128).contains(&len) {
        return Err(format!("{len} characters"));
    }
    let refused = aws_refused_characters(token);
    if refused.is_empty() {
        Ok(())
    } else {
        Err(format!("characters not permitted: {refused:?}"))
    }
}

/// The characters of `token` outside ASCII letters, digits and the permitted `! & # $ ^ < > -`.
fn aws_refused_characters(token: &str) -> BTreeSet<char> {
    const SPECIALS: &str = "!&#$^<>-";
    token
        .chars()
        .filter(|c| !(c.is_ascii_alphanumeric() || SPECIALS.contains(*c)))
        .collect()
}

#[test]
fn the_aws_auth_token_rule_as_written_here() {
    assert!(aws_auth_token_rule("Abc123!&#$^<>-xyz").is_ok());
    assert!(aws_auth_token_rule(&"a".repeat(128)).is_ok());
    assert!(aws_auth_token_rule(&"a".repeat(15)).is_err());
    assert!(aws_auth_token_rule(&"a".repeat(129)).is_err());
    for c in [' ', '_', '.', '~', '%', '*', '+', '=', '/', '"', '@', '\\'] {
        let token = format!("abcdefghijklmnop{c}");
        assert!(aws_auth_token_rule(&token).is_err(), "{c:?} accepted");
    }
    assert!(aws_auth_token_rule("abcdefghijklmnopé").is_err());
}

/// Generated tokens as CreateReplicationGroup carries them: each one passes the plan's token check and
/// the AWS rule above, and the request asks for encryption at rest and in transit with the plan's key,
/// restoring the plan's snapshot. Many tokens, so a character the service refuses shows up.
#[tokio::test]
async fn create_replication_group_carries_a_generated_token_that_aws_accepts() {
    const TOKENS: usize = 200;
    let requests: Vec<CreateEncryptedGroup> = (0..TOKENS)
        .map(|_| CreateEncryptedGroup {
            auth: GroupAuth::Token(generate_token()),
            ..request(false)
        })
        .collect();
    let sent = captured_creates(&requests).await;
    assert_eq!(sent.len(), TOKENS, "one CreateReplicationGroup per token");

    let mut plan_rule_failures = Vec::new();
    let mut aws_rule_failed = 0;
    let mut aws_length_failures = BTreeSet::new();
    let mut aws_refused = BTreeSet::new();
    for (r, asked) in sent.iter().zip(&requests) {
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
        let token = r.auth_token().expect("AuthToken sent");
        // Compared as a bool: a failing assert_eq would print the token.
        let GroupAuth::Token(asked_token) = &asked.auth else {
            unreachable!("every request above carries a token")
        };
        assert!(
            token == asked_token.expose(),
            "AuthToken is the generated token"
        );
        if let Err(e) = check_auth_token(token) {
            plan_rule_failures.push(e);
        }
        if aws_auth_token_rule(token).is_err() {
            aws_rule_failed += 1;
            let len = token.chars().count();
            if !(16..=128).contains(&len) {
                aws_length_failures.insert(len);
            }
            aws_refused.extend(aws_refused_characters(token));
        }
    }
    assert!(
        plan_rule_failures.is_empty(),
        "{} of {TOKENS} generated tokens fail check_auth_token: {plan_rule_failures:?}",
        plan_rule_failures.len()
    );
    assert!(
        aws_rule_failed == 0,
        "{aws_rule_failed} of {TOKENS} generated tokens break the CreateReplicationGroup AUTH rule \
         (lengths outside 16..=128: {aws_length_failures:?}; characters not permitted: {aws_refused:?})"
    );
}
