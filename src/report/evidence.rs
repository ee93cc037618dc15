//! The words of the evidence pack: the control statement for rule EC-014 with the before/after values,
//! where the groups are, the KMS key, the snapshots, how the data was verified, the writes during the
//! migration and the fence, the steps, who ran it, and the digests to check it by. Built from
//! `report.json`'s values; sentences and tables only.

use serde_json::Value;

use super::doc::{Block, Doc};

/// A value as a table cell or inside a sentence: text as is, `—` for nothing.
fn text(v: &Value) -> String {
    match v {
        Value::Null => "—".into(),
        Value::String(s) => s.clone(),
        Value::Array(items) if items.is_empty() => "none".into(),
        Value::Array(items) => items.iter().map(text).collect::<Vec<_>>().join(", "),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::Object(_) => "(see report.json)".into(),
    }
}

fn code(v: &Value) -> String {
    match v {
        Value::Null => "—".into(),
        other => format!("`{}`", text(other)),
    }
}

fn count(v: &Value) -> u64 {
    v.as_u64().unwrap_or(0)
}

pub fn document(r: &Value, json_sha256: &str) -> Doc {
    let source = &r["source"];
    let target = &r["target"];
    let (source_id, target_id) = (
        text(&source["before"]["ReplicationGroupId"]),
        text(&target["after"]["ReplicationGroupId"]),
    );
    let mut blocks = Vec::new();
    blocks.push(Block::Heading(format!(
        "Control {}: {}",
        text(&r["control"]["rule"]),
        text(&r["control"]["title"])
    )));
    blocks.push(Block::Para(control_statement(r)));
    blocks.push(Block::Table {
        head: vec![
            "attribute".into(),
            format!("`{source_id}` before"),
            format!("`{source_id}` after"),
            format!("`{target_id}` after"),
        ],
        rows: [
            "Status",
            "AtRestEncryptionEnabled",
            "TransitEncryptionEnabled",
            "TransitEncryptionMode",
            "AuthTokenEnabled",
            "KmsKeyId",
        ]
        .iter()
        .map(|attr| {
            vec![
                attr.to_string(),
                text(&source["before"][attr]),
                text(&source["after"][attr]),
                text(&target["after"][attr]),
            ]
        })
        .collect(),
    });

    blocks.push(Block::Heading("Where".into()));
    blocks.push(Block::Table {
        head: vec!["".into(), "value".into()],
        rows: vec![
            vec!["provider".into(), text(&r["provider"])],
            vec!["region".into(), text(&r["region"])],
            vec!["account".into(), text(&r["account"])],
            vec![
                "source group".into(),
                format!(
                    "{} ({})",
                    code(&Value::String(source_id.clone())),
                    text(&source["arn"])
                ),
            ],
            vec![
                "target group".into(),
                format!(
                    "{} ({})",
                    code(&Value::String(target_id.clone())),
                    text(&target["arn"])
                ),
            ],
            match r["user_group_ids"].as_array().filter(|ids| !ids.is_empty()) {
                // RBAC: no AUTH token; the store is the data plane user's password's.
                Some(ids) => vec![
                    "clients authenticate as".into(),
                    format!(
                        "RBAC users of user group {} (no AUTH token); ecmigrate's password kept in {} (never in this report)",
                        ids.iter().map(code).collect::<Vec<_>>().join(", "),
                        code(&r["auth_token_store"])
                    ),
                ],
                None => vec![
                    "AUTH token kept in".into(),
                    format!("{} (never in this report)", code(&r["auth_token_store"])),
                ],
            },
        ],
    });

    let key = &r["kms_key"];
    blocks.push(Block::Heading("KMS key".into()));
    blocks.push(Block::Para(if key.is_null() {
        "The target is encrypted at rest with the AWS managed key of ElastiCache.".into()
    } else {
        format!(
            "Key {} ({}), aliases {}, state **{}** when this report was written ({}).",
            code(&key["key_id"]),
            text(&key["arn"]),
            text(&key["aliases"]),
            text(&key["key_state"]),
            text(&key["described_at"]),
        )
    }));

    let snaps = &r["snapshots"];
    blocks.push(Block::Heading("Snapshots".into()));
    let mut rows = vec![vec![
        code(&snaps["pre_migration"]),
        "taken before the migration, restored into the target".into(),
        code(&snaps["pre_migration_kms_key_id"]),
    ]];
    if !snaps["final"].is_null() {
        rows.push(vec![
            code(&snaps["final"]),
            "final snapshot of the source before its deletion".into(),
            code(&snaps["pre_migration_kms_key_id"]),
        ]);
    }
    blocks.push(Block::Table {
        head: vec!["snapshot".into(), "purpose".into(), "encrypted with".into()],
        rows,
    });
    let left: Vec<String> = snaps["unencrypted_left_alone"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|s| format!("`{}`", text(s)))
        .collect();
    blocks.push(Block::Para(if left.is_empty() {
        "No unencrypted snapshot of the source existed before the migration, and the migration made none.".into()
    } else {
        format!(
            "Unencrypted snapshots of the source that existed before the migration and were left alone (delete them to leave no unencrypted copy): {}.",
            left.join(", ")
        )
    }));

    blocks.extend(verification(&r["verification"]));
    blocks.extend(writes_and_fence(r));

    blocks.push(Block::Heading("Steps".into()));
    blocks.push(Block::Table {
        head: ["step", "status", "attempts", "started", "finished"]
            .map(String::from)
            .to_vec(),
        rows: r["steps"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|s| {
                ["kind", "status", "attempts", "started_at", "finished_at"]
                    .iter()
                    .map(|f| text(&s[f]))
                    .collect()
            })
            .collect(),
    });

    blocks.push(Block::Heading("Run and integrity".into()));
    blocks.push(Block::List(vec![
        format!(
            "Run {} of plan {}, state **{}**, from {} to {}.",
            code(&r["run_id"]),
            code(&r["plan"]),
            text(&r["state"]),
            text(&r["started_at"]),
            text(&r["finished_at"])
        ),
        match r["run_by"]["aws_principal"].as_str() {
            Some(arn) => format!(
                "Run by {} on host {}, as AWS principal `{arn}`.",
                code(&r["run_by"]["user"]),
                code(&r["run_by"]["host"])
            ),
            None => format!(
                "Run by {} on host {}.",
                code(&r["run_by"]["user"]),
                code(&r["run_by"]["host"])
            ),
        },
        format!(
            "SHA-256 of the plan as it ran (its JSON in state.json): `{}`.",
            text(&r["plan_checksum"])
        ),
        format!("SHA-256 of report.json, written with this document: `{json_sha256}`."),
    ]));
    Doc {
        title: format!("Encryption evidence: `{source_id}` → `{target_id}`"),
        blocks,
    }
}

