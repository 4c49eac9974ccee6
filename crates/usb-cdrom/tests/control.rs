//! Endpoint 0: standard requests, BOT class requests, stalls.

mod common;

use common::Host;
use usb_cdrom::{
    DeviceConfig, SetupPacket, Speed, TransferStatus, TransferType, UsbCdrom, BULK_IN_ENDPOINT,
    BULK_OUT_ENDPOINT,
};
use TransferStatus::Stall;

fn host() -> Host {
    Host::new(UsbCdrom::new(DeviceConfig::default()))
}

fn high_speed_host() -> Host {
    Host::new(UsbCdrom::new(DeviceConfig {
        speed: Speed::High,
        ..DeviceConfig::default()
    }))
}

/// The Bulk-Only interface descriptor (alternate setting 0, 08/06/50).
const BOT_INTERFACE: [u8; 9] = [0x09, 0x04, 0x00, 0x00, 0x02, 0x08, 0x06, 0x50, 0x00];

/// GET_DESCRIPTOR `value` (type and index) for `length` bytes, which must succeed.
fn descriptor(h: &mut Host, value: u16, length: u16) -> Vec<u8> {
    let r = h.control(0x80, 0x06, value, 0, length);
    assert!(r.is_ok(), "GET_DESCRIPTOR {value:#06x}: {:?}", r.status);
    r.data
}

/// The device descriptor with `bcdUSB` `usb_major`.00 and `bMaxPacketSize0`.
fn device_descriptor(usb_major: u8, max_packet0: u8) -> Vec<u8> {
    let mut d = vec![0x12, 0x01, 0x00, usb_major, 0x00, 0x00, 0x00, max_packet0];
    d.extend([0x09, 0x12, 0x01, 0x00, 0x00, 0x01, 0x01, 0x02, 0x03, 0x01]);
    d
}

/// The configuration descriptor header: `wTotalLength` and `bMaxPower`.
fn config_header(total: u8, max_power: u8) -> Vec<u8> {
    vec![0x09, 0x02, total, 0x00, 0x01, 0x01, 0x00, 0x80, max_power]
}

/// A bulk endpoint descriptor.
fn bulk_endpoint(address: u8, max_packet: u16) -> [u8; 7] {
    let [lo, hi] = max_packet.to_le_bytes();
    [0x07, 0x05, address, 0x02, lo, hi, 0x00]
}

/// Asserts that each control request (bmRequestType, bRequest, wValue, wIndex,
/// wLength) stalls.
#[track_caller]
fn assert_stalls(h: &mut Host, requests: &[(u8, u8, u16, u16, u16)]) {
    for &(rt, req, value, index, length) in requests {
        let status = h.control(rt, req, value, index, length).status;
        assert_eq!(
            status, Stall,
            "{rt:#04x} {req:#04x} {value:#06x} {index:#06x}"
        );
    }
}

/// What every speed answers alike: address, strings, configuration and interface
/// requests.
fn common_enumeration(h: &mut Host) {
    // Windows asks for 8 bytes of the device descriptor first.
    assert_eq!(h.control(0x80, 0x06, 0x0100, 0, 8).data.len(), 8);
    assert!(h.control(0x00, 0x05, 7, 0, 0).is_ok());
    assert_eq!(h.dev.address(), 7);
    // Strings.
    assert_eq!(
        h.control(0x80, 0x06, 0x0300, 0, 255).data,
        vec![4, 3, 0x09, 0x04]
    );
    let product = h.control(0x80, 0x06, 0x0302, 0x0409, 255).data;
    let text: Vec<u16> = product[2..]
        .chunks_exact(2)
        .map(|c| u16::from_le_bytes([c[0], c[1]]))
        .collect();
    assert_eq!(
        String::from_utf16(&text).expect("UTF-16"),
        "Airlock Virtual CD-ROM"
    );
    assert_eq!(product[0] as usize, product.len());
    assert_eq!(
        h.control(0x80, 0x06, 0x0302, 0x0409, 2).data,
        product[..2].to_vec()
    );
    assert_stalls(
        h,
        &[
            (0x80, 0x06, 0x0304, 0x0409, 255),
            // Unknown descriptors stall.
            (0x80, 0x06, 0x0201, 0, 9),
            (0x80, 0x06, 0x3000, 0, 6),
        ],
    );
    // Configuration.
    assert!(h.control(0x00, 0x09, 1, 0, 0).is_ok());
    assert_eq!(h.control(0x80, 0x08, 0, 0, 1).data, vec![1]);
    assert_eq!(h.control(0x00, 0x09, 2, 0, 0).status, Stall);
    assert_eq!(h.control(0x81, 0x0A, 0, 0, 1).data, vec![0]);
    assert!(h.control(0x01, 0x0B, 0, 0, 0).is_ok());
    // Alternate setting 1 (UAS) exists at SuperSpeed only; 2 and interface 1 never.
    let uas = h.dev.offers_uas();
    assert_eq!(h.control(0x01, 0x0B, 1, 0, 0).is_ok(), uas);
    assert_eq!(h.control(0x81, 0x0A, 0, 0, 1).data, vec![u8::from(uas)]);
    assert_stalls(h, &[(0x01, 0x0B, 2, 0, 0), (0x01, 0x0B, 0, 1, 0)]);
    assert!(h.control(0x01, 0x0B, 0, 0, 0).is_ok());
}

