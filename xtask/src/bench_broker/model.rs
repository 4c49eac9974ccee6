//! What one run of the broker benchmark plans and finds, as data: the plan, the
//! machine it ran on, the acquire-latency rounds and the release-to-clean series.
//! All of it is written as JSON under `build/bench/`; the report reads it from here.

use super::measure::{FillReport, LoadLog};
use super::stats::median;
use super::BrokerArgs;
use crate::util;
use serde::Serialize;
use serde_json::Value;
use std::path::Path;
use std::process::Command;

/// What one run does.
#[derive(Debug, Clone, Serialize)]
pub(super) struct Plan {
    pub mode: &'static str,
    pub memories_mib: Vec<u64>,
    pub reset_samples: usize,
    /// Fraction of guest RAM to fill; `None`: all but a safety margin.
    pub fill_fraction: Option<f64>,
    /// Minimum share of guest RAM in use (total - free) before a release.
    pub min_in_use: f64,
    pub acquire_pool: usize,
    pub acquire_memory_mib: u64,
    pub acquire_single_samples: usize,
    pub acquire_single_warmup: usize,
    pub acquire_rounds: usize,
    pub acquire_warmup_rounds: usize,
    /// The RAM size of the confined/unconfined comparison (`--confinement`), if any.
    pub confinement_memory_mib: Option<u64>,
}

impl Plan {
    pub fn new(args: &BrokerArgs) -> Plan {
        let mut plan = Plan::mode(args);
        plan.confinement_memory_mib = plan
            .memories_mib
            .first()
            .copied()
            .filter(|_| args.confinement);
        plan
    }

    fn mode(args: &BrokerArgs) -> Plan {
        if args.quick {
            Plan {
                mode: "quick",
                memories_mib: vec![1024],
                reset_samples: args.samples.unwrap_or(2),
                fill_fraction: Some(0.25),
                min_in_use: 0.2,
                acquire_pool: 2,
                acquire_memory_mib: 1024,
                acquire_single_samples: 8,
                acquire_single_warmup: 1,
                acquire_rounds: 2,
                acquire_warmup_rounds: 1,
                confinement_memory_mib: None,
            }
        } else {
            Plan {
                mode: "full",
                memories_mib: vec![1024, 4096],
                reset_samples: args.samples.unwrap_or(9),
                fill_fraction: None,
                min_in_use: 0.75,
                acquire_pool: 2,
                acquire_memory_mib: 1024,
                acquire_single_samples: 100,
                acquire_single_warmup: 2,
                acquire_rounds: 20,
                acquire_warmup_rounds: 1,
                confinement_memory_mib: None,
            }
        }
    }
}

// ------------------------------------------------------------------ machine facts

#[derive(Debug, Clone, Serialize)]
pub(super) struct Machine {
    pub cpu: String,
    pub cores: usize,
    pub sockets_note: String,
    pub host_ram_gib: f64,
    pub kernel: String,
    pub qemu: String,
    pub accel: &'static str,
    pub airlockd_commit: String,
    pub load: LoadLog,
}

impl Machine {
    pub fn probe(root: &Path) -> Machine {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu = cpuinfo
            .lines()
            .find_map(|l| l.strip_prefix("model name"))
            .and_then(|l| l.split_once(':'))
            .map(|(_, v)| v.trim().to_owned())
            .unwrap_or_else(|| "unknown".into());
        let cores = cpuinfo
            .lines()
            .filter(|l| l.starts_with("processor"))
            .count()
            .max(1);
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let host_ram_gib = meminfo
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse::<f64>().ok())
            .map(|kib| kib / 1024.0 / 1024.0)
            .unwrap_or(0.0);
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|s| s.trim().to_owned())
            .unwrap_or_default();
        let qemu = util::run_stdout(Command::new("qemu-system-x86_64").arg("--version"))
            .ok()
            .and_then(|s| s.lines().next().map(str::to_owned))
            .unwrap_or_else(|| "qemu-system-x86_64 not found".into());
        let commit = util::run_stdout(Command::new("git").current_dir(root).args([
            "rev-parse",
            "--short",
            "HEAD",
        ]))
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|_| "unknown".into());
        let dirty = util::run_stdout(Command::new("git").current_dir(root).args([
            "status",
            "--porcelain",
            "--untracked-files=no",
        ]))
        .map(|s| !s.trim().is_empty())
        .unwrap_or(false);
        Machine {
            cpu,
            cores,
            sockets_note: "shared with other sessions".into(),
            host_ram_gib,
            kernel,
            qemu,
            accel: "tcg",
            airlockd_commit: if dirty {
                format!("{commit} + uncommitted changes")
            } else {
                commit
            },
            load: LoadLog::default(),
        }
    }
}

