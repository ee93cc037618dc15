//! Deterministic test data: a realistic mix of types, some with TTLs, every key name starting with `ecm:`
//! so tests can look for key names in files.
//!
//! Mix (by a hash of the key number): ~70% strings of ~100 bytes (`ecm:user:`, `ecm:session:`, `ecm:page:`),
//! ~10% hashes (`ecm:profile:`), ~7% lists (`ecm:cart:`), ~7% sets (`ecm:tags:`), ~6% sorted sets
//! (`ecm:leaderboard:`); ~20% of all keys expire in 1 to 24 hours.

use redis::aio::MultiplexedConnection;

/// Keys written per pipeline.
pub const BATCH: u64 = 1_000;

/// The prefix of every seeded key.
pub const KEY_PREFIX: &str = "ecm:";

fn mix(mut x: u64) -> u64 {
    // splitmix64
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// The kind of value key `i` holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    String,
    Hash,
    List,
    Set,
    SortedSet,
}

pub fn kind_of(i: u64) -> Kind {
    match mix(i) % 100 {
        0..70 => Kind::String,
        70..80 => Kind::Hash,
        80..87 => Kind::List,
        87..94 => Kind::Set,
        _ => Kind::SortedSet,
    }
}

/// The name of key `i`.
pub fn key_name(i: u64) -> String {
    match kind_of(i) {
        Kind::String => {
            let p = ["user", "session", "page"][(mix(i ^ 0x55) % 3) as usize];
            format!("{KEY_PREFIX}{p}:{i:06}")
        }
        Kind::Hash => format!("{KEY_PREFIX}profile:{i:06}"),
        Kind::List => format!("{KEY_PREFIX}cart:{i:06}"),
        Kind::Set => format!("{KEY_PREFIX}tags:{i:06}"),
        Kind::SortedSet => format!("{KEY_PREFIX}leaderboard:{i:06}"),
    }
}

/// TTL in seconds of key `i`, if it has one.
pub fn ttl_of(i: u64) -> Option<u64> {
    let r = mix(i ^ 0xdead_beef);
    (r % 100 < 20).then(|| 3_600 + (r >> 8) % (23 * 3_600 + 1))
}

fn string_value(i: u64) -> String {
    let mut v = format!(
        "{{\"id\":{i},\"name\":\"customer {i}\",\"plan\":\"{}\",\"visits\":{},\"note\":\"",
        ["free", "pro", "team"][(mix(i) % 3) as usize],
        mix(i) % 10_000
    );
    while v.len() < 98 {
        v.push((b'a' + (v.len() % 26) as u8) as char);
    }
    v.push_str("\"}");
    v
}

/// Queue the commands that write key `i` (and its TTL) on `pipe`; public so a caller that routes keys
/// (the sandbox's cluster seeder) writes the same data.
pub fn add_key(pipe: &mut redis::Pipeline, i: u64) {
    let key = key_name(i);
    let r = mix(i ^ 0x1234);
    match kind_of(i) {
        Kind::String => {
            pipe.set(&key, string_value(i)).ignore();
        }
        Kind::Hash => {
            pipe.hset_multiple(
                &key,
                &[
                    ("name", format!("customer {i}")),
                    ("email", format!("customer{i}@example.com")),
                    ("visits", (r % 1_000).to_string()),
                    (
                        "plan",
                        ["free", "pro", "team"][(r % 3) as usize].to_string(),
                    ),
                ],
            )
            .ignore();
        }
        Kind::List => {
            let items: Vec<String> = (0..1 + r % 5)
                .map(|n| format!("sku-{:05}", (r >> (n * 8)) % 100_000))
                .collect();
            pipe.rpush(&key, items).ignore();
        }
        Kind::Set => {
            let tags: Vec<String> = (0..1 + r % 6)
                .map(|n| format!("tag{}", (r >> (n * 4)) % 40))
                .collect();
            pipe.sadd(&key, tags).ignore();
        }
        Kind::SortedSet => {
            let members: Vec<(u64, String)> = (0..1 + r % 8)
                .map(|n| ((r >> n) % 100_000, format!("player{n}")))
                .collect();
            pipe.zadd_multiple(&key, &members).ignore();
        }
    }
    if let Some(ttl) = ttl_of(i) {
        pipe.expire(&key, ttl as i64).ignore();
    }
}

/// Write `keys` keys (`ecm:...`), pipelined in batches of 1,000; `progress(done, total)` after each batch.
/// Deterministic: seeding twice writes the same names and values (TTLs restart).
pub async fn seed(
    conn: &mut MultiplexedConnection,
    keys: u64,
    progress: &(dyn Fn(u64, u64) + Send + Sync),
) -> redis::RedisResult<()> {
    progress(0, keys);
    let mut done = 0;
    while done < keys {
        let end = (done + BATCH).min(keys);
        let mut pipe = redis::pipe();
        for i in done..end {
            add_key(&mut pipe, i);
        }
        pipe.query_async::<()>(conn).await?;
        done = end;
        progress(done, keys);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mix_is_realistic_and_deterministic() {
        let n = 10_000;
        let count = |k: Kind| (0..n).filter(|i| kind_of(*i) == k).count() as f64 / n as f64;
        assert!((count(Kind::String) - 0.70).abs() < 0.03);
        assert!((count(Kind::Hash) - 0.10).abs() < 0.02);
        assert!((count(Kind::SortedSet) - 0.06).abs() < 0.02);
        let with_ttl = (0..n).filter(|i| ttl_of(*i).is_some()).count() as f64 / n as f64;
        assert!((with_ttl - 0.20).abs() < 0.03);
        assert!(
            (0..n)
                .filter_map(ttl_of)
                .all(|t| (3_600..=86_400).contains(&t))
        );
        assert_eq!(key_name(123), key_name(123));
        assert!(key_name(123).starts_with("ecm:") && key_name(123).ends_with(":000123"));
        let len = string_value(7).len();
        assert!((95..=110).contains(&len), "{len}");
    }
}
