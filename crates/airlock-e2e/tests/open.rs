//! `airlock open`, the clinician's one action, against a real broker and desktops:
//! without a display (headless terminals, and the parts the display does not change):
//! no free desktop with `--wait 0`; a session that keeps its lease with heartbeats far
//! past the timeout and reads the disc; a second `airlock open` of the same user that
//! gets the same lease back and ends cleanly on SIGTERM; a broker killed during a
//! session, noticed within two heartbeat intervals; terminals waiting in line.

use airlock_e2e::{airlock_open, begin_or_skip, broker_with, ensure_says, exit_of, Run};
use airlock_testkit::broker::TERMINAL_TOKEN;
use airlock_testkit::process::read_or_empty;
use airlock_testkit::process::Signal;
use airlock_testkit::terminal_config::TerminalConfig;
use airlock_testkit::{block_on, Broker};
use anyhow::{ensure, Context, Result};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const UP: Duration = Duration::from_secs(240);

/// The desktop `airlock open` leased: the one desktop, once leased.
fn leased(broker: &Broker, log: &Path) -> Result<serde_json::Value> {
    block_on(
        broker.wait_desktop("desk-01", Duration::from_secs(60), |d| {
            d["state"] == "leased"
        }),
    )
    .with_context(|| format!("airlock open said:\n{}", read_or_empty(log)))
}

/// A clean one-desktop broker whose leases end `heartbeat_timeout_s` after the last
/// heartbeat, and a terminal configuration for it.
fn one_desktop(run: &Run, heartbeat_timeout_s: u64) -> Result<(Broker, PathBuf)> {
    let broker = broker_with(|c| {
        c.size = 1;
        c.heartbeat_timeout_s = heartbeat_timeout_s;
    })?;
    block_on(broker.wait_clean(1, UP))?;
    let config = TerminalConfig::new(&broker.url).write(run.tmp.path())?;
    Ok((broker, config))
}

#[test]
fn open_without_a_display_keeps_its_lease_and_ends_cleanly() -> Result<()> {
    let run = begin_or_skip!();
    let timeout_s = 3;
    let (broker, config) = one_desktop(&run, timeout_s)?;
    let iso = run.small_iso()?;

    // The only desktop taken: --wait 0 answers at once with code 4.
    let held = block_on(broker.acquire_ok("dr-other"))?;
    let log = run.tmp.path().join("open-0.log");
    let t = Instant::now();
    let mut open = airlock_open(
        &config,
        &["--no-display", "--iso", &iso, "--wait", "0"],
        &log,
    )?;
    let (code, out) = exit_of(&mut open, &log, Duration::from_secs(30))?;
    ensure!(
        code == 4,
        "exit {code}, expected 4 (no free desktop):\n{out}"
    );
    ensure!(out.contains("no desktop is free"), "{out}");
    ensure!(
        t.elapsed() < Duration::from_secs(10),
        "took {:?}",
        t.elapsed()
    );
    ensure!(block_on(broker.release(TERMINAL_TOKEN, &held.lease_id))? == 202);
    block_on(broker.wait_desktop("desk-01", UP, |d| d["state"] == "clean" && d["resets"] == 1))?;

    // A session: the desktop reads the disc, the lease lives three timeouts long.
    let log = run.tmp.path().join("open-1.log");
    let serial = broker.serial_log("desk-01");
    let mark = serial.mark();
    let mut open = airlock_open(&config, &["--no-display", "--iso", &iso], &log)?;
    let desk = leased(&broker, &log)?;
    let lease = desk["lease"].clone();
    serial
        .wait_cd(mark, Duration::from_secs(90))
        .with_context(|| format!("airlock open said:\n{}", read_or_empty(&log)))?
        .check(&run.artifacts.small)?;
    std::thread::sleep(Duration::from_secs(3 * timeout_s + 1));
    let desk = block_on(broker.desktop("desk-01"))?;
    ensure!(
        desk["state"] == "leased" && desk["lease"] == lease && open.running(),
        "the lease did not outlive three heartbeat timeouts: {desk}\n{}",
        read_or_empty(&log)
    );
    // A second `airlock open` of the same terminal and user gets the same lease back
    // (the first still forwards the drive); when it ends, the desktop is released and
    // the first sees the broker end its session.
    let log2 = run.tmp.path().join("open-2.log");
    let mut second = airlock_open(&config, &["--no-display", "--iso", &iso], &log2)?;
    wait_log(
        &log2,
        "still forwarded by the other",
        Duration::from_secs(60),
    )?;
    let out2 = read_or_empty(&log2);
    ensure!(out2.contains("Back on your desktop desk-01"), "{out2}");
    ensure!(block_on(broker.desktop("desk-01"))?["lease"] == lease);
    second.signal(Signal::TERM);
    let (code, out2) = exit_of(&mut second, &log2, Duration::from_secs(30))?;
    ensure!(code == 0, "exit {code}:\n{out2}");
    ensure!(
        out2.contains("Session ended: stopped by SIGTERM."),
        "{out2}"
    );
    let (code, out) = exit_of(&mut open, &log, Duration::from_secs(30))?;
    ensure!(code == 0, "exit {code}:\n{out}");
    ensure_says(
        &out,
        &[
            "Finding a free desktop for dr-test",
            "Desktop desk-01 is yours.",
            "Forwarding the drive...",
            "Session ended: the broker ended the session",
        ],
    )?;
    block_on(broker.wait_desktop("desk-01", UP, |d| d["state"] == "clean" && d["resets"] == 2))?;
    let audit = block_on(broker.audit())?;
    airlock_testkit::audit::check_invariants(&audit)?;
    let ended: Vec<&serde_json::Value> = audit
        .iter()
        .filter(|r| r["action"] == "lease_ended")
        .collect();
    ensure!(
        ended
            .last()
            .and_then(|r| r["details"].as_str())
            .is_some_and(|d| d.contains("released")),
        "the session's lease was not released by the terminal: {ended:?}"
    );
    Ok(())
}

