//! A real SPICE client (spice-gtk's SpiceClientGLib through GObject introspection,
//! `tools/spice_client.py`): checks which password opens a desktop's display, over
//! plain TCP or TLS, and stays connected like a viewer ([`Viewer`]) to press keys on
//! the desktop's keyboard and see the session end.
use crate::process::Proc;
use airlock_core::wire::DisplayGrant;
use anyhow::{bail, Context, Result};
use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const SPICE_CLIENT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tools/spice_client.py");

/// The Debian packages the client needs.
pub const PACKAGES: &[(&str, &str)] = &[("python3", "python3-gi gir1.2-spiceclientglib-2.0")];

/// PC AT (set 1) scancode of the F key: the demo guest's "Finish" (docs/guest.md).
pub const KEY_F: u8 = 0x21;

/// Whether the SPICE client library is installed; an error names what to install.
pub fn require_client() -> Result<()> {
    let ok = Command::new("/usr/bin/python3")
        .args([
            "-c",
            "import gi; gi.require_version('SpiceClientGLib', '2.0'); from gi.repository import SpiceClientGLib",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    anyhow::ensure!(
        ok,
        "the SPICE client library is missing: apt-get install -y --no-install-recommends \
         python3-gi gir1.2-spiceclientglib-2.0 (scripts/setup.sh does)"
    );
    Ok(())
}

/// How a SPICE connection attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthResult {
    /// The main channel opened: the password was accepted.
    Opened,
    /// The server refused the password.
    Refused,
    /// The TLS handshake or the certificate check failed.
    TlsFailed,
    /// Anything else (connection refused or closed, timeout).
    Failed,
}

/// Where a display client connects, and over what.
#[derive(Debug, Clone)]
pub struct Endpoint {
    pub host: String,
    pub port: u16,
    /// TLS (`tls-port`), or plain TCP (`port`).
    pub tls: Option<Trust>,
}

/// What a TLS client trusts and checks.
#[derive(Debug, Clone, Default)]
pub struct Trust {
    /// The CA certificate it trusts (PEM), or the library's default.
    pub ca_file: Option<PathBuf>,
    /// The certificate subject it expects (SPICE `host-subject`), or the host name.
    pub host_subject: Option<String>,
}

impl Endpoint {
    /// Plain TCP to 127.0.0.1:`port`.
    pub fn plain(port: u16) -> Endpoint {
        Endpoint {
            host: "127.0.0.1".into(),
            port,
            tls: None,
        }
    }

    /// What a lease's grant says, as a terminal's viewer would use it, trusting `ca_file`.
    pub fn of(grant: &DisplayGrant, ca_file: Option<PathBuf>) -> Endpoint {
        Endpoint {
            host: grant.host.clone(),
            port: grant.port,
            tls: grant.tls.then(|| Trust {
                ca_file,
                host_subject: grant.host_subject.clone(),
            }),
        }
    }

    fn command(&self, password: &str, hold: bool) -> Command {
        let mut c = Command::new("/usr/bin/python3");
        c.arg(SPICE_CLIENT);
        if let Some(t) = &self.tls {
            c.arg("--tls");
            if let Some(ca) = &t.ca_file {
                c.arg("--ca-file").arg(ca);
            }
            if let Some(s) = &t.host_subject {
                c.args(["--host-subject", s]);
            }
        }
        if hold {
            c.arg("--hold");
        }
        c.args([self.host.as_str(), &self.port.to_string(), password]);
        c
    }
}

/// An attempt's outcome and the client's own line about it (e.g. the TLS error).
#[derive(Debug, Clone)]
pub struct Attempt {
    pub result: AuthResult,
    pub said: String,
}

/// Connects a real SPICE client to `endpoint` with `password`, and disconnects.
pub fn connect(endpoint: &Endpoint, password: &str) -> Result<Attempt> {
    let out = endpoint
        .command(password, false)
        .output()
        .context("running tools/spice_client.py")?;
    let mut said = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let result = match out.status.code() {
        Some(0) => AuthResult::Opened,
        Some(2) => AuthResult::Refused,
        Some(3) => AuthResult::TlsFailed,
        _ => AuthResult::Failed,
    };
    if matches!(result, AuthResult::TlsFailed | AuthResult::Failed) {
        // The library's own warnings say why (e.g. the certificate check).
        let err = String::from_utf8_lossy(&out.stderr);
        said = format!("{said} {}", err.trim()).trim().to_owned();
    }
    Ok(Attempt { result, said })
}

/// Connects a real SPICE client to 127.0.0.1:`port` (plain TCP) with `password`.
pub fn auth(port: u16, password: &str) -> Result<AuthResult> {
    Ok(connect(&Endpoint::plain(port), password)?.result)
}

/// Sends what a SPICE client sends first (a link header, "REDQ" version 2.2, and a link
/// message for the main channel) over plain TCP to 127.0.0.1:`port`, and returns what
/// came back within 5 s: a SPICE server answers with its own link header ("REDQ").
pub fn link_probe(port: u16) -> Result<Vec<u8>> {
    use std::io::Read;
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port))
        .with_context(|| format!("connecting to 127.0.0.1:{port}"))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    // SpiceLinkMess: connection id, channel type (1: main), channel id, no common and
    // no channel capabilities, capabilities at offset 18 (its own size).
    let mut mess = Vec::new();
    mess.extend_from_slice(&0u32.to_le_bytes());
    mess.extend_from_slice(&[1, 0]);
    for v in [0u32, 0, 18] {
        mess.extend_from_slice(&v.to_le_bytes());
    }
    let mut link = b"REDQ".to_vec();
    for v in [2u32, 2, u32::try_from(mess.len())?] {
        link.extend_from_slice(&v.to_le_bytes());
    }
    link.extend_from_slice(&mess);
    s.write_all(&link).context("sending a SPICE link message")?;
    let mut reply = Vec::new();
    let mut buf = [0u8; 512];
    loop {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                reply.extend_from_slice(&buf[..n]);
                if reply.len() >= 4 {
                    break;
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock
                        | std::io::ErrorKind::TimedOut
                        | std::io::ErrorKind::ConnectionReset
                ) =>
            {
                break
            }
            Err(e) => return Err(e).context("reading the answer to a SPICE link message"),
        }
    }
    Ok(reply)
}

