//! Bounded logs of what a guest writes to its serial ports.
//!
//! Every log is a [`BoundedLog`]: `serial.log` rotates to `serial.log.1` when it
//! reaches its size, so the two files never hold more than twice that (a guest can
//! write for as long as its session lasts).
//!
//! - The agent port's log (`serial.log`) is written by the broker's own reader of the
//!   port ([`crate::agent`]), which reads it all the time: it holds exactly the bytes
//!   the broker received. QEMU's chardev `logfile` is not used there: while a client
//!   is connected and its socket is full, QEMU logs a write that failed with `EAGAIN`
//!   and again when the port retries it, so its copy repeats characters.
//! - Other ports (the test-only control port) keep QEMU's `logfile`, pointed at a FIFO
//!   in the run directory that the broker copies with [`copy`].
//!
//! While no broker reads (between a broker's death and its successor's re-attach), the
//! output is dropped, never stored.
use crate::QemuError;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use tokio::io::AsyncReadExt;

/// The FIFO QEMU logs a serial port into, next to the log `log_name`.
pub fn fifo_name(log_name: &str) -> String {
    format!("{log_name}.pipe")
}

/// Where the next `n` bytes go when the current file holds `current` bytes and may hold
/// `max` (pure): `(bytes to this file, rotate after them)`.
pub fn split(current: u64, n: u64, max: u64) -> (u64, bool) {
    let room = max.saturating_sub(current);
    if n < room {
        (n, false)
    } else {
        (room, true)
    }
}

/// Creates the FIFO for the log `log` (replacing a stale one), writable by `uid` (QEMU's).
pub fn make_fifo(run_dir: &Path, log: &str, uid: Option<u32>) -> Result<PathBuf, QemuError> {
    let path = run_dir.join(fifo_name(log));
    let _ = std::fs::remove_file(&path);
    let err = |what: &str| crate::io_error(format!("{what} {}", path.display()));
    rustix::fs::mkfifoat(
        rustix::fs::CWD,
        &path,
        rustix::fs::Mode::from_raw_mode(0o600),
    )
    .map_err(|e| err("create")(e.into()))?;
    if let Some(uid) = uid {
        let (u, g) = (
            rustix::fs::Uid::from_raw(uid),
            rustix::fs::Gid::from_raw(uid),
        );
        rustix::fs::chown(&path, Some(u), Some(g)).map_err(|e| err("give away")(e.into()))?;
    }
    Ok(path)
}

/// Copies what arrives in `run_dir`'s FIFO for `log` into the log, `max` bytes per file,
/// until `stop` completes. Opens the FIFO read-write, so it is open for QEMU at once and
/// reads never see an end of file between two writers.
pub async fn copy(
    run_dir: PathBuf,
    log: String,
    max: u64,
    stop: impl std::future::Future<Output = ()>,
) {
    let fifo = run_dir.join(fifo_name(&log));
    let mut rx = match tokio::net::unix::pipe::OpenOptions::new()
        .read_write(true)
        .open_receiver(&fifo)
    {
        Ok(rx) => rx,
        Err(e) => {
            tracing::warn!(fifo = %fifo.display(), error = %e, "cannot read a serial port's log pipe; its output is dropped");
            return;
        }
    };
    let mut out = BoundedLog::new(&run_dir, &log, max);
    let mut buf = vec![0u8; 64 * 1024];
    tokio::pin!(stop);
    loop {
        let n = tokio::select! {
            r = rx.read(&mut buf) => match r {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            },
            _ = &mut stop => return,
        };
        out.write(buf.get(..n).unwrap_or_default());
    }
}

/// A log file in a run directory that holds at most `max` bytes and then rotates to
/// `<name>.1` (replacing the previous one): the two never hold more than `2 × max`.
#[derive(Debug)]
pub struct BoundedLog {
    path: PathBuf,
    rotated: PathBuf,
    max: u64,
    file: Option<(std::fs::File, u64)>,
}

impl BoundedLog {
    /// The log `name` in `run_dir` (opened, or created mode 0600, at the first write).
    pub fn new(run_dir: &Path, name: &str, max: u64) -> BoundedLog {
        BoundedLog {
            path: run_dir.join(name),
            rotated: run_dir.join(format!("{name}.1")),
            max,
            file: None,
        }
    }

