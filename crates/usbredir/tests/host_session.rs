//! The host-role session driven like a device model, against the guest
//! helper acting as QEMU.
#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

mod harness;

use harness::{bot_layout, cdrom};
use usbredir::guest::{GuestEvent, GuestSession};
use usbredir::host::{
    BulkRequest, Completion, ControlRequest, HostConfig, HostEvent, HostSession, SessionError,
};
use usbredir::*;

fn host_events(host: &mut HostSession) -> Vec<HostEvent> {
    let mut v = Vec::new();
    while let Some(e) = host.next_event().unwrap() {
        v.push(e);
    }
    v
}

fn to_host(guest: &mut GuestSession, host: &mut HostSession) -> Vec<HostEvent> {
    host.feed(&guest.take_output()).unwrap();
    host_events(host)
}

fn to_guest(host: &mut HostSession, guest: &mut GuestSession) -> Vec<GuestEvent> {
    guest.feed(&host.take_output()).unwrap();
    let mut v = Vec::new();
    while let Some(e) = guest.next_event().unwrap() {
        v.push(e);
    }
    v
}

/// Sends a bulk IN of `bulk_len` bytes on 0x81, then a control IN
/// (`bRequest`, `wValue`, `wLength`); returns both ids and the two requests
/// the device model gets.
fn bulk_then_control_in(
    host: &mut HostSession,
    guest: &mut GuestSession,
    bulk_len: u32,
    (request, value, length): (u8, u16, u16),
) -> ([u64; 2], BulkRequest, ControlRequest) {
    let bulk = guest.bulk_in(0x81, bulk_len).unwrap();
    let ctl = guest.control_in(0x80, request, value, 0, length).unwrap();
    let ev = to_host(guest, host);
    let [HostEvent::Bulk(b), HostEvent::Control(c)] = &ev[..] else {
        panic!("{ev:?}")
    };
    ([bulk, ctl], b.clone(), c.clone())
}

/// A host with the CD-ROM announced to a QEMU-like guest.
fn connected(guest_caps: Caps) -> (HostSession, GuestSession) {
    let mut host = HostSession::new(HostConfig::default());
    let mut guest = GuestSession::new("qemu usb-redir guest 7.2.22", guest_caps);
    host.connect_device(cdrom(), bot_layout()).unwrap();
    let ev = to_host(&mut guest, &mut host);
    assert!(matches!(&ev[..], [HostEvent::PeerHello { .. }]));
    let ev = to_guest(&mut host, &mut guest);
    assert!(matches!(
        ev.last(),
        Some(GuestEvent::DeviceConnected { .. })
    ));
    (host, guest)
}

#[test]
fn hello_first_and_announcement_order() {
    let mut host = HostSession::new(HostConfig::default());
    let out = host.take_output();
    assert_eq!(out.len(), 80);
    assert_eq!(&out[..12], &[0, 0, 0, 0, 0x44, 0, 0, 0, 0, 0, 0, 0]);
    assert_eq!(&out[76..], &[0x7e, 0, 0, 0]);

    // A device given before the guest's hello waits for it.
    host.connect_device(cdrom(), bot_layout()).unwrap();
    assert!(!host.has_output());
    assert!(!host.is_attached());

    let mut guest = GuestSession::new("qemu usb-redir guest 7.2.22", Caps::QEMU_GUEST);
    guest.feed(&out).unwrap();
    assert!(
        matches!(guest.next_event().unwrap(), Some(GuestEvent::PeerHello { caps, .. }) if caps == Caps::HOST_DEFAULT)
    );

    let ev = to_host(&mut guest, &mut host);
    assert_eq!(
        ev,
        [HostEvent::PeerHello {
            version: "qemu usb-redir guest 7.2.22".into(),
            caps: Caps::QEMU_GUEST
        }]
    );
    assert_eq!(host.negotiated_caps(), Some(Caps::HOST_DEFAULT));
    assert!(host.is_attached());

    // interface_info, ep_info, device_connect, in that order, with 16-byte headers.
    let bytes = host.take_output();
    let types: Vec<u32> = {
        let mut v = Vec::new();
        let mut rest = &bytes[..];
        while !rest.is_empty() {
            v.push(u32::from_le_bytes(rest[..4].try_into().unwrap()));
            let len = u32::from_le_bytes(rest[4..8].try_into().unwrap()) as usize;
            rest = &rest[16 + len..];
        }
        v
    };
    assert_eq!(types, [4, 5, 1]);
    guest.feed(&bytes).unwrap();
    let mut evs = Vec::new();
    while let Some(e) = guest.next_event().unwrap() {
        evs.push(e);
    }
    let [GuestEvent::InterfaceInfo(_), GuestEvent::EpInfo(_), GuestEvent::DeviceConnected {
        device,
        interfaces,
        endpoints,
    }] = &evs[..]
    else {
        panic!("{evs:?}")
    };
    assert_eq!(*device, cdrom());
    assert_eq!(*interfaces, bot_layout().interfaces);
    assert_eq!(**endpoints, bot_layout().endpoints);
}

