//! The broker is killed with SIGKILL and restarted: leases survive, QEMU processes are
//! re-attached, nothing is handed out twice, no dirty desktop is handed out.
#![allow(clippy::unwrap_used)]

mod common;

use airlock_testkit::process::alive;
use airlock_testkit::spice::{self, AuthResult};
use common::*;
use std::time::Duration;

const UP: Duration = Duration::from_secs(240);

#[tokio::test(flavor = "multi_thread")]
async fn kill9_and_restart_keeps_leases_and_never_hands_out_dirty_desktops() -> Result<()> {
    let mut b = start(config()?)?;
    let l1 = b.lease_when_clean(2, UP, "dr-survivor").await?;
    let x = l1.desktop_id.to_string();
    let id1 = l1.lease_id.to_string();
    let pid_x = b.desktop(&x).await?["pid"].as_u64().unwrap();

    b.kill9();
    assert!(alive(pid_x as u32), "desktops outlive the broker");
    b.restart()?;
    // The lease still works, on the same QEMU process, with the same display password.
    assert_eq!(b.heartbeat(TERMINAL_TOKEN, &id1).await?, 200);
    let dx = b.desktop(&x).await?;
    assert_eq!(dx["state"], "leased");
    assert_eq!(dx["pid"].as_u64().unwrap(), pid_x);
    assert_eq!(dx["lease"], id1.as_str());
    if spice::require_client().is_ok() {
        let display = l1.display.clone().context("a display")?;
        assert_eq!(
            spice::auth(display.port, &display.password)?,
            AuthResult::Opened,
            "the lease's display password still opens the display"
        );
    }

    // The other desktop is free; X is never handed out twice.
    let l2 = b.lease_when_clean(1, UP, "dr-second").await?;
    assert_ne!(l2.desktop_id.as_str(), x);
    assert_eq!(b.acquire(TERMINAL_TOKEN, "dr-third").await?.status(), 503);

    // Release the second lease and kill the broker while that desktop is dirty/resetting.
    let y = l2.desktop_id.to_string();
    assert_eq!(b.release(TERMINAL_TOKEN, &l2.lease_id).await?, 202);
    b.kill9();
    b.restart()?;
    // Hammer acquire right away: Y may be granted only after a verified reset.
    let mut granted = None;
    for _ in 0..2400 {
        let r = b.acquire(TERMINAL_TOKEN, "dr-eager").await?;
        match r.status().as_u16() {
            201 => {
                granted = Some(r.json::<serde_json::Value>().await?);
                break;
            }
            503 => tokio::time::sleep(Duration::from_millis(25)).await,
            s => panic!("unexpected {s}"),
        }
    }
    let granted = granted.context("Y came back clean")?;
    assert_eq!(granted["desktop_id"], y.as_str());
    assert_eq!(
        b.heartbeat(TERMINAL_TOKEN, &id1).await?,
        200,
        "X's lease survived two restarts"
    );

    let audit = b.audit().await?;
    check_invariants(&audit)?;
    assert!(
        audit
            .iter()
            .filter(|r| r["action"] == "broker_started")
            .count()
            == 3
    );
    let (ok, out) = b.verify_audit_cli()?;
    assert!(ok, "{out}");
    assert!(out.contains("intact"), "{out}");
    Ok(())
}

/// The QEMU processes working in a run directory.
fn processes_in(run: &std::path::Path) -> Vec<u32> {
    airlock_testkit::process::processes_in(run, "qemu-system")
}

#[tokio::test(flavor = "multi_thread")]
async fn a_broker_killed_mid_clone_leaves_no_frozen_qemu() -> Result<()> {
    let mut b = start(BrokerConfig {
        size: 1,
        test_clone_pause_ms: Some(4000),
        ..config()?
    })?;
    let lease = b.lease_when_clean(1, UP, "dr-mid-clone").await?;
    let desk = lease.desktop_id.to_string();
    let run = b.run_dir(&desk);
    let old = b.desktop_qemu_pid(&desk)?;
    assert_eq!(b.release(TERMINAL_TOKEN, &lease.lease_id).await?, 202);
    // The clone runs while the old process is frozen (the test hook holds it there).
    let t0 = std::time::Instant::now();
    loop {
        let pids = processes_in(&run);
        if pids.len() == 2 && pids.contains(&old) {
            break;
        }
        ensure!(
            t0.elapsed() < Duration::from_secs(60),
            "no clone beside the frozen process: {pids:?}; log: {}",
            b.log_tail(20)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let state = std::fs::read_to_string(format!("/proc/{old}/stat"))?;
    assert!(state.contains(") T "), "the old process is frozen: {state}");
    b.kill9();
    b.restart()?;
    b.wait_clean(1, UP).await?;
    let live = b.desktop_qemu_pid(&desk)?;
    let left = processes_in(&run);
    assert_eq!(
        left,
        vec![live],
        "only the live QEMU is left (old one was {old})"
    );
    assert!(
        !alive(old),
        "the frozen process with the previous patient's RAM is gone"
    );
    // `airlockd stop-desktops` finds the desktop's process too.
    b.kill9();
    let out = b.cli(&["stop-desktops"])?;
    ensure!(out.status.success(), "{out:?}");
    assert!(
        processes_in(&run).is_empty(),
        "stop-desktops left {:?}",
        processes_in(&run)
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_smaller_pool_stops_the_retired_desktops_qemu() -> Result<()> {
    let mut b = start(config()?)?;
    b.wait_clean(2, UP).await?;
    let kept = b.desktop_qemu_pid("desk-01")?;
    let retired = b.desktop_qemu_pid("desk-02")?;
    b.kill9();
    b.config.size = 1;
    std::fs::write(
        &b.config_path,
        b.config.to_toml(&b.state, b.display_port_base)?,
    )?;
    b.restart()?;
    let t0 = std::time::Instant::now();
    while alive(retired) {
        ensure!(
            t0.elapsed() < Duration::from_secs(30),
            "the retired desktop's QEMU {retired} still runs; log: {}",
            b.log_tail(20)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let d = b.wait_clean(1, UP).await?;
    assert_eq!(d.len(), 1);
    assert!(
        alive(kept),
        "the desktop the pool keeps is re-attached, not restarted"
    );
    Ok(())
}
