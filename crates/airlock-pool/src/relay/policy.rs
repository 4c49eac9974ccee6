//! The mass-storage-only policy of the USB relay, as pure decisions without I/O.
//!
//! A terminal may forward a CD/DVD drive and nothing else. A compromised terminal speaks
//! usbredir as it likes, so the relay checks everything a desktop's USB stack would use
//! to decide what the device is:
//! - `interface_info`: every interface is mass storage, Bulk-Only (class 0x08, subclass
//!   0x02 ATAPI / 0x05 SFF-8070i / 0x06 SCSI, protocol 0x50) or USB Attached SCSI
//!   (08:06:62) ([`check_interfaces`]);
//! - `ep_info`: endpoint 0 is the only control endpoint, every other endpoint is bulk; no
//!   interrupt or isochronous endpoint ([`check_endpoints`]);
//! - `device_connect`: the device class is 0x00 (per interface) or 0x08
//!   ([`check_device_class`]);
//! - the descriptors the terminal returns to the desktop's standard `GET_DESCRIPTOR`
//!   requests ([`descriptor_request`] recognises them, [`check_descriptor_reply`] checks
//!   the answer): the device descriptor's class, and in every configuration
//!   (`CONFIGURATION`, `OTHER_SPEED_CONFIGURATION`) every interface as above and every
//!   endpoint bulk. Malformed descriptors (a length below 2, past the end of what the
//!   device said it returns, a configuration inside a configuration) are refused.
//!
//! Everything here works on bytes and usbredir values only, never panics on any input,
//! and is fuzzed (`tests/usb_policy_fuzz.rs`).
use usbredir::{ControlPacket, EndpointType, EpInfo, Status};

/// Why the relay refuses a stream.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("device has no interfaces")]
    NoInterfaces,
    #[error("interface {number} is class {class:02x}:{subclass:02x}:{protocol:02x}; only mass storage with Bulk-Only (08:02/05/06:50) or UAS (08:06:62) may be forwarded")]
    Interface {
        number: u8,
        class: u8,
        subclass: u8,
        protocol: u8,
    },
    #[error("device class 0x{0:02x} is not mass storage")]
    DeviceClass(u8),
    #[error("endpoint 0x{address:02x} is {kind}; a storage device has only its control endpoint 0 and bulk endpoints")]
    Endpoint { address: u8, kind: &'static str },
    #[error("device announced without its interfaces and endpoints")]
    Unannounced,
    #[error("{0} packet: a storage device has no interrupt or isochronous endpoints")]
    Traffic(&'static str),
    #[error(
        "usbredir packets before the hellos (the terminal's, then the desktop's to the terminal)"
    )]
    BeforeHello,
    #[error("the {what} descriptor is malformed: {why}")]
    Malformed { what: &'static str, why: String },
    #[error(
        "descriptor type 0x{kind:02x} in the {what} descriptor is not allowed for a storage device"
    )]
    DescriptorType { what: &'static str, kind: u8 },
    #[error("descriptor reply of {got} bytes to a request for {requested}")]
    ReplyTooLong { requested: u16, got: usize },
}

/// The standard descriptors whose answers the relay checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DescriptorKind {
    /// `GET_DESCRIPTOR(DEVICE)`.
    Device,
    /// `GET_DESCRIPTOR(CONFIGURATION)` or `GET_DESCRIPTOR(OTHER_SPEED_CONFIGURATION)`.
    Configuration,
}

impl DescriptorKind {
    fn name(self) -> &'static str {
        match self {
            DescriptorKind::Device => "device",
            DescriptorKind::Configuration => "configuration",
        }
    }
}

/// A descriptor request of the desktop whose answer is still to come.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DescriptorRequest {
    /// What was asked for.
    pub kind: DescriptorKind,
    /// `wLength`: the most the answer may carry.
    pub length: u16,
}

/// USB descriptor types (USB 2.0 table 9-5, USB 3.2 table 9-6).
mod dt {
    pub const DEVICE: u8 = 1;
    pub const CONFIGURATION: u8 = 2;
    pub const INTERFACE: u8 = 4;
    pub const ENDPOINT: u8 = 5;
    pub const OTHER_SPEED_CONFIGURATION: u8 = 7;
    pub const OTG: u8 = 9;
    /// Class-specific interface descriptor (UAS: the pipe usage descriptor).
    pub const CS_INTERFACE: u8 = 0x24;
    /// Class-specific endpoint descriptor.
    pub const CS_ENDPOINT: u8 = 0x25;
    pub const SS_ENDPOINT_COMPANION: u8 = 0x30;
}

const GET_DESCRIPTOR: u8 = 6;

/// The interfaces (class, subclass, protocol) a forwarded device may have: Bulk-Only
/// (0x50) with the ATAPI/SFF-8070i/SCSI command sets, or USB Attached SCSI (0x62, SCSI
/// only). Both carry SCSI commands to the drive and nothing else (no HID, network or
/// audio function).
pub const STORAGE_INTERFACES: [(u8, u8, u8); 4] = [
    (0x08, 0x02, 0x50),
    (0x08, 0x05, 0x50),
    (0x08, 0x06, 0x50),
    (0x08, 0x06, 0x62),
];

