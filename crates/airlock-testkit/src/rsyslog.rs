//! A private `rsyslogd` (Debian `rsyslog`; `rsyslog-gnutls` for TLS) that receives
//! syslog over TCP or TLS on a loopback port and writes every message it gets, as
//! received (`%rawmsg%`), one per line into a file of its directory. It never touches
//! the system's syslog: its own config, work directory and pid file, no local inputs
//! (`imuxsock`, `/dev/log`), stopped (SIGKILL) when dropped.
use crate::process::Proc;
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Where the rsyslogd binary is: on PATH, else Debian's `/usr/sbin`.
fn rsyslogd() -> Result<PathBuf> {
    if crate::tools::have("rsyslogd") {
        return Ok("rsyslogd".into());
    }
    let sbin = Path::new("/usr/sbin/rsyslogd");
    if sbin.is_file() {
        return Ok(sbin.into());
    }
    bail!("missing tool rsyslogd; install it with `apt-get install -y --no-install-recommends rsyslog rsyslog-gnutls` (scripts/setup.sh does)")
}

/// Fails, naming the package, when rsyslog's GnuTLS driver is missing.
fn require_gtls() -> Result<()> {
    let found = std::fs::read_dir("/usr/lib")
        .into_iter()
        .flatten()
        .flatten()
        .any(|e| e.path().join("rsyslog/lmnsd_gtls.so").is_file());
    if found || Path::new("/usr/lib/rsyslog/lmnsd_gtls.so").is_file() {
        Ok(())
    } else {
        bail!("rsyslog's TLS driver (lmnsd_gtls) is missing; install it with `apt-get install -y --no-install-recommends rsyslog-gnutls` (scripts/setup.sh does)")
    }
}

/// The server side of TLS: its certificate and key, the CA it trusts for client
/// certificates, and whether it asks for one.
#[derive(Debug, Clone)]
pub struct RsyslogTls {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
    /// Require a client certificate signed by `ca` (mutual TLS).
    pub require_client_cert: bool,
}

/// A running (or stopped) private rsyslogd.
pub struct Rsyslog {
    dir: PathBuf,
    port: u16,
    tls: Option<RsyslogTls>,
    proc: Option<Proc>,
}

impl Rsyslog {
    /// Starts one receiving plain TCP on a free loopback port; its files go into `dir`.
    pub fn start(dir: &Path) -> Result<Rsyslog> {
        Self::start_with(dir, None)
    }

    /// Starts one receiving TLS (RFC 5425) on a free loopback port.
    pub fn start_tls(dir: &Path, tls: RsyslogTls) -> Result<Rsyslog> {
        require_gtls()?;
        Self::start_with(dir, Some(tls))
    }

    fn start_with(dir: &Path, tls: Option<RsyslogTls>) -> Result<Rsyslog> {
        rsyslogd()?;
        std::fs::create_dir_all(dir.join("work"))
            .with_context(|| format!("creating {}", dir.display()))?;
        let mut r = Rsyslog {
            dir: dir.to_owned(),
            port: 0,
            tls,
            proc: None,
        };
        r.launch()?;
        Ok(r)
    }

    /// The file every received message is written to, one per line.
    pub fn received_path(&self) -> PathBuf {
        self.dir.join("received.log")
    }

