//! Host-role session: a pure state machine between the usbredir byte
//! stream and a device model (an emulated CD-ROM or a real-drive forwarder).
//!
//! The session sends our hello at once, waits for the guest's hello before
//! any device traffic, announces the device the way QEMU expects
//! (`interface_info`, `ep_info`, `device_connect`), turns guest packets into
//! typed [`HostEvent`]s, answers what needs no device (cancels, requests
//! while no device is attached, unsupported stream requests), and turns the
//! device model's completions into reply packets.

use std::collections::BTreeMap;

use bytes::Bytes;

use crate::caps::{Cap, Caps};
use crate::codec::{Codec, DEFAULT_MAX_BUFFERED};
use crate::error::Error;
use crate::packet::*;
use crate::proto::*;

/// Configuration of a [`HostSession`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostConfig {
    /// Version string of our hello (at most 63 bytes).
    pub version: String,
    /// Caps of our hello; default [`Caps::HOST_DEFAULT`] (`0x7E`).
    pub caps: Caps,
    /// Input buffer limit of the decoder.
    pub max_buffered: usize,
}

impl Default for HostConfig {
    fn default() -> Self {
        HostConfig {
            version: concat!("airlock usbredir host ", env!("CARGO_PKG_VERSION")).to_owned(),
            caps: Caps::HOST_DEFAULT,
            max_buffered: DEFAULT_MAX_BUFFERED,
        }
    }
}

/// Interfaces and endpoints of the device's active configuration and
/// alternate settings: what `interface_info` and `ep_info` announce.
///
/// The session routes transfers by these endpoint types: endpoint 0 must be
/// [`EndpointType::Control`] (as [`EpInfo::new`] sets it), and control,
/// bulk or interrupt packets to an endpoint of another type are answered
/// with `inval` without reaching the device model.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DeviceLayout {
    /// Interfaces.
    pub interfaces: InterfaceInfo,
    /// Endpoint slots.
    pub endpoints: EpInfo,
}

/// Handle of one data transfer (control, bulk or interrupt packet) handed
/// to the device model. Unlike the guest's packet id it is never reused, so a
/// late completion of a cancelled transfer cannot hit a newer one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Token(u64);

impl Token {
    /// The raw counter value (for logging).
    pub fn get(self) -> u64 {
        self.0
    }
}

/// A control transfer for the device model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControlRequest {
    /// Handle for [`HostSession::complete_in`] / [`HostSession::complete_out`].
    pub token: Token,
    /// The guest's packet id.
    pub id: u64,
    /// Endpoint address (0x00 or 0x80); decides the data direction.
    pub endpoint: u8,
    /// `bmRequestType`.
    pub request_type: u8,
    /// `bRequest`.
    pub request: u8,
    /// `wValue`.
    pub value: u16,
    /// `wIndex`.
    pub index: u16,
    /// `wLength`: bytes wanted (IN) or sent (OUT).
    pub length: u16,
    /// OUT data (empty for IN).
    pub data: Bytes,
}

impl ControlRequest {
    /// True if the guest reads (device-to-host).
    pub fn is_in(&self) -> bool {
        is_in_endpoint(self.endpoint)
    }
}

/// A bulk transfer for the device model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BulkRequest {
    /// Handle for the completion.
    pub token: Token,
    /// The guest's packet id.
    pub id: u64,
    /// Endpoint address.
    pub endpoint: u8,
    /// Bulk stream id (0 without streams).
    pub stream_id: u32,
    /// Bytes wanted (IN) or sent (OUT).
    pub length: u32,
    /// OUT data (empty for IN).
    pub data: Bytes,
}

impl BulkRequest {
    /// True if the guest reads (device-to-host).
    pub fn is_in(&self) -> bool {
        is_in_endpoint(self.endpoint)
    }
}

/// An interrupt OUT transfer for the device model (interrupt IN uses
/// interrupt receiving, which this session does not support).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InterruptRequest {
    /// Handle for [`HostSession::complete_out`].
    pub token: Token,
    /// The guest's packet id.
    pub id: u64,
    /// Endpoint address (OUT).
    pub endpoint: u8,
    /// Bytes sent.
    pub length: u16,
    /// Data.
    pub data: Bytes,
}

