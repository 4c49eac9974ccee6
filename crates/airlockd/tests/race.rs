//! A clean desktop's QEMU dies while acquires run (review defect D8): the desktop's
//! state and its active lease never disagree, every grant is a working desktop or ends
//! `desktop_lost`, and no acquire fails with 500.
#![allow(clippy::unwrap_used)]

mod common;

use airlock_testkit::process::alive;
use common::*;
use serde_json::Value;
use std::time::{Duration, Instant};

/// Rounds of the race (`AIRLOCK_RACE_ROUNDS` overrides).
fn rounds() -> usize {
    std::env::var("AIRLOCK_RACE_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200)
}

/// Desktops whose state disagrees with their active leases, by SQL on the live database.
fn inconsistent(db: &std::path::Path) -> Result<String> {
    let out = std::process::Command::new("sqlite3")
        .arg("-readonly")
        .arg(db)
        .arg(
            "SELECT d.id || ':' || d.state || ':' || n FROM (SELECT id, state, \
             (SELECT COUNT(*) FROM leases l WHERE l.desktop_id = desktops.id AND l.ended_at IS NULL) AS n \
             FROM desktops) d WHERE (d.state = 'leased') != (n = 1) OR n > 1;",
        )
        .output()
        .context("sqlite3 (apt-get install sqlite3) is needed for this test")?;
    ensure!(out.status.success(), "sqlite3: {out:?}");
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

#[tokio::test(flavor = "multi_thread")]
async fn killing_clean_desktops_while_acquiring_never_wedges_the_pool() -> Result<()> {
    // Four desktops: while killed ones reset, others are clean to kill.
    let b = start(BrokerConfig {
        size: 4,
        ..config()?
    })?;
    b.wait_clean(4, Duration::from_secs(240)).await?;
    let db = b.state.join("airlock.db");
    let (mut granted, mut lost, mut busy) = (0usize, 0usize, 0usize);
    for round in 0..rounds() {
        // A clean desktop to kill.
        let t0 = Instant::now();
        let (victim, pid) = loop {
            let ds = b.desktops().await?;
            let clean = ds
                .iter()
                .find(|d| d["state"] == "clean" && d["pid"].is_u64());
            if let Some(d) = clean {
                break (
                    d["id"].as_str().unwrap().to_owned(),
                    d["pid"].as_u64().unwrap() as u32,
                );
            }
            ensure!(
                t0.elapsed() < Duration::from_secs(120),
                "round {round}: no clean desktop: {ds:?}; log: {}",
                b.log_tail(20)
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        let users: Vec<String> = (0..3).map(|i| format!("dr-race-{round}-{i}")).collect();
        let tokens = [TERMINAL_TOKEN, TERMINAL2_TOKEN, TERMINAL_TOKEN];
        let b = &b;
        let acquires = futures::future::join_all(
            users
                .iter()
                .zip(tokens)
                .map(|(u, t)| async move { (t, b.acquire(t, u).await) }),
        );
        let kill = async {
            // Somewhere among the acquires.
            tokio::time::sleep(Duration::from_millis((round % 7) as u64)).await;
            let _ = std::process::Command::new("kill")
                .args(["-9", &pid.to_string()])
                .status();
        };
        let (answers, ()) = tokio::join!(acquires, kill);
        let mut leases = Vec::new();
        for (token, r) in answers {
            let r = r?;
            let status = r.status().as_u16();
            let body: Value = r.json().await.unwrap_or(Value::Null);
            match status {
                201 => leases.push((token, body)),
                503 | 409 => busy += 1,
                other => anyhow::bail!("round {round}: acquire answered {other}: {body}"),
            }
        }
        for (token, l) in leases {
            granted += 1;
            let lease = l["lease_id"].as_str().unwrap().to_owned();
            let desk = l["desktop_id"].as_str().unwrap().to_owned();
            // Working (its QEMU is a live process that is not the killed one), or the
            // grant raced the kill and its lease ended `desktop_lost`.
            let t0 = Instant::now();
            loop {
                let d = b.desktop(&desk).await?;
                let mine = d["lease"] == lease.as_str();
                let live = d["pid"]
                    .as_u64()
                    .is_some_and(|p| p as u32 != pid && alive(p as u32));
                if mine && d["state"] == "leased" && live {
                    break;
                }
                if !mine {
                    ensure!(
                        desk == victim,
                        "round {round}: lease {lease} on {desk} vanished"
                    );
                    lost += 1;
                    break;
                }
                ensure!(
                    t0.elapsed() < Duration::from_secs(30),
                    "round {round}: lease {lease} on {desk} neither works nor ended: {d}"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            let code = b.release(token, &lease).await?;
            ensure!(code == 202 || code == 404, "round {round}: release {code}");
        }
        let bad = inconsistent(&db)?;
        ensure!(
            bad.is_empty(),
            "round {round}: state and leases disagree: {bad}"
        );
    }
    eprintln!("{} rounds: {granted} grants ({lost} raced the kill and ended desktop_lost), {busy} busy answers", rounds());
    b.wait_clean(4, Duration::from_secs(240)).await?;
    let (_, h) = b.healthz().await?;
    assert_eq!(h["status"], "ok", "{h}");
    check_invariants(&b.audit().await?)
}
