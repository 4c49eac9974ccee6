//! `cargo xtask terminal-guest`: the test "terminal VM", a stand-in for the
//! HIS terminal with a real Linux USB stack.
//!
//! The same Debian kernel and busybox as `cargo xtask guest` (same download
//! cache), an initramfs with only the xHCI and virtio-net modules (no USB
//! storage, no SCSI, no CD-ROM driver: the guard), and the `airlock` terminal
//! binary built statically, so it runs on busybox without a libc. Its /init
//! (`xtask/terminal/init.sh`) configures slirp networking and runs a command
//! shell on the serial port. Contract: docs/terminal-vm.md.
//!
//! Outputs (in `--out`, default `build/terminal/`): `vmlinuz`, `initrd.img`,
//! `manifest.json`.

use crate::util::{self, create_dir, mb, sha256_hex, write_atomic};
use crate::{guest, kmod};
use anyhow::{bail, ensure, Context, Result};
use flate2::Compression;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The terminal VM's /init.
pub const INIT_SH: &str = include_str!("../terminal/init.sh");
/// Its kernel modules (dependencies are added).
pub const MODULES_TXT: &str = include_str!("../terminal/modules.txt");
/// Kernel command line. The serial port is the console and the command
/// shell; `quiet loglevel=3` keeps kernel messages off it.
pub const APPEND: &str = "console=ttyS0 quiet loglevel=3";
/// The Rust target the terminal binary is built for (statically).
pub const TARGET: &str = "x86_64-unknown-linux-gnu";
/// Modules that must never be in the terminal's initramfs (the guard).
use airlock_testkit::artifacts::TERMINAL_FORBIDDEN_MODULES as FORBIDDEN_MODULES;
const BUILD_FORMAT: &str = "airlock-terminal-build 1";

pub struct Options {
    pub out: PathBuf,
    pub force: bool,
    /// Use this `airlock` binary (must be static) instead of building one.
    pub airlock_bin: Option<PathBuf>,
}

pub fn default_out() -> PathBuf {
    util::workspace_root().join("build/terminal")
}

/// `manifest.json` of the terminal VM (the type lives in the test kit, which reads it).
pub use airlock_testkit::TerminalManifest as Manifest;

