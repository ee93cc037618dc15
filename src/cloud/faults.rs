//! A cloud that fails on request, in mountpoint-s3's `failure_client` model: it wraps a real cloud and
//! makes the first N calls of chosen operations fail (transiently, or for good) before passing calls
//! through. Compiled only for tests (`cfg(test)` or the `test-hooks` feature); never in a release build.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;

use crate::cloud::{
    Cloud, CloudError, CloudRead, CloudResult, CloudWrite, CreateEncryptedGroup, DnsRecord, KmsKey,
    ReplicationGroup, Snapshot,
};
use crate::secret::Secret;

/// How an injected failure fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultKind {
    /// Throttling or a 5xx: the caller should retry.
    Transient,
    /// A refusal: retrying the same call will not help.
    Fail,
    /// The call is made, then the process dies (as by SIGKILL) before it sees the answer.
    CrashAfter,
}

impl FaultKind {
    pub fn parse(text: &str) -> Option<FaultKind> {
        match text {
            "transient" => Some(FaultKind::Transient),
            "fail" => Some(FaultKind::Fail),
            "crash-after" => Some(FaultKind::CrashAfter),
            _ => None,
        }
    }
}

/// A real cloud with failures injected per operation (`CreateSnapshot`, `DescribeReplicationGroups`, …).
pub struct FaultyCloud {
    inner: Arc<dyn Cloud>,
    /// Operation → (kind, failures left).
    faults: Mutex<HashMap<String, (FaultKind, u32)>>,
    /// Operation → calls that failed, for tests to assert on.
    injected: Mutex<HashMap<String, u32>>,
}

impl FaultyCloud {
    pub fn new(inner: Arc<dyn Cloud>) -> Self {
        FaultyCloud {
            inner,
            faults: Mutex::new(HashMap::new()),
            injected: Mutex::new(HashMap::new()),
        }
    }

    /// Fail the next `times` calls of `operation` with `kind`.
    pub fn fail(self, operation: &str, kind: FaultKind, times: u32) -> Self {
        self.faults
            .lock()
            .expect("faults")
            .insert(operation.to_string(), (kind, times));
        self
    }

    /// How many calls of `operation` were failed on purpose.
    pub fn injected(&self, operation: &str) -> u32 {
        *self
            .injected
            .lock()
            .expect("injected")
            .get(operation)
            .unwrap_or(&0)
    }

    fn check(&self, operation: &str) -> CloudResult<()> {
        let mut faults = self.faults.lock().expect("faults");
        let Some((kind, left)) = faults.get_mut(operation) else {
            return Ok(());
        };
        if *left == 0 || *kind == FaultKind::CrashAfter {
            return Ok(());
        }
        *left -= 1;
        *self
            .injected
            .lock()
            .expect("injected")
            .entry(operation.to_string())
            .or_default() += 1;
        let message = format!("{operation}: injected fault");
        Err(match kind {
            FaultKind::Transient => CloudError::Transient { message },
            FaultKind::Fail | FaultKind::CrashAfter => CloudError::Other { message },
        })
    }

    /// After `operation` was made: die if the test asked to (its Nth call, N = the count given).
    fn after(&self, operation: &str) {
        let mut faults = self.faults.lock().expect("faults");
        if let Some((FaultKind::CrashAfter, left)) = faults.get_mut(operation) {
            *left = left.saturating_sub(1);
            if *left == 0 {
                // SAFETY: _exit ends the process at once, as a kill would.
                unsafe { libc::_exit(137) };
            }
        }
    }
}

#[async_trait]
impl CloudRead for FaultyCloud {
    fn provider(&self) -> &'static str {
        self.inner.provider()
    }
    async fn describe_group(&self, id: &str) -> CloudResult<Option<ReplicationGroup>> {
        self.check("DescribeReplicationGroups")?;
        self.inner.describe_group(id).await
    }
    async fn list_groups(&self) -> CloudResult<Vec<ReplicationGroup>> {
        self.check("DescribeReplicationGroups")?;
        self.inner.list_groups().await
    }
    async fn describe_snapshot(&self, name: &str) -> CloudResult<Option<Snapshot>> {
        self.check("DescribeSnapshots")?;
        self.inner.describe_snapshot(name).await
    }
    async fn list_snapshots(&self, group: Option<&str>) -> CloudResult<Vec<Snapshot>> {
        self.check("DescribeSnapshots")?;
        self.inner.list_snapshots(group).await
    }
    async fn describe_key(&self, key_id: &str) -> CloudResult<Option<KmsKey>> {
        self.check("DescribeKey")?;
        self.inner.describe_key(key_id).await
    }
    async fn list_keys(&self) -> CloudResult<Vec<KmsKey>> {
        self.check("ListKeys")?;
        self.inner.list_keys().await
    }
    fn default_kms_key(&self) -> Option<String> {
        self.inner.default_kms_key()
    }
    async fn resolve_alias(&self, alias: &str) -> CloudResult<Option<String>> {
        self.check("ResolveAlias")?;
        self.inner.resolve_alias(alias).await
    }
    fn data_plane_ca(&self) -> Option<PathBuf> {
        self.inner.data_plane_ca()
    }
    async fn get_secret(&self, id: &str) -> CloudResult<Option<Secret>> {
        self.check("GetSecretValue")?;
        self.inner.get_secret(id).await
    }
    async fn get_secret_version(
        &self,
        id: &str,
        stage: &str,
    ) -> CloudResult<Option<super::SecretVersion>> {
        self.check("GetSecretValue")?;
        self.inner.get_secret_version(id, stage).await
    }
    async fn describe_user(&self, user_id: &str) -> CloudResult<Option<super::User>> {
        self.check("DescribeUsers")?;
        self.inner.describe_user(user_id).await
    }
    async fn describe_user_group(&self, id: &str) -> CloudResult<Option<super::UserGroup>> {
        self.check("DescribeUserGroups")?;
        self.inner.describe_user_group(id).await
    }
    async fn key_rotation_enabled(&self, key: &str) -> CloudResult<Option<bool>> {
        self.check("GetKeyRotationStatus")?;
        self.inner.key_rotation_enabled(key).await
    }
    async fn caller_identity(&self) -> CloudResult<Option<super::CallerIdentity>> {
        self.inner.caller_identity().await
    }
    async fn dns_record(&self, zone: &str, name: &str) -> CloudResult<Option<DnsRecord>> {
        self.check("ListResourceRecordSets")?;
        self.inner.dns_record(zone, name).await
    }
    async fn dns_change_status(&self, change_id: &str) -> CloudResult<String> {
        self.check("GetChange")?;
        self.inner.dns_change_status(change_id).await
    }
}

