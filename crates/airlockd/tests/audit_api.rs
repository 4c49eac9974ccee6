//! The security officer's API against a running broker with a real desktop: audit
//! search, sessions and a session's timeline, CSV and JSON-lines export, every view
//! audited (`audit_viewed`), bad parameters answered 400; and a row edited directly in
//! SQLite while the broker runs is named as the first broken link by
//! `POST`/`GET /v1/audit/verify` and by `airlockd audit verify`.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use reqwest::Method;
use serde_json::Value;
use std::time::Duration;

async fn get(b: &Broker, path: &str) -> Result<(u16, String)> {
    let r = b.request(Method::GET, path, Some(ADMIN_TOKEN)).await?;
    let s = r.status().as_u16();
    Ok((s, r.text().await?))
}

#[tokio::test(flavor = "multi_thread")]
async fn search_sessions_export_and_a_tampered_row() -> Result<()> {
    let mut b = start(BrokerConfig {
        size: 1,
        ..config()?
    })?;
    b.wait_clean(1, Duration::from_secs(240)).await?;
    let lease = b.acquire_ok("dr-audit").await?;
    assert_eq!(b.release(TERMINAL_TOKEN, &lease.lease_id).await?, 202);
    b.wait_clean(1, Duration::from_secs(240)).await?;
    let id = lease.lease_id.to_string();

    // Search: the lease's records, newest first, with their ATNA codes.
    let v = b.admin_get(&format!("/v1/audit?lease={id}")).await?;
    let recs = v["records"].as_array().context("records")?;
    let actions: Vec<&str> = recs.iter().map(|r| r["action"].as_str().unwrap()).collect();
    assert_eq!(actions.last(), Some(&"lease_granted"), "{actions:?}");
    assert_eq!(actions.first(), Some(&"lease_ended"), "{actions:?}");
    assert_eq!(recs[0]["atna"]["event_id"]["code"], 110100);
    assert_eq!(recs[0]["atna"]["action_code"], "D");
    assert_eq!(v["total"], recs.len());
    // The view itself was audited, with its filter.
    let viewed = b.admin_get("/v1/audit?action=audit_viewed&limit=1").await?;
    let r = &viewed["records"][0];
    let d: Value = serde_json::from_str(r["details"].as_str().unwrap())?;
    assert_eq!(d["filter"]["lease"], id.as_str(), "{d}");
    assert_eq!(r["atna"]["event_id"]["code"], 110101);

    // Sessions, and one session's timeline.
    let s = b.admin_get("/v1/sessions?user=dr-audit").await?;
    assert_eq!(s["sessions"][0]["id"], id.as_str(), "{s}");
    assert_eq!(s["sessions"][0]["end_reason"], "released");
    let t = b.admin_get(&format!("/v1/sessions/{id}")).await?;
    let steps: Vec<&str> = t["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["step"].as_str().unwrap())
        .collect();
    for want in ["acquired", "ended", "reset_started", "reset"] {
        assert!(steps.contains(&want), "{want} in {steps:?}");
    }
    assert!(t["durations"]["held_ms"].is_i64(), "{t}");
    assert!(t["durations"]["reset_ms"].is_i64(), "{t}");

    // Exports.
    let r = b
        .request(
            Method::GET,
            "/v1/audit?format=csv&user=dr-audit",
            Some(ADMIN_TOKEN),
        )
        .await?;
    assert_eq!(r.status(), 200);
    assert!(r.headers()["content-type"]
        .to_str()?
        .starts_with("text/csv"));
    let body = r.text().await?;
    let mut rd = csv::Reader::from_reader(body.as_bytes());
    assert_eq!(&rd.headers()?[0], "seq");
    let rows = rd.records().count();
    assert!(rows >= 2, "{body}");
    let (code, body) = get(
        &b,
        "/v1/audit?format=jsonl&action=lease_granted,lease_ended",
    )
    .await?;
    assert_eq!(code, 200);
    let lines: Vec<Value> = body
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(lines.len() >= 2);
    assert!(lines
        .iter()
        .all(|l| l["action"] == "lease_granted" || l["action"] == "lease_ended"));

    // Bad parameters: 400 with a message, nothing else happens.
    let long = "u".repeat(300);
    for q in [
        "/v1/audit?limit=abc".to_owned(),
        "/v1/audit?limit=0".into(),
        "/v1/audit?limit=1001".into(),
        "/v1/audit?outcome=5".into(),
        "/v1/audit?event=1".into(),
        "/v1/audit?from=yesterday".into(),
        "/v1/audit?from=2026-12-03&to=2026-12-02".into(),
        "/v1/audit?nonsense=1".into(),
        "/v1/audit?user=a&user=b".into(),
        format!("/v1/audit?user={long}"),
        "/v1/audit?lease=xyz".into(),
        "/v1/audit?action=Lease-Granted".into(),
        "/v1/audit?before=-3".into(),
        "/v1/audit?format=xml".into(),
        "/v1/audit?format=csv&limit=5".into(),
        "/v1/audit?q=".into(),
        "/v1/sessions?after=zz".into(),
        "/v1/sessions?active=maybe".into(),
        "/v1/sessions?limit=-1".into(),
    ] {
        let (code, body) = get(&b, &q).await?;
        assert_eq!(code, 400, "{q}: {body}");
        let e: Value = serde_json::from_str(&body)?;
        assert_eq!(e["error"], "bad_request", "{q}");
        assert!(e["message"].as_str().unwrap().len() > 10, "{q}: {body}");
    }
    let (code, _) = get(&b, "/v1/sessions/not-a-lease").await?;
    assert_eq!(code, 404);
    let (code, _) = get(&b, &format!("/v1/sessions/{}", "0".repeat(32))).await?;
    assert_eq!(code, 404);
    let r = b.request(Method::GET, "/v1/audit", None).await?;
    assert_eq!(r.status(), 401);

    // Verification: intact, then an old row edited behind the broker's back.
    let v = b.admin_get("/v1/audit/verify").await?;
    assert_eq!(v["intact"], true, "{v}");
    let db = b.state.join("airlock.db");
    {
        let s = airlock_store::Store::open(&db)?;
        s.connection_for_tests().execute_batch(
            "DROP TRIGGER audit_no_update; UPDATE audit SET user = 'mallory' WHERE seq = 3;",
        )?;
    }
    let r = b
        .request(Method::POST, "/v1/audit/verify", Some(ADMIN_TOKEN))
        .await?;
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await?;
    assert_eq!(v["intact"], false, "{v}");
    assert_eq!(v["first_broken"]["seq"], 3, "{v}");
    let v = b.admin_get("/v1/audit/verify").await?;
    assert_eq!(v["first_broken"]["seq"], 3, "{v}");
    assert!(v["status"]["last_full"]["finished_at"].is_i64(), "{v}");
    let (_, h) = b.healthz().await?;
    assert!(
        h["problems"]
            .to_string()
            .contains("audit chain BROKEN at record 3"),
        "{h}"
    );
    let m = b.metrics().await?;
    assert!(m.contains("audit_chain_intact 0"), "{m}");
    let status = b.terminate()?;
    assert!(status.success());
    let (ok, out) = b.verify_audit_cli()?;
    assert!(!ok);
    assert!(out.contains("audit chain BROKEN at record 3"), "{out}");
    Ok(())
}
