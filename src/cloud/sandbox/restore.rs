//! Restoring a snapshot by copy: how a cluster-mode-enabled group gets its data (and a cluster-mode-disabled
//! group the data of a cluster's snapshot). A cluster node that loads an RDB at start claims the slots of
//! the keys it finds, which need not be its shard's, and a snapshot may have another shard count than the
//! group restored from it; so each RDB of the snapshot (one per shard of a cluster's) is loaded into a
//! stand-alone redis-server in the group's folder (`nodes/<group>/restore-<n>/`, AUTH with the group's
//! token, stopped and removed afterwards), and every key is copied (DUMP + PTTL, then RESTORE … REPLACE)
//! onto the primary that owns its slot. A copy interrupted by a killed caller is made again by the next
//! look (RESTORE … REPLACE is idempotent).

use std::path::Path;
use std::time::{Duration, Instant};

use redis::aio::MultiplexedConnection;

use super::cluster::{key_slot, primaries, shard_of_slot};
use super::process::{self, HOST, NodeConfig, RDB, StartError};
use super::registry::{self, GroupRec};
use super::{STOP_GRACE, Sandbox, blocking, io, set_mode};
use crate::cloud::{CloudError, CloudResult};
use crate::data::connect::{RedisEndpoint, connect};
use crate::secret::Secret;

/// Keys per SCAN round trip of the copy.
const BATCH: usize = 500;
/// How long a stand-alone server may take to load one RDB.
const LOAD_LIMIT: Duration = Duration::from_secs(300);

fn failed(what: impl std::fmt::Display) -> CloudError {
    CloudError::other(format!("sandbox: restore: {what}"))
}

impl Sandbox {
    /// Copy every key of the group's snapshot onto its primaries, then clear `restore_pending`. The
    /// caller holds the group's work lock and every node runs (a cluster is formed).
    pub(super) async fn restore_by_copy(
        &self,
        id: &str,
        token: Option<&Secret>,
    ) -> CloudResult<()> {
        let group = self.group_rec(id)?;
        let snapshot = group
            .source_snapshot
            .clone()
            .ok_or_else(|| failed(format!("`{id}` has no snapshot to restore")))?;
        let parts = self.open_snapshot_parts(&snapshot)?;
        let mut targets = Vec::new();
        for node in primaries(&group) {
            targets.push(self.connect_node(&group, node).await?);
        }
        for (n, rdb) in parts.into_iter().enumerate() {
            let dir = self.group_dir(id).join(format!("restore-{}", n + 1));
            let copied = self.copy_part(&group, &dir, rdb, token, &mut targets).await;
            let cleanup = dir.clone();
            blocking(move || {
                process::stop_under(&cleanup, &[], STOP_GRACE);
                let _ = std::fs::remove_dir_all(&cleanup);
            })
            .await?;
            copied.map_err(|e| failed(format!("snapshot `{snapshot}`, part {}: {e}", n + 1)))?;
        }
        registry::update(&self.dir, |reg| {
            if let Some(g) = reg.groups.get_mut(id) {
                g.restore_pending = false;
            }
            Ok(())
        })
    }

