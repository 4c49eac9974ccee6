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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_round_trip() {
        crate::assert_names_round_trip(&EndReason::ALL, EndReason::as_str, EndReason::parse);
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
