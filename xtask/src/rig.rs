//! A test rig for end-to-end runs across both binaries: a real broker
//! (`airlockd`) with its QEMU desktops, a "terminal VM" with a real Linux USB
//! stack running `airlock`, a stand-alone desktop VM with a local USB CD
//! drive, and the desktop guest's serial-log contract (docs/guest.md).
//!
//! Used by `cargo xtask bench disc` and by the `airlock-e2e` tests. Plain
//! std (threads, Unix sockets, a minimal HTTP/1.1 client) so that it needs no
//! async runtime. Every process it starts is owned by a value whose `Drop`
//! kills it, so a panicking test leaves no VM behind.

use crate::util;
use anyhow::{bail, ensure, Context, Result};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

pub const QEMU: &str = "qemu-system-x86_64";
/// The terminal token of the rig's broker (a test secret, nothing else).
pub const TERMINAL_TOKEN: &str = "airlock-e2e-terminal-token";
pub const ADMIN_TOKEN: &str = "airlock-e2e-admin-token";
/// Where the terminal VM reaches the broker with [`TerminalNet::GuestFwd`]
/// (the VM's network is `restrict=on`, so this is the only thing it can
/// reach).
pub const TERMINAL_BROKER_ADDR: &str = "10.0.2.100";

// ------------------------------------------------------------------ processes

type Cleanup = Box<dyn Fn() + Send>;

/// What to stop if the process is interrupted (Drop does not run then).
static CLEANUPS: Mutex<Vec<(u64, Cleanup)>> = Mutex::new(Vec::new());

fn register_cleanup(f: Cleanup) -> u64 {
    let id = nonce();
    CLEANUPS
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push((id, f));
    id
}

fn unregister_cleanup(id: u64) {
    CLEANUPS
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .retain(|(i, _)| *i != id);
}

/// On SIGINT or SIGTERM, stop every process and VM the rig started (which
/// Drop would have done on a normal exit or a panic), then exit with 130.
/// Idempotent.
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
            eprintln!("interrupted: stopping the rig's VMs and processes");
            let all = std::mem::take(&mut *CLEANUPS.lock().unwrap_or_else(|e| e.into_inner()));
            for (_, f) in all.iter().rev() {
                f();
            }
            std::process::exit(130);
        });
    });
}

/// A temporary directory that is removed when dropped, and also on
/// SIGINT/SIGTERM after [`stop_everything_on_signal`] (after the processes
/// registered later, i.e. the ones using it, are stopped).
pub struct RigDir {
    dir: tempfile::TempDir,
    cleanup: u64,
}

impl RigDir {
    pub fn new(prefix: &str) -> Result<RigDir> {
        let dir = tempfile::Builder::new().prefix(prefix).tempdir()?;
        let path = dir.path().to_path_buf();
        Ok(RigDir {
            dir,
            cleanup: register_cleanup(Box::new(move || {
                let _ = std::fs::remove_dir_all(&path);
            })),
        })
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for RigDir {
    fn drop(&mut self) {
        unregister_cleanup(self.cleanup);
    }
}

fn kill_pid(pid: u32) {
    let _ = Command::new("kill")
        .arg("-9")
        .arg(pid.to_string())
        .stderr(Stdio::null())
        .status();
}

/// A child process that is killed (SIGKILL) and reaped when dropped (and
/// killed on SIGINT/SIGTERM after [`stop_everything_on_signal`]).
pub struct Proc {
    child: Child,
    what: String,
    cleanup: u64,
}

impl Proc {
    pub fn spawn(cmd: &mut Command, what: &str) -> Result<Proc> {
        let child = cmd
            .spawn()
            .with_context(|| format!("starting {what}: `{}`", util::describe(cmd)))?;
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

    /// Send a signal by number (kill(1)), e.g. 2 = SIGINT.
    pub fn signal(&self, sig: i32) -> Result<()> {
        util::run(
            Command::new("kill")
                .arg(format!("-{sig}"))
                .arg(self.id().to_string()),
        )?;
        Ok(())
    }

    /// Wait for the process to exit, at most `timeout`.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Result<std::process::ExitStatus> {
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
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        unregister_cleanup(self.cleanup);
    }
}

/// Connects to a Unix socket, retrying until `timeout` (QEMU creates its sockets
/// a moment after it starts).
pub fn connect_unix(path: &Path, timeout: Duration) -> Result<UnixStream> {
    let deadline = Instant::now() + timeout;
    loop {
        match UnixStream::connect(path) {
            Ok(s) => return Ok(s),
            Err(e) if Instant::now() > deadline => {
                return Err(e).with_context(|| format!("connecting to {}", path.display()))
            }
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

/// A nonce that differs between calls and processes.
pub fn nonce() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    h.write_u32(std::process::id());
    h.finish()
}

pub fn sha256_hex(data: &[u8]) -> String {
    util::hex(&Sha256::digest(data))
}

// ------------------------------------------------------------------ binaries

/// `cargo build -p airlockd -p airlock -p xtask [--release]` (host
/// binaries: the broker, the host-side terminal, and `xtask` for its
/// `tcp-pump`); returns the directory they are in.
pub fn build_host_binaries(release: bool) -> Result<PathBuf> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(util::workspace_root()).args([
        "build", "--quiet", "-p", "airlockd", "-p", "airlock", "-p", "xtask",
    ]);
    if release {
        cmd.arg("--release");
    }
    let what = util::describe(&cmd);
    let st = cmd
        .stdin(Stdio::null())
        .status()
        .with_context(|| format!("starting `{what}`"))?;
    ensure!(st.success(), "`{what}` failed ({st})");
    let dir = crate::terminal::target_dir()?.join(if release { "release" } else { "debug" });
    for bin in ["airlockd", "airlock", "xtask"] {
        ensure!(dir.join(bin).is_file(), "no {} after `{what}`", bin);
    }
    Ok(dir)
}

/// `xtask tcp-pump ADDR`: connect to ADDR with TCP_NODELAY and copy between
/// it and the socket on stdin/stdout, both ways, until the broker's side
/// closes. The terminal VM's slirp `guestfwd=...-cmd:` runs it per guest
/// connection. (`busybox nc` does the same without TCP_NODELAY, and loses
/// tens of milliseconds per USB transfer to Nagle and delayed ACKs.)
pub fn tcp_pump(addr: &str) -> Result<()> {
    use std::os::fd::AsFd;
    let broker = TcpStream::connect(addr).with_context(|| format!("connecting to {addr}"))?;
    broker.set_nodelay(true)?;
    // slirp hands the command one end of a loopback TCP pair as stdin and
    // stdout (libslirp's socketpair "with OOB"): set TCP_NODELAY on it too,
    // or Nagle holds back every short write towards the guest.
    let guest = TcpStream::from(std::io::stdin().as_fd().try_clone_to_owned()?);
    let _ = guest.set_nodelay(true);
    let copy = |mut from: TcpStream, mut to: TcpStream| {
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            match from.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if to.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            }
        }
        let _ = to.shutdown(std::net::Shutdown::Write);
    };
    let (g2, b2) = (guest.try_clone()?, broker.try_clone()?);
    std::thread::spawn(move || copy(g2, b2));
    // Broker to guest; when the broker closes, the process exits and the
    // guest's connection ends with it.
    copy(broker, guest);
    Ok(())
}

// ------------------------------------------------------------------ HTTP

/// One HTTP/1.1 request with `Connection: close`; returns the status and the
/// body parsed as JSON (`Value::Null` when empty or not JSON).
pub fn http(method: &str, url: &str, token: &str, body: Option<&Value>) -> Result<(u16, Value)> {
    let rest = url
        .strip_prefix("http://")
        .with_context(|| format!("only http:// URLs: {url}"))?;
    let (host, path) = rest
        .split_once('/')
        .map_or((rest, "/".to_string()), |(h, p)| (h, format!("/{p}")));
    let mut s = TcpStream::connect(host).with_context(|| format!("connecting to {host}"))?;
    s.set_read_timeout(Some(Duration::from_secs(60)))?;
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes())?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .context("no HTTP header end")?;
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut payload = raw[split + 4..].to_vec();
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .context("no HTTP status")?
        .parse()?;
    if head.lines().any(|l| {
        l.to_ascii_lowercase()
            .starts_with("transfer-encoding: chunked")
    }) {
        payload = dechunk(&payload)?;
    }
    let v = serde_json::from_slice(&payload).unwrap_or(Value::Null);
    Ok((status, v))
}

