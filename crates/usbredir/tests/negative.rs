//! One test (at least) per validation rule: every rule rejects with its
//! typed error, on decode and, where a typed packet can express the
//! mistake, on encode.
#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

mod common;

use common::*;
use usbredir::*;
use PacketType as T;

const NONE: u32 = 0;

/// A buffered bulk IN packet of no data on endpoint 0x81.
const BUFFERED_BULK_IN: &str = "68000000 0a000000 00000000 | 00000000 00000000 81 00";

/// Host-side decoder after hellos with no caps (12-byte header).
fn host_rx() -> Codec {
    Codec::with_caps(Role::Host, Caps::empty(), Caps::empty())
}

/// Guest-side decoder after hellos with no caps.
fn guest_rx() -> Codec {
    Codec::with_caps(Role::Guest, Caps::empty(), Caps::empty())
}

/// Decoder after hellos in which both sides advertised `caps` (bits).
fn rx(role: Role, caps: u32) -> Codec {
    Codec::with_caps(role, Caps::from_bits(caps), Caps::from_bits(caps))
}

fn err(codec: &mut Codec, bytes: &[u8]) -> Error {
    decode_one(codec, bytes).expect_err("packet should be rejected")
}

/// Asserts that each receiver rejects its packet bytes with the error
/// `expected` makes of the row's last field and the sender's role.
#[track_caller]
fn assert_rejected<R: Copy>(
    cases: impl IntoIterator<Item = (Codec, Vec<u8>, R)>,
    expected: impl Fn(R, Role) -> Error,
) {
    for (mut rx, bytes, row) in cases {
        let sender = rx.role().peer();
        assert_eq!(err(&mut rx, &bytes), expected(row, sender), "{bytes:02x?}");
    }
}

/// Why a guest codec refuses to encode `packet` when both sides advertised `caps`.
fn encode_err(caps: u32, packet: impl Into<Packet>) -> Error {
    let (mut tx, _) = pair(Role::Guest, caps, caps);
    tx.encode(1, &packet.into())
        .expect_err("packet should be refused")
}

/// `bad_length` rows: (packet, header `length`, expected type header length).
fn bad_length((packet, length, header_len): (PacketType, u32, u32), _: Role) -> Error {
    Error::BadLength {
        packet,
        length,
        header_len,
    }
}

/// A bulk packet on `endpoint` from `sender` with 4 data bytes it must not carry.
fn unexpected_data(endpoint: u8, sender: Role) -> Error {
    Error::UnexpectedData {
        packet: T::BulkPacket,
        endpoint,
        sender,
        data_len: 4,
    }
}

/// `header` followed by `n` zero bytes of data.
fn with_zeros(header: &str, n: usize) -> Vec<u8> {
    cat(&[&hx(header), &z(n)])
}

#[test]
fn unknown_packet_types() {
    for t in ["1c000000", "63000000", "69000000", "ffffffff"] {
        let e = err(&mut host_rx(), &hx(&format!("{t} 00000000 00000000")));
        assert!(matches!(e, Error::UnknownPacketType(_)), "{e}");
    }
}

#[test]
fn wrong_sender_decode() {
    #[rustfmt::skip]
    let cases = [
        (host_rx(), hx("01000000 08000000 00000000 | 0200000081076755"), T::DeviceConnect),
        (guest_rx(), hx("03000000 00000000 00000000"), T::Reset),
        (host_rx(), hx(BUFFERED_BULK_IN), T::BufferedBulkPacket),
    ];
    assert_rejected(cases, |packet, sender| Error::WrongSender {
        packet,
        sender,
    });
}

#[test]
fn wrong_sender_encode() {
    let (mut guest, _) = pair(Role::Guest, NONE, NONE);
    assert!(matches!(
        guest.encode(0, &Packet::DeviceDisconnect),
        Err(Error::WrongSender { .. })
    ));
    let (mut host, _) = pair(Role::Host, NONE, NONE);
    assert!(matches!(
        host.encode(0, &Packet::Reset),
        Err(Error::WrongSender { .. })
    ));
}

