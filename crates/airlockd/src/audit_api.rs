//! The security officer's endpoints: the audit trail (search, export), the sessions and
//! one session's timeline, and the chain's verification status. Thin: every read runs
//! on `airlock_store::Reader` (its own read-only connections, in `spawn_blocking`),
//! never under the pool's store lock. Every view (not the verification) is itself
//! audited, `audit_viewed`. Query parameters are validated here ([`parse_audit`],
//! [`parse_sessions`]); docs/api.md, "Audit trail and sessions", lists them.
use crate::api::{AdminAuth, ApiError, AppState};
use airlock_core::{DesktopId, LeaseId, TerminalName, UserName};
use airlock_pool::{ErrorChain, Pool};
use airlock_store::atna::{self, Outcome};
use airlock_store::{
    parse_time_ms, AuditEntry, AuditFilter, AuditQuery, ChainMonitor, ChainStatus, ExportFormat,
    SessionCursor, SessionQuery, StoreError,
};
use axum::extract::rejection::QueryRejection;
use axum::extract::{ConnectInfo, FromRequestParts, Query, State};
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// Records per page when the request does not say.
pub const DEFAULT_LIMIT: usize = 100;
/// How often the background task checks the records written since its last check.
pub const INCREMENTAL_EVERY: Duration = Duration::from_secs(2);

/// The routes of this module, merged into the API's router.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/audit", get(audit))
        .route("/v1/audit/verify", get(verify_status).post(verify_now))
        .route("/v1/sessions", get(sessions))
        .route("/v1/sessions/{lease}", get(session))
}

/// A validated audit query: a page of JSON, or an export.
#[derive(Debug, Clone, PartialEq)]
pub struct AuditRequest {
    pub query: AuditQuery,
    /// `None`: JSON page; else an export (all pages, oldest first).
    pub export: Option<ExportFormat>,
}

fn one<'a>(seen: &mut Vec<&'a str>, key: &'a str) -> Result<(), String> {
    if seen.contains(&key) {
        return Err(format!("`{key}` is given twice; give it once"));
    }
    seen.push(key);
    Ok(())
}

fn time(key: &str, v: &str) -> Result<i64, String> {
    parse_time_ms(v).ok_or_else(|| {
        format!("`{key}`: {v:?} is not a time; give Unix milliseconds, a date (2026-12-03) or an RFC 3339 UTC time (2026-12-03T10:00:00Z)")
    })
}

fn name<T>(
    key: &str,
    v: &str,
    parse: impl Fn(&str) -> Result<T, airlock_core::IdError>,
) -> Result<String, String>
where
    T: std::fmt::Display,
{
    parse(v)
        .map(|t| t.to_string())
        .map_err(|e| format!("`{key}`: {e}"))
}

fn limit(v: &str) -> Result<usize, String> {
    match v.parse::<usize>() {
        Ok(n) if (1..=airlock_store::reader::MAX_PAGE).contains(&n) => Ok(n),
        Ok(_) => Err(format!(
            "`limit` is {v}; use 1 to {}",
            airlock_store::reader::MAX_PAGE
        )),
        Err(_) => Err(format!("`limit`: {v:?} is not a number")),
    }
}

fn range(from: Option<i64>, to: Option<i64>) -> Result<(), String> {
    match (from, to) {
        (Some(f), Some(t)) if f >= t => {
            Err("`from` must be before `to` (the range is [from, to))".into())
        }
        _ => Ok(()),
    }
}

