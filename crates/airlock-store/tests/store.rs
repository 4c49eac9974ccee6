#![allow(clippy::unwrap_used)]
use airlock_core::{
    DesktopEvent, DesktopId, DesktopState, EndReason, LeaseId, ResetMethod, TerminalName, TicketId,
    UserName,
};
use airlock_store::{AcquireRequest, AuditEntry, Pick, ResetRecord, Store, StoreError, Waited};
use std::sync::{Arc, Barrier};

fn ids(n: usize) -> Vec<DesktopId> {
    (1..=n)
        .map(|i| DesktopId::numbered("desk", i).unwrap())
        .collect()
}

fn lid(n: u8) -> LeaseId {
    LeaseId::from_random([n; 16])
}

fn term(s: &str) -> TerminalName {
    TerminalName::parse(s).unwrap()
}

fn user(s: &str) -> UserName {
    UserName::parse(s).unwrap()
}

fn ready(store: &mut Store, id: &DesktopId, now: i64) {
    store
        .reset_succeeded(
            id,
            now,
            &ResetRecord {
                method: ResetMethod::Rebuild,
                duration_ms: 5,
                proof: serde_json::json!({"test": true}),
            },
        )
        .unwrap();
}

/// Adds `n` desktops to the pool at time 1 and makes them clean at time 2.
fn fill_pool(s: &mut Store, n: usize) -> Vec<DesktopId> {
    let ids = ids(n);
    s.sync_pool(&ids, 1).unwrap();
    for id in &ids {
        ready(s, id, 2);
    }
    ids
}

/// Ends lease `lid(1)` with `reason` and no details, as `terminal` (any if `None`).
fn end_lease_1(
    s: &mut Store,
    terminal: Option<&str>,
    reason: EndReason,
    now: i64,
) -> Result<airlock_store::LeaseRow, StoreError> {
    let terminal = terminal.map(term);
    s.end_lease(
        &lid(1),
        terminal.as_ref(),
        reason,
        now,
        serde_json::json!({}),
    )
}

fn clean_pool(n: usize) -> (Store, Vec<DesktopId>) {
    let mut s = Store::open_in_memory().unwrap();
    let ids = fill_pool(&mut s, n);
    (s, ids)
}

#[test]
fn pool_starts_in_starting_and_becomes_clean() {
    let mut s = Store::open_in_memory().unwrap();
    let d = s.sync_pool(&ids(2), 10).unwrap();
    assert!(d.iter().all(|r| r.state == DesktopState::Starting));
    ready(&mut s, &ids(2)[0], 11);
    let d = s.desktops().unwrap();
    assert_eq!(d[0].state, DesktopState::Clean);
    assert_eq!(d[0].generation, 1);
    assert_eq!(d[0].resets, 0, "a first start is not a reset");
}

#[test]
fn two_acquires_then_no_free_desktop() {
    let (mut s, _) = clean_pool(2);
    let a = s.acquire(&lid(1), &term("t1"), &user("a"), 100).unwrap();
    let b = s.acquire(&lid(2), &term("t1"), &user("b"), 101).unwrap();
    assert_ne!(a.lease.desktop, b.lease.desktop);
    assert!(matches!(
        s.acquire(&lid(3), &term("t1"), &user("c"), 102),
        Err(StoreError::NoFreeDesktop)
    ));
    assert_eq!(s.active_leases().unwrap().len(), 2);
    assert!(s.verify_audit().unwrap().is_intact());
}

#[test]
fn allocation_prefers_longest_clean() {
    let mut s = Store::open_in_memory().unwrap();
    let ids = ids(2);
    s.sync_pool(&ids, 1).unwrap();
    ready(&mut s, &ids[1], 5);
    ready(&mut s, &ids[0], 9);
    let a = s.acquire(&lid(1), &term("t1"), &user("a"), 10).unwrap();
    assert_eq!(a.lease.desktop, ids[1]);
}

