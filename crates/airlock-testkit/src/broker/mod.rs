//! `airlockd` as a process, the way it is deployed: its own state directory, the TOML
//! config of [`BrokerConfig`], its log, its QEMU desktops. Dropping a [`Broker`] kills
//! the broker and every process whose command line names its state directory (its
//! desktops outlive it by design; a frozen old QEMU of a template clone too).
mod api;
mod config;

pub use api::LeaseAnswer;
pub use config::{
    AuditForward, BrokerConfig, DicomPeer, Export, Hardware, Limits, Logon, TerminalEntry,
    TlsFiles, ADMIN_TOKEN, TERMINAL2_TOKEN, TERMINAL_TOKEN,
};

use crate::process::{register_cleanup, sweep_processes, tail, unregister_cleanup, Proc, RunDir};
use crate::serial::SerialLog;
use crate::shell::Shell;
use anyhow::{bail, Context, Result};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

/// A running (or killed, to be restarted) `airlockd`.
pub struct Broker {
    /// `http://127.0.0.1:PORT` (or `https://`).
    pub url: String,
    pub port: u16,
    /// The state directory.
    pub state: PathBuf,
    /// The config file.
    pub config_path: PathBuf,
    pub config: BrokerConfig,
    /// The first desktop display port.
    pub display_port_base: u16,
    /// A client that trusts the broker's TLS CA, if any.
    pub http: reqwest::Client,
    airlockd: PathBuf,
    proc: Option<Proc>,
    cleanup: u64,
    _dir: RunDir,
}

impl Broker {
    /// Writes the config and starts `airlockd` (the binary at `airlockd`); returns once
    /// it listens (its desktops are still starting: see [`Broker::wait_clean`]).
    pub fn start(airlockd: &Path, config: BrokerConfig) -> Result<Broker> {
        Broker::start_prepared(airlockd, config, |_| Ok(()))
    }

    /// [`Broker::start`], with `prepare` run on the new (empty, existing) state
    /// directory before the broker first starts: e.g. a database filled by
    /// [`crate::audit_fill::fill_audit`] at `state/airlock.db`.
    pub fn start_prepared(
        airlockd: &Path,
        config: BrokerConfig,
        prepare: impl FnOnce(&Path) -> Result<()>,
    ) -> Result<Broker> {
        // A test that times out gets SIGTERM: stop the broker and its desktops then too
        // (QEMU outlives its broker by design, so nothing else would).
        crate::process::stop_everything_on_signal();
        let dir = RunDir::new("airlock-broker-")?;
        let state = dir.join("state");
        let config_path = dir.join("airlockd.toml");
        let size = u16::try_from(config.size).context("pool size")?;
        let free = crate::net::free_ports(size.max(1))?;
        // VNC display ports are 5900 + display number (at most 99 here).
        let display_port_base = if config.display.as_deref() == Some("vnc") {
            5900 + free % 90
        } else {
            free
        };
        std::fs::write(&config_path, config.to_toml(&state, display_port_base)?)
            .with_context(|| format!("writing {}", config_path.display()))?;
        let mut http = reqwest::Client::builder().timeout(Duration::from_secs(120));
        if let Some(tls) = &config.tls {
            let pem =
                std::fs::read(&tls.ca).with_context(|| format!("reading {}", tls.ca.display()))?;
            http = http.add_root_certificate(
                reqwest::Certificate::from_pem(&pem).context("parsing the test CA")?,
            );
        }
        let needle = state.clone();
        let mut b = Broker {
            url: String::new(),
            port: 0,
            state,
            config_path,
            config,
            display_port_base,
            http: http.build().context("building the HTTP client")?,
            airlockd: airlockd.to_path_buf(),
            proc: None,
            cleanup: register_cleanup(Box::new(move || {
                sweep_processes(&needle);
            })),
            _dir: dir,
        };
        std::fs::create_dir_all(&b.state)
            .with_context(|| format!("creating {}", b.state.display()))?;
        prepare(&b.state)?;
        b.restart()?;
        Ok(b)
    }

