//! The audit trail's searches, sessions, export and incremental verification
//! (`airlock_store::{reader, export, verify}`), against a brute-force model.
#![allow(clippy::unwrap_used)]
use airlock_core::{DesktopId, EndReason, LeaseId, ResetMethod, TerminalName, UserName};
use airlock_store::atna::{self, Outcome};
use airlock_store::{
    AuditEntry, AuditFilter, AuditQuery, AuditRecord, ChainMonitor, ExportFormat, Reader,
    ResetRecord, SessionCursor, SessionFilter, SessionQuery, Store,
};
use serde_json::json;

const TERMS: [&str; 3] = ["t1", "t2", "t3"];
const USERS: [&str; 4] = ["alice", "bob", "carol", "dave"];
const DESKS: [&str; 2] = ["desk-01", "desk-02"];

/// A store with `n` free-standing records of varied fields, times 10 ms apart from 1000.
fn varied(n: i64) -> Store {
    let mut s = Store::open_in_memory().unwrap();
    fill_varied(&mut s, n);
    s
}

fn fill_varied(s: &mut Store, n: i64) {
    let actions = [
        ("lease_ended", json!({"reason": "released"})),
        ("lease_ended", json!({"reason": "expired"})),
        ("lease_ended", json!({"reason": "quota"})),
        (
            "security_alert",
            json!({"accepted": true, "problems": ["usb 100% _x_"]}),
        ),
        ("security_alert", json!({"accepted": false})),
        ("usb_attached", json!({"vid": "0e8d"})),
        ("usb_stream_closed", json!({"end": "error: refused"})),
        ("desktop_reset", json!({"method": "rebuild"})),
        ("audit_viewed", json!({})),
        ("something_new", json!({})),
        ("queue_left", json!({"reason": "hold_expired"})),
    ];
    for i in 0..n {
        let u = usize::try_from(i).unwrap();
        let (a, d) = &actions[u % actions.len()];
        let mut e = AuditEntry::new(a).details(d.clone());
        if i % 5 != 0 {
            e = e.terminal(TERMS[u % 3]);
        }
        if i % 7 != 0 {
            e = e.user(USERS[u % 4]);
        }
        if i % 2 == 0 {
            e = e.desktop(DESKS[(u / 2) % 2]);
        }
        if i % 3 == 0 {
            e = e.lease(LeaseId::from_random([u8::try_from(i % 4).unwrap(); 16]));
        }
        s.audit(1000 + i * 10, e).unwrap();
    }
}

fn all(s: &Store) -> Vec<AuditRecord> {
    s.audit_tail(1_000_000).unwrap()
}

/// The model: does `r` match `f`?
fn matches(r: &AuditRecord, f: &AuditFilter) -> bool {
    let eq = |a: &Option<String>, b: &Option<String>| b.is_none() || a == b;
    let ev = atna::classify_text(&r.action, &r.details);
    eq(&r.terminal, &f.terminal)
        && eq(&r.user, &f.user)
        && eq(&r.desktop, &f.desktop)
        && eq(&r.lease, &f.lease)
        && (f.actions.is_empty() || f.actions.contains(&r.action))
        && f.event_id.is_none_or(|c| ev.event_id.code == c)
        && f.outcome.is_none_or(|o| ev.outcome == o)
        && f.from.is_none_or(|t| r.ts >= t)
        && f.to.is_none_or(|t| r.ts < t)
        && f.text
            .as_ref()
            .is_none_or(|t| r.details.to_lowercase().contains(&t.to_lowercase()))
}

