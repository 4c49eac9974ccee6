//! Airlock build tasks: the demo guest (`cargo xtask guest`), the sample
//! referral discs (`cargo xtask sample-disc`), the test terminal VM
//! (`cargo xtask terminal-guest`) and the benchmarks (`cargo xtask bench
//! broker`, `cargo xtask bench disc`). `rig` runs a broker, desktops and the
//! terminal VM for the disc benchmark and the `airlock-e2e` tests.
//!
//! Everything here runs on the developer's or CI's machine; nothing is used
//! by the broker at run time except the files these tasks produce.
#![forbid(unsafe_code)]

pub mod bench_broker;
pub mod bench_disc;
pub mod cpio;
pub mod dicom;
pub mod disc;
pub mod guest;
pub mod kmod;
pub mod rig;
pub mod terminal;
pub mod util;
