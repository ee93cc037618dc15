use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use super::process::HOST;
use super::registry::Registry;
use super::*;
use crate::cloud::{CloudRead, CloudWrite, CreateEncryptedGroup, ReplicationGroup};
use crate::data::connect::{RedisEndpoint, connect};
use crate::secret::Secret;

/// A sandbox in a temporary folder whose processes are killed when the test ends, pass or fail.
pub(super) struct TestSandbox {
    pub(super) sb: Sandbox,
    _tmp: tempfile::TempDir,
}

impl Drop for TestSandbox {
    fn drop(&mut self) {
        self.sb.stop_all_blocking();
    }
}

impl std::ops::Deref for TestSandbox {
    type Target = Sandbox;
    fn deref(&self) -> &Sandbox {
        &self.sb
    }
}

pub(super) fn sandbox() -> TestSandbox {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    // redis-server daemonizes, so its parent is whatever reaps orphans: normally init, but in a container
    // PID 1 may never reap, and a stopped node would linger as a zombie that `kill(pid, 0)` still finds.
    // As a subreaper this test process inherits the daemons, and `stop_pids` reaps what it stops.
    static SUBREAPER: std::sync::Once = std::sync::Once::new();
    SUBREAPER.call_once(|| unsafe {
        libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0);
    });
    let tmp = tempfile::TempDir::new().unwrap();
    let sb = Sandbox::open(&tmp.path().join("sandbox")).unwrap();
    TestSandbox { sb, _tmp: tmp }
}

pub(super) fn no_progress(_: u64, _: u64) {}

pub(super) async fn wait_available(sb: &Sandbox, id: &str) -> ReplicationGroup {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let g = sb.describe_group(id).await.unwrap().expect("group exists");
        if g.is_available() {
            return g;
        }
        assert!(Instant::now() < deadline, "{id} still {}", g.status);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub(super) async fn dbsize(endpoint: &RedisEndpoint) -> Result<u64, String> {
    let mut conn = connect(endpoint).await?;
    redis::cmd("DBSIZE")
        .query_async::<u64>(&mut conn)
        .await
        .map_err(|e| e.to_string())
}

/// Every file under `dir` whose bytes contain `needle`.
pub(super) fn files_containing(dir: &Path, needle: &[u8]) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            found.extend(files_containing(&path, needle));
        } else if let Ok(bytes) = std::fs::read(&path)
            && bytes.windows(needle.len()).any(|w| w == needle)
        {
            found.push(path);
        }
    }
    found
}

pub(super) fn request(
    id: &str,
    snapshot: &str,
    kms_key: Option<&str>,
    token: &Secret,
) -> CreateEncryptedGroup {
    CreateEncryptedGroup {
        id: id.into(),
        description: "encrypted copy".into(),
        snapshot_name: snapshot.into(),
        engine: "redis".into(),
        engine_version: process::redis_version(),
        cache_node_type: "cache.sandbox.micro".into(),
        cluster_enabled: false,
        num_node_groups: 1,
        replicas_per_node_group: 1,
        kms_key_id: kms_key.map(str::to_string),
        transit_encryption_mode: "required".into(),
        auth: crate::cloud::GroupAuth::Token(token.clone()),
        cache_subnet_group_name: None,
        security_group_ids: vec![],
        cache_parameter_group_name: None,
        port: None,
        preferred_maintenance_window: None,
        snapshot_window: None,
        tags: BTreeMap::from([("team".to_string(), "orders".to_string())]),
    }
}

