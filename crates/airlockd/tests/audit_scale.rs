//! The audit trail at scale and from the command line, without a running broker: a
//! database filled with 1,000,000 valid records (`airlock_testkit::audit_fill`) passes
//! `airlockd audit verify`, and searches by user, terminal and time range answer in well
//! under a second; an edited row is named by `airlockd audit verify`; `airlockd audit
//! export` round-trips as CSV and JSON lines and refuses bad filters.
#![allow(clippy::unwrap_used)]

mod common;

use airlock_store::{AuditFilter, AuditQuery, ChainMonitor, Reader, SessionFilter, SessionQuery};
use airlock_testkit::audit_fill::{fill_audit, FillSpec};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// `airlockd --config CFG ARGS…`: exit code, stdout, stderr.
fn airlockd(cfg: &Path, args: &[&str]) -> (i32, String, String) {
    let bin = Path::new(env!("CARGO_BIN_EXE_airlockd"));
    let mut all = vec!["--config", cfg.to_str().unwrap()];
    all.extend_from_slice(args);
    let r = airlock_testkit::process::cli(bin, &all, &[]).unwrap();
    (r.code.unwrap_or(-1), r.stdout, r.stderr)
}

/// A config whose state directory is `dir/state` and anchor file `dir/anchors.log`.
fn write_config(dir: &Path) -> PathBuf {
    let disk = common::artifacts()
        .unwrap()
        .guest
        .golden_disk
        .display()
        .to_string();
    let text = format!(
        r#"
[server]
state_dir = "state"
[admin]
token_sha256 = "{h}"
[[terminals]]
name = "t1"
token_sha256 = "{h}"
[pool]
size = 1
accel = "tcg"
[pool.guest]
disk = "{disk}"
[audit]
anchor_file = "anchors.log"
"#,
        h = "ab".repeat(32),
    );
    let p = dir.join("c.toml");
    std::fs::write(&p, text).unwrap();
    std::fs::create_dir_all(dir.join("state")).unwrap();
    p
}

fn timed<T>(what: &str, f: impl FnOnce() -> T) -> (T, Duration) {
    let t0 = Instant::now();
    let v = f();
    let d = t0.elapsed();
    println!("{what}: {} ms", d.as_millis());
    (v, d)
}

#[test]
fn a_million_records_verify_and_search_fast() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path());
    let db = dir.path().join("state/airlock.db");
    let (filled, took) = timed("fill 1,000,000 records", || {
        fill_audit(&db, &FillSpec::new(1_000_000)).unwrap()
    });
    assert_eq!(filled.records, 1_000_000);
    assert!(took < Duration::from_secs(60), "filling took {took:?}");

    let ((code, out, err), _) = timed("airlockd audit verify", || {
        airlockd(&cfg, &["audit", "verify"])
    });
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.starts_with("audit chain intact: 1000000 records"),
        "{out}"
    );

    let reader = Reader::open(&db).unwrap();
    let mid = filled.first_ts + (filled.last_ts - filled.first_ts) / 2;
    let searches = [
        (
            "user",
            AuditFilter {
                user: Some(filled.users[7].clone()),
                ..AuditFilter::default()
            },
        ),
        (
            "terminal",
            AuditFilter {
                terminal: Some(filled.terminals[3].clone()),
                ..AuditFilter::default()
            },
        ),
        (
            "time range (1 h)",
            AuditFilter {
                from: Some(mid),
                to: Some(mid + 3_600_000),
                ..AuditFilter::default()
            },
        ),
        (
            "user and time range (30 days)",
            AuditFilter {
                user: Some(filled.users[7].clone()),
                from: Some(mid),
                to: Some(mid + 30 * 86_400_000),
                ..AuditFilter::default()
            },
        ),
        (
            "terminal, outcome 4",
            AuditFilter {
                terminal: Some(filled.terminals[3].clone()),
                outcome: Some(airlock_store::atna::Outcome::MinorFailure),
                ..AuditFilter::default()
            },
        ),
        (
            "event 110113",
            AuditFilter {
                event_id: Some(110113),
                ..AuditFilter::default()
            },
        ),
        ("everything", AuditFilter::default()),
    ];
    for (what, filter) in searches {
        let (page, d) = timed(&format!("search by {what}"), || {
            reader
                .search_audit(&AuditQuery {
                    filter: filter.clone(),
                    before: None,
                    limit: 50,
                })
                .unwrap()
        });
        assert!(!page.records.is_empty(), "{what}");
        assert!(
            d < Duration::from_millis(1000),
            "search by {what} took {d:?}"
        );
        // The next page too.
        let (_, d) = timed(&format!("next page by {what}"), || {
            reader
                .search_audit(&AuditQuery {
                    filter,
                    before: page.next_before,
                    limit: 50,
                })
                .unwrap()
        });
        assert!(
            d < Duration::from_millis(1000),
            "next page by {what} took {d:?}"
        );
    }
    let (page, d) = timed("sessions by user", || {
        reader
            .sessions(&SessionQuery {
                filter: SessionFilter {
                    user: Some(filled.users[7].clone()),
                    ..SessionFilter::default()
                },
                after: None,
                limit: 50,
            })
            .unwrap()
    });
    assert!(!page.sessions.is_empty());
    assert!(d < Duration::from_millis(1000), "{d:?}");
    let lease = page.sessions[0].lease.id.clone();
    let (t, d) = timed("one session's timeline", || {
        reader.session(&lease).unwrap().unwrap()
    });
    assert!(t.timeline.len() >= 5, "{:?}", t.timeline);
    assert!(d < Duration::from_millis(1000), "{d:?}");

    // The broker's verifier: the first incremental check hashes everything once; the
    // next one nothing.
    let m = ChainMonitor::new(reader);
    let (s, _) = timed("incremental check from zero", || m.check_new().unwrap());
    assert!(s.intact);
    assert_eq!(s.verified_records, 1_000_000);
    let (_, d) = timed("incremental check, nothing new", || m.check_new().unwrap());
    assert!(d < Duration::from_millis(100), "{d:?}");
    assert_eq!(m.records_hashed(), 1_000_000);
}

