//! The terminal guard: a terminal that can never read a disc itself.
//!
//! A disc in the terminal's USB optical drive must never get a driver, a block device, a
//! mount or a filesystem parser on the terminal; the drive still goes, at USB level, to a
//! disposable desktop (`airlock open`). This crate holds what `airlock guard` needs:
//!
//! - [`status`]: the checks of a Linux terminal (modules, `/dev/sr*`, the drive's driver
//!   and device node, the group, the udev rule, USBGuard) and the overall verdict;
//! - [`install`]: the files of the guard, written and removed all or nothing;
//! - [`modules`], [`usb`], [`usbguard`]: reading modprobe's configuration, sysfs and
//!   USBGuard's policy (parsing is pure, reading goes through a [`Root`]);
//! - [`files`]: the text of the files the guard writes;
//! - [`windows`]: the Windows terminal's policy files (device-installation restrictions,
//!   RemoteFX USB redirection, UsbDk hide rules) and their checker script; pure text.
//!
//! Every function takes a [`Root`], so the same code checks the running system, an image
//! being built (`--root DIR`) or a test's tree.
#![forbid(unsafe_code)]

pub mod files;
pub mod install;
pub mod modules;
mod root;
pub mod status;
pub mod usb;
pub mod usbguard;
pub mod windows;

pub use root::Root;
