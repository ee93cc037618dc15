//! The cutover and the rollback on cluster-mode-enabled sandbox groups, with an application writing all
//! along through the alias (a cluster client: every key on the primary owning its slot): the full plan
//! (stream_copy, a postponed cutover released by `ecmigrate cutover`, delete_source) loses no
//! acknowledged write and pauses writes for less than a second; a rollback brings the target's writes
//! back onto a cluster source.

use std::time::Duration;

use serde_json::Value;

use crate::app_writer::{
    ALIAS, ClusterConn, Writer, lost_writes, primaries_whose_writes_wait, resolve,
};
use crate::harness::{Env, SOURCE, TARGET, block_on, wait_for};

fn cluster_source(env: &Env, keys: u64) {
    env.ok(&[
        "sandbox",
        "up",
        "--group",
        SOURCE,
        "--shards",
        "3",
        "--keys",
        &keys.to_string(),
    ]);
    env.ok(&["sandbox", "kms", "create", "orders"]);
}

fn status(env: &Env, plan: &std::path::Path) -> Value {
    let r = env.ok(&["status", plan.to_str().unwrap(), "--output", "json"]);
    serde_json::from_str(&r.stdout).unwrap()
}

#[test]
fn a_live_writer_through_a_full_cluster_plan_loses_no_write_and_waits_under_a_second() {
    let env = Env::new();
    cluster_source(&env, 3000);
    let plan_text = crate::cutover::postponed_plan(&env, "", false)
        .replace("  auth_token:", "  num_node_groups: 2\n  auth_token:");
    let plan = env.write_plan("plan.yaml", &plan_text);
    let writer = Writer::start(&env);
    let mut child = env.spawn(&["run", plan.to_str().unwrap(), "--yes"]);
    let mut ended = false;
    wait_for("the cutover to wait", Duration::from_secs(120), || {
        ended = child.try_wait().unwrap().is_some();
        ended || status(&env, &plan)["state"] == "waiting"
    });
    if ended {
        panic!("the run ended before the cutover: {:?}", child.finish());
    }
    let source_port = resolve(&env.sandbox_dir(), &env.token_file()).port;
    wait_for(
        "400 writes on the source while the cutover waits",
        Duration::from_secs(60),
        || writer.writes_on(source_port) >= 400,
    );
    let released = env.run(&["cutover", plan.to_str().unwrap()]);
    assert_eq!(released.code, 0, "{released:?}");
    let run = child.finish();
    assert_eq!(run.code, 0, "{run:?}");
    let target = resolve(&env.sandbox_dir(), &env.token_file());
    wait_for("100 writes on the target", Duration::from_secs(30), || {
        writer.writes_on(target.port) >= 100
    });
    let report = writer.stop();
    assert!(
        Env::group(&env.sandbox_status(), SOURCE).is_none(),
        "the source was not deleted"
    );
    let lost = lost_writes(&report, &target);
    let cutover = Env::step(&status(&env, &plan), "cutover").clone();
    let pause = cutover["outputs"]["write_pause_ms"].as_u64().unwrap();
    println!(
        "live writer on a cluster: {} writes, {} reconnects, longest write {} ms; write pause {pause} ms over {} primaries; lost {}",
        report.writes,
        report.reconnects,
        report.longest_write.as_millis(),
        cutover["outputs"]["primaries_paused"],
        lost.len()
    );
    assert!(
        lost.is_empty(),
        "{} writes lost: {:?}",
        lost.len(),
        &lost[..lost.len().min(10)]
    );
    assert!(report.writes > 500, "too few writes: {}", report.writes);
    assert_eq!(cutover["outputs"]["primaries_paused"], 3, "{cutover}");
    assert!(pause < 1000, "write pause {pause} ms");
    assert!(
        report.ports.contains(&target.port) && report.ports.len() >= 2,
        "the writer never moved: {:?}",
        report.ports
    );
}

#[test]
fn rollback_from_a_cluster_target_brings_its_writes_back_onto_the_cluster_source() {
    let env = Env::new();
    cluster_source(&env, 500);
    let text = crate::cutover::postponed_plan(&env, "", true)
        .replace("    postpone: true\n", "")
        .replace("  auth_token:", "  num_node_groups: 2\n  auth_token:");
    let plan = env.write_plan("plan.yaml", &text);
    env.ok(&["run", plan.to_str().unwrap(), "--yes"]);
    assert_eq!(env.sandbox_status()["aliases"][ALIAS], TARGET);
    // After the tail every primary of the source is sealed: a client left on one waits.
    let sealed = Env::step(&status(&env, &plan), "cutover")["outputs"]["sealed"].clone();
    assert_eq!(sealed["primaries"], 3, "{sealed}");
    let wait = Duration::from_millis(300);
    assert_eq!(primaries_whose_writes_wait(&env.source_endpoint(), wait), 3);
    let target = resolve(&env.sandbox_dir(), &env.token_file());
    let mut on_target = ClusterConn::open(&target).unwrap();
    for i in 0..200 {
        let key = format!("after-switch:{i}");
        let _: () = redis::cmd("SET")
            .arg(&key)
            .arg("on-target")
            .query(on_target.on(&key))
            .unwrap();
    }
    let _: () = redis::cmd("DEL")
        .arg("ecm:user:000001")
        .query(on_target.on("ecm:user:000001"))
        .unwrap();

    let rolled = env.run(&["rollback", plan.to_str().unwrap(), "--yes"]);
    assert_eq!(rolled.code, 0, "{rolled:?}");
    assert_eq!(env.sandbox_status()["aliases"][ALIAS], SOURCE);
    let source = resolve(&env.sandbox_dir(), &env.token_file());
    assert_eq!(
        primaries_whose_writes_wait(&source, wait),
        0,
        "the rollback left the source sealed"
    );
    let mut on_source = ClusterConn::open(&source).unwrap();
    assert_eq!(on_source.conns.len(), 3);
    for i in 0..200 {
        let key = format!("after-switch:{i}");
        let v: Option<String> = redis::cmd("GET")
            .arg(&key)
            .query(on_source.on(&key))
            .unwrap();
        assert_eq!(v.as_deref(), Some("on-target"), "{key}");
    }
    let gone: i64 = redis::cmd("EXISTS")
        .arg("ecm:user:000001")
        .query(on_source.on("ecm:user:000001"))
        .unwrap();
    assert_eq!(
        gone, 0,
        "a key deleted on the target is still on the source"
    );
    let report = block_on(ecmigrate::data::verify::verify(
        &source,
        &target,
        ecmigrate::data::verify::VerifyMode::Full,
        5000,
        &|_, _| {},
    ))
    .unwrap();
    assert!(report.passed(), "{report:?}");
    assert_eq!(status(&env, &plan)["state"], "rolled_back");
}
