//! Audit forwarding to a real rsyslog on loopback (`[audit.forward]`): every record of
//! the database arrives as a strict RFC 5424 message with its chain links and ATNA codes
//! in structured data and the record as JSON; with rsyslog stopped the broker keeps
//! leasing, the backlog shows in `/metrics` and in `/healthz`, and everything arrives
//! once rsyslog is back; the records of the broker's stop are sent at shutdown. Over TLS
//! with a client certificate as well.
#![allow(clippy::unwrap_used)]

mod common;

use airlock_store::{AuditRecord, Store};
use airlock_syslog::parse::{parse, Parsed};
use airlock_testkit::broker::AuditForward;
use airlock_testkit::rsyslog::{Rsyslog, RsyslogTls};
use airlock_testkit::RunDir;
use common::*;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

const SD_ID: &str = "airlock@32473";
const HOSTNAME: &str = "airlock-test-broker";

fn records(b: &Broker) -> Result<Vec<AuditRecord>> {
    Ok(Store::open_read_only(&b.state.join("airlock.db"))?.audit_after(0, 1_000_000)?)
}

/// Every message rsyslog got, parsed strictly, by `seq` (a record sent twice must be
/// the same message twice).
fn received(r: &Rsyslog) -> Result<BTreeMap<i64, Parsed>> {
    let mut by_seq = BTreeMap::new();
    for line in r.received() {
        let p = parse(&line).with_context(|| format!("{:?}", String::from_utf8_lossy(&line)))?;
        let seq: i64 = p
            .param(SD_ID, "seq")
            .context("no seq")?
            .parse()
            .context("seq")?;
        if let Some(earlier) = by_seq.insert(seq, p.clone()) {
            ensure!(earlier == p, "record {seq} arrived twice, differently");
        }
    }
    Ok(by_seq)
}

/// Checks one received message against its record in the database.
fn check_message(p: &Parsed, r: &AuditRecord) -> Result<()> {
    let what = format!("record {} ({})", r.seq, r.action);
    // authpriv (10) × 8 + a severity from the ATNA outcome.
    ensure!((80..=87).contains(&p.prival), "{what}: PRI {}", p.prival);
    ensure!(p.version == 1, "{what}: VERSION {}", p.version);
    let ts = p.timestamp.as_deref().context("no TIMESTAMP")?;
    ensure!(
        ts.ends_with('Z') && ts.len() == 24,
        "{what}: TIMESTAMP {ts}"
    );
    ensure!(
        p.hostname.as_deref() == Some(HOSTNAME),
        "{what}: HOSTNAME {:?}",
        p.hostname
    );
    ensure!(
        p.app_name.as_deref() == Some("airlockd"),
        "{what}: APP-NAME"
    );
    ensure!(
        p.procid
            .as_deref()
            .is_some_and(|pid| pid.parse::<u32>().is_ok()),
        "{what}: PROCID"
    );
    ensure!(
        p.msgid.as_deref() == Some(r.action.as_str()),
        "{what}: MSGID {:?}",
        p.msgid
    );
    for (name, want) in [
        ("seq", Some(r.seq.to_string())),
        ("hash", Some(r.hash.clone())),
        ("prev_hash", Some(r.prev_hash.clone())),
        ("terminal", r.terminal.clone()),
        ("user", r.user.clone()),
        ("desktop", r.desktop.clone()),
        ("lease", r.lease.clone()),
    ] {
        ensure!(
            p.param(SD_ID, name) == want.as_deref(),
            "{what}: SD {name} = {:?}, want {want:?}",
            p.param(SD_ID, name)
        );
    }
    let atna = airlock_store::atna::classify_text(&r.action, &r.details);
    ensure!(
        p.param(SD_ID, "atna_event") == Some(atna.event_id.code.to_string().as_str()),
        "{what}: atna_event"
    );
    ensure!(
        p.param(SD_ID, "atna_outcome") == Some(atna.outcome.code().to_string().as_str()),
        "{what}: atna_outcome"
    );
    ensure!(
        p.param(SD_ID, "atna_action") == Some(atna.action_code.as_str()),
        "{what}: atna_action"
    );
    let msg: serde_json::Value =
        serde_json::from_str(p.msg_utf8().context("MSG is not UTF-8 after a BOM")?)?;
    ensure!(
        msg["seq"] == r.seq && msg["ts"] == r.ts && msg["action"] == r.action.as_str(),
        "{what}: MSG {msg}"
    );
    // The receiver can recompute the record's hash from MSG.
    let back = AuditRecord {
        details: msg["details"].as_str().context("details")?.to_owned(),
        ..r.clone()
    };
    ensure!(
        back.expected_hash(&r.prev_hash) == r.hash,
        "{what}: the hash does not follow from MSG"
    );
    Ok(())
}

