//! `airlock open` as the clinician sees it: the real `remote-viewer` under Xvfb shows the
//! leased desktop over the broker's TLS display, with the disc's listing; the X screen
//! holds exactly the desktop's framebuffer (compared with a QMP screendump of the same
//! desktop); the connection file never touches the disk nor the viewer's command line;
//! closing the viewer releases the desktop, which is reset, and the command exits 0; and
//! the desktop's own "Finish" (the guest powers off) ends the lease `signed_out`, takes
//! the viewer away and ends `airlock open` with 0.

use airlock_e2e::{airlock_open, airlock_open_with, begin_or_skip, broker_with};
use airlock_testkit::process::{cmdline, read_or_empty, Signal};
use airlock_testkit::terminal_config::TerminalConfig;
use airlock_testkit::x11::{Xvfb, X_TOOLS};
use airlock_testkit::{block_on, tls};
use anyhow::{ensure, Context, Result};
use std::path::Path;
use std::time::{Duration, Instant};

const UP: Duration = Duration::from_secs(240);

/// The `remote-viewer` that `airlock open` (process `pid`) started.
fn viewer_of(pid: u32) -> Result<u32> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .find(|p| cmdline(*p).contains("remote-viewer"))
        .context("no remote-viewer child of airlock open")
}

/// Files under `dir` whose name ends in `.vv`.
fn vv_files(dir: &Path) -> Vec<String> {
    let mut found = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                found.extend(vv_files(&p));
            } else if p.extension().is_some_and(|x| x == "vv") {
                found.push(p.display().to_string());
            }
        }
    }
    found
}

