//! The terminal's client of the broker's lease API (`docs/api.md`), typed by the wire
//! contract (`airlock_core::wire`). Every answer is checked: a status or body the
//! contract does not allow is an error, never a guess.
use std::time::Duration;

use airlock_core::wire::{
    AlertReport, CaptureInfo, CaptureRequest, ErrorBody, ErrorCode, HeartbeatReply, LeaseGrant,
    LeaseRequest, PatientRequest, QueueStanding, SendReply, UsbRefusedReport,
};
use airlock_core::{LeaseId, TicketId, UserName};
use airlock_usb::transport::{client_config, BrokerUrl, Token, TrustRoots};
use reqwest::{Method, StatusCode};

/// The longest body read from the broker (but a capture's PNG).
const MAX_BODY: usize = 256 * 1024;

/// The longest capture PNG read (a 4096 × 4096 screen, uncompressed, and more).
const MAX_PNG: usize = 64 << 20;

/// Why a call to the broker failed.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("cannot set up TLS for {url}: {message}")]
    TlsSetup { url: String, message: String },
    #[error("the broker at {url} does not present a certificate this terminal trusts")]
    Untrusted {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("cannot reach the broker at {url}")]
    Unreachable {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("the broker refused ({status}, {code}): {message}")]
    Refused {
        status: u16,
        code: ErrorCode,
        message: String,
        retry_after_s: Option<u64>,
    },
    #[error("the broker's answer to {what} does not follow the API ({status}): {problem}")]
    Protocol {
        what: &'static str,
        status: u16,
        problem: String,
    },
}

impl ApiError {
    /// What the person at the terminal (or the admin) should do, in one sentence.
    pub fn advice(&self) -> &'static str {
        match self {
            ApiError::TlsSetup { .. } => "Check broker.ca_file: it must hold the site CA in PEM form.",
            ApiError::Untrusted { .. } => {
                "Set broker.ca_file to the site CA that signed the broker's certificate, and check broker.url names the broker's host."
            }
            ApiError::Unreachable { .. } => {
                "Check that the broker is running and broker.url is right; ask IT if the network is down."
            }
            ApiError::Refused { status: 401, .. } => {
                "The terminal token was not accepted: check broker.token_file."
            }
            ApiError::Refused {
                code: ErrorCode::LeaseLimit,
                ..
            } => {
                "This terminal already has a desktop open for another user: end that session first (close its viewer), or wait until the broker ends it when its heartbeats stop."
            }
            ApiError::Refused {
                code: ErrorCode::RateLimited,
                ..
            } => {
                "The broker is limiting requests from this terminal: wait the time it names and try again; if it keeps happening, tell IT (a wrong token in use here or nearby?)."
            }
            ApiError::Refused {
                code: ErrorCode::NoPatient,
                ..
            } => {
                "Open the disc from the HIS with the patient selected (airlock open --patient-id), then capture again."
            }
            ApiError::Refused {
                code: ErrorCode::ExportNotConfigured,
                ..
            } => "Sending to the PACS is not set up on this broker: ask IT ([export.pacs]).",
            ApiError::Refused {
                code: ErrorCode::WorklistFailed | ErrorCode::PacsFailed,
                ..
            } => {
                "Nothing was stored in the PACS. Check the patient in the HIS, or ask IT whether the PACS and worklist are reachable; the capture is kept and can be sent again."
            }
            ApiError::Refused { .. } | ApiError::Protocol { .. } => {
                "See the broker's message; the broker's log has the details."
            }
        }
    }
}

/// The answer to a lease request.
#[derive(Debug)]
pub enum LeaseAnswer {
    Granted(Box<LeaseGrant>),
    Waiting(QueueStanding),
    /// No free desktop and the request did not wait.
    NoFreeDesktop {
        retry_after_s: Option<u64>,
        message: String,
    },
}

/// What became of a lease at a heartbeat.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaseState {
    /// Extended: it ends at `expires_at` (Unix ms) unless another heartbeat comes.
    Alive {
        expires_at: airlock_core::UnixMillis,
    },
    /// The broker ended it (signed out, display lost, expired, revoked).
    Ended,
}

