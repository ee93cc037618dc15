//! The wizard driven in a pseudo-terminal: answered to the end it writes a plan that validates and runs;
//! interrupted with Ctrl-C it writes nothing; without a terminal it refuses.

use std::time::Duration;

use expectrl::{ControlCode, Session};

use crate::harness::{Env, SOURCE, bin, wait_for};

fn spawn_wizard(env: &Env, out: &std::path::Path) -> Session {
    let mut cmd = std::process::Command::new(bin());
    cmd.args(["wizard", "--out", out.to_str().unwrap()])
        .current_dir(env.path())
        .env("ECMIGRATE_SANDBOX_DIR", env.sandbox_dir())
        .env("ECMIGRATE_STATE_DIR", env.state_dir())
        .env("TERM", "xterm")
        .env_remove("CI");
    let mut session = Session::spawn(cmd).expect("spawn the wizard in a pty");
    session.set_expect_timeout(Some(Duration::from_secs(30)));
    session
}

/// Wait for a prompt, then press Enter (the default answer).
fn accept(s: &mut Session, prompt: &str) {
    s.expect(prompt)
        .unwrap_or_else(|e| panic!("no prompt `{prompt}`: {e}"));
    s.send("\r").unwrap();
}

#[test]
fn the_wizard_writes_a_plan_that_validates_and_runs() {
    let env = Env::new();
    env.sandbox_with_source(300);
    let out = env.path().join("plans").join("wizard.yaml");
    let mut s = spawn_wizard(&env, &out);
    accept(&mut s, "Which replication group");
    accept(&mut s, "Target replication group id");
    accept(&mut s, "Node type");
    accept(&mut s, "Replicas per node group");
    accept(&mut s, "KMS key");
    accept(&mut s, "AUTH token");
    accept(&mut s, "Where is the token kept");
    accept(&mut s, "Token file");
    accept(&mut s, "Show the generated token");
    accept(&mut s, "Copy the writes made after the snapshot");
    accept(&mut s, "Cutover");
    accept(&mut s, "Alias to repoint");
    accept(&mut s, "Delete `orders` at the end");
    accept(&mut s, "Plan name");
    accept(&mut s, "Write the plan to");
    s.expect("wrote").unwrap();
    accept(&mut s, "Run the dry-run rehearsal now?");
    s.expect("dry run finished: nothing was changed")
        .expect("the rehearsal ran");
    wait_for("the wizard to exit", Duration::from_secs(30), || {
        !s.is_alive().unwrap_or(false)
    });

    let text = std::fs::read_to_string(&out).expect("the plan was written");
    assert!(
        text.contains("kind: stream_copy") && text.contains("alias: orders-endpoint"),
        "{text}"
    );
    assert!(text.contains("kms_key_id: alias/orders"), "{text}");
    let token = std::fs::read_to_string(
        out.parent()
            .unwrap()
            .join("secrets")
            .join("orders-enc.token"),
    )
    .unwrap();
    assert!(
        !text.contains(token.trim()),
        "the plan must not hold the token"
    );
    env.ok(&["plan", "validate", out.to_str().unwrap()]);
    let run = env.ok(&["run", out.to_str().unwrap(), "--yes"]);
    assert!(run.stdout.contains("run done"), "{run:?}");
    let status = env.sandbox_status();
    assert_eq!(status["aliases"]["orders-endpoint"], "orders-enc");
    assert!(
        Env::group(&status, SOURCE).is_some(),
        "the default keeps the source"
    );
}

#[test]
fn ctrl_c_halfway_leaves_nothing_behind() {
    let env = Env::new();
    env.sandbox_with_source(10);
    let out = env.path().join("plans").join("wizard.yaml");
    let mut s = spawn_wizard(&env, &out);
    accept(&mut s, "Which replication group");
    accept(&mut s, "Target replication group id");
    accept(&mut s, "Node type");
    s.expect("Replicas per node group").unwrap();
    s.send(ControlCode::EndOfText).unwrap(); // Ctrl-C
    wait_for("the wizard to exit", Duration::from_secs(30), || {
        !s.is_alive().unwrap_or(false)
    });
    assert!(
        !s.is_alive().unwrap_or(false),
        "the wizard kept running after Ctrl-C"
    );
    assert!(!out.exists(), "a plan was written");
    assert!(
        !env.path().join("plans").exists(),
        "the plans folder was created"
    );
    assert!(!env.state_dir().exists(), "state was written");
}

#[test]
fn the_wizard_refuses_without_a_terminal() {
    let env = Env::new();
    let r = env.run(&["wizard"]);
    assert_eq!(r.code, 2, "{r:?}");
    assert!(r.stderr.contains("run PLAN"), "{r:?}");
}
