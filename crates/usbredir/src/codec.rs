//! The wire codec: per-connection negotiation state, encoder and streaming
//! decoder. No I/O: bytes go in with [`Codec::feed`] and come out of
//! [`Codec::encode`].

use bytes::{Buf, Bytes, BytesMut};

use crate::caps::{Cap, Caps};
use crate::error::Error;
use crate::packet::*;
use crate::proto::*;

/// Default limit on bytes buffered by the decoder: one maximal packet plus
/// 1 MiB of slack for the next read.
pub const DEFAULT_MAX_BUFFERED: usize = MAX_FRAME_LEN + 1024 * 1024;

/// One side of a usbredir connection: remembers both hellos, derives the
/// negotiated packet layout from them, encodes outgoing packets and decodes
/// incoming bytes.
///
/// Rules it enforces:
/// - our hello must be the first packet we encode, and the peer's hello the
///   first packet we decode;
/// - hellos always use the 12-byte header; every later packet uses the
///   16-byte header if both hellos advertise `64bits_ids`;
/// - packets other than the hello can only be encoded once both hellos are
///   known, because their layout depends on both.
///
/// ```
/// use usbredir::{Caps, Codec, Hello, Packet, Role};
///
/// let mut host = Codec::new(Role::Host);
/// let mut guest = Codec::new(Role::Guest);
/// let hello = host.encode(0, &Packet::Hello(Hello::new("host", Caps::HOST_DEFAULT))).unwrap();
/// assert_eq!(hello.len(), 80);
/// guest.feed(&hello).unwrap();
/// let frame = guest.next_frame().unwrap().unwrap();
/// assert!(matches!(frame.packet, Packet::Hello(_)));
/// assert_eq!(guest.peer_caps(), Some(Caps::HOST_DEFAULT));
/// ```
#[derive(Debug)]
pub struct Codec {
    role: Role,
    our_caps: Option<Caps>,
    peer_caps: Option<Caps>,
    rx: BytesMut,
    skip: u64,
    max_buffered: usize,
}

impl Codec {
    /// A fresh codec for our `role`; no hello sent or received yet.
    pub fn new(role: Role) -> Codec {
        Codec {
            role,
            our_caps: None,
            peer_caps: None,
            rx: BytesMut::new(),
            skip: 0,
            max_buffered: DEFAULT_MAX_BUFFERED,
        }
    }

    /// A codec in the state after both hellos were exchanged with the given
    /// caps (for tests, fuzzing and tools that join a stream mid-way).
    pub fn with_caps(role: Role, ours: Caps, peer: Caps) -> Codec {
        let mut c = Codec::new(role);
        c.our_caps = Some(ours);
        c.peer_caps = Some(peer);
        c
    }

    /// Sets the hard limit on buffered input bytes. Packets whose header
    /// announces a larger frame are rejected as soon as the header arrives.
    pub fn set_max_buffered(&mut self, limit: usize) {
        self.max_buffered = limit;
    }

    /// Our role.
    pub fn role(&self) -> Role {
        self.role
    }

    /// Caps of our hello, once encoded.
    pub fn our_caps(&self) -> Option<Caps> {
        self.our_caps
    }

    /// Caps of the peer's hello, once decoded.
    pub fn peer_caps(&self) -> Option<Caps> {
        self.peer_caps
    }

    /// True once our hello was encoded and the peer's decoded.
    pub fn hellos_exchanged(&self) -> bool {
        self.our_caps.is_some() && self.peer_caps.is_some()
    }

    /// The caps that govern packet layouts: empty until both hellos are
    /// known, then [`Caps::negotiate`] of the two.
    pub fn negotiated(&self) -> Caps {
        match (self.our_caps, self.peer_caps) {
            (Some(a), Some(b)) => a.negotiate(b),
            _ => Caps::empty(),
        }
    }

    /// Size of the header of every packet other than the hello.
    pub fn header_len(&self) -> usize {
        if self.negotiated().has(Cap::Ids64) {
            HEADER_LEN_64
        } else {
            HEADER_LEN_32
        }
    }

    /// Bytes held in the input buffer.
    pub fn buffered(&self) -> usize {
        self.rx.len()
    }

    /// Encodes one packet sent by our role; see [`Codec::encode_into`].
    pub fn encode(&mut self, id: u64, packet: &Packet) -> Result<Vec<u8>, Error> {
        let mut out = Vec::new();
        self.encode_into(id, packet, &mut out)?;
        Ok(out)
    }

