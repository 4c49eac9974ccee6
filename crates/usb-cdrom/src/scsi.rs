//! The SCSI/MMC logical unit: command decoding, sense and unit-attention state, the
//! tray and the medium. Transport-independent: the Bulk-Only Transport in
//! [`crate::device`] feeds it CDBs and moves the data.

use std::collections::VecDeque;

use crate::config::{ascii_field, DeviceConfig};
use crate::medium::{Medium, SECTOR_SIZE};
use crate::mmc::{self, media_event, ConfigurationState, DiscKind, PageControl};
use crate::sense::Sense;

/// SCSI/MMC operation codes handled by the target.
pub mod opcode {
    /// TEST UNIT READY.
    pub const TEST_UNIT_READY: u8 = 0x00;
    /// REQUEST SENSE.
    pub const REQUEST_SENSE: u8 = 0x03;
    /// INQUIRY.
    pub const INQUIRY: u8 = 0x12;
    /// MODE SELECT(6).
    pub const MODE_SELECT_6: u8 = 0x15;
    /// MODE SENSE(6).
    pub const MODE_SENSE_6: u8 = 0x1A;
    /// START STOP UNIT.
    pub const START_STOP_UNIT: u8 = 0x1B;
    /// PREVENT ALLOW MEDIUM REMOVAL.
    pub const PREVENT_ALLOW_MEDIUM_REMOVAL: u8 = 0x1E;
    /// READ CAPACITY(10).
    pub const READ_CAPACITY_10: u8 = 0x25;
    /// READ(10).
    pub const READ_10: u8 = 0x28;
    /// SEEK(10).
    pub const SEEK_10: u8 = 0x2B;
    /// VERIFY(10).
    pub const VERIFY_10: u8 = 0x2F;
    /// SYNCHRONIZE CACHE(10).
    pub const SYNCHRONIZE_CACHE_10: u8 = 0x35;
    /// READ TOC/PMA/ATIP.
    pub const READ_TOC: u8 = 0x43;
    /// READ HEADER.
    pub const READ_HEADER: u8 = 0x44;
    /// GET CONFIGURATION.
    pub const GET_CONFIGURATION: u8 = 0x46;
    /// GET EVENT STATUS NOTIFICATION.
    pub const GET_EVENT_STATUS_NOTIFICATION: u8 = 0x4A;
    /// READ DISC INFORMATION.
    pub const READ_DISC_INFORMATION: u8 = 0x51;
    /// READ TRACK INFORMATION.
    pub const READ_TRACK_INFORMATION: u8 = 0x52;
    /// MODE SELECT(10).
    pub const MODE_SELECT_10: u8 = 0x55;
    /// MODE SENSE(10).
    pub const MODE_SENSE_10: u8 = 0x5A;
    /// SYNCHRONIZE CACHE(16).
    pub const SYNCHRONIZE_CACHE_16: u8 = 0x91;
    /// REPORT LUNS.
    pub const REPORT_LUNS: u8 = 0xA0;
    /// READ(12).
    pub const READ_12: u8 = 0xA8;
    /// GET PERFORMANCE.
    pub const GET_PERFORMANCE: u8 = 0xAC;
    /// READ DVD STRUCTURE.
    pub const READ_DVD_STRUCTURE: u8 = 0xAD;
    /// SET STREAMING.
    pub const SET_STREAMING: u8 = 0xB6;
    /// SET CD SPEED.
    pub const SET_CD_SPEED: u8 = 0xBB;
    /// MECHANISM STATUS.
    pub const MECHANISM_STATUS: u8 = 0xBD;
    /// READ CD.
    pub const READ_CD: u8 = 0xBE;
}

/// Data a command returns to the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DataIn {
    /// A response built in memory (already cut to the allocation length).
    Bytes(Vec<u8>),
    /// `count` sectors of the medium from `lba` on, read as the host takes them
    /// (through [`ScsiTarget::read`]).
    Sectors {
        /// First sector.
        lba: u64,
        /// Number of sectors (at least 1).
        count: u64,
    },
}

impl DataIn {
    /// Length in bytes.
    pub fn len(&self) -> u64 {
        match self {
            DataIn::Bytes(b) => b.len() as u64,
            DataIn::Sectors { count, .. } => count.saturating_mul(SECTOR_SIZE as u64),
        }
    }

    /// True when there is no data.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The outcome of [`ScsiTarget::execute`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// GOOD status, no data.
    Good,
    /// GOOD status (unless reading the medium fails), with data for the host.
    DataIn(DataIn),
    /// The command takes this many bytes from the host; its status comes from
    /// [`ScsiTarget::finish_data_out`] once they arrived.
    DataOut(u32),
    /// CHECK CONDITION; the sense is kept for REQUEST SENSE.
    Check(Sense),
}

/// Where the disc is, as the drive sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MediumState {
    /// A disc is loaded and readable.
    Loaded,
    /// The host ejected the disc (START STOP UNIT with LoEj): the tray is open with the
    /// disc still on it; a load command or [`ScsiTarget::insert_medium`] closes it.
    TrayOpen,
    /// No disc.
    Empty,
}

/// Reads big-endian fields of a CDB, as zero past its end.
#[derive(Clone, Copy)]
struct Cdb<'a>(&'a [u8]);

impl Cdb<'_> {
    fn u8(self, i: usize) -> u8 {
        self.0.get(i).copied().unwrap_or(0)
    }
    fn be(self, i: usize, n: usize) -> u64 {
        (i..i + n).fold(0u64, |acc, j| (acc << 8) | u64::from(self.u8(j)))
    }
    fn u16(self, i: usize) -> u16 {
        self.be(i, 2) as u16
    }
    fn u32(self, i: usize) -> u32 {
        self.be(i, 4) as u32
    }
}

/// Most media events kept for GET EVENT STATUS NOTIFICATION before the oldest is dropped.
const MAX_PENDING_EVENTS: usize = 4;