#[test]
fn bad_type_header_lengths() {
    #[rustfmt::skip]
    let cases = [
        // set_configuration needs exactly 1 byte.
        (host_rx(), hx("06000000 02000000 00000000 | 0101"), (T::SetConfiguration, 2, 1)),
        (host_rx(), hx("06000000 00000000 00000000"), (T::SetConfiguration, 0, 1)),
        // reset carries nothing.
        (host_rx(), hx("03000000 01000000 00000000 | 00"), (T::Reset, 1, 0)),
        // control_packet shorter than its 10-byte header.
        (host_rx(), hx("64000000 09000000 00000000 | 800680000001000012"), (T::ControlPacket, 9, 10)),
    ];
    assert_rejected(cases, bad_length);
}

#[test]
fn type_header_length_depends_on_negotiated_caps() {
    const CONNECT_8: &str = "01000000 08000000 00000000 | 02000000 8107 6755";
    const CONNECT_10: &str = "01000000 0a000000 00000000 | 02000000 8107 6755 0001";
    let ep_info = |head: &str, slots: usize| cat(&[&hx(head), &[0xff; 32], &z(slots)]);
    #[rustfmt::skip]
    let cases = [
        // 10-byte device_connect without connect_device_version negotiated.
        (guest_rx(), hx(CONNECT_10), (T::DeviceConnect, 10, 8)),
        // 8-byte device_connect although both have the cap.
        (rx(Role::Guest, 2), hx(CONNECT_8), (T::DeviceConnect, 8, 10)),
        // Only one side has the cap: 8 bytes expected.
        (Codec::with_caps(Role::Guest, Caps::from_bits(2), Caps::empty()), hx(CONNECT_10), (T::DeviceConnect, 10, 8)),
        // 160-byte ep_info without ep_info_max_packet_size.
        (guest_rx(), ep_info("05000000 a0000000 00000000", 128), (T::EpInfo, 160, 96)),
        // bulk_streams without max_packet_size does not count: 96 bytes, not 288.
        (rx(Role::Guest, 1), ep_info("05000000 20010000 00000000", 256), (T::EpInfo, 288, 96)),
    ];
    assert_rejected(cases, bad_length);
}

#[test]
fn bad_hello_lengths() {
    for len in ["41000000", "3f000000", "46000000"] {
        let mut c = Codec::new(Role::Host);
        let body_len = u32::from_le_bytes(hx(len).try_into().unwrap()) as usize;
        let e = err(
            &mut c,
            &cat(&[&hx(&format!("00000000 {len} 00000000")), &z(body_len)]),
        );
        assert!(matches!(e, Error::BadHelloLength(_)), "{e}");
        assert_eq!(c.peer_caps(), None, "a bad hello is not a hello");
    }
}

#[test]
fn packet_larger_than_protocol_limit() {
    let e = err(&mut host_rx(), &hx("65000000 01040008 00000000"));
    assert_eq!(
        e,
        Error::PacketTooLarge {
            length: 0x0800_0401,
            max: u64::from(MAX_PACKET_LEN)
        }
    );
}

#[test]
fn packet_larger_than_buffer_limit_is_rejected_from_its_header() {
    let mut c = host_rx();
    c.set_max_buffered(1024);
    let head = hx("65000000 08100000 01000000 | 02 00 0010 00000000");
    c.feed(&head).unwrap();
    let e = c.next_frame().unwrap_err();
    assert!(matches!(e, Error::PacketTooLarge { max: 1024, .. }), "{e}");
    // The body is skipped as it arrives, without buffering.
    c.feed(&[0u8; 1000]).unwrap();
    c.feed(&[0u8; 3096]).unwrap();
    assert_eq!(c.buffered(), 0);
    c.feed(&hx("03000000 00000000 02000000")).unwrap();
    assert_eq!(
        c.next_frame().unwrap(),
        Some(Frame {
            id: 2,
            packet: Packet::Reset
        })
    );
}

