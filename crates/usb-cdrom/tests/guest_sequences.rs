//! The command sequences real guests send: Linux (usb-storage + sr + cdrom + isofs) and
//! the Windows class driver's start-up, byte by byte.

mod common;

use common::{pattern, read10, Host};
use usb_cdrom::{CswStatus, DeviceConfig, MemoryMedium, Sense, UsbCdrom};

/// 1000 sectors: lead-out at LBA 1000 = 0x3E8.
const SECTORS: u32 = 1000;

/// A fresh drive with the disc, enumerated and configured, after the mass-storage
/// driver's first request (GET MAX LUN: one LUN).
fn enumerated_storage() -> Host {
    let mut h = Host::new(UsbCdrom::with_medium(
        DeviceConfig::default(),
        Box::new(MemoryMedium::patterned("disc.iso", SECTORS)),
    ));
    enumerate(&mut h);
    assert_eq!(h.control(0xA1, 0xFE, 0, 0, 1).data, vec![0]);
    h
}

fn enumerate(h: &mut Host) {
    assert_eq!(h.control(0x80, 0x06, 0x0100, 0, 64).data.len(), 18);
    assert!(h.control(0x00, 0x05, 2, 0, 0).is_ok());
    assert_eq!(h.control(0x80, 0x06, 0x0100, 0, 18).data.len(), 18);
    assert_eq!(h.control(0x80, 0x06, 0x0200, 0, 9).data.len(), 9);
    assert_eq!(h.control(0x80, 0x06, 0x0200, 0, 32).data.len(), 32);
    assert_eq!(h.control(0x80, 0x06, 0x0300, 0, 255).data.len(), 4);
    for i in 1..=3 {
        assert!(h.control(0x80, 0x06, 0x0300 | i, 0x0409, 255).is_ok());
    }
    assert!(h.control(0x00, 0x09, 1, 0, 0).is_ok());
}