    /// Encodes one packet sent by our role and appends it to `out`. The
    /// packet is validated exactly as the peer's decoder would validate it;
    /// on error nothing is appended.
    pub fn encode_into(
        &mut self,
        id: u64,
        packet: &Packet,
        out: &mut Vec<u8>,
    ) -> Result<(), Error> {
        let ptype = packet.packet_type();
        let is_hello = ptype == PacketType::Hello;
        if is_hello {
            if self.our_caps.is_some() {
                return Err(Error::DuplicateHello);
            }
        } else if self.our_caps.is_none() {
            return Err(Error::OwnHelloNotSent(ptype));
        } else if self.peer_caps.is_none() {
            return Err(Error::PeerHelloPending(ptype));
        }
        let ctx = Ctx {
            sender: self.role,
            negotiated: self.negotiated(),
            receiver_caps: self.peer_caps.unwrap_or_default(),
        };
        validate(packet, &ctx)?;
        let ids64 = !is_hello && ctx.negotiated.has(Cap::Ids64);
        if !ids64 && id > u64::from(u32::MAX) {
            return Err(Error::IdTooLarge(id));
        }
        let header_len = type_header_len(ptype, ctx.negotiated);
        let data_len = data_len_of(packet);
        let length = header_len as u64 + data_len as u64;
        if length > u64::from(MAX_PACKET_LEN) {
            return Err(Error::PacketTooLarge {
                length,
                max: u64::from(MAX_PACKET_LEN),
            });
        }
        let start = out.len();
        out.reserve(HEADER_LEN_64 + length as usize);
        put_u32(out, ptype.as_u32());
        put_u32(out, length as u32);
        if ids64 {
            out.extend_from_slice(&id.to_le_bytes());
        } else {
            put_u32(out, id as u32);
        }
        write_body(packet, ctx.negotiated, out);
        debug_assert_eq!(
            out.len() - start,
            length as usize + if ids64 { 16 } else { 12 }
        );
        if is_hello {
            if let Packet::Hello(h) = packet {
                self.our_caps = Some(h.caps());
            }
        }
        Ok(())
    }

    /// Appends received bytes. Nothing is decoded yet: call
    /// [`Codec::next_frame`] until it returns `Ok(None)` after each feed.
    ///
    /// Fails with [`Error::BufferFull`], consuming nothing, if the buffer
    /// would exceed its limit (see [`Codec::set_max_buffered`]).
    pub fn feed(&mut self, chunk: &[u8]) -> Result<(), Error> {
        let skip_now = usize::try_from(self.skip)
            .unwrap_or(usize::MAX)
            .min(chunk.len());
        let rest = chunk.get(skip_now..).unwrap_or_default();
        let total = self.rx.len().saturating_add(rest.len());
        if total > self.max_buffered {
            return Err(Error::BufferFull {
                buffered: self.rx.len(),
                incoming: rest.len(),
                limit: self.max_buffered,
            });
        }
        self.skip -= skip_now as u64;
        self.rx.extend_from_slice(rest);
        Ok(())
    }

