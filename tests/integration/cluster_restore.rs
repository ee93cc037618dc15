//! Restores into cluster-mode-enabled sandbox groups, through the library API against the real
//! redis-server nodes: an encrypted cluster restored from a cluster's snapshot is TLS-only and
//! AUTH-protected on every node and holds every key of the snapshot on the primary owning its slot, with
//! another shard count; a cluster-mode-disabled snapshot restores into a cluster unless it has keys
//! outside database 0; a restore whose requester was killed is finished by the next look.

use std::collections::BTreeMap;
use std::time::Duration;

use ecmigrate::cloud::{CloudRead, CloudWrite, CreateEncryptedGroup};
use ecmigrate::data::connect::{RedisEndpoint, connect};
use ecmigrate::secret::Secret;

use crate::harness::{Env, block_on, wait_for};
use crate::sandbox_cluster::{check_cluster, checked_slot_ranges, group, nodes, port};
use crate::sandbox_lifecycle::redis_servers_under;

fn cluster_request(id: &str, snapshot: &str, shards: u32, token: &Secret) -> CreateEncryptedGroup {
    CreateEncryptedGroup {
        id: id.into(),
        description: "encrypted cluster".into(),
        snapshot_name: snapshot.into(),
        engine: "redis".into(),
        engine_version: String::new(),
        cache_node_type: "cache.sandbox.micro".into(),
        cluster_enabled: true,
        num_node_groups: shards,
        replicas_per_node_group: 1,
        kms_key_id: Some("alias/shop".into()),
        transit_encryption_mode: "required".into(),
        auth: ecmigrate::cloud::GroupAuth::Token(token.clone()),
        cache_subnet_group_name: None,
        security_group_ids: vec![],
        cache_parameter_group_name: None,
        port: None,
        preferred_maintenance_window: None,
        snapshot_window: None,
        tags: BTreeMap::new(),
    }
}

