//! Filling a broker's database with a large, valid audit trail before the broker starts:
//! for the audit search and verification tests at scale and the console benchmark.
//!
//! [`fill_audit`] appends `n` records, chained on from the database's head, in one
//! transaction through one prepared statement, as sessions of a realistic mix: the
//! line, grant, display, USB attach and detach (sometimes a refused device), end (by
//! several reasons) and the reset that follows, plus a broker start and a security
//! alert now and then; and the sessions' ended leases. Deterministic for a seed.
use airlock_core::{LeaseId, UnixMillis};
use airlock_store::{AuditRecord, Store, GENESIS_HASH};
use anyhow::{Context, Result};
use serde_json::json;
use std::path::Path;

/// What [`fill_audit`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Filled {
    /// Records appended, and the sequence numbers of the first and last.
    pub records: u64,
    pub first_seq: i64,
    pub last_seq: i64,
    /// Sessions (ended leases) written.
    pub sessions: u64,
    /// The time of the first and the last record (Unix ms).
    pub first_ts: UnixMillis,
    pub last_ts: UnixMillis,
    /// The terminals and users the records name (`term-NN`, `user-NNN`).
    pub terminals: Vec<String>,
    pub users: Vec<String>,
}

/// How to fill.
#[derive(Debug, Clone)]
pub struct FillSpec {
    /// Records to append (the last session may be cut short to hit it exactly).
    pub records: u64,
    /// The first record's time; each next one is 1 to 20 s later.
    pub start_ts: UnixMillis,
    /// The desktops the sessions run on (the broker's configured ids, e.g. `desk-01`).
    pub desktops: Vec<String>,
    /// How many distinct terminals and users.
    pub terminals: usize,
    pub users: usize,
    pub seed: u64,
}

impl FillSpec {
    /// `records` records over 40 terminals and 400 users on `desk-01`..`desk-04`.
    pub fn new(records: u64) -> FillSpec {
        FillSpec {
            records,
            start_ts: 1_700_000_000_000,
            desktops: (1..=4).map(|i| format!("desk-{i:02}")).collect(),
            terminals: 40,
            users: 400,
            seed: 1,
        }
    }
}

/// A small deterministic generator (xorshift64*).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// One record before it is chained.
struct Draft {
    action: &'static str,
    terminal: Option<String>,
    user: Option<String>,
    desktop: Option<String>,
    lease: Option<String>,
    details: serde_json::Value,
}

/// The records of one session (and what happens around it).
fn session(rng: &mut Rng, spec: &FillSpec, n: u64, out: &mut Vec<Draft>) -> LeaseRowDraft {
    let t = format!("term-{:02}", rng.below(spec.terminals as u64));
    let u = format!("user-{:03}", rng.below(spec.users as u64));
    let d =
        spec.desktops[usize::try_from(rng.below(spec.desktops.len() as u64)).unwrap_or(0)].clone();
    let mut lid = [0u8; 16];
    lid[..8].copy_from_slice(&n.to_be_bytes());
    lid[8..].copy_from_slice(&rng.next().to_be_bytes());
    let l = LeaseId::from_random(lid).to_string();
    let rec = |action: &'static str, lease: bool, details: serde_json::Value| Draft {
        action,
        terminal: Some(t.clone()),
        user: Some(u.clone()),
        desktop: Some(d.clone()),
        lease: lease.then(|| l.clone()),
        details,
    };
    let waited = rng.below(5) == 0;
    let ticket = format!("{:032x}", u128::from(rng.next()));
    if waited {
        out.push(Draft {
            desktop: None,
            ..rec(
                "queue_joined",
                false,
                json!({"ticket": ticket, "position": 1, "waiting": 1}),
            )
        });
    }
    let waited_ms = 3000 + rng.below(60_000) as i64;
    out.push(rec(
        "lease_granted",
        true,
        if waited {
            json!({"ticket": ticket, "waited_ms": waited_ms})
        } else {
            json!({})
        },
    ));
    if waited {
        out.push(rec(
            "queue_left",
            true,
            json!({"ticket": ticket, "reason": "granted", "waited_ms": waited_ms}),
        ));
    }
    out.push(rec(
        "display_connected",
        true,
        json!({"protocol": "spice", "back_after_s": null}),
    ));
    out.push(rec("usb_stream_opened", true, json!({"kind": "drive", "vid": "0e8d", "pid": "1887", "vendor": "HL-DT-ST", "product": "DVDRAM", "serial": format!("K{:08}", rng.below(1 << 24))})));
    if rng.below(50) == 0 {
        out.push(rec(
            "usb_refused",
            true,
            json!({"reason": "interface 03:01:01 is not mass storage"}),
        ));
        out.push(rec("usb_stream_closed", true, json!({"end": "error: refused", "bytes_to_desktop": 120, "bytes_to_terminal": 80, "seconds": 0.2})));
    } else {
        out.push(rec(
            "usb_attached",
            true,
            json!({"vid": "0e8d", "pid": "1887", "device_class": 0, "interfaces": ["08:06:50"]}),
        ));
        out.push(rec("usb_detached", true, json!({})));
        out.push(rec("usb_stream_closed", true, json!({"end": "terminal_closed", "bytes_to_desktop": rng.below(1 << 30), "bytes_to_terminal": rng.below(1 << 20), "seconds": rng.below(3600)})));
    }
    out.push(rec(
        "display_disconnected",
        true,
        json!({"connected_s": rng.below(3600), "grace_s": 30.0}),
    ));
    let reason = match rng.below(20) {
        0 => "expired",
        1 => "display_lost",
        2 => "signed_out",
        3 => "desktop_lost",
        _ => "released",
    };
    out.push(rec(
        "lease_ended",
        true,
        json!({"reason": reason, "held_ms": rng.below(3_600_000)}),
    ));
    let reset = |action: &'static str, details| Draft {
        action,
        terminal: None,
        user: None,
        desktop: Some(d.clone()),
        lease: None,
        details,
    };
    out.push(reset(
        "reset_started",
        json!({"from": "dirty", "to": "resetting", "plan": ["template_clone", "rebuild"]}),
    ));
    out.push(reset("desktop_reset", json!({"method": "template_clone", "duration_ms": 150 + rng.below(200), "proof": {"vmgenid": format!("{:032x}", u128::from(rng.next()))}})));
    if rng.below(100) == 0 {
        out.push(Draft {
            action: "security_alert",
            terminal: Some(t.clone()),
            user: None,
            desktop: None,
            lease: None,
            details: json!({"kind": "terminal_unguarded", "accepted": rng.below(2) == 0, "problems": ["usb-storage is loaded"]}),
        });
    }
    if rng.below(500) == 0 {
        out.push(reset("broker_started", json!({"version": "0.1.0"})));
    }
    LeaseRowDraft {
        id: l,
        desktop: d,
        terminal: t,
        user: u,
        reason,
    }
}

