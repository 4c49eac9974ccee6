use crate::config::PoolConfig;
use crate::metrics::{
    InfoLabel, MethodLabel, MethodResultLabel, ReasonLabel, ResultLabel, StateLabel,
};
use crate::Metrics;
use airlock_core::policy::{median, retry_after_s, StateCounts};
use airlock_core::{
    DesktopEvent, DesktopId, DesktopState, EndReason, LeaseId, LeaseTiming, ResetMethod, ResetPlan,
    TerminalName, UnixMillis, UserName,
};
use airlock_qemu::spec::files;
use airlock_qemu::{
    DisplayProtocol, DisplaySpec, Driver, QemuError, StartedVm, Template, Vm, VmSpec,
};
use airlock_store::{AuditEntry, DesktopRow, ResetRecord, Store, StoreError};
use serde::Serialize;
use serde_json::json;
use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Why a pool operation failed.
#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    #[error("no clean desktop is free; retry in {retry_after_s} s")]
    NoFreeDesktop { retry_after_s: u64 },
    #[error("no active lease with that id for this terminal")]
    LeaseNotFound,
    #[error("unknown desktop {0}")]
    UnknownDesktop(String),
    #[error("desktop {desktop} is {state}; only a broken desktop can be repaired")]
    NotBroken {
        desktop: String,
        state: DesktopState,
    },
    #[error("the desktop could not be prepared for the lease ({0}); it is being reset, try again")]
    Setup(String),
    #[error("a USB stream is already open for this lease; close it first")]
    UsbBusy,
    #[error("the desktop's USB port cannot be reached ({0}); try again")]
    UsbUnavailable(String),
    #[error("store: {0}")]
    Store(#[from] StoreError),
    #[error("QEMU: {0}")]
    Qemu(#[from] QemuError),
    #[error("internal error: {0}")]
    Internal(String),
}

/// The display part of a lease.
#[derive(Debug, Clone, Serialize)]
pub struct DisplayGrant {
    pub protocol: &'static str,
    pub host: String,
    pub port: u16,
    pub password: String,
}

/// A granted lease, as the terminal needs it.
#[derive(Debug, Clone, Serialize)]
pub struct LeaseGrant {
    pub lease_id: LeaseId,
    pub desktop_id: DesktopId,
    pub expires_at: UnixMillis,
    pub heartbeat_interval_s: u64,
    pub display: Option<DisplayGrant>,
}

/// A desktop as the admin API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct DesktopView {
    pub id: DesktopId,
    pub state: DesktopState,
    pub since: UnixMillis,
    pub reason: Option<String>,
    pub lease: Option<LeaseId>,
    pub terminal: Option<TerminalName>,
    pub user: Option<UserName>,
    pub resets: i64,
    pub last_reset_s: Option<f64>,
    pub last_reset_method: Option<String>,
    pub generation: i64,
    pub pid: Option<i32>,
    pub display_port: Option<u16>,
}

/// The pool's overall status, for `/healthz`.
#[derive(Debug, Clone, Serialize)]
pub struct PoolStatus {
    /// What is wrong, in words an admin can act on (empty when all is well).
    pub problems: Vec<String>,
    pub counts: StateCounts,
    pub accel: &'static str,
    pub reset_method: &'static str,
    pub template: Option<String>,
    pub qemu: String,
}

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
}

struct UsbHandle {
    stop: tokio::sync::watch::Sender<bool>,
    done: tokio::sync::watch::Receiver<bool>,
}

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
            if let Ok(mut s) = pool.store() {
                let _ = s.audit(
                    now_ms(),
                    AuditEntry::new(action)
                        .terminal(&term)
                        .user(&user)
                        .desktop(&desktop)
                        .lease(&lease)
                        .details(details),
                );
            }
        };
        let (end, stats) = crate::relay::pipe(terminal, self.socket, self.stop, |ev| match ev {
            crate::relay::StreamEvent::Attached { vid, pid, class, interfaces } => {
                tracing::info!(lease = %lease, desktop = %desktop, "USB device attached: {vid:04x}:{pid:04x}");
                audit("usb_attached", json!({
                    "vid": format!("{vid:04x}"), "pid": format!("{pid:04x}"), "device_class": class,
                    "interfaces": interfaces.iter().map(|(c, s, p)| format!("{c:02x}:{s:02x}:{p:02x}")).collect::<Vec<_>>(),
                }));
            }
            crate::relay::StreamEvent::Detached => {
                tracing::info!(lease = %lease, desktop = %desktop, "USB device detached");
                audit("usb_detached", json!({}));
            }
        })
        .await;
        match &end {
            crate::relay::RelayEnd::Error(e) => {
                tracing::warn!(lease = %lease, desktop = %desktop, error = %e, "USB stream ended by the relay")
            }
            e => {
                tracing::info!(lease = %lease, desktop = %desktop, end = %e.as_str(), "USB stream closed")
            }
        }
        audit(
            "usb_stream_closed",
            json!({
                "end": end.as_str(),
                "bytes_to_desktop": stats.to_desktop,
                "bytes_to_terminal": stats.to_terminal,
                "seconds": started.elapsed().as_secs_f64(),
            }),
        );
        if let Ok(mut m) = pool.inner.usb.lock() {
            m.remove(&lease);
        }
        let _ = self.done.send(true);
    }
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
    getrandom::fill(&mut b).map_err(|e| PoolError::Internal(format!("no randomness: {e}")))?;
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
    Err(PoolError::Internal(
        "not enough random bytes for a password".into(),
    ))
}

