//! Acceptance tests of the broker with real QEMU (TCG) and the demo guest.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use reqwest::Method;
use serde_json::Value;
use std::time::Duration;

const UP: Duration = Duration::from_secs(240);

#[tokio::test(flavor = "multi_thread")]
async fn pool_comes_up_clean_and_a_third_acquire_gets_503() -> Result<()> {
    let b = start(config()?)?;
    let d = b.wait_clean(2, UP).await?;
    assert_eq!(d.len(), 2);
    let (_, h) = b.healthz().await?;
    assert_eq!(
        h["accel"], "tcg",
        "the broker says which accelerator it uses"
    );
    assert_eq!(h["status"], "ok");
    // `/` leads to the web console, which asks for a login first.
    let page = b.request(Method::GET, "/", None).await?;
    assert_eq!(page.status(), 200);
    assert!(
        page.url().path().ends_with("/console/login"),
        "{}",
        page.url()
    );
    assert!(page
        .text()
        .await
        .unwrap()
        .contains("Log in · Airlock console"));

    let a = b.acquire_ok("dr-alpha").await?;
    let c = b.acquire_ok("dr-beta").await?;
    assert_ne!(a.desktop_id, c.desktop_id);
    let (da, dc) = (a.display.as_ref().unwrap(), c.display.as_ref().unwrap());
    assert_ne!(da.password, dc.password);
    assert_eq!(da.protocol.as_str(), "spice");
    assert!(a.heartbeat_interval_s >= 1);
    assert!(a.expires_at > 0);
    assert_eq!(a.lease_id.to_string().len(), 32);

    let r = b.acquire(TERMINAL_TOKEN, "dr-gamma").await?;
    assert_eq!(r.status(), 503);
    let retry = r
        .headers()
        .get("retry-after")
        .unwrap()
        .to_str()
        .unwrap()
        .parse::<u64>()
        .unwrap();
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"], "no_free_desktop");
    assert_eq!(body["retry_after_s"].as_u64().unwrap(), retry);
    assert!(body["message"].as_str().unwrap().contains("try again"));

    let m = b.metrics().await?;
    assert!(m.contains("airlock_desktops{state=\"leased\"} 2"), "{m}");
    assert!(m.contains("airlock_leases_active 2"), "{m}");
    assert!(m.contains("airlock_acquire_seconds_count 2"), "{m}");
    assert!(
        m.contains("airlock_acquires_total{result=\"no_free_desktop\"} 1"),
        "{m}"
    );
    check_invariants(&b.audit().await?)
}

#[tokio::test(flavor = "multi_thread")]
async fn two_hundred_concurrent_acquires_grant_exactly_two() -> Result<()> {
    let b = start(config()?)?;
    b.wait_clean(2, UP).await?;
    let futs = (0..200).map(|i| {
        let b = &b;
        async move {
            b.acquire(TERMINAL_TOKEN, &format!("user-{i}"))
                .await
                .unwrap()
        }
    });
    let responses = futures::future::join_all(futs).await;
    let mut granted = Vec::new();
    let mut refused = 0;
    for r in responses {
        match r.status().as_u16() {
            201 => granted.push(r.json::<Value>().await.unwrap()["desktop_id"].clone()),
            503 => {
                let v: Value = r.json().await.unwrap();
                assert_eq!(v["error"], "no_free_desktop");
                refused += 1;
            }
            s => panic!("unexpected status {s}"),
        }
    }
    assert_eq!(granted.len(), 2);
    assert_eq!(refused, 198);
    assert_ne!(granted[0], granted[1]);
    let leases: Vec<_> = b
        .desktops()
        .await?
        .into_iter()
        .filter(|d| d["state"] == "leased")
        .collect();
    assert_eq!(leases.len(), 2);
    check_invariants(&b.audit().await?)
}

