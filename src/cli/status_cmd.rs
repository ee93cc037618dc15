//! `ecmigrate status PLAN [--output json]`: where a run stands, from its state file.

use std::path::PathBuf;

use clap::Args;
use serde_json::json;

use crate::cli::Globals;
use crate::engine::state::{RunStatus, StatePaths, StepStatus};
use crate::error::{Result, exit_code};
use crate::steps::records::{CutoverIntent, Sealed};
use crate::ui::OutputFormat;

#[derive(Args, Debug)]
pub struct StatusArgs {
    pub plan: PathBuf,
    #[arg(long, value_enum, default_value = "text")]
    pub output: OutputFormat,
}

/// What `status` reads: the plan's state, whether a process holds it now, the stream's last status.
struct Seen {
    plan: crate::plan::LoadedPlan,
    paths: StatePaths,
    state: Option<crate::engine::state::RunState>,
    active: bool,
    stream: Option<serde_json::Value>,
    steps: Vec<serde_json::Value>,
}

impl Seen {
    fn run_state(&self) -> RunStatus {
        self.state
            .as_ref()
            .map(|s| s.state)
            .unwrap_or(RunStatus::NotStarted)
    }

    /// The state as shown: a run recorded `running`/`waiting` that no process holds was interrupted (a
    /// crash, a kill, a reboot); `ecmigrate run` resumes it.
    fn shown_state(&self) -> &'static str {
        self.run_state().shown(self.active)
    }

    fn next_step(&self) -> Option<String> {
        self.steps
            .iter()
            .find(|s| !matches!(s["status"].as_str(), Some("done") | Some("skipped")))
            .and_then(|s| s["kind"].as_str().map(str::to_string))
    }
}

pub fn run(globals: &Globals, args: StatusArgs) -> Result<i32> {
    let plan = crate::plan::load(&args.plan)?;
    let paths = StatePaths::new(&globals.state_dir, &plan.plan.name);
    let state = paths.load()?;
    let active = paths.is_locked();
    let steps = step_rows(&plan, state.as_ref());
    // The live stream's lag and health, as the run's tailer last wrote it.
    let stream: Option<serde_json::Value> = std::fs::read_to_string(paths.dir.join("stream.json"))
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .map(|s| with_staleness(s, active));
    let seen = Seen {
        plan,
        paths,
        state,
        active,
        stream,
        steps,
    };
    match args.output {
        OutputFormat::Json => print_json(&seen),
        OutputFormat::Text => print_text(&seen, &args.plan),
    }
    Ok(exit_code::OK)
}

fn step_rows(
    plan: &crate::plan::LoadedPlan,
    state: Option<&crate::engine::state::RunState>,
) -> Vec<serde_json::Value> {
    plan.plan
        .steps
        .iter()
        .enumerate()
        .map(|(i, spec)| {
            let record = state.and_then(|s| s.steps.get(i));
            json!({
                "kind": spec.kind(),
                "status": record.map(|r| r.status).unwrap_or(StepStatus::Pending),
                "attempt": record.map(|r| r.attempt).unwrap_or(0),
                "outputs": record.map(|r| serde_json::Value::Object(r.outputs.clone())).unwrap_or(json!({})),
                "error": record.and_then(|r| r.error.clone()),
                "started_at": record.and_then(|r| r.started_at),
                "finished_at": record.and_then(|r| r.finished_at),
            })
        })
        .collect()
}

fn print_json(seen: &Seen) {
    let report = seen.paths.dir.join("report.md");
    let body = json!({
        "plan": seen.plan.plan.name,
        "state": seen.shown_state(),
        "recorded_state": seen.run_state().as_str(),
        "active": seen.active,
        "run_id": seen.state.as_ref().map(|s| s.run_id.clone()),
        "state_file": seen.paths.state_file(),
        "next_step": seen.next_step(),
        "seal": seal_view(seen),
        "stream": seen.stream,
        "report": report.exists().then_some(report),
        "steps": seen.steps,
    });
    println!("{body}");
}

