//! `ecmigrate copy` and `ecmigrate verify` between Redis clusters (and a cluster and a single primary):
//! real `redis-server` nodes with `cluster-enabled yes`, their slots assigned by the test, keys of every
//! type spread over all slots, and an independent check of every key on the node the server itself says
//! owns it (`CLUSTER KEYSLOT`).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use ecmigrate::data::connect::{RedisEndpoint, connect};
use ecmigrate::secret::Secret;
use redis::aio::MultiplexedConnection;

use super::harness::{Env, block_on, exec, wait_for};

pub(super) const PASSWORD: &str = "cluster-token-0123456789abcdef";

/// Free ports on 127.0.0.1, all held until every one is found (so none is handed out twice).
pub(super) fn free_ports(n: usize) -> Vec<u16> {
    let held: Vec<std::net::TcpListener> = (0..n)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    held.iter()
        .map(|l| l.local_addr().unwrap().port())
        .collect()
}

/// A CA and one certificate for every node (127.0.0.1 and localhost), as the sandbox makes them.
pub(super) struct Certs {
    pub(super) ca: PathBuf,
    pub(super) cert: PathBuf,
    pub(super) key: PathBuf,
}

pub(super) fn make_certs(dir: &Path) -> Certs {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, SanType};
    std::fs::create_dir_all(dir).unwrap();
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    // Distinct names: a node certificate named like its issuer reads as self-signed and is refused.
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "cluster test CA");
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let mut params = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
    params
        .subject_alt_names
        .push(SanType::IpAddress(std::net::Ipv4Addr::LOCALHOST.into()));
    params
        .distinguished_name
        .push(DnType::CommonName, "cluster test node");
    let key = KeyPair::generate().unwrap();
    let cert = params
        .signed_by(&key, &Issuer::new(ca_params, ca_key))
        .unwrap();
    let certs = Certs {
        ca: dir.join("ca.pem"),
        cert: dir.join("node.crt"),
        key: dir.join("node.key"),
    };
    std::fs::write(&certs.ca, ca.pem()).unwrap();
    std::fs::write(&certs.cert, cert.pem()).unwrap();
    std::fs::write(&certs.key, key.serialize_pem()).unwrap();
    certs
}

/// redis-server processes, killed on drop.
pub(super) struct Servers(pub(super) Vec<Child>);

impl Drop for Servers {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// One `redis-server` on 127.0.0.1:`port` in its own folder under `dir`: `cluster-enabled` with the bus on
/// `bus` when `cluster`; TLS only (with `tls-cluster` and `tls-replication`) and AUTH (`requirepass` and
/// `masterauth`) when `certs` is given. Returns the process and how a client reaches it.
pub(super) fn start_node(
    dir: &Path,
    port: u16,
    bus: u16,
    certs: Option<&Certs>,
    cluster: bool,
) -> (Child, RedisEndpoint) {
    start_node_with(dir, port, bus, certs, cluster, false)
}

/// As `start_node`; with `client_certs` (and `certs`) the node refuses TLS clients that present no
/// certificate signed by the CA (`tls-auth-clients yes`), and the endpoint returned presents the node's.
pub(super) fn start_node_with(
    dir: &Path,
    port: u16,
    bus: u16,
    certs: Option<&Certs>,
    cluster: bool,
    client_certs: bool,
) -> (Child, RedisEndpoint) {
    let node_dir = dir.join(format!("node-{port}"));
    std::fs::create_dir_all(&node_dir).unwrap();
    let mut cmd = Command::new("redis-server");
    cmd.current_dir(&node_dir)
        .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
        .args(["--dir", node_dir.to_str().unwrap()])
        .args(["--logfile", "redis.log"]);
    if cluster {
        cmd.args(["--cluster-enabled", "yes"])
            .args(["--cluster-config-file", "nodes.conf"])
            .args(["--cluster-port", &bus.to_string()]);
    }
    match certs {
        Some(c) => {
            cmd.args(["--port", "0", "--tls-port", &port.to_string()])
                .args(["--tls-cert-file", c.cert.to_str().unwrap()])
                .args(["--tls-key-file", c.key.to_str().unwrap()])
                .args(["--tls-ca-cert-file", c.ca.to_str().unwrap()])
                .args([
                    "--tls-auth-clients",
                    if client_certs { "yes" } else { "no" },
                ])
                .args(["--tls-cluster", "yes", "--tls-replication", "yes"])
                .args(["--requirepass", PASSWORD, "--masterauth", PASSWORD]);
        }
        None => {
            cmd.args(["--port", &port.to_string()]);
        }
    }
    let child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("redis-server");
    let node = RedisEndpoint {
        username: None,
        host: "127.0.0.1".into(),
        port,
        tls: certs.is_some(),
        ca_file: certs.map(|c| c.ca.clone()),
        password: certs.map(|_| Secret::new(PASSWORD)),
        db: 0,
        client_cert: certs
            .filter(|_| client_certs)
            .map(|c| ecmigrate::data::connect::ClientCert {
                cert: c.cert.clone(),
                key: c.key.clone(),
            }),
    };
    (child, node)
}

/// A running cluster (or, with `cluster: false`, one plain primary): its nodes' endpoints and the slot
/// range the test gave each.
pub(super) struct Cluster {
    pub(super) nodes: Vec<RedisEndpoint>,
    pub(super) ranges: Vec<(u16, u16)>,
    pub(super) cluster: bool,
    pub(super) _servers: Servers,
}

impl Cluster {
    /// `shards` primaries; TLS (with `tls-cluster` and `tls-replication`) and AUTH when `certs` is given.
    fn start(dir: &Path, shards: usize, certs: Option<&Certs>) -> Cluster {
        Cluster::spawn(dir, shards, certs, true)
    }

