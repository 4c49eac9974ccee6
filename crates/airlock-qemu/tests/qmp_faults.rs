//! The QMP client against monitors that misbehave: garbage, early close, huge lines,
//! silence. Every case must end in a clear error, never a panic or a hang.
#![allow(clippy::unwrap_used)]

use airlock_qemu::{Qmp, QmpError};
use std::path::PathBuf;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixListener;

const GREETING: &str = r#"{"QMP": {"version": {"qemu": {"micro": 22, "minor": 2, "major": 7}, "package": ""}, "capabilities": ["oob"]}}"#;

/// A fake monitor: sends `greeting`, then answers each command line with `answer(n, line)`
/// (None = close the connection).
fn fake(
    greeting: &'static str,
    answer: impl Fn(usize, &str) -> Option<Vec<String>> + Send + 'static,
) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("qmp.sock");
    let listener = UnixListener::bind(&path).unwrap();
    tokio::spawn(async move {
        let (s, _) = listener.accept().await.unwrap();
        let (r, mut w) = s.into_split();
        w.write_all(format!("{greeting}\n").as_bytes())
            .await
            .unwrap();
        let mut lines = BufReader::new(r).lines();
        let mut n = 0;
        while let Ok(Some(line)) = lines.next_line().await {
            match answer(n, &line) {
                Some(replies) => {
                    for r in replies {
                        if w.write_all(r.as_bytes()).await.is_err() {
                            return;
                        }
                    }
                }
                None => return,
            }
            n += 1;
        }
    });
    (dir, path)
}

fn id_of(line: &str) -> u64 {
    let v: serde_json::Value = serde_json::from_str(line).unwrap();
    v["id"].as_u64().unwrap()
}

fn ok(line: &str) -> String {
    format!("{{\"return\": {{}}, \"id\": {}}}\n", id_of(line))
}

const T: Duration = Duration::from_secs(2);

/// Connects to a fake monitor that accepts the capabilities negotiation and answers every
/// later command line with `replies(line)`.
async fn after_negotiation(
    replies: impl Fn(&str) -> Vec<String> + Send + 'static,
) -> (tempfile::TempDir, Qmp) {
    let (d, p) = fake(GREETING, move |n, l| {
        Some(if n == 0 { vec![ok(l)] } else { replies(l) })
    });
    (d, Qmp::connect(&p, T).await.unwrap())
}

#[tokio::test]
async fn a_working_monitor() {
    let (_d, p) = fake(GREETING, |_, l| {
        Some(vec![
            "{\"event\": \"STOP\", \"timestamp\": {\"seconds\": 1, \"microseconds\": 2}}\n".into(),
            if l.contains("query-status") {
                format!(
                    "{{\"return\": {{\"status\": \"paused\", \"running\": false}}, \"id\": {}}}\n",
                    id_of(l)
                )
            } else {
                ok(l)
            },
        ])
    });
    let q = Qmp::connect(&p, T).await.unwrap();
    assert_eq!(q.version, (7, 2, 22));
    let mut ev = q.events();
    assert_eq!(q.status().await.unwrap(), "paused");
    assert_eq!(ev.recv().await.unwrap().name, "STOP");
}

#[tokio::test]
async fn garbage_greeting() {
    let (_d, p) = fake("this is not QMP", |_, l| Some(vec![ok(l)]));
    let e = Qmp::connect(&p, T).await.unwrap_err();
    assert!(matches!(e, QmpError::Protocol(_)), "{e}");
    assert!(e.to_string().contains("not JSON"), "{e}");
}

#[tokio::test]
async fn garbage_reply_ends_the_session() {
    let (_d, q) = after_negotiation(|_| vec!["{\"retur\n".into()]).await;
    let e = q.execute("query-status", None, T).await.unwrap_err();
    assert!(matches!(e, QmpError::Protocol(_)), "{e}");
    tokio::time::timeout(T, q.closed())
        .await
        .expect("closed() resolves");
    assert!(q.is_closed());
    let e = q.execute("query-status", None, T).await.unwrap_err();
    assert!(matches!(e, QmpError::Closed), "{e}");
}

#[tokio::test]
async fn reply_without_id_or_of_wrong_shape() {
    for bad in [
        "{\"return\": {}}\n",
        "[1, 2]\n",
        "{\"hello\": 1, \"id\": 2}\n",
        "\u{0}\u{1}\n",
    ] {
        let (_d, q) = after_negotiation(move |_| vec![bad.to_owned()]).await;
        let e = q.execute("stop", None, T).await.unwrap_err();
        assert!(matches!(e, QmpError::Protocol(_)), "{e}");
    }
}

#[tokio::test]
async fn monitor_closes_mid_command() {
    let (_d, p) = fake(
        GREETING,
        |n, l| if n == 0 { Some(vec![ok(l)]) } else { None },
    );
    let q = Qmp::connect(&p, T).await.unwrap();
    let e = q.execute("query-status", None, T).await.unwrap_err();
    assert!(matches!(e, QmpError::Closed), "{e}");
}

#[tokio::test]
async fn huge_line_is_refused() {
    let (_d, q) = after_negotiation(|_| vec![format!("{}\n", "x".repeat(5 << 20))]).await;
    let e = q
        .execute("query-status", None, Duration::from_secs(10))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("longer than"), "{e}");
}

#[tokio::test]
async fn silent_monitor_times_out() {
    let (_d, q) = after_negotiation(|_| vec![]).await;
    let e = q
        .execute("query-status", None, Duration::from_millis(200))
        .await
        .unwrap_err();
    assert!(matches!(e, QmpError::Timeout { .. }), "{e}");
    assert!(e.to_string().contains("query-status"));
}

#[tokio::test]
async fn command_errors_carry_class_and_description() {
    let (_d, q) = after_negotiation(|l| {
        vec![format!("{{\"error\": {{\"class\": \"GenericError\", \"desc\": \"no such tag\"}}, \"id\": {}}}\n", id_of(l))]
    })
    .await;
    let e = q.execute("snapshot-load", None, T).await.unwrap_err();
    assert_eq!(
        e.to_string(),
        "QMP command snapshot-load failed: GenericError: no such tag"
    );
}

#[tokio::test]
async fn nothing_listening() {
    let dir = tempfile::tempdir().unwrap();
    let e = Qmp::connect(&dir.path().join("none.sock"), Duration::from_millis(100))
        .await
        .unwrap_err();
    assert!(matches!(e, QmpError::Connect { .. }), "{e}");
    assert!(e.to_string().contains("is the QEMU process running"));
}
