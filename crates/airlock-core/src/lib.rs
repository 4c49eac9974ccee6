//! Airlock's pure logic: identifiers, the desktop and lease state machines, and pool
//! policy (which desktop to hand out, how to reset, what to tell a terminal when none is
//! free). Nothing here does I/O, reads the clock or draws random numbers: callers pass
//! time and randomness in, so every rule can be tested exhaustively without a VM.
#![forbid(unsafe_code)]

pub mod cpus;
pub mod desktop;
pub mod ids;
pub mod lease;
pub mod policy;
pub mod wire;

pub use cpus::{CpuError, CpuList, CpuPlacement};
pub use desktop::{DesktopEvent, DesktopState, TransitionError};
pub use ids::{DesktopId, IdError, LeaseId, TerminalName, UserName};
pub use lease::{EndReason, LeaseTiming};
pub use policy::{ResetMethod, ResetPlan};

/// Milliseconds since the Unix epoch. The core never reads the clock; callers pass it.
pub type UnixMillis = i64;