impl Pool {
    /// Opens the store, re-attaches to desktops left running by a previous broker,
    /// starts provisioning the rest in the background and returns at once.
    pub async fn start(cfg: PoolConfig) -> Result<Pool, PoolError> {
        std::fs::create_dir_all(&cfg.state_dir).map_err(|e| {
            PoolError::Internal(format!(
                "cannot create state directory {}: {e}",
                cfg.state_dir.display()
            ))
        })?;
        let driver = Driver::new(cfg.driver.clone()).await?;
        let mut store = Store::open(&cfg.state_dir.join("airlock.db"))?;
        let now = now_ms();
        let rows = store.sync_pool(&cfg.desktops, now)?;
        let op_locks = cfg
            .desktops
            .iter()
            .map(|d| (d.clone(), Arc::new(tokio::sync::Mutex::new(()))))
            .collect();
        let timing = LeaseTiming {
            timeout_ms: i64::try_from(cfg.lease_timeout.as_millis()).unwrap_or(i64::MAX),
        };
        let metrics = Metrics::new();
        metrics
            .info
            .get_or_create(&InfoLabel {
                version: env!("CARGO_PKG_VERSION").into(),
                accel: cfg.driver.accel.as_str().into(),
                qemu: driver.qemu_version().into(),
                reset_method: cfg.reset_method.as_str().into(),
            })
            .set(1);
        let head = store.audit(
            now,
            AuditEntry::new("broker_started").details(json!({
                "version": env!("CARGO_PKG_VERSION"),
                "accel": cfg.driver.accel.as_str(),
                "qemu": driver.qemu_version(),
                "reset_method": cfg.reset_method.as_str(),
                "desktops": cfg.desktops.len(),
            })),
        )?;
        tracing::info!(audit_head = %head, "audit chain head (keep a copy elsewhere to detect truncation)");
        let golden_key = driver.template_key()?;
        let display_cut_map = cfg
            .desktops
            .iter()
            .map(|d| (d.clone(), tokio::sync::watch::channel(0u64).0))
            .collect();
        // The broker owns the display ports (see display.rs): bind them all now, so a
        // port conflict stops the start with a clear error.
        let mut display_listeners = Vec::new();
        if let Some(d) = &cfg.display {
            for (i, id) in cfg.desktops.iter().enumerate() {
                let port = u16::try_from(i)
                    .ok()
                    .and_then(|i| d.port_base.checked_add(i))
                    .ok_or_else(|| PoolError::Internal("display port out of range".into()))?;
                let l = tokio::net::TcpListener::bind((d.listen, port)).await.map_err(|e| {
                    PoolError::Internal(format!(
                        "cannot listen on display port {}:{port} for {id}: {e}; is another airlockd or program using it? (pool.display.port_base)",
                        d.listen
                    ))
                })?;
                display_listeners.push((id.clone(), l));
            }
        }
        let resumed = store.resume_leases(now)?;
        if resumed > 0 {
            tracing::info!(leases = resumed, "resumed active leases after restart");
        }
        let pool = Pool {
            inner: Arc::new(Inner {
                cfg,
                driver,
                store: Mutex::new(store),
                template: Mutex::new(None),
                running: Mutex::new(HashMap::new()),
                op_locks,
                next_generation: std::sync::atomic::AtomicU64::new(1),
                reset_ms: Mutex::new(VecDeque::new()),
                metrics,
                timing,
                usb: Mutex::new(HashMap::new()),
                golden_key: Mutex::new(golden_key),
                display_cut: display_cut_map,
                template_error: Mutex::new(None),
                stale: Mutex::new(std::collections::HashSet::new()),
            }),
        };
        for (id, l) in display_listeners {
            tokio::spawn(pool.clone().serve_display(id, l));
        }
        let need_work = pool.reattach(&rows).await?;
        let p = pool.clone();
        tokio::spawn(async move { p.bring_up(need_work).await });
        let p = pool.clone();
        tokio::spawn(async move { p.sweep_loop().await });
        let p = pool.clone();
        tokio::spawn(async move { p.golden_watch_loop().await });
        Ok(pool)
    }