#[test]
fn device_connect_without_interface_info_is_rejected_by_guest_helper() {
    let mut host = Codec::with_caps(Role::Host, Caps::empty(), Caps::empty());
    let mut guest = GuestSession::new("g", Caps::empty());
    guest
        .feed(
            &Codec::new(Role::Host)
                .encode(0, &Hello::new("h", Caps::empty()).into())
                .unwrap(),
        )
        .unwrap();
    guest.next_event().unwrap();
    guest
        .feed(&host.encode(0, &Packet::DeviceConnect(cdrom())).unwrap())
        .unwrap();
    assert!(matches!(
        guest.next_event(),
        Err(usbredir::guest::GuestError::NoInterfaceInfo)
    ));
}

#[test]
fn no_device_traffic_before_peer_hello() {
    let mut host = HostSession::new(HostConfig::default());
    host.take_output();
    // A guest that skips its hello.
    let mut rogue = Codec::with_caps(Role::Guest, Caps::empty(), Caps::empty());
    host.feed(&rogue.encode(1, &Packet::Reset).unwrap())
        .unwrap();
    assert_eq!(
        host.next_event(),
        Err(SessionError::Protocol(Error::HelloNotFirst(
            PacketType::Reset
        )))
    );
    assert!(!host.has_output());
    // Filter before the hello cannot be encoded either.
    assert!(matches!(
        host.send_filter("-1,-1,-1,-1,1"),
        Err(SessionError::Protocol(Error::PeerHelloPending(_)))
    ));
}

#[test]
fn enumeration_like_qemu() {
    let (mut host, mut guest) = connected(Caps::QEMU_GUEST);

    // The guest resets first: nothing happened since connect, so it is redundant.
    guest.reset().unwrap();
    assert_eq!(
        to_host(&mut guest, &mut host),
        [HostEvent::Reset { redundant: true }]
    );
    assert!(!host.has_output(), "reset has no reply");

    // GET_DESCRIPTOR.
    let id = guest.control_in(0x80, 6, 0x0100, 0, 64).unwrap();
    let [HostEvent::Control(req)] = &to_host(&mut guest, &mut host)[..] else {
        panic!()
    };
    assert!(req.is_in());
    assert_eq!(
        (req.id, req.request_type, req.request, req.value, req.length),
        (id, 0x80, 6, 0x0100, 64)
    );
    assert_eq!(
        host.complete_in(req.token, Status::Success, vec![0x12u8; 18])
            .unwrap(),
        Completion::Sent
    );
    let [GuestEvent::Control { id: rid, packet }] = &to_guest(&mut host, &mut guest)[..] else {
        panic!()
    };
    assert_eq!(
        (*rid, packet.status, packet.length, packet.data.len()),
        (id, Status::Success, 18, 18)
    );
    assert_eq!(
        (packet.request, packet.request_type, packet.value),
        (6, 0x80, 0x0100)
    );

    // SET_CONFIGURATION(1): interface_info, ep_info, then configuration_status.
    let id = guest.set_configuration(1).unwrap();
    assert_eq!(
        to_host(&mut guest, &mut host),
        [HostEvent::SetConfiguration {
            id,
            configuration: 1
        }]
    );
    host.reply_set_configuration(id, Status::Success, 1, Some(bot_layout()))
        .unwrap();
    let ev = to_guest(&mut host, &mut guest);
    assert!(matches!(
        &ev[..],
        [
            GuestEvent::InterfaceInfo(_),
            GuestEvent::EpInfo(_),
            GuestEvent::ConfigurationStatus { id: i, status: ConfigurationStatus { status: Status::Success, configuration: 1 } }
        ] if *i == id
    ));

    // GET MAX LUN (class request) and a reset that is no longer redundant.
    let id = guest.control_in(0xA1, 0xFE, 0, 0, 1).unwrap();
    let [HostEvent::Control(req)] = &to_host(&mut guest, &mut host)[..] else {
        panic!()
    };
    host.complete_in(req.token, Status::Success, vec![0u8])
        .unwrap();
    assert!(
        matches!(&to_guest(&mut host, &mut guest)[..], [GuestEvent::Control { id: i, .. }] if *i == id)
    );
    guest.reset().unwrap();
    assert_eq!(
        to_host(&mut guest, &mut host),
        [HostEvent::Reset { redundant: false }]
    );
}

