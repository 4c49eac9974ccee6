//! The `airlock` binary: arguments, messages, exit codes, and one end-to-end
//! run against QEMU's usb-redir (TCG) with disc changes typed on stdin; Ctrl-C ends a
//! forward whose stdin stays open.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use airlock_testkit::artifacts::artifacts;
use airlock_testkit::guest_vm::GuestVm;
use airlock_testkit::iso::{filler, make_iso};
use airlock_testkit::process::{cli, CliRun};
use tokio::io::AsyncWriteExt;
use tokio::task::block_in_place;

const BIN: &str = env!("CARGO_BIN_EXE_airlock");

/// `airlock ARGS…` without a terminal token in the environment.
fn run(args: &[&str]) -> CliRun {
    cli(Path::new(BIN), args, &["AIRLOCK_TOKEN"]).unwrap()
}

#[test]
fn usage_errors_exit_2() {
    for args in [
        &["usb", "forward"][..],
        &["usb", "forward", "--to", "unix:/x"],
        &[
            "usb", "forward", "--to", "unix:/x", "--iso", "a.iso", "--device", "auto",
        ],
        &["usb", "forward", "--broker", "http://h", "--iso", "a.iso"],
        &["usb", "forward", "--to", "unix:/x", "--device", "nonsense"],
        &[
            "usb",
            "forward",
            "--to",
            "unix:/x",
            "--device",
            "auto",
            "--usb-speed",
            "high",
        ],
        &[
            "usb",
            "forward",
            "--to",
            "unix:/x",
            "--iso",
            "a.iso",
            "--usb-speed",
            "low",
        ],
        &["usb", "frobnicate"],
    ] {
        let o = run(args);
        assert_eq!(o.code, Some(2), "{args:?}: {}", o.text());
    }
    let o = run(&["usb", "forward", "--help"]);
    assert_eq!(o.code, Some(0));
    assert!(o.text().contains("--iso"));
}

#[test]
fn list_says_clearly_what_it_found() {
    let o = run(&["usb", "list"]);
    let t = o.text();
    assert_eq!(o.code, Some(0), "{t}");
    if !std::path::Path::new("/sys/bus/usb/devices").exists() {
        assert!(t.contains("no USB subsystem"), "{t}");
    } else {
        assert!(
            t.contains("No USB optical drive found") || t.contains("verdict:"),
            "{t}"
        );
    }
}

/// `airlock usb forward --iso x.iso` with `lease`, to a broker that is not there.
fn forward_to_nowhere(lease: &str) -> CliRun {
    let broker = "http://127.0.0.1:9";
    run(&[
        "usb", "forward", "--broker", broker, "--lease", lease, "--iso", "x.iso",
    ])
}

/// `airlock usb forward --iso ISO` to a usb-redir socket that is not there.
fn forward_iso_to_nowhere(iso: &str) -> CliRun {
    run(&[
        "usb",
        "forward",
        "--to",
        "unix:/nonexistent/u.sock",
        "--iso",
        iso,
    ])
}

