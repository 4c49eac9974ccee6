//! USB descriptors of a Bulk-Only mass-storage CD drive, at the speed it is configured
//! for ([`DeviceConfig::speed`]).
//!
//! * **SuperSpeed** (the default): a USB 3.0 device. Device descriptor with `bcdUSB`
//!   0x0300 and `bMaxPacketSize0` 9 (2^9 = 512 bytes); a BOS descriptor with the USB 2.0
//!   Extension and the SuperSpeed USB Device Capability; bulk endpoints of 1024 bytes,
//!   each followed by its SuperSpeed Endpoint Companion descriptor (bursts of up to 16
//!   packets, no streams). Unless [`DeviceConfig::uas`] is off, the interface has a
//!   second alternate setting for USB Attached SCSI (08/06/62): command pipe
//!   [`UAS_COMMAND_ENDPOINT`], status pipe [`UAS_STATUS_ENDPOINT`], and the data pipes
//!   on the Bulk-Only endpoints' addresses, each endpoint followed by its companion
//!   (status and data pipes: 32 streams) and its Pipe Usage descriptor. No device
//!   qualifier or other-speed configuration: a SuperSpeed device answers those with a
//!   request error.
//! * **High speed**: a USB 2.0 device (`bcdUSB` 0x0200, `bMaxPacketSize0` 64, bulk
//!   512), with a device qualifier and a full-speed other-speed configuration.
//! * **Full speed**: the same USB 2.0 device running at full speed (bulk 64); its
//!   other-speed configuration is the high-speed one.

use crate::config::DeviceConfig;
use crate::usb::{EndpointInfo, InterfaceInfo, Speed, TransferType};

/// Bulk IN endpoint address (data to the host, and the CSW).
pub const BULK_IN_ENDPOINT: u8 = 0x81;
/// Bulk OUT endpoint address (CBWs and data from the host).
pub const BULK_OUT_ENDPOINT: u8 = 0x02;
/// `wMaxPacketSize` of the bulk endpoints at high speed.
pub const BULK_MAX_PACKET: u16 = Speed::High.bulk_max_packet();
/// `wMaxPacketSize` of the bulk endpoints at full speed (other-speed configuration).
pub const BULK_MAX_PACKET_FULL_SPEED: u16 = Speed::Full.bulk_max_packet();
/// `wMaxPacketSize` of the bulk endpoints at SuperSpeed.
pub const BULK_MAX_PACKET_SUPER_SPEED: u16 = Speed::Super.bulk_max_packet();
/// `bMaxPacketSize0` at full and high speed.
pub const EP0_MAX_PACKET: u8 = 64;
/// `bMaxPacketSize0` at SuperSpeed: an exponent, 2^9 = 512 bytes.
pub const EP0_MAX_PACKET_EXPONENT_SUPER_SPEED: u8 = 9;
/// `bcdUSB` at full and high speed.
pub const USB_VERSION: u16 = 0x0200;
/// `bcdUSB` at SuperSpeed.
pub const USB_VERSION_SUPER_SPEED: u16 = 0x0300;
/// `bMaxBurst` of the SuperSpeed endpoint companions: bursts of up to 16 packets
/// (16 KiB), the most a bulk endpoint can announce.
pub const SUPER_SPEED_MAX_BURST: u8 = 15;
/// UAS command pipe (bulk OUT, no streams), in alternate setting 1.
pub const UAS_COMMAND_ENDPOINT: u8 = 0x04;
/// UAS status pipe (bulk IN, streams), in alternate setting 1.
pub const UAS_STATUS_ENDPOINT: u8 = 0x83;
/// UAS data-in pipe (bulk IN, streams): the Bulk-Only IN endpoint's address.
pub const UAS_DATA_IN_ENDPOINT: u8 = BULK_IN_ENDPOINT;
/// UAS data-out pipe (bulk OUT, streams): the Bulk-Only OUT endpoint's address.
pub const UAS_DATA_OUT_ENDPOINT: u8 = BULK_OUT_ENDPOINT;
/// Mass-storage interface class.
pub const CLASS_MASS_STORAGE: u8 = 0x08;
/// SCSI transparent command set subclass.
pub const SUBCLASS_SCSI: u8 = 0x06;
/// Bulk-Only Transport protocol.
pub const PROTOCOL_BOT: u8 = 0x50;
/// USB Attached SCSI protocol.
pub const PROTOCOL_UAS: u8 = 0x62;
/// US English, the only language of the string descriptors.
pub const LANGUAGE_ID_EN_US: u16 = 0x0409;

