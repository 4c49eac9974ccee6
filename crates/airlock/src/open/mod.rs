//! `airlock open`: the clinician's one action. Check the drive, get a desktop (waiting in
//! line when none is free), keep the lease alive with heartbeats, show the desktop with
//! the display client, forward the drive into it; end when the viewer closes, on Ctrl-C,
//! SIGTERM or SIGHUP, when the broker is lost (two heartbeat intervals without an
//! answer) or ends the lease; then stop forwarding, release the desktop and exit with a
//! documented code and a one-line reason ([`Outcome`]).
pub mod api;
pub mod config;
pub mod viewer;

use std::io::{IsTerminal as _, Write as _};
use std::time::{Duration, Instant};

use airlock_core::wire::{
    AlertKind, AlertReport, ErrorCode, LeaseGrant, QueueStanding, MAX_ALERT_PROBLEMS,
    MAX_ALERT_PROBLEM_CHARS, MAX_QUEUE_WAIT_S,
};
use airlock_core::LeaseId;
use airlock_guard::status::Status;
use airlock_guard::Root;
use airlock_usb::source::{prepare, Prepared, Source};
use airlock_usb::transport::{self, BrokerTarget, LeaseRef, Target, TransportError};
use tokio::signal::unix::{signal, SignalKind};

use api::{ApiError, BrokerApi, LeaseAnswer, LeaseState};
use config::{DisplayChoice, OpenConfig, Overrides};

/// How `airlock open` ended: the exit code and a one-line reason (docs/terminal.md).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// 0: the session ended normally (viewer closed, signed out, stopped).
    Ended(String),
    /// 3: the configuration is wrong (file, flags, token, certificate).
    Config(String),
    /// 4: no desktop was free, or none became free within the wait; or none for this
    /// terminal now (it holds one for another user, or the broker limits its requests).
    NoDesktop(String),
    /// 5: the broker cannot be reached, or stopped answering during the session.
    BrokerLost(String),
    /// 6: the display client could not be started or failed.
    DisplayFailed(String),
    /// 7: the drive (or disc image) could not be forwarded.
    Drive(String),
    /// 8: a real drive was not forwarded because the terminal guard is not in place.
    Unguarded(String),
}

impl Outcome {
    /// The process exit code and the one-line reason.
    fn parts(&self) -> (u8, &str) {
        match self {
            Outcome::Ended(r) => (0, r),
            Outcome::Config(r) => (3, r),
            Outcome::NoDesktop(r) => (4, r),
            Outcome::BrokerLost(r) => (5, r),
            Outcome::DisplayFailed(r) => (6, r),
            Outcome::Drive(r) => (7, r),
            Outcome::Unguarded(r) => (8, r),
        }
    }

    /// The process exit code.
    pub fn code(&self) -> u8 {
        self.parts().0
    }

    /// The one-line reason.
    pub fn reason(&self) -> &str {
        self.parts().1
    }
}

/// A failed call to the broker, as the outcome it leads to.
fn api_outcome(e: &ApiError) -> Outcome {
    let line = format!("{} ({})", chain(e), e.advice());
    match e {
        ApiError::Unreachable { .. } => Outcome::BrokerLost(line),
        ApiError::TlsSetup { .. } | ApiError::Untrusted { .. } => Outcome::Config(line),
        ApiError::Refused { status: 401, .. } => Outcome::Config(line),
        // No desktop for this terminal now: one is open already, or it asked too often.
        ApiError::Refused {
            code: ErrorCode::LeaseLimit | ErrorCode::RateLimited,
            ..
        } => Outcome::NoDesktop(line),
        ApiError::Refused { .. } | ApiError::Protocol { .. } => Outcome::BrokerLost(line),
    }
}

/// An error with its causes, on one line.
fn chain(e: &dyn std::error::Error) -> String {
    let mut line = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let text = c.to_string();
        if !line.contains(&text) {
            line.push_str(": ");
            line.push_str(&text);
        }
        cause = c.source();
    }
    line
}

fn say(line: &str) {
    println!("{line}");
}

fn mm_ss(ms: i64) -> String {
    let s = ms.max(0) / 1000;
    format!("{}:{:02}", s / 60, s % 60)
}

/// Signals that end a session: Ctrl-C, SIGTERM, SIGHUP. Resolves with the signal's name.
async fn stop_signal() -> &'static str {
    let (Ok(mut term), Ok(mut hup)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::hangup()),
    ) else {
        let _ = tokio::signal::ctrl_c().await;
        return "Ctrl-C";
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => "Ctrl-C",
        _ = term.recv() => "SIGTERM",
        _ = hup.recv() => "SIGHUP",
    }
}

