//! The individual rules of ElastiCache and of ecmigrate, each returning the broken rule in words.
//!
//! Messages are lowercase fragments. They never repeat a secret; for other values they may say
//! what was found (a length, a character) so the operator sees what to fix.

/// The special characters an AUTH token may contain besides ASCII letters and digits.
pub const AUTH_TOKEN_SPECIALS: &str = "!&#$^<>-";

/// AUTH token rules as the current CreateReplicationGroup / ModifyReplicationGroup API reference states
/// them: 16–128 printable ASCII characters, and "the only permitted printable special characters are
/// `!`, `&`, `#`, `$`, `^`, `<`, `>`, and `-`". Older AWS documents (and blog posts) only forbid `/`, `"`
/// and `@`; AWS refuses the rest too, so the stricter rule is the one checked.
///
/// The message names the refused character's class (a space, a control or non-ASCII character) or, for
/// a printable special character, the character itself; never the token.
pub fn check_auth_token(token: &str) -> Result<(), String> {
    let len = token.chars().count();
    if !(16..=128).contains(&len) {
        return Err(format!(
            "an AUTH token must be 16 to 128 characters long (this one has {len})"
        ));
    }
    let Some(c) = token
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || AUTH_TOKEN_SPECIALS.contains(*c)))
    else {
        return Ok(());
    };
    let found = if c.is_ascii_graphic() {
        describe_char(c)
    } else if c == ' ' {
        "a space".into()
    } else if c.is_ascii() {
        "a control character".into()
    } else {
        "a non-ASCII character".into()
    };
    Err(format!(
        "an AUTH token may contain only ASCII letters, digits and the special characters `{AUTH_TOKEN_SPECIALS}` (this one contains {found})"
    ))
}

const GROUP_ID_RULE: &str = "must be 1 to 40 characters: letters, digits and hyphens, starting with a letter, without `--` or a trailing hyphen";

/// The ElastiCache naming rule shared by replication group ids and snapshot names: `max` characters
/// at most, letters, digits and hyphens, starting with a letter, no `--`, no trailing hyphen.
fn check_elasticache_name(id: &str, max: usize, rule: &str) -> Result<(), String> {
    let len = id.chars().count();
    let why = if len == 0 {
        Some("it is empty".to_string())
    } else if len > max {
        Some(format!("got {len} characters"))
    } else if !id.starts_with(|c: char| c.is_ascii_alphabetic()) {
        Some("it does not start with a letter".into())
    } else if let Some(c) = id
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || *c == '-'))
    {
        Some(format!("it contains {}", describe_char(c)))
    } else if id.contains("--") {
        Some("it contains `--`".into())
    } else if id.ends_with('-') {
        Some("it ends with a hyphen".into())
    } else {
        None
    };
    match why {
        Some(why) => Err(format!("{rule} ({why})")),
        None => Ok(()),
    }
}

fn describe_char(c: char) -> String {
    if c == ' ' {
        "a space".into()
    } else if c == '`' {
        "a backtick".into()
    } else if c.is_ascii_graphic() {
        format!("`{c}`")
    } else if !c.is_ascii() && !c.is_control() && !c.is_whitespace() {
        format!("`{c}`, U+{:04X}, which is not ASCII", c as u32)
    } else {
        format!("the character U+{:04X}", c as u32)
    }
}

/// Replication group id rules, as the CreateReplicationGroup API reference states them: 1–40
/// characters, letters, digits and hyphens, starting with a letter, no two consecutive hyphens, not
/// ending with a hyphen. AWS accepts upper-case letters but stores the id in lower case, so ids that
/// differ only in case name one group (plan validation compares source and target that way).
pub fn check_group_id(id: &str) -> Result<(), String> {
    check_elasticache_name(id, 40, GROUP_ID_RULE)
}

