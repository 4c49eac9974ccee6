//! Bounded fuzzing of the USB relay's policy and gate (runs in CI with the other tests,
//! a few seconds): arbitrary descriptor bytes and arbitrary usbredir packet sequences
//! never panic, and nothing that is not mass storage is ever let through.
//!
//! `AIRLOCK_POLICY_FUZZ_CASES` raises the number of cases for a longer local run.
#![allow(clippy::unwrap_used)]

use airlock_pool::relay::policy::{
    check_descriptor_reply, storage_interface, DescriptorKind, DescriptorRequest,
};
use airlock_pool::relay::{Gate, StreamError};
use proptest::prelude::*;
use std::collections::HashSet;
use usbredir::{
    Caps, Codec, ControlPacket, DeviceConnect, Endpoint, EndpointType, EpInfo, Hello, Interface,
    InterfaceInfo, Packet, Role, Speed, Status,
};

fn cases(default: u32) -> u32 {
    std::env::var("AIRLOCK_POLICY_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// What a USB stack walking the descriptors sees (written apart from the policy, the
/// way Linux's `usb_parse_configuration` walks: by bLength, stopping at one below 2 or
/// past the end): every interface's class triple and every endpoint's transfer type
/// whose bytes are there.
fn visible(d: &[u8]) -> (Vec<(u8, u8, u8)>, Vec<u8>) {
    let (mut ifaces, mut eps) = (Vec::new(), Vec::new());
    let mut i = 0usize;
    while i + 1 < d.len() {
        let len = usize::from(d[i]);
        if len < 2 {
            break;
        }
        match d[i + 1] {
            4 if i + 7 < d.len() => ifaces.push((d[i + 5], d[i + 6], d[i + 7])),
            5 if i + 3 < d.len() => eps.push(d[i + 3] & 3),
            _ => {}
        }
        i += len;
    }
    (ifaces, eps)
}

/// Whether a configuration the policy accepted shows the desktop only storage.
fn storage_only(d: &[u8]) -> bool {
    let (ifaces, eps) = visible(d);
    ifaces.iter().all(|&(c, s, p)| storage_interface(c, s, p)) && eps.iter().all(|&t| t == 2)
}

fn status() -> impl Strategy<Value = Status> {
    (0u8..7).prop_map(|s| Status::from_u8(s).unwrap_or(Status::Success))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(50_000), ..ProptestConfig::default() })]

    /// Arbitrary bytes, as a configuration or a device descriptor.
    #[test]
    fn arbitrary_descriptor_bytes(
        data in prop::collection::vec(any::<u8>(), 0..300),
        extra in 0u16..64,
        st in status(),
    ) {
        let length = data.len() as u16 + extra;
        let cfg = DescriptorRequest { kind: DescriptorKind::Configuration, length };
        if check_descriptor_reply(cfg, st, &data).is_ok() {
            prop_assert!(storage_only(&data), "accepted {data:02x?}");
        }
        let dev = DescriptorRequest { kind: DescriptorKind::Device, length };
        if check_descriptor_reply(dev, st, &data).is_ok() {
            if let Some(&class) = data.get(4) {
                prop_assert!(class == 0 || class == 8);
            }
        }
    }

    /// A configuration header and random descriptors of the types that matter, with
    /// random lengths and contents.
    #[test]
    fn random_descriptors(
        descs in prop::collection::vec(
            (0u8..12, prop_oneof![Just(4u8), Just(5), Just(0x30), Just(0x24), Just(0x21), Just(0x0b), any::<u8>()],
             prop::collection::vec(any::<u8>(), 10)),
            0..8),
        fix_total in any::<bool>(),
        length in 0u16..200,
    ) {
        let mut d = vec![9, 2, 0, 0, 1, 1, 0, 0x80, 50];
        for (len, kind, body) in &descs {
            d.push(*len);
            d.push(*kind);
            d.extend_from_slice(&body[..usize::from(len.saturating_sub(2)).min(body.len())]);
        }
        let total = if fix_total { d.len() as u16 } else { length };
        d[2..4].copy_from_slice(&total.to_le_bytes());
        for want in [u16::MAX, length] {
            let req = DescriptorRequest { kind: DescriptorKind::Configuration, length: want };
            let n = d.len().min(usize::from(want));
            if check_descriptor_reply(req, Status::Success, &d[..n]).is_ok() {
                prop_assert!(storage_only(&d[..n]), "accepted {:02x?}", &d[..n]);
            }
        }
    }

    /// Configurations built from descriptors, some of them not storage: accepted exactly
    /// when every one is storage; accepted ones also when cut by the request.
    #[test]
    fn built_configurations(atoms in prop::collection::vec(0usize..ATOMS.len(), 0..10), cut in any::<prop::sample::Index>()) {
        let mut body = Vec::new();
        for &a in &atoms {
            body.extend_from_slice(ATOMS[a].1);
        }
        let total = (9 + body.len()) as u16;
        let t = total.to_le_bytes();
        let mut d = vec![9, 2, t[0], t[1], 1, 1, 0, 0x80, 50];
        d.extend_from_slice(&body);
        let good = atoms.iter().all(|&a| ATOMS[a].0)
            && atoms.first().is_some_and(|&a| ATOMS[a].1[1] == 4)
            && atoms.iter().any(|&a| ATOMS[a].1[1] == 4);
        let req = |length| DescriptorRequest { kind: DescriptorKind::Configuration, length };
        let r = check_descriptor_reply(req(u16::MAX), Status::Success, &d);
        prop_assert_eq!(r.is_ok(), good, "{:?}: {:?}", atoms, r);
        let n = cut.index(d.len() + 1);
        let r = check_descriptor_reply(req(n as u16), Status::Success, &d[..n]);
        if good {
            prop_assert!(r.is_ok(), "cut at {}: {:?}", n, r);
        }
        if r.is_ok() {
            prop_assert!(storage_only(&d[..n]));
        }
    }
}

