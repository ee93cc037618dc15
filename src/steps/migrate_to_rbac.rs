//! `migrate_to_rbac`: a token-protected source moved to RBAC in place (a plan without `target`), as
//! AWS documents the move from AUTH: `source.auth.rbac`'s users and user group created (`steps::rbac`,
//! each once across kills), then ModifyReplicationGroup `UserGroupIdsToAdd=[group]` with
//! `AuthTokenUpdateStrategy=DELETE`, wait, and prove with real connections that the data plane user
//! signs in and (when `source.auth_token` names it) that the old token alone no longer does.
//!
//! The modification is recorded as requested before it is sent and as accepted once answered; a request
//! whose answer was lost is judged from the group (`modifying`, or the user group attached, means taken),
//! so a resumed run sends it at most once.

use serde_json::json;

use crate::engine::{Poll, StepContext, StepOutcome, wait_until};
use crate::error::{Error, Result};
use crate::plan::{MigrateToRbacStep, RbacSpec};
use crate::steps::endpoints::source_tls_endpoint;
use crate::steps::records::MigrateRbacIntent;
use crate::steps::rotate_auth_token::{Opened, settled};
use crate::steps::{cloud_error, read_token, require_group, store_of, timeout};

pub async fn run(ctx: &StepContext, spec: &MigrateToRbacStep) -> Result<StepOutcome> {
    let plan = &ctx.plan.plan;
    let id = plan.source.replication_group_id.clone();
    let Some(rbac) = plan.source.auth.as_ref().map(|a| &a.rbac) else {
        return Err(Error::failed(
            "`migrate_to_rbac` needs source.auth.rbac",
            "add the users and the user group to the plan",
        ));
    };
    let group = require_group(ctx, &id).await?;
    let attached = group.user_group_ids.contains(&rbac.user_group_id);
    let intent: MigrateRbacIntent = ctx.intent();
    if !attached && !intent.modify_accepted {
        if !intent.modify_requested
            && (!group.transit_encryption_enabled || !group.auth_token_enabled)
        {
            return Err(Error::failed(
                format!(
                    "`{id}` has TLS {} and an AUTH token {}: the move to RBAC starts from a group with both",
                    group.transit_encryption_enabled, group.auth_token_enabled
                ),
                "turn in-transit encryption on first (an `enable_transit` step) and give the group a token",
            ));
        }
        crate::steps::rbac::ensure_user_group(ctx, rbac, &group.engine, spec.timeout_seconds)
            .await?;
        let mut intent: MigrateRbacIntent = ctx.intent();
        if intent.modify_requested && group.status == "modifying" {
            ctx.note("the move to RBAC was requested by an earlier attempt and the group took it; not sent again");
        } else {
            intent.modify_requested = true;
            ctx.merge_intent(&intent)?;
            ctx.call(
                "ModifyReplicationGroup",
                json!({
                    "ReplicationGroupId": id,
                    "UserGroupIdsToAdd": [rbac.user_group_id],
                    "AuthTokenUpdateStrategy": "DELETE",
                    "ApplyImmediately": true,
                }),
            );
            ctx.write
                .modify_to_user_group(&id, &rbac.user_group_id)
                .await
                .map_err(|e| cloud_error("ModifyReplicationGroup", e))?;
        }
        intent.modify_accepted = true;
        ctx.merge_intent(&intent)?;
    }
    let group = wait_until(
        ctx,
        &format!(
            "replication group {id} with user group {}",
            rbac.user_group_id
        ),
        timeout(spec.timeout_seconds),
        || async {
            Ok(match ctx.cloud.describe_group(&id).await? {
                None => Poll::Failed(format!("`{id}` no longer exists")),
                Some(g) if g.is_available() && g.user_group_ids.contains(&rbac.user_group_id) => {
                    Poll::Ready(g)
                }
                Some(g) if g.status.ends_with("failed") || g.status == "deleting" => {
                    Poll::Failed(format!("`{id}` is `{}`", g.status))
                }
                Some(g) => Poll::Pending(g.status),
            })
        },
    )
    .await?;
    if ctx.dry_run() {
        ctx.note(
            "would prove that the data plane user signs in and the old token alone no longer does",
        );
        return Ok(StepOutcome::done(&json!({ "dry_run": true })));
    }
    let old_token_opens = prove(ctx, rbac, &group).await?;
    Ok(StepOutcome::done(&json!({
        "user_group_ids": group.user_group_ids,
        "auth_token_enabled": group.auth_token_enabled,
        "data_plane_user": rbac.data_plane_user,
        "old_token_opens": old_token_opens,
    })))
}

/// The data plane user must sign in; the old token alone (when the plan names its store) is tried too:
/// `Some(false)` refused, `Some(true)` still accepted (the plan's default user has it as its password),
/// `None` not tried.
async fn prove(
    ctx: &StepContext,
    rbac: &RbacSpec,
    group: &crate::cloud::ReplicationGroup,
) -> Result<Option<bool>> {
    let id = &group.id;
    let tls = source_tls_endpoint(ctx, group)?;
    let user = rbac.data_plane().ok_or_else(|| {
        Error::failed(
            "no data_plane_user in source.auth.rbac.users",
            "fix the plan",
        )
    })?;
    let store = store_of(&ctx.plan, &user.password);
    let password = read_token(ctx, &store)
        .await
        .map_err(|e| Error::failed(e, "check the data plane user's password store"))?
        .ok_or_else(|| Error::failed(format!("no password in {store}"), "restore it there"))?;
    let mut as_user = tls.clone();
    as_user.username = Some(user.user_name.clone());
    match settled(&as_user, &password, true).await {
        Ok(Opened::Yes) => ctx.note(format!(
            "user `{}` signs in to `{id}` with its password",
            user.user_name
        )),
        Ok(Opened::Refused(why)) => {
            return Err(Error::failed(
                format!(
                    "`{id}` has the user group but user `{}` cannot sign in ({why})",
                    user.user_name
                ),
                "check the user's access string and password store; run again to check again",
            ));
        }
        Err(e) => {
            return Err(Error::failed(
                format!(
                    "`{id}` could not be reached over TLS at {}:{}: {e}",
                    tls.host, tls.port
                ),
                "check the network path and the CA (source.tls_ca_file for a private one), then run again",
            ));
        }
    }
    let Some(spec) = &ctx.plan.plan.source.auth_token else {
        return Ok(None);
    };
    let Ok(Some(old)) = read_token(ctx, &store_of(&ctx.plan, spec)).await else {
        return Ok(None);
    };
    let opens = matches!(settled(&tls, &old, false).await, Ok(Opened::Yes));
    if opens {
        ctx.note("the old AUTH token alone still opens the group: the default user in source.auth.rbac has it as its password");
    } else {
        ctx.note("the old AUTH token alone is refused");
    }
    Ok(Some(opens))
}
