//! Fuzz harness shared by the in-suite mutation loop (`tests/fuzz_loop.rs`)
//! and the cargo-fuzz target (`fuzz/fuzz_targets/decode.rs`, which includes
//! this file by path). It uses only the crate's public API.
//!
//! Input layout: `flags: u8 | ours: u32 LE | peer: u32 LE | stream...`
//! - flags bit 7 set: drive a [`HostSession`] with `stream` as the guest's bytes.
//! - otherwise: decode `stream` with a codec; bit 0 = receiver is the guest,
//!   bit 1 = fresh codec (the stream must start with the peer's hello),
//!   bits 2-6 = chunking seed.
//!
//! Oracles (violations panic): no panic anywhere; decoding in chunks yields
//! exactly what decoding in one piece yields; every decoded frame re-encodes
//! and decodes to itself; everything a host session writes decodes without
//! error on the guest side.
#![allow(dead_code, clippy::unwrap_used)]

use usbredir::host::{DeviceLayout, HostConfig, HostEvent, HostSession, Token};
use usbredir::*;

/// Runs one fuzz input.
pub fn run(input: &[u8]) {
    let Some((&flags, rest)) = input.split_first() else {
        return;
    };
    let (ours, rest) = take_u32(rest);
    let (peer, stream) = take_u32(rest);
    if flags & 0x80 != 0 {
        drive_host_session(flags, Caps::from_bits(ours), stream);
    } else {
        check_decoder(flags, Caps::from_bits(ours), Caps::from_bits(peer), stream);
    }
}

fn take_u32(b: &[u8]) -> (u32, &[u8]) {
    let mut v = [0u8; 4];
    let n = b.len().min(4);
    v[..n].copy_from_slice(&b[..n]);
    (u32::from_le_bytes(v), &b[n..])
}

fn receiver_codec(flags: u8, ours: Caps, peer: Caps) -> Codec {
    let role = if flags & 1 != 0 {
        Role::Guest
    } else {
        Role::Host
    };
    if flags & 2 != 0 {
        let mut c = Codec::new(role);
        c.encode(0, &Hello::new("fuzz", ours).into())
            .expect("own hello");
        c
    } else {
        Codec::with_caps(role, ours, peer)
    }
}

fn drain(c: &mut Codec, out: &mut Vec<Result<Frame, Error>>) {
    // Every call consumes at least a header or returns None, so this ends.
    loop {
        match c.next_frame() {
            Ok(None) => return,
            r => out.push(r.map(|f| f.expect("some"))),
        }
    }
}

/// For decoder inputs: (frames decoded, errors).
pub fn decode_counts(input: &[u8]) -> (usize, usize) {
    let Some((&flags, rest)) = input.split_first() else {
        return (0, 0);
    };
    let (ours, rest) = take_u32(rest);
    let (peer, stream) = take_u32(rest);
    let mut c = receiver_codec(flags, Caps::from_bits(ours), Caps::from_bits(peer));
    let mut v = Vec::new();
    c.feed(stream).expect("fits");
    drain(&mut c, &mut v);
    (
        v.iter().filter(|r| r.is_ok()).count(),
        v.iter().filter(|r| r.is_err()).count(),
    )
}

/// Decoder oracles.
pub fn check_decoder(flags: u8, ours: Caps, peer: Caps, stream: &[u8]) {
    let mut whole = receiver_codec(flags, ours, peer);
    let mut a = Vec::new();
    whole.feed(stream).expect("small input fits the buffer");
    drain(&mut whole, &mut a);

    let mut split = receiver_codec(flags, ours, peer);
    let mut b = Vec::new();
    let mut seed = u32::from(flags >> 2) + 1;
    let mut rest = stream;
    while !rest.is_empty() {
        seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12345);
        let n = (1 + (seed >> 16) as usize % 23).min(rest.len());
        split.feed(&rest[..n]).expect("small input fits the buffer");
        drain(&mut split, &mut b);
        rest = &rest[n..];
    }
    assert_eq!(a, b, "chunked decoding differs from whole decoding");
    assert_eq!(whole.buffered(), split.buffered());

    // Round trip of every decoded frame.
    let receiver = whole.role();
    let sender = receiver.peer();
    let our = whole.our_caps().unwrap_or_default();
    for frame in a.iter().flatten() {
        if let Packet::Hello(_) = frame.packet {
            let mut tx = Codec::new(sender);
            let bytes = tx
                .encode(frame.id, &frame.packet)
                .expect("decoded hello re-encodes");
            let mut rx = Codec::new(receiver);
            rx.feed(&bytes).expect("fits");
            assert_eq!(rx.next_frame().expect("re-decodes").as_ref(), Some(frame));
            continue;
        }
        let their = whole
            .peer_caps()
            .expect("non-hello frames come after the peer hello");
        let mut tx = Codec::with_caps(sender, their, our);
        let bytes = tx
            .encode(frame.id, &frame.packet)
            .unwrap_or_else(|e| panic!("decoded frame does not re-encode: {e}: {frame:?}"));
        let mut rx = Codec::with_caps(receiver, our, their);
        rx.feed(&bytes).expect("fits");
        assert_eq!(rx.next_frame().expect("re-decodes").as_ref(), Some(frame));
        assert_eq!(rx.buffered(), 0);
    }
}

