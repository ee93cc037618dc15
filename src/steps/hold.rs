//! The operator's hold: the run waits (state `waiting`) until the operator releases it with `ecmigrate
//! cutover PLAN`, by removing the flag file, or at the prompt. A postponed cutover holds before its fence
//! (the stream tailing meanwhile); `enable_transit` holds in mode `preferred` while the clients move to TLS.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::engine::{Prompter, StepContext};
use crate::error::Result;
use crate::plan::CutoverStep;

/// Written by `ecmigrate cutover PLAN` into the plan's state folder; the waiting run consumes it.
pub const RELEASE_FILE: &str = "cutover.release";

/// What one hold waits for and says.
pub struct Hold<'a> {
    /// Hold even without a flag file (else only while `flag_file` exists).
    pub postpone: bool,
    /// Hold while this file (relative to the plan's folder) exists.
    pub flag_file: Option<&'a str>,
    /// The note when the hold starts, before `release it by …`.
    pub held: &'a str,
    /// What `status` and the progress lines say is awaited.
    pub waiting_for: &'a str,
    /// The question on a terminal.
    pub question: &'static str,
    /// The note when released, before `released by …`.
    pub released: &'a str,
}

impl<'a> Hold<'a> {
    /// A postponed cutover's hold.
    pub fn cutover(spec: &'a CutoverStep) -> Self {
        Hold {
            postpone: spec.postpone,
            flag_file: spec.postpone_flag_file.as_deref(),
            held: "cutover postponed: changes keep streaming to the target",
            waiting_for: "the cutover release",
            question: "Cut over now (pause writes, switch the endpoint)?",
            released: "cutover",
        }
    }
}

/// Hold until released; `None` when there is nothing to hold. Meanwhile the run is `waiting`.
pub async fn hold(ctx: &StepContext, spec: &Hold<'_>) -> Result<Option<String>> {
    let flag: Option<PathBuf> = spec
        .flag_file
        .map(|f| ctx.plan.resolve(std::path::Path::new(f)));
    let flag_at_start = flag.as_ref().is_some_and(|f| f.exists());
    if !spec.postpone && !flag_at_start {
        return Ok(None);
    }
    let release = ctx.state_folder().join(RELEASE_FILE);
    ctx.set_run_waiting(true)?;
    let mut ways = vec![format!("`ecmigrate cutover {}`", ctx.plan.path.display())];
    if let Some(f) = &flag {
        ways.push(format!("removing {}", f.display()));
    }
    let mut prompt = (ctx.options.interactive && !ctx.options.yes).then(|| {
        ways.push("answering the prompt".into());
        ask_in_background(ctx.prompter.clone(), spec.question)
    });
    ctx.note(format!(
        "{}; release it by {}",
        spec.held,
        ways.join(", or ")
    ));
    let started = Instant::now();
    let by = loop {
        if release.exists() {
            let _ = std::fs::remove_file(&release);
            break "ecmigrate cutover".to_string();
        }
        if let Some(f) = &flag
            && !f.exists()
            && (flag_at_start || !spec.postpone)
        {
            break format!("{} removed", f.display());
        }
        if let Some(rx) = &mut prompt {
            match rx.try_recv() {
                Ok(true) => break "the prompt".to_string(),
                Ok(false) => {
                    ctx.note("not released; still waiting for `ecmigrate cutover`");
                    prompt = None;
                }
                Err(tokio::sync::oneshot::error::TryRecvError::Empty) => {}
                Err(_) => prompt = None,
            }
        }
        ctx.waiting(spec.waiting_for, "postponed", started);
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    ctx.set_run_waiting(false)?;
    ctx.note(format!("{} released by {by}", spec.released));
    Ok(Some(by))
}

/// What a resumed step says when an earlier attempt already got past its hold (`by`: what released it).
pub fn note_earlier_release(ctx: &StepContext, by: Option<&str>) {
    ctx.note(format!(
        "the hold was released by {} in an earlier attempt",
        by.unwrap_or("?")
    ));
}

/// Ask on the terminal without blocking the run. A plain thread, not the runtime's blocking pool: a
/// question left unanswered (released another way) must not keep the process from exiting.
fn ask_in_background(
    prompter: std::sync::Arc<dyn Prompter>,
    question: &'static str,
) -> tokio::sync::oneshot::Receiver<bool> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let answer = prompter.confirm(question).unwrap_or(false);
        let _ = tx.send(answer);
    });
    rx
}
