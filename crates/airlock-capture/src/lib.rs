//! Key images as pixels only (issue 14). The broker takes a desktop's screen with QMP
//! `screendump` (a PPM file QEMU writes); [`ppm`] parses it strictly, [`image`] crops it
//! to a validated rectangle and encodes a fresh PNG (nothing of QEMU's file survives
//! but the pixel values), and [`store`] keeps each capture under its lease with its
//! sha256 until its retention time has passed. Pure except [`store`].
#![forbid(unsafe_code)]

pub mod image;
pub mod ppm;
pub mod store;

pub use image::{ImageError, Rect, RgbImage};
pub use ppm::PpmError;
pub use store::{CaptureId, CaptureMeta, CaptureStore, StoreError};