/// The SCSI/MMC logical unit of a CD/DVD-ROM drive.
pub struct ScsiTarget {
    vendor: [u8; 8],
    product: [u8; 16],
    revision: [u8; 4],
    serial: String,
    medium: Option<Box<dyn Medium>>,
    tray_open: bool,
    locked: bool,
    sense: Option<Sense>,
    unit_attention: VecDeque<Sense>,
    events: VecDeque<u8>,
    /// Bumped whenever the readable disc changes (insert, remove, eject, load).
    generation: u64,
}

impl std::fmt::Debug for ScsiTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScsiTarget")
            .field("medium", &self.medium.as_ref().map(|m| m.name()))
            .field("tray_open", &self.tray_open)
            .field("locked", &self.locked)
            .field("sense", &self.sense)
            .field("unit_attention", &self.unit_attention)
            .field("events", &self.events)
            .finish()
    }
}

impl ScsiTarget {
    /// A drive with the identity of `config`, powered on (a POWER ON unit attention is
    /// pending), holding `medium` if given.
    pub fn new(config: &DeviceConfig, medium: Option<Box<dyn Medium>>) -> Self {
        let mut events = VecDeque::new();
        if medium.is_some() {
            events.push_back(media_event::NEW_MEDIA);
        }
        Self {
            vendor: ascii_field(&config.inquiry_vendor),
            product: ascii_field(&config.inquiry_product),
            revision: ascii_field(&config.inquiry_revision),
            serial: config.serial_number.clone(),
            medium,
            tray_open: false,
            locked: false,
            sense: None,
            unit_attention: VecDeque::from([Sense::POWER_ON_RESET]),
            events,
            generation: 0,
        }
    }

    /// A counter that changes whenever the readable disc changes (inserted, removed,
    /// ejected or loaded). A data phase started under one generation must not read
    /// under another.
    pub fn medium_generation(&self) -> u64 {
        self.generation
    }

    /// Puts a disc in the drive (replacing any), closes the tray, and reports it to the
    /// host as new media (GESN event and a MEDIUM MAY HAVE CHANGED unit attention).
    /// Returns the disc that was in the drive, if any.
    pub fn insert_medium(&mut self, medium: Box<dyn Medium>) -> Option<Box<dyn Medium>> {
        let old = self.medium.replace(medium);
        self.tray_open = false;
        self.generation += 1;
        self.push_event(media_event::NEW_MEDIA);
        self.push_unit_attention(Sense::MEDIUM_MAY_HAVE_CHANGED);
        old
    }

    /// Takes the disc out, whatever the host's lock says (the user pulled it), and
    /// reports a media-removal event. The tray is left closed and empty.
    pub fn remove_medium(&mut self) -> Option<Box<dyn Medium>> {
        let old = self.medium.take();
        if old.is_some() && !self.tray_open {
            self.push_event(media_event::MEDIA_REMOVAL);
        }
        self.generation += 1;
        self.tray_open = false;
        old
    }

    /// The disc, if one is in the drive (also when the tray is open).
    pub fn medium(&self) -> Option<&dyn Medium> {
        self.medium.as_deref()
    }

    /// Where the disc is.
    pub fn medium_state(&self) -> MediumState {
        match (&self.medium, self.tray_open) {
            (_, true) => MediumState::TrayOpen,
            (Some(_), false) => MediumState::Loaded,
            (None, false) => MediumState::Empty,
        }
    }

    /// True while the host prevents medium removal (PREVENT ALLOW MEDIUM REMOVAL).
    pub fn is_locked(&self) -> bool {
        self.locked
    }

    /// A reset of the logical unit (USB port reset): the lock is released, sense is
    /// cleared and a POWER ON/RESET unit attention replaces any pending one.
    pub fn reset(&mut self) {
        self.locked = false;
        self.sense = None;
        self.unit_attention.clear();
        self.unit_attention.push_back(Sense::POWER_ON_RESET);
    }

    /// Records `sense` for the next REQUEST SENSE (used by the transport when a data
    /// phase fails).
    pub fn set_sense(&mut self, sense: Sense) {
        self.sense = Some(sense);
    }

    /// The sense the next REQUEST SENSE would return without clearing anything.
    pub fn pending_sense(&self) -> Option<Sense> {
        self.sense.or_else(|| self.unit_attention.front().copied())
    }

    fn push_event(&mut self, event: u8) {
        if self.events.len() >= MAX_PENDING_EVENTS {
            self.events.pop_front();
        }
        self.events.push_back(event);
    }

    fn push_unit_attention(&mut self, ua: Sense) {
        if !self.unit_attention.contains(&ua) {
            self.unit_attention.push_back(ua);
        }
    }

    fn present_sectors(&self) -> Option<u64> {
        match (&self.medium, self.tray_open) {
            (Some(m), false) => Some(m.sector_count()),
            _ => None,
        }
    }

    fn not_ready(&self) -> Sense {
        if self.tray_open {
            Sense::MEDIUM_NOT_PRESENT_TRAY_OPEN
        } else {
            Sense::MEDIUM_NOT_PRESENT
        }
    }

    /// Sector count of the loaded disc, or the NOT READY sense.
    fn ready(&self) -> Result<u64, Sense> {
        self.present_sectors().ok_or_else(|| self.not_ready())
    }

    fn disc_kind(&self) -> Option<DiscKind> {
        self.present_sectors().map(DiscKind::for_sectors)
    }

    /// Checks that `count` sectors from `lba` lie on the loaded disc.
    fn check_range(&self, lba: u64, count: u64) -> Result<(), Sense> {
        let sectors = self.ready()?;
        match lba.checked_add(count) {
            Some(end) if end <= sectors && lba < sectors.max(1) => Ok(()),
            _ => Err(Sense::LBA_OUT_OF_RANGE),
        }
    }

    /// Reads sectors for a [`DataIn::Sectors`] data phase started under medium
    /// `generation`. A failure returns the sense to report (NOT READY if the disc went
    /// away, MEDIUM MAY HAVE CHANGED if another one came, MEDIUM ERROR if the read
    /// failed); the caller records it with [`set_sense`](Self::set_sense) if the
    /// command fails.
    pub fn read(
        &mut self,
        generation: u64,
        lba: u64,
        count: u32,
        buf: &mut [u8],
    ) -> Result<(), Sense> {
        if generation != self.generation {
            return Err(if self.present_sectors().is_some() {
                Sense::MEDIUM_MAY_HAVE_CHANGED
            } else {
                self.not_ready()
            });
        }
        match (&mut self.medium, self.tray_open) {
            (Some(m), false) => m
                .read_sectors(lba, count, buf)
                .map_err(|_| Sense::UNRECOVERED_READ_ERROR),
            _ => Err(self.not_ready()),
        }
    }

