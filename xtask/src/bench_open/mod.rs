//! `cargo xtask bench open`: what the clinician waits for. On a warm pool of the
//! product's default configuration (`examples/demo.toml`, with TLS when it has TLS), each
//! run starts `airlock open --iso sample.iso` (release build) under Xvfb with the real
//! `remote-viewer` and times, from that start:
//!
//! - **lease granted**: the broker's `lease granted` log line;
//! - **display connected**: the broker's `display client connected` (QEMU's SPICE main
//!   channel accepted the lease's password);
//! - **first frame**: the first grab of the X screen (over one X connection, every
//!   [`POLL`]) that shows the desktop's console: at least [`MIN_PIXELS`] pixels of the
//!   console's blue title bar *and* of its green "Finish" line (docs/guest.md, "The
//!   console"), VGA colours [`TITLE_BLUE`] and [`FINISH_GREEN`]. Neither the empty X
//!   screen, nor the viewer's window before its first frame (grey, then black), nor its
//!   "connecting" UI has either colour; the console of a desktop that is ready always
//!   shows both;
//! - **drive attached**: the broker's `USB device attached`;
//! - **disc read**: the desktop's `AIRLOCK-CD` summary (listing and sha256 of every file,
//!   checked against `sample.files.json`) on its serial log; also the guest's own
//!   `seconds=`.
//!
//! A run ends with SIGTERM to `airlock open` (it unplugs the drive, closes the viewer,
//! releases the desktop); the next starts once every desktop is clean again.

mod milestones;
mod report;

use crate::{disc, util};
use airlock_testkit::terminal_config::TerminalConfig;
use airlock_testkit::tools::VM_TOOLS;
use airlock_testkit::x11::Xvfb;
use airlock_testkit::{block_on, Broker, BrokerConfig};
use anyhow::{ensure, Context, Result};
use milestones::session;
pub use report::{table, Report};
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

/// `--tls`: as the configuration says, or forced.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum TlsChoice {
    Auto,
    On,
    Off,
}

/// `cargo xtask bench open` options.
#[derive(Debug, Clone, clap::Args)]
pub struct OpenArgs {
    /// Measured sessions (p50 and p90 over them).
    #[arg(long, default_value_t = 10)]
    pub runs: usize,
    /// Sessions run first and not counted.
    #[arg(long, default_value_t = 1)]
    pub warmup: usize,
    /// The broker configuration whose pool is measured [default: examples/demo.toml].
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// TLS for the API and the display: `auto` (as the configuration says), `on`, `off`.
    #[arg(long, value_enum, default_value_t = TlsChoice::Auto)]
    pub tls: TlsChoice,
    /// The disc [default: build/discs/sample.iso]; needs NAME.files.json beside it.
    #[arg(long)]
    pub iso: Option<PathBuf>,
    /// `airlock open --display-mode` (default: the terminal's default, fullscreen).
    #[arg(long)]
    pub display_mode: Option<String>,
    /// `airlock open --no-display`: no viewer (a comparison; no first frame).
    #[arg(long)]
    pub no_display: bool,
    /// Override the configuration's CPU placement: `none` or DESKTOPS:HOUSEKEEPING.
    #[arg(long)]
    pub pool_cpus: Option<String>,
    /// Pin the terminal's side (airlock open, its viewer, Xvfb) to these CPUs
    /// (default: unpinned, as a demo user runs them).
    #[arg(long)]
    pub terminal_cpus: Option<String>,
    #[command(flatten)]
    pub common: util::BenchCommon,
}

/// `--pool-cpus`/`--terminal-cpus` parsing helpers.
fn cpu_list(arg: &str) -> Result<airlock_core::CpuList> {
    airlock_core::CpuList::parse(arg).with_context(|| format!("not a CPU list: {arg:?}"))
}

