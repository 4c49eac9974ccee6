//! QEMU processes: start, re-attach after a broker restart, stop.
//!
//! QEMU runs in its own process group with stdio going to `qemu.log` in the run
//! directory, so it outlives the broker; a restarted broker finds it again through the
//! pid file and the QMP socket.
use crate::agent::{Agent, AgentError};
use crate::confine::Cgroups;
use crate::qga::{Qga, QgaError};
use crate::qmp::Qmp;
use crate::spec::{files, AgentProtocol, VmSpec};
use crate::QemuError;
use command_fds::{CommandFdExt, FdMapping};
use std::os::fd::OwnedFd;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// A connection to a desktop's stock guest agent, holding its port.
pub struct QgaSession<'a> {
    _held: tokio::sync::MutexGuard<'a, ()>,
    qga: Qga,
}

impl std::ops::Deref for QgaSession<'_> {
    type Target = Qga;
    fn deref(&self) -> &Qga {
        &self.qga
    }
}

impl std::ops::DerefMut for QgaSession<'_> {
    fn deref_mut(&mut self) -> &mut Qga {
        &mut self.qga
    }
}

/// A running QEMU process with a QMP session.
#[derive(Debug)]
pub struct Vm {
    pub pid: i32,
    pub qmp: Qmp,
    pub run_dir: PathBuf,
    /// Becomes `true` when the process has exited (child processes only; for re-attached
    /// processes watch [`Qmp::closed`]).
    exited: Option<watch::Receiver<bool>>,
    /// The connection to its guest agent port, made at start (or re-attach) and kept
    /// open (see [`crate::agent`]).
    agent: tokio::sync::Mutex<Option<Arc<Agent>>>,
    /// The most bytes of one file of the agent port's log.
    log_max: u64,
    /// Held while a [`Qga`] connection is open: the port takes one client at a time.
    qga_port: tokio::sync::Mutex<()>,
    /// Its TPM emulator's pid, if it has one.
    pub swtpm: Option<i32>,
    /// How long its start took, step by step (zero for a re-attached process).
    pub start_steps: StartSteps,
}

/// The steps of [`Vm::spawn`], in milliseconds (for a start's proof: where time goes).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct StartSteps {
    /// Run directory, files and descriptors, cgroups: until QEMU is executed.
    pub prepare_ms: u64,
    /// Of which making the cgroups and removing the previous process's.
    pub cgroups_ms: u64,
    /// From executing QEMU until its monitor (QMP) answers.
    pub monitor_ms: u64,
}

/// Reads a file QEMU wrote into its run directory: not through a link, not a device or
/// FIFO (opened non-blocking), not a file with other names, at most `max` bytes.
fn read_dump(path: &Path, max: u64) -> Result<Vec<u8>, QemuError> {
    use rustix::fs::{Mode, OFlags};
    let refused = |reason: String| QemuError::Operation {
        desktop: path.display().to_string(),
        what: "read the screendump".into(),
        reason,
    };
    let fd = rustix::fs::open(
        path,
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| refused(e.to_string()))?;
    let st = rustix::fs::fstat(&fd).map_err(|e| refused(e.to_string()))?;
    if rustix::fs::FileType::from_raw_mode(st.st_mode) != rustix::fs::FileType::RegularFile
        || st.st_nlink != 1
    {
        return Err(refused("not a plain file with one name".into()));
    }
    let size = u64::try_from(st.st_size).unwrap_or(u64::MAX);
    if size > max {
        return Err(refused(format!(
            "{size} bytes, more than the {max} accepted"
        )));
    }
    let mut buf = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
    let mut f = std::fs::File::from(fd);
    std::io::Read::read_to_end(&mut std::io::Read::take(&mut f, max + 1), &mut buf)
        .map_err(|e| refused(e.to_string()))?;
    if buf.len() as u64 > max {
        return Err(refused(format!("more than the {max} bytes accepted")));
    }
    Ok(buf)
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
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

/// Whether a process with this pid exists, is a desktop QEMU (its `-name` says so) or
/// its TPM emulator, and works in `run_dir` (protects against pid reuse).
pub fn runs_in(pid: i32, run_dir: &Path) -> bool {
    let Ok(cmd) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
        return false;
    };
    let is_ours = cmd
        .split(|b| *b == 0)
        .collect::<Vec<_>>()
        .windows(2)
        .any(|w| w[0] == b"-name" && w[1].starts_with(b"guest=airlock-"))
        || crate::tpm::is_desktop_swtpm(&cmd);
    let cwd = std::fs::read_link(format!("/proc/{pid}/cwd"));
    let here = std::fs::canonicalize(run_dir);
    is_ours && matches!((cwd, here), (Ok(a), Ok(b)) if a == b)
}

