//! `cargo xtask bench console`: does an open web console slow the broker down? Acquire
//! latency with the console closed and open, on a store holding 1,000,000 audit
//! records (issue 13: p99 with the console open at most 20 % over p99 without it).
//!
//! What is measured (also written into the output and `docs/benchmarks.md`):
//!
//! * **The store**: a fresh state directory whose database is filled, before the broker
//!   first starts, with `--records` valid, chained audit records (and their sessions'
//!   leases) by the test kit's [`fill_audit`]. The broker's chain monitor hashes the
//!   whole chain once at start; the measurement starts after that first pass
//!   (`GET /v1/audit/verify` shows every record verified), so it does not land in one
//!   condition only.
//! * **Acquire latency**: from sending `POST /v1/leases` until the complete response
//!   (status and JSON body) is received, over a keep-alive connection opened beforehand
//!   (loopback, no TLS), one client. Pool: 2 real desktops of the demo guest (TCG,
//!   `template_clone`, 256 MiB). Every sample is taken on an all-clean, idle pool: the
//!   lease is released right after, and the next sample waits until the reset is done
//!   (a template clone takes ~0.2 s), so what is timed is the acquire path — the
//!   store's transaction (lease row and audit record, appended to the chain of a
//!   million) and the display ticket — and never a reset competing for the machine.
//!   Fresh acquires, not reattaches: a fresh acquire is the full store path and the
//!   one a clinician waits for.
//! * **The console**: "open" is a real headless chromium (Debian's, through the kit's
//!   [`airlock_testkit::browser::Browser`]) logged in with the admin token, with the
//!   pool page open (its table refreshes itself every second) and the audit page (chain
//!   status, newest 50 records; every view is itself audited, so a write to the store)
//!   in a second tab, reloaded every 5 s: what an officer with the console open does.
//!   "Closed" is the same chromium with both tabs on `about:blank`.
//! * **Interleaving**: the run alternates blocks closed / open / open / closed / …
//!   (each condition equally often early and late), so changes in the machine's load
//!   (other sessions share the cores) hit both conditions alike; p50 and p99 are taken
//!   over all samples of a condition, and the ratio p99(open) / p99(closed) comes from
//!   one run.
//!
//! The broker is the test kit's ([`Broker`]); it, its desktops and chromium are stopped
//! at the end, on error and on Ctrl-C. The broker's log and config are kept under
//! `build/bench/logs/console/`.
//!
//! This module: the options, the run and the samples; [`officer`] drives the browser,
//! [`report`] writes the results up.

mod officer;
mod report;
mod server;

use crate::bench_broker::stats::percentile;
use crate::util;
use airlock_testkit::audit_fill::{fill_audit, FillSpec};
use airlock_testkit::broker::{ADMIN_TOKEN, TERMINAL_TOKEN};
use airlock_testkit::{artifacts, Broker, BrokerConfig};
use anyhow::{anyhow, bail, Context, Result};
use officer::{Officer, OpenLog};
use serde::Serialize;
use serde_json::{json, Value};
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// `cargo xtask bench console` options.
#[derive(Debug, Clone, clap::Args)]
pub struct ConsoleArgs {
    /// Smoke test: 100,000 records, 2 blocks of 20 samples per condition.
    #[arg(long)]
    pub quick: bool,
    /// Audit records in the store [default: 1,000,000; --quick: 100,000].
    #[arg(long)]
    pub records: Option<u64>,
    /// Blocks per condition [default: 6; --quick: 2].
    #[arg(long)]
    pub blocks: Option<usize>,
    /// Acquires per block [default: 100; --quick: 20].
    #[arg(long)]
    pub samples: Option<usize>,
    /// Open the pool page only (the acceptance's "an open console page"), not also the
    /// audit page reloaded every 5 s.
    #[arg(long)]
    pub pool_page_only: bool,
    /// Do not write docs/benchmarks.md (the JSON under build/bench/ is always written).
    #[arg(long)]
    pub no_doc: bool,
    #[command(flatten)]
    pub common: util::BenchCommon,
}

