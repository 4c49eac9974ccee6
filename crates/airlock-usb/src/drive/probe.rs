//! The terminal's only own command to a drive: a Bulk-Only INQUIRY, and the
//! policy on its answer (pure).
//!
//! Only SCSI peripheral device type 0x05 (CD/DVD) is forwarded. USB sticks
//! and disks answer 0x00, card readers 0x00 or 0x0E; anything else, or an
//! answer that does not parse, is refused.

use std::fmt;

use usb_cdrom::{Cbw, Csw, CswStatus};

/// Allocation length of our INQUIRY (standard data is 36 bytes).
pub const INQUIRY_LEN: u8 = 36;

/// SCSI peripheral device type of CD/DVD devices.
pub const TYPE_CD_DVD: u8 = 0x05;

/// The CBW of a command to LUN 0 that moves up to `data_len` bytes from the
/// device to the host: `cdb` is the SCSI command block (at most 16 bytes;
/// the rest is cut off).
pub fn data_in_cbw(tag: u32, data_len: u32, cdb: &[u8]) -> Cbw {
    let mut cb = [0u8; 16];
    let n = cdb.len().min(cb.len());
    cb[..n].copy_from_slice(&cdb[..n]);
    Cbw {
        tag,
        data_transfer_length: data_len,
        data_in: true,
        lun: 0,
        cb_length: n as u8,
        cb,
    }
}

/// The 31-byte CBW of a standard INQUIRY to LUN 0 asking for 36 bytes.
pub fn inquiry_cbw(tag: u32) -> [u8; 31] {
    let cdb = [0x12, 0, 0, 0, INQUIRY_LEN, 0];
    data_in_cbw(tag, u32::from(INQUIRY_LEN), &cdb).to_bytes()
}

/// Why a probe of a device failed or was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProbeError {
    /// The CSW was missing, malformed or for another command.
    #[error("bad Bulk-Only status wrapper: {0}")]
    BadCsw(String),
    /// The device reported the INQUIRY as failed.
    #[error("the device failed the INQUIRY command (CSW status {0})")]
    CommandFailed(String),
    /// The INQUIRY data is too short to hold the device type.
    #[error("INQUIRY returned {0} bytes, too few to tell the device type")]
    ShortData(usize),
}

/// Parses the 13-byte CSW of our command.
pub fn parse_csw(bytes: &[u8], tag: u32) -> Result<Csw, ProbeError> {
    if bytes.len() != 13 {
        return Err(ProbeError::BadCsw(format!(
            "{} bytes instead of 13",
            bytes.len()
        )));
    }
    let csw = Csw::parse(bytes).ok_or_else(|| ProbeError::BadCsw("no USBS signature".into()))?;
    if csw.tag != tag {
        return Err(ProbeError::BadCsw(format!(
            "tag {:#x} does not match our {tag:#x}",
            csw.tag
        )));
    }
    match csw.status {
        CswStatus::Passed => Ok(csw),
        CswStatus::Failed => Err(ProbeError::CommandFailed("failed".into())),
        CswStatus::PhaseError => Err(ProbeError::CommandFailed("phase error".into())),
    }
}

/// Standard INQUIRY data, as far as the policy and the user need it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InquiryData {
    /// Peripheral qualifier (byte 0 bits 7..5): 0 = a device is connected.
    pub qualifier: u8,
    /// Peripheral device type (byte 0 bits 4..0).
    pub device_type: u8,
    /// RMB: removable medium.
    pub removable: bool,
    /// T10 vendor identification (printable ASCII, trimmed).
    pub vendor: String,
    /// Product identification.
    pub product: String,
    /// Product revision level.
    pub revision: String,
}

fn ascii(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|&b| {
            if b.is_ascii_graphic() || b == b' ' {
                char::from(b)
            } else {
                '?'
            }
        })
        .collect::<String>()
        .trim()
        .to_owned()
}

/// Parses standard INQUIRY data (at least 1 byte; identification strings
/// are taken as far as present).
pub fn parse_inquiry(data: &[u8]) -> Result<InquiryData, ProbeError> {
    let first = *data.first().ok_or(ProbeError::ShortData(0))?;
    let field = |from: usize, to: usize| ascii(data.get(from..to.min(data.len())).unwrap_or(&[]));
    Ok(InquiryData {
        qualifier: first >> 5,
        device_type: first & 0x1f,
        removable: data.get(1).is_some_and(|b| b & 0x80 != 0),
        vendor: field(8, 16),
        product: field(16, 32),
        revision: field(32, 36),
    })
}

/// A human name of a SCSI peripheral device type.
pub fn device_type_name(t: u8) -> &'static str {
    match t {
        0x00 => "direct-access block device (USB stick, disk or card reader)",
        0x01 => "tape drive",
        0x02 => "printer",
        0x03 => "processor",
        0x04 => "write-once device",
        0x05 => "CD/DVD drive",
        0x06 => "scanner",
        0x07 => "optical memory device",
        0x08 => "medium changer",
        0x09 => "communications device",
        0x0c => "storage array controller",
        0x0d => "enclosure services device",
        0x0e => "simplified direct-access device (card reader)",
        0x0f => "optical card reader/writer",
        0x11 => "object-based storage device",
        0x1f => "unknown or no device type",
        _ => "reserved device type",
    }
}

