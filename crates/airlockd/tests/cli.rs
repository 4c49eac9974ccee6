//! The airlockd command line: config errors name the key, hash-token, audit verify on an
//! intact and on a tampered database.
#![allow(clippy::unwrap_used)]

mod common;

/// `airlockd ARGS…`: exit code (-1 for a signal), stdout, stderr.
fn airlockd(args: &[&str]) -> (i32, String, String) {
    let bin = std::path::Path::new(env!("CARGO_BIN_EXE_airlockd"));
    let r = airlock_testkit::process::cli(bin, args, &[]).unwrap();
    (r.code.unwrap_or(-1), r.stdout, r.stderr)
}

fn write_config(dir: &std::path::Path, extra_pool: &str) -> std::path::PathBuf {
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
size = 2
accel = "tcg"
{extra_pool}
[pool.guest]
disk = "{disk}"
"#,
        h = "ab".repeat(32),
        disk = disk
    );
    let p = dir.join("c.toml");
    std::fs::write(&p, text).unwrap();
    p
}

#[test]
fn check_config_names_the_key() {
    let d = tempfile::tempdir().unwrap();
    let ok = write_config(d.path(), "");
    let (code, out, _) = airlockd(&["--config", ok.to_str().unwrap(), "check-config"]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("ok (2 desktops, accel tcg, reset template_clone, 1 terminals)"),
        "{out}"
    );

    let bad = write_config(d.path(), "memroy_mib = 512");
    let (code, _, err) = airlockd(&["--config", bad.to_str().unwrap(), "check-config"]);
    assert_ne!(code, 0);
    assert!(err.contains("memroy_mib"), "{err}");

    let bad = write_config(d.path(), "accel = \"fast\"");
    let (code, _, err) = airlockd(&["--config", bad.to_str().unwrap(), "check-config"]);
    assert_ne!(code, 0);
    assert!(
        err.contains("duplicate key") || err.contains("pool.accel"),
        "{err}"
    );

    let (code, _, err) = airlockd(&["--config", "/nonexistent/airlockd.toml", "check-config"]);
    assert_ne!(code, 0);
    assert!(
        err.contains("cannot read config file /nonexistent/airlockd.toml"),
        "{err}"
    );
}

#[test]
fn hash_token() {
    let (code, out, _) = airlockd(&["hash-token", "demo-terminal"]);
    assert_eq!(code, 0);
    assert_eq!(out.trim(), airlock_testkit::sha256_hex(b"demo-terminal"));
    let (code, _, err) = airlockd(&["hash-token", ""]);
    assert_ne!(code, 0);
    assert!(err.contains("the token is empty"), "{err}");
}

#[test]
fn audit_verify_finds_the_first_broken_record() {
    use airlock_core::{DesktopId, EndReason, LeaseId, ResetMethod, TerminalName, UserName};
    use airlock_store::{ResetRecord, Store};
    let d = tempfile::tempdir().unwrap();
    let cfg = write_config(d.path(), "");
    let with_config = |args: &[&str]| {
        let mut all = vec!["--config", cfg.to_str().unwrap()];
        all.extend_from_slice(args);
        airlockd(&all)
    };
    let state = d.path().join("state");
    std::fs::create_dir_all(&state).unwrap();
    {
        let mut s = Store::open(&state.join("airlock.db")).unwrap();
        let ids = vec![DesktopId::parse("desk-01").unwrap()];
        s.sync_pool(&ids, 1).unwrap();
        s.reset_succeeded(
            &ids[0],
            2,
            &ResetRecord {
                method: ResetMethod::Rebuild,
                duration_ms: 1,
                proof: serde_json::json!({}),
            },
        )
        .unwrap();
        let l = LeaseId::from_random([7; 16]);
        s.acquire(
            &l,
            &TerminalName::parse("t1").unwrap(),
            &UserName::parse("alice").unwrap(),
            3,
        )
        .unwrap();
        s.end_lease(&l, None, EndReason::Released, 4, serde_json::json!({}))
            .unwrap();
    }
    let (code, out, _) = with_config(&["audit", "verify"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.starts_with("audit chain intact: 4 records"), "{out}");
    let (code, out, _) = with_config(&["audit", "tail", "-n", "1"]);
    assert_eq!(code, 0);
    assert!(out.contains("lease_ended"), "{out}");

    // Someone rewrites who held the lease.
    {
        let s = Store::open(&state.join("airlock.db")).unwrap();
        let c = s.connection_for_tests();
        c.execute_batch(
            "DROP TRIGGER audit_no_update; UPDATE audit SET user = 'mallory' WHERE seq = 3;",
        )
        .unwrap();
    }
    let (code, out, _) = with_config(&["audit", "verify"]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("audit chain BROKEN at record 3"), "{out}");
    // --state-dir overrides the config's state directory.
    let elsewhere = d.path().join("elsewhere");
    let (code, _, err) = with_config(&[
        "--state-dir",
        elsewhere.to_str().unwrap(),
        "audit",
        "verify",
    ]);
    assert_ne!(code, 0);
    assert!(err.contains("no database at"), "{err}");
}