struct LeaseRowDraft {
    id: String,
    desktop: String,
    terminal: String,
    user: String,
    reason: &'static str,
}

/// Appends `spec.records` valid, chained audit records (and their sessions' leases) to
/// the database at `db` (created and migrated if missing). Run it while no broker uses
/// the database. One transaction; a million records take seconds.
pub fn fill_audit(db: &Path, spec: &FillSpec) -> Result<Filled> {
    let store = Store::open(db).with_context(|| format!("open {}", db.display()))?;
    let (head_seq, head_hash) = store.audit_head()?;
    let c = store.connection_for_tests();
    // The sessions' desktops need not exist yet (the broker adds its configured ones).
    c.execute_batch("PRAGMA foreign_keys = OFF; BEGIN IMMEDIATE;")?;
    // The search indexes are built once at the end (faster than row by row); their SQL
    // is the schema's own, so they come back exactly as they were.
    let indexes: Vec<(String, String)> = {
        let mut st = c.prepare(
            "SELECT name, sql FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL
             AND tbl_name IN ('audit', 'leases') AND sql NOT LIKE '%UNIQUE%' AND sql NOT LIKE '%WHERE%'",
        )?;
        let rows = st.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
        rows.collect::<Result<_, _>>()?
    };
    for (name, _) in &indexes {
        c.execute_batch(&format!("DROP INDEX \"{name}\";"))?;
    }
    let mut ins = c.prepare(
        "INSERT INTO audit (seq, ts, action, terminal, user, desktop_id, lease_id, details, prev_hash, hash)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
    )?;
    let mut lease_ins = c.prepare(
        "INSERT INTO leases (id, desktop_id, terminal, user, created_at, heartbeat_at, ended_at, end_reason)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    )?;
    let mut rng = Rng(spec.seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    let mut prev = if head_seq == 0 {
        GENESIS_HASH.to_owned()
    } else {
        head_hash
    };
    let (mut seq, mut ts) = (head_seq, spec.start_ts);
    let mut written = 0u64;
    let mut sessions = 0u64;
    let mut batch = Vec::new();
    let mut first_ts = None;
    while written < spec.records {
        batch.clear();
        let lease = session(&mut rng, spec, written, &mut batch);
        let (mut granted, mut ended) = (None, None);
        for d in batch.drain(..) {
            if written == spec.records {
                break;
            }
            seq += 1;
            ts += 1000 + rng.below(19_000) as i64;
            let rec = AuditRecord {
                seq,
                ts,
                action: d.action.to_owned(),
                terminal: d.terminal,
                user: d.user,
                desktop: d.desktop,
                lease: d.lease,
                details: d.details.to_string(),
                prev_hash: prev.clone(),
                hash: String::new(),
            };
            let hash = rec.expected_hash(&prev);
            ins.execute(rusqlite::params![
                rec.seq,
                rec.ts,
                rec.action,
                rec.terminal,
                rec.user,
                rec.desktop,
                rec.lease,
                rec.details,
                rec.prev_hash,
                hash
            ])?;
            match d.action {
                "lease_granted" => granted = Some(ts),
                "lease_ended" => ended = Some(ts),
                _ => {}
            }
            first_ts.get_or_insert(ts);
            prev = hash;
            written += 1;
        }
        if let (Some(g), Some(e)) = (granted, ended) {
            lease_ins.execute(rusqlite::params![
                lease.id,
                lease.desktop,
                lease.terminal,
                lease.user,
                g,
                e,
                e,
                lease.reason
            ])?;
            sessions += 1;
        }
    }
    drop(ins);
    drop(lease_ins);
    for (_, sql) in &indexes {
        c.execute_batch(sql)?;
    }
    c.execute_batch("COMMIT; PRAGMA foreign_keys = ON;")?;
    Ok(Filled {
        records: written,
        first_seq: head_seq + 1,
        last_seq: seq,
        sessions,
        first_ts: first_ts.unwrap_or(ts),
        last_ts: ts,
        terminals: (0..spec.terminals)
            .map(|i| format!("term-{i:02}"))
            .collect(),
        users: (0..spec.users).map(|i| format!("user-{i:03}")).collect(),
    })
}
