//! What a running session reports: peer, phase, counters, and how it ended.

use std::fmt;

use airlock_core::wire::{ControlSetup, UsbRefusedReport, MAX_REFUSED_REQUESTS};

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

/// The control requests from the desktop that the drive forwarder refused: answered
/// with a stall, never sent to the drive (see `drive::forward`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Refusals {
    /// How many were refused.
    pub count: u64,
    /// The distinct ones, the first [`MAX_REFUSED_REQUESTS`] seen.
    pub requests: Vec<ControlSetup>,
}

impl Refusals {
    /// Counts a refused request; true if it is one not seen before (and there was room
    /// to keep it).
    pub fn add(&mut self, setup: ControlSetup) -> bool {
        self.count = self.count.saturating_add(1);
        if self.requests.contains(&setup) || self.requests.len() >= MAX_REFUSED_REQUESTS {
            return false;
        }
        self.requests.push(setup);
        true
    }

    /// The report for the broker, if anything was refused.
    pub fn report(&self) -> Option<UsbRefusedReport> {
        (self.count > 0).then(|| UsbRefusedReport {
            count: self.count,
            requests: self.requests.clone(),
        })
    }
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
    /// Control requests the drive forwarder refused (always none for an emulated
    /// drive). Still readable after the session ended, however it ended.
    pub refused: Refusals,
}

impl Default for Progress {
    fn default() -> Self {
        Progress {
            phase: Phase::WaitingForPeer,
            peer: None,
            counters: Counters::default(),
            medium: None,
            refused: Refusals::default(),
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
    fn refusals_count_all_and_keep_the_first_distinct_ones() {
        let setup = |value: u16| ControlSetup {
            request_type: 0x40,
            request: 1,
            value,
            index: 0,
        };
        let mut r = Refusals::default();
        assert_eq!(r.report(), None);
        assert!(r.add(setup(0)));
        assert!(!r.add(setup(0)));
        for v in 1..100 {
            r.add(setup(v));
        }
        assert_eq!(r.count, 101);
        assert_eq!(r.requests.len(), MAX_REFUSED_REQUESTS);
        let report = r.report().unwrap();
        assert_eq!(report.check(), Ok(()));
        assert_eq!(report.count, 101);
    }

    #[test]
    fn human_bytes_formats() {
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(1023), "1023 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(168_812_544), "161.0 MiB");
    }
}
