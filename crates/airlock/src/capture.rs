//! `airlock capture`: a key image of the desktop this terminal has open. The broker
//! takes the screen (QEMU renders it; only pixels leave the desktop), keeps it under
//! the lease and hands back a PNG, saved here in the folder the site's EHR imports from;
//! with `--send` the broker also stores it in the PACS as a DICOM Secondary Capture for
//! the session's patient (from the HIS, completed by the worklist). With `--confirm` (or
//! `--send` and `capture.confirm`) the capture is shown first and sent only when the
//! clinician answers yes ([`confirm`]).
mod confirm;

use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use airlock_core::wire::{CaptureInfo, CaptureRequest, SendReply};
use airlock_core::LeaseId;
use clap::Args;

use crate::open::api::{ApiError, BrokerApi};
use crate::open::config::{OpenConfig, Overrides};
use crate::session_file;

/// `airlock capture`.
#[derive(Debug, Args)]
pub struct CaptureArgs {
    /// Also send the capture to the PACS (as a DICOM Secondary Capture).
    #[arg(long)]
    send: bool,
    /// Show the capture (capture.viewer) and send it only if answered yes on the
    /// terminal.
    #[arg(long, conflicts_with = "no_confirm")]
    confirm: bool,
    /// With --send: send without asking, even when capture.confirm is set.
    #[arg(long, requires = "send")]
    no_confirm: bool,
    /// Only a rectangle of the screen: X,Y,WIDTH,HEIGHT in pixels.
    #[arg(long, value_name = "X,Y,W,H")]
    crop: Option<String>,
    /// Send an earlier capture of the session (its number) instead of taking one.
    #[arg(long, value_name = "N", conflicts_with_all = ["send", "crop", "confirm"])]
    send_only: Option<u32>,
    /// The folder the PNG is saved in (overrides capture.folder).
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    /// The lease (default: the one of this user's running `airlock open`).
    #[arg(long, value_name = "ID")]
    lease: Option<String>,
    #[command(flatten)]
    terminal: crate::TerminalArgs,
}

/// Exit codes besides 0: usage (asking without a terminal), configuration, broker
/// unreachable, capture or send failed.
const USAGE: u8 = 2;
const CONFIG: u8 = 3;
const BROKER_LOST: u8 = 5;
const FAILED: u8 = 9;

fn api_failure(e: &ApiError) -> (u8, String) {
    let code = match e {
        ApiError::Unreachable { .. } => BROKER_LOST,
        ApiError::TlsSetup { .. } | ApiError::Untrusted { .. } => CONFIG,
        ApiError::Refused { status: 401, .. } => CONFIG,
        _ => FAILED,
    };
    (code, format!("{e}. {}", e.advice()))
}

/// Which lease: `--lease`, else the running `airlock open`'s (on the same broker).
fn lease_of(
    args: &CaptureArgs,
    cfg: &OpenConfig,
) -> Result<(LeaseId, Option<String>), (u8, String)> {
    if let Some(l) = &args.lease {
        let id = LeaseId::parse(l).map_err(|e| (2, format!("--lease: {e}")))?;
        return Ok((id, None));
    }
    let path = session_file::path();
    let s = session_file::read(&path).map_err(|e| (CONFIG, e.to_string()))?;
    if s.broker != cfg.broker.to_string() {
        return Err((
            CONFIG,
            format!(
                "the running airlock open uses the broker {}, this terminal's configuration {}; pass --broker or --lease",
                s.broker, cfg.broker
            ),
        ));
    }
    Ok((s.lease_id, s.patient_id))
}

/// A file name for a capture: the patient (letters, digits, `-`, `_` only), when the
/// capture was taken (UTC), and its number.
fn file_name(patient: Option<&str>, info: &CaptureInfo) -> String {
    let who: String = patient
        .unwrap_or("capture")
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .take(64)
        .collect();
    let when =
        time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(info.taken_at) * 1_000_000)
            .ok()
            .and_then(|t| {
                t.format(time::macros::format_description!(
                    "[year][month][day]T[hour][minute][second]Z"
                ))
                .ok()
            })
            .unwrap_or_else(|| info.taken_at.to_string());
    format!("airlock-{who}-{when}-{}.png", info.capture)
}

/// Saves `png` in `folder` (created if missing) under `name`, whole or not at all: the
/// EHR's importer never sees half a file.
fn save(folder: &Path, name: &str, png: &[u8]) -> std::io::Result<PathBuf> {
    std::fs::create_dir_all(folder)?;
    let path = folder.join(name);
    let tmp = folder.join(format!(".{name}.part"));
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o640)
        .open(&tmp)?;
    f.write_all(png)?;
    f.sync_all()?;
    std::fs::rename(&tmp, &path)?;
    Ok(path)
}

fn print_sent(r: &SendReply) {
    println!(
        "Sent to the PACS {}: capture {} stored for patient {}{} (SOP Instance UID {}, status 0x{:04X}).",
        r.pacs,
        r.capture,
        r.patient_id,
        if r.from_worklist { ", as the worklist has it" } else { "" },
        r.sop_instance_uid,
        r.status
    );
}