/// The emulated CD-ROM as a high-speed device.
pub fn cdrom() -> DeviceConnect {
    DeviceConnect {
        speed: Speed::High,
        device_class: 0,
        device_subclass: 0,
        device_protocol: 0,
        vendor_id: 0x1d6b,
        product_id: 0x0104,
        device_version_bcd: 0x0100,
    }
}

/// An endpoint of interface 0 with 512-byte packets and no streams.
pub fn endpoint(ep_type: EndpointType) -> Endpoint {
    Endpoint {
        ep_type,
        interval: 0,
        interface: 0,
        max_packet_size: 512,
        max_streams: 0,
    }
}

/// Interface 0: mass storage, SCSI, Bulk-Only (08/06/50).
pub fn bot_interface() -> InterfaceInfo {
    InterfaceInfo {
        interfaces: vec![Interface {
            number: 0,
            class: 0x08,
            subclass: 0x06,
            protocol: 0x50,
        }],
    }
}

/// The Bulk-Only drive: bulk OUT 0x02 and bulk IN 0x81.
pub fn bot_layout() -> DeviceLayout {
    let bulk = endpoint(EndpointType::Bulk);
    DeviceLayout {
        interfaces: bot_interface(),
        endpoints: EpInfo::new().with(0x02, bulk).with(0x81, bulk),
    }
}

/// [`bot_layout`] plus an interrupt OUT endpoint 0x03.
fn layout() -> DeviceLayout {
    let mut layout = bot_layout();
    layout.endpoints = layout
        .endpoints
        .with(0x03, endpoint(EndpointType::Interrupt));
    layout
}

/// Drives a host session with `stream` as the guest's bytes and answers
/// like a device model; checks the host's output is always valid. Returns
/// the number of events seen.
pub fn drive_host_session(flags: u8, caps: Caps, stream: &[u8]) -> usize {
    let mut events = 0;
    let mut host = HostSession::new(HostConfig {
        caps,
        ..HostConfig::default()
    });
    if flags & 1 == 0 {
        host.connect_device(cdrom(), layout()).expect("connect");
    }
    let mut output = host.take_output();
    let mut deferred: Vec<(Token, bool, u32)> = Vec::new();
    let mut rng = u32::from(flags) | 1;
    let mut rest = stream;
    while !rest.is_empty() {
        rng ^= rng << 13;
        rng ^= rng >> 17;
        rng ^= rng << 5;
        let n = (1 + rng as usize % 64).min(rest.len());
        host.feed(&rest[..n]).expect("fits");
        rest = &rest[n..];
        loop {
            let ev = match host.next_event() {
                Ok(Some(ev)) => ev,
                Ok(None) => break,
                Err(_) => continue,
            };
            events += 1;
            rng = rng.rotate_left(7) ^ 0x9e37_79b9;
            match ev {
                HostEvent::Control(r) => deferred.push((r.token, r.is_in(), u32::from(r.length))),
                HostEvent::Bulk(r) => deferred.push((r.token, r.is_in(), r.length)),
                HostEvent::InterruptOut(r) => deferred.push((r.token, false, u32::from(r.length))),
                HostEvent::SetConfiguration { id, configuration } => host
                    .reply_set_configuration(id, Status::Success, configuration, Some(layout()))
                    .expect("reply"),
                HostEvent::GetConfiguration { id } => host
                    .reply_get_configuration(id, Status::Success, 1)
                    .expect("reply"),
                HostEvent::SetAltSetting { id, interface, alt } => host
                    .reply_set_alt_setting(id, Status::Success, interface, alt, Some(layout()))
                    .expect("reply"),
                HostEvent::GetAltSetting { id, interface } => host
                    .reply_get_alt_setting(id, Status::Success, interface, 0)
                    .expect("reply"),
                HostEvent::Reset { .. } if rng % 4 == 0 => {
                    host.disconnect_device().expect("attached");
                    let _ = host.connect_device(cdrom(), layout());
                }
                _ => {}
            }
            // Complete some transfers now, possibly out of order; keep others.
            while !deferred.is_empty() && rng % 3 != 0 {
                let i = rng as usize % deferred.len();
                let (token, is_in, len) = deferred.swap_remove(i);
                let r = if is_in {
                    let n = (len as usize).min(rng as usize % 4096);
                    host.complete_in(token, Status::Success, vec![0xA5u8; n])
                } else {
                    host.complete_out(token, Status::Success, len)
                };
                r.expect("valid completion");
                rng = rng.rotate_left(3).wrapping_add(1);
            }
        }
        output.extend(host.take_output());
    }
    for (token, is_in, _) in deferred {
        let r = if is_in {
            host.complete_in(token, Status::Stall, Vec::new())
        } else {
            host.complete_out(token, Status::Stall, 0)
        };
        r.expect("valid completion");
    }
    output.extend(host.take_output());

    // Everything the host wrote must decode cleanly on the guest side.
    let mut guest = Codec::new(Role::Guest);
    match host.codec().peer_caps() {
        Some(peer) => {
            guest
                .encode(0, &Hello::new("check", peer).into())
                .expect("hello");
        }
        None => {
            assert_eq!(output.len(), 80, "only the hello before the guest's hello");
            return events;
        }
    }
    guest.feed(&output).expect("fits");
    loop {
        match guest.next_frame() {
            Ok(Some(_)) => {}
            Ok(None) => break,
            Err(e) => panic!("host session wrote an invalid packet: {e}"),
        }
    }
    assert_eq!(guest.buffered(), 0, "host session wrote a partial packet");
    events
}

