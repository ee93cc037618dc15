//! The scenarios every backend must pass, each written once against `Backend`: the full migration, the
//! rehearsal that changes nothing, the SIGKILL during the restore and its resume, and the preflight
//! refusals. `scenarios_on!(Backend)` turns every one into a `#[test]` of the module it is invoked in
//! (sandbox_migration.rs and aws_moto.rs), so a scenario added here runs on both.

use std::process::Stdio;
use std::time::Duration;

use ecmigrate::data::connect::{RedisEndpoint, connect};
use ecmigrate::secret::Secret;
use serde_json::Value;

use crate::backend::{Backend, Calls, FullMigration};
use crate::harness::{Env, Run, Running, block_on, wait_for};

/// One `#[test]` per scenario, on `$backend`.
macro_rules! scenarios_on {
    ($backend:ty) => {
        #[test]
        fn full_migration_leaves_only_an_encrypted_group_holding_every_key() {
            $crate::scenarios::full_migration::<$backend>();
        }

        #[test]
        fn dry_run_prints_every_call_and_changes_nothing() {
            $crate::scenarios::dry_run::<$backend>();
        }

        #[test]
        fn sigkill_during_restore_then_resume_creates_nothing_twice() {
            $crate::scenarios::kill_during_restore_then_resume::<$backend>();
        }

        #[test]
        fn preflight_refuses_a_disabled_kms_key() {
            $crate::scenarios::refuses_a_disabled_key::<$backend>();
        }

        #[test]
        fn preflight_refuses_a_taken_target_id() {
            $crate::scenarios::refuses_a_taken_target::<$backend>();
        }

        #[test]
        fn preflight_refuses_a_missing_source() {
            $crate::scenarios::refuses_a_missing_source::<$backend>();
        }
    };
}
pub(crate) use scenarios_on;

