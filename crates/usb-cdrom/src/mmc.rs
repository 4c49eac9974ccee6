//! Byte layouts of the SCSI/MMC responses of a single-session, single-track data disc.
//!
//! Pure functions of the disc size and a few flags, so each layout is tested byte by
//! byte. Multi-byte fields are big-endian. Callers cut responses to the allocation length.

use crate::sense::Sense;

/// Largest disc (in 2048-byte sectors) still presented as a CD: 99 minutes
/// (99 × 60 × 75 frames). Anything larger is presented as a DVD-ROM.
pub const CD_MAX_SECTORS: u64 = 99 * 60 * 75;

/// MMC profile numbers.
pub mod profile {
    /// No current profile (no medium).
    pub const NONE: u16 = 0x0000;
    /// CD-ROM.
    pub const CD_ROM: u16 = 0x0008;
    /// DVD-ROM.
    pub const DVD_ROM: u16 = 0x0010;
}

/// Kind of disc the drive presents for a medium of a given size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DiscKind {
    /// A CD-ROM (up to [`CD_MAX_SECTORS`]).
    Cd,
    /// A DVD-ROM (anything larger).
    Dvd,
}

impl DiscKind {
    /// The disc kind for a medium of `sectors` sectors.
    pub fn for_sectors(sectors: u64) -> Self {
        if sectors > CD_MAX_SECTORS {
            DiscKind::Dvd
        } else {
            DiscKind::Cd
        }
    }

    /// The MMC profile number.
    pub fn profile(self) -> u16 {
        match self {
            DiscKind::Cd => profile::CD_ROM,
            DiscKind::Dvd => profile::DVD_ROM,
        }
    }
}

/// Converts an LBA to minutes/seconds/frames (with the 150-frame lead-in offset);
/// minutes saturate at 255 for discs too big for MSF.
pub fn lba_to_msf(lba: u64) -> [u8; 3] {
    let frames = lba.saturating_add(150);
    let minutes = (frames / (60 * 75)).min(255) as u8;
    let seconds = ((frames / 75) % 60) as u8;
    let frame = (frames % 75) as u8;
    [minutes, seconds, frame]
}

/// A 4-byte address field: `00 MM SS FF` with `msf`, else the LBA (saturating at u32).
pub fn address_field(lba: u64, msf: bool) -> [u8; 4] {
    if msf {
        let [m, s, f] = lba_to_msf(lba);
        [0, m, s, f]
    } else {
        sat_u32(lba).to_be_bytes()
    }
}

/// `v` as a u32, saturating.
pub(crate) fn sat_u32(v: u64) -> u32 {
    u32::try_from(v).unwrap_or(u32::MAX)
}

/// Writes the length of `buf` minus `header` (the bytes after the length field) into the
/// big-endian u16 at the start of `buf`.
fn put_len16(buf: &mut [u8], after: usize) {
    let len = u16::try_from(buf.len().saturating_sub(after)).unwrap_or(u16::MAX);
    buf[0..2].copy_from_slice(&len.to_be_bytes());
}

/// ADR 1 / control 4 (data track, copy prohibited) of the data track.
const CONTROL_DATA_TRACK: u8 = 0x14;
/// ADR/control of the lead-out, as QEMU and Linux's `f_mass_storage` report it.
const CONTROL_LEAD_OUT: u8 = 0x16;

/// READ TOC/PMA/ATIP format 0000b (formatted TOC) starting at `start_track`.
pub fn toc_formatted(sectors: u64, msf: bool, start_track: u8) -> Result<Vec<u8>, Sense> {
    let mut b = vec![0, 0, 1, 1];
    match start_track {
        0 | 1 => {
            b.extend_from_slice(&[0, CONTROL_DATA_TRACK, 1, 0]);
            b.extend_from_slice(&address_field(0, msf));
        }
        0xAA => {}
        _ => return Err(Sense::INVALID_FIELD_IN_CDB),
    }
    b.extend_from_slice(&[0, CONTROL_LEAD_OUT, 0xAA, 0]);
    b.extend_from_slice(&address_field(sectors, msf));
    put_len16(&mut b, 2);
    Ok(b)
}