#[test]
fn database_refuses_a_second_active_lease_even_from_raw_sql() {
    let (mut s, ids) = clean_pool(1);
    s.acquire(&lid(1), &term("t1"), &user("a"), 100).unwrap();
    let err = s.connection_for_tests().execute(
        "INSERT INTO leases (id, desktop_id, terminal, user, created_at, heartbeat_at) VALUES ('x', ?1, 't', 'u', 1, 1)",
        [ids[0].as_str()],
    );
    assert!(
        err.is_err(),
        "the unique index must refuse a second active lease"
    );
}

#[test]
fn database_refuses_a_desktop_state_that_disagrees_with_its_leases() {
    let (mut s, ids) = clean_pool(2);
    let sql = |s: &Store, q: &str, d: &DesktopId| s.connection_for_tests().execute(q, [d.as_str()]);
    // Leased without a lease.
    assert!(sql(
        &s,
        "UPDATE desktops SET state = 'leased' WHERE id = ?1",
        &ids[1]
    )
    .is_err());
    // A lease on a desktop that is not clean.
    sql(
        &s,
        "UPDATE desktops SET state = 'dirty' WHERE id = ?1",
        &ids[1],
    )
    .unwrap();
    assert!(sql(
        &s,
        "INSERT INTO leases (id, desktop_id, terminal, user, created_at, heartbeat_at) VALUES ('x', ?1, 't', 'u', 1, 1)",
        &ids[1]
    )
    .is_err());
    // A leased desktop cannot go dirty or clean while its lease is active: not by SQL,
    // not by the state machine's `Died` (the race of review defect D8).
    s.acquire(&lid(1), &term("t1"), &user("a"), 100).unwrap();
    for state in ["dirty", "clean", "resetting"] {
        let q = format!("UPDATE desktops SET state = '{state}' WHERE id = ?1");
        assert!(sql(&s, &q, &ids[0]).is_err(), "{state}");
    }
    let died = s.transition(
        &ids[0],
        DesktopEvent::Died,
        200,
        None,
        AuditEntry::new("desktop_died"),
    );
    assert!(died.is_err(), "{died:?}");
    assert_eq!(s.desktop(&ids[0]).unwrap().state, DesktopState::Leased);
    // Ending the lease moves both together.
    s.end_lease(
        &lid(1),
        None,
        EndReason::DesktopLost,
        300,
        serde_json::json!({}),
    )
    .unwrap();
    assert_eq!(s.desktop(&ids[0]).unwrap().state, DesktopState::Dirty);
}

/// An acquire of lease `lid(n)` by `terminal`/`user` at `now` with `pick`, re-attaching
/// within 1000 ms.
fn acquire_req<'a>(
    lease: &'a LeaseId,
    terminal: &'a TerminalName,
    user: &'a UserName,
    now: i64,
    pick: Pick<'a>,
) -> AcquireRequest<'a> {
    AcquireRequest {
        lease_id: lease,
        terminal,
        user,
        now,
        pick,
        reattach_within_ms: Some(1000),
        waited: None,
        terminal_limit: None,
    }
}

