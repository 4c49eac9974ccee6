//! The emulated CD-ROM as a usbredir host: pure, synchronous glue between a
//! [`HostSession`] (the wire) and a [`UsbCdrom`] (the device model).
//!
//! [`CdromBridge`] does no I/O of its own except what the disc does (an
//! [`usb_cdrom::IsoFile`] reads its file when the guest reads sectors). The
//! async pump in [`crate::emulated`] feeds it bytes from the stream and
//! writes [`CdromBridge::take_output`] back.

use std::collections::HashMap;

use usb_cdrom::{
    Completion as DriveCompletion, DeviceConfig, Medium, MediumState, SetupPacket, TransferStatus,
    UsbCdrom,
};
use usbredir::host::{
    BulkRequest, Completion, ControlRequest, DeviceLayout, HostConfig, HostEvent, HostSession,
    Token,
};
use usbredir::{
    Cap, Caps, DeviceConnect, Endpoint, EndpointType, EpInfo, Interface, InterfaceInfo, Speed,
    Status,
};

use crate::error::SessionError;
use crate::progress::{Counters, PeerInfo};
use crate::session;

/// Input buffer limit: the guest only sends small packets to a CD drive
/// (CBWs, short parameter lists; IN requests carry no data), so a packet of
/// megabytes is an attack or garbage and ends the session.
pub const MAX_BUFFERED: usize = 4 * 1024 * 1024;

/// Output held by the bridge above which it stops handling received packets
/// until the output has been taken ([`CdromBridge::process`]). Without it, one
/// read of the stream full of large IN requests (a desktop's guest chooses
/// them, up to 128 MiB each and many per read, and with UAS in up to 32
/// streams) would make the drive read all of their data into memory before
/// any of it is written.
pub const OUTPUT_HIGH_WATER: usize = 8 * 1024 * 1024;

/// Something worth telling the user or the log that the bridge saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BridgeNote {
    /// The desktop's usb-redir sent its hello; the drive has been announced.
    PeerHello(PeerInfo),
    /// The desktop reset the drive (its USB stack is (re)enumerating it).
    Reset,
    /// The desktop selected a configuration (0 = unconfigured).
    Configured(u8),
    /// The desktop announced its device filter.
    Filter(String),
    /// The desktop selected an alternate setting of the drive's interface: 0
    /// Bulk-Only, 1 USB Attached SCSI.
    AltSetting(u8),
    /// The desktop allocated (`n` > 0) or freed (0) bulk streams for UAS.
    Streams(u32),
}

/// The emulated drive behind a usbredir host session.
///
/// Feed it the bytes the peer (QEMU's `usb-redir`, possibly through the
/// broker) sends with [`CdromBridge::feed`], and send it what
/// [`CdromBridge::take_output`] returns. Our hello is in the output from the
/// start; the drive is announced as soon as the peer's hello arrives.
#[derive(Debug)]
pub struct CdromBridge {
    session: HostSession,
    drive: UsbCdrom,
    /// Drive request ids (we use the token's counter) to session tokens.
    tokens: HashMap<u64, Token>,
    counters: Counters,
    peer: Option<PeerInfo>,
    /// Packets may be left unhandled because the output reached
    /// [`OUTPUT_HIGH_WATER`].
    paused: bool,
}

impl CdromBridge {
    /// A bridge for a drive built from `config`, with `medium` in it (or empty).
    pub fn new(
        config: DeviceConfig,
        medium: Option<Box<dyn Medium>>,
    ) -> Result<Self, SessionError> {
        let drive = match medium {
            Some(m) => UsbCdrom::with_medium(config, m),
            None => UsbCdrom::new(config),
        };
        // Bulk streams only when the drive has endpoints that use them (UAS).
        let caps = if drive.offers_uas() {
            Caps::HOST_DEFAULT.with(Cap::BulkStreams)
        } else {
            Caps::HOST_DEFAULT
        };
        let mut session = HostSession::new(HostConfig {
            max_buffered: MAX_BUFFERED,
            caps,
            ..HostConfig::default()
        });
        session.connect_device(device_connect(&drive), layout(&drive))?;
        Ok(CdromBridge {
            session,
            drive,
            tokens: HashMap::new(),
            counters: Counters::default(),
            peer: None,
            paused: false,
        })
    }

    /// The device model (read-only: medium state, configuration, ...).
    pub fn drive(&self) -> &UsbCdrom {
        &self.drive
    }

    /// The host session (negotiation state, attachment).
    pub fn session(&self) -> &HostSession {
        &self.session
    }

    /// The peer's hello, once it arrived.
    pub fn peer(&self) -> Option<&PeerInfo> {
        self.peer.as_ref()
    }

    /// Transfer counters so far.
    pub fn counters(&self) -> Counters {
        self.counters
    }

    /// Bytes to write to the peer, in order; the buffer is emptied.
    pub fn take_output(&mut self) -> Vec<u8> {
        self.session.take_output()
    }

    /// True if [`CdromBridge::take_output`] would return bytes.
    pub fn has_output(&self) -> bool {
        self.session.has_output()
    }