#[tokio::test]
async fn sandbox_up_runs_a_seeded_replicating_group() {
    let sb = sandbox();
    let seen = std::sync::Mutex::new(Vec::new());
    let progress = |done: u64, total: u64| seen.lock().unwrap().push((done, total));
    let group = sb.up("orders", 1, 500, &progress).await.unwrap();
    assert_eq!(seen.lock().unwrap().last(), Some(&(500, 500)));
    assert_eq!(group.status, "available");
    assert!(!group.at_rest_encryption_enabled && !group.transit_encryption_enabled);
    assert_eq!(group.nodes.len(), 2);
    assert_eq!(group.nodes_per_node_group, 2);

    let replica = group
        .nodes
        .iter()
        .find(|n| n.role == NodeRole::Replica)
        .unwrap();
    let ep = RedisEndpoint::plain(HOST, replica.endpoint.port);
    assert_eq!(dbsize(&ep).await.unwrap(), 500);
    let mut conn = connect(&ep).await.unwrap();
    let info: String = redis::cmd("INFO")
        .arg("replication")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(
        info.contains("role:slave") && info.contains("master_link_status:up"),
        "{info}"
    );

    let status = serde_json::to_value(sb.status().await.unwrap()).unwrap();
    assert!(status["ca_file"].as_str().unwrap().ends_with("ca.pem"));
    let g = &status["groups"][0];
    assert_eq!(g["replication_group_id"], "orders");
    assert_eq!(g["status"], "available");
    for field in [
        "at_rest_encryption_enabled",
        "transit_encryption_enabled",
        "auth_token_enabled",
    ] {
        assert_eq!(g[field], false, "{field}");
    }
    let nodes = g["nodes"].as_array().unwrap();
    assert_eq!(nodes.len(), 2);
    assert_eq!(nodes[0]["role"], "primary");
    assert_eq!(nodes[1]["role"], "replica");
    for n in nodes {
        assert_eq!(n["host"], "127.0.0.1");
        assert!(n["port"].as_u64().unwrap() > 0);
        assert_eq!(n["tls"], false);
        assert!(process::pid_alive(n["pid"].as_i64().unwrap() as i32));
    }
    assert!(status["snapshots"].as_array().unwrap().is_empty());
    assert_eq!(status["aliases"]["orders-endpoint"], "orders");
    assert_eq!(
        sb.resolve_alias("orders-endpoint")
            .await
            .unwrap()
            .as_deref(),
        Some("orders")
    );

    use std::os::unix::fs::PermissionsExt;
    let conf = sb.dir().join("nodes/orders/0/redis.conf");
    assert_eq!(
        std::fs::metadata(conf).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let err = sb.up("orders", 1, 10, &no_progress).await.unwrap_err();
    assert!(matches!(err, CloudError::AlreadyExists { .. }), "{err}");
    assert!(matches!(
        sb.up("Bad--id", 0, 1, &no_progress).await,
        Err(CloudError::InvalidRequest { .. })
    ));
}

#[tokio::test]
async fn sandbox_sealed_snapshot_restores_into_a_tls_auth_group() {
    let sb = sandbox();
    sb.up("orders", 1, 500, &no_progress).await.unwrap();
    let key = sb.kms_create("orders").unwrap();
    assert_eq!(key.key_state, "Enabled");
    assert!(matches!(
        sb.kms_create("orders"),
        Err(CloudError::AlreadyExists { .. })
    ));

    sb.create_snapshot("orders", "orders-pre", Some("alias/orders"))
        .await
        .unwrap();
    let snap = sb.describe_snapshot("orders-pre").await.unwrap().unwrap();
    assert_eq!(snap.status, "available");
    assert_eq!(snap.kms_key_id.as_deref(), Some(key.arn.as_str()));
    let sealed = sb.dir().join("snapshots/orders-pre.sealed");
    let bytes = std::fs::read(&sealed).unwrap();
    assert!(bytes.len() > 500);
    assert!(
        !bytes.windows(4).any(|w| w == b"ecm:"),
        "a key name is readable in the sealed file"
    );
    assert!(matches!(
        sb.create_snapshot("orders", "orders-pre", Some("alias/orders"))
            .await,
        Err(CloudError::AlreadyExists { .. })
    ));

    let token = crate::secret::generate_token();
    sb.create_group_from_snapshot(&request(
        "orders-enc",
        "orders-pre",
        Some("alias/orders"),
        &token,
    ))
    .await
    .unwrap();
    assert!(matches!(
        sb.create_group_from_snapshot(&request("orders-enc", "orders-pre", None, &token))
            .await,
        Err(CloudError::AlreadyExists { .. })
    ));
    let group = wait_available(&sb, "orders-enc").await;
    assert!(
        group.at_rest_encryption_enabled
            && group.transit_encryption_enabled
            && group.auth_token_enabled
    );
    assert_eq!(group.kms_key_id.as_deref(), Some(key.arn.as_str()));
    assert_eq!(group.transit_encryption_mode.as_deref(), Some("required"));
    assert_eq!(group.engine_version, process::redis_version());
    assert_eq!(group.tags.get("team").map(String::as_str), Some("orders"));
    assert_eq!(group.nodes.len(), 2);
    assert!(group.nodes.iter().all(|n| n.tls));
    let port = group.primary_endpoint.as_ref().unwrap().port;

    // Plain text is refused.
    let plain = RedisEndpoint::plain(HOST, port);
    assert!(dbsize(&plain).await.is_err());
    // TLS without the token: NOAUTH.
    let mut tls = RedisEndpoint::plain(HOST, port);
    tls.tls = true;
    tls.ca_file = sb.data_plane_ca();
    let err = dbsize(&tls).await.unwrap_err();
    assert!(
        err.contains("NOAUTH") || err.contains("Authentication required"),
        "{err}"
    );
    // TLS with the token, on the primary and the replica.
    tls.password = Some(token.clone());
    assert_eq!(dbsize(&tls).await.unwrap(), 500);
    for node in &group.nodes {
        let mut ep = tls.clone();
        ep.port = node.endpoint.port;
        assert_eq!(dbsize(&ep).await.unwrap(), 500, "{}", node.id);
    }

    // No plaintext data at rest, and the token only in the nodes' redis.conf.
    assert_eq!(files_containing(sb.dir(), b"ecm:"), Vec::<PathBuf>::new());
    for f in files_containing(sb.dir(), token.expose().as_bytes()) {
        assert!(f.ends_with("redis.conf"), "token found in {}", f.display());
    }
    let status = serde_json::to_value(sb.status().await.unwrap()).unwrap();
    let enc = status["groups"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["replication_group_id"] == "orders-enc")
        .unwrap();
    assert_eq!(enc["status"], "available");
    assert_eq!(enc["nodes"][0]["tls"], true);
    assert_eq!(status["snapshots"][0]["encrypted"], true);

    // A snapshot of the encrypted group is sealed even without a key argument.
    sb.create_snapshot("orders-enc", "orders-enc-final", None)
        .await
        .unwrap();
    assert!(sb.dir().join("snapshots/orders-enc-final.sealed").exists());
    assert_eq!(files_containing(sb.dir(), b"ecm:"), Vec::<PathBuf>::new());

    // Control: the grep does find key names in a plain snapshot of the unencrypted group.
    sb.create_snapshot("orders", "orders-plain", None)
        .await
        .unwrap();
    let found = files_containing(sb.dir(), b"ecm:");
    assert_eq!(found, vec![sb.dir().join("snapshots/orders-plain.rdb")]);

    sb.point_alias("orders-endpoint", "orders-enc")
        .await
        .unwrap();
    sb.delete_group("orders").await.unwrap();
    assert!(sb.describe_group("orders").await.unwrap().is_none());
    assert_eq!(
        sb.resolve_alias("orders-endpoint")
            .await
            .unwrap()
            .as_deref(),
        Some("orders-enc")
    );
}

#[tokio::test]
async fn sandbox_disabled_key_refuses_snapshot_and_restore() {
    let sb = sandbox();
    sb.up("src", 0, 50, &no_progress).await.unwrap();
    sb.kms_create("k").unwrap();
    sb.create_snapshot("src", "s1", Some("alias/k"))
        .await
        .unwrap();
    let key = sb.kms_set_enabled("k", false).unwrap();
    assert_eq!(key.key_state, "Disabled");
    assert_eq!(
        sb.describe_key("alias/k").await.unwrap().unwrap().key_state,
        "Disabled"
    );

    let err = sb
        .create_snapshot("src", "s2", Some("alias/k"))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, CloudError::InvalidRequest { message } if message.contains("Disabled")),
        "{err}"
    );
    assert!(sb.describe_snapshot("s2").await.unwrap().is_none());

    let token = crate::secret::generate_token();
    let mut req = request("enc", "s1", None, &token);
    req.replicas_per_node_group = 0;
    let err = sb.create_group_from_snapshot(&req).await.unwrap_err();
    assert!(
        matches!(&err, CloudError::InvalidRequest { message } if message.contains("Disabled")),
        "{err}"
    );
    assert!(sb.describe_group("enc").await.unwrap().is_none());

    // Enabled again, with the default key for the group, in transit mode `preferred`.
    sb.kms_set_enabled("alias/k", true).unwrap();
    req.transit_encryption_mode = "preferred".into();
    sb.create_group_from_snapshot(&req).await.unwrap();
    let g = wait_available(&sb, "enc").await;
    assert_eq!(g.transit_encryption_mode.as_deref(), Some("preferred"));
    // `preferred` also opens a plain-text port, still behind AUTH.
    let plain_port = registry::load(sb.dir()).unwrap().groups["enc"].nodes[0]
        .plain_port
        .unwrap();
    let mut plain = RedisEndpoint::plain(HOST, plain_port);
    assert!(dbsize(&plain).await.unwrap_err().contains("NOAUTH"));
    plain.password = Some(token.clone());
    assert_eq!(dbsize(&plain).await.unwrap(), 50);
    let default = sb.describe_key(DEFAULT_KEY_ALIAS).await.unwrap().unwrap();
    assert_eq!(g.kms_key_id.as_deref(), Some(default.arn.as_str()));
    assert_eq!(default.key_state, "Enabled");
}

