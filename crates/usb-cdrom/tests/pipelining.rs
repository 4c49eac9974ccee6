//! Several outstanding bulk IN requests, as QEMU's usb-redir queues (and combines) them.

mod common;

use common::{cbw, pattern, read10, Host, SyntheticMedium};
use usb_cdrom::{
    Completion, Csw, CswStatus, DeviceConfig, MemoryMedium, Sense, Speed, TransferStatus, UsbCdrom,
    BULK_IN_ENDPOINT, BULK_OUT_ENDPOINT,
};

fn submit_ins(h: &mut Host, sizes: &[u32]) -> Vec<u64> {
    sizes
        .iter()
        .map(|&s| {
            let id = h.id();
            h.dev.submit_bulk_in(BULK_IN_ENDPOINT, id, s);
            id
        })
        .collect()
}

fn submit_cbw(h: &mut Host, tag: u32, cdb: &[u8], len: u32) -> u64 {
    let id = h.id();
    h.dev
        .submit_bulk_out(BULK_OUT_ENDPOINT, id, &cbw(tag, len, true, cdb));
    id
}

/// Submits one IN request of `len` bytes, which must complete at once with a stall.
fn stalled_in(h: &mut Host, len: u32) -> Completion {
    let id = submit_ins(h, &[len])[0];
    let done = h.dev.take_completions();
    let c = ins(&done)[0].clone();
    assert_eq!((c.id, c.status), (id, TransferStatus::Stall));
    c
}

fn ins(c: &[Completion]) -> Vec<&Completion> {
    c.iter()
        .filter(|c| c.endpoint == BULK_IN_ENDPOINT)
        .collect()
}

#[test]
fn requests_of_various_sizes_complete_in_order() {
    let mut h = Host::with_disc(200);
    // The host queues the data requests, then the CSW request, before the CBW.
    let ids = submit_ins(&mut h, &[16384, 512, 33280, 80896, 13]);
    assert!(h.dev.take_completions().is_empty());
    let out = submit_cbw(&mut h, 5, &read10(10, 64), 64 * 2048);
    let c = h.dev.take_completions();
    assert_eq!(c[0].id, out);
    let c = ins(&c);
    assert_eq!(c.len(), 5);
    let all = pattern(10, 64);
    let mut off = 0;
    for (k, size) in [16384usize, 512, 33280, 80896].iter().enumerate() {
        assert_eq!(c[k].id, ids[k]);
        assert_eq!(c[k].status, TransferStatus::Success);
        assert_eq!(c[k].data.len(), *size, "request {k} filled to its length");
        assert_eq!(c[k].length as usize, *size);
        assert_eq!(c[k].data[..], all[off..off + size]);
        off += size;
    }
    assert_eq!(off, 64 * 2048);
    let csw = Csw::parse(&c[4].data).unwrap();
    assert_eq!(
        (csw.tag, csw.residue, csw.status),
        (5, 0, CswStatus::Passed)
    );
    assert_eq!(h.dev.pending_requests(), 0);
}

#[test]
fn one_combined_mebibyte_request_carries_data_and_csw() {
    let mut h = Host::with_disc(200);
    let out = submit_cbw(&mut h, 9, &read10(0, 32), 65536);
    let ids = submit_ins(&mut h, &[1 << 20]);
    let c = h.dev.take_completions();
    assert_eq!(c.len(), 2);
    assert_eq!(c[0].id, out);
    assert_eq!(c[1].id, ids[0]);
    assert_eq!(c[1].status, TransferStatus::Success);
    assert_eq!(c[1].data.len(), 65536 + 13);
    assert_eq!(c[1].data[..65536], pattern(0, 32)[..]);
    let csw = Csw::parse(&c[1].data[65536..]).unwrap();
    assert_eq!(
        (csw.tag, csw.residue, csw.status),
        (9, 0, CswStatus::Passed)
    );
}

