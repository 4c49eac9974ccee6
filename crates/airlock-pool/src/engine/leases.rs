//! Leases: grants a clean desktop with a fresh display password (or gives a terminal its
//! live lease of the same user back, with a new one), renews leases on heartbeats, ends
//! them (released or expired) and hands their desktops to a reset, and tells a terminal
//! that finds no free desktop when to retry (the waiting line is `queue.rs`).
use super::queue::Decision;
use super::{now_ms, random_bytes, random_password, LeaseOutcome, Pool};
use crate::error::{ErrorChain, PoolError};
use crate::metrics::{ReasonLabel, ResultLabel};
use airlock_core::policy::{median, retry_after_s};
use airlock_core::wire::{DisplayGrant, DisplayProtocol, Grant};
use airlock_core::{DesktopId, EndReason, LeaseId, TerminalName, UnixMillis, UserName};
use airlock_store::{Acquired, StoreError};
use serde_json::json;
use std::time::Instant;

impl Pool {
    /// A terminal asks for a desktop for `user`: its live lease of the same user back
    /// (re-attach: same lease and desktop, a new display password), else a lease on a
    /// clean desktop nobody in line holds, each with a new display password; when none
    /// is free, a place in line if `wait`, else [`PoolError::NoFreeDesktop`].
    pub async fn acquire(
        &self,
        terminal: &TerminalName,
        user: &UserName,
        wait: bool,
    ) -> Result<LeaseOutcome, PoolError> {
        let t0 = Instant::now();
        let lease_id = LeaseId::from_random(random_bytes::<16>()?);
        match self.decide(&lease_id, terminal, user, wait) {
            Ok(Decision::Lease(a)) => self.finish_grant(a, t0).await,
            Ok(Decision::Queued(standing)) => {
                self.count_acquire("queued");
                Ok(LeaseOutcome::Queued(standing))
            }
            Ok(Decision::NoneFree) => {
                self.count_acquire("no_free_desktop");
                Err(PoolError::NoFreeDesktop {
                    retry_after_s: self.retry_after_s(),
                })
            }
            Err(e @ PoolError::LeaseLimit { .. }) => {
                tracing::info!(terminal = %terminal, user = %user, "lease refused: the terminal holds as many leases as it may");
                self.count_acquire("lease_limit");
                Err(e)
            }
            Err(e) => {
                self.count_acquire("error");
                Err(e)
            }
        }
    }

    /// Sets a new display password for a lease just written (new or re-attached) and
    /// answers its grant; a lease whose display cannot be set up ends and its desktop
    /// is reset.
    pub(super) async fn finish_grant(
        &self,
        acquired: Acquired,
        t0: Instant,
    ) -> Result<LeaseOutcome, PoolError> {
        let Acquired { lease, reattached } = acquired;
        let desktop = lease.desktop.clone();
        let display = match self.grant_display(&desktop).await {
            Ok(d) => d,
            Err(e) => {
                tracing::error!(desktop = %desktop, error = %ErrorChain(&e), "could not set the display password; ending the lease");
                self.count_acquire("error");
                let ended = self.store().and_then(|mut s| {
                    Ok(s.end_lease(
                        &lease.id,
                        None,
                        EndReason::SetupFailed,
                        now_ms(),
                        json!({"error": ErrorChain(&e).to_string()}),
                    )?)
                });
                if ended.is_ok() {
                    self.count_lease_end(EndReason::SetupFailed);
                    self.cut_display(&desktop);
                    self.close_usb(&lease.id).await;
                    self.spawn_reset(&desktop);
                }
                return Err(PoolError::Setup(Box::new(e)));
            }
        };
        self.count_acquire(if reattached { "reattached" } else { "granted" });
        self.inner
            .metrics
            .acquire_seconds
            .observe(t0.elapsed().as_secs_f64());
        tracing::info!(lease = %lease.id, desktop = %desktop, terminal = %lease.terminal, user = %lease.user,
            reattached, ms = t0.elapsed().as_secs_f64() * 1000.0, "lease granted");
        let grant = Grant {
            lease_id: lease.id,
            desktop_id: desktop,
            expires_at: self.inner.timing.deadline(lease.heartbeat_at),
            heartbeat_interval_s: self.inner.timing.heartbeat_interval_s(),
            display,
        };
        Ok(if reattached {
            LeaseOutcome::Reattached(grant)
        } else {
            LeaseOutcome::Granted(grant)
        })
    }