#[test]
fn an_encrypted_cluster_restored_from_a_clusters_snapshot_is_tls_only_with_auth_and_holds_every_key()
 {
    let env = Env::new();
    env.ok(&[
        "sandbox",
        "up",
        "--group",
        "shop",
        "--shards",
        "3",
        "--replicas",
        "0",
        "--keys",
        "2000",
    ]);
    env.ok(&["sandbox", "kms", "create", "shop"]);
    let token = Secret::new("Cluster-token-0123456789abcdef".to_string());
    let sandbox_dir = env.sandbox_dir();
    block_on(async {
        let sb = ecmigrate::cloud::sandbox::Sandbox::open(&sandbox_dir).unwrap();
        sb.create_snapshot("shop", "shop-pre", Some("alias/shop"))
            .await
            .unwrap();
        // Another shard count than the source's: every key must move to the slot owner of the new layout.
        sb.create_group_from_snapshot(&cluster_request("shop-enc", "shop-pre", 2, &token))
            .await
            .unwrap();
        let g = sb
            .describe_group("shop-enc")
            .await
            .unwrap()
            .expect("described");
        assert!(g.cluster_enabled && g.num_node_groups == 2, "{g:?}");
        assert!(
            g.reader_endpoint.is_none(),
            "a cluster has a configuration endpoint only"
        );
    });
    // One sealed file per shard of the source, never the plain RDB.
    let snapshots = env.sandbox_dir().join("snapshots");
    let mut files: Vec<String> = std::fs::read_dir(&snapshots)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    files.sort();
    assert_eq!(
        files,
        [
            "shop-pre.shard-0001.sealed",
            "shop-pre.shard-0002.sealed",
            "shop-pre.shard-0003.sealed"
        ]
    );
    let status = env.sandbox_status();
    let snap = &status["snapshots"][0];
    assert_eq!(
        snap["shard_paths"].as_array().map(Vec::len),
        Some(3),
        "{snap}"
    );
    let text = env.ok(&["sandbox", "status"]).stdout;
    assert!(text.contains("encrypted=true shards=3"), "{text}");

    let mut status = env.sandbox_status();
    wait_for("shop-enc available", Duration::from_secs(60), || {
        status = env.sandbox_status();
        group(&status, "shop-enc")["status"] == "available"
    });
    let g = group(&status, "shop-enc");
    assert_eq!(g["at_rest_encryption_enabled"], true);
    assert_eq!(nodes(g).len(), 4, "{g}");
    let ranges = checked_slot_ranges(g, 2);
    let ca = std::path::PathBuf::from(status["ca_file"].as_str().unwrap());
    let tls = |p: u16, password: Option<Secret>| RedisEndpoint {
        username: None,
        host: "127.0.0.1".into(),
        port: p,
        tls: true,
        ca_file: Some(ca.clone()),
        password,
        db: 0,
        client_cert: None,
    };
    for n in 0..4 {
        let dir = env
            .sandbox_dir()
            .join("nodes")
            .join("shop-enc")
            .join(n.to_string());
        let conf = std::fs::read_to_string(dir.join("redis.conf")).unwrap();
        for line in [
            "port 0",
            "tls-cluster yes",
            "tls-replication yes",
            "cluster-enabled yes",
        ] {
            assert!(
                conf.lines().any(|l| l == line),
                "node {n}: `{line}` not in its redis.conf"
            );
        }
    }
    block_on(async {
        for n in nodes(g) {
            // Plain text is refused on the client port; TLS without the token is refused every command.
            let plain = connect(&RedisEndpoint::plain("127.0.0.1", port(n))).await;
            assert!(plain.is_err(), "{} answered plain text", n["id"]);
            match connect(&tls(port(n), None)).await {
                Err(_) => {}
                Ok(mut c) => {
                    let r = redis::cmd("DBSIZE").query_async::<u64>(&mut c).await;
                    let e = r.expect_err("DBSIZE without AUTH");
                    assert!(e.to_string().contains("NOAUTH"), "{}: {e}", n["id"]);
                }
            }
        }
        let total = check_cluster(g, &ranges, |p| tls(p, Some(token.clone()))).await;
        assert_eq!(total, 2000, "every key of the snapshot, once");
    });
    let out = env.ok(&["sandbox", "status"]).all_output();
    assert!(
        !out.contains(token.expose()),
        "the token leaked into the status"
    );
    env.ok(&["sandbox", "down"]);
    assert_eq!(redis_servers_under(&env.sandbox_dir()), Vec::<i32>::new());
}

#[test]
fn a_cluster_mode_disabled_snapshot_restores_into_a_cluster_unless_it_has_keys_outside_database_0()
{
    let env = Env::new();
    env.ok(&[
        "sandbox",
        "up",
        "--group",
        "orders",
        "--replicas",
        "0",
        "--keys",
        "300",
    ]);
    env.ok(&["sandbox", "kms", "create", "shop"]);
    let token = Secret::new("Cluster-token-0123456789abcdef".to_string());
    let sandbox_dir = env.sandbox_dir();
    let source_port = Env::primary_port(&env.sandbox_status(), "orders");
    let refused = block_on(async {
        let sb = ecmigrate::cloud::sandbox::Sandbox::open(&sandbox_dir).unwrap();
        sb.create_snapshot("orders", "orders-a", Some("alias/shop"))
            .await
            .unwrap();
        sb.create_group_from_snapshot(&cluster_request("orders-enc", "orders-a", 3, &token))
            .await
            .unwrap();
        // A key outside database 0, which a cluster does not have.
        let mut c = connect(&RedisEndpoint::plain("127.0.0.1", source_port).with_db(3))
            .await
            .unwrap();
        crate::harness::exec(&mut c, &["SET", "ecm:in-db3", "x"]).await;
        sb.create_snapshot("orders", "orders-b", Some("alias/shop"))
            .await
            .unwrap();
        sb.create_group_from_snapshot(&cluster_request("orders-enc2", "orders-b", 2, &token))
            .await
            .expect_err("keys in db3 cannot go into a cluster")
            .to_string()
    });
    assert!(
        refused.contains("db3") && refused.contains("database 0 only"),
        "{refused}"
    );
    let mut status = env.sandbox_status();
    wait_for("orders-enc available", Duration::from_secs(60), || {
        status = env.sandbox_status();
        group(&status, "orders-enc")["status"] == "available"
    });
    assert_eq!(group(&status, "orders-enc2")["status"], "create-failed");
    assert!(
        env.sandbox_files().iter().all(|f| !f.ends_with("dump.rdb")),
        "a plaintext RDB was left behind"
    );
    assert_eq!(
        redis_servers_under(&env.sandbox_dir().join("nodes").join("orders-enc2")),
        Vec::<i32>::new(),
        "a failed creation leaves no node running"
    );
    let g = group(&status, "orders-enc");
    let ranges = checked_slot_ranges(g, 3);
    let ca = std::path::PathBuf::from(status["ca_file"].as_str().unwrap());
    let total = block_on(check_cluster(g, &ranges, |p| RedisEndpoint {
        username: None,
        host: "127.0.0.1".into(),
        port: p,
        tls: true,
        ca_file: Some(ca.clone()),
        password: Some(token.clone()),
        db: 0,
        client_cert: None,
    }));
    assert_eq!(total, 300);
}

