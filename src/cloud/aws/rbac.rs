//! ElastiCache RBAC through the SDK: CreateUser, CreateUserGroup, DescribeUsers, DescribeUserGroups.

use std::collections::BTreeMap;

use aws_sdk_elasticache::Client;
use aws_sdk_elasticache::types as ec;

use super::elasticache::{ec_tags, redact};
use super::{map_err, none_if_not_found};
use crate::cloud::{CloudResult, CreateUser, User, UserGroup};

pub(super) async fn create_user(ec: &Client, r: &CreateUser) -> CloudResult<()> {
    let passwords: Vec<String> = r.passwords.iter().map(|p| p.expose().to_string()).collect();
    let sent = ec
        .create_user()
        .user_id(&r.user_id)
        .user_name(&r.user_name)
        .engine(&r.engine)
        .access_string(&r.access_string)
        .set_passwords(Some(passwords.clone()))
        .no_password_required(false)
        .set_tags(Some(ec_tags(&r.tags)))
        .send()
        .await;
    match sent {
        Ok(_) => Ok(()),
        Err(e) => {
            let secrets: Vec<&str> = passwords.iter().map(String::as_str).collect();
            Err(redact(map_err(e, "user", &r.user_id), &secrets))
        }
    }
}

pub(super) async fn create_user_group(
    ec: &Client,
    id: &str,
    engine: &str,
    user_ids: &[String],
    tags: &BTreeMap<String, String>,
) -> CloudResult<()> {
    ec.create_user_group()
        .user_group_id(id)
        .engine(engine)
        .set_user_ids(Some(user_ids.to_vec()))
        .set_tags(Some(ec_tags(tags)))
        .send()
        .await
        .map_err(|e| map_err(e, "user group", id))?;
    Ok(())
}

pub(super) async fn modify_to_user_group(
    ec: &Client,
    group: &str,
    user_group_id: &str,
) -> CloudResult<()> {
    ec.modify_replication_group()
        .replication_group_id(group)
        .user_group_ids_to_add(user_group_id)
        .auth_token_update_strategy(ec::AuthTokenUpdateStrategyType::Delete)
        .apply_immediately(true)
        .send()
        .await
        .map_err(|e| map_err(e, "replication group", group))?;
    Ok(())
}

pub(super) async fn describe_user(ec: &Client, user_id: &str) -> CloudResult<Option<User>> {
    let found = ec
        .describe_users()
        .user_id(user_id)
        .send()
        .await
        .map_err(|e| map_err(e, "user", user_id));
    let Some(out) = none_if_not_found(found)? else {
        return Ok(None);
    };
    Ok(out
        .users()
        .iter()
        .find(|u| u.user_id().is_some_and(|i| i.eq_ignore_ascii_case(user_id)))
        .map(user_from))
}

pub(super) async fn describe_user_group(ec: &Client, id: &str) -> CloudResult<Option<UserGroup>> {
    let found = ec
        .describe_user_groups()
        .user_group_id(id)
        .send()
        .await
        .map_err(|e| map_err(e, "user group", id));
    let Some(out) = none_if_not_found(found)? else {
        return Ok(None);
    };
    Ok(out
        .user_groups()
        .iter()
        .find(|g| g.user_group_id() == Some(id))
        .map(|g| UserGroup {
            user_group_id: id.to_string(),
            status: g.status().unwrap_or("unknown").to_string(),
            engine: g.engine().unwrap_or_default().to_string(),
            user_ids: g.user_ids().to_vec(),
            replication_groups: g.replication_groups().to_vec(),
        }))
}

fn user_from(u: &ec::User) -> User {
    User {
        user_id: u.user_id().unwrap_or_default().to_string(),
        user_name: u.user_name().unwrap_or_default().to_string(),
        status: u.status().unwrap_or("unknown").to_string(),
        engine: u.engine().unwrap_or_default().to_string(),
        user_group_ids: u.user_group_ids().to_vec(),
    }
}
