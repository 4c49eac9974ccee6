//! Views of the pool: desktop counts, the admin API's desktop list, `/healthz` status,
//! Prometheus metrics and the audit log's check and tail.
use super::Pool;
use crate::error::PoolError;
use crate::metrics::StateLabel;
use airlock_core::policy::StateCounts;
use airlock_core::{DesktopId, DesktopState, LeaseId, TerminalName, UnixMillis, UserName};
use serde::Serialize;

/// A desktop as the admin API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct DesktopView {
    pub id: DesktopId,
    /// Its state in the life cycle (`airlock-core::desktop`).
    pub state: DesktopState,
    /// When it entered that state.
    pub since: UnixMillis,
    /// Why it is in that state (for `broken`: what failed).
    pub reason: Option<String>,
    /// The lease it serves, with its terminal and user, while `leased`.
    pub lease: Option<LeaseId>,
    pub terminal: Option<TerminalName>,
    pub user: Option<UserName>,
    /// Completed resets, the last one's duration in seconds and its method.
    pub resets: i64,
    pub last_reset_s: Option<f64>,
    pub last_reset_method: Option<String>,
    /// Clean starts so far.
    pub generation: i64,
    /// Its QEMU process, while one runs.
    pub pid: Option<i32>,
    /// The broker's display port for it, when the pool has a display.
    pub display_port: Option<u16>,
    /// Drained by an admin (kept out of service), and why.
    pub drained: bool,
    pub drain_reason: Option<String>,
    /// Display connections open now through the broker.
    pub display_connections: usize,
    /// The USB device its lease forwards now (`vid:pid class cc`).
    pub usb_device: Option<String>,
}

impl DesktopView {
    /// What the console shows as its state: its life-cycle state, or `draining` (drained,
    /// its lease still running) and `drained` (out of service).
    pub fn shown_state(&self) -> &'static str {
        match (self.drained, self.state) {
            (true, DesktopState::Leased) => "draining",
            (true, _) => "drained",
            (false, s) => s.as_str(),
        }
    }
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

impl Pool {
    /// How many desktops are in each state.
    pub fn counts(&self) -> Result<StateCounts, PoolError> {
        let rows = self.store()?.desktops()?;
        let out = |r: &&airlock_store::DesktopRow| r.drained && r.state != DesktopState::Leased;
        let mut c = StateCounts::tally(rows.iter().filter(|r| !out(r)).map(|r| r.state));
        c.drained = rows.iter().filter(out).count();
        Ok(c)
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
                    usb_device: lease.and_then(|l| self.usb_device(&l.id)),
                    display_connections: self.display_connections(&r.id),
                    drained: r.drained,
                    drain_reason: r.drain_reason,
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
        if let Some(d) = self
            .inner
            .cfg
            .display
            .as_ref()
            .filter(|d| d.plaintext_on_network())
        {
            problems.push(format!(
                "the display listens on {} without TLS (pool.display.allow_plaintext): display passwords and pixels cross the network in clear; set server.tls_cert and server.tls_key",
                d.listen
            ));
        }
        problems.extend(self.inner.driver.confinement_problems());
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

    /// The pool's metrics, for what the broker reports itself (audit check, forwarding).
    pub fn metrics(&self) -> &crate::Metrics {
        &self.inner.metrics
    }

    /// `/metrics` in the OpenMetrics text format (see
    /// [`crate::metrics::to_prometheus_text`] for the Prometheus text format). What
    /// describes the pool now is read from it here, at the scrape.
    pub fn render_metrics(&self) -> String {
        use crate::metrics::saturating_i64;
        let m = &self.inner.metrics;
        let _one_at_a_time = m.scrape.lock();
        if let Ok(views) = self.desktops() {
            // Every state is listed, also at 0; a state the console shows that is not a
            // life-cycle state (draining, drained) is counted as shown.
            let mut counts: std::collections::BTreeMap<&str, usize> = DesktopState::ALL
                .iter()
                .map(|s| s.as_str())
                .chain(["draining", "drained"])
                .map(|s| (s, 0))
                .collect();
            for v in &views {
                *counts.entry(v.shown_state()).or_default() += 1;
            }
            m.desktops.clear();
            for (state, n) in counts {
                m.desktops
                    .get_or_create(&StateLabel {
                        state: state.into(),
                    })
                    .set(saturating_i64(n));
            }
            // From the same snapshot: a desktop shows its active lease.
            let leases = views.iter().filter(|v| v.lease.is_some()).count();
            m.leases_active.set(saturating_i64(leases));
        }
        let (waiting, held) = self.line_counts();
        m.queue_waiting.set(saturating_i64(waiting));
        m.queue_held.set(saturating_i64(held));
        m.usb_streams_active
            .set(saturating_i64(self.usb_streams_open()));
        m.render()
    }

    /// The newest audit records.
    pub fn audit_tail(&self, n: usize) -> Result<Vec<airlock_store::AuditRecord>, PoolError> {
        Ok(self.store()?.audit_tail(n)?)
    }

    /// The audit chain's head (sequence number and hash), to anchor it.
    pub fn audit_head(&self) -> Result<(i64, String), PoolError> {
        Ok(self.store()?.audit_head()?)
    }

    /// Compares the audit chain with an anchor.
    pub fn check_anchor(
        &self,
        anchor: &airlock_store::Anchor,
    ) -> Result<airlock_store::AnchorCheck, PoolError> {
        Ok(self.store()?.check_anchor(anchor)?)
    }
}
