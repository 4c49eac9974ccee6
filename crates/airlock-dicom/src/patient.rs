//! The patient context is validated at every edge it enters (the terminal's
//! command line, the broker's API, the worklist's answers): it lives in
//! `airlock_core::patient`, re-exported here.
pub use airlock_core::patient::*;
