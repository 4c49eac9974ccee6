//! What an admin does to desktops and leases from the console: drain a desktop (its
//! lease runs to its end; it is not offered again), return it, force a reset, rebuild it
//! from the golden image, end a lease. Each action names who asked and why, and goes
//! into the audit log with both.
use super::now_ms;
use super::Pool;
use crate::error::PoolError;
use airlock_core::admin::{AdminReason, DesktopAction, Requester};
use airlock_core::{DesktopEvent, DesktopId, DesktopState, EndReason, LeaseId};
use airlock_store::{AuditEntry, StoreError};
use serde_json::json;

fn by(who: &Requester, reason: &AdminReason) -> serde_json::Value {
    json!({ "by": who.name(), "from": who.address(), "admin_reason": reason.as_str() })
}

impl Pool {
    /// Carries out `action` on desktop `id` for `who`, audited with `reason`.
    pub async fn desktop_action(
        &self,
        id: &DesktopId,
        action: DesktopAction,
        who: &Requester,
        reason: &AdminReason,
    ) -> Result<(), PoolError> {
        let row = self.store()?.desktop(id).map_err(unknown_desktop)?;
        tracing::info!(desktop = %id, action = %action, by = %who, reason = %reason, "admin action");
        match action {
            DesktopAction::Drain | DesktopAction::Return => {
                let drained = action == DesktopAction::Drain;
                let name = if drained {
                    "desktop_drained"
                } else {
                    "desktop_returned"
                };
                let changed = self.store()?.set_drained(
                    id,
                    drained,
                    Some(reason.as_str()),
                    now_ms(),
                    AuditEntry::new(name).details(by(who, reason)),
                )?;
                if !changed {
                    return Err(PoolError::AdminNoChange {
                        desktop: id.to_string(),
                        what: if drained {
                            "it is drained already"
                        } else {
                            "it is not drained"
                        },
                    });
                }
                if !drained {
                    // A returned clean desktop can serve the head of the waiting line.
                    self.offer_clean();
                }
                Ok(())
            }
            DesktopAction::Reset | DesktopAction::Rebuild => {
                if action == DesktopAction::Rebuild {
                    if let Ok(mut s) = self.inner.stale.lock() {
                        s.insert(id.clone());
                    }
                }
                self.record_audit(
                    AuditEntry::new(if action == DesktopAction::Rebuild {
                        "rebuild_requested"
                    } else {
                        "reset_requested"
                    })
                    .desktop(id)
                    .details(by(who, reason)),
                );
                match row.state {
                    DesktopState::Leased => {
                        let active = self.store()?.active_lease_on(id)?;
                        if let Some(lease) = active {
                            self.end(&lease.id, None, EndReason::Revoked, by(who, reason))
                                .await?;
                        }
                        Ok(())
                    }
                    DesktopState::Clean => {
                        self.transition(id, DesktopEvent::Invalidate, Some("admin reset"))?;
                        self.spawn_reset(id);
                        Ok(())
                    }
                    DesktopState::Broken => self.repair(id).await,
                    DesktopState::Dirty => {
                        self.spawn_reset(id);
                        Ok(())
                    }
                    s @ (DesktopState::Starting | DesktopState::Resetting) => {
                        Err(PoolError::AdminBusy {
                            desktop: id.to_string(),
                            state: s,
                        })
                    }
                }
            }
        }
    }

    /// Appends a record to the audit log (console logins, views of the audit trail).
    pub fn audit(&self, entry: AuditEntry) -> Result<(), PoolError> {
        self.store()?.audit(now_ms(), entry)?;
        Ok(())
    }

    /// Ends lease `lease` for `who` (`revoked`, audited with `reason`); its desktop is
    /// reset.
    pub async fn end_lease_by_admin(
        &self,
        lease: &LeaseId,
        who: &Requester,
        reason: &AdminReason,
    ) -> Result<DesktopId, PoolError> {
        tracing::info!(lease = %lease, by = %who, reason = %reason, "admin ends a lease");
        self.end(lease, None, EndReason::Revoked, by(who, reason))
            .await
    }
}

fn unknown_desktop(e: StoreError) -> PoolError {
    match e {
        StoreError::UnknownDesktop(d) => PoolError::UnknownDesktop(d.to_string()),
        e => e.into(),
    }
}
