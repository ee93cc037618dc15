//! The one reporter: progress bars on a terminal, plain lines otherwise, JSON lines with `--output json`.

use std::collections::HashMap;
use std::io::Write;
use std::sync::Mutex;
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::engine::events::{Event, EventListener};
use crate::plan::StepKind;
use crate::ui::actions::{self, RecordedCall};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    Text,
    Json,
}

pub struct Reporter {
    format: OutputFormat,
    /// `--verbose`: each call's request body under its sentence.
    verbose: bool,
    bars: Option<Bars>,
    /// The calls a rehearsal would make, for its closing summary.
    rehearsed: Mutex<Vec<RecordedCall>>,
}

struct Bars {
    multi: MultiProgress,
    current: Mutex<Option<ProgressBar>>,
    progress: Mutex<HashMap<(StepKind, String), ProgressBar>>,
}

impl Reporter {
    pub fn new(format: OutputFormat, tty: bool, verbose: bool) -> Self {
        let bars = (format == OutputFormat::Text && tty).then(|| Bars {
            multi: MultiProgress::with_draw_target(ProgressDrawTarget::stderr()),
            current: Mutex::new(None),
            progress: Mutex::new(HashMap::new()),
        });
        Reporter {
            format,
            verbose,
            bars,
            rehearsed: Mutex::new(Vec::new()),
        }
    }

    /// The rehearsal's summary line: what the calls it reported would create, change, repoint and delete.
    pub fn plan_summary(&self) -> String {
        actions::plan_summary(&self.rehearsed.lock().expect("lock"))
    }

    pub fn format(&self) -> OutputFormat {
        self.format
    }

    /// Run `f` with the bars hidden (for prompts).
    pub fn suspend<R>(&self, f: impl FnOnce() -> R) -> R {
        match &self.bars {
            Some(b) => b.multi.suspend(f),
            None => f(),
        }
    }

    /// A line of text (text mode only), above any bars.
    pub fn line(&self, text: &str) {
        if self.format != OutputFormat::Text {
            return;
        }
        match &self.bars {
            Some(b) => {
                let _ = b.multi.println(text);
            }
            None => {
                let mut out = std::io::stdout().lock();
                let _ = writeln!(out, "{text}");
            }
        }
    }

