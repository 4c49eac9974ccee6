//! Where a usbredir stream goes: the broker (HTTP/1.1 upgrade to
//! `airlock-usbredir/1`, over TLS for `https`) or, for tests, a Unix socket
//! straight to QEMU's usb-redir chardev.
//!
//! Broker protocol: `GET {base}/v1/leases/{lease}/usb` with
//! `Authorization: Bearer <token>`, `Connection: Upgrade`,
//! `Upgrade: airlock-usbredir/1` and `X-Airlock-Device: <JSON>`; success is
//! `101 Switching Protocols`, then raw usbredir both ways. Errors are JSON
//! `{"error": "...", "message": "..."}` with 401/404/409/503.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Empty, Limited};
use hyper::body::Bytes;
use hyper::header::{HeaderValue, AUTHORIZATION, CONNECTION, HOST, UPGRADE};
use hyper::{Request, StatusCode, Uri};
use hyper_util::rt::TokioIo;
use tokio::net::{TcpStream, UnixStream};

use crate::BoxedStream;

pub use airlock_core::wire::{DeviceIdentity, DeviceKind, USB_PROTOCOL};
use airlock_core::wire::{DEVICE_HEADER, SENT_DEVICE_FIELD_CHARS};

/// Time allowed for connecting, the TLS handshake and the broker's answer.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(20);

/// Largest error body read from the broker.
const MAX_ERROR_BODY: usize = 64 * 1024;

/// Errors of connecting a usbredir stream.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TransportError {
    /// A target, URL, lease id or token is malformed.
    #[error("{0}")]
    Invalid(String),
    /// TCP or Unix socket connection failed.
    #[error("cannot connect to {target}: {cause}")]
    Connect {
        /// What we tried to reach.
        target: String,
        /// Why it failed.
        cause: std::io::Error,
    },
    /// The broker did not answer in time.
    #[error("no answer from {0} within {1:?}")]
    Timeout(String, Duration),
    /// TLS setup or handshake failed.
    #[error("TLS with {target} failed: {message}")]
    Tls {
        /// The broker.
        target: String,
        /// Why.
        message: String,
    },
    /// The HTTP exchange failed.
    #[error("HTTP exchange with the broker failed: {0}")]
    Http(String),
    /// The broker refused the stream.
    #[error("the broker refused the USB stream ({status}{}): {message}", if code.is_empty() { String::new() } else { format!(", {code}") })]
    Refused {
        /// HTTP status.
        status: u16,
        /// The broker's error code (`error` field), if any.
        code: String,
        /// The broker's message (`message` field), or a description.
        message: String,
    },
}

impl TransportError {
    /// What the user should do about this error, in one sentence.
    pub fn advice(&self) -> &'static str {
        match self {
            TransportError::Invalid(_) => "Check the command-line arguments.",
            TransportError::Connect { target, .. } if target.starts_with("unix:") => {
                "Check the socket path and that QEMU (or the relay) is listening on it."
            }
            TransportError::Connect { .. } | TransportError::Timeout(..) => {
                "Check that the broker is running and reachable from this terminal."
            }
            TransportError::Tls { .. } => {
                "Check the broker URL and its certificate (use --ca-file for a private CA)."
            }
            TransportError::Http(_) => "Check that the URL points at the Airlock broker.",
            TransportError::Refused { status: 401, .. } => {
                "The terminal token was not accepted: check --token-file or AIRLOCK_TOKEN."
            }
            TransportError::Refused { status: 404, .. } => {
                "The lease does not exist or has ended: open a new desktop session."
            }
            TransportError::Refused { status: 409, .. } => {
                "A USB stream is already open for this lease: close the other one first."
            }
            TransportError::Refused { status: 503, .. } => {
                "The desktop is not ready for USB yet: wait a moment and try again."
            }
            TransportError::Refused { .. } => "See the broker's message above.",
        }
    }
}

/// The `X-Airlock-Device` header value for `device`: its JSON after
/// [`DeviceIdentity::sanitized`], with every non-ASCII character escaped as `\uXXXX`,
/// so it is plain visible ASCII.
pub fn device_header(device: &DeviceIdentity) -> String {
    let json = serde_json::to_string(&device.clone().sanitized()).unwrap_or_default();
    ascii_json(&json)
}

