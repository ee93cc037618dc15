//! RBAC in the sandbox: CreateUser and CreateUserGroup kept in the registry (passwords as the SHA-256
//! hashes a Redis ACL rule takes, never in clear), and the ACL lines a node of a group created with
//! `UserGroupIds` starts with. Such a node also lets in the sandbox's own administrative user (as
//! ElastiCache keeps its own access to the nodes it manages): replicas, restores and health checks sign
//! in as it, with a password only the node's redis.conf holds.

use std::collections::BTreeMap;

use super::Sandbox;
use super::registry::{self, Registry, UserGroupRec, UserRec};
use crate::cloud::{CloudError, CloudResult, CreateUser, User, UserGroup};
use crate::plan::rules::check_auth_token;

/// The user the sandbox itself signs in as on a node of an RBAC group.
pub(super) const SANDBOX_ADMIN_USER: &str = "ecmigrate-sandbox-admin";

/// `#<hex>`: the ACL form of a password the server never sees in clear.
pub(super) fn password_hash(password: &str) -> String {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, password.as_bytes());
    digest.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

impl Sandbox {
    pub(super) fn describe_user_rec(&self, user_id: &str) -> CloudResult<Option<User>> {
        let reg = registry::load(&self.dir)?;
        Ok(reg
            .users
            .get(&user_id.to_ascii_lowercase())
            .map(|u| user_of(&reg, u)))
    }

    pub(super) fn describe_user_group_rec(&self, id: &str) -> CloudResult<Option<UserGroup>> {
        let reg = registry::load(&self.dir)?;
        Ok(reg.user_groups.get(id).map(|g| UserGroup {
            user_group_id: g.id.clone(),
            status: "active".into(),
            engine: g.engine.clone(),
            user_ids: g.user_ids.clone(),
            replication_groups: reg
                .groups
                .values()
                .filter(|r| r.user_group_id.as_deref() == Some(&g.id))
                .map(|r| r.id.clone())
                .collect(),
        }))
    }

    /// CreateUser with the rules the API reference and the RBAC guide give: one or two passwords (each
    /// following the AUTH token rules), an engine of `redis` or `valkey`, an id not taken.
    pub(super) fn create_user_rec(&self, r: &CreateUser) -> CloudResult<()> {
        if !matches!(r.engine.as_str(), "redis" | "valkey") {
            return Err(CloudError::invalid(format!(
                "user `{}`: engine must be redis or valkey (got `{}`)",
                r.user_id, r.engine
            )));
        }
        if !(1..=2).contains(&r.passwords.len()) {
            return Err(CloudError::invalid(format!(
                "user `{}`: one or two passwords (got {})",
                r.user_id,
                r.passwords.len()
            )));
        }
        for p in &r.passwords {
            check_auth_token(p.expose())
                .map_err(|e| CloudError::invalid(format!("user `{}`: password: {e}", r.user_id)))?;
        }
        let id = r.user_id.to_ascii_lowercase();
        registry::update(&self.dir, |reg| {
            if reg.users.contains_key(&id) {
                return Err(CloudError::AlreadyExists {
                    what: "user",
                    id: id.clone(),
                });
            }
            reg.users.insert(
                id.clone(),
                UserRec {
                    user_id: id.clone(),
                    user_name: r.user_name.clone(),
                    engine: r.engine.clone(),
                    access_string: r.access_string.clone(),
                    password_sha256: r
                        .passwords
                        .iter()
                        .map(|p| password_hash(p.expose()))
                        .collect(),
                },
            );
            Ok(())
        })
    }

    /// CreateUserGroup: every user must exist and have the group's engine, and exactly one must be named
    /// `default` (ElastiCache refuses a group without one).
    pub(super) fn create_user_group_rec(
        &self,
        id: &str,
        engine: &str,
        user_ids: &[String],
    ) -> CloudResult<()> {
        registry::update(&self.dir, |reg| {
            if reg.user_groups.contains_key(id) {
                return Err(CloudError::AlreadyExists {
                    what: "user group",
                    id: id.to_string(),
                });
            }
            let mut defaults = 0;
            let mut ids = Vec::new();
            for u in user_ids {
                let key = u.to_ascii_lowercase();
                let user = reg.users.get(&key).ok_or_else(|| CloudError::NotFound {
                    what: "user",
                    id: u.clone(),
                })?;
                if user.engine != engine {
                    return Err(CloudError::invalid(format!(
                        "user `{u}` is for {}, the user group for {engine}",
                        user.engine
                    )));
                }
                defaults += usize::from(user.user_name == "default");
                ids.push(key);
            }
            if defaults != 1 {
                return Err(CloudError::invalid(format!(
                    "user group `{id}` must hold exactly one user named default (found {defaults})"
                )));
            }
            reg.user_groups.insert(
                id.to_string(),
                UserGroupRec {
                    id: id.to_string(),
                    engine: engine.to_string(),
                    user_ids: ids,
                },
            );
            Ok(())
        })
    }
}

