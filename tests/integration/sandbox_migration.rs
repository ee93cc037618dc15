//! The migration on the sandbox: the scenarios every backend runs (`scenarios.rs`), and what only the
//! sandbox can stage — a slow create killed midway and adopted, a dead primary, a client that stays on
//! the source, keys outside database 0, the Secrets Manager stand-in, a changed plan.

use std::time::Duration;

use ecmigrate::data::connect::{RedisEndpoint, connect};
use ecmigrate::secret::Secret;

use crate::backend::{Backend, Calls, Sandbox};
use crate::harness::{Env, SOURCE, TARGET, block_on, exec, full_plan, wait_for};
use crate::scenarios::{kill_at_create, scenarios_on};

scenarios_on!(Sandbox);

fn tls_endpoint(env: &Env, port: u16, password: Option<Secret>) -> RedisEndpoint {
    RedisEndpoint {
        username: None,
        host: "127.0.0.1".into(),
        port,
        tls: true,
        ca_file: Some(env.sandbox_status()["ca_file"].as_str().unwrap().into()),
        password,
        db: 0,
        client_cert: None,
    }
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

/// Start the plan with a slow sandbox create (it stays slow for every later command of `env`), and
/// SIGKILL it while the target is being created.
fn kill_during_restore(env: &mut Env, plan: &std::path::Path) {
    let sandbox = Sandbox::start(env, Calls::Retried).unwrap();
    sandbox.slow_restore(env);
    kill_at_create(&sandbox, env, plan);
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
    assert!(
        run.stdout
            .contains("keep a new AUTH token in Secrets Manager secret orders/auth-token"),
        "{run:?}"
    );

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
    assert!(!resumed.stdout.contains("create group "), "{resumed:?}");
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
    wait_for(
        "the source to be reported not available",
        Duration::from_secs(30),
        || Env::group(&env.sandbox_status(), SOURCE).unwrap()["status"] != "available",
    );
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
    wait_for(
        "the source to see the application disconnect",
        Duration::from_secs(30),
        || {
            block_on(async {
                let mut c = connect(&RedisEndpoint::plain("127.0.0.1", port))
                    .await
                    .unwrap();
                let clients: String = redis::cmd("CLIENT")
                    .arg("LIST")
                    .query_async(&mut c)
                    .await
                    .unwrap();
                !clients.contains("name=orders-app")
            })
        },
    );
    let resumed = env.ok(&["run", plan.to_str().unwrap(), "--yes"]);
    assert!(resumed.stdout.contains("clients_drained"), "{resumed:?}");
    assert!(Env::group(&env.sandbox_status(), SOURCE).is_none());
}