/// READ TOC/PMA/ATIP format 0001b (multi-session information).
pub fn toc_session_info(msf: bool) -> Vec<u8> {
    let mut b = vec![0, 0x0A, 1, 1, 0, CONTROL_DATA_TRACK, 1, 0];
    b.extend_from_slice(&address_field(0, msf));
    b
}

/// READ TOC/PMA/ATIP format 0010b (raw TOC: points A0, A1, A2 and track 1 of session 1).
/// Addresses are always MSF, as they come from the Q sub-channel.
pub fn toc_raw(sectors: u64, session: u8) -> Result<Vec<u8>, Sense> {
    if session > 1 {
        return Err(Sense::INVALID_FIELD_IN_CDB);
    }
    let mut b = vec![0, 0, 1, 1];
    let mut point = |point: u8, p: [u8; 3]| {
        b.extend_from_slice(&[
            1,
            CONTROL_DATA_TRACK,
            0,
            point,
            0,
            0,
            0,
            0,
            p[0],
            p[1],
            p[2],
        ]);
    };
    point(0xA0, [1, 0x00, 0]); // first track 1, disc type CD-DA/CD-ROM
    point(0xA1, [1, 0, 0]); // last track 1
    point(0xA2, lba_to_msf(sectors)); // lead-out start
    point(0x01, lba_to_msf(0)); // track 1 start
    put_len16(&mut b, 2);
    Ok(b)
}

/// Standard INQUIRY data (36 bytes) of a removable CD/DVD device.
pub fn inquiry_standard(vendor: &[u8; 8], product: &[u8; 16], revision: &[u8; 4]) -> Vec<u8> {
    let mut b = vec![0u8; 36];
    b[0] = 0x05; // peripheral qualifier 0, device type CD/DVD
    b[1] = 0x80; // RMB
    b[2] = 0x05; // SPC-3
    b[3] = 0x02; // response data format 2
    b[4] = 31; // additional length
    b[8..16].copy_from_slice(vendor);
    b[16..32].copy_from_slice(product);
    b[32..36].copy_from_slice(revision);
    b
}

/// INQUIRY VPD page 0x00 (supported pages: 0x00, 0x80).
pub fn vpd_supported_pages() -> Vec<u8> {
    vec![0x05, 0x00, 0x00, 0x02, 0x00, 0x80]
}

/// INQUIRY VPD page 0x80 (unit serial number), ASCII, at most 251 bytes.
pub fn vpd_serial(serial: &str) -> Vec<u8> {
    let s: Vec<u8> = serial
        .bytes()
        .map(|c| if c.is_ascii_graphic() { c } else { b' ' })
        .take(251)
        .collect();
    let mut b = vec![0x05, 0x80, 0x00, s.len() as u8];
    b.extend_from_slice(&s);
    b
}

/// READ CAPACITY(10) data: last LBA (saturating) and block length 2048.
pub fn read_capacity(sectors: u64) -> Vec<u8> {
    let last = sat_u32(sectors.saturating_sub(1));
    let mut b = last.to_be_bytes().to_vec();
    b.extend_from_slice(&2048u32.to_be_bytes());
    b
}

/// READ DISC INFORMATION, standard disc information (34 bytes) of a finalized disc.
pub fn disc_information() -> Vec<u8> {
    let mut b = vec![0u8; 34];
    b[0..2].copy_from_slice(&32u16.to_be_bytes());
    b[2] = 0x0E; // not erasable, last session complete, disc complete
    b[3] = 1; // first track on disc
    b[4] = 1; // sessions (LSB)
    b[5] = 1; // first track in last session (LSB)
    b[6] = 1; // last track in last session (LSB)
    b[7] = 0x20; // URU
    b[8] = 0x00; // disc type CD-DA / CD-ROM
    b[16..24].fill(0xFF); // lead-in / last lead-out of a complete disc
    b
}

