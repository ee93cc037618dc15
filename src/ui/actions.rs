//! The house's words for what a run does to the cloud: one sentence per mutating call (from its operation,
//! its request body and the plan's names for some of the body's values), and the rehearsal's closing
//! summary, derived from the calls it recorded. The request bodies themselves stay as they were: in
//! `events.jsonl`, in `--output json`, and under each sentence with `--verbose`.

use std::collections::BTreeMap;

use serde_json::Value;

pub use crate::engine::events::labels::{
    FINAL_SNAPSHOT, PAUSED_GROUP, PAUSED_PRIMARIES, SECRET_KIND,
};

/// How the plan names some of a body's values (`KmsKeyId` → `alias/orders`, `AuthToken` → where the token
/// is kept), and what a call is for (`final` on the source's last snapshot). Display only.
pub type Labels = BTreeMap<String, String>;

/// One readable line for a mutating call. Unknown calls read as their name and the body's ids.
pub fn sentence(operation: &str, params: &Value, labels: &Labels) -> String {
    let s = |field: &str| text(params, field);
    // The plan's name for a value when it has one, else the value in the body.
    let named = |field: &str| labels.get(field).cloned().or_else(|| s(field));
    match operation {
        "CreateSnapshot" => {
            let what = if labels.contains_key(FINAL_SNAPSHOT) {
                "final snapshot"
            } else {
                "snapshot"
            };
            format!(
                "create {what} {} of {}{}",
                or_unnamed(s("SnapshotName")),
                or_unnamed(s("ReplicationGroupId")),
                encryption(named("KmsKeyId"))
            )
        }
        "CreateReplicationGroup" => create_group(params, labels),
        "CreateUser" => format!(
            "create RBAC user {} (name {}, access `{}`), its password from {}",
            or_unnamed(s("UserId")),
            or_unnamed(s("UserName")),
            or_unnamed(s("AccessString")),
            labels
                .get("Passwords")
                .cloned()
                .unwrap_or_else(|| "its store".into())
        ),
        "CreateUserGroup" => format!(
            "create RBAC user group {} with users {}",
            or_unnamed(s("UserGroupId")),
            params
                .get("UserIds")
                .and_then(Value::as_array)
                .map(|ids| ids
                    .iter()
                    .filter_map(Value::as_str)
                    .collect::<Vec<_>>()
                    .join(", "))
                .unwrap_or_default()
        ),
        "DeleteReplicationGroup" => {
            let id = or_unnamed(s("ReplicationGroupId"));
            match labels.get(FINAL_SNAPSHOT) {
                Some(snapshot) => format!("delete group {id} (final snapshot {snapshot})"),
                None => format!("delete group {id}"),
            }
        }
        "ClientPause" => {
            let on = paused_on(labels, s("endpoint"));
            let bound = params
                .get("timeout_ms")
                .and_then(Value::as_u64)
                .map(|ms| format!(" for at most {ms} ms"))
                .unwrap_or_default();
            format!("pause writes on {on}{bound}")
        }
        "SealSource" => {
            let on = paused_on(labels, s("endpoint"));
            let hours = params
                .get("timeout_ms")
                .and_then(Value::as_u64)
                .map_or(0, |ms| ms / 3_600_000);
            format!(
                "seal {on} after the tail: writes paused {hours} h, so a client left on it fails instead of writing where nothing copies"
            )
        }
        "LiftSeal" => format!(
            "lift the seal on {}: its waiting writes dropped, writes taken again",
            paused_on(labels, s("endpoint"))
        ),
        "PointAlias" => format!(
            "point alias {} at {}{}",
            or_unnamed(s("alias")),
            or_unnamed(s("to")),
            s("from").map(|f| format!(" (now {f})")).unwrap_or_default()
        ),
        "ChangeResourceRecordSets" => format!(
            "point {} (CNAME, TTL {} s) at {}",
            or_unnamed(s("name")),
            params.get("ttl").and_then(Value::as_u64).unwrap_or(0),
            or_unnamed(s("value"))
        ),
        "ModifyReplicationGroup" => match s("TransitEncryptionMode").as_deref() {
            Some("preferred") => format!(
                "turn in-transit encryption on for {} in mode preferred (plain text and TLS both accepted)",
                or_unnamed(s("ReplicationGroupId"))
            ),
            Some("required") => format!(
                "require TLS on {} (plain-text connections dropped)",
                or_unnamed(s("ReplicationGroupId"))
            ),
            _ => match s("AuthTokenUpdateStrategy").as_deref() {
                Some("ROTATE") => format!(
                    "add the new AUTH token to {} beside the current one (AuthTokenUpdateStrategy ROTATE: both open it)",
                    or_unnamed(s("ReplicationGroupId"))
                ),
                Some("SET") => format!(
                    "keep only the new AUTH token on {} (AuthTokenUpdateStrategy SET: the old one is refused)",
                    or_unnamed(s("ReplicationGroupId"))
                ),
                Some("DELETE") => format!(
                    "move {} to RBAC: add user group {} and delete its AUTH token (AuthTokenUpdateStrategy DELETE)",
                    or_unnamed(s("ReplicationGroupId")),
                    params
                        .get("UserGroupIdsToAdd")
                        .and_then(|v| v.get(0))
                        .and_then(Value::as_str)
                        .unwrap_or("(unnamed)")
                ),
                _ => format!("modify group {}", or_unnamed(s("ReplicationGroupId"))),
            },
        },
        "StorePendingAuthToken" => format!(
            "keep a new AUTH token pending in {}",
            or_unnamed(s("store"))
        ),
        "PromoteAuthToken" => format!(
            "make the pending AUTH token current ({} → {})",
            or_unnamed(s("from")),
            or_unnamed(s("to"))
        ),
        "UpdateSecretVersionStage" => format!(
            "move the label {} of Secrets Manager secret {}{}",
            or_unnamed(s("VersionStage")),
            or_unnamed(s("SecretId")),
            s("MoveToVersionId")
                .map(|v| format!(" to version {v}"))
                .unwrap_or_else(|| " off its version".into())
        ),
        "SwitchCommand" => format!("run the switch command `{}`", or_unnamed(s("command"))),
        "StoreAuthToken" => format!(
            "keep a new {} in {}",
            secret_kind(labels),
            or_unnamed(s("store"))
        ),
        "PutSecretValue" => format!(
            "keep a new {} in Secrets Manager secret {}{}",
            secret_kind(labels),
            or_unnamed(s("SecretId")),
            if params["VersionStages"][0] == "AWSPENDING" {
                " (labelled AWSPENDING)"
            } else {
                ""
            }
        ),
        other => {
            let ids = ids(params);
            if ids.is_empty() {
                other.to_string()
            } else {
                format!("{other} {}", ids.join(" "))
            }
        }
    }
}

