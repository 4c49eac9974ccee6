//! Verification of the audit chain without the broker's store lock, on a [`Reader`]'s
//! read-only connections.
//!
//! [`ChainMonitor::check_new`] is incremental: it remembers the last verified record's
//! sequence number and hash and hashes only the records after it, in batches, so a
//! check every few seconds costs what was written since the last one (its first run,
//! from record 1, counts as a full check).
//! [`ChainMonitor::check_full`] hashes the whole chain again from the first record: an
//! edit to a record verified earlier is caught only that way (the broker runs it at an
//! interval and on demand). Both report the first broken link: its sequence number and
//! why. Records cut off the end are caught by the incremental check when the head falls
//! below what it verified, and across restarts by the anchors ([`crate::anchor`]).
use crate::audit::{AuditRecord, GENESIS_HASH};
use crate::reader::Reader;
use crate::store::{FromRow, AUDIT_COLS};
use crate::StoreError;
use airlock_core::UnixMillis;
use rusqlite::Connection;
use serde::Serialize;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Instant;

/// Records hashed per read transaction of an incremental check.
pub const BATCH: usize = 5000;

/// The first broken link of the chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BrokenLink {
    pub seq: i64,
    pub why: String,
}

/// The last full check's result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FullCheck {
    /// When it finished (Unix ms), and how long it took.
    pub finished_at: UnixMillis,
    pub duration_ms: u64,
    /// Records hashed.
    pub records: u64,
    pub intact: bool,
}

/// What the chain's verification knows now. Read it with [`ChainMonitor::status`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChainStatus {
    /// No broken link found (so far: up to `verified_seq`).
    pub intact: bool,
    /// Records verified, from the first: `verified_seq` with its hash `verified_hash`.
    pub verified_records: u64,
    pub verified_seq: i64,
    pub verified_hash: String,
    /// The first broken link, if one was found.
    pub first_broken: Option<BrokenLink>,
    /// When the last check (either kind) finished (Unix ms; `None` before the first).
    pub last_check_at: Option<UnixMillis>,
    /// The last full check, if one ran.
    pub last_full: Option<FullCheck>,
    /// Whether a full check is running now.
    pub full_check_running: bool,
    /// The last check's error, if it could not read the database.
    pub error: Option<String>,
}

impl Default for ChainStatus {
    fn default() -> Self {
        ChainStatus {
            intact: true,
            verified_records: 0,
            verified_seq: 0,
            verified_hash: GENESIS_HASH.to_owned(),
            first_broken: None,
            last_check_at: None,
            last_full: None,
            full_check_running: false,
            error: None,
        }
    }
}

/// How far the incremental check got.
#[derive(Debug, Clone)]
struct Progress {
    seq: i64,
    hash: String,
    broken: Option<BrokenLink>,
}

/// The chain's verifier and its shared status: one per broker, held in an `Arc` by the
/// background task that runs the checks and by whoever shows the status (the API, the
/// console, the metrics). Every method blocks on SQLite; call it from
/// `spawn_blocking`.
pub struct ChainMonitor {
    reader: Reader,
    progress: Mutex<Progress>,
    status: RwLock<ChainStatus>,
    /// One full check at a time.
    full_running: AtomicBool,
    /// Records hashed since this monitor was made (both kinds).
    hashed: AtomicU64,
    batch: usize,
}

