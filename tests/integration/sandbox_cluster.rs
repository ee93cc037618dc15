//! Cluster-mode-enabled sandbox groups, against the real redis-server nodes: `sandbox up --shards` forms a
//! cluster whose slots are covered exactly once and whose keys sit on the primaries owning their slots;
//! `sandbox down` and `delete-group` leave no node running (checked in /proc); a cluster source migrates
//! by a plan without a stream. Restores into clusters are in `cluster_restore`, with these helpers.

use std::collections::BTreeMap;

use ecmigrate::data::connect::{RedisEndpoint, connect};
use serde_json::Value;

use crate::harness::{Env, block_on};
use crate::sandbox_lifecycle::redis_servers_under;

const SLOTS: u64 = 16_384;

pub(crate) fn group<'a>(status: &'a Value, id: &str) -> &'a Value {
    Env::group(status, id).unwrap_or_else(|| panic!("group {id} in {status}"))
}

pub(crate) fn nodes(g: &Value) -> &Vec<Value> {
    g["nodes"].as_array().expect("nodes")
}

pub(crate) fn port(n: &Value) -> u16 {
    n["port"].as_u64().unwrap() as u16
}

/// `"0-5460"` -> (0, 5460).
fn range(slots: &Value) -> (u64, u64) {
    let text = slots.as_str().unwrap_or_else(|| panic!("slots {slots}"));
    let (a, b) = text.split_once('-').expect("a-b");
    (a.parse().unwrap(), b.parse().unwrap())
}

/// The primaries' slot ranges, by shard, after checking that they cover every slot exactly once and that
/// every replica shows its shard's range.
pub(crate) fn checked_slot_ranges(g: &Value, shards: u64) -> BTreeMap<u64, (u64, u64)> {
    let mut by_shard = BTreeMap::new();
    for n in nodes(g).iter().filter(|n| n["role"] == "primary") {
        let old = by_shard.insert(n["shard"].as_u64().unwrap(), range(&n["slots"]));
        assert!(old.is_none(), "two primaries in one shard: {g}");
    }
    assert_eq!(by_shard.len() as u64, shards, "{g}");
    let mut covered = vec![0u32; SLOTS as usize];
    for (a, b) in by_shard.values() {
        (*a..=*b).for_each(|s| covered[s as usize] += 1);
    }
    assert!(
        covered.iter().all(|c| *c == 1),
        "slots not covered exactly once: {g}"
    );
    for n in nodes(g).iter().filter(|n| n["role"] == "replica") {
        assert_eq!(
            Some(&range(&n["slots"])),
            by_shard.get(&n["shard"].as_u64().unwrap()),
            "{n}"
        );
    }
    by_shard
}

async fn query<T: redis::FromRedisValue>(
    c: &mut redis::aio::MultiplexedConnection,
    args: &[&str],
) -> T {
    redis::cmd(args[0])
        .arg(&args[1..])
        .query_async(c)
        .await
        .unwrap_or_else(|e| panic!("{args:?}: {e}"))
}

/// On every node: `cluster_state:ok`, all slots assigned, every node known; on every primary: keys, each
/// of a sample of them in its own slot range. Returns the keys held by the primaries.
pub(crate) async fn check_cluster(
    g: &Value,
    ranges: &BTreeMap<u64, (u64, u64)>,
    reach: impl Fn(u16) -> RedisEndpoint,
) -> u64 {
    let count = nodes(g).len();
    let mut total = 0;
    for n in nodes(g) {
        let mut c = connect(&reach(port(n))).await.expect("connect");
        let info: String = query(&mut c, &["CLUSTER", "INFO"]).await;
        for want in [
            "cluster_state:ok".to_string(),
            format!("cluster_slots_assigned:{SLOTS}"),
            format!("cluster_known_nodes:{count}"),
        ] {
            assert!(
                info.lines().any(|l| l.trim() == want),
                "{}: {want} not in {info}",
                n["id"]
            );
        }
        if n["role"] != "primary" {
            let role: String = query(&mut c, &["INFO", "replication"]).await;
            assert!(role.contains("role:slave"), "{}: {role}", n["id"]);
            continue;
        }
        let keys: u64 = query(&mut c, &["DBSIZE"]).await;
        assert!(keys > 0, "primary {} holds no key", n["id"]);
        total += keys;
        let (a, b) = ranges[&n["shard"].as_u64().unwrap()];
        let (_, sample): (u64, Vec<String>) = query(&mut c, &["SCAN", "0", "COUNT", "200"]).await;
        assert!(!sample.is_empty());
        for key in &sample {
            let slot: u64 = query(&mut c, &["CLUSTER", "KEYSLOT", key]).await;
            assert!(
                (a..=b).contains(&slot),
                "{key} (slot {slot}) on {} owning {a}-{b}",
                n["id"]
            );
        }
    }
    total
}