fn create_group(params: &Value, labels: &Labels) -> String {
    let s = |field: &str| text(params, field);
    let mut details = Vec::new();
    if params.get("AtRestEncryptionEnabled") == Some(&Value::Bool(true)) {
        let key = labels.get("KmsKeyId").cloned().or_else(|| s("KmsKeyId"));
        details.push(match key {
            Some(k) => format!("KMS {k}"),
            None => "encrypted at rest".into(),
        });
    }
    if params.get("TransitEncryptionEnabled") == Some(&Value::Bool(true)) {
        details.push(match s("TransitEncryptionMode") {
            Some(mode) => format!("TLS {mode}"),
            None => "TLS".into(),
        });
    }
    if params.get("AuthToken").is_some() {
        details.push(match labels.get("AuthToken") {
            Some(store) => format!("AUTH token from {store}"),
            None => "AUTH token".into(),
        });
    }
    if let Some(groups) = params.get("UserGroupIds").and_then(Value::as_array) {
        let ids: Vec<&str> = groups.iter().filter_map(Value::as_str).collect();
        details.push(format!(
            "RBAC user group {} (no AUTH token)",
            ids.join(", ")
        ));
    }
    let count = |field: &str| params.get(field).and_then(Value::as_u64);
    match (
        count("NumNodeGroups"),
        count("ReplicasPerNodeGroup"),
        count("NumCacheClusters"),
    ) {
        (Some(shards), Some(replicas), _) => details.push(format!(
            "{shards} shard{} × {} nodes",
            plural(shards),
            replicas + 1
        )),
        (_, _, Some(nodes)) => {
            let replicas = nodes.saturating_sub(1);
            details.push(format!(
                "1 primary and {replicas} replica{}",
                plural(replicas)
            ))
        }
        _ => {}
    }
    if let Some(node_type) = s("CacheNodeType") {
        details.push(node_type);
    }
    format!(
        "create group {} from snapshot {} ({})",
        or_unnamed(s("ReplicationGroupId")),
        or_unnamed(s("SnapshotName")),
        details.join(", ")
    )
}

