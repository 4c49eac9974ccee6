//! `[export]`: key images (issue 14). Captures of a leased desktop's screen work with
//! the defaults; sending them to the PACS needs `[export.pacs]`, and completing the
//! HIS's patient context from a Modality Worklist needs `[export.worklist]`. Either may
//! use DICOM TLS (`tls = true`, its CA file, optionally a client certificate): the files
//! are read and checked here, so a broker never starts with a TLS set-up it cannot use.
//! See docs/export.md.
use super::{in_range, resolve};
use airlock_core::config_key::{invalid, ConfigError};
use airlock_dicom::net::Peer;
use airlock_dicom::tls::{DicomTls, TlsFiles, TlsItem};
use airlock_dicom::{Charset, Equipment, UidRoot};
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The TOML shape of `[export]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawExport {
    #[serde(default = "default_retention_hours")]
    retention_hours: u64,
    #[serde(default = "default_captures_per_minute")]
    captures_per_minute: u32,
    /// The site's DICOM UID root (else UIDs are `2.25.<random>`).
    uid_root: Option<String>,
    #[serde(default = "default_charset")]
    charset: String,
    /// Station Name in the objects.
    station: Option<String>,
    #[serde(default = "default_calling_ae")]
    calling_ae: String,
    pacs: Option<RawPeer>,
    worklist: Option<RawPeer>,
}

impl Default for RawExport {
    fn default() -> RawExport {
        RawExport {
            retention_hours: default_retention_hours(),
            captures_per_minute: default_captures_per_minute(),
            uid_root: None,
            charset: default_charset(),
            station: None,
            calling_ae: default_calling_ae(),
            pacs: None,
            worklist: None,
        }
    }
}

/// `[export.pacs]` or `[export.worklist]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPeer {
    host: String,
    port: u16,
    called_ae: String,
    #[serde(default = "default_timeout_s")]
    timeout_s: u64,
    /// DICOM TLS to this peer.
    #[serde(default)]
    tls: bool,
    /// The CA certificate(s) (PEM) that signed the peer's certificate.
    ca_file: Option<PathBuf>,
    /// The broker's client certificate (PEM) and its key, for peers that require one.
    client_cert: Option<PathBuf>,
    client_key: Option<PathBuf>,
    /// The name in the peer's certificate, when it is not `host`.
    server_name: Option<String>,
}

/// The keys of `[export.pacs]` or `[export.worklist]`, for errors.
struct Keys {
    host: &'static str,
    called_ae: &'static str,
    timeout_s: &'static str,
    tls: &'static str,
    ca_file: &'static str,
    client_cert: &'static str,
    client_key: &'static str,
    server_name: &'static str,
}

const PACS_KEYS: Keys = Keys {
    host: "export.pacs.host",
    called_ae: "export.pacs.called_ae",
    timeout_s: "export.pacs.timeout_s",
    tls: "export.pacs.tls",
    ca_file: "export.pacs.ca_file",
    client_cert: "export.pacs.client_cert",
    client_key: "export.pacs.client_key",
    server_name: "export.pacs.server_name",
};

const WORKLIST_KEYS: Keys = Keys {
    host: "export.worklist.host",
    called_ae: "export.worklist.called_ae",
    timeout_s: "export.worklist.timeout_s",
    tls: "export.worklist.tls",
    ca_file: "export.worklist.ca_file",
    client_cert: "export.worklist.client_cert",
    client_key: "export.worklist.client_key",
    server_name: "export.worklist.server_name",
};

fn default_retention_hours() -> u64 {
    24
}
fn default_captures_per_minute() -> u32 {
    12
}
fn default_charset() -> String {
    "utf8".into()
}
fn default_calling_ae() -> String {
    "AIRLOCK".into()
}
fn default_timeout_s() -> u64 {
    20
}

/// The validated `[export]`.
#[derive(Debug, Clone)]
pub struct ExportSettings {
    /// How long a capture is kept on the broker.
    pub retention: Duration,
    /// Captures one lease may take per minute.
    pub captures_per_minute: u32,
    pub uid_root: UidRoot,
    pub charset: Charset,
    pub equipment: Equipment,
    /// The PACS captures are sent to (`None`: sending is refused).
    pub pacs: Option<Peer>,
    /// The worklist the patient context is completed from (`None`: the HIS's as given).
    pub worklist: Option<Peer>,
}

