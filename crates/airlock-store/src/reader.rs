//! Reading the audit trail and the sessions (leases) without the broker's store lock:
//! [`Reader`] opens its own read-only SQLite connections (WAL lets them read while the
//! broker writes), so a security officer's search, a session timeline, an export or the
//! chain verification never stalls an acquire. Every method blocks; call it from
//! `tokio::task::spawn_blocking` in async code.
//!
//! The same searches run on a [`Store`] (its own connection; for tests and tools).
use crate::atna::{self, AtnaEvent, Outcome};
use crate::audit::AuditRecord;
use crate::store::{FromRow, LeaseRow, Store, AUDIT_COLS, LEASE_COLS};
use crate::StoreError;
use airlock_core::{LeaseId, UnixMillis};
use rusqlite::types::Value;
use rusqlite::{params_from_iter, Connection, OpenFlags, OptionalExtension};
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// The most records or sessions one page holds.
pub const MAX_PAGE: usize = 1000;
/// A search counts its matches up to this many; beyond, the count says "at least".
pub const COUNT_CAP: u64 = 10_000;
/// The longest free-text search.
pub const MAX_TEXT: usize = 200;

/// Read-only access to the database, for searches, exports and verification. Cheap to
/// clone; keeps a few idle connections for reuse.
#[derive(Clone)]
pub struct Reader {
    inner: Arc<ReaderInner>,
}

struct ReaderInner {
    path: PathBuf,
    idle: Mutex<Vec<Connection>>,
}

/// Idle connections kept for reuse.
const IDLE: usize = 4;

impl Reader {
    /// A reader of the database at `path` (which the broker created); fails if it
    /// cannot be opened.
    pub fn open(path: &Path) -> Result<Reader, StoreError> {
        let r = Reader {
            inner: Arc::new(ReaderInner {
                path: path.to_owned(),
                idle: Mutex::new(Vec::new()),
            }),
        };
        let c = r.connect()?;
        r.put_back(c);
        Ok(r)
    }

    /// The database's path.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    fn connect(&self) -> Result<Connection, StoreError> {
        let c = Connection::open_with_flags(
            &self.inner.path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        c.busy_timeout(std::time::Duration::from_secs(5))?;
        Ok(c)
    }

    fn put_back(&self, c: Connection) {
        if let Ok(mut idle) = self.inner.idle.lock() {
            if idle.len() < IDLE {
                idle.push(c);
            }
        }
    }

    /// Runs `f` on a read-only connection of the pool (a new one if none is idle).
    pub(crate) fn with<T>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let c = match self.inner.idle.lock().ok().and_then(|mut i| i.pop()) {
            Some(c) => c,
            None => self.connect()?,
        };
        let r = f(&c);
        self.put_back(c);
        r
    }

    /// One page of the audit trail, newest first (see [`AuditQuery`]).
    pub fn search_audit(&self, q: &AuditQuery) -> Result<AuditPage, StoreError> {
        self.with(|c| search_audit(c, q))
    }

    /// Every record the filter matches, oldest first, one at a time to `f` (nothing is
    /// collected: an export of millions of records streams). Stops at `f`'s first error.
    pub fn for_each_audit<E: From<StoreError>>(
        &self,
        filter: &AuditFilter,
        f: impl FnMut(AuditView) -> Result<(), E>,
    ) -> Result<u64, E> {
        // Its own connection: an export holds it for its whole run.
        let c = self.connect().map_err(E::from)?;
        for_each_audit(&c, filter, f)
    }

    /// One page of sessions (leases), newest first (see [`SessionQuery`]).
    pub fn sessions(&self, q: &SessionQuery) -> Result<SessionPage, StoreError> {
        self.with(|c| sessions(c, q))
    }

    /// One session's timeline, or `None` for an unknown lease.
    pub fn session(&self, lease: &LeaseId) -> Result<Option<SessionTimeline>, StoreError> {
        self.with(|c| session(c, lease))
    }

    /// The chain's head: the newest record's sequence number and hash (`(0,
    /// GENESIS_HASH)` when empty).
    pub fn audit_head(&self) -> Result<(i64, String), StoreError> {
        self.with(crate::store::audit_head)
    }

    /// Compares the chain with an anchor (see [`crate::anchor`]).
    pub fn check_anchor(&self, anchor: &crate::Anchor) -> Result<crate::AnchorCheck, StoreError> {
        self.with(|c| {
            let (last_seq, _) = crate::store::audit_head(c)?;
            let at: Option<String> = c
                .query_row("SELECT hash FROM audit WHERE seq = ?1", [anchor.seq], |r| {
                    r.get(0)
                })
                .optional()?;
            Ok(crate::anchor::check_anchor(anchor, last_seq, at.as_deref()))
        })
    }
}

