//! Which SCSI commands the desktop may send to the terminal's real drive (pure).
//!
//! The forwarder passes USB transfers on as they are, so whatever runs in the desktop
//! (the disc's own code included) could send the physical drive any command, among them
//! firmware downloads (WRITE BUFFER) and vendor commands that rewrite the drive: a
//! rewritten drive could later present itself as something else. The forwarder
//! therefore looks at every Bulk-Only Command Block Wrapper going to the drive and
//! lets through only the commands a read-only CD/DVD drive is used with: reading,
//! disc and drive information, tray and power control, audio playback, DVD key
//! exchange, and mode pages. Everything else (writing, blanking, formatting, firmware,
//! vendor-specific, pass-through) is refused: the transfer fails with a STALL, which
//! the desktop treats as an invalid command block and answers with a reset recovery.

/// A command the forwarder refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RefusedCommand {
    /// The SCSI operation code.
    pub opcode: u8,
    /// Its name, for the log ("unknown" when not listed).
    pub name: &'static str,
}

/// `dCBWSignature`, "USBC", as it appears on the wire.
const CBW_SIGNATURE: &[u8; 4] = b"USBC";
/// Offset of the first command block byte (the operation code) in a CBW.
const CBW_OPCODE: usize = 15;
/// SEND KEY.
const SEND_KEY: u8 = 0xA3;
/// SEND KEY key format: set the RPC (region) structure.
const KEY_FORMAT_RPC_STRUCTURE: u8 = 0x06;

/// Operation codes a CD/DVD-ROM drive is used with by Linux, Windows and macOS for
/// reading (SPC and MMC), with their names.
const ALLOWED: &[(u8, &str)] = &[
    (0x00, "TEST UNIT READY"),
    (0x03, "REQUEST SENSE"),
    (0x12, "INQUIRY"),
    (0x15, "MODE SELECT(6)"),
    (0x1A, "MODE SENSE(6)"),
    (0x1B, "START STOP UNIT"),
    (0x1E, "PREVENT ALLOW MEDIUM REMOVAL"),
    (0x23, "READ FORMAT CAPACITIES"),
    (0x25, "READ CAPACITY(10)"),
    (0x28, "READ(10)"),
    (0x2B, "SEEK(10)"),
    (0x2F, "VERIFY(10)"),
    (0x35, "SYNCHRONIZE CACHE(10)"),
    (0x42, "READ SUB-CHANNEL"),
    (0x43, "READ TOC/PMA/ATIP"),
    (0x44, "READ HEADER"),
    (0x45, "PLAY AUDIO(10)"),
    (0x46, "GET CONFIGURATION"),
    (0x47, "PLAY AUDIO MSF"),
    (0x4A, "GET EVENT STATUS NOTIFICATION"),
    (0x4B, "PAUSE/RESUME"),
    (0x4E, "STOP PLAY/SCAN"),
    (0x51, "READ DISC INFORMATION"),
    (0x52, "READ TRACK INFORMATION"),
    (0x55, "MODE SELECT(10)"),
    (0x5A, "MODE SENSE(10)"),
    (0x9E, "SERVICE ACTION IN(16)"),
    (0xA0, "REPORT LUNS"),
    (0xA3, "SEND KEY"),
    (0xA4, "REPORT KEY"),
    (0xA5, "PLAY AUDIO(12)"),
    (0xA6, "LOAD/UNLOAD MEDIUM"),
    (0xA7, "SET READ AHEAD"),
    (0xA8, "READ(12)"),
    (0xAC, "GET PERFORMANCE"),
    (0xAD, "READ DVD STRUCTURE"),
    (0xB6, "SET STREAMING"),
    (0xB9, "READ CD MSF"),
    (0xBA, "SCAN"),
    (0xBB, "SET CD SPEED"),
    (0xBD, "MECHANISM STATUS"),
    (0xBE, "READ CD"),
];

/// Names of refused commands worth naming in the log.
const REFUSED_NAMES: &[(u8, &str)] = &[
    (0x04, "FORMAT UNIT"),
    (0x0A, "WRITE(6)"),
    (0x2A, "WRITE(10)"),
    (0x2E, "WRITE AND VERIFY(10)"),
    (0x3B, "WRITE BUFFER"),
    (0x3C, "READ BUFFER"),
    (0x53, "RESERVE TRACK"),
    (0x54, "SEND OPC INFORMATION"),
    (0x5B, "CLOSE TRACK/SESSION"),
    (0x5D, "SEND CUE SHEET"),
    (0x85, "ATA PASS-THROUGH(16)"),
    (0xA1, "BLANK / ATA PASS-THROUGH(12)"),
    (0xAA, "WRITE(12)"),
    (0xB5, "SECURITY PROTOCOL OUT"),
    (0xBF, "SEND DISC STRUCTURE"),
];