/// Descriptors after a configuration header: (acceptable in a storage device, bytes).
const ATOMS: [(bool, &[u8]); 13] = [
    (true, &[9, 4, 0, 0, 2, 8, 6, 0x50, 0]),
    (true, &[9, 4, 0, 1, 2, 8, 6, 0x62, 0]),
    (true, &[9, 4, 0, 0, 2, 8, 2, 0x50, 0]),
    (true, &[7, 5, 0x81, 2, 0, 2, 0]),
    (true, &[7, 5, 0x02, 2, 0, 2, 0]),
    (true, &[6, 0x30, 0, 0, 0, 0]),
    (true, &[4, 0x24, 1, 0]),
    (false, &[9, 4, 1, 0, 1, 3, 1, 1, 0]),
    (false, &[9, 4, 1, 0, 1, 2, 6, 0, 0]),
    (false, &[7, 5, 0x83, 3, 8, 0, 10]),
    (false, &[7, 5, 0x84, 1, 0, 2, 1]),
    (false, &[9, 0x21, 0x11, 1, 0, 1, 0x22, 0x3f, 0]),
    (false, &[8, 0x0b, 0, 2, 3, 0, 0, 0]),
];

/// One step of a hostile terminal or a curious desktop.
#[derive(Debug, Clone)]
enum Step {
    Interfaces(Vec<(u8, u8, u8)>),
    Endpoints(Vec<(u8, u8)>),
    Connect(u8),
    Disconnect,
    /// The desktop asks for a descriptor (type, wLength) with an id.
    Request(u8, u16, u8),
    /// The terminal answers an id with bytes (a configuration from atoms, or raw).
    Reply(u8, Vec<u8>),
    Interrupt,
    Bulk(u16),
}

fn triple() -> impl Strategy<Value = (u8, u8, u8)> {
    prop_oneof![
        Just((8, 6, 0x50)),
        Just((8, 6, 0x62)),
        Just((3, 1, 1)),
        Just((2, 6, 0)),
        any::<(u8, u8, u8)>(),
    ]
}