/// What a run does.
#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    pub mode: &'static str,
    pub records: u64,
    pub blocks_per_condition: usize,
    pub samples_per_block: usize,
    /// Acquires before the first block, dropped.
    pub warmup: usize,
    pub pool: usize,
    pub memory_mib: u64,
    pub reset: &'static str,
    /// How often the audit page is reloaded while open (`None`: the pool page only).
    pub audit_reload_s: Option<f64>,
}

impl Plan {
    fn new(a: &ConsoleArgs) -> Result<Plan> {
        let p = Plan {
            mode: if a.quick { "quick" } else { "full" },
            records: a
                .records
                .unwrap_or(if a.quick { 100_000 } else { 1_000_000 }),
            blocks_per_condition: a.blocks.unwrap_or(if a.quick { 2 } else { 6 }),
            samples_per_block: a.samples.unwrap_or(if a.quick { 20 } else { 100 }),
            warmup: 5,
            pool: 2,
            memory_mib: 256,
            reset: "template_clone",
            audit_reload_s: (!a.pool_page_only).then(|| officer::AUDIT_RELOAD.as_secs_f64()),
        };
        if p.blocks_per_condition == 0 || p.samples_per_block == 0 {
            bail!("--blocks and --samples must be at least 1");
        }
        Ok(p)
    }

    /// Block `i`'s condition: closed, open, open, closed, closed, open, …
    fn console_open(i: usize) -> bool {
        matches!(i % 4, 1 | 2)
    }
}

/// One block of samples.
#[derive(Debug, Clone, Serialize)]
pub struct Block {
    pub index: usize,
    pub console_open: bool,
    /// Seconds since the first block started.
    pub started_s: f64,
    pub samples_ms: Vec<f64>,
    /// When each sample's request was sent (Unix ms), to set against the audit page
    /// loads of [`OpenLog::audit_loads_at`].
    pub samples_at: Vec<f64>,
    /// What the console did (open blocks).
    pub console: Option<OpenLog>,
    pub load_after: String,
}

/// A condition's numbers over all its blocks.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub samples: usize,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

/// Every sample of the blocks with the console open (or closed).
fn samples_of(blocks: &[Block], open: bool) -> Vec<f64> {
    blocks
        .iter()
        .filter(|b| b.console_open == open)
        .flat_map(|b| b.samples_ms.iter().copied())
        .collect()
}

/// Bootstrap resamples of [`bootstrap_p99_ratio`].
pub const BOOTSTRAP: usize = 2000;

/// The 2.5th and 97.5th percentiles of p99(open) / p99(closed) over [`BOOTSTRAP`]
/// resamples (each condition's samples drawn with replacement; a fixed seed, so a
/// run's JSON gives the same interval again).
fn bootstrap_p99_ratio(closed: &[f64], open: &[f64]) -> (f64, f64) {
    if closed.is_empty() || open.is_empty() {
        return (f64::NAN, f64::NAN);
    }
    // xorshift64: enough to draw indexes, and no dependency.
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = |n: usize| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        (x % n as u64) as usize
    };
    let mut ratios = Vec::with_capacity(BOOTSTRAP);
    let mut a = vec![0.0; closed.len()];
    let mut b = vec![0.0; open.len()];
    for _ in 0..BOOTSTRAP {
        for v in a.iter_mut() {
            *v = closed[next(closed.len())];
        }
        for v in b.iter_mut() {
            *v = open[next(open.len())];
        }
        ratios.push(percentile(&b, 99.0) / percentile(&a, 99.0));
    }
    (percentile(&ratios, 2.5), percentile(&ratios, 97.5))
}

impl Summary {
    fn of(blocks: &[Block], open: bool) -> Summary {
        let v = samples_of(blocks, open);
        Summary {
            samples: v.len(),
            p50_ms: percentile(&v, 50.0),
            p99_ms: percentile(&v, 99.0),
            max_ms: percentile(&v, 100.0),
        }
    }
}

