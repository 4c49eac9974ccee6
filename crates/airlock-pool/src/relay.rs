//! The USB relay: pipes one lease's usbredir stream from its terminal to its desktop's
//! `usb-redir` chardev, and nowhere else.
//!
//! The broker never interprets disc content: bulk data stays opaque bytes. It does decode
//! the usbredir framing of the terminal's stream, which lets it
//! - end a stream that is not well-formed usbredir (garbage ends that stream only),
//! - refuse any device that is not a Bulk-Only mass-storage device (a compromised terminal
//!   cannot forward a keyboard or a hub into a desktop), and
//! - audit what was attached (VID:PID from the stream, plus the terminal's description).
use airlock_core::wire::{self, DeviceIdentity};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use usbredir::{Codec, Packet, Role};

/// The largest usbredir frame the relay accepts from a terminal (QEMU combines bulk
/// transfers up to 1 MiB).
const MAX_FRAME: usize = 4 << 20;

/// Why a device description is not acceptable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("device description: {0}")]
pub struct ClaimError(pub String);

/// Parses and validates what the terminal says it forwards (the `X-Airlock-Device`
/// header, [`airlock_core::wire::DEVICE_HEADER`]), for the audit trail.
pub fn parse_claim(s: &str) -> Result<DeviceIdentity, ClaimError> {
    if s.len() > wire::MAX_DEVICE_HEADER_BYTES {
        return Err(ClaimError(wire::DeviceIdentityError::TooLong.to_string()));
    }
    let c: DeviceIdentity =
        serde_json::from_str(s).map_err(|e| ClaimError(format!("not valid JSON: {e}")))?;
    c.validate().map_err(|e| ClaimError(e.to_string()))?;
    Ok(c)
}

/// Something the monitor saw in the terminal's stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamEvent {
    /// A device was announced (after its interfaces passed the policy).
    Attached {
        vid: u16,
        pid: u16,
        class: u8,
        interfaces: Vec<(u8, u8, u8)>,
    },
    /// The device went away.
    Detached,
}

/// Why the relay ended a stream.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StreamError {
    #[error("not a valid usbredir stream: {0}")]
    Protocol(String),
    #[error("refused device: {0}")]
    Refused(String),
}

/// Watches the terminal → desktop direction of a usbredir stream (pure; no I/O).
pub struct StreamMonitor {
    up: Codec,
    registered_peer: bool,
    interfaces: Option<Vec<(u8, u8, u8)>>,
}

impl Default for StreamMonitor {
    fn default() -> Self {
        Self::new()
    }
}

impl StreamMonitor {
    /// A monitor for a new stream.
    pub fn new() -> StreamMonitor {
        let mut up = Codec::new(Role::Guest);
        up.set_max_buffered(MAX_FRAME);
        StreamMonitor {
            up,
            registered_peer: false,
            interfaces: None,
        }
    }

    /// Tells the monitor the desktop side's hello (its caps shape the terminal's packets).
    pub fn desktop_hello(&mut self, hello: &usbredir::Hello) -> Result<(), StreamError> {
        if !self.registered_peer {
            self.up
                .encode(0, &Packet::Hello(hello.clone()))
                .map_err(|e| StreamError::Protocol(e.to_string()))?;
            self.registered_peer = true;
        }
        Ok(())
    }

    /// Whether the desktop's hello is known.
    pub fn has_desktop_hello(&self) -> bool {
        self.registered_peer
    }

    /// Feeds bytes from the terminal; returns what they announce.
    pub fn from_terminal(&mut self, bytes: &[u8]) -> Result<Vec<StreamEvent>, StreamError> {
        self.up
            .feed(bytes)
            .map_err(|e| StreamError::Protocol(e.to_string()))?;
        self.drain()
    }

