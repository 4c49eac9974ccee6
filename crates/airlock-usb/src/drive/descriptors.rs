//! USB descriptors of a real drive, parsed and validated (pure), and turned
//! into what usbredir announces (`interface_info`, `ep_info`).
//!
//! The bytes come from the device (through the kernel's cache), so they are
//! untrusted: every length is checked and nothing here panics.

use std::collections::BTreeMap;

use usbredir::host::DeviceLayout;
use usbredir::{Endpoint, EndpointType, EpInfo, Interface, InterfaceInfo, MAX_INTERFACES};

/// Descriptor type: device.
pub const DT_DEVICE: u8 = 1;
/// Descriptor type: configuration.
pub const DT_CONFIGURATION: u8 = 2;
/// Descriptor type: interface.
pub const DT_INTERFACE: u8 = 4;
/// Descriptor type: endpoint.
pub const DT_ENDPOINT: u8 = 5;

/// Interface class: mass storage.
pub const CLASS_MASS_STORAGE: u8 = 0x08;
/// Interface class: hub (also a device class).
pub const CLASS_HUB: u8 = 0x09;
/// Mass-storage subclasses an optical drive uses: 0x02 (MMC-5/ATAPI),
/// 0x05 (SFF-8070i, old drives), 0x06 (SCSI transparent).
pub const OPTICAL_SUBCLASSES: [u8; 3] = [0x02, 0x05, 0x06];
/// Mass-storage protocol: Bulk-Only Transport.
pub const PROTOCOL_BOT: u8 = 0x50;

/// A descriptor that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid USB descriptor: {0}")]
pub struct DescriptorError(pub String);

fn err(msg: impl Into<String>) -> DescriptorError {
    DescriptorError(msg.into())
}

/// The device descriptor (18 bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeviceDescriptor {
    /// `bcdUSB`.
    pub usb_version: u16,
    /// `bDeviceClass`.
    pub class: u8,
    /// `bDeviceSubClass`.
    pub subclass: u8,
    /// `bDeviceProtocol`.
    pub protocol: u8,
    /// `bMaxPacketSize0`.
    pub max_packet_size0: u8,
    /// `idVendor`.
    pub vendor_id: u16,
    /// `idProduct`.
    pub product_id: u16,
    /// `bcdDevice`.
    pub device_version: u16,
    /// `iManufacturer`.
    pub manufacturer_index: u8,
    /// `iProduct`.
    pub product_index: u8,
    /// `iSerialNumber`.
    pub serial_index: u8,
    /// `bNumConfigurations`.
    pub num_configurations: u8,
}

fn le16(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

/// Parses a device descriptor.
pub fn parse_device_descriptor(b: &[u8]) -> Result<DeviceDescriptor, DescriptorError> {
    if b.len() < 18 || b[0] < 18 {
        return Err(err(format!(
            "device descriptor is {} bytes (bLength {}), expected 18",
            b.len(),
            b.first().copied().unwrap_or(0)
        )));
    }
    if b[1] != DT_DEVICE {
        return Err(err(format!(
            "descriptor type {} is not a device descriptor",
            b[1]
        )));
    }
    Ok(DeviceDescriptor {
        usb_version: le16(b, 2),
        class: b[4],
        subclass: b[5],
        protocol: b[6],
        max_packet_size0: b[7],
        vendor_id: le16(b, 8),
        product_id: le16(b, 10),
        device_version: le16(b, 12),
        manufacturer_index: b[14],
        product_index: b[15],
        serial_index: b[16],
        num_configurations: b[17],
    })
}

/// Transfer type of an endpoint (`bmAttributes` bits 1..0).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransferKind {
    /// Control.
    Control,
    /// Isochronous.
    Isochronous,
    /// Bulk.
    Bulk,
    /// Interrupt.
    Interrupt,
}

impl TransferKind {
    fn from_attributes(a: u8) -> TransferKind {
        match a & 0x03 {
            0 => TransferKind::Control,
            1 => TransferKind::Isochronous,
            2 => TransferKind::Bulk,
            _ => TransferKind::Interrupt,
        }
    }

    fn redir(self) -> EndpointType {
        match self {
            TransferKind::Control => EndpointType::Control,
            TransferKind::Isochronous => EndpointType::Iso,
            TransferKind::Bulk => EndpointType::Bulk,
            TransferKind::Interrupt => EndpointType::Interrupt,
        }
    }
}

