//! The console's handlers. Every form field is validated here; pages need a session,
//! forms need a session and its CSRF token.
use crate::guard::{self, Admin};
use crate::pages::{self, pool::Notice, pool::PoolSnapshot, Frame};
use crate::session::COOKIE;
use crate::Console;
use airlock_core::admin::{AdminReason, DesktopAction};
use airlock_core::{DesktopId, LeaseId};
use airlock_pool::{ErrorChain, PoolError};
use airlock_store::AuditEntry;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Form, Router};
use maud::Markup;
use serde::Deserialize;
use serde_json::json;

/// The login form's own CSRF cookie (double-submit: the form carries the same value).
const LOGIN_COOKIE: &str = "airlock_login";

/// The console's routes, with their state and security headers, to merge into the
/// broker's router.
pub fn router(c: Console) -> Router {
    Router::new()
        .route("/", get(|| async { Redirect::to("/console") }))
        .route("/console", get(pool_page))
        .route("/console/", get(|| async { Redirect::to("/console") }))
        .route("/console/pool/live", get(pool_live))
        .route("/console/login", get(login_page).post(login))
        .route("/console/logout", post(logout))
        .route("/console/desktops/{id}", post(desktop_action))
        .route("/console/sessions", get(crate::records::sessions))
        .route("/console/sessions/{lease}", get(crate::records::session))
        .route("/console/audit", get(crate::records::audit))
        .route("/console/audit/export", get(crate::records::export))
        .route("/console/audit/verify", post(crate::records::verify))
        .route("/console/static/console.css", get(css))
        .route("/console/static/console.js", get(js))
        .layer(axum::middleware::from_fn(guard::headers))
        .with_state(c)
}

pub(crate) fn html(status: StatusCode, m: Markup) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        m.into_string(),
    )
        .into_response()
}

fn cookie_header(c: &Console, name: &str, value: &str, max_age_s: i64) -> HeaderValue {
    let secure = if c.inner.cfg.secure_cookies {
        "; Secure"
    } else {
        ""
    };
    let v = format!(
        "{name}={value}; Path=/console; HttpOnly; SameSite=Strict; Max-Age={max_age_s}{secure}"
    );
    // Our own values (base64url, hex): always a valid header.
    HeaderValue::from_str(&v).unwrap_or_else(|_| HeaderValue::from_static(""))
}

async fn css() -> Response {
    (
        [(header::CONTENT_TYPE, "text/css; charset=utf-8")],
        include_str!("assets/console.css"),
    )
        .into_response()
}

async fn js() -> Response {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        include_str!("assets/console.js"),
    )
        .into_response()
}

// ------------------------------------------------------------------ login

fn random_hex() -> String {
    let mut b = [0u8; 16];
    // The OS's randomness; if it fails, the login form's token is empty and the post is
    // refused (nothing is weakened).
    let _ = getrandom::fill(&mut b);
    hex::encode(b)
}

async fn login_page(State(c): State<Console>) -> Response {
    login_form(&c, StatusCode::OK, None)
}

fn login_form(c: &Console, status: StatusCode, error: Option<&str>) -> Response {
    let token = random_hex();
    let frame = Frame {
        title: "Log in",
        admin: None,
        current: "",
    };
    let mut r = html(
        status,
        pages::page(&frame, pages::login::body(error, &token)),
    );
    r.headers_mut().append(
        header::SET_COOKIE,
        cookie_header(c, LOGIN_COOKIE, &token, 3600),
    );
    r
}

#[derive(Deserialize)]
struct LoginForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    secret: String,
}

