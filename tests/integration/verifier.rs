//! The verifier against two real redis-server groups seeded identically: it passes when they match and
//! names the keys when a value, a type, a TTL or a key differs.

use ecmigrate::data::connect::{RedisEndpoint, connect};
use ecmigrate::data::verify::{VerifyMode, verify};

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
