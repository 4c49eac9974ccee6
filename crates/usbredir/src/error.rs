//! Errors of the codec.

use crate::caps::Cap;
use crate::proto::{PacketType, Role};

/// A packet that cannot be encoded or that was rejected while decoding.
///
/// Decoding errors concern one packet: the streaming decoder drops that
/// packet's bytes and can go on with the next one, but a peer that sends
/// malformed packets is usually best disconnected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The header names a packet type that usbredir 0.7 does not define.
    #[error("unknown packet type {0}")]
    UnknownPacketType(u32),

    /// The packet type may only be sent by the other role.
    #[error("{packet} must not be sent by the {sender}")]
    WrongSender {
        /// The packet type.
        packet: PacketType,
        /// The role that sent (or tried to send) it.
        sender: Role,
    },

    /// The header `length` does not fit the packet's type-specific header
    /// (whose size depends on the negotiated caps) or the type carries no data.
    #[error("{packet}: length {length} is invalid (type header is {header_len} bytes with the negotiated caps)")]
    BadLength {
        /// The packet type.
        packet: PacketType,
        /// The header `length` field.
        length: u32,
        /// Expected type-specific header size.
        header_len: u32,
    },

    /// The hello length is not `64 + 4 * n`.
    #[error("hello: length {0} is not 64 + 4*n")]
    BadHelloLength(u32),

    /// The header `length` exceeds the protocol limit or the decoder's buffer limit.
    #[error("packet of {length} bytes exceeds the limit of {max} bytes")]
    PacketTooLarge {
        /// Announced or computed packet size.
        length: u64,
        /// The limit.
        max: u64,
    },

    /// A transfer length exceeds 128 MiB.
    #[error("{packet}: transfer length {length} exceeds {max} bytes")]
    DataTooLarge {
        /// The packet type.
        packet: PacketType,
        /// The transfer length.
        length: u32,
        /// The limit.
        max: u32,
    },

    /// A data packet that must carry data carries a different amount than
    /// its `length` field says.
    #[error(
        "{packet} on endpoint {endpoint:#04x}: {data_len} data bytes but length field is {length}"
    )]
    DataLengthMismatch {
        /// The packet type.
        packet: PacketType,
        /// Endpoint address.
        endpoint: u8,
        /// The type header's `length` field.
        length: u32,
        /// Actual number of data bytes.
        data_len: usize,
    },

    /// A data packet carries data in the direction that must not carry any
    /// (IN requests and OUT replies).
    #[error("{packet} on endpoint {endpoint:#04x} from the {sender} must not carry data ({data_len} bytes)")]
    UnexpectedData {
        /// The packet type.
        packet: PacketType,
        /// Endpoint address.
        endpoint: u8,
        /// The sender.
        sender: Role,
        /// Number of data bytes found.
        data_len: usize,
    },

    /// An iso, interrupt or buffered bulk packet travels the wrong way for its endpoint.
    #[error("{packet} on endpoint {endpoint:#04x} cannot be sent by the {sender}")]
    WrongDirection {
        /// The packet type.
        packet: PacketType,
        /// Endpoint address.
        endpoint: u8,
        /// The sender.
        sender: Role,
    },

    /// The packet needs an IN endpoint.
    #[error("{packet}: endpoint {endpoint:#04x} is not an IN endpoint")]
    EndpointNotInput {
        /// The packet type.
        packet: PacketType,
        /// Endpoint address.
        endpoint: u8,
    },

    /// A status byte outside 0-6 in a packet where the status is meaningful.
    #[error("invalid status value {0}")]
    InvalidStatus(u8),

    /// A speed byte outside 0-3 and 255.
    #[error("invalid device speed {0}")]
    InvalidSpeed(u8),

    /// An endpoint type outside 0-3 and 255.
    #[error("invalid endpoint type {0}")]
    InvalidEndpointType(u8),

    /// `interface_info` with more than 32 interfaces.
    #[error("interface_info: {0} interfaces, at most 32 allowed")]
    TooManyInterfaces(u32),

    /// The packet type needs a capability the receiving side did not advertise.
    #[error("{packet} needs the {cap} capability on the receiving side")]
    MissingCap {
        /// The packet type.
        packet: PacketType,
        /// The missing capability.
        cap: Cap,
    },

    /// A bulk length above 65535 without the `32bits_bulk_length` cap.
    #[error("bulk length {0} needs the 32bits_bulk_length capability on both sides")]
    BulkLengthNeedsCap(u32),

    /// A malformed `filter_filter` string.
    #[error("filter_filter: {0}")]
    BadFilter(&'static str),

    /// A hello version string that does not fit 63 bytes or contains NUL.
    #[error("hello version must be at most 63 bytes without NUL")]
    BadVersion,

    /// The peer sent another packet before its hello.
    #[error("{0} received before the peer's hello")]
    HelloNotFirst(PacketType),

    /// A second hello.
    #[error("duplicate hello")]
    DuplicateHello,

    /// Tried to encode a packet before our own hello.
    #[error("cannot send {0} before our own hello")]
    OwnHelloNotSent(PacketType),

    /// Tried to encode a packet before the peer's hello was decoded: the
    /// negotiated caps, and so the packet layout, are not known yet.
    #[error("cannot send {0} before the peer's hello arrived")]
    PeerHelloPending(PacketType),

    /// An id above `u32::MAX` while 64-bit ids are not negotiated.
    #[error("id {0} does not fit the 32-bit header (64bits_ids not negotiated)")]
    IdTooLarge(u64),

    /// [`crate::Codec::feed`] would buffer more bytes than the limit; drain
    /// complete packets with [`crate::Codec::next_frame`] first.
    #[error("decoder buffer full: {buffered} buffered + {incoming} incoming > {limit} bytes")]
    BufferFull {
        /// Bytes currently buffered.
        buffered: usize,
        /// Size of the rejected chunk.
        incoming: usize,
        /// The limit.
        limit: usize,
    },
}
