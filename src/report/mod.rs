//! The evidence report of a finished run, for the compliance team: `report.json`, `report.md` and
//! `report.html` beside the state (the two documents are rendered from one set of blocks, [`doc`], in the
//! words of [`evidence`]). Source and target encryption attributes before and after, snapshot names, every step with its
//! times, how the data was verified, the changes streamed, the cutover, who ran it and the plan checksum.
//! It is built from the state file and a fresh describe of both groups; it never holds a token (the state
//! holds none, and only the token store's reference is copied).

use std::path::PathBuf;

use serde_json::{Value, json};

use crate::cloud::CloudRead;
use crate::engine::state::{RunState, write_atomic};
use crate::plan::{LoadedPlan, StepKind};

pub(crate) mod doc;
mod evidence;

pub struct ReportFiles {
    pub json: PathBuf,
    pub markdown: PathBuf,
    pub html: PathBuf,
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
        .ok()
        .filter(|u| !u.is_empty())
        .or_else(login_name)
        .unwrap_or_else(|| {
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

/// The name of the user the process runs as, from the password database.
fn login_name() -> Option<String> {
    // SAFETY: getpwuid returns a pointer into static storage or null; the name is NUL-terminated and
    // copied out at once, before any other call could overwrite it.
    unsafe {
        let entry = libc::getpwuid(libc::getuid());
        if entry.is_null() || (*entry).pw_name.is_null() {
            return None;
        }
        Some(
            std::ffi::CStr::from_ptr((*entry).pw_name)
                .to_string_lossy()
                .into_owned(),
        )
    }
}

/// Region and account of an ARN (`arn:aws:kms:REGION:ACCOUNT:…`).
fn arn_region_account(arn: &str) -> Option<(String, String)> {
    let parts: Vec<&str> = arn.split(':').collect();
    (parts.len() > 5 && parts[0] == "arn").then(|| (parts[3].to_string(), parts[4].to_string()))
}

/// The evidence pack of a run that is done, in `dir` (its state folder): written, unless the plan had
/// finished before this run (`already_done`) and every file of it is there. `None`: not done yet.
pub async fn ensure(
    state: &RunState,
    plan: &LoadedPlan,
    cloud: &dyn CloudRead,
    dir: &std::path::Path,
    already_done: bool,
) -> Result<Option<PathBuf>, String> {
    // The evidence pack is of a migration (before/after of two groups); an in-place change has its
    // outputs in the state (`ecmigrate status`).
    if state.state != crate::engine::state::RunStatus::Done || plan.plan.is_in_place() {
        return Ok(None);
    }
    let markdown = dir.join("report.md");
    let complete = ["report.md", "report.json", "report.html"]
        .iter()
        .all(|f| dir.join(f).exists());
    if already_done && complete {
        return Ok(Some(markdown));
    }
    write(state, plan, cloud, dir)
        .await
        .map(|f| Some(f.markdown))
}

/// Build and write the report of a finished run.
pub async fn write(
    state: &RunState,
    plan: &LoadedPlan,
    cloud: &dyn CloudRead,
    dir: &std::path::Path,
) -> Result<ReportFiles, String> {
    let source_id = &plan.plan.source.replication_group_id;
    let target_id = &plan.plan.target().replication_group_id;
    let describe = async |id: &str| -> Value {
        match cloud.describe_group(id).await {
            Ok(Some(g)) => g.encryption_attributes(),
            Ok(None) => json!({ "ReplicationGroupId": id, "Status": "deleted" }),
            Err(e) => json!({ "ReplicationGroupId": id, "Status": format!("unknown: {e}") }),
        }
    };
    let source_after = describe(source_id).await;
    let target_after = describe(target_id).await;
    // The target's key as it is now: its id, ARN, aliases and state (evidence that it is usable).
    let key_ref = target_after["KmsKeyId"]
        .as_str()
        .map(str::to_string)
        .or_else(|| plan.plan.target().kms_key_id.clone());
    let kms_key = match &key_ref {
        Some(k) => match cloud.describe_key(k).await {
            Ok(Some(key)) => json!({
                "key_id": key.key_id,
                "arn": key.arn,
                "aliases": key.aliases,
                "key_state": key.key_state,
                "described_at": chrono::Utc::now(),
            }),
            Ok(None) => json!({ "key_id": k, "key_state": "not found" }),
            Err(e) => json!({ "key_id": k, "key_state": format!("unknown: {e}") }),
        },
        None => Value::Null,
    };
    // Who ran it, as AWS knows the credentials (GetCallerIdentity); the sandbox has no principal.
    let caller = cloud.caller_identity().await.ok().flatten();
    let (region, account) = kms_key["arn"]
        .as_str()
        .and_then(arn_region_account)
        .map(|(r, a)| (Some(r), Some(a)))
        .unwrap_or_else(|| {
            (
                plan.plan.aws.as_ref().and_then(|a| a.region.clone()),
                caller.as_ref().map(|c| c.account.clone()),
            )
        });
    let group_arn = |id: &str| match (&region, &account) {
        (Some(r), Some(a)) => json!(format!("arn:aws:elasticache:{r}:{a}:replicationgroup:{id}")),
        _ => Value::Null,
    };
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
        "region": region,
        "account": account,
        "control": {
            "rule": "EC-014",
            "title": "ElastiCache Redis In-Transit and At-Rest Encryption",
            "risk_level": "High",
            "frameworks": ["HIPAA", "GDPR", "APRA", "MAS", "NIST"],
        },
        "kms_key": kms_key,
        "state": state.state.as_str(),
        "run_by": { "user": user, "host": host, "aws_principal": caller.as_ref().map(|c| c.arn.clone()) },
        "started_at": state.created_at,
        "finished_at": state.updated_at,
        "source": {
            "arn": group_arn(source_id),
            "before": output(state, StepKind::Preflight, "source_before"),
            "after": source_after,
        },
        "target": {
            "arn": group_arn(target_id),
            "before": { "ReplicationGroupId": target_id, "Status": "did not exist" },
            "after": target_after,
        },
        "auth_token_store": output(state, StepKind::RestoreEncrypted, "auth_token_store"),
        "user_group_ids": output(state, StepKind::RestoreEncrypted, "user_group_ids"),
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
    let body = serde_json::to_string_pretty(&report).expect("json");
    write_atomic(&json_path, body.as_bytes())
        .map_err(|e| format!("writing {}: {e}", json_path.display()))?;
    // The documents quote the JSON's digest, so the pack can be checked against it later.
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, body.as_bytes());
    let json_sha256: String = digest.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    let document = evidence::document(&report, &json_sha256);
    let md_path = dir.join("report.md");
    let html_path = dir.join("report.html");
    write_atomic(&md_path, document.markdown().as_bytes())
        .map_err(|e| format!("writing {}: {e}", md_path.display()))?;
    write_atomic(&html_path, document.html().as_bytes())
        .map_err(|e| format!("writing {}: {e}", html_path.display()))?;
    Ok(ReportFiles {
        json: json_path,
        markdown: md_path,
        html: html_path,
    })
}
