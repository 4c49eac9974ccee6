//! USB Attached SCSI on the emulated drive: alternate setting 1, command IUs, data and
//! status in the command's stream, task management, and how it coexists with
//! Bulk-Only.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use usb_cdrom::descriptors::{
    UAS_COMMAND_ENDPOINT, UAS_DATA_IN_ENDPOINT, UAS_DATA_OUT_ENDPOINT, UAS_STATUS_ENDPOINT,
};
use usb_cdrom::uas::{self, CommandIu, TaskManagementIu};
use usb_cdrom::{
    Completion, DeviceConfig, Medium, MemoryMedium, SetupPacket, Speed, TransferStatus, UsbCdrom,
    SECTOR_SIZE,
};

fn drive() -> UsbCdrom {
    let disc = MemoryMedium::patterned("disc", 64);
    let mut d = UsbCdrom::with_medium(DeviceConfig::default(), Box::new(disc));
    assert!(d
        .control(SetupPacket::new(0x01, 0x0B, 1, 0, 0), &[])
        .is_ok());
    assert_eq!(d.alt_setting(), 1);
    d
}

fn command(tag: u16, cdb: &[u8]) -> [u8; 32] {
    let mut c = [0u8; 16];
    c[..cdb.len()].copy_from_slice(cdb);
    CommandIu {
        tag,
        prio_task_attribute: 0,
        lun: 0,
        cdb: c,
    }
    .to_bytes()
}

/// Submits status, data-in and command the way Linux's uas driver does; returns
/// (data, status IU).
/// Queues the status request (id `id`) and, if `len` > 0, a data-in request of
/// `len` bytes (`id + 1`) in stream `tag`, then sends `cdb` as Command IU
/// (`id + 2`); returns the completions so far.
fn submit_command(d: &mut UsbCdrom, tag: u16, cdb: &[u8], len: u32, id: u64) -> Vec<Completion> {
    let stream = u32::from(tag);
    d.submit_bulk_in_stream(UAS_STATUS_ENDPOINT, stream, id, 112);
    if len > 0 {
        d.submit_bulk_in_stream(UAS_DATA_IN_ENDPOINT, stream, id + 1, len);
    }
    d.submit_bulk_out(UAS_COMMAND_ENDPOINT, id + 2, &command(tag, cdb));
    d.take_completions()
}

fn run_in(d: &mut UsbCdrom, tag: u16, cdb: &[u8], len: u32, id: u64) -> (Vec<u8>, Vec<u8>) {
    let done = submit_command(d, tag, cdb, len, id);
    let get = |i: u64| done.iter().find(|c| c.id == i).cloned();
    let cmd = get(id + 2).expect("command completes");
    assert_eq!((cmd.status, cmd.length), (TransferStatus::Success, 32));
    let data = if len > 0 {
        let c = get(id + 1).expect("data completes");
        assert_eq!(c.status, TransferStatus::Success);
        c.data
    } else {
        Vec::new()
    };
    let status = get(id).expect("status completes");
    assert_eq!(status.status, TransferStatus::Success);
    (data, status.data)
}

#[test]
fn alt_setting_1_switches_interface_and_endpoints() {
    let mut d = UsbCdrom::new(DeviceConfig::default());
    assert!(d.offers_uas());
    assert_eq!(d.interfaces()[0].protocol, 0x50);
    assert!(d
        .control(SetupPacket::new(0x01, 0x0B, 1, 0, 0), &[])
        .is_ok());
    assert_eq!(d.interfaces()[0].protocol, 0x62);
    let eps: Vec<(u8, u32)> = d
        .endpoints()
        .iter()
        .map(|e| (e.address, e.max_streams))
        .collect();
    assert_eq!(eps, [(0x04, 0), (0x83, 32), (0x81, 32), (0x02, 32)]);
    let r = d.control(SetupPacket::new(0x81, 0x0A, 0, 0, 1), &[]);
    assert_eq!(r.data, [1]);
    assert!(d
        .control(SetupPacket::new(0x01, 0x0B, 0, 0, 0), &[])
        .is_ok());
    assert_eq!(d.interfaces()[0].protocol, 0x50);
    // Not offered at high speed, nor when configured off.
    for config in [
        DeviceConfig {
            speed: Speed::High,
            ..DeviceConfig::default()
        },
        DeviceConfig {
            uas: false,
            ..DeviceConfig::default()
        },
    ] {
        let mut d = UsbCdrom::new(config);
        assert!(!d.offers_uas());
        assert!(!d
            .control(SetupPacket::new(0x01, 0x0B, 1, 0, 0), &[])
            .is_ok());
    }
}

