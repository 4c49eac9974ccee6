//! What a running session reports: peer, phase, counters, and how it ended.

use std::fmt;

/// The peer's (QEMU's `usb-redir`) hello.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerInfo {
    /// Its version string, e.g. `qemu usb-redir guest 7.2.22`.
    pub version: String,
    /// Its capability bits.
    pub caps: u32,
}

/// Transfer counters of a session.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    /// Bytes of completed IN transfers (device to desktop).
    pub bytes_to_guest: u64,
    /// Bytes of completed OUT transfers (desktop to device).
    pub bytes_from_guest: u64,
    /// Completed transfers.
    pub transfers: u64,
}

/// Where a session is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Our hello is sent; waiting for the desktop's.
    WaitingForPeer,
    /// The device is announced to the desktop.
    Attached,
    /// The desktop's USB stack selected a configuration: the drive is in use.
    Configured,
    /// The session is over.
    Ended,
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Phase::WaitingForPeer => "waiting for the desktop",
            Phase::Attached => "attached",
            Phase::Configured => "in use by the desktop",
            Phase::Ended => "ended",
        })
    }
}

/// A snapshot of a running session, published on a `watch` channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Progress {
    /// Phase.
    pub phase: Phase,
    /// The desktop's hello, once received.
    pub peer: Option<PeerInfo>,
    /// Transfer counters.
    pub counters: Counters,
    /// Name of the disc in an emulated drive (`None` when empty or for a
    /// forwarded drive).
    pub medium: Option<String>,
}

impl Default for Progress {
    fn default() -> Self {
        Progress {
            phase: Phase::WaitingForPeer,
            peer: None,
            counters: Counters::default(),
            medium: None,
        }
    }
}

/// How a session ended without error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionEnd {
    /// The desktop side (QEMU or the broker) closed the stream.
    PeerClosed,
    /// We unplugged the device on request and closed the stream.
    Unplugged,
    /// The forwarded USB device was unplugged from the terminal.
    DeviceGone,
}

impl fmt::Display for SessionEnd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SessionEnd::PeerClosed => "the desktop side closed the connection",
            SessionEnd::Unplugged => "the device was unplugged on request",
            SessionEnd::DeviceGone => "the USB device was unplugged from the terminal",
        })
    }
}

/// The result of a session that ended without error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionSummary {
    /// Why it ended.
    pub end: SessionEnd,
    /// The desktop's hello, if it came.
    pub peer: Option<PeerInfo>,
    /// Final counters.
    pub counters: Counters,
}

/// Formats a byte count for people (`12.3 MiB`).
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_bytes_formats() {
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(1023), "1023 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(168_812_544), "161.0 MiB");
    }
}