impl Sandbox {
    /// ModifyReplicationGroup `UserGroupIdsToAdd` + `AuthTokenUpdateStrategy=DELETE` on the running
    /// nodes: the administrative user added and made the replicas' `masteruser` (its password is the old
    /// token, which `masterauth` already holds), then each user of the group set with `ACL SETUSER`, the
    /// default user last (the connection doing it signs in as default), and `redis.conf` written again.
    /// Sent again for the same group, it changes nothing.
    pub(super) async fn move_to_user_group(
        &self,
        id: &str,
        user_group_id: &str,
    ) -> CloudResult<()> {
        let _work = self.group_lock(id, true)?;
        let g = self.group_rec(id)?;
        let status = self.live_status(id).await?;
        if g.user_group_id.as_deref() == Some(user_group_id) {
            return Ok(());
        }
        if status != "available" {
            return Err(CloudError::invalid(format!(
                "InvalidReplicationGroupState: replication group `{id}` is `{status}`, not `available`"
            )));
        }
        if !g.transit_encryption_enabled || !g.auth_token_enabled {
            return Err(CloudError::invalid(format!(
                "InvalidParameterCombination: AuthTokenUpdateStrategy DELETE moves a group with TLS and an AUTH token to RBAC; `{id}` has TLS {} and AUTH {}",
                g.transit_encryption_enabled, g.auth_token_enabled
            )));
        }
        let reg = registry::load(&self.dir)?;
        let group = user_group(&reg, user_group_id)?;
        if group.engine != g.engine {
            return Err(CloudError::invalid(format!(
                "InvalidParameterCombination: user group `{user_group_id}` is for {}, `{id}` runs {}",
                group.engine, g.engine
            )));
        }
        let mut lines = acl_lines(&reg, user_group_id)?;
        // The default user last: the connection that sets the users signs in as it.
        lines.sort_by_key(|l| l.starts_with("user default "));
        let token = g
            .nodes
            .first()
            .and_then(|n| super::process::read_password(&n.dir))
            .ok_or_else(|| {
                CloudError::other(format!("sandbox: the AUTH token of `{id}` is lost"))
            })?;
        let admin_hash = format!("#{}", password_hash(token.expose()));
        for node in &g.nodes {
            let mut ep = self.endpoint(&g, node);
            // A node an interrupted attempt moved already lets in only the administrative user.
            let conf =
                std::fs::read_to_string(node.dir.join(super::process::CONF)).unwrap_or_default();
            if conf.contains(&format!("user {SANDBOX_ADMIN_USER} ")) {
                ep.username = Some(SANDBOX_ADMIN_USER.to_string());
            }
            let mut con = crate::data::connect::connect(&ep)
                .await
                .map_err(|e| CloudError::Transient { message: e.into() })?;
            let failed = |what: &str, e: redis::RedisError| {
                CloudError::other(format!("sandbox: node {}: {what}: {e}", node.id))
            };
            redis::cmd("ACL")
                .arg("SETUSER")
                .arg(SANDBOX_ADMIN_USER)
                .arg("on")
                .arg(&admin_hash)
                .arg("~*")
                .arg("&*")
                .arg("+@all")
                .query_async::<()>(&mut con)
                .await
                .map_err(|e| failed("ACL SETUSER", e))?;
            redis::cmd("CONFIG")
                .arg("SET")
                .arg("masteruser")
                .arg(SANDBOX_ADMIN_USER)
                .query_async::<()>(&mut con)
                .await
                .map_err(|e| failed("CONFIG SET masteruser", e))?;
            for line in &lines {
                let mut acl = redis::cmd("ACL");
                acl.arg("SETUSER");
                for arg in line.trim_start_matches("user ").split_whitespace() {
                    acl.arg(arg);
                }
                acl.query_async::<()>(&mut con)
                    .await
                    .map_err(|e| failed("ACL SETUSER", e))?;
            }
            super::process::write_rbac_conf(&node.dir, &token, &lines)?;
        }
        registry::update(&self.dir, |reg| {
            if let Some(rec) = reg.groups.get_mut(id) {
                rec.auth_token_enabled = false;
                rec.user_group_id = Some(user_group_id.to_string());
            }
            Ok(())
        })
    }
}

fn user_of(reg: &Registry, u: &UserRec) -> User {
    User {
        user_id: u.user_id.clone(),
        user_name: u.user_name.clone(),
        status: "active".into(),
        engine: u.engine.clone(),
        user_group_ids: reg
            .user_groups
            .values()
            .filter(|g| g.user_ids.contains(&u.user_id))
            .map(|g| g.id.clone())
            .collect(),
    }
}

/// The user group `id` of the registry, or NotFound as CreateReplicationGroup and
/// ModifyReplicationGroup answer.
pub(super) fn user_group<'a>(reg: &'a Registry, id: &str) -> CloudResult<&'a UserGroupRec> {
    reg.user_groups.get(id).ok_or_else(|| CloudError::NotFound {
        what: "user group",
        id: id.to_string(),
    })
}

/// The `user` lines of redis.conf for the users of `user_group_id`: each reset first (the default
/// user included: `requirepass` is never written on such a node), then its hashed passwords and its
/// access string as given.
pub(super) fn acl_lines(reg: &Registry, user_group_id: &str) -> CloudResult<Vec<String>> {
    let group = user_group(reg, user_group_id)?;
    let users: BTreeMap<&str, &UserRec> = group
        .user_ids
        .iter()
        .filter_map(|id| reg.users.get(id).map(|u| (u.user_name.as_str(), u)))
        .collect();
    Ok(users
        .values()
        .map(|u| {
            let hashes: Vec<String> = u.password_sha256.iter().map(|h| format!("#{h}")).collect();
            format!(
                "user {} reset {} {}",
                u.user_name,
                hashes.join(" "),
                u.access_string
            )
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::password_hash;

    #[test]
    fn password_hash_is_the_acl_sha256() {
        // `echo -n foobar | sha256sum`, the example of Redis' ACL documentation.
        assert_eq!(
            password_hash("foobar"),
            "c3ab8ff13720e8ad9047dd39466b3c8974e592c2fa383d4a3960714caef0c4f2"
        );
    }
}
