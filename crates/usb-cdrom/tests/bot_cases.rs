//! The thirteen host/device expectation cases of the Bulk-Only Transport (BOT 1.0,
//! section 6.7), invalid CBWs and reset recovery.

mod common;

use common::{cbw, pattern, read10, Host};
use usb_cdrom::{
    Csw, CswStatus, DeviceConfig, MemoryMedium, OverrunPolicy, Sense, TransferStatus, UsbCdrom,
    BULK_IN_ENDPOINT, BULK_OUT_ENDPOINT,
};
use CswStatus::{Passed, PhaseError};

const INQUIRY36: [u8; 6] = [0x12, 0, 0, 0, 36, 0];
const TUR: [u8; 6] = [0; 6];
/// MODE SELECT(10) with a 16-byte parameter list (PF set).
const MODE_SELECT16: [u8; 10] = [0x55, 0x10, 0, 0, 0, 0, 0, 0, 16, 0];

fn mode_select_params() -> Vec<u8> {
    let mut p = vec![0u8; 16];
    p[7] = 8;
    p[8 + 6] = 0x08; // block length 2048
    p
}

#[test]
fn case1_hn_dn() {
    let mut h = Host::with_disc(10);
    let csw = h.command(&TUR);
    assert_eq!((csw.status, csw.residue), (CswStatus::Passed, 0));
    // A failing Dn command: CSW status 1, then the sense.
    let csw = h.command(&[0xFF, 0, 0, 0, 0, 0]);
    assert_eq!((csw.status, csw.residue), (CswStatus::Failed, 0));
    assert_eq!(h.sense(), Sense::INVALID_COMMAND);
}

#[test]
fn case2_hn_di_is_phase_error() {
    let mut h = Host::with_disc(10);
    let csw = h.command(&INQUIRY36);
    assert_eq!(csw.status, CswStatus::PhaseError);
    h.reset_recovery();
    assert_eq!(h.command(&TUR).status, CswStatus::Passed);
}

#[test]
fn case3_hn_do_is_phase_error() {
    let mut h = Host::with_disc(10);
    let csw = h.command(&MODE_SELECT16);
    assert_eq!(csw.status, CswStatus::PhaseError);
}

#[test]
fn case4_hi_dn_stalls_in_then_csw() {
    let mut h = Host::with_disc(10);
    let tag = h.send_cbw(&TUR, 512, true);
    let c = h.in_(512);
    assert_eq!(c.status, TransferStatus::Stall);
    assert!(c.data.is_empty());
    assert!(h.dev.is_halted(BULK_IN_ENDPOINT));
    assert_eq!(h.csw_after_stall(BULK_IN_ENDPOINT, tag), (Passed, 512));
    // A failing command with data expected: same, with status 1.
    let (d, csw) = h.command_in(&read10(10, 1), 2048);
    assert!(d.is_empty());
    assert_eq!((csw.status, csw.residue), (CswStatus::Failed, 2048));
    assert_eq!(h.sense(), Sense::LBA_OUT_OF_RANGE);
}

#[test]
fn case5_hi_gt_di_short_packet() {
    let mut h = Host::with_disc(10);
    let tag = h.send_cbw(&[0x12, 0, 0, 0, 96, 0], 96, true);
    let c = h.in_(96);
    assert_eq!(c.status, TransferStatus::Success);
    assert_eq!(c.data.len(), 36, "short packet ends the data phase");
    let csw = h.read_csw(tag);
    assert_eq!((csw.status, csw.residue), (CswStatus::Passed, 60));
}

#[test]
fn case5_hi_gt_di_on_packet_boundary_stalls() {
    let mut h = Host::with_disc(10);
    // READ(10) of one block with 4096 bytes expected: 2048 bytes, then a stall.
    let tag = h.send_cbw(&read10(3, 1), 4096, true);
    let c = h.in_(4096);
    assert_eq!(c.status, TransferStatus::Stall);
    assert_eq!(c.data, pattern(3, 1), "data before the stall is delivered");
    assert_eq!(h.csw_after_stall(BULK_IN_ENDPOINT, tag), (Passed, 2048));
}

