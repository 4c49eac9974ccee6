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
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, put};
use axum::{Json, Router};
use serde_json::json;
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
    /// The audit chain's verifier and its read-only connections (searches, exports).
    pub chain: Arc<airlock_store::ChainMonitor>,
    /// Audit forwarding to syslog, when configured (its problems go to `/healthz`).
    pub forward: Option<Arc<crate::syslog::AuditForward>>,
    /// The web console (`/console`).
    pub console: airlock_console::Console,
    /// Key images: captures, the PACS (`crate::export`).
    pub export: Arc<crate::export::Exporter>,
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
    pub(crate) fn new(status: StatusCode, code: ErrorCode, message: impl Into<String>) -> Self {
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

    /// `500 internal`: the details are in the broker log.
    pub(crate) fn internal() -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            ErrorCode::Internal,
            "internal error; the broker log has the details",
        )
    }

    /// `404 lease_not_found` for a lease id in a path.
    pub(crate) fn lease_not_found() -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            ErrorCode::LeaseNotFound,
            "no lease with that id (lease ids are 32 lower-case hex digits)",
        )
    }

    pub(crate) fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, ErrorCode::BadRequest, message)
    }

    /// `429` with `Retry-After`: `what` is asked too often.
    pub(crate) fn rate_limited(what: &str, l: Limited) -> Self {
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
        // For the refusal counter of `/metrics` ([`count_refusals`]).
        resp.extensions_mut().insert(self.code);
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
            PoolError::AdminNoChange { .. } | PoolError::AdminBusy { .. } => ApiError::new(
                StatusCode::CONFLICT,
                ErrorCode::ActionConflict,
                e.to_string(),
            ),
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
        st.pool.metrics().count_acquire_rate_limited();
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

/// The body of an admin action: why (it goes into the audit log).
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ActionBody {
    reason: String,
}

/// Who an admin API request is: the admin token, from the client's address.
fn token_requester(parts_ip: IpAddr) -> airlock_core::admin::Requester {
    airlock_core::admin::Requester::new("api:admin-token", Some(parts_ip))
}

fn admin_reason(body: &ActionBody) -> Result<airlock_core::admin::AdminReason, ApiError> {
    airlock_core::admin::AdminReason::parse(&body.reason)
        .map_err(|e| ApiError::bad_request(format!("reason: {e}")))
}

/// `POST /v1/desktops/{id}/actions/{action}`: drain, return, reset or rebuild a desktop.
async fn desktop_action(
    State(st): State<AppState>,
    _a: AdminAuth,
    ClientIp(ip): ClientIp,
    Path((id, action)): Path<(String, String)>,
    ApiJson(body): ApiJson<ActionBody>,
) -> Result<Response, ApiError> {
    let id = DesktopId::from_path(&id)?;
    let action = airlock_core::admin::DesktopAction::parse(&action).ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            ErrorCode::NotFound,
            "no such action; use drain, return, reset or rebuild",
        )
    })?;
    let reason = admin_reason(&body)?;
    st.pool
        .desktop_action(&id, action, &token_requester(ip), &reason)
        .await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({"desktop_id": id, "action": action.as_str()})),
    )
        .into_response())
}

/// `POST /v1/leases/{id}/revoke`: an admin ends a lease (`revoked`).
async fn revoke_lease(
    State(st): State<AppState>,
    _a: AdminAuth,
    ClientIp(ip): ClientIp,
    Id(lease): Id<LeaseId>,
    ApiJson(body): ApiJson<ActionBody>,
) -> Result<Response, ApiError> {
    let reason = admin_reason(&body)?;
    let desktop = st
        .pool
        .end_lease_by_admin(&lease, &token_requester(ip), &reason)
        .await?;
    Ok((
        StatusCode::OK,
        Json(json!({"lease_id": lease, "desktop_id": desktop, "end_reason": "revoked"})),
    )
        .into_response())
}

/// The client's address, as an extractor.
struct ClientIp(IpAddr);

impl<S: Send + Sync> FromRequestParts<S> for ClientIp {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        Ok(ClientIp(client_ip(parts)))
    }
}

async fn healthz(State(st): State<AppState>) -> Result<Response, ApiError> {
    let mut s = st.pool.status()?;
    s.problems.extend(st.anchor.problem_at_start());
    if let Some(b) = st.chain.status().first_broken {
        s.problems.push(format!(
            "audit chain BROKEN at record {}: {}; run `airlockd audit verify`",
            b.seq, b.why
        ));
    }
    s.problems
        .extend(st.forward.as_ref().and_then(|f| f.problem()));
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

/// A request allowed to read `/metrics`: any, unless `[metrics]` sets a token; then
/// one with that bearer token (compared in constant time; failures count against the
/// address like other wrong tokens).
pub struct MetricsAuth;

impl FromRequestParts<AppState> for MetricsAuth {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let Some(want) = state.config.metrics_token_sha256 else {
            return Ok(MetricsAuth);
        };
        authenticate(parts, state, |h| {
            bool::from(want.ct_eq(h)).then_some(MetricsAuth)
        })
        .map_err(|e| match e.status {
            StatusCode::UNAUTHORIZED => ApiError::new(
                StatusCode::UNAUTHORIZED,
                ErrorCode::Unauthorized,
                "missing or wrong bearer token; send `Authorization: Bearer <token>` with the token of [metrics] in the broker's config",
            ),
            _ => e,
        })
    }
}

