//! Resume from every point: the run dies (as by SIGKILL) right after each mutating call it journals —
//! before the call is made (`ECMIGRATE_TEST_CRASH_AFTER=call:<Operation>`) and after it was made, its
//! answer unseen (`ECMIGRATE_TEST_CLOUD_FAULTS=<Operation>=crash-after*N`) — and the next run finishes
//! within its bound with exactly one of each resource and every key on the target.

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::harness::{Env, Run, SOURCE, TARGET, block_on, full_plan};

/// Keys per database of the group reached at `endpoint`.
fn key_counts(
    endpoint: &ecmigrate::data::connect::RedisEndpoint,
) -> std::collections::BTreeMap<i64, u64> {
    block_on(async {
        let mut conn = ecmigrate::data::connect::connect(endpoint)
            .await
            .expect("connect");
        ecmigrate::data::verify::keyspace(&mut conn)
            .await
            .expect("keyspace")
    })
}

/// Run the plan again and wait for it, bounded: a resume that hangs fails the test instead.
fn resume(env: &Env, plan: &std::path::Path, limit: Duration) -> Run {
    let mut child = env.spawn(&["run", plan.to_str().unwrap(), "--yes"]);
    let started = Instant::now();
    while child.try_wait().unwrap().is_none() {
        assert!(
            started.elapsed() < limit,
            "the resumed run did not finish within {limit:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    child.finish()
}

/// Returns the env (its sandbox still up) and the plan, for what a test checks beyond that.
fn crash_and_resume(hook: (&str, &str)) -> (Env, std::path::PathBuf) {
    let mut env = Env::new();
    env.sandbox_with_source(2000);
    let before = env.sandbox_status();
    let source_counts = key_counts(&ecmigrate::data::connect::RedisEndpoint::plain(
        "127.0.0.1",
        Env::primary_port(&before, SOURCE),
    ));
    let plan = env.write_plan("plan.yaml", &full_plan(&env));
    env.set_env(hook.0, hook.1);
    let crashed = env.run(&["run", plan.to_str().unwrap(), "--yes"]);
    assert_eq!(
        crashed.code, 137,
        "the hook {hook:?} did not fire: {crashed:?}"
    );
    let status: Value = serde_json::from_str(
        &env.ok(&["status", plan.to_str().unwrap(), "--output", "json"])
            .stdout,
    )
    .unwrap();
    assert_eq!(status["state"], "interrupted", "{status}");

    env.set_env(hook.0, "");
    let resumed = resume(&env, &plan, Duration::from_secs(180));
    assert_eq!(resumed.code, 0, "after {hook:?}: {resumed:?}");

    let after = env.sandbox_status();
    let groups: Vec<&str> = after["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["replication_group_id"].as_str().unwrap())
        .collect();
    assert_eq!(groups, [TARGET], "after {hook:?}: {after}");
    let snapshots = after["snapshots"].as_array().unwrap();
    assert_eq!(snapshots.len(), 2, "a backup and a final snapshot: {after}");
    assert!(snapshots.iter().all(|s| s["encrypted"] == true), "{after}");
    assert_eq!(
        key_counts(&env.target_endpoint()),
        source_counts,
        "after {hook:?}: the target does not hold every key"
    );
    (env, plan)
}

#[test]
fn killed_before_the_backup_snapshot_is_requested() {
    crash_and_resume(("ECMIGRATE_TEST_CRASH_AFTER", "call:CreateSnapshot"));
}

#[test]
fn killed_after_the_backup_snapshot_was_requested() {
    crash_and_resume((
        "ECMIGRATE_TEST_CLOUD_FAULTS",
        "CreateSnapshot=crash-after*1",
    ));
}

#[test]
fn killed_before_the_target_is_requested() {
    crash_and_resume(("ECMIGRATE_TEST_CRASH_AFTER", "call:CreateReplicationGroup"));
}

#[test]
fn killed_after_the_target_was_requested() {
    crash_and_resume((
        "ECMIGRATE_TEST_CLOUD_FAULTS",
        "CreateReplicationGroup=crash-after*1",
    ));
}

#[test]
fn killed_before_the_final_snapshot_is_requested() {
    crash_and_resume(("ECMIGRATE_TEST_CRASH_AFTER", "call:CreateSnapshot#2"));
}

#[test]
fn killed_after_the_final_snapshot_was_requested() {
    crash_and_resume((
        "ECMIGRATE_TEST_CLOUD_FAULTS",
        "CreateSnapshot=crash-after*2",
    ));
}

#[test]
fn killed_before_the_source_is_deleted() {
    crash_and_resume(("ECMIGRATE_TEST_CRASH_AFTER", "call:DeleteReplicationGroup"));
}

#[test]
fn killed_after_the_source_deletion_was_requested() {
    crash_and_resume((
        "ECMIGRATE_TEST_CLOUD_FAULTS",
        "DeleteReplicationGroup=crash-after*1",
    ));
}

#[test]
fn killed_in_the_cutover_after_the_switch_was_recorded() {
    crash_and_resume(("ECMIGRATE_TEST_CRASH_AFTER", "call:PointAlias"));
}

#[test]
fn killed_in_the_cutover_before_the_source_is_sealed() {
    let (env, plan) = crash_and_resume(("ECMIGRATE_TEST_CRASH_AFTER", "call:SealSource"));
    let status = env.status_json(plan.to_str().unwrap());
    let outputs = &Env::step(&status, "cutover")["outputs"];
    assert_eq!(outputs["resumed_after_switch"], true, "{outputs}");
    assert_eq!(
        outputs["sealed"]["primaries"], 1,
        "the resumed run did not seal: {outputs}"
    );
}