    /// Decodes buffered frames. Stops (without error) at a non-hello frame while the
    /// desktop's hello is still unknown.
    pub fn drain(&mut self) -> Result<Vec<StreamEvent>, StreamError> {
        let mut events = Vec::new();
        loop {
            if self.up.peer_caps().is_some() && !self.registered_peer {
                break;
            }
            let frame = match self.up.next_frame() {
                Ok(Some(f)) => f,
                Ok(None) => break,
                Err(e) => return Err(StreamError::Protocol(e.to_string())),
            };
            match frame.packet {
                Packet::InterfaceInfo(info) => {
                    let list: Vec<(u8, u8, u8)> = info
                        .interfaces
                        .iter()
                        .map(|i| (i.class, i.subclass, i.protocol))
                        .collect();
                    check_interfaces(&list)?;
                    self.interfaces = Some(list);
                }
                Packet::DeviceConnect(d) => {
                    let Some(interfaces) = self.interfaces.clone() else {
                        return Err(StreamError::Refused(
                            "device announced without its interfaces".into(),
                        ));
                    };
                    if d.device_class != 0x00 && d.device_class != 0x08 {
                        return Err(StreamError::Refused(format!(
                            "device class 0x{:02x} is not mass storage",
                            d.device_class
                        )));
                    }
                    events.push(StreamEvent::Attached {
                        vid: d.vendor_id,
                        pid: d.product_id,
                        class: d.device_class,
                        interfaces,
                    });
                }
                Packet::DeviceDisconnect => events.push(StreamEvent::Detached),
                _ => {}
            }
        }
        Ok(events)
    }
}

/// The policy: every interface of a forwarded device must be mass storage, either
/// Bulk-Only (class 0x08, subclass 0x02 ATAPI / 0x05 SFF-8070i / 0x06 SCSI, protocol
/// 0x50) or USB Attached SCSI (08:06:62, the emulated drive's SuperSpeed alternate
/// setting). It is checked on every `interface_info`, so also after an alternate
/// setting changes.
/// Whether it is a CD/DVD drive (peripheral type 0x05) the terminal checks by INQUIRY
/// before forwarding; the guard on the terminal keeps local drivers off it.
pub fn check_interfaces(list: &[(u8, u8, u8)]) -> Result<(), StreamError> {
    if list.is_empty() {
        return Err(StreamError::Refused("device has no interfaces".into()));
    }
    for (n, (class, sub, proto)) in list.iter().enumerate() {
        // Bulk-Only (0x50) with the MMC/SFF-8070i/SCSI command sets, or USB
        // Attached SCSI (0x62, SCSI only): both carry SCSI commands to the drive
        // and nothing else (no HID, network or audio function).
        let bot = matches!(sub, 0x02 | 0x05 | 0x06) && *proto == 0x50;
        let uas = *sub == 0x06 && *proto == 0x62;
        if *class != 0x08 || !(bot || uas) {
            return Err(StreamError::Refused(format!(
                "interface {n} is class {class:02x}:{sub:02x}:{proto:02x}; only mass storage with Bulk-Only (08:02/05/06:50) or UAS (08:06:62) may be forwarded"
            )));
        }
    }
    Ok(())
}

/// How a relay ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RelayEnd {
    TerminalClosed,
    DesktopClosed,
    LeaseEnded,
    Error(StreamError),
    Io(String),
}

impl RelayEnd {
    /// A short name for the audit log.
    pub fn as_str(&self) -> String {
        match self {
            RelayEnd::TerminalClosed => "terminal_closed".into(),
            RelayEnd::DesktopClosed => "desktop_closed".into(),
            RelayEnd::LeaseEnded => "lease_ended".into(),
            RelayEnd::Error(e) => format!("error: {e}"),
            RelayEnd::Io(e) => format!("io: {e}"),
        }
    }
}

/// Byte counts of a finished relay.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RelayStats {
    pub to_desktop: u64,
    pub to_terminal: u64,
}

