//! The sessions and audit handlers. Every search runs on the chain monitor's reader (its
//! own read-only SQLite connections, off the async runtime), never under the pool's
//! store lock; every view of the audit trail is itself audited (`audit_viewed`).
use crate::guard::{self, Admin};
use crate::pages::search::{self, ParamError, Params};
use crate::pages::{self, Frame};
use crate::routes::{html, CsrfForm};
use crate::Console;
use airlock_core::LeaseId;
use airlock_pool::ErrorChain;
use airlock_store::atna::Outcome;
use airlock_store::{
    AuditEntry, AuditFilter, AuditQuery, ExportFormat, SessionCursor, SessionFilter, SessionQuery,
    StoreError,
};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::Form;
use serde_json::json;

/// Rows per page.
const PAGE: usize = 50;

fn frame<'a>(title: &'a str, admin: &'a Admin, csrf: &'a str, current: &'a str) -> Frame<'a> {
    Frame {
        title,
        admin: Some((&admin.session.name, csrf)),
        current,
    }
}

/// Records that an admin looked at the audit trail (DICOM 110101 "Audit Log Used").
fn audited_view(c: &Console, admin: &Admin, what: &str, filter: serde_json::Value) {
    let e = AuditEntry::new("audit_viewed").details(json!({
        "by": admin.requester().name(), "from": admin.address, "via": "console",
        "view": what, "filter": filter,
    }));
    if let Err(e) = c.inner.pool.audit(e) {
        tracing::error!(error = %ErrorChain(&e), "cannot audit a view of the audit trail");
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, String> {
    match tokio::task::spawn_blocking(f).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => {
            tracing::error!(error = %ErrorChain(&e), "console: cannot read the audit trail");
            Err(format!("The broker cannot read its database now: {e}."))
        }
        Err(_) => Err("The search stopped unexpectedly; the broker log has the details.".into()),
    }
}

fn session_filter(p: &Params) -> Result<SessionFilter, ParamError> {
    let (from, to) = search::range(p)?;
    Ok(SessionFilter {
        terminal: search::name("terminal", &p.terminal)?,
        user: search::name("user", &p.user)?,
        desktop: search::name("desktop", &p.desktop)?,
        from,
        to,
        active: None,
    })
}

fn audit_filter(p: &Params) -> Result<AuditFilter, ParamError> {
    let (from, to) = search::range(p)?;
    let event_id = match p.event.trim() {
        "" => None,
        e => Some(e.parse::<u32>().map_err(|_| ParamError::Event)?),
    };
    let outcome = match p.outcome.trim() {
        "" => None,
        o => Some(
            o.parse::<u8>()
                .ok()
                .and_then(Outcome::from_code)
                .ok_or(ParamError::Outcome)?,
        ),
    };
    Ok(AuditFilter {
        terminal: search::name("terminal", &p.terminal)?,
        user: search::name("user", &p.user)?,
        desktop: search::name("desktop", &p.desktop)?,
        lease: search::name("lease", &p.lease)?,
        actions: search::name("action", &p.action)?.into_iter().collect(),
        event_id,
        outcome,
        from,
        to,
        text: search::name("text", &p.text)?,
    })
}

fn bad(e: &ParamError) -> String {
    format!("Not searched: {e}.")
}

pub(crate) async fn sessions(
    State(c): State<Console>,
    admin: Admin,
    q: Result<Query<Params>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let p = q.map(|Query(p)| p).unwrap_or_default();
    let csrf = c.inner.sessions.csrf(&admin.session);
    let empty = airlock_store::SessionPage {
        sessions: Vec::new(),
        next: None,
        total: 0,
        total_exact: true,
    };
    let show = |status, page: &airlock_store::SessionPage, err: Option<&str>| {
        html(
            status,
            pages::page(
                &frame("Sessions", &admin, &csrf, "Sessions"),
                pages::sessions::list(&p, page, err),
            ),
        )
    };
    let filter = match session_filter(&p) {
        Ok(f) => f,
        Err(e) => return show(StatusCode::BAD_REQUEST, &empty, Some(&bad(&e))),
    };
    let after = match p.page.trim() {
        "" => None,
        s => match SessionCursor::parse(s) {
            Some(c) => Some(c),
            None => {
                return show(
                    StatusCode::BAD_REQUEST,
                    &empty,
                    Some(&bad(&ParamError::Page)),
                )
            }
        },
    };
    audited_view(&c, &admin, "sessions", json!(filter));
    let reader = c.inner.chain.reader().clone();
    let q = SessionQuery {
        filter,
        after,
        limit: PAGE,
    };
    match blocking(move || reader.sessions(&q)).await {
        Ok(page) => show(StatusCode::OK, &page, None),
        Err(e) => show(StatusCode::INTERNAL_SERVER_ERROR, &empty, Some(&e)),
    }
}

pub(crate) async fn session(
    State(c): State<Console>,
    admin: Admin,
    Path(lease): Path<String>,
) -> Response {
    let csrf = c.inner.sessions.csrf(&admin.session);
    let Ok(id) = LeaseId::parse(&lease) else {
        return (StatusCode::NOT_FOUND, "no such session").into_response();
    };
    audited_view(&c, &admin, "session", json!({ "lease": id }));
    let reader = c.inner.chain.reader().clone();
    let lookup = id.clone();
    match blocking(move || reader.session(&lookup)).await {
        Ok(Some(t)) => html(
            StatusCode::OK,
            pages::page(
                &frame("Session", &admin, &csrf, "Sessions"),
                pages::sessions::timeline(&t),
            ),
        ),
        Ok(None) => (StatusCode::NOT_FOUND, format!("no session {id}")).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e).into_response(),
    }
}

