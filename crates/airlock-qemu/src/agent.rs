//! The broker's side of the guest agent port (see docs/guest.md).
//!
//! The broker writes `airlock-ping <nonce>` and waits for `AIRLOCK-READY <nonce>`; it
//! writes `airlock-settime <secs>` after a restore. Everything the guest prints goes to
//! the port's bounded log (`serial.log`, [`crate::serial_log`]) as received; the broker
//! never interprets what a guest says beyond these two answers.
//!
//! One connection per running desktop, kept open and read all the time ([`Agent`] is
//! held by its [`crate::process::Vm`]): a virtio-serial port blocks the guest's writes
//! while no host side is connected (COM1 drops them), and a socket nobody reads fills
//! and throttles the port the same way.
use crate::serial_log::BoundedLog;
use std::path::Path;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::unix::OwnedWriteHalf;
use tokio::net::UnixStream;
use tokio::sync::{broadcast, Mutex};

/// Longest line kept while scanning; longer lines are dropped.
const MAX_LINE: usize = 4096;

/// Lines kept for a slow waiter; older ones are skipped (it sends its request again).
const LINES_BUFFERED: usize = 64;

/// Why the guest did not answer.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("cannot connect to the agent port {path}: {reason}")]
    Connect { path: String, reason: String },
    #[error("I/O error on the guest agent port")]
    Io(#[from] std::io::Error),
    #[error("the guest did not answer {what} within {secs:.1} s")]
    Timeout { what: String, secs: f64 },
    #[error("the agent port closed")]
    Closed,
}

