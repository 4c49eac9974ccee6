//! The broker client against a small local HTTP server that speaks the
//! broker's upgrade protocol: headers sent, 101 then raw bytes both ways,
//! and the JSON errors surfaced.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use airlock_usb::transport::{
    connect, BrokerTarget, DeviceIdentity, DeviceKind, LeaseRef, Target, Token, TransportError,
    TrustRoots,
};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

const LEASE: &str = "0123456789abcdef0123456789abcdef";

/// Accepts one connection, reads the request head, answers with `reply`;
/// after a 101, echoes bytes upper-cased. Returns the request head.
async fn serve_once(reply: impl Into<String>) -> (u16, tokio::task::JoinHandle<String>) {
    let reply: String = reply.into();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let task = tokio::spawn(async move {
        let (sock, _) = listener.accept().await.unwrap();
        let mut r = BufReader::new(sock);
        let mut head = String::new();
        loop {
            let mut line = String::new();
            r.read_line(&mut line).await.unwrap();
            if line == "\r\n" || line.is_empty() {
                break;
            }
            head.push_str(&line);
        }
        let mut sock = r.into_inner();
        sock.write_all(reply.as_bytes()).await.unwrap();
        if reply.starts_with("HTTP/1.1 101") {
            let mut buf = [0u8; 1024];
            loop {
                let n = sock.read(&mut buf).await.unwrap();
                if n == 0 {
                    break;
                }
                let up: Vec<u8> = buf[..n].to_ascii_uppercase();
                sock.write_all(&up).await.unwrap();
            }
        }
        head
    });
    (port, task)
}

fn target(port: u16) -> Target {
    Target::Broker(BrokerTarget {
        url: format!("http://127.0.0.1:{port}/prefix/").parse().unwrap(),
        lease: LeaseRef::parse(LEASE).unwrap(),
        token: Token::parse("s3cret-token\n").unwrap(),
        trust: TrustRoots::WebPki,
    })
}

fn device() -> DeviceIdentity {
    DeviceIdentity {
        kind: DeviceKind::Image,
        vid: Some(0x1209),
        pid: Some(0x0001),
        vendor: Some("Airlock".into()),
        product: Some("Airlock Virtual CD-ROM".into()),
        serial: None,
        image: Some("référence.iso".into()),
    }
}

/// Connects to `target`, which must fail.
async fn connect_err(target: &Target) -> TransportError {
    match connect(target, &device()).await {
        Ok(_) => panic!("connected"),
        Err(e) => e,
    }
}

#[tokio::test]
async fn upgrade_then_raw_bytes_both_ways() {
    let (port, server) = serve_once(
        "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: airlock-usbredir/1\r\n\r\n",
    )
    .await;
    let mut stream = connect(&target(port), &device()).await.unwrap();
    stream.write_all(b"usbredir bytes").await.unwrap();
    let mut got = [0u8; 14];
    stream.read_exact(&mut got).await.unwrap();
    assert_eq!(&got, b"USBREDIR BYTES");
    drop(stream);

    let head = server.await.unwrap();
    let lower = head.to_ascii_lowercase();
    assert!(
        head.starts_with(&format!("GET /prefix/v1/leases/{LEASE}/usb HTTP/1.1\r\n")),
        "{head}"
    );
    for header in [
        "authorization: bearer s3cret-token\r\n".to_owned(),
        "connection: upgrade\r\n".to_owned(),
        "upgrade: airlock-usbredir/1\r\n".to_owned(),
        format!("host: 127.0.0.1:{port}\r\n"),
    ] {
        assert!(lower.contains(&header), "{header:?} in {head}");
    }
    let dev = head
        .lines()
        .find_map(|l| {
            l.strip_prefix("x-airlock-device: ")
                .or_else(|| l.strip_prefix("X-Airlock-Device: "))
        })
        .expect("X-Airlock-Device header");
    let v: serde_json::Value = serde_json::from_str(dev).unwrap();
    assert_eq!(v["kind"], "image");
    assert_eq!(v["vid"], "1209");
    assert_eq!(v["image"], "référence.iso");
}

#[tokio::test]
async fn broker_errors_are_surfaced_with_advice() {
    let with_body = |status: &str, body: &str| {
        format!(
            "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
    };
    for (reply, status, code, advice) in [
        (
            with_body(
                "409 Conflict",
                r#"{"error":"usb_busy","message":"a USB stream is already open for this lease"}"#,
            ),
            409,
            "usb_busy",
            "already open",
        ),
        (
            with_body(
                "401 Unauthorized",
                r#"{"error":"unauthorized","message":"unknown terminal"}"#,
            ),
            401,
            "unauthorized",
            "token",
        ),
        (
            with_body(
                "404 Not Found",
                r#"{"error":"lease_not_found","message":"no lease"}"#,
            ),
            404,
            "lease_not_found",
            "lease",
        ),
        (
            with_body("503 Service Unavailable", "oops!"),
            503,
            "",
            "not ready",
        ),
    ] {
        let (port, server) = serve_once(reply).await;
        let err = connect_err(&target(port)).await;
        match &err {
            TransportError::Refused {
                status: s,
                code: c,
                message,
            } => {
                assert_eq!((*s, c.as_str()), (status, code));
                assert!(!message.is_empty());
            }
            other => panic!("{status}: {other:?}"),
        }
        assert!(err.advice().contains(advice), "{status}: {}", err.advice());
        server.await.unwrap();
    }
}

#[tokio::test]
async fn a_101_for_another_protocol_is_refused() {
    let (port, server) = serve_once(
        "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
    )
    .await;
    let err = connect_err(&target(port)).await;
    assert!(matches!(err, TransportError::Http(_)), "{err:?}");
    server.abort();
}

#[tokio::test]
async fn unreachable_broker_and_unix_targets() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    let err = connect_err(&target(port)).await;
    assert!(matches!(err, TransportError::Connect { .. }), "{err:?}");

    let err = connect_err(&Target::parse_direct("unix:/nonexistent/usbredir.sock").unwrap()).await;
    assert!(err.to_string().contains("unix:/nonexistent"), "{err}");
    assert!(err.advice().contains("socket"), "{}", err.advice());
}
