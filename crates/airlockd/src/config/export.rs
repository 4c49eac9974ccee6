//! `[export]`: key images (issue 14). Captures of a leased desktop's screen work with
//! the defaults; sending them to the PACS needs `[export.pacs]`, and completing the
//! HIS's patient context from a Modality Worklist needs `[export.worklist]`. See
//! docs/export.md.
use super::in_range;
use airlock_core::config_key::{invalid, ConfigError};
use airlock_dicom::net::Peer;
use airlock_dicom::{Charset, Equipment, UidRoot};
use serde::Deserialize;
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
}

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

fn peer(raw: &RawPeer, calling_ae: &str, keys: [&'static str; 3]) -> Result<Peer, ConfigError> {
    let [host_key, ae_key, timeout_key] = keys;
    let host_ok = !raw.host.is_empty()
        && raw.host.len() <= 253
        && raw
            .host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'_'));
    if !host_ok || raw.port == 0 {
        return Err(invalid(
            host_key,
            format!("{:?} port {} is not a host and port", raw.host, raw.port),
            "give a host name or IP address and a port from 1 to 65535",
        ));
    }
    in_range(timeout_key, raw.timeout_s, 1..=300, " s")?;
    let p = Peer {
        host: raw.host.clone(),
        port: raw.port,
        called_ae: raw.called_ae.clone(),
        calling_ae: calling_ae.to_owned(),
        timeout: Duration::from_secs(raw.timeout_s),
    };
    p.validate().map_err(|e| {
        invalid(
            ae_key,
            e.to_string(),
            "use the AE title the server is configured with (1 to 16 characters)",
        )
    })?;
    Ok(p)
}

/// Validates `[export]`.
pub(super) fn export_settings(raw: &RawExport) -> Result<ExportSettings, ConfigError> {
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
        .map(|p| {
            peer(
                p,
                &raw.calling_ae,
                [
                    "export.pacs.host",
                    "export.pacs.called_ae",
                    "export.pacs.timeout_s",
                ],
            )
        })
        .transpose()?;
    let worklist = raw
        .worklist
        .as_ref()
        .map(|p| {
            peer(
                p,
                &raw.calling_ae,
                [
                    "export.worklist.host",
                    "export.worklist.called_ae",
                    "export.worklist.timeout_s",
                ],
            )
        })
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
