//! The fleet run's reporter: one progress line per group on a terminal, plain lines prefixed with the
//! group otherwise, JSON lines naming the plan, group and region with `--output json`. Each plan's events
//! are put in words by a [`Reporter`] of its own (the same words `ecmigrate run` prints, and the same
//! rehearsal summary); this file only adds the group and draws one line per group.

use std::collections::HashMap;
use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::Value;

use crate::engine::events::{Event, EventListener};
use crate::fleet::run::{FleetEvent, FleetObserver, Outcome, PlanLabel};
use crate::ui::{OutputFormat, Reporter};

/// Where every line goes: above the bars on a terminal, else stdout.
struct Out {
    format: OutputFormat,
    multi: Option<MultiProgress>,
}

impl Out {
    fn line(&self, text: &str) {
        match &self.multi {
            Some(m) => {
                let _ = m.println(text);
            }
            None => {
                let _ = writeln!(std::io::stdout().lock(), "{text}");
            }
        }
    }

    /// `value` (an event) as one JSON line with the plan's names added.
    fn json(&self, value: impl serde::Serialize, label: Option<&PlanLabel>) {
        let mut value = serde_json::to_value(value).unwrap_or(Value::Null);
        if let (Some(map), Some(label)) = (value.as_object_mut(), label) {
            map.insert("plan".into(), Value::from(label.plan.clone()));
            map.insert("group".into(), Value::from(label.group.clone()));
            map.insert("region".into(), Value::from(label.region.clone()));
        }
        let _ = writeln!(std::io::stdout().lock(), "{value}");
    }
}

pub struct FleetReporter {
    out: Arc<Out>,
    verbose: bool,
    /// The fleet folder as the operator named it (for the `fleet cutover DIR` hint).
    dir: PathBuf,
    groups: Mutex<HashMap<String, Arc<GroupReporter>>>,
}

impl FleetReporter {
    pub fn new(format: OutputFormat, tty: bool, verbose: bool, dir: PathBuf) -> Self {
        let multi = (format == OutputFormat::Text && tty)
            .then(|| MultiProgress::with_draw_target(ProgressDrawTarget::stderr()));
        FleetReporter {
            out: Arc::new(Out { format, multi }),
            verbose,
            dir,
            groups: Mutex::new(HashMap::new()),
        }
    }

    /// A line of the fleet's own (text output only).
    pub fn line(&self, text: &str) {
        if self.out.format == OutputFormat::Text {
            self.out.line(text);
        }
    }

    fn group(&self, plan: &str) -> Option<Arc<GroupReporter>> {
        self.groups.lock().expect("lock").get(plan).cloned()
    }
}

fn prefix(label: &PlanLabel) -> String {
    format!("[{}/{}]", label.region, label.group)
}

/// One plan's listener: its events in the run's words, prefixed, or its progress line.
struct GroupReporter {
    label: PlanLabel,
    out: Arc<Out>,
    words: Reporter,
    bar: Option<ProgressBar>,
    steps: Mutex<usize>,
}

impl GroupReporter {
    fn lines(&self, text: &str) {
        let prefix = prefix(&self.label);
        for line in text.lines() {
            self.out.line(&format!("{prefix} {line}"));
        }
    }

    /// The one-line state of the group on its progress line.
    fn draw(&self, bar: &ProgressBar, event: &Event) {
        let steps = *self.steps.lock().expect("lock");
        let step =
            |index: usize, kind: &dyn std::fmt::Display| format!("[{}/{steps}] {kind}", index + 1);
        match event {
            Event::RunStarted { steps: n, .. } => *self.steps.lock().expect("lock") = *n,
            Event::StepStarted { index, kind, .. } => {
                bar.set_prefix(step(*index, kind));
                bar.set_message("");
            }
            Event::Waiting { what, status, .. } => {
                bar.set_message(format!("waiting for {what}: {status}"))
            }
            Event::Progress {
                what, done, total, ..
            } => bar.set_message(format!(
                "{} {}/{}",
                what,
                indicatif::HumanCount(*done),
                indicatif::HumanCount(*total)
            )),
            Event::Call { .. } | Event::Check { .. } => {
                if let Some(t) = self.words.text(event) {
                    bar.set_message(t.trim().to_string());
                }
            }
            Event::StepDone { kind, .. } => bar.set_message(format!("{kind} done")),
            Event::StepSkipped { .. } => {}
            Event::RunFinished { state, elapsed_ms } => bar.finish_with_message(format!(
                "run {state} after {:.1}s",
                *elapsed_ms as f64 / 1000.0
            )),
            // Said above the bars, with the group: a failure, a note, how the run was admitted.
            _ => {
                if let Some(t) = self.words.text(event) {
                    self.lines(t.trim_start());
                }
            }
        }
    }
}

