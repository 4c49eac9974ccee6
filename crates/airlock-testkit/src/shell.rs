//! A line shell on a serial port: the demo guest's test-only control port (ttyS1, with
//! `airlock.control=1`, docs/guest.md) or the terminal VM's console. One command per
//! line, then `echo <marker> $?` to know it finished and how. Dropping a [`Shell`]
//! disconnects it.
use anyhow::{ensure, Context, Result};
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// A connected shell; what it prints is collected by a thread. Dropping it closes the
/// connection (QEMU's chardev takes one client at a time: a connection left open, e.g. by
/// the reader thread, would keep the next client of the same QEMU waiting).
pub struct Shell {
    stream: UnixStream,
    out: Arc<(Mutex<Vec<u8>>, Condvar)>,
}

impl Shell {
    /// Connects (waiting up to 20 s for the socket); `log` also appends everything
    /// received to a file.
    pub fn connect(path: &Path, log: Option<PathBuf>) -> Result<Shell> {
        let stream = crate::net::connect_unix(path, Duration::from_secs(20))?;
        let out: Arc<(Mutex<Vec<u8>>, Condvar)> = Arc::default();
        let mut reader = stream.try_clone()?;
        let sink = out.clone();
        std::thread::spawn(move || {
            let mut log = log.and_then(|p| {
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(p)
                    .ok()
            });
            let mut buf = [0u8; 8192];
            while let Ok(n) = reader.read(&mut buf) {
                if n == 0 {
                    break;
                }
                if let Some(f) = log.as_mut() {
                    let _ = f.write_all(&buf[..n]);
                }
                sink.0
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .extend_from_slice(&buf[..n]);
                sink.1.notify_all();
            }
        });
        Ok(Shell { stream, out })
    }

    /// Everything received so far, and forget it.
    pub fn take(&self) -> String {
        let bytes = std::mem::take(&mut *self.out.0.lock().unwrap_or_else(|e| e.into_inner()));
        String::from_utf8_lossy(&bytes).into_owned()
    }

    /// Sends raw text (no marker, nothing awaited).
    pub fn send_raw(&mut self, text: &str) -> Result<()> {
        self.stream
            .write_all(text.as_bytes())
            .context("writing to the shell's port")
    }

    /// Waits until the received text satisfies `pred`; returns (and keeps) everything
    /// received.
    pub fn wait_until(
        &self,
        timeout: Duration,
        what: &str,
        pred: impl Fn(&str) -> bool,
    ) -> Result<String> {
        let deadline = Instant::now() + timeout;
        let (lock, cond) = &*self.out;
        let mut out = lock.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            let text = String::from_utf8_lossy(&out).into_owned();
            if pred(&text) {
                return Ok(text);
            }
            let now = Instant::now();
            ensure!(
                now < deadline,
                "no {what} within {timeout:?}; received: {text:?}"
            );
            out = cond
                .wait_timeout(out, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// Waits until a complete line containing `needle` has arrived.
    pub fn wait_for(&self, needle: &str, timeout: Duration) -> Result<String> {
        self.wait_until(timeout, needle, |t| {
            t.find(needle).is_some_and(|at| t[at..].contains('\n'))
        })
    }

    /// Runs a command line; returns its output and exit status.
    pub fn run(&mut self, cmd: &str, timeout: Duration) -> Result<(String, i32)> {
        let marker = format!("__DONE_{:x}__ ", crate::net::nonce());
        self.take();
        self.send_raw(&format!("{cmd}\necho {marker}$?\n"))?;
        let text = self
            .wait_for(&marker, timeout)
            .with_context(|| format!("running `{cmd}`"))?;
        self.take();
        let at = text.find(&marker).unwrap_or(0);
        let status = text[at + marker.len()..]
            .lines()
            .next()
            .unwrap_or("")
            .trim()
            .parse()
            .unwrap_or(-1);
        Ok((text[..at].to_string(), status))
    }

    /// [`Shell::run`] with a 60 s limit, requiring status 0; returns the output.
    pub fn sh(&mut self, cmd: &str) -> Result<String> {
        self.sh_timeout(cmd, Duration::from_secs(60))
    }

    /// [`Shell::run`] requiring status 0; returns the output.
    pub fn sh_timeout(&mut self, cmd: &str, timeout: Duration) -> Result<String> {
        let (out, st) = self.run(cmd, timeout)?;
        ensure!(st == 0, "`{cmd}` exited {st}: {out}");
        Ok(out)
    }
}

/// Dropping a shell closes its connection (the reader thread's copy too), so the port
/// takes a new client: QEMU serves one connection per socket chardev at a time.
impl Drop for Shell {
    fn drop(&mut self) {
        let _ = self.stream.shutdown(std::net::Shutdown::Both);
    }
}
