//! One fenced attempt at the switch: pause the writes (bounded by Redis itself), prove the capture caught
//! up, copy what is pending, compare a sample, switch, disconnect the old clients, unpause.

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;

use crate::data::connect::RedisEndpoint;
use crate::data::fence::WriteFence;
use crate::data::stream::StreamCopy;
use crate::engine::StepContext;
use crate::plan::CutoverStep;
use crate::steps::records::SpotCheck;
use crate::steps::switch::{Switch, Switched, run_command};

/// Random keys per database compared inside the fence, and the TTL difference allowed there.
const SPOT_CHECK_KEYS: u64 = 100;
const SPOT_CHECK_TTL_MS: i64 = 5000;

/// The `before_switch` hook and the manual strategy's confirmation, both outside the fence.
pub(super) async fn before_switch(
    ctx: &StepContext,
    spec: &CutoverStep,
    switch: &Switch<'_>,
) -> std::result::Result<(), String> {
    if let Some(hook) = &spec.before_switch {
        run_command(ctx, "before_switch", hook, &switch.env(ctx)).await?;
    }
    switch.prepare(ctx).map_err(|e| e.to_string())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum FailureKind {
    /// The fence would have outlasted its bound, or the capture had a gap: retry.
    Fence,
    /// The switch (or the hook before it) failed: retry; a postponed cutover holds again.
    Switch,
    /// Nothing to retry (the data plane broke): fail the step.
    Fatal,
}

impl FailureKind {
    pub(super) fn as_str(self) -> &'static str {
        match self {
            FailureKind::Fence => "fence_timeout",
            FailureKind::Switch => "switch_failed",
            FailureKind::Fatal => "failed",
        }
    }
}

pub(super) struct FenceFailure {
    pub(super) kind: FailureKind,
    pub(super) message: String,
    pub(super) write_pause: Option<Duration>,
}

pub(super) struct FenceDone {
    pub(super) switched: Switched,
    pub(super) write_pause: Duration,
    pub(super) disconnected: Vec<crate::data::connect::ConnectedClient>,
    pub(super) copied_in_fence: u64,
    /// The sample compared inside the fence (a streamed plan only).
    pub(super) verified_at_switch: Option<SpotCheck>,
    /// Capture events counted when the pause was lifted (late changes are counted from here).
    pub(super) events_at_release: u64,
    /// The primaries paused together.
    pub(super) primaries_paused: usize,
    /// The subscriptions proven inside the fence (0 without a stream).
    pub(super) subscriptions_proven: usize,
}

/// The body of the `ClientPause` call on `endpoint` (a display URL) for at most `bound` (the rehearsal
/// reports the same).
pub(super) fn pause_params(endpoint: String, bound: Duration) -> serde_json::Value {
    json!({ "endpoint": endpoint, "mode": "WRITE", "timeout_ms": bound.as_millis() as u64 })
}

