//! The copier as callers see it: the topologies of both sides, and the routing of every key to the pair
//! of primaries that holds it on the source and owns its slot on the target. A single primary is one
//! shard; between two single primaries every batch goes whole to the one pair, as before clusters.
//!
//! A slot that moves while a batch is copied (MOVED, ASK, TRYAGAIN, CLUSTERDOWN from either side) makes
//! the copier read both topologies again and copy the batch again (a batch is idempotent: it reads the
//! source's current state and writes it), a bounded number of times.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Mutex;

use super::{CopyCounts, CopyOptions, CopyStats, Err, Pair, rerr};
use crate::data::connect::{RedisEndpoint, connect};
use crate::data::error::{DataError, Role};
use crate::data::topology::Topology;

/// Times a batch refused with a redirect is copied again on fresh topologies before its error stands.
const REDIRECT_ATTEMPTS: u32 = 10;

/// Copies keys between two endpoints, each a single primary or a cluster.
pub struct Copier {
    source: RedisEndpoint,
    target: RedisEndpoint,
    pub(super) options: CopyOptions,
    /// Indexes (slot order) of the source's primaries to copy; all when `None`.
    source_shards: Option<Vec<usize>>,
    routes: Mutex<Option<Arc<Routes>>>,
    pub stats: Arc<CopyStats>,
}

/// Both topologies as last read, and a [`Pair`] for every (source primary, target primary).
pub(super) struct Routes {
    pub(super) source: Topology,
    pub(super) target: Topology,
    /// `pairs[source shard][target shard]`.
    pub(super) pairs: Vec<Vec<Arc<Pair>>>,
    /// Lanes per pair: the copy's concurrency shared by the source primaries that are scanned at once.
    pub(super) lanes: usize,
    /// Counts the reads of the topologies, so that concurrent batches refused alike read them once.
    generation: u64,
}

impl Routes {
    /// Whether neither side is a cluster: every key goes to the one pair.
    fn single(&self) -> bool {
        !self.source.cluster && !self.target.cluster
    }
}

impl Copier {
    pub fn new(source: RedisEndpoint, target: RedisEndpoint, options: CopyOptions) -> Copier {
        Copier {
            source,
            target,
            options,
            source_shards: None,
            routes: Mutex::new(None),
            stats: Arc::new(CopyStats::default()),
        }
    }

    /// Copy only the keys of these primaries of the source (0-based, in slot order).
    pub fn with_source_shards(mut self, shards: Vec<usize>) -> Copier {
        self.source_shards = Some(shards);
        self
    }

    /// Where keys are copied from and to (the endpoints given, whatever node of a cluster they name).
    pub fn endpoints(&self) -> (&RedisEndpoint, &RedisEndpoint) {
        (&self.source, &self.target)
    }

    pub fn source(&self) -> &RedisEndpoint {
        &self.source
    }

    /// The source's and the target's topologies (read on first use).
    pub async fn topologies(&self) -> Result<(Topology, Topology), Err> {
        let routes = self.routes().await?;
        Ok((routes.source.clone(), routes.target.clone()))
    }

    /// Read both topologies again on next use (after a failover or a slot migration was seen).
    pub async fn forget_routes(&self) {
        *self.routes.lock().await = None;
    }

    pub(super) async fn routes(&self) -> Result<Arc<Routes>, Err> {
        let mut routes = self.routes.lock().await;
        if let Some(r) = &*routes {
            return Ok(r.clone());
        }
        let fresh = Arc::new(self.read_routes(0).await?);
        *routes = Some(fresh.clone());
        Ok(fresh)
    }

    /// Read both topologies again, unless a batch refused alike already did since `seen` was read.
    async fn refresh(&self, seen: &Routes) -> Result<Arc<Routes>, Err> {
        let mut routes = self.routes.lock().await;
        if let Some(r) = &*routes
            && r.generation != seen.generation
        {
            return Ok(r.clone());
        }
        let fresh = Arc::new(self.read_routes(seen.generation + 1).await?);
        *routes = Some(fresh.clone());
        Ok(fresh)
    }

    async fn read_routes(&self, generation: u64) -> Result<Routes, Err> {
        let source = Topology::discover(&self.source)
            .await
            .map_err(|e| e.role(Role::Source))?;
        let target = Topology::discover(&self.target)
            .await
            .map_err(|e| e.role(Role::Target))?;
        if let Some(wanted) = &self.source_shards
            && let Some(&bad) = wanted.iter().find(|&&i| i >= source.shards.len())
        {
            return Err(DataError::NoSuchShard {
                index: bad,
                last: source.shards.len() - 1,
                source_shape: source.describe(),
            });
        }
        let scanned = self
            .source_shards
            .as_ref()
            .map_or(source.shards.len(), Vec::len)
            .max(1);
        // The copy's concurrency is shared by the source primaries scanned at once, so the batches in
        // flight, and so the memory they hold, stay what a single primary's copy holds.
        let lanes = self.options.concurrency.max(1).div_ceil(scanned);
        let slotted = source.cluster || target.cluster;
        let options = CopyOptions {
            concurrency: lanes,
            ..self.options.clone()
        };
        let pairs = source
            .shards
            .iter()
            .map(|s| {
                target
                    .shards
                    .iter()
                    .map(|t| {
                        Arc::new(Pair::new(
                            s.endpoint.clone(),
                            t.endpoint.clone(),
                            options.clone(),
                            slotted,
                            self.stats.clone(),
                        ))
                    })
                    .collect()
            })
            .collect();
        Ok(Routes {
            source,
            target,
            pairs,
            lanes,
            generation,
        })
    }

