//! Per-terminal limits with real QEMU (TCG) and the demo guest: one active lease per
//! terminal, `429` for lease-request storms and for storms of wrong tokens (which do not
//! slow down the other terminals), and the display proxy's connection cap and idle
//! timeout.
#![allow(clippy::unwrap_used)]

mod common;

use airlock_testkit::broker::Limits;
use common::*;
use serde_json::Value;
use std::net::IpAddr;
use std::time::{Duration, Instant};
use tokio::io::AsyncReadExt;

const UP: Duration = Duration::from_secs(240);

/// `POST /v1/leases` with `"wait"` as the terminal with `token`: status and body.
async fn ask(b: &Broker, token: &str, user: &str, wait: bool) -> (u16, Value, Option<u64>) {
    let r = b
        .http
        .post(format!("{}/v1/leases", b.url))
        .bearer_auth(token)
        .json(&serde_json::json!({"user": user, "wait": wait}))
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let retry = r
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().parse().unwrap());
    (status, r.json().await.unwrap_or_default(), retry)
}

/// Whether the peer closed `s` within `within` (`false`: it stays open and silent).
async fn closed_within(s: &mut tokio::net::TcpStream, within: Duration) -> bool {
    let mut buf = [0u8; 64];
    matches!(
        tokio::time::timeout(within, s.read(&mut buf)).await,
        Ok(Ok(0) | Err(_))
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn a_terminal_gets_one_lease_and_a_storm_of_requests_gets_429() -> Result<()> {
    let b = start(BrokerConfig {
        limits: Limits {
            acquire_burst: Some(6),
            acquires_per_minute: Some(1),
            ..Limits::default()
        },
        display_max_connections: Some(3),
        display_idle_timeout_s: Some(5),
        ..config()?
    })?;
    b.wait_clean(2, UP).await?;
    // The terminal holds a lease; asking for another user is refused, also to wait in
    // line, and nothing is leased or queued.
    let first = b.acquire_ok("dr-alpha").await?;
    for wait in [false, true] {
        let (status, body, _) = ask(&b, TERMINAL_TOKEN, "dr-beta", wait).await;
        assert_eq!(status, 409, "{body}");
        assert_eq!(body["error"], "lease_limit", "{body}");
        assert!(
            body["message"]
                .as_str()
                .unwrap()
                .contains("limits.leases_per_terminal"),
            "{body}"
        );
    }
    // Asking again for the same user gives the lease back; another terminal is not
    // affected.
    let (status, body, _) = ask(&b, TERMINAL_TOKEN, "dr-alpha", false).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["lease_id"], first.lease_id.to_string());
    let (status, body, _) = ask(&b, TERMINAL2_TOKEN, "dr-beta", false).await;
    assert_eq!(status, 201, "{body}");
    let leased: Vec<_> = b
        .desktops()
        .await?
        .into_iter()
        .filter(|d| d["state"] == "leased")
        .collect();
    assert_eq!(leased.len(), 2);

    // Term-1 has asked 4 times of its burst of 6: a storm of 10 more gets 2 answers, then
    // 429 with Retry-After; its heartbeats still pass.
    let mut statuses = Vec::new();
    for _ in 0..10 {
        let (status, body, retry) = ask(&b, TERMINAL_TOKEN, "dr-alpha", false).await;
        if status == 429 {
            assert_eq!(body["error"], "rate_limited", "{body}");
            let retry = retry.expect("429 without Retry-After");
            assert!((1..=60).contains(&retry), "{retry}");
            assert_eq!(body["retry_after_s"], retry);
        }
        statuses.push(status);
    }
    assert_eq!(statuses[..2], [200, 200], "{statuses:?}");
    assert!(statuses[2..].iter().all(|&s| s == 429), "{statuses:?}");
    assert_eq!(b.heartbeat(TERMINAL_TOKEN, &first.lease_id).await?, 200);
    let m = b.metrics().await?;
    assert!(
        m.contains("airlock_acquires_total{result=\"lease_limit\"} 2"),
        "{m}"
    );

    // The lease's display: three connections at most; a fourth is closed at once, and
    // an idle one is closed after the idle timeout.
    let port = first.display.as_ref().unwrap().port;
    let connect = || tokio::net::TcpStream::connect(("127.0.0.1", port));
    let mut open = Vec::new();
    for _ in 0..3 {
        open.push(connect().await.unwrap());
    }
    let mut fourth = connect().await.unwrap();
    assert!(closed_within(&mut fourth, Duration::from_secs(3)).await);
    let t0 = Instant::now();
    for s in &mut open {
        assert!(
            !closed_within(s, Duration::from_millis(300)).await,
            "the first three stay"
        );
    }
    for s in &mut open {
        assert!(closed_within(s, Duration::from_secs(15)).await, "idle");
    }
    let idle = t0.elapsed();
    assert!(idle >= Duration::from_secs(4), "closed after {idle:?}");
    // Closed connections make room again.
    let mut again = connect().await.unwrap();
    assert!(!closed_within(&mut again, Duration::from_millis(500)).await);
    check_invariants(&b.audit().await?)
}

/// The `q`-quantile of `v` (nearest rank).
fn quantile(mut v: Vec<Duration>, q: f64) -> Duration {
    v.sort();
    let rank = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len());
    v[rank - 1]
}