pub fn run(args: &OpenArgs) -> Result<Report> {
    ensure!(args.runs >= 1, "--runs must be at least 1");
    airlock_testkit::process::stop_everything_on_signal();
    util::require_tools(VM_TOOLS)?;
    if !args.no_display {
        airlock_testkit::tools::require(airlock_testkit::x11::X_TOOLS)?;
    }
    println!("== preparing (guest, discs, release binaries)");
    let (g, disc) = disc::guest_and_disc(args.iso.as_deref())?;
    let bins = airlock_testkit::artifacts::host_binaries(true)?;
    let config_path = match &args.config {
        Some(c) => util::absolute(c)?,
        None => util::workspace_root().join("examples/demo.toml"),
    };
    let (mut config, config_tls) = BrokerConfig::from_file(&g, &config_path)?;
    let tls = match args.tls {
        TlsChoice::Auto => config_tls,
        TlsChoice::On => true,
        TlsChoice::Off => false,
    };
    match args.pool_cpus.as_deref() {
        None => {}
        Some("none") => config.cpus = None,
        Some(s) => {
            let (d, h) = s
                .split_once(':')
                .context("--pool-cpus is none or DESKTOPS:HOUSEKEEPING (e.g. 0:1)")?;
            config.cpus = Some((d.to_string(), Some(h.to_string())));
        }
    }
    let terminal_cpus = args.terminal_cpus.as_deref().map(cpu_list).transpose()?;
    config.log_filter = "info".into();
    let work = airlock_testkit::RunDir::new("airlock-bench-open-")?;
    let ca = if tls {
        let files = airlock_testkit::tls::site_ca(work.path(), "bench")?;
        let ca = files.ca.clone();
        config.tls = Some(files);
        Some(ca)
    } else {
        None
    };
    let pool_cpus = config.cpus.as_ref().map_or("none".to_string(), |(d, h)| {
        format!(
            "desktops {d}, housekeeping {}",
            h.as_deref().unwrap_or("the others")
        )
    });
    println!(
        "== broker: {} ({} desktops, {}, {} MiB, CPU placement: {pool_cpus}), {}",
        config_path.display(),
        config.size,
        config.reset,
        config.memory_mib,
        if tls { "TLS" } else { "plain HTTP and display" }
    );
    let size = config.size;
    let broker = Broker::start(&args.common.airlockd(|| Ok(bins.airlockd()))?, config)?;
    let desktops: Vec<String> = (1..=size).map(|i| format!("desk-{i:02}")).collect();
    // The ISO in the host's page cache, as after the first use of a disc image.
    std::io::copy(&mut std::fs::File::open(&disc.iso)?, &mut std::io::sink())?;

    let xvfb = if args.no_display {
        None
    } else {
        Some(Xvfb::start(1280, 800)?)
    };
    if let (Some(x), Some(cpus)) = (&xvfb, &terminal_cpus) {
        pin(x.pid(), cpus)?;
    }
    let terminal = TerminalConfig {
        ca_file: ca,
        display_mode: args.display_mode.clone(),
        ..TerminalConfig::new(&broker.url)
    }
    .write(work.path())?;
    let loadavg_before = util::loadavg();
    let mut samples = Vec::new();
    for i in 0..args.warmup + args.runs {
        let counted = i >= args.warmup;
        block_on(broker.wait_all_clean(Duration::from_secs(300)))?;
        let s = session(
            &broker,
            &bins.airlock(),
            &terminal,
            &disc,
            &desktops,
            xvfb.as_ref(),
            terminal_cpus.as_ref(),
            &work.join(&format!("open-{i}.log")),
        )
        .with_context(|| format!("session {}", i + 1))?;
        let opt = |x: Option<f64>| x.map_or("–".into(), |v| format!("{v:.3}"));
        println!(
            "  {} {}: lease {:.3}, display {}, first frame {}, drive {:.3}, disc read {:.3} (guest seconds={:.3}) s",
            if counted { "run" } else { "warm-up" },
            if counted { i - args.warmup + 1 } else { i + 1 },
            s.lease,
            opt(s.display),
            opt(s.first_frame),
            s.drive,
            s.read,
            s.guest_seconds
        );
        if counted {
            samples.push(s);
        }
    }
    block_on(broker.wait_all_clean(Duration::from_secs(300)))?;
    let audit = block_on(broker.audit())?;
    airlock_testkit::audit::check_invariants(&audit)?;

    let report = Report {
        date: util::run_stdout(Command::new("date").args(["-u", "+%Y-%m-%d %H:%M UTC"]))?
            .trim()
            .to_string(),
        config: config_path,
        tls,
        display: !args.no_display,
        pool_cpus,
        terminal_cpus: args.terminal_cpus.clone().unwrap_or_else(|| "none".into()),
        iso: disc.iso.clone(),
        files: disc.files,
        bytes: disc.bytes,
        runs: args.runs,
        warmup: args.warmup,
        host_cpus: std::thread::available_parallelism().map_or(0, |n| n.get()),
        loadavg_before,
        loadavg_after: util::loadavg(),
        qemu: util::run_stdout(Command::new(airlock_testkit::tools::QEMU).arg("--version"))?
            .lines()
            .next()
            .unwrap_or_default()
            .to_string(),
        commit: util::run_stdout(Command::new("git").args(["describe", "--always", "--dirty"]))
            .unwrap_or_default()
            .trim()
            .to_string(),
        samples,
    };
    let json = args.common.save("open.json", &report)?;
    println!();
    println!("{}", table(&report));
    util::print_load_and_results(&report.loadavg_before, &report.loadavg_after, &json);
    Ok(report)
}

/// Pins every thread of `pid` (and what it starts later) to `cpus`.
pub(crate) fn pin(pid: u32, cpus: &airlock_core::CpuList) -> Result<()> {
    airlock_qemu::affinity::pin_process(i32::try_from(pid)?, cpus)?;
    Ok(())
}