#[test]
fn data_larger_than_128_mib() {
    #[rustfmt::skip]
    let cases = [
        // An IN request for 128 MiB + 1 (needs the 32-bit bulk length).
        (rx(Role::Host, 0x40), hx("65000000 0a000000 00000000 | 81 00 0100 00000000 0008"), T::BulkPacket),
        // start_bulk_receiving bytes_per_transfer.
        (rx(Role::Host, 0x80), hx("19000000 0a000000 00000000 | 00000000 01000008 81 04"), T::StartBulkReceiving),
        // buffered_bulk_packet length.
        (rx(Role::Guest, 0x80), hx("68000000 0a000000 00000000 | 00000000 01000008 81 00"), T::BufferedBulkPacket),
    ];
    let too_large = |packet| Error::DataTooLarge {
        packet,
        length: MAX_DATA_LEN + 1,
        max: MAX_DATA_LEN,
    };
    assert_rejected(cases, |packet, _| too_large(packet));
    let request = bulk(0x81, MAX_DATA_LEN + 1, Bytes::new());
    assert_eq!(encode_err(0x40, request), too_large(T::BulkPacket));
}

#[test]
fn out_request_data_must_match_length() {
    // Bulk OUT says 31 bytes but carries 30.
    let e = err(
        &mut host_rx(),
        &with_zeros("65000000 26000000 00000000 | 02 00 1f00 00000000", 30),
    );
    let expected = Error::DataLengthMismatch {
        packet: T::BulkPacket,
        endpoint: 0x02,
        length: 31,
        data_len: 30,
    };
    assert_eq!(e, expected);
    assert_eq!(encode_err(NONE, bulk(0x02, 31, z(30))), expected);
}

#[test]
fn in_reply_data_must_match_length() {
    let reply = with_zeros("64000000 0c000000 00000000 | 80 06 80 00 0001 0000 1200", 2);
    assert!(matches!(
        err(&mut guest_rx(), &reply),
        Error::DataLengthMismatch {
            packet: T::ControlPacket,
            length: 18,
            data_len: 2,
            ..
        }
    ));
}

#[test]
fn in_request_must_not_carry_data() {
    let request = with_zeros("65000000 0c000000 00000000 | 81 00 0400 00000000", 4);
    let e = err(&mut host_rx(), &request);
    assert_eq!(e, unexpected_data(0x81, Role::Guest));
    let p = ControlPacket {
        endpoint: 0x80,
        request: 6,
        request_type: 0x80,
        status: Status::Success,
        value: 0x100,
        index: 0,
        length: 1,
        data: Bytes::from_static(&[1]),
    };
    assert!(matches!(encode_err(NONE, p), Error::UnexpectedData { .. }));
}

#[test]
fn out_reply_must_not_carry_data() {
    let reply = with_zeros("65000000 0c000000 00000000 | 02 00 0400 00000000", 4);
    let e = err(&mut guest_rx(), &reply);
    assert_eq!(e, unexpected_data(0x02, Role::Host));
}

#[test]
fn iso_interrupt_buffered_wrong_direction() {
    #[rustfmt::skip]
    let cases = [
        // Iso on an IN endpoint from the guest (no data).
        (host_rx(), hx("66000000 04000000 00000000 | 81 00 0000"), (T::IsoPacket, 0x81)),
        // Iso on an OUT endpoint from the host.
        (guest_rx(), hx("66000000 04000000 00000000 | 01 00 0000"), (T::IsoPacket, 0x01)),
        // Interrupt IN requested by the guest (it must use interrupt receiving).
        (host_rx(), hx("67000000 04000000 00000000 | 83 00 0800"), (T::InterruptPacket, 0x83)),
        // Buffered bulk on an OUT endpoint.
        (rx(Role::Guest, 0x80), hx("68000000 0a000000 00000000 | 00000000 00000000 02 00"), (T::BufferedBulkPacket, 0x02)),
    ];
    assert_rejected(cases, |(packet, endpoint), sender| Error::WrongDirection {
        packet,
        endpoint,
        sender,
    });
}