#[test]
fn bulk_pipeline_and_completion_checks() {
    let (mut host, mut guest) = connected(Caps::QEMU_GUEST);
    let cbw = vec![0x55u8; 31];
    let out_id = guest.bulk_out(0x02, cbw.clone()).unwrap();
    let in1 = guest.bulk_in(0x81, 0x1_0000).unwrap();
    let in2 = guest.bulk_in(0x81, 13).unwrap();
    let ev = to_host(&mut guest, &mut host);
    let [HostEvent::Bulk(o), HostEvent::Bulk(a), HostEvent::Bulk(b)] = &ev[..] else {
        panic!("{ev:?}")
    };
    assert_eq!((o.id, o.is_in(), &o.data[..]), (out_id, false, &cbw[..]));
    assert_eq!((a.id, a.is_in(), a.length), (in1, true, 0x1_0000));
    assert_eq!((b.id, b.length), (in2, 13));
    assert_eq!(host.pending_transfers(), 3);

    // Misuse is reported and leaves the transfer pending.
    assert!(matches!(
        host.complete_in(o.token, Status::Success, vec![]),
        Err(SessionError::DirectionMismatch { is_in: false, .. })
    ));
    assert!(matches!(
        host.complete_out(a.token, Status::Success, 0),
        Err(SessionError::DirectionMismatch { is_in: true, .. })
    ));
    assert_eq!(
        host.complete_in(b.token, Status::Success, vec![0u8; 14]),
        Err(SessionError::ReplyTooLong {
            requested: 13,
            actual: 14
        })
    );
    assert_eq!(
        host.complete_out(o.token, Status::Success, 32),
        Err(SessionError::ReplyTooLong {
            requested: 31,
            actual: 32
        })
    );
    assert_eq!(host.pending_transfers(), 3);
    assert!(!host.has_output());

    host.complete_out(o.token, Status::Success, 31).unwrap();
    host.complete_in(a.token, Status::Success, vec![7u8; 0x1_0000])
        .unwrap();
    host.complete_in(b.token, Status::Success, vec![1u8; 13])
        .unwrap();
    assert_eq!(host.pending_transfers(), 0);
    // Completing twice is harmless.
    assert_eq!(
        host.complete_in(b.token, Status::Success, vec![]).unwrap(),
        Completion::Discarded
    );

    let ev = to_guest(&mut host, &mut guest);
    let [GuestEvent::Bulk { id: i0, packet: p0 }, GuestEvent::Bulk { id: i1, packet: p1 }, GuestEvent::Bulk { id: i2, packet: p2 }] =
        &ev[..]
    else {
        panic!()
    };
    assert_eq!(
        (*i0, p0.endpoint, p0.length, p0.data.len()),
        (out_id, 0x02, 31, 0)
    );
    assert_eq!((*i1, p1.length, p1.data.len()), (in1, 0x1_0000, 0x1_0000));
    assert_eq!((*i2, p2.length, &p2.data[..]), (in2, 13, &[1u8; 13][..]));
}

