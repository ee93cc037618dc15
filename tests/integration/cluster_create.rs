//! `ecmigrate copy` and `ecmigrate verify --full` between clusters formed the way an operator forms them,
//! `redis-cli --cluster create ... --cluster-yes` (not the sandbox, and not the test's own slot assignment
//! of `cluster_copy.rs`): a plain source of 3 primaries (in one test with a replica each) into a TLS-only
//! target with AUTH of another shard count, keys of every type over all slots, TTLs and big keys. Every key
//! is checked on the node that owns it by the cluster's own account (`CLUSTER SLOTS`, `CLUSTER KEYSLOT`).

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use ecmigrate::data::connect::{RedisEndpoint, connect};
use redis::Value;

use super::cluster_copy::{
    Certs, Cluster, PASSWORD, Servers, assert_exact, env_with_password, free_ports, key_names,
    make_certs, seed, start_node,
};
use super::harness::{block_on, exec, noise, wait_for};

/// A cluster made by `redis-cli --cluster create`: its primaries as a `Cluster` (in slot order, each with
/// the one range redis-cli gave it), and its replicas with the port of the primary each follows.
struct Created {
    primaries: Cluster,
    replicas: Vec<(RedisEndpoint, u16)>,
}

/// The slot ranges of the cluster as `node` reports them (`CLUSTER SLOTS`): start, end, the primary's
/// port and its replicas' ports.
fn cluster_slots(node: &RedisEndpoint) -> Vec<(u16, u16, u16, Vec<u16>)> {
    let reply: Value = block_on(async {
        let mut conn = connect(node).await.unwrap();
        redis::cmd("CLUSTER")
            .arg("SLOTS")
            .query_async(&mut conn)
            .await
            .unwrap()
    });
    let int = |v: &Value| match v {
        Value::Int(n) => *n as u16,
        other => panic!("CLUSTER SLOTS: {other:?} is not an integer"),
    };
    let port = |v: &Value| match v {
        Value::Array(node) => int(&node[1]),
        other => panic!("CLUSTER SLOTS: {other:?} is not a node"),
    };
    let Value::Array(entries) = reply else {
        panic!("CLUSTER SLOTS: {reply:?}")
    };
    let mut out: Vec<(u16, u16, u16, Vec<u16>)> = entries
        .iter()
        .map(|e| match e {
            Value::Array(e) => (
                int(&e[0]),
                int(&e[1]),
                port(&e[2]),
                e[3..].iter().map(port).collect(),
            ),
            other => panic!("CLUSTER SLOTS: {other:?}"),
        })
        .collect();
    out.sort();
    out
}

/// `what` of `INFO section` on `node`.
fn info(node: &RedisEndpoint, section: &str) -> String {
    block_on(async {
        let mut conn = connect(node).await.unwrap();
        redis::cmd("INFO")
            .arg(section)
            .query_async(&mut conn)
            .await
            .unwrap()
    })
}

