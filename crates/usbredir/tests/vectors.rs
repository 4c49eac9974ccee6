//! Hand-written byte vectors for every packet type, from the struct layouts
//! of usbredir 0.7 (little-endian, packed).
#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

mod common;

use common::*;
use usbredir::*;

const NONE: u32 = 0;
/// filter (2) + device_disconnect_ack (3) + bulk_receiving (7), no 64-bit ids.
const GATED: u32 = 0x8C;

#[test]
fn host_hello_is_80_bytes() {
    let mut host = Codec::new(Role::Host);
    let bytes = host
        .encode(
            0,
            &Packet::Hello(Hello::new("rust-fwd 0.1", Caps::HOST_DEFAULT)),
        )
        .unwrap();
    let expected = cat(&[
        &hx("00000000 44000000 00000000"),
        b"rust-fwd 0.1",
        &z(64 - 12),
        &hx("7E000000"),
    ]);
    assert_eq!(bytes.len(), 80);
    assert_eq!(bytes, expected);

    let mut guest = Codec::new(Role::Guest);
    let f = decode_one(&mut guest, &bytes).unwrap();
    assert_eq!(f.id, 0);
    assert_eq!(
        f.packet,
        Packet::Hello(Hello {
            version: "rust-fwd 0.1".into(),
            cap_words: vec![0x7E]
        })
    );
    assert_eq!(guest.peer_caps(), Some(Caps::HOST_DEFAULT));
}

#[test]
fn qemu_hello_then_64bit_header_switch() {
    // What QEMU 7.2 sends on connect.
    let qemu = cat(&[
        &hx("00000000 44000000 00000000"),
        b"qemu usb-redir guest 7.2.22",
        &z(64 - 27),
        &hx("FF000000"),
    ]);
    let mut host = Codec::new(Role::Host);
    let hello = host
        .encode(0, &Packet::Hello(Hello::new("h", Caps::HOST_DEFAULT)))
        .unwrap();
    assert_eq!(&hello[..12], &hx("00000000 44000000 00000000")[..]);
    assert_eq!(host.header_len(), 12, "no switch before the peer hello");
    let f = decode_one(&mut host, &qemu).unwrap();
    assert!(matches!(&f.packet, Packet::Hello(h) if h.version == "qemu usb-redir guest 7.2.22"));
    assert_eq!(host.negotiated(), Caps::HOST_DEFAULT);
    assert_eq!(host.header_len(), 16);
    // Next packet from the guest uses the 16-byte header with a 64-bit id.
    let reset = hx("03000000 00000000 0100000002000000");
    let f = decode_one(&mut host, &reset).unwrap();
    assert_eq!(
        f,
        Frame {
            id: 0x2_0000_0001,
            packet: Packet::Reset
        }
    );
}

#[test]
fn hello_order_both_ways_keeps_32bit_hello_header() {
    // Peer hello first, then ours: our hello still uses the 12-byte header.
    let mut guest = Codec::new(Role::Guest);
    let host_hello = hx(&format!(
        "00000000 44000000 00000000 {} 7E000000",
        "00".repeat(64)
    ));
    decode_one(&mut guest, &host_hello).unwrap();
    assert_eq!(guest.header_len(), 12, "our hello not sent yet");
    let bytes = guest
        .encode(0, &Packet::Hello(Hello::new("", Caps::QEMU_GUEST)))
        .unwrap();
    assert_eq!(bytes.len(), 80);
    assert_eq!(guest.header_len(), 16);
}

#[test]
fn hello_with_zero_and_two_cap_words() {
    let mut g = Codec::new(Role::Guest);
    let f = decode_one(
        &mut g,
        &cat(&[&hx("00000000 40000000 00000000"), b"old", &z(61)]),
    )
    .unwrap();
    assert_eq!(
        f.packet,
        Packet::Hello(Hello {
            version: "old".into(),
            cap_words: vec![]
        })
    );
    assert_eq!(g.peer_caps(), Some(Caps::empty()));

    let mut g = Codec::new(Role::Guest);
    let bytes = cat(&[
        &hx("00000000 48000000 00000000"),
        b"new",
        &z(61),
        &hx("7E000000 01000000"),
    ]);
    let f = decode_one(&mut g, &bytes).unwrap();
    assert_eq!(
        f.packet,
        Packet::Hello(Hello {
            version: "new".into(),
            cap_words: vec![0x7E, 1]
        })
    );
}

fn dc() -> DeviceConnect {
    DeviceConnect {
        speed: Speed::High,
        device_class: 0,
        device_subclass: 0,
        device_protocol: 0,
        vendor_id: 0x0781,
        product_id: 0x5567,
        device_version_bcd: 0x0100,
    }
}

