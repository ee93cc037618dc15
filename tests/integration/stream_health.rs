//! A dead target is visible: with a run held at a postponed cutover and an application writing to the
//! source, `kill -9` of the target's primary shows in `ecmigrate status` within seconds (side, node,
//! error, retries) and in the run's output; once the node is started again the stream recovers on its
//! own (a full reconcile pass: the restarted node came back empty), the cutover releases, and no
//! acknowledged write is lost.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use ecmigrate::data::connect::RedisEndpoint;
use ecmigrate::data::verify::{VerifyMode, verify};
use serde_json::Value;

use crate::harness::{Env, Running, SOURCE, TARGET, block_on};

fn status(env: &Env, plan: &Path) -> Value {
    let r = env.ok(&["status", plan.to_str().unwrap(), "--output", "json"]);
    serde_json::from_str(&r.stdout).unwrap()
}

/// Poll `status --output json` until `ok` holds of it, for at most `limit`; the run must not end meanwhile.
fn await_status(
    env: &Env,
    plan: &Path,
    child: &mut Running,
    limit: Duration,
    what: &str,
    ok: impl Fn(&Value) -> bool,
) -> Value {
    let started = Instant::now();
    loop {
        let s = status(env, plan);
        if ok(&s) {
            return s;
        }
        assert!(
            child.try_wait().unwrap().is_none(),
            "the run ended before {what}: {s}"
        );
        assert!(
            started.elapsed() < limit,
            "not {what} within {limit:?}: {s}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The folder of the sandbox node listening on `port` (its `redis.conf` names the port).
fn node_dir(env: &Env, group: &str, port: u16) -> PathBuf {
    let nodes = env.sandbox_dir().join("nodes").join(group);
    std::fs::read_dir(&nodes)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|dir| {
            std::fs::read_to_string(dir.join("redis.conf")).is_ok_and(|conf| {
                conf.lines()
                    .any(|l| l == format!("tls-port {port}") || l == format!("port {port}"))
            })
        })
        .unwrap_or_else(|| panic!("no node of {group} on port {port} in {}", nodes.display()))
}

fn pid_of(dir: &Path) -> i32 {
    std::fs::read_to_string(dir.join("redis.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

/// Start the node's redis-server again from its own `redis.conf` (as the sandbox does: it daemonizes
/// and writes its pidfile once its ports are bound), and wait until it answers.
fn restart_node(dir: &Path, endpoint: &RedisEndpoint) {
    let _ = std::fs::remove_file(dir.join("redis.pid"));
    let started = std::process::Command::new("redis-server")
        .arg(dir.join("redis.conf"))
        .current_dir(dir)
        .status()
        .unwrap();
    assert!(started.success(), "redis-server did not start: {started}");
    let since = Instant::now();
    loop {
        let pong = endpoint
            .client()
            .and_then(|c| c.get_connection_with_timeout(Duration::from_secs(1)))
            .and_then(|mut c| redis::cmd("PING").query::<String>(&mut c));
        if pong.is_ok() {
            return;
        }
        assert!(
            since.elapsed() < Duration::from_secs(15),
            "the restarted node does not answer: {pong:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// An application writing to the source all along (sets, overwrites, deletes), keeping each key's last
/// acknowledged value (`None`: deleted).
struct Writer {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<BTreeMap<String, Option<String>>>,
}

impl Writer {
    fn start(source: RedisEndpoint) -> Writer {
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut conn = source.client().unwrap().get_connection().unwrap();
            let mut model = BTreeMap::new();
            let mut i: u64 = 0;
            while !stopped.load(Ordering::SeqCst) {
                let key = format!("live:{}", (i * 7919) % 3000);
                if i % 5 == 4 {
                    let _: i64 = redis::cmd("DEL").arg(&key).query(&mut conn).unwrap();
                    model.insert(key, None);
                } else {
                    let value = format!("v{i}");
                    let _: () = redis::cmd("SET")
                        .arg(&key)
                        .arg(&value)
                        .query(&mut conn)
                        .unwrap();
                    model.insert(key, Some(value));
                }
                i += 1;
                std::thread::sleep(Duration::from_millis(1));
            }
            model
        });
        Writer { stop, thread }
    }

    fn stop(self) -> BTreeMap<String, Option<String>> {
        self.stop.store(true, Ordering::SeqCst);
        self.thread.join().expect("the writer panicked")
    }
}

#[test]
fn a_killed_target_primary_shows_in_status_and_the_stream_recovers_when_it_is_back_losing_no_write()
{
    let env = Env::new();
    env.sandbox_with_source(3000);
    let plan = env.write_plan("plan.yaml", &crate::cutover::postponed_plan(&env, "", true));
    let source = RedisEndpoint::plain(
        "127.0.0.1",
        Env::primary_port(&env.sandbox_status(), SOURCE),
    );
    let writer = Writer::start(source.clone());
    let mut child = env.spawn(&["run", plan.to_str().unwrap(), "--yes"]);
    await_status(
        &env,
        &plan,
        &mut child,
        Duration::from_secs(90),
        "waiting at the cutover",
        |s| s["state"] == "waiting" && s["stream"]["stream"] == "tailing",
    );

    // kill -9 of the target's primary while the application writes to the source.
    let target = env.target_endpoint();
    let dir = node_dir(&env, TARGET, target.port);
    let pid = pid_of(&dir);
    let killed = std::process::Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let killed_at = Instant::now();

    let failing = await_status(
        &env,
        &plan,
        &mut child,
        Duration::from_secs(5),
        "showing the target's error",
        |s| s["stream"]["health"]["target"].is_object(),
    );
    let trouble = &failing["stream"]["health"]["target"];
    let error = trouble["error"].as_str().unwrap();
    assert_eq!(trouble["state"], "unreachable", "{failing}");
    assert!(
        error.contains("(target primary)") && error.contains(&format!(":{}", target.port)),
        "the error names neither the node nor its address: {failing}"
    );
    assert!(failing["stream"]["health"]["source"].is_null(), "{failing}");
    assert_eq!(failing["stream"]["stale"], false, "{failing}");
    assert_eq!(failing["state"], "waiting", "{failing}");
    let password = std::fs::read_to_string(env.token_file()).unwrap();
    assert!(!failing.to_string().contains(password.trim()));

    // It keeps retrying, with backoff (200 + 400 + 800 + 1600 ms before the fifth attempt; the status
    // is written while it waits, so it never goes stale), and the text says the target is unreachable,
    // never "0 pending".
    let retrying = await_status(
        &env,
        &plan,
        &mut child,
        Duration::from_secs(20),
        "retrying",
        |s| s["stream"]["health"]["target"]["retries"].as_u64() >= Some(4),
    );
    assert!(
        killed_at.elapsed() >= Duration::from_millis(2500),
        "four retries within {:?}: no backoff",
        killed_at.elapsed()
    );
    assert_eq!(retrying["stream"]["stale"], false, "{retrying}");
    let text = env.ok(&["status", plan.to_str().unwrap()]).stdout;
    assert!(
        text.contains("stream: target unreachable since ")
            && text.contains("(target primary)")
            && text.contains("not copying"),
        "{text}"
    );
    assert!(!text.contains(" 0 pending"), "{text}");

    // Back up: the node restarts empty (the sandbox keeps no RDB of a restored node); the stream sees
    // it answer, reconciles in full, and clears the error.
    restart_node(&dir, &target);
    let recovered = await_status(
        &env,
        &plan,
        &mut child,
        Duration::from_secs(60),
        "recovered",
        |s| {
            s["stream"]["health"]["target"].is_null()
                && s["stream"]["reconciles"].as_u64() >= Some(1)
        },
    );
    assert_eq!(recovered["state"], "waiting", "{recovered}");
    let model = writer.stop();
    assert!(
        model.len() > 1000,
        "the writer barely wrote: {}",
        model.len()
    );

    let released = env.run(&["cutover", plan.to_str().unwrap()]);
    assert_eq!(released.code, 0, "{released:?}");
    let run = child.finish();
    assert_eq!(run.code, 0, "{run:?}");

    // The run said so once when the target failed, and once when it recovered.
    let notes = env.journal();
    let count = |needle: &str| notes.lines().filter(|l| l.contains(needle)).count();
    assert_eq!(
        count("the stream cannot copy: target unreachable"),
        1,
        "{notes}"
    );
    assert_eq!(
        count("the stream recovered: the target answers again"),
        1,
        "{notes}"
    );
    assert!(
        run.stdout
            .contains("the stream cannot copy: target unreachable")
            && run.stdout.contains("the stream recovered"),
        "{run:?}"
    );

    // Every acknowledged write is on the target, and the target holds exactly what the source holds.
    let target = env.target_endpoint();
    let mut conn = target.client().unwrap().get_connection().unwrap();
    let lost: Vec<String> = model
        .iter()
        .filter_map(|(key, expected)| {
            let found: Option<String> = redis::cmd("GET").arg(key).query(&mut conn).unwrap();
            (found != *expected).then(|| format!("{key}: expected {expected:?}, found {found:?}"))
        })
        .take(5)
        .collect();
    assert!(lost.is_empty(), "acknowledged writes lost: {lost:?}");
    let report = block_on(verify(&source, &target, VerifyMode::Full, 5000, &|_, _| {})).unwrap();
    assert!(report.passed(), "{report:?}");
    let done = status(&env, &plan);
    assert_eq!(done["state"], "done", "{done}");
    assert_eq!(done["stream"]["stream"], "finished", "{done}");
}
