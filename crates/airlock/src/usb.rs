//! `airlock usb list` and `airlock usb forward`: the drives of this terminal, and
//! forwarding one (or an ISO as an emulated drive) to a lease somebody else made.
use std::io::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use airlock_usb::drive::probe::device_type_name;
use airlock_usb::drive::{self, ProbeReport};
use airlock_usb::progress::{human_bytes, Phase};
use airlock_usb::source::{prepare, CdSpeed, IsoOptions, Source, UsbHandle};
use airlock_usb::transport::{self, BrokerTarget, BrokerUrl, LeaseRef, Target, Token, TrustRoots};
use airlock_usb::SessionEnd;
use anyhow::{bail, Context as _};
use tokio::io::AsyncBufReadExt;

use crate::open::api::{BrokerApi, LeaseState};
use crate::{ForwardArgs, UsbSpeedArg};
use airlock_core::LeaseId;

pub(crate) async fn usb_list() -> anyhow::Result<()> {
    let listing = drive::list_candidates().await?;
    let mut out = std::io::stdout().lock();
    if !listing.usb_present {
        writeln!(
            out,
            "No USB devices: this machine has no USB subsystem (no {}).",
            drive::SYSFS_USB
        )?;
        writeln!(out, "Nothing can be forwarded from here.")?;
        return Ok(());
    }
    if listing.candidates.is_empty() {
        writeln!(
            out,
            "No USB optical drive found ({} USB device{} seen, none with a mass-storage Bulk-Only interface).",
            listing.devices_seen,
            if listing.devices_seen == 1 { "" } else { "s" }
        )?;
        writeln!(out, "Plug in a USB CD/DVD drive and run this again.")?;
        return Ok(());
    }
    drop(out);
    for c in &listing.candidates {
        let report = drive::probe_candidate(c).await;
        let mut out = std::io::stdout().lock();
        writeln!(out, "{}", c.describe())?;
        if let Some(s) = &c.serial {
            writeln!(out, "    serial:     {}", drive::clean_string(s))?;
        }
        writeln!(
            out,
            "    interfaces: {}",
            drive::probe::describe_interfaces(&c.interfaces)
        )?;
        match report {
            ProbeReport::Optical(q) => writeln!(
                out,
                "    INQUIRY:    type 0x05 ({}) {} {} {}\n    verdict:    OK, can be forwarded (--device {:04x}:{:04x})",
                device_type_name(q.device_type),
                q.vendor,
                q.product,
                q.revision,
                c.vid,
                c.pid
            )?,
            ProbeReport::Refused(r) => {
                writeln!(out, "    verdict:    REFUSED: it is {r}")?
            }
            ProbeReport::DriverBound(drivers) => {
                let list = drivers
                    .iter()
                    .map(|(i, d)| format!("interface {i}: {d}"))
                    .collect::<Vec<_>>()
                    .join(", ");
                writeln!(
                    out,
                    "    verdict:    NOT CHECKED: a kernel driver is bound ({list}).\n    WARNING:    this terminal is not guarded; usb-storage must never bind optical drives here.\n                `airlock usb forward` would detach it."
                )?
            }
            ProbeReport::Inaccessible(why) => {
                writeln!(out, "    verdict:    NOT CHECKED: {why}")?
            }
        }
    }
    Ok(())
}

pub(crate) fn read_token(file: Option<&PathBuf>) -> anyhow::Result<Token> {
    let raw = match file {
        Some(path) => std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the token file {}", path.display()))?,
        None => match std::env::var("AIRLOCK_TOKEN") {
            Ok(t) => t,
            Err(_) => bail!("no terminal token: pass --token-file FILE or set AIRLOCK_TOKEN"),
        },
    };
    Ok(Token::parse(&raw)?)
}

fn target_from(args: &ForwardArgs) -> anyhow::Result<Target> {
    if let Some(to) = &args.to {
        return Ok(Target::parse_direct(to)?);
    }
    let (Some(url), Some(lease)) = (&args.broker, &args.lease) else {
        bail!("give --broker URL --lease ID, or --to unix:PATH");
    };
    let url: BrokerUrl = url.parse()?;
    let lease = LeaseRef::parse(lease)?;
    let token = read_token(args.token_file.as_ref())?;
    let trust = match &args.ca_file {
        Some(p) => TrustRoots::CaFile(p.clone()),
        None => TrustRoots::WebPki,
    };
    if !url.is_tls()
        && !url.host().starts_with("127.")
        && url.host() != "localhost"
        && url.host() != "::1"
    {
        tracing::warn!("the broker URL is plain http: the token and the disc travel unencrypted");
    }
    Ok(Target::Broker(BrokerTarget {
        url,
        lease,
        token,
        trust,
    }))
}

