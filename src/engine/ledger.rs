//! The ledger, in sqlx-migrate's model: the state always records the plan that is running and its
//! checksum. Before a run, [`admit`] reconciles the recorded state with the plan as it is now:
//! - no state, or a state whose attempts created nothing (preflight refused, say): a fresh run of the plan
//!   as it is now, whatever steps it has;
//! - the same plan: resume (or, finished, say it is done);
//! - an edit of steps that have not started (changed, added or removed): accepted, written into the state
//!   before any step runs, and listed so the journal records it;
//! - an edit of anything a started step depended on (its own spec, or the plan outside `steps`): refused,
//!   naming the field.
//!
//! [`Ledger`] is the running state: every update is saved through the lock (a rehearsal keeps it in memory).

use std::sync::Mutex;

use chrono::Utc;
use serde_json::Value;

use crate::engine::state::{RunState, RunStatus, StateLock, StepRecord, checksum};
use crate::error::{Error, Result};
use crate::plan::Plan;

/// How a run may go on from what the state recorded.
#[derive(Debug, PartialEq, Eq)]
pub enum Admission {
    /// Nothing recorded: a new run.
    New,
    /// The recorded attempts created nothing: the run starts over from the current plan.
    StartedOver { previous_run_id: String },
    /// Resume the recorded run; `accepted` lists the edited fields of steps that had not started.
    Resume { accepted: Vec<String> },
    /// Finished with exactly this plan.
    Done,
    /// Rolled back: the plan cannot be run again.
    RolledBack,
}

/// Reconcile the recorded state with `plan`; returns the state to run from and how it was admitted.
pub fn admit(
    recorded: Option<RunState>,
    plan: &Plan,
    new_run_id: impl FnOnce() -> String,
) -> Result<(RunState, Admission)> {
    let Some(recorded) = recorded else {
        return Ok((RunState::new(plan, new_run_id()), Admission::New));
    };
    if recorded.state == RunStatus::RolledBack {
        return Ok((recorded, Admission::RolledBack));
    }
    if recorded.state != RunStatus::Done && recorded.nothing_created() {
        let previous_run_id = recorded.run_id;
        return Ok((
            RunState::new(plan, new_run_id()),
            Admission::StartedOver { previous_run_id },
        ));
    }
    let plan_checksum = checksum(plan);
    if recorded.plan_checksum == plan_checksum {
        let admission = if recorded.state == RunStatus::Done {
            Admission::Done
        } else {
            Admission::Resume { accepted: vec![] }
        };
        return Ok((recorded, admission));
    }
    let accepted = check_edit(&recorded, plan)?;
    Ok((
        accept_edit(recorded, plan, plan_checksum),
        Admission::Resume { accepted },
    ))
}

/// The changed fields of `plan` against the recorded one, refused at the first one a started step
/// depended on.
fn check_edit(recorded: &RunState, plan: &Plan) -> Result<Vec<String>> {
    let new = serde_json::to_value(plan).expect("plan serializes");
    let mut changed = Vec::new();
    diff_paths("", &recorded.plan, &new, &mut changed);
    let started = started_prefix(recorded);
    let refused = changed.iter().find(|path| match step_index(path) {
        Some(index) => index < started,
        None => true,
    });
    if let Some(field) = refused {
        return Err(Error::usage(
            format!(
                "the plan changed since run {} started: `{field}` differs from the recorded plan",
                recorded.run_id
            ),
            "put the plan back as it was to resume, or start a new migration under a new `name` \
             (changes are allowed only in steps that have not started)",
        ));
    }
    Ok(changed)
}

/// The steps that have started: steps run in order, so they are the records up to the last started one.
fn started_prefix(state: &RunState) -> usize {
    state
        .steps
        .iter()
        .rposition(StepRecord::started)
        .map_or(0, |i| i + 1)
}

/// `steps[3].alias` → 3; `steps` itself (the list's length) counts as the first step past the list.
fn step_index(path: &str) -> Option<usize> {
    let rest = path.strip_prefix("steps[")?;
    rest[..rest.find(']')?].parse().ok()
}

