//! The demo guest's agent port and control channel, booted under QEMU TCG.
//! (Skipped only when qemu-system-x86_64 is not installed.)

mod common;

use common::{artifacts, one_vm_at_a_time, Vm};
use std::time::{Duration, Instant};
use xtask::guest::GOLDEN_HEADER;

const T: Duration = Duration::from_secs(20);

#[test]
fn agent_port_and_control_shell() -> anyhow::Result<()> {
    let Some(a) = artifacts() else { return Ok(()) };
    let _vm_slot = one_vm_at_a_time();
    let started = Instant::now();
    let mut vm = Vm::boot(a, true)?;
    vm.wait_ready()?;
    eprintln!("ready {:?} after starting QEMU", started.elapsed());

    // Ping: the nonce comes back; a CR before the LF is tolerated.
    let m = vm.mark();
    vm.send_agent("airlock-ping n0nce-42\r")?;
    vm.wait_line(m, T, "AIRLOCK-READY n0nce-42", |l| {
        l == "AIRLOCK-READY n0nce-42"
    })?;

    // Set the clock (in the guest only).
    let m = vm.mark();
    vm.send_agent("airlock-settime 1700000000")?;
    vm.wait_line(m, T, "AIRLOCK-TIME-SET", |l| {
        l == "AIRLOCK-TIME-SET 1700000000"
    })?;
    let now: u64 = vm.sh("date +%s")?.trim().parse()?;
    assert!(
        (1_700_000_000..1_700_000_100).contains(&now),
        "guest clock {now}"
    );
    let m = vm.mark();
    vm.send_agent("airlock-settime soon")?;
    vm.wait_line(m, T, "AIRLOCK-TIME-ERROR", |l| {
        l == "AIRLOCK-TIME-ERROR soon"
    })?;
    let m = vm.mark();
    vm.send_agent("reboot-please")?;
    vm.wait_line(m, T, "AIRLOCK-ERROR", |l| {
        l == "AIRLOCK-ERROR unknown-command reboot-please"
    })?;
    // Nothing we sent was echoed back on the agent port.
    assert!(
        vm.lines_since(0).iter().all(|l| !l.starts_with("airlock-")),
        "agent port echoes input: {:?}",
        vm.lines_since(0)
    );

    // Control shell: output and exit status, no echo of the command.
    let (out, status) = vm.shell("echo hello; uname -r; false")?;
    assert_eq!(status, 1);
    assert_eq!(out, format!("hello\n{}\n", a.guest.kernel_version));
    assert_eq!(vm.sh("id -u")?, "0\n");
    // A line that does not parse: an error message and status 2.
    let (out, status) = vm.shell("if then fi")?;
    assert_eq!(status, 2);
    assert!(out.contains("syntax error"), "{out:?}");
    // State persists between lines; commands cannot read the channel.
    vm.sh("cd /tmp; X=5")?;
    assert_eq!(vm.sh("echo \"$PWD $X\"; cat")?, "/tmp 5\n");
    // `exit` ends the shell; a new one starts (input sent meanwhile waits).
    vm.send_control("exit\n")?;
    assert_eq!(vm.sh("echo again; pwd")?, "again\n/\n");

    // The writable disk is the golden one, unmounted and writable.
    let head = vm.sh(&format!("head -c {} /dev/vda", GOLDEN_HEADER.len()))?;
    assert_eq!(head.as_bytes(), GOLDEN_HEADER);
    assert!(!vm.sh("cat /proc/mounts")?.contains("vda"));
    assert_eq!(vm.sh("cat /sys/block/vda/ro")?, "0\n");

    // Malware markers, in RAM and on the disk, as the reset tests plant them.
    vm.sh("echo MARKER-RAM > /root/marker && echo MARKER-TMP > /tmp/marker")?;
    vm.sh("printf MARKER-DISK | dd of=/dev/vda bs=512 seek=2048 conv=notrunc 2>/dev/null && sync")?;
    assert_eq!(
        vm.sh("cat /root/marker /tmp/marker; dd if=/dev/vda bs=512 skip=2048 count=1 2>/dev/null | head -c 11")?,
        "MARKER-RAM\nMARKER-TMP\nMARKER-DISK"
    );
    // No network interface but loopback.
    assert_eq!(vm.sh("ls /sys/class/net")?.trim(), "lo");
    Ok(())
}

#[test]
fn no_control_shell_without_the_flag() -> anyhow::Result<()> {
    let Some(a) = artifacts() else { return Ok(()) };
    let _vm_slot = one_vm_at_a_time();
    let mut vm = Vm::boot(a, false)?;
    vm.wait_ready()?;
    let m = vm.mark();
    vm.send_agent("airlock-ping p1")?;
    vm.wait_line(m, T, "AIRLOCK-READY p1", |l| l == "AIRLOCK-READY p1")?;

    vm.send_control("echo __DONE_should_not_run $?\n")?;
    std::thread::sleep(Duration::from_secs(3));
    let out = vm.take_control_output();
    assert!(
        out.is_empty(),
        "ttyS1 answered: {:?}",
        String::from_utf8_lossy(&out)
    );
    Ok(())
}
