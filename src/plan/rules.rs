//! The individual rules of ElastiCache and of ecmigrate, each returning the broken rule in words.

/// AUTH token rules: 16–128 printable ASCII characters, none of `/`, `"`, `@`.
pub fn check_auth_token(token: &str) -> Result<(), String> {
    let len = token.chars().count();
    if !(16..=128).contains(&len) {
        return Err(format!(
            "an AUTH token must be 16 to 128 characters long (this one has {len})"
        ));
    }
    if let Some(c) = token.chars().find(|c| !(c.is_ascii_graphic())) {
        let _ = c;
        return Err("an AUTH token must be printable ASCII without spaces".into());
    }
    if token.chars().any(|c| matches!(c, '/' | '"' | '@')) {
        return Err("an AUTH token must not contain `/`, `\"` or `@`".into());
    }
    Ok(())
}

/// Replication group id rules: 1–40 characters, letters, digits and hyphens, starting with a letter,
/// no two consecutive hyphens, not ending with a hyphen.
pub fn check_group_id(id: &str) -> Result<(), String> {
    if id.is_empty() || id.len() > 40 {
        return Err(format!(
            "a replication group id must be 1 to 40 characters long (this one has {})",
            id.len()
        ));
    }
    if !id.chars().next().is_some_and(|c| c.is_ascii_alphabetic()) {
        return Err("a replication group id must start with a letter".into());
    }
    if !id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
        return Err("a replication group id may contain only letters, digits and hyphens".into());
    }
    if id.contains("--") {
        return Err("a replication group id must not contain two consecutive hyphens".into());
    }
    if id.ends_with('-') {
        return Err("a replication group id must not end with a hyphen".into());
    }
    Ok(())
}