/// Whether `(class, subclass, protocol)` is a mass-storage interface that may be forwarded.
pub fn storage_interface(class: u8, subclass: u8, protocol: u8) -> bool {
    STORAGE_INTERFACES.contains(&(class, subclass, protocol))
}

/// The `interface_info` policy: at least one interface, every one mass storage (see
/// [`storage_interface`]). Checked on every `interface_info`, so also after an alternate
/// setting or the configuration changes.
pub fn check_interfaces(list: &[(u8, u8, u8)]) -> Result<(), Refusal> {
    if list.is_empty() {
        return Err(Refusal::NoInterfaces);
    }
    for (n, &(class, subclass, protocol)) in list.iter().enumerate() {
        if !storage_interface(class, subclass, protocol) {
            return Err(Refusal::Interface {
                number: u8::try_from(n).unwrap_or(u8::MAX),
                class,
                subclass,
                protocol,
            });
        }
    }
    Ok(())
}

/// The `device_connect` policy: the class is per interface (0x00) or mass storage.
pub fn check_device_class(class: u8) -> Result<(), Refusal> {
    if class == 0x00 || class == 0x08 {
        Ok(())
    } else {
        Err(Refusal::DeviceClass(class))
    }
}

fn type_name(t: EndpointType) -> &'static str {
    match t {
        EndpointType::Control => "a control endpoint",
        EndpointType::Iso => "isochronous",
        EndpointType::Bulk => "bulk",
        EndpointType::Interrupt => "interrupt",
        EndpointType::Invalid => "absent",
    }
}

/// The `ep_info` policy: endpoint 0 (both slots) is control or absent, every other
/// endpoint bulk or absent.
pub fn check_endpoints(info: &EpInfo) -> Result<(), Refusal> {
    for (slot, ep) in info.endpoints.iter().enumerate() {
        let address = usbredir::endpoint_address(slot);
        let ok = match ep.ep_type {
            EndpointType::Invalid | EndpointType::Bulk => address & 0x0f != 0,
            EndpointType::Control => address & 0x0f == 0,
            EndpointType::Iso | EndpointType::Interrupt => false,
        };
        if !ok && ep.ep_type != EndpointType::Invalid {
            return Err(Refusal::Endpoint {
                address,
                kind: type_name(ep.ep_type),
            });
        }
    }
    Ok(())
}

/// Whether a control packet of the desktop is a standard `GET_DESCRIPTOR` of the device
/// whose answer the relay must check.
pub fn descriptor_request(p: &ControlPacket) -> Option<DescriptorRequest> {
    // Standard, to the device, device-to-host; wValue's high byte is the type.
    if p.request_type != 0x80 || p.request != GET_DESCRIPTOR {
        return None;
    }
    let kind = match (p.value >> 8) as u8 {
        dt::DEVICE => DescriptorKind::Device,
        dt::CONFIGURATION | dt::OTHER_SPEED_CONFIGURATION => DescriptorKind::Configuration,
        _ => return None,
    };
    Some(DescriptorRequest {
        kind,
        length: p.length,
    })
}

/// Checks the terminal's answer to a descriptor request: what the desktop will read
/// must describe a storage device. The answer may be cut by the request's `wLength`
/// (the desktop then sees, and is checked on, only that part); otherwise it must be
/// whole.
pub fn check_descriptor_reply(
    req: DescriptorRequest,
    status: Status,
    data: &[u8],
) -> Result<(), Refusal> {
    if data.len() > usize::from(req.length) {
        return Err(Refusal::ReplyTooLong {
            requested: req.length,
            got: data.len(),
        });
    }
    if data.is_empty() {
        // A stall or an empty answer: nothing the desktop could read.
        return Ok(());
    }
    // The desktop asked for no more than this: a descriptor may end past it.
    let cut_by_request = data.len() == usize::from(req.length);
    match req.kind {
        DescriptorKind::Device => check_device_descriptor(data),
        DescriptorKind::Configuration => {
            check_configuration(data, cut_by_request, status == Status::Success)
        }
    }
}

fn malformed(what: DescriptorKind, why: impl Into<String>) -> Refusal {
    Refusal::Malformed {
        what: what.name(),
        why: why.into(),
    }
}

/// The device descriptor (18 bytes; the desktop may read only the first 8).
fn check_device_descriptor(d: &[u8]) -> Result<(), Refusal> {
    let what = DescriptorKind::Device;
    if let Some(&len) = d.first() {
        if len != 18 {
            return Err(malformed(what, format!("bLength {len}, not 18")));
        }
    }
    if let Some(&t) = d.get(1) {
        if t != dt::DEVICE {
            return Err(malformed(what, format!("type 0x{t:02x}, not a device")));
        }
    }
    if let Some(&class) = d.get(4) {
        check_device_class(class)?;
    }
    Ok(())
}

