//! `cargo xtask`: Airlock's build tasks. See `cargo xtask --help`.
#![forbid(unsafe_code)]

use anyhow::Result;
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(name = "cargo xtask", about = "Airlock build tasks")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Build the demo guest (kernel, initramfs, golden disk) from Debian packages.
    Guest {
        /// Output directory [default: <workspace>/build/guest]
        #[arg(long)]
        out: Option<PathBuf>,
        /// Rebuild even if the outputs are up to date.
        #[arg(long)]
        force: bool,
    },
    /// Build the sample referral discs (ISO 9660, IHE PDI layout) and their file lists.
    SampleDisc {
        /// Output directory [default: <workspace>/build/discs]
        #[arg(long)]
        out: Option<PathBuf>,
        /// Rebuild even if the outputs are up to date.
        #[arg(long)]
        force: bool,
    },
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // The whole context chain, one cause after another.
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.task {
        Task::Guest { out, force } => {
            let out = out.unwrap_or_else(xtask::guest::default_out);
            xtask::guest::build(&xtask::guest::Options { out, force })?;
        }
        Task::SampleDisc { out, force } => {
            let out = out.unwrap_or_else(xtask::disc::default_out);
            xtask::disc::build(&xtask::disc::Options { out, force })?;
        }
    }
    Ok(())
}
