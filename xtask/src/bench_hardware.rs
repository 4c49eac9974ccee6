//! `cargo xtask bench hardware`: release-to-clean of a Windows-shaped pool (issue 15)
//! beside the demo pool's, in one run.
//!
//! Two brokers (release build, one desktop each, `template_clone`, the same RAM, TCG,
//! confined as the product runs):
//!
//! - **demo**: the demo guest, SeaBIOS, the Airlock serial probe;
//! - **uefi-tpm**: the qga test image's UEFI disk (Debian's signed shim, GRUB and
//!   kernel), OVMF with Secure Boot enforcing, a swtpm TPM 2.0 per desktop, a USB tablet,
//!   and the stock QEMU guest agent as the probe (sync, ping, clock set and read back).
//!
//! Each sample: acquire on an all-clean pool, release, and poll `GET /v1/desktops/{id}`
//! every 10 ms until the desktop is `clean` with one more reset. The two brokers' samples
//! alternate (demo, uefi-tpm, uefi-tpm, demo, …) so the machine's background load hits
//! both alike. Reported: medians and min–max of each, the broker's own reset time, and
//! the ratio uefi-tpm / demo of the medians. Guest RAM is not filled (the qga image has
//! no test shell): both clones restore the same untouched template RAM.
use crate::bench_broker::stats::median;
use crate::util;
use airlock_testkit::artifacts::{artifacts, host_binaries, qga_guest};
use airlock_testkit::broker::TERMINAL_TOKEN;
use airlock_testkit::{block_on, Broker, BrokerConfig};
use anyhow::{bail, ensure, Context, Result};
use serde::Serialize;
use std::time::{Duration, Instant};

/// `cargo xtask bench hardware` options.
#[derive(Debug, Clone, clap::Args)]
pub struct HardwareArgs {
    /// Resets per pool (the median is reported).
    #[arg(long, default_value_t = 9)]
    pub samples: usize,
    /// Guest RAM of each desktop in MiB (UEFI needs at least 384 for the Debian kernel).
    #[arg(long, default_value_t = 512)]
    pub memory_mib: u64,
    #[command(flatten)]
    pub common: util::BenchCommon,
}

/// One reset, in seconds.
#[derive(Debug, Clone, Serialize)]
struct Sample {
    release_to_clean_s: f64,
    /// What the broker itself reports (`last_reset_s`).
    broker_reset_s: Option<f64>,
}

#[derive(Debug, Serialize)]
struct Series {
    pool: &'static str,
    broker_start_s: f64,
    samples: Vec<Sample>,
}

#[derive(Debug, Serialize)]
struct Results {
    command: String,
    started_utc: String,
    memory_mib: u64,
    series: Vec<Series>,
}

