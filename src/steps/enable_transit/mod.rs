//! `enable_transit`: in-transit encryption switched on in place, on the source itself (a plan without
//! `target`), the way AWS documents it for Redis OSS 7.0+ and Valkey 7.2+:
//!
//! 1. ModifyReplicationGroup `TransitEncryptionEnabled=true`, `TransitEncryptionMode=preferred`,
//!    `ApplyImmediately=true`; wait until the group is `available`; prove a TLS connection works.
//! 2. Hold (state `waiting`) while the clients move to TLS, printing how they connect, until released by
//!    `ecmigrate cutover PLAN`, the flag file's removal, or the prompt.
//! 3. ModifyReplicationGroup mode `required`; wait; prove a plain-text connection to the endpoint clients
//!    used before is refused, and TLS still works.
//!
//! Each modification is recorded as requested before it is sent and as accepted once answered: a resumed
//! run never sends one again that the cloud took (a request whose answer was lost is judged from the
//! group: `modifying`, or already in that mode, means taken).

pub mod preflight;

use std::time::Duration;

use serde_json::{Value, json};

use crate::cloud::ReplicationGroup;
use crate::data::connect::{RedisEndpoint, connect};
use crate::engine::{StepContext, StepOutcome};
use crate::error::{Error, Result};
use crate::plan::EnableTransitStep;
use crate::steps::endpoints::source_tls_endpoint;
use crate::steps::hold::{Hold, hold, note_earlier_release};
use crate::steps::records::{TransitIntent, TransitOutputs};
use crate::steps::{
    cloud_error, require_group, source_data_endpoint, timeout, wait_group_available,
};

const PREFERRED: &str = "preferred";
const REQUIRED: &str = "required";

/// How long a plain-text connection may take to be refused or answer.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// The request as the journal and `--dry-run` show it.
pub fn modify_params(group: &str, mode: &str) -> Value {
    json!({
        "ReplicationGroupId": group,
        "TransitEncryptionEnabled": true,
        "TransitEncryptionMode": mode,
        "ApplyImmediately": true,
    })
}

pub async fn run(ctx: &StepContext, spec: &EnableTransitStep) -> Result<StepOutcome> {
    let id = ctx.plan.plan.source.replication_group_id.clone();
    let group = require_group(ctx, &id).await?;
    if ctx.dry_run() {
        return rehearse(ctx, &id, &group).await;
    }
    let mut intent: TransitIntent = ctx.intent();
    if intent.plain_endpoint.is_none() {
        let ep = source_data_endpoint(ctx, &group)?;
        intent.plain_endpoint = Some(format!("{}:{}", ep.host, ep.port));
        ctx.record_intent(&intent)?;
    }
    let plain = intent.plain_endpoint.clone().unwrap_or_default();

    // 1. `preferred`: plain text and TLS together.
    if !intent.preferred_accepted {
        if !intent.preferred_requested || !taken(&group, PREFERRED) {
            intent.preferred_requested = true;
            ctx.record_intent(&intent)?;
            modify(ctx, &id, PREFERRED).await?;
        } else {
            ctx.note("mode `preferred` was requested by an earlier attempt and the group took it; not sent again");
        }
        intent.preferred_accepted = true;
        ctx.record_intent(&intent)?;
    }
    if intent.released_by.is_none() {
        let group = wait_available(ctx, spec, &id, PREFERRED).await?;
        let tls = source_tls_endpoint(ctx, &group)?;
        ping(&tls).await.map_err(|e| {
            Error::failed(
                format!("`{id}` is in mode `preferred` but a TLS connection to {}:{} failed: {e}", tls.host, tls.port),
                "check the network path and the CA (source.tls_ca_file for a private one), then run again; the clients still connect in plain text",
            )
        })?;
        ctx.check(
            "tls_connects",
            true,
            format!("a TLS connection to {}:{} answers PING", tls.host, tls.port),
        );
        ctx.note(how_clients_connect(&tls, &plain));
        let flag = spec.postpone_flag_file.as_deref();
        let released = hold(ctx, &transit_hold(flag)).await?;
        intent.released_by = Some(released.unwrap_or_else(|| "not held".into()));
        ctx.record_intent(&intent)?;
    } else {
        note_earlier_release(ctx, intent.released_by.as_deref());
    }

    // 3. `required`: TLS only.
    if !intent.required_accepted {
        let group = wait_available(ctx, spec, &id, PREFERRED).await?;
        if !intent.required_requested || !taken(&group, REQUIRED) {
            intent.required_requested = true;
            ctx.record_intent(&intent)?;
            modify(ctx, &id, REQUIRED).await?;
        } else {
            ctx.note("mode `required` was requested by an earlier attempt and the group took it; not sent again");
        }
        intent.required_accepted = true;
        ctx.record_intent(&intent)?;
    }
    let group = wait_available(ctx, spec, &id, REQUIRED).await?;
    let tls = source_tls_endpoint(ctx, &group)?;
    let plain_refused = prove_plain_refused(&plain).await?;
    ctx.check(
        "plain_text_refused",
        true,
        format!("a plain-text connection to {plain} is refused ({plain_refused})"),
    );
    ping(&tls).await.map_err(|e| {
        Error::failed(
            format!(
                "`{id}` is in mode `required` but a TLS connection to {}:{} failed: {e}",
                tls.host, tls.port
            ),
            "check the network path and the CA, then run again to prove it once more",
        )
    })?;
    ctx.check(
        "tls_connects",
        true,
        format!("a TLS connection to {}:{} answers PING", tls.host, tls.port),
    );
    Ok(StepOutcome::done(&TransitOutputs {
        group_id: id,
        transit_encryption_mode: REQUIRED.into(),
        tls_endpoint: format!("{}:{}", tls.host, tls.port),
        plain_endpoint: plain,
        plain_refused,
        released_by: intent.released_by.unwrap_or_default(),
        reported: json!({
            "TransitEncryptionEnabled": group.transit_encryption_enabled,
            "TransitEncryptionMode": group.transit_encryption_mode,
        }),
    }))
}