#[test]
fn cli_verify_names_an_edited_row_and_export_round_trips() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path());
    let db = dir.path().join("state/airlock.db");
    let filled = fill_audit(
        &db,
        &FillSpec {
            users: 10,
            ..FillSpec::new(3000)
        },
    )
    .unwrap();

    // Exports, filtered alike by the CLI and the API's rules.
    let user = filled.users[1].clone();
    let out_csv = dir.path().join("a.csv");
    let (code, _, err) = airlockd(
        &cfg,
        &[
            "audit",
            "export",
            "--format",
            "csv",
            "--user",
            &user,
            "--output",
            out_csv.to_str().unwrap(),
        ],
    );
    assert_eq!(code, 0, "{err}");
    let mut rd = csv::Reader::from_path(&out_csv).unwrap();
    let header = rd.headers().unwrap().clone();
    let user_col = header.iter().position(|h| h == "user").unwrap();
    let rows: Vec<csv::StringRecord> = rd.records().map(|r| r.unwrap()).collect();
    let store = airlock_store::Store::open_read_only(&db).unwrap();
    let want = store
        .search_audit(&AuditQuery {
            filter: AuditFilter {
                user: Some(user.clone()),
                ..AuditFilter::default()
            },
            before: None,
            limit: 1000,
        })
        .unwrap();
    assert!(want.total_exact && want.total > 0);
    assert_eq!(rows.len() as u64, want.total);
    assert!(rows.iter().all(|r| &r[user_col] == user.as_str()));
    assert!(
        err.contains(&format!("{} records exported", want.total)),
        "{err}"
    );

    let (code, out, err) = airlockd(
        &cfg,
        &[
            "audit",
            "export",
            "--format",
            "jsonl",
            "--action",
            "lease_ended",
            "--outcome",
            "8",
        ],
    );
    assert_eq!(code, 0, "{err}");
    let lines: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(!lines.is_empty());
    for l in &lines {
        assert_eq!(l["action"], "lease_ended");
        assert_eq!(l["atna"]["outcome"], 8);
        assert_eq!(l["atna"]["event_id"]["code"], 110100);
    }
    // Oldest first.
    assert!(lines
        .windows(2)
        .all(|w| w[0]["seq"].as_i64() < w[1]["seq"].as_i64()));

    let long = "u".repeat(1000);
    for bad in [
        vec!["--format", "xml"],
        vec!["--format", "csv", "--outcome", "3"],
        vec!["--format", "csv", "--from", "yesterday"],
        vec![
            "--format",
            "csv",
            "--from",
            "2026-12-03",
            "--to",
            "2026-12-01",
        ],
        vec!["--format", "csv", "--user", &long],
        vec!["--format", "csv", "--lease", "not-a-lease"],
        vec!["--format", "csv", "--event", "999"],
    ] {
        let mut args = vec!["audit", "export"];
        args.extend(bad.iter().copied());
        let (code, out, err) = airlockd(&cfg, &args);
        assert_ne!(code, 0, "{bad:?}: {out}");
        assert!(out.is_empty(), "{bad:?}: nothing exported");
        assert!(err.contains('`'), "{bad:?} names the option: {err}");
    }

    // Someone rewrites one row directly in SQLite: `audit verify` names it.
    {
        let s = airlock_store::Store::open(&db).unwrap();
        s.connection_for_tests()
            .execute_batch("DROP TRIGGER audit_no_update; UPDATE audit SET terminal = 'elsewhere' WHERE seq = 1234;")
            .unwrap();
    }
    let (code, out, _) = airlockd(&cfg, &["audit", "verify"]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("audit chain BROKEN at record 1234"), "{out}");
    let m = ChainMonitor::new(Reader::open(&db).unwrap());
    let s = m.check_full().unwrap();
    assert_eq!(s.first_broken.unwrap().seq, 1234);
}
