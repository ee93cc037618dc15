//! The cutover and the rollback on cluster-mode-enabled sandbox groups, with an application writing all
//! along through the alias (a cluster client: every key on the primary owning its slot): the full plan
//! (stream_copy, a postponed cutover released by `ecmigrate cutover`, delete_source) loses no
//! acknowledged write and pauses writes for less than a second; a rollback brings the target's writes
//! back onto a cluster source.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ecmigrate::data::connect::RedisEndpoint;
use ecmigrate::data::topology::Topology;
use serde_json::Value;

use crate::harness::{Env, SOURCE, TARGET, block_on, wait_for};

const ALIAS: &str = "orders-endpoint";

/// The node the alias stands for, as an application reaches it: plain for the source, TLS with the
/// sandbox CA and the plan's token for the target.
fn resolve(sandbox_dir: &std::path::Path, token_file: &std::path::Path) -> RedisEndpoint {
    let out = std::process::Command::new(crate::harness::bin())
        .args(["sandbox", "status", "--output", "json"])
        .env("ECMIGRATE_SANDBOX_DIR", sandbox_dir)
        .output()
        .unwrap();
    let status: Value = serde_json::from_slice(&out.stdout).unwrap();
    let port = status["alias_endpoints"][ALIAS]["port"]
        .as_u64()
        .unwrap_or_else(|| panic!("no endpoint for {ALIAS}: {status}")) as u16;
    if status["aliases"][ALIAS] == TARGET {
        RedisEndpoint {
            port,
            ..crate::harness::encrypted_primary(&status, TARGET, token_file)
        }
    } else {
        RedisEndpoint::plain("127.0.0.1", port)
    }
}

/// A cluster's primaries, each key routed to the one owning its slot.
struct ClusterConn {
    topology: Topology,
    conns: Vec<redis::Connection>,
}

impl ClusterConn {
    fn open(any: &RedisEndpoint) -> redis::RedisResult<ClusterConn> {
        let topology = block_on(Topology::discover(any))
            .map_err(|e| redis::RedisError::from(std::io::Error::other(e.to_string())))?;
        let mut conns = Vec::new();
        for s in &topology.shards {
            let c = s
                .endpoint
                .client()?
                .get_connection_with_timeout(Duration::from_secs(2))?;
            c.set_read_timeout(Some(Duration::from_secs(10)))?;
            conns.push(c);
        }
        Ok(ClusterConn { topology, conns })
    }

    fn on(&mut self, key: &str) -> &mut redis::Connection {
        &mut self.conns[self.topology.shard_of(key.as_bytes())]
    }
}

#[derive(Debug, Default)]
struct WriterReport {
    model: BTreeMap<String, Option<(String, bool)>>,
    writes: u64,
    reconnects: u64,
    longest_write: Duration,
    /// The alias's endpoint port at each (re)connection.
    ports: Vec<u16>,
}

/// An application on a cluster: resolves the alias on every (re)connect, writes sets, overwrites,
/// deletes and expiring sets continuously, and retries a failed write on new connections.
struct Writer {
    stop: Arc<AtomicBool>,
    /// The alias's port now, and the writes acknowledged since connecting there.
    current: Arc<Mutex<(u16, u64)>>,
    thread: std::thread::JoinHandle<WriterReport>,
}

impl Writer {
    fn start(env: &Env) -> Writer {
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let current = Arc::new(Mutex::new((0, 0)));
        let progress = current.clone();
        let (sandbox_dir, token_file) = (env.sandbox_dir(), env.token_file());
        let thread = std::thread::spawn(move || {
            let mut report = WriterReport::default();
            let connect = |report: &mut WriterReport| -> ClusterConn {
                let started = Instant::now();
                loop {
                    let endpoint = resolve(&sandbox_dir, &token_file);
                    match ClusterConn::open(&endpoint) {
                        Ok(c) => {
                            report.ports.push(endpoint.port);
                            *progress.lock().unwrap() = (endpoint.port, 0);
                            return c;
                        }
                        Err(e) => {
                            assert!(
                                started.elapsed() < Duration::from_secs(30),
                                "cannot reconnect: {e}"
                            );
                            std::thread::sleep(Duration::from_millis(20));
                        }
                    }
                }
            };
            let mut conn = connect(&mut report);
            let mut i: u64 = 0;
            while !stopped.load(Ordering::SeqCst) {
                let key = format!("live:{}", (i * 7919) % 4000);
                let value = format!("v{i}");
                let kind = i % 10;
                let cmd = match kind {
                    0..=5 => redis::cmd("SET").arg(&key).arg(&value).to_owned(),
                    6 | 7 => redis::cmd("DEL").arg(&key).to_owned(),
                    _ => redis::cmd("SET")
                        .arg(&key)
                        .arg(&value)
                        .arg("EX")
                        .arg(600)
                        .to_owned(),
                };
                let started = Instant::now();
                while cmd.query::<redis::Value>(conn.on(&key)).is_err() {
                    report.reconnects += 1;
                    conn = connect(&mut report);
                }
                report.longest_write = report.longest_write.max(started.elapsed());
                report.model.insert(
                    key,
                    match kind {
                        6 | 7 => None,
                        8 | 9 => Some((value, true)),
                        _ => Some((value, false)),
                    },
                );
                report.writes += 1;
                progress.lock().unwrap().1 += 1;
                i += 1;
                // Paced like an application, not awaiting anything.
                std::thread::sleep(Duration::from_millis(2));
            }
            report
        });
        Writer {
            stop,
            current,
            thread,
        }
    }

    fn writes_on(&self, port: u16) -> u64 {
        match *self.current.lock().unwrap() {
            (p, n) if p == port => n,
            _ => 0,
        }
    }

    fn stop(self) -> WriterReport {
        self.stop.store(true, Ordering::SeqCst);
        self.thread.join().expect("the writer panicked")
    }
}

/// The acknowledged writes missing on the cluster behind `endpoint`.
fn lost_writes(report: &WriterReport, endpoint: &RedisEndpoint) -> Vec<String> {
    let mut conn = ClusterConn::open(endpoint).unwrap();
    let mut lost = Vec::new();
    for (key, expected) in &report.model {
        let c = conn.on(key);
        let value: Option<String> = redis::cmd("GET").arg(key).query(c).unwrap();
        let ttl: i64 = redis::cmd("TTL").arg(key).query(c).unwrap();
        let ok = match expected {
            None => value.is_none(),
            Some((v, expiring)) => value.as_deref() == Some(v) && ((ttl > 0) == *expiring),
        };
        if !ok {
            lost.push(format!(
                "{key}: expected {expected:?}, found {value:?} (ttl {ttl})"
            ));
        }
    }
    lost
}

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