    /// Decodes the next complete packet from the buffered bytes.
    ///
    /// `Ok(None)` means more bytes are needed. An `Err` concerns one packet,
    /// whose bytes are dropped (including those still to come), so decoding
    /// can go on with the next call.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, Error> {
        self.apply_skip();
        let hl = self.header_len();
        let Some(head) = self.rx.get(..hl) else {
            return Ok(None);
        };
        let mut r = Reader::new(head, PacketType::Hello, 0);
        let raw_type = r.u32()?;
        let length = r.u32()?;
        let id = if hl == HEADER_LEN_64 {
            r.u64()?
        } else {
            u64::from(r.u32()?)
        };
        let ptype = match self.check_header(raw_type, length, hl) {
            Ok(t) => t,
            Err(e) => {
                self.rx.advance(hl);
                self.skip = u64::from(length);
                self.apply_skip();
                return Err(e);
            }
        };
        let total = hl + length as usize;
        if self.rx.len() < total {
            return Ok(None);
        }
        let mut body = self.rx.split_to(total).freeze();
        body.advance(hl);
        let negotiated = self.negotiated();
        let th_len = type_header_len(ptype, negotiated);
        let data = body.split_off(th_len.min(body.len()));
        let peer = self.role.peer();
        let packet = parse_body(ptype, &body, data, negotiated, peer)?;
        let ctx = Ctx {
            sender: peer,
            negotiated,
            receiver_caps: self.our_caps.unwrap_or_default(),
        };
        validate(&packet, &ctx)?;
        if let Packet::Hello(h) = &packet {
            self.peer_caps = Some(h.caps());
        }
        Ok(Some(Frame { id, packet }))
    }

    fn apply_skip(&mut self) {
        if self.skip > 0 {
            let n = usize::try_from(self.skip)
                .unwrap_or(usize::MAX)
                .min(self.rx.len());
            self.rx.advance(n);
            self.skip -= n as u64;
        }
    }

    /// Checks everything the header alone tells, before buffering the body.
    fn check_header(&self, raw_type: u32, length: u32, hl: usize) -> Result<PacketType, Error> {
        if length > MAX_PACKET_LEN {
            return Err(Error::PacketTooLarge {
                length: u64::from(length),
                max: u64::from(MAX_PACKET_LEN),
            });
        }
        let frame_len = hl as u64 + u64::from(length);
        if frame_len > self.max_buffered as u64 {
            return Err(Error::PacketTooLarge {
                length: frame_len,
                max: self.max_buffered as u64,
            });
        }
        let ptype = PacketType::from_u32(raw_type).ok_or(Error::UnknownPacketType(raw_type))?;
        match (self.peer_caps.is_some(), ptype == PacketType::Hello) {
            (false, false) => return Err(Error::HelloNotFirst(ptype)),
            (true, true) => return Err(Error::DuplicateHello),
            _ => {}
        }
        let sender = self.role.peer();
        if ptype.sender().is_some_and(|s| s != sender) {
            return Err(Error::WrongSender {
                packet: ptype,
                sender,
            });
        }
        let th_len = type_header_len(ptype, self.negotiated()) as u32;
        if ptype == PacketType::Hello {
            if length < th_len || (length - th_len) % 4 != 0 {
                return Err(Error::BadHelloLength(length));
            }
        } else if length < th_len || (length > th_len && !carries_data(ptype)) {
            return Err(Error::BadLength {
                packet: ptype,
                length,
                header_len: th_len,
            });
        }
        Ok(ptype)
    }
}

/// Who sends, what layout applies, and what the receiver understands.
struct Ctx {
    sender: Role,
    negotiated: Caps,
    receiver_caps: Caps,
}

/// Size of the type-specific header under the negotiated caps.
pub(crate) fn type_header_len(t: PacketType, neg: Caps) -> usize {
    use PacketType as T;
    match t {
        T::Hello => HELLO_VERSION_LEN,
        T::DeviceConnect => {
            if neg.has(Cap::ConnectDeviceVersion) {
                10
            } else {
                8
            }
        }
        T::DeviceDisconnect
        | T::Reset
        | T::GetConfiguration
        | T::CancelDataPacket
        | T::FilterReject
        | T::FilterFilter
        | T::DeviceDisconnectAck => 0,
        T::InterfaceInfo => 4 + 4 * MAX_INTERFACES,
        T::EpInfo => {
            if neg.has(Cap::BulkStreams) {
                288
            } else if neg.has(Cap::EpInfoMaxPacketSize) {
                160
            } else {
                96
            }
        }
        T::SetConfiguration => 1,
        T::ConfigurationStatus => 2,
        T::SetAltSetting => 2,
        T::GetAltSetting => 1,
        T::AltSettingStatus => 3,
        T::StartIsoStream => 3,
        T::StopIsoStream => 1,
        T::IsoStreamStatus => 2,
        T::StartInterruptReceiving => 1,
        T::StopInterruptReceiving => 1,
        T::InterruptReceivingStatus => 2,
        T::AllocBulkStreams => 8,
        T::FreeBulkStreams => 4,
        T::BulkStreamsStatus => 9,
        T::StartBulkReceiving => 10,
        T::StopBulkReceiving => 5,
        T::BulkReceivingStatus => 6,
        T::ControlPacket => 10,
        T::BulkPacket => {
            if neg.has(Cap::BulkLength32) {
                10
            } else {
                8
            }
        }
        T::IsoPacket => 4,
        T::InterruptPacket => 4,
        T::BufferedBulkPacket => 10,
    }
}

/// Types that may have bytes after their type header.
fn carries_data(t: PacketType) -> bool {
    t == PacketType::Hello || t == PacketType::FilterFilter || t.is_data_packet()
}