#[test]
fn cancel_is_answered_with_same_type_and_id() {
    let (mut host, mut guest) = connected(Caps::QEMU_GUEST);
    let ([id, ctl], req, creq) =
        bulk_then_control_in(&mut host, &mut guest, 2048, (6, 0x0300, 255));

    guest.cancel(id).unwrap();
    guest.cancel(ctl).unwrap();
    let ev = to_host(&mut guest, &mut host);
    assert_eq!(
        ev,
        [
            HostEvent::Cancelled {
                token: req.token,
                id
            },
            HostEvent::Cancelled {
                token: creq.token,
                id: ctl
            }
        ]
    );
    let ev = to_guest(&mut host, &mut guest);
    let [GuestEvent::Bulk { id: i, packet }, GuestEvent::Control { id: j, packet: c }] = &ev[..]
    else {
        panic!("{ev:?}")
    };
    assert_eq!(
        (*i, packet.status, packet.length, packet.endpoint),
        (id, Status::Cancelled, 0, 0x81)
    );
    assert_eq!(
        (*j, c.status, c.length, c.request, c.value),
        (ctl, Status::Cancelled, 0, 6, 0x0300)
    );

    // The device model finishing late is discarded; nothing more is sent.
    assert_eq!(
        host.complete_in(req.token, Status::Success, vec![0u8; 2048])
            .unwrap(),
        Completion::Discarded
    );
    assert!(!host.has_output());

    // The guest may reuse the id; the new transfer gets a new token.
    guest
        .send_with_id(
            id,
            &Packet::BulkPacket(BulkPacket {
                endpoint: 0x81,
                status: Status::Success,
                length: 512,
                stream_id: 0,
                data: Bytes::new(),
            }),
        )
        .unwrap();
    let [HostEvent::Bulk(again)] = &to_host(&mut guest, &mut host)[..] else {
        panic!()
    };
    assert_eq!(again.id, id);
    assert_ne!(again.token, req.token);
    assert_eq!(
        host.complete_in(req.token, Status::Success, vec![])
            .unwrap(),
        Completion::Discarded
    );
    assert_eq!(
        host.complete_in(again.token, Status::Success, vec![9u8; 512])
            .unwrap(),
        Completion::Sent
    );

    // Cancelling something already answered sends nothing.
    guest.cancel(id).unwrap();
    assert!(to_host(&mut guest, &mut host).is_empty());
    let ev = to_guest(&mut host, &mut guest);
    assert!(
        matches!(&ev[..], [GuestEvent::Bulk { packet, .. }] if packet.status == Status::Success && packet.length == 512)
    );
}

#[test]
fn reset_and_set_configuration_answer_pending_transfers() {
    let (mut host, mut guest) = connected(Caps::QEMU_GUEST);
    let id = guest.bulk_in(0x81, 13).unwrap();
    let [HostEvent::Bulk(req)] = &to_host(&mut guest, &mut host)[..] else {
        panic!()
    };
    guest.reset().unwrap();
    assert_eq!(
        to_host(&mut guest, &mut host),
        [HostEvent::Reset { redundant: false }]
    );
    let ev = to_guest(&mut host, &mut guest);
    assert!(
        matches!(&ev[..], [GuestEvent::Bulk { id: i, packet }] if *i == id && packet.status == Status::Cancelled)
    );
    assert_eq!(
        host.complete_in(req.token, Status::Success, vec![])
            .unwrap(),
        Completion::Discarded
    );

    let id = guest.bulk_out(0x02, vec![1u8; 31]).unwrap();
    to_host(&mut guest, &mut host);
    let cfg = guest.set_configuration(1).unwrap();
    assert_eq!(
        to_host(&mut guest, &mut host),
        [HostEvent::SetConfiguration {
            id: cfg,
            configuration: 1
        }]
    );
    let ev = to_guest(&mut host, &mut guest);
    assert!(
        matches!(&ev[..], [GuestEvent::Bulk { id: i, packet }] if *i == id && packet.status == Status::Cancelled)
    );
    // Failure: only the status, no layout.
    host.reply_set_configuration(cfg, Status::Stall, 0, Some(bot_layout()))
        .unwrap();
    let ev = to_guest(&mut host, &mut guest);
    assert!(
        matches!(&ev[..], [GuestEvent::ConfigurationStatus { status, .. }] if status.status == Status::Stall)
    );
}