impl Created {
    /// `primaries` primaries with `replicas` replicas each, in folders under `dir`; TLS only with AUTH
    /// when `certs` is given. Returns once every node says `cluster_state:ok` and knows every other, the
    /// slots are spread as redis-cli spread them, and every replica's link to its primary is up.
    fn start(dir: &Path, primaries: usize, replicas: usize, certs: Option<&Certs>) -> Created {
        let total = primaries * (1 + replicas);
        let ports = free_ports(total * 2);
        let mut servers = Servers(Vec::new());
        let mut nodes = Vec::new();
        for i in 0..total {
            let (child, node) = start_node(dir, ports[2 * i], ports[2 * i + 1], certs, true);
            servers.0.push(child);
            nodes.push(node);
        }
        for node in &nodes {
            wait_for("a node to answer PING", Duration::from_secs(20), || {
                block_on(async { connect(node).await.is_ok() })
            });
        }
        let mut cli = Command::new("redis-cli");
        if let Some(c) = certs {
            // The password through the environment, not the command line (redis-cli reads REDISCLI_AUTH).
            cli.args(["--tls", "--cacert", c.ca.to_str().unwrap()])
                .env("REDISCLI_AUTH", PASSWORD);
        }
        cli.args(["--cluster", "create"])
            .args(nodes.iter().map(|n| format!("127.0.0.1:{}", n.port)))
            .args(["--cluster-replicas", &replicas.to_string(), "--cluster-yes"])
            .stdin(Stdio::null());
        let out = cli.output().expect("redis-cli");
        let said = String::from_utf8_lossy(&out.stdout).replace(PASSWORD, "<redacted>")
            + &String::from_utf8_lossy(&out.stderr).replace(PASSWORD, "<redacted>");
        assert!(
            out.status.success() && said.contains("All 16384 slots covered"),
            "redis-cli --cluster create failed: {said}"
        );
        for node in &nodes {
            wait_for("cluster_state:ok", Duration::from_secs(30), || {
                let info: String = block_on(async {
                    let mut conn = connect(node).await.unwrap();
                    redis::cmd("CLUSTER")
                        .arg("INFO")
                        .query_async(&mut conn)
                        .await
                        .unwrap()
                });
                info.contains("cluster_state:ok")
                    && info.contains(&format!("cluster_known_nodes:{total}"))
                    && info.contains(&format!("cluster_size:{primaries}"))
            });
        }
        // Every node agrees on the ranges and who serves them (gossip may still be spreading the
        // replicas' roles when redis-cli returns).
        let mut slots = Vec::new();
        for node in &nodes {
            wait_for(
                "every range with its replicas, seen alike by every node",
                Duration::from_secs(30),
                || {
                    let seen = cluster_slots(node);
                    let settled = seen.len() == primaries
                        && seen.iter().all(|(_, _, _, r)| r.len() == replicas)
                        && (slots.is_empty() || seen == slots);
                    if settled {
                        slots = seen;
                    }
                    settled
                },
            );
        }
        let by_port = |port: u16| nodes.iter().find(|n| n.port == port).unwrap().clone();
        let mut replica_nodes = Vec::new();
        for (_, _, primary, followers) in &slots {
            for &port in followers {
                let replica = by_port(port);
                wait_for("the replica's link up", Duration::from_secs(30), || {
                    info(&replica, "replication").contains("master_link_status:up")
                });
                replica_nodes.push((replica, *primary));
            }
        }
        Created {
            primaries: Cluster {
                nodes: slots.iter().map(|(_, _, p, _)| by_port(*p)).collect(),
                ranges: slots.iter().map(|(a, b, _, _)| (*a, *b)).collect(),
                cluster: true,
                _servers: servers,
            },
            replicas: replica_nodes,
        }
    }
}

/// Big keys over the slots (each past the copy's RESTORE bound of `MAX_RESTORE`, so each goes down the
/// chunked path): hashes, lists, sets and sorted sets of thousands of members, and strings of 200 KB of
/// hex noise; every other one with a TTL.
fn big_key_names() -> Vec<String> {
    (0..12)
        .map(|i| match i % 4 {
            0 => format!("bighash:{i}"),
            1 => format!("biglist:{i}"),
            2 => format!("bigzset:{i}"),
            _ => format!("bigstr:{i}"),
        })
        .chain((0..3).map(|i| format!("{{bigtag}}.bigset:{i}")))
        .collect()
}

const MAX_RESTORE: &str = "4096";

