//! The broker's USB relay: one usbredir stream per lease, to that lease's desktop only,
//! closed on release; garbage and non-storage devices end the stream, not the desktop,
//! and the desktop's usb-redir device filters out non-storage devices itself.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use usbredir::host::{DeviceLayout, HostConfig, HostEvent, HostSession};
use usbredir::{DeviceConnect, Endpoint, EndpointType, EpInfo, Interface, InterfaceInfo, Speed};

const UP: Duration = Duration::from_secs(240);

/// Opens `GET /v1/leases/{id}/usb` with an upgrade; returns the status and, on 101, the
/// upgraded connection.
async fn open_usb(
    b: &Broker,
    token: &str,
    lease: &str,
    upgrade: bool,
) -> (u16, String, Option<TcpStream>) {
    let addr = b.url.trim_start_matches("http://").to_owned();
    let mut s = TcpStream::connect(&addr).await.unwrap();
    let up = if upgrade {
        "Connection: Upgrade\r\nUpgrade: airlock-usbredir/1\r\n"
    } else {
        ""
    };
    let req = format!(
        "GET /v1/leases/{lease}/usb HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\n{up}X-Airlock-Device: {{\"kind\":\"image\",\"image\":\"test.iso\"}}\r\n\r\n"
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if s.read(&mut byte).await.unwrap() == 0 {
            break;
        }
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    let status: u16 = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    if status == 101 {
        (status, head, Some(s))
    } else {
        let mut body = vec![0u8; 4096];
        let n = tokio::time::timeout(Duration::from_secs(2), s.read(&mut body))
            .await
            .map(|r| r.unwrap_or(0))
            .unwrap_or(0);
        (
            status,
            format!("{head}{}", String::from_utf8_lossy(&body[..n])),
            None,
        )
    }
}

/// Reads until `pred` holds on what was read, or EOF/timeout; returns (bytes, eof).
async fn read_until<S: AsyncRead + Unpin>(
    s: &mut S,
    pred: impl Fn(&[u8]) -> bool,
    timeout: Duration,
) -> (Vec<u8>, bool) {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return (got, true),
            Ok(Ok(n)) => {
                got.extend_from_slice(&buf[..n]);
                if pred(&got) {
                    return (got, false);
                }
            }
            Err(_) => return (got, false),
        }
    }
}

/// Says hello as a usbredir host and announces a USB keyboard; returns the events of
/// what the desktop's side answered within 5 s.
async fn announce_keyboard<S: AsyncRead + AsyncWrite + Unpin>(s: &mut S) -> Vec<HostEvent> {
    let mut host = HostSession::new(HostConfig::default());
    s.write_all(&host.take_output()).await.unwrap();
    let (hello, _) = read_until(s, |b| b.len() >= 80, Duration::from_secs(10)).await;
    host.feed(&hello).unwrap();
    let mut events = Vec::new();
    while let Ok(Some(e)) = host.next_event() {
        events.push(e);
    }
    let keyboard = Endpoint {
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
            endpoints: EpInfo::new().with(0x81, keyboard),
        },
    )
    .unwrap();
    s.write_all(&host.take_output()).await.unwrap();
    let (answer, _) = read_until(s, |_| false, Duration::from_secs(5)).await;
    if host.feed(&answer).is_ok() {
        while let Ok(Some(e)) = host.next_event() {
            events.push(e);
        }
    }
    events
}

fn contains(h: &[u8], n: &[u8]) -> bool {
    h.windows(n.len()).any(|w| w == n)
}