#[test]
fn device_connect_with_and_without_version() {
    check_vector(
        Role::Host,
        0x02,
        0x02,
        0,
        Packet::DeviceConnect(dc()),
        &hx("01000000 0a000000 00000000 | 02 00 00 00 8107 6755 0001"),
    );
    check_vector(
        Role::Host,
        0x02,
        NONE,
        0,
        Packet::DeviceConnect(DeviceConnect {
            device_version_bcd: 0,
            ..dc()
        }),
        &hx("01000000 08000000 00000000 | 02 00 00 00 8107 6755"),
    );
    // Without the cap the version is not sent: the receiver sees 0.
    let (mut tx, mut rx) = pair(Role::Host, 0x02, NONE);
    let bytes = tx.encode(0, &Packet::DeviceConnect(dc())).unwrap();
    assert_eq!(bytes.len(), 20);
    let f = decode_one(&mut rx, &bytes).unwrap();
    assert_eq!(
        f.packet,
        Packet::DeviceConnect(DeviceConnect {
            device_version_bcd: 0,
            ..dc()
        })
    );
}

#[test]
fn device_disconnect_reset_get_configuration_cancel() {
    check_vector(
        Role::Host,
        NONE,
        NONE,
        0,
        Packet::DeviceDisconnect,
        &hx("02000000 00000000 00000000"),
    );
    check_vector(
        Role::Guest,
        NONE,
        NONE,
        5,
        Packet::Reset,
        &hx("03000000 00000000 05000000"),
    );
    check_vector(
        Role::Guest,
        NONE,
        NONE,
        6,
        Packet::GetConfiguration,
        &hx("07000000 00000000 06000000"),
    );
    check_vector(
        Role::Guest,
        NONE,
        NONE,
        7,
        Packet::CancelDataPacket,
        &hx("15000000 00000000 07000000"),
    );
}

#[test]
fn interface_info_bot() {
    let info = InterfaceInfo {
        interfaces: vec![Interface {
            number: 0,
            class: 0x08,
            subclass: 0x06,
            protocol: 0x50,
        }],
    };
    let bytes = cat(&[
        &hx("04000000 84000000 00000000 | 01000000"),
        &z(32),
        &hx("08"),
        &z(31),
        &hx("06"),
        &z(31),
        &hx("50"),
        &z(31),
    ]);
    assert_eq!(bytes.len(), 12 + 132);
    check_vector(
        Role::Host,
        NONE,
        NONE,
        0,
        Packet::InterfaceInfo(info),
        &bytes,
    );
}

fn bot_ep_info() -> EpInfo {
    let bulk = |interval| Endpoint {
        ep_type: EndpointType::Bulk,
        interval,
        interface: 0,
        max_packet_size: 512,
        max_streams: 0,
    };
    EpInfo::new().with(0x02, bulk(0)).with(0x81, bulk(0))
}

fn ep_types() -> Vec<u8> {
    // slot 0 control, 2 bulk, 16 control, 17 bulk, the rest invalid.
    let mut t = vec![0xffu8; 32];
    t[0] = 0;
    t[2] = 2;
    t[16] = 0;
    t[17] = 2;
    t
}

#[test]
fn ep_info_96_bytes_without_caps() {
    let mut ep = bot_ep_info();
    for e in ep.endpoints.iter_mut() {
        e.max_packet_size = 0;
    }
    let bytes = cat(&[
        &hx("05000000 60000000 00000000"),
        &ep_types(),
        &z(32),
        &z(32),
    ]);
    check_vector(
        Role::Host,
        NONE,
        NONE,
        0,
        Packet::EpInfo(Box::new(ep)),
        &bytes,
    );
}

#[test]
fn ep_info_160_bytes_with_max_packet_size() {
    let mut mps = z(64);
    mps[0] = 0x40; // slot 0: 64
    mps[2 * 2 + 1] = 0x02; // slot 2: 512
    mps[16 * 2] = 0x40; // slot 16: 64
    mps[17 * 2 + 1] = 0x02; // slot 17: 512
    let bytes = cat(&[
        &hx("05000000 a0000000 00000000"),
        &ep_types(),
        &z(32),
        &z(32),
        &mps,
    ]);
    check_vector(
        Role::Host,
        0x10,
        0x10,
        0,
        Packet::EpInfo(Box::new(bot_ep_info())),
        &bytes,
    );
}