#[test]
fn inquiry_then_unit_attention_with_autosense() {
    let mut d = drive();
    let (data, status) = run_in(&mut d, 1, &[0x12, 0, 0, 0, 36, 0], 36, 10);
    assert_eq!(data.len(), 36);
    assert_eq!(data[0], 0x05, "CD/DVD peripheral");
    assert_eq!(status, uas::sense_iu(1, uas::STATUS_GOOD, &[]));
    // TEST UNIT READY after power-on: CHECK CONDITION with the unit attention in the IU.
    let (_, status) = run_in(&mut d, 2, &[0, 0, 0, 0, 0, 0], 0, 20);
    assert_eq!(status[6], uas::STATUS_CHECK_CONDITION);
    assert_eq!(&status[14..16], &[0, 18]);
    assert_eq!((status[16 + 2] & 0x0F, status[16 + 12]), (0x06, 0x29));
    let (_, status) = run_in(&mut d, 2, &[0, 0, 0, 0, 0, 0], 0, 30);
    assert_eq!(status[6], uas::STATUS_GOOD);
}

#[test]
fn queued_reads_complete_in_their_own_streams() {
    let mut d = drive();
    run_in(&mut d, 1, &[0, 0, 0, 0, 0, 0], 0, 1); // clears the unit attention
                                                  // Two READ(10)s queued before either command arrives, in different streams.
    for (tag, base) in [(3u16, 100u64), (4, 200)] {
        d.submit_bulk_in_stream(UAS_STATUS_ENDPOINT, u32::from(tag), base, 112);
        d.submit_bulk_in_stream(UAS_DATA_IN_ENDPOINT, u32::from(tag), base + 1, 1 << 20);
    }
    assert!(
        d.take_completions().is_empty(),
        "nothing before the commands"
    );
    d.submit_bulk_out(
        UAS_COMMAND_ENDPOINT,
        300,
        &command(4, &[0x28, 0, 0, 0, 0, 8, 0, 0, 2, 0]),
    );
    d.submit_bulk_out(
        UAS_COMMAND_ENDPOINT,
        301,
        &command(3, &[0x28, 0, 0, 0, 0, 0, 0, 0, 4, 0]),
    );
    let done = d.take_completions();
    let ids: Vec<u64> = done.iter().map(|c| c.id).collect();
    assert_eq!(ids, [300, 201, 200, 301, 101, 100]);
    let sector = |lba: u64| {
        let mut buf = vec![0u8; SECTOR_SIZE];
        MemoryMedium::patterned("disc", 64)
            .read_sectors(lba, 1, &mut buf)
            .unwrap();
        buf
    };
    assert_eq!(done[1].data.len(), 2 * SECTOR_SIZE);
    assert_eq!(&done[1].data[..SECTOR_SIZE], &sector(8)[..]);
    assert_eq!(done[4].data.len(), 4 * SECTOR_SIZE);
    assert_eq!(&done[4].data[3 * SECTOR_SIZE..], &sector(3)[..]);
    assert_eq!(done[2].data, uas::sense_iu(4, uas::STATUS_GOOD, &[]));
}

/// Completions by id.
fn by_id(done: &[usb_cdrom::Completion], id: u64) -> usb_cdrom::Completion {
    done.iter()
        .find(|c| c.id == id)
        .cloned()
        .unwrap_or_else(|| panic!("no completion {id} in {done:?}"))
}

#[test]
fn mode_select_takes_its_data_out_in_the_stream() {
    let mut d = drive();
    run_in(&mut d, 1, &[0, 0, 0, 0, 0, 0], 0, 1);
    // MODE SELECT(10) with an 8-byte header only (no pages).
    d.submit_bulk_in_stream(UAS_STATUS_ENDPOINT, 5, 10, 112);
    d.submit_bulk_out_stream(UAS_DATA_OUT_ENDPOINT, 5, 11, &[0u8; 8]);
    d.submit_bulk_out(
        UAS_COMMAND_ENDPOINT,
        12,
        &command(5, &[0x55, 0x10, 0, 0, 0, 0, 0, 0, 8, 0]),
    );
    let done = d.take_completions();
    assert_eq!(by_id(&done, 11).length, 8);
    assert_eq!(
        by_id(&done, 10).data,
        uas::sense_iu(5, uas::STATUS_GOOD, &[])
    );
}

