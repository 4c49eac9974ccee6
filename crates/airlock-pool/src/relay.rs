//! The USB relay: pipes one lease's usbredir stream from its terminal to its desktop's
//! `usb-redir` chardev, and nowhere else.
//!
//! The broker never interprets disc content: bulk data stays opaque bytes. It does decode
//! the usbredir framing of both directions ([`Gate`]) and passes on only whole packets it
//! decoded, which lets it
//! - end a stream that is not well-formed usbredir (garbage ends that stream only),
//! - pass nothing but the two hellos until both are known (a terminal that sends device
//!   packets before the desktop's hello reached it is refused),
//! - refuse any device that is not a mass-storage device, by what it announces and by the
//!   descriptors it returns to the desktop ([`policy`]: a compromised terminal cannot
//!   forward a keyboard, a network adapter or a hub into a desktop), and
//! - audit what was attached (VID:PID from the stream, plus the terminal's description).
use airlock_core::wire::{self, DeviceIdentity};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use usbredir::bytes::{Bytes, BytesMut};
use usbredir::{Codec, Frame, Packet, Role};

pub mod policy;

use policy::DescriptorRequest;
pub use policy::{check_interfaces, Refusal};

/// The largest usbredir frame the relay accepts from either side (QEMU combines bulk
/// transfers up to 1 MiB).
const MAX_FRAME: usize = 4 << 20;

/// Bytes read from a side at a time.
const READ_BUF: usize = 256 * 1024;

/// Descriptor requests of the desktop whose answers may be outstanding at once (QEMU has
/// one control transfer in flight per device; a guest's usbfs a few).
pub const MAX_DESCRIPTOR_REQUESTS: usize = 64;

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

/// Something the gate saw in the terminal's stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamEvent {
    /// A device was announced (after its interfaces and endpoints passed the policy).
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
    Refused(#[from] Refusal),
    #[error("the desktop's usbredir stream: {0}")]
    Desktop(String),
}

/// What the terminal's bytes let through.
#[derive(Debug, Default)]
pub struct Passed {
    /// Whole packets, checked, for the desktop.
    pub bytes: Bytes,
    /// What they announced.
    pub events: Vec<StreamEvent>,
}

/// Both directions of one usbredir stream, decoded packet by packet (pure; no I/O).
///
/// Only whole packets that were decoded and checked pass, as the bytes they came in.
/// Before both hellos are known only the hellos pass: a terminal (a usbredir host)
/// waits for the desktop's hello before it announces anything, and QEMU sends nothing
/// but its hello before the terminal's, so anything else before both hellos ends the
/// stream. The terminal's packets are checked against [`policy`]; the desktop's
/// standard `GET_DESCRIPTOR` requests are remembered by packet id, so that the
/// terminal's answer to each is checked before the desktop sees it.
pub struct Gate {
    /// Decodes the terminal's packets; "our" hello is the desktop's.
    up: Codec,
    /// Bytes fed to `up` and not yet passed on.
    up_raw: BytesMut,
    /// Decodes the desktop's packets; "our" hello is the terminal's.
    down: Codec,
    down_raw: BytesMut,
    interfaces: Option<Vec<(u8, u8, u8)>>,
    endpoints: bool,
    requests: HashMap<u64, DescriptorRequest>,
}

impl Default for Gate {
    fn default() -> Self {
        Self::new()
    }
}

fn protocol(e: usbredir::Error) -> StreamError {
    StreamError::Protocol(e.to_string())
}

fn desktop(e: impl std::fmt::Display) -> StreamError {
    StreamError::Desktop(e.to_string())
}

/// Takes the bytes of the packets `codec` decoded since they were added to `raw`.
fn passed(raw: &mut BytesMut, codec: &Codec) -> Bytes {
    let n = raw.len().saturating_sub(codec.buffered());
    raw.split_to(n).freeze()
}

impl Gate {
    /// A gate for a new stream.
    pub fn new() -> Gate {
        let mut up = Codec::new(Role::Guest);
        up.set_max_buffered(MAX_FRAME + READ_BUF);
        let mut down = Codec::new(Role::Host);
        down.set_max_buffered(MAX_FRAME + READ_BUF);
        Gate {
            up,
            up_raw: BytesMut::new(),
            down,
            down_raw: BytesMut::new(),
            interfaces: None,
            endpoints: false,
            requests: HashMap::new(),
        }
    }

    /// Whether both hellos are known.
    pub fn hellos_known(&self) -> bool {
        self.up.hellos_exchanged()
    }

