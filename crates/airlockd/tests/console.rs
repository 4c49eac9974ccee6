//! The web console against a real broker with a 2-desktop pool (QEMU, TCG, the demo
//! guest), driven by a real headless chromium: log in, watch a lease appear, end it
//! with a reason, watch the reset, drain a desktop, find the session, see the audit
//! chain verified and then broken by an edit in SQLite; and the console's edge: no
//! session, a forged CSRF token or a tampered cookie change nothing, wrong passwords
//! wait longer each time. Screenshots go to `build/test-output/console/`.
#![allow(clippy::unwrap_used)]

mod common;

use airlock_testkit::browser::{screenshot_dir, Browser};
use common::*;
use std::time::{Duration, Instant};

const UP: Duration = Duration::from_secs(240);
const ACCOUNT: &str = "it-admin";
const PASSWORD: &str = "correct horse battery staple";

fn console_config() -> Result<BrokerConfig> {
    let hash = airlock_console::login::hash_password(PASSWORD).unwrap();
    Ok(BrokerConfig {
        console_accounts: vec![(ACCOUNT.into(), hash)],
        // Resets of template clones take a moment longer, so the console can show one.
        test_clone_pause_ms: Some(2500),
        ..config()?
    })
}

fn block<T>(f: impl FnOnce() -> T) -> T {
    tokio::task::block_in_place(f)
}

