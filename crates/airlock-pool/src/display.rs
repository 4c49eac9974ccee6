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
use crate::config::DisplayTls;
use crate::engine::Pool;
use crate::error::PoolError;
use airlock_core::spice::{ClientLink, ServerFrames};
use airlock_core::DesktopId;
use airlock_qemu::spec::files;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::path::Path;
use std::sync::Arc;
use std::sync::OnceLock;
use std::time::Duration;
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
        loop {
            match listener.accept().await {
                Ok((tcp, peer)) => {
                    let p = self.clone();
                    let id = id.clone();
                    tokio::spawn(async move { p.proxy_display(&id, tcp, peer).await });
                }
                Err(e) => {
                    tracing::warn!(desktop = %id, error = %e, "display port accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
            }
        }
    }

    async fn proxy_display(&self, id: &DesktopId, tcp: TcpStream, peer: std::net::SocketAddr) {
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
                        Ok(Ok(tls)) => forward_framed(tls, &path, id).await,
                        Ok(Err(e)) => {
                            tracing::info!(desktop = %id, %peer, error = %e,
                                "display connection refused: TLS handshake failed (a client that does not trust the certificate, or does not speak TLS)");
                        }
                        Err(_) => {
                            tracing::info!(desktop = %id, %peer, "display connection refused: no TLS handshake within {} s", HANDSHAKE_TIMEOUT.as_secs());
                        }
                    }
                }
                None => forward(tcp, &path, id).await,
            }
        };
        tokio::select! {
            _ = session => {}
            _ = cut.changed() => {
                tracing::debug!(desktop = %id, %peer, "display connection cut: the lease ended");
            }
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

/// Pipes a client's (plain or decrypted) stream to QEMU's display socket until either
/// side closes.
async fn forward<S>(mut client: S, path: &Path, id: &DesktopId)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let Some(mut unix) = reach(path, id).await else {
        return;
    };
    let _ = tokio::io::copy_bidirectional(&mut client, &mut unix).await;
}

/// Like [`forward`], for a decrypted TLS stream: each unit of the desktop's SPICE stream
/// (link reply, link result, each message) goes to the client in write calls of its
/// own, so in TLS records of its own.
async fn forward_framed<S>(client: S, path: &Path, id: &DesktopId)
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
        if mini.get().is_none() {
            if let Some(found) = link.push(chunk) {
                let _ = mini.set(found);
            }
        }
        Vec::new()
    });
    let mut frames = ServerFrames::default();
    let down = relay(&mut from_desktop, &mut to_client, |chunk| {
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