/// Something the device model must know or do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostEvent {
    /// The guest's hello arrived; caps are negotiated and a device given to
    /// [`HostSession::connect_device`] has been announced.
    PeerHello {
        /// The guest's version string (for logs only).
        version: String,
        /// The guest's caps.
        caps: Caps,
    },
    /// Run a control transfer, then complete it.
    Control(ControlRequest),
    /// Run a bulk transfer, then complete it.
    Bulk(BulkRequest),
    /// Run an interrupt OUT transfer, then complete it with `complete_out`.
    InterruptOut(InterruptRequest),
    /// The guest cancelled a transfer. The session has already answered it
    /// with status `cancelled`; stop working on it. Completing it later is
    /// harmless ([`Completion::Discarded`]).
    Cancelled {
        /// The cancelled transfer.
        token: Token,
        /// Its packet id.
        id: u64,
    },
    /// Reset the device. Transfers still pending were answered as
    /// cancelled. No reply is sent; if the device is lost, call
    /// [`HostSession::disconnect_device`].
    Reset {
        /// No transfer, configuration or alt-setting change happened since
        /// the device was announced or last reset (a real-device forwarder
        /// may skip a slow reset then).
        redundant: bool,
    },
    /// Select a configuration; answer with [`HostSession::reply_set_configuration`].
    /// Pending transfers were answered as cancelled.
    SetConfiguration {
        /// Packet id.
        id: u64,
        /// `bConfigurationValue`.
        configuration: u8,
    },
    /// Report the configuration; answer with [`HostSession::reply_get_configuration`].
    GetConfiguration {
        /// Packet id.
        id: u64,
    },
    /// Select an alternate setting; answer with
    /// [`HostSession::reply_set_alt_setting`]. Pending transfers on the
    /// interface's endpoints were answered as cancelled.
    SetAltSetting {
        /// Packet id.
        id: u64,
        /// Interface number.
        interface: u8,
        /// Alternate setting.
        alt: u8,
    },
    /// Report an alternate setting; answer with [`HostSession::reply_get_alt_setting`].
    GetAltSetting {
        /// Packet id.
        id: u64,
        /// Interface number.
        interface: u8,
    },
    /// The guest announced its device filter.
    FilterFilter {
        /// The rule string.
        rules: String,
    },
    /// The guest's filter rejected the device.
    FilterReject,
    /// The guest acknowledged our `device_disconnect`; a queued device (if
    /// any) has been announced.
    DisconnectAcked,
    /// The guest allocated (`no_streams` > 0) or freed (`no_streams` 0) bulk
    /// streams on `endpoints` (bit mask of `ep_info` slots). The session has
    /// checked the request against the layout (bulk endpoints announcing
    /// `max_streams`, at most that many streams) and answered it; from now
    /// on it passes bulk transfers on those endpoints to the device model
    /// only with a stream id in `1..=no_streams`.
    StreamsChanged {
        /// Packet id.
        id: u64,
        /// Endpoint slots (bit `i` = `ep_info` index `i`).
        endpoints: u32,
        /// Streams per endpoint (0: freed).
        no_streams: u32,
    },
    /// A request this session does not support (iso streams, interrupt
    /// receiving, bulk receiving, bulk streams when `bulk_streams` was not
    /// negotiated or the request does not fit the layout); it was already answered
    /// with an error status where the protocol has a reply.
    Unsupported {
        /// Packet id.
        id: u64,
        /// The request type.
        packet: PacketType,
    },
}

/// Result of completing a transfer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Completion {
    /// The reply was queued for the guest.
    Sent,
    /// The transfer had been cancelled, reset or disconnected and was
    /// already answered; nothing was sent.
    Discarded,
}

/// Misuse of the session API by the device model, or a protocol error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SessionError {
    /// The guest sent a bad packet (it was dropped), or a packet could not be encoded.
    #[error(transparent)]
    Protocol(#[from] Error),
    /// A token this session never issued.
    #[error("unknown transfer token {0:?}")]
    UnknownToken(Token),
    /// `complete_in` on an OUT transfer or `complete_out` on an IN transfer.
    #[error("transfer {token:?} is {}, complete it accordingly", if *.is_in { "IN: use complete_in" } else { "OUT: use complete_out" })]
    DirectionMismatch {
        /// The transfer.
        token: Token,
        /// Its direction.
        is_in: bool,
    },
    /// More bytes completed than requested.
    #[error("completion of {actual} bytes exceeds the {requested} bytes requested")]
    ReplyTooLong {
        /// Requested length.
        requested: u32,
        /// Completed length.
        actual: u64,
    },
    /// A reply for a request id that is not pending (or of another type).
    #[error("no pending {packet} request with id {id}")]
    UnknownRequest {
        /// The request type the reply answers.
        packet: PacketType,
        /// The id given.
        id: u64,
    },
    /// `connect_device` while a device is connected or waiting to be announced.
    #[error("a device is already connected; disconnect it first")]
    AlreadyConnected,
    /// `disconnect_device` without a device.
    #[error("no device is connected")]
    NotConnected,
    /// The layout has more than 32 interfaces.
    #[error("device layout has {0} interfaces, at most 32 allowed")]
    TooManyInterfaces(usize),
}

/// A data transfer handed to the device model: the guest's request packet
/// without its data, kept for the reply.
#[derive(Debug, Clone)]
enum TransferKind {
    Control(ControlPacket),
    Bulk(BulkPacket),
    Interrupt(InterruptPacket),
}