async fn login(
    State(c): State<Console>,
    guard::ClientAddr(address): guard::ClientAddr,
    headers: HeaderMap,
    form: Result<Form<LoginForm>, axum::extract::rejection::FormRejection>,
) -> Response {
    let Ok(Form(f)) = form else {
        return login_form(
            &c,
            StatusCode::BAD_REQUEST,
            Some("The form was incomplete; fill in the account and password."),
        );
    };
    let double = guard::cookie(&headers, LOGIN_COOKIE).unwrap_or("");
    if double.is_empty() || double != f.csrf {
        return login_form(
            &c,
            StatusCode::FORBIDDEN,
            Some("The login form expired or came from another page; try again."),
        );
    }
    // The growing delay: answered no sooner than the failures so far allow.
    let key = address.unwrap_or(std::net::IpAddr::from([0, 0, 0, 0]));
    let delay = c
        .inner
        .throttle
        .lock()
        .map(|t| t.delay(key, c.clock_ms()))
        .unwrap_or_default();
    tokio::time::sleep(delay).await;
    let name: String = f.name.trim().chars().take(64).collect();
    let creds = c.inner.cfg.credentials.clone();
    let (n, s) = (name.clone(), f.secret);
    let ok = tokio::task::spawn_blocking(move || creds.check(&n, &s))
        .await
        .unwrap_or(false);
    let audit = |action: &str, outcome: &str| {
        let e = AuditEntry::new(action).details(json!({
            "account": name, "from": address, "outcome": outcome, "via": "console",
        }));
        if let Err(e) = c.inner.pool.audit(e) {
            tracing::error!(error = %ErrorChain(&e), "cannot audit a console login");
        }
    };
    if !ok {
        if let Ok(mut t) = c.inner.throttle.lock() {
            t.failed(key, c.clock_ms());
        }
        tracing::warn!(account = %name, from = ?address, "console login failed");
        audit("console_login_failed", "failure");
        return login_form(
            &c,
            StatusCode::UNAUTHORIZED,
            Some("Wrong account or password. Each failed try makes the next one wait longer."),
        );
    }
    if let Ok(mut t) = c.inner.throttle.lock() {
        t.succeeded(key);
    }
    let ttl = i64::try_from(c.inner.cfg.session_ttl.as_secs()).unwrap_or(i64::MAX / 2);
    let Ok((_, value)) = c
        .inner
        .sessions
        .issue(&name, c.now_unix().saturating_add(ttl))
    else {
        return login_form(
            &c,
            StatusCode::INTERNAL_SERVER_ERROR,
            Some("The broker could not draw a random session key; see its log."),
        );
    };
    tracing::info!(account = %name, from = ?address, "console login");
    audit("console_login", "success");
    let mut r = Redirect::to("/console").into_response();
    let h = r.headers_mut();
    h.append(header::SET_COOKIE, cookie_header(&c, COOKIE, &value, ttl));
    h.append(header::SET_COOKIE, cookie_header(&c, LOGIN_COOKIE, "", 0));
    r
}

#[derive(Deserialize)]
pub(crate) struct CsrfForm {
    #[serde(default)]
    pub(crate) csrf: String,
}

async fn logout(State(c): State<Console>, admin: Admin, Form(f): Form<CsrfForm>) -> Response {
    if let Some(r) = guard::csrf_refused(&c, &admin, &f.csrf) {
        return r;
    }
    c.inner.sessions.revoke(&admin.session, c.now_unix());
    let e = AuditEntry::new("console_logout")
        .details(json!({ "account": admin.session.name, "from": admin.address, "via": "console" }));
    if let Err(e) = c.inner.pool.audit(e) {
        tracing::error!(error = %ErrorChain(&e), "cannot audit a console logout");
    }
    let mut r = Redirect::to("/console/login").into_response();
    r.headers_mut()
        .append(header::SET_COOKIE, cookie_header(&c, COOKIE, "", 0));
    r
}

// ------------------------------------------------------------------ pool

fn snapshot(c: &Console) -> Result<PoolSnapshot, PoolError> {
    let pool = &c.inner.pool;
    Ok(PoolSnapshot {
        desktops: pool.desktops()?,
        status: pool.status()?,
        line: pool.waiting_line(),
        now_ms: c.now_unix().saturating_mul(1000),
        min_clean: c.inner.cfg.min_clean,
    })
}

fn internal(e: &PoolError) -> Response {
    tracing::error!(error = %ErrorChain(e), "console: cannot read the pool");
    (
        StatusCode::INTERNAL_SERVER_ERROR,
        "the broker cannot read its pool now; its log has the details",
    )
        .into_response()
}

#[derive(Deserialize)]
struct DoneQuery {
    done: Option<String>,
    desktop: Option<String>,
}

