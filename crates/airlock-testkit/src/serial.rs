//! The one reader of the demo guest's serial contract (`docs/guest.md`): what the guest
//! prints on its agent port (ttyS0): `AIRLOCK-READY`, answers to agent commands, and
//! the CD reports (`AIRLOCK-CD-INSERTED`, `-FILE`, the `AIRLOCK-CD` summary,
//! `-ERROR`, `-REMOVED`).
//!
//! A [`SerialLog`] reads either a log file (a broker's desktop: the broker's copy of
//! what it read from the port, exact; a VM nobody talks to: QEMU's chardev log, exact
//! only while no client is connected, see [`crate::guest_vm`]) or the agent port's
//! socket, to which it can also send commands.
//! Positions are line indices: [`SerialLog::mark`] is the number of complete lines so
//! far, and every wait returns the index just past what it found.
use crate::artifacts::FileList;
use anyhow::{bail, ensure, Context, Result};
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The line the guest prints once at the end of its boot.
pub const READY_BOOT: &str = "AIRLOCK-READY boot";

enum Source {
    File(PathBuf),
    Socket {
        stream: UnixStream,
        received: Arc<Mutex<Vec<u8>>>,
        path: PathBuf,
    },
}

/// What the guest printed on its agent port.
pub struct SerialLog {
    source: Source,
}

impl Drop for SerialLog {
    fn drop(&mut self) {
        // Close the connection, which the reader thread would otherwise keep open.
        if let Source::Socket { stream, .. } = &self.source {
            let _ = stream.shutdown(std::net::Shutdown::Both);
        }
    }
}

/// Complete lines of `raw`: `\r` removed, and a line holding `AIRLOCK-` after other
/// text (a kernel message written over it) cut to start there.
fn complete_lines(raw: &[u8]) -> Vec<String> {
    let complete = raw.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    String::from_utf8_lossy(&raw[..complete])
        .split_terminator('\n')
        .map(|l| {
            let l = l.trim_end_matches('\r');
            match l.find("AIRLOCK-") {
                Some(i) if i > 0 => l[i..].to_string(),
                _ => l.to_string(),
            }
        })
        .collect()
}

fn field<'a>(line: &'a str, key: &str) -> Result<&'a str> {
    line.split(' ')
        .find_map(|w| w.strip_prefix(key).and_then(|v| v.strip_prefix('=')))
        .with_context(|| format!("no {key}= in {line:?}"))
}

impl SerialLog {
    /// The guest's output as QEMU logs it to `path`.
    pub fn file(path: PathBuf) -> SerialLog {
        SerialLog {
            source: Source::File(path),
        }
    }