impl TransferKind {
    /// Splits a guest data packet into its OUT data and the transfer;
    /// `None` for packets that are not control, bulk or interrupt packets.
    fn split(packet: Packet) -> Option<(Bytes, TransferKind)> {
        Some(match packet {
            Packet::ControlPacket(mut c) => (std::mem::take(&mut c.data), TransferKind::Control(c)),
            Packet::BulkPacket(mut b) => (std::mem::take(&mut b.data), TransferKind::Bulk(b)),
            Packet::InterruptPacket(mut i) => {
                (std::mem::take(&mut i.data), TransferKind::Interrupt(i))
            }
            _ => return None,
        })
    }

    fn endpoint(&self) -> u8 {
        match self {
            TransferKind::Control(c) => c.endpoint,
            TransferKind::Bulk(b) => b.endpoint,
            TransferKind::Interrupt(i) => i.endpoint,
        }
    }

    /// The endpoint type the transfer needs.
    fn endpoint_type(&self) -> EndpointType {
        match self {
            TransferKind::Control(_) => EndpointType::Control,
            TransferKind::Bulk(_) => EndpointType::Bulk,
            TransferKind::Interrupt(_) => EndpointType::Interrupt,
        }
    }

    fn requested(&self) -> u32 {
        match self {
            TransferKind::Control(c) => u32::from(c.length),
            TransferKind::Bulk(b) => b.length,
            TransferKind::Interrupt(i) => u32::from(i.length),
        }
    }

    /// The event for the device model.
    fn request(&self, token: Token, id: u64, data: Bytes) -> HostEvent {
        match self {
            TransferKind::Control(c) => HostEvent::Control(ControlRequest {
                token,
                id,
                endpoint: c.endpoint,
                request_type: c.request_type,
                request: c.request,
                value: c.value,
                index: c.index,
                length: c.length,
                data,
            }),
            TransferKind::Bulk(b) => HostEvent::Bulk(BulkRequest {
                token,
                id,
                endpoint: b.endpoint,
                stream_id: b.stream_id,
                length: b.length,
                data,
            }),
            TransferKind::Interrupt(i) => HostEvent::InterruptOut(InterruptRequest {
                token,
                id,
                endpoint: i.endpoint,
                length: i.length,
                data,
            }),
        }
    }

    /// The reply packet: same header, new status and length, optional data.
    fn reply(&self, status: Status, length: u32, data: Bytes) -> Packet {
        let short = u16::try_from(length).unwrap_or(u16::MAX);
        match self.clone() {
            TransferKind::Control(c) => ControlPacket {
                status,
                length: short,
                data,
                ..c
            }
            .into(),
            TransferKind::Bulk(b) => BulkPacket {
                status,
                length,
                data,
                ..b
            }
            .into(),
            TransferKind::Interrupt(i) => InterruptPacket {
                status,
                length: short,
                data,
                ..i
            }
            .into(),
        }
    }
}

