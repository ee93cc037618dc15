//! `stream_copy` on the sandbox: writes made after the snapshot reach the target — overwrites, deletes,
//! expirations, a FLUSHDB —, a killed subscription or a killed run is closed by a full reconcile, and big
//! keys are copied in chunks. Where CONFIG is blocked (as on ElastiCache), notifications are still found.

use std::time::{Duration, Instant};

use ecmigrate::data::connect::{RedisEndpoint, connect};
use ecmigrate::data::verify::{VerifyMode, verify};
use redis::aio::MultiplexedConnection;

use crate::harness::{Env, Run, Running, SOURCE, block_on, exec, full_plan, noise};

/// The full plan with `stream_copy`, and without `delete_source` so the source stays to compare with.
fn streaming_plan(env: &Env) -> String {
    let plan = full_plan(env).replace(
        "  - kind: restore_encrypted\n",
        "  - kind: restore_encrypted\n  - kind: stream_copy\n",
    );
    plan.split("  - kind: delete_source")
        .next()
        .unwrap()
        .to_string()
}

/// Wait until the journal has a line with every one of `parts`.
fn wait_for_event(env: &Env, child: &mut Running, parts: &[&str]) {
    let started = Instant::now();
    loop {
        if env
            .journal()
            .lines()
            .any(|l| parts.iter().all(|p| l.contains(p)))
        {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "never saw {parts:?}: {}",
            env.journal()
        );
        assert!(
            child.try_wait().unwrap().is_none(),
            "the run ended before {parts:?}: {}",
            env.journal()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn finish(child: Running) -> Run {
    child.finish()
}

fn source(env: &Env) -> RedisEndpoint {
    RedisEndpoint::plain(
        "127.0.0.1",
        Env::primary_port(&env.sandbox_status(), SOURCE),
    )
}

fn target(env: &Env) -> RedisEndpoint {
    env.target_endpoint()
}

async fn conn(e: &RedisEndpoint, db: i64) -> MultiplexedConnection {
    connect(&e.with_db(db)).await.expect("connect")
}

/// Every key of every database compared, and the key counts equal.
fn assert_exact(env: &Env) {
    let (s, t) = (source(env), target(env));
    let report = block_on(verify(&s, &t, VerifyMode::Full, 5000, &|_, _| {})).unwrap();
    assert!(report.passed(), "source and target differ: {report:?}");
}

fn start_run(env: &mut Env, plan: &std::path::Path, create_delay_ms: u32) -> Running {
    env.set_env(
        "ECMIGRATE_SANDBOX_CREATE_DELAY_MS",
        &create_delay_ms.to_string(),
    );
    env.spawn(&["run", plan.to_str().unwrap(), "--yes"])
}

#[test]
fn writes_overwrites_deletes_expirations_and_a_flushdb_after_the_snapshot_reach_the_target() {
    let mut env = Env::new();
    env.sandbox_with_source(2000);
    let src = source(&env);
    // Keys in database 5 that a FLUSHDB will remove after the snapshot.
    block_on(async {
        let mut c = conn(&src, 5).await;
        for i in 0..10 {
            let _: () = redis::cmd("SET")
                .arg(format!("ecm:db5:{i}"))
                .arg(i)
                .query_async(&mut c)
                .await
                .unwrap();
        }
    });
    let plan = env.write_plan("plan.yaml", &streaming_plan(&env));
    let mut child = start_run(&mut env, &plan, 3000);
    wait_for_event(
        &env,
        &mut child,
        &["\"event\":\"step_done\"", "\"kind\":\"backup\""],
    );

    let (existing, deleted) = block_on(async {
        let mut c = conn(&src, 0).await;
        let (_, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(0)
            .arg("COUNT")
            .arg(50)
            .query_async(&mut c)
            .await
            .unwrap();
        let existing = keys[0].clone();
        let deleted = keys[1].clone();
        exec(
            &mut c,
            &["SET", &existing, "overwritten after the snapshot"],
        )
        .await;
        exec(&mut c, &["DEL", &deleted]).await;
        exec(&mut c, &["SET", "ecm:new", "written after the snapshot"]).await;
        let _: () = redis::cmd("SET")
            .arg("ecm:expiring")
            .arg("x")
            .arg("PX")
            .arg(300)
            .query_async(&mut c)
            .await
            .unwrap();
        exec(&mut c, &["HSET", "ecm:new-hash", "a", "1", "b", "2"]).await;
        let _: () = redis::cmd("SET")
            .arg("ecm:with-ttl")
            .arg("y")
            .arg("EX")
            .arg(3600)
            .query_async(&mut c)
            .await
            .unwrap();
        let mut c5 = conn(&src, 5).await;
        let _: () = redis::cmd("FLUSHDB").query_async(&mut c5).await.unwrap();
        exec(&mut c5, &["SET", "ecm:db5:after-flush", "z"]).await;
        (existing, deleted)
    });
    let run = finish(child);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(
        run.stdout.contains("FLUSHDB"),
        "the flush must force a reconcile: {run:?}"
    );

    let t = target(&env);
    block_on(async {
        let mut c = conn(&t, 0).await;
        let v: String = redis::cmd("GET")
            .arg(&existing)
            .query_async(&mut c)
            .await
            .unwrap();
        assert_eq!(v, "overwritten after the snapshot");
        let gone: bool = redis::cmd("EXISTS")
            .arg(&deleted)
            .query_async(&mut c)
            .await
            .unwrap();
        assert!(!gone, "{deleted} was deleted on the source");
        let v: String = redis::cmd("GET")
            .arg("ecm:new")
            .query_async(&mut c)
            .await
            .unwrap();
        assert_eq!(v, "written after the snapshot");
        let expired: bool = redis::cmd("EXISTS")
            .arg("ecm:expiring")
            .query_async(&mut c)
            .await
            .unwrap();
        assert!(!expired, "an expired key must not live on");
        let h: Vec<String> = redis::cmd("HGETALL")
            .arg("ecm:new-hash")
            .query_async(&mut c)
            .await
            .unwrap();
        assert_eq!(h, ["a", "1", "b", "2"]);
        let ttl: i64 = redis::cmd("PTTL")
            .arg("ecm:with-ttl")
            .query_async(&mut c)
            .await
            .unwrap();
        assert!(
            ttl > 3_500_000 && ttl <= 3_600_000,
            "the TTL must not drift: {ttl}"
        );
        let mut c5 = conn(&t, 5).await;
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg("*")
            .query_async(&mut c5)
            .await
            .unwrap();
        assert_eq!(
            keys,
            ["ecm:db5:after-flush"],
            "the FLUSHDB must reach the target"
        );
    });
    assert_exact(&env);
}

#[test]
fn a_killed_subscription_forces_a_full_reconcile_and_the_result_is_exact() {
    let mut env = Env::new();
    env.sandbox_with_source(2000);
    let src = source(&env);
    let plan = env.write_plan("plan.yaml", &streaming_plan(&env));
    let mut child = start_run(&mut env, &plan, 3000);
    wait_for_event(
        &env,
        &mut child,
        &["\"event\":\"step_done\"", "\"kind\":\"backup\""],
    );
    block_on(async {
        let mut c = conn(&src, 0).await;
        exec(&mut c, &["SET", "ecm:before-kill", "1"]).await;
        let killed: i64 = redis::cmd("CLIENT")
            .arg("KILL")
            .arg("TYPE")
            .arg("pubsub")
            .query_async(&mut c)
            .await
            .unwrap();
        assert!(killed >= 1, "no subscription to kill");
        // Written while the subscription is down: no notification reaches ecmigrate for these.
        for i in 0..200 {
            let _: () = redis::cmd("SET")
                .arg(format!("ecm:during-gap:{i}"))
                .arg(i)
                .query_async(&mut c)
                .await
                .unwrap();
        }
        exec(&mut c, &["DEL", "ecm:user:000001"]).await;
    });
    let run = finish(child);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(
        run.stdout.contains(&format!(
            "subscription to redis://127.0.0.1:{}/0 dropped",
            src.port
        )),
        "the gap must be reported: {run:?}"
    );
    assert!(run.stdout.contains("full reconcile"), "{run:?}");
    assert_exact(&env);
}

#[test]
fn a_run_killed_during_stream_copy_and_resumed_ends_exact() {
    let mut env = Env::new();
    env.sandbox_with_source(1000);
    let src = source(&env);
    let plan = env.write_plan("plan.yaml", &streaming_plan(&env));
    let mut child = start_run(&mut env, &plan, 3000);
    wait_for_event(
        &env,
        &mut child,
        &["\"event\":\"step_done\"", "\"kind\":\"backup\""],
    );
    // Enough changes after the snapshot that replaying them takes a while.
    block_on(async {
        let mut c = conn(&src, 0).await;
        for chunk in 0..40 {
            let mut p = redis::pipe();
            for i in 0..1000 {
                p.cmd("SET")
                    .arg(format!("ecm:after:{chunk}:{i}"))
                    .arg("v")
                    .ignore();
            }
            let _: () = p.query_async(&mut c).await.unwrap();
        }
    });
    wait_for_event(
        &env,
        &mut child,
        &["\"event\":\"step_started\"", "\"kind\":\"stream_copy\""],
    );
    child.kill().unwrap(); // SIGKILL
    let _ = child.wait();
    // More changes while nothing is capturing.
    block_on(async {
        let mut c = conn(&src, 0).await;
        exec(&mut c, &["SET", "ecm:while-down", "1"]).await;
        exec(&mut c, &["DEL", "ecm:after:0:0"]).await;
    });
    let status: serde_json::Value = serde_json::from_str(
        &env.ok(&["status", plan.to_str().unwrap(), "--output", "json"])
            .stdout,
    )
    .unwrap();
    assert_ne!(
        status["state"], "done",
        "the kill landed after the run finished: {status}"
    );

    let resumed = env.run(&["run", plan.to_str().unwrap(), "--yes"]);
    assert_eq!(resumed.code, 0, "{resumed:?}");
    assert!(
        resumed.stdout.contains("resumed run"),
        "the resumed capture must be marked as a gap: {resumed:?}"
    );
    assert_exact(&env);
    block_on(async {
        let mut c = conn(&target(&env), 0).await;
        let v: Option<String> = redis::cmd("GET")
            .arg("ecm:while-down")
            .query_async(&mut c)
            .await
            .unwrap();
        assert_eq!(v.as_deref(), Some("1"));
        let n: u64 = redis::cmd("DBSIZE").query_async(&mut c).await.unwrap();
        assert_eq!(n, 1000 + 40_000 - 1 + 1);
    });
}

#[test]
fn keys_larger_than_the_restore_bound_are_copied_in_chunks_with_their_ttls() {
    let env = Env::new();
    env.ok(&[
        "sandbox",
        "up",
        "--group",
        "left",
        "--replicas",
        "0",
        "--keys",
        "100",
    ]);
    env.ok(&[
        "sandbox",
        "up",
        "--group",
        "right",
        "--replicas",
        "0",
        "--keys",
        "0",
    ]);
    let status = env.sandbox_status();
    let (l, r) = (
        Env::primary_port(&status, "left"),
        Env::primary_port(&status, "right"),
    );
    let left = RedisEndpoint::plain("127.0.0.1", l);
    block_on(async {
        let mut c = conn(&left, 0).await;
        let mut p = redis::pipe();
        for i in 0..5000 {
            p.cmd("HSET")
                .arg("big:hash")
                .arg(format!("f{i}"))
                .arg(format!("value-{i}"))
                .ignore();
            p.cmd("RPUSH")
                .arg("big:list")
                .arg(format!("item-{i}"))
                .ignore();
            p.cmd("SADD")
                .arg("big:set")
                .arg(format!("member-{i}"))
                .ignore();
            p.cmd("ZADD")
                .arg("big:zset")
                .arg(i as f64 / 3.0)
                .arg(format!("m{i}"))
                .ignore();
        }
        p.cmd("SET")
            .arg("big:string")
            .arg(noise(&mut 0x9e37_79b9_7f4a_7c15, 300_000))
            .ignore();
        p.cmd("PEXPIRE").arg("big:hash").arg(7_200_000).ignore();
        let _: () = p.query_async(&mut c).await.unwrap();
    });
    let copy = env.ok(&[
        "copy",
        &format!("redis://127.0.0.1:{l}"),
        &format!("redis://127.0.0.1:{r}"),
        "--max-restore-bytes",
        "10000",
        "--output",
        "json",
    ]);
    let summary: serde_json::Value =
        serde_json::from_str(copy.stdout.lines().last().unwrap()).unwrap();
    assert_eq!(summary["big_keys"], 5, "{summary}");
    // Above the RESTORE bound but, all together, under the lane's 1 MiB reply bound: no batch was split.
    assert_eq!(summary["oversized_batches"], 0, "{summary}");
    let verified = env.run(&[
        "verify",
        &format!("redis://127.0.0.1:{l}"),
        &format!("redis://127.0.0.1:{r}"),
        "--full",
    ]);
    assert_eq!(verified.code, 0, "{verified:?}");
    block_on(async {
        let mut c = conn(&RedisEndpoint::plain("127.0.0.1", r), 0).await;
        let ttl: i64 = redis::cmd("PTTL")
            .arg("big:hash")
            .query_async(&mut c)
            .await
            .unwrap();
        assert!(ttl > 7_100_000, "the big key's TTL: {ttl}");
        let leftovers: Vec<String> = redis::cmd("KEYS")
            .arg("*ecmigrate-tmp*")
            .query_async(&mut c)
            .await
            .unwrap();
        assert!(leftovers.is_empty(), "{leftovers:?}");
    });
}

#[test]
fn preflight_refuses_stream_copy_when_keyspace_notifications_are_off() {
    let env = Env::new();
    env.sandbox_with_source(10);
    block_on(async {
        let mut c = conn(&source(&env), 0).await;
        exec(&mut c, &["CONFIG", "SET", "notify-keyspace-events", ""]).await;
    });
    let plan = env.write_plan("plan.yaml", &streaming_plan(&env));
    let run = env.run(&["run", plan.to_str().unwrap(), "--yes"]);
    assert_eq!(run.code, 3, "{run:?}");
    assert!(run.stderr.contains("[keyspace_notifications]"), "{run:?}");
    assert!(run.stderr.contains("notify-keyspace-events"), "{run:?}");
    assert!(
        run.stderr.contains("parameter group"),
        "the hint must say the ElastiCache fix: {run:?}"
    );
}

/// A redis-server of its own with CONFIG renamed away, as on ElastiCache; stopped on drop.
struct NoConfigServer {
    child: std::process::Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl NoConfigServer {
    fn start() -> NoConfigServer {
        let dir = tempfile::tempdir().expect("temp dir");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let conf = dir.path().join("redis.conf");
        std::fs::write(
            &conf,
            format!(
                "port {port}\nbind 127.0.0.1\nsave \"\"\nappendonly no\ndir {}\nnotify-keyspace-events KEA\nrename-command CONFIG \"\"\n",
                dir.path().display()
            ),
        )
        .unwrap();
        let child = std::process::Command::new("redis-server")
            .arg(&conf)
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("redis-server");
        let started = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "redis-server did not start"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        NoConfigServer {
            child,
            port,
            _dir: dir,
        }
    }
}

impl Drop for NoConfigServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Where CONFIG is blocked, a rehearsal is told so by the error's variant (preflight then passes the
/// check without writing), and a real run finds the notifications with a probe key.
#[test]
fn a_blocked_config_is_a_refused_command_and_the_probe_still_finds_the_notifications() {
    use ecmigrate::data::DataError;
    use ecmigrate::data::capture::{EventStyle, detect_style};
    let server = NoConfigServer::start();
    let endpoint = RedisEndpoint::plain("127.0.0.1", server.port);
    block_on(async {
        match detect_style(&endpoint, false).await {
            Err(DataError::Refused {
                command: Some(command),
                peer,
                ..
            }) => {
                assert_eq!(command, "CONFIG");
                assert_eq!(peer.addr(), format!("127.0.0.1:{}", server.port));
            }
            other => panic!("expected CONFIG refused, got {other:?}"),
        }
        assert_eq!(
            detect_style(&endpoint, true).await.expect("the probe"),
            EventStyle::KeyEvent
        );
    });
}