#[test]
fn ep_info_288_bytes_with_bulk_streams() {
    let mut ep = bot_ep_info();
    ep.endpoints[17].max_streams = 0x1f;
    let mut mps = z(64);
    mps[0] = 0x40;
    mps[5] = 0x02;
    mps[32] = 0x40;
    mps[35] = 0x02;
    let mut streams = z(128);
    streams[17 * 4] = 0x1f;
    let bytes = cat(&[
        &hx("05000000 20010000 00000000"),
        &ep_types(),
        &z(32),
        &z(32),
        &mps,
        &streams,
    ]);
    assert_eq!(bytes.len(), 12 + 288);
    check_vector(
        Role::Host,
        0x11,
        0x11,
        0,
        Packet::EpInfo(Box::new(ep)),
        &bytes,
    );
}

#[test]
fn configuration_packets() {
    check_vector(
        Role::Guest,
        NONE,
        NONE,
        1,
        SetConfiguration { configuration: 1 }.into(),
        &hx("06000000 01000000 01000000 | 01"),
    );
    check_vector(
        Role::Host,
        NONE,
        NONE,
        1,
        ConfigurationStatus {
            status: Status::Success,
            configuration: 1,
        }
        .into(),
        &hx("08000000 02000000 01000000 | 00 01"),
    );
    check_vector(
        Role::Host,
        NONE,
        NONE,
        2,
        ConfigurationStatus {
            status: Status::IoError,
            configuration: 0,
        }
        .into(),
        &hx("08000000 02000000 02000000 | 03 00"),
    );
}

#[test]
fn alt_setting_packets() {
    check_vector(
        Role::Guest,
        NONE,
        NONE,
        3,
        SetAltSetting {
            interface: 0,
            alt: 1,
        }
        .into(),
        &hx("09000000 02000000 03000000 | 00 01"),
    );
    check_vector(
        Role::Guest,
        NONE,
        NONE,
        4,
        GetAltSetting { interface: 2 }.into(),
        &hx("0a000000 01000000 04000000 | 02"),
    );
    check_vector(
        Role::Host,
        NONE,
        NONE,
        4,
        AltSettingStatus {
            status: Status::Inval,
            interface: 2,
            alt: 0xff,
        }
        .into(),
        &hx("0b000000 03000000 04000000 | 02 02 ff"),
    );
}

#[test]
fn iso_stream_packets() {
    check_vector(
        Role::Guest,
        NONE,
        NONE,
        8,
        StartIsoStream {
            endpoint: 0x81,
            pkts_per_urb: 8,
            no_urbs: 4,
        }
        .into(),
        &hx("0c000000 03000000 08000000 | 81 08 04"),
    );
    check_vector(
        Role::Guest,
        NONE,
        NONE,
        9,
        StopIsoStream { endpoint: 0x81 }.into(),
        &hx("0d000000 01000000 09000000 | 81"),
    );
    check_vector(
        Role::Host,
        NONE,
        NONE,
        9,
        IsoStreamStatus {
            status: Status::Stall,
            endpoint: 0x81,
        }
        .into(),
        &hx("0e000000 02000000 09000000 | 04 81"),
    );
}

#[test]
fn interrupt_receiving_packets() {
    check_vector(
        Role::Guest,
        NONE,
        NONE,
        1,
        StartInterruptReceiving { endpoint: 0x83 }.into(),
        &hx("0f000000 01000000 01000000 | 83"),
    );
    check_vector(
        Role::Guest,
        NONE,
        NONE,
        2,
        StopInterruptReceiving { endpoint: 0x83 }.into(),
        &hx("10000000 01000000 02000000 | 83"),
    );
    check_vector(
        Role::Host,
        NONE,
        NONE,
        2,
        InterruptReceivingStatus {
            status: Status::Success,
            endpoint: 0x83,
        }
        .into(),
        &hx("11000000 02000000 02000000 | 00 83"),
    );
}

#[test]
fn bulk_streams_packets() {
    check_vector(
        Role::Guest,
        NONE,
        NONE,
        0,
        AllocBulkStreams {
            endpoints: 0x0002_0004,
            no_streams: 16,
        }
        .into(),
        &hx("12000000 08000000 00000000 | 04000200 10000000"),
    );
    check_vector(
        Role::Guest,
        NONE,
        NONE,
        0,
        FreeBulkStreams {
            endpoints: 0x0002_0004,
        }
        .into(),
        &hx("13000000 04000000 00000000 | 04000200"),
    );
    check_vector(
        Role::Host,
        NONE,
        NONE,
        0,
        BulkStreamsStatus {
            endpoints: 0x0002_0004,
            no_streams: 16,
            status: Status::Success,
        }
        .into(),
        &hx("14000000 09000000 00000000 | 04000200 10000000 00"),
    );
}

