//! A locked real run of one plan for an operation outside the step loop (`ecmigrate rollback`): it holds
//! the plan's lock, reads and saves the state, and hands a step the same context the run loop would.

use std::sync::Arc;

use crate::cloud::Cloud;
use crate::engine::events::{EventListener, EventSink};
use crate::engine::ledger::Ledger;
use crate::engine::state::{RunState, StateLock, StatePaths};
use crate::engine::tokens::RealTokenSink;
use crate::engine::{Prompter, RunOptions, StepContext};
use crate::error::Result;
use crate::plan::LoadedPlan;

pub struct Session {
    plan: Arc<LoadedPlan>,
    cloud: Arc<dyn Cloud>,
    options: RunOptions,
    prompter: Arc<dyn Prompter>,
    ledger: Arc<Ledger>,
    events: EventSink,
}

impl Session {
    /// Lock the plan's state and read it; `None` when the plan has never run.
    pub fn open(
        plan: Arc<LoadedPlan>,
        cloud: Arc<dyn Cloud>,
        options: RunOptions,
        reporter: Arc<dyn EventListener>,
        prompter: Arc<dyn Prompter>,
    ) -> Result<Option<Session>> {
        let paths = StatePaths::new(&options.state_dir, &plan.plan.name);
        let lock = StateLock::acquire(&paths)?;
        let Some(state) = paths.load()? else {
            return Ok(None);
        };
        let events = EventSink::new(vec![reporter, Arc::new(lock.journal())]);
        Ok(Some(Session {
            plan,
            cloud,
            options,
            prompter,
            ledger: Arc::new(Ledger::new(state, Some(lock))),
            events,
        }))
    }

    pub fn state(&self) -> RunState {
        self.ledger.snapshot()
    }

    /// Change the state and save it before returning.
    pub fn update<R>(&self, f: impl FnOnce(&mut RunState) -> R) -> Result<R> {
        self.ledger.update(f)
    }

    pub fn prompter(&self) -> &Arc<dyn Prompter> {
        &self.prompter
    }

    /// The context step `index` would run with in the run loop.
    pub fn context(&self, index: usize) -> StepContext {
        StepContext {
            plan: self.plan.clone(),
            run_id: self.ledger.read(|s| s.run_id.clone()),
            cloud: self.cloud.clone(),
            write: self.cloud.clone(),
            tokens: Arc::new(RealTokenSink),
            events: self.events.clone(),
            prompter: self.prompter.clone(),
            options: self.options.clone(),
            kind: self.plan.plan.steps[index].kind(),
            index,
            ledger: self.ledger.clone(),
            dry_run_cloud: None,
        }
    }
}