#[tokio::test(flavor = "multi_thread")]
async fn tokens_and_lease_ownership_are_enforced() -> Result<()> {
    let b = one_clean_desktop().await?;
    let url = format!("{}/v1/leases", b.url);
    // No token, wrong token, admin token on a terminal endpoint: 401 with a JSON error.
    let r = b
        .http
        .post(&url)
        .json(&serde_json::json!({"user": "u"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(r.headers().get("www-authenticate").unwrap(), "Bearer");
    assert_eq!(r.json::<Value>().await.unwrap()["error"], "unauthorized");
    assert_eq!(b.acquire("wrong-token", "u").await?.status(), 401);
    assert_eq!(b.acquire(ADMIN_TOKEN, "u").await?.status(), 401);
    let r = b
        .http
        .post(&url)
        .header("authorization", "Basic abc")
        .json(&serde_json::json!({"user": "u"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    // Terminal token on an admin endpoint.
    let r = b
        .request(Method::GET, "/v1/desktops", Some(TERMINAL_TOKEN))
        .await?;
    assert_eq!(r.status(), 401);
    let r = b.request(Method::GET, "/v1/desktops", None).await?;
    assert_eq!(r.status(), 401);

    let lease = b.acquire_ok("dr-owner").await?;
    let id = lease.lease_id.to_string();
    let id = id.as_str();
    // Another terminal can neither heartbeat nor release it: 404, as if it did not exist.
    assert_eq!(b.heartbeat(TERMINAL2_TOKEN, id).await?, 404);
    assert_eq!(b.release(TERMINAL2_TOKEN, id).await?, 404);
    assert_eq!(b.heartbeat("nope", id).await?, 401);
    assert_eq!(b.heartbeat(TERMINAL_TOKEN, id).await?, 200);
    assert_eq!(
        b.desktop(lease.desktop_id.as_str()).await?["state"],
        "leased"
    );
    // The holder can.
    assert_eq!(b.release(TERMINAL_TOKEN, id).await?, 202);
    assert_eq!(
        b.heartbeat(TERMINAL_TOKEN, id).await?,
        404,
        "an ended lease answers 404"
    );
    assert_eq!(b.release(TERMINAL_TOKEN, id).await?, 404);
    b.wait_clean(1, UP).await?;
    let audit = b.audit().await?;
    let granted: Vec<_> = audit
        .iter()
        .filter(|r| r["action"] == "lease_granted")
        .collect();
    assert_eq!(granted.len(), 1);
    assert_eq!(granted[0]["terminal"], "term-1");
    assert_eq!(granted[0]["user"], "dr-owner");
    check_invariants(&audit)
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_input_gets_clear_errors_and_changes_nothing() -> Result<()> {
    let b = one_clean_desktop().await?;
    let before = b.audit().await?.len();
    let url = format!("{}/v1/leases", b.url);
    let post = |body: Vec<u8>, ct: Option<&'static str>| {
        let mut r = b.http.post(&url).bearer_auth(TERMINAL_TOKEN).body(body);
        if let Some(ct) = ct {
            r = r.header("content-type", ct);
        }
        r.send()
    };
    let json = Some("application/json");
    let cases: Vec<(Vec<u8>, Option<&str>, u16, &str)> = vec![
        (b"{not json".to_vec(), json, 400, "bad_request"),
        (br#"{"user": 5}"#.to_vec(), json, 400, "bad_request"),
        (
            br#"{"user": "u", "extra": 1}"#.to_vec(),
            json,
            400,
            "bad_request",
        ),
        (br#"{}"#.to_vec(), json, 400, "bad_request"),
        (br#"[]"#.to_vec(), json, 400, "bad_request"),
        (br#"{"user": ""}"#.to_vec(), json, 400, "bad_request"),
        (br#"{"user": "a\nb"}"#.to_vec(), json, 400, "bad_request"),
        (vec![0xff, 0xfe, 0x00], json, 400, "bad_request"),
        (
            br#"{"user": "u"}"#.to_vec(),
            None,
            415,
            "unsupported_media_type",
        ),
    ];
    for (body, ct, status, code) in cases {
        let shown = String::from_utf8_lossy(&body[..body.len().min(40)]).into_owned();
        let r = post(body, ct).await.unwrap();
        assert_eq!(r.status().as_u16(), status, "{shown}");
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["error"], code, "{shown}");
        assert!(!v["message"].as_str().unwrap().is_empty());
    }
    // A huge body is refused from its declared length, before it is sent (over a raw
    // socket: a client still writing would see the closed connection, not the answer).
    {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let addr = b.url.trim_start_matches("http://").to_owned();
        let mut s = tokio::net::TcpStream::connect(&addr).await.unwrap();
        let head = format!(
            "POST /v1/leases HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {TERMINAL_TOKEN}\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            2u64 << 30
        );
        s.write_all(head.as_bytes()).await.unwrap();
        s.write_all(br#"{"user": "xxxxxxxx"#).await.unwrap();
        let mut answer = String::new();
        tokio::time::timeout(Duration::from_secs(10), s.read_to_string(&mut answer))
            .await
            .expect("answered without waiting for the body")
            .unwrap();
        assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
        assert!(
            answer.contains(r#""error":"payload_too_large""#),
            "{answer}"
        );
    }
    // Unknown and malformed lease ids.
    for id in [
        "00000000000000000000000000000000",
        "not-a-lease",
        "../../etc/passwd",
        &"a".repeat(5000),
    ] {
        let s = b.heartbeat(TERMINAL_TOKEN, id).await?;
        assert!(s == 404 || s == 414 || s == 400, "{id}: {s}");
        let s = b.release(TERMINAL_TOKEN, id).await?;
        assert!(s == 404 || s == 414 || s == 400, "{id}: {s}");
    }
    let r = b.request(Method::GET, "/v1/nothing", None).await?;
    assert_eq!(r.status(), 404);
    assert_eq!(r.json::<Value>().await.unwrap()["error"], "not_found");
    let r = b
        .request(Method::GET, "/v1/audit?limit=abc", Some(ADMIN_TOKEN))
        .await?;
    assert_eq!(r.status(), 400);
    // Nothing changed: the desktop is still clean, nothing was leased or audited.
    let d = b.desktops().await?;
    assert_eq!(d[0]["state"], "clean");
    assert_eq!(b.audit().await?.len(), before);
    assert_eq!(
        b.acquire(TERMINAL_TOKEN, "after-garbage").await?.status(),
        201
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn terminal_alerts_are_audited_and_bad_ones_refused() -> Result<()> {
    let b = start(BrokerConfig {
        size: 1,
        ..config()?
    })?;
    let good = serde_json::json!({
        "kind": "terminal_unguarded",
        "problems": ["module usb-storage: can load", "CD block devices: /dev/sr0 exist"],
        "accepted": false,
        "user": "dr-guard",
    });
    let with = |key: &str, v: Value| {
        let mut x = good.clone();
        x[key] = v;
        x
    };
    for (body, why) in [
        (with("kind", "bored".into()), "unknown kind"),
        (with("problems", serde_json::json!([])), "no problem"),
        (
            with("problems", serde_json::json!(["a\u{7}b"])),
            "control character",
        ),
        (
            with("problems", serde_json::json!(vec!["x"; 33])),
            "too many",
        ),
        (with("user", "".into()), "empty user"),
        (with("extra", 1.into()), "unknown field"),
    ] {
        let r = b.alert(TERMINAL_TOKEN, &body).await?;
        assert_eq!(r.status(), 400, "{why}");
        assert_eq!(r.json::<Value>().await?["error"], "bad_request", "{why}");
    }
    assert_eq!(b.alert("wrong-token", &good).await?.status(), 401);
    assert_eq!(b.alert(TERMINAL_TOKEN, &good).await?.status(), 204);
    let audit = b.audit().await?;
    let alerts: Vec<&Value> = audit
        .iter()
        .filter(|r| r["action"] == "security_alert")
        .collect();
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    let a = alerts[0];
    assert_eq!(a["user"], "dr-guard");
    assert!(a["terminal"].as_str().is_some_and(|t| !t.is_empty()));
    let details: Value = serde_json::from_str(a["details"].as_str().unwrap())?;
    assert_eq!(details["kind"], "terminal_unguarded");
    assert_eq!(details["accepted"], false);
    assert_eq!(details["problems"][1], "CD block devices: /dev/sr0 exist");
    check_invariants(&audit)?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn refused_usb_control_requests_are_audited_once_per_lease() -> Result<()> {
    use airlock_testkit::broker::TerminalEntry;
    let b = start(BrokerConfig {
        size: 1,
        ..config()?
    })?;
    b.wait_clean(1, UP).await?;
    let lease = b.acquire_ok("dr-refused").await?.lease_id.clone();
    let req = |rt: u8, r: u8| serde_json::json!({"request_type": rt, "request": r, "value": 0, "index": 0});
    let good = serde_json::json!({"count": 5, "requests": [req(0x40, 1), req(0x21, 1)]});
    let with = |key: &str, v: Value| {
        let mut x = good.clone();
        x[key] = v;
        x
    };
    let many: Vec<Value> = (0..17).map(|n| req(0xc0, n)).collect();
    for (body, why) in [
        (with("requests", serde_json::json!([])), "no request"),
        (with("requests", many.into()), "17 requests"),
        (
            with("requests", serde_json::json!([req(0x40, 1), req(0x40, 1)])),
            "duplicates",
        ),
        (with("count", 1.into()), "count below the requests"),
        (
            with(
                "requests",
                serde_json::json!([{"request_type": 256, "request": 1, "value": 0, "index": 0}]),
            ),
            "bmRequestType out of range",
        ),
        (with("extra", 1.into()), "unknown field"),
    ] {
        let r = b.usb_refused(TERMINAL_TOKEN, &lease, &body).await?;
        assert_eq!(r.status(), 400, "{why}");
        assert_eq!(r.json::<Value>().await?["error"], "bad_request", "{why}");
    }
    assert_eq!(
        b.usb_refused("wrong-token", &lease, &good).await?.status(),
        401
    );
    // Another terminal's lease, or no lease: 404.
    let other = TerminalEntry::numbered(2).token;
    assert_eq!(b.usb_refused(&other, &lease, &good).await?.status(), 404);
    let unknown = "0123456789abcdef0123456789abcdef";
    assert_eq!(
        b.usb_refused(TERMINAL_TOKEN, unknown, &good)
            .await?
            .status(),
        404
    );
    // Two forwards of the lease report; a third right after the lease ended.
    assert_eq!(
        b.usb_refused(TERMINAL_TOKEN, &lease, &good).await?.status(),
        202
    );
    let second = serde_json::json!({"count": 2, "requests": [req(0x00, 7), req(0x40, 1)]});
    assert_eq!(
        b.usb_refused(TERMINAL_TOKEN, &lease, &second)
            .await?
            .status(),
        202
    );
    assert!(
        b.usb_control_refused().await?.is_empty(),
        "audited before the lease ended"
    );
    assert_eq!(b.release(TERMINAL_TOKEN, &lease).await?, 202);
    let third = serde_json::json!({"count": 1, "requests": [req(0x00, 3)]});
    assert_eq!(
        b.usb_refused(TERMINAL_TOKEN, &lease, &third)
            .await?
            .status(),
        202
    );
    // One record, written once the grace after the end has passed.
    let grace = Duration::from_millis(airlock_core::wire::USB_REFUSED_GRACE_MS as u64);
    let deadline = std::time::Instant::now() + grace + Duration::from_secs(10);
    let records = loop {
        let r = b.usb_control_refused().await?;
        if !r.is_empty() || std::time::Instant::now() > deadline {
            break r;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    assert_eq!(records.len(), 1, "{records:?}");
    let (on, details) = &records[0];
    assert_eq!(on, lease.as_str());
    assert_eq!(details["count"], 8);
    assert_eq!(details["reports"], 3);
    assert_eq!(
        details["requests"],
        serde_json::json!([req(0x40, 1), req(0x21, 1), req(0x00, 7), req(0x00, 3)])
    );
    // Too late now: refused, and still one record.
    assert_eq!(
        b.usb_refused(TERMINAL_TOKEN, &lease, &good).await?.status(),
        404
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(b.usb_control_refused().await?.len(), 1);
    let audit = b.audit().await?;
    let record = audit
        .iter()
        .find(|r| r["action"] == "usb_control_refused")
        .unwrap();
    assert_eq!(record["user"], "dr-refused");
    assert_eq!(record["desktop"], "desk-01");
    check_invariants(&audit)?;
    Ok(())
}

/// `Cpus_allowed_list` of every thread of `pid`, by thread name.
fn thread_cpus(pid: u32) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for t in std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .flatten()
    {
        let comm = std::fs::read_to_string(t.path().join("comm")).unwrap_or_default();
        let status = std::fs::read_to_string(t.path().join("status")).unwrap_or_default();
        if let Some(cpus) = status
            .lines()
            .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
        {
            out.push((comm.trim().to_owned(), cpus.trim().to_owned()));
        }
    }
    out
}

/// With `[pool.cpus]`, every desktop process (the first and the one after a reset)
/// has its vCPU threads on the desktop CPUs and everything else on the housekeeping
/// CPUs, and so does airlockd itself.
#[tokio::test(flavor = "multi_thread")]
async fn cpu_placement_pins_vcpus_and_housekeeping() -> Result<()> {
    let allowed = airlock_qemu::affinity::allowed_cpus().unwrap();
    if allowed.len() < 2 {
        eprintln!("skipped: needs two CPUs, this process may use {allowed}");
        return Ok(());
    }
    let mut cpus = allowed.iter();
    let (d, h) = (cpus.next().unwrap(), cpus.next().unwrap());
    let b = start(BrokerConfig {
        size: 1,
        cpus: Some((d.to_string(), Some(h.to_string()))),
        ..config()?
    })?;
    let desk = b.wait_clean(1, UP).await?[0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let check = |pid: u32, what: &str| {
        let threads = thread_cpus(pid);
        let vcpus: Vec<_> = threads
            .iter()
            .filter(|(n, _)| n.ends_with("/TCG"))
            .collect();
        assert_eq!(vcpus.len(), 1, "{what}: one vCPU thread: {threads:?}");
        for (name, cpus) in &threads {
            let want = if name.ends_with("/TCG") { d } else { h };
            assert_eq!(
                cpus,
                &want.to_string(),
                "{what}: thread {name}: {threads:?}"
            );
        }
    };
    let first = b.desktop_qemu_pid(&desk)?;
    check(first, "first start");
    for (name, cpus) in thread_cpus(b.pid().unwrap()) {
        assert_eq!(cpus, h.to_string(), "airlockd thread {name}");
    }
    let lease = b.acquire_ok("dr-pin").await?;
    assert_eq!(b.release(TERMINAL_TOKEN, &lease.lease_id).await?, 202);
    let d2 = b
        .wait_desktop(&desk, UP, |d| d["state"] == "clean" && d["resets"] == 1)
        .await?;
    let second = b.desktop_qemu_pid(&desk)?;
    assert_eq!(d2["pid"], second, "{d2}");
    assert_ne!(first, second, "a template clone reset starts a new process");
    check(second, "after a reset");
    assert!(b.log_tail(400).contains(&format!(
        "CPU placement: desktop vCPUs on CPUs {d}; QEMU device models, I/O and airlockd on CPUs {h}"
    )));
    Ok(())
}
