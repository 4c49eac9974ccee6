//! The terminal's configuration for `airlock open` (`/etc/airlock/terminal.toml`), typed
//! and written to TOML in one place, with the token in its own owner-only file, as a
//! site would install it.
use anyhow::{Context, Result};
use serde::Serialize;
use serde_with::skip_serializing_none;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};

/// `AIRLOCK open --config CONFIG` with its output (stdout and stderr) in `log`, no stdin
/// and no token from the environment; the caller adds its arguments and starts it.
pub fn airlock_open_command(
    airlock: &Path,
    config: &Path,
    log: &Path,
) -> Result<std::process::Command> {
    let out = std::fs::File::create(log)?;
    let mut cmd = std::process::Command::new(airlock);
    cmd.arg("open")
        .arg("--config")
        .arg(config)
        .env_remove("AIRLOCK_TOKEN")
        .stdin(std::process::Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(out);
    Ok(cmd)
}

/// What a test terminal runs `airlock open` with.
#[derive(Debug, Clone)]
pub struct TerminalConfig {
    pub broker_url: String,
    /// In clear: written to `token` (mode 600) beside the config.
    pub token: String,
    /// The site CA (PEM file) for an https broker.
    pub ca_file: Option<PathBuf>,
    pub user: Option<String>,
    pub wait_s: Option<u64>,
    /// `display.mode`: kiosk, fullscreen or window.
    pub display_mode: Option<String>,
    pub display_client: Option<PathBuf>,
    /// `drive.allow_unguarded`.
    pub allow_unguarded: bool,
}

impl TerminalConfig {
    /// The first test terminal of `broker_url`, user `dr-test`.
    pub fn new(broker_url: &str) -> TerminalConfig {
        TerminalConfig {
            broker_url: broker_url.into(),
            token: crate::broker::TERMINAL_TOKEN.into(),
            ca_file: None,
            user: Some("dr-test".into()),
            wait_s: None,
            display_mode: None,
            display_client: None,
            allow_unguarded: false,
        }
    }

    /// Writes `dir/terminal.toml` and `dir/token`; returns the config's path.
    pub fn write(&self, dir: &Path) -> Result<PathBuf> {
        let token_file = dir.join("token");
        std::fs::write(&token_file, format!("{}\n", self.token))
            .with_context(|| format!("writing {}", token_file.display()))?;
        std::fs::set_permissions(&token_file, std::fs::Permissions::from_mode(0o600))?;
        let path = dir.join("terminal.toml");
        let text = self.toml(&token_file)?;
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
        Ok(path)
    }

    /// The configuration's text, with the token in `token_file` (written by the caller).
    pub fn toml(&self, token_file: &Path) -> Result<String> {
        let file = File {
            broker: Broker {
                url: &self.broker_url,
                token_file,
                ca_file: self.ca_file.as_deref(),
            },
            session: Session {
                user: self.user.as_deref(),
                wait_s: self.wait_s,
            },
            display: Display {
                mode: self.display_mode.as_deref(),
                client: self.display_client.as_deref(),
            },
            drive: Drive {
                allow_unguarded: self.allow_unguarded.then_some(true),
            },
        };
        toml::to_string(&file).context("writing the terminal config as TOML")
    }
}

#[derive(Serialize)]
struct File<'a> {
    broker: Broker<'a>,
    session: Session<'a>,
    display: Display<'a>,
    drive: Drive,
}

#[skip_serializing_none]
#[derive(Serialize)]
struct Broker<'a> {
    url: &'a str,
    token_file: &'a Path,
    ca_file: Option<&'a Path>,
}

#[skip_serializing_none]
#[derive(Serialize)]
struct Session<'a> {
    user: Option<&'a str>,
    wait_s: Option<u64>,
}

#[skip_serializing_none]
#[derive(Serialize)]
struct Display<'a> {
    mode: Option<&'a str>,
    client: Option<&'a Path>,
}

#[skip_serializing_none]
#[derive(Serialize)]
struct Drive {
    allow_unguarded: Option<bool>,
}
