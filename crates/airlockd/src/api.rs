//! The HTTP API. Every input is validated here, at the edge; errors are JSON
//! `{"error": code, "message": text}` with a fitting status.
use crate::config::Config;
use crate::limits::Limiter;
use airlock_core::rate::Limited;
use airlock_core::wire::{
    AlertReport, DeviceIdentity, ErrorBody, ErrorCode, HeartbeatReply, LeaseGrant, LeaseRequest,
    QueuePoll, ReleaseReply, UsbEndpoint, UsbRefusedReport, DEVICE_HEADER, MAX_QUEUE_WAIT_S,
    USB_PROTOCOL,
};
use airlock_core::{DesktopId, DesktopState, LeaseId, TerminalName, TicketId, UserName};
use airlock_pool::{ErrorChain, LeaseOutcome, Pool, PoolError};
use axum::extract::rejection::JsonRejection;
use axum::extract::{
    ConnectInfo, DefaultBodyLimit, FromRequest, FromRequestParts, Path, Query, Request, State,
};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use subtle::ConstantTimeEq;

/// Shared state of the HTTP handlers.
#[derive(Clone)]
pub struct AppState {
    pub pool: Pool,
    pub config: Arc<Config>,
    /// The rate limits' buckets.
    pub limits: Arc<Limiter>,
    /// The audit anchor writer, for `GET /v1/audit/verify`.
    pub anchor: Arc<crate::anchor::Anchorer>,
}

/// An API error.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: ErrorCode,
    message: String,
    retry_after_s: Option<u64>,
}

impl ApiError {
    fn new(status: StatusCode, code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            retry_after_s: None,
        }
    }

    fn unauthorized() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            ErrorCode::Unauthorized,
            "missing or wrong bearer token; send `Authorization: Bearer <token>` with this terminal's token",
        )
    }

    fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, ErrorCode::BadRequest, message)
    }

    /// `429` with `Retry-After`: `what` is asked too often.
    fn rate_limited(what: &str, l: Limited) -> Self {
        let s = l.retry_after_s();
        ApiError {
            status: StatusCode::TOO_MANY_REQUESTS,
            code: ErrorCode::RateLimited,
            message: format!("{what}; try again in {s} s"),
            retry_after_s: Some(s),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: self.code,
            message: self.message,
            retry_after_s: self.retry_after_s,
        };
        let mut resp = (self.status, Json(body)).into_response();
        if let Some(s) = self.retry_after_s {
            if let Ok(v) = HeaderValue::from_str(&s.to_string()) {
                resp.headers_mut().insert(header::RETRY_AFTER, v);
            }
        }
        if self.status == StatusCode::UNAUTHORIZED {
            resp.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        resp
    }
}

impl From<PoolError> for ApiError {
    fn from(e: PoolError) -> Self {
        match e {
            PoolError::NoFreeDesktop { retry_after_s } => ApiError {
                status: StatusCode::SERVICE_UNAVAILABLE,
                code: ErrorCode::NoFreeDesktop,
                message: format!(
                    "every desktop is in use or being reset; try again in {retry_after_s} s"
                ),
                retry_after_s: Some(retry_after_s),
            },
            PoolError::LeaseLimit { limit } => ApiError::new(
                StatusCode::CONFLICT,
                ErrorCode::LeaseLimit,
                format!(
                    "this terminal already holds {limit} active lease(s), as many as it may \
                     (limits.leases_per_terminal); release it first (asking again for the same \
                     user gives that lease back)"
                ),
            ),
            PoolError::LeaseNotFound => ApiError::new(
                StatusCode::NOT_FOUND,
                ErrorCode::LeaseNotFound,
                "no active lease with that id for this terminal (it ended, or it is not yours)",
            ),
            PoolError::TicketNotFound => ticket_not_found(),
            PoolError::UnknownDesktop(d) => ApiError::new(
                StatusCode::NOT_FOUND,
                ErrorCode::DesktopNotFound,
                format!("no desktop {d}"),
            ),
            PoolError::NotBroken { .. } => {
                ApiError::new(StatusCode::CONFLICT, ErrorCode::NotBroken, e.to_string())
            }
            PoolError::UsbBusy => ApiError::new(
                StatusCode::CONFLICT,
                ErrorCode::UsbStreamOpen,
                e.to_string(),
            ),
            PoolError::UsbUnavailable(_) => ApiError {
                status: StatusCode::SERVICE_UNAVAILABLE,
                code: ErrorCode::UsbUnavailable,
                message: ErrorChain(&e).to_string(),
                retry_after_s: Some(1),
            },
            PoolError::Setup(_) => ApiError {
                status: StatusCode::SERVICE_UNAVAILABLE,
                code: ErrorCode::DesktopUnavailable,
                message: ErrorChain(&e).to_string(),
                retry_after_s: Some(1),
            },
            other => {
                tracing::error!(error = %ErrorChain(&other), "internal error");
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    ErrorCode::Internal,
                    "internal error; the broker log has the details",
                )
            }
        }
    }
}

