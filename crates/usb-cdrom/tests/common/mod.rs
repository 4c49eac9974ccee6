//! A small USB host for the integration tests: drives a `UsbCdrom` the way Linux
//! usb-storage drives a Bulk-Only device.
#![allow(dead_code)]

use usb_cdrom::medium::fill_pattern;
use usb_cdrom::{
    Cbw, Completion, ControlResult, Csw, CswStatus, DeviceConfig, Medium, MediumError,
    MemoryMedium, Sense, SetupPacket, TransferStatus, UsbCdrom, BULK_IN_ENDPOINT,
    BULK_OUT_ENDPOINT, SECTOR_SIZE,
};

/// A large disc whose sectors are computed (the `fill_pattern` pattern), optionally with
/// unreadable sectors from `bad_from` on.
pub struct SyntheticMedium {
    pub sectors: u64,
    pub bad_from: Option<u64>,
}

impl Medium for SyntheticMedium {
    fn sector_count(&self) -> u64 {
        self.sectors
    }
    fn read_sectors(&mut self, lba: u64, count: u32, buf: &mut [u8]) -> Result<(), MediumError> {
        if buf.len() != count as usize * SECTOR_SIZE || lba + u64::from(count) > self.sectors {
            return Err(MediumError::Unreadable { lba });
        }
        if let Some(bad) = self.bad_from {
            if lba + u64::from(count) > bad {
                return Err(MediumError::Unreadable { lba: bad });
            }
        }
        for (i, s) in buf.chunks_exact_mut(SECTOR_SIZE).enumerate() {
            fill_pattern(lba + i as u64, s);
        }
        Ok(())
    }
    fn name(&self) -> &str {
        "synthetic"
    }
}

/// The expected bytes of `count` sectors from `lba` of a patterned disc.
pub fn pattern(lba: u64, count: u64) -> Vec<u8> {
    let mut v = vec![0u8; count as usize * SECTOR_SIZE];
    for (i, s) in v.chunks_exact_mut(SECTOR_SIZE).enumerate() {
        fill_pattern(lba + i as u64, s);
    }
    v
}

/// A CBW for `cdb`.
pub fn cbw(tag: u32, len: u32, data_in: bool, cdb: &[u8]) -> [u8; 31] {
    let mut cb = [0u8; 16];
    cb[..cdb.len()].copy_from_slice(cdb);
    Cbw {
        tag,
        data_transfer_length: len,
        data_in,
        lun: 0,
        cb_length: cdb.len() as u8,
        cb,
    }
    .to_bytes()
}

/// READ(10) CDB.
pub fn read10(lba: u32, blocks: u16) -> Vec<u8> {
    let l = lba.to_be_bytes();
    let b = blocks.to_be_bytes();
    vec![0x28, 0, l[0], l[1], l[2], l[3], 0, b[0], b[1], 0]
}

pub struct Host {
    pub dev: UsbCdrom,
    next_id: u64,
    next_tag: u32,
}

impl Host {
    pub fn new(dev: UsbCdrom) -> Self {
        Self {
            dev,
            next_id: 1000,
            next_tag: 1,
        }
    }

    /// A drive holding a patterned disc of `sectors` sectors, power-on UA consumed.
    pub fn with_disc(sectors: u32) -> Self {
        let mut h = Self::new(UsbCdrom::with_medium(
            DeviceConfig::default(),
            Box::new(MemoryMedium::patterned("disc", sectors)),
        ));
        h.clear_unit_attentions();
        h
    }

    pub fn id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    pub fn tag(&mut self) -> u32 {
        self.next_tag += 1;
        self.next_tag
    }

    pub fn control(
        &mut self,
        rt: u8,
        req: u8,
        value: u16,
        index: u16,
        length: u16,
    ) -> ControlResult {
        self.dev
            .control(SetupPacket::new(rt, req, value, index, length), &[])
    }

    pub fn clear_halt(&mut self, ep: u8) {
        let r = self.control(0x02, 0x01, 0, u16::from(ep), 0);
        assert_eq!(r.status, TransferStatus::Success);
    }

    /// BOT reset recovery: mass-storage reset, then clear both halts.
    pub fn reset_recovery(&mut self) {
        assert!(self.control(0x21, 0xFF, 0, 0, 0).is_ok());
        self.clear_halt(BULK_IN_ENDPOINT);
        self.clear_halt(BULK_OUT_ENDPOINT);
    }

