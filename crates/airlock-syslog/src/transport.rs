//! The connection to the syslog server: TCP, or TLS with rustls (RFC 5425: the server's
//! certificate checked against a CA file and a server name; optionally a client
//! certificate for mutual TLS).
//!
//! A syslog server never writes on the connection, so the connection reads in the
//! background only to notice the end: EOF or a reset means the server is gone and what
//! was sent lately may not have been read ([`Connection::is_closed`]).
use crate::SyslogError;
use rustls::ClientConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use std::path::Path;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Notify;

/// How to reach the server.
#[derive(Clone)]
pub enum Transport {
    /// Plain TCP (cleartext).
    Tcp,
    /// TLS with this client configuration, checking the server's certificate for
    /// `server_name`.
    Tls {
        config: Arc<ClientConfig>,
        server_name: ServerName<'static>,
    },
}

impl std::fmt::Debug for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Transport::Tcp => f.write_str("tcp"),
            Transport::Tls { server_name, .. } => write!(f, "tls ({})", server_name.to_str()),
        }
    }
}

fn read(what: &'static str, path: &Path) -> Result<Vec<u8>, SyslogError> {
    std::fs::read(path).map_err(|source| SyslogError::ReadFile {
        what,
        path: path.to_owned(),
        source,
    })
}

fn certificates(
    what: &'static str,
    path: &Path,
) -> Result<Vec<CertificateDer<'static>>, SyslogError> {
    let pem = read(what, path)?;
    let certs: Vec<_> = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<_, _>>()
        .map_err(|_| SyslogError::Pem {
            what,
            path: path.to_owned(),
            expected: "certificates",
        })?;
    if certs.is_empty() {
        return Err(SyslogError::Pem {
            what,
            path: path.to_owned(),
            expected: "certificates",
        });
    }
    Ok(certs)
}

/// The TLS client configuration: trust exactly the certificates of `ca_file`, and with
/// `client` = (certificate chain, key) present that certificate when asked (mutual TLS).
/// TLS 1.2 and 1.3, rustls' safe defaults (ring).
pub fn tls_client_config(
    ca_file: &Path,
    client: Option<(&Path, &Path)>,
) -> Result<Arc<ClientConfig>, SyslogError> {
    let mut roots = rustls::RootCertStore::empty();
    for c in certificates("the CA file", ca_file)? {
        roots.add(c)?;
    }
    let builder =
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots);
    let config = match client {
        None => builder.with_no_client_auth(),
        Some((cert, key)) => {
            let chain = certificates("the client certificate", cert)?;
            let pem = read("the client key", key)?;
            let key = PrivateKeyDer::from_pem_slice(&pem).map_err(|_| SyslogError::Pem {
                what: "the client key",
                path: key.to_owned(),
                expected: "private key",
            })?;
            builder.with_client_auth_cert(chain, key)?
        }
    };
    Ok(Arc::new(config))
}

/// A server name for the certificate check (a DNS name or an IP address).
pub fn server_name(s: &str) -> Result<ServerName<'static>, SyslogError> {
    ServerName::try_from(s.to_owned()).map_err(|_| SyslogError::ServerName(s.to_owned()))
}

const OPEN: u8 = 0;
/// The server closed the connection cleanly, after reading all it was sent.
const EOF: u8 = 1;
/// A reset, a TLS alert (e.g. a refused client certificate) or another read error.
const BROKEN: u8 = 2;

/// An open connection to the syslog server.
pub struct Connection {
    writer: Box<dyn AsyncWrite + Send + Unpin>,
    /// [`OPEN`], [`EOF`] or [`BROKEN`].
    closed: Arc<AtomicU8>,
    changed: Arc<Notify>,
    reader: tokio::task::JoinHandle<()>,
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

impl Connection {
    /// Connects (and for TLS, handshakes) within `timeout`.
    pub async fn connect(
        address: &str,
        transport: &Transport,
        timeout: Duration,
    ) -> Result<Connection, SyslogError> {
        let timed_out = || SyslogError::ConnectTimeout {
            address: address.to_owned(),
            seconds: timeout.as_secs(),
        };
        let failed = |source| SyslogError::Connect {
            address: address.to_owned(),
            source,
        };
        let tcp = tokio::time::timeout(timeout, TcpStream::connect(address))
            .await
            .map_err(|_| timed_out())?
            .map_err(failed)?;
        let _ = tcp.set_nodelay(true);
        match transport {
            Transport::Tcp => {
                let (r, w) = tcp.into_split();
                Ok(Self::from_halves(r, w))
            }
            Transport::Tls {
                config,
                server_name,
            } => {
                let connector = tokio_rustls::TlsConnector::from(config.clone());
                let tls =
                    tokio::time::timeout(timeout, connector.connect(server_name.clone(), tcp))
                        .await
                        .map_err(|_| timed_out())?
                        .map_err(failed)?;
                let (r, w) = tokio::io::split(tls);
                Ok(Self::from_halves(r, w))
            }
        }
    }

