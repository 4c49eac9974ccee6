//! Health of the desktops the broker is not using: idle clean desktops are pinged and
//! taken out when they do not answer, a clean desktop is verified after a restart, and
//! the QEMU processes of desktops a smaller pool no longer has are stopped.
use super::{now_ms, Pool};
use airlock_core::{DesktopEvent, DesktopId, DesktopState};
use std::time::Duration;

impl Pool {
    /// Stops the QEMU processes of desktops the config no longer has (a smaller pool):
    /// nothing runs that the broker does not manage.
    pub(super) async fn stop_retired(&self) {
        let dir = self.inner.cfg.state_dir.join("desktops");
        let Ok(entries) = std::fs::read_dir(&dir) else {
            return;
        };
        for e in entries.flatten() {
            let name = e.file_name();
            let name = name.to_string_lossy();
            if self.inner.cfg.desktops.iter().any(|d| d.as_str() == name) {
                continue;
            }
            let n = airlock_qemu::process::kill_stale(&e.path().join("run")).await;
            if n > 0 {
                tracing::info!(desktop = %name, processes = n, "stopped a desktop the pool no longer has");
            }
        }
    }

    /// Every `pool.readiness.idle_probe_s`: pings each clean desktop's guest and takes
    /// one that does not answer out of the pool (it goes `dirty` and is reset), so a
    /// hung desktop is not handed to the next clinician.
    pub(super) async fn idle_probe_loop(&self) {
        let Some(every) = self.inner.cfg.idle_probe_interval else {
            return;
        };
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tick.tick().await;
            let clean: Vec<DesktopId> = match self.store().and_then(|s| Ok(s.desktops()?)) {
                Ok(rows) => rows
                    .into_iter()
                    .filter(|r| r.state == DesktopState::Clean)
                    .map(|r| r.id)
                    .collect(),
                Err(_) => continue,
            };
            for id in clean {
                // A desktop being reset or started is its reset's to judge.
                let Ok(lock) = self.op_lock(&id) else {
                    continue;
                };
                let Ok(_g) = lock.try_lock() else { continue };
                if self.verify_clean(&id).await {
                    continue;
                }
                // Still clean (not leased meanwhile) in the same store lock as the change.
                let taken_out = self.store().and_then(|mut s| {
                    if s.desktop(&id)?.state != DesktopState::Clean {
                        return Ok(false);
                    }
                    super::resets::transition_in(
                        &mut s,
                        &id,
                        DesktopEvent::Died,
                        Some("an idle clean desktop did not answer its probe"),
                        serde_json::json!({}),
                    )?;
                    Ok(true)
                });
                match taken_out {
                    Ok(true) => {
                        tracing::warn!(desktop = %id, "an idle clean desktop did not answer its probe: resetting it");
                        drop(_g);
                        let p = self.clone();
                        tokio::spawn(async move { p.reset(&id, true).await });
                    }
                    Ok(false) => {}
                    Err(e) => {
                        tracing::error!(desktop = %id, error = %crate::error::ErrorChain(&e), "could not take out an unresponsive desktop");
                    }
                }
            }
        }
    }

    /// Pings a clean desktop's guest; a desktop that does not answer is not clean.
    pub(super) async fn verify_clean(&self, id: &DesktopId) -> bool {
        let Some((vm, _spec)) = self.running_vm(id) else {
            return false;
        };
        match &self.inner.cfg.driver.readiness {
            airlock_qemu::Readiness::Serial { .. } => {
                let nonce = format!("verify-{}", now_ms());
                match vm.agent(Duration::from_secs(2)).await {
                    Ok(a) => a.ping(&nonce, Duration::from_secs(5)).await.is_ok(),
                    Err(_) => false,
                }
            }
            airlock_qemu::Readiness::Qga(_) => match vm.qga(Duration::from_secs(5)).await {
                Ok(mut q) => q.ping(Duration::from_secs(5)).await.is_ok(),
                Err(_) => false,
            },
            airlock_qemu::Readiness::Delay(_) => true,
        }
    }
}
