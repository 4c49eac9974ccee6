//! Key images into the patient's record (issue 14), with the real parts: a private
//! Orthanc as the PACS, dcmtk's `wlmscpfs` as the worklist (a patient whose name has
//! Japanese ideographic and phonetic parts), the broker's demo desktop reading the small
//! sample disc and showing its first image full-screen as a viewer does, and the
//! terminal's `airlock open --patient-id` then `airlock capture --send`. The capture is
//! the desktop's image view (the disc's first image with the disc's patient name, pixel
//! for pixel, not the text console); the object in the PACS has the worklist's patient,
//! the capture attributes, passes `dciodvfy`, holds exactly the desktop's pixels, and
//! nothing of the disc's own identity. The viewer pages from the control port and from
//! the keyboard. Then each failure gives its message, exit code and audit record, and
//! stores nothing: a patient the worklist does not know, the PACS gone, another PACS on
//! its port that rejects the association, a PACS there that speaks only DICOM TLS to a
//! broker configured for plain DICOM, a capture after the lease ended.

use airlock_e2e::{airlock_capture, airlock_open_with, begin_or_skip, broker_with, exit_of};
use airlock_testkit::block_on;
use airlock_testkit::broker::{DicomPeer, Export, TERMINAL_TOKEN};
use airlock_testkit::image::Image;
use airlock_testkit::orthanc::{Orthanc, OrthancOptions, OrthancTls, AE_TITLE as PACS_AE};
use airlock_testkit::process::{read_or_empty, Signal};
use airlock_testkit::terminal_config::TerminalConfig;
use airlock_testkit::worklist::{Entry, Worklist, AE_TITLE as WORKLIST_AE};
use anyhow::{ensure, Context, Result};
use demo_viewer::disc::Entry as DiscImage;
use demo_viewer::psf::Font;
use demo_viewer::view::Position;
use serde_json::{json, Value};
use std::os::unix::fs::PermissionsExt as _;
use std::time::{Duration, Instant};

const NAME: &str = "Yamada^Hanako=山田^花子=やまだ^はなこ";
const PATIENT: &str = "HIS-0042";
const STUDY: &str = "1.2.826.0.1.3680043.10.1.77";
/// The broker's UID root in this test.
const ROOT: &str = "1.2.3.4.5.6.7";
/// What the small sample disc says about its own patient and study (`xtask/src/disc.rs`):
/// none of it may reach the record. Its UIDs are all `2.25.…`.
const DISC_IDENTITY: &[&str] = &[
    "SMALL^SAMPLE",
    "AIRLOCK-0002",
    "AIRLOCK SAMPLE HOSPITAL",
    "A0002",
    "19800202",
    "SYNTHETIC",
    "2.25.",
];

/// The audit records of `action`, oldest first.
fn records(audit: &[Value], action: &str) -> Vec<Value> {
    audit
        .iter()
        .filter(|r| r["action"] == action)
        .cloned()
        .collect()
}

/// A record's details as JSON (the audit API gives them as text).
fn details(r: &Value) -> Value {
    r["details"]
        .as_str()
        .and_then(|s| serde_json::from_str(s).ok())
        .unwrap_or_else(|| r["details"].clone())
}

/// What follows `key` in `out`, up to the next character in `ends`.
fn after<'a>(out: &'a str, key: &str, ends: &[char]) -> Option<&'a str> {
    let rest = out.split(key).nth(1)?;
    Some(rest.split(|c| ends.contains(&c)).next().unwrap_or(rest))
}

/// The size of the box around the pixels where two RGB images of `width` differ.
fn different_pixels(a: &[u8], b: &[u8], width: usize) -> Option<(usize, usize)> {
    let (mut x0, mut y0, mut x1, mut y1) = (usize::MAX, usize::MAX, 0, 0);
    for (i, (p, q)) in a.chunks(3).zip(b.chunks(3)).enumerate() {
        if p != q {
            let (x, y) = (i % width, i / width);
            (x0, y0, x1, y1) = (x0.min(x), y0.min(y), x1.max(x), y1.max(y));
        }
    }
    (x0 != usize::MAX).then(|| (x1 - x0 + 1, y1 - y0 + 1))
}

