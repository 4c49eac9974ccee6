//! One test (at least) per validation rule: every rule rejects with its
//! typed error, on decode and, where a typed packet can express the
//! mistake, on encode.
#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

mod common;

use common::*;
use usbredir::*;

const NONE: u32 = 0;

/// Host-side decoder after hellos with no caps (12-byte header).
fn host_rx() -> Codec {
    Codec::with_caps(Role::Host, Caps::empty(), Caps::empty())
}

/// Guest-side decoder after hellos with no caps.
fn guest_rx() -> Codec {
    Codec::with_caps(Role::Guest, Caps::empty(), Caps::empty())
}

fn err(codec: &mut Codec, bytes: &[u8]) -> Error {
    decode_one(codec, bytes).expect_err("packet should be rejected")
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
    // device_connect from the guest; reset from the host.
    let e = err(
        &mut host_rx(),
        &hx("01000000 08000000 00000000 | 0200000081076755"),
    );
    assert_eq!(
        e,
        Error::WrongSender {
            packet: PacketType::DeviceConnect,
            sender: Role::Guest
        }
    );
    let e = err(&mut guest_rx(), &hx("03000000 00000000 00000000"));
    assert_eq!(
        e,
        Error::WrongSender {
            packet: PacketType::Reset,
            sender: Role::Host
        }
    );
    let e = err(
        &mut host_rx(),
        &hx("68000000 0a000000 00000000 | 00000000 00000000 81 00"),
    );
    assert!(matches!(
        e,
        Error::WrongSender {
            packet: PacketType::BufferedBulkPacket,
            ..
        }
    ));
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
    // set_configuration needs exactly 1 byte.
    let e = err(&mut host_rx(), &hx("06000000 02000000 00000000 | 0101"));
    assert_eq!(
        e,
        Error::BadLength {
            packet: PacketType::SetConfiguration,
            length: 2,
            header_len: 1
        }
    );
    let e = err(&mut host_rx(), &hx("06000000 00000000 00000000"));
    assert!(matches!(e, Error::BadLength { .. }));
    // reset carries nothing.
    let e = err(&mut host_rx(), &hx("03000000 01000000 00000000 | 00"));
    assert!(matches!(
        e,
        Error::BadLength {
            packet: PacketType::Reset,
            ..
        }
    ));
    // control_packet shorter than its 10-byte header.
    let e = err(
        &mut host_rx(),
        &hx("64000000 09000000 00000000 | 800680000001000012"),
    );
    assert!(matches!(
        e,
        Error::BadLength {
            packet: PacketType::ControlPacket,
            ..
        }
    ));
}