impl Store {
    /// [`Reader::search_audit`] on this store's connection.
    pub fn search_audit(&self, q: &AuditQuery) -> Result<AuditPage, StoreError> {
        search_audit(self.conn(), q)
    }

    /// [`Reader::for_each_audit`] on this store's connection.
    pub fn for_each_audit<E: From<StoreError>>(
        &self,
        filter: &AuditFilter,
        f: impl FnMut(AuditView) -> Result<(), E>,
    ) -> Result<u64, E> {
        for_each_audit(self.conn(), filter, f)
    }

    /// [`Reader::sessions`] on this store's connection.
    pub fn sessions(&self, q: &SessionQuery) -> Result<SessionPage, StoreError> {
        sessions(self.conn(), q)
    }

    /// [`Reader::session`] on this store's connection.
    pub fn session(&self, lease: &LeaseId) -> Result<Option<SessionTimeline>, StoreError> {
        session(self.conn(), lease)
    }
}

/// What audit records to find. Every field narrows the search; all empty finds all.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct AuditFilter {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub terminal: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub desktop: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lease: Option<String>,
    /// Any of these actions (empty: any).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub actions: Vec<String>,
    /// The ATNA EventID (e.g. 110113): the actions classified under it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub event_id: Option<u32>,
    /// The ATNA outcome.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub outcome: Option<Outcome>,
    /// Written at or after (Unix ms).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from: Option<UnixMillis>,
    /// Written before (Unix ms).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub to: Option<UnixMillis>,
    /// Text the details contain (ASCII case-insensitive), at most [`MAX_TEXT`] bytes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
}

/// One page of an audit search.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AuditQuery {
    pub filter: AuditFilter,
    /// Records before this sequence number (the previous page's `next_before`).
    pub before: Option<i64>,
    /// Records per page, clamped to 1..=[`MAX_PAGE`].
    pub limit: usize,
}

/// An audit record with its ATNA classification.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AuditView {
    #[serde(flatten)]
    pub record: AuditRecord,
    pub atna: AtnaEvent,
}

impl AuditView {
    fn new(record: AuditRecord) -> AuditView {
        let atna = atna::classify_text(&record.action, &record.details);
        AuditView { record, atna }
    }
}

/// A page of audit records, newest first.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AuditPage {
    pub records: Vec<AuditView>,
    /// The cursor of the next (older) page, `None` on the last page.
    pub next_before: Option<i64>,
    /// Records the filter matches (all pages), counted up to [`COUNT_CAP`].
    pub total: u64,
    /// Whether `total` is exact (else there are more than [`COUNT_CAP`]).
    pub total_exact: bool,
}

