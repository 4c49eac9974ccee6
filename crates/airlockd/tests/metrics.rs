//! `/metrics` against a real 2-desktop pool of the demo guest (TCG): its numbers match
//! `GET /v1/desktops` and the leases at each moment (pool clean, leases active, refusals,
//! a refused USB stream, after release and reset), it passes `promtool check metrics`
//! (Debian's `prometheus`), it serves OpenMetrics only to a scraper that asks for it, and
//! with `[metrics]` set it answers 401 without the token. And the example alert rules in
//! `packaging/prometheus/` pass `promtool check rules` and `promtool test rules`.
#![allow(clippy::unwrap_used)]

mod common;

use airlock_testkit::broker::Limits;
use common::*;
use serde_json::Value;
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use usbredir::host::{DeviceLayout, HostConfig, HostSession};
use usbredir::{DeviceConnect, Endpoint, EndpointType, EpInfo, Interface, InterfaceInfo, Speed};

const UP: Duration = Duration::from_secs(240);

/// The token of `[metrics]` in the test broker.
const METRICS_TOKEN: &str = "metrics-token-for-the-test-0123456789";

/// Debian 12's `prometheus` package has `promtool`.
const PROMTOOL: &[(&str, &str)] = &[("promtool", "prometheus")];

/// A scrape: every sample by its series as printed (`name{labels}`), and the raw text.
struct Scrape {
    samples: BTreeMap<String, f64>,
    text: String,
}

impl Scrape {
    fn parse(text: String) -> Scrape {
        let samples = text
            .lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
            .map(|l| {
                let (series, value) = l.rsplit_once(' ').unwrap();
                (series.to_owned(), value.parse::<f64>().unwrap())
            })
            .collect();
        Scrape { samples, text }
    }

    /// The sample `series`, 0 when absent (a counter not yet counted).
    fn get(&self, series: &str) -> f64 {
        self.samples.get(series).copied().unwrap_or(0.0)
    }

    /// The sample `series`, which must be present.
    fn must(&self, series: &str) -> f64 {
        *self
            .samples
            .get(series)
            .unwrap_or_else(|| panic!("no {series} in\n{}", self.text))
    }

    /// `airlock_desktops` by state.
    fn desktops(&self) -> BTreeMap<String, f64> {
        self.samples
            .iter()
            .filter_map(|(k, v)| {
                let state = k.strip_prefix("airlock_desktops{state=\"")?;
                Some((state.strip_suffix("\"}")?.to_owned(), *v))
            })
            .collect()
    }
}

/// `GET /metrics` with `token` and `accept`: status, content type and body.
async fn get_metrics(
    b: &Broker,
    token: Option<&str>,
    accept: Option<&str>,
) -> (u16, String, String, reqwest::header::HeaderMap) {
    let mut r = b.http.get(format!("{}/metrics", b.url));
    if let Some(t) = token {
        r = r.bearer_auth(t);
    }
    if let Some(a) = accept {
        r = r.header("accept", a);
    }
    let r = r.send().await.unwrap();
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    let ct = headers
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    (status, ct, r.text().await.unwrap(), headers)
}

