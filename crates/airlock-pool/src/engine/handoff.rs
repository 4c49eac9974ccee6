//! Hand-off of a leased desktop's devices to its terminal: the USB stream to the
//! desktop's usb-redir port (one per lease, audited) and the signal that cuts the
//! display connections when the lease ends (the proxy itself is `display.rs`).
use super::Pool;
use crate::error::PoolError;
use airlock_core::{DesktopId, LeaseId, TerminalName, UserName};
use airlock_qemu::spec::files;
use airlock_store::AuditEntry;
use serde_json::json;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// A lease's USB hand-off: its open stream, if any, and what of its device events the
/// audit log already has. Removed when the lease ends ([`Pool::close_usb`]).
#[derive(Default)]
pub(super) struct UsbHandle {
    stream: Option<StreamHandle>,
    /// Attach and detach records written for this lease so far.
    device_events_audited: u32,
    /// The device forwarded now (`vid:pid`, class), for the console.
    device: Option<String>,
}

struct StreamHandle {
    stop: tokio::sync::watch::Sender<bool>,
    done: tokio::sync::watch::Receiver<bool>,
}

/// Attach and detach records per lease; later ones are counted in the stream's
/// `usb_stream_closed` record instead (a terminal whose device flaps cannot flood the
/// audit log, each record being an fsynced transaction).
pub const USB_DEVICE_EVENTS_AUDITED: u32 = 6;

/// An accepted USB stream, ready to be piped once the terminal's connection is upgraded.
pub struct UsbStream {
    pool: Pool,
    lease: LeaseId,
    desktop: DesktopId,
    terminal: TerminalName,
    user: UserName,
    socket: tokio::net::UnixStream,
    stop: tokio::sync::watch::Receiver<bool>,
    done: tokio::sync::watch::Sender<bool>,
}

impl UsbStream {
    /// Pipes the terminal's connection to the desktop's usb-redir port until either side
    /// closes, the stream breaks the usbredir rules, or the lease ends.
    pub async fn run<T>(self, terminal: T)
    where
        T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send,
    {
        let started = Instant::now();
        let pool = self.pool.clone();
        let (lease, desktop, term, user) = (
            self.lease.clone(),
            self.desktop.clone(),
            self.terminal.clone(),
            self.user.clone(),
        );
        let audit = |action: &str, details: serde_json::Value| {
            pool.record_audit(
                AuditEntry::new(action)
                    .terminal(&term)
                    .user(&user)
                    .desktop(&desktop)
                    .lease(&lease)
                    .details(details),
            );
        };
        let counters = crate::relay::ByteCounters {
            to_desktop: pool.inner.metrics.usb_bytes_counter(true),
            to_terminal: pool.inner.metrics.usb_bytes_counter(false),
        };
        // Device events not audited one by one (over the lease's budget).
        let (mut attached_unaudited, mut detached_unaudited) = (0u64, 0u64);
        let (end, stats) = crate::relay::pipe(terminal, self.socket, self.stop, &counters, |ev| {
            let audited = pool.take_device_event_budget(&lease);
            match ev {
                crate::relay::StreamEvent::Attached { vid, pid, class, interfaces } => {
                    tracing::info!(lease = %lease, desktop = %desktop, audited, "USB device attached: {vid:04x}:{pid:04x}");
                    pool.set_usb_device(&lease, Some(format!("{vid:04x}:{pid:04x} class {class:02x}")));
                    if !audited {
                        attached_unaudited += 1;
                        return;
                    }
                    audit("usb_attached", json!({
                        "vid": format!("{vid:04x}"), "pid": format!("{pid:04x}"), "device_class": class,
                        "interfaces": interfaces.iter().map(|(c, s, p)| format!("{c:02x}:{s:02x}:{p:02x}")).collect::<Vec<_>>(),
                    }));
                }
                crate::relay::StreamEvent::Detached => {
                    tracing::info!(lease = %lease, desktop = %desktop, audited, "USB device detached");
                    pool.set_usb_device(&lease, None);
                    if !audited {
                        detached_unaudited += 1;
                        return;
                    }
                    audit("usb_detached", json!({}));
                }
            }
        })
        .await;
        match &end {
            crate::relay::RelayEnd::Error(e @ crate::relay::StreamError::Refused(r)) => {
                tracing::warn!(lease = %lease, desktop = %desktop, terminal = %term, error = %e, "USB device refused");
                pool.inner.metrics.count_usb_refusal(r);
                audit("usb_refused", json!({ "reason": r.to_string() }));
            }
            crate::relay::RelayEnd::Error(e) => {
                tracing::warn!(lease = %lease, desktop = %desktop, error = %e, "USB stream ended by the relay")
            }
            e => {
                tracing::info!(lease = %lease, desktop = %desktop, end = %e.as_str(), "USB stream closed")
            }
        }
        let mut closed = json!({
            "end": end.as_str(),
            "bytes_to_desktop": stats.to_desktop,
            "bytes_to_terminal": stats.to_terminal,
            "seconds": started.elapsed().as_secs_f64(),
        });
        if attached_unaudited + detached_unaudited > 0 {
            closed["device_events_not_audited"] =
                json!({ "attached": attached_unaudited, "detached": detached_unaudited });
        }
        audit("usb_stream_closed", closed);
        if let Ok(mut m) = pool.inner.usb.lock() {
            if let Some(h) = m.get_mut(&lease) {
                h.stream = None;
                h.device = None;
            }
        }
        let _ = self.done.send(true);
    }
}

