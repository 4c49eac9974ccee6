//! Test harness: runs the real `airlockd` binary against real QEMU (TCG) with the demo
//! guest from `cargo xtask guest`, in a temporary state directory.
#![allow(dead_code, clippy::unwrap_used)]

use serde_json::{json, Value};
use sha2::Digest;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

pub const TERMINAL_TOKEN: &str = "test-terminal-token-1";
pub const TERMINAL2_TOKEN: &str = "test-terminal-token-2";
pub const ADMIN_TOKEN: &str = "test-admin-token";

pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap()
}

/// The demo guest's manifest (`cargo xtask guest` writes it).
pub fn guest_manifest() -> Value {
    let dir = std::env::var_os("AIRLOCK_GUEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("build/guest"));
    let path = dir.join("manifest.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "the demo guest is missing ({}: {e}); build it with `cargo xtask guest` (scripts/test.sh does)",
            path.display()
        )
    });
    serde_json::from_str(&text).unwrap()
}

fn sha256_hex(s: &str) -> String {
    hex::encode(sha2::Sha256::digest(s.as_bytes()))
}

/// Finds `n` consecutive free TCP ports on loopback.
fn free_ports(n: u16) -> u16 {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let seed = std::process::id() % 400;
    loop {
        let k = NEXT.fetch_add(1, Ordering::Relaxed);
        let base = 20_000 + u16::try_from((seed * 97 + k * 13) % 40_000).unwrap();
        if (0..n).all(|i| std::net::TcpListener::bind(("127.0.0.1", base + i)).is_ok()) {
            return base;
        }
    }
}

/// Options for a test broker.
#[derive(Clone)]
pub struct Opts {
    pub size: usize,
    pub reset: &'static str,
    pub heartbeat_timeout_s: u64,
    pub display: &'static str,
    pub memory_mib: u64,
    /// Another golden disk than the demo guest's.
    pub golden: Option<PathBuf>,
    /// TLS certificate and key (PEM files).
    pub tls: Option<(PathBuf, PathBuf)>,
    /// The CA the test client trusts for TLS.
    pub tls_ca: Option<PathBuf>,
    /// Replaces the guest's kernel command line.
    pub append: Option<&'static str>,
    /// `pool.readiness.timeout_s`.
    pub ready_timeout_s: u64,
    /// The body of a `[pool.cpus]` section.
    pub cpus: Option<&'static str>,
}

impl Default for Opts {
    fn default() -> Self {
        Self {
            size: 2,
            reset: "template_clone",
            heartbeat_timeout_s: 60,
            display: "spice",
            memory_mib: 256,
            golden: None,
            tls: None,
            tls_ca: None,
            append: None,
            ready_timeout_s: 180,
            cpus: None,
        }
    }
}

pub struct Broker {
    pub url: String,
    pub state: PathBuf,
    _tmp: tempfile::TempDir,
    pub config: PathBuf,
    child: Option<Child>,
    pub http: reqwest::Client,
    pub display_port_base: u16,
}

