//! The proof that lets `verify --full` ask the target the TTL only of the keys that have one on the
//! source: the keys it did not ask have none on the target either, by count.
//!
//! Every key the pass compares was asked on the source; where the source said it has a TTL, the target
//! was asked too, and each that has one there was counted. The target's `INFO keyspace` counts its keys
//! with a TTL (`expires`). When both sides held still during the pass and SCAN returned each source key
//! once, the counted keys are distinct keys of the target with a TTL; if they are as many as the target
//! holds, they are all of them, and no key the pass did not ask has one. "Held still" is read before and
//! after the pass on every primary of both sides: the same keys and `expires` per database, and no key
//! expired or evicted (`expired_keys`, `evicted_keys`): a key that expires or is written while the pass
//! runs could trade places with one that gains a TTL. "Once": the keys compared per database equal the
//! source's own count (SCAN may return a key twice while a table is resized). Where any of it fails the
//! proof says why, and the pass runs again asking every key's TTL.

use std::collections::{BTreeMap, BTreeSet};

use super::routing::Routed;
use crate::data::connect::{RedisEndpoint, connect};
use crate::data::error::{DataError, Role};

/// What a pass saw in one database: keys compared, and of them those the target said have a TTL.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(super) struct Seen {
    pub(super) compared: u64,
    pub(super) target_expiring: u64,
}

/// One server's (or a side's, summed) keys and keys with a TTL per database, and keys it expired or
/// evicted since it started.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(super) struct Counts {
    /// db → (keys, keys with a TTL)
    dbs: BTreeMap<i64, (u64, u64)>,
    expired: u64,
    evicted: u64,
}

impl Counts {
    /// Keys per database.
    pub(super) fn keys_per_db(&self) -> BTreeMap<i64, u64> {
        self.dbs
            .iter()
            .map(|(db, (keys, _))| (*db, *keys))
            .collect()
    }

    /// The counts in the text of `INFO keyspace` and `INFO stats`.
    pub(super) fn parse(info: &str) -> Counts {
        let mut out = Counts::default();
        for line in info.lines().map(str::trim) {
            if let Some(n) = line.strip_prefix("expired_keys:") {
                out.expired = n.parse().unwrap_or(0);
            } else if let Some(n) = line.strip_prefix("evicted_keys:") {
                out.evicted = n.parse().unwrap_or(0);
            } else if let Some((db, fields)) =
                line.strip_prefix("db").and_then(|r| r.split_once(':'))
                && let Ok(db) = db.parse()
            {
                let field = |name: &str| {
                    fields
                        .split(',')
                        .find_map(|f| f.strip_prefix(name)?.strip_prefix('='))
                        .and_then(|n| n.parse().ok())
                        .unwrap_or(0)
                };
                out.dbs.insert(db, (field("keys"), field("expires")));
            }
        }
        out
    }

    fn add(&mut self, other: Counts) {
        for (db, (keys, expires)) in other.dbs {
            let sum = self.dbs.entry(db).or_default();
            (sum.0, sum.1) = (sum.0 + keys, sum.1 + expires);
        }
        self.expired += other.expired;
        self.evicted += other.evicted;
    }
}

/// Both sides' counts, each summed over its primaries, at one moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Still {
    source: Counts,
    target: Counts,
}

impl Still {
    pub(super) async fn read(routed: &Routed) -> Result<Still, DataError> {
        let side = |role: Role| async move {
            let reads = routed
                .topology(role)
                .shards
                .iter()
                .map(|shard| server_counts(&shard.endpoint, role));
            let mut sum = Counts::default();
            for counts in futures_util::future::try_join_all(reads).await? {
                sum.add(counts);
            }
            Ok::<_, DataError>(sum)
        };
        let (source, target) = tokio::try_join!(side(Role::Source), side(Role::Target))?;
        Ok(Still { source, target })
    }
}

async fn server_counts(endpoint: &RedisEndpoint, role: Role) -> Result<Counts, DataError> {
    let failed = |e: redis::RedisError| DataError::redis(endpoint, &e).role(role).context("verify");
    let mut conn = connect(endpoint).await.map_err(|e| e.role(role))?;
    // Two commands, not `INFO keyspace stats`: a server before 7.0 reads one section only.
    let (keyspace, stats): (String, String) = redis::pipe()
        .cmd("INFO")
        .arg("keyspace")
        .cmd("INFO")
        .arg("stats")
        .query_async(&mut conn)
        .await
        .map_err(failed)?;
    Ok(Counts::parse(&format!("{keyspace}\n{stats}")))
}