/// A configuration: its header, then interfaces with their endpoints and the few extra
/// descriptors a storage device has.
fn check_configuration(d: &[u8], cut_by_request: bool, success: bool) -> Result<(), Refusal> {
    let what = DescriptorKind::Configuration;
    let mut off = 0usize;
    let mut interfaces = 0usize;
    let mut in_interface = false;
    let mut whole = true;
    // Each step advances by at least 2 bytes (bLength >= 2), so this ends.
    while let Some(rest) = d.get(off..).filter(|r| !r.is_empty()) {
        let len = usize::from(rest.first().copied().unwrap_or(0));
        if rest.len() < 2 {
            // Only bLength is visible: the rest was cut by the request.
            if len < 2 {
                return Err(malformed(
                    what,
                    format!("descriptor at {off} has bLength {len}"),
                ));
            }
            whole = false;
            break;
        }
        if len < 2 {
            return Err(malformed(
                what,
                format!("descriptor at {off} has bLength {len}"),
            ));
        }
        let kind = rest.get(1).copied().unwrap_or(0);
        let desc = rest.get(..len.min(rest.len())).unwrap_or(rest);
        if len > rest.len() {
            // A descriptor that runs past the answer: only when the desktop asked for less
            // (it sees only what is here, which is checked below).
            if !cut_by_request && success {
                return Err(malformed(
                    what,
                    format!(
                        "descriptor at {off} of {len} bytes runs past the {} bytes returned",
                        d.len()
                    ),
                ));
            }
            whole = false;
        }
        let at = |i: usize| desc.get(i).copied();
        match kind {
            dt::CONFIGURATION | dt::OTHER_SPEED_CONFIGURATION if off == 0 => {
                if len < 9 {
                    return Err(malformed(what, format!("configuration bLength {len}")));
                }
                if let (Some(lo), Some(hi)) = (at(2), at(3)) {
                    let total = usize::from(u16::from_le_bytes([lo, hi]));
                    if total < len {
                        return Err(malformed(what, format!("wTotalLength {total} < {len}")));
                    }
                    if total > d.len() {
                        whole = false;
                    }
                    if d.len() > total {
                        return Err(malformed(
                            what,
                            format!("{} bytes returned past wTotalLength {total}", d.len()),
                        ));
                    }
                }
            }
            _ if off == 0 => {
                return Err(malformed(
                    what,
                    format!("starts with type 0x{kind:02x}, not a configuration"),
                ));
            }
            dt::CONFIGURATION | dt::OTHER_SPEED_CONFIGURATION => {
                return Err(malformed(
                    what,
                    format!("a configuration inside it at {off}"),
                ));
            }
            dt::INTERFACE => {
                if len < 9 {
                    return Err(malformed(what, format!("interface bLength {len}")));
                }
                // Of an interface cut by the request, what shows must fit a storage one.
                let (class, subclass, protocol) = (at(5), at(6), at(7));
                let fits = |want: Option<u8>, is: u8| want.is_none_or(|w| w == is);
                let storage = STORAGE_INTERFACES
                    .iter()
                    .any(|&(c, s, p)| fits(class, c) && fits(subclass, s) && fits(protocol, p));
                if !storage {
                    return Err(Refusal::Interface {
                        number: at(2).unwrap_or(0),
                        class: class.unwrap_or(0),
                        subclass: subclass.unwrap_or(0),
                        protocol: protocol.unwrap_or(0),
                    });
                }
                interfaces += 1;
                in_interface = true;
            }
            dt::ENDPOINT => {
                if len < 7 {
                    return Err(malformed(what, format!("endpoint bLength {len}")));
                }
                if !in_interface {
                    return Err(malformed(what, "an endpoint before any interface"));
                }
                if let Some(address) = at(2) {
                    if address & 0x0f == 0 {
                        return Err(malformed(what, "an endpoint descriptor for endpoint 0"));
                    }
                    if let Some(attributes) = at(3) {
                        let t = match attributes & 0x03 {
                            0 => EndpointType::Control,
                            1 => EndpointType::Iso,
                            2 => EndpointType::Bulk,
                            _ => EndpointType::Interrupt,
                        };
                        if t != EndpointType::Bulk {
                            return Err(Refusal::Endpoint {
                                address,
                                kind: type_name(t),
                            });
                        }
                    }
                }
            }
            dt::SS_ENDPOINT_COMPANION | dt::CS_INTERFACE | dt::CS_ENDPOINT | dt::OTG => {
                if !in_interface && kind != dt::OTG {
                    return Err(malformed(
                        what,
                        format!("type 0x{kind:02x} before any interface"),
                    ));
                }
            }
            other => {
                return Err(Refusal::DescriptorType {
                    what: what.name(),
                    kind: other,
                })
            }
        }
        off = off.saturating_add(len);
    }
    if whole && success && interfaces == 0 {
        return Err(malformed(what, "no interface"));
    }
    Ok(())
}

#[cfg(test)]
mod tests;