    /// rsyslogd's own output (for failure messages).
    pub fn log_path(&self) -> PathBuf {
        self.dir.join("rsyslogd.out")
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `127.0.0.1:PORT`.
    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn config(&self, port_file: &Path) -> String {
        let d = self.dir.display();
        let (global_tls, module) = match &self.tls {
            None => (String::new(), "module(load=\"imtcp\")".to_owned()),
            Some(t) => (
                format!(
                    "global(DefaultNetstreamDriver=\"gtls\" DefaultNetstreamDriverCAFile=\"{}\" DefaultNetstreamDriverCertFile=\"{}\" DefaultNetstreamDriverKeyFile=\"{}\")\n",
                    t.ca.display(),
                    t.cert.display(),
                    t.key.display()
                ),
                format!(
                    "module(load=\"imtcp\" StreamDriver.Name=\"gtls\" StreamDriver.Mode=\"1\" StreamDriver.AuthMode=\"{}\")",
                    if t.require_client_cert { "x509/certvalid" } else { "anon" }
                ),
            ),
        };
        format!(
            "global(workDirectory=\"{d}/work\" maxMessageSize=\"64k\")\n\
             {global_tls}\
             {module}\n\
             template(name=\"airlockRaw\" type=\"string\" string=\"%rawmsg%\\n\")\n\
             ruleset(name=\"airlockTest\") {{\n  action(type=\"omfile\" file=\"{d}/received.log\" template=\"airlockRaw\")\n}}\n\
             input(type=\"imtcp\" address=\"127.0.0.1\" port=\"{}\" ruleset=\"airlockTest\" listenPortFileName=\"{}\")\n",
            self.port,
            port_file.display()
        )
    }

    fn launch(&mut self) -> Result<()> {
        let port_file = self.dir.join("port");
        let _ = std::fs::remove_file(&port_file);
        let conf = self.dir.join("rsyslog.conf");
        std::fs::write(&conf, self.config(&port_file))
            .with_context(|| format!("writing {}", conf.display()))?;
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())?;
        let pid = self.dir.join("rsyslogd.pid");
        let _ = std::fs::remove_file(&pid);
        let mut cmd = Command::new(rsyslogd()?);
        cmd.arg("-n")
            .arg("-f")
            .arg(&conf)
            .arg("-i")
            .arg(&pid)
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out);
        let mut proc = Proc::spawn(&mut cmd, "rsyslogd")?;
        let deadline = Instant::now() + Duration::from_secs(20);
        let port = loop {
            // rsyslogd writes the port file only for port 0 (the first start); a
            // restart on the known port is up when a connection is accepted.
            let text = std::fs::read_to_string(&port_file).unwrap_or_default();
            if let Ok(p) = text.trim().parse::<u16>() {
                if p != 0 {
                    break p;
                }
            }
            if self.port != 0 && std::net::TcpStream::connect(self.address()).is_ok() {
                break self.port;
            }
            if !proc.running() || Instant::now() > deadline {
                bail!(
                    "rsyslogd did not start listening (config {}):\n{}",
                    conf.display(),
                    crate::process::tail(&self.log_path(), 30)
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        if self.port != 0 && port != self.port {
            bail!("rsyslogd came back on port {port}, not {}", self.port);
        }
        self.port = port;
        self.proc = Some(proc);
        Ok(())
    }

    /// Stops it (SIGTERM; SIGKILL after 10 s): its connections end, its port is closed.
    pub fn stop(&mut self) -> Result<()> {
        if let Some(mut p) = self.proc.take() {
            p.signal(rustix::process::Signal::TERM);
            if p.wait_timeout(Duration::from_secs(10)).is_err() {
                p.kill();
            }
        }
        Ok(())
    }

    /// Starts it again on the same port.
    pub fn restart(&mut self) -> Result<()> {
        self.stop()?;
        self.launch()
    }

    /// Is it running?
    pub fn running(&mut self) -> bool {
        self.proc.as_mut().is_some_and(|p| p.running())
    }

    /// Every message received so far, as received (without the frame), in order.
    pub fn received(&self) -> Vec<Vec<u8>> {
        std::fs::read(self.received_path())
            .unwrap_or_default()
            .split(|b| *b == b'\n')
            .filter(|l| !l.is_empty())
            .map(<[u8]>::to_vec)
            .collect()
    }

    /// Waits until `done` holds for the messages received, at most `timeout`.
    pub fn wait_for(
        &self,
        what: &str,
        timeout: Duration,
        mut done: impl FnMut(&[Vec<u8>]) -> bool,
    ) -> Result<Vec<Vec<u8>>> {
        let deadline = Instant::now() + timeout;
        loop {
            let got = self.received();
            if done(&got) {
                return Ok(got);
            }
            if Instant::now() > deadline {
                bail!(
                    "rsyslogd did not receive {what} within {timeout:?} ({} messages; its log:\n{})",
                    got.len(),
                    crate::process::tail(&self.log_path(), 20)
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Rsyslog {
    fn drop(&mut self) {
        if let Some(mut p) = self.proc.take() {
            p.kill();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn receives_octet_counted_frames_and_comes_back_on_its_port() {
        let dir = crate::RunDir::new("rsyslog-kit").unwrap();
        let mut r = Rsyslog::start(dir.path()).unwrap();
        let send = |r: &Rsyslog, m: &str| {
            let mut s = std::net::TcpStream::connect(r.address()).unwrap();
            s.write_all(format!("{} {m}", m.len()).as_bytes()).unwrap();
        };
        send(&r, "<86>1 - - - - - - one");
        r.wait_for("one", Duration::from_secs(10), |g| g.len() == 1)
            .unwrap();
        let port = r.port();
        r.stop().unwrap();
        assert!(std::net::TcpStream::connect(r.address()).is_err());
        r.restart().unwrap();
        assert_eq!(r.port(), port);
        send(&r, "<86>1 - - - - - - two");
        let got = r
            .wait_for("two", Duration::from_secs(10), |g| g.len() == 2)
            .unwrap();
        assert_eq!(got[1], b"<86>1 - - - - - - two");
    }
}
