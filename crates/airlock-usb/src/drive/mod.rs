//! Real USB optical drives: discovery, the INQUIRY check, and opening a
//! drive for forwarding (Linux usbfs through `nusb`).
//!
//! The terminal's only own command to a drive is one Bulk-Only INQUIRY to
//! learn its SCSI peripheral type; it never reads the disc. Only type 0x05
//! (CD/DVD) is forwarded. A kernel driver is detached only if one is bound,
//! and then a WARNING says the terminal is not guarded (on a guarded
//! terminal `usb-storage` can never bind).

pub mod commands;
pub mod descriptors;
mod forward;
pub mod probe;

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use nusb::transfer::{Buffer, Bulk, In, Out, TransferError};

pub use forward::{DriveForwarder, ForwardHandle};

use descriptors::{
    parse_config_descriptor, parse_device_descriptor, ConfigDescriptor, DeviceDescriptor,
};
use probe::{InquiryData, Refusal, Verdict};

/// Where Linux lists USB devices.
pub const SYSFS_USB: &str = "/sys/bus/usb/devices";

/// Time allowed for each step of the INQUIRY probe.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(10);

/// Errors of finding, checking and opening a drive.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DriveError {
    /// Listing USB devices failed.
    #[error("cannot list USB devices: {0}")]
    Enumerate(String),
    /// No candidate matches.
    #[error("{0}")]
    NotFound(String),
    /// Several candidates match `--device auto`.
    #[error("{0}")]
    Ambiguous(String),
    /// The device may not be forwarded (not a CD/DVD drive, composite, hub ...).
    #[error("refusing to forward {device}: it is {refusal}")]
    Refused {
        /// The device, e.g. `0781:5567 SanDisk Cruzer Blade (bus 1, address 4)`.
        device: String,
        /// Why.
        refusal: Refusal,
    },
    /// Opening or claiming failed (permissions, busy, unplugged).
    #[error("cannot use {device}: {message}")]
    Access {
        /// The device.
        device: String,
        /// What failed.
        message: String,
    },
    /// The device's descriptors are unusable.
    #[error("{device} has unusable descriptors: {message}")]
    Descriptors {
        /// The device.
        device: String,
        /// What is wrong.
        message: String,
    },
}

/// Which drive to forward.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DriveSelector {
    /// The only optical drive candidate (error if none or several).
    Auto,
    /// The candidate with this vendor and product id.
    VidPid(u16, u16),
}

impl FromStr for DriveSelector {
    type Err = String;

    /// `auto` or `VVVV:PPPP` (hex).
    fn from_str(s: &str) -> Result<Self, String> {
        if s.eq_ignore_ascii_case("auto") {
            return Ok(DriveSelector::Auto);
        }
        let bad = || format!("device {s:?}: expected `auto` or VID:PID in hex, e.g. 0e8d:1887");
        let (v, p) = s.split_once(':').ok_or_else(bad)?;
        let hex = |x: &str| {
            if x.is_empty() || x.len() > 4 || !x.bytes().all(|b| b.is_ascii_hexdigit()) {
                None
            } else {
                u16::from_str_radix(x, 16).ok()
            }
        };
        match (hex(v), hex(p)) {
            (Some(v), Some(p)) => Ok(DriveSelector::VidPid(v, p)),
            _ => Err(bad()),
        }
    }
}

/// A USB device with an optical-drive (mass storage, Bulk-Only) interface.
#[derive(Debug, Clone)]
pub struct Candidate {
    info: nusb::DeviceInfo,
    /// USB bus number.
    pub bus: u8,
    /// Device address on the bus.
    pub address: u8,
    /// Vendor id.
    pub vid: u16,
    /// Product id.
    pub pid: u16,
    /// Manufacturer string (as the kernel read it).
    pub manufacturer: Option<String>,
    /// Product string.
    pub product: Option<String>,
    /// Serial number string.
    pub serial: Option<String>,
    /// (class, subclass, protocol) of each interface of the active configuration.
    pub interfaces: Vec<(u8, u8, u8)>,
    /// Kernel drivers bound to its interfaces: (interface number, driver).
    pub bound_drivers: Vec<(u8, String)>,
    /// The interface part of the policy (before the INQUIRY).
    pub interface_verdict: Result<(), Refusal>,
}

