//! Property tests: encode -> decode is the identity for arbitrary valid
//! packets under arbitrary cap sets, and the streaming decoder yields the
//! same frames however the byte stream is split.
#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

mod common;

use proptest::prelude::*;
use proptest::sample::select;
use proptest::strategy::Union;
use usbredir::*;

fn status(sender: Role, data_packet: bool) -> BoxedStrategy<Status> {
    if sender == Role::Guest && data_packet {
        // The status of guest data packets is not transmitted meaningfully.
        Just(Status::Success).boxed()
    } else {
        select(Status::ALL).boxed()
    }
}

fn speed() -> impl Strategy<Value = Speed> {
    select(Speed::ALL)
}

fn ep_type() -> impl Strategy<Value = EndpointType> {
    select(EndpointType::ALL)
}

fn endpoint() -> impl Strategy<Value = Endpoint> {
    (
        ep_type(),
        any::<u8>(),
        any::<u8>(),
        any::<u16>(),
        any::<u32>(),
    )
        .prop_map(
            |(ep_type, interval, interface, max_packet_size, max_streams)| Endpoint {
                ep_type,
                interval,
                interface,
                max_packet_size,
                max_streams,
            },
        )
}

fn bytes(max: usize) -> impl Strategy<Value = Bytes> {
    proptest::collection::vec(any::<u8>(), 0..max).prop_map(Bytes::from)
}

/// True if the sender puts data on the wire for this endpoint.
fn carries(sender: Role, ep: u8) -> bool {
    (sender == Role::Host) == is_in_endpoint(ep)
}

/// `length` and data of a data packet: the data and its length where the
/// sender carries data on `endpoint`, else the arbitrary `len` and no data.
fn length_and_data<L: TryFrom<usize>>(sender: Role, endpoint: u8, len: L, data: Bytes) -> (L, Bytes)
where
    L::Error: std::fmt::Debug,
{
    if carries(sender, endpoint) {
        (L::try_from(data.len()).unwrap(), data)
    } else {
        (len, Bytes::new())
    }
}

