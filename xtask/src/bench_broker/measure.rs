//! The measurements of the broker benchmark: acquire latency (one client on an idle
//! pool, then 50 clients at once) and release-to-clean per reset method (guest RAM
//! filled through the test control channel, the clock from `DELETE` to the desktop
//! seen clean), with the host's load over the run and the progress lines.
//! Each terminal times its requests on its own HTTP client (its own keep-alive
//! connection): that is part of what is measured, not harness.

use super::model::{AcquireResults, Confinement, Plan, ResetSample, ResetSeries, Round};
use super::report::gib;
use super::stats::{min_max, percentile};
use super::{BenchBroker, BrokerSpec, Setup, CLIENTS, METHODS};
use airlock_testkit::broker::TerminalEntry;
use airlock_testkit::Shell;
use anyhow::{anyhow, bail, Context, Result};
use serde::Serialize;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Polling interval while waiting for a desktop to be clean after a release.
const POLL: Duration = Duration::from_millis(10);
/// Mount point of the RAM fill inside the guest.
const FILL_DIR: &str = "/mnt/airlock-bench-fill";

/// The host's 1-minute load average over the run (other sessions share the cores).
#[derive(Debug, Clone, Default, Serialize)]
pub(super) struct LoadLog {
    pub samples: Vec<(String, f64)>,
}

impl LoadLog {
    pub fn sample(&mut self, at: &str) {
        let l = std::fs::read_to_string("/proc/loadavg")
            .ok()
            .and_then(|s| s.split_whitespace().next()?.parse::<f64>().ok())
            .unwrap_or(f64::NAN);
        self.samples.push((at.to_owned(), l));
    }

    pub fn range(&self) -> (f64, f64, f64) {
        let v: Vec<f64> = self
            .samples
            .iter()
            .map(|s| s.1)
            .filter(|x| x.is_finite())
            .collect();
        if v.is_empty() {
            return (f64::NAN, f64::NAN, f64::NAN);
        }
        let (min, max) = min_max(&v);
        (min, v.iter().sum::<f64>() / v.len() as f64, max)
    }
}

// ------------------------------------------------------------------ terminals

/// A terminal as the broker knows it: a name, a token and an HTTP client with
/// its own keep-alive connection.
pub(super) struct Terminal {
    token: String,
    http: reqwest::Client,
}

impl Terminal {
    fn new(i: usize) -> Result<Terminal> {
        Ok(Terminal {
            token: Terminal::entry(i).token,
            http: http_client()?,
        })
    }

    /// Terminal `i` (from 1) in the broker's config.
    pub fn entry(i: usize) -> TerminalEntry {
        TerminalEntry {
            name: format!("bench-{i:02}"),
            token: format!("airlock-bench-terminal-{i:02}"),
        }
    }

    /// `POST /v1/leases`, timed until the whole response is read.
    async fn acquire(&self, url: &str) -> Result<Answer> {
        let t = Instant::now();
        let r = self
            .http
            .post(format!("{url}/v1/leases"))
            .bearer_auth(&self.token)
            .json(&json!({ "user": "bench-user" }))
            .send()
            .await
            .context("POST /v1/leases")?;
        let status = r.status().as_u16();
        let body = r.bytes().await.context("reading the acquire response")?;
        let end = Instant::now();
        Ok(Answer {
            status,
            ms: (end - t).as_secs_f64() * 1000.0,
            start: t,
            end,
            body: serde_json::from_slice(&body).unwrap_or(Value::Null),
        })
    }

    async fn release(&self, url: &str, lease: &str) -> Result<u16> {
        let r = self
            .http
            .delete(format!("{url}/v1/leases/{lease}"))
            .bearer_auth(&self.token)
            .send()
            .await
            .context("DELETE /v1/leases/{id}")?;
        let status = r.status().as_u16();
        let _ = r.bytes().await;
        Ok(status)
    }

