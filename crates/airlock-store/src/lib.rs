//! Airlock's persistence: desktops, leases and the audit log, in one SQLite database
//! (WAL mode, `synchronous=FULL`, schema migrations).
//!
//! *Architecture invariant:* one active lease per desktop is enforced by the database
//! (a partial unique index on `leases(desktop_id) WHERE ended_at IS NULL`) and every
//! acquire runs in one `IMMEDIATE` transaction together with the desktop's state change
//! and its audit record. There is no check-then-act in memory.
//!
//! *Architecture invariant:* every state change that matters to an auditor is written in
//! the same transaction as its audit record, and each audit record carries the SHA-256 of
//! the previous one, so [`Store::verify_audit`] finds the first altered, inserted or
//! deleted record; the chain's head is anchored outside the database ([`anchor`]), so
//! records cut off the end are found too.
#![forbid(unsafe_code)]

pub mod anchor;
pub mod atna;
mod audit;
mod error;
pub mod export;
pub mod reader;
mod schema;
mod store;
pub mod verify;

pub use anchor::{Anchor, AnchorCheck, AnchorError, AnchorLog};
pub use audit::{AuditEntry, AuditRecord, ChainReport, GENESIS_HASH};
pub use error::StoreError;
pub use export::{
    export_audit, parse_time_ms, rfc3339_ms, ExportError, ExportFormat, ExportWriter,
};
pub use reader::{
    AuditFilter, AuditPage, AuditQuery, AuditView, Reader, SessionCursor, SessionDurations,
    SessionFilter, SessionPage, SessionQuery, SessionSummary, SessionTimeline, TimelineEntry,
};
pub use store::{AcquireRequest, Acquired, DesktopRow, LeaseRow, Pick, ResetRecord, Store, Waited};
pub use verify::{BrokenLink, ChainMonitor, ChainStatus, FullCheck};