/// Everything a run writes to build/bench/.
#[derive(Debug, Clone, Serialize)]
pub struct Results {
    pub command: String,
    pub started_utc: String,
    pub duration_s: f64,
    pub machine: Machine,
    pub plan: Plan,
    pub fill_s: f64,
    /// Records the store held when the measurement started (the fill and the broker's
    /// own since).
    pub records_verified: u64,
    /// From the broker's start until its chain monitor had verified every record.
    pub chain_first_pass_s: f64,
    pub blocks: Vec<Block>,
    pub closed: Summary,
    pub open: Summary,
    pub ratio_p99: f64,
    /// A 95 % interval of `ratio_p99` by the bootstrap ([`BOOTSTRAP`] resamples of each
    /// condition's samples, with replacement): how far the tail's noise alone moves it.
    pub ratio_p99_ci95: (f64, f64),
    pub ratio_p50: f64,
    pub within_1_20: bool,
    /// The broker's own time per request, by route, over the whole run (from its log).
    pub server: Vec<server::RouteTimes>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    pub cpu: String,
    pub cores: usize,
    pub load_before: String,
    pub load_after: String,
}

// ------------------------------------------------------------------ entry point

/// Runs the console benchmark: prints the table, writes the raw samples to
/// `build/bench/` and the "Console open vs closed" section of `docs/benchmarks.md`.
pub fn run(args: &ConsoleArgs) -> Result<()> {
    airlock_testkit::process::stop_everything_on_signal();
    let plan = Plan::new(args)?;
    let root = util::workspace_root();
    let logs = root.join("build/bench/logs/console");
    if logs.exists() {
        std::fs::remove_dir_all(&logs).with_context(|| format!("removing {}", logs.display()))?;
    }
    let results = airlock_testkit::block_on(measure(args, &plan, &logs))?;
    let text = report::render(&results);
    println!("\n{text}");
    let stamp = util::utc_now("%Y%m%dT%H%M%SZ");
    let json = args
        .common
        .save(&format!("console-{}-{stamp}.json", plan.mode), &results)?;
    if !args.no_doc {
        let doc = root.join("docs/benchmarks.md");
        let rel = json.strip_prefix(&root).unwrap_or(&json);
        report::write_doc(&doc, &results, rel)?;
        println!("wrote the console section of {}", doc.display());
    }
    util::print_load_and_results(
        &results.machine.load_before,
        &results.machine.load_after,
        &json,
    );
    Ok(())
}

