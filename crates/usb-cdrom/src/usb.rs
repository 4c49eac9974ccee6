//! USB-level vocabulary shared by the device model and its caller: setup packets,
//! transfer status, completions, and the endpoint/interface facts a transport (such as
//! a usbredir host session) announces to its peer.

/// How a transfer ended. The caller maps this onto its own wire status (for usbredir:
/// `Success` 0, `Cancelled` 1, `Invalid` 2, `Stall` 4, `Babble` 6).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TransferStatus {
    /// The transfer completed (possibly short; look at the length).
    Success,
    /// The endpoint answered STALL (halted endpoint or refused control request).
    Stall,
    /// The request was cancelled before it completed.
    Cancelled,
    /// The device had a packet larger than the space left in the request.
    Babble,
    /// The request was malformed for this device (unknown endpoint, wrong direction).
    Invalid,
}

/// A USB SETUP packet (the 8 bytes that start every control transfer).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SetupPacket {
    /// `bmRequestType`: bit 7 direction (1 = device-to-host), bits 6..5 type, 4..0 recipient.
    pub request_type: u8,
    /// `bRequest`.
    pub request: u8,
    /// `wValue`.
    pub value: u16,
    /// `wIndex`.
    pub index: u16,
    /// `wLength`: bytes of the data stage (the maximum for device-to-host requests).
    pub length: u16,
}

impl SetupPacket {
    /// Builds a setup packet from its fields.
    pub const fn new(request_type: u8, request: u8, value: u16, index: u16, length: u16) -> Self {
        Self {
            request_type,
            request,
            value,
            index,
            length,
        }
    }

    /// Decodes the 8 wire bytes (little-endian words).
    pub const fn from_bytes(b: [u8; 8]) -> Self {
        Self {
            request_type: b[0],
            request: b[1],
            value: u16::from_le_bytes([b[2], b[3]]),
            index: u16::from_le_bytes([b[4], b[5]]),
            length: u16::from_le_bytes([b[6], b[7]]),
        }
    }

    /// Encodes the 8 wire bytes.
    pub const fn to_bytes(&self) -> [u8; 8] {
        let v = self.value.to_le_bytes();
        let i = self.index.to_le_bytes();
        let l = self.length.to_le_bytes();
        [
            self.request_type,
            self.request,
            v[0],
            v[1],
            i[0],
            i[1],
            l[0],
            l[1],
        ]
    }

    /// True for device-to-host (IN) requests.
    pub const fn is_device_to_host(&self) -> bool {
        self.request_type & 0x80 != 0
    }
}

/// The result of a control transfer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControlResult {
    /// `Success` or `Stall`.
    pub status: TransferStatus,
    /// For device-to-host requests, the data stage (never longer than `wLength`);
    /// empty otherwise.
    pub data: Vec<u8>,
}

impl ControlResult {
    /// A successful request with `data`, cut to `max_len`.
    pub(crate) fn ok(mut data: Vec<u8>, max_len: u16) -> Self {
        data.truncate(usize::from(max_len));
        Self {
            status: TransferStatus::Success,
            data,
        }
    }

    /// A successful request without a data stage.
    pub(crate) fn ack() -> Self {
        Self {
            status: TransferStatus::Success,
            data: Vec::new(),
        }
    }

    /// A refused request (protocol STALL on endpoint 0).
    pub(crate) fn stall() -> Self {
        Self {
            status: TransferStatus::Stall,
            data: Vec::new(),
        }
    }

    /// True when the request succeeded.
    pub fn is_ok(&self) -> bool {
        self.status == TransferStatus::Success
    }
}

/// A finished bulk request, handed back in submission order per endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Completion {
    /// The id the caller gave when submitting.
    pub id: u64,
    /// The endpoint address the request was submitted on (0x81 or 0x02).
    pub endpoint: u8,
    /// How it ended.
    pub status: TransferStatus,
    /// IN requests: the bytes transferred (may accompany a `Stall`, as a host controller
    /// reports data received before the stall). OUT requests: empty.
    pub data: Vec<u8>,
    /// Bytes transferred: `data.len()` for IN, bytes accepted for OUT.
    pub length: u32,
}

