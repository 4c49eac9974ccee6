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
use usbredir::{
    Caps, Codec, DeviceConnect, Endpoint, EndpointType, EpInfo, Hello, Interface, InterfaceInfo,
    Packet, Role, Speed, Status,
};

const UP: Duration = Duration::from_secs(240);

/// Opens `GET /v1/leases/{id}/usb` with an upgrade; returns the status and, on 101, the
/// upgraded connection.
async fn open_usb(
    b: &Broker,
    token: &str,
    lease: &str,
    upgrade: bool,
) -> (u16, String, Option<TcpStream>) {
    open_usb_sending(b, token, lease, upgrade, &[]).await
}

/// [`open_usb`], with `early` bytes sent right behind the request (before the answer).
async fn open_usb_sending(
    b: &Broker,
    token: &str,
    lease: &str,
    upgrade: bool,
    early: &[u8],
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
    let mut req = req.into_bytes();
    req.extend_from_slice(early);
    s.write_all(&req).await.unwrap();
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

/// The hostile terminals' device: VID:PID beef:1234.
const HOSTILE_VID: u16 = 0xbeef;

fn hostile_device() -> DeviceConnect {
    DeviceConnect {
        speed: Speed::High,
        device_class: 0,
        device_subclass: 0,
        device_protocol: 0,
        vendor_id: HOSTILE_VID,
        product_id: 0x1234,
        device_version_bcd: 0x0100,
    }
}

fn bulk_endpoint() -> Endpoint {
    Endpoint {
        ep_type: EndpointType::Bulk,
        interval: 0,
        interface: 0,
        max_packet_size: 512,
        max_streams: 0,
    }
}

/// What the hostile terminals announce: one Bulk-Only SCSI interface (08:06:50), with
/// `endpoints`.
/// Mass storage with one bulk endpoint each way (what a real drive announces).
fn bulk_storage() -> DeviceLayout {
    storage_announcement(
        EpInfo::new()
            .with(0x81, bulk_endpoint())
            .with(0x02, bulk_endpoint()),
    )
}

fn storage_announcement(endpoints: EpInfo) -> DeviceLayout {
    DeviceLayout {
        interfaces: InterfaceInfo {
            interfaces: vec![Interface {
                number: 0,
                class: 8,
                subclass: 6,
                protocol: 0x50,
            }],
        },
        endpoints,
    }
}

/// A configuration with the announced storage interface and, behind it, a HID keyboard
/// with its interrupt endpoint.
fn storage_and_keyboard_configuration() -> Vec<u8> {
    let mut d = vec![
        9, 2, 0, 0, 2, 1, 0, 0x80, 50, // configuration, 2 interfaces
        9, 4, 0, 0, 2, 8, 6, 0x50, 0, // storage
        7, 5, 0x81, 2, 0, 2, 0, // bulk IN
        7, 5, 0x02, 2, 0, 2, 0, // bulk OUT
        9, 4, 1, 0, 1, 3, 1, 1, 0, // HID boot keyboard
        9, 0x21, 0x11, 0x01, 0, 1, 0x22, 63, 0, // HID descriptor
        7, 5, 0x83, 3, 8, 0, 10, // interrupt IN
    ];
    let total = (d.len() as u16).to_le_bytes();
    d[2] = total[0];
    d[3] = total[1];
    d
}

/// How a hostile terminal's stream went.
#[derive(Debug, Default)]
struct Hostile {
    /// The other side closed the stream.
    eof: bool,
    /// `GET_DESCRIPTOR(CONFIGURATION)` requests the terminal answered.
    config_requests: usize,
    /// `SET_CONFIGURATION` requests (the desktop took the device).
    set_configuration: usize,
}

/// Acts as a terminal forwarding `layout`, answering the desktop's device descriptor
/// requests truthfully and its configuration descriptor requests with `config`, until
/// the stream ends or `time` passes.
async fn hostile_terminal<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut S,
    layout: DeviceLayout,
    config: Vec<u8>,
    time: Duration,
) -> Hostile {
    let mut host = HostSession::new(HostConfig::default());
    host.connect_device(hostile_device(), layout).unwrap();
    let mut out = Hostile::default();
    let vid = HOSTILE_VID.to_le_bytes();
    let device = [
        18, 1, 0, 2, 0, 0, 0, 64, vid[0], vid[1], 0x34, 0x12, 0, 1, 0, 0, 0, 1,
    ];
    let deadline = tokio::time::Instant::now() + time;
    let mut buf = vec![0u8; 65536];
    loop {
        let o = host.take_output();
        if !o.is_empty() && s.write_all(&o).await.is_err() {
            out.eof = true;
            return out;
        }
        let n = match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
            Err(_) => return out,
            Ok(Ok(0)) | Ok(Err(_)) => {
                out.eof = true;
                return out;
            }
            Ok(Ok(n)) => n,
        };
        if host.feed(&buf[..n]).is_err() {
            return out;
        }
        while let Ok(Some(e)) = host.next_event() {
            let req = match e {
                HostEvent::Control(req) => req,
                HostEvent::SetConfiguration { id, configuration } => {
                    out.set_configuration += 1;
                    let _ = host.reply_set_configuration(id, Status::Success, configuration, None);
                    continue;
                }
                HostEvent::GetConfiguration { id } => {
                    let _ = host.reply_get_configuration(id, Status::Success, 1);
                    continue;
                }
                HostEvent::SetAltSetting { id, interface, alt } => {
                    let _ = host.reply_set_alt_setting(id, Status::Success, interface, alt, None);
                    continue;
                }
                _ => continue,
            };
            let want = usize::from(req.length);
            let answer = match (req.request_type, req.request, req.value >> 8) {
                (0x80, 6, 1) => Some(device.to_vec()),
                (0x80, 6, 2) => {
                    out.config_requests += 1;
                    Some(config.clone())
                }
                _ => None,
            };
            let _ = match answer {
                Some(mut a) => {
                    a.truncate(want);
                    host.complete_in(req.token, Status::Success, a)
                }
                None if req.is_in() => host.complete_in(req.token, Status::Stall, Vec::new()),
                None => host.complete_out(req.token, Status::Stall, 0),
            };
        }
    }
}

