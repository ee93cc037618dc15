//! `audit --regions/--all-regions` and `fleet plan`: against moto with groups in three regions (two
//! unencrypted and eligible, one already encrypted, one too old), and on the sandbox; a bad policy is
//! refused naming its fields, before anything is written.

use serde_json::Value;

use crate::harness::{Env, block_on};
use crate::moto::{Moto, moto_url, unique};

const REGIONS: [&str; 3] = ["us-east-1", "eu-west-1", "ap-southeast-2"];

/// The four groups of the issue, each in its region, ids under `prefix`.
struct Fleet {
    eligible: [(String, &'static str); 2],
    encrypted: (String, &'static str),
    too_old: (String, &'static str),
}

fn seed_fleet(url: &str, prefix: &str) -> Fleet {
    let fleet = Fleet {
        eligible: [
            (format!("{prefix}-orders"), REGIONS[0]),
            (format!("{prefix}-carts"), REGIONS[1]),
        ],
        encrypted: (format!("{prefix}-done"), REGIONS[2]),
        too_old: (format!("{prefix}-old"), REGIONS[2]),
    };
    for (id, region) in &fleet.eligible {
        Moto::in_region(url, region).seed_group(id, "7.0.7", Some("subnets-a"));
    }
    Moto::in_region(url, fleet.too_old.1).seed_group(&fleet.too_old.0, "3.2.4", None);
    let moto = Moto::in_region(url, fleet.encrypted.1);
    block_on(async {
        moto.ec
            .create_replication_group()
            .replication_group_id(&fleet.encrypted.0)
            .replication_group_description("already encrypted")
            .engine("redis")
            .engine_version("7.0.7")
            .cache_node_type("cache.t3.micro")
            .num_cache_clusters(1)
            .at_rest_encryption_enabled(true)
            .transit_encryption_enabled(true)
            .auth_token("Already-encrypted-token-0123456789")
            .send()
            .await
            .expect("seed the encrypted group");
    });
    fleet
}

fn audited<'a>(json: &'a Value, id: &str) -> &'a Value {
    json["groups"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["replication_group_id"] == id)
        .unwrap_or_else(|| panic!("{id} not audited: {json}"))
}

#[test]
fn audit_across_regions_lists_every_group_with_its_region_and_reports_a_refusing_region() {
    let Some(url) = moto_url() else { return };
    let mut env = Env::new();
    Moto::new(&url).configure(&mut env, true);
    let fleet = seed_fleet(&url, &unique("aud"));
    // moto serves every region; the test hook makes one refuse, as AWS does a region not opted into.
    env.set_env("ECMIGRATE_TEST_REFUSED_REGIONS", "ap-east-1");

    let run = env.run(&[
        "audit",
        "--provider",
        "aws",
        "--all-regions",
        "--output",
        "json",
    ]);
    assert_eq!(run.code, 1, "unencrypted groups exist: {run:?}");
    let json: Value = serde_json::from_str(&run.stdout).expect("audit json");
    for (id, region) in fleet
        .eligible
        .iter()
        .chain([&fleet.encrypted, &fleet.too_old])
    {
        assert_eq!(audited(&json, id)["region"], *region, "{json}");
    }
    assert_eq!(
        audited(&json, &fleet.encrypted.0)["recommended_path"],
        "already_encrypted"
    );
    assert!(
        audited(&json, &fleet.too_old.0)["recommended_path"]
            .as_str()
            .unwrap()
            .starts_with("ineligible"),
        "{json}"
    );
    let regions = json["regions"].as_array().unwrap();
    assert!(regions.len() > 10, "all ElastiCache regions read: {json}");
    let refused: Vec<&Value> = regions
        .iter()
        .filter(|r| r["refused"].is_string())
        .collect();
    assert_eq!(refused.len(), 1, "{json}");
    assert_eq!(refused[0]["region"], "ap-east-1");

    let text = env.run(&[
        "audit",
        "--provider",
        "aws",
        "--regions",
        "eu-west-1,ap-east-1",
    ]);
    assert_eq!(text.code, 1, "{text:?}");
    assert!(text.stdout.contains("region ap-east-1 refused"), "{text:?}");
    assert!(text.stdout.contains(&fleet.eligible[1].0), "{text:?}");
    assert!(
        !text.stdout.contains(&fleet.eligible[0].0),
        "us-east-1 was not asked for: {text:?}"
    );

    // A gate does not pass on a region it could not read.
    let sa = Moto::in_region(&url, "sa-east-1");
    block_on(async {
        sa.ec
            .create_replication_group()
            .replication_group_id(unique("audok"))
            .replication_group_description("encrypted")
            .engine("redis")
            .num_cache_clusters(1)
            .at_rest_encryption_enabled(true)
            .transit_encryption_enabled(true)
            .send()
            .await
            .expect("seed an encrypted group in sa-east-1");
    });
    let clean = env.run(&[
        "audit",
        "--provider",
        "aws",
        "--regions",
        "sa-east-1",
        "--output",
        "json",
    ]);
    assert_eq!(
        clean.code, 0,
        "only encrypted groups, every region read: {clean:?}"
    );
    let partial = env.run(&[
        "audit",
        "--provider",
        "aws",
        "--regions",
        "sa-east-1,ap-east-1",
    ]);
    assert_eq!(
        partial.code, 1,
        "a region not read fails the gate: {partial:?}"
    );
    assert!(
        partial
            .stdout
            .contains("the audit is incomplete: 1 region(s) could not be read (ap-east-1)"),
        "{partial:?}"
    );

    let bad = env.run(&["audit", "--provider", "aws", "--regions", "us-east-1,Mars"]);
    assert_eq!(bad.code, 2, "{bad:?}");
    assert!(bad.stderr.contains("--regions: `Mars`"), "{bad:?}");
}

#[test]
fn fleet_plan_writes_a_valid_plan_per_eligible_group_and_lists_the_others_with_reasons() {
    let Some(url) = moto_url() else { return };
    let mut env = Env::new();
    Moto::new(&url).configure(&mut env, true);
    let prefix = unique("fl");
    let fleet = seed_fleet(&url, &prefix);
    let policy = env.write_plan(
        "policy.yaml",
        &format!(
            "version: 1\nprovider: aws\nregions: [{}]\ninclude: ['{prefix}-*']\nkms_keys:\n  '*': alias/fleet\n  eu-west-1: alias/fleet-eu\nplan_name: '{{region}}-{{group}}'\nauth_token: {{ secrets_manager: 'ecmigrate/{{region}}/{{group}}' }}\ncutover: {{ strategy: manual, postpone: true, seal_source_hours: 2 }}\ndelete_source: true\n",
            REGIONS.join(", ")
        ),
    );
    let dir = env.path().join("fleet");
    let run = env.run(&[
        "fleet",
        "plan",
        "--policy",
        policy.to_str().unwrap(),
        "--out",
        dir.to_str().unwrap(),
        "--output",
        "json",
    ]);
    assert_eq!(run.code, 0, "{run:?}");
    let manifest: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("fleet.json")).unwrap()).unwrap();
    assert_eq!(
        manifest,
        serde_json::from_str::<Value>(&run.stdout).unwrap()
    );
    // moto is shared: other tests' groups are audited too, and listed as not included.
    let groups: Vec<&Value> = manifest["groups"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|g| {
            g["replication_group_id"]
                .as_str()
                .unwrap()
                .starts_with(&prefix)
        })
        .collect();
    assert_eq!(groups.len(), 4, "{manifest}");
    let entry = |id: &str| {
        groups
            .iter()
            .find(|g| g["replication_group_id"] == id)
            .unwrap()
    };
    for (id, region) in &fleet.eligible {
        let g = entry(id);
        assert_eq!(g["region"], *region);
        let file = dir.join(g["plan"].as_str().expect("a plan"));
        let validated = env.run(&["plan", "validate", file.to_str().unwrap()]);
        assert_eq!(validated.code, 0, "{validated:?}");
        let yaml = std::fs::read_to_string(&file).unwrap();
        let key = if *region == "eu-west-1" {
            "alias/fleet-eu"
        } else {
            "alias/fleet"
        };
        for expected in [
            format!("name: {region}-{id}"),
            format!("region: {region}"),
            format!("replication_group_id: {id}-enc"),
            format!("kms_key_id: {key}"),
            format!("secrets_manager: ecmigrate/{region}/{id}"),
            format!("confirm: {id}"),
            "postpone: true".to_string(),
            "seal_source_hours: 2".to_string(),
        ] {
            assert!(yaml.contains(&expected), "{expected} not in {yaml}");
        }
    }
    assert!(
        entry(&fleet.encrypted.0)["skipped"]
            .as_str()
            .unwrap()
            .contains("already encrypted")
    );
    assert!(
        entry(&fleet.too_old.0)["skipped"]
            .as_str()
            .unwrap()
            .contains("3.2.4")
    );
    let yamls = std::fs::read_dir(&dir)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .path()
                .extension()
                .is_some_and(|x| x == "yaml")
        })
        .count();
    assert_eq!(yamls, 2, "exactly the two plans");

    // The same policy again: the same plans, unchanged.
    let again = env.run(&[
        "fleet",
        "plan",
        "--policy",
        policy.to_str().unwrap(),
        "--out",
        dir.to_str().unwrap(),
    ]);
    assert_eq!(again.code, 0, "{again:?}");
    assert_eq!(again.stdout.matches("(unchanged)").count(), 2, "{again:?}");
}

