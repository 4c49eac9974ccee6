//! The display proxy: the broker owns each desktop's display port and forwards a
//! connection to QEMU's display socket only while the desktop is leased; when the lease
//! ends every forwarded connection is cut. With TLS configured the proxy terminates TLS
//! itself (the broker's certificate) and there is no plaintext path: a client that does
//! not complete a TLS handshake never reaches QEMU.
//!
//! Over TLS the proxy writes each SPICE message of the desktop in TLS records of its own
//! (`airlock_core::spice`): `remote-viewer` stalls when one record ends one message and
//! starts the next.
//!
//! Owning the port also means a reset never waits for the old QEMU process to release it,
//! so a new process can start while the kernel is still freeing the old one's memory.
//!
//! Limits (`[pool.display]`): at most `max_connections` forwarded connections per desktop
//! at once (so per lease: a lease's connections are cut when it ends); one more is closed
//! at accept, before a TLS handshake or a byte reaches QEMU. A connection with no bytes
//! either way for `idle_timeout_s` is closed.
use crate::config::DisplayTls;
use crate::engine::Pool;
use crate::error::PoolError;
use airlock_core::spice::{ClientLink, ServerFrames};
use airlock_core::DesktopId;
use airlock_qemu::spec::files;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::path::Path;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::sync::OnceLock;
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream, UnixStream};
use tokio_rustls::TlsAcceptor;