    /// Executes one command descriptor block.
    pub fn execute(&mut self, cdb: &[u8]) -> Outcome {
        let c = Cdb(cdb);
        let op = c.u8(0);
        let exempt_from_ua = matches!(
            op,
            opcode::INQUIRY
                | opcode::REQUEST_SENSE
                | opcode::REPORT_LUNS
                | opcode::GET_CONFIGURATION
                | opcode::GET_EVENT_STATUS_NOTIFICATION
        );
        if op != opcode::REQUEST_SENSE {
            self.sense = None;
        }
        if !exempt_from_ua {
            if let Some(ua) = self.unit_attention.pop_front() {
                return self.check(ua);
            }
        }
        match self.dispatch(c) {
            Ok(o) => o,
            Err(s) => self.check(s),
        }
    }

    fn check(&mut self, sense: Sense) -> Outcome {
        self.sense = Some(sense);
        Outcome::Check(sense)
    }

    fn dispatch(&mut self, c: Cdb<'_>) -> Result<Outcome, Sense> {
        use opcode::*;
        match c.u8(0) {
            TEST_UNIT_READY => self.ready().map(|_| Outcome::Good),
            REQUEST_SENSE => self.request_sense(c),
            INQUIRY => self.inquiry(c),
            MODE_SENSE_6 => self.mode_sense(c, false),
            MODE_SENSE_10 => self.mode_sense(c, true),
            MODE_SELECT_6 => Ok(data_out(u32::from(c.u8(4)))),
            MODE_SELECT_10 => Ok(data_out(u32::from(c.u16(7)))),
            START_STOP_UNIT => self.start_stop(c),
            PREVENT_ALLOW_MEDIUM_REMOVAL => {
                self.locked = c.u8(4) & 0x01 != 0;
                Ok(Outcome::Good)
            }
            READ_CAPACITY_10 => {
                let sectors = self.ready()?;
                Ok(data(mmc::read_capacity(sectors), 8))
            }
            READ_10 => self.read_command(u64::from(c.u32(2)), u64::from(c.u16(7))),
            READ_12 => self.read_command(u64::from(c.u32(2)), u64::from(c.u32(6))),
            READ_CD => self.read_cd(c),
            SEEK_10 => {
                self.check_range(u64::from(c.u32(2)), 1)?;
                Ok(Outcome::Good)
            }
            VERIFY_10 => {
                if c.u8(1) & 0x02 != 0 {
                    return Err(Sense::INVALID_FIELD_IN_CDB); // BYTCHK: no data-out compare
                }
                self.check_range(u64::from(c.u32(2)), u64::from(c.u16(7)))?;
                Ok(Outcome::Good)
            }
            SYNCHRONIZE_CACHE_10 | SYNCHRONIZE_CACHE_16 | SET_CD_SPEED => Ok(Outcome::Good),
            SET_STREAMING => Ok(data_out(u32::from(c.u16(9)))),
            READ_TOC => self.read_toc(c),
            READ_HEADER => {
                let lba = u64::from(c.u32(2));
                self.check_range(lba, 1)?;
                let msf = c.u8(1) & 0x02 != 0;
                Ok(data(mmc::read_header(lba, msf), c.u16(7)))
            }
            GET_CONFIGURATION => {
                let state = ConfigurationState {
                    disc: self.disc_kind(),
                };
                let resp = mmc::get_configuration(state, c.u8(1) & 0x03, c.u16(2))?;
                Ok(data(resp, c.u16(7)))
            }
            GET_EVENT_STATUS_NOTIFICATION => self.gesn(c),
            READ_DISC_INFORMATION => {
                if c.u8(1) & 0x07 != 0 {
                    return Err(Sense::INVALID_FIELD_IN_CDB);
                }
                self.ready()?;
                Ok(data(mmc::disc_information(), c.u16(7)))
            }
            READ_TRACK_INFORMATION => self.track_information(c),
            MECHANISM_STATUS => Ok(data(mmc::mechanism_status(self.tray_open), c.u16(8))),
            READ_DVD_STRUCTURE => self.read_dvd_structure(c),
            GET_PERFORMANCE => self.get_performance(c),
            REPORT_LUNS => {
                let alloc = c.u32(6);
                if alloc < 16 {
                    return Err(Sense::INVALID_FIELD_IN_CDB);
                }
                Ok(data(mmc::report_luns(), u16::MAX))
            }
            _ => Err(Sense::INVALID_COMMAND),
        }
    }

    /// Completes a data-out command once its parameter data arrived.
    pub fn finish_data_out(&mut self, cdb: &[u8], param: &[u8]) -> Result<(), Sense> {
        let c = Cdb(cdb);
        let result = match c.u8(0) {
            opcode::MODE_SELECT_6 => check_mode_select(param, false),
            opcode::MODE_SELECT_10 => check_mode_select(param, true),
            _ => Ok(()),
        };
        if let Err(s) = result {
            self.sense = Some(s);
        }
        result
    }

    fn request_sense(&mut self, c: Cdb<'_>) -> Result<Outcome, Sense> {
        if c.u8(1) & 0x01 != 0 {
            return Err(Sense::INVALID_FIELD_IN_CDB); // descriptor format not supported
        }
        let sense = self
            .sense
            .take()
            .or_else(|| self.unit_attention.pop_front())
            .unwrap_or_else(|| {
                if self.present_sectors().is_some() {
                    Sense::NO_SENSE
                } else {
                    self.not_ready()
                }
            });
        Ok(data(sense.to_fixed().to_vec(), u16::from(c.u8(4))))
    }