/// Pages through a search; checks every page's shape; returns the seqs, newest first.
fn page_all(s: &Store, f: &AuditFilter, limit: usize) -> Vec<i64> {
    let mut out = Vec::new();
    let mut before = None;
    loop {
        let p = s
            .search_audit(&AuditQuery {
                filter: f.clone(),
                before,
                limit,
            })
            .unwrap();
        assert!(p.records.len() <= limit);
        for r in &p.records {
            assert_eq!(
                r.atna,
                atna::classify_text(&r.record.action, &r.record.details)
            );
        }
        out.extend(p.records.iter().map(|r| r.record.seq));
        match p.next_before {
            Some(b) => {
                assert_eq!(p.records.len(), limit, "a page before the last is full");
                assert_eq!(Some(b), out.last().copied());
                before = Some(b);
            }
            None => return out,
        }
    }
}

fn filters() -> Vec<AuditFilter> {
    let mut v = vec![AuditFilter::default()];
    let base = AuditFilter::default();
    for t in TERMS.iter().chain(["nobody"].iter()) {
        v.push(AuditFilter {
            terminal: Some(t.to_string()),
            ..base.clone()
        });
    }
    for u in USERS {
        v.push(AuditFilter {
            user: Some(u.into()),
            ..base.clone()
        });
        v.push(AuditFilter {
            user: Some(u.into()),
            terminal: Some("t2".into()),
            from: Some(1500),
            to: Some(3000),
            ..base.clone()
        });
    }
    for d in DESKS {
        v.push(AuditFilter {
            desktop: Some(d.into()),
            ..base.clone()
        });
    }
    for i in 0..4u8 {
        v.push(AuditFilter {
            lease: Some(LeaseId::from_random([i; 16]).to_string()),
            ..base.clone()
        });
    }
    v.push(AuditFilter {
        actions: vec!["lease_ended".into(), "usb_attached".into()],
        ..base.clone()
    });
    for e in atna::event::ALL {
        v.push(AuditFilter {
            event_id: Some(e.code),
            ..base.clone()
        });
    }
    for o in Outcome::ALL {
        v.push(AuditFilter {
            outcome: Some(o),
            ..base.clone()
        });
        v.push(AuditFilter {
            outcome: Some(o),
            user: Some("bob".into()),
            ..base.clone()
        });
    }
    for (from, to) in [
        (None, Some(1000)),
        (Some(1000), Some(1001)),
        (Some(1234), None),
        (Some(2000), Some(2500)),
    ] {
        v.push(AuditFilter {
            from,
            to,
            ..base.clone()
        });
    }
    for t in ["100% _x_", "0E8D", "%", "_", "rebuild", "\\"] {
        v.push(AuditFilter {
            text: Some(t.into()),
            ..base.clone()
        });
    }
    v
}

#[test]
fn search_pages_match_the_model_for_every_filter() {
    let s = varied(240);
    let records = all(&s);
    assert_eq!(records.len(), 240);
    for f in filters() {
        let mut want: Vec<i64> = records
            .iter()
            .filter(|r| matches(r, &f))
            .map(|r| r.seq)
            .collect();
        want.reverse();
        for limit in [1, 7, 50, 1000] {
            assert_eq!(page_all(&s, &f, limit), want, "{f:?} limit {limit}");
        }
        let p = s
            .search_audit(&AuditQuery {
                filter: f.clone(),
                before: None,
                limit: 5,
            })
            .unwrap();
        assert_eq!(p.total, want.len() as u64, "{f:?}");
        assert!(p.total_exact);
    }
}

#[test]
fn limits_are_clamped_and_counts_capped() {
    let s = varied(30);
    let p = s
        .search_audit(&AuditQuery {
            limit: 0,
            ..AuditQuery::default()
        })
        .unwrap();
    assert_eq!(p.records.len(), 1);
    let p = s
        .search_audit(&AuditQuery {
            limit: 1_000_000,
            ..AuditQuery::default()
        })
        .unwrap();
    assert_eq!(p.records.len(), 30);
    assert_eq!(p.next_before, None);
    // Newest first.
    assert!(p
        .records
        .windows(2)
        .all(|w| w[0].record.seq > w[1].record.seq));

    let mut big = Store::open_in_memory().unwrap();
    for i in 0..(airlock_store::reader::COUNT_CAP as i64 + 5) {
        big.audit(i, AuditEntry::new("x")).unwrap();
    }
    let p = big
        .search_audit(&AuditQuery {
            limit: 10,
            ..AuditQuery::default()
        })
        .unwrap();
    assert_eq!(p.total, airlock_store::reader::COUNT_CAP);
    assert!(!p.total_exact);
}