/// The hold between the two modifications.
fn transit_hold(flag: Option<&str>) -> Hold<'_> {
    Hold {
        postpone: true,
        flag_file: flag,
        held: "in-transit encryption is `preferred`: move every client to TLS now",
        waiting_for: "the release to require TLS",
        question: "Every client connects over TLS: require TLS now (plain-text connections are dropped)?",
        released: "the switch to TLS only",
    }
}

/// Whether the group already took a modification to `mode` (its answer may have been lost): it is
/// `modifying`, or reports that mode (or `required`, past `preferred`).
fn taken(group: &ReplicationGroup, mode: &str) -> bool {
    let reported = group.transit_encryption_mode.as_deref();
    group.status == "modifying"
        || (group.transit_encryption_enabled
            && (reported == Some(mode) || reported == Some(REQUIRED)))
}

async fn modify(ctx: &StepContext, id: &str, mode: &str) -> Result<()> {
    ctx.call("ModifyReplicationGroup", modify_params(id, mode));
    ctx.write
        .modify_transit(id, mode)
        .await
        .map_err(|e| cloud_error("ModifyReplicationGroup", e))
}

/// Wait until the group is `available` again after a modification (bounded, with progress).
async fn wait_available(
    ctx: &StepContext,
    spec: &EnableTransitStep,
    id: &str,
    mode: &str,
) -> Result<ReplicationGroup> {
    let what = format!("replication group {id} in transit mode {mode}");
    let group = wait_group_available(ctx, id, &what, timeout(spec.timeout_seconds)).await?;
    if !group.transit_encryption_enabled || group.transit_encryption_mode.as_deref() != Some(mode) {
        ctx.note(format!(
            "`{id}` is available but reports TransitEncryptionEnabled={} TransitEncryptionMode={}; the connections made next decide",
            group.transit_encryption_enabled,
            group.transit_encryption_mode.as_deref().unwrap_or("none"),
        ));
    }
    Ok(group)
}

/// Whether the server answers on this connection: PONG, or a reply of its own (`NOAUTH` from a group
/// with an AUTH token still proves the transport). A refused, closed or silent connection does not.
pub(crate) async fn ping(ep: &RedisEndpoint) -> std::result::Result<(), String> {
    let attempt = async {
        let mut con = connect(ep).await.map_err(|e| e.to_string())?;
        match redis::cmd("PING").query_async::<String>(&mut con).await {
            Ok(_) => Ok(()),
            Err(e) if e.code().is_some() => Ok(()),
            Err(e) => Err(e.to_string()),
        }
    };
    match tokio::time::timeout(PROBE_TIMEOUT, attempt).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(format!("no answer within {} s", PROBE_TIMEOUT.as_secs())),
    }
}

/// A real plain-text connection to the endpoint clients used before: refused, closed, or unanswered is
/// the proof; a PONG fails the step.
async fn prove_plain_refused(plain: &str) -> Result<String> {
    let (host, port) = plain
        .rsplit_once(':')
        .and_then(|(h, p)| Some((h.to_string(), p.parse::<u16>().ok()?)))
        .ok_or_else(|| {
            Error::failed(
                format!("internal: bad recorded endpoint `{plain}`"),
                "report this bug",
            )
        })?;
    match ping(&RedisEndpoint::plain(host, port)).await {
        Err(why) => Ok(why),
        Ok(()) => Err(Error::failed(
            format!("a plain-text connection to {plain} is still accepted after mode `required`"),
            "wait for the modification to finish (the group may still be applying it) and run again to prove it once more",
        )),
    }
}

/// What the operator tells the clients while the group is `preferred`.
fn how_clients_connect(tls: &RedisEndpoint, plain: &str) -> String {
    let ca = tls
        .ca_file
        .as_ref()
        .map(|c| format!(" --cacert {}", c.display()))
        .unwrap_or_default();
    format!(
        "clients connect over TLS now: rediss://{host}:{port} (e.g. `redis-cli -h {host} -p {port} --tls{ca} PING`); plain text at {plain} is still accepted until the release",
        host = tls.host,
        port = tls.port,
    )
}

/// The rehearsal: both calls as they would be sent, the hold and the proof, nothing changed.
async fn rehearse(ctx: &StepContext, id: &str, group: &ReplicationGroup) -> Result<StepOutcome> {
    let plain = source_data_endpoint(ctx, group)?;
    modify(ctx, id, PREFERRED).await?;
    ctx.note("would wait until the group is available in mode `preferred` (plain text and TLS), prove a TLS connection, and print how clients connect over TLS");
    ctx.note(format!(
        "would hold until released (`ecmigrate cutover {}`) while the clients move to TLS",
        ctx.plan.path.display()
    ));
    modify(ctx, id, REQUIRED).await?;
    ctx.note(format!(
        "would wait until the group is available in mode `required` and prove a plain-text connection to {}:{} is refused",
        plain.host, plain.port
    ));
    Ok(StepOutcome::done(&json!({ "dry_run": true })))
}
