//! Randomized bus input: random CBWs (valid and not), data, IN requests of any size,
//! control requests, cancels, resets and disc changes. Nothing may panic, every request
//! completes at most once and within its size, and a host's reset recovery always
//! brings the drive back.

mod common;

use std::collections::HashSet;

use common::{cbw, pattern, read10, Host};
use proptest::prelude::*;
use usb_cdrom::{
    Completion, Csw, CswStatus, DeviceConfig, MemoryMedium, SetupPacket, Speed, TransferStatus,
    UsbCdrom, BULK_IN_ENDPOINT, BULK_OUT_ENDPOINT,
};

#[derive(Debug, Clone)]
enum Op {
    Cbw {
        tag: u32,
        len: u32,
        data_in: bool,
        cdb: Vec<u8>,
    },
    RawOut(Vec<u8>),
    DataOut(u32),
    In(u32),
    Control {
        rt: u8,
        req: u8,
        value: u16,
        index: u16,
        length: u16,
    },
    ClearHalt(u8),
    SetHalt(u8),
    MassStorageReset,
    SetConfiguration(u8),
    Cancel(usize),
    Insert(u32),
    Remove,
    PortReset,
    OtherEndpoint(u8, u32),
}

const OPCODES: &[u8] = &[
    0x00, 0x03, 0x12, 0x15, 0x1A, 0x1B, 0x1E, 0x25, 0x28, 0x2B, 0x2F, 0x35, 0x43, 0x44, 0x46, 0x4A,
    0x51, 0x52, 0x55, 0x5A, 0x91, 0xA0, 0xA8, 0xAC, 0xAD, 0xB6, 0xBB, 0xBD, 0xBE, 0x23, 0xA4, 0xFF,
];

fn cdb() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        // Known opcode, random fields.
        (
            prop::sample::select(OPCODES),
            prop::collection::vec(any::<u8>(), 5..16)
        )
            .prop_map(|(op, rest)| [vec![op], rest].concat()),
        // Reads that mostly land on the disc.
        (0u32..220, 0u16..40).prop_map(|(lba, n)| read10(lba, n)),
        // Anything.
        prop::collection::vec(any::<u8>(), 1..=16),
    ]
}

fn speed() -> impl Strategy<Value = Speed> {
    prop_oneof![Just(Speed::Full), Just(Speed::High), Just(Speed::Super)]
}

fn length() -> impl Strategy<Value = u32> {
    prop_oneof![
        Just(0u32),
        Just(13),
        Just(36),
        Just(512),
        Just(2048),
        0u32..600,
        0u32..300_000,
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (any::<u32>(), length(), any::<bool>(), cdb())
            .prop_map(|(tag, len, data_in, cdb)| Op::Cbw { tag, len, data_in, cdb }),
        1 => prop::collection::vec(any::<u8>(), 0..64).prop_map(Op::RawOut),
        2 => length().prop_map(Op::DataOut),
        6 => prop_oneof![Just(13u32), Just(512), Just(4096), Just(1 << 20), 0u32..70_000]
            .prop_map(Op::In),
        2 => (any::<u8>(), any::<u8>(), any::<u16>(), any::<u16>(), any::<u16>())
            .prop_map(|(rt, req, value, index, length)| Op::Control { rt, req, value, index, length }),
        2 => prop::sample::select(vec![0x81u8, 0x02, 0x00, 0x83]).prop_map(Op::ClearHalt),
        1 => prop::sample::select(vec![0x81u8, 0x02]).prop_map(Op::SetHalt),
        1 => Just(Op::MassStorageReset),
        1 => (0u8..3).prop_map(Op::SetConfiguration),
        2 => any::<usize>().prop_map(Op::Cancel),
        1 => (1u32..300).prop_map(Op::Insert),
        1 => Just(Op::Remove),
        1 => Just(Op::PortReset),
        1 => (any::<u8>(), 0u32..1000).prop_map(|(ep, n)| Op::OtherEndpoint(ep, n)),
    ]
}

struct Tracker {
    next_id: u64,
    outstanding: Vec<u64>,
    /// id -> max_len of IN requests
    in_sizes: std::collections::HashMap<u64, u32>,
    out_sizes: std::collections::HashMap<u64, usize>,
    done: HashSet<u64>,
}

impl Tracker {
    fn new() -> Self {
        Self {
            next_id: 1,
            outstanding: Vec::new(),
            in_sizes: Default::default(),
            out_sizes: Default::default(),
            done: HashSet::new(),
        }
    }