impl Candidate {
    /// `VVVV:PPPP Manufacturer Product (bus B, address A)`.
    pub fn describe(&self) -> String {
        let mut s = format!("{:04x}:{:04x}", self.vid, self.pid);
        for part in [&self.manufacturer, &self.product].into_iter().flatten() {
            let clean = clean_string(part);
            if !clean.is_empty() {
                s.push(' ');
                s.push_str(&clean);
            }
        }
        s.push_str(&format!(" (bus {}, address {})", self.bus, self.address));
        s
    }

    /// The sysfs directory of the device.
    pub fn sysfs_path(&self) -> &Path {
        self.info.sysfs_path()
    }
}

impl fmt::Display for Candidate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.describe())
    }
}

/// Printable form of a string from a device (control characters replaced,
/// at most 64 characters).
pub fn clean_string(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .take(64)
        .collect::<String>()
        .trim()
        .to_owned()
}

/// The result of looking for drives.
#[derive(Debug, Clone)]
pub struct Listing {
    /// False when this machine has no USB subsystem at all (no `/sys/bus/usb`).
    pub usb_present: bool,
    /// USB devices seen (hubs included).
    pub devices_seen: usize,
    /// Devices with an optical-drive interface.
    pub candidates: Vec<Candidate>,
}

/// Lists USB devices that look like optical drives (an interface with class
/// 0x08, subclass 0x02/0x05/0x06, protocol 0x50). Does no I/O to devices.
pub async fn list_candidates() -> Result<Listing, DriveError> {
    if !Path::new(SYSFS_USB).exists() {
        return Ok(Listing {
            usb_present: false,
            devices_seen: 0,
            candidates: Vec::new(),
        });
    }
    let devices = nusb::list_devices()
        .await
        .map_err(|e| DriveError::Enumerate(e.to_string()))?;
    let mut seen = 0;
    let mut candidates = Vec::new();
    for info in devices {
        seen += 1;
        let interfaces: Vec<(u8, u8, u8)> = info
            .interfaces()
            .map(|i| (i.class(), i.subclass(), i.protocol()))
            .collect();
        if !interfaces
            .iter()
            .any(|&(c, s, p)| descriptors::is_optical_bot(c, s, p))
        {
            continue;
        }
        let interface_verdict = probe::judge_interfaces(info.class(), &interfaces);
        candidates.push(Candidate {
            bus: info.busnum(),
            address: info.device_address(),
            vid: info.vendor_id(),
            pid: info.product_id(),
            manufacturer: info.manufacturer_string().map(str::to_owned),
            product: info.product_string().map(str::to_owned),
            serial: info.serial_number().map(str::to_owned),
            bound_drivers: bound_drivers(info.sysfs_path()),
            interfaces,
            interface_verdict,
            info,
        });
    }
    candidates.sort_by_key(|c| (c.bus, c.address));
    Ok(Listing {
        usb_present: true,
        devices_seen: seen,
        candidates,
    })
}

impl DriveSelector {
    /// Whether a candidate matches this selector.
    pub fn matches(&self, c: &Candidate) -> bool {
        match *self {
            DriveSelector::Auto => true,
            DriveSelector::VidPid(v, p) => c.vid == v && c.pid == p,
        }
    }
}

