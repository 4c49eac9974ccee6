//! Audit forwarding (`[audit.forward]`): every audit record, in order, to a syslog
//! server as RFC 5424 over TCP or TLS ([`airlock_syslog`]). The forwarder tails the
//! database through its own read-only connection from a cursor in the state directory
//! (`audit-forward.cursor`), so records are never lost from the database while the
//! server is away; its state goes to `/metrics` (`airlock_audit_forward_*`) and, when it
//! has failed for longer than `problem_after_s`, to `/healthz`.
use crate::config::AuditForwarding;
use airlock_pool::Pool;
use airlock_syslog::{ForwardConfig, Forwarder, Header};
use anyhow::{Context, Result};
use std::path::Path;
use std::time::{Duration, SystemTime};

/// The cursor file's name in the state directory.
pub const CURSOR_FILE: &str = "audit-forward.cursor";

/// The running forwarder.
pub struct AuditForward {
    forwarder: Forwarder,
    address: String,
    problem_after: Duration,
}

/// The machine's host name for HOSTNAME, or NILVALUE when it is not a valid one.
fn machine_hostname() -> String {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let name = name.trim();
    let ok = !name.is_empty() && name.len() <= 255 && name.bytes().all(|b| (33..=126).contains(&b));
    if ok {
        name.to_owned()
    } else {
        "-".to_owned()
    }
}

fn unix_seconds(t: SystemTime) -> i64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

impl AuditForward {
    /// Starts forwarding the database of `state_dir` (on the current runtime).
    pub fn start(cfg: &AuditForwarding, state_dir: &Path, pool: &Pool) -> Result<AuditForward> {
        if cfg.cleartext_remote {
            tracing::warn!(
                server = %cfg.address,
                "audit forwarding uses plain TCP to a host that is not this one: the records cross the network in cleartext and can be read or changed on the way; use transport = \"tls\""
            );
        }
        let hostname = cfg.hostname.clone().unwrap_or_else(machine_hostname);
        let header = Header::new(
            cfg.facility,
            &hostname,
            &cfg.app_name,
            &std::process::id().to_string(),
        )
        .context("the syslog header of audit forwarding")?;
        let db = state_dir.join("airlock.db");
        let source = airlock_store::Store::open_read_only(&db)
            .with_context(|| format!("open {} for audit forwarding", db.display()))?;
        let mut fc = ForwardConfig::new(
            cfg.address.clone(),
            cfg.transport.clone(),
            header,
            cfg.sd_id.clone(),
            state_dir.join(CURSOR_FILE),
        );
        fc.max_message = cfg.max_message;
        fc.retry_max = cfg.retry_max;
        let metrics_pool = pool.clone();
        let report = Box::new(move |s: &airlock_syslog::Status, newly: u64| {
            let m = metrics_pool.metrics();
            m.set_audit_forward(s.backlog, s.connected, s.last_success.map(unix_seconds));
            if newly > 0 {
                m.add_audit_forwarded(newly);
            }
        });
        // The forwarding metrics exist from the start (a backlog of 0 until known).
        pool.metrics().set_audit_forward(0, false, None);
        pool.metrics().add_audit_forwarded(0);
        tracing::info!(
            server = %cfg.address,
            transport = ?cfg.transport,
            sd_id = cfg.sd_id.as_str(),
            "forwarding every audit record to the syslog server (RFC 5424)"
        );
        Ok(AuditForward {
            forwarder: Forwarder::spawn(fc, source, report),
            address: cfg.address.clone(),
            problem_after: cfg.problem_after,
        })
    }

    /// What `/healthz` lists: forwarding failing for longer than `problem_after_s`, or a
    /// cursor that disagrees with the database.
    pub fn problem(&self) -> Option<String> {
        self.forwarder
            .status()
            .problem(&self.address, self.problem_after, SystemTime::now())
    }

    /// Sends what is left (a few seconds at most) and stops.
    pub async fn shutdown(&self) {
        self.forwarder.shutdown().await;
    }
}
