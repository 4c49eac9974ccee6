//! A session's display connections in its audit timeline, with a real SPICE client:
//! `display_connected` when the viewer gets in, `display_disconnected` when the last one
//! leaves, again on a reconnect within the grace time, and the durations of
//! `GET /v1/sessions/{lease}`.
#![allow(clippy::unwrap_used)]

mod common;

use airlock_testkit::spice::{self, Endpoint, Viewer};
use common::*;
use std::time::Duration;

const UP: Duration = Duration::from_secs(240);

#[tokio::test(flavor = "multi_thread")]
async fn display_connects_and_disconnects_are_in_the_session_timeline() -> Result<()> {
    spice::require_client()?;
    let b = start(BrokerConfig {
        size: 1,
        display_grace_s: Some(30),
        ..config()?
    })?;
    b.wait_clean(1, UP).await?;
    let l = b.acquire_ok("dr-display").await?;
    let display = l.display.clone().context("a display")?;
    let at = Endpoint::of(&display, None);
    let first = Viewer::open(&at, &display.password)?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    airlock_testkit::process::kill_pid(first.pid());
    drop(first);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let second = Viewer::open(&at, &display.password)?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(b.release(TERMINAL_TOKEN, &l.lease_id).await?, 202);
    drop(second);
    b.wait_clean(1, UP).await?;

    let id = l.lease_id.to_string();
    let t = b.admin_get(&format!("/v1/sessions/{id}")).await?;
    let steps: Vec<&str> = t["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["step"].as_str().unwrap())
        .collect();
    let pos = |s: &str| steps.iter().position(|x| *x == s);
    let connects = steps.iter().filter(|s| **s == "display_connected").count();
    assert_eq!(connects, 2, "{steps:?}");
    let acquired = pos("acquired").context("acquired")?;
    let connected = pos("display_connected").unwrap();
    let disconnected = pos("display_disconnected").context("display_disconnected")?;
    let ended = pos("ended").context("ended")?;
    assert!(
        acquired < connected && connected < disconnected && disconnected < ended,
        "{steps:?}"
    );
    let rec = &t["timeline"][disconnected];
    assert_eq!(rec["terminal"], "term-1");
    assert_eq!(rec["user"], "dr-display");
    assert_eq!(rec["atna"]["event_id"]["code"], 110114);
    let d = &t["durations"];
    assert!(d["to_display_ms"].as_i64().unwrap() >= 0, "{t}");
    assert!(d["display_connected_ms"].as_i64().unwrap() >= 3000, "{t}");
    check_invariants(&b.audit().await?)?;
    Ok(())
}