#[test]
fn type_header_length_depends_on_negotiated_caps() {
    // 10-byte device_connect without connect_device_version negotiated.
    let e = err(
        &mut guest_rx(),
        &hx("01000000 0a000000 00000000 | 02000000 8107 6755 0001"),
    );
    assert_eq!(
        e,
        Error::BadLength {
            packet: PacketType::DeviceConnect,
            length: 10,
            header_len: 8
        }
    );
    // 8-byte device_connect although both have the cap.
    let mut g = Codec::with_caps(Role::Guest, Caps::from_bits(2), Caps::from_bits(2));
    let e = err(
        &mut g,
        &hx("01000000 08000000 00000000 | 02000000 8107 6755"),
    );
    assert!(matches!(e, Error::BadLength { header_len: 10, .. }));
    // Only one side has the cap: 8 bytes expected.
    let mut g = Codec::with_caps(Role::Guest, Caps::from_bits(2), Caps::empty());
    let e = err(
        &mut g,
        &hx("01000000 0a000000 00000000 | 02000000 8107 6755 0001"),
    );
    assert!(matches!(e, Error::BadLength { header_len: 8, .. }));
    // 160-byte ep_info without ep_info_max_packet_size.
    let e = err(
        &mut guest_rx(),
        &cat(&[&hx("05000000 a0000000 00000000"), &[0xff; 32], &z(128)]),
    );
    assert!(matches!(
        e,
        Error::BadLength {
            packet: PacketType::EpInfo,
            header_len: 96,
            ..
        }
    ));
    // bulk_streams without max_packet_size does not count: 96 bytes, not 288.
    let mut g = Codec::with_caps(Role::Guest, Caps::from_bits(1), Caps::from_bits(1));
    let e = err(
        &mut g,
        &cat(&[&hx("05000000 20010000 00000000"), &[0xff; 32], &z(256)]),
    );
    assert!(matches!(e, Error::BadLength { header_len: 96, .. }));
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
    // An IN request for 128 MiB + 1 (needs the 32-bit bulk length).
    let mut c = Codec::with_caps(Role::Host, Caps::from_bits(0x40), Caps::from_bits(0x40));
    let e = err(
        &mut c,
        &hx("65000000 0a000000 00000000 | 81 00 0100 00000000 0008"),
    );
    assert_eq!(
        e,
        Error::DataTooLarge {
            packet: PacketType::BulkPacket,
            length: MAX_DATA_LEN + 1,
            max: MAX_DATA_LEN
        }
    );
    let (mut tx, _) = pair(Role::Guest, 0x40, 0x40);
    let p = BulkPacket {
        endpoint: 0x81,
        status: Status::Success,
        length: MAX_DATA_LEN + 1,
        stream_id: 0,
        data: Bytes::new(),
    };
    assert!(matches!(
        tx.encode(1, &p.into()),
        Err(Error::DataTooLarge { .. })
    ));
    // start_bulk_receiving bytes_per_transfer.
    let mut c = Codec::with_caps(Role::Host, Caps::from_bits(0x80), Caps::from_bits(0x80));
    let e = err(
        &mut c,
        &hx("19000000 0a000000 00000000 | 00000000 01000008 81 04"),
    );
    assert!(matches!(
        e,
        Error::DataTooLarge {
            packet: PacketType::StartBulkReceiving,
            ..
        }
    ));
    // buffered_bulk_packet length.
    let mut c = Codec::with_caps(Role::Guest, Caps::from_bits(0x80), Caps::from_bits(0x80));
    let e = err(
        &mut c,
        &hx("68000000 0a000000 00000000 | 00000000 01000008 81 00"),
    );
    assert!(matches!(
        e,
        Error::DataTooLarge {
            packet: PacketType::BufferedBulkPacket,
            ..
        }
    ));
}

#[test]
fn out_request_data_must_match_length() {
    // Bulk OUT says 31 bytes but carries 30.
    let e = err(
        &mut host_rx(),
        &cat(&[
            &hx("65000000 26000000 00000000 | 02 00 1f00 00000000"),
            &z(30),
        ]),
    );
    assert_eq!(
        e,
        Error::DataLengthMismatch {
            packet: PacketType::BulkPacket,
            endpoint: 0x02,
            length: 31,
            data_len: 30
        }
    );
    let (mut tx, _) = pair(Role::Guest, NONE, NONE);
    let p = BulkPacket {
        endpoint: 0x02,
        status: Status::Success,
        length: 31,
        stream_id: 0,
        data: Bytes::from(z(30)),
    };
    assert!(matches!(
        tx.encode(1, &p.into()),
        Err(Error::DataLengthMismatch { .. })
    ));
}

#[test]
fn in_reply_data_must_match_length() {
    let e = err(
        &mut guest_rx(),
        &cat(&[
            &hx("64000000 0c000000 00000000 | 80 06 80 00 0001 0000 1200"),
            &z(2),
        ]),
    );
    assert!(matches!(
        e,
        Error::DataLengthMismatch {
            packet: PacketType::ControlPacket,
            length: 18,
            data_len: 2,
            ..
        }
    ));
}

