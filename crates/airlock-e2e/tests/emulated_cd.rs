//! The emulated CD through the broker's relay: `airlock usb forward --iso`
//! on this machine serves an ISO image as a USB CD-ROM drive over usbredir,
//! through `airlockd`, to a leased desktop, which mounts and reads it; then a
//! disc change (the CLI's `eject` and `insert FILE` commands on stdin) is
//! seen by the guest as a removal and a new disc. A lease made by hand stays alive while
//! the forwarder runs: it sends the heartbeats.

use airlock_e2e::{begin_or_skip, broker, broker_with, the_one_usb_stream};
use airlock_testkit::block_on;
use airlock_testkit::broker::TERMINAL_TOKEN;
use airlock_testkit::iso::{filler, make_iso};
use anyhow::{ensure, Context, Result};
use std::io::Write;
use std::time::Duration;

#[test]
fn emulated_cd_through_the_relay_with_a_disc_change() -> Result<()> {
    let run = begin_or_skip!();
    let (a, bins, t0, tmp) = (run.artifacts, run.bins, run.started, &run.tmp);
    // The second disc: small, with a name that needs Rock Ridge.
    let second = make_iso(
        tmp.path(),
        "second",
        "AIRLOCK_SECOND",
        &[
            (
                "README.TXT",
                b"A second referral disc (synthetic).\n".to_vec(),
            ),
            ("IMAGES/Scan 0001.bin", filler(1, 700_000)),
            ("IMAGES/Scan 0002.bin", filler(2, 300_001)),
        ],
    )?;

    let broker = broker(1)?;
    block_on(broker.wait_clean(1, Duration::from_secs(180)))?;
    let lease = block_on(broker.acquire_ok("dr-emulated"))?;
    let serial = broker.serial_log(lease.desktop_id.as_str());
    let mark = serial.mark();

    let log_path = tmp.path().join("forward.log");
    let mut fwd = broker.forward_iso(
        &bins.airlock(),
        &lease.lease_id.to_string(),
        &a.small.iso,
        &log_path,
    )?;
    let fwd_log = || std::fs::read_to_string(&log_path).unwrap_or_default();
    let mut stdin = fwd.child().stdin.take().context("stdin")?;

    // The first disc.
    let report = serial
        .wait_cd(mark, Duration::from_secs(60))
        .with_context(|| format!("forward log:\n{}", fwd_log()))?;
    report.check(&a.small)?;
    let s = report.summary.as_ref().context("summary")?;
    println!(
        "first disc: sha256={} seconds={} ({:.1} s since start)",
        s.sha256,
        s.seconds,
        t0.elapsed().as_secs_f64()
    );

    // Eject: the guest sees the disc go.
    writeln!(stdin, "eject")?;
    let after_eject = serial
        .wait_removed(report.end, Duration::from_secs(30))
        .with_context(|| format!("forward log:\n{}", fwd_log()))?;

    // Insert the second disc: the guest mounts and reads it.
    writeln!(stdin, "insert {}", second.iso.display())?;
    let report2 = serial
        .wait_cd(after_eject, Duration::from_secs(60))
        .with_context(|| format!("forward log:\n{}", fwd_log()))?;
    report2.check(&second)?;
    println!(
        "second disc: sha256={} seconds={}",
        second.sha256,
        report2.summary.as_ref().map_or(0.0, |s| s.seconds)
    );

    // Unplug: the CLI ends the session and exits 0; the guest sees the drive go.
    writeln!(stdin, "unplug")?;
    let status = fwd.wait_timeout(Duration::from_secs(30))?;
    let out = fwd_log();
    println!("forward log:\n{out}");
    ensure!(status.success(), "airlock usb forward exited {status}");
    ensure!(out.contains("Disc ejected."), "{out}");
    ensure!(out.contains("Disc inserted:"), "{out}");
    ensure!(out.contains("Session ended"), "{out}");
    // The desktop's Linux took the drive's UAS alternate setting (bulk streams through
    // usb-redir and the relay), not Bulk-Only.
    ensure!(out.contains("USB Attached SCSI"), "{out}");
    serial.wait_removed(report2.end, Duration::from_secs(30))?;

    let details = the_one_usb_stream(&broker)?;
    ensure!(
        details.contains("sample-small.iso"),
        "the stream's audit record does not name the image: {details}"
    );
    ensure!(block_on(broker.release(TERMINAL_TOKEN, &lease.lease_id))? == 202);
    println!("test took {:.1} s", t0.elapsed().as_secs_f64());
    Ok(())
}

/// A lease made by hand stays alive while `airlock usb forward` runs: the forwarder sends
/// its heartbeats (three heartbeat timeouts pass with the drive attached), and once it
/// stops, the broker ends the lease on its own.
#[test]
fn usb_forward_keeps_its_lease_alive_while_it_runs() -> Result<()> {
    let run = begin_or_skip!();
    let timeout_s = 3;
    let broker = broker_with(|c| {
        c.size = 1;
        c.heartbeat_timeout_s = timeout_s;
    })?;
    block_on(broker.wait_clean(1, Duration::from_secs(180)))?;
    let lease = block_on(broker.acquire_ok("dr-by-hand"))?;
    let desk = lease.desktop_id.to_string();
    let log_path = run.tmp.path().join("forward.log");
    let mut fwd = broker.forward_iso(
        &run.bins.airlock(),
        &lease.lease_id.to_string(),
        &run.artifacts.small.iso,
        &log_path,
    )?;
    std::thread::sleep(Duration::from_secs(3 * timeout_s));
    let d = block_on(broker.desktop(&desk))?;
    ensure!(
        d["state"] == "leased" && d["lease"] == lease.lease_id.to_string(),
        "the lease did not outlive three heartbeat timeouts: {d}\nforward log:\n{}",
        std::fs::read_to_string(&log_path).unwrap_or_default()
    );
    let mut stdin = fwd.child().stdin.take().context("stdin")?;
    writeln!(stdin, "unplug")?;
    let status = fwd
        .wait_timeout(Duration::from_secs(30))
        .with_context(|| std::fs::read_to_string(&log_path).unwrap_or_default())?;
    ensure!(status.success(), "airlock usb forward exited {status}");
    // Without the forwarder nobody keeps the lease: it expires and the desktop resets.
    block_on(broker.wait_desktop(&desk, Duration::from_secs(180), |d| {
        d["state"] == "clean" && d["resets"] == 1
    }))?;
    Ok(())
}