/// Runs `airlock open`.
pub async fn run(o: &Overrides) -> Outcome {
    let cfg = match OpenConfig::load(o) {
        Ok(c) => c,
        Err(e) => return Outcome::Config(e.to_string()),
    };
    let api = match BrokerApi::new(&cfg.broker, &cfg.token, &cfg.trust, Duration::from_secs(10)) {
        Ok(a) => a,
        Err(e) => return api_outcome(&e),
    };
    if matches!(cfg.source, Source::Drive(_)) {
        if let Err(outcome) = check_guard(&api, &cfg).await {
            return outcome;
        }
    }
    say("Checking the drive...");
    let prepared = match prepare(&cfg.source).await {
        Ok(p) => p,
        Err(e) => return Outcome::Drive(chain(&e)),
    };
    say(&format!("Drive: {}", prepared.summary()));
    say(&format!(
        "Finding a free desktop for {} at {}...",
        cfg.user,
        api.base()
    ));
    let grant = tokio::select! {
        g = obtain(&api, &cfg) => match g {
            Ok(g) => g,
            Err(outcome) => return outcome,
        },
        sig = stop_signal() => return Outcome::Ended(format!("stopped by {sig} before a desktop was ready")),
    };
    if let Some(p) = &cfg.patient {
        match api.set_patient(&grant.lease_id, p).await {
            Ok(()) => say(&format!(
                "Patient {} (from the HIS): key images go to this patient's record.",
                p.patient_id
            )),
            Err(e) => {
                tracing::warn!(error = %e, "could not give the lease its patient");
                say(&format!(
                    "Warning: the broker did not take the patient ({e}); key images of this session cannot be sent to the PACS."
                ));
            }
        }
    }
    // Tells `airlock capture` which lease this is.
    let file = crate::session_file::path();
    let written = crate::session_file::write(
        &file,
        &crate::session_file::SessionFile {
            broker: cfg.broker.to_string(),
            lease_id: grant.lease_id.clone(),
            desktop_id: grant.desktop_id.clone(),
            patient_id: cfg.patient.as_ref().map(|p| p.patient_id.clone()),
            pid: std::process::id(),
        },
    );
    if let Err(e) = written {
        tracing::warn!(file = %file.display(), error = %e, "cannot write the session file; airlock capture needs --lease");
    }
    let outcome = session(&api, &cfg, grant, prepared).await;
    crate::session_file::remove(&file);
    outcome
}

/// Before a real drive is forwarded: is the terminal guarded (`airlock guard status`)?
/// When it is not, the broker hears of it (a security alert in its audit log) and the
/// drive is not forwarded, unless the configuration accepts the risk.
async fn check_guard(api: &BrokerApi, cfg: &OpenConfig) -> Result<(), Outcome> {
    let status = Status::read(&Root::new(&cfg.guard.root));
    if status.guarded() {
        tracing::debug!("the terminal guard is in place");
        return Ok(());
    }
    let problems: Vec<String> = status
        .failures()
        .map(|c| format!("{}: {}", c.what, c.detail))
        .take(MAX_ALERT_PROBLEMS)
        .map(|p| p.chars().take(MAX_ALERT_PROBLEM_CHARS).collect())
        .collect();
    let report = AlertReport {
        kind: AlertKind::TerminalUnguarded,
        problems: problems.clone(),
        accepted: cfg.guard.allow_unguarded,
        user: Some(cfg.user.as_str().to_owned()),
    };
    let sent = api.alert(&report).await;
    if let Err(e) = &sent {
        tracing::warn!(error = %e, "could not report the unguarded terminal to the broker");
    }
    let first = problems.first().cloned().unwrap_or_default();
    if !cfg.guard.allow_unguarded {
        return Err(Outcome::Unguarded(format!(
            "this terminal is not guarded, so its drive is not forwarded ({first}; {} \
             problem(s) in all); run `airlock guard status` to see them and `airlock guard \
             install` as root to fix them, or set `drive.allow_unguarded = true` to accept \
             the risk",
            problems.len()
        )));
    }
    if let Err(e) = sent {
        return Err(Outcome::Unguarded(format!(
            "this terminal is not guarded and the broker could not be told ({e}); a \
             session from an unguarded terminal must be audited, so the drive is not \
             forwarded"
        )));
    }
    tracing::warn!(problem = %first, "forwarding from an unguarded terminal (drive.allow_unguarded); the broker audited it");
    say(&format!(
        "Warning: this terminal is not guarded ({first}); going on because the \
         configuration allows it."
    ));
    Ok(())
}