    /// Submits an OUT transfer and returns its completion (which must come at once).
    pub fn out(&mut self, data: &[u8]) -> Completion {
        let id = self.id();
        self.dev.submit_bulk_out(BULK_OUT_ENDPOINT, id, data);
        self.only_completion(id, "OUT")
    }

    /// Submits an IN request and returns its completion (which must come at once).
    pub fn in_(&mut self, max_len: u32) -> Completion {
        let id = self.id();
        self.dev.submit_bulk_in(BULK_IN_ENDPOINT, id, max_len);
        self.only_completion(id, "IN")
    }

    /// The one completion waiting, which must be that of request `id`.
    fn only_completion(&mut self, id: u64, what: &str) -> Completion {
        let mut c = self.dev.take_completions();
        assert_eq!(c.len(), 1, "one {what} completion expected: {c:?}");
        let c = c.remove(0);
        assert_eq!(c.id, id);
        c
    }

    /// Sends a CBW; returns its tag.
    pub fn send_cbw(&mut self, cdb: &[u8], len: u32, data_in: bool) -> u32 {
        let tag = self.tag();
        let c = self.out(&cbw(tag, len, data_in, cdb));
        assert_eq!(c.status, TransferStatus::Success);
        assert_eq!(c.length, 31);
        tag
    }

    /// Reads the CSW like Linux does: a 13-byte request, retried once after clearing a
    /// stall.
    pub fn read_csw(&mut self, tag: u32) -> Csw {
        let mut c = self.in_(13);
        if c.status == TransferStatus::Stall {
            self.clear_halt(BULK_IN_ENDPOINT);
            c = self.in_(13);
        }
        assert_eq!(c.status, TransferStatus::Success, "CSW read: {c:?}");
        let csw = Csw::parse(&c.data).expect("a CSW");
        assert_eq!(csw.tag, tag);
        csw
    }

    /// After a stalled data phase: clears the halt of `ep`, then reads the CSW of
    /// `tag`; returns its status and residue.
    pub fn csw_after_stall(&mut self, ep: u8, tag: u32) -> (CswStatus, u32) {
        self.clear_halt(ep);
        let csw = self.read_csw(tag);
        (csw.status, csw.residue)
    }

    /// A data-in command with a host transfer length of `len`: returns the data and CSW.
    pub fn command_in(&mut self, cdb: &[u8], len: u32) -> (Vec<u8>, Csw) {
        let tag = self.send_cbw(cdb, len, true);
        let mut data = Vec::new();
        if len > 0 {
            let c = self.in_(len);
            data = c.data.clone();
            assert!(data.len() <= len as usize);
            if c.status == TransferStatus::Stall {
                self.clear_halt(BULK_IN_ENDPOINT);
            } else {
                assert_eq!(c.status, TransferStatus::Success);
            }
        }
        let csw = self.read_csw(tag);
        (data, csw)
    }

    /// A command without data.
    pub fn command(&mut self, cdb: &[u8]) -> Csw {
        let tag = self.send_cbw(cdb, 0, false);
        self.read_csw(tag)
    }

    /// A data-out command: sends `data` in one OUT transfer.
    pub fn command_out(&mut self, cdb: &[u8], data: &[u8]) -> Csw {
        let tag = self.send_cbw(cdb, data.len() as u32, false);
        let c = self.out(data);
        if c.status == TransferStatus::Stall {
            self.clear_halt(BULK_OUT_ENDPOINT);
        }
        self.read_csw(tag)
    }

    /// REQUEST SENSE through the transport.
    pub fn sense(&mut self) -> Sense {
        let (d, csw) = self.command_in(&[0x03, 0, 0, 0, 18, 0], 18);
        assert_eq!(csw.status, CswStatus::Passed);
        assert_eq!(csw.residue, 0);
        assert_eq!(d.len(), 18);
        assert_eq!(d[0], 0x70);
        Sense::new(d[2] & 0x0F, d[12], d[13])
    }

    /// TEST UNIT READY until it passes or reports something other than a UA.
    pub fn clear_unit_attentions(&mut self) {
        for _ in 0..4 {
            let csw = self.command(&[0; 6]);
            if csw.status == CswStatus::Passed {
                return;
            }
            let s = self.sense();
            if !s.is_unit_attention() {
                return;
            }
        }
        panic!("unit attentions do not clear");
    }
}