/// Descriptor type numbers.
pub mod descriptor_type {
    /// Device descriptor.
    pub const DEVICE: u8 = 1;
    /// Configuration descriptor.
    pub const CONFIGURATION: u8 = 2;
    /// String descriptor.
    pub const STRING: u8 = 3;
    /// Interface descriptor.
    pub const INTERFACE: u8 = 4;
    /// Endpoint descriptor.
    pub const ENDPOINT: u8 = 5;
    /// Device qualifier descriptor.
    pub const DEVICE_QUALIFIER: u8 = 6;
    /// Other-speed configuration descriptor.
    pub const OTHER_SPEED_CONFIGURATION: u8 = 7;
    /// Binary device Object Store (BOS) descriptor.
    pub const BOS: u8 = 0x0F;
    /// Device capability descriptor (inside the BOS).
    pub const DEVICE_CAPABILITY: u8 = 0x10;
    /// SuperSpeed endpoint companion descriptor.
    pub const SUPER_SPEED_ENDPOINT_COMPANION: u8 = 0x30;
    /// UAS Pipe Usage descriptor (class-specific, after an endpoint).
    pub const PIPE_USAGE: u8 = 0x24;
}

/// Device capability types (`bDevCapabilityType`).
pub mod capability_type {
    /// USB 2.0 Extension.
    pub const USB_2_0_EXTENSION: u8 = 0x02;
    /// SuperSpeed USB.
    pub const SUPER_SPEED_USB: u8 = 0x03;
}

/// String descriptor indexes.
const STR_MANUFACTURER: u8 = 1;
const STR_PRODUCT: u8 = 2;
const STR_SERIAL: u8 = 3;

/// Total length of the configuration descriptor set at full and high speed:
/// configuration + interface + 2 endpoints.
pub const CONFIGURATION_TOTAL_LENGTH: u16 = 9 + 9 + 7 + 7;
/// Total length of the configuration descriptor set at SuperSpeed: configuration +
/// interface + 2 × (endpoint + endpoint companion).
pub const CONFIGURATION_TOTAL_LENGTH_SUPER_SPEED: u16 = 9 + 9 + 2 * (7 + 6);
/// Total length of the SuperSpeed configuration descriptor set with the UAS alternate
/// setting: the Bulk-Only set + interface + 4 × (endpoint + companion + pipe usage).
pub const CONFIGURATION_TOTAL_LENGTH_SUPER_SPEED_UAS: u16 =
    CONFIGURATION_TOTAL_LENGTH_SUPER_SPEED + 9 + 4 * (7 + 6 + 4);
/// Total length of the BOS descriptor: header + USB 2.0 Extension + SuperSpeed USB.
pub const BOS_TOTAL_LENGTH: u16 = 5 + 7 + 10;

/// The interface of the device.
pub const INTERFACE: InterfaceInfo = InterfaceInfo {
    number: 0,
    class: CLASS_MASS_STORAGE,
    subclass: SUBCLASS_SCSI,
    protocol: PROTOCOL_BOT,
};

/// The interface in the UAS alternate setting.
pub const INTERFACE_UAS: InterfaceInfo = InterfaceInfo {
    number: 0,
    class: CLASS_MASS_STORAGE,
    subclass: SUBCLASS_SCSI,
    protocol: PROTOCOL_UAS,
};

const fn bulk(address: u8, max_packet_size: u16, max_streams: u32) -> EndpointInfo {
    EndpointInfo {
        address,
        transfer_type: TransferType::Bulk,
        max_packet_size,
        interval: 0,
        interface: 0,
        max_streams,
    }
}

/// The Bulk-Only endpoints (alternate setting 0) at `speed`.
pub const fn endpoints(speed: Speed) -> [EndpointInfo; 2] {
    let max_packet_size = speed.bulk_max_packet();
    [
        bulk(BULK_IN_ENDPOINT, max_packet_size, 0),
        bulk(BULK_OUT_ENDPOINT, max_packet_size, 0),
    ]
}