    fn inquiry(&mut self, c: Cdb<'_>) -> Result<Outcome, Sense> {
        let evpd = c.u8(1) & 0x01 != 0;
        let cmddt = c.u8(1) & 0x02 != 0;
        let page = c.u8(2);
        let alloc = c.u16(3);
        if cmddt {
            return Err(Sense::INVALID_FIELD_IN_CDB);
        }
        let resp = match (evpd, page) {
            (false, 0) => mmc::inquiry_standard(&self.vendor, &self.product, &self.revision),
            (true, 0x00) => mmc::vpd_supported_pages(),
            (true, 0x80) => mmc::vpd_serial(&self.serial),
            _ => return Err(Sense::INVALID_FIELD_IN_CDB),
        };
        Ok(data(resp, alloc))
    }

    fn mode_sense(&mut self, c: Cdb<'_>, ten: bool) -> Result<Outcome, Sense> {
        let dbd = c.u8(1) & 0x08 != 0;
        let pc = match c.u8(2) >> 6 {
            0 | 2 => PageControl::Current,
            1 => PageControl::Changeable,
            _ => return Err(Sense::SAVING_PARAMETERS_NOT_SUPPORTED),
        };
        let page = c.u8(2) & 0x3F;
        let subpage = c.u8(3);
        if subpage != 0 && !(subpage == 0xFF && page == 0x3F) {
            return Err(Sense::INVALID_FIELD_IN_CDB);
        }
        let pages = mmc::mode_pages(page, pc, self.locked)?;
        let bd = match (dbd, self.present_sectors()) {
            (false, Some(sectors)) => mmc::block_descriptor(sectors),
            _ => Vec::new(),
        };
        let resp = mmc::mode_sense_response(ten, &bd, &pages);
        let alloc = if ten { c.u16(7) } else { u16::from(c.u8(4)) };
        Ok(data(resp, alloc))
    }

    fn start_stop(&mut self, c: Cdb<'_>) -> Result<Outcome, Sense> {
        let flags = c.u8(4);
        let power_condition = flags >> 4;
        let start = flags & 0x01 != 0;
        let load_eject = flags & 0x02 != 0;
        if power_condition != 0 || !load_eject {
            return Ok(Outcome::Good); // spin up/down: nothing to do
        }
        if start {
            if self.tray_open {
                self.tray_open = false;
                self.generation += 1;
                if self.medium.is_some() {
                    self.push_event(media_event::NEW_MEDIA);
                    self.push_unit_attention(Sense::MEDIUM_MAY_HAVE_CHANGED);
                }
            }
        } else {
            if self.locked {
                return Err(Sense::MEDIUM_REMOVAL_PREVENTED);
            }
            if !self.tray_open {
                self.tray_open = true;
                self.generation += 1;
                if self.medium.is_some() {
                    self.push_event(media_event::MEDIA_REMOVAL);
                }
            }
        }
        Ok(Outcome::Good)
    }

    fn read_command(&mut self, lba: u64, count: u64) -> Result<Outcome, Sense> {
        self.check_range(lba, count)?;
        if count == 0 {
            return Ok(Outcome::Good);
        }
        Ok(Outcome::DataIn(DataIn::Sectors { lba, count }))
    }

    fn read_cd(&mut self, c: Cdb<'_>) -> Result<Outcome, Sense> {
        let sectors = self.ready()?;
        if DiscKind::for_sectors(sectors) != DiscKind::Cd {
            return Err(Sense::INCOMPATIBLE_MEDIUM_FORMAT);
        }
        let sector_type = (c.u8(1) >> 2) & 0x07;
        if !matches!(sector_type, 0 | 2) {
            return Err(Sense::ILLEGAL_MODE_FOR_TRACK);
        }
        let lba = u64::from(c.u32(2));
        let count = c.be(6, 3);
        let flags = c.u8(9);
        let subchannel = c.u8(10) & 0x07;
        if subchannel != 0 || !matches!(flags, 0x00 | 0x10) {
            return Err(Sense::INVALID_FIELD_IN_CDB); // only user data (or nothing)
        }
        self.check_range(lba, count)?;
        if count == 0 || flags == 0 {
            return Ok(Outcome::Good);
        }
        Ok(Outcome::DataIn(DataIn::Sectors { lba, count }))
    }

    fn read_toc(&mut self, c: Cdb<'_>) -> Result<Outcome, Sense> {
        let sectors = self.ready()?;
        let msf = c.u8(1) & 0x02 != 0;
        let mut format = c.u8(2) & 0x0F;
        if format == 0 {
            // SFF-8020 clients (Linux sr_vendor, Mac OS) put the format in byte 9.
            format = c.u8(9) >> 6;
        }
        let track = c.u8(6);
        let resp = match format {
            0 => mmc::toc_formatted(sectors, msf, track)?,
            1 => mmc::toc_session_info(msf),
            2 => mmc::toc_raw(sectors, track)?,
            _ => return Err(Sense::INVALID_FIELD_IN_CDB),
        };
        Ok(data(resp, c.u16(7)))
    }

    fn gesn(&mut self, c: Cdb<'_>) -> Result<Outcome, Sense> {
        if c.u8(1) & 0x01 == 0 {
            return Err(Sense::INVALID_FIELD_IN_CDB); // asynchronous operation unsupported
        }
        let resp = if c.u8(4) & mmc::GESN_SUPPORTED_CLASSES != 0 {
            let event = self.events.pop_front().unwrap_or(media_event::NO_CHANGE);
            let present = self.present_sectors().is_some();
            mmc::gesn(Some((event, present, self.tray_open)))
        } else {
            mmc::gesn(None)
        };
        Ok(data(resp, c.u16(7)))
    }

    fn track_information(&mut self, c: Cdb<'_>) -> Result<Outcome, Sense> {
        let sectors = self.ready()?;
        let number = u64::from(c.u32(2));
        let ok = match c.u8(1) & 0x03 {
            0 => number < sectors,
            1 | 2 => number == 1,
            _ => false,
        };
        if !ok {
            return Err(Sense::INVALID_FIELD_IN_CDB);
        }
        Ok(data(mmc::track_information(sectors), c.u16(7)))
    }