/// A storm's answers: 401 for the first ones (at most the burst of 10), then 429 with
/// Retry-After.
fn check_storm(storm: &[(reqwest::StatusCode, Option<u64>, String)]) {
    assert_eq!(storm[0].0.as_u16(), 401, "{storm:?}");
    let mut unauthorized = 0;
    for (i, (status, retry, code)) in storm.iter().enumerate() {
        match status.as_u16() {
            401 => {
                assert_eq!(code, "unauthorized");
                assert!(i < 50, "a 401 late in the storm: {storm:?}");
                unauthorized += 1;
            }
            429 => {
                assert_eq!(code, "rate_limited");
                assert!(retry.is_some_and(|r| r >= 1), "{retry:?}");
            }
            s => panic!("the storm got {s}: {storm:?}"),
        }
    }
    assert!((1..=10).contains(&unauthorized), "{storm:?}");
}

/// Terminals `term-1` and `term-2` acquire and release in a loop for `run`: the latency
/// of every request.
async fn acquire_loop(b: &Broker, run: Duration) -> Vec<Duration> {
    let until = Instant::now() + run;
    let terminal = |token: &'static str, user: &'static str| async move {
        let mut took = Vec::new();
        while Instant::now() < until {
            let t = Instant::now();
            let r = b.acquire(token, user).await.unwrap();
            took.push(t.elapsed());
            let status = r.status().as_u16();
            let body: Value = r.json().await.unwrap();
            match status {
                201 => {
                    let lease = body["lease_id"].as_str().unwrap();
                    let t = Instant::now();
                    assert_eq!(b.release(token, lease).await.unwrap(), 202);
                    took.push(t.elapsed());
                }
                503 => tokio::time::sleep(Duration::from_millis(20)).await,
                s => panic!("a terminal got {s}: {body}"),
            }
        }
        took
    };
    let (a, c) = tokio::join!(
        terminal(TERMINAL_TOKEN, "dr-loop-1"),
        terminal(TERMINAL2_TOKEN, "dr-loop-2")
    );
    [a, c].concat()
}

#[tokio::test(flavor = "multi_thread")]
async fn wrong_tokens_get_401_then_429_without_slowing_other_terminals() -> Result<()> {
    // The broker's own limits on failed authentications; the loop's terminals may ask
    // as often as they like.
    let b = start(BrokerConfig {
        limits: Limits {
            auth_failure_burst: None,
            auth_failures_per_minute: None,
            ..Limits::generous()
        },
        ..config()?
    })?;
    b.wait_clean(2, UP).await?;
    // The loop's p99 is its slowest request or two, and on a loaded 2-core machine a
    // SQLite fsync or a reset's CPU spike now and then takes 100 ms either way: a
    // measurement whose p99 misses the bound is taken again, up to three times, each
    // with a storm from a fresh address. A storm that slowed the terminals would miss it
    // every time.
    let run = Duration::from_millis(1500);
    let mut results = Vec::new();
    for attempt in 0..3u8 {
        let base = acquire_loop(&b, run).await;
        let storm_from: IpAddr = [127, 0, 0, 2 + attempt].into();
        let (with_storm, storm) = tokio::join!(
            acquire_loop(&b, run),
            b.bad_token_storm(storm_from, 200, Duration::from_secs(1))
        );
        check_storm(&storm?);
        // The storm's address is shut out, even with a right token, until it refills.
        let blocked = reqwest::Client::builder()
            .local_address(storm_from)
            .build()
            .unwrap()
            .post(format!("{}/v1/leases", b.url))
            .bearer_auth(TERMINAL_TOKEN)
            .json(&serde_json::json!({"user": "dr-x"}))
            .send()
            .await
            .unwrap();
        assert_eq!(blocked.status(), 429);
        let spread = |v: &[Duration]| {
            [0.5, 0.9, 0.99, 1.0].map(|q| format!("{:.1?}", quantile(v.to_vec(), q)))
        };
        eprintln!(
            "p50/p90/p99/max without the storm {:?} ({} requests), with it {:?} ({} requests)",
            spread(&base),
            base.len(),
            spread(&with_storm),
            with_storm.len()
        );
        let (p99_base, p99_storm) = (quantile(base, 0.99), quantile(with_storm, 0.99));
        results.push((p99_base, p99_storm));
        // The terminals were served about as fast with the storm as without.
        if p99_storm <= p99_base * 2 + Duration::from_millis(50) {
            break;
        }
    }
    assert!(
        results
            .iter()
            .any(|&(base, storm)| storm <= base * 2 + Duration::from_millis(50)),
        "p99 (without, with the storm): {results:?}"
    );
    check_invariants(&b.audit().await?)
}