fn print_text(seen: &Seen, plan_path: &std::path::Path) {
    let run_id = seen
        .state
        .as_ref()
        .map(|s| s.run_id.as_str())
        .unwrap_or("-");
    let activity = if seen.active {
        " (a run is in progress now)"
    } else {
        ""
    };
    println!(
        "plan `{}`: {}{activity}, run {run_id}",
        seen.plan.plan.name,
        seen.shown_state()
    );
    for (i, s) in seen.steps.iter().enumerate() {
        let status = s["status"].as_str().unwrap_or("?");
        let err = s["error"]
            .as_str()
            .map(|e| format!(" — {e}"))
            .unwrap_or_default();
        println!(
            "  [{}] {:<18} {status}{err}",
            i + 1,
            s["kind"].as_str().unwrap_or("?")
        );
    }
    if let Some(st) = &seen.stream {
        print_stream(st);
    }
    print_seal(seen);
    print_next(seen, plan_path);
}

/// The seal on the source as `status` tells it: `None` when there is none to tell (no cutover seal
/// recorded, the source deleted, or the run rolled back). `state` is `sealed`, `partly_sealed`,
/// `not_sealed` (the seal failed), `ran_out` (its bound passed) or `lifted` (by a rollback that did not
/// finish).
fn seal_view(seen: &Seen) -> Option<serde_json::Value> {
    let state = seen.state.as_ref()?;
    let index = seen.plan.plan.cutover_step()?.0;
    let record = state.steps.get(index)?;
    let deleted = seen
        .steps
        .iter()
        .any(|s| s["kind"] == "delete_source" && s["status"] == "done");
    if deleted || state.state == RunStatus::RolledBack {
        return None;
    }
    let intent: CutoverIntent = record.intent_as();
    if let Some(at) = intent.seal_lifted_at {
        return Some(
            json!({ "state": "lifted", "lifted_at": at, "rollback_running": seen.active }),
        );
    }
    let finished: Option<Sealed> = record
        .outputs
        .get("sealed")
        .and_then(|v| serde_json::from_value(v.clone()).ok());
    let sealed = intent.seal_on_record(finished)?;
    let view = if sealed.primaries == 0 {
        "not_sealed"
    } else if sealed.ran_out() {
        "ran_out"
    } else if sealed.refused > 0 {
        "partly_sealed"
    } else {
        "sealed"
    };
    Some(json!({
        "state": view,
        "primaries": sealed.primaries,
        "until": sealed.until,
        "error": sealed.error,
    }))
}

fn print_seal(seen: &Seen) {
    let Some(seal) = seal_view(seen) else {
        return;
    };
    let source = &seen.plan.plan.source.replication_group_id;
    let text = |key: &str| seal[key].as_str().unwrap_or("?").to_string();
    let primaries = seal["primaries"].as_u64().unwrap_or(0);
    let plural = if primaries == 1 { "y" } else { "ies" };
    match seal["state"].as_str() {
        Some("lifted") if seal["rollback_running"] == true => println!(
            "source `{source}`: its seal was lifted at {} by the rollback that is running",
            text("lifted_at")
        ),
        Some("lifted") => println!(
            "source `{source}`: its seal was lifted at {} by a rollback that did not finish: clients left on it can write there (run `ecmigrate rollback` again)",
            text("lifted_at")
        ),
        Some("not_sealed") => println!(
            "source `{source}`: NOT sealed after the cutover ({}): clients left on it can still write there",
            text("error")
        ),
        Some("ran_out") => println!(
            "source `{source}`: its seal ran out at {}: clients left on it can write there again",
            text("until")
        ),
        Some("partly_sealed") => println!(
            "source `{source}` sealed on {primaries} primar{plural} only, until {} ({}): clients left on the others can still write there",
            text("until"),
            text("error")
        ),
        _ => println!(
            "source `{source}` sealed: writes wait on its {primaries} primar{plural} until {} (`ecmigrate rollback` lifts it; delete_source ends it){}",
            text("until"),
            seal["error"]
                .as_str()
                .map(|e| format!("; its last changes may not all be on the target: {e}"))
                .unwrap_or_default()
        ),
    }
}

/// A stream status written more than this long ago by a run still active is stale: the tailer writes it
/// after every round, and at least every second while it waits to retry.
const STALE_AFTER_MS: i64 = 5_000;

/// The sides a stream's health names, in the order `status` lists them.
const SIDES: [&str; 3] = ["source", "target", "local"];