async fn measure(args: &ConsoleArgs, plan: &Plan, logs: &Path) -> Result<Results> {
    let started = Instant::now();
    let started_utc = util::utc_now("%Y-%m-%d %H:%M UTC");
    let load_before = util::loadavg();
    let (guest, airlockd) = tokio::task::block_in_place(|| -> Result<_> {
        let guest = artifacts::guest()?;
        let airlockd = args.common.airlockd(|| {
            println!("building airlockd (cargo build --release)...");
            Ok(artifacts::host_binaries(true)?.airlockd())
        })?;
        Ok((guest, airlockd))
    })?;
    let machine_cpu = cpu_model();
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!(
        "bench console ({} mode): {machine_cpu}, {cores} cores; airlockd {}",
        plan.mode,
        airlockd.display()
    );

    // A fresh state directory, filled before the broker first starts.
    let config = BrokerConfig {
        size: plan.pool,
        reset: plan.reset.into(),
        memory_mib: plan.memory_mib,
        heartbeat_timeout_s: 3600,
        ready_timeout_s: 300,
        // `airlockd=debug` logs every request's time on the broker (see `server`).
        log_filter: std::env::var("AIRLOCK_LOG").unwrap_or_else(|_| "info,airlockd=debug".into()),
        ..BrokerConfig::new(guest)
    };
    let mut fill_s = 0.0;
    let broker = tokio::task::block_in_place(|| {
        Broker::start_prepared(&airlockd, config, |state| {
            print!("filling the store with {} audit records... ", plan.records);
            flush();
            let t = Instant::now();
            let spec = FillSpec {
                desktops: (1..=plan.pool).map(|i| format!("desk-{i:02}")).collect(),
                ..FillSpec::new(plan.records)
            };
            let filled = fill_audit(&state.join("airlock.db"), &spec)?;
            fill_s = t.elapsed().as_secs_f64();
            println!("{} records in {fill_s:.1} s", filled.records);
            Ok(())
        })
    })
    .context("starting the broker")?;
    let broker = KeptBroker {
        broker,
        logs: logs.to_owned(),
    };
    let b = &broker.broker;
    let t_start = Instant::now();
    print!("waiting for the pool and the chain monitor's first pass... ");
    flush();
    b.wait_all_clean(Duration::from_secs(600)).await?;
    let records_verified = wait_chain_verified(b, plan.records).await?;
    let chain_first_pass_s = t_start.elapsed().as_secs_f64();
    println!("{records_verified} records verified {chain_first_pass_s:.1} s after the start");

    print!("starting chromium and logging in... ");
    flush();
    let url = b.url.clone();
    let reload = plan.audit_reload_s.map(Duration::from_secs_f64);
    let officer = tokio::task::block_in_place(|| Officer::start(&url, ADMIN_TOKEN, reload))?;
    println!("done");

    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .pool_max_idle_per_host(1)
        .tcp_nodelay(true)
        .build()?;
    let r = client.get(format!("{url}/healthz")).send().await?;
    let _ = r.bytes().await;
    for _ in 0..plan.warmup {
        sample(b, &client).await?;
    }

    let t0 = Instant::now();
    let mut blocks = Vec::new();
    for index in 0..2 * plan.blocks_per_condition {
        let open = Plan::console_open(index);
        if open {
            tokio::task::block_in_place(|| officer.open())?;
        }
        let started_s = t0.elapsed().as_secs_f64();
        let mut samples_ms = Vec::with_capacity(plan.samples_per_block);
        let mut samples_at = Vec::with_capacity(plan.samples_per_block);
        for _ in 0..plan.samples_per_block {
            let (at, ms) = sample(b, &client).await?;
            samples_at.push(at);
            samples_ms.push(ms);
        }
        let console = if open {
            Some(tokio::task::block_in_place(|| officer.close())?)
        } else {
            None
        };
        let block = Block {
            index,
            console_open: open,
            started_s,
            samples_ms,
            samples_at,
            console,
            load_after: util::loadavg(),
        };
        println!(
            "{}",
            report::block_line(&block, 2 * plan.blocks_per_condition)
        );
        blocks.push(block);
    }
    tokio::task::block_in_place(|| officer.finish())?;
    let server = server::route_times(&std::fs::read_to_string(b.log_path()).unwrap_or_default());
    let closed = Summary::of(&blocks, false);
    let open = Summary::of(&blocks, true);
    let ratio_p99 = open.p99_ms / closed.p99_ms;
    let ratio_p99_ci95 =
        bootstrap_p99_ratio(&samples_of(&blocks, false), &samples_of(&blocks, true));
    Ok(Results {
        command: command_line(args),
        started_utc,
        duration_s: started.elapsed().as_secs_f64(),
        machine: Machine {
            cpu: machine_cpu,
            cores,
            load_before,
            load_after: util::loadavg(),
        },
        plan: plan.clone(),
        fill_s,
        records_verified,
        chain_first_pass_s,
        ratio_p50: open.p50_ms / closed.p50_ms,
        within_1_20: ratio_p99 <= 1.20,
        ratio_p99,
        ratio_p99_ci95,
        blocks,
        closed,
        open,
        server,
    })
}

