//! The copier's bulk lane (`data::resp`) against real servers: replies far larger than one read, lanes
//! whose connections the server closed, and a target that refuses the AUTH token.

use ecmigrate::data::connect::{RedisEndpoint, connect};
use ecmigrate::data::copier::{Copier, CopyOptions};
use ecmigrate::data::verify::{VerifyMode, verify};

use crate::harness::{Env, block_on, exec, noise, wait_for};

/// Two plain sandbox groups, `left` with `keys` seeded keys and an empty `right`; their primaries.
fn two_groups(env: &Env, keys: u64) -> (RedisEndpoint, RedisEndpoint) {
    for (group, n) in [("left", keys), ("right", 0)] {
        env.ok(&[
            "sandbox",
            "up",
            "--group",
            group,
            "--replicas",
            "0",
            "--keys",
            &n.to_string(),
        ]);
    }
    let status = env.sandbox_status();
    (
        RedisEndpoint::plain("127.0.0.1", Env::primary_port(&status, "left")),
        RedisEndpoint::plain("127.0.0.1", Env::primary_port(&status, "right")),
    )
}

/// `wide:0` … `wide:{n-1}`, 40 KiB each.
async fn seed_wide(c: &mut redis::aio::MultiplexedConnection, n: u32) {
    for i in 0..n {
        exec(c, &["SET", &format!("wide:{i}"), &pattern(i, 40 * 1024)]).await;
    }
}

/// Every one of the `keys` keys equal on both sides (full verify), and `ttl_key`'s hour-long TTL kept.
async fn assert_exact(left: &RedisEndpoint, right: &RedisEndpoint, keys: u64, ttl_key: &str) {
    let report = verify(left, right, VerifyMode::Full, 5000, &|_, _| {})
        .await
        .unwrap();
    assert!(report.passed(), "{report:?}");
    assert_eq!(report.keys_compared, keys);
    let mut t = connect(right).await.unwrap();
    let ttl: i64 = redis::cmd("PTTL")
        .arg(ttl_key)
        .query_async(&mut t)
        .await
        .unwrap();
    assert!(ttl > 3_500_000, "{ttl_key} lost its TTL: {ttl}");
}

#[test]
fn replies_many_reads_long_and_lanes_the_server_closed_still_copy_exactly() {
    let env = Env::new();
    let (left, right) = two_groups(&env, 0);
    block_on(async {
        let mut c = connect(&left).await.unwrap();
        // 300 values of 40 KiB: 12 MB of replies, split by the 2 MiB bound into batches each read in
        // many pieces.
        seed_wide(&mut c, 300).await;
        exec(&mut c, &["SET", "ttl:one", "x", "PX", "3600000"]).await;
        exec(&mut c, &["HSET", "hash:one", "f", "v"]).await;
        let options = CopyOptions {
            batch: 500,
            concurrency: 2,
            ..CopyOptions::default()
        };
        let copier = Copier::new(left.clone(), right.clone(), options);
        copier.copy_all(&|_, _| {}).await.expect("first copy");
        assert_eq!(copier.stats.counts().keys_copied, 302);

        // The source closes every connection but this one (CLIENT KILL skips the caller): the copier's
        // lanes are now dead, and the next batch must open new ones instead of failing.
        let killed: i64 = redis::cmd("CLIENT")
            .arg("KILL")
            .arg("TYPE")
            .arg("normal")
            .query_async(&mut c)
            .await
            .unwrap();
        assert!(
            killed >= 1,
            "the copier's connections were not open: {killed}"
        );
        exec(&mut c, &["SET", "wide:0", "changed after the kill"]).await;
        exec(&mut c, &["DEL", "wide:1"]).await;
        copier
            .copy_keys(0, &[b"wide:0".to_vec(), b"wide:1".to_vec()])
            .await
            .expect("a batch on lanes the source closed");
        let counts = copier.stats.counts();
        assert_eq!((counts.keys_copied, counts.keys_deleted), (303, 1));

        assert_exact(&left, &right, 301, "ttl:one").await;
    });
}

/// `len` bytes that differ from one key to the next.
fn pattern(seed: u32, len: usize) -> String {
    (0..len)
        .map(|j| char::from(b'a' + ((seed as usize * 7 + j) % 26) as u8))
        .collect()
}