#[test]
fn errors_come_as_sense_or_response_ius() {
    let mut d = drive();
    run_in(&mut d, 1, &[0, 0, 0, 0, 0, 0], 0, 1);
    // An unknown opcode: CHECK CONDITION, ILLEGAL REQUEST / INVALID COMMAND.
    let (_, status) = run_in(&mut d, 1, &[0xFF, 0, 0, 0, 0, 0], 0, 10);
    assert_eq!(status[6], uas::STATUS_CHECK_CONDITION);
    assert_eq!((status[16 + 2], status[16 + 12]), (0x05, 0x20));
    // A READ past the end of the disc: CHECK CONDITION; the host's data request stays
    // for the host to cancel.
    let done = submit_command(&mut d, 2, &[0x28, 0, 0, 0, 1, 0, 0, 0, 2, 0], 4096, 20);
    assert_eq!(by_id(&done, 20).data[16 + 12], 0x21, "LBA out of range");
    assert!(done.iter().all(|c| c.id != 21));
    assert!(d.cancel(21));
    assert_eq!(d.take_completions()[0].status, TransferStatus::Cancelled);
    // Another LUN.
    d.submit_bulk_in_stream(UAS_STATUS_ENDPOINT, 3, 30, 112);
    let mut iu = command(3, &[0, 0, 0, 0, 0, 0]);
    iu[15] = 1;
    d.submit_bulk_out(UAS_COMMAND_ENDPOINT, 31, &iu);
    let done = d.take_completions();
    assert_eq!(
        by_id(&done, 30).data,
        uas::response_iu(3, uas::response_code::INCORRECT_LUN)
    );
    // Garbage with a tag: INVALID INFORMATION UNIT in that stream.
    d.submit_bulk_in_stream(UAS_STATUS_ENDPOINT, 4, 40, 112);
    d.submit_bulk_out(UAS_COMMAND_ENDPOINT, 41, &[0x77, 0, 0, 4, 1, 2, 3]);
    let done = d.take_completions();
    assert_eq!(by_id(&done, 41).status, TransferStatus::Success);
    assert_eq!(
        by_id(&done, 40).data,
        uas::response_iu(4, uas::response_code::INVALID_INFO_UNIT)
    );
    // A status request too small for a Sense IU with sense data: babble, not a cut IU.
    d.submit_bulk_in_stream(UAS_STATUS_ENDPOINT, 6, 60, 16);
    d.submit_bulk_out(
        UAS_COMMAND_ENDPOINT,
        61,
        &command(6, &[0xFF, 0, 0, 0, 0, 0]),
    );
    assert_eq!(
        by_id(&d.take_completions(), 60).status,
        TransferStatus::Babble
    );
}

#[test]
fn overlapped_tag_ends_both_commands() {
    let mut d = drive();
    run_in(&mut d, 1, &[0, 0, 0, 0, 0, 0], 0, 1);
    d.submit_bulk_in_stream(UAS_DATA_IN_ENDPOINT, 7, 70, 2048);
    d.submit_bulk_out(
        UAS_COMMAND_ENDPOINT,
        71,
        &command(7, &[0x28, 0, 0, 0, 0, 0, 0, 0, 4, 0]),
    );
    // The first 2048 bytes went out; the task still has data to send.
    assert_eq!(by_id(&d.take_completions(), 70).data.len(), 2048);
    d.submit_bulk_in_stream(UAS_STATUS_ENDPOINT, 7, 72, 112);
    d.submit_bulk_out(UAS_COMMAND_ENDPOINT, 73, &command(7, &[0, 0, 0, 0, 0, 0]));
    let done = d.take_completions();
    assert_eq!(
        by_id(&done, 72).data,
        uas::response_iu(7, uas::response_code::OVERLAPPED_TAG)
    );
    // The tag is free again.
    let (_, status) = run_in(&mut d, 7, &[0, 0, 0, 0, 0, 0], 0, 80);
    assert_eq!(status[6], uas::STATUS_GOOD);
}