/// Validates the query of `GET /v1/audit` (also the CLI export's filters, given as the
/// same pairs). Unknown keys, repeated keys (but `action`) and bad values are errors
/// naming the key.
pub fn parse_audit(pairs: &[(String, String)]) -> Result<AuditRequest, String> {
    let mut f = AuditFilter::default();
    let mut q = AuditQuery {
        limit: DEFAULT_LIMIT,
        ..AuditQuery::default()
    };
    let mut export = None;
    let mut seen = Vec::new();
    for (k, v) in pairs {
        let k = k.as_str();
        if k != "action" {
            one(&mut seen, k)?;
        }
        match k {
            "terminal" => f.terminal = Some(name(k, v, TerminalName::parse)?),
            "user" => f.user = Some(name(k, v, UserName::parse)?),
            "desktop" => f.desktop = Some(name(k, v, DesktopId::parse)?),
            "lease" => f.lease = Some(name(k, v, LeaseId::parse)?),
            "action" => {
                for a in v.split(',') {
                    let ok = !a.is_empty()
                        && a.len() <= 64
                        && a.bytes().all(|b| b.is_ascii_lowercase() || b == b'_');
                    if !ok {
                        return Err(format!("`action`: {a:?} is not an action name (lower-case letters and `_`; docs/audit.md lists them)"));
                    }
                    if f.actions.len() >= 32 {
                        return Err("`action`: at most 32 actions".into());
                    }
                    f.actions.push(a.to_owned());
                }
            }
            "event" => {
                let code: u32 = v
                    .parse()
                    .map_err(|_| format!("`event`: {v:?} is not an EventID number"))?;
                if !atna::event::ALL.iter().any(|e| e.code == code) {
                    let known: Vec<String> =
                        atna::event::ALL.iter().map(|e| e.code.to_string()).collect();
                    return Err(format!(
                        "`event`: {code} is not an EventID Airlock uses; use one of {}",
                        known.join(", ")
                    ));
                }
                f.event_id = Some(code);
            }
            "outcome" => {
                f.outcome = Some(
                    v.parse::<u8>()
                        .ok()
                        .and_then(Outcome::from_code)
                        .ok_or_else(|| format!("`outcome`: {v:?}; use 0, 4, 8 or 12"))?,
                )
            }
            "from" => f.from = Some(time(k, v)?),
            "to" => f.to = Some(time(k, v)?),
            "q" => {
                if v.is_empty() || v.len() > airlock_store::reader::MAX_TEXT || v.chars().any(char::is_control) {
                    return Err(format!(
                        "`q`: give 1 to {} characters of text, without control characters",
                        airlock_store::reader::MAX_TEXT
                    ));
                }
                f.text = Some(v.clone());
            }
            "before" => {
                q.before = Some(
                    v.parse::<i64>()
                        .ok()
                        .filter(|n| *n >= 1)
                        .ok_or_else(|| format!("`before`: {v:?} is not a record number (the `next_before` of the previous page)"))?,
                )
            }
            "limit" => q.limit = limit(v)?,
            "format" => {
                export = match v.as_str() {
                    "json" => None,
                    other => Some(ExportFormat::parse(other).ok_or_else(|| {
                        format!("`format`: {other:?}; use json (a page), csv or jsonl (an export)")
                    })?),
                }
            }
            other => {
                return Err(format!(
                    "unknown query key `{other}`; use terminal, user, desktop, lease, action, event, outcome, from, to, q, before, limit, format"
                ))
            }
        }
    }
    range(f.from, f.to)?;
    if export.is_some() && (seen.contains(&"before") || seen.contains(&"limit")) {
        return Err("an export (`format` csv or jsonl) has every matching record: leave out `before` and `limit`".into());
    }
    q.filter = f;
    Ok(AuditRequest { query: q, export })
}

/// Validates the query of `GET /v1/sessions`.
pub fn parse_sessions(pairs: &[(String, String)]) -> Result<SessionQuery, String> {
    let mut q = SessionQuery {
        limit: DEFAULT_LIMIT,
        ..SessionQuery::default()
    };
    let mut seen = Vec::new();
    for (k, v) in pairs {
        let k = k.as_str();
        one(&mut seen, k)?;
        match k {
            "terminal" => q.filter.terminal = Some(name(k, v, TerminalName::parse)?),
            "user" => q.filter.user = Some(name(k, v, UserName::parse)?),
            "desktop" => q.filter.desktop = Some(name(k, v, DesktopId::parse)?),
            "from" => q.filter.from = Some(time(k, v)?),
            "to" => q.filter.to = Some(time(k, v)?),
            "active" => {
                q.filter.active = Some(match v.as_str() {
                    "true" => true,
                    "false" => false,
                    _ => return Err(format!("`active`: {v:?}; use true or false")),
                })
            }
            "after" => {
                q.after = Some(SessionCursor::parse(v).ok_or_else(|| {
                    format!("`after`: {v:?} is not a cursor (the `next` of the previous page)")
                })?)
            }
            "limit" => q.limit = limit(v)?,
            other => {
                return Err(format!(
                    "unknown query key `{other}`; use terminal, user, desktop, from, to, active, after, limit"
                ))
            }
        }
    }
    range(q.filter.from, q.filter.to)?;
    Ok(q)
}

