//! `cargo xtask bench export`: key images (issue 14), as the clinician waits for them.
//!
//! One broker (release build, one desktop of the demo guest under TCG, `template_clone`)
//! with a private Orthanc as its PACS. Each run is a fresh lease with the HIS's patient
//! set, the small sample disc forwarded as an emulated drive (`airlock usb forward
//! --iso`), and:
//!
//! - **disc → listed**: from starting the forwarder until the desktop's `AIRLOCK-CD`
//!   report (docs/guest.md);
//! - **disc → first image**: until a QMP screendump of the desktop (the test monitor,
//!   polled every 100 ms) shows an image: at least [`IMAGE_COLOURS`] distinct colours,
//!   which the text console (at most the 16 VGA colours) never has (the small disc's
//!   first image, in its own wide window, shows 33);
//! - **capture**: `POST /v1/leases/{id}/captures` until its answer (screendump, strict
//!   parse, PNG, stored, audited);
//! - **send**: `POST …/captures/{n}/send` until the PACS's answer came back (Secondary
//!   Capture built, C-STORE to Orthanc, audited); the instance is then looked up in
//!   Orthanc.
//!
//! Medians over `--runs` (default 5), and the ratios of one run's medians: first image /
//! listed, send / capture.
use crate::bench_broker::stats::median;
use crate::util;
use airlock_testkit::artifacts::{artifacts, host_binaries};
use airlock_testkit::broker::{DicomPeer, Export, TERMINAL_TOKEN};
use airlock_testkit::orthanc::{Orthanc, AE_TITLE};
use airlock_testkit::{block_on, Broker, BrokerConfig};
use anyhow::{ensure, Context, Result};
use serde::Serialize;
use std::time::{Duration, Instant};

/// Distinct colours that make a screen an image rather than the text console.
pub const IMAGE_COLOURS: usize = 24;

/// `cargo xtask bench export` options.
#[derive(Debug, Clone, clap::Args)]
pub struct ExportArgs {
    /// Sessions measured (the median is reported).
    #[arg(long, default_value_t = 5)]
    pub runs: usize,
    #[command(flatten)]
    pub common: util::BenchCommon,
}

/// One session's times, in seconds.
#[derive(Debug, Clone, Serialize)]
struct Sample {
    listed_s: f64,
    /// `None`: no image within the time allowed (a guest without a viewer).
    first_image_s: Option<f64>,
    capture_s: f64,
    send_s: f64,
    sop_instance_uid: String,
}

