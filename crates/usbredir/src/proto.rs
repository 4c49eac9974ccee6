//! Protocol numbers, limits and small enums of usbredir v0.7.

use std::fmt;

/// Largest data payload of one packet (`MAX_BULK_TRANSFER_SIZE`, 128 MiB).
pub const MAX_DATA_LEN: u32 = 128 * 1024 * 1024;

/// Largest value of the header `length` field: type header plus data
/// (128 MiB + 1 KiB).
pub const MAX_PACKET_LEN: u32 = MAX_DATA_LEN + 1024;

/// Size of `usb_redir_header` with 32-bit ids (always used for the hello).
pub const HEADER_LEN_32: usize = 12;

/// Size of `usb_redir_header` once both peers advertised `64bits_ids`.
pub const HEADER_LEN_64: usize = 16;

/// Largest complete packet on the wire: 16-byte header plus [`MAX_PACKET_LEN`].
pub const MAX_FRAME_LEN: usize = HEADER_LEN_64 + MAX_PACKET_LEN as usize;

/// Size of the fixed `version` field of the hello packet.
pub const HELLO_VERSION_LEN: usize = 64;

/// Number of entries in the `interface_info` arrays.
pub const MAX_INTERFACES: usize = 32;

/// Number of endpoint slots in `ep_info` (0-15 OUT, 16-31 IN).
pub const NUM_ENDPOINTS: usize = 32;

/// The two roles of the protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// The side that owns the USB device and makes it available (our
    /// terminal forwarder or emulated CD-ROM).
    Host,
    /// The side that uses the device (QEMU's `usb-redir`).
    Guest,
}

impl Role {
    /// The other role.
    pub fn peer(self) -> Role {
        match self {
            Role::Host => Role::Guest,
            Role::Guest => Role::Host,
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Role::Host => "usb-host",
            Role::Guest => "usb-guest",
        })
    }
}

