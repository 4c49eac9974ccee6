//! The terminal guard on a real Linux USB stack: the terminal VM booted as a stock
//! terminal (`airlock.guard=0`: the storage modules, kmod and udev are there, nothing
//! refuses them). A hot-plugged USB CD drive gets `usb-storage` and `/dev/sr0`, `airlock
//! guard status` says "not guarded", and `airlock open` refuses to forward the drive
//! (the broker audits the alert). After `airlock guard install` a newly plugged drive
//! gets no driver and no block device, `modprobe isofs` fails, the status is "guarded",
//! and `airlock open` run by the clinician's unprivileged account (group `airlock`)
//! forwards the drive: the desktop reads the disc. `airlock guard uninstall` makes the
//! terminal unguarded again.

use airlock_e2e::{begin_or_skip, broker, ensure_says, open_in_terminal_vm, security_alerts};
use airlock_testkit::artifacts::terminal_vm;
use airlock_testkit::broker::TERMINAL_TOKEN;
use airlock_testkit::terminal_config::TerminalConfig;
use airlock_testkit::{block_on, TerminalOptions, TerminalVm};
use anyhow::{ensure, Result};
use std::path::Path;
use std::time::{Duration, Instant};

/// `airlock guard status` in the VM: its exit status and output.
fn status(term: &mut TerminalVm) -> Result<(i32, String)> {
    let (out, code) = term
        .shell
        .run("airlock guard status 2>&1", Duration::from_secs(60))?;
    Ok((code, out))
}

