//! DICOM TLS (PS3.15 B, the secure transport connection profiles) to the PACS and the
//! worklist: the association runs over TLS 1.2 or 1.3 (rustls, ring), the server's
//! certificate is checked against the site's CA file for the server's name, and when the
//! server asks for one the broker presents its client certificate. Everything is read
//! and checked when the configuration is loaded ([`DicomTls::load`]); what can go wrong
//! later, at the handshake, is a [`TlsProblem`].
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::ClientConfig;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The files and name of a DICOM TLS peer, as configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// The CA certificate(s) (PEM) that signed the server's certificate: only these are
    /// trusted.
    pub ca_file: PathBuf,
    /// The broker's client certificate (PEM, the chain from the leaf) and its private
    /// key (PEM), for servers that require one.
    pub client: Option<(PathBuf, PathBuf)>,
    /// The name the server's certificate must carry when it is not the host connected
    /// to (a DNS name or an IP address).
    pub server_name: Option<String>,
}

/// Which configured item a [`TlsSetupError`] is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsItem {
    CaFile,
    ClientCert,
    ClientKey,
    ServerName,
}

/// Why a DICOM TLS configuration cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsSetupError {
    #[error("cannot read {} {}: {source}", item.what(), path.display())]
    Read {
        item: TlsItem,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{} {} holds no usable PEM {expected}", item.what(), path.display())]
    Pem {
        item: TlsItem,
        path: PathBuf,
        expected: &'static str,
    },
    #[error("a certificate in the CA file {} cannot be trusted: {why}", path.display())]
    BadCa { path: PathBuf, why: String },
    #[error("the client key {} does not belong to the client certificate {}", key.display(), cert.display())]
    KeyMismatch { cert: PathBuf, key: PathBuf },
    #[error("the client certificate {} and key {} cannot be used: {why}", cert.display(), key.display())]
    Client {
        cert: PathBuf,
        key: PathBuf,
        why: String,
    },
    #[error("{0:?} is not a TLS server name (a DNS name or an IP address)")]
    ServerName(String),
    #[error("TLS setup: {0}")]
    Rustls(String),
}

impl TlsItem {
    fn what(self) -> &'static str {
        match self {
            TlsItem::CaFile => "the CA file",
            TlsItem::ClientCert => "the client certificate",
            TlsItem::ClientKey => "the client key",
            TlsItem::ServerName => "the server name",
        }
    }
}

impl TlsSetupError {
    /// The configured item at fault.
    pub fn item(&self) -> TlsItem {
        match self {
            TlsSetupError::Read { item, .. } | TlsSetupError::Pem { item, .. } => *item,
            TlsSetupError::BadCa { .. } | TlsSetupError::Rustls(_) => TlsItem::CaFile,
            TlsSetupError::KeyMismatch { .. } => TlsItem::ClientKey,
            TlsSetupError::Client { .. } => TlsItem::ClientCert,
            TlsSetupError::ServerName(_) => TlsItem::ServerName,
        }
    }
}

/// A checked DICOM TLS client configuration for one peer.
#[derive(Clone)]
pub struct DicomTls {
    config: Arc<ClientConfig>,
    /// The name the server's certificate is checked for.
    server_name: String,
    /// Whether a client certificate is presented when asked.
    client_cert: bool,
}

impl std::fmt::Debug for DicomTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DicomTls")
            .field("server_name", &self.server_name)
            .field("client_cert", &self.client_cert)
            .finish_non_exhaustive()
    }
}

/// Two configurations are the same when they are the same loaded configuration.
impl PartialEq for DicomTls {
    fn eq(&self, other: &DicomTls) -> bool {
        Arc::ptr_eq(&self.config, &other.config)
            && self.server_name == other.server_name
            && self.client_cert == other.client_cert
    }
}
impl Eq for DicomTls {}

fn read(item: TlsItem, path: &Path) -> Result<Vec<u8>, TlsSetupError> {
    std::fs::read(path).map_err(|source| TlsSetupError::Read {
        item,
        path: path.to_owned(),
        source,
    })
}

