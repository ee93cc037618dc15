//! Topology parsing: INFO cluster, CLUSTER SHARDS / CLUSTER SLOTS replies, slot maps.

use super::*;

fn bulk(s: &str) -> Value {
    Value::BulkString(s.as_bytes().to_vec())
}

#[test]
fn slots_follow_crc16_xmodem_and_hash_tags() {
    assert_eq!(crc16(b"123456789"), 0x31C3);
    assert_eq!(key_slot(b"foo"), 12182);
    assert_eq!(key_slot(b"bar"), 5061);
    assert_eq!(
        key_slot(b"{user1000}.following"),
        key_slot(b"{user1000}.followers")
    );
    assert_eq!(key_slot(b"{user1000}.following"), key_slot(b"user1000"));
    assert_eq!(key_slot(b""), 0);
    // An empty tag does not count: the whole key is hashed.
    assert_eq!(key_slot(b"{}"), crc16(b"{}") % 16384);
    assert_eq!(key_slot(b"{}foo"), crc16(b"{}foo") % 16384);
    // Only the first `{` and the first `}` after it.
    assert_eq!(key_slot(b"foo{bar}{zap}"), key_slot(b"bar"));
    assert_eq!(key_slot(b"foo{{bar}}"), key_slot(b"{bar"));
    assert_eq!(key_slot(b"foo{bar"), crc16(b"foo{bar") % 16384);
}

#[test]
fn same_slot_tags_land_in_the_slot_asked_for() {
    for slot in [0u16, 1, 5061, 12182, 16383] {
        let tag = same_slot_tag(slot);
        let mut tmp = tag.clone();
        tmp.extend_from_slice(b"some}key{x}");
        assert_eq!(key_slot(&tmp), slot);
    }
}

#[test]
fn cluster_enabled_is_read_from_info() {
    assert!(cluster_enabled("# Cluster\r\ncluster_enabled:1\r\n"));
    assert!(!cluster_enabled("# Cluster\r\ncluster_enabled:0\r\n"));
}

fn node(ip: &str, port: i64, tls_port: Option<i64>, role: &str) -> Value {
    let mut v = vec![bulk("id"), bulk("abc"), bulk("port"), Value::Int(port)];
    if let Some(t) = tls_port {
        v.extend([bulk("tls-port"), Value::Int(t)]);
    }
    v.extend([
        bulk("ip"),
        bulk(ip),
        bulk("endpoint"),
        bulk(ip),
        bulk("role"),
        bulk(role),
        bulk("health"),
        bulk("online"),
    ]);
    Value::Array(v)
}

fn shard(slots: &[i64], nodes: Vec<Value>) -> Value {
    Value::Array(vec![
        bulk("slots"),
        Value::Array(slots.iter().map(|s| Value::Int(*s)).collect()),
        bulk("nodes"),
        Value::Array(nodes),
    ])
}

#[test]
fn cluster_shards_replies_name_each_primary_and_its_slots() {
    let reply = Value::Array(vec![
        shard(
            &[5461, 10922],
            vec![
                node("10.0.0.9", 7001, Some(8001), "replica"),
                node("10.0.0.2", 7002, Some(8002), "master"),
            ],
        ),
        shard(
            &[0, 5460],
            vec![node("10.0.0.1", 7000, Some(8000), "master")],
        ),
        shard(
            &[10923, 16000, 16001, 16383],
            vec![node("10.0.0.3", 7003, None, "master")],
        ),
    ]);
    let plain = parse_shards(&reply, false).unwrap();
    assert_eq!(plain[0].host, "10.0.0.2");
    assert_eq!(plain[0].port, 7002);
    assert_eq!(plain[2].slots, vec![(10923, 16000), (16001, 16383)]);
    let tls = parse_shards(&reply, true).unwrap();
    assert_eq!((tls[0].port, tls[1].port, tls[2].port), (8002, 8000, 7003));
    let given = RedisEndpoint::plain("seed", 1);
    let topo = Topology::cluster(&given, plain).unwrap();
    // Slot order, not reply order.
    let ports: Vec<u16> = topo.shards.iter().map(|s| s.endpoint.port).collect();
    assert_eq!(ports, vec![7000, 7002, 7003]);
    assert_eq!(topo.shard_of(b"foo"), 2);
    assert_eq!(topo.shard_of(b"bar"), 0);
    assert_eq!(topo.shard_of_slot(5461), 1);
    // The replica is known, at its TLS port on a TLS endpoint.
    assert_eq!(topo.shards[1].replicas[0].port, 7001);
    assert_eq!(tls[0].replicas, vec![("10.0.0.9".to_string(), 8001)]);
    assert_eq!(topo.nodes().len(), 4);
    assert_eq!(topo.slot_map()[0], "10.0.0.1:7000=0-5460");
}

#[test]
fn cluster_slots_replies_group_ranges_by_primary() {
    let range = |a: i64, b: i64, port: i64| {
        Value::Array(vec![
            Value::Int(a),
            Value::Int(b),
            Value::Array(vec![bulk("127.0.0.1"), Value::Int(port), bulk("id")]),
            Value::Array(vec![bulk("127.0.0.1"), Value::Int(port + 100), bulk("id2")]),
        ])
    };
    let reply = Value::Array(vec![
        range(0, 100, 7000),
        range(101, 16000, 7001),
        range(16001, 16383, 7000),
    ]);
    let primaries = parse_slots(&reply).unwrap();
    assert_eq!(primaries.len(), 2);
    assert_eq!(primaries[0].slots, vec![(0, 100), (16001, 16383)]);
    assert_eq!(primaries[0].replicas, vec![("127.0.0.1".to_string(), 7100)]);
    let topo = Topology::cluster(&RedisEndpoint::plain("seed", 1), primaries).unwrap();
    assert_eq!(topo.shard_of_slot(16383), 0);
    assert_eq!(topo.shard_of_slot(101), 1);
}

#[test]
fn a_cluster_with_an_unowned_or_doubly_owned_slot_is_refused() {
    let given = RedisEndpoint::plain("seed", 1);
    let p = |port: u16, slots: Vec<(u16, u16)>| Primary {
        host: "h".into(),
        port,
        slots,
        replicas: Vec::new(),
    };
    let err = Topology::cluster(&given, vec![p(1, vec![(0, 100)])]).unwrap_err();
    assert!(err.contains("no primary for slot 101"), "{err}");
    let err =
        Topology::cluster(&given, vec![p(1, vec![(0, 16383)]), p(2, vec![(5, 5)])]).unwrap_err();
    assert!(err.contains("slot 5 on two primaries"), "{err}");
    let single = Topology::single(&given);
    assert_eq!((single.cluster, single.shard_of(b"foo")), (false, 0));
}