/// A JSON body whose rejections become API errors.
pub struct ApiJson<T>(pub T);

impl<S, T> FromRequest<S> for ApiJson<T>
where
    Json<T>: FromRequest<S, Rejection = JsonRejection>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match Json::<T>::from_request(req, state).await {
            Ok(Json(v)) => Ok(ApiJson(v)),
            Err(rej) => {
                let (status, code, message) = match rej.status() {
                    StatusCode::PAYLOAD_TOO_LARGE => (
                        StatusCode::PAYLOAD_TOO_LARGE,
                        ErrorCode::PayloadTooLarge,
                        "request body is too large".to_owned(),
                    ),
                    StatusCode::UNSUPPORTED_MEDIA_TYPE => (
                        StatusCode::UNSUPPORTED_MEDIA_TYPE,
                        ErrorCode::UnsupportedMediaType,
                        "send `Content-Type: application/json`".to_owned(),
                    ),
                    _ => (
                        StatusCode::BAD_REQUEST,
                        ErrorCode::BadRequest,
                        format!("invalid JSON body: {}", rej.body_text()),
                    ),
                };
                Err(ApiError::new(status, code, message))
            }
        }
    }
}

fn bearer(headers: &HeaderMap) -> Option<[u8; 32]> {
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let token = v.strip_prefix("Bearer ")?.trim();
    if token.is_empty() || token.len() > 4096 {
        return None;
    }
    Some(Sha256::digest(token.as_bytes()).into())
}

/// The client's address (unspecified when the server did not record it).
fn client_ip(parts: &Parts) -> IpAddr {
    parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map_or(IpAddr::V6(Ipv6Addr::UNSPECIFIED), |c| c.0.ip())
}

/// Authenticates a request's bearer token with `check` (constant time), counting a
/// failure against the client's address. An address over its budget of failures gets
/// `429` before its token is even hashed.
fn authenticate<T>(
    parts: &Parts,
    state: &AppState,
    check: impl FnOnce(&[u8; 32]) -> Option<T>,
) -> Result<T, ApiError> {
    let ip = client_ip(parts);
    let too_many = |l| {
        ApiError::rate_limited(
            "too many requests with a missing or wrong token from this address",
            l,
        )
    };
    state.limits.may_authenticate(ip).map_err(too_many)?;
    match bearer(&parts.headers).and_then(|h| check(&h)) {
        Some(v) => Ok(v),
        None => {
            tracing::debug!(%ip, "authentication failed");
            state.limits.authentication_failed(ip).map_err(too_many)?;
            Err(ApiError::unauthorized())
        }
    }
}

/// A request authenticated with a terminal token.
pub struct TerminalAuth(pub TerminalName);

impl FromRequestParts<AppState> for TerminalAuth {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        authenticate(parts, state, |h| {
            // Compare against every terminal in constant time, so timing reveals nothing.
            let mut found = None;
            for t in &state.config.terminals {
                if bool::from(t.token_sha256.ct_eq(h)) {
                    found = Some(t.name.clone());
                }
            }
            found.map(TerminalAuth)
        })
    }
}

/// A request authenticated with the admin token.
pub struct AdminAuth;

impl FromRequestParts<AppState> for AdminAuth {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        authenticate(parts, state, |h| {
            bool::from(state.config.admin_token_sha256.ct_eq(h)).then_some(AdminAuth)
        })
    }
}

/// An id in a request's path, parsed at the edge: `Id<LeaseId>`, `Id<TicketId>`,
/// `Id<DesktopId>`. An id that cannot be one of its kind is "not found", with the code of
/// its kind.
struct Id<T>(T);

/// Parsing of the ids [`Id`] takes.
trait PathId: Sized {
    fn from_path(s: &str) -> Result<Self, ApiError>;
}

