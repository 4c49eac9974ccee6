//! The demo guest's serial contract (docs/guest.md), checked against the guest image
//! `cargo xtask guest` builds, with the kit's own readers: the agent port (ping, clock,
//! errors, no echo), the control shell, the golden disk, and the CD events of hot-plugged
//! USB CD drives (QEMU usb-bot + scsi-cd, as a forwarded terminal drive appears),
//! checked against the sample discs' .files.json, and the image viewer's lines and
//! paging command.

use airlock_testkit::artifacts::{artifacts, Artifacts, GOLDEN_HEADER};
use airlock_testkit::guest_vm::{AgentPort, GuestVm, GuestVmOptions};
use airlock_testkit::iso::garbage_image;
use airlock_testkit::tools;
use std::time::{Duration, Instant};

const T: Duration = Duration::from_secs(30);

/// The guest with its agent port connected (so tests can send agent commands), ready;
/// `None` when VM tests are skipped.
fn boot(control: bool) -> anyhow::Result<Option<(&'static Artifacts, GuestVm)>> {
    if !tools::vm_test() {
        return Ok(None);
    }
    let a = artifacts()?;
    let mut vm = GuestVm::boot(
        &a.guest,
        &GuestVmOptions {
            control,
            agent: AgentPort::Connect,
            ..GuestVmOptions::default()
        },
    )?;
    vm.wait_ready(Duration::from_secs(60))?;
    Ok(Some((a, vm)))
}

#[test]
fn agent_port_and_control_shell() -> anyhow::Result<()> {
    let started = Instant::now();
    let Some((a, mut vm)) = boot(true)? else {
        return Ok(());
    };
    eprintln!("ready {:?} after starting QEMU", started.elapsed());

    // Ping: the nonce comes back; a CR before the LF is tolerated.
    let m = vm.serial.mark();
    vm.serial.send("airlock-ping n0nce-42\r")?;
    vm.serial.wait_exact(m, T, "AIRLOCK-READY n0nce-42")?;

    // Set the clock (in the guest only).
    let m = vm.serial.mark();
    vm.serial.send("airlock-settime 1700000000")?;
    vm.serial.wait_exact(m, T, "AIRLOCK-TIME-SET 1700000000")?;
    let now: u64 = vm.control.sh("date +%s")?.trim().parse()?;
    assert!(
        (1_700_000_000..1_700_000_100).contains(&now),
        "guest clock {now}"
    );
    let m = vm.serial.mark();
    vm.serial.send("airlock-settime soon")?;
    vm.serial.wait_exact(m, T, "AIRLOCK-TIME-ERROR soon")?;
    let m = vm.serial.mark();
    vm.serial.send("reboot-please")?;
    vm.serial
        .wait_exact(m, T, "AIRLOCK-ERROR unknown-command reboot-please")?;
    // Nothing we sent was echoed back on the agent port.
    assert!(
        vm.serial
            .lines_since(0)
            .iter()
            .all(|l| !l.starts_with("airlock-")),
        "agent port echoes input: {:?}",
        vm.serial.lines_since(0)
    );

    // Control shell: output and exit status, no echo of the command.
    let (out, status) = vm.control.run("echo hello; uname -r; false", T)?;
    assert_eq!(status, 1);
    assert_eq!(out, format!("hello\n{}\n", a.guest.kernel_version));
    assert_eq!(vm.control.sh("id -u")?, "0\n");
    // A line that does not parse: an error message and status 2.
    let (out, status) = vm.control.run("if then fi", T)?;
    assert_eq!(status, 2);
    assert!(out.contains("syntax error"), "{out:?}");
    // State persists between lines; commands cannot read the channel.
    vm.control.sh("cd /tmp; X=5")?;
    assert_eq!(vm.control.sh("echo \"$PWD $X\"; cat")?, "/tmp 5\n");
    // `exit` ends the shell; a new one starts (input sent meanwhile waits).
    vm.control.send_raw("exit\n")?;
    assert_eq!(vm.control.sh("echo again; pwd")?, "again\n/\n");

    // The writable disk is the golden one, unmounted and writable.
    let head = vm
        .control
        .sh(&format!("head -c {} /dev/vda", GOLDEN_HEADER.len()))?;
    assert_eq!(head.as_bytes(), GOLDEN_HEADER);
    assert!(!vm.control.sh("cat /proc/mounts")?.contains("vda"));
    assert_eq!(vm.control.sh("cat /sys/block/vda/ro")?, "0\n");

    // Malware markers, in RAM and on the disk, as the reset tests plant them.
    vm.control
        .sh("echo MARKER-RAM > /root/marker && echo MARKER-TMP > /tmp/marker")?;
    vm.control.sh(
        "printf MARKER-DISK | dd of=/dev/vda bs=512 seek=2048 conv=notrunc 2>/dev/null && sync",
    )?;
    assert_eq!(
        vm.control.sh("cat /root/marker /tmp/marker; dd if=/dev/vda bs=512 skip=2048 count=1 2>/dev/null | head -c 11")?,
        "MARKER-RAM\nMARKER-TMP\nMARKER-DISK"
    );
    // No network interface but loopback.
    assert_eq!(vm.control.sh("ls /sys/class/net")?.trim(), "lo");
    Ok(())
}