#[test]
fn alt_settings() {
    let (mut host, mut guest) = connected(Caps::QEMU_GUEST);
    let ([bulk, ctl], _, creq) = bulk_then_control_in(&mut host, &mut guest, 512, (0, 0, 2));

    let id = guest.set_alt_setting(0, 1).unwrap();
    assert_eq!(
        to_host(&mut guest, &mut host),
        [HostEvent::SetAltSetting {
            id,
            interface: 0,
            alt: 1
        }]
    );
    // Only the interface's endpoint transfer was cancelled, not endpoint 0.
    let ev = to_guest(&mut host, &mut guest);
    assert!(
        matches!(&ev[..], [GuestEvent::Bulk { id: i, packet }] if *i == bulk && packet.status == Status::Cancelled)
    );
    assert_eq!(host.pending_transfers(), 1);
    host.complete_in(creq.token, Status::Success, vec![0u8, 0])
        .unwrap();

    let mut new_layout = bot_layout();
    new_layout.interfaces.interfaces[0].protocol = 0x62;
    host.reply_set_alt_setting(id, Status::Success, 0, 1, Some(new_layout.clone()))
        .unwrap();
    assert_eq!(host.layout(), Some(&new_layout));
    let ev = to_guest(&mut host, &mut guest);
    assert!(matches!(
        &ev[..],
        [
            GuestEvent::Control { id: c, .. },
            GuestEvent::InterfaceInfo(i),
            GuestEvent::EpInfo(_),
            GuestEvent::AltSettingStatus { id: a, status: AltSettingStatus { status: Status::Success, interface: 0, alt: 1 } }
        ] if *c == ctl && *a == id && i.interfaces[0].protocol == 0x62
    ));

    let id = guest.get_alt_setting(0).unwrap();
    assert_eq!(
        to_host(&mut guest, &mut host),
        [HostEvent::GetAltSetting { id, interface: 0 }]
    );
    assert!(matches!(
        host.reply_get_configuration(id, Status::Success, 1),
        Err(SessionError::UnknownRequest {
            packet: PacketType::GetConfiguration,
            ..
        })
    ));
    host.reply_get_alt_setting(id, Status::Success, 0, 1)
        .unwrap();
    assert!(matches!(
        host.reply_get_alt_setting(id, Status::Success, 0, 1),
        Err(SessionError::UnknownRequest { .. })
    ));
    let id2 = guest.get_configuration().unwrap();
    assert_eq!(
        to_host(&mut guest, &mut host),
        [HostEvent::GetConfiguration { id: id2 }]
    );
    host.reply_get_configuration(id2, Status::Success, 1)
        .unwrap();
    let ev = to_guest(&mut host, &mut guest);
    assert!(matches!(
        &ev[..],
        [GuestEvent::AltSettingStatus { id: a, .. }, GuestEvent::ConfigurationStatus { id: b, status }]
            if *a == id && *b == id2 && status.configuration == 1
    ));
}

#[test]
fn disconnect_waits_for_ack_with_cap3() {
    let (mut host, mut guest) = connected(Caps::QEMU_GUEST);
    let _pending = guest.bulk_in(0x81, 512).unwrap();
    to_host(&mut guest, &mut host);
    host.disconnect_device().unwrap();
    assert!(host.is_awaiting_disconnect_ack());
    assert_eq!(host.pending_transfers(), 0);
    // A new device waits for the ack.
    host.connect_device(cdrom(), bot_layout()).unwrap();
    assert_eq!(
        host.connect_device(cdrom(), bot_layout()),
        Err(SessionError::AlreadyConnected)
    );
    let ev = to_guest(&mut host, &mut guest);
    assert_eq!(ev, [GuestEvent::DeviceDisconnected]);
    // The guest acked automatically; the host announces the queued device.
    assert_eq!(to_host(&mut guest, &mut host), [HostEvent::DisconnectAcked]);
    assert!(host.is_attached());
    let ev = to_guest(&mut host, &mut guest);
    assert!(matches!(
        ev.last(),
        Some(GuestEvent::DeviceConnected { .. })
    ));
}

#[test]
fn disconnect_without_cap3_is_immediate() {
    let (mut host, mut guest) = connected(Caps::QEMU_GUEST.without(Cap::DeviceDisconnectAck));
    host.disconnect_device().unwrap();
    assert!(!host.is_attached() && !host.is_awaiting_disconnect_ack());
    assert_eq!(host.disconnect_device(), Err(SessionError::NotConnected));
    host.connect_device(cdrom(), bot_layout()).unwrap();
    let ev = to_guest(&mut host, &mut guest);
    assert_eq!(ev[0], GuestEvent::DeviceDisconnected);
    assert!(matches!(
        ev.last(),
        Some(GuestEvent::DeviceConnected { .. })
    ));
    assert!(
        to_host(&mut guest, &mut host).is_empty(),
        "no ack without the cap"
    );
}