fn seed_big(cluster: &Cluster, keys: &[String]) {
    block_on(async {
        let mut conns = cluster.conns().await;
        let owners = cluster.owners(&mut conns, keys).await;
        let mut state = 0x9e37_79b9_7f4a_7c15_u64;
        for (i, (key, &owner)) in keys.iter().zip(&owners).enumerate() {
            let conn = &mut conns[owner];
            let members: Vec<String> = (0..3000).map(|m| format!("member-{i}-{m}")).collect();
            let cmd = match key.split(':').next().unwrap() {
                "bighash" => {
                    let mut c = redis::cmd("HSET");
                    c.arg(key);
                    for m in &members {
                        c.arg(m).arg(format!("value-of-{m}"));
                    }
                    c
                }
                "biglist" => {
                    let mut c = redis::cmd("RPUSH");
                    c.arg(key).arg(&members);
                    c
                }
                "bigzset" => {
                    let mut c = redis::cmd("ZADD");
                    c.arg(key);
                    for (n, m) in members.iter().enumerate() {
                        c.arg(n as f64 / 4.0).arg(m);
                    }
                    c
                }
                "bigstr" => {
                    let hex: String = noise(&mut state, 100_000)
                        .iter()
                        .map(|b| format!("{b:02x}"))
                        .collect();
                    let mut c = redis::cmd("SET");
                    c.arg(key).arg(hex);
                    c
                }
                _ => {
                    let mut c = redis::cmd("SADD");
                    c.arg(key).arg(&members);
                    c
                }
            };
            let _: () = cmd.query_async(conn).await.unwrap();
            if i % 2 == 0 {
                exec(conn, &["PEXPIRE", key, "900000"]).await;
            }
        }
    });
}

/// The keys of `key_names(n)` and the big keys, seeded into `source` on their owners.
fn seeded(source: &Cluster, n: usize) -> Vec<String> {
    let mut keys = key_names(n);
    block_on(seed(source, &keys));
    let big = big_key_names();
    seed_big(source, &big);
    keys.extend(big);
    keys
}

fn url(node: &RedisEndpoint) -> String {
    let scheme = if node.tls { "rediss" } else { "redis" };
    format!("{scheme}://127.0.0.1:{}", node.port)
}

const KEYS: usize = 3000;

#[test]
fn a_redis_cli_cluster_of_three_copies_exactly_onto_a_redis_cli_tls_auth_cluster_of_four() {
    let env = env_with_password();
    let certs = make_certs(&env.path().join("certs"));
    let source = Created::start(&env.path().join("src"), 3, 0, None).primaries;
    let target = Created::start(&env.path().join("dst"), 4, 0, Some(&certs)).primaries;
    let keys = seeded(&source, KEYS);
    let total = keys.len() as u64;
    let ca = certs.ca.to_str().unwrap();
    let (src, dst) = (source.url(2), target.url(1));
    let auth = ["--ca-file", ca, "--dst-password-env", "CL_PW"];
    let mut args = vec!["copy", &src, &dst, "--max-restore-bytes", MAX_RESTORE];
    args.extend(auth);
    args.extend(["--output", "json"]);
    let run = env.run(&args);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(!run.all_output().contains(PASSWORD), "the password leaked");
    let summary: serde_json::Value = serde_json::from_str(run.stdout.trim()).unwrap();
    assert_eq!(summary["keys_copied"], total, "{run:?}");
    assert_eq!(
        (
            summary["source_primaries"].as_u64(),
            summary["target_primaries"].as_u64()
        ),
        (Some(3), Some(4)),
        "{run:?}"
    );
    let big = summary["big_keys"].as_u64().unwrap();
    assert!(big >= big_key_names().len() as u64, "{run:?}");
    assert_exact(&source, &target, &keys);

    let verify = || {
        let mut args = vec!["verify", &src, &dst, "--full", "--output", "json"];
        args.extend(auth);
        env.run(&args)
    };
    let run = verify();
    assert_eq!(run.code, 0, "{run:?}");
    let report: serde_json::Value = serde_json::from_str(run.stdout.trim()).unwrap();
    assert_eq!(report["keys_compared"], total, "{run:?}");
    assert_eq!(report["key_counts"]["db0"]["source"], total, "{run:?}");
    assert_eq!(report["key_counts"]["db0"]["target"], total, "{run:?}");
    assert_eq!(report["mismatch_count"], 0, "{run:?}");

    // One big key gone from the target, on the primary that owns it: the full verify names it.
    let gone = "bighash:4";
    block_on(async {
        let mut conns = target.conns().await;
        let owner = target.owners(&mut conns, &[gone.to_string()]).await[0];
        exec(&mut conns[owner], &["DEL", gone]).await;
    });
    let run = verify();
    assert_eq!(run.code, 1, "{run:?}");
    let report: serde_json::Value =
        serde_json::from_str(run.stdout.lines().next().unwrap()).unwrap();
    assert_eq!(report["mismatch_count"], 1, "{run:?}");
    assert_eq!(report["mismatches"][0]["key"], gone, "{run:?}");
}

