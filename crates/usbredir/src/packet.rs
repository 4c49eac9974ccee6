//! Typed packets. Field names and order follow `usbredirproto.h`.

use bytes::Bytes;

use crate::caps::Caps;
use crate::proto::{endpoint_index, EndpointType, PacketType, Speed, Status, NUM_ENDPOINTS};

/// A decoded packet with its header id.
///
/// For requests the id is chosen by the guest and echoed in the host's
/// reply; unsolicited packets use 0; for `cancel_data_packet` it is the id
/// of the packet to cancel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// `usb_redir_header.id`.
    pub id: u64,
    /// The packet.
    pub packet: Packet,
}

/// `usb_redir_hello`: version string and capability words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hello {
    /// Free-form version text, at most 63 bytes, no NUL. Decoding keeps the
    /// bytes before the first NUL (lossy UTF-8, cut to 63 bytes).
    pub version: String,
    /// Capability words; word 0 holds the defined caps. Usually one word; an
    /// empty list (very old peers) means no caps.
    pub cap_words: Vec<u32>,
}

impl Hello {
    /// A hello with one capability word.
    pub fn new(version: impl Into<String>, caps: Caps) -> Hello {
        Hello {
            version: version.into(),
            cap_words: vec![caps.bits()],
        }
    }

    /// The defined capabilities (word 0).
    pub fn caps(&self) -> Caps {
        Caps::from_bits(self.cap_words.first().copied().unwrap_or(0))
    }
}

/// `usb_redir_device_connect`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeviceConnect {
    /// Device speed; report [`Speed::High`] for a USB 2 device.
    pub speed: Speed,
    /// `bDeviceClass`.
    pub device_class: u8,
    /// `bDeviceSubClass`.
    pub device_subclass: u8,
    /// `bDeviceProtocol`.
    pub device_protocol: u8,
    /// `idVendor`.
    pub vendor_id: u16,
    /// `idProduct`.
    pub product_id: u16,
    /// `bcdDevice`; only on the wire when both sides have
    /// `connect_device_version` (otherwise sent as nothing, decoded as 0).
    pub device_version_bcd: u16,
}

/// One entry of `interface_info`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Interface {
    /// `bInterfaceNumber`.
    pub number: u8,
    /// `bInterfaceClass`.
    pub class: u8,
    /// `bInterfaceSubClass`.
    pub subclass: u8,
    /// `bInterfaceProtocol`.
    pub protocol: u8,
}

/// `usb_redir_interface_info`: the interfaces of the active configuration
/// (at most 32).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct InterfaceInfo {
    /// The interfaces, in order.
    pub interfaces: Vec<Interface>,
}

/// One endpoint slot of `ep_info`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Endpoint {
    /// Transfer type, [`EndpointType::Invalid`] for absent endpoints.
    pub ep_type: EndpointType,
    /// `bInterval`.
    pub interval: u8,
    /// Interface number the endpoint belongs to.
    pub interface: u8,
    /// `wMaxPacketSize`; on the wire only with `ep_info_max_packet_size`.
    pub max_packet_size: u16,
    /// Max bulk streams; on the wire only with `bulk_streams`.
    pub max_streams: u32,
}

impl Endpoint {
    /// An absent endpoint.
    pub const INVALID: Endpoint = Endpoint {
        ep_type: EndpointType::Invalid,
        interval: 0,
        interface: 0,
        max_packet_size: 0,
        max_streams: 0,
    };
}

/// `usb_redir_ep_info`: all 32 endpoint slots, 0-15 OUT then 0-15 IN
/// (see [`endpoint_index`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EpInfo {
    /// The slots.
    pub endpoints: [Endpoint; NUM_ENDPOINTS],
}

impl Default for EpInfo {
    fn default() -> Self {
        EpInfo::new()
    }
}

impl EpInfo {
    /// Every slot invalid except endpoint 0 (slots 0 and 16), which is a
    /// control endpoint with max packet size 64.
    pub fn new() -> EpInfo {
        let mut endpoints = [Endpoint::INVALID; NUM_ENDPOINTS];
        let ep0 = Endpoint {
            ep_type: EndpointType::Control,
            max_packet_size: 64,
            ..Endpoint::INVALID
        };
        endpoints[0] = ep0;
        endpoints[16] = ep0;
        EpInfo { endpoints }
    }

