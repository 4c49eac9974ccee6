//! The USB device: endpoint 0 requests, bulk request queues and the Bulk-Only Transport
//! state machine in front of the SCSI target.
//!
//! # Transfer model
//!
//! The caller (a usbredir host session) submits bulk requests with its own ids and
//! collects [`Completion`]s from [`UsbCdrom::take_completions`] after every call.
//!
//! * Bulk IN requests queue up and complete strictly in order. Each is filled the way a
//!   host controller fills a transfer: it ends when it is full, after a short packet
//!   (the data phase ended on a boundary that is not a multiple of the bulk max packet
//!   size, 512 bytes at high speed or 1024 at SuperSpeed, or the 13-byte CSW), or on a
//!   STALL. A data phase ending on a packet boundary runs on into the CSW in the same
//!   request, so one large (QEMU-combined, up to 1 MiB or more) request can carry data
//!   and CSW.
//! * Bulk OUT requests complete as soon as the device can take the data; an OUT that
//!   arrives while the device still has data or a CSW to send waits (as a NAKed OUT
//!   would) until the host has read them.
//! * A halted endpoint fails the first waiting request with `Stall`; later ones wait, as
//!   on a host controller whose ring stops at a stall, until the halt is cleared
//!   (CLEAR_FEATURE) or they are cancelled.

use std::collections::VecDeque;

use crate::bot::{Cbw, Csw, CswStatus, CSW_LEN};
use crate::config::{DeviceConfig, OverrunPolicy};
use crate::descriptors::{
    self, Descriptors, BULK_IN_ENDPOINT, BULK_OUT_ENDPOINT, INTERFACE, INTERFACE_UAS,
    UAS_COMMAND_ENDPOINT, UAS_DATA_IN_ENDPOINT, UAS_DATA_OUT_ENDPOINT, UAS_STATUS_ENDPOINT,
};
use crate::medium::{Medium, SECTOR_SIZE};
use crate::scsi::{DataIn, MediumState, Outcome, ScsiTarget};
use crate::sense::Sense;
use crate::uas::{StreamPipe, Uas};
use crate::usb::{
    Completion, ControlResult, EndpointInfo, InterfaceInfo, SetupPacket, Speed, TransferStatus,
};

/// Standard request codes.
mod request {
    pub const GET_STATUS: u8 = 0x00;
    pub const CLEAR_FEATURE: u8 = 0x01;
    pub const SET_FEATURE: u8 = 0x03;
    pub const SET_ADDRESS: u8 = 0x05;
    pub const GET_DESCRIPTOR: u8 = 0x06;
    pub const GET_CONFIGURATION: u8 = 0x08;
    pub const SET_CONFIGURATION: u8 = 0x09;
    pub const GET_INTERFACE: u8 = 0x0A;
    pub const SET_INTERFACE: u8 = 0x0B;
    /// SuperSpeed: SET_SEL (system exit latencies, 6 bytes of data).
    pub const SET_SEL: u8 = 0x30;
    /// SuperSpeed: SET_ISOCH_DELAY.
    pub const SET_ISOCH_DELAY: u8 = 0x31;
    /// BOT class request: GET MAX LUN.
    pub const GET_MAX_LUN: u8 = 0xFE;
    /// BOT class request: Bulk-Only Mass Storage Reset.
    pub const MASS_STORAGE_RESET: u8 = 0xFF;
}

/// `wIndex` of the UAS pipes that are not also Bulk-Only endpoints.
const UAS_STATUS_ENDPOINT_U16: u16 = UAS_STATUS_ENDPOINT as u16;
const UAS_COMMAND_ENDPOINT_U16: u16 = UAS_COMMAND_ENDPOINT as u16;

/// Feature selector ENDPOINT_HALT.
const ENDPOINT_HALT: u16 = 0;
/// Device feature selector U1_ENABLE (SuperSpeed).
const U1_ENABLE: u16 = 48;
/// Device feature selector U2_ENABLE (SuperSpeed).
const U2_ENABLE: u16 = 49;
/// `wLength` of SET_SEL.
const SET_SEL_LENGTH: u16 = 6;

/// Most bytes of bulk IN requests that may wait at once (on the Bulk-Only IN endpoint,
/// or in one UAS stream's data-in pipe); a request beyond completes as `Invalid`.
/// Hosts queue a few requests of at most a few MiB (Linux: one per command of up to
/// 1 MiB); the limit keeps a hostile host from making the drive read a whole disc
/// into memory for one command.
pub const MAX_QUEUED_IN_BYTES: u64 = 32 * 1024 * 1024;

/// Most sectors read from the medium in one go while filling IN requests.
const MAX_CHUNK_SECTORS: u64 = 256;

/// Halt state of one bulk endpoint.
#[derive(Debug, Default, Clone, Copy)]
struct Endpoint {
    halted: bool,
    /// A waiting request has already been failed with `Stall` for the current halt.
    stall_reported: bool,
}

