//! `ecmigrate iam-policy`: the policy a plan prints allows exactly the AWS operations its run sends. A
//! full aws plan (route53 cutover, token in Secrets Manager, delete_source) runs on moto; every request the
//! run's process sent (found by the app id it puts in its user agent) is an action the policy calls, and the
//! policy calls nothing the run did not send. What the policy allows beyond that is only what AWS checks
//! on the caller's behalf and moto cannot show (tags on create, the KMS grant ElastiCache makes).

use std::collections::BTreeSet;

use crate::harness::Env;
use crate::moto::dns::{route53, seed_cname};
use crate::moto::{
    AwsPlan, Moto, TOKEN, aws_plan, local_data_plane, moto_url, recorded_actions_of_app,
    recording_len, unique, write_token,
};

/// The actions of `iam-policy --output json` with `called` as given.
fn actions(policy: &serde_json::Value, called: bool) -> BTreeSet<String> {
    policy["actions"]
        .as_array()
        .expect("actions")
        .iter()
        .filter(|a| a["called"] == called)
        .map(|a| a["action"].as_str().unwrap().to_string())
        .collect()
}

/// Every action the policy document's statements allow.
fn document_actions(policy: &serde_json::Value) -> BTreeSet<String> {
    policy["policy"]["Statement"]
        .as_array()
        .expect("statements")
        .iter()
        .flat_map(|s| s["Action"].as_array().unwrap().iter())
        .map(|a| a.as_str().unwrap().to_string())
        .collect()
}

#[test]
fn iam_policy_of_a_route53_secrets_manager_plan_allows_exactly_what_its_moto_run_sends() {
    let Some(url) = moto_url() else { return };
    let moto = Moto::new(&url);
    let mut env = Env::new();
    moto.configure(&mut env, true);
    write_token(&env);
    let data = local_data_plane(&env, 50);

    let source = unique("iam");
    let target = format!("{source}-enc");
    let alias = unique("key");
    let secret = format!("ecmigrate/{source}");
    moto.seed_group(&source, "7.0.7", Some("subnets-a"));
    moto.seed_key(&alias);
    moto.seed_secret(&secret, TOKEN);
    let source_endpoint = moto
        .group(&source)
        .and_then(|g| {
            let ng = g.node_groups().first()?.clone();
            ng.primary_endpoint()?.address().map(str::to_string)
        })
        .expect("the seeded group's primary endpoint");
    let (zone, record) = seed_cname(&route53(&url), &source_endpoint, 30);
    let zone_id = zone.trim_start_matches("/hostedzone/").to_string();
    let file_store = format!(
        "auth_token: {{ file: {} }}",
        env.path().join("secrets").join("aws.token").display()
    );
    let text = aws_plan(
        &env,
        &AwsPlan {
            name: "aws-iam",
            source: &source,
            target: &target,
            kms_alias: &alias,
            data: Some(data),
        },
    );
    assert!(
        text.contains(&file_store) && text.contains("    strategy: manual\n"),
        "{text}"
    );
    let text = text
        .replace(&file_store, &format!("auth_token: {{ secrets_manager: {secret} }}"))
        .replace(
            "    strategy: manual\n",
            &format!(
                "    strategy: route53\n    hosted_zone_id: {zone_id}\n    record_name: {record}\n    grace_seconds: 0\n"
            ),
        );
    let plan = env.write_plan("aws-iam.yaml", &text);

    // The policy needs no cloud: printed before the run, from the plan alone.
    let printed = env.ok(&["iam-policy", plan.to_str().unwrap(), "--output", "json"]);
    let policy: serde_json::Value = serde_json::from_str(&printed.stdout).expect("policy json");
    assert_eq!(policy["region"]["value"], "us-east-1", "{policy}");
    assert_eq!(policy["region"]["source"], "aws.region");
    assert_eq!(policy["account"]["source"], "placeholder");

    // Every request of the run's process carries this app id in its user agent.
    let app = unique("iamrun");
    env.set_env("AWS_SDK_UA_APP_ID", &app);
    let before = recording_len();
    let run = env.run(&["run", plan.to_str().unwrap(), "--yes"]);
    assert_eq!(run.code, 0, "{run:?}");
    let recorded = recorded_actions_of_app(&app, before);

    let called = actions(&policy, true);
    let missing: Vec<_> = recorded.difference(&called).collect();
    let unused: Vec<_> = called.difference(&recorded).collect();
    assert!(
        missing.is_empty() && unused.is_empty(),
        "recorded but not in the policy: {missing:?}; in the policy but never sent: {unused:?}"
    );
    for service in ["elasticache", "kms", "secretsmanager", "route53"] {
        assert!(
            recorded
                .iter()
                .any(|a| a.starts_with(&format!("{service}:"))),
            "the run sent nothing to {service}: {recorded:?}"
        );
    }
    // Beyond the calls: only what AWS authorizes on the caller's behalf, which moto does not model.
    let on_behalf = actions(&policy, false);
    let expected: BTreeSet<String> = [
        "elasticache:AddTagsToResource",
        "kms:CreateGrant",
        "kms:Decrypt",
        "kms:GenerateDataKey",
    ]
    .map(String::from)
    .into();
    assert_eq!(on_behalf, expected, "{policy}");
    let all: BTreeSet<String> = called.union(&on_behalf).cloned().collect();
    assert_eq!(document_actions(&policy), all, "{policy}");
}

