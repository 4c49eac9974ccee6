//! Security alerts terminals raise (an unguarded terminal, …): written to the audit log
//! as `security_alert` for the security officer, and logged. Unlike the records of what
//! the pool does, an alert that cannot be written is an error the terminal hears of.
use super::{now_ms, Pool};
use crate::error::PoolError;
use airlock_core::wire::AlertReport;
use airlock_core::{TerminalName, UserName};
use airlock_store::AuditEntry;
use serde_json::json;

impl Pool {
    /// Audits `report` from `terminal` (already checked at the edge).
    pub fn security_alert(
        &self,
        terminal: &TerminalName,
        user: Option<&UserName>,
        report: &AlertReport,
    ) -> Result<(), PoolError> {
        tracing::warn!(
            terminal = %terminal,
            kind = %report.kind,
            accepted = report.accepted,
            problems = report.problems.len(),
            "security alert from a terminal"
        );
        let mut entry = AuditEntry::new("security_alert")
            .terminal(terminal)
            .details(json!({
                "kind": report.kind,
                "accepted": report.accepted,
                "problems": report.problems,
            }));
        if let Some(u) = user {
            entry = entry.user(u);
        }
        self.store()?.audit(now_ms(), entry)?;
        Ok(())
    }
}