    /// Bytes from the terminal: returns the whole, checked packets among them (and
    /// before them) for the desktop, or why the stream must end.
    pub fn from_terminal(&mut self, chunk: &[u8]) -> Result<Passed, StreamError> {
        self.up.feed(chunk).map_err(protocol)?;
        self.up_raw.extend_from_slice(chunk);
        let mut events = Vec::new();
        loop {
            if self.up.peer_caps().is_some() && self.up.our_caps().is_none() {
                // The terminal said hello but has not had the desktop's: it cannot
                // know how to frame anything else.
                if self.up.buffered() > 0 {
                    return Err(Refusal::BeforeHello.into());
                }
                break;
            }
            match self.up.next_frame() {
                Ok(Some(frame)) => self.terminal_frame(frame, &mut events)?,
                Ok(None) => break,
                // A well-formed packet, but before the terminal's own hello.
                Err(usbredir::Error::HelloNotFirst(_)) => return Err(Refusal::BeforeHello.into()),
                Err(e) => return Err(protocol(e)),
            }
        }
        Ok(Passed {
            bytes: passed(&mut self.up_raw, &self.up),
            events,
        })
    }

    fn terminal_frame(
        &mut self,
        frame: Frame,
        events: &mut Vec<StreamEvent>,
    ) -> Result<(), StreamError> {
        match frame.packet {
            Packet::Hello(h) => {
                self.down.encode(0, &Packet::Hello(h)).map_err(protocol)?;
            }
            Packet::InterfaceInfo(info) => {
                let list: Vec<(u8, u8, u8)> = info
                    .interfaces
                    .iter()
                    .map(|i| (i.class, i.subclass, i.protocol))
                    .collect();
                policy::check_interfaces(&list)?;
                self.interfaces = Some(list);
            }
            Packet::EpInfo(info) => {
                policy::check_endpoints(&info)?;
                self.endpoints = true;
            }
            Packet::DeviceConnect(d) => {
                let Some(interfaces) = self.interfaces.clone().filter(|_| self.endpoints) else {
                    return Err(Refusal::Unannounced.into());
                };
                policy::check_device_class(d.device_class)?;
                events.push(StreamEvent::Attached {
                    vid: d.vendor_id,
                    pid: d.product_id,
                    class: d.device_class,
                    interfaces,
                });
            }
            Packet::DeviceDisconnect => {
                // A new device comes with its own interface_info and ep_info; the desktop
                // drops the transfers of this one and ignores late answers to them.
                self.interfaces = None;
                self.endpoints = false;
                self.requests.clear();
                events.push(StreamEvent::Detached);
            }
            Packet::ControlPacket(reply) => {
                if let Some(req) = self.requests.remove(&frame.id) {
                    policy::check_descriptor_reply(req, reply.status, &reply.data)?;
                }
            }
            Packet::InterruptPacket(_) | Packet::InterruptReceivingStatus(_) => {
                return Err(Refusal::Traffic("interrupt").into())
            }
            Packet::IsoPacket(_) | Packet::IsoStreamStatus(_) => {
                return Err(Refusal::Traffic("isochronous").into())
            }
            _ => {}
        }
        Ok(())
    }