/// Who asked, for the `audit_viewed` record.
pub struct Viewer {
    pub from: Option<std::net::IpAddr>,
}

impl FromRequestParts<AppState> for Viewer {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &AppState) -> Result<Self, ApiError> {
        Ok(Viewer {
            from: parts
                .extensions
                .get::<ConnectInfo<SocketAddr>>()
                .map(|c| c.0.ip()),
        })
    }
}

/// Writes the `audit_viewed` record of a view through the API.
fn audited(pool: &Pool, viewer: &Viewer, view: &str, filter: Value) -> Result<(), ApiError> {
    let e = AuditEntry::new("audit_viewed").details(json!({
        "by": "admin token",
        "from": viewer.from.map(|ip| ip.to_string()),
        "via": "api",
        "view": view,
        "filter": filter,
    }));
    pool.audit(e).map_err(|e| {
        tracing::error!(error = %ErrorChain(&e), "cannot audit a view of the audit trail");
        ApiError::internal()
    })
}

type Pairs = Result<Query<Vec<(String, String)>>, QueryRejection>;

fn pairs(q: Pairs) -> Result<Vec<(String, String)>, ApiError> {
    q.map(|Query(p)| p)
        .map_err(|e| ApiError::bad_request(e.body_text()))
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, ApiError> {
    match tokio::task::spawn_blocking(f).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => {
            tracing::error!(error = %ErrorChain(&e), "cannot read the audit trail");
            Err(ApiError::internal())
        }
        Err(_) => Err(ApiError::internal()),
    }
}

/// `GET /v1/audit`: a page of records (newest first), or an export.
async fn audit(
    State(st): State<AppState>,
    _a: AdminAuth,
    viewer: Viewer,
    q: Pairs,
) -> Result<Response, ApiError> {
    let req = parse_audit(&pairs(q)?).map_err(ApiError::bad_request)?;
    let filter_json = serde_json::to_value(&req.query.filter).unwrap_or_default();
    let reader = st.chain.reader().clone();
    match req.export {
        None => {
            let query = req.query.clone();
            let page = blocking(move || reader.search_audit(&query)).await?;
            audited(&st.pool, &viewer, "audit_search", filter_json.clone())?;
            Ok(Json(json!({
                "records": page.records,
                "next_before": page.next_before,
                "total": page.total,
                "total_exact": page.total_exact,
                "filter": filter_json,
            }))
            .into_response())
        }
        Some(format) => {
            audited(
                &st.pool,
                &viewer,
                &format!("audit_export_{}", format.extension()),
                filter_json,
            )?;
            Ok(airlock_console::export_response(
                reader,
                req.query.filter,
                format,
            ))
        }
    }
}

/// `GET /v1/sessions`: a page of sessions, newest first.
async fn sessions(
    State(st): State<AppState>,
    _a: AdminAuth,
    viewer: Viewer,
    q: Pairs,
) -> Result<Response, ApiError> {
    let query = parse_sessions(&pairs(q)?).map_err(ApiError::bad_request)?;
    let filter_json = serde_json::to_value(&query.filter).unwrap_or_default();
    let reader = st.chain.reader().clone();
    let page = blocking(move || reader.sessions(&query)).await?;
    audited(&st.pool, &viewer, "sessions", filter_json)?;
    Ok(Json(page).into_response())
}

/// `GET /v1/sessions/{lease}`: one session's timeline.
async fn session(
    State(st): State<AppState>,
    _a: AdminAuth,
    viewer: Viewer,
    axum::extract::Path(lease): axum::extract::Path<String>,
) -> Result<Response, ApiError> {
    let lease = LeaseId::parse(&lease).map_err(|_| ApiError::lease_not_found())?;
    let reader = st.chain.reader().clone();
    let l2 = lease.clone();
    let t = blocking(move || reader.session(&l2)).await?;
    let Some(t) = t else {
        return Err(ApiError::lease_not_found());
    };
    audited(&st.pool, &viewer, "session", json!({ "lease": lease }))?;
    Ok(Json(t).into_response())
}

