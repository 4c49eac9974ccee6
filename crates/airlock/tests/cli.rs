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

/// A stand-in for the broker's capture API (the real one is tested in airlockd and the
/// key_images end-to-end test): one capture of `PNG` for `HIS-0042`, the PACS
/// `PACS@127.0.0.1:104`; every request's method and path recorded.
struct CaptureBroker {
    url: String,
    seen: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

const PNG: &[u8] = b"\x89PNG\r\n\x1a\nnot really a picture";
const LEASE: &str = "0123456789abcdef0123456789abcdef";

impl CaptureBroker {
    fn start() -> CaptureBroker {
        use std::io::{BufRead, BufReader, Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let log = seen.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { return };
                let mut r = BufReader::new(conn.try_clone().unwrap());
                let mut line = String::new();
                if r.read_line(&mut line).is_err() {
                    continue;
                }
                let mut length = 0;
                loop {
                    let mut h = String::new();
                    if r.read_line(&mut h).is_err() || h.trim().is_empty() {
                        break;
                    }
                    if let Some(v) = h.to_ascii_lowercase().strip_prefix("content-length:") {
                        length = v.trim().parse().unwrap_or(0);
                    }
                }
                let mut body = vec![0; length];
                let _ = r.read_exact(&mut body);
                let request: Vec<&str> = line.split_whitespace().take(2).collect();
                let request = request.join(" ");
                log.lock().unwrap().push(request.clone());
                let captures = format!("/v1/leases/{LEASE}/captures");
                let sha: String = {
                    use sha2::Digest as _;
                    sha2::Sha256::digest(PNG)
                        .iter()
                        .map(|b| format!("{b:02x}"))
                        .collect()
                };
                let (status, ctype, body): (&str, &str, Vec<u8>) = match request.as_str() {
                    r if r == format!("POST {captures}") => (
                        "201 Created",
                        "application/json",
                        serde_json::json!({
                            "capture": 1, "sha256": sha, "width": 8, "height": 8,
                            "taken_at": 1_764_720_000_000_i64,
                            "delete_after": 1_764_806_400_000_i64,
                            "pacs": "PACS@127.0.0.1:104", "patient_id": "HIS-0042",
                        })
                        .to_string()
                        .into_bytes(),
                    ),
                    r if r == format!("GET {captures}/1") => ("200 OK", "image/png", PNG.to_vec()),
                    r if r == format!("POST {captures}/1/send") => (
                        "200 OK",
                        "application/json",
                        serde_json::json!({
                            "capture": 1, "sop_instance_uid": "1.2.3.4", "study_instance_uid": "1.2.3",
                            "pacs": "PACS@127.0.0.1:104", "status": 0, "patient_id": "HIS-0042",
                            "from_worklist": false,
                        })
                        .to_string()
                        .into_bytes(),
                    ),
                    _ => ("404 Not Found", "application/json", b"{}".to_vec()),
                };
                let _ = write!(
                    conn,
                    "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    body.len()
                );
                let _ = conn.write_all(&body);
            }
        });
        CaptureBroker { url, seen }
    }

    fn seen(&self) -> Vec<String> {
        self.seen.lock().unwrap().clone()
    }

    fn sent(&self) -> bool {
        self.seen().iter().any(|r| r.ends_with("/send"))
    }
}

/// A terminal configuration in `dir` for `broker` with `capture` in `[capture]`; its
/// path. Captures go to `dir/ehr`.
fn capture_config(dir: &Path, broker: &str, capture: &str) -> std::path::PathBuf {
    let token = dir.join("token");
    std::fs::write(&token, "t0ken\n").unwrap();
    std::fs::set_permissions(&token, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let config = dir.join("terminal.toml");
    std::fs::write(
        &config,
        format!(
            "[broker]\nurl = \"{broker}\"\ntoken_file = \"{}\"\n[session]\nuser = \"dr-x\"\n[capture]\nfolder = \"{}\"\n{capture}\n",
            token.display(),
            dir.join("ehr").display()
        ),
    )
    .unwrap();
    config
}

/// A viewer script in `dir` that writes the path it is given (and whether that file
/// is whole) to `dir/shown`, then keeps showing it.
fn viewer_script(dir: &Path) -> std::path::PathBuf {
    let script = dir.join("viewer.sh");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\ncmp -s \"$1\" \"{png}\" && echo \"$1 whole\" >\"{shown}\" || echo \"$1 broken\" >\"{shown}\"\nexec sleep 30\n",
            png = dir.join("expected.png").display(),
            shown = dir.join("shown").display()
        ),
    )
    .unwrap();
    std::fs::write(dir.join("expected.png"), PNG).unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    script
}

