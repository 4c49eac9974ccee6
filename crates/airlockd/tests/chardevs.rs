//! SPICE data paths closed and the machine shape checked (issue 15): a desktop's QEMU has
//! only the allowed chardevs (`query-chardev`), checked at every start and recorded in
//! the clean proof; one with another channel is not offered; its SPICE server refuses
//! copy-paste and file transfer; `check-config` refuses an unknown CPU model and
//! Hyper-V flags under TCG.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

/// The chardevs of a desktop with the test control channel (the kit's default).
const ALLOWED: [&str; 5] = [
    "agent0",
    "compat_monitor0",
    "compat_monitor1",
    "control0",
    "usbredir0",
];

fn labels(answer: &Value) -> Vec<String> {
    let mut v: Vec<String> = answer
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["label"].as_str().unwrap().to_owned())
        .collect();
    v.sort();
    v
}

/// The `details` of every audit record, parsed.
async fn details(b: &Broker) -> Result<Vec<(String, Value)>> {
    Ok(b.audit()
        .await?
        .iter()
        .map(|r| {
            let d = serde_json::from_str(r["details"].as_str().unwrap_or("{}")).unwrap_or_default();
            (r["action"].as_str().unwrap_or_default().to_owned(), d)
        })
        .collect())
}

#[tokio::test(flavor = "multi_thread")]
async fn desktops_have_only_the_allowed_chardevs_and_no_clipboard() -> Result<()> {
    let mut b = start(BrokerConfig {
        size: 1,
        ..config()?
    })?;
    let desks = b.wait_clean(1, Duration::from_secs(240)).await?;
    let desk = desks[0]["id"].as_str().context("desktop id")?.to_owned();

    // What QEMU itself lists: only the allowed channels.
    let mut qmp = b.test_qmp(&desk)?;
    assert_eq!(labels(&qmp.cmd("query-chardev", json!({}))?), ALLOWED);
    // The SPICE server runs with the clipboard and file transfer refused.
    let spice = qmp.cmd("query-spice", json!({}))?;
    assert_eq!(spice["enabled"], true, "{spice}");
    let pid = b.desktop_qemu_pid(&desk)?;
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline"))?;
    let args: Vec<String> = cmdline
        .split(|&c| c == 0)
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    let i = args.iter().position(|a| a == "-spice").context("-spice")?;
    assert!(
        args[i + 1].contains("disable-copy-paste=on")
            && args[i + 1].contains("disable-agent-file-xfer=on"),
        "{}",
        args[i + 1]
    );
    for a in &args {
        assert!(
            !a.contains("spicevmc") && !a.contains("vdagent") && !a.contains("spiceport"),
            "{a}"
        );
    }
    // The clean proof in the audit log carries the checked list.
    let proofs: Vec<Value> = details(&b)
        .await?
        .into_iter()
        .filter_map(|(_, d)| d["proof"]["start"].get("chardevs").cloned())
        .collect();
    ensure!(!proofs.is_empty(), "no clean proof with chardevs");
    for p in &proofs {
        assert_eq!(p, &json!(ALLOWED), "{p}");
    }

    // A SPICE agent channel appears (as a QEMU escape or a monitor mistake could add
    // one): after a broker restart the desktop is not offered as it is; it is reset
    // into a new QEMU with only the allowed channels.
    qmp.cmd(
        "chardev-add",
        json!({"id": "vdagent0", "backend": {"type": "spicevmc", "data": {"type": "vdagent"}}}),
    )?;
    assert!(labels(&qmp.cmd("query-chardev", json!({}))?).contains(&"vdagent0".to_owned()));
    drop(qmp);
    b.kill9();
    b.restart()?;
    let start = Instant::now();
    let refused = loop {
        let found = details(&b).await?.into_iter().find(|(_, d)| {
            d.to_string().contains("vdagent0") && d.to_string().contains("not allowed")
        });
        if let Some(f) = found {
            break f;
        }
        ensure!(
            start.elapsed() < Duration::from_secs(60),
            "no audit record names the unexpected chardev; log: {}",
            b.log_tail(30)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let text = refused.1.to_string();
    assert!(text.contains("spicevmc"), "{text}");
    b.wait_desktop(&desk, Duration::from_secs(120), |d| {
        d["state"] == "clean" && d["resets"].as_i64() >= Some(1)
    })
    .await?;
    let new_pid = b.desktop_qemu_pid(&desk)?;
    assert_ne!(new_pid, pid, "a new QEMU process");
    let mut qmp = b.test_qmp(&desk)?;
    assert_eq!(labels(&qmp.cmd("query-chardev", json!({}))?), ALLOWED);
    check_invariants(&b.audit().await?)
}

/// `airlockd check-config` on a pool with `extra` keys: exit code and stderr.
fn check_config(extra_pool: &str) -> (i32, String) {
    let d = tempfile::tempdir().unwrap();
    std::fs::write(d.path().join("golden.qcow2"), b"x").unwrap();
    let text = format!(
        r#"
[server]
state_dir = "state"
[admin]
token_sha256 = "{h}"
[pool]
size = 1
{extra_pool}
[pool.guest]
disk = "golden.qcow2"
"#,
        h = "ab".repeat(32),
    );
    let p = d.path().join("c.toml");
    std::fs::write(&p, text).unwrap();
    let bin = std::path::Path::new(env!("CARGO_BIN_EXE_airlockd"));
    let r =
        airlock_testkit::process::cli(bin, &["--config", p.to_str().unwrap(), "check-config"], &[])
            .unwrap();
    (r.code.unwrap_or(-1), r.stderr)
}

#[test]
fn check_config_refuses_an_unknown_cpu_model_naming_known_ones() {
    let (code, err) = check_config("accel = \"tcg\"\ncpu_model = \"no-such-cpu\"");
    assert_ne!(code, 0);
    assert!(
        err.contains("pool.cpu_model") && err.contains("no-such-cpu"),
        "{err}"
    );
    // The models named are ones this host's QEMU knows.
    let help = std::process::Command::new("qemu-system-x86_64")
        .args(["-cpu", "help"])
        .output()
        .unwrap();
    let known = airlock_qemu::spec::parse_cpu_models(&String::from_utf8_lossy(&help.stdout));
    let named: Vec<&String> = known
        .iter()
        .filter(|m| err.contains(&format!(" {m},")))
        .collect();
    assert!(named.len() >= 5, "{err}");
    assert!(err.contains("-cpu help"), "{err}");
    let (code, _) = check_config("accel = \"tcg\"\ncpu_model = \"qemu64\"");
    assert_eq!(code, 0);
}

#[test]
fn check_config_refuses_hyperv_under_tcg() {
    let (code, err) = check_config("accel = \"tcg\"\ncpu_model = \"qemu64\"\nhyperv = true");
    assert_ne!(code, 0);
    assert!(
        err.contains("pool.hyperv") && err.contains("KVM") && err.contains("tcg"),
        "{err}"
    );
}

#[test]
fn check_config_has_no_key_for_a_spice_agent_or_usb_channel() {
    for key in [
        "vdagent = true",
        "spice_usb_channels = 2",
        "clipboard = true",
    ] {
        let (code, err) = check_config(&format!("accel = \"tcg\"\n{key}"));
        assert_ne!(code, 0);
        let name = key.split(' ').next().unwrap();
        assert!(err.contains("unknown field") && err.contains(name), "{err}");
    }
}
