//! What the emulated drive and the real-drive forwarder share: the handle's
//! command channel, progress publishing, and the ends of a session.

use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot, watch};
use usbredir::host::{DeviceLayout, HostEvent, HostSession};
use usbredir::Status;

use crate::error::{SessionError, SessionGone};
use crate::progress::{Counters, PeerInfo, Phase, Progress, SessionEnd, SessionSummary};

/// The user's side of a session: commands to its pump (`C`), its progress.
pub(crate) struct Control<C> {
    tx: mpsc::Sender<C>,
    progress: watch::Receiver<Progress>,
}

impl<C> Clone for Control<C> {
    fn clone(&self) -> Self {
        Control {
            tx: self.tx.clone(),
            progress: self.progress.clone(),
        }
    }
}

impl<C> std::fmt::Debug for Control<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Control")
            .field("tx", &self.tx)
            .field("progress", &self.progress)
            .finish()
    }
}

impl<C> Control<C> {
    /// The session's progress.
    pub(crate) fn progress(&self) -> watch::Receiver<Progress> {
        self.progress.clone()
    }

    /// Sends the command `make` builds around a reply channel, and waits for
    /// the reply.
    pub(crate) async fn request<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<T>) -> C,
    ) -> Result<T, SessionGone> {
        let (done, rx) = oneshot::channel();
        self.tx.send(make(done)).await.map_err(|_| SessionGone)?;
        rx.await.map_err(|_| SessionGone)
    }
}

/// A session's channels before it runs: the pump's ends, and a control to
/// clone into the user's handles.
pub(crate) struct Channels<C> {
    commands: mpsc::Receiver<C>,
    progress: watch::Sender<Progress>,
    control: Control<C>,
}

impl<C> std::fmt::Debug for Channels<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Channels").finish_non_exhaustive()
    }
}

impl<C> Channels<C> {
    /// Room for `capacity` commands; progress starts at `progress`.
    pub(crate) fn new(capacity: usize, progress: Progress) -> Self {
        let (tx, commands) = mpsc::channel(capacity);
        let (progress, progress_rx) = watch::channel(progress);
        Channels {
            commands,
            progress,
            control: Control {
                tx,
                progress: progress_rx,
            },
        }
    }

    /// A control for a user's handle.
    pub(crate) fn control(&self) -> Control<C> {
        self.control.clone()
    }

    /// The pump's ends. Our own control is dropped: only the user's handles
    /// keep the command channel open.
    pub(crate) fn into_pump(self) -> (mpsc::Receiver<C>, watch::Sender<Progress>) {
        (self.commands, self.progress)
    }
}

/// Publishes a session's state; wakes watchers only if something changed.
pub(crate) fn publish(
    progress: &watch::Sender<Progress>,
    phase: Phase,
    counters: Counters,
    peer: Option<&PeerInfo>,
) {
    progress.send_if_modified(|p| {
        let changed = p.phase != phase || p.counters != counters || p.peer.as_ref() != peer;
        p.phase = phase;
        p.counters = counters;
        p.peer = peer.cloned();
        changed
    });
}

/// Marks the session ended and sums it up (or passes its error on).
pub(crate) fn finish(
    progress: &watch::Sender<Progress>,
    result: Result<SessionEnd, SessionError>,
    counters: Counters,
    peer: Option<PeerInfo>,
) -> Result<SessionSummary, SessionError> {
    progress.send_modify(|p| {
        p.phase = Phase::Ended;
        p.counters = counters;
    });
    let end = result?;
    Ok(SessionSummary {
        end,
        peer,
        counters,
    })
}

/// The desktop closed the stream with `pending` bytes of an unfinished
/// packet: a clean end only if there are none.
pub(crate) fn peer_closed(pending: usize) -> Result<SessionEnd, SessionError> {
    if pending > 0 {
        return Err(SessionError::Truncated(pending));
    }
    tracing::info!("the desktop side closed the USB stream");
    Ok(SessionEnd::PeerClosed)
}

/// Writes the last bytes of a session (its `device_disconnect`) and closes
/// the stream.
pub(crate) async fn write_last<W: AsyncWrite + Unpin>(
    wr: &mut W,
    out: &[u8],
) -> Result<(), SessionError> {
    wr.write_all(out).await?;
    wr.flush().await?;
    let _ = wr.shutdown().await;
    Ok(())
}

/// Answers a set_alt_setting: with `Some(layout)` `alt` is selected now;
/// with `None` it was refused (STALL) and `alt` is the setting still selected
/// (255 if unknown).
pub(crate) fn reply_set_alt(
    session: &mut HostSession,
    id: u64,
    interface: u8,
    alt: u8,
    layout: Option<DeviceLayout>,
) -> Result<(), SessionError> {
    let status = if layout.is_some() {
        Status::Success
    } else {
        Status::Stall
    };
    session.reply_set_alt_setting(id, status, interface, alt, layout)?;
    Ok(())
}

/// Answers a get_alt_setting with the interface's setting, or `inval` for
/// an unknown interface.
pub(crate) fn reply_get_alt(
    session: &mut HostSession,
    id: u64,
    interface: u8,
    alt: Option<u8>,
) -> Result<(), SessionError> {
    match alt {
        Some(alt) => session.reply_get_alt_setting(id, Status::Success, interface, alt)?,
        None => session.reply_get_alt_setting(id, Status::Inval, interface, 255)?,
    }
    Ok(())
}

/// Handles the host-session events that both device sources treat alike
/// once their own events are dealt with: a refusing filter ends the
/// session; anything else is logged or ignored (`HostEvent` may grow).
pub(crate) fn other_event(ev: HostEvent) -> Result<(), SessionError> {
    match ev {
        HostEvent::FilterReject => Err(SessionError::FilterRejected),
        HostEvent::Unsupported { packet, .. } => {
            tracing::debug!(%packet, "unsupported usbredir request answered with an error");
            Ok(())
        }
        _ => Ok(()),
    }
}