fn certificates(item: TlsItem, path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsSetupError> {
    let pem = read(item, path)?;
    let bad = || TlsSetupError::Pem {
        item,
        path: path.to_owned(),
        expected: "certificate (-----BEGIN CERTIFICATE-----)",
    };
    let certs: Vec<_> = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<_, _>>()
        .map_err(|_| bad())?;
    if certs.is_empty() {
        return Err(bad());
    }
    Ok(certs)
}

impl DicomTls {
    /// Reads and checks `files` for a peer at `host`: the CA file must hold at least one
    /// certificate usable as a trust anchor, the client key must be a PEM private key
    /// that belongs to the client certificate, and the server name (`host` unless
    /// given) must be a DNS name or an IP address.
    pub fn load(files: &TlsFiles, host: &str) -> Result<DicomTls, TlsSetupError> {
        let server_name = files.server_name.as_deref().unwrap_or(host).to_owned();
        ServerName::try_from(server_name.clone())
            .map_err(|_| TlsSetupError::ServerName(server_name.clone()))?;
        let mut roots = rustls::RootCertStore::empty();
        for c in certificates(TlsItem::CaFile, &files.ca_file)? {
            roots.add(c).map_err(|e| TlsSetupError::BadCa {
                path: files.ca_file.clone(),
                why: e.to_string(),
            })?;
        }
        let builder =
            ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .map_err(|e| TlsSetupError::Rustls(e.to_string()))?
                .with_root_certificates(roots);
        let config = match &files.client {
            None => builder.with_no_client_auth(),
            Some((cert, key)) => {
                let chain = certificates(TlsItem::ClientCert, cert)?;
                let pem = read(TlsItem::ClientKey, key)?;
                let der = PrivateKeyDer::from_pem_slice(&pem).map_err(|_| TlsSetupError::Pem {
                    item: TlsItem::ClientKey,
                    path: key.clone(),
                    expected: "private key (-----BEGIN PRIVATE KEY-----, or RSA or EC)",
                })?;
                builder
                    .with_client_auth_cert(chain, der)
                    .map_err(|e| match e {
                        rustls::Error::InconsistentKeys(_) => TlsSetupError::KeyMismatch {
                            cert: cert.clone(),
                            key: key.clone(),
                        },
                        e => TlsSetupError::Client {
                            cert: cert.clone(),
                            key: key.clone(),
                            why: e.to_string(),
                        },
                    })?
            }
        };
        Ok(DicomTls {
            config: Arc::new(config),
            server_name,
            client_cert: files.client.is_some(),
        })
    }

    /// The name the server's certificate is checked for.
    pub fn server_name(&self) -> &str {
        &self.server_name
    }

    /// Whether a client certificate is presented when the server asks for one.
    pub fn has_client_cert(&self) -> bool {
        self.client_cert
    }

    pub(crate) fn config(&self) -> Arc<ClientConfig> {
        self.config.clone()
    }
}

/// Why a TLS handshake with a peer failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TlsProblem {
    #[error("its certificate is not signed by the CA in ca_file; give the CA that signed the server's certificate (ask its administrator)")]
    Untrusted,
    #[error("its certificate is not for {name:?}; set server_name to a name in the server's certificate, or connect by that name")]
    NameMismatch { name: String },
    #[error("its certificate has expired or is not valid yet; check the clocks, and ask its administrator to renew it")]
    Expired,
    #[error("its certificate was refused: {0}")]
    BadCertificate(String),
    #[error("it refused the connection ({alert}): it may require a client certificate signed by a CA it trusts (client_cert, client_key)")]
    Refused { alert: String },
    #[error("it closed the connection during the TLS handshake: check that it has DICOM TLS on this port and whether it requires a client certificate (client_cert, client_key)")]
    Closed,
    #[error("the handshake timed out: check that this is the server's DICOM TLS port")]
    TimedOut,
    #[error("{0}")]
    Other(String),
}