#[test]
fn in_request_must_not_carry_data() {
    let e = err(
        &mut host_rx(),
        &cat(&[
            &hx("65000000 0c000000 00000000 | 81 00 0400 00000000"),
            &z(4),
        ]),
    );
    assert_eq!(
        e,
        Error::UnexpectedData {
            packet: PacketType::BulkPacket,
            endpoint: 0x81,
            sender: Role::Guest,
            data_len: 4
        }
    );
    let (mut tx, _) = pair(Role::Guest, NONE, NONE);
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
    assert!(matches!(
        tx.encode(1, &p.into()),
        Err(Error::UnexpectedData { .. })
    ));
}

#[test]
fn out_reply_must_not_carry_data() {
    let e = err(
        &mut guest_rx(),
        &cat(&[
            &hx("65000000 0c000000 00000000 | 02 00 0400 00000000"),
            &z(4),
        ]),
    );
    assert!(matches!(
        e,
        Error::UnexpectedData {
            sender: Role::Host,
            ..
        }
    ));
}

#[test]
fn iso_interrupt_buffered_wrong_direction() {
    // Iso on an IN endpoint from the guest (no data): wrong direction.
    let e = err(
        &mut host_rx(),
        &hx("66000000 04000000 00000000 | 81 00 0000"),
    );
    assert_eq!(
        e,
        Error::WrongDirection {
            packet: PacketType::IsoPacket,
            endpoint: 0x81,
            sender: Role::Guest
        }
    );
    // Iso on an OUT endpoint from the host.
    let e = err(
        &mut guest_rx(),
        &hx("66000000 04000000 00000000 | 01 00 0000"),
    );
    assert!(matches!(
        e,
        Error::WrongDirection {
            packet: PacketType::IsoPacket,
            ..
        }
    ));
    // Interrupt IN requested by the guest (it must use interrupt receiving).
    let e = err(
        &mut host_rx(),
        &hx("67000000 04000000 00000000 | 83 00 0800"),
    );
    assert!(matches!(
        e,
        Error::WrongDirection {
            packet: PacketType::InterruptPacket,
            ..
        }
    ));
    // Buffered bulk on an OUT endpoint.
    let mut c = Codec::with_caps(Role::Guest, Caps::from_bits(0x80), Caps::from_bits(0x80));
    let e = err(
        &mut c,
        &hx("68000000 0a000000 00000000 | 00000000 00000000 02 00"),
    );
    assert!(matches!(
        e,
        Error::WrongDirection {
            packet: PacketType::BufferedBulkPacket,
            ..
        }
    ));
}

