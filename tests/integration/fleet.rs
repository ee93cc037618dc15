//! `fleet run`, `fleet status`, `fleet cutover` and the fleet report through the real binary: a sandbox
//! fleet of three groups, a live writer on each, run two at a time, killed mid-run and started again,
//! held at postponed cutovers and released together; and on moto, two plans in two regions.
//!
//! The fleet folders are written here (plans + `fleet.json` in the manifest's shape), as `fleet plan`
//! writes them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::app_writer::{Writer, lost_writes, resolve_alias};
use crate::harness::{Env, wait_for};
use crate::moto::{
    AwsPlan, Moto, aws_plan, moto_url, recorded_regions_of_app, recording_len, unique, write_token,
};

/// One group of a test fleet: its region, id, and (planned) the plan file, name and target.
struct Member {
    region: String,
    group: String,
    plan: Option<(String, String, String)>,
    skipped: Option<&'static str>,
    encrypted: bool,
}

/// `DIR/fleet.json` for `members`, in the manifest's shape.
fn write_manifest(dir: &Path, provider: &str, members: &[Member]) {
    let mut regions: Vec<&str> = members.iter().map(|m| m.region.as_str()).collect();
    regions.sort();
    regions.dedup();
    let groups: Vec<Value> = members
        .iter()
        .map(|m| {
            let mut g = json!({
                "region": m.region,
                "replication_group_id": m.group,
                "engine_version": "7.0.7",
                "cluster_enabled": false,
                "at_rest_encryption_enabled": m.encrypted,
                "transit_encryption_enabled": m.encrypted,
                "recommended_path": if m.encrypted { "already_encrypted" } else { "recreate" },
            });
            if let Some((file, name, target)) = &m.plan {
                g["plan"] = json!(file);
                g["plan_name"] = json!(name);
                g["target_id"] = json!(target);
            }
            if let Some(why) = m.skipped {
                g["skipped"] = json!(why);
            }
            g
        })
        .collect();
    let manifest = json!({
        "version": 1,
        "provider": provider,
        "created_at": "2026-12-02T01:00:00Z",
        "policy_sha256": "0".repeat(64),
        "regions": regions.iter().map(|r| json!({ "region": r })).collect::<Vec<_>>(),
        "groups": groups,
    });
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("fleet.json"), manifest.to_string()).unwrap();
}

fn fleet_status(env: &Env, dir: &Path) -> Value {
    let r = env.ok(&["fleet", "status", dir.to_str().unwrap(), "--output", "json"]);
    serde_json::from_str(&r.stdout).unwrap_or_else(|e| panic!("{e}: {r:?}"))
}

