//! `airlock guard` on a terminal's tree in a directory (`--root`): status, install,
//! install again, a failure half-way, uninstall; and the Windows policy files.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

use airlock_guard::windows::reg;
use airlock_testkit::fake_root::FakeTerminal;
use airlock_testkit::process::{cli, CliRun};

const BIN: &str = env!("CARGO_BIN_EXE_airlock");

fn guard(args: &[&str]) -> CliRun {
    let mut all = vec!["guard"];
    all.extend_from_slice(args);
    cli(Path::new(BIN), &all, &["AIRLOCK_TOKEN"]).unwrap()
}

/// Asserts that `run` printed `line` on stdout.
fn says(run: &CliRun, line: &str) {
    assert!(run.stdout.contains(line), "no {line:?} in:\n{}", run.stdout);
}

#[test]
fn install_guards_a_terminal_idempotently_and_uninstall_undoes_it() {
    let t = FakeTerminal::unguarded().unwrap();
    let root = t.arg();
    let s = guard(&["status", "--root", &root]);
    assert_eq!(s.code, Some(8), "{}", s.text());
    says(&s, "FAIL  module usb-storage: can load");
    says(&s, "FAIL  group: no group airlock");
    assert!(
        s.stdout
            .lines()
            .last()
            .unwrap()
            .starts_with("not guarded ("),
        "{}",
        s.stdout
    );
    let before = t.snapshot();

    let i = guard(&["install", "--root", &root]);
    assert_eq!(i.code, Some(0), "{}", i.text());
    for line in [
        "created group airlock",
        "wrote /etc/modprobe.d/airlock-guard.conf",
        "wrote /etc/udev/rules.d/70-airlock-guard.rules",
        "next: `airlock guard status`",
    ] {
        says(&i, line);
    }
    let s = guard(&["status", "--root", &root]);
    assert_eq!(s.code, Some(0), "{}", s.text());
    assert!(s.stdout.ends_with("guarded\n"), "{}", s.stdout);
    says(&s, "ok    module isofs: blocked");

    let installed = t.snapshot();
    let again = guard(&["install", "--root", &root]);
    assert_eq!(again.code, Some(0), "{}", again.text());
    says(&again, "nothing changed");
    assert_eq!(t.snapshot(), installed, "a second install changed the tree");

    let u = guard(&["uninstall", "--root", &root]);
    assert_eq!(u.code, Some(0), "{}", u.text());
    says(&u, "removed /etc/modprobe.d/airlock-guard.conf");
    let s = guard(&["status", "--root", &root]);
    assert_eq!(s.code, Some(8), "{}", s.text());
    // The group stays (said so: /etc/group and groupadd's backup /etc/group-); every file
    // install wrote is gone.
    let files = |snap: Vec<(String, Option<Vec<u8>>)>| -> Vec<String> {
        snap.into_iter()
            .filter(|(p, c)| c.is_some() && !p.starts_with("etc/group"))
            .map(|(p, _)| p)
            .collect()
    };
    assert_eq!(files(t.snapshot()), files(before));
}

#[test]
fn a_failed_install_leaves_the_terminal_as_it_was() {
    let t = FakeTerminal::unguarded().unwrap();
    // The udev rule cannot be written (a directory is in its place), after the group and
    // the modprobe file were.
    std::fs::create_dir_all(t.abs("/etc/udev/rules.d/70-airlock-guard.rules/x")).unwrap();
    let before = t.snapshot();
    let i = guard(&["install", "--root", &t.arg()]);
    assert_eq!(i.code, Some(1), "{}", i.text());
    assert!(i.stderr.contains("cannot write"), "{}", i.stderr);
    assert!(i.stderr.contains("70-airlock-guard.rules"), "{}", i.stderr);
    assert_eq!(t.snapshot(), before, "the failed install left changes");
}

#[test]
fn status_names_a_drive_with_a_kernel_driver_and_its_block_device() {
    let t = FakeTerminal::unguarded().unwrap();
    t.plug_bound_drive().unwrap();
    assert_eq!(guard(&["install", "--root", &t.arg()]).code, Some(0));
    let s = guard(&["status", "--root", &t.arg()]);
    assert_eq!(s.code, Some(8), "{}", s.text());
    says(&s, "FAIL  CD block devices: /dev/sr0 exist");
    says(
        &s,
        "FAIL  USB drive 1-1: 0411:01f0 DVD drive: kernel driver usb-storage bound",
    );
}

#[test]
fn windows_policy_writes_the_reg_file_the_scripts_and_a_readme() {
    let out = tempfile::tempdir().unwrap();
    let dir = out.path().join("policy");
    let w = guard(&[
        "windows-policy",
        "--out",
        dir.to_str().unwrap(),
        "--drive",
        "0411:01f0",
    ]);
    assert_eq!(w.code, Some(0), "{}", w.text());
    let read = |name: &str| std::fs::read_to_string(dir.join(name)).unwrap();
    let text = read("airlock-terminal-guard.reg");
    let file = reg::RegFile::parse(&text).unwrap();
    let restrictions =
        r"HKEY_LOCAL_MACHINE\SOFTWARE\Policies\Microsoft\Windows\DeviceInstall\Restrictions";
    assert_eq!(
        file.value(restrictions, "AllowAdminInstall"),
        Some(&reg::RegValue::Dword(0))
    );
    assert_eq!(
        file.value(&format!(r"{restrictions}\DenyDeviceClasses"), "1"),
        Some(&reg::RegValue::String(
            "{4d36e965-e325-11ce-bfc1-08002be10318}".into()
        ))
    );
    assert!(read("Install-AirlockGuard.ps1").contains("-P 0 0411 01f0 -1 -1 1"));
    assert!(read("Check-AirlockGuard.ps1").contains("exit 1"));
    assert!(read("README.txt").to_lowercase().contains("never"));
    let bad = guard(&["windows-policy", "--out", "/proc/nope", "--drive", "0411"]);
    assert_eq!(
        bad.code,
        Some(2),
        "a bad VID:PID is a usage error: {}",
        bad.text()
    );
}