#[test]
fn task_management_functions() {
    let mut d = drive();
    run_in(&mut d, 1, &[0, 0, 0, 0, 0, 0], 0, 1);
    let tmf = |d: &mut UsbCdrom, tag: u16, function: u8, task_tag: u16, id: u64| {
        d.submit_bulk_in_stream(UAS_STATUS_ENDPOINT, u32::from(tag), id, 112);
        let iu = TaskManagementIu {
            tag,
            function,
            task_tag,
            lun: 0,
        };
        d.submit_bulk_out(UAS_COMMAND_ENDPOINT, id + 1, &iu.to_bytes());
        let done = d.take_completions();
        let r = by_id(&done, id).data;
        assert_eq!(&r[..4], &[0x04, 0, 0, tag as u8]);
        r[7]
    };
    // A READ left waiting for its data request.
    d.submit_bulk_out(
        UAS_COMMAND_ENDPOINT,
        100,
        &command(2, &[0x28, 0, 0, 0, 0, 0, 0, 0, 1, 0]),
    );
    d.take_completions();
    use uas::{response_code as rc, tmf as f};
    assert_eq!(tmf(&mut d, 9, f::QUERY_TASK, 2, 110), rc::TMF_SUCCEEDED);
    assert_eq!(tmf(&mut d, 9, f::QUERY_TASK_SET, 0, 120), rc::TMF_SUCCEEDED);
    assert_eq!(tmf(&mut d, 9, f::ABORT_TASK, 2, 130), rc::TMF_COMPLETE);
    assert_eq!(tmf(&mut d, 9, f::QUERY_TASK, 2, 140), rc::TMF_COMPLETE);
    assert_eq!(
        tmf(&mut d, 9, 0x40, 0, 150),
        rc::TMF_NOT_SUPPORTED,
        "CLEAR ACA"
    );
    // LOGICAL UNIT RESET: the next command sees POWER ON/RESET.
    assert_eq!(
        tmf(&mut d, 9, f::LOGICAL_UNIT_RESET, 0, 160),
        rc::TMF_COMPLETE
    );
    let (_, status) = run_in(&mut d, 1, &[0, 0, 0, 0, 0, 0], 0, 170);
    assert_eq!(
        (status[6], status[16 + 12]),
        (uas::STATUS_CHECK_CONDITION, 0x29)
    );
}

#[test]
fn streams_are_checked_and_bounded() {
    let mut d = drive();
    // Stream 0 or past the 32 streams, the status pipe without a stream, the command
    // pipe with one: invalid.
    d.submit_bulk_in_stream(UAS_STATUS_ENDPOINT, 0, 1, 112);
    d.submit_bulk_in_stream(UAS_DATA_IN_ENDPOINT, 33, 2, 512);
    d.submit_bulk_out_stream(UAS_COMMAND_ENDPOINT, 1, 3, &command(1, &[0; 6]));
    d.submit_bulk_out_stream(UAS_DATA_OUT_ENDPOINT, 0, 4, &[0; 8]);
    d.submit_bulk_in(0x85, 5, 64);
    let done = d.take_completions();
    assert_eq!(done.len(), 5);
    assert!(done.iter().all(|c| c.status == TransferStatus::Invalid));
    // At most a few requests wait per stream and pipe.
    for id in 10..10 + uas::MAX_WAITING_PER_STREAM as u64 {
        d.submit_bulk_in_stream(UAS_STATUS_ENDPOINT, 32, id, 112);
    }
    assert!(d.take_completions().is_empty());
    d.submit_bulk_in_stream(UAS_STATUS_ENDPOINT, 32, 99, 112);
    assert_eq!(d.take_completions()[0].status, TransferStatus::Invalid);
    assert_eq!(d.pending_requests(), uas::MAX_WAITING_PER_STREAM);
    // And in bytes: a data-in request past the limit is refused.
    let limit = usb_cdrom::device::MAX_QUEUED_IN_BYTES as u32;
    d.submit_bulk_in_stream(UAS_DATA_IN_ENDPOINT, 7, 300, limit);
    assert!(d.take_completions().is_empty());
    d.submit_bulk_in_stream(UAS_DATA_IN_ENDPOINT, 7, 301, 1);
    assert_eq!(d.take_completions()[0].status, TransferStatus::Invalid);
    assert!(d.cancel(300));
    d.take_completions();
    // Back to Bulk-Only: everything waiting is cancelled, and streams are refused.
    assert!(d
        .control(SetupPacket::new(0x01, 0x0B, 0, 0, 0), &[])
        .is_ok());
    let done = d.take_completions();
    assert_eq!(done.len(), uas::MAX_WAITING_PER_STREAM);
    assert!(done.iter().all(|c| c.status == TransferStatus::Cancelled));
    d.submit_bulk_in_stream(0x81, 1, 200, 512);
    assert_eq!(d.take_completions()[0].status, TransferStatus::Invalid);
}

