//! Command-line definitions (clap) and one function per subcommand; no logic beyond wiring arguments.

mod audit;
mod copy_cmd;
mod cutover_cmd;
mod docs_cmd;
mod endpoints;
mod fleet_cmd;
mod fleet_run_cmd;
mod iam_cmd;
mod plan_cmd;
mod report_cmd;
mod rollback_cmd;
pub(crate) mod run_cmd;
mod sandbox_cmd;
mod status_cmd;
mod terraform_cmd;
mod verify_cmd;
mod wizard_cmd;

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;

use clap::{Parser, Subcommand};

use crate::cloud::Cloud;
use crate::cloud::aws::Aws;
use crate::cloud::sandbox::Sandbox;
use crate::error::{Error, Result, exit_code};
use crate::plan::{AwsSettings, Provider};
use crate::ui::OutputFormat;

/// Where `--help` lists the options every command takes, apart from the command's own (listed first).
const GLOBAL: &str = "Global options";

#[derive(Parser, Debug)]
#[command(
    name = "ecmigrate",
    version,
    about = "Move an unencrypted ElastiCache (Redis OSS / Valkey) replication group onto an encrypted one (KMS at rest, TLS + AUTH in transit) without losing writes; resumable."
)]
pub struct Cli {
    /// Folder of the embedded sandbox's registry and processes.
    #[arg(
        long,
        global = true,
        env = "ECMIGRATE_SANDBOX_DIR",
        help_heading = GLOBAL,
        default_value = ".ecmigrate/sandbox"
    )]
    pub sandbox_dir: PathBuf,
    /// Folder of run state (one sub-folder per plan name).
    #[arg(
        long,
        global = true,
        env = "ECMIGRATE_STATE_DIR",
        help_heading = GLOBAL,
        default_value = ".ecmigrate/state"
    )]
    pub state_dir: PathBuf,
    /// AWS region (provider `aws`); overrides the plan's `aws.region` and the environment.
    #[arg(long, global = true, help_heading = GLOBAL)]
    pub region: Option<String>,
    /// AWS shared-config profile (provider `aws`); overrides the plan's `aws.profile`.
    #[arg(long, global = true, help_heading = GLOBAL)]
    pub profile: Option<String>,
    /// Show each cloud request's body under its line (`events.jsonl` and `--output json` always have them).
    #[arg(long, global = true, help_heading = GLOBAL)]
    pub verbose: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// The embedded sandbox: local redis-server groups standing in for ElastiCache.
    #[command(subcommand)]
    Sandbox(sandbox_cmd::SandboxCommand),
    /// List replication groups with their encryption state and the path that fits each (exit 1 if any is unencrypted).
    Audit(audit::AuditArgs),
    /// Validate a plan or print its JSON Schema.
    #[command(subcommand)]
    Plan(plan_cmd::PlanCommand),
    /// Run a plan; after a failure the same command resumes from the last checkpoint.
    Run(run_cmd::RunArgs),
    /// Where a run stands.
    Status(status_cmd::StatusArgs),
    /// Release a postponed cutover of the run in progress (or the hold of `enable_transit`: require TLS
    /// once every client uses it), and follow it.
    Cutover(cutover_cmd::CutoverArgs),
    /// Point clients back at the source with the target's writes (until the source is deleted).
    Rollback(rollback_cmd::RollbackArgs),
    /// Write the evidence pack of a finished run again (report.md, report.json) and print it.
    Report(report_cmd::ReportArgs),
    /// The copier alone, between any two Redis endpoints (one-shot, or --live until interrupted).
    Copy(copy_cmd::CopyArgs),
    /// Compare two Redis endpoints by type, value and TTL (exit 1 when they differ).
    Verify(verify_cmd::VerifyArgs),
    /// Interactive: choose a group, a key and a token store; write a plan and rehearse it.
    Wizard(wizard_cmd::WizardArgs),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell) to stdout.
    Completions(docs_cmd::CompletionsArgs),
    /// Print the man page (roff) to stdout, or write one page per command into a folder.
    Man(docs_cmd::ManArgs),
    /// Print the least-privilege IAM policy for exactly the AWS calls a plan's steps make.
    IamPolicy(iam_cmd::IamPolicyArgs),
    /// Many groups in many regions, one plan each: plan the fleet from a policy, run, status, cutover, report.
    #[command(subcommand)]
    Fleet(fleet_cmd::FleetCommand),
    /// Print the Terraform file that adopts the new group: an import block, its resource, a removed block for the old one.
    Terraform(terraform_cmd::TerraformArgs),
}

