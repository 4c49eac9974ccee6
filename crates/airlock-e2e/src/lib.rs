//! End-to-end tests of Airlock: terminal → broker → desktop, with real QEMU.
//!
//! Why a crate of its own: these tests span both binaries, the terminal's `airlock` and
//! the broker's `airlockd`, and the VMs around them (a "terminal VM" with a real Linux
//! USB stack, the broker's desktops). Cargo only hands a test the binaries of its own
//! package (`CARGO_BIN_EXE_*`), so a test in either binary's crate could not run the
//! other without reaching across packages anyway; and neither binary crate should depend
//! on the other just for tests. Both are built by the test kit
//! (`airlock_testkit::artifacts::host_binaries`, and statically for the terminal VM by
//! `cargo xtask terminal-guest`) and run as separate processes, exactly as deployed.
#![forbid(unsafe_code)]

use airlock_testkit::artifacts::{artifacts, host_binaries, Artifacts, HostBinaries};
use airlock_testkit::{Broker, BrokerConfig, Proc};
use anyhow::{Context as _, Result};
use std::time::Instant;

/// What every end-to-end test starts with.
pub struct Run {
    pub artifacts: &'static Artifacts,
    pub bins: &'static HostBinaries,
    pub started: Instant,
    pub tmp: tempfile::TempDir,
}

impl Run {
    /// The small sample disc's path, as a command-line argument.
    pub fn small_iso(&self) -> Result<String> {
        self.artifacts
            .small
            .iso
            .to_str()
            .map(str::to_owned)
            .ok_or_else(|| anyhow::anyhow!("the small ISO's path is not UTF-8"))
    }
}

/// The first line of a VM test: the [`Run`] of [`begin`], or `return Ok(())` from the
/// test when VM tests are skipped (`AIRLOCK_SKIP_VM_TESTS=1`, never in CI).
#[macro_export]
macro_rules! begin_or_skip {
    () => {
        match $crate::begin()? {
            Some(run) => run,
            None => return Ok(()),
        }
    };
}

/// The artifacts and binaries built, a clock started and a temporary directory; `None`
/// when VM tests are skipped.
pub fn begin() -> Result<Option<Run>> {
    if !airlock_testkit::tools::vm_test() {
        return Ok(None);
    }
    Ok(Some(Run {
        artifacts: artifacts()?,
        bins: host_binaries(false)?,
        started: Instant::now(),
        tmp: tempfile::tempdir()?,
    }))
}

/// A broker (the host build of `airlockd`) with `size` desktops of the demo guest, long
/// heartbeat timeouts (leases the tests make by hand outlive their slow steps), and every
/// process it starts stopped on Ctrl-C.
pub fn broker(size: usize) -> Result<Broker> {
    broker_with(|c| {
        c.size = size;
        c.heartbeat_timeout_s = 3600;
    })
}

/// A broker of the demo guest's default test configuration changed by `change`.
pub fn broker_with(change: impl FnOnce(&mut BrokerConfig)) -> Result<Broker> {
    airlock_testkit::process::stop_everything_on_signal();
    let mut config = BrokerConfig::new(&artifacts()?.guest);
    change(&mut config);
    Broker::start(&host_binaries(false)?.airlockd(), config)
}

/// `airlock open ARGS…` (the host build) with `config`, its output in `log`.
pub fn airlock_open(
    config: &std::path::Path,
    args: &[&str],
    log: &std::path::Path,
) -> Result<Proc> {
    airlock_open_with(config, args, log, |_| {})
}

/// [`airlock_open`], with `setup` changing the command first (its environment).
pub fn airlock_open_with(
    config: &std::path::Path,
    args: &[&str],
    log: &std::path::Path,
    setup: impl FnOnce(&mut std::process::Command),
) -> Result<Proc> {
    let mut cmd = airlock_testkit::terminal_config::airlock_open_command(
        &host_binaries(false)?.airlock(),
        config,
        log,
    )?;
    cmd.args(args);
    setup(&mut cmd);
    Proc::spawn(&mut cmd, "airlock open")
}