/// One endpoint descriptor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EndpointDescriptor {
    /// `bEndpointAddress` (bit 7 = IN).
    pub address: u8,
    /// Transfer type.
    pub kind: TransferKind,
    /// `wMaxPacketSize` as sent (bits 12..11: extra transactions per microframe).
    pub max_packet_size_raw: u16,
    /// `bInterval`.
    pub interval: u8,
}

impl EndpointDescriptor {
    /// Bytes per (micro)frame: `wMaxPacketSize & 0x7ff`, times the
    /// transactions per microframe for high-bandwidth periodic endpoints.
    pub fn max_packet_size(&self) -> u16 {
        let base = self.max_packet_size_raw & 0x7ff;
        match self.kind {
            TransferKind::Isochronous | TransferKind::Interrupt => {
                base * (((self.max_packet_size_raw >> 11) & 0x3) + 1)
            }
            _ => base,
        }
    }

    /// True for IN (device-to-host) endpoints.
    pub fn is_in(&self) -> bool {
        self.address & 0x80 != 0
    }
}

/// One alternate setting of an interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AltSetting {
    /// `bInterfaceNumber`.
    pub number: u8,
    /// `bAlternateSetting`.
    pub alt: u8,
    /// `bInterfaceClass`.
    pub class: u8,
    /// `bInterfaceSubClass`.
    pub subclass: u8,
    /// `bInterfaceProtocol`.
    pub protocol: u8,
    /// Its endpoints.
    pub endpoints: Vec<EndpointDescriptor>,
}

impl AltSetting {
    /// True for a mass-storage Bulk-Only interface with an optical-drive
    /// subclass (0x02, 0x05 or 0x06).
    pub fn is_optical_bot(&self) -> bool {
        is_optical_bot(self.class, self.subclass, self.protocol)
    }

    /// The bulk IN and OUT endpoints (first of each), if both exist.
    pub fn bulk_pair(&self) -> Option<(EndpointDescriptor, EndpointDescriptor)> {
        let find = |is_in: bool| {
            self.endpoints
                .iter()
                .find(|e| e.kind == TransferKind::Bulk && e.is_in() == is_in)
                .copied()
        };
        Some((find(true)?, find(false)?))
    }
}

/// True for the interface triple of an optical Bulk-Only drive.
pub fn is_optical_bot(class: u8, subclass: u8, protocol: u8) -> bool {
    class == CLASS_MASS_STORAGE
        && OPTICAL_SUBCLASSES.contains(&subclass)
        && protocol == PROTOCOL_BOT
}

/// Mass-storage protocol: USB Attached SCSI.
pub const PROTOCOL_UAS: u8 = 0x62;

/// The whole configuration descriptor set `b` (read with the device's
/// `wTotalLength`; a host asking for less gets a prefix of the result)
/// without its UAS alternate settings: every
/// interface descriptor with a non-zero alternate setting and protocol 0x62 is
/// dropped with everything up to the next interface or interface association
/// descriptor (its endpoints, companions, Pipe Usage descriptors), and
/// `wTotalLength` is lowered by what was dropped.
///
/// The forwarder passes a real drive to the desktop as Bulk-Only: UAS needs
/// bulk streams, which `nusb` cannot forward, and a desktop that saw a UAS
/// setting would pick it. Bytes that do not parse as descriptors are returned
/// unchanged (the guest's own parser judges them), also a header whose `bLength`
/// runs past the bytes the device returned.
pub fn without_uas_alt_settings(b: &[u8]) -> Vec<u8> {
    if b.len() < 9 || b[0] < 9 || usize::from(b[0]) > b.len() || b[1] != DT_CONFIGURATION {
        return b.to_vec();
    }
    let mut out = b[..usize::from(b[0])].to_vec();
    let mut dropped = 0usize;
    let mut skipping = false;
    let mut at = usize::from(b[0]);
    while at < b.len() {
        let len = usize::from(b[at]);
        if len < 2 || at + len > b.len() {
            // Cut by wLength or malformed: keep the tail as it is.
            if !skipping {
                out.extend_from_slice(&b[at..]);
            } else {
                dropped += b.len() - at;
            }
            break;
        }
        let d = &b[at..at + len];
        const DT_INTERFACE_ASSOCIATION: u8 = 0x0B;
        if d[1] == DT_INTERFACE || d[1] == DT_INTERFACE_ASSOCIATION {
            skipping = d[1] == DT_INTERFACE
                && len >= 9
                && d[3] != 0
                && d[5] == CLASS_MASS_STORAGE
                && d[7] == PROTOCOL_UAS;
        }
        if skipping {
            dropped += len;
        } else {
            out.extend_from_slice(d);
        }
        at += len;
    }
    let total = usize::from(le16(b, 2)).saturating_sub(dropped);
    out[2..4].copy_from_slice(&u16::try_from(total).unwrap_or(u16::MAX).to_le_bytes());
    out
}

