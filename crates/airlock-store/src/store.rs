use crate::anchor::{check_anchor, Anchor, AnchorCheck};
use crate::audit::{link_hash, verify_chain, AuditEntry, AuditRecord, ChainReport, GENESIS_HASH};
use crate::schema::migrations;
use crate::StoreError;
use airlock_core::policy::{choose_desktop, Candidate};
use airlock_core::{
    DesktopEvent, DesktopId, DesktopState, EndReason, LeaseId, ResetMethod, TerminalName, TicketId,
    UnixMillis, UserName,
};
use rusqlite::types::FromSql;
use rusqlite::{params, Connection, OpenFlags, OptionalExtension, Params, Row, Transaction};
use serde::Serialize;
use std::path::Path;

/// The SQLite store. Not `Sync`: the broker keeps it behind a mutex, which is fine because
/// every operation is one short transaction.
pub struct Store {
    conn: Connection,
}

/// A desktop as stored.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DesktopRow {
    pub id: DesktopId,
    pub state: DesktopState,
    /// When it entered its current state.
    pub since: UnixMillis,
    /// Why it is in this state (e.g. why it is broken).
    pub reason: Option<String>,
    /// Completed resets, the last one's duration and its method.
    pub resets: i64,
    pub last_reset_ms: Option<i64>,
    pub last_reset_method: Option<String>,
    /// How many clean starts it has had.
    pub generation: i64,
    /// The proof of its last clean start (JSON).
    pub proof: Option<String>,
    /// Kept out of service by an admin (its lease, if any, runs to its end; it is not
    /// offered again until returned), and why.
    pub drained: bool,
    pub drain_reason: Option<String>,
}

/// A lease as stored.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LeaseRow {
    pub id: LeaseId,
    /// The desktop, and the terminal and user it was granted to.
    pub desktop: DesktopId,
    pub terminal: TerminalName,
    pub user: UserName,
    /// When it was granted, and its last heartbeat.
    pub created_at: UnixMillis,
    pub heartbeat_at: UnixMillis,
    /// When and why it ended (both `None` while it is live).
    pub ended_at: Option<UnixMillis>,
    pub end_reason: Option<EndReason>,
}

/// The result of a successful acquire.
#[derive(Debug, Clone, PartialEq)]
pub struct Acquired {
    pub lease: LeaseRow,
    /// The terminal's live lease of the same user, given back (not a new one).
    pub reattached: bool,
}

/// Which clean desktop an acquire may take.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Pick<'a> {
    /// The one [`choose_desktop`] picks, leaving out these (held for waiting terminals).
    AnyExcept(&'a [DesktopId]),
    /// Exactly this one, if it is clean (the desktop held for the terminal's ticket).
    Exactly(&'a DesktopId),
}

/// A lease request that waited in line, for the audit trail.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Waited<'a> {
    pub ticket: &'a TicketId,
    pub waited_ms: i64,
}

/// What [`Store::acquire_with`] is asked.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AcquireRequest<'a> {
    pub lease_id: &'a LeaseId,
    pub terminal: &'a TerminalName,
    pub user: &'a UserName,
    pub now: UnixMillis,
    pub pick: Pick<'a>,
    /// Give back the terminal's active lease of the same user instead, when its last
    /// heartbeat is less than this many milliseconds old (the lease timeout).
    pub reattach_within_ms: Option<i64>,
    /// The request waited in line with this ticket: the grant records it, and the
    /// ticket's leaving is audited in the same transaction.
    pub waited: Option<Waited<'a>>,
    /// At most this many active leases per terminal: a new lease beyond it is refused
    /// ([`StoreError::LeaseLimit`]) in the same transaction (a re-attach is not a new
    /// lease). `None`: no limit.
    pub terminal_limit: Option<u32>,
}

/// A completed reset, for the desktop's statistics.
#[derive(Debug, Clone, PartialEq)]
pub struct ResetRecord {
    pub method: ResetMethod,
    pub duration_ms: i64,
    /// Proof of the clean start (JSON: method, template, vmgenid, readiness nonce, ...).
    pub proof: serde_json::Value,
}

fn corrupt(what: &str, v: &str) -> StoreError {
    StoreError::Corrupt(format!("{what} {v:?}"))
}