#[test]
fn filter_packets() {
    check_vector(
        Role::Guest,
        GATED,
        GATED,
        0,
        Packet::FilterReject,
        &hx("16000000 00000000 00000000"),
    );
    let rules = "0x08,-1,-1,-1,1|-1,-1,-1,-1,0";
    let bytes = cat(&[&hx("17000000 1e000000 00000000"), rules.as_bytes(), &[0]]);
    for sender in [Role::Host, Role::Guest] {
        check_vector(
            sender,
            GATED,
            GATED,
            0,
            FilterFilter {
                rules: rules.into(),
            }
            .into(),
            &bytes,
        );
    }
}

#[test]
fn device_disconnect_ack() {
    check_vector(
        Role::Guest,
        GATED,
        GATED,
        0,
        Packet::DeviceDisconnectAck,
        &hx("18000000 00000000 00000000"),
    );
}

#[test]
fn bulk_receiving_packets() {
    check_vector(
        Role::Guest,
        GATED,
        GATED,
        3,
        StartBulkReceiving {
            stream_id: 0,
            bytes_per_transfer: 16384,
            endpoint: 0x81,
            no_transfers: 4,
        }
        .into(),
        &hx("19000000 0a000000 03000000 | 00000000 00400000 81 04"),
    );
    check_vector(
        Role::Guest,
        GATED,
        GATED,
        4,
        StopBulkReceiving {
            stream_id: 0,
            endpoint: 0x81,
        }
        .into(),
        &hx("1a000000 05000000 04000000 | 00000000 81"),
    );
    check_vector(
        Role::Host,
        GATED,
        GATED,
        4,
        BulkReceivingStatus {
            stream_id: 0,
            endpoint: 0x81,
            status: Status::Success,
        }
        .into(),
        &hx("1b000000 06000000 04000000 | 00000000 81 00"),
    );
    check_vector(
        Role::Host,
        GATED,
        GATED,
        0,
        BufferedBulkPacket {
            stream_id: 0,
            length: 4,
            endpoint: 0x81,
            status: Status::Success,
            data: Bytes::from_static(b"abcd"),
        }
        .into(),
        &hx("68000000 0e000000 00000000 | 00000000 04000000 81 00 | 61626364"),
    );
}

#[test]
fn control_packet_in_request_and_reply() {
    // GET_DESCRIPTOR(device, 18): note the field order endpoint, request, requesttype.
    let req = ControlPacket {
        endpoint: 0x80,
        request: 0x06,
        request_type: 0x80,
        status: Status::Success,
        value: 0x0100,
        index: 0,
        length: 18,
        data: Bytes::new(),
    };
    check_vector(
        Role::Guest,
        NONE,
        NONE,
        0x10,
        req.clone().into(),
        &hx("64000000 0a000000 10000000 | 80 06 80 00 0001 0000 1200"),
    );
    let desc = hx("12 01 0002 00 00 00 40 8107 6755 0001 01 02 03 01");
    let reply = ControlPacket {
        data: Bytes::from(desc.clone()),
        ..req
    };
    check_vector(
        Role::Host,
        NONE,
        NONE,
        0x10,
        reply.into(),
        &cat(&[
            &hx("64000000 1c000000 10000000 | 80 06 80 00 0001 0000 1200"),
            &desc,
        ]),
    );
}

#[test]
fn control_packet_out_request_and_reply() {
    // A class OUT request with 2 data bytes; the reply echoes the header without data.
    let req = ControlPacket {
        endpoint: 0x00,
        request: 0x09,
        request_type: 0x21,
        status: Status::Success,
        value: 0x0200,
        index: 0,
        length: 2,
        data: Bytes::from_static(&[0xAA, 0xBB]),
    };
    check_vector(
        Role::Guest,
        NONE,
        NONE,
        0x11,
        req.clone().into(),
        &hx("64000000 0c000000 11000000 | 00 09 21 00 0002 0000 0200 | AABB"),
    );
    let reply = ControlPacket {
        status: Status::Stall,
        length: 0,
        data: Bytes::new(),
        ..req
    };
    check_vector(
        Role::Host,
        NONE,
        NONE,
        0x11,
        reply.into(),
        &hx("64000000 0a000000 11000000 | 00 09 21 04 0002 0000 0000"),
    );
}