fn data_len_of(p: &Packet) -> usize {
    match p {
        Packet::Hello(h) => h.cap_words.len().saturating_mul(4),
        Packet::FilterFilter(f) => f.rules.len().saturating_add(1),
        Packet::ControlPacket(c) => c.data.len(),
        Packet::BulkPacket(b) => b.data.len(),
        Packet::IsoPacket(i) => i.data.len(),
        Packet::InterruptPacket(i) => i.data.len(),
        Packet::BufferedBulkPacket(b) => b.data.len(),
        _ => 0,
    }
}

/// Protocol rules that do not depend on the byte layout; run on every
/// packet before encoding and after decoding.
fn validate(p: &Packet, ctx: &Ctx) -> Result<(), Error> {
    let ptype = p.packet_type();
    if ptype.sender().is_some_and(|s| s != ctx.sender) {
        return Err(Error::WrongSender {
            packet: ptype,
            sender: ctx.sender,
        });
    }
    let need_cap = |cap: Cap| {
        if ctx.receiver_caps.has(cap) {
            Ok(())
        } else {
            Err(Error::MissingCap { packet: ptype, cap })
        }
    };
    let need_in = |endpoint: u8| {
        if is_in_endpoint(endpoint) {
            Ok(())
        } else {
            Err(Error::EndpointNotInput {
                packet: ptype,
                endpoint,
            })
        }
    };
    let data_limit = |length: u32| {
        if length > MAX_DATA_LEN {
            Err(Error::DataTooLarge {
                packet: ptype,
                length,
                max: MAX_DATA_LEN,
            })
        } else {
            Ok(())
        }
    };
    match p {
        Packet::Hello(h) if h.version.len() >= HELLO_VERSION_LEN || h.version.contains('\0') => {
            return Err(Error::BadVersion);
        }
        Packet::InterfaceInfo(info) if info.interfaces.len() > MAX_INTERFACES => {
            return Err(Error::TooManyInterfaces(
                u32::try_from(info.interfaces.len()).unwrap_or(u32::MAX),
            ));
        }
        Packet::StartInterruptReceiving(x) => need_in(x.endpoint)?,
        Packet::StopInterruptReceiving(x) => need_in(x.endpoint)?,
        Packet::InterruptReceivingStatus(x) => need_in(x.endpoint)?,
        Packet::FilterReject => need_cap(Cap::Filter)?,
        Packet::FilterFilter(f) => {
            need_cap(Cap::Filter)?;
            if f.rules.contains('\0') {
                return Err(Error::BadFilter("rules contain NUL"));
            }
        }
        Packet::DeviceDisconnectAck => need_cap(Cap::DeviceDisconnectAck)?,
        Packet::StartBulkReceiving(x) => {
            need_cap(Cap::BulkReceiving)?;
            data_limit(x.bytes_per_transfer)?;
            need_in(x.endpoint)?;
        }
        Packet::StopBulkReceiving(x) => {
            need_cap(Cap::BulkReceiving)?;
            need_in(x.endpoint)?;
        }
        Packet::BulkReceivingStatus(x) => {
            need_cap(Cap::BulkReceiving)?;
            need_in(x.endpoint)?;
        }
        Packet::ControlPacket(c) => {
            check_data(ptype, ctx.sender, c.endpoint, u32::from(c.length), &c.data)?;
        }
        Packet::BulkPacket(b) => {
            data_limit(b.length)?;
            if !ctx.negotiated.has(Cap::BulkLength32) && b.length > u32::from(u16::MAX) {
                return Err(Error::BulkLengthNeedsCap(b.length));
            }
            check_data(ptype, ctx.sender, b.endpoint, b.length, &b.data)?;
        }
        Packet::IsoPacket(i) => {
            check_data(ptype, ctx.sender, i.endpoint, u32::from(i.length), &i.data)?;
        }
        Packet::InterruptPacket(i) => {
            check_data(ptype, ctx.sender, i.endpoint, u32::from(i.length), &i.data)?;
        }
        Packet::BufferedBulkPacket(b) => {
            need_cap(Cap::BulkReceiving)?;
            data_limit(b.length)?;
            check_data(ptype, ctx.sender, b.endpoint, b.length, &b.data)?;
        }
        _ => {}
    }
    Ok(())
}

