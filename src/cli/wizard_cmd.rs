//! `ecmigrate wizard [--provider aws|sandbox] [--out PLAN]`: the guided path to a plan.

use std::io::IsTerminal;
use std::path::PathBuf;

use clap::Args;

use crate::cli::Globals;
use crate::cli::audit::ProviderArg;
use crate::error::{Error, Result, exit_code};
use crate::plan::Provider;
use crate::secret::{TokenStore, generate_token};
use crate::ui::wizard::{self, TokenChoice};

#[derive(Args, Debug)]
pub struct WizardArgs {
    #[arg(long, value_enum, default_value = "sandbox")]
    pub provider: ProviderArg,
    /// Where to write the plan (asked if not given).
    #[arg(long)]
    pub out: Option<PathBuf>,
}

pub async fn run(globals: &Globals, args: WizardArgs) -> Result<i32> {
    if !(std::io::stdin().is_terminal() && std::io::stderr().is_terminal()) {
        return Err(Error::usage(
            "the wizard asks questions and needs a terminal",
            "write a plan (see plans/sandbox-demo.yaml or `ecmigrate plan schema`) and use `ecmigrate run PLAN`",
        ));
    }
    let provider = match args.provider {
        ProviderArg::Sandbox => Provider::Sandbox,
        ProviderArg::Aws => Provider::Aws,
    };
    let cloud = globals.cloud(provider, None).await?;
    let groups = cloud.list_groups().await.map_err(|e| {
        Error::failed(
            format!("listing replication groups: {e}"),
            "check the provider's credentials",
        )
    })?;
    let keys = cloud.list_keys().await.map_err(|e| {
        Error::failed(
            format!("listing KMS keys: {e}"),
            "check the provider's credentials",
        )
    })?;
    let handle = tokio::runtime::Handle::current();
    let answers = tokio::task::block_in_place(|| {
        let block = |f: std::pin::Pin<Box<dyn std::future::Future<Output = bool> + Send + '_>>| {
            handle.block_on(f)
        };
        wizard::ask(
            provider,
            &groups,
            &keys,
            cloud.as_ref(),
            &block,
            args.out.clone(),
        )
    })?;

    // Only now, with every answer given, is anything written.
    let plan_dir = answers
        .out
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .map(PathBuf::from)
        .unwrap_or(PathBuf::from("."));
    std::fs::create_dir_all(&plan_dir).map_err(|e| {
        Error::failed(
            format!("cannot create {}: {e}", plan_dir.display()),
            "choose another place for the plan",
        )
    })?;
    if let (true, TokenChoice::File(file)) = (answers.generate_token, &answers.store) {
        let store = TokenStore::File(plan_dir.join(file));
        if store.load().ok().flatten().is_none() {
            let token = generate_token();
            store
                .save(&token)
                .map_err(|e| Error::failed(e, "choose a writable token file"))?;
            if answers.show_token {
                eprintln!(
                    "AUTH token (shown once; it is kept in {store}): {}",
                    token.expose()
                );
            }
        }
    }
    let text = wizard::render(&answers);
    crate::engine::state::write_atomic(&answers.out, text.as_bytes()).map_err(|e| {
        Error::failed(
            format!("cannot write {}: {e}", answers.out.display()),
            "choose another place for the plan",
        )
    })?;
    // The plan must pass validation as written.
    crate::plan::load(&answers.out)?;
    let out = answers.out.display().to_string();
    println!("wrote {out}");
    println!(
        "next:\n  ecmigrate run {out} --dry-run   # the rehearsal\n  ecmigrate run {out}             # the migration\n  ecmigrate status {out}"
    );
    let rehearse = tokio::task::block_in_place(|| {
        dialoguer::Confirm::new()
            .with_prompt("Run the dry-run rehearsal now?")
            .default(true)
            .interact()
    })
    .map_err(|_| Error::Interrupted)?;
    if rehearse {
        let run = crate::cli::run_cmd::RunArgs {
            plan: answers.out.clone(),
            dry_run: true,
            yes: false,
            output: crate::ui::OutputFormat::Text,
        };
        return crate::cli::run_cmd::run(globals, run).await;
    }
    Ok(exit_code::OK)
}