    /// Connects to the agent port's socket at `path` (waiting up to 20 s for QEMU to
    /// create it); [`SerialLog::send`] then talks to the agent.
    pub fn connect(path: &Path) -> Result<SerialLog> {
        let stream = crate::net::connect_unix(path, Duration::from_secs(20))?;
        let received: Arc<Mutex<Vec<u8>>> = Arc::default();
        let mut reader = stream.try_clone()?;
        let sink = received.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 8192];
            while let Ok(n) = reader.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .extend_from_slice(&buf[..n]);
            }
        });
        Ok(SerialLog {
            source: Source::Socket {
                stream,
                received,
                path: path.to_path_buf(),
            },
        })
    }

    fn where_(&self) -> &Path {
        match &self.source {
            Source::File(p) | Source::Socket { path: p, .. } => p,
        }
    }

    /// Sends one agent command line (`airlock-ping N`, …); only on a connected port.
    pub fn send(&mut self, line: &str) -> Result<()> {
        match &mut self.source {
            Source::Socket { stream, .. } => stream
                .write_all(format!("{line}\n").as_bytes())
                .context("writing to the agent port"),
            Source::File(p) => bail!(
                "{} is a log file: connect to the agent port to send",
                p.display()
            ),
        }
    }

    /// Sends `airlock-ping NONCE` and waits for its `AIRLOCK-READY NONCE` (docs/guest.md).
    pub fn ping(&mut self, nonce: &str, timeout: Duration) -> Result<()> {
        let m = self.mark();
        self.send(&format!("airlock-ping {nonce}"))?;
        self.wait_exact(m, timeout, &format!("AIRLOCK-READY {nonce}"))
            .map(drop)
    }

    /// Everything received so far, as text.
    pub fn text(&self) -> String {
        match &self.source {
            Source::File(p) => crate::process::read_or_empty(p),
            Source::Socket { received, .. } => {
                String::from_utf8_lossy(&received.lock().unwrap_or_else(|e| e.into_inner()))
                    .into_owned()
            }
        }
    }

    /// Every complete line so far.
    pub fn lines(&self) -> Vec<String> {
        match &self.source {
            Source::File(p) => complete_lines(&std::fs::read(p).unwrap_or_default()),
            Source::Socket { received, .. } => {
                complete_lines(&received.lock().unwrap_or_else(|e| e.into_inner()))
            }
        }
    }

    /// The number of complete lines so far: a position to wait from.
    pub fn mark(&self) -> usize {
        self.lines().len()
    }

    /// The complete lines from position `from` on.
    pub fn lines_since(&self, from: usize) -> Vec<String> {
        let mut lines = self.lines();
        lines.drain(..from.min(lines.len()));
        lines
    }

    /// Waits for the first line at or after `from` that satisfies `pred`; returns the
    /// position just past it and the line.
    pub fn wait_line(
        &self,
        from: usize,
        timeout: Duration,
        what: &str,
        pred: impl Fn(&str) -> bool,
    ) -> Result<(usize, String)> {
        let deadline = Instant::now() + timeout;
        loop {
            let lines = self.lines();
            if let Some((i, l)) = lines.iter().enumerate().skip(from).find(|(_, l)| pred(l)) {
                return Ok((i + 1, l.clone()));
            }
            if Instant::now() > deadline {
                let since: Vec<&String> = lines
                    .iter()
                    .skip(from)
                    .filter(|l| !l.starts_with("AIRLOCK-CD-FILE"))
                    .collect();
                bail!(
                    "timed out after {timeout:?} waiting for {what} in {}; since then: {since:#?}",
                    self.where_().display()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits for exactly `line` after `from`; returns the position past it.
    pub fn wait_exact(&self, from: usize, timeout: Duration, line: &str) -> Result<usize> {
        Ok(self.wait_line(from, timeout, line, |l| l == line)?.0)
    }

    /// Waits for [`READY_BOOT`].
    pub fn wait_ready(&self, timeout: Duration) -> Result<usize> {
        self.wait_exact(0, timeout, READY_BOOT)
    }

    /// Waits for the outcome of the next disc insertion after `from`.
    pub fn wait_cd(&self, from: usize, timeout: Duration) -> Result<CdReport> {
        self.wait_cd_while(from, timeout, &mut || Ok(()))
    }

    /// [`SerialLog::wait_cd`], giving up early when `alive` (called every few seconds)
    /// says the source of the disc has failed.
    pub fn wait_cd_while(
        &self,
        from: usize,
        timeout: Duration,
        alive: &mut dyn FnMut() -> Result<()>,
    ) -> Result<CdReport> {
        let deadline = Instant::now() + timeout;
        let is_end = |l: &str| l.starts_with("AIRLOCK-CD ") || l.starts_with("AIRLOCK-CD-ERROR ");
        let end = loop {
            let step = deadline
                .saturating_duration_since(Instant::now())
                .min(Duration::from_secs(3));
            match self.wait_line(from, step, "an AIRLOCK-CD summary or error", is_end) {
                Ok((end, _)) => break end,
                Err(e) if Instant::now() >= deadline => return Err(e),
                Err(_) => alive()?,
            }
        };
        let lines = self.lines();
        let mut r = CdReport::parse(&lines[from.min(end)..end])?;
        r.end = end;
        Ok(r)
    }

    /// Waits for the image viewer's next `AIRLOCK-VIEW` line after `from` (an
    /// `AIRLOCK-VIEW-ERROR` is an error); returns the position past it and the line.
    pub fn wait_view(&self, from: usize, timeout: Duration) -> Result<(usize, ViewLine)> {
        let (end, line) = self.wait_line(from, timeout, "AIRLOCK-VIEW", |l| {
            l.starts_with("AIRLOCK-VIEW ") || l.starts_with("AIRLOCK-VIEW-ERROR ")
        })?;
        Ok((end, ViewLine::parse(&line)?))
    }

    /// Waits for `AIRLOCK-CD-REMOVED` after `from`; returns the position past it.
    pub fn wait_removed(&self, from: usize, timeout: Duration) -> Result<usize> {
        Ok(self
            .wait_line(from, timeout, "AIRLOCK-CD-REMOVED", |l| {
                l.starts_with("AIRLOCK-CD-REMOVED ")
            })?
            .0)
    }
}

/// The image viewer's `AIRLOCK-VIEW dev=srN images=N shown=K skipped=M` (docs/guest.md,
/// "The image viewer"): image K (from 1) of the N found is on the screen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ViewLine {
    pub dev: String,
    pub images: u64,
    pub shown: u64,
    pub skipped: u64,
}

impl ViewLine {
    /// Parses an `AIRLOCK-VIEW` line strictly; an `AIRLOCK-VIEW-ERROR` line is an error
    /// naming its reason.
    pub fn parse(line: &str) -> Result<ViewLine> {
        if line.starts_with("AIRLOCK-VIEW-ERROR ") {
            bail!("the image viewer failed: {line:?}");
        }
        let rest = line
            .strip_prefix("AIRLOCK-VIEW ")
            .with_context(|| format!("not an AIRLOCK-VIEW line: {line:?}"))?;
        let num = |k: &str| -> Result<u64> {
            field(rest, k)?
                .parse()
                .with_context(|| format!("bad {k}= in {line:?}"))
        };
        let v = ViewLine {
            dev: field(rest, "dev")?.to_string(),
            images: num("images")?,
            shown: num("shown")?,
            skipped: num("skipped")?,
        };
        ensure!(v.shown <= v.images, "shown > images in {line:?}");
        Ok(v)
    }
}

/// What the guest reported about one disc (docs/guest.md, "CD events").
#[derive(Debug, Clone, Default)]
pub struct CdReport {
    pub dev: String,
    /// `AIRLOCK-CD-INSERTED` seen (a mount failure comes without it).
    pub inserted: bool,
    /// (size, path) of each `AIRLOCK-CD-FILE` line.
    pub files: Vec<(u64, String)>,
    pub summary: Option<CdSummary>,
    /// The reason of an `AIRLOCK-CD-ERROR`.
    pub error: Option<String>,
    /// The position just past the report.
    pub end: usize,
}

/// The `AIRLOCK-CD` summary line.
#[derive(Debug, Clone, PartialEq)]
pub struct CdSummary {
    pub files: u64,
    pub bytes: u64,
    pub sha256: String,
    pub seconds: f64,
}

impl CdReport {
    /// Parses the agent lines of one insertion (from INSERTED to the summary or an
    /// error), strictly: a malformed line is an error.
    pub fn parse<S: AsRef<str>>(lines: &[S]) -> Result<CdReport> {
        let mut r = CdReport::default();
        for l in lines {
            let l = l.as_ref();
            if let Some(rest) = l.strip_prefix("AIRLOCK-CD-INSERTED ") {
                r = CdReport {
                    dev: field(rest, "dev")?.to_string(),
                    inserted: true,
                    ..CdReport::default()
                };
            } else if let Some(rest) = l.strip_prefix("AIRLOCK-CD-FILE ") {
                let (size, path) = rest
                    .split_once(' ')
                    .with_context(|| format!("bad AIRLOCK-CD-FILE line {l:?}"))?;
                r.files.push((size.parse()?, path.to_string()));
            } else if let Some(rest) = l.strip_prefix("AIRLOCK-CD ") {
                let seconds = field(rest, "seconds")?;
                ensure!(
                    seconds.len() >= 5 && seconds.as_bytes()[seconds.len() - 4] == b'.',
                    "seconds= must have 3 decimals: {l:?}"
                );
                r.dev = field(rest, "dev")?.to_string();
                r.summary = Some(CdSummary {
                    files: field(rest, "files")?.parse()?,
                    bytes: field(rest, "bytes")?.parse()?,
                    sha256: field(rest, "sha256")?.to_string(),
                    seconds: seconds.parse()?,
                });
            } else if let Some(rest) = l.strip_prefix("AIRLOCK-CD-ERROR ") {
                r.dev = field(rest, "dev")?.to_string();
                r.error = Some(field(rest, "reason")?.to_string());
            }
        }
        Ok(r)
    }

    /// The summary, or an error saying there is none.
    pub fn summary(&self) -> Result<&CdSummary> {
        self.summary
            .as_ref()
            .with_context(|| format!("no AIRLOCK-CD summary in {self:?}"))
    }

    /// Does the report match a disc's `.files.json`? (Err says how not.)
    pub fn check(&self, disc: &FileList) -> Result<()> {
        ensure!(self.error.is_none(), "the guest reported {:?}", self.error);
        ensure!(self.inserted, "no AIRLOCK-CD-INSERTED");
        let s = self.summary()?;
        ensure!(
            s.files == disc.files && s.bytes == disc.bytes,
            "guest saw {} files / {} bytes, expected {} / {}",
            s.files,
            s.bytes,
            disc.files,
            disc.bytes
        );
        ensure!(
            s.sha256 == disc.sha256,
            "guest sha256 {} != expected {} ({})",
            s.sha256,
            disc.sha256,
            disc.iso.display()
        );
        ensure!(s.seconds > 0.0, "seconds={} in {s:?}", s.seconds);
        let expected: Vec<(u64, String)> = disc
            .entries
            .iter()
            .map(|e| (e.size, e.path.clone()))
            .collect();
        if let Some(i) = (0..self.files.len().max(expected.len()))
            .find(|&i| self.files.get(i) != expected.get(i))
        {
            bail!(
                "AIRLOCK-CD-FILE lines differ from {} at entry {i}: guest {:?}, expected {:?} ({} vs {} lines)",
                disc.iso.display(),
                self.files.get(i),
                expected.get(i),
                self.files.len(),
                expected.len()
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_view_lines() {
        let v = ViewLine::parse("AIRLOCK-VIEW dev=sr0 images=8 shown=2 skipped=1").unwrap();
        assert_eq!(
            v,
            ViewLine {
                dev: "sr0".into(),
                images: 8,
                shown: 2,
                skipped: 1
            }
        );
        assert!(ViewLine::parse("AIRLOCK-VIEW-ERROR dev=sr0 reason=no-screen").is_err());
        assert!(ViewLine::parse("AIRLOCK-VIEW dev=sr0 images=1 shown=2 skipped=0").is_err());
        assert!(ViewLine::parse("AIRLOCK-VIEW dev=sr0 images=x shown=0 skipped=0").is_err());
        assert!(ViewLine::parse("AIRLOCK-CD dev=sr0").is_err());
    }

    #[test]
    fn parses_a_cd_report() {
        let lines = [
            "AIRLOCK-READY boot",
            "AIRLOCK-CD-INSERTED dev=sr0",
            "AIRLOCK-CD-FILE 10 A/B C",
            "AIRLOCK-CD-FILE 5 README.TXT",
            "AIRLOCK-CD dev=sr0 files=2 bytes=15 sha256=ab12 seconds=1.250",
        ];
        let r = CdReport::parse(&lines).unwrap();
        assert!(r.inserted);
        assert_eq!(r.dev, "sr0");
        assert_eq!(
            r.files,
            [(10, "A/B C".to_string()), (5, "README.TXT".to_string())]
        );
        let s = r.summary.unwrap();
        assert_eq!((s.files, s.bytes, s.sha256.as_str()), (2, 15, "ab12"));
        assert!((s.seconds - 1.25).abs() < 1e-9);
        let e = CdReport::parse(&["AIRLOCK-CD-ERROR dev=sr1 reason=mount-failed"]).unwrap();
        assert_eq!(e.error.as_deref(), Some("mount-failed"));
        assert!(!e.inserted);
    }

    #[test]
    fn malformed_reports_are_errors() {
        for bad in [
            "AIRLOCK-CD dev=sr0 files=2 bytes=15 sha256=ab12 seconds=1.25",
            "AIRLOCK-CD dev=sr0 files=x bytes=15 sha256=ab12 seconds=1.250",
            "AIRLOCK-CD-FILE nosize",
            "AIRLOCK-CD-ERROR reason=mount-failed",
        ] {
            assert!(CdReport::parse(&[bad]).is_err(), "{bad}");
        }
    }

    #[test]
    fn lines_are_complete_and_cut_to_the_contract() {
        let raw = b"noise\r\n[ 1.0] oops AIRLOCK-READY boot\nAIRLOCK-CD-REMOVED dev=sr0\npartial";
        assert_eq!(
            complete_lines(raw),
            ["noise", "AIRLOCK-READY boot", "AIRLOCK-CD-REMOVED dev=sr0"]
        );
    }

    #[test]
    fn a_log_file_is_read_by_position() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("serial.log");
        std::fs::write(&path, "AIRLOCK-READY boot\nAIRLOCK-CD-INSERTED dev=sr0\n").unwrap();
        let log = SerialLog::file(path.clone());
        assert_eq!(log.wait_ready(Duration::from_secs(1)).unwrap(), 1);
        assert_eq!(log.mark(), 2);
        std::fs::write(
            &path,
            "AIRLOCK-READY boot\nAIRLOCK-CD-INSERTED dev=sr0\nAIRLOCK-CD-FILE 3 A\n\
             AIRLOCK-CD dev=sr0 files=1 bytes=3 sha256=00 seconds=0.010\nAIRLOCK-CD-REMOVED dev=sr0\n",
        )
        .unwrap();
        let r = log.wait_cd(1, Duration::from_secs(1)).unwrap();
        assert_eq!((r.end, r.files.len()), (4, 1));
        assert_eq!(log.wait_removed(r.end, Duration::from_secs(1)).unwrap(), 5);
        assert!(log
            .wait_line(5, Duration::from_millis(50), "more", |_| true)
            .is_err());
    }
}