impl Endpoint {
    fn halt(&mut self) {
        self.halted = true;
        self.stall_reported = false;
    }
}

/// Where the data of a data-in phase comes from (Bulk-Only and UAS alike).
#[derive(Debug)]
pub(crate) enum Source {
    Bytes {
        data: Vec<u8>,
        pos: usize,
    },
    Sectors {
        generation: u64,
        next_lba: u64,
        remaining: u64,
        chunk: Vec<u8>,
        pos: usize,
    },
}

impl Source {
    pub(crate) fn new(data: DataIn, generation: u64) -> Self {
        match data {
            DataIn::Bytes(data) => Source::Bytes { data, pos: 0 },
            DataIn::Sectors { lba, count } => Source::Sectors {
                generation,
                next_lba: lba,
                remaining: count,
                chunk: Vec::new(),
                pos: 0,
            },
        }
    }

    /// Appends up to `want` bytes to `out`. Returns the bytes appended and whether
    /// reading the medium failed (the sense is then recorded and nothing more comes).
    pub(crate) fn take(
        &mut self,
        want: usize,
        scsi: &mut ScsiTarget,
        out: &mut Vec<u8>,
    ) -> (usize, bool) {
        match self {
            Source::Bytes { data, pos } => {
                let n = want.min(data.len() - *pos);
                out.extend_from_slice(&data[*pos..*pos + n]);
                *pos += n;
                (n, false)
            }
            Source::Sectors {
                generation,
                next_lba,
                remaining,
                chunk,
                pos,
            } => {
                let mut got = 0;
                while got < want {
                    if *pos == chunk.len() {
                        if *remaining == 0 {
                            break;
                        }
                        let needed = ((want - got).div_ceil(SECTOR_SIZE)) as u64;
                        let n = needed.min(*remaining).min(MAX_CHUNK_SECTORS);
                        chunk.resize(n as usize * SECTOR_SIZE, 0);
                        *pos = 0;
                        let (good, error) = match scsi.read(*generation, *next_lba, n as u32, chunk)
                        {
                            Ok(()) => (n, None),
                            Err(sense) if n == 1 => (0, Some(sense)),
                            // Deliver the readable sectors before the bad one, as a
                            // drive would; the bad one fails on the next attempt.
                            Err(_) => {
                                let mut good = 0;
                                let mut error = None;
                                for sector in chunk.chunks_exact_mut(SECTOR_SIZE) {
                                    if let Err(sense) =
                                        scsi.read(*generation, *next_lba + good, 1, sector)
                                    {
                                        error = Some(sense);
                                        break;
                                    }
                                    good += 1;
                                }
                                (good, error)
                            }
                        };
                        if good == 0 {
                            chunk.clear();
                            scsi.set_sense(error.unwrap_or(Sense::UNRECOVERED_READ_ERROR));
                            return (got, true);
                        }
                        chunk.truncate(good as usize * SECTOR_SIZE);
                        *next_lba += good;
                        *remaining -= good;
                    }
                    let n = (want - got).min(chunk.len() - *pos);
                    out.extend_from_slice(&chunk[*pos..*pos + n]);
                    *pos += n;
                    got += n;
                }
                (got, false)
            }
        }
    }
}

/// Bulk-Only Transport state.
#[derive(Debug)]
enum Bot {
    /// Waiting for a CBW.
    Idle,
    /// Sending data to the host.
    DataIn {
        tag: u32,
        host_len: u32,
        /// Bytes this data phase will send: min(host, device).
        limit: u64,
        sent: u64,
        source: Source,
        status: CswStatus,
    },
    /// Receiving data from the host.
    DataOut {
        tag: u32,
        host_len: u32,
        device_len: u32,
        received: u32,
        param: Vec<u8>,
        cdb: [u8; 16],
    },
    /// The CSW is ready to be read.
    Status(Csw),
}

#[derive(Debug)]
struct InRequest {
    id: u64,
    max_len: u32,
}

#[derive(Debug)]
struct OutRequest {
    id: u64,
    data: Vec<u8>,
}

/// An emulated USB CD/DVD-ROM drive (Bulk-Only Transport, SCSI/MMC), SuperSpeed or
/// high speed as configured ([`DeviceConfig::speed`]).
///
/// See the [module documentation](self) for the transfer model.
pub struct UsbCdrom {
    config: DeviceConfig,
    descriptors: Descriptors,
    endpoints: [EndpointInfo; 2],
    uas_endpoints: [EndpointInfo; 4],
    /// Bulk max packet size at the configured speed: where short packets begin.
    bulk_max_packet: u64,
    scsi: ScsiTarget,
    address: u8,
    configuration: u8,
    /// Alternate setting of interface 0: 0 Bulk-Only, 1 UAS.
    alt: u8,
    /// The UAS transport (alternate setting 1).
    uas: Uas,
    bot: Bot,
    bulk_in: Endpoint,
    bulk_out: Endpoint,
    /// An invalid CBW arrived: both endpoints stay halted until a mass-storage reset.
    wedged: bool,
    /// SuperSpeed link power features the host enabled (reported by GET_STATUS; the
    /// emulated link has no power states, so they change nothing else).
    u1_enabled: bool,
    u2_enabled: bool,
    in_queue: VecDeque<InRequest>,
    out_queue: VecDeque<OutRequest>,
    completions: VecDeque<Completion>,
}

