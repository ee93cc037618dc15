//! `enable_transit` (a plan without `target`): in-transit encryption switched on in place. On the sandbox,
//! a plain and a TLS client both connect while the group is `preferred`, the plain one is refused once it
//! is `required`, and a writer that reconnects loses no acknowledged write; on moto, the run sends exactly
//! the two ModifyReplicationGroup calls, in order, and holds between them.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ecmigrate::data::connect::RedisEndpoint;
use serde_json::Value;

use crate::harness::{Env, SOURCE, wait_for};
use crate::moto::{
    Moto, local_data_plane, moto_url, recorded_params, recording_len, unique, write_token,
};

const PLAN: &str = "version: 1\nname: orders-transit\nprovider: sandbox\nsource:\n  replication_group_id: orders\nsteps:\n  - kind: preflight\n  - kind: enable_transit\n";

/// The source's primary as `sandbox status --output json` shows it: (TLS or plain port, tls, plain port).
fn primary(env: &Env) -> (u16, bool, Option<u16>) {
    let status = env.sandbox_status();
    let g = Env::group(&status, SOURCE).expect("the source group");
    let n = &g["nodes"][0];
    (
        n["port"].as_u64().unwrap() as u16,
        n["tls"] == true,
        n["plain_port"].as_u64().map(|p| p as u16),
    )
}

fn tls_endpoint(env: &Env, port: u16) -> RedisEndpoint {
    RedisEndpoint {
        tls: true,
        ca_file: Some(env.sandbox_dir().join("ca").join("ca.pem")),
        ..RedisEndpoint::plain("127.0.0.1", port)
    }
}

fn ping(ep: &RedisEndpoint) -> redis::RedisResult<String> {
    let client = ep.client()?;
    let mut con = client.get_connection_with_timeout(Duration::from_secs(3))?;
    con.set_read_timeout(Some(Duration::from_secs(3)))?;
    redis::cmd("PING").query(&mut con)
}

/// An application writing `w:<n>` continuously: it reaches the group where `sandbox status` says (the
/// plain port while there is one, else TLS), and on a failed write reconnects and writes it again.
fn writer(
    env: &Env,
    stop: Arc<AtomicBool>,
    acked: Arc<Mutex<Vec<u64>>>,
) -> std::thread::JoinHandle<u32> {
    let sandbox = env.sandbox_dir();
    std::thread::spawn(move || {
        let endpoint = || {
            let out = std::process::Command::new(crate::harness::bin())
                .args(["sandbox", "status", "--output", "json"])
                .env("ECMIGRATE_SANDBOX_DIR", &sandbox)
                .output()
                .unwrap();
            let status: Value = serde_json::from_slice(&out.stdout).unwrap();
            let n = &Env::group(&status, SOURCE).unwrap()["nodes"][0];
            match n["plain_port"].as_u64() {
                Some(p) => RedisEndpoint::plain("127.0.0.1", p as u16),
                None if n["tls"] == true => RedisEndpoint {
                    tls: true,
                    ca_file: Some(sandbox.join("ca").join("ca.pem")),
                    ..RedisEndpoint::plain("127.0.0.1", n["port"].as_u64().unwrap() as u16)
                },
                None => RedisEndpoint::plain("127.0.0.1", n["port"].as_u64().unwrap() as u16),
            }
        };
        let mut reconnects = 0;
        let mut con: Option<redis::Connection> = None;
        let mut n = 0u64;
        while !stop.load(Ordering::SeqCst) {
            if con.is_none() {
                con = endpoint().client().and_then(|c| c.get_connection()).ok();
                reconnects += 1;
            }
            let Some(c) = con.as_mut() else {
                std::thread::sleep(Duration::from_millis(20));
                continue;
            };
            match redis::cmd("SET")
                .arg(format!("w:{n}"))
                .arg(n)
                .query::<()>(c)
            {
                Ok(()) => {
                    acked.lock().unwrap().push(n);
                    n += 1;
                    std::thread::sleep(Duration::from_millis(2));
                }
                Err(_) => con = None,
            }
        }
        reconnects
    })
}

