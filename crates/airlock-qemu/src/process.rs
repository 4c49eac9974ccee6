//! QEMU processes: start, re-attach after a broker restart, stop.
//!
//! QEMU runs in its own process group with stdio going to `qemu.log` in the run
//! directory, so it outlives the broker; a restarted broker finds it again through the
//! pid file and the QMP socket.
use crate::qmp::Qmp;
use crate::spec::{files, VmSpec};
use crate::QemuError;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::sync::watch;

/// A running QEMU process with a QMP session.
#[derive(Debug)]
pub struct Vm {
    pub pid: i32,
    pub qmp: Qmp,
    pub run_dir: PathBuf,
    /// Becomes `true` when the process has exited (child processes only; for re-attached
    /// processes watch [`Qmp::closed`]).
    exited: Option<watch::Receiver<bool>>,
}

fn remove_if_exists(p: &Path) -> std::io::Result<()> {
    match std::fs::remove_file(p) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// The last lines of a log file, for error messages.
pub fn log_tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read(path).unwrap_or_default();
    let text = String::from_utf8_lossy(&text);
    let v: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    v[v.len().saturating_sub(lines)..].join(" | ")
}

/// Whether a process with this pid exists and its command line mentions `needle`
/// (protects against pid reuse).
pub fn process_matches(pid: i32, needle: &str) -> bool {
    match std::fs::read(format!("/proc/{pid}/cmdline")) {
        Ok(cmd) => {
            let s = String::from_utf8_lossy(&cmd);
            s.contains(needle)
        }
        Err(_) => false,
    }
}

fn is_zombie_or_gone(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => s
            .rsplit_once(')')
            .map(|(_, rest)| rest.trim_start().starts_with('Z'))
            .unwrap_or(true),
        Err(_) => true,
    }
}

/// A `Name:   1234 kB` field of a /proc file, in bytes.
fn kib_field(text: &str, name: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with(name))?;
    let kib = line[name.len()..]
        .split_whitespace()
        .next()?
        .parse::<u64>()
        .ok()?;
    kib.checked_mul(1024)
}

/// The host's available memory (`MemAvailable` in /proc/meminfo) in bytes.
pub fn host_available_bytes() -> Option<u64> {
    kib_field(
        &std::fs::read_to_string("/proc/meminfo").ok()?,
        "MemAvailable:",
    )
}

fn kill_pid(pid: i32) {
    if let Some(p) = rustix::process::Pid::from_raw(pid) {
        let _ = rustix::process::kill_process(p, rustix::process::Signal::KILL);
    }
}

/// Kills `pid` without waiting, after lowering every thread of it to the lowest CPU
/// priority (nice 19): a killed process frees its memory in the kernel on its own
/// threads' time, and for a desktop with gigabytes of dirtied RAM that is tens of
/// milliseconds of CPU that should not compete with the desktop's replacement.
fn kill_pid_in_background(pid: i32) {
    if let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) {
        for tid in tasks.flatten() {
            let tid = tid.file_name().to_str().and_then(|t| t.parse::<i32>().ok());
            if let Some(tid) = tid.and_then(rustix::process::Pid::from_raw) {
                let _ = rustix::process::setpriority_process(Some(tid), 19);
            }
        }
    }
    kill_pid(pid);
}

impl Vm {
    /// Starts QEMU for `spec` and connects to its QMP socket.
    pub async fn spawn(spec: &VmSpec) -> Result<Vm, QemuError> {
        std::fs::create_dir_all(&spec.run_dir).map_err(crate::io_error(format!(
            "create run directory {}",
            spec.run_dir.display()
        )))?;
        for f in [
            files::QMP,
            files::AGENT,
            files::CONTROL,
            files::USBREDIR,
            files::PID,
        ] {
            remove_if_exists(&spec.run_file(f))
                .map_err(crate::io_error(format!("remove stale {f}")))?;
        }
        // Keep the previous process's guest output for forensics, start a new one.
        for f in [files::AGENT_LOG, files::CONTROL_LOG] {
            let cur = spec.run_file(f);
            if cur.exists() {
                let _ = std::fs::rename(&cur, spec.run_file(&format!("{f}.1")));
            }
        }
        let log_path = spec.run_file(files::LOG);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(crate::io_error(format!("open {}", log_path.display())))?;
        let log2 = log
            .try_clone()
            .map_err(crate::io_error("duplicate log handle"))?;
        let argv = spec.argv();
        tracing::debug!(desktop = %spec.name, qemu = %spec.qemu.display(), ?argv, "starting QEMU");
        let mut child = tokio::process::Command::new(&spec.qemu)
            .args(&argv)
            .stdin(std::process::Stdio::null())
            .stdout(log)
            .stderr(log2)
            .process_group(0)
            .kill_on_drop(false)
            .spawn()
            .map_err(|e| QemuError::Spawn {
                qemu: spec.qemu.display().to_string(),
                reason: e.to_string(),
            })?;
        let pid = child
            .id()
            .and_then(|p| i32::try_from(p).ok())
            .ok_or_else(|| QemuError::Spawn {
                qemu: spec.qemu.display().to_string(),
                reason: "no pid".into(),
            })?;
        let (tx, rx) = watch::channel(false);
        let mut exited_rx = rx.clone();
        tokio::spawn(async move {
            let _ = child.wait().await;
            let _ = tx.send(true);
        });
        let qmp_path = spec.run_file(files::QMP);
        let connect = Qmp::connect(&qmp_path, Duration::from_secs(20));
        let qmp = tokio::select! {
            r = connect => r,
            _ = exited_rx.wait_for(|v| *v) => {
                return Err(QemuError::Exited {
                    desktop: spec.name.clone(),
                    log: log_tail(&log_path, 5),
                });
            }
        };
        let qmp = match qmp {
            Ok(q) => q,
            Err(e) => {
                kill_pid(pid);
                return Err(crate::qmp_error(&spec.name)(e));
            }
        };
        if let Some(placement) = &spec.placement {
            if let Err(e) = crate::affinity::place_vm(&spec.name, pid, &qmp, placement).await {
                kill_pid(pid);
                return Err(e);
            }
        }
        Ok(Vm {
            pid,
            qmp,
            run_dir: spec.run_dir.clone(),
            exited: Some(rx),
        })
    }

