//! With TLS configured, the API and the USB stream run over HTTPS: a terminal that trusts
//! the broker's certificate leases a desktop and forwards an ISO into it, and the desktop
//! reads exactly the disc's files.
#![allow(clippy::unwrap_used)]

mod common;

use airlock_usb::source::{prepare, Source};
use airlock_usb::transport::{connect, BrokerTarget, LeaseRef, Target, Token, TrustRoots};
use common::*;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread")]
async fn https_api_and_usb_stream() -> Result<()> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let tmp = tempfile::tempdir().unwrap();
    // A site CA and a broker certificate it signed.
    let site = airlock_testkit::tls::site_ca(tmp.path(), "site")?;
    let ca = site.ca.clone();

    let b = start(BrokerConfig {
        size: 1,
        tls: Some(site),
        ..config()?
    })?;
    assert!(b.url.starts_with("https://"), "{}", b.url);
    b.wait_clean(1, Duration::from_secs(240)).await?;
    // A client that does not trust the certificate cannot talk to the broker.
    let plain = reqwest::Client::new();
    assert!(plain
        .get(format!("{}/healthz", b.url))
        .send()
        .await
        .is_err());

    let lease = b.acquire_ok("dr-tls").await?;
    let usb_url = &lease.usb.url;
    assert!(usb_url.starts_with("https://"), "{usb_url}");
    let desk = lease.desktop_id.as_str();

    let disc = &artifacts()?.small;
    let prepared = prepare(&Source::Iso(disc.iso.clone())).await.unwrap();
    let target = Target::Broker(BrokerTarget {
        url: b.url.parse().unwrap(),
        lease: LeaseRef::parse(&lease.lease_id.to_string()).unwrap(),
        token: Token::parse(TERMINAL_TOKEN).unwrap(),
        trust: TrustRoots::CaFile(ca),
    });
    let stream = connect(&target, prepared.description()).await.unwrap();
    let session = tokio::spawn(prepared.run(stream));

    let serial = b.serial_log(desk);
    let report =
        tokio::task::spawn_blocking(move || serial.wait_cd(0, Duration::from_secs(90))).await??;
    report.check(disc)?;

    // Releasing the lease closes the stream; the terminal's session ends.
    assert_eq!(b.release(TERMINAL_TOKEN, &lease.lease_id).await?, 202);
    let summary = tokio::time::timeout(Duration::from_secs(15), session)
        .await
        .unwrap()
        .unwrap();
    assert!(summary.is_ok(), "{summary:?}");
    let audit = b.audit().await?;
    let attached = audit
        .iter()
        .find(|r| r["action"] == "usb_attached")
        .unwrap();
    assert!(
        attached["details"].as_str().unwrap().contains("08:06:50"),
        "{attached}"
    );
    let opened = audit
        .iter()
        .find(|r| r["action"] == "usb_stream_opened")
        .unwrap();
    assert!(
        opened["details"]
            .as_str()
            .unwrap()
            .contains("sample-small.iso"),
        "{opened}"
    );
    Ok(())
}
