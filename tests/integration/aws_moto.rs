//! `provider: aws` against a moto server (`moto.rs`): the scenarios every backend runs (`scenarios.rs`), and
//! what only AWS has — audit, the preflight checks of engine, subnet group, node type and key spec, Secrets
//! Manager, Route53. The real binary talks to moto through `AWS_ENDPOINT_URL`.

use crate::backend::{Backend, Calls, MotoBackend};
use crate::harness::{Env, Run};
use crate::moto::dns::{dns_record, route53, seed_cname};
use crate::moto::{
    AwsPlan, Moto, TOKEN, assert_no_token, aws_plan, is_mutating, local_data_plane, moto_url,
    recorded_operations, recording_len, unique, write_token,
};
use crate::scenarios::{self, scenarios_on};

scenarios_on!(MotoBackend);

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

/// One preflight refusal against moto: a fresh env with a token, and the moto backend's unique source id
/// (target `<source>-enc`) and key alias; each test seeds moto for the fault it checks.
struct RefusalCase {
    env: Env,
    backend: MotoBackend,
}

impl std::ops::Deref for RefusalCase {
    type Target = MotoBackend;
    fn deref(&self) -> &MotoBackend {
        &self.backend
    }
}

impl RefusalCase {
    /// `None` when no moto server is configured (outside CI only).
    fn new(prefix: &str) -> Option<RefusalCase> {
        let mut env = Env::new();
        let backend = MotoBackend::with_prefix(&mut env, Calls::Once, prefix)?;
        Some(RefusalCase { env, backend })
    }

    /// The plan without data steps.
    fn plan_text(&self) -> String {
        self.backend.plan(&self.env)
    }

    /// Run `plan_text`: exit 3 naming `check` with a hint, moto unchanged, no target, no token shown.
    fn assert_refused(&self, plan_text: &str, check: &str) -> Run {
        scenarios::assert_refused(&self.backend, &self.env, plan_text, check)
    }
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
    let file = c.env.path().join("secrets").join("aws.token");
    std::fs::write(&file, bad).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let run = c.assert_refused(&c.plan_text(), "auth_token");
    assert!(
        !run.all_output().contains(bad),
        "the bad token was echoed: {run:?}"
    );
}

