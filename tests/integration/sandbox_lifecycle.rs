//! The sandbox's own lifecycle, driven through the real binary: a snapshot or a delete whose requesting
//! process was SIGKILLed is finished by the next command that looks, no redis-server outlives its group
//! (checked in /proc), and `sandbox delete-group`.
//!
//! The kill lands at a chosen point through the `test-hooks` feature: `ECMIGRATE_TEST_SANDBOX_HOLD=POINT`
//! holds the process there (see `src/cloud/sandbox/test_hooks.rs`) until the test, having seen the state it
//! left in `sandbox status`, kills it.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::harness::{Env, Running, SOURCE};

/// Live redis-server processes whose working folder lies under `dir` (also a removed one), from /proc.
pub fn redis_servers_under(dir: &Path) -> Vec<i32> {
    let root = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<i32>().ok())
        else {
            continue;
        };
        let Ok(cwd) = std::fs::read_link(format!("/proc/{pid}/cwd")) else {
            continue;
        };
        let cwd = cwd.to_string_lossy().into_owned();
        let cwd = PathBuf::from(cwd.strip_suffix(" (deleted)").unwrap_or(&cwd));
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let zombie = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|s| s == "Z" || s == "X");
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
        if cwd.starts_with(&root) && !zombie && comm.trim() == "redis-server" {
            pids.push(pid);
        }
    }
    pids
}