#[test]
fn a_bad_policy_is_refused_naming_each_field_before_anything_is_written() {
    let env = Env::new();
    let policy = env.write_plan(
        "policy.yaml",
        "version: 1\ntarget_id: '{group}-{env}'\nplan_name: same\nauth_token: { env: TOKEN }\ncutover: { strategy: sandbox_alias }\n",
    );
    let dir = env.path().join("fleet");
    let run = env.run(&[
        "fleet",
        "plan",
        "--policy",
        policy.to_str().unwrap(),
        "--out",
        dir.to_str().unwrap(),
    ]);
    assert_eq!(run.code, 2, "{run:?}");
    for field in [
        "target_id",
        "plan_name",
        "auth_token.generate",
        "cutover.alias",
    ] {
        assert!(run.stderr.contains(field), "{field} not named: {run:?}");
    }
    assert!(!dir.exists(), "nothing written");

    let schema = env.ok(&["fleet", "schema"]);
    let schema: Value = serde_json::from_str(&schema.stdout).unwrap();
    assert!(schema["properties"]["kms_keys"].is_object(), "{schema}");
}

#[test]
fn fleet_plan_on_the_sandbox_plans_every_unencrypted_group() {
    let env = Env::new();
    for group in ["orders", "carts"] {
        env.ok(&["sandbox", "up", "--group", group, "--keys", "10"]);
    }
    let policy = env.write_plan(
        "policy.yaml",
        "version: 1\nauth_token: { file: 'tokens/{group}.token' }\ncutover: { strategy: sandbox_alias, alias: '{group}-endpoint' }\n",
    );
    let dir = env.path().join("fleet");
    let run = env.ok(&[
        "fleet",
        "plan",
        "--policy",
        policy.to_str().unwrap(),
        "--out",
        dir.to_str().unwrap(),
    ]);
    assert!(run.stdout.contains("2 plan(s) written"), "{run:?}");
    for group in ["orders", "carts"] {
        env.ok(&[
            "plan",
            "validate",
            dir.join(format!("{group}.yaml")).to_str().unwrap(),
        ]);
    }
    let refused = env.run(&[
        "fleet",
        "plan",
        "--policy",
        policy.to_str().unwrap(),
        "--out",
        dir.to_str().unwrap(),
        "--regions",
        "us-east-1",
    ]);
    assert_eq!(refused.code, 2, "{refused:?}");
}