/// A configuration descriptor with its interfaces and endpoints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigDescriptor {
    /// `bConfigurationValue`.
    pub value: u8,
    /// Every alternate setting of every interface, in descriptor order.
    pub alt_settings: Vec<AltSetting>,
}

/// Parses a configuration descriptor with everything after it (up to
/// `wTotalLength`). Unknown descriptors (class-specific, SuperSpeed
/// companions, interface associations) are skipped.
pub fn parse_config_descriptor(b: &[u8]) -> Result<ConfigDescriptor, DescriptorError> {
    if b.len() < 9 || b[0] < 9 {
        return Err(err(format!(
            "configuration descriptor is {} bytes, expected at least 9",
            b.len()
        )));
    }
    if b[1] != DT_CONFIGURATION {
        return Err(err(format!(
            "descriptor type {} is not a configuration descriptor",
            b[1]
        )));
    }
    let total = usize::from(le16(b, 2));
    if total < 9 || total > b.len() {
        return Err(err(format!(
            "configuration wTotalLength {total} does not fit the {} bytes read",
            b.len()
        )));
    }
    let value = b[5];
    let body = &b[..total];
    let mut alt_settings: Vec<AltSetting> = Vec::new();
    let mut at = usize::from(b[0]);
    while at < body.len() {
        let rest = &body[at..];
        if rest.len() < 2 {
            return Err(err(format!(
                "{} stray bytes at the end of the configuration",
                rest.len()
            )));
        }
        let len = usize::from(rest[0]);
        if len < 2 || len > rest.len() {
            return Err(err(format!(
                "descriptor at offset {at} has bLength {len} with {} bytes left",
                rest.len()
            )));
        }
        let d = &rest[..len];
        match d[1] {
            DT_INTERFACE => {
                if len < 9 {
                    return Err(err(format!("interface descriptor of {len} bytes")));
                }
                let (number, alt) = (d[2], d[3]);
                if alt_settings
                    .iter()
                    .any(|a| a.number == number && a.alt == alt)
                {
                    return Err(err(format!(
                        "interface {number} alternate setting {alt} is described twice"
                    )));
                }
                alt_settings.push(AltSetting {
                    number,
                    alt,
                    class: d[5],
                    subclass: d[6],
                    protocol: d[7],
                    endpoints: Vec::new(),
                });
            }
            DT_ENDPOINT => {
                if len < 7 {
                    return Err(err(format!("endpoint descriptor of {len} bytes")));
                }
                let Some(current) = alt_settings.last_mut() else {
                    return Err(err("endpoint descriptor before any interface"));
                };
                let address = d[2];
                if address & 0x0f == 0 || address & 0x70 != 0 {
                    return Err(err(format!("invalid endpoint address {address:#04x}")));
                }
                if current.endpoints.iter().any(|e| e.address == address) {
                    return Err(err(format!(
                        "endpoint {address:#04x} appears twice in interface {}",
                        current.number
                    )));
                }
                current.endpoints.push(EndpointDescriptor {
                    address,
                    kind: TransferKind::from_attributes(d[3]),
                    max_packet_size_raw: le16(d, 4),
                    interval: d[6],
                });
            }
            _ => {}
        }
        at += len;
    }
    let numbers: std::collections::BTreeSet<u8> = alt_settings.iter().map(|a| a.number).collect();
    if numbers.len() > MAX_INTERFACES {
        return Err(err(format!(
            "{} interfaces; usbredir allows at most {MAX_INTERFACES}",
            numbers.len()
        )));
    }
    Ok(ConfigDescriptor {
        value,
        alt_settings,
    })
}

impl ConfigDescriptor {
    /// The interface numbers, ascending.
    pub fn interface_numbers(&self) -> Vec<u8> {
        let set: std::collections::BTreeSet<u8> =
            self.alt_settings.iter().map(|a| a.number).collect();
        set.into_iter().collect()
    }

    /// The alternate setting `alt` of interface `number`.
    pub fn alt_setting(&self, number: u8, alt: u8) -> Option<&AltSetting> {
        self.alt_settings
            .iter()
            .find(|a| a.number == number && a.alt == alt)
    }