#[test]
fn a_terminal_gets_its_live_lease_of_the_same_user_back() {
    let (mut s, _) = clean_pool(2);
    let (t1, t2, a, b) = (term("t1"), term("t2"), user("a"), user("b"));
    let first = s
        .acquire_with(&acquire_req(&lid(1), &t1, &a, 100, Pick::AnyExcept(&[])))
        .unwrap();
    assert!(!first.reattached);
    // The same terminal and user: the same lease, its heartbeat moved, no new desktop.
    let again = s
        .acquire_with(&acquire_req(&lid(2), &t1, &a, 600, Pick::AnyExcept(&[])))
        .unwrap();
    assert!(again.reattached);
    assert_eq!(
        (&again.lease.id, &again.lease.desktop),
        (&lid(1), &first.lease.desktop)
    );
    assert_eq!(again.lease.heartbeat_at, 600);
    assert_eq!(s.lease(&lid(1)).unwrap().unwrap().heartbeat_at, 600);
    assert_eq!(s.active_leases().unwrap().len(), 1);
    let tail = s.audit_tail(1).unwrap();
    assert_eq!(
        (tail[0].action.as_str(), tail[0].lease.as_deref()),
        ("lease_reattached", Some(lid(1).as_str()))
    );
    // Another user on that terminal, or that user elsewhere, gets a new lease.
    let other = s
        .acquire_with(&acquire_req(&lid(3), &t1, &b, 700, Pick::AnyExcept(&[])))
        .unwrap();
    assert!(!other.reattached);
    assert!(matches!(
        s.acquire_with(&acquire_req(&lid(4), &t2, &a, 700, Pick::AnyExcept(&[]))),
        Err(StoreError::NoFreeDesktop)
    ));
    // A lease whose heartbeat is too old is not live: no re-attach (the sweep ends it).
    assert!(matches!(
        s.acquire_with(&acquire_req(&lid(5), &t1, &a, 1_600, Pick::AnyExcept(&[]))),
        Err(StoreError::NoFreeDesktop)
    ));
    assert!(s.verify_audit().unwrap().is_intact());
}

#[test]
fn held_desktops_are_left_out_and_the_holder_gets_exactly_its_own() {
    let (mut s, ids) = clean_pool(2);
    let (t1, t2, t3, a) = (term("t1"), term("t2"), term("t3"), user("a"));
    // desk-01 is held: a plain acquire takes desk-02, then finds nothing.
    let held = [ids[0].clone()];
    let got = s
        .acquire_with(&acquire_req(&lid(1), &t1, &a, 10, Pick::AnyExcept(&held)))
        .unwrap();
    assert_eq!(got.lease.desktop, ids[1]);
    assert!(matches!(
        s.acquire_with(&acquire_req(&lid(2), &t2, &a, 11, Pick::AnyExcept(&held))),
        Err(StoreError::NoFreeDesktop)
    ));
    // The holder leases exactly desk-01; the audit says how long it waited.
    let ticket = TicketId::from_random([9; 16]);
    let l3 = lid(3);
    let mut req = acquire_req(&l3, &t3, &a, 12, Pick::Exactly(&ids[0]));
    req.waited = Some(Waited {
        ticket: &ticket,
        waited_ms: 4_000,
    });
    assert_eq!(s.acquire_with(&req).unwrap().lease.desktop, ids[0]);
    let tail = s.audit_tail(2).unwrap();
    assert_eq!(tail[0].action, "lease_granted");
    let granted: serde_json::Value = serde_json::from_str(&tail[0].details).unwrap();
    assert_eq!(granted["waited_ms"], 4_000);
    assert_eq!(granted["ticket"], ticket.as_str());
    assert_eq!(tail[1].action, "queue_left");
    let left: serde_json::Value = serde_json::from_str(&tail[1].details).unwrap();
    assert_eq!(left["reason"], "granted");
    assert_eq!(tail[1].desktop.as_deref(), Some(ids[0].as_str()));
    // A desktop that is not clean cannot be taken "exactly" either.
    assert!(matches!(
        s.acquire_with(&acquire_req(&lid(4), &t2, &a, 13, Pick::Exactly(&ids[1]))),
        Err(StoreError::NoFreeDesktop)
    ));
    assert!(s.verify_audit().unwrap().is_intact());
}

/// Runs `f(i, own connection)` on `n` threads released together against a pool of
/// `desktops`; returns the database path (in `dir`) and the non-`None` answers.
fn race_connections<T: Send + 'static>(
    dir: &tempfile::TempDir,
    desktops: usize,
    n: usize,
    f: impl Fn(usize, &mut Store) -> Option<T> + Send + Sync + 'static,
) -> (std::path::PathBuf, Vec<T>) {
    let path = dir.path().join("airlock.db");
    fill_pool(&mut Store::open(&path).unwrap(), desktops);
    let barrier = Arc::new(Barrier::new(n));
    let f = Arc::new(f);
    let handles: Vec<_> = (0..n)
        .map(|i| {
            let (path, barrier, f) = (path.clone(), barrier.clone(), f.clone());
            std::thread::spawn(move || {
                let mut s = Store::open(&path).unwrap();
                barrier.wait();
                f(i, &mut s)
            })
        })
        .collect();
    let won = handles
        .into_iter()
        .filter_map(|h| h.join().unwrap())
        .collect();
    (path, won)
}

