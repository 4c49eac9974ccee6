//! Airlock's pure logic: identifiers, the desktop and lease state machines, and pool
//! policy (which desktop to hand out, how to reset, what to tell a terminal when none is
//! free). Nothing here does I/O, reads the clock or draws random numbers: callers pass
//! time and randomness in, so every rule can be tested exhaustively without a VM.
#![forbid(unsafe_code)]

/// Gives a fieldless enum its stable names: `ALL` (every value, in declaration order),
/// `as_str` (documented by the attributes given before the type), `parse` (its inverse)
/// and `Display` (as `as_str`).
macro_rules! names {
    ($(#[$doc:meta])* $t:ident { $($v:ident => $s:literal),+ $(,)? }) => {
        impl $t {
            /// Every value, in declaration order.
            pub const ALL: [$t; [$($s),+].len()] = [$($t::$v),+];

            $(#[$doc])*
            pub fn as_str(self) -> &'static str {
                match self {
                    $($t::$v => $s),+
                }
            }

            /// Parses a name given by `as_str`.
            pub fn parse(s: &str) -> Option<Self> {
                Self::ALL.into_iter().find(|v| v.as_str() == s)
            }
        }

        impl std::fmt::Display for $t {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

/// Checks that each of `all` parses back from its name and that an unknown name does not
/// parse (for enums given their names by `names!`).
#[cfg(test)]
fn assert_names_round_trip<T: Copy + PartialEq + std::fmt::Debug>(
    all: &[T],
    as_str: fn(T) -> &'static str,
    parse: fn(&str) -> Option<T>,
) {
    for &v in all {
        assert_eq!(parse(as_str(v)), Some(v));
    }
    assert_eq!(parse("nonsense"), None);
}

pub mod admin;
pub mod config_key;
pub mod cpus;
pub mod desktop;
pub mod ids;
pub mod lease;
pub mod patient;
pub mod policy;
pub mod queue;
pub mod rate;
pub mod spice;
pub mod wire;

pub use cpus::{CpuError, CpuList, CpuPlacement};
pub use desktop::{DesktopEvent, DesktopState, TransitionError};
pub use ids::{DesktopId, IdError, LeaseId, TerminalName, TicketId, UserName};
pub use lease::{Deadlines, EndReason, LeaseTiming};
pub use policy::{ResetMethod, ResetPlan};

/// Milliseconds since the Unix epoch. The core never reads the clock; callers pass it.
pub type UnixMillis = i64;
