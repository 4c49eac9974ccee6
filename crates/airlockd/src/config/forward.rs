//! `[audit.forward]`: every audit record to a syslog server (an ATNA audit record
//! repository or a SIEM) as RFC 5424 over TCP or TLS; see docs/operations.md, "Audit
//! forwarding (syslog)".
use super::{in_range, must_exist, resolve};
use airlock_core::config_key::{invalid, ConfigError};
use airlock_syslog::{Facility, SdId, Transport};
use serde::Deserialize;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The TOML shape.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAuditForward {
    address: String,
    #[serde(default = "default_transport")]
    transport: String,
    ca_file: Option<PathBuf>,
    client_cert: Option<PathBuf>,
    client_key: Option<PathBuf>,
    server_name: Option<String>,
    #[serde(default = "default_facility")]
    facility: String,
    hostname: Option<String>,
    #[serde(default = "default_app_name")]
    app_name: String,
    #[serde(default = "default_sd_id")]
    sd_id: String,
    #[serde(default = "default_max_message")]
    max_message_bytes: usize,
    #[serde(default = "default_retry_max")]
    retry_max_s: u64,
    #[serde(default = "default_problem_after")]
    problem_after_s: u64,
}

fn default_transport() -> String {
    "tls".into()
}
fn default_facility() -> String {
    "authpriv".into()
}
fn default_app_name() -> String {
    "airlockd".into()
}
fn default_sd_id() -> String {
    airlock_syslog::audit::DEFAULT_SD_ID.into()
}
fn default_max_message() -> usize {
    airlock_syslog::audit::DEFAULT_MAX_MESSAGE
}
fn default_retry_max() -> u64 {
    30
}
fn default_problem_after() -> u64 {
    300
}

/// The validated `[audit.forward]`.
#[derive(Debug, Clone)]
pub struct AuditForwarding {
    /// `host:port`.
    pub address: String,
    pub transport: Transport,
    /// Plain TCP to an address that is not loopback (warned at start).
    pub cleartext_remote: bool,
    pub facility: Facility,
    /// HOSTNAME (`None`: the machine's, found at start).
    pub hostname: Option<String>,
    pub app_name: String,
    pub sd_id: SdId,
    pub max_message: usize,
    /// The longest wait between connection attempts.
    pub retry_max: Duration,
    /// How long forwarding may fail before `/healthz` lists it.
    pub problem_after: Duration,
}

/// Splits `host:port` (`[v6]:port` for IPv6).
fn host_port(a: &str) -> Option<(&str, u16)> {
    let (host, port) = a.rsplit_once(':')?;
    let host = match host.strip_prefix('[') {
        Some(h) => h.strip_suffix(']')?,
        None if host.contains(':') => return None,
        None => host,
    };
    let port = port.parse::<u16>().ok().filter(|p| *p != 0)?;
    let ok = !host.is_empty()
        && host.len() <= 253
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'_'));
    ok.then_some((host, port))
}