/// Waits until every record of the database arrived, and checks them all.
fn all_arrive(b: &Broker, r: &Rsyslog, timeout: Duration) -> Result<usize> {
    let deadline = Instant::now() + timeout;
    loop {
        let want = records(b)?;
        let got = received(r)?;
        let missing: Vec<i64> = want
            .iter()
            .map(|x| x.seq)
            .filter(|s| !got.contains_key(s))
            .collect();
        if missing.is_empty() {
            for rec in &want {
                check_message(&got[&rec.seq], rec)?;
            }
            return Ok(want.len());
        }
        if Instant::now() > deadline {
            anyhow::bail!(
                "records {missing:?} of {} never arrived at rsyslog; broker log:\n{}",
                want.len(),
                b.log_tail(40)
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A metric's value in `/metrics`.
fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|rest| rest.strip_prefix(' ')))
        .and_then(|v| v.trim().parse().ok())
}

async fn lease_and_release(b: &Broker, user: &str) -> Result<()> {
    b.wait_clean(1, Duration::from_secs(240)).await?;
    let lease = b.acquire_ok(user).await?;
    ensure!(
        b.release(TERMINAL_TOKEN, &lease.lease_id).await? == 202,
        "release"
    );
    Ok(())
}

fn forward_to(r: &Rsyslog, transport: &str) -> AuditForward {
    AuditForward {
        address: r.address(),
        transport: transport.into(),
        hostname: Some(HOSTNAME.into()),
        retry_max_s: Some(1),
        problem_after_s: Some(2),
        ..AuditForward::default()
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn records_reach_rsyslog_and_survive_its_outage() -> Result<()> {
    let dir = RunDir::new("audit-syslog-")?;
    let mut rsyslog = Rsyslog::start(&dir.join("rsyslog"))?;
    let mut b = start(BrokerConfig {
        size: 1,
        audit_forward: Some(forward_to(&rsyslog, "tcp")),
        ..config()?
    })?;
    lease_and_release(&b, "dr-syslog").await?;
    let n = all_arrive(&b, &rsyslog, Duration::from_secs(30))?;
    ensure!(n >= 4, "only {n} records");
    let m = b.metrics().await?;
    assert_eq!(
        metric(&m, "airlock_audit_forward_connected"),
        Some(1.0),
        "{m}"
    );
    assert!(
        metric(&m, "airlock_audit_forwarded_total").unwrap_or(0.0) >= 1.0,
        "{m}"
    );
    assert!(
        metric(&m, "airlock_audit_forward_last_success_timestamp_seconds").unwrap_or(0.0) > 1.7e9,
        "{m}"
    );

    // rsyslog stops: the broker goes on leasing; the backlog grows and shows.
    rsyslog.stop()?;
    let before = records(&b)?.len();
    for i in 0..2 {
        lease_and_release(&b, &format!("dr-outage-{i}")).await?;
    }
    ensure!(
        records(&b)?.len() > before,
        "no new records while rsyslog was away"
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let m = b.metrics().await?;
        let backlog = metric(&m, "airlock_audit_forward_backlog").unwrap_or(0.0);
        let (_, h) = b.healthz().await?;
        let problem = h["problems"].to_string();
        if backlog > 0.0 && problem.contains("audit forwarding to") {
            assert_eq!(
                metric(&m, "airlock_audit_forward_connected"),
                Some(0.0),
                "{m}"
            );
            assert!(problem.contains("records wait in the database"), "{h}");
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "no backlog or /healthz problem while rsyslog is down: backlog {backlog}, {h}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // The log says so once, not at every retry.
    let log = std::fs::read_to_string(b.log_path())?;
    let warned = log
        .matches("audit forwarding to the syslog server failed")
        .count();
    assert_eq!(warned, 1, "{}", b.log_tail(40));

    // rsyslog returns on the same port: everything arrives, the backlog drains.
    rsyslog.restart()?;
    all_arrive(&b, &rsyslog, Duration::from_secs(60))?;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let m = b.metrics().await?;
        if metric(&m, "airlock_audit_forward_backlog") == Some(0.0) {
            assert_eq!(
                metric(&m, "airlock_audit_forward_connected"),
                Some(1.0),
                "{m}"
            );
            break;
        }
        ensure!(Instant::now() < deadline, "the backlog did not drain: {m}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let (_, h) = b.healthz().await?;
    assert!(
        !h["problems"].to_string().contains("audit forwarding"),
        "{h}"
    );
    assert!(std::fs::read_to_string(b.log_path())?
        .contains("audit forwarding to the syslog server works again"));

    // At shutdown the broker's last records are sent before it exits.
    let status = b.terminate()?;
    assert!(status.success(), "airlockd exited {status}");
    let last = records(&b)?.last().cloned().context("no records")?;
    assert_eq!(last.action, "broker_stopped");
    all_arrive(&b, &rsyslog, Duration::from_secs(5))?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn records_reach_rsyslog_over_mutual_tls() -> Result<()> {
    let dir = RunDir::new("audit-syslog-tls-")?;
    let site = airlock_testkit::tls::site_ca(dir.path(), "arr")?;
    let rsyslog = Rsyslog::start_tls(
        &dir.join("rsyslog"),
        RsyslogTls {
            ca: site.ca.clone(),
            cert: site.cert.clone(),
            key: site.key.clone(),
            require_client_cert: true,
        },
    )?;
    let b = start(BrokerConfig {
        size: 1,
        audit_forward: Some(AuditForward {
            ca_file: Some(site.ca.clone()),
            client_cert: Some(site.cert.clone()),
            client_key: Some(site.key.clone()),
            server_name: Some("localhost".into()),
            ..forward_to(&rsyslog, "tls")
        }),
        ..config()?
    })?;
    lease_and_release(&b, "dr-tls").await?;
    all_arrive(&b, &rsyslog, Duration::from_secs(30))?;
    Ok(())
}
