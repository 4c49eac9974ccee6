//! Test harness: boots the demo guest under QEMU TCG with its agent port
//! (ttyS0), its control port (ttyS1) and QMP on Unix sockets, and hot-plugs
//! USB CD drives the way a forwarded terminal drive appears.
#![allow(dead_code)] // each test binary uses a different part of it

use anyhow::{bail, ensure, Context, Result};
use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};
use xtask::disc::{self, FileList};
use xtask::guest::{self, Manifest};
use xtask::rig::{connect_unix, nonce, Qmp};

pub const QEMU: &str = "qemu-system-x86_64";

/// The guest and the sample discs, built once per test binary (cached on
/// disk by xtask across runs). `None` when QEMU is not installed: the only
/// reason a test here may skip.
pub struct Artifacts {
    pub guest: Manifest,
    pub small: FileList,
    pub big: FileList,
}

pub fn artifacts() -> Option<&'static Artifacts> {
    if !xtask::util::have(QEMU) {
        eprintln!("SKIPPED: {QEMU} is not installed (apt-get install qemu-system-x86 qemu-utils)");
        return None;
    }
    static BUILT: OnceLock<Artifacts> = OnceLock::new();
    Some(BUILT.get_or_init(|| {
        let guest = guest::build(&guest::Options {
            out: guest::default_out(),
            force: false,
        })
        .expect("building the guest (cargo xtask guest)");
        let discs = disc::build(&disc::Options {
            out: disc::default_out(),
            force: false,
        })
        .expect("building the sample discs (cargo xtask sample-disc)");
        let find = |name: &str| {
            discs
                .iter()
                .find(|d| d.iso.file_name().is_some_and(|f| f == name))
                .cloned()
                .expect("disc built")
        };
        Artifacts {
            small: find("sample-small.iso"),
            big: find("sample.iso"),
            guest,
        }
    }))
}

/// One VM at a time: the machine has two cores shared with others, and TCG
/// is CPU-bound.
pub fn one_vm_at_a_time() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// Lines received on a serial port, with a condition variable to wait on.
#[derive(Default)]
struct Lines {
    lines: Mutex<Vec<String>>,
    cond: Condvar,
}

pub struct Vm {
    child: Child,
    dir: tempfile::TempDir,
    qmp: Qmp,
    agent: UnixStream,
    agent_lines: Arc<Lines>,
    control: UnixStream,
    control_out: Arc<(Mutex<Vec<u8>>, Condvar)>,
    next_node: u32,
}

fn connect(path: &Path) -> Result<UnixStream> {
    connect_unix(path, Duration::from_secs(20))
}