/// The outcome of the type policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// A CD/DVD drive: may be forwarded.
    Optical(InquiryData),
    /// Anything else: must not be forwarded.
    Refused(Refusal),
}

/// Why a device must not be forwarded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// No mass-storage Bulk-Only interface with an optical subclass.
    NotBulkOnlyStorage {
        /// What the interfaces are, e.g. `03/01/01 (HID)`.
        interfaces: String,
    },
    /// The device has other interfaces besides mass storage (a composite
    /// device: a keyboard, hub or similar would be forwarded with it).
    Composite {
        /// The foreign interfaces.
        interfaces: String,
    },
    /// A hub.
    Hub,
    /// The INQUIRY answered another peripheral type.
    WrongType {
        /// The type.
        device_type: u8,
        /// The qualifier.
        qualifier: u8,
        /// The INQUIRY identification, for the message.
        identification: String,
    },
    /// The INQUIRY could not be run or its answer made no sense.
    ProbeFailed(String),
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::NotBulkOnlyStorage { interfaces } => write!(
                f,
                "not a Bulk-Only mass-storage device (interfaces: {interfaces})"
            ),
            Refusal::Composite { interfaces } => write!(
                f,
                "a composite device with non-storage interfaces ({interfaces})"
            ),
            Refusal::Hub => f.write_str("a USB hub"),
            Refusal::WrongType {
                device_type,
                qualifier,
                identification,
            } => {
                if *qualifier != 0 {
                    write!(
                        f,
                        "SCSI peripheral qualifier {qualifier} (no device connected at LUN 0)"
                    )?;
                } else {
                    write!(
                        f,
                        "SCSI peripheral type {device_type:#04x}, a {}, not a CD/DVD drive (0x05)",
                        device_type_name(*device_type)
                    )?;
                }
                if !identification.is_empty() {
                    write!(f, " [{identification}]")?;
                }
                Ok(())
            }
            Refusal::ProbeFailed(why) => write!(f, "its INQUIRY failed: {why}"),
        }
    }
}

/// Applies the type policy to an INQUIRY answer.
pub fn judge_inquiry(data: InquiryData) -> Verdict {
    if data.qualifier == 0 && data.device_type == TYPE_CD_DVD {
        Verdict::Optical(data)
    } else {
        let identification = format!("{} {} {}", data.vendor, data.product, data.revision)
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ");
        Verdict::Refused(Refusal::WrongType {
            device_type: data.device_type,
            qualifier: data.qualifier,
            identification,
        })
    }
}

/// A short name of an interface class for messages.
pub fn class_name(class: u8) -> &'static str {
    match class {
        0x01 => "audio",
        0x02 => "communications",
        0x03 => "HID",
        0x05 => "physical",
        0x06 => "image",
        0x07 => "printer",
        0x08 => "mass storage",
        0x09 => "hub",
        0x0a => "CDC data",
        0x0b => "smart card",
        0x0e => "video",
        0xe0 => "wireless",
        0xef => "miscellaneous",
        0xfe => "application specific",
        0xff => "vendor specific",
        _ => "other",
    }
}

