//! The broker's HTTP API as tests use it: the terminal side typed by the wire contract
//! (`airlock_core::wire`), the admin side as JSON values.
use super::{Broker, TERMINAL_TOKEN};
use airlock_core::wire::{LeaseGrant, LeaseRequest, QueuePoll, QueueStanding};
use airlock_core::TicketId;
use anyhow::{bail, ensure, Context, Result};
use reqwest::{Method, StatusCode};
use serde_json::Value;
use std::fmt::Display;
use std::time::{Duration, Instant};

/// What a terminal got from `POST /v1/leases` or `POST /v1/queue/{ticket}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeaseAnswer {
    /// `201`: a new lease.
    Granted(LeaseGrant),
    /// `200` with `reattached`: the terminal's live lease of the same user.
    Reattached(LeaseGrant),
    /// `202` (a request) or `200` (a poll): a place in line.
    Queued(QueueStanding),
}

impl LeaseAnswer {
    /// The place in line, or an error naming what came instead.
    pub fn queued(self) -> Result<QueueStanding> {
        match self {
            LeaseAnswer::Queued(s) => Ok(s),
            other => bail!("expected a place in line, got {other:?}"),
        }
    }

    /// The new lease, or an error naming what came instead.
    pub fn granted(self) -> Result<LeaseGrant> {
        match self {
            LeaseAnswer::Granted(g) => Ok(g),
            other => bail!("expected a new lease, got {other:?}"),
        }
    }
}

impl Broker {
    /// `METHOD path` (no body) with `token` as the bearer token, if any: the raw
    /// response, for tests of statuses and error bodies.
    pub async fn request(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
    ) -> Result<reqwest::Response> {
        self.request_json(method, path, token, None).await
    }

    /// [`Broker::request`] with a JSON body, if any.
    pub async fn request_json(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
    ) -> Result<reqwest::Response> {
        let mut r = self
            .http
            .request(method.clone(), format!("{}{path}", self.url));
        if let Some(token) = token {
            r = r.bearer_auth(token);
        }
        if let Some(body) = body {
            r = r.json(body);
        }
        r.send().await.with_context(|| format!("{method} {path}"))
    }

    /// `GET path` with the admin token of the config, as JSON; anything but 200 is an
    /// error.
    pub async fn admin_get(&self, path: &str) -> Result<Value> {
        let r = self
            .request(Method::GET, path, Some(&self.config.admin_token))
            .await?;
        let status = r.status();
        let body = r
            .text()
            .await
            .with_context(|| format!("reading GET {path}"))?;
        ensure!(status == StatusCode::OK, "GET {path}: {status} {body}");
        serde_json::from_str(&body).with_context(|| format!("parsing GET {path}: {body}"))
    }

    /// `GET /v1/desktops`.
    pub async fn desktops(&self) -> Result<Vec<Value>> {
        let v = self.admin_get("/v1/desktops").await?;
        v["desktops"]
            .as_array()
            .cloned()
            .context("no desktops in /v1/desktops")
    }

    /// One desktop of `GET /v1/desktops`.
    pub async fn desktop(&self, id: &str) -> Result<Value> {
        self.desktops()
            .await?
            .into_iter()
            .find(|d| d["id"] == id)
            .with_context(|| format!("no desktop {id}"))
    }

