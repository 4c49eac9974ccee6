//! A guest cannot fill the host's disk (issue 12): the overlay has a cap, past which the
//! session ends `quota` and the desktop is reset; the serial logs are bounded.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use std::time::{Duration, Instant};

const CAP_MIB: u64 = 16;
/// What may land past the cap between the write that crosses it and the guest's stop
/// (the writes in flight): documented in docs/operations.md.
const MARGIN_MIB: u64 = 8;

#[tokio::test(flavor = "multi_thread")]
async fn a_guest_writing_past_its_disk_cap_is_ended_quota_and_reset() -> Result<()> {
    let b = start(BrokerConfig {
        size: 1,
        disk_cap_mib: Some(CAP_MIB),
        ..config()?
    })?;
    b.wait_clean(1, Duration::from_secs(240)).await?;
    let lease = b.acquire_ok("dr-quota").await?;
    let desk = lease.desktop_id.to_string();
    let overlay = b.state.join("desktops").join(&desk).join("disk.qcow2");

    // The "disc" writes three times the cap to the disk, in the background.
    let mut c = b.control(&desk)?;
    c.sh("(dd if=/dev/zero of=/dev/vda bs=1M seek=1 count=48 conv=fsync 2>/dev/null; echo WROTE-ALL) >/dev/ttyS1 &")?;
    let start = Instant::now();
    let mut largest = 0u64;
    let ended = loop {
        largest = largest.max(std::fs::metadata(&overlay).map(|m| m.len()).unwrap_or(0));
        let audit = b.audit().await?;
        let end = audit
            .iter()
            .find(|r| r["action"] == "lease_ended" && r["lease"] == lease.lease_id.to_string());
        if let Some(e) = end {
            break e.clone();
        }
        ensure!(
            start.elapsed() < Duration::from_secs(120),
            "the lease did not end; overlay {largest} bytes; log: {}",
            b.log_tail(30)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let details: serde_json::Value =
        serde_json::from_str(ended["details"].as_str().unwrap_or("{}"))?;
    assert_eq!(details["reason"], "quota", "{ended}");
    assert_eq!(details["disk_cap_bytes"], CAP_MIB << 20, "{ended}");
    assert!(
        largest <= (CAP_MIB + MARGIN_MIB) << 20,
        "the overlay reached {largest} bytes, cap {CAP_MIB} MiB + {MARGIN_MIB} MiB"
    );
    assert!(
        !c.take().contains("WROTE-ALL"),
        "the guest was stopped before it wrote everything"
    );
    drop(c);
    // The desktop is reset (a new, small overlay) and serves again; the broker too.
    b.wait_desktop(&desk, Duration::from_secs(120), |d| {
        d["state"] == "clean" && d["resets"].as_i64() == Some(1)
    })
    .await?;
    let size = std::fs::metadata(&overlay)?.len();
    assert!(size < 4 << 20, "fresh overlay: {size} bytes");
    let again = b.acquire_ok("dr-after-quota").await?;
    assert_eq!(again.desktop_id.to_string(), desk);
    let (_, h) = b.healthz().await?;
    assert_eq!(h["status"], "ok", "{h}");
    check_invariants(&b.audit().await?)
}

/// How much the guest writes to COM1 (about 0.3 MB/s under TCG) and to a virtio-serial
/// agent port (tens of MB/s).
const SERIAL_MIB: u64 = 4;
const VIRTIO_FLOOD_MIB: u64 = 1024;
const SERIAL_LOG_KIB: u64 = 256;

#[tokio::test(flavor = "multi_thread")]
async fn a_guest_flooding_its_serial_port_leaves_the_logs_within_their_cap() -> Result<()> {
    flood_agent_port(None, SERIAL_MIB).await
}

#[tokio::test(flavor = "multi_thread")]
async fn a_guest_writing_a_gibibyte_to_its_virtio_agent_port_leaves_the_logs_within_their_cap(
) -> Result<()> {
    flood_agent_port(Some("virtio"), VIRTIO_FLOOD_MIB).await
}

/// On a pool whose agent port is `agent_port` (`None`: COM1, the default), the guest
/// writes `mib` MiB to it: the serial logs stay within their cap and hold the flood's
/// end, and the broker serves throughout (the next desktop is offered only after its
/// guest answered a ping on the same kind of port).
async fn flood_agent_port(agent_port: Option<&str>, mib: u64) -> Result<()> {
    let b = start(BrokerConfig {
        size: 1,
        serial_log_kib: Some(SERIAL_LOG_KIB),
        heartbeat_timeout_s: 900,
        agent_port: agent_port.map(str::to_owned),
        ..config()?
    })?;
    b.wait_clean(1, Duration::from_secs(240)).await?;
    let lease = b.acquire_ok("dr-serial").await?;
    let desk = lease.desktop_id.to_string();
    let run = b.run_dir(&desk);
    let mut c = b.control(&desk)?;
    let sink = if agent_port == Some("virtio") {
        // The guest found the broker's port by its name (not COM1); /init holds it as
        // fd 6 (a virtio-serial port has one opener at a time), and so does this shell.
        let port =
            c.sh("readlink /dev/virtio-ports/org.airlock.agent.0; readlink /proc/$$/fd/6")?;
        ensure!(
            port.lines().map(str::trim).collect::<Vec<_>>() == ["../vport0p1", "/dev/vport0p1"],
            "agent port: {port:?}"
        );
        ">&6"
    } else {
        "> /dev/ttyS0"
    };
    let t0 = Instant::now();
    c.sh_timeout(
        &format!(
            "dd if=/dev/zero bs=64k count={} 2>/dev/null | tr '\\0' x {sink}; echo FLOOD-DONE",
            mib * 16
        ),
        Duration::from_secs(1200),
    )?;
    let took = t0.elapsed();
    let total = |run: &std::path::Path| -> u64 {
        ["serial.log", "serial.log.1"]
            .iter()
            .map(|f| std::fs::metadata(run.join(f)).map(|m| m.len()).unwrap_or(0))
            .sum()
    };
    let logged = total(&run);
    eprintln!(
        "{mib} MiB through the agent port ({}) in {took:?} ({:.1} MB/s); logs hold {logged} bytes",
        agent_port.unwrap_or("isa"),
        (mib << 20) as f64 / took.as_secs_f64() / 1e6
    );
    ensure!(
        logged <= 2 * (SERIAL_LOG_KIB << 10),
        "serial logs hold {logged} bytes, cap 2 × {SERIAL_LOG_KIB} KiB"
    );
    // The flood went through the logs (they are full of it), not around them.
    ensure!(
        logged >= SERIAL_LOG_KIB << 10,
        "serial logs hold only {logged} bytes after the flood"
    );
    let tail = std::fs::read(run.join("serial.log"))?;
    let end = &tail[tail.len().saturating_sub(4096)..];
    ensure!(
        end.windows(4).any(|w| w == b"xxxx"),
        "the flood's end reached the log"
    );
    let (_, h) = b.healthz().await?;
    assert_eq!(h["status"], "ok", "{h}");
    assert_eq!(b.release(TERMINAL_TOKEN, &lease.lease_id).await?, 202);
    b.wait_clean(1, Duration::from_secs(120)).await?;
    ensure!(total(&run) <= 2 * (SERIAL_LOG_KIB << 10));
    let again = b.acquire_ok("dr-after-flood").await?;
    assert_eq!(again.desktop_id.to_string(), desk);
    check_invariants(&b.audit().await?)
}