#[test]
fn endpoint_must_be_input() {
    for (t, body) in [("0f000000", "03"), ("10000000", "03")] {
        let e = err(
            &mut host_rx(),
            &hx(&format!("{t} 01000000 00000000 | {body}")),
        );
        assert!(
            matches!(e, Error::EndpointNotInput { endpoint: 0x03, .. }),
            "{e}"
        );
    }
    let e = err(&mut guest_rx(), &hx("11000000 02000000 00000000 | 00 03"));
    assert!(matches!(
        e,
        Error::EndpointNotInput {
            packet: PacketType::InterruptReceivingStatus,
            ..
        }
    ));
    let mut c = Codec::with_caps(Role::Host, Caps::from_bits(0x80), Caps::from_bits(0x80));
    let e = err(
        &mut c,
        &hx("19000000 0a000000 00000000 | 00000000 00400000 02 04"),
    );
    assert!(matches!(
        e,
        Error::EndpointNotInput {
            packet: PacketType::StartBulkReceiving,
            ..
        }
    ));
    let e = err(&mut c, &hx("1a000000 05000000 00000000 | 00000000 02"));
    assert!(matches!(
        e,
        Error::EndpointNotInput {
            packet: PacketType::StopBulkReceiving,
            ..
        }
    ));
    let mut c = Codec::with_caps(Role::Guest, Caps::from_bits(0x80), Caps::from_bits(0x80));
    let e = err(&mut c, &hx("1b000000 06000000 00000000 | 00000000 02 00"));
    assert!(matches!(
        e,
        Error::EndpointNotInput {
            packet: PacketType::BulkReceivingStatus,
            ..
        }
    ));
    let (mut tx, _) = pair(Role::Guest, NONE, NONE);
    assert!(matches!(
        tx.encode(0, &StartInterruptReceiving { endpoint: 3 }.into()),
        Err(Error::EndpointNotInput { .. })
    ));
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
    // Receiver lacks `filter`.
    let e = err(&mut host_rx(), &hx("16000000 00000000 00000000"));
    assert_eq!(
        e,
        Error::MissingCap {
            packet: PacketType::FilterReject,
            cap: Cap::Filter
        }
    );
    let e = err(&mut guest_rx(), &hx("17000000 02000000 00000000 | 3100"));
    assert_eq!(
        e,
        Error::MissingCap {
            packet: PacketType::FilterFilter,
            cap: Cap::Filter
        }
    );
    // Receiver lacks `device_disconnect_ack`.
    let e = err(&mut host_rx(), &hx("18000000 00000000 00000000"));
    assert_eq!(
        e,
        Error::MissingCap {
            packet: PacketType::DeviceDisconnectAck,
            cap: Cap::DeviceDisconnectAck
        }
    );
    // Receiver lacks `bulk_receiving`.
    let e = err(
        &mut host_rx(),
        &hx("19000000 0a000000 00000000 | 00000000 00400000 81 04"),
    );
    assert!(matches!(
        e,
        Error::MissingCap {
            cap: Cap::BulkReceiving,
            ..
        }
    ));
    let e = err(
        &mut guest_rx(),
        &hx("68000000 0a000000 00000000 | 00000000 00000000 81 00"),
    );
    assert!(matches!(
        e,
        Error::MissingCap {
            cap: Cap::BulkReceiving,
            ..
        }
    ));
    // Encoding checks the peer's caps: ours alone is not enough.
    let mut tx = Codec::with_caps(Role::Host, Caps::from_bits(0x04), Caps::empty());
    assert_eq!(
        tx.encode(
            0,
            &FilterFilter {
                rules: "-1,-1,-1,-1,1".into()
            }
            .into()
        ),
        Err(Error::MissingCap {
            packet: PacketType::FilterFilter,
            cap: Cap::Filter
        })
    );
}

#[test]
fn bulk_length_over_16_bits_needs_cap() {
    let (mut tx, _) = pair(Role::Guest, 0x40, NONE);
    let p = BulkPacket {
        endpoint: 0x81,
        status: Status::Success,
        length: 70000,
        stream_id: 0,
        data: Bytes::new(),
    };
    assert_eq!(
        tx.encode(1, &p.into()),
        Err(Error::BulkLengthNeedsCap(70000))
    );
}

#[test]
fn malformed_filter_strings() {
    let c = || Codec::with_caps(Role::Host, Caps::from_bits(4), Caps::from_bits(4));
    assert_eq!(
        err(&mut c(), &hx("17000000 00000000 00000000")),
        Error::BadFilter("no data")
    );
    assert_eq!(
        err(&mut c(), &hx("17000000 02000000 00000000 | 3131")),
        Error::BadFilter("not NUL-terminated")
    );
    assert_eq!(
        err(&mut c(), &hx("17000000 03000000 00000000 | 310031")).to_string(),
        "filter_filter: not NUL-terminated"
    );
    assert_eq!(
        err(&mut c(), &hx("17000000 03000000 00000000 | 310000")),
        Error::BadFilter("rules contain NUL")
    );
    assert_eq!(
        err(&mut c(), &hx("17000000 02000000 00000000 | ff00")),
        Error::BadFilter("rules are not UTF-8")
    );
    let mut tx = c();
    assert_eq!(
        tx.encode(
            0,
            &FilterFilter {
                rules: "a\0b".into()
            }
            .into()
        ),
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