// ------------------------------------------------------------------ acquire latency

#[derive(Debug, Clone, Serialize)]
pub(super) struct AcquireResults {
    pub pool: usize,
    pub memory_mib: u64,
    pub method: &'static str,
    pub broker_start_s: f64,
    pub single_ms: Vec<f64>,
    pub rounds: Vec<Round>,
}

#[derive(Debug, Clone, Serialize)]
pub(super) struct Round {
    pub granted_ms: Vec<f64>,
    pub refused_ms: Vec<f64>,
    /// Any other status: (status, ms).
    pub other: Vec<(u16, f64)>,
    /// From the barrier to the last response.
    pub all_answered_ms: f64,
}

impl AcquireResults {
    /// Every granted (201) request of the counted rounds, ms.
    pub fn granted_ms(&self) -> Vec<f64> {
        self.rounds
            .iter()
            .flat_map(|x| x.granted_ms.clone())
            .collect()
    }

    /// Every refused (503) request of the counted rounds, ms.
    pub fn refused_ms(&self) -> Vec<f64> {
        self.rounds
            .iter()
            .flat_map(|x| x.refused_ms.clone())
            .collect()
    }

    /// Every request answered with another status, ms.
    pub fn other_ms(&self) -> Vec<f64> {
        self.rounds
            .iter()
            .flat_map(|x| x.other.iter().map(|o| o.1))
            .collect()
    }

    /// Each round from the barrier to its last answer, ms.
    pub fn round_ms(&self) -> Vec<f64> {
        self.rounds.iter().map(|x| x.all_answered_ms).collect()
    }
}

// ------------------------------------------------------------------ release-to-clean

#[derive(Debug, Clone, Serialize)]
pub(super) struct ResetSeries {
    pub method: &'static str,
    pub memory_mib: u64,
    /// `[pool.confine] enabled` of its broker (the product's default is on).
    pub confined: bool,
    pub broker_start_s: f64,
    pub samples: Vec<ResetSample>,
}

#[derive(Debug, Clone, Serialize)]
pub(super) struct ResetSample {
    /// DELETE sent -> desktop seen clean with its reset count incremented.
    pub release_to_clean_s: f64,
    /// DELETE round trip (202).
    pub delete_ms: f64,
    /// The broker's own measurement (`last_reset_s` of /v1/desktops).
    pub broker_last_reset_s: Option<f64>,
    /// The method the broker reports for this reset (a fallback would show here).
    pub broker_method: Option<String>,
    /// QEMU's resident memory on the host just before the release.
    pub qemu_rss_mib: Option<u64>,
    /// ... of which transparent huge pages (`AnonHugePages`).
    pub qemu_thp_mib: Option<u64>,
    pub fill: FillReport,
    /// The broker's audit record of the reset (`details` of `desktop_reset`).
    pub broker_record: Option<Value>,
}

// ------------------------------------------------------------------ results

#[derive(Debug, Clone, Serialize)]
pub(super) struct Results {
    pub command: String,
    pub mode: &'static str,
    pub started_utc: String,
    pub duration_s: f64,
    pub machine: Machine,
    pub plan: Plan,
    pub acquire: AcquireResults,
    pub resets: Vec<ResetSeries>,
    /// With `--confinement`: template_clone confined and unconfined, interleaved.
    pub confinement: Option<Confinement>,
}

/// The cost of confining the desktops: the same template-clone release-to-clean with
/// `[pool.confine]` on and off, one broker each, samples interleaved.
#[derive(Debug, Clone, Serialize)]
pub(super) struct Confinement {
    pub memory_mib: u64,
    pub confined: ResetSeries,
    pub unconfined: ResetSeries,
}

impl Confinement {
    /// Median release-to-clean, confined / unconfined.
    pub fn release_ratio(&self) -> Option<f64> {
        quotient(
            self.confined.release_median(),
            self.unconfined.release_median(),
        )
    }

