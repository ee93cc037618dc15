//! Snapshots: the file a snapshot is (an RDB from SAVE on a running node, sealed under a sandbox KMS key
//! unless taken from an unencrypted group without a key), reading it back for a restore, and how a
//! snapshot record appears to callers.

use super::process::{self, RDB};
use super::registry::{self, GroupRec, Registry, SnapshotRec};
use super::{Sandbox, io, kms};
use crate::cloud::{CloudError, CloudResult, Snapshot};

impl Sandbox {
    /// The RDB bytes of a snapshot (unsealed with its key, which must be Enabled).
    pub(super) fn open_snapshot(&self, name: &str) -> CloudResult<Vec<u8>> {
        let reg = registry::load(&self.dir)?;
        let snap = reg
            .snapshots
            .get(name)
            .ok_or_else(|| CloudError::NotFound {
                what: "snapshot",
                id: name.to_string(),
            })?;
        let path = self.snapshot_path(snap);
        let bytes = std::fs::read(&path).map_err(|e| io("read", &path, e))?;
        match &snap.kms_key_id {
            None => Ok(bytes),
            Some(key_id) => {
                let key = kms::usable(&reg, key_id, &format!("decrypt snapshot `{name}`"))?;
                kms::unseal(key, &bytes)
            }
        }
    }

    pub(super) async fn take_snapshot(
        &self,
        group: &GroupRec,
        rec: &SnapshotRec,
    ) -> CloudResult<()> {
        let node = group
            .nodes
            .iter()
            .rev()
            .find(|n| process::node_pid(&n.dir, n.pid).is_some())
            .ok_or_else(|| {
                CloudError::invalid(format!("group `{}` has no running node", group.id))
            })?;
        let mut conn = self.connect_node(group, node).await?;
        let rdb_path = node.dir.join(RDB);
        let saved = redis::cmd("SAVE").query_async::<()>(&mut conn).await;
        let bytes = std::fs::read(&rdb_path);
        let _ = std::fs::remove_file(&rdb_path);
        saved
            .map_err(|e| CloudError::other(format!("sandbox: SAVE on {} failed: {e}", node.id)))?;
        let bytes = bytes.map_err(|e| io("read", &rdb_path, e))?;
        let out = match &rec.kms_key_id {
            None => bytes,
            Some(key_id) => {
                let reg = registry::load(&self.dir)?;
                let key = kms::usable(&reg, key_id, &format!("encrypt snapshot `{}`", rec.name))?;
                kms::seal(key, bytes)?
            }
        };
        let dest = self.snapshot_path(rec);
        std::fs::create_dir_all(dest.parent().expect("snapshots folder"))
            .map_err(|e| io("create", &dest, e))?;
        registry::write_atomic(&dest, &out, 0o600)
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