#[test]
fn a_full_mebibyte_of_data_then_the_csw_in_the_next_request() {
    let mut h = Host::new(UsbCdrom::with_medium(
        DeviceConfig::default(),
        Box::new(SyntheticMedium {
            sectors: 100_000,
            bad_from: None,
        }),
    ));
    h.clear_unit_attentions();
    // 1 MiB + 2048 bytes: a full combined request, then one that gets 2048 + CSW.
    let blocks: u16 = 513;
    let len = u32::from(blocks) * 2048;
    submit_cbw(&mut h, 3, &read10(5000, blocks), len);
    let ids = submit_ins(&mut h, &[1 << 20, 1 << 20]);
    let c = h.dev.take_completions();
    let c = ins(&c);
    assert_eq!(c.len(), 2);
    assert_eq!(c[0].id, ids[0]);
    assert_eq!(c[0].data.len(), 1 << 20);
    assert_eq!(c[1].data.len(), 2048 + 13);
    let all = pattern(5000, u64::from(blocks));
    assert_eq!(c[0].data[..], all[..1 << 20]);
    assert_eq!(c[1].data[..2048], all[1 << 20..]);
    assert_eq!(
        Csw::parse(&c[1].data[2048..]).unwrap().status,
        CswStatus::Passed
    );
}

#[test]
fn short_data_ends_the_request_and_the_csw_goes_to_the_next() {
    let mut h = Host::with_disc(10);
    submit_cbw(&mut h, 4, &[0x12, 0, 0, 0, 96, 0], 96);
    let ids = submit_ins(&mut h, &[512, 512, 512]);
    let c = h.dev.take_completions();
    let c = ins(&c);
    assert_eq!(c.len(), 2, "the third request waits for the next command");
    assert_eq!((c[0].id, c[0].data.len()), (ids[0], 36));
    assert_eq!(c[1].id, ids[1]);
    let csw = Csw::parse(&c[1].data).unwrap();
    assert_eq!((csw.tag, csw.residue), (4, 60));
    assert_eq!(h.dev.pending_requests(), 1);
    // The waiting request takes the next command's data.
    submit_cbw(&mut h, 5, &[0x12, 0, 0, 0, 36, 0], 36);
    let c = h.dev.take_completions();
    let c = ins(&c);
    assert_eq!((c[0].id, c[0].data.len()), (ids[2], 36));
}

#[test]
fn data_ending_on_a_packet_boundary_short_of_the_host_length_stalls_next_token() {
    let mut h = Host::with_disc(10);
    submit_cbw(&mut h, 6, &read10(1, 1), 4096);
    let ids = submit_ins(&mut h, &[1024, 1024, 1024, 1024]);
    let c = h.dev.take_completions();
    let c = ins(&c);
    assert_eq!(c.len(), 3, "the fourth request waits behind the stall");
    let data = pattern(1, 1);
    assert_eq!(
        (c[0].status, &c[0].data[..]),
        (TransferStatus::Success, &data[..1024])
    );
    assert_eq!(
        (c[1].status, &c[1].data[..]),
        (TransferStatus::Success, &data[1024..])
    );
    assert_eq!((c[2].id, c[2].status), (ids[2], TransferStatus::Stall));
    assert!(c[2].data.is_empty());
    // The host (QEMU) cancels what it had queued, clears the halt and reads the CSW.
    assert!(h.dev.cancel(ids[3]));
    assert_eq!(
        h.dev.take_completions()[0].status,
        TransferStatus::Cancelled
    );
    h.clear_halt(BULK_IN_ENDPOINT);
    let csw = h.read_csw(6);
    assert_eq!((csw.residue, csw.status), (2048, CswStatus::Passed));
}

#[test]
fn stall_inside_a_request_carries_the_data_before_it() {
    let mut h = Host::with_disc(10);
    submit_cbw(&mut h, 7, &read10(1, 2), 8192);
    let ids = submit_ins(&mut h, &[8192, 13]);
    let c = h.dev.take_completions();
    let c = ins(&c);
    assert_eq!(c.len(), 1);
    assert_eq!((c[0].id, c[0].status), (ids[0], TransferStatus::Stall));
    assert_eq!(c[0].data, pattern(1, 2));
    // After the halt is cleared the queued 13-byte request gets the CSW.
    h.clear_halt(BULK_IN_ENDPOINT);
    let c = h.dev.take_completions();
    assert_eq!(c.len(), 1);
    assert_eq!(c[0].id, ids[1]);
    let csw = Csw::parse(&c[0].data).unwrap();
    assert_eq!((csw.tag, csw.residue), (7, 4096));
}