fn dechunk(mut data: &[u8]) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let eol = data
            .windows(2)
            .position(|w| w == b"\r\n")
            .context("bad chunk")?;
        let size_text = String::from_utf8_lossy(&data[..eol]).into_owned();
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)?;
        data = &data[eol + 2..];
        if size == 0 {
            return Ok(out);
        }
        out.extend_from_slice(data.get(..size).context("short chunk")?);
        data = data.get(size + 2..).context("short chunk")?;
    }
}

// ------------------------------------------------------------------ broker

/// `n` consecutive free TCP ports on loopback (for the desktops' SPICE).
pub fn free_ports(n: u16) -> Result<u16> {
    let seed = (nonce() % 20_000) as u16;
    for k in 0..2000u16 {
        let base = 30_000 + (seed.wrapping_add(k.wrapping_mul(37))) % 20_000;
        if (0..n).all(|i| std::net::TcpListener::bind(("127.0.0.1", base + i)).is_ok()) {
            return Ok(base);
        }
    }
    bail!("no {n} free consecutive ports on 127.0.0.1")
}

pub struct BrokerOptions {
    /// The `airlockd` binary.
    pub airlockd: PathBuf,
    pub guest: crate::guest::Manifest,
    pub size: usize,
    pub memory_mib: u64,
    /// `[pool.cpus]`: the broker pins its desktops' vCPUs and itself.
    pub cpus: Option<airlock_core::CpuPlacement>,
}

/// A running `airlockd` with its own state directory; dropping it kills the
/// broker and every QEMU it started.
///
/// Its desktops' agent ports are left alone: their output is read from
/// `serial.log`, which QEMU writes exactly only while no client is connected
/// (see [`LocalDesktop`]).
pub struct Broker {
    pub url: String,
    pub port: u16,
    pub state: PathBuf,
    pub config: PathBuf,
    proc: Option<Proc>,
    cleanup: u64,
    _tmp: RigDir,
}

/// A lease as the broker granted it.
#[derive(Debug, Clone)]
pub struct Lease {
    pub id: String,
    pub desktop: String,
}