    /// Opens (or keeps) this terminal's connection with an untimed request.
    async fn warm(&self, url: &str) -> Result<()> {
        let r = self
            .http
            .get(format!("{url}/healthz"))
            .send()
            .await
            .context("GET /healthz")?;
        let _ = r.bytes().await;
        Ok(())
    }
}

/// A timed answer to `POST /v1/leases`.
struct Answer {
    status: u16,
    ms: f64,
    start: Instant,
    end: Instant,
    body: Value,
}

fn http_client() -> Result<reqwest::Client> {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(120))
        .pool_max_idle_per_host(1)
        .tcp_nodelay(true)
        .build()
        .context("building an HTTP client")
}

// ------------------------------------------------------------------ acquire latency

pub(super) async fn bench_acquire(
    plan: &Plan,
    setup: &Setup,
    load: &mut LoadLog,
) -> Result<AcquireResults> {
    println!(
        "\n== acquire latency: pool of {} clean desktops (template_clone, {}) ==",
        plan.acquire_pool,
        gib(plan.acquire_memory_mib)
    );
    let spec = BrokerSpec {
        label: "acq".into(),
        method: "template_clone",
        memory_mib: plan.acquire_memory_mib,
        pool: plan.acquire_pool,
        terminals: CLIENTS,
        confine: true,
    };
    let (b, broker_start_s) = BenchBroker::start(spec, setup).await?;
    load.sample("acquire: broker up");
    let url = b.broker.url.clone();
    let idle = Duration::from_secs(300);

    // One client: every sample on an all-clean, idle pool.
    let one = Terminal::new(1)?;
    one.warm(&url).await?;
    let mut single_ms = Vec::new();
    let total = plan.acquire_single_warmup + plan.acquire_single_samples;
    for i in 0..total {
        b.wait_all_clean(idle).await?;
        let a = one.acquire(&url).await?;
        let v = &a.body;
        if a.status != 201 {
            bail!("acquire on an all-clean pool answered {}: {v}", a.status);
        }
        let lease = v["lease_id"]
            .as_str()
            .ok_or_else(|| anyhow!("no lease_id in {v}"))?;
        one.release(&url, lease).await?;
        if i >= plan.acquire_single_warmup {
            single_ms.push(a.ms);
        }
        let done = single_ms.len();
        progress(
            &if i + 1 == total {
                format!(
                    "acquire, 1 client: {done}/{} samples: p50 {:.1} ms, p99 {:.1} ms",
                    plan.acquire_single_samples,
                    percentile(&single_ms, 50.0),
                    percentile(&single_ms, 99.0)
                )
            } else {
                format!("acquire, 1 client: {done}/{}", plan.acquire_single_samples)
            },
            i + 1 == total,
        );
    }
    load.sample("acquire: 1 client done");

    // 50 clients at once.
    let terms: Vec<Arc<Terminal>> = (1..=CLIENTS)
        .map(|i| Terminal::new(i).map(Arc::new))
        .collect::<Result<_>>()?;
    let mut rounds = Vec::new();
    let total = plan.acquire_warmup_rounds + plan.acquire_rounds;
    for r in 0..total {
        b.wait_all_clean(idle).await?;
        for t in &terms {
            t.warm(&url).await?;
        }
        let barrier = Arc::new(tokio::sync::Barrier::new(CLIENTS + 1));
        let mut set = tokio::task::JoinSet::new();
        for (i, t) in terms.iter().enumerate() {
            let (t, barrier, url) = (t.clone(), barrier.clone(), url.clone());
            set.spawn(async move {
                barrier.wait().await;
                (i, t.acquire(&url).await)
            });
        }
        barrier.wait().await;
        let mut first_start: Option<Instant> = None;
        let mut last_end: Option<Instant> = None;
        let mut round = Round {
            granted_ms: Vec::new(),
            refused_ms: Vec::new(),
            other: Vec::new(),
            all_answered_ms: 0.0,
        };
        let mut leases = Vec::new();
        while let Some(j) = set.join_next().await {
            let (i, res) = j.context("a client task failed")?;
            let a = res?;
            first_start = Some(first_start.map_or(a.start, |x| x.min(a.start)));
            last_end = Some(last_end.map_or(a.end, |x| x.max(a.end)));
            match a.status {
                201 => {
                    round.granted_ms.push(a.ms);
                    if let Some(l) = a.body["lease_id"].as_str() {
                        leases.push((i, l.to_owned()));
                    }
                }
                503 => round.refused_ms.push(a.ms),
                s => round.other.push((s, a.ms)),
            }
        }
        if let (Some(a), Some(b)) = (first_start, last_end) {
            round.all_answered_ms = (b - a).as_secs_f64() * 1000.0;
        }
        for (i, l) in &leases {
            terms[*i].release(&url, l).await?;
        }
        let counted = r >= plan.acquire_warmup_rounds;
        progress(
            &format!(
                "acquire, {CLIENTS} clients at once: round {}/{}{}: {} granted, {} refused, {} other",
                (r + 1).saturating_sub(plan.acquire_warmup_rounds),
                plan.acquire_rounds,
                if counted { "" } else { " (warm-up)" },
                round.granted_ms.len(),
                round.refused_ms.len(),
                round.other.len()
            ),
            r + 1 == total,
        );
        if counted {
            rounds.push(round);
        }
    }
    load.sample("acquire: 50 clients done");
    drop(b);
    Ok(AcquireResults {
        pool: plan.acquire_pool,
        memory_mib: plan.acquire_memory_mib,
        method: "template_clone",
        broker_start_s,
        single_ms,
        rounds,
    })
}

