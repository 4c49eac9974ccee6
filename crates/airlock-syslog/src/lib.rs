//! Forwarding Airlock's audit records to a syslog server: an audit repository (IHE
//! ATNA "Record Audit Event", ITI-20) or a SIEM.
//!
//! - [`format`]: RFC 5424 messages (validated header fields, escaped structured data, a
//!   UTF-8 MSG after a BOM) and octet-counted framing (RFC 6587 §3.4.1, RFC 5425 §4.3).
//! - [`audit`]: one audit record as one message (its chain links and ATNA codes in
//!   structured data, the record itself as a JSON line).
//! - [`transport`]: TCP, or TLS with rustls (RFC 5425: CA file, server name, optional
//!   client certificate).
//! - [`cursor`]: the last record the server took, in a file replaced atomically.
//! - [`forward`]: the forwarder that tails the database from the cursor, with retry,
//!   a bounded memory footprint and a status for metrics and `/healthz`.
//! - [`backoff`]: the capped exponential backoff between attempts.
//! - [`parse`]: a strict RFC 5424 parser (the receiving side, for tests).
#![forbid(unsafe_code)]

pub mod audit;
pub mod backoff;
pub mod cursor;
mod error;
pub mod format;
pub mod forward;
pub mod parse;
pub mod transport;

pub use error::SyslogError;
pub use format::{Facility, Header, SdId, Severity};
pub use forward::{AuditSource, ForwardConfig, Forwarder, Status};
pub use transport::Transport;