/// The stream's status as written, plus how old it is (`age_ms`) and whether it is `stale`: a run
/// still active and tailing that has not written it for [`STALE_AFTER_MS`].
fn with_staleness(mut stream: serde_json::Value, active: bool) -> serde_json::Value {
    let age_ms = stream["updated_at"]
        .as_str()
        .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
        .map(|t| (chrono::Utc::now() - t.with_timezone(&chrono::Utc)).num_milliseconds());
    // Files of older versions carry no `stream` field: they were only ever written while tailing.
    let tailing = stream["stream"].as_str().is_none_or(|s| s == "tailing");
    let stale = active && tailing && age_ms.is_none_or(|a| a > STALE_AFTER_MS);
    if let Some(obj) = stream.as_object_mut() {
        obj.insert("age_ms".into(), json!(age_ms));
        obj.insert("stale".into(), json!(stale));
    }
    stream
}

/// `HH:MM:SS` (local time) of an RFC 3339 timestamp, or `?`.
fn clock(v: &serde_json::Value) -> String {
    v.as_str()
        .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
        .map(|t| {
            t.with_timezone(&chrono::Local)
                .format("%H:%M:%S")
                .to_string()
        })
        .unwrap_or_else(|| "?".into())
}

/// The stream's lines: each failing side (the last error, since when, retries), then the lag — never
/// a bare "0 pending" while a side fails (the capture cannot see what an unreachable source did) —, and
/// whether the status is stale or from a stream no longer running.
fn print_stream(st: &serde_json::Value) {
    let as_of = clock(&st["updated_at"]);
    let mut failing = false;
    for side in SIDES {
        let t = &st["health"][side];
        if t.is_object() {
            failing = true;
            let retries = t["retries"].as_u64().unwrap_or(0);
            println!(
                "stream: {side} {} since {} ({retries} {}): {}",
                t["state"].as_str().unwrap_or("failing"),
                clock(&t["since"]),
                if retries == 1 { "retry" } else { "retries" },
                t["error"].as_str().unwrap_or("?")
            );
        }
    }
    if st["stale"] == true {
        println!(
            "stream: STALE — last written at {as_of}, {} s ago, though the run is active: its tailer is stuck or busy (a long reconcile pass); what follows is old",
            st["age_ms"].as_i64().unwrap_or(0) / 1000
        );
    }
    let running = match st["stream"].as_str() {
        Some("finished") => "; finished at the cutover",
        Some("stopped") => "; stopped when the run ended",
        _ => "",
    };
    let counts = format!(
        "{} changes replayed, {} reconcile pass(es){running}; as of {as_of}",
        st["replayed"], st["reconciles"]
    );
    if failing {
        println!(
            "stream: not copying — {} change(s) captured and waiting, a full reconcile pass follows once every side answers; {counts}",
            st["capture"]["pending"]
        );
    } else {
        println!(
            "stream: {} pending (oldest {} ms), {counts}",
            st["capture"]["pending"], st["capture"]["oldest_pending_ms"]
        );
    }
}

