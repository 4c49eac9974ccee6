//! Reset acceptance tests: whatever a session did to a desktop's RAM and disk is gone
//! after release, with each reset method; expiry; a killed QEMU is rebuilt.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use serde_json::Value;
use std::time::Duration;

const UP: Duration = Duration::from_secs(240);

fn unique() -> String {
    format!(
        "{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    )
}

/// The details of `desktop`'s audit record `action`: the newest one, or the first.
fn proof(audit: &[Value], desktop: &str, action: &str, newest: bool) -> Result<Value> {
    let mut records = audit
        .iter()
        .filter(|r| r["desktop"] == desktop && r["action"] == action);
    let r = if newest {
        records.next_back()
    } else {
        records.next()
    }
    .with_context(|| format!("no {action} record for {desktop}"))?;
    Ok(serde_json::from_str(
        r["details"].as_str().context("details")?,
    )?)
}

fn reset_proof(audit: &[Value], desktop: &str) -> Result<Value> {
    proof(audit, desktop, "desktop_reset", true)
}

fn first_proof(audit: &[Value], desktop: &str) -> Result<Value> {
    proof(audit, desktop, "desktop_ready", false)
}

async fn markers_vanish_after_release(method: &'static str) -> Result<()> {
    let b = start(BrokerConfig {
        reset: method.into(),
        ..config()?
    })?;
    let lease = b.lease_when_clean(2, UP, "dr-malware").await?;
    let desk = lease.desktop_id.to_string();
    let id = lease.lease_id.to_string();
    let tag = unique();

    // The "disc" plants malware in RAM and on the writable disk.
    let mut c = b.control(&desk)?;
    let golden = c.sh("dd if=/dev/vda bs=64 count=1 2>/dev/null")?;
    assert!(
        golden.contains("AIRLOCK-GOLDEN"),
        "golden disk header: {golden:?}"
    );
    c.sh(&format!("echo MALWARE-RAM-{tag} > /malware.txt"))?;
    c.sh(&format!(
        "echo MALWARE-DISK-{tag} | dd of=/dev/vda bs=512 seek=4096 conv=fsync 2>/dev/null; sync"
    ))?;
    let seen = c.sh("cat /malware.txt; dd if=/dev/vda bs=512 skip=4096 count=1 2>/dev/null")?;
    assert!(seen.contains(&format!("MALWARE-RAM-{tag}")), "{seen:?}");
    assert!(seen.contains(&format!("MALWARE-DISK-{tag}")), "{seen:?}");
    drop(c);

    assert_eq!(b.release(TERMINAL_TOKEN, &id).await?, 202);
    let d = b
        .wait_desktop(&desk, UP, |d| {
            d["state"] == "clean" && d["resets"].as_i64() == Some(1)
        })
        .await?;
    assert_eq!(d["last_reset_method"], method);
    assert!(d["lease"].is_null());

    let mut c = b.control(&desk)?;
    let after = c.sh("cat /malware.txt 2>&1; dd if=/dev/vda bs=512 skip=4096 count=1 2>/dev/null; dd if=/dev/vda bs=64 count=1 2>/dev/null; echo; date +%s")?;
    assert!(
        !after.contains(&format!("MALWARE-RAM-{tag}")),
        "RAM marker survived {method}: {after:?}"
    );
    assert!(
        !after.contains(&format!("MALWARE-DISK-{tag}")),
        "disk marker survived {method}: {after:?}"
    );
    assert!(after.contains("No such file"), "{after:?}");
    assert!(after.contains("AIRLOCK-GOLDEN"), "{after:?}");
    // The guest clock was set after the restore.
    let guest_now: i64 = after
        .split_whitespace()
        .rev()
        .find_map(|w| w.parse().ok())
        .unwrap();
    let host_now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    assert!(
        (guest_now - host_now).abs() <= 5,
        "guest clock {guest_now} vs host {host_now}"
    );

    // The audit holds a proof of the clean start.
    let audit = b.audit().await?;
    let proof = reset_proof(&audit, &desk)?;
    assert_eq!(proof["method"], method);
    let start = &proof["proof"]["start"];
    assert_eq!(start["method"], method);
    assert_eq!(start["readiness"]["probe"], "serial-ping");
    let before = &first_proof(&audit, &desk)?["proof"]["start"];
    match method {
        "template_clone" | "rebuild" => {
            assert_eq!(start["fresh_process"], true);
            assert_ne!(start["pid"], before["pid"], "a fresh QEMU process");
            // The previous process is gone, not left frozen: killed, then reaped (the
            // broker is its parent) or at least a zombie.
            let old = before["pid"].as_i64().unwrap();
            let gone = || {
                std::fs::read_to_string(format!("/proc/{old}/stat"))
                    .map(|st| {
                        st.rsplit_once(')')
                            .is_some_and(|(_, r)| r.trim_start().starts_with('Z'))
                    })
                    .unwrap_or(true)
            };
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
            while !gone() && std::time::Instant::now() < deadline {
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
            assert!(
                gone(),
                "the previous QEMU (pid {old}) still exists after the reset"
            );
            if method == "template_clone" {
                assert!(
                    ["frozen_until_ready", "killed_first"]
                        .contains(&start["old_process"].as_str().unwrap_or_default()),
                    "{start}"
                );
            }
            assert_ne!(
                start["vmgenid"], before["vmgenid"],
                "a new VM generation id"
            );
        }
        _ => {
            assert_eq!(start["fresh_process"], false);
            assert_eq!(start["snapshot"], "airlock-clean");
        }
    }
    check_invariants(&audit)?;
    // And the desktop is acquirable again: both desktops can be leased.
    b.acquire_ok("next-1").await?;
    b.acquire_ok("next-2").await?;
    Ok(())
}

/// One test of `$check` per reset method.
macro_rules! per_method {
    ($check:ident: $($name:ident => $method:literal),+ $(,)?) => {$(
        #[tokio::test(flavor = "multi_thread")]
        async fn $name() -> Result<()> {
            $check($method).await
        }
    )+};
}

per_method!(markers_vanish_after_release:
    release_wipes_ram_and_disk_with_template_clone => "template_clone",
    release_wipes_ram_and_disk_with_snapshot_restore => "snapshot_restore",
    release_wipes_ram_and_disk_with_rebuild => "rebuild",
);

per_method!(a_new_golden_image_reaches_every_desktop:
    a_new_golden_image_reaches_every_desktop_with_template_clone => "template_clone",
    a_new_golden_image_reaches_every_desktop_with_snapshot_restore => "snapshot_restore",
);

#[tokio::test(flavor = "multi_thread")]
async fn a_lease_without_heartbeats_expires_and_its_desktop_resets() -> Result<()> {
    let b = start(BrokerConfig {
        size: 1,
        heartbeat_timeout_s: 3,
        ..config()?
    })?;
    let lease = b.lease_when_clean(1, UP, "dr-forgetful").await?;
    assert_eq!(lease.heartbeat_interval_s, 1);
    let id = &lease.lease_id;
    let desk = lease.desktop_id.as_str();
    // Heartbeats keep it alive past the timeout...
    for _ in 0..5 {
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(b.heartbeat(TERMINAL_TOKEN, id).await?, 200);
    }
    assert_eq!(b.desktop(desk).await?["state"], "leased");
    // ...and without them it ends.
    let d = b
        .wait_desktop(desk, Duration::from_secs(60), |d| {
            d["state"] == "clean" && d["resets"].as_i64() == Some(1)
        })
        .await?;
    assert!(d["lease"].is_null());
    assert_eq!(b.heartbeat(TERMINAL_TOKEN, id).await?, 404);
    let audit = b.audit().await?;
    let ended = audit.iter().find(|r| r["action"] == "lease_ended").unwrap();
    let details: Value = serde_json::from_str(ended["details"].as_str().unwrap()).unwrap();
    assert_eq!(details["reason"], "expired");
    assert!(details["held_ms"].as_i64().unwrap() >= 8_000);
    check_invariants(&audit)
}

#[tokio::test(flavor = "multi_thread")]
async fn killing_a_desktops_qemu_replaces_it_with_a_fresh_clone() -> Result<()> {
    let b = start(config()?)?;
    let d = b.wait_clean(2, UP).await?;
    let lease = b.acquire_ok("dr-crash").await?;
    let leased = lease.desktop_id.to_string();
    let other = d
        .iter()
        .map(|x| x["id"].as_str().unwrap().to_owned())
        .find(|x| *x != leased)
        .unwrap();
    for desk in [&leased, &other] {
        let pid = b.desktop(desk).await?["pid"].as_i64().unwrap();
        airlock_testkit::process::kill_pid(pid as u32);
        let d = b
            .wait_desktop(desk, UP, |d| {
                d["state"] == "clean"
                    && d["pid"].as_i64().is_some_and(|p| p != pid)
                    && d["resets"].as_i64() == Some(1)
            })
            .await?;
        assert_eq!(d["last_reset_method"], "template_clone");
    }
    // The lease on the killed desktop ended.
    assert_eq!(b.heartbeat(TERMINAL_TOKEN, &lease.lease_id).await?, 404);
    let audit = b.audit().await?;
    let ended = audit.iter().find(|r| r["action"] == "lease_ended").unwrap();
    assert!(ended["details"].as_str().unwrap().contains("desktop_lost"));
    assert!(audit
        .iter()
        .any(|r| r["action"] == "desktop_died" && r["desktop"] == other.as_str()));
    check_invariants(&audit)?;
    b.acquire_ok("after-1").await?;
    b.acquire_ok("after-2").await?;
    Ok(())
}

/// Writes a copy of the demo golden disk whose header says `version`, via a raw image.
fn golden_with_header(dir: &std::path::Path, version: &str) -> Result<std::path::PathBuf> {
    use airlock_testkit::process::run;
    let src = &artifacts()?.guest.golden_disk;
    let raw = dir.join(format!("{version}.raw"));
    let out = dir.join(format!("{version}.qcow2"));
    run(std::process::Command::new("qemu-img")
        .args(["convert", "-O", "raw"])
        .arg(src)
        .arg(&raw))?;
    let mut bytes = std::fs::read(&raw)?;
    let header = format!("AIRLOCK-GOLDEN-DISK {version}\n");
    bytes[..header.len()].copy_from_slice(header.as_bytes());
    std::fs::write(&raw, bytes)?;
    run(std::process::Command::new("qemu-img")
        .args(["convert", "-O", "qcow2"])
        .arg(&raw)
        .arg(&out))?;
    Ok(out)
}

async fn a_new_golden_image_reaches_every_desktop(method: &'static str) -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let golden = tmp.path().join("golden.qcow2");
    std::fs::rename(golden_with_header(tmp.path(), "v1")?, &golden)?;
    let b = start(BrokerConfig {
        reset: method.into(),
        disk: golden.clone(),
        ..config()?
    })?;
    let lease = b.lease_when_clean(2, UP, "dr-during-update").await?;
    let leased = lease.desktop_id.to_string();
    let other = if leased == "desk-01" {
        "desk-02"
    } else {
        "desk-01"
    };
    assert!(b
        .control(other)?
        .sh("dd if=/dev/vda bs=32 count=1 2>/dev/null")?
        .contains("v1"));

    // The admin replaces the golden image (a new file renamed over the old one).
    let v2 = golden_with_header(tmp.path(), "v2")?;
    std::fs::rename(&v2, &golden)?;

    // The clean desktop is reset onto it; the leased one keeps its session...
    b.wait_desktop(other, UP, |d| {
        d["state"] == "clean" && d["resets"].as_i64() == Some(1)
    })
    .await?;
    let head = b
        .control(other)?
        .sh("dd if=/dev/vda bs=32 count=1 2>/dev/null")?;
    assert!(head.contains("v2"), "{method}: {head:?}");
    let d = b.desktop(&leased).await?;
    assert_eq!(d["state"], "leased");
    assert!(b
        .control(&leased)?
        .sh("dd if=/dev/vda bs=32 count=1 2>/dev/null")?
        .contains("v1"));
    // ...and gets the new image at its reset.
    assert_eq!(b.release(TERMINAL_TOKEN, &lease.lease_id).await?, 202);
    let d = b
        .wait_desktop(&leased, UP, |d| {
            d["state"] == "clean" && d["resets"].as_i64() == Some(1)
        })
        .await?;
    assert!(b
        .control(&leased)?
        .sh("dd if=/dev/vda bs=32 count=1 2>/dev/null")?
        .contains("v2"));
    let audit = b.audit().await?;
    assert!(audit.iter().any(|r| r["action"] == "golden_changed"));
    if method == "template_clone" {
        assert_eq!(d["last_reset_method"], "template_clone");
        assert_eq!(
            audit
                .iter()
                .filter(|r| r["action"] == "template_ready")
                .count(),
            2
        );
    } else {
        assert_eq!(
            d["last_reset_method"], "rebuild",
            "a snapshot of the old image is not restored"
        );
    }
    check_invariants(&audit)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_desktop_that_never_becomes_ready_is_broken_not_handed_out() -> Result<()> {
    // The guest's init is missing: the kernel panics and the agent never answers.
    let b = start(BrokerConfig {
        size: 1,
        append: "console=ttyS0 quiet init=/nonexistent panic=0".into(),
        ready_timeout_s: 4,
        ..config()?
    })?;
    let d = b
        .wait_desktop("desk-01", UP, |d| d["state"] == "broken")
        .await?;
    let reason = d["reason"].as_str().unwrap();
    assert!(
        reason.contains("template_clone") && reason.contains("rebuild"),
        "{reason}"
    );
    assert!(reason.contains("did not answer"), "{reason}");
    let (status, h) = b.healthz().await?;
    assert_eq!(status, 503);
    assert_eq!(h["status"], "unavailable");
    let problems = h["problems"].to_string();
    assert!(
        problems.contains("no template") && problems.contains("broken"),
        "{problems}"
    );
    let r = b.acquire(TERMINAL_TOKEN, "dr-unlucky").await?;
    assert_eq!(r.status(), 503);
    let m = b.metrics().await?;
    assert!(m.contains("airlock_desktops{state=\"broken\"} 1"), "{m}");
    // An admin's repair tries again (and fails again, visibly).
    assert_eq!(b.repair("desk-01").await?, 202);
    let first_since = d["since"].as_i64().unwrap();
    b.wait_desktop("desk-01", UP, |d| {
        d["state"] == "broken" && d["since"].as_i64() > Some(first_since)
    })
    .await?;
    assert_eq!(b.repair("desk-02").await?, 404);
    let audit = b.audit().await?;
    assert!(audit.iter().any(|r| r["action"] == "template_failed"));
    assert!(
        audit
            .iter()
            .filter(|r| r["action"] == "desktop_broken")
            .count()
            >= 1
    );
    assert!(audit.iter().any(|r| r["action"] == "repair_requested"));
    assert!(!audit.iter().any(|r| r["action"] == "lease_granted"));
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn an_idle_desktop_that_stops_answering_is_taken_out_and_reset() -> Result<()> {
    let b = start(BrokerConfig {
        size: 1,
        idle_probe_s: Some(2),
        ..config()?
    })?;
    b.wait_clean(1, UP).await?;
    let pid = b.desktop_qemu_pid("desk-01")?;
    // The guest hangs (its QEMU stops running).
    stop_process(pid);
    let d = b
        .wait_desktop("desk-01", UP, |d| {
            d["state"] == "clean" && d["resets"].as_i64() == Some(1)
        })
        .await?;
    assert_ne!(d["pid"].as_u64(), Some(u64::from(pid)), "a new process");
    let audit = b.audit().await?;
    assert!(
        audit.iter().any(|r| r["action"] == "desktop_died"
            && r["details"]
                .as_str()
                .unwrap_or("")
                .contains("did not answer its probe")),
        "the audit log says why"
    );
    check_invariants(&audit)
}

fn stop_process(pid: u32) {
    let _ = std::process::Command::new("kill")
        .args(["-STOP", &pid.to_string()])
        .status();
}
