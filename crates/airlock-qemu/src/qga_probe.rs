//! Readiness through the stock QEMU guest agent (`pool.readiness.probe = "qga"`).
//!
//! Every start: connect and sync (a clone inherits the template's agent mid-read, see
//! [`crate::qga`]), `guest-ping`, then the clock: `guest-set-time` with the host's time
//! (never the argument-less form, which reads the time from a network the desktop lacks)
//! and `guest-get-time` to check it took. The template's source VM also records what the
//! agent is (`guest-info`, refused when it enables program or file commands unless the
//! config accepts them), `guest-get-osinfo` and `guest-get-devices`, and, for desktops
//! that log on, waits for the configured user's session and for its vCPUs to be quiet,
//! measured on the host.
use crate::process::Vm;
use crate::qga::{check_info, dangerous_commands, QgaError};
use crate::QemuError;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::time::Duration;
use tokio::time::Instant;

/// How the broker decides a qga guest is ready.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QgaProbe {
    /// How long a cold boot (the template's, or a rebuild) may take to answer.
    pub boot_timeout: Duration,
    /// Accept an agent that enables `guest-exec`, `guest-file-*` and the like (the
    /// config's `accept_exec`; a warning is logged at every template build).
    pub accept_exec: bool,
    /// For desktops that log on: what the template waits for before it is frozen.
    pub logon: Option<Logon>,
}

/// The template of a desktop that logs on is frozen only once the user's session
/// exists and the desktop has settled.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Logon {
    /// The user whose session must exist (`guest-get-users`; compared without case,
    /// as Windows does).
    pub user: String,
    /// How long the vCPUs must stay below `busy_percent` together.
    pub quiet: Duration,
    /// The most vCPU time, in percent of one vCPU on average, that counts as quiet.
    pub busy_percent: u32,
    /// How long to wait for both, after the agent first answered.
    pub timeout: Duration,
}

/// How much a start asks the agent besides ping and clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Depth {
    /// A template clone: the agent is the template's, already checked.
    Clone,
    /// A cold boot (a rebuild): the agent is checked again (`guest-info`), as a
    /// template's would be.
    Boot,
    /// The template's source VM: checked, described for the proof, and the logon
    /// waited for.
    Template,
}

/// Attempts in a row that end in an answer the protocol does not allow before the agent
/// is judged hostile (one could be a stale answer to an earlier attempt).
pub const MAX_VIOLATIONS: u32 = 3;

/// The most a clock may be off after it was set.
pub const MAX_CLOCK_SKEW: Duration = Duration::from_secs(1);

fn not_ready(desktop: &str) -> impl Fn(QgaError) -> QemuError + '_ {
    move |source| QemuError::QgaNotReady {
        desktop: desktop.to_owned(),
        source,
    }
}

