//! The moto harness: a client of the moto server the aws tests share (`scripts/test.sh` starts one and
//! exports `ECMIGRATE_TEST_MOTO_URL`), what it is seeded with, what its recorder saw, the `provider: aws`
//! plan the tests run, and the local data plane that stands in for ElastiCache's redis (moto has none): the
//! embedded sandbox's plain source and a TLS + AUTH copy of it, reached through `data_endpoint` /
//! `tls_ca_file`, as an operator reaches ElastiCache through a tunnel.
//!
//! moto is shared by every test, so each test uses its own ids. Known moto gaps are worked around here,
//! never in the product:
//! - the member clusters of a replication group are not in DescribeCacheClusters, so the engine version,
//!   subnet group and the like are unknown: each seeded group gets a stand-alone cache cluster named like
//!   its first member;
//! - `NumCacheClusters=2` yields one member unless `ReplicasPerNodeGroup` is also given (seeding only);
//! - cluster mode is modelled only when `ClusterMode=enabled` is sent (a `.cluster.on` parameter group
//!   alone yields a cluster-mode-disabled group); then `ConfigurationEndpoint`, `ClusterEnabled` and the
//!   node groups' slots are reported, but no parameter group, and a snapshot restores no shards' data;
//! - deleted groups stay `deleting` forever; FinalSnapshotIdentifier is ignored; nothing is validated;
//! - unimplemented calls answer HTML the SDK retries, so tests that expect errors set AWS_MAX_ATTEMPTS=1.

use std::sync::atomic::{AtomicU32, Ordering};

use aws_sdk_elasticache::config::{BehaviorVersion, Credentials, Region};

use crate::harness::{Env, Run, SOURCE, TARGET, block_on};

pub(crate) mod dns;
mod recorder;
pub(crate) use recorder::{
    is_mutating, recorded_actions_of_app, recorded_operations, recorded_params,
    recorded_regions_of_app, recording_len,
};

/// A valid AUTH token the tests know, so the TLS target the sandbox starts and the plan agree.
pub(crate) const TOKEN: &str = "Moto-test-token-0123456789-abcdefghijklmnopqrstuvwxyz-ABCDEFGHIJ";

/// The moto URL, or `None` (with a notice) when it is not running locally. Under CI it must be there.
pub(crate) fn moto_url() -> Option<String> {
    match std::env::var("ECMIGRATE_TEST_MOTO_URL") {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            if std::env::var_os("CI").is_some() {
                panic!(
                    "ECMIGRATE_TEST_MOTO_URL is not set under CI: run the tests with scripts/test.sh, which starts moto_server"
                );
            }
            eprintln!(
                "notice: ECMIGRATE_TEST_MOTO_URL is not set; skipping an aws test (scripts/test.sh starts moto_server)"
            );
            None
        }
    }
}

/// Ids no other test (nor an earlier run against the same moto) uses.
pub(crate) fn unique(prefix: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!(
        "{prefix}-{}-{}-{}",
        std::process::id() % 100_000,
        nanos % 100_000,
        N.fetch_add(1, Ordering::SeqCst)
    )
}

pub(crate) struct Moto {
    url: String,
    pub(crate) ec: aws_sdk_elasticache::Client,
    pub(crate) kms: aws_sdk_kms::Client,
    pub(crate) secrets: aws_sdk_secretsmanager::Client,
}

impl Moto {
    pub(crate) fn new(url: &str) -> Moto {
        Moto::in_region(url, "us-east-1")
    }

    /// The clients of one region (moto keeps each region apart, as AWS does).
    pub(crate) fn in_region(url: &str, region: &str) -> Moto {
        let creds = Credentials::new("testing", "testing", None, None, "test");
        let ec = aws_sdk_elasticache::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .endpoint_url(url)
            .region(Region::new(region.to_string()))
            .credentials_provider(creds.clone())
            .build();
        let kms = aws_sdk_kms::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .endpoint_url(url)
            .region(aws_sdk_kms::config::Region::new(region.to_string()))
            .credentials_provider(creds.clone())
            .build();
        let secrets = aws_sdk_secretsmanager::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .endpoint_url(url)
            .region(aws_sdk_secretsmanager::config::Region::new(
                region.to_string(),
            ))
            .credentials_provider(creds)
            .build();
        Moto {
            url: url.to_string(),
            ec: aws_sdk_elasticache::Client::from_conf(ec),
            kms: aws_sdk_kms::Client::from_conf(kms),
            secrets: aws_sdk_secretsmanager::Client::from_conf(secrets),
        }
    }

