//! The seal after the cutover's tail: writes paused on every primary of the source for
//! `seal_source_hours`, so that a client left on the old nodes waits and fails instead of writing where
//! nothing copies any more. Such clients exist: a cluster client keeps the node addresses it learned and
//! reopens the connections the fence closed to them (measured in the bench with redis-py's stock
//! `RedisCluster`: 4,000 of 5,000 keys it wrote after the tail were on the old group only).
//!
//! The pause comes first, then the capture's proof and the copy of what is pending, then the stream
//! stops: every write the source acknowledged is on the target, and no later one is acknowledged. A seal
//! that fails is reported, not fatal: the switch stands, and the delete guard still refuses a source
//! that other clients use.

use std::time::Duration;

use serde_json::json;

use crate::data::connect::RedisEndpoint;
use crate::data::fence;
use crate::engine::StepContext;
use crate::plan::CutoverStep;
use crate::steps::live::LiveStream;
use crate::steps::records::{CutoverIntent, Sealed};

/// How long the capture's proof may take once the source is sealed.
const PROOF_BOUND: Duration = Duration::from_secs(30);

/// The `SealSource` call's body (the rehearsal reports the same).
pub(super) fn seal_params(endpoint: String, hold: Duration) -> serde_json::Value {
    json!({ "endpoint": endpoint, "mode": "WRITE", "timeout_ms": hold.as_millis() as u64 })
}

/// Seal the source behind `endpoint` as `spec` asks (none when `seal_source_hours` is 0), then prove and
/// drain the stream if one runs. `labels` name the group and its primaries for the readable line.
pub(super) async fn seal_source(
    ctx: &StepContext,
    spec: &CutoverStep,
    endpoint: &RedisEndpoint,
    labels: &[(&str, String)],
    live: Option<&LiveStream>,
) -> Option<Sealed> {
    let hold = spec.seal()?;
    ctx.call_labeled(
        "SealSource",
        seal_params(endpoint.display_url(), hold),
        labels,
    );
    let until = chrono::Utc::now() + chrono::Duration::from_std(hold).unwrap_or_default();
    let mut sealed = Sealed {
        primaries: 0,
        refused: 0,
        hours: hold.as_secs() / 3600,
        until: until.to_rfc3339(),
        keys_copied: 0,
        error: None,
    };
    match fence::seal(endpoint, hold).await {
        Ok(outcome) => {
            sealed.primaries = outcome.paused;
            sealed.refused = outcome.refused.len();
            if let Some(e) = outcome.refusal() {
                ctx.note(format!(
                    "the seal holds on {} of {} primaries ({e}): clients left on the others can write there, and nothing copies it any more",
                    outcome.paused, outcome.primaries
                ));
                sealed.error = Some(e);
            }
        }
        Err(e) => {
            let e = e.to_string();
            ctx.note(format!(
                "could not seal the source ({e}): clients still on its nodes can write there, and nothing copies it any more"
            ));
            sealed.error = Some(e);
        }
    }
    // Recorded at once: `status` tells of a seal in force even if what follows fails.
    let mut intent: CutoverIntent = ctx.intent();
    if let Some(switched) = intent.switched.as_mut() {
        switched.sealed = Some(sealed.clone());
        if sealed.primaries > 0 {
            // A new seal supersedes what an earlier rollback lifted or sealed again.
            intent.seal_lifted_at = None;
            intent.resealed = None;
        }
        if let Err(e) = ctx.record_intent(&intent) {
            ctx.note(format!("the seal could not be recorded in the state: {e}"));
        }
    }
    if sealed.primaries == 0 {
        return Some(sealed);
    }
    let stream = match live {
        Some(live) => live.stream().await,
        None => None,
    };
    if let Some(stream) = stream {
        let mut s = stream.lock().await;
        let drained = match s.capture.confirm_received(PROOF_BOUND).await {
            Ok(()) => s.drain().await.map_err(|e| e.to_string()),
            Err(e) => Err(format!("the capture's proof failed: {e}")),
        };
        match drained {
            Ok(copied) => sealed.keys_copied = copied,
            Err(e) => {
                ctx.note(format!(
                    "the source is sealed, but its last changes may not all be on the target: {e}"
                ));
                sealed.error = Some(match sealed.error.take() {
                    Some(refused) => format!("{refused}; {e}"),
                    None => e,
                });
            }
        }
    }
    ctx.note(format!(
        "sealed the source: writes paused on {} primar{} until {} (`ecmigrate rollback` lifts it; delete_source ends it){}",
        sealed.primaries,
        if sealed.primaries == 1 { "y" } else { "ies" },
        sealed.until,
        match sealed.keys_copied {
            0 => String::new(),
            n => format!("; {n} key(s) changed before the seal copied"),
        }
    ));
    Some(sealed)
}
