//! Airlock's pool engine: keeps a pool of always-on desktops, hands each lease a clean
//! one with a fresh display password, and resets every used desktop before anyone else
//! can have it. It joins the pure rules of `airlock-core`, the transactions of
//! `airlock-store` and the QEMU operations of `airlock-qemu`; it knows nothing of HTTP,
//! TOML or JSON APIs (that is `airlockd`).
#![forbid(unsafe_code)]

mod config;
mod display;
mod engine;
mod error;
pub mod metrics;
pub mod relay;

pub use config::{DisplayConfig, DisplayTls, PoolConfig, QueueConfig};
pub use engine::{
    DesktopView, LeaseOutcome, Pool, PoolStatus, UsbStream, USB_DEVICE_EVENTS_AUDITED,
};
pub use error::{ErrorChain, PoolError};
pub use metrics::Metrics;