/// Arbitrary packets that `sender` may send when the layout caps are `neg`
/// and the receiver advertised `receiver`.
fn packet(sender: Role, neg: Caps, receiver: Caps) -> BoxedStrategy<Packet> {
    let mut arms: Vec<BoxedStrategy<Packet>> = Vec::new();
    let host = sender == Role::Host;
    let st = move |d| status(sender, d);
    let u8s = any::<u8>;
    let in_ep = || any::<u8>().prop_map(|e| e | 0x80);

    // Control packets: data only in the carrying direction.
    arms.push(
        (
            any::<u8>(),
            u8s(),
            u8s(),
            st(true),
            any::<u16>(),
            any::<u16>(),
            any::<u16>(),
            bytes(300),
        )
            .prop_map(
                move |(endpoint, request, request_type, status, value, index, len, data)| {
                    let (length, data) = length_and_data(sender, endpoint, len, data);
                    Packet::ControlPacket(ControlPacket {
                        endpoint,
                        request,
                        request_type,
                        status,
                        value,
                        index,
                        length,
                        data,
                    })
                },
            )
            .boxed(),
    );
    let max_len = if neg.has(Cap::BulkLength32) {
        MAX_DATA_LEN
    } else {
        0xffff
    };
    arms.push(
        (any::<u8>(), st(true), 0..=max_len, any::<u32>(), bytes(600))
            .prop_map(move |(endpoint, status, len, stream_id, data)| {
                let (length, data) = length_and_data(sender, endpoint, len, data);
                Packet::BulkPacket(BulkPacket {
                    endpoint,
                    status,
                    length,
                    stream_id,
                    data,
                })
            })
            .boxed(),
    );
    // Iso: only in the carrying direction.
    arms.push(
        (any::<u8>(), st(true), bytes(100))
            .prop_map(move |(ep, status, data)| {
                let endpoint = if host { ep | 0x80 } else { ep & 0x7f };
                Packet::IsoPacket(IsoPacket {
                    endpoint,
                    status,
                    length: data.len() as u16,
                    data,
                })
            })
            .boxed(),
    );
    // Interrupt: host IN data or host OUT reply; guest OUT data.
    arms.push(
        (any::<u8>(), st(true), any::<u16>(), bytes(100))
            .prop_map(move |(endpoint, status, len, data)| {
                let endpoint = if host { endpoint } else { endpoint & 0x7f };
                let (length, data) = length_and_data(sender, endpoint, len, data);
                Packet::InterruptPacket(InterruptPacket {
                    endpoint,
                    status,
                    length,
                    data,
                })
            })
            .boxed(),
    );
    if receiver.has(Cap::Filter) {
        arms.push(
            "[^\u{0}]{0,40}"
                .prop_map(|rules| Packet::FilterFilter(FilterFilter { rules }))
                .boxed(),
        );
    }
    if host {
        arms.push(
            (
                speed(),
                u8s(),
                u8s(),
                u8s(),
                any::<u16>(),
                any::<u16>(),
                any::<u16>(),
            )
                .prop_map(|(speed, c, s, p, vendor_id, product_id, bcd)| {
                    Packet::DeviceConnect(DeviceConnect {
                        speed,
                        device_class: c,
                        device_subclass: s,
                        device_protocol: p,
                        vendor_id,
                        product_id,
                        device_version_bcd: bcd,
                    })
                })
                .boxed(),
        );
        arms.push(Just(Packet::DeviceDisconnect).boxed());
        arms.push(
            proptest::collection::vec((u8s(), u8s(), u8s(), u8s()), 0..=32)
                .prop_map(|v| {
                    Packet::InterfaceInfo(InterfaceInfo {
                        interfaces: v
                            .into_iter()
                            .map(|(number, class, subclass, protocol)| Interface {
                                number,
                                class,
                                subclass,
                                protocol,
                            })
                            .collect(),
                    })
                })
                .boxed(),
        );
        arms.push(
            proptest::array::uniform32(endpoint())
                .prop_map(|endpoints| Packet::EpInfo(Box::new(EpInfo { endpoints })))
                .boxed(),
        );
        arms.push(
            (st(false), u8s())
                .prop_map(|(status, configuration)| {
                    ConfigurationStatus {
                        status,
                        configuration,
                    }
                    .into()
                })
                .boxed(),
        );
        arms.push(
            (st(false), u8s(), u8s())
                .prop_map(|(status, interface, alt)| {
                    AltSettingStatus {
                        status,
                        interface,
                        alt,
                    }
                    .into()
                })
                .boxed(),
        );
        arms.push(
            (st(false), u8s())
                .prop_map(|(status, endpoint)| IsoStreamStatus { status, endpoint }.into())
                .boxed(),
        );
        arms.push(
            (st(false), in_ep())
                .prop_map(|(status, endpoint)| InterruptReceivingStatus { status, endpoint }.into())
                .boxed(),
        );
        arms.push(
            (any::<u32>(), any::<u32>(), st(false))
                .prop_map(|(endpoints, no_streams, status)| {
                    BulkStreamsStatus {
                        endpoints,
                        no_streams,
                        status,
                    }
                    .into()
                })
                .boxed(),
        );
        if receiver.has(Cap::BulkReceiving) {
            arms.push(
                (any::<u32>(), in_ep(), st(false))
                    .prop_map(|(stream_id, endpoint, status)| {
                        BulkReceivingStatus {
                            stream_id,
                            endpoint,
                            status,
                        }
                        .into()
                    })
                    .boxed(),
            );
            arms.push(
                (any::<u32>(), in_ep(), st(false), bytes(300))
                    .prop_map(|(stream_id, endpoint, status, data)| {
                        BufferedBulkPacket {
                            stream_id,
                            length: data.len() as u32,
                            endpoint,
                            status,
                            data,
                        }
                        .into()
                    })
                    .boxed(),
            );
        }
    } else {
        arms.push(Just(Packet::Reset).boxed());
        arms.push(Just(Packet::GetConfiguration).boxed());
        arms.push(Just(Packet::CancelDataPacket).boxed());
        arms.push(
            u8s()
                .prop_map(|configuration| SetConfiguration { configuration }.into())
                .boxed(),
        );
        arms.push(
            (u8s(), u8s())
                .prop_map(|(interface, alt)| SetAltSetting { interface, alt }.into())
                .boxed(),
        );
        arms.push(
            u8s()
                .prop_map(|interface| GetAltSetting { interface }.into())
                .boxed(),
        );
        arms.push(
            (u8s(), u8s(), u8s())
                .prop_map(|(endpoint, pkts_per_urb, no_urbs)| {
                    StartIsoStream {
                        endpoint,
                        pkts_per_urb,
                        no_urbs,
                    }
                    .into()
                })
                .boxed(),
        );
        arms.push(
            u8s()
                .prop_map(|endpoint| StopIsoStream { endpoint }.into())
                .boxed(),
        );
        arms.push(
            in_ep()
                .prop_map(|endpoint| StartInterruptReceiving { endpoint }.into())
                .boxed(),
        );
        arms.push(
            in_ep()
                .prop_map(|endpoint| StopInterruptReceiving { endpoint }.into())
                .boxed(),
        );
        arms.push(
            (any::<u32>(), any::<u32>())
                .prop_map(|(endpoints, no_streams)| {
                    AllocBulkStreams {
                        endpoints,
                        no_streams,
                    }
                    .into()
                })
                .boxed(),
        );
        arms.push(
            any::<u32>()
                .prop_map(|endpoints| FreeBulkStreams { endpoints }.into())
                .boxed(),
        );
        if receiver.has(Cap::Filter) {
            arms.push(Just(Packet::FilterReject).boxed());
        }
        if receiver.has(Cap::DeviceDisconnectAck) {
            arms.push(Just(Packet::DeviceDisconnectAck).boxed());
        }
        if receiver.has(Cap::BulkReceiving) {
            arms.push(
                (any::<u32>(), 0..=MAX_DATA_LEN, in_ep(), u8s())
                    .prop_map(|(stream_id, bytes_per_transfer, endpoint, no_transfers)| {
                        StartBulkReceiving {
                            stream_id,
                            bytes_per_transfer,
                            endpoint,
                            no_transfers,
                        }
                        .into()
                    })
                    .boxed(),
            );
            arms.push(
                (any::<u32>(), in_ep())
                    .prop_map(|(stream_id, endpoint)| {
                        StopBulkReceiving {
                            stream_id,
                            endpoint,
                        }
                        .into()
                    })
                    .boxed(),
            );
        }
    }
    Union::new(arms).boxed()
}

