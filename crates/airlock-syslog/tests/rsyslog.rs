//! The forwarder against a real rsyslog (Debian `rsyslog`, `rsyslog-gnutls`) on
//! loopback, without a broker: over TLS the server's certificate is checked (a server
//! signed by another CA gets nothing), and a server that asks for a client certificate
//! gets one; what arrives parses as RFC 5424.
#![allow(clippy::unwrap_used)]

use airlock_store::{AuditEntry, Store};
use airlock_syslog::{Facility, ForwardConfig, Forwarder, Header, SdId, Transport};
use airlock_testkit::rsyslog::{Rsyslog, RsyslogTls};
use airlock_testkit::RunDir;
use anyhow::Result;
use std::path::Path;
use std::time::{Duration, Instant};

fn database(dir: &Path, n: usize) -> Result<Store> {
    let mut s = Store::open(&dir.join("airlock.db"))?;
    for i in 0..n {
        s.audit(
            1_764_756_900_000 + i as i64,
            AuditEntry::new("broker_started").user(format!("u{i}\n\"]")),
        )?;
    }
    Ok(s)
}

fn forwarder(dir: &Path, address: String, transport: Transport) -> Result<Forwarder> {
    let h = Header::new(Facility::AUTHPRIV, "test-host", "airlockd", "1")?;
    let mut c = ForwardConfig::new(
        address,
        transport,
        h,
        SdId::new("airlock@32473")?,
        dir.join("audit-forward.cursor"),
    );
    c.retry_initial = Duration::from_millis(100);
    c.retry_max = Duration::from_millis(500);
    let source = Store::open_read_only(&dir.join("airlock.db"))?;
    Ok(Forwarder::spawn(c, source, Box::new(|_, _| {})))
}

async fn until(what: &str, secs: u64, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn tls(ca: &Path, client: Option<(&Path, &Path)>) -> Transport {
    Transport::Tls {
        config: airlock_syslog::transport::tls_client_config(ca, client).unwrap(),
        server_name: airlock_syslog::transport::server_name("localhost").unwrap(),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn tls_checks_the_server_and_presents_the_client_certificate() -> Result<()> {
    let dir = RunDir::new("syslog-tls-")?;
    let site = airlock_testkit::tls::site_ca(dir.path(), "arr")?;
    let other = airlock_testkit::tls::site_ca(dir.path(), "other")?;
    let rsyslog = Rsyslog::start_tls(
        &dir.join("rsyslog"),
        RsyslogTls {
            ca: site.ca.clone(),
            cert: site.cert.clone(),
            key: site.key.clone(),
            require_client_cert: true,
        },
    )?;
    let _db = database(dir.path(), 5)?;

    // A CA that did not sign the server's certificate: nothing is sent.
    let f = forwarder(
        dir.path(),
        rsyslog.address(),
        tls(&other.ca, Some((&site.cert, &site.key))),
    )?;
    until("a failure", 10, || f.status().failing_since.is_some()).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let s = f.status();
    assert!(!s.connected && s.forwarded_seq == 0, "{s:?}");
    assert!(
        s.last_error.unwrap().contains("certificate"),
        "{:?}",
        f.status()
    );
    f.shutdown().await;

    // The right CA but no client certificate: the server refuses it.
    let f = forwarder(dir.path(), rsyslog.address(), tls(&site.ca, None))?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let s = f.status();
    assert_eq!(s.forwarded_seq, 0, "{s:?}");
    // One outage all along: a connection the server closes at once is no recovery.
    assert!(s.failing_since.is_some() && !s.connected, "{s:?}");
    f.shutdown().await;
    assert!(rsyslog.received().is_empty());

    // Both: every record arrives.
    let f = forwarder(
        dir.path(),
        rsyslog.address(),
        tls(&site.ca, Some((&site.cert, &site.key))),
    )?;
    until("5 forwarded", 20, || f.status().forwarded_seq == 5).await;
    f.shutdown().await;
    let got = rsyslog.wait_for("5 messages", Duration::from_secs(10), |g| g.len() >= 5)?;
    for (i, line) in got.iter().enumerate() {
        let p = airlock_syslog::parse::parse(line)?;
        assert_eq!(
            p.param("airlock@32473", "seq"),
            Some((i + 1).to_string().as_str())
        );
        assert_eq!(
            p.param("airlock@32473", "user"),
            Some(format!("u{i}\u{FFFD}\"]").as_str())
        );
    }
    Ok(())
}
