//! The postponed cutover's hold: the run waits (state `waiting`, the stream tailing) until the operator
//! releases it with `ecmigrate cutover PLAN`, by removing the flag file, or at the prompt.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::engine::{Prompter, StepContext};
use crate::error::Result;
use crate::plan::CutoverStep;

/// Written by `ecmigrate cutover PLAN` into the plan's state folder; the waiting run consumes it.
pub const RELEASE_FILE: &str = "cutover.release";

/// Hold a postponed cutover until it is released; `None` when there is nothing to hold. Meanwhile the
/// run is `waiting` and the stream keeps tailing (its lag is in `stream.json`, shown by `status`).
pub(super) async fn hold(ctx: &StepContext, spec: &CutoverStep) -> Result<Option<String>> {
    let flag: Option<PathBuf> = spec
        .postpone_flag_file
        .as_ref()
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
        ask_in_background(ctx.prompter.clone())
    });
    ctx.note(format!(
        "cutover postponed: changes keep streaming to the target; release it by {}",
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
        ctx.waiting("the cutover release", "postponed", started);
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    ctx.set_run_waiting(false)?;
    ctx.note(format!("cutover released by {by}"));
    Ok(Some(by))
}

/// Ask on the terminal without blocking the run. A plain thread, not the runtime's blocking pool: a
/// question left unanswered (released another way) must not keep the process from exiting.
fn ask_in_background(
    prompter: std::sync::Arc<dyn Prompter>,
) -> tokio::sync::oneshot::Receiver<bool> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let answer = prompter
            .confirm("Cut over now (pause writes, switch the endpoint)?")
            .unwrap_or(false);
        let _ = tx.send(answer);
    });
    rx
}
