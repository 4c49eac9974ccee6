//! The display proxy: the broker owns each desktop's display port and forwards a
//! connection to QEMU's display socket only while the desktop is leased; when the lease
//! ends every forwarded connection is cut. With TLS configured the proxy terminates TLS
//! itself (the broker's certificate) and there is no plaintext path: a client that does
//! not complete a TLS handshake never reaches QEMU.
//!
//! Owning the port also means a reset never waits for the old QEMU process to release it,
//! so a new process can start while the kernel is still freeing the old one's memory.
use crate::config::DisplayTls;
use crate::engine::Pool;
use crate::error::PoolError;
use airlock_core::DesktopId;
use airlock_qemu::spec::files;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
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
                        Ok(Ok(tls)) => forward(tls, &path, id).await,
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

/// Pipes a client's (plain or decrypted) stream to QEMU's display socket until either
/// side closes.
async fn forward<S>(mut client: S, path: &Path, id: &DesktopId)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut unix = match UnixStream::connect(path).await {
        Ok(u) => u,
        Err(e) => {
            tracing::warn!(desktop = %id, error = %e, "cannot reach the desktop's display");
            return;
        }
    };
    let _ = tokio::io::copy_bidirectional(&mut client, &mut unix).await;
}