// ------------------------------------------------------------------ release-to-clean

/// One session and reset on a pool of one: acquire, fill guest RAM, release, wait clean.
async fn reset_sample(
    b: &mut BenchBroker,
    term: &Terminal,
    fill: Option<f64>,
    min_in_use: f64,
) -> Result<ResetSample> {
    let url = b.broker.url.clone();
    b.wait_all_clean(Duration::from_secs(300)).await?;
    let a = term.acquire(&url).await?;
    let v = &a.body;
    if a.status != 201 {
        bail!("{}: acquire answered {}: {v}", b.label(), a.status);
    }
    let lease = v["lease_id"]
        .as_str()
        .ok_or_else(|| anyhow!("no lease_id in {v}"))?
        .to_owned();
    let desktop = v["desktop_id"]
        .as_str()
        .ok_or_else(|| anyhow!("no desktop_id in {v}"))?
        .to_owned();
    // The kit's shell is synchronous; dropping it disconnects.
    let report =
        tokio::task::block_in_place(|| fill_guest_ram(&mut b.broker.control(&desktop)?, fill))?;
    if report.after.in_use() < min_in_use {
        bail!(
            "only {:.0} % of guest RAM in use after the fill ({:?})",
            report.after.in_use() * 100.0,
            report.after
        );
    }
    let before = b.desktop(&desktop).await?;
    let qemu_rss_mib = before.pid.and_then(|p| proc_kib(p, "status", "VmRSS:"));
    let qemu_thp_mib = before
        .pid
        .and_then(|p| proc_kib(p, "smaps_rollup", "AnonHugePages:"));
    let t0 = Instant::now();
    let status = term.release(&url, &lease).await?;
    let delete_ms = t0.elapsed().as_secs_f64() * 1000.0;
    if status != 202 {
        bail!("{}: release answered {status}", b.label());
    }
    let deadline = Duration::from_secs(600);
    let after = loop {
        let d = b.desktop(&desktop).await?;
        if d.state == "clean" && d.resets > before.resets {
            break d;
        }
        if d.state == "broken" {
            bail!(
                "{}: the reset failed, desktop broken: {}; log:\n{}",
                b.label(),
                d.reason.as_deref().unwrap_or("?"),
                b.broker.log_tail(30)
            );
        }
        if t0.elapsed() > deadline {
            bail!(
                "{}: desktop not clean {deadline:?} after the release",
                b.label()
            );
        }
        b.broker.check_alive()?;
        tokio::time::sleep(POLL).await;
    };
    let release_to_clean_s = t0.elapsed().as_secs_f64();
    if after.last_reset_method.as_deref() != Some(b.spec.method) {
        bail!(
            "{}: the broker reset with {:?} instead of {} (a fallback); log:\n{}",
            b.label(),
            after.last_reset_method,
            b.spec.method,
            b.broker.log_tail(20)
        );
    }
    let broker_record = b.last_reset_record(&desktop).await;
    Ok(ResetSample {
        release_to_clean_s,
        delete_ms,
        broker_last_reset_s: after.last_reset_s,
        broker_method: after.last_reset_method,
        qemu_rss_mib,
        qemu_thp_mib,
        fill: report,
        broker_record,
    })
}