/// Poll `sandbox status --output json` (bounded) until `pick` finds what it looks for.
fn await_status<T>(env: &Env, what: &str, pick: impl Fn(&Value) -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let status = env.sandbox_status();
        if let Some(found) = pick(&status) {
            return found;
        }
        assert!(Instant::now() < deadline, "never saw {what}: {status}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn snapshot<'a>(status: &'a Value, name: &str) -> Option<&'a Value> {
    status["snapshots"]
        .as_array()?
        .iter()
        .find(|s| s["name"] == name)
}

/// `ecmigrate ARGS` in the background, held at the test hook `point`.
fn spawn_held(env: &Env, point: &str, args: &[&str]) -> Running {
    let child = env
        .command(args)
        .env("ECMIGRATE_TEST_SANDBOX_HOLD", point)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start ecmigrate");
    Running::new(child)
}

fn sigkill(mut child: Running) {
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
}

/// The line of the text status that names `name`.
fn status_line(env: &Env, name: &str) -> String {
    let text = env.ok(&["sandbox", "status"]).stdout;
    text.lines()
        .find(|l| l.split_whitespace().next() == Some(name))
        .unwrap_or_else(|| panic!("`{name}` not in the text status:\n{text}"))
        .to_string()
}

fn plan(env: &Env) -> PathBuf {
    env.write_plan(
        "plan.yaml",
        &format!(
            r#"version: 1
name: orders-migration
provider: sandbox
source:
  replication_group_id: {SOURCE}
target:
  replication_group_id: orders-enc
  kms_key_id: alias/orders
  auth_token: {{ generate: true, file: {} }}
steps:
  - kind: preflight
  - kind: backup
    snapshot_name: orders-pre
  - kind: restore_encrypted
"#,
            env.token_file().display()
        ),
    )
}

#[test]
fn a_snapshot_whose_requester_was_killed_completes_when_a_later_command_looks() {
    let env = Env::new();
    env.sandbox_with_source(300);
    let plan = plan(&env);
    let run = spawn_held(
        &env,
        "snapshot_requested",
        &["run", plan.to_str().unwrap(), "--yes"],
    );
    // Requested, not written: while its requester lives, the snapshot stays `creating`.
    await_status(&env, "the snapshot requested", |s| {
        snapshot(s, "orders-pre")
            .filter(|snap| snap["status"] == "creating")
            .cloned()
    });
    let line = status_line(&env, "orders-pre");
    assert!(line.contains("creating"), "{line}");
    assert!(
        !env.sandbox_dir()
            .join("snapshots/orders-pre.sealed")
            .exists()
    );
    sigkill(run);

    // The next look takes it, without the process that asked.
    let status = env.sandbox_status();
    let snap = snapshot(&status, "orders-pre").expect("snapshot still listed");
    assert_eq!(snap["status"], "available", "{status}");
    assert_eq!(snap["encrypted"], true);
    assert!(
        env.sandbox_dir()
            .join("snapshots/orders-pre.sealed")
            .exists()
    );
    let line = status_line(&env, "orders-pre");
    assert!(
        line.contains("available") && line.contains("encrypted=true"),
        "{line}"
    );

    // And the rerun, which used to wait forever, finishes the plan from it.
    let resumed = env.ok(&["run", plan.to_str().unwrap(), "--yes"]);
    assert!(resumed.stdout.contains("already requested"), "{resumed:?}");
    let after = env.sandbox_status();
    assert_eq!(
        Env::group(&after, "orders-enc").expect("target")["status"],
        "available"
    );
}

#[test]
fn a_delete_whose_requester_was_killed_finishes_and_leaves_no_process() {
    let env = Env::new();
    env.sandbox_with_source(50);
    let group_dir = env.sandbox_dir().join("nodes").join(SOURCE);
    assert_eq!(redis_servers_under(&group_dir).len(), 2);

    let delete = spawn_held(
        &env,
        "delete_requested",
        &["sandbox", "delete-group", SOURCE],
    );
    await_status(&env, "the group deleting", |s| {
        Env::group(s, SOURCE)
            .filter(|g| g["status"] == "deleting")
            .cloned()
    });
    let line = status_line(&env, SOURCE);
    assert!(line.contains("deleting"), "{line}");
    assert_eq!(
        redis_servers_under(&group_dir).len(),
        2,
        "killed at the hook, before it stopped anything"
    );
    sigkill(delete);

    // The next look finishes the delete: `deleting` -> gone, and not one of its processes left.
    let status = env.sandbox_status();
    assert!(Env::group(&status, SOURCE).is_none(), "{status}");
    assert_eq!(redis_servers_under(&group_dir), Vec::<i32>::new());
    assert!(!group_dir.exists());
}

#[test]
fn sandbox_delete_group_removes_its_processes_snapshots_and_aliases() {
    let env = Env::new();
    env.sandbox_with_source(50);
    env.ok(&[
        "sandbox",
        "up",
        "--group",
        "other",
        "--replicas",
        "0",
        "--keys",
        "10",
    ]);
    let sandbox_dir = env.sandbox_dir();
    crate::harness::block_on(async {
        use ecmigrate::cloud::CloudWrite;
        let sb = ecmigrate::cloud::sandbox::Sandbox::open(&sandbox_dir).unwrap();
        for (group, name) in [
            (SOURCE, "orders-a"),
            (SOURCE, "orders-b"),
            ("other", "other-a"),
        ] {
            sb.create_snapshot(group, name, Some("alias/orders"))
                .await
                .unwrap();
        }
    });
    let group_dir = sandbox_dir.join("nodes").join(SOURCE);
    // An orphan of a retried start: in the group's folder, named by no pidfile and no record.
    let node_dir = group_dir.join("0");
    let stray_port = free_port();
    // Killed on drop should the test fail before the delete stops it.
    let mut stray = Running::new(
        std::process::Command::new("redis-server")
            .args([
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--port",
            ])
            .arg(stray_port.to_string())
            .arg("--dir")
            .arg(&node_dir)
            .current_dir(&node_dir)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", stray_port)).is_err() {
        assert!(Instant::now() < deadline, "the stray never listened");
        assert!(stray.try_wait().unwrap().is_none(), "the stray exited");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(redis_servers_under(&group_dir).len(), 3);

    let out = env.ok(&["sandbox", "delete-group", SOURCE]);
    assert!(out.stdout.contains("stopped 3 process(es)"), "{out:?}");
    assert!(out.stdout.contains("orders-endpoint"), "{out:?}");
    let deadline = Instant::now() + Duration::from_secs(10);
    while stray.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "the stray outlived its group");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(redis_servers_under(&group_dir), Vec::<i32>::new());
    assert!(!group_dir.exists());
    let status = env.sandbox_status();
    assert!(Env::group(&status, SOURCE).is_none(), "{status}");
    assert!(snapshot(&status, "orders-a").is_none() && snapshot(&status, "orders-b").is_none());
    assert!(!sandbox_dir.join("snapshots/orders-a.sealed").exists());
    assert!(
        status["aliases"].get("orders-endpoint").is_none(),
        "{status}"
    );
    // The other group and what belongs to it stay.
    assert_eq!(Env::group(&status, "other").unwrap()["status"], "available");
    assert_eq!(status["aliases"]["other-endpoint"], "other");
    assert!(snapshot(&status, "other-a").is_some());

    // --keep-snapshots keeps them.
    env.ok(&["sandbox", "delete-group", "other", "--keep-snapshots"]);
    let status = env.sandbox_status();
    assert!(Env::group(&status, "other").is_none());
    assert_eq!(snapshot(&status, "other-a").unwrap()["status"], "available");
    assert_eq!(redis_servers_under(&env.sandbox_dir()), Vec::<i32>::new());

    // An unknown id, or one that is no id at all: refused, exit 2, with a hint.
    for bad in ["other", "Not--An-Id"] {
        let r = env.run(&["sandbox", "delete-group", bad]);
        assert_eq!(r.code, 2, "{r:?}");
        assert!(r.stderr.contains(&format!("`{bad}`")), "{r:?}");
        assert!(r.stderr.contains("hint:"), "{r:?}");
    }
}

/// A port that was free a moment ago (the stray must listen somewhere, or redis-server exits at once).
fn free_port() -> u16 {
    let l = std::net::TcpListener::bind(("127.0.0.1", 0)).unwrap();
    l.local_addr().unwrap().port()
}
