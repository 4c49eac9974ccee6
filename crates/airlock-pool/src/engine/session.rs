//! The ends of a session the broker sees itself, from each desktop's QMP events:
//! - the guest powered itself off (the clinician's "Finish", or a desktop image whose
//!   sign-out shuts down): QEMU runs with `-no-shutdown`, so the process stays and the
//!   `SHUTDOWN` event ends the lease `signed_out`;
//! - the display client left (`SPICE_DISCONNECTED` / `VNC_DISCONNECTED` and no client
//!   left) and did not come back within the grace time: the lease ends `display_lost`;
//!   a client that reconnects inside it keeps the session.
//!
//! Both end the lease like every other end (audited with details, display cut, USB
//! stream closed, password revoked, reset). A clean desktop whose guest powers off is
//! no longer clean: it goes `dirty` and is reset.
use super::Pool;
use crate::error::{ErrorChain, PoolError};
use airlock_core::{DesktopEvent, DesktopId, DesktopState, EndReason, LeaseId};
use airlock_qemu::session::{classify, display_client_present, SessionEvent};
use airlock_qemu::{QmpEvent, Vm};
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::broadcast::error::RecvError;
use tokio::time::Instant;

/// A leased desktop's display client is away: since when, and until when it may return.
struct Away {
    lease: LeaseId,
    since: Instant,
    until: Instant,
}

impl Pool {
    /// Follows the events of one registered QEMU process until its monitor closes.
    pub(super) async fn watch_session(
        self,
        id: DesktopId,
        vm: Arc<Vm>,
        generation: u64,
        mut events: tokio::sync::broadcast::Receiver<QmpEvent>,
    ) {
        let display = self.inner.cfg.display.as_ref();
        let protocol = display.map(|d| d.protocol);
        let grace = display.map_or(Duration::ZERO, |d| d.grace);
        // Whether a display client is connected, and the grace timer while one is away.
        let mut connected = false;
        // Since when, for the audit record of the disconnect.
        let mut connected_at: Option<Instant> = None;
        let mut away: Option<Away> = None;
        loop {
            let until = away.as_ref().map(|a| a.until);
            let event = tokio::select! {
                e = events.recv() => e,
                _ = vm.qmp.closed() => return,
                _ = sleep_until(until) => {
                    if let Some(a) = away.take() {
                        self.display_lost(&id, generation, a, grace).await;
                    }
                    continue;
                }
            };
            let event = match event {
                Ok(e) => classify(&e, protocol),
                Err(RecvError::Closed) => return,
                Err(RecvError::Lagged(n)) => {
                    // Events were lost: ask QEMU for what they would have said.
                    tracing::warn!(desktop = %id, missed = n, "QMP events were missed");
                    match vm.qmp.status().await.as_deref() {
                        Ok("shutdown") => SessionEvent::GuestShutdown {
                            reason: "status shutdown (the event was missed)".into(),
                        },
                        _ => SessionEvent::DisplayConnectionClosed,
                    }
                }
            };
            match event {
                SessionEvent::GuestShutdown { reason } => {
                    let details = json!({"qmp_event": "SHUTDOWN", "reason": reason});
                    self.session_over(&id, generation, EndReason::SignedOut, details)
                        .await;
                }
                SessionEvent::DiskCapReached { written } => {
                    // Stop the guest at once: no more writes while the lease ends.
                    let _ = vm.qmp.execute("stop", None, Duration::from_secs(5)).await;
                    let cap = self.inner.cfg.driver.disk_cap_bytes.unwrap_or(0);
                    tracing::warn!(desktop = %id, cap, written, "the desktop's disk reached its cap: the guest is stopped and the session ends");
                    let details = json!({"disk_cap_bytes": cap, "written_bytes": written});
                    self.session_over(&id, generation, EndReason::Quota, details)
                        .await;
                }
                SessionEvent::DisplayConnected => {
                    if !connected {
                        connected_at = Some(Instant::now());
                        let back = away.as_ref().map(|a| a.since.elapsed().as_secs_f64());
                        self.audit_display(
                            "display_connected",
                            &id,
                            json!({"protocol": protocol.map(|p| p.as_str()), "back_after_s": back}),
                        );
                    }
                    connected = true;
                    // Operators (and `cargo xtask bench open`) see when the clinician's
                    // viewer got in: QEMU accepted its password on the main channel.
                    tracing::info!(desktop = %id, "display client connected");
                    if let Some(a) = away.take() {
                        tracing::info!(desktop = %id, lease = %a.lease,
                            away_s = a.since.elapsed().as_secs_f64(),
                            "display client back within the grace time: the session goes on");
                    }
                }
                SessionEvent::DisplayConnectionClosed if connected => {
                    let Some(protocol) = protocol else { continue };
                    // Asked only when a connection closed; an error (the process is
                    // going) counts as "still there": the death watcher handles that.
                    let present = display_client_present(&vm.qmp, protocol)
                        .await
                        .unwrap_or(true);
                    if present {
                        continue;
                    }
                    connected = false;
                    let secs = connected_at.take().map(|t| t.elapsed().as_secs_f64());
                    self.audit_display(
                        "display_disconnected",
                        &id,
                        json!({"connected_s": secs, "grace_s": grace.as_secs_f64()}),
                    );
                    if let Some(lease) = self.active_lease_id(&id) {
                        tracing::info!(desktop = %id, lease = %lease, grace_s = grace.as_secs_f64(),
                            "display client disconnected; the lease ends unless it is back within the grace time");
                        let since = Instant::now();
                        away = Some(Away {
                            lease,
                            since,
                            until: since + grace,
                        });
                    }
                }
                SessionEvent::DisplayConnectionClosed | SessionEvent::Other => {}
            }
        }
    }

