//! One entry point for "forward this to that": pick the device source
//! (a real drive or an ISO image), check it, connect the stream, run.
//!
//! ```no_run
//! # async fn demo(target: airlock_usb::transport::Target) -> Result<(), Box<dyn std::error::Error>> {
//! use airlock_usb::source::{prepare, Source};
//! use airlock_usb::drive::DriveSelector;
//!
//! let prepared = prepare(&Source::Drive(DriveSelector::Auto)).await?; // INQUIRY check
//! let stream = airlock_usb::transport::connect(&target, prepared.description()).await?;
//! let handle = prepared.handle();            // unplug / progress (and eject/insert for images)
//! let summary = prepared.run(stream).await?; // until either side closes
//! # let _ = (handle, summary); Ok(()) }
//! ```

use std::path::{Path, PathBuf};

use tokio::sync::watch;
use usb_cdrom::DeviceConfig;

use crate::drive::{self, DriveError, DriveForwarder, DriveSelector, ForwardHandle};
use crate::emulated::{open_iso, CdHandle, EmulatedCd};
use crate::transport::{DeviceIdentity, DeviceKind};

use crate::{Progress, RedirStream, SessionError, SessionGone, SessionSummary};
/// The bus speeds an emulated drive can present.
pub use usb_cdrom::Speed as CdSpeed;

/// What to forward.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A real USB optical drive.
    Drive(DriveSelector),
    /// An emulated drive with this ISO image in it.
    Iso(PathBuf),
    /// An emulated drive with this ISO image, with other options than
    /// [`Source::Iso`]'s defaults (SuperSpeed, UAS offered).
    IsoWith(PathBuf, IsoOptions),
}

/// How the emulated drive of an ISO image presents itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IsoOptions {
    /// Bus speed (default SuperSpeed; high speed for EHCI desktops).
    pub speed: CdSpeed,
    /// Offer USB Attached SCSI next to Bulk-Only (SuperSpeed only; default on).
    pub uas: bool,
}

impl Default for IsoOptions {
    fn default() -> Self {
        let d = DeviceConfig::default();
        IsoOptions {
            speed: d.speed,
            uas: d.uas,
        }
    }
}

