//! A TPM 2.0 per desktop: one `swtpm` process per QEMU process, started just before it
//! with an empty state directory in the run directory, as the desktop's uid and in its
//! cgroups. QEMU connects to its control socket; a template clone's TPM state comes
//! with the template's device state (QEMU's TPM emulator backend carries it in the
//! migration stream), so nothing of a previous session's TPM survives a reset.
//! `--terminate` ends swtpm when QEMU closes the control connection, so it ends with
//! its desktop's QEMU; the broker also kills it by its pid file, and `kill_stale` finds
//! it by its working directory and command line.
use crate::spec::files;
use crate::QemuError;
use std::os::fd::OwnedFd;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// swtpm's arguments (it works in the run directory: every path is relative to it).
pub fn swtpm_argv() -> Vec<String> {
    [
        "socket",
        "--tpm2",
        "--tpmstate",
        &format!("dir={},mode=0600", files::SWTPM_STATE),
        "--ctrl",
        &format!("type=unixio,path={},mode=0600", files::SWTPM),
        "--terminate",
        "--log",
        &format!("file={},level=1", files::SWTPM_LOG),
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect()
}

/// Whether a command line (NUL-separated, from `/proc/PID/cmdline`) is a desktop's
/// swtpm as [`swtpm_argv`] makes it.
pub fn is_desktop_swtpm(cmdline: &[u8]) -> bool {
    let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
    let ctrl = format!("type=unixio,path={},mode=0600", files::SWTPM);
    args.first().is_some_and(|a| a.ends_with(b"swtpm"))
        && args
            .windows(2)
            .any(|w| w[0] == b"--ctrl" && w[1] == ctrl.as_bytes())
}

/// Starts swtpm for the desktop whose run directory is `run_dir` and waits until its
/// control socket exists. `uid`: the desktop's; `cgroups`: its cgroups' `cgroup.procs`.
pub async fn spawn(
    swtpm: &Path,
    desktop: &str,
    run_dir: &Path,
    uid: Option<u32>,
    cgroups: &[OwnedFd],
) -> Result<i32, QemuError> {
    let fail = |what: &str, reason: String| QemuError::Operation {
        desktop: desktop.to_owned(),
        what: what.to_owned(),
        reason,
    };
    // The previous process's TPM (a frozen old process's included) is not this one's.
    kill_pidfile(run_dir);
    let state = run_dir.join(files::SWTPM_STATE);
    if state.exists() {
        std::fs::remove_dir_all(&state)
            .map_err(crate::io_error(format!("remove {}", state.display())))?;
    }
    std::fs::create_dir(&state).map_err(crate::io_error(format!("create {}", state.display())))?;
    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o700))
        .map_err(crate::io_error(format!("restrict {}", state.display())))?;
    if let Some(uid) = uid {
        rustix::fs::chown(
            &state,
            Some(rustix::fs::Uid::from_raw(uid)),
            Some(rustix::fs::Gid::from_raw(uid)),
        )
        .map_err(|e| crate::io_error(format!("give {} to uid {uid}", state.display()))(e.into()))?;
    }
    let sock = run_dir.join(files::SWTPM);
    match std::fs::remove_file(&sock) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            return Err(crate::io_error(format!("remove {}", sock.display()))(e))
        }
        _ => {}
    }
    let mut cmd = tokio::process::Command::new(swtpm);
    cmd.args(swtpm_argv())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .process_group(0)
        .kill_on_drop(false);
    crate::child::become_desktop(&mut cmd, run_dir, uid.map(|u| (u, None)))?;
    let mut child = cmd.spawn().map_err(|e| {
        fail(
            "start the TPM emulator",
            format!(
                "{}: {e}; install swtpm (apt-get install swtpm swtpm-tools)",
                swtpm.display()
            ),
        )
    })?;
    let pid = child
        .id()
        .and_then(|p| i32::try_from(p).ok())
        .ok_or_else(|| fail("start the TPM emulator", "no pid".into()))?;
    let procs: Vec<OwnedFd> = cgroups.iter().filter_map(|f| f.try_clone().ok()).collect();
    let joined = tokio::task::spawn_blocking(move || crate::child::join_cgroups(pid, &procs));
    std::fs::write(run_dir.join(files::SWTPM_PID), format!("{pid}\n"))
        .map_err(crate::io_error("write swtpm.pid"))?;
    tokio::spawn(async move {
        let _ = child.wait().await;
    });
    let joined = joined
        .await
        .map_err(|e| std::io::Error::other(e.to_string()))
        .and_then(|r| r);
    if let Err(e) = joined {
        crate::process::kill_pid(pid);
        return Err(fail(
            "move the TPM emulator into its cgroups",
            e.to_string(),
        ));
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while !sock.exists() {
        if tokio::time::Instant::now() >= deadline || !crate::process::is_alive(pid) {
            crate::process::kill_pid(pid);
            return Err(fail(
                "start the TPM emulator",
                format!(
                    "no control socket after 5 s; see {}",
                    run_dir.join(files::SWTPM_LOG).display()
                ),
            ));
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    Ok(pid)
}

/// Kills the swtpm its pid file names, if it is still a desktop swtpm working in
/// `run_dir`.
pub fn kill_pidfile(run_dir: &Path) {
    if let Some(pid) = pidfile(run_dir) {
        crate::process::kill_pid(pid);
    }
}

/// The swtpm of `run_dir`'s pid file, if it still runs there.
pub fn pidfile(run_dir: &Path) -> Option<i32> {
    let p: PathBuf = run_dir.join(files::SWTPM_PID);
    let pid: i32 = std::fs::read_to_string(p).ok()?.trim().parse().ok()?;
    crate::process::runs_in(pid, run_dir).then_some(pid)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_desktop_swtpm_is_known_by_its_command_line() {
        let mut line = b"/usr/bin/swtpm".to_vec();
        for a in swtpm_argv() {
            line.push(0);
            line.extend_from_slice(a.as_bytes());
        }
        assert!(is_desktop_swtpm(&line));
        assert!(!is_desktop_swtpm(
            b"/usr/bin/swtpm\0socket\0--ctrl\0type=unixio,path=/x"
        ));
        assert!(!is_desktop_swtpm(
            b"/usr/bin/qemu\0--ctrl\0type=unixio,path=swtpm.sock,mode=0600"
        ));
        assert!(!is_desktop_swtpm(b""));
    }

    #[test]
    fn every_path_is_relative_to_the_run_directory() {
        for a in swtpm_argv() {
            assert!(!a.contains('/'), "{a}");
        }
    }
}