    /// The source's primaries to scan: those selected, or all.
    pub(super) fn scanned_shards(&self, routes: &Routes) -> Vec<usize> {
        match &self.source_shards {
            Some(list) => list
                .iter()
                .copied()
                .collect::<BTreeSet<_>>()
                .into_iter()
                .collect(),
            None => (0..routes.source.shards.len()).collect(),
        }
    }

    /// Databases that hold keys on the scanned primaries of the source, and their keys (`INFO keyspace`,
    /// summed over the primaries).
    pub async fn source_databases(&self) -> Result<BTreeMap<i64, u64>, Err> {
        let routes = self.routes().await?;
        let mut dbs = BTreeMap::new();
        for s in self.scanned_shards(&routes) {
            let endpoint = &routes.source.shards[s].endpoint;
            let mut conn = connect(endpoint).await.map_err(|e| e.role(Role::Source))?;
            let counts = crate::data::verify::keyspace(&mut conn)
                .await
                .map_err(rerr(endpoint, Role::Source))?;
            for (db, keys) in counts {
                *dbs.entry(db).or_insert(0) += keys;
            }
        }
        Ok(dbs)
    }

    /// Copy every key of every database of the scanned primaries of the source (SCAN, one scanner per
    /// primary, all at once). `progress(done, total)` is called per batch.
    pub async fn copy_all(
        &self,
        progress: &(dyn Fn(u64, u64) + Send + Sync),
    ) -> Result<CopyCounts, Err> {
        let dbs = self.source_databases().await?;
        let total: u64 = dbs.values().sum();
        let routes = self.routes().await?;
        for db in dbs.keys() {
            let scans = self
                .scanned_shards(&routes)
                .into_iter()
                .map(|s| self.copy_shard_db(&routes, s, *db, total, progress));
            futures_util::future::try_join_all(scans).await?;
        }
        Ok(self.stats.counts())
    }

    /// Copy these keys of database `db` from the source's current state: copied if present, deleted on the
    /// target if gone (the replay of captured changes).
    pub async fn copy_keys(&self, db: i64, keys: &[Vec<u8>]) -> Result<(), Err> {
        if keys.is_empty() {
            return Ok(());
        }
        let lanes = self.routes().await?.lanes;
        let batches: Vec<Vec<&[u8]>> = keys
            .chunks(self.options.batch.max(1))
            .map(|chunk| chunk.iter().map(Vec::as_slice).collect())
            .collect();
        // At most one batch per lane in flight.
        for wave in batches.chunks(lanes) {
            let jobs = wave
                .iter()
                .enumerate()
                .map(|(lane, batch)| self.copy_routed(db, lane, batch));
            futures_util::future::try_join_all(jobs).await?;
        }
        Ok(())
    }

    /// Copy `keys` of database `db` on lane `lane` of the pairs they route to (one pair per target
    /// primary at once); a batch refused with a redirect is copied again on fresh topologies.
    pub(super) async fn copy_routed(
        &self,
        db: i64,
        lane: usize,
        keys: &[&[u8]],
    ) -> Result<(), Err> {
        let mut routes = self.routes().await?;
        let mut attempt = 0;
        loop {
            let result = if routes.single() {
                routes.pairs[0][0].copy_on(db, lane, keys).await
            } else {
                let mut groups: BTreeMap<(usize, usize), Vec<&[u8]>> = BTreeMap::new();
                for &key in keys {
                    let route = (routes.source.shard_of(key), routes.target.shard_of(key));
                    groups.entry(route).or_default().push(key);
                }
                let jobs = groups.into_iter().map(|((s, t), group)| {
                    let pair = routes.pairs[s][t].clone();
                    async move { pair.copy_on(db, lane, &group).await }
                });
                futures_util::future::try_join_all(jobs).await.map(|_| ())
            };
            match result {
                Err(e) if is_redirect(&e) && attempt < REDIRECT_ATTEMPTS => {
                    attempt += 1;
                    // A slot in migration answers ASK until it is done: give it a moment, growing.
                    tokio::time::sleep(Duration::from_millis(20 * u64::from(attempt))).await;
                    routes = self.refresh(&routes).await?;
                }
                other => return other,
            }
        }
    }
}

/// An error that says the key's slot is served elsewhere or is moving: MOVED, ASK, TRYAGAIN, CLUSTERDOWN.
pub(super) fn is_redirect(e: &DataError) -> bool {
    let DataError::Refused { message, .. } = e else {
        return false;
    };
    [": MOVED ", ": ASK ", ": TRYAGAIN", ": CLUSTERDOWN"]
        .iter()
        .any(|p| message.contains(p))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::Peer;

    #[test]
    fn moved_and_ask_replies_are_redirects_and_other_refusals_are_not() {
        let refused = |m: &str| DataError::Refused {
            peer: Peer::from(&RedisEndpoint::plain("h", 1)),
            command: None,
            message: format!("copy: the target refused a write: {m}"),
        };
        assert!(is_redirect(&refused("MOVED 3999 127.0.0.1:6381")));
        assert!(is_redirect(&refused("ASK 3999 127.0.0.1:6381")));
        assert!(is_redirect(&refused(
            "TRYAGAIN Multiple keys request during rehashing of slot"
        )));
        assert!(!is_redirect(&refused("OOM command not allowed")));
        assert!(!is_redirect(&refused(
            "CROSSSLOT Keys in request don't hash to the same slot"
        )));
    }
}
