//! SCSI sense data: the key/ASC/ASCQ triple a failed command leaves for REQUEST SENSE.

/// A sense condition: sense key, additional sense code and its qualifier.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Sense {
    /// Sense key (bits 3..0 of byte 2 of fixed-format sense data).
    pub key: u8,
    /// Additional sense code (byte 12).
    pub asc: u8,
    /// Additional sense code qualifier (byte 13).
    pub ascq: u8,
}

impl Sense {
    /// Builds a sense triple.
    pub const fn new(key: u8, asc: u8, ascq: u8) -> Self {
        Self { key, asc, ascq }
    }

    /// 00/00/00 NO SENSE.
    pub const NO_SENSE: Sense = Sense::new(0x00, 0x00, 0x00);
    /// 02/3A/00 NOT READY, MEDIUM NOT PRESENT.
    pub const MEDIUM_NOT_PRESENT: Sense = Sense::new(0x02, 0x3A, 0x00);
    /// 02/3A/02 NOT READY, MEDIUM NOT PRESENT - TRAY OPEN.
    pub const MEDIUM_NOT_PRESENT_TRAY_OPEN: Sense = Sense::new(0x02, 0x3A, 0x02);
    /// 03/11/00 MEDIUM ERROR, UNRECOVERED READ ERROR.
    pub const UNRECOVERED_READ_ERROR: Sense = Sense::new(0x03, 0x11, 0x00);
    /// 05/1A/00 ILLEGAL REQUEST, PARAMETER LIST LENGTH ERROR.
    pub const PARAMETER_LIST_LENGTH_ERROR: Sense = Sense::new(0x05, 0x1A, 0x00);
    /// 05/20/00 ILLEGAL REQUEST, INVALID COMMAND OPERATION CODE.
    pub const INVALID_COMMAND: Sense = Sense::new(0x05, 0x20, 0x00);
    /// 05/21/00 ILLEGAL REQUEST, LOGICAL BLOCK ADDRESS OUT OF RANGE.
    pub const LBA_OUT_OF_RANGE: Sense = Sense::new(0x05, 0x21, 0x00);
    /// 05/24/00 ILLEGAL REQUEST, INVALID FIELD IN CDB.
    pub const INVALID_FIELD_IN_CDB: Sense = Sense::new(0x05, 0x24, 0x00);
    /// 05/26/00 ILLEGAL REQUEST, INVALID FIELD IN PARAMETER LIST.
    pub const INVALID_FIELD_IN_PARAMETER_LIST: Sense = Sense::new(0x05, 0x26, 0x00);
    /// 05/30/02 ILLEGAL REQUEST, CANNOT READ MEDIUM - INCOMPATIBLE FORMAT.
    pub const INCOMPATIBLE_MEDIUM_FORMAT: Sense = Sense::new(0x05, 0x30, 0x02);
    /// 05/39/00 ILLEGAL REQUEST, SAVING PARAMETERS NOT SUPPORTED.
    pub const SAVING_PARAMETERS_NOT_SUPPORTED: Sense = Sense::new(0x05, 0x39, 0x00);
    /// 05/53/02 ILLEGAL REQUEST, MEDIUM REMOVAL PREVENTED.
    pub const MEDIUM_REMOVAL_PREVENTED: Sense = Sense::new(0x05, 0x53, 0x02);
    /// 05/64/00 ILLEGAL REQUEST, ILLEGAL MODE FOR THIS TRACK.
    pub const ILLEGAL_MODE_FOR_TRACK: Sense = Sense::new(0x05, 0x64, 0x00);
    /// 06/28/00 UNIT ATTENTION, NOT READY TO READY CHANGE, MEDIUM MAY HAVE CHANGED.
    pub const MEDIUM_MAY_HAVE_CHANGED: Sense = Sense::new(0x06, 0x28, 0x00);
    /// 06/29/00 UNIT ATTENTION, POWER ON, RESET, OR BUS DEVICE RESET OCCURRED.
    pub const POWER_ON_RESET: Sense = Sense::new(0x06, 0x29, 0x00);

    /// Length of fixed-format sense data.
    pub const FIXED_LEN: usize = 18;

    /// Fixed-format (response code 0x70, current error) sense data.
    pub fn to_fixed(self) -> [u8; Self::FIXED_LEN] {
        let mut b = [0u8; Self::FIXED_LEN];
        b[0] = 0x70;
        b[2] = self.key & 0x0F;
        b[7] = (Self::FIXED_LEN - 8) as u8;
        b[12] = self.asc;
        b[13] = self.ascq;
        b
    }

    /// True for UNIT ATTENTION conditions.
    pub fn is_unit_attention(self) -> bool {
        self.key == 0x06
    }
}

impl std::fmt::Display for Sense {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:02X}/{:02X}/{:02X}", self.key, self.asc, self.ascq)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_format_bytes() {
        assert_eq!(
            Sense::LBA_OUT_OF_RANGE.to_fixed(),
            [0x70, 0, 0x05, 0, 0, 0, 0, 0x0A, 0, 0, 0, 0, 0x21, 0x00, 0, 0, 0, 0]
        );
        assert_eq!(Sense::MEDIUM_REMOVAL_PREVENTED.to_string(), "05/53/02");
        assert!(Sense::POWER_ON_RESET.is_unit_attention());
        assert!(!Sense::INVALID_COMMAND.is_unit_attention());
    }
}