fn now_ms() -> UnixMillis {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Checks one link: `r` after a record whose hash is `prev` and seq is `prev_seq`.
fn check_link(prev_seq: i64, prev: &str, r: &AuditRecord) -> Option<String> {
    if r.seq != prev_seq + 1 {
        Some(format!(
            "sequence gap: expected record {}, found {} (records were removed)",
            prev_seq + 1,
            r.seq
        ))
    } else if r.prev_hash != prev {
        Some("prev_hash does not match the previous record's hash (a record before it was changed or removed)".into())
    } else if r.hash != r.expected_hash(prev) {
        Some("hash does not match the record's contents (the record was changed)".into())
    } else {
        None
    }
}

/// Hashes records after `(seq, hash)` in order, at most `limit` (`None`: all), one row
/// at a time. Returns the new position, the records hashed and the first broken link.
fn walk(
    c: &Connection,
    mut seq: i64,
    mut hash: String,
    limit: Option<usize>,
) -> Result<(i64, String, u64, Option<BrokenLink>), StoreError> {
    let sql = match limit {
        Some(n) => format!("SELECT {AUDIT_COLS} FROM audit WHERE seq > ?1 ORDER BY seq LIMIT {n}"),
        None => format!("SELECT {AUDIT_COLS} FROM audit WHERE seq > ?1 ORDER BY seq"),
    };
    let mut st = c.prepare(&sql)?;
    let mut rows = st.query([seq])?;
    let mut n = 0u64;
    while let Some(row) = rows.next()? {
        let r = AuditRecord::from_row(row)??;
        n += 1;
        if let Some(why) = check_link(seq, &hash, &r) {
            return Ok((seq, hash, n, Some(BrokenLink { seq: r.seq, why })));
        }
        seq = r.seq;
        hash = r.hash;
    }
    Ok((seq, hash, n, None))
}

impl ChainMonitor {
    /// A monitor that has verified nothing yet.
    pub fn new(reader: Reader) -> Arc<ChainMonitor> {
        Self::with_batch(reader, BATCH)
    }

    /// With another batch size (tests).
    pub fn with_batch(reader: Reader, batch: usize) -> Arc<ChainMonitor> {
        Arc::new(ChainMonitor {
            reader,
            progress: Mutex::new(Progress {
                seq: 0,
                hash: GENESIS_HASH.to_owned(),
                broken: None,
            }),
            status: RwLock::new(ChainStatus::default()),
            full_running: AtomicBool::new(false),
            hashed: AtomicU64::new(0),
            batch: batch.max(1),
        })
    }

    /// The status now (never waits for a check).
    pub fn status(&self) -> ChainStatus {
        self.status.read().map(|s| s.clone()).unwrap_or_default()
    }

    /// Records hashed by this monitor so far (both kinds of check).
    pub fn records_hashed(&self) -> u64 {
        self.hashed.load(Ordering::Relaxed)
    }

    /// The reader it checks with.
    pub fn reader(&self) -> &Reader {
        &self.reader
    }

    fn publish(&self, f: impl FnOnce(&mut ChainStatus)) -> ChainStatus {
        match self.status.write() {
            Ok(mut s) => {
                f(&mut s);
                s.clone()
            }
            Err(_) => ChainStatus::default(),
        }
    }

    fn failed(&self, e: &StoreError) -> ChainStatus {
        let msg = format!("cannot read the audit log: {e}");
        self.publish(|s| {
            s.error = Some(msg);
            s.last_check_at = Some(now_ms());
        })
    }

    /// Hashes the records written since the last check (in batches of [`BATCH`], each its
    /// own read transaction) and returns the status. Once a link is broken it stays
    /// broken; only a full check that finds the chain intact clears it.
    pub fn check_new(&self) -> Result<ChainStatus, StoreError> {
        let Ok(mut p) = self.progress.lock() else {
            return Ok(self.status());
        };
        if p.broken.is_some() {
            drop(p);
            return Ok(self.publish(|s| s.last_check_at = Some(now_ms())));
        }
        // From the first record: this check is a full one.
        let from_start = p.seq == 0;
        let t0 = Instant::now();
        let hashed_before = self.hashed.load(Ordering::Relaxed);
        let res = self.reader.with(|c| {
            // Records cut off the end since they were verified.
            let (head_seq, _) = crate::store::audit_head(c)?;
            if head_seq < p.seq {
                return Ok(Some(BrokenLink {
                    seq: head_seq + 1,
                    why: format!(
                        "the chain ends at record {head_seq}, but record {} was verified before: records were cut off the end",
                        p.seq
                    ),
                }));
            }
            loop {
                let (seq, hash, n, broken) = walk(c, p.seq, p.hash.clone(), Some(self.batch))?;
                self.hashed.fetch_add(n, Ordering::Relaxed);
                p.seq = seq;
                p.hash = hash;
                if broken.is_some() || n < self.batch as u64 {
                    return Ok(broken);
                }
            }
        });
        let broken = match res {
            Ok(b) => b,
            Err(e) => {
                drop(p);
                return Ok(self.failed(&e));
            }
        };
        if broken.is_some() {
            p.broken = broken;
        }
        let snapshot = p.clone();
        drop(p);
        let full = from_start.then(|| FullCheck {
            finished_at: now_ms(),
            duration_ms: u64::try_from(t0.elapsed().as_millis()).unwrap_or(u64::MAX),
            records: self.hashed.load(Ordering::Relaxed) - hashed_before,
            intact: snapshot.broken.is_none(),
        });
        Ok(self.publish(|s| {
            s.verified_seq = snapshot.seq;
            s.verified_records = u64::try_from(snapshot.seq).unwrap_or(0);
            s.verified_hash = snapshot.hash;
            if snapshot.broken.is_some() {
                s.intact = false;
                s.first_broken = snapshot.broken;
            }
            s.error = None;
            s.last_check_at = Some(now_ms());
            if let Some(f) = full {
                s.last_full = Some(f);
            }
        }))
    }

    /// Hashes the whole chain from its first record (one read transaction, one record in
    /// memory at a time). Its result replaces the incremental one: a broken link found
    /// here is the first; an intact chain clears an earlier break. At most one runs at a
    /// time; a second call while one runs returns the status at once.
    pub fn check_full(&self) -> Result<ChainStatus, StoreError> {
        if self.full_running.swap(true, Ordering::SeqCst) {
            return Ok(self.status());
        }
        self.publish(|s| s.full_check_running = true);
        let t0 = Instant::now();
        let res = self
            .reader
            .with(|c| walk(c, 0, GENESIS_HASH.to_owned(), None));
        self.full_running.store(false, Ordering::SeqCst);
        let (seq, hash, n, broken) = match res {
            Ok(r) => r,
            Err(e) => {
                self.publish(|s| s.full_check_running = false);
                return Ok(self.failed(&e));
            }
        };
        self.hashed.fetch_add(n, Ordering::Relaxed);
        let full = FullCheck {
            finished_at: now_ms(),
            duration_ms: u64::try_from(t0.elapsed().as_millis()).unwrap_or(u64::MAX),
            records: n,
            intact: broken.is_none(),
        };
        let snapshot = match self.progress.lock() {
            Ok(mut p) => {
                match &broken {
                    Some(_) => {
                        // The first break is where the full check stopped.
                        p.seq = seq;
                        p.hash = hash;
                        p.broken = broken.clone();
                    }
                    None => {
                        // The incremental check goes on from the verified head (unless
                        // it is further already, or found a break the full check did
                        // not see: records cut off since).
                        if p.broken.as_ref().is_some_and(|b| b.seq <= seq) || p.seq <= seq {
                            p.seq = seq;
                            p.hash = hash;
                            p.broken = None;
                        }
                    }
                }
                p.clone()
            }
            Err(_) => return Ok(self.status()),
        };
        Ok(self.publish(|s| {
            s.full_check_running = false;
            s.verified_seq = snapshot.seq;
            s.verified_records = u64::try_from(snapshot.seq).unwrap_or(0);
            s.verified_hash = snapshot.hash;
            s.intact = snapshot.broken.is_none();
            s.first_broken = snapshot.broken;
            s.error = None;
            s.last_check_at = Some(full.finished_at);
            s.last_full = Some(full);
        }))
    }
}