#[test]
fn case6_hi_eq_di() {
    let mut h = Host::with_disc(10);
    let (d, csw) = h.command_in(&INQUIRY36, 36);
    assert_eq!(d.len(), 36);
    assert_eq!((csw.status, csw.residue), (CswStatus::Passed, 0));
    let (d, csw) = h.command_in(&read10(0, 10), 20480);
    assert_eq!(d, pattern(0, 10));
    assert_eq!((csw.status, csw.residue), (CswStatus::Passed, 0));
}

#[test]
fn case7_hi_lt_di_phase_error_by_default() {
    let mut h = Host::with_disc(10);
    let (d, csw) = h.command_in(&read10(2, 2), 2048);
    assert_eq!(d, pattern(2, 1), "only what the host asked for");
    assert_eq!((csw.status, csw.residue), (CswStatus::PhaseError, 0));
    h.reset_recovery();
    let (d, csw) = h.command_in(&INQUIRY36, 20);
    assert_eq!(d.len(), 20);
    assert_eq!(csw.status, CswStatus::PhaseError);
}

#[test]
fn case7_hi_lt_di_truncates_with_lenient_policy() {
    let cfg = DeviceConfig {
        overrun_policy: OverrunPolicy::Truncate,
        ..DeviceConfig::default()
    };
    let mut h = Host::new(UsbCdrom::with_medium(
        cfg,
        Box::new(MemoryMedium::patterned("d", 10)),
    ));
    h.clear_unit_attentions();
    let (d, csw) = h.command_in(&read10(2, 2), 2048);
    assert_eq!(d, pattern(2, 1));
    assert_eq!((csw.status, csw.residue), (CswStatus::Passed, 0));
    let (d, csw) = h.command_in(&INQUIRY36, 8);
    assert_eq!(d.len(), 8);
    assert_eq!((csw.status, csw.residue), (CswStatus::Passed, 0));
}

#[test]
fn case8_hi_do_is_phase_error() {
    let mut h = Host::with_disc(10);
    let tag = h.send_cbw(&MODE_SELECT16, 16, true);
    assert_eq!(h.in_(16).status, TransferStatus::Stall);
    assert_eq!(h.csw_after_stall(BULK_IN_ENDPOINT, tag).0, PhaseError);
}

#[test]
fn case9_ho_gt_dn_stalls_out() {
    let mut h = Host::with_disc(10);
    let tag = h.send_cbw(&TUR, 512, false);
    let c = h.out(&[0u8; 512]);
    assert_eq!(c.status, TransferStatus::Stall);
    assert_eq!(h.csw_after_stall(BULK_OUT_ENDPOINT, tag), (Passed, 512));
}

#[test]
fn case10_ho_di_is_phase_error() {
    let mut h = Host::with_disc(10);
    let tag = h.send_cbw(&INQUIRY36, 36, false);
    assert_eq!(h.out(&[0u8; 36]).status, TransferStatus::Stall);
    assert_eq!(h.csw_after_stall(BULK_OUT_ENDPOINT, tag).0, PhaseError);
}

#[test]
fn case11_ho_gt_do_residue() {
    let mut h = Host::with_disc(10);
    // MODE SELECT(6) with an 8-byte list; the host sends 16.
    let mut p = vec![0u8; 16];
    p[3] = 0;
    let csw = h.command_out(&[0x15, 0x10, 0, 0, 8, 0], &p);
    assert_eq!((csw.status, csw.residue), (CswStatus::Passed, 8));
}

