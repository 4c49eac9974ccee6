//! Built artifacts: the demo guest, the qga test image, the sample discs, the terminal
//! VM and the host binaries. Found through their manifests under `build/`; built by
//! `cargo xtask …` (or `cargo build`) when missing or stale, one process at a time under a
//! file lock per kind of artifact (`build/.guest.lock`, `.qga-guest.lock`,
//! `.terminal.lock`, `.host-binaries.lock`), because test processes run in parallel. What is present and current is used without
//! waiting for any lock. The manifest
//! types are defined here, once; `xtask` writes them.
use crate::process::{describe, run};
use anyhow::{bail, ensure, Context, Result};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

/// What `/dev/vda` of the demo guest's golden disk starts with.
pub const GOLDEN_HEADER: &[u8] = b"AIRLOCK-GOLDEN-DISK v1\n";

/// Kernel modules that would give a disc in the terminal's drive a driver: the terminal
/// VM carries them (as a stock terminal does) but never loads them at boot, and once
/// guarded (`airlock guard install`) never at all; the end-to-end tests check none is
/// loaded on a guarded terminal.
pub const TERMINAL_FORBIDDEN_MODULES: &[&str] = &[
    "usb_storage",
    "uas",
    "scsi_mod",
    "sr_mod",
    "sd_mod",
    "cdrom",
    "isofs",
    "udf",
];

/// The console font of the demo guest's image viewer: the build host's Debian console
/// font (package `console-setup-linux`), which `cargo xtask guest` puts into the
/// initramfs decompressed (`/lib/airlock/font.psf`).
pub const VIEWER_FONT: &str = "/usr/share/consolefonts/Uni2-VGA16.psf.gz";

/// [`VIEWER_FONT`], decompressed: the PSF font the viewer draws with (a test renders
/// what the viewer must show with it).
pub fn viewer_font() -> Result<Vec<u8>> {
    let out = run(Command::new("gzip").args(["-dc", VIEWER_FONT])).with_context(|| {
        format!(
            "reading {VIEWER_FONT}: install Debian's console-setup-linux (scripts/setup.sh does)"
        )
    })?;
    Ok(out.stdout)
}

/// `build/guest/manifest.json`: what a broker config (or a test) needs to boot the
/// demo guest.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GuestManifest {
    pub kernel: PathBuf,
    pub initrd: PathBuf,
    pub golden_disk: PathBuf,
    pub append: String,
    /// `uname -r` of the guest kernel.
    pub kernel_version: String,
    /// Debian version of the kernel package.
    pub kernel_package_version: String,
    /// Debian version of busybox-static.
    pub busybox_version: String,
    /// SHA-256 of `xtask/initramfs/common.sh` followed by the guest's `/init`
    /// (`xtask/guest/init.sh`).
    pub init_sha256: String,
    /// SHA-256 of the static image viewer in the initramfs (`/bin/demo-viewer`).
    #[serde(default)]
    pub viewer_sha256: String,
    /// [`viewer_source_sha256`] when it was built.
    #[serde(default)]
    pub viewer_source_sha256: String,
}

/// `build/qga-guest/manifest.json`: the qga test image (`cargo xtask qga-guest`,
/// docs/guest.md "The qga test image"): Debian's `qemu-guest-agent` on the agent port of
/// the demo guest's kernel, bootable with `-kernel` (SeaBIOS) and from a UEFI disk with
/// Debian's signed boot chain (Secure Boot).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct QgaGuestManifest {
    pub kernel: PathBuf,
    pub initrd: PathBuf,
    /// For `-kernel` boots: the demo guest's golden-disk format (qcow2, 64 MiB,
    /// [`GOLDEN_HEADER`] at offset 0).
    pub golden_disk: PathBuf,
    /// The UEFI boot disk (raw, GPT, one FAT EFI System Partition with shim, GRUB, the
    /// kernel and the initrd): the golden image of a UEFI pool.
    pub uefi_disk: PathBuf,
    /// The kernel command line (also the one in the UEFI disk's `grub.cfg`).
    pub append: String,
    /// The OVMF firmware (Secure Boot build) and VARS template (Microsoft keys
    /// enrolled) the UEFI disk is for, and was checked with when `uefi_check` is set.
    pub ovmf_code: PathBuf,
    pub ovmf_vars: PathBuf,
    /// `uname -r` of the guest kernel.
    pub kernel_version: String,
    pub kernel_package_version: String,
    pub busybox_version: String,
    /// Debian version of `qemu-guest-agent`.
    pub qemu_ga_version: String,
    /// Every Debian package taken (downloaded or, for a library, found on the build
    /// host), with its version.
    pub packages: Vec<DebianPackage>,
    /// The shared libraries copied with `qemu-ga`.
    pub libraries: Vec<GuestLibrary>,
    /// The build's boot of the UEFI disk (OVMF, Secure Boot, swtpm), if it was done.
    #[serde(default)]
    pub uefi_check: Option<UefiCheck>,
    /// SHA-256 of `xtask/initramfs/common.sh` followed by `xtask/qga-guest/init.sh`.
    pub init_sha256: String,
    /// [`qga_guest_source_sha256`] when it was built.
    pub source_sha256: String,
}