#[test]
fn concurrent_acquires_from_many_connections_grant_exactly_the_pool() {
    let dir = tempfile::tempdir().unwrap();
    let (path, mut won) = race_connections(&dir, 2, 40, |i, s| {
        let id = lid(u8::try_from(i).unwrap());
        match s.acquire(&id, &term("t1"), &user("u"), 100) {
            Ok(a) => Some(a.lease.desktop),
            Err(StoreError::NoFreeDesktop) => None,
            Err(e) => panic!("unexpected {e}"),
        }
    });
    assert_eq!(won.len(), 2);
    won.sort();
    won.dedup();
    assert_eq!(won.len(), 2, "two different desktops");
    let s = Store::open(&path).unwrap();
    assert!(s.verify_audit().unwrap().is_intact());
}

#[test]
fn heartbeat_and_end_are_for_the_holder_only() {
    let (mut s, _) = clean_pool(1);
    let a = s.acquire(&lid(1), &term("t1"), &user("a"), 100).unwrap();
    assert!(matches!(
        s.heartbeat(&lid(1), &term("t2"), 150, 1_000),
        Err(StoreError::LeaseNotFound)
    ));
    assert!(matches!(
        end_lease_1(&mut s, Some("t2"), EndReason::Released, 150),
        Err(StoreError::LeaseNotFound)
    ));
    let hb = s.heartbeat(&lid(1), &term("t1"), 200, 1_000).unwrap();
    assert_eq!(hb.heartbeat_at, 200);
    // heartbeats never move backwards
    assert_eq!(
        s.heartbeat(&lid(1), &term("t1"), 120, 1_000)
            .unwrap()
            .heartbeat_at,
        200
    );
    // a lease past its timeout cannot be revived, even before the sweeper ends it
    assert!(matches!(
        s.heartbeat(&lid(1), &term("t1"), 1_200, 1_000),
        Err(StoreError::LeaseNotFound)
    ));
    let ended = end_lease_1(&mut s, Some("t1"), EndReason::Released, 300).unwrap();
    assert_eq!(ended.end_reason, Some(EndReason::Released));
    assert_eq!(
        s.desktop(&a.lease.desktop).unwrap().state,
        DesktopState::Dirty
    );
    assert!(matches!(
        s.heartbeat(&lid(1), &term("t1"), 400, 1_000),
        Err(StoreError::LeaseNotFound)
    ));
    assert!(matches!(
        end_lease_1(&mut s, None, EndReason::Released, 400),
        Err(StoreError::LeaseNotFound)
    ));
    // dirty is not allocatable
    assert!(matches!(
        s.acquire(&lid(2), &term("t1"), &user("a"), 500),
        Err(StoreError::NoFreeDesktop)
    ));
}

#[test]
fn expiry_and_reset_cycle() {
    let (mut s, ids) = clean_pool(1);
    s.acquire(&lid(1), &term("t1"), &user("a"), 100).unwrap();
    assert!(s.expired_leases(1_099, 1_000).unwrap().is_empty());
    let exp = s.expired_leases(1_100, 1_000).unwrap();
    assert_eq!(exp.len(), 1);
    assert_eq!(exp[0].id, lid(1));
    end_lease_1(&mut s, None, EndReason::Expired, 1_100).unwrap();
    s.transition(
        &ids[0],
        DesktopEvent::BeginReset,
        1_101,
        None,
        AuditEntry::new("reset_started"),
    )
    .unwrap();
    s.reset_succeeded(
        &ids[0],
        1_200,
        &ResetRecord {
            method: ResetMethod::TemplateClone,
            duration_ms: 99,
            proof: serde_json::json!({"vmgenid": "x"}),
        },
    )
    .unwrap();
    let d = s.desktop(&ids[0]).unwrap();
    assert_eq!(d.state, DesktopState::Clean);
    assert_eq!(d.resets, 1);
    assert_eq!(d.last_reset_ms, Some(99));
    assert_eq!(d.last_reset_method.as_deref(), Some("template_clone"));
    s.acquire(&lid(2), &term("t1"), &user("a"), 1_300).unwrap();
}