/// Picks the candidate `selector` names. With several matches it fails with
/// [`DriveError::Ambiguous`]; `source::prepare` then keeps the ones whose INQUIRY says
/// CD/DVD.
pub fn select(listing: &Listing, selector: DriveSelector) -> Result<&Candidate, DriveError> {
    if !listing.usb_present {
        return Err(DriveError::NotFound(
            "this machine has no USB subsystem (no /sys/bus/usb): there is no drive to forward"
                .into(),
        ));
    }
    let matching: Vec<&Candidate> = listing
        .candidates
        .iter()
        .filter(|c| selector.matches(c))
        .collect();
    match (selector, matching.as_slice()) {
        (_, [one]) => Ok(one),
        (DriveSelector::Auto, []) => Err(DriveError::NotFound(format!(
            "no USB optical drive found ({} USB devices seen); plug one in and check `airlock usb list`",
            listing.devices_seen
        ))),
        (DriveSelector::VidPid(v, p), []) => Err(DriveError::NotFound(format!(
            "no USB optical drive {v:04x}:{p:04x} found; check `airlock usb list`"
        ))),
        (_, many) => Err(DriveError::Ambiguous(format!(
            "{} drives match: {}; unplug all but one",
            many.len(),
            many.iter().map(|c| c.describe()).collect::<Vec<_>>().join("; ")
        ))),
    }
}

/// Kernel drivers bound to the interfaces of the device at `sysfs`
/// (`<dev>:<config>.<n>/driver` links).
fn bound_drivers(sysfs: &Path) -> Vec<(u8, String)> {
    let Ok(dir) = std::fs::read_dir(sysfs) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for entry in dir.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.contains(':') {
            continue;
        }
        let path = entry.path();
        let Some(number) = std::fs::read_to_string(path.join("bInterfaceNumber"))
            .ok()
            .and_then(|s| u8::from_str_radix(s.trim(), 16).ok())
        else {
            continue;
        };
        if let Ok(target) = std::fs::read_link(path.join("driver")) {
            if let Some(driver) = target.file_name() {
                out.push((number, driver.to_string_lossy().into_owned()));
            }
        }
    }
    out.sort();
    out
}

/// A drive opened, checked (interfaces and INQUIRY) and claimed, ready to
/// be forwarded with [`DriveForwarder`].
pub struct OpenDrive {
    candidate: Candidate,
    device: nusb::Device,
    device_descriptor: DeviceDescriptor,
    config: ConfigDescriptor,
    interfaces: BTreeMap<u8, nusb::Interface>,
    alts: BTreeMap<u8, u8>,
    inquiry: InquiryData,
    speed: usbredir::Speed,
}

impl fmt::Debug for OpenDrive {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OpenDrive")
            .field("device", &self.candidate.describe())
            .field("inquiry", &self.inquiry)
            .finish_non_exhaustive()
    }
}

impl OpenDrive {
    /// The candidate it was opened from.
    pub fn candidate(&self) -> &Candidate {
        &self.candidate
    }

    /// Its INQUIRY answer (type 0x05).
    pub fn inquiry(&self) -> &InquiryData {
        &self.inquiry
    }

    /// The parsed device descriptor.
    pub fn device_descriptor(&self) -> &DeviceDescriptor {
        &self.device_descriptor
    }
}

/// What `airlock usb list` reports per candidate.
#[derive(Debug, Clone)]
pub enum ProbeReport {
    /// INQUIRY answered type 0x05: forwardable.
    Optical(InquiryData),
    /// Must not be forwarded.
    Refused(Refusal),
    /// A kernel driver holds the device; not probed (the terminal is not guarded).
    DriverBound(Vec<(u8, String)>),
    /// Could not be opened (permissions, busy, gone).
    Inaccessible(String),
}

/// Checks a candidate for `airlock usb list`: the interface policy, then
/// (if no kernel driver is bound) the INQUIRY. Releases the device after.
pub async fn probe_candidate(c: &Candidate) -> ProbeReport {
    if let Err(r) = &c.interface_verdict {
        return ProbeReport::Refused(r.clone());
    }
    if !c.bound_drivers.is_empty() {
        return ProbeReport::DriverBound(c.bound_drivers.clone());
    }
    match open_drive(c).await {
        Ok(d) => ProbeReport::Optical(d.inquiry),
        Err(DriveError::Refused { refusal, .. }) => ProbeReport::Refused(refusal),
        Err(e) => ProbeReport::Inaccessible(e.to_string()),
    }
}