fn clean_field(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .take(SENT_DEVICE_FIELD_CHARS)
        .collect()
}

/// Escapes every non-ASCII character of serialized JSON as `\uXXXX`
/// (surrogate pairs above the BMP). Valid because non-ASCII characters can
/// only occur inside JSON strings.
fn ascii_json(json: &str) -> String {
    let mut out = String::with_capacity(json.len());
    for c in json.chars() {
        if c.is_ascii() {
            out.push(c);
        } else {
            let mut units = [0u16; 2];
            for u in c.encode_utf16(&mut units) {
                out.push_str(&format!("\\u{u:04x}"));
            }
        }
    }
    out
}

/// A broker base URL (`http://host:port[/prefix]` or `https://...`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerUrl {
    tls: bool,
    host: String,
    port: u16,
    prefix: String,
}

impl BrokerUrl {
    /// True for `https`.
    pub fn is_tls(&self) -> bool {
        self.tls
    }

    /// Host name or address (IPv6 without brackets).
    pub fn host(&self) -> &str {
        &self.host
    }

    /// Port (default 80 / 443).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The request path of the USB stream of `lease`.
    pub fn usb_path(&self, lease: &LeaseRef) -> String {
        format!("{}/v1/leases/{}/usb", self.prefix, lease.0)
    }

    fn authority(&self) -> String {
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        let default = if self.tls { 443 } else { 80 };
        if self.port == default {
            host
        } else {
            format!("{host}:{}", self.port)
        }
    }
}

impl fmt::Display for BrokerUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = if self.tls { "https" } else { "http" };
        write!(f, "{scheme}://{}{}", self.authority(), self.prefix)
    }
}

impl FromStr for BrokerUrl {
    type Err = TransportError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = |why: &str| TransportError::Invalid(format!("broker URL {s:?}: {why}"));
        let uri: Uri = s.parse().map_err(|e| bad(&format!("not a URL ({e})")))?;
        let tls = match uri.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            Some(other) => return Err(bad(&format!("scheme {other:?} is not http or https"))),
            None => return Err(bad("missing http:// or https://")),
        };
        let authority = uri.authority().ok_or_else(|| bad("missing host"))?;
        if authority.as_str().contains('@') {
            return Err(bad(
                "user info is not allowed; pass the token with --token-file",
            ));
        }
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']');
        if host.is_empty() {
            return Err(bad("missing host"));
        }
        let port = authority.port_u16().unwrap_or(if tls { 443 } else { 80 });
        if port == 0 {
            return Err(bad("port 0"));
        }
        if uri.query().is_some() {
            return Err(bad("a query string is not allowed"));
        }
        let prefix = uri.path().trim_end_matches('/').to_owned();
        Ok(BrokerUrl {
            tls,
            host: host.to_owned(),
            port,
            prefix,
        })
    }
}

/// A validated lease id as it goes into the URL path (32 lower-case hex
/// digits, as the broker issues them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseRef(String);

impl LeaseRef {
    /// Validates a lease id.
    pub fn parse(s: &str) -> Result<Self, TransportError> {
        if s.len() == 32 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            Ok(LeaseRef(s.to_owned()))
        } else {
            Err(TransportError::Invalid(format!(
                "lease id {s:?} is not 32 lower-case hex digits"
            )))
        }
    }

    /// The id.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A terminal bearer token (kept out of `Debug` output).
#[derive(Clone, PartialEq, Eq)]
pub struct Token(String);

impl Token {
    /// Validates a token: 1 to 4096 visible ASCII characters (surrounding
    /// whitespace, e.g. a file's final newline, is trimmed).
    pub fn parse(s: &str) -> Result<Self, TransportError> {
        let t = s.trim();
        if t.is_empty() {
            return Err(TransportError::Invalid(
                "the terminal token is empty".into(),
            ));
        }
        if t.len() > 4096 || !t.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(TransportError::Invalid(
                "the terminal token must be at most 4096 visible ASCII characters".into(),
            ));
        }
        Ok(Token(t.to_owned()))
    }

    /// The secret itself, for an `Authorization` header.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

