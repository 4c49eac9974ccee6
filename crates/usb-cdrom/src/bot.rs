//! Bulk-Only Transport wrappers: the 31-byte Command Block Wrapper and the 13-byte
//! Command Status Wrapper.

/// `dCBWSignature`, "USBC".
pub const CBW_SIGNATURE: u32 = 0x4342_5355;
/// `dCSWSignature`, "USBS".
pub const CSW_SIGNATURE: u32 = 0x5342_5355;
/// Length of a CBW.
pub const CBW_LEN: usize = 31;
/// Length of a CSW.
pub const CSW_LEN: usize = 13;

/// Why a CBW was refused (the device then stalls both bulk endpoints until a reset
/// recovery).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CbwError {
    /// The transfer was not 31 bytes.
    #[error("CBW is {0} bytes, not 31")]
    Length(usize),
    /// `dCBWSignature` is not "USBC".
    #[error("bad CBW signature {0:#010x}")]
    Signature(u32),
    /// `bCBWLUN` names a LUN other than 0.
    #[error("CBW addresses LUN {0}, the device has only LUN 0")]
    Lun(u8),
    /// `bCBWCBLength` is outside 1..=16.
    #[error("CBW command block length {0} is outside 1..=16")]
    CbLength(u8),
}

/// A decoded Command Block Wrapper.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cbw {
    /// `dCBWTag`, echoed in the CSW.
    pub tag: u32,
    /// `dCBWDataTransferLength`: bytes the host expects to move.
    pub data_transfer_length: u32,
    /// Bit 7 of `bmCBWFlags`: data moves device-to-host.
    pub data_in: bool,
    /// `bCBWLUN`.
    pub lun: u8,
    /// `bCBWCBLength`.
    pub cb_length: u8,
    /// `CBWCB`, zeroed past `cb_length`.
    pub cb: [u8; 16],
}

impl Cbw {
    /// Decodes and validates a CBW transfer.
    pub fn parse(bytes: &[u8]) -> Result<Self, CbwError> {
        let b: &[u8; CBW_LEN] = bytes
            .try_into()
            .map_err(|_| CbwError::Length(bytes.len()))?;
        let sig = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
        if sig != CBW_SIGNATURE {
            return Err(CbwError::Signature(sig));
        }
        let lun = b[13] & 0x0F;
        if b[13] != 0 {
            return Err(CbwError::Lun(lun));
        }
        let cb_length = b[14] & 0x1F;
        if b[14] == 0 || b[14] > 16 {
            return Err(CbwError::CbLength(b[14]));
        }
        let mut cb = [0u8; 16];
        let n = usize::from(cb_length);
        cb[..n].copy_from_slice(&b[15..15 + n]);
        Ok(Self {
            tag: u32::from_le_bytes([b[4], b[5], b[6], b[7]]),
            data_transfer_length: u32::from_le_bytes([b[8], b[9], b[10], b[11]]),
            data_in: b[12] & 0x80 != 0,
            lun,
            cb_length,
            cb,
        })
    }

    /// Encodes the CBW (for tests and hosts).
    pub fn to_bytes(&self) -> [u8; CBW_LEN] {
        let mut b = [0u8; CBW_LEN];
        b[0..4].copy_from_slice(&CBW_SIGNATURE.to_le_bytes());
        b[4..8].copy_from_slice(&self.tag.to_le_bytes());
        b[8..12].copy_from_slice(&self.data_transfer_length.to_le_bytes());
        b[12] = if self.data_in { 0x80 } else { 0 };
        b[13] = self.lun;
        b[14] = self.cb_length;
        b[15..31].copy_from_slice(&self.cb);
        b
    }

    /// The command block (the first `cb_length` bytes of `cb`).
    pub fn command(&self) -> &[u8] {
        &self.cb[..usize::from(self.cb_length.min(16))]
    }
}

/// `bCSWStatus`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CswStatus {
    /// 0: command passed.
    Passed = 0,
    /// 1: command failed (the host should REQUEST SENSE).
    Failed = 1,
    /// 2: phase error (the host must do a reset recovery).
    PhaseError = 2,
}

