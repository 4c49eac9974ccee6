//! The console's checks at the edge: the session cookie on every page and action, the
//! CSRF token on every form that changes anything, the client's address, and the
//! security headers on every answer.
use crate::session::{Session, COOKIE};
use crate::Console;
use axum::extract::{ConnectInfo, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use std::net::{IpAddr, SocketAddr};

/// A logged-in admin: the session and where the request came from.
pub(crate) struct Admin {
    pub session: Session,
    pub address: Option<IpAddr>,
}

impl Admin {
    /// Who this is, for audit records and the pool's actions.
    pub fn requester(&self) -> airlock_core::admin::Requester {
        airlock_core::admin::Requester::new(format!("console:{}", self.session.name), self.address)
    }
}

/// The value of cookie `name` in the request's `Cookie` headers.
pub(crate) fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// The client's address, when the server passes it.
pub(crate) fn address(parts: &Parts) -> Option<IpAddr> {
    parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip())
}

/// The client's address, when the server passes it (an extractor that never fails).
pub(crate) struct ClientAddr(pub Option<IpAddr>);

impl<S: Send + Sync> FromRequestParts<S> for ClientAddr {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(ClientAddr(address(parts)))
    }
}

impl FromRequestParts<Console> for Admin {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, c: &Console) -> Result<Self, Response> {
        let now = c.now_unix();
        let checked = cookie(&parts.headers, COOKIE)
            .ok_or(None)
            .and_then(|v| c.inner.sessions.check(v, now).map_err(Some));
        match checked {
            Ok(session) => Ok(Admin {
                session,
                address: address(parts),
            }),
            Err(why) => {
                if let Some(e) = &why {
                    tracing::info!(error = %e, path = %parts.uri.path(), "console request refused: no valid session");
                }
                // Pages send the browser to the login; anything else is refused outright.
                if parts.method == Method::GET || parts.method == Method::HEAD {
                    Err(Redirect::to("/console/login").into_response())
                } else {
                    Err((
                        StatusCode::FORBIDDEN,
                        "no valid console session: log in at /console/login",
                    )
                        .into_response())
                }
            }
        }
    }
}

/// The refusal of a form whose CSRF token is not the session's (`None`: it is).
pub(crate) fn csrf_refused(c: &Console, admin: &Admin, token: &str) -> Option<Response> {
    if c.inner.sessions.csrf_ok(&admin.session, token) {
        None
    } else {
        tracing::warn!(by = %admin.requester(), "console form refused: wrong CSRF token");
        Some(
            (
                StatusCode::FORBIDDEN,
                "the form's security token does not match your session; reload the page and try again",
            )
                .into_response(),
        )
    }
}

/// The Content-Security-Policy: our own scripts, styles and images only, nothing inline,
/// no framing, forms only to us.
pub(crate) const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
    img-src 'self'; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; \
    base-uri 'none'";

/// Adds the security headers to every console answer.
pub(crate) async fn headers(req: Request, next: Next) -> Response {
    let mut resp = next.run(req).await;
    let h = resp.headers_mut();
    for (k, v) in [
        (header::CONTENT_SECURITY_POLICY, CSP),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::CACHE_CONTROL, "no-store"),
        (
            header::HeaderName::from_static("cross-origin-opener-policy"),
            "same-origin",
        ),
    ] {
        h.insert(k, HeaderValue::from_static(v));
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookies_are_found_among_others() {
        let mut h = HeaderMap::new();
        h.append(
            header::COOKIE,
            HeaderValue::from_static("a=1; airlock_console=xyz"),
        );
        h.append(header::COOKIE, HeaderValue::from_static("b=2"));
        assert_eq!(cookie(&h, COOKIE), Some("xyz"));
        assert_eq!(cookie(&h, "b"), Some("2"));
        assert_eq!(cookie(&h, "c"), None);
    }
}
