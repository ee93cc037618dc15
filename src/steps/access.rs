//! How steps reach the control plane: a group looked up by id, a snapshot awaited, the key snapshots are
//! sealed with, a step's wait bound, and cloud errors turned into the user-facing error with a hint.

use std::time::Duration;

use crate::cloud::{CloudError, ReplicationGroup};
use crate::engine::StepContext;
use crate::error::{Error, Result};

/// The default wait bound for cloud operations (an hour: large snapshots take long).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(3600);

pub fn timeout(seconds: Option<u64>) -> Duration {
    seconds.map(Duration::from_secs).unwrap_or(DEFAULT_TIMEOUT)
}

pub fn cloud_error(what: &str, e: CloudError) -> Error {
    let hint = match &e {
        CloudError::Transient { .. } => {
            "the cloud is throttling or failing; run the same command again to resume"
        }
        CloudError::NotFound { .. } => {
            "check the identifiers in the plan and the provider/region it points at"
        }
        CloudError::AlreadyExists { .. } => "another resource has this name; rename it in the plan",
        _ => "fix the cause shown and run the same command again; it resumes where it stopped",
    };
    Error::failed(format!("{what}: {e}"), hint)
}

/// The KMS key the target and its snapshots are encrypted with: the plan's, or the service default.
pub fn kms_key_ref(ctx: &StepContext) -> Option<String> {
    ctx.plan
        .plan
        .target()
        .kms_key_id
        .clone()
        .or_else(|| ctx.cloud.default_kms_key())
}

/// Look a group up, turning "absent" into an error that names it.
pub async fn require_group(ctx: &StepContext, id: &str) -> Result<ReplicationGroup> {
    match ctx.cloud.describe_group(id).await {
        Ok(Some(g)) => Ok(g),
        Ok(None) => Err(Error::failed(
            format!("replication group `{id}` does not exist"),
            "check the plan's ids and the provider it points at",
        )),
        Err(e) => Err(cloud_error(&format!("describing `{id}`"), e)),
    }
}

/// Wait until snapshot `name` is available (bounded by `limit`).
/// Wait until a group that is being modified in place is `available` again (bounded, with progress):
/// `what` names the change in the progress lines.
pub async fn wait_group_available(
    ctx: &StepContext,
    id: &str,
    what: &str,
    limit: Duration,
) -> Result<ReplicationGroup> {
    crate::engine::wait_until(ctx, what, limit, || async {
        use crate::engine::Poll;
        Ok(match ctx.cloud.describe_group(id).await? {
            None => Poll::Failed(format!("`{id}` no longer exists")),
            Some(g) if g.is_available() => Poll::Ready(g),
            Some(g) if g.status == "deleting" || g.status.ends_with("failed") => {
                Poll::Failed(format!("`{id}` is `{}`", g.status))
            }
            Some(g) => Poll::Pending(g.status),
        })
    })
    .await
}

pub async fn wait_for_snapshot(
    ctx: &StepContext,
    name: &str,
    limit: Duration,
) -> Result<crate::cloud::Snapshot> {
    crate::engine::wait_until(ctx, &format!("snapshot {name}"), limit, || async {
        use crate::engine::Poll;
        Ok(match ctx.cloud.describe_snapshot(name).await? {
            Some(s) if s.status == "available" => Poll::Ready(s),
            Some(s) if s.status == "failed" => Poll::Failed(format!("snapshot `{name}` failed")),
            Some(s) => Poll::Pending(s.status),
            None => Poll::Pending("not visible yet".into()),
        })
    })
    .await
}

/// How far a deletion must have gone before the step goes on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Deleted {
    /// `deleting` is enough: it cannot be undone and the group is no longer usable.
    Underway,
    /// The group must be gone (its id is about to be used again).
    Gone,
}

/// Request the deletion of group `id` (unless `request` is false: an earlier attempt did) and wait,
/// bounded, until it has gone as far as `until`. `final_snapshot`: the encrypted snapshot taken of it
/// first, named on the call's readable line.
pub async fn delete_group_and_wait(
    ctx: &StepContext,
    id: &str,
    request: bool,
    until: Deleted,
    final_snapshot: Option<&str>,
) -> Result<()> {
    if request {
        let labels: Vec<_> = final_snapshot
            .map(|s| (crate::engine::events::labels::FINAL_SNAPSHOT, s.to_string()))
            .into_iter()
            .collect();
        ctx.call_labeled(
            "DeleteReplicationGroup",
            serde_json::json!({ "ReplicationGroupId": id, "RetainPrimaryCluster": false }),
            &labels,
        );
        ctx.write
            .delete_group(id)
            .await
            .map_err(|e| cloud_error("DeleteReplicationGroup", e))?;
    }
    crate::engine::wait_until(ctx, &format!("deletion of {id}"), timeout(None), || async {
        use crate::engine::Poll;
        Ok(match ctx.cloud.describe_group(id).await? {
            None => Poll::Ready(()),
            Some(g) if until == Deleted::Underway && g.status == "deleting" => Poll::Ready(()),
            Some(g) => Poll::Pending(g.status),
        })
    })
    .await
}
