#![allow(clippy::unwrap_used)]
use super::*;
use usb_cdrom::{Descriptors, DeviceConfig, Speed};
use usbredir::{Bytes, Endpoint};

// Written out again, not taken from the module: the table is what is tested.
const ALLOWED: [(u8, u8, u8); 4] = [
    (0x08, 0x02, 0x50),
    (0x08, 0x05, 0x50),
    (0x08, 0x06, 0x50),
    (0x08, 0x06, 0x62),
];

#[test]
fn interface_policy_exhaustive() {
    // Every class/subclass/protocol triple: exactly the four storage ones pass.
    let mut passed = Vec::new();
    for class in 0..=255u8 {
        for sub in 0..=255u8 {
            for proto in 0..=255u8 {
                if storage_interface(class, sub, proto) {
                    passed.push((class, sub, proto));
                }
            }
        }
    }
    assert_eq!(passed, ALLOWED);
}

#[test]
fn interface_lists() {
    assert_eq!(check_interfaces(&[]), Err(Refusal::NoInterfaces));
    for ok in ALLOWED {
        assert!(check_interfaces(&[ok]).is_ok());
        assert!(check_interfaces(&[ok, ok]).is_ok());
    }
    for (list, what) in [
        (vec![(0x03, 0x01, 0x01)], "keyboard"),
        (vec![(0x09, 0x00, 0x00)], "hub"),
        (vec![(0x08, 0x02, 0x62)], "UAS is SCSI only"),
        (vec![(0x08, 0x06, 0x01)], "CBI"),
        (
            vec![(0x08, 0x06, 0x50), (0x03, 0x00, 0x00)],
            "storage + HID",
        ),
        (
            vec![(0x08, 0x06, 0x50), (0x02, 0x06, 0x00)],
            "storage + CDC ECM",
        ),
        (vec![(0xfe, 0x01, 0x02)], "DFU"),
        (vec![(0xff, 0xff, 0xff)], "vendor"),
    ] {
        assert!(
            matches!(check_interfaces(&list), Err(Refusal::Interface { .. })),
            "{what}"
        );
    }
    let e = check_interfaces(&[(0x08, 0x06, 0x50), (0x03, 0x01, 0x01)]).unwrap_err();
    assert!(
        e.to_string().contains("interface 1 is class 03:01:01"),
        "{e}"
    );
}

#[test]
fn device_class_exhaustive() {
    for c in 0..=255u8 {
        assert_eq!(check_device_class(c).is_ok(), c == 0 || c == 8, "{c:#x}");
    }
}

fn ep(t: EndpointType) -> Endpoint {
    Endpoint {
        ep_type: t,
        max_packet_size: 512,
        ..Endpoint::INVALID
    }
}

#[test]
fn endpoint_policy_exhaustive() {
    use EndpointType as T;
    // Every slot with every type, alone on top of a storage layout.
    for slot in 0..32usize {
        let address = usbredir::endpoint_address(slot);
        for t in [T::Control, T::Iso, T::Bulk, T::Interrupt, T::Invalid] {
            let mut info = EpInfo::new()
                .with(0x02, ep(T::Bulk))
                .with(0x81, ep(T::Bulk));
            info.endpoints[slot] = ep(t);
            let want = match t {
                T::Invalid => true,
                T::Control => address & 0x0f == 0,
                T::Bulk => address & 0x0f != 0,
                T::Iso | T::Interrupt => false,
            };
            assert_eq!(
                check_endpoints(&info).is_ok(),
                want,
                "slot {slot} ({address:#04x}) {t:?}"
            );
        }
    }
    assert!(check_endpoints(&EpInfo::all_invalid()).is_ok());
    let e = check_endpoints(&EpInfo::new().with(0x81, ep(T::Interrupt))).unwrap_err();
    assert!(e.to_string().contains("endpoint 0x81 is interrupt"), "{e}");
}