/// Formats interface triples for messages: `08/06/50 (mass storage)`.
pub fn describe_interfaces(triples: &[(u8, u8, u8)]) -> String {
    if triples.is_empty() {
        return "none".into();
    }
    triples
        .iter()
        .map(|(c, s, p)| format!("{c:02x}/{s:02x}/{p:02x} ({})", class_name(*c)))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The interface part of the policy, before any I/O: the device class and
/// the (class, subclass, protocol) of every interface (all alternate
/// settings). Accepts a device whose interfaces are all mass storage with
/// at least one optical Bulk-Only one.
pub fn judge_interfaces(device_class: u8, triples: &[(u8, u8, u8)]) -> Result<(), Refusal> {
    if device_class == super::descriptors::CLASS_HUB
        || triples.iter().any(|t| t.0 == super::descriptors::CLASS_HUB)
    {
        return Err(Refusal::Hub);
    }
    if !triples
        .iter()
        .any(|&(c, s, p)| super::descriptors::is_optical_bot(c, s, p))
    {
        return Err(Refusal::NotBulkOnlyStorage {
            interfaces: describe_interfaces(triples),
        });
    }
    let foreign: Vec<(u8, u8, u8)> = triples
        .iter()
        .copied()
        .filter(|t| t.0 != super::descriptors::CLASS_MASS_STORAGE)
        .collect();
    if !foreign.is_empty() {
        return Err(Refusal::Composite {
            interfaces: describe_interfaces(&foreign),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inquiry(t: u8) -> Vec<u8> {
        let mut d = vec![t, 0x80, 0x05, 0x32, 31, 0, 0, 0];
        d.extend(b"HL-DT-ST");
        d.extend(b"DVDRAM GP57EB40 ");
        d.extend(b"PR10");
        d
    }

    #[test]
    fn cbw_bytes() {
        let b = inquiry_cbw(0xA1B2_C3D4);
        assert_eq!(&b[0..4], b"USBC");
        assert_eq!(&b[4..8], &0xA1B2_C3D4u32.to_le_bytes());
        assert_eq!(&b[8..12], &36u32.to_le_bytes());
        assert_eq!(b[12], 0x80, "data in");
        assert_eq!((b[13], b[14]), (0, 6), "LUN 0, 6-byte CDB");
        assert_eq!(&b[15..21], &[0x12, 0, 0, 0, 36, 0]);
        assert!(b[21..].iter().all(|&x| x == 0));
    }

    #[test]
    fn csw_checks() {
        let csw = |tag: u32, status: u8| {
            let mut b = b"USBS".to_vec();
            b.extend(tag.to_le_bytes());
            b.extend(0u32.to_le_bytes());
            b.push(status);
            b
        };
        assert!(parse_csw(&csw(7, 0), 7).is_ok());
        assert!(matches!(
            parse_csw(&csw(8, 0), 7),
            Err(ProbeError::BadCsw(_))
        ));
        assert!(matches!(
            parse_csw(&csw(7, 1), 7),
            Err(ProbeError::CommandFailed(_))
        ));
        assert!(matches!(
            parse_csw(&csw(7, 2), 7),
            Err(ProbeError::CommandFailed(_))
        ));
        assert!(parse_csw(&csw(7, 9), 7).is_err());
        assert!(parse_csw(&csw(7, 0)[..12], 7).is_err());
        let mut bad = csw(7, 0);
        bad[0] = b'X';
        assert!(parse_csw(&bad, 7).is_err());
    }

    #[test]
    fn optical_drives_pass_and_sticks_are_refused() {
        let d = parse_inquiry(&inquiry(0x05)).unwrap();
        assert_eq!(d.vendor, "HL-DT-ST");
        assert_eq!(d.product, "DVDRAM GP57EB40");
        assert_eq!(d.revision, "PR10");
        assert!(d.removable);
        assert!(matches!(judge_inquiry(d), Verdict::Optical(_)));

        let stick = parse_inquiry(&inquiry(0x00)).unwrap();
        let Verdict::Refused(r) = judge_inquiry(stick) else {
            panic!("a stick must be refused")
        };
        let msg = r.to_string();
        assert!(msg.contains("type 0x00"), "{msg}");
        assert!(msg.contains("USB stick"), "{msg}");
        assert!(msg.contains("HL-DT-ST DVDRAM GP57EB40 PR10"), "{msg}");

        // Qualifier 3: no device at this LUN, even if the type says 5.
        let Verdict::Refused(r) = judge_inquiry(parse_inquiry(&inquiry(0x65)).unwrap()) else {
            panic!()
        };
        assert!(r.to_string().contains("qualifier 3"), "{r}");

        for t in [0x01, 0x07, 0x0e, 0x1f] {
            assert!(matches!(
                judge_inquiry(parse_inquiry(&inquiry(t)).unwrap()),
                Verdict::Refused(_)
            ));
        }
    }

    #[test]
    fn short_and_odd_inquiry_data() {
        assert_eq!(parse_inquiry(&[]), Err(ProbeError::ShortData(0)));
        let d = parse_inquiry(&[0x05]).unwrap();
        assert_eq!(d.device_type, 5);
        assert_eq!(d.vendor, "");
        let mut odd = inquiry(0x05);
        odd[8] = 0x07;
        odd[9] = 0xff;
        let d = parse_inquiry(&odd[..12]).unwrap();
        assert_eq!(d.vendor, "??-D");
        assert_eq!(d.product, "");
    }

    #[test]
    fn interface_policy() {
        assert!(judge_interfaces(0, &[(0x08, 0x06, 0x50)]).is_ok());
        assert!(judge_interfaces(0, &[(0x08, 0x02, 0x50)]).is_ok());
        assert!(
            judge_interfaces(0, &[(0x08, 0x06, 0x50), (0x08, 0x06, 0x62)]).is_ok(),
            "BOT + UAS alt"
        );
        assert_eq!(judge_interfaces(9, &[(0x09, 0, 0)]), Err(Refusal::Hub));
        let e = judge_interfaces(0, &[(0x03, 0x01, 0x01)]).unwrap_err();
        assert!(e.to_string().contains("03/01/01 (HID)"), "{e}");
        let e = judge_interfaces(0, &[(0x08, 0x06, 0x50), (0x03, 0x01, 0x01)]).unwrap_err();
        assert!(matches!(e, Refusal::Composite { .. }), "{e}");
        assert!(
            judge_interfaces(0, &[(0x08, 0x06, 0x62)]).is_err(),
            "UAS only"
        );
        assert!(judge_interfaces(0, &[(0x08, 0x01, 0x00)]).is_err(), "CBI");
        assert!(judge_interfaces(0, &[]).is_err());
    }
}
