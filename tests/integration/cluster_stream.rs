//! `stream_copy` and the fenced cutover on cluster-mode-enabled sandbox groups: writes, overwrites,
//! deletes, expirations and a FLUSHALL after the snapshot reach a target of another shard count; a
//! subscription killed on one primary, a failover of one source primary and a killed run are each closed
//! by a full reconcile; the fence pauses every primary at once and proves every subscription; a
//! cluster-mode-disabled source streams into a 3-shard target.

use std::time::Duration;

use ecmigrate::data::connect::{RedisEndpoint, connect};
use ecmigrate::data::topology::Topology;
use ecmigrate::data::verify::{VerifyMode, verify};
use redis::aio::MultiplexedConnection;
use serde_json::Value;

use crate::harness::{Env, Running, SOURCE, TARGET, block_on, exec, full_plan, wait_for};

/// Every primary of a cluster, each key sent to the one owning its slot (what a cluster client does).
struct Routed {
    topology: Topology,
    conns: Vec<MultiplexedConnection>,
}

impl Routed {
    async fn at(any: &RedisEndpoint) -> Routed {
        let topology = Topology::discover(any).await.expect("topology");
        let mut conns = Vec::new();
        for s in &topology.shards {
            conns.push(connect(&s.endpoint).await.expect("connect"));
        }
        Routed { topology, conns }
    }

    /// One command whose key is `args[1]`, on the primary owning it.
    async fn exec(&mut self, args: &[&str]) {
        let shard = self.topology.shard_of(args[1].as_bytes());
        exec(&mut self.conns[shard], args).await;
    }

    /// `SET key value` for many keys, pipelined per primary.
    async fn set_many(&mut self, keys: impl Iterator<Item = String>) {
        let mut pipes: Vec<redis::Pipeline> = self.conns.iter().map(|_| redis::pipe()).collect();
        for key in keys {
            let shard = self.topology.shard_of(key.as_bytes());
            pipes[shard].cmd("SET").arg(&key).arg("v").ignore();
        }
        for (pipe, conn) in pipes.iter().zip(&mut self.conns) {
            let _: () = pipe.query_async(conn).await.expect("pipeline");
        }
    }