#[test]
fn many_commands_back_to_back_with_streaming_requests() {
    let mut h = Host::with_disc(500);
    for (i, (lba, blocks)) in [(0u32, 1u16), (16, 60), (300, 7), (499, 1), (100, 120)]
        .into_iter()
        .enumerate()
    {
        let tag = 100 + i as u32;
        let len = u32::from(blocks) * 2048;
        submit_cbw(&mut h, tag, &read10(lba, blocks), len);
        // Odd but packet-aligned request sizes, plus the CSW request.
        let mut left = len;
        let mut got = Vec::new();
        while left > 0 {
            let size = (left).min(512 * 7);
            submit_ins(&mut h, &[size]);
            left -= size;
        }
        submit_ins(&mut h, &[13]);
        let c = h.dev.take_completions();
        let c = ins(&c);
        for cc in &c[..c.len() - 1] {
            assert_eq!(cc.status, TransferStatus::Success);
            got.extend_from_slice(&cc.data);
        }
        assert_eq!(got, pattern(u64::from(lba), u64::from(blocks)));
        let csw = Csw::parse(&c[c.len() - 1].data).unwrap();
        assert_eq!(
            (csw.tag, csw.status, csw.residue),
            (tag, CswStatus::Passed, 0)
        );
    }
}

#[test]
fn medium_error_midway_delivers_good_sectors_then_fails() {
    let mut h = Host::new(UsbCdrom::with_medium(
        DeviceConfig::default(),
        Box::new(SyntheticMedium {
            sectors: 1000,
            bad_from: Some(104),
        }),
    ));
    h.clear_unit_attentions();
    submit_cbw(&mut h, 8, &read10(100, 8), 8 * 2048);
    let ids = submit_ins(&mut h, &[1 << 20]);
    let c = h.dev.take_completions();
    let c = ins(&c);
    assert_eq!(c.len(), 1);
    assert_eq!((c[0].id, c[0].status), (ids[0], TransferStatus::Stall));
    assert_eq!(c[0].data, pattern(100, 4));
    assert_eq!(
        h.csw_after_stall(BULK_IN_ENDPOINT, 8),
        (CswStatus::Failed, 4 * 2048)
    );
    assert_eq!(h.sense(), Sense::UNRECOVERED_READ_ERROR);
    // Sectors before the bad area still read fine.
    let (d, csw) = h.command_in(&read10(96, 8), 8 * 2048);
    assert_eq!(csw.status, CswStatus::Passed);
    assert_eq!(d, pattern(96, 8));
}

#[test]
fn disc_pulled_during_a_read() {
    let mut h = Host::with_disc(100);
    submit_cbw(&mut h, 11, &read10(0, 40), 40 * 2048);
    let ids = submit_ins(&mut h, &[16384]);
    let c = h.dev.take_completions();
    assert_eq!(ins(&c)[0].data, pattern(0, 8));
    assert!(h.dev.remove_medium().is_some());
    let _ = ids;
    assert!(stalled_in(&mut h, 16384).data.is_empty());
    let failed = (CswStatus::Failed, 32 * 2048);
    assert_eq!(h.csw_after_stall(BULK_IN_ENDPOINT, 11), failed);
    assert_eq!(h.sense(), Sense::MEDIUM_NOT_PRESENT);
}

#[test]
fn cancel_of_a_queued_request_keeps_the_stream_consistent() {
    let mut h = Host::with_disc(100);
    let ids = submit_ins(&mut h, &[4096, 4096, 4096]);
    assert!(h.dev.cancel(ids[1]));
    let c = h.dev.take_completions();
    assert_eq!((c[0].id, c[0].status), (ids[1], TransferStatus::Cancelled));
    submit_cbw(&mut h, 12, &read10(0, 4), 8192);
    let c = h.dev.take_completions();
    let c = ins(&c);
    assert_eq!(c.len(), 2);
    assert_eq!((c[0].id, &c[0].data), (ids[0], &pattern(0, 2)));
    assert_eq!((c[1].id, &c[1].data), (ids[2], &pattern(2, 2)));
    // The data filled the request exactly: the CSW waits for the next one.
    assert_eq!(h.read_csw(12).status, CswStatus::Passed);
}

