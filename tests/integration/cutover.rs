//! The cutover on the sandbox with an application writing all along: a postponed cutover released by
//! `ecmigrate cutover`, the write fence (no acknowledged write lost, the pause measured), a failing switch
//! command and a fence past its bound (retried; the source left unpaused), and the rollback.

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::app_writer::{ALIAS, Writer, lost_writes, primaries_whose_writes_wait, resolve_env};
use crate::harness::{Env, Run, Running, SOURCE, TARGET, block_on, exec, full_plan, wait_for};

/// The full plan with `stream_copy` and a postponed cutover; `extra` goes into the cutover step.
pub(crate) fn postponed_plan(env: &Env, extra: &str, keep_source: bool) -> String {
    let plan = full_plan(env)
        .replace(
            "  - kind: restore_encrypted\n",
            "  - kind: restore_encrypted\n  - kind: stream_copy\n",
        )
        .replace("    full: true\n", "")
        .replace(
            "    alias: orders-endpoint\n",
            &format!("    alias: orders-endpoint\n    postpone: true\n{extra}"),
        );
    if keep_source {
        plan.split("  - kind: delete_source")
            .next()
            .unwrap()
            .to_string()
    } else {
        plan
    }
}

fn spawn_run(env: &Env, plan: &std::path::Path) -> Running {
    env.spawn(&["run", plan.to_str().unwrap(), "--yes"])
}

fn finish(child: Running) -> Run {
    child.finish()
}

fn status(env: &Env, plan: &std::path::Path) -> Value {
    let r = env.ok(&["status", plan.to_str().unwrap(), "--output", "json"]);
    serde_json::from_str(&r.stdout).unwrap()
}