macro_rules! packet_types {
    ($( $(#[$doc:meta])* $variant:ident = $num:literal, $name:literal, $sender:expr; )*) => {
        /// Packet type numbers (`usb_redir_header.type`).
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        #[repr(u32)]
        pub enum PacketType {
            $( $(#[$doc])* $variant = $num, )*
        }

        impl PacketType {
            /// Every packet type, in numeric order.
            pub const ALL: &'static [PacketType] = &[ $( PacketType::$variant, )* ];

            /// Maps a wire number to a packet type; `None` if unknown.
            pub fn from_u32(n: u32) -> Option<PacketType> {
                match n {
                    $( $num => Some(PacketType::$variant), )*
                    _ => None,
                }
            }

            /// The protocol's name of this packet type, e.g. `"bulk_packet"`.
            pub fn name(self) -> &'static str {
                match self {
                    $( PacketType::$variant => $name, )*
                }
            }

            /// Which role may send this packet; `None` means both roles.
            pub fn sender(self) -> Option<Role> {
                match self {
                    $( PacketType::$variant => $sender, )*
                }
            }
        }
    };
}

const HOST: Option<Role> = Some(Role::Host);
const GUEST: Option<Role> = Some(Role::Guest);
const BOTH: Option<Role> = None;

packet_types! {
    /// Version string and capabilities; first packet of both sides.
    Hello = 0, "hello", BOTH;
    /// A device became available.
    DeviceConnect = 1, "device_connect", HOST;
    /// The device went away.
    DeviceDisconnect = 2, "device_disconnect", HOST;
    /// Reset the device.
    Reset = 3, "reset", GUEST;
    /// Interfaces of the current configuration.
    InterfaceInfo = 4, "interface_info", HOST;
    /// Endpoints of the current configuration.
    EpInfo = 5, "ep_info", HOST;
    /// Select a configuration.
    SetConfiguration = 6, "set_configuration", GUEST;
    /// Query the configuration.
    GetConfiguration = 7, "get_configuration", GUEST;
    /// Reply to set/get_configuration.
    ConfigurationStatus = 8, "configuration_status", HOST;
    /// Select an alternate setting.
    SetAltSetting = 9, "set_alt_setting", GUEST;
    /// Query an alternate setting.
    GetAltSetting = 10, "get_alt_setting", GUEST;
    /// Reply to set/get_alt_setting.
    AltSettingStatus = 11, "alt_setting_status", HOST;
    /// Start an isochronous stream.
    StartIsoStream = 12, "start_iso_stream", GUEST;
    /// Stop an isochronous stream.
    StopIsoStream = 13, "stop_iso_stream", GUEST;
    /// Status of an isochronous stream.
    IsoStreamStatus = 14, "iso_stream_status", HOST;
    /// Start polling an interrupt IN endpoint.
    StartInterruptReceiving = 15, "start_interrupt_receiving", GUEST;
    /// Stop polling an interrupt IN endpoint.
    StopInterruptReceiving = 16, "stop_interrupt_receiving", GUEST;
    /// Status of interrupt receiving.
    InterruptReceivingStatus = 17, "interrupt_receiving_status", HOST;
    /// Allocate bulk streams.
    AllocBulkStreams = 18, "alloc_bulk_streams", GUEST;
    /// Free bulk streams.
    FreeBulkStreams = 19, "free_bulk_streams", GUEST;
    /// Reply to alloc/free_bulk_streams.
    BulkStreamsStatus = 20, "bulk_streams_status", HOST;
    /// Cancel an earlier data packet (the header id names it).
    CancelDataPacket = 21, "cancel_data_packet", GUEST;
    /// The guest's filter rejected the device.
    FilterReject = 22, "filter_reject", GUEST;
    /// A usbredir filter string.
    FilterFilter = 23, "filter_filter", BOTH;
    /// The guest processed a device_disconnect.
    DeviceDisconnectAck = 24, "device_disconnect_ack", GUEST;
    /// Start buffered bulk input.
    StartBulkReceiving = 25, "start_bulk_receiving", GUEST;
    /// Stop buffered bulk input.
    StopBulkReceiving = 26, "stop_bulk_receiving", GUEST;
    /// Status of buffered bulk input.
    BulkReceivingStatus = 27, "bulk_receiving_status", HOST;
    /// A control transfer (request or reply).
    ControlPacket = 100, "control_packet", BOTH;
    /// A bulk transfer (request or reply).
    BulkPacket = 101, "bulk_packet", BOTH;
    /// An isochronous packet.
    IsoPacket = 102, "iso_packet", BOTH;
    /// An interrupt transfer.
    InterruptPacket = 103, "interrupt_packet", BOTH;
    /// Buffered bulk input data.
    BufferedBulkPacket = 104, "buffered_bulk_packet", HOST;
}

impl PacketType {
    /// The wire number of this packet type.
    pub fn as_u32(self) -> u32 {
        self as u32
    }

    /// True for the data packets (types 100-104).
    pub fn is_data_packet(self) -> bool {
        self.as_u32() >= 100
    }
}

impl fmt::Display for PacketType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A `#[repr(u8)]` enum of wire values with `ALL`, `from_u8` and `as_u8`.
macro_rules! byte_enum {
    (
        $(#[$meta:meta])*
        pub enum $name:ident ($what:literal) {
            $( $(#[$vmeta:meta])* $variant:ident = $num:literal, )*
        }
    ) => {
        $(#[$meta])*
        #[repr(u8)]
        pub enum $name {
            $( $(#[$vmeta])* $variant = $num, )*
        }

        impl $name {
            #[doc = concat!("Every ", $what, ", in wire order.")]
            pub const ALL: &'static [$name] = &[ $( $name::$variant, )* ];

            #[doc = concat!("Parses a ", $what, " byte; undefined values yield `None`.")]
            pub fn from_u8(v: u8) -> Option<$name> {
                match v {
                    $( $num => Some($name::$variant), )*
                    _ => None,
                }
            }

            /// The wire value.
            pub fn as_u8(self) -> u8 {
                self as u8
            }
        }
    };
}

byte_enum! {
    /// Transfer / request status codes.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
    pub enum Status ("status") {
        /// Success.
        #[default]
        Success = 0,
        /// The transfer was cancelled.
        Cancelled = 1,
        /// Invalid packet type, length, endpoint, etc.
        Inval = 2,
        /// I/O error.
        IoError = 3,
        /// The endpoint stalled.
        Stall = 4,
        /// The request timed out.
        Timeout = 5,
        /// The device babbled.
        Babble = 6,
    }
}

byte_enum! {
    /// Device speed as reported in `device_connect`.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
    pub enum Speed ("speed") {
        /// Low speed (1.5 Mbit/s).
        Low = 0,
        /// Full speed (12 Mbit/s).
        Full = 1,
        /// High speed (480 Mbit/s); what an emulated USB 2 CD-ROM reports.
        High = 2,
        /// SuperSpeed (5 Gbit/s).
        Super = 3,
        /// Unknown speed.
        Unknown = 255,
    }
}

byte_enum! {
    /// Endpoint transfer type as reported in `ep_info`.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
    pub enum EndpointType ("endpoint type") {
        /// Control endpoint.
        Control = 0,
        /// Isochronous endpoint.
        Iso = 1,
        /// Bulk endpoint.
        Bulk = 2,
        /// Interrupt endpoint.
        Interrupt = 3,
        /// No such endpoint.
        #[default]
        Invalid = 255,
    }
}

/// True if `endpoint` is an IN (device-to-host) endpoint address.
pub fn is_in_endpoint(endpoint: u8) -> bool {
    endpoint & 0x80 != 0
}

/// Slot of an endpoint address in the `ep_info` arrays:
/// `((ep & 0x80) >> 3) | (ep & 0x0f)`, so 0-15 are OUT and 16-31 are IN.
pub fn endpoint_index(endpoint: u8) -> usize {
    usize::from(((endpoint & 0x80) >> 3) | (endpoint & 0x0f))
}

/// Endpoint address of an `ep_info` slot (inverse of [`endpoint_index`]);
/// `index` is taken modulo 32.
pub fn endpoint_address(index: usize) -> u8 {
    let i = (index % NUM_ENDPOINTS) as u8;
    ((i & 0x10) << 3) | (i & 0x0f)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packet_type_numbers_roundtrip() {
        for &t in PacketType::ALL {
            assert_eq!(PacketType::from_u32(t.as_u32()), Some(t));
        }
        assert_eq!(PacketType::ALL.len(), 33);
        assert_eq!(PacketType::from_u32(28), None);
        assert_eq!(PacketType::from_u32(99), None);
        assert_eq!(PacketType::from_u32(105), None);
    }

    #[test]
    fn endpoint_index_mapping() {
        assert_eq!(endpoint_index(0x00), 0);
        assert_eq!(endpoint_index(0x80), 16);
        assert_eq!(endpoint_index(0x02), 2);
        assert_eq!(endpoint_index(0x81), 17);
        for i in 0..NUM_ENDPOINTS {
            assert_eq!(endpoint_index(endpoint_address(i)), i);
        }
    }

    #[test]
    fn enum_bytes_roundtrip() {
        for v in 0..=255u8 {
            if let Some(s) = Status::from_u8(v) {
                assert_eq!(s.as_u8(), v);
            }
            if let Some(s) = Speed::from_u8(v) {
                assert_eq!(s.as_u8(), v);
            }
            if let Some(t) = EndpointType::from_u8(v) {
                assert_eq!(t.as_u8(), v);
            }
        }
        assert_eq!(Status::from_u8(7), None);
        assert_eq!(Speed::from_u8(4), None);
        assert_eq!(EndpointType::from_u8(4), None);
    }
}