#[test]
fn disc_swapped_during_a_read_fails_the_rest() {
    let mut h = Host::with_disc(100);
    submit_cbw(&mut h, 13, &read10(0, 40), 40 * 2048);
    let c = h.dev.take_completions();
    assert_eq!(c.len(), 1);
    submit_ins(&mut h, &[8192]);
    assert_eq!(ins(&h.dev.take_completions())[0].data, pattern(0, 4));
    h.dev
        .insert_medium(Box::new(usb_cdrom::MemoryMedium::patterned("new", 100)));
    stalled_in(&mut h, 8192);
    let failed = (CswStatus::Failed, 36 * 2048);
    assert_eq!(h.csw_after_stall(BULK_IN_ENDPOINT, 13), failed);
    assert_eq!(h.sense(), Sense::MEDIUM_MAY_HAVE_CHANGED);
}

/// Whether a data phase ends on a packet boundary depends on the speed's bulk max
/// packet size: 1536 bytes are three full packets at high speed (512) but end in a
/// short packet at SuperSpeed (1024).
#[test]
fn the_packet_boundary_follows_the_speed() {
    for (speed, csw_in_same_request) in [(Speed::High, true), (Speed::Super, false)] {
        let mut h = Host::new(UsbCdrom::with_medium(
            DeviceConfig {
                speed,
                ..DeviceConfig::default()
            },
            Box::new(MemoryMedium::patterned("disc", 10)),
        ));
        h.clear_unit_attentions();
        // BOT case 7 (the host expects 1536 of the 2048 bytes): the device sends 1536.
        submit_cbw(&mut h, 8, &read10(2, 1), 1536);
        let ids = submit_ins(&mut h, &[1 << 20, 1 << 20]);
        let c = h.dev.take_completions();
        let c = ins(&c);
        assert_eq!(c[0].id, ids[0]);
        assert_eq!(c[0].data[..1536], pattern(2, 1)[..1536], "{speed:?}");
        let csw = if csw_in_same_request {
            assert_eq!(c.len(), 1, "{speed:?}");
            assert_eq!(c[0].data.len(), 1536 + 13, "{speed:?}");
            Csw::parse(&c[0].data[1536..]).unwrap()
        } else {
            assert_eq!(c.len(), 2, "{speed:?}");
            assert_eq!(c[0].data.len(), 1536, "{speed:?}: a short packet");
            assert_eq!(c[1].id, ids[1]);
            Csw::parse(&c[1].data).unwrap()
        };
        assert_eq!((csw.tag, csw.status), (8, CswStatus::PhaseError));
    }
}

#[test]
fn queued_in_requests_are_bounded_in_bytes() {
    let mut h = Host::with_disc(200);
    let limit = usb_cdrom::device::MAX_QUEUED_IN_BYTES as u32;
    // Up to the limit the requests wait; one byte more is refused at once.
    let ids = submit_ins(&mut h, &[limit / 2, limit / 2]);
    assert!(h.dev.take_completions().is_empty());
    let refused = submit_ins(&mut h, &[1]);
    let c = h.dev.take_completions();
    assert_eq!((c.len(), c[0].id), (1, refused[0]));
    assert_eq!(c[0].status, TransferStatus::Invalid);
    assert_eq!(h.dev.pending_requests(), 2);
    // The waiting ones still serve a command.
    submit_cbw(&mut h, 9, &read10(0, 4), 4 * 2048);
    let c = h.dev.take_completions();
    let c = ins(&c);
    assert_eq!(c[0].id, ids[0]);
    assert_eq!(c[0].data.len(), 4 * 2048 + 13, "data and CSW, short");
}
