//! How the target authenticates: exactly one of `target.auth_token` and `target.auth.rbac`, and the
//! rules of an RBAC user group and its users as the ElastiCache API reference and ElastiCache's RBAC
//! guide give them, checked before anything is created (moto accepts ids AWS refuses).

use std::collections::BTreeSet;

use super::{Findings, check_token_store};
use crate::plan::types::*;

pub(super) fn check_target_auth(t: &TargetSpec, f: &mut Findings) {
    match (&t.auth_token, &t.auth) {
        (Some(token), None) => check_token_store("target.auth_token", token, f),
        (None, Some(auth)) => check_rbac("target.auth.rbac", &auth.rbac, f),
        (Some(_), Some(_)) => f.add(
            "target.auth",
            "give `target.auth_token` or `target.auth.rbac`, not both: a group created with a user group has no AUTH token",
        ),
        (None, None) => f.add(
            "target.auth_token",
            "is required (or `target.auth.rbac`): the new group needs in-transit authentication; say where the AUTH token is (`file: PATH`, `env: NAME` or `secrets_manager: SECRET`, with `generate: true` to create one)",
        ),
    }
}

/// The RBAC settings at `base` (`target.auth.rbac`, or `source.auth.rbac` for `migrate_to_rbac`).
pub(super) fn check_rbac(base: &str, r: &RbacSpec, f: &mut Findings) {
    f.check(
        format!("{base}.user_group_id"),
        check_user_group_id(&r.user_group_id),
    );
    if r.users.is_empty() {
        f.add(
            format!("{base}.users"),
            "must list the users to create, one of them named `default` (ElastiCache requires a user named default in every user group)",
        );
        return;
    }
    let mut ids = BTreeSet::new();
    for (i, u) in r.users.iter().enumerate() {
        let at = format!("{base}.users[{i}]");
        f.check(format!("{at}.user_id"), check_user_id(&u.user_id));
        // CreateUser stores the id in lowercase: two ids that differ only in case are the same user.
        if !ids.insert(u.user_id.to_ascii_lowercase()) {
            f.add(
                format!("{at}.user_id"),
                format!(
                    "`{}` is listed twice (user ids are stored in lowercase)",
                    u.user_id
                ),
            );
        }
        f.check(format!("{at}.user_name"), check_user_name(&u.user_name));
        f.check(
            format!("{at}.access_string"),
            check_access_string(&u.access_string),
        );
        check_token_store(&format!("{at}.password"), &u.password, f);
    }
    let defaults = r.users.iter().filter(|u| u.user_name == "default").count();
    if defaults != 1 {
        f.add(
            format!("{base}.users"),
            format!(
                "must hold exactly one user with `user_name: default` (ElastiCache requires one in every user group; it serves connections that do not sign in), found {defaults}"
            ),
        );
    }
    match r
        .users
        .iter()
        .find(|u| u.user_id.eq_ignore_ascii_case(&r.data_plane_user))
    {
        None => f.add(
            format!("{base}.data_plane_user"),
            format!(
                "`{}` is not the user_id of a user in `users`",
                r.data_plane_user
            ),
        ),
        Some(u) if !switched_on(&u.access_string) => f.add(
            format!("{base}.data_plane_user"),
            format!(
                "user `{}` is not switched on (its access_string needs `on`): ecmigrate signs in as it to copy every key",
                u.user_id
            ),
        ),
        Some(_) => {}
    }
}

/// `UserGroupId`: a letter, then lowercase letters, digits and hyphens (the pattern CloudFormation's
/// `AWS::ElastiCache::UserGroup` gives, `[a-z][a-z0-9\-]*`; the API reference gives none).
pub(crate) fn check_user_group_id(id: &str) -> Result<(), String> {
    const RULE: &str =
        "a user group id is a lowercase letter, then lowercase letters, digits and hyphens";
    let mut chars = id.chars();
    match chars.next() {
        None => Err(format!("{RULE} (it is empty)")),
        Some(c) if !c.is_ascii_lowercase() => Err(format!("{RULE} (it starts with `{c}`)")),
        _ => match chars.find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-')) {
            Some(c) => Err(format!("{RULE} (it contains `{c}`)")),
            None => Ok(()),
        },
    }
}