/// How long a client may take to complete its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The display proxy's TLS acceptor, from the broker's certificate chain and key.
pub(crate) fn tls_acceptor(tls: &DisplayTls) -> Result<TlsAcceptor, PoolError> {
    let cert_error = |source| PoolError::DisplayCert {
        path: tls.cert.clone(),
        source,
    };
    let certs = CertificateDer::pem_file_iter(&tls.cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(cert_error)?;
    if certs.is_empty() {
        return Err(cert_error(rustls::pki_types::pem::Error::NoItemsFound));
    }
    let key = PrivateKeyDer::from_pem_file(&tls.key).map_err(|source| PoolError::DisplayKey {
        path: tls.key.clone(),
        source,
    })?;
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(PoolError::DisplayTlsConfig)?
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .map_err(PoolError::DisplayTlsConfig)?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}

impl Pool {
    /// Accepts connections on a desktop's display port for the life of the broker.
    pub(crate) async fn serve_display(self, id: DesktopId, listener: TcpListener) {
        let (max, idle) = self.display_limits().unwrap_or((usize::MAX, Duration::MAX));
        let open = self.display_counter(&id);
        loop {
            match listener.accept().await {
                Ok((tcp, peer)) => {
                    let Some(slot) = Slot::take(&open, max) else {
                        tracing::info!(desktop = %id, %peer, "display connection refused: the lease has {max} display connections open (pool.display.max_connections)");
                        drop(tcp);
                        continue;
                    };
                    let p = self.clone();
                    let id = id.clone();
                    tokio::spawn(async move {
                        p.proxy_display(&id, tcp, peer, idle).await;
                        drop(slot);
                    });
                }
                Err(e) => {
                    tracing::warn!(desktop = %id, error = %e, "display port accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
            }
        }
    }

    async fn proxy_display(
        &self,
        id: &DesktopId,
        tcp: TcpStream,
        peer: std::net::SocketAddr,
        idle: Duration,
    ) {
        let activity = Activity::new();
        // Subscribe before checking the lease: a lease that ends after this point cuts us.
        let Some(mut cut) = self.display_cut_receiver(id) else {
            return;
        };
        let lease = match self.active_lease_id(id) {
            Some(l) => l,
            None => {
                tracing::debug!(desktop = %id, %peer, "display connection refused: the desktop is not leased");
                return;
            }
        };
        let Some(path) = self.running_run_file(id, files::DISPLAY) else {
            return;
        };
        let _ = tcp.set_nodelay(true);
        tracing::debug!(desktop = %id, %peer, lease = %lease, "display connection");
        let session = async {
            match self.display_tls() {
                Some(acceptor) => {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                        Ok(Ok(tls)) => forward_framed(tls, &path, id, &activity).await,
                        Ok(Err(e)) => {
                            tracing::info!(desktop = %id, %peer, error = %e,
                                "display connection refused: TLS handshake failed (a client that does not trust the certificate, or does not speak TLS)");
                        }
                        Err(_) => {
                            tracing::info!(desktop = %id, %peer, "display connection refused: no TLS handshake within {} s", HANDSHAKE_TIMEOUT.as_secs());
                        }
                    }
                }
                None => forward(tcp, &path, id, &activity).await,
            }
        };
        tokio::select! {
            _ = session => {}
            _ = cut.changed() => {
                tracing::debug!(desktop = %id, %peer, "display connection cut: the lease ended");
            }
            () = activity.idle_for(idle) => {
                tracing::info!(desktop = %id, %peer, "display connection closed: no bytes either way for {} s (pool.display.idle_timeout_s)", idle.as_secs());
            }
        }
    }
}

/// One of a desktop's display connections, counted while it lives.
struct Slot(Arc<AtomicUsize>);

impl Slot {
    /// A place among `max`, or `None` when all are taken.
    fn take(open: &Arc<AtomicUsize>, max: usize) -> Option<Slot> {
        open.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
            (n < max).then_some(n + 1)
        })
        .ok()
        .map(|_| Slot(open.clone()))
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// When a connection last carried a byte, either way.
struct Activity {
    start: Instant,
    /// Milliseconds after `start`.
    last_ms: AtomicU64,
}

impl Activity {
    fn new() -> Activity {
        Activity {
            start: Instant::now(),
            last_ms: AtomicU64::new(0),
        }
    }

    fn touch(&self) {
        let now = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.fetch_max(now, Ordering::Relaxed);
    }

    /// Returns once no byte has passed for `timeout`.
    async fn idle_for(&self, timeout: Duration) {
        loop {
            let last = self.start + Duration::from_millis(self.last_ms.load(Ordering::Relaxed));
            let Some(deadline) = last.checked_add(timeout) else {
                return std::future::pending().await;
            };
            if Instant::now() >= deadline {
                return;
            }
            tokio::time::sleep_until(deadline.into()).await;
        }
    }
}

/// The desktop's display socket, or `None` (logged).
async fn reach(path: &Path, id: &DesktopId) -> Option<UnixStream> {
    match UnixStream::connect(path).await {
        Ok(u) => Some(u),
        Err(e) => {
            tracing::warn!(desktop = %id, error = %e, "cannot reach the desktop's display");
            None
        }
    }
}

/// Pipes a client's plain stream to QEMU's display socket until either side closes.
async fn forward<S>(client: S, path: &Path, id: &DesktopId, activity: &Activity)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let Some(unix) = reach(path, id).await else {
        return;
    };
    let (mut from_client, mut to_client) = tokio::io::split(client);
    let (mut from_desktop, mut to_desktop) = unix.into_split();
    let seen = |_: &[u8]| {
        activity.touch();
        Vec::new()
    };
    let up = relay(&mut from_client, &mut to_desktop, seen);
    let down = relay(&mut from_desktop, &mut to_client, seen);
    if let Err(e) = tokio::try_join!(up, down) {
        tracing::debug!(desktop = %id, error = %e, "display connection closed");
    }
}

/// Like [`forward`], for a decrypted TLS stream: each unit of the desktop's SPICE stream
/// (link reply, link result, each message) goes to the client in write calls of its
/// own, so in TLS records of its own.
async fn forward_framed<S>(client: S, path: &Path, id: &DesktopId, activity: &Activity)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let Some(unix) = reach(path, id).await else {
        return;
    };
    let (mut from_client, mut to_client) = tokio::io::split(client);
    let (mut from_desktop, mut to_desktop) = unix.into_split();
    // What the client's link said of the mini header (`None` inside: not SPICE).
    let mini: OnceLock<Option<bool>> = OnceLock::new();
    let mut link = ClientLink::default();
    let up = relay(&mut from_client, &mut to_desktop, |chunk| {
        activity.touch();
        if mini.get().is_none() {
            if let Some(found) = link.push(chunk) {
                let _ = mini.set(found);
            }
        }
        Vec::new()
    });
    let mut frames = ServerFrames::default();
    let down = relay(&mut from_desktop, &mut to_client, |chunk| {
        activity.touch();
        frames.push(chunk, mini.get().copied().flatten())
    });
    if let Err(e) = tokio::try_join!(up, down) {
        tracing::debug!(desktop = %id, error = %e, "display connection closed");
    }
}