/// The name of a listed operation code.
pub fn opcode_name(opcode: u8) -> Option<&'static str> {
    ALLOWED
        .iter()
        .chain(REFUSED_NAMES)
        .find(|(op, _)| *op == opcode)
        .map(|(_, name)| *name)
}

/// Checks a bulk OUT transfer to the drive: `Some` if it is a Command Block Wrapper
/// (it starts with the "USBC" signature and reaches the operation code) whose command
/// is not allowed. Other OUT data (parameter lists of allowed commands) passes.
///
/// Drives take a CBW only as a transfer of exactly 31 bytes; longer transfers are
/// checked too, in case a drive is lenient about that.
pub fn refused_command(out: &[u8]) -> Option<RefusedCommand> {
    if out.len() <= CBW_OPCODE || !out.starts_with(CBW_SIGNATURE) {
        return None;
    }
    let opcode = out[CBW_OPCODE];
    // SEND KEY with key format 06h sets the drive's DVD region, which a drive lets
    // change only a few times before locking it for good.
    let sets_region = opcode == SEND_KEY
        && out
            .get(CBW_OPCODE + 10)
            .is_some_and(|b| b & 0x3F == KEY_FORMAT_RPC_STRUCTURE);
    if sets_region {
        return Some(RefusedCommand {
            opcode,
            name: "SEND KEY (set DVD region)",
        });
    }
    if ALLOWED.iter().any(|(op, _)| *op == opcode) {
        return None;
    }
    Some(RefusedCommand {
        opcode,
        name: opcode_name(opcode).unwrap_or("unknown"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cbw(opcode: u8) -> Vec<u8> {
        let mut b = vec![0u8; 31];
        b[..4].copy_from_slice(b"USBC");
        b[14] = 10;
        b[15] = opcode;
        b
    }

    #[test]
    fn read_only_commands_pass() {
        for op in [
            0x00, 0x03, 0x12, 0x1A, 0x1B, 0x1E, 0x25, 0x28, 0x43, 0x46, 0x4A, 0x51, 0x5A,
        ]
        .into_iter()
        .chain([0xA4, 0xA8, 0xAD, 0xBB, 0xBD, 0xBE])
        {
            assert_eq!(refused_command(&cbw(op)), None, "{op:#04x}");
        }
    }

    #[test]
    fn writing_firmware_and_vendor_commands_are_refused() {
        for (op, name) in [
            (0x3B, "WRITE BUFFER"),
            (0x2A, "WRITE(10)"),
            (0xAA, "WRITE(12)"),
            (0x04, "FORMAT UNIT"),
            (0xA1, "BLANK / ATA PASS-THROUGH(12)"),
            (0x85, "ATA PASS-THROUGH(16)"),
            (0x5D, "SEND CUE SHEET"),
        ] {
            assert_eq!(
                refused_command(&cbw(op)),
                Some(RefusedCommand { opcode: op, name }),
                "{op:#04x}"
            );
        }
        for op in 0xC0..=0xFF {
            let r = refused_command(&cbw(op)).expect("vendor-specific");
            assert_eq!(r.name, "unknown");
        }
        // SEND KEY passes for DVD authentication, not to set the region.
        let mut key = cbw(0xA3);
        key[25] = 0x01;
        assert_eq!(refused_command(&key), None);
        key[25] = 0x06;
        assert_eq!(
            refused_command(&key).unwrap().name,
            "SEND KEY (set DVD region)"
        );
        // A lenient drive might take a longer transfer as a CBW: checked too.
        let mut long = cbw(0x3B);
        long.extend_from_slice(&[0; 481]);
        assert!(refused_command(&long).is_some());
    }

    #[test]
    fn other_out_data_passes() {
        // A MODE SELECT parameter list, short transfers, and a CBW cut before its
        // operation code.
        assert_eq!(refused_command(&[0, 0, 0, 0, 0, 0, 0, 8]), None);
        assert_eq!(refused_command(&[]), None);
        assert_eq!(refused_command(&cbw(0x3B)[..15]), None);
        let mut not_cbw = cbw(0x3B);
        not_cbw[0] = b'X';
        assert_eq!(refused_command(&not_cbw), None);
    }

    #[test]
    fn every_allowed_opcode_is_listed_once() {
        let mut ops: Vec<u8> = ALLOWED.iter().map(|(op, _)| *op).collect();
        ops.sort_unstable();
        ops.dedup();
        assert_eq!(ops.len(), ALLOWED.len());
        assert!(REFUSED_NAMES.iter().all(|(op, _)| !ops.contains(op)));
    }
}