fn config_bytes() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        prop::collection::vec(0usize..ATOMS.len(), 0..6).prop_map(|atoms| {
            let body: Vec<u8> = atoms.iter().flat_map(|&a| ATOMS[a].1.to_vec()).collect();
            let t = ((9 + body.len()) as u16).to_le_bytes();
            let mut d = vec![9, 2, t[0], t[1], 1, 1, 0, 0x80, 50];
            d.extend(body);
            d
        }),
        prop::collection::vec(any::<u8>(), 0..64),
    ]
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        prop::collection::vec(triple(), 0..3).prop_map(Step::Interfaces),
        prop::collection::vec((any::<u8>(), 0u8..4), 0..4).prop_map(Step::Endpoints),
        prop_oneof![Just(0u8), Just(8), any::<u8>()].prop_map(Step::Connect),
        Just(Step::Disconnect),
        (
            prop_oneof![Just(1u8), Just(2), Just(7), Just(3)],
            0u16..300,
            0u8..4
        )
            .prop_map(|(t, l, id)| Step::Request(t, l, id)),
        (0u8..4, config_bytes()).prop_map(|(id, d)| Step::Reply(id, d)),
        Just(Step::Interrupt),
        (1u16..600).prop_map(Step::Bulk),
    ]
}

/// Runs `steps` through a gate, in chunks of `chunk` bytes, and checks what reaches the
/// desktop with a decoder of its own.
fn run(steps: &[Step], chunk: usize) -> Result<(), TestCaseError> {
    let (qemu_caps, terminal_caps) = (Caps::from_bits(0xff), Caps::HOST_DEFAULT);
    let mut gate = Gate::new();
    let dh = Codec::new(Role::Guest)
        .encode(
            0,
            &Packet::Hello(Hello::new("qemu usb-redir guest 7.2.22", qemu_caps)),
        )
        .unwrap();
    let th = Codec::new(Role::Host)
        .encode(
            0,
            &Packet::Hello(Hello::new("hostile terminal", terminal_caps)),
        )
        .unwrap();
    prop_assert_eq!(gate.from_desktop(&dh).unwrap().to_vec(), dh);
    prop_assert_eq!(gate.from_terminal(&th).unwrap().bytes.to_vec(), th);
    prop_assert!(gate.hellos_known());
    // The two sides' encoders, and the decoders of what passes to each.
    let mut t_enc = Codec::with_caps(Role::Host, terminal_caps, qemu_caps);
    let mut d_enc = Codec::with_caps(Role::Guest, qemu_caps, terminal_caps);
    let mut d_dec = Codec::with_caps(Role::Guest, qemu_caps, terminal_caps);
    let mut t_dec = Codec::with_caps(Role::Host, terminal_caps, qemu_caps);

    // What the desktop has seen, for the property.
    let mut interfaces_ok = false;
    let mut endpoints_ok = false;
    let mut asked: HashSet<u64> = HashSet::new();
    let mut id_base = 1u64;
    for s in steps {
        let (from_terminal, packet, id) = match s {
            Step::Interfaces(list) => (
                true,
                Packet::InterfaceInfo(InterfaceInfo {
                    interfaces: list
                        .iter()
                        .enumerate()
                        .map(|(n, &(class, subclass, protocol))| Interface {
                            number: n as u8,
                            class,
                            subclass,
                            protocol,
                        })
                        .collect(),
                }),
                0,
            ),
            Step::Endpoints(list) => {
                let mut info = EpInfo::new();
                for &(addr, t) in list {
                    let ep_type = EndpointType::from_u8(t).unwrap_or(EndpointType::Bulk);
                    info.set(
                        addr,
                        Endpoint {
                            ep_type,
                            max_packet_size: 64,
                            ..Endpoint::INVALID
                        },
                    );
                }
                (true, Packet::EpInfo(Box::new(info)), 0)
            }
            Step::Connect(class) => (
                true,
                Packet::DeviceConnect(DeviceConnect {
                    speed: Speed::High,
                    device_class: *class,
                    device_subclass: 0,
                    device_protocol: 0,
                    vendor_id: 1,
                    product_id: 2,
                    device_version_bcd: 0,
                }),
                0,
            ),
            Step::Disconnect => (true, Packet::DeviceDisconnect, 0),
            Step::Request(t, len, id) => (
                false,
                Packet::ControlPacket(ControlPacket {
                    endpoint: 0x80,
                    request: 6,
                    request_type: 0x80,
                    status: Status::Success,
                    value: u16::from(*t) << 8,
                    index: 0,
                    length: *len,
                    data: Default::default(),
                }),
                id_base + u64::from(*id),
            ),
            Step::Reply(id, data) => (
                true,
                Packet::ControlPacket(ControlPacket {
                    endpoint: 0x80,
                    request: 6,
                    request_type: 0x80,
                    status: Status::Success,
                    value: 0x0200,
                    index: 0,
                    length: data.len() as u16,
                    data: data.clone().into(),
                }),
                id_base + u64::from(*id),
            ),
            Step::Interrupt => (
                true,
                Packet::InterruptPacket(usbredir::InterruptPacket {
                    endpoint: 0x81,
                    status: Status::Success,
                    length: 8,
                    data: vec![0, 0, 4, 0, 0, 0, 0, 0].into(),
                }),
                0,
            ),
            Step::Bulk(n) => (
                true,
                Packet::BulkPacket(usbredir::BulkPacket {
                    endpoint: 0x81,
                    status: Status::Success,
                    length: u32::from(*n),
                    stream_id: 0,
                    data: vec![0x55; usize::from(*n)].into(),
                }),
                7,
            ),
        };
        if matches!(s, Step::Disconnect) {
            id_base += 16;
        }
        let enc = if from_terminal {
            &mut t_enc
        } else {
            &mut d_enc
        };
        let Ok(bytes) = enc.encode(id, &packet) else {
            continue;
        };
        let mut out = Vec::new();
        let mut ended = false;
        for c in bytes.chunks(chunk.max(1)) {
            let r: Result<Vec<u8>, StreamError> = if from_terminal {
                gate.from_terminal(c).map(|p| p.bytes.to_vec())
            } else {
                gate.from_desktop(c).map(|b| b.to_vec())
            };
            match r {
                Ok(b) => out.extend(b),
                Err(_) => {
                    ended = true;
                    break;
                }
            }
        }
        let dec = if from_terminal {
            &mut d_dec
        } else {
            &mut t_dec
        };
        dec.feed(&out).unwrap();
        while let Some(f) = dec.next_frame().unwrap() {
            match f.packet {
                Packet::InterfaceInfo(i) => {
                    prop_assert!(i
                        .interfaces
                        .iter()
                        .all(|i| storage_interface(i.class, i.subclass, i.protocol)));
                    prop_assert!(!i.interfaces.is_empty());
                    interfaces_ok = true;
                }
                Packet::EpInfo(e) => {
                    prop_assert!(e.endpoints.iter().all(|e| matches!(
                        e.ep_type,
                        EndpointType::Bulk | EndpointType::Control | EndpointType::Invalid
                    )));
                    endpoints_ok = true;
                }
                Packet::DeviceConnect(d) => {
                    prop_assert!(interfaces_ok && endpoints_ok);
                    prop_assert!(d.device_class == 0 || d.device_class == 8);
                }
                Packet::DeviceDisconnect => {
                    interfaces_ok = false;
                    endpoints_ok = false;
                    asked.clear();
                }
                // A configuration the desktop asked for: storage only.
                Packet::ControlPacket(c) if from_terminal && asked.remove(&f.id) => {
                    prop_assert!(storage_only(&c.data), "{:02x?}", c.data);
                }
                Packet::ControlPacket(c) if !from_terminal && matches!(c.value >> 8, 2 | 7) => {
                    asked.insert(f.id);
                }
                Packet::InterruptPacket(_) | Packet::IsoPacket(_) => {
                    prop_assert!(false, "interrupt or iso data passed")
                }
                _ => {}
            }
        }
        if ended {
            break;
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(10_000), ..ProptestConfig::default() })]

    /// Arbitrary packet sequences of a hostile terminal, with the desktop's descriptor
    /// requests among them, cut into arbitrary chunks.
    #[test]
    fn packet_sequences(steps in prop::collection::vec(step(), 0..24), chunk in prop_oneof![Just(1usize), 2usize..64, Just(1 << 20)]) {
        run(&steps, chunk)?;
    }

    /// Arbitrary bytes from either side never panic the gate.
    #[test]
    fn arbitrary_stream_bytes(t in prop::collection::vec(any::<u8>(), 0..400), d in prop::collection::vec(any::<u8>(), 0..400)) {
        let mut g = Gate::new();
        let _ = g.from_desktop(&d);
        let _ = g.from_terminal(&t);
    }
}