impl EventListener for GroupReporter {
    fn event(&self, event: &Event) {
        self.words.remember(event);
        match (self.out.format, &self.bar) {
            (OutputFormat::Json, _) => self.out.json(event, Some(&self.label)),
            (OutputFormat::Text, Some(bar)) => self.draw(bar, event),
            (OutputFormat::Text, None) => {
                if let Some(t) = self.words.text(event) {
                    self.lines(&t);
                }
            }
        }
    }
}

impl FleetObserver for FleetReporter {
    fn plan_listener(&self, label: &PlanLabel) -> Arc<dyn EventListener> {
        let bar = self.out.multi.as_ref().map(|m| {
            let bar = m.add(ProgressBar::new_spinner());
            bar.set_style(
                ProgressStyle::with_template(&format!(
                    "{{spinner}} {:<32} {{prefix}} {{wide_msg}} [{{elapsed}}]",
                    prefix(label)
                ))
                .expect("template"),
            );
            bar.enable_steady_tick(Duration::from_millis(120));
            bar
        });
        let group = Arc::new(GroupReporter {
            label: label.clone(),
            out: self.out.clone(),
            words: Reporter::new(OutputFormat::Text, false, self.verbose),
            bar,
            steps: Mutex::new(0),
        });
        self.groups
            .lock()
            .expect("lock")
            .insert(label.plan.clone(), group.clone());
        group
    }

    fn fleet_event(&self, event: &FleetEvent) {
        if self.out.format == OutputFormat::Json {
            let label = match event {
                FleetEvent::PlanStarted { label } | FleetEvent::PlanWaiting { label, .. } => {
                    Some(label)
                }
                FleetEvent::PlanFinished(r) => Some(&r.label),
                _ => None,
            };
            self.out.json(event, label);
            return;
        }
        match event {
            FleetEvent::FleetStarted { plans, parallel, dry_run } => self.line(&format!(
                "fleet: {plans} plan(s), at most {parallel} at a time{}",
                if *dry_run { " — DRY RUN: nothing will be changed" } else { "" }
            )),
            FleetEvent::PlanStarted { .. } => {}
            FleetEvent::PlanWaiting { label, release } => self.line(&format!(
                "{} waiting at the postponed cutover (its slot goes to the next plan); release it with `{release}`, or every waiting plan with `ecmigrate fleet cutover {}`",
                prefix(label),
                self.dir.display()
            )),
            FleetEvent::PlanFinished(r) => {
                let p = prefix(&r.label);
                match r.outcome {
                    Outcome::Done => self.line(&format!("{p} done")),
                    Outcome::AlreadyDone => self.line(&format!("{p} already done: nothing to do")),
                    Outcome::Rehearsed => {
                        if let Some(g) = self.group(&r.label.plan) {
                            self.line(&format!("{p} {}", g.words.plan_summary()));
                        }
                    }
                    Outcome::Failed | Outcome::Busy | Outcome::NotStarted => {
                        if let Some(bar) = self.group(&r.label.plan).and_then(|g| g.bar.clone()) {
                            bar.abandon_with_message("FAILED");
                        }
                        self.line(&format!(
                            "{p} {}: {}\n{p} hint: {}",
                            if r.outcome == Outcome::NotStarted { "not started" } else { "FAILED" },
                            r.error.as_deref().unwrap_or(""),
                            r.hint.as_deref().unwrap_or("")
                        ));
                    }
                }
                if let Some(report) = &r.report {
                    self.line(&format!("{p} evidence report: {}", report.display()));
                }
            }
            FleetEvent::FleetFinished { plans, .. } => {
                let count = |o: Outcome| plans.iter().filter(|r| r.outcome == o).count();
                self.line(&format!(
                    "fleet: {} done, {} already done, {} rehearsed, {} failed, {} busy, {} not started",
                    count(Outcome::Done),
                    count(Outcome::AlreadyDone),
                    count(Outcome::Rehearsed),
                    count(Outcome::Failed),
                    count(Outcome::Busy),
                    count(Outcome::NotStarted)
                ));
                // The progress lines have said their last: what follows is printed below them.
                if let Some(m) = &self.out.multi {
                    let _ = m.clear();
                }
            }
        }
    }
}
