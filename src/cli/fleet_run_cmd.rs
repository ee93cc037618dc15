//! `ecmigrate fleet run DIR [--parallel N] [--dry-run] [--yes] [--keep-going] [--output json]`,
//! `fleet status DIR [--output json]`, `fleet cutover DIR [--yes]` and `fleet report DIR`: the arguments
//! and the wiring (the clouds, the reporter, the one confirmation); the work is `crate::fleet`'s.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use serde_json::json;

use crate::cli::Globals;
use crate::cloud::Cloud;
use crate::cloud::aws::{Aws, SharedRetry};
use crate::error::{Error, Result, exit_code};
use crate::fleet::Manifest;
use crate::fleet::run::{CloudSource, FleetOptions, fleet_exit_code};
use crate::fleet::status::GroupStatus;
use crate::plan::{LoadedPlan, Provider};
use crate::steps::cutover::release::Followed;
use crate::ui::OutputFormat;
use crate::ui::fleet::FleetReporter;

#[derive(Args, Debug)]
pub struct FleetRunArgs {
    /// The fleet folder (`fleet.json` and the plans beside it).
    pub dir: PathBuf,
    /// At most this many plans at once (a plan waiting at a postponed cutover gives its slot up).
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub parallel: u16,
    /// Rehearse every plan: every check, every call that would be made; change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Do not ask; destructive steps also need `confirm:` in each plan.
    #[arg(long, short = 'y')]
    pub yes: bool,
    /// A failed plan does not stop the others from starting.
    #[arg(long)]
    pub keep_going: bool,
    #[arg(long, value_enum, default_value = "text")]
    pub output: OutputFormat,
}

#[derive(Args, Debug)]
pub struct FleetStatusArgs {
    pub dir: PathBuf,
    #[arg(long, value_enum, default_value = "text")]
    pub output: OutputFormat,
}

#[derive(Args, Debug)]
pub struct FleetCutoverArgs {
    pub dir: PathBuf,
    /// Do not ask before releasing.
    #[arg(long, short = 'y')]
    pub yes: bool,
    /// Give up following the switches after this long (the releases stand).
    #[arg(long, default_value_t = 600)]
    pub timeout_seconds: u64,
    #[arg(long, value_enum, default_value = "text")]
    pub output: OutputFormat,
}

#[derive(Args, Debug)]
pub struct FleetReportArgs {
    pub dir: PathBuf,
}

/// AWS clients by (region, profile).
type AwsByRegion = HashMap<(Option<String>, Option<String>), Arc<dyn Cloud>>;

/// The clouds of a fleet's plans: the sandbox, or AWS clients built once per region and profile, whose
/// retries share one budget per service and region ([`SharedRetry`]).
struct FleetClouds {
    globals: Globals,
    retry: SharedRetry,
    aws: tokio::sync::Mutex<AwsByRegion>,
}

#[async_trait::async_trait]
impl CloudSource for FleetClouds {
    async fn cloud(&self, plan: &LoadedPlan) -> Result<Arc<dyn Cloud>> {
        let cloud = match plan.plan.provider {
            Provider::Sandbox => self.globals.cloud(Provider::Sandbox, None).await?,
            Provider::Aws => {
                let aws = plan.plan.aws.as_ref();
                let region = aws.and_then(|a| a.region.clone());
                let profile = self
                    .globals
                    .profile
                    .clone()
                    .or_else(|| aws.and_then(|a| a.profile.clone()));
                let mut cache = self.aws.lock().await;
                let key = (region.clone(), profile.clone());
                let cloud = match cache.get(&key) {
                    Some(c) => c.clone(),
                    None => {
                        let c: Arc<dyn Cloud> = Arc::new(
                            Aws::connect_shared(region, profile, &self.retry)
                                .await
                                .map_err(|e| {
                                    Error::usage(
                                        format!("cannot set up the AWS clients of plan `{}`: {e}", plan.plan.name),
                                        "set `aws.region` in the plan and the credentials (standard AWS chain)",
                                    )
                                })?,
                        );
                        cache.insert(key, c.clone());
                        c
                    }
                };
                #[cfg(feature = "test-hooks")]
                let cloud = super::with_test_faults(cloud);
                cloud
            }
        };
        Ok(cloud)
    }
}