    fn store(&self) -> Result<std::sync::MutexGuard<'_, Store>, PoolError> {
        self.inner
            .store
            .lock()
            .map_err(|_| PoolError::Internal("store lock poisoned".into()))
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
        self.inner.driver.spec(
            id.as_str(),
            &dir.join("disk.qcow2"),
            &dir.join("run"),
            self.display_for(id),
        )
    }

    fn spec_path(&self, id: &DesktopId) -> PathBuf {
        self.desktop_dir(id).join("run").join("spec.json")
    }

    fn op_lock(&self, id: &DesktopId) -> Result<Arc<tokio::sync::Mutex<()>>, PoolError> {
        self.inner
            .op_locks
            .get(id)
            .cloned()
            .ok_or_else(|| PoolError::UnknownDesktop(id.to_string()))
    }

    /// Registers a running VM for a desktop and starts watching it for death.
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
        let pool = self.clone();
        let id = id.clone();
        tokio::spawn(async move {
            vm.died().await;
            pool.on_death(&id, generation).await;
        });
    }

    fn unregister(&self, id: &DesktopId) -> Option<Running> {
        self.inner.running.lock().ok()?.remove(id)
    }

    fn running_vm(&self, id: &DesktopId) -> Option<(Arc<Vm>, VmSpec)> {
        let r = self.inner.running.lock().ok()?;
        r.get(id).map(|x| (x.vm.clone(), x.spec.clone()))
    }

    /// After a (re)start: keeps desktops whose QEMU still runs and whose state allows it,
    /// and returns the desktops that need a start or a reset.
    async fn reattach(&self, rows: &[DesktopRow]) -> Result<Vec<(DesktopId, Work)>, PoolError> {
        let mut work = Vec::new();
        for row in rows {
            let id = &row.id;
            let run_dir = self.desktop_dir(id).join("run");
            let attached = match row.state {
                DesktopState::Clean | DesktopState::Leased => {
                    match Vm::attach(&run_dir, id.as_str()).await {
                        Ok(vm) => Some(vm),
                        Err(e) => {
                            tracing::warn!(desktop = %id, error = %e, "desktop's QEMU is gone");
                            None
                        }
                    }
                }
                _ => None,
            };
            let spec: Option<VmSpec> = std::fs::read_to_string(self.spec_path(id))
                .ok()
                .and_then(|t| serde_json::from_str(&t).ok());
            match (row.state, attached, spec) {
                (DesktopState::Clean | DesktopState::Leased, Some(vm), Some(spec)) => {
                    tracing::info!(desktop = %id, state = %row.state, pid = vm.pid, "re-attached to running desktop");
                    self.register(id, vm, spec);
                    if row.state == DesktopState::Clean && !self.verify_clean(id).await {
                        work.push((id.clone(), Work::Died));
                    }
                }
                (DesktopState::Leased, _, _) => {
                    self.lease_lost(id)?;
                    work.push((
                        id.clone(),
                        Work::Reset {
                            process_alive: false,
                        },
                    ));
                }
                (DesktopState::Clean, _, _) => {
                    self.transition(
                        id,
                        DesktopEvent::Died,
                        Some("QEMU process gone after broker restart"),
                    )?;
                    work.push((
                        id.clone(),
                        Work::Reset {
                            process_alive: false,
                        },
                    ));
                }
                (DesktopState::Starting, _, _) => {
                    airlock_qemu::process::kill_stale(&run_dir).await;
                    work.push((id.clone(), Work::Provision));
                }
                (DesktopState::Dirty | DesktopState::Resetting, _, _) => {
                    airlock_qemu::process::kill_stale(&run_dir).await;
                    if row.state == DesktopState::Resetting {
                        self.transition(
                            id,
                            DesktopEvent::Recover,
                            Some("broker restarted during a reset"),
                        )?;
                    }
                    work.push((
                        id.clone(),
                        Work::Reset {
                            process_alive: false,
                        },
                    ));
                }
                (DesktopState::Broken, _, _) => {
                    airlock_qemu::process::kill_stale(&run_dir).await;
                }
            }
        }
        Ok(work)
    }

    /// Pings a clean desktop's guest; a desktop that does not answer is not clean.
    async fn verify_clean(&self, id: &DesktopId) -> bool {
        let Some((_vm, spec)) = self.running_vm(id) else {
            return false;
        };
        if !matches!(
            self.inner.cfg.driver.readiness,
            airlock_qemu::Readiness::Serial { .. }
        ) {
            return true;
        }
        let path = spec.run_file(files::AGENT);
        let nonce = format!("verify-{}", now_ms());
        match airlock_qemu::agent::Agent::connect(&path, Duration::from_secs(2)).await {
            Ok(mut a) => a.ping(&nonce, Duration::from_secs(5)).await.is_ok(),
            Err(_) => false,
        }
    }

    fn lease_lost(&self, id: &DesktopId) -> Result<(), PoolError> {
        let mut store = self.store()?;
        if let Some(lease) = store.active_lease_on(id)? {
            store.end_lease(
                &lease.id,
                None,
                EndReason::DesktopLost,
                now_ms(),
                json!({"why": "the desktop's QEMU process was lost"}),
            )?;
            self.inner
                .metrics
                .leases_ended
                .get_or_create(&ReasonLabel {
                    reason: EndReason::DesktopLost.as_str().into(),
                })
                .inc();
        } else {
            drop(store);
            self.transition(id, DesktopEvent::Died, Some("QEMU process lost"))?;
        }
        Ok(())
    }

    fn transition(
        &self,
        id: &DesktopId,
        event: DesktopEvent,
        reason: Option<&str>,
    ) -> Result<DesktopState, PoolError> {
        let mut store = self.store()?;
        let action = match event {
            DesktopEvent::BeginReset => "reset_started",
            DesktopEvent::ResetFailed => "desktop_broken",
            DesktopEvent::Died => "desktop_died",
            DesktopEvent::Repair => "repair_requested",
            DesktopEvent::Invalidate => "desktop_invalidated",
            DesktopEvent::Recover => "desktop_recovered",
            _ => "desktop_state",
        };
        Ok(store.transition(id, event, now_ms(), reason, AuditEntry::new(action))?)
    }

    async fn bring_up(&self, work: Vec<(DesktopId, Work)>) {
        if self.inner.cfg.reset_method == ResetMethod::TemplateClone {
            self.refresh_template().await;
        }
        let mut tasks = Vec::new();
        for (id, w) in work {
            let p = self.clone();
            tasks.push(tokio::spawn(async move {
                match w {
                    Work::Provision => p.provision(&id).await,
                    Work::Reset { process_alive } => p.reset(&id, process_alive).await,
                    Work::Died => p.handle_died(&id).await,
                }
            }));
        }
        for t in tasks {
            let _ = t.await;
        }
        if let Ok(c) = self.counts() {
            tracing::info!(
                clean = c.clean,
                leased = c.leased,
                broken = c.broken,
                "pool is up"
            );
        }
    }

    /// Builds (or loads) the template for the current golden image. On failure the pool
    /// still works, with rebuilds instead of template clones.
    async fn refresh_template(&self) -> bool {
        let dir = self.inner.cfg.state_dir.join("templates");
        match self.inner.driver.ensure_template(&dir).await {
            Ok(t) => {
                let changed = {
                    let cur = self.inner.template.lock().ok();
                    cur.and_then(|c| c.as_ref().map(|x| x.key != t.key))
                        .unwrap_or(true)
                };
                if changed {
                    if let Ok(mut s) = self.store() {
                        let _ = s.audit(
                            now_ms(),
                            AuditEntry::new("template_ready").details(json!({
                                "key": t.key,
                                "device_state_sha256": t.device_state_sha256,
                                "build_ms": t.build_ms,
                                "golden": self.inner.cfg.driver.golden.display().to_string(),
                            })),
                        );
                    }
                    self.remove_old_templates(&dir, &t.key);
                }
                if let Ok(mut cur) = self.inner.template.lock() {
                    *cur = Some(t);
                }
                if let Ok(mut e) = self.inner.template_error.lock() {
                    *e = None;
                }
                changed
            }
            Err(e) => {
                tracing::error!(error = %e, "template build failed; desktops will be rebuilt from the golden image instead");
                if let Ok(mut te) = self.inner.template_error.lock() {
                    *te = Some(format!(
                        "no template ({e}): resets fall back to rebuilds, which are much slower"
                    ));
                }
                if let Ok(mut s) = self.store() {
                    let _ = s.audit(
                        now_ms(),
                        AuditEntry::new("template_failed").details(json!({"error": e.to_string()})),
                    );
                }
                false
            }
        }
    }

    fn remove_old_templates(&self, dir: &Path, keep: &str) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().to_string();
            if name == keep || name == airlock_qemu::driver::BUILD_DIR {
                continue;
            }
            // A clone still running from an old template maps its RAM file; Linux keeps
            // the mapping valid after the unlink, and the clone's next reset uses the new
            // template.
            if let Err(err) = std::fs::remove_dir_all(e.path()) {
                tracing::warn!(template = %name, error = %err, "could not remove old template");
            } else {
                tracing::info!(template = %name, "removed old template");
            }
        }
    }

    async fn provision(&self, id: &DesktopId) {
        let Ok(lock) = self.op_lock(id) else { return };
        let _g = lock.lock().await;
        let t0 = Instant::now();
        tracing::info!(desktop = %id, "starting desktop");
        let plan = ResetPlan::new(self.first_start_method(), false);
        self.run_plan(id, &plan, t0, false).await;
    }

    fn first_start_method(&self) -> ResetMethod {
        match self.inner.cfg.reset_method {
            ResetMethod::TemplateClone => ResetMethod::TemplateClone,
            _ => ResetMethod::Rebuild,
        }
    }

    async fn handle_died(&self, id: &DesktopId) {
        if let Err(e) = self.lease_lost(id) {
            tracing::error!(desktop = %id, error = %e, "could not record a lost desktop");
            return;
        }
        self.reset_locked(id, ResetPlan::new(ResetMethod::Rebuild, false))
            .await;
    }

    /// A desktop's QEMU died (or its monitor closed).
    async fn on_death(&self, id: &DesktopId, generation: u64) {
        let Ok(lock) = self.op_lock(id) else { return };
        let guard = lock.lock().await;
        let current = self
            .inner
            .running
            .lock()
            .ok()
            .and_then(|r| r.get(id).map(|x| x.generation));
        if current != Some(generation) {
            return; // a reset replaced this process on purpose
        }
        tracing::warn!(desktop = %id, "desktop's QEMU process died; rebuilding it");
        self.unregister(id);
        drop(guard);
        self.handle_died(id).await;
    }

    /// Resets a dirty desktop with the pool's preferred method, falling back to a rebuild.
    pub async fn reset(&self, id: &DesktopId, process_alive: bool) {
        let stale = self
            .inner
            .stale
            .lock()
            .map(|mut s| s.remove(id))
            .unwrap_or(false);
        let method = if stale {
            ResetMethod::Rebuild
        } else {
            self.inner.cfg.reset_method
        };
        self.reset_locked(id, ResetPlan::new(method, process_alive))
            .await;
    }

    async fn reset_locked(&self, id: &DesktopId, plan: ResetPlan) {
        let Ok(lock) = self.op_lock(id) else { return };
        let _g = lock.lock().await;
        let t0 = Instant::now();
        let state = match self.store().and_then(|s| Ok(s.desktop(id)?)) {
            Ok(r) => r.state,
            Err(e) => {
                tracing::error!(desktop = %id, error = %e, "cannot read desktop");
                return;
            }
        };
        if state != DesktopState::Dirty {
            tracing::debug!(desktop = %id, state = %state, "no reset needed");
            return;
        }
        let steps: Vec<&str> = plan.steps().iter().map(|m| m.as_str()).collect();
        if let Err(e) = self.store().and_then(|mut s| {
            Ok(s.transition(
                id,
                DesktopEvent::BeginReset,
                now_ms(),
                None,
                AuditEntry::new("reset_started").details(json!({ "plan": steps })),
            )?)
        }) {
            tracing::error!(desktop = %id, error = %e, "cannot start reset");
            return;
        }
        self.run_plan(id, &plan, t0, true).await;
    }

    /// Tries each method of a plan until one yields a verified clean desktop; if none
    /// does, the desktop goes `broken` with the reasons.
    async fn run_plan(&self, id: &DesktopId, plan: &ResetPlan, t0: Instant, is_reset: bool) {
        let mut failures = Vec::new();
        for method in plan.steps() {
            let attempt = Instant::now();
            let result = self.try_method(id, *method).await;
            let label = MethodResultLabel {
                method: method.as_str().into(),
                result: if result.is_ok() { "ok" } else { "failed" }.into(),
            };
            self.inner.metrics.resets.get_or_create(&label).inc();
            match result {
                Ok(started) => {
                    let total = t0.elapsed();
                    let proof = match started {
                        Started::Fresh(b) => {
                            let (StartedVm { vm, proof }, spec) = *b;
                            self.register(id, vm, spec);
                            proof
                        }
                        // Restored in place: same process, same registration.
                        Started::InPlace(proof) => proof,
                    };
                    let record = ResetRecord {
                        method: *method,
                        duration_ms: i64::try_from(total.as_millis()).unwrap_or(i64::MAX),
                        proof: json!({
                            "start": proof,
                            "failed_attempts": failures,
                        }),
                    };
                    match self
                        .store()
                        .and_then(|mut s| Ok(s.reset_succeeded(id, now_ms(), &record)?))
                    {
                        Ok(()) if is_reset => {
                            self.inner
                                .metrics
                                .reset_seconds
                                .get_or_create(&MethodLabel {
                                    method: method.as_str().into(),
                                })
                                .observe(total.as_secs_f64());
                            if let Ok(mut v) = self.inner.reset_ms.lock() {
                                v.push_back(u64::try_from(total.as_millis()).unwrap_or(u64::MAX));
                                if v.len() > 50 {
                                    v.pop_front();
                                }
                            }
                            tracing::info!(desktop = %id, method = %method, ms = total.as_millis() as u64,
                                attempt_ms = attempt.elapsed().as_millis() as u64, "desktop reset: clean");
                        }
                        Ok(()) => {
                            tracing::info!(desktop = %id, method = %method, ms = total.as_millis() as u64, "desktop started: clean");
                        }
                        Err(e) => {
                            tracing::error!(desktop = %id, error = %e, "could not record the clean start");
                        }
                    }
                    return;
                }
                Err(e) => {
                    tracing::warn!(desktop = %id, method = %method, error = %e, "reset attempt failed");
                    failures.push(json!({"method": method.as_str(), "error": e.to_string()}));
                    if let Ok(mut s) = self.store() {
                        let _ = s.audit(
                            now_ms(),
                            AuditEntry::new("reset_attempt_failed").desktop(id).details(
                                json!({"method": method.as_str(), "error": e.to_string()}),
                            ),
                        );
                    }
                }
            }
        }
        if let Some(r) = self.unregister(id) {
            r.vm.kill().await;
        }
        let reason: Vec<String> = failures
            .iter()
            .map(|f| {
                format!(
                    "{}: {}",
                    f["method"].as_str().unwrap_or("?"),
                    f["error"].as_str().unwrap_or("?")
                )
            })
            .collect();
        let reason = reason.join("; ");
        tracing::error!(desktop = %id, reason = %reason, "every reset attempt failed: desktop is broken");
        if let Err(e) = self.transition(id, DesktopEvent::ResetFailed, Some(&reason)) {
            tracing::error!(desktop = %id, error = %e, "could not mark the desktop broken");
        }
    }

    async fn try_method(&self, id: &DesktopId, method: ResetMethod) -> Result<Started, PoolError> {
        let driver = &self.inner.driver;
        match method {
            ResetMethod::TemplateClone => {
                let template = self
                    .inner
                    .template
                    .lock()
                    .ok()
                    .and_then(|t| t.clone())
                    .ok_or_else(|| PoolError::Internal("no template is available".into()))?;
                let old = self.unregister(id);
                let spec = self.vm_spec(id);
                let started = driver
                    .start_clone(&template, spec.clone(), old.as_ref().map(|o| &*o.vm))
                    .await?;
                Ok(Started::Fresh(Box::new((started, spec))))
            }
            ResetMethod::SnapshotRestore => {
                let (vm, spec) = self
                    .running_vm(id)
                    .ok_or_else(|| PoolError::Internal("no running process to restore".into()))?;
                let proof = driver.snapshot_load(&vm, &spec).await?;
                Ok(Started::InPlace(proof))
            }
            ResetMethod::Rebuild => {
                if let Some(old) = self.unregister(id) {
                    old.vm.kill_now();
                }
                let spec = self.vm_spec(id);
                let started = driver.cold_boot(spec.clone()).await?;
                if self.inner.cfg.reset_method == ResetMethod::SnapshotRestore {
                    if let Err(e) = driver.snapshot_save(&started.vm, id.as_str()).await {
                        started.vm.kill().await;
                        return Err(e.into());
                    }
                }
                Ok(Started::Fresh(Box::new((started, spec))))
            }
        }
    }

    /// Grants a lease on a clean desktop, with a new display password.
    pub async fn acquire(
        &self,
        terminal: &TerminalName,
        user: &UserName,
    ) -> Result<LeaseGrant, PoolError> {
        let t0 = Instant::now();
        let lease_id = LeaseId::from_random(random_bytes::<16>()?);
        let acquired = {
            let mut store = self.store()?;
            store.acquire(&lease_id, terminal, user, now_ms())
        };
        let acquired = match acquired {
            Ok(a) => a,
            Err(StoreError::NoFreeDesktop) => {
                self.count_acquire("no_free_desktop");
                return Err(PoolError::NoFreeDesktop {
                    retry_after_s: self.retry_after_s(),
                });
            }
            Err(e) => {
                self.count_acquire("error");
                return Err(e.into());
            }
        };
        let desktop = acquired.lease.desktop.clone();
        let display = match self.grant_display(&desktop).await {
            Ok(d) => d,
            Err(e) => {
                tracing::error!(desktop = %desktop, error = %e, "could not set the display password; ending the lease");
                self.count_acquire("error");
                let ended = self.store().and_then(|mut s| {
                    Ok(s.end_lease(
                        &lease_id,
                        None,
                        EndReason::SetupFailed,
                        now_ms(),
                        json!({"error": e.to_string()}),
                    )?)
                });
                if ended.is_ok() {
                    self.spawn_reset(&desktop);
                }
                return Err(PoolError::Setup(e.to_string()));
            }
        };
        self.count_acquire("granted");
        self.inner
            .metrics
            .acquire_seconds
            .observe(t0.elapsed().as_secs_f64());
        tracing::info!(lease = %lease_id, desktop = %desktop, terminal = %terminal, user = %user,
            ms = t0.elapsed().as_secs_f64() * 1000.0, "lease granted");
        Ok(LeaseGrant {
            lease_id,
            desktop_id: desktop,
            expires_at: self.inner.timing.deadline(acquired.lease.heartbeat_at),
            heartbeat_interval_s: self.inner.timing.heartbeat_interval_s(),
            display,
        })
    }

    fn count_acquire(&self, result: &str) {
        self.inner
            .metrics
            .acquires
            .get_or_create(&ResultLabel {
                result: result.into(),
            })
            .inc();
    }

    async fn grant_display(&self, desktop: &DesktopId) -> Result<Option<DisplayGrant>, PoolError> {
        let Some(cfg) = self.inner.cfg.display.as_ref() else {
            return Ok(None);
        };
        let (vm, spec) = self
            .running_vm(desktop)
            .ok_or_else(|| PoolError::Internal(format!("desktop {desktop} has no running VM")))?;
        let d = spec
            .display
            .ok_or_else(|| PoolError::Internal("desktop has no display".into()))?;
        let password = random_password(match cfg.protocol {
            DisplayProtocol::Spice => 24,
            DisplayProtocol::Vnc => 8,
        })?;
        self.inner
            .driver
            .set_display_password(&vm, cfg.protocol, &password)
            .await
            .map_err(|e| PoolError::Setup(e.to_string()))?;
        Ok(Some(DisplayGrant {
            protocol: cfg.protocol.as_str(),
            host: cfg.advertise_host.clone(),
            port: d.port,
            password,
        }))
    }

    fn retry_after_s(&self) -> u64 {
        let counts = self.counts().unwrap_or_default();
        let typical = self
            .inner
            .reset_ms
            .lock()
            .ok()
            .and_then(|v| median(&v.iter().copied().collect::<Vec<_>>()));
        retry_after_s(&counts, typical, self.inner.timing.heartbeat_interval_s())
    }

    /// Records a heartbeat; returns the lease's new expiry time.
    pub fn heartbeat(
        &self,
        lease: &LeaseId,
        terminal: &TerminalName,
    ) -> Result<UnixMillis, PoolError> {
        let row = self
            .store()?
            .heartbeat(lease, terminal, now_ms(), self.inner.timing.timeout_ms)
            .map_err(|e| match e {
                StoreError::LeaseNotFound => PoolError::LeaseNotFound,
                e => e.into(),
            })?;
        Ok(self.inner.timing.deadline(row.heartbeat_at))
    }

    /// Ends a lease at the terminal's request; the desktop's display password is revoked
    /// and the desktop reset in the background.
    pub async fn release(
        &self,
        lease: &LeaseId,
        terminal: &TerminalName,
    ) -> Result<DesktopId, PoolError> {
        self.end(lease, Some(terminal), EndReason::Released).await
    }

    async fn end(
        &self,
        lease: &LeaseId,
        terminal: Option<&TerminalName>,
        reason: EndReason,
    ) -> Result<DesktopId, PoolError> {
        let row = self
            .store()?
            .end_lease(lease, terminal, reason, now_ms(), json!({}))
            .map_err(|e| match e {
                StoreError::LeaseNotFound => PoolError::LeaseNotFound,
                e => e.into(),
            })?;
        self.inner
            .metrics
            .leases_ended
            .get_or_create(&ReasonLabel {
                reason: reason.as_str().into(),
            })
            .inc();
        tracing::info!(lease = %lease, desktop = %row.desktop, reason = %reason, "lease ended");
        // The lease's display connections and USB stream close before the reset.
        if let Some(tx) = self.inner.display_cut.get(&row.desktop) {
            tx.send_modify(|v| *v += 1);
        }
        self.close_usb(lease).await;
        // Revoke the password at once: the reset that follows replaces the process anyway,
        // but a snapshot restore keeps it, and the reset may wait behind another operation.
        if let (Some(cfg), Some((vm, _))) = (
            self.inner.cfg.display.as_ref(),
            self.running_vm(&row.desktop),
        ) {
            if let Err(e) = self
                .inner
                .driver
                .revoke_display_password(&vm, cfg.protocol)
                .await
            {
                tracing::warn!(desktop = %row.desktop, error = %e, "could not revoke the display password (the reset will)");
            }
        }
        self.spawn_reset(&row.desktop);
        Ok(row.desktop)
    }

    /// Accepts a USB stream for a lease held by `terminal`: one per lease, only while the
    /// lease is active, only to that lease's desktop.
    pub async fn open_usb(
        &self,
        lease: &LeaseId,
        terminal: &TerminalName,
        claim: &crate::relay::DeviceClaim,
    ) -> Result<UsbStream, PoolError> {
        let row = self.lease_of(lease, terminal)?;
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let (done_tx, done_rx) = tokio::sync::watch::channel(false);
        {
            let mut m = self
                .inner
                .usb
                .lock()
                .map_err(|_| PoolError::Internal("usb map poisoned".into()))?;
            if m.contains_key(lease) {
                return Err(PoolError::UsbBusy);
            }
            m.insert(
                lease.clone(),
                UsbHandle {
                    stop: stop_tx,
                    done: done_rx,
                },
            );
        }
        let forget = |p: &Pool| {
            if let Ok(mut m) = p.inner.usb.lock() {
                m.remove(lease);
            }
        };
        // Re-check after registering: a lease that ended meanwhile gets no stream (its end
        // either saw our entry and closed it, or we see it ended here).
        if self.lease_of(lease, terminal).is_err() {
            forget(self);
            return Err(PoolError::LeaseNotFound);
        }
        let path = self.run_dir(&row.desktop).join(files::USBREDIR);
        let socket = match tokio::time::timeout(
            Duration::from_secs(3),
            tokio::net::UnixStream::connect(&path),
        )
        .await
        {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                forget(self);
                return Err(PoolError::UsbUnavailable(e.to_string()));
            }
            Err(_) => {
                forget(self);
                return Err(PoolError::UsbUnavailable("timed out".into()));
            }
        };
        if let Ok(mut s) = self.store() {
            let _ = s.audit(
                now_ms(),
                AuditEntry::new("usb_stream_opened")
                    .terminal(terminal)
                    .user(&row.user)
                    .desktop(&row.desktop)
                    .lease(lease)
                    .details(serde_json::to_value(claim).unwrap_or_default()),
            );
        }
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

    /// Closes a lease's USB stream, if any, and waits (briefly) until it is closed.
    async fn close_usb(&self, lease: &LeaseId) {
        let handle = self.inner.usb.lock().ok().and_then(|mut m| m.remove(lease));
        if let Some(h) = handle {
            let _ = h.stop.send(true);
            let mut done = h.done;
            let _ = tokio::time::timeout(Duration::from_secs(3), done.wait_for(|d| *d)).await;
        }
    }

    fn spawn_reset(&self, id: &DesktopId) {
        let p = self.clone();
        let id = id.clone();
        tokio::spawn(async move {
            let alive = p
                .running_vm(&id)
                .map(|(vm, _)| vm.is_alive())
                .unwrap_or(false);
            p.reset(&id, alive).await;
        });
    }

    /// An admin asks to retry a broken desktop.
    pub async fn repair(&self, id: &DesktopId) -> Result<(), PoolError> {
        let state = self
            .store()?
            .desktop(id)
            .map_err(|e| match e {
                StoreError::UnknownDesktop(d) => PoolError::UnknownDesktop(d.to_string()),
                e => e.into(),
            })?
            .state;
        if state != DesktopState::Broken {
            return Err(PoolError::NotBroken {
                desktop: id.to_string(),
                state,
            });
        }
        self.transition(id, DesktopEvent::Repair, Some("admin repair"))?;
        let p = self.clone();
        let id = id.clone();
        tokio::spawn(async move {
            let Ok(lock) = p.op_lock(&id) else { return };
            let _g = lock.lock().await;
            let plan = ResetPlan::new(p.inner.cfg.reset_method, false);
            p.run_plan(&id, &plan, Instant::now(), true).await;
        });
        Ok(())
    }

    async fn sweep_loop(&self) {
        let mut tick = tokio::time::interval(self.inner.cfg.sweep_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let expired = match self
                .store()
                .and_then(|s| Ok(s.expired_leases(now_ms(), self.inner.timing.timeout_ms)?))
            {
                Ok(v) => v,
                Err(e) => {
                    tracing::error!(error = %e, "lease sweep failed");
                    continue;
                }
            };
            for lease in expired {
                tracing::warn!(lease = %lease.id, desktop = %lease.desktop, terminal = %lease.terminal,
                    "lease expired: no heartbeat; resetting its desktop");
                if let Err(e) = self.end(&lease.id, None, EndReason::Expired).await {
                    tracing::debug!(error = %e, "lease ended meanwhile");
                }
            }
        }
    }

    /// Watches the golden image (and kernel/initrd); when they change, builds a new
    /// template and resets the clean desktops onto it. Leased desktops get it at their
    /// next reset.
    async fn golden_watch_loop(&self) {
        let mut last = self.golden_stamp();
        let mut tick = tokio::time::interval(self.inner.cfg.golden_check_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let stamp = self.golden_stamp();
            if stamp == last {
                continue;
            }
            last = stamp;
            let Ok(key) = self.inner.driver.template_key() else {
                continue; // mid-copy or unreadable: look again at the next tick
            };
            if self
                .inner
                .golden_key
                .lock()
                .ok()
                .map(|k| k.clone())
                .as_deref()
                == Some(key.as_str())
            {
                continue;
            }
            tracing::info!(key = %key, "golden image changed: clean desktops are reset onto it, leased ones after their lease");
            if let Ok(mut k) = self.inner.golden_key.lock() {
                *k = key.clone();
            }
            if let Ok(mut s) = self.store() {
                let _ = s.audit(
                    now_ms(),
                    AuditEntry::new("golden_changed").details(json!({ "key": key })),
                );
            }
            if self.inner.cfg.reset_method == ResetMethod::TemplateClone {
                if !self.refresh_template().await {
                    continue;
                }
            } else if let Ok(mut st) = self.inner.stale.lock() {
                // A snapshot holds the old image: the next reset of every desktop rebuilds.
                st.extend(self.inner.cfg.desktops.iter().cloned());
            }
            let clean: Vec<DesktopId> = self
                .store()
                .and_then(|s| Ok(s.desktops()?))
                .unwrap_or_default()
                .into_iter()
                .filter(|d| d.state == DesktopState::Clean)
                .map(|d| d.id)
                .collect();
            for id in clean {
                let p = self.clone();
                tokio::spawn(async move {
                    let Ok(lock) = p.op_lock(&id) else { return };
                    let g = lock.lock().await;
                    let ok = p
                        .transition(&id, DesktopEvent::Invalidate, Some("golden image changed"))
                        .is_ok();
                    drop(g);
                    if ok {
                        p.reset(&id, true).await;
                    }
                });
            }
        }
    }

    fn golden_stamp(&self) -> Vec<Option<(u64, std::time::SystemTime)>> {
        let c = &self.inner.cfg.driver;
        let mut paths = vec![c.golden.clone()];
        if let airlock_qemu::Boot::Kernel { kernel, initrd, .. } = &c.boot {
            paths.push(kernel.clone());
            paths.push(initrd.clone());
        }
        paths
            .iter()
            .map(|p| {
                std::fs::metadata(p)
                    .ok()
                    .and_then(|m| Some((m.len(), m.modified().ok()?)))
            })
            .collect()
    }

    /// How many desktops are in each state.
    pub fn counts(&self) -> Result<StateCounts, PoolError> {
        let rows = self.store()?.desktops()?;
        Ok(StateCounts::tally(rows.iter().map(|r| r.state)))
    }

    /// All desktops with their leases, for the admin API.
    pub fn desktops(&self) -> Result<Vec<DesktopView>, PoolError> {
        let store = self.store()?;
        let rows = store.desktops()?;
        let leases = store.active_leases()?;
        drop(store);
        Ok(rows
            .into_iter()
            .map(|r| {
                let lease = leases.iter().find(|l| l.desktop == r.id);
                let running = self.running_vm(&r.id);
                DesktopView {
                    lease: lease.map(|l| l.id.clone()),
                    terminal: lease.map(|l| l.terminal.clone()),
                    user: lease.map(|l| l.user.clone()),
                    pid: running.as_ref().map(|(vm, _)| vm.pid),
                    display_port: running
                        .as_ref()
                        .and_then(|(_, s)| s.display.as_ref().map(|d| d.port)),
                    id: r.id,
                    state: r.state,
                    since: r.since,
                    reason: r.reason,
                    resets: r.resets,
                    last_reset_s: r.last_reset_ms.map(|ms| ms as f64 / 1000.0),
                    last_reset_method: r.last_reset_method,
                    generation: r.generation,
                }
            })
            .collect())
    }

    /// Overall status.
    pub fn status(&self) -> Result<PoolStatus, PoolError> {
        let counts = self.counts()?;
        let mut problems = Vec::new();
        if let Some(e) = self
            .inner
            .template_error
            .lock()
            .ok()
            .and_then(|e| e.clone())
        {
            problems.push(e);
        }
        if counts.broken > 0 {
            problems.push(format!(
                "{} desktop(s) broken: see GET /v1/desktops for the reason, then repair",
                counts.broken
            ));
        }
        Ok(PoolStatus {
            problems,
            counts,
            accel: self.inner.cfg.driver.accel.as_str(),
            reset_method: self.inner.cfg.reset_method.as_str(),
            template: self
                .inner
                .template
                .lock()
                .ok()
                .and_then(|t| t.as_ref().map(|t| t.key.clone())),
            qemu: self.inner.driver.qemu_version().to_owned(),
        })
    }

    /// Prometheus text for `/metrics`.
    pub fn render_metrics(&self) -> String {
        let m = &self.inner.metrics;
        if let Ok(c) = self.counts() {
            for s in DesktopState::ALL {
                m.desktops
                    .get_or_create(&StateLabel {
                        state: s.as_str().into(),
                    })
                    .set(i64::try_from(c.get(s)).unwrap_or(i64::MAX));
            }
        }
        if let Ok(l) = self.store().and_then(|s| Ok(s.active_leases()?)) {
            m.leases_active
                .set(i64::try_from(l.len()).unwrap_or(i64::MAX));
        }
        m.render()
    }

    /// The audit chain check, for `/v1/audit/verify`.
    pub fn verify_audit(&self) -> Result<airlock_store::ChainReport, PoolError> {
        Ok(self.store()?.verify_audit()?)
    }

    /// The newest audit records.
    pub fn audit_tail(&self, n: usize) -> Result<Vec<airlock_store::AuditRecord>, PoolError> {
        Ok(self.store()?.audit_tail(n)?)
    }

    /// Paths of a desktop's run directory (sockets), for the broker's relays and tests.
    pub fn run_dir(&self, id: &DesktopId) -> PathBuf {
        self.desktop_dir(id).join("run")
    }

    /// The active lease with this id held by this terminal, if any.
    pub fn lease_of(
        &self,
        lease: &LeaseId,
        terminal: &TerminalName,
    ) -> Result<airlock_store::LeaseRow, PoolError> {
        match self.store()?.lease(lease)? {
            Some(l) if l.ended_at.is_none() && &l.terminal == terminal => Ok(l),
            _ => Err(PoolError::LeaseNotFound),
        }
    }
}

/// The outcome of one successful reset method.
enum Started {
    /// A new QEMU process, to register.
    Fresh(Box<(StartedVm, VmSpec)>),
    /// The running process was restored in place.
    InPlace(serde_json::Value),
}

enum Work {
    Provision,
    Reset { process_alive: bool },
    Died,
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
