//! The control requests a terminal's drive forwarder refused (vendor requests, DFU, …:
//! what a disc running in the desktop sent to re-flash or reconfigure the drive): the
//! terminal reports them when a forward of a lease ends; the broker sums every report of
//! the lease in memory and writes **one** `usb_control_refused` audit record per lease,
//! [`REPORT_GRACE_MS`] after the lease ended (a terminal reports the forward that the
//! lease's end closed just after it), or when the broker stops. A report for a lease that
//! ended longer ago is refused, so no lease ever gets a second record and a terminal
//! cannot flood the audit log.
use super::{now_ms, Pool};
use crate::error::PoolError;
use airlock_core::wire::{
    ControlSetup, UsbRefusedReport, MAX_REFUSED_REQUESTS, USB_REFUSED_GRACE_MS as REPORT_GRACE_MS,
};
use airlock_core::{LeaseId, TerminalName, UnixMillis};
use airlock_store::AuditEntry;
use serde_json::json;
use std::collections::HashMap;

/// What the reports of one lease add up to so far.
#[derive(Debug, Default)]
pub(super) struct Pending {
    count: u64,
    requests: Vec<ControlSetup>,
    reports: u64,
}

impl Pending {
    fn merge(&mut self, report: &UsbRefusedReport) {
        self.count = self.count.saturating_add(report.count);
        self.reports += 1;
        for r in &report.requests {
            if self.requests.len() < MAX_REFUSED_REQUESTS && !self.requests.contains(r) {
                self.requests.push(*r);
            }
        }
    }
}

/// The leases with reports not yet written, by lease.
pub(super) type RefusedBook = std::sync::Mutex<HashMap<LeaseId, Pending>>;

impl Pool {
    /// Takes `report` (already checked at the edge) of `terminal`'s `lease`, live or
    /// ended less than [`REPORT_GRACE_MS`] ago; [`PoolError::LeaseNotFound`] otherwise.
    pub fn usb_refused(
        &self,
        lease: &LeaseId,
        terminal: &TerminalName,
        report: &UsbRefusedReport,
    ) -> Result<(), PoolError> {
        let mut book = self
            .inner
            .refused
            .lock()
            .map_err(|_| PoolError::Poisoned { what: "refused" })?;
        let row = self.store()?.lease(lease)?;
        let now = now_ms();
        let row = match row {
            Some(l) if &l.terminal == terminal && reportable(l.ended_at, now) => l,
            _ => return Err(PoolError::LeaseNotFound),
        };
        tracing::warn!(lease = %lease, desktop = %row.desktop, terminal = %terminal,
            refused = report.count, first = %report.requests[0],
            "the terminal refused USB control requests of the desktop to its drive");
        book.entry(lease.clone()).or_default().merge(report);
        self.inner.metrics.count_usb_control_refused(report.count);
        Ok(())
    }

    /// Writes the record of every lease whose reports are complete (it ended
    /// [`REPORT_GRACE_MS`] ago), or of all of them (`all`: the broker stops).
    pub fn flush_usb_refused(&self, all: bool) {
        let Ok(mut book) = self.inner.refused.lock() else {
            return;
        };
        if book.is_empty() {
            return;
        }
        let now = now_ms();
        let leases: Vec<LeaseId> = book.keys().cloned().collect();
        for id in leases {
            let row = match self.store().and_then(|s| Ok(s.lease(&id)?)) {
                Ok(r) => r,
                Err(e) => {
                    tracing::warn!(lease = %id, error = %e, "cannot look up a lease to audit its refused control requests");
                    continue;
                }
            };
            let due = all || row.as_ref().is_none_or(|l| !reportable(l.ended_at, now));
            if !due {
                continue;
            }
            let Some(p) = book.remove(&id) else { continue };
            let mut entry = AuditEntry::new("usb_control_refused")
                .lease(&id)
                .details(json!({
                    "count": p.count,
                    "requests": p.requests,
                    "reports": p.reports,
                }));
            if let Some(l) = &row {
                entry = entry
                    .desktop(&l.desktop)
                    .terminal(&l.terminal)
                    .user(&l.user);
            }
            self.record_audit(entry);
        }
    }
}

/// Whether a lease that ended at `ended_at` (`None`: live) still takes reports at `now`.
fn reportable(ended_at: Option<UnixMillis>, now: UnixMillis) -> bool {
    ended_at.is_none_or(|end| now < end.saturating_add(REPORT_GRACE_MS))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_are_taken_while_the_lease_lives_and_shortly_after() {
        assert!(reportable(None, 5));
        assert!(reportable(Some(1_000), 1_000));
        assert!(reportable(Some(1_000), 1_000 + REPORT_GRACE_MS - 1));
        assert!(!reportable(Some(1_000), 1_000 + REPORT_GRACE_MS));
        assert!(reportable(Some(i64::MAX), 0));
    }

    #[test]
    fn pending_sums_reports_and_keeps_distinct_requests_bounded() {
        let setup = |value: u16| ControlSetup {
            request_type: 0x40,
            request: 1,
            value,
            index: 0,
        };
        let mut p = Pending::default();
        p.merge(&UsbRefusedReport {
            count: 5,
            requests: vec![setup(1), setup(2)],
        });
        p.merge(&UsbRefusedReport {
            count: u64::MAX,
            requests: (0..16).map(setup).collect(),
        });
        assert_eq!(p.count, u64::MAX);
        assert_eq!(p.reports, 2);
        assert_eq!(p.requests.len(), MAX_REFUSED_REQUESTS);
        assert_eq!(&p.requests[..3], &[setup(1), setup(2), setup(0)]);
    }
}