/// The `WHERE` clause of a filter and its parameters.
fn audit_where(f: &AuditFilter) -> (String, Vec<Value>) {
    let mut w: Vec<String> = Vec::new();
    let mut p: Vec<Value> = Vec::new();
    let eq = |col: &str, v: &Option<String>, w: &mut Vec<String>, p: &mut Vec<Value>| {
        if let Some(v) = v {
            p.push(Value::Text(v.clone()));
            w.push(format!("{col} = ?{}", p.len()));
        }
    };
    eq("terminal", &f.terminal, &mut w, &mut p);
    eq("user", &f.user, &mut w, &mut p);
    eq("desktop_id", &f.desktop, &mut w, &mut p);
    eq("lease_id", &f.lease, &mut w, &mut p);
    if !f.actions.is_empty() {
        let mut marks = Vec::new();
        for a in &f.actions {
            p.push(Value::Text(a.clone()));
            marks.push(format!("?{}", p.len()));
        }
        w.push(format!("action IN ({})", marks.join(",")));
    }
    if let Some(code) = f.event_id {
        let acts = atna::actions_with_event(code);
        if acts.is_empty() {
            w.push("0".into());
        } else {
            let mut marks = Vec::new();
            for a in acts {
                p.push(Value::Text(a.to_owned()));
                marks.push(format!("?{}", p.len()));
            }
            // Unknown actions classify as 110100.
            let unknown = if code == atna::event::APPLICATION_ACTIVITY.code {
                let all: Vec<String> = atna::known_actions().map(|a| format!("'{a}'")).collect();
                format!(" OR action NOT IN ({})", all.join(","))
            } else {
                String::new()
            };
            w.push(format!("(action IN ({}){unknown})", marks.join(",")));
        }
    }
    if let Some(o) = f.outcome {
        w.push(atna::outcome_sql(o));
    }
    if let Some(from) = f.from {
        p.push(Value::Integer(from));
        w.push(format!("ts >= ?{}", p.len()));
    }
    if let Some(to) = f.to {
        p.push(Value::Integer(to));
        w.push(format!("ts < ?{}", p.len()));
    }
    if let Some(t) = &f.text {
        let esc = t
            .replace('\\', "\\\\")
            .replace('%', "\\%")
            .replace('_', "\\_");
        p.push(Value::Text(format!("%{esc}%")));
        w.push(format!("details LIKE ?{} ESCAPE '\\'", p.len()));
    }
    let clause = if w.is_empty() {
        "1".to_owned()
    } else {
        w.join(" AND ")
    };
    (clause, p)
}

fn clamp_limit(n: usize) -> usize {
    n.clamp(1, MAX_PAGE)
}

fn search_audit(c: &Connection, q: &AuditQuery) -> Result<AuditPage, StoreError> {
    let limit = clamp_limit(q.limit);
    let (clause, mut p) = audit_where(&q.filter);
    // Counted before the cursor is added: the total is over all pages.
    let total: i64 = c.query_row(
        &format!(
            "SELECT COUNT(*) FROM (SELECT 1 FROM audit WHERE {clause} LIMIT {})",
            COUNT_CAP + 1
        ),
        params_from_iter(p.iter()),
        |r| r.get(0),
    )?;
    let total = u64::try_from(total).unwrap_or(0);
    let mut clause = clause;
    if let Some(b) = q.before {
        p.push(Value::Integer(b));
        clause = format!("{clause} AND seq < ?{}", p.len());
    }
    let sql = format!(
        "SELECT {AUDIT_COLS} FROM audit WHERE {clause} ORDER BY seq DESC LIMIT {}",
        limit + 1
    );
    let mut st = c.prepare(&sql)?;
    let rows = st.query_map(params_from_iter(p.iter()), AuditRecord::from_row)?;
    let mut records = Vec::with_capacity(limit);
    let mut more = false;
    for r in rows {
        let r = r??;
        if records.len() == limit {
            more = true;
            break;
        }
        records.push(AuditView::new(r));
    }
    let next_before = if more {
        records.last().map(|r| r.record.seq)
    } else {
        None
    };
    Ok(AuditPage {
        records,
        next_before,
        total: total.min(COUNT_CAP),
        total_exact: total <= COUNT_CAP,
    })
}

fn for_each_audit<E: From<StoreError>>(
    c: &Connection,
    filter: &AuditFilter,
    mut f: impl FnMut(AuditView) -> Result<(), E>,
) -> Result<u64, E> {
    let (clause, p) = audit_where(filter);
    let sql = format!("SELECT {AUDIT_COLS} FROM audit WHERE {clause} ORDER BY seq");
    let mut st = c.prepare(&sql).map_err(StoreError::from)?;
    let mut rows = st
        .query(params_from_iter(p.iter()))
        .map_err(StoreError::from)?;
    let mut n = 0u64;
    while let Some(row) = rows.next().map_err(StoreError::from)? {
        let r = AuditRecord::from_row(row).map_err(StoreError::from)??;
        f(AuditView::new(r))?;
        n += 1;
    }
    Ok(n)
}