#[derive(Debug, Clone)]
struct Transfer {
    id: u64,
    kind: TransferKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RequestKind {
    SetConfiguration,
    GetConfiguration,
    SetAltSetting,
    GetAltSetting,
}

impl RequestKind {
    fn packet_type(self) -> PacketType {
        match self {
            RequestKind::SetConfiguration => PacketType::SetConfiguration,
            RequestKind::GetConfiguration => PacketType::GetConfiguration,
            RequestKind::SetAltSetting => PacketType::SetAltSetting,
            RequestKind::GetAltSetting => PacketType::GetAltSetting,
        }
    }
}

#[derive(Debug)]
enum DeviceState {
    Detached,
    Attached(Box<DeviceLayout>),
    AwaitingAck,
}

/// The host-role session. See the [module documentation](self).
///
/// Typical loop: feed received bytes, drain [`HostSession::next_event`],
/// act on each event (completing transfers now or later), and write
/// [`HostSession::take_output`] to the transport.
///
/// ```
/// use usbredir::host::{DeviceLayout, HostConfig, HostEvent, HostSession};
/// use usbredir::guest::{GuestEvent, GuestSession};
/// use usbredir::{Caps, DeviceConnect, Speed, Status};
///
/// let mut host = HostSession::new(HostConfig::default());
/// let mut guest = GuestSession::new("test guest", Caps::QEMU_GUEST);
/// let device = DeviceConnect {
///     speed: Speed::High, device_class: 0, device_subclass: 0, device_protocol: 0,
///     vendor_id: 0x1234, product_id: 0x5678, device_version_bcd: 0x0100,
/// };
/// host.connect_device(device, DeviceLayout::default()).unwrap(); // queued until the guest's hello
///
/// // Exchange hellos; the host announces the device after the guest's hello.
/// host.feed(&guest.take_output()).unwrap();
/// assert!(matches!(host.next_event().unwrap(), Some(HostEvent::PeerHello { .. })));
/// guest.feed(&host.take_output()).unwrap();
/// while let Some(ev) = guest.next_event().unwrap() {
///     if let GuestEvent::DeviceConnected { device: d, .. } = ev { assert_eq!(d.vendor_id, 0x1234); }
/// }
///
/// // GET_DESCRIPTOR(device), answered by the "device model".
/// let id = guest.control_in(0x80, 6, 0x0100, 0, 18).unwrap();
/// host.feed(&guest.take_output()).unwrap();
/// let Some(HostEvent::Control(req)) = host.next_event().unwrap() else { panic!() };
/// assert_eq!((req.id, req.request, req.length), (id, 6, 18));
/// host.complete_in(req.token, Status::Success, vec![18u8, 1, 0, 2]).unwrap();
/// guest.feed(&host.take_output()).unwrap();
/// let Some(GuestEvent::Control { id: got, packet }) = guest.next_event().unwrap() else { panic!() };
/// assert_eq!((got, &packet.data[..]), (id, &[18u8, 1, 0, 2][..]));
/// ```
#[derive(Debug)]
pub struct HostSession {
    codec: Codec,
    out: Vec<u8>,
    device: DeviceState,
    queued: Option<(DeviceConnect, DeviceLayout)>,
    transfers: BTreeMap<Token, Transfer>,
    requests: BTreeMap<u64, RequestKind>,
    next_token: u64,
    traffic_since_reset: bool,
    /// Bulk streams allocated per `ep_info` slot (0: none).
    streams: [u32; 32],
}

impl HostSession {
    /// A new session; our hello is queued in the output at once.
    ///
    /// An invalid `config.version` (over 63 bytes or containing NUL) is cut
    /// at the first NUL and to 63 bytes.
    pub fn new(config: HostConfig) -> HostSession {
        let mut codec = Codec::new(Role::Host);
        codec.set_max_buffered(config.max_buffered);
        let mut version: String = config
            .version
            .split('\0')
            .next()
            .unwrap_or_default()
            .to_owned();
        let mut cut = version.len().min(HELLO_VERSION_LEN - 1);
        while !version.is_char_boundary(cut) {
            cut -= 1;
        }
        version.truncate(cut);
        let mut out = Vec::new();
        // Cannot fail: first packet, sanitized version, 32-bit id 0.
        let _ = codec.encode_into(
            0,
            &Packet::Hello(Hello::new(version, config.caps)),
            &mut out,
        );
        HostSession {
            codec,
            out,
            device: DeviceState::Detached,
            queued: None,
            transfers: BTreeMap::new(),
            requests: BTreeMap::new(),
            streams: [0; 32],
            next_token: 0,
            traffic_since_reset: false,
        }
    }

    /// The underlying codec (negotiation state).
    pub fn codec(&self) -> &Codec {
        &self.codec
    }

    /// True once the guest's hello has arrived.
    pub fn is_ready(&self) -> bool {
        self.codec.peer_caps().is_some()
    }

    /// The negotiated caps, once the guest's hello has arrived.
    pub fn negotiated_caps(&self) -> Option<Caps> {
        self.is_ready().then(|| self.codec.negotiated())
    }

    /// True while a device is announced to the guest.
    pub fn is_attached(&self) -> bool {
        matches!(self.device, DeviceState::Attached(_))
    }

    /// True after a `device_disconnect` until the guest's ack (cap 3).
    pub fn is_awaiting_disconnect_ack(&self) -> bool {
        matches!(self.device, DeviceState::AwaitingAck)
    }

    /// The announced layout, while attached.
    pub fn layout(&self) -> Option<&DeviceLayout> {
        match &self.device {
            DeviceState::Attached(l) => Some(l),
            _ => None,
        }
    }

    /// Number of transfers handed out and not yet completed or cancelled.
    pub fn pending_transfers(&self) -> usize {
        self.transfers.len()
    }

    /// Bytes to write to the transport, in order; the buffer is emptied.
    pub fn take_output(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.out)
    }

    /// True if [`HostSession::take_output`] would return bytes.
    pub fn has_output(&self) -> bool {
        !self.out.is_empty()
    }

    /// Bytes waiting in the output (for back-pressure: stop handling events
    /// while the peer has not taken a lot of output).
    pub fn output_len(&self) -> usize {
        self.out.len()
    }

    /// Appends bytes received from the guest. Then drain
    /// [`HostSession::next_event`] until `Ok(None)`.
    pub fn feed(&mut self, bytes: &[u8]) -> Result<(), SessionError> {
        Ok(self.codec.feed(bytes)?)
    }

    /// Processes received packets until one yields an event. `Ok(None)`
    /// means more input is needed. An error names one bad packet, which was
    /// dropped; the session stays usable (closing the connection is usually
    /// the right reaction).
    pub fn next_event(&mut self) -> Result<Option<HostEvent>, SessionError> {
        while let Some(frame) = self.codec.next_frame()? {
            if let Some(ev) = self.handle(frame)? {
                return Ok(Some(ev));
            }
        }
        Ok(None)
    }