/// A call as the rehearsal recorded it, for [`plan_summary`].
#[derive(Debug, Clone)]
pub struct RecordedCall {
    pub operation: String,
    pub params: Value,
    pub labels: Labels,
}

/// The rehearsal's last line, Terraform-style: what would be created, changed, repointed and deleted,
/// and how long writes would be paused.
pub fn plan_summary(calls: &[RecordedCall]) -> String {
    let mut snapshots = 0;
    let mut groups = 0;
    let mut tokens = 0;
    let mut passwords = 0;
    let mut users = 0;
    let mut user_groups = 0;
    let mut aliases = 0;
    let mut records = 0;
    let mut commands = 0;
    let mut deletes = 0;
    let mut modifies = 0;
    let mut final_snapshots = 0;
    let mut pause_ms: Option<u64> = None;
    let mut seal_hours: Option<u64> = None;
    let mut others: BTreeMap<&str, usize> = BTreeMap::new();
    for call in calls {
        match call.operation.as_str() {
            "CreateSnapshot" if call.labels.contains_key(FINAL_SNAPSHOT) => final_snapshots += 1,
            "CreateSnapshot" => snapshots += 1,
            "CreateReplicationGroup" => groups += 1,
            "StoreAuthToken" | "PutSecretValue"
                if call.labels.get(SECRET_KIND).map(String::as_str) == Some("RBAC password") =>
            {
                passwords += 1
            }
            "StoreAuthToken" | "PutSecretValue" | "StorePendingAuthToken" => tokens += 1,
            "CreateUser" => users += 1,
            "CreateUserGroup" => user_groups += 1,
            "PromoteAuthToken" | "UpdateSecretVersionStage" => {}
            "PointAlias" => aliases += 1,
            "ChangeResourceRecordSets" => records += 1,
            "SwitchCommand" => commands += 1,
            "DeleteReplicationGroup" => deletes += 1,
            "ModifyReplicationGroup" => modifies += 1,
            "ClientPause" => {
                let ms = call.params.get("timeout_ms").and_then(Value::as_u64);
                pause_ms = pause_ms.max(ms);
            }
            "SealSource" => {
                let ms = call.params.get("timeout_ms").and_then(Value::as_u64);
                seal_hours = seal_hours.max(ms.map(|ms| ms / 3_600_000));
            }
            other => *others.entry(other).or_default() += 1,
        }
    }
    let mut parts = Vec::new();
    let created = [
        counted(snapshots, "snapshot", "snapshots"),
        counted(groups, "group", "groups"),
        counted(users, "RBAC user", "RBAC users"),
        counted(user_groups, "user group", "user groups"),
    ];
    if let Some(list) = and_list(&created) {
        parts.push(format!("{list} to create"));
    }
    let stored = [
        counted(tokens, "AUTH token", "AUTH tokens"),
        counted(passwords, "RBAC password", "RBAC passwords"),
    ];
    if let Some(list) = and_list(&stored) {
        parts.push(format!("{list} to store"));
    }
    let repointed = [
        counted(aliases, "alias", "aliases"),
        counted(records, "DNS record", "DNS records"),
    ];
    if let Some(list) = and_list(&repointed) {
        parts.push(format!("{list} to repoint"));
    }
    if let Some(m) = counted(modifies, "group modification", "group modifications") {
        parts.push(format!("{m} to make in place"));
    }
    if let Some(c) = counted(commands, "switch command", "switch commands") {
        parts.push(format!("{c} to run"));
    }
    if let Some(d) = counted(deletes, "group", "groups") {
        let after = match final_snapshots {
            0 => String::new(),
            1 => " (after an encrypted final snapshot)".into(),
            n => format!(" (after {n} encrypted final snapshots)"),
        };
        parts.push(format!("{d} to delete{after}"));
    } else if let Some(f) = counted(final_snapshots, "final snapshot", "final snapshots") {
        parts.push(format!("{f} to create"));
    }
    for (operation, n) in others {
        parts.push(format!("{operation} ×{n}"));
    }
    let changes = if parts.is_empty() {
        "no changes".to_string()
    } else {
        parts.join(", ")
    };
    let pause = match pause_ms {
        Some(ms) => format!("; writes paused up to {ms} ms"),
        None => "; no write pause".into(),
    };
    let seal = match seal_hours {
        Some(h) => format!("; then the source sealed (writes paused {h} h)"),
        None => String::new(),
    };
    format!("Plan: {changes}{pause}{seal}.")
}

