//! Everything the operator sees: reporters that turn engine events into progress bars (TTY), plain lines,
//! or JSON lines, and the terminal's answers to the engine's prompts. Every command works without a terminal.

pub mod actions;
pub mod fleet;
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

/// A progress bar's style from `template`, which may use `{rate}`: items per second without decimals
/// (`37,718/s`; indicatif's `{per_sec}` prints `37718.4567/s`).
pub fn progress_style(template: &str) -> indicatif::ProgressStyle {
    indicatif::ProgressStyle::with_template(template)
        .expect("template")
        .with_key(
            "rate",
            |state: &indicatif::ProgressState, w: &mut dyn std::fmt::Write| {
                let _ = write!(w, "{}/s", indicatif::HumanCount(rate(state.per_sec())));
            },
        )
}

/// A rate as a whole number (0 when not yet known).
fn rate(per_sec: f64) -> u64 {
    if per_sec.is_finite() && per_sec > 0.0 {
        per_sec.round() as u64
    } else {
        0
    }
}

pub fn stdin_is_terminal() -> bool {
    std::io::stdin().is_terminal() && std::env::var_os("CI").is_none()
}

pub fn stdout_is_terminal() -> bool {
    std::io::stdout().is_terminal()
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_rate_is_a_whole_number() {
        assert_eq!(super::rate(37718.4567), 37718);
        assert_eq!(super::rate(0.4), 0);
        assert_eq!(super::rate(f64::NAN), 0);
        assert_eq!(super::rate(f64::INFINITY), 0);
        assert_eq!(
            indicatif::HumanCount(super::rate(37718.6)).to_string(),
            "37,719"
        );
    }
}
