//! A minimal guest-role helper that behaves like QEMU's `usb-redir` on
//! the wire: it sends its hello at once, collects the host's device
//! announcement (rejecting a `device_connect` without prior
//! `interface_info`, as QEMU does), acknowledges disconnects, and sends
//! requests with increasing ids. Meant for tests of host-side code.

use bytes::Bytes;

use crate::caps::{Cap, Caps};
use crate::codec::Codec;
use crate::error::Error;
use crate::packet::*;
use crate::proto::*;

/// What the guest helper saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GuestEvent {
    /// The host's hello.
    PeerHello {
        /// Version string.
        version: String,
        /// Caps.
        caps: Caps,
    },
    /// `interface_info` (on connect, set_configuration or set_alt_setting).
    InterfaceInfo(InterfaceInfo),
    /// `ep_info` (on connect, set_configuration or set_alt_setting).
    EpInfo(Box<EpInfo>),
    /// `device_connect`, with the announcement gathered before it.
    DeviceConnected {
        /// The connect packet.
        device: DeviceConnect,
        /// Last `interface_info`.
        interfaces: InterfaceInfo,
        /// Last `ep_info` (all invalid if none came).
        endpoints: Box<EpInfo>,
    },
    /// `device_disconnect` (already acknowledged if the host has cap 3).
    DeviceDisconnected,
    /// Reply to set/get_configuration.
    ConfigurationStatus {
        /// Request id.
        id: u64,
        /// The reply.
        status: ConfigurationStatus,
    },
    /// Reply to set/get_alt_setting.
    AltSettingStatus {
        /// Request id.
        id: u64,
        /// The reply.
        status: AltSettingStatus,
    },
    /// A control transfer reply.
    Control {
        /// Request id.
        id: u64,
        /// The reply.
        packet: ControlPacket,
    },
    /// A bulk transfer reply.
    Bulk {
        /// Request id.
        id: u64,
        /// The reply.
        packet: BulkPacket,
    },
    /// Any other packet.
    Other(Frame),
}

/// Errors of the guest helper.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum GuestError {
    /// Protocol or encoding error.
    #[error(transparent)]
    Protocol(#[from] Error),
    /// `device_connect` arrived before any `interface_info` (QEMU rejects
    /// such a device: "No interface info for device").
    #[error("device_connect without prior interface_info")]
    NoInterfaceInfo,
    /// Control OUT data over 65535 bytes.
    #[error("control data of {0} bytes exceeds 65535")]
    ControlDataTooLong(usize),
}

/// The guest-role helper.
#[derive(Debug)]
pub struct GuestSession {
    codec: Codec,
    out: Vec<u8>,
    next_id: u64,
    interfaces: Option<InterfaceInfo>,
    endpoints: Option<EpInfo>,
    device: Option<DeviceConnect>,
}

impl GuestSession {
    /// A new guest; its hello is queued in the output at once.
    pub fn new(version: &str, caps: Caps) -> GuestSession {
        let mut codec = Codec::new(Role::Guest);
        let mut out = Vec::new();
        let mut v: String = version.split('\0').next().unwrap_or_default().to_owned();
        let mut cut = v.len().min(HELLO_VERSION_LEN - 1);
        while !v.is_char_boundary(cut) {
            cut -= 1;
        }
        v.truncate(cut);
        // Cannot fail: first packet, sanitized version.
        let _ = codec.encode_into(0, &Packet::Hello(Hello::new(v, caps)), &mut out);
        GuestSession {
            codec,
            out,
            next_id: 1,
            interfaces: None,
            endpoints: None,
            device: None,
        }
    }

    /// The underlying codec.
    pub fn codec(&self) -> &Codec {
        &self.codec
    }

    /// The connected device, if any.
    pub fn device(&self) -> Option<&DeviceConnect> {
        self.device.as_ref()
    }

    /// The last announced interfaces.
    pub fn interfaces(&self) -> Option<&InterfaceInfo> {
        self.interfaces.as_ref()
    }

    /// The last announced endpoints.
    pub fn endpoints(&self) -> Option<&EpInfo> {
        self.endpoints.as_ref()
    }