    /// Bytes of an incomplete packet held by the decoder.
    pub fn buffered_input(&self) -> usize {
        self.session.codec().buffered()
    }

    /// Processes bytes from the peer: every complete packet is handled and
    /// answered (answers go to the output). Returns what is worth logging.
    ///
    /// An error means the peer sent something invalid (or the peer's filter
    /// rejected the drive); the connection should be closed.
    ///
    /// Handling stops early once the output reaches [`OUTPUT_HIGH_WATER`]:
    /// then take the output and call [`CdromBridge::process`] until
    /// [`CdromBridge::is_paused`] is false, before feeding more.
    pub fn feed(&mut self, bytes: &[u8]) -> Result<Vec<BridgeNote>, SessionError> {
        self.session.feed(bytes)?;
        self.process()
    }

    /// Handles the packets received so far, until none is left or the
    /// output reaches [`OUTPUT_HIGH_WATER`].
    pub fn process(&mut self) -> Result<Vec<BridgeNote>, SessionError> {
        let mut notes = Vec::new();
        self.paused = false;
        loop {
            if self.session.output_len() >= OUTPUT_HIGH_WATER {
                self.paused = true;
                return Ok(notes);
            }
            let Some(ev) = self.session.next_event()? else {
                return Ok(notes);
            };
            if let Some(note) = self.handle(ev)? {
                notes.push(note);
            }
            self.drain()?;
        }
    }

    /// True if received packets wait for [`CdromBridge::process`] because the
    /// output reached [`OUTPUT_HIGH_WATER`].
    pub fn is_paused(&self) -> bool {
        self.paused
    }

    /// Puts a disc in the drive; the guest sees a media change at its next
    /// poll. Returns the disc it replaces.
    pub fn insert_medium(&mut self, medium: Box<dyn Medium>) -> Option<Box<dyn Medium>> {
        let old = self.drive.insert_medium(medium);
        // A changed medium may let waiting requests complete (NOT READY).
        let _ = self.drain();
        old
    }

    /// Takes the disc out (whatever the guest's lock); the guest sees the
    /// removal at its next poll.
    pub fn remove_medium(&mut self) -> Option<Box<dyn Medium>> {
        let old = self.drive.remove_medium();
        let _ = self.drain();
        old
    }

    /// Where the disc is.
    pub fn medium_state(&self) -> MediumState {
        self.drive.medium_state()
    }