/// The serial logs of `spec`'s QEMU that QEMU writes (see [`crate::serial_log`]); the
/// agent port's is written by its [`Agent`].
fn qemu_serial_logs(spec: &VmSpec) -> Vec<&'static str> {
    let mut v = Vec::new();
    if spec.control_channel {
        v.push(files::CONTROL_LOG);
    }
    v
}

/// Connects to the agent port of the QEMU in `run_dir`, its output logged; a failure is
/// logged and left to [`Vm::agent`] to retry.
async fn connect_agent(run_dir: &Path, name: &str, log_max: u64) -> Option<Arc<Agent>> {
    let log = crate::serial_log::BoundedLog::new(run_dir, files::AGENT_LOG, log_max);
    match Agent::connect(
        &run_dir.join(files::AGENT),
        Duration::from_secs(5),
        Some(log),
    )
    .await
    {
        Ok(a) => Some(Arc::new(a)),
        Err(e) => {
            tracing::warn!(desktop = %name, error = %e, "cannot connect to the guest agent port yet");
            None
        }
    }
}

/// Opens what `spec`'s QEMU gets as descriptors (see [`crate::spec::fds`]).
fn inherited_files(spec: &VmSpec, ram: Option<&OwnedFd>) -> Result<Vec<FdMapping>, QemuError> {
    use crate::spec::fds;
    let open = |path: &Path, write: bool| -> Result<OwnedFd, QemuError> {
        std::fs::OpenOptions::new()
            .read(true)
            .write(write)
            .open(path)
            .map(OwnedFd::from)
            .map_err(crate::io_error(format!("open {}", path.display())))
    };
    let mut v = vec![
        FdMapping {
            parent_fd: open(&spec.disk, true)?,
            child_fd: fds::DISK_RW,
        },
        FdMapping {
            parent_fd: open(&spec.disk, false)?,
            child_fd: fds::DISK_RO,
        },
        FdMapping {
            parent_fd: open(&spec.golden, false)?,
            child_fd: fds::GOLDEN,
        },
    ];
    if let Some(base) = &spec.base_disk {
        v.push(FdMapping {
            parent_fd: open(base, false)?,
            child_fd: fds::BASE,
        });
    }
    if let Some(state) = &spec.device_state {
        v.push(FdMapping {
            parent_fd: open(state, false)?,
            child_fd: fds::DEVICE_STATE,
        });
    }
    if let Some(u) = spec.shape.uefi() {
        let vars = spec.vars.as_ref().ok_or_else(|| QemuError::Operation {
            desktop: spec.name.clone(),
            what: "give the desktop its UEFI variable store".into(),
            reason: "no copy of the store was made for this process".into(),
        })?;
        v.push(FdMapping {
            parent_fd: open(&u.code, false)?,
            child_fd: fds::FIRMWARE_CODE,
        });
        v.push(FdMapping {
            parent_fd: open(vars, true)?,
            child_fd: fds::VARS_RW,
        });
        v.push(FdMapping {
            parent_fd: open(vars, false)?,
            child_fd: fds::VARS_RO,
        });
    }
    if let Some(ram) = ram {
        v.push(FdMapping {
            parent_fd: ram
                .try_clone()
                .map_err(crate::io_error("duplicate the template's RAM descriptor"))?,
            child_fd: fds::RAM,
        });
    }
    if let crate::spec::Boot::Kernel { kernel, initrd, .. } = &spec.boot {
        for (path, fd) in [(kernel, fds::KERNEL), (initrd, fds::INITRD)] {
            // QEMU reopens these through /proc/self/fd: the inode must be readable by
            // the desktop's uid.
            if spec.confine.is_some() {
                let mode = std::fs::metadata(path)
                    .map_err(crate::io_error(format!("stat {}", path.display())))?
                    .permissions()
                    .mode();
                if mode & 0o004 == 0 {
                    return Err(QemuError::Operation {
                        desktop: spec.name.clone(),
                        what: "give the guest kernel to a confined QEMU".into(),
                        reason: format!(
                            "{} is not readable by other users; chmod o+r it",
                            path.display()
                        ),
                    });
                }
            }
            v.push(FdMapping {
                parent_fd: open(path, false)?,
                child_fd: fd,
            });
        }
    }
    Ok(v)
}