/// Opens `c`, checks its interfaces, claims them (detaching a kernel driver
/// only if one is bound, with a WARNING), runs the INQUIRY and refuses
/// anything that is not a CD/DVD drive.
pub async fn open_drive(c: &Candidate) -> Result<OpenDrive, DriveError> {
    let name = c.describe();
    let access = |message: String| DriveError::Access {
        device: name.clone(),
        message,
    };
    let refused = |refusal: Refusal| DriveError::Refused {
        device: name.clone(),
        refusal,
    };
    let bad_desc = |message: String| DriveError::Descriptors {
        device: name.clone(),
        message,
    };

    let device = c.info.open().await.map_err(|e| {
        access(match e.kind() {
            nusb::ErrorKind::PermissionDenied => format!(
                "permission denied on /dev/bus/usb/{:03}/{:03}: run as root or give the terminal user access with a udev rule",
                c.bus, c.address
            ),
            nusb::ErrorKind::Disconnected => "the device was unplugged".into(),
            _ => e.to_string(),
        })
    })?;
    let device_descriptor = parse_device_descriptor(device.device_descriptor().as_bytes())
        .map_err(|e| bad_desc(e.0))?;
    let config_bytes = device
        .active_configuration()
        .map_err(|e| access(e.to_string()))?
        .as_bytes()
        .to_vec();
    let config = parse_config_descriptor(&config_bytes).map_err(|e| bad_desc(e.0))?;
    let triples: Vec<(u8, u8, u8)> = config
        .alt_settings
        .iter()
        .map(|a| (a.class, a.subclass, a.protocol))
        .collect();
    probe::judge_interfaces(device_descriptor.class, &triples).map_err(&refused)?;

    let (interfaces, detached) = claim_all(&device, &config, c.sysfs_path(), &name)
        .await
        .map_err(access)?;
    let checked = async {
        let mut alts: BTreeMap<u8, u8> = interfaces
            .iter()
            .map(|(&n, i)| (n, i.get_alt_setting()))
            .collect();
        // The INQUIRY goes to the first optical Bulk-Only alternate setting.
        let Some(bot) = config
            .alt_settings
            .iter()
            .find(|a| a.is_optical_bot())
            .cloned()
        else {
            return Err(refused(Refusal::NotBulkOnlyStorage {
                interfaces: probe::describe_interfaces(&triples),
            }));
        };
        let Some(intf) = interfaces.get(&bot.number) else {
            return Err(access(format!("interface {} was not claimed", bot.number)));
        };
        if alts.get(&bot.number) != Some(&bot.alt) {
            intf.set_alt_setting(bot.alt)
                .await
                .map_err(|e| access(format!("cannot select the Bulk-Only interface: {e}")))?;
            alts.insert(bot.number, bot.alt);
        }
        let inquiry = run_inquiry(intf, &bot)
            .await
            .map_err(|why| refused(Refusal::ProbeFailed(why)))?;
        match probe::judge_inquiry(inquiry) {
            Verdict::Optical(d) => Ok((alts, d)),
            Verdict::Refused(r) => Err(refused(r)),
        }
    }
    .await;
    let (alts, inquiry) = match checked {
        Ok(x) => x,
        Err(e) => {
            // Leave a refused device as we found it.
            restore_drivers(&device, interfaces, &detached);
            return Err(e);
        }
    };
    let speed = match device.speed() {
        Some(nusb::Speed::Low) => usbredir::Speed::Low,
        Some(nusb::Speed::Full) => usbredir::Speed::Full,
        Some(nusb::Speed::High) => usbredir::Speed::High,
        Some(nusb::Speed::Super | nusb::Speed::SuperPlus) => usbredir::Speed::Super,
        _ => usbredir::Speed::Unknown,
    };
    Ok(OpenDrive {
        candidate: c.clone(),
        device,
        device_descriptor,
        config,
        interfaces,
        alts,
        inquiry,
        speed,
    })
}