/// `UserId`: the API reference's pattern `[a-zA-Z][a-zA-Z0-9\-]*`, and not `default`: that id is the
/// account's own open user (`nopass`), which a plan must not put into an encrypted group.
pub(crate) fn check_user_id(id: &str) -> Result<(), String> {
    const RULE: &str = "a user id is a letter, then letters, digits and hyphens";
    let mut chars = id.chars();
    match chars.next() {
        None => return Err(format!("{RULE} (it is empty)")),
        Some(c) if !c.is_ascii_alphabetic() => {
            return Err(format!("{RULE} (it starts with `{c}`)"));
        }
        _ => {}
    }
    if let Some(c) = chars.find(|c| !(c.is_ascii_alphanumeric() || *c == '-')) {
        return Err(format!("{RULE} (it contains `{c}`)"));
    }
    if id.eq_ignore_ascii_case("default") {
        return Err(
            "`default` is the account's own user, which needs no password; give the plan's default user another id (its user_name stays `default`)".into(),
        );
    }
    Ok(())
}

/// `UserName`: what a client sends with AUTH, so no spaces or control characters (a Redis ACL user name
/// cannot hold them).
fn check_user_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("a user name cannot be empty".into());
    }
    if name.chars().any(|c| !c.is_ascii_graphic()) {
        return Err(
            "a user name may contain only printable ASCII characters without spaces".into(),
        );
    }
    Ok(())
}

/// The access string: not blank, and without the password rules ElastiCache sets from `Passwords`
/// (`>pass`, `#hash`, `nopass`, `resetpass`, `reset`): passwords never go into a plan.
fn check_access_string(access: &str) -> Result<(), String> {
    if access.trim().is_empty() {
        return Err("an access string cannot be empty; for example `on ~* +@all`".into());
    }
    for rule in access.split_whitespace() {
        let lower = rule.to_ascii_lowercase();
        let refused = rule.starts_with('>')
            || rule.starts_with('<')
            || rule.starts_with('#')
            || rule.starts_with('!')
            || matches!(lower.as_str(), "nopass" | "resetpass" | "reset");
        if refused {
            return Err(
                "an access string may not set passwords (`>`, `<`, `#`, `!`, `nopass`, `resetpass`, `reset`): each user's password comes from its `password` store".into(),
            );
        }
    }
    Ok(())
}

/// The ACL rules switch the user on (`on` after the last `off`).
pub(crate) fn switched_on(access: &str) -> bool {
    access
        .split_whitespace()
        .rev()
        .find(|r| r.eq_ignore_ascii_case("on") || r.eq_ignore_ascii_case("off"))
        .is_some_and(|r| r.eq_ignore_ascii_case("on"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_follow_the_api_patterns() {
        assert!(check_user_group_id("orders-users").is_ok());
        assert!(check_user_group_id("Orders").is_err());
        assert!(check_user_group_id("1orders").is_err());
        assert!(check_user_group_id("orders_users").is_err());
        assert!(check_user_group_id("").is_err());
        assert!(check_user_id("App-1").is_ok());
        assert!(check_user_id("1app").is_err());
        assert!(check_user_id("app.user").is_err());
        let e = check_user_id("Default").unwrap_err();
        assert!(e.contains("user_name stays `default`"), "{e}");
    }

    #[test]
    fn access_strings_hold_no_passwords() {
        assert!(check_access_string("on ~* +@all").is_ok());
        assert!(check_access_string("  ").is_err());
        for bad in [
            "on >secret ~* +@all",
            "on nopass ~*",
            "on #abc ~*",
            "reset on",
            "on ResetPass",
        ] {
            assert!(check_access_string(bad).is_err(), "{bad}");
        }
        assert!(switched_on("off ~* on +@all"));
        assert!(!switched_on("on ~* off"));
        assert!(!switched_on("~* +@all"));
    }
}
