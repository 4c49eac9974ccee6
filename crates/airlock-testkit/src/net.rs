//! Ports, sockets and nonces.
use anyhow::{bail, Context, Result};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// A nonce that differs between calls and processes.
pub fn nonce() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    h.write_u32(std::process::id());
    h.write_u32(COUNTER.fetch_add(1, Ordering::Relaxed));
    h.finish()
}

/// The first of `n` consecutive free TCP ports on 127.0.0.1, in 21000..41000: below the
/// ephemeral range, because QEMU re-binds a desktop's display port at every reset, so it
/// must not be a port an outgoing connection could take meanwhile. Parallel tests start
/// from different places (process id, a counter, the clock).
pub fn free_ports(n: u16) -> Result<u16> {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let seed = (nonce() % 20_000) as u32;
    for _ in 0..2000 {
        let k = NEXT.fetch_add(1, Ordering::Relaxed);
        let base = 21_000 + (seed + k * 37) % 20_000;
        let base = u16::try_from(base).context("port out of range")?;
        if (0..n).all(|i| std::net::TcpListener::bind(("127.0.0.1", base + i)).is_ok()) {
            return Ok(base);
        }
    }
    bail!("no {n} free consecutive TCP ports on 127.0.0.1 in 21000..41000")
}

/// Connects to a Unix socket, retrying until `timeout` (QEMU creates its sockets a
/// moment after it starts).
pub fn connect_unix(path: &Path, timeout: Duration) -> Result<UnixStream> {
    let deadline = Instant::now() + timeout;
    loop {
        match UnixStream::connect(path) {
            Ok(s) => return Ok(s),
            Err(e) if Instant::now() > deadline => {
                return Err(e).with_context(|| format!("connecting to {}", path.display()))
            }
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}