/// One question on a terminal, else `--yes` is needed: several plans at once cannot each ask.
fn confirmed(question: &str, yes: bool, output: OutputFormat, what: &str) -> Result<()> {
    if yes {
        return Ok(());
    }
    if !(crate::ui::stdin_is_terminal() && output == OutputFormat::Text) {
        return Err(Error::usage(
            format!("{what} needs --yes without a terminal"),
            "pass --yes (destructive steps also need `confirm:` in each plan), or --dry-run to rehearse; nothing was changed",
        ));
    }
    let answer = tokio::task::block_in_place(|| {
        dialoguer::Confirm::new()
            .with_prompt(question)
            .default(false)
            .interact()
    })
    .map_err(|_| Error::Interrupted)?;
    if answer {
        Ok(())
    } else {
        Err(Error::usage(
            format!("{what} was not confirmed"),
            "nothing was changed",
        ))
    }
}

pub async fn run(globals: &Globals, args: FleetRunArgs) -> Result<i32> {
    if globals.region.is_some() {
        return Err(Error::usage(
            "--region does not apply to a fleet: each plan runs in its own `aws.region`",
            "run without --region; `ecmigrate run PLAN --region R` overrides one plan",
        ));
    }
    let manifest = Manifest::load(&args.dir)?;
    let plans = crate::fleet::run::load_plans(&args.dir, &manifest)?;
    if !args.dry_run {
        let groups: Vec<String> = plans
            .iter()
            .map(|p| format!("{}/{}", p.label.region, p.label.group))
            .collect();
        confirmed(
            &format!("Migrate {} group(s) ({})?", groups.len(), groups.join(", ")),
            args.yes,
            args.output,
            "a fleet run",
        )?;
    }
    let clouds = Arc::new(FleetClouds {
        globals: Globals {
            sandbox_dir: globals.sandbox_dir.clone(),
            state_dir: globals.state_dir.clone(),
            region: None,
            profile: globals.profile.clone(),
            verbose: globals.verbose,
        },
        retry: SharedRetry::new(),
        aws: tokio::sync::Mutex::new(HashMap::new()),
    });
    let reporter = Arc::new(FleetReporter::new(
        args.output,
        crate::ui::stdout_is_terminal(),
        globals.verbose,
        args.dir.clone(),
    ));
    let options = FleetOptions {
        parallel: usize::from(args.parallel),
        dry_run: args.dry_run,
        yes: args.yes,
        keep_going: args.keep_going,
        state_dir: globals.state_dir.clone(),
    };
    let results = crate::fleet::run::run(plans, options, clouds, reporter.clone()).await;
    if args.dry_run {
        reporter.line("dry run finished: nothing was changed");
    } else {
        write_report(&args.dir, &manifest, &globals.state_dir, args.output)?;
    }
    Ok(fleet_exit_code(&results))
}

fn write_report(
    dir: &Path,
    manifest: &Manifest,
    state_dir: &Path,
    output: OutputFormat,
) -> Result<()> {
    let files = crate::fleet::report::write(dir, manifest, state_dir)?;
    match output {
        OutputFormat::Json => println!(
            "{}",
            json!({ "event": "fleet_report", "summary": files.summary, "markdown": files.markdown, "html": files.html, "json": files.json })
        ),
        OutputFormat::Text => {
            println!("{}", files.summary);
            println!(
                "fleet report: {} (and .html, .json beside it)",
                files.markdown.display()
            );
        }
    }
    Ok(())
}

pub fn report(globals: &Globals, args: FleetReportArgs) -> Result<i32> {
    let manifest = Manifest::load(&args.dir)?;
    write_report(&args.dir, &manifest, &globals.state_dir, OutputFormat::Text)?;
    Ok(exit_code::OK)
}