/// READ TRACK INFORMATION for track 1 (36 bytes).
pub fn track_information(sectors: u64) -> Vec<u8> {
    let mut b = vec![0u8; 36];
    b[0..2].copy_from_slice(&34u16.to_be_bytes());
    b[2] = 1; // track number (LSB)
    b[3] = 1; // session number (LSB)
    b[5] = 0x04; // data track, recorded uninterrupted
    b[6] = 0x01; // data mode 1
    b[24..28].copy_from_slice(&sat_u32(sectors).to_be_bytes()); // track size
    b
}

/// READ HEADER data for a Mode 1 sector.
pub fn read_header(lba: u64, msf: bool) -> Vec<u8> {
    let mut b = vec![0x01, 0, 0, 0];
    b.extend_from_slice(&address_field(lba, msf));
    b
}

/// MECHANISM STATUS header (8 bytes, no slot tables).
pub fn mechanism_status(tray_open: bool) -> Vec<u8> {
    vec![0, if tray_open { 0x10 } else { 0 }, 0, 0, 0, 1, 0, 0]
}

/// GET EVENT STATUS NOTIFICATION media event codes.
pub mod media_event {
    /// No change.
    pub const NO_CHANGE: u8 = 0;
    /// The user asked for an eject.
    pub const EJECT_REQUEST: u8 = 1;
    /// New media was loaded.
    pub const NEW_MEDIA: u8 = 2;
    /// Media was removed.
    pub const MEDIA_REMOVAL: u8 = 3;
}

/// The GESN supported-event-class mask: media class only.
pub const GESN_SUPPORTED_CLASSES: u8 = 0x10;

/// GET EVENT STATUS NOTIFICATION response. With `event` (the media class was asked for)
/// it is the media event descriptor; without, "no event available".
///
/// The event data length counts the bytes after the length field, as MMC defines it
/// (Windows' classpnp subtracts 2 and then needs 4 bytes).
pub fn gesn(event: Option<(u8, bool, bool)>) -> Vec<u8> {
    match event {
        Some((code, present, tray_open)) => vec![
            0x00,
            0x06,
            0x04, // media class
            GESN_SUPPORTED_CLASSES,
            code,
            (u8::from(present) << 1) | u8::from(tray_open),
            0,
            0,
        ],
        None => vec![0x00, 0x02, 0x80, GESN_SUPPORTED_CLASSES],
    }
}

/// The disc-related state GET CONFIGURATION reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConfigurationState {
    /// The loaded disc, if any.
    pub disc: Option<DiscKind>,
}

/// One feature descriptor: code and body (after the 4-byte feature header).
struct Feature {
    code: u16,
    version: u8,
    persistent: bool,
    current: bool,
    body: Vec<u8>,
}

impl Feature {
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.code.to_be_bytes());
        out.push((self.version << 2) | (u8::from(self.persistent) << 1) | u8::from(self.current));
        out.push(self.body.len() as u8);
        out.extend_from_slice(&self.body);
    }
}

fn features(state: ConfigurationState) -> Vec<Feature> {
    let cd = state.disc == Some(DiscKind::Cd);
    let dvd = state.disc == Some(DiscKind::Dvd);
    let present = state.disc.is_some();
    let blocking: u16 = if dvd { 16 } else { 1 };
    let mut random_readable = 2048u32.to_be_bytes().to_vec();
    random_readable.extend_from_slice(&blocking.to_be_bytes());
    random_readable.extend_from_slice(&[0, 0]);
    let profiles = vec![0x00, 0x10, u8::from(dvd), 0, 0x00, 0x08, u8::from(cd), 0];
    // (code, version, persistent, current, body)
    let table = [
        (0x0000, 0, true, true, profiles), // profile list
        (0x0001, 1, true, true, vec![0, 0, 0, 0x08, 0x01, 0, 0, 0]), // core: USB, DBE
        (0x0002, 1, true, true, vec![0, 0, 0, 0]), // morphing: no async, no OCEvent
        (0x0003, 0, true, true, vec![0x29, 0, 0, 0]), // removable medium: tray, eject, lock
        (0x0010, 0, false, present, random_readable), // random readable
        (0x001D, 0, false, cd, Vec::new()), // multi-read
        (0x001E, 2, false, cd, vec![0, 0, 0, 0]), // CD read
        (0x001F, 0, false, dvd, Vec::new()), // DVD read
        (0x0100, 0, true, true, Vec::new()), // power management
    ];
    table
        .into_iter()
        .map(|(code, version, persistent, current, body)| Feature {
            code,
            version,
            persistent,
            current,
            body,
        })
        .collect()
}