    /// Bytes from the desktop: returns the whole packets among them for the terminal.
    pub fn from_desktop(&mut self, chunk: &[u8]) -> Result<Bytes, StreamError> {
        self.down.feed(chunk).map_err(desktop)?;
        self.down_raw.extend_from_slice(chunk);
        loop {
            if self.down.peer_caps().is_some() && self.down.our_caps().is_none() {
                if self.down.buffered() > 0 {
                    return Err(desktop("packets before the terminal's hello"));
                }
                break;
            }
            let Some(frame) = self.down.next_frame().map_err(desktop)? else {
                break;
            };
            match frame.packet {
                Packet::Hello(h) => {
                    self.up.encode(0, &Packet::Hello(h)).map_err(desktop)?;
                }
                Packet::ControlPacket(c) => {
                    if let Some(req) = policy::descriptor_request(&c) {
                        if self.requests.len() >= MAX_DESCRIPTOR_REQUESTS
                            && !self.requests.contains_key(&frame.id)
                        {
                            return Err(desktop(format!(
                                "more than {MAX_DESCRIPTOR_REQUESTS} descriptor requests unanswered"
                            )));
                        }
                        self.requests.insert(frame.id, req);
                    }
                }
                _ => {}
            }
        }
        Ok(passed(&mut self.down_raw, &self.down))
    }
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

/// Where a relay counts the bytes it passed, as they pass (`/metrics`).
#[derive(Debug, Clone, Default)]
pub struct ByteCounters {
    pub to_desktop: prometheus_client::metrics::counter::Counter,
    pub to_terminal: prometheus_client::metrics::counter::Counter,
}

/// Pipes `terminal` ⇄ `desktop` through a [`Gate`] until one side closes, the gate
/// refuses the stream, or `stop` fires. `on_event` sees attach/detach events; the bytes
/// passed are counted in `counters` as they pass, and returned for both directions.
pub async fn pipe<T, D>(
    terminal: T,
    desktop: D,
    mut stop: tokio::sync::watch::Receiver<bool>,
    counters: &ByteCounters,
    mut on_event: impl FnMut(StreamEvent) + Send,
) -> (RelayEnd, RelayStats)
where
    T: AsyncRead + AsyncWrite + Send,
    D: AsyncRead + AsyncWrite + Send,
{
    let (mut t_rd, mut t_wr) = tokio::io::split(terminal);
    let (mut d_rd, mut d_wr) = tokio::io::split(desktop);
    // Both directions share the gate; neither holds it across an await.
    let gate = std::sync::Mutex::new(Gate::new());
    let poisoned = || RelayEnd::Io("relay state poisoned".into());
    // Both directions' totals, kept outside their futures: whichever ends the relay, the
    // other's count is not lost.
    let (up_total, down_total) = (AtomicU64::new(0), AtomicU64::new(0));

    let end = {
        // Desktop → terminal: whole packets, descriptor requests noted.
        let down = async {
            let mut buf = vec![0u8; READ_BUF];
            loop {
                let n = match d_rd.read(&mut buf).await {
                    Ok(0) => return RelayEnd::DesktopClosed,
                    Ok(n) => n,
                    Err(e) => return RelayEnd::Io(e.to_string()),
                };
                let chunk = buf.get(..n).unwrap_or_default();
                let out = match gate.lock() {
                    Ok(mut g) => g.from_desktop(chunk),
                    Err(_) => return poisoned(),
                };
                let out = match out {
                    Ok(b) => b,
                    Err(e) => return RelayEnd::Error(e),
                };
                if let Err(e) = t_wr.write_all(&out).await {
                    return RelayEnd::Io(e.to_string());
                }
                down_total.fetch_add(out.len() as u64, Ordering::Relaxed);
                counters.to_terminal.inc_by(out.len() as u64);
            }
        };

        // Terminal → desktop: whole packets that passed the policy.
        let up = async {
            let mut buf = vec![0u8; READ_BUF];
            loop {
                let n = match t_rd.read(&mut buf).await {
                    Ok(0) => return RelayEnd::TerminalClosed,
                    Ok(n) => n,
                    Err(e) => return RelayEnd::Io(e.to_string()),
                };
                let chunk = buf.get(..n).unwrap_or_default();
                let passed = match gate.lock() {
                    Ok(mut g) => g.from_terminal(chunk),
                    Err(_) => return poisoned(),
                };
                let passed = match passed {
                    Ok(p) => p,
                    Err(e) => return RelayEnd::Error(e),
                };
                if let Err(e) = d_wr.write_all(&passed.bytes).await {
                    return RelayEnd::Io(e.to_string());
                }
                up_total.fetch_add(passed.bytes.len() as u64, Ordering::Relaxed);
                counters.to_desktop.inc_by(passed.bytes.len() as u64);
                passed.events.into_iter().for_each(&mut on_event);
            }
        };

        tokio::pin!(up);
        tokio::pin!(down);
        // The terminal first: what it sent with its request (before it could have the
        // desktop's hello) is judged before the desktop's hello is read.
        tokio::select! {
            biased;
            end = &mut up => end,
            end = &mut down => end,
            _ = stop.wait_for(|v| *v) => RelayEnd::LeaseEnded,
        }
    };
    let stats = RelayStats {
        to_desktop: up_total.load(Ordering::Relaxed),
        to_terminal: down_total.load(Ordering::Relaxed),
    };
    // Close the terminal's side properly (a TLS close_notify over HTTPS), so the terminal
    // sees the end of the stream rather than a truncated connection; the desktop's
    // usb-redir sees its chardev close and detaches the device.
    let _ = tokio::time::timeout(std::time::Duration::from_secs(2), t_wr.shutdown()).await;
    let _ = tokio::time::timeout(std::time::Duration::from_secs(2), d_wr.shutdown()).await;
    (end, stats)
}

#[cfg(test)]
mod tests {
    use super::*;
    use usbredir::guest::{GuestEvent, GuestSession};
    use usbredir::host::{DeviceLayout, HostConfig, HostEvent, HostSession};
    use usbredir::{
        Caps, DeviceConnect, Endpoint, EndpointType, EpInfo, Hello, Interface, InterfaceInfo,
        Speed, Status,
    };

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
    fn garbage_is_a_protocol_error() {
        let mut g = Gate::new();
        let r = g.from_terminal(&[0xff; 64]);
        assert!(matches!(r, Err(StreamError::Protocol(_))), "{r:?}");
    }

