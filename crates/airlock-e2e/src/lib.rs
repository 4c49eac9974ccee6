//! End-to-end tests of Airlock: terminal → broker → desktop, with real QEMU.
//!
//! Why a crate of its own: these tests span both binaries, the terminal's
//! `airlock` and the broker's `airlockd`, and the VMs around them (a
//! "terminal VM" with a real Linux USB stack, the broker's desktops). Cargo
//! only hands a test the binaries of its own package (`CARGO_BIN_EXE_*`), so
//! a test in either binary's crate could not run the other without reaching
//! across packages anyway; and neither binary crate should depend on the
//! other just for tests. Here both are built with cargo (the terminal's
//! statically, for the busybox terminal VM) and run as separate processes,
//! exactly as deployed. The process/VM rig itself is `xtask::rig`, shared
//! with `cargo xtask bench disc`.
//!
//! The tests skip (pass with a message) only when `qemu-system-x86_64` is not
//! installed. They need, like the other VM tests, `qemu-system-x86
//! qemu-utils xorriso` and apt access to Debian for the guest packages.
#![forbid(unsafe_code)]

use anyhow::{Context, Result};
use sha2::Digest;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use xtask::disc::{FileEntry, FileList};

pub use xtask::rig;

/// Everything the tests need, built once per test binary (and cached on
/// disk by xtask and cargo across runs).
pub struct Artifacts {
    pub guest: xtask::guest::Manifest,
    pub terminal: xtask::terminal::Manifest,
    pub small: FileList,
    pub big: FileList,
    /// Directory of the host-built `airlockd` and `airlock`.
    pub bin_dir: PathBuf,
}

/// The artifacts, or `None` (the test should return) when QEMU is missing.
pub fn artifacts() -> Option<&'static Artifacts> {
    if !xtask::util::have(rig::QEMU) {
        eprintln!(
            "SKIPPED: {} is not installed (apt-get install qemu-system-x86 qemu-utils)",
            rig::QEMU
        );
        return None;
    }
    rig::stop_everything_on_signal();
    static BUILT: OnceLock<Artifacts> = OnceLock::new();
    Some(BUILT.get_or_init(|| build().expect("building the test artifacts")))
}

fn build() -> Result<Artifacts> {
    // Test binaries run as separate processes (nextest) and would otherwise build the same
    // artifacts at once, racing on their temporary files: one builds, the others wait and
    // then find everything up to date.
    let out = xtask::terminal::default_out();
    let lock_dir = out.parent().unwrap_or(&out);
    std::fs::create_dir_all(lock_dir)
        .with_context(|| format!("creating {}", lock_dir.display()))?;
    let lock_path = lock_dir.join(".e2e-artifacts.lock");
    let lock = std::fs::File::create(&lock_path)
        .with_context(|| format!("creating {}", lock_path.display()))?;
    rustix::fs::flock(&lock, rustix::fs::FlockOperation::LockExclusive)
        .with_context(|| format!("locking {}", lock_path.display()))?;
    let built = build_locked();
    drop(lock);
    built
}

fn build_locked() -> Result<Artifacts> {
    let guest = xtask::guest::build(&xtask::guest::Options {
        out: xtask::guest::default_out(),
        force: false,
    })
    .context("cargo xtask guest")?;
    let discs = xtask::disc::build(&xtask::disc::Options {
        out: xtask::disc::default_out(),
        force: false,
    })
    .context("cargo xtask sample-disc")?;
    let terminal = xtask::terminal::build(&xtask::terminal::Options {
        out: xtask::terminal::default_out(),
        force: false,
        airlock_bin: None,
    })
    .context("cargo xtask terminal-guest")?;
    let bin_dir = rig::build_host_binaries(false).context("building airlockd and airlock")?;
    let find = |name: &str| {
        discs
            .iter()
            .find(|d| d.iso.file_name().is_some_and(|f| f == name))
            .cloned()
            .with_context(|| format!("{name} was not built"))
    };
    Ok(Artifacts {
        small: find("sample-small.iso")?,
        big: find("sample.iso")?,
        guest,
        terminal,
        bin_dir,
    })
}

/// A broker with `size` desktops of the demo guest.
pub fn broker(a: &Artifacts, size: usize) -> Result<rig::Broker> {
    rig::Broker::start(&rig::BrokerOptions {
        airlockd: a.bin_dir.join("airlockd"),
        guest: a.guest.clone(),
        size,
        memory_mib: 256,
        cpus: None,
    })
}

/// An ISO 9660 image (Rock Ridge + Joliet, like the sample discs) with the
/// given files, and what the guest must report for it.
pub fn make_iso(
    dir: &Path,
    name: &str,
    volume: &str,
    files: &[(&str, Vec<u8>)],
) -> Result<FileList> {
    let root = dir.join(format!("{name}.root"));
    for (path, data) in files {
        let p = root.join(path);
        std::fs::create_dir_all(p.parent().context("file at the root of /")?)?;
        std::fs::write(&p, data)?;
    }
    let iso = dir.join(format!("{name}.iso"));
    xtask::util::run(
        Command::new("xorriso")
            .args(["-as", "mkisofs", "-quiet", "-r", "-J", "-V", volume, "-o"])
            .arg(&iso)
            .arg(&root),
    )?;
    let mut entries: Vec<FileEntry> = files
        .iter()
        .map(|(p, d)| FileEntry {
            path: p.to_string(),
            size: d.len() as u64,
        })
        .collect();
    // The guest lists paths in byte order (LC_ALL=C sort).
    entries.sort_by(|a, b| a.path.as_bytes().cmp(b.path.as_bytes()));
    let mut h = sha2::Sha256::new();
    for e in &entries {
        let data = &files.iter().find(|(p, _)| *p == e.path).context("entry")?.1;
        h.update(data);
    }
    let iso_data = std::fs::read(&iso)?;
    Ok(FileList {
        iso,
        volume_id: volume.to_string(),
        iso_size: iso_data.len() as u64,
        iso_sha256: rig::sha256_hex(&iso_data),
        files: entries.len() as u64,
        bytes: entries.iter().map(|e| e.size).sum(),
        sha256: xtask::util::hex(&h.finalize()),
        entries,
    })
}

/// Deterministic filler bytes.
pub fn filler(seed: u8, len: usize) -> Vec<u8> {
    let mut x = u32::from(seed).wrapping_mul(2_654_435_761).wrapping_add(1);
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            (x >> 24) as u8
        })
        .collect()
}