/// A Debian package an image was made from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DebianPackage {
    pub name: String,
    pub version: String,
    /// What it gave the image.
    pub role: String,
}

/// A shared library in the qga guest's initramfs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GuestLibrary {
    /// Its path in the guest.
    pub path: String,
    /// The Debian package it came from, and its version.
    pub package: String,
    pub version: String,
    /// `host` (copied from the build host, found with `ldd`) or `deb` (from the
    /// downloaded package, because the host lacks it).
    pub source: String,
}

/// What the build saw when it booted the UEFI disk under OVMF with Secure Boot and a
/// swtpm TPM (TCG).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UefiCheck {
    /// Debian version of the `ovmf` package installed (the firmware files' owner).
    pub ovmf_version: String,
    /// The guest's test-hook line (`AIRLOCK-QGA-GUEST tpm=yes efi=yes secureboot=1 …`).
    pub status_line: String,
    /// Seconds from QEMU's start to the first test-hook line, and to qemu-ga's first
    /// answer.
    pub boot_seconds: f64,
    pub agent_seconds: f64,
    /// `guest-info`'s version.
    pub agent_version: String,
}

/// `build/terminal/manifest.json`: the terminal VM.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TerminalManifest {
    pub kernel: PathBuf,
    pub initrd: PathBuf,
    pub append: String,
    pub kernel_version: String,
    pub kernel_package_version: String,
    pub busybox_version: String,
    /// The static `airlock` binary that went into the initramfs (as `/bin/airlock`);
    /// it runs on the build host too.
    pub airlock: PathBuf,
    pub airlock_sha256: String,
    pub init_sha256: String,
}

/// `NAME.files.json` beside a disc image: what the guest must report for it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FileList {
    pub iso: PathBuf,
    pub volume_id: String,
    pub iso_size: u64,
    pub iso_sha256: String,
    /// Number of regular files.
    pub files: u64,
    /// Sum of their sizes.
    pub bytes: u64,
    /// SHA-256 of all regular files' bytes, concatenated in `entries` order.
    pub sha256: String,
    /// Every regular file, sorted by path in byte order (LC_ALL=C).
    pub entries: Vec<FileEntry>,
}

/// One regular file of a disc.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct FileEntry {
    /// Relative path with `/` separators, as the guest sees it.
    pub path: String,
    pub size: u64,
}

impl FileList {
    /// Reads a `NAME.files.json`.
    pub fn read(path: &Path) -> Result<FileList> {
        read_json(path)
    }
}

/// The demo guest and the two sample discs.
pub struct Artifacts {
    pub guest: GuestManifest,
    /// `sample-small.iso`.
    pub small: FileList,
    /// `sample.iso` (about 161 MiB, like the published evaluation's disc).
    pub big: FileList,
}

/// Where the binaries of [`host_binaries`] are.
pub struct HostBinaries {
    pub dir: PathBuf,
}

impl HostBinaries {
    /// The broker.
    pub fn airlockd(&self) -> PathBuf {
        self.dir.join("airlockd")
    }

    /// The terminal CLI (host build).
    pub fn airlock(&self) -> PathBuf {
        self.dir.join("airlock")
    }

    /// This crate's `tcp-pump`.
    pub fn tcp_pump(&self) -> PathBuf {
        self.dir.join("tcp-pump")
    }
}

