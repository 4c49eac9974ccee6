//! The qga test image (`cargo xtask qga-guest`, docs/guest.md "The qga test image")
//! booted with plain QEMU (`-kernel`, SeaBIOS, TCG), no broker: Debian's qemu-guest-agent
//! answers the broker's own client (`airlock_qemu::qga::Qga`) on COM1 with its program
//! and file commands blocked and the user logged in; the test hook reports the machine;
//! the `garbage` mode is the client's Garbage error, and `airlock.qga_allow_exec=1` the
//! refusal of an agent that runs programs.

use airlock_qemu::qga::{check_info, dangerous_commands, Qga, QgaError};
use airlock_testkit::artifacts::{qga_guest, QgaGuestManifest};
use airlock_testkit::process::{read_or_empty, run, tail, Proc, RunDir};
use airlock_testkit::tools;
use anyhow::{bail, ensure, Context, Result};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const T: Duration = Duration::from_secs(10);

/// The image booted with `-kernel`: the agent's COM1 on a Unix socket, the test hook's
/// COM2 into a file.
struct Vm {
    qemu: Proc,
    dir: RunDir,
    started: Instant,
}

impl Vm {
    /// `None` when VM tests are skipped.
    fn boot(extra_append: &str) -> Result<Option<(&'static QgaGuestManifest, Vm)>> {
        if !tools::vm_test() {
            return Ok(None);
        }
        let m = qga_guest()?;
        let dir = RunDir::new("airlock-qga-")?;
        run(Command::new("qemu-img")
            .args(["create", "-q", "-f", "qcow2", "-F", "qcow2", "-b"])
            .arg(&m.golden_disk)
            .arg(dir.join("disk.qcow2")))?;
        let log = std::fs::File::create(dir.join("qemu.log"))?;
        let mut cmd = Command::new(tools::QEMU);
        cmd.args(["-name", "airlock-test-qga,debug-threads=on"])
            .args(["-accel", "tcg", "-machine", "q35", "-m", "256", "-smp", "1"])
            .args([
                "-nodefaults",
                "-no-user-config",
                "-nic",
                "none",
                "-display",
                "none",
            ])
            .arg("-kernel")
            .arg(&m.kernel)
            .arg("-initrd")
            .arg(&m.initrd)
            .args(["-append", &format!("{} {extra_append}", m.append)])
            .arg("-chardev")
            .arg(format!(
                "socket,id=agent0,path={},server=on,wait=off",
                dir.join("agent.sock").display()
            ))
            .args(["-serial", "chardev:agent0"])
            .arg("-chardev")
            .arg(format!(
                "file,id=ctl0,path={}",
                dir.join("ctl.log").display()
            ))
            .args(["-serial", "chardev:ctl0"])
            .arg("-drive")
            .arg(format!(
                "file={},if=virtio,format=qcow2",
                dir.join("disk.qcow2").display()
            ))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        let qemu = Proc::spawn(&mut cmd, "QEMU (qga guest)")?;
        Ok(Some((
            m,
            Vm {
                qemu,
                dir,
                started: Instant::now(),
            },
        )))
    }

