//! `cargo xtask bench broker`: the broker's acquire latency and release-to-clean
//! time per reset method, measured against a real `airlockd` (release build)
//! with real QEMU desktops (TCG) of the demo guest.
//!
//! What is measured (also written into the output and `docs/benchmarks.md`):
//!
//! * **Acquire latency**: the time from sending `POST /v1/leases` until the
//!   complete response (status and JSON body) is received, on an HTTP/1.1
//!   keep-alive connection that was opened and used before the timed request.
//!   With one client, every sample starts with every desktop of the pool clean
//!   and no reset running; the lease is released right after. With 50 clients,
//!   each round waits until the pool is all clean, then 50 clients (each with
//!   its own terminal token and connection) are released by a barrier at once;
//!   grants (201) and refusals (503) are reported separately.
//! * **Release-to-clean**: for one desktop (pool of 1), a session first fills
//!   most of guest RAM with non-zero, non-repeating data through the test
//!   control channel (a tmpfs in the guest, checked with `free`), then the
//!   clock starts at `DELETE /v1/leases/{id}` and stops when `GET
//!   /v1/desktops`, polled every 10 ms, shows the desktop `clean` with its
//!   reset count one higher. The broker's own `last_reset_s` is recorded too.
//!   The three methods run side by side (one broker each, same RAM size) and
//!   their samples are interleaved, so a change in the machine's background
//!   load hits all of them alike.
//! * **Cost of confinement** (`--confinement`): release-to-clean of
//!   `template_clone` as above, at the first RAM size, with `[pool.confine]` on
//!   (each QEMU its own uid and cgroups, as the product runs) and off, one broker
//!   each, samples interleaved; the ratio confined / unconfined is the cost.
//!
//! The brokers are the test kit's ([`airlock_testkit::Broker`], one typed config, state
//! in a short directory under `/tmp`); every broker and QEMU process the bench starts
//! is stopped at the end, on error and on Ctrl-C. Each broker's log and config are
//! kept under `build/bench/logs/`.
//!
//! This module: the options, the run and its brokers; [`measure`] takes the numbers,
//! [`model`] holds them, [`stats`] reduces them and [`report`] writes them up.

mod measure;
mod model;
mod report;
pub mod stats;

use crate::util;
use airlock_testkit::{artifacts, Broker, BrokerConfig, GuestManifest};
use anyhow::{anyhow, bail, Context, Result};
use measure::{flush, LoadLog, Terminal};
use model::{Machine, Plan, Results};
use report::{fmt_duration, gib};
use serde::Deserialize;
use serde_json::Value;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Reset methods, in the order of the tables (the first is the reference).
const METHODS: [&str; 3] = ["template_clone", "snapshot_restore", "rebuild"];
/// Simultaneous clients of the contention measurement.
const CLIENTS: usize = 50;

/// `cargo xtask bench broker` options.
#[derive(Debug, Clone, clap::Args)]
pub struct BrokerArgs {
    /// Smoke test (~1 minute plus the airlockd build): 1 GiB only, 2 samples, small RAM fills; does not
    /// write docs/benchmarks.md.
    #[arg(long)]
    pub quick: bool,
    /// Resets per method and RAM size [default: 9, --quick: 2].
    #[arg(long)]
    pub samples: Option<usize>,
    /// Do not write docs/benchmarks.md (the JSON under build/bench/ is always written).
    #[arg(long)]
    pub no_doc: bool,
    /// Also measure what confining the desktops costs: template_clone release-to-clean
    /// at the first RAM size with `[pool.confine]` on and off, one broker each, samples
    /// interleaved (--samples of each; adds a few minutes, more in full mode).
    #[arg(long)]
    pub confinement: bool,
    #[command(flatten)]
    pub common: util::BenchCommon,
}

// ------------------------------------------------------------------ entry point