#[tokio::test(flavor = "multi_thread")]
async fn usb_stream_rules() -> Result<()> {
    let b = start(config()?)?;
    let l1 = b.lease_when_clean(2, UP, "dr-usb").await?;
    let id1 = l1.lease_id.to_string();
    assert_eq!(l1.usb.protocol, airlock_core::wire::USB_PROTOCOL);
    assert!(l1.usb.url.ends_with(&format!("/v1/leases/{id1}/usb")));
    let l2 = b.acquire(TERMINAL2_TOKEN, "other").await?;
    assert_eq!(l2.status(), 201);
    let l2: serde_json::Value = l2.json().await.unwrap();
    let id2 = l2["lease_id"].as_str().unwrap().to_owned();

    // Without the upgrade headers: 426.
    assert_eq!(open_usb(&b, TERMINAL_TOKEN, &id1, false).await.0, 426);
    // Another terminal's lease: 404. Wrong token: 401.
    assert_eq!(open_usb(&b, TERMINAL_TOKEN, &id2, true).await.0, 404);
    assert_eq!(open_usb(&b, "bad", &id1, true).await.0, 401);

    // The holder's stream reaches the desktop's QEMU usb-redir, which says hello.
    let (st, head, s) = open_usb(&b, TERMINAL_TOKEN, &id1, true).await;
    assert_eq!(st, 101, "{head}");
    let mut s = s.unwrap();
    let (hello, eof) = read_until(
        &mut s,
        |b| contains(b, b"qemu usb-redir guest"),
        Duration::from_secs(10),
    )
    .await;
    assert!(
        !eof && contains(&hello, b"qemu usb-redir guest"),
        "{hello:?}"
    );
    assert_eq!(&hello[..4], &[0, 0, 0, 0], "a usbredir hello packet");
    // A second stream for the same lease: 409.
    let (st, body, _) = open_usb(&b, TERMINAL_TOKEN, &id1, true).await;
    assert_eq!(st, 409, "{body}");
    assert!(body.contains("usb_stream_open"));

    // Garbage ends the stream, not the desktop.
    s.write_all(&[0xde; 200]).await.unwrap();
    let (_, eof) = read_until(&mut s, |_| false, Duration::from_secs(10)).await;
    assert!(eof, "the broker closed the garbage stream");
    let desk = l1.desktop_id.as_str();
    assert_eq!(b.desktop(desk).await?["state"], "leased");
    let mut c = b.control(desk)?;
    assert!(
        c.sh("echo alive-$((6*7))")?.contains("alive-42"),
        "the desktop is unharmed"
    );

    // A well-formed stream announcing a keyboard is refused.
    let (st, _, s) = open_usb(&b, TERMINAL_TOKEN, &id1, true).await;
    assert_eq!(st, 101);
    let mut s = s.unwrap();
    announce_keyboard(&mut s).await;
    let (_, eof) = read_until(&mut s, |_| false, Duration::from_secs(10)).await;
    assert!(eof, "the keyboard stream was closed");

    // Behind the relay, the desktop's own usb-redir device refuses it too: QEMU announces
    // its filter (mass storage only) and rejects the keyboard.
    let path = b.run_dir(desk).join("usbredir.sock");
    let u = airlock_testkit::net::connect_unix(&path, Duration::from_secs(10))?;
    u.set_nonblocking(true)?;
    let mut u = tokio::net::UnixStream::from_std(u)?;
    let events = announce_keyboard(&mut u).await;
    // (QEMU passes its rules on with ',' between the fields)
    let rules = airlock_qemu::spec::USBREDIR_FILTER.replace(':', ",");
    assert!(
        events.contains(&HostEvent::FilterFilter { rules }),
        "{events:?}"
    );
    assert!(events.contains(&HostEvent::FilterReject), "{events:?}");
    drop(u);

    // An open stream is closed when its lease ends, and no stream opens afterwards.
    let (st, _, s) = open_usb(&b, TERMINAL_TOKEN, &id1, true).await;
    assert_eq!(st, 101);
    let mut s = s.unwrap();
    let _ = read_until(&mut s, |b| b.len() >= 80, Duration::from_secs(10)).await;
    assert_eq!(b.release(TERMINAL_TOKEN, &id1).await?, 202);
    let (_, eof) = read_until(&mut s, |_| false, Duration::from_secs(10)).await;
    assert!(eof, "release closed the stream");
    assert_eq!(open_usb(&b, TERMINAL_TOKEN, &id1, true).await.0, 404);

    let audit = b.audit().await?;
    let actions: Vec<&str> = audit
        .iter()
        .filter_map(|r| r["action"].as_str())
        .filter(|a| a.starts_with("usb_"))
        .collect();
    assert_eq!(
        actions
            .iter()
            .filter(|a| **a == "usb_stream_opened")
            .count(),
        3,
        "{actions:?}"
    );
    assert_eq!(
        actions
            .iter()
            .filter(|a| **a == "usb_stream_closed")
            .count(),
        3,
        "{actions:?}"
    );
    let closed: Vec<String> = audit
        .iter()
        .filter(|r| r["action"] == "usb_stream_closed")
        .map(|r| r["details"].as_str().unwrap().to_owned())
        .collect();
    assert!(
        closed[0].contains("not a valid usbredir stream"),
        "{}",
        closed[0]
    );
    assert!(closed[1].contains("refused device"), "{}", closed[1]);
    assert!(closed[2].contains("lease_ended"), "{}", closed[2]);
    let opened = audit
        .iter()
        .find(|r| r["action"] == "usb_stream_opened")
        .unwrap();
    assert!(opened["details"].as_str().unwrap().contains("test.iso"));
    assert_eq!(opened["terminal"], "term-1");
    check_invariants(&audit)
}
