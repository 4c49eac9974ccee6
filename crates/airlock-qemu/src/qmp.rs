//! An async QMP client: one reader task routes replies by id and fans events out.
//!
//! QMP sends events before the reply they belong to (`stop` emits `STOP`, then its
//! `return`), so replies are matched by id and events go to a broadcast channel.
//! Anything that is not a well-formed QMP message ends the connection with
//! [`QmpError::Protocol`]; the caller treats the VM as lost.
use serde_json::{json, Map, Value};
use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::unix::OwnedWriteHalf;
use tokio::net::UnixStream;
use tokio::sync::{broadcast, oneshot};

/// The longest line we accept from QEMU. Real replies are far shorter.
const MAX_LINE: usize = 4 * 1024 * 1024;

/// A QMP failure.
#[derive(Debug, Clone, thiserror::Error)]
pub enum QmpError {
    #[error("cannot connect to QMP socket {path}: {reason}; is the QEMU process running?")]
    Connect { path: String, reason: String },
    #[error("QMP I/O error: {0}")]
    Io(String),
    #[error("QMP connection closed (QEMU exited or closed its monitor)")]
    Closed,
    #[error("QMP protocol error: {0}; the monitor is not speaking QMP, treating the VM as lost")]
    Protocol(String),
    #[error("QMP command {command} failed: {class}: {desc}")]
    Command {
        command: String,
        class: String,
        desc: String,
    },
    #[error("QMP command {command} got no answer within {secs:.1} s")]
    Timeout { command: String, secs: f64 },
}

/// A QMP event.
#[derive(Debug, Clone, PartialEq)]
pub struct QmpEvent {
    pub name: String,
    pub data: Value,
}

type Pending = Arc<Mutex<Option<HashMap<u64, oneshot::Sender<Result<Value, QmpError>>>>>>;

/// A connected, capability-negotiated QMP session.
pub struct Qmp {
    writer: tokio::sync::Mutex<OwnedWriteHalf>,
    pending: Pending,
    events: broadcast::Sender<QmpEvent>,
    next_id: AtomicU64,
    /// QEMU's version as announced in the greeting (major, minor, micro).
    pub version: (u64, u64, u64),
    closed: tokio::sync::watch::Receiver<bool>,
}

impl std::fmt::Debug for Qmp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Qmp")
            .field("version", &self.version)
            .finish()
    }
}

fn parse_greeting(line: &str) -> Result<(u64, u64, u64), QmpError> {
    let v: Value = serde_json::from_str(line)
        .map_err(|e| QmpError::Protocol(format!("greeting is not JSON: {e}")))?;
    let q = v
        .get("QMP")
        .and_then(|q| q.get("version"))
        .and_then(|q| q.get("qemu"))
        .ok_or_else(|| QmpError::Protocol("greeting lacks QMP.version.qemu".into()))?;
    let n = |k: &str| {
        q.get(k)
            .and_then(Value::as_u64)
            .ok_or_else(|| QmpError::Protocol(format!("greeting version lacks {k}")))
    };
    Ok((n("major")?, n("minor")?, n("micro")?))
}