/// The cargo workspace root.
pub fn workspace_root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest
        .ancestors()
        .nth(2)
        .unwrap_or(manifest)
        .to_path_buf()
}

/// `build/` under the workspace root, where `cargo xtask` puts what it builds.
pub fn build_dir() -> PathBuf {
    workspace_root().join("build")
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T> {
    let data = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_slice(&data).with_context(|| format!("parsing {}", path.display()))
}

fn cargo() -> Command {
    let mut c = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    c.current_dir(workspace_root());
    // What cargo sets for the test binary running us is not for the build we start: a
    // build script that watches one of these (ring's watches `CARGO_MANIFEST_DIR`)
    // would make every test crate's build of the same tool a rebuild of half its
    // dependencies (CI: one test spent its 600 s rebuilding usb-control).
    for (k, _) in std::env::vars_os() {
        let Some(k) = k.to_str() else { continue };
        if is_test_harness_var(k) {
            c.env_remove(k);
        }
    }
    c
}

/// Variables cargo sets for a test or binary it runs (see the Cargo book, "Environment
/// variables Cargo sets for crates").
fn is_test_harness_var(k: &str) -> bool {
    const EXACT: [&str; 7] = [
        "CARGO_MANIFEST_DIR",
        "CARGO_MANIFEST_PATH",
        "CARGO_CRATE_NAME",
        "CARGO_BIN_NAME",
        "CARGO_PRIMARY_PACKAGE",
        "CARGO_TARGET_TMPDIR",
        "OUT_DIR",
    ];
    EXACT.contains(&k) || k.starts_with("CARGO_PKG_") || k.starts_with("CARGO_BIN_EXE_")
}

/// Runs `f` while holding the lock `build/.NAME.lock`.
fn locked<T>(name: &str, f: impl FnOnce() -> Result<T>) -> Result<T> {
    let dir = build_dir();
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let path = dir.join(format!(".{name}.lock"));
    let lock =
        std::fs::File::create(&path).with_context(|| format!("creating {}", path.display()))?;
    rustix::fs::flock(&lock, rustix::fs::FlockOperation::LockExclusive)
        .with_context(|| format!("locking {}", path.display()))?;
    let out = f();
    drop(lock);
    out
}

/// `cargo xtask ARGS…` with its output on our stderr (a test shows it when it fails).
fn xtask(args: &[&str]) -> Result<()> {
    let mut cmd = cargo();
    cmd.arg("xtask").args(args);
    let what = describe(&cmd);
    eprintln!("building test artifacts: {what}");
    let st = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::inherit())
        .stderr(Stdio::inherit())
        .status()
        .with_context(|| format!("starting `{what}`"))?;
    ensure!(st.success(), "`{what}` failed ({st})");
    Ok(())
}

/// A value computed once per process; a failure is kept too (and repeated to every
/// caller) so that a broken build is not retried by every test of a binary.
fn once<T: Send + Sync>(
    cell: &'static OnceLock<Result<T, String>>,
    f: impl FnOnce() -> Result<T>,
) -> Result<&'static T> {
    cell.get_or_init(|| f().map_err(|e| format!("{e:#}")))
        .as_ref()
        .map_err(|e| anyhow::anyhow!("{e}"))
}

/// The shared initramfs script, then the /init at `init` (relative to the workspace): what
/// the manifests' `init_sha256` is of.
fn init_scripts(init: &str) -> Vec<u8> {
    let read = |p: &str| std::fs::read(workspace_root().join(p)).unwrap_or_default();
    [read("xtask/initramfs/common.sh"), read(init)].concat()
}

/// The demo guest's image viewer's sources (`crates/demo-viewer`: `Cargo.toml` and every
/// file under `src/`), hashed with their paths: what the guest manifest's
/// `viewer_source_sha256` is of, so that a changed viewer makes the guest stale.
pub fn viewer_source_sha256() -> String {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(&p, out);
            } else {
                out.push(p);
            }
        }
    }
    let root = workspace_root().join("crates/demo-viewer");
    let mut files = vec![root.join("Cargo.toml")];
    walk(&root.join("src"), &mut files);
    files.sort();
    let mut all = Vec::new();
    for f in &files {
        let rel = f.strip_prefix(&root).unwrap_or(f);
        let data = std::fs::read(f).unwrap_or_default();
        all.extend_from_slice(rel.to_string_lossy().as_bytes());
        all.push(0);
        all.extend_from_slice(data.len().to_string().as_bytes());
        all.push(0);
        all.extend_from_slice(&data);
    }
    crate::sha256_hex(&all)
}

