//! RBAC for a new target (`target.auth.rbac`): its users and user group created before the group,
//! each once across kills (the intent is recorded before each call, and what exists is adopted only
//! when this run recorded it), and waited on until active. The group is then created with
//! `UserGroupIds` and never with `AuthToken`.

mod preflight;

use std::collections::BTreeMap;

use serde_json::json;

use crate::cloud::{CreateUser, GroupAuth};
use crate::engine::{Poll, StepContext, wait_until};
use crate::error::{Error, Result};
use crate::plan::{RbacSpec, RbacUser, rules};
use crate::secret::{Secret, generate_token};
use crate::steps::records::RbacIntent;
use crate::steps::{SecretKind, cloud_error, keep_token, read_token, store_of, timeout};

pub(crate) use preflight::preflight;

/// The engine of RBAC users and user groups for a group of `engine` (`redis` or `valkey`, lowercase as
/// the API reference lists them).
pub(crate) fn rbac_engine(engine: &str) -> String {
    engine.to_ascii_lowercase()
}

/// Create what is missing of the plan's users and user group, wait until all are active, and return
/// how the group authenticates.
pub(crate) async fn ensure_user_group(
    ctx: &StepContext,
    rbac: &RbacSpec,
    engine: &str,
    timeout_seconds: Option<u64>,
) -> Result<GroupAuth> {
    let engine = rbac_engine(engine);
    let tags: BTreeMap<String, String> = [
        ("ecmigrate:plan".to_string(), ctx.plan.plan.name.clone()),
        ("ecmigrate:run".to_string(), ctx.run_id.clone()),
    ]
    .into();
    for user in &rbac.users {
        ensure_user(ctx, user, &engine, &tags).await?;
    }
    let id = &rbac.user_group_id;
    let existing = ctx
        .cloud
        .describe_user_group(id)
        .await
        .map_err(|e| cloud_error("describing the user group", e))?;
    match existing {
        Some(_) if ctx.intent::<RbacIntent>().user_group.as_deref() == Some(id) => {
            ctx.note(format!("user group `{id}` was already requested"));
        }
        Some(_) => {
            return Err(Error::failed(
                format!("user group `{id}` exists but this run did not create it"),
                "choose another target.auth.rbac.user_group_id",
            ));
        }
        None => {
            let mut intent = ctx.intent::<RbacIntent>();
            intent.user_group = Some(id.clone());
            ctx.merge_intent(&intent)?;
            let user_ids: Vec<String> = rbac.users.iter().map(|u| u.user_id.clone()).collect();
            ctx.call(
                "CreateUserGroup",
                json!({ "UserGroupId": id, "Engine": engine, "UserIds": user_ids, "Tags": tags }),
            );
            ctx.write
                .create_user_group(id, &engine, &user_ids, &tags)
                .await
                .map_err(|e| cloud_error("CreateUserGroup", e))?;
        }
    }
    wait_until(
        ctx,
        &format!("user group {id}"),
        timeout(timeout_seconds),
        || async {
            Ok(match ctx.cloud.describe_user_group(id).await? {
                Some(g) if g.status == "active" => Poll::Ready(()),
                Some(g) => Poll::Pending(g.status),
                None => Poll::Pending("not visible yet".into()),
            })
        },
    )
    .await?;
    Ok(GroupAuth::UserGroup(id.clone()))
}

/// One user: adopted when this run recorded it, refused when someone else's, else created with its
/// password (the stored one, or a generated one kept first).
async fn ensure_user(
    ctx: &StepContext,
    user: &RbacUser,
    engine: &str,
    tags: &BTreeMap<String, String>,
) -> Result<()> {
    let id = user.user_id.to_ascii_lowercase();
    let recorded = ctx.intent::<RbacIntent>().users.contains(&id);
    let existing = ctx
        .cloud
        .describe_user(&id)
        .await
        .map_err(|e| cloud_error("describing a user", e))?;
    match (existing, recorded) {
        (Some(_), true) => {
            ctx.note(format!("user `{id}` was already requested"));
            return Ok(());
        }
        (Some(_), false) => {
            return Err(Error::failed(
                format!("user `{id}` exists but this run did not create it"),
                "RBAC users are shared by the whole account and region: choose another user_id in target.auth.rbac.users",
            ));
        }
        (None, _) => {}
    }
    let password = user_password(ctx, user).await?;
    let mut intent = ctx.intent::<RbacIntent>();
    if !intent.users.contains(&id) {
        intent.users.push(id.clone());
        ctx.merge_intent(&intent)?;
    }
    let store = store_of(&ctx.plan, &user.password);
    ctx.call_labeled(
        "CreateUser",
        json!({
            "UserId": id,
            "UserName": user.user_name,
            "Engine": engine,
            "AccessString": user.access_string,
            "Passwords": ["<redacted>"],
            "NoPasswordRequired": false,
            "Tags": tags,
        }),
        &[("Passwords", store.to_string())],
    );
    ctx.write
        .create_user(&CreateUser {
            user_id: id,
            user_name: user.user_name.clone(),
            engine: engine.to_string(),
            access_string: user.access_string.clone(),
            passwords: vec![password],
            tags: tags.clone(),
        })
        .await
        .map_err(|e| cloud_error("CreateUser", e))
}

/// The user's password: the stored one, or (`generate: true`) a new one kept before the user exists;
/// either way it must meet the AUTH token rules.
async fn user_password(ctx: &StepContext, user: &RbacUser) -> Result<Secret> {
    let store = store_of(&ctx.plan, &user.password);
    let hint = format!(
        "check the password store of user `{}` in target.auth.rbac.users",
        user.user_id
    );
    let password = match read_token(ctx, &store)
        .await
        .map_err(|e| Error::failed(e, hint.clone()))?
    {
        Some(p) => p,
        None if user.password.generate => {
            let p = generate_token();
            keep_token(ctx, &store, &p, SecretKind::RbacPassword).await?;
            p
        }
        None => {
            return Err(Error::failed(
                format!("no password for user `{}` in {store}", user.user_id),
                "put the password there or use `generate: true`",
            ));
        }
    };
    rules::check_auth_token(password.expose()).map_err(|rule| {
        Error::failed(
            format!(
                "the password of user `{}` in {store} is invalid: {rule}",
                user.user_id
            ),
            "replace the password",
        )
    })?;
    Ok(password)
}