pub(crate) async fn usb_forward(args: ForwardArgs) -> anyhow::Result<()> {
    let target = target_from(&args)?;
    let source = match (&args.iso, args.device) {
        (Some(iso), None) => {
            let speed = match args.usb_speed.unwrap_or(UsbSpeedArg::Super) {
                UsbSpeedArg::Super => CdSpeed::Super,
                UsbSpeedArg::High => CdSpeed::High,
            };
            let options = IsoOptions {
                speed,
                uas: !args.no_uas,
            };
            Source::IsoWith(iso.clone(), options)
        }
        (None, Some(sel)) => Source::Drive(sel),
        _ => bail!("give either --device auto|VID:PID or --iso FILE"),
    };
    let prepared = prepare(&source).await?;
    println!("Forwarding: {}", prepared.summary());
    println!("To:         {target}");
    let stream = transport::connect(&target, prepared.description()).await?;
    println!("Connected. The desktop should see the drive in a few seconds.");
    let handle = prepared.handle();
    if matches!(handle, UsbHandle::Image(_)) {
        println!("Commands on stdin: `eject`, `insert FILE`, `unplug`.");
    } else {
        println!("Commands on stdin: `unplug`. Ctrl-C also unplugs.");
    }
    let session = tokio::spawn(prepared.run(stream));
    let beats = match &target {
        Target::Broker(b) if !args.no_heartbeat => Some(tokio::spawn(keep_alive(b.clone()))),
        _ => None,
    };
    let reporter = tokio::spawn(report_progress(handle.clone()));
    let commands = tokio::spawn(stdin_commands(handle.clone()));
    let ctrl_c = {
        let handle = handle.clone();
        tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                println!("Ctrl-C: unplugging the drive from the desktop...");
                let _ = handle.unplug().await;
            }
        })
    };
    let result = session.await.context("the USB session task failed")?;
    if let Some(b) = beats {
        b.abort();
    }
    if let Target::Broker(b) = &target {
        match (
            BrokerApi::new(&b.url, &b.token, &b.trust, Duration::from_secs(10)),
            LeaseId::parse(b.lease.as_str()),
        ) {
            (Ok(api), Ok(lease)) => report_refused(&api, &lease, &handle).await,
            _ => tracing::warn!("cannot tell the broker about refused control requests"),
        }
    }
    reporter.abort();
    commands.abort();
    ctrl_c.abort();
    let summary = result.context("the USB session ended with an error")?;
    println!(
        "Session ended: {} ({} sent to the desktop, {} received, {} transfers).",
        summary.end,
        human_bytes(summary.counters.bytes_to_guest),
        human_bytes(summary.counters.bytes_from_guest),
        summary.counters.transfers
    );
    if summary.end == SessionEnd::PeerClosed && summary.peer.is_none() {
        println!("The desktop side never answered: is the lease still active?");
    }
    Ok(())
}

/// After a forward of `lease` ended: tells the broker which control requests from the
/// desktop the drive forwarder refused, if any (it audits them once per lease).
pub(crate) async fn report_refused(api: &BrokerApi, lease: &LeaseId, handle: &UsbHandle) {
    let Some(report) = handle.progress().borrow().refused.report() else {
        return;
    };
    println!(
        "The desktop sent {} USB control request(s) the drive never saw (refused: not \
         needed to read a disc); reporting them to the broker.",
        report.count
    );
    if let Err(e) = api.report_refused(lease, &report).await {
        tracing::warn!(error = %e, refused = report.count, "could not report the refused control requests to the broker");
    }
}

/// When the next heartbeat of a lease that ends at `expires_at` is due, at `now` (both
/// Unix ms): a third of the time left, between 1 and 60 s.
fn next_heartbeat(expires_at: airlock_core::UnixMillis, now: airlock_core::UnixMillis) -> Duration {
    let left = u64::try_from(expires_at.saturating_sub(now)).unwrap_or(0);
    Duration::from_millis(left / 3).clamp(Duration::from_secs(1), Duration::from_secs(60))
}

