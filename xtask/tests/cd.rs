//! CD events of the demo guest with a hot-plugged USB CD drive (QEMU
//! usb-bot + scsi-cd, as a forwarded terminal drive appears), checked
//! against the sample discs' .files.json. (Skipped only when
//! qemu-system-x86_64 is not installed.)

mod common;

use common::{artifacts, garbage_image, one_vm_at_a_time, Vm};
use std::time::Duration;

const T: Duration = Duration::from_secs(30);

#[test]
fn hotplug_insert_eject_swap_unplug() -> anyhow::Result<()> {
    let Some(a) = artifacts() else { return Ok(()) };
    let _vm_slot = one_vm_at_a_time();
    let mut vm = Vm::boot(a, true)?;
    vm.wait_ready()?;

    // An empty drive: no CD lines.
    let m = vm.mark();
    vm.plug_cd_drive("cd0", None)?;
    std::thread::sleep(Duration::from_secs(3));
    assert!(
        vm.sh("ls /sys/block")?.contains("sr0"),
        "no sr0 after hot-plug"
    );
    assert!(vm
        .lines_since(m)
        .iter()
        .all(|l| !l.starts_with("AIRLOCK-CD")));

    // Insert the small disc.
    vm.insert("cd0", &a.small.iso)?;
    let r = vm.wait_cd(m, T)?;
    assert_eq!(r.dev, "sr0");
    r.assert_matches(&a.small);
    assert!(vm
        .sh("cat /proc/mounts")?
        .contains("/dev/sr0 /media/sr0 iso9660 ro"));

    // Eject: removed and unmounted.
    let m = r.end;
    vm.eject("cd0")?;
    vm.wait_line(m, T, "AIRLOCK-CD-REMOVED", |l| {
        l == "AIRLOCK-CD-REMOVED dev=sr0"
    })?;
    assert!(!vm.sh("cat /proc/mounts")?.contains("sr0"));

    // The big disc in the same drive.
    let m = vm.mark();
    vm.insert("cd0", &a.big.iso)?;
    let r = vm.wait_cd(m, Duration::from_secs(50))?;
    r.assert_matches(&a.big);
    eprintln!(
        "big disc read in {} s (guest's figure)",
        r.summary.as_ref().map_or(0.0, |s| s.seconds)
    );

    // Swap straight to the small disc (no eject in between): the old disc
    // is reported removed, the new one inserted.
    let m = vm.mark();
    vm.insert("cd0", &a.small.iso)?;
    vm.wait_line(m, T, "AIRLOCK-CD-REMOVED", |l| {
        l == "AIRLOCK-CD-REMOVED dev=sr0"
    })?;
    vm.wait_cd(m, T)?.assert_matches(&a.small);

    // Unplug the drive with the disc in it.
    let m = vm.mark();
    vm.unplug_cd_drive("cd0")?;
    vm.wait_line(m, T, "AIRLOCK-CD-REMOVED", |l| {
        l == "AIRLOCK-CD-REMOVED dev=sr0"
    })?;
    assert!(!vm.sh("cat /proc/mounts")?.contains("sr0"));
    Ok(())
}

#[test]
fn unreadable_disc_then_a_new_drive() -> anyhow::Result<()> {
    let Some(a) = artifacts() else { return Ok(()) };
    let _vm_slot = one_vm_at_a_time();
    let mut vm = Vm::boot(a, false)?;
    vm.wait_ready()?;

    // A medium that is not ISO 9660.
    let garbage = garbage_image(vm.dir())?;
    let m = vm.mark();
    vm.plug_cd_drive("cd0", Some(&garbage))?;
    let r = vm.wait_cd(m, T)?;
    assert!(!r.inserted);
    assert_eq!(
        (r.dev.as_str(), r.error.as_deref()),
        ("sr0", Some("mount-failed"))
    );
    let m = r.end;
    vm.eject("cd0")?;
    vm.wait_line(m, T, "AIRLOCK-CD-REMOVED", |l| {
        l == "AIRLOCK-CD-REMOVED dev=sr0"
    })?;
    vm.unplug_cd_drive("cd0")?;
    std::thread::sleep(Duration::from_secs(2));

    // A second drive, plugged with a disc in it.
    let m = vm.mark();
    vm.plug_cd_drive("cd1", Some(&a.small.iso))?;
    let r = vm.wait_cd(m, T)?;
    r.assert_matches(&a.small);
    assert!(r.dev.starts_with("sr"), "{}", r.dev);
    Ok(())
}
