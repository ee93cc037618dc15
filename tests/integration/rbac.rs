//! An RBAC target (`target.auth.rbac`) on the sandbox: users and a user group created before the group,
//! the group created with UserGroupIds and no AUTH token; afterwards each user opens the group with its
//! own password and rights, the data plane signed in as `data_plane_user`, no password left in any
//! output or file of ecmigrate; and a run killed after each creation resumes and creates each once.

use std::path::PathBuf;

use ecmigrate::data::connect::{RedisEndpoint, connect};
use ecmigrate::secret::Secret;
use serde_json::Value;

use crate::harness::{Env, SOURCE, TARGET, block_on};

const KEYS: u64 = 300;
const USER_GROUP: &str = "orders-users";

fn password_file(env: &Env, user: &str) -> PathBuf {
    env.path().join("secrets").join(format!("{user}.password"))
}

fn rbac_plan(env: &Env) -> String {
    format!(
        r#"version: 1
name: orders-rbac
provider: sandbox
source:
  replication_group_id: {SOURCE}
target:
  replication_group_id: {TARGET}
  kms_key_id: alias/orders
  auth:
    rbac:
      user_group_id: {USER_GROUP}
      data_plane_user: orders-migrator
      users:
        - user_id: orders-default
          user_name: default
          access_string: "off ~* -@all"
          password: {{ generate: true, file: {} }}
        - user_id: orders-migrator
          user_name: migrator
          access_string: "on ~* &* +@all"
          password: {{ generate: true, file: {} }}
        - user_id: orders-reader
          user_name: reader
          access_string: "on ~* +@read +@connection"
          password: {{ generate: true, file: {} }}
steps:
  - kind: preflight
  - kind: backup
  - kind: restore_encrypted
  - kind: verify
    full: true
"#,
        password_file(env, "default").display(),
        password_file(env, "migrator").display(),
        password_file(env, "reader").display(),
    )
}

fn password(env: &Env, user: &str) -> String {
    std::fs::read_to_string(password_file(env, user))
        .expect("generated password kept")
        .trim()
        .to_string()
}

fn target(env: &Env, user: Option<&str>, password: Option<&str>) -> RedisEndpoint {
    let status = env.sandbox_status();
    RedisEndpoint {
        host: "127.0.0.1".into(),
        port: Env::primary_port(&status, TARGET),
        tls: true,
        ca_file: Some(status["ca_file"].as_str().unwrap().into()),
        username: user.map(str::to_string),
        password: password.map(Secret::new),
        db: 0,
        client_cert: None,
    }
}

/// The reply of `args` on `endpoint`, or the error text (connecting included).
fn ask(endpoint: &RedisEndpoint, args: &[&str]) -> Result<redis::Value, String> {
    block_on(async {
        let mut conn = connect(endpoint).await.map_err(|e| e.to_string())?;
        let mut cmd = redis::cmd(args[0]);
        for a in &args[1..] {
            cmd.arg(*a);
        }
        cmd.query_async::<redis::Value>(&mut conn)
            .await
            .map_err(|e| e.to_string())
    })
}

fn restore_outputs(env: &Env, plan: &str) -> Value {
    Env::step(&env.status_json(plan), "restore_encrypted")["outputs"].clone()
}

