//! The pool engine: the [`Pool`] handle, its shared state and the helpers every part of
//! the engine uses (the store, per-desktop operation locks, registering running QEMU
//! processes, desktop paths, random passwords). Each job of the engine has its own module:
//! - [`startup`]: start-up and re-attach to desktops a previous broker left running;
//! - [`leases`]: granting (and re-attaching), renewing and ending leases, and expiring
//!   silent ones;
//! - [`queue`]: the waiting line: tickets, holds for the head of the line, long polls;
//! - [`resets`]: resetting used desktops, repairs and the death of QEMU processes;
//! - [`golden`]: the golden-image watch and the templates built from it;
//! - [`handoff`]: handing the desktop's USB port and display to the lease holder;
//! - [`session`]: the ends the broker sees itself (the guest powered off, the display
//!   client did not come back);
//! - [`views`]: what the admin API, `/healthz` and `/metrics` see of the pool;
//! - [`admin`]: the console's actions: drain, return, reset, rebuild, end a lease;
//! - [`alerts`]: security alerts terminals raise, into the audit log.
//! - [`refused`]: the control requests terminals refused to pass to their drives, audited
//!   once per lease.
mod admin;
mod alerts;
mod export;
mod golden;
mod handoff;
mod leases;
mod probes;
mod queue;
mod refused;
mod resets;
mod session;
mod startup;
mod views;

pub use handoff::{UsbStream, USB_DEVICE_EVENTS_AUDITED};
pub use views::{DesktopView, PoolStatus};

use crate::config::PoolConfig;
use crate::error::PoolError;
use crate::Metrics;
use airlock_core::wire::{Grant, QueueStanding};
use airlock_core::{DesktopId, LeaseId, LeaseTiming, UnixMillis};
use airlock_qemu::{DisplaySpec, Driver, Template, Vm, VmSpec};
use airlock_store::{AuditEntry, Store};
use handoff::UsbHandle;
use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

struct Running {
    vm: Arc<Vm>,
    spec: VmSpec,
    generation: u64,
}

struct Inner {
    cfg: PoolConfig,
    driver: Driver,
    store: Mutex<Store>,
    template: Mutex<Option<Template>>,
    running: Mutex<HashMap<DesktopId, Running>>,
    /// One async lock per desktop: resets, death handling and repairs of a desktop never
    /// overlap.
    op_locks: HashMap<DesktopId, Arc<tokio::sync::Mutex<()>>>,
    next_generation: std::sync::atomic::AtomicU64,
    reset_ms: Mutex<VecDeque<u64>>,
    metrics: Metrics,
    timing: LeaseTiming,
    /// When each lease ends, on the monotonic clock (see [`Pool::mono_ms`]).
    deadlines: Mutex<airlock_core::Deadlines>,
    /// The monotonic clock's origin.
    started: std::time::Instant,
    /// Open USB streams by lease: at most one per lease.
    usb: Mutex<HashMap<LeaseId, UsbHandle>>,
    /// The identity of the golden image (and kernel/initrd) the pool runs.
    golden_key: Mutex<String>,
    /// Desktops whose clean state predates the current golden image (snapshot pools):
    /// their next reset is a rebuild.
    stale: Mutex<std::collections::HashSet<DesktopId>>,
    /// Why the pool is degraded (e.g. the template could not be built), for /healthz.
    template_error: Mutex<Option<String>>,
    /// Bumped when a desktop's lease ends: cuts its forwarded display connections.
    display_cut: HashMap<DesktopId, tokio::sync::watch::Sender<u64>>,
    /// Open display connections by desktop (for the console).
    display_open: HashMap<DesktopId, Arc<std::sync::atomic::AtomicUsize>>,
    /// The waiting line (lock it before the store, never after).
    queue: queue::QueueState,
    /// Refused control requests reported by terminals, by lease, until their one audit
    /// record is written (lock it before the store, never after).
    refused: refused::RefusedBook,
    /// The display proxy's TLS, when the broker has a certificate.
    display_tls: Option<tokio_rustls::TlsAcceptor>,
}

/// What a request for a desktop, or a poll of a ticket, got.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeaseOutcome {
    /// A new lease (after waiting, if it came from a poll).
    Granted(Grant),
    /// The terminal's live lease of the same user, with a new display password.
    Reattached(Grant),
    /// A place in the waiting line.
    Queued(QueueStanding),
}

/// The pool engine. Cheap to clone.
#[derive(Clone)]
pub struct Pool {
    inner: Arc<Inner>,
}

