//! The "real Linux USB stack" path: a terminal VM (QEMU, TCG) whose xHCI
//! controller carries a USB CD drive (usb-bot + scsi-cd) and a USB stick
//! (usb-storage) runs the static `airlock` binary; it finds the drive with
//! nusb, checks it by INQUIRY and forwards it through the broker to a leased
//! desktop, which reads the disc. The stick is refused. The terminal VM is
//! guarded (`airlock guard install` at boot: its storage modules never load)
//! and reaches only the broker (slirp, `restrict=on`, one guestfwd).

use airlock_e2e::{begin_or_skip, broker, open_in_terminal_vm, usb_streams};
use airlock_testkit::artifacts::{terminal_vm, TERMINAL_FORBIDDEN_MODULES};
use airlock_testkit::broker::TERMINAL_TOKEN;
use airlock_testkit::{block_on, TerminalOptions, TerminalVm};
use anyhow::{ensure, Context, Result};
use std::time::Duration;

/// The guard, observed from inside the terminal VM: no block device for any
/// USB storage, no storage driver registered or loaded, and nothing asked the
/// kernel to load one successfully.
fn assert_guarded(term: &mut TerminalVm, when: &str) -> Result<()> {
    let nodes = term
        .shell
        .sh("ls -d /dev/sr* /dev/sd* /sys/block/sr* /sys/block/sd* 2>/dev/null; true")?;
    ensure!(
        nodes.trim().is_empty(),
        "{when}: the terminal VM has storage nodes: {nodes}"
    );
    let drivers = term.shell.sh("ls /sys/bus/usb/drivers")?;
    for d in ["usb-storage", "uas"] {
        ensure!(
            !drivers.split_whitespace().any(|x| x == d),
            "{when}: driver {d} is registered in the terminal VM: {drivers}"
        );
    }
    let lsmod = term.shell.sh("cat /proc/modules")?;
    for m in TERMINAL_FORBIDDEN_MODULES {
        ensure!(
            !lsmod.lines().any(|l| l.split(' ').next() == Some(m)),
            "{when}: module {m} is loaded in the terminal VM"
        );
    }
    Ok(())
}

