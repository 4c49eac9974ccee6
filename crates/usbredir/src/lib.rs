//! The usbredir wire protocol, version 0.7, as a pure codec with no I/O.
//!
//! usbredir tunnels the traffic of one USB device between a **usb-host**
//! (which owns the device; in Airlock the terminal forwarder or the
//! emulated CD-ROM) and a **usb-guest** (QEMU's `usb-redir` device).
//!
//! Layers:
//! - [`Codec`]: typed [`Packet`]s to bytes and back for either role, with
//!   hello/capability negotiation (64-bit ids, 32-bit bulk lengths, device
//!   version, max packet size, bulk streams), every length, direction, status
//!   and capability rule of the reference parser, and a streaming decoder
//!   with a hard buffer limit. Never panics on input.
//! - [`host::HostSession`]: host-role state machine for device models
//!   (hello, device announcement, typed guest requests, replies, cancels,
//!   reset, disconnect with ack).
//! - [`guest::GuestSession`]: a small guest-role helper that acts like QEMU,
//!   for tests.
//!
//! Deviation from a naive reading of the protocol: the `status` byte of
//! data packets sent by the guest is ignored (decoded as success) because
//! QEMU leaves it uninitialised in its requests; in everything the host
//! sends, a status outside 0-6 is rejected.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod caps;
mod codec;
mod error;
pub mod guest;
pub mod host;
mod packet;
mod proto;

pub use bytes::{self, Bytes};
pub use caps::{Cap, Caps};
pub use codec::{Codec, DEFAULT_MAX_BUFFERED};
pub use error::Error;
pub use packet::*;
pub use proto::*;
