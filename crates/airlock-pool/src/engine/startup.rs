//! Start-up: opens the store, binds the display ports, re-attaches to the desktops a
//! previous broker left running (checking that clean ones still answer, see `probes`)
//! and brings up the rest: first starts, resets and rebuilds, in the background.
use super::{now_ms, Inner, Pool};
use crate::config::PoolConfig;
use crate::error::PoolError;
use crate::metrics::InfoLabel;
use crate::Metrics;
use airlock_core::{DesktopEvent, DesktopId, DesktopState, LeaseTiming, ResetMethod, ResetPlan};
use airlock_qemu::{Driver, Vm, VmSpec};
use airlock_store::{AuditEntry, DesktopRow, Store};
use serde_json::json;
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Instant;

impl Pool {
    /// Opens the store, re-attaches to desktops left running by a previous broker,
    /// starts provisioning the rest in the background and returns at once.
    pub async fn start(cfg: PoolConfig) -> Result<Pool, PoolError> {
        std::fs::create_dir_all(&cfg.state_dir).map_err(|source| PoolError::StateDir {
            path: cfg.state_dir.clone(),
            source,
        })?;
        // The database, the overlays and the templates are the broker's alone: desktops
        // (their own uids) get what they need as descriptors, nobody else gets in.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&cfg.state_dir, std::fs::Permissions::from_mode(0o700))
            .and_then(|()| std::fs::metadata(&cfg.state_dir))
            .and_then(|m| {
                if m.permissions().mode() & 0o077 == 0 {
                    Ok(())
                } else {
                    Err(std::io::Error::other("it is still open to other users"))
                }
            })
            .map_err(|source| PoolError::StateDirMode {
                path: cfg.state_dir.clone(),
                source,
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
        let display_tls = match cfg.display.as_ref() {
            Some(d) => {
                if d.plaintext_on_network() {
                    tracing::warn!(listen = %d.listen, "the display listens without TLS on a network address (pool.display.allow_plaintext): display passwords and pixels cross the network in clear; set server.tls_cert and server.tls_key");
                }
                d.tls
                    .as_ref()
                    .map(crate::display::tls_acceptor)
                    .transpose()?
            }
            None => None,
        };
        let display_cut_map: HashMap<_, _> = cfg
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
                    .ok_or_else(|| PoolError::DisplayPortRange {
                        desktop: id.clone(),
                    })?;
                let l = tokio::net::TcpListener::bind((d.listen, port))
                    .await
                    .map_err(|source| PoolError::DisplayPortBind {
                        listen: d.listen,
                        port,
                        desktop: id.clone(),
                        source,
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
                display_open: display_cut_map
                    .keys()
                    .map(|id| (id.clone(), Arc::default()))
                    .collect(),
                display_cut: display_cut_map,
                display_tls,
                template_error: Mutex::new(None),
                stale: Mutex::new(std::collections::HashSet::new()),
                deadlines: Mutex::new(airlock_core::Deadlines::default()),
                started: std::time::Instant::now(),
                queue: super::queue::QueueState::new(),
                refused: Default::default(),
            }),
        };
        for (id, l) in display_listeners {
            tokio::spawn(pool.clone().serve_display(id, l));
        }
        let need_work = pool.reattach(&rows).await?;
        pool.stop_retired().await;
        let p = pool.clone();
        tokio::spawn(async move { p.bring_up(need_work).await });
        let p = pool.clone();
        tokio::spawn(async move { p.idle_probe_loop().await });
        let p = pool.clone();
        tokio::spawn(async move { p.sweep_loop().await });
        let p = pool.clone();
        tokio::spawn(async move { p.golden_watch_loop().await });
        Ok(pool)
    }

    /// After a (re)start: keeps desktops whose QEMU still runs and whose state allows it,
    /// and returns the desktops that need a start or a reset.
    async fn reattach(&self, rows: &[DesktopRow]) -> Result<Vec<(DesktopId, Work)>, PoolError> {
        let mut work = Vec::new();
        for row in rows {
            let id = &row.id;
            let run_dir = self.desktop_dir(id).join("run");
            let spec: Option<VmSpec> = std::fs::read_to_string(self.spec_path(id))
                .ok()
                .and_then(|t| serde_json::from_str(&t).ok());
            let attached = match row.state {
                DesktopState::Clean | DesktopState::Leased => {
                    match Vm::attach(&run_dir, id.as_str(), spec.as_ref()).await {
                        Ok(vm) => Some(vm),
                        Err(e) => {
                            tracing::warn!(desktop = %id, error = %e, "desktop's QEMU is gone");
                            None
                        }
                    }
                }
                _ => None,
            };
            let next = match (row.state, attached, spec) {
                (DesktopState::Clean | DesktopState::Leased, Some(vm), Some(spec)) => {
                    // A guest that powered off while no broker watched (`-no-shutdown`
                    // keeps its process): its SHUTDOWN event is gone, its state says it.
                    let powered_off = vm.qmp.status().await.is_ok_and(|s| s == "shutdown");
                    tracing::info!(desktop = %id, state = %row.state, pid = vm.pid, powered_off, "re-attached to running desktop");
                    // A clean desktop is offered again only with the allowed chardevs.
                    let chardevs_refused = match row.state {
                        DesktopState::Clean => self
                            .inner
                            .driver
                            .check_chardevs(&vm, &spec)
                            .await
                            .err()
                            .map(|e| crate::error::ErrorChain(&e).to_string()),
                        _ => None,
                    };
                    self.register(id, vm, spec);
                    match row.state {
                        DesktopState::Leased if powered_off => {
                            self.signed_out_while_away(id)?;
                            Some(Work::Reset {
                                process_alive: true,
                            })
                        }
                        DesktopState::Clean if chardevs_refused.is_some() => {
                            let why = chardevs_refused.unwrap_or_default();
                            tracing::warn!(desktop = %id, reason = %why, "a re-attached desktop has a channel that is not allowed");
                            self.transition(
                                id,
                                DesktopEvent::Died,
                                Some(&format!("after a broker restart: {why}")),
                            )?;
                            Some(Work::Reset {
                                process_alive: true,
                            })
                        }
                        // Not offered before it answers: it leaves `clean` now, before
                        // the API serves, not when the bring-up gets to it.
                        DesktopState::Clean if powered_off || !self.verify_clean(id).await => {
                            self.transition(
                                id,
                                DesktopEvent::Died,
                                Some("did not answer its readiness probe after a broker restart"),
                            )?;
                            Some(Work::Reset {
                                process_alive: true,
                            })
                        }
                        _ => None,
                    }
                }
                (DesktopState::Leased, _, _) => {
                    self.lease_lost(id)?;
                    Some(Work::RESET_WITHOUT_PROCESS)
                }
                (DesktopState::Clean, _, _) => {
                    self.transition(
                        id,
                        DesktopEvent::Died,
                        Some("QEMU process gone after broker restart"),
                    )?;
                    Some(Work::RESET_WITHOUT_PROCESS)
                }
                // No QEMU to keep: whatever is left of one goes, then the state says
                // what comes next (a broken desktop waits for an admin's repair).
                (
                    DesktopState::Starting
                    | DesktopState::Dirty
                    | DesktopState::Resetting
                    | DesktopState::Broken,
                    _,
                    _,
                ) => {
                    airlock_qemu::process::kill_stale(&run_dir).await;
                    match row.state {
                        DesktopState::Starting => Some(Work::Provision),
                        DesktopState::Resetting => {
                            self.transition(
                                id,
                                DesktopEvent::Recover,
                                Some("broker restarted during a reset"),
                            )?;
                            Some(Work::RESET_WITHOUT_PROCESS)
                        }
                        DesktopState::Dirty => Some(Work::RESET_WITHOUT_PROCESS),
                        _ => None,
                    }
                }
            };
            work.extend(next.map(|w| (id.clone(), w)));
        }
        Ok(work)
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
}

/// What start-up leaves to do for a desktop.
enum Work {
    Provision,
    Reset { process_alive: bool },
}

impl Work {
    /// A reset of a desktop whose QEMU process is gone (or was killed).
    const RESET_WITHOUT_PROCESS: Work = Work::Reset {
        process_alive: false,
    };
}