    /// Every slot invalid.
    pub fn all_invalid() -> EpInfo {
        EpInfo {
            endpoints: [Endpoint::INVALID; NUM_ENDPOINTS],
        }
    }

    /// The slot of endpoint address `endpoint`.
    pub fn get(&self, endpoint: u8) -> &Endpoint {
        &self.endpoints[endpoint_index(endpoint)]
    }

    /// Sets the slot of endpoint address `endpoint`.
    pub fn set(&mut self, endpoint: u8, info: Endpoint) {
        self.endpoints[endpoint_index(endpoint)] = info;
    }

    /// Builder form of [`EpInfo::set`].
    #[must_use]
    pub fn with(mut self, endpoint: u8, info: Endpoint) -> EpInfo {
        self.set(endpoint, info);
        self
    }
}

/// `usb_redir_set_configuration`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SetConfiguration {
    /// `bConfigurationValue` to select.
    pub configuration: u8,
}

/// `usb_redir_configuration_status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConfigurationStatus {
    /// Result.
    pub status: Status,
    /// Active configuration.
    pub configuration: u8,
}

/// `usb_redir_set_alt_setting`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SetAltSetting {
    /// Interface number.
    pub interface: u8,
    /// Alternate setting to select.
    pub alt: u8,
}

/// `usb_redir_get_alt_setting`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GetAltSetting {
    /// Interface number.
    pub interface: u8,
}

/// `usb_redir_alt_setting_status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AltSettingStatus {
    /// Result.
    pub status: Status,
    /// Interface number.
    pub interface: u8,
    /// Active alternate setting (255 if unknown).
    pub alt: u8,
}

/// `usb_redir_start_iso_stream`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StartIsoStream {
    /// Endpoint address.
    pub endpoint: u8,
    /// Packets per URB.
    pub pkts_per_urb: u8,
    /// Number of URBs.
    pub no_urbs: u8,
}

/// `usb_redir_stop_iso_stream`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StopIsoStream {
    /// Endpoint address.
    pub endpoint: u8,
}

/// `usb_redir_iso_stream_status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IsoStreamStatus {
    /// Result.
    pub status: Status,
    /// Endpoint address.
    pub endpoint: u8,
}

/// `usb_redir_start_interrupt_receiving` (IN endpoints only).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StartInterruptReceiving {
    /// Endpoint address.
    pub endpoint: u8,
}

/// `usb_redir_stop_interrupt_receiving` (IN endpoints only).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StopInterruptReceiving {
    /// Endpoint address.
    pub endpoint: u8,
}

/// `usb_redir_interrupt_receiving_status` (IN endpoints only).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InterruptReceivingStatus {
    /// Result.
    pub status: Status,
    /// Endpoint address.
    pub endpoint: u8,
}

/// `usb_redir_alloc_bulk_streams`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AllocBulkStreams {
    /// Bitmask of endpoint slots.
    pub endpoints: u32,
    /// Number of streams.
    pub no_streams: u32,
}

/// `usb_redir_free_bulk_streams`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FreeBulkStreams {
    /// Bitmask of endpoint slots.
    pub endpoints: u32,
}

/// `usb_redir_bulk_streams_status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BulkStreamsStatus {
    /// Bitmask of endpoint slots.
    pub endpoints: u32,
    /// Number of streams (0 after a free).
    pub no_streams: u32,
    /// Result.
    pub status: Status,
}

/// `usb_redir_filter_filter`: a usbredirfilter rule string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FilterFilter {
    /// Rules, e.g. `"0x08,-1,-1,-1,1|-1,-1,-1,-1,0"`, without the NUL
    /// terminator (added on the wire). Must not contain NUL.
    pub rules: String,
}

/// `usb_redir_start_bulk_receiving`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StartBulkReceiving {
    /// Stream id.
    pub stream_id: u32,
    /// Bytes per transfer (at most 128 MiB).
    pub bytes_per_transfer: u32,
    /// Endpoint address (IN).
    pub endpoint: u8,
    /// Number of transfers.
    pub no_transfers: u8,
}