#[test]
fn enumeration_descriptors_with_truncation_super_speed() {
    let mut h = host();
    // Linux first asks for 64 bytes of the device descriptor.
    assert_eq!(descriptor(&mut h, 0x0100, 64), device_descriptor(0x03, 9));
    // bcdUSB >= 0x0201: the BOS, header first, then wTotalLength.
    let head = h.control(0x80, 0x06, 0x0F00, 0, 5).data;
    assert_eq!(head, vec![0x05, 0x0F, 0x16, 0x00, 0x02]);
    let bos = h.control(0x80, 0x06, 0x0F00, 0, 22).data;
    assert_eq!(bos.len(), 22);
    assert_eq!(
        &bos[12..15],
        &[0x0A, 0x10, 0x03],
        "SuperSpeed USB capability"
    );
    // Configuration header first, then the full wTotalLength.
    assert_eq!(descriptor(&mut h, 0x0200, 9), config_header(121, 0x70));
    // 121 bytes: the Bulk-Only setting (44) and the UAS alternate setting.
    let full = descriptor(&mut h, 0x0200, 255);
    assert_eq!(full.len(), 121);
    assert_eq!(
        &full[44..53],
        &[0x09, 0x04, 0x00, 0x01, 0x04, 0x08, 0x06, 0x62, 0x00]
    );
    assert_eq!(full[9..18], BOT_INTERFACE);
    assert_eq!(full[18..25], bulk_endpoint(0x81, 1024));
    assert_eq!(&full[25..31], &[0x06, 0x30, 0x0F, 0x00, 0x00, 0x00]);
    assert_eq!(full[31..38], bulk_endpoint(0x02, 1024));
    assert_eq!(&full[38..44], &[0x06, 0x30, 0x0F, 0x00, 0x00, 0x00]);
    // A device at SuperSpeed has no device qualifier or other-speed configuration.
    for value in [0x0600, 0x0700] {
        assert_eq!(h.control(0x80, 0x06, value, 0, 10).status, Stall);
    }
    common_enumeration(&mut h);
}

#[test]
fn enumeration_descriptors_with_truncation_high_speed() {
    let mut h = high_speed_host();
    assert_eq!(descriptor(&mut h, 0x0100, 64), device_descriptor(0x02, 64));
    assert_eq!(descriptor(&mut h, 0x0200, 9), config_header(32, 0xFA));
    let full = descriptor(&mut h, 0x0200, 255);
    assert_eq!(full.len(), 32);
    assert_eq!(full[9..18], BOT_INTERFACE);
    assert_eq!(full[18..25], bulk_endpoint(0x81, 512));
    assert_eq!(full[25..32], bulk_endpoint(0x02, 512));
    // Device qualifier and other-speed configuration.
    assert_eq!(h.control(0x80, 0x06, 0x0600, 0, 10).data.len(), 10);
    let other = h.control(0x80, 0x06, 0x0700, 0, 255).data;
    assert_eq!(other.len(), 32);
    assert_eq!(other[1], 7);
    // No BOS for a USB 2.00 device.
    assert_eq!(h.control(0x80, 0x06, 0x0F00, 0, 5).status, Stall);
    common_enumeration(&mut h);
}

