//! `ecmigrate terraform`: the HCL hand-off of a finished migration, parsed as Terraform would (hcl-rs). On
//! the sandbox and on moto: the import block names the new group, the resource states its encryption and
//! the run's KMS key, the old group is `removed` without being destroyed, and the token's value is nowhere.

use hcl::eval::Evaluate;

use crate::harness::{Env, SOURCE, TARGET, full_plan};
use crate::moto::{AwsPlan, Moto, TOKEN, aws_plan, moto_url, unique};

/// The parsed file and the blocks a test asks for.
struct Parsed {
    text: String,
    body: hcl::Body,
}

impl Parsed {
    fn new(text: &str) -> Parsed {
        let body =
            hcl::parse(text).unwrap_or_else(|e| panic!("the HCL does not parse: {e}\n{text}"));
        Parsed {
            text: text.to_string(),
            body,
        }
    }

    fn block(&self, kind: &str) -> &hcl::Block {
        self.body
            .blocks()
            .find(|b| b.identifier() == kind)
            .unwrap_or_else(|| panic!("no `{kind}` block in\n{}", self.text))
    }

    fn blocks(&self, kind: &str) -> usize {
        self.body
            .blocks()
            .filter(|b| b.identifier() == kind)
            .count()
    }
}

fn labels(block: &hcl::Block) -> Vec<&str> {
    block.labels().iter().map(|l| l.as_str()).collect()
}

fn attr<'a>(body: &'a hcl::Body, key: &str) -> &'a hcl::Expression {
    body.attributes()
        .find(|a| a.key() == key)
        .unwrap_or_else(|| panic!("no attribute `{key}` in {body:?}"))
        .expr()
}

/// A value as Terraform reads it: a quoted string's templates evaluated, a number or a bool as is.
fn value(body: &hcl::Body, key: &str) -> hcl::Value {
    attr(body, key)
        .evaluate(&hcl::eval::Context::new())
        .unwrap_or_else(|e| panic!("`{key}` does not evaluate: {e}"))
}

/// The import, the resource and the removed block, checked against the new group's id, the run's key and
/// the source's id.
fn assert_hands_over(parsed: &Parsed, target: &str, source: &str, kms_key_id: &str) {
    let resource_name = target.replace('-', "_");
    let address = format!("aws_elasticache_replication_group.{resource_name}");
    let import = parsed.block("import");
    assert_eq!(value(import.body(), "id"), hcl::Value::from(target));
    assert_eq!(attr(import.body(), "to").to_string(), address);

    let resource = parsed.block("resource");
    assert_eq!(
        labels(resource),
        ["aws_elasticache_replication_group", resource_name.as_str()]
    );
    let r = resource.body();
    assert_eq!(value(r, "replication_group_id"), hcl::Value::from(target));
    assert_eq!(
        value(r, "at_rest_encryption_enabled"),
        hcl::Value::Bool(true)
    );
    assert_eq!(
        value(r, "transit_encryption_enabled"),
        hcl::Value::Bool(true)
    );
    assert_eq!(
        value(r, "transit_encryption_mode"),
        hcl::Value::from("required")
    );
    assert_eq!(value(r, "kms_key_id"), hcl::Value::from(kms_key_id));
    assert!(
        r.attributes().all(|a| a.key() != "snapshot_name"),
        "snapshot_name would replace the group: {}",
        parsed.text
    );

    let removed = parsed.block("removed");
    assert_eq!(
        attr(removed.body(), "from").to_string(),
        format!(
            "aws_elasticache_replication_group.{}",
            source.replace('-', "_")
        )
    );
    let lifecycle = removed.body().blocks().next().expect("removed.lifecycle");
    assert_eq!(lifecycle.identifier(), "lifecycle");
    assert_eq!(value(lifecycle.body(), "destroy"), hcl::Value::Bool(false));
}

/// `restore_encrypted`'s output `kms_key_id` in `status --output json`: the key the run encrypted with.
fn run_kms_key(env: &Env, plan: &str) -> String {
    let status: serde_json::Value =
        serde_json::from_str(&env.ok(&["status", plan, "--output", "json"]).stdout).unwrap();
    Env::step(&status, "restore_encrypted")["outputs"]["kms_key_id"]
        .as_str()
        .unwrap_or_else(|| panic!("no kms_key_id in {status}"))
        .to_string()
}