/// Whether the pass between `before` and `after`, which saw `seen`, proves that the keys whose TTL it
/// did not ask the target have none there: how, or why not.
pub(super) fn prove(
    before: &Still,
    after: &Still,
    seen: &BTreeMap<i64, Seen>,
) -> Result<String, String> {
    for (side, then, now) in [
        ("source", &before.source, &after.source),
        ("target", &before.target, &after.target),
    ] {
        if then != now {
            return Err(format!(
                "the {side} changed during the pass (keys, keys with a TTL, or keys expired or \
                 evicted), so counting its keys with a TTL proves nothing"
            ));
        }
    }
    let dbs: BTreeSet<i64> = (after.source.dbs.keys())
        .chain(after.target.dbs.keys())
        .chain(seen.keys())
        .copied()
        .collect();
    let mut expiring = 0;
    for db in dbs {
        let saw = seen.get(&db).copied().unwrap_or_default();
        let (source_keys, _) = after.source.dbs.get(&db).copied().unwrap_or_default();
        let (_, target_expires) = after.target.dbs.get(&db).copied().unwrap_or_default();
        if saw.compared != source_keys {
            return Err(format!(
                "db{db}: the pass compared {} keys where the source counts {source_keys} (a key \
                 returned twice by SCAN, or keys expired but not yet reclaimed)",
                saw.compared
            ));
        }
        if saw.target_expiring != target_expires {
            return Err(format!(
                "db{db}: the target holds {target_expires} keys with a TTL, the pass found {} of them",
                saw.target_expiring
            ));
        }
        expiring += target_expires;
    }
    Ok(format!(
        "the target's TTL asked of the keys with a TTL on the source ({expiring} on the target, as many \
         as it holds); the others proved to have none by that count, both sides unchanged during the pass"
    ))
}

#[cfg(test)]
mod tests {
    use super::{BTreeMap, Counts, Seen, Still, prove};

    const INFO: &str = "# Keyspace\r\ndb0:keys=10,expires=2,avg_ttl=100,subexpiry=0\r\n\
                        db3:keys=4,expires=0,avg_ttl=0\r\n# Stats\r\nexpired_keys:7\r\nevicted_keys:1\r\n";

    fn still(source_keys: u64, target_expires: u64, expired: u64) -> Still {
        let side = |keys, expires| Counts {
            dbs: BTreeMap::from([(0, (keys, expires))]),
            expired,
            evicted: 0,
        };
        Still {
            source: side(source_keys, 2),
            target: side(source_keys, target_expires),
        }
    }

    fn seen(compared: u64, target_expiring: u64) -> BTreeMap<i64, Seen> {
        BTreeMap::from([(
            0,
            Seen {
                compared,
                target_expiring,
            },
        )])
    }

    #[test]
    fn counts_read_keys_and_ttls_per_database_and_the_expired_and_evicted() {
        let counts = Counts::parse(INFO);
        assert_eq!(counts.dbs, BTreeMap::from([(0, (10, 2)), (3, (4, 0))]));
        assert_eq!((counts.expired, counts.evicted), (7, 1));
    }

    #[test]
    fn the_proof_holds_only_when_every_key_with_a_ttl_on_the_target_was_found() {
        assert!(prove(&still(10, 2, 0), &still(10, 2, 0), &seen(10, 2)).is_ok());
        // One key has a TTL on the target that the pass did not ask.
        let short = prove(&still(10, 3, 0), &still(10, 3, 0), &seen(10, 2)).unwrap_err();
        assert!(
            short.contains("holds 3 keys with a TTL, the pass found 2"),
            "{short}"
        );
        // A key returned twice would count one found key twice.
        let twice = prove(&still(10, 3, 0), &still(10, 3, 0), &seen(11, 3)).unwrap_err();
        assert!(
            twice.contains("compared 11 keys where the source counts 10"),
            "{twice}"
        );
    }

    #[test]
    fn the_proof_fails_when_a_side_changed_during_the_pass() {
        // A key expired while the pass ran: it may have traded places with one that gained a TTL.
        let why = prove(&still(10, 2, 0), &still(10, 2, 1), &seen(10, 2)).unwrap_err();
        assert!(why.contains("the source changed"), "{why}");
    }
}