#[tokio::test(flavor = "multi_thread")]
async fn an_admin_runs_the_pool_from_the_console_in_a_real_browser() -> Result<()> {
    let b = start(console_config()?)?;
    let all = b.wait_clean(2, UP).await?;
    let ids: Vec<String> = all
        .iter()
        .map(|d| d["id"].as_str().unwrap().to_owned())
        .collect();
    let web = block(|| Browser::launch(&screenshot_dir("console")))?;

    // Log in; both desktops are clean.
    block(|| -> Result<()> {
        web.goto(&format!("{}/console", b.url))?;
        ensure!(
            web.url().ends_with("/console/login"),
            "not sent to the login: {}",
            web.url()
        );
        web.fill("#name", ACCOUNT)?;
        web.fill("#secret", PASSWORD)?;
        web.click_and_wait("form button[type=submit]")?;
        ensure!(
            web.url().ends_with("/console"),
            "login did not land on the pool: {}",
            web.url()
        );
        for id in &ids {
            let s = web.text(&format!("#desktop-{id} .badge"))?;
            ensure!(s.as_deref() == Some("clean"), "{id} shows {s:?}");
        }
        Ok(())
    })?;

    // A lease taken through the API shows up within 2 s with its terminal and user.
    let lease = b.acquire_ok("dr-console").await?;
    let t0 = Instant::now();
    let leased = lease.grant.desktop_id.to_string();
    let other = ids.iter().find(|d| **d != leased).unwrap().clone();
    block(|| -> Result<()> {
        let row = format!("#desktop-{leased}");
        web.wait_text(&row, Duration::from_secs(2), |t| {
            t.contains("leased") && t.contains("term-1") && t.contains("dr-console")
        })?;
        eprintln!("the lease appeared in the console after {:?}", t0.elapsed());
        ensure!(t0.elapsed() <= Duration::from_secs(2));
        web.screenshot("pool-leased")?;
        // End it from the console, with a reason.
        web.fill(&format!("{row} select[name=action]"), "end-lease")?;
        web.fill(
            &format!("{row} input[name=reason]"),
            "patient left; ended by IT",
        )?;
        web.click_and_wait(&format!("{row} button[type=submit]"))?;
        let notice = web.text(".notice")?.unwrap_or_default();
        ensure!(notice.contains("Lease ended"), "after ending: {notice:?}");
        // The desktop goes through resetting back to clean.
        let mut seen = Vec::new();
        let t = Instant::now();
        loop {
            let s = web.text(&format!("{row} .badge"))?.unwrap_or_default();
            if seen.last() != Some(&s) {
                seen.push(s.clone());
            }
            if s == "clean" && seen.iter().any(|x| x == "resetting") {
                break;
            }
            ensure!(
                t.elapsed() < Duration::from_secs(120),
                "states seen: {seen:?}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        eprintln!("states the console showed: {seen:?}");
        Ok(())
    })?;
    // The audit log has the lease's end by the console, with who and why.
    let audit = b.audit().await?;
    let ended = audit
        .iter()
        .find(|r| r["action"] == "lease_ended" && r["lease"] == lease.grant.lease_id.to_string())
        .context("no lease_ended record")?;
    let details: serde_json::Value =
        serde_json::from_str(ended["details"].as_str().unwrap_or("{}"))?;
    ensure!(details["reason"] == "revoked" || ended["details"].to_string().contains("revoked"));
    ensure!(ended["details"]
        .to_string()
        .contains("patient left; ended by IT"));
    ensure!(ended["details"].to_string().contains("console:it-admin"));

    // Take a lease on one desktop, drain the other: acquires are refused.
    let second = b.acquire_ok("dr-second").await?;
    let held = second.grant.desktop_id.to_string();
    let free = ids.iter().find(|d| **d != held).unwrap().clone();
    block(|| -> Result<()> {
        let row = format!("#desktop-{free}");
        web.goto(&format!("{}/console", b.url))?;
        web.fill(&format!("{row} select[name=action]"), "drain")?;
        web.fill(
            &format!("{row} input[name=reason]"),
            "disc drive firmware check",
        )?;
        web.click_and_wait(&format!("{row} button[type=submit]"))?;
        let s = web.text(&format!("{row} .badge"))?;
        ensure!(s.as_deref() == Some("drained"), "{free} shows {s:?}");
        web.screenshot("pool-drained")?;
        Ok(())
    })?;
    let r = b.acquire(TERMINAL2_TOKEN, "dr-third").await?;
    ensure!(
        r.status() == 503,
        "an acquire with one desktop drained and one leased: {}",
        r.status()
    );
    let _ = other;

    // The session is found on the sessions page by its user.
    block(|| -> Result<()> {
        web.goto(&format!("{}/console/sessions?user=dr-console", b.url))?;
        let body = web.text("table.sessions")?.unwrap_or_default();
        ensure!(
            body.contains(&lease.grant.lease_id.to_string()),
            "sessions page: {body}"
        );
        ensure!(
            !body.contains(&second.grant.lease_id.to_string()),
            "another user's session is listed"
        );
        web.screenshot("sessions")?;
        web.goto(&format!(
            "{}/console/sessions/{}",
            b.url, lease.grant.lease_id
        ))?;
        let tl = web.text("table.timeline")?.unwrap_or_default();
        ensure!(
            tl.contains("acquired") && tl.contains("ended"),
            "timeline: {tl}"
        );
        web.screenshot("session-timeline")?;
        web.goto(&format!("{}/console/audit", b.url))?;
        web.wait_text("#chain-status", Duration::from_secs(10), |t| {
            t.contains("INTACT")
        })?;
        web.screenshot("audit")?;
        Ok(())
    })?;

    // An edit of one record in SQLite: the console and `airlockd audit verify` name it.
    let db = b.state.join("airlock.db");
    let out = std::process::Command::new("sqlite3")
        .arg(&db)
        .arg("DROP TRIGGER audit_no_update; UPDATE audit SET details = '{\"edited\":true}' WHERE seq = 3;")
        .output()
        .context("sqlite3 (Debian: sqlite3)")?;
    ensure!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    block(|| -> Result<()> {
        web.goto(&format!("{}/console/audit", b.url))?;
        web.click_and_wait("form[action='/console/audit/verify'] button")?;
        let first = web.wait_text("#first-broken", Duration::from_secs(30), |t| !t.is_empty())?;
        ensure!(
            first == "3",
            "the console names record {first} as the first broken link"
        );
        web.screenshot("audit-broken")?;
        Ok(())
    })?;
    let (ok, text) = b.verify_audit_cli()?;
    ensure!(
        !ok && text.contains("record 3"),
        "airlockd audit verify: {text}"
    );
    Ok(())
}

/// A client that does not follow redirects and keeps no cookies.
fn raw_client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// The `Set-Cookie` value of cookie `name` in `r`.
fn set_cookie(r: &reqwest::Response, name: &str) -> Option<String> {
    r.headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|v| {
            v.split(';')
                .next()
                .and_then(|kv| kv.split_once('='))
                .filter(|(k, v)| *k == name && !v.is_empty())
                .map(|(_, v)| v.to_owned())
        })
}

/// The value of the first hidden `csrf` field in `html`.
fn csrf_field(html: &str) -> Option<String> {
    let at = html.find("name=\"csrf\" value=\"")? + "name=\"csrf\" value=\"".len();
    Some(html[at..].split('"').next()?.to_owned())
}

/// A login attempt: the status and how long the answer took.
async fn try_login(
    c: &reqwest::Client,
    url: &str,
    secret: &str,
) -> (u16, Duration, Option<String>) {
    let page = c.get(format!("{url}/console/login")).send().await.unwrap();
    let login_cookie = set_cookie(&page, "airlock_login").unwrap();
    let token = csrf_field(&page.text().await.unwrap()).unwrap();
    let t = Instant::now();
    let r = c
        .post(format!("{url}/console/login"))
        .header("cookie", format!("airlock_login={login_cookie}"))
        .form(&[
            ("csrf", token.as_str()),
            ("name", ACCOUNT),
            ("secret", secret),
        ])
        .send()
        .await
        .unwrap();
    (
        r.status().as_u16(),
        t.elapsed(),
        set_cookie(&r, "airlock_console"),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn the_console_refuses_requests_without_a_valid_session_or_csrf_token() -> Result<()> {
    let b = start(BrokerConfig {
        size: 1,
        ..console_config()?
    })?;
    let id = b.wait_clean(1, UP).await?[0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let c = raw_client();
    let url = &b.url;
    let drain = |cookie: Option<String>, csrf: &str| {
        let mut r = c.post(format!("{url}/console/desktops/{id}")).form(&[
            ("csrf", csrf),
            ("action", "drain"),
            ("reason", "test"),
        ]);
        if let Some(k) = cookie {
            r = r.header("cookie", format!("airlock_console={k}"));
        }
        r.send()
    };

    // Wrong passwords: each answer comes later than the one before.
    let mut waits = Vec::new();
    for _ in 0..4 {
        let (status, took, cookie) = try_login(&c, url, "wrong password").await;
        ensure!(
            status == 401 && cookie.is_none(),
            "a wrong password: {status}"
        );
        waits.push(took);
    }
    eprintln!("wrong-password answers took {waits:?}");
    ensure!(waits[1] >= Duration::from_millis(450), "{waits:?}");
    ensure!(
        waits[2] >= Duration::from_millis(950) && waits[2] > waits[1],
        "{waits:?}"
    );
    ensure!(
        waits[3] >= Duration::from_millis(1950) && waits[3] > waits[2],
        "{waits:?}"
    );
    let (status, _, cookie) = try_login(&c, url, PASSWORD).await;
    ensure!(status == 303, "the right password: {status}");
    let cookie = cookie.context("no session cookie")?;

    // A form without a session, with a forged CSRF token, or with a tampered cookie.
    let r = drain(None, "x").await?;
    ensure!(r.status() == 403, "no session: {}", r.status());
    let r = drain(Some(cookie.clone()), &"0".repeat(64)).await?;
    ensure!(r.status() == 403, "forged CSRF: {}", r.status());
    let page = c
        .get(format!("{url}/console"))
        .header("cookie", format!("airlock_console={cookie}"))
        .send()
        .await?;
    ensure!(page.status() == 200);
    for (k, v) in page.headers() {
        eprintln!("{k}: {v:?}");
    }
    let csp = page.headers()["content-security-policy"]
        .to_str()?
        .to_owned();
    ensure!(csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"));
    ensure!(page.headers()["x-frame-options"] == "DENY");
    ensure!(page.headers()["cache-control"] == "no-store");
    let csrf = csrf_field(&page.text().await?).context("no CSRF field on the pool page")?;
    let mut tampered = cookie.clone().into_bytes();
    let i = tampered.len() / 3;
    tampered[i] = if tampered[i] == b'a' { b'b' } else { b'a' };
    let tampered = String::from_utf8(tampered)?;
    let r = drain(Some(tampered.clone()), &csrf).await?;
    ensure!(r.status() == 403, "tampered cookie: {}", r.status());
    let r = c
        .get(format!("{url}/console"))
        .header("cookie", format!("airlock_console={tampered}"))
        .send()
        .await?;
    ensure!(
        r.status().is_redirection(),
        "a page with a tampered cookie: {}",
        r.status()
    );
    // Nothing changed.
    let d = b.desktop(&id).await?;
    ensure!(d["state"] == "clean" && d["drained"] == false, "{d}");
    ensure!(!b
        .audit()
        .await?
        .iter()
        .any(|r| r["action"] == "desktop_drained"));

    // The real form works, and logout ends the session.
    let r = drain(Some(cookie.clone()), &csrf).await?;
    ensure!(r.status() == 303, "the real form: {}", r.status());
    ensure!(b.desktop(&id).await?["drained"] == true);
    let r = c
        .post(format!("{url}/console/logout"))
        .header("cookie", format!("airlock_console={cookie}"))
        .form(&[("csrf", csrf.as_str())])
        .send()
        .await?;
    ensure!(r.status() == 303);
    let r = drain(Some(cookie), &csrf).await?;
    ensure!(r.status() == 403, "after logout: {}", r.status());
    // Logins, failed logins and logouts are audited.
    let audit = b.audit().await?;
    let count = |a: &str| audit.iter().filter(|r| r["action"] == a).count();
    ensure!(
        count("console_login_failed") == 4
            && count("console_login") == 1
            && count("console_logout") == 1
    );

    // The same actions through the admin API, with a reason.
    let act = |action: &str, token: Option<&str>, body: serde_json::Value| {
        let mut r = c
            .post(format!("{url}/v1/desktops/{id}/actions/{action}"))
            .json(&body);
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        r.send()
    };
    let reason = serde_json::json!({"reason": "API test"});
    let r = act("drain", None, reason.clone()).await?;
    ensure!(r.status() == 401, "no token: {}", r.status());
    let r = act("drain", Some(ADMIN_TOKEN), reason.clone()).await?;
    ensure!(
        r.status() == 409,
        "draining a drained desktop: {}",
        r.status()
    );
    let body: serde_json::Value = r.json().await?;
    ensure!(body["error"] == "action_conflict", "{body}");
    let r = act("explode", Some(ADMIN_TOKEN), reason.clone()).await?;
    ensure!(r.status() == 404, "unknown action: {}", r.status());
    let r = act(
        "return",
        Some(ADMIN_TOKEN),
        serde_json::json!({"reason": "  "}),
    )
    .await?;
    ensure!(r.status() == 400, "empty reason: {}", r.status());
    let r = act("return", Some(ADMIN_TOKEN), reason).await?;
    ensure!(r.status() == 202, "return: {}", r.status());
    ensure!(b.desktop(&id).await?["drained"] == false);
    let lease = b.acquire_ok("dr-api").await?;
    let r = c
        .post(format!("{url}/v1/leases/{}/revoke", lease.grant.lease_id))
        .bearer_auth(ADMIN_TOKEN)
        .json(&serde_json::json!({"reason": "API revoke"}))
        .send()
        .await?;
    ensure!(r.status() == 200, "revoke: {}", r.status());
    let audit = b.audit().await?;
    let ended = audit
        .iter()
        .find(|r| r["action"] == "lease_ended" && r["lease"] == lease.grant.lease_id.to_string())
        .context("no lease_ended")?;
    ensure!(
        ended["details"].to_string().contains("API revoke"),
        "{ended}"
    );
    Ok(())
}