/// Copies `from` to `to` until `from` ends, then shuts `to` down. `cut` sees each chunk
/// read and says where units end in it: each unit goes out in write calls of its own.
async fn relay<R, W>(
    from: &mut R,
    to: &mut W,
    mut cut: impl FnMut(&[u8]) -> Vec<usize>,
) -> std::io::Result<()>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = from.read(&mut buf).await?;
        if n == 0 {
            return to.shutdown().await;
        }
        let ends = cut(&buf[..n]);
        write_units(to, &buf[..n], &ends).await?;
    }
}

/// Writes `chunk` to `out` cut at `ends` (unit ends, ascending), then flushes.
async fn write_units<W>(out: &mut W, chunk: &[u8], ends: &[usize]) -> std::io::Result<()>
where
    W: AsyncWrite + Unpin,
{
    let mut start = 0;
    for &end in ends {
        out.write_all(&chunk[start..end]).await?;
        start = end;
    }
    if start < chunk.len() {
        out.write_all(&chunk[start..]).await?;
    }
    out.flush().await
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::pin::Pin;
    use std::task::{Context, Poll};

    /// Records every write call.
    #[derive(Default)]
    struct Writes(Vec<Vec<u8>>);

    impl AsyncWrite for Writes {
        fn poll_write(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<std::io::Result<usize>> {
            self.0.push(buf.to_vec());
            Poll::Ready(Ok(buf.len()))
        }
        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Poll::Ready(Ok(()))
        }
        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    #[test]
    fn connections_are_counted_while_they_live() {
        let open = Arc::new(AtomicUsize::new(0));
        let a = Slot::take(&open, 2).unwrap();
        let b = Slot::take(&open, 2).unwrap();
        assert!(Slot::take(&open, 2).is_none(), "a third is refused");
        drop(a);
        let c = Slot::take(&open, 2).unwrap();
        drop((b, c));
        assert_eq!(open.load(Ordering::Acquire), 0);
    }

    #[tokio::test]
    async fn an_idle_connection_is_found_and_bytes_keep_one_alive() {
        let a = Activity::new();
        let t0 = Instant::now();
        let idle = Duration::from_millis(150);
        // Bytes every 50 ms for 300 ms keep it from being idle...
        let busy = async {
            for _ in 0..6 {
                tokio::time::sleep(Duration::from_millis(50)).await;
                a.touch();
            }
        };
        tokio::select! {
            () = busy => {}
            () = a.idle_for(idle) => panic!("idle while bytes passed"),
        }
        // ...then silence ends it after the timeout.
        a.idle_for(idle).await;
        assert!(t0.elapsed() >= Duration::from_millis(300) + idle);
        tokio::time::timeout(Duration::from_millis(1), a.idle_for(Duration::MAX))
            .await
            .unwrap_err();
    }

    #[tokio::test]
    async fn a_link_result_and_the_first_message_read_together_go_out_apart() {
        // What the proxy read in one go from QEMU right after the ticket: the link
        // result and SPICE_MSG_MAIN_INIT (mini header), then half of a next message.
        let mut frames = ServerFrames::default();
        let mut reply = airlock_core::spice::MAGIC.to_le_bytes().to_vec();
        for v in [2u32, 2, 4 + 162 + 12 + 8] {
            reply.extend_from_slice(&v.to_le_bytes());
        }
        reply.extend_from_slice(&0u32.to_le_bytes());
        reply.extend_from_slice(&[0; 162]);
        for v in [1u32, 1, 178, 0b1011, 0xf] {
            reply.extend_from_slice(&v.to_le_bytes());
        }
        let mut out = Writes::default();
        write_units(&mut out, &reply, &frames.push(&reply, Some(true)))
            .await
            .unwrap();
        assert_eq!(out.0, vec![reply.clone()]);

        let mut chunk = 0u32.to_le_bytes().to_vec();
        let init = [[103u8, 0].as_slice(), &32u32.to_le_bytes(), &[9u8; 32]].concat();
        chunk.extend_from_slice(&init);
        let next = [[104u8, 0].as_slice(), &10u32.to_le_bytes(), &[7u8; 4]].concat();
        chunk.extend_from_slice(&next);
        let mut out = Writes::default();
        write_units(&mut out, &chunk, &frames.push(&chunk, Some(true)))
            .await
            .unwrap();
        assert_eq!(out.0, vec![0u32.to_le_bytes().to_vec(), init, next]);
    }
}
