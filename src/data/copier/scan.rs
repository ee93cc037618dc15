//! What SCAN drives: the full copy (a scanner per source primary feeding the keys of each database, in
//! batches as [`crate::data::keyscan`] orders them, through a bounded channel to one worker per lane)
//! and the reconcile's second half (deleting the target's keys that the source no longer has, primary
//! by primary).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use redis::aio::MultiplexedConnection;
use tokio::sync::{Mutex, mpsc};

use super::route::Routes;
use super::{Copier, Err, rerr};
use crate::data::connect::{RedisEndpoint, connect};
use crate::data::error::{DataError, Peer, Role};
use crate::data::keyscan::{Order, scan_keys};
use crate::data::resp::{KeyBatch, PipeConn};

impl Copier {
    /// Copy database `db` of source primary `shard`: its own scanner feeding its own workers, one per
    /// lane, each routing its batch to the pairs of the target's primaries.
    pub(super) async fn copy_shard_db(
        &self,
        routes: &Routes,
        shard: usize,
        db: i64,
        total: u64,
        progress: &(dyn Fn(u64, u64) + Send + Sync),
    ) -> Result<(), Err> {
        let workers = routes.lanes;
        // Bounded: the scanner waits when the workers fall behind, so memory does not grow with the keyspace.
        let (tx, rx) = mpsc::channel::<KeyBatch>(workers * 2);
        let rx = Arc::new(Mutex::new(rx));
        let source = routes.source.shards[shard].endpoint.with_db(db);
        let scan_conn = PipeConn::open(&source)
            .await
            .map_err(|e| e.role(Role::Source))?;
        let order = Order::between(&routes.source, &routes.target);
        let scanner = scan_keys(
            scan_conn,
            Peer::from(&source),
            "copy",
            self.options.batch,
            order,
            tx,
        );
        let work = (0..workers).map(|lane| {
            let rx = rx.clone();
            async move {
                loop {
                    let next = rx.lock().await.recv().await;
                    let Some(found) = next else {
                        return Ok::<(), Err>(());
                    };
                    let keys = found.keys();
                    self.copy_routed(db, lane, &keys).await?;
                    let done = self
                        .stats
                        .keys_scanned
                        .fetch_add(keys.len() as u64, Ordering::Relaxed)
                        + keys.len() as u64;
                    progress(done.min(total), total);
                }
            }
        });
        // try_join: a worker's error drops the scanner, which would otherwise wait forever on a full
        // channel that no worker reads any more.
        tokio::try_join!(scanner, futures_util::future::try_join_all(work))?;
        Ok(())
    }
}

impl Copier {
    /// Delete keys of the target that the source no longer has (the second half of a reconcile pass):
    /// every primary of the target scanned, each key looked up on the source primary that holds its
    /// slot. With `--source-shards`, only keys of the slots of the primaries copied are judged.
    pub async fn delete_extraneous(&self) -> Result<u64, Err> {
        let routes = self.routes().await?;
        let scanned: BTreeSet<usize> = self.scanned_shards(&routes).into_iter().collect();
        let mut deleted = 0u64;
        for shard in &routes.target.shards {
            let on_target = |e: DataError| e.role(Role::Target);
            let mut dst_conn = connect(&shard.endpoint).await.map_err(on_target)?;
            let dbs = crate::data::verify::keyspace(&mut dst_conn)
                .await
                .map_err(rerr(&shard.endpoint, Role::Target))?;
            for db in dbs.keys() {
                let target = shard.endpoint.with_db(*db);
                deleted += self
                    .delete_extraneous_in(&routes, &scanned, &target)
                    .await?;
            }
        }
        self.stats
            .keys_deleted
            .fetch_add(deleted, Ordering::Relaxed);
        Ok(deleted)
    }

    /// [`Copier::delete_extraneous`] in one database of one target primary.
    async fn delete_extraneous_in(
        &self,
        routes: &Routes,
        scanned: &BTreeSet<usize>,
        target: &RedisEndpoint,
    ) -> Result<u64, Err> {
        let on_target = |e: DataError| e.role(Role::Target);
        let mut scan = connect(target).await.map_err(on_target)?;
        let mut dst = connect(target).await.map_err(on_target)?;
        let mut sources: BTreeMap<usize, (RedisEndpoint, MultiplexedConnection)> = BTreeMap::new();
        let mut deleted = 0u64;
        let mut cursor: u64 = 0;
        loop {
            let (next, keys): (u64, Vec<Vec<u8>>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("COUNT")
                .arg(self.options.batch)
                .query_async(&mut scan)
                .await
                .map_err(rerr(target, Role::Target))?;
            let mut by_source: BTreeMap<usize, Vec<&Vec<u8>>> = BTreeMap::new();
            for key in &keys {
                let s = routes.source.shard_of(key);
                if scanned.contains(&s) {
                    by_source.entry(s).or_default().push(key);
                }
            }
            let mut missing: Vec<&Vec<u8>> = Vec::new();
            for (s, keys) in by_source {
                let (source, src) = match sources.entry(s) {
                    std::collections::btree_map::Entry::Occupied(e) => e.into_mut(),
                    std::collections::btree_map::Entry::Vacant(e) => {
                        let source = routes.source.shards[s].endpoint.with_db(target.db);
                        let conn = connect(&source).await.map_err(|e| e.role(Role::Source))?;
                        e.insert((source, conn))
                    }
                };
                let mut exists = redis::pipe();
                for k in &keys {
                    exists.cmd("EXISTS").arg(*k);
                }
                let present: Vec<bool> = exists
                    .query_async(src)
                    .await
                    .map_err(rerr(source, Role::Source))?;
                missing.extend(
                    keys.iter()
                        .zip(present)
                        .filter(|(_, p)| !p)
                        .map(|(k, _)| *k),
                );
            }
            if !missing.is_empty() {
                let mut del = redis::pipe();
                for k in &missing {
                    del.cmd("DEL").arg(*k).ignore();
                }
                let _: () = del
                    .query_async(&mut dst)
                    .await
                    .map_err(rerr(target, Role::Target))?;
                deleted += missing.len() as u64;
            }
            cursor = next;
            if cursor == 0 {
                return Ok(deleted);
            }
        }
    }
}
