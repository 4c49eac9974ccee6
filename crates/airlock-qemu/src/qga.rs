//! A client of the QEMU guest agent (`qemu-ga`) on a desktop's agent port, for golden
//! images that run the stock agent instead of the demo guest's serial marker (issue 15).
//!
//! The protocol is QMP-like JSON, one object per line, on a serial or virtio-serial
//! port. The agent runs inside the guest, which is hostile once a disc ran, so the
//! client is strict and bounded: every answer is one line of at most [`MAX_LINE`] bytes,
//! parsed into the type the command returns; `{"error": …}` is an error; anything else
//! (garbage, an overlong line, silence past the deadline, a wrong sync id) ends the
//! exchange with an error naming it, and the caller drops the connection.
//!
//! Every connection starts with `guest-sync-delimited` with a random id, preceded by a
//! `0xFF` byte (the agent then drops whatever half-read request it holds: a template
//! clone inherits the agent's state from the template) and answered after a `0xFF`
//! sentinel: bytes before the sentinel are discarded (at most [`MAX_DISCARD`]).
use serde::de::DeserializeOwned;
use serde::Deserialize;
use std::path::Path;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;
use tokio::time::Instant;

/// The longest answer line accepted.
pub const MAX_LINE: usize = 256 * 1024;
/// The most bytes skipped while looking for the sync sentinel.
pub const MAX_DISCARD: usize = 1 << 20;

