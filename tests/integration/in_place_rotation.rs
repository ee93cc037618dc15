//! `rotate_auth_token` (a plan without `target`): the AUTH token replaced in place. On the sandbox, both
//! tokens open the group during the hold and only the new one after it, the store moves from pending to
//! current, a writer that keeps its connection loses no acknowledged write, no token leaks; killed after
//! each ModifyReplicationGroup, a resumed run sends each exactly once. On moto, the two calls go in the
//! order the API reference gives (ROTATE, then SET) and the secret's new version goes pending → current.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ecmigrate::data::connect::RedisEndpoint;
use ecmigrate::secret::Secret;
use serde_json::Value;

use crate::harness::{Env, SOURCE, TARGET, wait_for};

/// An encrypted sandbox group (`orders-enc`, TLS + AUTH) restored from the seeded source, its token in
/// the env's token file.
fn encrypted_group(env: &Env, keys: u64) {
    env.sandbox_with_source(keys);
    let yaml = format!(
        "version: 1\nname: make-enc\nprovider: sandbox\nsource:\n  replication_group_id: {SOURCE}\ntarget:\n  replication_group_id: {TARGET}\n  kms_key_id: alias/orders\n  auth_token: {{ generate: true, file: {} }}\nsteps:\n  - kind: preflight\n  - kind: backup\n  - kind: restore_encrypted\n",
        env.token_file().display()
    );
    let plan = env.write_plan("make-enc.yaml", &yaml);
    env.ok(&["run", plan.to_str().unwrap(), "--yes"]);
}

fn rotation_plan(env: &Env) -> String {
    let yaml = format!(
        "version: 1\nname: rotate\nprovider: sandbox\nsource:\n  replication_group_id: {TARGET}\n  auth_token: {{ file: {} }}\nsteps:\n  - kind: preflight\n  - kind: rotate_auth_token\n",
        env.token_file().display()
    );
    env.write_plan("rotate.yaml", &yaml)
        .to_str()
        .unwrap()
        .to_string()
}

fn read(path: &std::path::Path) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|t| t.trim().to_string())
}

fn with_suffix(path: &std::path::Path, suffix: &str) -> std::path::PathBuf {
    std::path::PathBuf::from(format!("{}{suffix}", path.display()))
}