/// A `Name:   N kB` field of a /proc/PID file, in MiB.
fn proc_kib(pid: u32, file: &str, field: &str) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/{file}")).ok()?;
    let kib: u64 = s
        .lines()
        .find_map(|l| l.strip_prefix(field))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    Some(kib / 1024)
}

pub(super) async fn bench_resets(
    plan: &Plan,
    memory_mib: u64,
    setup: &Setup,
    load: &mut LoadLog,
) -> Result<Vec<ResetSeries>> {
    println!(
        "\n== release-to-clean, {}: one broker per method, pool of 1, samples interleaved ==",
        gib(memory_mib)
    );
    let specs = METHODS
        .iter()
        .map(|&method| BrokerSpec {
            label: format!("{}-{memory_mib}m", short(method)),
            method,
            memory_mib,
            pool: 1,
            terminals: 1,
            confine: true,
        })
        .collect();
    interleaved_resets(
        plan,
        specs,
        setup,
        load,
        &format!("resets {memory_mib} MiB"),
    )
    .await
}

/// Template clone with confinement on and off (`--confinement`): one broker each, pool
/// of 1, the same RAM size and fill, samples interleaved.
pub(super) async fn bench_confinement(
    plan: &Plan,
    memory_mib: u64,
    setup: &Setup,
    load: &mut LoadLog,
) -> Result<Confinement> {
    println!(
        "\n== cost of confinement, {}: template_clone confined and unconfined, one broker each, pool of 1, samples interleaved ==",
        gib(memory_mib)
    );
    let specs = [true, false]
        .into_iter()
        .map(|confine| BrokerSpec {
            label: format!(
                "tc-{}-{memory_mib}m",
                if confine { "confined" } else { "unconfined" }
            ),
            method: "template_clone",
            memory_mib,
            pool: 1,
            terminals: 1,
            confine,
        })
        .collect();
    let mut series = interleaved_resets(
        plan,
        specs,
        setup,
        load,
        &format!("confinement {memory_mib} MiB"),
    )
    .await?
    .into_iter();
    match (series.next(), series.next()) {
        (Some(confined), Some(unconfined)) => Ok(Confinement {
            memory_mib,
            confined,
            unconfined,
        }),
        _ => bail!("the confinement comparison lost a series"),
    }
}

