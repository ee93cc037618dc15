//! The ledger records what ran: a refused run fixed and run again records the plan that ran (and the
//! report its checksum); an accepted edit of a step that had not started stays accepted after that step
//! fails; a refused run that gains a step starts over; a finished plan run again says it is done.

use serde_json::Value;

use crate::harness::{Env, full_plan};

fn state(env: &Env) -> Value {
    let text = std::fs::read_to_string(env.state_dir().join("orders-migration/state.json"))
        .expect("state.json");
    serde_json::from_str(&text).expect("state parses")
}

fn journal(env: &Env) -> Vec<Value> {
    std::fs::read_to_string(env.state_dir().join("orders-migration/events.jsonl"))
        .expect("events.jsonl")
        .lines()
        .map(|l| serde_json::from_str(l).expect("journal line"))
        .collect()
}

fn run(env: &Env, plan: &std::path::Path) -> crate::harness::Run {
    env.run(&["run", plan.to_str().unwrap(), "--yes"])
}

#[test]
fn a_refused_run_fixed_records_the_plan_that_ran_and_a_finished_plan_is_done() {
    let env = Env::new();
    env.sandbox_with_source(200);
    let good = full_plan(&env);
    let plan = env.write_plan("plan.yaml", &good.replace("alias/orders", "alias/nope"));
    let refused = run(&env, &plan);
    assert_eq!(refused.code, 3, "{refused:?}");

    let plan = env.write_plan("plan.yaml", &good);
    let done = run(&env, &plan);
    assert_eq!(done.code, 0, "{done:?}");
    let recorded = state(&env);
    assert_eq!(recorded["plan"]["target"]["kms_key_id"], "alias/orders");
    let report: Value = serde_json::from_str(
        &std::fs::read_to_string(env.state_dir().join("orders-migration/report.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(
        report["plan_checksum"], recorded["plan_checksum"],
        "the report's checksum is the recorded plan's"
    );
    assert!(
        journal(&env).iter().any(|e| e["event"] == "started_over"),
        "the start-over is journaled"
    );

    let again = run(&env, &plan);
    assert_eq!(again.code, 0, "{again:?}");
    assert!(again.stdout.contains("already done"), "{again:?}");
    assert!(
        !again.stdout.contains("==> [1]"),
        "a step ran again: {again:?}"
    );
    assert_eq!(state(&env)["run_id"], recorded["run_id"]);

    // A missing evidence pack is written again: by the next `run`, and by `ecmigrate report`.
    let dir = env.state_dir().join("orders-migration");
    std::fs::remove_file(dir.join("report.md")).unwrap();
    std::fs::remove_file(dir.join("report.json")).unwrap();
    let again = run(&env, &plan);
    assert_eq!(again.code, 0, "{again:?}");
    assert!(dir.join("report.md").exists() && dir.join("report.json").exists());
    std::fs::remove_file(dir.join("report.json")).unwrap();
    let printed = env.ok(&["report", plan.to_str().unwrap(), "--format", "json"]);
    let report: Value = serde_json::from_str(&printed.stdout).expect("report JSON");
    assert_eq!(report["plan_checksum"], recorded["plan_checksum"]);
    assert!(dir.join("report.json").exists());
}

#[cfg(feature = "test-hooks")]
#[test]
fn an_accepted_edit_of_a_pending_step_stays_accepted_after_that_step_fails() {
    let mut env = Env::new();
    env.sandbox_with_source(200);
    let original = full_plan(&env);
    let plan = env.write_plan("plan.yaml", &original);
    // The backup fails once: preflight has run, nothing after it has started.
    env.set_env("ECMIGRATE_TEST_CLOUD_FAULTS", "CreateSnapshot=fail*1");
    let first = run(&env, &plan);
    assert_eq!(first.code, 1, "{first:?}");

    // Edit a step that has not started, then let it start and fail.
    let edited = original.replace(
        "  - kind: restore_encrypted\n",
        "  - kind: restore_encrypted\n    timeout_seconds: 900\n",
    );
    let plan = env.write_plan("plan.yaml", &edited);
    env.set_env(
        "ECMIGRATE_TEST_CLOUD_FAULTS",
        "CreateReplicationGroup=fail*1",
    );
    let second = run(&env, &plan);
    assert_eq!(second.code, 1, "{second:?}");
    assert!(second.stderr.contains("restore_encrypted"), "{second:?}");
    let recorded = state(&env);
    assert_eq!(recorded["plan"]["steps"][2]["timeout_seconds"], 900);
    let accepted: Vec<Value> = journal(&env)
        .into_iter()
        .filter(|e| e["event"] == "plan_change_accepted")
        .collect();
    assert_eq!(accepted.len(), 1, "one accepted change is journaled");
    assert_eq!(accepted[0]["fields"][0], "steps[2].timeout_seconds");

    // The same plan again, no edit: accepted as recorded, and the run finishes.
    env.set_env("ECMIGRATE_TEST_CLOUD_FAULTS", "");
    let third = run(&env, &plan);
    assert_eq!(third.code, 0, "{third:?}");

    // An edit of a step that has started is refused, naming the field.
    let plan = env.write_plan(
        "plan.yaml",
        &edited.replace("timeout_seconds: 900", "timeout_seconds: 901"),
    );
    let refused = run(&env, &plan);
    assert_eq!(refused.code, 2, "{refused:?}");
    assert!(
        refused
            .stderr
            .contains("`steps[2].timeout_seconds` differs"),
        "{refused:?}"
    );
}

#[test]
fn a_refused_run_that_gains_a_step_starts_over_with_it() {
    let env = Env::new();
    env.sandbox_with_source(200);
    let good = full_plan(&env);
    let plan = env.write_plan("plan.yaml", &good.replace("alias/orders", "alias/nope"));
    assert_eq!(run(&env, &plan).code, 3);

    let with_stream = good.replace(
        "  - kind: verify\n",
        "  - kind: stream_copy\n  - kind: verify\n",
    );
    let plan = env.write_plan("plan.yaml", &with_stream);
    let done = run(&env, &plan);
    assert_eq!(done.code, 0, "{done:?}");
    let recorded = state(&env);
    let kinds: Vec<&str> = recorded["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["kind"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        [
            "preflight",
            "backup",
            "restore_encrypted",
            "stream_copy",
            "verify",
            "cutover",
            "delete_source"
        ]
    );
    assert!(
        recorded["steps"]
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s["status"] == "done")
    );
}

#[test]
fn a_lock_held_by_another_process_exits_4_and_a_state_of_another_version_exits_5() {
    let env = Env::new();
    env.sandbox_with_source(50);
    let plan = env.write_plan("plan.yaml", &full_plan(&env));
    let dir = env.state_dir().join("orders-migration");
    std::fs::create_dir_all(&dir).unwrap();
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.join("lock"))
        .unwrap();
    lock.try_lock().unwrap();
    let busy = run(&env, &plan);
    assert_eq!(busy.code, 4, "{busy:?}");
    assert!(
        busy.stderr.contains("another ecmigrate process"),
        "{busy:?}"
    );
    assert!(
        busy.stderr.contains("hint: nothing was changed"),
        "{busy:?}"
    );
    lock.unlock().unwrap();

    std::fs::write(
        dir.join("state.json"),
        r#"{"format_version": 99, "plan_name": "orders-migration"}"#,
    )
    .unwrap();
    let other = run(&env, &plan);
    assert_eq!(other.code, 5, "{other:?}");
    assert!(other.stderr.contains("format version 99"), "{other:?}");
    assert!(other.stderr.contains("hint:"), "{other:?}");
}
