//! The verifier against two real redis-server groups seeded identically: it passes when they match and
//! names the keys when a value, a type, a TTL or a key differs.

use ecmigrate::data::connect::{RedisEndpoint, connect};
use ecmigrate::data::verify::{VerifyMode, VerifyOptions, VerifyReport, verify, verify_with};

use crate::harness::{Env, block_on, exec};

#[test]
fn verifier_passes_identical_groups_and_names_every_kind_of_difference() {
    let env = Env::new();
    env.ok(&[
        "sandbox",
        "up",
        "--group",
        "left",
        "--replicas",
        "0",
        "--keys",
        "2000",
    ]);
    env.ok(&[
        "sandbox",
        "up",
        "--group",
        "right",
        "--replicas",
        "0",
        "--keys",
        "2000",
    ]);
    let status = env.sandbox_status();
    let left = RedisEndpoint::plain("127.0.0.1", Env::primary_port(&status, "left"));
    let right = RedisEndpoint::plain("127.0.0.1", Env::primary_port(&status, "right"));
    let no_progress = |_: u64, _: u64| {};

    block_on(async {
        let report = verify(&left, &right, VerifyMode::Full, 5000, &no_progress)
            .await
            .unwrap();
        assert!(report.passed(), "{report:?}");
        assert_eq!(report.keys_compared, 2000);

        // Four kinds of difference on the right side.
        let mut r = connect(&right).await.unwrap();
        let mut l = connect(&left).await.unwrap();
        let (_, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(0)
            .arg("COUNT")
            .arg(500)
            .query_async(&mut l)
            .await
            .unwrap();
        let string_key = first_of_type(&mut l, &keys, "string").await;
        let hash_key = first_of_type(&mut l, &keys, "hash").await;
        let deleted_key = keys
            .iter()
            .find(|k| **k != string_key && **k != hash_key)
            .unwrap()
            .clone();
        exec(&mut r, &["SET", &string_key, "changed"]).await;
        exec(&mut r, &["HSET", &hash_key, "extra", "field"]).await;
        exec(&mut r, &["DEL", &deleted_key]).await;

        let report = verify(&left, &right, VerifyMode::Full, 5000, &no_progress)
            .await
            .unwrap();
        assert!(!report.passed());
        let named: Vec<&str> = report.mismatches.iter().map(|m| m.key.as_str()).collect();
        for key in [&string_key, &hash_key, &deleted_key] {
            assert!(
                named.contains(&key.as_str()),
                "{key} not reported: {report:?}"
            );
        }
        assert_eq!(report.key_counts[&0], (2000, 1999));

        // A sample of the unchanged keys still finds nothing wrong beyond the three.
        let sample = verify(&left, &right, VerifyMode::Sample(100), 5000, &no_progress)
            .await
            .unwrap();
        assert!(
            sample.keys_compared <= 100 && sample.keys_compared >= 90,
            "{sample:?}"
        );
        assert!(sample.mismatch_count <= 3);
    });
}

async fn first_of_type(
    c: &mut redis::aio::MultiplexedConnection,
    keys: &[String],
    kind: &str,
) -> String {
    for k in keys {
        let t: String = redis::cmd("TYPE").arg(k).query_async(c).await.unwrap();
        if t == kind {
            return k.clone();
        }
    }
    panic!("no {kind} among {} keys", keys.len());
}

/// `left` and `right`, two empty plain sandbox groups; their primaries.
fn two_empty_groups(env: &Env) -> (RedisEndpoint, RedisEndpoint) {
    for group in ["left", "right"] {
        env.ok(&[
            "sandbox",
            "up",
            "--group",
            group,
            "--replicas",
            "0",
            "--keys",
            "0",
        ]);
    }
    let status = env.sandbox_status();
    (
        RedisEndpoint::plain("127.0.0.1", Env::primary_port(&status, "left")),
        RedisEndpoint::plain("127.0.0.1", Env::primary_port(&status, "right")),
    )
}

async fn dump(c: &mut redis::aio::MultiplexedConnection, key: &str) -> Vec<u8> {
    redis::cmd("DUMP").arg(key).query_async(c).await.unwrap()
}

/// `verify --full` of `left` against `right`, with the default TTL tolerance and no progress shown.
async fn full_verify(left: &RedisEndpoint, right: &RedisEndpoint) -> VerifyReport {
    verify(left, right, VerifyMode::Full, 5000, &|_, _| {})
        .await
        .unwrap()
}

/// `items` as written on one side: as given, or reversed (so that the two processes' hashtables are
/// filled in other orders).
fn in_order(items: &[String], reversed: bool) -> Vec<String> {
    let mut items = items.to_vec();
    if reversed {
        items.reverse();
    }
    items
}

/// The full comparison settles most keys by their bytes (strings) or DUMP payloads (the rest); equal
/// values whose payloads differ (hashtable-encoded sets and hashes, written in other orders by other
/// processes) still pass, and each kind of difference is named in the typed comparison's words.
#[test]
fn full_verify_passes_equal_values_whose_dumps_differ_and_names_each_difference() {
    let env = Env::new();
    let (left, right) = two_empty_groups(&env);
    block_on(async {
        let mut l = connect(&left).await.unwrap();
        let mut r = connect(&right).await.unwrap();
        // 300 members or fields: hashtable-encoded, in the orders of each process's own hash seed.
        let members: Vec<String> = (0..300).map(|i| format!("member-{i}")).collect();
        for (conn, reversed) in [(&mut l, false), (&mut r, true)] {
            for m in &in_order(&members, reversed) {
                exec(conn, &["SADD", "big:set", m]).await;
                exec(conn, &["HSET", "big:hash", m, "v"]).await;
            }
            for i in 0..500 {
                exec(conn, &["SET", &format!("s:{i}"), &format!("value {i}")]).await;
            }
            exec(conn, &["RPUSH", "small:list", "a", "b", "c"]).await;
            exec(conn, &["SET", "ttl:same", "x", "PX", "3600000"]).await;
        }
        let (ls, rs) = (dump(&mut l, "big:set").await, dump(&mut r, "big:set").await);
        assert_ne!(ls, rs, "the two sets must dump differently for this test");
        let report = full_verify(&left, &right).await;
        assert!(report.passed(), "{report:?}");
        assert_eq!(report.keys_compared, 504);

        // One key of each difference on the right side.
        exec(&mut r, &["SET", "s:1", "changed"]).await;
        exec(&mut r, &["DEL", "s:2"]).await;
        exec(&mut r, &["DEL", "s:3"]).await;
        exec(&mut r, &["HSET", "s:3", "f", "v"]).await;
        exec(&mut r, &["PERSIST", "ttl:same"]).await;
        // A TTL on the target only: its PTTL is not asked at first, the count finds it.
        exec(&mut r, &["PEXPIRE", "s:4", "3600000"]).await;
        exec(&mut r, &["RPUSH", "small:list", "d"]).await;
        exec(&mut r, &["SREM", "big:set", "member-7"]).await;
        exec(&mut r, &["SADD", "big:set", "member-x"]).await;
        let report = full_verify(&left, &right).await;
        let reason = |key: &str| {
            report
                .mismatches
                .iter()
                .find(|m| m.key == key)
                .map(|m| m.reason.clone())
                .unwrap_or_else(|| panic!("{key} not reported: {report:?}"))
        };
        assert_eq!(reason("s:1"), "string value differs");
        assert_eq!(reason("s:2"), "missing on the target");
        assert_eq!(
            reason("s:3"),
            "type string on the source, hash on the target"
        );
        assert!(reason("ttl:same").starts_with("TTL "), "{report:?}");
        assert!(
            reason("s:4").starts_with("TTL -1 ms on the source"),
            "{report:?}"
        );
        assert_eq!(reason("small:list"), "list value differs");
        assert_eq!(reason("big:set"), "set value differs");
        assert_eq!(report.mismatch_count, 7, "{report:?}");
    });
}

/// A small reply bound: batches are split, values larger than the bound alone are compared by the typed
/// comparison, and the result is the same.
#[test]
fn full_verify_under_a_small_reply_bound_splits_batches_and_still_finds_the_difference() {
    let env = Env::new();
    let (left, right) = two_empty_groups(&env);
    block_on(async {
        let mut l = connect(&left).await.unwrap();
        let mut r = connect(&right).await.unwrap();
        for conn in [&mut l, &mut r] {
            for i in 0..40 {
                let wide = format!("{i:>40960}");
                exec(conn, &["SET", &format!("wide:{i}"), &wide]).await;
            }
            for i in 0..400 {
                exec(conn, &["SET", &format!("narrow:{i}"), "n"]).await;
            }
        }
        exec(&mut r, &["SETRANGE", "wide:17", "20000", "!"]).await;
        let options = VerifyOptions {
            concurrency: 3,
            batch: 100,
            max_batch_reply_bytes: 16 << 10,
            count_target_ttls: true,
        };
        let report = verify_with(&left, &right, VerifyMode::Full, 5000, &options, &|_, _| {})
            .await
            .unwrap();
        assert_eq!(report.keys_compared, 440, "{report:?}");
        assert_eq!(report.mismatch_count, 1, "{report:?}");
        assert_eq!(report.mismatches[0].key, "wide:17");
        assert_eq!(report.mismatches[0].reason, "string value differs");
    });
}

/// One value in two encodings: a listpack-encoded hash and set on the left, hashtable-encoded ones on the
/// right (the right's listpack and intset limits set to 0), whose DUMP payloads differ in type and
/// layout, compare equal; and a hashtable set whose members differ by one is still found, with one
/// whose members are only in another order passing.
#[test]
fn full_verify_compares_values_not_encodings() {
    let env = Env::new();
    let (left, right) = two_empty_groups(&env);
    block_on(async {
        let mut l = connect(&left).await.unwrap();
        let mut r = connect(&right).await.unwrap();
        for setting in [
            "hash-max-listpack-entries",
            "set-max-intset-entries",
            "zset-max-listpack-entries",
        ] {
            exec(&mut r, &["CONFIG", "SET", setting, "0"]).await;
        }
        for conn in [&mut l, &mut r] {
            exec(
                conn,
                &["HSET", "small:hash", "a", "1", "b", "two", "c", "3"],
            )
            .await;
            exec(conn, &["SADD", "small:ints", "1", "2", "3"]).await;
            exec(conn, &["ZADD", "small:zset", "1", "a", "2.5", "b"]).await;
            exec(conn, &["SET", "s", "v"]).await;
        }
        for key in ["small:hash", "small:ints", "small:zset"] {
            assert_ne!(dump(&mut l, key).await, dump(&mut r, key).await, "{key}");
        }
        // Hashtable sets on both sides, members added in opposite orders.
        let members: Vec<String> = (0..200).map(|i| format!("m-{i}")).collect();
        for (conn, reversed) in [(&mut l, false), (&mut r, true)] {
            for m in &in_order(&members, reversed) {
                exec(conn, &["SADD", "big:same", m]).await;
                exec(conn, &["SADD", "big:other", m]).await;
            }
        }
        let report = full_verify(&left, &right).await;
        assert!(report.passed(), "{report:?}");
        assert_eq!(report.keys_compared, 6);

        exec(&mut r, &["HSET", "small:hash", "b", "2"]).await;
        exec(&mut r, &["SREM", "big:other", "m-5"]).await;
        exec(&mut r, &["SADD", "big:other", "m-x"]).await;
        let report = full_verify(&left, &right).await;
        let mut named: Vec<(&str, &str)> = report
            .mismatches
            .iter()
            .map(|m| (m.key.as_str(), m.reason.as_str()))
            .collect();
        named.sort();
        assert_eq!(
            named,
            [
                ("big:other", "set value differs"),
                ("small:hash", "hash value differs")
            ],
            "{report:?}"
        );
    });
}

/// Hashes and lists, compared by DUMP in the same round trip as the target's PTTL and MGET: equal ones
/// pass, a hashtable hash written in another order too; a changed field value, a list in another order,
/// a TTL only on the target and a hash that became a list are each named.
#[test]
fn full_verify_names_each_difference_of_hashes_and_lists() {
    let env = Env::new();
    let (left, right) = two_empty_groups(&env);
    block_on(async {
        let mut l = connect(&left).await.unwrap();
        let mut r = connect(&right).await.unwrap();
        let fields: Vec<String> = (0..300).map(|i| format!("f-{i}")).collect();
        for (conn, reversed) in [(&mut l, false), (&mut r, true)] {
            for f in &in_order(&fields, reversed) {
                exec(conn, &["HSET", "big:hash", f, "v"]).await;
            }
            exec(conn, &["HSET", "h:value", "a", "1", "b", "2"]).await;
            exec(conn, &["HSET", "h:ttl", "a", "1"]).await;
            exec(conn, &["HSET", "h:type", "a", "1"]).await;
            exec(conn, &["RPUSH", "l:order", "x", "y", "z"]).await;
            exec(conn, &["RPUSH", "l:same", "x", "y", "z"]).await;
        }
        exec(&mut l, &["PEXPIRE", "l:same", "3600000"]).await;
        exec(&mut r, &["PEXPIRE", "l:same", "3600000"]).await;
        let report = full_verify(&left, &right).await;
        assert!(report.passed(), "{report:?}");
        assert_eq!(report.keys_compared, 6);
        // Both sides still: the target's TTL asked only where the source has one, the rest by count.
        let how = report.ttl_check.clone().unwrap_or_default();
        assert!(
            how.contains("(1 on the target, as many as it holds)"),
            "{how}"
        );

        exec(&mut r, &["HSET", "h:value", "b", "3"]).await;
        exec(&mut r, &["PEXPIRE", "h:ttl", "3600000"]).await;
        exec(&mut r, &["DEL", "h:type"]).await;
        exec(&mut r, &["RPUSH", "h:type", "a", "1"]).await;
        exec(&mut r, &["DEL", "l:order"]).await;
        exec(&mut r, &["RPUSH", "l:order", "z", "y", "x"]).await;
        let report = full_verify(&left, &right).await;
        let mut named: Vec<(&str, &str)> = report
            .mismatches
            .iter()
            // The target's TTL has run down by the time it is read: only its source side is exact.
            .map(|m| match m.reason.split_once(", ") {
                Some((source, _)) if m.reason.starts_with("TTL ") => (m.key.as_str(), source),
                _ => (m.key.as_str(), m.reason.as_str()),
            })
            .collect();
        named.sort();
        assert_eq!(
            named,
            [
                ("h:ttl", "TTL -1 ms on the source"),
                ("h:type", "type hash on the source, list on the target"),
                ("h:value", "hash value differs"),
                ("l:order", "list value differs"),
            ],
            "{report:?}"
        );
        // h:ttl's TTL on the target only: the count fell short, and a second pass asked every key's.
        let how = report.ttl_check.clone().unwrap_or_default();
        assert!(
            how.contains("holds 2 keys with a TTL, the pass found 1"),
            "{how}"
        );
    });
}