/// `usb_redir_stop_bulk_receiving`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StopBulkReceiving {
    /// Stream id.
    pub stream_id: u32,
    /// Endpoint address (IN).
    pub endpoint: u8,
}

/// `usb_redir_bulk_receiving_status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BulkReceivingStatus {
    /// Stream id.
    pub stream_id: u32,
    /// Endpoint address (IN).
    pub endpoint: u8,
    /// Result.
    pub status: Status,
}

/// `usb_redir_control_packet`.
///
/// Data rule: a guest OUT request and a host IN reply carry
/// `length` bytes of data; a guest IN request (`length` = bytes wanted)
/// and a host OUT reply (`length` = bytes done) carry none. The `status`
/// of a guest request is ignored (QEMU leaves it uninitialised) and
/// decodes as [`Status::Success`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControlPacket {
    /// Endpoint address (QEMU uses `request_type & 0x80`).
    pub endpoint: u8,
    /// `bRequest`.
    pub request: u8,
    /// `bmRequestType`.
    pub request_type: u8,
    /// Result (host replies only).
    pub status: Status,
    /// `wValue`.
    pub value: u16,
    /// `wIndex`.
    pub index: u16,
    /// `wLength` of the request, or bytes transferred in the reply.
    pub length: u16,
    /// Data (see the type's data rule).
    pub data: Bytes,
}

/// `usb_redir_bulk_packet`. Same data rule as [`ControlPacket`]; lengths
/// above 65535 need `32bits_bulk_length` on both sides.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BulkPacket {
    /// Endpoint address.
    pub endpoint: u8,
    /// Result (host replies only).
    pub status: Status,
    /// Bytes requested, or bytes transferred in the reply (at most 128 MiB).
    pub length: u32,
    /// Bulk stream id (0 without streams).
    pub stream_id: u32,
    /// Data (see the data rule).
    pub data: Bytes,
}

/// `usb_redir_iso_packet`: data in the endpoint's direction only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IsoPacket {
    /// Endpoint address.
    pub endpoint: u8,
    /// Result (host to guest only).
    pub status: Status,
    /// Data length.
    pub length: u16,
    /// Data.
    pub data: Bytes,
}

/// `usb_redir_interrupt_packet`: IN data from the host, or an OUT
/// request from the guest and its data-less reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InterruptPacket {
    /// Endpoint address.
    pub endpoint: u8,
    /// Result (host to guest only).
    pub status: Status,
    /// Data length, or bytes done in an OUT reply.
    pub length: u16,
    /// Data.
    pub data: Bytes,
}

/// `usb_redir_buffered_bulk_packet`: buffered bulk IN data, host to guest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BufferedBulkPacket {
    /// Stream id.
    pub stream_id: u32,
    /// Data length (at most 128 MiB).
    pub length: u32,
    /// Endpoint address (IN).
    pub endpoint: u8,
    /// Result.
    pub status: Status,
    /// Data.
    pub data: Bytes,
}

/// Every usbredir 0.7 packet.
#[derive(Debug, Clone, PartialEq, Eq)]
#[allow(missing_docs)] // each variant is named after, and documented by, its payload type
pub enum Packet {
    Hello(Hello),
    DeviceConnect(DeviceConnect),
    DeviceDisconnect,
    Reset,
    InterfaceInfo(InterfaceInfo),
    EpInfo(Box<EpInfo>),
    SetConfiguration(SetConfiguration),
    GetConfiguration,
    ConfigurationStatus(ConfigurationStatus),
    SetAltSetting(SetAltSetting),
    GetAltSetting(GetAltSetting),
    AltSettingStatus(AltSettingStatus),
    StartIsoStream(StartIsoStream),
    StopIsoStream(StopIsoStream),
    IsoStreamStatus(IsoStreamStatus),
    StartInterruptReceiving(StartInterruptReceiving),
    StopInterruptReceiving(StopInterruptReceiving),
    InterruptReceivingStatus(InterruptReceivingStatus),
    AllocBulkStreams(AllocBulkStreams),
    FreeBulkStreams(FreeBulkStreams),
    BulkStreamsStatus(BulkStreamsStatus),
    /// The id of the frame names the packet to cancel.
    CancelDataPacket,
    FilterReject,
    FilterFilter(FilterFilter),
    DeviceDisconnectAck,
    StartBulkReceiving(StartBulkReceiving),
    StopBulkReceiving(StopBulkReceiving),
    BulkReceivingStatus(BulkReceivingStatus),
    ControlPacket(ControlPacket),
    BulkPacket(BulkPacket),
    IsoPacket(IsoPacket),
    InterruptPacket(InterruptPacket),
    BufferedBulkPacket(BufferedBulkPacket),
}