/// Scrapes as a plain client (Prometheus text 0.0.4), checks the text with `promtool
/// check metrics` and that its desktops and leases match the admin API's.
async fn scrape_and_check(b: &Broker) -> Result<Scrape> {
    let (status, ct, text, _) = get_metrics(b, Some(METRICS_TOKEN), None).await;
    ensure!(status == 200, "GET /metrics: {status} {text}");
    ensure!(ct.starts_with("text/plain; version=0.0.4"), "{ct}");
    promtool_check_metrics(&text)?;
    let s = Scrape::parse(text);
    let desktops = b.desktops().await?;
    // Each desktop once, by the state the console shows.
    let mut want: BTreeMap<String, f64> = BTreeMap::new();
    for d in &desktops {
        let state = d["state"].as_str().unwrap();
        let shown = match (d["drained"].as_bool().unwrap_or(false), state) {
            (true, "leased") => "draining",
            (true, _) => "drained",
            (false, s) => s,
        };
        *want.entry(shown.to_owned()).or_default() += 1.0;
    }
    let got = s.desktops();
    for (state, n) in &got {
        ensure!(
            want.get(state).copied().unwrap_or(0.0) == *n,
            "airlock_desktops{{state=\"{state}\"}} is {n}, the admin API has {want:?}\n{}",
            s.text
        );
    }
    for (state, n) in &want {
        ensure!(
            got.get(state) == Some(n),
            "state {state} ({n}) missing in {got:?}"
        );
    }
    for state in [
        "starting",
        "clean",
        "leased",
        "dirty",
        "resetting",
        "broken",
        "draining",
        "drained",
    ] {
        ensure!(
            got.contains_key(state),
            "no airlock_desktops{{state=\"{state}\"}}\n{}",
            s.text
        );
    }
    let leased = desktops.iter().filter(|d| !d["lease"].is_null()).count();
    ensure!(
        s.must("airlock_leases_active") == leased as f64,
        "airlock_leases_active {} but {leased} desktops have a lease",
        s.must("airlock_leases_active")
    );
    ensure!(s.must("airlock_queue_waiting") == 0.0);
    Ok(s)
}

/// `promtool check metrics` on `text` (stdin): it must exit 0 and say nothing.
fn promtool_check_metrics(text: &str) -> Result<()> {
    airlock_testkit::tools::require(PROMTOOL)?;
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("running promtool")?;
    child.stdin.take().unwrap().write_all(text.as_bytes())?;
    let out = child.wait_with_output()?;
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    ensure!(
        out.status.success() && said.trim().is_empty(),
        "promtool check metrics: {}: {said}\n---\n{text}",
        out.status
    );
    Ok(())
}

/// `POST /v1/leases` as `token` for `user`: the status and body.
async fn ask(b: &Broker, token: &str, user: &str) -> (u16, Value) {
    let r = b.acquire(token, user).await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or_default())
}

/// Reads until `n` bytes came, or EOF/timeout; returns (bytes, eof).
async fn read_some<S: AsyncRead + Unpin>(
    s: &mut S,
    n: usize,
    timeout: Duration,
) -> (Vec<u8>, bool) {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return (got, true),
            Ok(Ok(k)) => {
                got.extend_from_slice(&buf[..k]);
                if got.len() >= n {
                    return (got, false);
                }
            }
            Err(_) => return (got, false),
        }
    }
}

/// Opens the lease's USB stream, says hello as a usbredir host, reads the desktop's
/// hello and announces a keyboard, which the relay refuses; waits for the stream's end.
async fn refused_keyboard_stream(b: &Broker, lease: &str) -> Result<()> {
    let addr = b.url.trim_start_matches("http://").to_owned();
    let mut s = TcpStream::connect(&addr).await?;
    let req = format!(
        "GET /v1/leases/{lease}/usb HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {TERMINAL_TOKEN}\r\nConnection: Upgrade\r\nUpgrade: airlock-usbredir/1\r\n\r\n"
    );
    s.write_all(req.as_bytes()).await?;
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        ensure!(
            s.read(&mut byte).await? == 1,
            "the broker closed the upgrade"
        );
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    ensure!(head.starts_with("HTTP/1.1 101"), "{head}");
    let mut host = HostSession::new(HostConfig::default());
    s.write_all(&host.take_output()).await?;
    let (hello, _) = read_some(&mut s, 80, Duration::from_secs(30)).await;
    ensure!(
        hello.len() >= 80,
        "the desktop's usbredir hello did not come through the relay in 30 s ({} bytes)",
        hello.len()
    );
    host.feed(&hello)?;
    while let Ok(Some(_)) = host.next_event() {}
    let interrupt = Endpoint {
        ep_type: EndpointType::Interrupt,
        interval: 10,
        interface: 0,
        max_packet_size: 8,
        max_streams: 0,
    };
    host.connect_device(
        DeviceConnect {
            speed: Speed::Full,
            device_class: 0,
            device_subclass: 0,
            device_protocol: 0,
            vendor_id: 0x046d,
            product_id: 0xc31c,
            device_version_bcd: 0x0100,
        },
        DeviceLayout {
            interfaces: InterfaceInfo {
                interfaces: vec![Interface {
                    number: 0,
                    class: 3,
                    subclass: 1,
                    protocol: 1,
                }],
            },
            endpoints: EpInfo::new().with(0x81, interrupt),
        },
    )?;
    s.write_all(&host.take_output()).await?;
    let (_, eof) = read_some(&mut s, usize::MAX, Duration::from_secs(10)).await;
    ensure!(eof, "the relay did not close the keyboard's stream");
    Ok(())
}