/// `PathId` for an id type whose `parse` validates it, with its "not found" error.
macro_rules! path_id {
    ($id:ty, $not_found:expr) => {
        impl PathId for $id {
            fn from_path(s: &str) -> Result<Self, ApiError> {
                <$id>::parse(s).map_err(|_| $not_found)
            }
        }
    };
}
path_id!(
    LeaseId,
    ApiError::new(
        StatusCode::NOT_FOUND,
        ErrorCode::LeaseNotFound,
        "no lease with that id (lease ids are 32 lower-case hex digits)",
    )
);
path_id!(TicketId, ticket_not_found());
path_id!(
    DesktopId,
    ApiError::new(
        StatusCode::NOT_FOUND,
        ErrorCode::DesktopNotFound,
        "no such desktop",
    )
);

impl<T: PathId> FromRequestParts<AppState> for Id<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let Path(s) = Path::<String>::from_request_parts(parts, state)
            .await
            .map_err(|e| ApiError::bad_request(e.body_text()))?;
        T::from_path(&s).map(Id)
    }
}

/// The base URL terminals reach this broker at, from the request's Host header.
fn base_url(st: &AppState, headers: &HeaderMap) -> String {
    let scheme = if st.config.tls.is_some() {
        "https"
    } else {
        "http"
    };
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .filter(|h| h.len() <= 255 && h.bytes().all(|b| b.is_ascii_graphic()))
        .map(str::to_owned)
        .unwrap_or_else(|| st.config.listen.to_string());
    format!("{scheme}://{host}")
}

fn ticket_not_found() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        ErrorCode::TicketNotFound,
        "no waiting ticket with that id for this terminal (it left the line: polled too late, \
         cancelled, or the broker restarted); ask for a desktop again with `\"wait\": true`",
    )
}

/// The answer to a lease request or a ticket poll: `201` a new lease, `200` a
/// re-attached lease or a place in line still waiting (`queued_status`: `202` for a
/// lease request, `200` for a poll).
fn outcome_response(
    st: &AppState,
    headers: &HeaderMap,
    outcome: LeaseOutcome,
    queued_status: StatusCode,
) -> Response {
    let (status, grant, reattached) = match outcome {
        LeaseOutcome::Queued(standing) => {
            return (queued_status, Json(standing)).into_response();
        }
        LeaseOutcome::Granted(g) => (StatusCode::CREATED, g, false),
        LeaseOutcome::Reattached(g) => (StatusCode::OK, g, true),
    };
    let usb = UsbEndpoint {
        url: format!("{}/v1/leases/{}/usb", base_url(st, headers), grant.lease_id),
        protocol: USB_PROTOCOL.into(),
    };
    (
        status,
        Json(LeaseGrant {
            grant,
            usb,
            reattached,
        }),
    )
        .into_response()
}

async fn create_lease(
    State(st): State<AppState>,
    headers: HeaderMap,
    TerminalAuth(terminal): TerminalAuth,
    ApiJson(req): ApiJson<LeaseRequest>,
) -> Result<Response, ApiError> {
    st.limits.acquire(&terminal).map_err(|l| {
        ApiError::rate_limited(
            "this terminal asks for desktops too often (limits.acquires_per_minute)",
            l,
        )
    })?;
    let user =
        UserName::parse(&req.user).map_err(|e| ApiError::bad_request(format!("`user`: {e}")))?;
    let outcome = st.pool.acquire(&terminal, &user, req.wait).await?;
    Ok(outcome_response(
        &st,
        &headers,
        outcome,
        StatusCode::ACCEPTED,
    ))
}