#[test]
fn an_rbac_target_opens_to_its_users_with_their_rights_only() {
    let env = Env::new();
    env.sandbox_with_source(KEYS);
    let plan = env.write_plan("plan.yaml", &rbac_plan(&env));
    let plan = plan.to_str().unwrap();
    // The rehearsal calls the users' secrets passwords, not AUTH tokens, and counts what it creates.
    let rehearsal = env.ok(&["run", plan, "--dry-run"]).stdout;
    assert!(
        rehearsal.contains("    would keep a new RBAC password in file:"),
        "{rehearsal}"
    );
    assert!(!rehearsal.contains("AUTH token in"), "{rehearsal}");
    assert!(
        rehearsal.contains("RBAC users and 1 user group to create, ")
            && rehearsal.contains(" RBAC passwords to store"),
        "{rehearsal}"
    );
    let run = env.ok(&["run", plan, "--yes", "--output", "json"]);

    let out = restore_outputs(&env, plan);
    assert_eq!(
        out["user_group_ids"],
        serde_json::json!([USER_GROUP]),
        "{out}"
    );
    assert_eq!(out["auth_token_enabled"], false, "{out}");
    // The request named the user group and carried no AUTH token.
    let create = run
        .stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|e| e["event"] == "call" && e["operation"] == "CreateReplicationGroup")
        .expect("CreateReplicationGroup call event");
    assert_eq!(
        create["params"]["UserGroupIds"],
        serde_json::json!([USER_GROUP])
    );
    assert!(create["params"].get("AuthToken").is_none(), "{create}");

    let migrator = password(&env, "migrator");
    let reader = password(&env, "reader");
    let default = password(&env, "default");
    // The data plane user holds every key (verify --full passed as it).
    let size = ask(
        &target(&env, Some("migrator"), Some(&migrator)),
        &["DBSIZE"],
    );
    assert_eq!(size, Ok(redis::Value::Int(KEYS as i64)));
    // The reader reads and may not write.
    let key = match ask(&target(&env, Some("reader"), Some(&reader)), &["RANDOMKEY"]) {
        Ok(redis::Value::BulkString(k)) => String::from_utf8(k).unwrap(),
        other => panic!("reader RANDOMKEY: {other:?}"),
    };
    assert!(
        ask(
            &target(&env, Some("reader"), Some(&reader)),
            &["TYPE", &key]
        )
        .is_ok()
    );
    let write = ask(
        &target(&env, Some("reader"), Some(&reader)),
        &["SET", "x", "1"],
    );
    assert!(
        write
            .as_ref()
            .is_err_and(|e| e.to_ascii_lowercase().contains("noperm")),
        "{write:?}"
    );
    // A wrong password, the switched-off default user, and no sign-in at all are refused.
    assert!(ask(&target(&env, Some("migrator"), Some(&reader)), &["PING"]).is_err());
    assert!(ask(&target(&env, None, Some(&default)), &["PING"]).is_err());
    let anonymous = ask(&target(&env, None, None), &["GET", &key]);
    assert!(anonymous.is_err(), "{anonymous:?}");

    // The evidence report says how clients authenticate.
    let report = walk(env.path())
        .into_iter()
        .find(|p| p.file_name().is_some_and(|n| n == "report.md"))
        .expect("an evidence report");
    let report = std::fs::read_to_string(report).unwrap();
    assert!(
        report.contains("RBAC users of user group `orders-users`"),
        "{report}"
    );

    // No password in what ecmigrate printed or kept (the sandbox keeps SHA-256 hashes only).
    // The state folder holds the journal (events.jsonl) and the state.
    let mut kept = String::new();
    for dir in [env.state_dir(), env.sandbox_dir()] {
        for f in walk(&dir) {
            kept.push_str(&String::from_utf8_lossy(
                &std::fs::read(&f).unwrap_or_default(),
            ));
        }
    }
    kept.push_str(&run.all_output());
    for (who, p) in [
        ("migrator", &migrator),
        ("reader", &reader),
        ("default", &default),
    ] {
        assert!(!kept.contains(p.as_str()), "the {who} password leaked");
    }
}

