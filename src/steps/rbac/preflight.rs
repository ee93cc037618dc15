//! Preflight of an RBAC target: an engine that has RBAC, and user and user group ids not taken (users
//! are shared by the whole account and region, so a clash would hand the new group someone else's
//! user).

use crate::cloud::ReplicationGroup;
use crate::eligibility::engine_major;
use crate::engine::StepContext;
use crate::error::Result;
use crate::plan::RbacSpec;
use crate::steps::cloud_error;
use crate::steps::preflight::Checks;

pub(crate) async fn preflight(
    ctx: &StepContext,
    c: &mut Checks<'_>,
    source: &ReplicationGroup,
    rbac: &RbacSpec,
) -> Result<()> {
    // "RBAC is supported on ElastiCache (Redis OSS) 6.0 onwards" and on every Valkey version.
    let valkey = source.engine.eq_ignore_ascii_case("valkey");
    if valkey || engine_major(&source.engine_version) >= 6 {
        c.pass(
            "rbac_engine",
            format!(
                "engine {} {} has RBAC",
                source.engine, source.engine_version
            ),
        );
    } else {
        c.refuse(
            "rbac_engine",
            format!(
                "RBAC needs Redis OSS 6.0 or later; the source runs {}",
                source.engine_version
            ),
            "upgrade the source's engine first, or keep the AUTH token",
        );
    }
    for user in &rbac.users {
        let found = ctx
            .cloud
            .describe_user(&user.user_id)
            .await
            .map_err(|e| cloud_error("describing a user", e))?;
        match found {
            None => c.pass(
                &format!("rbac_user {}", user.user_id),
                format!("user id `{}` is free", user.user_id),
            ),
            Some(u) => c.refuse(
                &format!("rbac_user {}", user.user_id),
                format!(
                    "user `{}` already exists (user name `{}`, in user groups {:?})",
                    u.user_id, u.user_name, u.user_group_ids
                ),
                "choose another user_id in the plan's rbac.users: RBAC users are shared by the whole account and region",
            ),
        }
    }
    let id = &rbac.user_group_id;
    match ctx
        .cloud
        .describe_user_group(id)
        .await
        .map_err(|e| cloud_error("describing the user group", e))?
    {
        None => c.pass("rbac_user_group", format!("user group id `{id}` is free")),
        Some(g) => c.refuse(
            "rbac_user_group",
            format!("user group `{id}` already exists (status {})", g.status),
            "choose another rbac.user_group_id in the plan",
        ),
    }
    Ok(())
}