impl Qmp {
    /// Connects to a QMP unix socket, retrying until `timeout` (QEMU creates the socket
    /// shortly after start), reads the greeting and negotiates capabilities.
    pub async fn connect(path: &Path, timeout: Duration) -> Result<Qmp, QmpError> {
        let deadline = tokio::time::Instant::now() + timeout;
        let stream = loop {
            match UnixStream::connect(path).await {
                Ok(s) => break s,
                Err(e) => {
                    if tokio::time::Instant::now() >= deadline {
                        return Err(QmpError::Connect {
                            path: path.display().to_string(),
                            reason: e.to_string(),
                        });
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        };
        let (read, write) = stream.into_split();
        let mut reader = BufReader::new(read);
        let greeting = tokio::time::timeout_at(deadline, read_line(&mut reader))
            .await
            .map_err(|_| QmpError::Timeout {
                command: "greeting".into(),
                secs: timeout.as_secs_f64(),
            })??
            .ok_or(QmpError::Closed)?;
        let version = parse_greeting(&greeting)?;
        let pending: Pending = Arc::new(Mutex::new(Some(HashMap::new())));
        let (events, _) = broadcast::channel(256);
        let (closed_tx, closed) = tokio::sync::watch::channel(false);
        tokio::spawn(reader_task(
            reader,
            pending.clone(),
            events.clone(),
            closed_tx,
        ));
        let qmp = Qmp {
            writer: tokio::sync::Mutex::new(write),
            pending,
            events,
            next_id: AtomicU64::new(1),
            version,
            closed,
        };
        qmp.execute("qmp_capabilities", None, Duration::from_secs(5))
            .await?;
        Ok(qmp)
    }

    /// Subscribes to events from now on.
    pub fn events(&self) -> broadcast::Receiver<QmpEvent> {
        self.events.subscribe()
    }

    /// Whether the connection has ended.
    pub fn is_closed(&self) -> bool {
        *self.closed.borrow()
    }

    /// Waits until the connection ends (QEMU exited, or it sent garbage).
    /// A future that completes when the connection has closed, independent of `self`.
    pub fn closed_signal(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let mut c = self.closed.clone();
        async move {
            let _ = c.wait_for(|v| *v).await;
        }
    }

    pub async fn closed(&self) {
        let mut c = self.closed.clone();
        let _ = c.wait_for(|v| *v).await;
    }

    /// Runs a command and returns its `return` value.
    pub async fn execute(
        &self,
        command: &str,
        arguments: Option<Value>,
        timeout: Duration,
    ) -> Result<Value, QmpError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        {
            let mut p = self.pending.lock().map_err(|_| QmpError::Closed)?;
            match p.as_mut() {
                Some(map) => {
                    map.insert(id, tx);
                }
                None => return Err(QmpError::Closed),
            }
        }
        let mut msg = Map::new();
        msg.insert("execute".into(), Value::String(command.into()));
        if let Some(a) = arguments {
            msg.insert("arguments".into(), a);
        }
        msg.insert("id".into(), json!(id));
        let mut line = Value::Object(msg).to_string();
        line.push('\n');
        {
            let mut w = self.writer.lock().await;
            if let Err(e) = w.write_all(line.as_bytes()).await {
                self.forget(id);
                return Err(QmpError::Io(e.to_string()));
            }
        }
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(Ok(v))) => Ok(v),
            Ok(Ok(Err(QmpError::Command { class, desc, .. }))) => Err(QmpError::Command {
                command: command.into(),
                class,
                desc,
            }),
            Ok(Ok(Err(e))) => Err(e),
            Ok(Err(_)) => Err(QmpError::Closed),
            Err(_) => {
                self.forget(id);
                Err(QmpError::Timeout {
                    command: command.into(),
                    secs: timeout.as_secs_f64(),
                })
            }
        }
    }

    fn forget(&self, id: u64) {
        if let Ok(mut p) = self.pending.lock() {
            if let Some(m) = p.as_mut() {
                m.remove(&id);
            }
        }
    }

    /// `query-status`: the run state (`running`, `paused`, `inmigrate`, ...).
    pub async fn status(&self) -> Result<String, QmpError> {
        let v = self
            .execute("query-status", None, Duration::from_secs(5))
            .await?;
        v.get("status")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .ok_or_else(|| QmpError::Protocol("query-status reply lacks status".into()))
    }
}

async fn read_line<R: tokio::io::AsyncBufRead + Unpin>(
    r: &mut R,
) -> Result<Option<String>, QmpError> {
    let mut buf = Vec::new();
    loop {
        let chunk = r
            .fill_buf()
            .await
            .map_err(|e| QmpError::Io(e.to_string()))?;
        if chunk.is_empty() {
            return if buf.is_empty() {
                Ok(None)
            } else {
                Err(QmpError::Protocol("connection closed mid-line".into()))
            };
        }
        if let Some(pos) = chunk.iter().position(|b| *b == b'\n') {
            buf.extend_from_slice(&chunk[..pos]);
            r.consume(pos + 1);
            break;
        }
        let n = chunk.len();
        buf.extend_from_slice(chunk);
        r.consume(n);
        if buf.len() > MAX_LINE {
            return Err(QmpError::Protocol(format!(
                "line longer than {MAX_LINE} bytes"
            )));
        }
    }
    if buf.len() > MAX_LINE {
        return Err(QmpError::Protocol(format!(
            "line longer than {MAX_LINE} bytes"
        )));
    }
    String::from_utf8(buf)
        .map(Some)
        .map_err(|_| QmpError::Protocol("line is not UTF-8".into()))
}