/// Why the guest agent did not give a usable answer.
#[derive(Debug, thiserror::Error)]
pub enum QgaError {
    #[error("cannot connect to the guest agent port {path}: {reason}")]
    Connect { path: String, reason: String },
    #[error("I/O error on the guest agent port")]
    Io(#[from] std::io::Error),
    #[error("the guest agent did not answer {what} within {secs:.1} s")]
    Timeout { what: String, secs: f64 },
    #[error("the guest agent port closed")]
    Closed,
    #[error("the guest agent sent a line longer than {MAX_LINE} bytes")]
    Overlong,
    #[error("the guest agent sent more than {MAX_DISCARD} bytes before its sync answer")]
    NoSentinel,
    #[error("the guest agent answered sync id {got}, not {sent} (a stale or foreign answer)")]
    WrongSyncId { sent: u64, got: i64 },
    #[error("the guest agent's answer to {what} is not what the protocol allows: {why}")]
    Garbage { what: String, why: String },
    #[error("the guest agent refused {what}: {class}: {desc}")]
    Refused {
        what: String,
        class: String,
        desc: String,
    },
    #[error("the guest agent enables {commands}, which run programs or touch files in the desktop; disable them in the golden image (qemu-ga --block-rpcs) or accept them in the config")]
    Dangerous { commands: String },
}

/// `guest-info`'s answer (the parts the broker uses).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, serde::Serialize)]
pub struct GuestInfo {
    pub version: String,
    #[serde(rename = "supported_commands")]
    pub commands: Vec<GuestCommand>,
}

/// One command the agent knows.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, serde::Serialize)]
pub struct GuestCommand {
    pub name: String,
    pub enabled: bool,
}

/// A user logged in to the guest (`guest-get-users`).
#[derive(Debug, Clone, PartialEq, Deserialize, serde::Serialize)]
pub struct GuestUser {
    pub user: String,
    #[serde(default)]
    pub domain: Option<String>,
    #[serde(rename = "login-time")]
    pub login_time: f64,
}

/// Commands that run programs in the guest or read and write its files: an agent that
/// enables them lets whoever reaches the port (the broker, or a process that took it
/// over) act inside the desktop.
pub fn dangerous_commands(info: &GuestInfo) -> Vec<&str> {
    info.commands
        .iter()
        .filter(|c| c.enabled)
        .map(|c| c.name.as_str())
        .filter(|n| {
            n.starts_with("guest-exec")
                || n.starts_with("guest-file-")
                || *n == "guest-set-user-password"
                || *n == "guest-ssh-add-authorized-keys"
        })
        .collect()
}

/// Refuses an agent with [`dangerous_commands`] enabled, unless `accept`.
pub fn check_info(info: &GuestInfo, accept: bool) -> Result<(), QgaError> {
    let d = dangerous_commands(info);
    if d.is_empty() || accept {
        return Ok(());
    }
    Err(QgaError::Dangerous {
        commands: d.join(", "),
    })
}

/// One answer line: `{"return": T}` or `{"error": {"class", "desc"}}`.
fn parse_answer<T: DeserializeOwned>(what: &str, line: &[u8]) -> Result<T, QgaError> {
    #[derive(Deserialize)]
    struct ErrorBody {
        #[serde(default)]
        class: String,
        #[serde(default)]
        desc: String,
    }
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Answer<T> {
        #[serde(rename = "return")]
        ret: Option<T>,
        error: Option<ErrorBody>,
        /// Echoed by some agents when the request had one; never sent here.
        #[allow(dead_code)]
        id: Option<serde_json::Value>,
    }
    let garbage = |why: String| QgaError::Garbage {
        what: what.to_owned(),
        why,
    };
    let a: Answer<T> = serde_json::from_slice(line).map_err(|e| garbage(e.to_string()))?;
    match (a.ret, a.error) {
        (Some(v), None) => Ok(v),
        (None, Some(e)) => Err(QgaError::Refused {
            what: what.to_owned(),
            class: e.class.chars().take(64).collect(),
            desc: e.desc.chars().take(200).collect(),
        }),
        _ => Err(garbage("neither one \"return\" nor one \"error\"".into())),
    }
}

/// A connection to a guest agent.
pub struct Qga {
    stream: UnixStream,
    /// Bytes read past the last answer line.
    pending: Vec<u8>,
}

impl Qga {
    /// Connects to the agent socket at `path` (retrying until `timeout`) and syncs.
    pub async fn connect(path: &Path, timeout: Duration) -> Result<Qga, QgaError> {
        let deadline = Instant::now() + timeout;
        let stream = loop {
            match UnixStream::connect(path).await {
                Ok(s) => break s,
                Err(e) if Instant::now() >= deadline => {
                    return Err(QgaError::Connect {
                        path: path.display().to_string(),
                        reason: e.to_string(),
                    })
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            }
        };
        let mut q = Qga {
            stream,
            pending: Vec::new(),
        };
        let left = deadline.saturating_duration_since(Instant::now());
        q.sync(left.max(Duration::from_millis(500))).await?;
        Ok(q)
    }

    /// `guest-sync-delimited` with a random id; everything before the answer's sentinel
    /// is dropped.
    pub async fn sync(&mut self, timeout: Duration) -> Result<(), QgaError> {
        // Random, and well inside the 2^53 every JSON parser keeps exact.
        let random = uuid::Uuid::new_v4().as_u128();
        let id = u64::try_from(random >> 76).unwrap_or(7);
        let deadline = Instant::now() + timeout;
        // A raw 0xFF byte first: the agent drops any half-read request.
        let mut bytes = vec![0xFF];
        bytes.extend_from_slice(
            format!("{{\"execute\":\"guest-sync-delimited\",\"arguments\":{{\"id\":{id}}}}}\n")
                .as_bytes(),
        );
        self.write(&bytes, deadline, "guest-sync-delimited").await?;
        self.pending.clear();
        let mut discarded = 0usize;
        loop {
            if let Some(i) = self.pending.iter().position(|&b| b == 0xFF) {
                self.pending.drain(..=i);
                break;
            }
            discarded += self.pending.len();
            self.pending.clear();
            if discarded > MAX_DISCARD {
                return Err(QgaError::NoSentinel);
            }
            self.fill(deadline, "guest-sync-delimited").await?;
        }
        let line = self.line(deadline, "guest-sync-delimited").await?;
        let got: i64 = parse_answer("guest-sync-delimited", &line)?;
        if u64::try_from(got).ok() != Some(id) {
            return Err(QgaError::WrongSyncId { sent: id, got });
        }
        Ok(())
    }

    async fn write(&mut self, bytes: &[u8], deadline: Instant, what: &str) -> Result<(), QgaError> {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, self.stream.write_all(bytes)).await {
            Ok(r) => Ok(r?),
            Err(_) => Err(timeout(what, left)),
        }
    }

    /// Reads more bytes into `pending`.
    async fn fill(&mut self, deadline: Instant, what: &str) -> Result<(), QgaError> {
        let mut buf = [0u8; 16 * 1024];
        let left = deadline.saturating_duration_since(Instant::now());
        let n = match tokio::time::timeout(left, self.stream.read(&mut buf)).await {
            Ok(r) => r?,
            Err(_) => return Err(timeout(what, left)),
        };
        if n == 0 {
            return Err(QgaError::Closed);
        }
        self.pending
            .extend_from_slice(buf.get(..n).unwrap_or_default());
        Ok(())
    }

    /// The next non-empty line (without its end).
    async fn line(&mut self, deadline: Instant, what: &str) -> Result<Vec<u8>, QgaError> {
        loop {
            if let Some(i) = self.pending.iter().position(|&b| b == b'\n') {
                let mut line: Vec<u8> = self.pending.drain(..=i).collect();
                line.pop();
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
                if line.len() > MAX_LINE {
                    return Err(QgaError::Overlong);
                }
                if line.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                return Ok(line);
            }
            if self.pending.len() > MAX_LINE {
                return Err(QgaError::Overlong);
            }
            self.fill(deadline, what).await?;
        }
    }

