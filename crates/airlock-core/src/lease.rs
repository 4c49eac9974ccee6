//! Lease timing and end reasons.
use crate::UnixMillis;
use serde::{Deserialize, Serialize};

/// Why a lease ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EndReason {
    /// The terminal released it.
    Released,
    /// The terminal stopped sending heartbeats.
    Expired,
    /// The desktop's QEMU process died or was lost while leased.
    DesktopLost,
    /// The lease could not be completed (e.g. the display password could not be set).
    SetupFailed,
    /// An admin ended it.
    Revoked,
    /// The display client disconnected and did not come back within the grace time.
    DisplayLost,
    /// The desktop's guest shut itself down (the clinician's "Finish" or a sign-out).
    SignedOut,
    /// The desktop's disk reached its size cap (`pool.disk_cap_mib`).
    Quota,
}

names! {
    /// The name used in the database and the audit log.
    EndReason {
        Released => "released",
        Expired => "expired",
        DesktopLost => "desktop_lost",
        SetupFailed => "setup_failed",
        Revoked => "revoked",
        DisplayLost => "display_lost",
        SignedOut => "signed_out",
        Quota => "quota",
    }
}

/// Heartbeat rules of a pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseTiming {
    /// A lease without a heartbeat for this long ends.
    pub timeout_ms: i64,
}

impl LeaseTiming {
    /// How often a terminal should send heartbeats: a third of the timeout, so two may be
    /// lost without ending the lease; at least one second.
    pub fn heartbeat_interval_s(&self) -> u64 {
        u64::try_from((self.timeout_ms / 3 / 1000).max(1)).unwrap_or(1)
    }

    /// When a lease whose last sign of life was at `last` ends.
    pub fn deadline(&self, last: UnixMillis) -> UnixMillis {
        last.saturating_add(self.timeout_ms)
    }

    /// Whether a lease whose last sign of life was at `last` has ended by `now`.
    pub fn is_expired(&self, last: UnixMillis, now: UnixMillis) -> bool {
        now >= self.deadline(last)
    }
}

/// When each active lease ends, on a monotonic clock (milliseconds since any fixed
/// origin, passed in): a wall-clock step (NTP) neither ends every lease at once nor
/// keeps an expired one alive. A lease is first seen when it is granted, or by the sweep
/// after a broker restart; each heartbeat renews it.
#[derive(Debug, Clone, Default)]
pub struct Deadlines {
    due: std::collections::HashMap<crate::LeaseId, u64>,
}

impl Deadlines {
    /// Whether `lease`'s time was up at monotonic time `now` (a heartbeat then is too
    /// late: the lease ends). A lease not seen yet is not.
    pub fn is_past(&self, lease: &crate::LeaseId, now: u64) -> bool {
        self.due.get(lease).is_some_and(|&due| now >= due)
    }

    /// Renews `lease` at monotonic time `now` (a heartbeat the store accepted).
    pub fn renew(&mut self, timing: &LeaseTiming, lease: &crate::LeaseId, now: u64) {
        let timeout = u64::try_from(timing.timeout_ms).unwrap_or(0);
        self.due.insert(lease.clone(), now.saturating_add(timeout));
    }

    /// The sweep: `active` are the leases the database holds active. Leases seen for the
    /// first time get a full timeout from `now`; the ones no longer active are forgotten;
    /// returns those whose time is up.
    pub fn sweep(
        &mut self,
        timing: &LeaseTiming,
        active: &[crate::LeaseId],
        now: u64,
    ) -> Vec<crate::LeaseId> {
        let timeout = u64::try_from(timing.timeout_ms).unwrap_or(0);
        self.due.retain(|l, _| active.contains(l));
        let mut expired = Vec::new();
        for l in active {
            let due = *self
                .due
                .entry(l.clone())
                .or_insert_with(|| now.saturating_add(timeout));
            if now >= due {
                expired.push(l.clone());
            }
        }
        expired
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_round_trip() {
        crate::assert_names_round_trip(&EndReason::ALL, EndReason::as_str, EndReason::parse);
    }

    #[test]
    fn deadlines_run_on_the_monotonic_clock() {
        let t = LeaseTiming { timeout_ms: 30_000 };
        let (a, b) = (
            crate::LeaseId::parse(&"a".repeat(32)).unwrap(),
            crate::LeaseId::parse(&"b".repeat(32)).unwrap(),
        );
        let mut d = Deadlines::default();
        d.renew(&t, &a, 1_000);
        // b is found by the sweep (a restart): a full timeout from then.
        assert!(d.sweep(&t, &[a.clone(), b.clone()], 10_000).is_empty());
        assert!(!d.is_past(&a, 30_999), "a heartbeat just in time");
        d.renew(&t, &a, 30_999);
        assert_eq!(
            d.sweep(&t, &[a.clone(), b.clone()], 40_000),
            vec![b.clone()]
        );
        assert!(d.is_past(&b, 40_001), "too late: the lease ends");
        assert_eq!(
            d.sweep(&t, std::slice::from_ref(&a), 61_000),
            vec![a.clone()]
        );
        // Ended leases are forgotten; a lease with no entry is not past.
        assert!(d.sweep(&t, &[], 70_000).is_empty());
        assert!(!d.is_past(&b, 70_000));
    }

    #[test]
    fn timing() {
        let t = LeaseTiming { timeout_ms: 30_000 };
        assert_eq!(t.heartbeat_interval_s(), 10);
        assert!(!t.is_expired(1_000, 30_999));
        assert!(t.is_expired(1_000, 31_000));
        assert_eq!(LeaseTiming { timeout_ms: 500 }.heartbeat_interval_s(), 1);
        assert_eq!(t.deadline(i64::MAX), i64::MAX);
    }
}