#[test]
fn linux_probe_and_mount() {
    // usb-storage: enumeration, then GET MAX LUN.
    let mut h = enumerated_storage();

    // SCSI scan: INQUIRY, 36 bytes.
    let (d, csw) = h.command_in(&[0x12, 0, 0, 0, 36, 0], 36);
    assert_eq!((csw.status, csw.residue), (CswStatus::Passed, 0));
    assert_eq!(
        d,
        [
            &[0x05, 0x80, 0x05, 0x02, 0x1F, 0, 0, 0][..],
            b"AIRLOCK VIRTUAL CD-ROM  1.00"
        ]
        .concat()
    );

    // sr probe: TEST UNIT READY reports the power-on reset; usb-storage auto-senses.
    let csw = h.command(&[0, 0, 0, 0, 0, 0]);
    assert_eq!((csw.status, csw.residue), (CswStatus::Failed, 0));
    let (d, csw) = h.command_in(&[0x03, 0, 0, 0, 18, 0], 18);
    assert_eq!(csw.status, CswStatus::Passed);
    assert_eq!(
        d,
        vec![0x70, 0, 0x06, 0, 0, 0, 0, 0x0A, 0, 0, 0, 0, 0x29, 0x00, 0, 0, 0, 0]
    );
    assert_eq!(h.command(&[0; 6]).status, CswStatus::Passed);

    // READ CAPACITY(10).
    let (d, csw) = h.command_in(&[0x25, 0, 0, 0, 0, 0, 0, 0, 0, 0], 8);
    assert_eq!(csw.status, CswStatus::Passed);
    assert_eq!(d, vec![0x00, 0x00, 0x03, 0xE7, 0x00, 0x00, 0x08, 0x00]);

    // get_capabilities: MODE SENSE(10), page 0x2A, 128-byte buffer (short answer).
    let (d, csw) = h.command_in(&[0x5A, 0, 0x2A, 0, 0, 0, 0, 0, 128, 0], 128);
    assert_eq!((csw.status, csw.residue), (CswStatus::Passed, 128 - 38));
    assert_eq!(&d[..8], &[0x00, 0x24, 0x00, 0x00, 0x00, 0x00, 0x00, 0x08]);
    assert_eq!(&d[8..16], &[0x00, 0x00, 0x03, 0xE8, 0x00, 0x00, 0x08, 0x00]);
    let n = 8 + 8; // header_length + block_descriptor_length, as sr computes it
    assert_eq!(d[n], 0x2A);
    assert_eq!(u16::from_be_bytes([d[n + 8], d[n + 9]]) / 176, 52, "speed");
    assert_eq!(d[n + 6] >> 5, 1, "loading mechanism: tray");
    assert_eq!(d[n + 6] & 0x08, 0x08, "can eject");
    assert_eq!(d[n + 2] & 0x08, 0x08, "reads DVD-ROM");

    // sr_vendor sr_cd_check: READ TOC, SFF-8020 session format in byte 9.
    let (d, csw) = h.command_in(&[0x43, 0, 0, 0, 0, 0, 0, 0, 12, 0x40], 12);
    assert_eq!(csw.status, CswStatus::Passed);
    assert_eq!(
        d,
        vec![0x00, 0x0A, 0x01, 0x01, 0x00, 0x14, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00]
    );

    // cdrom_mmc3_profile: GET CONFIGURATION, 32-byte buffer.
    let (d, csw) = h.command_in(&[0x46, 0, 0, 0, 0, 0, 0, 0, 32, 0], 32);
    assert_eq!((csw.status, csw.residue), (CswStatus::Passed, 0));
    assert_eq!(&d[..8], &[0x00, 0x00, 0x00, 0x4C, 0x00, 0x00, 0x00, 0x08]);
    assert_eq!(
        &d[8..20],
        &[0x00, 0x00, 0x03, 0x08, 0x00, 0x10, 0x00, 0x00, 0x00, 0x08, 0x01, 0x00]
    );
    // cdrom_is_random_writable: GET CONFIGURATION RT=2 feature 0x0020: not there.
    let (d, csw) = h.command_in(&[0x46, 0x02, 0x00, 0x20, 0, 0, 0, 0, 24, 0], 24);
    assert_eq!((csw.status, csw.residue), (CswStatus::Passed, 16));
    assert_eq!(d, vec![0x00, 0x00, 0x00, 0x04, 0x00, 0x00, 0x00, 0x08]);

    // sr_get_events: GESN, polled, media class, 8 bytes: the disc is new.
    let gesn = [0x4A, 0x01, 0, 0, 0x10, 0, 0, 0, 8, 0];
    let (d, csw) = h.command_in(&gesn, 8);
    assert_eq!(csw.status, CswStatus::Passed);
    assert_eq!(d, vec![0x00, 0x06, 0x04, 0x10, 0x02, 0x02, 0x00, 0x00]);
    let (d, _) = h.command_in(&gesn, 8);
    assert_eq!(d, vec![0x00, 0x06, 0x04, 0x10, 0x00, 0x02, 0x00, 0x00]);

    // cdrom_get_disc_info: header first, then the whole block.
    let (d, csw) = h.command_in(&[0x51, 0, 0, 0, 0, 0, 0, 0, 2, 0], 2);
    assert_eq!(csw.status, CswStatus::Passed);
    assert_eq!(d, vec![0x00, 0x20]);
    let (d, csw) = h.command_in(&[0x51, 0, 0, 0, 0, 0, 0, 0, 34, 0], 34);
    assert_eq!(csw.status, CswStatus::Passed);
    assert_eq!(
        &d[..9],
        &[0x00, 0x20, 0x0E, 0x01, 0x01, 0x01, 0x01, 0x20, 0x00]
    );

    // READ TOC format 0 (cdrom_read_tocentry / isofs multisession check).
    let (d, csw) = h.command_in(&[0x43, 0, 0, 0, 0, 0, 1, 0, 12, 0], 12);
    assert_eq!((csw.status, csw.residue), (CswStatus::Passed, 0));
    assert_eq!(
        d,
        vec![0x00, 0x12, 0x01, 0x01, 0x00, 0x14, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00]
    );
    let (d, _) = h.command_in(&[0x43, 0x02, 0, 0, 0, 0, 0xAA, 0, 12, 0], 12);
    // Lead-out at LBA 1000 + 150 = 1150 frames = 00:15:25.
    assert_eq!(
        d,
        vec![0x00, 0x0A, 0x01, 0x01, 0x00, 0x16, 0xAA, 0x00, 0x00, 0x00, 0x0F, 0x19]
    );

    // mount: PREVENT MEDIUM REMOVAL, then isofs reads the volume descriptors and more.
    assert_eq!(h.command(&[0x1E, 0, 0, 0, 1, 0]).status, CswStatus::Passed);
    let (d, csw) = h.command_in(&read10(16, 1), 2048);
    assert_eq!((csw.status, csw.residue), (CswStatus::Passed, 0));
    assert_eq!(d, pattern(16, 1));
    let (d, csw) = h.command_in(&read10(17, 2), 4096);
    assert_eq!(csw.status, CswStatus::Passed);
    assert_eq!(d, pattern(17, 2));
    // usb-storage's 240-sector (120 KiB on 512-byte sectors = 60 CD sectors) maximum.
    let (d, csw) = h.command_in(&read10(100, 60), 60 * 2048);
    assert_eq!(csw.status, CswStatus::Passed);
    assert_eq!(d, pattern(100, 60));
    // Read-ahead past the end is refused with LBA OUT OF RANGE.
    let (d, csw) = h.command_in(&read10(SECTORS - 2, 4), 4 * 2048);
    assert!(d.is_empty());
    assert_eq!((csw.status, csw.residue), (CswStatus::Failed, 8192));
    assert_eq!(h.sense(), Sense::LBA_OUT_OF_RANGE);

    // eject while mounted: refused; after umount (ALLOW) it opens the tray.
    assert_eq!(
        h.command(&[0x1B, 0, 0, 0, 0x02, 0]).status,
        CswStatus::Failed
    );
    assert_eq!(h.sense(), Sense::MEDIUM_REMOVAL_PREVENTED);
    assert_eq!(h.command(&[0x1E, 0, 0, 0, 0, 0]).status, CswStatus::Passed);
    assert_eq!(
        h.command(&[0x1B, 0, 0, 0, 0x02, 0]).status,
        CswStatus::Passed
    );
    let (d, _) = h.command_in(&gesn, 8);
    assert_eq!(d, vec![0x00, 0x06, 0x04, 0x10, 0x03, 0x01, 0x00, 0x00]);
    assert_eq!(h.command(&[0; 6]).status, CswStatus::Failed);
    assert_eq!(h.sense(), Sense::MEDIUM_NOT_PRESENT_TRAY_OPEN);
}