pub(crate) async fn audit(
    State(c): State<Console>,
    admin: Admin,
    q: Result<Query<Params>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let p = q.map(|Query(p)| p).unwrap_or_default();
    let csrf = c.inner.sessions.csrf(&admin.session);
    let status = c.inner.chain.status();
    let show = |code, page: Option<&airlock_store::AuditPage>, err: Option<&str>| {
        html(
            code,
            pages::page(
                &frame("Audit", &admin, &csrf, "Audit"),
                pages::audit::body(&p, page, &status, &csrf, err),
            ),
        )
    };
    let filter = match audit_filter(&p) {
        Ok(f) => f,
        Err(e) => return show(StatusCode::BAD_REQUEST, None, Some(&bad(&e))),
    };
    let before = match p.page.trim() {
        "" => None,
        s => match s.parse::<i64>() {
            Ok(n) if n > 0 => Some(n),
            _ => return show(StatusCode::BAD_REQUEST, None, Some(&bad(&ParamError::Page))),
        },
    };
    audited_view(&c, &admin, "audit", json!(filter));
    let reader = c.inner.chain.reader().clone();
    let q = AuditQuery {
        filter,
        before,
        limit: PAGE,
    };
    match blocking(move || reader.search_audit(&q)).await {
        Ok(page) => show(StatusCode::OK, Some(&page), None),
        Err(e) => show(StatusCode::INTERNAL_SERVER_ERROR, None, Some(&e)),
    }
}

#[derive(serde::Deserialize)]
pub(crate) struct ExportParams {
    #[serde(default)]
    format: String,
    #[serde(flatten)]
    params: Params,
}

pub(crate) async fn export(
    State(c): State<Console>,
    admin: Admin,
    q: Result<Query<ExportParams>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let Ok(Query(q)) = q else {
        return (
            StatusCode::BAD_REQUEST,
            "the export's parameters could not be read",
        )
            .into_response();
    };
    let Some(format) = ExportFormat::parse(q.format.trim()) else {
        return (StatusCode::BAD_REQUEST, "format: csv or jsonl").into_response();
    };
    let filter = match audit_filter(&q.params) {
        Ok(f) => f,
        Err(e) => return (StatusCode::BAD_REQUEST, bad(&e)).into_response(),
    };
    audited_view(
        &c,
        &admin,
        "export",
        json!({ "format": q.format.trim(), "filter": filter }),
    );
    crate::export::export_response(c.inner.chain.reader().clone(), filter, format)
}

pub(crate) async fn verify(
    State(c): State<Console>,
    admin: Admin,
    Form(f): Form<CsrfForm>,
) -> Response {
    if let Some(r) = guard::csrf_refused(&c, &admin, &f.csrf) {
        return r;
    }
    let e = AuditEntry::new("audit_verify_requested").details(json!({
        "by": admin.requester().name(), "from": admin.address, "via": "console",
    }));
    if let Err(e) = c.inner.pool.audit(e) {
        tracing::error!(error = %ErrorChain(&e), "cannot audit a verification request");
    }
    let chain = c.inner.chain.clone();
    if let Err(e) = blocking(move || chain.check_full()).await {
        tracing::warn!(error = %e, "full audit check from the console failed");
    }
    Redirect::to("/console/audit").into_response()
}
