//! Terminal-side USB for Airlock.
//!
//! The terminal never reads a disc itself: it hands a USB CD/DVD drive, at
//! USB level, to a disposable desktop VM through the usbredir protocol. This
//! crate has the two device sources and the transport:
//!
//! - [`emulated`]: an emulated USB CD-ROM ([`usb_cdrom::UsbCdrom`]) backed by
//!   an ISO image, served as a usbredir *host* ([`emulated::EmulatedCd`],
//!   with a [`emulated::CdHandle`] to eject or insert discs while attached).
//!   The protocol mapping itself is the pure [`cdrom::CdromBridge`].
//! - [`drive`]: a real USB optical drive forwarded with `nusb` (usbfs):
//!   candidate discovery, the INQUIRY check that only CD/DVD devices
//!   (SCSI peripheral type 0x05) are forwarded, and the forwarder
//!   ([`drive::DriveForwarder`]). Its pure parts (descriptor parsing, CBW,
//!   INQUIRY policy) are in [`drive::descriptors`] and [`drive::probe`].
//! - [`transport`]: the stream to the broker (`GET /v1/leases/{id}/usb`
//!   upgraded to `airlock-usbredir/1`, TLS with rustls for `https`) or, for
//!   tests, straight to QEMU's usb-redir Unix socket.
//!
//! [`source`] ties them together for the CLI and the launcher: `prepare` a
//! source (drive or image), `connect` the stream, `run`.
//!
//! Both device sources run over any [`RedirStream`] and end cleanly when the
//! peer closes the stream; invalid data from the peer ends the session with
//! [`SessionError::Protocol`].
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod cdrom;
pub mod drive;
pub mod emulated;
mod error;
pub mod progress;
mod session;
pub mod source;
pub mod transport;

pub use error::{SessionError, SessionGone};
pub use progress::{Counters, PeerInfo, Phase, Progress, Refusals, SessionEnd, SessionSummary};

/// A byte stream a usbredir session runs over (TCP, TLS, an upgraded HTTP
/// connection, a Unix socket, an in-memory duplex).
pub trait RedirStream: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}

impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> RedirStream for T {}

/// A boxed [`RedirStream`], as [`transport::connect`] returns it.
pub type BoxedStream = Box<dyn RedirStream>;