/// One fenced attempt: pause, prove, copy, switch, disconnect, unpause. The pause is always lifted.
pub(super) async fn fenced_switch(
    ctx: &StepContext,
    spec: &CutoverStep,
    switch: &Switch<'_>,
    paused: &RedisEndpoint,
    stream: Option<&Arc<tokio::sync::Mutex<StreamCopy>>>,
    attempt: u32,
) -> std::result::Result<FenceDone, FenceFailure> {
    let fatal = |e: crate::data::DataError| FenceFailure {
        kind: FailureKind::Fatal,
        message: e.into(),
        write_pause: None,
    };
    let bound = spec.max_write_pause();
    // Holding the stream keeps the background tailer out until the fence is over.
    let mut stream = match stream {
        Some(s) => Some(s.lock().await),
        None => None,
    };
    // Catch up before pausing, so the fence has little left to copy.
    if let Some(s) = stream.as_mut() {
        s.catch_up(&|_, _| {}).await.map_err(fatal)?;
    }
    ctx.call_labeled(
        "ClientPause",
        pause_params(paused.display_url(), bound),
        &switch.from.pause_labels(),
    );
    let mut fence = WriteFence::pause(paused, bound).await.map_err(fatal)?;
    let primaries_paused = fence.primaries();
    let inside = async {
        if let Some(delay) = injected_delay(attempt) {
            tokio::time::sleep(delay).await;
        }
        let (copied, verified) = match stream.as_mut() {
            Some(s) => {
                let (copied, checked) = prove_and_drain(s, &fence).await?;
                (copied, Some(checked))
            }
            None => (0, None),
        };
        // The switch starts only while half the bound is left, so it ends inside the pause.
        if fence.remaining() < bound / 2 {
            return Err((
                FailureKind::Fence,
                format!(
                    "catching up inside the fence took {} ms, past half of max_write_pause_ms ({} ms)",
                    fence.elapsed().as_millis(),
                    bound.as_millis()
                ),
            ));
        }
        let switched = switch
            .switch(ctx)
            .await
            .map_err(|e| (FailureKind::Switch, e))?;
        if fence.remaining().is_zero() {
            ctx.note(format!(
                "the switch outlasted the write pause ({} ms): writes made on the source since are copied by the tail",
                bound.as_millis()
            ));
        }
        let disconnected = if spec.disconnect_clients() {
            fence.disconnect_clients().await.unwrap_or_else(|e| {
                ctx.note(format!("could not disconnect the source's clients: {e}"));
                Vec::new()
            })
        } else {
            Vec::new()
        };
        Ok((switched, disconnected, copied, verified))
    }
    .await;
    let (write_pause, unpaused) = fence.release().await;
    if let Err(e) = unpaused {
        ctx.note(format!(
            "{e}: the source lifts the pause by itself after {} ms",
            bound.as_millis()
        ));
    }
    let (events_at_release, subscriptions_proven) = stream
        .as_ref()
        .map(|s| {
            let capture = s.capture.status();
            (capture.events, capture.primaries)
        })
        .unwrap_or((0, 0));
    drop(stream);
    match inside {
        Ok((switched, disconnected, copied_in_fence, verified_at_switch)) => Ok(FenceDone {
            switched,
            write_pause,
            disconnected,
            copied_in_fence,
            verified_at_switch,
            events_at_release,
            primaries_paused,
            subscriptions_proven,
        }),
        Err((kind, message)) => Err(FenceFailure {
            kind,
            message,
            write_pause: Some(write_pause),
        }),
    }
}

/// A delay inside the fence, injected by tests (`crate::faults`, compiled only with `test-hooks`).
#[cfg(feature = "test-hooks")]
fn injected_delay(attempt: u32) -> Option<Duration> {
    crate::faults::fence_delay(attempt)
}

#[cfg(not(feature = "test-hooks"))]
fn injected_delay(_attempt: u32) -> Option<Duration> {
    None
}

/// Inside the fence, with the stream held: prove every change made before the pause was received, copy
/// what is pending, and compare a sample while both sides are still. Returns the keys copied and the check.
async fn prove_and_drain(
    s: &mut StreamCopy,
    fence: &WriteFence,
) -> std::result::Result<(u64, SpotCheck), (FailureKind, String)> {
    s.capture
        .confirm_received(fence.remaining())
        .await
        .map_err(|e| (FailureKind::Fence, format!("fence not proven: {e}")))?;
    if let Some(gap) = s.capture.gap().await {
        return Err((
            FailureKind::Fence,
            format!("the capture had a gap ({gap}); reconciling before the next attempt"),
        ));
    }
    let copied = s
        .drain()
        .await
        .map_err(|e| (FailureKind::Fatal, e.into()))?;
    // Both sides are still now (writes paused, clients not moved yet): compare a sample.
    let (from, to) = s.copier.endpoints();
    let (compared, differ) =
        crate::data::verify::spot_check(from, to, SPOT_CHECK_KEYS, SPOT_CHECK_TTL_MS)
            .await
            .map_err(|e| (FailureKind::Fatal, e.into()))?;
    if !differ.is_empty() {
        let first: Vec<String> = differ
            .iter()
            .take(3)
            .map(|m| format!("db{} {}: {}", m.db, m.key, m.reason))
            .collect();
        return Err((
            FailureKind::Fence,
            format!(
                "the check at the switch found {} of {compared} sampled keys differing ({})",
                differ.len(),
                first.join("; ")
            ),
        ));
    }
    Ok((
        copied,
        SpotCheck {
            keys_compared: compared,
            differing: 0,
        },
    ))
}