/// The whole path on moto: four groups in three regions audited, two plans written by
/// `fleet plan`, `fleet run --parallel 2 --yes` killed after its first CreateReplicationGroup and started
/// again, each group created exactly once, and the fleet report listing all four.
#[test]
fn aws_fleet_from_plan_to_report_resumes_after_a_kill_and_creates_each_group_once() {
    let Some(url) = moto_url() else { return };
    let mut env = Env::new();
    Moto::new(&url).configure(&mut env, true);
    let prefix = unique("flrun");
    let fleet = seed_fleet(&url, &prefix);
    let alias = unique("fleetkey");
    for region in [REGIONS[0], REGIONS[1]] {
        Moto::in_region(&url, region).seed_key(&alias);
    }
    // moto has no data plane: the policy leaves the data steps out (stream_copy: false), and the test
    // cuts verify and cutover from the written plans, which then end at restore_encrypted.
    let policy = env.write_plan(
        "policy.yaml",
        &format!(
            "version: 1\nprovider: aws\nregions: [{}]\ninclude: ['{prefix}-*']\nkms_keys: {{ '*': alias/{alias} }}\nauth_token: {{ file: 'tokens/{{group}}.token' }}\nstream_copy: false\ncutover: {{ strategy: manual }}\n",
            REGIONS.join(", ")
        ),
    );
    let dir = env.path().join("fleet");
    let dir_arg = dir.to_str().unwrap();
    env.ok(&[
        "fleet",
        "plan",
        "--policy",
        policy.to_str().unwrap(),
        "--out",
        dir_arg,
    ]);
    for (id, _) in &fleet.eligible {
        let file = dir.join(format!("{id}.yaml"));
        let yaml = std::fs::read_to_string(&file).unwrap();
        let cut = yaml.find("- kind: verify").expect("a verify step");
        std::fs::write(&file, &yaml[..cut]).unwrap();
        env.ok(&["plan", "validate", file.to_str().unwrap()]);
    }

    let before = crate::moto::recording_len();
    env.set_env("ECMIGRATE_TEST_CRASH_AFTER", "call:CreateReplicationGroup");
    let killed = env.run(&["fleet", "run", dir_arg, "--parallel", "2", "--yes"]);
    assert_eq!(
        killed.code, 137,
        "the fleet run dies after its first create: {killed:?}"
    );
    env.set_env("ECMIGRATE_TEST_CRASH_AFTER", "");
    let status = env.run(&["fleet", "status", dir_arg, "--output", "json"]);
    assert!(
        status.stdout.contains("interrupted") || status.stdout.contains("running"),
        "{status:?}"
    );

    let resumed = env.run(&["fleet", "run", dir_arg, "--parallel", "2", "--yes"]);
    assert_eq!(resumed.code, 0, "{resumed:?}");
    for (id, region) in &fleet.eligible {
        let target = format!("{id}-enc");
        let creates = crate::moto::recorded_operations(&target, before)
            .iter()
            .filter(|o| *o == "CreateReplicationGroup")
            .count();
        assert_eq!(creates, 1, "{target} ({region}) created {creates} times");
        let g = Moto::in_region(&url, region)
            .group(&target)
            .expect("the target exists");
        assert_eq!(g.at_rest_encryption_enabled(), Some(true));
    }
    let report: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("fleet-report.json")).unwrap())
            .unwrap();
    for (id, _) in fleet
        .eligible
        .iter()
        .chain([&fleet.encrypted, &fleet.too_old])
    {
        assert!(
            report["groups"]
                .as_array()
                .unwrap()
                .iter()
                .any(|g| g["replication_group_id"] == id.as_str()),
            "{id} not in the fleet report: {report}"
        );
    }
    let md = std::fs::read_to_string(dir.join("fleet-report.md")).unwrap();
    assert!(md.contains("2 of 2 planned groups"), "{md}");
}
