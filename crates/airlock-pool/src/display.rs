//! The display proxy: the broker owns each desktop's display port and forwards a
//! connection to QEMU's display socket only while the desktop is leased; when the lease
//! ends every forwarded connection is cut.
//!
//! Owning the port also means a reset never waits for the old QEMU process to release it,
//! so a new process can start while the kernel is still freeing the old one's memory.
use crate::engine::Pool;
use airlock_core::DesktopId;
use airlock_qemu::spec::files;
use tokio::net::{TcpListener, UnixStream};

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

    async fn proxy_display(
        &self,
        id: &DesktopId,
        mut tcp: tokio::net::TcpStream,
        peer: std::net::SocketAddr,
    ) {
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
        let mut unix = match UnixStream::connect(&path).await {
            Ok(u) => u,
            Err(e) => {
                tracing::warn!(desktop = %id, error = %e, "cannot reach the desktop's display");
                return;
            }
        };
        let _ = tcp.set_nodelay(true);
        tracing::debug!(desktop = %id, %peer, lease = %lease, "display connection");
        tokio::select! {
            _ = tokio::io::copy_bidirectional(&mut tcp, &mut unix) => {}
            _ = cut.changed() => {
                tracing::debug!(desktop = %id, %peer, "display connection cut: the lease ended");
            }
        }
    }
}
