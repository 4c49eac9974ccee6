//! The web console of the broker, for IT staff and security officers: the pool at a
//! glance (every desktop, the waiting line, the headroom and why it is short) with the
//! admin actions (drain, return, reset, rebuild, end a lease; each with a reason that
//! goes into the audit log), the sessions and the audit trail, searchable and
//! exportable, with the chain's verification status.
//!
//! Served on the broker's own listener (same TLS) under `/console`, behind a login
//! ([`login`]): a signed `HttpOnly`, `SameSite=Strict` (and `Secure` under TLS) cookie
//! with an expiry ([`session`]), a CSRF token on every form that changes anything, a
//! growing delay after failed logins ([`throttle`]), and security headers on every
//! answer (a CSP that allows no inline script, no framing, `no-store`). Pages are
//! rendered on the server and work without JavaScript; one small script of ours
//! (`/console/static/console.js`) refreshes the pool table in place. No external fonts,
//! scripts or CDNs.
//!
//! Modules: [`session`] and [`throttle`] (pure), [`login`] (accounts), `pages` (HTML),
//! `routes` (the pool and login handlers), `records` (the sessions and audit handlers),
//! `guard` (the session and CSRF checks at the edge).
#![forbid(unsafe_code)]

mod export;
mod guard;
pub mod login;
mod pages;
mod records;
mod routes;
pub mod session;
pub mod throttle;

use airlock_pool::Pool;
use airlock_store::ChainMonitor;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub use export::export_response;
pub use routes::router;

/// The console's settings (`[console]` in the broker's config).
#[derive(Debug, Clone)]
pub struct ConsoleConfig {
    /// Who may log in.
    pub credentials: login::Credentials,
    /// How long a login lasts.
    pub session_ttl: Duration,
    /// Whether cookies get `Secure` (the broker serves TLS).
    pub secure_cookies: bool,
    /// Clean desktops the pool should keep ready; fewer is shown as short.
    pub min_clean: usize,
}

/// What the console's handlers share.
#[derive(Clone)]
pub struct Console {
    inner: Arc<Inner>,
}

struct Inner {
    pool: Pool,
    cfg: ConsoleConfig,
    sessions: session::Sessions,
    throttle: Mutex<throttle::Throttle>,
    /// The origin of the throttle's clock.
    started: Instant,
    /// The audit chain's verifier (run by the broker) and its reader, which searches
    /// without the pool's store lock.
    chain: Arc<ChainMonitor>,
}

/// A console that cannot start.
#[derive(Debug, thiserror::Error)]
pub enum ConsoleError {
    #[error("cannot draw a random session key: {0}")]
    Random(#[from] getrandom::Error),
}

impl Console {
    /// A console for `pool` with `cfg`; a new session key (a broker restart logs every
    /// admin out).
    pub fn new(
        pool: Pool,
        cfg: ConsoleConfig,
        chain: Arc<ChainMonitor>,
    ) -> Result<Console, ConsoleError> {
        Ok(Console {
            inner: Arc::new(Inner {
                pool,
                cfg,
                sessions: session::Sessions::random()?,
                throttle: Mutex::new(throttle::Throttle::default()),
                started: Instant::now(),
                chain,
            }),
        })
    }

    fn now_unix(&self) -> i64 {
        now_s()
    }

    fn clock_ms(&self) -> u64 {
        u64::try_from(self.inner.started.elapsed().as_millis()).unwrap_or(u64::MAX)
    }
}

fn now_s() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}