/// Runs the broker benchmark: prints the tables, writes the raw samples to
/// `build/bench/` and (full mode) the "Broker" section of `docs/benchmarks.md`.
pub fn broker(args: &BrokerArgs) -> Result<()> {
    airlock_testkit::process::stop_everything_on_signal();
    let root = util::workspace_root();
    let bench_dir = root.join("build/bench");
    let logs = bench_dir.join("logs");
    util::create_dir(&bench_dir)?;
    if logs.exists() {
        std::fs::remove_dir_all(&logs).with_context(|| format!("removing {}", logs.display()))?;
    }
    // The brokers are stopped when their handles are dropped, also on error.
    let result = airlock_testkit::block_on(run(args, &root, &logs));
    if result.is_err() {
        eprintln!(
            "brokers' logs and configs: {} (all their processes are stopped)",
            logs.display()
        );
    }
    result
}

async fn run(args: &BrokerArgs, root: &Path, logs: &Path) -> Result<()> {
    let started = Instant::now();
    let started_utc = util::utc_now("%Y-%m-%d %H:%M UTC");
    let plan = Plan::new(args);
    if plan.confinement_memory_mib.is_some() && !rustix::process::geteuid().is_root() {
        bail!("--confinement needs root: airlockd confines its desktops only when it runs as root");
    }
    let setup = tokio::task::block_in_place(|| -> Result<Setup> {
        let guest = artifacts::guest()?;
        let airlockd = args.common.airlockd(|| {
            println!("building airlockd (cargo build --release)...");
            Ok(artifacts::host_binaries(true)?.airlockd())
        })?;
        Ok(Setup {
            airlockd,
            guest,
            logs: logs.to_owned(),
        })
    })?;
    let mut machine = Machine::probe(root);
    println!(
        "bench broker ({} mode): {}, {} cores ({}); {}; accel tcg",
        plan.mode, machine.cpu, machine.cores, machine.sockets_note, machine.qemu
    );
    println!("airlockd: {}", setup.airlockd.display());
    let mut load = LoadLog::default();
    load.sample("start");

    let acquire = measure::bench_acquire(&plan, &setup, &mut load).await?;
    let mut resets = Vec::new();
    for &mem in &plan.memories_mib {
        resets.extend(measure::bench_resets(&plan, mem, &setup, &mut load).await?);
    }
    let confinement = match plan.confinement_memory_mib {
        Some(mem) => Some(measure::bench_confinement(&plan, mem, &setup, &mut load).await?),
        None => None,
    };
    load.sample("end");
    machine.load = load;
    let results = Results {
        command: command_line(args),
        mode: plan.mode,
        started_utc,
        duration_s: started.elapsed().as_secs_f64(),
        machine,
        plan: plan.clone(),
        acquire,
        resets,
        confinement,
    };
    let report = report::render_report(&results);
    println!("\n{report}");
    let stamp = util::utc_now("%Y%m%dT%H%M%SZ");
    let json_path = args
        .common
        .save(&format!("broker-{}-{stamp}.json", plan.mode), &results)?;
    println!("raw samples: {}", json_path.display());
    if plan.mode == "full" && !args.no_doc {
        let doc = root.join("docs/benchmarks.md");
        let rel = json_path.strip_prefix(root).unwrap_or(&json_path);
        report::write_doc(&doc, &results, &report, rel)?;
        println!("wrote the Broker section of {}", doc.display());
    } else if plan.mode == "quick" {
        println!("(quick mode: docs/benchmarks.md left alone)");
    }
    println!(
        "total run time: {}",
        fmt_duration(started.elapsed().as_secs_f64())
    );
    Ok(())
}

fn command_line(args: &BrokerArgs) -> String {
    let mut s = "cargo xtask bench broker".to_owned();
    if args.quick {
        s.push_str(" --quick");
    }
    if let Some(n) = args.samples {
        let _ = write!(s, " --samples {n}");
    }
    if args.confinement {
        s.push_str(" --confinement");
    }
    if let Some(p) = &args.common.airlockd {
        let _ = write!(s, " --airlockd {}", p.display());
    }
    s
}