impl std::fmt::Debug for UsbCdrom {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UsbCdrom")
            .field("speed", &self.config.speed)
            .field("scsi", &self.scsi)
            .field("address", &self.address)
            .field("configuration", &self.configuration)
            .field("alt", &self.alt)
            .field("uas", &self.uas)
            .field("bot", &self.bot)
            .field("bulk_in", &self.bulk_in)
            .field("bulk_out", &self.bulk_out)
            .field("wedged", &self.wedged)
            .field("in_queue", &self.in_queue)
            .field("out_queue", &self.out_queue.len())
            .field("completions", &self.completions.len())
            .finish()
    }
}

impl UsbCdrom {
    /// A drive with no disc.
    ///
    /// The device starts configured (configuration 1), as a real drive behind a usbredir
    /// host is: the host's own USB stack configured it before forwarding it.
    pub fn new(config: DeviceConfig) -> Self {
        Self::build(config, None)
    }

    /// A drive with `medium` loaded.
    pub fn with_medium(config: DeviceConfig, medium: Box<dyn Medium>) -> Self {
        Self::build(config, Some(medium))
    }

    fn build(config: DeviceConfig, medium: Option<Box<dyn Medium>>) -> Self {
        Self {
            descriptors: Descriptors::new(&config),
            endpoints: descriptors::endpoints(config.speed),
            uas_endpoints: descriptors::uas_endpoints(),
            bulk_max_packet: u64::from(config.speed.bulk_max_packet()),
            scsi: ScsiTarget::new(&config, medium),
            config,
            address: 0,
            configuration: 1,
            alt: 0,
            uas: Uas::default(),
            bot: Bot::Idle,
            bulk_in: Endpoint::default(),
            bulk_out: Endpoint::default(),
            wedged: false,
            u1_enabled: false,
            u2_enabled: false,
            in_queue: VecDeque::new(),
            out_queue: VecDeque::new(),
            completions: VecDeque::new(),
        }
    }

    /// The configuration the device was built with.
    pub fn config(&self) -> &DeviceConfig {
        &self.config
    }

    /// The device's descriptors (for a transport's device-connect message).
    pub fn descriptors(&self) -> &Descriptors {
        &self.descriptors
    }

    /// Bus speed the device runs at (from its configuration).
    pub fn speed(&self) -> Speed {
        self.config.speed
    }

    /// Maximum packet size of endpoint 0 in bytes at the device's speed (64, or 512 at
    /// SuperSpeed).
    pub fn ep0_max_packet(&self) -> u16 {
        self.config.speed.ep0_max_packet()
    }

