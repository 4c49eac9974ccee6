//! The desktop state machine.
//!
//! ```text
//!   starting ──ready──▶ clean ──lease──▶ leased
//!      │                  │                │ release / expire / died
//!      │ died         died│ / invalidate   ▼
//!      └───────────────▶ dirty ◀───────────┘
//!                         │ begin_reset
//!                         ▼
//!   broken ◀──failed── resetting ──ready──▶ clean
//!      │ repair (admin)   ▲
//!      └──────────────────┘
//! ```
//!
//! *Architecture invariant:* `Leased` is reachable only from `Clean`, and `Clean` only
//! from `Starting` or `Resetting` after the reset was verified. A desktop that was ever
//! leased therefore always passes through `Dirty → Resetting` before it can be handed out
//! again, and a failed reset parks it in `Broken`, outside the pool.
use serde::{Deserialize, Serialize};

/// Where a desktop is in its life cycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DesktopState {
    /// Being provisioned for the first time (template build, first boot).
    Starting,
    /// Started from the clean state and verified: the only allocatable state.
    Clean,
    /// Held by exactly one lease.
    Leased,
    /// Used (or of unknown integrity); must be reset before anyone may use it.
    Dirty,
    /// A reset is running.
    Resetting,
    /// Every reset attempt failed; out of the pool until an admin repairs it.
    Broken,
}

names! {
    /// The name used in the database, the API and metrics.
    DesktopState {
        Starting => "starting",
        Clean => "clean",
        Leased => "leased",
        Dirty => "dirty",
        Resetting => "resetting",
        Broken => "broken",
    }
}

impl DesktopState {
    /// Whether a new lease may be granted on a desktop in this state.
    pub fn is_allocatable(self) -> bool {
        self == DesktopState::Clean
    }

    /// Applies an event; returns the next state or why the event is not allowed here.
    pub fn apply(self, event: DesktopEvent) -> Result<DesktopState, TransitionError> {
        use DesktopEvent as E;
        use DesktopState as S;
        let next = match (self, event) {
            (S::Starting | S::Resetting, E::Ready) => S::Clean,
            (S::Clean, E::Lease) => S::Leased,
            (S::Leased, E::LeaseEnded) => S::Dirty,
            (S::Starting | S::Clean | S::Leased, E::Died) => S::Dirty,
            (S::Clean, E::Invalidate) => S::Dirty,
            (S::Dirty, E::BeginReset) => S::Resetting,
            (S::Starting | S::Resetting, E::ResetFailed) => S::Broken,
            (S::Broken, E::Repair) => S::Resetting,
            // A broker restart finds desktops mid-operation: whatever was running is lost,
            // so anything but clean/leased/broken must be reset from scratch.
            (S::Starting | S::Dirty | S::Resetting, E::Recover) => S::Dirty,
            (from, event) => return Err(TransitionError { from, event }),
        };
        Ok(next)
    }
}

/// Something that happened to a desktop.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DesktopEvent {
    /// It booted or was restored and its readiness probe answered.
    Ready,
    /// A lease was granted on it.
    Lease,
    /// Its lease ended (released, expired, or revoked).
    LeaseEnded,
    /// Its QEMU process died or stopped answering.
    Died,
    /// Its clean state is no longer current (e.g. the golden image changed).
    Invalidate,
    /// A reset started.
    BeginReset,
    /// Every reset attempt failed.
    ResetFailed,
    /// An admin asked to try again.
    Repair,
    /// The broker restarted and found the desktop mid-operation.
    Recover,
}

impl DesktopEvent {
    /// All events, for exhaustive tests.
    pub const ALL: [DesktopEvent; 9] = [
        DesktopEvent::Ready,
        DesktopEvent::Lease,
        DesktopEvent::LeaseEnded,
        DesktopEvent::Died,
        DesktopEvent::Invalidate,
        DesktopEvent::BeginReset,
        DesktopEvent::ResetFailed,
        DesktopEvent::Repair,
        DesktopEvent::Recover,
    ];
}

/// An event that the state machine does not allow in the current state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("desktop in state {from} cannot take event {event:?}")]
pub struct TransitionError {
    pub from: DesktopState,
    pub event: DesktopEvent,
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use DesktopEvent as E;
    use DesktopState as S;

    #[test]
    fn names_round_trip() {
        crate::assert_names_round_trip(&S::ALL, S::as_str, S::parse);
    }

    #[test]
    fn only_clean_is_allocatable() {
        for s in S::ALL {
            assert_eq!(s.is_allocatable(), s == S::Clean);
        }
    }

    #[test]
    fn leased_is_reachable_only_from_clean() {
        for s in S::ALL {
            for e in E::ALL {
                if s.apply(e) == Ok(S::Leased) {
                    assert_eq!((s, e), (S::Clean, E::Lease));
                }
            }
        }
    }

    #[test]
    fn clean_is_reachable_only_by_a_verified_start() {
        for s in S::ALL {
            for e in E::ALL {
                if s.apply(e) == Ok(S::Clean) {
                    assert_eq!(e, E::Ready);
                    assert!(matches!(s, S::Starting | S::Resetting));
                }
            }
        }
    }

    #[test]
    fn a_leased_desktop_cannot_become_clean_without_a_reset() {
        // Breadth-first search over every event sequence from Leased: any path that
        // reaches Clean must pass through Resetting.
        let mut frontier = vec![(S::Leased, false)];
        let mut seen = std::collections::HashSet::new();
        while let Some((s, passed_reset)) = frontier.pop() {
            if !seen.insert((s, passed_reset)) {
                continue;
            }
            for e in E::ALL {
                if let Ok(n) = s.apply(e) {
                    let passed = passed_reset || n == S::Resetting;
                    if n == S::Clean {
                        assert!(passed, "{s} -{e:?}-> clean without reset");
                    }
                    frontier.push((n, passed));
                }
            }
        }
    }

    #[test]
    fn broken_leaves_only_by_repair() {
        for e in E::ALL {
            match S::Broken.apply(e) {
                Ok(n) => assert_eq!((e, n), (E::Repair, S::Resetting)),
                Err(err) => assert_eq!(err.from, S::Broken),
            }
        }
    }

    #[test]
    fn typical_life_cycle() {
        let s = S::Starting.apply(E::Ready).unwrap();
        let s = s.apply(E::Lease).unwrap();
        let s = s.apply(E::LeaseEnded).unwrap();
        assert_eq!(s, S::Dirty);
        let s = s.apply(E::BeginReset).unwrap();
        assert_eq!(s.apply(E::Ready).unwrap(), S::Clean);
        assert_eq!(s.apply(E::ResetFailed).unwrap(), S::Broken);
        assert!(S::Leased.apply(E::Lease).is_err());
        assert!(S::Dirty.apply(E::Lease).is_err());
    }

    proptest! {
        #[test]
        fn random_walks_keep_invariants(events in proptest::collection::vec(0usize..9, 0..200)) {
            let mut s = S::Starting;
            let mut dirty_since_lease = false;
            for i in events {
                let e = E::ALL[i];
                if let Ok(n) = s.apply(e) {
                    if n == S::Leased { prop_assert_eq!(s, S::Clean); dirty_since_lease = true; }
                    if n == S::Resetting { dirty_since_lease = false; }
                    if n == S::Clean { prop_assert!(!dirty_since_lease); }
                    s = n;
                }
            }
        }
    }
}
