//! `ecmigrate iam-policy PLAN [--output text|json]`: the least-privilege IAM policy for running the plan on
//! AWS (`steps::iam`). Text: the policy document on stdout, ready for `aws iam create-policy`, and where the
//! account and region of its ARNs came from on stderr. JSON: the policy, the account and region with their
//! sources, and every action with the steps that need it and why.

use std::path::PathBuf;

use clap::Args;

use crate::cli::Globals;
use crate::error::{Error, Result, exit_code};
use crate::plan::Provider;
use crate::ui::OutputFormat;

#[derive(Args, Debug)]
pub struct IamPolicyArgs {
    pub plan: PathBuf,
    #[arg(long, value_enum, default_value = "text")]
    pub output: OutputFormat,
}

pub fn run(globals: &Globals, args: IamPolicyArgs) -> Result<i32> {
    let plan = crate::plan::load(&args.plan)?;
    if plan.plan.provider != Provider::Aws {
        return Err(Error::usage(
            format!(
                "plan `{}` runs on provider `{}`, which makes no AWS calls: it needs no IAM policy",
                plan.plan.name,
                plan.plan.provider.as_str()
            ),
            "set `provider: aws` in the plan",
        ));
    }
    let policy = crate::steps::iam::policy(&plan.plan, globals.region.as_deref());
    match args.output {
        OutputFormat::Json => println!(
            "{}",
            serde_json::to_string_pretty(&policy).unwrap_or_default()
        ),
        OutputFormat::Text => {
            println!(
                "{}",
                serde_json::to_string_pretty(&policy.policy).unwrap_or_default()
            );
            for (what, setting) in [("region", &policy.region), ("account", &policy.account)] {
                if setting.is_placeholder() {
                    eprintln!(
                        "{what}: * (placeholder: the plan does not say; replace it in the ARNs before use)"
                    );
                } else {
                    eprintln!("{what}: {} (from {})", setting.value, setting.source);
                }
            }
        }
    }
    Ok(exit_code::OK)
}