fn get_descriptor(request_type: u8, value: u16, length: u16) -> ControlPacket {
    ControlPacket {
        endpoint: request_type & 0x80,
        request: 6,
        request_type,
        status: Status::Success,
        value,
        index: 0,
        length,
        data: Bytes::new(),
    }
}

#[test]
fn descriptor_requests() {
    let dev = |l| DescriptorRequest {
        kind: DescriptorKind::Device,
        length: l,
    };
    let cfg = |l| DescriptorRequest {
        kind: DescriptorKind::Configuration,
        length: l,
    };
    assert_eq!(
        descriptor_request(&get_descriptor(0x80, 0x0100, 64)),
        Some(dev(64))
    );
    assert_eq!(
        descriptor_request(&get_descriptor(0x80, 0x0200, 9)),
        Some(cfg(9))
    );
    assert_eq!(
        descriptor_request(&get_descriptor(0x80, 0x0201, 255)),
        Some(cfg(255))
    );
    assert_eq!(
        descriptor_request(&get_descriptor(0x80, 0x0700, 32)),
        Some(cfg(32))
    );
    // Strings, BOS, qualifier; other recipients or types; other requests.
    for (rt, value) in [
        (0x80, 0x0300),
        (0x80, 0x0f00),
        (0x80, 0x0600),
        (0x81, 0x2200),
        (0xa0, 0x0200),
        (0x00, 0x0200),
    ] {
        assert_eq!(descriptor_request(&get_descriptor(rt, value, 64)), None);
    }
    let mut status = get_descriptor(0x80, 0x0200, 2);
    status.request = 0;
    assert_eq!(descriptor_request(&status), None);
}

fn cfg(len: u16) -> DescriptorRequest {
    DescriptorRequest {
        kind: DescriptorKind::Configuration,
        length: len,
    }
}

fn check_cfg(d: &[u8]) -> Result<(), Refusal> {
    check_descriptor_reply(cfg(u16::MAX), Status::Success, d)
}

/// A configuration of `body` (descriptors after the header), with its total length.
fn config(body: &[&[u8]]) -> Vec<u8> {
    let total: usize = 9 + body.iter().map(|d| d.len()).sum::<usize>();
    let t = (total as u16).to_le_bytes();
    let mut v = vec![9, 2, t[0], t[1], 1, 1, 0, 0x80, 50];
    for d in body {
        v.extend_from_slice(d);
    }
    v
}

fn iface(n: u8, class: u8, sub: u8, proto: u8) -> [u8; 9] {
    [9, 4, n, 0, 2, class, sub, proto, 0]
}

fn endpoint(address: u8, attributes: u8) -> [u8; 7] {
    [7, 5, address, attributes, 0, 2, 0]
}

const BULK_IN: [u8; 7] = [7, 5, 0x81, 2, 0, 2, 0];
const BULK_OUT: [u8; 7] = [7, 5, 0x02, 2, 0, 2, 0];

#[test]
fn the_emulated_drives_descriptors_pass() {
    for speed in [Speed::Full, Speed::High, Speed::Super] {
        for uas in [false, true] {
            let d = Descriptors::new(&DeviceConfig {
                speed,
                uas,
                ..DeviceConfig::default()
            });
            let c = d.configuration();
            check_cfg(c).unwrap();
            if let Some(o) = d.other_speed_configuration() {
                check_cfg(o).unwrap();
            }
            // Cut by the request at every length, as a desktop reads 9 bytes first.
            for n in 0..=c.len() {
                let want = u16::try_from(n).unwrap();
                check_descriptor_reply(cfg(want), Status::Success, c.get(..n).unwrap())
                    .unwrap_or_else(|e| panic!("{speed:?} uas={uas} cut at {n}: {e}"));
            }
            let dev = DescriptorRequest {
                kind: DescriptorKind::Device,
                length: 64,
            };
            check_descriptor_reply(dev, Status::Success, d.device()).unwrap();
            for n in [8usize, 18] {
                check_descriptor_reply(
                    DescriptorRequest {
                        kind: DescriptorKind::Device,
                        length: n as u16,
                    },
                    Status::Success,
                    d.device().get(..n).unwrap(),
                )
                .unwrap();
            }
        }
    }
}