/// A terminal's client of one broker.
#[derive(Clone)]
pub struct BrokerApi {
    http: reqwest::Client,
    base: String,
    token: Token,
}

impl BrokerApi {
    /// A client for `url` trusting `trust`; each call gives up after `timeout`.
    pub fn new(
        url: &BrokerUrl,
        token: &Token,
        trust: &TrustRoots,
        timeout: Duration,
    ) -> Result<BrokerApi, ApiError> {
        let base = url.to_string();
        let mut b = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(10)))
            .tcp_nodelay(true)
            .http1_only();
        if url.is_tls() {
            let tls = client_config(trust).map_err(|message| ApiError::TlsSetup {
                url: base.clone(),
                message,
            })?;
            b = b.use_preconfigured_tls(tls);
        }
        let http = b.build().map_err(|e| ApiError::TlsSetup {
            url: base.clone(),
            message: e.to_string(),
        })?;
        Ok(BrokerApi {
            http,
            base,
            token: token.clone(),
        })
    }

    /// The broker's base URL.
    pub fn base(&self) -> &str {
        &self.base
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<serde_json::Value>,
        timeout: Option<Duration>,
    ) -> Result<(StatusCode, Vec<u8>), ApiError> {
        self.call_up_to(method, path, body, timeout, MAX_BODY).await
    }

    async fn call_up_to(
        &self,
        method: Method,
        path: &str,
        body: Option<serde_json::Value>,
        timeout: Option<Duration>,
        max: usize,
    ) -> Result<(StatusCode, Vec<u8>), ApiError> {
        let mut r = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(self.token.as_str());
        if let Some(body) = body {
            r = r.json(&body);
        }
        if let Some(t) = timeout {
            r = r.timeout(t);
        }
        let resp = r.send().await.map_err(|e| self.transport_error(e))?;
        let status = resp.status();
        let bytes = resp.bytes().await.map_err(|e| self.transport_error(e))?;
        if bytes.len() > max {
            return Err(ApiError::Protocol {
                what: "an answer",
                status: status.as_u16(),
                problem: format!("{} bytes, more than the {max} accepted", bytes.len()),
            });
        }
        Ok((status, bytes.to_vec()))
    }

    fn transport_error(&self, e: reqwest::Error) -> ApiError {
        let mut cause: Option<&dyn std::error::Error> = Some(&e);
        let mut tls = false;
        while let Some(c) = cause {
            if c.downcast_ref::<rustls::Error>().is_some() || c.to_string().contains("certificate")
            {
                tls = true;
            }
            cause = c.source();
        }
        let url = self.base.clone();
        if tls {
            ApiError::Untrusted { url, source: e }
        } else {
            ApiError::Unreachable { url, source: e }
        }
    }

    /// Reports a security alert (the broker audits it).
    pub async fn alert(&self, report: &AlertReport) -> Result<(), ApiError> {
        let (status, body) = self
            .call(Method::POST, "/v1/alerts", Some(json(report)), None)
            .await?;
        match status.as_u16() {
            200..=299 => Ok(()),
            _ => Err(refusal(status, &body)),
        }
    }

    /// Reports the control requests the drive forwarder refused during a forward of
    /// `lease` (the broker audits them once per lease).
    pub async fn report_refused(
        &self,
        lease: &LeaseId,
        report: &UsbRefusedReport,
    ) -> Result<(), ApiError> {
        let path = format!("/v1/leases/{lease}/usb/refused");
        let (status, body) = self
            .call(Method::POST, &path, Some(json(report)), None)
            .await?;
        match status.as_u16() {
            200..=299 => Ok(()),
            _ => Err(refusal(status, &body)),
        }
    }

    /// Asks for a desktop for `user`; with `wait`, a full pool answers with a ticket.
    pub async fn request_lease(
        &self,
        user: &UserName,
        wait: bool,
    ) -> Result<LeaseAnswer, ApiError> {
        let req = LeaseRequest {
            user: user.as_str().to_owned(),
            wait,
        };
        let (status, body) = self
            .call(Method::POST, "/v1/leases", Some(json(&req)), None)
            .await?;
        match status.as_u16() {
            200 | 201 => Ok(LeaseAnswer::Granted(Box::new(parse(
                "a lease request",
                status,
                &body,
            )?))),
            202 => Ok(LeaseAnswer::Waiting(parse(
                "a lease request",
                status,
                &body,
            )?)),
            503 => match refusal(status, &body) {
                ApiError::Refused {
                    code: ErrorCode::NoFreeDesktop,
                    message,
                    retry_after_s,
                    ..
                } => Ok(LeaseAnswer::NoFreeDesktop {
                    retry_after_s,
                    message,
                }),
                other => Err(other),
            },
            _ => Err(refusal(status, &body)),
        }
    }

    /// Keeps `ticket` alive, waiting up to `wait_s` for news: the standing, or the grant
    /// of the desktop held for it. `Ok(None)`: the ticket left the line.
    pub async fn poll_ticket(
        &self,
        ticket: &TicketId,
        wait_s: u64,
    ) -> Result<Option<LeaseAnswer>, ApiError> {
        let path = format!("/v1/queue/{ticket}?wait_s={wait_s}");
        let timeout = Duration::from_secs(wait_s + 10);
        let (status, body) = self.call(Method::POST, &path, None, Some(timeout)).await?;
        match status.as_u16() {
            200 => Ok(Some(LeaseAnswer::Waiting(parse(
                "a queue poll",
                status,
                &body,
            )?))),
            201 => Ok(Some(LeaseAnswer::Granted(Box::new(parse(
                "a queue poll",
                status,
                &body,
            )?)))),
            404 => Ok(None),
            _ => Err(refusal(status, &body)),
        }
    }

    /// Leaves the line (best effort: a ticket also expires by itself).
    pub async fn leave_ticket(&self, ticket: &TicketId) -> Result<(), ApiError> {
        self.delete(&format!("/v1/queue/{ticket}")).await
    }

    /// One heartbeat of `lease`.
    pub async fn heartbeat(&self, lease: &LeaseId) -> Result<LeaseState, ApiError> {
        let path = format!("/v1/leases/{lease}/heartbeat");
        let (status, body) = self.call(Method::POST, &path, None, None).await?;
        match status.as_u16() {
            200 => {
                let reply: HeartbeatReply = parse("a heartbeat", status, &body)?;
                Ok(LeaseState::Alive {
                    expires_at: reply.expires_at,
                })
            }
            404 => Ok(LeaseState::Ended),
            _ => Err(refusal(status, &body)),
        }
    }

    /// Ends `lease` (its desktop is reset). An already ended lease is not an error.
    pub async fn release(&self, lease: &LeaseId) -> Result<(), ApiError> {
        self.delete(&format!("/v1/leases/{lease}")).await
    }

    /// Gives the lease the patient its captures belong to (from the HIS).
    pub async fn set_patient(&self, lease: &LeaseId, p: &PatientRequest) -> Result<(), ApiError> {
        let path = format!("/v1/leases/{lease}/patient");
        let (status, body) = self.call(Method::PUT, &path, Some(json(p)), None).await?;
        match status.as_u16() {
            200..=299 => Ok(()),
            _ => Err(refusal(status, &body)),
        }
    }

    /// Takes the leased desktop's screen (the broker keeps it under the lease).
    pub async fn take_capture(
        &self,
        lease: &LeaseId,
        req: &CaptureRequest,
    ) -> Result<CaptureInfo, ApiError> {
        let path = format!("/v1/leases/{lease}/captures");
        let (status, body) = self
            .call(
                Method::POST,
                &path,
                Some(json(req)),
                Some(Duration::from_secs(30)),
            )
            .await?;
        match status.as_u16() {
            201 => parse("a capture", status, &body),
            _ => Err(refusal(status, &body)),
        }
    }

    /// A capture's PNG, checked against the sha256 the broker gave.
    pub async fn capture_png(
        &self,
        lease: &LeaseId,
        info: &CaptureInfo,
    ) -> Result<Vec<u8>, ApiError> {
        let path = format!("/v1/leases/{lease}/captures/{}", info.capture);
        let (status, body) = self
            .call_up_to(
                Method::GET,
                &path,
                None,
                Some(Duration::from_secs(60)),
                MAX_PNG,
            )
            .await?;
        match status.as_u16() {
            200 => {
                let got = sha256_hex(&body);
                if got != info.sha256 {
                    return Err(ApiError::Protocol {
                        what: "a capture's PNG",
                        status: 200,
                        problem: format!("its sha256 is {got}, the broker said {}", info.sha256),
                    });
                }
                Ok(body)
            }
            _ => Err(refusal(status, &body)),
        }
    }

    /// Sends capture `n` to the PACS (the broker makes the DICOM object).
    pub async fn send_capture(&self, lease: &LeaseId, n: u32) -> Result<SendReply, ApiError> {
        let path = format!("/v1/leases/{lease}/captures/{n}/send");
        let (status, body) = self
            .call(Method::POST, &path, None, Some(Duration::from_secs(120)))
            .await?;
        match status.as_u16() {
            200 => parse("a send", status, &body),
            _ => Err(refusal(status, &body)),
        }
    }

    /// DELETE `path`; something already gone (404) is not an error.
    async fn delete(&self, path: &str) -> Result<(), ApiError> {
        let (status, body) = self.call(Method::DELETE, path, None, None).await?;
        match status.as_u16() {
            200..=299 | 404 => Ok(()),
            _ => Err(refusal(status, &body)),
        }
    }
}

