//! The emulated CD-ROM against a real QEMU `usb-redir` device and the demo
//! guest's real Linux USB stack (TCG): the guest must read every file of
//! the disc and report the same SHA-256 as computed here; then eject, insert
//! another image, and check the guest follows.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use airlock_usb::emulated::EmulatedCd;
use airlock_usb::{Phase, SessionEnd};
use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn emulated_cd_is_read_by_the_guest_then_swapped() {
    if !have_qemu() {
        eprintln!("skipping: qemu-system-x86_64 is not installed");
        return;
    }
    let t0 = Instant::now();
    let tmp = tempfile::tempdir().unwrap();

    // First disc: the xtask sample if present, else one made here.
    let first = sample_disc("sample-small").unwrap_or_else(|| {
        make_iso(
            tmp.path(),
            "first",
            &[
                ("README.TXT", b"first test disc\n".to_vec()),
                ("DICOM/IMG00001", noise(1, 700_000)),
                ("DICOMDIR", noise(2, 3000)),
            ],
        )
    });
    // Second disc: always made here (names with spaces, sort order traps).
    let second = make_iso(
        tmp.path(),
        "second",
        &[
            ("a-b/x", noise(3, 1234)),
            ("a/x", noise(4, 200_000)),
            ("VIEWER/Viewer Data/part 1.bin", noise(5, 300_001)),
            ("zero.bin", Vec::new()),
            ("NOTES.TXT", b"second disc\n".to_vec()),
        ],
    );

    let mut vm = Vm::start(tmp.path());
    vm.wait_line("AIRLOCK-READY boot", 0, Duration::from_secs(45))
        .await;
    eprintln!("guest ready after {:.1}s", vm.elapsed());

    let stream = tokio::net::UnixStream::connect(&vm.usbredir_sock)
        .await
        .expect("connect to QEMU's usb-redir socket");
    let cd = EmulatedCd::with_iso(&first.iso).unwrap();
    let handle = cd.handle();
    let session = tokio::spawn(cd.run(stream));

    let (i, line) = vm
        .wait_line("AIRLOCK-CD dev=", 0, Duration::from_secs(45))
        .await;
    eprintln!("{line} (t={:.1}s)", vm.elapsed());
    let (files, bytes, sha) = parse_cd_line(&line);
    assert_eq!(
        (files, bytes, sha.as_str()),
        (first.files, first.bytes, first.sha256.as_str()),
        "guest report for {}",
        first.iso.display()
    );
    let p = handle.progress().borrow().clone();
    assert_eq!(p.phase, Phase::Configured);
    assert!(p.peer.as_ref().unwrap().version.contains("qemu"), "{p:?}");
    assert!(p.counters.bytes_to_guest >= first.bytes, "{p:?}");

    // Eject: the guest reports the removal.
    assert!(handle.eject().await.unwrap());
    let (j, _) = vm
        .wait_line("AIRLOCK-CD-REMOVED dev=sr0", i + 1, Duration::from_secs(20))
        .await;

    // Insert the second image: read again, new hash.
    handle.insert_iso(&second.iso).await.unwrap().unwrap();
    let (k, line) = vm
        .wait_line("AIRLOCK-CD dev=", j + 1, Duration::from_secs(30))
        .await;
    eprintln!("{line} (t={:.1}s)", vm.elapsed());
    let (files, bytes, sha) = parse_cd_line(&line);
    assert_eq!(
        (files, bytes, sha.as_str()),
        (second.files, second.bytes, second.sha256.as_str())
    );
    assert!(
        vm.lines()[j..k]
            .iter()
            .any(|l| l.starts_with("AIRLOCK-CD-INSERTED dev=sr0")),
        "{:#?}",
        vm.lines()
    );

    // Unplug: the session ends cleanly and the guest sees the drive go.
    handle.unplug().await.unwrap();
    let summary = tokio::time::timeout(Duration::from_secs(10), session)
        .await
        .expect("session ends after unplug")
        .unwrap()
        .unwrap();
    assert_eq!(summary.end, SessionEnd::Unplugged);
    vm.wait_line("AIRLOCK-CD-REMOVED dev=sr0", k + 1, Duration::from_secs(20))
        .await;
    eprintln!("done in {:.1}s", t0.elapsed().as_secs_f64());
}