    /// The child process talks to moto, with test credentials and no shared config of this machine.
    pub(crate) fn configure(&self, env: &mut Env, retries: bool) {
        let none = env.path().join("no-aws-config");
        env.set_env("AWS_ENDPOINT_URL", &self.url);
        env.set_env("AWS_ACCESS_KEY_ID", "testing");
        env.set_env("AWS_SECRET_ACCESS_KEY", "testing");
        env.set_env("AWS_REGION", "us-east-1");
        env.set_env("AWS_CONFIG_FILE", none.to_str().unwrap());
        env.set_env("AWS_SHARED_CREDENTIALS_FILE", none.to_str().unwrap());
        env.set_env("AWS_EC2_METADATA_DISABLED", "true");
        if !retries {
            env.set_env("AWS_MAX_ATTEMPTS", "1");
        }
    }

    /// An unencrypted, available group of two nodes, and (moto gap) a cache cluster standing in for its
    /// first member so DescribeCacheClusters reports engine version, subnet group, security groups...
    pub(crate) fn seed_group(&self, id: &str, engine_version: &str, subnet_group: Option<&str>) {
        self.seed_group_shaped(id, engine_version, subnet_group, "cache.t3.micro", false);
    }

    /// As `seed_group`, with a node type and optionally at-rest encryption already on.
    pub(crate) fn seed_group_shaped(
        &self,
        id: &str,
        engine_version: &str,
        subnet_group: Option<&str>,
        node_type: &str,
        at_rest_encrypted: bool,
    ) {
        block_on(async {
            self.ec
                .create_replication_group()
                .at_rest_encryption_enabled(at_rest_encrypted)
                .replication_group_id(id)
                .replication_group_description("ecmigrate test source")
                .engine("redis")
                .engine_version(engine_version)
                .cache_node_type(node_type)
                .num_cache_clusters(2)
                // moto gap: without this, moto creates one member for NumCacheClusters=2.
                .replicas_per_node_group(1)
                .set_cache_subnet_group_name(subnet_group.map(str::to_string))
                .send()
                .await
                .expect("seed replication group");
            self.ec
                .create_cache_cluster()
                .cache_cluster_id(format!("{id}-001"))
                .engine("redis")
                .engine_version(engine_version)
                .cache_node_type(node_type)
                .num_cache_nodes(1)
                .set_cache_subnet_group_name(subnet_group.map(str::to_string))
                .security_group_ids("sg-0123456789abcdef0")
                .port(6379)
                .preferred_maintenance_window("sun:05:00-sun:06:00")
                .send()
                .await
                .expect("seed member cache cluster");
        });
    }

    /// An unencrypted, available cluster-mode-enabled group of `shards` node groups with `replicas`
    /// replicas each, and (moto gap, as `seed_group`) a cache cluster standing in for its first member,
    /// `<id>-0001-001`. moto models cluster mode only when `ClusterMode=enabled` is sent (not from a
    /// `.cluster.on` parameter group, which it neither checks nor reports); it then reports
    /// `ClusterEnabled`, the `ConfigurationEndpoint` and node groups with slots and members (no member
    /// endpoints, as on AWS).
    pub(crate) fn seed_cluster_group(&self, id: &str, shards: i32, replicas: i32) {
        use aws_sdk_elasticache::types::ClusterMode;
        block_on(async {
            self.ec
                .create_replication_group()
                .replication_group_id(id)
                .replication_group_description("ecmigrate test cluster source")
                .engine("redis")
                .engine_version("7.0.7")
                .cache_node_type("cache.t3.micro")
                .cluster_mode(ClusterMode::Enabled)
                .automatic_failover_enabled(true)
                .num_node_groups(shards)
                .replicas_per_node_group(replicas)
                .cache_parameter_group_name("default.redis7.cluster.on")
                .cache_subnet_group_name("subnets-a")
                .send()
                .await
                .expect("seed cluster replication group");
            self.ec
                .create_cache_cluster()
                .cache_cluster_id(format!("{id}-0001-001"))
                .engine("redis")
                .engine_version("7.0.7")
                .cache_node_type("cache.t3.micro")
                .num_cache_nodes(1)
                .cache_subnet_group_name("subnets-a")
                .security_group_ids("sg-0123456789abcdef0")
                .port(6379)
                .send()
                .await
                .expect("seed member cache cluster");
        });
    }

    /// A symmetric KMS key with `alias/NAME`; returns its ARN.
    pub(crate) fn seed_key(&self, alias: &str) -> String {
        self.seed_key_of(
            alias,
            aws_sdk_kms::types::KeySpec::SymmetricDefault,
            aws_sdk_kms::types::KeyUsageType::EncryptDecrypt,
        )
    }