#[test]
fn a_broker_lost_during_a_session_is_noticed_and_a_restart_serves_again() -> Result<()> {
    let run = begin_or_skip!();
    let timeout_s = 3;
    let (mut broker, config) = one_desktop(&run, timeout_s)?;
    let iso = run.small_iso()?;
    let log = run.tmp.path().join("open-lost.log");
    let mut open = airlock_open(&config, &["--no-display", "--iso", &iso], &log)?;
    leased(&broker, &log)?;
    // The heartbeat interval is a third of the timeout: 1 s. Lost within two intervals
    // (plus the one in flight and the process's exit).
    broker.kill9();
    let t = Instant::now();
    let (code, out) = exit_of(&mut open, &log, Duration::from_secs(15))?;
    ensure!(code == 5, "exit {code}, expected 5 (broker lost):\n{out}");
    ensure!(out.contains("lost the broker"), "{out}");
    ensure!(
        t.elapsed() < Duration::from_secs(5),
        "noticed after {:?}",
        t.elapsed()
    );
    // The drive was let go: the emulated drive's session is over (no airlock process left).
    ensure!(!open.running());

    // After a restart (on a new port) the old lease has ended (no heartbeats) and a new
    // session works.
    broker.restart()?;
    let config = TerminalConfig::new(&broker.url).write(run.tmp.path())?;
    block_on(broker.wait_desktop("desk-01", UP, |d| d["state"] == "clean" && d["resets"] == 1))?;
    let log = run.tmp.path().join("open-again.log");
    let mut open = airlock_open(&config, &["--no-display", "--iso", &iso], &log)?;
    leased(&broker, &log)?;
    open.signal(Signal::TERM);
    let (code, out) = exit_of(&mut open, &log, Duration::from_secs(30))?;
    ensure!(code == 0, "exit {code}:\n{out}");
    Ok(())
}

/// Waits until `log` (of a waiting `airlock open`) contains `text`.
fn wait_log(log: &Path, text: &str, within: Duration) -> Result<()> {
    let deadline = Instant::now() + within;
    while !read_or_empty(log).contains(text) {
        ensure!(
            Instant::now() < deadline,
            "no {text:?} within {within:?} in:\n{}",
            read_or_empty(log)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

#[test]
fn waiting_terminals_see_their_place_and_get_the_next_desktop() -> Result<()> {
    use airlock_testkit::broker::TerminalEntry;
    let run = begin_or_skip!();
    let broker = broker_with(|c| {
        c.terminals = (1..=5).map(TerminalEntry::numbered).collect();
    })?;
    block_on(broker.wait_clean(2, UP))?;
    let iso = run.small_iso()?;
    // Both desktops held by terminals 1 and 2.
    let first = block_on(broker.acquire_ok("dr-one"))?;
    let r = block_on(broker.acquire(&TerminalEntry::numbered(2).token, "dr-two"))?;
    ensure!(r.status() == 201, "{}", r.status());
    // Terminals 3, 4 and 5 wait, in that order.
    let mut waiting = Vec::new();
    for n in 3..=5 {
        let dir = run.tmp.path().join(format!("term-{n}"));
        std::fs::create_dir_all(&dir)?;
        let config = TerminalConfig {
            token: TerminalEntry::numbered(n).token,
            ..TerminalConfig::new(&broker.url)
        }
        .write(&dir)?;
        let log = dir.join("open.log");
        let open = airlock_open(
            &config,
            &["--no-display", "--iso", &iso, "--wait", "120"],
            &log,
        )?;
        wait_log(
            &log,
            &format!("you are number {} in line", n - 2),
            Duration::from_secs(30),
        )?;
        waiting.push((open, log));
    }
    // A desktop freed goes, once reset, to the head of the line: terminal 3.
    ensure!(block_on(broker.release(TERMINAL_TOKEN, &first.lease_id))? == 202);
    wait_log(&waiting[0].1, "is yours", UP)?;
    let audit = block_on(broker.audit())?;
    let at = |action: &str| {
        audit
            .iter()
            .filter(|r| r["action"] == action && r["desktop"] == first.desktop_id.as_str())
            .filter_map(|r| r["ts"].as_i64())
            .max()
    };
    let (reset, granted) = (at("desktop_reset"), at("lease_granted"));
    ensure!(
        matches!((reset, granted), (Some(r), Some(g)) if g >= r && g - r <= 2000),
        "granted {granted:?} ms, reset {reset:?} ms: not within 2 s of the reset"
    );
    // Terminal 4 (now first in line) is killed: it leaves the line within its timeout
    // and terminal 5 moves up.
    wait_log(
        &waiting[1].1,
        "you are number 1 in line",
        Duration::from_secs(30),
    )?;
    waiting[1].0.signal(Signal::KILL);
    wait_log(
        &waiting[2].1,
        "you are number 1 in line",
        Duration::from_secs(30),
    )?;
    // Terminal 3's session ends cleanly; terminal 5 gives up its place with Ctrl-C.
    for i in [0, 2] {
        let (open, log) = &mut waiting[i];
        open.signal(Signal::INT);
        let (code, out) = exit_of(open, log, Duration::from_secs(30))?;
        ensure!(code == 0, "exit {code}:\n{out}");
    }
    airlock_testkit::audit::check_invariants(&block_on(broker.audit())?)?;
    Ok(())
}