/// How to trust the broker's TLS certificate.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum TrustRoots {
    /// The Mozilla root set (webpki-roots).
    #[default]
    WebPki,
    /// Only the CA certificates in this PEM file.
    CaFile(PathBuf),
}

/// Everything needed to open the USB stream of one lease at the broker.
#[derive(Debug, Clone)]
pub struct BrokerTarget {
    /// Broker base URL.
    pub url: BrokerUrl,
    /// The lease.
    pub lease: LeaseRef,
    /// The terminal's token.
    pub token: Token,
    /// TLS trust for `https`.
    pub trust: TrustRoots,
}

/// Where to send the usbredir stream.
#[derive(Debug, Clone)]
pub enum Target {
    /// Through the broker.
    Broker(BrokerTarget),
    /// Straight to a Unix socket (QEMU's usb-redir chardev), for tests.
    Unix(PathBuf),
}

impl Target {
    /// Parses `unix:/path` (the only direct form).
    pub fn parse_direct(s: &str) -> Result<Target, TransportError> {
        match s.strip_prefix("unix:") {
            Some(p) if !p.is_empty() => Ok(Target::Unix(PathBuf::from(p))),
            _ => Err(TransportError::Invalid(format!(
                "--to {s:?}: expected unix:/path/to/socket"
            ))),
        }
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Broker(b) => write!(f, "{} (lease {})", b.url, b.lease.as_str()),
            Target::Unix(p) => write!(f, "unix:{}", p.display()),
        }
    }
}

/// Opens the usbredir stream to `target`, announcing `device` to the broker.
pub async fn connect(
    target: &Target,
    device: &DeviceIdentity,
) -> Result<BoxedStream, TransportError> {
    match target {
        Target::Unix(path) => connect_unix(path).await,
        Target::Broker(b) => connect_broker(b, device).await,
    }
}

/// Connects to a Unix socket.
pub async fn connect_unix(path: &Path) -> Result<BoxedStream, TransportError> {
    let s = UnixStream::connect(path)
        .await
        .map_err(|cause| TransportError::Connect {
            target: format!("unix:{}", path.display()),
            cause,
        })?;
    Ok(Box::new(s))
}

/// Opens the lease's USB stream at the broker (HTTP/1.1 upgrade).
pub async fn connect_broker(
    target: &BrokerTarget,
    device: &DeviceIdentity,
) -> Result<BoxedStream, TransportError> {
    let what = target.url.to_string();
    tokio::time::timeout(CONNECT_TIMEOUT, connect_broker_inner(target, device))
        .await
        .map_err(|_| TransportError::Timeout(what, CONNECT_TIMEOUT))?
}

async fn connect_broker_inner(
    target: &BrokerTarget,
    device: &DeviceIdentity,
) -> Result<BoxedStream, TransportError> {
    let url = &target.url;
    let tcp = TcpStream::connect((url.host(), url.port()))
        .await
        .map_err(|cause| TransportError::Connect {
            target: url.to_string(),
            cause,
        })?;
    let _ = tcp.set_nodelay(true);
    let io: BoxedStream = if url.is_tls() {
        Box::new(tls_connect(tcp, url, &target.trust).await?)
    } else {
        Box::new(tcp)
    };

    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .map_err(|e| TransportError::Http(e.to_string()))?;
    tokio::spawn(async move {
        if let Err(e) = conn.with_upgrades().await {
            tracing::debug!(error = %e, "broker connection ended");
        }
    });

    let header = |v: String| {
        HeaderValue::from_str(&v)
            .map_err(|_| TransportError::Invalid(format!("invalid header value {v:?}")))
    };
    let req = Request::get(url.usb_path(&target.lease))
        .header(HOST, header(url.authority())?)
        .header(AUTHORIZATION, header(format!("Bearer {}", target.token.0))?)
        .header(CONNECTION, "Upgrade")
        .header(UPGRADE, USB_PROTOCOL)
        .header(DEVICE_HEADER, header(device_header(device))?)
        .body(Empty::<Bytes>::new())
        .map_err(|e| TransportError::Http(e.to_string()))?;
    let resp = sender
        .send_request(req)
        .await
        .map_err(|e| TransportError::Http(e.to_string()))?;

    let status = resp.status();
    if status == StatusCode::SWITCHING_PROTOCOLS {
        let proto_ok = resp
            .headers()
            .get(UPGRADE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.trim().eq_ignore_ascii_case(USB_PROTOCOL));
        if !proto_ok {
            return Err(TransportError::Http(format!(
                "the broker switched to another protocol than {USB_PROTOCOL}"
            )));
        }
        let upgraded = hyper::upgrade::on(resp)
            .await
            .map_err(|e| TransportError::Http(format!("upgrade failed: {e}")))?;
        return Ok(Box::new(TokioIo::new(upgraded)));
    }

    let body = Limited::new(resp.into_body(), MAX_ERROR_BODY)
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    Err(refusal(status, &body))
}