/// The data direction rule of data packets: data travels with OUT requests
/// (guest to host) and IN replies (host to guest) only, and then matches
/// the `length` field exactly.
fn check_data(
    packet: PacketType,
    sender: Role,
    endpoint: u8,
    length: u32,
    data: &[u8],
) -> Result<(), Error> {
    let data_expected = match sender {
        Role::Host => is_in_endpoint(endpoint),
        Role::Guest => !is_in_endpoint(endpoint),
    };
    if data_expected {
        if data.len() as u64 != u64::from(length) {
            return Err(Error::DataLengthMismatch {
                packet,
                endpoint,
                length,
                data_len: data.len(),
            });
        }
        return Ok(());
    }
    if !data.is_empty() {
        return Err(Error::UnexpectedData {
            packet,
            endpoint,
            sender,
            data_len: data.len(),
        });
    }
    let wrong_direction = match packet {
        PacketType::IsoPacket | PacketType::BufferedBulkPacket => true,
        PacketType::InterruptPacket => sender == Role::Guest,
        _ => false,
    };
    if wrong_direction {
        return Err(Error::WrongDirection {
            packet,
            endpoint,
            sender,
        });
    }
    Ok(())
}

fn put_u32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_le_bytes());
}

fn put_u16(out: &mut Vec<u8>, v: u16) {
    out.extend_from_slice(&v.to_le_bytes());
}

/// Writes type header and data; the packet is already validated.
fn write_body(p: &Packet, neg: Caps, out: &mut Vec<u8>) {
    match p {
        Packet::Hello(h) => {
            let mut version = [0u8; HELLO_VERSION_LEN];
            for (dst, src) in version.iter_mut().zip(h.version.as_bytes()) {
                *dst = *src;
            }
            out.extend_from_slice(&version);
            for w in &h.cap_words {
                put_u32(out, *w);
            }
        }
        Packet::DeviceConnect(d) => {
            out.extend_from_slice(&[
                d.speed.as_u8(),
                d.device_class,
                d.device_subclass,
                d.device_protocol,
            ]);
            put_u16(out, d.vendor_id);
            put_u16(out, d.product_id);
            if neg.has(Cap::ConnectDeviceVersion) {
                put_u16(out, d.device_version_bcd);
            }
        }
        Packet::DeviceDisconnect
        | Packet::Reset
        | Packet::GetConfiguration
        | Packet::CancelDataPacket
        | Packet::FilterReject
        | Packet::DeviceDisconnectAck => {}
        Packet::InterfaceInfo(info) => {
            put_u32(out, info.interfaces.len() as u32);
            let field = |f: fn(&Interface) -> u8| {
                let mut a = [0u8; MAX_INTERFACES];
                for (dst, i) in a.iter_mut().zip(&info.interfaces) {
                    *dst = f(i);
                }
                a
            };
            out.extend_from_slice(&field(|i| i.number));
            out.extend_from_slice(&field(|i| i.class));
            out.extend_from_slice(&field(|i| i.subclass));
            out.extend_from_slice(&field(|i| i.protocol));
        }
        Packet::EpInfo(ep) => {
            out.extend(ep.endpoints.iter().map(|e| e.ep_type.as_u8()));
            out.extend(ep.endpoints.iter().map(|e| e.interval));
            out.extend(ep.endpoints.iter().map(|e| e.interface));
            if neg.has(Cap::EpInfoMaxPacketSize) {
                for e in &ep.endpoints {
                    put_u16(out, e.max_packet_size);
                }
            }
            if neg.has(Cap::BulkStreams) {
                for e in &ep.endpoints {
                    put_u32(out, e.max_streams);
                }
            }
        }
        Packet::SetConfiguration(x) => out.push(x.configuration),
        Packet::ConfigurationStatus(x) => {
            out.extend_from_slice(&[x.status.as_u8(), x.configuration])
        }
        Packet::SetAltSetting(x) => out.extend_from_slice(&[x.interface, x.alt]),
        Packet::GetAltSetting(x) => out.push(x.interface),
        Packet::AltSettingStatus(x) => {
            out.extend_from_slice(&[x.status.as_u8(), x.interface, x.alt])
        }
        Packet::StartIsoStream(x) => {
            out.extend_from_slice(&[x.endpoint, x.pkts_per_urb, x.no_urbs])
        }
        Packet::StopIsoStream(x) => out.push(x.endpoint),
        Packet::IsoStreamStatus(x) => out.extend_from_slice(&[x.status.as_u8(), x.endpoint]),
        Packet::StartInterruptReceiving(x) => out.push(x.endpoint),
        Packet::StopInterruptReceiving(x) => out.push(x.endpoint),
        Packet::InterruptReceivingStatus(x) => {
            out.extend_from_slice(&[x.status.as_u8(), x.endpoint])
        }
        Packet::AllocBulkStreams(x) => {
            put_u32(out, x.endpoints);
            put_u32(out, x.no_streams);
        }
        Packet::FreeBulkStreams(x) => put_u32(out, x.endpoints),
        Packet::BulkStreamsStatus(x) => {
            put_u32(out, x.endpoints);
            put_u32(out, x.no_streams);
            out.push(x.status.as_u8());
        }
        Packet::FilterFilter(f) => {
            out.extend_from_slice(f.rules.as_bytes());
            out.push(0);
        }
        Packet::StartBulkReceiving(x) => {
            put_u32(out, x.stream_id);
            put_u32(out, x.bytes_per_transfer);
            out.extend_from_slice(&[x.endpoint, x.no_transfers]);
        }
        Packet::StopBulkReceiving(x) => {
            put_u32(out, x.stream_id);
            out.push(x.endpoint);
        }
        Packet::BulkReceivingStatus(x) => {
            put_u32(out, x.stream_id);
            out.extend_from_slice(&[x.endpoint, x.status.as_u8()]);
        }
        Packet::ControlPacket(c) => {
            out.extend_from_slice(&[c.endpoint, c.request, c.request_type, c.status.as_u8()]);
            put_u16(out, c.value);
            put_u16(out, c.index);
            put_u16(out, c.length);
            out.extend_from_slice(&c.data);
        }
        Packet::BulkPacket(b) => {
            out.extend_from_slice(&[b.endpoint, b.status.as_u8()]);
            put_u16(out, (b.length & 0xffff) as u16);
            put_u32(out, b.stream_id);
            if neg.has(Cap::BulkLength32) {
                put_u16(out, (b.length >> 16) as u16);
            }
            out.extend_from_slice(&b.data);
        }
        Packet::IsoPacket(i) => {
            out.extend_from_slice(&[i.endpoint, i.status.as_u8()]);
            put_u16(out, i.length);
            out.extend_from_slice(&i.data);
        }
        Packet::InterruptPacket(i) => {
            out.extend_from_slice(&[i.endpoint, i.status.as_u8()]);
            put_u16(out, i.length);
            out.extend_from_slice(&i.data);
        }
        Packet::BufferedBulkPacket(b) => {
            put_u32(out, b.stream_id);
            put_u32(out, b.length);
            out.extend_from_slice(&[b.endpoint, b.status.as_u8()]);
            out.extend_from_slice(&b.data);
        }
    }
}