/// One instance of every packet type `sender` may send (all caps assumed).
pub fn sample_packets(sender: Role) -> Vec<Packet> {
    let st = Status::Success;
    let b = Bytes::from_static;
    let both = vec![
        Packet::FilterFilter(FilterFilter { rules: "0x08,-1,-1,-1,1|-1,-1,-1,-1,0".into() }),
        ControlPacket { endpoint: 0x80, request: 6, request_type: 0x80, status: st, value: 0x100, index: 0, length: 18, data: Bytes::new() }.into(),
        ControlPacket { endpoint: 0x00, request: 9, request_type: 0x21, status: st, value: 0x200, index: 0, length: 2, data: b(&[1, 2]) }.into(),
        BulkPacket { endpoint: 0x81, status: st, length: 13, stream_id: 0, data: Bytes::new() }.into(),
        BulkPacket { endpoint: 0x02, status: st, length: 31, stream_id: 0, data: b(b"USBC\x01\x00\x00\x00\x00\x08\x00\x00\x80\x00\x0a\x28\x00\x00\x00\x00\x00\x00\x00\x01\x00\x00\x00\x00\x00\x00\x00") }.into(),
        BulkPacket { endpoint: 0x81, status: st, length: 13, stream_id: 0, data: b(b"USBS\x01\x00\x00\x00\x00\x00\x00\x00\x00") }.into(),
        BulkPacket { endpoint: 0x02, status: st, length: 31, stream_id: 0, data: Bytes::new() }.into(),
        IsoPacket { endpoint: 0x81, status: st, length: 2, data: b(&[1, 2]) }.into(),
        IsoPacket { endpoint: 0x01, status: st, length: 2, data: b(&[1, 2]) }.into(),
        InterruptPacket { endpoint: 0x83, status: st, length: 2, data: b(&[1, 2]) }.into(),
        InterruptPacket { endpoint: 0x03, status: st, length: 2, data: b(&[1, 2]) }.into(),
        InterruptPacket { endpoint: 0x03, status: st, length: 2, data: Bytes::new() }.into(),
    ];
    #[rustfmt::skip]
    let own: Vec<Packet> = match sender {
        Role::Host => vec![
            Packet::InterfaceInfo(bot_interface()),
            Packet::EpInfo(Box::new(layout().endpoints)),
            Packet::DeviceConnect(cdrom()),
            ConfigurationStatus { status: st, configuration: 1 }.into(),
            AltSettingStatus { status: st, interface: 0, alt: 0 }.into(),
            IsoStreamStatus { status: Status::Stall, endpoint: 0x81 }.into(),
            InterruptReceivingStatus { status: st, endpoint: 0x83 }.into(),
            BulkStreamsStatus { endpoints: 1 << 17, no_streams: 4, status: st }.into(),
            BulkReceivingStatus { stream_id: 0, endpoint: 0x81, status: st }.into(),
            BufferedBulkPacket { stream_id: 0, length: 3, endpoint: 0x81, status: st, data: b(&[1, 2, 3]) }.into(),
            Packet::DeviceDisconnect,
        ],
        Role::Guest => vec![
            Packet::Reset,
            SetConfiguration { configuration: 1 }.into(),
            Packet::GetConfiguration,
            SetAltSetting { interface: 0, alt: 1 }.into(),
            GetAltSetting { interface: 0 }.into(),
            StartIsoStream { endpoint: 0x81, pkts_per_urb: 8, no_urbs: 4 }.into(),
            StopIsoStream { endpoint: 0x81 }.into(),
            StartInterruptReceiving { endpoint: 0x83 }.into(),
            StopInterruptReceiving { endpoint: 0x83 }.into(),
            AllocBulkStreams { endpoints: 1 << 17, no_streams: 4 }.into(),
            FreeBulkStreams { endpoints: 1 << 17 }.into(),
            Packet::CancelDataPacket,
            Packet::FilterReject,
            Packet::DeviceDisconnectAck,
            StartBulkReceiving { stream_id: 0, bytes_per_transfer: 16384, endpoint: 0x81, no_transfers: 4 }.into(),
            StopBulkReceiving { stream_id: 0, endpoint: 0x81 }.into(),
        ],
    };
    own.into_iter().chain(both).collect()
}