fn is_loopback(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost")
        || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// Validates `[audit.forward]` (paths relative to the config file's directory `base`);
/// the TLS files are read now, so a broker never starts with forwarding it cannot do.
pub(super) fn audit_forwarding(
    base: &Path,
    raw: Option<&RawAuditForward>,
) -> Result<Option<AuditForwarding>, ConfigError> {
    let Some(f) = raw else { return Ok(None) };
    let (host, _) = host_port(&f.address).ok_or_else(|| {
        invalid(
            "audit.forward.address",
            format!("{:?} is not host:port", f.address),
            "give the syslog server as host:port, e.g. \"arr.hospital.example:6514\" or \"[2001:db8::1]:6514\"",
        )
    })?;
    let loopback = is_loopback(host);
    let key = |k: &Option<PathBuf>| k.as_ref().map(|p| resolve(base, p));
    let (ca_file, client_cert, client_key) =
        (key(&f.ca_file), key(&f.client_cert), key(&f.client_key));
    let transport = match f.transport.as_str() {
        "tcp" => {
            for (k, set) in [
                ("audit.forward.ca_file", ca_file.is_some()),
                ("audit.forward.client_cert", client_cert.is_some()),
                ("audit.forward.client_key", client_key.is_some()),
                ("audit.forward.server_name", f.server_name.is_some()),
            ] {
                if set {
                    return Err(invalid(
                        k,
                        "is set but audit.forward.transport is \"tcp\"",
                        "use transport = \"tls\" (RFC 5425) or remove the key",
                    ));
                }
            }
            Transport::Tcp
        }
        "tls" => {
            let ca = ca_file.ok_or_else(|| {
                invalid(
                    "audit.forward.ca_file",
                    "is missing (transport \"tls\")",
                    "give the PEM file of the CA that signed the syslog server's certificate",
                )
            })?;
            must_exist("audit.forward.ca_file", &ca, "give the PEM file of the CA that signed the syslog server's certificate")?;
            let client = match (&client_cert, &client_key) {
                (None, None) => None,
                (Some(c), Some(k)) => {
                    must_exist("audit.forward.client_cert", c, "give the broker's client certificate (PEM)")?;
                    must_exist("audit.forward.client_key", k, "give the client certificate's private key (PEM)")?;
                    Some((c.as_path(), k.as_path()))
                }
                _ => {
                    return Err(invalid(
                        "audit.forward.client_cert",
                        "and audit.forward.client_key must be set together",
                        "give both for mutual TLS, or neither",
                    ))
                }
            };
            let name = f.server_name.as_deref().unwrap_or(host);
            let server_name = airlock_syslog::transport::server_name(name).map_err(|e| {
                invalid(
                    "audit.forward.server_name",
                    e.to_string(),
                    "give the name in the syslog server's certificate",
                )
            })?;
            let config = airlock_syslog::transport::tls_client_config(&ca, client).map_err(|e| {
                invalid(
                    if client.is_some() && !e.to_string().contains("CA file") {
                        "audit.forward.client_cert"
                    } else {
                        "audit.forward.ca_file"
                    },
                    e.to_string(),
                    "give PEM files: the CA certificate(s), and for mutual TLS the client certificate and its key",
                )
            })?;
            Transport::Tls {
                config,
                server_name,
            }
        }
        other => {
            return Err(invalid(
                "audit.forward.transport",
                format!("{other:?} is not a transport"),
                "use \"tls\" (RFC 5425, the default) or \"tcp\" (cleartext; for a relay on the same host)",
            ))
        }
    };
    let facility = Facility::parse(&f.facility).map_err(|e| {
        invalid(
            "audit.forward.facility",
            e.to_string(),
            "e.g. \"authpriv\" (the default) or \"local4\"",
        )
    })?;
    let check = |key: &'static str, v: &str, max: usize| -> Result<(), ConfigError> {
        let ok = !v.is_empty() && v.len() <= max && v.bytes().all(|b| (33..=126).contains(&b));
        if ok {
            Ok(())
        } else {
            Err(invalid(
                key,
                format!("{v:?} is not 1 to {max} printable ASCII characters without spaces"),
                "RFC 5424 header fields are printable US-ASCII",
            ))
        }
    };
    if let Some(h) = &f.hostname {
        check("audit.forward.hostname", h, 255)?;
    }
    check("audit.forward.app_name", &f.app_name, 48)?;
    let sd_id = SdId::new(&f.sd_id).map_err(|e| {
        invalid(
            "audit.forward.sd_id",
            e.to_string(),
            "use name@<your organisation's IANA private enterprise number>, e.g. \"airlock@32473\"",
        )
    })?;
    in_range(
        "audit.forward.max_message_bytes",
        f.max_message_bytes,
        2048..=65_536,
        " bytes (RFC 5425 receivers take at least 2048)",
    )?;
    in_range(
        "audit.forward.retry_max_s",
        f.retry_max_s,
        1..=3600,
        " seconds",
    )?;
    in_range(
        "audit.forward.problem_after_s",
        f.problem_after_s,
        1..=86_400,
        " seconds",
    )?;
    Ok(Some(AuditForwarding {
        address: f.address.clone(),
        cleartext_remote: matches!(transport, Transport::Tcp) && !loopback,
        transport,
        facility,
        hostname: f.hostname.clone(),
        app_name: f.app_name.clone(),
        sd_id,
        max_message: f.max_message_bytes,
        retry_max: Duration::from_secs(f.retry_max_s),
        problem_after: Duration::from_secs(f.problem_after_s),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(toml_text: &str) -> RawAuditForward {
        toml::from_str(toml_text).unwrap()
    }

    fn err(base: &Path, toml_text: &str) -> String {
        audit_forwarding(base, Some(&raw(toml_text)))
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn addresses() {
        assert_eq!(host_port("127.0.0.1:514"), Some(("127.0.0.1", 514)));
        assert_eq!(host_port("arr.example:6514"), Some(("arr.example", 6514)));
        assert_eq!(host_port("[::1]:6514"), Some(("::1", 6514)));
        for bad in [
            "",
            "host",
            "host:",
            "host:0",
            "host:70000",
            ":514",
            "::1:514",
            "a b:1",
            "[::1:5",
        ] {
            assert_eq!(host_port(bad), None, "{bad}");
        }
        assert!(is_loopback("localhost") && is_loopback("127.0.0.2") && is_loopback("::1"));
        assert!(!is_loopback("10.0.0.1") && !is_loopback("arr.example"));
    }

    #[test]
    fn tcp_defaults_and_cleartext() {
        let d = Path::new("/");
        let f = audit_forwarding(
            d,
            Some(&raw("address = \"127.0.0.1:514\"\ntransport = \"tcp\"")),
        )
        .unwrap()
        .unwrap();
        assert!(!f.cleartext_remote);
        assert_eq!(f.facility, Facility::AUTHPRIV);
        assert_eq!(f.sd_id.as_str(), "airlock@32473");
        assert_eq!((f.app_name.as_str(), f.max_message), ("airlockd", 8192));
        let f = audit_forwarding(
            d,
            Some(&raw(
                "address = \"siem.example:514\"\ntransport = \"tcp\"\nfacility = \"local4\"",
            )),
        )
        .unwrap()
        .unwrap();
        assert!(f.cleartext_remote);
        assert_eq!(f.facility.code(), 20);
        assert!(audit_forwarding(d, None).unwrap().is_none());
    }

    #[test]
    fn errors_name_the_key() {
        let d = tempfile::tempdir().unwrap();
        let b = d.path();
        for (text, key) in [
            ("address = \"nope\"", "audit.forward.address"),
            (
                "address = \"h:1\"\ntransport = \"udp\"",
                "audit.forward.transport",
            ),
            ("address = \"h:1\"", "audit.forward.ca_file"),
            (
                "address = \"h:1\"\nca_file = \"missing.pem\"",
                "audit.forward.ca_file",
            ),
            (
                "address = \"h:1\"\ntransport = \"tcp\"\nca_file = \"x.pem\"",
                "audit.forward.ca_file",
            ),
            (
                "address = \"h:1\"\ntransport = \"tcp\"\nfacility = \"kernel\"",
                "audit.forward.facility",
            ),
            (
                "address = \"h:1\"\ntransport = \"tcp\"\nhostname = \"a b\"",
                "audit.forward.hostname",
            ),
            (
                "address = \"h:1\"\ntransport = \"tcp\"\napp_name = \"\"",
                "audit.forward.app_name",
            ),
            (
                "address = \"h:1\"\ntransport = \"tcp\"\nsd_id = \"airlock\"",
                "audit.forward.sd_id",
            ),
            (
                "address = \"h:1\"\ntransport = \"tcp\"\nmax_message_bytes = 100",
                "audit.forward.max_message_bytes",
            ),
            (
                "address = \"h:1\"\ntransport = \"tcp\"\nretry_max_s = 0",
                "audit.forward.retry_max_s",
            ),
        ] {
            let e = err(b, text);
            assert!(e.contains(key), "{text}: {e}");
        }
        std::fs::write(b.join("ca.pem"), "not a certificate").unwrap();
        let e = err(b, "address = \"h:1\"\nca_file = \"ca.pem\"");
        assert!(
            e.contains("audit.forward.ca_file") && e.contains("PEM"),
            "{e}"
        );
        let e = err(
            b,
            "address = \"h:1\"\nca_file = \"ca.pem\"\nclient_cert = \"ca.pem\"",
        );
        assert!(e.contains("set together"), "{e}");
        assert!(toml::from_str::<RawAuditForward>("address = \"h:1\"\nport = 3").is_err());
    }

    #[test]
    fn tls_with_a_ca_and_a_client_certificate() {
        let d = tempfile::tempdir().unwrap();
        airlock_testkit::tls::site_ca(d.path(), "arr").unwrap();
        let f = audit_forwarding(
            d.path(),
            Some(&raw(
                "address = \"arr.example:6514\"\nca_file = \"arr-ca.pem\"",
            )),
        )
        .unwrap()
        .unwrap();
        assert!(!f.cleartext_remote);
        assert_eq!(format!("{:?}", f.transport), "tls (arr.example)");
        let f = audit_forwarding(
            d.path(),
            Some(&raw("address = \"127.0.0.1:6514\"\nca_file = \"arr-ca.pem\"\nclient_cert = \"arr-cert.pem\"\nclient_key = \"arr-key.pem\"\nserver_name = \"localhost\"")),
        )
        .unwrap()
        .unwrap();
        assert_eq!(format!("{:?}", f.transport), "tls (localhost)");
        let e = err(
            d.path(),
            "address = \"h:1\"\nca_file = \"arr-ca.pem\"\nclient_cert = \"arr-cert.pem\"\nclient_key = \"arr-ca.pem\"",
        );
        assert!(
            e.contains("audit.forward.client_cert") && e.contains("private key"),
            "{e}"
        );
    }
}