pub fn build(opts: &Options) -> Result<Manifest> {
    util::require_tools(&[
        ("apt-get", "apt"),
        ("apt-cache", "apt"),
        ("dpkg-deb", "dpkg"),
    ])?;
    let out = util::absolute(&opts.out)?;
    create_dir(&out)?;
    // The Debian packages are shared with `cargo xtask guest`.
    let cache = guest::default_out().join("cache");
    create_dir(&cache.join("debs"))?;

    let airlock = match &opts.airlock_bin {
        Some(p) => util::absolute(p)?,
        None => build_static_airlock()?,
    };
    let airlock_bin =
        fs::read(&airlock).with_context(|| format!("reading {}", airlock.display()))?;
    check_static(&airlock_bin).with_context(|| format!("checking {}", airlock.display()))?;
    let version = util::run_stdout(Command::new(&airlock).arg("--version"))
        .with_context(|| format!("running {} --version", airlock.display()))?;
    let airlock_sha256 = sha256_hex(&airlock_bin);

    let mut updated = false;
    let (kernel_pkg, busybox_pkg) = guest::resolve_packages(&mut updated)?;
    let key = util::cache_key(&[
        BUILD_FORMAT,
        &kernel_pkg.name,
        &kernel_pkg.version,
        &busybox_pkg.name,
        &busybox_pkg.version,
        APPEND,
        &guest::init_sha256(INIT_SH),
        &sha256_hex(MODULES_TXT.as_bytes()),
        &airlock_sha256,
    ]);
    let kernel_out = out.join("vmlinuz");
    let initrd_out = out.join("initrd.img");
    let manifest_path = out.join("manifest.json");
    let stamp = out.join(".cache-key");
    if !opts.force
        && fs::read_to_string(&stamp).is_ok_and(|s| s.trim() == key)
        && kernel_out.is_file()
        && initrd_out.is_file()
    {
        if let Ok(m) = fs::read(&manifest_path)
            .map_err(anyhow::Error::from)
            .and_then(|d| Ok(serde_json::from_slice::<Manifest>(&d)?))
        {
            println!(
                "terminal guest is up to date ({}); use --force to rebuild",
                version.trim()
            );
            return Ok(m);
        }
    }
    let _ = fs::remove_file(&stamp);

    let debs = guest::unpack(&cache, &kernel_pkg, &busybox_pkg, &mut updated)?;
    let data =
        fs::read(&debs.vmlinuz).with_context(|| format!("reading {}", debs.vmlinuz.display()))?;
    write_atomic(&kernel_out, &data)?;

    println!("building the terminal initramfs");
    let modules = debs.modules(MODULES_TXT, "xtask/terminal/modules.txt")?;
    for m in &modules {
        let name = kmod::normalize(&m.stem);
        ensure!(
            !FORBIDDEN_MODULES.contains(&name.as_str()),
            "module {name} must not be in the terminal VM (the guard: no storage driver on the terminal)"
        );
        if m.implied {
            println!("  adding module {} (a dependency)", m.stem);
        }
    }
    let initrd = initramfs(&debs.busybox, &modules, &airlock_bin)?;
    write_atomic(&initrd_out, &initrd)?;
    println!(
        "  {} ({} modules, airlock {}, {})",
        initrd_out.display(),
        modules.len(),
        mb(airlock_bin.len() as u64),
        mb(initrd.len() as u64)
    );

    let manifest = Manifest {
        kernel: kernel_out,
        initrd: initrd_out,
        append: APPEND.to_string(),
        kernel_version: debs.kernel_version,
        kernel_package_version: kernel_pkg.version.clone(),
        busybox_version: busybox_pkg.version.clone(),
        airlock,
        airlock_sha256,
        init_sha256: guest::init_sha256(INIT_SH),
    };
    write_atomic(&manifest_path, &serde_json::to_vec_pretty(&manifest)?)?;
    write_atomic(&stamp, key.as_bytes())?;
    println!("terminal guest built: {}", manifest_path.display());
    println!(
        "  airlock      {} ({})",
        manifest.airlock.display(),
        version.trim()
    );
    println!("  kernel       {}", manifest.kernel.display());
    println!("  initrd       {}", manifest.initrd.display());
    println!("see docs/terminal-vm.md for how to boot it");
    Ok(manifest)
}

pub use airlock_testkit::artifacts::target_dir;

/// `RUSTFLAGS="-C target-feature=+crt-static" cargo build --release
/// --target x86_64-unknown-linux-gnu -p airlock`. With an explicit
/// `--target`, RUSTFLAGS does not reach build scripts and proc macros, so
/// host builds are not invalidated.
pub fn build_static_airlock() -> Result<PathBuf> {
    println!("building the static airlock binary ({TARGET}, +crt-static)");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(util::workspace_root())
        .env("RUSTFLAGS", "-C target-feature=+crt-static")
        .args(["build", "--release", "--target", TARGET, "-p", "airlock"]);
    let what = util::describe(&cmd);
    let status = cmd
        .status()
        .with_context(|| format!("could not start `{what}`"))?;
    ensure!(status.success(), "`{what}` failed ({status})");
    let bin = target_dir()?.join(TARGET).join("release").join("airlock");
    ensure!(bin.is_file(), "cargo did not produce {}", bin.display());
    Ok(bin)
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
                 RUSTFLAGS=\"-C target-feature=+crt-static\" --target {TARGET}"
            );
        }
    }
    Ok(())
}

/// The initramfs: busybox, /init, the modules and /etc/modules, and
/// /bin/airlock; gzip'd newc cpio.
fn initramfs(busybox: &Path, modules: &[kmod::Module], airlock: &[u8]) -> Result<Vec<u8>> {
    guest::busybox_initramfs(&guest::Initramfs {
        tool: "cargo xtask terminal-guest",
        busybox,
        init: INIT_SH,
        modules,
        extra_dirs: &[],
        extra_files: &[("bin/airlock", airlock)],
        compression: Compression::default(),
    })
}

/// Does the module list keep the guard? (Also checked at build time.)
#[cfg(test)]
fn modules_keep_guard(list: &str) -> bool {
    list.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| l.split_whitespace().next())
        .all(|m| !FORBIDDEN_MODULES.contains(&kmod::normalize(m).as_str()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn module_list_keeps_the_guard() {
        assert!(modules_keep_guard(MODULES_TXT));
        assert!(!modules_keep_guard("usbcore\nusb-storage\n"));
    }

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
