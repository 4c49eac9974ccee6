//! Capability bits announced in the hello packet.

use std::fmt;

macro_rules! caps {
    ($( $(#[$doc:meta])* $variant:ident = $bit:literal, $name:literal; )*) => {
        /// One capability bit of `caps[0]`.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[repr(u8)]
        pub enum Cap {
            $( $(#[$doc])* $variant = $bit, )*
        }

        impl Cap {
            /// Every defined capability, by bit number.
            pub const ALL: [Cap; 8] = [ $( Cap::$variant, )* ];

            /// The protocol's name of the capability.
            pub fn name(self) -> &'static str {
                match self {
                    $( Cap::$variant => $name, )*
                }
            }
        }
    };
}

caps! {
    /// Bit 0: USB 3 bulk streams; `ep_info` gains `max_streams`. Only
    /// effective together with [`Cap::EpInfoMaxPacketSize`].
    BulkStreams = 0, "bulk_streams";
    /// Bit 1: `device_connect` carries `device_version_bcd`.
    ConnectDeviceVersion = 1, "connect_device_version";
    /// Bit 2: `filter_reject` and `filter_filter` are understood.
    Filter = 2, "filter";
    /// Bit 3: the guest acknowledges `device_disconnect`.
    DeviceDisconnectAck = 3, "device_disconnect_ack";
    /// Bit 4: `ep_info` carries `max_packet_size`.
    EpInfoMaxPacketSize = 4, "ep_info_max_packet_size";
    /// Bit 5: 64-bit ids, i.e. a 16-byte packet header.
    Ids64 = 5, "64bits_ids";
    /// Bit 6: `bulk_packet` carries `length_high` (32-bit lengths).
    BulkLength32 = 6, "32bits_bulk_length";
    /// Bit 7: buffered bulk input (bulk receiving).
    BulkReceiving = 7, "bulk_receiving";
}

impl Cap {
    /// The bit number in `caps[0]`.
    pub fn bit(self) -> u32 {
        self as u32
    }
}

impl fmt::Display for Cap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A set of capabilities (the first 32-bit capability word).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Caps(u32);

impl Caps {
    /// Recommended caps of our usb-host: bits 1-6 (`0x7E`): no bulk streams,
    /// no buffered bulk input. Satisfies QEMU's xHCI requirement (4, 5, 6).
    pub const HOST_DEFAULT: Caps = Caps(0x7E);

    /// What QEMU's `usb-redir` advertises (`0xFF`; `0xFE` with `streams=off`).
    pub const QEMU_GUEST: Caps = Caps(0xFF);

    /// No capabilities.
    pub const fn empty() -> Caps {
        Caps(0)
    }

    /// Caps from a raw word; unknown bits are kept.
    pub const fn from_bits(bits: u32) -> Caps {
        Caps(bits)
    }

    /// The raw word.
    pub const fn bits(self) -> u32 {
        self.0
    }

    /// True if `cap` is in the set.
    pub const fn has(self, cap: Cap) -> bool {
        self.0 & (1 << cap as u32) != 0
    }

    /// The set plus `cap`.
    #[must_use]
    pub const fn with(self, cap: Cap) -> Caps {
        Caps(self.0 | (1 << cap as u32))
    }

    /// The set without `cap`.
    #[must_use]
    pub const fn without(self, cap: Cap) -> Caps {
        Caps(self.0 & !(1 << cap as u32))
    }

    /// Caps of both sets.
    #[must_use]
    pub const fn intersect(self, other: Caps) -> Caps {
        Caps(self.0 & other.0)
    }

    /// What governs packet layouts when `self` and `peer` are the two
    /// hellos: the intersection, with `bulk_streams` dropped unless
    /// `ep_info_max_packet_size` is also shared (as the reference parser does).
    #[must_use]
    pub const fn negotiate(self, peer: Caps) -> Caps {
        let both = self.intersect(peer);
        if both.has(Cap::BulkStreams) && !both.has(Cap::EpInfoMaxPacketSize) {
            both.without(Cap::BulkStreams)
        } else {
            both
        }
    }
}

impl fmt::Debug for Caps {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Caps({:#x}", self.0)?;
        let mut first = true;
        for cap in Cap::ALL {
            if self.has(cap) {
                f.write_str(if first { ": " } else { "|" })?;
                f.write_str(cap.name())?;
                first = false;
            }
        }
        f.write_str(")")
    }
}

impl FromIterator<Cap> for Caps {
    fn from_iter<T: IntoIterator<Item = Cap>>(iter: T) -> Self {
        iter.into_iter().fold(Caps::empty(), Caps::with)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_default_is_0x7e() {
        let c: Caps = [
            Cap::ConnectDeviceVersion,
            Cap::Filter,
            Cap::DeviceDisconnectAck,
            Cap::EpInfoMaxPacketSize,
            Cap::Ids64,
            Cap::BulkLength32,
        ]
        .into_iter()
        .collect();
        assert_eq!(c, Caps::HOST_DEFAULT);
        assert!(!c.has(Cap::BulkStreams));
        assert!(!c.has(Cap::BulkReceiving));
    }

    #[test]
    fn negotiate_drops_streams_without_max_packet_size() {
        let a = Caps::empty().with(Cap::BulkStreams);
        assert_eq!(a.negotiate(a), Caps::empty());
        let b = a.with(Cap::EpInfoMaxPacketSize);
        assert_eq!(b.negotiate(b), b);
        assert_eq!(
            Caps::QEMU_GUEST.negotiate(Caps::HOST_DEFAULT),
            Caps::HOST_DEFAULT
        );
    }

    #[test]
    fn debug_lists_names() {
        let s = format!("{:?}", Caps::from_bits(0x21));
        assert_eq!(s, "Caps(0x21: bulk_streams|64bits_ids)");
    }
}