    /// Makes a device available. It is announced (`interface_info`,
    /// `ep_info`, `device_connect`) as soon as the guest's hello has arrived
    /// and any earlier disconnect was acknowledged.
    pub fn connect_device(
        &mut self,
        device: DeviceConnect,
        layout: DeviceLayout,
    ) -> Result<(), SessionError> {
        if self.is_attached() || self.queued.is_some() {
            return Err(SessionError::AlreadyConnected);
        }
        check_layout(&layout)?;
        self.queued = Some((device, layout));
        self.try_announce()
    }

    /// Sends `device_disconnect` (or drops a device not yet announced).
    /// Pending transfers and requests are forgotten: the guest drops them
    /// itself. With cap 3 negotiated the next device waits for the ack.
    pub fn disconnect_device(&mut self) -> Result<(), SessionError> {
        if self.queued.take().is_some() && !self.is_attached() {
            return Ok(());
        }
        if !self.is_attached() {
            return Err(SessionError::NotConnected);
        }
        self.send(0, &Packet::DeviceDisconnect)?;
        self.transfers.clear();
        self.requests.clear();
        self.streams = [0; 32];
        self.device = if self.codec.negotiated().has(Cap::DeviceDisconnectAck) {
            DeviceState::AwaitingAck
        } else {
            DeviceState::Detached
        };
        Ok(())
    }

    /// Completes an IN transfer with `data` (at most the requested length).
    pub fn complete_in(
        &mut self,
        token: Token,
        status: Status,
        data: impl Into<Bytes>,
    ) -> Result<Completion, SessionError> {
        let data = data.into();
        self.complete(token, status, true, data.len() as u64, data)
    }

    /// Completes an OUT transfer; `transferred` is the number of bytes the
    /// device accepted (at most the requested length).
    pub fn complete_out(
        &mut self,
        token: Token,
        status: Status,
        transferred: u32,
    ) -> Result<Completion, SessionError> {
        self.complete(token, status, false, u64::from(transferred), Bytes::new())
    }

    fn complete(
        &mut self,
        token: Token,
        status: Status,
        is_in: bool,
        length: u64,
        data: Bytes,
    ) -> Result<Completion, SessionError> {
        if token.0 >= self.next_token {
            return Err(SessionError::UnknownToken(token));
        }
        let Some(t) = self.transfers.get(&token).cloned() else {
            return Ok(Completion::Discarded);
        };
        let t_in = is_in_endpoint(t.kind.endpoint());
        if t_in != is_in {
            return Err(SessionError::DirectionMismatch { token, is_in: t_in });
        }
        let requested = t.kind.requested();
        if length > u64::from(requested) {
            return Err(SessionError::ReplyTooLong {
                requested,
                actual: length,
            });
        }
        self.send(t.id, &t.kind.reply(status, length as u32, data))?;
        self.transfers.remove(&token);
        Ok(Completion::Sent)
    }

    /// Answers `SetConfiguration`. On success with a new `layout`, sends
    /// `interface_info` and `ep_info` before `configuration_status` (the
    /// order usbredirhost uses), so the guest knows the new endpoints
    /// before it uses them.
    pub fn reply_set_configuration(
        &mut self,
        id: u64,
        status: Status,
        configuration: u8,
        layout: Option<DeviceLayout>,
    ) -> Result<(), SessionError> {
        self.take_request(id, RequestKind::SetConfiguration, status, layout)?;
        self.send_config_status(id, status, configuration)
    }

    /// Answers `GetConfiguration`.
    pub fn reply_get_configuration(
        &mut self,
        id: u64,
        status: Status,
        configuration: u8,
    ) -> Result<(), SessionError> {
        self.take_request(id, RequestKind::GetConfiguration, status, None)?;
        self.send_config_status(id, status, configuration)
    }

    /// Answers `SetAltSetting`; like [`HostSession::reply_set_configuration`]
    /// a new `layout` is announced before the status.
    pub fn reply_set_alt_setting(
        &mut self,
        id: u64,
        status: Status,
        interface: u8,
        alt: u8,
        layout: Option<DeviceLayout>,
    ) -> Result<(), SessionError> {
        self.take_request(id, RequestKind::SetAltSetting, status, layout)?;
        self.send_alt_status(id, status, interface, alt)
    }

    /// Answers `GetAltSetting` (`alt` 255 when the interface is unknown).
    pub fn reply_get_alt_setting(
        &mut self,
        id: u64,
        status: Status,
        interface: u8,
        alt: u8,
    ) -> Result<(), SessionError> {
        self.take_request(id, RequestKind::GetAltSetting, status, None)?;
        self.send_alt_status(id, status, interface, alt)
    }

    /// Sends our own `filter_filter` (needs the guest's `filter` cap).
    pub fn send_filter(&mut self, rules: &str) -> Result<(), SessionError> {
        self.send(
            0,
            &Packet::FilterFilter(FilterFilter {
                rules: rules.to_owned(),
            }),
        )
    }