/// Claims every interface of `config`. A bound kernel driver is detached
/// with a WARNING (the numbers of such interfaces are returned, so a refused
/// device can get its driver back); an interface claimed by another program
/// is an error. On error nothing stays claimed or detached.
pub(crate) async fn claim_all(
    device: &nusb::Device,
    config: &ConfigDescriptor,
    sysfs: &Path,
    name: &str,
) -> Result<(BTreeMap<u8, nusb::Interface>, Vec<u8>), String> {
    let mut out = BTreeMap::new();
    let mut detached = Vec::new();
    for n in config.interface_numbers() {
        match claim_one(device, n, sysfs, name, &mut detached).await {
            Ok(intf) => {
                out.insert(n, intf);
            }
            Err(e) => {
                restore_drivers(device, out, &detached);
                return Err(e);
            }
        }
    }
    Ok((out, detached))
}

/// Releases `interfaces` and re-attaches the kernel drivers we detached.
fn restore_drivers(
    device: &nusb::Device,
    interfaces: BTreeMap<u8, nusb::Interface>,
    detached: &[u8],
) {
    drop(interfaces);
    for &n in detached {
        match device.attach_kernel_driver(n) {
            Ok(()) => tracing::info!(interface = n, "kernel driver re-attached"),
            Err(e) => {
                tracing::warn!(interface = n, error = %e, "cannot re-attach the kernel driver")
            }
        }
    }
}

async fn claim_one(
    device: &nusb::Device,
    n: u8,
    sysfs: &Path,
    name: &str,
    detached: &mut Vec<u8>,
) -> Result<nusb::Interface, String> {
    let bound = bound_drivers(sysfs)
        .into_iter()
        .find(|(i, _)| *i == n)
        .map(|(_, d)| d);
    match bound.as_deref() {
        None => {}
        Some("usbfs") => {
            return Err(format!(
                "interface {n} is in use by another program; close it and retry"
            ))
        }
        Some(driver) => {
            tracing::warn!(
                device = %name,
                interface = n,
                driver,
                "WARNING: kernel driver {driver} was bound to the drive; detaching it. \
                 This terminal is NOT guarded: usb-storage must never bind optical drives here \
                 (e.g. `install usb_storage /bin/false` and `install uas /bin/false` in modprobe.d)"
            );
            device.detach_kernel_driver(n).map_err(|e| {
                format!("cannot detach kernel driver {driver} from interface {n}: {e}")
            })?;
            detached.push(n);
        }
    }
    device.claim_interface(n).await.map_err(|e| match e.kind() {
        nusb::ErrorKind::Busy => {
            format!(
                "interface {n} is in use by another program or driver ({e}); close it and retry"
            )
        }
        _ => format!("cannot claim interface {n}: {e}"),
    })
}

