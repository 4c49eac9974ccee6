//! Golden images a hospital runs (issue 15), with Debian's real `qemu-guest-agent` in
//! the kit's qga test image (docs/guest.md, "The qga test image"):
//! - a pool with `probe = "qga"`, UEFI (Debian's OVMF), Secure Boot enforcing (the
//!   image boots Debian's signed shim, GRUB and kernel) and a swtpm TPM per desktop
//!   comes up clean through template clones; its template is frozen once the user's
//!   session exists and the vCPUs are quiet; the template's proof carries the agent's
//!   version and the guest's OS; every clone's clock is set and checked within 1 s; the
//!   guest sees a TPM 2.0; each desktop has its own swtpm, which a reset and
//!   `stop-desktops` end with its QEMU;
//! - agents that answer garbage, a 10 MiB line, a wrong sync id or nothing: no desktop
//!   is offered, the broker stays healthy, and the reason is logged and audited.
#![allow(clippy::unwrap_used)]

mod common;

use airlock_testkit::artifacts::qga_guest;
use airlock_testkit::broker::Logon;
use airlock_testkit::process::processes_in;
use common::*;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

/// The `details` of every audit record with `action`, parsed.
async fn audited(b: &Broker, action: &str) -> Result<Vec<Value>> {
    Ok(b.audit()
        .await?
        .iter()
        .filter(|r| r["action"] == action)
        .map(|r| serde_json::from_str(r["details"].as_str().unwrap_or("{}")).unwrap_or_default())
        .collect())
}

fn swtpm_pid(b: &Broker, desk: &str) -> Result<u32> {
    let f = b.run_dir(desk).join("swtpm.pid");
    std::fs::read_to_string(&f)
        .with_context(|| format!("reading {}", f.display()))?
        .trim()
        .parse()
        .context("swtpm.pid")
}

