//! Identity and behaviour knobs of the emulated drive.

use crate::usb::Speed;

/// What the Bulk-Only Transport does when the host's CBW asks for fewer bytes than the
/// command has to return (BOT case 7, "Hi < Di").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum OverrunPolicy {
    /// As the BOT specification (and Linux's `f_mass_storage`) do: send the `Hi` bytes
    /// the host asked for, then a CSW with status 2 (phase error). The host then does a
    /// reset recovery.
    #[default]
    PhaseError,
    /// As QEMU's `usb-storage` does: send the `Hi` bytes and report the command as
    /// passed with residue 0. More forgiving of sloppy hosts.
    Truncate,
}

/// Identity of the emulated drive and a few behaviour knobs.
///
/// Strings are cleaned when used: USB strings are cut to 126 UTF-16 units; SCSI INQUIRY
/// fields are cut or space-padded to 8/16/4 printable ASCII bytes (others become `?`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DeviceConfig {
    /// `idVendor`. Default 0x1209 (pid.codes).
    pub vendor_id: u16,
    /// `idProduct`. Default 0x0001 (pid.codes test PID); set a real allocation in
    /// production.
    pub product_id: u16,
    /// `bcdDevice`. Default 0x0100.
    pub device_release: u16,
    /// Manufacturer string (string descriptor 1).
    pub manufacturer: String,
    /// Product string (string descriptor 2).
    pub product: String,
    /// Serial number string (string descriptor 3, and INQUIRY VPD page 0x80). The BOT
    /// specification asks for at least 12 hexadecimal digits. An empty string means no
    /// serial number (`iSerialNumber` 0).
    pub serial_number: String,
    /// SCSI INQUIRY T10 vendor identification (8 bytes).
    pub inquiry_vendor: String,
    /// SCSI INQUIRY product identification (16 bytes).
    pub inquiry_product: String,
    /// SCSI INQUIRY product revision level (4 bytes).
    pub inquiry_revision: String,
    /// BOT case 7 handling; see [`OverrunPolicy`].
    pub overrun_policy: OverrunPolicy,
    /// The bus speed the drive presents itself at, and with it the descriptors and
    /// packet sizes. Default [`Speed::Super`]: a USB 3 drive on an xHCI port, which
    /// lets the host send larger commands (Linux usb-storage: 1 MiB instead of
    /// 120 KiB at high speed). Use [`Speed::High`] when the port cannot take a
    /// SuperSpeed device (EHCI, or a USB 2 hub in between).
    pub speed: Speed,
    /// Offer USB Attached SCSI as alternate setting 1 of the interface (SuperSpeed
    /// only; see [`crate::uas`]). Default true: a host with a UAS driver and bulk
    /// streams (Linux `uas`, Windows `uaspstor`) then queues commands and gets each
    /// command's data and status in one round trip; other hosts stay on Bulk-Only
    /// (alternate setting 0). Ignored at high and full speed.
    pub uas: bool,
}

impl Default for DeviceConfig {
    fn default() -> Self {
        Self {
            vendor_id: 0x1209,
            product_id: 0x0001,
            device_release: 0x0100,
            manufacturer: "Airlock".to_owned(),
            product: "Airlock Virtual CD-ROM".to_owned(),
            serial_number: "A1C0000000000001".to_owned(),
            inquiry_vendor: "AIRLOCK".to_owned(),
            inquiry_product: "VIRTUAL CD-ROM".to_owned(),
            inquiry_revision: "1.00".to_owned(),
            overrun_policy: OverrunPolicy::PhaseError,
            speed: Speed::Super,
            uas: true,
        }
    }
}

/// Cuts or space-pads `s` to exactly `N` bytes of printable ASCII.
pub(crate) fn ascii_field<const N: usize>(s: &str) -> [u8; N] {
    let mut out = [b' '; N];
    for (slot, c) in out.iter_mut().zip(s.chars()) {
        *slot = if c.is_ascii_graphic() || c == ' ' {
            c as u8
        } else {
            b'?'
        };
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ascii_field_pads_cuts_and_cleans() {
        assert_eq!(&ascii_field::<8>("AB"), b"AB      ");
        assert_eq!(&ascii_field::<4>("123456"), b"1234");
        assert_eq!(&ascii_field::<4>("é\tz"), b"??z ");
    }

    #[test]
    fn defaults_are_sane() {
        let c = DeviceConfig::default();
        assert_eq!(c.overrun_policy, OverrunPolicy::PhaseError);
        assert_eq!(c.speed, Speed::Super);
        assert!(c.uas);
        assert!(c.serial_number.len() >= 12);
        assert!(c.serial_number.chars().all(|c| c.is_ascii_hexdigit()));
    }
}
