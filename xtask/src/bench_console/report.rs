//! The console benchmark's write-up: the progress line of a block, the table printed at
//! the end, and the "Console open vs closed (issue 13)" section of `docs/benchmarks.md`
//! (only that section is replaced; it is added at the end the first time).

use super::{Block, Results};
use crate::bench_broker::stats::{median, percentile};
use crate::util;
use anyhow::{Context, Result};
use std::fmt::Write as _;
use std::path::Path;

/// The section's heading in `docs/benchmarks.md`.
const HEADING: &str = "## Console open vs closed (issue 13)";

fn condition(open: bool) -> &'static str {
    if open {
        "open"
    } else {
        "closed"
    }
}

/// One line per block, as the run goes.
pub fn block_line(b: &Block, total: usize) -> String {
    let mut s = format!(
        "block {:>2}/{total} console {:<6}: {} acquires, p50 {:.1} ms, p99 {:.1} ms (load {})",
        b.index + 1,
        condition(b.console_open),
        b.samples_ms.len(),
        percentile(&b.samples_ms, 50.0),
        percentile(&b.samples_ms, 99.0),
        b.load_after
    );
    if let Some(c) = &b.console {
        if !c.audit_loads_ms.is_empty() {
            let _ = write!(
                s,
                "; audit page loaded {}× (median {:.0} ms)",
                c.audit_loads_ms.len(),
                median(&c.audit_loads_ms),
            );
        }
        let _ = write!(
            s,
            "; pool table refreshed {}× in {:.0} s",
            c.pool_refreshes, c.open_s
        );
    }
    s
}

fn verdict(r: &Results) -> &'static str {
    if r.within_1_20 {
        "within 1.20"
    } else {
        "NOT within 1.20"
    }
}

/// The console's activity over all open blocks.
struct Activity {
    audit_loads: usize,
    audit_load_median_ms: f64,
    pool_refreshes: u64,
    open_s: f64,
    /// The oldest "last refresh" of the pool table at a block's end, ms.
    oldest_refresh_ms: f64,
}

fn console_activity(r: &Results) -> Activity {
    let open: Vec<_> = r.blocks.iter().filter_map(|b| b.console.as_ref()).collect();
    let loads: Vec<f64> = open
        .iter()
        .flat_map(|c| c.audit_loads_ms.iter().copied())
        .collect();
    Activity {
        audit_loads: loads.len(),
        // 0 with the pool page only (no loads).
        audit_load_median_ms: if loads.is_empty() {
            0.0
        } else {
            median(&loads)
        },
        pool_refreshes: open.iter().map(|c| c.pool_refreshes).sum(),
        open_s: open.iter().map(|c| c.open_s).sum(),
        oldest_refresh_ms: open
            .iter()
            .map(|c| c.pool_last_refresh_age_ms)
            .fold(0.0, f64::max),
    }
}

/// The open blocks' samples split by whether their request was sent while the audit
/// page was loading (from its navigation's start to its load): (count, p99) during,
/// (count, p99) outside.
fn during_audit_loads(r: &Results) -> ((usize, f64), (usize, f64)) {
    let mut during = Vec::new();
    let mut outside = Vec::new();
    for b in r.blocks.iter().filter(|b| b.console_open) {
        let Some(c) = &b.console else { continue };
        for (at, ms) in b.samples_at.iter().zip(&b.samples_ms) {
            let end = at + ms;
            let hit = c
                .audit_loads_at
                .iter()
                .zip(&c.audit_loads_ms)
                .any(|(s, d)| *at < s + d && end > *s);
            if hit {
                during.push(*ms);
            } else {
                outside.push(*ms);
            }
        }
    }
    (
        (during.len(), percentile(&during, 99.0)),
        (outside.len(), percentile(&outside, 99.0)),
    )
}

