//! The display client: `remote-viewer` (virt-viewer) showing the leased desktop. Its
//! connection file (`.vv`) is written to the viewer's stdin (`remote-viewer -`), so the
//! per-lease password never touches the disk or a command line. The viewer's own USB
//! redirection is switched off: only Airlock's forwarder carries the drive.
use std::path::Path;
use std::process::Stdio;

use airlock_core::wire::{DisplayGrant, DisplayProtocol};
use airlock_core::DesktopId;
use tokio::io::AsyncWriteExt as _;
use tokio::process::{Child, Command};

use super::config::DisplayMode;

/// Why the display client could not be started.
#[derive(Debug, thiserror::Error)]
pub enum ViewerError {
    #[error("the broker's display grant is unusable: {0}")]
    BadGrant(String),
    #[error("cannot start the display client {program}")]
    Spawn {
        program: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot hand the connection to the display client")]
    Stdin(#[source] std::io::Error),
}

/// A value that goes into the `.vv` file: one line, nothing that could start another key.
fn value(key: &str, v: &str) -> Result<String, ViewerError> {
    if v.is_empty() || v.len() > 1024 || v.chars().any(char::is_control) {
        return Err(ViewerError::BadGrant(format!(
            "{key} is empty, too long or holds control characters"
        )));
    }
    Ok(v.to_owned())
}

/// The connection file for `grant` on `desktop`. `ca_pem`: the site CA the viewer must
/// trust for a TLS display (else the system's).
pub fn connection_file(
    grant: &DisplayGrant,
    desktop: &DesktopId,
    ca_pem: Option<&str>,
    mode: DisplayMode,
) -> Result<String, ViewerError> {
    let kind = match grant.protocol {
        DisplayProtocol::Spice => "spice",
        DisplayProtocol::Vnc => "vnc",
    };
    let mut f = format!(
        "[virt-viewer]\ntype={kind}\nhost={}\npassword={}\ntitle=Airlock desktop {desktop}\n",
        value("host", &grant.host)?,
        value("password", &grant.password)?,
    );
    if grant.port == 0 {
        return Err(ViewerError::BadGrant("the display port is 0".into()));
    }
    if grant.tls {
        if grant.protocol != DisplayProtocol::Spice {
            return Err(ViewerError::BadGrant(
                "a TLS display is only supported with SPICE".into(),
            ));
        }
        f.push_str(&format!("tls-port={}\n", grant.port));
        if let Some(pem) = ca_pem {
            // The CA in the file itself, newlines written as `\n`.
            f.push_str(&format!("ca={}\n", pem.trim().replace('\n', "\\n")));
        }
        if let Some(subject) = &grant.host_subject {
            f.push_str(&format!(
                "host-subject={}\n",
                value("host_subject", subject)?
            ));
        }
    } else {
        f.push_str(&format!("port={}\n", grant.port));
    }
    if mode != DisplayMode::Window {
        f.push_str("fullscreen=1\n");
    }
    f.push_str("enable-usbredir=0\nenable-usb-autoshare=0\nenable-smartcard=0\n");
    f.push_str("delete-this-file=1\nsecure-attention=ctrl+alt+end\n");
    Ok(f)
}

/// The arguments for `mode` (kiosk settings exist only on the command line).
pub fn arguments(mode: DisplayMode) -> Vec<&'static str> {
    match mode {
        DisplayMode::Kiosk => vec!["--kiosk", "--kiosk-quit", "on-disconnect", "-"],
        DisplayMode::Fullscreen => vec!["--full-screen", "-"],
        DisplayMode::Window => vec!["-"],
    }
}

/// Starts `program` with the connection file on its stdin (then closed).
pub async fn start(program: &Path, mode: DisplayMode, file: &str) -> Result<Child, ViewerError> {
    let mut child = Command::new(program)
        .args(arguments(mode))
        .stdin(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|source| ViewerError::Spawn {
            program: program.display().to_string(),
            source,
        })?;
    let mut stdin = child
        .stdin
        .take()
        .ok_or_else(|| ViewerError::Stdin(std::io::Error::other("no stdin pipe")))?;
    stdin
        .write_all(file.as_bytes())
        .await
        .map_err(ViewerError::Stdin)?;
    stdin.shutdown().await.map_err(ViewerError::Stdin)?;
    drop(stdin);
    Ok(child)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grant(tls: bool) -> DisplayGrant {
        DisplayGrant {
            protocol: DisplayProtocol::Spice,
            host: "broker.example".into(),
            port: 5930,
            password: "pw1".into(),
            tls,
            host_subject: tls.then(|| "O=Airlock,CN=broker.example".into()),
        }
    }

    #[test]
    fn a_tls_display_gets_tls_port_ca_and_subject_and_no_usb_redirection() {
        let d = DesktopId::parse("desk-01").unwrap();
        let pem = "-----BEGIN CERTIFICATE-----\nAAA\n-----END CERTIFICATE-----\n";
        let f = connection_file(&grant(true), &d, Some(pem), DisplayMode::Kiosk).unwrap();
        assert!(f.starts_with("[virt-viewer]\ntype=spice\n"), "{f}");
        for line in [
            "tls-port=5930",
            "ca=-----BEGIN CERTIFICATE-----\\nAAA\\n-----END CERTIFICATE-----",
            "host-subject=O=Airlock,CN=broker.example",
            "password=pw1",
            "enable-usbredir=0",
            "enable-usb-autoshare=0",
            "fullscreen=1",
            "title=Airlock desktop desk-01",
        ] {
            assert!(f.lines().any(|l| l == line), "{line} missing in\n{f}");
        }
        assert!(!f.lines().any(|l| l.starts_with("port=")), "{f}");
    }

    #[test]
    fn a_plain_display_gets_a_port_and_a_window_is_not_full_screen() {
        let d = DesktopId::parse("desk-02").unwrap();
        let f = connection_file(&grant(false), &d, None, DisplayMode::Window).unwrap();
        assert!(f.lines().any(|l| l == "port=5930"));
        assert!(!f.contains("tls-port") && !f.contains("fullscreen"));
        assert_eq!(arguments(DisplayMode::Window), ["-"]);
        assert_eq!(
            arguments(DisplayMode::Kiosk),
            ["--kiosk", "--kiosk-quit", "on-disconnect", "-"]
        );
    }

    #[test]
    fn a_grant_that_could_inject_keys_is_refused() {
        let d = DesktopId::parse("desk-01").unwrap();
        let mut g = grant(false);
        g.password = "x\nhost=evil".into();
        assert!(connection_file(&g, &d, None, DisplayMode::Window).is_err());
        let mut g = grant(true);
        g.protocol = DisplayProtocol::Vnc;
        assert!(connection_file(&g, &d, None, DisplayMode::Window).is_err());
    }
}