#[test]
fn terraform_of_a_finished_sandbox_migration_imports_the_new_group_and_forgets_the_old() {
    let env = Env::new();
    env.sandbox_with_source(50);
    let plan = env.write_plan("plan.yaml", &full_plan(&env));
    let plan = plan.to_str().unwrap();

    // Before the run: refused as invalid input, with what to do, before any cloud is asked.
    let early = env.run(&["terraform", plan]);
    assert_eq!(early.code, 2, "{early:?}");
    assert!(
        early.stderr.contains("has not been run")
            && early.stderr.contains("hint: run it first: ecmigrate run")
            && early.stdout.is_empty(),
        "{early:?}"
    );

    env.ok(&["run", plan, "--yes"]);
    let key = run_kms_key(&env, plan);
    let printed = env.ok(&["terraform", plan]);
    let parsed = Parsed::new(&printed.stdout);
    assert_hands_over(&parsed, TARGET, SOURCE, &key);

    // The sandbox's group, as described: one primary and one replica, its port, no failover asked for.
    let r = parsed.block("resource").body();
    assert_eq!(value(r, "num_cache_clusters"), hcl::Value::from(2u64));
    assert_eq!(
        value(r, "automatic_failover_enabled"),
        hcl::Value::Bool(false)
    );
    let status = env.sandbox_status();
    let port = Env::primary_port(&status, TARGET);
    assert_eq!(value(r, "port"), hcl::Value::from(u64::from(port)));
    assert_eq!(
        value(r, "node_type"),
        hcl::Value::from("cache.sandbox.micro")
    );
    // The token file's store: a sensitive variable, never the token.
    let variable = parsed.block("variable");
    assert_eq!(labels(variable), ["orders_enc_auth_token"]);
    assert_eq!(value(variable.body(), "sensitive"), hcl::Value::Bool(true));
    assert_eq!(
        attr(r, "auth_token").to_string(),
        "var.orders_enc_auth_token"
    );
    assert_eq!(parsed.blocks("data"), 0);
    let token = std::fs::read_to_string(env.token_file()).unwrap();
    let token = token.trim();
    assert!(token.len() >= 16, "the run kept a token");
    assert!(
        !printed.all_output().contains(token),
        "the AUTH token leaked: {printed:?}"
    );
    assert!(
        printed.stderr.is_empty(),
        "a finished run needs no note: {printed:?}"
    );

    // JSON: the same HCL with the addresses; --out writes that file.
    let out = env.path().join("ecmigrate.tf");
    let json = env.ok(&[
        "terraform",
        plan,
        "--output",
        "json",
        "--out",
        out.to_str().unwrap(),
    ]);
    let body: serde_json::Value = serde_json::from_str(&json.stdout).expect("json");
    assert_eq!(body["hcl"], printed.stdout.as_str(), "{body}");
    assert_eq!(
        body["resource"],
        "aws_elasticache_replication_group.orders_enc"
    );
    assert_eq!(body["import_id"], TARGET);
    assert_eq!(body["removed"], "aws_elasticache_replication_group.orders");
    assert_eq!(body["token"]["kind"], "variable");
    assert_eq!(std::fs::read_to_string(&out).unwrap(), printed.stdout);
    assert!(!json.all_output().contains(token));

    // Names as the team's configuration has them; a name Terraform would refuse is refused.
    let named = env.ok(&[
        "terraform",
        plan,
        "--resource-name",
        "cache",
        "--old-resource-name",
        "legacy_cache",
    ]);
    let parsed = Parsed::new(&named.stdout);
    assert_eq!(
        attr(parsed.block("import").body(), "to").to_string(),
        "aws_elasticache_replication_group.cache"
    );
    assert_eq!(
        attr(parsed.block("removed").body(), "from").to_string(),
        "aws_elasticache_replication_group.legacy_cache"
    );
    let bad = env.run(&["terraform", plan, "--resource-name", "9 lives"]);
    assert_eq!(bad.code, 2, "{bad:?}");
    assert!(bad.stderr.contains("hint: a Terraform name"), "{bad:?}");
}