    /// Takes the pending request `id` of `kind` for its reply; on success
    /// a new `layout` is announced first.
    fn take_request(
        &mut self,
        id: u64,
        kind: RequestKind,
        status: Status,
        layout: Option<DeviceLayout>,
    ) -> Result<(), SessionError> {
        if self.requests.get(&id) != Some(&kind) {
            return Err(SessionError::UnknownRequest {
                packet: kind.packet_type(),
                id,
            });
        }
        self.requests.remove(&id);
        match layout {
            Some(layout) if status == Status::Success => self.announce_layout(layout),
            _ => Ok(()),
        }
    }

    fn send(&mut self, id: u64, packet: &Packet) -> Result<(), SessionError> {
        Ok(self.codec.encode_into(id, packet, &mut self.out)?)
    }

    /// True if bulk streams may be allocated (`no_streams` > 0) or freed (0)
    /// on the `ep_info` slots in `mask`: `bulk_streams` was negotiated, the
    /// device is attached, the mask is not empty, and every slot in it is a
    /// bulk endpoint announcing at least `no_streams` streams.
    fn streams_fit(&self, mask: u32, no_streams: u32) -> bool {
        if mask == 0 || !self.codec.negotiated().has(Cap::BulkStreams) {
            return false;
        }
        let Some(layout) = self.layout() else {
            return false;
        };
        layout
            .endpoints
            .endpoints
            .iter()
            .enumerate()
            .filter(|(i, _)| mask & (1 << i) != 0)
            .all(|(_, e)| {
                e.ep_type == EndpointType::Bulk && e.max_streams > 0 && no_streams <= e.max_streams
            })
    }

    fn set_streams(&mut self, mask: u32, no_streams: u32) {
        for (i, slot) in self.streams.iter_mut().enumerate() {
            if mask & (1 << i) != 0 {
                *slot = no_streams;
            }
        }
    }

    /// Bulk streams the guest allocated on endpoint `endpoint` (0: none).
    pub fn streams(&self, endpoint: u8) -> u32 {
        self.streams[endpoint_index(endpoint)]
    }

    /// Encodes `interface_info` and `ep_info` of `layout` into `buf`.
    fn encode_layout(&mut self, layout: &DeviceLayout, buf: &mut Vec<u8>) -> Result<(), Error> {
        let interfaces = Packet::InterfaceInfo(layout.interfaces.clone());
        self.codec.encode_into(0, &interfaces, buf)?;
        let endpoints = Packet::EpInfo(Box::new(layout.endpoints.clone()));
        self.codec.encode_into(0, &endpoints, buf)
    }

    fn announce_layout(&mut self, layout: DeviceLayout) -> Result<(), SessionError> {
        check_layout(&layout)?;
        let mut buf = Vec::new();
        self.encode_layout(&layout, &mut buf)?;
        self.out.extend_from_slice(&buf);
        if let DeviceState::Attached(l) = &mut self.device {
            **l = layout;
        }
        Ok(())
    }

    fn try_announce(&mut self) -> Result<(), SessionError> {
        if !self.is_ready() || !matches!(self.device, DeviceState::Detached) {
            return Ok(());
        }
        let Some((device, layout)) = self.queued.take() else {
            return Ok(());
        };
        let mut buf = Vec::new();
        let encoded = self.encode_layout(&layout, &mut buf).and_then(|()| {
            self.codec
                .encode_into(0, &Packet::DeviceConnect(device), &mut buf)
        });
        if let Err(e) = encoded {
            self.queued = Some((device, layout));
            return Err(e.into());
        }
        self.out.extend_from_slice(&buf);
        self.device = DeviceState::Attached(Box::new(layout));
        self.streams = [0; 32];
        self.traffic_since_reset = false;
        Ok(())
    }

    fn new_token(&mut self) -> Token {
        let t = Token(self.next_token);
        self.next_token += 1;
        t
    }

    /// Answers every pending transfer matching `filter` with `cancelled`.
    fn cancel_transfers(&mut self, filter: impl Fn(&Transfer) -> bool) -> Result<(), SessionError> {
        let victims: Vec<Token> = self
            .transfers
            .iter()
            .filter(|(_, t)| filter(t))
            .map(|(k, _)| *k)
            .collect();
        for token in victims {
            self.cancel_transfer(token)?;
        }
        Ok(())
    }

    /// Answers the transfer `token` (if pending) with `cancelled`.
    fn cancel_transfer(&mut self, token: Token) -> Result<(), SessionError> {
        match self.transfers.remove(&token) {
            Some(t) => self.send(t.id, &t.kind.reply(Status::Cancelled, 0, Bytes::new())),
            None => Ok(()),
        }
    }