/// Waits for the audit record `action` of `lease`; its details.
async fn audited(b: &Broker, action: &str, lease: &str) -> Result<Value> {
    for _ in 0..100 {
        let newest = b.admin_get("/v1/audit?limit=200").await?;
        if let Some(r) = newest["records"]
            .as_array()
            .context("no records in /v1/audit")?
            .iter()
            .find(|r| r["action"] == action && r["lease"] == lease)
        {
            let d = &r["details"];
            return Ok(match d.as_str() {
                Some(text) => serde_json::from_str(text)?,
                None => d.clone(),
            });
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    anyhow::bail!("no {action} record for lease {lease}")
}

/// A real Prometheus (Debian's `prometheus`, its own process, never the system
/// service) scrapes the broker every second with the token in a credentials file and
/// the example rules loaded: it must see the pool's clean desktops (so it took the
/// OpenMetrics answer it asks for, and the token) and load all 8 rules.
async fn prometheus_scrapes(b: &Broker, clean: usize) -> Result<()> {
    airlock_testkit::tools::require(&[("prometheus", "prometheus")])?;
    let d = tempfile::tempdir()?;
    let token = d.path().join("metrics.token");
    std::fs::write(&token, METRICS_TOKEN)?;
    let rules = packaging().join("airlock-alerts.yml");
    let target = b.url.trim_start_matches("http://");
    let config = d.path().join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
             rule_files:\n  - {rules}\n\
             scrape_configs:\n  - job_name: airlock\n    authorization:\n      type: Bearer\n      \
             credentials_file: {token}\n    static_configs:\n      - targets: ['{target}']\n",
            rules = rules.display(),
            token = token.display(),
        ),
    )?;
    let port = airlock_testkit::net::free_ports(1)?;
    let log = d.path().join("prometheus.log");
    let logf = std::fs::File::create(&log)?;
    let _prometheus = airlock_testkit::process::Proc::spawn(
        Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                d.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdin(Stdio::null())
            .stdout(logf.try_clone()?)
            .stderr(logf),
        "prometheus",
    )?;
    let api = format!("http://127.0.0.1:{port}/api/v1");
    let query = |q: &'static str| {
        let url = format!("{api}/query");
        async move {
            let r = b.http.get(url).query(&[("query", q)]).send().await.ok()?;
            let v: Value = r.json().await.ok()?;
            v["data"]["result"][0]["value"][1]
                .as_str()
                .and_then(|s| s.parse::<f64>().ok())
        }
    };
    let mut seen = (None, None);
    for _ in 0..120 {
        seen = (
            query("up{job=\"airlock\"}").await,
            query("airlock_desktops{job=\"airlock\",state=\"clean\"}").await,
        );
        if seen == (Some(1.0), Some(clean as f64)) {
            let r: Value = b
                .http
                .get(format!("{api}/rules"))
                .send()
                .await?
                .json()
                .await?;
            let n = r["data"]["groups"][0]["rules"]
                .as_array()
                .map_or(0, Vec::len);
            ensure!(n == 8, "Prometheus loaded {n} rules: {r}");
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    anyhow::bail!(
        "Prometheus did not scrape the broker (up, clean desktops: {seen:?}); its log:\n{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_match_the_pool_and_pass_promtool() -> Result<()> {
    airlock_testkit::tools::require(PROMTOOL)?;
    let b = start(BrokerConfig {
        metrics_token: Some(METRICS_TOKEN.into()),
        limits: Limits {
            leases_per_terminal: Some(2),
            acquire_burst: Some(3),
            acquires_per_minute: Some(1),
            ..Limits::generous()
        },
        ..config()?
    })?;
    b.wait_clean(2, UP).await?;

    // The token: none, or a wrong one, gets 401 with a Bearer challenge.
    for token in [None, Some("not-the-metrics-token-at-all")] {
        let (status, _, body, headers) = get_metrics(&b, token, None).await;
        assert_eq!(status, 401, "{body}");
        assert_eq!(headers["www-authenticate"], "Bearer");
        assert!(body.contains("[metrics]"), "{body}");
    }
    // (the admin token is not the metrics token)
    let (status, ..) = get_metrics(&b, Some(ADMIN_TOKEN), None).await;
    assert_eq!(status, 401);

    // The pool is clean.
    let clean = scrape_and_check(&b).await?;
    assert_eq!(clean.must("airlock_desktops{state=\"clean\"}"), 2.0);
    assert_eq!(clean.must("airlock_leases_active"), 0.0);
    assert_eq!(clean.must("airlock_usb_streams_active"), 0.0);
    assert!(
        clean.text.contains("airlock_info{version=\""),
        "{}",
        clean.text
    );
    assert!(!clean.text.contains("# EOF"), "{}", clean.text);
    prometheus_scrapes(&b, 2).await?;
    // No audit forwarding configured: its metrics are absent.
    assert!(
        !clean.text.contains("airlock_audit_forward"),
        "{}",
        clean.text
    );

    // OpenMetrics to a scraper that prefers it (Prometheus' own Accept header).
    let prometheus_accept = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
    let (status, ct, om, _) = get_metrics(&b, Some(METRICS_TOKEN), Some(prometheus_accept)).await;
    assert_eq!(status, 200);
    assert!(
        ct.starts_with("application/openmetrics-text; version=1.0.0"),
        "{ct}"
    );
    assert!(om.ends_with("# EOF\n"), "{om}");
    // (the desktops' first starts were counted as resets)
    assert!(om.contains("# TYPE airlock_resets counter\n"), "{om}");
    assert!(om.contains("airlock_resets_total{"), "{om}");

    // One lease active.
    let (status, body) = ask(&b, TERMINAL_TOKEN, "dr-metrics-1").await;
    assert_eq!(status, 201, "{body}");
    let lease1 = body["lease_id"].as_str().unwrap().to_owned();
    let one = scrape_and_check(&b).await?;
    assert_eq!(one.must("airlock_desktops{state=\"clean\"}"), 1.0);
    assert_eq!(one.must("airlock_desktops{state=\"leased\"}"), 1.0);
    assert_eq!(one.must("airlock_leases_active"), 1.0);
    assert_eq!(one.get("airlock_acquires_total{result=\"granted\"}"), 1.0);
    assert_eq!(one.must("airlock_acquire_seconds_count"), 1.0);
    assert!(one.must("airlock_acquire_seconds_sum") > 0.0);

    // A USB stream announcing a keyboard is refused by the relay; the bytes it passed
    // (the hellos) are counted as the audit record has them.
    refused_keyboard_stream(&b, &lease1).await?;
    let closed = audited(&b, "usb_stream_closed", &lease1).await?;
    let usb = scrape_and_check(&b).await?;
    assert_eq!(
        usb.must("airlock_usb_devices_refused_total{reason=\"interface_class\"}"),
        1.0,
        "{}",
        usb.text
    );
    let to_desktop = usb.must("airlock_usb_forwarded_bytes_total{direction=\"to_desktop\"}");
    let to_terminal = usb.must("airlock_usb_forwarded_bytes_total{direction=\"to_terminal\"}");
    // The terminal's hello reaches the desktop only once the desktop's own hello is in:
    // a stream refused before that passed bytes one way only.
    assert!(to_desktop + to_terminal > 0.0, "{}", usb.text);
    assert_eq!(
        closed["bytes_to_desktop"].as_f64(),
        Some(to_desktop),
        "{closed}"
    );
    assert_eq!(
        closed["bytes_to_terminal"].as_f64(),
        Some(to_terminal),
        "{closed}"
    );
    assert_eq!(usb.must("airlock_usb_streams_active"), 0.0);

    // Both desktops leased; the other terminal then gets 503 (no desktop) twice and,
    // its burst of 3 spent, 429.
    let (status, body) = ask(&b, TERMINAL2_TOKEN, "dr-metrics-2").await;
    assert_eq!(status, 201, "{body}");
    let lease2 = body["lease_id"].as_str().unwrap().to_owned();
    for _ in 0..2 {
        let (status, body) = ask(&b, TERMINAL2_TOKEN, "dr-metrics-3").await;
        assert_eq!(status, 503, "{body}");
    }
    let (status, body) = ask(&b, TERMINAL2_TOKEN, "dr-metrics-3").await;
    assert_eq!(status, 429, "{body}");
    let full = scrape_and_check(&b).await?;
    assert_eq!(full.must("airlock_desktops{state=\"clean\"}"), 0.0);
    assert_eq!(full.must("airlock_leases_active"), 2.0);
    assert_eq!(
        full.get("airlock_acquires_total{result=\"no_free_desktop\"}"),
        2.0
    );
    assert_eq!(
        full.get("airlock_acquires_total{result=\"rate_limited\"}"),
        1.0
    );
    assert_eq!(
        full.get("airlock_http_requests_refused_total{route=\"/v1/leases\",status=\"503\",error=\"no_free_desktop\"}"),
        2.0,
        "{}",
        full.text
    );
    assert_eq!(
        full.get("airlock_http_requests_refused_total{route=\"/v1/leases\",status=\"429\",error=\"rate_limited\"}"),
        1.0,
        "{}",
        full.text
    );

    // Release both: they are reset and clean again; two successful resets, timed.
    assert_eq!(b.release(TERMINAL_TOKEN, &lease1).await?, 202);
    assert_eq!(b.release(TERMINAL2_TOKEN, &lease2).await?, 202);
    b.wait_all_clean(UP).await?;
    let after = scrape_and_check(&b).await?;
    assert_eq!(after.must("airlock_desktops{state=\"clean\"}"), 2.0);
    assert_eq!(after.must("airlock_leases_active"), 0.0);
    assert_eq!(
        after.get("airlock_leases_ended_total{reason=\"released\"}"),
        2.0,
        "{}",
        after.text
    );
    let method = b.desktops().await?[0]["last_reset_method"]
        .as_str()
        .unwrap()
        .to_owned();
    let ok = format!("airlock_resets_total{{method=\"{method}\",result=\"ok\"}}");
    assert_eq!(after.get(&ok) - full.get(&ok), 2.0, "{}", after.text);
    let count = format!("airlock_reset_seconds_count{{method=\"{method}\"}}");
    assert_eq!(after.get(&count) - full.get(&count), 2.0, "{}", after.text);
    let resets: i64 = b
        .desktops()
        .await?
        .iter()
        .map(|d| d["resets"].as_i64().unwrap())
        .sum();
    assert_eq!(
        after.get(&count),
        resets as f64,
        "every reset timed: {}",
        after.text
    );
    Ok(())
}

/// The repository's `packaging/prometheus`.
fn packaging() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../packaging/prometheus")
}

/// `promtool ARGS` in `packaging/prometheus`: it must succeed; its output.
fn promtool(args: &[&str]) -> Result<String> {
    airlock_testkit::tools::require(PROMTOOL)?;
    let out = Command::new("promtool")
        .args(args)
        .current_dir(packaging())
        .output()
        .context("running promtool")?;
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    ensure!(
        out.status.success(),
        "promtool {}: {}\n{said}",
        args.join(" "),
        out.status
    );
    Ok(said)
}

#[test]
fn the_example_alert_rules_check_and_their_tests_pass() -> Result<()> {
    let said = promtool(&["check", "rules", "airlock-alerts.yml"])?;
    assert!(said.contains("SUCCESS: 8 rules found"), "{said}");
    let said = promtool(&["test", "rules", "airlock-alerts.test.yml"])?;
    assert!(said.contains("SUCCESS"), "{said}");
    // The test file fires the no-clean-desktop and the failing-resets alerts.
    let tests = std::fs::read_to_string(packaging().join("airlock-alerts.test.yml"))?;
    for alert in ["AirlockNoCleanDesktop", "AirlockResetsFailing"] {
        assert!(
            tests.contains(&format!(
                "alertname: {alert}\n        exp_alerts:\n          - exp_labels"
            )),
            "{alert} is never expected to fire"
        );
    }
    Ok(())
}

/// `airlockd --log-format json` (and `AIRLOCK_LOG_FORMAT=json`) writes one JSON object
/// per log line, with the level, the target and the message among the fields.
#[test]
fn logs_can_be_json_lines() -> Result<()> {
    let d = tempfile::tempdir()?;
    let disk = artifacts()?.guest.golden_disk.display().to_string();
    let config = d.path().join("c.toml");
    // Plain HTTP on a non-loopback address: the config check warns.
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = \"0.0.0.0:7480\"\nstate_dir = \"state\"\n[admin]\ntoken_sha256 = \"{h}\"\n\
             [pool]\nsize = 1\naccel = \"tcg\"\n[pool.guest]\ndisk = \"{disk}\"\n",
            h = "ab".repeat(32)
        ),
    )?;
    let run = |args: &[&str], env: Option<&str>| -> Result<std::process::Output> {
        let mut c = Command::new(env!("CARGO_BIN_EXE_airlockd"));
        c.args(args)
            .arg("--config")
            .arg(&config)
            .arg("check-config");
        c.env_remove("AIRLOCK_LOG_FORMAT").env_remove("AIRLOCK_LOG");
        if let Some(v) = env {
            c.env("AIRLOCK_LOG_FORMAT", v);
        }
        Ok(c.output()?)
    };
    for (args, env) in [
        (&["--log-format", "json"][..], None),
        (&[][..], Some("json")),
    ] {
        let out = run(args, env)?;
        ensure!(out.status.success(), "{out:?}");
        let stderr = String::from_utf8(out.stderr)?;
        let lines: Vec<Value> = stderr
            .lines()
            .map(serde_json::from_str)
            .collect::<Result<_, _>>()
            .with_context(|| format!("not JSON lines:\n{stderr}"))?;
        let warn = lines
            .iter()
            .find(|l| l["level"] == "WARN")
            .with_context(|| format!("no warning in\n{stderr}"))?;
        assert!(
            warn["fields"]["message"]
                .as_str()
                .unwrap()
                .contains("serving plain HTTP"),
            "{warn}"
        );
        assert_eq!(warn["fields"]["listen"], "0.0.0.0:7480", "{warn}");
        assert!(
            warn["timestamp"].is_string() && warn["target"].is_string(),
            "{warn}"
        );
    }
    // Text by default; a wrong format is refused, naming the variable.
    let out = run(&[], None)?;
    let stderr = String::from_utf8(out.stderr)?;
    assert!(
        stderr.contains("WARN") && !stderr.trim_start().starts_with('{'),
        "{stderr}"
    );
    let out = run(&[], Some("xml"))?;
    assert!(!out.status.success());
    assert!(String::from_utf8(out.stderr)?.contains("AIRLOCK_LOG_FORMAT"));
    Ok(())
}
