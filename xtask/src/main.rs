//! `cargo xtask`: Airlock's build tasks: the demo guest (`guest`), the sample referral
//! discs (`sample-disc`), the test terminal VM (`terminal-guest`) and the benchmarks
//! (`bench broker`, `bench disc`). A binary that nothing depends on: tests find what it
//! builds through the manifests it writes (`airlock-testkit`), and its benchmarks run
//! Airlock through the same test kit.
//!
//! Everything here runs on the developer's or CI's machine; nothing is used by the
//! broker at run time except the files these tasks produce.
#![forbid(unsafe_code)]

mod bench_broker;
mod bench_disc;
mod cpio;
mod dicom;
mod disc;
mod guest;
mod kmod;
mod terminal;
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
    Disc {
        /// Insertions per path (the median is reported).
        #[arg(long, default_value_t = 3)]
        runs: usize,
        /// The disc [default: build/discs/sample.iso]; needs NAME.files.json beside it.
        #[arg(long)]
        iso: Option<PathBuf>,
        /// Only these paths (comma-separated: a,b,c).
        #[arg(long, value_delimiter = ',')]
        only: Vec<String>,
        /// vCPUs of the terminal VM.
        #[arg(long, default_value_t = 1)]
        terminal_smp: u32,
        /// How the terminal VM reaches the broker: `loopback` (slirp to
        /// 10.0.2.2) or `guestfwd` (restrict=on, one guestfwd running the test
        /// kit's TCP_NODELAY `tcp-pump` on the host per connection; slower, see
        /// docs/benchmarks.md).
        #[arg(long, default_value = "loopback")]
        terminal_net: String,
        /// Results file [default: build/bench/disc.json].
        #[arg(long)]
        json: Option<PathBuf>,
        /// Shell command run in the desktop guest before each measured insertion
        /// ({dev} = its block device), e.g. 'echo 1024 >/sys/block/{dev}/queue/read_ahead_kb'.
        #[arg(long)]
        guest_setup: Option<String>,
        /// Throttle the QEMU drives of (a) and (c) to this many MB/s, like a real
        /// drive (52x CD ~ 7.8, 16x DVD ~ 22).
        #[arg(long)]
        drive_mbps: Option<f64>,
        /// Use this airlockd binary instead of `cargo build --release -p airlockd`'s.
        #[arg(long)]
        airlockd: Option<PathBuf>,
        /// Host CPU placement, the same for every path: `auto` (desktop vCPUs on the
        /// first CPU, everything else on the others, as airlockd's [pool.cpus] does),
        /// `none`, or DESKTOPS:HOUSEKEEPING CPU lists such as 0:1.
        #[arg(long, default_value = "auto")]
        cpus: String,
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
            let out = out.unwrap_or_else(guest::default_out);
            guest::build(&guest::Options { out, force })?;
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
        Task::Bench(Bench::Disc {
            runs,
            iso,
            only,
            terminal_smp,
            terminal_net,
            json,
            guest_setup,
            drive_mbps,
            airlockd,
            cpus,
        }) => {
            let terminal_net = match terminal_net.as_str() {
                "guestfwd" => airlock_testkit::TerminalNet::GuestFwd {
                    pump: airlock_testkit::artifacts::host_binaries(true)?.tcp_pump(),
                },
                "loopback" => airlock_testkit::TerminalNet::HostLoopback,
                other => anyhow::bail!("--terminal-net is loopback or guestfwd, not {other:?}"),
            };
            bench_disc::run(&bench_disc::Options {
                runs,
                iso,
                only,
                terminal_smp,
                terminal_net,
                json,
                guest_setup,
                drive_mbps,
                airlockd,
                cpus: bench_disc::parse_cpus(&cpus)?,
            })?;
        }
    }
    Ok(())
}
