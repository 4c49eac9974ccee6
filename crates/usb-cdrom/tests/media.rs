//! Discs coming and going while the drive is attached; DVD-sized media; ISO files.

mod common;

use common::{pattern, read10, Host, SyntheticMedium};
use std::io::Write;
use usb_cdrom::{CswStatus, DeviceConfig, IsoFile, MediumState, MemoryMedium, Sense, UsbCdrom};

const GESN: [u8; 10] = [0x4A, 0x01, 0, 0, 0x10, 0, 0, 0, 8, 0];
const GET_CONFIG_HEADER: [u8; 10] = [0x46, 0x01, 0, 0, 0, 0, 0, 0, 8, 0];

fn gesn(h: &mut Host) -> (u8, u8) {
    let (d, csw) = h.command_in(&GESN, 8);
    assert_eq!(csw.status, CswStatus::Passed);
    (d[4], d[5])
}

#[test]
fn empty_drive_then_insert_then_swap_then_remove() {
    let mut h = Host::new(UsbCdrom::new(DeviceConfig::default()));
    h.clear_unit_attentions();
    assert_eq!(h.dev.medium_state(), MediumState::Empty);
    assert_eq!(h.command(&[0; 6]).status, CswStatus::Failed);
    assert_eq!(h.sense(), Sense::MEDIUM_NOT_PRESENT);
    assert_eq!(gesn(&mut h), (0, 0));
    let (d, _) = h.command_in(&GET_CONFIG_HEADER, 8);
    assert_eq!(&d[6..8], &[0, 0], "no current profile");
    // Commands that need a disc say NOT READY.
    for cdb in [
        vec![0x25, 0, 0, 0, 0, 0, 0, 0, 0, 0],
        read10(0, 1),
        vec![0x43, 0, 0, 0, 0, 0, 0, 0, 12, 0],
        vec![0x51, 0, 0, 0, 0, 0, 0, 0, 34, 0],
    ] {
        let (_, csw) = h.command_in(&cdb, 2048);
        assert_eq!(csw.status, CswStatus::Failed);
        assert_eq!(h.sense(), Sense::MEDIUM_NOT_PRESENT);
    }
    // Commands that do not need one still work.
    let (d, csw) = h.command_in(&[0x5A, 0, 0x2A, 0, 0, 0, 0, 0, 128, 0], 128);
    assert_eq!(csw.status, CswStatus::Passed);
    assert_eq!(
        &d[..8],
        &[0, 0x1C, 0, 0, 0, 0, 0, 0],
        "no block descriptor without a disc"
    );
    let (d, _) = h.command_in(&[0xBD, 0, 0, 0, 0, 0, 0, 0, 0, 8, 0, 0], 8);
    assert_eq!(d, vec![0, 0, 0, 0, 0, 1, 0, 0]);

    // The user inserts a disc.
    assert!(h
        .dev
        .insert_medium(Box::new(MemoryMedium::patterned("a", 50)))
        .is_none());
    assert_eq!(h.dev.medium_state(), MediumState::Loaded);
    assert_eq!(gesn(&mut h), (2, 0x02));
    assert_eq!(gesn(&mut h), (0, 0x02));
    assert_eq!(h.command(&[0; 6]).status, CswStatus::Failed);
    assert_eq!(h.sense(), Sense::MEDIUM_MAY_HAVE_CHANGED);
    assert_eq!(
        h.command(&[0; 6]).status,
        CswStatus::Passed,
        "06/28/00 only once"
    );
    let (d, _) = h.command_in(&GET_CONFIG_HEADER, 8);
    assert_eq!(&d[6..8], &[0x00, 0x08]);
    let (d, _) = h.command_in(&read10(49, 1), 2048);
    assert_eq!(d, pattern(49, 1));

    // Swap for a bigger disc: the host sees new media and the new capacity.
    let old = h
        .dev
        .insert_medium(Box::new(MemoryMedium::patterned("b", 80)))
        .unwrap();
    assert_eq!(old.name(), "a");
    assert_eq!(gesn(&mut h), (2, 0x02));
    assert_eq!(h.command(&[0; 6]).status, CswStatus::Failed);
    assert_eq!(h.sense(), Sense::MEDIUM_MAY_HAVE_CHANGED);
    let (d, _) = h.command_in(&[0x25, 0, 0, 0, 0, 0, 0, 0, 0, 0], 8);
    assert_eq!(&d[..4], &[0, 0, 0, 79]);

    // The user takes it out even though the host locked it.
    assert_eq!(h.command(&[0x1E, 0, 0, 0, 1, 0]).status, CswStatus::Passed);
    assert_eq!(h.dev.remove_medium().unwrap().name(), "b");
    assert_eq!(h.dev.medium_state(), MediumState::Empty);
    assert_eq!(gesn(&mut h), (3, 0x00));
    assert_eq!(h.command(&[0; 6]).status, CswStatus::Failed);
    assert_eq!(h.sense(), Sense::MEDIUM_NOT_PRESENT);
    assert!(h.dev.remove_medium().is_none());
    assert_eq!(gesn(&mut h), (0, 0x00));
}