#[test]
fn port_reset_returns_to_bulk_only() {
    let mut d = drive();
    d.submit_bulk_in_stream(UAS_STATUS_ENDPOINT, 1, 1, 112);
    d.reset();
    assert_eq!(d.alt_setting(), 0);
    assert_eq!(d.interfaces()[0].protocol, 0x50);
    assert_eq!(d.take_completions()[0].status, TransferStatus::Cancelled);
}

#[test]
fn disc_change_during_a_read_fails_it_with_sense() {
    let mut d = drive();
    run_in(&mut d, 1, &[0, 0, 0, 0, 0, 0], 0, 1);
    let done = submit_command(&mut d, 1, &[0x28, 0, 0, 0, 0, 0, 0, 0, 2, 0], 2048, 10);
    assert_eq!(by_id(&done, 11).data.len(), 2048);
    assert!(
        done.iter().all(|c| c.id != 10),
        "the second sector is still to come"
    );
    d.remove_medium();
    d.submit_bulk_in_stream(UAS_DATA_IN_ENDPOINT, 1, 13, 2048);
    let done = d.take_completions();
    assert_eq!(by_id(&done, 13).data.len(), 0);
    let status = by_id(&done, 10).data;
    assert_eq!(
        (status[6], status[16 + 2], status[16 + 12]),
        (2, 0x02, 0x3A)
    );
}

#[test]
fn uas_descriptors() {
    let d = usb_cdrom::Descriptors::new(&DeviceConfig::default());
    let c = d.configuration();
    assert_eq!(
        c.len(),
        usize::from(usb_cdrom::descriptors::CONFIGURATION_TOTAL_LENGTH_SUPER_SPEED_UAS)
    );
    assert_eq!(u16::from_le_bytes([c[2], c[3]]) as usize, c.len());
    // Alternate setting 1 after the Bulk-Only interface and its two endpoints.
    let alt = &c[9 + 9 + 2 * 13..];
    assert_eq!(&alt[..9], &[9, 4, 0, 1, 4, 0x08, 0x06, 0x62, 0]);
    let mut pipes = Vec::new();
    for ep in alt[9..].chunks(17) {
        assert_eq!(&ep[..2], &[7, 5]);
        assert_eq!(&ep[7..9], &[6, 0x30], "companion follows the endpoint");
        assert_eq!(&ep[13..15], &[4, 0x24], "pipe usage follows the companion");
        pipes.push((ep[2], ep[10] & 0x1F, ep[15]));
    }
    assert_eq!(
        pipes,
        [(0x04, 0, 1), (0x83, 5, 2), (0x81, 5, 3), (0x02, 5, 4)]
    );
    // Without UAS, or at high speed: Bulk-Only only.
    let bot = usb_cdrom::Descriptors::new(&DeviceConfig {
        uas: false,
        ..DeviceConfig::default()
    });
    assert_eq!(bot.configuration().len(), 9 + 9 + 2 * 13);
}

mod random {
    //! Random UAS traffic: commands and task management in any stream, requests on
    //! every pipe (valid streams or not), garbage IUs, cancels, disc changes, port
    //! resets and alternate-setting switches. Nothing may panic, every request
    //! completes at most once and within its size, and a switch back to Bulk-Only
    //! leaves nothing waiting.
    use std::collections::HashMap;

    use proptest::prelude::*;

    use super::*;

    #[derive(Debug, Clone)]
    enum Op {
        Command {
            tag: u16,
            lun: u64,
            cdb: Vec<u8>,
        },
        Tmf {
            tag: u16,
            function: u8,
            task_tag: u16,
        },
        Garbage(Vec<u8>),
        Status {
            stream: u32,
            len: u32,
        },
        DataIn {
            stream: u32,
            len: u32,
        },
        DataOut {
            stream: u32,
            len: u16,
        },
        Cancel(usize),
        Remove,
        Insert,
        Reset,
        Alt(u8),
    }

    const OPCODES: &[u8] = &[
        0x00, 0x03, 0x12, 0x1A, 0x1B, 0x1E, 0x25, 0x28, 0x2B, 0x43, 0x46, 0x4A, 0x51, 0x55, 0x5A,
        0xA8, 0xAD, 0xBE, 0xFF,
    ];

