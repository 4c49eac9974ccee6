//! Shared helpers of the integration tests: the demo guest under QEMU (TCG)
//! with a usb-redir chardev, its serial log, and test ISO images.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

/// The workspace root.
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .unwrap()
        .to_path_buf()
}

/// True if QEMU is installed; tests that need it print why they skip.
pub fn have_qemu() -> bool {
    Command::new("qemu-system-x86_64")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// The demo guest's manifest: (kernel, initrd, append). Builds the guest
/// with `cargo xtask guest` if it is missing.
pub fn guest() -> (PathBuf, PathBuf, String) {
    let manifest = workspace().join("build/guest/manifest.json");
    if !manifest.exists() {
        let status = Command::new(env!("CARGO"))
            .args(["xtask", "guest"])
            .current_dir(workspace())
            .status()
            .expect("run cargo xtask guest");
        assert!(status.success(), "cargo xtask guest failed");
    }
    let m: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&manifest).unwrap()).unwrap();
    (
        PathBuf::from(m["kernel"].as_str().unwrap()),
        PathBuf::from(m["initrd"].as_str().unwrap()),
        m["append"].as_str().unwrap().to_owned(),
    )
}

/// What the guest must report for a disc.
#[derive(Debug, Clone)]
pub struct Expected {
    pub iso: PathBuf,
    pub files: u64,
    pub bytes: u64,
    pub sha256: String,
}

/// `build/discs/NAME.files.json` if `cargo xtask sample-disc` made it.
pub fn sample_disc(name: &str) -> Option<Expected> {
    let p = workspace().join(format!("build/discs/{name}.files.json"));
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(p).ok()?).ok()?;
    let iso = PathBuf::from(v["iso"].as_str()?);
    if !iso.exists() {
        return None;
    }
    Some(Expected {
        iso,
        files: v["files"].as_u64()?,
        bytes: v["bytes"].as_u64()?,
        sha256: v["sha256"].as_str()?.to_owned(),
    })
}

/// Builds an ISO with `genisoimage -R -J` from `files` (relative path,
/// contents) and computes what the guest must report: sha256 over all
/// regular files in byte order of their paths (`LC_ALL=C sort`).
pub fn make_iso(dir: &Path, name: &str, files: &[(&str, Vec<u8>)]) -> Expected {
    let root = dir.join(format!("{name}.d"));
    for (path, data) in files {
        let p = root.join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, data).unwrap();
    }
    let iso = dir.join(format!("{name}.iso"));
    let out = Command::new("genisoimage")
        .args(["-quiet", "-R", "-J", "-V", name, "-o"])
        .arg(&iso)
        .arg(&root)
        .output()
        .expect("genisoimage (apt-get install genisoimage)");
    assert!(
        out.status.success(),
        "genisoimage: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut sorted: Vec<&(&str, Vec<u8>)> = files.iter().collect();
    sorted.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    let mut h = Sha256::new();
    let mut bytes = 0;
    for (_, data) in &sorted {
        h.update(data);
        bytes += data.len() as u64;
    }
    Expected {
        iso,
        files: files.len() as u64,
        bytes,
        sha256: hex::encode(h.finalize()),
    }
}

/// Deterministic pseudo-random bytes.
pub fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// A running demo guest with a usb-redir chardev socket.
pub struct Vm {
    child: Child,
    pub dir: PathBuf,
    pub serial_log: PathBuf,
    pub usbredir_sock: PathBuf,
    started: Instant,
}

impl Vm {
    /// Starts QEMU (TCG) the way the broker does, with the usb-redir
    /// chardev at `dir/usbredir.sock`.
    pub fn start(dir: &Path) -> Vm {
        let (kernel, initrd, append) = guest();
        let serial_log = dir.join("serial.log");
        let usbredir_sock = dir.join("usbredir.sock");
        let agent = dir.join("agent.sock");
        let child = Command::new("qemu-system-x86_64")
            .args(["-accel", "tcg", "-machine", "q35", "-m", "256"])
            .args(["-nodefaults", "-no-user-config", "-nic", "none"])
            .args(["-display", "none", "-vga", "std"])
            .arg("-kernel")
            .arg(&kernel)
            .arg("-initrd")
            .arg(&initrd)
            .args(["-append", &append])
            .arg("-chardev")
            .arg(format!(
                "socket,id=ser0,path={},server=on,wait=off,logfile={}",
                agent.display(),
                serial_log.display()
            ))
            .args(["-serial", "chardev:ser0"])
            .args(["-device", "qemu-xhci,id=xhci"])
            .arg("-chardev")
            .arg(format!(
                "socket,id=ur0,path={},server=on,wait=off",
                usbredir_sock.display()
            ))
            .args(["-device", "usb-redir,chardev=ur0,id=redir0,bus=xhci.0"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start qemu-system-x86_64");
        Vm {
            child,
            dir: dir.to_path_buf(),
            serial_log,
            usbredir_sock,
            started: Instant::now(),
        }
    }

    /// Seconds since QEMU started.
    pub fn elapsed(&self) -> f64 {
        self.started.elapsed().as_secs_f64()
    }

    /// The `AIRLOCK-` lines of the serial log so far.
    pub fn lines(&self) -> Vec<String> {
        let mut raw = std::fs::read(&self.serial_log).unwrap_or_default();
        // Only complete lines: QEMU may be in the middle of writing the last one.
        let complete = raw.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
        raw.truncate(complete);
        String::from_utf8_lossy(&raw)
            .split('\n')
            .map(|l| l.trim_end_matches('\r').to_owned())
            .filter_map(|l| l.find("AIRLOCK-").map(|i| l[i..].to_owned()))
            .collect()
    }

    /// Waits until a line starting with `prefix` appears after the first
    /// `skip` lines; returns it with its index. Panics with the log and
    /// QEMU's stderr on timeout or if QEMU exits.
    pub async fn wait_line(
        &mut self,
        prefix: &str,
        skip: usize,
        timeout: Duration,
    ) -> (usize, String) {
        let deadline = Instant::now() + timeout;
        loop {
            let lines = self.lines();
            if let Some((i, l)) = lines
                .iter()
                .enumerate()
                .skip(skip)
                .find(|(_, l)| l.starts_with(prefix))
            {
                return (i, l.clone());
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "QEMU exited ({status}) while waiting for {prefix:?}; stderr: {}; log: {lines:#?}",
                    self.stderr()
                );
            }
            if Instant::now() > deadline {
                let raw = std::fs::read(&self.serial_log).unwrap_or_default();
                let raw =
                    String::from_utf8_lossy(&raw[raw.len().saturating_sub(8000)..]).into_owned();
                panic!(
                    "no {prefix:?} line within {timeout:?} (t={:.1}s); log: {lines:#?}\nserial log tail:\n{raw}",
                    self.elapsed()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn stderr(&mut self) -> String {
        let mut s = String::new();
        if let Some(e) = self.child.stderr.as_mut() {
            let _ = e.read_to_string(&mut s);
        }
        s
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Parses `AIRLOCK-CD dev=sr0 files=N bytes=B sha256=H seconds=S`.
pub fn parse_cd_line(line: &str) -> (u64, u64, String) {
    let field = |k: &str| {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(&format!("{k}=")))
            .unwrap_or_else(|| panic!("no {k}= in {line:?}"))
            .to_owned()
    };
    (
        field("files").parse().unwrap(),
        field("bytes").parse().unwrap(),
        field("sha256"),
    )
}