// ------------------------------------------------------------------ the brokers

/// What every broker of a run starts from.
struct Setup {
    airlockd: PathBuf,
    guest: &'static GuestManifest,
    /// Where each broker's log and config are kept (`build/bench/logs/`).
    logs: PathBuf,
}

/// What one broker is started for.
#[derive(Debug, Clone)]
struct BrokerSpec {
    label: String,
    method: &'static str,
    memory_mib: u64,
    pool: usize,
    terminals: usize,
    /// `[pool.confine] enabled`: each QEMU as its own uid in its own cgroups.
    confine: bool,
}

impl BrokerSpec {
    /// The kit's config for it: its method, RAM and pool size, `terminals` terminals
    /// (the bench's clients), leases that do not expire during a run, a generous
    /// readiness timeout for TCG on a shared machine, QEMU's debug log, confinement
    /// on or off.
    fn config(&self, guest: &GuestManifest) -> BrokerConfig {
        BrokerConfig {
            size: self.pool,
            reset: self.method.into(),
            memory_mib: self.memory_mib,
            heartbeat_timeout_s: 3600,
            ready_timeout_s: 300,
            terminals: (1..=self.terminals).map(Terminal::entry).collect(),
            log_filter: "info,airlock_qemu=debug".into(),
            confine: self.confine,
            ..BrokerConfig::new(guest)
        }
    }
}

/// A desktop as `GET /v1/desktops` shows it.
#[derive(Debug, Clone, Deserialize)]
struct DesktopView {
    id: String,
    state: String,
    resets: i64,
    last_reset_s: Option<f64>,
    last_reset_method: Option<String>,
    pid: Option<u32>,
    reason: Option<String>,
}

/// One of the bench's brokers: the test kit's [`Broker`] and what it was started for.
/// Dropping it stops the broker and its desktops, and keeps its log and config under
/// `build/bench/logs/LABEL/`.
struct BenchBroker {
    spec: BrokerSpec,
    broker: Broker,
    logs: PathBuf,
}

impl BenchBroker {
    /// Starts a broker and waits until its pool is all clean; returns it with the
    /// seconds that took.
    async fn start(spec: BrokerSpec, setup: &Setup) -> Result<(BenchBroker, f64)> {
        print!(
            "starting a broker ({}{}, {}, pool of {})... ",
            spec.method,
            if spec.confine { "" } else { ", unconfined" },
            gib(spec.memory_mib),
            spec.pool
        );
        flush();
        let t = Instant::now();
        let config = spec.config(setup.guest);
        let broker = tokio::task::block_in_place(|| Broker::start(&setup.airlockd, config))
            .with_context(|| format!("starting the broker {}", spec.label))?;
        let b = BenchBroker {
            spec,
            broker,
            logs: setup.logs.clone(),
        };
        b.wait_all_clean(Duration::from_secs(600)).await?;
        let s = t.elapsed().as_secs_f64();
        b.check_method().await?;
        b.check_confinement().await?;
        println!("pool clean after {s:.1} s");
        Ok((b, s))
    }

    fn label(&self) -> &str {
        &self.spec.label
    }

    /// Waits until every desktop is clean; a broken one is an error.
    async fn wait_all_clean(&self, timeout: Duration) -> Result<()> {
        self.broker
            .wait_all_clean(timeout)
            .await
            .with_context(|| format!("{}: waiting for a clean pool", self.label()))?;
        Ok(())
    }

    async fn desktops(&self) -> Result<Vec<DesktopView>> {
        self.broker
            .desktops()
            .await?
            .into_iter()
            .map(|d| serde_json::from_value(d).context("parsing /v1/desktops"))
            .collect()
    }