#[test]
fn case12_ho_eq_do() {
    let mut h = Host::with_disc(10);
    let csw = h.command_out(&MODE_SELECT16, &mode_select_params());
    assert_eq!((csw.status, csw.residue), (CswStatus::Passed, 0));
    // Refused parameters: status 1 with sense.
    let mut bad = mode_select_params();
    bad[8 + 6] = 0x09;
    bad[8 + 7] = 0x30;
    let csw = h.command_out(&MODE_SELECT16, &bad);
    assert_eq!(csw.status, CswStatus::Failed);
    assert_eq!(h.sense(), Sense::INVALID_FIELD_IN_PARAMETER_LIST);
}

#[test]
fn case12_data_out_in_pieces() {
    let mut h = Host::with_disc(10);
    let tag = h.send_cbw(&MODE_SELECT16, 16, false);
    let p = mode_select_params();
    assert_eq!(h.out(&p[..5]).length, 5);
    assert_eq!(h.out(&p[5..]).length, 11);
    let csw = h.read_csw(tag);
    assert_eq!((csw.status, csw.residue), (CswStatus::Passed, 0));
}

#[test]
fn case13_ho_lt_do_is_phase_error() {
    let mut h = Host::with_disc(10);
    let csw = h.command_out(&MODE_SELECT16, &[0u8; 8]);
    assert_eq!(csw.status, CswStatus::PhaseError);
}

#[test]
fn invalid_cbw_wedges_until_reset_recovery() {
    for bad in [
        vec![0u8; 31],                                      // bad signature
        cbw(1, 0, false, &TUR)[..30].to_vec(),              // short
        [cbw(1, 0, false, &TUR).as_slice(), &[0]].concat(), // long
        {
            let mut b = cbw(1, 0, false, &TUR).to_vec();
            b[13] = 1; // LUN 1
            b
        },
        {
            let mut b = cbw(1, 0, false, &TUR).to_vec();
            b[14] = 0; // no command block
            b
        },
        {
            let mut b = cbw(1, 0, false, &TUR).to_vec();
            b[14] = 17;
            b
        },
    ] {
        let mut h = Host::with_disc(10);
        let c = h.out(&bad);
        assert_eq!(
            c.status,
            TransferStatus::Success,
            "the CBW packet itself is taken"
        );
        assert!(h.dev.is_halted(BULK_IN_ENDPOINT));
        assert!(h.dev.is_halted(BULK_OUT_ENDPOINT));
        // Linux: CSW read stalls; clearing the halt does not help.
        assert_eq!(h.in_(13).status, TransferStatus::Stall);
        h.clear_halt(BULK_IN_ENDPOINT);
        assert!(h.dev.is_halted(BULK_IN_ENDPOINT));
        assert_eq!(h.in_(13).status, TransferStatus::Stall);
        assert_eq!(h.out(&cbw(9, 0, false, &TUR)).status, TransferStatus::Stall);
        h.clear_halt(BULK_OUT_ENDPOINT);
        assert!(h.dev.is_halted(BULK_OUT_ENDPOINT));
        // Reset recovery brings it back.
        h.reset_recovery();
        assert!(!h.dev.is_halted(BULK_IN_ENDPOINT));
        assert!(!h.dev.is_halted(BULK_OUT_ENDPOINT));
        let (d, csw) = h.command_in(&INQUIRY36, 36);
        assert_eq!(d.len(), 36);
        assert_eq!(csw.status, CswStatus::Passed);
    }
}

#[test]
fn reset_recovery_mid_data_phase() {
    let mut h = Host::with_disc(100);
    let tag = h.send_cbw(&read10(0, 50), 50 * 2048, true);
    let c = h.in_(4096);
    assert_eq!(c.data, pattern(0, 2));
    let _ = tag;
    // The host gives up: reset recovery, then a fresh command works.
    h.reset_recovery();
    let (d, csw) = h.command_in(&read10(60, 2), 4096);
    assert_eq!(d, pattern(60, 2));
    assert_eq!(csw.status, CswStatus::Passed);
}

