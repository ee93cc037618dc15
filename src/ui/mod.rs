//! Everything the operator sees: reporters that turn engine events into progress bars (TTY), plain lines,
//! or JSON lines, and the terminal's answers to the engine's prompts. Every command works without a terminal.

pub mod reporter;
pub mod wizard;

use std::io::IsTerminal;

use crate::error::{Error, Result};

pub use reporter::{OutputFormat, Reporter};

pub use crate::engine::{NoPrompter, Prompter};

/// Prompts on the terminal (dialoguer), with progress bars suspended while the operator answers.
pub struct TerminalPrompter {
    pub reporter: std::sync::Arc<Reporter>,
}

impl Prompter for TerminalPrompter {
    fn confirm(&self, question: &str) -> Result<bool> {
        let question = question.to_string();
        self.reporter.suspend(|| {
            tokio::task::block_in_place(|| {
                dialoguer::Confirm::new()
                    .with_prompt(question)
                    .default(false)
                    .interact()
                    .map_err(prompt_error)
            })
        })
    }

    fn confirm_typed(&self, question: &str, expected: &str) -> Result<bool> {
        let question = question.to_string();
        let answer: String = self.reporter.suspend(|| {
            tokio::task::block_in_place(|| {
                dialoguer::Input::<String>::new()
                    .with_prompt(question)
                    .allow_empty(true)
                    .interact_text()
                    .map_err(prompt_error)
            })
        })?;
        Ok(answer.trim() == expected)
    }
}

fn prompt_error(e: dialoguer::Error) -> Error {
    match e {
        dialoguer::Error::IO(io) if io.kind() == std::io::ErrorKind::Interrupted => {
            Error::Interrupted
        }
        other => Error::failed(
            format!("the prompt failed: {other}"),
            "run with --yes and `confirm:` in the plan instead",
        ),
    }
}

pub fn stdin_is_terminal() -> bool {
    std::io::stdin().is_terminal() && std::env::var_os("CI").is_none()
}

pub fn stdout_is_terminal() -> bool {
    std::io::stdout().is_terminal()
}