/// The two pools' configurations.
fn configs(memory_mib: u64) -> Result<[(&'static str, BrokerConfig); 2]> {
    let demo = BrokerConfig {
        size: 1,
        memory_mib,
        heartbeat_timeout_s: 3600,
        ready_timeout_s: 300,
        display: None,
        ..BrokerConfig::new(&artifacts()?.guest)
    };
    let uefi = demo.clone().uefi_tpm(qga_guest()?);
    Ok([("demo", demo), ("uefi-tpm", uefi)])
}

/// One session and its reset on a pool of one.
async fn sample(b: &Broker) -> Result<Sample> {
    b.wait_all_clean(Duration::from_secs(300)).await?;
    let grant = b.acquire_ok("dr-bench").await?;
    let desk = grant.grant.desktop_id.to_string();
    let before = b.desktop(&desk).await?;
    let resets = before["resets"].as_i64().unwrap_or(0);
    let t0 = Instant::now();
    let status = b.release(TERMINAL_TOKEN, &grant.grant.lease_id).await?;
    ensure!(status.is_success(), "release answered {status}");
    loop {
        let d = b.desktop(&desk).await?;
        if d["state"] == "clean" && d["resets"].as_i64().unwrap_or(0) > resets {
            ensure!(
                d["last_reset_method"] == "template_clone",
                "the broker reset with {} (a fallback); log:\n{}",
                d["last_reset_method"],
                b.log_tail(20)
            );
            return Ok(Sample {
                release_to_clean_s: t0.elapsed().as_secs_f64(),
                broker_reset_s: d["last_reset_s"].as_f64(),
            });
        }
        if d["state"] == "broken" {
            bail!("the reset failed: {d}; log:\n{}", b.log_tail(20));
        }
        ensure!(
            t0.elapsed() < Duration::from_secs(300),
            "not clean 300 s after the release"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn summary(s: &Series) -> (f64, f64, f64) {
    let v: Vec<f64> = s.samples.iter().map(|x| x.release_to_clean_s).collect();
    let lo = v.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = v.iter().copied().fold(0.0, f64::max);
    (median(&v), lo, hi)
}

/// Runs the benchmark.
pub fn run(args: &HardwareArgs) -> Result<()> {
    ensure!(args.samples >= 1, "--samples must be at least 1");
    ensure!(
        args.memory_mib >= 384,
        "--memory-mib must be at least 384 (the UEFI pool's kernel needs it)"
    );
    airlock_testkit::process::stop_everything_on_signal();
    let started_utc = util::utc_now("%Y-%m-%d %H:%M UTC");
    let airlockd = args.common.airlockd(|| {
        println!("building airlockd (cargo build --release)...");
        Ok(host_binaries(true)?.airlockd())
    })?;
    let mut brokers = Vec::new();
    let mut series = Vec::new();
    for (pool, cfg) in configs(args.memory_mib)? {
        println!("starting the {pool} pool (template build under TCG)...");
        let t = Instant::now();
        let b = Broker::start(&airlockd, cfg)?;
        block_on(b.wait_all_clean(Duration::from_secs(600)))
            .with_context(|| format!("the {pool} pool did not come up"))?;
        series.push(Series {
            pool,
            broker_start_s: t.elapsed().as_secs_f64(),
            samples: Vec::new(),
        });
        brokers.push(b);
    }
    for i in 0..args.samples {
        // demo, uefi-tpm, then uefi-tpm, demo: neither always runs second.
        let order: [usize; 2] = if i % 2 == 0 { [0, 1] } else { [1, 0] };
        for k in order {
            let s = block_on(sample(&brokers[k]))
                .with_context(|| format!("{} pool, sample {}", series[k].pool, i + 1))?;
            println!(
                "{:>8} {}/{}: released -> clean in {:.3} s (broker {})",
                series[k].pool,
                i + 1,
                args.samples,
                s.release_to_clean_s,
                s.broker_reset_s
                    .map_or_else(|| "?".to_owned(), |x| format!("{x:.3} s"))
            );
            series[k].samples.push(s);
        }
    }
    drop(brokers);
    let mut command = format!(
        "cargo xtask bench hardware --samples {} --memory-mib {}",
        args.samples, args.memory_mib
    );
    if let Some(p) = &args.common.airlockd {
        command.push_str(&format!(" --airlockd {}", p.display()));
    }
    let results = Results {
        command,
        started_utc,
        memory_mib: args.memory_mib,
        series,
    };
    println!(
        "\nrelease-to-clean, template_clone, {} MiB, {} samples each (interleaved):",
        args.memory_mib, args.samples
    );
    println!("| pool | median (s) | min–max (s) | pool start (s) |");
    println!("|---|---:|---:|---:|");
    for s in &results.series {
        let (m, lo, hi) = summary(s);
        println!(
            "| {} | {m:.3} | {lo:.3}–{hi:.3} | {:.0} |",
            s.pool, s.broker_start_s
        );
    }
    let (demo, _, _) = summary(&results.series[0]);
    let (uefi, _, _) = summary(&results.series[1]);
    println!("\nratio uefi-tpm / demo (medians): {:.2}", uefi / demo);
    let stamp = util::utc_now("%Y%m%dT%H%M%SZ");
    let path = args
        .common
        .save(&format!("hardware-{stamp}.json"), &results)?;
    println!("raw samples: {}", path.display());
    Ok(())
}