/// `airlock capture ARGS…` with stdin a pseudo-terminal on which `answer` is typed.
fn capture_on_a_terminal(config: &Path, args: &[&str], answer: &str) -> CliRun {
    use rustix::pty::{grantpt, openpt, ptsname, unlockpt, OpenptFlags};
    use std::io::Write as _;
    let master = openpt(OpenptFlags::RDWR | OpenptFlags::NOCTTY).unwrap();
    grantpt(&master).unwrap();
    unlockpt(&master).unwrap();
    let name = ptsname(&master, Vec::new()).unwrap();
    let slave = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(name.to_str().unwrap())
        .unwrap();
    let mut master = std::fs::File::from(master);
    // Typed ahead: the terminal keeps the line until it is read.
    master.write_all(answer.as_bytes()).unwrap();
    let out = std::process::Command::new(BIN)
        .arg("capture")
        .arg("--config")
        .arg(config)
        .args(["--lease", LEASE])
        .args(args)
        .env_remove("AIRLOCK_TOKEN")
        .stdin(slave)
        .output()
        .unwrap();
    drop(master);
    CliRun {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

#[test]
fn capture_shows_the_image_and_sends_only_on_yes() {
    let dir = tempfile::tempdir().unwrap();
    let broker = CaptureBroker::start();
    let viewer = viewer_script(dir.path());
    let config = capture_config(
        dir.path(),
        &broker.url,
        &format!("viewer = [\"{}\"]", viewer.display()),
    );
    // "n": shown, asked, kept, told how to send it later.
    let t0 = std::time::Instant::now();
    let o = capture_on_a_terminal(&config, &["--confirm"], "n\n");
    let t = o.text();
    assert_eq!(o.code, Some(0), "{t}");
    assert!(
        t0.elapsed() < Duration::from_secs(20),
        "the viewer was not closed"
    );
    assert!(
        o.stderr
            .contains("Send capture 1 to the PACS PACS@127.0.0.1:104 for patient HIS-0042? [y/N]"),
        "{t}"
    );
    let saved = std::fs::read_dir(dir.path().join("ehr"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect::<Vec<_>>();
    assert_eq!(saved.len(), 1, "{saved:?}");
    assert_eq!(std::fs::read(&saved[0]).unwrap(), PNG);
    let shown = std::fs::read_to_string(dir.path().join("shown")).unwrap();
    assert_eq!(shown.trim(), format!("{} whole", saved[0].display()));
    assert!(t.contains("Not sent. Capture 1 stays saved at"), "{t}");
    assert!(t.contains("airlock capture --send-only 1"), "{t}");
    assert!(!broker.sent(), "{:?}", broker.seen());
    // Anything but y or yes is no, end of input (Ctrl-D) too.
    for answer in ["\x04", "yep\n", "\n"] {
        let o = capture_on_a_terminal(&config, &["--confirm"], answer);
        assert_eq!(o.code, Some(0), "{}", o.text());
        assert!(o.text().contains("Not sent."), "{answer:?}: {}", o.text());
        assert!(!broker.sent(), "{answer:?}");
    }
    // "yes": sent.
    let o = capture_on_a_terminal(&config, &["--confirm"], "yes\n");
    assert_eq!(o.code, Some(0), "{}", o.text());
    assert!(
        o.stdout.contains("Sent to the PACS PACS@127.0.0.1:104"),
        "{}",
        o.text()
    );
    assert!(broker.sent());
}

#[test]
fn capture_never_sends_unasked_when_asking_is_wanted() {
    let dir = tempfile::tempdir().unwrap();
    let broker = CaptureBroker::start();
    let viewer = viewer_script(dir.path());
    // capture.confirm: --send asks; without a terminal it refuses before taking
    // anything (exit 2), and says how to go on.
    let config = capture_config(
        dir.path(),
        &broker.url,
        &format!("viewer = [\"{}\"]\nconfirm = true", viewer.display()),
    );
    let c = config.to_str().unwrap();
    for args in [&["--send"][..], &["--confirm"]] {
        let mut all = vec!["capture", "--config", c, "--lease", LEASE];
        all.extend_from_slice(args);
        let o = run(&all);
        assert_eq!(o.code, Some(2), "{args:?}: {}", o.text());
        assert!(o.text().contains("needs a terminal"), "{}", o.text());
        assert!(
            o.text().contains("nothing was taken or sent"),
            "{}",
            o.text()
        );
    }
    assert!(broker.seen().is_empty(), "{:?}", broker.seen());
    // --no-confirm sends without asking; a plain capture does not ask either.
    let o = run(&[
        "capture",
        "--config",
        c,
        "--lease",
        LEASE,
        "--send",
        "--no-confirm",
    ]);
    assert_eq!(o.code, Some(0), "{}", o.text());
    assert!(broker.sent());
    let o = run(&["capture", "--config", c, "--lease", LEASE]);
    assert_eq!(o.code, Some(0), "{}", o.text());
    // --no-confirm without --send, --confirm with --send-only: usage.
    for args in [&["--no-confirm"][..], &["--confirm", "--send-only", "1"]] {
        let mut all = vec!["capture", "--config", c, "--lease", LEASE];
        all.extend_from_slice(args);
        assert_eq!(run(&all).code, Some(2), "{args:?}");
    }
}

#[test]
fn a_viewer_that_is_missing_or_fails_keeps_the_capture_unsent() {
    let dir = tempfile::tempdir().unwrap();
    let broker = CaptureBroker::start();
    // Not installed: configuration (exit 3) before anything is taken.
    let config = capture_config(
        dir.path(),
        &broker.url,
        "viewer = [\"no-such-viewer-airlock\"]",
    );
    let o = capture_on_a_terminal(&config, &["--confirm"], "y\n");
    assert_eq!(o.code, Some(3), "{}", o.text());
    assert!(o.text().contains("capture.viewer"), "{}", o.text());
    assert!(o.text().contains("nothing was taken"), "{}", o.text());
    assert!(broker.seen().is_empty(), "{:?}", broker.seen());
    // It starts and fails at once (no display, say): the capture stays saved, unsent,
    // and the message says how to send it.
    let config = capture_config(dir.path(), &broker.url, "viewer = [\"false\"]");
    let o = capture_on_a_terminal(&config, &["--confirm"], "y\n");
    let t = o.text();
    assert_eq!(o.code, Some(9), "{t}");
    assert!(t.contains("the capture viewer"), "{t}");
    assert!(t.contains("stays saved at"), "{t}");
    assert!(t.contains("--send-only 1"), "{t}");
    assert!(!broker.sent(), "{:?}", broker.seen());
    assert_eq!(
        std::fs::read_dir(dir.path().join("ehr")).unwrap().count(),
        1
    );
}