/// The statement an auditor quotes: what the rule asks, what was true before, what is true now.
fn control_statement(r: &Value) -> String {
    let (before, after) = (&r["source"]["before"], &r["target"]["after"]);
    let on = |g: &Value| {
        g["AtRestEncryptionEnabled"] == Value::Bool(true)
            && g["TransitEncryptionEnabled"] == Value::Bool(true)
    };
    let source_gone = r["source"]["after"]["Status"] == "deleted";
    let frameworks = text(&r["control"]["frameworks"]);
    format!(
        "Rule {} (risk level {}; it supports the {frameworks} compliance standards) requires `AtRestEncryptionEnabled` and `TransitEncryptionEnabled` to be true. Before: `{}` had them **{}** and **{}**. After: its data is in `{}`, which has them **{}** and **{}** (key {}, transit mode {}, AUTH {}); `{}` {}. Result: **{}**.",
        text(&r["control"]["rule"]),
        text(&r["control"]["risk_level"]),
        text(&before["ReplicationGroupId"]),
        text(&before["AtRestEncryptionEnabled"]),
        text(&before["TransitEncryptionEnabled"]),
        text(&after["ReplicationGroupId"]),
        text(&after["AtRestEncryptionEnabled"]),
        text(&after["TransitEncryptionEnabled"]),
        code(&after["KmsKeyId"]),
        code(&after["TransitEncryptionMode"]),
        if after["AuthTokenEnabled"] == Value::Bool(true) {
            "on"
        } else {
            "off"
        },
        text(&before["ReplicationGroupId"]),
        if source_gone {
            "was deleted after its encrypted final snapshot"
        } else {
            "still exists (kept by the plan) and still fails the rule until it is deleted"
        },
        if on(after) && source_gone {
            "compliant"
        } else if on(after) {
            "the new group is compliant; the old one remains to be deleted"
        } else {
            "not compliant"
        }
    )
}