/// Starts a broker per spec (pool of 1 each), then takes `plan.reset_samples` resets
/// of each, rotating the order every round so that no broker always runs right after
/// another and a change in the background load hits all alike. The series come back
/// in the order of `specs`.
async fn interleaved_resets(
    plan: &Plan,
    specs: Vec<BrokerSpec>,
    setup: &Setup,
    load: &mut LoadLog,
    phase: &str,
) -> Result<Vec<ResetSeries>> {
    let mut brokers = Vec::new();
    let mut series = Vec::new();
    for spec in specs {
        let (method, memory_mib, confined) = (spec.method, spec.memory_mib, spec.confine);
        let (b, s) = BenchBroker::start(spec, setup).await?;
        brokers.push(b);
        series.push(ResetSeries {
            method,
            memory_mib,
            confined,
            broker_start_s: s,
            samples: Vec::new(),
        });
    }
    load.sample(&format!("{phase}: brokers up"));
    let term = Terminal::new(1)?;
    let n = plan.reset_samples;
    let k_all = brokers.len();
    for i in 0..n {
        for k in 0..k_all {
            let m = (i + k) % k_all;
            let b = &mut brokers[m];
            print!(
                "resetting {}/{n} ({}{}, {}): filling guest RAM... ",
                i + 1,
                b.spec.method,
                if b.spec.confine { "" } else { ", unconfined" },
                gib(b.spec.memory_mib)
            );
            flush();
            let s = reset_sample(b, &term, plan.fill_fraction, plan.min_in_use).await?;
            println!(
                "{} MiB in {:.1} s, guest {}/{} MiB in use; released -> clean in {:.3} s (broker {}){}",
                s.fill.target_mib,
                s.fill.seconds,
                s.fill.after.total_mib - s.fill.after.free_mib,
                s.fill.after.total_mib,
                s.release_to_clean_s,
                s.broker_last_reset_s
                    .map(|x| format!("{x:.3} s"))
                    .unwrap_or_else(|| "?".into()),
                match &s.broker_method {
                    Some(x) if x == b.spec.method => String::new(),
                    other => format!(" WARNING: the broker reset with {other:?}"),
                }
            );
            series[m].samples.push(s);
        }
        load.sample(&format!("{phase}: round {}", i + 1));
    }
    drop(brokers);
    Ok(series)
}

// ------------------------------------------------------------------ guest RAM fill

/// The `Mem:` line of busybox `free -m`.
#[derive(Debug, Clone, Copy, Serialize)]
pub(super) struct Free {
    pub total_mib: u64,
    pub used_mib: u64,
    pub free_mib: u64,
    pub shared_mib: u64,
    pub buff_cache_mib: u64,
    pub available_mib: u64,
}

impl Free {
    fn parse(text: &str) -> Result<Free> {
        let line = text
            .lines()
            .find(|l| l.trim_start().starts_with("Mem:"))
            .ok_or_else(|| anyhow!("no Mem: line in `free -m` output: {text:?}"))?;
        let v: Vec<u64> = line
            .split_whitespace()
            .skip(1)
            .map(|x| x.parse::<u64>())
            .collect::<Result<_, _>>()
            .with_context(|| format!("parsing `free -m`: {line:?}"))?;
        if v.len() < 6 {
            bail!("`free -m` has {} columns: {line:?}", v.len());
        }
        Ok(Free {
            total_mib: v[0],
            used_mib: v[1],
            free_mib: v[2],
            shared_mib: v[3],
            buff_cache_mib: v[4],
            available_mib: v[5],
        })
    }

    /// Share of guest RAM not free (kernel, processes, page cache and tmpfs).
    pub fn in_use(&self) -> f64 {
        if self.total_mib == 0 {
            return 0.0;
        }
        (self.total_mib - self.free_mib.min(self.total_mib)) as f64 / self.total_mib as f64
    }
}

#[derive(Debug, Clone, Serialize)]
pub(super) struct FillReport {
    pub target_mib: u64,
    pub seed_mib: u64,
    pub copies: u64,
    pub seconds: f64,
    pub mib_per_s: f64,
    pub before: Free,
    pub after: Free,
}