/// GET CONFIGURATION response for request type `rt` (0 all, 1 current, 2 one) starting
/// at feature `start`.
pub fn get_configuration(state: ConfigurationState, rt: u8, start: u16) -> Result<Vec<u8>, Sense> {
    let current_profile = state.disc.map_or(profile::NONE, DiscKind::profile);
    let mut b = vec![0, 0, 0, 0, 0, 0];
    b.extend_from_slice(&current_profile.to_be_bytes());
    for f in features(state) {
        let wanted = match rt {
            0 => f.code >= start,
            1 => f.code >= start && f.current,
            2 => f.code == start,
            _ => return Err(Sense::INVALID_FIELD_IN_CDB),
        };
        if wanted {
            f.encode(&mut b);
        }
    }
    let len = (b.len() - 4) as u32;
    b[0..4].copy_from_slice(&len.to_be_bytes());
    Ok(b)
}

/// Mode page 0x01 (read/write error recovery), 12 bytes.
fn mode_page_error_recovery() -> Vec<u8> {
    vec![0x01, 0x0A, 0x00, 0x05, 0, 0, 0, 0, 0, 0, 0, 0]
}

/// Mode page 0x0E (CD audio control), 16 bytes.
fn mode_page_audio_control() -> Vec<u8> {
    vec![
        0x0E, 0x0E, 0x04, 0, 0, 0, 0, 0, 0x01, 0xFF, 0x02, 0xFF, 0, 0, 0, 0,
    ]
}

/// Maximum read speed reported in mode page 0x2A, in kB/s (52× CD).
pub const MAX_READ_SPEED_KBS: u16 = 52 * 176;

/// Mode page 0x2A (CD/DVD capabilities and mechanical status), 22 bytes.
fn mode_page_capabilities(locked: bool) -> Vec<u8> {
    let speed = MAX_READ_SPEED_KBS.to_be_bytes();
    vec![
        0x2A,
        0x14,
        0x3B,                           // reads CD-R, CD-RW, DVD-ROM, DVD-R, DVD-RAM
        0x00,                           // writes nothing
        0x70,                           // mode 2 form 1, form 2, multi-session
        0x00,                           // no CD-DA
        0x29 | (u8::from(locked) << 1), // tray, eject, lock (+ lock state)
        0x00,
        speed[0],
        speed[1],
        0x01, // volume levels: 256
        0x00,
        0x08, // buffer: 2048 KB
        0x00,
        speed[0],
        speed[1],
        0,
        0,
        0,
        0,
        0,
        0,
    ]
}

/// Which values MODE SENSE returns (the PC field).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PageControl {
    /// Current values (also used for default values).
    Current,
    /// Changeable-value masks: nothing is changeable.
    Changeable,
}

/// The mode pages for page code `page` (0x3F = all) in ascending order.
pub fn mode_pages(page: u8, pc: PageControl, locked: bool) -> Result<Vec<u8>, Sense> {
    let pages = match page {
        0x01 => vec![mode_page_error_recovery()],
        0x0E => vec![mode_page_audio_control()],
        0x2A => vec![mode_page_capabilities(locked)],
        0x3F => vec![
            mode_page_error_recovery(),
            mode_page_audio_control(),
            mode_page_capabilities(locked),
        ],
        _ => return Err(Sense::INVALID_FIELD_IN_CDB),
    };
    let mut out = Vec::new();
    for mut p in pages {
        if pc == PageControl::Changeable {
            p[2..].fill(0);
        }
        out.extend_from_slice(&p);
    }
    Ok(out)
}