#[derive(Debug, Serialize)]
struct Results {
    command: String,
    started_utc: String,
    disc: String,
    samples: Vec<Sample>,
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

/// Runs the benchmark.
pub fn run(args: &ExportArgs) -> Result<()> {
    ensure!(args.runs >= 1, "--runs must be at least 1");
    airlock_testkit::process::stop_everything_on_signal();
    let started_utc = util::utc_now("%Y-%m-%d %H:%M UTC");
    let a = artifacts()?;
    let airlockd = args.common.airlockd(|| {
        println!("building airlockd and airlock (cargo build --release)...");
        Ok(host_binaries(true)?.airlockd())
    })?;
    let airlock = host_binaries(true)?.airlock();
    let orthanc = block_on(Orthanc::start())?;
    let mut cfg = BrokerConfig::new(&a.guest);
    cfg.size = 1;
    cfg.heartbeat_timeout_s = 3600;
    cfg.export = Some(Export {
        pacs: Some(DicomPeer::local(orthanc.dicom_port, AE_TITLE)),
        ..Export::default()
    });
    let broker = Broker::start(&airlockd, cfg)?;
    block_on(broker.wait_clean(1, Duration::from_secs(240)))?;
    let tmp = tempfile::tempdir()?;
    let mut samples = Vec::new();
    for run in 1..=args.runs {
        print!("session {run}/{}: ", args.runs);
        let s = session(&broker, &orthanc, &airlock, &a.small.iso, tmp.path(), run)?;
        println!(
            "listed {:.2} s, first image {}, capture {:.3} s, send {:.3} s",
            s.listed_s,
            s.first_image_s
                .map_or("none".to_owned(), |v| format!("{v:.2} s")),
            s.capture_s,
            s.send_s
        );
        samples.push(s);
    }
    let med = |f: &dyn Fn(&Sample) -> f64| median(&samples.iter().map(f).collect::<Vec<_>>());
    let (listed, capture, send) = (
        med(&|s| s.listed_s),
        med(&|s| s.capture_s),
        med(&|s| s.send_s),
    );
    let images: Vec<f64> = samples.iter().filter_map(|s| s.first_image_s).collect();
    println!("\n| medians over {} sessions | seconds |", samples.len());
    println!("|---|---:|");
    println!("| disc → listed (AIRLOCK-CD) | {listed:.2} |");
    if images.len() == samples.len() {
        let first = median(&images);
        println!("| disc → first image on the screen | {first:.2} |");
        println!("| capture (screendump → PNG stored) | {capture:.3} |");
        println!("| send (Secondary Capture → stored in the PACS) | {send:.3} |");
        println!("| capture → stored in the PACS | {:.3} |", capture + send);
        println!(
            "\nratios of this run: first image / listed {:.2}; send / capture {:.2}",
            first / listed,
            send / capture
        );
    } else {
        println!(
            "| disc → first image on the screen | no image in {} of {} sessions |",
            samples.len() - images.len(),
            samples.len()
        );
        println!("| capture (screendump → PNG stored) | {capture:.3} |");
        println!("| send (Secondary Capture → stored in the PACS) | {send:.3} |");
        println!("| capture → stored in the PACS | {:.3} |", capture + send);
        println!("\nratio of this run: send / capture {:.2}", send / capture);
    }
    let results = Results {
        command: format!("cargo xtask bench export --runs {}", args.runs),
        started_utc,
        disc: a.small.iso.display().to_string(),
        samples,
    };
    let stamp = util::utc_now("%Y%m%dT%H%M%SZ");
    let path = args
        .common
        .save(&format!("export-{stamp}.json"), &results)?;
    println!("raw samples: {}", path.display());
    Ok(())
}

/// One measured session on a fresh lease.
fn session(
    broker: &Broker,
    orthanc: &Orthanc,
    airlock: &std::path::Path,
    iso: &std::path::Path,
    tmp: &std::path::Path,
    run: usize,
) -> Result<Sample> {
    let lease = block_on(broker.acquire_ok("dr-bench"))?;
    let desk = lease.desktop_id.to_string();
    let id = lease.lease_id.to_string();
    let r = block_on(broker.set_patient(
        TERMINAL_TOKEN,
        &id,
        &serde_json::json!({"patient_id": "BENCH-0001", "name": "Bench^Patient"}),
    ))?;
    ensure!(r.status() == 204, "PUT patient: {}", r.status());
    let serial = broker.serial_log(&desk);
    let mark = serial.mark();
    let log = tmp.join(format!("forward-{run}.log"));
    let t0 = Instant::now();
    let mut fwd = broker.forward_iso(airlock, &id, iso, &log)?;
    let (mut listed, mut first_image) = (None, None);
    let deadline = t0 + Duration::from_secs(120);
    while listed.is_none() || first_image.is_none() {
        if listed.is_none()
            && serial
                .lines_since(mark)
                .iter()
                .any(|l| l.starts_with("AIRLOCK-CD ") || l.starts_with("AIRLOCK-CD-ERROR"))
        {
            listed = Some(t0.elapsed());
        }
        if first_image.is_none() && broker.screendump(&desk)?.colours() >= IMAGE_COLOURS {
            first_image = Some(t0.elapsed());
        }
        // A guest without a viewer: give up on the image 30 s after the listing.
        if let Some(l) = listed {
            if first_image.is_none() && t0.elapsed() > l + Duration::from_secs(30) {
                break;
            }
        }
        ensure!(
            Instant::now() < deadline,
            "the desktop did not read the disc within 120 s; forwarder: {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let listed = listed.context("no AIRLOCK-CD report")?;

    let t = Instant::now();
    let r = block_on(broker.take_capture(TERMINAL_TOKEN, &id, None))?;
    let capture = t.elapsed();
    ensure!(r.status() == 201, "capture: {}", r.status());
    let info: serde_json::Value = block_on(r.json())?;
    let n = u32::try_from(info["capture"].as_u64().context("no capture number")?)?;
    let t = Instant::now();
    let r = block_on(broker.send_capture(TERMINAL_TOKEN, &id, n))?;
    let send = t.elapsed();
    let status = r.status();
    let reply: serde_json::Value = block_on(r.json())?;
    ensure!(status == 200, "send: {status} {reply}");
    let uid = reply["sop_instance_uid"]
        .as_str()
        .context("no SOP Instance UID")?
        .to_owned();
    ensure!(
        block_on(orthanc.find_instance(&uid))?.is_some(),
        "{uid} is not in the PACS"
    );

    fwd.signal(rustix::process::Signal::TERM);
    let _ = fwd.wait_timeout(Duration::from_secs(20));
    let resets = block_on(broker.desktop(&desk))?["resets"]
        .as_u64()
        .unwrap_or(0);
    ensure!(
        block_on(broker.release(TERMINAL_TOKEN, &id))? == 202,
        "release"
    );
    block_on(broker.wait_desktop(&desk, Duration::from_secs(120), |d| {
        d["state"] == "clean" && d["resets"].as_u64() == Some(resets + 1)
    }))?;
    Ok(Sample {
        listed_s: secs(listed),
        first_image_s: first_image.map(secs),
        capture_s: secs(capture),
        send_s: secs(send),
        sop_instance_uid: uid,
    })
}