    /// Re-attaches to a QEMU process left running by a previous broker: reads the pid
    /// file, checks the process is ours, and connects to QMP.
    pub async fn attach(run_dir: &Path, name: &str) -> Result<Vm, QemuError> {
        let pid_path = run_dir.join(files::PID);
        let text = std::fs::read_to_string(&pid_path)
            .map_err(crate::io_error(format!("read {}", pid_path.display())))?;
        let pid: i32 = text.trim().parse().map_err(|_| QemuError::NotRunning {
            desktop: name.into(),
            why: format!("pid file {} is not a number", pid_path.display()),
        })?;
        let qmp_path = run_dir.join(files::QMP);
        if is_zombie_or_gone(pid) || !process_matches(pid, &qmp_path.display().to_string()) {
            return Err(QemuError::NotRunning {
                desktop: name.into(),
                why: format!("process {pid} is gone"),
            });
        }
        let qmp = Qmp::connect(&qmp_path, Duration::from_secs(5))
            .await
            .map_err(crate::qmp_error(name))?;
        Ok(Vm {
            pid,
            qmp,
            run_dir: run_dir.to_owned(),
            exited: None,
        })
    }

    /// Whether the process still runs.
    pub fn is_alive(&self) -> bool {
        if let Some(rx) = &self.exited {
            if *rx.borrow() {
                return false;
            }
        }
        !is_zombie_or_gone(self.pid) && !self.qmp.is_closed()
    }

    /// Waits until the process exits or its monitor connection ends.
    pub async fn died(&self) {
        match &self.exited {
            Some(rx) => {
                let mut rx = rx.clone();
                tokio::select! {
                    _ = rx.wait_for(|v| *v) => {}
                    _ = self.qmp.closed() => {}
                }
            }
            None => self.qmp.closed().await,
        }
    }

    /// Sends SIGKILL and returns at once. The process can no longer run guest code; the
    /// kernel frees its memory in the background (for a desktop with gigabytes of dirtied
    /// RAM that takes a while, and nothing needs to wait for it: every resource a new
    /// process needs is a new file or socket).
    pub fn kill_now(&self) {
        kill_pid_in_background(self.pid);
    }

    /// Resident memory of the process in bytes (`VmRSS`), if it can be read.
    pub fn resident_bytes(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid)).ok()?;
        kib_field(&status, "VmRSS:")
    }

    /// Stops every thread of the process (SIGSTOP) at once: the guest runs no more code
    /// and QEMU serves none of its sockets, while its memory stays allocated until
    /// [`Vm::kill_now`].
    pub fn freeze(&self) {
        if let Some(p) = rustix::process::Pid::from_raw(self.pid) {
            let _ = rustix::process::kill_process(p, rustix::process::Signal::STOP);
        }
    }

    /// Kills the process (SIGKILL: a disposable desktop needs no clean shutdown) and waits
    /// until it is gone.
    pub async fn kill(&self) {
        kill_pid(self.pid);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let gone = match &self.exited {
                Some(rx) => *rx.borrow(),
                None => is_zombie_or_gone(self.pid),
            };
            if gone || tokio::time::Instant::now() > deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

/// The pid a run directory's pid file names, if that process is still ours (its command
/// line names this run directory's QMP socket: pids get reused).
fn stale_pid(run_dir: &Path) -> Option<i32> {
    let text = std::fs::read_to_string(run_dir.join(files::PID)).ok()?;
    let pid = text.trim().parse::<i32>().ok()?;
    let needle = run_dir.join(files::QMP).display().to_string();
    process_matches(pid, &needle).then_some(pid)
}

/// Kills whatever QEMU process a run directory's pid file names, if it is still ours,
/// without waiting for it to exit.
pub fn kill_stale_now(run_dir: &Path) {
    kill_stale_now_except(run_dir, None);
}

/// [`kill_stale_now`], sparing the process `spare` (one the caller is retiring itself).
pub fn kill_stale_now_except(run_dir: &Path, spare: Option<i32>) {
    if let Some(pid) = stale_pid(run_dir).filter(|pid| Some(*pid) != spare) {
        kill_pid_in_background(pid);
    }
}

/// Kills whatever QEMU process a run directory's pid file names, if it is still ours, and
/// waits (up to 10 s) until it is gone.
pub async fn kill_stale(run_dir: &Path) {
    if let Some(pid) = stale_pid(run_dir) {
        kill_pid(pid);
        for _ in 0..2000 {
            if is_zombie_or_gone(pid) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_fields_in_bytes() {
        let status = "Name:\tqemu\nVmPeak:\t  100 kB\nVmRSS:\t 3928064 kB\nThreads:\t7\n";
        assert_eq!(kib_field(status, "VmRSS:"), Some(3928064 * 1024));
        assert_eq!(kib_field(status, "VmSwap:"), None);
        assert_eq!(kib_field("VmRSS: lots kB\n", "VmRSS:"), None);
        assert!(host_available_bytes().is_some_and(|b| b > 0));
    }
}