/// A short mode parameter block descriptor (8 bytes).
pub fn block_descriptor(sectors: u64) -> Vec<u8> {
    let blocks = sectors.min(0x00FF_FFFF) as u32;
    let mut b = blocks.to_be_bytes().to_vec(); // byte 0 is the density code 0
    b.extend_from_slice(&2048u32.to_be_bytes()); // byte 4 reserved, then 24-bit length
    b
}

/// Wraps mode pages and an optional block descriptor in a MODE SENSE(6) or (10) header.
pub fn mode_sense_response(ten: bool, block_desc: &[u8], pages: &[u8]) -> Vec<u8> {
    let mut b = if ten {
        let bd = (block_desc.len() as u16).to_be_bytes();
        vec![0, 0, 0, 0, 0, 0, bd[0], bd[1]]
    } else {
        vec![0, 0, 0, block_desc.len() as u8]
    };
    b.extend_from_slice(block_desc);
    b.extend_from_slice(pages);
    if ten {
        put_len16(&mut b, 2);
    } else {
        b[0] = u8::try_from(b.len() - 1).unwrap_or(u8::MAX);
    }
    b
}

/// READ DVD STRUCTURE format 0x00 (physical format information) of a single-layer
/// DVD-ROM of `sectors` sectors.
pub fn dvd_physical_format(sectors: u64) -> Vec<u8> {
    let mut b = vec![0u8; 4 + 2048];
    b[0..2].copy_from_slice(&2050u16.to_be_bytes());
    let d = &mut b[4..];
    d[0] = 0x01; // DVD-ROM, part version 1
    d[1] = 0x0F; // 120 mm, maximum rate not specified
    d[2] = 0x01; // one layer, parallel track path, embossed
    d[3] = 0x00;
    let start: u32 = 0x0003_0000;
    let end = start.saturating_add(sat_u32(sectors.saturating_sub(1)));
    d[4..8].copy_from_slice(&start.to_be_bytes());
    d[8..12].copy_from_slice(&end.to_be_bytes());
    b
}

/// READ DVD STRUCTURE format 0x01 (copyright information): no protection, all regions.
pub fn dvd_copyright() -> Vec<u8> {
    vec![0x00, 0x06, 0, 0, 0x00, 0x00, 0, 0]
}

/// GET PERFORMANCE (type 0, performance data): one nominal descriptor for the disc.
pub fn performance(sectors: Option<u64>, max_descriptors: u16) -> Vec<u8> {
    let mut b = vec![0u8; 8];
    if let (Some(sectors), true) = (sectors, max_descriptors > 0) {
        let kbs = u32::from(MAX_READ_SPEED_KBS);
        b.extend_from_slice(&0u32.to_be_bytes());
        b.extend_from_slice(&kbs.to_be_bytes());
        b.extend_from_slice(&sat_u32(sectors.saturating_sub(1)).to_be_bytes());
        b.extend_from_slice(&kbs.to_be_bytes());
    }
    let len = (b.len() - 4) as u32;
    b[0..4].copy_from_slice(&len.to_be_bytes());
    b
}