#[test]
fn host_eject_and_load() {
    let mut h = Host::with_disc(20);
    assert_eq!(gesn(&mut h), (2, 0x02));
    assert_eq!(
        h.command(&[0x1B, 0, 0, 0, 0x02, 0]).status,
        CswStatus::Passed
    );
    assert_eq!(h.dev.medium_state(), MediumState::TrayOpen);
    assert!(
        h.dev.scsi().medium().is_some(),
        "the disc sits on the open tray"
    );
    assert_eq!(gesn(&mut h), (3, 0x01));
    // A second eject is harmless.
    assert_eq!(
        h.command(&[0x1B, 0, 0, 0, 0x02, 0]).status,
        CswStatus::Passed
    );
    assert_eq!(gesn(&mut h), (0, 0x01));
    // Load closes the tray: new media.
    assert_eq!(
        h.command(&[0x1B, 0, 0, 0, 0x03, 0]).status,
        CswStatus::Passed
    );
    assert_eq!(gesn(&mut h), (2, 0x02));
    h.clear_unit_attentions();
    let (d, csw) = h.command_in(&read10(3, 1), 2048);
    assert_eq!(csw.status, CswStatus::Passed);
    assert_eq!(d, pattern(3, 1));
    // The terminal inserts another disc while the tray is open.
    assert_eq!(
        h.command(&[0x1B, 0, 0, 0, 0x02, 0]).status,
        CswStatus::Passed
    );
    h.dev
        .insert_medium(Box::new(MemoryMedium::patterned("n", 5)));
    assert_eq!(h.dev.medium_state(), MediumState::Loaded);
}

#[test]
fn dvd_sized_medium_presents_dvd_rom() {
    let sectors = 2_000_000u64;
    let mut h = Host::new(UsbCdrom::with_medium(
        DeviceConfig::default(),
        Box::new(SyntheticMedium {
            sectors,
            bad_from: None,
        }),
    ));
    h.clear_unit_attentions();
    let (d, _) = h.command_in(&[0x46, 0, 0, 0, 0, 0, 0, 0x01, 0, 0], 256);
    assert_eq!(&d[6..8], &[0x00, 0x10]);
    assert_eq!(
        &d[8..20],
        &[0, 0, 3, 8, 0x00, 0x10, 0x01, 0, 0x00, 0x08, 0x00, 0]
    );
    let (d, _) = h.command_in(&[0x25, 0, 0, 0, 0, 0, 0, 0, 0, 0], 8);
    assert_eq!(u32::from_be_bytes([d[0], d[1], d[2], d[3]]), 1_999_999);
    // READ DVD STRUCTURE: physical format and copyright.
    let (d, csw) = h.command_in(&[0xAD, 0, 0, 0, 0, 0, 0, 0x00, 0x08, 0x04, 0, 0], 0x804);
    assert_eq!((csw.status, csw.residue), (CswStatus::Passed, 0));
    assert_eq!(&d[..8], &[0x08, 0x02, 0, 0, 0x01, 0x0F, 0x01, 0x00]);
    let end = 0x30000 + 1_999_999u32;
    assert_eq!(&d[12..16], &end.to_be_bytes());
    let (d, _) = h.command_in(&[0xAD, 0, 0, 0, 0, 0, 0, 0x01, 0, 8, 0, 0], 8);
    assert_eq!(d, vec![0, 6, 0, 0, 0, 0, 0, 0]);
    let (_, csw) = h.command_in(&[0xAD, 0, 0, 0, 0, 0, 1, 0x00, 0x08, 0x04, 0, 0], 0x804);
    assert_eq!(csw.status, CswStatus::Failed);
    assert_eq!(h.sense(), Sense::INVALID_FIELD_IN_CDB);
    // READ CD is a CD command.
    let (_, csw) = h.command_in(&[0xBE, 0, 0, 0, 0, 0, 0, 0, 1, 0x10, 0, 0], 2048);
    assert_eq!(csw.status, CswStatus::Failed);
    assert_eq!(h.sense(), Sense::INCOMPATIBLE_MEDIUM_FORMAT);
    // The last sector reads.
    let (d, csw) = h.command_in(&read10(1_999_999, 1), 2048);
    assert_eq!(csw.status, CswStatus::Passed);
    assert_eq!(d, pattern(1_999_999, 1));
}

#[test]
fn iso_file_end_to_end() {
    let path = std::env::temp_dir().join(format!("usb-cdrom-e2e-{}.iso", std::process::id()));
    let mut data = pattern(0, 20);
    data.truncate(20 * 2048 - 1000); // not a multiple of 2048: last sector padded
    std::fs::File::create(&path)
        .unwrap()
        .write_all(&data)
        .unwrap();
    let iso = IsoFile::open(&path).unwrap();
    let mut h = Host::new(UsbCdrom::with_medium(
        DeviceConfig::default(),
        Box::new(iso),
    ));
    h.clear_unit_attentions();
    let (d, _) = h.command_in(&[0x25, 0, 0, 0, 0, 0, 0, 0, 0, 0], 8);
    assert_eq!(&d[..4], &[0, 0, 0, 19]);
    let (d, csw) = h.command_in(&read10(0, 20), 20 * 2048);
    assert_eq!(csw.status, CswStatus::Passed);
    assert_eq!(d[..data.len()], data[..]);
    assert!(d[data.len()..].iter().all(|&b| b == 0));
    std::fs::remove_file(&path).unwrap();
}