#[test]
fn illegal_transitions_change_nothing() {
    let (mut s, ids) = clean_pool(1);
    let before = s.verify_audit().unwrap().records;
    let e = s.transition(
        &ids[0],
        DesktopEvent::BeginReset,
        5,
        None,
        AuditEntry::new("x"),
    );
    assert!(matches!(e, Err(StoreError::Transition { .. })));
    assert_eq!(s.desktop(&ids[0]).unwrap().state, DesktopState::Clean);
    assert_eq!(s.verify_audit().unwrap().records, before);
}

#[test]
fn resume_leases_after_restart() {
    let (mut s, _) = clean_pool(1);
    s.acquire(&lid(1), &term("t1"), &user("a"), 100).unwrap();
    assert_eq!(s.resume_leases(5_000).unwrap(), 1);
    assert!(s.expired_leases(5_500, 1_000).unwrap().is_empty());
}

#[test]
fn pool_shrink_retires_unleased_desktops() {
    let (mut s, ids) = clean_pool(3);
    s.acquire(&lid(1), &term("t1"), &user("a"), 100).unwrap(); // desk-01 (all since=2: by id)
    let d = s.sync_pool(&ids[1..2], 200).unwrap();
    let names: Vec<_> = d.iter().map(|r| r.id.as_str().to_owned()).collect();
    assert_eq!(
        names,
        vec!["desk-01", "desk-02"],
        "leased desk-01 stays until released"
    );
    let d = s.sync_pool(&ids, 300).unwrap();
    assert_eq!(d.len(), 3);
    assert_eq!(
        d[2].state,
        DesktopState::Dirty,
        "a returning desktop must be reset first"
    );
}

#[test]
fn audit_chain_detects_tampering() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a.db");
    let mut s = Store::open(&path).unwrap();
    fill_pool(&mut s, 2);
    s.acquire(&lid(1), &term("t1"), &user("alice"), 100)
        .unwrap();
    end_lease_1(&mut s, None, EndReason::Released, 200).unwrap();
    let report = s.verify_audit().unwrap();
    assert!(report.is_intact());
    assert_eq!(report.records, 6);
    assert_eq!(s.audit_tail(1).unwrap()[0].hash, report.head);

    // This program cannot rewrite history...
    let c = s.connection_for_tests();
    assert!(c
        .execute("UPDATE audit SET user = 'mallory' WHERE seq = 5", [])
        .is_err());
    assert!(c.execute("DELETE FROM audit WHERE seq = 5", []).is_err());
    // ...and someone who drops the triggers is caught by the chain.
    c.execute_batch("DROP TRIGGER audit_no_update; DROP TRIGGER audit_no_delete;")
        .unwrap();
    c.execute("UPDATE audit SET user = 'mallory' WHERE seq = 5", [])
        .unwrap();
    let r = s.verify_audit().unwrap();
    assert_eq!(r.first_broken.as_ref().unwrap().0, 5);

    // Deleting a record in the middle is reported at the gap.
    let dir2 = tempfile::tempdir().unwrap();
    let p2 = dir2.path().join("b.db");
    let mut s2 = Store::open(&p2).unwrap();
    for i in 0..5 {
        s2.audit(i, AuditEntry::new("x")).unwrap();
    }
    let c2 = s2.connection_for_tests();
    c2.execute_batch("DROP TRIGGER audit_no_delete; DELETE FROM audit WHERE seq = 3;")
        .unwrap();
    let r2 = s2.verify_audit().unwrap();
    assert_eq!(r2.first_broken.unwrap().0, 4);
}

