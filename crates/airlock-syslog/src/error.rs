//! The crate's errors.
use std::path::PathBuf;

/// Why a message could not be built or sent, or forwarding could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum SyslogError {
    #[error("{field} must be 1 to {max} PRINTUSASCII characters (no spaces or control characters), not {value:?}")]
    HeaderField {
        field: &'static str,
        max: usize,
        value: String,
    },
    #[error("unknown syslog facility {0:?}: use a name (authpriv, local0 … local7, …) or a number 0 to 23")]
    Facility(String),
    #[error("{0:?} is not a structured-data ID of the form name@<private enterprise number> (at most 32 characters, no space, '=', ']' or '\"')")]
    SdId(String),
    #[error("bad syslog framing: {0}")]
    Framing(String),
    #[error("cannot read {what} {}: {source}", path.display())]
    ReadFile {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{what} {} holds no usable PEM {expected}", path.display())]
    Pem {
        what: &'static str,
        path: PathBuf,
        expected: &'static str,
    },
    #[error("TLS setup: {0}")]
    Tls(#[from] rustls::Error),
    #[error("{0:?} is not a valid TLS server name (a DNS name or an IP address)")]
    ServerName(String),
    #[error("connect to the syslog server {address}: {source}")]
    Connect {
        address: String,
        source: std::io::Error,
    },
    #[error("connect to the syslog server {address}: timed out after {seconds} s")]
    ConnectTimeout { address: String, seconds: u64 },
    #[error("send to the syslog server: {0}")]
    Send(std::io::Error),
    #[error("the syslog server closed the connection")]
    Closed,
    #[error("the forwarding cursor {}: {source}", path.display())]
    Cursor {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("read the audit log: {0}")]
    Source(#[from] airlock_store::StoreError),
}
