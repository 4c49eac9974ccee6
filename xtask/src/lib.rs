//! Airlock build tasks: the demo guest (`cargo xtask guest`) and the sample
//! referral discs (`cargo xtask sample-disc`).
//!
//! Everything here runs on the developer's or CI's machine; nothing is used
//! by the broker at run time except the files these tasks produce.
#![forbid(unsafe_code)]

pub mod cpio;
pub mod dicom;
pub mod disc;
pub mod guest;
pub mod kmod;
pub mod util;