    /// Hands a data transfer (a control, bulk or interrupt packet) to the
    /// device model, or answers it with an error status if no device is
    /// attached or the endpoint has the wrong type.
    fn data_request(&mut self, id: u64, packet: Packet) -> Result<Option<HostEvent>, SessionError> {
        let Some((data, kind)) = TransferKind::split(packet) else {
            return Ok(None);
        };
        let status = match &self.device {
            DeviceState::Attached(layout) => {
                let allocated = self.streams[endpoint_index(kind.endpoint())];
                let stream_ok = match &kind {
                    // With streams allocated every transfer names one of
                    // them; without, only stream 0 exists.
                    TransferKind::Bulk(b) if allocated > 0 => {
                        (1..=allocated).contains(&b.stream_id)
                    }
                    TransferKind::Bulk(b) => b.stream_id == 0,
                    _ => true,
                };
                if layout.endpoints.get(kind.endpoint()).ep_type == kind.endpoint_type()
                    && stream_ok
                {
                    None
                } else {
                    Some(Status::Inval)
                }
            }
            _ => Some(Status::IoError),
        };
        if let Some(status) = status {
            self.send(id, &kind.reply(status, 0, Bytes::new()))?;
            return Ok(None);
        }
        self.traffic_since_reset = true;
        let token = self.new_token();
        let event = kind.request(token, id, data);
        self.transfers.insert(token, Transfer { id, kind });
        Ok(Some(event))
    }

    fn handle(&mut self, frame: Frame) -> Result<Option<HostEvent>, SessionError> {
        let id = frame.id;
        let request = frame.packet.packet_type();
        let attached = self.is_attached();
        let ev = match frame.packet {
            Packet::Hello(h) => {
                let caps = h.caps();
                self.try_announce()?;
                Some(HostEvent::PeerHello {
                    version: h.version,
                    caps,
                })
            }
            Packet::Reset => {
                if !attached {
                    return Ok(None);
                }
                self.cancel_transfers(|_| true)?;
                self.streams = [0; 32];
                let redundant = !self.traffic_since_reset;
                self.traffic_since_reset = false;
                Some(HostEvent::Reset { redundant })
            }
            Packet::SetConfiguration(s) => {
                if !attached {
                    self.send_config_status(id, Status::IoError, 0)?;
                    return Ok(None);
                }
                self.cancel_transfers(|_| true)?;
                self.streams = [0; 32];
                self.traffic_since_reset = true;
                self.requests.insert(id, RequestKind::SetConfiguration);
                Some(HostEvent::SetConfiguration {
                    id,
                    configuration: s.configuration,
                })
            }
            Packet::GetConfiguration => {
                if !attached {
                    self.send_config_status(id, Status::IoError, 0)?;
                    return Ok(None);
                }
                self.requests.insert(id, RequestKind::GetConfiguration);
                Some(HostEvent::GetConfiguration { id })
            }
            Packet::SetAltSetting(s) => {
                if !attached {
                    self.send_alt_status(id, Status::IoError, s.interface, 255)?;
                    return Ok(None);
                }
                let eps: Vec<bool> = match self.layout() {
                    Some(l) => l
                        .endpoints
                        .endpoints
                        .iter()
                        .map(|e| e.ep_type != EndpointType::Control && e.interface == s.interface)
                        .collect(),
                    None => Vec::new(),
                };
                self.cancel_transfers(|t| {
                    eps.get(endpoint_index(t.kind.endpoint()))
                        .copied()
                        .unwrap_or(false)
                })?;
                for (i, on) in eps.iter().enumerate() {
                    if *on {
                        self.streams[i] = 0;
                    }
                }
                self.traffic_since_reset = true;
                self.requests.insert(id, RequestKind::SetAltSetting);
                Some(HostEvent::SetAltSetting {
                    id,
                    interface: s.interface,
                    alt: s.alt,
                })
            }
            Packet::GetAltSetting(g) => {
                if !attached {
                    self.send_alt_status(id, Status::IoError, g.interface, 255)?;
                    return Ok(None);
                }
                self.requests.insert(id, RequestKind::GetAltSetting);
                Some(HostEvent::GetAltSetting {
                    id,
                    interface: g.interface,
                })
            }
            Packet::CancelDataPacket => {
                let found = self
                    .transfers
                    .iter()
                    .find(|(_, t)| t.id == id)
                    .map(|(k, _)| *k);
                match found {
                    Some(token) => {
                        self.cancel_transfer(token)?;
                        Some(HostEvent::Cancelled { token, id })
                    }
                    // Already completed: the guest has (or will get) the real result.
                    None => None,
                }
            }
            Packet::FilterReject => Some(HostEvent::FilterReject),
            Packet::FilterFilter(f) => Some(HostEvent::FilterFilter { rules: f.rules }),
            Packet::DeviceDisconnectAck => {
                if !self.is_awaiting_disconnect_ack() {
                    return Ok(None);
                }
                self.device = DeviceState::Detached;
                self.try_announce()?;
                Some(HostEvent::DisconnectAcked)
            }
            data @ (Packet::ControlPacket(_)
            | Packet::BulkPacket(_)
            | Packet::InterruptPacket(_)) => self.data_request(id, data)?,
            Packet::StartIsoStream(StartIsoStream { endpoint, .. })
            | Packet::StopIsoStream(StopIsoStream { endpoint }) => {
                let status = refusal_status(request);
                self.refuse(id, request, IsoStreamStatus { status, endpoint })?
            }
            Packet::StartInterruptReceiving(StartInterruptReceiving { endpoint })
            | Packet::StopInterruptReceiving(StopInterruptReceiving { endpoint }) => {
                let status = refusal_status(request);
                self.refuse(id, request, InterruptReceivingStatus { status, endpoint })?
            }
            Packet::AllocBulkStreams(a) => {
                self.change_streams(id, request, a.endpoints, a.no_streams)?
            }
            Packet::FreeBulkStreams(f) => self.change_streams(id, request, f.endpoints, 0)?,
            Packet::StartBulkReceiving(StartBulkReceiving {
                stream_id,
                endpoint,
                ..
            })
            | Packet::StopBulkReceiving(StopBulkReceiving {
                stream_id,
                endpoint,
            }) => {
                let status = refusal_status(request);
                let reply = BulkReceivingStatus {
                    stream_id,
                    endpoint,
                    status,
                };
                self.refuse(id, request, reply)?
            }
            // Iso OUT data has no reply in the protocol.
            Packet::IsoPacket(_) => Some(unsupported(id, PacketType::IsoPacket)),
            // Host-to-guest packets: the codec rejects them from a guest.
            Packet::DeviceConnect(_)
            | Packet::DeviceDisconnect
            | Packet::InterfaceInfo(_)
            | Packet::EpInfo(_)
            | Packet::ConfigurationStatus(_)
            | Packet::AltSettingStatus(_)
            | Packet::IsoStreamStatus(_)
            | Packet::InterruptReceivingStatus(_)
            | Packet::BulkStreamsStatus(_)
            | Packet::BulkReceivingStatus(_)
            | Packet::BufferedBulkPacket(_) => None,
        };
        Ok(ev)
    }

