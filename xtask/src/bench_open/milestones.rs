//! One session of `cargo xtask bench open` and its milestones: the broker's log lines,
//! the X screen's first frame of the desktop, the desktop's report of the disc.

use super::pin;
use crate::disc::FileList;
use airlock_testkit::image::Image;
use airlock_testkit::process::{read_or_empty, Proc, Signal};
use airlock_testkit::terminal_config::airlock_open_command;
use airlock_testkit::x11::{Grabber, Xvfb};
use airlock_testkit::{Broker, SerialLog};
use anyhow::{ensure, Context, Result};
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The console's title bar (`ESC[44m`: VGA blue).
pub const TITLE_BLUE: [u8; 3] = [0x00, 0x00, 0xaa];
/// The console's "Press F (or Enter) to finish" line (`ESC[42m`: VGA green).
pub const FINISH_GREEN: [u8; 3] = [0x00, 0xaa, 0x00];
/// How many pixels of each a frame must have (the bars are 640x16 pixels of the 800x600
/// text console, unscaled).
pub const MIN_PIXELS: usize = 2000;
/// Per-channel tolerance (the viewer scales the 800x600 console to its window).
pub const TOLERANCE: u8 = 16;
/// How often the X screen is grabbed until the first frame.
pub const POLL: Duration = Duration::from_millis(10);
/// The target of issue 10: p50 from start to the first frame.
pub const TARGET_FIRST_FRAME_S: f64 = 1.0;

/// One session's milestones, in seconds from starting `airlock open`.
#[derive(Debug, Clone, Serialize)]
pub struct Sample {
    pub desktop: String,
    pub lease: f64,
    pub display: Option<f64>,
    pub first_frame: Option<f64>,
    pub drive: f64,
    pub read: f64,
    /// The guest's own `seconds=` (mount, list, read and hash).
    pub guest_seconds: f64,
}

/// Unix time now, in seconds.
fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// Seconds since 1970 of a UTC timestamp as the broker logs it
/// (`2026-12-02T21:01:26.350093Z`).
fn log_time(stamp: &str) -> Option<f64> {
    let t =
        time::OffsetDateTime::parse(stamp, &time::format_description::well_known::Rfc3339).ok()?;
    Some(t.unix_timestamp_nanos() as f64 / 1e9)
}

/// The broker log's lines written since byte `from` that contain `what` and
/// `desktop=DESK`: their times.
fn log_events(text: &str, what: &str, desktop: &str) -> Vec<f64> {
    let tag = format!("desktop={desktop}");
    text.lines()
        .filter(|l| l.contains(what) && l.split_whitespace().any(|w| w == tag))
        .filter_map(|l| l.split_whitespace().next().and_then(log_time))
        .collect()
}

/// Does this screen show the desktop's console?
pub fn shows_console(screen: &Image) -> bool {
    screen.count_close(TITLE_BLUE, TOLERANCE) >= MIN_PIXELS
        && screen.count_close(FINISH_GREEN, TOLERANCE) >= MIN_PIXELS
}

/// Grabs the screen every [`POLL`] until it shows the console (the Unix time of that
/// grab) or `stop` is set.
fn watch_screen(mut g: Grabber, stop: Arc<AtomicBool>) -> Result<Option<f64>> {
    while !stop.load(Ordering::Relaxed) {
        let at = unix_now();
        if shows_console(&g.grab()?) {
            return Ok(Some(at));
        }
        std::thread::sleep(POLL);
    }
    Ok(None)
}

/// One session: start `airlock open`, wait for the desktop's report of the disc, end it
/// with SIGTERM; the milestones.
#[allow(clippy::too_many_arguments)]
pub(super) fn session(
    broker: &Broker,
    airlock: &Path,
    terminal: &Path,
    disc: &FileList,
    desktops: &[String],
    xvfb: Option<&Xvfb>,
    terminal_cpus: Option<&airlock_core::CpuList>,
    log: &Path,
) -> Result<Sample> {
    let serials: BTreeMap<&str, (SerialLog, usize)> = desktops
        .iter()
        .map(|d| {
            let s = broker.serial_log(d);
            let mark = s.mark();
            (d.as_str(), (s, mark))
        })
        .collect();
    let log_from = std::fs::metadata(broker.log_path())?.len() as usize;
    let stop = Arc::new(AtomicBool::new(false));
    let screen = match xvfb {
        Some(x) => {
            let mut g = x.grabber()?;
            ensure!(
                !shows_console(&g.grab()?),
                "the screen shows a desktop before airlock open started"
            );
            let stop = stop.clone();
            Some(std::thread::spawn(move || watch_screen(g, stop)))
        }
        None => None,
    };
    let mut cmd = airlock_open_command(airlock, terminal, log)?;
    cmd.arg("--iso").arg(&disc.iso);
    match xvfb {
        Some(x) => {
            cmd.env("DISPLAY", x.display());
        }
        None => {
            cmd.arg("--no-display");
        }
    }
    let t0 = unix_now();
    let mut open = Proc::spawn(&mut cmd, "airlock open")?;
    if let Some(cpus) = terminal_cpus {
        pin(open.id(), cpus)?;
    }
    let result = measure(broker, disc, &serials, log_from, t0, &mut open, log);
    stop.store(true, Ordering::Relaxed);
    let frame = match screen {
        Some(h) => h
            .join()
            .map_err(|_| anyhow::anyhow!("the screen watcher panicked"))??,
        None => None,
    };
    open.signal(Signal::TERM);
    let status = open.wait_timeout(Duration::from_secs(60))?;
    let mut s = result?;
    ensure!(
        status.success(),
        "airlock open exited with {status}:\n{}",
        read_or_empty(log)
    );
    if xvfb.is_some() {
        s.first_frame = Some(frame.context("no frame of the desktop was seen")? - t0);
    }
    Ok(s)
}