/// What sessions to find.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct SessionFilter {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub terminal: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub desktop: Option<String>,
    /// Sessions live at some time in `[from, to)` (Unix ms): granted before `to` and
    /// not ended before `from`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from: Option<UnixMillis>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub to: Option<UnixMillis>,
    /// Only active (`true`) or only ended (`false`) sessions.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub active: Option<bool>,
}

/// Where a page of sessions continues: sessions granted before `created_at`, or at it
/// with a smaller lease id. Its text form is `<created_at>.<lease id>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionCursor {
    pub created_at: UnixMillis,
    pub lease: String,
}

impl SessionCursor {
    /// Parses `<created_at>.<lease id>`.
    pub fn parse(s: &str) -> Option<SessionCursor> {
        let (t, l) = s.split_once('.')?;
        let created_at = t.parse().ok()?;
        LeaseId::parse(l).ok()?;
        Some(SessionCursor {
            created_at,
            lease: l.to_owned(),
        })
    }
}

impl std::fmt::Display for SessionCursor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.created_at, self.lease)
    }
}

/// One page of a session search.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SessionQuery {
    pub filter: SessionFilter,
    pub after: Option<SessionCursor>,
    /// Clamped to 1..=[`MAX_PAGE`].
    pub limit: usize,
}

/// A session in a list.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SessionSummary {
    #[serde(flatten)]
    pub lease: LeaseRow,
    /// From grant to end (to now's newest heartbeat while live).
    pub held_ms: i64,
}

/// A page of sessions, newest first.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SessionPage {
    pub sessions: Vec<SessionSummary>,
    /// The cursor of the next (older) page (`SessionCursor` text), `None` on the last.
    pub next: Option<String>,
    pub total: u64,
    pub total_exact: bool,
}

fn session_where(f: &SessionFilter) -> (String, Vec<Value>) {
    let mut w: Vec<String> = Vec::new();
    let mut p: Vec<Value> = Vec::new();
    for (col, v) in [
        ("terminal", &f.terminal),
        ("user", &f.user),
        ("desktop_id", &f.desktop),
    ] {
        if let Some(v) = v {
            p.push(Value::Text(v.clone()));
            w.push(format!("{col} = ?{}", p.len()));
        }
    }
    if let Some(to) = f.to {
        p.push(Value::Integer(to));
        w.push(format!("created_at < ?{}", p.len()));
    }
    if let Some(from) = f.from {
        p.push(Value::Integer(from));
        w.push(format!("(ended_at IS NULL OR ended_at >= ?{})", p.len()));
    }
    match f.active {
        Some(true) => w.push("ended_at IS NULL".into()),
        Some(false) => w.push("ended_at IS NOT NULL".into()),
        None => {}
    }
    let clause = if w.is_empty() {
        "1".to_owned()
    } else {
        w.join(" AND ")
    };
    (clause, p)
}