#[async_trait]
impl CloudWrite for FaultyCloud {
    async fn create_snapshot(
        &self,
        group: &str,
        name: &str,
        kms_key_id: Option<&str>,
    ) -> CloudResult<()> {
        self.check("CreateSnapshot")?;
        let answer = self.inner.create_snapshot(group, name, kms_key_id).await;
        self.after("CreateSnapshot");
        answer
    }
    async fn create_group_from_snapshot(&self, request: &CreateEncryptedGroup) -> CloudResult<()> {
        self.check("CreateReplicationGroup")?;
        let answer = self.inner.create_group_from_snapshot(request).await;
        self.after("CreateReplicationGroup");
        answer
    }
    async fn delete_group(&self, id: &str) -> CloudResult<()> {
        self.check("DeleteReplicationGroup")?;
        let answer = self.inner.delete_group(id).await;
        self.after("DeleteReplicationGroup");
        answer
    }
    async fn modify_transit(&self, group: &str, mode: &str) -> CloudResult<()> {
        self.check("ModifyReplicationGroup")?;
        let answer = self.inner.modify_transit(group, mode).await;
        self.after("ModifyReplicationGroup");
        answer
    }
    async fn modify_auth_token(
        &self,
        group: &str,
        token: &Secret,
        strategy: super::AuthTokenUpdate,
    ) -> CloudResult<()> {
        self.check("ModifyReplicationGroup")?;
        let answer = self.inner.modify_auth_token(group, token, strategy).await;
        self.after("ModifyReplicationGroup");
        answer
    }
    async fn modify_to_user_group(&self, group: &str, user_group_id: &str) -> CloudResult<()> {
        self.check("ModifyReplicationGroup")?;
        let answer = self.inner.modify_to_user_group(group, user_group_id).await;
        self.after("ModifyReplicationGroup");
        answer
    }
    async fn create_user(&self, request: &super::CreateUser) -> CloudResult<()> {
        self.check("CreateUser")?;
        let answer = self.inner.create_user(request).await;
        self.after("CreateUser");
        answer
    }
    async fn create_user_group(
        &self,
        id: &str,
        engine: &str,
        user_ids: &[String],
        tags: &BTreeMap<String, String>,
    ) -> CloudResult<()> {
        self.check("CreateUserGroup")?;
        let answer = self
            .inner
            .create_user_group(id, engine, user_ids, tags)
            .await;
        self.after("CreateUserGroup");
        answer
    }
    async fn point_alias(&self, alias: &str, group: &str) -> CloudResult<()> {
        self.check("PointAlias")?;
        self.inner.point_alias(alias, group).await
    }
    async fn upsert_cname(
        &self,
        zone: &str,
        name: &str,
        value: &str,
        ttl: u64,
    ) -> CloudResult<String> {
        self.check("ChangeResourceRecordSets")?;
        self.inner.upsert_cname(zone, name, value, ttl).await
    }
    async fn put_secret(
        &self,
        id: &str,
        value: &Secret,
        tags: &BTreeMap<String, String>,
    ) -> CloudResult<()> {
        self.check("PutSecretValue")?;
        self.inner.put_secret(id, value, tags).await
    }
    async fn put_secret_pending(
        &self,
        id: &str,
        version_id: &str,
        value: &Secret,
    ) -> CloudResult<()> {
        self.check("PutSecretValue")?;
        let answer = self.inner.put_secret_pending(id, version_id, value).await;
        self.after("PutSecretValue");
        answer
    }
    async fn move_secret_stage(
        &self,
        id: &str,
        stage: &str,
        to: Option<&str>,
        from: Option<&str>,
    ) -> CloudResult<()> {
        self.check("UpdateSecretVersionStage")?;
        let answer = self.inner.move_secret_stage(id, stage, to, from).await;
        self.after("UpdateSecretVersionStage");
        answer
    }
}