/// The qga test image's sources, relative to the workspace: what its manifest's
/// `source_sha256` is of (the builder too, so a changed build makes the image stale).
pub const QGA_GUEST_SOURCES: &[&str] = &[
    "xtask/initramfs/common.sh",
    "xtask/qga-guest/init.sh",
    "xtask/qga-guest/modules.txt",
    "xtask/src/qga_guest.rs",
];

/// [`QGA_GUEST_SOURCES`], hashed with their paths (a missing file hashes as empty).
pub fn qga_guest_source_sha256() -> String {
    let mut all = Vec::new();
    for rel in QGA_GUEST_SOURCES {
        let data = std::fs::read(workspace_root().join(rel)).unwrap_or_default();
        all.extend_from_slice(rel.as_bytes());
        all.push(0);
        all.extend_from_slice(data.len().to_string().as_bytes());
        all.push(0);
        all.extend_from_slice(&data);
    }
    crate::sha256_hex(&all)
}

fn qga_guest_is_current(m: &QgaGuestManifest) -> bool {
    let init = init_scripts("xtask/qga-guest/init.sh");
    [&m.kernel, &m.initrd, &m.golden_disk, &m.uefi_disk]
        .iter()
        .all(|p| p.is_file())
        && m.init_sha256 == crate::sha256_hex(&init)
        && m.source_sha256 == qga_guest_source_sha256()
}

fn find_qga_guest() -> Result<Option<QgaGuestManifest>> {
    let path = build_dir().join("qga-guest/manifest.json");
    if !path.is_file() {
        return Ok(None);
    }
    let m: QgaGuestManifest = read_json(&path)?;
    Ok(qga_guest_is_current(&m).then_some(m))
}

/// The qga test image (Debian's `qemu-guest-agent`; docs/guest.md): `cargo xtask
/// qga-guest` when it is missing or when its sources ([`QGA_GUEST_SOURCES`]) changed
/// since it was built.
pub fn qga_guest() -> Result<&'static QgaGuestManifest> {
    static CELL: OnceLock<Result<QgaGuestManifest, String>> = OnceLock::new();
    once(&CELL, || {
        find_or_build("qga-guest", find_qga_guest, || xtask(&["qga-guest"]))
    })
}

fn guest_is_current(m: &GuestManifest) -> bool {
    let init = init_scripts("xtask/guest/init.sh");
    [&m.kernel, &m.initrd, &m.golden_disk]
        .iter()
        .all(|p| p.is_file())
        && m.init_sha256 == crate::sha256_hex(&init)
        && m.viewer_source_sha256 == viewer_source_sha256()
}

fn find_guest() -> Result<Option<GuestManifest>> {
    let path = build_dir().join("guest/manifest.json");
    if !path.is_file() {
        return Ok(None);
    }
    let m: GuestManifest = read_json(&path)?;
    Ok(guest_is_current(&m).then_some(m))
}

fn find_disc(name: &str) -> Option<FileList> {
    let list = FileList::read(&build_dir().join(format!("discs/{name}.files.json"))).ok()?;
    list.iso.is_file().then_some(list)
}

/// The demo guest and both sample discs, if they are built and current.
fn find_artifacts() -> Result<Option<Artifacts>> {
    let Some(guest) = find_guest()? else {
        return Ok(None);
    };
    Ok(find_disc("sample-small")
        .zip(find_disc("sample"))
        .map(|(small, big)| Artifacts { guest, small, big }))
}

/// What `find` finds; else, under the lock `lock`, what it finds after `build` (unless
/// another process built it meanwhile).
fn find_or_build<T>(
    lock: &str,
    find: impl Fn() -> Result<Option<T>>,
    build: impl FnOnce() -> Result<()>,
) -> Result<T> {
    if let Some(found) = find()? {
        return Ok(found);
    }
    locked(lock, || {
        if let Some(found) = find()? {
            return Ok(found);
        }
        build()?;
        find()?.context("still missing or stale after building it")
    })
}

