//! `ecmigrate completions SHELL` and `ecmigrate man`: shell completion scripts and man pages generated from
//! the command-line definitions themselves (clap_complete, clap_mangen), so they never drift from them.

use std::path::PathBuf;

use clap::CommandFactory;

use crate::error::{Error, Result, exit_code};

#[derive(clap::Args, Debug)]
pub struct CompletionsArgs {
    /// The shell to complete for.
    pub shell: clap_complete::Shell,
}

#[derive(clap::Args, Debug)]
pub struct ManArgs {
    /// Write `ecmigrate.1` and one `ecmigrate-COMMAND.1` per command into this folder instead of printing
    /// the top page.
    #[arg(long)]
    pub out_dir: Option<PathBuf>,
}

pub fn completions(args: CompletionsArgs) -> Result<i32> {
    let mut command = super::Cli::command();
    clap_complete::generate(
        args.shell,
        &mut command,
        "ecmigrate",
        &mut std::io::stdout(),
    );
    Ok(exit_code::OK)
}

pub fn man(args: ManArgs) -> Result<i32> {
    let command = super::Cli::command();
    let hint = "check that the folder exists and is writable";
    match args.out_dir {
        None => clap_mangen::Man::new(command)
            .render(&mut std::io::stdout())
            .map_err(|e| Error::failed(format!("writing the man page: {e}"), hint))?,
        Some(dir) => {
            clap_mangen::generate_to(command, &dir).map_err(|e| {
                Error::failed(
                    format!("writing man pages into {}: {e}", dir.display()),
                    hint,
                )
            })?;
            eprintln!("man pages written into {}", dir.display());
        }
    }
    Ok(exit_code::OK)
}