#[test]
fn read_only_open_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a.db");
    {
        let mut s = Store::open(&path).unwrap();
        s.audit(1, AuditEntry::new("broker_started")).unwrap();
    }
    let ro = Store::open_read_only(&path).unwrap();
    assert!(ro.verify_audit().unwrap().is_intact());
}

#[test]
fn a_terminal_at_its_lease_limit_is_refused_in_the_acquire_transaction() {
    let mut s = Store::open_in_memory().unwrap();
    fill_pool(&mut s, 3);
    let (t1, t2) = (term("t1"), term("t2"));
    let (alice, bob) = (user("alice"), user("bob"));
    let limited = |lease, terminal, user, now| AcquireRequest {
        terminal_limit: Some(1),
        ..acquire_req(lease, terminal, user, now, Pick::AnyExcept(&[]))
    };
    let (l1, l2, l3) = (lid(1), lid(2), lid(3));
    s.acquire_with(&limited(&l1, &t1, &alice, 10)).unwrap();
    let records = s.verify_audit().unwrap().records;
    // Another user at the same terminal: refused, and nothing is written.
    match s.acquire_with(&limited(&l2, &t1, &bob, 11)) {
        Err(StoreError::LeaseLimit { held: 1, limit: 1 }) => {}
        other => panic!("{other:?}"),
    }
    assert_eq!(s.verify_audit().unwrap().records, records);
    assert_eq!(s.active_leases().unwrap().len(), 1);
    // The same user gets the live lease back: a re-attach is not a new lease.
    let again = s.acquire_with(&limited(&l2, &t1, &alice, 12)).unwrap();
    assert!(again.reattached && again.lease.id == l1);
    // Another terminal is not affected; a higher limit allows more.
    s.acquire_with(&limited(&l3, &t2, &bob, 13)).unwrap();
    let two = AcquireRequest {
        terminal_limit: Some(2),
        ..acquire_req(&l2, &t1, &bob, 14, Pick::AnyExcept(&[]))
    };
    s.acquire_with(&two).unwrap();
    // Once a lease ends, the terminal may lease again.
    end_lease_1(&mut s, None, EndReason::Released, 15).unwrap();
    let l4 = lid(4);
    match s.acquire_with(&limited(&l4, &t1, &alice, 16)) {
        Err(StoreError::LeaseLimit { held: 1, limit: 1 }) => {}
        other => panic!("still one active (bob's): {other:?}"),
    }
    assert!(s.verify_audit().unwrap().is_intact());
}

#[test]
fn anchors_catch_records_cut_off_the_end_and_a_rewritten_tail() {
    use airlock_store::{Anchor, AnchorCheck, GENESIS_HASH};
    let dir = tempfile::tempdir().unwrap();
    let mut s = Store::open(&dir.path().join("a.db")).unwrap();
    assert_eq!(s.audit_head().unwrap(), (0, GENESIS_HASH.to_owned()));
    for i in 0..8 {
        s.audit(i, AuditEntry::new("x")).unwrap();
    }
    let (seq, hash) = s.audit_head().unwrap();
    assert_eq!(seq, 8);
    assert_eq!(s.audit_hash_at(8).unwrap().as_deref(), Some(hash.as_str()));
    assert_eq!(s.audit_hash_at(9).unwrap(), None);
    let anchor = Anchor {
        ts: 8,
        seq,
        hash,
        why: "shutdown".into(),
    };
    assert_eq!(s.check_anchor(&anchor).unwrap(), AnchorCheck::Holds);
    let mid = Anchor {
        seq: 4,
        hash: s.audit_hash_at(4).unwrap().unwrap(),
        ..anchor.clone()
    };
    s.audit(9, AuditEntry::new("later")).unwrap();
    assert!(
        s.check_anchor(&anchor).unwrap().holds(),
        "newer records are fine"
    );

    // Someone drops the trigger and deletes the newest three records: the chain alone
    // still verifies, the anchor does not.
    s.connection_for_tests()
        .execute_batch("DROP TRIGGER audit_no_delete; DELETE FROM audit WHERE seq > 6;")
        .unwrap();
    assert!(s.verify_audit().unwrap().is_intact());
    assert_eq!(
        s.check_anchor(&anchor).unwrap(),
        AnchorCheck::Truncated { last_seq: 6 }
    );
    assert!(s.check_anchor(&mid).unwrap().holds());

    // New records written over the cut give the anchored number another hash.
    for i in 10..14 {
        s.audit(i, AuditEntry::new("forged")).unwrap();
    }
    assert!(s.verify_audit().unwrap().is_intact());
    match s.check_anchor(&anchor).unwrap() {
        AnchorCheck::Rewritten { found: Some(h) } => assert_ne!(h, anchor.hash),
        other => panic!("{other:?}"),
    }
}

