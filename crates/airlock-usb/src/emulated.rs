//! The emulated CD-ROM drive served over a usbredir stream (async pump).
//!
//! ```no_run
//! # async fn demo(stream: tokio::net::UnixStream) -> Result<(), Box<dyn std::error::Error>> {
//! use airlock_usb::emulated::EmulatedCd;
//! use usb_cdrom::{DeviceConfig, IsoFile};
//!
//! let cd = EmulatedCd::new(DeviceConfig::default(), Some(Box::new(IsoFile::open("a.iso")?)))?;
//! let handle = cd.handle();
//! let session = tokio::spawn(cd.run(stream));
//! // ... later, while attached:
//! handle.eject().await?;
//! handle.insert_iso("b.iso").await??;
//! handle.unplug().await?;
//! let summary = session.await??;
//! # Ok(()) }
//! ```

use std::path::{Path, PathBuf};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot, watch};
use usb_cdrom::{DeviceConfig, IsoFile, Medium, MediumError};

use crate::cdrom::{BridgeNote, CdromBridge};
use crate::error::{SessionError, SessionGone};
use crate::progress::{Phase, Progress, SessionEnd, SessionSummary};
use crate::session::{self, Channels, Control};
use crate::RedirStream;

/// Read buffer size: a few maximal pipelined bulk OUT packets.
const READ_CHUNK: usize = 256 * 1024;

enum Command {
    Insert {
        medium: Box<dyn Medium>,
        done: oneshot::Sender<()>,
    },
    Eject {
        done: oneshot::Sender<bool>,
    },
    Unplug {
        done: oneshot::Sender<()>,
    },
}

/// An emulated USB CD-ROM drive, ready to be served over one usbredir
/// stream with [`EmulatedCd::run`].
#[derive(Debug)]
pub struct EmulatedCd {
    bridge: CdromBridge,
    channels: Channels<Command>,
}

/// Controls a running [`EmulatedCd`]: change the disc, unplug, watch progress.
/// Cheap to clone.
#[derive(Debug, Clone)]
pub struct CdHandle {
    control: Control<Command>,
}

impl EmulatedCd {
    /// A drive with the given identity and disc (`None` = empty drive).
    pub fn new(
        config: DeviceConfig,
        medium: Option<Box<dyn Medium>>,
    ) -> Result<Self, SessionError> {
        let name = medium.as_ref().map(|m| m.name().to_owned());
        let bridge = CdromBridge::new(config, medium)?;
        let progress = Progress {
            medium: name,
            ..Progress::default()
        };
        Ok(EmulatedCd {
            bridge,
            channels: Channels::new(8, progress),
        })
    }

    /// A drive with the default identity and the ISO image at `path`.
    pub fn with_iso(path: impl AsRef<Path>) -> Result<Self, IsoError> {
        let iso = open_iso(path.as_ref())?;
        EmulatedCd::new(DeviceConfig::default(), Some(Box::new(iso))).map_err(IsoError::Session)
    }

    /// A handle to control the drive while it runs.
    pub fn handle(&self) -> CdHandle {
        CdHandle {
            control: self.channels.control(),
        }
    }

    /// Serves the drive over `stream` until the peer closes it, the drive is
    /// unplugged through a handle, or an error occurs.
    ///
    /// Our hello is sent at once; the drive is announced after the peer's
    /// hello. A peer that sends invalid usbredir data ends the session with
    /// [`SessionError::Protocol`]. Disc reads happen inline (an ISO file on
    /// a local disk answers in microseconds to milliseconds).
    pub async fn run<S: RedirStream>(self, stream: S) -> Result<SessionSummary, SessionError> {
        let EmulatedCd {
            mut bridge,
            channels,
        } = self;
        let (mut commands, progress) = channels.into_pump();
        let result = pump(&mut bridge, &mut commands, &progress, stream).await;
        session::finish(&progress, result, bridge.counters(), bridge.peer().cloned())
    }
}

