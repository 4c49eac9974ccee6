//! USB descriptors of a USB 2.0 high-speed Bulk-Only mass-storage CD drive.

use crate::config::DeviceConfig;
use crate::usb::{EndpointInfo, InterfaceInfo, TransferType};

/// Bulk IN endpoint address (data to the host, and the CSW).
pub const BULK_IN_ENDPOINT: u8 = 0x81;
/// Bulk OUT endpoint address (CBWs and data from the host).
pub const BULK_OUT_ENDPOINT: u8 = 0x02;
/// `wMaxPacketSize` of the bulk endpoints at high speed.
pub const BULK_MAX_PACKET: u16 = 512;
/// `wMaxPacketSize` of the bulk endpoints at full speed (other-speed configuration).
pub const BULK_MAX_PACKET_FULL_SPEED: u16 = 64;
/// `bMaxPacketSize0`.
pub const EP0_MAX_PACKET: u8 = 64;
/// `bcdUSB`.
pub const USB_VERSION: u16 = 0x0200;
/// Mass-storage interface class.
pub const CLASS_MASS_STORAGE: u8 = 0x08;
/// SCSI transparent command set subclass.
pub const SUBCLASS_SCSI: u8 = 0x06;
/// Bulk-Only Transport protocol.
pub const PROTOCOL_BOT: u8 = 0x50;
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
}

/// String descriptor indexes.
const STR_MANUFACTURER: u8 = 1;
const STR_PRODUCT: u8 = 2;
const STR_SERIAL: u8 = 3;

/// Total length of the configuration descriptor set: configuration + interface + 2 endpoints.
pub const CONFIGURATION_TOTAL_LENGTH: u16 = 9 + 9 + 7 + 7;

/// The interface of the device.
pub const INTERFACE: InterfaceInfo = InterfaceInfo {
    number: 0,
    class: CLASS_MASS_STORAGE,
    subclass: SUBCLASS_SCSI,
    protocol: PROTOCOL_BOT,
};

/// The endpoints of the device other than endpoint 0, at high speed.
pub const ENDPOINTS: [EndpointInfo; 2] = [
    EndpointInfo {
        address: BULK_IN_ENDPOINT,
        transfer_type: TransferType::Bulk,
        max_packet_size: BULK_MAX_PACKET,
        interval: 0,
        interface: 0,
    },
    EndpointInfo {
        address: BULK_OUT_ENDPOINT,
        transfer_type: TransferType::Bulk,
        max_packet_size: BULK_MAX_PACKET,
        interval: 0,
        interface: 0,
    },
];

/// The descriptors of one device, built once from its [`DeviceConfig`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Descriptors {
    device: [u8; 18],
    configuration: Vec<u8>,
    other_speed: Vec<u8>,
    qualifier: [u8; 10],
    strings: [Option<Vec<u8>>; 3],
}

impl Descriptors {
    /// Builds the descriptors for `config`.
    pub fn new(config: &DeviceConfig) -> Self {
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
        let usb = USB_VERSION.to_le_bytes();
        let device = [
            18,
            descriptor_type::DEVICE,
            usb[0],
            usb[1],
            0x00, // class defined per interface
            0x00,
            0x00,
            EP0_MAX_PACKET,
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
        Self {
            device,
            configuration: configuration_set(descriptor_type::CONFIGURATION, BULK_MAX_PACKET),
            other_speed: configuration_set(
                descriptor_type::OTHER_SPEED_CONFIGURATION,
                BULK_MAX_PACKET_FULL_SPEED,
            ),
            qualifier,
            strings,
        }
    }

    /// The 18-byte device descriptor.
    pub fn device(&self) -> &[u8; 18] {
        &self.device
    }

    /// The full configuration descriptor set (configuration, interface, endpoints).
    pub fn configuration(&self) -> &[u8] {
        &self.configuration
    }

    /// The other-speed (full-speed) configuration descriptor set.
    pub fn other_speed_configuration(&self) -> &[u8] {
        &self.other_speed
    }

    /// The device qualifier descriptor.
    pub fn device_qualifier(&self) -> &[u8; 10] {
        &self.qualifier
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
            (descriptor_type::DEVICE_QUALIFIER, 0) => Some(self.qualifier.to_vec()),
            (descriptor_type::OTHER_SPEED_CONFIGURATION, 0) => Some(self.other_speed.clone()),
            _ => None,
        }
    }
}

/// Builds a configuration descriptor set of `kind` (configuration or other-speed) with
/// bulk endpoints of `max_packet` bytes.
fn configuration_set(kind: u8, max_packet: u16) -> Vec<u8> {
    let total = CONFIGURATION_TOTAL_LENGTH.to_le_bytes();
    let mp = max_packet.to_le_bytes();
    let mut d = vec![
        // configuration
        9,
        kind,
        total[0],
        total[1],
        1,    // bNumInterfaces
        1,    // bConfigurationValue
        0,    // iConfiguration
        0x80, // bus powered, no remote wakeup
        250,  // 500 mA
        // interface 0
        9,
        descriptor_type::INTERFACE,
        0,
        0,
        2,
        CLASS_MASS_STORAGE,
        SUBCLASS_SCSI,
        PROTOCOL_BOT,
        0,
    ];
    for address in [BULK_IN_ENDPOINT, BULK_OUT_ENDPOINT] {
        d.extend_from_slice(&[7, descriptor_type::ENDPOINT, address, 0x02, mp[0], mp[1], 0]);
    }
    d
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

    #[test]
    fn device_descriptor_bytes() {
        let d = Descriptors::new(&DeviceConfig {
            vendor_id: 0x1234,
            product_id: 0xABCD,
            device_release: 0x0102,
            ..DeviceConfig::default()
        });
        assert_eq!(
            d.device(),
            &[
                0x12, 0x01, 0x00, 0x02, 0x00, 0x00, 0x00, 0x40, 0x34, 0x12, 0xCD, 0xAB, 0x02, 0x01,
                0x01, 0x02, 0x03, 0x01
            ]
        );
    }

    #[test]
    fn configuration_bytes() {
        let d = Descriptors::new(&DeviceConfig::default());
        assert_eq!(
            d.configuration(),
            &[
                0x09, 0x02, 0x20, 0x00, 0x01, 0x01, 0x00, 0x80, 0xFA, // configuration
                0x09, 0x04, 0x00, 0x00, 0x02, 0x08, 0x06, 0x50, 0x00, // interface
                0x07, 0x05, 0x81, 0x02, 0x00, 0x02, 0x00, // bulk IN
                0x07, 0x05, 0x02, 0x02, 0x00, 0x02, 0x00, // bulk OUT
            ]
        );
        let o = d.other_speed_configuration();
        assert_eq!(o.len(), 32);
        assert_eq!(o[1], 0x07);
        assert_eq!(&o[22..24], &[0x40, 0x00]);
        assert_eq!(
            d.device_qualifier(),
            &[0x0A, 0x06, 0x00, 0x02, 0x00, 0x00, 0x00, 0x40, 0x01, 0x00]
        );
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
        let d = Descriptors::new(&DeviceConfig::default());
        assert_eq!(d.get(0x0100).unwrap().len(), 18);
        assert_eq!(d.get(0x0200).unwrap().len(), 32);
        assert!(d.get(0x0201).is_none());
        assert_eq!(d.get(0x0600).unwrap().len(), 10);
        assert_eq!(d.get(0x0700).unwrap().len(), 32);
        assert!(d.get(0x0F00).is_none(), "no BOS for a USB 2.00 device");
        assert!(d.get(0x2100).is_none());
    }
}