/// The verification status as JSON (also the first keys the API had before it became
/// incremental: `intact`, `records`, `head`, `first_broken`).
pub fn status_json(s: &ChainStatus) -> Value {
    json!({
        "intact": s.intact,
        "records": s.verified_records,
        "head": s.verified_hash,
        "first_broken": s.first_broken,
        "status": s,
    })
}

async fn with_anchor(st: &AppState, s: ChainStatus) -> Result<Response, ApiError> {
    let mut v = status_json(&s);
    // The anchor this broker wrote last, checked now on the reader (the whole file was
    // checked at start; `airlockd audit verify` checks it all again).
    v["anchor"] = match st.anchor.latest() {
        None => Value::Null,
        Some(a) => {
            let reader = st.chain.reader().clone();
            let a2 = a.clone();
            let check = blocking(move || reader.check_anchor(&a2)).await?;
            let problem = match check.holds() {
                true => st.anchor.problem_at_start(),
                false => Some(crate::anchor::explain(&st.anchor.path(), &a, &check)),
            };
            json!({
                "file": st.anchor.path(),
                "seq": a.seq,
                "hash": a.hash,
                "ts": a.ts,
                "holds": problem.is_none(),
                "problem": problem,
            })
        }
    };
    Ok(Json(v).into_response())
}

/// `GET /v1/audit/verify`: the chain's status after an incremental check of what was
/// written since the last one (cheap; not audited).
async fn verify_status(State(st): State<AppState>, _a: AdminAuth) -> Result<Response, ApiError> {
    let chain = st.chain.clone();
    let s = blocking(move || chain.check_new()).await?;
    report_metrics(&st.pool, &s);
    with_anchor(&st, s).await
}

/// `POST /v1/audit/verify`: a full check now (every record hashed again); answers when
/// it is done.
async fn verify_now(State(st): State<AppState>, _a: AdminAuth) -> Result<Response, ApiError> {
    let chain = st.chain.clone();
    let s = blocking(move || chain.check_full()).await?;
    report_metrics(&st.pool, &s);
    with_anchor(&st, s).await
}

/// Passes the status to the pool's metrics.
pub fn report_metrics(pool: &Pool, s: &ChainStatus) {
    pool.metrics().set_audit_chain(
        s.intact,
        s.verified_records,
        s.last_full.as_ref().map(|f| f.finished_at / 1000),
    );
}

/// The broker's verifier: an incremental check every [`INCREMENTAL_EVERY`] (the first,
/// from record 1, is a full one), a full one every `full_every`. Never holds the pool's
/// store lock.
pub async fn run_verifier(chain: Arc<ChainMonitor>, pool: Pool, full_every: Duration) {
    let mut tick = tokio::time::interval(INCREMENTAL_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The first incremental check hashes the chain from record 1: a full check.
    let mut next_full = tokio::time::Instant::now() + full_every;
    let mut was_intact = true;
    loop {
        tick.tick().await;
        let c = chain.clone();
        let s = match tokio::task::spawn_blocking(move || c.check_new()).await {
            Ok(Ok(s)) => s,
            _ => continue,
        };
        report_metrics(&pool, &s);
        if was_intact && !s.intact {
            if let Some(b) = &s.first_broken {
                tracing::error!(seq = b.seq, why = %b.why, "the audit chain is BROKEN at record {}; run `airlockd audit verify`", b.seq);
            }
        }
        was_intact = s.intact;
        if tokio::time::Instant::now() >= next_full && !s.full_check_running {
            next_full = tokio::time::Instant::now() + full_every;
            let (c, p) = (chain.clone(), pool.clone());
            tokio::spawn(async move {
                if let Ok(Ok(s)) = tokio::task::spawn_blocking(move || c.check_full()).await {
                    report_metrics(&p, &s);
                    if let Some(f) = &s.last_full {
                        tracing::info!(
                            records = f.records,
                            ms = f.duration_ms,
                            intact = f.intact,
                            "full audit chain verification"
                        );
                    }
                }
            });
        }
    }
}
