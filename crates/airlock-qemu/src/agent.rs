//! The broker's side of the guest agent serial port (see docs/guest.md).
//!
//! The broker writes `airlock-ping <nonce>` and waits for `AIRLOCK-READY <nonce>`; it
//! writes `airlock-settime <secs>` after a restore. Everything else the guest prints is
//! ignored here (QEMU keeps a copy in `serial.log`): the broker never interprets what a
//! guest says beyond these two answers.
use std::path::Path;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

/// Longest line kept while scanning; longer lines are dropped.
const MAX_LINE: usize = 4096;

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

/// A connection to a guest's agent port.
pub struct Agent {
    stream: UnixStream,
    line: Vec<u8>,
}

impl Agent {
    /// Connects to the agent socket.
    pub async fn connect(path: &Path, timeout: Duration) -> Result<Agent, AgentError> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            match UnixStream::connect(path).await {
                Ok(stream) => {
                    return Ok(Agent {
                        stream,
                        line: Vec::new(),
                    })
                }
                Err(e) if tokio::time::Instant::now() >= deadline => {
                    return Err(AgentError::Connect {
                        path: path.display().to_string(),
                        reason: e.to_string(),
                    })
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            }
        }
    }

    /// Sends the line `{command} {arg}` every `every` until the line `{answer} {arg}`
    /// arrives or `timeout`.
    async fn ask(
        &mut self,
        command: &str,
        answer: &str,
        arg: impl std::fmt::Display,
        every: Duration,
        timeout: Duration,
    ) -> Result<Duration, AgentError> {
        let (request, answer) = (format!("{command} {arg}"), format!("{answer} {arg}"));
        let start = tokio::time::Instant::now();
        let deadline = start + timeout;
        let mut buf = [0u8; 1024];
        let mut next_send = start;
        loop {
            let now = tokio::time::Instant::now();
            if now >= deadline {
                return Err(AgentError::Timeout {
                    what: command.to_owned(),
                    secs: timeout.as_secs_f64(),
                });
            }
            if now >= next_send {
                self.stream
                    .write_all(format!("{request}\n").as_bytes())
                    .await?;
                next_send = now + every;
            }
            let wait = next_send.min(deadline) - now;
            match tokio::time::timeout(wait, self.stream.read(&mut buf)).await {
                Err(_) => continue,
                Ok(Ok(0)) => return Err(AgentError::Closed),
                Ok(Ok(n)) => {
                    for &b in buf.get(..n).unwrap_or_default() {
                        if b == b'\n' || b == b'\r' {
                            let matched = self.line == answer.as_bytes();
                            self.line.clear();
                            if matched {
                                return Ok(start.elapsed());
                            }
                        } else if self.line.len() < MAX_LINE {
                            self.line.push(b);
                        }
                    }
                }
                Ok(Err(e)) => return Err(e.into()),
            }
        }
    }

    /// Pings the guest until it answers with the nonce; returns how long it took.
    pub async fn ping(&mut self, nonce: &str, timeout: Duration) -> Result<Duration, AgentError> {
        let every = Duration::from_millis(100);
        self.ask("airlock-ping", "AIRLOCK-READY", nonce, every, timeout)
            .await
    }

    /// Sets the guest clock (after a restore it is behind by the template's age).
    pub async fn set_time(&mut self, unix_secs: u64, timeout: Duration) -> Result<(), AgentError> {
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