#[test]
fn concurrent_requests_of_one_terminal_get_one_lease() {
    let dir = tempfile::tempdir().unwrap();
    let (path, mut won) = race_connections(&dir, 4, 24, |i, s| {
        let id = lid(u8::try_from(i).unwrap());
        // Half the requests from t1, half from t2, each for its own user.
        let (t, u) = (term(["t1", "t2"][i % 2]), user(&format!("u{i}")));
        let req = AcquireRequest {
            terminal_limit: Some(1),
            ..acquire_req(&id, &t, &u, 100, Pick::AnyExcept(&[]))
        };
        match s.acquire_with(&req) {
            Ok(a) => Some(a.lease.terminal),
            Err(StoreError::LeaseLimit { .. }) => None,
            Err(e) => panic!("unexpected {e}"),
        }
    });
    won.sort();
    assert_eq!(won, [term("t1"), term("t2")], "one lease per terminal");
    let s = Store::open(&path).unwrap();
    assert_eq!(s.active_leases().unwrap().len(), 2);
    assert!(s.verify_audit().unwrap().is_intact());
}

#[test]
fn drained_desktops_are_not_leased_until_returned() {
    let (mut s, ids) = clean_pool(2);
    let drain = |s: &mut Store, id: &DesktopId, on: bool| {
        s.set_drained(
            id,
            on,
            Some("firmware check"),
            50,
            AuditEntry::new(if on {
                "desktop_drained"
            } else {
                "desktop_returned"
            }),
        )
        .unwrap()
    };
    assert!(drain(&mut s, &ids[0], true));
    // Draining twice changes nothing and writes nothing.
    assert!(!drain(&mut s, &ids[0], true));
    let row = s.desktop(&ids[0]).unwrap();
    assert!(row.drained && row.state == DesktopState::Clean);
    assert_eq!(row.drain_reason.as_deref(), Some("firmware check"));
    let a = s.acquire(&lid(1), &term("t1"), &user("a"), 100).unwrap();
    assert_eq!(a.lease.desktop, ids[1]);
    assert!(matches!(
        s.acquire(&lid(2), &term("t2"), &user("b"), 101),
        Err(StoreError::NoFreeDesktop)
    ));
    // A leased desktop can be drained too: its lease runs on.
    assert!(drain(&mut s, &ids[1], true));
    assert_eq!(s.active_leases().unwrap().len(), 1);
    assert!(drain(&mut s, &ids[0], false));
    let row = s.desktop(&ids[0]).unwrap();
    assert!(!row.drained && row.drain_reason.is_none());
    let b = s.acquire(&lid(2), &term("t2"), &user("b"), 102).unwrap();
    assert_eq!(b.lease.desktop, ids[0]);
    let audit = s.audit_tail(100).unwrap();
    let n = |a: &str| audit.iter().filter(|r| r.action == a).count();
    assert_eq!((n("desktop_drained"), n("desktop_returned")), (2, 1));
    assert!(s.verify_audit().unwrap().is_intact());
}
