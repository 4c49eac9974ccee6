//! The audit-trail invariant checker: the pool's central rule, read back from what the
//! broker recorded.
use anyhow::{ensure, Context, Result};
use serde_json::Value;
use std::collections::HashMap;

/// Checks records (oldest first, as `/v1/audit` returns them): a desktop is leased only
/// after a verified clean start, never twice at once, and never again after a lease
/// without a reset in between.
pub fn check_invariants(records: &[Value]) -> Result<()> {
    #[derive(Debug, Clone, Copy, PartialEq)]
    enum S {
        Unknown,
        Clean,
        Leased,
        Used,
    }
    let mut st: HashMap<String, S> = HashMap::new();
    for r in records {
        let Some(d) = r["desktop"].as_str() else {
            continue;
        };
        let s = st.entry(d.to_owned()).or_insert(S::Unknown);
        let action = r["action"]
            .as_str()
            .with_context(|| format!("audit record without action: {r}"))?;
        // What the action needs the desktop to be in, and what it makes it.
        let (need, next) = match action {
            "desktop_ready" | "desktop_reset" => (None, S::Clean),
            "lease_granted" => (Some(S::Clean), S::Leased),
            "lease_ended" => (Some(S::Leased), S::Used),
            "desktop_died" | "desktop_invalidated" | "reset_started" | "desktop_broken"
                if *s == S::Clean =>
            {
                (None, S::Used)
            }
            _ => continue,
        };
        if let Some(need) = need {
            ensure!(*s == need, "{action} on {d} in state {s:?}: {r}");
        }
        *s = next;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rec(desktop: &str, action: &str) -> Value {
        json!({"desktop": desktop, "action": action})
    }

    #[test]
    fn a_lease_needs_a_clean_start_and_a_reset_after_it() {
        let ok = [
            rec("d1", "desktop_ready"),
            rec("d1", "lease_granted"),
            rec("d1", "lease_ended"),
            rec("d1", "desktop_reset"),
            rec("d1", "lease_granted"),
        ];
        check_invariants(&ok).unwrap();
        // Granted twice; granted again without a reset; granted after the desktop died.
        for bad in [
            &["desktop_ready", "lease_granted", "lease_granted"][..],
            &[
                "desktop_ready",
                "lease_granted",
                "lease_ended",
                "lease_granted",
            ],
            &["desktop_ready", "desktop_died", "lease_granted"],
        ] {
            let records: Vec<Value> = bad.iter().map(|a| rec("d1", a)).collect();
            assert!(check_invariants(&records).is_err(), "{bad:?}");
        }
    }
}