#[test]
fn bad_inputs_get_an_error_and_a_hint() {
    let o = forward_to_nowhere("../etc");
    assert_eq!(o.code, Some(1));
    assert!(
        o.text().contains("not 32 lower-case hex digits"),
        "{}",
        o.text()
    );
    assert!(o.text().contains("hint:"), "{}", o.text());

    let lease = "ab".repeat(16);
    let o = forward_to_nowhere(&lease);
    assert_eq!(o.code, Some(1));
    assert!(o.text().contains("no terminal token"), "{}", o.text());

    let o = run(&[
        "usb", "forward", "--broker", "ftp://h", "--lease", &lease, "--iso", "x.iso",
    ]);
    assert_eq!(o.code, Some(1));
    assert!(o.text().contains("not http or https"), "{}", o.text());

    let o = forward_iso_to_nowhere("/nonexistent.iso");
    assert_eq!(o.code, Some(1));
    assert!(o.text().contains("cannot open disc image"), "{}", o.text());

    let tmp = tempfile::tempdir().unwrap();
    let iso = tmp.path().join("d.iso");
    std::fs::write(&iso, vec![0u8; 4096]).unwrap();
    let o = forward_iso_to_nowhere(iso.to_str().unwrap());
    assert_eq!(o.code, Some(1));
    let t = o.text();
    assert!(t.contains("Forwarding: emulated USB CD-ROM"), "{t}");
    assert!(
        t.contains("cannot connect to unix:/nonexistent/u.sock"),
        "{t}"
    );
    assert!(t.contains("hint: Check the socket path"), "{t}");

    if !std::path::Path::new("/sys/bus/usb/devices").exists() {
        let o = run(&["usb", "forward", "--to", "unix:/x.sock", "--device", "auto"]);
        assert_eq!(o.code, Some(1));
        assert!(o.text().contains("no USB subsystem"), "{}", o.text());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forward_an_iso_to_qemu_and_swap_from_stdin() -> anyhow::Result<()> {
    if !airlock_testkit::tools::vm_test() {
        return Ok(());
    }
    let tmp = tempfile::tempdir()?;
    let first = make_iso(
        tmp.path(),
        "one",
        "ONE",
        &[
            ("ONE.TXT", b"one\n".to_vec()),
            ("DATA/BLOB", filler(11, 400_000)),
        ],
    )?;
    let second = make_iso(tmp.path(), "two", "TWO", &[("TWO.TXT", filler(12, 90_000))])?;
    let vm = block_in_place(|| GuestVm::with_usbredir(&artifacts()?.guest))?;

    let mut child = tokio::process::Command::new(BIN)
        .args(["usb", "forward", "--to"])
        .arg(format!("unix:{}", vm.usbredir_sock().display()))
        .arg("--iso")
        .arg(&first.iso)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();

    let r = block_in_place(|| vm.serial.wait_cd(0, Duration::from_secs(45)))?;
    r.check(&first)?;
    stdin.write_all(b"eject\n").await.unwrap();
    let j = block_in_place(|| vm.serial.wait_removed(r.end, Duration::from_secs(20)))?;
    stdin
        .write_all(format!("insert {}\n", second.iso.display()).as_bytes())
        .await
        .unwrap();
    block_in_place(|| vm.serial.wait_cd(j, Duration::from_secs(30)))?.check(&second)?;
    stdin.write_all(b"unplug\n").await.unwrap();

    let out = tokio::time::timeout(Duration::from_secs(10), child.wait_with_output())
        .await
        .expect("airlock exits after unplug")
        .unwrap();
    let t = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{t}");
    assert!(
        t.contains("Forwarding: emulated USB CD-ROM 1209:0001"),
        "{t}"
    );
    assert!(
        t.contains("Drive attached to the desktop (qemu usb-redir guest"),
        "{t}"
    );
    assert!(t.contains("Disc ejected."), "{t}");
    assert!(t.contains("Disc inserted:"), "{t}");
    assert!(
        t.contains("Session ended: the device was unplugged on request"),
        "{t}"
    );
    Ok(())
}

/// `airlock open ARGS…` with `config` (a file written into `dir` with `toml`), no token
/// in the environment.
fn open_with(dir: &Path, toml: &str, args: &[&str]) -> CliRun {
    let token = dir.join("token");
    std::fs::write(&token, "t0ken\n").unwrap();
    std::fs::set_permissions(&token, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let config = dir.join("terminal.toml");
    std::fs::write(
        &config,
        format!("[broker]\ntoken_file = \"{}\"\n{toml}", token.display()),
    )
    .unwrap();
    let mut all = vec![
        "open",
        "--config",
        config.to_str().unwrap(),
        "--user",
        "dr-x",
    ];
    all.extend_from_slice(args);
    run(&all)
}

#[test]
fn open_says_what_is_wrong_and_exits_with_its_code() {
    let tmp = tempfile::tempdir().unwrap();
    // No broker configured: configuration, code 3, naming the key.
    let o = run(&["open", "--config", "/nonexistent/terminal.toml"]);
    assert_eq!(o.code, Some(3), "{}", o.text());
    assert!(
        o.text().contains("cannot read the terminal configuration"),
        "{}",
        o.text()
    );
    let o = open_with(tmp.path(), "", &["--iso", "/x.iso", "--no-display"]);
    assert_eq!(o.code, Some(3), "{}", o.text());
    assert!(o.text().contains("broker.url"), "{}", o.text());
    // A disc image that is not there: the drive, code 7, before any desktop is taken.
    let o = open_with(
        tmp.path(),
        "url = \"http://127.0.0.1:9\"\n",
        &["--iso", "/nonexistent.iso", "--no-display"],
    );
    assert_eq!(o.code, Some(7), "{}", o.text());
    assert!(o.text().contains("cannot open disc image"), "{}", o.text());
    // A broker that is not there: code 5, with what to check.
    let iso = tmp.path().join("d.iso");
    std::fs::write(&iso, vec![0u8; 4096]).unwrap();
    let o = open_with(
        tmp.path(),
        "url = \"http://127.0.0.1:9\"\n",
        &["--iso", iso.to_str().unwrap(), "--no-display"],
    );
    assert_eq!(o.code, Some(5), "{}", o.text());
    assert!(o.text().contains("cannot reach the broker"), "{}", o.text());
    assert!(
        o.text().contains("Check that the broker is running"),
        "{}",
        o.text()
    );
}

/// Ctrl-C ends `airlock usb forward` even while its stdin (where it reads `eject`,
/// `insert`, `unplug`) stays open and silent, as a terminal's does.
#[test]
fn ctrl_c_ends_a_forward_whose_stdin_stays_open() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("redir.sock");
    let listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
    // A desktop side that accepts and reads, and never answers.
    std::thread::spawn(move || {
        if let Ok((mut c, _)) = listener.accept() {
            let _ = std::io::copy(&mut c, &mut std::io::sink());
        }
    });
    let iso = make_iso(dir.path(), "d", "D", &[("A.TXT", b"a\n".to_vec())]).unwrap();
    let mut child = std::process::Command::new(BIN)
        .args(["usb", "forward", "--to"])
        .arg(format!("unix:{}", sock.display()))
        .arg("--iso")
        .arg(&iso.iso)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let _stdin = child.stdin.take();
    std::thread::sleep(Duration::from_secs(2));
    airlock_testkit::process::signal_pid(child.id(), airlock_testkit::process::Signal::INT);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("airlock usb forward still runs 10 s after Ctrl-C");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut out = String::new();
    std::io::Read::read_to_string(&mut child.stdout.take().unwrap(), &mut out).unwrap();
    assert!(status.success(), "{status}: {out}");
    assert!(out.contains("Ctrl-C: unplugging"), "{out}");
}