/// The DICOM TLS of a peer, its files resolved against the config file's folder `base`
/// and read now (`None`: plain DICOM).
fn peer_tls(base: &Path, raw: &RawPeer, k: &Keys) -> Result<Option<DicomTls>, ConfigError> {
    if !raw.tls {
        for (key, set) in [
            (k.ca_file, raw.ca_file.is_some()),
            (k.client_cert, raw.client_cert.is_some()),
            (k.client_key, raw.client_key.is_some()),
            (k.server_name, raw.server_name.is_some()),
        ] {
            if set {
                return Err(invalid(
                    key,
                    format!("is set but {} is false", k.tls),
                    format!("set {} = true for DICOM TLS, or remove the key", k.tls),
                ));
            }
        }
        return Ok(None);
    }
    let ca_file = raw.ca_file.as_deref().ok_or_else(|| {
        invalid(
            k.ca_file,
            format!("is missing ({} = true)", k.tls),
            "give the PEM file of the CA that signed the server's certificate (ask its administrator)",
        )
    })?;
    let client = match (&raw.client_cert, &raw.client_key) {
        (None, None) => None,
        (Some(c), Some(key)) => Some((resolve(base, c), resolve(base, key))),
        (Some(_), None) | (None, Some(_)) => {
            return Err(invalid(
                k.client_cert,
                format!("and {} must be set together", k.client_key),
                "give both (PEM) when the server requires a client certificate, or neither",
            ))
        }
    };
    let files = TlsFiles {
        ca_file: resolve(base, ca_file),
        client,
        server_name: raw.server_name.clone(),
    };
    DicomTls::load(&files, &raw.host).map(Some).map_err(|e| {
        let (key, fix) = match e.item() {
            TlsItem::CaFile => (
                k.ca_file,
                "give a readable PEM file with the certificate of the CA that signed the server's certificate",
            ),
            TlsItem::ClientCert => (
                k.client_cert,
                "give the broker's client certificate (PEM) and the key it was made with",
            ),
            TlsItem::ClientKey => (
                k.client_key,
                "give the PEM private key of the client certificate (readable by airlockd)",
            ),
            TlsItem::ServerName => (
                k.server_name,
                "give the DNS name or IP address in the server's certificate",
            ),
        };
        invalid(key, e.to_string(), fix)
    })
}

fn peer(base: &Path, raw: &RawPeer, calling_ae: &str, k: &Keys) -> Result<Peer, ConfigError> {
    let host_ok = !raw.host.is_empty()
        && raw.host.len() <= 253
        && raw
            .host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'_'));
    if !host_ok || raw.port == 0 {
        return Err(invalid(
            k.host,
            format!("{:?} port {} is not a host and port", raw.host, raw.port),
            "give a host name or IP address and a port from 1 to 65535",
        ));
    }
    in_range(k.timeout_s, raw.timeout_s, 1..=300, " s")?;
    let p = Peer {
        host: raw.host.clone(),
        port: raw.port,
        called_ae: raw.called_ae.clone(),
        calling_ae: calling_ae.to_owned(),
        timeout: Duration::from_secs(raw.timeout_s),
        tls: None,
    };
    p.validate().map_err(|e| {
        invalid(
            k.called_ae,
            e.to_string(),
            "use the AE title the server is configured with (1 to 16 characters)",
        )
    })?;
    Ok(Peer {
        tls: peer_tls(base, raw, k)?,
        ..p
    })
}

