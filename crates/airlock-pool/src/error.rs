//! Why a pool operation failed ([`PoolError`]), and [`ErrorChain`], which shows an error
//! with its causes (a variant's message never repeats its source: logs show the chain).
use airlock_core::{DesktopId, DesktopState};
use airlock_qemu::QemuError;
use airlock_store::StoreError;
use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;

/// Why a pool operation failed.
#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    #[error("no clean desktop is free; retry in {retry_after_s} s")]
    NoFreeDesktop { retry_after_s: u64 },
    #[error(
        "this terminal already holds {limit} active lease(s), as many as it may; release one first"
    )]
    LeaseLimit { limit: u32 },
    #[error("no active lease with that id for this terminal")]
    LeaseNotFound,
    #[error("no waiting ticket with that id for this terminal (it left the line: ask for a desktop again)")]
    TicketNotFound,
    #[error("unknown desktop {0}")]
    UnknownDesktop(String),
    #[error("desktop {desktop} is {state}; only a broken desktop can be repaired")]
    NotBroken {
        desktop: String,
        state: DesktopState,
    },
    #[error("desktop {desktop} is unchanged: {what}")]
    AdminNoChange { desktop: String, what: &'static str },
    #[error(
        "desktop {desktop} is {state}; wait until it is clean, leased or broken, then try again"
    )]
    AdminBusy {
        desktop: String,
        state: DesktopState,
    },
    #[error("the desktop could not be prepared for the lease; it is being reset, try again")]
    Setup(#[source] Box<PoolError>),
    #[error("a USB stream is already open for this lease; close it first")]
    UsbBusy,
    #[error("the desktop's USB port cannot be reached; try again")]
    UsbUnavailable(#[source] std::io::Error),
    #[error("the broker's database failed")]
    Store(#[from] StoreError),
    #[error("QEMU operation failed")]
    Qemu(#[from] QemuError),
    #[error("cannot create the state directory {}; check that airlockd may write there (server.state_dir)", path.display())]
    StateDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot make the state directory {} private (mode 0700); airlockd must own it (server.state_dir)", path.display())]
    StateDirMode {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("desktop {desktop}'s display port would be beyond 65535; lower pool.display.port_base or use fewer desktops")]
    DisplayPortRange { desktop: DesktopId },
    #[error("cannot listen on display port {listen}:{port} for {desktop}; is another airlockd or program using it? (pool.display.port_base)")]
    DisplayPortBind {
        listen: IpAddr,
        port: u16,
        desktop: DesktopId,
        #[source]
        source: std::io::Error,
    },
    #[error("the system's random number generator failed; check the host's kernel (getrandom)")]
    Randomness(#[source] getrandom::Error),
    #[error("64 random bytes did not give a {len}-character password; try again")]
    PasswordDraw { len: usize },
    #[error("the {what} lock is poisoned (a thread panicked while holding it); restart airlockd")]
    Poisoned { what: &'static str },
    #[error("no template is available (see /healthz); the desktop is rebuilt instead")]
    NoTemplate,
    #[error("desktop {desktop} has no running QEMU process")]
    NotRunning { desktop: DesktopId },
    #[error("desktop {desktop} runs without a display (started under another config); its next reset gives it one")]
    NoDisplay { desktop: DesktopId },
    #[error("could not set the desktop's display password")]
    DisplayPassword(#[source] airlock_qemu::driver::QmpErrorWithContext),
    #[error("cannot read the display's TLS certificate {}; give a PEM certificate chain (server.tls_cert)", path.display())]
    DisplayCert {
        path: PathBuf,
        #[source]
        source: rustls::pki_types::pem::Error,
    },
    #[error("cannot read the display's TLS key {}; give a PEM private key (server.tls_key)", path.display())]
    DisplayKey {
        path: PathBuf,
        #[source]
        source: rustls::pki_types::pem::Error,
    },
    #[error("the display's TLS certificate and key cannot be used together; check server.tls_cert and server.tls_key")]
    DisplayTlsConfig(#[source] rustls::Error),
}

/// Shows an error followed by its causes, `what failed: because: because`. A cause whose
/// text the message before it already holds is left out, so errors of other crates that
/// print their source themselves are not shown twice.
pub struct ErrorChain<'a>(pub &'a (dyn std::error::Error + 'static));

impl fmt::Display for ErrorChain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut shown = self.0.to_string();
        f.write_str(&shown)?;
        let mut cause = self.0.source();
        while let Some(c) = cause {
            let text = c.to_string();
            if !shown.contains(&text) {
                write!(f, ": {text}")?;
                shown = text;
            }
            cause = c.source();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_shows_every_cause_once() {
        let io = std::io::Error::from(std::io::ErrorKind::TimedOut);
        let e = PoolError::Setup(Box::new(PoolError::UsbUnavailable(io)));
        assert_eq!(
            ErrorChain(&e).to_string(),
            "the desktop could not be prepared for the lease; it is being reset, try again: \
             the desktop's USB port cannot be reached; try again: timed out"
        );
        // Each cause once, in order.
        let q = QemuError::Io {
            what: "create overlay".into(),
            source: std::io::Error::from(std::io::ErrorKind::NotFound),
        };
        let e = PoolError::Qemu(q);
        assert_eq!(
            ErrorChain(&e).to_string(),
            "QEMU operation failed: cannot create overlay: entity not found"
        );
    }

    #[test]
    fn no_message_repeats_its_source() {
        let io = || std::io::Error::other("SOURCE-TEXT");
        let errors = [
            PoolError::UsbUnavailable(io()),
            PoolError::StateDir {
                path: "/x".into(),
                source: io(),
            },
            PoolError::StateDirMode {
                path: "/x".into(),
                source: io(),
            },
            PoolError::DisplayPortBind {
                listen: IpAddr::from([127, 0, 0, 1]),
                port: 5900,
                desktop: DesktopId::parse("d1").unwrap(),
                source: io(),
            },
            PoolError::Setup(Box::new(PoolError::UsbUnavailable(io()))),
            PoolError::DisplayCert {
                path: "/c.pem".into(),
                source: rustls::pki_types::pem::Error::Io(io()),
            },
            PoolError::DisplayKey {
                path: "/k.pem".into(),
                source: rustls::pki_types::pem::Error::Io(io()),
            },
        ];
        for e in errors {
            assert!(!e.to_string().contains("SOURCE-TEXT"), "{e}");
            assert!(ErrorChain(&e).to_string().contains("SOURCE-TEXT"));
        }
    }
}
