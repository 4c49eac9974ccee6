//! The results of `cargo xtask bench open`: what is kept (JSON) and the Markdown tables.

use super::milestones::{Sample, TARGET_FIRST_FRAME_S};
use crate::bench_broker::stats::{median, min_max, percentile};
use serde::Serialize;
use std::path::PathBuf;

/// A whole run: its conditions and every counted session.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub date: String,
    pub config: PathBuf,
    pub tls: bool,
    pub display: bool,
    pub pool_cpus: String,
    pub terminal_cpus: String,
    pub iso: PathBuf,
    pub files: u64,
    pub bytes: u64,
    pub runs: usize,
    pub warmup: usize,
    pub host_cpus: usize,
    pub loadavg_before: String,
    pub loadavg_after: String,
    pub qemu: String,
    pub commit: String,
    pub samples: Vec<Sample>,
}

/// The results as Markdown tables: the milestones from the start, then the disc's read.
pub fn table(r: &Report) -> String {
    let col = |f: &dyn Fn(&Sample) -> Option<f64>| -> Vec<f64> {
        r.samples.iter().filter_map(f).collect()
    };
    let mut t = String::from(
        "| from starting `airlock open` to | n | p50 (s) | p90 (s) | min–max (s) | p50 / 1 s target |\n\
         |---|---:|---:|---:|---:|---:|\n",
    );
    let mut row = |name: &str, v: Vec<f64>, target: bool| {
        if v.is_empty() {
            t.push_str(&format!("| {name} | 0 | – | – | – | – |\n"));
            return;
        }
        let (lo, hi) = min_max(&v);
        let p50 = median(&v);
        t.push_str(&format!(
            "| {name} | {} | {p50:.3} | {:.3} | {lo:.3}–{hi:.3} | {} |\n",
            v.len(),
            percentile(&v, 90.0),
            if target {
                format!("**{:.2}**", p50 / TARGET_FIRST_FRAME_S)
            } else {
                String::new()
            }
        ));
    };
    row("lease granted", col(&|s| Some(s.lease)), false);
    row("display connected", col(&|s| s.display), false);
    row(
        "**first frame of the desktop**",
        col(&|s| s.first_frame),
        true,
    );
    row("drive attached", col(&|s| Some(s.drive)), false);
    row("disc listed and hashed", col(&|s| Some(s.read)), false);
    t.push('\n');
    t.push_str("| the disc | n | p50 (s) | p90 (s) | min–max (s) |\n|---|---:|---:|---:|---:|\n");
    for (name, v) in [
        (
            "drive attached → listing and sha256 on the serial log",
            col(&|s| Some(s.read - s.drive)),
        ),
        (
            "the guest's own `seconds=`",
            col(&|s| Some(s.guest_seconds)),
        ),
    ] {
        let (lo, hi) = min_max(&v);
        t.push_str(&format!(
            "| {name} | {} | {:.3} | {:.3} | {lo:.3}–{hi:.3} |\n",
            v.len(),
            median(&v),
            percentile(&v, 90.0)
        ));
    }
    t
}