/// Validates `[export]` (TLS files relative to the config file's folder `base`).
pub(super) fn export_settings(base: &Path, raw: &RawExport) -> Result<ExportSettings, ConfigError> {
    in_range(
        "export.retention_hours",
        raw.retention_hours,
        1..=24 * 90,
        " hours",
    )?;
    in_range(
        "export.captures_per_minute",
        raw.captures_per_minute,
        1..=120,
        "",
    )?;
    let uid_root = UidRoot::new(raw.uid_root.as_deref()).map_err(|e| {
        invalid(
            "export.uid_root",
            e.to_string(),
            "use the root your organisation registered, or leave it out (UIDs are then 2.25.<random>)",
        )
    })?;
    let charset = Charset::parse(&raw.charset).ok_or_else(|| {
        invalid(
            "export.charset",
            format!("{:?} is not a character set airlockd writes", raw.charset),
            "use \"utf8\" (ISO_IR 192) or \"iso2022-ir87\" (ISO 2022 IR 87, JIS X 0208)",
        )
    })?;
    let station = match raw.station.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(s) if s.len() <= 16 && s.bytes().all(|b| (b' '..=b'~').contains(&b) && b != b'\\') => {
            Some(s.to_owned())
        }
        Some(s) => {
            return Err(invalid(
                "export.station",
                format!("{s:?} is not a DICOM short string"),
                "use at most 16 printable ASCII characters",
            ))
        }
    };
    if !airlock_dicom::net::valid_ae(&raw.calling_ae) {
        return Err(invalid(
            "export.calling_ae",
            format!("{:?} is not an AE title", raw.calling_ae),
            "use 1 to 16 letters, digits, spaces, '-', '_' or '.'",
        ));
    }
    let pacs = raw
        .pacs
        .as_ref()
        .map(|p| peer(base, p, &raw.calling_ae, &PACS_KEYS))
        .transpose()?;
    let worklist = raw
        .worklist
        .as_ref()
        .map(|p| peer(base, p, &raw.calling_ae, &WORKLIST_KEYS))
        .transpose()?;
    Ok(ExportSettings {
        retention: Duration::from_secs(raw.retention_hours * 3600),
        captures_per_minute: raw.captures_per_minute,
        uid_root,
        charset,
        equipment: Equipment {
            version: env!("CARGO_PKG_VERSION").to_owned(),
            station,
        },
        pacs,
        worklist,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `[export]` with `pacs_extra` in `[export.pacs]`, validated against `base`.
    fn settings(base: &Path, pacs_extra: &str) -> Result<ExportSettings, ConfigError> {
        let text = format!(
            "[pacs]\nhost = \"pacs.example\"\nport = 2762\ncalled_ae = \"PACS\"\n{pacs_extra}\n"
        );
        let raw: RawExport = toml::from_str(&text).unwrap();
        export_settings(base, &raw)
    }

    fn err(base: &Path, pacs_extra: &str) -> String {
        settings(base, pacs_extra).unwrap_err().to_string()
    }

    #[test]
    fn dicom_tls_files_are_read_and_checked_at_load() {
        let d = tempfile::tempdir().unwrap();
        let b = d.path();
        let site = airlock_testkit::tls::site_ca(b, "site").unwrap();
        // Its key is the "other-key.pem" below.
        airlock_testkit::tls::site_ca(b, "other").unwrap();
        std::fs::write(b.join("junk.pem"), "not PEM\n").unwrap();

        // Plain by default; TLS with the CA (relative to the config's folder), the
        // server's name the host's unless given, a client certificate if given.
        assert!(settings(b, "").unwrap().pacs.unwrap().tls.is_none());
        let p = settings(b, "tls = true\nca_file = \"site-ca.pem\"")
            .unwrap()
            .pacs
            .unwrap();
        let tls = p.tls.unwrap();
        assert_eq!(tls.server_name(), "pacs.example");
        assert!(!tls.has_client_cert());
        let tls = settings(
            b,
            &format!(
                "tls = true\nca_file = \"site-ca.pem\"\nclient_cert = \"site-cert.pem\"\nclient_key = \"{}\"\nserver_name = \"pacs-1.hospital.example\"",
                site.key.display()
            ),
        )
        .unwrap()
        .pacs
        .unwrap()
        .tls
        .unwrap();
        assert_eq!(tls.server_name(), "pacs-1.hospital.example");
        assert!(tls.has_client_cert());

        for (extra, key, says) in [
            ("tls = true", "export.pacs.ca_file", "is missing"),
            ("ca_file = \"site-ca.pem\"", "export.pacs.ca_file", "export.pacs.tls is false"),
            ("server_name = \"x\"", "export.pacs.server_name", "export.pacs.tls is false"),
            ("tls = true\nca_file = \"nonexistent.pem\"", "export.pacs.ca_file", "cannot read the CA file"),
            ("tls = true\nca_file = \"junk.pem\"", "export.pacs.ca_file", "no usable PEM certificate"),
            // A key is not a certificate.
            ("tls = true\nca_file = \"site-key.pem\"", "export.pacs.ca_file", "no usable PEM certificate"),
            (
                "tls = true\nca_file = \"site-ca.pem\"\nclient_cert = \"site-cert.pem\"",
                "export.pacs.client_cert",
                "must be set together",
            ),
            (
                "tls = true\nca_file = \"site-ca.pem\"\nclient_cert = \"site-cert.pem\"\nclient_key = \"other-key.pem\"",
                "export.pacs.client_key",
                "does not belong to the client certificate",
            ),
            (
                "tls = true\nca_file = \"site-ca.pem\"\nclient_cert = \"site-cert.pem\"\nclient_key = \"junk.pem\"",
                "export.pacs.client_key",
                "no usable PEM private key",
            ),
            (
                "tls = true\nca_file = \"site-ca.pem\"\nclient_cert = \"junk.pem\"\nclient_key = \"site-key.pem\"",
                "export.pacs.client_cert",
                "no usable PEM certificate",
            ),
            (
                "tls = true\nca_file = \"site-ca.pem\"\nserver_name = \"not a name\"",
                "export.pacs.server_name",
                "not a TLS server name",
            ),
        ] {
            let e = err(b, extra);
            assert!(e.contains(&format!("`{key}`")) && e.contains(says), "{extra:?}: {e}");
        }

        // The worklist's keys are its own.
        let raw: RawExport = toml::from_str(
            "[worklist]\nhost = \"ris\"\nport = 104\ncalled_ae = \"WL\"\ntls = true\nca_file = \"nonexistent.pem\"\n",
        )
        .unwrap();
        let e = export_settings(b, &raw).unwrap_err().to_string();
        assert!(e.contains("`export.worklist.ca_file`"), "{e}");
    }
}