#[tokio::test]
async fn sandbox_down_stops_every_process() {
    let sb = sandbox();
    sb.up("alpha", 1, 10, &no_progress).await.unwrap();
    sb.up("beta", 0, 10, &no_progress).await.unwrap();
    let status = sb.status().await.unwrap();
    let pids: Vec<i32> = status
        .groups
        .iter()
        .flat_map(|g| g.nodes.iter().map(|n| n.pid.unwrap()))
        .collect();
    assert_eq!(pids.len(), 3);
    let ports: Vec<u16> = status
        .groups
        .iter()
        .flat_map(|g| g.nodes.iter().map(|n| n.port))
        .collect();
    assert!(pids.iter().all(|p| unsafe { libc::kill(*p, 0) } == 0));

    assert_eq!(sb.down().await.unwrap(), 3);
    for pid in &pids {
        // A zombie is not running: daemonized redis is reparented to whatever reaps orphans, which on a CI
        // container may never reap it, so `kill(pid, 0)` alone cannot tell.
        assert!(!process::pid_alive(*pid), "pid {pid} still runs");
    }
    for port in ports {
        assert!(
            std::net::TcpStream::connect((HOST, port)).is_err(),
            "port {port} still accepts connections"
        );
    }
    let status = sb.status().await.unwrap();
    assert!(status.groups.is_empty());
    assert_eq!(status.aliases.len(), 2, "aliases survive down");
    assert!(sb.describe_group("alpha").await.unwrap().is_none());
    assert_eq!(sb.down().await.unwrap(), 0);
}