    /// An event as the plain text lines of a run (`None`: nothing to say in words).
    pub(crate) fn text(&self, event: &Event) -> Option<String> {
        Some(match event {
            Event::RunStarted {
                plan,
                run_id,
                dry_run,
                resumed,
                steps,
            } => {
                let mode = if *dry_run {
                    " — DRY RUN: nothing will be changed"
                } else {
                    ""
                };
                let again = if *resumed { "resuming" } else { "starting" };
                format!("ecmigrate: {again} plan `{plan}` (run {run_id}, {steps} steps){mode}")
            }
            Event::PlanChangeAccepted { fields, .. } => format!(
                "    plan edit accepted (steps that have not started): {}",
                fields
                    .iter()
                    .map(|f| format!("`{f}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            Event::StartedOver {
                previous_run_id, ..
            } => format!(
                "    run {previous_run_id} created nothing: starting over with the plan as it is now"
            ),
            Event::StepStarted {
                index,
                kind,
                attempt,
            } => {
                let again = if *attempt > 1 {
                    format!(" (attempt {attempt})")
                } else {
                    String::new()
                };
                format!("==> [{}] {kind}{again}", index + 1)
            }
            Event::StepSkipped {
                index,
                kind,
                reason,
            } => format!("==> [{}] {kind}: skipped ({reason})", index + 1),
            Event::Check {
                name, ok, detail, ..
            } => format!("    {} {name}: {detail}", if *ok { "ok  " } else { "FAIL" }),
            Event::Call {
                operation,
                params,
                labels,
                dry_run,
                ..
            } => {
                let would = if *dry_run { "would " } else { "" };
                let line = actions::sentence(operation, params, labels);
                if self.verbose {
                    format!("    {would}{line}\n        {operation} {params}")
                } else {
                    format!("    {would}{line}")
                }
            }
            Event::Waiting {
                what,
                status,
                elapsed_ms,
                ..
            } => {
                format!(
                    "    waiting for {what}: {status} ({:.1}s)",
                    *elapsed_ms as f64 / 1000.0
                )
            }
            Event::Progress { .. } => return None,
            Event::Note { message, .. } => format!("    note: {message}"),
            Event::StepDone {
                kind, elapsed_ms, ..
            } => {
                format!("    {kind} done in {:.1}s", *elapsed_ms as f64 / 1000.0)
            }
            Event::StepFailed {
                kind, error, hint, ..
            } => format!("    {kind} FAILED: {error}\n    hint: {hint}"),
            Event::RunFinished { state, elapsed_ms } => {
                format!("run {state} after {:.1}s", *elapsed_ms as f64 / 1000.0)
            }
        })
    }
}

impl EventListener for Reporter {
    fn event(&self, event: &Event) {
        self.remember(event);
        match self.format {
            OutputFormat::Json => {
                if let Ok(line) = serde_json::to_string(event) {
                    let mut out = std::io::stdout().lock();
                    let _ = writeln!(out, "{line}");
                }
            }
            OutputFormat::Text => match &self.bars {
                None => {
                    if let Some(t) = self.text(event) {
                        self.line(&t);
                    }
                }
                Some(bars) => self.draw(bars, event),
            },
        }
    }
}

impl Reporter {
    /// Keep a rehearsed call for [`Reporter::plan_summary`].
    pub(crate) fn remember(&self, event: &Event) {
        if let Event::Call {
            operation,
            params,
            labels,
            dry_run: true,
            ..
        } = event
        {
            self.rehearsed.lock().expect("lock").push(RecordedCall {
                operation: operation.clone(),
                params: params.clone(),
                labels: labels.clone(),
            });
        }
    }

    fn draw(&self, bars: &Bars, event: &Event) {
        match event {
            Event::StepStarted { index, kind, .. } => {
                if let Some(t) = self.text(event) {
                    let _ = bars.multi.println(t);
                }
                let spinner = bars.multi.add(ProgressBar::new_spinner());
                spinner.set_style(
                    ProgressStyle::with_template("    {spinner} {prefix} {msg} [{elapsed}]")
                        .expect("template"),
                );
                spinner.set_prefix(format!("[{}] {kind}", index + 1));
                spinner.enable_steady_tick(Duration::from_millis(120));
                *bars.current.lock().expect("lock") = Some(spinner);
            }
            Event::Waiting { what, status, .. } => {
                if let Some(s) = bars.current.lock().expect("lock").as_ref() {
                    s.set_message(format!("waiting for {what}: {status}"));
                }
            }
            Event::Progress {
                kind,
                what,
                done,
                total,
            } => {
                let mut map = bars.progress.lock().expect("lock");
                let bar = map.entry((*kind, what.clone())).or_insert_with(|| {
                    let b = bars.multi.add(ProgressBar::new(*total));
                    b.set_style(super::progress_style(
                        "    {bar:30} {human_pos}/{human_len} {msg} ({rate}, eta {eta})",
                    ));
                    b.set_message(what.clone());
                    b
                });
                bar.set_length(*total);
                bar.set_position(*done);
            }
            Event::StepDone { .. } | Event::StepFailed { .. } => {
                if let Some(s) = bars.current.lock().expect("lock").take() {
                    s.finish_and_clear();
                }
                for (_, b) in bars.progress.lock().expect("lock").drain() {
                    b.finish_and_clear();
                }
                if let Some(t) = self.text(event) {
                    let _ = bars.multi.println(t);
                }
            }
            other => {
                if let Some(t) = self.text(other) {
                    let _ = bars.multi.println(t);
                }
            }
        }
    }
}