/// A new connection to the group's primary with `token`: `Ok` on PONG, the server's refusal otherwise.
fn opens(env: &Env, token: &str) -> Result<(), String> {
    let mut ep: RedisEndpoint =
        crate::harness::encrypted_primary(&env.sandbox_status(), TARGET, &env.token_file());
    ep.password = Some(Secret::new(token));
    let client = ep.client().map_err(|e| e.to_string())?;
    let mut con = client
        .get_connection_with_timeout(Duration::from_secs(3))
        .map_err(|e| e.to_string())?;
    redis::cmd("PING")
        .query::<String>(&mut con)
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// An application writing `w:<n>` on one connection opened with the old token, kept for the whole
/// rotation (as a pooled client keeps its connections).
fn writer(
    ep: RedisEndpoint,
    stop: Arc<AtomicBool>,
    acked: Arc<Mutex<Vec<u64>>>,
) -> std::thread::JoinHandle<u32> {
    std::thread::spawn(move || {
        let mut con = ep.client().unwrap().get_connection().unwrap();
        let mut failures = 0;
        let mut n = 0u64;
        while !stop.load(Ordering::SeqCst) {
            match redis::cmd("SET")
                .arg(format!("w:{n}"))
                .arg(n)
                .query::<()>(&mut con)
            {
                Ok(()) => {
                    acked.lock().unwrap().push(n);
                    n += 1;
                }
                Err(_) => failures += 1,
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        failures
    })
}

#[test]
fn rotation_opens_with_both_tokens_then_only_the_new_one_and_a_writer_loses_nothing() {
    let env = Env::new();
    encrypted_group(&env, 100);
    let plan = rotation_plan(&env);
    let old = read(&env.token_file()).unwrap();

    let rehearsal = env.ok(&["run", &plan, "--dry-run"]);
    assert!(
        rehearsal.stdout.contains("ROTATE") && rehearsal.stdout.contains("SET"),
        "{rehearsal:?}"
    );
    assert_eq!(
        read(&env.token_file()).unwrap(),
        old,
        "the rehearsal changed nothing"
    );
    assert!(read(&with_suffix(&env.token_file(), ".pending")).is_none());

    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(Mutex::new(Vec::new()));
    let app = writer(env.target_endpoint(), stop.clone(), acked.clone());
    let run = env.run_until_waiting(&plan, Duration::from_secs(30));
    // Held: the new token is current in the store, the old one kept beside it; both open the group.
    let new = read(&env.token_file()).unwrap();
    assert_ne!(new, old, "a new token is current");
    assert_eq!(
        read(&with_suffix(&env.token_file(), ".previous")),
        Some(old.clone())
    );
    assert!(read(&with_suffix(&env.token_file(), ".pending")).is_none());
    assert_eq!(opens(&env, &old), Ok(()), "the old token opens the group");
    assert_eq!(opens(&env, &new), Ok(()), "the new token opens the group");
    assert!(opens(&env, "Not-the-token-0123456789").is_err());

    let released = env.ok(&["cutover", &plan]);
    assert!(
        released.stdout.contains("only the new AUTH token"),
        "{released:?}"
    );
    let done = run.finish();
    assert_eq!(done.code, 0, "{done:?}");

    // After SET: only the new token.
    let refused = opens(&env, &old).unwrap_err();
    assert!(
        refused.contains("WRONGPASS") || refused.contains("AuthenticationFailed"),
        "{refused}"
    );
    assert_eq!(opens(&env, &new), Ok(()));
    assert!(
        read(&with_suffix(&env.token_file(), ".previous")).is_none(),
        "the retired token is removed"
    );

    // The writer's connection, opened with the old token, kept working: nothing acknowledged is lost.
    let before = acked.lock().unwrap().len();
    wait_for("writes after the rotation", Duration::from_secs(10), || {
        acked.lock().unwrap().len() > before + 20
    });
    stop.store(true, Ordering::SeqCst);
    assert_eq!(app.join().unwrap(), 0, "no write failed");
    let mut con = env
        .target_endpoint()
        .client()
        .unwrap()
        .get_connection()
        .unwrap();
    let acked = acked.lock().unwrap();
    let keys: Vec<String> = acked.iter().map(|n| format!("w:{n}")).collect();
    let values: Vec<Option<u64>> = redis::cmd("MGET").arg(&keys).query(&mut con).unwrap();
    let lost = acked
        .iter()
        .zip(&values)
        .filter(|(n, v)| **v != Some(**n))
        .count();
    assert_eq!(
        lost,
        0,
        "{lost} of {} acknowledged writes lost",
        acked.len()
    );

    // The state tells the truth and holds neither token; neither token appears in any output.
    let status = env.status_json(&plan);
    assert_eq!(status["state"], "done");
    let outputs = &Env::step(&status, "rotate_auth_token")["outputs"];
    assert_eq!(outputs["released_by"], "ecmigrate cutover", "{status}");
    assert!(
        outputs["old_token_refused"]
            .as_str()
            .unwrap()
            .contains("AuthenticationFailed"),
        "{status}"
    );
    let mut seen = format!(
        "{}{}{}{}",
        done.stdout, done.stderr, released.stdout, status
    );
    for entry in walk(&env.state_dir()) {
        seen.push_str(&std::fs::read_to_string(entry).unwrap_or_default());
    }
    assert!(
        !seen.contains(&old) && !seen.contains(&new),
        "a token leaked"
    );
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = entry.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// Killed right after each ModifyReplicationGroup is made (before its answer is seen), then run again:
/// ROTATE and SET are each sent exactly once, in that order, and the rotation ends with the new token.
#[test]
fn rotation_killed_after_each_modification_resumes_sending_each_once() {
    let mut env = Env::new();
    encrypted_group(&env, 20);
    let plan = rotation_plan(&env);
    let old = read(&env.token_file()).unwrap();
    let strategies = |env: &Env| -> Vec<String> {
        std::fs::read_to_string(env.state_dir().join("rotate/events.jsonl"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|e| e["event"] == "call" && e["operation"] == "ModifyReplicationGroup")
            .map(|e| {
                e["params"]["AuthTokenUpdateStrategy"]
                    .as_str()
                    .unwrap_or("")
                    .to_string()
            })
            .collect()
    };

    env.set_env(
        "ECMIGRATE_TEST_CLOUD_FAULTS",
        "ModifyReplicationGroup=crash-after*1",
    );
    let killed = env.run(&["run", &plan]);
    assert_eq!(killed.code, 137, "{killed:?}");
    assert_eq!(strategies(&env), ["ROTATE"]);
    let pending =
        read(&with_suffix(&env.token_file(), ".pending")).expect("the new token is pending");
    assert_eq!(opens(&env, &pending), Ok(()), "the group took ROTATE");

    let run = env.run_until_waiting(&plan, Duration::from_secs(30));
    assert_eq!(strategies(&env), ["ROTATE"], "ROTATE not sent again");
    assert_eq!(
        read(&env.token_file()),
        Some(pending.clone()),
        "the same new token, now current"
    );
    env.set_env("ECMIGRATE_TEST_CLOUD_FAULTS", "");
    let _ = env.run(&["cutover", &plan, "--no-wait"]);
    let killed = run.finish();
    assert_eq!(killed.code, 137, "{killed:?}");
    assert_eq!(strategies(&env), ["ROTATE", "SET"]);

    let done = env.run(&["run", &plan]);
    assert_eq!(done.code, 0, "{done:?}");
    assert_eq!(
        strategies(&env),
        ["ROTATE", "SET"],
        "each modification exactly once"
    );
    assert!(opens(&env, &old).is_err());
    assert_eq!(opens(&env, &pending), Ok(()));
}

/// On moto: preflight, then ModifyReplicationGroup `ROTATE` and, once released, `SET`, both with the
/// same new token and never before the hold ends; the secret's new version is `AWSPENDING` first and
/// `AWSCURRENT` (the old one `AWSPREVIOUS`) from the hold on. moto has no data plane: the test plays
/// ElastiCache's part on a TLS + AUTH stand-in (reached through `data_endpoint`), applying each
/// recorded modification to it as the service would.
#[test]
fn rotation_on_moto_sends_rotate_then_set_and_stages_the_secret() {
    use crate::moto::{
        Moto, TOKEN, local_data_plane, moto_url, recorded_params, recording_len, unique,
    };
    let Some(url) = moto_url() else { return };
    let moto = Moto::new(&url);
    let mut env = Env::new();
    moto.configure(&mut env, true);
    crate::moto::write_token(&env);
    let (_, tls_port, ca) = local_data_plane(&env, 20);
    let group = unique("rotate");
    let secret = unique("rotate/auth");
    crate::harness::block_on(async {
        moto.ec
            .create_replication_group()
            .replication_group_id(&group)
            .replication_group_description("ecmigrate rotation test")
            .engine("redis")
            .engine_version("7.0.7")
            .cache_node_type("cache.t3.micro")
            .num_cache_clusters(1)
            .transit_encryption_enabled(true)
            .at_rest_encryption_enabled(true)
            .auth_token(TOKEN)
            .send()
            .await
            .expect("seed a token-protected group");
        moto.secrets
            .create_secret()
            .name(&secret)
            .secret_string(TOKEN)
            .send()
            .await
            .expect("seed the token's secret");
    });
    let yaml = format!(
        "version: 1\nname: aws-rotate\nprovider: aws\naws: {{ region: us-east-1 }}\nsource:\n  replication_group_id: {group}\n  data_endpoint: 127.0.0.1:{tls_port}\n  tls_ca_file: {ca}\n  auth_token: {{ secrets_manager: {secret} }}\nsteps:\n  - kind: preflight\n  - kind: rotate_auth_token\n"
    );
    let plan = env.write_plan("aws-rotate.yaml", &yaml);
    let plan = plan.to_str().unwrap();
    let policy = env.ok(&["iam-policy", plan]);
    for action in [
        "elasticache:ModifyReplicationGroup",
        "secretsmanager:PutSecretValue",
        "secretsmanager:UpdateSecretVersionStage",
    ] {
        assert!(policy.stdout.contains(action), "{action}: {policy:?}");
    }

    let from = recording_len();
    let modifies = || recorded_params(&group, "ModifyReplicationGroup", from);
    // ElastiCache's part: each recorded modification applied to the stand-in's default user.
    let stop = Arc::new(AtomicBool::new(false));
    let service = {
        let stop = stop.clone();
        let group = group.clone();
        let ca = ca.clone();
        let secrets = moto.secrets.clone();
        let secret = secret.clone();
        std::thread::spawn(move || {
            let mut applied = 0;
            let mut valid = vec![TOKEN.to_string()];
            while !stop.load(Ordering::SeqCst) {
                let calls = recorded_params(&group, "ModifyReplicationGroup", from);
                for call in &calls[applied.min(calls.len())..] {
                    // The recorder redacts AuthToken: the token sent is the one staged AWSPENDING.
                    assert!(call.contains_key("AuthToken"), "{call:?}");
                    let new = crate::harness::block_on(
                        secrets
                            .get_secret_value()
                            .secret_id(&secret)
                            .version_stage("AWSPENDING")
                            .send(),
                    )
                    .expect("the pending version")
                    .secret_string()
                    .unwrap()
                    .to_string();
                    valid = match call["AuthTokenUpdateStrategy"].as_str() {
                        "ROTATE" => vec![valid.last().unwrap().clone(), new],
                        _ => vec![new],
                    };
                    let ep = RedisEndpoint {
                        tls: true,
                        ca_file: Some(ca.clone().into()),
                        password: Some(Secret::new(valid.last().unwrap().clone())),
                        ..RedisEndpoint::plain("127.0.0.1", tls_port)
                    };
                    let mut admin = RedisEndpoint {
                        password: Some(Secret::new(TOKEN)),
                        ..ep.clone()
                    };
                    let mut con = admin.client().unwrap().get_connection().or_else(|_| {
                        admin = ep.clone();
                        admin.client().unwrap().get_connection()
                    });
                    let con = con.as_mut().expect("the stand-in");
                    let mut acl = redis::cmd("ACL");
                    acl.arg("SETUSER").arg("default").arg("on").arg("resetpass");
                    for t in &valid {
                        acl.arg(format!(">{t}"));
                    }
                    acl.query::<()>(con).unwrap();
                }
                applied = calls.len();
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    };

    let mut run = env.spawn(&["run", plan]);
    let mut ended = false;
    wait_for("the hold", Duration::from_secs(60), || {
        ended = run.try_wait().unwrap().is_some();
        ended || env.status_json(plan)["state"] == "waiting"
    });
    if ended {
        stop.store(true, Ordering::SeqCst);
        let service = service
            .join()
            .map_err(|e| format!("{:?}", e.downcast_ref::<String>()));
        panic!(
            "the run ended early: {:?} (stand-in: {service:?})",
            run.finish()
        );
    }
    let first = modifies();
    assert_eq!(first.len(), 1, "only ROTATE before the release: {first:?}");
    assert_eq!(first[0]["AuthTokenUpdateStrategy"], "ROTATE");
    assert_eq!(first[0]["ApplyImmediately"], "true");
    assert!(first[0].contains_key("AuthToken"), "{first:?}");
    let stage = |label: &str| -> Option<String> {
        crate::harness::block_on(
            moto.secrets
                .get_secret_value()
                .secret_id(&secret)
                .version_stage(label)
                .send(),
        )
        .ok()
        .and_then(|v| v.secret_string().map(str::to_string))
    };
    let new = stage("AWSCURRENT").expect("a current version");
    assert_ne!(new, TOKEN, "the new version is current during the hold");
    ecmigrate::plan::rules::check_auth_token(&new).expect("a token AWS takes");
    assert_eq!(
        stage("AWSPENDING").as_deref(),
        Some(new.as_str()),
        "staged pending first"
    );
    assert_eq!(stage("AWSPREVIOUS").as_deref(), Some(TOKEN));

    env.ok(&["cutover", plan]);
    let done = run.finish();
    stop.store(true, Ordering::SeqCst);
    service.join().unwrap();
    assert_eq!(done.code, 0, "{done:?}");
    let calls = modifies();
    let strategies: Vec<&str> = calls
        .iter()
        .map(|p| p["AuthTokenUpdateStrategy"].as_str())
        .collect();
    assert_eq!(
        strategies,
        ["ROTATE", "SET"],
        "the API reference's order: {calls:?}"
    );
    assert!(
        calls.iter().all(|p| p.contains_key("AuthToken")),
        "both with a token"
    );
    assert_eq!(stage("AWSCURRENT").as_deref(), Some(new.as_str()));
    assert_eq!(
        stage("AWSPENDING"),
        None,
        "the pending label is removed at the end"
    );
    let all = format!("{}{}", done.stdout, done.stderr);
    assert!(
        !all.contains(&new) && !all.contains(TOKEN),
        "a token leaked: {all}"
    );
}