/// Whether `Accept` asks for OpenMetrics (as Prometheus does, preferring it); any other
/// client gets the Prometheus text format 0.0.4.
fn wants_openmetrics(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|range| {
            let mut params = range.split(';').map(str::trim);
            let is_om = params
                .next()
                .is_some_and(|t| t.eq_ignore_ascii_case("application/openmetrics-text"));
            let refused = params.any(|p| {
                p.strip_prefix("q=")
                    .and_then(|q| q.parse::<f32>().ok())
                    .is_some_and(|q| q <= 0.0)
            });
            is_om && !refused
        })
}

/// `GET /metrics`: OpenMetrics 1.0 when the scraper asks for it, else the Prometheus
/// text format 0.0.4.
async fn metrics(State(st): State<AppState>, headers: HeaderMap, _a: MetricsAuth) -> Response {
    let openmetrics = st.pool.render_metrics();
    let (content_type, body) = if wants_openmetrics(&headers) {
        (
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            openmetrics,
        )
    } else {
        (
            "text/plain; version=0.0.4; charset=utf-8",
            airlock_pool::metrics::to_prometheus_text(&openmetrics),
        )
    };
    ([(header::CONTENT_TYPE, content_type)], body).into_response()
}

/// The route pattern a request matched (`/v1/leases/{id}`, never a concrete id), or
/// `other`.
fn route_pattern(req: &Request) -> String {
    req.extensions()
        .get::<axum::extract::MatchedPath>()
        .map_or_else(|| "other".to_owned(), |p| p.as_str().to_owned())
}

/// Counts every `429` and `503` answer (but `/healthz`'s) in `/metrics`, by route
/// pattern (never a concrete id), status and error code.
async fn count_refusals(
    State(pool): State<Pool>,
    req: Request,
    next: axum::middleware::Next,
) -> Response {
    let route = route_pattern(&req);
    let resp = next.run(req).await;
    let status = resp.status();
    // `/healthz`'s 503 reports the pool's state; it refuses nothing.
    let refused = status == StatusCode::TOO_MANY_REQUESTS
        || (status == StatusCode::SERVICE_UNAVAILABLE && route != "/healthz");
    if refused {
        let code = resp
            .extensions()
            .get::<ErrorCode>()
            .map_or("other", |c| c.as_str());
        pool.metrics().count_refused(&route, status.as_u16(), code);
    }
    resp
}

/// A request slower than this is logged as a warning (a broker under load, a slow disk).
const SLOW_REQUEST: std::time::Duration = std::time::Duration::from_secs(1);

/// Logs every answered request at debug level (method, route pattern, status, time
/// taken), and a slow one as a warning. The route pattern, never the path: paths carry
/// lease ids, and query strings carry what an officer searched for.
async fn log_request(req: Request, next: axum::middleware::Next) -> Response {
    let route = route_pattern(&req);
    let method = req.method().clone();
    let t = std::time::Instant::now();
    let resp = next.run(req).await;
    let took = t.elapsed();
    let ms = took.as_secs_f64() * 1000.0;
    let status = resp.status().as_u16();
    if took >= SLOW_REQUEST {
        tracing::warn!(%method, %route, status, ms, "slow request");
    } else {
        tracing::debug!(%method, %route, status, ms, "request");
    }
    resp
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
        .route("/v1/leases/{id}/patient", put(crate::export::set_patient))
        .route(
            "/v1/leases/{id}/captures",
            post(crate::export::take_capture),
        )
        .route(
            "/v1/leases/{id}/captures/{n}",
            get(crate::export::get_capture),
        )
        .route(
            "/v1/leases/{id}/captures/{n}/send",
            post(crate::export::send_capture),
        )
        .route("/v1/queue/{id}", post(poll_ticket).delete(leave_queue))
        .route("/v1/alerts", post(alert))
        .route("/v1/desktops", get(desktops))
        .route("/v1/desktops/{id}/repair", post(repair))
        .route("/v1/desktops/{id}/actions/{action}", post(desktop_action))
        .route("/v1/leases/{id}/revoke", post(revoke_lease))
        .merge(crate::audit_api::routes())
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .fallback(not_found)
        .layer(axum::middleware::from_fn_with_state(
            state.pool.clone(),
            count_refusals,
        ))
        .layer(DefaultBodyLimit::max(limit))
        .layer(axum::middleware::from_fn_with_state(
            limit,
            reject_declared_oversize,
        ))
        .with_state(state.clone())
        .merge(airlock_console::router(state.console))
        .layer(axum::middleware::from_fn(log_request))
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

#[cfg(test)]
mod tests {
    use super::*;

    fn accept(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::ACCEPT, HeaderValue::from_str(v).unwrap());
        h
    }

    #[test]
    fn openmetrics_only_when_asked_for() {
        // Prometheus 2.42's Accept header.
        assert!(wants_openmetrics(&accept(
            "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
        )));
        assert!(wants_openmetrics(&accept("Application/OpenMetrics-Text")));
        assert!(!wants_openmetrics(&HeaderMap::new()));
        assert!(!wants_openmetrics(&accept("*/*")));
        assert!(!wants_openmetrics(&accept("text/plain;version=0.0.4")));
        assert!(!wants_openmetrics(&accept(
            "application/openmetrics-text; q=0, text/plain"
        )));
    }
}