#[test]
fn endpoint_must_be_input() {
    let not_input = |packet, endpoint| Error::EndpointNotInput { packet, endpoint };
    // Interrupt receiving on OUT endpoint 3.
    #[rustfmt::skip]
    let interrupt = [
        (host_rx(), hx("0f000000 01000000 00000000 | 03"), T::StartInterruptReceiving),
        (host_rx(), hx("10000000 01000000 00000000 | 03"), T::StopInterruptReceiving),
        (guest_rx(), hx("11000000 02000000 00000000 | 00 03"), T::InterruptReceivingStatus),
    ];
    assert_rejected(interrupt, |packet, _| not_input(packet, 3));
    // Bulk receiving on OUT endpoint 2.
    #[rustfmt::skip]
    let bulk = [
        (rx(Role::Host, 0x80), hx("19000000 0a000000 00000000 | 00000000 00400000 02 04"), T::StartBulkReceiving),
        (rx(Role::Host, 0x80), hx("1a000000 05000000 00000000 | 00000000 02"), T::StopBulkReceiving),
        (rx(Role::Guest, 0x80), hx("1b000000 06000000 00000000 | 00000000 02 00"), T::BulkReceivingStatus),
    ];
    assert_rejected(bulk, |packet, _| not_input(packet, 2));
    let request = StartInterruptReceiving { endpoint: 3 };
    assert_eq!(
        encode_err(NONE, request),
        not_input(T::StartInterruptReceiving, 3)
    );
}

#[test]
fn invalid_status_values_from_host() {
    let e = err(&mut guest_rx(), &hx("08000000 02000000 00000000 | 07 01"));
    assert_eq!(e, Error::InvalidStatus(7));
    let e = err(
        &mut guest_rx(),
        &hx("65000000 08000000 00000000 | 02 ff 1f00 00000000"),
    );
    assert_eq!(e, Error::InvalidStatus(0xff));
    for (t, body) in [
        ("0b000000 03000000", "09 00 00"),
        ("0e000000 02000000", "09 81"),
        ("11000000 02000000", "09 81"),
        ("14000000 09000000", "00000000 00000000 09"),
        ("64000000 0a000000", "80 06 80 09 0001 0000 0000"),
        ("66000000 04000000", "81 09 0000"),
        ("67000000 04000000", "81 09 0000"),
    ] {
        let e = err(&mut guest_rx(), &hx(&format!("{t} 00000000 | {body}")));
        assert_eq!(e, Error::InvalidStatus(9), "{t}");
    }
}

#[test]
fn invalid_speed() {
    let e = err(
        &mut guest_rx(),
        &hx("01000000 08000000 00000000 | 04000000 8107 6755"),
    );
    assert_eq!(e, Error::InvalidSpeed(4));
}

#[test]
fn invalid_endpoint_type() {
    let mut types = [0xffu8; 32];
    types[5] = 4;
    let e = err(
        &mut guest_rx(),
        &cat(&[&hx("05000000 60000000 00000000"), &types, &z(64)]),
    );
    assert_eq!(e, Error::InvalidEndpointType(4));
}

#[test]
fn too_many_interfaces() {
    let e = err(
        &mut guest_rx(),
        &cat(&[&hx("04000000 84000000 00000000 | 21000000"), &z(128)]),
    );
    assert_eq!(e, Error::TooManyInterfaces(33));
    let (mut tx, _) = pair(Role::Host, NONE, NONE);
    let info = InterfaceInfo {
        interfaces: vec![Interface::default(); 33],
    };
    assert_eq!(
        tx.encode(0, &info.into()),
        Err(Error::TooManyInterfaces(33))
    );
}

#[test]
fn capability_gated_packets() {
    #[rustfmt::skip]
    let cases = [
        // Receiver lacks `filter`.
        (host_rx(), hx("16000000 00000000 00000000"), (T::FilterReject, Cap::Filter)),
        (guest_rx(), hx("17000000 02000000 00000000 | 3100"), (T::FilterFilter, Cap::Filter)),
        // Receiver lacks `device_disconnect_ack`.
        (host_rx(), hx("18000000 00000000 00000000"), (T::DeviceDisconnectAck, Cap::DeviceDisconnectAck)),
        // Receiver lacks `bulk_receiving`.
        (host_rx(), hx("19000000 0a000000 00000000 | 00000000 00400000 81 04"), (T::StartBulkReceiving, Cap::BulkReceiving)),
        (guest_rx(), hx(BUFFERED_BULK_IN), (T::BufferedBulkPacket, Cap::BulkReceiving)),
    ];
    let missing = |(packet, cap), _| Error::MissingCap { packet, cap };
    assert_rejected(cases, missing);
    // Encoding checks the peer's caps: ours alone is not enough.
    let mut tx = Codec::with_caps(Role::Host, Caps::from_bits(0x04), Caps::empty());
    let filter = FilterFilter {
        rules: "-1,-1,-1,-1,1".into(),
    };
    let expected = missing((T::FilterFilter, Cap::Filter), Role::Host);
    assert_eq!(tx.encode(0, &filter.into()), Err(expected));
}