    /// Runs `command` (with `arguments`) and parses its answer as `T`.
    pub async fn execute<T: DeserializeOwned>(
        &mut self,
        command: &str,
        arguments: Option<serde_json::Value>,
        timeout: Duration,
    ) -> Result<T, QgaError> {
        let deadline = Instant::now() + timeout;
        let mut req = serde_json::json!({ "execute": command });
        if let Some(a) = arguments {
            req["arguments"] = a;
        }
        let mut bytes = serde_json::to_vec(&req).unwrap_or_default();
        bytes.push(b'\n');
        self.write(&bytes, deadline, command).await?;
        let line = self.line(deadline, command).await?;
        parse_answer(command, &line)
    }

    /// `guest-ping`.
    pub async fn ping(&mut self, timeout: Duration) -> Result<(), QgaError> {
        let _: serde_json::Value = self.execute("guest-ping", None, timeout).await?;
        Ok(())
    }

    /// `guest-get-time`: the guest's clock, nanoseconds since the Unix epoch.
    pub async fn get_time(&mut self, timeout: Duration) -> Result<i64, QgaError> {
        self.execute("guest-get-time", None, timeout).await
    }

    /// `guest-set-time` with an explicit time (nanoseconds since the Unix epoch); the
    /// argument-less form would read the time from the network, which desktops lack.
    pub async fn set_time(&mut self, unix_ns: i64, timeout: Duration) -> Result<(), QgaError> {
        let _: serde_json::Value = self
            .execute(
                "guest-set-time",
                Some(serde_json::json!({ "time": unix_ns })),
                timeout,
            )
            .await?;
        Ok(())
    }

    /// `guest-info`.
    pub async fn info(&mut self, timeout: Duration) -> Result<GuestInfo, QgaError> {
        self.execute("guest-info", None, timeout).await
    }

    /// `guest-get-users`: who is logged in.
    pub async fn users(&mut self, timeout: Duration) -> Result<Vec<GuestUser>, QgaError> {
        self.execute("guest-get-users", None, timeout).await
    }

    /// `guest-get-devices` (Windows agents: drivers and their versions), as the agent
    /// gives it (for the template's proof).
    pub async fn devices(&mut self, timeout: Duration) -> Result<serde_json::Value, QgaError> {
        self.execute("guest-get-devices", None, timeout).await
    }

