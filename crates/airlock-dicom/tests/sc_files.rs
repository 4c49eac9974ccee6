//! Secondary Capture objects written to files and checked by other people's tools:
//! `dciodvfy` (Debian's dicom3tools) validates the IOD, `dcmdump` (dcmtk) reads the
//! patient's name back in both character sets. Missing tools fail the test, naming the
//! package.
#![allow(clippy::unwrap_used)]

use airlock_dicom::sc::{secondary_capture, Capture, Charset, Equipment, Rgb, UidRoot};
use airlock_dicom::PatientContext;
use std::process::Command;

const NAME: &str = "Yamada^Hanako=山田^花子=やまだ^はなこ";

fn tool(name: &str, package: &str) -> Command {
    let found = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(name).is_file()))
        .unwrap_or(false);
    assert!(
        found,
        "missing {name}: apt-get install {package} (scripts/setup.sh does)"
    );
    Command::new(name)
}

fn capture_file(charset: Charset, dir: &std::path::Path) -> (std::path::PathBuf, String, Rgb) {
    let patient = PatientContext::new(
        "HIS-0042",
        Some("HOSP"),
        Some(NAME),
        Some("19700101"),
        Some("F"),
        Some("ACC-77"),
        None,
    )
    .unwrap();
    let (w, h) = (64u16, 48u16);
    let pixels: Vec<u8> = (0..usize::from(w) * usize::from(h) * 3)
        .map(|i| (i * 7 % 251) as u8)
        .collect();
    let image = Rgb {
        width: w,
        height: h,
        pixels,
    };
    let root = UidRoot::new(Some("1.2.826.0.1.3680043.10")).unwrap();
    let eq = Equipment {
        version: "0.1.0".into(),
        station: Some("AIRLOCK1".into()),
    };
    let taken_at = time::OffsetDateTime::from_unix_timestamp(1_796_300_000).unwrap();
    let sc = secondary_capture(&Capture {
        patient: &patient,
        image: &image,
        taken_at,
        charset,
        root: &root,
        equipment: &eq,
        series_number: 9001,
        instance_number: 1,
    })
    .unwrap();
    let path = dir.join(format!("{charset:?}.dcm"));
    sc.object.write_to_file(&path).unwrap();
    (path, sc.sop_instance_uid, image)
}

#[test]
fn the_object_passes_dciodvfy_and_keeps_the_japanese_name_in_both_charsets() {
    let dir = tempfile::tempdir().unwrap();
    for charset in [Charset::Utf8, Charset::Iso2022Ir87] {
        let (path, uid, image) = capture_file(charset, dir.path());
        let out = tool("dciodvfy", "dicom3tools").arg(&path).output().unwrap();
        let report = String::from_utf8_lossy(&out.stderr).into_owned()
            + &String::from_utf8_lossy(&out.stdout);
        eprintln!("dciodvfy ({charset:?}):\n{report}");
        assert!(
            !report.lines().any(|l| l.starts_with("Error")),
            "dciodvfy reports errors for {charset:?}:\n{report}"
        );
        let dump = tool("dcmdump", "dcmtk")
            .args([
                "+P",
                "ConversionType",
                "+P",
                "BurnedInAnnotation",
                "+P",
                "Modality",
            ])
            .arg(&path)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&dump.stdout);
        assert!(
            text.contains("[WSD]") && text.contains("[YES]") && text.contains("[OT]"),
            "{text}{}",
            String::from_utf8_lossy(&dump.stderr)
        );
        // Another decoder (pydicom, which knows ISO 2022 IR 87) reads the name back whole.
        let py = std::process::Command::new("/usr/bin/python3")
            .args([
                "-c",
                "import pydicom, sys; ds = pydicom.dcmread(sys.argv[1]); print(ds.SpecificCharacterSet); print(str(ds.PatientName))",
            ])
            .arg(&path)
            .output()
            .expect("python3 (Debian: python3-pydicom)");
        let out = String::from_utf8_lossy(&py.stdout);
        assert!(
            py.status.success(),
            "pydicom (apt-get install python3-pydicom): {}",
            String::from_utf8_lossy(&py.stderr)
        );
        eprintln!("pydicom ({charset:?}): {out}");
        assert_eq!(out.lines().last(), Some(NAME), "{charset:?}: {out}");
        // Read back: the pixels and UIDs are what was written.
        let back = dicom_object::open_file(&path).unwrap();
        let px = back
            .element(dicom_dictionary_std::tags::PIXEL_DATA)
            .unwrap()
            .to_bytes()
            .unwrap();
        assert_eq!(&px[..image.pixels.len()], &image.pixels[..]);
        let sop = back
            .element(dicom_dictionary_std::tags::SOP_INSTANCE_UID)
            .unwrap()
            .to_str()
            .unwrap();
        assert_eq!(sop.trim_end_matches('\0'), uid);
        assert!(uid.starts_with("1.2.826.0.1.3680043.10.") && uid.len() <= 64);
    }
}