/// Says hello, then attaches and detaches a storage device `times` times (each detach
/// acknowledged by the desktop before the next attach), then closes the stream.
async fn flapping_drive<S: AsyncRead + AsyncWrite + Unpin>(s: &mut S, times: usize) -> Result<()> {
    let mut host = HostSession::new(HostConfig::default());
    let mut buf = vec![0u8; 65536];
    let storage = || bulk_storage();
    for _ in 0..times {
        host.connect_device(hostile_device(), storage())?;
        // Until the device was announced and the desktop acknowledged its detach.
        let mut detached = false;
        loop {
            s.write_all(&host.take_output()).await?;
            if detached && !host.is_awaiting_disconnect_ack() {
                break;
            }
            if host.is_attached() && !detached {
                host.disconnect_device()?;
                detached = true;
                continue;
            }
            let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf))
                .await
                .context("the desktop did not answer")??;
            ensure!(n > 0, "the stream closed");
            host.feed(&buf[..n])?;
            while host.next_event()?.is_some() {}
        }
    }
    s.shutdown().await?;
    Ok(())
}

/// What the desktop's guest sees on its USB buses: each device's idVendor and each
/// interface's class.
fn guest_usb(b: &Broker, desk: &str) -> Result<String> {
    let mut c = b.control(desk)?;
    c.sh("for f in /sys/bus/usb/devices/*/idVendor /sys/bus/usb/devices/*/bInterfaceClass; do echo \"$f=$(cat $f)\"; done")
}

fn sees_hostile_device(usb: &str) -> bool {
    usb.contains(&format!("idVendor={HOSTILE_VID:04x}"))
}

/// The guest has not seen the hostile device, also after it had time to enumerate one.
fn check_refused(b: &Broker, desk: &str, what: &str) -> Result<()> {
    std::thread::sleep(Duration::from_secs(3));
    let usb = guest_usb(b, desk)?;
    ensure!(
        !sees_hostile_device(&usb),
        "{what}: the guest sees the device: {usb}"
    );
    ensure!(
        !usb.contains("bInterfaceClass=03"),
        "{what}: a HID interface: {usb}"
    );
    Ok(())
}

/// The broker answers `/healthz` and still has the desktop leased.
async fn healthy(b: &Broker, desk: &str) -> Result<()> {
    let (st, h) = b.healthz().await?;
    ensure!(st == 200, "/healthz {st}: {h}");
    ensure!(b.desktop(desk).await?["state"] == "leased");
    Ok(())
}