/// The screen the demo guest's viewer must show for image `index` of `images` (the
/// disc's, read on the host) on drive `dev`: rendered by the viewer's own code, whose
/// decoding, windowing, scaling and text are unit-tested in `demo-viewer`.
fn expected_view(
    images: &[DiscImage],
    index: usize,
    dev: &str,
    font: &Font,
    (width, height): (usize, usize),
) -> Result<Vec<u8>> {
    let data = demo_viewer::disc::read_capped(&images[index].path)?;
    let decoded = demo_viewer::dicom::decode(&data)?;
    let at = Position {
        dev: dev.into(),
        index,
        count: images.len(),
    };
    Ok(demo_viewer::view::image(width, height, font, &decoded, &at).rgb)
}

/// Is `screen` the viewer's image `index`? Keeps both images under
/// `build/test-output/` when not.
fn ensure_view(screen: &Image, expected: &[u8], what: &str) -> Result<()> {
    if screen.rgb == expected {
        return Ok(());
    }
    let keep = airlock_testkit::artifacts::build_dir().join("test-output");
    std::fs::create_dir_all(&keep)?;
    let ppm = |rgb: &[u8]| {
        let mut d = format!("P6\n{} {}\n255\n", screen.width, screen.height).into_bytes();
        d.extend_from_slice(rgb);
        d
    };
    std::fs::write(keep.join("key_images-screen.ppm"), ppm(&screen.rgb))?;
    std::fs::write(keep.join("key_images-expected.ppm"), ppm(expected))?;
    anyhow::bail!(
        "the desktop does not show {what} ({}x{}): they differ in a {:?} box; both in {}",
        screen.width,
        screen.height,
        different_pixels(&screen.rgb, expected, screen.width),
        keep.display()
    )
}

/// The grey levels (R = G = B) of the pixels of `screen` in its middle half.
fn grey_levels(screen: &Image) -> usize {
    let (w, h) = (screen.width, screen.height);
    let mut seen = [false; 256];
    for y in h / 4..3 * h / 4 {
        for x in w / 4..3 * w / 4 {
            let p = &screen.rgb[(y * w + x) * 3..(y * w + x) * 3 + 3];
            if p[0] == p[1] && p[1] == p[2] {
                seen[usize::from(p[0])] = true;
            }
        }
    }
    seen.iter().filter(|s| **s).count()
}