#[test]
fn guest_request_status_byte_is_ignored() {
    // QEMU leaves `status` uninitialised in requests: 0xCC must not be rejected.
    let (_, mut host) = pair(Role::Guest, NONE, NONE);
    let control = decode_one(
        &mut host,
        &hx("64000000 0a000000 01000000 | 80 06 80 CC 0001 0000 1200"),
    );
    assert!(
        matches!(control.unwrap().packet, Packet::ControlPacket(c) if c.status == Status::Success)
    );
    let bulk_in = decode_one(
        &mut host,
        &hx("65000000 08000000 02000000 | 81 CC 0002 00000000"),
    );
    assert_eq!(
        bulk_in.unwrap().packet,
        bulk(0x81, 512, Bytes::new()).into()
    );
}

#[test]
fn bulk_packet_16bit_length() {
    let cbw = hx("55534243 01000000 00080000 80 00 0a 28000000000000000100 000000000000");
    assert_eq!(cbw.len(), 31);
    let with_cbw = cat(&[
        &hx("65000000 27000000 20000000 | 02 00 1f00 00000000"),
        &cbw,
    ]);
    #[rustfmt::skip]
    let vectors = [
        (Role::Guest, 0x20, bulk(0x02, 31, cbw.clone()), with_cbw),
        (Role::Host, 0x20, bulk(0x02, 31, Bytes::new()), hx("65000000 08000000 20000000 | 02 00 1f00 00000000")),
        (Role::Guest, 0x21, bulk(0x81, 2048, Bytes::new()), hx("65000000 08000000 21000000 | 81 00 0008 00000000")),
    ];
    for (sender, id, packet, bytes) in vectors {
        check_vector(sender, NONE, NONE, id, packet.into(), &bytes);
    }
}

#[test]
fn bulk_packet_32bit_length_and_64bit_id() {
    // caps 0x60: 64-bit ids + 32-bit bulk length.
    check_vector(
        Role::Guest,
        0x60,
        0x60,
        0x1_0000_0001,
        bulk(0x81, 0x1_0000, Bytes::new()).into(),
        &hx("65000000 0a000000 0100000001000000 | 81 00 0000 00000000 0100"),
    );
    let data = vec![0x5A; 0x1_0004];
    let bytes = cat(&[
        &hx("65000000 0e000100 0200000000000000 | 81 00 0400 07000000 0100"),
        &data,
    ]);
    check_vector(
        Role::Host,
        0x60,
        0x60,
        2,
        BulkPacket {
            endpoint: 0x81,
            status: Status::Success,
            length: 0x1_0004,
            stream_id: 7,
            data: Bytes::from(data),
        }
        .into(),
        &bytes,
    );
}

#[test]
fn iso_packet() {
    check_vector(
        Role::Host,
        NONE,
        NONE,
        0,
        IsoPacket {
            endpoint: 0x81,
            status: Status::Success,
            length: 4,
            data: Bytes::from_static(&[1, 2, 3, 4]),
        }
        .into(),
        &hx("66000000 08000000 00000000 | 81 00 0400 | 01020304"),
    );
    check_vector(
        Role::Guest,
        NONE,
        NONE,
        1,
        IsoPacket {
            endpoint: 0x01,
            status: Status::Success,
            length: 2,
            data: Bytes::from_static(&[9, 8]),
        }
        .into(),
        &hx("66000000 06000000 01000000 | 01 00 0200 | 0908"),
    );
}

#[test]
fn interrupt_packet() {
    let interrupt = |endpoint, length, data: &'static [u8]| InterruptPacket {
        endpoint,
        status: Status::Success,
        length,
        data: Bytes::from_static(data),
    };
    // IN data, OUT data, OUT reply.
    #[rustfmt::skip]
    let vectors = [
        (Role::Host, 0, interrupt(0x83, 2, &[1, 2]), "67000000 06000000 00000000 | 83 00 0200 | 0102"),
        (Role::Guest, 5, interrupt(0x04, 1, &[7]), "67000000 05000000 05000000 | 04 00 0100 | 07"),
        (Role::Host, 5, interrupt(0x04, 1, &[]), "67000000 04000000 05000000 | 04 00 0100"),
    ];
    for (sender, id, packet, bytes) in vectors {
        check_vector(sender, NONE, NONE, id, packet.into(), &hx(bytes));
    }
}

#[test]
fn packet_type_list_is_complete() {
    // The 33 types of usbredir 0.7; each has a vector above.
    let covered = [
        0u32, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23,
        24, 25, 26, 27, 100, 101, 102, 103, 104,
    ];
    let all: Vec<u32> = PacketType::ALL.iter().map(|t| t.as_u32()).collect();
    assert_eq!(all, covered);
}