/// Waits for the qga image's status line on the desktop's control port (COM2).
async fn guest_status(b: &Broker, desk: &str) -> Result<String> {
    let log = b.run_dir(desk).join("control.log");
    let start = Instant::now();
    loop {
        let text = String::from_utf8_lossy(&std::fs::read(&log).unwrap_or_default()).into_owned();
        if let Some(line) = text
            .lines()
            .rev()
            .find(|l| l.starts_with("AIRLOCK-QGA-GUEST "))
        {
            return Ok(line.to_owned());
        }
        ensure!(
            start.elapsed() < Duration::from_secs(30),
            "no AIRLOCK-QGA-GUEST line in {}",
            log.display()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stock_agent_pool_with_uefi_secure_boot_and_a_tpm() -> Result<()> {
    let qga = qga_guest()?;
    let mut b = start(BrokerConfig {
        size: 2,
        // The Debian kernel needs more than 256 MiB after OVMF and GRUB.
        memory_mib: 512,
        ready_timeout_s: 300,
        // The image logs `clinician` in on tty1: the template waits for the session and
        // for quiet vCPUs (measured on the host) before it is frozen.
        logon: Some(Logon {
            user: "clinician".into(),
            quiet_s: Some(3),
            busy_percent: Some(40),
            timeout_s: Some(120),
        }),
        ..config()?.uefi_tpm(qga)
    })?;
    let desks = b.wait_clean(2, Duration::from_secs(480)).await?;

    // The template's proof: the real agent, with its dangerous commands blocked, and
    // the guest's OS.
    let templates = audited(&b, "template_ready").await?;
    let guest = &templates.first().context("no template_ready record")?["guest"];
    assert_eq!(guest["probe"], "qga", "{guest}");
    let version = guest["agent_version"].as_str().unwrap_or_default();
    // The package's upstream version (`1:7.2+dfsg-…` → `7.2`) begins the agent's.
    let upstream = qga
        .qemu_ga_version
        .split_once(':')
        .map_or(qga.qemu_ga_version.as_str(), |(_, v)| v)
        .split(['+', '-', '~'])
        .next()
        .unwrap_or_default();
    ensure!(
        !upstream.is_empty() && version.starts_with(upstream),
        "agent version {version:?}, package {}",
        qga.qemu_ga_version
    );
    assert_eq!(guest["agent_enabled_dangerous"], json!([]), "{guest}");
    assert_eq!(guest["logon"]["user"], "clinician", "{guest}");
    ensure!(
        guest["logon"]["quiet_ms"].as_u64() >= Some(3000),
        "quiet for 3 s: {guest}"
    );
    assert_eq!(
        guest["osinfo"]["kernel-release"].as_str(),
        Some(qga.kernel_version.as_str()),
        "{guest}"
    );

    // Every desktop came from the template, its clock set and read back within 1 s.
    let mut cleans = audited(&b, "desktop_ready").await?;
    cleans.extend(audited(&b, "desktop_reset").await?);
    let cleans: Vec<Value> = cleans
        .into_iter()
        .filter_map(|d| d["proof"].get("start").cloned())
        .collect();
    ensure!(cleans.len() >= 2, "clean proofs: {cleans:?}");
    for p in &cleans {
        assert_eq!(p["method"], "template_clone", "{p}");
        let r = &p["readiness"];
        assert_eq!(r["probe"], "qga", "{p}");
        assert_eq!(r["clock_set"], true, "{p}");
        let skew = r["clock_skew_ms"].as_i64().context("clock_skew_ms")?;
        ensure!(skew.abs() <= 1000, "guest clock {skew} ms off: {p}");
        assert!(
            p["chardevs"]
                .as_array()
                .unwrap()
                .contains(&json!("tpmchr0")),
            "{p}"
        );
    }

    // Each desktop: UEFI with Secure Boot on and a TPM 2.0 as the guest sees them, and
    // its own swtpm working in its run directory.
    let mut tpms = Vec::new();
    for d in &desks {
        let desk = d["id"].as_str().context("id")?;
        let status = guest_status(&b, desk).await?;
        for fact in ["tpm=yes", "efi=yes", "secureboot=1"] {
            ensure!(status.contains(fact), "{desk}: {status}");
        }
        let tpm = swtpm_pid(&b, desk)?;
        assert_eq!(processes_in(&b.run_dir(desk), "swtpm"), vec![tpm], "{desk}");
        tpms.push(tpm);
    }
    assert_ne!(tpms[0], tpms[1]);

    // A session and its reset: the old QEMU and its swtpm are gone, new ones run.
    let mut before = std::collections::HashMap::new();
    for d in &desks {
        let desk = d["id"].as_str().unwrap().to_owned();
        before.insert(
            desk.clone(),
            (b.desktop_qemu_pid(&desk)?, swtpm_pid(&b, &desk)?),
        );
    }
    let grant = b.acquire_ok("dr-qga").await?;
    let leased = grant.grant.desktop_id.to_string();
    ensure!(b
        .release(TERMINAL_TOKEN, &grant.grant.lease_id)
        .await?
        .is_success());
    b.wait_desktop(&leased, Duration::from_secs(120), |d| {
        d["state"] == "clean" && d["resets"].as_i64() >= Some(1)
    })
    .await?;
    let run = b.run_dir(&leased);
    let (old_qemu, old_tpm) = before[&leased];
    let new_tpm = swtpm_pid(&b, &leased)?;
    let new_qemu = b.desktop_qemu_pid(&leased)?;
    assert_ne!(new_tpm, old_tpm);
    assert_eq!(processes_in(&run, "swtpm"), vec![new_tpm]);
    assert_eq!(processes_in(&run, "qemu-system"), vec![new_qemu]);
    assert!(processes_in(&run, "qemu-system")
        .iter()
        .all(|p| *p != old_qemu));
    let status = guest_status(&b, &leased).await?;
    ensure!(status.contains("tpm=yes"), "after the reset: {status}");

    // `stop-desktops` leaves no QEMU and no swtpm.
    b.kill9();
    let out = b.cli(&["stop-desktops"])?;
    ensure!(out.status.success(), "{out:?}");
    for d in &desks {
        let run = b.run_dir(d["id"].as_str().unwrap());
        assert!(processes_in(&run, "swtpm").is_empty(), "{}", run.display());
        assert!(
            processes_in(&run, "qemu-system").is_empty(),
            "{}",
            run.display()
        );
    }
    Ok(())
}

/// One broker per hostile agent, all at once: none offers a desktop, each stays
/// healthy and audits why.
#[tokio::test(flavor = "multi_thread")]
async fn a_hostile_guest_agent_gets_no_desktop_offered() -> Result<()> {
    let qga = qga_guest()?;
    // (mode, agent port, what the audited reason must say)
    let cases = [
        ("garbage", "isa", "not what the protocol allows"),
        ("wrong-id", "isa", "sync id"),
        ("silent", "isa", "did not answer"),
        ("overlong", "virtio", "bytes"),
    ];
    let mut brokers = Vec::new();
    for (mode, port, _) in cases {
        brokers.push(start(BrokerConfig {
            size: 1,
            disk: qga.golden_disk.clone(),
            kernel: qga.kernel.clone(),
            initrd: qga.initrd.clone(),
            append: format!("{} airlock.qga_mode={mode}", qga.append),
            probe: "qga".into(),
            // A hostile answer ends the wait after a few attempts; silence only at the
            // timeout. A busy machine may boot the guest slowly: the timeout leaves room.
            ready_timeout_s: if mode == "silent" { 30 } else { 180 },
            agent_port: Some(port.into()),
            display: None,
            ..config()?
        })?);
    }
    let start = Instant::now();
    for (b, (mode, _, reason)) in brokers.iter().zip(cases) {
        let failed = loop {
            let t = audited(b, "template_failed").await?;
            if let Some(f) = t.into_iter().next() {
                break f;
            }
            ensure!(
                start.elapsed() < Duration::from_secs(240),
                "{mode}: no template_failed record; log: {}",
                b.log_tail(20)
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        };
        let text = failed["error"].as_str().unwrap_or_default();
        ensure!(
            text.contains("guest agent") && text.contains(reason),
            "{mode}: {failed}"
        );
        let (code, health) = b.healthz().await?;
        ensure!(code.as_u16() < 600, "{mode}: {health}");
        for d in b.desktops().await? {
            ensure!(d["state"] != "clean", "{mode}: a desktop is offered: {d}");
        }
        let log = std::fs::read_to_string(b.log_path())?;
        ensure!(
            log.contains(reason),
            "{mode}: the log does not say {reason:?}"
        );
    }
    Ok(())
}