/// Waits until the X screen shows the desktop's framebuffer (a QMP screendump), pixel for
/// pixel within a small tolerance for the display's encoding; where it is. On failure
/// both images, `airlock open`'s log and the broker's are kept under
/// `build/test-output/`.
fn desktop_on_screen(
    x: &Xvfb,
    tmp: &Path,
    broker: &airlock_testkit::Broker,
    log: &Path,
) -> Result<(usize, usize)> {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let fb = broker.screendump("desk-01")?;
        let screen = x.screen(&tmp.join("screen.ppm"))?;
        if let Some(at) = screen.find(&fb, 8, 0.98) {
            ensure!(fb.colours() > 2, "the desktop's screen is blank");
            return Ok(at);
        }
        if Instant::now() >= deadline {
            // Keep the two images and the logs for a person to look at.
            let keep = airlock_testkit::artifacts::build_dir().join("test-output");
            std::fs::create_dir_all(&keep)?;
            std::fs::copy(
                broker.screendump_path("desk-01"),
                keep.join("open_viewer-desktop.ppm"),
            )?;
            std::fs::copy(tmp.join("screen.ppm"), keep.join("open_viewer-screen.ppm"))?;
            std::fs::copy(log, keep.join("open_viewer-open.log"))?;
            std::fs::copy(broker.log_path(), keep.join("open_viewer-airlockd.log"))?;
            anyhow::bail!(
                "the viewer never showed the desktop's framebuffer ({}x{}; both images and the logs in {}); airlock open said:\n{}",
                fb.width,
                fb.height,
                keep.display(),
                read_or_empty(log)
            );
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

#[test]
fn the_desktop_appears_in_remote_viewer_over_tls_and_closing_it_ends_the_session() -> Result<()> {
    let run = begin_or_skip!();
    airlock_testkit::tools::require(X_TOOLS)?;
    let site = tls::site_ca(run.tmp.path(), "site")?;
    let broker = broker_with(|c| {
        c.size = 1;
        c.tls = Some(site.clone());
        c.log_filter = "info,airlock_qemu=debug,airlock_pool=debug".into();
    })?;
    ensure!(broker.url.starts_with("https://"), "{}", broker.url);
    block_on(broker.wait_clean(1, UP))?;
    // A terminal that does not trust the site CA is told so (configuration, code 3).
    let untrusting = run.tmp.path().join("untrusting");
    std::fs::create_dir_all(&untrusting)?;
    let config = TerminalConfig::new(&broker.url).write(&untrusting)?;
    let iso = run.small_iso()?;
    let log = untrusting.join("open.log");
    let mut open = airlock_open(&config, &["--iso", &iso, "--no-display"], &log)?;
    let status = open.wait_timeout(Duration::from_secs(30))?;
    let out = read_or_empty(&log);
    ensure!(status.code() == Some(3), "exit {status}:\n{out}");
    ensure!(
        out.contains("does not present a certificate this terminal trusts")
            && out.contains("broker.ca_file"),
        "{out}"
    );

    let x = Xvfb::start(1280, 800)?;
    // The launcher and the viewer get a home and a temporary directory of their own:
    // nothing may leave a connection file there.
    let home = run.tmp.path().join("home");
    let tmpdir = run.tmp.path().join("tmp");
    std::fs::create_dir_all(&home)?;
    std::fs::create_dir_all(&tmpdir)?;
    let config = TerminalConfig {
        ca_file: Some(site.ca.clone()),
        display_mode: Some("window".into()),
        ..TerminalConfig::new(&broker.url)
    }
    .write(run.tmp.path())?;
    let vv_before = vv_files(Path::new("/tmp"));
    let log = run.tmp.path().join("open.log");
    let serial = broker.serial_log("desk-01");
    let mark = serial.mark();
    let iso = run.small_iso()?;
    let mut open = airlock_open_with(&config, &["--iso", &iso], &log, |cmd| {
        cmd.env("DISPLAY", x.display())
            .env("HOME", &home)
            .env("TMPDIR", &tmpdir)
            // The viewer's channel log goes to open.log, which a failure keeps.
            .env("SPICE_DEBUG", "1");
    })?;
    serial
        .wait_cd(mark, Duration::from_secs(90))
        .with_context(|| format!("airlock open said:\n{}", read_or_empty(&log)))?
        .check(&run.artifacts.small)?;

    // The X screen shows the desktop's framebuffer, pixel for pixel (within a small
    // tolerance for the display's encoding), once the viewer has drawn it.
    let found = desktop_on_screen(&x, run.tmp.path(), &broker, &log)?;
    x.screenshot(&run.tmp.path().join("viewer.png"))?;
    println!("the desktop is on the X screen at {found:?}");

    // The viewer got its connection file on stdin: no file, no password in its arguments.
    let viewer = viewer_of(open.id())?;
    let args = cmdline(viewer);
    ensure!(args.trim_end().ends_with(" -"), "viewer arguments: {args}");
    ensure!(!args.contains("password"), "viewer arguments: {args}");
    let mut files = vv_files(&home);
    files.extend(vv_files(&tmpdir));
    files.extend(
        vv_files(Path::new("/tmp"))
            .into_iter()
            .filter(|f| !vv_before.contains(f)),
    );
    ensure!(files.is_empty(), "connection files on disk: {files:?}");

    // Closing the viewer ends the session: released, reset, exit 0.
    airlock_testkit::process::signal_pid(viewer, Signal::TERM);
    let status = open
        .wait_timeout(Duration::from_secs(30))
        .with_context(|| read_or_empty(&log))?;
    let out = read_or_empty(&log);
    ensure!(status.code() == Some(0), "exit {status}:\n{out}");
    ensure!(
        out.contains("Session ended: the desktop was closed."),
        "{out}"
    );
    block_on(broker.wait_desktop("desk-01", UP, |d| d["state"] == "clean" && d["resets"] == 1))?;
    airlock_testkit::audit::check_invariants(&block_on(broker.audit())?)?;
    Ok(())
}

/// The clinician presses the desktop's "Finish" key (the guest powers itself off): the
/// lease ends `signed_out`, the viewer goes away, `airlock open` exits 0 and the desktop
/// is reset.
#[test]
fn finish_in_the_desktop_closes_the_viewer_and_ends_airlock_open() -> Result<()> {
    let run = begin_or_skip!();
    airlock_testkit::tools::require(X_TOOLS)?;
    let broker = broker_with(|c| c.size = 1)?;
    block_on(broker.wait_clean(1, UP))?;
    let x = Xvfb::start(1024, 768)?;
    let config = TerminalConfig {
        display_mode: Some("window".into()),
        ..TerminalConfig::new(&broker.url)
    }
    .write(run.tmp.path())?;
    let log = run.tmp.path().join("open.log");
    let iso = run.small_iso()?;
    let mut open = airlock_open_with(&config, &["--iso", &iso], &log, |cmd| {
        cmd.env("DISPLAY", x.display()).env("SPICE_DEBUG", "1");
    })?;
    desktop_on_screen(&x, run.tmp.path(), &broker, &log)?;
    let viewer = viewer_of(open.id())?;

    // "Press F (or Enter) to finish": the key as the desktop's keyboard gets it.
    broker.test_qmp("desk-01")?.cmd(
        "send-key",
        serde_json::json!({"keys": [{"type": "qcode", "data": "f"}]}),
    )?;
    let status = open
        .wait_timeout(Duration::from_secs(60))
        .with_context(|| read_or_empty(&log))?;
    let out = read_or_empty(&log);
    ensure!(status.code() == Some(0), "exit {status}:\n{out}");
    ensure!(out.contains("Session ended:"), "{out}");
    ensure!(
        !Path::new(&format!("/proc/{viewer}")).exists()
            || read_or_empty(Path::new(&format!("/proc/{viewer}/stat"))).contains(") Z"),
        "the viewer still runs after Finish"
    );
    block_on(broker.wait_desktop("desk-01", UP, |d| d["state"] == "clean" && d["resets"] == 1))?;
    let audit = block_on(broker.audit())?;
    airlock_testkit::audit::check_invariants(&audit)?;
    let ended = audit
        .iter()
        .find(|r| r["action"] == "lease_ended")
        .context("no lease_ended record")?;
    ensure!(
        ended["details"]
            .as_str()
            .unwrap_or_default()
            .contains("signed_out"),
        "{ended}"
    );
    Ok(())
}