#[test]
fn disconnect_of_a_device_not_yet_announced() {
    let mut host = HostSession::new(HostConfig::default());
    host.take_output();
    host.connect_device(cdrom(), bot_layout()).unwrap();
    host.disconnect_device().unwrap();
    let mut guest = GuestSession::new("g", Caps::QEMU_GUEST);
    to_host(&mut guest, &mut host);
    assert!(!host.has_output());
}

#[test]
fn requests_while_detached_are_answered_with_ioerror() {
    let (mut host, mut guest) = connected(Caps::QEMU_GUEST.without(Cap::DeviceDisconnectAck));
    host.disconnect_device().unwrap();
    to_guest(&mut host, &mut guest);
    // Requests already in flight from the guest.
    let b = guest.bulk_in(0x81, 512).unwrap();
    let c = guest.set_configuration(1).unwrap();
    let a = guest.get_alt_setting(0).unwrap();
    guest.reset().unwrap();
    assert!(to_host(&mut guest, &mut host).is_empty());
    let ev = to_guest(&mut host, &mut guest);
    assert!(matches!(
        &ev[..],
        [
            GuestEvent::Bulk { id: i, packet },
            GuestEvent::ConfigurationStatus { id: j, status: ConfigurationStatus { status: Status::IoError, .. } },
            GuestEvent::AltSettingStatus { id: k, status: AltSettingStatus { status: Status::IoError, alt: 255, .. } },
        ] if *i == b && packet.status == Status::IoError && *j == c && *k == a
    ));
}

#[test]
fn wrong_endpoint_type_is_answered_with_inval() {
    let (mut host, mut guest) = connected(Caps::QEMU_GUEST);
    let id = guest.bulk_in(0x85, 512).unwrap();
    let id2 = guest.bulk_out(0x00, vec![1u8]).unwrap();
    assert!(to_host(&mut guest, &mut host).is_empty());
    let ev = to_guest(&mut host, &mut guest);
    assert!(matches!(
        &ev[..],
        [GuestEvent::Bulk { id: a, packet: p }, GuestEvent::Bulk { id: b, packet: q }]
            if *a == id && p.status == Status::Inval && *b == id2 && q.status == Status::Inval && q.length == 0
    ));
}

#[test]
fn unsupported_requests_get_error_replies() {
    let (mut host, mut guest) = connected(Caps::QEMU_GUEST);
    let a = guest
        .send(&StartInterruptReceiving { endpoint: 0x83 }.into())
        .unwrap();
    let b = guest
        .send(
            &AllocBulkStreams {
                endpoints: 1 << 17,
                no_streams: 4,
            }
            .into(),
        )
        .unwrap();
    let c = guest
        .send(
            &StartIsoStream {
                endpoint: 0x81,
                pkts_per_urb: 8,
                no_urbs: 2,
            }
            .into(),
        )
        .unwrap();
    let ev = to_host(&mut guest, &mut host);
    assert_eq!(
        ev,
        [
            HostEvent::Unsupported {
                id: a,
                packet: PacketType::StartInterruptReceiving
            },
            HostEvent::Unsupported {
                id: b,
                packet: PacketType::AllocBulkStreams
            },
            HostEvent::Unsupported {
                id: c,
                packet: PacketType::StartIsoStream
            },
        ]
    );
    let statuses = other_packets(to_guest(&mut host, &mut guest));
    assert_eq!(
        statuses,
        [
            (
                a,
                InterruptReceivingStatus {
                    status: Status::Inval,
                    endpoint: 0x83
                }
                .into()
            ),
            (
                b,
                BulkStreamsStatus {
                    endpoints: 1 << 17,
                    no_streams: 4,
                    status: Status::Inval
                }
                .into()
            ),
            (
                c,
                IsoStreamStatus {
                    status: Status::Inval,
                    endpoint: 0x81
                }
                .into()
            ),
        ]
    );
}