/// Up to `n` key names stored in the source, read before the migration.
fn some_source_keys(source: &RedisEndpoint, n: usize) -> Vec<String> {
    block_on(async {
        let mut c = connect(source).await.expect("connect source");
        let (_, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(0)
            .arg("COUNT")
            .arg(n * 4)
            .query_async(&mut c)
            .await
            .expect("scan");
        keys.into_iter().take(n).collect()
    })
}

fn status_json(env: &Env, plan: &std::path::Path) -> Value {
    serde_json::from_str(
        &env.ok(&["status", plan.to_str().unwrap(), "--output", "json"])
            .stdout,
    )
    .unwrap()
}

/// The token appears neither in the runs' output nor in the plan's state and events.
fn assert_no_token<B: Backend>(b: &B, env: &Env, runs: &[&Run]) {
    let Some(token) = b.token(env) else { return };
    let state_dir = env.state_dir().join(b.plan_name());
    let mut texts: Vec<String> = runs.iter().map(|r| r.all_output()).collect();
    for f in ["state.json", "events.jsonl"] {
        if let Ok(t) = std::fs::read_to_string(state_dir.join(f)) {
            texts.push(t);
        }
    }
    for t in texts {
        assert!(!t.contains(&token), "the AUTH token leaked: {t}");
    }
}

/// The folders of the state directory: a rehearsal must not create one.
fn state_listing(env: &Env) -> Vec<String> {
    let mut state = Vec::new();
    if let Ok(rd) = std::fs::read_dir(env.state_dir()) {
        for e in rd.flatten() {
            state.push(e.path().display().to_string());
        }
    }
    state.sort();
    state
}

pub fn full_migration<B: Backend>() {
    let mut env = Env::new();
    let Some(mut b) = B::start(&mut env, Calls::Retried) else {
        return;
    };
    b.seed_source(&env, Some(3000));
    b.seed_key(&env);
    let keys = some_source_keys(&b.data_plane(&env).source, 50);
    assert_eq!(keys.len(), 50);
    let plan = env.write_plan("plan.yaml", &b.plan(&env));

    b.begin();
    let run = env.run(&["run", plan.to_str().unwrap(), "--yes"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.stdout.contains("    create group "), "{run:?}");

    let after = b.resources(&env);
    assert!(
        b.is_deleted(after.group(b.source())),
        "source still listed: {after:?}"
    );
    let target = after.group(b.target()).expect("target group");
    assert_eq!(target.status, "available");
    assert!(
        target.at_rest && target.transit && target.auth_token,
        "{target:?}"
    );
    assert_eq!(target.kms_key_id.as_deref(), Some(b.key_arn()));
    assert_eq!(target.transit_mode.as_deref(), Some("required"));
    // Both snapshots of the source (pre-migration and final) are encrypted with the target's key.
    assert_eq!(after.snapshots.len(), 2, "{after:?}");
    assert!(
        after
            .snapshots
            .iter()
            .all(|s| s.kms_key_id.as_deref() == Some(b.key_arn())),
        "{after:?}"
    );
    assert_eq!(
        after
            .snapshots
            .iter()
            .filter(|s| s.name.contains("final"))
            .count(),
        1,
        "{after:?}"
    );

    // The data plane: TLS + token reaches a target that holds every key.
    let token = b.token(&env).expect("the target's token");
    let mut target_data = b.data_plane(&env).target;
    target_data.password = Some(Secret::new(token));
    block_on(async {
        let mut c = connect(&target_data).await.expect("TLS + AUTH");
        let n: u64 = redis::cmd("DBSIZE").query_async(&mut c).await.unwrap();
        assert_eq!(n, 3000);
        for key in &keys {
            let exists: bool = redis::cmd("EXISTS")
                .arg(key)
                .query_async(&mut c)
                .await
                .unwrap();
            assert!(exists, "{key} missing on the target");
        }
    });
    assert_no_token(&b, &env, &[&run]);

    let status = status_json(&env, &plan);
    assert_eq!(status["state"], "done", "{status}");
    assert!(
        status["steps"]
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s["status"] == "done"),
        "{status}"
    );
    // verify compared every key of the source with the target.
    assert_eq!(
        Env::step(&status, "verify")["outputs"]["keys_compared"],
        3000,
        "{status}"
    );
    b.full_migration_extras(
        &env,
        &FullMigration {
            plan: &plan,
            keys: &keys,
        },
    );

    // Running again is a no-op that reports the finished run.
    env.ok(&["run", plan.to_str().unwrap(), "--yes"]);
    assert_eq!(b.resources(&env).snapshots.len(), 2);
}

pub fn dry_run<B: Backend>() {
    let mut env = Env::new();
    let Some(mut b) = B::start(&mut env, Calls::Once) else {
        return;
    };
    b.seed_source(&env, Some(200));
    b.seed_key(&env);
    let plan = env.write_plan("plan.yaml", &b.plan(&env));
    let seeded = b.resources(&env);
    assert_eq!(seeded.groups.len(), 1, "{seeded:?}");
    assert_eq!(seeded.group(b.source()).unwrap().status, "available");
    assert!(seeded.snapshots.is_empty(), "{seeded:?}");
    b.begin();
    let before = (b.fingerprint(&env), state_listing(&env));

    let run = env.run(&["run", plan.to_str().unwrap(), "--dry-run"]);
    assert_eq!(run.code, 0, "{run:?}");
    for call in [
        "would create snapshot ",
        "would create group ",
        "would pause writes on ",
        "would delete group ",
    ] {
        assert!(run.stdout.contains(call), "missing `{call}`: {run:?}");
    }
    assert_eq!(
        (b.fingerprint(&env), state_listing(&env)),
        before,
        "the dry run changed the cloud or the state"
    );
    assert_no_token(&b, &env, &[&run]);
    b.dry_run_extras(&env, &run);

    // JSON output of a rehearsal is one event per line.
    let json = env.run(&[
        "run",
        plan.to_str().unwrap(),
        "--dry-run",
        "--output",
        "json",
    ]);
    assert_eq!(json.code, 0, "{json:?}");
    let events: Vec<Value> = json
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).expect(l))
        .collect();
    assert!(
        events
            .iter()
            .any(|e| e["event"] == "call" && e["dry_run"] == true)
    );
    assert!(
        json.stdout.contains("\"AuthToken\":\"<redacted>\""),
        "{json:?}"
    );
    assert_eq!(events.last().unwrap()["event"], "run_finished");
    assert_eq!((b.fingerprint(&env), state_listing(&env)), before);
    assert_no_token(&b, &env, &[&json]);
}