#[test]
fn no_control_shell_without_the_flag() -> anyhow::Result<()> {
    let Some((_, mut vm)) = boot(false)? else {
        return Ok(());
    };
    vm.serial.ping("p1", T)?;
    vm.control.send_raw("echo __DONE_should_not_run $?\n")?;
    std::thread::sleep(Duration::from_secs(3));
    let out = vm.control.take();
    assert!(out.is_empty(), "ttyS1 answered: {:?}", out);
    Ok(())
}

#[test]
fn hotplug_insert_eject_swap_unplug() -> anyhow::Result<()> {
    let Some((a, mut vm)) = boot(true)? else {
        return Ok(());
    };

    // An empty drive: no CD lines.
    let m = vm.serial.mark();
    vm.plug_cd_drive("cd0", None)?;
    std::thread::sleep(Duration::from_secs(3));
    assert!(
        vm.control.sh("ls /sys/block")?.contains("sr0"),
        "no sr0 after hot-plug"
    );
    assert!(vm
        .serial
        .lines_since(m)
        .iter()
        .all(|l| !l.starts_with("AIRLOCK-CD")));

    // Insert the small disc.
    vm.insert("cd0", &a.small.iso)?;
    let r = vm.serial.wait_cd(m, T)?;
    assert_eq!(r.dev, "sr0");
    r.check(&a.small)?;
    assert!(vm
        .control
        .sh("cat /proc/mounts")?
        .contains("/dev/sr0 /media/sr0 iso9660 ro"));

    // The image viewer shows its first image on its own VT, and pages on the agent's
    // command (docs/guest.md, "The image viewer").
    let (m, v) = vm.serial.wait_view(r.end, T)?;
    assert_eq!(
        (v.dev.as_str(), v.images, v.shown, v.skipped),
        ("sr0", 8, 1, 0)
    );
    assert_eq!(
        vm.control.sh("cat /sys/class/tty/tty0/active")?.trim(),
        "tty2"
    );
    vm.serial.send("airlock-view next")?;
    let (m, v) = vm.serial.wait_view(m, T)?;
    assert_eq!(v.shown, 2);
    vm.serial.send("airlock-view sideways")?;
    let m = vm
        .serial
        .wait_exact(m, T, "AIRLOCK-VIEW-ERROR bad-command sideways")?;

    // Eject: removed and unmounted; the viewer gone, the text console back.
    vm.eject("cd0")?;
    let m = vm.serial.wait_exact(m, T, "AIRLOCK-CD-REMOVED dev=sr0")?;
    assert!(!vm.control.sh("cat /proc/mounts")?.contains("sr0"));
    assert_eq!(
        vm.control.sh("cat /sys/class/tty/tty0/active")?.trim(),
        "tty1"
    );
    vm.serial.send("airlock-view next")?;
    vm.serial.wait_exact(m, T, "AIRLOCK-VIEW-ERROR no-viewer")?;

    // The big disc in the same drive.
    let m = vm.serial.mark();
    vm.insert("cd0", &a.big.iso)?;
    let r = vm.serial.wait_cd(m, Duration::from_secs(50))?;
    r.check(&a.big)?;
    // 4 series of 64 images.
    let (_, v) = vm.serial.wait_view(r.end, T)?;
    assert_eq!((v.images, v.shown, v.skipped), (256, 1, 0));
    eprintln!(
        "big disc read in {} s (guest's figure)",
        r.summary.as_ref().map_or(0.0, |s| s.seconds)
    );

    // Swap straight to the small disc (no eject in between): the old disc
    // is reported removed, the new one inserted.
    let m = vm.serial.mark();
    vm.insert("cd0", &a.small.iso)?;
    vm.serial.wait_exact(m, T, "AIRLOCK-CD-REMOVED dev=sr0")?;
    vm.serial.wait_cd(m, T)?.check(&a.small)?;

    // Unplug the drive with the disc in it.
    let m = vm.serial.mark();
    vm.unplug_cd_drive("cd0")?;
    vm.serial.wait_exact(m, T, "AIRLOCK-CD-REMOVED dev=sr0")?;
    assert!(!vm.control.sh("cat /proc/mounts")?.contains("sr0"));
    Ok(())
}

#[test]
fn unreadable_disc_then_a_new_drive() -> anyhow::Result<()> {
    let Some((a, mut vm)) = boot(false)? else {
        return Ok(());
    };

    // A medium that is not ISO 9660.
    let garbage = garbage_image(vm.dir())?;
    let m = vm.serial.mark();
    vm.plug_cd_drive("cd0", Some(&garbage))?;
    let r = vm.serial.wait_cd(m, T)?;
    assert!(!r.inserted);
    assert_eq!(
        (r.dev.as_str(), r.error.as_deref()),
        ("sr0", Some("mount-failed"))
    );
    let m = r.end;
    vm.eject("cd0")?;
    vm.serial.wait_exact(m, T, "AIRLOCK-CD-REMOVED dev=sr0")?;
    vm.unplug_cd_drive("cd0")?;
    std::thread::sleep(Duration::from_secs(2));

    // A second drive, plugged with a disc in it.
    let m = vm.serial.mark();
    vm.plug_cd_drive("cd1", Some(&a.small.iso))?;
    let r = vm.serial.wait_cd(m, T)?;
    r.check(&a.small)?;
    assert!(r.dev.starts_with("sr"), "{}", r.dev);
    Ok(())
}