    fn count_acquire(&self, result: &str) {
        self.inner
            .metrics
            .acquires
            .get_or_create(&ResultLabel {
                result: result.into(),
            })
            .inc();
    }

    pub(super) fn count_lease_end(&self, reason: EndReason) {
        self.inner
            .metrics
            .leases_ended
            .get_or_create(&ReasonLabel {
                reason: reason.as_str().into(),
            })
            .inc();
    }

    async fn grant_display(&self, desktop: &DesktopId) -> Result<Option<DisplayGrant>, PoolError> {
        let Some(cfg) = self.inner.cfg.display.as_ref() else {
            return Ok(None);
        };
        let (vm, spec) = self
            .running_vm(desktop)
            .ok_or_else(|| PoolError::NotRunning {
                desktop: desktop.clone(),
            })?;
        let d = spec.display.ok_or_else(|| PoolError::NoDisplay {
            desktop: desktop.clone(),
        })?;
        let password = random_password(match cfg.protocol {
            DisplayProtocol::Spice => 24,
            DisplayProtocol::Vnc => 8,
        })?;
        self.inner
            .driver
            .set_display_password(&vm, cfg.protocol, &password)
            .await
            .map_err(PoolError::DisplayPassword)?;
        Ok(Some(DisplayGrant {
            protocol: cfg.protocol,
            host: cfg.advertise_host.clone(),
            port: d.port,
            password,
            tls: cfg.tls.is_some(),
            host_subject: cfg.tls.as_ref().and_then(|t| t.host_subject.clone()),
        }))
    }

    fn retry_after_s(&self) -> u64 {
        let counts = self.counts().unwrap_or_default();
        let typical = self
            .inner
            .reset_ms
            .lock()
            .ok()
            .and_then(|v| median(&v.iter().copied().collect::<Vec<_>>()));
        retry_after_s(&counts, typical, self.inner.timing.heartbeat_interval_s())
    }

    /// Records a heartbeat; returns the lease's new expiry time.
    pub fn heartbeat(
        &self,
        lease: &LeaseId,
        terminal: &TerminalName,
    ) -> Result<UnixMillis, PoolError> {
        // The monotonic deadline decides; the store records the time and checks the
        // lease is this terminal's and active.
        let now = self.mono_ms();
        let late = self
            .inner
            .deadlines
            .lock()
            .map_err(|_| PoolError::Poisoned { what: "deadlines" })?
            .is_past(lease, now);
        if late {
            return Err(PoolError::LeaseNotFound);
        }
        let row = self
            .store()?
            .heartbeat(lease, terminal, now_ms(), i64::MAX / 4)
            .map_err(lease_error)?;
        if let Ok(mut d) = self.inner.deadlines.lock() {
            d.renew(&self.inner.timing, lease, now);
        }
        Ok(self.inner.timing.deadline(row.heartbeat_at))
    }

    /// Ends a lease at the terminal's request; the desktop's display password is revoked
    /// and the desktop reset in the background.
    pub async fn release(
        &self,
        lease: &LeaseId,
        terminal: &TerminalName,
    ) -> Result<DesktopId, PoolError> {
        self.end(lease, Some(terminal), EndReason::Released, json!({}))
            .await
    }