fn verification(v: &Value) -> Vec<Block> {
    let mut blocks = vec![Block::Heading("Verification".into())];
    if v.is_null() {
        blocks.push(Block::Para("The plan had no verify step.".into()));
        return blocks;
    }
    blocks.push(Block::Para(format!(
        "The source and the target were compared by type, value and TTL (TTLs within {} ms), {}: {} keys compared, {} differing.",
        text(&v["ttl_tolerance_ms"]),
        text(&v["mode"]),
        count(&v["keys_compared"]),
        count(&v["mismatches"]),
    )));
    if let Some(how) = v["ttl_check"].as_str() {
        blocks.push(Block::Para(format!("TTLs on the target: {how}.")));
    }
    let rows: Vec<Vec<String>> = v["key_counts"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(db, c)| vec![db.clone(), text(&c["source"]), text(&c["target"])])
        .collect();
    if !rows.is_empty() {
        blocks.push(Block::Table {
            head: vec![
                "database".into(),
                "keys on the source".into(),
                "keys on the target".into(),
            ],
            rows,
        });
    }
    blocks
}

fn writes_and_fence(r: &Value) -> Vec<Block> {
    let mut blocks = vec![Block::Heading("Writes during the migration".into())];
    let stream = &r["stream"];
    let mut items = Vec::new();
    if stream["stream_copy"].is_null() {
        items.push("No change stream: writes made after the snapshot were not copied (the plan had no stream_copy step).".to_string());
    } else {
        items.push(format!(
            "Changes made after the snapshot, captured from before it: {} replayed, {} full reconcile pass(es).",
            count(&stream["stream_copy"]["changes_replayed"]),
            count(&stream["stream_copy"]["reconcile_passes"]),
        ));
        items.push(format!(
            "Keys copied inside the write fence: {}.",
            count(&stream["copied_inside_the_fence"])
        ));
        if !stream["late_after_the_switch"].is_null() {
            items.push(format!(
                "Late changes to the old endpoint after the switch, copied: {} (tailed for {} s).",
                count(&stream["late_after_the_switch"]["late_changes"]),
                count(&stream["late_after_the_switch"]["tail_seconds"]),
            ));
        }
    }
    blocks.push(Block::List(items));
    let c = &r["cutover"];
    let outputs = &c["outputs"];
    blocks.push(Block::Heading("Cutover".into()));
    if outputs.is_null() {
        blocks.push(Block::Para("The plan had no cutover step.".into()));
        return blocks;
    }
    let moved = c["clients_moved"].as_array().map_or(0, Vec::len);
    let spot = &outputs["verified_at_switch"];
    blocks.push(Block::Para(format!(
        "At {} clients were switched to `{}` by strategy `{}`. Writes were paused for **{} ms** (bound {} ms) on {} primar{} at once, in {} attempt(s); {} client connection(s) were closed so they reconnect to the new endpoint.{}",
        text(&c["at"]),
        text(&outputs["now"]),
        text(&outputs["strategy"]),
        count(&c["write_pause_ms"]),
        count(&c["max_write_pause_ms"]),
        count(&outputs["primaries_paused"]).max(1),
        if count(&outputs["primaries_paused"]) > 1 { "ies" } else { "y" },
        count(&outputs["fence_attempts"]),
        moved,
        if spot.is_null() {
            String::new()
        } else {
            format!(
                " Inside the pause, {} sampled keys were compared on both sides: {} differed.",
                count(&spot["keys_compared"]),
                count(&spot["differing"])
            )
        }
    )));
    let sealed = &outputs["sealed"];
    if !sealed.is_null() {
        blocks.push(Block::Para(match sealed["error"].as_str() {
            Some(e) if count(&sealed["primaries"]) == 0 => format!(
                "After the tail the source could not be sealed ({e}): clients left on it could still write there."
            ),
            error => format!(
                "After the tail writes were paused on the source's {} primar{} until {} (the seal), so that a client left on the old nodes fails instead of writing where nothing copies; {}.{}",
                count(&sealed["primaries"]),
                if count(&sealed["primaries"]) == 1 { "y" } else { "ies" },
                text(&sealed["until"]),
                if outputs["resumed_after_switch"] == true {
                    "the run had been resumed after the switch, so what changed on the source between the earlier attempt and the seal was not copied".to_string()
                } else {
                    format!("{} key(s) changed before it were copied", count(&sealed["keys_copied"]))
                },
                error.map(|e| format!(" Not everything held: {e}.")).unwrap_or_default()
            ),
        }));
    }
    blocks
}