/// Runs `command` (an `airlock open … --no-display` in the terminal VM) in the background
/// until the desktop behind `serial` has read `disc` (its `AIRLOCK-CD` report checked),
/// calls `during`, then ends it with SIGTERM, which must end the session cleanly.
pub fn open_in_terminal_vm(
    term: &mut airlock_testkit::TerminalVm,
    serial: &airlock_testkit::SerialLog,
    command: &str,
    disc: &airlock_testkit::artifacts::FileList,
    during: impl FnOnce(&mut airlock_testkit::TerminalVm) -> Result<()>,
) -> Result<()> {
    let mark = serial.mark();
    term.start_background("open", command)?;
    let read = serial.wait_cd(mark, std::time::Duration::from_secs(90));
    let read = read.with_context(|| {
        let log = term.forward_log("open").unwrap_or_default();
        format!("airlock open: {log}")
    })?;
    read.check(disc)?;
    during(term)?;
    let (code, out) = term.stop_background("open", "TERM")?;
    println!("airlock open in the terminal VM (exit {code}):\n{out}");
    anyhow::ensure!(
        code == 0 && out.contains("Session ended: stopped by SIGTERM."),
        "airlock open did not end cleanly (exit {code}):\n{out}"
    );
    Ok(())
}

/// The details of the broker's `security_alert` audit records, oldest first.
pub fn security_alerts(broker: &Broker) -> Result<Vec<serde_json::Value>> {
    airlock_testkit::block_on(broker.audit())?
        .iter()
        .filter(|r| r["action"] == "security_alert")
        .map(|r| {
            let details = r["details"].as_str().context("a record without details")?;
            Ok(serde_json::from_str(details)?)
        })
        .collect()
}

/// Waits (up to `within`) for `airlock open` to exit; its exit code and output (`log`).
pub fn exit_of(
    open: &mut Proc,
    log: &std::path::Path,
    within: std::time::Duration,
) -> Result<(i32, String)> {
    let read = || airlock_testkit::process::read_or_empty(log);
    let st = open
        .wait_timeout(within)
        .with_context(|| format!("airlock open said:\n{}", read()))?;
    Ok((st.code().unwrap_or(-1), read()))
}

/// `airlock capture --config CONFIG ARGS…` (the host build) with `XDG_RUNTIME_DIR` set to
/// `runtime` (where `airlock open` left its session file): its exit code and output.
pub fn airlock_capture(
    config: &std::path::Path,
    runtime: &std::path::Path,
    args: &[&str],
) -> Result<(i32, String)> {
    let out = std::process::Command::new(host_binaries(false)?.airlock())
        .arg("capture")
        .arg("--config")
        .arg(config)
        .args(args)
        .env("XDG_RUNTIME_DIR", runtime)
        .env_remove("AIRLOCK_TOKEN")
        .stdin(std::process::Stdio::null())
        .output()
        .context("running airlock capture")?;
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    Ok((out.status.code().unwrap_or(-1), text))
}

/// Fails naming the first of `lines` that `out` (a command's output) does not contain.
pub fn ensure_says(out: &str, lines: &[&str]) -> Result<()> {
    match lines.iter().find(|l| !out.contains(*l)) {
        Some(missing) => anyhow::bail!("no {missing:?} in:\n{out}"),
        None => Ok(()),
    }
}

/// The details of the broker's `usb_stream_opened` audit records, oldest first.
pub fn usb_streams(broker: &Broker) -> Result<Vec<String>> {
    let audit = airlock_testkit::block_on(broker.audit())?;
    Ok(audit
        .iter()
        .filter(|r| r["action"] == "usb_stream_opened")
        .map(|r| r["details"].as_str().unwrap_or_default().to_string())
        .collect())
}

/// The details of the broker's one `usb_stream_opened` audit record (an error unless
/// exactly one stream was opened).
pub fn the_one_usb_stream(broker: &Broker) -> Result<String> {
    let opened = usb_streams(broker)?;
    anyhow::ensure!(opened.len() == 1, "usb streams opened: {opened:?}");
    Ok(opened[0].clone())
}
