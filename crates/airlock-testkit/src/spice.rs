//! A real SPICE client (spice-gtk's SpiceClientGLib through GObject introspection,
//! `tools/spice_auth.py`), to check which password opens a desktop's display.
use anyhow::{Context, Result};
use std::process::{Command, Stdio};

const SPICE_AUTH: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tools/spice_auth.py");

/// The Debian packages the client needs.
pub const PACKAGES: &[(&str, &str)] = &[("python3", "python3-gi gir1.2-spiceclientglib-2.0")];

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
    /// Anything else (connection refused, timeout).
    Failed,
}

/// Connects a real SPICE client to 127.0.0.1:`port` with `password`.
pub fn auth(port: u16, password: &str) -> Result<AuthResult> {
    let out = Command::new("/usr/bin/python3")
        .args([SPICE_AUTH, "127.0.0.1", &port.to_string(), password])
        .output()
        .context("running tools/spice_auth.py")?;
    Ok(match out.status.code() {
        Some(0) => AuthResult::Opened,
        Some(2) => AuthResult::Refused,
        _ => AuthResult::Failed,
    })
}