#[test]
fn batches_whose_values_exceed_the_reply_bound_are_split_and_big_values_measured_first() {
    let env = Env::new();
    let (left, right) = two_groups(&env, 0);
    block_on(async {
        let mut c = connect(&left).await.unwrap();
        // 200 values of 40 KiB: 8 MB of replies for one batch, against a 1 MiB bound.
        seed_wide(&mut c, 200).await;
        // Alone above the reply bound but below the RESTORE bound: read alone.
        exec(&mut c, &["SET", "alone", &pattern(1, 1536 * 1024)]).await;
        // Above the RESTORE bound, with a TTL: measured by STRLEN, then copied in chunks.
        exec(
            &mut c,
            &["SET", "huge", &pattern(2, 4 << 20), "PX", "3600000"],
        )
        .await;
        exec(&mut c, &["RPUSH", "list", "a", "b", "c"]).await;
        // A list whose DUMP (4 MB of incompressible items) is above the RESTORE bound: read alone, its
        // reply bounded, then copied type-wise in chunks.
        let mut state = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..16 {
            let mut push = redis::cmd("RPUSH");
            push.arg("noisy:list");
            for _ in 0..250 {
                push.arg(noise(&mut state, 1024));
            }
            let _: i64 = push.query_async(&mut c).await.unwrap();
        }
        let options = CopyOptions {
            batch: 500,
            concurrency: 2,
            max_batch_reply_bytes: 1 << 20,
            max_restore_bytes: 3 << 20,
            ..CopyOptions::default()
        };
        let copier = Copier::new(left.clone(), right.clone(), options);
        copier.copy_all(&|_, _| {}).await.expect("copy");
        let counts = copier.stats.counts();
        assert_eq!(counts.keys_copied, 204, "{counts:?}");
        assert_eq!(counts.big_keys, 2, "{counts:?}");
        assert!(
            counts.oversized_batches >= 3,
            "no batch was split: {counts:?}"
        );

        assert_exact(&left, &right, 204, "huge").await;
    });
}

#[test]
fn a_target_that_refuses_writes_ends_the_copy_with_its_error_instead_of_hanging() {
    let env = Env::new();
    // 40,000 keys: 80 batches of 500, far more than the scanner's channel holds for 2 lanes.
    let (left, right) = two_groups(&env, 40_000);
    block_on(async {
        let mut c = connect(&right).await.unwrap();
        exec(&mut c, &["CONFIG", "SET", "maxmemory", "1mb"]).await;
        exec(&mut c, &["CONFIG", "SET", "maxmemory-policy", "noeviction"]).await;
    });
    let mut running = env.spawn(&[
        "copy",
        &format!("redis://127.0.0.1:{}", left.port),
        &format!("redis://127.0.0.1:{}", right.port),
        "--concurrency",
        "2",
    ]);
    wait_for(
        "ecmigrate copy to end after the target refused its writes",
        std::time::Duration::from_secs(60),
        || running.try_wait().unwrap().is_some(),
    );
    let run = running.finish();
    assert_ne!(run.code, 0, "{run:?}");
    assert!(run.stderr.contains("OOM"), "{run:?}");
}

#[test]
fn a_target_that_refuses_the_token_fails_the_copy_without_printing_it() {
    let mut env = Env::new();
    let (left, right) = two_groups(&env, 50);
    block_on(async {
        let mut c = connect(&right).await.unwrap();
        exec(
            &mut c,
            &["CONFIG", "SET", "requirepass", "the-right-token-1234567890"],
        )
        .await;
    });
    let wrong = "a-wrong-token-that-must-never-be-printed";
    env.set_env("WRONG_TOKEN", wrong);
    let run = env.run(&[
        "copy",
        &format!("redis://127.0.0.1:{}", left.port),
        &format!("redis://127.0.0.1:{}", right.port),
        "--dst-password-env",
        "WRONG_TOKEN",
    ]);
    assert_ne!(run.code, 0, "{run:?}");
    let output = run.all_output();
    assert!(!output.contains(wrong), "the token was printed: {output}");
    assert!(
        output.contains(&format!("127.0.0.1:{}", right.port)),
        "the error does not name the target: {output}"
    );
    assert!(
        output.to_lowercase().contains("auth") || output.contains("WRONGPASS"),
        "the error does not say the token was refused: {output}"
    );
}