/// Whether `pid` runs (exists and is not a zombie).
pub(crate) fn is_alive(pid: i32) -> bool {
    !is_zombie_or_gone(pid)
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

pub(crate) fn kill_pid(pid: i32) {
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
    /// Starts QEMU for `spec` and connects to its QMP socket. `ram` is the template's
    /// sealed RAM (clones). The process works in the run directory, opens nothing else
    /// by path (its disks, kernel, device state and RAM come as descriptors, see
    /// [`spec::fds`](crate::spec::fds)) and, when `spec.confine` says so, runs as its own
    /// uid inside its cgroups.
    pub async fn spawn(
        spec: &VmSpec,
        ram: Option<&OwnedFd>,
        cgroups: Option<&Cgroups>,
    ) -> Result<Vm, QemuError> {
        let t_start = std::time::Instant::now();
        std::fs::create_dir_all(&spec.run_dir).map_err(crate::io_error(format!(
            "create run directory {}",
            spec.run_dir.display()
        )))?;
        if let Some(c) = &spec.confine {
            let uid = Some(rustix::fs::Uid::from_raw(c.uid));
            let gid = Some(rustix::fs::Gid::from_raw(c.uid));
            rustix::fs::chown(&spec.run_dir, uid, gid).map_err(|e| {
                crate::io_error(format!("give {} to uid {}", spec.run_dir.display(), c.uid))(
                    e.into(),
                )
            })?;
        }
        std::fs::set_permissions(&spec.run_dir, std::fs::Permissions::from_mode(0o700)).map_err(
            crate::io_error(format!("restrict {}", spec.run_dir.display())),
        )?;
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
        let logs = qemu_serial_logs(spec);
        for log in &logs {
            crate::serial_log::make_fifo(&spec.run_dir, log, spec.confine.as_ref().map(|c| c.uid))?;
        }
        let inherited = inherited_files(spec, ram)?;
        let t_cgroups = std::time::Instant::now();
        let cgroup_procs = match (&spec.confine, cgroups) {
            (Some(c), Some(cg)) => {
                let procs = crate::confine::prepare_cgroup(cg, c)?;
                crate::confine::remove_old_cgroups(cg, c);
                procs
            }
            _ => Vec::new(),
        };
        let cgroups_ms = ms(t_cgroups.elapsed());
        let swtpm = match &spec.shape.tpm {
            Some(bin) => Some(
                crate::tpm::spawn(
                    bin,
                    &spec.name,
                    &spec.run_dir,
                    spec.confine.as_ref().map(|c| c.uid),
                    &cgroup_procs,
                )
                .await?,
            ),
            None => None,
        };
        let argv = spec.argv();
        tracing::debug!(desktop = %spec.name, qemu = %spec.qemu.display(), ?argv, uid = ?spec.confine.as_ref().map(|c| c.uid), "starting QEMU");
        let mut cmd = tokio::process::Command::new(&spec.qemu);
        cmd.args(&argv)
            .stdin(std::process::Stdio::null())
            .stdout(log)
            .stderr(log2)
            .process_group(0)
            .kill_on_drop(false);
        cmd.fd_mappings(inherited).map_err(|e| QemuError::Spawn {
            qemu: spec.qemu.display().to_string(),
            reason: e.to_string(),
        })?;
        crate::child::become_desktop(
            &mut cmd,
            &spec.run_dir,
            spec.confine.as_ref().map(|c| (c.uid, c.kvm_gid)),
        )?;
        let t_exec = std::time::Instant::now();
        let prepare_ms = ms(t_exec - t_start);
        let mut child = cmd.spawn().map_err(|e| {
            if let Some(p) = swtpm {
                kill_pid(p);
            }
            QemuError::Spawn {
                qemu: spec.qemu.display().to_string(),
                reason: e.to_string(),
            }
        })?;
        let pid = child
            .id()
            .and_then(|p| i32::try_from(p).ok())
            .ok_or_else(|| QemuError::Spawn {
                qemu: spec.qemu.display().to_string(),
                reason: "no pid".into(),
            })?;
        // Into its cgroups while it starts (see `crate::child`): done before its monitor
        // is used, so before a clone's guest runs.
        let joined =
            tokio::task::spawn_blocking(move || crate::child::join_cgroups(pid, &cgroup_procs));
        let pid_path = spec.run_file(files::PID);
        if let Err(e) = std::fs::write(&pid_path, format!("{pid}\n")) {
            kill_pid(pid);
            return Err(crate::io_error(format!("write {}", pid_path.display()))(e));
        }
        let (tx, rx) = watch::channel(false);
        let mut exited_rx = rx.clone();
        for log in logs {
            let mut exited = rx.clone();
            tokio::spawn(crate::serial_log::copy(
                spec.run_dir.clone(),
                log.to_owned(),
                spec.serial_log_bytes,
                async move {
                    let _ = exited.wait_for(|v| *v).await;
                },
            ));
        }
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
        let joined = joined
            .await
            .map_err(|e| std::io::Error::other(e.to_string()))
            .and_then(|r| r);
        if let Err(e) = joined {
            kill_pid(pid);
            return Err(QemuError::Operation {
                desktop: spec.name.clone(),
                what: "move QEMU into its cgroups".into(),
                reason: e.to_string(),
            });
        }
        let start_steps = StartSteps {
            prepare_ms,
            cgroups_ms,
            monitor_ms: ms(t_exec.elapsed()),
        };
        if let Some(cap) = spec.disk_cap_bytes {
            // Before the guest runs (clones wait for their device state, cold boots
            // have barely started): writes past the cap are reported at once.
            let args = serde_json::json!({
                "node-name": crate::spec::DISK_FILE_NODE,
                "write-threshold": cap,
            });
            if let Err(e) = qmp
                .execute(
                    "block-set-write-threshold",
                    Some(args),
                    Duration::from_secs(5),
                )
                .await
            {
                kill_pid(pid);
                return Err(crate::qmp_error(&spec.name)(e));
            }
        }
        if let Some(placement) = &spec.placement {
            if let Err(e) = crate::affinity::place_vm(&spec.name, pid, &qmp, placement).await {
                kill_pid(pid);
                return Err(e);
            }
        }
        let agent = match spec.agent_protocol {
            AgentProtocol::Airlock => {
                connect_agent(&spec.run_dir, &spec.name, spec.serial_log_bytes).await
            }
            AgentProtocol::Qga => None,
        };
        Ok(Vm {
            pid,
            qmp,
            run_dir: spec.run_dir.clone(),
            exited: Some(rx),
            agent: tokio::sync::Mutex::new(agent),
            log_max: spec.serial_log_bytes,
            qga_port: tokio::sync::Mutex::new(()),
            swtpm,
            start_steps,
        })
    }

    /// Re-attaches to a QEMU process left running by a previous broker: reads the pid
    /// file, checks the process is ours, and connects to QMP.
    pub async fn attach(
        run_dir: &Path,
        name: &str,
        spec: Option<&VmSpec>,
    ) -> Result<Vm, QemuError> {
        let pid_path = run_dir.join(files::PID);
        let text = std::fs::read_to_string(&pid_path)
            .map_err(crate::io_error(format!("read {}", pid_path.display())))?;
        let pid: i32 = text.trim().parse().map_err(|_| QemuError::NotRunning {
            desktop: name.into(),
            why: format!("pid file {} is not a number", pid_path.display()),
        })?;
        let qmp_path = run_dir.join(files::QMP);
        if is_zombie_or_gone(pid) || !runs_in(pid, run_dir) {
            return Err(QemuError::NotRunning {
                desktop: name.into(),
                why: format!("process {pid} is gone"),
            });
        }
        let qmp = Qmp::connect(&qmp_path, Duration::from_secs(5))
            .await
            .map_err(crate::qmp_error(name))?;
        // Read its serial logs again (QEMU dropped what it wrote while nobody read).
        let log_max = spec.map_or(1 << 20, |s| s.serial_log_bytes);
        for log in spec.map(qemu_serial_logs).unwrap_or_default() {
            tokio::spawn(crate::serial_log::copy(
                run_dir.to_owned(),
                log.to_owned(),
                log_max,
                qmp.closed_signal(),
            ));
        }
        let agent = match spec.map(|s| s.agent_protocol).unwrap_or_default() {
            AgentProtocol::Airlock => connect_agent(run_dir, name, log_max).await,
            AgentProtocol::Qga => None,
        };
        Ok(Vm {
            pid,
            qmp,
            run_dir: run_dir.to_owned(),
            exited: None,
            agent: tokio::sync::Mutex::new(agent),
            log_max,
            qga_port: tokio::sync::Mutex::new(()),
            swtpm: crate::tpm::pidfile(run_dir),
            start_steps: StartSteps::default(),
        })
    }

    /// A new connection to the stock guest agent on its agent port, synced (see
    /// [`crate::qga`]); the port is this caller's until the session is dropped.
    pub async fn qga(&self, timeout: Duration) -> Result<QgaSession<'_>, QgaError> {
        let held = self.qga_port.lock().await;
        let qga = Qga::connect(&self.run_dir.join(files::AGENT), timeout).await?;
        Ok(QgaSession { _held: held, qga })
    }

    /// Its guest agent port: the open connection, or a new one (waiting up to
    /// `timeout` for QEMU to listen) when there is none or it has closed.
    pub async fn agent(&self, timeout: Duration) -> Result<Arc<Agent>, AgentError> {
        let mut held = self.agent.lock().await;
        if let Some(a) = held.as_ref().filter(|a| !a.is_closed()) {
            return Ok(a.clone());
        }
        let log = crate::serial_log::BoundedLog::new(&self.run_dir, files::AGENT_LOG, self.log_max);
        let a =
            Arc::new(Agent::connect(&self.run_dir.join(files::AGENT), timeout, Some(log)).await?);
        *held = Some(a.clone());
        Ok(a)
    }

    /// The guest's screen as QEMU renders it (QMP `screendump`): the bytes of the binary
    /// PPM it writes into the run directory, read without following a link, only from
    /// a regular file with one name and at most `max_bytes`, then deleted. The bytes
    /// come from the process that runs the guest: parse them strictly.
    pub async fn screendump(
        &self,
        max_bytes: u64,
        timeout: Duration,
    ) -> Result<Vec<u8>, QemuError> {
        let name = format!("screendump-{}.ppm", uuid::Uuid::new_v4().simple());
        let path = self.run_dir.join(&name);
        // QEMU resolves the name in its working directory, the run directory.
        let dumped = self
            .qmp
            .execute(
                "screendump",
                Some(serde_json::json!({ "filename": name })),
                timeout,
            )
            .await;
        let read = match dumped {
            Ok(_) => read_dump(&path, max_bytes),
            Err(e) => Err(QemuError::Operation {
                desktop: self.run_dir.display().to_string(),
                what: "screendump".into(),
                reason: e.to_string(),
            }),
        };
        let _ = std::fs::remove_file(&path);
        read
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
        if let Some(p) = self.swtpm {
            kill_pid(p);
        }
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
        if let Some(p) = self.swtpm {
            kill_pid(p);
        }
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

/// Every QEMU process that works in `run_dir` (see [`runs_in`]): the one its pid file
/// names, and any other, such as a process frozen for a template clone by a broker
/// that died before it could kill it.
fn stale_pids(run_dir: &Path) -> Vec<i32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| runs_in(*pid, run_dir))
        .collect()
}

/// Kills every QEMU process of a run directory without waiting for it to exit.
pub fn kill_stale_now(run_dir: &Path) {
    kill_stale_now_except(run_dir, None);
}

/// [`kill_stale_now`], sparing the process `spare` (one the caller is retiring itself).
pub fn kill_stale_now_except(run_dir: &Path, spare: Option<i32>) {
    for pid in stale_pids(run_dir) {
        if Some(pid) != spare {
            kill_pid_in_background(pid);
        }
    }
}

/// Kills every QEMU process of a run directory and waits (up to 10 s) until they are
/// gone. Returns how many there were.
pub async fn kill_stale(run_dir: &Path) -> usize {
    let pids = stale_pids(run_dir);
    for pid in &pids {
        kill_pid(*pid);
    }
    for _ in 0..2000 {
        if pids.iter().all(|p| is_zombie_or_gone(*p)) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    pids.len()
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