    /// A few keys held by primary `shard`.
    async fn some_keys(&mut self, shard: usize, n: usize) -> Vec<String> {
        let (_, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(0)
            .arg("COUNT")
            .arg(200)
            .query_async(&mut self.conns[shard])
            .await
            .unwrap();
        keys.into_iter().take(n).collect()
    }

    async fn get(&mut self, key: &str) -> Option<String> {
        let shard = self.topology.shard_of(key.as_bytes());
        redis::cmd("GET")
            .arg(key)
            .query_async(&mut self.conns[shard])
            .await
            .unwrap()
    }
}

fn source(env: &Env) -> RedisEndpoint {
    env.source_endpoint()
}

fn target(env: &Env) -> RedisEndpoint {
    env.target_endpoint()
}

/// Every key compared, the key counts equal.
fn assert_exact(env: &Env) {
    let report = block_on(verify(
        &source(env),
        &target(env),
        VerifyMode::Full,
        5000,
        &|_, _| {},
    ))
    .unwrap();
    assert!(report.passed(), "source and target differ: {report:?}");
}

/// A sandbox cluster `orders` of 3 shards (`replicas` each) with `keys` keys, and alias/orders.
fn cluster_source(env: &Env, replicas: u32, keys: u64) {
    env.ok(&[
        "sandbox",
        "up",
        "--group",
        SOURCE,
        "--shards",
        "3",
        "--replicas",
        &replicas.to_string(),
        "--keys",
        &keys.to_string(),
    ]);
    env.ok(&["sandbox", "kms", "create", "orders"]);
}

/// The full plan with `stream_copy` into `shards` shards, the source kept to compare with.
fn streaming_plan(env: &Env, shards: u32) -> String {
    let plan = full_plan(env)
        .replace(
            "  auth_token:",
            &format!("  num_node_groups: {shards}\n  auth_token:"),
        )
        .replace(
            "  - kind: restore_encrypted\n",
            "  - kind: restore_encrypted\n  - kind: stream_copy\n",
        );
    plan.split("  - kind: delete_source")
        .next()
        .unwrap()
        .to_string()
}

/// The postponed plan (stream_copy, cutover waiting for `ecmigrate cutover`) into `shards` shards.
fn postponed_plan(env: &Env, shards: u32, extra: &str) -> String {
    crate::cutover::postponed_plan(env, extra, true).replace(
        "  auth_token:",
        &format!("  num_node_groups: {shards}\n  auth_token:"),
    )
}

/// Start the run with restores that take a while, so the test writes between the snapshot and the copy.
fn start_run(env: &mut Env, plan: &std::path::Path) -> Running {
    env.set_env("ECMIGRATE_SANDBOX_CREATE_DELAY_MS", "3000");
    env.spawn(&["run", plan.to_str().unwrap(), "--yes"])
}

fn wait_for_journal(env: &Env, child: &mut Running, parts: &[&str]) {
    wait_for(
        &format!("{parts:?} in the journal"),
        Duration::from_secs(90),
        || {
            assert!(
                child.try_wait().unwrap().is_none(),
                "the run ended before {parts:?}: {}",
                env.journal()
            );
            env.journal()
                .lines()
                .any(|l| parts.iter().all(|p| l.contains(p)))
        },
    );
}

fn wait_until_backed_up(env: &Env, child: &mut Running) {
    wait_for_journal(
        env,
        child,
        &["\"event\":\"step_done\"", "\"kind\":\"backup\""],
    );
}

fn status(env: &Env, plan: &std::path::Path) -> Value {
    let r = env.ok(&["status", plan.to_str().unwrap(), "--output", "json"]);
    serde_json::from_str(&r.stdout).unwrap()
}

fn wait_until_waiting(env: &Env, plan: &std::path::Path, child: &mut Running) {
    wait_for("the cutover to wait", Duration::from_secs(120), || {
        assert!(child.try_wait().unwrap().is_none(), "the run ended early");
        status(env, plan)["state"] == "waiting"
    });
}

/// Writes of every kind on every primary after the snapshot, and a FLUSHALL on the second primary
/// followed by new keys there. Returns (an overwritten key, a deleted key) per primary.
async fn change_everything(src: &RedisEndpoint) -> Vec<(String, String)> {
    let mut c = Routed::at(src).await;
    let mut touched = Vec::new();
    for shard in 0..c.conns.len() {
        let keys = c.some_keys(shard, 2).await;
        c.exec(&["SET", &keys[0], "overwritten after the snapshot"])
            .await;
        c.exec(&["DEL", &keys[1]]).await;
        touched.push((keys[0].clone(), keys[1].clone()));
    }
    c.set_many((0..300).map(|i| format!("ecm:new:{i}"))).await;
    c.exec(&["SET", "ecm:expiring", "x", "PX", "300"]).await;
    c.exec(&["HSET", "ecm:new-hash", "a", "1", "b", "2"]).await;
    c.exec(&["SET", "ecm:with-ttl", "y", "EX", "3600"]).await;
    let _: () = redis::cmd("FLUSHALL")
        .query_async(&mut c.conns[1])
        .await
        .unwrap();
    // New keys after the flush, some of them on the flushed primary.
    c.set_many((0..100).map(|i| format!("ecm:after-flush:{i}")))
        .await;
    touched
}

fn streamed_changes_reach_a_cluster_of(shards: u32) {
    let mut env = Env::new();
    cluster_source(&env, 0, 2000);
    let plan = env.write_plan("plan.yaml", &streaming_plan(&env, shards));
    let mut child = start_run(&mut env, &plan);
    wait_until_backed_up(&env, &mut child);
    let touched = block_on(change_everything(&source(&env)));
    let run = child.finish();
    assert_eq!(run.code, 0, "{run:?}");
    assert!(
        run.stdout
            .contains("FLUSHDB, FLUSHALL or SWAPDB ran on the source primary"),
        "the flush on one primary must force a reconcile: {run:?}"
    );
    block_on(async {
        let mut t = Routed::at(&target(&env)).await;
        assert_eq!(t.conns.len(), shards as usize);
        for (overwritten, deleted) in &touched {
            let v = t.get(overwritten).await;
            let flushed = Routed::at(&source(&env))
                .await
                .get(overwritten)
                .await
                .is_none();
            if !flushed {
                assert_eq!(v.as_deref(), Some("overwritten after the snapshot"));
            }
            assert_eq!(t.get(deleted).await, None, "{deleted} was deleted");
        }
        assert_eq!(t.get("ecm:expiring").await, None, "an expired key lives on");
        assert_eq!(t.get("ecm:after-flush:7").await.as_deref(), Some("v"));
    });
    assert_exact(&env);
}

#[test]
fn writes_deletes_expirations_and_a_flushall_after_the_snapshot_reach_three_shards() {
    streamed_changes_reach_a_cluster_of(3);
}

#[test]
fn writes_deletes_expirations_and_a_flushall_after_the_snapshot_reach_two_shards() {
    streamed_changes_reach_a_cluster_of(2);
}

#[test]
fn a_subscription_killed_on_one_primary_forces_a_full_reconcile_and_the_result_is_exact() {
    let mut env = Env::new();
    cluster_source(&env, 0, 1500);
    let plan = env.write_plan("plan.yaml", &streaming_plan(&env, 2));
    let mut child = start_run(&mut env, &plan);
    wait_until_backed_up(&env, &mut child);
    let killed_on = block_on(async {
        let mut c = Routed::at(&source(&env)).await;
        let killed: i64 = redis::cmd("CLIENT")
            .arg("KILL")
            .arg("TYPE")
            .arg("pubsub")
            .query_async(&mut c.conns[2])
            .await
            .unwrap();
        assert_eq!(killed, 1, "one subscription per primary");
        // Written while that subscription is down: no notification reaches ecmigrate for these.
        c.set_many((0..300).map(|i| format!("ecm:during-gap:{i}")))
            .await;
        let gone = c.some_keys(2, 1).await;
        c.exec(&["DEL", &gone[0]]).await;
        c.topology.shards[2].endpoint.port
    });
    let run = child.finish();
    assert_eq!(run.code, 0, "{run:?}");
    assert!(
        run.stdout.contains(&format!(
            "subscription to redis://127.0.0.1:{killed_on}/0 dropped"
        )),
        "the gap must name the primary: {run:?}"
    );
    assert!(run.stdout.contains("full reconcile"), "{run:?}");
    assert_exact(&env);
}

#[test]
fn a_run_killed_during_stream_copy_of_a_cluster_and_resumed_ends_exact() {
    let mut env = Env::new();
    cluster_source(&env, 0, 1000);
    let plan = env.write_plan("plan.yaml", &streaming_plan(&env, 2));
    let mut child = start_run(&mut env, &plan);
    wait_until_backed_up(&env, &mut child);
    block_on(async {
        let mut c = Routed::at(&source(&env)).await;
        c.set_many((0..30_000).map(|i| format!("ecm:after:{i}")))
            .await;
    });
    wait_for_journal(
        &env,
        &mut child,
        &["\"event\":\"step_started\"", "\"kind\":\"stream_copy\""],
    );
    child.kill().unwrap();
    let _ = child.wait();
    block_on(async {
        let mut c = Routed::at(&source(&env)).await;
        c.exec(&["SET", "ecm:while-down", "1"]).await;
        c.exec(&["DEL", "ecm:after:0"]).await;
    });
    assert_ne!(status(&env, &plan)["state"], "done", "killed too late");
    let resumed = env.run(&["run", plan.to_str().unwrap(), "--yes"]);
    assert_eq!(resumed.code, 0, "{resumed:?}");
    assert!(resumed.stdout.contains("resumed run"), "{resumed:?}");
    assert_exact(&env);
    block_on(async {
        let mut t = Routed::at(&target(&env)).await;
        assert_eq!(t.get("ecm:while-down").await.as_deref(), Some("1"));
        assert_eq!(t.get("ecm:after:0").await, None);
    });
}

/// `role:` of a node.
async fn role(node: &RedisEndpoint) -> String {
    let mut c = connect(node).await.unwrap();
    let info: String = redis::cmd("INFO")
        .arg("replication")
        .query_async(&mut c)
        .await
        .unwrap();
    info.lines()
        .find_map(|l| l.trim().strip_prefix("role:"))
        .unwrap_or("")
        .to_string()
}

#[test]
fn a_failover_of_one_source_primary_during_the_tail_is_detected_and_reconciled() {
    let env = Env::new();
    cluster_source(&env, 1, 1500);
    let plan = env.write_plan("plan.yaml", &postponed_plan(&env, 3, ""));
    let mut child = env.spawn(&["run", plan.to_str().unwrap(), "--yes"]);
    wait_until_waiting(&env, &plan, &mut child);
    let reconciles = |s: &Value| s["stream"]["reconciles"].as_u64().unwrap_or(0);
    let before = reconciles(&status(&env, &plan));

    // Promote the replica of the second shard, as a failover would.
    let sandbox = env.sandbox_status();
    let g = Env::group(&sandbox, SOURCE).unwrap();
    let replica = g["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["role"] == "replica" && n["shard"] == 1)
        .expect("a replica of shard 1");
    let replica = RedisEndpoint::plain("127.0.0.1", replica["port"].as_u64().unwrap() as u16);
    block_on(async {
        let mut c = connect(&replica).await.unwrap();
        exec(&mut c, &["CLUSTER", "FAILOVER"]).await;
    });
    wait_for(
        "the replica to be promoted",
        Duration::from_secs(30),
        || block_on(role(&replica)) == "master",
    );
    // Writes on the new primary (and the others), which no subscription saw at first.
    wait_for(
        "every node to agree on the new primary",
        Duration::from_secs(30),
        || {
            block_on(async {
                let t = Topology::discover(&source(&env)).await.unwrap();
                t.shards.iter().any(|s| s.endpoint.port == replica.port)
            })
        },
    );
    block_on(async {
        let mut c = Routed::at(&source(&env)).await;
        c.set_many((0..300).map(|i| format!("ecm:after-failover:{i}")))
            .await;
    });
    wait_for(
        "the stream to reconcile after the failover",
        Duration::from_secs(60),
        || reconciles(&status(&env, &plan)) > before,
    );
    let released = env.run(&["cutover", plan.to_str().unwrap()]);
    assert_eq!(released.code, 0, "{released:?}");
    let run = child.finish();
    assert_eq!(run.code, 0, "{run:?}");
    let all = run.all_output();
    assert!(
        all.contains("a failover") || all.contains("slot map changed"),
        "the failover must be named as the gap: {run:?}"
    );
    assert_exact(&env);
    block_on(async {
        let mut t = Routed::at(&target(&env)).await;
        assert_eq!(t.get("ecm:after-failover:299").await.as_deref(), Some("v"));
    });
}

// The fence delay is a test hook (`--features test-hooks`, as scripts/test.sh builds).
#[cfg(feature = "test-hooks")]
#[test]
fn the_fence_pauses_every_primary_at_once_and_proves_every_subscription() {
    let mut env = Env::new();
    cluster_source(&env, 0, 1000);
    let plan = env.write_plan(
        "plan.yaml",
        &postponed_plan(&env, 2, "    max_write_pause_ms: 5000\n"),
    );
    // The first fence holds its pause for 1.2 s, long enough to see a write to each primary wait.
    env.set_env("ECMIGRATE_TEST_FENCE_DELAY", "1200:1");
    let mut child = env.spawn(&["run", plan.to_str().unwrap(), "--yes"]);
    wait_until_waiting(&env, &plan, &mut child);
    let primaries: Vec<RedisEndpoint> = block_on(Topology::discover(&source(&env)))
        .unwrap()
        .shards
        .into_iter()
        .map(|s| s.endpoint)
        .collect();
    assert_eq!(primaries.len(), 3);
    // On each primary, write until one write waits for the fence (errors count: the fence closes the
    // connections of clients waiting in it).
    let writers: Vec<_> = primaries
        .iter()
        .cloned()
        .map(|node| {
            std::thread::spawn(move || {
                let started = std::time::Instant::now();
                let shard_key = block_on(async {
                    let t = Topology::discover(&node).await.unwrap();
                    let me = t
                        .shards
                        .iter()
                        .position(|s| s.endpoint.port == node.port)
                        .unwrap();
                    (0..)
                        .map(|i| format!("ecm:fence:{i}"))
                        .find(|k| t.shard_of(k.as_bytes()) == me)
                        .unwrap()
                });
                block_on(async {
                    let mut conn: Option<MultiplexedConnection> = None;
                    while started.elapsed() < Duration::from_secs(60) {
                        let c = match &mut conn {
                            Some(c) => c,
                            None => match connect(&node).await {
                                Ok(c) => conn.insert(c),
                                Err(_) => continue,
                            },
                        };
                        let t = std::time::Instant::now();
                        let wrote: redis::RedisResult<()> = redis::cmd("SET")
                            .arg(&shard_key)
                            .arg("x")
                            .query_async(c)
                            .await;
                        if t.elapsed() >= Duration::from_millis(600) {
                            return Some(t.elapsed());
                        }
                        if wrote.is_err() {
                            conn = None;
                        }
                        // Paced, not awaiting anything: a write every 5 ms is enough to land in the fence.
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                    None
                })
            })
        })
        .collect();
    let released = env.run(&["cutover", plan.to_str().unwrap()]);
    assert_eq!(released.code, 0, "{released:?}");
    let run = child.finish();
    assert_eq!(run.code, 0, "{run:?}");
    for (node, w) in primaries.iter().zip(writers) {
        let waited = w.join().unwrap();
        assert!(
            waited.is_some(),
            "no write to {} waited for the fence",
            node.port
        );
    }
    let cutover = crate::harness::Env::step(&status(&env, &plan), "cutover").clone();
    let outputs = &cutover["outputs"];
    assert_eq!(outputs["primaries_paused"], 3, "{cutover}");
    assert_eq!(outputs["subscriptions_proven"], 3, "{cutover}");
    let pause = outputs["write_pause_ms"].as_u64().unwrap();
    assert!(
        (1200..5000).contains(&pause),
        "the pause ({pause} ms) is the longest of the primaries, inside the bound"
    );
    assert_exact(&env);
}

#[test]
fn a_cluster_mode_disabled_source_streams_into_a_three_shard_target() {
    let mut env = Env::new();
    env.sandbox_with_source(1500);
    let plan = env.write_plan("plan.yaml", &streaming_plan(&env, 3));
    let mut child = start_run(&mut env, &plan);
    wait_until_backed_up(&env, &mut child);
    block_on(async {
        let mut c = connect(&source(&env)).await.unwrap();
        exec(&mut c, &["SET", "ecm:after", "1"]).await;
        exec(&mut c, &["DEL", "ecm:user:000001"]).await;
        exec(&mut c, &["HSET", "ecm:h", "a", "1"]).await;
    });
    let run = child.finish();
    assert_eq!(run.code, 0, "{run:?}");
    let status = env.sandbox_status();
    assert_eq!(
        Env::group(&status, TARGET).unwrap()["num_node_groups"],
        3,
        "{status}"
    );
    assert_exact(&env);
    block_on(async {
        let mut t = Routed::at(&target(&env)).await;
        assert_eq!(t.conns.len(), 3);
        assert_eq!(t.get("ecm:after").await.as_deref(), Some("1"));
        assert_eq!(t.get("ecm:user:000001").await, None);
    });
}