#[test]
fn aws_route53_cutover_points_the_record_at_the_new_primary_and_keeps_its_ttl() {
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
    let (zone, record) = seed_cname(&dns, &source_endpoint, 45);
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
        rehearsal.stdout.contains("would point ") && rehearsal.stdout.contains(" (CNAME, TTL "),
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

/// A cluster-mode-enabled source (3 shards of a primary and a replica) into 2 encrypted shards: the
/// CreateReplicationGroup moto recorded asks for shards and replicas per shard with cluster mode and
/// automatic failover on (the API reference's rules), and the Route53 record ends up on the target's
/// configuration endpoint, the address a cluster client starts from. The data plane is a sandbox cluster
/// of 3 primaries and its encrypted 2-shard copy (moto restores no data).
#[test]
fn aws_cluster_source_restores_into_planned_shards_and_route53_points_at_the_configuration_endpoint()
 {
    let Some(url) = moto_url() else { return };
    let moto = Moto::new(&url);
    let mut env = Env::new();
    moto.configure(&mut env, true);
    write_token(&env);
    let data = crate::moto::local_cluster_data_plane(&env, 300, 3, 2);
    let source = unique("cme");
    let target = format!("{source}-enc");
    let alias = unique("key");
    moto.seed_cluster_group(&source, 3, 1);
    moto.seed_key(&alias);
    let config_endpoint = |id: &str| {
        moto.group(id)
            .and_then(|g| g.configuration_endpoint()?.address().map(str::to_string))
    };
    let source_endpoint = config_endpoint(&source).expect("moto's configuration endpoint");
    let dns = route53(&url);
    let (zone, record) = seed_cname(&dns, &source_endpoint, 30);
    let zone_id = zone.trim_start_matches("/hostedzone/");
    let text = aws_plan(
        &env,
        &AwsPlan {
            name: "aws-cluster",
            source: &source,
            target: &target,
            kms_alias: &alias,
            data: Some(data),
        },
    );
    let text = text
        .replace(
            "  transit_encryption_mode: required\n",
            "  transit_encryption_mode: required\n  num_node_groups: 2\n",
        )
        .replace(
            "    strategy: manual\n",
            &format!(
                "    strategy: route53\n    hosted_zone_id: {zone_id}\n    record_name: {record}\n    grace_seconds: 0\n    after_switch: env | grep ^ECMIGRATE_ > switch.env\n"
            ),
        );
    assert!(
        text.contains("num_node_groups: 2") && text.contains("after_switch"),
        "{text}"
    );
    let plan = env.write_plan("aws-cluster.yaml", &text);
    let recorded_before = recording_len();
    let run = env.run(&["run", plan.to_str().unwrap(), "--yes"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert_no_token(&env, "aws-cluster", &[&run]);

    let creates = crate::moto::recorded_params(&target, "CreateReplicationGroup", recorded_before);
    assert_eq!(creates.len(), 1, "{creates:?}");
    let sent = |k: &str| creates[0].get(k).map(String::as_str);
    assert_eq!(sent("ReplicationGroupId"), Some(target.as_str()));
    assert_eq!(sent("NumNodeGroups"), Some("2"), "{creates:?}");
    assert_eq!(sent("ReplicasPerNodeGroup"), Some("1"), "{creates:?}");
    assert_eq!(sent("ClusterMode"), Some("enabled"), "{creates:?}");
    assert_eq!(
        sent("AutomaticFailoverEnabled"),
        Some("true"),
        "{creates:?}"
    );
    assert_eq!(sent("NumCacheClusters"), None, "{creates:?}");
    assert_eq!(sent("AtRestEncryptionEnabled"), Some("true"));
    assert_eq!(sent("TransitEncryptionEnabled"), Some("true"));
    assert_eq!(sent("AuthToken"), Some("<redacted>"), "no AuthToken sent");
    assert!(
        sent("SnapshotName").is_some_and(|n| n.contains(&source)),
        "{creates:?}"
    );
    assert!(
        sent("KmsKeyId").is_some_and(|k| k.contains(&alias) || k.starts_with("arn:")),
        "{creates:?}"
    );
    let made = moto.group(&target).expect("the target");
    assert_eq!(made.cluster_enabled(), Some(true));
    assert_eq!(made.node_groups().len(), 2);
    assert!(
        made.node_groups()
            .iter()
            .all(|ng| ng.node_group_members().len() == 2)
    );

    let target_endpoint = config_endpoint(&target).expect("the target's configuration endpoint");
    assert_ne!(target_endpoint, source_endpoint);
    let (kind, value, ttl) = dns_record(&dns, &zone, &record).expect("the record");
    assert_eq!((kind.as_str(), ttl), ("CNAME", 30));
    assert_eq!(
        value, target_endpoint,
        "the record is not the configuration endpoint"
    );
    // The commands (`command` strategy, hooks) see the same endpoints: configuration endpoints, no reader.
    let seen = std::fs::read_to_string(env.path().join("switch.env")).unwrap();
    for (k, v) in [
        ("ECMIGRATE_NEW_ENDPOINT", &target_endpoint),
        ("ECMIGRATE_NEW_READER_ENDPOINT", &target_endpoint),
        ("ECMIGRATE_OLD_ENDPOINT", &source_endpoint),
    ] {
        assert!(seen.contains(&format!("{k}={v}\n")), "{k}: {seen}");
    }
    assert!(
        !seen.contains(TOKEN),
        "the token reached the hook's environment"
    );
    let status = env.ok(&["status", plan.to_str().unwrap(), "--output", "json"]);
    let status: serde_json::Value = serde_json::from_str(&status.stdout).unwrap();
    let switch = &Env::step(&status, "cutover")["outputs"]["switch"];
    assert_eq!(
        switch["endpoint_kind"], "configuration endpoint",
        "{switch}"
    );
    let restore = &Env::step(&status, "restore_encrypted")["outputs"];
    assert_eq!(restore["cluster_enabled"], true, "{restore}");
    assert_eq!(restore["num_node_groups"], 2, "{restore}");
}

/// A shape CreateReplicationGroup refuses, with each field in its own range (100 shards, 5 replicas: 600
/// nodes, past the 500 a cluster may hold): refused by preflight (the rehearsal too), naming the rule,
/// before anything is changed: no snapshot, no create.
#[test]
fn aws_a_cluster_target_of_more_nodes_than_a_cluster_holds_is_refused_before_the_create() {
    let Some(c) = RefusalCase::new("cmebig") else {
        return;
    };
    c.moto.seed_cluster_group(&c.source, 3, 1);
    c.moto.seed_key(&c.alias);
    let text = c.plan_text().replace(
        "  transit_encryption_mode: required\n",
        "  transit_encryption_mode: required\n  num_node_groups: 100\n  replicas_per_node_group: 5\n",
    );
    assert!(text.contains("num_node_groups: 100"), "{text}");
    let plan = c.env.write_plan("big.yaml", &text);
    let before = recording_len();
    for flag in ["--dry-run", "--yes"] {
        let run = c.env.run(&["run", plan.to_str().unwrap(), flag]);
        assert_eq!(run.code, 3, "{run:?}");
        assert!(run.stderr.contains("[target_shape]"), "{run:?}");
        assert!(
            run.stderr.contains("100 shards of 6 nodes make 600 nodes")
                && run.stderr.contains("at most 500"),
            "{run:?}"
        );
    }
    let operations = recorded_operations(&c.source, before);
    assert!(
        !operations
            .iter()
            .any(|o| o == "CreateReplicationGroup" || o == "CreateSnapshot"),
        "{operations:?}"
    );
    assert!(c.moto.group(&c.target).is_none(), "a target was created");
}