fn ready(s: &mut Store, id: &DesktopId, now: i64) {
    s.reset_succeeded(
        id,
        now,
        &ResetRecord {
            method: ResetMethod::Rebuild,
            duration_ms: 5,
            proof: json!({}),
        },
    )
    .unwrap();
}

/// Leases granted at 100, 200, ... alternating terminals and users, each ended 50 ms
/// later (but the last, active).
fn sessions_store(n: u8) -> (Store, Vec<LeaseId>) {
    let mut s = Store::open_in_memory().unwrap();
    let ids: Vec<DesktopId> = DESKS.iter().map(|d| DesktopId::parse(d).unwrap()).collect();
    s.sync_pool(&ids, 1).unwrap();
    ready(&mut s, &ids[0], 2);
    ready(&mut s, &ids[1], 2);
    let mut leases = Vec::new();
    for i in 0..n {
        let l = LeaseId::from_random([i + 1; 16]);
        let t = TerminalName::parse(TERMS[usize::from(i) % 3]).unwrap();
        let u = UserName::parse(USERS[usize::from(i) % 4]).unwrap();
        let now = 100 * i64::from(i + 1);
        s.acquire(&l, &t, &u, now).unwrap();
        if i + 1 < n {
            let row = s
                .end_lease(&l, None, EndReason::Released, now + 50, json!({}))
                .unwrap();
            let d = row.desktop.clone();
            s.transition(
                &d,
                airlock_core::DesktopEvent::BeginReset,
                now + 60,
                None,
                AuditEntry::new("reset_started"),
            )
            .unwrap();
            s.reset_succeeded(
                &d,
                now + 70,
                &ResetRecord {
                    method: ResetMethod::TemplateClone,
                    duration_ms: 10,
                    proof: json!({}),
                },
            )
            .unwrap();
        }
        leases.push(l);
    }
    (s, leases)
}

fn page_sessions(s: &Store, f: &SessionFilter, limit: usize) -> Vec<String> {
    let mut out = Vec::new();
    let mut after = None;
    loop {
        let p = s
            .sessions(&SessionQuery {
                filter: f.clone(),
                after,
                limit,
            })
            .unwrap();
        out.extend(p.sessions.iter().map(|x| x.lease.id.to_string()));
        match p.next {
            Some(n) => after = Some(SessionCursor::parse(&n).unwrap()),
            None => return out,
        }
    }
}

#[test]
fn sessions_page_newest_first_with_filters() {
    let (s, leases) = sessions_store(13);
    let newest_first: Vec<String> = leases.iter().rev().map(|l| l.to_string()).collect();
    for limit in [1, 2, 5, 100] {
        assert_eq!(
            page_sessions(&s, &SessionFilter::default(), limit),
            newest_first
        );
    }
    for (i, t) in TERMS.iter().enumerate() {
        let want: Vec<String> = newest_first
            .iter()
            .enumerate()
            .filter(|(j, _)| (12 - j) % 3 == i)
            .map(|(_, l)| l.clone())
            .collect();
        let f = SessionFilter {
            terminal: Some(t.to_string()),
            ..SessionFilter::default()
        };
        assert_eq!(page_sessions(&s, &f, 2), want, "{t}");
    }
    let f = SessionFilter {
        user: Some("alice".into()),
        ..SessionFilter::default()
    };
    // Leases 0, 4, 8, 12 (i % 4 == 0).
    assert_eq!(page_sessions(&s, &f, 3).len(), 4);
    // Live at [420, 650): lease i lives [100(i+1), 100(i+1)+50): i = 3 (400..450), 4, 5.
    let f = SessionFilter {
        from: Some(420),
        to: Some(650),
        ..SessionFilter::default()
    };
    let got = page_sessions(&s, &f, 10);
    let want: Vec<String> = [5usize, 4, 3]
        .iter()
        .map(|i| leases[*i].to_string())
        .collect();
    assert_eq!(got, want);
    let f = SessionFilter {
        active: Some(true),
        ..SessionFilter::default()
    };
    assert_eq!(page_sessions(&s, &f, 10), vec![leases[12].to_string()]);
    let f = SessionFilter {
        desktop: Some("desk-02".into()),
        active: Some(false),
        ..SessionFilter::default()
    };
    assert!(page_sessions(&s, &f, 10).iter().all(|l| s
        .lease(&LeaseId::parse(l).unwrap())
        .unwrap()
        .unwrap()
        .desktop
        .as_str()
        == "desk-02"));
}