/// A row type read from a query's columns in a fixed order.
pub(crate) trait FromRow: Sized {
    /// The outer error is SQLite's, the inner one a stored value this version does not
    /// understand ([`StoreError::Corrupt`]).
    fn from_row(r: &Row<'_>) -> rusqlite::Result<Result<Self, StoreError>>;
}

/// Runs a query of at most one row.
fn query_opt<T: FromRow>(
    c: &Connection,
    sql: &str,
    p: impl Params,
) -> Result<Option<T>, StoreError> {
    c.query_row(sql, p, T::from_row).optional()?.transpose()
}

/// Runs a query and reads every row.
fn query_all<T: FromRow>(c: &Connection, sql: &str, p: impl Params) -> Result<Vec<T>, StoreError> {
    let mut st = c.prepare(sql)?;
    let rows = st.query_map(p, T::from_row)?;
    rows.map(|r| r?).collect()
}

/// Reads one value of a row that may not exist.
fn query_value<T: FromSql>(
    c: &Connection,
    sql: &str,
    p: impl Params,
) -> Result<Option<T>, StoreError> {
    Ok(c.query_row(sql, p, |r| r.get(0)).optional()?)
}

fn parse_desktop_id(id: &str) -> Result<DesktopId, StoreError> {
    DesktopId::parse(id).map_err(|_| corrupt("desktop id", id))
}

const DESKTOP_COLS: &str =
    "id, state, since, reason, resets, last_reset_ms, last_reset_method, generation, proof, drained, drain_reason";
pub(crate) const LEASE_COLS: &str =
    "id, desktop_id, terminal, user, created_at, heartbeat_at, ended_at, end_reason";
pub(crate) const AUDIT_COLS: &str =
    "seq, ts, action, terminal, user, desktop_id, lease_id, details, prev_hash, hash";

/// Columns [`DESKTOP_COLS`].
impl FromRow for DesktopRow {
    fn from_row(r: &Row<'_>) -> rusqlite::Result<Result<Self, StoreError>> {
        let (id, state): (String, String) = (r.get(0)?, r.get(1)?);
        let (since, reason, resets, last_reset_ms, last_reset_method, generation, proof) = (
            r.get(2)?,
            r.get(3)?,
            r.get(4)?,
            r.get(5)?,
            r.get(6)?,
            r.get(7)?,
            r.get(8)?,
        );
        let (drained, drain_reason): (bool, Option<String>) = (r.get(9)?, r.get(10)?);
        let desktop = || {
            Ok(DesktopRow {
                id: parse_desktop_id(&id)?,
                state: DesktopState::parse(&state)
                    .ok_or_else(|| corrupt("desktop state", &state))?,
                since,
                reason,
                resets,
                last_reset_ms,
                last_reset_method,
                generation,
                proof,
                drained,
                drain_reason,
            })
        };
        Ok(desktop())
    }
}

/// Columns [`LEASE_COLS`].
impl FromRow for LeaseRow {
    fn from_row(r: &Row<'_>) -> rusqlite::Result<Result<Self, StoreError>> {
        let (id, desktop, terminal, user): (String, String, String, String) =
            (r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?);
        let (created_at, heartbeat_at, ended_at, end_reason): (_, _, _, Option<String>) =
            (r.get(4)?, r.get(5)?, r.get(6)?, r.get(7)?);
        let lease = || {
            Ok(LeaseRow {
                id: LeaseId::parse(&id).map_err(|_| corrupt("lease id", &id))?,
                desktop: parse_desktop_id(&desktop)?,
                terminal: TerminalName::parse(&terminal)
                    .map_err(|_| corrupt("terminal", &terminal))?,
                user: UserName::parse(&user).map_err(|_| corrupt("user", &user))?,
                created_at,
                heartbeat_at,
                ended_at,
                end_reason: match end_reason {
                    None => None,
                    Some(r) => Some(EndReason::parse(&r).ok_or_else(|| corrupt("end reason", &r))?),
                },
            })
        };
        Ok(lease())
    }
}

/// Columns [`AUDIT_COLS`] (every value is valid).
impl FromRow for AuditRecord {
    fn from_row(r: &Row<'_>) -> rusqlite::Result<Result<Self, StoreError>> {
        Ok(Ok(AuditRecord {
            seq: r.get(0)?,
            ts: r.get(1)?,
            action: r.get(2)?,
            terminal: r.get(3)?,
            user: r.get(4)?,
            desktop: r.get(5)?,
            lease: r.get(6)?,
            details: r.get(7)?,
            prev_hash: r.get(8)?,
            hash: r.get(9)?,
        }))
    }
}

/// Columns `id, since`.
impl FromRow for Candidate {
    fn from_row(r: &Row<'_>) -> rusqlite::Result<Result<Self, StoreError>> {
        let (id, clean_since): (String, i64) = (r.get(0)?, r.get(1)?);
        Ok(parse_desktop_id(&id).map(|id| Candidate { id, clean_since }))
    }
}

fn append_audit_tx(
    tx: &Transaction<'_>,
    now: UnixMillis,
    e: &AuditEntry,
) -> Result<String, StoreError> {
    let last: Option<(i64, String)> = tx
        .query_row(
            "SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?;
    let (seq, prev) = match last {
        Some((s, h)) => (s + 1, h),
        None => (1, GENESIS_HASH.to_owned()),
    };
    let details = e.details.to_string();
    let hash = link_hash(
        &prev,
        seq,
        now,
        &e.action,
        e.terminal.as_deref(),
        e.user.as_deref(),
        e.desktop.as_deref(),
        e.lease.as_deref(),
        &details,
    );
    tx.execute(
        "INSERT INTO audit (seq, ts, action, terminal, user, desktop_id, lease_id, details, prev_hash, hash)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
        params![seq, now, e.action, e.terminal, e.user, e.desktop, e.lease, details, prev, hash],
    )?;
    Ok(hash)
}

/// The chain's head on a connection: `(0, GENESIS_HASH)` for an empty log.
pub(crate) fn audit_head(c: &Connection) -> Result<(i64, String), StoreError> {
    let head: Option<(i64, String)> = c
        .query_row(
            "SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?;
    Ok(head.unwrap_or_else(|| (0, GENESIS_HASH.to_owned())))
}

fn desktop_state_tx(tx: &Transaction<'_>, id: &DesktopId) -> Result<DesktopState, StoreError> {
    let s: String = query_value(
        tx,
        "SELECT state FROM desktops WHERE id = ?1 AND retired = 0",
        [id.as_str()],
    )?
    .ok_or_else(|| StoreError::UnknownDesktop(id.clone()))?;
    DesktopState::parse(&s).ok_or_else(|| corrupt("desktop state", &s))
}

/// Applies a state-machine event to a desktop inside a transaction.
fn transition_tx(
    tx: &Transaction<'_>,
    id: &DesktopId,
    event: DesktopEvent,
    now: UnixMillis,
    reason: Option<&str>,
) -> Result<(DesktopState, DesktopState), StoreError> {
    let from = desktop_state_tx(tx, id)?;
    let to = from.apply(event).map_err(|source| StoreError::Transition {
        desktop: id.clone(),
        source,
    })?;
    tx.execute(
        "UPDATE desktops SET state = ?2, since = ?3, reason = ?4 WHERE id = ?1",
        params![id.as_str(), to.as_str(), now, reason],
    )?;
    Ok((from, to))
}

impl Store {
    /// Opens (creating if needed) the database at `path` and migrates it.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let mut conn = Connection::open(path)?;
        Self::configure(&mut conn)?;
        Ok(Self { conn })
    }

    /// Opens an existing database read-only (for `airlockd audit verify`).
    pub fn open_read_only(path: &Path) -> Result<Self, StoreError> {
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        Ok(Self { conn })
    }

    /// An in-memory database, for tests.
    pub fn open_in_memory() -> Result<Self, StoreError> {
        let mut conn = Connection::open_in_memory()?;
        Self::configure(&mut conn)?;
        Ok(Self { conn })
    }

    fn configure(conn: &mut Connection) -> Result<(), StoreError> {
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        migrations().to_latest(conn)?;
        Ok(())
    }

    fn immediate(&mut self) -> Result<Transaction<'_>, StoreError> {
        Ok(self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?)
    }

    /// Makes the stored pool match the configured desktop ids: adds missing ones in state
    /// `starting`, retires ones no longer configured (unless leased), and returns all
    /// configured desktops.
    pub fn sync_pool(
        &mut self,
        ids: &[DesktopId],
        now: UnixMillis,
    ) -> Result<Vec<DesktopRow>, StoreError> {
        let tx = self.immediate()?;
        for id in ids {
            let known: Option<i64> = query_value(
                &tx,
                "SELECT retired FROM desktops WHERE id = ?1",
                [id.as_str()],
            )?;
            match known {
                None => {
                    tx.execute(
                        "INSERT INTO desktops (id, state, since) VALUES (?1, 'starting', ?2)",
                        params![id.as_str(), now],
                    )?;
                    append_audit_tx(&tx, now, &AuditEntry::new("desktop_added").desktop(id))?;
                }
                Some(1) => {
                    tx.execute(
                        "UPDATE desktops SET retired = 0, state = 'dirty', since = ?2, reason = 'returned to the pool' WHERE id = ?1",
                        params![id.as_str(), now],
                    )?;
                    append_audit_tx(&tx, now, &AuditEntry::new("desktop_returned").desktop(id))?;
                }
                Some(_) => {}
            }
        }
        let stored: Vec<String> = {
            let mut st = tx.prepare("SELECT id FROM desktops WHERE retired = 0")?;
            let rows = st.query_map([], |r| r.get(0))?;
            rows.collect::<Result<_, _>>()?
        };
        for s in stored {
            if !ids.iter().any(|i| i.as_str() == s) {
                let leased: bool = tx.query_row(
                    "SELECT EXISTS(SELECT 1 FROM leases WHERE desktop_id = ?1 AND ended_at IS NULL)",
                    [&s],
                    |r| r.get(0),
                )?;
                if !leased {
                    tx.execute("UPDATE desktops SET retired = 1 WHERE id = ?1", [&s])?;
                    append_audit_tx(&tx, now, &AuditEntry::new("desktop_retired").desktop(&s))?;
                }
            }
        }
        tx.commit()?;
        self.desktops()
    }

    /// All desktops in the pool, by id.
    pub fn desktops(&self) -> Result<Vec<DesktopRow>, StoreError> {
        query_all(
            &self.conn,
            &format!("SELECT {DESKTOP_COLS} FROM desktops WHERE retired = 0 ORDER BY id"),
            [],
        )
    }

    /// One desktop.
    pub fn desktop(&self, id: &DesktopId) -> Result<DesktopRow, StoreError> {
        query_opt(
            &self.conn,
            &format!("SELECT {DESKTOP_COLS} FROM desktops WHERE id = ?1 AND retired = 0"),
            [id.as_str()],
        )?
        .ok_or_else(|| StoreError::UnknownDesktop(id.clone()))
    }

    /// Applies a state-machine event to a desktop and writes its audit record, atomically.
    /// Returns the new state.
    pub fn transition(
        &mut self,
        id: &DesktopId,
        event: DesktopEvent,
        now: UnixMillis,
        reason: Option<&str>,
        audit: AuditEntry,
    ) -> Result<DesktopState, StoreError> {
        let tx = self.immediate()?;
        let (from, to) = transition_tx(&tx, id, event, now, reason)?;
        let mut details = audit.details.clone();
        if let Some(obj) = details.as_object_mut() {
            obj.insert("from".into(), from.as_str().into());
            obj.insert("to".into(), to.as_str().into());
            if let Some(r) = reason {
                obj.insert("reason".into(), r.into());
            }
        }
        append_audit_tx(&tx, now, &audit.desktop(id).details(details))?;
        tx.commit()?;
        Ok(to)
    }

    /// Drains desktop `id` (`drained`: kept out of service; its lease, if any, runs to its
    /// end) or returns it, with the audit record, atomically. Returns whether anything
    /// changed (draining a drained desktop does not).
    pub fn set_drained(
        &mut self,
        id: &DesktopId,
        drained: bool,
        reason: Option<&str>,
        now: UnixMillis,
        audit: AuditEntry,
    ) -> Result<bool, StoreError> {
        let tx = self.immediate()?;
        desktop_state_tx(&tx, id)?;
        let n = tx.execute(
            "UPDATE desktops SET drained = ?2, drain_reason = ?3 WHERE id = ?1 AND drained != ?2",
            params![id.as_str(), drained, if drained { reason } else { None }],
        )?;
        if n > 0 {
            append_audit_tx(&tx, now, &audit.desktop(id))?;
        }
        tx.commit()?;
        Ok(n > 0)
    }

    /// Marks a reset as succeeded: `resetting`/`starting` → `clean`, records its duration,
    /// method and proof, and audits it, atomically.
    pub fn reset_succeeded(
        &mut self,
        id: &DesktopId,
        now: UnixMillis,
        reset: &ResetRecord,
    ) -> Result<(), StoreError> {
        let tx = self.immediate()?;
        let (from, _) = transition_tx(&tx, id, DesktopEvent::Ready, now, None)?;
        let counts_as_reset = from == DesktopState::Resetting;
        tx.execute(
            "UPDATE desktops SET resets = resets + ?2, last_reset_ms = ?3, last_reset_method = ?4,
                 generation = generation + 1, proof = ?5 WHERE id = ?1",
            params![
                id.as_str(),
                i64::from(counts_as_reset),
                reset.duration_ms,
                reset.method.as_str(),
                reset.proof.to_string()
            ],
        )?;
        let action = if counts_as_reset {
            "desktop_reset"
        } else {
            "desktop_ready"
        };
        let details = serde_json::json!({
            "method": reset.method.as_str(),
            "duration_ms": reset.duration_ms,
            "proof": reset.proof,
        });
        append_audit_tx(
            &tx,
            now,
            &AuditEntry::new(action).desktop(id).details(details),
        )?;
        tx.commit()?;
        Ok(())
    }

    /// Grants a lease on a clean desktop, atomically with the desktop's state change and
    /// the audit record. Fails with [`StoreError::NoFreeDesktop`] if none is clean.
    pub fn acquire(
        &mut self,
        lease_id: &LeaseId,
        terminal: &TerminalName,
        user: &UserName,
        now: UnixMillis,
    ) -> Result<Acquired, StoreError> {
        self.acquire_with(&AcquireRequest {
            lease_id,
            terminal,
            user,
            now,
            pick: Pick::AnyExcept(&[]),
            reattach_within_ms: None,
            waited: None,
            terminal_limit: None,
        })
    }

    /// Grants a lease as `req` asks, in one transaction: first the terminal's live lease
    /// of the same user if asked (its heartbeat refreshed, audited `lease_reattached`),
    /// else a clean desktop of `req.pick` (its state change, the lease and the audit
    /// records together). Fails with [`StoreError::LeaseLimit`] if the terminal already
    /// holds `req.terminal_limit` active leases, and with [`StoreError::NoFreeDesktop`]
    /// if no such desktop is clean.
    pub fn acquire_with(&mut self, req: &AcquireRequest<'_>) -> Result<Acquired, StoreError> {
        let AcquireRequest {
            lease_id,
            terminal,
            user,
            now,
            ..
        } = *req;
        let tx = self.immediate()?;
        if let Some(within) = req.reattach_within_ms {
            let live: Option<LeaseRow> = query_opt(
                &tx,
                &format!(
                    "SELECT {LEASE_COLS} FROM leases WHERE terminal = ?1 AND user = ?2
                     AND ended_at IS NULL AND heartbeat_at + ?3 > ?4
                     ORDER BY created_at DESC LIMIT 1"
                ),
                params![terminal.as_str(), user.as_str(), within, now],
            )?;
            if let Some(mut lease) = live {
                lease.heartbeat_at = lease.heartbeat_at.max(now);
                tx.execute(
                    "UPDATE leases SET heartbeat_at = ?2 WHERE id = ?1",
                    params![lease.id.as_str(), lease.heartbeat_at],
                )?;
                append_audit_tx(
                    &tx,
                    now,
                    &AuditEntry::new("lease_reattached")
                        .terminal(terminal)
                        .user(user)
                        .desktop(&lease.desktop)
                        .lease(&lease.id),
                )?;
                tx.commit()?;
                return Ok(Acquired {
                    lease,
                    reattached: true,
                });
            }
        }
        if let Some(limit) = req.terminal_limit {
            let held: i64 = tx.query_row(
                "SELECT COUNT(*) FROM leases WHERE terminal = ?1 AND ended_at IS NULL",
                [terminal.as_str()],
                |r| r.get(0),
            )?;
            if held >= i64::from(limit) {
                return Err(StoreError::LeaseLimit {
                    held: u32::try_from(held).unwrap_or(u32::MAX),
                    limit,
                });
            }
        }
        let mut candidates: Vec<Candidate> = query_all(
            &tx,
            "SELECT id, since FROM desktops WHERE state = 'clean' AND retired = 0 AND drained = 0",
            [],
        )?;
        match req.pick {
            Pick::AnyExcept(held) => candidates.retain(|c| !held.contains(&c.id)),
            Pick::Exactly(d) => candidates.retain(|c| &c.id == d),
        }
        let Some(chosen) = choose_desktop(&candidates) else {
            return Err(StoreError::NoFreeDesktop);
        };
        let desktop = chosen.id.clone();
        // The lease first: the schema lets a desktop be `leased` only with one.
        tx.execute(
            "INSERT INTO leases (id, desktop_id, terminal, user, created_at, heartbeat_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?5)",
            params![
                lease_id.as_str(),
                desktop.as_str(),
                terminal.as_str(),
                user.as_str(),
                now
            ],
        )?;
        transition_tx(&tx, &desktop, DesktopEvent::Lease, now, None)?;
        let entry = |action: &str| {
            AuditEntry::new(action)
                .terminal(terminal)
                .user(user)
                .desktop(&desktop)
                .lease(lease_id)
        };
        match req.waited {
            None => {
                append_audit_tx(&tx, now, &entry("lease_granted"))?;
            }
            Some(w) => {
                let details = serde_json::json!({"ticket": w.ticket, "waited_ms": w.waited_ms});
                append_audit_tx(&tx, now, &entry("lease_granted").details(details.clone()))?;
                let mut left = details;
                if let Some(obj) = left.as_object_mut() {
                    obj.insert("reason".into(), "granted".into());
                }
                append_audit_tx(&tx, now, &entry("queue_left").details(left))?;
            }
        }
        tx.commit()?;
        Ok(Acquired {
            lease: LeaseRow {
                id: lease_id.clone(),
                desktop,
                terminal: terminal.clone(),
                user: user.clone(),
                created_at: now,
                heartbeat_at: now,
                ended_at: None,
                end_reason: None,
            },
            reattached: false,
        })
    }

    /// Records a heartbeat for an active lease held by `terminal`. A lease whose last
    /// heartbeat is `timeout_ms` or more in the past has expired, even if the sweeper has
    /// not ended it yet, and cannot be revived.
    pub fn heartbeat(
        &mut self,
        lease_id: &LeaseId,
        terminal: &TerminalName,
        now: UnixMillis,
        timeout_ms: i64,
    ) -> Result<LeaseRow, StoreError> {
        let n = self.conn.execute(
            "UPDATE leases SET heartbeat_at = max(heartbeat_at, ?3)
             WHERE id = ?1 AND terminal = ?2 AND ended_at IS NULL AND heartbeat_at + ?4 > ?3",
            params![lease_id.as_str(), terminal.as_str(), now, timeout_ms],
        )?;
        if n == 0 {
            return Err(StoreError::LeaseNotFound);
        }
        self.lease(lease_id)?.ok_or(StoreError::LeaseNotFound)
    }

    /// A lease by id, active or ended.
    pub fn lease(&self, lease_id: &LeaseId) -> Result<Option<LeaseRow>, StoreError> {
        query_opt(
            &self.conn,
            &format!("SELECT {LEASE_COLS} FROM leases WHERE id = ?1"),
            [lease_id.as_str()],
        )
    }

    /// Sets (or replaces) the patient context of an active lease, with an audit record
    /// `patient_context_set` (`details`: what to record of it).
    pub fn set_lease_patient(
        &mut self,
        lease_id: &LeaseId,
        context: &serde_json::Value,
        now: UnixMillis,
        audit: AuditEntry,
    ) -> Result<(), StoreError> {
        let tx = self.immediate()?;
        let active: Option<LeaseRow> = query_opt(
            &tx,
            &format!("SELECT {LEASE_COLS} FROM leases WHERE id = ?1 AND ended_at IS NULL"),
            [lease_id.as_str()],
        )?;
        if active.is_none() {
            return Err(StoreError::LeaseNotFound);
        }
        tx.execute(
            "INSERT INTO lease_patients (lease_id, context, set_at) VALUES (?1, ?2, ?3)
             ON CONFLICT(lease_id) DO UPDATE SET context = excluded.context, set_at = excluded.set_at",
            params![lease_id.as_str(), context.to_string(), now],
        )?;
        append_audit_tx(&tx, now, &audit)?;
        tx.commit()?;
        Ok(())
    }

    /// The patient context of a lease, if one was set.
    pub fn lease_patient(
        &self,
        lease_id: &LeaseId,
    ) -> Result<Option<serde_json::Value>, StoreError> {
        let text: Option<String> = self
            .conn
            .query_row(
                "SELECT context FROM lease_patients WHERE lease_id = ?1",
                [lease_id.as_str()],
                |r| r.get(0),
            )
            .optional()?;
        Ok(text.and_then(|t| serde_json::from_str(&t).ok()))
    }

    /// Ends an active lease and marks its desktop dirty, atomically, with an audit record.
    /// With `terminal` set, only that terminal's lease is found (others get
    /// [`StoreError::LeaseNotFound`]).
    pub fn end_lease(
        &mut self,
        lease_id: &LeaseId,
        terminal: Option<&TerminalName>,
        reason: EndReason,
        now: UnixMillis,
        details: serde_json::Value,
    ) -> Result<LeaseRow, StoreError> {
        let tx = self.immediate()?;
        let mut lease: LeaseRow = query_opt(
            &tx,
            &format!("SELECT {LEASE_COLS} FROM leases WHERE id = ?1 AND ended_at IS NULL"),
            [lease_id.as_str()],
        )?
        .ok_or(StoreError::LeaseNotFound)?;
        if let Some(t) = terminal {
            if &lease.terminal != t {
                return Err(StoreError::LeaseNotFound);
            }
        }
        tx.execute(
            "UPDATE leases SET ended_at = ?2, end_reason = ?3 WHERE id = ?1",
            params![lease_id.as_str(), now, reason.as_str()],
        )?;
        transition_tx(
            &tx,
            &lease.desktop,
            DesktopEvent::LeaseEnded,
            now,
            Some(reason.as_str()),
        )?;
        let mut d = details;
        if let Some(obj) = d.as_object_mut() {
            obj.insert("reason".into(), reason.as_str().into());
            obj.insert("held_ms".into(), (now - lease.created_at).into());
        }
        append_audit_tx(
            &tx,
            now,
            &AuditEntry::new("lease_ended")
                .terminal(&lease.terminal)
                .user(&lease.user)
                .desktop(&lease.desktop)
                .lease(lease_id)
                .details(d),
        )?;
        tx.commit()?;
        lease.ended_at = Some(now);
        lease.end_reason = Some(reason);
        Ok(lease)
    }

    /// All active leases.
    pub fn active_leases(&self) -> Result<Vec<LeaseRow>, StoreError> {
        query_all(
            &self.conn,
            &format!("SELECT {LEASE_COLS} FROM leases WHERE ended_at IS NULL ORDER BY created_at"),
            [],
        )
    }

    /// The active lease on a desktop, if any.
    pub fn active_lease_on(&self, desktop: &DesktopId) -> Result<Option<LeaseRow>, StoreError> {
        query_opt(
            &self.conn,
            &format!("SELECT {LEASE_COLS} FROM leases WHERE desktop_id = ?1 AND ended_at IS NULL"),
            [desktop.as_str()],
        )
    }

    /// Active leases whose last heartbeat is older than `timeout_ms` at `now`.
    pub fn expired_leases(
        &self,
        now: UnixMillis,
        timeout_ms: i64,
    ) -> Result<Vec<LeaseRow>, StoreError> {
        query_all(
            &self.conn,
            &format!(
                "SELECT {LEASE_COLS} FROM leases WHERE ended_at IS NULL AND heartbeat_at + ?2 <= ?1"
            ),
            params![now, timeout_ms],
        )
    }

    /// After a broker restart: counts every active lease's heartbeat from `now`, since the
    /// terminals could not reach the broker while it was down. Audited.
    pub fn resume_leases(&mut self, now: UnixMillis) -> Result<usize, StoreError> {
        let tx = self.immediate()?;
        let n = tx.execute(
            "UPDATE leases SET heartbeat_at = max(heartbeat_at, ?1) WHERE ended_at IS NULL",
            [now],
        )?;
        if n > 0 {
            append_audit_tx(
                &tx,
                now,
                &AuditEntry::new("leases_resumed").details(serde_json::json!({ "count": n })),
            )?;
        }
        tx.commit()?;
        Ok(n)
    }

    /// Appends a free-standing audit record (broker start, template build, ...); returns
    /// the new head hash.
    pub fn audit(&mut self, now: UnixMillis, entry: AuditEntry) -> Result<String, StoreError> {
        let tx = self.immediate()?;
        let h = append_audit_tx(&tx, now, &entry)?;
        tx.commit()?;
        Ok(h)
    }

    /// The last `n` audit records, newest last.
    pub fn audit_tail(&self, n: usize) -> Result<Vec<AuditRecord>, StoreError> {
        let mut v = query_all(
            &self.conn,
            &format!("SELECT {AUDIT_COLS} FROM audit ORDER BY seq DESC LIMIT ?1"),
            [i64::try_from(n).unwrap_or(i64::MAX)],
        )?;
        v.reverse();
        Ok(v)
    }

    /// The chain's head: the newest record's sequence number and hash, or `(0,
    /// GENESIS_HASH)` for an empty log.
    pub fn audit_head(&self) -> Result<(i64, String), StoreError> {
        audit_head(&self.conn)
    }

    /// This store's connection, for the searches of [`crate::reader`].
    pub(crate) fn conn(&self) -> &Connection {
        &self.conn
    }

    /// The stored hash of record `seq`, if there is such a record.
    pub fn audit_hash_at(&self, seq: i64) -> Result<Option<String>, StoreError> {
        query_value(&self.conn, "SELECT hash FROM audit WHERE seq = ?1", [seq])
    }

    /// At most `limit` records with `seq > after`, oldest first (audit forwarding reads
    /// the log after its cursor with this, on a read-only store; added by helper B).
    pub fn audit_after(&self, after: i64, limit: usize) -> Result<Vec<AuditRecord>, StoreError> {
        query_all(
            &self.conn,
            &format!("SELECT {AUDIT_COLS} FROM audit WHERE seq > ?1 ORDER BY seq LIMIT ?2"),
            [after, i64::try_from(limit).unwrap_or(i64::MAX)],
        )
    }

    /// Compares the chain with an anchor written earlier (see [`crate::anchor`]).
    pub fn check_anchor(&self, anchor: &Anchor) -> Result<AnchorCheck, StoreError> {
        let (last_seq, _) = self.audit_head()?;
        let at = self.audit_hash_at(anchor.seq)?;
        Ok(check_anchor(anchor, last_seq, at.as_deref()))
    }

    /// Checks the whole audit chain and reports the first broken link.
    /// Records are read one at a time (a chain of millions is checked in constant memory).
    pub fn verify_audit(&self) -> Result<ChainReport, StoreError> {
        let mut st = self
            .conn
            .prepare(&format!("SELECT {AUDIT_COLS} FROM audit ORDER BY seq"))?;
        let rows = st.query_map([], AuditRecord::from_row)?;
        let mut err = None;
        let report = verify_chain(rows.map_while(|r| match r {
            Ok(Ok(rec)) => Some(rec),
            Ok(Err(e)) => {
                err = Some(e);
                None
            }
            Err(e) => {
                err = Some(e.into());
                None
            }
        }));
        match err {
            Some(e) => Err(e),
            None => Ok(report),
        }
    }

    /// Direct access for tests that tamper with the database.
    #[doc(hidden)]
    pub fn connection_for_tests(&self) -> &Connection {
        &self.conn
    }
}