/// Preparing a source failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PrepareError {
    /// The drive could not be found, opened or was refused.
    #[error(transparent)]
    Drive(#[from] DriveError),
    /// The image cannot be used.
    #[error("{0}")]
    Image(String),
    /// Setting up the session failed.
    #[error(transparent)]
    Session(#[from] SessionError),
}

/// A checked source, ready to run over a stream.
#[derive(Debug)]
pub enum Prepared {
    /// A real drive, opened, INQUIRY-checked and claimed.
    Drive {
        /// The forwarder.
        forwarder: Box<DriveForwarder>,
        /// For the broker.
        description: DeviceIdentity,
        /// For people.
        summary: String,
    },
    /// An emulated drive.
    Image {
        /// The drive.
        cd: Box<EmulatedCd>,
        /// For the broker.
        description: DeviceIdentity,
        /// For people.
        summary: String,
    },
}

/// Controls a running prepared source.
#[derive(Debug, Clone)]
pub enum UsbHandle {
    /// Of a real drive.
    Drive(ForwardHandle),
    /// Of an emulated drive (can also eject and insert images).
    Image(CdHandle),
}

impl UsbHandle {
    /// Progress of the session.
    pub fn progress(&self) -> watch::Receiver<Progress> {
        match self {
            UsbHandle::Drive(h) => h.progress(),
            UsbHandle::Image(h) => h.progress(),
        }
    }

    /// Unplugs the device from the desktop and ends the session.
    pub async fn unplug(&self) -> Result<(), SessionGone> {
        match self {
            UsbHandle::Drive(h) => h.unplug().await,
            UsbHandle::Image(h) => h.unplug().await,
        }
    }
}

/// Opens and checks `source`: for a drive, discovery, the interface policy,
/// claiming and the INQUIRY (only type 0x05 passes); for an image, opening
/// the file.
pub async fn prepare(source: &Source) -> Result<Prepared, PrepareError> {
    match source {
        Source::Drive(sel) => {
            let listing = drive::list_candidates().await?;
            let candidate = match drive::select(&listing, *sel) {
                Ok(c) => c.clone(),
                Err(drive::DriveError::Ambiguous(_)) => auto_optical(listing, *sel).await?,
                Err(e) => return Err(e.into()),
            };
            let candidate = &candidate;
            let open = drive::open_drive(candidate).await?;
            let q = open.inquiry();
            let summary = format!(
                "USB optical drive {} [SCSI: {} {} {}]",
                candidate.describe(),
                q.vendor,
                q.product,
                q.revision
            );
            let description = DeviceIdentity {
                kind: DeviceKind::Drive,
                vid: Some(candidate.vid),
                pid: Some(candidate.pid),
                vendor: candidate.manufacturer.clone(),
                product: candidate.product.clone(),
                serial: candidate.serial.clone(),
                image: None,
            };
            Ok(Prepared::Drive {
                forwarder: Box::new(DriveForwarder::new(open)),
                description,
                summary,
            })
        }
        Source::Iso(path) => prepare_iso(path, DeviceConfig::default()),
        Source::IsoWith(path, options) => prepare_iso(
            path,
            DeviceConfig {
                speed: options.speed,
                uas: options.uas,
                ..DeviceConfig::default()
            },
        ),
    }
}

/// How often `--device auto` probes again a device it could not check, and how long
/// it waits in between (a drive a session just let go of is reset and can be busy or
/// re-enumerating for a moment).
const PROBE_ATTEMPTS: u32 = 4;
const PROBE_RETRY_PAUSE: std::time::Duration = std::time::Duration::from_millis(500);

/// Several mass-storage devices match `sel` (say a drive and a USB stick): the one whose
/// INQUIRY says CD/DVD. The probe only asks; it reads nothing from any medium. Devices
/// that could not be checked are probed again, with a fresh listing, a few times.
async fn auto_optical(
    mut listing: drive::Listing,
    sel: DriveSelector,
) -> Result<drive::Candidate, DriveError> {
    let mut attempt = 1;
    loop {
        let matching: Vec<drive::Candidate> = listing
            .candidates
            .into_iter()
            .filter(|c| sel.matches(c))
            .collect();
        let mut reports = Vec::with_capacity(matching.len());
        for c in &matching {
            reports.push((c.describe(), drive::probe_candidate(c).await));
        }
        match choose_optical(&reports) {
            Choice::One(i) => {
                return matching.into_iter().nth(i).ok_or_else(|| {
                    DriveError::NotFound("the chosen drive left the listing".into())
                })
            }
            Choice::Unchecked(_) if attempt < PROBE_ATTEMPTS => {
                tracing::debug!(
                    attempt,
                    "a USB storage device could not be checked; probing again"
                );
                attempt += 1;
                tokio::time::sleep(PROBE_RETRY_PAUSE).await;
                listing = drive::list_candidates().await?;
            }
            Choice::Unchecked(e) | Choice::None(e) => return Err(e),
        }
    }
}

/// What `--device auto` makes of the probes of the matching devices.
#[derive(Debug)]
enum Choice {
    /// Exactly one CD/DVD drive, at this index.
    One(usize),
    /// No CD/DVD drive among the devices checked, but some could not be checked.
    Unchecked(DriveError),
    /// No CD/DVD drive, or several.
    None(DriveError),
}

/// Picks the one CD/DVD drive among `(description, probe)` pairs (pure); the errors
/// name each device and why it was not taken.
fn choose_optical(reports: &[(String, drive::ProbeReport)]) -> Choice {
    use drive::ProbeReport;
    let optical: Vec<usize> = reports
        .iter()
        .enumerate()
        .filter(|(_, (_, r))| matches!(r, ProbeReport::Optical(_)))
        .map(|(i, _)| i)
        .collect();
    match optical.as_slice() {
        [one] => return Choice::One(*one),
        [] => {}
        many => {
            let names: Vec<&str> = many
                .iter()
                .filter_map(|&i| reports.get(i).map(|(d, _)| d.as_str()))
                .collect();
            return Choice::None(DriveError::Ambiguous(format!(
                "{} CD/DVD drives: {}; unplug all but one or give --device VID:PID",
                names.len(),
                names.join("; ")
            )));
        }
    }
    let why: Vec<String> = reports
        .iter()
        .map(|(d, r)| match r {
            ProbeReport::Optical(_) => format!("{d}: a CD/DVD drive"),
            ProbeReport::Refused(refusal) => format!("{d}: {refusal}"),
            ProbeReport::DriverBound(drivers) => format!(
                "{d}: not checked, kernel driver {} bound (run `airlock guard check`)",
                drivers
                    .iter()
                    .map(|(_, name)| name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            ProbeReport::Inaccessible(e) => format!("{d}: not checked: {e}"),
        })
        .collect();
    let message = format!(
        "none of the USB storage devices is a CD/DVD drive ({}); check `airlock usb list`",
        why.join("; ")
    );
    // A device that could not be opened, or whose INQUIRY failed, may answer a moment
    // later; one that answered with another type will not.
    if reports.iter().any(|(_, r)| {
        matches!(
            r,
            ProbeReport::Inaccessible(_)
                | ProbeReport::Refused(drive::probe::Refusal::ProbeFailed(_))
        )
    }) {
        Choice::Unchecked(DriveError::NotFound(message))
    } else {
        Choice::None(DriveError::NotFound(message))
    }
}

/// An emulated drive with `config`'s identity and the image at `path`.
pub fn prepare_iso(path: &Path, config: DeviceConfig) -> Result<Prepared, PrepareError> {
    let iso = open_iso(path).map_err(|e| PrepareError::Image(e.to_string()))?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| path.display().to_string());
    let summary = format!(
        "emulated USB CD-ROM {:04x}:{:04x} with {} ({})",
        config.vendor_id,
        config.product_id,
        path.display(),
        crate::progress::human_bytes(iso.byte_len())
    );
    let description = DeviceIdentity {
        kind: DeviceKind::Image,
        vid: Some(config.vendor_id),
        pid: Some(config.product_id),
        vendor: Some(config.manufacturer.clone()),
        product: Some(config.product.clone()),
        serial: None,
        image: Some(name),
    };
    let cd = EmulatedCd::new(config, Some(Box::new(iso)))?;
    Ok(Prepared::Image {
        cd: Box::new(cd),
        description,
        summary,
    })
}

impl Prepared {
    /// What the broker is told.
    pub fn description(&self) -> &DeviceIdentity {
        match self {
            Prepared::Drive { description, .. } | Prepared::Image { description, .. } => {
                description
            }
        }
    }

    /// One line for people.
    pub fn summary(&self) -> &str {
        match self {
            Prepared::Drive { summary, .. } | Prepared::Image { summary, .. } => summary,
        }
    }

    /// A handle to control the session once it runs.
    pub fn handle(&self) -> UsbHandle {
        match self {
            Prepared::Drive { forwarder, .. } => UsbHandle::Drive(forwarder.handle()),
            Prepared::Image { cd, .. } => UsbHandle::Image(cd.handle()),
        }
    }

    /// Runs the session over `stream` until it ends.
    pub async fn run<S: RedirStream>(self, stream: S) -> Result<SessionSummary, SessionError> {
        match self {
            Prepared::Drive { forwarder, .. } => forwarder.run(stream).await,
            Prepared::Image { cd, .. } => cd.run(stream).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use drive::probe::{InquiryData, Refusal};
    use drive::ProbeReport;

    fn optical() -> ProbeReport {
        ProbeReport::Optical(InquiryData {
            qualifier: 0,
            device_type: 5,
            removable: true,
            vendor: "QEMU".into(),
            product: "QEMU CD-ROM".into(),
            revision: "2.5+".into(),
        })
    }

    fn stick() -> ProbeReport {
        ProbeReport::Refused(Refusal::WrongType {
            device_type: 0,
            qualifier: 0,
            identification: "QEMU QEMU HARDDISK".into(),
        })
    }

    fn error(c: Choice) -> (bool, String) {
        match c {
            Choice::One(i) => panic!("chose {i}"),
            Choice::Unchecked(e) => (true, e.to_string()),
            Choice::None(e) => (false, e.to_string()),
        }
    }

    #[test]
    fn the_one_optical_drive_is_chosen_wherever_it_is() {
        for n in 1..4 {
            for at in 0..n {
                let reports: Vec<_> = (0..n)
                    .map(|i| (format!("dev{i}"), if i == at { optical() } else { stick() }))
                    .collect();
                assert!(matches!(choose_optical(&reports), Choice::One(i) if i == at));
            }
        }
    }

    #[test]
    fn two_drives_are_ambiguous_and_named() {
        let r = vec![
            ("a".to_string(), optical()),
            ("s".to_string(), stick()),
            ("b".to_string(), optical()),
        ];
        let (retry, m) = error(choose_optical(&r));
        assert!(!retry);
        assert!(m.starts_with("2 CD/DVD drives: a; b;"), "{m}");
    }

    #[test]
    fn each_device_says_why_it_was_not_taken() {
        let r = vec![
            ("stick".to_string(), stick()),
            (
                "bound".to_string(),
                ProbeReport::DriverBound(vec![(0, "usb-storage".into())]),
            ),
        ];
        let (retry, m) = error(choose_optical(&r));
        assert!(!retry, "no device is worth a second look");
        assert!(m.contains("stick: SCSI peripheral type 0x00"), "{m}");
        assert!(
            m.contains("bound: not checked, kernel driver usb-storage bound"),
            "{m}"
        );
        assert!(m.ends_with("check `airlock usb list`"), "{m}");
    }

    #[test]
    fn a_device_that_could_not_be_checked_is_probed_again() {
        for unchecked in [
            ProbeReport::Inaccessible("busy".into()),
            ProbeReport::Refused(Refusal::ProbeFailed("INQUIRY timed out".into())),
        ] {
            let r = vec![
                ("stick".to_string(), stick()),
                ("drive".to_string(), unchecked),
            ];
            let (retry, m) = error(choose_optical(&r));
            assert!(retry, "{m}");
            assert!(m.contains("drive: "), "{m}");
        }
        assert!(matches!(choose_optical(&[]), Choice::None(_)));
    }
}