    fn read_dvd_structure(&mut self, c: Cdb<'_>) -> Result<Outcome, Sense> {
        if c.u8(1) & 0x0F != 0 {
            return Err(Sense::INVALID_FIELD_IN_CDB); // only DVD media type
        }
        let sectors = self.ready()?;
        if DiscKind::for_sectors(sectors) != DiscKind::Dvd {
            return Err(Sense::INCOMPATIBLE_MEDIUM_FORMAT);
        }
        if c.u8(6) != 0 {
            return Err(Sense::INVALID_FIELD_IN_CDB); // single layer
        }
        let resp = match c.u8(7) {
            0x00 => mmc::dvd_physical_format(sectors),
            0x01 => mmc::dvd_copyright(),
            _ => return Err(Sense::INVALID_FIELD_IN_CDB),
        };
        Ok(data(resp, c.u16(8)))
    }

    fn get_performance(&mut self, c: Cdb<'_>) -> Result<Outcome, Sense> {
        let resp = match c.u8(10) {
            0x00 => mmc::performance(self.present_sectors(), c.u16(8)),
            0x03 => mmc::performance(None, 0),
            _ => return Err(Sense::INVALID_FIELD_IN_CDB),
        };
        Ok(data(resp, u16::MAX))
    }
}

/// A data-in outcome cut to `alloc` bytes (GOOD without data when nothing is left).
fn data(mut resp: Vec<u8>, alloc: u16) -> Outcome {
    resp.truncate(usize::from(alloc));
    if resp.is_empty() {
        Outcome::Good
    } else {
        Outcome::DataIn(DataIn::Bytes(resp))
    }
}

/// A data-out outcome of `len` bytes (GOOD when there is nothing to receive).
fn data_out(len: u32) -> Outcome {
    if len == 0 {
        Outcome::Good
    } else {
        Outcome::DataOut(len)
    }
}

