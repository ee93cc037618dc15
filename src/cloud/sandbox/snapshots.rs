//! Snapshots: a request (registered `creating` under the snapshot's work lock, then written), the file a
//! snapshot is (an RDB from SAVE on a running node, sealed under a sandbox KMS key unless taken from an
//! unencrypted group without a key), finishing a request whose process died, reading a snapshot back for
//! a restore, and how a snapshot record appears to callers.

use std::fs::File;
use std::path::PathBuf;

use chrono::Utc;

use super::process::{self, RDB};
use super::registry::{self, GroupRec, Registry, SnapshotRec};
use super::{Sandbox, check_name, io, kms};
use crate::cloud::{CloudError, CloudResult, Snapshot};

impl Sandbox {
    /// The work lock of snapshot `name`, held while its file is being written.
    fn snapshot_lock(&self, name: &str) -> CloudResult<Option<File>> {
        self.work_lock(&format!("snapshots/{name}.lock"), false)
    }

    /// CreateSnapshot: register `name` as `creating` (under its work lock, so a later reader can tell a
    /// live request from one whose process died), then write it and mark it `available`. A failure of the
    /// write removes the record and is returned, so a retry may use the name again.
    pub(super) async fn request_snapshot(
        &self,
        group: &str,
        name: &str,
        kms_key_id: Option<&str>,
    ) -> CloudResult<()> {
        check_name("snapshot", name)?;
        let exists = || CloudError::AlreadyExists {
            what: "snapshot",
            id: name.to_string(),
        };
        // Held: someone is writing a snapshot of that name right now.
        let _work = self.snapshot_lock(name)?.ok_or_else(exists)?;
        let rec = registry::update(&self.dir, |reg| {
            if reg.snapshots.contains_key(name) {
                return Err(exists());
            }
            let rec = new_snapshot_rec(reg, group, name, kms_key_id)?;
            reg.snapshots.insert(name.to_string(), rec.clone());
            Ok(rec)
        })?;
        super::hook("snapshot_requested").await;
        let written = match self.group_rec(group) {
            Ok(g) => self.take_snapshot(&g, &rec).await,
            Err(e) => Err(e),
        };
        match written {
            Ok(()) => set_snapshot_status(&self.dir, name, "available", None),
            Err(e) => {
                self.remove_snapshot_files(&rec);
                let _ = registry::update(&self.dir, |reg| {
                    reg.snapshots.remove(name);
                    Ok(())
                });
                Err(e)
            }
        }
    }

    /// Finish snapshot `name` when it is `creating` and the process that requested it is gone (its work
    /// lock is free): take it now, or mark it `failed` when it cannot be taken. A transient error leaves it
    /// `creating` for the next reader. Nothing happens while its requester still works on it.
    pub(super) async fn settle_snapshot(&self, name: &str) -> CloudResult<()> {
        let creating = |reg: &Registry| {
            reg.snapshots
                .get(name)
                .filter(|s| s.status == "creating")
                .cloned()
        };
        if creating(&registry::load(&self.dir)?).is_none() {
            return Ok(());
        }
        let Some(_work) = self.snapshot_lock(name)? else {
            return Ok(());
        };
        let Some(rec) = creating(&registry::load(&self.dir)?) else {
            return Ok(());
        };
        let written = match self.group_rec(&rec.source_group) {
            Ok(g) => self.take_snapshot(&g, &rec).await,
            Err(e) => Err(e),
        };
        match written {
            Ok(()) => set_snapshot_status(&self.dir, name, "available", None),
            Err(CloudError::Transient { .. }) => Ok(()),
            Err(e) => {
                self.remove_snapshot_files(&rec);
                set_snapshot_status(&self.dir, name, "failed", Some(e.to_string()))
            }
        }
    }

    /// [`Self::settle_snapshot`] for every snapshot still `creating`.
    pub(super) async fn settle_snapshots(&self) -> CloudResult<()> {
        let creating: Vec<String> = registry::load(&self.dir)?
            .snapshots
            .into_values()
            .filter(|s| s.status == "creating")
            .map(|s| s.name)
            .collect();
        for name in creating {
            self.settle_snapshot(&name).await?;
        }
        Ok(())
    }