/// The state with `plan` recorded: the started steps' records kept, the rest taken from the plan.
fn accept_edit(mut state: RunState, plan: &Plan, plan_checksum: String) -> RunState {
    let started = started_prefix(&state);
    state.steps.truncate(started);
    state
        .steps
        .extend(plan.steps[started..].iter().map(StepRecord::new));
    state.plan = serde_json::to_value(plan).expect("plan serializes");
    // The run's status is the runner's to set (it marks the admitted run `running` before any step).
    state.plan_checksum = plan_checksum;
    state
}

fn diff_paths(prefix: &str, old: &Value, new: &Value, out: &mut Vec<String>) {
    let join = |k: &str| {
        if prefix.is_empty() {
            k.to_string()
        } else {
            format!("{prefix}.{k}")
        }
    };
    match (old, new) {
        (Value::Object(a), Value::Object(b)) => {
            let mut keys: Vec<&String> = a.keys().chain(b.keys()).collect();
            keys.sort();
            keys.dedup();
            for k in keys {
                match (a.get(k), b.get(k)) {
                    (Some(x), Some(y)) => diff_paths(&join(k), x, y, out),
                    _ => out.push(join(k)),
                }
            }
        }
        (Value::Array(a), Value::Array(b)) => {
            for i in 0..a.len().max(b.len()) {
                let path = format!("{prefix}[{i}]");
                match (a.get(i), b.get(i)) {
                    (Some(x), Some(y)) => diff_paths(&path, x, y, out),
                    _ => out.push(path),
                }
            }
        }
        (a, b) if a != b => out.push(prefix.to_string()),
        _ => {}
    }
}

/// The persistence of a run: a locked state file for a real run, memory only for a rehearsal.
pub struct Ledger {
    state: Mutex<RunState>,
    lock: Option<StateLock>,
}

impl Ledger {
    pub fn new(state: RunState, lock: Option<StateLock>) -> Self {
        Ledger {
            state: Mutex::new(state),
            lock,
        }
    }

    /// Change the state and save it (atomically) before returning.
    pub fn update<R>(&self, f: impl FnOnce(&mut RunState) -> R) -> Result<R> {
        let mut state = self.state.lock().expect("state lock");
        let r = f(&mut state);
        state.updated_at = Utc::now();
        if let Some(lock) = &self.lock {
            lock.save(&state)?;
        }
        Ok(r)
    }

    /// Read the state without copying all of it.
    pub fn read<R>(&self, f: impl FnOnce(&RunState) -> R) -> R {
        f(&self.state.lock().expect("state lock"))
    }

    pub fn snapshot(&self) -> RunState {
        self.state.lock().expect("state lock").clone()
    }