fn input(flags: u8, ours: Caps, peer: Caps, stream: &[u8]) -> Vec<u8> {
    let mut v = vec![flags];
    v.extend_from_slice(&ours.bits().to_le_bytes());
    v.extend_from_slice(&peer.bits().to_le_bytes());
    v.extend_from_slice(stream);
    v
}

/// Valid inputs to start mutating from.
pub fn seeds() -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let cap_sets = [
        (0x7E, 0xFF),
        (0xFF, 0xFF),
        (0, 0),
        (0x8C, 0x8C),
        (0x1F, 0x1F),
    ];
    for receiver in [Role::Host, Role::Guest] {
        let sender = receiver.peer();
        for &(ours, peer) in &cap_sets {
            let (ours, peer) = (Caps::from_bits(ours), Caps::from_bits(peer));
            // Negotiated codec, stream without hello.
            let mut tx = Codec::with_caps(sender, peer, ours);
            let mut stream = Vec::new();
            for (i, p) in sample_packets(sender).iter().enumerate() {
                let _ = tx.encode_into(i as u64 + 1, p, &mut stream);
            }
            let base = if receiver == Role::Guest { 1 } else { 0 };
            out.push(input(base, ours, peer, &stream));
            // Fresh codec: the stream starts with the sender's hello.
            let mut tx = Codec::new(sender);
            let mut stream = tx
                .encode(0, &Hello::new("seed", peer).into())
                .expect("hello");
            tx.feed(
                &Codec::new(receiver)
                    .encode(0, &Hello::new("r", ours).into())
                    .expect("hello"),
            )
            .expect("fits");
            tx.next_frame().expect("hello").expect("hello");
            for (i, p) in sample_packets(sender).iter().enumerate() {
                let _ = tx.encode_into(i as u64 + 1, p, &mut stream);
            }
            out.push(input(base | 2, ours, peer, &stream));
        }
    }
    // Host-session seeds: what a QEMU-like guest sends during a session.
    for guest_caps in [Caps::QEMU_GUEST, Caps::empty(), Caps::from_bits(0x7E)] {
        out.push(input(
            0x80,
            Caps::HOST_DEFAULT,
            Caps::empty(),
            &guest_stream(guest_caps),
        ));
    }
    out
}

fn guest_stream(caps: Caps) -> Vec<u8> {
    use usbredir::guest::GuestSession;
    let mut g = GuestSession::new("qemu usb-redir guest 7.2.22", caps);
    let host_hello = Codec::new(Role::Host)
        .encode(0, &Hello::new("h", Caps::HOST_DEFAULT).into())
        .expect("hello");
    g.feed(&host_hello).expect("fits");
    g.next_event().expect("hello");
    let _ = g.reset();
    let _ = g.control_in(0x80, 6, 0x0100, 0, 18);
    let _ = g.set_configuration(1);
    let _ = g.control_in(0xA1, 0xFE, 0, 0, 1);
    let _ = g.bulk_out(0x02, vec![0x55u8; 31]);
    let id = g.bulk_in(0x81, 2048).unwrap_or(0);
    let _ = g.bulk_in(0x81, 13);
    let _ = g.cancel(id);
    let _ = g.set_alt_setting(0, 0);
    let _ = g.get_configuration();
    let _ = g.get_alt_setting(0);
    let _ = g.send(
        &InterruptPacket {
            endpoint: 0x03,
            status: Status::Success,
            length: 1,
            data: Bytes::from_static(&[1]),
        }
        .into(),
    );
    let _ = g.send(&StartInterruptReceiving { endpoint: 0x83 }.into());
    let _ = g.send(
        &FilterFilter {
            rules: "-1,-1,-1,-1,1".into(),
        }
        .into(),
    );
    let _ = g.send(&Packet::DeviceDisconnectAck);
    let _ = g.reset();
    g.take_output()
}