/// The UAS endpoints (alternate setting 1, SuperSpeed): command, status, data in,
/// data out; all but the command pipe with [`crate::uas::MAX_STREAMS`] streams.
pub const fn uas_endpoints() -> [EndpointInfo; 4] {
    let mp = Speed::Super.bulk_max_packet();
    let streams = crate::uas::MAX_STREAMS;
    [
        bulk(UAS_COMMAND_ENDPOINT, mp, 0),
        bulk(UAS_STATUS_ENDPOINT, mp, streams),
        bulk(UAS_DATA_IN_ENDPOINT, mp, streams),
        bulk(UAS_DATA_OUT_ENDPOINT, mp, streams),
    ]
}

/// The descriptors of one device, built once from its [`DeviceConfig`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Descriptors {
    speed: Speed,
    device: [u8; 18],
    configuration: Vec<u8>,
    /// Full and high speed only.
    other_speed: Option<Vec<u8>>,
    /// Full and high speed only.
    qualifier: Option<[u8; 10]>,
    /// SuperSpeed only.
    bos: Option<Vec<u8>>,
    strings: [Option<Vec<u8>>; 3],
}

impl Descriptors {
    /// Builds the descriptors for `config` (at `config.speed`).
    pub fn new(config: &DeviceConfig) -> Self {
        let speed = config.speed;
        let strings = [
            string_descriptor(&config.manufacturer),
            string_descriptor(&config.product),
            string_descriptor(&config.serial_number),
        ];
        let index = |i: u8| {
            if strings[usize::from(i - 1)].is_some() {
                i
            } else {
                0
            }
        };
        let vid = config.vendor_id.to_le_bytes();
        let pid = config.product_id.to_le_bytes();
        let rel = config.device_release.to_le_bytes();
        let (usb, ep0) = match speed {
            Speed::Full | Speed::High => (USB_VERSION, EP0_MAX_PACKET),
            Speed::Super => (USB_VERSION_SUPER_SPEED, EP0_MAX_PACKET_EXPONENT_SUPER_SPEED),
        };
        let usb = usb.to_le_bytes();
        let device = [
            18,
            descriptor_type::DEVICE,
            usb[0],
            usb[1],
            0x00, // class defined per interface
            0x00,
            0x00,
            ep0,
            vid[0],
            vid[1],
            pid[0],
            pid[1],
            rel[0],
            rel[1],
            index(STR_MANUFACTURER),
            index(STR_PRODUCT),
            index(STR_SERIAL),
            1, // bNumConfigurations
        ];
        let qualifier = [
            10,
            descriptor_type::DEVICE_QUALIFIER,
            usb[0],
            usb[1],
            0x00,
            0x00,
            0x00,
            EP0_MAX_PACKET,
            1,
            0,
        ];
        let (configuration, other_speed, qualifier, bos) = match speed {
            Speed::Full => (
                usb2_configuration_set(descriptor_type::CONFIGURATION, Speed::Full),
                Some(usb2_configuration_set(
                    descriptor_type::OTHER_SPEED_CONFIGURATION,
                    Speed::High,
                )),
                Some(qualifier),
                None,
            ),
            Speed::High => (
                usb2_configuration_set(descriptor_type::CONFIGURATION, Speed::High),
                Some(usb2_configuration_set(
                    descriptor_type::OTHER_SPEED_CONFIGURATION,
                    Speed::Full,
                )),
                Some(qualifier),
                None,
            ),
            Speed::Super => (
                super_speed_configuration_set(config.uas),
                None,
                None,
                Some(bos()),
            ),
        };
        Self {
            speed,
            device,
            configuration,
            other_speed,
            qualifier,
            bos,
            strings,
        }
    }

    /// The speed these descriptors are for.
    pub fn speed(&self) -> Speed {
        self.speed
    }

    /// The 18-byte device descriptor.
    pub fn device(&self) -> &[u8; 18] {
        &self.device
    }

    /// The full configuration descriptor set (configuration, interface, endpoints and,
    /// at SuperSpeed, the endpoint companions).
    pub fn configuration(&self) -> &[u8] {
        &self.configuration
    }

