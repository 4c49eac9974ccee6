//! What key images (issue 14) need of a lease: the patient it is for, as the HIS gave it
//! (kept with the lease, set and replaced only while it is active), and its desktop's
//! screen for its holder, taken by QEMU (QMP `screendump`) and handed out only if the
//! lease was active before and after the dump, so the screen is the holder's session.
use super::{now_ms, Pool};
use crate::error::PoolError;
use airlock_core::{LeaseId, TerminalName};
use airlock_store::{AuditEntry, LeaseRow, StoreError};
use std::time::Duration;

/// The largest screendump read: a 4096 × 4096 PPM and its header.
pub const MAX_SCREENDUMP_BYTES: u64 = 4096 * 4096 * 3 + 64;

impl Pool {
    /// The screen of the desktop that `terminal` holds under `lease`, as the PPM QEMU
    /// writes (parse it strictly: it comes from the process that runs the guest), with
    /// the lease.
    pub async fn lease_screen(
        &self,
        lease: &LeaseId,
        terminal: &TerminalName,
    ) -> Result<(LeaseRow, Vec<u8>), PoolError> {
        let row = self.lease_of(lease, terminal)?;
        let (vm, _) = self
            .running_vm(&row.desktop)
            .ok_or_else(|| PoolError::NotRunning {
                desktop: row.desktop.clone(),
            })?;
        let ppm = vm
            .screendump(MAX_SCREENDUMP_BYTES, Duration::from_secs(10))
            .await?;
        // Still the same lease: the desktop was not reset (and re-leased) meanwhile.
        self.lease_of(lease, terminal)?;
        Ok((row, ppm))
    }

    /// Sets the patient of `terminal`'s active lease `lease` (`context`: the validated
    /// values as JSON), audited as `patient_context_set` with `audit_details`.
    pub fn set_lease_patient(
        &self,
        lease: &LeaseId,
        terminal: &TerminalName,
        context: &serde_json::Value,
        audit_details: serde_json::Value,
    ) -> Result<LeaseRow, PoolError> {
        let row = self.lease_of(lease, terminal)?;
        let entry = AuditEntry::new("patient_context_set")
            .terminal(terminal)
            .user(&row.user)
            .desktop(&row.desktop)
            .lease(lease)
            .details(audit_details);
        self.store()?
            .set_lease_patient(lease, context, now_ms(), entry)
            .map_err(|e| match e {
                StoreError::LeaseNotFound => PoolError::LeaseNotFound,
                e => e.into(),
            })?;
        Ok(row)
    }

    /// The patient of `terminal`'s active lease `lease`, if one was set, with the lease.
    pub fn lease_patient(
        &self,
        lease: &LeaseId,
        terminal: &TerminalName,
    ) -> Result<(LeaseRow, Option<serde_json::Value>), PoolError> {
        let row = self.lease_of(lease, terminal)?;
        let context = self.store()?.lease_patient(lease)?;
        Ok((row, context))
    }
}