    /// A terminal (host session), a QEMU-like desktop (guest session) and the gate.
    struct Rig {
        host: HostSession,
        guest: GuestSession,
        gate: Gate,
        events: Vec<StreamEvent>,
        host_events: Vec<HostEvent>,
        guest_events: Vec<GuestEvent>,
    }

    impl Rig {
        fn new() -> Rig {
            Rig {
                host: HostSession::new(HostConfig::default()),
                guest: GuestSession::new("qemu usb-redir guest 7.2.22", Caps::from_bits(0xff)),
                gate: Gate::new(),
                events: Vec::new(),
                host_events: Vec::new(),
                guest_events: Vec::new(),
            }
        }

        fn desktop_to_terminal(&mut self) -> Result<(), StreamError> {
            let out = self.gate.from_desktop(&self.guest.take_output())?;
            self.host.feed(&out).unwrap();
            while let Some(e) = self.host.next_event().unwrap() {
                self.host_events.push(e);
            }
            Ok(())
        }

        fn terminal_to_desktop(&mut self) -> Result<(), StreamError> {
            let p = self.gate.from_terminal(&self.host.take_output())?;
            self.events.extend(p.events);
            self.guest.feed(&p.bytes).unwrap();
            while let Some(e) = self.guest.next_event().unwrap() {
                self.guest_events.push(e);
            }
            Ok(())
        }

        /// Hellos both ways, in the order of a real stream.
        fn hellos(&mut self) {
            self.desktop_to_terminal().unwrap();
            self.terminal_to_desktop().unwrap();
            assert!(self.gate.hellos_known());
        }
    }

    fn bulk() -> Endpoint {
        Endpoint {
            ep_type: EndpointType::Bulk,
            max_packet_size: 512,
            ..Endpoint::INVALID
        }
    }

    fn device() -> DeviceConnect {
        DeviceConnect {
            speed: Speed::High,
            device_class: 0,
            device_subclass: 0,
            device_protocol: 0,
            vendor_id: 0x0e8d,
            product_id: 0x1887,
            device_version_bcd: 0x0100,
        }
    }

    fn layout(class: u8, sub: u8, proto: u8, endpoints: EpInfo) -> DeviceLayout {
        DeviceLayout {
            interfaces: InterfaceInfo {
                interfaces: vec![Interface {
                    number: 0,
                    class,
                    subclass: sub,
                    protocol: proto,
                }],
            },
            endpoints,
        }
    }

    fn storage() -> DeviceLayout {
        layout(
            8,
            6,
            0x50,
            EpInfo::new().with(0x02, bulk()).with(0x81, bulk()),
        )
    }