/// The demo guest alone, for what boots it but reads no disc (the broker benchmark):
/// `cargo xtask guest` when it is missing or when `xtask/guest/init.sh` or the image
/// viewer's sources (`crates/demo-viewer`) changed since it was built.
pub fn guest() -> Result<&'static GuestManifest> {
    static CELL: OnceLock<Result<GuestManifest, String>> = OnceLock::new();
    once(&CELL, || {
        find_or_build("guest", find_guest, || xtask(&["guest"]))
    })
}

/// The demo guest (as [`guest`]) and the sample discs (`cargo xtask sample-disc` when
/// missing).
pub fn artifacts() -> Result<&'static Artifacts> {
    static CELL: OnceLock<Result<Artifacts, String>> = OnceLock::new();
    once(&CELL, || {
        find_or_build("guest", find_artifacts, || {
            if find_guest()?.is_none() {
                xtask(&["guest"])?;
            }
            if find_disc("sample-small").is_none() || find_disc("sample").is_none() {
                xtask(&["sample-disc"])?;
            }
            Ok(())
        })
    })
}

/// The terminal VM, brought up to date by `cargo xtask terminal-guest` once per process
/// (it rebuilds the static `airlock` inside it when the code changed).
pub fn terminal_vm() -> Result<&'static TerminalManifest> {
    static CELL: OnceLock<Result<TerminalManifest, String>> = OnceLock::new();
    once(&CELL, || {
        locked("terminal", || {
            xtask(&["terminal-guest"])?;
            read_json(&build_dir().join("terminal/manifest.json"))
        })
    })
}

/// `airlockd`, `airlock` and `tcp-pump` built for this host by `cargo build` (debug, or
/// release for benchmarks), once per process.
pub fn host_binaries(release: bool) -> Result<&'static HostBinaries> {
    static DEBUG: OnceLock<Result<HostBinaries, String>> = OnceLock::new();
    static RELEASE: OnceLock<Result<HostBinaries, String>> = OnceLock::new();
    once(if release { &RELEASE } else { &DEBUG }, || {
        locked("host-binaries", || {
            let mut cmd = cargo();
            cmd.args([
                "build",
                "--quiet",
                "-p",
                "airlockd",
                "-p",
                "airlock",
                "-p",
                "airlock-testkit",
                "--bins",
            ]);
            if release {
                cmd.arg("--release");
            }
            let what = describe(&cmd);
            let st = cmd
                .stdin(Stdio::null())
                .status()
                .with_context(|| format!("starting `{what}`"))?;
            ensure!(st.success(), "`{what}` failed ({st})");
            let bins = HostBinaries {
                dir: target_dir()?.join(if release { "release" } else { "debug" }),
            };
            for bin in [bins.airlockd(), bins.airlock(), bins.tcp_pump()] {
                if !bin.is_file() {
                    bail!("no {} after `{what}`", bin.display());
                }
            }
            Ok(bins)
        })
    })
}

/// The Rust target of the static builds that run in the VMs (the terminal VM's `airlock`,
/// the desktop guest's [`usb_control`]): with an explicit `--target`, RUSTFLAGS does not
/// reach build scripts and proc macros, so host builds are not invalidated.
pub const STATIC_TARGET: &str = "x86_64-unknown-linux-gnu";

/// This crate's `usb-control` (what a hostile disc sends to its drive), built statically
/// for the demo guest (it has no libc) by `RUSTFLAGS="-C target-feature=+crt-static"
/// cargo build --release --target x86_64-unknown-linux-gnu --target-dir
/// <target>/usb-control -p airlock-testkit --bin usb-control`, once per process (cargo
/// rebuilds it when the code changed). Its own target directory: sharing the terminal
/// VM's static `airlock` build's made each rebuild the other's dependencies.
pub fn usb_control() -> Result<&'static Path> {
    static CELL: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    once(&CELL, || {
        locked("static-tools", || {
            let dir = target_dir()?.join("usb-control");
            let mut cmd = cargo();
            cmd.env("RUSTFLAGS", "-C target-feature=+crt-static")
                .args(["build", "--target-dir"])
                .arg(&dir)
                .args([
                    "--quiet",
                    "--release",
                    "--target",
                    STATIC_TARGET,
                    "-p",
                    "airlock-testkit",
                    "--bin",
                    "usb-control",
                ]);
            let what = describe(&cmd);
            eprintln!("building test artifacts: {what}");
            let st = cmd
                .stdin(Stdio::null())
                .status()
                .with_context(|| format!("starting `{what}`"))?;
            ensure!(st.success(), "`{what}` failed ({st})");
            let bin = dir.join(STATIC_TARGET).join("release").join("usb-control");
            let elf = std::fs::read(&bin).with_context(|| format!("reading {}", bin.display()))?;
            check_static(&elf).with_context(|| format!("checking {}", bin.display()))?;
            Ok(bin)
        })
    })
    .map(PathBuf::as_path)
}