/// Builds the error for a non-101 answer from its status and body.
pub fn refusal(status: StatusCode, body: &[u8]) -> TransportError {
    let parsed: Option<serde_json::Value> = serde_json::from_slice(body).ok();
    let field = |k: &str| {
        parsed
            .as_ref()
            .and_then(|v| v.get(k))
            .and_then(|v| v.as_str())
            .map(|s| clean_field(s.get(..s.len().min(512)).unwrap_or(s)))
    };
    let code = field("error").unwrap_or_default();
    let message = field("message").unwrap_or_else(|| {
        format!(
            "HTTP {} {}",
            status.as_u16(),
            status.canonical_reason().unwrap_or("")
        )
        .trim_end()
        .to_owned()
    });
    TransportError::Refused {
        status: status.as_u16(),
        code,
        message,
    }
}

async fn tls_connect(
    tcp: TcpStream,
    url: &BrokerUrl,
    trust: &TrustRoots,
) -> Result<tokio_rustls::client::TlsStream<TcpStream>, TransportError> {
    let tls_err = |message: String| TransportError::Tls {
        target: url.to_string(),
        message,
    };
    let config = client_config(trust).map_err(tls_err)?;
    let name = rustls::pki_types::ServerName::try_from(url.host().to_owned())
        .map_err(|e| tls_err(format!("invalid server name {:?}: {e}", url.host())))?;
    tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .map_err(|e| tls_err(e.to_string()))
}