/// A lease: at once, or after waiting in line.
async fn obtain(api: &BrokerApi, cfg: &OpenConfig) -> Result<LeaseGrant, Outcome> {
    let wait = !cfg.wait.is_zero();
    match api.request_lease(&cfg.user, wait).await {
        Ok(LeaseAnswer::Granted(g)) => Ok(*g),
        Ok(LeaseAnswer::NoFreeDesktop {
            retry_after_s,
            message,
        }) => Err(Outcome::NoDesktop(match retry_after_s {
            Some(s) => format!("no desktop is free ({message}); try again in {s} s"),
            None => format!("no desktop is free ({message})"),
        })),
        Ok(LeaseAnswer::Waiting(standing)) => wait_in_line(api, cfg, standing).await,
        Err(e) => Err(api_outcome(&e)),
    }
}

/// Shows the place in line until a desktop is held for this terminal, or the wait runs
/// out (then the ticket is given back).
async fn wait_in_line(
    api: &BrokerApi,
    cfg: &OpenConfig,
    mut standing: QueueStanding,
) -> Result<LeaseGrant, Outcome> {
    let deadline = Instant::now() + cfg.wait;
    let tty = std::io::stdout().is_terminal();
    let mut shown = (0, 0);
    let mut last_print = Instant::now() - Duration::from_secs(3600);
    loop {
        if (standing.position, standing.waiting) != shown
            || last_print.elapsed() >= Duration::from_secs(if tty { 1 } else { 30 })
        {
            let line = format!(
                "No desktop is free: you are number {} in line ({} waiting), waited {}.",
                standing.position,
                standing.waiting,
                mm_ss(standing.waited_ms)
            );
            if tty {
                print!("\r{line}  ");
                let _ = std::io::stdout().flush();
            } else {
                say(&line);
            }
            shown = (standing.position, standing.waiting);
            last_print = Instant::now();
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            let _ = api.leave_ticket(&standing.ticket_id).await;
            if tty {
                println!();
            }
            return Err(Outcome::NoDesktop(format!(
                "no desktop became free within {} s; try again later",
                cfg.wait.as_secs()
            )));
        }
        // A ticket stays alive while it is being polled: poll as long as the broker
        // allows, it answers as soon as the place changes.
        let poll_s = left.as_secs().clamp(1, MAX_QUEUE_WAIT_S);
        match api.poll_ticket(&standing.ticket_id, poll_s).await {
            Ok(Some(LeaseAnswer::Granted(g))) => {
                if tty {
                    println!();
                }
                say(&format!(
                    "A desktop is free after {} in line.",
                    mm_ss(standing.waited_ms)
                ));
                return Ok(*g);
            }
            Ok(Some(LeaseAnswer::Waiting(s))) => standing = s,
            Ok(Some(LeaseAnswer::NoFreeDesktop { message, .. })) => {
                return Err(Outcome::NoDesktop(message))
            }
            Ok(None) => {
                return Err(Outcome::NoDesktop(
                    "the broker dropped this terminal from the line; run airlock open again".into(),
                ))
            }
            Err(e) => return Err(api_outcome(&e)),
        }
    }
}