/// One message from QEMU, classified.
#[derive(Debug, PartialEq)]
enum Incoming {
    Return(u64, Value),
    Error(u64, String, String),
    Event(QmpEvent),
}

fn classify(line: &str) -> Result<Incoming, QmpError> {
    let v: Value =
        serde_json::from_str(line).map_err(|e| QmpError::Protocol(format!("not JSON: {e}")))?;
    let obj = v
        .as_object()
        .ok_or_else(|| QmpError::Protocol("message is not an object".into()))?;
    if let Some(name) = obj.get("event") {
        let name = name
            .as_str()
            .ok_or_else(|| QmpError::Protocol("event name is not a string".into()))?;
        return Ok(Incoming::Event(QmpEvent {
            name: name.to_owned(),
            data: obj.get("data").cloned().unwrap_or(Value::Null),
        }));
    }
    let id = obj
        .get("id")
        .and_then(Value::as_u64)
        .ok_or_else(|| QmpError::Protocol("reply without a numeric id".into()))?;
    if let Some(r) = obj.get("return") {
        return Ok(Incoming::Return(id, r.clone()));
    }
    if let Some(e) = obj.get("error") {
        let class = e.get("class").and_then(Value::as_str).unwrap_or("?");
        let desc = e.get("desc").and_then(Value::as_str).unwrap_or("?");
        return Ok(Incoming::Error(id, class.to_owned(), desc.to_owned()));
    }
    Err(QmpError::Protocol(
        "message is neither event, return nor error".into(),
    ))
}

async fn reader_task(
    mut reader: BufReader<tokio::net::unix::OwnedReadHalf>,
    pending: Pending,
    events: broadcast::Sender<QmpEvent>,
    closed: tokio::sync::watch::Sender<bool>,
) {
    let failure = loop {
        let line = match read_line(&mut reader).await {
            Ok(Some(l)) => l,
            Ok(None) => break QmpError::Closed,
            Err(e) => break e,
        };
        match classify(&line) {
            Ok(Incoming::Event(ev)) => {
                let _ = events.send(ev);
            }
            Ok(Incoming::Return(id, v)) => deliver(&pending, id, Ok(v)),
            Ok(Incoming::Error(id, class, desc)) => deliver(
                &pending,
                id,
                Err(QmpError::Command {
                    command: String::new(),
                    class,
                    desc,
                }),
            ),
            Err(e) => break e,
        }
    };
    if !matches!(failure, QmpError::Closed) {
        tracing::warn!(error = %failure, "QMP connection dropped");
    }
    let waiting = pending.lock().ok().and_then(|mut p| p.take());
    for (_, tx) in waiting.into_iter().flatten() {
        let _ = tx.send(Err(failure.clone()));
    }
    let _ = closed.send(true);
}

fn deliver(pending: &Pending, id: u64, r: Result<Value, QmpError>) {
    let tx = pending
        .lock()
        .ok()
        .and_then(|mut p| p.as_mut().and_then(|m| m.remove(&id)));
    if let Some(tx) = tx {
        let _ = tx.send(r);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greeting() {
        let g = r#"{"QMP": {"version": {"qemu": {"micro": 22, "minor": 2, "major": 7}, "package": "Debian"}, "capabilities": ["oob"]}}"#;
        assert_eq!(parse_greeting(g).unwrap(), (7, 2, 22));
        assert!(parse_greeting("hello").is_err());
        assert!(parse_greeting("{}").is_err());
    }

    #[test]
    fn classify_messages() {
        assert_eq!(
            classify(r#"{"return": {}, "id": 3}"#).unwrap(),
            Incoming::Return(3, json!({}))
        );
        assert!(matches!(
            classify(r#"{"error": {"class": "GenericError", "desc": "no"}, "id": 4}"#).unwrap(),
            Incoming::Error(4, _, _)
        ));
        assert!(matches!(
            classify(r#"{"event": "STOP", "timestamp": {}}"#).unwrap(),
            Incoming::Event(QmpEvent { .. })
        ));
        for bad in [
            "",
            "[]",
            "nope",
            r#"{"return": 1}"#,
            r#"{"id": 1}"#,
            r#"{"event": 5}"#,
        ] {
            assert!(classify(bad).is_err(), "{bad}");
        }
    }
}
