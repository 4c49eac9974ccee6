//! Errors of a usbredir session (emulated or forwarded drive).

use std::io;

/// Why a usbredir session ended abnormally.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SessionError {
    /// The peer sent bytes that are not valid usbredir (or that break the
    /// protocol's rules). The session is closed.
    #[error("the desktop side sent invalid usbredir data: {0}")]
    Protocol(usbredir::Error),
    /// The host session rejected a call (a bug in the device glue).
    #[error("usbredir session error: {0}")]
    Session(usbredir::host::SessionError),
    /// The desktop's usb-redir filter refused the device.
    #[error("the desktop's USB filter rejected the device")]
    FilterRejected,
    /// Reading from or writing to the stream failed.
    #[error("connection to the desktop failed")]
    Io(#[from] io::Error),
    /// The peer closed the stream in the middle of a packet.
    #[error("the desktop side closed the connection in the middle of a usbredir packet ({0} bytes pending)")]
    Truncated(usize),
    /// The forwarded USB device failed in a way that ends the session.
    #[error("USB device error: {0}")]
    Device(String),
}

impl From<usbredir::host::SessionError> for SessionError {
    fn from(e: usbredir::host::SessionError) -> Self {
        match e {
            usbredir::host::SessionError::Protocol(p) => SessionError::Protocol(p),
            other => SessionError::Session(other),
        }
    }
}

/// A command sent to a running session through its handle could not be
/// delivered: the session has ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the USB session has ended")]
pub struct SessionGone;