    async fn desktop(&self, id: &str) -> Result<DesktopView> {
        serde_json::from_value(self.broker.desktop(id).await?)
            .with_context(|| format!("parsing desktop {id} of /v1/desktops"))
    }

    /// Fails unless the broker really uses its configured method: a template-clone
    /// pool whose template build failed silently rebuilds instead.
    async fn check_method(&self) -> Result<()> {
        let (_, h) = self.broker.healthz().await?;
        if h["reset_method"] != self.spec.method {
            bail!(
                "{}: /healthz says reset_method {}",
                self.label(),
                h["reset_method"]
            );
        }
        if self.spec.method == "template_clone" && h["template"].is_null() {
            bail!(
                "{}: the broker has no template (it would rebuild instead of cloning); log:\n{}",
                self.label(),
                self.broker.log_tail(15)
            );
        }
        for d in self.desktops().await? {
            let first = if self.spec.method == "template_clone" {
                "template_clone"
            } else {
                "rebuild"
            };
            if d.last_reset_method.as_deref() != Some(first) {
                bail!(
                    "{}: desktop {} started with {:?}, expected {first}",
                    self.label(),
                    d.id,
                    d.last_reset_method
                );
            }
        }
        Ok(())
    }

    /// Fails unless each desktop's QEMU runs as its own uid when the spec confines and
    /// as the bench's (the broker's) uid when it does not, so an "unconfined" series
    /// really is one and a confined one is not silently unconfined. Not as root, the
    /// broker cannot confine (it warns and runs QEMU as its own user): then confined
    /// specs are not checked, and `--confinement` refuses to run.
    async fn check_confinement(&self) -> Result<()> {
        let me = rustix::process::geteuid().as_raw();
        if self.spec.confine && me != 0 {
            return Ok(());
        }
        for d in self.desktops().await? {
            let pid = d
                .pid
                .ok_or_else(|| anyhow!("{}: desktop {} has no pid", self.label(), d.id))?;
            let uid = proc_uid(pid)
                .with_context(|| format!("{}: the uid of QEMU pid {pid}", self.label()))?;
            if self.spec.confine == (uid == me) {
                bail!(
                    "{}: desktop {}'s QEMU (pid {pid}) runs as uid {uid}, the broker as {me}: \
                     it should {}; /healthz problems: {}",
                    self.label(),
                    d.id,
                    if self.spec.confine {
                        "be confined (run the bench as root)"
                    } else {
                        "not be confined ([pool.confine] enabled = false)"
                    },
                    self.broker
                        .healthz()
                        .await
                        .map(|(_, h)| h["problems"].to_string())
                        .unwrap_or_default()
                );
            }
        }
        Ok(())
    }

    /// The broker's audit record of the newest reset of `desktop`, if any.
    async fn last_reset_record(&self, desktop: &str) -> Option<Value> {
        let v = self
            .broker
            .admin_get(&format!(
                "/v1/audit?limit=1&action=desktop_reset&desktop={desktop}"
            ))
            .await
            .ok()?;
        let rec = v["records"]
            .as_array()?
            .iter()
            .find(|r| r["action"] == "desktop_reset" && r["desktop"] == desktop)?
            .clone();
        match &rec["details"] {
            Value::String(s) => serde_json::from_str(s).ok(),
            other => Some(other.clone()),
        }
    }
}

/// The effective uid of a process (`Uid:` of `/proc/PID/status`).
fn proc_uid(pid: u32) -> Result<u32> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    s.lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|v| v.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| anyhow!("no Uid: line in /proc/{pid}/status"))
}

impl Drop for BenchBroker {
    fn drop(&mut self) {
        self.broker.stop();
        let dir = self.logs.join(&self.spec.label);
        if std::fs::create_dir_all(&dir).is_ok() {
            let _ = std::fs::copy(self.broker.log_path(), dir.join("airlockd.log"));
            let _ = std::fs::copy(&self.broker.config_path, dir.join("airlockd.toml"));
        }
    }
}