#[test]
fn configuration_table() {
    type Case = (Vec<u8>, bool, &'static str);
    let hid_desc: &[u8] = &[9, 0x21, 0x11, 0x01, 0, 1, 0x22, 0x3f, 0];
    let iad: &[u8] = &[8, 0x0b, 0, 2, 0x08, 0x06, 0x50, 0];
    let cases: Vec<Case> = vec![
        (
            config(&[&iface(0, 8, 6, 0x50), &BULK_IN, &BULK_OUT]),
            true,
            "BOT",
        ),
        (
            config(&[&iface(0, 8, 2, 0x50), &BULK_IN, &BULK_OUT]),
            true,
            "ATAPI",
        ),
        (
            config(&[
                &iface(0, 8, 6, 0x50),
                &BULK_IN,
                &BULK_OUT,
                &[9, 4, 0, 1, 2, 8, 6, 0x62, 0],
                &BULK_IN,
                &[6, 0x30, 0, 0, 0, 0],
                &[4, 0x24, 3, 0],
                &BULK_OUT,
                &[4, 0x24, 4, 0],
            ]),
            true,
            "BOT + UAS alt setting",
        ),
        (
            config(&[&[3, 9, 3], &iface(0, 8, 6, 0x50), &BULK_IN]),
            true,
            "OTG descriptor",
        ),
        (config(&[]), false, "no interface"),
        (
            config(&[&iface(0, 3, 1, 1), hid_desc, &endpoint(0x81, 3)]),
            false,
            "keyboard",
        ),
        (
            config(&[
                &iface(0, 8, 6, 0x50),
                &BULK_IN,
                &BULK_OUT,
                &iface(1, 3, 0, 0),
                hid_desc,
                &endpoint(0x83, 3),
            ]),
            false,
            "storage + HID",
        ),
        (
            config(&[
                &iface(0, 8, 6, 0x50),
                &BULK_IN,
                &BULK_OUT,
                &iface(1, 2, 6, 0),
            ]),
            false,
            "storage + CDC ECM",
        ),
        (
            config(&[
                &iface(0, 8, 6, 0x50),
                &BULK_IN,
                &[9, 4, 0, 1, 1, 3, 1, 1, 0],
            ]),
            false,
            "HID as an alternate setting",
        ),
        (
            config(&[&iface(0, 8, 6, 0x50), &endpoint(0x81, 3)]),
            false,
            "interrupt endpoint",
        ),
        (
            config(&[&iface(0, 8, 6, 0x50), &endpoint(0x81, 1)]),
            false,
            "isochronous endpoint",
        ),
        (
            config(&[&iface(0, 8, 6, 0x50), &endpoint(0x80, 2)]),
            false,
            "endpoint 0",
        ),
        (
            config(&[&BULK_IN, &iface(0, 8, 6, 0x50)]),
            false,
            "endpoint first",
        ),
        (
            config(&[iad, &iface(0, 8, 6, 0x50), &BULK_IN]),
            false,
            "IAD",
        ),
        (
            config(&[&iface(0, 8, 6, 0x50), hid_desc, &BULK_IN]),
            false,
            "HID descriptor",
        ),
        (
            config(&[&iface(0, 8, 6, 0x50), &[0, 5]]),
            false,
            "bLength 0 (a loop)",
        ),
        (config(&[&iface(0, 8, 6, 0x50), &[1]]), false, "bLength 1"),
        (
            config(&[&iface(0, 8, 6, 0x50), &[5, 5, 0x81, 2, 0]]),
            false,
            "short endpoint",
        ),
        (
            config(&[&[8, 4, 0, 0, 2, 8, 6, 0x50]]),
            false,
            "short interface",
        ),
        (
            config(&[&iface(0, 8, 6, 0x50), &[9, 2, 9, 0, 1, 1, 0, 0x80, 50]]),
            false,
            "nested configuration",
        ),
        (
            vec![9, 1, 9, 0, 1, 1, 0, 0x80, 50],
            false,
            "not a configuration",
        ),
        (
            vec![8, 2, 8, 0, 1, 1, 0, 0x80],
            false,
            "short configuration",
        ),
        (
            vec![9, 2, 4, 0, 1, 1, 0, 0x80, 50],
            false,
            "wTotalLength < bLength",
        ),
    ];
    for (d, ok, what) in &cases {
        assert_eq!(check_cfg(d).is_ok(), *ok, "{what}: {:?}", check_cfg(d));
    }
    let e = check_cfg(&cases[6].0).unwrap_err();
    assert!(
        e.to_string().contains("interface 1 is class 03:00:00"),
        "{e}"
    );
}

#[test]
fn truncation_and_lengths() {
    let good = config(&[&iface(0, 8, 6, 0x50), &BULK_IN, &BULK_OUT]);
    // Longer than asked for.
    assert!(matches!(
        check_descriptor_reply(cfg(9), Status::Success, &good),
        Err(Refusal::ReplyTooLong { .. })
    ));
    // Cut where the desktop did not ask for less: an endpoint runs past the end.
    let cut = &good[..good.len() - 3];
    assert!(check_descriptor_reply(cfg(255), Status::Success, cut).is_err());
    // The same bytes when the desktop asked for exactly that many: fine.
    assert!(check_descriptor_reply(cfg(cut.len() as u16), Status::Success, cut).is_ok());
    // Short but whole descriptors (a forwarder that hid an alternate setting): fine.
    let mut short = good[..good.len() - 7].to_vec();
    short[2] = good[2];
    assert!(check_descriptor_reply(cfg(255), Status::Success, &short).is_ok());
    // More bytes than wTotalLength says.
    let mut long = good.clone();
    long.extend_from_slice(&BULK_IN);
    assert!(check_cfg(&long).is_err());
    // A HID interface is refused however little of it shows, as long as its class does.
    let bad = config(&[&iface(0, 8, 6, 0x50), &BULK_IN, &iface(1, 3, 1, 1)]);
    for n in 0..=bad.len() {
        let r = check_descriptor_reply(cfg(n as u16), Status::Success, &bad[..n]);
        assert_eq!(r.is_ok(), n < 25 + 6, "cut at {n}: {r:?}");
    }
    // A stall with nothing: nothing to read.
    assert!(check_descriptor_reply(cfg(9), Status::Stall, &[]).is_ok());
    // A failed transfer with data is checked like any other.
    assert!(check_descriptor_reply(cfg(255), Status::Stall, &bad).is_err());
}

#[test]
fn device_descriptors() {
    let req = |l| DescriptorRequest {
        kind: DescriptorKind::Device,
        length: l,
    };
    let mut d = [
        18u8, 1, 0, 2, 0, 0, 0, 64, 0x09, 0x12, 1, 0, 0, 1, 1, 2, 3, 1,
    ];
    assert!(check_descriptor_reply(req(18), Status::Success, &d).is_ok());
    for class in [0x03u8, 0x09, 0x02, 0xe0, 0xef, 0xff] {
        d[4] = class;
        assert_eq!(
            check_descriptor_reply(req(18), Status::Success, &d),
            Err(Refusal::DeviceClass(class))
        );
        // Only the first four bytes read: the class is not seen.
        assert!(check_descriptor_reply(req(4), Status::Success, &d[..4]).is_ok());
    }
    d[4] = 8;
    assert!(check_descriptor_reply(req(64), Status::Success, &d).is_ok());
    d[0] = 12;
    assert!(check_descriptor_reply(req(64), Status::Success, &d).is_err());
    d[0] = 18;
    d[1] = 2;
    assert!(check_descriptor_reply(req(64), Status::Success, &d).is_err());
}