    /// Answers a request this session does not support with `reply`.
    fn refuse(
        &mut self,
        id: u64,
        request: PacketType,
        reply: impl Into<Packet>,
    ) -> Result<Option<HostEvent>, SessionError> {
        self.send(id, &reply.into())?;
        Ok(Some(unsupported(id, request)))
    }

    /// Answers `alloc_bulk_streams` (`no_streams` > 0) or
    /// `free_bulk_streams` (`no_streams` 0) and records the change if the
    /// request fits the layout.
    fn change_streams(
        &mut self,
        id: u64,
        request: PacketType,
        endpoints: u32,
        no_streams: u32,
    ) -> Result<Option<HostEvent>, SessionError> {
        let freeing = request == PacketType::FreeBulkStreams;
        let ok = (freeing || no_streams > 0) && self.streams_fit(endpoints, no_streams);
        let status = if ok { Status::Success } else { Status::Inval };
        self.send(
            id,
            &Packet::BulkStreamsStatus(BulkStreamsStatus {
                endpoints,
                no_streams,
                status,
            }),
        )?;
        if !ok {
            return Ok(Some(unsupported(id, request)));
        }
        self.set_streams(endpoints, no_streams);
        Ok(Some(HostEvent::StreamsChanged {
            id,
            endpoints,
            no_streams,
        }))
    }

    fn send_config_status(
        &mut self,
        id: u64,
        status: Status,
        configuration: u8,
    ) -> Result<(), SessionError> {
        let reply = ConfigurationStatus {
            status,
            configuration,
        };
        self.send(id, &reply.into())
    }

    fn send_alt_status(
        &mut self,
        id: u64,
        status: Status,
        interface: u8,
        alt: u8,
    ) -> Result<(), SessionError> {
        let reply = AltSettingStatus {
            status,
            interface,
            alt,
        };
        self.send(id, &reply.into())
    }
}

fn unsupported(id: u64, packet: PacketType) -> HostEvent {
    HostEvent::Unsupported { id, packet }
}

/// Status of our reply to a start or stop request for an iso stream,
/// interrupt receiving or bulk receiving, none of which this session runs:
/// starting is refused, stopping (what never ran) succeeds.
fn refusal_status(request: PacketType) -> Status {
    match request {
        PacketType::StartIsoStream
        | PacketType::StartInterruptReceiving
        | PacketType::StartBulkReceiving => Status::Inval,
        _ => Status::Success,
    }
}

fn check_layout(layout: &DeviceLayout) -> Result<(), SessionError> {
    let n = layout.interfaces.interfaces.len();
    if n > MAX_INTERFACES {
        return Err(SessionError::TooManyInterfaces(n));
    }
    Ok(())
}