/// What a stored secret is, by its label: an AUTH token unless the step says otherwise.
fn secret_kind(labels: &Labels) -> &str {
    labels.get(SECRET_KIND).map_or("AUTH token", String::as_str)
}

/// What a pause is on: the group's primaries by the plan's name, else the endpoint paused.
fn paused_on(labels: &Labels, endpoint: Option<String>) -> String {
    match (
        labels.get(PAUSED_PRIMARIES),
        labels.get(PAUSED_GROUP).cloned().or(endpoint),
    ) {
        (Some(n), Some(g)) if n != "1" => format!("{n} primaries of {g}"),
        (_, Some(g)) => g,
        (_, None) => "the source".into(),
    }
}

fn text(params: &Value, field: &str) -> Option<String> {
    match params.get(field)? {
        Value::String(s) => Some(s.clone()),
        Value::Null => None,
        other => Some(other.to_string()),
    }
}

fn or_unnamed(value: Option<String>) -> String {
    value.unwrap_or_else(|| "(unnamed)".into())
}

fn encryption(key: Option<String>) -> String {
    match key {
        Some(k) => format!(" encrypted with {k}"),
        None => " with the default key".into(),
    }
}

/// The body's top-level ids and names (`…Id`, `…Name`, strings only): enough to tell calls apart.
fn ids(params: &Value) -> Vec<String> {
    let Some(map) = params.as_object() else {
        return Vec::new();
    };
    map.iter()
        .filter(|(k, _)| {
            let k = k.to_ascii_lowercase();
            k.ends_with("id") || k.ends_with("name")
        })
        .filter_map(|(k, v)| v.as_str().map(|v| format!("{k}={v}")))
        .collect()
}

fn plural(n: u64) -> &'static str {
    if n == 1 { "" } else { "s" }
}

fn counted(n: usize, one: &str, many: &str) -> Option<String> {
    match n {
        0 => None,
        1 => Some(format!("1 {one}")),
        n => Some(format!("{n} {many}")),
    }
}