impl Broker {
    pub fn start(o: &BrokerOptions) -> Result<Broker> {
        let tmp = RigDir::new("airlock-e2e-")?;
        let state = tmp.path().join("state");
        let config = tmp.path().join("airlockd.toml");
        let display_base = free_ports(o.size as u16)?;
        let text = format!(
            r#"[server]
listen = "127.0.0.1:0"
state_dir = "{state}"
[admin]
token_sha256 = "{admin}"
[[terminals]]
name = "e2e-terminal"
token_sha256 = "{term}"
[pool]
size = {size}
accel = "tcg"
memory_mib = {mem}
vcpus = 1
reset = "template_clone"
heartbeat_timeout_s = 3600
test_control_channel = true
[pool.guest]
disk = "{disk}"
kernel = "{kernel}"
initrd = "{initrd}"
append = "{append}"
[pool.readiness]
probe = "serial"
timeout_s = 180
[pool.display]
protocol = "spice"
listen = "127.0.0.1"
port_base = {display_base}
{cpus}"#,
            state = state.display(),
            admin = sha256_hex(ADMIN_TOKEN.as_bytes()),
            term = sha256_hex(TERMINAL_TOKEN.as_bytes()),
            size = o.size,
            mem = o.memory_mib,
            disk = o.guest.golden_disk.display(),
            kernel = o.guest.kernel.display(),
            initrd = o.guest.initrd.display(),
            append = o.guest.append,
            cpus = o
                .cpus
                .as_ref()
                .map(|p| format!(
                    "[pool.cpus]\ndesktops = \"{}\"\nhousekeeping = \"{}\"\n",
                    p.desktops(),
                    p.housekeeping()
                ))
                .unwrap_or_default(),
        );
        std::fs::write(&config, text)?;
        std::fs::create_dir_all(&state)?;
        let log = std::fs::File::create(state.join("airlockd.log"))?;
        let mut proc = Proc::spawn(
            Command::new(&o.airlockd)
                .arg("--config")
                .arg(&config)
                .env("AIRLOCK_LOG", "info")
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(log),
            "airlockd",
        )?;
        let stdout = proc.child().stdout.take().context("no stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        let first = lines.next().transpose()?.unwrap_or_default();
        let qemus = state.clone();
        let mut b = Broker {
            url: String::new(),
            port: 0,
            state,
            config,
            proc: Some(proc),
            cleanup: register_cleanup(Box::new(move || kill_broker_qemus(&qemus))),
            _tmp: tmp,
        };
        let Some(url) = first.strip_prefix("airlockd listening on ") else {
            bail!(
                "airlockd did not start (first line {first:?}); log:\n{}",
                b.log_tail(30)
            );
        };
        b.url = url.trim().to_string();
        b.port = b
            .url
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .context("no port in the broker URL")?;
        std::thread::spawn(move || for _ in lines {});
        Ok(b)
    }

    pub fn log_tail(&self, n: usize) -> String {
        let text = std::fs::read_to_string(self.state.join("airlockd.log")).unwrap_or_default();
        let v: Vec<&str> = text.lines().collect();
        v[v.len().saturating_sub(n)..].join("\n")
    }

    pub fn run_dir(&self, desktop: &str) -> PathBuf {
        self.state.join("desktops").join(desktop).join("run")
    }

    /// The broker's process id.
    pub fn pid(&self) -> Option<u32> {
        self.proc.as_ref().map(Proc::id)
    }

    /// The process id of a desktop's QEMU (its pid file).
    pub fn desktop_qemu_pid(&self, desktop: &str) -> Result<u32> {
        let f = self.run_dir(desktop).join("qemu.pid");
        Ok(std::fs::read_to_string(&f)
            .with_context(|| format!("reading {}", f.display()))?
            .trim()
            .parse()?)
    }

    /// The desktop's agent-port log (what the guest prints on ttyS0).
    pub fn serial_log(&self, desktop: &str) -> SerialLog {
        SerialLog::new(self.run_dir(desktop).join("serial.log"))
    }

    /// A shell on the desktop's test-only control port.
    pub fn control(&self, desktop: &str) -> Result<Shell> {
        Shell::connect(&self.run_dir(desktop).join("control.sock"), None)
    }

    pub fn desktops(&self) -> Result<Vec<Value>> {
        let (st, v) = http(
            "GET",
            &format!("{}/v1/desktops", self.url),
            ADMIN_TOKEN,
            None,
        )?;
        ensure!(st == 200, "GET /v1/desktops: {st} {v}");
        Ok(v["desktops"].as_array().cloned().unwrap_or_default())
    }

    /// Wait until `n` desktops are clean.
    pub fn wait_clean(&self, n: usize, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            let d = self.desktops()?;
            if d.iter().filter(|x| x["state"] == "clean").count() >= n {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "desktops not clean after {timeout:?}: {:?}; log:\n{}",
                    d.iter()
                        .map(|x| format!("{}={}", x["id"], x["state"]))
                        .collect::<Vec<_>>(),
                    self.log_tail(40)
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Starts `airlock usb forward --iso` (from `bin_dir`) for `lease` with `iso`, its
    /// stdin a pipe for `eject`/`insert`/`unplug` commands and its output in `log`.
    pub fn forward_iso(
        &self,
        bin_dir: &Path,
        lease: &Lease,
        iso: &Path,
        log: &Path,
    ) -> Result<Proc> {
        let logf =
            std::fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
        Proc::spawn(
            Command::new(bin_dir.join("airlock"))
                .args([
                    "usb", "forward", "--broker", &self.url, "--lease", &lease.id,
                ])
                .arg("--iso")
                .arg(iso)
                .env("AIRLOCK_TOKEN", TERMINAL_TOKEN)
                .stdin(Stdio::piped())
                .stdout(logf.try_clone()?)
                .stderr(logf),
            "airlock usb forward --iso",
        )
    }

    pub fn acquire(&self, user: &str) -> Result<Lease> {
        let (st, v) = http(
            "POST",
            &format!("{}/v1/leases", self.url),
            TERMINAL_TOKEN,
            Some(&json!({ "user": user })),
        )?;
        ensure!(st == 201, "acquiring a lease: {st} {v}");
        Ok(Lease {
            id: v["lease_id"].as_str().context("no lease_id")?.to_string(),
            desktop: v["desktop_id"]
                .as_str()
                .context("no desktop_id")?
                .to_string(),
        })
    }

    pub fn release(&self, lease: &Lease) -> Result<u16> {
        let (st, _) = http(
            "DELETE",
            &format!("{}/v1/leases/{}", self.url, lease.id),
            TERMINAL_TOKEN,
            None,
        )?;
        Ok(st)
    }

    pub fn audit(&self) -> Result<Vec<Value>> {
        let (st, v) = http(
            "GET",
            &format!("{}/v1/audit?limit=10000", self.url),
            ADMIN_TOKEN,
            None,
        )?;
        ensure!(st == 200, "GET /v1/audit: {st}");
        Ok(v["records"].as_array().cloned().unwrap_or_default())
    }
}

/// Kill the QEMU processes of the broker with state directory `state`, by
/// their pid files, checking each really is one of that broker's (its
/// command line names the state directory).
fn kill_broker_qemus(state: &Path) {
    let needle = state.display().to_string();
    for sub in ["desktops", "templates"] {
        let Ok(entries) = std::fs::read_dir(state.join(sub)) else {
            continue;
        };
        for e in entries.flatten() {
            let Ok(t) = std::fs::read_to_string(e.path().join("run/qemu.pid")) else {
                continue;
            };
            let Ok(pid) = t.trim().parse::<u32>() else {
                continue;
            };
            let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            if String::from_utf8_lossy(&cmd).contains(&needle) {
                kill_pid(pid);
            }
        }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("---- airlockd log (tail) ----\n{}", self.log_tail(60));
        }
        // The broker leaves its desktops running when it exits (they are
        // re-attached at the next start): kill them too.
        drop(self.proc.take());
        kill_broker_qemus(&self.state);
        unregister_cleanup(self.cleanup);
    }
}

// ------------------------------------------------------------------ serial log

/// The desktop guest's agent-port output, read from QEMU's chardev log file
/// (a byte offset is the cursor).
pub struct SerialLog {
    pub path: PathBuf,
}

/// What the guest reported about one disc (docs/guest.md, "CD events").
#[derive(Debug, Clone, Default)]
pub struct CdReport {
    pub dev: String,
    pub inserted: bool,
    pub files: Vec<(u64, String)>,
    pub summary: Option<CdSummary>,
    pub error: Option<String>,
    /// Log offset just past the report.
    pub end: usize,
}

#[derive(Debug, Clone, PartialEq)]
pub struct CdSummary {
    pub files: u64,
    pub bytes: u64,
    pub sha256: String,
    pub seconds: f64,
}

fn word<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    line.split(' ')
        .find_map(|w| w.strip_prefix(key).and_then(|v| v.strip_prefix('=')))
}

impl CdReport {
    /// Parse the agent lines of one insertion (from INSERTED to the summary
    /// or an error).
    pub fn parse(lines: &[&str]) -> Result<CdReport> {
        let mut r = CdReport::default();
        for l in lines {
            if let Some(rest) = l.strip_prefix("AIRLOCK-CD-INSERTED ") {
                r = CdReport {
                    dev: word(rest, "dev").unwrap_or_default().to_string(),
                    inserted: true,
                    ..CdReport::default()
                };
            } else if let Some(rest) = l.strip_prefix("AIRLOCK-CD-FILE ") {
                let (size, path) = rest.split_once(' ').context("bad AIRLOCK-CD-FILE line")?;
                r.files.push((size.parse()?, path.to_string()));
            } else if let Some(rest) = l.strip_prefix("AIRLOCK-CD ") {
                let get = |k: &str| word(rest, k).with_context(|| format!("no {k}= in {l:?}"));
                r.dev = get("dev")?.to_string();
                r.summary = Some(CdSummary {
                    files: get("files")?.parse()?,
                    bytes: get("bytes")?.parse()?,
                    sha256: get("sha256")?.to_string(),
                    seconds: get("seconds")?.parse()?,
                });
            } else if let Some(rest) = l.strip_prefix("AIRLOCK-CD-ERROR ") {
                r.dev = word(rest, "dev").unwrap_or_default().to_string();
                r.error = Some(word(rest, "reason").unwrap_or("unknown").to_string());
            }
        }
        Ok(r)
    }