    /// Bytes to send to the host; the buffer is emptied.
    pub fn take_output(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.out)
    }

    /// Appends bytes from the host.
    pub fn feed(&mut self, bytes: &[u8]) -> Result<(), GuestError> {
        Ok(self.codec.feed(bytes)?)
    }

    /// The next event, or `Ok(None)` if more input is needed.
    pub fn next_event(&mut self) -> Result<Option<GuestEvent>, GuestError> {
        let Some(frame) = self.codec.next_frame()? else {
            return Ok(None);
        };
        let id = frame.id;
        let ev = match frame.packet {
            Packet::Hello(h) => GuestEvent::PeerHello {
                caps: h.caps(),
                version: h.version,
            },
            Packet::InterfaceInfo(i) => {
                self.interfaces = Some(i.clone());
                GuestEvent::InterfaceInfo(i)
            }
            Packet::EpInfo(e) => {
                self.endpoints = Some((*e).clone());
                GuestEvent::EpInfo(e)
            }
            Packet::DeviceConnect(d) => {
                let Some(interfaces) = self.interfaces.clone() else {
                    return Err(GuestError::NoInterfaceInfo);
                };
                self.device = Some(d);
                GuestEvent::DeviceConnected {
                    device: d,
                    interfaces,
                    endpoints: Box::new(self.endpoints.clone().unwrap_or_else(EpInfo::all_invalid)),
                }
            }
            Packet::DeviceDisconnect => {
                self.device = None;
                self.interfaces = None;
                self.endpoints = None;
                if self
                    .codec
                    .peer_caps()
                    .is_some_and(|c| c.has(Cap::DeviceDisconnectAck))
                {
                    self.codec
                        .encode_into(0, &Packet::DeviceDisconnectAck, &mut self.out)?;
                }
                GuestEvent::DeviceDisconnected
            }
            Packet::ConfigurationStatus(status) => GuestEvent::ConfigurationStatus { id, status },
            Packet::AltSettingStatus(status) => GuestEvent::AltSettingStatus { id, status },
            Packet::ControlPacket(packet) => GuestEvent::Control { id, packet },
            Packet::BulkPacket(packet) => GuestEvent::Bulk { id, packet },
            packet => GuestEvent::Other(Frame { id, packet }),
        };
        Ok(Some(ev))
    }

    /// Sends `packet` with a fresh id and returns the id.
    pub fn send(&mut self, packet: &Packet) -> Result<u64, GuestError> {
        let id = self.next_id;
        self.send_with_id(id, packet)?;
        self.next_id += 1;
        Ok(id)
    }

    /// Sends `packet` with the given id (e.g. for `cancel_data_packet`).
    pub fn send_with_id(&mut self, id: u64, packet: &Packet) -> Result<(), GuestError> {
        Ok(self.codec.encode_into(id, packet, &mut self.out)?)
    }

    /// Control IN transfer (endpoint 0x80) asking for `length` bytes.
    pub fn control_in(
        &mut self,
        request_type: u8,
        request: u8,
        value: u16,
        index: u16,
        length: u16,
    ) -> Result<u64, GuestError> {
        self.control(
            0x80,
            [request_type, request],
            value,
            index,
            length,
            Bytes::new(),
        )
    }

    /// Control OUT transfer (endpoint 0x00) carrying `data`.
    pub fn control_out(
        &mut self,
        request_type: u8,
        request: u8,
        value: u16,
        index: u16,
        data: impl Into<Bytes>,
    ) -> Result<u64, GuestError> {
        let data = data.into();
        let length =
            u16::try_from(data.len()).map_err(|_| GuestError::ControlDataTooLong(data.len()))?;
        self.control(0x00, [request_type, request], value, index, length, data)
    }

    /// A control transfer on `endpoint`; `setup` is `[bmRequestType, bRequest]`.
    fn control(
        &mut self,
        endpoint: u8,
        [request_type, request]: [u8; 2],
        value: u16,
        index: u16,
        length: u16,
        data: Bytes,
    ) -> Result<u64, GuestError> {
        self.send(&Packet::ControlPacket(ControlPacket {
            endpoint,
            request,
            request_type,
            status: Status::Success,
            value,
            index,
            length,
            data,
        }))
    }

    /// Bulk IN transfer asking for `length` bytes.
    pub fn bulk_in(&mut self, endpoint: u8, length: u32) -> Result<u64, GuestError> {
        self.send(&Packet::BulkPacket(BulkPacket {
            endpoint: endpoint | 0x80,
            status: Status::Success,
            length,
            stream_id: 0,
            data: Bytes::new(),
        }))
    }

    /// Bulk OUT transfer carrying `data`.
    pub fn bulk_out(&mut self, endpoint: u8, data: impl Into<Bytes>) -> Result<u64, GuestError> {
        let data = data.into();
        self.send(&Packet::BulkPacket(BulkPacket {
            endpoint: endpoint & 0x7f,
            status: Status::Success,
            length: u32::try_from(data.len()).unwrap_or(u32::MAX),
            stream_id: 0,
            data,
        }))
    }

    /// `reset`.
    pub fn reset(&mut self) -> Result<(), GuestError> {
        self.send(&Packet::Reset).map(|_| ())
    }

    /// `set_configuration`; returns the id.
    pub fn set_configuration(&mut self, configuration: u8) -> Result<u64, GuestError> {
        self.send(&Packet::SetConfiguration(SetConfiguration {
            configuration,
        }))
    }

    /// `get_configuration`; returns the id.
    pub fn get_configuration(&mut self) -> Result<u64, GuestError> {
        self.send(&Packet::GetConfiguration)
    }

    /// `set_alt_setting`; returns the id.
    pub fn set_alt_setting(&mut self, interface: u8, alt: u8) -> Result<u64, GuestError> {
        self.send(&Packet::SetAltSetting(SetAltSetting { interface, alt }))
    }

    /// `get_alt_setting`; returns the id.
    pub fn get_alt_setting(&mut self, interface: u8) -> Result<u64, GuestError> {
        self.send(&Packet::GetAltSetting(GetAltSetting { interface }))
    }

    /// `cancel_data_packet` for the packet with id `id`.
    pub fn cancel(&mut self, id: u64) -> Result<(), GuestError> {
        self.send_with_id(id, &Packet::CancelDataPacket)
    }
}