impl Broker {
    pub async fn start(opts: Opts) -> Broker {
        let m = guest_manifest();
        let tmp = tempfile::Builder::new()
            .prefix("airlock-test-")
            .tempdir()
            .unwrap();
        let state = tmp.path().join("state");
        let port_base = free_ports(u16::try_from(opts.size).unwrap());
        let config = tmp.path().join("airlockd.toml");
        let text = format!(
            r#"
[server]
listen = "127.0.0.1:0"
state_dir = "{state}"
{tls}
[admin]
token_sha256 = "{admin}"
[[terminals]]
name = "term-1"
token_sha256 = "{t1}"
[[terminals]]
name = "term-2"
token_sha256 = "{t2}"
[pool]
size = {size}
accel = "tcg"
memory_mib = {mem}
vcpus = 1
reset = "{reset}"
heartbeat_timeout_s = {hb}
test_control_channel = true
[pool.guest]
disk = "{disk}"
kernel = "{kernel}"
initrd = "{initrd}"
append = "{append}"
[pool.readiness]
probe = "serial"
timeout_s = {ready_timeout}
[pool.display]
protocol = "{display}"
listen = "127.0.0.1"
port_base = {port_base}
{cpus}
"#,
            state = state.display(),
            tls = opts
                .tls
                .as_ref()
                .map(|(c, k)| format!(
                    "tls_cert = \"{}\"\ntls_key = \"{}\"",
                    c.display(),
                    k.display()
                ))
                .unwrap_or_default(),
            admin = sha256_hex(ADMIN_TOKEN),
            t1 = sha256_hex(TERMINAL_TOKEN),
            t2 = sha256_hex(TERMINAL2_TOKEN),
            size = opts.size,
            mem = opts.memory_mib,
            reset = opts.reset,
            hb = opts.heartbeat_timeout_s,
            disk = opts
                .golden
                .as_ref()
                .map(|p| p.display().to_string())
                .unwrap_or_else(|| m["golden_disk"].as_str().unwrap().to_owned()),
            kernel = m["kernel"].as_str().unwrap(),
            initrd = m["initrd"].as_str().unwrap(),
            append = opts.append.unwrap_or_else(|| m["append"].as_str().unwrap()),
            ready_timeout = opts.ready_timeout_s,
            display = opts.display,
            cpus = opts
                .cpus
                .map(|c| format!("[pool.cpus]\n{c}"))
                .unwrap_or_default(),
            port_base = if opts.display == "vnc" {
                5900 + (port_base % 90)
            } else {
                port_base
            },
        );
        std::fs::write(&config, text).unwrap();
        let mut b = Broker {
            url: String::new(),
            state,
            _tmp: tmp,
            config,
            child: None,
            http: {
                let mut c = reqwest::Client::builder().timeout(Duration::from_secs(60));
                if let Some(ca) = &opts.tls_ca {
                    let pem = std::fs::read(ca).unwrap();
                    c = c.add_root_certificate(reqwest::Certificate::from_pem(&pem).unwrap());
                }
                c.build().unwrap()
            },
            display_port_base: port_base,
        };
        b.spawn();
        b
    }

