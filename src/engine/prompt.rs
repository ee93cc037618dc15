//! The questions a step may ask the operator. The engine owns the interface; `ui` answers on a terminal.

use crate::error::Result;

/// Questions a step may ask the operator.
pub trait Prompter: Send + Sync {
    /// Yes/no, defaulting to no.
    fn confirm(&self, question: &str) -> Result<bool>;
    /// The operator must type `expected` exactly (used before anything destructive).
    fn confirm_typed(&self, question: &str, expected: &str) -> Result<bool>;
}

/// No terminal: every question is answered "no".
pub struct NoPrompter;

impl Prompter for NoPrompter {
    fn confirm(&self, _question: &str) -> Result<bool> {
        Ok(false)
    }
    fn confirm_typed(&self, _question: &str, _expected: &str) -> Result<bool> {
        Ok(false)
    }
}