/// Wait until `status` says the run is waiting at the cutover.
fn wait_until_waiting(env: &Env, plan: &std::path::Path, child: &mut Running) {
    let started = Instant::now();
    while status(env, plan)["state"] != "waiting" {
        assert!(
            child.try_wait().unwrap().is_none(),
            "the run ended before waiting"
        );
        assert!(
            started.elapsed() < Duration::from_secs(90),
            "never waiting: {}",
            status(env, plan)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_postponed_cutover_released_by_the_command_loses_no_write_of_a_live_writer() {
    let env = Env::new();
    env.sandbox_with_source(3000);
    let plan = env.write_plan("plan.yaml", &postponed_plan(&env, "", false));
    let writer = Writer::start(&env);
    let mut child = spawn_run(&env, &plan);
    wait_until_waiting(&env, &plan, &mut child);

    // While it waits, the stream keeps replaying the writer's changes and `status` shows its lag.
    let replayed = |s: &Value| s["stream"]["replayed"].as_u64();
    let first = replayed(&status(&env, &plan)).unwrap_or(0);
    wait_for(
        "the stream to replay more of the writer's changes while the cutover waits",
        Duration::from_secs(30),
        || {
            let s = status(&env, &plan);
            assert_eq!(s["state"], "waiting", "{s}");
            replayed(&s).is_some_and(|n| n > first)
        },
    );
    let waiting = status(&env, &plan);
    assert_eq!(waiting["state"], "waiting", "{waiting}");
    assert!(
        waiting["stream"]["capture"]["pending"].is_u64(),
        "no lag in status: {waiting}"
    );
    let text = env.ok(&["status", plan.to_str().unwrap()]);
    assert!(text.stdout.contains("waiting"), "{text:?}");
    assert!(text.stdout.contains("pending"), "{text:?}");
    // Enough writes on the source before the switch to mean something, however slow the machine.
    let source_port = Env::primary_port(&env.sandbox_status(), SOURCE);
    wait_for(
        "the writer to make 400 writes on the source while the cutover waits",
        Duration::from_secs(60),
        || writer.writes_on(source_port) >= 400,
    );

    let released = env.run(&["cutover", plan.to_str().unwrap()]);
    assert_eq!(released.code, 0, "{released:?}");
    let pause_ms: u64 = released
        .stdout
        .split("writes paused ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no write pause printed: {released:?}"));
    let run = finish(child);
    assert_eq!(run.code, 0, "{run:?}");
    // The application keeps writing on the new endpoint for a moment.
    let target = resolve_env(&env);
    wait_for(
        "the writer to make 100 writes on the target",
        Duration::from_secs(30),
        || writer.writes_on(target.port) >= 100,
    );
    let report = writer.stop();

    assert_eq!(
        target.port,
        Env::primary_port(&env.sandbox_status(), TARGET)
    );
    assert!(
        Env::group(&env.sandbox_status(), SOURCE).is_none(),
        "the source was not deleted"
    );
    assert!(
        report.ports.contains(&target.port) && report.ports.len() >= 2,
        "the writer never moved to the target: {:?}",
        report.ports
    );
    let lost = lost_writes(&report, &target);
    println!(
        "live writer: {} writes, {} reconnects, longest write {} ms; ecmigrate's write pause {pause_ms} ms; lost {}",
        report.writes,
        report.reconnects,
        report.longest_write.as_millis(),
        lost.len()
    );
    assert!(
        lost.is_empty(),
        "{} writes lost: {:?}",
        lost.len(),
        &lost[..lost.len().min(10)]
    );
    assert!(
        report.writes > 500,
        "too few writes to mean anything: {}",
        report.writes
    );
    assert!(pause_ms < 1000, "write pause {pause_ms} ms");
    assert!(
        report.longest_write < Duration::from_secs(3),
        "a write waited {:?}",
        report.longest_write
    );
    let status = status(&env, &plan);
    let cutover = Env::step(&status, "cutover");
    assert_eq!(cutover["outputs"]["released_by"][0], "ecmigrate cutover");
    // The evidence report carries the pause the application saw.
    let report: Value = serde_json::from_str(
        &std::fs::read_to_string(env.state_dir().join("orders-migration").join("report.json"))
            .unwrap(),
    )
    .unwrap();
    assert_eq!(
        report["cutover"]["write_pause_ms"], pause_ms,
        "{}",
        report["cutover"]
    );
    let md = std::fs::read_to_string(env.state_dir().join("orders-migration").join("report.md"))
        .unwrap();
    assert!(
        md.contains(&format!("paused for **{pause_ms} ms**")),
        "{md}"
    );
    assert!(
        md.contains("After the tail writes were paused on the source's 1 primary until "),
        "the report does not say the source was sealed: {md}"
    );
    assert!(
        cutover["outputs"]["clients_disconnected"]
            .as_array()
            .is_some_and(|c| !c.is_empty()),
        "the writer's connection was not moved: {cutover}"
    );
}

// The fence delay is a test hook (`--features test-hooks`, as scripts/test.sh builds).
#[cfg(feature = "test-hooks")]
#[test]
fn a_failing_switch_command_leaves_the_source_unpaused_and_waiting_and_a_fence_past_its_bound_retries()
 {
    let mut env = Env::new();
    env.sandbox_with_source(500);
    let text = postponed_plan(&env, "", true)
        .replace(
            "    strategy: sandbox_alias\n    alias: orders-endpoint\n",
            "    strategy: command\n    command: test -f allow-switch && echo \"$ECMIGRATE_NEW_ENDPOINT:$ECMIGRATE_PORT tls=$ECMIGRATE_TLS $ECMIGRATE_TOKEN_REF\" > switched.txt\n    max_write_pause_ms: 500\n    before_switch: echo \"before $ECMIGRATE_PURPOSE $ECMIGRATE_NEW_GROUP\" >> hooks.log\n    after_switch: echo \"after $ECMIGRATE_OLD_GROUP\" >> hooks.log\n",
        );
    let plan = env.write_plan("plan.yaml", &text);
    // The first fence is held 400 ms inside the pause: past half of its 500 ms bound.
    env.set_env("ECMIGRATE_TEST_FENCE_DELAY", "400:1");
    let mut child = spawn_run(&env, &plan);
    wait_until_waiting(&env, &plan, &mut child);

    let failed = env.run(&["cutover", plan.to_str().unwrap()]);
    assert_eq!(failed.code, 1, "{failed:?}");
    assert!(failed.stderr.contains("waits again"), "{failed:?}");
    assert!(failed.stderr.contains("exit status 1"), "{failed:?}");
    assert_eq!(status(&env, &plan)["state"], "waiting");
    // Not paused: a write on the source returns at once.
    let source = env.source_endpoint();
    let started = Instant::now();
    let mut conn = source.client().unwrap().get_connection().unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let _: () = redis::cmd("SET")
        .arg("after-failure")
        .arg("1")
        .query(&mut conn)
        .unwrap();
    assert!(
        started.elapsed() < Duration::from_millis(400),
        "the source is still paused: {:?}",
        started.elapsed()
    );

    std::fs::write(env.path().join("allow-switch"), "").unwrap();
    let switched = env.run(&["cutover", plan.to_str().unwrap()]);
    assert_eq!(switched.code, 0, "{switched:?}");
    let run = finish(child);
    assert_eq!(run.code, 0, "{run:?}");
    let said = std::fs::read_to_string(env.path().join("switched.txt")).unwrap();
    let target_port = Env::primary_port(&env.sandbox_status(), TARGET);
    assert!(
        said.contains(&format!("127.0.0.1:{target_port} tls=1 file:")),
        "{said}"
    );
    assert!(!said.contains(std::fs::read_to_string(env.token_file()).unwrap().trim()));

    let status = status(&env, &plan);
    let cutover = Env::step(&status, "cutover");
    let outcomes: Vec<&str> = cutover["outputs"]["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["outcome"].as_str().unwrap())
        .collect();
    assert_eq!(
        outcomes,
        ["fence_timeout", "switch_failed", "switched"],
        "{cutover}"
    );
    // The hooks: before every attempt, after the switch only, with the endpoints in their environment.
    let hooks = std::fs::read_to_string(env.path().join("hooks.log")).unwrap();
    assert_eq!(
        hooks,
        "before cutover orders-enc\nbefore cutover orders-enc\nbefore cutover orders-enc\nafter orders\n"
    );
    // The key written between the attempts reached the target.
    let value: Option<String> = block_on(async {
        let mut c = ecmigrate::data::connect::connect(&env.target_endpoint())
            .await
            .unwrap();
        redis::cmd("GET")
            .arg("after-failure")
            .query_async(&mut c)
            .await
            .unwrap()
    });
    assert_eq!(value.as_deref(), Some("1"));
}

#[test]
fn rollback_after_cutover_points_the_alias_back_with_the_targets_writes_and_run_then_refuses() {
    let mut env = Env::new();
    env.sandbox_with_source(300);
    let text = postponed_plan(&env, "", true).replace("    postpone: true\n", "");
    let plan = env.write_plan("plan.yaml", &text);
    env.ok(&["run", plan.to_str().unwrap(), "--yes"]);
    assert_eq!(env.sandbox_status()["aliases"][ALIAS], TARGET);
    // After the tail the source is sealed: a client left on it waits instead of writing.
    let sealed = Env::step(&status(&env, &plan), "cutover")["outputs"]["sealed"].clone();
    assert_eq!(sealed["primaries"], 1, "{sealed}");
    assert!(sealed["error"].is_null(), "{sealed}");
    let wait = Duration::from_millis(300);
    assert_eq!(primaries_whose_writes_wait(&env.source_endpoint(), wait), 1);
    let shown = env.ok(&["status", plan.to_str().unwrap()]).stdout;
    assert!(
        shown.contains("source `orders` sealed: writes wait on its 1 primary until "),
        "{shown}"
    );
    assert_eq!(status(&env, &plan)["seal"]["state"], "sealed");

    let target = env.target_endpoint();
    block_on(async {
        let mut c = ecmigrate::data::connect::connect(&target).await.unwrap();
        exec(&mut c, &["SET", "written-after-switch", "on-target"]).await;
        exec(&mut c, &["DEL", "ecm:user:000001"]).await;
    });

    // The seal is the record's, not the plan's: an edit that drops it after the cutover still has the
    // rollback lift it. A rollback that fails after the lift (its fence on the target past its bound)
    // seals the source again; one that dies there leaves `status` saying the seal is gone.
    let edited = "    alias: orders-endpoint\n    seal_source_hours: 0\n    fence_attempts: 1\n";
    std::fs::write(&plan, text.replace("    alias: orders-endpoint\n", edited)).unwrap();
    env.set_env("ECMIGRATE_TEST_FENCE_DELAY", "2000:99");
    let failed = env.run(&["rollback", plan.to_str().unwrap(), "--yes"]);
    assert_eq!(failed.code, 1, "{failed:?}");
    assert!(failed.all_output().contains("sealed again"), "{failed:?}");
    assert_eq!(primaries_whose_writes_wait(&env.source_endpoint(), wait), 1);
    assert_eq!(status(&env, &plan)["seal"]["state"], "sealed");
    env.set_env("ECMIGRATE_TEST_FENCE_DELAY", "0:0");

    env.set_env("ECMIGRATE_TEST_CRASH_AFTER", "call:ClientPause");
    let killed = env.run(&["rollback", plan.to_str().unwrap(), "--yes"]);
    assert_eq!(killed.code, 137, "{killed:?}");
    env.set_env("ECMIGRATE_TEST_CRASH_AFTER", "");
    assert!(
        env.journal().contains("\"LiftSeal\""),
        "the lift is not in the journal"
    );
    let source = env.source_endpoint();
    assert_eq!(primaries_whose_writes_wait(&source, wait), 0);
    assert_eq!(status(&env, &plan)["seal"]["state"], "lifted");
    let shown = env.ok(&["status", plan.to_str().unwrap()]).stdout;
    assert!(
        shown.contains("source `orders`: its seal was lifted at "),
        "{shown}"
    );

    let rolled = env.run(&["rollback", plan.to_str().unwrap(), "--yes"]);
    assert_eq!(rolled.code, 0, "{rolled:?}");
    assert_eq!(env.sandbox_status()["aliases"][ALIAS], SOURCE);
    let rolled_back = Env::step(&status(&env, &plan), "cutover")["outputs"]["rolled_back"].clone();
    assert!(rolled_back["seal_lifted"].is_u64(), "{rolled_back}");
    // The evidence of the migration no longer says where clients are: it is kept under another name.
    let dir = env.state_dir().join("orders-migration");
    assert!(!dir.join("report.md").exists());
    assert!(dir.join("rolled-back-report.md").exists());
    let report = env.run(&["report", plan.to_str().unwrap(), "--format", "md"]);
    assert_eq!(report.code, 2, "{report:?}");
    assert!(report.stderr.contains("was rolled back"), "{report:?}");
    assert!(report.stderr.contains("hint:"), "{report:?}");
    assert_eq!(
        primaries_whose_writes_wait(&source, wait),
        0,
        "the rollback left the source sealed"
    );
    let mut conn = source.client().unwrap().get_connection().unwrap();
    let value: Option<String> = redis::cmd("GET")
        .arg("written-after-switch")
        .query(&mut conn)
        .unwrap();
    assert_eq!(value.as_deref(), Some("on-target"));
    let gone: i64 = redis::cmd("EXISTS")
        .arg("ecm:user:000001")
        .query(&mut conn)
        .unwrap();
    assert_eq!(
        gone, 0,
        "a key deleted on the target is still on the source"
    );

    assert_eq!(status(&env, &plan)["state"], "rolled_back");
    let shown = env.ok(&["status", plan.to_str().unwrap()]).stdout;
    assert!(!shown.contains("sealed"), "{shown}");
    let again = env.run(&["run", plan.to_str().unwrap(), "--yes"]);
    assert_eq!(again.code, 3, "{again:?}");
    assert!(again.stderr.contains("rolled back"), "{again:?}");
    assert!(again.stderr.contains("hint:"), "{again:?}");
}

#[test]
fn rollback_is_refused_before_a_cutover_and_after_the_source_is_deleted() {
    let env = Env::new();
    env.sandbox_with_source(50);
    let plan = env.write_plan("plan.yaml", &full_plan(&env));
    let early = env.run(&["rollback", plan.to_str().unwrap(), "--yes"]);
    assert_eq!(early.code, 2, "{early:?}");
    assert!(early.stderr.contains("not been run"), "{early:?}");
    env.ok(&["run", plan.to_str().unwrap(), "--yes"]);
    let late = env.run(&["rollback", plan.to_str().unwrap(), "--yes"]);
    assert_eq!(late.code, 2, "{late:?}");
    assert!(late.stderr.contains("no longer possible"), "{late:?}");
}

// The fence delay is a test hook (`--features test-hooks`, as scripts/test.sh builds).
#[cfg(feature = "test-hooks")]
#[test]
fn removing_the_flag_file_releases_the_cutover_and_a_fence_that_keeps_timing_out_fails_resumably() {
    let mut env = Env::new();
    env.sandbox_with_source(300);
    let text = postponed_plan(
        &env,
        "    postpone_flag_file: hold.flag\n    max_write_pause_ms: 300\n    fence_attempts: 2\n",
        true,
    )
    .replace("    postpone: true\n", "");
    let plan = env.write_plan("plan.yaml", &text);
    std::fs::write(env.path().join("hold.flag"), "").unwrap();
    // Every fence is held 250 ms inside a 300 ms pause: past half its bound, each attempt times out.
    env.set_env("ECMIGRATE_TEST_FENCE_DELAY", "250:99");
    let mut child = spawn_run(&env, &plan);
    wait_until_waiting(&env, &plan, &mut child);
    std::thread::sleep(Duration::from_millis(500));
    assert!(child.try_wait().unwrap().is_none(), "the run did not hold");
    std::fs::remove_file(env.path().join("hold.flag")).unwrap();
    let failed = finish(child);
    assert_eq!(failed.code, 1, "{failed:?}");
    assert!(failed.stderr.contains("2 attempts"), "{failed:?}");
    assert!(failed.stderr.contains("hint:"), "{failed:?}");
    assert!(failed.stdout.contains("released by"), "{failed:?}");
    assert_eq!(
        env.sandbox_status()["aliases"][ALIAS],
        SOURCE,
        "switched anyway"
    );
    assert_eq!(status(&env, &plan)["state"], "failed");

    // The same command resumes; without the fault the fence holds.
    env.set_env("ECMIGRATE_TEST_FENCE_DELAY", "0:0");
    let resumed = env.run(&["run", plan.to_str().unwrap(), "--yes"]);
    assert_eq!(resumed.code, 0, "{resumed:?}");
    assert_eq!(env.sandbox_status()["aliases"][ALIAS], TARGET);
}

#[test]
fn on_a_terminal_the_postponed_cutover_asks_and_a_yes_releases_it() {
    let env = Env::new();
    env.sandbox_with_source(100);
    let plan = env.write_plan("plan.yaml", &postponed_plan(&env, "", true));
    let mut cmd = std::process::Command::new(crate::harness::bin());
    cmd.args(["run", plan.to_str().unwrap()])
        .current_dir(env.path())
        .env("ECMIGRATE_SANDBOX_DIR", env.sandbox_dir())
        .env("ECMIGRATE_STATE_DIR", env.state_dir())
        .env("TERM", "xterm")
        .env_remove("CI");
    let mut s = expectrl::Session::spawn(cmd).expect("spawn the run in a pty");
    s.set_expect_timeout(Some(Duration::from_secs(60)));
    s.expect("Cut over now").expect("the cutover prompt");
    assert_eq!(status(&env, &plan)["state"], "waiting");
    s.send("y").unwrap();
    s.expect("released by the prompt").expect("released");
    s.expect("run done").expect("the run finished");
    assert_eq!(env.sandbox_status()["aliases"][ALIAS], TARGET);
}

#[test]
fn delete_source_needs_the_comparison_made_inside_the_fence() {
    use std::io::{Read, Write};
    let env = Env::new();
    env.sandbox_with_source(200);
    let text = postponed_plan(&env, "    disconnect_clients: false\n", false)
        .replace("    postpone: true\n", "")
        .replace(
            "    confirm: orders",
            "    confirm: orders\n    drain_timeout_seconds: 0",
        );
    let plan = env.write_plan("plan.yaml", &text);
    // An application that stays on the source stops the run at delete_source, after the cutover.
    let port = Env::primary_port(&env.sandbox_status(), SOURCE);
    let mut app = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    app.write_all(b"CLIENT SETNAME stays\r\n").unwrap();
    let mut ok = [0u8; 5];
    app.read_exact(&mut ok).unwrap();
    let stopped = env.run(&["run", plan.to_str().unwrap(), "--yes"]);
    assert_eq!(stopped.code, 1, "{stopped:?}");
    let status = status(&env, &plan);
    let checked = &Env::step(&status, "cutover")["outputs"]["verified_at_switch"];
    assert_eq!(checked["differing"], 0, "{status}");
    assert!(checked["keys_compared"].as_u64().unwrap() > 0, "{status}");
    drop(app);

    // Without that record (as if the cutover had not compared), the source is kept.
    let path = env.state_dir().join("orders-migration").join("state.json");
    let mut state: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    for step in state["steps"].as_array_mut().unwrap() {
        if step["kind"] == "cutover" {
            step["outputs"]
                .as_object_mut()
                .unwrap()
                .remove("verified_at_switch");
        }
    }
    std::fs::write(&path, serde_json::to_vec_pretty(&state).unwrap()).unwrap();
    let refused = env.run(&["run", plan.to_str().unwrap(), "--yes"]);
    assert_eq!(refused.code, 1, "{refused:?}");
    assert!(
        refused
            .stderr
            .contains("no passed comparison at the switch"),
        "{refused:?}"
    );
    assert!(
        Env::group(&env.sandbox_status(), SOURCE).is_some(),
        "the source was deleted"
    );
}