#[test]
fn a_session_timeline_has_every_step_with_durations() {
    let mut s = Store::open_in_memory().unwrap();
    let d = DesktopId::parse("desk-01").unwrap();
    s.sync_pool(std::slice::from_ref(&d), 1).unwrap();
    ready(&mut s, &d, 2);
    let (t, u) = (
        TerminalName::parse("t1").unwrap(),
        UserName::parse("alice").unwrap(),
    );
    let ticket = airlock_core::TicketId::from_random([9; 16]);
    s.audit(
        100,
        AuditEntry::new("queue_joined")
            .terminal(&t)
            .user(&u)
            .details(json!({"ticket": ticket, "position": 1})),
    )
    .unwrap();
    let l = LeaseId::from_random([1; 16]);
    s.acquire_with(&airlock_store::AcquireRequest {
        lease_id: &l,
        terminal: &t,
        user: &u,
        now: 1100,
        pick: airlock_store::Pick::AnyExcept(&[]),
        reattach_within_ms: None,
        waited: Some(airlock_store::Waited {
            ticket: &ticket,
            waited_ms: 1000,
        }),
        terminal_limit: None,
    })
    .unwrap();
    let on = |a: &str| {
        AuditEntry::new(a)
            .terminal(&t)
            .user(&u)
            .desktop(&d)
            .lease(&l)
    };
    s.audit(1300, on("display_connected")).unwrap();
    s.audit(
        1400,
        on("usb_stream_opened").details(json!({"kind": "drive", "serial": "K1"})),
    )
    .unwrap();
    s.audit(
        1500,
        on("usb_attached").details(json!({"vid": "0e8d", "pid": "1887"})),
    )
    .unwrap();
    s.audit(2000, on("usb_detached")).unwrap();
    s.audit(
        2100,
        on("usb_stream_closed").details(json!({"end": "terminal_closed"})),
    )
    .unwrap();
    s.audit(2300, on("display_disconnected")).unwrap();
    s.end_lease(&l, None, EndReason::Released, 2500, json!({}))
        .unwrap();
    s.transition(
        &d,
        airlock_core::DesktopEvent::BeginReset,
        2510,
        None,
        AuditEntry::new("reset_started"),
    )
    .unwrap();
    s.reset_succeeded(
        &d,
        2700,
        &ResetRecord {
            method: ResetMethod::TemplateClone,
            duration_ms: 190,
            proof: json!({}),
        },
    )
    .unwrap();
    s.audit(2800, on("usb_control_refused").details(json!({"count": 3})))
        .unwrap();
    // The next lease of the desktop is not part of this session.
    s.acquire(&LeaseId::from_random([2; 16]), &t, &u, 3000)
        .unwrap();

    let tl = s.session(&l).unwrap().unwrap();
    let steps: Vec<&str> = tl.timeline.iter().map(|e| e.step.as_str()).collect();
    assert_eq!(
        steps,
        [
            "queued",
            "acquired",
            "queue_left",
            "display_connected",
            "usb_opened",
            "usb_attached",
            "usb_detached",
            "usb_closed",
            "display_disconnected",
            "ended",
            "reset_started",
            "reset",
            "usb_control_refused"
        ]
    );
    let d = &tl.durations;
    assert_eq!(d.waited_ms, Some(1000));
    assert_eq!(d.held_ms, Some(1400));
    assert_eq!(d.to_display_ms, Some(200));
    assert_eq!(d.display_connected_ms, Some(1000));
    assert_eq!(d.reset_ms, Some(200));
    assert_eq!(tl.timeline[0].since_start_ms, 0);
    assert_eq!(tl.timeline[1].since_previous_ms, 1000);
    assert_eq!(tl.timeline.last().unwrap().since_start_ms, 2700);
    assert!(s.session(&LeaseId::from_random([7; 16])).unwrap().is_none());
}

