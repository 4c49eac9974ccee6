//! The golden image and its templates: builds (or loads) the template of the current
//! golden image, removes old ones, and watches the golden image (and kernel/initrd) so that
//! clean desktops move onto a new one.
use super::Pool;
use airlock_core::{DesktopEvent, DesktopId, DesktopState, ResetMethod};
use airlock_store::AuditEntry;
use serde_json::json;
use std::path::Path;

impl Pool {
    /// Builds (or loads) the template for the current golden image. On failure the pool
    /// still works, with rebuilds instead of template clones.
    pub(super) async fn refresh_template(&self) -> bool {
        let dir = self.inner.cfg.state_dir.join("templates");
        match self.inner.driver.ensure_template(&dir).await {
            Ok(t) => {
                let changed = {
                    let cur = self.inner.template.lock().ok();
                    cur.and_then(|c| c.as_ref().map(|x| x.key != t.key))
                        .unwrap_or(true)
                };
                if changed {
                    self.record_audit(AuditEntry::new("template_ready").details(json!({
                        "key": t.key,
                        "device_state_sha256": t.device_state_sha256,
                        "build_ms": t.build_ms,
                        "golden": self.inner.cfg.driver.golden.display().to_string(),
                        "guest": t.guest,
                    })));
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
                tracing::error!(error = %crate::error::ErrorChain(&e), "template build failed; desktops will be rebuilt from the golden image instead");
                if let Ok(mut te) = self.inner.template_error.lock() {
                    *te = Some(format!(
                        "no template ({}): resets fall back to rebuilds, which are much slower",
                        crate::error::ErrorChain(&e)
                    ));
                }
                self.record_audit(
                    AuditEntry::new("template_failed")
                        .details(json!({"error": crate::error::ErrorChain(&e).to_string()})),
                );
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

    /// Watches the golden image (and kernel/initrd); when they change, builds a new
    /// template and resets the clean desktops onto it. Leased desktops get it at their
    /// next reset.
    pub(super) async fn golden_watch_loop(&self) {
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
            self.record_audit(AuditEntry::new("golden_changed").details(json!({ "key": key })));
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
}