#[test]
fn super_speed_requests() {
    let mut h = host();
    // SET_ISOCH_DELAY (Linux sends it to every SuperSpeed device) and SET_SEL.
    assert!(h.control(0x00, 0x31, 40, 0, 0).is_ok());
    let sel = SetupPacket::new(0x00, 0x30, 0, 0, 6);
    assert!(h.dev.control(sel, &[1, 0, 2, 0, 3, 0]).is_ok());
    assert_eq!(
        h.dev.control(sel, &[1, 0]).status,
        TransferStatus::Stall,
        "SET_SEL needs its 6 bytes"
    );
    // U1/U2 enable show in GET_STATUS bits 2 and 3.
    assert!(h.control(0x00, 0x03, 48, 0, 0).is_ok());
    assert_eq!(h.control(0x80, 0x00, 0, 0, 2).data, vec![0x04, 0]);
    assert!(h.control(0x00, 0x03, 49, 0, 0).is_ok());
    assert_eq!(h.control(0x80, 0x00, 0, 0, 2).data, vec![0x0C, 0]);
    assert!(h.control(0x00, 0x01, 48, 0, 0).is_ok());
    assert_eq!(h.control(0x80, 0x00, 0, 0, 2).data, vec![0x08, 0]);
    // A port reset clears them.
    h.dev.reset();
    assert_eq!(h.control(0x80, 0x00, 0, 0, 2).data, vec![0, 0]);
    // LTM (no LTM capability) and unconfigured U1/U2 stall.
    assert_eq!(h.control(0x00, 0x03, 50, 0, 0).status, Stall);
    assert!(h.control(0x00, 0x09, 0, 0, 0).is_ok());
    assert_eq!(h.control(0x00, 0x03, 48, 0, 0).status, Stall);

    // None of these exist at high speed.
    let mut h = high_speed_host();
    assert_eq!(h.control(0x00, 0x31, 40, 0, 0).status, Stall);
    assert_eq!(
        h.dev.control(sel, &[1, 0, 2, 0, 3, 0]).status,
        TransferStatus::Stall
    );
    assert_eq!(h.control(0x00, 0x03, 48, 0, 0).status, Stall);
    assert_eq!(h.control(0x80, 0x00, 0, 0, 2).data, vec![0, 0]);
}

#[test]
fn custom_identity() {
    let cfg = DeviceConfig {
        vendor_id: 0x0E8D,
        product_id: 0x1806,
        device_release: 0x0300,
        manufacturer: "Hospital".into(),
        product: "Drive".into(),
        serial_number: "0123456789AB".into(),
        ..DeviceConfig::default()
    };
    let dev = UsbCdrom::new(cfg.clone());
    assert_eq!(dev.config(), &cfg);
    let d = dev.descriptors().device();
    assert_eq!(&d[8..14], &[0x8D, 0x0E, 0x06, 0x18, 0x00, 0x03]);
    assert_eq!(dev.speed(), Speed::Super);
    assert_eq!(dev.ep0_max_packet(), 512);
    assert_eq!(dev.interfaces()[0].class, 0x08);
    assert_eq!(dev.interfaces()[0].subclass, 0x06);
    assert_eq!(dev.interfaces()[0].protocol, 0x50);
    let eps = dev.endpoints();
    assert_eq!(eps.len(), 2);
    assert!(eps
        .iter()
        .all(|e| e.transfer_type == TransferType::Bulk && e.max_packet_size == 1024));
    assert_eq!(eps[0].address, BULK_IN_ENDPOINT);
    assert_eq!(eps[1].address, BULK_OUT_ENDPOINT);

    let dev = UsbCdrom::new(DeviceConfig {
        speed: Speed::High,
        ..cfg
    });
    assert_eq!(dev.speed(), Speed::High);
    assert_eq!(dev.ep0_max_packet(), 64);
    assert!(dev.endpoints().iter().all(|e| e.max_packet_size == 512));
}

