//! The cutover and the rollback on cluster-mode-enabled sandbox groups, with an application writing all
//! along through the alias (a cluster client: every key on the primary owning its slot): the full plan
//! (stream_copy, a postponed cutover released by `ecmigrate cutover`, delete_source) loses no
//! acknowledged write and pauses writes for less than a second; a rollback brings the target's writes
//! back onto a cluster source (lifting the seal); a client that stays on the old primaries loses no
//! acknowledged write either: copied as late writes in the tail, then held by the seal; a primary that
//! refuses the seal leaves the others sealed.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use ecmigrate::data::connect::RedisEndpoint;

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

/// The cutover plan into 2 shards, keeping the source, switching without a hold.
fn unheld_plan(env: &Env) -> String {
    crate::cutover::postponed_plan(env, "", true)
        .replace("    postpone: true\n", "")
        .replace("  auth_token:", "  num_node_groups: 2\n  auth_token:")
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
    let text = unheld_plan(&env);
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

/// A client that never leaves the old group: connections to each source primary by address, reopened
/// to the same addresses whenever they fail (as a cluster client's pools do). Each write is a SET of a
/// key of its own; it keeps the keys acknowledged, and counts the writes that waited past `wait`.
struct StaleClient {
    stop: Arc<AtomicBool>,
    waited: Arc<AtomicUsize>,
    thread: std::thread::JoinHandle<Vec<String>>,
}

impl StaleClient {
    fn start(source: RedisEndpoint, wait: Duration) -> StaleClient {
        let (stop, waited) = (
            Arc::new(AtomicBool::new(false)),
            Arc::new(AtomicUsize::new(0)),
        );
        let (stopping, waits) = (stop.clone(), waited.clone());
        let thread = std::thread::spawn(move || {
            let mut acknowledged = Vec::new();
            let mut conn: Option<ClusterConn> = None;
            let mut i = 0u64;
            while !stopping.load(Ordering::Relaxed) {
                let c = match &mut conn {
                    Some(c) => c,
                    None => match ClusterConn::open(&source) {
                        Ok(c) => conn.insert(c),
                        Err(_) => continue,
                    },
                };
                let key = format!("stale:{i}");
                let on = c.on(&key);
                on.set_read_timeout(Some(wait)).unwrap();
                let wrote: redis::RedisResult<()> = redis::cmd("SET").arg(&key).arg(i).query(on);
                match wrote {
                    Ok(()) => acknowledged.push(key),
                    Err(e) => {
                        if e.is_timeout() {
                            waits.fetch_add(1, Ordering::Relaxed);
                        }
                        conn = None;
                    }
                }
                i += 1;
                // Paced, not awaiting anything: a write every 5 ms.
                std::thread::sleep(Duration::from_millis(5));
            }
            acknowledged
        });
        StaleClient {
            stop,
            waited,
            thread,
        }
    }

    fn waited(&self) -> usize {
        self.waited.load(Ordering::Relaxed)
    }

    fn stop(self) -> Vec<String> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().unwrap()
    }
}

#[test]
fn a_client_left_on_the_old_cluster_loses_no_acknowledged_write_once_the_source_is_sealed() {
    let env = Env::new();
    cluster_source(&env, 300);
    let text = unheld_plan(&env);
    let plan = env.write_plan("plan.yaml", &text);
    let source = env.source_endpoint();
    let stale = StaleClient::start(source.clone(), Duration::from_millis(300));
    env.ok(&["run", plan.to_str().unwrap(), "--yes"]);
    // The run ended with the seal: from here every write of the stale client waits and fails.
    wait_for(
        "two writes of the stale client to wait",
        Duration::from_secs(30),
        || stale.waited() >= 2,
    );
    let waited = stale.waited();
    let acknowledged = stale.stop();
    assert_eq!(
        primaries_whose_writes_wait(&source, Duration::from_millis(300)),
        3
    );
    let cutover = Env::step(&status(&env, &plan), "cutover").clone();
    let late = cutover["outputs"]["late"]["late_changes"].as_u64().unwrap();
    assert!(
        late > 0,
        "the stale client wrote nothing after the switch: {cutover}"
    );
    let target = resolve(&env.sandbox_dir(), &env.token_file());
    let mut on_target = ClusterConn::open(&target).unwrap();
    let missing: Vec<&String> = acknowledged
        .iter()
        .filter(|key| {
            let v: Option<String> = redis::cmd("GET").arg(key).query(on_target.on(key)).unwrap();
            v.is_none()
        })
        .collect();
    println!(
        "stale client: {} writes acknowledged, {waited} waited, {late} late changes copied; missing on the target: {}",
        acknowledged.len(),
        missing.len()
    );
    assert!(
        missing.is_empty(),
        "{} acknowledged writes of the stale client are not on the target: {:?}",
        missing.len(),
        &missing[..missing.len().min(10)]
    );
}

#[test]
fn a_primary_that_refuses_the_seal_leaves_the_others_sealed_and_status_says_so() {
    let env = Env::new();
    cluster_source(&env, 300);
    let text = unheld_plan(&env).replace("    grace_seconds: 1\n", "    grace_seconds: 3\n");
    let plan = env.write_plan("plan.yaml", &text);
    let mut run = env.spawn(&["run", plan.to_str().unwrap(), "--yes"]);
    // Once clients are switched (the fence has used CLIENT PAUSE), one source primary stops allowing it,
    // as a changed ACL would: the seal after the tail holds on the other two.
    let mut ended = false;
    wait_for("the switch", Duration::from_secs(120), || {
        ended = run.try_wait().unwrap().is_some();
        ended || env.journal().contains("\"PointAlias\"")
    });
    assert!(!ended, "the run ended early: {:?}", run.finish());
    let primaries: Vec<RedisEndpoint> = block_on(async {
        let topology = ecmigrate::data::topology::Topology::discover(&env.source_endpoint())
            .await
            .unwrap();
        topology.shards.iter().map(|s| s.endpoint.clone()).collect()
    });
    assert_eq!(primaries.len(), 3);
    let mut refusing = primaries[0].client().unwrap().get_connection().unwrap();
    let () = redis::cmd("ACL")
        .arg("SETUSER")
        .arg("default")
        .arg("-client|pause")
        .query(&mut refusing)
        .unwrap();
    assert!(
        !env.journal().contains("\"SealSource\""),
        "the seal came before the ACL change: the tail was too short for this test"
    );
    let done = run.finish();
    assert_eq!(done.code, 0, "{done:?}");

    let sealed = Env::step(&status(&env, &plan), "cutover")["outputs"]["sealed"].clone();
    assert_eq!(sealed["primaries"], 2, "{sealed}");
    assert_eq!(sealed["refused"], 1, "{sealed}");
    assert_eq!(status(&env, &plan)["seal"]["state"], "partly_sealed");
    assert_eq!(
        primaries_whose_writes_wait(&env.source_endpoint(), Duration::from_millis(300)),
        2
    );
    let shown = env.ok(&["status", plan.to_str().unwrap()]).stdout;
    assert!(
        shown.contains("source `orders` sealed on 2 primaries only"),
        "{shown}"
    );
}