/// `POST /v1/alerts`: a terminal's security alert, into the audit log.
async fn alert(
    State(st): State<AppState>,
    TerminalAuth(terminal): TerminalAuth,
    ApiJson(report): ApiJson<AlertReport>,
) -> Result<StatusCode, ApiError> {
    report
        .check()
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    let user = report
        .user
        .as_deref()
        .map(UserName::parse)
        .transpose()
        .map_err(|e| ApiError::bad_request(format!("`user`: {e}")))?;
    st.pool.security_alert(&terminal, user.as_ref(), &report)?;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /v1/queue/{ticket}?wait_s=N`: keeps the ticket alive; a long poll.
async fn poll_ticket(
    State(st): State<AppState>,
    headers: HeaderMap,
    TerminalAuth(terminal): TerminalAuth,
    Id(id): Id<TicketId>,
    q: Result<Query<QueuePoll>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(q) = q.map_err(|e| ApiError::bad_request(e.body_text()))?;
    if q.wait_s > MAX_QUEUE_WAIT_S {
        return Err(ApiError::bad_request(format!(
            "`wait_s` is {}; use 0 to {MAX_QUEUE_WAIT_S} seconds",
            q.wait_s
        )));
    }
    let outcome = st
        .pool
        .poll_ticket(&id, &terminal, std::time::Duration::from_secs(q.wait_s))
        .await?;
    Ok(outcome_response(&st, &headers, outcome, StatusCode::OK))
}

/// `DELETE /v1/queue/{ticket}`: leaves the line.
async fn leave_queue(
    State(st): State<AppState>,
    TerminalAuth(terminal): TerminalAuth,
    Id(id): Id<TicketId>,
) -> Result<StatusCode, ApiError> {
    st.pool.leave_queue(&id, &terminal)?;
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /v1/leases/{id}/usb` with `Upgrade: airlock-usbredir/1`: the lease holder's one
/// usbredir stream, piped to that lease's desktop and nowhere else.
async fn usb_stream(
    State(st): State<AppState>,
    TerminalAuth(terminal): TerminalAuth,
    Id(id): Id<LeaseId>,
    mut req: Request,
) -> Result<Response, ApiError> {
    let h = req.headers();
    let upgrade_ok = h
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case(USB_PROTOCOL));
    let connection_ok = h
        .get(header::CONNECTION)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(',')
                .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
        });
    if !upgrade_ok || !connection_ok {
        return Err(ApiError::new(
            StatusCode::UPGRADE_REQUIRED,
            ErrorCode::UpgradeRequired,
            format!("send `Connection: Upgrade` and `Upgrade: {USB_PROTOCOL}`"),
        ));
    }
    let claim = match h.get(DEVICE_HEADER) {
        None => DeviceIdentity::unspecified(),
        Some(v) => {
            let text = v
                .to_str()
                .map_err(|_| ApiError::bad_request("X-Airlock-Device is not text"))?;
            airlock_pool::relay::parse_claim(text)
                .map_err(|e| ApiError::bad_request(format!("X-Airlock-Device: {e}")))?
        }
    };
    let stream = st.pool.open_usb(&id, &terminal, &claim).await?;
    let on_upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        match on_upgrade.await {
            Ok(upgraded) => stream.run(hyper_util::rt::TokioIo::new(upgraded)).await,
            Err(e) => {
                tracing::warn!(error = %e, "USB stream upgrade failed");
                // Run against a closed pipe so the stream is closed and audited.
                let (closed, _) = tokio::io::duplex(64);
                stream.run(closed).await;
            }
        }
    });
    Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(header::CONNECTION, "Upgrade")
        .header(header::UPGRADE, USB_PROTOCOL)
        .body(axum::body::Body::empty())
        .map_err(|e| {
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                ErrorCode::Internal,
                e.to_string(),
            )
        })
}

async fn heartbeat(
    State(st): State<AppState>,
    TerminalAuth(terminal): TerminalAuth,
    Id(id): Id<LeaseId>,
) -> Result<Json<HeartbeatReply>, ApiError> {
    let expires_at = st.pool.heartbeat(&id, &terminal)?;
    Ok(Json(HeartbeatReply {
        lease_id: id,
        expires_at,
    }))
}

/// `POST /v1/leases/{id}/usb/refused`: the control requests the lease holder's drive
/// forwarder refused; summed per lease and audited once (`usb_control_refused`) after the
/// lease ended.
async fn usb_refused(
    State(st): State<AppState>,
    TerminalAuth(terminal): TerminalAuth,
    Id(id): Id<LeaseId>,
    ApiJson(report): ApiJson<UsbRefusedReport>,
) -> Result<StatusCode, ApiError> {
    report
        .check()
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    st.pool.usb_refused(&id, &terminal, &report)?;
    Ok(StatusCode::ACCEPTED)
}

async fn release(
    State(st): State<AppState>,
    TerminalAuth(terminal): TerminalAuth,
    Id(id): Id<LeaseId>,
) -> Result<Response, ApiError> {
    let desktop = st.pool.release(&id, &terminal).await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(ReleaseReply {
            lease_id: id,
            desktop_id: desktop,
            state: DesktopState::Resetting,
        }),
    )
        .into_response())
}