fn and_list(items: &[Option<String>]) -> Option<String> {
    let items: Vec<&String> = items.iter().flatten().collect();
    match items.as_slice() {
        [] => None,
        [one] => Some(one.to_string()),
        [rest @ .., last] => Some(format!(
            "{} and {last}",
            rest.iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn known_calls_read_as_sentences() {
        let kms = labels(&[("KmsKeyId", "alias/orders")]);
        assert_eq!(
            sentence(
                "CreateSnapshot",
                &json!({"ReplicationGroupId": "orders", "SnapshotName": "s1", "KmsKeyId": "arn:k"}),
                &kms
            ),
            "create snapshot s1 of orders encrypted with alias/orders"
        );
        let create = json!({"ReplicationGroupId": "orders-enc", "SnapshotName": "s1",
            "AtRestEncryptionEnabled": true, "KmsKeyId": "arn:k", "TransitEncryptionEnabled": true,
            "TransitEncryptionMode": "required", "AuthToken": "<redacted>", "NumNodeGroups": 4,
            "ReplicasPerNodeGroup": 1, "CacheNodeType": "cache.t4g.small"});
        let mut l = kms.clone();
        l.insert("AuthToken".into(), "file:/t".into());
        assert_eq!(
            sentence("CreateReplicationGroup", &create, &l),
            "create group orders-enc from snapshot s1 (KMS alias/orders, TLS required, AUTH token from file:/t, 4 shards × 2 nodes, cache.t4g.small)"
        );
        let pause = json!({"endpoint": "redis://h:1/0", "mode": "WRITE", "timeout_ms": 3000});
        assert_eq!(
            sentence(
                "ClientPause",
                &pause,
                &labels(&[("group", "orders"), ("primaries", "3")])
            ),
            "pause writes on 3 primaries of orders for at most 3000 ms"
        );
        let seal = json!({"endpoint": "redis://h:1/0", "mode": "WRITE", "timeout_ms": 86_400_000});
        assert_eq!(
            sentence(
                "SealSource",
                &seal,
                &labels(&[("group", "orders"), ("primaries", "1")])
            ),
            "seal orders after the tail: writes paused 24 h, so a client left on it fails instead of writing where nothing copies"
        );
        assert_eq!(
            sentence(
                "DeleteReplicationGroup",
                &json!({"ReplicationGroupId": "orders", "RetainPrimaryCluster": false}),
                &labels(&[("final", "f1")])
            ),
            "delete group orders (final snapshot f1)"
        );
    }

    #[test]
    fn an_unknown_call_shows_its_name_and_ids_only() {
        let line = sentence(
            "ModifyThing",
            &json!({"ThingId": "t-1", "Secretish": "x", "Nested": {"a": 1}}),
            &Labels::new(),
        );
        assert_eq!(line, "ModifyThing ThingId=t-1");
    }

    #[test]
    fn the_summary_counts_what_the_rehearsal_recorded() {
        let call = |op: &str, params: Value, l: Labels| RecordedCall {
            operation: op.into(),
            params,
            labels: l,
        };
        let calls = vec![
            call("StoreAuthToken", json!({}), Labels::new()),
            call("CreateSnapshot", json!({}), Labels::new()),
            call("CreateReplicationGroup", json!({}), Labels::new()),
            call("ClientPause", json!({"timeout_ms": 3000}), Labels::new()),
            call("PointAlias", json!({}), Labels::new()),
            call("CreateSnapshot", json!({}), labels(&[("final", "f")])),
            call(
                "DeleteReplicationGroup",
                json!({}),
                labels(&[("final", "f")]),
            ),
        ];
        assert_eq!(
            plan_summary(&calls),
            "Plan: 1 snapshot and 1 group to create, 1 AUTH token to store, 1 alias to repoint, 1 group to delete (after an encrypted final snapshot); writes paused up to 3000 ms."
        );
        let mut sealed = calls.clone();
        sealed.push(call(
            "SealSource",
            json!({"timeout_ms": 7_200_000}),
            Labels::new(),
        ));
        assert!(
            plan_summary(&sealed).ends_with(
                "writes paused up to 3000 ms; then the source sealed (writes paused 2 h)."
            ),
            "{}",
            plan_summary(&sealed)
        );
        let secret = |kind: &str| labels(&[("secret", kind)]);
        let rbac = vec![
            call("CreateSnapshot", json!({}), Labels::new()),
            call("StoreAuthToken", json!({}), secret("RBAC password")),
            call("CreateUser", json!({}), Labels::new()),
            call("StoreAuthToken", json!({}), secret("RBAC password")),
            call("CreateUser", json!({}), Labels::new()),
            call("CreateUserGroup", json!({}), Labels::new()),
            call("CreateReplicationGroup", json!({}), Labels::new()),
        ];
        assert_eq!(
            plan_summary(&rbac),
            "Plan: 1 snapshot, 1 group, 2 RBAC users and 1 user group to create, 2 RBAC passwords to store; no write pause."
        );
        assert_eq!(
            sentence(
                "StoreAuthToken",
                &json!({"store": "file:p"}),
                &secret("RBAC password")
            ),
            "keep a new RBAC password in file:p"
        );
        assert_eq!(plan_summary(&[]), "Plan: no changes; no write pause.");
    }
}
