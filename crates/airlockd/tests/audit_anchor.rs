//! The audit chain's anchor with the broker as deployed: its head is written to the
//! anchor file at shutdown (SIGTERM), and `airlockd audit verify` finds records cut off
//! the end of the database against it; the restarted broker says so in `/healthz` and
//! `/v1/audit/verify`.
#![allow(clippy::unwrap_used)]

mod common;

use airlock_store::anchor::read_anchors;
use common::*;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread")]
async fn cutting_the_newest_records_is_reported_against_the_anchor() -> Result<()> {
    let mut b = start(BrokerConfig {
        size: 1,
        ..config()?
    })?;
    b.wait_clean(1, Duration::from_secs(240)).await?;
    let lease = b.acquire_ok("dr-anchor").await?;
    assert_eq!(b.release(TERMINAL_TOKEN, &lease.lease_id).await?, 202);
    b.wait_clean(1, Duration::from_secs(240)).await?;
    let status = b.terminate()?;
    assert!(status.success(), "airlockd exited {status} on SIGTERM");

    // The last anchor is the shutdown's, and names the head of the chain.
    let (anchors, junk) = read_anchors(&b.anchor_path())?;
    assert_eq!(junk, 0);
    let first = anchors.first().context("no anchor")?;
    assert_eq!(first.why, "start");
    let last = anchors.last().unwrap();
    assert_eq!(last.why, "shutdown");
    let db = b.state.join("airlock.db");
    let head = airlock_store::Store::open_read_only(&db)?.audit_head()?;
    assert_eq!((last.seq, &last.hash), (head.0, &head.1));
    let anchor_file = b.anchor_path().display().to_string();

    let (ok, out) = b.verify_audit_cli()?;
    assert!(ok, "{out}");
    assert!(out.contains("audit chain intact"), "{out}");
    assert!(
        out.contains("anchors hold") && out.contains(&anchor_file),
        "{out}"
    );
    assert!(
        out.contains(&format!("record {} hash {}", last.seq, last.hash)),
        "{out}"
    );

    // A tamperer drops the trigger and deletes the newest three records.
    {
        let s = airlock_store::Store::open(&db)?;
        s.connection_for_tests().execute_batch(
            "DROP TRIGGER audit_no_delete;
             DELETE FROM audit WHERE seq > (SELECT MAX(seq) - 3 FROM audit);",
        )?;
    }
    let (ok, out) = b.verify_audit_cli()?;
    assert!(!ok, "{out}");
    assert!(
        out.contains("audit chain intact"),
        "the chain alone holds: {out}"
    );
    assert!(out.contains("audit log TRUNCATED"), "{out}");
    assert!(out.contains(&anchor_file), "{out}");
    let missing = format!("records {}..={} are missing", last.seq - 2, last.seq);
    assert!(out.contains(&missing), "{out}");
    let code = b.cli(&["audit", "verify"])?.status.code();
    assert_eq!(code, Some(1));

    // The broker started again says so until someone looks.
    b.restart()?;
    let (_, h) = b.healthz().await?;
    let problems = h["problems"].to_string();
    assert!(problems.contains("audit log TRUNCATED"), "{h}");
    let v = b.admin_get("/v1/audit/verify").await?;
    assert_eq!(v["intact"], true, "{v}");
    assert_eq!(v["anchor"]["holds"], false, "{v}");
    assert!(
        v["anchor"]["problem"].as_str().unwrap().contains(&missing),
        "{v}"
    );
    Ok(())
}