    /// The test hook's first line (`AIRLOCK-QGA-GUEST …`): /init has started the agent.
    fn status(&mut self, timeout: Duration) -> Result<String> {
        loop {
            let text = read_or_empty(&self.dir.join("ctl.log"));
            if let Some(l) = text.lines().find(|l| l.starts_with("AIRLOCK-QGA-GUEST ")) {
                return Ok(l.to_owned());
            }
            if !self.qemu.running() {
                bail!("QEMU exited: {}", tail(&self.dir.join("qemu.log"), 20));
            }
            if self.started.elapsed() > timeout {
                bail!(
                    "no AIRLOCK-QGA-GUEST line within {timeout:?}; COM2: {}",
                    tail(&self.dir.join("ctl.log"), 10)
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// A synced connection to the agent, retried while the agent is not reading its
    /// port yet (the sync is lost, or its late answer reaches the next attempt); any
    /// other error is returned.
    async fn agent(&self) -> Result<Qga, QgaError> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match Qga::connect(&self.dir.join("agent.sock"), Duration::from_secs(3)).await {
                Err(QgaError::Timeout { .. } | QgaError::WrongSyncId { .. })
                    if Instant::now() < deadline => {}
                r => return r,
            }
        }
    }
}

fn unix_ns() -> i64 {
    let d = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(d.as_nanos()).unwrap_or(i64::MAX)
}

#[test]
fn debian_qemu_guest_agent_answers_the_broker_client() -> Result<()> {
    let Some((m, mut vm)) = Vm::boot("")? else {
        return Ok(());
    };
    let status = vm.status(Duration::from_secs(60))?;
    eprintln!(
        "{status} ({:.1} s after QEMU started)",
        vm.started.elapsed().as_secs_f64()
    );
    let words: Vec<&str> = status.split_whitespace().collect();
    for want in ["tpm=no", "efi=no", "secureboot=none"] {
        ensure!(words.contains(&want), "SeaBIOS, no TPM: `{status}`");
    }
    let clock: i64 = words
        .iter()
        .find_map(|w| w.strip_prefix("clock="))
        .context("no clock= in the status line")?
        .parse()?;
    ensure!(
        (clock - unix_ns() / 1_000_000_000).abs() < 600,
        "the guest's clock {clock} is far from the host's (the RTC)"
    );

    airlock_testkit::block_on(async {
        let mut q = vm.agent().await?;
        eprintln!(
            "qemu-ga synced {:.1} s after QEMU started",
            vm.started.elapsed().as_secs_f64()
        );
        q.ping(T).await?;

        // The agent's version is the Debian package's upstream version; everything that
        // runs programs or touches files is blocked.
        let info = q.info(T).await?;
        let upstream = m
            .qemu_ga_version
            .split_once(':')
            .map_or(m.qemu_ga_version.as_str(), |(_, v)| v);
        let major_minor = upstream.split('+').next().unwrap_or_default();
        ensure!(
            info.version.starts_with(major_minor),
            "guest-info says {} for the package {}",
            info.version,
            m.qemu_ga_version
        );
        check_info(&info, false)?;
        ensure!(dangerous_commands(&info).is_empty());
        let enabled = |name: &str| {
            info.commands
                .iter()
                .find(|c| c.name == name)
                .map(|c| c.enabled)
        };
        for name in [
            "guest-exec",
            "guest-file-open",
            "guest-file-write",
            "guest-shutdown",
        ] {
            ensure!(
                enabled(name) == Some(false),
                "{name} is not listed as disabled: {info:?}"
            );
        }
        for name in [
            "guest-sync-delimited",
            "guest-ping",
            "guest-get-time",
            "guest-set-time",
            "guest-get-users",
            "guest-get-osinfo",
        ] {
            ensure!(
                enabled(name) == Some(true),
                "{name} is not enabled: {info:?}"
            );
        }
        let e = q
            .execute::<serde_json::Value>(
                "guest-exec",
                Some(serde_json::json!({"path": "/bin/sh"})),
                T,
            )
            .await
            .err()
            .context("guest-exec ran")?;
        ensure!(matches!(e, QgaError::Refused { .. }), "guest-exec: {e}");

        // The logged-in user, from utmp.
        let users = loop {
            let users = q.users(T).await?;
            if !users.is_empty() || vm.started.elapsed() > Duration::from_secs(60) {
                break users;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        ensure!(
            users.iter().map(|u| u.user.as_str()).collect::<Vec<_>>() == ["clinician"],
            "guest-get-users: {users:?}"
        );

        // The clock: set explicitly (qemu-ga then writes the RTC with hwclock), read back.
        let target = unix_ns() - 3_600 * 1_000_000_000;
        q.set_time(target, T).await?;
        let got = q.get_time(T).await?;
        ensure!(
            (got - target).abs() < 2_000_000_000,
            "guest-get-time {got} after guest-set-time {target}"
        );

        let os = q.osinfo(T).await?;
        ensure!(os["id"] == "airlock-qga-guest", "guest-get-osinfo: {os}");
        ensure!(
            os["kernel-release"] == m.kernel_version.as_str(),
            "guest-get-osinfo: {os}"
        );

        // A fresh connection (as after a clone) syncs again.
        drop(q);
        let mut q = vm.agent().await?;
        q.ping(T).await?;
        anyhow::Ok(())
    })
}

#[test]
fn garbage_mode_is_a_garbage_error() -> Result<()> {
    let Some((_, mut vm)) = Vm::boot("airlock.qga_mode=garbage")? else {
        return Ok(());
    };
    vm.status(Duration::from_secs(60))?;
    let e = airlock_testkit::block_on(vm.agent())
        .err()
        .context("the garbage agent synced")?;
    ensure!(matches!(e, QgaError::Garbage { .. }), "{e}");
    Ok(())
}

#[test]
fn allow_exec_mode_is_refused_by_the_info_check() -> Result<()> {
    let Some((_, mut vm)) = Vm::boot("airlock.qga_allow_exec=1")? else {
        return Ok(());
    };
    vm.status(Duration::from_secs(60))?;
    airlock_testkit::block_on(async {
        let mut q = vm.agent().await?;
        let info = q.info(T).await?;
        let dangerous = dangerous_commands(&info);
        ensure!(
            dangerous.contains(&"guest-exec") && dangerous.contains(&"guest-file-open"),
            "{dangerous:?}"
        );
        let e = check_info(&info, false)
            .err()
            .context("check_info accepted it")?;
        ensure!(matches!(e, QgaError::Dangerous { .. }), "{e}");
        anyhow::Ok(())
    })
}