/// One acquire on an all-clean pool, timed until its whole answer is read; the lease is
/// released at once.
async fn sample(b: &Broker, client: &reqwest::Client) -> Result<(f64, f64)> {
    b.wait_all_clean(Duration::from_secs(300)).await?;
    let at = officer::unix_ms();
    let t = Instant::now();
    let r = client
        .post(format!("{}/v1/leases", b.url))
        .bearer_auth(TERMINAL_TOKEN)
        .json(&json!({ "user": "bench-console" }))
        .send()
        .await
        .context("POST /v1/leases")?;
    let status = r.status().as_u16();
    let body = r.bytes().await.context("reading the acquire answer")?;
    let ms = t.elapsed().as_secs_f64() * 1000.0;
    let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    if status != 201 {
        bail!("an acquire on an all-clean pool answered {status}: {v}");
    }
    let lease = v["lease_id"]
        .as_str()
        .ok_or_else(|| anyhow!("no lease_id in {v}"))?;
    let r = client
        .delete(format!("{}/v1/leases/{lease}", b.url))
        .bearer_auth(TERMINAL_TOKEN)
        .send()
        .await
        .context("DELETE /v1/leases/{id}")?;
    let _ = r.bytes().await;
    Ok((at, ms))
}

/// Waits until the chain monitor has verified at least `records` records, intact; the
/// count it shows.
async fn wait_chain_verified(b: &Broker, records: u64) -> Result<u64> {
    let t = Instant::now();
    loop {
        let v = b.admin_get("/v1/audit/verify").await?;
        let n = v["records"].as_u64().unwrap_or(0);
        if v["intact"] == false {
            bail!("the audit chain does not verify: {v}");
        }
        if n >= records {
            return Ok(n);
        }
        if t.elapsed() > Duration::from_secs(600) {
            bail!("the chain monitor verified {n} of {records} records in 600 s");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// The broker, stopped on drop with its log and config kept under `logs`.
struct KeptBroker {
    broker: Broker,
    logs: PathBuf,
}

impl Drop for KeptBroker {
    fn drop(&mut self) {
        self.broker.stop();
        if std::fs::create_dir_all(&self.logs).is_ok() {
            let _ = std::fs::copy(self.broker.log_path(), self.logs.join("airlockd.log"));
            let _ = std::fs::copy(&self.broker.config_path, self.logs.join("airlockd.toml"));
        }
    }
}

fn command_line(args: &ConsoleArgs) -> String {
    let mut s = "cargo xtask bench console".to_owned();
    if args.quick {
        s.push_str(" --quick");
    }
    if let Some(n) = args.records {
        let _ = write!(s, " --records {n}");
    }
    if let Some(n) = args.blocks {
        let _ = write!(s, " --blocks {n}");
    }
    if let Some(n) = args.samples {
        let _ = write!(s, " --samples {n}");
    }
    if let Some(p) = &args.common.airlockd {
        let _ = write!(s, " --airlockd {}", p.display());
    }
    s
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|v| v.trim_start_matches([' ', '\t', ':']).trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into())
}

fn flush() {
    let _ = std::io::stdout().flush();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_alternate_so_each_condition_is_early_and_late_alike() {
        let open: Vec<bool> = (0..8).map(Plan::console_open).collect();
        assert_eq!(open, [false, true, true, false, false, true, true, false]);
    }

    #[test]
    fn the_bootstrap_interval_holds_the_ratio_of_equal_samples() {
        let v: Vec<f64> = (1..=500).map(f64::from).collect();
        let (lo, hi) = bootstrap_p99_ratio(&v, &v);
        assert!(lo < 1.0 && hi > 1.0 && lo > 0.9 && hi < 1.1, "{lo} {hi}");
        let doubled: Vec<f64> = v.iter().map(|x| x * 2.0).collect();
        let (lo, hi) = bootstrap_p99_ratio(&v, &doubled);
        assert!(lo > 1.8 && hi < 2.2, "{lo} {hi}");
    }
}