/// Snapshot name rules (CreateSnapshot `SnapshotName`, DeleteReplicationGroup
/// `FinalSnapshotIdentifier`): 1–255 characters, letters, digits and hyphens, starting with a letter,
/// no `--`, no trailing hyphen. The API reference states no rule for these two fields; this is the
/// ElastiCache naming rule of the other identifiers with the 255-character bound the API gives
/// snapshot names elsewhere (CreateServerlessCacheSnapshot), so a name passing it is one AWS takes.
pub fn check_snapshot_name(name: &str) -> Result<(), String> {
    check_elasticache_name(
        name,
        255,
        "must be 1 to 255 characters: letters, digits and hyphens, starting with a letter, without `--` or a trailing hyphen",
    )
}

/// The plan's name becomes a folder name: 1–64 characters of `[A-Za-z0-9._-]`, starting with an
/// ASCII letter or digit (so no `.`, `..`, hidden folders or path separators). ASCII only: the folder
/// must mean the same on every file system and in every locale a resumed run may use.
pub fn check_plan_name(name: &str) -> Result<(), String> {
    const RULE: &str = "becomes the state's folder name, so it must be 1 to 64 characters, each an ASCII letter, digit, `.`, `_` or `-`, the first an ASCII letter or digit";
    let len = name.chars().count();
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
    let why = if len == 0 {
        Some("it is empty".to_string())
    } else if len > 64 {
        Some(format!("got {len} characters"))
    } else if name == "." || name == ".." {
        Some(format!("`{name}` is not a folder name"))
    } else if let Some((i, c)) = name.chars().enumerate().find(|(_, c)| !allowed(*c)) {
        let what = match c {
            '/' | '\\' => format!("`{c}`, a path separator"),
            _ => describe_char(c),
        };
        Some(format!("character {} is {what}", i + 1))
    } else {
        name.chars()
            .next()
            .filter(|c| !c.is_ascii_alphanumeric())
            .map(|c| format!("it starts with {}", describe_char(c)))
    };
    match why {
        Some(why) => Err(format!("{RULE} ({why})")),
        None => Ok(()),
    }
}

/// An AWS region name such as `us-east-1`, `eu-central-2` or `us-gov-west-1`.
pub fn check_region(region: &str) -> Result<(), String> {
    const RULE: &str = "must be an AWS region such as `us-east-1` or `us-gov-west-1`";
    let parts: Vec<&str> = region.split('-').collect();
    let lower = |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_lowercase());
    let digits = |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_digit());
    let ok = match parts.as_slice() {
        [cc, area, n] => cc.len() == 2 && lower(cc) && lower(area) && digits(n),
        [cc, gov, area, n] => {
            cc.len() == 2 && lower(cc) && *gov == "gov" && lower(area) && digits(n)
        }
        _ => false,
    };
    if ok { Ok(()) } else { Err(RULE.into()) }
}

/// Regions where ElastiCache encrypts at rest only with its service-managed key: "The option to use
/// customer managed key for encryption at rest is not available in AWS GovCloud (us-gov-east-1 and
/// us-gov-west-1) regions" (ElastiCache user guide, At-Rest Encryption Conditions, as of 2026). The older
/// reference this project started from also listed cn-north-1, cn-northwest-1 and ap-northeast-3 as
/// without at-rest encryption at all; the current page no longer does, so they are not refused here.
pub const NO_CUSTOMER_MANAGED_KEY_REGIONS: &[&str] = &["us-gov-east-1", "us-gov-west-1"];

/// A customer managed key can encrypt a group in `region`: the region offers them, and a key named by
/// ARN lives there (KMS keys are regional; ElastiCache cannot use another region's).
pub fn check_key_in_region(key: &str, region: &str) -> Result<(), String> {
    if NO_CUSTOMER_MANAGED_KEY_REGIONS.contains(&region) {
        return Err(format!(
            "{region} offers at-rest encryption only with the service-managed key, and ecmigrate needs a customer managed key to encrypt the snapshots of an unencrypted group"
        ));
    }
    if let Some(key_region) = key.strip_prefix("arn:").and_then(|a| a.split(':').nth(2))
        && key_region != region
    {
        return Err(format!(
            "the key is in {key_region}, the group in {region}: a KMS key can only encrypt groups of its own region"
        ));
    }
    Ok(())
}

/// An AWS profile name: non-empty, no whitespace at either end.
pub fn check_profile(profile: &str) -> Result<(), String> {
    if profile.trim().is_empty() {
        return Err(
            "must not be empty: name a profile from ~/.aws/config, or leave `profile` out".into(),
        );
    }
    if profile.trim() != profile {
        return Err("must not start or end with whitespace".into());
    }
    Ok(())
}

