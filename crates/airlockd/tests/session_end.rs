//! The ends of a session the broker sees itself, with a real SPICE client: the display
//! client gone for longer than the grace time (`display_lost`; one that comes back in
//! time keeps the session), and the guest's "Finish" key (`signed_out`, with each reset
//! method). Each is audited and followed by the reset.
#![allow(clippy::unwrap_used)]

mod common;

use airlock_testkit::spice::{self, AuthResult, Endpoint, Viewer, KEY_F};
use common::*;
use serde_json::Value;
use std::time::{Duration, Instant};

const GRACE_S: u64 = 4;
const UP: Duration = Duration::from_secs(240);

/// A broker with one clean desktop, a short display grace time and reset `reset`.
async fn broker(reset: &str) -> Result<Broker> {
    spice::require_client()?;
    let b = start(BrokerConfig {
        size: 1,
        reset: reset.into(),
        display_grace_s: Some(GRACE_S),
        ..config()?
    })?;
    b.wait_clean(1, UP).await?;
    Ok(b)
}

/// The details of the audit record of the lease's end.
async fn lease_end(b: &Broker, lease: &str) -> Result<Value> {
    let audit = b.audit().await?;
    check_invariants(&audit)?;
    let ended = audit
        .iter()
        .find(|r| r["action"] == "lease_ended" && r["lease"] == lease)
        .context("no lease_ended record")?;
    Ok(serde_json::from_str(
        ended["details"].as_str().unwrap_or("{}"),
    )?)
}

#[tokio::test(flavor = "multi_thread")]
async fn display_lost_after_the_grace_time_but_not_on_a_reconnect() -> Result<()> {
    let b = broker("template_clone").await?;
    let l = b.acquire_ok("dr-away").await?;
    let desk = l.desktop_id.to_string();
    let display = l.display.clone().context("a display")?;
    let at = Endpoint::of(&display, None);

    // A viewer that is cut and reconnects within the grace time keeps the session.
    let first = Viewer::open(&at, &display.password)?;
    airlock_testkit::process::kill_pid(first.pid());
    drop(first);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let second = Viewer::open(&at, &display.password)?;
    tokio::time::sleep(Duration::from_secs(GRACE_S + 3)).await;
    assert_eq!(b.heartbeat(TERMINAL_TOKEN, &l.lease_id).await?, 200);
    assert_eq!(b.desktop(&desk).await?["state"], "leased");

    // Gone for good: the lease ends after the grace time and the desktop is reset.
    let gone = Instant::now();
    drop(second);
    b.wait_desktop(&desk, UP, |d| {
        d["state"] == "clean" && d["resets"].as_i64() == Some(1)
    })
    .await?;
    assert!(gone.elapsed() >= Duration::from_secs(GRACE_S), "{gone:?}");
    assert_eq!(b.heartbeat(TERMINAL_TOKEN, &l.lease_id).await?, 404);
    let details = lease_end(&b, &l.lease_id.to_string()).await?;
    assert_eq!(details["reason"], "display_lost", "{details}");
    assert_eq!(
        details["grace_s"].as_f64(),
        Some(GRACE_S as f64),
        "{details}"
    );
    assert!(
        details["away_s"].as_f64().unwrap() >= GRACE_S as f64,
        "{details}"
    );
    assert_eq!(
        spice::auth(display.port, &display.password)?,
        AuthResult::Failed,
        "the ended lease's display is not forwarded"
    );
    Ok(())
}