/// The table printed at the end of a run.
pub fn render(r: &Results) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "Acquire latency, console closed vs open ({} audit records, pool of {}, {} mode)",
        r.records_verified, r.plan.pool, r.plan.mode
    );
    let _ = writeln!(
        s,
        "{:<8} {:>7} {:>8} {:>9} {:>9} {:>9}",
        "console", "blocks", "samples", "p50 ms", "p99 ms", "max ms"
    );
    for (name, c) in [("closed", &r.closed), ("open", &r.open)] {
        let _ = writeln!(
            s,
            "{name:<8} {:>7} {:>8} {:>9.1} {:>9.1} {:>9.1}",
            r.plan.blocks_per_condition, c.samples, c.p50_ms, c.p99_ms, c.max_ms
        );
    }
    let _ = writeln!(
        s,
        "p99 open / closed: {:.2} ({}; 95 % bootstrap interval {:.2}–{:.2}); p50 open / closed: {:.2}",
        r.ratio_p99,
        verdict(r),
        r.ratio_p99_ci95.0,
        r.ratio_p99_ci95.1,
        r.ratio_p50
    );
    let a = console_activity(r);
    let _ = writeln!(
        s,
        "console while open ({:.0} s): audit page loaded {}× (median {:.0} ms in the browser), \
         pool table refreshed {}× (at most {:.0} ms since its last refresh at a block's end)",
        a.open_s, a.audit_loads, a.audit_load_median_ms, a.pool_refreshes, a.oldest_refresh_ms
    );
    if a.audit_loads > 0 {
        let ((nd, pd), (no, po)) = during_audit_loads(r);
        let _ = writeln!(
            s,
            "open samples sent while the audit page loaded: {nd}, p99 {pd:.1} ms; the others: {no}, p99 {po:.1} ms"
        );
    }
    let _ = writeln!(s, "the broker's own time per request (its request log):");
    s.push_str(&server_table(r, false));
    s
}

/// The broker's time per request for the acquire, the release and the console's routes
/// (`markdown`: as a table for the doc).
fn server_table(r: &Results, markdown: bool) -> String {
    let mut s = String::new();
    let shown = r
        .server
        .iter()
        .filter(|t| t.route.starts_with("/console") || t.route.starts_with("/v1/leases"));
    if markdown {
        s.push_str("| Request | n | p50 (ms) | p99 (ms) | Max (ms) |\n|---|---:|---:|---:|---:|\n");
    }
    for t in shown {
        let name = format!("{} {}", t.method, t.route);
        let _ = if markdown {
            writeln!(
                s,
                "| `{name}` | {} | {:.2} | {:.2} | {:.2} |",
                t.requests, t.p50_ms, t.p99_ms, t.max_ms
            )
        } else {
            writeln!(
                s,
                "  {name:<36} {:>6} p50 {:>7.2} ms, p99 {:>7.2} ms, max {:>7.2} ms",
                t.requests, t.p50_ms, t.p99_ms, t.max_ms
            )
        };
    }
    s
}

/// Writes (or replaces) the section in `doc`.
pub fn write_doc(doc: &Path, r: &Results, json: &Path) -> Result<()> {
    let old = std::fs::read_to_string(doc).with_context(|| format!("reading {}", doc.display()))?;
    let section = section(r, json);
    let new = match old.find(HEADING) {
        Some(start) => {
            let rest = &old[start + HEADING.len()..];
            let end = rest
                .find("\n## ")
                .map_or(old.len(), |i| start + HEADING.len() + i + 1);
            let gap = if end < old.len() { "\n" } else { "" };
            format!("{}{section}{gap}{}", &old[..start], &old[end..])
        }
        None => format!("{}\n\n{section}", old.trim_end()),
    };
    util::write_atomic(doc, new.as_bytes())
}