/// What the receiver sees: fields not on the wire under `neg` become 0.
fn normalize(p: &Packet, neg: Caps) -> Packet {
    let mut p = p.clone();
    match &mut p {
        Packet::DeviceConnect(d) if !neg.has(Cap::ConnectDeviceVersion) => d.device_version_bcd = 0,
        Packet::EpInfo(ep) => {
            for e in ep.endpoints.iter_mut() {
                if !neg.has(Cap::EpInfoMaxPacketSize) {
                    e.max_packet_size = 0;
                }
                if !neg.has(Cap::BulkStreams) {
                    e.max_streams = 0;
                }
            }
        }
        _ => {}
    }
    p
}

fn id(neg: Caps) -> BoxedStrategy<u64> {
    if neg.has(Cap::Ids64) {
        any::<u64>().boxed()
    } else {
        any::<u32>().prop_map(u64::from).boxed()
    }
}

fn role() -> impl Strategy<Value = Role> {
    prop_oneof![Just(Role::Host), Just(Role::Guest)]
}

/// (sender, sender caps, receiver caps, frames)
fn scenario(max_frames: usize) -> impl Strategy<Value = (Role, Caps, Caps, Vec<(u64, Packet)>)> {
    (role(), any::<u32>(), any::<u32>()).prop_flat_map(move |(sender, a, b)| {
        let (ours, theirs) = (Caps::from_bits(a), Caps::from_bits(b));
        let neg = ours.negotiate(theirs);
        (
            Just(sender),
            Just(ours),
            Just(theirs),
            proptest::collection::vec((id(neg), packet(sender, neg, theirs)), 1..max_frames),
        )
    })
}

fn drain(c: &mut Codec) -> Vec<Frame> {
    let mut v = Vec::new();
    while let Some(f) = c.next_frame().unwrap() {
        v.push(f);
    }
    v
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn encode_decode_identity((sender, ours, theirs, frames) in scenario(4)) {
        let neg = ours.negotiate(theirs);
        let mut tx = Codec::with_caps(sender, ours, theirs);
        let mut rx = Codec::with_caps(sender.peer(), theirs, ours);
        for (id, p) in &frames {
            let bytes = tx.encode(*id, p).unwrap();
            prop_assert_eq!(bytes.len(), tx.header_len() + u32::from_le_bytes(bytes[4..8].try_into().unwrap()) as usize);
            rx.feed(&bytes).unwrap();
            let f = rx.next_frame().unwrap().unwrap();
            prop_assert_eq!(f, Frame { id: *id, packet: normalize(p, neg) });
            prop_assert_eq!(rx.buffered(), 0);
        }
    }

    #[test]
    fn split_stream_yields_same_frames(
        (sender, ours, theirs, frames) in scenario(12),
        cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..20),
        version in "[a-z ]{0,20}",
    ) {
        // Start from fresh codecs so the stream includes the hello and the
        // header switch to 64-bit ids when both advertise it.
        let neg = ours.negotiate(theirs);
        let mut tx = Codec::new(sender);
        let mut rx = Codec::new(sender.peer());
        // The receiver sends its hello first; the sender decodes it.
        let rx_hello = rx.encode(0, &Hello::new("rx", theirs).into()).unwrap();
        tx.feed(&rx_hello).unwrap();
        tx.next_frame().unwrap().unwrap();
        let mut stream = tx.encode(0, &Hello::new(version.clone(), ours).into()).unwrap();
        for (id, p) in &frames {
            tx.encode_into(*id, p, &mut stream).unwrap();
        }
        let mut points: Vec<usize> = cuts.iter().map(|i| i.index(stream.len() + 1)).collect();
        points.sort_unstable();
        let mut got = Vec::new();
        let mut last = 0;
        for p in points.into_iter().chain([stream.len()]) {
            rx.feed(&stream[last..p]).unwrap();
            got.extend(drain(&mut rx));
            last = p;
        }
        let mut expected = vec![Frame { id: 0, packet: Hello::new(version, ours).into() }];
        expected.extend(frames.iter().map(|(id, p)| Frame { id: *id, packet: normalize(p, neg) }));
        prop_assert_eq!(got, expected);
        prop_assert_eq!(rx.buffered(), 0);
    }

    #[test]
    fn decoder_never_panics_on_random_bytes(
        receiver in role(),
        ours in any::<u32>(),
        theirs in any::<u32>(),
        data in proptest::collection::vec(any::<u8>(), 0..512),
    ) {
        let mut c = Codec::with_caps(receiver, Caps::from_bits(ours), Caps::from_bits(theirs));
        c.feed(&data).unwrap();
        for _ in 0..1000 {
            match c.next_frame() {
                Ok(None) => break,
                _ => continue,
            }
        }
    }
}