fn sessions(c: &Connection, q: &SessionQuery) -> Result<SessionPage, StoreError> {
    let limit = clamp_limit(q.limit);
    let (clause, mut p) = session_where(&q.filter);
    let total: i64 = c.query_row(
        &format!(
            "SELECT COUNT(*) FROM (SELECT 1 FROM leases WHERE {clause} LIMIT {})",
            COUNT_CAP + 1
        ),
        params_from_iter(p.iter()),
        |r| r.get(0),
    )?;
    let total = u64::try_from(total).unwrap_or(0);
    let mut clause = clause;
    if let Some(cur) = &q.after {
        p.push(Value::Integer(cur.created_at));
        let t = p.len();
        p.push(Value::Text(cur.lease.clone()));
        let l = p.len();
        clause = format!("{clause} AND (created_at < ?{t} OR (created_at = ?{t} AND id < ?{l}))");
    }
    let sql = format!(
        "SELECT {LEASE_COLS} FROM leases WHERE {clause} ORDER BY created_at DESC, id DESC LIMIT {}",
        limit + 1
    );
    let mut st = c.prepare(&sql)?;
    let rows = st.query_map(params_from_iter(p.iter()), LeaseRow::from_row)?;
    let mut out = Vec::with_capacity(limit);
    let mut more = false;
    for r in rows {
        let lease = r??;
        if out.len() == limit {
            more = true;
            break;
        }
        let end = lease.ended_at.unwrap_or(lease.heartbeat_at);
        out.push(SessionSummary {
            held_ms: end.saturating_sub(lease.created_at),
            lease,
        });
    }
    let next = if more {
        out.last().map(|s| {
            SessionCursor {
                created_at: s.lease.created_at,
                lease: s.lease.id.to_string(),
            }
            .to_string()
        })
    } else {
        None
    };
    Ok(SessionPage {
        sessions: out,
        next,
        total: total.min(COUNT_CAP),
        total_exact: total <= COUNT_CAP,
    })
}

/// One step of a session's timeline.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TimelineEntry {
    /// What it is: `queued`, `held`, `acquired`, `reattached`, `display_connected`,
    /// `display_disconnected`, `usb_opened`, `usb_attached`, `usb_detached`,
    /// `usb_refused`, `usb_control_refused`, `usb_closed`, `ended`, `reset_started`,
    /// `reset_attempt_failed`, `reset`, `broken`, `queue_left`, or the action itself.
    pub step: String,
    /// Milliseconds since the previous step, and since the session's first step.
    pub since_previous_ms: i64,
    pub since_start_ms: i64,
    #[serde(flatten)]
    pub record: AuditView,
}

/// Durations of a session, where its records tell them.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct SessionDurations {
    /// Waiting in line before the grant.
    pub waited_ms: Option<i64>,
    /// From grant to end.
    pub held_ms: Option<i64>,
    /// From grant to the first display connection.
    pub to_display_ms: Option<i64>,
    /// Display connected in total.
    pub display_connected_ms: Option<i64>,
    /// From the end to the desktop's next clean state (or broken).
    pub reset_ms: Option<i64>,
}

/// One session: its lease and every audited step, with durations.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SessionTimeline {
    pub lease: LeaseRow,
    pub timeline: Vec<TimelineEntry>,
    pub durations: SessionDurations,
}

fn step_name(action: &str) -> &str {
    match action {
        "queue_joined" => "queued",
        "queue_held" => "held",
        "lease_granted" => "acquired",
        "lease_reattached" => "reattached",
        "usb_stream_opened" => "usb_opened",
        "usb_stream_closed" => "usb_closed",
        "lease_ended" => "ended",
        "desktop_reset" => "reset",
        "desktop_broken" => "broken",
        other => other,
    }
}

fn query_records(
    c: &Connection,
    sql: &str,
    p: impl rusqlite::Params,
) -> Result<Vec<AuditRecord>, StoreError> {
    let mut st = c.prepare(sql)?;
    let rows = st.query_map(p, AuditRecord::from_row)?;
    rows.map(|r| r?).collect()
}

/// The most records one timeline shows of the lease itself.
const TIMELINE_MAX: usize = 2000;