/// A connection to a guest's agent port: a task reads it all the time and hands each
/// complete line to whoever waits for an answer.
pub struct Agent {
    writer: Mutex<OwnedWriteHalf>,
    lines: broadcast::Sender<Vec<u8>>,
    reader: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for Agent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Agent")
            .field("closed", &self.is_closed())
            .finish_non_exhaustive()
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

/// Copies what arrives to `log`, splits it into lines (CR or LF ends one; longer than
/// [`MAX_LINE`]: dropped) and sends each to `lines`; ends at EOF or an error, which
/// closes `lines`.
async fn read_lines(
    mut r: tokio::net::unix::OwnedReadHalf,
    lines: broadcast::Sender<Vec<u8>>,
    mut log: Option<BoundedLog>,
) {
    let mut buf = vec![0u8; 64 << 10];
    let mut line = Vec::new();
    let mut overlong = false;
    loop {
        let n = match r.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        let got = buf.get(..n).unwrap_or_default();
        if let Some(log) = log.as_mut() {
            log.write(got);
        }
        for &b in got {
            if b == b'\n' || b == b'\r' {
                if !overlong && !line.is_empty() && lines.receiver_count() > 0 {
                    let _ = lines.send(std::mem::take(&mut line));
                }
                line.clear();
                overlong = false;
            } else if line.len() < MAX_LINE {
                line.push(b);
            } else {
                overlong = true;
            }
        }
    }
}

impl Agent {
    /// Connects to the agent socket (retrying until `timeout`: QEMU may not listen yet);
    /// everything the guest writes from then on is appended to `log`.
    pub async fn connect(
        path: &Path,
        timeout: Duration,
        log: Option<BoundedLog>,
    ) -> Result<Agent, AgentError> {
        let deadline = tokio::time::Instant::now() + timeout;
        let stream = loop {
            match UnixStream::connect(path).await {
                Ok(stream) => break stream,
                Err(e) if tokio::time::Instant::now() >= deadline => {
                    return Err(AgentError::Connect {
                        path: path.display().to_string(),
                        reason: e.to_string(),
                    })
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            }
        };
        let (r, w) = stream.into_split();
        let (lines, _) = broadcast::channel(LINES_BUFFERED);
        let reader = tokio::spawn(read_lines(r, lines.clone(), log));
        Ok(Agent {
            writer: Mutex::new(w),
            lines,
            reader,
        })
    }

    /// Whether the connection has ended (QEMU closed it, or the process is gone).
    pub fn is_closed(&self) -> bool {
        self.reader.is_finished()
    }

    /// Sends the line `{command} {arg}` every `every` until the line `{answer} {arg}`
    /// arrives or `timeout`.
    async fn ask(
        &self,
        command: &str,
        answer: &str,
        arg: impl std::fmt::Display,
        every: Duration,
        timeout: Duration,
    ) -> Result<Duration, AgentError> {
        let (request, answer) = (format!("{command} {arg}\n"), format!("{answer} {arg}"));
        // Subscribed before the first request, so its answer cannot be missed.
        let mut rx = self.lines.subscribe();
        let start = tokio::time::Instant::now();
        let deadline = start + timeout;
        let mut next_send = start;
        loop {
            let now = tokio::time::Instant::now();
            if now >= deadline {
                return Err(AgentError::Timeout {
                    what: command.to_owned(),
                    secs: timeout.as_secs_f64(),
                });
            }
            if self.is_closed() {
                return Err(AgentError::Closed);
            }
            if now >= next_send {
                // A guest that reads nothing fills the socket: the write waits, but not
                // past the deadline.
                let send = async { self.writer.lock().await.write_all(request.as_bytes()).await };
                if let Ok(sent) = tokio::time::timeout(deadline - now, send).await {
                    sent?;
                }
                next_send = now + every;
                continue;
            }
            let wait = next_send.min(deadline) - now;
            match tokio::time::timeout(wait, rx.recv()).await {
                Err(_) | Ok(Err(broadcast::error::RecvError::Lagged(_))) => continue,
                Ok(Err(broadcast::error::RecvError::Closed)) => return Err(AgentError::Closed),
                Ok(Ok(line)) if line == answer.as_bytes() => return Ok(start.elapsed()),
                Ok(Ok(_)) => {}
            }
        }
    }

    /// Pings the guest until it answers with the nonce; returns how long it took.
    pub async fn ping(&self, nonce: &str, timeout: Duration) -> Result<Duration, AgentError> {
        let every = Duration::from_millis(100);
        self.ask("airlock-ping", "AIRLOCK-READY", nonce, every, timeout)
            .await
    }

    /// Sets the guest clock (after a restore it is behind by the template's age).
    pub async fn set_time(&self, unix_secs: u64, timeout: Duration) -> Result<(), AgentError> {
        let every = Duration::from_millis(500);
        self.ask(
            "airlock-settime",
            "AIRLOCK-TIME-SET",
            unix_secs,
            every,
            timeout,
        )
        .await
        .map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncBufReadExt, BufReader};
    use tokio::net::UnixListener;

    /// A guest stand-in on a socket: answers pings after `noise` (which may be long
    /// and unterminated-looking) and keeps writing output nobody asked for.
    async fn guest(listener: UnixListener, noise: Vec<u8>) {
        let (s, _) = listener.accept().await.unwrap();
        let (r, mut w) = s.into_split();
        let mut r = BufReader::new(r);
        let mut line = String::new();
        while r.read_line(&mut line).await.unwrap() > 0 {
            let words: Vec<&str> = line.split_whitespace().collect();
            if let ["airlock-ping", nonce] = words[..] {
                w.write_all(&noise).await.unwrap();
                w.write_all(format!("\r\nAIRLOCK-READY {nonce}\r\n").as_bytes())
                    .await
                    .unwrap();
            }
            line.clear();
        }
    }

    #[tokio::test]
    async fn answers_are_found_among_overlong_lines_and_other_output() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agent.sock");
        let listener = UnixListener::bind(&path).unwrap();
        // 1 MiB without a line end, then ordinary lines.
        let mut noise = vec![b'x'; 1 << 20];
        noise.extend_from_slice(b"\nAIRLOCK-READY wrong\nAIRLOCK-CD dev=sr0\n");
        tokio::spawn(guest(listener, noise.clone()));
        let log = BoundedLog::new(dir.path(), "serial.log", 64 << 20);
        let a = Agent::connect(&path, Duration::from_secs(2), Some(log))
            .await
            .unwrap();
        for nonce in ["n1", "n2"] {
            a.ping(nonce, Duration::from_secs(10)).await.unwrap();
        }
        assert!(!a.is_closed());
        // The log holds what the guest wrote, byte for byte: one or more answers to
        // each ping (it is sent again until answered), each after the noise; the last
        // may be cut where the reader stopped.
        drop(a);
        let logged = std::fs::read(dir.path().join("serial.log")).unwrap();
        let mut rest = &logged[..];
        let mut answers = Vec::new();
        let unit = ["n1", "n2"].map(|n| {
            let mut u = noise.clone();
            u.extend_from_slice(format!("\r\nAIRLOCK-READY {n}\r\n").as_bytes());
            (n, u)
        });
        while !rest.is_empty() {
            if let Some((n, u)) = unit.iter().find(|(_, u)| rest.starts_with(u)) {
                answers.push(*n);
                rest = &rest[u.len()..];
            } else {
                assert!(
                    unit.iter().any(|(_, u)| u.starts_with(rest)),
                    "the log differs from what the guest wrote"
                );
                break;
            }
        }
        assert_eq!(answers.first(), Some(&"n1"));
        assert_eq!(answers.last(), Some(&"n2"));
    }

    #[tokio::test]
    async fn a_closed_port_ends_the_wait_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agent.sock");
        let listener = UnixListener::bind(&path).unwrap();
        tokio::spawn(async move {
            let (s, _) = listener.accept().await.unwrap();
            drop(s);
        });
        let a = Agent::connect(&path, Duration::from_secs(2), None)
            .await
            .unwrap();
        let t = std::time::Instant::now();
        let e = a.ping("n", Duration::from_secs(10)).await.unwrap_err();
        assert!(matches!(e, AgentError::Closed | AgentError::Io(_)), "{e:?}");
        assert!(t.elapsed() < Duration::from_secs(2));
        assert!(a.is_closed());
    }

    #[tokio::test]
    async fn a_silent_guest_times_out() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agent.sock");
        let listener = UnixListener::bind(&path).unwrap();
        let _keep = tokio::spawn(async move {
            let (s, _) = listener.accept().await.unwrap();
            tokio::time::sleep(Duration::from_secs(30)).await;
            drop(s);
        });
        let a = Agent::connect(&path, Duration::from_secs(2), None)
            .await
            .unwrap();
        let e = a.ping("n", Duration::from_millis(300)).await.unwrap_err();
        assert!(matches!(e, AgentError::Timeout { .. }), "{e:?}");
    }
}