impl TlsProblem {
    /// The problem a rustls error stands for.
    pub(crate) fn from_rustls(e: &rustls::Error, server_name: &str) -> TlsProblem {
        use rustls::CertificateError as C;
        match e {
            rustls::Error::InvalidCertificate(c) => match c {
                C::UnknownIssuer | C::BadSignature => TlsProblem::Untrusted,
                C::NotValidForName | C::NotValidForNameContext { .. } => TlsProblem::NameMismatch {
                    name: server_name.to_owned(),
                },
                C::Expired
                | C::ExpiredContext { .. }
                | C::NotValidYet
                | C::NotValidYetContext { .. } => TlsProblem::Expired,
                other => TlsProblem::BadCertificate(format!("{other:?}")),
            },
            rustls::Error::AlertReceived(alert) => TlsProblem::Refused {
                alert: format!("{alert:?}"),
            },
            other => TlsProblem::Other(other.to_string()),
        }
    }

    /// The problem an I/O error during or right after the handshake stands for, if it
    /// is one of TLS (a rustls error inside, an end of the connection, a time-out).
    pub(crate) fn from_io(e: &std::io::Error, server_name: &str) -> TlsProblem {
        if let Some(r) = e.get_ref().and_then(|r| r.downcast_ref::<rustls::Error>()) {
            return TlsProblem::from_rustls(r, server_name);
        }
        use std::io::ErrorKind as K;
        match e.kind() {
            K::WouldBlock | K::TimedOut => TlsProblem::TimedOut,
            K::UnexpectedEof | K::ConnectionReset | K::ConnectionAborted | K::BrokenPipe => {
                TlsProblem::Closed
            }
            _ => TlsProblem::Other(e.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_and_empty_files_name_the_item() {
        let d = std::env::temp_dir().join(format!("airlock-dicom-tls-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        let empty = d.join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").unwrap();
        let files = |ca: &Path| TlsFiles {
            ca_file: ca.to_owned(),
            client: None,
            server_name: None,
        };
        let e = DicomTls::load(&files(&d.join("nonexistent.pem")), "pacs").unwrap_err();
        assert_eq!(e.item(), TlsItem::CaFile);
        assert!(e.to_string().contains("cannot read the CA file"), "{e}");
        let e = DicomTls::load(&files(&empty), "pacs").unwrap_err();
        assert!(
            matches!(
                e,
                TlsSetupError::Pem {
                    item: TlsItem::CaFile,
                    ..
                }
            ),
            "{e}"
        );
        let e = DicomTls::load(
            &TlsFiles {
                server_name: Some("not a name".into()),
                ..files(&empty)
            },
            "pacs",
        )
        .unwrap_err();
        assert_eq!(e.item(), TlsItem::ServerName);
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn handshake_failures_are_told_apart() {
        use rustls::CertificateError as C;
        let p = |e| TlsProblem::from_rustls(&e, "pacs.example");
        assert_eq!(
            p(rustls::Error::InvalidCertificate(C::UnknownIssuer)),
            TlsProblem::Untrusted
        );
        assert_eq!(
            p(rustls::Error::InvalidCertificate(C::NotValidForName)),
            TlsProblem::NameMismatch {
                name: "pacs.example".into()
            }
        );
        assert_eq!(
            p(rustls::Error::InvalidCertificate(C::Expired)),
            TlsProblem::Expired
        );
        assert!(matches!(
            p(rustls::Error::AlertReceived(
                rustls::AlertDescription::CertificateRequired
            )),
            TlsProblem::Refused { .. }
        ));
        let io = std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            rustls::Error::InvalidCertificate(C::UnknownIssuer),
        );
        assert_eq!(TlsProblem::from_io(&io, "x"), TlsProblem::Untrusted);
        let eof = std::io::Error::from(std::io::ErrorKind::UnexpectedEof);
        assert_eq!(TlsProblem::from_io(&eof, "x"), TlsProblem::Closed);
    }
}