/// Pipes `terminal` ⇄ `desktop` until one side closes, the monitor refuses the stream,
/// or `stop` fires. `on_event` sees attach/detach events.
pub async fn pipe<T, D>(
    terminal: T,
    desktop: D,
    mut stop: tokio::sync::watch::Receiver<bool>,
    mut on_event: impl FnMut(StreamEvent) + Send,
) -> (RelayEnd, RelayStats)
where
    T: AsyncRead + AsyncWrite + Send,
    D: AsyncRead + AsyncWrite + Send,
{
    let (mut t_rd, mut t_wr) = tokio::io::split(terminal);
    let (mut d_rd, mut d_wr) = tokio::io::split(desktop);
    let (hello_tx, mut hello_rx) = tokio::sync::watch::channel::<Option<usbredir::Hello>>(None);
    let mut stats = RelayStats::default();

    let end = {
        // Desktop → terminal: decode only the desktop's hello, then copy.
        let down = async {
            let mut codec = Codec::new(Role::Host);
            codec.set_max_buffered(64 * 1024);
            let mut seen_hello = false;
            let mut buf = vec![0u8; 256 * 1024];
            let mut n_total = 0u64;
            loop {
                let n = match d_rd.read(&mut buf).await {
                    Ok(0) => return (RelayEnd::DesktopClosed, n_total),
                    Ok(n) => n,
                    Err(e) => return (RelayEnd::Io(e.to_string()), n_total),
                };
                let chunk = buf.get(..n).unwrap_or_default();
                if !seen_hello {
                    if let Err(e) = codec.feed(chunk) {
                        return (
                            RelayEnd::Io(format!("desktop sent no usbredir hello: {e}")),
                            n_total,
                        );
                    }
                    match codec.next_frame() {
                        Ok(Some(f)) => {
                            if let Packet::Hello(h) = f.packet {
                                let _ = hello_tx.send(Some(h));
                                seen_hello = true;
                            }
                        }
                        Ok(None) => {}
                        Err(e) => return (RelayEnd::Io(format!("desktop hello: {e}")), n_total),
                    }
                }
                if let Err(e) = t_wr.write_all(chunk).await {
                    return (RelayEnd::Io(e.to_string()), n_total);
                }
                n_total += n as u64;
            }
        };

        // Terminal → desktop: validate, then copy.
        let up = async {
            let mut monitor = StreamMonitor::new();
            let mut buf = vec![0u8; 256 * 1024];
            let mut n_total = 0u64;
            loop {
                let n = tokio::select! {
                    r = t_rd.read(&mut buf) => match r {
                        Ok(0) => return (RelayEnd::TerminalClosed, n_total),
                        Ok(n) => n,
                        Err(e) => return (RelayEnd::Io(e.to_string()), n_total),
                    },
                    _ = hello_rx.changed() => {
                        if let Some(h) = hello_rx.borrow().clone() {
                            if let Err(e) = monitor.desktop_hello(&h) {
                                return (RelayEnd::Error(e), n_total);
                            }
                        }
                        match monitor.drain() {
                            Ok(evs) => evs.into_iter().for_each(&mut on_event),
                            Err(e) => return (RelayEnd::Error(e), n_total),
                        }
                        continue;
                    }
                };
                let chunk = buf.get(..n).unwrap_or_default();
                if !monitor.has_desktop_hello() {
                    if let Some(h) = hello_rx.borrow().clone() {
                        if let Err(e) = monitor.desktop_hello(&h) {
                            return (RelayEnd::Error(e), n_total);
                        }
                    }
                }
                match monitor.from_terminal(chunk) {
                    Ok(evs) => evs.into_iter().for_each(&mut on_event),
                    Err(e) => return (RelayEnd::Error(e), n_total),
                }
                if let Err(e) = d_wr.write_all(chunk).await {
                    return (RelayEnd::Io(e.to_string()), n_total);
                }
                n_total += n as u64;
            }
        };

        tokio::pin!(up);
        tokio::pin!(down);
        tokio::select! {
            (end, n) = &mut up => { stats.to_desktop = n; end }
            (end, n) = &mut down => { stats.to_terminal = n; end }
            _ = stop.wait_for(|v| *v) => RelayEnd::LeaseEnded,
        }
    };
    // Close the terminal's side properly (a TLS close_notify over HTTPS), so the terminal
    // sees the end of the stream rather than a truncated connection.
    let _ = tokio::time::timeout(std::time::Duration::from_secs(2), t_wr.shutdown()).await;
    let _ = tokio::time::timeout(std::time::Duration::from_secs(2), d_wr.shutdown()).await;
    (end, stats)
}

#[cfg(test)]
mod tests {
    use super::*;
    use usbredir::{Caps, Hello};

