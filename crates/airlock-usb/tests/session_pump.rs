//! The async pump of the emulated drive over an in-memory stream, with a
//! guest that behaves like QEMU on the wire; and what bad peers get.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use airlock_usb::drive::probe::data_in_cbw;
use airlock_usb::emulated::EmulatedCd;
use airlock_usb::{Phase, SessionEnd, SessionError, SessionSummary};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use usb_cdrom::{Csw, CswStatus, DeviceConfig, MemoryMedium, BULK_IN_ENDPOINT, BULK_OUT_ENDPOINT};
use usbredir::guest::{GuestEvent, GuestSession};
use usbredir::{Caps, Status};

/// A QEMU-like guest on the other end of a duplex stream.
struct Guest {
    io: DuplexStream,
    g: GuestSession,
    events: Vec<GuestEvent>,
}

impl Guest {
    fn new(io: DuplexStream) -> Guest {
        Guest {
            io,
            g: GuestSession::new("qemu usb-redir guest 7.2.22", Caps::from_bits(0xFE)),
            events: Vec::new(),
        }
    }

    async fn flush(&mut self) {
        let out = self.g.take_output();
        if !out.is_empty() {
            // The host may already have closed (after an unplug).
            let _ = self.io.write_all(&out).await;
        }
    }

    /// Sends what is queued, then reads until `done` holds for the events.
    async fn until(&mut self, done: impl Fn(&[GuestEvent]) -> bool) {
        self.flush().await;
        let mut buf = vec![0u8; 65536];
        tokio::time::timeout(Duration::from_secs(5), async {
            while !done(&self.events) {
                let n = self.io.read(&mut buf).await.unwrap();
                assert!(n > 0, "host closed the stream");
                self.g.feed(&buf[..n]).unwrap();
                while let Some(ev) = self.g.next_event().unwrap() {
                    self.events.push(ev);
                }
                self.flush().await;
            }
        })
        .await
        .expect("host answered in time");
    }

    /// Sends what is queued, then reads until an event matches `want`.
    async fn until_event(&mut self, want: impl Fn(&GuestEvent) -> bool) {
        self.until(|ev| ev.iter().any(&want)).await;
    }

    fn bulk(&self, id: u64) -> Option<usbredir::BulkPacket> {
        self.events.iter().find_map(|e| match e {
            GuestEvent::Bulk { id: i, packet } if *i == id => Some(packet.clone()),
            _ => None,
        })
    }

    /// One SCSI command with up to `len` bytes of data in.
    async fn command(&mut self, tag: u32, len: u32, cdb: &[u8]) -> (Vec<u8>, Csw) {
        let cbw = data_in_cbw(tag, len, cdb);
        self.g
            .bulk_out(BULK_OUT_ENDPOINT, cbw.to_bytes().to_vec())
            .unwrap();
        let data = (len > 0).then(|| self.g.bulk_in(BULK_IN_ENDPOINT, len).unwrap());
        let csw = self.g.bulk_in(BULK_IN_ENDPOINT, 13).unwrap();
        self.until_event(|e| matches!(e, GuestEvent::Bulk { id, .. } if *id == csw))
            .await;
        let d = data
            .map(|id| self.bulk(id).unwrap().data.to_vec())
            .unwrap_or_default();
        (d, Csw::parse(&self.bulk(csw).unwrap().data).unwrap())
    }
}

/// Runs `cd` over a duplex stream of `capacity` bytes; returns the session
/// and the guest on the other end, once the drive is announced to it.
async fn serve(
    cd: EmulatedCd,
    capacity: usize,
) -> (
    tokio::task::JoinHandle<Result<SessionSummary, SessionError>>,
    Guest,
) {
    let (host_io, guest_io) = tokio::io::duplex(capacity);
    let session = tokio::spawn(cd.run(host_io));
    let mut g = Guest::new(guest_io);
    g.until_event(|e| matches!(e, GuestEvent::DeviceConnected { .. }))
        .await;
    (session, g)
}

