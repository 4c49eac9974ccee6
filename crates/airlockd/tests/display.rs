//! The display password is new for every lease and stops working when the lease ends,
//! checked with a real SPICE client library.
#![allow(clippy::unwrap_used)]

mod common;

use airlock_testkit::spice::{self, AuthResult};
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
    assert_eq!(
        spice::auth(port, &pw)?,
        AuthResult::Opened,
        "the lease's password opens the display"
    );
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