/// The states of the planned groups, by group.
fn states(env: &Env, dir: &Path) -> BTreeMap<String, String> {
    fleet_status(env, dir)["groups"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|g| !g["plan"].is_null())
        .map(|g| {
            (
                g["replication_group_id"].as_str().unwrap().to_string(),
                g["state"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// How many `step_done` events of each kind a plan's journal holds.
fn steps_done(env: &Env, plan: &str) -> BTreeMap<String, usize> {
    let journal = std::fs::read_to_string(env.state_dir().join(plan).join("events.jsonl")).unwrap();
    let mut done = BTreeMap::new();
    for line in journal.lines() {
        let e: Value = serde_json::from_str(line).unwrap();
        if e["event"] == "step_done" {
            *done
                .entry(e["kind"].as_str().unwrap().to_string())
                .or_default() += 1;
        }
    }
    done
}

/// At most `parallel` plans of the fleet run at once: no more than that are recorded `running` (a plan
/// waiting at its cutover is `waiting`).
fn assert_bounded(states: &BTreeMap<String, String>, parallel: usize) {
    let running = states.values().filter(|s| *s == "running").count();
    assert!(
        running <= parallel,
        "more than {parallel} running: {states:?}"
    );
}

const GROUPS: [&str; 3] = ["carts", "orders", "users"];

fn sandbox_plan(env: &Env, group: &str) -> String {
    format!(
        r#"version: 1
name: {group}-migration
provider: sandbox
source:
  replication_group_id: {group}
target:
  replication_group_id: {group}-enc
  kms_key_id: alias/fleet
  auth_token: {{ generate: true, file: {token} }}
steps:
  - kind: preflight
  - kind: backup
  - kind: restore_encrypted
  - kind: stream_copy
  - kind: verify
  - kind: cutover
    strategy: sandbox_alias
    alias: {group}-endpoint
    postpone: true
    grace_seconds: 1
"#,
        token = token_file(env, group).display()
    )
}

fn token_file(env: &Env, group: &str) -> PathBuf {
    env.path().join("secrets").join(format!("{group}.token"))
}

#[test]
fn a_sandbox_fleet_of_three_runs_two_at_a_time_resumes_after_a_kill_and_cuts_over_together_losing_no_write()
 {
    let env = Env::new();
    env.ok(&["sandbox", "kms", "create", "fleet"]);
    let dir = env.path().join("fleet");
    std::fs::create_dir_all(&dir).unwrap();
    let mut members = Vec::new();
    for g in GROUPS {
        env.ok(&[
            "sandbox",
            "up",
            "--group",
            g,
            "--replicas",
            "0",
            "--keys",
            "1500",
        ]);
        std::fs::write(dir.join(format!("{g}.yaml")), sandbox_plan(&env, g)).unwrap();
        members.push(Member {
            region: "sandbox".into(),
            group: g.into(),
            plan: Some((
                format!("{g}.yaml"),
                format!("{g}-migration"),
                format!("{g}-enc"),
            )),
            skipped: None,
            encrypted: false,
        });
    }
    members.push(Member {
        region: "sandbox".into(),
        group: "sessions".into(),
        plan: None,
        skipped: Some("already encrypted"),
        encrypted: true,
    });
    write_manifest(&dir, "sandbox", &members);
    let sandbox = env.sandbox_dir();
    let writers: Vec<Writer> = GROUPS
        .iter()
        .map(|g| {
            Writer::start_on(
                &sandbox,
                &format!("{g}-endpoint"),
                &format!("{g}-enc"),
                &token_file(&env, g),
            )
        })
        .collect();
    let run = || {
        env.spawn(&[
            "fleet",
            "run",
            dir.to_str().unwrap(),
            "--parallel",
            "2",
            "--yes",
        ])
    };

    // Killed once a plan has its snapshot: that plan resumes after it, the others from where they were.
    let mut first = run();
    wait_for("a plan's backup to finish", Duration::from_secs(60), || {
        assert!(
            first.try_wait().unwrap().is_none(),
            "the fleet run ended early"
        );
        let s = states(&env, &dir);
        assert_bounded(&s, 2);
        GROUPS
            .iter()
            .any(|g| steps_done_if_any(&env, &format!("{g}-migration")).contains_key("backup"))
    });
    first.kill().unwrap();
    let _ = first.wait();
    assert!(
        states(&env, &dir).values().any(|s| s == "interrupted"),
        "{}",
        fleet_status(&env, &dir)
    );

    let second = run();
    let started = Instant::now();
    loop {
        let s = states(&env, &dir);
        assert_bounded(&s, 2);
        if s.values().all(|s| s == "waiting") {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "never all waiting: {s:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let status = fleet_status(&env, &dir);
    let sessions = &status["groups"][3];
    assert_eq!(sessions["state"], "skipped", "{status}");
    let text = env.ok(&["fleet", "status", dir.to_str().unwrap()]);
    assert!(text.stdout.contains("3 waiting at the cutover"), "{text:?}");

    let released = env.run(&["fleet", "cutover", dir.to_str().unwrap(), "--yes"]);
    assert_eq!(released.code, 0, "{released:?}");
    for g in GROUPS {
        assert!(
            released
                .stdout
                .contains(&format!("[sandbox/{g}] switched: writes paused")),
            "{released:?}"
        );
    }
    let finished = second.finish();
    assert_eq!(finished.code, 0, "{finished:?}");
    assert!(
        finished.stdout.contains("[sandbox/carts] ==> ["),
        "lines name their group: {finished:?}"
    );
    assert!(finished.stdout.contains("fleet: 3 done"), "{finished:?}");

    // Each plan ran each step exactly once across the two fleet runs, with one snapshot per source.
    let sandbox_status = env.sandbox_status();
    for g in GROUPS {
        let done = steps_done(&env, &format!("{g}-migration"));
        assert!(
            done.values().all(|n| *n == 1) && done.len() == 6,
            "{g}: {done:?}"
        );
        let snapshots = sandbox_status["snapshots"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|s| s["source_group"] == g)
            .count();
        assert_eq!(snapshots, 1, "{g}: {sandbox_status}");
    }
    for (g, writer) in GROUPS.iter().zip(writers) {
        let target = resolve_alias(
            &sandbox,
            &format!("{g}-endpoint"),
            &format!("{g}-enc"),
            &token_file(&env, g),
        );
        assert!(
            target.tls,
            "{g}: the alias does not point at the encrypted group"
        );
        let report = writer.stop();
        let lost = lost_writes(&report, &target);
        println!(
            "{g}: {} writes, {} reconnects, lost {}",
            report.writes,
            report.reconnects,
            lost.len()
        );
        assert!(report.writes > 0);
        assert!(
            lost.is_empty(),
            "{g}: {} acknowledged writes lost: {:?}",
            lost.len(),
            &lost[..lost.len().min(5)]
        );
    }

    // The fleet report: every group of the manifest, the quotable line, links to the evidence packs.
    let report: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("fleet-report.json")).unwrap())
            .unwrap();
    assert_eq!(report["groups"].as_array().unwrap().len(), 4, "{report}");
    assert_eq!(
        report["summary"],
        "3 of 3 planned groups in 1 region now encrypted at rest and in transit; 1 skipped: 1 already encrypted.",
        "{report}"
    );
    assert_eq!(
        report["audit_summary"],
        "4 of 4 groups audited in 1 region are encrypted at rest and in transit."
    );
    let md = std::fs::read_to_string(dir.join("fleet-report.md")).unwrap();
    assert!(
        md.contains("[report.md](../state/carts-migration/report.md)"),
        "{md}"
    );
    assert!(!md.contains('{'), "no JSON in the document: {md}");
    let html = std::fs::read_to_string(dir.join("fleet-report.html")).unwrap();
    assert!(
        html.contains("<a href=\"../state/users-migration/report.html\">"),
        "{html}"
    );
    assert!(dir.join("../state/users-migration/report.html").exists());

    // Run again: every plan is already done, nothing runs.
    let again = env.run(&["fleet", "run", dir.to_str().unwrap(), "--yes"]);
    assert_eq!(again.code, 0, "{again:?}");
    assert!(
        again.stdout.contains("fleet: 0 done, 3 already done"),
        "{again:?}"
    );
}

/// `steps_done` for a plan that may not have a journal yet.
fn steps_done_if_any(env: &Env, plan: &str) -> BTreeMap<String, usize> {
    if env.state_dir().join(plan).join("events.jsonl").exists() {
        steps_done(env, plan)
    } else {
        BTreeMap::new()
    }
}

#[test]
fn fleet_run_refuses_without_yes_and_a_plan_that_does_not_load_before_anything_runs() {
    let env = Env::new();
    let dir = env.path().join("fleet");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("a.yaml"), sandbox_plan(&env, "a")).unwrap();
    std::fs::write(dir.join("b.yaml"), "version: 1\nname: b\n").unwrap();
    let member = |g: &str| Member {
        region: "sandbox".into(),
        group: g.into(),
        plan: Some((
            format!("{g}.yaml"),
            format!("{g}-migration"),
            format!("{g}-enc"),
        )),
        skipped: None,
        encrypted: false,
    };
    write_manifest(&dir, "sandbox", &[member("a")]);
    let r = env.run(&["fleet", "run", dir.to_str().unwrap()]);
    assert_eq!(r.code, 2, "{r:?}");
    assert!(r.stderr.contains("--yes"), "{r:?}");
    write_manifest(&dir, "sandbox", &[member("a"), member("b")]);
    let r = env.run(&["fleet", "run", dir.to_str().unwrap(), "--yes"]);
    assert_eq!(r.code, 2, "{r:?}");
    assert!(r.stderr.contains("b.yaml"), "{r:?}");
    assert!(!env.state_dir().join("a-migration").exists(), "nothing ran");
    let r = env.run(&["fleet", "cutover", dir.to_str().unwrap(), "--yes"]);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(
        r.stderr.contains("no plan of the fleet is waiting"),
        "{r:?}"
    );
}

#[test]
fn aws_fleet_runs_two_plans_in_two_regions_at_once_and_reports_every_audited_group() {
    let Some(url) = moto_url() else { return };
    let mut env = Env::new();
    let east = Moto::in_region(&url, "us-east-1");
    let west = Moto::in_region(&url, "eu-west-1");
    east.configure(&mut env, true);
    write_token(&env);
    let dir = env.path().join("fleet");
    std::fs::create_dir_all(&dir).unwrap();
    let mut members = Vec::new();
    for (moto, region) in [(&east, "us-east-1"), (&west, "eu-west-1")] {
        let source = unique("fleet");
        let alias = unique("fleetkey");
        moto.seed_group(&source, "7.0.7", Some("subnets-a"));
        moto.seed_key(&alias);
        let name = format!("{source}-migration");
        let text = aws_plan(
            &env,
            &AwsPlan {
                name: &name,
                source: &source,
                target: &format!("{source}-enc"),
                kms_alias: &alias,
                data: None,
            },
        )
        .replace(
            "aws: { region: us-east-1 }",
            &format!("aws: {{ region: {region} }}"),
        );
        std::fs::write(dir.join(format!("{region}.yaml")), text).unwrap();
        members.push(Member {
            region: region.into(),
            group: source.clone(),
            plan: Some((format!("{region}.yaml"), name, format!("{source}-enc"))),
            skipped: None,
            encrypted: false,
        });
    }
    for (region, group, why, encrypted) in [
        ("ap-southeast-2", "sessions", "already encrypted", true),
        (
            "us-east-1",
            "legacy",
            "ineligible: engine 3.2.10 has no at-rest encryption",
            false,
        ),
    ] {
        members.push(Member {
            region: region.into(),
            group: group.into(),
            plan: None,
            skipped: Some(why),
            encrypted,
        });
    }
    write_manifest(&dir, "aws", &members);

    // The rehearsal changes nothing and writes no state.
    let rehearsal = env.run(&["fleet", "run", dir.to_str().unwrap(), "--dry-run"]);
    assert_eq!(rehearsal.code, 0, "{rehearsal:?}");
    assert!(
        rehearsal
            .stdout
            .contains("dry run finished: nothing was changed"),
        "{rehearsal:?}"
    );
    assert!(!env.state_dir().exists() || std::fs::read_dir(env.state_dir()).unwrap().count() == 0);

    let app = unique("fleetrun");
    env.set_env("AWS_SDK_UA_APP_ID", &app);
    let before = recording_len();
    let run = env.run(&[
        "fleet",
        "run",
        dir.to_str().unwrap(),
        "--parallel",
        "2",
        "--yes",
        "--output",
        "json",
    ]);
    assert_eq!(run.code, 0, "{run:?}");
    let lines: Vec<Value> = run
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    for m in &members[..2] {
        let call = lines
            .iter()
            .find(|l| {
                l["event"] == "call"
                    && l["operation"] == "CreateReplicationGroup"
                    && l["group"] == m.group.as_str()
            })
            .unwrap_or_else(|| panic!("no CreateReplicationGroup of {}: {}", m.group, run.stdout));
        assert_eq!(call["region"], m.region.as_str());
        assert_eq!(call["plan"], format!("{}-migration", m.group));
    }
    let recorded = recorded_regions_of_app(&app, before);
    for region in ["us-east-1", "eu-west-1"] {
        let ops = recorded
            .get(region)
            .unwrap_or_else(|| panic!("nothing sent to {region}: {recorded:?}"));
        for op in ["CreateSnapshot", "CreateReplicationGroup"] {
            assert!(ops.contains(op), "{region}: no {op} in {ops:?}");
        }
    }
    for m in &members[..2] {
        let target = format!("{}-enc", m.group);
        let moto = if m.region == "us-east-1" {
            &east
        } else {
            &west
        };
        let g = moto
            .group(&target)
            .unwrap_or_else(|| panic!("{target} not created in {}", m.region));
        assert_eq!(g.at_rest_encryption_enabled(), Some(true));
    }

    let report: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("fleet-report.json")).unwrap())
            .unwrap();
    let groups = report["groups"].as_array().unwrap();
    assert_eq!(groups.len(), 4, "{report}");
    for m in &members {
        assert!(
            groups
                .iter()
                .any(|g| g["replication_group_id"] == m.group.as_str()),
            "{} missing: {report}",
            m.group
        );
    }
    assert_eq!(
        report["summary"],
        "2 of 2 planned groups in 2 regions now encrypted at rest and in transit; 2 skipped: 1 already encrypted, 1 ineligible: engine 3.2.10 has no at-rest encryption.",
        "{report}"
    );
    assert_eq!(
        report["audit_summary"],
        "3 of 4 groups audited in 3 regions are encrypted at rest and in transit."
    );
}