/// Why the session is ending.
enum End {
    ViewerClosed(std::process::ExitStatus),
    Signal(&'static str),
    BrokerLost(String),
    LeaseEnded,
    DriveFailed(String),
}

/// Sends heartbeats every `interval`; returns when the broker ends the lease or has not
/// answered for two intervals.
async fn heartbeats(api: BrokerApi, lease: LeaseId, interval: Duration) -> End {
    let mut last_ok = Instant::now();
    loop {
        tokio::time::sleep(interval).await;
        match tokio::time::timeout(interval, api.heartbeat(&lease)).await {
            Ok(Ok(LeaseState::Alive { .. })) => last_ok = Instant::now(),
            Ok(Ok(LeaseState::Ended)) => return End::LeaseEnded,
            Ok(Err(e)) => tracing::warn!(error = %e, "heartbeat failed"),
            Err(_) => tracing::warn!("heartbeat: no answer within {interval:?}"),
        }
        if last_ok.elapsed() >= interval * 2 {
            return End::BrokerLost(format!("no answer for {} s", last_ok.elapsed().as_secs()));
        }
    }
}

/// Starts the display client on the grant's display; why not, in words for the user.
async fn show(
    d: &DisplayChoice,
    cfg: &OpenConfig,
    grant: &LeaseGrant,
) -> Result<tokio::process::Child, String> {
    let Some(shown) = &grant.display else {
        return Err("the broker's pool has no display configured; use --no-display".into());
    };
    if !shown.tls {
        tracing::warn!(host = %shown.host, "the desktop's display is not encrypted (the broker has no TLS)");
    }
    say("Connecting the display...");
    let file = viewer::connection_file(shown, &grant.desktop_id, cfg.ca_pem.as_deref(), d.mode)
        .map_err(|e| e.to_string())?;
    viewer::start(&d.client, d.mode, &file)
        .await
        .map_err(|e| format!("{} (install virt-viewer, or set display.client)", chain(&e)))
}

/// The session on a granted lease, until it ends; then release.
async fn session(
    api: &BrokerApi,
    cfg: &OpenConfig,
    grant: LeaseGrant,
    prepared: Prepared,
) -> Outcome {
    let lease = grant.lease_id.clone();
    if grant.reattached {
        say(&format!(
            "Back on your desktop {} (it was still yours).",
            grant.desktop_id
        ));
    } else {
        say(&format!("Desktop {} is yours.", grant.desktop_id));
    }
    let interval = Duration::from_secs(grant.heartbeat_interval_s.clamp(1, 3600));
    let mut beats = tokio::spawn(heartbeats(api.clone(), lease.clone(), interval));

    let mut viewer = None;
    if let Some(d) = &cfg.display {
        match show(d, cfg, &grant).await {
            Ok(child) => viewer = Some(child),
            Err(why) => {
                return finish(api, &lease, None, None, None, Outcome::DisplayFailed(why)).await
            }
        }
    }

    say("Forwarding the drive...");
    let target = Target::Broker(BrokerTarget {
        url: cfg.broker.clone(),
        lease: match LeaseRef::parse(lease.as_str()) {
            Ok(l) => l,
            Err(e) => {
                return finish(
                    api,
                    &lease,
                    viewer,
                    None,
                    None,
                    Outcome::BrokerLost(e.to_string()),
                )
                .await
            }
        },
        token: cfg.token.clone(),
        trust: cfg.trust.clone(),
    });
    let handle = prepared.handle();
    let mut usb = match transport::connect(&target, prepared.description()).await {
        Ok(stream) => Some(tokio::spawn(prepared.run(stream))),
        // A re-attached lease whose drive another `airlock open` of this terminal still
        // forwards: show the desktop, leave the drive where it is.
        Err(TransportError::Refused { status: 409, .. }) if grant.reattached => {
            say("The drive is still forwarded by the other airlock open of this terminal.");
            None
        }
        Err(e) => {
            let outcome = match e {
                TransportError::Connect { .. } | TransportError::Timeout(..) => {
                    Outcome::BrokerLost(format!("{e}; {}", e.advice()))
                }
                _ => Outcome::Drive(format!("{e}; {}", e.advice())),
            };
            return finish(api, &lease, viewer, None, None, outcome).await;
        }
    };
    let reporter = tokio::spawn(crate::usb::report_progress(handle.clone()));

    let end = loop {
        let viewer_exit = async {
            match viewer.as_mut() {
                Some(v) => v.wait().await.ok(),
                None => std::future::pending().await,
            }
        };
        let usb_end = async {
            match usb.as_mut() {
                Some(task) => Some(task.await),
                None => std::future::pending().await,
            }
        };
        let usb_result = tokio::select! {
            status = viewer_exit => {
                break End::ViewerClosed(status.unwrap_or_default());
            }
            sig = stop_signal() => break End::Signal(sig),
            b = &mut beats => {
                break b.unwrap_or(End::BrokerLost("the heartbeat task failed".into()));
            }
            r = usb_end => r,
        };
        usb = None;
        let why = match usb_result {
            Some(Ok(Ok(summary))) => summary.end.to_string(),
            Some(Ok(Err(e))) => chain(&e),
            Some(Err(e)) => format!("the USB session task failed: {e}"),
            None => continue,
        };
        // The drive's stream ended: because the broker went away, because it ended the
        // lease, or because of the drive itself? Ask the broker.
        match tokio::time::timeout(interval, api.heartbeat(&lease)).await {
            Ok(Ok(LeaseState::Ended)) => break End::LeaseEnded,
            Ok(Ok(LeaseState::Alive { .. })) => {
                say(&format!("The drive left the desktop: {why}."));
                if cfg.display.is_none() {
                    break End::DriveFailed(format!("the drive session ended: {why}"));
                }
            }
            _ => {
                break End::BrokerLost(format!(
                    "the broker closed the drive's connection ({why}) and does not answer"
                ))
            }
        }
    };
    reporter.abort();
    beats.abort();
    let outcome = match end {
        End::ViewerClosed(s) if s.success() || s.code().is_none() => {
            Outcome::Ended("the desktop was closed".into())
        }
        End::ViewerClosed(s) => Outcome::DisplayFailed(format!(
            "the display client exited with {s}; see its messages above"
        )),
        End::Signal(sig) => Outcome::Ended(format!("stopped by {sig}")),
        End::BrokerLost(why) => Outcome::BrokerLost(format!(
            "lost the broker: {why}; the drive is no longer forwarded"
        )),
        End::LeaseEnded => Outcome::Ended(
            "the broker ended the session (signed out, display lost or ended by IT)".into(),
        ),
        End::DriveFailed(why) => Outcome::Drive(why),
    };
    let forwarded = handle.clone();
    finish(
        api,
        &lease,
        viewer,
        usb.map(|task| (handle, task)),
        Some(&forwarded),
        outcome,
    )
    .await
}

/// Stops forwarding (the drive is unplugged from the desktop and let go), tells the
/// broker which control requests of the desktop the drive forwarder refused (`forwarded`:
/// the handle of the lease's forward, if one ran), closes the viewer, releases the lease
/// (unless the broker is lost), and returns `outcome`.
async fn finish(
    api: &BrokerApi,
    lease: &LeaseId,
    viewer: Option<tokio::process::Child>,
    usb: Option<(
        airlock_usb::source::UsbHandle,
        tokio::task::JoinHandle<Result<airlock_usb::SessionSummary, airlock_usb::SessionError>>,
    )>,
    forwarded: Option<&airlock_usb::source::UsbHandle>,
    outcome: Outcome,
) -> Outcome {
    if let Some((handle, task)) = usb {
        if !task.is_finished() {
            let _ = tokio::time::timeout(Duration::from_secs(3), handle.unplug()).await;
        }
        let abort = task.abort_handle();
        if tokio::time::timeout(Duration::from_secs(3), task)
            .await
            .is_err()
        {
            abort.abort();
        }
    }
    if let Some(h) = forwarded.filter(|_| !matches!(outcome, Outcome::BrokerLost(_))) {
        crate::usb::report_refused(api, lease, h).await;
    }
    if let Some(mut v) = viewer {
        let _ = v.start_kill();
        let _ = v.wait().await;
    }
    if !matches!(outcome, Outcome::BrokerLost(_)) {
        say("Releasing the desktop...");
        if let Err(e) = api.release(lease).await {
            tracing::warn!(error = %e, "release failed; the broker ends the lease when heartbeats stop");
        }
    }
    outcome
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_outcome_has_its_documented_code() {
        let codes: Vec<u8> = [
            Outcome::Ended(String::new()),
            Outcome::Config(String::new()),
            Outcome::NoDesktop(String::new()),
            Outcome::BrokerLost(String::new()),
            Outcome::DisplayFailed(String::new()),
            Outcome::Drive(String::new()),
        ]
        .iter()
        .map(Outcome::code)
        .collect();
        assert_eq!(codes, [0, 3, 4, 5, 6, 7]);
        assert_eq!(mm_ss(61_500), "1:01");
    }

    #[test]
    fn a_refusal_for_this_terminal_says_what_to_do() {
        let refused = |status, code| ApiError::Refused {
            status,
            code,
            message: "m".into(),
            retry_after_s: Some(7),
        };
        let o = api_outcome(&refused(409, ErrorCode::LeaseLimit));
        assert_eq!(o.code(), 4);
        assert!(o.reason().contains("already has a desktop open"), "{o:?}");
        let o = api_outcome(&refused(429, ErrorCode::RateLimited));
        assert_eq!(o.code(), 4);
        assert!(o.reason().contains("limiting requests"), "{o:?}");
        assert_eq!(
            api_outcome(&refused(401, ErrorCode::Unauthorized)).code(),
            3
        );
    }
}