fn sha256_hex(b: &[u8]) -> String {
    use sha2::Digest as _;
    sha2::Sha256::digest(b)
        .iter()
        .map(|x| format!("{x:02x}"))
        .collect()
}

/// A request body as JSON (the wire types always serialize).
fn json(body: &impl serde::Serialize) -> serde_json::Value {
    serde_json::to_value(body).unwrap_or_default()
}

fn parse<T: serde::de::DeserializeOwned>(
    what: &'static str,
    status: StatusCode,
    body: &[u8],
) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| ApiError::Protocol {
        what,
        status: status.as_u16(),
        problem: e.to_string(),
    })
}

/// The error of a refusal, from its JSON body (or the status alone).
fn refusal(status: StatusCode, body: &[u8]) -> ApiError {
    match serde_json::from_slice::<ErrorBody>(body) {
        Ok(b) => ApiError::Refused {
            status: status.as_u16(),
            code: b.error,
            message: b.message.chars().take(500).collect(),
            retry_after_s: b.retry_after_s,
        },
        Err(_) => ApiError::Refused {
            status: status.as_u16(),
            code: ErrorCode::Unknown,
            message: format!(
                "HTTP {} {}",
                status.as_u16(),
                status.canonical_reason().unwrap_or("")
            )
            .trim_end()
            .to_owned(),
            retry_after_s: None,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_keep_the_brokers_code_and_message() {
        let e = refusal(
            StatusCode::SERVICE_UNAVAILABLE,
            br#"{"error":"no_free_desktop","message":"every desktop is in use","retry_after_s":4}"#,
        );
        assert!(matches!(
            &e,
            ApiError::Refused { status: 503, code: ErrorCode::NoFreeDesktop, retry_after_s: Some(4), message }
                if message == "every desktop is in use"
        ));
        let e = refusal(StatusCode::BAD_GATEWAY, b"<html>proxy</html>");
        assert!(e.to_string().contains("502 Bad Gateway"), "{e}");
        assert!(!e.advice().is_empty());
    }

    #[test]
    fn answers_that_break_the_contract_are_errors() {
        let e = parse::<LeaseGrant>("a lease request", StatusCode::CREATED, b"{\"lease_id\":1}")
            .unwrap_err();
        assert!(
            e.to_string().contains("does not follow the API (201)"),
            "{e}"
        );
    }
}