    /// A KMS key of the given spec and usage with `alias/NAME`; returns its ARN.
    pub(crate) fn seed_key_of(
        &self,
        alias: &str,
        spec: aws_sdk_kms::types::KeySpec,
        usage: aws_sdk_kms::types::KeyUsageType,
    ) -> String {
        block_on(async {
            let key = self
                .kms
                .create_key()
                .key_spec(spec)
                .key_usage(usage)
                .send()
                .await
                .expect("create key");
            let meta = key.key_metadata().unwrap();
            self.kms
                .create_alias()
                .alias_name(format!("alias/{alias}"))
                .target_key_id(meta.key_id())
                .send()
                .await
                .expect("create alias");
            meta.arn().unwrap().to_string()
        })
    }

    /// DisableKey takes a key id or ARN, not an alias (moto gap: it fails on an ARN with a 500, so the
    /// bare key id is sent).
    pub(crate) fn disable_key(&self, arn: &str) {
        let key_id = arn.rsplit('/').next().unwrap();
        block_on(async {
            self.kms
                .disable_key()
                .key_id(key_id)
                .send()
                .await
                .expect("disable key");
        });
    }

    /// A Secrets Manager secret holding `value`.
    pub(crate) fn seed_secret(&self, name: &str, value: &str) {
        block_on(async {
            self.secrets
                .create_secret()
                .name(name)
                .secret_string(value)
                .send()
                .await
                .expect("create secret");
        });
    }

    pub(crate) fn secret(&self, name: &str) -> Option<String> {
        block_on(async {
            let out = self
                .secrets
                .get_secret_value()
                .secret_id(name)
                .send()
                .await
                .ok()?;
            out.secret_string().map(str::to_string)
        })
    }

    pub(crate) fn group(&self, id: &str) -> Option<aws_sdk_elasticache::types::ReplicationGroup> {
        block_on(async {
            match self
                .ec
                .describe_replication_groups()
                .replication_group_id(id)
                .send()
                .await
            {
                Ok(out) => out.replication_groups().first().cloned(),
                Err(_) => None,
            }
        })
    }

    /// Names of every snapshot and id of every group that mention `marker` (ids are unique per test, so
    /// other tests sharing moto do not show up).
    pub(crate) fn resources_of(&self, marker: &str) -> Vec<String> {
        block_on(async {
            let mut out = Vec::new();
            // Every page: a long-lived moto holds more groups than one page.
            let mut groups = self
                .ec
                .describe_replication_groups()
                .into_paginator()
                .send();
            while let Some(page) = groups.next().await {
                for g in page.expect("list groups").replication_groups() {
                    let id = g.replication_group_id().unwrap_or_default();
                    if id.contains(marker) {
                        out.push(format!("group {id} {}", g.status().unwrap_or_default()));
                    }
                }
            }
            let mut snaps = self.ec.describe_snapshots().into_paginator().send();
            while let Some(page) = snaps.next().await {
                for s in page.expect("list snapshots").snapshots() {
                    let name = s.snapshot_name().unwrap_or_default();
                    if name.contains(marker) {
                        out.push(format!("snapshot {name}"));
                    }
                }
            }
            out.sort();
            out
        })
    }

    pub(crate) fn snapshots_of(&self, group: &str) -> Vec<aws_sdk_elasticache::types::Snapshot> {
        block_on(async {
            self.ec
                .describe_snapshots()
                .replication_group_id(group)
                .send()
                .await
                .map(|o| o.snapshots().to_vec())
                .unwrap_or_default()
        })
    }
}

pub(crate) struct AwsPlan<'a> {
    pub(crate) name: &'a str,
    pub(crate) source: &'a str,
    pub(crate) target: &'a str,
    pub(crate) kms_alias: &'a str,
    /// (source, target, CA file) on the local data plane; `None` = no data steps.
    pub(crate) data: Option<(u16, u16, String)>,
}

