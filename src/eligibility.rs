//! Which groups ecmigrate can migrate and by which path: the engine and node-type rules for encryption and
//! the recommended path of a group. `audit`, the wizard and preflight all judge a group here.

use crate::cloud::ReplicationGroup;

/// What fits a group: whether it can be migrated, and the path (`already_encrypted`, `in_place_transit`,
/// `recreate`, or `ineligible: <why>`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assessment {
    pub eligible: bool,
    pub recommended_path: String,
}

/// The path that fits a group: already encrypted, transit enabled in place, or recreated.
pub fn assess(g: &ReplicationGroup) -> Assessment {
    let (eligible, path) = if g.fully_encrypted() {
        (false, "already_encrypted".to_string())
    } else if let Err(why) = engine_supports_encryption(&g.engine_version) {
        (false, format!("ineligible: {why}"))
    } else if g.at_rest_encryption_enabled && engine_major(&g.engine_version) >= 7 {
        (true, "in_place_transit".to_string())
    } else {
        (true, "recreate".to_string())
    };
    Assessment {
        eligible,
        recommended_path: path,
    }
}

/// The major engine version (`7` of `7.0.15`), 0 when unreadable.
pub fn engine_major(version: &str) -> u32 {
    version
        .split('.')
        .next()
        .and_then(|m| m.parse().ok())
        .unwrap_or(0)
}

/// The numbers of a dotted version (`7.0.15` → 7, 0, 15); a part's trailing non-digits are ignored and
/// an unreadable part is 0.
fn version_parts(version: &str) -> Vec<u32> {
    version
        .split('.')
        .map(|p| {
            p.chars()
                .take_while(char::is_ascii_digit)
                .collect::<String>()
        })
        .map(|p| p.parse().unwrap_or(0))
        .collect()
}

/// At-rest and in-transit encryption need Redis OSS 3.2.6, 4.0.10 or later (any Valkey).
pub fn engine_supports_encryption(version: &str) -> std::result::Result<(), String> {
    if version.trim().is_empty() {
        return Err("the engine version is unknown (none of the group's member clusters could be described)".into());
    }
    let parts = version_parts(version);
    let v = |i: usize| parts.get(i).copied().unwrap_or(0);
    let ok = match (v(0), v(1)) {
        (3, 2) => v(2) == 6,
        (4, 0) => v(2) >= 10,
        (major, _) => major >= 5 || (major == 4 && v(1) > 0),
    };
    if ok {
        Ok(())
    } else {
        Err(format!(
            "engine version {version} does not support encryption (3.2.6, 4.0.10 or later is needed)"
        ))
    }
}

/// Previous-generation node families (EC2-Classic era) cannot run an encrypted group; every current
/// family can. A type that is not `cache.FAMILY.SIZE` is left to the cloud to judge.
pub fn node_type_supports_encryption(node_type: &str) -> std::result::Result<(), String> {
    const PREVIOUS_GENERATION: &[&str] = &["t1", "m1", "m2", "m3", "c1", "r3"];
    let family = node_type.split('.').nth(1).unwrap_or_default();
    if PREVIOUS_GENERATION.contains(&family) {
        Err(format!(
            "node type {node_type} is a previous-generation type ({family}) that does not support encryption"
        ))
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::engine_supports_encryption as ok;

    #[test]
    fn node_types_that_support_encryption() {
        use super::node_type_supports_encryption as nt;
        for t in [
            "cache.t3.micro",
            "cache.r7g.large",
            "cache.m5.xlarge",
            "cache.sandbox.micro",
        ] {
            assert!(nt(t).is_ok(), "{t}");
        }
        for t in [
            "cache.t1.micro",
            "cache.m1.small",
            "cache.m3.medium",
            "cache.c1.xlarge",
            "cache.r3.large",
        ] {
            assert!(nt(t).is_err(), "{t}");
        }
    }

    #[test]
    fn engine_versions_that_support_encryption() {
        for v in [
            "3.2.6", "4.0.10", "4.0.14", "5.0.6", "6.x", "6.2", "7.0.15", "7.1",
        ] {
            assert!(ok(v).is_ok(), "{v}");
        }
        for v in ["2.8.24", "3.2.4", "3.2.10", "4.0.9", ""] {
            assert!(ok(v).is_err(), "{v}");
        }
    }
}

/// In-transit encryption switched on in place (ModifyReplicationGroup, mode `preferred` then `required`).
/// The current ElastiCache guide ("Enabling in-transit encryption on a node-based Redis OSS cluster using
/// Python"): "ElastiCache supports online TLS migration only for clusters with Valkey version 7.2 and above
/// or Redis OSS version 7.0 or above." So Redis OSS 7.0 (any patch) and Valkey 7.2. The 7.0.5 some
/// documents name is the Terraform provider's own line (below it, the provider replaces the group instead
/// of modifying it), not ElastiCache's: see [`terraform_replaces_below`].
pub fn in_place_transit_supported(engine: &str, version: &str) -> std::result::Result<(), String> {
    let parts = version_parts(version);
    let v = |i: usize| parts.get(i).copied().unwrap_or(0);
    let valkey = engine.eq_ignore_ascii_case("valkey");
    let (ok, needed) = if valkey {
        ((v(0), v(1)) >= (7, 2), "Valkey 7.2 or later")
    } else {
        (v(0) >= 7, "Redis OSS 7.0 or later")
    };
    if version.trim().is_empty() {
        return Err("the engine version is unknown (none of the group's member clusters could be described)".into());
    }
    if ok {
        Ok(())
    } else {
        Err(format!(
            "in-transit encryption can be switched on in place only on {needed}; this group runs {} {version}",
            if valkey { "Valkey" } else { "Redis OSS" }
        ))
    }
}

/// Below Redis OSS 7.0.5, Terraform's aws provider replaces a group whose `transit_encryption_enabled`
/// changes (its documentation: "Changing this argument with an engine_version < 7.0.5 will force a
/// replacement"). `Some(note)` for such a group.
pub fn terraform_replaces_below(engine: &str, version: &str) -> Option<String> {
    if engine.eq_ignore_ascii_case("valkey") {
        return None;
    }
    let parts = version_parts(version);
    let v = |i: usize| parts.get(i).copied().unwrap_or(0);
    ((v(0), v(1), v(2)) < (7, 0, 5)).then(|| {
        format!(
            "engine {version} is below 7.0.5: if Terraform manages this group, set transit_encryption_enabled and transit_encryption_mode in its configuration only after upgrading the engine, or the aws provider will plan to replace the group"
        )
    })
}

#[cfg(test)]
mod in_place_tests {
    use super::*;

    #[test]
    fn in_place_transit_needs_redis_7_or_valkey_7_2() {
        assert!(in_place_transit_supported("redis", "7.0.0").is_ok());
        assert!(in_place_transit_supported("redis", "7.0.15").is_ok());
        assert!(in_place_transit_supported("redis", "7.1.0").is_ok());
        assert!(in_place_transit_supported("redis", "6.2.6").is_err());
        assert!(in_place_transit_supported("valkey", "7.2.4").is_ok());
        assert!(in_place_transit_supported("valkey", "8.0.1").is_ok());
        assert!(in_place_transit_supported("valkey", "7.1.0").is_err());
        assert!(in_place_transit_supported("redis", "").is_err());
        assert!(terraform_replaces_below("redis", "7.0.4").is_some());
        assert!(terraform_replaces_below("redis", "7.0.5").is_none());
        assert!(terraform_replaces_below("valkey", "7.2.0").is_none());
    }
}