    fn single(dir: &Path) -> Cluster {
        Cluster::spawn(dir, 1, None, false)
    }

    fn spawn(dir: &Path, shards: usize, certs: Option<&Certs>, cluster: bool) -> Cluster {
        let ports = free_ports(shards * 2);
        let mut servers = Servers(Vec::new());
        let mut nodes = Vec::new();
        for i in 0..shards {
            let (child, node) = start_node(dir, ports[2 * i], ports[2 * i + 1], certs, cluster);
            servers.0.push(child);
            nodes.push(node);
        }
        let ranges = (0..shards)
            .map(|i| {
                let start = i * 16384 / shards;
                let end = (i + 1) * 16384 / shards - 1;
                (start as u16, end as u16)
            })
            .collect();
        let c = Cluster {
            nodes,
            ranges,
            cluster,
            _servers: servers,
        };
        for node in &c.nodes {
            wait_for("a node to answer PING", Duration::from_secs(20), || {
                block_on(async { connect(node).await.is_ok() })
            });
        }
        if cluster {
            c.form(&ports);
        }
        c
    }

    /// Give each node its slots, introduce them to each other, and wait until every node says
    /// `cluster_state:ok` (redis-cli --cluster create refuses fewer than three primaries).
    fn form(&self, ports: &[u16]) {
        block_on(async {
            for (node, (start, end)) in self.nodes.iter().zip(&self.ranges) {
                let mut conn = connect(node).await.unwrap();
                let (s, e) = (start.to_string(), end.to_string());
                exec(&mut conn, &["CLUSTER", "ADDSLOTSRANGE", &s, &e]).await;
            }
            let mut first = connect(&self.nodes[0]).await.unwrap();
            for (i, node) in self.nodes.iter().enumerate().skip(1) {
                let (port, bus) = (node.port.to_string(), ports[2 * i + 1].to_string());
                exec(&mut first, &["CLUSTER", "MEET", "127.0.0.1", &port, &bus]).await;
            }
        });
        for node in &self.nodes {
            wait_for("cluster_state:ok", Duration::from_secs(30), || {
                block_on(async {
                    let mut conn = connect(node).await.unwrap();
                    let info: String = redis::cmd("CLUSTER")
                        .arg("INFO")
                        .query_async(&mut conn)
                        .await
                        .unwrap();
                    info.contains("cluster_state:ok")
                        && info.contains(&format!("cluster_known_nodes:{}", self.nodes.len()))
                })
            });
        }
    }

