//! (placeholder until the sandbox branch lands)
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use serde::Serialize;

use super::*;

pub struct Sandbox {
    dir: PathBuf,
}

#[derive(Serialize)]
pub struct SandboxStatus {
    pub ca_file: String,
}

impl Sandbox {
    pub fn open(dir: &Path) -> CloudResult<Sandbox> {
        Ok(Sandbox {
            dir: dir.to_path_buf(),
        })
    }
    pub fn dir(&self) -> &Path {
        &self.dir
    }
    pub fn ca_file(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }
    pub async fn up(
        &self,
        _id: &str,
        _replicas: u32,
        _keys: u64,
        _progress: &(dyn Fn(u64, u64) + Send + Sync),
    ) -> CloudResult<ReplicationGroup> {
        Err(CloudError::other("placeholder"))
    }
    pub async fn status(&self) -> CloudResult<SandboxStatus> {
        Err(CloudError::other("placeholder"))
    }
    pub async fn down(&self) -> CloudResult<usize> {
        Ok(0)
    }
    pub fn kms_create(&self, _alias: &str) -> CloudResult<KmsKey> {
        Err(CloudError::other("placeholder"))
    }
    pub fn kms_set_enabled(&self, _alias: &str, _enabled: bool) -> CloudResult<KmsKey> {
        Err(CloudError::other("placeholder"))
    }
}

#[async_trait]
impl CloudRead for Sandbox {
    fn provider(&self) -> &'static str {
        "sandbox"
    }
    async fn describe_group(&self, _id: &str) -> CloudResult<Option<ReplicationGroup>> {
        Ok(None)
    }
    async fn list_groups(&self) -> CloudResult<Vec<ReplicationGroup>> {
        Ok(vec![])
    }
    async fn describe_snapshot(&self, _name: &str) -> CloudResult<Option<Snapshot>> {
        Ok(None)
    }
    async fn list_snapshots(&self, _group: Option<&str>) -> CloudResult<Vec<Snapshot>> {
        Ok(vec![])
    }
    async fn describe_key(&self, _key_id: &str) -> CloudResult<Option<KmsKey>> {
        Ok(None)
    }
    fn default_kms_key(&self) -> Option<String> {
        Some("alias/aws/elasticache".into())
    }
    async fn resolve_alias(&self, _alias: &str) -> CloudResult<Option<String>> {
        Ok(None)
    }
    fn data_plane_ca(&self) -> Option<PathBuf> {
        Some(self.ca_file())
    }
}

#[async_trait]
impl CloudWrite for Sandbox {
    async fn create_snapshot(
        &self,
        _group: &str,
        _name: &str,
        _kms_key_id: Option<&str>,
    ) -> CloudResult<()> {
        Ok(())
    }
    async fn create_group_from_snapshot(&self, _request: &CreateEncryptedGroup) -> CloudResult<()> {
        Ok(())
    }
    async fn delete_group(&self, _id: &str) -> CloudResult<()> {
        Ok(())
    }
    async fn point_alias(&self, _alias: &str, _group: &str) -> CloudResult<()> {
        Ok(())
    }
}
