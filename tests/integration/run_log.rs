//! The run log people read: the demo plan (`plans/sandbox-demo.yaml`) rehearsed and run on the sandbox
//! prints one sentence per cloud action and no request body, `--verbose` adds the bodies, the journal keeps
//! them unchanged, and the rehearsal ends with its Terraform-style summary.

use serde_json::Value;

use crate::harness::{Env, Run};

/// The demo plan as shipped, with the token kept in this test's folder and the cutover not held (the
/// hold and its release are `cutover.rs`'s).
fn demo_plan(env: &Env) -> std::path::PathBuf {
    let shipped = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("plans/sandbox-demo.yaml"),
    )
    .expect("plans/sandbox-demo.yaml");
    let token = "file: ../.ecmigrate/secrets/orders-enc.token";
    assert!(shipped.contains(token), "the demo plan's token line moved");
    let text = shipped.replace(token, &format!("file: {}", env.token_file().display()));
    let held = text
        .lines()
        .find(|l| l.trim_start().starts_with("postpone: true"))
        .expect("the demo plan holds its cutover")
        .to_string();
    env.write_plan("demo.yaml", &text.replace(&format!("{held}\n"), ""))
}

/// No line of the text output carries a JSON body.
fn assert_no_bodies(run: &Run) {
    for line in run.all_output().lines() {
        assert!(!line.contains("{\""), "a request body in `{line}`: {run:?}");
    }
}

fn assert_has(run: &Run, wanted: &[&str]) {
    for w in wanted {
        assert!(run.stdout.contains(w), "missing `{w}`: {run:?}");
    }
}

#[test]
fn the_demo_plan_reads_as_one_sentence_per_action_and_its_rehearsal_ends_with_a_plan_line() {
    let env = Env::new();
    env.sandbox_with_source(200);
    let plan = demo_plan(&env);
    let plan = plan.to_str().unwrap();

    let rehearsal = env.ok(&["run", plan, "--dry-run"]);
    assert_no_bodies(&rehearsal);
    assert_has(
        &rehearsal,
        &[
            "    would keep a new AUTH token in file:",
            "    would create snapshot orders-ecmigrate-",
            " of orders encrypted with alias/orders",
            "    would create group orders-enc from snapshot orders-ecmigrate-",
            "(KMS alias/orders, TLS required, AUTH token from file:",
            "    would pause writes on orders for at most 3000 ms",
            "    would point alias orders-endpoint at orders-enc (now orders)",
            "    would seal orders after the tail: writes paused 24 h, so a client left on it fails",
            "    would create final snapshot orders-ecmigrate-final-",
            "    would delete group orders (final snapshot orders-ecmigrate-final-",
        ],
    );
    let summary = "Plan: 1 snapshot and 1 group to create, 1 AUTH token to store, 1 alias to repoint, \
                   1 group to delete (after an encrypted final snapshot); writes paused up to 3000 ms; \
                   then the source sealed (writes paused 24 h).";
    assert!(
        rehearsal.stdout.lines().any(|l| l == summary),
        "no `{summary}`: {rehearsal:?}"
    );

    let verbose = env.ok(&["run", plan, "--dry-run", "--verbose"]);
    assert_has(
        &verbose,
        &[
            "        CreateSnapshot {\"",
            "        CreateReplicationGroup {\"",
            "\"AtRestEncryptionEnabled\":true",
            "\"AuthToken\":\"<redacted>\"",
            "        PointAlias {\"",
        ],
    );
    assert!(verbose.stdout.contains(summary), "{verbose:?}");

    let run = env.ok(&["run", plan, "--yes"]);
    assert_no_bodies(&run);
    assert_has(
        &run,
        &[
            "    create snapshot orders-ecmigrate-",
            "    create group orders-enc from snapshot orders-ecmigrate-",
            "    pause writes on orders for at most 3000 ms",
            "    point alias orders-endpoint at orders-enc (now orders)",
            "    delete group orders (final snapshot orders-ecmigrate-final-",
        ],
    );
    assert!(!run.stdout.contains("would "), "{run:?}");
    assert!(!run.stdout.contains("Plan: "), "{run:?}");

    // The journal keeps every body as it was sent (the token redacted).
    let journal = std::fs::read_to_string(env.state_dir().join("sandbox-demo/events.jsonl"))
        .expect("the demo's journal");
    let calls: Vec<Value> = journal
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).expect(l))
        .filter(|e| e["event"] == "call")
        .collect();
    let body = |op: &str| {
        calls
            .iter()
            .find(|c| c["operation"] == op)
            .unwrap_or_else(|| panic!("no {op} in the journal: {journal}"))["params"]
            .clone()
    };
    let create = body("CreateReplicationGroup");
    assert_eq!(create["ReplicationGroupId"], "orders-enc", "{create}");
    assert_eq!(create["AtRestEncryptionEnabled"], true, "{create}");
    assert_eq!(create["TransitEncryptionEnabled"], true, "{create}");
    assert_eq!(create["AuthToken"], "<redacted>", "{create}");
    assert!(create["KmsKeyId"].is_string(), "{create}");
    assert_eq!(body("PointAlias")["to"], "orders-enc");
    assert_eq!(body("ClientPause")["timeout_ms"], 3000);
    assert_eq!(
        body("DeleteReplicationGroup")["ReplicationGroupId"],
        "orders"
    );

    let token = std::fs::read_to_string(env.token_file()).expect("the generated token");
    for out in [&rehearsal, &verbose, &run] {
        assert!(
            !out.all_output().contains(token.trim()),
            "the token was shown"
        );
    }
    assert!(
        !journal.contains(token.trim()),
        "the token is in the journal"
    );
}
