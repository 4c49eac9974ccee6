//! `airlock open` checks the terminal guard before it forwards a real drive: on an
//! unguarded terminal (a terminal tree in a directory, `--guard-root`) it refuses with
//! exit 8, the reason and the fix, and the broker's audit log has the security alert; a
//! site that accepts the risk (`drive.allow_unguarded`) is audited too and goes on to
//! the drive. A disc image (`--iso`) is not checked: nothing reaches the terminal's
//! kernel.

use airlock_e2e::{
    airlock_open, begin_or_skip, broker_with, ensure_says, exit_of, security_alerts,
};
use airlock_testkit::block_on;
use airlock_testkit::fake_root::FakeTerminal;
use airlock_testkit::terminal_config::TerminalConfig;
use anyhow::{ensure, Context, Result};
use std::path::Path;
use std::time::Duration;

/// Runs `airlock open` to its end; its exit code and output.
fn open(config: &Path, args: &[&str], log: &Path) -> Result<(i32, String)> {
    exit_of(
        &mut airlock_open(config, args, log)?,
        log,
        Duration::from_secs(60),
    )
}

#[test]
fn open_refuses_a_real_drive_on_an_unguarded_terminal_and_the_broker_audits_it() -> Result<()> {
    let run = begin_or_skip!();
    let broker = broker_with(|c| c.size = 1)?;
    let terminal = FakeTerminal::unguarded()?;
    terminal.plug_bound_drive()?;
    let root = terminal.arg();
    let args = [
        "--no-display",
        "--device",
        "auto",
        "--guard-root",
        root.as_str(),
    ];

    let config = TerminalConfig::new(&broker.url).write(run.tmp.path())?;
    let log = run.tmp.path().join("open-unguarded.log");
    let (code, out) = open(&config, &args, &log)?;
    ensure!(code == 8, "exit {code}, expected 8 (not guarded):\n{out}");
    ensure_says(
        &out,
        &[
            "this terminal is not guarded, so its drive is not forwarded",
            "module usb-storage: can load",
            "airlock guard install",
            "drive.allow_unguarded",
        ],
    )?;
    ensure!(
        !out.contains("Checking the drive"),
        "it went on to the drive:\n{out}"
    );
    let a = security_alerts(&broker)?;
    ensure!(a.len() == 1, "{a:?}");
    ensure!(
        a[0]["kind"] == "terminal_unguarded" && a[0]["accepted"] == false,
        "{a:?}"
    );
    let problems = a[0]["problems"].to_string();
    for p in [
        "CD block devices: /dev/sr0",
        "kernel driver usb-storage bound",
    ] {
        ensure!(problems.contains(p), "{p:?} not in the alert: {problems}");
    }
    ensure!(
        block_on(broker.desktops())?
            .iter()
            .all(|d| d["state"] != "leased"),
        "a desktop was leased for a refused drive"
    );

    // The site accepts the risk: audited as accepted, then on to the drive (there is
    // none on this host: the drive's own error, code 7).
    let config = TerminalConfig {
        allow_unguarded: true,
        ..TerminalConfig::new(&broker.url)
    }
    .write(run.tmp.path())?;
    let log = run.tmp.path().join("open-accepted.log");
    let (code, out) = open(&config, &args, &log)?;
    ensure!(
        out.contains("Warning: this terminal is not guarded"),
        "{out}"
    );
    ensure!(out.contains("Checking the drive"), "{out}");
    ensure!(
        code == 7,
        "exit {code}, expected 7 (no drive on this host):\n{out}"
    );
    let a = security_alerts(&broker)?;
    ensure!(a.len() == 2 && a[1]["accepted"] == true, "{a:?}");

    // A disc image is not the terminal's drive: no check, no alert.
    let log = run.tmp.path().join("open-iso.log");
    let missing = run.tmp.path().join("none.iso");
    let missing = missing.to_str().context("path")?;
    let iso_args = [
        "--no-display",
        "--iso",
        missing,
        "--guard-root",
        root.as_str(),
    ];
    let (code, out) = open(&config, &iso_args, &log)?;
    ensure!(
        code == 7 && out.contains("cannot open disc image"),
        "{code}: {out}"
    );
    ensure!(security_alerts(&broker)?.len() == 2);
    Ok(())
}