/// A data-plane endpoint `host:port`: host non-empty (IPv6 in brackets), port 1–65535.
pub fn check_endpoint(endpoint: &str) -> Result<(), String> {
    const RULE: &str = "must be `host:port` with a port from 1 to 65535, an IPv6 host in brackets like `[::1]:6379`";
    let (host, port) = if let Some(rest) = endpoint.strip_prefix('[') {
        match rest.split_once("]:") {
            Some((h, p))
                if !h.is_empty()
                    && h.contains(':')
                    && h.chars()
                        .all(|c| c.is_ascii_hexdigit() || c == ':' || c == '.') =>
            {
                (h, p)
            }
            _ => {
                return Err(format!(
                    "{RULE} (the IPv6 address in brackets is malformed)"
                ));
            }
        }
    } else {
        match endpoint.rsplit_once(':') {
            Some((h, p)) => (h, p),
            None => return Err(format!("{RULE} (no port)")),
        }
    };
    if host.is_empty() {
        return Err(format!("{RULE} (the host is empty)"));
    }
    if !endpoint.starts_with('[') && host.contains(':') {
        return Err(format!("{RULE} (put an IPv6 host in brackets)"));
    }
    if let Some(c) = host
        .chars()
        .find(|c| c.is_whitespace() || matches!(c, '/' | '@' | '[' | ']'))
    {
        return Err(format!("{RULE} (the host contains {})", describe_char(c)));
    }
    if port.is_empty() || !port.chars().all(|c| c.is_ascii_digit()) {
        return Err(format!("{RULE} (the port is not a number)"));
    }
    match port.parse::<u32>() {
        Ok(p) if (1..=65535).contains(&p) => Ok(()),
        _ => Err(format!("{RULE} (port {port} is out of range)")),
    }
}

fn is_uuid(s: &str) -> bool {
    let groups: Vec<&str> = s.split('-').collect();
    groups.len() == 5
        && groups
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(g, n)| g.len() == n && g.chars().all(|c| c.is_ascii_hexdigit()))
}

fn is_mrk(s: &str) -> bool {
    s.strip_prefix("mrk-").is_some_and(|h| {
        h.len() == 32
            && h.chars()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
    })
}

fn check_alias_name(alias: &str) -> Result<(), String> {
    let name = alias.strip_prefix("alias/").unwrap_or(alias);
    if name.is_empty() || name.len() > 250 {
        return Err("an alias name must be 1 to 250 characters".into());
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '/' | '_' | '-'))
    {
        return Err("an alias name may contain only letters, digits, `/`, `_` and `-`".into());
    }
    if name.starts_with("aws/") && name != "aws/elasticache" {
        return Err("`alias/aws/…` is reserved for AWS managed keys; only `alias/aws/elasticache` is allowed".into());
    }
    Ok(())
}

/// A KMS key reference: key id (UUID), multi-region key id (`mrk-…`), `alias/NAME`, or a key or alias ARN.
pub fn check_kms_key_id(key: &str) -> Result<(), String> {
    const RULE: &str = "must be a KMS key id (UUID), a multi-region key id (`mrk-…`), `alias/NAME`, or a key or alias ARN (`arn:aws:kms:REGION:ACCOUNT:key/…` or `…:alias/…`)";
    if is_uuid(key) || is_mrk(key) {
        return Ok(());
    }
    if key.starts_with("alias/") {
        return check_alias_name(key).map_err(|e| format!("{RULE} ({e})"));
    }
    if let Some(rest) = key.strip_prefix("arn:") {
        let parts: Vec<&str> = rest.splitn(5, ':').collect();
        let [partition, service, region, account, resource] = parts.as_slice() else {
            return Err(format!("{RULE} (the ARN has too few parts)"));
        };
        let partition_ok = partition.strip_prefix("aws").is_some_and(|p| {
            p.is_empty()
                || (p.starts_with('-') && p.chars().all(|c| c.is_ascii_lowercase() || c == '-'))
        });
        if !partition_ok {
            return Err(format!(
                "{RULE} (the ARN's partition must be `aws` or `aws-…`)"
            ));
        }
        if *service != "kms" {
            return Err(format!("{RULE} (the ARN's service must be `kms`)"));
        }
        if check_region(region).is_err() {
            return Err(format!("{RULE} (bad region in the ARN)"));
        }
        if !(account.len() == 12 && account.chars().all(|c| c.is_ascii_digit())) {
            return Err(format!("{RULE} (the account must be 12 digits)"));
        }
        if let Some(id) = resource.strip_prefix("key/") {
            if is_uuid(id) || is_mrk(id) {
                return Ok(());
            }
            return Err(format!(
                "{RULE} (the key id in the ARN is not a UUID or `mrk-` id)"
            ));
        }
        if resource.starts_with("alias/") {
            return check_alias_name(resource).map_err(|e| format!("{RULE} ({e})"));
        }
        return Err(format!(
            "{RULE} (the ARN's resource must be `key/…` or `alias/…`)"
        ));
    }
    Err(RULE.into())
}