/// Runs `airlock capture`; `Err((exit code, message))`.
pub async fn run(args: CaptureArgs) -> Result<(), (u8, String)> {
    let o = Overrides {
        config: args.terminal.config.clone(),
        broker: args.terminal.broker.clone(),
        token_file: args.terminal.token_file.clone(),
        ca_file: args.terminal.ca_file.clone(),
        no_display: true,
        capture_folder: args.out.clone(),
        ..Overrides::default()
    };
    let cfg = OpenConfig::load(&o).map_err(|e| (CONFIG, e.to_string()))?;
    // Whether to ask is settled before anything is taken.
    let plan = if args.send_only.is_some() {
        confirm::Plan::Send
    } else {
        let request = confirm::Request {
            send: args.send,
            confirm: args.confirm,
            no_confirm: args.no_confirm,
            confirm_by_default: cfg.capture_confirm,
        };
        use std::io::IsTerminal as _;
        confirm::plan(
            request,
            cfg.capture_viewer.is_some(),
            std::io::stdin().is_terminal(),
        )
        .map_err(|e| match e {
            confirm::Refusal::NoTerminal => (USAGE, e.to_string()),
            confirm::Refusal::NoViewer => (CONFIG, e.to_string()),
        })?
    };
    let viewer = match (plan, &cfg.capture_viewer) {
        (confirm::Plan::Ask, Some(v)) => {
            let program = v.first().map(String::as_str).unwrap_or_default();
            let found =
                confirm::find_program(program, std::env::var_os("PATH").as_deref())
                    .ok_or_else(|| {
                        (
                            CONFIG,
                            format!(
                                "`capture.viewer`: the program {program:?} is not found{}; install it or configure another viewer (nothing was taken)",
                                if program.contains('/') { "" } else { " on PATH" }
                            ),
                        )
                    })?;
            let mut argv = v.clone();
            if let Some(first) = argv.first_mut() {
                *first = found.to_string_lossy().into_owned();
            }
            Some(argv)
        }
        _ => None,
    };
    let api = BrokerApi::new(&cfg.broker, &cfg.token, &cfg.trust, Duration::from_secs(10))
        .map_err(|e| api_failure(&e))?;
    let (lease, patient) = lease_of(&args, &cfg)?;
    if let Some(n) = args.send_only {
        println!("Sending capture {n} to the PACS...");
        let r = api
            .send_capture(&lease, n)
            .await
            .map_err(|e| api_failure(&e))?;
        print_sent(&r);
        return Ok(());
    }
    let req = CaptureRequest {
        crop: args.crop.clone(),
    };
    let info = api
        .take_capture(&lease, &req)
        .await
        .map_err(|e| api_failure(&e))?;
    let png = api
        .capture_png(&lease, &info)
        .await
        .map_err(|e| api_failure(&e))?;
    let name = file_name(patient.as_deref(), &info);
    let path = save(&cfg.capture_folder, &name, &png).map_err(|e| {
        (
            FAILED,
            format!(
                "capture {} was taken but cannot be saved in {}: {e}; check capture.folder (the broker keeps it: send it with --send-only {})",
                info.capture,
                cfg.capture_folder.display(),
                info.capture
            ),
        )
    })?;
    println!(
        "Capture {} saved: {} ({}×{}, sha256 {}).",
        info.capture,
        path.display(),
        info.width,
        info.height,
        info.sha256
    );
    let patient = info.patient_id.clone().or(patient);
    match (plan, viewer) {
        (confirm::Plan::Keep, _) => return Ok(()),
        (confirm::Plan::Send, _) => {}
        (confirm::Plan::Ask, viewer) => {
            let not_sent = confirm::not_sent(
                info.capture,
                &path,
                utc_minute(info.delete_after).as_deref(),
            );
            let shown = confirm::show(viewer.as_deref().unwrap_or_default(), &path)
                .await
                .map_err(|e| {
                    (
                        FAILED,
                        format!(
                            "{e}; check capture.viewer in the terminal's configuration. {not_sent}"
                        ),
                    )
                })?;
            let answer = confirm::ask(confirm::question(
                info.capture,
                info.pacs.as_deref(),
                patient.as_deref(),
            ))
            .await;
            shown.close().await;
            if !confirm::is_yes(&answer) {
                println!("{not_sent}");
                return Ok(());
            }
        }
    }
    println!("Sending capture {} to the PACS...", info.capture);
    let r = api
        .send_capture(&lease, info.capture)
        .await
        .map_err(|e| api_failure(&e))?;
    print_sent(&r);
    Ok(())
}

/// Unix milliseconds as `YYYY-MM-DD HH:MM UTC`.
fn utc_minute(ms: i64) -> Option<String> {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()?
        .format(time::macros::format_description!(
            "[year]-[month]-[day] [hour]:[minute] UTC"
        ))
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(n: u32) -> CaptureInfo {
        CaptureInfo {
            capture: n,
            sha256: "ab".into(),
            width: 1,
            height: 1,
            taken_at: 1_764_720_000_123,
            delete_after: 0,
            pacs: None,
            patient_id: None,
        }
    }

    #[test]
    fn file_names_carry_a_clean_patient_time_and_number() {
        assert_eq!(
            file_name(Some("P-1/../x y"), &info(3)),
            "airlock-P-1____x_y-20251203T000000Z-3.png"
        );
        assert_eq!(
            file_name(None, &info(1)),
            "airlock-capture-20251203T000000Z-1.png"
        );
    }

    #[test]
    fn the_broker_keeps_it_until_a_minute_in_utc() {
        assert_eq!(
            utc_minute(1_764_720_000_123).as_deref(),
            Some("2025-12-03 00:00 UTC")
        );
    }

    #[test]
    fn saves_whole_files_only() {
        let d = tempfile::tempdir().unwrap();
        let p = save(&d.path().join("ehr"), "a.png", b"png").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"png");
        let names: Vec<_> = std::fs::read_dir(d.path().join("ehr"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("a.png")]);
    }
}
