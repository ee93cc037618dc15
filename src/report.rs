//! The evidence report of a finished run, for the compliance team: `report.json` and `report.md` beside the
//! state. Source and target encryption attributes before and after, snapshot names, every step with its
//! times, how the data was verified, the changes streamed, the cutover, who ran it and the plan checksum.
//! It is built from the state file and a fresh describe of both groups; it never holds a token (the state
//! holds none, and only the token store's reference is copied).

use std::path::PathBuf;

use serde_json::{Value, json};

use crate::cloud::CloudRead;
use crate::engine::state::{RunState, write_atomic};
use crate::plan::{LoadedPlan, StepKind};

pub struct ReportFiles {
    pub json: PathBuf,
    pub markdown: PathBuf,
}

fn output(state: &RunState, kind: StepKind, key: &str) -> Value {
    state
        .outputs_of(kind)
        .and_then(|o| o.get(key).cloned())
        .unwrap_or(Value::Null)
}

/// Who ran it: the login name and the host name, as the system knows them.
fn operator() -> (String, String) {
    let user = std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_else(|_| {
            // SAFETY: getuid has no preconditions.
            format!("uid {}", unsafe { libc::getuid() })
        });
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname NUL-terminates within it on success.
    let host = if unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) } == 0 {
        let end = buf.iter().position(|b| *b == 0).unwrap_or(buf.len());
        String::from_utf8_lossy(&buf[..end]).into_owned()
    } else {
        "unknown".into()
    };
    (user, host)
}

/// Build and write the report of a finished run.
pub async fn write(
    state: &RunState,
    plan: &LoadedPlan,
    cloud: &dyn CloudRead,
    dir: &std::path::Path,
) -> Result<ReportFiles, String> {
    let source_id = &plan.plan.source.replication_group_id;
    let target_id = &plan.plan.target.replication_group_id;
    let describe = async |id: &str| -> Value {
        match cloud.describe_group(id).await {
            Ok(Some(g)) => g.encryption_attributes(),
            Ok(None) => json!({ "ReplicationGroupId": id, "Status": "deleted" }),
            Err(e) => json!({ "ReplicationGroupId": id, "Status": format!("unknown: {e}") }),
        }
    };
    let source_after = describe(source_id).await;
    let target_after = describe(target_id).await;
    let (user, host) = operator();
    let steps: Vec<Value> = state
        .steps
        .iter()
        .map(|s| {
            json!({
                "kind": s.kind,
                "status": s.status,
                "attempts": s.attempt,
                "started_at": s.started_at,
                "finished_at": s.finished_at,
            })
        })
        .collect();
    let cutover = state.steps.iter().find(|s| s.kind == StepKind::Cutover);
    let report = json!({
        "plan": state.plan_name,
        "plan_checksum": state.plan_checksum,
        "run_id": state.run_id,
        "provider": plan.plan.provider.as_str(),
        "state": state.state.as_str(),
        "run_by": { "user": user, "host": host },
        "started_at": state.created_at,
        "finished_at": state.updated_at,
        "source": { "before": output(state, StepKind::Preflight, "source_before"), "after": source_after },
        "target": {
            "before": { "ReplicationGroupId": target_id, "Status": "did not exist" },
            "after": target_after,
        },
        "auth_token_store": output(state, StepKind::RestoreEncrypted, "auth_token_store"),
        "snapshots": {
            "pre_migration": output(state, StepKind::Backup, "snapshot_name"),
            "pre_migration_kms_key_id": output(state, StepKind::Backup, "kms_key_id"),
            "final": output(state, StepKind::DeleteSource, "final_snapshot_name"),
            "unencrypted_left_alone": output(state, StepKind::Preflight, "unencrypted_snapshots"),
        },
        "verification": state.outputs_of(StepKind::Verify).cloned().map(Value::Object).unwrap_or(Value::Null),
        "stream": {
            "stream_copy": state.outputs_of(StepKind::StreamCopy).cloned().map(Value::Object).unwrap_or(Value::Null),
            "copied_inside_the_fence": output(state, StepKind::Cutover, "keys_copied_in_fence"),
            "late_after_the_switch": output(state, StepKind::Cutover, "late"),
            "final": output(state, StepKind::Cutover, "stream"),
        },
        "cutover": {
            "at": cutover.and_then(|c| c.finished_at),
            "outputs": cutover.map(|c| Value::Object(c.outputs.clone())).unwrap_or(Value::Null),
            "write_pause_ms": output(state, StepKind::Cutover, "write_pause_ms"),
            "max_write_pause_ms": output(state, StepKind::Cutover, "max_write_pause_ms"),
            "fence_attempts": output(state, StepKind::Cutover, "attempts"),
            "clients_moved": output(state, StepKind::Cutover, "clients_disconnected"),
        },
        "steps": steps,
    });
    let json_path = dir.join("report.json");
    let md_path = dir.join("report.md");
    write_atomic(
        &json_path,
        serde_json::to_string_pretty(&report)
            .expect("json")
            .as_bytes(),
    )
    .map_err(|e| format!("writing {}: {e}", json_path.display()))?;
    write_atomic(&md_path, markdown(&report).as_bytes())
        .map_err(|e| format!("writing {}: {e}", md_path.display()))?;
    Ok(ReportFiles {
        json: json_path,
        markdown: md_path,
    })
}

