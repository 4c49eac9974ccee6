//! The display password is new for every lease and stops working when the lease ends,
//! checked with a real SPICE client library.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread")]
async fn display_password_opens_only_during_its_lease() {
    assert!(spice_client_available(), "the SPICE client library is missing: apt-get install python3-gi gir1.2-spiceclientglib-2.0 (scripts/setup.sh does)");
    let b = Broker::start(Opts {
        size: 1,
        ..Opts::default()
    })
    .await;
    b.wait_clean(1, Duration::from_secs(240)).await;
    let port = (b.display_port_base).to_string();
    // Before any lease the broker forwards no display connection at all.
    assert_eq!(spice_auth(&port, ""), 1, "no display outside a lease");
    let l = b.acquire_ok("dr-view").await;
    assert_eq!(l["display"]["port"].as_u64().unwrap().to_string(), port);
    let pw = l["display"]["password"].as_str().unwrap().to_owned();
    assert_eq!(
        spice_auth(&port, &pw),
        0,
        "the lease's password opens the display"
    );
    assert_eq!(
        spice_auth(&port, "wrong-password"),
        2,
        "a wrong password is refused by QEMU"
    );
    assert_eq!(
        b.release(TERMINAL_TOKEN, l["lease_id"].as_str().unwrap())
            .await,
        202
    );
    // At once after release, and after the reset, the old password does not open it.
    assert_ne!(spice_auth(&port, &pw), 0);
    b.wait_desktop(
        l["desktop_id"].as_str().unwrap(),
        Duration::from_secs(120),
        |d| d["state"] == "clean" && d["resets"].as_i64() == Some(1),
    )
    .await;
    assert_eq!(
        spice_auth(&port, &pw),
        1,
        "a clean desktop's display is not forwarded"
    );
    // The next lease (same desktop: the pool has one) gets a different password; the old
    // one is refused by the desktop itself.
    let l2 = b.acquire_ok("dr-next").await;
    assert_eq!(l2["desktop_id"], l["desktop_id"]);
    let pw2 = l2["display"]["password"].as_str().unwrap();
    assert_ne!(pw2, pw);
    assert_eq!(
        spice_auth(&port, &pw),
        2,
        "the ended lease's password is refused"
    );
    assert_eq!(spice_auth(&port, pw2), 0);
}