impl Pool {
    fn set_usb_device(&self, lease: &LeaseId, device: Option<String>) {
        if let Ok(mut m) = self.inner.usb.lock() {
            if let Some(h) = m.get_mut(lease) {
                h.device = device;
            }
        }
    }

    /// The device a lease forwards now, if any (`vid:pid class cc`).
    pub(super) fn usb_device(&self, lease: &LeaseId) -> Option<String> {
        let m = self.inner.usb.lock().ok()?;
        m.get(lease).and_then(|h| h.device.clone())
    }

    /// How many display connections desktop `id` has open.
    /// How many USB streams are open now, for `/metrics`.
    pub(super) fn usb_streams_open(&self) -> usize {
        self.inner
            .usb
            .lock()
            .map(|m| m.values().filter(|h| h.stream.is_some()).count())
            .unwrap_or(0)
    }

    pub(super) fn display_connections(&self, id: &DesktopId) -> usize {
        self.display_counter(id)
            .load(std::sync::atomic::Ordering::Acquire)
    }

    /// The count of desktop `id`'s open display connections, kept by its display proxy.
    pub(crate) fn display_counter(
        &self,
        id: &DesktopId,
    ) -> std::sync::Arc<std::sync::atomic::AtomicUsize> {
        self.inner.display_open.get(id).cloned().unwrap_or_default()
    }