/// REPORT LUNS data: LUN 0 only.
pub fn report_luns() -> Vec<u8> {
    let mut b = vec![0u8; 16];
    b[3] = 8;
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn msf_conversion() {
        assert_eq!(lba_to_msf(0), [0, 2, 0]);
        assert_eq!(lba_to_msf(1), [0, 2, 1]);
        assert_eq!(lba_to_msf(4500 - 150), [1, 0, 0]);
        assert_eq!(lba_to_msf(74 + 75 * 59 + 4500 * 3 - 150), [3, 59, 74]);
        assert_eq!(lba_to_msf(u64::MAX)[0], 255);
        assert_eq!(address_field(0x1234, false), [0, 0, 0x12, 0x34]);
        assert_eq!(address_field(u64::MAX, false), [0xFF; 4]);
        assert_eq!(address_field(0, true), [0, 0, 2, 0]);
    }

    /// A format-0 TOC: header, track 1 and lead-out descriptors with the
    /// given address fields.
    fn toc0(track1: [u8; 4], lead_out: [u8; 4]) -> Vec<u8> {
        let mut toc = vec![0x00, 0x12, 0x01, 0x01, 0x00, 0x14, 0x01, 0x00];
        toc.extend(track1);
        toc.extend([0x00, 0x16, 0xAA, 0x00]);
        toc.extend(lead_out);
        toc
    }

    #[test]
    fn toc_format0_lba() {
        assert_eq!(
            toc_formatted(0x1234, false, 0),
            Ok(toc0([0, 0, 0, 0], [0, 0, 0x12, 0x34]))
        );
        let track1 = toc_formatted(0x1234, false, 1);
        assert_eq!(track1, toc_formatted(0x1234, false, 0));
    }

    #[test]
    fn toc_format0_msf_and_lead_out_only() {
        // 300 sectors: lead-out at frame 450 = 00:06:00.
        assert_eq!(
            toc_formatted(300, true, 1),
            Ok(toc0([0, 0, 2, 0], [0, 0, 6, 0]))
        );
        assert_eq!(
            toc_formatted(300, false, 0xAA).unwrap(),
            vec![0x00, 0x0A, 0x01, 0x01, 0x00, 0x16, 0xAA, 0x00, 0x00, 0x00, 0x01, 0x2C]
        );
        assert_eq!(
            toc_formatted(300, false, 2),
            Err(Sense::INVALID_FIELD_IN_CDB)
        );
    }

    #[test]
    fn toc_format1() {
        assert_eq!(
            toc_session_info(false),
            vec![0x00, 0x0A, 0x01, 0x01, 0x00, 0x14, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00]
        );
        assert_eq!(
            toc_session_info(true),
            vec![0x00, 0x0A, 0x01, 0x01, 0x00, 0x14, 0x01, 0x00, 0x00, 0x00, 0x02, 0x00]
        );
    }

    #[test]
    fn toc_format2() {
        let t = toc_raw(300, 0).unwrap();
        assert_eq!(t.len(), 4 + 4 * 11);
        assert_eq!(&t[0..4], &[0x00, 0x2E, 0x01, 0x01]);
        assert_eq!(&t[4..15], &[1, 0x14, 0, 0xA0, 0, 0, 0, 0, 1, 0, 0]);
        assert_eq!(&t[15..26], &[1, 0x14, 0, 0xA1, 0, 0, 0, 0, 1, 0, 0]);
        assert_eq!(&t[26..37], &[1, 0x14, 0, 0xA2, 0, 0, 0, 0, 0, 6, 0]);
        assert_eq!(&t[37..48], &[1, 0x14, 0, 0x01, 0, 0, 0, 0, 0, 2, 0]);
        assert!(toc_raw(300, 2).is_err());
    }

    #[test]
    fn inquiry_layout() {
        let d = inquiry_standard(b"AIRLOCK ", b"VIRTUAL CD-ROM  ", b"1.00");
        let mut expect = vec![0x05, 0x80, 0x05, 0x02, 0x1F, 0, 0, 0];
        expect.extend_from_slice(b"AIRLOCK VIRTUAL CD-ROM  1.00");
        assert_eq!(d, expect);
        assert_eq!(vpd_supported_pages(), vec![5, 0, 0, 2, 0, 0x80]);
        assert_eq!(
            vpd_serial("AB\n1"),
            vec![5, 0x80, 0, 4, b'A', b'B', b' ', b'1']
        );
        assert_eq!(vpd_serial(&"9".repeat(300)).len(), 255);
    }

    #[test]
    fn capacity_and_disc_info() {
        assert_eq!(read_capacity(0x1000), vec![0, 0, 0x0F, 0xFF, 0, 0, 0x08, 0]);
        assert_eq!(read_capacity(0), vec![0, 0, 0, 0, 0, 0, 0x08, 0]);
        assert_eq!(
            read_capacity(1 << 40),
            vec![0xFF, 0xFF, 0xFF, 0xFF, 0, 0, 0x08, 0]
        );
        let di = disc_information();
        assert_eq!(
            &di[..12],
            &[0x00, 0x20, 0x0E, 0x01, 0x01, 0x01, 0x01, 0x20, 0x00, 0, 0, 0]
        );
        assert_eq!(di.len(), 34);
        let ti = track_information(0x100);
        assert_eq!(&ti[..8], &[0x00, 0x22, 1, 1, 0, 0x04, 0x01, 0]);
        assert_eq!(&ti[24..28], &[0, 0, 1, 0]);
        assert_eq!(mechanism_status(false), vec![0, 0, 0, 0, 0, 1, 0, 0]);
        assert_eq!(mechanism_status(true)[1], 0x10);
        assert_eq!(read_header(16, false), vec![1, 0, 0, 0, 0, 0, 0, 16]);
    }

    #[test]
    fn gesn_layouts() {
        assert_eq!(
            gesn(Some((media_event::NEW_MEDIA, true, false))),
            vec![0x00, 0x06, 0x04, 0x10, 0x02, 0x02, 0x00, 0x00]
        );
        assert_eq!(
            gesn(Some((media_event::MEDIA_REMOVAL, false, true))),
            vec![0x00, 0x06, 0x04, 0x10, 0x03, 0x01, 0x00, 0x00]
        );
        assert_eq!(gesn(None), vec![0x00, 0x02, 0x80, 0x10]);
    }

    #[test]
    fn configuration_all_features_cd() {
        let c = get_configuration(
            ConfigurationState {
                disc: Some(DiscKind::Cd),
            },
            0,
            0,
        )
        .unwrap();
        #[rustfmt::skip]
        let expect = vec![
            0x00, 0x00, 0x00, 0x4C, 0x00, 0x00, 0x00, 0x08,
            0x00, 0x00, 0x03, 0x08, 0x00, 0x10, 0x00, 0x00, 0x00, 0x08, 0x01, 0x00,
            0x00, 0x01, 0x07, 0x08, 0x00, 0x00, 0x00, 0x08, 0x01, 0x00, 0x00, 0x00,
            0x00, 0x02, 0x07, 0x04, 0x00, 0x00, 0x00, 0x00,
            0x00, 0x03, 0x03, 0x04, 0x29, 0x00, 0x00, 0x00,
            0x00, 0x10, 0x01, 0x08, 0x00, 0x00, 0x08, 0x00, 0x00, 0x01, 0x00, 0x00,
            0x00, 0x1D, 0x01, 0x00,
            0x00, 0x1E, 0x09, 0x04, 0x00, 0x00, 0x00, 0x00,
            0x00, 0x1F, 0x00, 0x00,
            0x01, 0x00, 0x03, 0x00,
        ];
        assert_eq!(c, expect);
    }

    #[test]
    fn configuration_request_types() {
        let dvd = ConfigurationState {
            disc: Some(DiscKind::Dvd),
        };
        let none = ConfigurationState { disc: None };
        let c = get_configuration(dvd, 2, 0x001F).unwrap();
        assert_eq!(
            c,
            vec![0, 0, 0, 8, 0, 0, 0x00, 0x10, 0x00, 0x1F, 0x01, 0x00]
        );
        let c = get_configuration(none, 2, 0x0028).unwrap();
        assert_eq!(c, vec![0, 0, 0, 4, 0, 0, 0, 0]);
        // RT 1: only current features, from 0x0003 on.
        let c = get_configuration(none, 1, 0x0003).unwrap();
        assert_eq!(
            c,
            vec![
                0, 0, 0, 16, 0, 0, 0, 0, 0x00, 0x03, 0x03, 0x04, 0x29, 0, 0, 0, 0x01, 0x00, 0x03,
                0x00
            ]
        );
        assert_eq!(
            get_configuration(none, 3, 0),
            Err(Sense::INVALID_FIELD_IN_CDB)
        );
        let c = get_configuration(dvd, 0, 0).unwrap();
        assert_eq!(&c[6..8], &[0x00, 0x10]);
        assert_eq!(
            &c[12..20],
            &[0x00, 0x10, 0x01, 0x00, 0x00, 0x08, 0x00, 0x00]
        );
    }

    #[test]
    fn mode_sense_layouts() {
        let p = mode_pages(0x2A, PageControl::Current, false).unwrap();
        assert_eq!(
            p,
            vec![
                0x2A, 0x14, 0x3B, 0x00, 0x70, 0x00, 0x29, 0x00, 0x23, 0xC0, 0x01, 0x00, 0x08, 0x00,
                0x23, 0xC0, 0, 0, 0, 0, 0, 0
            ]
        );
        assert_eq!(
            mode_pages(0x2A, PageControl::Current, true).unwrap()[6],
            0x2B
        );
        let ch = mode_pages(0x2A, PageControl::Changeable, true).unwrap();
        assert_eq!(&ch[..2], &[0x2A, 0x14]);
        assert!(ch[2..].iter().all(|&b| b == 0));
        let all = mode_pages(0x3F, PageControl::Current, false).unwrap();
        assert_eq!(all.len(), 12 + 16 + 22);
        assert_eq!(all[0], 0x01);
        assert_eq!(all[12], 0x0E);
        assert_eq!(all[28], 0x2A);
        assert_eq!(
            mode_pages(0x05, PageControl::Current, false),
            Err(Sense::INVALID_FIELD_IN_CDB)
        );

        let r10 = mode_sense_response(true, &[], &p);
        assert_eq!(&r10[..8], &[0x00, 0x1C, 0, 0, 0, 0, 0, 0]);
        assert_eq!(r10.len(), 30);
        let bd = block_descriptor(0x1234);
        assert_eq!(bd, vec![0, 0, 0x12, 0x34, 0, 0, 0x08, 0]);
        let r6 = mode_sense_response(false, &bd, &p);
        assert_eq!(&r6[..4], &[33, 0, 0, 8]);
        assert_eq!(r6.len(), 34);
        let r10 = mode_sense_response(true, &bd, &p);
        assert_eq!(&r10[..8], &[0x00, 0x24, 0, 0, 0, 0, 0, 8]);
        assert_eq!(block_descriptor(1 << 30)[1..4], [0xFF, 0xFF, 0xFF]);
    }

    #[test]
    fn dvd_structures_and_misc() {
        let p = dvd_physical_format(0x10000);
        assert_eq!(p.len(), 2052);
        assert_eq!(
            &p[..16],
            &[0x08, 0x02, 0, 0, 0x01, 0x0F, 0x01, 0x00, 0, 3, 0, 0, 0, 3, 0xFF, 0xFF]
        );
        assert_eq!(dvd_copyright(), vec![0, 6, 0, 0, 0, 0, 0, 0]);
        let perf = performance(Some(100), 1);
        assert_eq!(perf.len(), 24);
        assert_eq!(&perf[..4], &[0, 0, 0, 20]);
        assert_eq!(&perf[16..20], &[0, 0, 0, 99]);
        assert_eq!(performance(None, 5), vec![0, 0, 0, 4, 0, 0, 0, 0]);
        assert_eq!(performance(Some(100), 0).len(), 8);
        assert_eq!(
            report_luns(),
            vec![0, 0, 0, 8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]
        );
        assert_eq!(DiscKind::for_sectors(CD_MAX_SECTORS), DiscKind::Cd);
        assert_eq!(DiscKind::for_sectors(CD_MAX_SECTORS + 1), DiscKind::Dvd);
    }
}