pub fn kill_during_restore_then_resume<B: Backend>() {
    let mut env = Env::new();
    let Some(mut b) = B::start(&mut env, Calls::Retried) else {
        return;
    };
    // Enough keys that verify (after restore) takes a moment, so the kill lands before the run ends.
    b.seed_source(&env, Some(5000));
    b.seed_key(&env);
    let plan = env.write_plan("plan.yaml", &b.plan(&env));
    b.slow_restore(&mut env);

    b.begin();
    kill_at_create(&b, &env, &plan);

    let mid = status_json(&env, &plan);
    assert_ne!(
        mid["state"], "done",
        "the kill landed after the run finished: {mid}"
    );
    b.killed_extras(&env, &mid);

    let resumed = env.run(&["run", plan.to_str().unwrap(), "--yes"]);
    assert_eq!(resumed.code, 0, "{resumed:?}");
    b.resumed_extras(&env, &resumed);
    let after = b.resources(&env);
    assert_eq!(after.count(b.target()), 1, "{after:?}");
    assert!(b.is_deleted(after.group(b.source())), "{after:?}");
    // One pre-migration snapshot, one final: nothing taken twice.
    assert_eq!(after.snapshots.len(), 2, "{after:?}");
    assert_eq!(
        after
            .snapshots
            .iter()
            .filter(|s| !s.name.contains("final"))
            .count(),
        1,
        "{after:?}"
    );
    assert_no_token(&b, &env, &[&resumed]);
}

/// Start `plan` in the background and SIGKILL it once it reported the restore's CreateReplicationGroup
/// call (and `before_kill` returned).
pub fn kill_at_create<B: Backend>(b: &B, env: &Env, plan: &std::path::Path) {
    let events = env.state_dir().join(b.plan_name()).join("events.jsonl");
    let mut child = Running::new(
        env.command(&["run", plan.to_str().unwrap(), "--yes"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_for(
        "the restore's CreateReplicationGroup call",
        Duration::from_secs(60),
        || {
            let text = std::fs::read_to_string(&events).unwrap_or_default();
            assert!(
                child.try_wait().unwrap().is_none(),
                "the run ended before restore: {text}"
            );
            text.contains("\"operation\":\"CreateReplicationGroup\"")
        },
    );
    b.before_kill(env);
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
}

/// Run `plan_text`, expected to be refused by preflight: exit 3 naming `check` with a hint, the cloud
/// unchanged, no target created, no token shown.
pub fn assert_refused<B: Backend>(b: &B, env: &Env, plan_text: &str, check: &str) -> Run {
    let plan = env.write_plan("refused.yaml", plan_text);
    b.begin();
    let before = b.fingerprint(env);
    let target_before = b.resources(env).group(b.target()).is_some();
    let run = env.run(&["run", plan.to_str().unwrap(), "--yes"]);
    assert_eq!(run.code, 3, "{run:?}");
    assert!(
        run.stderr.contains(&format!("[{check}]")),
        "expected a `{check}` refusal: {run:?}"
    );
    assert!(run.stderr.contains("hint:"), "{run:?}");
    assert_eq!(
        b.fingerprint(env),
        before,
        "a refused run changed the cloud"
    );
    assert!(
        target_before || b.resources(env).group(b.target()).is_none(),
        "target created"
    );
    assert_no_token(b, env, &[&run]);
    b.refusal_extras(env, &run);
    run
}

pub fn refuses_a_disabled_key<B: Backend>() {
    let mut env = Env::new();
    let Some(mut b) = B::start(&mut env, Calls::Once) else {
        return;
    };
    b.seed_source(&env, None);
    b.seed_key(&env);
    b.disable_key(&env);
    assert_refused(&b, &env, &b.plan(&env), "kms_key");
}

pub fn refuses_a_taken_target<B: Backend>() {
    let mut env = Env::new();
    let Some(mut b) = B::start(&mut env, Calls::Once) else {
        return;
    };
    b.seed_source(&env, None);
    b.seed_taken_target(&env);
    b.seed_key(&env);
    assert_refused(&b, &env, &b.plan(&env), "target_id_free");
}

pub fn refuses_a_missing_source<B: Backend>() {
    let mut env = Env::new();
    let Some(mut b) = B::start(&mut env, Calls::Once) else {
        return;
    };
    b.seed_key(&env);
    assert_refused(&b, &env, &b.plan(&env), "source_exists");
}