    /// Starts (or restarts) the broker process with the same config and state.
    pub fn spawn(&mut self) {
        std::fs::create_dir_all(&self.state).unwrap();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.state.join("airlockd.log"))
            .unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_airlockd"))
            .arg("--config")
            .arg(&self.config)
            .env("AIRLOCK_LOG", "info,airlock_qemu=debug")
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let mut lines = BufReader::new(stdout).lines();
        let first = lines
            .next()
            .and_then(Result::ok)
            .unwrap_or_else(|| panic!("airlockd printed nothing; log: {}", self.log_tail(40)));
        let url = first
            .strip_prefix("airlockd listening on ")
            .unwrap_or_else(|| panic!("unexpected first line {first:?}"))
            .to_owned();
        std::thread::spawn(move || for _ in lines {});
        self.url = url;
        self.child = Some(child);
    }

    /// The broker's process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(Child::id).expect("broker running")
    }

    pub fn log_tail(&self, n: usize) -> String {
        let text = std::fs::read_to_string(self.state.join("airlockd.log")).unwrap_or_default();
        let v: Vec<&str> = text.lines().collect();
        v[v.len().saturating_sub(n)..].join("\n")
    }

    /// SIGKILL the broker (its QEMU processes keep running).
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn run_dir(&self, desktop: &str) -> PathBuf {
        self.state.join("desktops").join(desktop).join("run")
    }

    /// The Prometheus text of `/metrics`.
    pub async fn metrics(&self) -> String {
        let r = self
            .http
            .get(format!("{}/metrics", self.url))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        r.text().await.unwrap()
    }

    pub async fn desktops(&self) -> Vec<Value> {
        let r = self
            .http
            .get(format!("{}/v1/desktops", self.url))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let v: Value = r.json().await.unwrap();
        v["desktops"].as_array().unwrap().clone()
    }

    pub async fn desktop(&self, id: &str) -> Value {
        self.desktops()
            .await
            .into_iter()
            .find(|d| d["id"] == id)
            .unwrap()
    }

    /// Waits until `n` desktops are clean (panics with the log after `timeout`).
    pub async fn wait_clean(&self, n: usize, timeout: Duration) -> Vec<Value> {
        let start = Instant::now();
        loop {
            let d = self.desktops().await;
            if d.iter().filter(|x| x["state"] == "clean").count() >= n {
                return d;
            }
            if start.elapsed() > timeout {
                panic!(
                    "only {:?} after {timeout:?}; log:\n{}",
                    d.iter()
                        .map(|x| (x["id"].clone(), x["state"].clone()))
                        .collect::<Vec<_>>(),
                    self.log_tail(60)
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until a desktop satisfies `pred`.
    pub async fn wait_desktop(
        &self,
        id: &str,
        timeout: Duration,
        pred: impl Fn(&Value) -> bool,
    ) -> Value {
        let start = Instant::now();
        loop {
            let d = self.desktop(id).await;
            if pred(&d) {
                return d;
            }
            if start.elapsed() > timeout {
                panic!(
                    "desktop {id} is {d} after {timeout:?}; log:\n{}",
                    self.log_tail(60)
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn acquire(&self, token: &str, user: &str) -> reqwest::Response {
        self.http
            .post(format!("{}/v1/leases", self.url))
            .bearer_auth(token)
            .json(&json!({ "user": user }))
            .send()
            .await
            .unwrap()
    }

    pub async fn acquire_ok(&self, user: &str) -> Value {
        let r = self.acquire(TERMINAL_TOKEN, user).await;
        assert_eq!(r.status(), 201, "acquire failed");
        r.json().await.unwrap()
    }

    pub async fn heartbeat(&self, token: &str, lease: &str) -> reqwest::StatusCode {
        self.http
            .post(format!("{}/v1/leases/{lease}/heartbeat", self.url))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
            .status()
    }

    pub async fn release(&self, token: &str, lease: &str) -> reqwest::StatusCode {
        self.http
            .delete(format!("{}/v1/leases/{lease}", self.url))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
            .status()
    }

    pub async fn audit(&self) -> Vec<Value> {
        let r = self
            .http
            .get(format!("{}/v1/audit?limit=10000", self.url))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .unwrap();
        let v: Value = r.json().await.unwrap();
        v["records"].as_array().unwrap().clone()
    }

    /// Runs `airlockd audit verify` on this broker's database.
    pub fn verify_audit_cli(&self) -> (bool, String) {
        let out = Command::new(env!("CARGO_BIN_EXE_airlockd"))
            .arg("--config")
            .arg(&self.config)
            .args(["audit", "verify"])
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    }

    /// A shell on a desktop's test-only control port.
    pub fn control(&self, desktop: &str) -> Control {
        Control::connect(&self.run_dir(desktop).join("control.sock"))
    }

    pub fn qemu_pids(&self) -> Vec<i32> {
        let mut pids = Vec::new();
        for sub in ["desktops", "templates"] {
            let Ok(entries) = std::fs::read_dir(self.state.join(sub)) else {
                continue;
            };
            for e in entries.flatten() {
                if let Ok(t) = std::fs::read_to_string(e.path().join("run/qemu.pid")) {
                    if let Ok(p) = t.trim().parse() {
                        pids.push(p);
                    }
                }
            }
        }
        pids
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("---- airlockd log ----\n{}", self.log_tail(80));
        }
        self.kill9();
        let needle = self.state.display().to_string();
        for pid in self.qemu_pids() {
            let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            if String::from_utf8_lossy(&cmd).contains(&needle) {
                let _ = Command::new("kill").arg("-9").arg(pid.to_string()).status();
            }
        }
    }
}

/// The guest's test-only root shell on its second serial port.
pub struct Control {
    stream: UnixStream,
    n: u32,
}

impl Control {
    pub fn connect(path: &Path) -> Control {
        let start = Instant::now();
        loop {
            match UnixStream::connect(path) {
                Ok(stream) => {
                    stream
                        .set_read_timeout(Some(Duration::from_millis(200)))
                        .unwrap();
                    return Control { stream, n: 0 };
                }
                Err(e) if start.elapsed() > Duration::from_secs(10) => {
                    panic!("control port {}: {e}", path.display())
                }
                Err(_) => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    }

    /// Runs a shell command in the guest and returns its output.
    pub fn run(&mut self, cmd: &str) -> String {
        self.n += 1;
        let n = self.n;
        // The marker is computed by the shell, so the command text itself never matches.
        let marker = format!("__DONE_{}__", 1000 + n);
        self.stream
            .write_all(format!("{cmd}; echo __DONE_$((999+{}))__\n", n + 1).as_bytes())
            .unwrap();
        let start = Instant::now();
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            match self.stream.read(&mut chunk) {
                Ok(0) => panic!("control port closed"),
                Ok(k) => buf.extend_from_slice(&chunk[..k]),
                Err(e)
                    if e.kind() == std::io::ErrorKind::WouldBlock
                        || e.kind() == std::io::ErrorKind::TimedOut => {}
                Err(e) => panic!("control port: {e}"),
            }
            let text = String::from_utf8_lossy(&buf);
            if let Some(pos) = text.find(&marker) {
                return text[..pos].to_string();
            }
            if start.elapsed() > Duration::from_secs(60) {
                panic!("guest command {cmd:?} did not finish; output so far: {text}");
            }
        }
    }
}

/// Checks the audit trail for the pool's central invariant: a desktop is leased only
/// after a verified clean start, never twice, never after a lease without a reset.
pub fn assert_audit_invariants(records: &[Value]) {
    use std::collections::HashMap;
    #[derive(Debug, Clone, Copy, PartialEq)]
    enum S {
        Unknown,
        Clean,
        Leased,
        Used,
    }
    let mut st: HashMap<String, S> = HashMap::new();
    for r in records {
        let Some(d) = r["desktop"].as_str() else {
            continue;
        };
        let s = st.entry(d.to_owned()).or_insert(S::Unknown);
        match r["action"].as_str().unwrap() {
            "desktop_ready" | "desktop_reset" => *s = S::Clean,
            "lease_granted" => {
                assert_eq!(*s, S::Clean, "lease granted on {d} in state {s:?}: {r}");
                *s = S::Leased;
            }
            "lease_ended" => {
                assert_eq!(*s, S::Leased, "lease ended on {d} in state {s:?}: {r}");
                *s = S::Used;
            }
            "desktop_died" | "desktop_invalidated" | "reset_started" | "desktop_broken"
                if *s == S::Clean =>
            {
                *s = S::Used;
            }
            _ => {}
        }
    }
}

const SPICE_AUTH: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/tools/spice_auth.py");

/// Whether the real SPICE client library (spice-gtk through GObject introspection) exists.
pub fn spice_client_available() -> bool {
    Command::new("/usr/bin/python3")
        .args(["-c", "import gi; gi.require_version('SpiceClientGLib', '2.0'); from gi.repository import SpiceClientGLib"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// Connects a real SPICE client to 127.0.0.1:port: 0 opened, 2 authentication failed,
/// 1 anything else.
pub fn spice_auth(port: &str, password: &str) -> i32 {
    let out = Command::new("/usr/bin/python3")
        .args([SPICE_AUTH, "127.0.0.1", port, password])
        .output()
        .unwrap();
    out.status.code().unwrap_or(1)
}
