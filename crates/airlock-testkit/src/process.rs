//! Child processes and directories that never outlive a test: a [`Proc`] is killed and
//! reaped when dropped (also while a test panics), a [`RunDir`] is removed, and after
//! [`stop_everything_on_signal`] both happen on SIGINT/SIGTERM too, where no destructor
//! runs. [`sweep_processes`] finds processes by a path in their command line: a broker's
//! QEMUs are not its children once it is gone.
use anyhow::{bail, Context, Result};
pub use rustix::process::Signal;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

type Cleanup = Box<dyn Fn() + Send>;

/// What to stop if the process is interrupted (Drop does not run then).
static CLEANUPS: Mutex<Vec<(u64, Cleanup)>> = Mutex::new(Vec::new());

/// Registers `f` to run on SIGINT/SIGTERM; returns the id to unregister it with.
pub(crate) fn register_cleanup(f: Cleanup) -> u64 {
    let id = crate::net::nonce();
    CLEANUPS
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push((id, f));
    id
}

pub(crate) fn unregister_cleanup(id: u64) {
    CLEANUPS
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .retain(|(i, _)| *i != id);
}

/// On SIGINT or SIGTERM, stop every process and VM the kit started (what Drop would
/// have done on a normal exit or a panic), newest first, then exit with 130.
/// Idempotent; benchmarks and long tests call it once at the start.
pub fn stop_everything_on_signal() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        std::thread::spawn(|| {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async {
                let Ok(mut term) =
                    tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                else {
                    return;
                };
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            });
            eprintln!("interrupted: stopping the VMs and processes this run started");
            let all = std::mem::take(&mut *CLEANUPS.lock().unwrap_or_else(|e| e.into_inner()));
            for (_, f) in all.iter().rev() {
                f();
            }
            std::process::exit(130);
        });
    });
}

/// A temporary directory, removed when dropped (and on SIGINT/SIGTERM after
/// [`stop_everything_on_signal`], after the processes registered later, i.e. the ones
/// using it, are stopped). Short paths under `/tmp`: QEMU's Unix sockets live in it.
pub struct RunDir {
    dir: tempfile::TempDir,
    cleanup: u64,
}

