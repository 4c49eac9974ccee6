//! The display password is new for every lease and stops working when the lease ends;
//! with TLS the display port speaks only TLS with the broker's certificate. Checked with
//! a real SPICE client library.
#![allow(clippy::unwrap_used)]

mod common;

use airlock_testkit::spice::{self, AuthResult, Endpoint};
use airlock_testkit::tls;
use common::*;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread")]
async fn display_password_opens_only_during_its_lease() -> Result<()> {
    spice::require_client()?;
    let b = one_clean_desktop().await?;
    let port = b.display_port_base;
    // Before any lease the broker forwards no display connection at all.
    assert_eq!(
        spice::auth(port, "")?,
        AuthResult::Failed,
        "no display outside a lease"
    );
    let l = b.acquire_ok("dr-view").await?;
    let display = l.display.clone().context("a display in the lease")?;
    assert_eq!(display.port, port);
    let pw = display.password;
    assert!(
        !display.tls,
        "no TLS on loopback without a broker certificate"
    );
    assert_eq!(
        spice::auth(port, &pw)?,
        AuthResult::Opened,
        "the lease's password opens the display"
    );
    // What the TLS test checks is absent: plaintext SPICE answers a link message.
    let reply = spice::link_probe(port)?;
    assert!(reply.starts_with(b"REDQ"), "{reply:?}");
    assert_eq!(
        spice::auth(port, "wrong-password")?,
        AuthResult::Refused,
        "a wrong password is refused by QEMU"
    );
    assert_eq!(b.release(TERMINAL_TOKEN, &l.lease_id).await?, 202);
    // At once after release, and after the reset, the old password does not open it.
    assert_ne!(spice::auth(port, &pw)?, AuthResult::Opened);
    b.wait_desktop(l.desktop_id.as_str(), Duration::from_secs(120), |d| {
        d["state"] == "clean" && d["resets"].as_i64() == Some(1)
    })
    .await?;
    assert_eq!(
        spice::auth(port, &pw)?,
        AuthResult::Failed,
        "a clean desktop's display is not forwarded"
    );
    // The next lease (same desktop: the pool has one) gets a different password; the old
    // one is refused by the desktop itself.
    let l2 = b.acquire_ok("dr-next").await?;
    assert_eq!(l2.desktop_id, l.desktop_id);
    let pw2 = l2.display.clone().context("a display")?.password;
    assert_ne!(pw2, pw);
    assert_eq!(
        spice::auth(port, &pw)?,
        AuthResult::Refused,
        "the ended lease's password is refused"
    );
    assert_eq!(spice::auth(port, &pw2)?, AuthResult::Opened);
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn display_speaks_only_tls_with_the_brokers_certificate() -> Result<()> {
    spice::require_client()?;
    let tmp = tempfile::tempdir().unwrap();
    let site = tls::site_ca(tmp.path(), "site")?;
    let stranger = tls::site_ca(tmp.path(), "stranger")?;
    let b = start(BrokerConfig {
        size: 1,
        tls: Some(site.clone()),
        display_host_subject: Some(tls::HOST_SUBJECT.into()),
        ..config()?
    })?;
    b.wait_clean(1, Duration::from_secs(240)).await?;
    let l = b.acquire_ok("dr-tls-view").await?;
    let display = l.display.clone().context("a display in the lease")?;
    assert!(display.tls, "{display:?}");
    assert_eq!(display.host_subject.as_deref(), Some(tls::HOST_SUBJECT));
    let pw = display.password.clone();

    // A plain TCP client gets no SPICE greeting: nothing reaches QEMU before a TLS
    // handshake, and a plaintext SPICE client cannot open the display.
    let reply = spice::link_probe(display.port)?;
    assert!(!reply.windows(4).any(|w| w == b"REDQ"), "{reply:?}");
    assert_ne!(spice::auth(display.port, &pw)?, AuthResult::Opened);

    // The lease's password opens it over TLS for a client that trusts the site CA, by
    // the certificate subject of the grant or by the host name.
    let trusted = Endpoint::of(&display, Some(site.ca.clone()));
    let a = spice::connect(&trusted, &pw)?;
    assert_eq!(a.result, AuthResult::Opened, "{}", a.said);
    let mut by_name = trusted.clone();
    if let Some(t) = by_name.tls.as_mut() {
        t.host_subject = None;
    }
    let a = spice::connect(&by_name, &pw)?;
    assert_eq!(a.result, AuthResult::Opened, "{}", a.said);
    let a = spice::connect(&trusted, "wrong-password")?;
    assert_eq!(a.result, AuthResult::Refused, "{}", a.said);

    // A client that trusts another CA fails at the TLS handshake, and says so.
    let a = spice::connect(&Endpoint::of(&display, Some(stranger.ca.clone())), &pw)?;
    eprintln!("a client that does not trust the CA: {}", a.said);
    assert_eq!(a.result, AuthResult::TlsFailed, "{}", a.said);
    assert!(a.said.contains("certificate verification"), "{}", a.said);

    // After release the first lease's password no longer opens the display.
    assert_eq!(b.release(TERMINAL_TOKEN, &l.lease_id).await?, 202);
    assert_ne!(spice::connect(&trusted, &pw)?.result, AuthResult::Opened);
    b.wait_desktop(l.desktop_id.as_str(), Duration::from_secs(120), |d| {
        d["state"] == "clean" && d["resets"].as_i64() == Some(1)
    })
    .await?;
    let l2 = b.acquire_ok("dr-tls-next").await?;
    let pw2 = l2.display.clone().context("a display")?.password;
    let a = spice::connect(&trusted, &pw)?;
    assert_eq!(a.result, AuthResult::Refused, "{}", a.said);
    let a = spice::connect(&trusted, &pw2)?;
    assert_eq!(a.result, AuthResult::Opened, "{}", a.said);
    let (_, health) = b.healthz().await?;
    assert_eq!(health["problems"], serde_json::json!([]), "{health}");
    Ok(())
}