/// Checked little-endian reads over a type header.
struct Reader<'a> {
    buf: &'a [u8],
    packet: PacketType,
    length: u32,
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8], packet: PacketType, length: u32) -> Reader<'a> {
        Reader {
            buf,
            packet,
            length,
        }
    }

    fn take<const N: usize>(&mut self) -> Result<[u8; N], Error> {
        match self.buf.split_first_chunk::<N>() {
            Some((head, rest)) => {
                self.buf = rest;
                Ok(*head)
            }
            None => Err(Error::BadLength {
                packet: self.packet,
                length: self.length,
                header_len: N as u32,
            }),
        }
    }

    fn u8(&mut self) -> Result<u8, Error> {
        Ok(u8::from_le_bytes(self.take::<1>()?))
    }

    fn u16(&mut self) -> Result<u16, Error> {
        Ok(u16::from_le_bytes(self.take::<2>()?))
    }

    fn u32(&mut self) -> Result<u32, Error> {
        Ok(u32::from_le_bytes(self.take::<4>()?))
    }

    fn u64(&mut self) -> Result<u64, Error> {
        Ok(u64::from_le_bytes(self.take::<8>()?))
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], Error> {
        self.take::<N>()
    }

    /// A status byte; in data packets from the guest it is ignored (QEMU
    /// leaves it uninitialised) and reads as success.
    fn status(&mut self, sender: Role) -> Result<Status, Error> {
        let v = self.u8()?;
        if sender == Role::Guest && self.packet.is_data_packet() {
            return Ok(Status::Success);
        }
        Status::from_u8(v).ok_or(Error::InvalidStatus(v))
    }
}