    fn from_halves(
        mut r: impl AsyncRead + Send + Unpin + 'static,
        w: impl AsyncWrite + Send + Unpin + 'static,
    ) -> Connection {
        let closed = Arc::new(AtomicU8::new(OPEN));
        let changed = Arc::new(Notify::new());
        let (c, n) = (closed.clone(), changed.clone());
        let reader = tokio::spawn(async move {
            let mut buf = [0u8; 512];
            // Whatever a server might send is ignored; the end of the stream is not.
            let end = loop {
                match r.read(&mut buf).await {
                    Ok(0) => break EOF,
                    Ok(_) => {}
                    Err(_) => break BROKEN,
                }
            };
            c.store(end, Ordering::SeqCst);
            n.notify_waiters();
        });
        Connection {
            writer: Box::new(w),
            closed,
            changed,
            reader,
        }
    }

    /// Whether the server ended the connection (EOF or reset).
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::SeqCst) != OPEN
    }

    /// Writes `bytes` (whole frames) and flushes, within `timeout`.
    pub async fn send(&mut self, bytes: &[u8], timeout: Duration) -> Result<(), SyslogError> {
        if self.is_closed() {
            return Err(SyslogError::Closed);
        }
        let w = async {
            self.writer.write_all(bytes).await?;
            self.writer.flush().await
        };
        match tokio::time::timeout(timeout, w).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(SyslogError::Send(e)),
            Err(_) => Err(SyslogError::Send(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("the server took no data for {} s", timeout.as_secs_f32()),
            ))),
        }
    }

    /// Ends the connection from this side (TLS close_notify, then FIN) and waits, at most
    /// `timeout`, for the server to close its side: true when it did so cleanly (EOF,
    /// after reading everything sent before); false on a timeout, a reset or a TLS
    /// alert (a server that refused the connection also closes it).
    pub async fn close(mut self, timeout: Duration) -> bool {
        let ended = async {
            let _ = self.writer.shutdown().await;
            loop {
                let notified = self.changed.notified();
                if self.is_closed() {
                    return;
                }
                notified.await;
            }
        };
        tokio::time::timeout(timeout, ended).await.is_ok()
            && self.closed.load(Ordering::SeqCst) == EOF
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    #[test]
    fn server_names_are_checked() {
        assert!(server_name("syslog.example.org").is_ok());
        assert!(server_name("127.0.0.1").is_ok());
        assert!(server_name("not a name").is_err());
    }

    #[test]
    fn tls_files_are_checked() {
        let d = tempfile::tempdir().unwrap();
        let missing = d.path().join("missing.pem");
        let e = tls_client_config(&missing, None).unwrap_err();
        assert!(e.to_string().contains("the CA file"), "{e}");
        let junk = d.path().join("junk.pem");
        std::fs::write(&junk, "not pem").unwrap();
        let e = tls_client_config(&junk, None).unwrap_err();
        assert!(e.to_string().contains("no usable PEM certificates"), "{e}");

        let ca = rcgen::generate_simple_self_signed(vec!["ca.test".into()]).unwrap();
        let ca_pem = d.path().join("ca.pem");
        std::fs::write(&ca_pem, ca.cert.pem()).unwrap();
        assert!(tls_client_config(&ca_pem, None).is_ok());
        let key = d.path().join("key.pem");
        std::fs::write(&key, ca.signing_key.serialize_pem()).unwrap();
        assert!(tls_client_config(&ca_pem, Some((&ca_pem, &key))).is_ok());
        let e = tls_client_config(&ca_pem, Some((&ca_pem, &junk))).unwrap_err();
        assert!(e.to_string().contains("private key"), "{e}");
    }

    #[tokio::test]
    async fn a_closed_server_is_noticed_and_close_waits_for_it() {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap().to_string();
        let mut c = Connection::connect(&addr, &Transport::Tcp, Duration::from_secs(5))
            .await
            .unwrap();
        let (mut s, _) = l.accept().await.unwrap();
        c.send(b"5 hello", Duration::from_secs(5)).await.unwrap();
        let mut got = [0u8; 7];
        s.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"5 hello");
        assert!(!c.is_closed());
        drop(s);
        tokio::time::timeout(Duration::from_secs(5), async {
            while !c.is_closed() {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await
        .unwrap();
        assert!(matches!(
            c.send(b"1 x", Duration::from_secs(1)).await,
            Err(SyslogError::Closed)
        ));

        // A server that reads to the end and closes confirms everything.
        let c = Connection::connect(&addr, &Transport::Tcp, Duration::from_secs(5))
            .await
            .unwrap();
        let (mut s, _) = l.accept().await.unwrap();
        let server = tokio::spawn(async move {
            let mut all = Vec::new();
            s.read_to_end(&mut all).await.unwrap();
        });
        assert!(c.close(Duration::from_secs(5)).await);
        server.await.unwrap();

        // A server that closes without reading (unread data: a reset) confirms nothing.
        let mut c = Connection::connect(&addr, &Transport::Tcp, Duration::from_secs(5))
            .await
            .unwrap();
        let (s, _) = l.accept().await.unwrap();
        c.send(b"5 hello", Duration::from_secs(5)).await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        drop(s);
        assert!(!c.close(Duration::from_secs(5)).await);

        // Nobody listening: a connect error naming the address.
        drop(l);
        let e = Connection::connect(&addr, &Transport::Tcp, Duration::from_secs(5))
            .await
            .err()
            .unwrap();
        assert!(e.to_string().contains(&addr), "{e}");
    }
}
