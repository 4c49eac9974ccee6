//! The audit-trail invariant checker: the pool's central rule, read back from what the
//! broker recorded.
use anyhow::{ensure, Context, Result};
use serde_json::Value;
use std::collections::HashMap;

/// Checks records (oldest first, as `/v1/audit` returns them): a desktop is leased only
/// after a verified clean start, never twice at once, and never again after a lease
/// without a reset in between; and a desktop held for a waiting terminal
/// (`queue_held`) is leased only to that terminal until the hold ends (the ticket
/// leaves the line, or the hold is dropped).
pub fn check_invariants(records: &[Value]) -> Result<()> {
    #[derive(Debug, Clone, Copy, PartialEq)]
    enum S {
        Unknown,
        Clean,
        Leased,
        Used,
    }
    let mut st: HashMap<String, S> = HashMap::new();
    // Desktop -> (ticket, terminal) it is held for.
    let mut holds: HashMap<String, (String, String)> = HashMap::new();
    for r in records {
        let Some(d) = r["desktop"].as_str() else {
            continue;
        };
        let s = st.entry(d.to_owned()).or_insert(S::Unknown);
        let action = r["action"]
            .as_str()
            .with_context(|| format!("audit record without action: {r}"))?;
        match action {
            "queue_held" => {
                ensure!(*s == S::Clean, "queue_held on {d} in state {s:?}: {r}");
                let ticket = details(r)?["ticket"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned();
                let terminal = r["terminal"].as_str().unwrap_or_default().to_owned();
                if let Some(h) = holds.insert(d.to_owned(), (ticket, terminal)) {
                    anyhow::bail!("{d} held twice (already for {h:?}): {r}");
                }
                continue;
            }
            "queue_left" | "queue_hold_dropped" => {
                let ticket = details(r)?["ticket"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned();
                if holds.get(d).is_some_and(|(t, _)| *t == ticket) {
                    holds.remove(d);
                }
                continue;
            }
            "lease_granted" => {
                if let Some((ticket, terminal)) = holds.remove(d) {
                    ensure!(
                        r["terminal"].as_str() == Some(terminal.as_str())
                            && details(r)?["ticket"].as_str() == Some(ticket.as_str()),
                        "{d} was held for ticket {ticket} of {terminal} but leased otherwise: {r}"
                    );
                }
            }
            _ => {}
        }
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

/// A record's details: a JSON object, stored as text (or already an object).
fn details(r: &Value) -> Result<Value> {
    match &r["details"] {
        Value::String(text) => {
            serde_json::from_str(text).with_context(|| format!("audit details are not JSON: {r}"))
        }
        Value::Null => Ok(Value::Object(Default::default())),
        v => Ok(v.clone()),
    }
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

    #[test]
    fn a_held_desktop_goes_only_to_its_ticket() {
        let held = |ticket: &str, terminal: &str| {
            json!({"desktop": "d1", "action": "queue_held", "terminal": terminal,
                   "details": json!({"ticket": ticket}).to_string()})
        };
        let granted = |ticket: Option<&str>, terminal: &str| {
            let details = ticket.map_or(json!({}), |t| json!({"ticket": t}));
            json!({"desktop": "d1", "action": "lease_granted", "terminal": terminal,
                   "details": details.to_string()})
        };
        let left = |ticket: &str| {
            json!({"desktop": "d1", "action": "queue_left",
                   "details": json!({"ticket": ticket, "reason": "hold_expired"}).to_string()})
        };
        let ready = rec("d1", "desktop_ready");
        check_invariants(&[ready.clone(), held("k1", "t3"), granted(Some("k1"), "t3")]).unwrap();
        // After the hold ran out anyone may lease it.
        check_invariants(&[
            ready.clone(),
            held("k1", "t3"),
            left("k1"),
            granted(None, "t1"),
        ])
        .unwrap();
        for bad in [
            vec![ready.clone(), held("k1", "t3"), granted(None, "t1")],
            vec![ready.clone(), held("k1", "t3"), granted(Some("k2"), "t3")],
            vec![ready.clone(), held("k1", "t3"), held("k2", "t4")],
            vec![held("k1", "t3")],
        ] {
            assert!(check_invariants(&bad).is_err(), "{bad:?}");
        }
    }
}