    /// Load one RDB into a stand-alone server in `dir` and copy its keys onto `targets` (one connection
    /// per shard's primary, in shard order).
    async fn copy_part(
        &self,
        group: &GroupRec,
        dir: &Path,
        rdb: Vec<u8>,
        token: Option<&Secret>,
        targets: &mut [MultiplexedConnection],
    ) -> CloudResult<()> {
        // The loader of an attempt whose caller was killed may still run there.
        let strays = dir.to_path_buf();
        blocking(move || process::stop_under(&strays, &[], STOP_GRACE)).await?;
        std::fs::create_dir_all(dir).map_err(|e| io("create", dir, e))?;
        set_mode(dir, 0o700)?;
        registry::write_atomic(&dir.join(RDB), &rdb, 0o600)?;
        drop(rdb);
        let port = start_loader(dir, token).await?;
        let mut endpoint = RedisEndpoint::plain(HOST, port);
        endpoint.password = token.cloned();
        let mut from = await_loaded(&endpoint, dir).await?;
        // The RDB is in memory now: the plaintext file goes at once.
        let _ = std::fs::remove_file(dir.join(RDB));
        only_database_0(&mut from, group).await?;
        super::hook("restore_loaded").await;
        let shards = targets.len() as u32;
        let mut cursor = 0u64;
        loop {
            let (next, keys): (u64, Vec<Vec<u8>>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("COUNT")
                .arg(BATCH)
                .query_async(&mut from)
                .await
                .map_err(failed)?;
            copy_keys(&mut from, targets, shards, &keys).await?;
            if next == 0 {
                return Ok(());
            }
            cursor = next;
        }
    }
}

/// Start the stand-alone server that holds one RDB (another port on a clash); returns its port.
async fn start_loader(dir: &Path, token: Option<&Secret>) -> CloudResult<u16> {
    for _ in 0..8 {
        let port = process::free_port()?;
        let cfg = NodeConfig {
            port,
            plain_port: None,
            tls: None,
            password: token,
            acl_users: Vec::new(),
            replica_of: None,
            cluster_bus_port: None,
        };
        process::write_conf(dir, &cfg)?;
        let d = dir.to_path_buf();
        match blocking(move || process::start(&d)).await? {
            Ok(_) => return Ok(port),
            Err(StartError::PortClash) => {
                let d = dir.to_path_buf();
                blocking(move || process::stop_under(&d, &[], STOP_GRACE)).await?;
            }
            Err(StartError::Failed(e)) => return Err(failed(e)),
        }
    }
    Err(failed("the loading server could not get a port"))
}

/// Connect once the server answers PING (it refuses commands while it loads the RDB).
async fn await_loaded(endpoint: &RedisEndpoint, dir: &Path) -> CloudResult<MultiplexedConnection> {
    let deadline = Instant::now() + LOAD_LIMIT;
    loop {
        let last = match connect(endpoint).await {
            Ok(mut conn) => match redis::cmd("PING").query_async::<String>(&mut conn).await {
                Ok(_) => return Ok(conn),
                Err(e) => e.to_string(),
            },
            Err(e) => e.to_string(),
        };
        if process::pids_under(dir).is_empty() {
            return Err(failed(format!(
                "the loading server exited (see {})",
                dir.join(process::LOGFILE).display()
            )));
        }
        if Instant::now() > deadline {
            return Err(failed(format!(
                "the snapshot did not load within {LOAD_LIMIT:?}: {last}"
            )));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A cluster has database 0 only: a snapshot with keys elsewhere cannot be restored into one.
async fn only_database_0(from: &mut MultiplexedConnection, group: &GroupRec) -> CloudResult<()> {
    let info: String = redis::cmd("INFO")
        .arg("keyspace")
        .query_async(from)
        .await
        .map_err(failed)?;
    let others: Vec<&str> = info
        .lines()
        .filter_map(|l| l.split_once(':').map(|(db, _)| db.trim()))
        .filter(|db| db.starts_with("db") && *db != "db0")
        .collect();
    if group.cluster_enabled && !others.is_empty() {
        return Err(CloudError::invalid(format!(
            "the snapshot has keys in {} but cluster mode has database 0 only; move them to database 0 first",
            others.join(", ")
        )));
    }
    Ok(())
}

/// DUMP + PTTL of `keys` on the loader, RESTORE … REPLACE of each onto the primary owning its slot. A key
/// that expired or vanished in between (DUMP nil, PTTL -2) is skipped.
async fn copy_keys(
    from: &mut MultiplexedConnection,
    targets: &mut [MultiplexedConnection],
    shards: u32,
    keys: &[Vec<u8>],
) -> CloudResult<()> {
    if keys.is_empty() {
        return Ok(());
    }
    let mut read = redis::pipe();
    for k in keys {
        read.cmd("DUMP").arg(k).cmd("PTTL").arg(k);
    }
    let replies: Vec<redis::Value> = read.query_async(from).await.map_err(failed)?;
    let mut writes: Vec<(redis::Pipeline, usize)> =
        (0..shards).map(|_| (redis::pipe(), 0)).collect();
    for (key, pair) in keys.iter().zip(replies.chunks(2)) {
        let (redis::Value::BulkString(payload), redis::Value::Int(pttl)) = (&pair[0], &pair[1])
        else {
            continue;
        };
        if *pttl == -2 {
            continue;
        }
        let shard = shard_of_slot(key_slot(key), shards) as usize;
        let (pipe, count) = &mut writes[shard];
        pipe.cmd("RESTORE")
            .arg(key)
            .arg((*pttl).max(0))
            .arg(payload.as_slice())
            .arg("REPLACE")
            .ignore();
        *count += 1;
    }
    for ((pipe, count), conn) in writes.iter().zip(targets.iter_mut()) {
        if *count > 0 {
            pipe.query_async::<()>(conn).await.map_err(failed)?;
        }
    }
    Ok(())
}