/// Polls `check` (a shell command) in the VM until it exits 0.
fn wait_until(term: &mut TerminalVm, what: &str, check: &str) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (out, code) = term.shell.run(check, Duration::from_secs(30))?;
        if code == 0 {
            return Ok(());
        }
        ensure!(Instant::now() < deadline, "{what}: not after 60 s ({out})");
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Writes `text` to `path` in the VM, line by line (the console shell runs one line at a
/// time; the lines hold no single quote).
fn write_file(term: &mut TerminalVm, path: &str, text: &str) -> Result<()> {
    ensure!(!text.contains('\''), "a single quote in {path}");
    let lines: Vec<String> = text.lines().map(|l| format!("'{l}'")).collect();
    term.shell
        .sh(&format!("printf '%s\\n' {} >{path}", lines.join(" ")))?;
    Ok(())
}

#[test]
fn the_terminal_guard_on_a_real_usb_stack() -> Result<()> {
    let run = begin_or_skip!();
    let (a, bins) = (&run.artifacts, &run.bins);
    let broker = broker(1)?;
    let mut term = TerminalVm::boot(
        terminal_vm()?,
        broker.port,
        &TerminalOptions {
            guard: false,
            ..TerminalOptions::guarded(None, bins.tcp_pump())
        },
    )?;
    let ready = term.wait_ready(Duration::from_secs(120))?;
    ensure!(ready.contains("guard=0"), "{ready}");

    // A stock terminal: the drive gets a kernel driver and a block device.
    term.qmp.plug_cd("cd0", Some(&a.small.iso), "iso0")?;
    wait_until(
        &mut term,
        "usb-storage bound and /dev/sr0",
        "ls /sys/bus/usb/drivers/usb-storage | grep -q : && test -b /dev/sr0",
    )?;
    let (code, out) = status(&mut term)?;
    ensure!(code == 8, "status exit {code} on a stock terminal:\n{out}");
    ensure_says(
        &out,
        &[
            "FAIL  module usb-storage: loaded",
            "FAIL  CD block devices: /dev/sr0 exist",
            "kernel driver usb-storage bound",
            "not guarded (",
        ],
    )?;

    // The clinician's account: its token file and the terminal configuration.
    term.shell.sh(&format!(
        "(umask 077; echo {TERMINAL_TOKEN} >/etc/airlock/token); chown clinic /etc/airlock/token"
    ))?;
    // The user is the login name of the account that runs `airlock open`.
    let config = TerminalConfig {
        user: None,
        ..TerminalConfig::new(&term.broker_url)
    };
    let toml = config.toml(Path::new("/etc/airlock/token"))?;
    write_file(&mut term, "/etc/airlock/terminal.toml", &toml)?;
    let open = "su clinic -c 'airlock open --config /etc/airlock/terminal.toml --no-display \
                --device auto --wait 0'";

    // `airlock open` refuses the unguarded terminal's drive; the broker has the alert.
    let (out, code) = term
        .shell
        .run(&format!("{open} 2>&1"), Duration::from_secs(60))?;
    ensure!(
        code == 8,
        "airlock open exit {code} on a stock terminal:\n{out}"
    );
    ensure_says(
        &out,
        &["this terminal is not guarded", "airlock guard install"],
    )?;
    let alert = security_alerts(&broker)?;
    ensure!(
        alert.len() == 1 && alert[0]["accepted"] == false,
        "{alert:?}"
    );
    ensure!(
        alert[0]["problems"].to_string().contains("/dev/sr0"),
        "{alert:?}"
    );

    // The guard. What was loaded stays loaded (install says so); once the drive is
    // unplugged the modules come out, and a newly plugged drive gets nothing.
    let (out, code) = term
        .shell
        .run("airlock guard install 2>&1", Duration::from_secs(60))?;
    ensure!(code == 0, "guard install exit {code}:\n{out}");
    ensure_says(
        &out,
        &["wrote /etc/modprobe.d/airlock-guard.conf", "modprobe -r"],
    )?;
    term.qmp.unplug("cd0")?;
    wait_until(&mut term, "/dev/sr0 gone", "! test -e /dev/sr0")?;
    term.shell
        .sh("/sbin/modprobe -r uas usb_storage sr_mod cdrom")?;
    term.qmp.plug_cd("cd1", Some(&a.small.iso), "iso1")?;
    wait_until(
        &mut term,
        "the new drive's usbfs node for group airlock",
        "ls -l /dev/bus/usb/*/* | grep -q ' airlock '",
    )?;
    std::thread::sleep(Duration::from_secs(2));
    let drivers = term.shell.sh("ls /sys/bus/usb/drivers")?;
    ensure!(
        !drivers.contains("usb-storage") && !drivers.contains("uas"),
        "a storage driver is registered after the guard: {drivers}"
    );
    let nodes = term.shell.sh("ls /dev/sr* /sys/block 2>/dev/null; true")?;
    ensure!(
        !nodes.contains("sr"),
        "a CD block device after the guard: {nodes}"
    );
    let (out, code) = term
        .shell
        .run("/sbin/modprobe isofs 2>&1", Duration::from_secs(30))?;
    ensure!(code != 0, "modprobe isofs succeeded after the guard: {out}");
    let (code, out) = status(&mut term)?;
    ensure!(
        code == 0 && out.ends_with("guarded\n"),
        "status exit {code}:\n{out}"
    );

    // The clinician's one action, unprivileged: the drive goes to the desktop.
    block_on(broker.wait_clean(1, Duration::from_secs(180)))?;
    let desktop = "desk-01";
    let serial = broker.serial_log(desktop);
    open_in_terminal_vm(&mut term, &serial, open, &a.small, |_| Ok(()))?;
    ensure!(
        security_alerts(&broker)?.len() == 1,
        "a guarded terminal raised an alert"
    );
    let up = Duration::from_secs(120);
    block_on(broker.wait_desktop(desktop, up, |d| d["state"] == "clean" && d["resets"] == 1))?;

    // Uninstall: unguarded again.
    let (out, code) = term
        .shell
        .run("airlock guard uninstall 2>&1", Duration::from_secs(60))?;
    ensure!(code == 0, "guard uninstall exit {code}:\n{out}");
    let (code, out) = status(&mut term)?;
    ensure!(code == 8, "status exit {code} after uninstall:\n{out}");
    ensure_says(&out, &["FAIL  module usb-storage: can load"])?;
    Ok(())
}