    /// The other-speed configuration descriptor set (full and high speed only).
    pub fn other_speed_configuration(&self) -> Option<&[u8]> {
        self.other_speed.as_deref()
    }

    /// The device qualifier descriptor (full and high speed only).
    pub fn device_qualifier(&self) -> Option<&[u8; 10]> {
        self.qualifier.as_ref()
    }

    /// The BOS descriptor with its device capabilities (SuperSpeed only).
    pub fn bos(&self) -> Option<&[u8]> {
        self.bos.as_deref()
    }

    /// String descriptor `index` (0 is the language-id list), or `None` if it does not exist.
    pub fn string(&self, index: u8) -> Option<Vec<u8>> {
        if index == 0 {
            let lang = LANGUAGE_ID_EN_US.to_le_bytes();
            return Some(vec![4, descriptor_type::STRING, lang[0], lang[1]]);
        }
        self.strings
            .get(usize::from(index) - 1)
            .and_then(|s| s.clone())
    }

    /// The descriptor asked for by a GET_DESCRIPTOR `wValue` (type in the high byte,
    /// index in the low byte), not yet cut to `wLength`.
    pub fn get(&self, value: u16) -> Option<Vec<u8>> {
        let [index, kind] = value.to_le_bytes();
        match (kind, index) {
            (descriptor_type::DEVICE, 0) => Some(self.device.to_vec()),
            (descriptor_type::CONFIGURATION, 0) => Some(self.configuration.clone()),
            (descriptor_type::STRING, i) => self.string(i),
            (descriptor_type::DEVICE_QUALIFIER, 0) => self.qualifier.map(|q| q.to_vec()),
            (descriptor_type::OTHER_SPEED_CONFIGURATION, 0) => self.other_speed.clone(),
            (descriptor_type::BOS, 0) => self.bos.clone(),
            _ => None,
        }
    }
}

/// An interface descriptor of interface 0 for alternate setting `alt`.
fn interface(alt: u8, endpoints: u8, protocol: u8) -> [u8; 9] {
    [
        9,
        descriptor_type::INTERFACE,
        0,
        alt,
        endpoints,
        CLASS_MASS_STORAGE,
        SUBCLASS_SCSI,
        protocol,
        0,
    ]
}

/// The configuration and interface descriptors, with `total` as `wTotalLength` and
/// `max_power` as `bMaxPower` (units of 2 mA, or 8 mA at SuperSpeed).
fn configuration_and_interface(kind: u8, total: u16, max_power: u8) -> Vec<u8> {
    let total = total.to_le_bytes();
    let mut d = vec![
        // configuration
        9, kind, total[0], total[1], 1,    // bNumInterfaces
        1,    // bConfigurationValue
        0,    // iConfiguration
        0x80, // bus powered, no remote wakeup
        max_power,
    ];
    d.extend_from_slice(&interface(0, 2, PROTOCOL_BOT));
    d
}

/// A bulk endpoint descriptor.
fn bulk_endpoint(address: u8, max_packet: u16) -> [u8; 7] {
    let mp = max_packet.to_le_bytes();
    [7, descriptor_type::ENDPOINT, address, 0x02, mp[0], mp[1], 0]
}

/// Builds a USB 2.0 configuration descriptor set of `kind` (configuration or
/// other-speed) for `speed` (full or high).
fn usb2_configuration_set(kind: u8, speed: Speed) -> Vec<u8> {
    // 250 × 2 mA = 500 mA.
    let mut d = configuration_and_interface(kind, CONFIGURATION_TOTAL_LENGTH, 250);
    for address in [BULK_IN_ENDPOINT, BULK_OUT_ENDPOINT] {
        d.extend_from_slice(&bulk_endpoint(address, speed.bulk_max_packet()));
    }
    d
}

/// A SuperSpeed endpoint companion for a bulk endpoint: `bMaxBurst`, `MaxStreams`
/// exponent (0: no streams), `wBytesPerInterval` 0 as for any bulk endpoint.
fn companion(max_burst: u8, max_streams_exponent: u8) -> [u8; 6] {
    [
        6,
        descriptor_type::SUPER_SPEED_ENDPOINT_COMPANION,
        max_burst,
        max_streams_exponent,
        0,
        0,
    ]
}