fn parse_body(
    t: PacketType,
    th: &[u8],
    data: Bytes,
    neg: Caps,
    sender: Role,
) -> Result<Packet, Error> {
    let length = u32::try_from(th.len() + data.len()).unwrap_or(u32::MAX);
    let mut r = Reader::new(th, t, length);
    use PacketType as T;
    let p = match t {
        T::Hello => {
            let raw = r.array::<HELLO_VERSION_LEN>()?;
            let end = raw
                .iter()
                .position(|&b| b == 0)
                .unwrap_or(HELLO_VERSION_LEN - 1);
            let text = String::from_utf8_lossy(raw.get(..end).unwrap_or_default());
            let mut version = text.into_owned();
            let mut cut = version.len().min(HELLO_VERSION_LEN - 1);
            while !version.is_char_boundary(cut) {
                cut -= 1;
            }
            version.truncate(cut);
            let cap_words = data
                .chunks_exact(4)
                .map(|c| {
                    c.iter()
                        .rev()
                        .fold(0u32, |acc, &b| (acc << 8) | u32::from(b))
                })
                .collect();
            Packet::Hello(Hello { version, cap_words })
        }
        T::DeviceConnect => {
            let s = r.u8()?;
            let speed = Speed::from_u8(s).ok_or(Error::InvalidSpeed(s))?;
            Packet::DeviceConnect(DeviceConnect {
                speed,
                device_class: r.u8()?,
                device_subclass: r.u8()?,
                device_protocol: r.u8()?,
                vendor_id: r.u16()?,
                product_id: r.u16()?,
                device_version_bcd: if neg.has(Cap::ConnectDeviceVersion) {
                    r.u16()?
                } else {
                    0
                },
            })
        }
        T::DeviceDisconnect => Packet::DeviceDisconnect,
        T::Reset => Packet::Reset,
        T::InterfaceInfo => {
            let count = r.u32()?;
            if count as usize > MAX_INTERFACES {
                return Err(Error::TooManyInterfaces(count));
            }
            let number = r.array::<MAX_INTERFACES>()?;
            let class = r.array::<MAX_INTERFACES>()?;
            let subclass = r.array::<MAX_INTERFACES>()?;
            let protocol = r.array::<MAX_INTERFACES>()?;
            let interfaces = number
                .iter()
                .zip(class.iter())
                .zip(subclass.iter())
                .zip(protocol.iter())
                .take(count as usize)
                .map(|(((&number, &class), &subclass), &protocol)| Interface {
                    number,
                    class,
                    subclass,
                    protocol,
                })
                .collect();
            Packet::InterfaceInfo(InterfaceInfo { interfaces })
        }
        T::EpInfo => {
            let types = r.array::<NUM_ENDPOINTS>()?;
            let intervals = r.array::<NUM_ENDPOINTS>()?;
            let ifaces = r.array::<NUM_ENDPOINTS>()?;
            let mut ep = EpInfo::all_invalid();
            for (((e, &ty), &interval), &interface) in ep
                .endpoints
                .iter_mut()
                .zip(&types)
                .zip(&intervals)
                .zip(&ifaces)
            {
                e.ep_type = EndpointType::from_u8(ty).ok_or(Error::InvalidEndpointType(ty))?;
                e.interval = interval;
                e.interface = interface;
            }
            if neg.has(Cap::EpInfoMaxPacketSize) {
                for e in ep.endpoints.iter_mut() {
                    e.max_packet_size = r.u16()?;
                }
            }
            if neg.has(Cap::BulkStreams) {
                for e in ep.endpoints.iter_mut() {
                    e.max_streams = r.u32()?;
                }
            }
            Packet::EpInfo(Box::new(ep))
        }
        T::SetConfiguration => Packet::SetConfiguration(SetConfiguration {
            configuration: r.u8()?,
        }),
        T::GetConfiguration => Packet::GetConfiguration,
        T::ConfigurationStatus => Packet::ConfigurationStatus(ConfigurationStatus {
            status: r.status(sender)?,
            configuration: r.u8()?,
        }),
        T::SetAltSetting => Packet::SetAltSetting(SetAltSetting {
            interface: r.u8()?,
            alt: r.u8()?,
        }),
        T::GetAltSetting => Packet::GetAltSetting(GetAltSetting { interface: r.u8()? }),
        T::AltSettingStatus => Packet::AltSettingStatus(AltSettingStatus {
            status: r.status(sender)?,
            interface: r.u8()?,
            alt: r.u8()?,
        }),
        T::StartIsoStream => Packet::StartIsoStream(StartIsoStream {
            endpoint: r.u8()?,
            pkts_per_urb: r.u8()?,
            no_urbs: r.u8()?,
        }),
        T::StopIsoStream => Packet::StopIsoStream(StopIsoStream { endpoint: r.u8()? }),
        T::IsoStreamStatus => Packet::IsoStreamStatus(IsoStreamStatus {
            status: r.status(sender)?,
            endpoint: r.u8()?,
        }),
        T::StartInterruptReceiving => {
            Packet::StartInterruptReceiving(StartInterruptReceiving { endpoint: r.u8()? })
        }
        T::StopInterruptReceiving => {
            Packet::StopInterruptReceiving(StopInterruptReceiving { endpoint: r.u8()? })
        }
        T::InterruptReceivingStatus => Packet::InterruptReceivingStatus(InterruptReceivingStatus {
            status: r.status(sender)?,
            endpoint: r.u8()?,
        }),
        T::AllocBulkStreams => Packet::AllocBulkStreams(AllocBulkStreams {
            endpoints: r.u32()?,
            no_streams: r.u32()?,
        }),
        T::FreeBulkStreams => Packet::FreeBulkStreams(FreeBulkStreams {
            endpoints: r.u32()?,
        }),
        T::BulkStreamsStatus => Packet::BulkStreamsStatus(BulkStreamsStatus {
            endpoints: r.u32()?,
            no_streams: r.u32()?,
            status: r.status(sender)?,
        }),
        T::CancelDataPacket => Packet::CancelDataPacket,
        T::FilterReject => Packet::FilterReject,
        T::FilterFilter => {
            let Some((&last, body)) = data.split_last() else {
                return Err(Error::BadFilter("no data"));
            };
            if last != 0 {
                return Err(Error::BadFilter("not NUL-terminated"));
            }
            if body.contains(&0) {
                return Err(Error::BadFilter("rules contain NUL"));
            }
            let rules = std::str::from_utf8(body)
                .map_err(|_| Error::BadFilter("rules are not UTF-8"))?
                .to_owned();
            Packet::FilterFilter(FilterFilter { rules })
        }
        T::DeviceDisconnectAck => Packet::DeviceDisconnectAck,
        T::StartBulkReceiving => Packet::StartBulkReceiving(StartBulkReceiving {
            stream_id: r.u32()?,
            bytes_per_transfer: r.u32()?,
            endpoint: r.u8()?,
            no_transfers: r.u8()?,
        }),
        T::StopBulkReceiving => Packet::StopBulkReceiving(StopBulkReceiving {
            stream_id: r.u32()?,
            endpoint: r.u8()?,
        }),
        T::BulkReceivingStatus => Packet::BulkReceivingStatus(BulkReceivingStatus {
            stream_id: r.u32()?,
            endpoint: r.u8()?,
            status: r.status(sender)?,
        }),
        T::ControlPacket => Packet::ControlPacket(ControlPacket {
            endpoint: r.u8()?,
            request: r.u8()?,
            request_type: r.u8()?,
            status: r.status(sender)?,
            value: r.u16()?,
            index: r.u16()?,
            length: r.u16()?,
            data,
        }),
        T::BulkPacket => {
            let endpoint = r.u8()?;
            let status = r.status(sender)?;
            let low = r.u16()?;
            let stream_id = r.u32()?;
            let high = if neg.has(Cap::BulkLength32) {
                r.u16()?
            } else {
                0
            };
            Packet::BulkPacket(BulkPacket {
                endpoint,
                status,
                length: (u32::from(high) << 16) | u32::from(low),
                stream_id,
                data,
            })
        }
        T::IsoPacket => Packet::IsoPacket(IsoPacket {
            endpoint: r.u8()?,
            status: r.status(sender)?,
            length: r.u16()?,
            data,
        }),
        T::InterruptPacket => Packet::InterruptPacket(InterruptPacket {
            endpoint: r.u8()?,
            status: r.status(sender)?,
            length: r.u16()?,
            data,
        }),
        T::BufferedBulkPacket => Packet::BufferedBulkPacket(BufferedBulkPacket {
            stream_id: r.u32()?,
            length: r.u32()?,
            endpoint: r.u8()?,
            status: r.status(sender)?,
            data,
        }),
    };
    Ok(p)
}
