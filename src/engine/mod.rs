//! The step engine: runs a plan's steps in order, checkpoints each one, resumes after a crash, admits a
//! changed plan only where the ledger allows it, and rehearses (`--dry-run`) down the same path. It knows
//! no step by name: it owns the [`StepRunner`] interface, the steps implement it, the binary wires them.
//!
//! A rehearsal is enforced by construction: the engine is handed only a *reader* of the cloud and wraps it
//! in [`DryRunCloud`](crate::cloud::dry_run::DryRunCloud); no state file, lock or token file is written,
//! because the engine holds no [`state::StateLock`] (the only thing that can write state) and steps get a
//! token sink that refuses to write.

mod context;
pub mod events;
pub mod journal;
pub mod ledger;
mod prompt;
mod runner;
mod session;
pub mod state;
mod tokens;
mod wait;

use std::sync::Arc;

use chrono::Utc;

use crate::cloud::{Cloud, CloudRead};

pub use context::StepContext;
pub use prompt::{NoPrompter, Prompter};
pub use runner::{RunSummary, StepOutcome, StepRunner, run};
pub use session::Session;
pub use tokens::TokenSink;
pub use wait::{Poll, wait_until};

/// How a run was asked to go.
#[derive(Debug, Clone)]
pub struct RunOptions {
    pub dry_run: bool,
    /// `--yes`: destructive steps proceed without a prompt (with `confirm:` in the plan).
    pub yes: bool,
    /// A person is at a terminal and can answer prompts.
    pub interactive: bool,
    pub state_dir: std::path::PathBuf,
}

/// The cloud a run uses: a real one, or (dry run) only a reader of it.
pub enum CloudAccess {
    Real(Arc<dyn Cloud>),
    ReadOnly(Arc<dyn CloudRead>),
}

fn new_run_id() -> String {
    let mut bytes = [0u8; 3];
    aws_lc_rs::rand::fill(&mut bytes).expect("random");
    format!(
        "{}-{:02x}{:02x}{:02x}",
        Utc::now().format("%Y%m%d%H%M%S"),
        bytes[0],
        bytes[1],
        bytes[2]
    )
}