fn walk(dir: &std::path::Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// Killed right after each creation (its answer unseen), the next run adopts what this run recorded
/// and creates the rest: every user and the group exist once and the group opens to its users.
#[test]
fn killed_after_each_rbac_creation_resumes_creating_each_once() {
    for fault in ["CreateUser=crash-after*2", "CreateUserGroup=crash-after*1"] {
        let mut env = Env::new();
        env.sandbox_with_source(KEYS);
        let plan = env.write_plan("plan.yaml", &rbac_plan(&env));
        let plan = plan.to_str().unwrap();
        env.set_env("ECMIGRATE_TEST_CLOUD_FAULTS", fault);
        let crashed = env.run(&["run", plan, "--yes"]);
        assert_eq!(crashed.code, 137, "{fault}: {crashed:?}");
        assert_eq!(env.status_json(plan)["state"], "interrupted");
        env.set_env("ECMIGRATE_TEST_CLOUD_FAULTS", "");
        let resumed = env.ok(&["run", plan, "--yes"]);
        assert!(
            resumed.all_output().contains("was already requested"),
            "{fault}: the resumed run did not adopt what was created: {resumed:?}"
        );
        let registry: Value = serde_json::from_str(
            &std::fs::read_to_string(env.sandbox_dir().join("registry.json")).unwrap(),
        )
        .unwrap();
        let users: Vec<&String> = registry["users"].as_object().unwrap().keys().collect();
        assert_eq!(
            users,
            ["orders-default", "orders-migrator", "orders-reader"],
            "{fault}"
        );
        assert_eq!(registry["user_groups"].as_object().unwrap().len(), 1);
        let migrator = password(&env, "migrator");
        let size = ask(
            &target(&env, Some("migrator"), Some(&migrator)),
            &["DBSIZE"],
        );
        assert_eq!(size, Ok(redis::Value::Int(KEYS as i64)), "{fault}");
    }
}

/// A token-protected sandbox group (`orders-enc`, TLS + AUTH) restored from the seeded source.
fn token_group(env: &Env) {
    env.sandbox_with_source(KEYS);
    let yaml = format!(
        "version: 1\nname: make-enc\nprovider: sandbox\nsource:\n  replication_group_id: {SOURCE}\ntarget:\n  replication_group_id: {TARGET}\n  kms_key_id: alias/orders\n  auth_token: {{ generate: true, file: {} }}\nsteps:\n  - kind: preflight\n  - kind: backup\n  - kind: restore_encrypted\n",
        env.token_file().display()
    );
    let plan = env.write_plan("make-enc.yaml", &yaml);
    env.ok(&["run", plan.to_str().unwrap(), "--yes"]);
}

/// The in-place plan: the RBAC part of `rbac_plan` under `source.auth`, the current token's store.
fn migrate_plan(env: &Env) -> String {
    let users = rbac_plan(env);
    let rbac: String = users
        .lines()
        .skip_while(|l| !l.starts_with("  auth:"))
        .take_while(|l| !l.starts_with("steps:"))
        .map(|l| format!("{l}\n"))
        .collect();
    format!(
        "version: 1\nname: to-rbac\nprovider: sandbox\nsource:\n  replication_group_id: {TARGET}\n  auth_token: {{ file: {} }}\n{rbac}steps:\n  - kind: preflight\n  - kind: migrate_to_rbac\n",
        env.token_file().display()
    )
}

#[test]
fn a_token_group_moves_to_rbac_in_place() {
    for fault in ["", "ModifyReplicationGroup=crash-after*1"] {
        let mut env = Env::new();
        token_group(&env);
        let token = std::fs::read_to_string(env.token_file())
            .unwrap()
            .trim()
            .to_string();
        assert!(
            ask(&target(&env, None, Some(&token)), &["PING"]).is_ok(),
            "the token opens it before"
        );
        let plan = env.write_plan("to-rbac.yaml", &migrate_plan(&env));
        let plan = plan.to_str().unwrap();
        let rehearsal = env.ok(&["run", plan, "--dry-run"]);
        assert!(
            rehearsal
                .all_output()
                .contains("AuthTokenUpdateStrategy DELETE"),
            "{rehearsal:?}"
        );
        if !fault.is_empty() {
            env.set_env("ECMIGRATE_TEST_CLOUD_FAULTS", fault);
            let crashed = env.run(&["run", plan, "--yes"]);
            assert_eq!(crashed.code, 137, "{crashed:?}");
            env.set_env("ECMIGRATE_TEST_CLOUD_FAULTS", "");
        }
        let run = env.ok(&["run", plan, "--yes"]);
        let out = Env::step(&env.status_json(plan), "migrate_to_rbac")["outputs"].clone();
        assert_eq!(
            out["user_group_ids"],
            serde_json::json!([USER_GROUP]),
            "{fault}: {out}"
        );
        assert_eq!(out["auth_token_enabled"], false, "{out}");
        assert_eq!(out["old_token_opens"], false, "{out}");
        let group = Env::group(&env.sandbox_status(), TARGET).unwrap().clone();
        assert_eq!(group["auth_token_enabled"], false, "{group}");
        // The users sign in; the old token alone, and anonymous clients, are refused; the data stayed.
        let migrator = password(&env, "migrator");
        let size = ask(
            &target(&env, Some("migrator"), Some(&migrator)),
            &["DBSIZE"],
        );
        assert_eq!(size, Ok(redis::Value::Int(KEYS as i64)), "{fault}");
        assert!(
            ask(&target(&env, None, Some(&token)), &["PING"]).is_err(),
            "{fault}"
        );
        assert!(
            ask(&target(&env, None, None), &["DBSIZE"]).is_err(),
            "{fault}"
        );
        // Sent once, whether or not the first attempt died right after sending it.
        let journal =
            std::fs::read_to_string(env.state_dir().join("to-rbac").join("events.jsonl")).unwrap();
        let modifies = journal
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|e| e["event"] == "call" && e["operation"] == "ModifyReplicationGroup")
            .count();
        assert_eq!(modifies, 1, "{fault}: {run:?}");
        let mut kept = run.all_output();
        for f in walk(&env.state_dir()) {
            kept.push_str(&String::from_utf8_lossy(
                &std::fs::read(&f).unwrap_or_default(),
            ));
        }
        assert!(
            !kept.contains(&migrator) && !kept.contains(&token),
            "a secret leaked"
        );
    }
}