#[test]
fn sandbox_up_with_shards_forms_a_cluster_with_every_slot_once_and_keys_on_their_owners() {
    let env = Env::new();
    let up = env.ok(&[
        "sandbox",
        "up",
        "--group",
        "shop",
        "--shards",
        "3",
        "--replicas",
        "1",
        "--keys",
        "3000",
    ]);
    // The wait for the cluster's agreement is reported as it goes.
    assert!(
        up.stderr
            .contains("cluster `shop`: cluster_state ok on 6/6 node(s)"),
        "{up:?}"
    );
    assert!(up.stdout.contains("3 shard(s)"), "{up:?}");
    let status = env.sandbox_status();
    let g = group(&status, "shop");
    assert_eq!(g["status"], "available", "{g}");
    assert_eq!(g["cluster_enabled"], true);
    assert_eq!(g["num_node_groups"], 3);
    assert_eq!(nodes(g).len(), 6, "{g}");
    assert!(nodes(g).iter().all(|n| n["running"] == true), "{g}");
    let ranges = checked_slot_ranges(g, 3);
    assert_eq!(ranges[&0], (0, 5460));
    // The configuration endpoint is a primary's address, and the alias stands for it.
    let config = &g["configuration_endpoint"];
    assert!(
        nodes(g)
            .iter()
            .any(|n| n["role"] == "primary" && n["port"] == config["port"]),
        "{g}"
    );
    assert_eq!(status["aliases"]["shop-endpoint"], "shop");
    assert_eq!(&status["alias_endpoints"]["shop-endpoint"], config);
    // Each node has its own cluster bus port in its configuration, next to its cluster state file.
    for n in 0..6 {
        let dir = env
            .sandbox_dir()
            .join("nodes")
            .join("shop")
            .join(n.to_string());
        let conf = std::fs::read_to_string(dir.join("redis.conf")).unwrap();
        assert!(
            conf.contains("cluster-enabled yes") && conf.contains("cluster-port "),
            "{conf}"
        );
        assert!(dir.join("nodes.conf").exists());
    }

    let total = block_on(check_cluster(g, &ranges, |p| {
        RedisEndpoint::plain("127.0.0.1", p)
    }));
    assert_eq!(total, 3000, "every seeded key on exactly one primary");
    // `up` returns once the replicas caught up: each holds its primary's keys.
    block_on(async {
        for r in nodes(g).iter().filter(|n| n["role"] == "replica") {
            let p = nodes(g)
                .iter()
                .find(|n| n["role"] == "primary" && n["shard"] == r["shard"])
                .unwrap();
            let mut keys = Vec::new();
            for n in [p, r] {
                let mut c = connect(&RedisEndpoint::plain("127.0.0.1", port(n)))
                    .await
                    .unwrap();
                keys.push(query::<u64>(&mut c, &["DBSIZE"]).await);
            }
            assert_eq!(
                keys[0], keys[1],
                "replica {} of shard {}",
                r["id"], r["shard"]
            );
        }
    });

    let text = env.ok(&["sandbox", "status"]).stdout;
    assert!(text.contains("cluster mode enabled: 3 shard(s)"), "{text}");
    assert!(
        text.contains("shard=0 slots=0-5460") && text.contains("shard=2 slots=10923-16383"),
        "{text}"
    );

    let servers = redis_servers_under(&env.sandbox_dir());
    assert_eq!(servers.len(), 6, "{servers:?}");
    env.ok(&["sandbox", "down"]);
    assert_eq!(redis_servers_under(&env.sandbox_dir()), Vec::<i32>::new());
}

#[test]
fn delete_group_stops_every_node_of_a_cluster() {
    let env = Env::new();
    env.ok(&[
        "sandbox",
        "up",
        "--group",
        "shop",
        "--shards",
        "2",
        "--replicas",
        "1",
        "--keys",
        "50",
    ]);
    env.ok(&[
        "sandbox",
        "up",
        "--group",
        "other",
        "--replicas",
        "0",
        "--keys",
        "10",
    ]);
    let group_dir = env.sandbox_dir().join("nodes").join("shop");
    assert_eq!(redis_servers_under(&group_dir).len(), 4);
    let run = env.ok(&["sandbox", "delete-group", "shop"]);
    assert!(run.stdout.contains("stopped 4 process(es)"), "{run:?}");
    assert_eq!(redis_servers_under(&group_dir), Vec::<i32>::new());
    assert!(Env::group(&env.sandbox_status(), "shop").is_none());
    // The other group is untouched.
    assert_eq!(redis_servers_under(&env.sandbox_dir()).len(), 1);
}

/// The full plan on a 3-shard sandbox cluster source without a stream (the source takes no writes): the
/// migration into 2 encrypted shards finishes and its full verify compares every key across the shards.
#[test]
fn a_cluster_source_migrates_without_a_stream() {
    let env = Env::new();
    env.ok(&[
        "sandbox",
        "up",
        "--group",
        "orders",
        "--shards",
        "3",
        "--replicas",
        "1",
        "--keys",
        "2000",
    ]);
    env.ok(&["sandbox", "kms", "create", "orders"]);
    let base = crate::harness::full_plan(&env)
        .replace("  auth_token:", "  num_node_groups: 2\n  auth_token:");
    let plan = env.write_plan("plan.yaml", &base);
    let done = env.run(&["run", plan.to_str().unwrap(), "--yes"]);
    assert_eq!(done.code, 0, "{done:?}");
    let state: Value = serde_json::from_str(
        &std::fs::read_to_string(env.state_dir().join("orders-migration/state.json")).unwrap(),
    )
    .unwrap();
    let verify = state["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["kind"] == "verify")
        .unwrap();
    assert_eq!(verify["outputs"]["keys_compared"], 2000, "{verify}");
    let ttl_check = verify["outputs"]["ttl_check"].as_str().unwrap_or_default();
    assert!(ttl_check.contains("TTL asked"), "{verify}");
    let evidence =
        std::fs::read_to_string(env.state_dir().join("orders-migration/report.md")).unwrap();
    assert!(
        evidence.contains(&format!("TTLs on the target: {ttl_check}.")),
        "the evidence says how the TTLs were checked: {evidence}"
    );
    assert_eq!(
        verify["outputs"]["key_counts"]["db0"]["target"], 2000,
        "{verify}"
    );
    let status = env.sandbox_status();
    let target = group(&status, crate::harness::TARGET);
    assert_eq!(target["cluster_enabled"], true, "{target}");
    assert_eq!(target["num_node_groups"], 2, "{target}");
    assert!(
        status["groups"].as_array().unwrap().len() == 1,
        "the source was not deleted: {status}"
    );
}