/// Commands that read keys or count them; a node the copier and the verifier leave alone runs none.
const READS: [&str; 22] = [
    "scan",
    "dump",
    "type",
    "pttl",
    "ttl",
    "get",
    "mget",
    "getrange",
    "strlen",
    "hgetall",
    "hscan",
    "hlen",
    "sscan",
    "smembers",
    "scard",
    "zscan",
    "zrange",
    "zcard",
    "lrange",
    "llen",
    "dbsize",
    "memory|usage",
];

/// The read commands `node` ran since its statistics were reset.
fn reads_on(node: &RedisEndpoint) -> Vec<String> {
    info(node, "commandstats")
        .lines()
        .filter_map(|l| l.strip_prefix("cmdstat_"))
        .filter_map(|l| l.split(':').next())
        .filter(|cmd| READS.contains(cmd))
        .map(str::to_string)
        .collect()
}

#[test]
fn a_source_with_a_replica_per_primary_is_read_from_its_primaries_only() {
    let env = env_with_password();
    let certs = make_certs(&env.path().join("certs"));
    let created = Created::start(&env.path().join("src"), 3, 1, None);
    let source = &created.primaries;
    let target = Created::start(&env.path().join("dst"), 5, 0, Some(&certs)).primaries;
    let keys = seeded(source, KEYS);
    let total = keys.len() as u64;
    // Each replica holds its primary's keys before the copy starts (so a copier reading one would find
    // them), and has run no command since.
    for (replica, primary) in &created.replicas {
        let primary = source.nodes.iter().find(|n| n.port == *primary).unwrap();
        let keys_of = |n: &RedisEndpoint| {
            block_on(async {
                let mut conn = connect(n).await.unwrap();
                redis::cmd("DBSIZE")
                    .query_async::<u64>(&mut conn)
                    .await
                    .unwrap()
            })
        };
        let want = keys_of(primary);
        assert!(want > 0);
        wait_for("the replica in sync", Duration::from_secs(30), || {
            keys_of(replica) == want
        });
        block_on(async {
            let mut conn = connect(replica).await.unwrap();
            exec(&mut conn, &["CONFIG", "RESETSTAT"]).await;
        });
    }
    // The source is named by a replica: any node is enough to find the primaries.
    let (src, dst) = (url(&created.replicas[0].0), target.url(0));
    let ca = certs.ca.to_str().unwrap();
    let auth = ["--ca-file", ca, "--dst-password-env", "CL_PW"];
    let mut args = vec!["copy", &src, &dst, "--max-restore-bytes", MAX_RESTORE];
    args.extend(auth);
    args.extend(["--output", "json"]);
    let run = env.run(&args);
    assert_eq!(run.code, 0, "{run:?}");
    let summary: serde_json::Value = serde_json::from_str(run.stdout.trim()).unwrap();
    // Every key once: a copier that also read the replicas would find each key twice.
    assert_eq!(summary["keys_copied"], total, "{run:?}");
    assert_eq!(summary["source_primaries"], 3, "{run:?}");
    assert_eq!(summary["target_primaries"], 5, "{run:?}");
    assert_exact(source, &target, &keys);

    let mut args = vec!["verify", &src, &dst, "--full", "--output", "json"];
    args.extend(auth);
    let run = env.run(&args);
    assert_eq!(run.code, 0, "{run:?}");
    let report: serde_json::Value = serde_json::from_str(run.stdout.trim()).unwrap();
    assert_eq!(report["keys_compared"], total, "{run:?}");
    assert_eq!(report["key_counts"]["db0"]["source"], total, "{run:?}");

    for (replica, _) in &created.replicas {
        assert_eq!(
            reads_on(replica),
            Vec::<String>::new(),
            "replica {} was read",
            replica.port
        );
    }
    // The check sees reads where there were some: the primaries ran the scans.
    for primary in &source.nodes {
        assert!(
            reads_on(primary).iter().any(|c| c == "scan"),
            "primary {} shows no SCAN",
            primary.port
        );
    }
}