/// The clinician presses "Finish" (F) on the desktop's console through the viewer: the
/// guest powers off, the lease ends `signed_out`, the viewer is cut, and the desktop is
/// reset by `reset` (no fallback) and clean again.
async fn finish_signs_out(reset: &str) -> Result<()> {
    let b = broker(reset).await?;
    let l = b.acquire_ok("dr-finish").await?;
    let desk = l.desktop_id.to_string();
    let display = l.display.clone().context("a display")?;
    {
        let mut sh = b.control(&desk)?;
        let screen = sh.sh("cat /dev/vcs1")?;
        assert!(
            screen.contains("Press F (or Enter) to finish and leave this desktop."),
            "the console shows how to finish: {screen}"
        );
        sh.sh("echo session > /tmp/airlock-marker")?;
    }
    let mut viewer = Viewer::open(&Endpoint::of(&display, None), &display.password)?;
    let pressed = Instant::now();
    viewer.press(KEY_F)?;
    let said =
        tokio::task::spawn_blocking(move || viewer.wait_closed(Duration::from_secs(60))).await??;
    eprintln!(
        "viewer after Finish ({:.1} s): {said}",
        pressed.elapsed().as_secs_f64()
    );
    let d = b
        .wait_desktop(&desk, UP, |d| {
            d["state"] == "clean" && d["resets"].as_i64() == Some(1)
        })
        .await?;
    eprintln!(
        "{reset}: clean {:.1} s after Finish",
        pressed.elapsed().as_secs_f64()
    );
    assert_eq!(d["last_reset_method"], reset, "{d}");
    assert_eq!(b.heartbeat(TERMINAL_TOKEN, &l.lease_id).await?, 404);
    let details = lease_end(&b, &l.lease_id.to_string()).await?;
    assert_eq!(details["reason"], "signed_out", "{details}");
    assert_eq!(details["qmp_event"], "SHUTDOWN", "{details}");
    // Clean again: what the session left is gone, and the next lease gets a display.
    let mut sh = b.control(&desk)?;
    sh.sh("test ! -e /tmp/airlock-marker")?;
    drop(sh);
    let next = b.acquire_ok("dr-next").await?;
    let pw = next.display.clone().context("a display")?.password;
    assert_eq!(spice::auth(display.port, &pw)?, AuthResult::Opened);
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn finish_signs_out_then_template_clone() -> Result<()> {
    finish_signs_out("template_clone").await
}

#[tokio::test(flavor = "multi_thread")]
async fn finish_signs_out_then_snapshot_restore() -> Result<()> {
    finish_signs_out("snapshot_restore").await
}

#[tokio::test(flavor = "multi_thread")]
async fn finish_signs_out_then_rebuild() -> Result<()> {
    finish_signs_out("rebuild").await
}

/// Powers the desktop's guest off from its control shell. The connection stays open
/// until the guest has read the line (QEMU drops what a serial port has not taken yet
/// when its client goes).
async fn power_off(b: &Broker, desk: &str) -> Result<()> {
    let mut sh = b.control(desk)?;
    sh.send_raw("poweroff -f\n")?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    Ok(())
}

/// A guest that powers off outside a lease, or while no broker watches: a clean desktop
/// is reset at once; a leased one's lease ends `signed_out` when the broker restarts and
/// re-attaches (its QEMU kept the process, in state `shutdown`).
#[tokio::test(flavor = "multi_thread")]
async fn power_off_of_a_clean_desktop_and_while_the_broker_is_down() -> Result<()> {
    let mut b = broker("template_clone").await?;
    let desk = "desk-01";
    power_off(&b, desk).await?;
    b.wait_desktop(desk, UP, |d| {
        d["state"] == "clean" && d["resets"].as_i64() == Some(1)
    })
    .await?;
    let audit = b.audit().await?;
    let died = audit
        .iter()
        .find(|r| r["action"] == "desktop_died")
        .context("no desktop_died record")?;
    assert!(
        died["details"].as_str().unwrap().contains("SHUTDOWN"),
        "{died}"
    );

    let l = b.acquire_ok("dr-away").await?;
    b.kill9();
    power_off(&b, desk).await?;
    b.restart()?;
    b.wait_desktop(desk, UP, |d| {
        d["state"] == "clean" && d["resets"].as_i64() == Some(2)
    })
    .await?;
    let details = lease_end(&b, &l.lease_id.to_string()).await?;
    assert_eq!(details["reason"], "signed_out", "{details}");
    assert_eq!(details["qmp_status"], "shutdown", "{details}");
    b.acquire_ok("dr-next").await?;
    Ok(())
}