    /// Starts the broker process again with the same config and state (after
    /// [`Broker::kill9`]); returns once it listens.
    pub fn restart(&mut self) -> Result<()> {
        std::fs::create_dir_all(&self.state)?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())?;
        let mut proc = Proc::spawn(
            Command::new(&self.airlockd)
                .arg("--config")
                .arg(&self.config_path)
                .env("AIRLOCK_LOG", &self.config.log_filter)
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(log),
            "airlockd",
        )?;
        let stdout = proc.child().stdout.take().context("no stdout")?;
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            let _ = tx.send(lines.next().and_then(Result::ok).unwrap_or_default());
            for _ in lines {}
        });
        self.proc = Some(proc);
        let first = rx.recv_timeout(Duration::from_secs(60)).unwrap_or_default();
        let Some(url) = first.strip_prefix("airlockd listening on ") else {
            // Its error is the log's `Error:` line (a backtrace may follow it).
            let log = std::fs::read_to_string(self.log_path()).unwrap_or_default();
            let error = log
                .lines()
                .rfind(|l| l.starts_with("Error:"))
                .unwrap_or("(no Error: line)");
            bail!(
                "airlockd did not start (first line {first:?}): {error}; log:\n{}",
                self.log_tail(30)
            );
        };
        self.url = url.trim().to_string();
        self.port = self
            .url
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .with_context(|| format!("no port in the broker URL {}", self.url))?;
        Ok(())
    }

    /// SIGKILL the broker; its QEMU processes keep running (a restart re-attaches).
    pub fn kill9(&mut self) {
        if let Some(mut p) = self.proc.take() {
            p.kill();
        }
    }

    /// SIGTERM, the way systemd stops the broker, and waits until it has exited (its
    /// desktops keep running; a restart re-attaches).
    pub fn terminate(&mut self) -> Result<std::process::ExitStatus> {
        let Some(mut p) = self.proc.take() else {
            bail!("the broker is not running");
        };
        p.signal(rustix::process::Signal::TERM);
        p.wait_timeout(Duration::from_secs(30))
    }

    /// The audit anchor file (next to the state directory).
    pub fn anchor_path(&self) -> PathBuf {
        BrokerConfig::anchor_file(&self.state)
    }

    /// Stops the broker and every process of its state directory.
    pub fn stop(&mut self) {
        self.kill9();
        sweep_processes(&self.state);
        // `stop-desktops` also removes the broker's cgroups (nothing else would).
        let _ = self.cli(&["stop-desktops"]);
    }

    /// The broker's process id.
    pub fn pid(&self) -> Option<u32> {
        self.proc.as_ref().map(Proc::id)
    }

    /// An error with the log if the broker process has exited.
    pub fn check_alive(&mut self) -> Result<()> {
        if let Some(p) = self.proc.as_mut() {
            if let Ok(Some(status)) = p.child().try_wait() {
                bail!("airlockd exited ({status}); log:\n{}", self.log_tail(30));
            }
        }
        Ok(())
    }

    pub fn log_path(&self) -> PathBuf {
        self.state.join("airlockd.log")
    }

    /// The last `n` lines of the broker's log.
    pub fn log_tail(&self, n: usize) -> String {
        tail(&self.log_path(), n)
    }

    /// A desktop's run directory (its QEMU's sockets, pid file, serial log).
    pub fn run_dir(&self, desktop: &str) -> PathBuf {
        self.state.join("desktops").join(desktop).join("run")
    }

    /// What the desktop's guest printed on its agent port.
    pub fn serial_log(&self, desktop: &str) -> SerialLog {
        SerialLog::file(self.run_dir(desktop).join("serial.log"))
    }

    /// A shell on the desktop's test-only control port.
    pub fn control(&self, desktop: &str) -> Result<Shell> {
        Shell::connect(&self.run_dir(desktop).join("control.sock"), None)
    }

    /// The desktop's test-only second QMP monitor (with `test_control_channel`).
    pub fn test_qmp(&self, desktop: &str) -> Result<crate::qmp::Qmp> {
        crate::qmp::Qmp::connect(&self.run_dir(desktop).join("test-qmp.sock"))
    }

    /// A desktop's screen as its QEMU renders it (QMP `screendump` on the test monitor).
    /// A confined QEMU writes only in its run directory, so the file goes there
    /// (`screendump.ppm`, named relative to QEMU's working directory) and is read back.
    pub fn screendump(&self, desktop: &str) -> Result<crate::image::Image> {
        let mut qmp = self.test_qmp(desktop)?;
        qmp.screendump_as(Path::new("screendump.ppm"), &self.screendump_path(desktop))
    }

    /// Where [`Broker::screendump`] leaves the last image of `desktop`.
    pub fn screendump_path(&self, desktop: &str) -> PathBuf {
        self.run_dir(desktop).join("screendump.ppm")
    }

    /// The process id of a desktop's QEMU (its pid file).
    pub fn desktop_qemu_pid(&self, desktop: &str) -> Result<u32> {
        let f = self.run_dir(desktop).join("qemu.pid");
        std::fs::read_to_string(&f)
            .with_context(|| format!("reading {}", f.display()))?
            .trim()
            .parse()
            .with_context(|| format!("parsing {}", f.display()))
    }

    /// The pids in the pid files of every desktop and template.
    pub fn qemu_pids(&self) -> Vec<u32> {
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

    /// `airlockd --config CONFIG ARGS…`, run to completion.
    pub fn cli(&self, args: &[&str]) -> Result<Output> {
        Command::new(&self.airlockd)
            .arg("--config")
            .arg(&self.config_path)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("running airlockd {}", args.join(" ")))
    }

    /// `airlockd audit verify` on this broker's database: (success, stdout).
    pub fn verify_audit_cli(&self) -> Result<(bool, String)> {
        let out = self.cli(&["audit", "verify"])?;
        Ok((
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        ))
    }

    /// Starts `airlock usb forward --iso` (the binary at `airlock`) for `lease` with
    /// `iso` as the first terminal, its stdin a pipe for `eject`/`insert`/`unplug`
    /// commands and its output in `log`.
    pub fn forward_iso(&self, airlock: &Path, lease: &str, iso: &Path, log: &Path) -> Result<Proc> {
        let logf =
            std::fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
        Proc::spawn(
            Command::new(airlock)
                .args(["usb", "forward", "--broker", &self.url, "--lease", lease])
                .arg("--iso")
                .arg(iso)
                .env("AIRLOCK_TOKEN", TERMINAL_TOKEN)
                .stdin(Stdio::piped())
                .stdout(logf.try_clone()?)
                .stderr(logf),
            "airlock usb forward --iso",
        )
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("---- airlockd log (tail) ----\n{}", self.log_tail(80));
        }
        self.stop();
        unregister_cleanup(self.cleanup);
    }
}
