//! `provider: aws` against a moto server (`scripts/test.sh` starts one and exports
//! `ECMIGRATE_TEST_MOTO_URL`). The real binary talks to moto through `AWS_ENDPOINT_URL`; the data plane is
//! local redis-server processes of the embedded sandbox (plain source, TLS + AUTH target) reached through
//! `data_endpoint` / `tls_ca_file`, as an operator reaches ElastiCache through a tunnel.
//!
//! moto is shared by every test, so each test uses its own ids. Known moto gaps are worked around here,
//! never in the product:
//! - the member clusters of a replication group are not in DescribeCacheClusters, so the engine version,
//!   subnet group and the like are unknown: each seeded group gets a stand-alone cache cluster named like
//!   its first member;
//! - `NumCacheClusters=2` yields one member unless `ReplicasPerNodeGroup` is also given (seeding only);
//! - deleted groups stay `deleting` forever; FinalSnapshotIdentifier is ignored; nothing is validated;
//! - unimplemented calls answer HTML the SDK retries, so tests that expect errors set AWS_MAX_ATTEMPTS=1.

use std::sync::atomic::{AtomicU32, Ordering};

use aws_sdk_elasticache::config::{BehaviorVersion, Credentials, Region};

use crate::harness::{Env, Run, SOURCE, TARGET, block_on};

/// A valid AUTH token the tests know, so the TLS target the sandbox starts and the plan agree.
const TOKEN: &str = "Moto-test-token-0123456789-abcdefghijklmnopqrstuvwxyz-ABCDEFGHIJ";