#[test]
fn windows_class_driver_startup() {
    let mut h = enumerated_storage();
    // INQUIRY with a large buffer (short answer), then VPD 0x00 and 0x80.
    let (d, csw) = h.command_in(&[0x12, 0, 0, 0, 0xFF, 0], 0xFF);
    assert_eq!((csw.status, csw.residue), (CswStatus::Passed, 0xFF - 36));
    assert_eq!(d.len(), 36);
    let (d, csw) = h.command_in(&[0x12, 1, 0x00, 0, 0xFF, 0], 0xFF);
    assert_eq!(csw.status, CswStatus::Passed);
    assert_eq!(d, vec![0x05, 0x00, 0x00, 0x02, 0x00, 0x80]);
    let (d, _) = h.command_in(&[0x12, 1, 0x80, 0, 0xFF, 0], 0xFF);
    assert_eq!(&d[..4], &[0x05, 0x80, 0x00, 16]);
    // VPD 0x83 is not offered: CHECK CONDITION 05/24/00.
    let (_, csw) = h.command_in(&[0x12, 1, 0x83, 0, 0xFF, 0], 0xFF);
    assert_eq!(csw.status, CswStatus::Failed);
    assert_eq!(h.sense(), Sense::INVALID_FIELD_IN_CDB);

    // GET CONFIGURATION header only (current profile), RT=1.
    let (d, csw) = h.command_in(&[0x46, 0x01, 0, 0, 0, 0, 0, 0, 8, 0], 8);
    assert_eq!(csw.status, CswStatus::Passed);
    assert_eq!(&d[6..8], &[0x00, 0x08]);

    // GESN probe: 8-byte buffer, class mask 0 first (supported classes), then media.
    let (d, csw) = h.command_in(&[0x4A, 0x01, 0, 0, 0x00, 0, 0, 0, 8, 0], 8);
    assert_eq!((csw.status, csw.residue), (CswStatus::Passed, 4));
    assert_eq!(d, vec![0x00, 0x02, 0x80, 0x10]);
    let (d, _) = h.command_in(&[0x4A, 0x01, 0, 0, 0x5E, 0, 0, 0, 8, 0], 8);
    assert_eq!(d[2], 0x04);
    let data_len = u16::from_be_bytes([d[0], d[1]]) as i32;
    assert!(data_len - 2 >= 4, "classpnp needs EventDataLength - 2 >= 4");
    assert_eq!(d[4], 0x02);

    // READ CAPACITY: the power-on unit attention shows first.
    let (_, csw) = h.command_in(&[0x25, 0, 0, 0, 0, 0, 0, 0, 0, 0], 8);
    assert_eq!(csw.status, CswStatus::Failed);
    assert_eq!(h.sense(), Sense::POWER_ON_RESET);
    let (d, _) = h.command_in(&[0x25, 0, 0, 0, 0, 0, 0, 0, 0, 0], 8);
    assert_eq!(d, vec![0x00, 0x00, 0x03, 0xE7, 0x00, 0x00, 0x08, 0x00]);

    // DeviceSetRawReadInfo: MODE SENSE(6) with block descriptor.
    let (d, csw) = h.command_in(&[0x1A, 0, 0x01, 0, 0xFF, 0], 0xFF);
    assert_eq!(csw.status, CswStatus::Passed);
    assert_eq!(&d[..4], &[4 + 8 + 12 - 1, 0, 0, 8]);
    assert_eq!(&d[4..12], &[0, 0, 0x03, 0xE8, 0, 0, 0x08, 0x00]);
    assert_eq!(&d[12..14], &[0x01, 0x0A]);

    // READ TOC format 1 (Windows needs it), then format 0 in MSF with a big buffer.
    let (d, csw) = h.command_in(&[0x43, 0, 0x01, 0, 0, 0, 0, 0, 12, 0], 12);
    assert_eq!(csw.status, CswStatus::Passed);
    assert_eq!(
        d,
        vec![0x00, 0x0A, 0x01, 0x01, 0x00, 0x14, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00]
    );
    let (d, csw) = h.command_in(&[0x43, 0x02, 0, 0, 0, 0, 0, 0x03, 0x24, 0], 0x324);
    assert_eq!((csw.status, csw.residue), (CswStatus::Passed, 0x324 - 20));
    assert_eq!(
        d,
        vec![
            0x00, 0x12, 0x01, 0x01, 0x00, 0x14, 0x01, 0x00, 0x00, 0x00, 0x02, 0x00, 0x00, 0x16,
            0xAA, 0x00, 0x00, 0x00, 0x0F, 0x19
        ]
    );
    // Raw TOC (format 2, the Mac OS way in byte 9 too).
    let (d, csw) = h.command_in(&[0x43, 0x02, 0, 0, 0, 0, 1, 0xFF, 0xFE, 0x80], 0xFFFE);
    assert_eq!(csw.status, CswStatus::Passed);
    assert_eq!(d.len(), 48);

    // DVD init on a CD: READ DVD STRUCTURE refused as incompatible medium.
    let (_, csw) = h.command_in(&[0xAD, 0, 0, 0, 0, 0, 0, 0x00, 0x08, 0x04, 0, 0], 0x804);
    assert_eq!(csw.status, CswStatus::Failed);
    assert_eq!(h.sense(), Sense::INCOMPATIBLE_MEDIUM_FORMAT);

    // Speed and streaming commands.
    assert_eq!(
        h.command(&[0xBB, 0, 0xFF, 0xFF, 0xFF, 0xFF, 0, 0, 0, 0, 0, 0])
            .status,
        CswStatus::Passed
    );
    let (d, csw) = h.command_in(&[0xAC, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0], 24);
    assert_eq!(csw.status, CswStatus::Passed);
    assert_eq!(d.len(), 24);
    let csw = h.command_out(&[0xB6, 0, 0, 0, 0, 0, 0, 0, 0, 0, 28, 0], &[0u8; 28]);
    assert_eq!(csw.status, CswStatus::Passed);
    assert_eq!(
        h.command(&[0x35, 0, 0, 0, 0, 0, 0, 0, 0, 0]).status,
        CswStatus::Passed
    );

    // Unknown opcodes (e.g. READ FORMAT CAPACITIES, REPORT KEY): INVALID COMMAND.
    for op in [0x23u8, 0xA4, 0x42, 0x45, 0x4B, 0x5C, 0xB9] {
        let mut cdb = [0u8; 12];
        cdb[0] = op;
        cdb[9] = 8;
        let (_, csw) = h.command_in(&cdb, 8);
        assert_eq!(csw.status, CswStatus::Failed, "opcode {op:#x}");
        assert_eq!(h.sense(), Sense::INVALID_COMMAND);
    }

    // READ(12) and READ CD (user data) of the same sectors.
    let (d, csw) = h.command_in(&[0xA8, 0, 0, 0, 0, 20, 0, 0, 0, 3, 0, 0], 3 * 2048);
    assert_eq!(csw.status, CswStatus::Passed);
    assert_eq!(d, pattern(20, 3));
    let (d, csw) = h.command_in(&[0xBE, 0, 0, 0, 0, 20, 0, 0, 3, 0x10, 0, 0], 3 * 2048);
    assert_eq!(csw.status, CswStatus::Passed);
    assert_eq!(d, pattern(20, 3));
}