fn file_store() -> (tempfile::TempDir, std::path::PathBuf, Store) {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("airlock.db");
    let s = Store::open(&db).unwrap();
    (dir, db, s)
}

#[test]
fn incremental_verification_hashes_only_new_records() {
    let (_dir, db, mut s) = file_store();
    fill_varied(&mut s, 1000);
    let m = ChainMonitor::with_batch(Reader::open(&db).unwrap(), 64);
    let st = m.check_new().unwrap();
    assert!(st.intact);
    assert_eq!((st.verified_seq, st.verified_records), (1000, 1000));
    assert_eq!(m.records_hashed(), 1000);
    // Nothing new: nothing hashed.
    m.check_new().unwrap();
    assert_eq!(m.records_hashed(), 1000);
    for i in 0..10 {
        s.audit(50_000 + i, AuditEntry::new("x")).unwrap();
    }
    let st = m.check_new().unwrap();
    assert_eq!(st.verified_seq, 1010);
    assert_eq!(m.records_hashed(), 1010, "only the 10 new records");
    assert_eq!(st.verified_hash, s.audit_head().unwrap().1);
    // A full check hashes everything again.
    let st = m.check_full().unwrap();
    assert_eq!(m.records_hashed(), 2020);
    assert!(st.intact && st.last_full.as_ref().unwrap().intact);
    assert_eq!(st.last_full.unwrap().records, 1010);
}

#[test]
fn an_edited_old_row_is_found_by_the_full_check_only_and_named() {
    let (_dir, db, mut s) = file_store();
    fill_varied(&mut s, 300);
    let m = ChainMonitor::new(Reader::open(&db).unwrap());
    assert!(m.check_new().unwrap().intact);
    s.connection_for_tests()
        .execute_batch(
            "DROP TRIGGER audit_no_update; UPDATE audit SET user = 'mallory' WHERE seq = 123;",
        )
        .unwrap();
    s.audit(99_999, AuditEntry::new("later")).unwrap();
    // Already verified: the incremental check does not hash it again.
    let st = m.check_new().unwrap();
    assert!(st.intact);
    assert_eq!(st.verified_seq, 301);
    let st = m.check_full().unwrap();
    assert!(!st.intact);
    let b = st.first_broken.unwrap();
    assert_eq!(b.seq, 123);
    assert!(b.why.contains("hash does not match"), "{}", b.why);
    assert_eq!(st.verified_seq, 122);
    // It stays broken for the incremental checks after it.
    s.audit(100_000, AuditEntry::new("later")).unwrap();
    let st = m.check_new().unwrap();
    assert_eq!(st.first_broken.unwrap().seq, 123);
    // And the store's own full check agrees.
    assert_eq!(s.verify_audit().unwrap().first_broken.unwrap().0, 123);
}