impl RunDir {
    /// A new directory `/tmp/<prefix>XXXXXX`.
    pub fn new(prefix: &str) -> Result<RunDir> {
        let dir = tempfile::Builder::new()
            .prefix(prefix)
            .tempdir()
            .with_context(|| format!("creating a temporary directory {prefix}*"))?;
        let path = dir.path().to_path_buf();
        Ok(RunDir {
            dir,
            cleanup: register_cleanup(Box::new(move || {
                let _ = std::fs::remove_dir_all(&path);
            })),
        })
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// `name` inside the directory.
    pub fn join(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

impl Drop for RunDir {
    fn drop(&mut self) {
        unregister_cleanup(self.cleanup);
    }
}

/// Sends `signal` to `pid`; a process that is already gone is not an error.
pub fn signal_pid(pid: u32, signal: rustix::process::Signal) {
    let Ok(raw) = i32::try_from(pid) else { return };
    if let Some(p) = rustix::process::Pid::from_raw(raw) {
        let _ = rustix::process::kill_process(p, signal);
    }
}

/// SIGKILL `pid` (gone already is fine).
pub fn kill_pid(pid: u32) {
    signal_pid(pid, rustix::process::Signal::KILL);
}

/// Every process id in `/proc`.
pub fn pids() -> Vec<u32> {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .collect()
}

/// A process's or thread's `stat` file of `/proc` (proc(5)): its command name and the
/// fields after it.
pub struct Stat {
    /// The command name (field 2), without its parentheses.
    pub comm: String,
    /// Fields 3 and on.
    rest: Vec<String>,
}

impl Stat {
    /// Reads a `stat` file: `/proc/PID/stat` or `/proc/PID/task/TID/stat`; `None` when
    /// it is gone or does not parse.
    pub fn read(path: &Path) -> Option<Stat> {
        let text = std::fs::read_to_string(path).ok()?;
        // The name may hold spaces and parentheses: it ends at the last ')'.
        let (head, tail) = text.rsplit_once(')')?;
        let (_, comm) = head.split_once('(')?;
        Some(Stat {
            comm: comm.to_string(),
            rest: tail.split_whitespace().map(str::to_string).collect(),
        })
    }

    /// `/proc/PID/stat`.
    pub fn of(pid: u32) -> Option<Stat> {
        Stat::read(Path::new(&format!("/proc/{pid}/stat")))
    }

    /// Field `n` as proc(5) numbers them, from 3 on (3 the state, 4 the parent's pid,
    /// 14 and 15 the user and system CPU time in clock ticks).
    pub fn field(&self, n: usize) -> Option<&str> {
        self.rest.get(n.checked_sub(3)?).map(String::as_str)
    }

    /// Field `n` as a number.
    pub fn number(&self, n: usize) -> Option<u64> {
        self.field(n)?.parse().ok()
    }
}

/// Whether a process exists and is not a zombie.
pub fn alive(pid: u32) -> bool {
    Stat::of(pid).is_some_and(|s| s.field(3) != Some("Z"))
}

/// The command line of `pid`, arguments joined by spaces (empty when it is gone).
pub fn cmdline(pid: u32) -> String {
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    String::from_utf8_lossy(&raw).replace('\0', " ")
}

/// The processes working in `run` (a desktop's QEMU and swtpm name no path: they work
/// in its run directory) whose program's file name starts with `program` (e.g.
/// `qemu-system`, `swtpm`); none when `run` is gone.
pub fn processes_in(run: &Path, program: &str) -> Vec<u32> {
    let Ok(run) = std::fs::canonicalize(run) else {
        return Vec::new();
    };
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    procs
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_link(format!("/proc/{pid}/cwd")).is_ok_and(|c| c == run)
                && std::fs::read_link(format!("/proc/{pid}/exe")).is_ok_and(|e| {
                    e.file_name()
                        .is_some_and(|n| n.to_string_lossy().starts_with(program))
                })
        })
        .collect()
}

/// Kills (SIGKILL) every process but this one whose command line mentions `dir` (a
/// broker: every path it uses is under its state directory) or that works in it (its
/// QEMUs) and waits until they are gone, at most 10 s. Returns their pids.
pub fn sweep_processes(dir: &Path) -> Vec<u32> {
    let needle = dir.display().to_string();
    let dir = &std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_owned());
    let me = std::process::id();
    let mut killed = Vec::new();
    for pid in pids() {
        // A desktop QEMU names no path (it gets descriptors) but works in its run
        // directory.
        let works_here =
            std::fs::read_link(format!("/proc/{pid}/cwd")).is_ok_and(|cwd| cwd.starts_with(dir));
        if pid != me && (cmdline(pid).contains(&needle) || works_here) {
            kill_pid(pid);
            killed.push(pid);
        }
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline && killed.iter().any(|p| alive(*p)) {
        std::thread::sleep(Duration::from_millis(20));
    }
    killed
}

/// Human-readable form of a command line, for messages.
pub fn describe(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

/// Runs a command to completion, capturing its output; a non-zero exit is an error that
/// quotes the command and its stderr.
pub fn run(cmd: &mut Command) -> Result<Output> {
    let what = describe(cmd);
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("could not start `{what}` (is it installed?)"))?;
    if !out.status.success() {
        bail!(
            "`{what}` failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(out)
}

/// [`run`], returning stdout as text.
pub fn run_stdout(cmd: &mut Command) -> Result<String> {
    let out = run(cmd)?;
    String::from_utf8(out.stdout).with_context(|| format!("`{}` printed non-UTF-8", describe(cmd)))
}

/// How a run of a command-line program ended and what it printed.
#[derive(Debug)]
pub struct CliRun {
    /// The exit code (`None` when a signal ended it).
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl CliRun {
    /// Everything it printed, stdout then stderr.
    pub fn text(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }
}

/// Runs `program ARGS…` to completion with stdin closed and the variables `unset`
/// removed from its environment: a test of a binary's arguments, messages and exit
/// codes.
pub fn cli(program: &Path, args: &[&str], unset: &[&str]) -> Result<CliRun> {
    let mut cmd = Command::new(program);
    cmd.args(args).stdin(Stdio::null());
    for var in unset {
        cmd.env_remove(var);
    }
    let out = cmd
        .output()
        .with_context(|| format!("running `{}`", describe(&cmd)))?;
    Ok(CliRun {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    })
}

/// A child process that is killed (SIGKILL) and reaped when dropped (and killed on
/// SIGINT/SIGTERM after [`stop_everything_on_signal`]).
pub struct Proc {
    child: Child,
    what: String,
    cleanup: u64,
}

impl Proc {
    /// Starts `cmd`; `what` names it in messages.
    pub fn spawn(cmd: &mut Command, what: &str) -> Result<Proc> {
        let child = cmd
            .spawn()
            .with_context(|| format!("starting {what}: `{}`", describe(cmd)))?;
        let pid = child.id();
        Ok(Proc {
            child,
            what: what.to_string(),
            cleanup: register_cleanup(Box::new(move || kill_pid(pid))),
        })
    }

    pub fn id(&self) -> u32 {
        self.child.id()
    }

    pub fn child(&mut self) -> &mut Child {
        &mut self.child
    }

    /// Still running?
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Sends a signal (e.g. `Signal::INT` for Ctrl-C).
    pub fn signal(&self, signal: rustix::process::Signal) {
        signal_pid(self.id(), signal);
    }

    /// Waits for the process to exit, at most `timeout`.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Result<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(st) = self.child.try_wait()? {
                return Ok(st);
            }
            if Instant::now() > deadline {
                bail!("{} did not exit within {timeout:?}", self.what);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL and reap now.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
        unregister_cleanup(self.cleanup);
    }
}

/// Reads `path` as text, or "" (for logs that may not exist yet).
pub fn read_or_empty(path: &Path) -> String {
    String::from_utf8_lossy(&std::fs::read(path).unwrap_or_default()).into_owned()
}

/// The last `n` lines of a text file (for failure messages).
pub fn tail(path: &Path, n: usize) -> String {
    let text = read_or_empty(path);
    let v: Vec<&str> = text.lines().collect();
    v[v.len().saturating_sub(n)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_numbered_as_in_proc5() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("stat");
        std::fs::write(&path, "42 (a) b (c)) S 7 42 42 0 -1 0 1 2 3 4 150 25 0\n").unwrap();
        let s = Stat::read(&path).unwrap();
        assert_eq!(s.comm, "a) b (c)");
        assert_eq!(s.field(3), Some("S"));
        assert_eq!(s.number(4), Some(7));
        assert_eq!(s.number(14), Some(150));
        assert_eq!(s.number(15), Some(25));
        assert_eq!(s.field(2), None);
        assert!(alive(std::process::id()));
        assert!(pids().contains(&std::process::id()));
    }
}