fn cell(v: &Value) -> String {
    match v {
        Value::Null => "—".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn markdown(r: &Value) -> String {
    let mut md = String::new();
    md.push_str(&format!(
        "# Encryption migration report: `{}`\n\n",
        cell(&r["plan"])
    ));
    md.push_str(&format!(
        "Run `{}` on provider `{}`, state **{}**, run by `{}` on `{}`, from {} to {}.  \nPlan checksum (SHA-256): `{}`\n\n",
        cell(&r["run_id"]),
        cell(&r["provider"]),
        cell(&r["state"]),
        cell(&r["run_by"]["user"]),
        cell(&r["run_by"]["host"]),
        cell(&r["started_at"]),
        cell(&r["finished_at"]),
        cell(&r["plan_checksum"]),
    ));
    md.push_str("## Encryption, before and after\n\n| group | when | status | AtRestEncryptionEnabled | TransitEncryptionEnabled | TransitEncryptionMode | AuthTokenEnabled | KmsKeyId |\n|---|---|---|---|---|---|---|---|\n");
    for side in ["source", "target"] {
        for when in ["before", "after"] {
            let g = &r[side][when];
            md.push_str(&format!(
                "| {} `{}` | {when} | {} | {} | {} | {} | {} | {} |\n",
                side,
                cell(&g["ReplicationGroupId"]),
                cell(&g["Status"]),
                cell(&g["AtRestEncryptionEnabled"]),
                cell(&g["TransitEncryptionEnabled"]),
                cell(&g["TransitEncryptionMode"]),
                cell(&g["AuthTokenEnabled"]),
                cell(&g["KmsKeyId"]),
            ));
        }
    }
    md.push_str(&format!(
        "\nThe AUTH token is kept in `{}` (this report never holds it).\n\n## Snapshots\n\n- pre-migration: `{}` (encrypted with `{}`)\n- final snapshot of the source: `{}`\n- unencrypted snapshots that existed before and were left alone: {}\n\n",
        cell(&r["auth_token_store"]),
        cell(&r["snapshots"]["pre_migration"]),
        cell(&r["snapshots"]["pre_migration_kms_key_id"]),
        cell(&r["snapshots"]["final"]),
        cell(&r["snapshots"]["unencrypted_left_alone"]),
    ));
    md.push_str(&format!(
        "## Verification\n\n{}\n\n## Writes during the migration\n\n- stream_copy: {}\n- copied inside the write fence: {}\n- late, after the switch: {}\n- final catch-up: {}\n\n## Cutover\n\nAt {}; writes paused {} ms (bound {} ms); attempts: {}; client connections moved: {}.  \n{}\n\n",
        cell(&r["verification"]),
        cell(&r["stream"]["stream_copy"]),
        cell(&r["stream"]["copied_inside_the_fence"]),
        cell(&r["stream"]["late_after_the_switch"]),
        cell(&r["stream"]["final"]),
        cell(&r["cutover"]["at"]),
        cell(&r["cutover"]["write_pause_ms"]),
        cell(&r["cutover"]["max_write_pause_ms"]),
        cell(&r["cutover"]["fence_attempts"]),
        cell(&r["cutover"]["clients_moved"]),
        cell(&r["cutover"]["outputs"]),
    ));
    md.push_str(
        "## Steps\n\n| step | status | attempts | started | finished |\n|---|---|---|---|---|\n",
    );
    for s in r["steps"].as_array().into_iter().flatten() {
        md.push_str(&format!(
            "| {} | {} | {} | {} | {} |\n",
            cell(&s["kind"]),
            cell(&s["status"]),
            cell(&s["attempts"]),
            cell(&s["started_at"]),
            cell(&s["finished_at"]),
        ));
    }
    md
}