#[test]
fn enable_transit_serves_plain_and_tls_then_tls_only_and_a_writer_loses_nothing() {
    let env = Env::new();
    env.sandbox_with_source(200);
    let plan = env.write_plan("transit.yaml", PLAN);
    let plan = plan.to_str().unwrap();
    let (plain_before, tls_before, _) = primary(&env);
    assert!(!tls_before);

    let rehearsal = env.ok(&["run", plan, "--dry-run"]);
    assert!(
        rehearsal
            .stdout
            .contains("would turn in-transit encryption on for orders in mode preferred")
            && rehearsal.stdout.contains("would require TLS on orders"),
        "{rehearsal:?}"
    );
    assert_eq!(
        primary(&env),
        (plain_before, false, None),
        "the rehearsal changed nothing"
    );

    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(Mutex::new(Vec::new()));
    let app = writer(&env, stop.clone(), acked.clone());
    let run = env.run_until_waiting(plan, Duration::from_secs(30));
    // `preferred`: the old plain port and a new TLS port, both answering.
    let (tls_port, tls, plain_port) = primary(&env);
    assert!(tls, "the node reports TLS");
    assert_eq!(
        plain_port,
        Some(plain_before),
        "clients keep their plain port"
    );
    assert_eq!(
        ping(&RedisEndpoint::plain("127.0.0.1", plain_before)).unwrap(),
        "PONG"
    );
    assert_eq!(ping(&tls_endpoint(&env, tls_port)).unwrap(), "PONG");
    let held = env.status_json(plan);
    assert_eq!(
        Env::step(&held, "enable_transit")["status"],
        "running",
        "{held}"
    );

    let released = env.ok(&["cutover", plan]);
    assert!(released.stdout.contains("requires TLS now"), "{released:?}");
    let run = run.finish();
    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.stdout.contains("plain_text_refused"), "{run:?}");

    // `required`: TLS only.
    let (port, tls, plain_port) = primary(&env);
    assert_eq!((port, tls, plain_port), (tls_port, true, None));
    assert!(ping(&RedisEndpoint::plain("127.0.0.1", plain_before)).is_err());
    assert_eq!(ping(&tls_endpoint(&env, tls_port)).unwrap(), "PONG");

    // The writer was cut off from the plain port and went on over TLS; every acknowledged write is there.
    let before = acked.lock().unwrap().len();
    wait_for("writes over TLS", Duration::from_secs(10), || {
        acked.lock().unwrap().len() > before + 20
    });
    stop.store(true, Ordering::SeqCst);
    let reconnects = app.join().unwrap();
    assert!(
        reconnects >= 2,
        "the writer reconnected after required ({reconnects})"
    );
    let mut con = tls_endpoint(&env, tls_port)
        .client()
        .unwrap()
        .get_connection()
        .unwrap();
    let acked = acked.lock().unwrap();
    let keys: Vec<String> = acked.iter().map(|n| format!("w:{n}")).collect();
    let values: Vec<Option<u64>> = redis::cmd("MGET").arg(&keys).query(&mut con).unwrap();
    let lost: Vec<_> = acked
        .iter()
        .zip(&values)
        .filter(|(n, v)| **v != Some(**n))
        .collect();
    assert!(
        lost.is_empty(),
        "{} of {} acknowledged writes lost",
        lost.len(),
        acked.len()
    );
    let dbsize: u64 = redis::cmd("DBSIZE").query(&mut con).unwrap();
    assert_eq!(dbsize, 200 + acked.len() as u64);

    // Done: run says so; the state records both endpoints.
    let status = env.status_json(plan);
    let outputs = &Env::step(&status, "enable_transit")["outputs"];
    assert_eq!(outputs["transit_encryption_mode"], "required", "{status}");
    assert_eq!(
        outputs["plain_endpoint"],
        format!("127.0.0.1:{plain_before}")
    );
    assert_eq!(outputs["released_by"], "ecmigrate cutover");
}

