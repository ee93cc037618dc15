//! The whole migration on the sandbox, its rehearsal, its resume after SIGKILL, and its refusals.

use std::time::{Duration, Instant};

use ecmigrate::data::connect::{RedisEndpoint, connect};
use ecmigrate::secret::Secret;

use crate::harness::{Env, SOURCE, TARGET, block_on, exec, full_plan};

/// Key names actually stored in the source, read before the migration.
fn some_source_keys(port: u16, n: usize) -> Vec<String> {
    block_on(async {
        let mut c = connect(&RedisEndpoint::plain("127.0.0.1", port))
            .await
            .expect("connect source");
        let (_, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(0)
            .arg("COUNT")
            .arg(n * 4)
            .query_async(&mut c)
            .await
            .expect("scan");
        keys.into_iter().take(n).collect()
    })
}

fn tls_endpoint(env: &Env, port: u16, password: Option<Secret>) -> RedisEndpoint {
    RedisEndpoint {
        host: "127.0.0.1".into(),
        port,
        tls: true,
        ca_file: Some(env.sandbox_status()["ca_file"].as_str().unwrap().into()),
        password,
        db: 0,
    }
}

#[test]
fn full_migration_leaves_only_an_encrypted_group_holding_every_key() {
    let env = Env::new();
    env.sandbox_with_source(3000);
    let before = env.sandbox_status();
    let source_port = Env::primary_port(&before, SOURCE);
    let key_names = some_source_keys(source_port, 50);
    assert_eq!(key_names.len(), 50);
    let plan = env.write_plan("plan.yaml", &full_plan(&env));

    let run = env.ok(&["run", plan.to_str().unwrap(), "--yes"]);
    assert!(run.stdout.contains("CreateReplicationGroup"), "{run:?}");

    let after = env.sandbox_status();
    assert!(
        Env::group(&after, SOURCE).is_none(),
        "source still listed: {after}"
    );
    let target = Env::group(&after, TARGET).expect("target group");
    assert_eq!(target["status"], "available");
    assert_eq!(target["at_rest_encryption_enabled"], true);
    assert_eq!(target["transit_encryption_enabled"], true);
    assert_eq!(target["auth_token_enabled"], true);
    assert!(
        target["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .all(|n| n["tls"] == true)
    );
    assert_eq!(
        target["nodes"].as_array().unwrap().len(),
        2,
        "the target copies the source's shape"
    );
    assert_eq!(after["aliases"]["orders-endpoint"], TARGET);

    // Both snapshots (pre-migration and final) exist, encrypted, and no snapshot file shows a key name.
    let snaps = after["snapshots"].as_array().unwrap();
    assert_eq!(snaps.len(), 2, "{after}");
    assert!(snaps.iter().all(|s| s["encrypted"] == true), "{after}");
    assert!(
        snaps
            .iter()
            .any(|s| s["name"].as_str().unwrap().contains("final"))
    );
    for s in snaps {
        let bytes = std::fs::read(s["path"].as_str().unwrap()).expect("snapshot file");
        for key in &key_names {
            assert!(
                !contains(&bytes, key.as_bytes()),
                "snapshot {} contains key name {key}",
                s["name"]
            );
        }
    }
    // Nor any other file the sandbox keeps (node folders, registry).
    for file in env.sandbox_files() {
        let bytes = std::fs::read(&file).unwrap();
        assert!(
            !contains(&bytes, key_names[0].as_bytes()),
            "{} contains a key name",
            file.display()
        );
    }

    // The data plane: plain text refused, TLS without the token refused, TLS + token holds every key.
    let token = Secret::new(
        std::fs::read_to_string(env.token_file())
            .unwrap()
            .trim()
            .to_string(),
    );
    let port = Env::primary_port(&after, TARGET);
    block_on(async {
        let plain = async {
            let mut c = connect(&RedisEndpoint::plain("127.0.0.1", port)).await?;
            redis::cmd("PING")
                .query_async::<String>(&mut c)
                .await
                .map_err(|e| e.to_string())
        };
        assert!(
            plain.await.is_err(),
            "a plain-text connection to the target must be refused"
        );

        let no_token = async {
            let mut c = connect(&tls_endpoint(&env, port, None)).await?;
            redis::cmd("DBSIZE")
                .query_async::<u64>(&mut c)
                .await
                .map_err(|e| e.to_string())
        };
        let err = no_token
            .await
            .expect_err("TLS without the token must be refused");
        assert!(err.contains("NOAUTH") || err.contains("auth"), "{err}");

        let mut c = connect(&tls_endpoint(&env, port, Some(token.clone())))
            .await
            .expect("TLS + AUTH");
        let n: u64 = redis::cmd("DBSIZE").query_async(&mut c).await.unwrap();
        assert_eq!(n, 3000);
        for key in &key_names {
            let exists: bool = redis::cmd("EXISTS")
                .arg(key)
                .query_async(&mut c)
                .await
                .unwrap();
            assert!(exists, "{key} missing on the target");
        }
    });

    // The token never appears in output, state or events.
    let state_dir = env.state_dir().join("orders-migration");
    for text in [
        run.all_output(),
        std::fs::read_to_string(state_dir.join("state.json")).unwrap(),
        std::fs::read_to_string(state_dir.join("events.jsonl")).unwrap(),
        env.sandbox_status().to_string(),
    ] {
        assert!(!text.contains(token.expose()), "the AUTH token leaked");
    }
    let status: serde_json::Value = serde_json::from_str(
        &env.ok(&["status", plan.to_str().unwrap(), "--output", "json"])
            .stdout,
    )
    .unwrap();
    assert_eq!(status["state"], "done");
    assert!(
        status["steps"]
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s["status"] == "done"),
        "{status}"
    );

    // The evidence report: before/after attributes that match what the sandbox says, and no token.
    let report_text = std::fs::read_to_string(state_dir.join("report.json")).expect("report.json");
    let report: serde_json::Value = serde_json::from_str(&report_text).unwrap();
    let markdown = std::fs::read_to_string(state_dir.join("report.md")).expect("report.md");
    let sandbox_target = Env::group(&env.sandbox_status(), TARGET).unwrap().clone();
    let after = &report["target"]["after"];
    assert_eq!(
        after["AtRestEncryptionEnabled"],
        sandbox_target["at_rest_encryption_enabled"]
    );
    assert_eq!(
        after["TransitEncryptionEnabled"],
        sandbox_target["transit_encryption_enabled"]
    );
    assert_eq!(
        after["AuthTokenEnabled"],
        sandbox_target["auth_token_enabled"]
    );
    assert_eq!(after["KmsKeyId"], sandbox_target["kms_key_id"]);
    assert_eq!(after["AtRestEncryptionEnabled"], true);
    assert_eq!(report["source"]["before"]["AtRestEncryptionEnabled"], false);
    assert_eq!(
        report["source"]["before"]["TransitEncryptionEnabled"],
        false
    );
    assert_eq!(report["source"]["after"]["Status"], "deleted");
    assert!(
        report["snapshots"]["final"]
            .as_str()
            .unwrap()
            .contains("final")
    );
    assert!(report["plan_checksum"].as_str().unwrap().len() == 64);
    assert!(markdown.contains("AtRestEncryptionEnabled") && markdown.contains(TARGET));
    assert!(
        !report_text.contains(token.expose()) && !markdown.contains(token.expose()),
        "the token is in the report"
    );
    let status_text = env.ok(&["status", plan.to_str().unwrap()]).stdout;
    assert!(
        status_text.contains("report.md"),
        "status must point to the report: {status_text}"
    );

    // Running again is a no-op that reports the finished run.
    env.ok(&["run", plan.to_str().unwrap(), "--yes"]);
    assert_eq!(
        env.sandbox_status()["snapshots"].as_array().unwrap().len(),
        2
    );
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Everything a run could change: the sandbox's files (path, bytes), its status, and the state folder.
#[derive(Debug, PartialEq)]
struct Fingerprint {
    files: Vec<(String, Vec<u8>)>,
    status: String,
    state: Vec<String>,
}

fn fingerprint(env: &Env) -> Fingerprint {
    let files = env
        .sandbox_files()
        .into_iter()
        .filter(|p| !p.to_string_lossy().ends_with(".log"))
        .map(|p| {
            let bytes = std::fs::read(&p).unwrap_or_default();
            (p.display().to_string(), bytes)
        })
        .collect();
    let status = env.sandbox_status().to_string();
    let mut state = Vec::new();
    if let Ok(rd) = std::fs::read_dir(env.state_dir()) {
        for e in rd.flatten() {
            state.push(e.path().display().to_string());
        }
    }
    Fingerprint {
        files,
        status,
        state,
    }
}

#[test]
fn dry_run_prints_every_call_and_changes_nothing() {
    let env = Env::new();
    env.sandbox_with_source(200);
    let plan = env.write_plan("plan.yaml", &full_plan(&env));
    let before = fingerprint(&env);

    let run = env.ok(&["run", plan.to_str().unwrap(), "--dry-run"]);
    for call in [
        "would call CreateSnapshot",
        "would call CreateReplicationGroup",
        "would call PointAlias",
        "would call DeleteReplicationGroup",
    ] {
        assert!(run.stdout.contains(call), "missing `{call}`: {run:?}");
    }
    assert!(
        run.stdout.contains("\"AuthToken\":\"<redacted>\""),
        "{run:?}"
    );
    assert!(
        !env.token_file().exists(),
        "a dry run must not write the token file"
    );
    assert_eq!(
        fingerprint(&env),
        before,
        "the dry run changed the sandbox or the state"
    );

    // JSON output of a rehearsal is one event per line.
    let json = env.ok(&[
        "run",
        plan.to_str().unwrap(),
        "--dry-run",
        "--output",
        "json",
    ]);
    let events: Vec<serde_json::Value> = json
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).expect(l))
        .collect();
    assert!(
        events
            .iter()
            .any(|e| e["event"] == "call" && e["dry_run"] == true)
    );
    assert_eq!(events.last().unwrap()["event"], "run_finished");
    assert_eq!(fingerprint(&env), before);
}