fn render_pool(c: &Console, admin: &Admin, status: StatusCode, notice: Option<Notice>) -> Response {
    let s = match snapshot(c) {
        Ok(s) => s,
        Err(e) => return internal(&e),
    };
    let csrf = c.inner.sessions.csrf(&admin.session);
    let frame = Frame {
        title: "Pool",
        admin: Some((&admin.session.name, &csrf)),
        current: "Pool",
    };
    html(
        status,
        pages::page(&frame, pages::pool::body(&s, &csrf, notice.as_ref())),
    )
}

async fn pool_page(State(c): State<Console>, admin: Admin, Query(q): Query<DoneQuery>) -> Response {
    // Only known action names and desktop ids are echoed back.
    let notice = match (
        q.done.as_deref().and_then(action_label),
        q.desktop.as_deref().and_then(|d| DesktopId::parse(d).ok()),
    ) {
        (Some(what), Some(d)) => Some(Notice::Done(format!("{what}: desktop {d}."))),
        _ => None,
    };
    render_pool(&c, &admin, StatusCode::OK, notice)
}

async fn pool_live(State(c): State<Console>, admin: Admin) -> Response {
    match snapshot(&c) {
        Ok(s) => html(
            StatusCode::OK,
            pages::pool::live(&s, &c.inner.sessions.csrf(&admin.session)),
        ),
        Err(e) => internal(&e),
    }
}

fn action_label(a: &str) -> Option<&'static str> {
    Some(match a {
        "end-lease" => "Lease ended",
        "drain" => "Drained",
        "return" => "Returned to service",
        "reset" => "Reset started",
        "rebuild" => "Rebuild started",
        _ => return None,
    })
}

#[derive(Deserialize)]
struct ActionForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    action: String,
    #[serde(default)]
    reason: String,
}

async fn desktop_action(
    State(c): State<Console>,
    admin: Admin,
    Path(id): Path<String>,
    form: Result<Form<ActionForm>, axum::extract::rejection::FormRejection>,
) -> Response {
    let Ok(Form(f)) = form else {
        return (StatusCode::BAD_REQUEST, "the form could not be read").into_response();
    };
    if let Some(r) = guard::csrf_refused(&c, &admin, &f.csrf) {
        return r;
    }
    let failed =
        |status: StatusCode, m: String| render_pool(&c, &admin, status, Some(Notice::Failed(m)));
    let Ok(desktop) = DesktopId::parse(&id) else {
        return failed(
            StatusCode::NOT_FOUND,
            format!("There is no desktop {id:?}."),
        );
    };
    let reason = match AdminReason::parse(&f.reason) {
        Ok(r) => r,
        Err(e) => return failed(StatusCode::BAD_REQUEST, format!("Not done: {e}.")),
    };
    let who = admin.requester();
    let pool = &c.inner.pool;
    let result = if f.action == "end-lease" {
        let lease: Option<LeaseId> = pool
            .desktops()
            .ok()
            .and_then(|v| v.into_iter().find(|d| d.id == desktop))
            .and_then(|d| d.lease);
        match lease {
            Some(l) => pool.end_lease_by_admin(&l, &who, &reason).await.map(|_| ()),
            None => {
                return failed(
                    StatusCode::CONFLICT,
                    format!("Desktop {desktop} has no lease to end."),
                )
            }
        }
    } else {
        let Some(action) = DesktopAction::parse(&f.action) else {
            return failed(
                StatusCode::BAD_REQUEST,
                format!("Unknown action {:?}.", f.action),
            );
        };
        pool.desktop_action(&desktop, action, &who, &reason).await
    };
    match result {
        Ok(()) => {
            Redirect::to(&format!("/console?done={}&desktop={desktop}", f.action)).into_response()
        }
        Err(e @ PoolError::UnknownDesktop(_)) => {
            failed(StatusCode::NOT_FOUND, format!("Not done: {e}."))
        }
        Err(
            e @ (PoolError::AdminNoChange { .. }
            | PoolError::AdminBusy { .. }
            | PoolError::NotBroken { .. }
            | PoolError::LeaseNotFound),
        ) => failed(StatusCode::CONFLICT, format!("Not done: {e}.")),
        Err(e) => {
            tracing::error!(error = %ErrorChain(&e), desktop = %desktop, "console action failed");
            failed(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("Not done: {}.", ErrorChain(&e)),
            )
        }
    }
}