    /// The URL of node `i` (`rediss://` for TLS; the password comes from an environment variable).
    pub(super) fn url(&self, i: usize) -> String {
        let scheme = if self.nodes[i].tls { "rediss" } else { "redis" };
        format!("{scheme}://127.0.0.1:{}", self.nodes[i].port)
    }

    pub(super) async fn conns(&self) -> Vec<MultiplexedConnection> {
        let mut out = Vec::new();
        for node in &self.nodes {
            out.push(connect(node).await.unwrap());
        }
        out
    }

    /// The node owning each key, by the slot the server computes (`CLUSTER KEYSLOT`), not ecmigrate's.
    pub(super) async fn owners(
        &self,
        conns: &mut [MultiplexedConnection],
        keys: &[String],
    ) -> Vec<usize> {
        if !self.cluster {
            return vec![0; keys.len()];
        }
        let mut pipe = redis::pipe();
        for key in keys {
            pipe.cmd("CLUSTER").arg("KEYSLOT").arg(key);
        }
        let slots: Vec<u16> = pipe.query_async(&mut conns[0]).await.unwrap();
        slots
            .iter()
            .map(|s| {
                self.ranges
                    .iter()
                    .position(|(a, b)| a <= s && s <= b)
                    .unwrap()
            })
            .collect()
    }