/// Start the plan with a slow sandbox create (it stays slow for every later command of `env`), and
/// SIGKILL it while the target is being created.
fn kill_during_restore(env: &mut Env, plan: &std::path::Path) {
    let events = env
        .state_dir()
        .join("orders-migration")
        .join("events.jsonl");
    env.set_env("ECMIGRATE_SANDBOX_CREATE_DELAY_MS", "4000");
    let mut child = env
        .command(&["run", plan.to_str().unwrap(), "--yes"])
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let started = Instant::now();
    loop {
        let text = std::fs::read_to_string(&events).unwrap_or_default();
        if text.contains("\"operation\":\"CreateReplicationGroup\"") {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "restore never started: {text}"
        );
        assert!(
            child.try_wait().unwrap().is_none(),
            "the run ended before restore: {text}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(300));
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
}

#[test]
fn sigkill_during_restore_then_resume_creates_nothing_twice() {
    let mut env = Env::new();
    env.sandbox_with_source(1000);
    let plan = env.write_plan("plan.yaml", &full_plan(&env));
    kill_during_restore(&mut env, &plan);

    let mid = env.sandbox_status();
    let target =
        Env::group(&mid, crate::harness::TARGET).expect("the target was requested before the kill");
    assert_ne!(
        target["status"], "available",
        "the kill should land while the target is still creating"
    );
    let status: serde_json::Value = serde_json::from_str(
        &env.ok(&["status", plan.to_str().unwrap(), "--output", "json"])
            .stdout,
    )
    .unwrap();
    assert_eq!(status["steps"][2]["status"], "running", "{status}");

    let resumed = env.ok(&["run", plan.to_str().unwrap(), "--yes"]);
    assert!(resumed.stdout.contains("already requested"), "{resumed:?}");
    assert!(
        !resumed.stdout.contains("call CreateReplicationGroup"),
        "a second create was made: {resumed:?}"
    );

    let after = env.sandbox_status();
    let groups = after["groups"].as_array().unwrap();
    assert_eq!(
        groups
            .iter()
            .filter(|g| g["replication_group_id"] == TARGET)
            .count(),
        1
    );
    assert!(Env::group(&after, SOURCE).is_none());
    let snaps: Vec<&str> = after["snapshots"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        snaps.iter().filter(|n| !n.contains("final")).count(),
        1,
        "{snaps:?}"
    );
}

#[test]
fn preflight_refuses_a_disabled_key_with_exit_3_and_creates_nothing() {
    let env = Env::new();
    env.sandbox_with_source(100);
    env.ok(&["sandbox", "kms", "disable", "orders"]);
    let plan = env.write_plan("plan.yaml", &full_plan(&env));
    let before = fingerprint(&env);
    let run = env.run(&["run", plan.to_str().unwrap(), "--yes"]);
    assert_eq!(run.code, 3, "{run:?}");
    assert!(run.stderr.contains("kms_key"), "{run:?}");
    assert!(run.stderr.contains("hint:"), "{run:?}");
    assert_eq!(
        fingerprint(&env).files,
        before.files,
        "preflight changed the sandbox"
    );
    assert!(!env.token_file().exists());
}

#[test]
fn preflight_refuses_an_existing_target_and_a_missing_source() {
    let env = Env::new();
    env.sandbox_with_source(10);
    env.ok(&[
        "sandbox",
        "up",
        "--group",
        TARGET,
        "--replicas",
        "0",
        "--keys",
        "0",
    ]);
    let plan = env.write_plan("plan.yaml", &full_plan(&env));
    let run = env.run(&["run", plan.to_str().unwrap(), "--yes"]);
    assert_eq!(run.code, 3, "{run:?}");
    assert!(run.stderr.contains("target_id_free"), "{run:?}");

    let other = full_plan(&env)
        .replace(
            "replication_group_id: orders\n",
            "replication_group_id: nosuch\n",
        )
        .replace("confirm: orders", "confirm: nosuch");
    let plan = env.write_plan("other.yaml", &other);
    let run = env.run(&["run", plan.to_str().unwrap(), "--yes"]);
    assert_eq!(run.code, 3, "{run:?}");
    assert!(run.stderr.contains("source_exists"), "{run:?}");
}

#[test]
fn delete_without_a_terminal_needs_yes_and_confirm() {
    let env = Env::new();
    env.sandbox_with_source(10);
    let plan = env.write_plan("plan.yaml", &full_plan(&env));
    let before = fingerprint(&env);
    let run = env.run(&["run", plan.to_str().unwrap()]);
    assert_eq!(run.code, 2, "{run:?}");
    assert!(run.stderr.contains("confirm: orders"), "{run:?}");
    assert_eq!(fingerprint(&env), before);
}

#[test]
fn a_changed_plan_is_refused_naming_the_field() {
    let env = Env::new();
    env.sandbox_with_source(50);
    let partial = full_plan(&env)
        .split("  - kind: verify")
        .next()
        .unwrap()
        .to_string();
    let plan = env.write_plan("plan.yaml", &partial);
    env.ok(&["run", plan.to_str().unwrap(), "--yes"]);
    let changed = partial.replace("kms_key_id: alias/orders", "kms_key_id: alias/other");
    env.write_plan("plan.yaml", &changed);
    let run = env.run(&["run", plan.to_str().unwrap(), "--yes"]);
    assert_eq!(run.code, 2, "{run:?}");
    assert!(run.stderr.contains("target.kms_key_id"), "{run:?}");
}

#[test]
fn a_generated_token_kept_in_the_secrets_manager_stand_in_opens_the_target() {
    use ecmigrate::cloud::CloudRead;
    let env = Env::new();
    env.sandbox_with_source(200);
    let text = full_plan(&env).replace(
        &format!(
            "auth_token: {{ generate: true, file: {} }}",
            env.token_file().display()
        ),
        "auth_token: { generate: true, secrets_manager: orders/auth-token }",
    );
    assert!(text.contains("secrets_manager"), "{text}");
    let plan = env.write_plan("plan.yaml", &text);
    let run = env.ok(&["run", plan.to_str().unwrap(), "--yes"]);
    assert!(run.stdout.contains("PutSecretValue"), "{run:?}");

    let sandbox = ecmigrate::cloud::sandbox::Sandbox::open(&env.sandbox_dir()).unwrap();
    let token = block_on(sandbox.get_secret("orders/auth-token"))
        .unwrap()
        .expect("the token was stored");
    ecmigrate::plan::rules::check_auth_token(token.expose()).unwrap();
    let state =
        std::fs::read_to_string(env.state_dir().join("orders-migration").join("state.json"))
            .unwrap();
    assert!(
        state.contains("secretsmanager:orders/auth-token"),
        "the state keeps the reference"
    );
    assert!(
        !state.contains(token.expose()) && !run.all_output().contains(token.expose()),
        "the token leaked"
    );

    let port = Env::primary_port(&env.sandbox_status(), TARGET);
    block_on(async {
        let mut c = connect(&tls_endpoint(&env, port, Some(token)))
            .await
            .expect("TLS + AUTH");
        let n: u64 = redis::cmd("DBSIZE").query_async(&mut c).await.unwrap();
        assert_eq!(n, 200);
    });
}

#[test]
fn preflight_refuses_cluster_mode_for_a_source_with_keys_outside_database_0() {
    let env = Env::new();
    env.sandbox_with_source(50);
    let port = Env::primary_port(&env.sandbox_status(), SOURCE);
    block_on(async {
        let mut c = connect(&RedisEndpoint::plain("127.0.0.1", port).with_db(3))
            .await
            .unwrap();
        exec(&mut c, &["SET", "ecm:in-db3", "x"]).await;
    });
    let text = full_plan(&env).replace(
        "  kms_key_id: alias/orders\n",
        "  kms_key_id: alias/orders\n  num_node_groups: 2\n",
    );
    let plan = env.write_plan("plan.yaml", &text);
    let before = fingerprint(&env);
    let run = env.run(&["run", plan.to_str().unwrap(), "--yes"]);
    assert_eq!(run.code, 3, "{run:?}");
    assert!(
        run.stderr.contains("[cluster_mode]") && run.stderr.contains("db3 (1 keys)"),
        "{run:?}"
    );
    assert_eq!(
        fingerprint(&env).files,
        before.files,
        "preflight changed the sandbox"
    );
}

/// Rewrite the state file as if the restore step had not recorded its intent (or had another run id).
fn edit_state(env: &Env, edit: impl FnOnce(&mut serde_json::Value)) {
    let path = env.state_dir().join("orders-migration").join("state.json");
    let mut state: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    edit(&mut state);
    std::fs::write(&path, serde_json::to_vec_pretty(&state).unwrap()).unwrap();
}

#[test]
fn a_target_without_recorded_intent_is_adopted_only_when_its_tags_name_this_run() {
    let mut env = Env::new();
    env.sandbox_with_source(100);
    let plan = env.write_plan("plan.yaml", &full_plan(&env));
    kill_during_restore(&mut env, &plan);
    // The state lost the restore step's intent: the group's tags (plan + run) still tie it to the run.
    edit_state(&env, |s| s["steps"][2]["intent"] = serde_json::json!({}));
    let saved =
        std::fs::read_to_string(env.state_dir().join("orders-migration").join("state.json"))
            .unwrap();

    // Another run id: the tags do not match, so the existing group is not taken over.
    edit_state(&env, |s| {
        s["run_id"] = serde_json::json!("20000101000000-000000")
    });
    let refused = env.run(&["run", plan.to_str().unwrap(), "--yes"]);
    assert_eq!(refused.code, 1, "{refused:?}");
    assert!(
        refused
            .stderr
            .contains("exists but this run did not create it"),
        "{refused:?}"
    );

    std::fs::write(
        env.state_dir().join("orders-migration").join("state.json"),
        saved,
    )
    .unwrap();
    let resumed = env.ok(&["run", plan.to_str().unwrap(), "--yes"]);
    assert!(
        !resumed.stdout.contains("call CreateReplicationGroup"),
        "{resumed:?}"
    );
    let after = env.sandbox_status();
    assert_eq!(after["groups"].as_array().unwrap().len(), 1, "{after}");
    assert_eq!(Env::group(&after, TARGET).unwrap()["status"], "available");
}

#[test]
fn preflight_refuses_a_source_that_is_not_available() {
    let env = Env::new();
    env.sandbox_with_source(20);
    // The source's primary dies: the group is no longer `available`.
    let status = env.sandbox_status();
    let primary = Env::group(&status, SOURCE).unwrap()["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["role"] == "primary")
        .and_then(|n| n["pid"].as_i64())
        .expect("primary pid in sandbox status");
    unsafe { libc::kill(primary as i32, libc::SIGKILL) };
    std::thread::sleep(Duration::from_millis(300));
    let plan = env.write_plan("plan.yaml", &full_plan(&env));
    let run = env.run(&["run", plan.to_str().unwrap(), "--yes"]);
    assert_eq!(run.code, 3, "{run:?}");
    assert!(run.stderr.contains("[source_available]"), "{run:?}");
    assert!(!env.token_file().exists());
}

#[test]
fn delete_source_waits_for_foreign_clients_and_refuses_while_they_stay() {
    use std::io::{Read, Write};
    let env = Env::new();
    env.sandbox_with_source(100);
    let port = Env::primary_port(&env.sandbox_status(), SOURCE);
    // The cutover leaves the application connected (`disconnect_clients: false`), as when it was never
    // repointed.
    let text = full_plan(&env)
        .replace(
            "    confirm: orders",
            "    confirm: orders\n    drain_timeout_seconds: 1",
        )
        .replace(
            "    alias: orders-endpoint\n",
            "    alias: orders-endpoint\n    disconnect_clients: false\n",
        );
    let plan = env.write_plan("plan.yaml", &text);
    // An application still connected to the source (a plain socket: it stays open until dropped).
    let mut app = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    app.write_all(b"CLIENT SETNAME orders-app\r\n").unwrap();
    let mut ok = [0u8; 5];
    app.read_exact(&mut ok).unwrap();
    assert_eq!(&ok, b"+OK\r\n");

    let refused = env.run(&["run", plan.to_str().unwrap(), "--yes"]);
    assert_eq!(refused.code, 1, "{refused:?}");
    assert!(
        refused.stderr.contains("orders-app"),
        "the refusal must name the client: {refused:?}"
    );
    assert!(refused.stderr.contains("force: true"), "{refused:?}");
    assert!(
        Env::group(&env.sandbox_status(), SOURCE).is_some(),
        "the source was deleted"
    );

    drop(app);
    std::thread::sleep(Duration::from_millis(200));
    let resumed = env.ok(&["run", plan.to_str().unwrap(), "--yes"]);
    assert!(resumed.stdout.contains("clients_drained"), "{resumed:?}");
    assert!(Env::group(&env.sandbox_status(), SOURCE).is_none());
}