    /// The active alternate setting of each interface: `alts[number]`, or
    /// the first one described (normally 0) when absent or unknown.
    pub fn active(&self, alts: &BTreeMap<u8, u8>) -> Vec<&AltSetting> {
        self.interface_numbers()
            .into_iter()
            .filter_map(|n| {
                alts.get(&n)
                    .and_then(|&alt| self.alt_setting(n, alt))
                    .or_else(|| self.alt_settings.iter().find(|a| a.number == n))
            })
            .collect()
    }

    /// What usbredir announces for the active alternate settings.
    /// Endpoint 0 is control (max packet size `ep0_max_packet`); an endpoint
    /// address claimed by two interfaces keeps the first.
    pub fn layout(&self, alts: &BTreeMap<u8, u8>, ep0_max_packet: u8) -> DeviceLayout {
        let mut endpoints = EpInfo::new();
        for slot in [0x00u8, 0x80] {
            endpoints.set(
                slot,
                Endpoint {
                    ep_type: EndpointType::Control,
                    max_packet_size: u16::from(ep0_max_packet),
                    ..Endpoint::INVALID
                },
            );
        }
        let mut interfaces = InterfaceInfo::default();
        for a in self.active(alts) {
            interfaces.interfaces.push(Interface {
                number: a.number,
                class: a.class,
                subclass: a.subclass,
                protocol: a.protocol,
            });
            for e in &a.endpoints {
                if endpoints.get(e.address).ep_type != EndpointType::Invalid {
                    continue;
                }
                endpoints.set(
                    e.address,
                    Endpoint {
                        ep_type: e.kind.redir(),
                        interval: e.interval,
                        interface: a.number,
                        max_packet_size: e.max_packet_size(),
                        max_streams: 0,
                    },
                );
            }
        }
        DeviceLayout {
            interfaces,
            endpoints,
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Sets `wTotalLength` of a configuration descriptor set to its length.
    fn with_total_length(mut c: Vec<u8>) -> Vec<u8> {
        let total = c.len() as u16;
        c[2..4].copy_from_slice(&total.to_le_bytes());
        c
    }

    /// A typical USB 2 optical drive: one BOT interface (08/06/50) with
    /// bulk 0x81 IN and 0x02 OUT, maxp 512.
    pub(crate) fn drive_config() -> Vec<u8> {
        let mut c = vec![9, 2, 0, 0, 1, 1, 0, 0x80, 250];
        c.extend([9, 4, 0, 0, 2, 0x08, 0x06, 0x50, 0]);
        c.extend([7, 5, 0x81, 0x02, 0x00, 0x02, 0]);
        c.extend([7, 5, 0x02, 0x02, 0x00, 0x02, 0]);
        with_total_length(c)
    }

    pub(crate) fn device_desc(class: u8) -> Vec<u8> {
        vec![
            18, 1, 0x00, 0x02, class, 0, 0, 64, 0x8d, 0x0e, 0x87, 0x18, 0x00, 0x01, 1, 2, 3, 1,
        ]
    }

    #[test]
    fn parses_a_drive() {
        let d = parse_device_descriptor(&device_desc(0)).unwrap();
        assert_eq!(
            (d.vendor_id, d.product_id, d.max_packet_size0),
            (0x0e8d, 0x1887, 64)
        );
        assert_eq!(
            (d.manufacturer_index, d.product_index, d.serial_index),
            (1, 2, 3)
        );

        let c = parse_config_descriptor(&drive_config()).unwrap();
        assert_eq!(c.value, 1);
        assert_eq!(c.alt_settings.len(), 1);
        let a = &c.alt_settings[0];
        assert!(a.is_optical_bot());
        let (i, o) = a.bulk_pair().unwrap();
        assert_eq!(
            (i.address, o.address, i.max_packet_size()),
            (0x81, 0x02, 512)
        );

        let l = c.layout(&BTreeMap::new(), 64);
        assert_eq!(l.interfaces.interfaces.len(), 1);
        assert_eq!(l.interfaces.interfaces[0].class, 0x08);
        assert_eq!(l.endpoints.get(0x81).ep_type, EndpointType::Bulk);
        assert_eq!(l.endpoints.get(0x02).ep_type, EndpointType::Bulk);
        assert_eq!(l.endpoints.get(0x02).max_packet_size, 512);
        assert_eq!(l.endpoints.get(0x00).ep_type, EndpointType::Control);
        assert_eq!(l.endpoints.get(0x80).ep_type, EndpointType::Control);
        assert_eq!(l.endpoints.get(0x83).ep_type, EndpointType::Invalid);
    }

    #[test]
    fn uas_alt_settings_are_hidden() {
        // alt 0 BOT with SuperSpeed companions, alt 1 UAS with companions and
        // Pipe Usage descriptors, then a second (vendor) interface.
        let mut c = vec![9, 2, 0, 0, 2, 1, 0, 0x80, 250];
        let bot = [
            9, 4, 0, 0, 2, 0x08, 0x06, 0x50, 0, 7, 5, 0x81, 2, 0, 4, 0, 6, 0x30, 0, 0, 0, 0, 7, 5,
            0x02, 2, 0, 4, 0, 6, 0x30, 0, 0, 0, 0,
        ];
        c.extend(bot);
        c.extend([9, 4, 0, 1, 4, 0x08, 0x06, 0x62, 0]);
        for (ep, pipe) in [(0x04u8, 1u8), (0x83, 2), (0x81, 3), (0x02, 4)] {
            c.extend([7, 5, ep, 2, 0, 4, 0, 6, 0x30, 0, 5, 0, 0, 4, 0x24, pipe, 0]);
        }
        let vendor = [9, 4, 1, 0, 0, 0xFF, 0, 0, 0];
        c.extend(vendor);
        let c = with_total_length(c);

        let s = without_uas_alt_settings(&c);
        let mut want = vec![9, 2, 0, 0, 2, 1, 0, 0x80, 250];
        want.extend(bot);
        want.extend(vendor);
        let want = with_total_length(want);
        assert_eq!(s, want);
        let cfg = parse_config_descriptor(&s).unwrap();
        assert!(cfg.alt_settings.iter().all(|a| a.protocol != PROTOCOL_UAS));

        // Bytes cut short (the forwarder always reads the whole set, so this
        // is only a malformed device): nothing past the end is invented.
        assert!(without_uas_alt_settings(&c[..60]).len() <= 60);
        // Without a UAS setting, or not a configuration: unchanged.
        assert_eq!(without_uas_alt_settings(&want), want);
        assert_eq!(without_uas_alt_settings(&[18, 1, 0, 2]), vec![18, 1, 0, 2]);
        assert_eq!(without_uas_alt_settings(&[]), Vec::<u8>::new());
    }

    #[test]
    fn alt_settings_select_the_announced_interface() {
        // Interface 0: alt 0 BOT (0x81/0x02), alt 1 UAS (08/06/62) with 4
        // endpoints, SuperSpeed companions in between (type 0x30, skipped).
        let mut c = vec![9, 2, 0, 0, 1, 1, 0, 0x80, 250];
        c.extend([9, 4, 0, 0, 2, 0x08, 0x06, 0x50, 0]);
        c.extend([7, 5, 0x81, 0x02, 0x00, 0x04, 0]);
        c.extend([6, 0x30, 0, 0, 0, 0]);
        c.extend([7, 5, 0x02, 0x02, 0x00, 0x04, 0]);
        c.extend([6, 0x30, 0, 0, 0, 0]);
        c.extend([9, 4, 0, 1, 4, 0x08, 0x06, 0x62, 0]);
        c.extend([7, 5, 0x83, 0x02, 0x00, 0x04, 0]);
        c.extend([7, 5, 0x04, 0x02, 0x00, 0x04, 0]);
        c.extend([7, 5, 0x85, 0x02, 0x00, 0x04, 0]);
        c.extend([7, 5, 0x06, 0x02, 0x00, 0x04, 0]);
        let cfg = parse_config_descriptor(&with_total_length(c)).unwrap();
        assert_eq!(cfg.interface_numbers(), vec![0]);

        let l0 = cfg.layout(&BTreeMap::new(), 9);
        assert_eq!(l0.interfaces.interfaces[0].protocol, 0x50);
        assert_eq!(l0.endpoints.get(0x81).max_packet_size, 1024);
        assert_eq!(l0.endpoints.get(0x83).ep_type, EndpointType::Invalid);

        let l1 = cfg.layout(&BTreeMap::from([(0, 1)]), 9);
        assert_eq!(l1.interfaces.interfaces[0].protocol, 0x62);
        assert_eq!(l1.endpoints.get(0x81).ep_type, EndpointType::Invalid);
        assert_eq!(l1.endpoints.get(0x85).ep_type, EndpointType::Bulk);

        // An unknown alt falls back to the first described.
        let l = cfg.layout(&BTreeMap::from([(0, 7)]), 9);
        assert_eq!(l.interfaces.interfaces[0].protocol, 0x50);
    }

    #[test]
    fn high_bandwidth_interrupt_max_packet() {
        let e = EndpointDescriptor {
            address: 0x83,
            kind: TransferKind::Interrupt,
            max_packet_size_raw: 0x1400, // 2 extra transactions, 1024 bytes
            interval: 4,
        };
        assert_eq!(e.max_packet_size(), 3 * 1024);
        let b = EndpointDescriptor {
            kind: TransferKind::Bulk,
            max_packet_size_raw: 0x0200,
            ..e
        };
        assert_eq!(b.max_packet_size(), 512);
    }

    #[test]
    fn rejects_malformed_descriptors() {
        assert!(parse_device_descriptor(&[18, 1, 0]).is_err());
        let mut d = device_desc(0);
        d[1] = 2;
        assert!(parse_device_descriptor(&d).is_err());

        let good = drive_config();
        let mut cases: Vec<(Vec<u8>, &str)> = Vec::new();
        cases.push((good[..5].to_vec(), "short"));
        // One byte of the good set changed: (offset, value, what).
        for (at, value, what) in [
            (2, 200, "total beyond data"),
            (9, 0, "zero bLength loops"),
            (9, 60, "bLength past the end"),
            (20, 0x80, "endpoint 0 address"),
            (27, 0x81, "duplicate endpoint"),
        ] {
            let mut c = good.clone();
            c[at] = value;
            cases.push((c, what));
        }
        let mut c = vec![9, 2, 16, 0, 1, 1, 0, 0x80, 250];
        c.extend([7, 5, 0x81, 0x02, 0x00, 0x02, 0]);
        cases.push((c, "endpoint before interface"));
        let mut c = vec![9, 2, 0, 0, 1, 1, 0, 0x80, 250];
        c.extend([9, 4, 0, 0, 0, 8, 6, 0x50, 0]);
        c.extend([9, 4, 0, 0, 0, 8, 6, 0x50, 0]);
        cases.push((with_total_length(c), "duplicate interface"));
        let mut c = vec![9, 2, 0, 0, 1, 1, 0, 0x80, 250];
        for n in 0..33u8 {
            c.extend([9, 4, n, 0, 0, 8, 6, 0x50, 0]);
        }
        cases.push((with_total_length(c), "33 interfaces"));
        for (bytes, what) in cases {
            assert!(parse_config_descriptor(&bytes).is_err(), "{what}");
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        // A cheap deterministic fuzz: xorshift bytes, many lengths.
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for n in 0..4000usize {
            let len = n % 96;
            let mut b = Vec::with_capacity(len);
            for _ in 0..len {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                b.push(x as u8);
            }
            if len > 4 && n % 2 == 0 {
                b[0] = 9;
                b[1] = 2;
                b[2] = len as u8;
                b[3] = 0;
            }
            if let Ok(c) = parse_config_descriptor(&b) {
                let _ = c.layout(&BTreeMap::new(), 64);
            }
            let _ = parse_device_descriptor(&b);
            // What the forwarder runs on every configuration GET_DESCRIPTOR answer of
            // the device: never longer than what it was given.
            assert!(without_uas_alt_settings(&b).len() <= b.len());
        }
    }

    #[test]
    fn a_header_longer_than_the_answer_is_passed_on_unchanged() {
        // bLength 32 in a 20-byte answer (review D15: this panicked).
        let mut b = vec![32, 2, 20, 0, 1, 1, 0, 0x80, 250];
        b.extend([9, 4, 0, 0, 2, 8, 6, 0x50, 0, 0, 0]);
        assert_eq!(without_uas_alt_settings(&b), b);
        // Every bLength from 9 to 255 over every length up to 40 bytes.
        for len in 9..=40usize {
            for blength in 9..=255u8 {
                let mut b = vec![0u8; len];
                b[0] = blength;
                b[1] = 2;
                b[2] = len as u8;
                let out = without_uas_alt_settings(&b);
                assert!(out.len() <= len, "bLength {blength}, {len} bytes");
            }
        }
    }

    #[test]
    fn optical_triples() {
        assert!(is_optical_bot(0x08, 0x02, 0x50));
        assert!(is_optical_bot(0x08, 0x05, 0x50));
        assert!(is_optical_bot(0x08, 0x06, 0x50));
        assert!(!is_optical_bot(0x08, 0x06, 0x62));
        assert!(!is_optical_bot(0x08, 0x04, 0x50));
        assert!(!is_optical_bot(0x03, 0x01, 0x01));
    }
}