    /// The interfaces of the active configuration, in their current alternate setting.
    pub fn interfaces(&self) -> &'static [InterfaceInfo] {
        if self.alt == 1 {
            std::slice::from_ref(&INTERFACE_UAS)
        } else {
            std::slice::from_ref(&INTERFACE)
        }
    }

    /// The bulk endpoints of the active configuration and alternate setting, with their
    /// max packet size at the device's speed (and, for UAS, their streams).
    pub fn endpoints(&self) -> &[EndpointInfo] {
        if self.alt == 1 {
            &self.uas_endpoints
        } else {
            &self.endpoints
        }
    }

    /// True if the drive offers USB Attached SCSI (alternate setting 1): configured
    /// for it and running at SuperSpeed.
    pub fn offers_uas(&self) -> bool {
        self.config.uas && self.config.speed == Speed::Super
    }

    /// The alternate setting of interface 0 (0 Bulk-Only, 1 UAS).
    pub fn alt_setting(&self) -> u8 {
        self.alt
    }

    /// The current configuration value (0 or 1).
    pub fn configuration(&self) -> u8 {
        self.configuration
    }

    /// The USB address last set with SET_ADDRESS.
    pub fn address(&self) -> u8 {
        self.address
    }

    /// The SCSI logical unit (read-only view: medium, lock, pending sense).
    pub fn scsi(&self) -> &ScsiTarget {
        &self.scsi
    }

    /// Where the disc is (loaded, tray opened by the host, or empty).
    pub fn medium_state(&self) -> MediumState {
        self.scsi.medium_state()
    }

    /// Puts a disc in the drive while attached; the host sees new media. Returns the disc
    /// it replaces.
    pub fn insert_medium(&mut self, medium: Box<dyn Medium>) -> Option<Box<dyn Medium>> {
        self.scsi.insert_medium(medium)
    }

    /// Takes the disc out while attached (whatever the host's lock); the host sees a
    /// media removal. A read in progress fails with NOT READY.
    pub fn remove_medium(&mut self) -> Option<Box<dyn Medium>> {
        self.scsi.remove_medium()
    }

    /// True when the halt feature is set on `endpoint`.
    pub fn is_halted(&self, endpoint: u8) -> bool {
        match endpoint {
            BULK_IN_ENDPOINT => self.bulk_in.halted,
            BULK_OUT_ENDPOINT => self.bulk_out.halted,
            _ => false,
        }
    }

    /// Number of submitted bulk requests not yet completed.
    pub fn pending_requests(&self) -> usize {
        self.in_queue.len() + self.out_queue.len() + self.uas.pending_requests()
    }

    /// Takes the completions produced so far, in order.
    pub fn take_completions(&mut self) -> Vec<Completion> {
        self.completions.drain(..).collect()
    }

    /// True if completions are waiting for [`take_completions`](Self::take_completions).
    pub fn has_completions(&self) -> bool {
        !self.completions.is_empty()
    }

    /// Port reset (usbredir `reset`): waiting bulk requests complete as `Cancelled`, the
    /// transport and endpoint halts are cleared, the address is forgotten, and the
    /// logical unit reports POWER ON/RESET. As with `libusb_reset_device` behind a
    /// usbredir host, the configuration is restored afterwards (stays as it was).
    pub fn reset(&mut self) {
        self.cancel_all();
        self.alt = 0;
        self.address = 0;
        self.u1_enabled = false;
        self.u2_enabled = false;
        self.reset_transport();
        self.scsi.reset();
    }

    /// SET_CONFIGURATION (also reachable as a control request). Only 0 and 1 exist;
    /// returns false (a stall) for others. Waiting bulk requests are cancelled and the
    /// transport starts afresh.
    pub fn set_configuration(&mut self, value: u8) -> bool {
        if value > 1 {
            return false;
        }
        self.cancel_all();
        self.reset_transport();
        self.configuration = value;
        self.alt = 0;
        true
    }

    /// SET_INTERFACE: interface 0, alternate setting 0 (Bulk-Only) or, if the drive
    /// offers it, 1 (UAS). Waiting requests are cancelled, the halts cleared and the
    /// transport starts afresh.
    pub fn set_interface(&mut self, interface: u8, alt: u8) -> bool {
        let known = alt == 0 || (alt == 1 && self.offers_uas());
        if self.configuration == 0 || interface != 0 || !known {
            return false;
        }
        self.cancel_all();
        self.reset_transport();
        self.alt = alt;
        true
    }

    fn reset_transport(&mut self) {
        self.bot = Bot::Idle;
        self.bulk_in = Endpoint::default();
        self.bulk_out = Endpoint::default();
        self.wedged = false;
    }

    fn cancel_all(&mut self) {
        self.uas.cancel_all(&mut self.completions);
        for r in std::mem::take(&mut self.out_queue) {
            self.complete(
                r.id,
                BULK_OUT_ENDPOINT,
                TransferStatus::Cancelled,
                Vec::new(),
                0,
            );
        }
        for r in std::mem::take(&mut self.in_queue) {
            self.complete(
                r.id,
                BULK_IN_ENDPOINT,
                TransferStatus::Cancelled,
                Vec::new(),
                0,
            );
        }
    }

    /// Cancels a waiting bulk request: it completes with `Cancelled`. Returns false if no
    /// request with that id is waiting (it already completed; its real completion stands).
    pub fn cancel(&mut self, id: u64) -> bool {
        if let Some(i) = self.in_queue.iter().position(|r| r.id == id) {
            self.in_queue.remove(i);
            self.complete(
                id,
                BULK_IN_ENDPOINT,
                TransferStatus::Cancelled,
                Vec::new(),
                0,
            );
        } else if let Some(i) = self.out_queue.iter().position(|r| r.id == id) {
            self.out_queue.remove(i);
            self.complete(
                id,
                BULK_OUT_ENDPOINT,
                TransferStatus::Cancelled,
                Vec::new(),
                0,
            );
        } else {
            return self.uas.cancel(id, &mut self.completions);
        }
        self.pump();
        true
    }

    /// Submits a bulk OUT transfer (a CBW or data-out bytes). Its completion, normally
    /// at once, comes from [`take_completions`](Self::take_completions).
    pub fn submit_bulk_out(&mut self, endpoint: u8, id: u64, data: &[u8]) {
        self.submit_bulk_out_stream(endpoint, 0, id, data);
    }

    /// Submits a bulk OUT transfer in bulk stream `stream` (0: no stream). In the UAS
    /// alternate setting the command pipe takes IUs without a stream and the data-out
    /// pipe takes data in the stream of its command's tag; with Bulk-Only only stream 0
    /// exists. Anything else completes as `Invalid`.
    pub fn submit_bulk_out_stream(&mut self, endpoint: u8, stream: u32, id: u64, data: &[u8]) {
        if self.alt == 1 && self.configuration != 0 {
            match (endpoint, stream) {
                (UAS_COMMAND_ENDPOINT, 0) => {
                    let len = u32::try_from(data.len()).unwrap_or(u32::MAX);
                    self.complete(id, endpoint, TransferStatus::Success, Vec::new(), len);
                    self.uas
                        .command_pipe(data, &mut self.scsi, &mut self.completions);
                }
                (UAS_DATA_OUT_ENDPOINT, s) if s != 0 => self.uas.submit(
                    StreamPipe::DataOut,
                    s,
                    (id, 0, data.to_vec()),
                    &mut self.scsi,
                    &mut self.completions,
                ),
                _ => self.complete(id, endpoint, TransferStatus::Invalid, Vec::new(), 0),
            }
            return;
        }
        if self.refuse_bulk_only(id, endpoint, BULK_OUT_ENDPOINT, stream) {
            return;
        }
        self.out_queue.push_back(OutRequest {
            id,
            data: data.to_vec(),
        });
        self.pump();
    }

    /// Completes a Bulk-Only request that cannot be queued: `Invalid` on another
    /// endpoint than `expected` or in a stream, `Stall` while unconfigured. True if
    /// it did.
    fn refuse_bulk_only(&mut self, id: u64, endpoint: u8, expected: u8, stream: u32) -> bool {
        let status = if endpoint != expected || stream != 0 {
            TransferStatus::Invalid
        } else if self.configuration == 0 {
            TransferStatus::Stall
        } else {
            return false;
        };
        self.complete(id, endpoint, status, Vec::new(), 0);
        true
    }

    /// Submits a bulk IN request for up to `max_len` bytes. It completes, in order with
    /// the other IN requests, once the device has data, a CSW or a stall for it.
    /// Requests are expected in multiples of the bulk max packet size (or exactly the
    /// expected length); other sizes are filled byte-exactly rather than failing with
    /// babble, except that the 13-byte CSW is never split (a smaller empty request gets
    /// `Babble`).
    pub fn submit_bulk_in(&mut self, endpoint: u8, id: u64, max_len: u32) {
        self.submit_bulk_in_stream(endpoint, 0, id, max_len);
    }

    /// Submits a bulk IN request in bulk stream `stream` (0: no stream). In the UAS
    /// alternate setting the status and data-in pipes take requests in the stream of a
    /// command's tag (1..=[`crate::uas::MAX_STREAMS`]); with Bulk-Only only stream 0
    /// exists. Anything else completes as `Invalid`.
    pub fn submit_bulk_in_stream(&mut self, endpoint: u8, stream: u32, id: u64, max_len: u32) {
        if self.alt == 1 && self.configuration != 0 {
            let pipe = match (endpoint, stream) {
                (UAS_STATUS_ENDPOINT, s) if s != 0 => StreamPipe::Status,
                (UAS_DATA_IN_ENDPOINT, s) if s != 0 => StreamPipe::DataIn,
                _ => {
                    self.complete(id, endpoint, TransferStatus::Invalid, Vec::new(), 0);
                    return;
                }
            };
            self.uas.submit(
                pipe,
                stream,
                (id, max_len, Vec::new()),
                &mut self.scsi,
                &mut self.completions,
            );
            return;
        }
        if self.refuse_bulk_only(id, endpoint, BULK_IN_ENDPOINT, stream) {
            return;
        }
        let queued: u64 = self.in_queue.iter().map(|r| u64::from(r.max_len)).sum();
        if queued + u64::from(max_len) > MAX_QUEUED_IN_BYTES {
            self.complete(id, endpoint, TransferStatus::Invalid, Vec::new(), 0);
            return;
        }
        self.in_queue.push_back(InRequest { id, max_len });
        self.pump();
    }

    fn complete(&mut self, id: u64, endpoint: u8, status: TransferStatus, data: Vec<u8>, len: u32) {
        self.completions.push_back(Completion {
            id,
            endpoint,
            status,
            data,
            length: len,
        });
    }

    /// Runs both queues until neither can make progress.
    fn pump(&mut self) {
        while self.service_out() | self.service_in() {}
    }

    /// Handles the first waiting OUT request if possible; true if it completed.
    fn service_out(&mut self) -> bool {
        if self.out_queue.is_empty() {
            return false;
        }
        if self.bulk_out.halted {
            if self.bulk_out.stall_reported {
                return false;
            }
            self.bulk_out.stall_reported = true;
            if let Some(r) = self.out_queue.pop_front() {
                self.complete(
                    r.id,
                    BULK_OUT_ENDPOINT,
                    TransferStatus::Stall,
                    Vec::new(),
                    0,
                );
            }
            return true;
        }
        if matches!(self.bot, Bot::DataIn { .. } | Bot::Status(_)) {
            return false; // NAK until the host has read the data and the CSW
        }
        let Some(r) = self.out_queue.pop_front() else {
            return false;
        };
        let accepted = match self.bot {
            Bot::Idle => {
                self.handle_cbw(&r.data);
                r.data.len()
            }
            _ => self.handle_data_out(&r.data),
        };
        let accepted = u32::try_from(accepted).unwrap_or(u32::MAX);
        self.complete(
            r.id,
            BULK_OUT_ENDPOINT,
            TransferStatus::Success,
            Vec::new(),
            accepted,
        );
        true
    }

    /// Starts a command from a CBW (or wedges the device on an invalid one).
    fn handle_cbw(&mut self, data: &[u8]) {
        let cbw = match Cbw::parse(data) {
            Ok(cbw) => cbw,
            Err(_) => {
                // BOT 6.6.1: stall both pipes until a reset recovery.
                self.wedged = true;
                self.bulk_in.halt();
                self.bulk_out.halt();
                return;
            }
        };
        let outcome = self.scsi.execute(cbw.command());
        let host_len = cbw.data_transfer_length;
        let tag = cbw.tag;
        let csw = |residue, status| Csw {
            tag,
            residue,
            status,
        };
        let (device_status, data_in, data_out) = match outcome {
            Outcome::Good => (CswStatus::Passed, None, 0),
            Outcome::Check(_) => (CswStatus::Failed, None, 0),
            Outcome::DataIn(d) => (CswStatus::Passed, Some(d), 0),
            Outcome::DataOut(n) => (CswStatus::Passed, None, n),
        };
        self.bot = if host_len == 0 {
            // Hn: cases 1 (Dn), 2 (Di) and 3 (Do).
            if data_in.is_some() || data_out > 0 {
                Bot::Status(csw(0, CswStatus::PhaseError))
            } else {
                Bot::Status(csw(0, device_status))
            }
        } else if cbw.data_in {
            match (data_in, data_out) {
                (Some(d), _) => {
                    // Cases 5, 6, 7.
                    let device_len = d.len();
                    let host = u64::from(host_len);
                    let status = if device_len > host
                        && self.config.overrun_policy == OverrunPolicy::PhaseError
                    {
                        CswStatus::PhaseError
                    } else {
                        device_status
                    };
                    Bot::DataIn {
                        tag,
                        host_len,
                        limit: device_len.min(host),
                        sent: 0,
                        source: Source::new(d, self.scsi.medium_generation()),
                        status,
                    }
                }
                (None, 0) => {
                    // Case 4: stall IN, CSW after the host clears it.
                    self.bulk_in.halt();
                    Bot::Status(csw(host_len, device_status))
                }
                (None, _) => {
                    // Case 8: host expects data in, device wants data out.
                    self.bulk_in.halt();
                    Bot::Status(csw(host_len, CswStatus::PhaseError))
                }
            }
        } else {
            match (data_in, data_out) {
                (None, 0) => {
                    // Case 9: stall OUT, residue = all the host's data.
                    self.bulk_out.halt();
                    Bot::Status(csw(host_len, device_status))
                }
                (Some(_), _) => {
                    // Case 10.
                    self.bulk_out.halt();
                    Bot::Status(csw(host_len, CswStatus::PhaseError))
                }
                (None, device_len) => {
                    // Cases 11, 12, 13.
                    let mut cdb = [0u8; 16];
                    cdb.copy_from_slice(&cbw.cb);
                    Bot::DataOut {
                        tag,
                        host_len,
                        device_len,
                        received: 0,
                        param: Vec::new(),
                        cdb,
                    }
                }
            }
        };
    }

    /// Takes data-out bytes; returns how many were accepted.
    fn handle_data_out(&mut self, data: &[u8]) -> usize {
        let Bot::DataOut {
            tag,
            host_len,
            device_len,
            received,
            param,
            cdb,
        } = &mut self.bot
        else {
            return 0;
        };
        let room = (*host_len - *received) as usize;
        let take = data.len().min(room);
        let keep = take.min((*device_len as usize).saturating_sub(param.len()));
        param.extend_from_slice(&data[..keep]);
        *received += take as u32;
        if *received == *host_len {
            let (tag, host_len, device_len) = (*tag, *host_len, *device_len);
            let csw = if host_len < device_len {
                // Case 13: the host sent less than the command needs.
                Csw {
                    tag,
                    residue: 0,
                    status: CswStatus::PhaseError,
                }
            } else {
                let param = std::mem::take(param);
                let cdb = *cdb;
                let status = match self.scsi.finish_data_out(&cdb, &param) {
                    Ok(()) => CswStatus::Passed,
                    Err(_) => CswStatus::Failed,
                };
                Csw {
                    tag,
                    residue: host_len - device_len,
                    status,
                }
            };
            self.bot = Bot::Status(csw);
        }
        take
    }

    /// Fills the first waiting IN request if possible; true if it completed.
    fn service_in(&mut self) -> bool {
        let Some(&InRequest { id, max_len }) = self.in_queue.front() else {
            return false;
        };
        if self.bulk_in.halted {
            if self.bulk_in.stall_reported {
                return false;
            }
            self.bulk_in.stall_reported = true;
            self.in_queue.pop_front();
            self.complete(id, BULK_IN_ENDPOINT, TransferStatus::Stall, Vec::new(), 0);
            return true;
        }
        if max_len == 0 {
            self.in_queue.pop_front();
            self.complete(id, BULK_IN_ENDPOINT, TransferStatus::Success, Vec::new(), 0);
            return true;
        }
        if matches!(self.bot, Bot::Idle | Bot::DataOut { .. }) {
            return false; // nothing to send: the request waits (NAK)
        }
        let max = max_len as usize;
        let mut buf = Vec::new();
        let status = loop {
            let room = max - buf.len();
            match &mut self.bot {
                Bot::Idle | Bot::DataOut { .. } => break TransferStatus::Success,
                Bot::Status(csw) => {
                    if room < CSW_LEN {
                        // The CSW packet does not fit what is left of the request.
                        break if buf.is_empty() {
                            TransferStatus::Babble
                        } else {
                            TransferStatus::Success
                        };
                    }
                    buf.extend_from_slice(&csw.to_bytes());
                    self.bot = Bot::Idle;
                    break TransferStatus::Success; // the CSW is a short packet
                }
                Bot::DataIn {
                    tag,
                    host_len,
                    limit,
                    sent,
                    source,
                    status,
                } => {
                    if room == 0 {
                        break TransferStatus::Success;
                    }
                    if buf.capacity() == 0 {
                        let left = (*limit - *sent).saturating_add(CSW_LEN as u64);
                        buf.reserve(left.min(max as u64).min(1 << 20) as usize);
                    }
                    let want = (room as u64).min(*limit - *sent) as usize;
                    let (n, failed) = source.take(want, &mut self.scsi, &mut buf);
                    *sent += n as u64;
                    if failed {
                        *status = CswStatus::Failed;
                    }
                    if failed || n < want {
                        // The data ends early (a read error): end the data phase here.
                        *limit = *sent;
                    }
                    if *sent < *limit {
                        continue; // the request is full; next iteration ends it
                    }
                    // The data phase is over.
                    let csw = Csw {
                        tag: *tag,
                        residue: u32::try_from(u64::from(*host_len) - *sent).unwrap_or(u32::MAX),
                        status: *status,
                    };
                    let short_packet = *sent % self.bulk_max_packet != 0;
                    let host_wants_more = *sent < u64::from(*host_len);
                    self.bot = Bot::Status(csw);
                    if short_packet {
                        break TransferStatus::Success;
                    }
                    if host_wants_more {
                        // Less data than the host expects, ending on a packet boundary:
                        // stall the pipe; the CSW follows the host's CLEAR_FEATURE. The
                        // STALL answers the next IN token: this request if it has room
                        // left, else the next one.
                        self.bulk_in.halt();
                        if buf.len() < max {
                            self.bulk_in.stall_reported = true;
                            break TransferStatus::Stall;
                        }
                        break TransferStatus::Success;
                    }
                    // Exactly the host's length on a packet boundary: run on into the CSW.
                }
            }
        };
        self.in_queue.pop_front();
        let len = buf.len() as u32;
        self.complete(id, BULK_IN_ENDPOINT, status, buf, len);
        true
    }

    /// Clears the halt of `endpoint`, unless the device is wedged by an invalid CBW
    /// (then the halt stays until a mass-storage reset, but the next waiting request
    /// is stalled again). Returns false for an unknown endpoint.
    fn clear_halt(&mut self, endpoint: u8) -> bool {
        if self.alt == 1 && matches!(endpoint, UAS_STATUS_ENDPOINT | UAS_COMMAND_ENDPOINT) {
            return true; // UAS pipes are never halted by this drive
        }
        let wedged = self.wedged;
        let ep = match endpoint {
            BULK_IN_ENDPOINT => &mut self.bulk_in,
            BULK_OUT_ENDPOINT => &mut self.bulk_out,
            0x00 | 0x80 => return true,
            _ => return false,
        };
        ep.stall_reported = false;
        if !wedged {
            ep.halted = false;
        }
        self.pump();
        true
    }

    fn set_halt(&mut self, endpoint: u8) -> bool {
        if self.alt == 1 && matches!(endpoint, UAS_STATUS_ENDPOINT | UAS_COMMAND_ENDPOINT) {
            return true;
        }
        match endpoint {
            BULK_IN_ENDPOINT => self.bulk_in.halt(),
            BULK_OUT_ENDPOINT => self.bulk_out.halt(),
            _ => return false,
        }
        self.pump();
        true
    }

    /// Bulk-Only Mass Storage Reset: ready for a new CBW; halts are left for the host
    /// to clear (BOT 3.1).
    pub fn mass_storage_reset(&mut self) {
        self.wedged = false;
        self.bot = Bot::Idle;
        self.pump();
    }

    /// Handles a control transfer on endpoint 0. `data` is the OUT data stage (only
    /// SET_SEL has one; its values are not needed by an emulated link).
    pub fn control(&mut self, setup: SetupPacket, data: &[u8]) -> ControlResult {
        let super_speed = self.config.speed == Speed::Super;
        let SetupPacket {
            request_type,
            request,
            value,
            index,
            length,
        } = setup;
        let ok_if = |ok: bool| {
            if ok {
                ControlResult::ack()
            } else {
                ControlResult::stall()
            }
        };
        match (request_type, request) {
            (0x80, request::GET_STATUS) if value == 0 && index == 0 => {
                // Bus powered, no remote wakeup; at SuperSpeed bits 2 and 3 are U1/U2.
                let status = (u8::from(self.u1_enabled) << 2) | (u8::from(self.u2_enabled) << 3);
                ControlResult::ok(vec![status, 0], length)
            }
            (0x81, request::GET_STATUS) if value == 0 && index == 0 => {
                ControlResult::ok(vec![0, 0], length)
            }
            (0x82, request::GET_STATUS) if value == 0 => match index {
                0x00 | 0x80 => ControlResult::ok(vec![0, 0], length),
                UAS_STATUS_ENDPOINT_U16 | UAS_COMMAND_ENDPOINT_U16 if self.alt == 1 => {
                    ControlResult::ok(vec![0, 0], length)
                }
                0x81 | 0x02 => {
                    let halted = self.is_halted(index as u8);
                    ControlResult::ok(vec![u8::from(halted), 0], length)
                }
                _ => ControlResult::stall(),
            },
            (0x02, request::CLEAR_FEATURE) if value == ENDPOINT_HALT && index <= 0xFF => {
                ok_if(self.clear_halt(index as u8))
            }
            (0x02, request::SET_FEATURE) if value == ENDPOINT_HALT && index <= 0xFF => {
                ok_if(self.set_halt(index as u8))
            }
            (0x00, request::SET_FEATURE | request::CLEAR_FEATURE)
                if super_speed
                    && self.configuration != 0
                    && matches!(value, U1_ENABLE | U2_ENABLE)
                    && index == 0
                    && length == 0 =>
            {
                let on = request == request::SET_FEATURE;
                if value == U1_ENABLE {
                    self.u1_enabled = on;
                } else {
                    self.u2_enabled = on;
                }
                ControlResult::ack()
            }
            (0x00, request::SET_SEL)
                if super_speed
                    && value == 0
                    && index == 0
                    && length == SET_SEL_LENGTH
                    && data.len() == usize::from(SET_SEL_LENGTH) =>
            {
                ControlResult::ack()
            }
            (0x00, request::SET_ISOCH_DELAY) if super_speed && index == 0 && length == 0 => {
                ControlResult::ack()
            }
            (0x00, request::SET_ADDRESS) if value <= 127 && index == 0 => {
                self.address = value as u8;
                ControlResult::ack()
            }
            (0x80, request::GET_DESCRIPTOR) => match self.descriptors.get(value) {
                Some(d) => ControlResult::ok(d, length),
                None => ControlResult::stall(),
            },
            (0x80, request::GET_CONFIGURATION) => {
                ControlResult::ok(vec![self.configuration], length)
            }
            (0x00, request::SET_CONFIGURATION) if value <= 0xFF => {
                ok_if(self.set_configuration(value as u8))
            }
            (0x81, request::GET_INTERFACE) if self.configuration != 0 && index == 0 => {
                ControlResult::ok(vec![self.alt], length)
            }
            (0x01, request::SET_INTERFACE) if value <= 0xFF && index <= 0xFF => {
                ok_if(self.set_interface(index as u8, value as u8))
            }
            (0xA1, request::GET_MAX_LUN) if value == 0 && index == 0 => {
                ControlResult::ok(vec![0], length)
            }
            (0x21, request::MASS_STORAGE_RESET) if value == 0 && index == 0 && length == 0 => {
                self.mass_storage_reset();
                ControlResult::ack()
            }
            _ => ControlResult::stall(),
        }
    }

    /// The sense the next REQUEST SENSE would report.
    pub fn pending_sense(&self) -> Option<Sense> {
        self.scsi.pending_sense()
    }
}