/// Parse the command line, run, print any error with its hint, and return the exit code.
pub fn main() -> i32 {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return match e.kind() {
                clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion => {
                    exit_code::OK
                }
                _ => exit_code::INVALID_INPUT,
            };
        }
    };
    let json = cli.wants_json();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return exit_code::FAILED;
        }
    };
    // A live copy ends on Ctrl-C by itself (it catches up first); everything else is interrupted.
    // The wizard's prompts read Ctrl-C themselves (and restore the cursor); a run's engine journals it.
    let stops_itself = matches!(&cli.command, Command::Copy(a) if a.live)
        || matches!(&cli.command, Command::Wizard(_) | Command::Run(_))
        || matches!(
            &cli.command,
            Command::Fleet(fleet_cmd::FleetCommand::Run(_))
        );
    let one_shot = match &cli.command {
        Command::Copy(_) => Some("copy"),
        Command::Verify(_) => Some("verify"),
        _ => None,
    };
    let result = runtime.block_on(async {
        if stops_itself {
            return dispatch(cli).await;
        }
        tokio::select! {
            r = dispatch(cli) => r,
            _ = tokio::signal::ctrl_c() => Err(Error::Interrupted),
        }
    });
    // Sandbox processes are detached; nothing else must outlive the command.
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    match (result, one_shot) {
        (Ok(code), _) => code,
        (Err(Error::Interrupted), Some(command)) => {
            report_error(&Error::InterruptedOneShot { command }, json)
        }
        (Err(e), _) => report_error(&e, json),
    }
}

fn report_error(e: &Error, json: bool) -> i32 {
    let code = e.exit_code();
    if json {
        let body =
            serde_json::json!({ "error": e.to_string(), "hint": e.hint(), "exit_code": code });
        let _ = writeln!(std::io::stdout(), "{body}");
    }
    eprintln!("error: {e}");
    eprintln!("hint: {}", e.hint());
    code
}

impl Cli {
    fn wants_json(&self) -> bool {
        let format = match &self.command {
            Command::Run(a) => a.output,
            Command::Status(a) => a.output,
            Command::Cutover(a) => a.output,
            Command::Rollback(a) => a.output,
            Command::Audit(a) => a.output,
            Command::Copy(a) => a.output,
            Command::Verify(a) => a.output,
            Command::Terraform(a) => a.output,
            Command::Sandbox(sandbox_cmd::SandboxCommand::Status { output }) => *output,
            Command::Fleet(c) => return c.wants_json(),
            _ => OutputFormat::Text,
        };
        format == OutputFormat::Json
    }
}

async fn dispatch(cli: Cli) -> Result<i32> {
    let globals = Globals {
        sandbox_dir: cli.sandbox_dir,
        state_dir: cli.state_dir,
        region: cli.region,
        profile: cli.profile,
        verbose: cli.verbose,
    };
    match cli.command {
        Command::Sandbox(c) => sandbox_cmd::run(&globals, c).await,
        Command::Audit(a) => audit::run(&globals, a).await,
        Command::Plan(c) => plan_cmd::run(c),
        Command::Run(a) => run_cmd::run(&globals, a).await,
        Command::Status(a) => status_cmd::run(&globals, a),
        Command::Cutover(a) => cutover_cmd::run(&globals, a).await,
        Command::Rollback(a) => rollback_cmd::run(&globals, a).await,
        Command::Report(a) => report_cmd::run(&globals, a).await,
        Command::Copy(a) => copy_cmd::run(a).await,
        Command::Verify(a) => verify_cmd::run(a).await,
        Command::Wizard(a) => wizard_cmd::run(&globals, a).await,
        Command::Completions(a) => docs_cmd::completions(a),
        Command::Man(a) => docs_cmd::man(a),
        Command::IamPolicy(a) => iam_cmd::run(&globals, a),
        Command::Fleet(c) => fleet_cmd::run(&globals, c).await,
        Command::Terraform(a) => terraform_cmd::run(&globals, a).await,
    }
}

/// The reporter for `output`, and the prompter: the terminal when a person is at one (text output, a
/// terminal on stdin), else one that answers every question "no". Also says whether it is interactive.
pub(crate) fn reporter_and_prompter(
    output: OutputFormat,
    verbose: bool,
) -> (Arc<crate::ui::Reporter>, Arc<dyn crate::ui::Prompter>, bool) {
    let interactive = crate::ui::stdin_is_terminal() && output == OutputFormat::Text;
    let reporter = Arc::new(crate::ui::Reporter::new(
        output,
        crate::ui::stdout_is_terminal(),
        verbose,
    ));
    let prompter: Arc<dyn crate::ui::Prompter> = if interactive {
        Arc::new(crate::ui::TerminalPrompter {
            reporter: reporter.clone(),
        })
    } else {
        Arc::new(crate::ui::NoPrompter)
    };
    (reporter, prompter, interactive)
}