/// Builds the SuperSpeed configuration descriptor set: each bulk endpoint is followed
/// by its endpoint companion (`bMaxBurst` [`SUPER_SPEED_MAX_BURST`], no streams), and
/// with `uas`, alternate setting 1 follows (see the module documentation).
fn super_speed_configuration_set(uas: bool) -> Vec<u8> {
    let total = if uas {
        CONFIGURATION_TOTAL_LENGTH_SUPER_SPEED_UAS
    } else {
        CONFIGURATION_TOTAL_LENGTH_SUPER_SPEED
    };
    // 112 × 8 mA = 896 mA, the most a SuperSpeed bus-powered device may draw.
    let mut d = configuration_and_interface(descriptor_type::CONFIGURATION, total, 112);
    let mp = Speed::Super.bulk_max_packet();
    for address in [BULK_IN_ENDPOINT, BULK_OUT_ENDPOINT] {
        d.extend_from_slice(&bulk_endpoint(address, mp));
        d.extend_from_slice(&companion(SUPER_SPEED_MAX_BURST, 0));
    }
    if uas {
        use crate::uas::{pipe_id, MAX_STREAMS_EXPONENT};
        d.extend_from_slice(&interface(1, 4, PROTOCOL_UAS));
        for (address, burst, streams, pipe) in [
            (UAS_COMMAND_ENDPOINT, 0, 0, pipe_id::COMMAND),
            (
                UAS_STATUS_ENDPOINT,
                0,
                MAX_STREAMS_EXPONENT,
                pipe_id::STATUS,
            ),
            (
                UAS_DATA_IN_ENDPOINT,
                SUPER_SPEED_MAX_BURST,
                MAX_STREAMS_EXPONENT,
                pipe_id::DATA_IN,
            ),
            (
                UAS_DATA_OUT_ENDPOINT,
                SUPER_SPEED_MAX_BURST,
                MAX_STREAMS_EXPONENT,
                pipe_id::DATA_OUT,
            ),
        ] {
            d.extend_from_slice(&bulk_endpoint(address, mp));
            d.extend_from_slice(&companion(burst, streams));
            d.extend_from_slice(&[4, descriptor_type::PIPE_USAGE, pipe, 0]);
        }
    }
    d
}

/// Builds the BOS descriptor of the SuperSpeed device.
///
/// * USB 2.0 Extension: `bmAttributes` 0, no Link Power Management. The device only
///   ever runs at SuperSpeed with these descriptors (high speed is a configuration of
///   its own), so it claims nothing about USB 2 link states.
/// * SuperSpeed USB: no Latency Tolerance Messages; speeds supported full, high and
///   SuperSpeed (the product can be configured for each), all functionality from full
///   speed up; U1 and U2 exit latencies 0. A device that reports both exit latencies
///   as 0 does not take part in U1/U2 link power management (Linux then leaves LPM
///   off), which is right for an emulated link without power states.
fn bos() -> Vec<u8> {
    let total = BOS_TOTAL_LENGTH.to_le_bytes();
    vec![
        // BOS header
        5,
        descriptor_type::BOS,
        total[0],
        total[1],
        2, // bNumDeviceCaps
        // USB 2.0 Extension
        7,
        descriptor_type::DEVICE_CAPABILITY,
        capability_type::USB_2_0_EXTENSION,
        0, // bmAttributes (u32): no LPM
        0,
        0,
        0,
        // SuperSpeed USB Device Capability
        10,
        descriptor_type::DEVICE_CAPABILITY,
        capability_type::SUPER_SPEED_USB,
        0,    // bmAttributes: no LTM
        0x0E, // wSpeedsSupported: full, high, 5 Gbit/s
        0x00,
        1, // bFunctionalitySupport: everything works from full speed up
        0, // bU1DevExitLat
        0, // wU2DevExitLat
        0,
    ]
}