#[test]
fn out_waits_while_the_device_has_data_to_send() {
    let mut h = Host::with_disc(10);
    let tag = h.send_cbw(&INQUIRY36, 36, true);
    // The host (wrongly) sends the next CBW before reading: it is NAKed, not lost.
    let next = cbw(77, 0, false, &TUR);
    h.dev.submit_bulk_out(BULK_OUT_ENDPOINT, 5, &next);
    assert!(h.dev.take_completions().is_empty());
    assert_eq!(h.dev.pending_requests(), 1);
    h.dev.submit_bulk_in(BULK_IN_ENDPOINT, 6, 36);
    h.dev.submit_bulk_in(BULK_IN_ENDPOINT, 7, 13);
    h.dev.submit_bulk_in(BULK_IN_ENDPOINT, 8, 13);
    let c = h.dev.take_completions();
    let ids: Vec<u64> = c.iter().map(|c| c.id).collect();
    assert_eq!(ids, vec![6, 7, 5, 8]);
    assert_eq!(c[0].data.len(), 36);
    assert_eq!(Csw::parse(&c[1].data).unwrap().tag, tag);
    assert_eq!(c[2].length, 31);
    let csw = Csw::parse(&c[3].data).unwrap();
    assert_eq!((csw.tag, csw.status), (77, CswStatus::Passed));
}

#[test]
fn port_reset_semantics() {
    let mut h = Host::with_disc(10);
    // Lock the tray, start a read, queue an IN that cannot complete yet.
    assert_eq!(h.command(&[0x1E, 0, 0, 0, 1, 0]).status, CswStatus::Passed);
    h.send_cbw(&TUR, 0, false);
    h.dev
        .submit_bulk_out(BULK_OUT_ENDPOINT, 50, &cbw(3, 0, false, &TUR)); // NAKed
    assert!(h.dev.take_completions().is_empty());
    h.dev.reset();
    let c = h.dev.take_completions();
    assert_eq!(c.len(), 1);
    assert_eq!((c[0].id, c[0].status), (50, TransferStatus::Cancelled));
    assert!(!h.dev.scsi().is_locked());
    assert_eq!(h.dev.pending_sense(), Some(Sense::POWER_ON_RESET));
    assert_eq!(h.command(&TUR).status, CswStatus::Failed);
    assert_eq!(h.sense(), Sense::POWER_ON_RESET);
    assert_eq!(h.command(&TUR).status, CswStatus::Passed);
}

#[test]
fn cancel_pending_requests() {
    let mut h = Host::with_disc(10);
    h.dev.submit_bulk_in(BULK_IN_ENDPOINT, 1, 512);
    h.dev.submit_bulk_in(BULK_IN_ENDPOINT, 2, 512);
    assert!(h.dev.take_completions().is_empty());
    assert!(h.dev.cancel(1));
    assert!(!h.dev.cancel(1));
    assert!(!h.dev.cancel(99));
    let c = h.dev.take_completions();
    assert_eq!(c.len(), 1);
    assert_eq!(
        (c[0].id, c[0].status, c[0].endpoint),
        (1, TransferStatus::Cancelled, 0x81)
    );
    // Request 2 still waits and gets the next CSW.
    h.dev
        .submit_bulk_out(BULK_OUT_ENDPOINT, 3, &cbw(42, 0, false, &TUR));
    let c = h.dev.take_completions();
    assert_eq!(c.len(), 2);
    assert_eq!((c[0].id, c[0].length), (3, 31));
    assert_eq!(c[1].id, 2);
    assert_eq!(Csw::parse(&c[1].data).unwrap().tag, 42);
    // A completed request cannot be cancelled any more.
    assert!(!h.dev.cancel(2));
}

#[test]
fn csw_does_not_fit_small_request() {
    let mut h = Host::with_disc(10);
    let tag = h.send_cbw(&TUR, 0, false);
    let c = h.in_(8);
    assert_eq!((c.status, c.data.len()), (TransferStatus::Babble, 0));
    let csw = h.read_csw(tag);
    assert_eq!(csw.status, CswStatus::Passed);
}