async fn pump<S: RedirStream>(
    bridge: &mut CdromBridge,
    commands: &mut mpsc::Receiver<Command>,
    progress: &watch::Sender<Progress>,
    stream: S,
) -> Result<SessionEnd, SessionError> {
    let (mut rd, mut wr) = tokio::io::split(stream);
    let mut buf = vec![0u8; READ_CHUNK];
    let mut commands_open = true;
    loop {
        if bridge.has_output() {
            let out = bridge.take_output();
            wr.write_all(&out).await?;
            wr.flush().await?;
        }
        publish(bridge, progress);
        if bridge.is_paused() {
            // Packets already received wait behind a lot of output (now
            // written): handle them before reading more.
            for note in bridge.process()? {
                log_note(&note);
            }
            continue;
        }
        tokio::select! {
            r = rd.read(&mut buf) => {
                let n = r?;
                if n == 0 {
                    return session::peer_closed(bridge.buffered_input());
                }
                for note in bridge.feed(&buf[..n])? {
                    log_note(&note);
                }
            }
            cmd = commands.recv(), if commands_open => match cmd {
                None => commands_open = false,
                Some(Command::Insert { medium, done }) => {
                    let name = medium.name().to_owned();
                    bridge.insert_medium(medium);
                    tracing::info!(disc = %name, "disc inserted");
                    progress.send_modify(|p| p.medium = Some(name));
                    let _ = done.send(());
                }
                Some(Command::Eject { done }) => {
                    let had = bridge.remove_medium().is_some();
                    tracing::info!(had_disc = had, "disc ejected");
                    progress.send_modify(|p| p.medium = None);
                    let _ = done.send(had);
                }
                Some(Command::Unplug { done }) => {
                    bridge.unplug()?;
                    session::write_last(&mut wr, &bridge.take_output()).await?;
                    tracing::info!("drive unplugged from the desktop");
                    let _ = done.send(());
                    return Ok(SessionEnd::Unplugged);
                }
            }
        }
    }
}

fn publish(bridge: &CdromBridge, progress: &watch::Sender<Progress>) {
    let phase = if !bridge.session().is_attached() {
        Phase::WaitingForPeer
    } else if bridge.drive().configuration() != 0 && bridge.counters().transfers > 0 {
        Phase::Configured
    } else {
        Phase::Attached
    };
    session::publish(progress, phase, bridge.counters(), bridge.peer());
}

fn log_note(note: &BridgeNote) {
    match note {
        BridgeNote::PeerHello(p) => {
            tracing::info!(peer = %p.version, caps = format_args!("{:#04x}", p.caps), "desktop usb-redir connected; drive announced")
        }
        BridgeNote::Reset => tracing::debug!("desktop reset the drive"),
        BridgeNote::Configured(c) => {
            tracing::debug!(configuration = c, "desktop configured the drive")
        }
        BridgeNote::Filter(rules) => tracing::debug!(%rules, "desktop usb-redir filter"),
        BridgeNote::AltSetting(1) => {
            tracing::info!("desktop drives the disc with USB Attached SCSI (UAS, bulk streams)")
        }
        BridgeNote::AltSetting(alt) => {
            tracing::debug!(alt, "desktop selected the Bulk-Only interface")
        }
        BridgeNote::Streams(n) => tracing::debug!(streams = n, "desktop set up bulk streams"),
    }
}

/// Opening an ISO image for the emulated drive failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IsoError {
    /// The file cannot be used as a disc.
    #[error(transparent)]
    Medium(#[from] MediumError),
    /// The session could not be set up.
    #[error(transparent)]
    Session(SessionError),
}

/// Opens an ISO image read-only (refuses empty files and non-files).
pub fn open_iso(path: &Path) -> Result<IsoFile, MediumError> {
    IsoFile::open(path)
}

impl CdHandle {
    /// The session's progress, updated as it runs.
    pub fn progress(&self) -> watch::Receiver<Progress> {
        self.control.progress()
    }

    /// Puts `medium` in the drive (replacing any disc). The desktop sees a
    /// media change at its next poll.
    pub async fn insert(&self, medium: Box<dyn Medium>) -> Result<(), SessionGone> {
        self.control
            .request(|done| Command::Insert { medium, done })
            .await
    }

    /// Opens the ISO image at `path` and inserts it. The outer error means
    /// the session is gone, the inner one that the file is not usable.
    pub async fn insert_iso(
        &self,
        path: impl Into<PathBuf>,
    ) -> Result<Result<(), MediumError>, SessionGone> {
        let path = path.into();
        let iso = match tokio::task::spawn_blocking(move || open_iso(&path)).await {
            Ok(Ok(iso)) => iso,
            Ok(Err(e)) => return Ok(Err(e)),
            Err(_) => return Err(SessionGone),
        };
        self.insert(Box::new(iso)).await.map(Ok)
    }

    /// Takes the disc out. Returns whether there was one.
    pub async fn eject(&self) -> Result<bool, SessionGone> {
        self.control.request(|done| Command::Eject { done }).await
    }

    /// Unplugs the drive from the desktop (`device_disconnect`) and ends the
    /// session; [`EmulatedCd::run`] returns [`SessionEnd::Unplugged`].
    pub async fn unplug(&self) -> Result<(), SessionGone> {
        self.control.request(|done| Command::Unplug { done }).await
    }
}