/// A restore into a cluster whose requester was SIGKILLed while a snapshot was loaded for the copy is
/// finished by the next look: the orphaned loading server is stopped, every key lands, no process is left
/// beyond the group's nodes, and the rerun of the plan goes on from the group.
#[cfg(feature = "test-hooks")]
#[test]
fn a_cluster_restore_whose_requester_was_killed_is_finished_by_the_next_look() {
    let env = Env::new();
    env.sandbox_with_source(300);
    let plan = env.write_plan(
        "plan.yaml",
        &format!(
            r#"version: 1
name: orders-cluster
provider: sandbox
source:
  replication_group_id: orders
target:
  replication_group_id: orders-enc
  kms_key_id: alias/orders
  num_node_groups: 2
  auth_token: {{ generate: true, file: {} }}
steps:
  - kind: preflight
  - kind: backup
    snapshot_name: orders-pre
  - kind: restore_encrypted
"#,
            env.token_file().display()
        ),
    );
    let group_dir = env.sandbox_dir().join("nodes").join("orders-enc");
    let loader_dir = group_dir.join("restore-1");
    let mut run = crate::harness::Running::new(
        env.command(&["run", plan.to_str().unwrap(), "--yes"])
            .env("ECMIGRATE_TEST_SANDBOX_HOLD", "restore_loaded")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("start ecmigrate"),
    );
    wait_for(
        "the snapshot loaded for the copy",
        Duration::from_secs(60),
        || {
            assert!(run.try_wait().unwrap().is_none(), "the run ended early");
            redis_servers_under(&loader_dir).len() == 1
        },
    );
    assert_eq!(
        group(&env.sandbox_status(), "orders-enc")["status"],
        "creating"
    );
    run.kill().unwrap();
    run.wait().unwrap();
    assert_eq!(
        redis_servers_under(&loader_dir).len(),
        1,
        "the loader outlives its caller"
    );

    let mut status = env.sandbox_status();
    wait_for("orders-enc available", Duration::from_secs(60), || {
        status = env.sandbox_status();
        group(&status, "orders-enc")["status"] == "available"
    });
    let g = group(&status, "orders-enc");
    assert_eq!(
        nodes(g).len(),
        4,
        "2 shards of a primary and a replica: {g}"
    );
    assert_eq!(redis_servers_under(&group_dir).len(), 4, "no loader left");
    assert!(!loader_dir.exists());
    let token = std::fs::read_to_string(env.token_file()).unwrap();
    let ca = std::path::PathBuf::from(status["ca_file"].as_str().unwrap());
    let ranges = checked_slot_ranges(g, 2);
    let total = block_on(check_cluster(g, &ranges, |p| RedisEndpoint {
        username: None,
        host: "127.0.0.1".into(),
        port: p,
        tls: true,
        ca_file: Some(ca.clone()),
        password: Some(Secret::new(token.trim().to_string())),
        db: 0,
        client_cert: None,
    }));
    assert_eq!(total, 300);
    env.ok(&["run", plan.to_str().unwrap(), "--yes"]);
}