/// Checks MODE SELECT parameter data: accepted and ignored, except that a block
/// descriptor may not ask for a block length other than 2048.
fn check_mode_select(param: &[u8], ten: bool) -> Result<(), Sense> {
    let (header_len, bd_len) = if ten {
        (
            8usize,
            param
                .get(6..8)
                .map(|b| usize::from(u16::from_be_bytes([b[0], b[1]]))),
        )
    } else {
        (4usize, param.get(3).map(|&b| usize::from(b)))
    };
    let Some(bd_len) = bd_len else {
        return Err(Sense::PARAMETER_LIST_LENGTH_ERROR);
    };
    if bd_len >= 8 {
        let Some(bd) = param.get(header_len..header_len + 8) else {
            return Err(Sense::PARAMETER_LIST_LENGTH_ERROR);
        };
        let block_len = u32::from_be_bytes([0, bd[5], bd[6], bd[7]]);
        if block_len != 2048 {
            return Err(Sense::INVALID_FIELD_IN_PARAMETER_LIST);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::medium::MemoryMedium;

    fn target(sectors: u32) -> ScsiTarget {
        let m = MemoryMedium::patterned("t", sectors);
        let mut t = ScsiTarget::new(&DeviceConfig::default(), Some(Box::new(m)));
        assert_eq!(t.execute(&[0; 6]), Outcome::Check(Sense::POWER_ON_RESET));
        t
    }

    fn bytes(o: Outcome) -> Vec<u8> {
        match o {
            Outcome::DataIn(DataIn::Bytes(b)) => b,
            other => panic!("expected data, got {other:?}"),
        }
    }

    fn sense_of(t: &mut ScsiTarget) -> Sense {
        let b = bytes(t.execute(&[0x03, 0, 0, 0, 18, 0]));
        Sense::new(b[2], b[12], b[13])
    }

    #[test]
    fn test_unit_ready_states() {
        let mut t = ScsiTarget::new(&DeviceConfig::default(), None);
        assert_eq!(t.execute(&[0; 6]), Outcome::Check(Sense::POWER_ON_RESET));
        assert_eq!(
            t.execute(&[0; 6]),
            Outcome::Check(Sense::MEDIUM_NOT_PRESENT)
        );
        assert_eq!(sense_of(&mut t), Sense::MEDIUM_NOT_PRESENT);
        t.insert_medium(Box::new(MemoryMedium::patterned("a", 10)));
        assert_eq!(
            t.execute(&[0; 6]),
            Outcome::Check(Sense::MEDIUM_MAY_HAVE_CHANGED)
        );
        assert_eq!(t.execute(&[0; 6]), Outcome::Good);
        t.reset();
        assert_eq!(t.execute(&[0; 6]), Outcome::Check(Sense::POWER_ON_RESET));
        assert_eq!(t.execute(&[0; 6]), Outcome::Good);
    }

    #[test]
    fn unit_attentions_queue_in_order() {
        let mut t = ScsiTarget::new(&DeviceConfig::default(), None);
        t.insert_medium(Box::new(MemoryMedium::patterned("a", 10)));
        t.insert_medium(Box::new(MemoryMedium::patterned("b", 10)));
        assert_eq!(t.pending_sense(), Some(Sense::POWER_ON_RESET));
        // INQUIRY does not consume it.
        assert!(matches!(
            t.execute(&[0x12, 0, 0, 0, 36, 0]),
            Outcome::DataIn(_)
        ));
        assert_eq!(sense_of(&mut t), Sense::POWER_ON_RESET);
        assert_eq!(
            t.execute(&[0; 6]),
            Outcome::Check(Sense::MEDIUM_MAY_HAVE_CHANGED)
        );
        assert_eq!(t.execute(&[0; 6]), Outcome::Good);
        assert_eq!(sense_of(&mut t), Sense::NO_SENSE);
    }

    #[test]
    fn request_sense_clears_and_truncates() {
        let mut t = target(10);
        assert_eq!(t.execute(&[0xFF]), Outcome::Check(Sense::INVALID_COMMAND));
        let b = bytes(t.execute(&[0x03, 0, 0, 0, 252, 0]));
        assert_eq!(b, Sense::INVALID_COMMAND.to_fixed().to_vec());
        assert_eq!(sense_of(&mut t), Sense::NO_SENSE);
        assert_eq!(t.execute(&[0xFF]), Outcome::Check(Sense::INVALID_COMMAND));
        assert_eq!(bytes(t.execute(&[0x03, 0, 0, 0, 3, 0])), vec![0x70, 0, 5]);
        assert_eq!(t.execute(&[0x03, 0, 0, 0, 0, 0]), Outcome::Good);
        assert_eq!(
            t.execute(&[0x03, 1, 0, 0, 18, 0]),
            Outcome::Check(Sense::INVALID_FIELD_IN_CDB)
        );
    }

    #[test]
    fn inquiry_pages() {
        let mut t = target(10);
        let std = bytes(t.execute(&[0x12, 0, 0, 0, 96, 0]));
        assert_eq!(std.len(), 36);
        assert_eq!(&std[..5], &[0x05, 0x80, 0x05, 0x02, 31]);
        assert_eq!(&std[8..16], b"AIRLOCK ");
        assert_eq!(bytes(t.execute(&[0x12, 0, 0, 0, 5, 0])), std[..5].to_vec());
        assert_eq!(
            bytes(t.execute(&[0x12, 1, 0x00, 0, 255, 0])),
            vec![5, 0, 0, 2, 0, 0x80]
        );
        let sn = bytes(t.execute(&[0x12, 1, 0x80, 0, 255, 0]));
        assert_eq!(&sn[4..], b"A1C0000000000001");
        for cdb in [
            [0x12, 1, 0x83, 0, 255, 0],
            [0x12, 0, 0x80, 0, 255, 0],
            [0x12, 2, 0, 0, 36, 0],
        ] {
            assert_eq!(t.execute(&cdb), Outcome::Check(Sense::INVALID_FIELD_IN_CDB));
        }
    }

    /// Runs each CDB on `t` in order and checks its outcome.
    #[track_caller]
    fn assert_outcomes(t: &mut ScsiTarget, cases: &[(&[u8], Outcome)]) {
        for (cdb, outcome) in cases {
            assert_eq!(&t.execute(cdb), outcome, "CDB {cdb:02x?}");
        }
    }

    #[test]
    fn read_capacity_and_reads() {
        let mut t = target(100);
        assert_eq!(
            bytes(t.execute(&[0x25, 0, 0, 0, 0, 0, 0, 0, 0, 0])),
            vec![0, 0, 0, 99, 0, 0, 8, 0]
        );
        let out_of_range = Outcome::Check(Sense::LBA_OUT_OF_RANGE);
        #[rustfmt::skip]
        assert_outcomes(&mut t, &[
            (&[0x28, 0, 0, 0, 0, 10, 0, 0, 5, 0], Outcome::DataIn(DataIn::Sectors { lba: 10, count: 5 })),
            (&[0x28, 0, 0, 0, 0, 99, 0, 0, 0, 0], Outcome::Good),
            (&[0x28, 0, 0, 0, 0, 99, 0, 0, 2, 0], out_of_range.clone()),
            (&[0x28, 0, 0xFF, 0xFF, 0xFF, 0xFF, 0, 0, 1, 0], out_of_range.clone()),
            (&[0xA8, 0, 0, 0, 0, 0, 0, 0, 0, 100, 0, 0], Outcome::DataIn(DataIn::Sectors { lba: 0, count: 100 })),
            (&[0xA8, 0, 0, 0, 0, 1, 0xFF, 0xFF, 0xFF, 0xFF, 0, 0], out_of_range.clone()),
            // A zero-length read must still name a block on the disc.
            (&[0x28, 0, 0, 0, 0, 100, 0, 0, 0, 0], out_of_range),
        ]);
        let mut buf = vec![0u8; 2048];
        t.read(0, 7, 1, &mut buf).unwrap();
        let mut expect = vec![0u8; 2048];
        crate::medium::fill_pattern(7, &mut expect);
        assert_eq!(buf, expect);
        assert_eq!(
            t.read(0, 100, 1, &mut buf),
            Err(Sense::UNRECOVERED_READ_ERROR)
        );
        assert_eq!(
            t.pending_sense(),
            Some(Sense::LBA_OUT_OF_RANGE),
            "read() records nothing"
        );
        t.set_sense(Sense::UNRECOVERED_READ_ERROR);
        assert_eq!(sense_of(&mut t), Sense::UNRECOVERED_READ_ERROR);
        let g = t.medium_generation();
        t.insert_medium(Box::new(MemoryMedium::patterned("other", 10)));
        assert_eq!(
            t.read(g, 0, 1, &mut buf),
            Err(Sense::MEDIUM_MAY_HAVE_CHANGED)
        );
        t.remove_medium();
        let g = t.medium_generation();
        assert_eq!(t.read(g, 0, 1, &mut buf), Err(Sense::MEDIUM_NOT_PRESENT));
    }

    #[test]
    fn read_cd_user_data_only() {
        let mut t = target(100);
        let sectors = Outcome::DataIn(DataIn::Sectors { lba: 3, count: 2 });
        #[rustfmt::skip]
        assert_outcomes(&mut t, &[
            (&[0xBE, 0, 0, 0, 0, 3, 0, 0, 2, 0x10, 0, 0], sectors.clone()),
            (&[0xBE, 0x08, 0, 0, 0, 3, 0, 0, 2, 0x10, 0, 0], sectors),
            (&[0xBE, 0x04, 0, 0, 0, 3, 0, 0, 2, 0x10, 0, 0], Outcome::Check(Sense::ILLEGAL_MODE_FOR_TRACK)),
            (&[0xBE, 0, 0, 0, 0, 3, 0, 0, 2, 0xF8, 0, 0], Outcome::Check(Sense::INVALID_FIELD_IN_CDB)),
            (&[0xBE, 0, 0, 0, 0, 3, 0, 0, 2, 0x00, 0, 0], Outcome::Good),
        ]);
    }

    #[test]
    fn read_toc_formats() {
        let mut t = target(300);
        let f0 = bytes(t.execute(&[0x43, 0, 0, 0, 0, 0, 0, 0x03, 0x24, 0]));
        assert_eq!(f0, mmc::toc_formatted(300, false, 0).unwrap());
        let f0m = bytes(t.execute(&[0x43, 2, 0, 0, 0, 0, 1, 0x03, 0x24, 0]));
        assert_eq!(f0m, mmc::toc_formatted(300, true, 1).unwrap());
        let f1 = bytes(t.execute(&[0x43, 0, 1, 0, 0, 0, 0, 0, 12, 0]));
        assert_eq!(f1, mmc::toc_session_info(false));
        // SFF-8020 byte-9 format bits, as Linux sr_vendor sends: 0x40 = session info.
        let f1b = bytes(t.execute(&[0x43, 0, 0, 0, 0, 0, 0, 0, 12, 0x40]));
        assert_eq!(f1b, mmc::toc_session_info(false));
        let f2b = bytes(t.execute(&[0x43, 2, 0, 0, 0, 0, 0, 0xFF, 0xFF, 0x80]));
        assert_eq!(f2b, mmc::toc_raw(300, 0).unwrap());
        let f2 = bytes(t.execute(&[0x43, 0, 2, 0, 0, 0, 1, 0, 48, 0]));
        assert_eq!(f2.len(), 48);
        assert_eq!(
            bytes(t.execute(&[0x43, 0, 0, 0, 0, 0, 0, 0, 4, 0])),
            f0[..4].to_vec()
        );
        for cdb in [
            [0x43, 0, 0, 0, 0, 0, 2, 0, 20, 0],
            [0x43, 0, 3, 0, 0, 0, 0, 0, 20, 0],
            [0x43, 0, 0, 0, 0, 0, 0, 0, 20, 0xC0],
            [0x43, 0, 5, 0, 0, 0, 0, 0, 20, 0],
        ] {
            assert_eq!(t.execute(&cdb), Outcome::Check(Sense::INVALID_FIELD_IN_CDB));
        }
        t.remove_medium();
        assert_eq!(
            t.execute(&[0x43, 0, 0, 0, 0, 0, 0, 0, 20, 0]),
            Outcome::Check(Sense::MEDIUM_NOT_PRESENT)
        );
    }

    #[test]
    fn mode_sense_variants() {
        let mut t = target(0x1234);
        let r = bytes(t.execute(&[0x5A, 0x08, 0x2A, 0, 0, 0, 0, 0, 128, 0]));
        assert_eq!(&r[..8], &[0, 0x1C, 0, 0, 0, 0, 0, 0]);
        assert_eq!(&r[8..10], &[0x2A, 0x14]);
        let r = bytes(t.execute(&[0x5A, 0x00, 0x2A, 0, 0, 0, 0, 0, 128, 0]));
        assert_eq!(
            &r[..16],
            &[0, 0x24, 0, 0, 0, 0, 0, 8, 0, 0, 0x12, 0x34, 0, 0, 8, 0]
        );
        let r = bytes(t.execute(&[0x1A, 0x08, 0x3F, 0, 255, 0]));
        assert_eq!(r.len(), 4 + 50);
        assert_eq!(r[0], 53);
        let r = bytes(t.execute(&[0x1A, 0x08, 0x3F, 0xFF, 255, 0]));
        assert_eq!(r.len(), 54);
        let r = bytes(t.execute(&[0x5A, 0x08, 0x0E, 0, 0, 0, 0, 0, 10, 0]));
        assert_eq!(r, vec![0, 22, 0, 0, 0, 0, 0, 0, 0x0E, 0x0E]);
        let r = bytes(t.execute(&[0x1A, 0x08, 0x41, 0, 255, 0]));
        assert_eq!(&r[4..6], &[0x01, 0x0A]);
        assert!(r[6..].iter().all(|&b| b == 0));
        assert_eq!(
            t.execute(&[0x1A, 0x08, 0xC1, 0, 255, 0]),
            Outcome::Check(Sense::SAVING_PARAMETERS_NOT_SUPPORTED)
        );
        assert_eq!(
            t.execute(&[0x1A, 0x08, 0x05, 0, 255, 0]),
            Outcome::Check(Sense::INVALID_FIELD_IN_CDB)
        );
        assert_eq!(
            t.execute(&[0x1A, 0x08, 0x2A, 1, 255, 0]),
            Outcome::Check(Sense::INVALID_FIELD_IN_CDB)
        );
        // Lock state shows in page 0x2A byte 6.
        assert_eq!(t.execute(&[0x1E, 0, 0, 0, 1, 0]), Outcome::Good);
        let r = bytes(t.execute(&[0x5A, 0x08, 0x2A, 0, 0, 0, 0, 0, 128, 0]));
        assert_eq!(r[8 + 6], 0x2B);
    }

    #[test]
    fn prevent_and_eject() {
        let mut t = target(10);
        assert_eq!(t.execute(&[0x1E, 0, 0, 0, 1, 0]), Outcome::Good);
        assert!(t.is_locked());
        assert_eq!(
            t.execute(&[0x1B, 0, 0, 0, 0x02, 0]),
            Outcome::Check(Sense::MEDIUM_REMOVAL_PREVENTED)
        );
        assert_eq!(t.medium_state(), MediumState::Loaded);
        assert_eq!(t.execute(&[0x1E, 0, 0, 0, 0, 0]), Outcome::Good);
        // TEST UNIT READY's sense, then the media event (GESN, polled).
        let ready_and_event = |t: &mut ScsiTarget| {
            let ready = t.execute(&[0; 6]);
            (ready, poll_events(t, 0x10, 8))
        };
        // Drain the initial new-media event.
        ready_and_event(&mut t);
        assert_eq!(t.execute(&[0x1B, 0, 0, 0, 0x02, 0]), Outcome::Good);
        assert_eq!(t.medium_state(), MediumState::TrayOpen);
        let tray_open = Outcome::Check(Sense::MEDIUM_NOT_PRESENT_TRAY_OPEN);
        let removal = vec![0, 6, 4, 0x10, 3, 0x01, 0, 0];
        assert_eq!(ready_and_event(&mut t), (tray_open, removal));
        assert_eq!(
            bytes(t.execute(&[0xBD, 0, 0, 0, 0, 0, 0, 0, 0, 8, 0, 0]))[1],
            0x10
        );
        // Load: the disc on the tray comes back as new media.
        assert_eq!(t.execute(&[0x1B, 0, 0, 0, 0x03, 0]), Outcome::Good);
        assert_eq!(t.medium_state(), MediumState::Loaded);
        let changed = Outcome::Check(Sense::MEDIUM_MAY_HAVE_CHANGED);
        let new_media = vec![0, 6, 4, 0x10, 2, 0x02, 0, 0];
        assert_eq!(ready_and_event(&mut t), (changed, new_media));
        // Stop/start without LoEj and power conditions are no-ops.
        assert_eq!(t.execute(&[0x1B, 0, 0, 0, 0x00, 0]), Outcome::Good);
        assert_eq!(t.execute(&[0x1B, 0, 0, 0, 0x32, 0]), Outcome::Good);
        assert_eq!(t.medium_state(), MediumState::Loaded);
        // Reset releases the lock.
        t.execute(&[0x1E, 0, 0, 0, 1, 0]);
        t.reset();
        assert!(!t.is_locked());
    }

    /// GET EVENT STATUS NOTIFICATION, polled, for event `classes`, `alloc` bytes.
    fn poll_events(t: &mut ScsiTarget, classes: u8, alloc: u8) -> Vec<u8> {
        bytes(t.execute(&[0x4A, 1, 0, 0, classes, 0, 0, 0, alloc, 0]))
    }

    #[test]
    fn gesn_polled_only_and_events() {
        let mut t = target(10);
        assert_eq!(
            t.execute(&[0x4A, 0, 0, 0, 0x10, 0, 0, 0, 8, 0]),
            Outcome::Check(Sense::INVALID_FIELD_IN_CDB)
        );
        // Windows' first probe: class mask 0 returns the supported classes.
        assert_eq!(poll_events(&mut t, 0x00, 8), vec![0, 2, 0x80, 0x10]);
        assert_eq!(
            poll_events(&mut t, 0x10, 8),
            vec![0, 6, 4, 0x10, 2, 0x02, 0, 0]
        );
        assert_eq!(
            poll_events(&mut t, 0x10, 8),
            vec![0, 6, 4, 0x10, 0, 0x02, 0, 0]
        );
        t.remove_medium();
        assert_eq!(poll_events(&mut t, 0x10, 4), vec![0, 6, 4, 0x10]);
        // The 4-byte read consumed the removal event.
        assert_eq!(
            poll_events(&mut t, 0x10, 8),
            vec![0, 6, 4, 0x10, 0, 0, 0, 0]
        );
        for _ in 0..10 {
            t.insert_medium(Box::new(MemoryMedium::patterned("x", 1)));
        }
        assert_eq!(t.events.len(), MAX_PENDING_EVENTS);
    }

    #[test]
    fn disc_info_and_dvd_structure() {
        let mut t = target(10);
        let di = bytes(t.execute(&[0x51, 0, 0, 0, 0, 0, 0, 0, 34, 0]));
        assert_eq!(di, mmc::disc_information());
        assert_eq!(
            t.execute(&[0x51, 1, 0, 0, 0, 0, 0, 0, 34, 0]),
            Outcome::Check(Sense::INVALID_FIELD_IN_CDB)
        );
        assert_eq!(
            t.execute(&[0xAD, 0, 0, 0, 0, 0, 0, 0, 8, 4, 0, 0]),
            Outcome::Check(Sense::INCOMPATIBLE_MEDIUM_FORMAT)
        );
        assert_eq!(
            t.execute(&[0xAC, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0]),
            Outcome::DataIn(DataIn::Bytes(mmc::performance(Some(10), 1)))
        );
        assert_eq!(
            t.execute(&[0xAC, 0, 0, 0, 0, 0, 0, 0, 0, 1, 9, 0]),
            Outcome::Check(Sense::INVALID_FIELD_IN_CDB)
        );
        for op in [0xBB, 0x35, 0x91] {
            let mut cdb = [0u8; 12];
            cdb[0] = op;
            assert_eq!(t.execute(&cdb), Outcome::Good);
        }
        let ti = bytes(t.execute(&[0x52, 1, 0, 0, 0, 1, 0, 0, 36, 0]));
        assert_eq!(ti, mmc::track_information(10));
        assert_eq!(
            t.execute(&[0x52, 1, 0, 0, 0, 2, 0, 0, 36, 0]),
            Outcome::Check(Sense::INVALID_FIELD_IN_CDB)
        );
        assert_eq!(
            t.execute(&[0xA0, 0, 0, 0, 0, 0, 0, 0, 0, 16, 0, 0]),
            Outcome::DataIn(DataIn::Bytes(mmc::report_luns()))
        );
        assert_eq!(
            t.execute(&[0x44, 0, 0, 0, 0, 5, 0, 0, 8, 0]),
            Outcome::DataIn(DataIn::Bytes(mmc::read_header(5, false)))
        );
    }

    #[test]
    fn mode_select_accepts_2048_only() {
        let mut t = target(10);
        assert_eq!(
            t.execute(&[0x55, 0x10, 0, 0, 0, 0, 0, 0, 16, 0]),
            Outcome::DataOut(16)
        );
        let mut p = vec![0u8; 16];
        p[7] = 8;
        p[8 + 6] = 0x08;
        assert_eq!(t.finish_data_out(&[0x55], &p), Ok(()));
        p[8 + 6] = 0x09;
        p[8 + 7] = 0x30;
        assert_eq!(
            t.finish_data_out(&[0x55], &p),
            Err(Sense::INVALID_FIELD_IN_PARAMETER_LIST)
        );
        assert_eq!(
            t.finish_data_out(&[0x15], &[0, 0]),
            Err(Sense::PARAMETER_LIST_LENGTH_ERROR)
        );
        assert_eq!(t.finish_data_out(&[0x15], &[0, 0, 0, 0]), Ok(()));
        assert_eq!(t.execute(&[0x15, 0x10, 0, 0, 0, 0]), Outcome::Good);
        assert_eq!(t.finish_data_out(&[0xB6], &[1, 2, 3]), Ok(()));
    }
}