#[tokio::test]
async fn guest_reads_and_the_handle_swaps_discs() {
    let cd = EmulatedCd::new(
        DeviceConfig::default(),
        Some(Box::new(MemoryMedium::patterned("first.iso", 64))),
    )
    .unwrap();
    let handle = cd.handle();
    let progress = handle.progress();
    assert_eq!(progress.borrow().phase, Phase::WaitingForPeer);
    assert_eq!(progress.borrow().medium.as_deref(), Some("first.iso"));
    let (session, mut g) = serve(cd, 1 << 20).await;
    g.g.reset().unwrap();
    let id = g.g.set_configuration(1).unwrap();
    g.until_event(|e| matches!(e, GuestEvent::ConfigurationStatus { id: i, .. } if *i == id))
        .await;

    // Power-on unit attention, then a read.
    let (_, csw) = g.command(1, 0, &[0; 6]).await;
    assert_eq!(csw.status, CswStatus::Failed);
    g.command(2, 18, &[0x03, 0, 0, 0, 18, 0]).await;
    let (data, csw) = g.command(3, 8192, &[0x28, 0, 0, 0, 0, 0, 0, 0, 4, 0]).await;
    assert_eq!(csw.status, CswStatus::Passed);
    assert_eq!(data.len(), 8192);
    let (cap, _) = g.command(4, 8, &[0x25, 0, 0, 0, 0, 0, 0, 0, 0, 0]).await;
    assert_eq!(u32::from_be_bytes([cap[0], cap[1], cap[2], cap[3]]), 63);

    // Eject through the handle: NOT READY / medium not present.
    assert!(handle.eject().await.unwrap());
    assert!(!handle.eject().await.unwrap(), "already empty");
    let (_, csw) = g.command(5, 0, &[0; 6]).await;
    assert_eq!(csw.status, CswStatus::Failed);
    let (sense, _) = g.command(6, 18, &[0x03, 0, 0, 0, 18, 0]).await;
    assert_eq!((sense[2] & 0xf, sense[12]), (0x02, 0x3a));

    // Insert another disc: medium changed, new capacity.
    handle
        .insert(Box::new(MemoryMedium::patterned("second.iso", 100)))
        .await
        .unwrap();
    g.command(7, 0, &[0; 6]).await;
    g.command(8, 18, &[0x03, 0, 0, 0, 18, 0]).await;
    let (cap, csw) = g.command(9, 8, &[0x25, 0, 0, 0, 0, 0, 0, 0, 0, 0]).await;
    assert_eq!(csw.status, CswStatus::Passed);
    assert_eq!(u32::from_be_bytes([cap[0], cap[1], cap[2], cap[3]]), 99);
    // A missing image is an inner error; the session goes on.
    assert!(handle
        .insert_iso("/nonexistent/disc.iso")
        .await
        .unwrap()
        .is_err());
    {
        let p = progress.borrow();
        assert_eq!(p.phase, Phase::Configured);
        assert_eq!(p.medium.as_deref(), Some("second.iso"));
        assert!(p.counters.bytes_to_guest >= 8192);
    }

    // Cancel a waiting IN request: answered as cancelled.
    let a = g.g.bulk_in(BULK_IN_ENDPOINT, 512).unwrap();
    g.flush().await;
    g.g.cancel(a).unwrap();
    g.until_event(|e| matches!(e, GuestEvent::Bulk { id, .. } if *id == a))
        .await;
    assert_eq!(g.bulk(a).unwrap().status, Status::Cancelled);

    // The guest closes the stream: a clean end.
    drop(g);
    let summary = session.await.unwrap().unwrap();
    assert_eq!(summary.end, SessionEnd::PeerClosed);
    assert!(summary.peer.unwrap().version.contains("qemu"));
    assert_eq!(progress.borrow().phase, Phase::Ended);
    assert!(
        handle.eject().await.is_err(),
        "handle reports the session gone"
    );
}

#[tokio::test]
async fn unplug_sends_device_disconnect_and_ends() {
    let cd = EmulatedCd::new(DeviceConfig::default(), None).unwrap();
    let handle = cd.handle();
    let (session, mut g) = serve(cd, 1 << 16).await;
    handle.unplug().await.unwrap();
    g.until_event(|e| matches!(e, GuestEvent::DeviceDisconnected))
        .await;
    let summary = session.await.unwrap().unwrap();
    assert_eq!(summary.end, SessionEnd::Unplugged);
}

async fn run_with_input(input: &[u8], close: bool) -> Result<SessionEnd, SessionError> {
    let (host_io, mut peer) = tokio::io::duplex(1 << 16);
    let cd = EmulatedCd::new(DeviceConfig::default(), None).unwrap();
    let session = tokio::spawn(cd.run(host_io));
    let _ = peer.write_all(input).await;
    if close {
        // EOF for the host; it may still write to us.
        let _ = peer.shutdown().await;
    }
    // Drain what the host writes so it never blocks; keep our end open.
    let drain = tokio::spawn(async move {
        let mut b = vec![0u8; 4096];
        while matches!(peer.read(&mut b).await, Ok(n) if n > 0) {}
        peer
    });
    let r = tokio::time::timeout(Duration::from_secs(5), session)
        .await
        .expect("session ended in time")
        .unwrap();
    drain.abort();
    r.map(|s| s.end)
}

fn hello(caps: u32) -> Vec<u8> {
    let mut g = GuestSession::new("garbage test", Caps::from_bits(caps));
    g.take_output()
}

#[tokio::test]
async fn garbage_ends_the_session_with_a_clear_error() {
    // Garbage instead of a hello.
    let e = run_with_input(&[0xFF; 100], false).await.unwrap_err();
    assert!(matches!(e, SessionError::Protocol(_)), "{e}");
    assert!(e.to_string().contains("invalid usbredir data"), "{e}");

    // A valid hello, then a header of an unknown packet type.
    let mut bytes = hello(0xFE);
    bytes.extend([0x55, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    let e = run_with_input(&bytes, false).await.unwrap_err();
    assert!(matches!(e, SessionError::Protocol(_)), "{e}");

    // A hello with a bad length.
    let e = run_with_input(&[0, 0, 0, 0, 3, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3], false)
        .await
        .unwrap_err();
    assert!(matches!(e, SessionError::Protocol(_)), "{e}");

    // Half a packet, then the peer closes: truncated.
    let mut bytes = hello(0xFE);
    bytes.extend([101, 0, 0]);
    let e = run_with_input(&bytes, true).await.unwrap_err();
    assert!(matches!(e, SessionError::Truncated(3)), "{e}");

    // Just a hello and close: a clean end.
    assert_eq!(
        run_with_input(&hello(0xFE), true).await.unwrap(),
        SessionEnd::PeerClosed
    );
}

#[tokio::test]
async fn random_garbage_never_hangs_or_panics() {
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    for round in 0..64 {
        let len = 1 + (round * 37) % 600;
        let mut bytes = if round % 2 == 0 {
            hello(0xFE)
        } else {
            Vec::new()
        };
        for _ in 0..len {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            bytes.push((x >> 32) as u8);
        }
        // Closing after the garbage: either a protocol error, a truncation,
        // or (if the garbage happened to be valid) a clean end.
        let r = run_with_input(&bytes, true).await;
        match r {
            Ok(SessionEnd::PeerClosed)
            | Err(SessionError::Protocol(_))
            | Err(SessionError::Truncated(_)) => {}
            other => panic!("round {round}: unexpected {other:?}"),
        }
    }
}