/// USB transfer types, numbered as in endpoint descriptors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TransferType {
    /// Control.
    Control = 0,
    /// Isochronous.
    Isochronous = 1,
    /// Bulk.
    Bulk = 2,
    /// Interrupt.
    Interrupt = 3,
}

/// One endpoint of the device, as a transport announces it (usbredir `ep_info`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct EndpointInfo {
    /// Endpoint address, bit 7 set for IN.
    pub address: u8,
    /// Transfer type.
    pub transfer_type: TransferType,
    /// `wMaxPacketSize` at the device's speed (in bytes).
    pub max_packet_size: u16,
    /// `bInterval`.
    pub interval: u8,
    /// Interface the endpoint belongs to.
    pub interface: u8,
    /// Bulk streams the endpoint supports (0: none; UAS status and data pipes: 32).
    pub max_streams: u32,
}

/// One interface of the device, as a transport announces it (usbredir `interface_info`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct InterfaceInfo {
    /// `bInterfaceNumber`.
    pub number: u8,
    /// `bInterfaceClass` (0x08 mass storage).
    pub class: u8,
    /// `bInterfaceSubClass` (0x06 SCSI transparent command set).
    pub subclass: u8,
    /// `bInterfaceProtocol` (0x50 Bulk-Only Transport).
    pub protocol: u8,
}

/// Device speed, numbered as usbredir's `device_connect.speed`.
///
/// The emulated drive presents itself at one speed for the whole session, with the
/// descriptors of that speed (see [`crate::descriptors`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Speed {
    /// Full speed (12 Mbit/s): USB 2.0 descriptors, 64-byte bulk packets.
    Full = 1,
    /// High speed (480 Mbit/s): USB 2.0 descriptors, 512-byte bulk packets. For ports
    /// that cannot take a SuperSpeed device (EHCI, or a USB 2 hub).
    High = 2,
    /// SuperSpeed (5 Gbit/s): USB 3.0 descriptors (BOS, endpoint companions),
    /// 1024-byte bulk packets. Needs a SuperSpeed port (QEMU `qemu-xhci`).
    Super = 3,
}

impl Speed {
    /// `wMaxPacketSize` of a bulk endpoint at this speed.
    pub const fn bulk_max_packet(self) -> u16 {
        match self {
            Speed::Full => 64,
            Speed::High => 512,
            Speed::Super => 1024,
        }
    }

    /// Maximum packet size of endpoint 0 in bytes (at SuperSpeed `bMaxPacketSize0` is
    /// the exponent 9, meaning 512).
    pub const fn ep0_max_packet(self) -> u16 {
        match self {
            Speed::Full | Speed::High => 64,
            Speed::Super => 512,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn setup_round_trip() {
        let bytes = [0xA1, 0xFE, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00];
        let s = SetupPacket::from_bytes(bytes);
        assert_eq!(s, SetupPacket::new(0xA1, 0xFE, 0, 0, 1));
        assert!(s.is_device_to_host());
        assert_eq!(s.to_bytes(), bytes);
        let s = SetupPacket::new(0x02, 0x01, 0, 0x0081, 0);
        assert_eq!(s.to_bytes(), [0x02, 0x01, 0, 0, 0x81, 0, 0, 0]);
        assert!(!s.is_device_to_host());
    }

    #[test]
    fn control_result_truncates() {
        let r = ControlResult::ok(vec![1, 2, 3, 4], 2);
        assert_eq!(r.data, vec![1, 2]);
        assert!(r.is_ok());
        assert!(!ControlResult::stall().is_ok());
        assert!(ControlResult::ack().data.is_empty());
    }

    #[test]
    fn packet_sizes_by_speed() {
        assert_eq!(
            [Speed::Full, Speed::High, Speed::Super].map(Speed::bulk_max_packet),
            [64, 512, 1024]
        );
        assert_eq!(
            [Speed::Full, Speed::High, Speed::Super].map(Speed::ep0_max_packet),
            [64, 64, 512]
        );
        assert_eq!(Speed::Super as u8, 3, "usbredir's number for super speed");
    }
}