    /// Appends `data`, rotating as often as needed; a failing write drops the rest (a
    /// log never stops the guest's port).
    pub fn write(&mut self, mut data: &[u8]) {
        if self.max == 0 {
            return;
        }
        while !data.is_empty() {
            if self.file.is_none() {
                self.file = open_log(&self.path);
            }
            let Some((f, size)) = self.file.as_mut() else {
                return;
            };
            let (now, rotate) = split(*size, data.len() as u64, self.max);
            let now = usize::try_from(now).unwrap_or(data.len());
            if std::io::Write::write_all(f, data.get(..now).unwrap_or_default()).is_err() {
                return;
            }
            *size += now as u64;
            data = data.get(now..).unwrap_or_default();
            if rotate {
                self.file = None;
                let _ = std::fs::rename(&self.path, &self.rotated);
            }
        }
    }
}

fn open_log(path: &Path) -> Option<(std::fs::File, u64)> {
    let f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .ok()?;
    let _ = f.set_permissions(std::fs::Permissions::from_mode(0o600));
    let size = f.metadata().map(|m| m.len()).unwrap_or(0);
    Some((f, size))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_at_the_size() {
        assert_eq!(split(0, 10, 100), (10, false));
        assert_eq!(split(90, 10, 100), (10, true));
        assert_eq!(split(95, 10, 100), (5, true));
        assert_eq!(split(100, 10, 100), (0, true));
        assert_eq!(
            split(150, 10, 100),
            (0, true),
            "an oversized file rotates at once"
        );
    }

    #[tokio::test]
    async fn never_holds_more_than_two_files() {
        let dir = tempfile::tempdir().unwrap();
        let run = dir.path().to_path_buf();
        let fifo = make_fifo(&run, "serial.log", None).unwrap();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(copy(run.clone(), "serial.log".into(), 4096, async {
            let _ = stop_rx.await;
        }));
        let writer = tokio::task::spawn_blocking(move || {
            let mut f = std::fs::OpenOptions::new().write(true).open(fifo).unwrap();
            for i in 0..1000u32 {
                std::io::Write::write_all(&mut f, format!("line {i:05}\n").as_bytes()).unwrap();
            }
        });
        writer.await.unwrap();
        let last = run.join("serial.log");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !std::fs::read_to_string(&last)
            .unwrap_or_default()
            .contains("line 00999")
        {
            assert!(
                std::time::Instant::now() < deadline,
                "the last line never arrived"
            );
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        let _ = stop_tx.send(());
        task.await.unwrap();
        let a = std::fs::metadata(&last).unwrap().len();
        let b = std::fs::metadata(run.join("serial.log.1")).unwrap().len();
        assert!(a <= 4096 && b == 4096, "{a} {b}");
        // Rotation keeps the newest output whole.
        let newest = std::fs::read_to_string(run.join("serial.log.1")).unwrap()
            + &std::fs::read_to_string(&last).unwrap();
        assert!(newest.ends_with("line 00999\n"));
    }

    /// What a guest flooding its port for a whole session amounts to, through the same
    /// pipe and copier the broker uses (a TCG guest's UART is too slow to send it).
    #[tokio::test(flavor = "multi_thread")]
    async fn a_gibibyte_of_output_leaves_two_capped_files() {
        let dir = tempfile::tempdir().unwrap();
        let run = dir.path().to_path_buf();
        let fifo = make_fifo(&run, "serial.log", None).unwrap();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let max = 1 << 20;
        let task = tokio::spawn(copy(run.clone(), "serial.log".into(), max, async {
            let _ = stop_rx.await;
        }));
        let writer = tokio::task::spawn_blocking(move || {
            let mut f = std::fs::OpenOptions::new().write(true).open(fifo).unwrap();
            let chunk = vec![b'x'; 1 << 20];
            for _ in 0..1024 {
                std::io::Write::write_all(&mut f, &chunk).unwrap();
            }
            std::io::Write::write_all(&mut f, b"THE-END").unwrap();
        });
        writer.await.unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while !std::fs::read(run.join("serial.log"))
            .unwrap_or_default()
            .ends_with(b"THE-END")
        {
            assert!(
                std::time::Instant::now() < deadline,
                "the end never arrived"
            );
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        let _ = stop_tx.send(());
        task.await.unwrap();
        let total: u64 = ["serial.log", "serial.log.1"]
            .iter()
            .map(|f| std::fs::metadata(run.join(f)).unwrap().len())
            .sum();
        assert!(total <= 2 * max, "{total}");
        assert_eq!(
            std::fs::read_dir(&run).unwrap().count(),
            3,
            "log, rotated log, pipe"
        );
    }
}