/// The rustls client configuration (ring provider) for `trust`.
pub fn client_config(trust: &TrustRoots) -> Result<rustls::ClientConfig, String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::CertificateDer;

    let mut roots = rustls::RootCertStore::empty();
    match trust {
        TrustRoots::WebPki => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
        TrustRoots::CaFile(path) => {
            let certs = CertificateDer::pem_file_iter(path)
                .map_err(|e| format!("cannot read CA file {}: {e}", path.display()))?;
            let mut n = 0;
            for cert in certs {
                let cert =
                    cert.map_err(|e| format!("bad certificate in {}: {e}", path.display()))?;
                roots
                    .add(cert)
                    .map_err(|e| format!("unusable CA certificate in {}: {e}", path.display()))?;
                n += 1;
            }
            if n == 0 {
                return Err(format!("no certificate found in {}", path.display()));
            }
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broker_urls() {
        let u: BrokerUrl = "https://broker.example:8443/airlock/".parse().unwrap();
        assert!(u.is_tls());
        assert_eq!((u.host(), u.port()), ("broker.example", 8443));
        let lease = LeaseRef::parse(&"ab".repeat(16)).unwrap();
        assert_eq!(
            u.usb_path(&lease),
            format!("/airlock/v1/leases/{}/usb", "ab".repeat(16))
        );
        assert_eq!(u.to_string(), "https://broker.example:8443/airlock");

        let u: BrokerUrl = "http://127.0.0.1:7070".parse().unwrap();
        assert!(!u.is_tls());
        assert_eq!(u.authority(), "127.0.0.1:7070");
        assert_eq!(
            u.usb_path(&lease),
            format!("/v1/leases/{}/usb", "ab".repeat(16))
        );

        let u: BrokerUrl = "https://[::1]/".parse().unwrap();
        assert_eq!((u.host(), u.port()), ("::1", 443));
        assert_eq!(u.authority(), "[::1]");

        for bad in [
            "",
            "broker:80",
            "ftp://x/",
            "http://",
            "http://user:pw@host/",
            "http://h/?a=b",
            "http://h:0/",
            "not a url",
        ] {
            assert!(bad.parse::<BrokerUrl>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn lease_and_token_validation() {
        assert!(LeaseRef::parse(&"0".repeat(32)).is_ok());
        for bad in [
            "",
            "ABCD",
            &"g".repeat(32),
            &"a".repeat(31),
            "../../etc/passwd",
        ] {
            assert!(LeaseRef::parse(bad).is_err(), "{bad:?}");
        }
        assert_eq!(Token::parse("  abc\n").unwrap().0, "abc");
        assert!(Token::parse("\n").is_err());
        assert!(Token::parse("a b").is_err());
        assert!(Token::parse("tok\u{e9}").is_err());
        assert_eq!(
            format!("{:?}", Token::parse("secret").unwrap()),
            "Token(<redacted>)"
        );
    }

    #[test]
    fn direct_targets() {
        assert!(
            matches!(Target::parse_direct("unix:/tmp/x.sock"), Ok(Target::Unix(p)) if p == Path::new("/tmp/x.sock"))
        );
        assert!(Target::parse_direct("unix:").is_err());
        assert!(Target::parse_direct("tcp:1.2.3.4:5").is_err());
    }

    #[test]
    fn device_header_is_ascii_json_the_broker_accepts() {
        let d = DeviceIdentity {
            vid: Some(0x0e8d),
            pid: Some(0x1887),
            vendor: Some("Hitachi\u{3000}LG \"Data\"".into()),
            product: Some("DVD\nRW".into()),
            serial: Some("x".repeat(300)),
            ..DeviceIdentity::new(DeviceKind::Drive)
        };
        let h = device_header(&d);
        assert!(h.bytes().all(|b| b.is_ascii_graphic() || b == b' '), "{h}");
        assert!(HeaderValue::from_str(&h).is_ok());
        let v: serde_json::Value = serde_json::from_str(&h).unwrap();
        assert_eq!(v["kind"], "drive");
        assert_eq!(v["vid"], "0e8d");
        assert_eq!(v["pid"], "1887");
        assert_eq!(v["vendor"], "Hitachi\u{3000}LG \"Data\"");
        assert_eq!(v["product"], "DVD?RW");
        assert_eq!(v["serial"].as_str().unwrap().len(), SENT_DEVICE_FIELD_CHARS);
        assert!(v.get("image").is_none());
        assert!(h.len() <= 2048);

        let img = DeviceIdentity {
            image: Some("disc \u{1F4BF}.iso".into()),
            ..DeviceIdentity::new(DeviceKind::Image)
        };
        let v: serde_json::Value = serde_json::from_str(&device_header(&img)).unwrap();
        assert_eq!(v["image"], "disc \u{1F4BF}.iso");
        assert_eq!(v.as_object().unwrap().len(), 2);
    }

    #[test]
    fn refusals_carry_the_broker_message() {
        let e = refusal(
            StatusCode::CONFLICT,
            br#"{"error":"usb_busy","message":"a USB stream is already open for this lease"}"#,
        );
        assert!(
            matches!(&e, TransportError::Refused { status: 409, code, message }
            if code == "usb_busy" && message.contains("already open"))
        );
        assert!(e.to_string().contains("already open"));
        assert!(e.advice().contains("already open"));
        let e = refusal(StatusCode::SERVICE_UNAVAILABLE, b"<html>oops</html>");
        assert!(
            matches!(&e, TransportError::Refused { status: 503, message, .. } if message == "HTTP 503 Service Unavailable")
        );
        let e = refusal(
            StatusCode::UNAUTHORIZED,
            br#"{"error":"unauthorized","message":"bad\ntoken"}"#,
        );
        assert!(matches!(&e, TransportError::Refused { message, .. } if message == "bad?token"));
    }

    #[test]
    fn tls_config_from_roots_and_ca_files() {
        assert!(client_config(&TrustRoots::WebPki).is_ok());
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "").unwrap();
        let e = client_config(&TrustRoots::CaFile(empty)).unwrap_err();
        assert!(e.contains("no certificate"), "{e}");
        let e = client_config(&TrustRoots::CaFile(dir.path().join("missing.pem"))).unwrap_err();
        assert!(e.contains("cannot read"), "{e}");
    }
}