/// Fills most of guest RAM with non-zero data that repeats no 4 KiB page: a
/// tmpfs holding a random seed (from /dev/urandom) and copies of it, copy `i`
/// shifted by `17 i + 1` bytes, so no page of one copy equals a page of another
/// or of the seed. (The guest's /dev/urandom makes ~13 MB/s under TCG here, too
/// slow for GiBs; copies run at 100-400 MB/s.)
fn fill_guest_ram(ctl: &mut Shell, fraction: Option<f64>) -> Result<FillReport> {
    let t = Duration::from_secs(60);
    let mounted = ctl.sh_timeout(&format!("grep -c ' {FILL_DIR} ' /proc/mounts || true"), t)?;
    if mounted.trim() != "0" {
        bail!("the fill of the previous session is still mounted: the reset did not reset RAM");
    }
    let before = Free::parse(&ctl.sh_timeout("free -m", t)?)?;
    let target = match fraction {
        Some(f) => (before.total_mib as f64 * f) as u64,
        None => {
            let margin = (before.total_mib / 20).max(128);
            before
                .free_mib
                .saturating_sub(margin)
                .min(before.total_mib.saturating_sub(margin))
        }
    };
    // At most 240 copies keep the shifts (17 i + 1 < 4096) distinct within a page.
    let seed = target.div_ceil(240).max(16);
    let copies = (target / seed).saturating_sub(1);
    if copies == 0 {
        bail!("guest has too little free RAM to fill ({before:?})");
    }
    let started = Instant::now();
    ctl.sh_timeout(
        &format!(
            "mkdir -p {FILL_DIR} && mount -t tmpfs -o size={}m airlock-bench {FILL_DIR}",
            target + 64
        ),
        t,
    )?;
    ctl.sh_timeout(
        &format!("dd if=/dev/urandom of={FILL_DIR}/seed bs=1M count={seed} 2>/dev/null"),
        Duration::from_secs(300),
    )?;
    let out = ctl
        .sh_timeout(
            &format!(
                "i=0; while [ $i -lt {copies} ]; do o=$((i*17+1)); \
                 {{ head -c $o {FILL_DIR}/seed && cat {FILL_DIR}/seed; }} > {FILL_DIR}/c$i || break; \
                 i=$((i+1)); done; echo copies=$i; [ $i -eq {copies} ]"
            ),
            Duration::from_secs(1200),
        )?;
    if !out.contains(&format!("copies={copies}")) {
        bail!("the RAM fill stopped early: {out}");
    }
    let seconds = started.elapsed().as_secs_f64();
    let after = Free::parse(&ctl.sh_timeout("free -m", t)?)?;
    let written = seed * (copies + 1);
    Ok(FillReport {
        target_mib: written,
        seed_mib: seed,
        copies,
        seconds,
        mib_per_s: written as f64 / seconds.max(1e-9),
        before,
        after,
    })
}

// ------------------------------------------------------------------ progress

/// Short method names, for the brokers' labels (`tc-1024m`).
fn short(method: &str) -> &'static str {
    match method {
        "template_clone" => "tc",
        "snapshot_restore" => "sr",
        _ => "rb",
    }
}

/// Progress on one line: rewritten in place on a terminal, one line per update
/// (only the final one) otherwise.
fn progress(msg: &str, last: bool) {
    use std::io::IsTerminal;
    if std::io::stdout().is_terminal() {
        print!("\r{msg}  ");
        if last {
            println!();
        }
        flush();
    } else if last {
        println!("{msg}");
    }
}

pub(super) fn flush() {
    use std::io::Write;
    let _ = std::io::stdout().flush();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn busybox_free_is_parsed() {
        let text = "              total        used        free      shared  buff/cache   available\n\
                    Mem:           3915          24         654        3221        3237         541\n\
                    Swap:             0           0           0\n";
        let f = Free::parse(text).unwrap();
        assert_eq!(f.total_mib, 3915);
        assert_eq!(f.free_mib, 654);
        assert_eq!(f.shared_mib, 3221);
        assert!((f.in_use() - (3915.0 - 654.0) / 3915.0).abs() < 1e-9);
        assert!(Free::parse("nothing").is_err());
    }
}