/// A Command Status Wrapper.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Csw {
    /// Tag of the CBW this answers.
    pub tag: u32,
    /// `dCSWDataResidue`: expected minus processed bytes.
    pub residue: u32,
    /// `bCSWStatus`.
    pub status: CswStatus,
}

impl Csw {
    /// Encodes the 13 wire bytes.
    pub fn to_bytes(&self) -> [u8; CSW_LEN] {
        let mut b = [0u8; CSW_LEN];
        b[0..4].copy_from_slice(&CSW_SIGNATURE.to_le_bytes());
        b[4..8].copy_from_slice(&self.tag.to_le_bytes());
        b[8..12].copy_from_slice(&self.residue.to_le_bytes());
        b[12] = self.status as u8;
        b
    }

    /// Decodes 13 wire bytes (for tests and hosts); `None` if it is not a CSW.
    pub fn parse(bytes: &[u8]) -> Option<Self> {
        let b: &[u8; CSW_LEN] = bytes.try_into().ok()?;
        if u32::from_le_bytes([b[0], b[1], b[2], b[3]]) != CSW_SIGNATURE {
            return None;
        }
        let status = match b[12] {
            0 => CswStatus::Passed,
            1 => CswStatus::Failed,
            2 => CswStatus::PhaseError,
            _ => return None,
        };
        Some(Self {
            tag: u32::from_le_bytes([b[4], b[5], b[6], b[7]]),
            residue: u32::from_le_bytes([b[8], b[9], b[10], b[11]]),
            status,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cbw_bytes() -> [u8; 31] {
        let mut b = [0u8; 31];
        b[0..4].copy_from_slice(b"USBC");
        b[4..8].copy_from_slice(&0xDEADBEEFu32.to_le_bytes());
        b[8..12].copy_from_slice(&36u32.to_le_bytes());
        b[12] = 0x80;
        b[14] = 6;
        b[15..21].copy_from_slice(&[0x12, 0, 0, 0, 36, 0]);
        b[25] = 0xAA; // garbage past cb_length is ignored
        b
    }

    #[test]
    fn parse_valid() {
        let c = Cbw::parse(&cbw_bytes()).unwrap();
        assert_eq!(c.tag, 0xDEADBEEF);
        assert_eq!(c.data_transfer_length, 36);
        assert!(c.data_in);
        assert_eq!(c.command(), &[0x12, 0, 0, 0, 36, 0]);
        assert_eq!(c.cb[10], 0);
        let again = Cbw::parse(&c.to_bytes()).unwrap();
        assert_eq!(again, c);
    }

    #[test]
    fn parse_invalid() {
        let good = cbw_bytes();
        assert_eq!(Cbw::parse(&good[..30]), Err(CbwError::Length(30)));
        let mut long = good.to_vec();
        long.push(0);
        assert_eq!(Cbw::parse(&long), Err(CbwError::Length(32)));
        let mut b = good;
        b[0] = b'X';
        assert!(matches!(Cbw::parse(&b), Err(CbwError::Signature(_))));
        let mut b = good;
        b[13] = 1;
        assert_eq!(Cbw::parse(&b), Err(CbwError::Lun(1)));
        let mut b = good;
        b[13] = 0x10; // reserved bits set
        assert!(Cbw::parse(&b).is_err());
        for len in [0u8, 17, 0x20, 0xFF] {
            let mut b = good;
            b[14] = len;
            assert_eq!(Cbw::parse(&b), Err(CbwError::CbLength(len)));
        }
    }

    #[test]
    fn csw_bytes() {
        let c = Csw {
            tag: 0x01020304,
            residue: 0x200,
            status: CswStatus::Failed,
        };
        assert_eq!(
            c.to_bytes(),
            [b'U', b'S', b'B', b'S', 4, 3, 2, 1, 0, 2, 0, 0, 1]
        );
        assert_eq!(Csw::parse(&c.to_bytes()), Some(c));
        assert_eq!(Csw::parse(&[0; 13]), None);
        let mut b = c.to_bytes();
        b[12] = 3;
        assert_eq!(Csw::parse(&b), None);
    }
}