async fn desktops(State(st): State<AppState>, _a: AdminAuth) -> Result<Response, ApiError> {
    let d = st.pool.desktops()?;
    let status = st.pool.status()?;
    Ok(
        Json(json!({"desktops": d, "accel": status.accel, "reset_method": status.reset_method}))
            .into_response(),
    )
}

async fn repair(
    State(st): State<AppState>,
    _a: AdminAuth,
    Id(id): Id<DesktopId>,
) -> Result<Response, ApiError> {
    st.pool.repair(&id).await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({"desktop_id": id, "state": "resetting"})),
    )
        .into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AuditQuery {
    limit: Option<usize>,
}

async fn audit(
    State(st): State<AppState>,
    _a: AdminAuth,
    q: Result<Query<AuditQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(q) = q.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let limit = q.limit.unwrap_or(100).clamp(1, 10_000);
    let records = st.pool.audit_tail(limit)?;
    Ok(Json(json!({ "records": records })).into_response())
}

async fn audit_verify(State(st): State<AppState>, _a: AdminAuth) -> Result<Response, ApiError> {
    let r = st.pool.verify_audit()?;
    // The anchor this broker wrote last (the whole file is checked at start and by
    // `airlockd audit verify`).
    // The anchor this broker wrote last is looked up now; the whole file was checked at
    // start (`airlockd audit verify` checks it all again).
    let anchor = match st.anchor.latest() {
        None => Value::Null,
        Some(a) => {
            let check = st.pool.check_anchor(&a)?;
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
    Ok(Json(json!({
        "intact": r.is_intact(),
        "records": r.records,
        "head": r.head,
        "first_broken": r.first_broken.map(|(seq, why)| json!({"seq": seq, "why": why})),
        "anchor": anchor,
    }))
    .into_response())
}

async fn healthz(State(st): State<AppState>) -> Result<Response, ApiError> {
    let mut s = st.pool.status()?;
    s.problems.extend(st.anchor.problem_at_start());
    let usable = s.counts.clean + s.counts.leased > 0;
    let code = if usable {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let status = match (usable, s.problems.is_empty()) {
        (true, true) => "ok",
        (true, false) => "degraded",
        (false, _) if s.counts.starting > 0 && s.problems.is_empty() => "starting",
        (false, _) => "unavailable",
    };
    Ok((
        code,
        Json(json!({
            "status": status,
            "problems": s.problems,
            "desktops": s.counts,
            "accel": s.accel,
            "reset_method": s.reset_method,
            "template": s.template,
            "qemu": s.qemu,
        })),
    )
        .into_response())
}

async fn metrics(State(st): State<AppState>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        st.pool.render_metrics(),
    )
        .into_response()
}

async fn console() -> Html<&'static str> {
    Html(include_str!("console.html"))
}

async fn not_found() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        ErrorCode::NotFound,
        "no such endpoint; see docs/api.md",
    )
}

/// The API router.
pub fn router(state: AppState) -> Router {
    let limit = state.config.max_body_bytes;
    Router::new()
        .route("/v1/leases", post(create_lease))
        .route("/v1/leases/{id}/heartbeat", post(heartbeat))
        .route("/v1/leases/{id}", delete(release))
        .route("/v1/leases/{id}/usb", get(usb_stream))
        .route("/v1/leases/{id}/usb/refused", post(usb_refused))
        .route("/v1/queue/{id}", post(poll_ticket).delete(leave_queue))
        .route("/v1/alerts", post(alert))
        .route("/v1/desktops", get(desktops))
        .route("/v1/desktops/{id}/repair", post(repair))
        .route("/v1/audit", get(audit))
        .route("/v1/audit/verify", get(audit_verify))
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .route("/", get(console))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(limit))
        .layer(axum::middleware::from_fn_with_state(
            limit,
            reject_declared_oversize,
        ))
        .with_state(state)
}

/// Answers 413 at once to a request whose `Content-Length` is over the limit, before any
/// of its body is read (bodies without a length are cut by [`DefaultBodyLimit`]). The
/// client learns why even while it is still sending, instead of a reset connection.
async fn reject_declared_oversize(
    State(limit): State<usize>,
    req: Request,
    next: axum::middleware::Next,
) -> Response {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    match declared {
        Some(n) if n > limit as u64 => {
            let mut resp = ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                ErrorCode::PayloadTooLarge,
                format!("request body is too large ({n} bytes; at most {limit})"),
            )
            .into_response();
            resp.headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
            resp
        }
        _ => next.run(req).await,
    }
}