#[test]
fn bulk_length_over_16_bits_needs_cap() {
    let (mut tx, _) = pair(Role::Guest, 0x40, NONE);
    assert_eq!(
        tx.encode(1, &bulk(0x81, 70000, Bytes::new()).into()),
        Err(Error::BulkLengthNeedsCap(70000))
    );
}

#[test]
fn malformed_filter_strings() {
    let c = || rx(Role::Host, 0x04);
    #[rustfmt::skip]
    let cases = [
        (c(), hx("17000000 00000000 00000000"), "no data"),
        (c(), hx("17000000 02000000 00000000 | 3131"), "not NUL-terminated"),
        (c(), hx("17000000 03000000 00000000 | 310031"), "not NUL-terminated"),
        (c(), hx("17000000 03000000 00000000 | 310000"), "rules contain NUL"),
        (c(), hx("17000000 02000000 00000000 | ff00"), "rules are not UTF-8"),
    ];
    assert_rejected(cases, |reason, _| Error::BadFilter(reason));
    assert_eq!(
        err(&mut c(), &hx("17000000 03000000 00000000 | 310031")).to_string(),
        "filter_filter: not NUL-terminated"
    );
    let filter = FilterFilter {
        rules: "a\0b".into(),
    };
    assert_eq!(
        c().encode(0, &filter.into()),
        Err(Error::BadFilter("rules contain NUL"))
    );
}

#[test]
fn bad_hello_versions_on_encode() {
    let mut c = Codec::new(Role::Host);
    assert_eq!(
        c.encode(0, &Hello::new("x".repeat(64), Caps::empty()).into()),
        Err(Error::BadVersion)
    );
    assert_eq!(
        c.encode(0, &Hello::new("a\0b", Caps::empty()).into()),
        Err(Error::BadVersion)
    );
    assert!(c
        .encode(0, &Hello::new("x".repeat(63), Caps::empty()).into())
        .is_ok());
}

#[test]
fn lenient_hello_version_decoding() {
    // No NUL in 64 bytes: cut to 63 (as the reference parser); bad UTF-8 is replaced.
    let mut c = Codec::new(Role::Host);
    let f = decode_one(
        &mut c,
        &cat(&[
            &hx("00000000 44000000 00000000"),
            &[b'a'; 64],
            &hx("7e000000"),
        ]),
    )
    .unwrap();
    assert!(matches!(&f.packet, Packet::Hello(h) if h.version == "a".repeat(63)));
    let mut c = Codec::new(Role::Host);
    let f = decode_one(
        &mut c,
        &cat(&[&hx("00000000 40000000 00000000 | 61ff62 00 636363"), &z(57)]),
    )
    .unwrap();
    assert!(matches!(&f.packet, Packet::Hello(h) if h.version == "a\u{fffd}b"));
}

#[test]
fn hello_must_come_first() {
    let mut c = Codec::new(Role::Host);
    let e = err(&mut c, &hx("03000000 00000000 00000000"));
    assert_eq!(e, Error::HelloNotFirst(PacketType::Reset));
}

#[test]
fn duplicate_hello() {
    let mut c = Codec::new(Role::Host);
    let hello = cat(&[&hx("00000000 44000000 00000000"), &z(64), &hx("00000000")]);
    decode_one(&mut c, &hello).unwrap();
    assert_eq!(err(&mut c, &hello), Error::DuplicateHello);
    let mut c = Codec::new(Role::Host);
    c.encode(0, &Hello::new("a", Caps::empty()).into()).unwrap();
    assert_eq!(
        c.encode(0, &Hello::new("a", Caps::empty()).into()),
        Err(Error::DuplicateHello)
    );
}

