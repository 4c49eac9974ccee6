//! A site CA and a broker certificate it signed, for tests of the broker's TLS (the API,
//! the USB stream and the display).
use crate::broker::TlsFiles;
use anyhow::{Context, Result};
use std::path::Path;

/// The subject of the broker certificates [`site_ca`] makes (SPICE `host-subject`).
pub const HOST_SUBJECT: &str = "O=Airlock,CN=localhost";

/// Writes `NAME-ca.pem`, `NAME-cert.pem` and `NAME-key.pem` into `dir`: a new CA and a
/// certificate it signed for `localhost` and `127.0.0.1` with the subject
/// [`HOST_SUBJECT`]. Two calls make two CAs that do not trust each other's certificates.
pub fn site_ca(dir: &Path, name: &str) -> Result<TlsFiles> {
    let ca_key = rcgen::KeyPair::generate().context("CA key")?;
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, format!("Airlock test CA {name}"));
    let ca_cert = ca_params.self_signed(&ca_key).context("CA certificate")?;
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let key = rcgen::KeyPair::generate().context("broker key")?;
    let mut params =
        rcgen::CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])?;
    let mut dn = rcgen::DistinguishedName::new();
    dn.push(rcgen::DnType::OrganizationName, "Airlock");
    dn.push(rcgen::DnType::CommonName, "localhost");
    params.distinguished_name = dn;
    let leaf = params
        .signed_by(&key, &issuer)
        .context("broker certificate")?;
    let files = TlsFiles {
        cert: dir.join(format!("{name}-cert.pem")),
        key: dir.join(format!("{name}-key.pem")),
        ca: dir.join(format!("{name}-ca.pem")),
    };
    for (path, pem) in [
        (&files.ca, ca_cert.pem()),
        (&files.cert, leaf.pem()),
        (&files.key, key.serialize_pem()),
    ] {
        std::fs::write(path, pem).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(files)
}