/// An environment variable name: `[A-Za-z_][A-Za-z0-9_]*`.
pub fn check_env_name(name: &str) -> Result<(), String> {
    let ok = name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if ok {
        Ok(())
    } else {
        Err("must be an environment variable name: letters, digits and `_`, not starting with a digit".into())
    }
}

/// A Secrets Manager secret name (1–512 of letters, digits and `/_+=.@-`) or a secret ARN.
pub fn check_secret_id(id: &str) -> Result<(), String> {
    if id.starts_with("arn:") {
        let parts: Vec<&str> = id.splitn(7, ':').collect();
        return if parts.len() == 7
            && parts[2] == "secretsmanager"
            && parts[5] == "secret"
            && !parts[6].is_empty()
        {
            Ok(())
        } else {
            Err("must be a secret name or an ARN like arn:aws:secretsmanager:REGION:ACCOUNT:secret:NAME".into())
        };
    }
    let ok = (1..=512).contains(&id.len())
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "/_+=.@-".contains(c));
    if ok {
        Ok(())
    } else {
        Err("must be a secret name: 1 to 512 letters, digits and `/_+=.@-`, or a secret ARN".into())
    }
}

/// A node type such as `cache.r7g.large`.
pub fn check_cache_node_type(t: &str) -> Result<(), String> {
    let rule =
        "must be a node type such as `cache.r7g.large` (`cache.<family>.<size>`, lower case)";
    let part = |s: &str| {
        !s.is_empty()
            && s.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
    };
    match t.split('.').collect::<Vec<_>>().as_slice() {
        ["cache", family, size] if part(family) && part(size) => Ok(()),
        _ => Err(rule.into()),
    }
}

/// A VPC security group id: `sg-` and 8 to 17 lower-case hex digits.
pub fn check_security_group_id(id: &str) -> Result<(), String> {
    match id.strip_prefix("sg-") {
        Some(h)
            if (8..=17).contains(&h.len())
                && h.chars()
                    .all(|c| c.is_ascii_digit() || matches!(c, 'a'..='f')) =>
        {
            Ok(())
        }
        _ => Err("must be a security group id: `sg-` and 8 to 17 lower-case hex digits".into()),
    }
}

/// The most tags AWS keeps on one resource (the AWS tagging rules; `aws:` tags do not count).
pub const MAX_TAGS: usize = 50;

/// How many tags a resource may be given: at most [`MAX_TAGS`].
pub fn check_tag_count(count: usize) -> Result<(), String> {
    if count > MAX_TAGS {
        return Err(format!("at most {MAX_TAGS} tags are allowed (got {count})"));
    }
    Ok(())
}

/// The characters of an ElastiCache tag key or value besides ASCII letters and digits.
const TAG_SPECIALS: &str = " _.:/=+-@";