#[test]
fn encode_before_hellos() {
    let mut c = Codec::new(Role::Host);
    assert_eq!(
        c.encode(0, &Packet::DeviceDisconnect),
        Err(Error::OwnHelloNotSent(PacketType::DeviceDisconnect))
    );
    c.encode(0, &Hello::new("a", Caps::HOST_DEFAULT).into())
        .unwrap();
    assert_eq!(
        c.encode(0, &Packet::DeviceDisconnect),
        Err(Error::PeerHelloPending(PacketType::DeviceDisconnect))
    );
}

#[test]
fn id_too_large_for_32bit_header() {
    let (mut tx, _) = pair(Role::Guest, NONE, NONE);
    assert_eq!(
        tx.encode(1 << 32, &Packet::Reset),
        Err(Error::IdTooLarge(1 << 32))
    );
    let (mut tx, _) = pair(Role::Guest, 0x20, 0x20);
    assert!(tx.encode(1 << 32, &Packet::Reset).is_ok());
    // 64-bit ids need both sides.
    let (mut tx, _) = pair(Role::Guest, 0x20, NONE);
    assert!(tx.encode(1 << 32, &Packet::Reset).is_err());
}

#[test]
fn buffer_limit() {
    let mut c = host_rx();
    c.set_max_buffered(16);
    c.feed(&[0u8; 10]).unwrap();
    assert_eq!(
        c.feed(&[0u8; 7]),
        Err(Error::BufferFull {
            buffered: 10,
            incoming: 7,
            limit: 16
        })
    );
    assert_eq!(c.buffered(), 10, "a rejected chunk is not consumed");
    c.feed(&[0u8; 6]).unwrap();
}

#[test]
fn encode_error_appends_nothing() {
    let (mut tx, _) = pair(Role::Host, NONE, NONE);
    let mut out = vec![1, 2, 3];
    assert!(tx.encode_into(0, &Packet::Reset, &mut out).is_err());
    assert_eq!(out, [1, 2, 3]);
}

#[test]
fn decoder_recovers_after_bad_packets() {
    // bad type, bad length, bad status, then a good packet: split byte by byte.
    let stream = cat(&[
        &hx("1c000000 04000000 00000000 | deadbeef"),
        &hx("06000000 03000000 01000000 | 010203"),
        &hx("64000000 0a000000 02000000 | 80 06 80 00 0001 0000 1200"),
        &hx("03000000 00000000 03000000"),
    ]);
    let mut whole = host_rx();
    let a = decode_all(&mut whole, &stream);
    let mut split = host_rx();
    let mut b = Vec::new();
    for byte in &stream {
        split.feed(std::slice::from_ref(byte)).unwrap();
        loop {
            match split.next_frame() {
                Ok(Some(f)) => b.push(Ok(f)),
                Ok(None) => break,
                Err(e) => b.push(Err(e)),
            }
        }
    }
    assert_eq!(a, b);
    assert_eq!(a.len(), 4);
    assert!(matches!(a[0], Err(Error::UnknownPacketType(28))));
    assert!(matches!(a[1], Err(Error::BadLength { .. })));
    assert!(matches!(&a[2], Ok(f) if f.id == 2));
    assert_eq!(
        a[3],
        Ok(Frame {
            id: 3,
            packet: Packet::Reset
        })
    );
}

#[test]
fn error_messages_are_short_and_specific() {
    let e = Error::DataLengthMismatch {
        packet: PacketType::BulkPacket,
        endpoint: 2,
        length: 31,
        data_len: 30,
    };
    assert_eq!(
        e.to_string(),
        "bulk_packet on endpoint 0x02: 30 data bytes but length field is 31"
    );
    let e = Error::MissingCap {
        packet: PacketType::FilterReject,
        cap: Cap::Filter,
    };
    assert_eq!(
        e.to_string(),
        "filter_reject needs the filter capability on the receiving side"
    );
    let e = Error::WrongSender {
        packet: PacketType::Reset,
        sender: Role::Host,
    };
    assert_eq!(e.to_string(), "reset must not be sent by the usb-host");
}