#[test]
fn a_key_image_reaches_the_pacs_for_the_worklist_patient_as_pixels_only() -> Result<()> {
    let run = begin_or_skip!();
    let (a, tmp) = (run.artifacts, run.tmp.path());
    let orthanc = block_on(Orthanc::start())?;
    let worklist = Worklist::start(&[Entry {
        patient_id: PATIENT.into(),
        patient_name: NAME.into(),
        birth_date: "19700101".into(),
        sex: "F".into(),
        accession: "ACC-77".into(),
        study_uid: STUDY.into(),
    }])?;
    let broker = broker_with(|c| {
        c.size = 1;
        c.heartbeat_timeout_s = 3600;
        c.export = Some(Export {
            uid_root: Some(ROOT.into()),
            station: Some("AIRLOCK-TEST".into()),
            pacs: Some(DicomPeer::local(orthanc.dicom_port, PACS_AE)),
            worklist: Some(DicomPeer::local(worklist.port, WORKLIST_AE)),
            ..Export::default()
        });
    })?;
    block_on(broker.wait_clean(1, Duration::from_secs(240)))?;
    let config = TerminalConfig::new(&broker.url).write(tmp)?;
    let runtime = tmp.join("runtime");
    std::fs::create_dir(&runtime)?;
    std::fs::set_permissions(&runtime, std::fs::Permissions::from_mode(0o700))?;
    let ehr = tmp.join("ehr-import");

    // The HIS starts the session with the patient; the desktop reads the disc.
    let serial = broker.serial_log("desk-01");
    let mark = serial.mark();
    let log = tmp.join("open.log");
    let iso = run.small_iso()?;
    let mut open = airlock_open_with(
        &config,
        &[
            "--no-display",
            "--iso",
            &iso,
            "--patient-id",
            PATIENT,
            "--accession",
            "ACC-77",
        ],
        &log,
        |c| {
            c.env("XDG_RUNTIME_DIR", &runtime);
        },
    )?;
    let cd = serial
        .wait_cd(mark, Duration::from_secs(90))
        .with_context(|| format!("airlock open said:\n{}", read_or_empty(&log)))?;
    cd.check(&a.small)?;
    // The disc's images as the viewer finds them, read on the host.
    let disc = tmp.join("disc");
    airlock_testkit::iso::extract(&a.small.iso, "/DICOM", &disc.join("DICOM"))?;
    let images = demo_viewer::disc::find_images(&disc).images;
    ensure!(
        images.len() == 8,
        "{} images on the small disc",
        images.len()
    );
    let font = Font::parse(&airlock_testkit::artifacts::viewer_font()?)?;
    // The desktop's viewer shows the first one.
    let (at, view) = serial.wait_view(cd.end, Duration::from_secs(30))?;
    ensure!(
        (view.images, view.shown, view.skipped) == (8, 1, 0),
        "{view:?}"
    );
    let said = read_or_empty(&log);
    ensure!(
        said.contains(&format!("Patient {PATIENT} (from the HIS)")),
        "{said}"
    );
    let lease = block_on(broker.desktop("desk-01"))?["lease"]
        .as_str()
        .context("the desktop's lease")?
        .to_owned();

    // Wait until the screen stays the same for a second (the viewer has no cursor:
    // nothing on it blinks).
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut last = broker.screendump("desk-01")?;
    loop {
        std::thread::sleep(Duration::from_millis(1000));
        let now = broker.screendump("desk-01")?;
        if now == last {
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "the desktop's screen keeps changing"
        );
        last = now;
    }

    // One action: capture and send.
    let t = Instant::now();
    let (code, out) = airlock_capture(
        &config,
        &runtime,
        &["--send", "--out", &ehr.to_string_lossy()],
    )?;
    let took = t.elapsed();
    ensure!(code == 0, "airlock capture --send: exit {code}\n{out}");
    println!("airlock capture --send ({took:?}):\n{out}");
    // The console does not change after the disc is read: a screendump now shows what
    // the capture took.
    let screen = broker.screendump("desk-01")?;
    let png_path = after(&out, "Capture 1 saved: ", &[' ']).context("no saved path")?;
    ensure!(png_path.starts_with(&*ehr.to_string_lossy()), "{png_path}");
    let png = std::fs::read(png_path)?;
    let img = airlock_capture::RgbImage::from_png(&png)?;
    ensure!(
        (img.width() as usize, img.height() as usize) == (screen.width, screen.height),
        "the capture is {}×{}, the desktop's screen {}×{}",
        img.width(),
        img.height(),
        screen.width,
        screen.height
    );
    let differ = different_pixels(img.pixels(), &screen.rgb, screen.width);
    ensure!(
        differ.is_none(),
        "the capture is not the desktop's screen: they differ in a {differ:?} box"
    );
    // And the screen is the demo guest's image view: the disc's first image with the
    // disc's patient name and ID, exactly as the viewer renders them; not the text
    // console (whose title bar is VGA blue); an image of many grey levels.
    let size = (screen.width, screen.height);
    ensure_view(
        &screen,
        &expected_view(&images, 0, &view.dev, &font, size)?,
        "the disc's first image",
    )?;
    ensure!(
        screen.count_close([0, 0, 0xaa], 0) < 100,
        "the text console's title bar is on the screen"
    );
    let greys = grey_levels(&screen);
    ensure!(greys >= 16, "only {greys} grey levels in the image");
    ensure!(
        images[0].header.patient_name == "SMALL^SAMPLE"
            && images[0].header.patient_id == "AIRLOCK-0002",
        "{:?}",
        images[0].header
    );

    // Paging: `next` on the control port (docs/guest.md, "The image viewer"), then the
    // keyboard's Left arrow; each is answered on the agent port and changes the screen.
    let mut control = broker.control("desk-01")?;
    control.sh("echo next >/run/airlock/view.fifo")?;
    let (at, second) = serial.wait_view(at, Duration::from_secs(30))?;
    ensure!(second.shown == 2, "{second:?}");
    let screen2 = broker.screendump("desk-01")?;
    ensure!(screen2 != screen, "the screen did not change after `next`");
    ensure_view(
        &screen2,
        &expected_view(&images, 1, &view.dev, &font, size)?,
        "the disc's second image",
    )?;
    broker.test_qmp("desk-01")?.cmd(
        "send-key",
        json!({"keys": [{"type": "qcode", "data": "left"}]}),
    )?;
    let (_, back) = serial.wait_view(at, Duration::from_secs(30))?;
    ensure!(back.shown == 1, "{back:?}");
    ensure!(
        broker.screendump("desk-01")? == screen,
        "the first image is not back after the Left arrow"
    );

    // In the PACS: the worklist's patient, the capture's attributes.
    let uid = after(&out, "SOP Instance UID ", &[',', ')']).context("no SOP Instance UID")?;
    let id = block_on(orthanc.find_instance(uid))?
        .with_context(|| format!("{uid} is not in Orthanc:\n{}", orthanc.log()))?;
    let tags = block_on(orthanc.tags(&id))?;
    println!("stored: {tags}");
    for (k, v) in [
        ("PatientID", PATIENT),
        ("PatientName", NAME),
        ("AccessionNumber", "ACC-77"),
        ("PatientBirthDate", "19700101"),
        ("PatientSex", "F"),
        ("StudyInstanceUID", STUDY),
        ("ConversionType", "WSD"),
        ("BurnedInAnnotation", "YES"),
        ("Modality", "OT"),
        ("SOPClassUID", "1.2.840.10008.5.1.4.1.1.7"),
        ("StationName", "AIRLOCK-TEST"),
    ] {
        ensure!(tags[k] == v, "{k} is {}, expected {v:?}", tags[k]);
    }
    ensure!(uid.starts_with(ROOT), "{uid} is not under the site's root");
    // The disc's own identity is nowhere in the object.
    let text = tags.to_string();
    for s in DISC_IDENTITY {
        ensure!(
            !text.contains(s),
            "the stored object carries the disc's {s:?}: {text}"
        );
    }
    // Its pixels are the capture's.
    let raw = block_on(orthanc.frame_raw(&id))?;
    ensure!(
        raw == img.pixels(),
        "the stored pixels differ from the capture"
    );
    // And other people's validator finds no error.
    let file = tmp.join("stored.dcm");
    std::fs::write(&file, block_on(orthanc.file(&id))?)?;
    airlock_testkit::tools::require(&[("dciodvfy", "dicom3tools")])?;
    let v = std::process::Command::new("dciodvfy").arg(&file).output()?;
    let report =
        String::from_utf8_lossy(&v.stderr).into_owned() + &String::from_utf8_lossy(&v.stdout);
    ensure!(
        !report.lines().any(|l| l.starts_with("Error")),
        "dciodvfy reports errors:\n{report}"
    );

    // The audit trail: who, which lease and patient, which image, which object.
    let audit = block_on(broker.audit())?;
    let taken = records(&audit, "capture_taken");
    let sent = records(&audit, "capture_sent");
    ensure!(taken.len() == 1 && sent.len() == 1, "{taken:?} {sent:?}");
    let (dt, ds) = (details(&taken[0]), details(&sent[0]));
    for r in [&taken[0], &sent[0]] {
        ensure!(
            r["lease"] == lease.as_str() && r["user"] == "dr-test" && r["terminal"] == "term-1",
            "{r}"
        );
    }
    let sha = airlock_testkit::sha256_hex(&png);
    ensure!(
        dt["outcome"] == "success" && dt["sha256"] == sha.as_str() && dt["patient_id"] == PATIENT,
        "{dt}"
    );
    ensure!(
        ds["outcome"] == "success"
            && ds["sha256"] == sha.as_str()
            && ds["sop_instance_uid"] == uid
            && ds["patient_id"] == PATIENT
            && ds["from_worklist"] == true,
        "{ds}"
    );
    ensure!(!records(&audit, "patient_context_set").is_empty());

    // A patient the worklist does not know: nothing is sent.
    let r =
        block_on(broker.set_patient(TERMINAL_TOKEN, &lease, &json!({"patient_id": "HIS-0000"})))?;
    ensure!(r.status() == 204, "PUT patient: {}", r.status());
    let count = block_on(orthanc.instance_count())?;
    let (code, out) = airlock_capture(&config, &runtime, &["--send-only", "1"])?;
    ensure!(
        code == 9 && out.contains("no scheduled patient HIS-0000"),
        "exit {code}:\n{out}"
    );
    ensure!(
        block_on(orthanc.instance_count())? == count,
        "something was stored"
    );
    // The PACS gone: unreachable, nothing half-sent.
    block_on(broker.set_patient(TERMINAL_TOKEN, &lease, &json!({"patient_id": PATIENT})))?;
    let pacs_port = orthanc.dicom_port;
    drop(orthanc);
    let (code, out) = airlock_capture(&config, &runtime, &["--send-only", "1"])?;
    ensure!(
        code == 9 && out.contains("cannot reach"),
        "exit {code}:\n{out}"
    );
    // Another PACS on that port, which is not the one configured (another AE title):
    // it rejects the association, stores nothing.
    let other = block_on(Orthanc::start_as("OTHERPACS", Some(pacs_port)))?;
    let (code, out) = airlock_capture(&config, &runtime, &["--send-only", "1"])?;
    ensure!(
        code == 9 && out.contains("rejected the association"),
        "exit {code}:\n{out}"
    );
    ensure!(
        block_on(other.instance_count())? == 0,
        "the other PACS stored something"
    );
    // The PACS on that port now speaks only DICOM TLS, and this broker is configured for
    // plain DICOM: it says what to configure, stores nothing.
    drop(other);
    let t = Instant::now();
    let pki = tmp.join("pacs-tls");
    std::fs::create_dir(&pki)?;
    let site = airlock_testkit::tls::site_ca(&pki, "pacs")?;
    let tls_only = block_on(Orthanc::start_with(OrthancOptions {
        dicom_port: Some(pacs_port),
        tls: Some(OrthancTls {
            cert: site.cert.clone(),
            key: site.key.clone(),
            trusted: site.ca.clone(),
            require_client_cert: false,
        }),
        ..OrthancOptions::default()
    }))?;
    let (code, out) = airlock_capture(&config, &runtime, &["--send-only", "1"])?;
    ensure!(
        code == 9
            && out.contains("without answering the association request")
            && out.contains("tls = true"),
        "exit {code}:\n{out}"
    );
    ensure!(
        block_on(tls_only.instance_count())? == 0,
        "the TLS-only PACS stored something"
    );
    println!("plain DICOM to a TLS-only PACS: {:?}", t.elapsed());
    let audit = block_on(broker.audit())?;
    let failed: Vec<Value> = records(&audit, "capture_sent")
        .iter()
        .map(details)
        .filter(|d| d["outcome"] == "failed")
        .collect();
    ensure!(failed.len() == 4, "{failed:?}");
    ensure!(
        failed[0]["error"]
            .as_str()
            .is_some_and(|e| e.contains("HIS-0000")),
        "{failed:?}"
    );
    ensure!(
        failed[1]["error"]
            .as_str()
            .is_some_and(|e| e.contains("cannot reach")),
        "{failed:?}"
    );
    ensure!(
        failed[2]["error"]
            .as_str()
            .is_some_and(|e| e.contains("rejected the association")),
        "{failed:?}"
    );
    ensure!(
        failed[3]["error"]
            .as_str()
            .is_some_and(|e| e.contains("without answering")),
        "{failed:?}"
    );

    // After the session: the lease has ended, a capture is refused.
    open.signal(Signal::TERM);
    let (code, said) = exit_of(&mut open, &log, Duration::from_secs(30))?;
    ensure!(code == 0, "airlock open: exit {code}\n{said}");
    let (code, out) = airlock_capture(&config, &runtime, &["--lease", &lease])?;
    ensure!(
        code == 9 && out.contains("no active lease"),
        "exit {code}:\n{out}"
    );
    let (code, out) = airlock_capture(&config, &runtime, &[])?;
    ensure!(
        code == 3 && out.contains("no airlock open session"),
        "exit {code}:\n{out}"
    );
    Ok(())
}