    /// Polls `/v1/desktops` until `done` says so (an `Err` from it ends the wait);
    /// after `timeout` an error with the desktops' states and the broker's log.
    pub async fn wait_desktops(
        &self,
        timeout: Duration,
        what: &str,
        done: impl Fn(&[Value]) -> Result<bool>,
    ) -> Result<Vec<Value>> {
        let start = Instant::now();
        loop {
            let d = self.desktops().await?;
            if done(&d)? {
                return Ok(d);
            }
            if start.elapsed() > timeout {
                let states: Vec<String> = d
                    .iter()
                    .map(|x| format!("{}={}", x["id"], x["state"]))
                    .collect();
                bail!(
                    "no {what} after {timeout:?}: {states:?}; log:\n{}",
                    self.log_tail(60)
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits (up to `timeout`) for `n` clean desktops, then leases one for `user`.
    pub async fn lease_when_clean(
        &self,
        n: usize,
        timeout: Duration,
        user: &str,
    ) -> Result<LeaseGrant> {
        self.wait_clean(n, timeout).await?;
        self.acquire_ok(user).await
    }

    /// Waits until at least `n` desktops are clean.
    pub async fn wait_clean(&self, n: usize, timeout: Duration) -> Result<Vec<Value>> {
        self.wait_desktops(timeout, &format!("{n} clean desktops"), |d| {
            Ok(d.iter().filter(|x| x["state"] == "clean").count() >= n)
        })
        .await
    }

    /// Waits until every desktop is clean; a broken one is an error at once.
    pub async fn wait_all_clean(&self, timeout: Duration) -> Result<Vec<Value>> {
        self.wait_desktops(timeout, "all desktops clean", |d| {
            if let Some(b) = d.iter().find(|d| d["state"] == "broken") {
                bail!(
                    "desktop {} is broken: {}; log:\n{}",
                    b["id"],
                    b["reason"],
                    self.log_tail(30)
                );
            }
            Ok(d.iter().all(|d| d["state"] == "clean"))
        })
        .await
    }

    /// Waits until desktop `id` satisfies `pred`.
    pub async fn wait_desktop(
        &self,
        id: &str,
        timeout: Duration,
        pred: impl Fn(&Value) -> bool,
    ) -> Result<Value> {
        let d = self
            .wait_desktops(timeout, &format!("desktop {id} as expected"), |d| {
                Ok(d.iter().any(|x| x["id"] == id && pred(x)))
            })
            .await?;
        d.into_iter()
            .find(|x| x["id"] == id)
            .with_context(|| format!("no desktop {id}"))
    }

    /// `POST /v1/alerts` with `body` as the terminal with `token`; the raw response.
    pub async fn alert(&self, token: &str, body: &Value) -> Result<reqwest::Response> {
        self.request_json(Method::POST, "/v1/alerts", Some(token), Some(body))
            .await
    }

    /// `PUT /v1/leases/{lease}/patient` with `body` as the terminal with `token`; the raw
    /// response.
    pub async fn set_patient(
        &self,
        token: &str,
        lease: impl Display,
        body: &Value,
    ) -> Result<reqwest::Response> {
        let path = format!("/v1/leases/{lease}/patient");
        self.request_json(Method::PUT, &path, Some(token), Some(body))
            .await
    }

    /// `POST /v1/leases/{lease}/captures` (optionally cropped) as the terminal with
    /// `token`; the raw response.
    pub async fn take_capture(
        &self,
        token: &str,
        lease: impl Display,
        crop: Option<&str>,
    ) -> Result<reqwest::Response> {
        let body = match crop {
            Some(c) => serde_json::json!({ "crop": c }),
            None => serde_json::json!({}),
        };
        let path = format!("/v1/leases/{lease}/captures");
        self.request_json(Method::POST, &path, Some(token), Some(&body))
            .await
    }

    /// `POST /v1/leases/{lease}/captures/{n}/send` as the terminal with `token`; the raw
    /// response.
    pub async fn send_capture(
        &self,
        token: &str,
        lease: impl Display,
        n: u32,
    ) -> Result<reqwest::Response> {
        let path = format!("/v1/leases/{lease}/captures/{n}/send");
        self.request(Method::POST, &path, Some(token)).await
    }

    /// `POST /v1/leases/{lease}/usb/refused` with `body` as the terminal with `token`;
    /// the raw response.
    pub async fn usb_refused(
        &self,
        token: &str,
        lease: impl Display,
        body: &Value,
    ) -> Result<reqwest::Response> {
        let path = format!("/v1/leases/{lease}/usb/refused");
        self.request_json(Method::POST, &path, Some(token), Some(body))
            .await
    }

    /// The details of the broker's `usb_control_refused` audit records (one per lease),
    /// with their lease, oldest first.
    pub async fn usb_control_refused(&self) -> Result<Vec<(String, Value)>> {
        self.audit()
            .await?
            .iter()
            .filter(|r| r["action"] == "usb_control_refused")
            .map(|r| {
                let details = r["details"].as_str().context("a record without details")?;
                let lease = r["lease"].as_str().unwrap_or_default().to_string();
                Ok((lease, serde_json::from_str(details)?))
            })
            .collect()
    }

    /// `POST /v1/leases` as the terminal with `token`; the raw response.
    pub async fn acquire(&self, token: &str, user: &str) -> Result<reqwest::Response> {
        self.http
            .post(format!("{}/v1/leases", self.url))
            .bearer_auth(token)
            .json(&LeaseRequest {
                user: user.into(),
                wait: false,
            })
            .send()
            .await
            .context("POST /v1/leases")
    }

    /// `POST /v1/leases` with `"wait": true` as the terminal with `token`: a lease or a
    /// place in line; any other answer is an error with its body.
    pub async fn acquire_wait(&self, token: &str, user: &str) -> Result<LeaseAnswer> {
        let r = self
            .http
            .post(format!("{}/v1/leases", self.url))
            .bearer_auth(token)
            .json(&LeaseRequest {
                user: user.into(),
                wait: true,
            })
            .send()
            .await
            .context("POST /v1/leases (wait)")?;
        self.lease_answer(r, StatusCode::ACCEPTED).await
    }

    /// `POST /v1/queue/{ticket}?wait_s=N` as the terminal with `token`, the raw response.
    pub async fn poll_ticket_raw(
        &self,
        token: &str,
        ticket: &str,
        wait_s: u64,
    ) -> Result<reqwest::Response> {
        self.http
            .post(format!("{}/v1/queue/{ticket}", self.url))
            .query(&QueuePoll { wait_s })
            .bearer_auth(token)
            .send()
            .await
            .with_context(|| format!("POST /v1/queue/{ticket}"))
    }

    /// `POST /v1/queue/{ticket}?wait_s=N`: the ticket's place, or the lease of the
    /// desktop held for it; any other answer is an error with its body.
    pub async fn poll_ticket(
        &self,
        token: &str,
        ticket: &TicketId,
        wait_s: u64,
    ) -> Result<LeaseAnswer> {
        let r = self.poll_ticket_raw(token, ticket.as_str(), wait_s).await?;
        self.lease_answer(r, StatusCode::OK).await
    }

    /// `DELETE /v1/queue/{ticket}` as the terminal with `token`.
    pub async fn leave_ticket(&self, token: &str, ticket: &TicketId) -> Result<StatusCode> {
        self.status_of(Method::DELETE, &format!("/v1/queue/{ticket}"), token)
            .await
    }

    /// Reads a lease or a place in line; `queued` is the status of a place in line.
    async fn lease_answer(&self, r: reqwest::Response, queued: StatusCode) -> Result<LeaseAnswer> {
        let status = r.status();
        let body = r.text().await.context("reading the answer")?;
        let parse_grant = || -> Result<LeaseGrant> {
            serde_json::from_str(&body).with_context(|| format!("parsing the lease {body}"))
        };
        match status {
            StatusCode::CREATED => Ok(LeaseAnswer::Granted(parse_grant()?)),
            s if s == queued && !body.contains("\"lease_id\"") => Ok(LeaseAnswer::Queued(
                serde_json::from_str(&body)
                    .with_context(|| format!("parsing the place in line {body}"))?,
            )),
            StatusCode::OK => {
                let g = parse_grant()?;
                ensure!(
                    g.reattached,
                    "200 with a lease that is not re-attached: {body}"
                );
                Ok(LeaseAnswer::Reattached(g))
            }
            s => bail!("{s} {body}; log:\n{}", self.log_tail(30)),
        }
    }

    /// `n` lease requests with wrong tokens, spread evenly over `over`, from the local
    /// address `from` (e.g. `127.0.0.2`: another client than the terminals on
    /// `127.0.0.1`): each answer's status, `Retry-After` (seconds) and error code, in
    /// the order sent.
    pub async fn bad_token_storm(
        &self,
        from: std::net::IpAddr,
        n: u32,
        over: Duration,
    ) -> Result<Vec<(StatusCode, Option<u64>, String)>> {
        let client = reqwest::Client::builder()
            .local_address(from)
            .timeout(Duration::from_secs(30))
            .build()
            .context("building the storm's HTTP client")?;
        let url = format!("{}/v1/leases", self.url);
        let start = tokio::time::Instant::now();
        let requests: Vec<_> = (0..n)
            .map(|i| {
                let (client, url) = (client.clone(), url.clone());
                tokio::spawn(async move {
                    tokio::time::sleep_until(start + over * i / n.max(1)).await;
                    let r = client
                        .post(&url)
                        .bearer_auth(format!("wrong-token-{i}"))
                        .json(&LeaseRequest {
                            user: "mallory".into(),
                            wait: false,
                        })
                        .send()
                        .await
                        .context("a request of the storm")?;
                    let status = r.status();
                    let retry = r
                        .headers()
                        .get(reqwest::header::RETRY_AFTER)
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.parse().ok());
                    let body: Value = r.json().await.unwrap_or_default();
                    let code = body["error"].as_str().unwrap_or_default().to_owned();
                    anyhow::Ok((status, retry, code))
                })
            })
            .collect();
        let mut answers = Vec::with_capacity(requests.len());
        for r in requests {
            answers.push(r.await.context("a request of the storm panicked")??);
        }
        Ok(answers)
    }

    /// A lease for `user` on the first terminal; anything but 201 is an error.
    pub async fn acquire_ok(&self, user: &str) -> Result<LeaseGrant> {
        let r = self.acquire(TERMINAL_TOKEN, user).await?;
        let status = r.status();
        let body = r.text().await.context("reading the lease")?;
        ensure!(
            status == StatusCode::CREATED,
            "acquiring a lease: {status} {body}; log:\n{}",
            self.log_tail(30)
        );
        serde_json::from_str(&body).with_context(|| format!("parsing the lease {body}"))
    }

    /// `POST /v1/leases/{lease}/heartbeat` as the terminal with `token`.
    pub async fn heartbeat(&self, token: &str, lease: impl Display) -> Result<StatusCode> {
        self.status_of(
            Method::POST,
            &format!("/v1/leases/{lease}/heartbeat"),
            token,
        )
        .await
    }

    /// `DELETE /v1/leases/{lease}` as the terminal with `token`.
    pub async fn release(&self, token: &str, lease: impl Display) -> Result<StatusCode> {
        self.status_of(Method::DELETE, &format!("/v1/leases/{lease}"), token)
            .await
    }

    async fn status_of(&self, method: Method, path: &str, token: &str) -> Result<StatusCode> {
        Ok(self.request(method, path, Some(token)).await?.status())
    }

    /// The whole audit trail, oldest first, paged through `/v1/audit` (newest first,
    /// 1000 a page), without the `audit_viewed` records these views write themselves.
    pub async fn audit(&self) -> Result<Vec<Value>> {
        let mut all = Vec::new();
        let mut path = "/v1/audit?limit=1000".to_owned();
        loop {
            let v = self.admin_get(&path).await?;
            let page = v["records"].as_array().context("no records in /v1/audit")?;
            all.extend(
                page.iter()
                    .filter(|r| r["action"] != "audit_viewed")
                    .cloned(),
            );
            match v["next_before"].as_i64() {
                Some(b) => path = format!("/v1/audit?limit=1000&before={b}"),
                None => break,
            }
        }
        all.reverse();
        Ok(all)
    }

    /// The Prometheus text of `/metrics`.
    pub async fn metrics(&self) -> Result<String> {
        let r = self.request(Method::GET, "/metrics", None).await?;
        ensure!(r.status() == StatusCode::OK, "GET /metrics: {}", r.status());
        r.text().await.context("reading /metrics")
    }

    /// `POST /v1/desktops/{desktop}/repair` as the admin: the answer's status.
    pub async fn repair(&self, desktop: &str) -> Result<StatusCode> {
        let path = format!("/v1/desktops/{desktop}/repair");
        let token = Some(self.config.admin_token.as_str());
        let r = self.request(Method::POST, &path, token).await?;
        Ok(r.status())
    }

    /// `GET /healthz`: its status and body.
    pub async fn healthz(&self) -> Result<(StatusCode, Value)> {
        let r = self.request(Method::GET, "/healthz", None).await?;
        let status = r.status();
        Ok((status, r.json().await.context("parsing /healthz")?))
    }
}