/// Sends our INQUIRY on the Bulk-Only endpoints of `bot` and reads the data
/// and the CSW.
async fn run_inquiry(
    intf: &nusb::Interface,
    bot: &descriptors::AltSetting,
) -> Result<InquiryData, String> {
    let (ein, eout) = bot
        .bulk_pair()
        .ok_or("the Bulk-Only interface has no bulk IN/OUT endpoint pair")?;
    let mut out = intf
        .endpoint::<Bulk, Out>(eout.address)
        .map_err(|e| format!("cannot open endpoint {:#04x}: {e}", eout.address))?;
    let mut inp = intf
        .endpoint::<Bulk, In>(ein.address)
        .map_err(|e| format!("cannot open endpoint {:#04x}: {e}", ein.address))?;
    let maxp = inp.max_packet_size().max(1);
    let tag = 0x4149_5231; // "1RIA"

    out.submit(Buffer::from(probe::inquiry_cbw(tag).to_vec()));
    let c = wait(&mut out).await?;
    c.status
        .map_err(|e| format!("sending the command failed: {e}"))?;

    // Data phase (or the CSW at once if the device has no data).
    inp.submit(Buffer::new(round_up(usize::from(probe::INQUIRY_LEN), maxp)));
    let c = wait(&mut inp).await?;
    let mut data = Vec::new();
    let mut csw_bytes = None;
    match c.status {
        Ok(()) => {
            let got = &c.buffer[..c.actual_len.min(c.buffer.len())];
            if got.len() == 13 && probe::parse_csw(got, tag).is_ok() {
                csw_bytes = Some(got.to_vec());
            } else {
                data = got.to_vec();
            }
        }
        Err(TransferError::Stall) => {
            inp.clear_halt()
                .await
                .map_err(|e| format!("cannot clear the stalled endpoint: {e}"))?;
        }
        Err(e) => return Err(format!("reading the answer failed: {e}")),
    }
    let csw = match csw_bytes {
        Some(b) => b,
        None => {
            inp.submit(Buffer::new(round_up(13, maxp)));
            let c = wait(&mut inp).await?;
            c.status
                .map_err(|e| format!("reading the status failed: {e}"))?;
            c.buffer[..c.actual_len.min(c.buffer.len())].to_vec()
        }
    };
    probe::parse_csw(&csw, tag).map_err(|e| e.to_string())?;
    probe::parse_inquiry(&data).map_err(|e| e.to_string())
}

/// Waits for the next completion on `ep`, cancelling after [`PROBE_TIMEOUT`].
async fn wait<D: nusb::transfer::EndpointDirection>(
    ep: &mut nusb::Endpoint<Bulk, D>,
) -> Result<nusb::transfer::Completion, String> {
    match tokio::time::timeout(PROBE_TIMEOUT, ep.next_complete()).await {
        Ok(c) => Ok(c),
        Err(_) => {
            ep.cancel_all();
            let _ = ep.next_complete().await;
            Err(format!("no answer within {} s", PROBE_TIMEOUT.as_secs()))
        }
    }
}

/// `n` rounded up to a multiple of `m` (m > 0).
pub(crate) fn round_up(n: usize, m: usize) -> usize {
    n.div_ceil(m).saturating_mul(m)
}

/// The device's sysfs path, for unplug detection.
pub(crate) fn sysfs_of(d: &OpenDrive) -> PathBuf {
    d.candidate.sysfs_path().to_path_buf()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selectors() {
        assert_eq!("auto".parse::<DriveSelector>(), Ok(DriveSelector::Auto));
        assert_eq!("AUTO".parse::<DriveSelector>(), Ok(DriveSelector::Auto));
        assert_eq!(
            "0e8d:1887".parse::<DriveSelector>(),
            Ok(DriveSelector::VidPid(0x0e8d, 0x1887))
        );
        assert_eq!(
            "E8D:1".parse::<DriveSelector>(),
            Ok(DriveSelector::VidPid(0x0e8d, 1))
        );
        for bad in [
            "",
            "0e8d",
            "0e8d:",
            ":1887",
            "0e8d:18870",
            "xyz:1",
            "1-2",
            "0e8d:1887:1",
        ] {
            assert!(bad.parse::<DriveSelector>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn selection_without_usb_says_so() {
        let l = Listing {
            usb_present: false,
            devices_seen: 0,
            candidates: Vec::new(),
        };
        let e = select(&l, DriveSelector::Auto).unwrap_err();
        assert!(e.to_string().contains("no USB subsystem"), "{e}");
        let l = Listing {
            usb_present: true,
            devices_seen: 3,
            candidates: Vec::new(),
        };
        let e = select(&l, DriveSelector::VidPid(1, 2)).unwrap_err();
        assert!(e.to_string().contains("0001:0002"), "{e}");
    }

    #[test]
    fn rounding_and_strings() {
        assert_eq!(round_up(36, 512), 512);
        assert_eq!(round_up(512, 512), 512);
        assert_eq!(round_up(513, 512), 1024);
        assert_eq!(round_up(0, 512), 0);
        assert_eq!(clean_string(" DVD\u{7}RW \n"), "DVD?RW ?");
    }
}