impl Vm {
    /// Boot the guest; `control` adds `airlock.control=1`.
    pub fn boot(a: &Artifacts, control: bool) -> Result<Vm> {
        let dir = tempfile::Builder::new()
            .prefix("airlock-xtask-")
            .tempdir()?;
        let disk = dir.path().join("disk.qcow2");
        xtask::util::run(
            Command::new("qemu-img")
                .args(["create", "-q", "-f", "qcow2", "-F", "qcow2", "-b"])
                .arg(&a.guest.golden_disk)
                .arg(&disk),
        )?;
        let mut append = a.guest.append.clone();
        if control {
            append.push_str(" airlock.control=1");
        }
        let sock = |n: &str| dir.path().join(n);
        let chardev = |id: &str, n: &str| {
            format!(
                "socket,id={id},path={},server=on,wait=off",
                sock(n).display()
            )
        };
        let child = Command::new(QEMU)
            .args(["-accel", "tcg", "-machine", "pc-q35-7.2", "-m", "256"])
            .args(["-nodefaults", "-no-user-config", "-nic", "none"])
            .args(["-display", "none", "-vga", "std"])
            .arg("-kernel")
            .arg(&a.guest.kernel)
            .arg("-initrd")
            .arg(&a.guest.initrd)
            .args(["-append", &append])
            .args([
                "-chardev",
                &chardev("ser0", "ser0.sock"),
                "-serial",
                "chardev:ser0",
            ])
            .args([
                "-chardev",
                &chardev("ser1", "ser1.sock"),
                "-serial",
                "chardev:ser1",
            ])
            .arg("-qmp")
            .arg(format!(
                "unix:{},server=on,wait=off",
                sock("qmp.sock").display()
            ))
            .args(["-device", "qemu-xhci,id=xhci,streams=off"])
            .arg("-drive")
            .arg(format!("file={},if=virtio,format=qcow2", disk.display()))
            .stdin(Stdio::null())
            .spawn()
            .context("starting qemu-system-x86_64")?;
        let vm = Vm {
            qmp: Qmp::connect(&sock("qmp.sock"))?,
            agent: connect(&sock("ser0.sock"))?,
            control: connect(&sock("ser1.sock"))?,
            agent_lines: Arc::default(),
            control_out: Arc::default(),
            child,
            dir,
            next_node: 0,
        };

        let lines = vm.agent_lines.clone();
        let reader = BufReader::new(vm.agent.try_clone()?);
        std::thread::spawn(move || {
            for line in reader.split(b'\n') {
                let Ok(line) = line else { break };
                let line = String::from_utf8_lossy(&line).into_owned();
                lines
                    .lines
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(line);
                lines.cond.notify_all();
            }
        });
        let out = vm.control_out.clone();
        let mut control = vm.control.try_clone()?;
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = control.read(&mut buf) {
                if n == 0 {
                    break;
                }
                out.0
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .extend_from_slice(&buf[..n]);
                out.1.notify_all();
            }
        });
        Ok(vm)
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    // ---------------------------------------------------------------- QMP

    /// Run a QMP command; an error reply is an `Err`.
    pub fn qmp(&mut self, execute: &str, arguments: Value) -> Result<Value> {
        self.qmp.cmd(execute, arguments)
    }

    /// Hot-plug a USB CD drive `id` (usb-bot `id` + scsi-cd `id-cd` on the xHCI
    /// controller), with `iso` in it or empty.
    pub fn plug_cd_drive(&mut self, id: &str, iso: Option<&Path>) -> Result<()> {
        self.next_node += 1;
        let node = format!("iso{}", self.next_node);
        self.qmp.plug_cd(id, iso, &node)
    }

    /// Put `iso` in drive `id` (opening and closing the tray).
    pub fn insert(&mut self, id: &str, iso: &Path) -> Result<()> {
        self.qmp.insert(&format!("{id}-cd"), iso)
    }

    pub fn eject(&mut self, id: &str) -> Result<()> {
        self.qmp("eject", json!({"id": format!("{id}-cd")}))?;
        Ok(())
    }

    pub fn unplug_cd_drive(&mut self, id: &str) -> Result<()> {
        self.qmp("device_del", json!({"id": id}))?;
        Ok(())
    }

    // ---------------------------------------------------------------- agent port

    pub fn send_agent(&mut self, line: &str) -> Result<()> {
        self.agent.write_all(format!("{line}\n").as_bytes())?;
        Ok(())
    }

    /// Number of agent lines received so far (a cursor for `wait_line`).
    pub fn mark(&self) -> usize {
        self.agent_lines
            .lines
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .len()
    }

    pub fn lines_since(&self, from: usize) -> Vec<String> {
        let lines = self
            .agent_lines
            .lines
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        lines.get(from..).unwrap_or_default().to_vec()
    }

    /// Wait for the first agent line at or after `from` that matches;
    /// returns its index and text.
    pub fn wait_line(
        &self,
        from: usize,
        timeout: Duration,
        what: &str,
        pred: impl Fn(&str) -> bool,
    ) -> Result<(usize, String)> {
        let deadline = Instant::now() + timeout;
        let mut lines = self
            .agent_lines
            .lines
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        loop {
            if let Some((i, l)) = lines.iter().enumerate().skip(from).find(|(_, l)| pred(l)) {
                return Ok((i, l.clone()));
            }
            let now = Instant::now();
            if now >= deadline {
                bail!(
                    "timed out after {timeout:?} waiting for {what}; agent port said: {:#?}",
                    &lines[from.min(lines.len())..]
                );
            }
            lines = self
                .agent_lines
                .cond
                .wait_timeout(lines, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    pub fn wait_ready(&self) -> Result<()> {
        self.wait_line(0, Duration::from_secs(60), "AIRLOCK-READY boot", |l| {
            l == "AIRLOCK-READY boot"
        })?;
        Ok(())
    }

    /// Wait for the outcome of a CD insertion after `from`: the lines from
    /// `AIRLOCK-CD-INSERTED` to the `AIRLOCK-CD` summary, or an error line.
    pub fn wait_cd(&self, from: usize, timeout: Duration) -> Result<CdReport> {
        let (end, _) = self.wait_line(from, timeout, "a CD summary or error", |l| {
            l.starts_with("AIRLOCK-CD ") || l.starts_with("AIRLOCK-CD-ERROR ")
        })?;
        let lines = self.lines_since(from);
        CdReport::parse(&lines[..=end - from]).map(|r| CdReport { end: end + 1, ..r })
    }

    // ---------------------------------------------------------------- control port

    /// Bytes received on the control port so far (and forget them).
    pub fn take_control_output(&self) -> Vec<u8> {
        std::mem::take(&mut *self.control_out.0.lock().unwrap_or_else(|e| e.into_inner()))
    }

    pub fn send_control(&mut self, text: &str) -> Result<()> {
        self.control.write_all(text.as_bytes())?;
        Ok(())
    }

    /// Run `cmd` in the control shell; returns its output and exit status.
    /// The convention (docs/guest.md): send the command, then
    /// `echo __DONE_<nonce> $?`, and read up to that marker.
    pub fn shell(&mut self, cmd: &str) -> Result<(String, i32)> {
        let nonce = format!("{:x}", nonce());
        let marker = format!("__DONE_{nonce} ");
        self.take_control_output();
        self.send_control(&format!("{cmd}\necho {marker}$?\n"))?;
        let deadline = Instant::now() + Duration::from_secs(30);
        let (lock, cond) = &*self.control_out;
        let mut out = lock.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            let text = String::from_utf8_lossy(&out).into_owned();
            if let Some(at) = text.find(&marker) {
                if let Some(eol) = text[at..].find('\n') {
                    let status = text[at + marker.len()..at + eol].trim().parse()?;
                    let output = text[..at].to_string();
                    out.clear();
                    return Ok((output, status));
                }
            }
            let now = Instant::now();
            if now >= deadline {
                bail!("control shell: no {marker} within 30 s; got {text:?}");
            }
            out = cond
                .wait_timeout(out, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// `shell`, requiring exit status 0.
    pub fn sh(&mut self, cmd: &str) -> Result<String> {
        let (out, status) = self.shell(cmd)?;
        ensure!(status == 0, "`{cmd}` exited {status}: {out}");
        Ok(out)
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What the guest reported about one inserted disc.
#[derive(Debug, Default)]
pub struct CdReport {
    pub dev: String,
    /// `AIRLOCK-CD-INSERTED` seen (a mount-failed error comes without it).
    pub inserted: bool,
    /// (size, path) of each `AIRLOCK-CD-FILE` line.
    pub files: Vec<(u64, String)>,
    pub summary: Option<Summary>,
    pub error: Option<String>,
    /// Agent line index just past the report.
    pub end: usize,
}

#[derive(Debug)]
pub struct Summary {
    pub files: u64,
    pub bytes: u64,
    pub sha256: String,
    pub seconds: f64,
}

fn field<'a>(line: &'a str, key: &str) -> Result<&'a str> {
    line.split(' ')
        .find_map(|w| w.strip_prefix(key).and_then(|v| v.strip_prefix('=')))
        .with_context(|| format!("no {key}= in {line:?}"))
}

impl CdReport {
    fn parse(lines: &[String]) -> Result<CdReport> {
        let mut r = CdReport::default();
        for l in lines {
            if let Some(rest) = l.strip_prefix("AIRLOCK-CD-INSERTED ") {
                r = CdReport {
                    dev: field(rest, "dev")?.to_string(),
                    inserted: true,
                    ..CdReport::default()
                };
            } else if let Some(rest) = l.strip_prefix("AIRLOCK-CD-FILE ") {
                let (size, path) = rest.split_once(' ').context("bad AIRLOCK-CD-FILE line")?;
                r.files.push((size.parse()?, path.to_string()));
            } else if let Some(rest) = l.strip_prefix("AIRLOCK-CD ") {
                let seconds = field(rest, "seconds")?;
                ensure!(
                    seconds.len() >= 5 && seconds.as_bytes()[seconds.len() - 4] == b'.',
                    "seconds= must have 3 decimals: {seconds}"
                );
                r.dev = field(rest, "dev")?.to_string();
                r.summary = Some(Summary {
                    files: field(rest, "files")?.parse()?,
                    bytes: field(rest, "bytes")?.parse()?,
                    sha256: field(rest, "sha256")?.to_string(),
                    seconds: seconds.parse()?,
                });
            } else if let Some(rest) = l.strip_prefix("AIRLOCK-CD-ERROR ") {
                r.dev = field(rest, "dev")?.to_string();
                r.error = Some(field(rest, "reason")?.to_string());
            }
        }
        Ok(r)
    }

    /// Check the report against a disc's `.files.json`.
    pub fn assert_matches(&self, disc: &FileList) {
        assert!(self.inserted, "no AIRLOCK-CD-INSERTED: {self:?}");
        assert_eq!(self.error, None);
        let expected: Vec<(u64, String)> = disc
            .entries
            .iter()
            .map(|e| (e.size, e.path.clone()))
            .collect();
        assert_eq!(
            self.files, expected,
            "AIRLOCK-CD-FILE lines differ from the .files.json"
        );
        let s = self.summary.as_ref().expect("AIRLOCK-CD summary");
        assert_eq!(s.files, disc.files);
        assert_eq!(s.bytes, disc.bytes);
        assert_eq!(s.sha256, disc.sha256, "sha256 differs from the .files.json");
        assert!(
            s.seconds > 0.0 && s.seconds < 120.0,
            "seconds={}",
            s.seconds
        );
    }
}

/// A file that is not an ISO 9660 image, for the error path.
pub fn garbage_image(dir: &Path) -> Result<PathBuf> {
    let path = dir.join("garbage.img");
    std::fs::write(&path, vec![0x5au8; 4 << 20])?;
    Ok(path)
}