    #[test]
    fn claims() {
        let c = parse_claim(r#"{"kind":"image","image":"disc.iso"}"#).unwrap();
        assert_eq!(c.image.as_deref(), Some("disc.iso"));
        assert!(parse_claim(r#"{"kind":"drive","vid":"0e8d","pid":"1887"}"#).is_ok());
        for bad in [
            "",
            "{}",
            r#"{"kind":"keyboard"}"#,
            r#"{"kind":"drive","vid":"xyz"}"#,
            r#"{"kind":"drive","product":"a\nb"}"#,
            r#"{"kind":"drive","extra":1}"#,
        ] {
            assert!(parse_claim(bad).is_err(), "{bad}");
        }
        assert!(parse_claim(&"x".repeat(3000)).is_err());
    }

    #[test]
    fn interface_policy() {
        assert!(check_interfaces(&[(0x08, 0x06, 0x50)]).is_ok());
        assert!(check_interfaces(&[(0x08, 0x02, 0x50)]).is_ok());
        assert!(check_interfaces(&[]).is_err());
        assert!(check_interfaces(&[(0x03, 0x01, 0x01)]).is_err(), "keyboard");
        assert!(check_interfaces(&[(0x09, 0x00, 0x00)]).is_err(), "hub");
        assert!(check_interfaces(&[(0x08, 0x06, 0x62)]).is_ok(), "UAS");
        assert!(
            check_interfaces(&[(0x08, 0x02, 0x62)]).is_err(),
            "UAS is SCSI only"
        );
        assert!(check_interfaces(&[(0x08, 0x06, 0x01)]).is_err(), "CBI");
        assert!(
            check_interfaces(&[(0x08, 0x06, 0x50), (0x03, 0x00, 0x00)]).is_err(),
            "composite with HID"
        );
    }

    #[test]
    fn garbage_is_a_protocol_error() {
        let mut m = StreamMonitor::new();
        let r = m.from_terminal(&[0xff; 64]);
        assert!(matches!(r, Err(StreamError::Protocol(_))), "{r:?}");
    }

    fn announce(class: u8, sub: u8, proto: u8) -> Result<Vec<StreamEvent>, StreamError> {
        use usbredir::host::{DeviceLayout, HostConfig, HostSession};
        use usbredir::{
            DeviceConnect, Endpoint, EndpointType, EpInfo, Interface, InterfaceInfo, Speed,
        };
        let mut host = HostSession::new(HostConfig::default());
        let mut m = StreamMonitor::new();
        let mut events = m.from_terminal(&host.take_output())?;
        let qemu = Hello::new("qemu usb-redir guest 7.2.22", Caps::from_bits(0xff));
        m.desktop_hello(&qemu)?;
        let mut guest = Codec::new(Role::Guest);
        host.feed(&guest.encode(0, &Packet::Hello(qemu)).unwrap())
            .unwrap();
        while host.next_event().unwrap().is_some() {}
        let bulk = |iface| Endpoint {
            ep_type: EndpointType::Bulk,
            interval: 0,
            interface: iface,
            max_packet_size: 512,
            max_streams: 0,
        };
        let layout = DeviceLayout {
            interfaces: InterfaceInfo {
                interfaces: vec![Interface {
                    number: 0,
                    class,
                    subclass: sub,
                    protocol: proto,
                }],
            },
            endpoints: EpInfo::new().with(0x02, bulk(0)).with(0x81, bulk(0)),
        };
        let dev = DeviceConnect {
            speed: Speed::High,
            device_class: 0,
            device_subclass: 0,
            device_protocol: 0,
            vendor_id: 0x0e8d,
            product_id: 0x1887,
            device_version_bcd: 0x0100,
        };
        host.connect_device(dev, layout).unwrap();
        events.extend(m.from_terminal(&host.take_output())?);
        host.disconnect_device().unwrap();
        events.extend(m.from_terminal(&host.take_output())?);
        Ok(events)
    }

    #[test]
    fn a_cd_drive_is_attached_and_audited() {
        let ev = announce(0x08, 0x06, 0x50).unwrap();
        assert_eq!(
            ev,
            vec![
                StreamEvent::Attached {
                    vid: 0x0e8d,
                    pid: 0x1887,
                    class: 0,
                    interfaces: vec![(8, 6, 0x50)]
                },
                StreamEvent::Detached
            ]
        );
    }

    #[test]
    fn a_keyboard_is_refused() {
        assert!(matches!(
            announce(0x03, 0x01, 0x01),
            Err(StreamError::Refused(_))
        ));
    }
}
