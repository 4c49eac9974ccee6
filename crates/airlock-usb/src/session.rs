//! What the emulated drive and the real-drive forwarder share: the handle's
//! command channel, progress publishing, and the ends of a session.

use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot, watch};
use usbredir::host::HostEvent;

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
    /// A control with room for `capacity` commands, starting at `progress`;
    /// also returns the pump's ends of the command and progress channels.
    pub(crate) fn new(
        capacity: usize,
        progress: Progress,
    ) -> (Self, mpsc::Receiver<C>, watch::Sender<Progress>) {
        let (tx, commands) = mpsc::channel(capacity);
        let (progress_tx, progress) = watch::channel(progress);
        (Control { tx, progress }, commands, progress_tx)
    }

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