/// From the start of `airlock open` (Unix time `t0`) to the desktop's report of the disc.
fn measure(
    broker: &Broker,
    disc: &FileList,
    serials: &BTreeMap<&str, (SerialLog, usize)>,
    log_from: usize,
    t0: f64,
    open: &mut Proc,
    log: &Path,
) -> Result<Sample> {
    let new_log = || {
        let text = read_or_empty(&broker.log_path());
        text.get(log_from..).unwrap_or_default().to_string()
    };
    // The desktop: the one whose lease was granted.
    let deadline = Instant::now() + Duration::from_secs(120);
    let desktop = loop {
        let text = new_log();
        if let Some(d) = text
            .lines()
            .filter(|l| l.contains("lease granted"))
            .find_map(|l| {
                l.split_whitespace()
                    .find_map(|w| w.strip_prefix("desktop="))
            })
        {
            break d.to_string();
        }
        ensure!(
            open.running(),
            "airlock open exited before a lease:\n{}",
            read_or_empty(log)
        );
        ensure!(
            Instant::now() < deadline,
            "no lease within 120 s:\n{}",
            read_or_empty(log)
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let (serial, mark) = serials
        .get(desktop.as_str())
        .with_context(|| format!("unknown desktop {desktop}"))?;
    let mut alive = || {
        ensure!(
            open.running(),
            "airlock open exited:\n{}",
            read_or_empty(log)
        );
        Ok(())
    };
    let report = serial.wait_cd_while(*mark, Duration::from_secs(600), &mut alive)?;
    let read_at = unix_now();
    report.check(disc)?;
    let text = new_log();
    let first = |what: &str| log_events(&text, what, &desktop).first().map(|t| t - t0);
    Ok(Sample {
        lease: first("lease granted").context("no `lease granted` in the broker's log")?,
        display: first("display client connected"),
        first_frame: None,
        drive: first("USB device attached")
            .context("no `USB device attached` in the broker's log")?,
        read: read_at - t0,
        guest_seconds: report.summary()?.seconds,
        desktop,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_times_are_unix_seconds() {
        assert_eq!(log_time("1970-01-01T00:00:00.000000Z"), Some(0.0));
        let t = log_time("2026-12-02T21:01:26.350093Z").unwrap();
        assert!((t - 1_796_245_286.350_093).abs() < 1e-6, "{t}");
        assert_eq!(log_time("2026-12-02 21:01:26"), None);
        let log = "2026-12-02T21:01:26.350093Z  INFO airlock_pool::engine::leases: lease granted lease=a desktop=desk-02 ms=2\n\
                   2026-12-02T21:01:27.000000Z  INFO x: lease granted desktop=desk-01\n";
        assert_eq!(log_events(log, "lease granted", "desk-02"), vec![t]);
    }

    #[test]
    fn the_console_is_recognised_by_its_two_bars() {
        let bar =
            |rgb: [u8; 3], n: usize| rgb.iter().copied().cycle().take(3 * n).collect::<Vec<u8>>();
        let mut rgb = bar([0x30, 0x30, 0x30], 10_000);
        assert!(!shows_console(&Image {
            width: 100,
            height: 100,
            rgb: rgb.clone()
        }));
        rgb[..3 * 3000].copy_from_slice(&bar([0, 0, 0xa8], 3000));
        assert!(!shows_console(&Image {
            width: 100,
            height: 100,
            rgb: rgb.clone()
        }));
        rgb[3 * 5000..3 * 8000].copy_from_slice(&bar([2, 0xac, 0], 3000));
        assert!(shows_console(&Image {
            width: 100,
            height: 100,
            rgb
        }));
    }
}