/// Encodes `s` as a string descriptor (UTF-16LE, at most 126 code units); `None` for "".
fn string_descriptor(s: &str) -> Option<Vec<u8>> {
    if s.is_empty() {
        return None;
    }
    let units: Vec<u16> = s.encode_utf16().take(126).collect();
    let mut d = Vec::with_capacity(2 + units.len() * 2);
    d.push((2 + units.len() * 2) as u8);
    d.push(descriptor_type::STRING);
    for u in units {
        d.extend_from_slice(&u.to_le_bytes());
    }
    Some(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn high() -> DeviceConfig {
        DeviceConfig {
            speed: Speed::High,
            ..DeviceConfig::default()
        }
    }

    #[test]
    fn device_descriptor_bytes_high_speed() {
        let d = Descriptors::new(&DeviceConfig {
            vendor_id: 0x1234,
            product_id: 0xABCD,
            device_release: 0x0102,
            ..high()
        });
        assert_eq!(d.speed(), Speed::High);
        assert_eq!(
            d.device(),
            &[
                0x12, 0x01, 0x00, 0x02, 0x00, 0x00, 0x00, 0x40, 0x34, 0x12, 0xCD, 0xAB, 0x02, 0x01,
                0x01, 0x02, 0x03, 0x01
            ]
        );
    }

    #[test]
    fn device_descriptor_bytes_super_speed() {
        let d = Descriptors::new(&DeviceConfig {
            vendor_id: 0x1234,
            product_id: 0xABCD,
            device_release: 0x0102,
            ..DeviceConfig::default()
        });
        assert_eq!(d.speed(), Speed::Super);
        assert_eq!(
            d.device(),
            &[
                0x12, 0x01, 0x00, 0x03, 0x00, 0x00, 0x00, 0x09, 0x34, 0x12, 0xCD, 0xAB, 0x02, 0x01,
                0x01, 0x02, 0x03, 0x01
            ]
        );
    }

    #[test]
    fn configuration_bytes_high_speed() {
        let d = Descriptors::new(&high());
        assert_eq!(
            d.configuration(),
            &[
                0x09, 0x02, 0x20, 0x00, 0x01, 0x01, 0x00, 0x80, 0xFA, // configuration
                0x09, 0x04, 0x00, 0x00, 0x02, 0x08, 0x06, 0x50, 0x00, // interface
                0x07, 0x05, 0x81, 0x02, 0x00, 0x02, 0x00, // bulk IN
                0x07, 0x05, 0x02, 0x02, 0x00, 0x02, 0x00, // bulk OUT
            ]
        );
        let o = d.other_speed_configuration().unwrap();
        assert_eq!(o.len(), 32);
        assert_eq!(o[1], 0x07);
        assert_eq!(&o[22..24], &[0x40, 0x00]);
        assert_eq!(
            d.device_qualifier().unwrap(),
            &[0x0A, 0x06, 0x00, 0x02, 0x00, 0x00, 0x00, 0x40, 0x01, 0x00]
        );
        assert!(d.bos().is_none());
    }

    #[test]
    fn configuration_bytes_full_speed() {
        let d = Descriptors::new(&DeviceConfig {
            speed: Speed::Full,
            ..DeviceConfig::default()
        });
        assert_eq!(&d.device()[2..4], &[0x00, 0x02]);
        assert_eq!(d.device()[7], 0x40);
        let c = d.configuration();
        assert_eq!(c.len(), 32);
        assert_eq!(
            (&c[22..24], &c[29..31]),
            (&[0x40, 0x00][..], &[0x40, 0x00][..])
        );
        let o = d.other_speed_configuration().unwrap();
        assert_eq!(o[1], 0x07);
        assert_eq!(
            (&o[22..24], &o[29..31]),
            (&[0x00, 0x02][..], &[0x00, 0x02][..])
        );
        assert!(d.device_qualifier().is_some());
        assert!(d.bos().is_none());
    }

    #[test]
    fn configuration_bytes_super_speed() {
        // Bulk-Only only; the UAS alternate setting is checked in tests/uas.rs.
        let d = Descriptors::new(&DeviceConfig {
            uas: false,
            ..DeviceConfig::default()
        });
        assert_eq!(
            d.configuration(),
            &[
                0x09, 0x02, 0x2C, 0x00, 0x01, 0x01, 0x00, 0x80, 0x70, // configuration
                0x09, 0x04, 0x00, 0x00, 0x02, 0x08, 0x06, 0x50, 0x00, // interface
                0x07, 0x05, 0x81, 0x02, 0x00, 0x04, 0x00, // bulk IN, 1024
                0x06, 0x30, 0x0F, 0x00, 0x00, 0x00, // its companion: burst 16, no streams
                0x07, 0x05, 0x02, 0x02, 0x00, 0x04, 0x00, // bulk OUT, 1024
                0x06, 0x30, 0x0F, 0x00, 0x00, 0x00, // its companion
            ]
        );
        assert_eq!(
            d.configuration().len(),
            usize::from(CONFIGURATION_TOTAL_LENGTH_SUPER_SPEED)
        );
        assert!(d.other_speed_configuration().is_none());
        assert!(d.device_qualifier().is_none());
    }

    #[test]
    fn bos_bytes() {
        let d = Descriptors::new(&DeviceConfig::default());
        let bos = d.bos().unwrap();
        assert_eq!(
            bos,
            &[
                0x05, 0x0F, 0x16, 0x00, 0x02, // BOS: 22 bytes, 2 capabilities
                0x07, 0x10, 0x02, 0x00, 0x00, 0x00, 0x00, // USB 2.0 Extension, no LPM
                0x0A, 0x10, 0x03, 0x00, 0x0E, 0x00, 0x01, 0x00, 0x00, 0x00, // SuperSpeed USB
            ]
        );
        assert_eq!(bos.len(), usize::from(BOS_TOTAL_LENGTH));
    }

    #[test]
    fn endpoint_info_follows_the_speed() {
        for (speed, maxp) in [(Speed::Full, 64), (Speed::High, 512), (Speed::Super, 1024)] {
            let eps = endpoints(speed);
            assert_eq!(
                eps.map(|e| (e.address, e.max_packet_size)),
                [(0x81, maxp), (0x02, maxp)]
            );
        }
    }

    #[test]
    fn strings() {
        let d = Descriptors::new(&DeviceConfig {
            manufacturer: "Ab".into(),
            serial_number: String::new(),
            ..DeviceConfig::default()
        });
        assert_eq!(d.string(0).unwrap(), vec![4, 3, 0x09, 0x04]);
        assert_eq!(d.string(1).unwrap(), vec![6, 3, b'A', 0, b'b', 0]);
        assert!(d.string(3).is_none());
        assert!(d.string(4).is_none());
        assert!(d.string(255).is_none());
        assert_eq!(d.device()[16], 0, "no serial: iSerialNumber 0");
        let long = Descriptors::new(&DeviceConfig {
            product: "x".repeat(500),
            ..DeviceConfig::default()
        });
        assert_eq!(long.string(2).unwrap().len(), 254);
        assert_eq!(long.string(2).unwrap()[0], 254);
    }

    #[test]
    fn get_by_value() {
        let d = Descriptors::new(&high());
        assert_eq!(d.get(0x0100).unwrap().len(), 18);
        assert_eq!(d.get(0x0200).unwrap().len(), 32);
        assert!(d.get(0x0201).is_none());
        assert_eq!(d.get(0x0600).unwrap().len(), 10);
        assert_eq!(d.get(0x0700).unwrap().len(), 32);
        assert!(d.get(0x0F00).is_none(), "no BOS for a USB 2.00 device");
        assert!(d.get(0x2100).is_none());

        let d = Descriptors::new(&DeviceConfig::default());
        assert_eq!(d.get(0x0100).unwrap().len(), 18);
        assert_eq!(
            d.get(0x0200).unwrap().len(),
            usize::from(CONFIGURATION_TOTAL_LENGTH_SUPER_SPEED_UAS)
        );
        assert!(d.get(0x0201).is_none());
        assert!(d.get(0x0600).is_none(), "no device qualifier at SuperSpeed");
        assert!(
            d.get(0x0700).is_none(),
            "no other-speed configuration at SuperSpeed"
        );
        assert_eq!(d.get(0x0F00).unwrap().len(), 22);
        assert!(d.get(0x0F01).is_none());
        assert!(
            d.get(0x3000).is_none(),
            "companions only inside the configuration"
        );
        assert!(d.get(0x2100).is_none());
    }
}