    /// `guest-get-osinfo`, as the agent gives it (for the template's proof).
    pub async fn osinfo(&mut self, timeout: Duration) -> Result<serde_json::Value, QgaError> {
        self.execute("guest-get-osinfo", None, timeout).await
    }
}

fn timeout(what: &str, left: Duration) -> QgaError {
    QgaError::Timeout {
        what: what.to_owned(),
        secs: left.as_secs_f64(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncBufReadExt, BufReader};
    use tokio::net::UnixListener;

    /// How a stand-in agent misbehaves.
    #[derive(Clone, Copy, PartialEq)]
    enum Mode {
        Good,
        StaleBytesFirst,
        WrongId,
        Garbage,
        HugeLine,
        Silent,
        ExecEnabled,
    }

    /// A stand-in agent speaking the protocol as qemu-ga does, misbehaving as `mode` says.
    async fn agent(listener: UnixListener, mode: Mode) {
        let (s, _) = listener.accept().await.unwrap();
        let (r, mut w) = s.into_split();
        let mut r = BufReader::new(r);
        let mut buf = Vec::new();
        while r.read_until(b'\n', &mut buf).await.unwrap_or(0) > 0 {
            let text: Vec<u8> = buf.iter().copied().filter(|&b| b != 0xFF).collect();
            buf.clear();
            let Ok(req) = serde_json::from_slice::<serde_json::Value>(&text) else {
                continue;
            };
            if mode == Mode::Silent {
                continue;
            }
            let out: Vec<u8> = match req["execute"].as_str().unwrap_or_default() {
                "guest-sync-delimited" => {
                    let id = req["arguments"]["id"].as_u64().unwrap();
                    let id = if mode == Mode::WrongId { id + 1 } else { id };
                    let mut v = Vec::new();
                    if mode == Mode::StaleBytesFirst {
                        v.extend_from_slice(b"{\"return\": 12}\n{\"retu");
                    }
                    v.push(0xFF);
                    v.extend_from_slice(format!("{{\"return\": {id}}}\n").as_bytes());
                    v
                }
                "guest-ping" if mode == Mode::Garbage => b"<html>hello</html>\n".to_vec(),
                "guest-ping" if mode == Mode::HugeLine => {
                    let mut v = vec![b' '; 10 << 20];
                    v.push(b'\n');
                    v
                }
                "guest-ping" => b"{\"return\": {}}\n".to_vec(),
                "guest-get-time" => b"{\"return\": 1764720000123456789}\n".to_vec(),
                "guest-set-time" => b"{\"return\": {}}\n".to_vec(),
                "guest-info" => {
                    let exec = mode == Mode::ExecEnabled;
                    format!(
                        "{{\"return\": {{\"version\": \"7.2.0\", \"supported_commands\": [\
                         {{\"enabled\": true, \"name\": \"guest-ping\", \"success-response\": true}},\
                         {{\"enabled\": {exec}, \"name\": \"guest-exec\", \"success-response\": true}},\
                         {{\"enabled\": false, \"name\": \"guest-file-open\", \"success-response\": true}}]}}}}\n"
                    )
                    .into_bytes()
                }
                "guest-get-users" => {
                    b"{\"return\": [{\"user\": \"clinic\", \"login-time\": 1764720000.5}]}\n".to_vec()
                }
                other => format!(
                    "{{\"error\": {{\"class\": \"CommandNotFound\", \"desc\": \"The command {other} has not been found\"}}}}\n"
                )
                .into_bytes(),
            };
            if w.write_all(&out).await.is_err() {
                return;
            }
        }
    }

    async fn start(mode: Mode) -> (tempfile::TempDir, std::path::PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("qga.sock");
        let l = UnixListener::bind(&path).unwrap();
        tokio::spawn(agent(l, mode));
        (dir, path)
    }

    const T: Duration = Duration::from_secs(5);

    #[tokio::test]
    async fn a_good_agent_syncs_answers_and_sets_the_clock() {
        for mode in [Mode::Good, Mode::StaleBytesFirst] {
            let (_d, path) = start(mode).await;
            let mut q = Qga::connect(&path, T).await.unwrap();
            q.ping(T).await.unwrap();
            assert_eq!(q.get_time(T).await.unwrap(), 1_764_720_000_123_456_789);
            q.set_time(1_764_720_000_000_000_000, T).await.unwrap();
            let info = q.info(T).await.unwrap();
            assert_eq!(info.version, "7.2.0");
            check_info(&info, false).unwrap();
            let users = q.users(T).await.unwrap();
            assert_eq!(users[0].user, "clinic");
            let e = q.osinfo(T).await.unwrap_err();
            assert!(
                matches!(e, QgaError::Refused { ref class, .. } if class == "CommandNotFound"),
                "{e}"
            );
            // Still in step after a refusal.
            q.ping(T).await.unwrap();
        }
    }

    #[tokio::test]
    async fn a_hostile_or_silent_agent_is_an_error_never_a_hang() {
        let (_d, path) = start(Mode::WrongId).await;
        let e = Qga::connect(&path, T).await.err().unwrap();
        assert!(matches!(e, QgaError::WrongSyncId { .. }), "{e}");

        let (_d, path) = start(Mode::Garbage).await;
        let mut q = Qga::connect(&path, T).await.unwrap();
        let e = q.ping(T).await.unwrap_err();
        assert!(matches!(e, QgaError::Garbage { .. }), "{e}");

        let (_d, path) = start(Mode::HugeLine).await;
        let mut q = Qga::connect(&path, T).await.unwrap();
        let e = q.ping(T).await.unwrap_err();
        assert!(matches!(e, QgaError::Overlong), "{e}");

        let (_d, path) = start(Mode::Silent).await;
        let t = std::time::Instant::now();
        let e = Qga::connect(&path, Duration::from_millis(600))
            .await
            .err()
            .unwrap();
        assert!(matches!(e, QgaError::Timeout { .. }), "{e}");
        assert!(t.elapsed() < Duration::from_secs(3));
    }

    #[tokio::test]
    async fn an_agent_that_runs_programs_is_refused_unless_accepted() {
        let (_d, path) = start(Mode::ExecEnabled).await;
        let mut q = Qga::connect(&path, T).await.unwrap();
        let info = q.info(T).await.unwrap();
        assert_eq!(dangerous_commands(&info), vec!["guest-exec"]);
        let e = check_info(&info, false).unwrap_err();
        assert!(e.to_string().contains("guest-exec"), "{e}");
        check_info(&info, true).unwrap();
    }

    #[test]
    fn answers_are_parsed_strictly() {
        assert_eq!(parse_answer::<i64>("t", b"{\"return\": 5}").unwrap(), 5);
        for bad in [
            &b"{\"return\": \"5\"}"[..],
            b"{}",
            b"{\"return\": 5, \"error\": {}}",
            b"{\"return\": 5, \"extra\": 1}",
            b"[5]",
            b"\xff\xfe",
        ] {
            assert!(
                parse_answer::<i64>("t", bad).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        let e = parse_answer::<i64>(
            "t",
            b"{\"error\": {\"class\": \"GenericError\", \"desc\": \"no\"}}",
        )
        .unwrap_err();
        assert!(matches!(e, QgaError::Refused { .. }));
    }
}
