//! What the engine and its steps say while they work. Only a reporter (`ui`) turns events into output, and
//! the run's journal (`events.jsonl`) keeps them.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use serde::Serialize;
use serde_json::Value;

use crate::plan::StepKind;

#[derive(Debug, Clone, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    RunStarted {
        plan: String,
        run_id: String,
        dry_run: bool,
        resumed: bool,
        steps: usize,
    },
    /// Edits of steps that had not started, accepted into the recorded plan before they run.
    PlanChangeAccepted {
        run_id: String,
        fields: Vec<String>,
        plan_checksum: String,
    },
    /// An earlier attempt created nothing (preflight refused, say): the run starts over from this plan.
    StartedOver {
        previous_run_id: String,
        run_id: String,
    },
    StepStarted {
        index: usize,
        kind: StepKind,
        attempt: u32,
    },
    StepSkipped {
        index: usize,
        kind: StepKind,
        reason: String,
    },
    /// One check (preflight and others): `ok: false` means refused.
    Check {
        kind: StepKind,
        name: String,
        ok: bool,
        detail: String,
    },
    /// A mutating call: made, or (dry run) one that would be made. Parameters are already redacted.
    Call {
        kind: StepKind,
        operation: String,
        params: Value,
        /// How the plan names some of the body's values, and what the call is for (`ui::actions::Labels`):
        /// for the readable line only; `params` is the body as sent.
        #[serde(skip_serializing_if = "BTreeMap::is_empty")]
        labels: BTreeMap<String, String>,
        dry_run: bool,
    },
    Waiting {
        kind: StepKind,
        what: String,
        status: String,
        elapsed_ms: u64,
    },
    Progress {
        kind: StepKind,
        what: String,
        done: u64,
        total: u64,
    },
    Note {
        kind: StepKind,
        message: String,
    },
    StepDone {
        index: usize,
        kind: StepKind,
        elapsed_ms: u64,
        outputs: Value,
    },
    StepFailed {
        index: usize,
        kind: StepKind,
        error: String,
        hint: String,
    },
    RunFinished {
        state: String,
        elapsed_ms: u64,
    },
}

/// The labels steps put on a call beside the plan's names for body fields (`KmsKeyId`, `AuthToken`).
pub mod labels {
    /// On a `CreateSnapshot` and the `DeleteReplicationGroup` after it: the source's encrypted final
    /// snapshot, taken before the source is deleted.
    pub const FINAL_SNAPSHOT: &str = "final";
    /// On a `ClientPause` or a `SealSource`: the group whose primaries are paused.
    pub const PAUSED_GROUP: &str = "group";
    /// On a `ClientPause` or a `SealSource`: how many primaries are paused together.
    pub const PAUSED_PRIMARIES: &str = "primaries";
    /// On a `StoreAuthToken` or a `PutSecretValue`: what the secret is (`AUTH token`, `RBAC password`).
    pub const SECRET_KIND: &str = "secret";
}

/// A wait that goes on unchanged is reported again this often.
pub const WAITING_REPORT_EVERY: std::time::Duration = std::time::Duration::from_secs(30);

/// Where events go: a reporter draws them; a journal appends them to `events.jsonl`.
pub trait EventListener: Send + Sync {
    fn event(&self, event: &Event);
    /// Whether every event so far was kept (a journal on a full disk is not).
    fn health(&self) -> Result<(), String> {
        Ok(())
    }
}

/// The engine's single outlet for events, cheap to clone into steps.
#[derive(Clone)]
pub struct EventSink {
    listeners: Arc<Vec<Arc<dyn EventListener>>>,
    started: Instant,
    /// The last waiting status reported, and when: a wait is reported on each change and at least every
    /// [`WAITING_REPORT_EVERY`] while it lasts, so no wait is silent.
    last_waiting: Arc<Mutex<Option<(String, String, Instant)>>>,
}

impl EventSink {
    pub fn new(listeners: Vec<Arc<dyn EventListener>>) -> Self {
        EventSink {
            listeners: Arc::new(listeners),
            started: Instant::now(),
            last_waiting: Arc::new(Mutex::new(None)),
        }
    }

    pub fn emit(&self, event: Event) {
        for l in self.listeners.iter() {
            l.event(&event);
        }
    }

    /// The first listener that could not keep an event, as an error the run stops on (resumably).
    pub fn check(&self) -> crate::error::Result<()> {
        for l in self.listeners.iter() {
            l.health().map_err(|e| {
                crate::error::Error::failed(
                    format!("the run's journal is incomplete: {e}"),
                    "free disk space in the state folder (--state-dir), then run the same command again to resume",
                )
            })?;
        }
        Ok(())
    }

    pub fn elapsed_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    /// Whether to report this waiting status: it differs from the last one, or the last report of it is
    /// [`WAITING_REPORT_EVERY`] old (journals keep only the changes and these heartbeats).
    pub fn waiting_changed(&self, what: &str, status: &str) -> bool {
        let mut last = self.last_waiting.lock().expect("lock");
        let same = last.as_ref().is_some_and(|(w, s, at)| {
            w == what && s == status && at.elapsed() < WAITING_REPORT_EVERY
        });
        if !same {
            *last = Some((what.to_string(), status.to_string(), Instant::now()));
        }
        !same
    }
}