    /// The RDB bytes of a snapshot (unsealed with its key, which must be Enabled); of a cluster's
    /// snapshot, the first shard's (see [`Self::open_snapshot_parts`]).
    pub(super) fn open_snapshot(&self, name: &str) -> CloudResult<Vec<u8>> {
        Ok(self.open_snapshot_parts(name)?.swap_remove(0))
    }

    /// Every RDB of a snapshot, unsealed: one per shard of a cluster's snapshot, else one.
    pub(super) fn open_snapshot_parts(&self, name: &str) -> CloudResult<Vec<Vec<u8>>> {
        let reg = registry::load(&self.dir)?;
        let snap = reg
            .snapshots
            .get(name)
            .ok_or_else(|| CloudError::NotFound {
                what: "snapshot",
                id: name.to_string(),
            })?;
        let mut parts = Vec::new();
        for path in snapshot_files(snap).iter().map(|f| self.dir.join(f)) {
            let bytes = std::fs::read(&path).map_err(|e| io("read", &path, e))?;
            parts.push(match &snap.kms_key_id {
                None => bytes,
                Some(key_id) => {
                    let key = kms::usable(&reg, key_id, &format!("decrypt snapshot `{name}`"))?;
                    kms::unseal(key, &bytes)?
                }
            });
        }
        Ok(parts)
    }

    /// Remove the file(s) of a snapshot, as far as they exist.
    fn remove_snapshot_files(&self, rec: &SnapshotRec) {
        for f in snapshot_files(rec) {
            let _ = std::fs::remove_file(self.dir.join(f));
        }
    }

    /// Write the snapshot's file(s): on a cluster, one RDB per shard, each from a running node of that shard
    /// (a replica when one runs, as ElastiCache prefers).
    pub(super) async fn take_snapshot(
        &self,
        group: &GroupRec,
        rec: &SnapshotRec,
    ) -> CloudResult<()> {
        if rec.shard_files.is_empty() {
            let bytes = self.save_shard(group, 0).await?;
            return self.write_snapshot_file(rec, &rec.file, bytes);
        }
        for (shard, file) in rec.shard_files.iter().enumerate() {
            let bytes = self.save_shard(group, shard as u32).await?;
            self.write_snapshot_file(rec, file, bytes)?;
        }
        Ok(())
    }

    /// SAVE on a running node of `shard` and read the RDB it wrote (removed again at once).
    async fn save_shard(&self, group: &GroupRec, shard: u32) -> CloudResult<Vec<u8>> {
        let node = group
            .nodes
            .iter()
            .rev()
            .filter(|n| n.shard == shard)
            .find(|n| process::node_pid(&n.dir, n.pid).is_some())
            .ok_or_else(|| match group.cluster_enabled {
                false => CloudError::invalid(format!("group `{}` has no running node", group.id)),
                true => CloudError::invalid(format!(
                    "shard {} of group `{}` has no running node",
                    shard + 1,
                    group.id
                )),
            })?;
        let mut conn = self.connect_node(group, node).await?;
        let rdb_path = node.dir.join(RDB);
        let saved = redis::cmd("SAVE").query_async::<()>(&mut conn).await;
        let bytes = std::fs::read(&rdb_path);
        let _ = std::fs::remove_file(&rdb_path);
        saved
            .map_err(|e| CloudError::other(format!("sandbox: SAVE on {} failed: {e}", node.id)))?;
        bytes.map_err(|e| io("read", &rdb_path, e))
    }