#[test]
fn enable_transit_on_moto_sends_two_modifications_in_order_and_holds_between() {
    let Some(url) = moto_url() else { return };
    let moto = Moto::new(&url);
    let mut env = Env::new();
    moto.configure(&mut env, true);
    write_token(&env);
    // moto has no data plane: a TLS + AUTH stand-in, reached through `data_endpoint`.
    let (_, tls_port, ca) = local_data_plane(&env, 20);
    let source = unique("transit");
    moto.seed_group(&source, "7.0.7", Some("subnets-a"));
    let yaml = format!(
        "version: 1\nname: aws-transit\nprovider: aws\naws: {{ region: us-east-1 }}\nsource:\n  replication_group_id: {source}\n  data_endpoint: 127.0.0.1:{tls_port}\n  tls_ca_file: {ca}\nsteps:\n  - kind: preflight\n  - kind: enable_transit\n"
    );
    let plan = env.write_plan("aws-transit.yaml", &yaml);
    let plan = plan.to_str().unwrap();
    let policy = env.ok(&["iam-policy", plan]);
    assert!(
        policy.stdout.contains("elasticache:ModifyReplicationGroup"),
        "{policy:?}"
    );
    assert!(
        !policy.stdout.contains("CreateReplicationGroup"),
        "{policy:?}"
    );

    let from = recording_len();
    let modifies = || recorded_params(&source, "ModifyReplicationGroup", from);
    let run = env.run_until_waiting(plan, Duration::from_secs(30));
    let first = modifies();
    assert_eq!(
        first.len(),
        1,
        "only the first modification before the release: {first:?}"
    );
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(modifies().len(), 1, "still held");

    env.ok(&["cutover", plan]);
    let run = run.finish();
    assert_eq!(run.code, 0, "{run:?}");
    let calls = modifies();
    let modes: Vec<&str> = calls
        .iter()
        .map(|p| {
            p.get("TransitEncryptionMode")
                .map(String::as_str)
                .unwrap_or("")
        })
        .collect();
    assert_eq!(modes, ["preferred", "required"], "{calls:?}");
    for p in &calls {
        assert_eq!(
            p.get("TransitEncryptionEnabled").map(String::as_str),
            Some("true"),
            "{p:?}"
        );
        assert_eq!(
            p.get("ApplyImmediately").map(String::as_str),
            Some("true"),
            "{p:?}"
        );
    }
    // Done: a run again changes nothing.
    let again = env.ok(&["run", plan]);
    assert!(again.all_output().contains("already"), "{again:?}");
    assert_eq!(modifies().len(), 2);
}

/// Killed right after each ModifyReplicationGroup is made (before its answer is seen), then run again:
/// each modification is sent exactly once, in order, and the run finishes. On the sandbox, whose group
/// shows the mode a modification set (moto stores no transit fields, so there a lost answer cannot be
/// told from a request never sent).
#[test]
fn enable_transit_killed_after_each_modification_resumes_sending_each_once() {
    let mut env = Env::new();
    env.sandbox_with_source(50);
    let plan = env.write_plan("transit.yaml", PLAN);
    let plan = plan.to_str().unwrap();
    // The modifications the journal kept (each is journaled before it is sent).
    let modes = |env: &Env| -> Vec<String> {
        std::fs::read_to_string(env.state_dir().join("orders-transit/events.jsonl"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|e| e["event"] == "call" && e["operation"] == "ModifyReplicationGroup")
            .map(|e| {
                e["params"]["TransitEncryptionMode"]
                    .as_str()
                    .unwrap_or("")
                    .to_string()
            })
            .collect()
    };

    // 1. Dies right after `preferred` is made.
    env.set_env(
        "ECMIGRATE_TEST_CLOUD_FAULTS",
        "ModifyReplicationGroup=crash-after*1",
    );
    let killed = env.run(&["run", plan]);
    assert_eq!(killed.code, 137, "{killed:?}");
    assert_eq!(modes(&env), ["preferred"]);
    assert!(
        primary(&env).2.is_some(),
        "the sandbox serves plain text beside TLS"
    );

    // 2. Run again: it holds without sending `preferred` again; released, it dies right after `required`.
    let run = env.run_until_waiting(plan, Duration::from_secs(30));
    assert_eq!(
        modes(&env),
        ["preferred"],
        "resumed without sending `preferred` again"
    );
    env.set_env("ECMIGRATE_TEST_CLOUD_FAULTS", "");
    let _ = env.run(&["cutover", plan, "--no-wait"]);
    let killed = run.finish();
    assert_eq!(killed.code, 137, "{killed:?}");
    assert_eq!(modes(&env), ["preferred", "required"]);

    // 3. Run again: `required` is not sent again; the run proves plain text refused and finishes.
    let done = env.run(&["run", plan]);
    assert_eq!(done.code, 0, "{done:?}");
    assert_eq!(
        modes(&env),
        ["preferred", "required"],
        "each modification exactly once"
    );
    assert_eq!(env.status_json(plan)["state"], "done");
    assert_eq!(primary(&env).2, None, "TLS only");
}
