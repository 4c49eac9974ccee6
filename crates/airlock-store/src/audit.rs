//! The hash-chained audit log.
//!
//! Record `n` stores `hash_n = SHA-256(hash_{n-1} || "\n" || canonical_n)`, where
//! `canonical_n` is the JSON array `[seq, ts, action, terminal, user, desktop, lease,
//! details]` and `hash_0` is [`GENESIS_HASH`]. Changing, inserting or deleting a record
//! breaks every later link; removing records from the end is caught only by comparing the
//! head with a copy kept elsewhere: the anchors the broker appends to a file outside the
//! database ([`crate::anchor`]; see docs/threat-model.md).
use airlock_core::UnixMillis;
use serde::Serialize;
use sha2::{Digest, Sha256};

/// The `prev_hash` of the first record.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// An audit record to append: who did what to which desktop and lease.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AuditEntry {
    pub action: String,
    pub terminal: Option<String>,
    pub user: Option<String>,
    pub desktop: Option<String>,
    pub lease: Option<String>,
    /// Free-form facts (reset method, duration, proof of a clean start, ...).
    pub details: serde_json::Value,
}

impl AuditEntry {
    /// An entry with an action and no subject yet.
    pub fn new(action: &str) -> Self {
        Self {
            action: action.to_owned(),
            terminal: None,
            user: None,
            desktop: None,
            lease: None,
            details: serde_json::Value::Object(serde_json::Map::new()),
        }
    }

    /// Sets the terminal.
    pub fn terminal(self, t: impl ToString) -> Self {
        self.with(|e| &mut e.terminal, t)
    }

    /// Sets the user.
    pub fn user(self, u: impl ToString) -> Self {
        self.with(|e| &mut e.user, u)
    }

    /// Sets the desktop.
    pub fn desktop(self, d: impl ToString) -> Self {
        self.with(|e| &mut e.desktop, d)
    }

    /// Sets the lease.
    pub fn lease(self, l: impl ToString) -> Self {
        self.with(|e| &mut e.lease, l)
    }

    fn with(mut self, field: fn(&mut Self) -> &mut Option<String>, v: impl ToString) -> Self {
        *field(&mut self) = Some(v.to_string());
        self
    }

    /// Sets the details.
    pub fn details(mut self, d: serde_json::Value) -> Self {
        self.details = d;
        self
    }
}

/// A stored audit record.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AuditRecord {
    /// Its place in the chain, from 1.
    pub seq: i64,
    /// When it was written.
    pub ts: UnixMillis,
    /// What happened (`lease_granted`, `lease_ended`, …; the list is in docs/api.md).
    pub action: String,
    /// Who and what it concerns, where it applies.
    pub terminal: Option<String>,
    pub user: Option<String>,
    pub desktop: Option<String>,
    pub lease: Option<String>,
    /// The details as stored (canonical JSON text).
    pub details: String,
    /// The previous record's hash, and this record's (over its fields and that one).
    pub prev_hash: String,
    pub hash: String,
}

/// The hash of a record given its predecessor's hash.
#[allow(clippy::too_many_arguments)]
pub(crate) fn link_hash(
    prev_hash: &str,
    seq: i64,
    ts: UnixMillis,
    action: &str,
    terminal: Option<&str>,
    user: Option<&str>,
    desktop: Option<&str>,
    lease: Option<&str>,
    details: &str,
) -> String {
    let canonical = serde_json::json!([seq, ts, action, terminal, user, desktop, lease, details]);
    let mut h = Sha256::new();
    h.update(prev_hash.as_bytes());
    h.update(b"\n");
    h.update(canonical.to_string().as_bytes());
    hex::encode(h.finalize())
}

impl AuditRecord {
    /// Recomputes this record's hash from its fields and the given predecessor hash.
    pub fn expected_hash(&self, prev_hash: &str) -> String {
        link_hash(
            prev_hash,
            self.seq,
            self.ts,
            &self.action,
            self.terminal.as_deref(),
            self.user.as_deref(),
            self.desktop.as_deref(),
            self.lease.as_deref(),
            &self.details,
        )
    }
}

/// The outcome of checking the audit chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChainReport {
    /// Records checked.
    pub records: u64,
    /// The hash of the last record (the head), to compare with a copy kept elsewhere.
    pub head: String,
    /// The first broken link, if any: its sequence number and what is wrong.
    pub first_broken: Option<(i64, String)>,
}

impl ChainReport {
    /// Whether every link holds.
    pub fn is_intact(&self) -> bool {
        self.first_broken.is_none()
    }
}

/// Checks a sequence of records (in `seq` order) and reports the first broken link.
pub fn verify_chain<I: IntoIterator<Item = AuditRecord>>(records: I) -> ChainReport {
    let mut prev = GENESIS_HASH.to_owned();
    let mut expected_seq: Option<i64> = None;
    let mut n = 0u64;
    for r in records {
        n += 1;
        let broken = match expected_seq {
            Some(e) if r.seq != e => Some(format!("sequence gap: expected record {e}, found {}", r.seq)),
            _ if r.prev_hash != prev => Some(
                "prev_hash does not match the previous record's hash (a record before it was changed or removed)".into(),
            ),
            _ if r.hash != r.expected_hash(&prev) => {
                Some("hash does not match the record's contents (the record was changed)".into())
            }
            _ => None,
        };
        if let Some(why) = broken {
            return ChainReport {
                records: n,
                head: prev,
                first_broken: Some((r.seq, why)),
            };
        }
        prev = r.hash;
        expected_seq = Some(r.seq + 1);
    }
    ChainReport {
        records: n,
        head: prev,
        first_broken: None,
    }
}