#[test]
fn sandbox_seal_roundtrip_and_tamper() {
    let mut reg = Registry::default();
    let key = kms::create(&mut reg, "t").unwrap();
    let sealed = kms::seal(&key, b"ecm:user:000001 hello".to_vec()).unwrap();
    assert!(!sealed.windows(4).any(|w| w == b"ecm:"));
    assert_eq!(
        kms::unseal(&key, &sealed).unwrap(),
        b"ecm:user:000001 hello"
    );
    let mut bad = sealed.clone();
    *bad.last_mut().unwrap() ^= 1;
    assert!(kms::unseal(&key, &bad).is_err());
    let other = kms::create(&mut reg, "u").unwrap();
    assert!(kms::unseal(&other, &sealed).is_err());
    assert_eq!(kms::find(&reg, &key.arn).unwrap().id, key.id);
    assert_eq!(kms::find(&reg, "alias/t").unwrap().id, key.id);
    assert_eq!(kms::find(&reg, &key.id).unwrap().id, key.id);
}

#[tokio::test]
async fn sandbox_describe_finishes_a_creation_whose_nodes_died() {
    let mut sb = sandbox();
    sb.sb = sb.sb.clone().with_create_delay(Duration::from_millis(1500));
    sb.up("src", 0, 200, &no_progress).await.unwrap();
    sb.kms_create("k").unwrap();
    sb.create_snapshot("src", "snap", Some("alias/k"))
        .await
        .unwrap();
    let token = crate::secret::generate_token();
    sb.create_group_from_snapshot(&request("enc", "snap", Some("alias/k"), &token))
        .await
        .unwrap();
    assert_eq!(
        sb.describe_group("enc").await.unwrap().unwrap().status,
        "creating"
    );

    // Lose every node of the creating group (as when a run is killed mid-restore and the processes go too).
    let status = sb.status().await.unwrap();
    let enc = status
        .groups
        .iter()
        .find(|g| g.replication_group_id == "enc")
        .unwrap();
    assert_eq!(enc.status, "creating");
    for node in &enc.nodes {
        let pid = node.pid.unwrap();
        unsafe {
            libc::kill(pid, libc::SIGKILL);
            libc::waitpid(pid, std::ptr::null_mut(), 0);
        }
        assert!(!process::pid_alive(pid));
    }

    // Describe restarts them (the primary from the sealed snapshot again) and the group becomes available.
    let group = wait_available(&sb, "enc").await;
    for node in &group.nodes {
        let mut ep = RedisEndpoint::plain(HOST, node.endpoint.port);
        ep.tls = true;
        ep.ca_file = sb.data_plane_ca();
        ep.password = Some(token.clone());
        assert_eq!(dbsize(&ep).await.unwrap(), 200, "{}", node.id);
    }
    assert_eq!(files_containing(sb.dir(), b"ecm:"), Vec::<PathBuf>::new());

    // Processes gone without `down` (a reboot): groups report `stopped`; `up` replaces a stopped plain group.
    assert_eq!(sb.stop_all_blocking(), 3);
    assert_eq!(
        sb.describe_group("enc").await.unwrap().unwrap().status,
        "stopped"
    );
    assert_eq!(
        sb.describe_group("src").await.unwrap().unwrap().status,
        "stopped"
    );
    let again = sb.up("src", 0, 10, &no_progress).await.unwrap();
    assert_eq!(again.status, "available");
    let err = sb.up("enc", 0, 10, &no_progress).await.unwrap_err();
    assert!(matches!(err, CloudError::InvalidRequest { .. }), "{err}");
    assert_eq!(sb.down().await.unwrap(), 1);
}

#[test]
fn sandbox_registry_updates_from_many_handles_are_not_lost() {
    let tmp = tempfile::TempDir::new().unwrap();
    let dir = tmp.path().join("sandbox");
    std::thread::scope(|s| {
        for i in 0..8 {
            let dir = dir.clone();
            s.spawn(move || {
                Sandbox::open(&dir)
                    .unwrap()
                    .kms_create(&format!("key{i}"))
                    .unwrap()
            });
        }
    });
    let reg = registry::load(&dir).unwrap();
    assert_eq!(reg.kms_keys.len(), 8);
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(dir.join(registry::REGISTRY_FILE))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let ca_key = std::fs::metadata(dir.join("ca/ca.key"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(ca_key & 0o777, 0o600);
}