/// What to do next, from where the run stands.
fn print_next(seen: &Seen, plan_path: &std::path::Path) {
    let plan = plan_path.display();
    match (seen.run_state(), seen.next_step()) {
        (RunStatus::Done, _) if seen.plan.plan.is_in_place() => {
            println!("the in-place change is finished")
        }
        (RunStatus::Done, _) => {
            println!("the migration is finished");
            let report = seen.paths.dir.join("report.md");
            if report.exists() {
                println!(
                    "evidence report: {} (and report.json beside it)",
                    report.display()
                );
            }
        }
        (RunStatus::RolledBack, _) => println!(
            "rolled back: clients point at `{}` again; `ecmigrate run` refuses this plan",
            seen.plan.plan.source.replication_group_id
        ),
        (RunStatus::Waiting, Some(step)) if seen.active && step == "rotate_auth_token" => println!(
            "waiting while both AUTH tokens open the group and the clients move to the new one; retire the old token with: ecmigrate cutover {plan}"
        ),
        (RunStatus::Waiting, _) if seen.active && seen.plan.plan.is_in_place() => println!(
            "waiting in transit mode `preferred` while the clients move to TLS; require TLS with: ecmigrate cutover {plan}"
        ),
        (RunStatus::Waiting, _) if seen.active => {
            println!("waiting at the cutover; release it with: ecmigrate cutover {plan}")
        }
        (RunStatus::NotStarted, _) => println!("next: ecmigrate run {plan}"),
        (RunStatus::Running | RunStatus::Waiting, step) if !seen.active => println!(
            "interrupted: no ecmigrate process holds this plan{}; resume with: ecmigrate run {plan}",
            step.map(|s| format!(" (stopped in `{s}`)"))
                .unwrap_or_default()
        ),
        (_, Some(step)) if !seen.active => {
            println!("next: `{step}`; resume with: ecmigrate run {plan}")
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn written(ago_ms: i64, stream: &str) -> serde_json::Value {
        let at = chrono::Utc::now() - chrono::Duration::milliseconds(ago_ms);
        json!({ "stream": stream, "updated_at": at.to_rfc3339() })
    }

    /// What `status` says of a seal recorded as `sealed` (with `intent` on the cutover's record).
    fn seal_seen(sealed: serde_json::Value, intent: serde_json::Value, state: RunStatus) -> Seen {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("plans/sandbox-demo.yaml");
        let plan = crate::plan::load(&path).expect("the demo plan loads");
        let mut run = crate::engine::state::RunState::new(&plan.plan, "run".into());
        let index = plan.plan.cutover_step().expect("a cutover step").0;
        run.steps[index].outputs.insert("sealed".into(), sealed);
        if let serde_json::Value::Object(intent) = intent {
            run.steps[index].intent = intent;
        }
        run.state = state;
        let steps = step_rows(&plan, Some(&run));
        Seen {
            paths: StatePaths::new(std::path::Path::new("/nonexistent"), &plan.plan.name),
            plan,
            state: Some(run),
            active: false,
            stream: None,
            steps,
        }
    }

    #[test]
    fn status_tells_a_seal_in_force_from_one_that_ran_out_was_partial_failed_or_was_lifted() {
        let hour = chrono::Duration::hours(1);
        let until = |d: chrono::Duration| (chrono::Utc::now() + d).to_rfc3339();
        let sealed = |primaries: u64, refused: u64, until: String, error: Option<&str>| {
            json!({ "primaries": primaries, "refused": refused, "hours": 1, "until": until,
                    "keys_copied": 0, "error": error })
        };
        let state_of = |seen: Seen| seal_view(&seen).map(|v| v["state"].clone());
        let done = RunStatus::Done;
        let view = |s| state_of(seal_seen(s, json!({}), done));
        assert_eq!(view(sealed(3, 0, until(hour), None)), Some(json!("sealed")));
        assert_eq!(
            view(sealed(3, 0, until(-hour), None)),
            Some(json!("ran_out"))
        );
        assert_eq!(
            view(sealed(2, 1, until(hour), Some("1 of 3 primaries refused"))),
            Some(json!("partly_sealed"))
        );
        assert_eq!(
            view(sealed(0, 0, until(hour), Some("connection refused"))),
            Some(json!("not_sealed"))
        );
        let lifted = json!({ "seal_lifted_at": until(-hour) });
        assert_eq!(
            state_of(seal_seen(sealed(3, 0, until(hour), None), lifted, done)),
            Some(json!("lifted"))
        );
        let resealed =
            json!({ "resealed": sealed(2, 1, until(hour), Some("1 of 3 primaries refused")) });
        assert_eq!(
            state_of(seal_seen(sealed(3, 0, until(hour), None), resealed, done)),
            Some(json!("partly_sealed"))
        );
        let rolled_back = seal_seen(
            sealed(3, 0, until(hour), None),
            json!({}),
            RunStatus::RolledBack,
        );
        assert_eq!(state_of(rolled_back), None);
    }

    #[test]
    fn a_tailing_status_not_kept_fresh_by_an_active_run_is_stale() {
        assert_eq!(
            with_staleness(written(10_000, "tailing"), true)["stale"],
            true
        );
        assert_eq!(
            with_staleness(written(500, "tailing"), true)["stale"],
            false
        );
        // No run holds the plan (it shows as interrupted), or the stream ended: old, not stale.
        assert_eq!(
            with_staleness(written(10_000, "tailing"), false)["stale"],
            false
        );
        assert_eq!(
            with_staleness(written(10_000, "finished"), true)["stale"],
            false
        );
        let age = with_staleness(written(10_000, "tailing"), true)["age_ms"]
            .as_i64()
            .unwrap();
        assert!((10_000..20_000).contains(&age), "{age}");
    }
}
