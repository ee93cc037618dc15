//! The one user-facing error type and the documented exit codes it maps to.
//!
//! Every variant carries a hint: what the operator can do next. Messages are lowercase fragments; the
//! reporter prints `error: <message>` then `hint: <hint>`.

use std::fmt;

/// Exit codes, as the public contract documents them.
pub mod exit_code {
    /// The command finished.
    pub const OK: i32 = 0;
    /// A step failed; the run can be resumed with the same command. Also: audit found unencrypted groups.
    pub const FAILED: i32 = 1;
    /// Invalid input (usage, plan); nothing changed.
    pub const INVALID_INPUT: i32 = 2;
    /// Preflight refused; nothing changed.
    pub const PREFLIGHT_REFUSED: i32 = 3;
    /// Another ecmigrate process holds this plan's lock; nothing changed. Wait for it, or watch it.
    pub const BUSY: i32 = 4;
    /// The state was written by another ecmigrate version (format); nothing changed.
    pub const STATE_VERSION: i32 = 5;
    /// Interrupted (Ctrl-C).
    pub const INTERRUPTED: i32 = 130;
}

/// One problem found in a plan: where it is and which rule it breaks.
#[derive(Debug, Clone, serde::Serialize, PartialEq, Eq)]
pub struct PlanIssue {
    /// The plan file as the user named it.
    pub file: String,
    /// 1-based line of the offending field, when known.
    pub line: Option<usize>,
    /// Dotted path of the field, e.g. `target.auth_token.file` or `steps[3].alias`.
    pub field: String,
    /// The rule that was broken, in words.
    pub rule: String,
}

impl fmt::Display for PlanIssue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "{}:{}: `{}`: {}", self.file, line, self.field, self.rule),
            None => write!(f, "{}: `{}`: {}", self.file, self.field, self.rule),
        }
    }
}

/// One preflight check that refused the migration.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Refusal {
    pub check: String,
    pub message: String,
    pub hint: String,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid input: {message}")]
    Usage { message: String, hint: String },

    #[error("the plan is invalid:\n{}", issues.iter().map(|i| format!("  {i}")).collect::<Vec<_>>().join("\n"))]
    InvalidPlan { issues: Vec<PlanIssue> },

    #[error("preflight refused the migration:\n{}", refusals.iter().map(|r| format!("  [{}] {}", r.check, r.message)).collect::<Vec<_>>().join("\n"))]
    PreflightRefused { refusals: Vec<Refusal> },

    #[error("step `{step}` failed: {message}")]
    StepFailed {
        step: String,
        message: String,
        hint: String,
    },

    #[error("{message}")]
    Failed { message: String, hint: String },

    /// Another process holds the plan's lock: not a failure of this run, and running again will not help
    /// until that process ends.
    #[error("{message}")]
    Busy { message: String, hint: String },

    /// The state file was written in a format this version does not read (or write).
    #[error("{message}")]
    StateVersion { message: String, hint: String },

    #[error("interrupted")]
    Interrupted,

    /// A one-shot command (`copy`, `verify`) was interrupted: it keeps no checkpoint to resume from.
    #[error("`{command}` interrupted")]
    InterruptedOneShot { command: &'static str },

    /// `audit` found groups without encryption: not a malfunction, a finding that gates a pipeline.
    #[error("{count} replication group(s) are not fully encrypted")]
    Unencrypted { count: usize },
}

impl Error {
    pub fn usage(message: impl Into<String>, hint: impl Into<String>) -> Self {
        Error::Usage {
            message: message.into(),
            hint: hint.into(),
        }
    }

    pub fn failed(message: impl Into<String>, hint: impl Into<String>) -> Self {
        Error::Failed {
            message: message.into(),
            hint: hint.into(),
        }
    }

    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Usage { .. } | Error::InvalidPlan { .. } => exit_code::INVALID_INPUT,
            Error::PreflightRefused { .. } => exit_code::PREFLIGHT_REFUSED,
            Error::StepFailed { .. } | Error::Failed { .. } | Error::Unencrypted { .. } => {
                exit_code::FAILED
            }
            Error::Busy { .. } => exit_code::BUSY,
            Error::StateVersion { .. } => exit_code::STATE_VERSION,
            Error::Interrupted | Error::InterruptedOneShot { .. } => exit_code::INTERRUPTED,
        }
    }

    pub fn hint(&self) -> String {
        match self {
            Error::Usage { hint, .. }
            | Error::StepFailed { hint, .. }
            | Error::Failed { hint, .. }
            | Error::Busy { hint, .. }
            | Error::StateVersion { hint, .. } => hint.clone(),
            Error::InvalidPlan { .. } => {
                "fix the fields named above and run `ecmigrate plan validate PLAN`; nothing was changed"
                    .into()
            }
            Error::PreflightRefused { refusals } => refusals
                .iter()
                .map(|r| format!("[{}] {}", r.check, r.hint))
                .collect::<Vec<_>>()
                .join("\n      "),
            Error::Interrupted => {
                "run the same command again: it resumes from the last checkpoint".into()
            }
            Error::InterruptedOneShot { command } => format!(
                "`{command}` keeps no checkpoint: run it again to start over (what it already copied or compared is simply done again)"
            ),
            Error::Unencrypted { .. } => {
                "write a plan for each group (`ecmigrate wizard` or plans/sandbox-demo.yaml) and run it".into()
            }
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