/// Keeps the lease alive while its drive is forwarded (a lease made by hand, or by a
/// launcher that stopped, is otherwise ended `heartbeat_timeout_s` after it was granted):
/// a heartbeat at once, then a third of the way to each new end. Stops when the broker
/// says the lease has ended; the broker then closes the drive's stream.
async fn keep_alive(b: BrokerTarget) {
    let api = match BrokerApi::new(&b.url, &b.token, &b.trust, Duration::from_secs(10)) {
        Ok(api) => api,
        Err(e) => {
            tracing::warn!(error = %e, "cannot send heartbeats; the lease's maker must keep it alive");
            return;
        }
    };
    let Ok(lease) = LeaseId::parse(b.lease.as_str()) else {
        return;
    };
    loop {
        let wait = match api.heartbeat(&lease).await {
            Ok(LeaseState::Alive { expires_at }) => next_heartbeat(expires_at, unix_ms_now()),
            Ok(LeaseState::Ended) => {
                tracing::info!("the broker has ended the lease");
                return;
            }
            Err(e) => {
                tracing::warn!(error = %e, "heartbeat failed");
                Duration::from_secs(2)
            }
        };
        tokio::time::sleep(wait).await;
    }
}

fn unix_ms_now() -> airlock_core::UnixMillis {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Prints phase changes as they happen, and every 5 s the amount
/// read by the desktop while it grows.
pub(crate) async fn report_progress(handle: UsbHandle) {
    let mut rx = handle.progress();
    let mut last_phase = None;
    let mut last_bytes = 0u64;
    let mut tick = tokio::time::interval(Duration::from_secs(5));
    loop {
        let ticked = tokio::select! {
            changed = rx.changed() => {
                if changed.is_err() {
                    return;
                }
                false
            }
            _ = tick.tick() => true,
        };
        let p = rx.borrow_and_update().clone();
        if last_phase != Some(p.phase) {
            match p.phase {
                Phase::WaitingForPeer => println!("Waiting for the desktop..."),
                Phase::Attached => println!(
                    "Drive attached to the desktop ({}).",
                    p.peer
                        .as_ref()
                        .map_or("unknown peer", |x| x.version.as_str())
                ),
                Phase::Configured => println!("The desktop is using the drive."),
                Phase::Ended => return,
            }
            last_phase = Some(p.phase);
        }
        if ticked && p.counters.bytes_to_guest > last_bytes {
            println!(
                "  {} read by the desktop so far",
                human_bytes(p.counters.bytes_to_guest)
            );
            last_bytes = p.counters.bytes_to_guest;
        }
    }
}

/// `eject`, `insert FILE`, `unplug` from stdin.
async fn stdin_commands(handle: UsbHandle) {
    let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        let line = line.trim();
        let (cmd, arg) = line.split_once(' ').unwrap_or((line, ""));
        match (cmd, &handle) {
            ("", _) => {}
            ("unplug" | "quit", h) => {
                let _ = h.unplug().await;
                return;
            }
            ("eject", UsbHandle::Image(h)) => match h.eject().await {
                Ok(true) => println!("Disc ejected."),
                Ok(false) => println!("The drive was already empty."),
                Err(e) => {
                    println!("{e}");
                    return;
                }
            },
            ("insert", UsbHandle::Image(h)) if !arg.trim().is_empty() => {
                match h.insert_iso(arg.trim()).await {
                    Ok(Ok(())) => println!("Disc inserted: {}", arg.trim()),
                    Ok(Err(e)) => println!("Cannot insert: {e}"),
                    Err(e) => {
                        println!("{e}");
                        return;
                    }
                }
            }
            ("eject" | "insert", UsbHandle::Drive(_)) => {
                println!("A real drive is ejected with its own button.")
            }
            _ => println!("Unknown command {line:?}; try `eject`, `insert FILE` or `unplug`."),
        }
    }
}

#[cfg(test)]
mod keep_alive_tests {
    use super::*;

    #[test]
    fn heartbeats_come_a_third_of_the_way_to_the_end() {
        assert_eq!(next_heartbeat(30_000, 0), Duration::from_secs(10));
        assert_eq!(next_heartbeat(3_000, 0), Duration::from_secs(1));
        assert_eq!(next_heartbeat(10_000, 20_000), Duration::from_secs(1));
        assert_eq!(next_heartbeat(3_600_000, 0), Duration::from_secs(60));
        assert_eq!(next_heartbeat(i64::MAX, i64::MIN), Duration::from_secs(60));
    }
}