#[test]
fn iam_policy_prints_a_pastable_document_says_what_is_a_placeholder_and_refuses_a_sandbox_plan() {
    let env = Env::new();
    let aws = "version: 1\nname: orders\nprovider: aws\nsource:\n  replication_group_id: orders\ntarget:\n  replication_group_id: orders-enc\n  kms_key_id: alias/orders\n  auth_token: { file: orders.token }\nsteps:\n  - kind: preflight\n  - kind: backup\n  - kind: restore_encrypted\n";
    let plan = env.write_plan("aws.yaml", aws);
    let run = env.ok(&[
        "iam-policy",
        plan.to_str().unwrap(),
        "--region",
        "eu-west-1",
    ]);
    let document: serde_json::Value =
        serde_json::from_str(&run.stdout).expect("the document alone on stdout");
    assert_eq!(document["Version"], "2012-10-17");
    assert!(
        document["Statement"]
            .as_array()
            .is_some_and(|s| !s.is_empty()),
        "{document}"
    );
    assert!(
        run.stdout
            .contains("arn:aws:elasticache:eu-west-1:*:replicationgroup:orders-enc")
    );
    assert!(!run.stdout.contains("route53") && !run.stdout.contains("secretsmanager"));
    assert!(
        run.stderr.contains("region: eu-west-1 (from --region)"),
        "{run:?}"
    );
    assert!(run.stderr.contains("account: * (placeholder"), "{run:?}");

    let sandbox = env.write_plan(
        "sandbox.yaml",
        &aws.replace("provider: aws", "provider: sandbox"),
    );
    let refused = env.run(&["iam-policy", sandbox.to_str().unwrap()]);
    assert_eq!(refused.code, 2, "{refused:?}");
    assert!(
        refused.stderr.contains("no AWS calls") && refused.stdout.is_empty(),
        "{refused:?}"
    );
}

/// A generated token kept in Secrets Manager, no data steps: the run sends the policy's calls (CreateSecret
/// after PutSecretValue found no secret), all but the delete that only a failed create takes (restore
/// deletes a target of its own that came up `create-failed`, and creates it again).
#[test]
fn iam_policy_of_a_generated_secrets_manager_token_covers_its_moto_run() {
    let Some(url) = moto_url() else { return };
    let moto = Moto::new(&url);
    let mut env = Env::new();
    moto.configure(&mut env, true);
    let source = unique("iamgen");
    let target = format!("{source}-enc");
    let alias = unique("key");
    moto.seed_group(&source, "7.0.7", Some("subnets-a"));
    moto.seed_key(&alias);
    let file_store = format!(
        "auth_token: {{ file: {} }}",
        env.path().join("secrets").join("aws.token").display()
    );
    let text = aws_plan(
        &env,
        &AwsPlan {
            name: "aws-iamgen",
            source: &source,
            target: &target,
            kms_alias: &alias,
            data: None,
        },
    );
    assert!(text.contains(&file_store), "{text}");
    let text = text.replace(
        &file_store,
        &format!("auth_token: {{ generate: true, secrets_manager: ecmigrate/{source} }}"),
    );
    let plan = env.write_plan("aws-iamgen.yaml", &text);
    let printed = env.ok(&["iam-policy", plan.to_str().unwrap(), "--output", "json"]);
    let policy: serde_json::Value = serde_json::from_str(&printed.stdout).expect("policy json");

    let app = unique("iamgenrun");
    env.set_env("AWS_SDK_UA_APP_ID", &app);
    let before = recording_len();
    let run = env.run(&["run", plan.to_str().unwrap(), "--yes"]);
    assert_eq!(run.code, 0, "{run:?}");
    let recorded = recorded_actions_of_app(&app, before);
    let called = actions(&policy, true);
    assert!(
        recorded.is_subset(&called),
        "not in the policy: {:?}",
        recorded.difference(&called).collect::<Vec<_>>()
    );
    assert!(
        recorded.contains("secretsmanager:CreateSecret"),
        "{recorded:?}"
    );
    let unused: Vec<&String> = called.difference(&recorded).collect();
    assert_eq!(
        unused,
        vec!["elasticache:DeleteReplicationGroup"],
        "{policy}"
    );
}