#[test]
fn terminal_vm_forwards_its_usb_cd_drive_and_refuses_a_stick() -> Result<()> {
    let run = begin_or_skip!();
    let (a, bins, t0, tmp) = (run.artifacts, run.bins, run.started, &run.tmp);
    let stick = tmp.path().join("stick.img");
    let mut img = b"AIRLOCK-E2E-USB-STICK\n".to_vec();
    img.resize(8 << 20, 0);
    std::fs::write(&stick, &img)?;

    let broker = broker(1)?;
    let mut term = TerminalVm::boot(
        terminal_vm()?,
        broker.port,
        &TerminalOptions {
            stick: Some(stick.clone()),
            ..TerminalOptions::guarded(Some(a.small.iso.clone()), bins.tcp_pump())
        },
    )?;
    // The READY line carries `airlock --version` run inside the VM: the
    // static binary runs on busybox without a libc.
    let ready = term.wait_ready(Duration::from_secs(90))?;
    ensure!(
        ready.contains("airlock=airlock "),
        "airlock does not run in the terminal VM: {ready}"
    );
    assert_guarded(&mut term, "at boot")?;

    // Both cold-plugged devices are on the bus (no `attached` needed), the
    // drive is accepted by INQUIRY and the stick refused.
    term.wait_usb_devices(2, Duration::from_secs(30))?;
    let list = term.shell.sh("airlock usb list 2>&1")?;
    println!("airlock usb list:\n{list}");
    ensure!(
        list.contains("OK, can be forwarded"),
        "the CD drive is not forwardable: {list}"
    );
    ensure!(
        list.contains("REFUSED") && list.contains("type 0x00"),
        "the stick is not refused by its peripheral type: {list}"
    );
    assert_guarded(&mut term, "after airlock usb list")?;

    block_on(broker.wait_clean(1, Duration::from_secs(180)))?;
    let lease = block_on(broker.acquire_ok("dr-terminal-vm"))?;
    let lease_id = lease.lease_id.to_string();
    let serial = broker.serial_log(lease.desktop_id.as_str());

    // Drive and stick plugged in: `--device auto` forwards the one whose INQUIRY says
    // CD/DVD, through the broker; the desktop reads it.
    let mark = serial.mark();
    term.start_forward("fwd", &lease_id, "auto")?;
    let report = serial
        .wait_cd(mark, Duration::from_secs(60))
        .with_context(|| {
            format!(
                "forward log: {}",
                term.forward_log("fwd").unwrap_or_default()
            )
        })?;
    report.check(&a.small)?;
    let s = report.summary.as_ref().context("summary")?;
    println!(
        "desktop read the terminal VM's drive: files={} bytes={} sha256={} seconds={}",
        s.files, s.bytes, s.sha256, s.seconds
    );
    assert_guarded(&mut term, "while forwarding")?;
    let log = term.stop_forward("fwd")?;
    println!("forward log:\n{log}");
    ensure!(
        log.contains("Session ended"),
        "the forwarder did not end cleanly: {log}"
    );
    // The desktop's Linux reads the disc with allowed commands only.
    ensure!(
        !log.contains("refused a SCSI command"),
        "the command filter refused a command of a reading desktop: {log}"
    );
    serial.wait_removed(report.end, Duration::from_secs(30))?;

    // The clinician's one action on this terminal: `airlock open --no-display --device
    // auto` leases the (released and reset) desktop itself, heartbeats and forwards the
    // drive; SIGTERM ends it cleanly and releases the desktop.
    ensure!(block_on(broker.release(TERMINAL_TOKEN, &lease.lease_id))? == 202);
    let desktop = lease.desktop_id.as_str();
    let up = Duration::from_secs(120);
    block_on(broker.wait_desktop(desktop, up, |d| d["state"] == "clean" && d["resets"] == 1))?;
    term.shell
        .sh(&format!("umask 077; echo {TERMINAL_TOKEN} >/tmp/token"))?;
    let open = format!(
        "airlock open --broker {} --token-file /tmp/token --user dr-vm --no-display \
         --device auto --wait 0",
        term.broker_url
    );
    open_in_terminal_vm(&mut term, &serial, &open, &a.small, |term| {
        assert_guarded(term, "during airlock open")
    })?;
    block_on(broker.wait_desktop(desktop, up, |d| d["state"] == "clean" && d["resets"] == 2))?;
    let lease = block_on(broker.acquire_ok("dr-terminal-vm"))?;
    let lease_id = lease.lease_id.to_string();

    // The stick alone: refused before anything reaches the broker.
    term.qmp.unplug("cd0")?;
    term.wait_usb_devices(1, Duration::from_secs(30))?;
    let mark = serial.mark();
    let (out, status) = term.shell.run(
        &format!(
            "AIRLOCK_TOKEN={} airlock usb forward --broker {} --lease {} --device auto 2>&1",
            TERMINAL_TOKEN, term.broker_url, lease_id
        ),
        Duration::from_secs(60),
    )?;
    println!("forwarding the stick (exit {status}):\n{out}");
    ensure!(status != 0, "forwarding a USB stick succeeded: {out}");
    ensure!(
        out.contains("refusing to forward") && out.contains("not a CD/DVD drive"),
        "no clear refusal: {out}"
    );
    // Nothing reached the desktop.
    std::thread::sleep(Duration::from_secs(2));
    let since = serial.lines_since(mark);
    ensure!(
        !since.iter().any(|l| l.starts_with("AIRLOCK-CD")),
        "the desktop saw something: {since:?}"
    );
    assert_guarded(&mut term, "at the end")?;

    // The broker's audit trail: two streams (forward, open), both of the drive.
    let streams = usb_streams(&broker)?;
    ensure!(
        streams.len() == 2 && streams.iter().all(|d| d.contains("drive")),
        "the streams were not audited as the drive: {streams:?}"
    );
    ensure!(
        block_on(broker.release(TERMINAL_TOKEN, &lease.lease_id))? == 202,
        "release failed"
    );
    println!("test took {:.1} s", t0.elapsed().as_secs_f64());
    Ok(())
}