    #[test]
    fn a_cd_drive_is_attached_and_audited() {
        let mut r = Rig::new();
        r.hellos();
        r.host.connect_device(device(), storage()).unwrap();
        r.terminal_to_desktop().unwrap();
        assert!(r
            .guest_events
            .iter()
            .any(|e| matches!(e, GuestEvent::DeviceConnected { .. })));
        r.host.disconnect_device().unwrap();
        r.terminal_to_desktop().unwrap();
        assert_eq!(
            r.events,
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
    fn a_keyboard_and_an_interrupt_endpoint_are_refused() {
        for l in [
            layout(3, 1, 1, EpInfo::new().with(0x81, bulk())),
            layout(
                8,
                6,
                0x50,
                EpInfo::new().with(
                    0x81,
                    Endpoint {
                        ep_type: EndpointType::Interrupt,
                        ..bulk()
                    },
                ),
            ),
        ] {
            let mut r = Rig::new();
            r.hellos();
            r.host.connect_device(device(), l).unwrap();
            assert!(matches!(
                r.terminal_to_desktop(),
                Err(StreamError::Refused(_))
            ));
            assert!(
                r.guest_events
                    .iter()
                    .all(|e| matches!(e, GuestEvent::PeerHello { .. })),
                "{:?}",
                r.guest_events
            );
        }
    }

    #[test]
    fn nothing_passes_before_both_hellos() {
        // The terminal's packets before the desktop's hello reached it.
        let mut r = Rig::new();
        let qemu = Hello::new("qemu usb-redir guest 7.2.22", Caps::from_bits(0xff));
        let mut as_qemu = Codec::new(Role::Guest);
        r.host
            .feed(&as_qemu.encode(0, &Packet::Hello(qemu)).unwrap())
            .unwrap();
        while r.host.next_event().unwrap().is_some() {}
        r.host.connect_device(device(), storage()).unwrap();
        let all = r.host.take_output();
        assert_eq!(
            r.gate.from_terminal(&all).unwrap_err(),
            StreamError::Refused(Refusal::BeforeHello)
        );
        // The same bytes one at a time: the hello passes, then nothing.
        let mut g = Gate::new();
        let mut out = 0;
        let mut refused = false;
        for b in &all {
            match g.from_terminal(std::slice::from_ref(b)) {
                Ok(p) => out += p.bytes.len(),
                Err(e) => {
                    assert_eq!(e, StreamError::Refused(Refusal::BeforeHello));
                    refused = true;
                    break;
                }
            }
        }
        assert!(refused);
        assert_eq!(out, 80, "only the terminal's hello passed");
        // Device packets before the terminal's own hello.
        let mut g = Gate::new();
        let r = g.from_terminal(all.get(80..).unwrap());
        assert_eq!(r.unwrap_err(), StreamError::Refused(Refusal::BeforeHello));
        // The desktop's packets before the terminal's hello.
        let mut g = Gate::new();
        let mut guest = GuestSession::new("qemu", Caps::from_bits(0xff));
        let hello = guest.take_output();
        assert_eq!(g.from_desktop(&hello).unwrap().len(), hello.len());
        let mut more = Codec::with_caps(Role::Guest, Caps::from_bits(0xff), Caps::HOST_DEFAULT);
        let reset = more.encode(1, &Packet::Reset).unwrap();
        assert!(matches!(
            g.from_desktop(&reset),
            Err(StreamError::Desktop(_))
        ));
    }

    fn config_with(interface: [u8; 3]) -> Vec<u8> {
        let [c, s, p] = interface;
        vec![
            9, 2, 32, 0, 1, 1, 0, 0x80, 50, // configuration
            9, 4, 0, 0, 2, c, s, p, 0, // interface
            7, 5, 0x81, 2, 0, 2, 0, // bulk IN
            7, 5, 0x02, 2, 0, 2, 0, // bulk OUT
        ]
    }

    /// The desktop reads the configuration; the terminal answers `config`.
    fn read_config(config: Vec<u8>) -> (Rig, Result<(), StreamError>) {
        let mut r = Rig::new();
        r.hellos();
        r.host.connect_device(device(), storage()).unwrap();
        r.terminal_to_desktop().unwrap();
        let id = r.guest.control_in(0x80, 6, 0x0200, 0, 255).unwrap();
        r.desktop_to_terminal().unwrap();
        let Some(HostEvent::Control(req)) = r.host_events.pop() else {
            panic!("{:?}", r.host_events)
        };
        assert_eq!(req.id, id);
        r.host
            .complete_in(req.token, Status::Success, config)
            .unwrap();
        let res = r.terminal_to_desktop();
        (r, res)
    }

    #[test]
    fn configuration_descriptors_are_checked_by_packet_id() {
        let (r, res) = read_config(config_with([8, 6, 0x50]));
        res.unwrap();
        assert!(r
            .guest_events
            .iter()
            .any(|e| matches!(e, GuestEvent::Control { .. })));
        let (r, res) = read_config(config_with([3, 1, 1]));
        assert!(
            matches!(
                &res,
                Err(StreamError::Refused(Refusal::Interface { class: 3, .. }))
            ),
            "{res:?}"
        );
        assert!(!r
            .guest_events
            .iter()
            .any(|e| matches!(e, GuestEvent::Control { .. })));
        // The same bytes in answer to another request (a string) are not a configuration.
        let mut r = Rig::new();
        r.hellos();
        r.host.connect_device(device(), storage()).unwrap();
        r.terminal_to_desktop().unwrap();
        r.guest.control_in(0x80, 6, 0x0302, 0x0409, 255).unwrap();
        r.desktop_to_terminal().unwrap();
        let Some(HostEvent::Control(req)) = r.host_events.pop() else {
            panic!()
        };
        r.host
            .complete_in(req.token, Status::Success, config_with([3, 1, 1]))
            .unwrap();
        r.terminal_to_desktop().unwrap();
    }
}