pub struct Globals {
    pub sandbox_dir: PathBuf,
    pub state_dir: PathBuf,
    /// `--region` / `--profile`: they win over the plan's `aws` block.
    pub region: Option<String>,
    pub profile: Option<String>,
    /// `--verbose`: request bodies in the text output.
    pub verbose: bool,
}

impl Globals {
    pub fn sandbox(&self) -> Result<Sandbox> {
        Sandbox::open(&self.sandbox_dir).map_err(|e| {
            Error::failed(
                format!(
                    "cannot open the sandbox at {}: {e}",
                    self.sandbox_dir.display()
                ),
                "check --sandbox-dir",
            )
        })
    }

    /// The cloud a plan's provider names. For `aws`, the flags win over the plan's `aws` block.
    pub async fn cloud(
        &self,
        provider: Provider,
        aws: Option<&AwsSettings>,
    ) -> Result<Arc<dyn Cloud>> {
        let cloud = self.real_cloud(provider, aws).await?;
        #[cfg(feature = "test-hooks")]
        let cloud = with_test_faults(cloud);
        Ok(cloud)
    }

    /// The AWS clients of one region (the audit's regions win over `--region`); the profile as always.
    pub async fn cloud_in_region(&self, region: &str) -> Result<Arc<dyn Cloud>> {
        let cloud: Arc<dyn Cloud> = Arc::new(
            Aws::connect(Some(region.to_string()), self.profile.clone())
                .await
                .map_err(|e| {
                    Error::usage(
                        format!("cannot set up the AWS clients of {region}: {e}"),
                        "check the credentials (standard AWS chain) and --profile",
                    )
                })?,
        );
        #[cfg(feature = "test-hooks")]
        let cloud = refusing_in_test(with_test_faults(cloud), region);
        Ok(cloud)
    }

    /// The region the credentials work in: `--region`, else what the environment and profile say.
    pub async fn current_region(&self) -> Result<String> {
        if let Some(region) = &self.region {
            return Ok(region.clone());
        }
        crate::cloud::aws::account::current_region(self.profile.clone())
            .await
            .ok_or_else(|| {
                Error::usage(
                    "no AWS region: pass --region, --regions or --all-regions, or set AWS_REGION",
                    "e.g. `ecmigrate audit --provider aws --regions us-east-1,eu-west-1`",
                )
            })
    }

    async fn real_cloud(
        &self,
        provider: Provider,
        aws: Option<&AwsSettings>,
    ) -> Result<Arc<dyn Cloud>> {
        match provider {
            Provider::Sandbox => Ok(Arc::new(self.sandbox()?)),
            Provider::Aws => {
                let region = self
                    .region
                    .clone()
                    .or_else(|| aws.and_then(|a| a.region.clone()));
                let profile = self
                    .profile
                    .clone()
                    .or_else(|| aws.and_then(|a| a.profile.clone()));
                let cloud = Aws::connect(region, profile).await.map_err(|e| {
                    Error::usage(
                        format!("cannot set up the AWS clients: {e}"),
                        "set the region (`aws.region`, --region or AWS_REGION) and credentials (standard AWS chain)",
                    )
                })?;
                Ok(Arc::new(cloud))
            }
        }
    }
}

/// A region the test says refuses (`ECMIGRATE_TEST_REFUSED_REGIONS=r1,r2`): moto serves every region,
/// while AWS refuses a region the account has not opted into with this message; test builds only.
#[cfg(feature = "test-hooks")]
fn refusing_in_test(cloud: Arc<dyn Cloud>, region: &str) -> Arc<dyn Cloud> {
    use crate::cloud::faults::{FaultKind, FaultyCloud};
    let refused = std::env::var("ECMIGRATE_TEST_REFUSED_REGIONS").unwrap_or_default();
    if refused.split(',').any(|r| r.trim() == region) {
        Arc::new(FaultyCloud::new(cloud).fail(
            "DescribeReplicationGroups",
            FaultKind::Fail,
            u32::MAX,
        ))
    } else {
        cloud
    }
}

/// The cloud with the failures a test asked for (`ECMIGRATE_TEST_CLOUD_FAULTS`); test builds only.
#[cfg(feature = "test-hooks")]
fn with_test_faults(cloud: Arc<dyn Cloud>) -> Arc<dyn Cloud> {
    use crate::cloud::faults::{FaultKind, FaultyCloud};
    let faults = crate::faults::cloud_faults();
    if faults.is_empty() {
        return cloud;
    }
    let mut faulty = FaultyCloud::new(cloud);
    for (operation, kind, times) in faults {
        if let Some(kind) = FaultKind::parse(&kind) {
            faulty = faulty.fail(&operation, kind, times);
        }
    }
    Arc::new(faulty)
}
