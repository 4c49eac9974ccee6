//! The emulated CD-ROM against a real QEMU `usb-redir` device and the demo
//! guest's real Linux USB stack (TCG): the guest must read every file of
//! the disc and report the same SHA-256 as computed here; then eject, insert
//! another image, and check the guest follows.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use airlock_testkit::artifacts::artifacts;
use airlock_testkit::guest_vm::GuestVm;
use airlock_testkit::iso::{filler, make_iso};
use airlock_usb::emulated::EmulatedCd;
use airlock_usb::{Phase, SessionEnd};
use tokio::task::block_in_place;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn emulated_cd_is_read_by_the_guest_then_swapped() -> anyhow::Result<()> {
    if !airlock_testkit::tools::vm_test() {
        return Ok(());
    }
    let t0 = Instant::now();
    let tmp = tempfile::tempdir()?;
    let a = artifacts()?;
    // First disc: the small sample disc. Second disc: made here (names with spaces,
    // sort order traps, an empty file).
    let first = &a.small;
    let second = make_iso(
        tmp.path(),
        "second",
        "SECOND",
        &[
            ("a-b/x", filler(3, 1234)),
            ("a/x", filler(4, 200_000)),
            ("VIEWER/Viewer Data/part 1.bin", filler(5, 300_001)),
            ("zero.bin", Vec::new()),
            ("NOTES.TXT", b"second disc\n".to_vec()),
        ],
    )?;

    let vm = block_in_place(|| GuestVm::with_usbredir(&a.guest))?;
    eprintln!("guest ready after {:.1}s", vm.elapsed());

    let stream = tokio::net::UnixStream::connect(vm.usbredir_sock()).await?;
    let cd = EmulatedCd::with_iso(&first.iso).unwrap();
    let handle = cd.handle();
    let session = tokio::spawn(cd.run(stream));

    let r = block_in_place(|| vm.serial.wait_cd(0, Duration::from_secs(45)))?;
    eprintln!("first disc read (t={:.1}s)", vm.elapsed());
    r.check(first)?;
    let p = handle.progress().borrow().clone();
    assert_eq!(p.phase, Phase::Configured);
    assert!(p.peer.as_ref().unwrap().version.contains("qemu"), "{p:?}");
    assert!(p.counters.bytes_to_guest >= first.bytes, "{p:?}");

    // Eject: the guest reports the removal.
    assert!(handle.eject().await.unwrap());
    let j = block_in_place(|| vm.serial.wait_removed(r.end, Duration::from_secs(20)))?;

    // Insert the second image: read again, new hash.
    handle.insert_iso(&second.iso).await.unwrap().unwrap();
    let r2 = block_in_place(|| vm.serial.wait_cd(j, Duration::from_secs(30)))?;
    eprintln!("second disc read (t={:.1}s)", vm.elapsed());
    r2.check(&second)?;
    assert_eq!(r2.dev, "sr0");

    // Unplug: the session ends cleanly and the guest sees the drive go.
    handle.unplug().await.unwrap();
    let summary = tokio::time::timeout(Duration::from_secs(10), session)
        .await
        .expect("session ends after unplug")
        .unwrap()
        .unwrap();
    assert_eq!(summary.end, SessionEnd::Unplugged);
    block_in_place(|| vm.serial.wait_removed(r2.end, Duration::from_secs(20)))?;
    eprintln!("done in {:.1}s", t0.elapsed().as_secs_f64());
    Ok(())
}