#[test]
fn new_records_that_break_the_chain_are_found_incrementally() {
    let (_dir, db, mut s) = file_store();
    fill_varied(&mut s, 50);
    let m = ChainMonitor::new(Reader::open(&db).unwrap());
    m.check_new().unwrap();
    for i in 0..5 {
        s.audit(90_000 + i, AuditEntry::new("x")).unwrap();
    }
    s.connection_for_tests()
        .execute_batch("DROP TRIGGER audit_no_update; UPDATE audit SET details = '{\"forged\":1}' WHERE seq = 53;")
        .unwrap();
    let st = m.check_new().unwrap();
    assert_eq!(st.first_broken.unwrap().seq, 53);
    assert_eq!(st.verified_seq, 52);
    // Records cut off the end after they were verified.
    let (_dir2, db2, mut s2) = file_store();
    fill_varied(&mut s2, 20);
    let m2 = ChainMonitor::new(Reader::open(&db2).unwrap());
    m2.check_new().unwrap();
    s2.connection_for_tests()
        .execute_batch("DROP TRIGGER audit_no_delete; DELETE FROM audit WHERE seq > 17;")
        .unwrap();
    let st = m2.check_new().unwrap();
    assert!(!st.intact);
    assert!(st.first_broken.unwrap().why.contains("cut off the end"));
}

#[test]
fn reader_searches_agree_with_the_store_and_export_round_trips() {
    let (_dir, db, mut s) = file_store();
    fill_varied(&mut s, 120);
    let r = Reader::open(&db).unwrap();
    let f = AuditFilter {
        user: Some("bob".into()),
        ..AuditFilter::default()
    };
    let q = AuditQuery {
        filter: f.clone(),
        before: None,
        limit: 10,
    };
    assert_eq!(r.search_audit(&q).unwrap(), s.search_audit(&q).unwrap());
    let want: Vec<AuditRecord> = all(&s).into_iter().filter(|x| matches(x, &f)).collect();
    assert!(!want.is_empty());

    // JSON lines: every record, oldest first, with its classification.
    let mut out = Vec::new();
    let n = airlock_store::export_audit(&r, &f, ExportFormat::JsonLines, &mut out).unwrap();
    assert_eq!(n, want.len() as u64);
    let text = String::from_utf8(out).unwrap();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), want.len());
    for (l, w) in lines.iter().zip(&want) {
        assert_eq!(l["seq"], w.seq);
        assert_eq!(l["details"], w.details.as_str());
        assert_eq!(l["hash"], w.hash.as_str());
        assert_eq!(l["user"], "bob");
        assert!(l["atna"]["event_id"]["code"].is_u64());
    }

    // CSV: a header, then the records; quoting survives commas, quotes and newlines.
    s.audit(
        999_999,
        AuditEntry::new("security_alert")
            .user("bob")
            .details(json!({"problems": ["a, \"quoted\"\nline"], "accepted": false})),
    )
    .unwrap();
    let mut out = Vec::new();
    let n = airlock_store::export_audit(&r, &f, ExportFormat::Csv, &mut out).unwrap();
    assert_eq!(n, want.len() as u64 + 1);
    let mut rd = csv::Reader::from_reader(out.as_slice());
    let header: Vec<String> = rd.headers().unwrap().iter().map(str::to_owned).collect();
    assert_eq!(header, airlock_store::export::CSV_HEADER);
    let rows: Vec<csv::StringRecord> = rd.records().map(|x| x.unwrap()).collect();
    assert_eq!(rows.len(), want.len() + 1);
    let last = rows.last().unwrap();
    let col = |name: &str| header.iter().position(|h| h == name).unwrap();
    assert_eq!(&last[col("action")], "security_alert");
    assert_eq!(&last[col("event_id")], "110113");
    assert_eq!(&last[col("outcome")], "8");
    let details: serde_json::Value = serde_json::from_str(&last[col("details")]).unwrap();
    assert_eq!(details["problems"][0], "a, \"quoted\"\nline");
    for (row, w) in rows.iter().zip(&want) {
        assert_eq!(&row[col("seq")], w.seq.to_string());
        assert_eq!(&row[col("details")], w.details);
        assert_eq!(&row[col("prev_hash")], w.prev_hash);
        assert_eq!(
            airlock_store::parse_time_ms(&row[col("time_utc")]),
            Some(w.ts)
        );
    }
}