    fn op() -> impl Strategy<Value = Op> {
        let stream = prop_oneof![8 => 1u32..=4, 1 => 0u32..=40];
        let tag = prop_oneof![8 => 1u16..=4, 1 => any::<u16>()];
        prop_oneof![
            6 => (
                tag.clone(),
                prop_oneof![9 => Just(0u64), 1 => any::<u64>()],
                prop::sample::select(OPCODES),
                prop::collection::vec(any::<u8>(), 15)
            )
                .prop_map(|(tag, lun, op, rest)| Op::Command {
                    tag,
                    lun,
                    cdb: [vec![op], rest].concat()
                }),
            1 => (tag.clone(), any::<u8>(), 0u16..=5)
                .prop_map(|(tag, function, task_tag)| Op::Tmf { tag, function, task_tag }),
            1 => prop::collection::vec(any::<u8>(), 0..40).prop_map(Op::Garbage),
            4 => (stream.clone(), prop_oneof![Just(112u32), 0u32..200])
                .prop_map(|(stream, len)| Op::Status { stream, len }),
            4 => (stream.clone(), prop_oneof![Just(1u32 << 20), 0u32..70_000])
                .prop_map(|(stream, len)| Op::DataIn { stream, len }),
            1 => (stream, 0u16..300).prop_map(|(stream, len)| Op::DataOut { stream, len }),
            1 => any::<usize>().prop_map(Op::Cancel),
            1 => Just(Op::Remove),
            1 => Just(Op::Insert),
            1 => Just(Op::Reset),
            1 => (0u8..3).prop_map(Op::Alt),
        ]
    }

    proptest! {
        #[test]
        fn random_uas_traffic(ops in prop::collection::vec(op(), 1..120)) {
            let mut d = drive();
            // id -> max length (IN) or None (OUT)
            let mut open: HashMap<u64, Option<u32>> = HashMap::new();
            for (id, op) in (1u64..).zip(ops) {
                match op {
                    Op::Command { tag, lun, cdb } => {
                        let mut iu = command(tag, &cdb[..16]);
                        iu[8..16].copy_from_slice(&lun.to_be_bytes());
                        open.insert(id, None);
                        d.submit_bulk_out(UAS_COMMAND_ENDPOINT, id, &iu);
                    }
                    Op::Tmf { tag, function, task_tag } => {
                        let iu = TaskManagementIu { tag, function, task_tag, lun: 0 };
                        open.insert(id, None);
                        d.submit_bulk_out(UAS_COMMAND_ENDPOINT, id, &iu.to_bytes());
                    }
                    Op::Garbage(bytes) => {
                        open.insert(id, None);
                        d.submit_bulk_out(UAS_COMMAND_ENDPOINT, id, &bytes);
                    }
                    Op::Status { stream, len } => {
                        open.insert(id, Some(len));
                        d.submit_bulk_in_stream(UAS_STATUS_ENDPOINT, stream, id, len);
                    }
                    Op::DataIn { stream, len } => {
                        open.insert(id, Some(len));
                        d.submit_bulk_in_stream(UAS_DATA_IN_ENDPOINT, stream, id, len);
                    }
                    Op::DataOut { stream, len } => {
                        open.insert(id, None);
                        d.submit_bulk_out_stream(
                            UAS_DATA_OUT_ENDPOINT,
                            stream,
                            id,
                            &vec![0u8; usize::from(len)],
                        );
                    }
                    Op::Cancel(i) => {
                        if !open.is_empty() {
                            let mut ids: Vec<u64> = open.keys().copied().collect();
                            ids.sort_unstable();
                            d.cancel(ids[i % ids.len()]);
                        }
                    }
                    Op::Remove => {
                        d.remove_medium();
                    }
                    Op::Insert => {
                        d.insert_medium(Box::new(MemoryMedium::patterned("other", 32)));
                    }
                    Op::Reset => d.reset(),
                    Op::Alt(alt) => {
                        d.control(SetupPacket::new(0x01, 0x0B, u16::from(alt), 0, 0), &[]);
                    }
                }
                for c in d.take_completions() {
                    let max = open.remove(&c.id);
                    prop_assert!(max.is_some(), "completion {} twice or unknown", c.id);
                    if let Some(Some(max)) = max {
                        prop_assert!(c.data.len() <= max as usize, "{} > {max}", c.data.len());
                    }
                }
                prop_assert_eq!(d.pending_requests(), open.len());
            }
            // Back to Bulk-Only: nothing stays waiting.
            d.control(SetupPacket::new(0x01, 0x0B, 0, 0, 0), &[]);
            for c in d.take_completions() {
                prop_assert!(open.remove(&c.id).is_some());
            }
            prop_assert!(open.is_empty(), "left waiting: {open:?}");
            prop_assert_eq!(d.pending_requests(), 0);
        }
    }
}