    /// Ends a lease for `reason` (`details` go into its audit record): cuts its display
    /// connections, closes its USB stream, revokes the display password and resets the
    /// desktop in the background.
    pub(super) async fn end(
        &self,
        lease: &LeaseId,
        terminal: Option<&TerminalName>,
        reason: EndReason,
        details: serde_json::Value,
    ) -> Result<DesktopId, PoolError> {
        let row = self
            .store()?
            .end_lease(lease, terminal, reason, now_ms(), details)
            .map_err(lease_error)?;
        self.count_lease_end(reason);
        tracing::info!(lease = %lease, desktop = %row.desktop, reason = %reason, "lease ended");
        // The lease's display connections and USB stream close before the reset.
        self.cut_display(&row.desktop);
        self.close_usb(lease).await;
        // Revoke the password at once: the reset that follows replaces the process anyway,
        // but a snapshot restore keeps it, and the reset may wait behind another operation.
        if let (Some(cfg), Some((vm, _))) = (
            self.inner.cfg.display.as_ref(),
            self.running_vm(&row.desktop),
        ) {
            if let Err(e) = self
                .inner
                .driver
                .revoke_display_password(&vm, cfg.protocol)
                .await
            {
                tracing::warn!(desktop = %row.desktop, error = %e, "could not revoke the display password (the reset will)");
            }
        }
        self.spawn_reset(&row.desktop);
        Ok(row.desktop)
    }

    /// Ends the desktop's active lease, if any, in the store alone (its process is gone,
    /// or not watched yet: nothing to cut or revoke; the caller resets the desktop).
    pub(super) fn end_lease_on(
        &self,
        store: &mut airlock_store::Store,
        id: &DesktopId,
        reason: EndReason,
        details: serde_json::Value,
    ) -> Result<Option<LeaseId>, PoolError> {
        let Some(lease) = store.active_lease_on(id)? else {
            return Ok(None);
        };
        store.end_lease(&lease.id, None, reason, now_ms(), details)?;
        self.count_lease_end(reason);
        Ok(Some(lease.id))
    }

    pub(super) async fn sweep_loop(&self) {
        let mut tick = tokio::time::interval(self.inner.cfg.sweep_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if let Err(e) = self.expire_tickets() {
                tracing::error!(error = %ErrorChain(&e), "waiting-line sweep failed");
            }
            self.flush_usb_refused(false);
            let active = match self.store().and_then(|s| Ok(s.active_leases()?)) {
                Ok(v) => v,
                Err(e) => {
                    tracing::error!(error = %ErrorChain(&e), "lease sweep failed");
                    continue;
                }
            };
            let ids: Vec<LeaseId> = active.iter().map(|l| l.id.clone()).collect();
            let now = self.mono_ms();
            let due = match self.inner.deadlines.lock() {
                Ok(mut d) => d.sweep(&self.inner.timing, &ids, now),
                Err(_) => continue,
            };
            let expired = active.into_iter().filter(|l| due.contains(&l.id));
            for lease in expired {
                tracing::warn!(lease = %lease.id, desktop = %lease.desktop, terminal = %lease.terminal,
                    "lease expired: no heartbeat; resetting its desktop");
                if let Err(e) = self
                    .end(&lease.id, None, EndReason::Expired, json!({}))
                    .await
                {
                    tracing::debug!(error = %ErrorChain(&e), "lease ended meanwhile");
                }
            }
        }
    }

    /// The active lease with this id held by this terminal, if any.
    pub fn lease_of(
        &self,
        lease: &LeaseId,
        terminal: &TerminalName,
    ) -> Result<airlock_store::LeaseRow, PoolError> {
        match self.store()?.lease(lease)? {
            Some(l) if l.ended_at.is_none() && &l.terminal == terminal => Ok(l),
            _ => Err(PoolError::LeaseNotFound),
        }
    }
}

/// A store error, with the store's "no such lease" as the pool's.
fn lease_error(e: StoreError) -> PoolError {
    match e {
        StoreError::LeaseNotFound => PoolError::LeaseNotFound,
        e => e.into(),
    }
}