    pub(super) async fn total_keys(&self) -> u64 {
        let mut n = 0;
        for mut conn in self.conns().await {
            n += redis::cmd("DBSIZE")
                .query_async::<u64>(&mut conn)
                .await
                .unwrap();
        }
        n
    }
}

/// The keys seeded: strings (some with TTLs, some with hash tags), hashes, lists, sets, sorted sets.
pub(super) fn key_names(n: usize) -> Vec<String> {
    (0..n)
        .map(|i| match i % 10 {
            0 => format!("hash:{i}"),
            1 => format!("list:{i}"),
            2 => format!("set:{i}"),
            3 => format!("zset:{i}"),
            4 => format!("{{user{}}}.following:{i}", i % 37),
            5 => format!("{{user{}}}.followers:{i}", i % 37),
            6 => format!("ttl:{i}"),
            _ => format!("str:{i}"),
        })
        .collect()
}

/// Write the keys, each on the node that owns it.
pub(super) async fn seed(cluster: &Cluster, keys: &[String]) {
    let mut conns = cluster.conns().await;
    let owners = cluster.owners(&mut conns, keys).await;
    let mut pipes: Vec<redis::Pipeline> = (0..conns.len()).map(|_| redis::pipe()).collect();
    for (i, (key, &owner)) in keys.iter().zip(&owners).enumerate() {
        let p = &mut pipes[owner];
        let v = format!("value-{i}-{}", "x".repeat(i % 50));
        match key.split(':').next().unwrap() {
            "hash" => p.cmd("HSET").arg(key).arg("a").arg(&v).arg("b").arg(i),
            "list" => p.cmd("RPUSH").arg(key).arg(&v).arg("two").arg("three"),
            "set" => p.cmd("SADD").arg(key).arg(&v).arg("m1").arg("m2"),
            "zset" => p.cmd("ZADD").arg(key).arg(1.5).arg(&v).arg(2).arg("z2"),
            "ttl" => p.cmd("SET").arg(key).arg(&v).arg("EX").arg(3600),
            _ => p.cmd("SET").arg(key).arg(&v),
        }
        .ignore();
        if i % 15 == 0 {
            p.cmd("PEXPIRE").arg(key).arg(600_000).ignore();
        }
    }
    for (pipe, conn) in pipes.iter().zip(&mut conns) {
        let _: () = pipe.query_async(conn).await.unwrap();
    }
}

/// Type, TTL (ms, -1 for none) and a canonical value of `key` on `conn`.
pub(super) async fn read(
    conn: &mut MultiplexedConnection,
    key: &str,
) -> (String, i64, Vec<String>) {
    let kind: String = redis::cmd("TYPE").arg(key).query_async(conn).await.unwrap();
    let ttl: i64 = redis::cmd("PTTL").arg(key).query_async(conn).await.unwrap();
    let mut value: Vec<String> = match kind.as_str() {
        "string" => vec![redis::cmd("GET").arg(key).query_async(conn).await.unwrap()],
        "hash" => redis::cmd("HGETALL")
            .arg(key)
            .query_async(conn)
            .await
            .unwrap(),
        "list" => redis::cmd("LRANGE")
            .arg(key)
            .arg(0)
            .arg(-1)
            .query_async(conn)
            .await
            .unwrap(),
        "set" => redis::cmd("SMEMBERS")
            .arg(key)
            .query_async(conn)
            .await
            .unwrap(),
        "zset" => redis::cmd("ZRANGE")
            .arg(key)
            .arg(0)
            .arg(-1)
            .arg("WITHSCORES")
            .query_async(conn)
            .await
            .unwrap(),
        other => panic!("{key}: unexpected type {other}"),
    };
    if kind == "set" || kind == "hash" {
        value.sort();
    }
    (kind, ttl, value)
}

/// Every key in `keys` is on the target's owner node exactly as on the source's, TTLs within 5 s, and the
/// target holds no other keys.
pub(super) fn assert_exact(source: &Cluster, target: &Cluster, keys: &[String]) {
    block_on(async {
        let (mut s, mut t) = (source.conns().await, target.conns().await);
        let (s_own, t_own) = (
            source.owners(&mut s, keys).await,
            target.owners(&mut t, keys).await,
        );
        for (i, key) in keys.iter().enumerate() {
            let a = read(&mut s[s_own[i]], key).await;
            let b = read(&mut t[t_own[i]], key).await;
            assert_eq!((&a.0, &a.2), (&b.0, &b.2), "{key}");
            assert_eq!(a.1 < 0, b.1 < 0, "{key}: TTL {} vs {}", a.1, b.1);
            assert!((a.1 - b.1).abs() < 5000, "{key}: TTL {} vs {}", a.1, b.1);
        }
        assert_eq!(target.total_keys().await, keys.len() as u64);
    });
}

pub(super) fn env_with_password() -> Env {
    let mut env = Env::new();
    env.set_env("CL_PW", PASSWORD);
    env
}

const KEYS: usize = 3000;

#[test]
fn a_three_shard_cluster_copies_exactly_onto_a_two_shard_tls_auth_cluster() {
    let env = env_with_password();
    let certs = make_certs(&env.path().join("certs"));
    let source = Cluster::start(&env.path().join("src"), 3, None);
    let target = Cluster::start(&env.path().join("dst"), 2, Some(&certs));
    let keys = key_names(KEYS);
    block_on(seed(&source, &keys));
    let ca = certs.ca.to_str().unwrap();
    // Any node serves as the endpoint: here the second of each.
    let (src, dst) = (source.url(1), target.url(1));
    let tls_args = ["--ca-file", ca, "--dst-password-env", "CL_PW"];
    let mut args = vec!["copy", &src, &dst, "--output", "json"];
    args.extend(tls_args);
    let run = env.run(&args);
    assert_eq!(run.code, 0, "{run:?}");
    let summary: serde_json::Value = serde_json::from_str(run.stdout.trim()).unwrap();
    assert_eq!(summary["keys_copied"], KEYS as u64, "{run:?}");
    assert_eq!(
        (
            summary["source_primaries"].as_u64(),
            summary["target_primaries"].as_u64()
        ),
        (Some(3), Some(2))
    );
    assert_exact(&source, &target, &keys);
    let verify = |full: bool| {
        let mut args = vec!["verify", &src, &dst, "--output", "json"];
        args.extend(tls_args);
        if full {
            args.push("--full");
        }
        env.run(&args)
    };
    for full in [true, false] {
        let run = verify(full);
        assert_eq!(run.code, 0, "{run:?}");
        let report: serde_json::Value = serde_json::from_str(run.stdout.trim()).unwrap();
        assert_eq!(
            report["key_counts"]["db0"]["target"], KEYS as u64,
            "{run:?}"
        );
        let compared = report["keys_compared"].as_u64().unwrap();
        assert_eq!(compared, if full { KEYS as u64 } else { 1000 }, "{run:?}");
    }
    // One value changed on the target, on the primary that owns it: a full verify names it.
    let changed = &keys[7];
    block_on(async {
        let mut conns = target.conns().await;
        let owner = target
            .owners(&mut conns, std::slice::from_ref(changed))
            .await[0];
        exec(&mut conns[owner], &["SET", changed, "tampered"]).await;
    });
    let run = verify(true);
    assert_eq!(run.code, 1, "{run:?}");
    // The report, then the error (as JSON too).
    let report: serde_json::Value =
        serde_json::from_str(run.stdout.lines().next().unwrap()).unwrap();
    assert_eq!(report["mismatch_count"], 1, "{run:?}");
    assert_eq!(report["mismatches"][0]["key"], changed.as_str(), "{run:?}");
    assert!(run.all_output().contains("the endpoints differ"), "{run:?}");
}

#[test]
fn a_three_shard_cluster_copies_exactly_onto_four_shards() {
    let env = Env::new();
    let source = Cluster::start(&env.path().join("src"), 3, None);
    let target = Cluster::start(&env.path().join("dst"), 4, None);
    let keys = key_names(KEYS);
    block_on(seed(&source, &keys));
    // A low RESTORE bound sends many keys down the chunked path, whose temporary key must share the
    // key's slot.
    let (src, dst) = (source.url(0), target.url(3));
    let run = env.run(&[
        "copy",
        &src,
        &dst,
        "--max-restore-bytes",
        "40",
        "--output",
        "json",
    ]);
    assert_eq!(run.code, 0, "{run:?}");
    let summary: serde_json::Value = serde_json::from_str(run.stdout.trim()).unwrap();
    assert!(summary["big_keys"].as_u64().unwrap() > 100, "{run:?}");
    assert_exact(&source, &target, &keys);
    let run = env.run(&["copy", &src, &dst]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(
        run.stderr
            .contains("source: a cluster of 3 primaries; target: a cluster of 4 primaries"),
        "{run:?}"
    );
    assert_exact(&source, &target, &keys);
}

#[test]
fn source_shards_copied_in_two_runs_make_an_exact_copy() {
    let env = Env::new();
    let source = Cluster::start(&env.path().join("src"), 3, None);
    let target = Cluster::start(&env.path().join("dst"), 2, None);
    let keys = key_names(KEYS);
    block_on(seed(&source, &keys));
    let (src, dst) = (source.url(0), target.url(0));
    let bad = env.run(&["copy", &src, &dst, "--source-shards", "3"]);
    assert_eq!(bad.code, 2, "{bad:?}");
    assert!(
        bad.stderr.contains("source shard 3 does not exist"),
        "{bad:?}"
    );
    assert!(bad.stderr.contains("a cluster of 3 primaries"), "{bad:?}");
    let run = env.run(&["copy", &src, &dst, "--source-shards", "0,2"]);
    assert_eq!(run.code, 0, "{run:?}");
    // Exactly the keys of the first and third primaries.
    let expected = block_on(async {
        let mut conns = source.conns().await;
        let owners = source.owners(&mut conns, &keys).await;
        owners.iter().filter(|&&o| o != 1).count() as u64
    });
    assert!(expected > 0 && expected < KEYS as u64);
    assert_eq!(block_on(target.total_keys()), expected);
    let run = env.run(&["copy", &src, &dst, "--source-shards", "1"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert_exact(&source, &target, &keys);
}

#[test]
fn a_cluster_copies_into_database_zero_of_a_single_primary() {
    let env = Env::new();
    let source = Cluster::start(&env.path().join("src"), 3, None);
    let target = Cluster::single(&env.path().join("dst"));
    let keys = key_names(KEYS);
    block_on(seed(&source, &keys));
    let (src, dst) = (source.url(2), target.url(0));
    let run = env.run(&["copy", &src, &dst]);
    assert_eq!(run.code, 0, "{run:?}");
    assert_exact(&source, &target, &keys);
    let run = env.run(&["verify", &src, &dst, "--full"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(
        run.stdout
            .contains(&format!("db0: source {KEYS} keys, target {KEYS} keys")),
        "{run:?}"
    );
    // The other way round: a single primary's database 0 into a cluster.
    let back = Cluster::start(&env.path().join("back"), 2, None);
    let run = env.run(&["copy", &dst, &back.url(0)]);
    assert_eq!(run.code, 0, "{run:?}");
    assert_exact(&target, &back, &keys);
}