#[test]
fn filters_and_connect_errors() {
    let (mut host, mut guest) = connected(Caps::QEMU_GUEST);
    guest
        .send(
            &FilterFilter {
                rules: "0x08,-1,-1,-1,1|-1,-1,-1,-1,0".into(),
            }
            .into(),
        )
        .unwrap();
    guest.send(&Packet::FilterReject).unwrap();
    assert_eq!(
        to_host(&mut guest, &mut host),
        [
            HostEvent::FilterFilter {
                rules: "0x08,-1,-1,-1,1|-1,-1,-1,-1,0".into()
            },
            HostEvent::FilterReject
        ]
    );
    host.send_filter("-1,-1,-1,-1,1").unwrap();
    let ev = to_guest(&mut host, &mut guest);
    assert!(matches!(
        &ev[..],
        [GuestEvent::Other(Frame {
            packet: Packet::FilterFilter(_),
            ..
        })]
    ));
    assert_eq!(
        host.connect_device(cdrom(), bot_layout()),
        Err(SessionError::AlreadyConnected)
    );
    let mut big = bot_layout();
    big.interfaces.interfaces = vec![Interface::default(); 33];
    host.disconnect_device().unwrap();
    assert_eq!(
        host.connect_device(cdrom(), big),
        Err(SessionError::TooManyInterfaces(33))
    );
}

#[test]
fn old_guest_without_caps_gets_32bit_layouts() {
    let (mut host, mut guest) = connected(Caps::empty());
    assert_eq!(host.codec().header_len(), 12);
    let id = guest.bulk_in(0x81, 0xffff).unwrap();
    let [HostEvent::Bulk(req)] = &to_host(&mut guest, &mut host)[..] else {
        panic!()
    };
    host.complete_in(req.token, Status::Success, vec![3u8; 0xffff])
        .unwrap();
    let ev = to_guest(&mut host, &mut guest);
    assert!(
        matches!(&ev[..], [GuestEvent::Bulk { id: i, packet }] if *i == id && packet.data.len() == 0xffff)
    );
}

#[test]
fn unknown_tokens_and_long_versions() {
    let (mut host, _guest) = connected(Caps::QEMU_GUEST);
    let mut other = HostSession::new(HostConfig::default());
    let mut g2 = GuestSession::new("g", Caps::QEMU_GUEST);
    other.connect_device(cdrom(), bot_layout()).unwrap();
    to_host(&mut g2, &mut other);
    to_guest(&mut other, &mut g2);
    g2.bulk_in(0x81, 1).unwrap();
    let [HostEvent::Bulk(req)] = &to_host(&mut g2, &mut other)[..] else {
        panic!()
    };
    // A token from another session that this one never issued.
    assert_eq!(
        host.complete_in(req.token, Status::Success, vec![]),
        Err(SessionError::UnknownToken(req.token))
    );

    let cfg = HostConfig {
        version: "v".repeat(100),
        ..HostConfig::default()
    };
    let mut h = HostSession::new(cfg);
    assert_eq!(h.take_output().len(), 80);
}

/// A host announcing bulk streams (like a UAS device) to a QEMU-like guest.
fn uas_connected() -> (HostSession, GuestSession) {
    let mut host = HostSession::new(HostConfig {
        caps: Caps::HOST_DEFAULT.with(Cap::BulkStreams),
        ..HostConfig::default()
    });
    let mut guest = GuestSession::new("qemu usb-redir guest 7.2.22", Caps::QEMU_GUEST);
    let ep = |max_streams| Endpoint {
        ep_type: EndpointType::Bulk,
        interval: 0,
        interface: 0,
        max_packet_size: 1024,
        max_streams,
    };
    let mut layout = bot_layout();
    layout.endpoints = EpInfo::new()
        .with(0x04, ep(0))
        .with(0x83, ep(32))
        .with(0x81, ep(32))
        .with(0x02, ep(32));
    host.connect_device(cdrom(), layout).unwrap();
    to_host(&mut guest, &mut host);
    to_guest(&mut host, &mut guest);
    (host, guest)
}

/// The (id, packet) of guest events that are status packets without a typed
/// event of their own; panics on any other event.
fn other_packets(guest_events: Vec<GuestEvent>) -> Vec<(u64, Packet)> {
    guest_events
        .into_iter()
        .map(|e| match e {
            GuestEvent::Other(f) => (f.id, f.packet),
            e => panic!("{e:?}"),
        })
        .collect()
}