    /// Accepts a USB stream for a lease held by `terminal`: one per lease, only while the
    /// lease is active, only to that lease's desktop.
    pub async fn open_usb(
        &self,
        lease: &LeaseId,
        terminal: &TerminalName,
        claim: &airlock_core::wire::DeviceIdentity,
    ) -> Result<UsbStream, PoolError> {
        let row = self.lease_of(lease, terminal)?;
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let (done_tx, done_rx) = tokio::sync::watch::channel(false);
        {
            let mut m = self.inner.usb.lock().map_err(|_| PoolError::Poisoned {
                what: "USB stream table",
            })?;
            let h = m.entry(lease.clone()).or_default();
            if h.stream.is_some() {
                return Err(PoolError::UsbBusy);
            }
            h.stream = Some(StreamHandle {
                stop: stop_tx,
                done: done_rx,
            });
        }
        // Drops the stream; `ended`: the lease too (its end may have run before our entry).
        let forget = |p: &Pool, ended: bool| {
            if let Ok(mut m) = p.inner.usb.lock() {
                if ended {
                    m.remove(lease);
                } else if let Some(h) = m.get_mut(lease) {
                    h.stream = None;
                }
            }
        };
        // Re-check after registering: a lease that ended meanwhile gets no stream (its end
        // either saw our entry and closed it, or we see it ended here).
        if self.lease_of(lease, terminal).is_err() {
            forget(self, true);
            return Err(PoolError::LeaseNotFound);
        }
        let path = self.run_dir(&row.desktop).join(files::USBREDIR);
        let connected = tokio::time::timeout(
            Duration::from_secs(3),
            tokio::net::UnixStream::connect(&path),
        )
        .await
        .unwrap_or_else(|_| Err(std::io::ErrorKind::TimedOut.into()));
        let socket = match connected {
            Ok(s) => s,
            Err(e) => {
                forget(self, false);
                // The terminal is told only to try again; the cause is for the log.
                tracing::warn!(lease = %lease, desktop = %row.desktop, error = %e, "cannot reach the desktop's USB port");
                return Err(PoolError::UsbUnavailable(e));
            }
        };
        self.record_audit(
            AuditEntry::new("usb_stream_opened")
                .terminal(terminal)
                .user(&row.user)
                .desktop(&row.desktop)
                .lease(lease)
                .details(serde_json::to_value(claim).unwrap_or_default()),
        );
        tracing::info!(lease = %lease, desktop = %row.desktop, kind = %claim.kind, "USB stream opened");
        Ok(UsbStream {
            pool: self.clone(),
            lease: lease.clone(),
            desktop: row.desktop,
            terminal: terminal.clone(),
            user: row.user,
            socket,
            stop: stop_rx,
            done: done_tx,
        })
    }

    /// Whether one more attach/detach record of `lease` goes into the audit log (and
    /// counts it), or the lease used its [`USB_DEVICE_EVENTS_AUDITED`].
    fn take_device_event_budget(&self, lease: &LeaseId) -> bool {
        let Ok(mut m) = self.inner.usb.lock() else {
            return true;
        };
        match m.get_mut(lease) {
            Some(h) if h.device_events_audited < USB_DEVICE_EVENTS_AUDITED => {
                h.device_events_audited += 1;
                true
            }
            Some(_) => false,
            // The lease ended while its stream closes: the close record counts it.
            None => false,
        }
    }

    /// Cuts a desktop's forwarded display connections (its lease ended).
    pub(super) fn cut_display(&self, id: &DesktopId) {
        if let Some(tx) = self.inner.display_cut.get(id) {
            tx.send_modify(|v| *v += 1);
        }
    }

    pub(crate) fn display_cut_receiver(
        &self,
        id: &DesktopId,
    ) -> Option<tokio::sync::watch::Receiver<u64>> {
        self.inner.display_cut.get(id).map(|tx| tx.subscribe())
    }

    pub(crate) fn active_lease_id(&self, id: &DesktopId) -> Option<LeaseId> {
        self.store().ok()?.active_lease_on(id).ok()?.map(|l| l.id)
    }

    pub(crate) fn running_run_file(&self, id: &DesktopId, name: &str) -> Option<PathBuf> {
        self.running_vm(id).map(|(_, spec)| spec.run_file(name))
    }

    /// The display proxy's limits: connections per lease, and the idle timeout.
    pub(crate) fn display_limits(&self) -> Option<(usize, Duration)> {
        self.inner
            .cfg
            .display
            .as_ref()
            .map(|d| (d.max_connections, d.idle_timeout))
    }

    /// Closes a lease's USB stream, if any, and waits (briefly) until it is closed.
    pub(super) async fn close_usb(&self, lease: &LeaseId) {
        let handle = self
            .inner
            .usb
            .lock()
            .ok()
            .and_then(|mut m| m.remove(lease))
            .and_then(|h| h.stream);
        if let Some(h) = handle {
            let _ = h.stop.send(true);
            let mut done = h.done;
            let _ = tokio::time::timeout(Duration::from_secs(3), done.wait_for(|d| *d)).await;
        }
    }
}