fn section(r: &Results, json: &Path) -> String {
    let p = &r.plan;
    let mut s = String::new();
    let _ = writeln!(s, "{HEADING}\n");
    let _ = writeln!(
        s,
        "`{}` ({} mode), run {} on {} ({} cores, shared with other sessions; load average \
         before {}, after {}); {:.0} s in all.\n",
        r.command,
        p.mode,
        r.started_utc,
        r.machine.cpu,
        r.machine.cores,
        r.machine.load_before,
        r.machine.load_after,
        r.duration_s
    );
    let _ = writeln!(
        s,
        "The acceptance of issue 13 asks that, with 1,000,000 audit records in the store, an \
         open console page raise the broker's acquire p99 by at most 20 % over a run without \
         it.\n"
    );
    let _ = writeln!(
        s,
        "- *Store*: a fresh database filled with {} valid, chained audit records \
         (`airlock_testkit::audit_fill`, {:.1} s) before the broker's first start; the \
         measurement began once the chain monitor's first pass had verified all {} records \
         ({:.0} s after the start, including the pool's boot).",
        p.records, r.fill_s, r.records_verified, r.chain_first_pass_s
    );
    let _ = writeln!(
        s,
        "- *Acquire latency*: `POST /v1/leases` until the complete answer is read, one client \
         on a keep-alive connection (loopback, no TLS); pool of {} demo-guest desktops (TCG, \
         `{}`, {} MiB). Each sample on an all-clean, idle pool, the lease released at once and \
         the next sample after its reset; {} warm-up samples dropped.",
        p.pool, p.reset, p.memory_mib, p.warmup
    );
    let _ = match p.audit_reload_s {
        Some(reload) => writeln!(
            s,
            "- *Console open*: headless chromium logged in, the pool page open (its table \
             refreshes itself every second) and the audit page (chain status, newest 50 \
             records; each view audited) reloaded every {reload:.0} s in a second tab. \
             *Closed*: the same chromium, both tabs on `about:blank`."
        ),
        None => writeln!(
            s,
            "- *Console open*: headless chromium logged in, the pool page open (its table \
             refreshes itself every second): the acceptance's \"open console page\" \
             (`--pool-page-only`; the audit page is not loaded). *Closed*: the same \
             chromium on `about:blank`."
        ),
    };
    let _ = writeln!(
        s,
        "- *Interleaved*: {} blocks of {} acquires per condition, in the order closed, open, \
         open, closed, …; percentiles over all samples of a condition (nearest rank).\n",
        p.blocks_per_condition, p.samples_per_block
    );
    let _ = writeln!(s, "| Console | Samples | p50 (ms) | p99 (ms) | Max (ms) |");
    let _ = writeln!(s, "|---|---:|---:|---:|---:|");
    for (name, c) in [("closed", &r.closed), ("open", &r.open)] {
        let _ = writeln!(
            s,
            "| {name} | {} | {:.1} | {:.1} | {:.1} |",
            c.samples, c.p50_ms, c.p99_ms, c.max_ms
        );
    }
    let _ = writeln!(
        s,
        "\n**p99 open / closed: {:.2}** ({} of the acceptance); p50 open / closed: {:.2}. \
         The p99 of {} samples is their {}th largest, so machine noise moves it: resampling \
         each condition's samples ({} bootstrap resamples) puts the ratio between {:.2} and \
         {:.2} (95 %).\n",
        r.ratio_p99,
        verdict(r),
        r.ratio_p50,
        r.open.samples,
        r.open.samples - (0.99 * r.open.samples as f64).ceil() as usize + 1,
        super::BOOTSTRAP,
        r.ratio_p99_ci95.0,
        r.ratio_p99_ci95.1
    );
    let a = console_activity(r);
    let _ = if a.audit_loads > 0 {
        writeln!(
            s,
            "While open ({:.0} s in all), the audit page was loaded {} times (median {:.0} ms \
             in the browser) and the pool table refreshed itself {} times (at most {:.0} ms \
             since its last refresh at the end of an open block).\n",
            a.open_s, a.audit_loads, a.audit_load_median_ms, a.pool_refreshes, a.oldest_refresh_ms
        )
    } else {
        writeln!(
            s,
            "While open ({:.0} s in all), the pool table refreshed itself {} times (at most \
             {:.0} ms since its last refresh at the end of an open block).\n",
            a.open_s, a.pool_refreshes, a.oldest_refresh_ms
        )
    };
    if a.audit_loads > 0 {
        let ((nd, pd), (no, po)) = during_audit_loads(r);
        let _ = writeln!(
            s,
            "Of the open blocks' samples, {nd} overlapped an audit page load (p99 {pd:.1} ms) \
             and {no} did not (p99 {po:.1} ms).\n"
        );
    }
    let _ = writeln!(
        s,
        "The browser runs on the broker's machine here (2 \
         cores, also running the desktops' QEMU), so its own rendering competes with the \
         broker for CPU; at a site it runs on the officer's PC. Here it runs under \
         `SCHED_IDLE` at nice 19, every process it starts included.\n"
    );
    let _ = writeln!(
        s,
        "What the console costs the broker itself, from the broker's own request log \
         (`airlockd=debug`: route pattern and milliseconds of every answer) over the whole \
         run, beside the acquire and release it serves:\n"
    );
    s.push_str(&server_table(r, true));
    s.push('\n');
    let _ = writeln!(s, "Per block (p50 / p99, ms):\n");
    let _ = writeln!(s, "| Block | Console | p50 | p99 |");
    let _ = writeln!(s, "|---:|---|---:|---:|");
    for b in &r.blocks {
        let _ = writeln!(
            s,
            "| {} | {} | {:.1} | {:.1} |",
            b.index + 1,
            condition(b.console_open),
            percentile(&b.samples_ms, 50.0),
            percentile(&b.samples_ms, 99.0)
        );
    }
    let _ = writeln!(s, "\nRaw samples: `{}`.", json.display());
    s
}