    /// Release-to-clean confined / unconfined of each round (the two samples taken one
    /// right after the other), in round order.
    pub fn round_ratios(&self) -> Vec<f64> {
        self.confined
            .samples
            .iter()
            .zip(&self.unconfined.samples)
            .filter_map(|(a, b)| quotient(a.release_to_clean_s, b.release_to_clean_s))
            .collect()
    }

    /// Median of the broker's own `last_reset_s`, confined / unconfined.
    pub fn broker_ratio(&self) -> Option<f64> {
        let m = |s: &ResetSeries| median(&s.values(|x| x.broker_last_reset_s));
        quotient(m(&self.confined), m(&self.unconfined))
    }
}

/// `a / b` of two finite medians, `b` positive.
fn quotient(a: f64, b: f64) -> Option<f64> {
    (a.is_finite() && b.is_finite() && b > 0.0).then(|| a / b)
}

impl Results {
    pub fn series(&self, method: &str, memory_mib: u64) -> Option<&ResetSeries> {
        self.resets
            .iter()
            .find(|s| s.method == method && s.memory_mib == memory_mib)
    }

    /// Median release-to-clean of a method at a RAM size.
    pub fn median_s(&self, method: &str, memory_mib: u64) -> Option<f64> {
        let m = self.series(method, memory_mib)?.release_median();
        m.is_finite().then_some(m)
    }
}

impl ResetSeries {
    pub fn values(&self, f: impl Fn(&ResetSample) -> Option<f64>) -> Vec<f64> {
        self.samples.iter().filter_map(f).collect()
    }

    /// Median release-to-clean, seconds.
    pub fn release_median(&self) -> f64 {
        median(&self.values(|s| Some(s.release_to_clean_s)))
    }

    /// Median speed of the RAM fills before the releases, MiB/s.
    pub fn fill_speed_median(&self) -> f64 {
        median(&self.values(|s| Some(s.fill.mib_per_s)))
    }

    pub fn fill_median_mib(&self) -> f64 {
        median(&self.values(|s| Some(s.fill.target_mib as f64)))
    }

    pub fn in_use_median(&self) -> f64 {
        median(&self.values(|s| Some(s.fill.after.in_use())))
    }

    /// A number from the broker's audit record of each reset.
    pub fn record_ms(&self, path: &[&str]) -> Vec<f64> {
        self.values(|s| {
            let mut v = s.broker_record.as_ref()?;
            for k in path {
                v = v.get(*k)?;
            }
            v.as_f64()
        })
    }

    /// Where the broker's reset time goes, medians of its audit records.
    pub fn broker_steps(&self) -> BrokerSteps {
        let total_ms = median(&self.record_ms(&["duration_ms"]));
        let ready_ms = median(&self.record_ms(&["proof", "start", "readiness", "answered_ms"]));
        let key = match self.method {
            "template_clone" => "running_ms",
            "snapshot_restore" => "load_ms",
            _ => "boot_ms",
        };
        let mut main_ms = median(&self.record_ms(&["proof", "start", key]));
        if self.method == "template_clone" {
            // running_ms stops before the readiness ping; count the ping in.
            main_ms += ready_ms;
        }
        BrokerSteps {
            total_ms,
            main_ms,
            ready_ms,
        }
    }

    /// How many resets froze the old process until the clone was up, of those that say.
    pub fn frozen_old(&self) -> (usize, usize) {
        let said: Vec<&str> = self
            .samples
            .iter()
            .filter_map(|s| {
                s.broker_record
                    .as_ref()?
                    .pointer("/proof/start/old_process")?
                    .as_str()
            })
            .collect();
        (
            said.iter().filter(|h| **h == "frozen_until_ready").count(),
            said.len(),
        )
    }

    /// Resets the broker did with another method than configured (fallbacks).
    pub fn fallbacks(&self) -> usize {
        self.samples
            .iter()
            .filter(|s| s.broker_method.as_deref() != Some(self.method))
            .count()
    }
}

/// A reset method's time as the broker records it (medians, ms).
pub(super) struct BrokerSteps {
    /// The whole reset.
    pub total_ms: f64,
    /// The method's own work (see the report's table), readiness ping included.
    pub main_ms: f64,
    /// Of it, the readiness ping.
    pub ready_ms: f64,
}

impl BrokerSteps {
    /// What is not the main step: bookkeeping, signals, the clock set.
    pub fn rest_ms(&self) -> f64 {
        self.total_ms - self.main_ms
    }
}
