//! Confinement of desktops (issue 12): each desktop's QEMU runs as its own non-root uid,
//! under seccomp, inside its cgroup limits, and a process with one desktop's uid can
//! neither read another desktop nor write the template.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// A `/proc/PID/status` field.
fn status_field(pid: u32, name: &str) -> Result<String> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    s.lines()
        .find_map(|l| l.strip_prefix(name).map(|v| v.trim().to_owned()))
        .with_context(|| format!("no {name} in /proc/{pid}/status"))
}

/// The directory of `controller`'s cgroup of `pid` (v1), or the unified one (v2).
fn cgroup_dir(pid: u32, controller: &str) -> Result<PathBuf> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup"))?;
    for line in text.lines() {
        let mut parts = line.splitn(3, ':');
        let (_, controllers, path) = (parts.next(), parts.next(), parts.next());
        let (Some(controllers), Some(path)) = (controllers, path) else {
            continue;
        };
        if controllers.split(',').any(|c| c == controller) {
            return Ok(Path::new("/sys/fs/cgroup")
                .join(controller)
                .join(path.trim_start_matches('/')));
        }
    }
    let v2 = text
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .context("no cgroup")?;
    Ok(Path::new("/sys/fs/cgroup").join(v2.trim_start_matches('/')))
}

fn read_limit(dir: &Path, names: &[&str]) -> Result<String> {
    for n in names {
        if let Ok(v) = std::fs::read_to_string(dir.join(n)) {
            return Ok(v.trim().to_owned());
        }
    }
    anyhow::bail!("none of {names:?} in {}", dir.display())
}

/// Runs `script` under `sh` as `uid` (gid the same, no supplementary groups); true if
/// it succeeded.
fn as_uid(uid: u32, script: &str) -> Result<bool> {
    let out = Command::new("setpriv")
        .args([
            &format!("--reuid={uid}"),
            &format!("--regid={uid}"),
            "--clear-groups",
            "sh",
            "-c",
            script,
        ])
        .output()
        .context("setpriv (util-linux) is needed for this test")?;
    Ok(out.status.success())
}

#[tokio::test(flavor = "multi_thread")]
async fn each_desktop_runs_as_its_own_uid_inside_its_limits() -> Result<()> {
    let cfg = config()?;
    let memory_mib = cfg.memory_mib;
    let b = start(cfg)?;
    b.wait_clean(2, Duration::from_secs(240)).await?;
    let (_, h) = b.healthz().await?;
    assert!(
        !h.to_string().contains("not confined") && !h.to_string().contains("no memory"),
        "a root broker on this host confines: {h}"
    );
    let (p1, p2) = (
        b.desktop_qemu_pid("desk-01")?,
        b.desktop_qemu_pid("desk-02")?,
    );
    let uid = |pid| -> Result<u32> {
        let v: Vec<u32> = status_field(pid, "Uid:")?
            .split_whitespace()
            .map(|x| x.parse().unwrap())
            .collect();
        ensure!(
            v.iter().all(|u| *u == v[0]),
            "real/effective/saved/fs uids differ: {v:?}"
        );
        let g = status_field(pid, "Gid:")?;
        ensure!(
            g.split_whitespace().all(|x| x == v[0].to_string()),
            "gids {g}"
        );
        ensure!(
            status_field(pid, "Groups:")?.is_empty(),
            "no supplementary groups"
        );
        Ok(v[0])
    };
    let (u1, u2) = (uid(p1)?, uid(p2)?);
    assert!(u1 != 0 && u2 != 0 && u1 != u2, "uids {u1} {u2}");
    for pid in [p1, p2] {
        assert_eq!(
            status_field(pid, "Seccomp:")?,
            "2",
            "seccomp filter on {pid}"
        );
        let mem = read_limit(
            &cgroup_dir(pid, "memory")?,
            &["memory.limit_in_bytes", "memory.max"],
        )?;
        assert_eq!(
            mem,
            ((memory_mib + 512) << 20).to_string(),
            "guest RAM + overhead"
        );
        assert_eq!(read_limit(&cgroup_dir(pid, "pids")?, &["pids.max"])?, "512");
        // The pool's own cgroup (the desktop's parent) weighs as much as its three
        // processes (two desktops and the template's source) would outside it.
        let cpu = cgroup_dir(pid, "cpu")?;
        let pool = cpu.parent().context("the desktop's cgroup has a parent")?;
        let weight = read_limit(pool, &["cpu.shares", "cpu.weight"])?;
        assert!(
            weight == "3072" || weight == "300",
            "the pool's CPU weight is {weight}"
        );
    }
    // The state directory is the broker's alone.
    let mode = |p: &Path| {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(p).unwrap().permissions().mode() & 0o777
    };
    assert_eq!(mode(&b.state), 0o700);
    assert_eq!(mode(&b.run_dir("desk-01")), 0o700);

    // Desktop 1's uid reaches its own process (the control: setpriv works) ...
    assert!(as_uid(u1, &format!("ls /proc/{p1}/fd >/dev/null"))?);
    // ... but not desktop 2's run directory, overlay or memory.
    let run2 = b.run_dir("desk-02");
    let disk2 = b.state.join("desktops/desk-02/disk.qcow2");
    assert!(!as_uid(u1, &format!("ls {}", run2.display()))?);
    assert!(!as_uid(
        u1,
        &format!("head -c1 {} >/dev/null", disk2.display())
    )?);
    assert!(!as_uid(u1, &format!("head -c1 /proc/{p2}/mem >/dev/null"))?);
    assert!(!as_uid(u1, &format!("ls /proc/{p2}/fd"))?);
    // Nor can it write the template: not its files, not the RAM its own QEMU maps.
    let templates: Vec<PathBuf> = std::fs::read_dir(b.state.join("templates"))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.join("template.json").exists())
        .collect();
    assert_eq!(templates.len(), 1, "{templates:?}");
    for f in ["ram", "device.state", "base.qcow2"] {
        let path = templates[0].join(f);
        assert_eq!(mode(&path), 0o444, "{f} is read-only");
        assert!(
            !as_uid(u1, &format!("echo x >> {}", path.display()))?,
            "{f}"
        );
    }
    let ram_link = std::fs::read_link(format!("/proc/{p1}/fd/3"))?;
    assert!(
        ram_link
            .to_string_lossy()
            .contains("memfd:airlock-template"),
        "{ram_link:?}"
    );
    assert!(
        as_uid(u1, &format!("head -c1 /proc/{p1}/fd/3 >/dev/null"))?,
        "readable"
    );
    assert!(
        !as_uid(u1, &format!("echo x >> /proc/{p1}/fd/3"))?,
        "sealed"
    );
    assert!(!as_uid(u1, &format!("echo x > /proc/{p1}/fd/3"))?, "sealed");

    // The confined desktops still work.
    let lease = b.acquire_ok("dr-confined").await?;
    assert_eq!(b.release(TERMINAL_TOKEN, &lease.lease_id).await?, 202);
    b.wait_clean(2, Duration::from_secs(120)).await?;
    check_invariants(&b.audit().await?)
}