#[test]
fn get_status_and_halt_features() {
    let mut h = host();
    assert_eq!(h.control(0x80, 0x00, 0, 0, 2).data, vec![0, 0]);
    assert_eq!(h.control(0x81, 0x00, 0, 0, 2).data, vec![0, 0]);
    assert_eq!(h.control(0x81, 0x00, 0, 1, 2).status, Stall);
    assert_eq!(h.control(0x82, 0x00, 0, 0x81, 2).data, vec![0, 0]);
    assert!(h.control(0x02, 0x03, 0, 0x81, 0).is_ok());
    assert_eq!(h.control(0x82, 0x00, 0, 0x81, 2).data, vec![1, 0]);
    assert!(h.dev.is_halted(0x81));
    // A request on the halted endpoint stalls.
    assert_eq!(h.in_(13).status, TransferStatus::Stall);
    h.clear_halt(0x81);
    assert_eq!(h.control(0x82, 0x00, 0, 0x81, 2).data, vec![0, 0]);
    assert!(h.control(0x02, 0x03, 0, 0x02, 0).is_ok());
    assert_eq!(h.control(0x82, 0x00, 0, 0x02, 2).data, vec![1, 0]);
    assert_eq!(h.out(&[0; 31]).status, TransferStatus::Stall);
    h.clear_halt(0x02);
    assert!(!h.dev.is_halted(0x02));
    // Endpoint 0 is fine to clear; unknown endpoints stall.
    assert!(h.control(0x02, 0x01, 0, 0x00, 0).is_ok());
    assert_stalls(
        &mut h,
        &[
            (0x82, 0x00, 0, 0x83, 2),
            (0x02, 0x01, 0, 0x83, 0),
            (0x02, 0x03, 0, 0x03, 0),
            // Only ENDPOINT_HALT is a feature here; remote wakeup is not supported.
            (0x02, 0x01, 1, 0x81, 0),
            (0x00, 0x03, 1, 0, 0),
            (0x00, 0x01, 1, 0, 0),
        ],
    );
}

#[test]
fn bot_class_requests() {
    let mut h = host();
    assert_eq!(h.control(0xA1, 0xFE, 0, 0, 1).data, vec![0]);
    assert_stalls(&mut h, &[(0xA1, 0xFE, 0, 1, 1), (0xA1, 0xFE, 1, 0, 1)]);
    assert!(h.control(0x21, 0xFF, 0, 0, 0).is_ok());
    assert_stalls(&mut h, &[(0x21, 0xFF, 0, 0, 1), (0x21, 0xFF, 1, 0, 0)]);
    // Wrong direction bits or request types stall.
    assert_stalls(&mut h, &[(0x21, 0xFE, 0, 0, 1), (0xA1, 0xFF, 0, 0, 0)]);
}

#[test]
fn unsupported_requests_stall() {
    let mut h = host();
    for (rt, req) in [
        (0x80u8, 0x07u8), // SET_DESCRIPTOR with the wrong direction
        (0x00, 0x07),
        (0x82, 0x0C), // SYNCH_FRAME
        (0xC0, 0x01), // vendor
        (0x40, 0x01),
        (0x81, 0x06), // interface descriptor (HID style)
        (0x23, 0x03), // hub class
        (0xA1, 0x01),
    ] {
        let r = h
            .dev
            .control(SetupPacket::new(rt, req, 0, 0, 8), &[1, 2, 3]);
        assert_eq!(r.status, TransferStatus::Stall, "{rt:#x} {req:#x}");
        assert!(r.data.is_empty());
    }
}

#[test]
fn unconfigured_device_stalls_bulk() {
    let mut h = host();
    assert_eq!(h.dev.configuration(), 1);
    assert!(h.control(0x00, 0x09, 0, 0, 0).is_ok());
    assert_eq!(h.control(0x80, 0x08, 0, 0, 1).data, vec![0]);
    assert_eq!(h.control(0x81, 0x0A, 0, 0, 1).status, Stall);
    assert_eq!(h.in_(13).status, TransferStatus::Stall);
    assert_eq!(h.out(&[0; 31]).status, TransferStatus::Stall);
    assert!(h.control(0x00, 0x09, 1, 0, 0).is_ok());
    let csw = h.command(&[0; 6]);
    assert_eq!(csw.status, usb_cdrom::CswStatus::Failed); // power-on UA, no disc
}

#[test]
fn wrong_endpoints_are_invalid() {
    let mut h = host();
    h.dev.submit_bulk_in(0x82, 1, 512);
    h.dev.submit_bulk_out(0x01, 2, &[0; 31]);
    h.dev.submit_bulk_in(0x02, 3, 512);
    let c = h.dev.take_completions();
    assert_eq!(c.len(), 3);
    assert!(c.iter().all(|c| c.status == TransferStatus::Invalid));
    assert_eq!(c[0].endpoint, 0x82);
    assert_eq!(h.dev.pending_requests(), 0);
}