impl Packet {
    /// The packet's type number.
    pub fn packet_type(&self) -> PacketType {
        match self {
            Packet::Hello(_) => PacketType::Hello,
            Packet::DeviceConnect(_) => PacketType::DeviceConnect,
            Packet::DeviceDisconnect => PacketType::DeviceDisconnect,
            Packet::Reset => PacketType::Reset,
            Packet::InterfaceInfo(_) => PacketType::InterfaceInfo,
            Packet::EpInfo(_) => PacketType::EpInfo,
            Packet::SetConfiguration(_) => PacketType::SetConfiguration,
            Packet::GetConfiguration => PacketType::GetConfiguration,
            Packet::ConfigurationStatus(_) => PacketType::ConfigurationStatus,
            Packet::SetAltSetting(_) => PacketType::SetAltSetting,
            Packet::GetAltSetting(_) => PacketType::GetAltSetting,
            Packet::AltSettingStatus(_) => PacketType::AltSettingStatus,
            Packet::StartIsoStream(_) => PacketType::StartIsoStream,
            Packet::StopIsoStream(_) => PacketType::StopIsoStream,
            Packet::IsoStreamStatus(_) => PacketType::IsoStreamStatus,
            Packet::StartInterruptReceiving(_) => PacketType::StartInterruptReceiving,
            Packet::StopInterruptReceiving(_) => PacketType::StopInterruptReceiving,
            Packet::InterruptReceivingStatus(_) => PacketType::InterruptReceivingStatus,
            Packet::AllocBulkStreams(_) => PacketType::AllocBulkStreams,
            Packet::FreeBulkStreams(_) => PacketType::FreeBulkStreams,
            Packet::BulkStreamsStatus(_) => PacketType::BulkStreamsStatus,
            Packet::CancelDataPacket => PacketType::CancelDataPacket,
            Packet::FilterReject => PacketType::FilterReject,
            Packet::FilterFilter(_) => PacketType::FilterFilter,
            Packet::DeviceDisconnectAck => PacketType::DeviceDisconnectAck,
            Packet::StartBulkReceiving(_) => PacketType::StartBulkReceiving,
            Packet::StopBulkReceiving(_) => PacketType::StopBulkReceiving,
            Packet::BulkReceivingStatus(_) => PacketType::BulkReceivingStatus,
            Packet::ControlPacket(_) => PacketType::ControlPacket,
            Packet::BulkPacket(_) => PacketType::BulkPacket,
            Packet::IsoPacket(_) => PacketType::IsoPacket,
            Packet::InterruptPacket(_) => PacketType::InterruptPacket,
            Packet::BufferedBulkPacket(_) => PacketType::BufferedBulkPacket,
        }
    }
}

macro_rules! impl_from {
    ($($ty:ident),*) => {
        $(impl From<$ty> for Packet {
            fn from(p: $ty) -> Packet {
                Packet::$ty(p)
            }
        })*
    };
}

impl_from!(
    Hello,
    DeviceConnect,
    InterfaceInfo,
    SetConfiguration,
    ConfigurationStatus,
    SetAltSetting,
    GetAltSetting,
    AltSettingStatus,
    StartIsoStream,
    StopIsoStream,
    IsoStreamStatus,
    StartInterruptReceiving,
    StopInterruptReceiving,
    InterruptReceivingStatus,
    AllocBulkStreams,
    FreeBulkStreams,
    BulkStreamsStatus,
    FilterFilter,
    StartBulkReceiving,
    StopBulkReceiving,
    BulkReceivingStatus,
    ControlPacket,
    BulkPacket,
    IsoPacket,
    InterruptPacket,
    BufferedBulkPacket
);

impl From<EpInfo> for Packet {
    fn from(p: EpInfo) -> Packet {
        Packet::EpInfo(Box::new(p))
    }
}