fn now_ms() -> UnixMillis {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

fn random_bytes<const N: usize>() -> Result<[u8; N], PoolError> {
    let mut b = [0u8; N];
    getrandom::fill(&mut b).map_err(PoolError::Randomness)?;
    Ok(b)
}

/// A random password from an unambiguous alphabet. VNC truncates passwords to 8
/// characters (see docs/threat-model.md); SPICE gets 24 (about 137 bits).
fn random_password(len: usize) -> Result<String, PoolError> {
    const ALPHABET: &[u8] = b"abcdefghijkmnopqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789";
    let bytes = random_bytes::<64>()?;
    let mut s = String::with_capacity(len);
    // Rejection sampling keeps every character equally likely.
    let limit = 256 - (256 % ALPHABET.len());
    for b in bytes {
        if usize::from(b) < limit {
            s.push(char::from(ALPHABET[usize::from(b) % ALPHABET.len()]));
            if s.len() == len {
                return Ok(s);
            }
        }
    }
    Err(PoolError::PasswordDraw { len })
}

impl Pool {
    fn store(&self) -> Result<std::sync::MutexGuard<'_, Store>, PoolError> {
        self.inner
            .store
            .lock()
            .map_err(|_| PoolError::Poisoned { what: "store" })
    }

    /// Adds a record to the audit log. What it records has happened either way: a record
    /// that cannot be written does not fail the operation.
    fn record_audit(&self, entry: AuditEntry) {
        if let Ok(mut s) = self.store() {
            let _ = s.audit(now_ms(), entry);
        }
    }

    /// Milliseconds on the monotonic clock (lease deadlines; never the wall clock).
    fn mono_ms(&self) -> u64 {
        u64::try_from(self.inner.started.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn desktop_dir(&self, id: &DesktopId) -> PathBuf {
        self.inner.cfg.state_dir.join("desktops").join(id.as_str())
    }

    fn display_for(&self, id: &DesktopId) -> Option<DisplaySpec> {
        let d = self.inner.cfg.display.as_ref()?;
        let index = self.inner.cfg.desktops.iter().position(|x| x == id)?;
        let port = d.port_base.checked_add(u16::try_from(index).ok()?)?;
        Some(DisplaySpec {
            protocol: d.protocol,
            listen: d.listen,
            port,
        })
    }

    fn vm_spec(&self, id: &DesktopId) -> VmSpec {
        let dir = self.desktop_dir(id);
        // The desktop's position in the pool decides its uid: no two share one.
        let slot = self
            .inner
            .cfg
            .desktops
            .iter()
            .position(|x| x == id)
            .and_then(|i| u32::try_from(i).ok());
        self.inner.driver.spec(
            id.as_str(),
            slot,
            &dir.join("disk.qcow2"),
            &dir.join("run"),
            self.display_for(id),
        )
    }

    fn spec_path(&self, id: &DesktopId) -> PathBuf {
        // Beside the run directory, not in it: the desktop's uid cannot change it.
        self.desktop_dir(id).join("spec.json")
    }

    fn op_lock(&self, id: &DesktopId) -> Result<Arc<tokio::sync::Mutex<()>>, PoolError> {
        self.inner
            .op_locks
            .get(id)
            .cloned()
            .ok_or_else(|| PoolError::UnknownDesktop(id.to_string()))
    }

    /// Registers a running VM for a desktop and starts watching it for death and for the
    /// session ends it reports (see [`session`]).
    fn register(&self, id: &DesktopId, vm: Vm, spec: VmSpec) {
        let generation = self
            .inner
            .next_generation
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if let Ok(text) = serde_json::to_string_pretty(&spec) {
            let _ = std::fs::write(self.spec_path(id), text);
        }
        let vm = Arc::new(vm);
        if let Ok(mut r) = self.inner.running.lock() {
            r.insert(
                id.clone(),
                Running {
                    vm: vm.clone(),
                    spec,
                    generation,
                },
            );
        }
        // Subscribed before anything else can happen to the process.
        let events = vm.qmp.events();
        tokio::spawn(
            self.clone()
                .watch_session(id.clone(), vm.clone(), generation, events),
        );
        let pool = self.clone();
        let id = id.clone();
        tokio::spawn(async move {
            vm.died().await;
            pool.on_death(&id, generation).await;
        });
    }

    /// Whether `generation` is still the desktop's registered process (a reset may have
    /// replaced it on purpose).
    fn is_current(&self, id: &DesktopId, generation: u64) -> bool {
        self.inner
            .running
            .lock()
            .ok()
            .and_then(|r| r.get(id).map(|x| x.generation))
            == Some(generation)
    }

    /// The display proxy's TLS acceptor, if the display uses TLS.
    pub(crate) fn display_tls(&self) -> Option<&tokio_rustls::TlsAcceptor> {
        self.inner.display_tls.as_ref()
    }

    fn unregister(&self, id: &DesktopId) -> Option<Running> {
        self.inner.running.lock().ok()?.remove(id)
    }

    fn running_vm(&self, id: &DesktopId) -> Option<(Arc<Vm>, VmSpec)> {
        let r = self.inner.running.lock().ok()?;
        r.get(id).map(|x| (x.vm.clone(), x.spec.clone()))
    }

    /// Paths of a desktop's run directory (sockets), for the broker's relays and tests.
    pub fn run_dir(&self, id: &DesktopId) -> PathBuf {
        self.desktop_dir(id).join("run")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords() {
        let a = random_password(24).unwrap();
        let b = random_password(24).unwrap();
        assert_eq!(a.len(), 24);
        assert_ne!(a, b);
        assert_eq!(random_password(8).unwrap().len(), 8);
        assert!(a.chars().all(|c| c.is_ascii_alphanumeric()));
    }
}