#[cfg(test)]
mod harness_var_tests {
    #[test]
    fn only_what_cargo_sets_for_a_test_is_removed() {
        for k in [
            "CARGO_MANIFEST_DIR",
            "CARGO_PKG_NAME",
            "CARGO_PKG_VERSION_MAJOR",
            "CARGO_BIN_EXE_airlockd",
            "CARGO_TARGET_TMPDIR",
            "OUT_DIR",
        ] {
            assert!(super::is_test_harness_var(k), "{k}");
        }
        for k in [
            "CARGO",
            "CARGO_HOME",
            "CARGO_TARGET_DIR",
            "CARGO_INCREMENTAL",
            "CARGO_BUILD_JOBS",
            "RUSTFLAGS",
        ] {
            assert!(!super::is_test_harness_var(k), "{k}");
        }
    }
}

/// A static executable has no program interpreter (PT_INTERP).
pub fn check_static(elf: &[u8]) -> Result<()> {
    let u16_at = |off: usize| -> Result<usize> {
        Ok(usize::from(u16::from_le_bytes(
            elf.get(off..off + 2).context("truncated ELF")?.try_into()?,
        )))
    };
    let u32_at = |off: usize| -> Result<u32> {
        Ok(u32::from_le_bytes(
            elf.get(off..off + 4).context("truncated ELF")?.try_into()?,
        ))
    };
    ensure!(
        elf.get(..6) == Some(&b"\x7fELF\x02\x01"[..]),
        "not an ELF64 little-endian executable"
    );
    let phoff = usize::try_from(u64::from_le_bytes(
        elf.get(0x20..0x28).context("truncated ELF")?.try_into()?,
    ))?;
    let phentsize = u16_at(0x36)?;
    let phnum = u16_at(0x38)?;
    const PT_INTERP: u32 = 3;
    for i in 0..phnum {
        if u32_at(phoff + i * phentsize)? == PT_INTERP {
            bail!(
                "dynamically linked (it has a program interpreter); build it with \
                 RUSTFLAGS=\"-C target-feature=+crt-static\" --target {STATIC_TARGET}"
            );
        }
    }
    Ok(())
}

/// The cargo target directory of this workspace (honours CARGO_TARGET_DIR and config
/// files).
pub fn target_dir() -> Result<PathBuf> {
    let out = run(cargo().args(["metadata", "--no-deps", "--format-version", "1"]))?;
    let v: serde_json::Value =
        serde_json::from_slice(&out.stdout).context("parsing cargo metadata")?;
    let dir = v["target_directory"]
        .as_str()
        .context("cargo metadata has no target_directory")?;
    Ok(PathBuf::from(dir))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn static_check() {
        // This test binary itself is normally dynamic; a hand-made ELF header
        // with no program headers counts as static.
        let mut elf = vec![0u8; 64];
        elf[..6].copy_from_slice(b"\x7fELF\x02\x01");
        assert!(check_static(&elf).is_ok());
        let mut with_interp = elf.clone();
        with_interp[0x20..0x28].copy_from_slice(&64u64.to_le_bytes());
        with_interp[0x36..0x38].copy_from_slice(&56u16.to_le_bytes());
        with_interp[0x38..0x3a].copy_from_slice(&1u16.to_le_bytes());
        with_interp.extend_from_slice(&3u32.to_le_bytes());
        with_interp.resize(64 + 56, 0);
        assert!(check_static(&with_interp).is_err());
        assert!(check_static(b"nope").is_err());
    }
}