    pub fn lock(&self) -> Option<&StateLock> {
        self.lock.as_ref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::state::StepStatus;

    fn plan(text: &str) -> Plan {
        serde_saphyr::from_str(text).expect("test plan parses")
    }

    const BASE: &str = "version: 1
name: orders
provider: sandbox
source: { replication_group_id: orders }
target:
  replication_group_id: orders-enc
  kms_key_id: alias/orders
  auth_token: { generate: true, file: t.token }
steps:
  - kind: preflight
  - kind: backup
  - kind: restore_encrypted
  - kind: verify
  - kind: cutover
    strategy: sandbox_alias
    alias: orders-endpoint
    grace_seconds: 1
";

    fn id() -> String {
        "run-2".into()
    }

    fn with_started(mut state: RunState, n: usize, last: StepStatus) -> RunState {
        for (i, r) in state.steps.iter_mut().take(n).enumerate() {
            r.status = if i + 1 == n { last } else { StepStatus::Done };
            r.attempt = 1;
        }
        state.state = RunStatus::Failed;
        state
    }

    #[test]
    fn no_state_is_a_new_run() {
        let (state, how) = admit(None, &plan(BASE), id).unwrap();
        assert_eq!(how, Admission::New);
        assert_eq!(state.run_id, "run-2");
        assert_eq!(state.plan_checksum, checksum(&plan(BASE)));
    }

    #[test]
    fn a_refused_run_starts_over_with_the_current_plan_and_its_steps() {
        let refused = with_started(
            RunState::new(&plan(BASE), "run-1".into()),
            1,
            StepStatus::Failed,
        );
        let fixed = BASE.replace("alias/orders", "alias/fixed").replace(
            "  - kind: verify\n",
            "  - kind: stream_copy\n  - kind: verify\n",
        );
        let (state, how) = admit(Some(refused), &plan(&fixed), id).unwrap();
        assert_eq!(
            how,
            Admission::StartedOver {
                previous_run_id: "run-1".into()
            }
        );
        assert_eq!(state.steps.len(), 6);
        assert_eq!(state.plan_checksum, checksum(&plan(&fixed)));
        assert_eq!(state.plan["target"]["kms_key_id"], "alias/fixed");
    }

    #[test]
    fn an_edit_of_a_pending_step_is_recorded_and_stays_accepted() {
        let run = with_started(
            RunState::new(&plan(BASE), "run-1".into()),
            3,
            StepStatus::Done,
        );
        let edited = plan(&BASE.replace("grace_seconds: 1", "grace_seconds: 7"));
        let (state, how) = admit(Some(run), &edited, id).unwrap();
        assert_eq!(
            how,
            Admission::Resume {
                accepted: vec!["steps[4].grace_seconds".into()]
            }
        );
        assert_eq!(state.plan_checksum, checksum(&edited));
        assert_eq!(state.steps[4].checksum, checksum(&edited.steps[4]));
        // The edited step starts and fails; the same plan is then accepted as it is.
        let failed = with_started(state, 5, StepStatus::Failed);
        let (_, how) = admit(Some(failed), &edited, id).unwrap();
        assert_eq!(how, Admission::Resume { accepted: vec![] });
    }

    #[test]
    fn an_edit_of_a_started_step_or_the_plan_is_refused_naming_the_field() {
        let run = with_started(
            RunState::new(&plan(BASE), "run-1".into()),
            2,
            StepStatus::Failed,
        );
        let err = admit(
            Some(run.clone()),
            &plan(&BASE.replace("alias/orders", "alias/x")),
            id,
        )
        .unwrap_err();
        assert!(
            err.to_string().contains("`target.kms_key_id` differs"),
            "{err}"
        );
        let edited = BASE.replace(
            "  - kind: backup\n",
            "  - kind: backup\n    snapshot_name: snap-a\n",
        );
        let err = admit(Some(run), &plan(&edited), id).unwrap_err();
        assert!(
            err.to_string().contains("`steps[1].snapshot_name` differs"),
            "{err}"
        );
    }

    #[test]
    fn steps_added_after_the_started_ones_are_accepted() {
        let run = with_started(
            RunState::new(&plan(BASE), "run-1".into()),
            3,
            StepStatus::Done,
        );
        let more = plan(&BASE.replace(
            "  - kind: verify\n",
            "  - kind: stream_copy\n  - kind: verify\n",
        ));
        let (state, how) = admit(Some(run), &more, id).unwrap();
        assert!(matches!(how, Admission::Resume { ref accepted } if !accepted.is_empty()));
        assert_eq!(state.steps.len(), 6);
        assert_eq!(state.steps[2].status, StepStatus::Done);
        assert_eq!(state.steps[3].kind, more.steps[3].kind());
        assert_eq!(state.steps[3].status, StepStatus::Pending);
    }

    #[test]
    fn a_finished_unchanged_plan_is_done() {
        let mut run = with_started(
            RunState::new(&plan(BASE), "run-1".into()),
            5,
            StepStatus::Done,
        );
        run.state = RunStatus::Done;
        let (state, how) = admit(Some(run), &plan(BASE), id).unwrap();
        assert_eq!(how, Admission::Done);
        assert_eq!(state.run_id, "run-1");
    }
}