pub(crate) fn aws_plan(env: &Env, p: &AwsPlan<'_>) -> String {
    let token_file = env.path().join("secrets").join("aws.token");
    let mut yaml = format!(
        r#"version: 1
name: {name}
provider: aws
aws: {{ region: us-east-1 }}
source:
  replication_group_id: {source}
"#,
        name = p.name,
        source = p.source
    );
    if let Some((src, _, _)) = &p.data {
        yaml.push_str(&format!("  data_endpoint: 127.0.0.1:{src}\n"));
    }
    yaml.push_str(&format!(
        r#"target:
  replication_group_id: {target}
  kms_key_id: alias/{alias}
  transit_encryption_mode: required
  auth_token: {{ file: {token} }}
"#,
        target = p.target,
        alias = p.kms_alias,
        token = token_file.display()
    ));
    match &p.data {
        Some((_, dst, ca)) => {
            yaml.push_str(&format!(
                "  data_endpoint: 127.0.0.1:{dst}\n  tls_ca_file: {ca}\n"
            ));
            yaml.push_str(&format!(
                r#"steps:
  - kind: preflight
  - kind: backup
  - kind: restore_encrypted
  - kind: verify
    full: true
  - kind: cutover
    strategy: manual
  - kind: delete_source
    confirm: {source}
"#,
                source = p.source
            ));
        }
        None => yaml.push_str(
            "steps:\n  - kind: preflight\n  - kind: backup\n  - kind: restore_encrypted\n",
        ),
    }
    yaml
}

pub(crate) fn write_token(env: &Env) {
    let dir = env.path().join("secrets");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("aws.token"), TOKEN).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(
        dir.join("aws.token"),
        std::fs::Permissions::from_mode(0o600),
    )
    .unwrap();
}

/// The local data plane: the sandbox's plain `orders` with `keys` keys, and a TLS + AUTH copy of it
/// (`orders-enc`, made by a sandbox run with the test token) that stands in for the restored target:
/// moto restores nothing into redis. Returns (source port, target port, CA file).
pub(crate) fn local_data_plane(env: &Env, keys: u64) -> (u16, u16, String) {
    env.sandbox_with_source(keys);
    let plan = format!(
        r#"version: 1
name: local-data-plane
provider: sandbox
source:
  replication_group_id: {SOURCE}
target:
  replication_group_id: {TARGET}
  kms_key_id: alias/orders
  auth_token: {{ file: {} }}
steps:
  - kind: preflight
  - kind: backup
  - kind: restore_encrypted
"#,
        env.path().join("secrets").join("aws.token").display()
    );
    let path = env.write_plan("local.yaml", &plan);
    env.ok(&["run", path.to_str().unwrap(), "--yes"]);
    let status = env.sandbox_status();
    (
        Env::primary_port(&status, SOURCE),
        Env::primary_port(&status, TARGET),
        status["ca_file"].as_str().unwrap().to_string(),
    )
}

/// `local_data_plane` for clusters: a plain sandbox cluster `orders` of `shards` primaries with `keys`
/// keys, and a TLS + AUTH cluster copy of it of `target_shards` primaries (`orders-enc`, restored by a
/// sandbox run with the test token). Returns the ports of their configuration endpoints and the CA file.
pub(crate) fn local_cluster_data_plane(
    env: &Env,
    keys: u64,
    shards: u32,
    target_shards: u32,
) -> (u16, u16, String) {
    let (shards, keys) = (shards.to_string(), keys.to_string());
    env.ok(&[
        "sandbox", "up", "--group", SOURCE, "--shards", &shards, "--keys", &keys,
    ]);
    env.ok(&["sandbox", "kms", "create", "orders"]);
    let plan = format!(
        r#"version: 1
name: local-data-plane
provider: sandbox
source:
  replication_group_id: {SOURCE}
target:
  replication_group_id: {TARGET}
  kms_key_id: alias/orders
  num_node_groups: {target_shards}
  auth_token: {{ file: {} }}
steps:
  - kind: preflight
  - kind: backup
  - kind: restore_encrypted
"#,
        env.path().join("secrets").join("aws.token").display()
    );
    let path = env.write_plan("local.yaml", &plan);
    env.ok(&["run", path.to_str().unwrap(), "--yes"]);
    let status = env.sandbox_status();
    let port = |id: &str| {
        let g = Env::group(&status, id).unwrap_or_else(|| panic!("{id} in {status}"));
        g["configuration_endpoint"]["port"]
            .as_u64()
            .expect("configuration endpoint") as u16
    };
    (
        port(SOURCE),
        port(TARGET),
        status["ca_file"].as_str().unwrap().to_string(),
    )
}

pub(crate) fn assert_no_token(env: &Env, plan_name: &str, runs: &[&Run]) {
    let state_dir = env.state_dir().join(plan_name);
    let mut texts: Vec<String> = runs.iter().map(|r| r.all_output()).collect();
    for f in ["state.json", "events.jsonl"] {
        if let Ok(t) = std::fs::read_to_string(state_dir.join(f)) {
            texts.push(t);
        }
    }
    for t in texts {
        assert!(!t.contains(TOKEN), "the AUTH token leaked: {t}");
    }
}