    fn id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    fn check(&mut self, completions: Vec<Completion>) {
        for c in completions {
            assert!(self.done.insert(c.id), "id {} completed twice", c.id);
            self.outstanding.retain(|&i| i != c.id);
            assert_eq!(
                c.length as usize,
                if c.endpoint & 0x80 != 0 {
                    c.data.len()
                } else {
                    c.length as usize
                }
            );
            if let Some(&max) = self.in_sizes.get(&c.id) {
                assert!(
                    c.data.len() <= max as usize,
                    "IN overfilled: {} > {max}",
                    c.data.len()
                );
                if c.status == TransferStatus::Cancelled || c.status == TransferStatus::Babble {
                    assert!(c.data.is_empty());
                }
            } else if let Some(&n) = self.out_sizes.get(&c.id) {
                assert!(c.data.is_empty());
                assert!(c.length as usize <= n);
            }
        }
    }
}

fn run(dev: &mut UsbCdrom, ops: &[Op]) -> Tracker {
    let mut t = Tracker::new();
    for op in ops {
        match op.clone() {
            Op::Cbw {
                tag,
                len,
                data_in,
                cdb: c,
            } => {
                let id = t.id();
                t.outstanding.push(id);
                t.out_sizes.insert(id, 31);
                dev.submit_bulk_out(BULK_OUT_ENDPOINT, id, &cbw(tag, len, data_in, &c));
            }
            Op::RawOut(data) => {
                let id = t.id();
                t.outstanding.push(id);
                t.out_sizes.insert(id, data.len());
                dev.submit_bulk_out(BULK_OUT_ENDPOINT, id, &data);
            }
            Op::DataOut(n) => {
                let id = t.id();
                t.outstanding.push(id);
                t.out_sizes.insert(id, n as usize);
                dev.submit_bulk_out(BULK_OUT_ENDPOINT, id, &vec![0xA5; n as usize]);
            }
            Op::In(n) => {
                let id = t.id();
                t.outstanding.push(id);
                t.in_sizes.insert(id, n);
                dev.submit_bulk_in(BULK_IN_ENDPOINT, id, n);
            }
            Op::Control {
                rt,
                req,
                value,
                index,
                length,
            } => {
                let r = dev.control(SetupPacket::new(rt, req, value, index, length), &[1, 2, 3]);
                assert!(r.data.len() <= usize::from(length));
                if rt & 0x80 == 0 {
                    assert!(r.data.is_empty());
                }
            }
            Op::ClearHalt(ep) => {
                dev.control(SetupPacket::new(0x02, 0x01, 0, u16::from(ep), 0), &[]);
            }
            Op::SetHalt(ep) => {
                dev.control(SetupPacket::new(0x02, 0x03, 0, u16::from(ep), 0), &[]);
            }
            Op::MassStorageReset => {
                assert!(dev
                    .control(SetupPacket::new(0x21, 0xFF, 0, 0, 0), &[])
                    .is_ok());
            }
            Op::SetConfiguration(v) => {
                let ok = dev
                    .control(SetupPacket::new(0x00, 0x09, u16::from(v), 0, 0), &[])
                    .is_ok();
                assert_eq!(ok, v <= 1);
            }
            Op::Cancel(i) => {
                if !t.outstanding.is_empty() {
                    let id = t.outstanding[i % t.outstanding.len()];
                    assert!(dev.cancel(id), "outstanding id {id} not cancellable");
                }
            }
            Op::Insert(n) => {
                dev.insert_medium(Box::new(MemoryMedium::patterned("f", n)));
            }
            Op::Remove => {
                dev.remove_medium();
            }
            Op::PortReset => dev.reset(),
            Op::OtherEndpoint(ep, n) => {
                let id = t.id();
                if ep == BULK_IN_ENDPOINT || ep == BULK_OUT_ENDPOINT {
                    continue;
                }
                dev.submit_bulk_in(ep, id, n);
                let c = dev.take_completions();
                assert_eq!(c.len(), 1);
                assert_eq!(c[0].status, TransferStatus::Invalid);
                continue;
            }
        }
        let c = dev.take_completions();
        t.check(c);
        assert_eq!(dev.pending_requests(), t.outstanding.len());
    }
    t
}