    /// Audits a display client's arrival or departure on the desktop's active lease
    /// (none outside a lease).
    fn audit_display(&self, action: &str, id: &DesktopId, details: serde_json::Value) {
        if let Ok(mut s) = self.store() {
            if let Ok(Some(l)) = s.active_lease_on(id) {
                let e = airlock_store::AuditEntry::new(action)
                    .terminal(&l.terminal)
                    .user(&l.user)
                    .desktop(id)
                    .lease(&l.id)
                    .details(details);
                if let Err(e) = s.audit(super::now_ms(), e) {
                    tracing::warn!(desktop = %id, error = %e, "could not audit a display connection");
                }
            }
        }
    }

    /// The grace time passed without the display client: the lease ends `display_lost`.
    async fn display_lost(&self, id: &DesktopId, generation: u64, away: Away, grace: Duration) {
        if !self.is_current(id, generation) {
            return;
        }
        tracing::warn!(desktop = %id, lease = %away.lease, "display client did not come back within the grace time: ending the lease");
        let details = json!({
            "grace_s": grace.as_secs_f64(),
            "away_s": away.since.elapsed().as_secs_f64(),
        });
        if let Err(e) = self
            .end(&away.lease, None, EndReason::DisplayLost, details)
            .await
        {
            tracing::debug!(desktop = %id, error = %ErrorChain(&e), "lease ended meanwhile");
        }
    }

    /// The guest powered itself off (`signed_out`) or filled its disk cap (`quota`): its
    /// lease ends with `why`; a clean desktop is no longer usable and is reset.
    async fn session_over(
        &self,
        id: &DesktopId,
        generation: u64,
        why: EndReason,
        details: serde_json::Value,
    ) {
        if !self.is_current(id, generation) {
            return;
        }
        // One store lock: no lease can be granted between the look and the transition.
        let found = self.store().and_then(|mut s| {
            if let Some(l) = s.active_lease_on(id)? {
                return Ok(PoweredOff::Leased(l.id));
            }
            let state = s.desktop(id)?.state;
            if state == DesktopState::Clean {
                super::resets::transition_in(
                    &mut s,
                    id,
                    DesktopEvent::Died,
                    Some(match why {
                        EndReason::Quota => "the desktop's disk reached its cap",
                        _ => "the guest powered off",
                    }),
                    details.clone(),
                )?;
            }
            Ok(PoweredOff::NotLeased(state))
        });
        match found {
            Ok(PoweredOff::Leased(lease)) => {
                tracing::info!(desktop = %id, lease = %lease, why = %why, "the session is over: the lease ends");
                if let Err(e) = self.end(&lease, None, why, details).await {
                    tracing::debug!(desktop = %id, error = %ErrorChain(&e), "lease ended meanwhile");
                }
            }
            Ok(PoweredOff::NotLeased(DesktopState::Clean)) => {
                tracing::warn!(desktop = %id, why = %why, "a clean desktop's session is over before a lease; resetting it");
                self.spawn_reset(id);
            }
            // Starting, resetting or already dirty: the start or reset under way fails
            // its readiness check or replaces the process anyway.
            Ok(PoweredOff::NotLeased(state)) => {
                tracing::debug!(desktop = %id, state = %state, why = %why, "session over outside a lease");
            }
            Err(e) => {
                tracing::error!(desktop = %id, error = %ErrorChain(&e), why = %why, "could not record that the session is over");
            }
        }
    }

    /// At start-up: a re-attached leased desktop whose guest powered off while no broker
    /// watched; its lease ends `signed_out` (the caller resets the desktop).
    pub(super) fn signed_out_while_away(&self, id: &DesktopId) -> Result<(), PoolError> {
        let ended = self.end_lease_on(
            &mut *self.store()?,
            id,
            EndReason::SignedOut,
            json!({"qmp_status": "shutdown", "seen": "at re-attach after a broker restart"}),
        )?;
        if let Some(lease) = ended {
            tracing::info!(desktop = %id, lease = %lease, "the guest powered off while the broker was away: the lease ended, signed out");
        }
        Ok(())
    }
}

/// What a guest's power-off found.
enum PoweredOff {
    Leased(LeaseId),
    NotLeased(DesktopState),
}

/// Sleeps until `at`, or forever without one.
async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
