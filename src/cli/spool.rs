//! `hookd spool …`: works on the spool file directly.

use std::path::Path;
use std::process::ExitCode;

use clap::Subcommand;

#[derive(Subcommand, Debug)]
pub enum SpoolCommand {
    /// Counts by hook and state.
    Stats {
        #[arg(long)]
        json: bool,
    },
}

pub fn run(_config: &Path, _cmd: SpoolCommand) -> ExitCode {
    eprintln!("hookd: spool commands arrive with the spool branch");
    ExitCode::FAILURE
}