fn session(c: &Connection, lease_id: &LeaseId) -> Result<Option<SessionTimeline>, StoreError> {
    let lease: Option<LeaseRow> = c
        .query_row(
            &format!("SELECT {LEASE_COLS} FROM leases WHERE id = ?1"),
            [lease_id.as_str()],
            LeaseRow::from_row,
        )
        .optional()?
        .transpose()?;
    let Some(lease) = lease else { return Ok(None) };
    let mut records = query_records(
        c,
        &format!(
            "SELECT {AUDIT_COLS} FROM audit WHERE lease_id = ?1 ORDER BY seq LIMIT {TIMELINE_MAX}"
        ),
        [lease_id.as_str()],
    )?;
    let parse = |r: &AuditRecord| -> serde_json::Value {
        serde_json::from_str(&r.details).unwrap_or(serde_json::Value::Null)
    };
    // The wait in line before the grant: the ticket's records (they carry no lease).
    let granted = records
        .iter()
        .find(|r| r.action == "lease_granted")
        .cloned();
    if let Some(g) = &granted {
        if let Some(ticket) = parse(g)
            .get("ticket")
            .and_then(|t| t.as_str())
            .map(str::to_owned)
        {
            let before = query_records(
                c,
                &format!(
                    "SELECT {AUDIT_COLS} FROM audit WHERE terminal = ?1 AND seq < ?2
                     AND action IN ('queue_joined', 'queue_held', 'queue_hold_dropped')
                     AND json_extract(details, '$.ticket') = ?3 ORDER BY seq"
                ),
                rusqlite::params![lease.terminal.as_str(), g.seq, ticket],
            )?;
            records.splice(0..0, before);
        }
    }
    // The reset that followed the end, on the lease's desktop: up to its clean (or
    // broken) state, at most a few records.
    if let Some(end) = records
        .iter()
        .rev()
        .find(|r| r.action == "lease_ended")
        .cloned()
    {
        let after = query_records(
            c,
            &format!(
                "SELECT {AUDIT_COLS} FROM audit WHERE desktop_id = ?1 AND seq > ?2
                 AND action IN ('reset_started', 'reset_attempt_failed', 'desktop_reset',
                                'desktop_ready', 'desktop_broken', 'desktop_died', 'lease_granted')
                 ORDER BY seq LIMIT 12"
            ),
            rusqlite::params![lease.desktop.as_str(), end.seq],
        )?;
        for r in after {
            // The desktop's next lease is another session.
            if r.action == "lease_granted" {
                break;
            }
            let last = matches!(
                r.action.as_str(),
                "desktop_reset" | "desktop_ready" | "desktop_broken"
            );
            if !records.iter().any(|x| x.seq == r.seq) {
                records.push(r);
            }
            if last {
                break;
            }
        }
        records.sort_by_key(|r| r.seq);
    }
    let mut durations = SessionDurations::default();
    let ts_of = |action: &str| records.iter().find(|r| r.action == action).map(|r| r.ts);
    let granted_ts = ts_of("lease_granted");
    let ended_ts = records
        .iter()
        .rev()
        .find(|r| r.action == "lease_ended")
        .map(|r| r.ts);
    if let Some(g) = &granted {
        durations.waited_ms = parse(g).get("waited_ms").and_then(|v| v.as_i64());
    }
    if let (Some(g), Some(e)) = (granted_ts, ended_ts) {
        durations.held_ms = Some(e - g);
    }
    if let (Some(g), Some(d)) = (granted_ts, ts_of("display_connected")) {
        durations.to_display_ms = Some(d - g);
    }
    let mut connected_since: Option<i64> = None;
    let mut connected_total: Option<i64> = None;
    for r in &records {
        match r.action.as_str() {
            "display_connected" => connected_since = connected_since.or(Some(r.ts)),
            "display_disconnected" | "lease_ended" => {
                if let Some(s) = connected_since.take() {
                    *connected_total.get_or_insert(0) += r.ts - s;
                }
            }
            _ => {}
        }
    }
    durations.display_connected_ms = connected_total;
    if let Some(e) = ended_ts {
        durations.reset_ms = records
            .iter()
            .find(|r| {
                r.ts >= e
                    && matches!(
                        r.action.as_str(),
                        "desktop_reset" | "desktop_ready" | "desktop_broken"
                    )
            })
            .map(|r| r.ts - e);
    }
    let start = records.first().map_or(lease.created_at, |r| r.ts);
    let mut prev = start;
    let timeline = records
        .into_iter()
        .map(|r| {
            let e = TimelineEntry {
                step: step_name(&r.action).to_owned(),
                since_previous_ms: r.ts - prev,
                since_start_ms: r.ts - start,
                record: AuditView::new(r),
            };
            prev = e.record.record.ts;
            e
        })
        .collect();
    Ok(Some(SessionTimeline {
        lease,
        timeline,
        durations,
    }))
}