pub fn status(globals: &Globals, args: FleetStatusArgs) -> Result<i32> {
    let manifest = Manifest::load(&args.dir)?;
    let groups = crate::fleet::status::read(&args.dir, &manifest, &globals.state_dir)?;
    let report = args
        .dir
        .join(format!("{}.md", crate::fleet::report::BASENAME));
    let report = report.exists().then_some(report);
    if args.output == OutputFormat::Json {
        println!(
            "{}",
            json!({ "fleet": args.dir, "groups": groups, "report": report })
        );
        return Ok(exit_code::OK);
    }
    for g in &groups {
        let detail = match (g.state.as_str(), &g.skipped, &g.error) {
            ("skipped", Some(why), _) => why.clone(),
            ("failed", _, Some(error)) => {
                format!("in `{}`: {error}", g.next_step.as_deref().unwrap_or("?"))
            }
            ("done", _, _) => g
                .report
                .as_ref()
                .map(|r| format!("evidence: {}", r.display()))
                .unwrap_or_default(),
            (_, _, _) => g
                .next_step
                .as_ref()
                .map(|s| format!("at `{s}`"))
                .unwrap_or_default(),
        };
        println!(
            "{:<14} {:<28} {:<12} {detail}",
            g.region, g.replication_group_id, g.state
        );
    }
    let count = |state: &str| groups.iter().filter(|g| g.state == state).count();
    let dir = args.dir.display();
    if count("waiting") > 0 {
        println!(
            "{} waiting at the cutover: release them all with `ecmigrate fleet cutover {dir}`",
            count("waiting")
        );
    }
    if count("interrupted") + count("failed") + count("not_started") > 0 {
        println!(
            "not finished: run `ecmigrate fleet run {dir}` to start or resume them (finished plans are not run again)"
        );
    }
    if let Some(r) = report {
        println!("fleet report: {}", r.display());
    }
    Ok(exit_code::OK)
}

pub async fn cutover(globals: &Globals, args: FleetCutoverArgs) -> Result<i32> {
    let manifest = Manifest::load(&args.dir)?;
    let groups = crate::fleet::status::read(&args.dir, &manifest, &globals.state_dir)?;
    let (waiting, _): (Vec<GroupStatus>, Vec<GroupStatus>) =
        groups.into_iter().partition(|g| g.is_waiting());
    if waiting.is_empty() {
        return Err(Error::failed(
            "no plan of the fleet is waiting at its cutover",
            format!("see `ecmigrate fleet status {}`", args.dir.display()),
        ));
    }
    let names: Vec<String> = waiting
        .iter()
        .map(|g| format!("{}/{}", g.region, g.replication_group_id))
        .collect();
    confirmed(
        &format!(
            "Cut over {} group(s) now ({}): pause writes, switch the endpoints?",
            names.len(),
            names.join(", ")
        ),
        args.yes,
        args.output,
        "releasing the fleet's cutovers",
    )?;
    let limit = Duration::from_secs(args.timeout_seconds);
    let released =
        crate::fleet::cutover::release_all(&args.dir, waiting, &globals.state_dir, limit).await?;
    let mut all_switched = true;
    for r in released {
        let (outcome, detail) = match &r.followed {
            Ok(Followed::Switched(outputs)) => (
                "switched",
                outputs["write_pause_ms"]
                    .as_u64()
                    .map(|ms| format!("writes paused {ms} ms"))
                    .unwrap_or_default(),
            ),
            Ok(Followed::Failed(e)) => ("failed", e.clone()),
            Ok(Followed::WaitingAgain(e)) => (
                "waiting_again",
                format!("the switch failed ({e}); the run waits again"),
            ),
            Ok(Followed::Stopped) => (
                "stopped",
                "the run stopped before finishing the cutover".into(),
            ),
            Ok(Followed::TimedOut) => (
                "timed_out",
                format!(
                    "not finished within {} s (the release stands)",
                    limit.as_secs()
                ),
            ),
            Err(e) => ("unknown", e.to_string()),
        };
        all_switched &= outcome == "switched";
        let g = &r.status;
        match args.output {
            OutputFormat::Json => println!(
                "{}",
                json!({ "plan": g.plan_name, "group": g.replication_group_id, "region": g.region, "outcome": outcome, "detail": detail })
            ),
            OutputFormat::Text => println!(
                "[{}/{}] {outcome}: {detail}",
                g.region, g.replication_group_id
            ),
        }
    }
    if all_switched {
        Ok(exit_code::OK)
    } else {
        Err(Error::failed(
            "not every cutover was made",
            format!(
                "see `ecmigrate fleet status {}`; fix the cause and release again",
                args.dir.display()
            ),
        ))
    }
}