fn unix_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .ok()
        .and_then(|d| i64::try_from(d.as_nanos()).ok())
        .unwrap_or(0)
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Waits until the agent answers (retrying connection, sync and ping until `timeout`:
/// at a cold boot it starts late), sets and checks the clock and, after a boot
/// ([`Depth`]), refuses an agent that runs programs or touches files and records what
/// the agent and guest are; for the template's source VM it also waits for the logon.
/// Returns the facts for the proof of the start.
pub async fn ready(
    vm: &Vm,
    desktop: &str,
    probe: &QgaProbe,
    timeout: Duration,
    depth: Depth,
) -> Result<Value, QemuError> {
    let err = not_ready(desktop);
    let started = Instant::now();
    let deadline = started + timeout;
    let mut attempts = 0u32;
    let mut violation: Option<QgaError> = None;
    let mut violations = 0u32;
    let mut q = loop {
        attempts += 1;
        let left = deadline.saturating_duration_since(Instant::now());
        let attempt = async {
            let mut q = vm.qga(left.min(Duration::from_secs(3))).await?;
            q.ping(Duration::from_secs(2)).await?;
            Ok::<_, QgaError>(q)
        };
        match attempt.await {
            Ok(q) => break q,
            Err(e) => {
                tracing::debug!(desktop, attempt = attempts, error = %e, "guest agent not answering yet");
                if is_violation(&e) {
                    violations += 1;
                } else {
                    violations = 0;
                }
                // What the agent did wrong says more than a later silence.
                let e = match (e, violation.take()) {
                    (e, Some(v)) if !is_violation(&e) => v,
                    (e, _) => e,
                };
                // Silence may be a slow boot; answers the protocol does not allow, again
                // and again, are the agent's answer.
                if violations >= MAX_VIOLATIONS
                    || Instant::now() + Duration::from_millis(200) >= deadline
                {
                    return Err(err(e));
                }
                if is_violation(&e) {
                    violation = Some(e);
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    };
    let answered_ms = ms(started.elapsed());
    // The clock: set explicitly, then read back.
    let t = Duration::from_secs(5);
    let clock_set = match q.set_time(unix_ns(), t).await {
        Ok(()) => true,
        Err(e) => {
            tracing::warn!(desktop, error = %e, "the guest agent did not set the guest clock");
            false
        }
    };
    let before = unix_ns();
    let guest = q.get_time(t).await.map_err(&err)?;
    let after = unix_ns();
    let skew_ms = (guest - (before / 2 + after / 2)) / 1_000_000;
    if skew_ms.unsigned_abs() > ms(MAX_CLOCK_SKEW) {
        tracing::warn!(
            desktop,
            skew_ms,
            "the guest clock is more than 1 s off the host's"
        );
    }
    let mut proof = json!({
        "probe": "qga",
        "answered_ms": answered_ms,
        "attempts": attempts,
        "clock_set": clock_set,
        "clock_skew_ms": skew_ms,
    });
    if depth == Depth::Clone {
        return Ok(proof);
    }
    let info = q.info(t).await.map_err(&err)?;
    let dangerous: Vec<String> = dangerous_commands(&info)
        .into_iter()
        .map(str::to_owned)
        .collect();
    check_info(&info, probe.accept_exec).map_err(&err)?;
    if !dangerous.is_empty() {
        tracing::warn!(desktop, commands = %dangerous.join(", "),
            "the golden image's guest agent enables program and file commands; the config accepts it (pool.readiness.accept_exec)");
    }
    proof["agent_version"] = json!(info.version);
    proof["agent_enabled_dangerous"] = json!(dangerous);
    proof["osinfo"] = q.osinfo(t).await.map_err(&err)?;
    // Linux agents do not implement it: recorded as what the agent said.
    proof["devices"] = match q.devices(t).await {
        Ok(d) => d,
        Err(QgaError::Refused { class, desc, .. }) => json!({ "refused": class, "why": desc }),
        Err(e) => return Err(err(e)),
    };
    if let (Some(logon), Depth::Template) = (&probe.logon, depth) {
        drop(q);
        let waited = wait_logon(vm, desktop, logon).await?;
        proof["logon"] = waited;
    }
    Ok(proof)
}

/// An answer the protocol does not allow (rather than no answer yet).
fn is_violation(e: &QgaError) -> bool {
    matches!(
        e,
        QgaError::Overlong
            | QgaError::NoSentinel
            | QgaError::WrongSyncId { .. }
            | QgaError::Garbage { .. }
            | QgaError::Refused { .. }
    )
}

/// Waits for `logon.user`'s session, then for quiet vCPUs.
async fn wait_logon(vm: &Vm, desktop: &str, logon: &Logon) -> Result<Value, QemuError> {
    let err = not_ready(desktop);
    let started = Instant::now();
    let deadline = started + logon.timeout;
    let waiting = |what: String| QemuError::Operation {
        desktop: desktop.to_owned(),
        what: "freeze the template".into(),
        reason: what,
    };
    tracing::info!(desktop, user = %logon.user, "template: waiting for the user's session (guest-get-users)");
    loop {
        let users = {
            let mut q = vm.qga(Duration::from_secs(5)).await.map_err(&err)?;
            q.users(Duration::from_secs(5)).await.map_err(&err)?
        };
        if users
            .iter()
            .any(|u| u.user.eq_ignore_ascii_case(&logon.user))
        {
            break;
        }
        if Instant::now() >= deadline {
            let seen: Vec<&str> = users.iter().map(|u| u.user.as_str()).collect();
            return Err(waiting(format!(
                "no session of {:?} within {} s (logged in: {}); check the image's auto-logon",
                logon.user,
                logon.timeout.as_secs(),
                if seen.is_empty() {
                    "nobody".to_owned()
                } else {
                    seen.join(", ")
                }
            )));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let session_ms = ms(started.elapsed());
    tracing::info!(
        desktop,
        quiet_s = logon.quiet.as_secs(),
        busy_percent = logon.busy_percent,
        "template: the user's session exists; waiting for the vCPUs to be quiet"
    );
    let tids = crate::affinity::vcpu_threads(&vm.qmp)
        .await
        .map_err(crate::qmp_error(desktop))?;
    if tids.is_empty() {
        return Err(waiting(
            "QEMU named no vCPU threads (query-cpus-fast), so their quiet cannot be measured"
                .into(),
        ));
    }
    let step = Duration::from_millis(500);
    let mut quiet_since: Option<Instant> = None;
    let mut last = (Instant::now(), vcpu_ns(vm.pid, &tids));
    loop {
        tokio::time::sleep(step).await;
        let now = (Instant::now(), vcpu_ns(vm.pid, &tids));
        let busy = match (last.1, now.1) {
            (Some(a), Some(b)) => busy_percent(b.saturating_sub(a), now.0 - last.0, tids.len()),
            _ => {
                return Err(waiting(format!(
                    "cannot read the vCPU threads' CPU time in /proc/{}/task/*/schedstat",
                    vm.pid
                )))
            }
        };
        last = now;
        if busy <= f64::from(logon.busy_percent) {
            let since = *quiet_since.get_or_insert(now.0 - step);
            if now.0 - since >= logon.quiet {
                return Ok(json!({
                    "user": logon.user,
                    "session_ms": session_ms,
                    "quiet_ms": ms(started.elapsed()) - session_ms,
                }));
            }
        } else {
            quiet_since = None;
        }
        if Instant::now() >= deadline {
            return Err(waiting(format!(
                "the vCPUs were not below {} % for {} s within {} s (last {busy:.0} %); raise pool.readiness.logon.busy_percent or timeout_s, or let the image finish its start-up work",
                logon.busy_percent,
                logon.quiet.as_secs(),
                logon.timeout.as_secs()
            )));
        }
    }
}

/// The vCPU threads' CPU time together, in nanoseconds (`schedstat`'s first field).
fn vcpu_ns(pid: i32, tids: &[i32]) -> Option<u64> {
    let mut sum = 0u64;
    for tid in tids {
        let text = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/schedstat")).ok()?;
        sum = sum.saturating_add(parse_schedstat(&text)?);
    }
    Some(sum)
}

/// The first field of a `schedstat` file: time on a CPU, in nanoseconds.
pub fn parse_schedstat(text: &str) -> Option<u64> {
    text.split_ascii_whitespace().next()?.parse().ok()
}

/// CPU time `used` over `elapsed` as a percentage of one of `vcpus` vCPUs, on average.
pub fn busy_percent(used_ns: u64, elapsed: Duration, vcpus: usize) -> f64 {
    let wall = elapsed.as_nanos() as f64 * vcpus.max(1) as f64;
    if wall <= 0.0 {
        return 0.0;
    }
    used_ns as f64 * 100.0 / wall
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedstat_gives_its_first_field() {
        assert_eq!(parse_schedstat("123456789 2000 17\n"), Some(123_456_789));
        assert_eq!(parse_schedstat(""), None);
        assert_eq!(parse_schedstat("x 1 2"), None);
        assert_eq!(parse_schedstat("-5 1 2"), None);
    }

    #[test]
    fn busy_is_per_vcpu_on_average() {
        let s = Duration::from_secs(1);
        assert_eq!(busy_percent(500_000_000, s, 1), 50.0);
        assert_eq!(busy_percent(500_000_000, s, 2), 25.0);
        assert_eq!(busy_percent(0, s, 4), 0.0);
        assert_eq!(busy_percent(1, Duration::ZERO, 1), 0.0);
        assert_eq!(busy_percent(1_000_000_000, s, 0), 100.0);
    }
}