#[test]
fn bulk_streams_are_allocated_checked_and_freed() {
    let (mut host, mut guest) = uas_connected();
    let all = (1 << 0x13) | (1 << 0x11) | (1 << 0x02);
    // Too many streams, a mask with the command pipe (no streams), an empty mask:
    // refused; within what ep_info announced: allocated.
    let refused: Vec<u64> = [(all, 64), (all | (1 << 0x04), 32), (0, 32), (all, 0)]
        .into_iter()
        .map(|(endpoints, no_streams)| {
            guest
                .send(
                    &AllocBulkStreams {
                        endpoints,
                        no_streams,
                    }
                    .into(),
                )
                .unwrap()
        })
        .collect();
    let ok = guest
        .send(
            &AllocBulkStreams {
                endpoints: all,
                no_streams: 32,
            }
            .into(),
        )
        .unwrap();
    let ev = to_host(&mut guest, &mut host);
    assert_eq!(ev.len(), 5);
    assert!(ev[..4].iter().all(|e| matches!(
        e,
        HostEvent::Unsupported {
            packet: PacketType::AllocBulkStreams,
            ..
        }
    )));
    assert_eq!(
        ev[4],
        HostEvent::StreamsChanged {
            id: ok,
            endpoints: all,
            no_streams: 32
        }
    );
    let st = other_packets(to_guest(&mut host, &mut guest));
    assert_eq!(st.len(), 5);
    for (i, (id, p)) in st.iter().enumerate() {
        let Packet::BulkStreamsStatus(s) = p else {
            panic!("{p:?}")
        };
        let want = if i < 4 { refused[i] } else { ok };
        assert_eq!(*id, want);
        assert_eq!(s.status == Status::Success, i == 4, "{s:?}");
    }
    assert_eq!((host.streams(0x81), host.streams(0x04)), (32, 0));

    // Transfers: a stream id in 1..=32 on a stream endpoint, 0 on the command pipe.
    let bulk = |endpoint, stream_id| BulkPacket {
        endpoint,
        status: Status::Success,
        length: 112,
        stream_id,
        data: bytes::Bytes::new(),
    };
    let good = [
        guest.send(&bulk(0x83, 1).into()).unwrap(),
        guest.send(&bulk(0x81, 32).into()).unwrap(),
    ];
    let bad = [
        guest.send(&bulk(0x83, 0).into()).unwrap(),
        guest.send(&bulk(0x81, 33).into()).unwrap(),
    ];
    let cmd = guest
        .send(&Packet::BulkPacket(BulkPacket {
            endpoint: 0x04,
            status: Status::Success,
            length: 32,
            stream_id: 0,
            data: vec![0u8; 32].into(),
        }))
        .unwrap();
    let ev = to_host(&mut guest, &mut host);
    let ids: Vec<(u64, u32)> = ev
        .iter()
        .map(|e| match e {
            HostEvent::Bulk(r) => (r.id, r.stream_id),
            e => panic!("{e:?}"),
        })
        .collect();
    assert_eq!(ids, [(good[0], 1), (good[1], 32), (cmd, 0)]);
    let replies = to_guest(&mut host, &mut guest);
    assert_eq!(replies.len(), 2);
    for (r, id) in replies.iter().zip(bad) {
        let GuestEvent::Bulk { id: got, packet } = r else {
            panic!("{r:?}")
        };
        assert_eq!((*got, packet.status), (id, Status::Inval));
    }

    // Freeing the streams: stream ids are refused again, stream 0 accepted.
    let f = guest
        .send(&FreeBulkStreams { endpoints: all }.into())
        .unwrap();
    assert_eq!(
        to_host(&mut guest, &mut host),
        [HostEvent::StreamsChanged {
            id: f,
            endpoints: all,
            no_streams: 0
        }]
    );
    to_guest(&mut host, &mut guest);
    assert_eq!(host.streams(0x81), 0);
    guest.send(&bulk(0x81, 1).into()).unwrap();
    assert!(to_host(&mut guest, &mut host).is_empty());
    guest.send(&bulk(0x81, 0).into()).unwrap();
    assert_eq!(to_host(&mut guest, &mut host).len(), 1);
}

#[test]
fn bulk_streams_end_with_a_reset() {
    let (mut host, mut guest) = uas_connected();
    let all = (1 << 0x13) | (1 << 0x11) | (1 << 0x02);
    guest
        .send(
            &AllocBulkStreams {
                endpoints: all,
                no_streams: 16,
            }
            .into(),
        )
        .unwrap();
    to_host(&mut guest, &mut host);
    assert_eq!(host.streams(0x83), 16);
    guest.reset().unwrap();
    assert!(matches!(
        &to_host(&mut guest, &mut host)[..],
        [HostEvent::Reset { .. }]
    ));
    assert_eq!(host.streams(0x83), 0);
}