/// A run that stopped before `restore_encrypted` finished has no group to import: a usage error naming
/// the step, with the command that finishes it.
#[cfg(feature = "test-hooks")]
#[test]
fn terraform_of_a_run_that_has_not_restored_is_refused_naming_the_step() {
    let mut env = Env::new();
    env.sandbox_with_source(20);
    let plan = env.write_plan("plan.yaml", &full_plan(&env));
    let plan = plan.to_str().unwrap();
    env.set_env("ECMIGRATE_TEST_CRASH_AFTER", "step_done:backup");
    let crashed = env.run(&["run", plan, "--yes"]);
    assert_ne!(crashed.code, 0, "{crashed:?}");
    env.set_env("ECMIGRATE_TEST_CRASH_AFTER", "");

    let refused = env.run(&["terraform", plan, "--output", "json"]);
    assert_eq!(refused.code, 2, "{refused:?}");
    let body: serde_json::Value = serde_json::from_str(&refused.stdout).expect("json error");
    let error = body["error"].as_str().unwrap();
    assert!(
        error.contains("has not finished `restore_encrypted`"),
        "{body}"
    );
    assert!(
        body["hint"]
            .as_str()
            .unwrap()
            .contains(&format!("ecmigrate run {plan}")),
        "{body}"
    );
    assert_eq!(body["exit_code"], 2);
}

/// On AWS (moto) with the token in Secrets Manager: the resource reads it through a data source of that
/// secret, and the key is the ARN the group reports.
#[test]
fn terraform_of_a_moto_run_reads_the_token_from_secrets_manager() {
    let Some(url) = moto_url() else { return };
    let moto = Moto::new(&url);
    let mut env = Env::new();
    moto.configure(&mut env, true);
    let source = unique("tf");
    let target = format!("{source}-enc");
    let alias = unique("key");
    let secret = format!("ecmigrate/{source}");
    moto.seed_group(&source, "7.0.7", Some("subnets-a"));
    let key_arn = moto.seed_key(&alias);
    moto.seed_secret(&secret, TOKEN);
    let text = aws_plan(
        &env,
        &AwsPlan {
            name: "aws-tf",
            source: &source,
            target: &target,
            kms_alias: &alias,
            data: None,
        },
    );
    let file_store = format!(
        "auth_token: {{ file: {} }}",
        env.path().join("secrets").join("aws.token").display()
    );
    assert!(
        text.contains(&file_store),
        "the plan template changed: {text}"
    );
    let plan = env.write_plan(
        "aws-tf.yaml",
        &text.replace(
            &file_store,
            &format!("auth_token: {{ secrets_manager: {secret} }}"),
        ),
    );
    let plan = plan.to_str().unwrap();
    let run = env.run(&["run", plan, "--yes"]);
    assert_eq!(run.code, 0, "{run:?}");
    let key = run_kms_key(&env, plan);
    assert_eq!(key, key_arn, "the group reports the key's ARN");

    let printed = env.ok(&["terraform", plan]);
    let parsed = Parsed::new(&printed.stdout);
    assert_hands_over(&parsed, &target, &source, &key);
    let data = parsed.block("data");
    let name = format!("{}_auth_token", target.replace('-', "_"));
    assert_eq!(
        labels(data),
        ["aws_secretsmanager_secret_version", name.as_str()]
    );
    assert_eq!(
        value(data.body(), "secret_id"),
        hcl::Value::from(secret.as_str())
    );
    let r = parsed.block("resource").body();
    assert_eq!(
        attr(r, "auth_token").to_string(),
        format!("data.aws_secretsmanager_secret_version.{name}.secret_string")
    );
    assert_eq!(parsed.blocks("variable"), 0);
    assert_eq!(value(r, "node_type"), hcl::Value::from("cache.t3.micro"));
    assert_eq!(value(r, "engine_version"), hcl::Value::from("7.0"));
    assert!(
        !printed.all_output().contains(TOKEN),
        "the AUTH token leaked"
    );
    // The plan has no delete_source: the old group is forgotten, and the file says it still exists.
    assert!(
        printed.stdout.contains("it still exists"),
        "{}",
        printed.stdout
    );
}
