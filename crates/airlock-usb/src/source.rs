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
                Ok(c) => c,
                // Several mass-storage devices match (say a drive and a USB stick): keep
                // the ones whose INQUIRY says CD/DVD. The probe only asks; it reads
                // nothing from any medium.
                Err(drive::DriveError::Ambiguous(_)) => {
                    let mut optical = Vec::new();
                    for c in listing.candidates.iter().filter(|c| sel.matches(c)) {
                        if let drive::ProbeReport::Optical(_) = drive::probe_candidate(c).await {
                            optical.push(c);
                        }
                    }
                    match optical.as_slice() {
                        [one] => *one,
                        [] => {
                            return Err(drive::DriveError::NotFound(
                                "none of the USB storage devices is a CD/DVD drive; check `airlock usb list`".into(),
                            )
                            .into())
                        }
                        many => {
                            return Err(drive::DriveError::Ambiguous(format!(
                                "{} CD/DVD drives: {}; unplug all but one or give --device VID:PID",
                                many.len(),
                                many.iter().map(|c| c.describe()).collect::<Vec<_>>().join("; ")
                            ))
                            .into())
                        }
                    }
                }
                Err(e) => return Err(e.into()),
            };
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