    /// Does the report match a disc's `.files.json`? (Err says how not.)
    pub fn check(&self, disc: &crate::disc::FileList) -> Result<()> {
        ensure!(self.error.is_none(), "the guest reported {:?}", self.error);
        ensure!(self.inserted, "no AIRLOCK-CD-INSERTED");
        let s = self.summary.as_ref().context("no AIRLOCK-CD summary")?;
        ensure!(
            s.files == disc.files && s.bytes == disc.bytes,
            "guest saw {} files / {} bytes, expected {} / {}",
            s.files,
            s.bytes,
            disc.files,
            disc.bytes
        );
        ensure!(
            s.sha256 == disc.sha256,
            "guest sha256 {} != expected {} ({})",
            s.sha256,
            disc.sha256,
            disc.iso.display()
        );
        let expected: Vec<(u64, String)> = disc
            .entries
            .iter()
            .map(|e| (e.size, e.path.clone()))
            .collect();
        if let Some(i) = (0..self.files.len().max(expected.len()))
            .find(|&i| self.files.get(i) != expected.get(i))
        {
            bail!(
                "AIRLOCK-CD-FILE lines differ from {} at entry {i}: guest {:?}, expected {:?} ({} vs {} lines)",
                disc.iso.display(),
                self.files.get(i),
                expected.get(i),
                self.files.len(),
                expected.len()
            );
        }
        Ok(())
    }
}

impl SerialLog {
    pub fn new(path: PathBuf) -> SerialLog {
        SerialLog { path }
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&std::fs::read(&self.path).unwrap_or_default()).into_owned()
    }

    /// The current end of the log (a cursor).
    pub fn mark(&self) -> usize {
        std::fs::metadata(&self.path).map_or(0, |m| m.len() as usize)
    }

    /// Complete lines from `from` on (`\r` removed).
    pub fn lines_since(&self, from: usize) -> Vec<(usize, String)> {
        let text = self.text();
        let mut out = Vec::new();
        let mut pos = from.min(text.len());
        while let Some(nl) = text[pos..].find('\n') {
            let line = text[pos..pos + nl].trim_end_matches('\r').to_string();
            pos += nl + 1;
            out.push((pos, line));
        }
        out
    }

