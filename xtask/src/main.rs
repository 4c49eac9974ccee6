//! `cargo xtask`: Airlock's build tasks: the demo guest (`guest`), the qga test image
//! (`qga-guest`), the sample referral discs (`sample-disc`), the test terminal VM
//! (`terminal-guest`) and the benchmarks (`bench broker`, `bench disc`, `bench open`,
//! `bench console`, `bench export`, `bench hardware`). A binary that nothing
//! depends on: tests find what it builds through the manifests it writes
//! (`airlock-testkit`), and its benchmarks run
//! Airlock through the same test kit.
//!
//! Everything here runs on the developer's or CI's machine; nothing is used by the
//! broker at run time except the files these tasks produce.
#![forbid(unsafe_code)]

mod bench_broker;
mod bench_console;
mod bench_disc;
mod bench_export;
mod bench_hardware;
mod bench_open;
mod cpio;
mod dicom;
mod disc;
mod guest;
mod kmod;
mod qga_guest;
mod terminal;
mod userland;
mod util;

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
    /// Build the qga test image: the demo guest's kernel with Debian's qemu-guest-agent
    /// (no Airlock marker), for `-kernel` boots and as a UEFI disk with Debian's signed
    /// boot chain; unless --no-check, boot that disk with Secure Boot and a TPM.
    QgaGuest {
        /// Output directory [default: <workspace>/build/qga-guest]
        #[arg(long)]
        out: Option<PathBuf>,
        /// Rebuild even if the outputs are up to date.
        #[arg(long)]
        force: bool,
        /// Do not boot the UEFI disk under OVMF (Secure Boot, swtpm) to check it.
        #[arg(long)]
        no_check: bool,
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
    /// Build the test terminal VM (kernel, initramfs with the static `airlock` binary).
    TerminalGuest {
        /// Output directory [default: <workspace>/build/terminal]
        #[arg(long)]
        out: Option<PathBuf>,
        /// Rebuild even if the outputs are up to date.
        #[arg(long)]
        force: bool,
        /// Put this (static) airlock binary in instead of building one.
        #[arg(long)]
        airlock_bin: Option<PathBuf>,
    },
    /// Benchmarks.
    #[command(subcommand)]
    Bench(Bench),
}

#[derive(Subcommand)]
enum Bench {
    /// The broker: acquire latency and release-to-clean time per reset method.
    Broker(bench_broker::BrokerArgs),
    /// The desktop guest reading the sample disc: (a) a USB CD drive in the
    /// desktop VM, (b) the emulated CD over the broker relay, (c) the terminal
    /// VM's drive forwarded over the relay.
    Disc(bench_disc::DiscArgs),
    /// The clinician's wait: from starting `airlock open` to the desktop's first frame
    /// in the real viewer, the drive attached and the disc read, on a warm pool of the
    /// demo configuration.
    Open(bench_open::OpenArgs),
    /// Acquire latency with the web console closed and open (a real chromium on the
    /// pool and audit pages), on a store of 1,000,000 audit records (issue 13).
    Console(bench_console::ConsoleArgs),
    /// Key images (issue 14): disc inserted → first image on the desktop's screen, and
    /// capture → stored in the PACS (a private Orthanc), medians over 5 sessions.
    Export(bench_export::ExportArgs),
    /// Release-to-clean of a UEFI + Secure Boot + TPM pool with the stock guest agent
    /// beside the demo pool's, samples interleaved (issue 15).
    Hardware(bench_hardware::HardwareArgs),
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
            let out = out.unwrap_or_else(guest::default_out);
            guest::build(&guest::Options { out, force })?;
        }
        Task::QgaGuest {
            out,
            force,
            no_check,
        } => {
            let out = out.unwrap_or_else(qga_guest::default_out);
            qga_guest::build(&qga_guest::Options {
                out,
                force,
                no_check,
            })?;
        }
        Task::SampleDisc { out, force } => {
            let out = out.unwrap_or_else(disc::default_out);
            disc::build(&disc::Options { out, force })?;
        }
        Task::TerminalGuest {
            out,
            force,
            airlock_bin,
        } => {
            let out = out.unwrap_or_else(terminal::default_out);
            terminal::build(&terminal::Options {
                out,
                force,
                airlock_bin,
            })?;
        }
        Task::Bench(Bench::Broker(args)) => bench_broker::broker(&args)?,
        Task::Bench(Bench::Open(args)) => {
            bench_open::run(&args)?;
        }
        Task::Bench(Bench::Console(args)) => bench_console::run(&args)?,
        Task::Bench(Bench::Export(args)) => bench_export::run(&args)?,
        Task::Bench(Bench::Hardware(args)) => bench_hardware::run(&args)?,
        Task::Bench(Bench::Disc(args)) => {
            bench_disc::run(&bench_disc::Options::new(args)?)?;
        }
    }
    Ok(())
}