/// What a host does after anything went wrong: cancel, reconfigure, reset recovery,
/// then the drive must answer INQUIRY and read a disc correctly.
fn recover_and_verify(mut dev: UsbCdrom, mut t: Tracker) {
    for id in t.outstanding.clone() {
        assert!(dev.cancel(id));
    }
    let c = dev.take_completions();
    assert!(c.iter().all(|c| c.status == TransferStatus::Cancelled));
    t.check(c);
    assert_eq!(dev.pending_requests(), 0);
    if dev.configuration() == 0 {
        assert!(dev
            .control(SetupPacket::new(0x00, 0x09, 1, 0, 0), &[])
            .is_ok());
    }
    let mut h = Host::new(dev);
    h.reset_recovery();
    let (d, csw) = h.command_in(&[0x12, 0, 0, 0, 36, 0], 36);
    assert_eq!(d.len(), 36);
    assert_eq!(d[0], 0x05);
    assert_eq!((csw.status, csw.residue), (CswStatus::Passed, 0));
    h.dev
        .insert_medium(Box::new(MemoryMedium::patterned("ok", 64)));
    h.clear_unit_attentions();
    // Tray might be open from a host eject: a load command closes it.
    assert_eq!(
        h.command(&[0x1B, 0, 0, 0, 0x03, 0]).status,
        CswStatus::Passed
    );
    h.clear_unit_attentions();
    assert_eq!(h.command(&[0; 6]).status, CswStatus::Passed);
    let (d, csw) = h.command_in(&read10(7, 3), 3 * 2048);
    assert_eq!(csw.status, CswStatus::Passed);
    assert_eq!(d, pattern(7, 3));
    // And the transport is in step: a CBW + one big request gives data + CSW.
    h.dev.submit_bulk_out(
        BULK_OUT_ENDPOINT,
        1 << 40,
        &cbw(0xC0FFEE, 4096, true, &read10(1, 2)),
    );
    h.dev
        .submit_bulk_in(BULK_IN_ENDPOINT, (1 << 40) + 1, 1 << 20);
    let c = h.dev.take_completions();
    assert_eq!(c.len(), 2);
    assert_eq!(c[1].data.len(), 4096 + 13);
    let csw = Csw::parse(&c[1].data[4096..]).expect("a CSW after the data");
    assert_eq!((csw.tag, csw.status), (0xC0FFEE, CswStatus::Passed));
}

proptest! {
    // 256 cases by default; set PROPTEST_CASES for a longer run.
    #[test]
    fn random_bus_traffic_never_panics_and_recovers(
        ops in prop::collection::vec(op(), 1..60),
        with_disc in any::<bool>(),
        speed in speed(),
    ) {
        let config = DeviceConfig { speed, ..DeviceConfig::default() };
        let mut dev = if with_disc {
            UsbCdrom::with_medium(config, Box::new(MemoryMedium::patterned("d", 200)))
        } else {
            UsbCdrom::new(config)
        };
        let t = run(&mut dev, &ops);
        recover_and_verify(dev, t);
    }

    #[test]
    fn any_cdb_gets_a_csw(cdb in cdb(), len in length(), data_in in any::<bool>()) {
        let mut h = Host::with_disc(200);
        let tag = h.send_cbw(&cdb, len, data_in);
        // Like Linux: one data transfer of the host length, then the CSW.
        if len > 0 {
            if data_in {
                let c = h.in_(len);
                prop_assert!(c.data.len() <= len as usize);
                if c.status == TransferStatus::Stall {
                    h.clear_halt(BULK_IN_ENDPOINT);
                }
            } else {
                let c = h.out(&vec![0u8; len as usize]);
                if c.status == TransferStatus::Stall {
                    h.clear_halt(BULK_OUT_ENDPOINT);
                }
            }
        }
        let csw = h.read_csw(tag);
        if csw.status == CswStatus::PhaseError {
            h.reset_recovery();
        }
        prop_assert!(csw.residue <= len);
        let (d, csw) = h.command_in(&[0x12, 0, 0, 0, 36, 0], 36);
        prop_assert_eq!(d.len(), 36);
        prop_assert_eq!(csw.status, CswStatus::Passed);
    }

    #[test]
    fn any_setup_packet_is_answered(
        bytes in any::<[u8; 8]>(),
        data in prop::collection::vec(any::<u8>(), 0..16),
        speed in speed(),
    ) {
        let mut dev = UsbCdrom::new(DeviceConfig { speed, ..DeviceConfig::default() });
        let setup = SetupPacket::from_bytes(bytes);
        let r = dev.control(setup, &data);
        prop_assert!(r.data.len() <= usize::from(setup.length));
        prop_assert!(matches!(r.status, TransferStatus::Success | TransferStatus::Stall));
    }
}
