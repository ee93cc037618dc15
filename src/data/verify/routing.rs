//! The verifier over topologies: each side a single primary or a cluster. Keys are counted on every
//! primary and summed, sampled or scanned on each source primary, and each key compared between the
//! source primary that holds it and the target primary that owns its slot, on connections kept per
//! (database, source primary, target primary) and shared by the batches in flight.

use std::collections::{BTreeMap, btree_map::Entry};

use tokio::sync::Mutex;

use super::key_counts;
use super::typed::Sides;
use crate::data::connect::RedisEndpoint;
use crate::data::error::{DataError, Role};
use crate::data::topology::Topology;

/// Both topologies and the connections opened so far.
pub(super) struct Routed {
    pub(super) source: Topology,
    pub(super) target: Topology,
    sides: Mutex<BTreeMap<(i64, usize, usize), Sides>>,
}

impl Routed {
    pub(super) async fn discover(
        source: &RedisEndpoint,
        target: &RedisEndpoint,
    ) -> Result<Routed, DataError> {
        Ok(Routed {
            source: Topology::discover(source)
                .await
                .map_err(|e| e.role(Role::Source))?,
            target: Topology::discover(target)
                .await
                .map_err(|e| e.role(Role::Target))?,
            sides: Mutex::new(BTreeMap::new()),
        })
    }

    pub(super) fn topology(&self, role: Role) -> &Topology {
        match role {
            Role::Source => &self.source,
            Role::Target => &self.target,
        }
    }

    /// Key count per database of each primary of one side (`INFO keyspace`), in slot order.
    pub(super) async fn shard_counts(
        &self,
        role: Role,
    ) -> Result<Vec<BTreeMap<i64, u64>>, DataError> {
        let mut out = Vec::new();
        for shard in &self.topology(role).shards {
            out.push(key_counts(&shard.endpoint, role).await?);
        }
        Ok(out)
    }

    /// The endpoints of one side's primaries in database `db`.
    pub(super) fn endpoints(&self, role: Role, db: i64) -> Vec<RedisEndpoint> {
        let topology = self.topology(role);
        topology
            .shards
            .iter()
            .map(|s| s.endpoint.with_db(db))
            .collect()
    }

    /// The connections between source primary `s` and target primary `t` in database `db` (opened on
    /// first use; a clone shares them).
    pub(super) async fn sides(&self, db: i64, s: usize, t: usize) -> Result<Sides, DataError> {
        let mut sides = self.sides.lock().await;
        Ok(match sides.entry((db, s, t)) {
            Entry::Occupied(e) => e.get().clone(),
            Entry::Vacant(e) => {
                let source = &self.source.shards[s].endpoint;
                let target = &self.target.shards[t].endpoint;
                e.insert(Sides::open(source, target, db).await?).clone()
            }
        })
    }

    /// The keys of `batch` (of database `db`) that differ, with what differs: each compared between the
    /// primaries that hold its slot.
    pub(super) async fn compare(
        &self,
        db: i64,
        batch: &[Vec<u8>],
        ttl_tolerance_ms: i64,
    ) -> Result<Vec<(Vec<u8>, String)>, DataError> {
        Ok(self.compare_counting(db, batch, ttl_tolerance_ms).await?.0)
    }

    /// [`Routed::compare`], and how many keys of `batch` have a TTL on the target.
    pub(super) async fn compare_counting(
        &self,
        db: i64,
        batch: &[Vec<u8>],
        ttl_tolerance_ms: i64,
    ) -> Result<(Vec<(Vec<u8>, String)>, u64), DataError> {
        let mut groups: BTreeMap<(usize, usize), Vec<Vec<u8>>> = BTreeMap::new();
        for key in batch {
            let route = (self.source.shard_of(key), self.target.shard_of(key));
            groups.entry(route).or_default().push(key.clone());
        }
        let (mut differ, mut target_expiring) = (Vec::new(), 0);
        for ((s, t), keys) in groups {
            let mut sides = self.sides(db, s, t).await?;
            let found = sides.compare(&keys, ttl_tolerance_ms).await?;
            target_expiring += found.target_expiring;
            differ.extend(found.differ.into_iter().map(|(k, why)| (k.to_vec(), why)));
        }
        Ok((differ, target_expiring))
    }
}

/// Keys to sample on a primary holding `shard` of the `total` keys of a database, for `n` in all.
pub(super) fn sample_share(n: u64, shard: u64, total: u64) -> u64 {
    (n.min(total) * shard).div_ceil(total.max(1)).min(shard)
}

#[cfg(test)]
mod tests {
    use super::sample_share;

    #[test]
    fn samples_are_shared_by_primaries_in_proportion_to_their_keys() {
        assert_eq!(sample_share(1000, 5000, 5000), 1000);
        assert_eq!(sample_share(1000, 10, 10), 10);
        assert_eq!(sample_share(1000, 1000, 3000), 334);
        assert_eq!(sample_share(1000, 0, 3000), 0);
        assert_eq!(sample_share(10, 3, 4), 3);
    }
}