/// A compromised terminal speaking usbredir cannot put anything but mass storage into a
/// desktop: a keyboard behind a storage announcement (in the configuration descriptor
/// the desktop reads), an interrupt endpoint, and device packets before the hellos each
/// end their stream, are audited, and the guest never sees the device; the broker keeps
/// serving. The guest would see the first one without the relay (QEMU's own filter
/// looks only at the announcement).
#[tokio::test(flavor = "multi_thread")]
async fn hostile_terminals_are_refused() -> Result<()> {
    let b = start(BrokerConfig {
        heartbeat_timeout_s: 600,
        ..config()?
    })?;
    let l = b.lease_when_clean(2, UP, "dr-hostile").await?;
    let id = l.lease_id.to_string();
    let desk = l.desktop_id.as_str().to_owned();
    let before = guest_usb(&b, &desk)?;
    assert!(
        before.contains("idVendor=1d6b"),
        "the guest's root hubs: {before}"
    );
    assert!(!sees_hostile_device(&before), "{before}");

    // 1. Announces 08:06:50, answers GET_DESCRIPTOR(CONFIGURATION) with a keyboard.
    let (st, head, s) = open_usb(&b, TERMINAL_TOKEN, &id, true).await;
    assert_eq!(st, 101, "{head}");
    let r = hostile_terminal(
        &mut s.unwrap(),
        bulk_storage(),
        storage_and_keyboard_configuration(),
        Duration::from_secs(60),
    )
    .await;
    assert!(r.eof, "the stream was ended: {r:?}");
    assert!(
        r.config_requests > 0,
        "the desktop read the configuration: {r:?}"
    );
    check_refused(&b, &desk, "keyboard in the configuration")?;
    healthy(&b, &desk).await?;

    // 2. Announces an interrupt endpoint.
    let (st, _, s) = open_usb(&b, TERMINAL_TOKEN, &id, true).await;
    assert_eq!(st, 101);
    let interrupt = Endpoint {
        ep_type: EndpointType::Interrupt,
        interval: 10,
        max_packet_size: 8,
        ..bulk_endpoint()
    };
    let r = hostile_terminal(
        &mut s.unwrap(),
        storage_announcement(
            EpInfo::new()
                .with(0x81, bulk_endpoint())
                .with(0x02, bulk_endpoint())
                .with(0x83, interrupt),
        ),
        Vec::new(),
        Duration::from_secs(30),
    )
    .await;
    assert!(r.eof, "the stream was ended: {r:?}");
    check_refused(&b, &desk, "interrupt endpoint")?;
    healthy(&b, &desk).await?;

    // 3. Device packets before the hellos: (a) before its own, (b) its hello and the
    // device right behind its request, before the desktop's hello could reach it. The
    // packets are laid out for QEMU's caps, as a terminal that guessed them would.
    let qemu = Hello::new("qemu usb-redir guest 7.2.22", Caps::from_bits(0xff));
    let mut guessed = HostSession::new(HostConfig::default());
    guessed
        .feed(
            &Codec::new(Role::Guest)
                .encode(0, &Packet::Hello(qemu))
                .unwrap(),
        )
        .unwrap();
    while guessed.next_event().unwrap().is_some() {}
    let storage = bulk_storage();
    guessed.connect_device(hostile_device(), storage).unwrap();
    let all = guessed.take_output();
    let (hello, device) = all.split_at(80);
    for (what, early, after) in [
        (
            "device packets before the terminal's hello",
            device.to_vec(),
            Vec::new(),
        ),
        (
            "device packets before the desktop's hello",
            all.clone(),
            Vec::new(),
        ),
        (
            "device packets, then the hello",
            device.to_vec(),
            hello.to_vec(),
        ),
    ] {
        let (st, head, s) = open_usb_sending(&b, TERMINAL_TOKEN, &id, true, &early).await;
        assert_eq!(st, 101, "{what}: {head}");
        let mut s = s.unwrap();
        let _ = s.write_all(&after).await;
        let (_, eof) = read_until(&mut s, |_| false, Duration::from_secs(20)).await;
        assert!(eof, "{what}: the stream was ended");
        check_refused(&b, &desk, what)?;
        healthy(&b, &desk).await?;
    }

    // Each was audited: refused, naming the lease and the terminal, with the reason.
    let audit = b.audit().await?;
    let refused: Vec<&serde_json::Value> = audit
        .iter()
        .filter(|r| r["action"] == "usb_refused")
        .collect();
    let reasons: Vec<String> = refused
        .iter()
        .map(|r| r["details"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(refused.len(), 5, "{reasons:#?}");
    for r in &refused {
        assert_eq!(r["terminal"], "term-1");
        assert_eq!(r["lease"].as_str(), Some(id.as_str()));
    }
    assert!(
        reasons[0].contains("interface 1 is class 03:01:01"),
        "{}",
        reasons[0]
    );
    assert!(
        reasons[1].contains("endpoint 0x83 is interrupt"),
        "{}",
        reasons[1]
    );
    for r in &reasons[2..] {
        assert!(r.contains("before the hellos"), "{r}");
    }
    // The stream never announced the device to the audit log as attached, except the
    // first, whose announcement passed before its descriptors showed what it is.
    let attached = audit
        .iter()
        .filter(|r| r["action"] == "usb_attached")
        .count();
    assert_eq!(attached, 1, "only the first announcement passed");

    // The broker keeps serving: the other desktop is granted.
    let other = b.acquire(TERMINAL2_TOKEN, "dr-next").await?;
    assert_eq!(other.status(), 201);
    let other: serde_json::Value = other.json().await?;
    let id2 = other["lease_id"].as_str().unwrap().to_owned();

    // A drive that attaches and detaches 10 times: the first few events are audited one
    // by one, the rest counted in the stream's closing record.
    let (st, _, s) = open_usb(&b, TERMINAL2_TOKEN, &id2, true).await;
    assert_eq!(st, 101);
    let mut s = s.unwrap();
    flapping_drive(&mut s, 10).await?;
    let _ = read_until(&mut s, |_| false, Duration::from_secs(10)).await;
    let mut closed = None;
    for _ in 0..50 {
        let audit = b.audit().await?;
        let of_lease = |a: &str| {
            audit
                .iter()
                .filter(|r| r["action"] == a && r["lease"].as_str() == Some(id2.as_str()))
                .cloned()
                .collect::<Vec<_>>()
        };
        if let Some(c) = of_lease("usb_stream_closed").pop() {
            let events = of_lease("usb_attached").len() + of_lease("usb_detached").len();
            closed = Some((c, events));
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (closed, events) = closed.context("no usb_stream_closed for the flapping drive")?;
    let budget = airlock_pool::USB_DEVICE_EVENTS_AUDITED as usize;
    assert_eq!(events, budget, "{closed}");
    let details: serde_json::Value =
        serde_json::from_str(closed["details"].as_str().unwrap_or_default())?;
    assert_eq!(
        details["device_events_not_audited"],
        serde_json::json!({"attached": 10 - budget / 2, "detached": 10 - budget / 2}),
        "{details}"
    );

    // Without the relay, the desktop's own usb-redir (which filters by the announced
    // interfaces only) lets the first terminal's keyboard in: the check above can see it.
    let path = b.run_dir(&desk).join("usbredir.sock");
    let u = airlock_testkit::net::connect_unix(&path, Duration::from_secs(10))?;
    u.set_nonblocking(true)?;
    let mut u = tokio::net::UnixStream::from_std(u)?;
    let direct = tokio::spawn(async move {
        hostile_terminal(
            &mut u,
            bulk_storage(),
            storage_and_keyboard_configuration(),
            Duration::from_secs(60),
        )
        .await
    });
    let mut seen = String::new();
    for _ in 0..25 {
        seen = guest_usb(&b, &desk)?;
        if sees_hostile_device(&seen) && seen.contains("bInterfaceClass=03") {
            break;
        }
        std::thread::sleep(Duration::from_secs(2));
    }
    let sees = sees_hostile_device(&seen) && seen.contains("bInterfaceClass=03");
    let r = if sees {
        direct.abort();
        None
    } else {
        Some(direct.await)
    };
    assert!(
        sees,
        "without the relay the guest sees the keyboard: {seen}\n{r:?}\n{}",
        b.control(&desk)?.sh("dmesg | tail -30")?
    );
    check_invariants(&audit)
}