    /// Seal `bytes` under the snapshot's key (when it has one) and write them to `file` (relative).
    fn write_snapshot_file(
        &self,
        rec: &SnapshotRec,
        file: &std::path::Path,
        bytes: Vec<u8>,
    ) -> CloudResult<()> {
        let out = match &rec.kms_key_id {
            None => bytes,
            Some(key_id) => {
                let reg = registry::load(&self.dir)?;
                let key = kms::usable(&reg, key_id, &format!("encrypt snapshot `{}`", rec.name))?;
                kms::seal(key, bytes)?
            }
        };
        let dest = self.dir.join(file);
        std::fs::create_dir_all(dest.parent().expect("snapshots folder"))
            .map_err(|e| io("create", &dest, e))?;
        registry::write_atomic(&dest, &out, 0o600)
    }

    /// Remove snapshot records and their files (the caller decided they go).
    pub(super) fn remove_snapshots(&self, names: &[String]) -> CloudResult<()> {
        let files: Vec<PathBuf> = registry::update(&self.dir, |reg| {
            Ok(names
                .iter()
                .filter_map(|n| reg.snapshots.remove(n))
                .flat_map(|s| snapshot_files(&s))
                .map(|f| self.dir.join(f))
                .collect())
        })?;
        for f in files {
            match std::fs::remove_file(&f) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(io("remove", &f, e)),
            }
        }
        Ok(())
    }

    pub(super) fn to_snapshot(reg: &Registry, s: &SnapshotRec) -> Snapshot {
        Snapshot {
            name: s.name.clone(),
            source_group: s.source_group.clone(),
            status: s.status.clone(),
            kms_key_id: s.kms_key_id.as_ref().map(|k| {
                reg.kms_keys
                    .get(k)
                    .map(|k| k.arn.clone())
                    .unwrap_or_else(|| k.clone())
            }),
            source: "manual".into(),
        }
    }
}

/// The record of a new snapshot request of `group`: the key it is sealed with (the named one, else the
/// group's own), which must exist and be Enabled.
pub(super) fn new_snapshot_rec(
    reg: &mut Registry,
    group: &str,
    name: &str,
    kms_key_id: Option<&str>,
) -> CloudResult<SnapshotRec> {
    let g = reg.groups.get(group).ok_or_else(|| CloudError::NotFound {
        what: "replication group",
        id: group.to_string(),
    })?;
    let key_ref = kms_key_id
        .map(str::to_string)
        .or_else(|| g.kms_key_id.clone());
    let shards = g.cluster_enabled.then_some(g.num_node_groups);
    let key = match key_ref {
        Some(k) => {
            let id = kms::resolve_or_default(reg, &k)?
                .ok_or_else(|| CloudError::invalid(format!("KMS key `{k}` does not exist")))?;
            Some(
                kms::usable(reg, &id, &format!("encrypt snapshot `{name}`"))?
                    .id
                    .clone(),
            )
        }
        None => None,
    };
    let ext = if key.is_some() { "sealed" } else { "rdb" };
    let shard_files: Vec<PathBuf> = match shards {
        None => Vec::new(),
        Some(n) => (1..=n)
            .map(|s| PathBuf::from("snapshots").join(format!("{name}.shard-{s:04}.{ext}")))
            .collect(),
    };
    Ok(SnapshotRec {
        name: name.to_string(),
        source_group: group.to_string(),
        status: "creating".into(),
        kms_key_id: key,
        file: shard_files
            .first()
            .cloned()
            .unwrap_or_else(|| PathBuf::from("snapshots").join(format!("{name}.{ext}"))),
        created_at: Utc::now(),
        failure: None,
        shard_files,
    })
}

fn set_snapshot_status(
    dir: &std::path::Path,
    name: &str,
    status: &str,
    failure: Option<String>,
) -> CloudResult<()> {
    registry::update(dir, |reg| {
        if let Some(s) = reg.snapshots.get_mut(name) {
            s.status = status.to_string();
            s.failure = failure;
        }
        Ok(())
    })
}

/// The files of a snapshot, relative to the sandbox folder: one per shard of a cluster's, else one.
fn snapshot_files(rec: &SnapshotRec) -> Vec<PathBuf> {
    match rec.shard_files.is_empty() {
        true => vec![rec.file.clone()],
        false => rec.shard_files.clone(),
    }
}