/// The moto URL, or `None` (with a notice) when it is not running locally. Under CI it must be there.
fn moto_url() -> Option<String> {
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
fn unique(prefix: &str) -> String {
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

struct Moto {
    url: String,
    ec: aws_sdk_elasticache::Client,
    kms: aws_sdk_kms::Client,
    secrets: aws_sdk_secretsmanager::Client,
}

impl Moto {
    fn new(url: &str) -> Moto {
        let creds = Credentials::new("testing", "testing", None, None, "test");
        let ec = aws_sdk_elasticache::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .endpoint_url(url)
            .region(Region::new("us-east-1"))
            .credentials_provider(creds.clone())
            .build();
        let kms = aws_sdk_kms::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .endpoint_url(url)
            .region(aws_sdk_kms::config::Region::new("us-east-1"))
            .credentials_provider(creds.clone())
            .build();
        let secrets = aws_sdk_secretsmanager::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .endpoint_url(url)
            .region(aws_sdk_secretsmanager::config::Region::new("us-east-1"))
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
    fn configure(&self, env: &mut Env, retries: bool) {
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
    fn seed_group(&self, id: &str, engine_version: &str, subnet_group: Option<&str>) {
        self.seed_group_shaped(id, engine_version, subnet_group, "cache.t3.micro", false);
    }

    /// As `seed_group`, with a node type and optionally at-rest encryption already on.
    fn seed_group_shaped(
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

    /// A symmetric KMS key with `alias/NAME`; returns its ARN.
    fn seed_key(&self, alias: &str) -> String {
        self.seed_key_of(
            alias,
            aws_sdk_kms::types::KeySpec::SymmetricDefault,
            aws_sdk_kms::types::KeyUsageType::EncryptDecrypt,
        )
    }

    /// A KMS key of the given spec and usage with `alias/NAME`; returns its ARN.
    fn seed_key_of(
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
    fn disable_key(&self, arn: &str) {
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
    fn seed_secret(&self, name: &str, value: &str) {
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

    fn secret(&self, name: &str) -> Option<String> {
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

    fn group(&self, id: &str) -> Option<aws_sdk_elasticache::types::ReplicationGroup> {
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
    fn resources_of(&self, marker: &str) -> Vec<String> {
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

    fn snapshots_of(&self, group: &str) -> Vec<aws_sdk_elasticache::types::Snapshot> {
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

/// The AWS operations moto's recorder saw in requests that mention `marker` (ids are unique per test),
/// from line `from` of the recording on. ElastiCache speaks the query protocol (`Action=` in the body);
/// KMS and Secrets Manager name the operation in `X-Amz-Target`.
fn recorded_operations(marker: &str, from: usize) -> Vec<String> {
    use base64::Engine;
    let path = recording_path();
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let mut operations = Vec::new();
    for line in text.lines().skip(from) {
        let Ok(r) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        let raw = r["body"].as_str().unwrap_or("");
        let body = if r["body_encoded"] == true {
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(raw)
                .unwrap_or_default();
            String::from_utf8_lossy(&bytes).into_owned()
        } else {
            raw.to_string()
        };
        if !body.contains(marker) && !r["url"].as_str().unwrap_or("").contains(marker) {
            continue;
        }
        let action = body
            .split('&')
            .find_map(|kv| kv.strip_prefix("Action="))
            .map(str::to_string);
        let target = r["headers"]
            .as_object()
            .and_then(|h| {
                h.iter()
                    .find(|(k, _)| k.eq_ignore_ascii_case("x-amz-target"))
            })
            .and_then(|(_, v)| v.as_str())
            .and_then(|t| t.rsplit('.').next())
            .map(str::to_string);
        operations.extend(action.or(target));
    }
    operations
}

fn recording_path() -> String {
    std::env::var("ECMIGRATE_TEST_MOTO_RECORDING")
        .expect("ECMIGRATE_TEST_MOTO_RECORDING: scripts/test.sh starts moto with its recorder on")
}

fn recording_len() -> usize {
    std::fs::read_to_string(recording_path())
        .map(|t| t.lines().count())
        .unwrap_or(0)
}

/// Operations that change something (AWS names them with these verbs).
fn is_mutating(operation: &str) -> bool {
    const VERBS: [&str; 14] = [
        "Create", "Delete", "Modify", "Put", "Update", "Disable", "Enable", "Add", "Remove",
        "Reboot", "Increase", "Decrease", "Copy", "Tag",
    ];
    VERBS.iter().any(|v| operation.starts_with(v))
}

struct AwsPlan<'a> {
    name: &'a str,
    source: &'a str,
    target: &'a str,
    kms_alias: &'a str,
    /// (source, target, CA file) on the local data plane; `None` = no data steps.
    data: Option<(u16, u16, String)>,
}

fn aws_plan(env: &Env, p: &AwsPlan<'_>) -> String {
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

fn write_token(env: &Env) {
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
fn local_data_plane(env: &Env, keys: u64) -> (u16, u16, String) {
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

fn assert_no_token(env: &Env, plan_name: &str, runs: &[&Run]) {
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

#[test]
fn aws_full_plan_against_moto_creates_an_encrypted_group_and_deletes_the_source() {
    let Some(url) = moto_url() else { return };
    let moto = Moto::new(&url);
    let mut env = Env::new();
    moto.configure(&mut env, true);
    write_token(&env);
    let data = local_data_plane(&env, 300);

    let source = unique("src");
    let target = format!("{source}-enc");
    let alias = unique("key");
    moto.seed_group(&source, "7.0.7", Some("subnets-a"));
    let key_arn = moto.seed_key(&alias);
    let plan = env.write_plan(
        "aws.yaml",
        &aws_plan(
            &env,
            &AwsPlan {
                name: "aws-full",
                source: &source,
                target: &target,
                kms_alias: &alias,
                data: Some(data),
            },
        ),
    );

    let recorded_before = recording_len();
    let run = env.run(&["run", plan.to_str().unwrap(), "--yes"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.stdout.contains("CreateReplicationGroup"), "{run:?}");
    // Exactly the mutations a migration needs, each once.
    let mut mutating: Vec<String> = recorded_operations(&source, recorded_before)
        .into_iter()
        .filter(|o| is_mutating(o))
        .collect();
    mutating.sort();
    assert_eq!(
        mutating,
        [
            "CreateReplicationGroup",
            "CreateSnapshot",
            "CreateSnapshot",
            "DeleteReplicationGroup"
        ],
        "the recorder saw other mutations"
    );

    let g = moto.group(&target).expect("target group in moto");
    assert_eq!(g.status(), Some("available"));
    assert_eq!(g.at_rest_encryption_enabled(), Some(true));
    assert_eq!(g.transit_encryption_enabled(), Some(true));
    assert_eq!(g.auth_token_enabled(), Some(true));
    assert_eq!(g.kms_key_id(), Some(key_arn.as_str()));
    assert_eq!(
        g.transit_encryption_mode().map(|m| m.as_str()),
        Some("required")
    );
    // The copied settings, as far as moto reports them.
    assert_eq!(g.cache_node_type(), Some("cache.t3.micro"));
    // moto gap: deleted groups stay `deleting` forever.
    match moto.group(&source) {
        None => {}
        Some(s) => assert_eq!(s.status(), Some("deleting")),
    }
    // Both snapshots of the source (pre-migration and final) are encrypted with the target's key.
    let snaps = moto.snapshots_of(&source);
    assert_eq!(snaps.len(), 2, "{snaps:?}");
    assert!(
        snaps
            .iter()
            .all(|s| s.kms_key_id() == Some(key_arn.as_str())),
        "{snaps:?}"
    );
    assert_no_token(&env, "aws-full", &[&run]);

    let status = env.ok(&["status", plan.to_str().unwrap(), "--output", "json"]);
    let status: serde_json::Value = serde_json::from_str(&status.stdout).unwrap();
    assert_eq!(status["state"], "done", "{status}");
    // verify compared every key of the local source with the TLS + AUTH target, through the tunnels.
    let verify = status["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["kind"] == "verify")
        .expect("verify step");
    assert_eq!(verify["status"], "done", "{status}");
    assert_eq!(verify["outputs"]["keys_compared"], 300, "{status}");
}

#[test]
fn aws_audit_lists_groups_with_the_contract_fields_and_exits_1() {
    let Some(url) = moto_url() else { return };
    let moto = Moto::new(&url);
    let mut env = Env::new();
    moto.configure(&mut env, true);
    let id = unique("audit");
    moto.seed_group(&id, "7.0.7", Some("subnets-a"));

    let run = env.run(&["audit", "--provider", "aws", "--output", "json"]);
    assert_eq!(run.code, 1, "{run:?}");
    let json: serde_json::Value = serde_json::from_str(&run.stdout).expect("audit json");
    let g = json["groups"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["replication_group_id"] == id.as_str())
        .unwrap_or_else(|| panic!("{id} not audited: {json}"));
    for field in [
        "replication_group_id",
        "status",
        "engine_version",
        "at_rest_encryption_enabled",
        "transit_encryption_enabled",
        "transit_encryption_mode",
        "auth_token_enabled",
        "eligible",
        "recommended_path",
    ] {
        assert!(g.get(field).is_some(), "{field} missing: {g}");
    }
    assert_eq!(g["status"], "available");
    assert_eq!(g["engine_version"], "7.0.7");
    assert_eq!(g["at_rest_encryption_enabled"], false);
    assert_eq!(g["eligible"], true);
    assert_eq!(g["recommended_path"], "recreate");

    let text = env.run(&["audit", "--provider", "aws"]);
    assert_eq!(text.code, 1, "{text:?}");
    assert!(text.stdout.contains(&id), "{text:?}");
}

#[test]
fn aws_dry_run_makes_no_mutating_call() {
    let Some(url) = moto_url() else { return };
    let moto = Moto::new(&url);
    let mut env = Env::new();
    moto.configure(&mut env, false);
    write_token(&env);
    let source = unique("dry");
    let target = format!("{source}-enc");
    let alias = unique("drykey");
    moto.seed_group(&source, "7.0.7", Some("subnets-a"));
    moto.seed_key(&alias);
    let plan = env.write_plan(
        "dry.yaml",
        &aws_plan(
            &env,
            &AwsPlan {
                name: "aws-dry",
                source: &source,
                target: &target,
                kms_alias: &alias,
                data: None,
            },
        ),
    );
    let before = moto.resources_of(&source);
    assert_eq!(before, vec![format!("group {source} available")]);
    let recorded_before = recording_len();

    let run = env.run(&["run", plan.to_str().unwrap(), "--dry-run"]);
    assert_eq!(run.code, 0, "{run:?}");
    // Count what the rehearsal sent: reads of the source, and not one mutating call.
    let operations = recorded_operations(&source, recorded_before);
    assert!(
        operations.iter().any(|o| o == "DescribeReplicationGroups"),
        "the recorder saw no read: {operations:?}"
    );
    let mutating: Vec<&String> = operations.iter().filter(|o| is_mutating(o)).collect();
    assert_eq!(
        mutating.len(),
        0,
        "mutating calls in a dry run: {mutating:?} (all: {operations:?})"
    );
    assert!(run.stdout.contains("CreateSnapshot"), "{run:?}");
    assert!(run.stdout.contains("CreateReplicationGroup"), "{run:?}");
    assert_eq!(moto.resources_of(&source), before, "a dry run changed moto");
    assert_no_token(&env, "aws-dry", &[&run]);
}

/// Run a plan expected to be refused by preflight: exit 3, the check named, nothing created in moto.
/// One preflight refusal against moto: a fresh env with a token, a unique source id (target `<source>-enc`)
/// and a unique key alias; each test seeds moto for the fault it checks.
struct RefusalCase {
    moto: Moto,
    env: Env,
    source: String,
    target: String,
    alias: String,
}

impl RefusalCase {
    /// `None` when no moto server is configured (outside CI only).
    fn new(prefix: &str) -> Option<RefusalCase> {
        let moto = Moto::new(&moto_url()?);
        let mut env = Env::new();
        moto.configure(&mut env, false);
        write_token(&env);
        let source = unique(prefix);
        let target = format!("{source}-enc");
        Some(RefusalCase {
            moto,
            env,
            source,
            target,
            alias: unique("k"),
        })
    }

    fn plan_text(&self) -> String {
        aws_plan(
            &self.env,
            &AwsPlan {
                name: "aws-refused",
                source: &self.source,
                target: &self.target,
                kms_alias: &self.alias,
                data: None,
            },
        )
    }

    /// Run `plan_text`: exit 3 naming `check` with a hint, moto unchanged, no target, no token shown.
    fn assert_refused(&self, plan_text: &str, check: &str) -> Run {
        let plan = self.env.write_plan("refused.yaml", plan_text);
        let before = self.moto.resources_of(&self.source);
        let run = self.env.run(&["run", plan.to_str().unwrap(), "--yes"]);
        assert_eq!(run.code, 3, "{run:?}");
        assert!(
            run.stderr.contains(&format!("[{check}]")),
            "expected a `{check}` refusal: {run:?}"
        );
        assert!(run.stderr.contains("hint:"), "{run:?}");
        assert_eq!(
            self.moto.resources_of(&self.source),
            before,
            "a refused run changed moto"
        );
        assert!(
            self.moto.group(&self.target).is_none()
                || before.iter().any(|r| r.contains(&self.target)),
            "target created"
        );
        assert_no_token(&self.env, "aws-refused", &[&run]);
        run
    }
}

#[test]
fn aws_preflight_refuses_a_missing_source() {
    let Some(c) = RefusalCase::new("missing") else {
        return;
    };
    c.moto.seed_key(&c.alias);
    c.assert_refused(&c.plan_text(), "source_exists");
}

#[test]
fn aws_preflight_refuses_a_taken_target_id() {
    let Some(c) = RefusalCase::new("taken") else {
        return;
    };
    c.moto.seed_group(&c.source, "7.0.7", Some("subnets-a"));
    c.moto.seed_group(&c.target, "7.0.7", Some("subnets-a"));
    c.moto.seed_key(&c.alias);
    c.assert_refused(&c.plan_text(), "target_id_free");
}

#[test]
fn aws_preflight_refuses_a_disabled_kms_key() {
    let Some(c) = RefusalCase::new("kmsoff") else {
        return;
    };
    c.moto.seed_group(&c.source, "7.0.7", Some("subnets-a"));
    let arn = c.moto.seed_key(&c.alias);
    c.moto.disable_key(&arn);
    c.assert_refused(&c.plan_text(), "kms_key");
}

#[test]
fn aws_preflight_refuses_a_missing_kms_key() {
    // The alias is never created.
    let Some(c) = RefusalCase::new("kmsnone") else {
        return;
    };
    c.moto.seed_group(&c.source, "7.0.7", Some("subnets-a"));
    c.assert_refused(&c.plan_text(), "kms_key");
}

#[test]
fn aws_preflight_refuses_an_engine_too_old_for_encryption() {
    let Some(c) = RefusalCase::new("old") else {
        return;
    };
    c.moto.seed_group(&c.source, "3.2.4", Some("subnets-a"));
    c.moto.seed_key(&c.alias);
    c.assert_refused(&c.plan_text(), "engine_version");
}

#[test]
fn aws_preflight_refuses_a_group_without_a_cache_subnet_group() {
    let Some(c) = RefusalCase::new("nosubnet") else {
        return;
    };
    c.moto.seed_group(&c.source, "7.0.7", None);
    c.moto.seed_key(&c.alias);
    c.assert_refused(&c.plan_text(), "cache_subnet_group");
}

#[test]
fn aws_preflight_refuses_a_plan_without_a_kms_key() {
    // Without a customer managed key the snapshots of the unencrypted source would be unencrypted.
    let Some(c) = RefusalCase::new("nokms") else {
        return;
    };
    c.moto.seed_group(&c.source, "7.0.7", Some("subnets-a"));
    c.moto.seed_key(&c.alias);
    let text = c.plan_text();
    let without_key = text.replace(&format!("  kms_key_id: alias/{}\n", c.alias), "");
    assert_ne!(text, without_key, "the plan template changed: {text}");
    let run = c.assert_refused(&without_key, "kms_key");
    assert!(run.stderr.contains("no KMS key to encrypt"), "{run:?}");
}

#[test]
fn aws_preflight_refuses_a_source_with_at_rest_encryption_and_points_at_in_place_transit() {
    let Some(c) = RefusalCase::new("atrest") else {
        return;
    };
    c.moto.seed_group_shaped(
        &c.source,
        "7.0.7",
        Some("subnets-a"),
        "cache.t3.micro",
        true,
    );
    c.moto.seed_key(&c.alias);
    let run = c.assert_refused(&c.plan_text(), "source_unencrypted");
    assert!(run.stderr.contains("in place"), "{run:?}");
}

#[test]
fn aws_preflight_refuses_a_previous_generation_node_type() {
    let Some(c) = RefusalCase::new("oldnode") else {
        return;
    };
    c.moto.seed_group_shaped(
        &c.source,
        "7.0.7",
        Some("subnets-a"),
        "cache.m1.small",
        false,
    );
    c.moto.seed_key(&c.alias);
    c.assert_refused(&c.plan_text(), "node_type");
}

#[test]
fn aws_run_killed_after_the_create_call_resumes_without_creating_anything_twice() {
    let Some(url) = moto_url() else { return };
    let moto = Moto::new(&url);
    let mut env = Env::new();
    moto.configure(&mut env, true);
    write_token(&env);
    // Enough keys that verify (after restore) takes a moment, so the kill lands before the run ends.
    let data = local_data_plane(&env, 5000);
    let source = unique("kill");
    let target = format!("{source}-enc");
    let alias = unique("key");
    moto.seed_group(&source, "7.0.7", Some("subnets-a"));
    moto.seed_key(&alias);
    let plan = env.write_plan(
        "aws.yaml",
        &aws_plan(
            &env,
            &AwsPlan {
                name: "aws-kill",
                source: &source,
                target: &target,
                kms_alias: &alias,
                data: Some(data),
            },
        ),
    );
    let recorded_before = recording_len();
    let events = env.state_dir().join("aws-kill").join("events.jsonl");
    let mut child = env
        .command(&["run", plan.to_str().unwrap(), "--yes"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let started = std::time::Instant::now();
    loop {
        let text = std::fs::read_to_string(&events).unwrap_or_default();
        if text.contains("\"operation\":\"CreateReplicationGroup\"") {
            break;
        }
        assert!(
            started.elapsed() < std::time::Duration::from_secs(60),
            "restore never started: {text}"
        );
        assert!(
            child.try_wait().unwrap().is_none(),
            "the run ended before restore: {text}"
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let mid = env.ok(&["status", plan.to_str().unwrap(), "--output", "json"]);
    let mid: serde_json::Value = serde_json::from_str(&mid.stdout).unwrap();
    assert_ne!(
        mid["state"], "done",
        "the kill landed after the run finished: {mid}"
    );

    let resumed = env.run(&["run", plan.to_str().unwrap(), "--yes"]);
    assert_eq!(resumed.code, 0, "{resumed:?}");
    // The kill may land before the create request left (the resumed run then makes it) or after (the
    // resumed run finds the group): either way moto must see exactly one create.
    let mut mutating: Vec<String> = recorded_operations(&source, recorded_before)
        .into_iter()
        .filter(|o| is_mutating(o))
        .collect();
    mutating.sort();
    assert_eq!(
        mutating,
        [
            "CreateReplicationGroup",
            "CreateSnapshot",
            "CreateSnapshot",
            "DeleteReplicationGroup"
        ],
        "something was created twice across the kill"
    );
    assert_eq!(moto.snapshots_of(&source).len(), 2);
    assert_no_token(&env, "aws-kill", &[&resumed]);
}

/// `aws_plan` with the token in a Secrets Manager secret instead of a file.
fn with_secrets_manager(plan: &str, env: &Env, secret: &str, generate: bool) -> String {
    let file_store = format!(
        "auth_token: {{ file: {} }}",
        env.path().join("secrets").join("aws.token").display()
    );
    assert!(
        plan.contains(&file_store),
        "the plan template changed: {plan}"
    );
    plan.replace(
        &file_store,
        &format!("auth_token: {{ generate: {generate}, secrets_manager: {secret} }}"),
    )
}

#[test]
fn aws_token_from_secrets_manager_opens_the_target_and_only_its_reference_is_kept() {
    let Some(url) = moto_url() else { return };
    let moto = Moto::new(&url);
    let mut env = Env::new();
    moto.configure(&mut env, true);
    write_token(&env);
    let data = local_data_plane(&env, 200);
    let source = unique("smsrc");
    let target = format!("{source}-enc");
    let alias = unique("key");
    let secret = format!("ecmigrate/{source}");
    moto.seed_group(&source, "7.0.7", Some("subnets-a"));
    moto.seed_key(&alias);
    moto.seed_secret(&secret, TOKEN);
    let text = aws_plan(
        &env,
        &AwsPlan {
            name: "aws-sm",
            source: &source,
            target: &target,
            kms_alias: &alias,
            data: Some(data),
        },
    );
    let plan = env.write_plan(
        "aws.yaml",
        &with_secrets_manager(&text, &env, &secret, false),
    );
    // The file store is not used: take it away so a mistaken read would fail.
    std::fs::remove_file(env.path().join("secrets").join("aws.token")).unwrap();

    let run = env.run(&["run", plan.to_str().unwrap(), "--yes"]);
    assert_eq!(run.code, 0, "{run:?}");
    let state = std::fs::read_to_string(env.state_dir().join("aws-sm").join("state.json")).unwrap();
    assert!(
        state.contains(&format!("secretsmanager:{secret}")),
        "{state}"
    );
    assert_no_token(&env, "aws-sm", &[&run]);
    let status: serde_json::Value = serde_json::from_str(
        &env.ok(&["status", plan.to_str().unwrap(), "--output", "json"])
            .stdout,
    )
    .unwrap();
    let verify = status["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["kind"] == "verify")
        .unwrap();
    assert_eq!(verify["outputs"]["keys_compared"], 200, "{status}");
}

#[test]
fn aws_generated_token_is_stored_in_secrets_manager_before_the_group_is_created() {
    let Some(url) = moto_url() else { return };
    let moto = Moto::new(&url);
    let mut env = Env::new();
    moto.configure(&mut env, true);
    let source = unique("smgen");
    let target = format!("{source}-enc");
    let alias = unique("key");
    let secret = format!("ecmigrate/{source}");
    moto.seed_group(&source, "7.0.7", Some("subnets-a"));
    moto.seed_key(&alias);
    let text = aws_plan(
        &env,
        &AwsPlan {
            name: "aws-smgen",
            source: &source,
            target: &target,
            kms_alias: &alias,
            data: None,
        },
    );
    let plan = env.write_plan(
        "aws.yaml",
        &with_secrets_manager(&text, &env, &secret, true),
    );
    let recorded_before = recording_len();
    let run = env.run(&["run", plan.to_str().unwrap(), "--yes"]);
    assert_eq!(run.code, 0, "{run:?}");

    let token = moto
        .secret(&secret)
        .expect("the generated token is in Secrets Manager");
    ecmigrate::plan::rules::check_auth_token(&token).unwrap();
    assert!(
        !run.all_output().contains(&token),
        "the token leaked into the output"
    );
    let state =
        std::fs::read_to_string(env.state_dir().join("aws-smgen").join("state.json")).unwrap();
    assert!(!state.contains(&token) && state.contains(&format!("secretsmanager:{secret}")));
    // Stored first (PutSecretValue finds no secret, CreateSecret makes it), then the group.
    let operations: Vec<String> = recorded_operations(&source, recorded_before)
        .into_iter()
        .filter(|o| is_mutating(o))
        .collect();
    let stored = operations
        .iter()
        .position(|o| o == "CreateSecret")
        .expect("CreateSecret recorded");
    let created = operations
        .iter()
        .position(|o| o == "CreateReplicationGroup")
        .expect("create recorded");
    assert!(stored < created, "{operations:?}");
    assert_eq!(
        moto.group(&target).and_then(|g| g.auth_token_enabled()),
        Some(true)
    );
}

#[test]
fn aws_preflight_refuses_an_asymmetric_signing_key() {
    let Some(c) = RefusalCase::new("rsakey") else {
        return;
    };
    c.moto.seed_group(&c.source, "7.0.7", Some("subnets-a"));
    c.moto.seed_key_of(
        &c.alias,
        aws_sdk_kms::types::KeySpec::Rsa2048,
        aws_sdk_kms::types::KeyUsageType::SignVerify,
    );
    let run = c.assert_refused(&c.plan_text(), "kms_key");
    assert!(
        run.stderr.contains("RSA_2048") || run.stderr.contains("SIGN_VERIFY"),
        "{run:?}"
    );
}

#[test]
fn aws_preflight_refuses_a_token_that_breaks_the_auth_rules() {
    let Some(c) = RefusalCase::new("badtoken") else {
        return;
    };
    c.moto.seed_group(&c.source, "7.0.7", Some("subnets-a"));
    c.moto.seed_key(&c.alias);
    let bad = "short@token";
    std::fs::write(c.env.path().join("secrets").join("aws.token"), bad).unwrap();
    let run = c.assert_refused(&c.plan_text(), "auth_token");
    assert!(
        !run.all_output().contains(bad),
        "the bad token was echoed: {run:?}"
    );
}

/// A Route53 client on moto.
fn route53(url: &str) -> aws_sdk_route53::Client {
    aws_sdk_route53::Client::from_conf(
        aws_sdk_route53::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .endpoint_url(url)
            .region(aws_sdk_route53::config::Region::new("us-east-1"))
            .credentials_provider(Credentials::new("testing", "testing", None, None, "test"))
            .build(),
    )
}

/// `(type, value, ttl)` of the record `name` in `zone`.
fn dns_record(
    dns: &aws_sdk_route53::Client,
    zone: &str,
    name: &str,
) -> Option<(String, String, i64)> {
    block_on(async {
        let out = dns
            .list_resource_record_sets()
            .hosted_zone_id(zone)
            .send()
            .await
            .unwrap();
        out.resource_record_sets()
            .iter()
            .find(|r| r.name().trim_end_matches('.') == name)
            .map(|r| {
                (
                    r.r#type().as_str().to_string(),
                    r.resource_records()[0].value().to_string(),
                    r.ttl().unwrap_or(0),
                )
            })
    })
}

#[test]
fn aws_route53_cutover_points_the_record_at_the_new_primary_and_keeps_its_ttl() {
    use aws_sdk_route53::types::{
        Change, ChangeAction, ChangeBatch, ResourceRecord, ResourceRecordSet, RrType,
    };
    let Some(url) = moto_url() else { return };
    let moto = Moto::new(&url);
    let mut env = Env::new();
    moto.configure(&mut env, true);
    write_token(&env);
    let data = local_data_plane(&env, 100);

    let source = unique("r53");
    let target = format!("{source}-enc");
    let alias = unique("key");
    moto.seed_group(&source, "7.0.7", Some("subnets-a"));
    moto.seed_key(&alias);
    let source_endpoint = moto
        .group(&source)
        .and_then(|g| {
            g.node_groups().first().and_then(|n| {
                n.primary_endpoint()
                    .and_then(|e| e.address().map(str::to_string))
            })
        })
        .expect("the seeded group's primary endpoint");
    // The record clients resolve today: a CNAME to the source, with the operator's TTL.
    let dns = route53(&url);
    let zone_name = format!("{}.example.com", unique("zone"));
    let record = format!("orders.{zone_name}");
    let zone = block_on(async {
        let out = dns
            .create_hosted_zone()
            .name(&zone_name)
            .caller_reference(unique("ref"))
            .send()
            .await
            .expect("create hosted zone");
        out.hosted_zone().unwrap().id().to_string()
    });
    block_on(async {
        dns.change_resource_record_sets()
            .hosted_zone_id(&zone)
            .change_batch(
                ChangeBatch::builder()
                    .changes(
                        Change::builder()
                            .action(ChangeAction::Create)
                            .resource_record_set(
                                ResourceRecordSet::builder()
                                    .name(&record)
                                    .r#type(RrType::Cname)
                                    .ttl(45)
                                    .resource_records(
                                        ResourceRecord::builder()
                                            .value(&source_endpoint)
                                            .build()
                                            .unwrap(),
                                    )
                                    .build()
                                    .unwrap(),
                            )
                            .build()
                            .unwrap(),
                    )
                    .build()
                    .unwrap(),
            )
            .send()
            .await
            .expect("seed the CNAME");
    });
    let zone_id = zone.trim_start_matches("/hostedzone/").to_string();
    let text = aws_plan(
        &env,
        &AwsPlan {
            name: "aws-route53",
            source: &source,
            target: &target,
            kms_alias: &alias,
            data: Some(data),
        },
    )
    .replace(
        "    strategy: manual\n",
        &format!(
            "    strategy: route53\n    hosted_zone_id: {zone_id}\n    record_name: {record}\n    grace_seconds: 0\n"
        ),
    );
    let plan = env.write_plan("aws-route53.yaml", &text);

    let rehearsal = env.run(&["run", plan.to_str().unwrap(), "--dry-run"]);
    assert_eq!(rehearsal.code, 0, "{rehearsal:?}");
    assert!(
        rehearsal.stdout.contains("ChangeResourceRecordSets"),
        "{rehearsal:?}"
    );
    assert_eq!(
        dns_record(&dns, &zone, &record).map(|r| r.1),
        Some(source_endpoint.clone()),
        "the rehearsal changed the record"
    );

    let run = env.run(&["run", plan.to_str().unwrap(), "--yes"]);
    assert_eq!(run.code, 0, "{run:?}");
    let target_endpoint = moto
        .group(&target)
        .and_then(|g| {
            g.node_groups().first().and_then(|n| {
                n.primary_endpoint()
                    .and_then(|e| e.address().map(str::to_string))
            })
        })
        .expect("the target's primary endpoint");
    assert_ne!(target_endpoint, source_endpoint);
    let (kind, value, ttl) = dns_record(&dns, &zone, &record).expect("the record");
    assert_eq!(kind, "CNAME");
    assert_eq!(
        value, target_endpoint,
        "the record does not point at the new primary"
    );
    assert_eq!(ttl, 45, "the record's TTL was not kept");

    let status = env.ok(&["status", plan.to_str().unwrap(), "--output", "json"]);
    let status: serde_json::Value = serde_json::from_str(&status.stdout).unwrap();
    let cutover = Env::step(&status, "cutover");
    assert_eq!(cutover["outputs"]["switch"]["ttl_seconds"], 45, "{cutover}");
    assert!(cutover["outputs"]["write_pause_ms"].is_u64(), "{cutover}");
}