    /// Wait for a line after `from` matching `pred`; returns (offset just
    /// past it, the line).
    pub fn wait_line(
        &self,
        from: usize,
        timeout: Duration,
        what: &str,
        pred: impl Fn(&str) -> bool,
    ) -> Result<(usize, String)> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(hit) = self.lines_since(from).into_iter().find(|(_, l)| pred(l)) {
                return Ok(hit);
            }
            if Instant::now() > deadline {
                let tail: Vec<String> = self
                    .lines_since(from)
                    .into_iter()
                    .map(|(_, l)| l)
                    .filter(|l| !l.starts_with("AIRLOCK-CD-FILE"))
                    .collect();
                bail!(
                    "timed out after {timeout:?} waiting for {what} in {}; since then: {tail:#?}",
                    self.path.display()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Wait for the outcome of the next disc insertion after `from`.
    pub fn wait_cd(&self, from: usize, timeout: Duration) -> Result<CdReport> {
        self.wait_cd_while(from, timeout, &mut || Ok(()))
    }

    /// [`SerialLog::wait_cd`], giving up early when `alive` (called every
    /// few seconds) says the source of the disc has failed.
    pub fn wait_cd_while(
        &self,
        from: usize,
        timeout: Duration,
        alive: &mut dyn FnMut() -> Result<()>,
    ) -> Result<CdReport> {
        let deadline = Instant::now() + timeout;
        let is_end = |l: &str| l.starts_with("AIRLOCK-CD ") || l.starts_with("AIRLOCK-CD-ERROR ");
        let end = loop {
            let step = deadline
                .saturating_duration_since(Instant::now())
                .min(Duration::from_secs(3));
            match self.wait_line(from, step, "an AIRLOCK-CD summary or error", is_end) {
                Ok((end, _)) => break end,
                Err(e) if Instant::now() >= deadline => return Err(e),
                Err(_) => alive()?,
            }
        };
        let lines: Vec<(usize, String)> = self
            .lines_since(from)
            .into_iter()
            .take_while(|(o, _)| *o <= end)
            .collect();
        let refs: Vec<&str> = lines.iter().map(|(_, l)| l.as_str()).collect();
        let mut r = CdReport::parse(&refs)?;
        r.end = end;
        Ok(r)
    }

    /// Wait for `AIRLOCK-CD-REMOVED` after `from`.
    pub fn wait_removed(&self, from: usize, timeout: Duration) -> Result<usize> {
        Ok(self
            .wait_line(from, timeout, "AIRLOCK-CD-REMOVED", |l| {
                l.starts_with("AIRLOCK-CD-REMOVED ")
            })?
            .0)
    }
}

// ------------------------------------------------------------------ shells

/// A line-oriented command shell on a serial port (the desktop guest's
/// control port, or the terminal VM's ttyS0): one command per line, then
/// `echo <marker> $?` to know it finished.
pub struct Shell {
    stream: UnixStream,
    out: Arc<(Mutex<Vec<u8>>, Condvar)>,
}

impl Shell {
    /// Connect; `log` also appends everything received to a file.
    pub fn connect(path: &Path, log: Option<PathBuf>) -> Result<Shell> {
        let stream = connect_unix(path, Duration::from_secs(20))?;
        let out: Arc<(Mutex<Vec<u8>>, Condvar)> = Arc::default();
        let mut reader = stream.try_clone()?;
        let sink = out.clone();
        std::thread::spawn(move || {
            let mut log = log.and_then(|p| {
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(p)
                    .ok()
            });
            let mut buf = [0u8; 8192];
            while let Ok(n) = reader.read(&mut buf) {
                if n == 0 {
                    break;
                }
                if let Some(f) = log.as_mut() {
                    let _ = f.write_all(&buf[..n]);
                }
                sink.0
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .extend_from_slice(&buf[..n]);
                sink.1.notify_all();
            }
        });
        Ok(Shell { stream, out })
    }

    /// Everything received so far, and forget it.
    pub fn take(&self) -> String {
        let bytes = std::mem::take(&mut *self.out.0.lock().unwrap_or_else(|e| e.into_inner()));
        String::from_utf8_lossy(&bytes).into_owned()
    }

    /// Wait until the received text satisfies `pred`; returns (and keeps)
    /// everything received.
    pub fn wait_until(
        &self,
        timeout: Duration,
        what: &str,
        pred: impl Fn(&str) -> bool,
    ) -> Result<String> {
        let deadline = Instant::now() + timeout;
        let (lock, cond) = &*self.out;
        let mut out = lock.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            let text = String::from_utf8_lossy(&out).into_owned();
            if pred(&text) {
                return Ok(text);
            }
            let now = Instant::now();
            if now >= deadline {
                bail!("no {what} within {timeout:?}; received: {text:?}");
            }
            out = cond
                .wait_timeout(out, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// Wait until a complete line containing `needle` has arrived.
    pub fn wait_for(&self, needle: &str, timeout: Duration) -> Result<String> {
        self.wait_until(timeout, needle, |t| {
            t.find(needle).is_some_and(|at| t[at..].contains('\n'))
        })
    }

    /// Run a command line; returns its output and exit status.
    pub fn run(&mut self, cmd: &str, timeout: Duration) -> Result<(String, i32)> {
        let marker = format!("__DONE_{:x}__ ", nonce());
        self.take();
        self.stream
            .write_all(format!("{cmd}\necho {marker}$?\n").as_bytes())?;
        let text = self
            .wait_for(&marker, timeout)
            .with_context(|| format!("running `{cmd}`"))?;
        self.take();
        let at = text.find(&marker).unwrap_or(0);
        let status = text[at + marker.len()..]
            .lines()
            .next()
            .unwrap_or("")
            .trim()
            .parse()
            .unwrap_or(-1);
        Ok((text[..at].to_string(), status))
    }

    /// `run`, requiring status 0.
    pub fn sh(&mut self, cmd: &str) -> Result<String> {
        let (out, st) = self.run(cmd, Duration::from_secs(60))?;
        ensure!(st == 0, "`{cmd}` exited {st}: {out}");
        Ok(out)
    }
}

// ------------------------------------------------------------------ QMP

/// A QMP connection (commands only; events are skipped).
pub struct Qmp {
    r: BufReader<UnixStream>,
}

impl Qmp {
    pub fn connect(path: &Path) -> Result<Qmp> {
        let s = connect_unix(path, Duration::from_secs(20))?;
        s.set_read_timeout(Some(Duration::from_secs(30)))?;
        let mut q = Qmp {
            r: BufReader::new(s),
        };
        let mut greeting = String::new();
        q.r.read_line(&mut greeting)?;
        ensure!(greeting.contains("QMP"), "no QMP greeting: {greeting}");
        q.cmd("qmp_capabilities", json!({}))?;
        Ok(q)
    }

    pub fn cmd(&mut self, execute: &str, arguments: Value) -> Result<Value> {
        writeln!(
            self.r.get_mut(),
            "{}",
            json!({"execute": execute, "arguments": arguments})
        )?;
        loop {
            let mut line = String::new();
            ensure!(self.r.read_line(&mut line)? > 0, "QMP closed");
            let v: Value = serde_json::from_str(&line)?;
            if v.get("event").is_some() {
                continue;
            }
            if let Some(e) = v.get("error") {
                bail!("QMP {execute}: {e}");
            }
            return Ok(v["return"].clone());
        }
    }

    /// Hot-plug a USB CD drive (`usb-bot` + `scsi-cd`) with `iso` in it.
    /// A hot-plugged usb-bot is attached to the bus only when told to, after
    /// its SCSI device exists.
    pub fn plug_cd(&mut self, id: &str, iso: Option<&Path>, node: &str) -> Result<()> {
        self.cmd(
            "device_add",
            json!({"driver": "usb-bot", "id": id, "bus": "xhci.0", "serial": format!("{id}-serial")}),
        )?;
        let mut cd =
            json!({"driver": "scsi-cd", "id": format!("{id}-cd"), "bus": format!("{id}.0")});
        if let Some(iso) = iso {
            self.cmd(
                "blockdev-add",
                json!({"driver": "raw", "node-name": node, "read-only": true,
                       "file": {"driver": "file", "filename": iso, "read-only": true}}),
            )?;
            cd["drive"] = json!(node);
        }
        self.cmd("device_add", cd)?;
        self.cmd(
            "qom-set",
            json!({"path": format!("/machine/peripheral/{id}"), "property": "attached", "value": true}),
        )?;
        Ok(())
    }

    /// Put `iso` in the scsi-cd `cd` (opening and closing the tray).
    pub fn insert(&mut self, cd: &str, iso: &Path) -> Result<()> {
        self.cmd(
            "blockdev-change-medium",
            json!({"id": cd, "filename": iso, "format": "raw", "read-only-mode": "read-only"}),
        )?;
        Ok(())
    }

    /// Limit reads from the scsi-cd `cd` to `bytes_per_second` (QEMU block
    /// throttling; the limit stays across medium changes). Needs a medium.
    pub fn throttle_reads(&mut self, cd: &str, bytes_per_second: u64) -> Result<()> {
        self.cmd(
            "block_set_io_throttle",
            json!({"id": cd, "bps": 0, "bps_rd": bytes_per_second, "bps_wr": 0,
                   "iops": 0, "iops_rd": 0, "iops_wr": 0}),
        )?;
        Ok(())
    }

    pub fn eject(&mut self, cd: &str) -> Result<()> {
        self.cmd("eject", json!({"id": cd, "force": true}))?;
        Ok(())
    }

    /// device_del, then wait until the device is gone.
    pub fn unplug(&mut self, id: &str) -> Result<()> {
        self.cmd("device_del", json!({"id": id}))?;
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let r = self.cmd("qom-list", json!({"path": "/machine/peripheral"}))?;
            let present = r
                .as_array()
                .is_some_and(|a| a.iter().any(|p| p["name"] == id));
            if !present {
                return Ok(());
            }
            ensure!(Instant::now() < deadline, "{id} was not unplugged");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

// ------------------------------------------------------------------ terminal VM

/// How the terminal VM reaches the broker (QEMU user networking either way).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TerminalNet {
    /// `restrict=on` plus one `guestfwd`: TCP to `10.0.2.100:80` runs
    /// `PUMP tcp-pump 127.0.0.1:<broker port>` on the host per connection,
    /// where PUMP is the `xtask` binary (see [`tcp_pump`]). The VM can reach
    /// nothing else, not even the host.
    GuestFwd {
        /// The `xtask` binary.
        pump: PathBuf,
    },
    /// Plain slirp: the broker is `10.0.2.2:<broker port>` (the host's
    /// loopback), reached through slirp's own host socket. The VM could also
    /// reach other hosts through slirp's NAT. Much faster than `GuestFwd` for
    /// bulk transfers: slirp hands a `cmd:` guestfwd one end of a loopback
    /// TCP pair whose other end, inside QEMU, has no TCP_NODELAY, so short
    /// writes towards the host wait for delayed ACKs (tens of ms per USB
    /// transfer; see docs/benchmarks.md, "Disc reading").
    HostLoopback,
}

/// What to plug into the terminal VM at boot.
#[derive(Debug, Clone)]
pub struct TerminalOptions {
    /// A USB CD drive (usb-bot + scsi-cd) with this image, `id=cd0`,
    /// scsi-cd `id=cd0-cd`.
    pub cd_iso: Option<PathBuf>,
    /// A USB stick (usb-storage) with this raw disk image, `id=stick0`.
    pub stick: Option<PathBuf>,
    /// vCPUs (the TCG terminal's own TCP stack is the slow part of its
    /// network path; a second vCPU about doubles it).
    pub smp: u32,
    pub memory_mib: u64,
    pub net: TerminalNet,
}

/// The terminal VM (`cargo xtask terminal-guest`), running: its serial shell,
/// its QMP, and the process (killed on drop).
pub struct TerminalVm {
    // Fields drop in order: the VM first, then its directory.
    proc: Proc,
    pub shell: Shell,
    pub qmp: Qmp,
    pub dir: RigDir,
    /// The broker's URL as the VM sees it.
    pub broker_url: String,
}

impl TerminalVm {
    /// Boot it; the broker (at 127.0.0.1:`broker_port`) is reachable from the
    /// VM at [`TerminalVm::broker_url`].
    pub fn boot(
        m: &crate::terminal::Manifest,
        broker_port: u16,
        o: &TerminalOptions,
    ) -> Result<TerminalVm> {
        let dir = RigDir::new("airlock-term-")?;
        let f = |n: &str| dir.path().join(n);
        let mut cmd = Command::new(QEMU);
        cmd.args(["-name", "airlock-terminal-vm,debug-threads=on"])
            .args(["-accel", "tcg", "-machine", "q35"])
            .args(["-m", &o.memory_mib.max(128).to_string()])
            .args(["-smp", &o.smp.max(1).to_string()])
            .args(["-nodefaults", "-no-user-config", "-display", "none"])
            .arg("-kernel")
            .arg(&m.kernel)
            .arg("-initrd")
            .arg(&m.initrd)
            .args(["-append", &m.append])
            .arg("-chardev")
            .arg(format!(
                "socket,id=ser0,path={},server=on,wait=off,logfile={}",
                f("ser0.sock").display(),
                f("serial.log").display()
            ))
            .args(["-serial", "chardev:ser0"])
            .arg("-qmp")
            .arg(format!(
                "unix:{},server=on,wait=off",
                f("qmp.sock").display()
            ))
            .args(["-device", "virtio-net-pci,netdev=net0"])
            .args(["-device", "qemu-xhci,id=xhci"]);
        let broker_url = match &o.net {
            TerminalNet::GuestFwd { pump } => {
                // restrict=on: the VM reaches nothing but the guestfwd, which
                // runs the pump to the broker's loopback port per connection.
                cmd.arg("-netdev").arg(format!(
                    "user,id=net0,restrict=on,guestfwd=tcp:{TERMINAL_BROKER_ADDR}:80-cmd:{} tcp-pump 127.0.0.1:{broker_port}",
                    pump.display()
                ));
                format!("http://{TERMINAL_BROKER_ADDR}:80")
            }
            TerminalNet::HostLoopback => {
                cmd.args(["-netdev", "user,id=net0"]);
                format!("http://10.0.2.2:{broker_port}")
            }
        };
        if let Some(iso) = &o.cd_iso {
            cmd.arg("-blockdev").arg(format!(
                "driver=raw,node-name=cdimg,read-only=on,file.driver=file,file.filename={},file.read-only=on",
                iso.display()
            ));
            cmd.args([
                "-device",
                "usb-bot,id=cd0,bus=xhci.0,serial=AIRLOCK-CD0",
                "-device",
                "scsi-cd,id=cd0-cd,bus=cd0.0,drive=cdimg",
            ]);
        }
        if let Some(stick) = &o.stick {
            cmd.arg("-blockdev").arg(format!(
                "driver=raw,node-name=stickimg,file.driver=file,file.filename={}",
                stick.display()
            ));
            cmd.args([
                "-device",
                "usb-storage,id=stick0,bus=xhci.0,drive=stickimg,serial=AIRLOCK-STICK0",
            ]);
        }
        let log = std::fs::File::create(f("qemu.log"))?;
        let proc = Proc::spawn(
            cmd.stdin(Stdio::null())
                .stdout(log.try_clone()?)
                .stderr(log),
            "the terminal VM",
        )?;
        let shell = Shell::connect(&f("ser0.sock"), None)?;
        let qmp = Qmp::connect(&f("qmp.sock"))?;
        Ok(TerminalVm {
            shell,
            qmp,
            dir,
            proc,
            broker_url,
        })
    }

    /// Wait for `AIRLOCK-TERM-READY`; returns that line.
    pub fn wait_ready(&mut self, timeout: Duration) -> Result<String> {
        let text = self
            .shell
            .wait_for("AIRLOCK-TERM-READY", timeout)
            .with_context(|| format!("terminal VM; qemu log: {}", self.qemu_log()))?;
        let line = text
            .lines()
            .find(|l| l.contains("AIRLOCK-TERM-READY"))
            .unwrap_or_default()
            .to_string();
        let boot = self.shell.take();
        ensure!(
            !boot.contains("AIRLOCK-TERM-ERROR"),
            "the terminal VM reported an error at boot: {boot}"
        );
        Ok(line)
    }

    pub fn qemu_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("qemu.log")).unwrap_or_default()
    }

    pub fn running(&mut self) -> bool {
        self.proc.running()
    }

    /// Wait until the VM's USB bus shows `n` devices besides the root hubs.
    pub fn wait_usb_devices(&mut self, n: usize, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            let out = self.shell.sh(
                "for d in /sys/bus/usb/devices/[0-9]*-[0-9]*; do [ -e $d/idVendor ] && echo $d; done; true",
            )?;
            let have = out.lines().filter(|l| !l.trim().is_empty()).count();
            if have == n {
                return Ok(());
            }
            ensure!(
                Instant::now() < deadline,
                "the terminal VM has {have} USB devices, expected {n}: {out}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Is the background forward `name` still running?
    pub fn forward_running(&mut self, name: &str) -> Result<bool> {
        let (_, st) = self.shell.run(
            &format!("kill -0 $(cat /tmp/{name}.pid) 2>/dev/null"),
            Duration::from_secs(30),
        )?;
        Ok(st == 0)
    }

    /// The terminal VM's QEMU process id.
    pub fn qemu_pid(&self) -> u32 {
        self.proc.id()
    }

    /// Start `airlock usb forward` in the VM in the background (output in
    /// /tmp/NAME.log).
    pub fn start_forward(&mut self, name: &str, lease: &str, device: &str) -> Result<()> {
        self.shell.sh(&format!(
            "AIRLOCK_TOKEN={TERMINAL_TOKEN} airlock usb forward --broker {} \
             --lease {lease} --device {device} >/tmp/{name}.log 2>&1 & echo $! >/tmp/{name}.pid",
            self.broker_url
        ))?;
        Ok(())
    }

    /// The output of a background forward so far.
    pub fn forward_log(&mut self, name: &str) -> Result<String> {
        self.shell.sh(&format!("cat /tmp/{name}.log"))
    }

    /// Stop a background forward with SIGINT (it unplugs the drive from the
    /// desktop) and wait for it to exit.
    pub fn stop_forward(&mut self, name: &str) -> Result<String> {
        self.shell.sh(&format!(
            "p=$(cat /tmp/{name}.pid); kill -INT $p; n=0; while kill -0 $p 2>/dev/null && [ $n -lt 100 ]; do sleep 0.1; n=$((n+1)); done; kill -0 $p 2>/dev/null && kill -9 $p; true"
        ))?;
        self.forward_log(name)
    }
}

// ------------------------------------------------------------------ stand-alone desktop

/// The demo guest booted directly (no broker) with an empty USB CD drive
/// (`usb-bot` + `scsi-cd`, cold-plugged, `id=cd0` / `cd0-cd`) on its xHCI
/// controller: the "local USB drive" baseline. Same machine type, memory,
/// vCPUs and kernel command line as the broker's desktops, plus the control
/// shell (`airlock.control=1`) as the rig's broker desktops have it.
pub struct LocalDesktop {
    // Fields drop in order: the VM first, then its directory.
    _proc: Proc,
    pub serial: SerialLog,
    pub qmp: Qmp,
    pub control: Shell,
    pub dir: RigDir,
}

impl LocalDesktop {
    /// The VM's QEMU process id.
    pub fn qemu_pid(&self) -> u32 {
        self._proc.id()
    }

    pub fn boot(g: &crate::guest::Manifest, memory_mib: u64) -> Result<LocalDesktop> {
        let dir = RigDir::new("airlock-desk-")?;
        let f = |n: &str| dir.path().join(n);
        util::run(
            Command::new("qemu-img")
                .args(["create", "-q", "-f", "qcow2", "-F", "qcow2", "-b"])
                .arg(&g.golden_disk)
                .arg(f("disk.qcow2")),
        )?;
        let chardev = |id: &str, sock: &str, log: &str| {
            format!(
                "socket,id={id},path={},server=on,wait=off,logfile={}",
                f(sock).display(),
                f(log).display()
            )
        };
        let log = std::fs::File::create(f("qemu.log"))?;
        let proc = Proc::spawn(
            Command::new(QEMU)
                .args(["-name", "airlock-local-desktop,debug-threads=on"])
                .args(["-accel", "tcg", "-machine", "q35"])
                .args(["-m", &memory_mib.to_string(), "-smp", "1"])
                .args(["-nodefaults", "-no-user-config", "-nic", "none"])
                .args(["-display", "none", "-vga", "std"])
                .arg("-kernel")
                .arg(&g.kernel)
                .arg("-initrd")
                .arg(&g.initrd)
                .args(["-append", &format!("{} airlock.control=1", g.append)])
                .args(["-chardev", &chardev("agent0", "agent.sock", "serial.log")])
                .args(["-serial", "chardev:agent0"])
                .args([
                    "-chardev",
                    &chardev("control0", "control.sock", "control.log"),
                ])
                .args(["-serial", "chardev:control0"])
                .arg("-qmp")
                .arg(format!(
                    "unix:{},server=on,wait=off",
                    f("qmp.sock").display()
                ))
                .arg("-drive")
                .arg(format!(
                    "file={},if=virtio,format=qcow2",
                    f("disk.qcow2").display()
                ))
                .args(["-device", "qemu-xhci,id=xhci"])
                .args(["-device", "usb-bot,id=cd0,bus=xhci.0"])
                .args(["-device", "scsi-cd,id=cd0-cd,bus=cd0.0"])
                .stdin(Stdio::null())
                .stdout(log.try_clone()?)
                .stderr(log),
            "the local desktop VM",
        )?;
        // Nobody connects to the agent port: the guest's output is read from
        // QEMU's log file, which is exact only while no client is connected
        // (with a client, a write that would block is logged and then
        // retried, so the file gets doubled bytes; QEMU 7.2
        // `qemu_chr_write_buffer`). The broker's desktops are the same: the
        // broker connects to the agent port only for its readiness ping.
        let control = Shell::connect(&f("control.sock"), None)?;
        let qmp = Qmp::connect(&f("qmp.sock"))?;
        let serial = SerialLog::new(f("serial.log"));
        serial.wait_line(0, Duration::from_secs(120), "AIRLOCK-READY boot", |l| {
            l == "AIRLOCK-READY boot"
        })?;
        Ok(LocalDesktop {
            serial,
            qmp,
            control,
            dir,
            _proc: proc,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_cd_report() {
        let lines = [
            "AIRLOCK-READY boot",
            "AIRLOCK-CD-INSERTED dev=sr0",
            "AIRLOCK-CD-FILE 10 A/B C",
            "AIRLOCK-CD-FILE 5 README.TXT",
            "AIRLOCK-CD dev=sr0 files=2 bytes=15 sha256=ab12 seconds=1.250",
        ];
        let r = CdReport::parse(&lines).unwrap();
        assert!(r.inserted);
        assert_eq!(r.dev, "sr0");
        assert_eq!(
            r.files,
            [(10, "A/B C".to_string()), (5, "README.TXT".to_string())]
        );
        let s = r.summary.unwrap();
        assert_eq!((s.files, s.bytes, s.sha256.as_str()), (2, 15, "ab12"));
        assert!((s.seconds - 1.25).abs() < 1e-9);
        let e = CdReport::parse(&["AIRLOCK-CD-ERROR dev=sr1 reason=mount-failed"]).unwrap();
        assert_eq!(e.error.as_deref(), Some("mount-failed"));
        assert!(!e.inserted);
    }

    #[test]
    fn dechunks() {
        assert_eq!(
            dechunk(b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n").unwrap(),
            b"abcde"
        );
    }
}
