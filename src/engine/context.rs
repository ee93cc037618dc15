//! What a step sees while it runs: the plan, the cloud (a reader and a writer; in a rehearsal both are
//! the dry-run overlay), its own recorded intent, earlier steps' outputs, and ways to report.

use std::sync::Arc;
use std::time::Instant;

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::cloud::dry_run::DryRunCloud;
use crate::cloud::{CloudRead, CloudWrite};
use crate::engine::events::{Event, EventSink};
use crate::engine::ledger::Ledger;
use crate::engine::state::RunStatus;
use crate::engine::{Prompter, RunOptions, TokenSink};
use crate::error::Result;
use crate::plan::{LoadedPlan, StepKind};

/// What a step sees: the plan, the cloud, earlier steps' outputs, and ways to record and report.
pub struct StepContext {
    pub plan: Arc<LoadedPlan>,
    pub run_id: String,
    pub cloud: Arc<dyn CloudRead>,
    pub write: Arc<dyn CloudWrite>,
    pub tokens: Arc<dyn TokenSink>,
    pub events: EventSink,
    pub prompter: Arc<dyn Prompter>,
    pub options: RunOptions,
    pub kind: StepKind,
    pub(crate) index: usize,
    pub(crate) ledger: Arc<Ledger>,
    pub(crate) dry_run_cloud: Option<Arc<DryRunCloud>>,
}

impl StepContext {
    pub fn dry_run(&self) -> bool {
        self.options.dry_run
    }

    /// This plan's state folder (for files a step keeps beside the state, such as the capture's spill).
    pub fn state_folder(&self) -> std::path::PathBuf {
        self.options.state_dir.join(&self.plan.plan.name)
    }

    /// Whether `group` exists only in this rehearsal (its data plane cannot be reached).
    pub fn is_simulated(&self, group: &str) -> bool {
        self.dry_run_cloud
            .as_ref()
            .is_some_and(|c| c.is_simulated_group(group))
    }

    /// This step's intent as recorded by earlier attempts (its fields default when none was recorded).
    pub fn intent<T: DeserializeOwned + Default>(&self) -> T {
        self.ledger.read(|s| s.steps[self.index].intent_as())
    }

    /// Record what the step is about to do, durably, before the mutating call: the whole intent, as the
    /// step's own type (read it with [`StepContext::intent`], change it, record it again).
    /// As [`StepContext::record_intent`], keeping the fields `intent` does not have: for a part of a
    /// step's intent that a helper shared by several steps records (its type is a subset).
    pub fn merge_intent<T: Serialize>(&self, intent: &T) -> Result<()> {
        let Value::Object(map) = serde_json::to_value(intent).expect("intent serializes") else {
            panic!("a step's intent must serialize to an object");
        };
        let index = self.index;
        self.ledger
            .update(|s| s.steps[index].intent.extend(map.clone()))
    }

    pub fn record_intent<T: Serialize>(&self, intent: &T) -> Result<()> {
        let Value::Object(map) = serde_json::to_value(intent).expect("intent serializes") else {
            panic!("a step's intent must serialize to an object");
        };
        let index = self.index;
        self.ledger.update(|s| s.steps[index].intent = map)
    }

    /// The typed outputs of an earlier finished step.
    pub fn outputs_of<T: DeserializeOwned>(&self, kind: StepKind) -> Option<T> {
        self.ledger.read(|s| s.outputs_as(kind))
    }

    pub fn step_done(&self, kind: StepKind) -> bool {
        self.ledger.read(|s| s.step_done(kind))
    }

    pub fn check(&self, name: &str, ok: bool, detail: impl Into<String>) {
        self.events.emit(Event::Check {
            kind: self.kind,
            name: name.into(),
            ok,
            detail: detail.into(),
        });
    }

    pub fn note(&self, message: impl Into<String>) {
        self.events.emit(Event::Note {
            kind: self.kind,
            message: message.into(),
        });
    }

    /// Report a mutating call (made now, or in a rehearsal, one that would be made).
    pub fn call(&self, operation: &str, params: Value) {
        self.call_labeled(operation, params, &[]);
    }

    /// [`StepContext::call`] with labels for the readable line: the plan's names for some of the body's
    /// values (`("KmsKeyId", "alias/orders")`), or what the call is for (`("final", snapshot)`).
    pub fn call_labeled(&self, operation: &str, params: Value, labels: &[(&str, String)]) {
        self.events.emit(Event::Call {
            kind: self.kind,
            operation: operation.into(),
            params,
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.clone()))
                .collect(),
            dry_run: self.options.dry_run,
        });
    }

    /// Mark the whole run as waiting for the operator (a postponed cutover) or running again.
    pub fn set_run_waiting(&self, waiting: bool) -> Result<()> {
        self.ledger.update(|s| {
            s.state = if waiting {
                RunStatus::Waiting
            } else {
                RunStatus::Running
            };
        })
    }

    pub fn waiting(&self, what: &str, status: &str, started: Instant) {
        if self.events.waiting_changed(what, status) {
            self.events.emit(Event::Waiting {
                kind: self.kind,
                what: what.into(),
                status: status.into(),
                elapsed_ms: started.elapsed().as_millis() as u64,
            });
        }
    }

    /// A progress callback for long data work (copies, comparisons), reporting as this step.
    pub fn progress_reporter(&self, what: &'static str) -> impl Fn(u64, u64) + Send + Sync + use<> {
        let events = self.events.clone();
        let kind = self.kind;
        move |done, total| {
            events.emit(Event::Progress {
                kind,
                what: what.into(),
                done,
                total,
            })
        }
    }

    pub fn progress(&self, what: &str, done: u64, total: u64) {
        self.events.emit(Event::Progress {
            kind: self.kind,
            what: what.into(),
            done,
            total,
        });
    }
}
