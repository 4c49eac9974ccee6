//! Resets: brings a used (or dead, or repaired) desktop back to a verified clean state by
//! the pool's reset plan, falling back method by method and marking the desktop broken
//! when every method fails; records the desktop state transitions on the way.
use super::{now_ms, Pool};
use crate::error::{ErrorChain, PoolError};
use crate::metrics::{MethodLabel, MethodResultLabel};
use airlock_core::{DesktopEvent, DesktopId, DesktopState, EndReason, ResetMethod, ResetPlan};
use airlock_qemu::{StartedVm, VmSpec};
use airlock_store::{AuditEntry, ResetRecord, StoreError};
use serde_json::json;
use std::time::Instant;

impl Pool {
    /// A desktop's QEMU is gone: its active lease ends `desktop_lost`, or, without one,
    /// the desktop goes `dirty`. One store lock for the look and the change, so no
    /// acquire can lease the desktop in between (the database refuses a state and a
    /// lease that disagree anyway: see airlock-store's schema).
    pub(super) fn lease_lost(&self, id: &DesktopId) -> Result<(), PoolError> {
        let mut store = self.store()?;
        let ended = self.end_lease_on(
            &mut store,
            id,
            EndReason::DesktopLost,
            json!({"why": "the desktop's QEMU process was lost"}),
        )?;
        if ended.is_none() {
            transition_in(
                &mut store,
                id,
                DesktopEvent::Died,
                Some("QEMU process lost"),
                json!({}),
            )?;
        }
        Ok(())
    }

    pub(super) fn transition(
        &self,
        id: &DesktopId,
        event: DesktopEvent,
        reason: Option<&str>,
    ) -> Result<DesktopState, PoolError> {
        Ok(transition_in(
            &mut *self.store()?,
            id,
            event,
            reason,
            json!({}),
        )?)
    }

    pub(super) async fn handle_died(&self, id: &DesktopId) {
        if let Err(e) = self.lease_lost(id) {
            tracing::error!(desktop = %id, error = %ErrorChain(&e), "could not record a lost desktop");
            return;
        }
        // A fresh process by the pool's method (a new template clone: nothing of the dead
        // process is reused), with a rebuild as its fallback.
        self.reset(id, false).await;
    }

    /// A desktop's QEMU died (or its monitor closed).
    pub(super) async fn on_death(&self, id: &DesktopId, generation: u64) {
        let Ok(lock) = self.op_lock(id) else { return };
        let guard = lock.lock().await;
        if !self.is_current(id, generation) {
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
                tracing::error!(desktop = %id, error = %ErrorChain(&e), "cannot read desktop");
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
            tracing::error!(desktop = %id, error = %ErrorChain(&e), "cannot start reset");
            return;
        }
        self.run_plan(id, &plan, t0, true).await;
    }

    /// Tries each method of a plan until one yields a verified clean desktop; if none
    /// does, the desktop goes `broken` with the reasons.
    pub(super) async fn run_plan(
        &self,
        id: &DesktopId,
        plan: &ResetPlan,
        t0: Instant,
        is_reset: bool,
    ) {
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
                            tracing::error!(desktop = %id, error = %ErrorChain(&e), "could not record the clean start");
                        }
                    }
                    // Before anyone else can lease it, the desktop is held for the head
                    // of the line, if a terminal waits.
                    self.offer_clean();
                    return;
                }
                Err(e) => {
                    tracing::warn!(desktop = %id, method = %method, error = %ErrorChain(&e), "reset attempt failed");
                    let error = ErrorChain(&e).to_string();
                    failures.push(json!({"method": method.as_str(), "error": error}));
                    self.record_audit(
                        AuditEntry::new("reset_attempt_failed")
                            .desktop(id)
                            .details(json!({"method": method.as_str(), "error": error})),
                    );
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
            tracing::error!(desktop = %id, error = %ErrorChain(&e), "could not mark the desktop broken");
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
                    .ok_or(PoolError::NoTemplate)?;
                let old = self.unregister(id);
                let spec = self.vm_spec(id);
                let started = driver
                    .start_clone(&template, spec.clone(), old.as_ref().map(|o| &*o.vm))
                    .await?;
                Ok(Started::Fresh(Box::new((started, spec))))
            }
            ResetMethod::SnapshotRestore => {
                let (vm, spec) = self.running_vm(id).ok_or_else(|| PoolError::NotRunning {
                    desktop: id.clone(),
                })?;
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

    pub(super) fn spawn_reset(&self, id: &DesktopId) {
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
}

/// The outcome of one successful reset method.
enum Started {
    /// A new QEMU process, to register.
    Fresh(Box<(StartedVm, VmSpec)>),
    /// The running process was restored in place.
    InPlace(serde_json::Value),
}

/// Applies `event` to desktop `id` in `store` (whose lock the caller holds, so that a
/// look before it and the change are one step), audited under the event's action name.
pub(super) fn transition_in(
    store: &mut airlock_store::Store,
    id: &DesktopId,
    event: DesktopEvent,
    reason: Option<&str>,
    details: serde_json::Value,
) -> Result<DesktopState, airlock_store::StoreError> {
    let action = match event {
        DesktopEvent::BeginReset => "reset_started",
        DesktopEvent::ResetFailed => "desktop_broken",
        DesktopEvent::Died => "desktop_died",
        DesktopEvent::Repair => "repair_requested",
        DesktopEvent::Invalidate => "desktop_invalidated",
        DesktopEvent::Recover => "desktop_recovered",
        _ => "desktop_state",
    };
    store.transition(
        id,
        event,
        now_ms(),
        reason,
        AuditEntry::new(action).details(details),
    )
}