/// A SPICE client that stays connected, like a clinician's viewer, until it is killed
/// (dropped) or the server ends the session.
pub struct Viewer {
    proc: Proc,
    stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<String>,
}

impl Viewer {
    /// Connects and waits (up to 30 s) until the main and inputs channels are open.
    pub fn open(endpoint: &Endpoint, password: &str) -> Result<Viewer> {
        let mut proc = Proc::spawn(
            endpoint
                .command(password, true)
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::null()),
            "tools/spice_client.py --hold",
        )?;
        let stdout = proc.child().stdout.take().context("no stdout")?;
        let stdin = proc.child().stdin.take();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut v = Viewer { proc, stdin, lines };
        v.expect(Duration::from_secs(30), |l| l == "opened")
            .context("the viewer did not open the display")?;
        Ok(v)
    }

    /// The process id (to kill it like a crashed viewer or a pulled cable).
    pub fn pid(&self) -> u32 {
        self.proc.id()
    }

    /// Waits for an output line satisfying `pred`; an error shows what came instead.
    fn expect(&mut self, timeout: Duration, pred: impl Fn(&str) -> bool) -> Result<String> {
        let deadline = Instant::now() + timeout;
        let mut seen = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) if pred(&l) => return Ok(l),
                Ok(l) => seen.push(l),
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    bail!("nothing expected within {timeout:?}; the client said {seen:?}")
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    bail!("the client exited; it said {seen:?}")
                }
            }
        }
    }

    /// Presses and releases a key (a PC AT set-1 scancode, e.g. [`KEY_F`]).
    pub fn press(&mut self, scancode: u8) -> Result<()> {
        let stdin = self
            .stdin
            .as_mut()
            .context("the viewer's input is closed")?;
        writeln!(stdin, "key {scancode:#04x}").context("writing to the viewer")?;
        stdin.flush()?;
        self.expect(Duration::from_secs(10), |l| l.starts_with("pressed"))?;
        Ok(())
    }

    /// Waits until the server ended the session and the viewer exited, as remote-viewer
    /// does when it is disconnected; returns its account ("closed: ...").
    pub fn wait_closed(&mut self, timeout: Duration) -> Result<String> {
        let said = self.expect(timeout, |l| l.starts_with("closed"))?;
        self.proc.wait_timeout(Duration::from_secs(10))?;
        Ok(said)
    }

    /// Whether the viewer is still connected (its process runs).
    pub fn running(&mut self) -> bool {
        self.proc.running()
    }
}