/// A resource tag, per the ElastiCache tag schema (`AWS::ElastiCache::…` Tag in the CloudFormation
/// reference; the ElastiCache API reference gives no rule of its own): key 1–128 characters, value at
/// most 256, both of ASCII letters, digits, spaces and `_ . : / = + - @`; a key must not start with
/// `aws:` in any case (reserved for AWS by the AWS tagging rules).
pub fn check_tag(key: &str, value: &str) -> Result<(), String> {
    let klen = key.chars().count();
    if !(1..=128).contains(&klen) {
        return Err(format!(
            "a tag key must be 1 to 128 characters (got {klen})"
        ));
    }
    if key.to_ascii_lowercase().starts_with("aws:") {
        return Err("a tag key must not start with `aws:` (reserved for AWS)".into());
    }
    let vlen = value.chars().count();
    if vlen > 256 {
        return Err(format!(
            "a tag value must be at most 256 characters (got {vlen})"
        ));
    }
    for (what, text) in [("key", key), ("value", value)] {
        if let Some(c) = text
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || TAG_SPECIALS.contains(*c)))
        {
            return Err(format!(
                "a tag {what} may contain only ASCII letters, digits, spaces and `_ . : / = + - @` (it contains {})",
                describe_char(c)
            ));
        }
    }
    Ok(())
}

/// A sandbox endpoint alias: 1–63 characters of `[a-z0-9-]`, starting with a letter.
pub fn check_alias(alias: &str) -> Result<(), String> {
    const RULE: &str = "must be 1 to 63 characters: lower-case letters, digits and hyphens, starting with a letter";
    let len = alias.chars().count();
    if !(1..=63).contains(&len) {
        return Err(format!("{RULE} (got {len} characters)"));
    }
    if !alias.starts_with(|c: char| c.is_ascii_lowercase()) {
        return Err(format!(
            "{RULE} (it does not start with a lower-case letter)"
        ));
    }
    if let Some(c) = alias
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-'))
    {
        return Err(format!("{RULE} (it contains {})", describe_char(c)));
    }
    Ok(())
}

/// A number within `lo..=hi`.
pub fn check_range(value: u64, lo: u64, hi: u64) -> Result<(), String> {
    if (lo..=hi).contains(&value) {
        Ok(())
    } else {
        Err(format!("must be from {lo} to {hi} (got {value})"))
    }
}

/// A Route53 hosted zone id: `Z` and upper-case letters or digits, up to 32 characters in all, with or
/// without the `/hostedzone/` prefix the API returns.
pub fn check_hosted_zone_id(id: &str) -> Result<(), String> {
    const RULE: &str = "must be a Route53 hosted zone id: upper-case letters and digits, up to 32 characters (e.g. `Z0123456789ABCDEFGHIJ`)";
    let bare = id.strip_prefix("/hostedzone/").unwrap_or(id);
    if bare.is_empty() || bare.len() > 32 {
        return Err(format!("{RULE} (got {} characters)", bare.len()));
    }
    if let Some(c) = bare
        .chars()
        .find(|c| !(c.is_ascii_uppercase() || c.is_ascii_digit()))
    {
        return Err(format!("{RULE} (it contains {})", describe_char(c)));
    }
    Ok(())
}

/// A DNS name for a CNAME record: dot-separated labels of 1 to 63 letters, digits, hyphens or
/// underscores, not starting or ending with a hyphen, at most 253 characters, an optional final dot.
pub fn check_dns_name(name: &str) -> Result<(), String> {
    const RULE: &str = "must be a DNS name of dot-separated labels (1 to 63 letters, digits, `-` or `_`, no label starting or ending with `-`), at most 253 characters";
    let bare = name.strip_suffix('.').unwrap_or(name);
    if bare.is_empty() || bare.len() > 253 {
        return Err(format!("{RULE} (got {} characters)", bare.len()));
    }
    if !bare.contains('.') {
        return Err(format!("{RULE} (a record needs its zone: `NAME.ZONE`)"));
    }
    for label in bare.split('.') {
        if label.is_empty() || label.len() > 63 {
            return Err(format!(
                "{RULE} (label `{label}` has {} characters)",
                label.len()
            ));
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err(format!("{RULE} (label `{label}` starts or ends with `-`)"));
        }
        if let Some(c) = label
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || *c == '-' || *c == '_'))
        {
            return Err(format!("{RULE} (it contains {})", describe_char(c)));
        }
    }
    Ok(())
}