    /// Announces `device_disconnect` (the drive is unplugged from the
    /// desktop). Does nothing if the drive was never announced.
    pub fn unplug(&mut self) -> Result<(), SessionError> {
        match self.session.disconnect_device() {
            Ok(()) | Err(usbredir::host::SessionError::NotConnected) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    fn handle(&mut self, ev: HostEvent) -> Result<Option<BridgeNote>, SessionError> {
        match ev {
            HostEvent::PeerHello { version, caps } => {
                let info = PeerInfo {
                    version,
                    caps: caps.bits(),
                };
                self.peer = Some(info.clone());
                return Ok(Some(BridgeNote::PeerHello(info)));
            }
            HostEvent::Control(r) => self.control(r)?,
            HostEvent::Bulk(r) => self.bulk(r)?,
            HostEvent::InterruptOut(r) => {
                // The drive has no interrupt endpoint; the session already
                // refuses packets to non-interrupt endpoints, so this cannot
                // happen with our layout. Answer it anyway.
                self.session.complete_out(r.token, Status::Inval, 0)?;
            }
            HostEvent::Cancelled { token, .. } => {
                // Already answered as cancelled by the session; the drive's
                // own completion (if any) is discarded in `drain`.
                self.drive.cancel(token.get());
            }
            HostEvent::Reset { .. } => {
                self.drive.reset();
                return Ok(Some(BridgeNote::Reset));
            }
            HostEvent::SetConfiguration { id, configuration } => {
                // The session has answered every pending transfer as
                // cancelled; the drive must forget them too (it does so
                // itself only for a valid configuration).
                self.cancel_drive_requests();
                let ok = self.drive.set_configuration(configuration);
                let (status, layout) = if ok {
                    (Status::Success, Some(layout(&self.drive)))
                } else {
                    (Status::Stall, None)
                };
                self.session.reply_set_configuration(
                    id,
                    status,
                    self.drive.configuration(),
                    layout,
                )?;
                if ok {
                    return Ok(Some(BridgeNote::Configured(configuration)));
                }
            }
            HostEvent::GetConfiguration { id } => {
                self.session.reply_get_configuration(
                    id,
                    Status::Success,
                    self.drive.configuration(),
                )?;
            }
            HostEvent::SetAltSetting { id, interface, alt } => {
                // The session answered the transfers of this interface's
                // endpoints as cancelled; every bulk endpoint of the drive
                // belongs to its only interface.
                if self
                    .drive
                    .interfaces()
                    .iter()
                    .any(|i| i.number == interface)
                {
                    self.cancel_drive_requests();
                }
                if self.drive.set_interface(interface, alt) {
                    let layout = Some(layout(&self.drive));
                    session::reply_set_alt(&mut self.session, id, interface, alt, layout)?;
                    return Ok(Some(BridgeNote::AltSetting(alt)));
                }
                session::reply_set_alt(&mut self.session, id, interface, 255, None)?;
            }
            HostEvent::GetAltSetting { id, interface } => {
                let known = self.drive.configuration() != 0
                    && self
                        .drive
                        .interfaces()
                        .iter()
                        .any(|i| i.number == interface);
                let alt = known.then(|| self.drive.alt_setting());
                session::reply_get_alt(&mut self.session, id, interface, alt)?;
            }
            HostEvent::FilterFilter { rules } => return Ok(Some(BridgeNote::Filter(rules))),
            // The session checked the allocation against the layout and answered
            // it; the drive takes any stream id the session lets through.
            HostEvent::StreamsChanged { no_streams, .. } => {
                return Ok(Some(BridgeNote::Streams(no_streams)));
            }
            other => session::other_event(other)?,
        }
        Ok(None)
    }

    /// Cancels every request the drive still holds (their completions are
    /// discarded by the session, which has already answered them).
    fn cancel_drive_requests(&mut self) {
        let ids: Vec<u64> = self.tokens.keys().copied().collect();
        for id in ids {
            self.drive.cancel(id);
        }
    }

    fn control(&mut self, r: ControlRequest) -> Result<(), SessionError> {
        let setup = SetupPacket::new(r.request_type, r.request, r.value, r.index, r.length);
        let result = self.drive.control(setup, &r.data);
        let status = map_status(result.status);
        if r.is_in() {
            let mut data = result.data;
            data.truncate(usize::from(r.length));
            self.session.complete_in(r.token, status, data)?;
        } else {
            let done = if status == Status::Success {
                u32::from(r.length)
            } else {
                0
            };
            self.session.complete_out(r.token, status, done)?;
        }
        Ok(())
    }

    fn bulk(&mut self, r: BulkRequest) -> Result<(), SessionError> {
        // The session lets a stream id through only on endpoints whose
        // streams the guest allocated; the drive checks it fits the pipe.
        let id = r.token.get();
        self.tokens.insert(id, r.token);
        if r.is_in() {
            self.drive
                .submit_bulk_in_stream(r.endpoint, r.stream_id, id, r.length);
        } else {
            self.drive
                .submit_bulk_out_stream(r.endpoint, r.stream_id, id, &r.data);
        }
        Ok(())
    }

    /// Sends every completion the drive produced.
    fn drain(&mut self) -> Result<(), SessionError> {
        for c in self.drive.take_completions() {
            self.complete(c)?;
        }
        Ok(())
    }

    fn complete(&mut self, c: DriveCompletion) -> Result<(), SessionError> {
        let Some(token) = self.tokens.remove(&c.id) else {
            // Not ours (cannot happen: every id comes from a token).
            tracing::warn!(id = c.id, "completion for an unknown drive request dropped");
            return Ok(());
        };
        let status = map_status(c.status);
        let sent = if usbredir::is_in_endpoint(c.endpoint) {
            let n = c.data.len() as u64;
            let sent = self.session.complete_in(token, status, c.data)?;
            if sent == Completion::Sent {
                self.counters.bytes_to_guest += n;
                self.counters.transfers += 1;
            }
            sent
        } else {
            let sent = self.session.complete_out(token, status, c.length)?;
            if sent == Completion::Sent {
                self.counters.bytes_from_guest += u64::from(c.length);
                self.counters.transfers += 1;
            }
            sent
        };
        let _ = sent;
        Ok(())
    }
}

/// Maps the device model's transfer status to the usbredir status.
pub fn map_status(s: TransferStatus) -> Status {
    match s {
        TransferStatus::Success => Status::Success,
        TransferStatus::Stall => Status::Stall,
        TransferStatus::Cancelled => Status::Cancelled,
        TransferStatus::Babble => Status::Babble,
        TransferStatus::Invalid => Status::Inval,
    }
}

/// The `device_connect` of the emulated drive.
pub fn device_connect(drive: &UsbCdrom) -> DeviceConnect {
    let c = drive.config();
    DeviceConnect {
        speed: redir_speed(drive.speed()),
        // Class defined per interface, as in the device descriptor.
        device_class: 0,
        device_subclass: 0,
        device_protocol: 0,
        vendor_id: c.vendor_id,
        product_id: c.product_id,
        device_version_bcd: c.device_release,
    }
}

/// The usbredir speed of a device model speed.
pub fn redir_speed(speed: usb_cdrom::Speed) -> Speed {
    match speed {
        usb_cdrom::Speed::Full => Speed::Full,
        usb_cdrom::Speed::High => Speed::High,
        usb_cdrom::Speed::Super => Speed::Super,
    }
}

/// The interfaces and endpoints of the emulated drive in its current
/// configuration (none while unconfigured). Endpoint 0 and the bulk
/// endpoints carry the drive's max packet sizes at its speed (at
/// SuperSpeed 512 and 1024).
pub fn layout(drive: &UsbCdrom) -> DeviceLayout {
    let mut interfaces = InterfaceInfo::default();
    let mut endpoints = EpInfo::new();
    let ep0 = Endpoint {
        ep_type: EndpointType::Control,
        max_packet_size: drive.ep0_max_packet(),
        ..Endpoint::INVALID
    };
    endpoints.set(0x00, ep0);
    endpoints.set(0x80, ep0);
    if drive.configuration() != 0 {
        interfaces.interfaces = drive
            .interfaces()
            .iter()
            .map(|i| Interface {
                number: i.number,
                class: i.class,
                subclass: i.subclass,
                protocol: i.protocol,
            })
            .collect();
        for e in drive.endpoints() {
            let ep_type = match e.transfer_type {
                usb_cdrom::TransferType::Control => EndpointType::Control,
                usb_cdrom::TransferType::Isochronous => EndpointType::Iso,
                usb_cdrom::TransferType::Bulk => EndpointType::Bulk,
                usb_cdrom::TransferType::Interrupt => EndpointType::Interrupt,
            };
            endpoints.set(
                e.address,
                Endpoint {
                    ep_type,
                    interval: e.interval,
                    interface: e.interface,
                    max_packet_size: e.max_packet_size,
                    max_streams: e.max_streams,
                },
            );
        }
    }
    DeviceLayout {
        interfaces,
        endpoints,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use usb_cdrom::{Cbw, Csw, CswStatus, MemoryMedium, BULK_IN_ENDPOINT, BULK_OUT_ENDPOINT};
    use usbredir::guest::{GuestEvent, GuestSession};
    use usbredir::Caps;

    /// A guest (like QEMU) talking to a bridge in memory.
    struct Pair {
        guest: GuestSession,
        bridge: CdromBridge,
        events: Vec<GuestEvent>,
    }

    impl Pair {
        fn new(medium: Option<Box<dyn Medium>>) -> Pair {
            Pair::with_caps(medium, Caps::from_bits(0xFE))
        }

        /// With the guest announcing `caps` (QEMU: 0xFF, bulk streams included).
        fn with_caps(medium: Option<Box<dyn Medium>>, caps: Caps) -> Pair {
            let bridge = CdromBridge::new(DeviceConfig::default(), medium).unwrap();
            let guest = GuestSession::new("test guest", caps);
            let mut p = Pair {
                guest,
                bridge,
                events: Vec::new(),
            };
            p.pump();
            p
        }

        /// A configured drive with a 32-sector disc.
        fn configured() -> Pair {
            let mut p = Pair::new(Some(Box::new(MemoryMedium::patterned("a", 32))));
            p.guest.set_configuration(1).unwrap();
            p.pump();
            p
        }

        /// As [`Pair::configured`], with the power-on unit attention cleared
        /// (TEST UNIT READY, REQUEST SENSE).
        fn ready() -> Pair {
            let mut p = Pair::configured();
            p.command_in(1, 0, &[0; 6]);
            p.command_in(2, 18, &[0x03, 0, 0, 0, 18, 0]);
            p
        }

        /// Moves bytes both ways until quiet; collects guest events.
        fn pump(&mut self) -> Vec<BridgeNote> {
            let mut notes = Vec::new();
            loop {
                let to_host = self.guest.take_output();
                let mut progressed = false;
                if !to_host.is_empty() {
                    notes.extend(self.bridge.feed(&to_host).unwrap());
                    progressed = true;
                }
                let to_guest = self.bridge.take_output();
                if !to_guest.is_empty() {
                    self.guest.feed(&to_guest).unwrap();
                    while let Some(ev) = self.guest.next_event().unwrap() {
                        self.events.push(ev);
                    }
                    progressed = true;
                }
                if self.bridge.is_paused() {
                    notes.extend(self.bridge.process().unwrap());
                    progressed = true;
                }
                if !progressed {
                    return notes;
                }
            }
        }

        fn bulk_reply(&self, id: u64) -> Option<&usbredir::BulkPacket> {
            self.events.iter().find_map(|e| match e {
                GuestEvent::Bulk { id: i, packet } if *i == id => Some(packet),
                _ => None,
            })
        }

        fn control_reply(&self, id: u64) -> Option<&usbredir::ControlPacket> {
            self.events.iter().find_map(|e| match e {
                GuestEvent::Control { id: i, packet } if *i == id => Some(packet),
                _ => None,
            })
        }

        /// Runs one SCSI command with data in; returns (data, csw).
        fn command_in(&mut self, tag: u32, len: u32, cdb: &[u8]) -> (Vec<u8>, Csw) {
            let cbw = crate::drive::probe::data_in_cbw(tag, len, cdb);
            let out = self
                .guest
                .bulk_out(BULK_OUT_ENDPOINT, cbw.to_bytes().to_vec())
                .unwrap();
            let data_id = (len > 0).then(|| self.guest.bulk_in(BULK_IN_ENDPOINT, len).unwrap());
            let csw_id = self.guest.bulk_in(BULK_IN_ENDPOINT, 13).unwrap();
            self.pump();
            assert_eq!(self.bulk_reply(out).unwrap().status, Status::Success);
            let data = data_id
                .map(|id| self.bulk_reply(id).unwrap().data.to_vec())
                .unwrap_or_default();
            let csw = Csw::parse(&self.bulk_reply(csw_id).unwrap().data).unwrap();
            (data, csw)
        }
    }

    #[test]
    fn announces_only_after_the_peer_hello_in_qemu_order() {
        let mut bridge = CdromBridge::new(DeviceConfig::default(), None).unwrap();
        let hello = bridge.take_output();
        assert_eq!(hello.len(), 80, "only our hello before the peer's");
        assert!(!bridge.has_output());
        let mut guest = GuestSession::new("qemu usb-redir guest 7.2.22", Caps::from_bits(0xFE));
        guest.feed(&hello).unwrap();
        let notes = bridge.feed(&guest.take_output()).unwrap();
        assert!(
            matches!(&notes[..], [BridgeNote::PeerHello(p)] if p.version.starts_with("qemu") && p.caps == 0xFE),
            "{notes:?}"
        );
        guest.feed(&bridge.take_output()).unwrap();
        let mut kinds = Vec::new();
        while let Some(ev) = guest.next_event().unwrap() {
            kinds.push(match ev {
                GuestEvent::PeerHello { .. } => "hello",
                GuestEvent::InterfaceInfo(_) => "interface_info",
                GuestEvent::EpInfo(_) => "ep_info",
                GuestEvent::DeviceConnected { .. } => "device_connect",
                _ => "other",
            });
        }
        assert_eq!(
            kinds,
            ["hello", "interface_info", "ep_info", "device_connect"]
        );
    }

    #[test]
    fn enumerates_and_reads_like_a_guest() {
        let disc = MemoryMedium::patterned("disc", 64);
        let mut p = Pair::new(Some(Box::new(disc)));
        let connected = p
            .events
            .iter()
            .find_map(|e| match e {
                GuestEvent::DeviceConnected {
                    device,
                    interfaces,
                    endpoints,
                } => Some((*device, interfaces.clone(), endpoints.clone())),
                _ => None,
            })
            .expect("device announced");
        // SuperSpeed by default: what QEMU puts on an xHCI USB 3 port.
        assert_eq!(connected.0.speed, Speed::Super);
        assert_eq!(connected.0.vendor_id, 0x1209);
        assert_eq!(connected.1.interfaces[0].class, 0x08);
        assert_eq!(connected.2.get(0x81).ep_type, EndpointType::Bulk);
        assert_eq!(connected.2.get(0x81).max_packet_size, 1024);
        assert_eq!(connected.2.get(0x02).max_packet_size, 1024);
        assert_eq!(connected.2.get(0x00).max_packet_size, 512);
        assert_eq!(connected.2.get(0x80).max_packet_size, 512);

        // Reset then GET_DESCRIPTOR(device).
        p.guest.reset().unwrap();
        let notes = p.pump();
        assert_eq!(notes, vec![BridgeNote::Reset]);
        let id = p.guest.control_in(0x80, 6, 0x0100, 0, 18).unwrap();
        p.pump();
        let r = p.control_reply(id).unwrap();
        assert_eq!(r.status, Status::Success);
        assert_eq!(r.data.len(), 18);
        assert_eq!(&r.data[2..4], &[0x00, 0x03], "bcdUSB 3.00");
        assert_eq!(r.data[7], 9, "bMaxPacketSize0 2^9");
        assert_eq!(&r.data[8..10], &0x1209u16.to_le_bytes());
        // The BOS a guest reads from a USB 3 device.
        let id = p.guest.control_in(0x80, 6, 0x0F00, 0, 255).unwrap();
        p.pump();
        let r = p.control_reply(id).unwrap();
        assert_eq!((r.status, r.data.len()), (Status::Success, 22));

        // set_configuration(1) is answered with the layout then the status.
        let id = p.guest.set_configuration(1).unwrap();
        assert_eq!(p.pump(), vec![BridgeNote::Configured(1)]);
        assert!(p.events.iter().any(|e| matches!(e,
            GuestEvent::ConfigurationStatus { id: i, status } if *i == id && status.status == Status::Success && status.configuration == 1)));

        // GET MAX LUN.
        let id = p.guest.control_in(0xA1, 0xFE, 0, 0, 1).unwrap();
        p.pump();
        assert_eq!(&p.control_reply(id).unwrap().data[..], &[0]);

        // Unit attention after reset, then INQUIRY.
        let (_, csw) = p.command_in(1, 0, &[0, 0, 0, 0, 0, 0]);
        assert_eq!(csw.status, CswStatus::Failed);
        let (_, csw) = p.command_in(2, 18, &[0x03, 0, 0, 0, 18, 0]);
        assert_eq!(csw.status, CswStatus::Passed);
        let (data, csw) = p.command_in(3, 36, &[0x12, 0, 0, 0, 36, 0]);
        assert_eq!(csw.status, CswStatus::Passed);
        assert_eq!(data[0], 0x05);

        // READ(10) 2 sectors from LBA 16 matches the pattern.
        let (data, csw) = p.command_in(4, 4096, &[0x28, 0, 0, 0, 0, 16, 0, 0, 2, 0]);
        assert_eq!(csw.status, CswStatus::Passed);
        let mut want = vec![0u8; 4096];
        usb_cdrom::medium::fill_pattern(16, &mut want[..2048]);
        usb_cdrom::medium::fill_pattern(17, &mut want[2048..]);
        assert_eq!(data, want);
        assert!(p.bridge.counters().bytes_to_guest >= 4096);
    }

    #[test]
    fn high_speed_is_a_configuration_choice() {
        let config = DeviceConfig {
            speed: usb_cdrom::Speed::High,
            ..DeviceConfig::default()
        };
        let mut bridge = CdromBridge::new(config, None).unwrap();
        let mut guest = GuestSession::new("test guest", Caps::from_bits(0xFE));
        guest.feed(&bridge.take_output()).unwrap();
        bridge.feed(&guest.take_output()).unwrap();
        guest.feed(&bridge.take_output()).unwrap();
        let mut announced = None;
        while let Some(ev) = guest.next_event().unwrap() {
            if let GuestEvent::DeviceConnected {
                device, endpoints, ..
            } = ev
            {
                announced = Some((device.speed, endpoints));
            }
        }
        let (speed, endpoints) = announced.expect("device announced");
        assert_eq!(speed, Speed::High);
        assert_eq!(endpoints.get(0x00).max_packet_size, 64);
        assert_eq!(endpoints.get(0x81).max_packet_size, 512);
        assert_eq!(endpoints.get(0x02).max_packet_size, 512);
        assert_eq!(redir_speed(usb_cdrom::Speed::Full), Speed::Full);
    }

    #[test]
    fn eject_and_insert_are_seen_by_the_guest() {
        let mut p = Pair::ready();
        let (_, csw) = p.command_in(3, 0, &[0; 6]);
        assert_eq!(csw.status, CswStatus::Passed);

        assert!(p.bridge.remove_medium().is_some());
        assert_eq!(p.bridge.medium_state(), MediumState::Empty);
        let (_, csw) = p.command_in(4, 0, &[0; 6]);
        assert_eq!(csw.status, CswStatus::Failed);
        let (sense, _) = p.command_in(5, 18, &[0x03, 0, 0, 0, 18, 0]);
        assert_eq!(
            (sense[2] & 0x0f, sense[12]),
            (0x02, 0x3A),
            "NOT READY, no medium"
        );

        assert!(p
            .bridge
            .insert_medium(Box::new(MemoryMedium::patterned("b", 48)))
            .is_none());
        let (_, csw) = p.command_in(6, 0, &[0; 6]);
        assert_eq!(csw.status, CswStatus::Failed);
        let (sense, _) = p.command_in(7, 18, &[0x03, 0, 0, 0, 18, 0]);
        assert_eq!((sense[2] & 0x0f, sense[12]), (0x06, 0x28), "medium changed");
        let (cap, _) = p.command_in(8, 8, &[0x25, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(u32::from_be_bytes([cap[0], cap[1], cap[2], cap[3]]), 47);
    }

    #[test]
    fn cancel_and_pipelined_in_requests() {
        let mut p = Pair::configured();
        // Two IN requests queued with nothing to send, then cancel the first.
        let a = p.guest.bulk_in(BULK_IN_ENDPOINT, 512).unwrap();
        let b = p.guest.bulk_in(BULK_IN_ENDPOINT, 13).unwrap();
        p.pump();
        assert!(p.bulk_reply(a).is_none());
        p.guest.cancel(a).unwrap();
        p.pump();
        assert_eq!(p.bulk_reply(a).unwrap().status, Status::Cancelled);
        // `b` still waits, then gets the CSW of a TEST UNIT READY.
        let cbw = Cbw {
            tag: 9,
            data_transfer_length: 0,
            data_in: false,
            lun: 0,
            cb_length: 6,
            cb: [0; 16],
        };
        p.guest
            .bulk_out(BULK_OUT_ENDPOINT, cbw.to_bytes().to_vec())
            .unwrap();
        p.pump();
        let csw = Csw::parse(&p.bulk_reply(b).unwrap().data).unwrap();
        assert_eq!(csw.tag, 9);
        assert_eq!(p.bridge.tokens.len(), 0, "no request left behind");
    }

    #[test]
    fn reset_cancels_waiting_requests_and_streams_are_refused() {
        let mut p = Pair::new(None);
        p.guest.set_configuration(1).unwrap();
        p.pump();
        let a = p.guest.bulk_in(BULK_IN_ENDPOINT, 512).unwrap();
        p.pump();
        p.guest.reset().unwrap();
        p.pump();
        assert_eq!(p.bulk_reply(a).unwrap().status, Status::Cancelled);
        assert!(p.bridge.tokens.is_empty());

        let id = p
            .guest
            .send(&usbredir::Packet::BulkPacket(usbredir::BulkPacket {
                endpoint: BULK_IN_ENDPOINT,
                status: Status::Success,
                length: 512,
                stream_id: 3,
                data: usbredir::Bytes::new(),
            }))
            .unwrap();
        p.pump();
        assert_eq!(p.bulk_reply(id).unwrap().status, Status::Inval);
    }

    #[test]
    fn a_flood_of_large_in_requests_pauses_at_the_high_water_mark() {
        // 16 MiB of disc; the unit attention is cleared first.
        let disc = MemoryMedium::patterned("disc", 8192);
        let mut p = Pair::new(Some(Box::new(disc)));
        p.command_in(1, 0, &[0, 0, 0, 0, 0, 0]);
        p.command_in(2, 0, &[0, 0, 0, 0, 0, 0]);
        // READ(10) of 16 MiB, then eight 2 MiB IN requests and the CSW request,
        // all in one read of the stream.
        let read = [0x28, 0, 0, 0, 0, 0, 0, 0x20, 0, 0];
        let cbw = crate::drive::probe::data_in_cbw(3, 16 << 20, &read);
        p.guest
            .bulk_out(BULK_OUT_ENDPOINT, cbw.to_bytes().to_vec())
            .unwrap();
        let ids: Vec<u64> = (0..8)
            .map(|_| p.guest.bulk_in(BULK_IN_ENDPOINT, 2 << 20).unwrap())
            .collect();
        let csw = p.guest.bulk_in(BULK_IN_ENDPOINT, 13).unwrap();
        let bytes = p.guest.take_output();
        p.bridge.feed(&bytes).unwrap();
        assert!(p.bridge.is_paused());
        let held = p.bridge.session().output_len();
        assert!(
            (OUTPUT_HIGH_WATER..OUTPUT_HIGH_WATER + (3 << 20)).contains(&held),
            "{held} bytes held"
        );
        // Taking the output and going on delivers everything, in order.
        p.pump();
        assert!(!p.bridge.is_paused());
        for id in ids {
            assert_eq!(p.bulk_reply(id).unwrap().data.len(), 2 << 20);
        }
        let csw = Csw::parse(&p.bulk_reply(csw).unwrap().data).unwrap();
        assert_eq!((csw.tag, csw.status), (3, CswStatus::Passed));
    }

    #[test]
    fn uas_with_bulk_streams_through_the_session() {
        use usb_cdrom::descriptors::{UAS_COMMAND_ENDPOINT, UAS_STATUS_ENDPOINT};
        use usb_cdrom::uas;
        let disc = MemoryMedium::patterned("disc", 64);
        let mut p = Pair::with_caps(Some(Box::new(disc)), Caps::QEMU_GUEST);
        // Streams before the UAS alternate setting: the Bulk-Only endpoints have none.
        let streams = |p: &mut Pair, no_streams| {
            p.guest
                .send(
                    &usbredir::AllocBulkStreams {
                        endpoints: (1 << 0x13) | (1 << 0x11) | (1 << 0x02),
                        no_streams,
                    }
                    .into(),
                )
                .unwrap()
        };
        let refused = streams(&mut p, 32);
        p.pump();
        p.guest.set_alt_setting(0, 1).unwrap();
        let ok = streams(&mut p, 32);
        let notes = p.pump();
        assert!(notes.contains(&BridgeNote::Streams(32)), "{notes:?}");
        let status_of = |p: &Pair, id| {
            p.events.iter().find_map(|e| match e {
                GuestEvent::Other(f) if f.id == id => match &f.packet {
                    usbredir::Packet::BulkStreamsStatus(s) => Some(s.status),
                    _ => None,
                },
                _ => None,
            })
        };
        assert_eq!(status_of(&p, refused), Some(Status::Inval));
        assert_eq!(status_of(&p, ok), Some(Status::Success));
        // A READ(10) of 2 sectors in stream 5, the Linux uas way: status, data, command.
        let send = |p: &mut Pair, endpoint, stream_id, length, data: Vec<u8>| {
            p.guest
                .send(&usbredir::Packet::BulkPacket(usbredir::BulkPacket {
                    endpoint,
                    status: Status::Success,
                    length,
                    stream_id,
                    data: data.into(),
                }))
                .unwrap()
        };
        let tur = uas::CommandIu {
            tag: 5,
            prio_task_attribute: 0,
            lun: 0,
            cdb: [0; 16],
        };
        let st = send(&mut p, UAS_STATUS_ENDPOINT, 5, 112, Vec::new());
        send(&mut p, UAS_COMMAND_ENDPOINT, 0, 32, tur.to_bytes().to_vec());
        p.pump();
        assert_eq!(
            p.bulk_reply(st).unwrap().data[6],
            uas::STATUS_CHECK_CONDITION
        );
        let mut read = tur;
        read.cdb[..10].copy_from_slice(&[0x28, 0, 0, 0, 0, 4, 0, 0, 2, 0]);
        let st = send(&mut p, UAS_STATUS_ENDPOINT, 5, 112, Vec::new());
        let data = send(&mut p, BULK_IN_ENDPOINT, 5, 1 << 20, Vec::new());
        send(
            &mut p,
            UAS_COMMAND_ENDPOINT,
            0,
            32,
            read.to_bytes().to_vec(),
        );
        p.pump();
        assert_eq!(p.bulk_reply(data).unwrap().data.len(), 4096);
        assert_eq!(
            p.bulk_reply(st).unwrap().data[..],
            uas::sense_iu(5, uas::STATUS_GOOD, &[])[..]
        );
        assert!(p.bridge.tokens.is_empty());
    }

    #[test]
    fn set_alt_setting_and_bad_set_configuration_leave_no_zombie_requests() {
        let mut p = Pair::ready();
        for (round, change) in ["alt", "config"].into_iter().enumerate() {
            // An IN request waits; the guest changes the setting, which
            // answers it as cancelled.
            let stale = p.guest.bulk_in(BULK_IN_ENDPOINT, 13).unwrap();
            p.pump();
            match change {
                "alt" => p.guest.set_alt_setting(0, 0).unwrap(),
                _ => p.guest.set_configuration(9).unwrap(),
            };
            p.pump();
            assert_eq!(p.bulk_reply(stale).unwrap().status, Status::Cancelled);
            assert!(p.bridge.tokens.is_empty(), "{change}: drive forgot it");
            // The next command's CSW goes to the new request.
            let tag = 10 + round as u32;
            let (_, csw) = p.command_in(tag, 0, &[0; 6]);
            assert_eq!((csw.tag, csw.status), (tag, CswStatus::Passed), "{change}");
        }
    }

    #[test]
    fn alt_settings_and_configuration_queries() {
        let mut p = Pair::new(None);
        let id = p.guest.get_configuration().unwrap();
        p.pump();
        assert!(p.events.iter().any(|e| matches!(e,
            GuestEvent::ConfigurationStatus { id: i, status } if *i == id && status.configuration == 1)));
        let id = p.guest.set_alt_setting(0, 0).unwrap();
        p.pump();
        assert!(p.events.iter().any(|e| matches!(e,
            GuestEvent::AltSettingStatus { id: i, status } if *i == id && status.status == Status::Success)));
        let id = p.guest.set_alt_setting(0, 2).unwrap();
        p.pump();
        assert!(p.events.iter().any(|e| matches!(e,
            GuestEvent::AltSettingStatus { id: i, status } if *i == id && status.status == Status::Stall)));
        // Alternate setting 1 is UAS (the drive is SuperSpeed by default).
        let id = p.guest.set_alt_setting(0, 1).unwrap();
        let notes = p.pump();
        assert!(notes.contains(&BridgeNote::AltSetting(1)));
        assert!(p.events.iter().any(|e| matches!(e,
            GuestEvent::AltSettingStatus { id: i, status } if *i == id && status.status == Status::Success)));
        let id = p.guest.get_alt_setting(0).unwrap();
        p.pump();
        assert!(p.events.iter().any(|e| matches!(e,
            GuestEvent::AltSettingStatus { id: i, status } if *i == id && status.alt == 1)));
        let id = p.guest.get_alt_setting(5).unwrap();
        p.pump();
        assert!(p.events.iter().any(|e| matches!(e,
            GuestEvent::AltSettingStatus { id: i, status } if *i == id && status.status == Status::Inval && status.alt == 255)));
        // Unknown configuration value: stall, configuration unchanged.
        let id = p.guest.set_configuration(7).unwrap();
        p.pump();
        assert!(p.events.iter().any(|e| matches!(e,
            GuestEvent::ConfigurationStatus { id: i, status } if *i == id && status.status == Status::Stall && status.configuration == 1)));
    }

    #[test]
    fn filter_reject_and_garbage_are_errors() {
        let mut p = Pair::new(None);
        p.guest.send(&usbredir::Packet::FilterReject).unwrap();
        let bytes = p.guest.take_output();
        assert!(matches!(
            p.bridge.feed(&bytes),
            Err(SessionError::FilterRejected)
        ));

        let mut b = CdromBridge::new(DeviceConfig::default(), None).unwrap();
        let err = b.feed(&[0xFF; 64]).unwrap_err();
        assert!(matches!(err, SessionError::Protocol(_)), "{err}");
    }

    #[test]
    fn oversized_packets_are_refused_early() {
        let mut p = Pair::new(None);
        // A bulk OUT header announcing 64 MiB of data: refused on the header.
        let mut hdr = Vec::new();
        hdr.extend(101u32.to_le_bytes());
        hdr.extend((10u32 + (64 << 20)).to_le_bytes());
        hdr.extend(1u64.to_le_bytes());
        let err = p.bridge.feed(&hdr).unwrap_err();
        assert!(err.to_string().contains("exceeds"), "{err}");
    }

    #[test]
    fn unplug_sends_device_disconnect() {
        let mut p = Pair::new(None);
        p.bridge.unplug().unwrap();
        p.pump();
        assert!(p
            .events
            .iter()
            .any(|e| matches!(e, GuestEvent::DeviceDisconnected)));
        // Unplugging twice is harmless.
        p.bridge.unplug().unwrap();
    }
}
