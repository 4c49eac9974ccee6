//! `cargo xtask terminal-guest`: the test "terminal VM", a stand-in for the
//! HIS terminal with a real Linux USB stack.
//!
//! The same Debian kernel and busybox as `cargo xtask guest` (same download
//! cache); an initramfs that loads the xHCI and virtio-net modules at boot and carries
//! the storage modules (USB storage, SCSI CD, disc filesystems) as a stock terminal does;
//! kmod and udev from Debian (`userland`), so hotplug loads drivers and sets device
//! permissions as on a real terminal; an unprivileged user `clinic` in group `airlock`;
//! and the `airlock` terminal binary built statically. Its /init
//! (`xtask/terminal/init.sh`) installs the terminal guard (`airlock guard install`)
//! unless told not to, starts udev, configures slirp networking and runs a command
//! shell on the serial port. Contract: docs/terminal-vm.md.
//!
//! Outputs (in `--out`, default `build/terminal/`): `vmlinuz`, `initrd.img`,
//! `manifest.json`.

use crate::guest::ExtraFile;
use crate::userland::Userland;
use crate::util::{self, create_dir, mb, sha256_hex, write_atomic};
use crate::{guest, kmod};
use anyhow::{ensure, Context, Result};
use flate2::Compression;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The terminal VM's /init.
pub const INIT_SH: &str = include_str!("../terminal/init.sh");
/// Its kernel modules loaded at boot (dependencies are added).
pub const MODULES_TXT: &str = include_str!("../terminal/modules.txt");
/// Its kernel modules present but not loaded at boot.
pub const STORAGE_MODULES_TXT: &str = include_str!("../terminal/storage-modules.txt");
/// Its users: root, and the clinician's account that runs `airlock open`.
const PASSWD: &str =
    "root:x:0:0:root:/root:/bin/sh\nclinic:x:1000:1000:clinic:/home/clinic:/bin/sh\n";
/// Its groups: `airlock` (the terminal guard's group, as a site's image provisions it)
/// has the clinician's account.
const GROUP: &str = "root:x:0:\nclinic:x:1000:\nairlock:x:990:clinic\n";
/// Kernel command line. The serial port is the console and the command
/// shell; `quiet loglevel=3` keeps kernel messages off it.
pub const APPEND: &str = "console=ttyS0 quiet loglevel=3";
/// The Rust target the terminal binary is built for (statically).
pub use airlock_testkit::artifacts::STATIC_TARGET as TARGET;
const BUILD_FORMAT: &str = "airlock-terminal-build 2";

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
    let userland = Userland::fetch(&cache, &mut updated)?;
    let userland_versions: Vec<String> = userland
        .packages
        .iter()
        .map(|p| format!("{} {}", p.name, p.version))
        .collect();
    let key = util::cache_key(&[
        BUILD_FORMAT,
        &kernel_pkg.name,
        &kernel_pkg.version,
        &busybox_pkg.name,
        &busybox_pkg.version,
        APPEND,
        &guest::init_sha256(INIT_SH),
        &sha256_hex(MODULES_TXT.as_bytes()),
        &sha256_hex(STORAGE_MODULES_TXT.as_bytes()),
        &userland_versions.join(", "),
        PASSWD,
        GROUP,
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
    let storage: Vec<kmod::Module> = debs
        .modules(STORAGE_MODULES_TXT, "xtask/terminal/storage-modules.txt")?
        .into_iter()
        .filter(|s| !modules.iter().any(|m| m.stem == s.stem))
        .collect();
    for m in modules.iter().chain(&storage).filter(|m| m.implied) {
        println!("  adding module {} (a dependency)", m.stem);
    }
    let mut files = userland.files()?;
    // What the kernel has built in (depmod reads it; so does `airlock guard status`).
    for index in ["modules.builtin", "modules.order"] {
        if let Ok(data) = fs::read(debs.modules_dir.join(index)) {
            let path = format!("lib/modules/{}/{index}", debs.kernel_version);
            files.push(ExtraFile::File(path, 0o644, data));
        }
    }
    files.push(ExtraFile::File(
        "bin/airlock".into(),
        0o755,
        airlock_bin.clone(),
    ));
    files.push(ExtraFile::File("etc/passwd".into(), 0o644, PASSWD.into()));
    files.push(ExtraFile::File("etc/group".into(), 0o644, GROUP.into()));
    let tree = guest::ModuleTree {
        kernel_version: &debs.kernel_version,
        source: &debs.modules_dir,
        present: &storage,
    };
    let initrd = initramfs(&debs.busybox, &modules, tree, &files)?;
    write_atomic(&initrd_out, &initrd)?;
    println!(
        "  {} ({} modules, {} of them not loaded at boot; airlock {}, {})",
        initrd_out.display(),
        modules.len() + storage.len(),
        storage.len(),
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

/// A static executable has no program interpreter (the check lives in the test kit,
/// which builds the end-to-end tests' guest tool statically too).
pub use airlock_testkit::artifacts::check_static;

/// The initramfs: busybox, /init, the boot modules (listed in /etc/modules) and the
/// storage modules in the kernel's module tree, and `files` (kmod, udev, `airlock`,
/// users); gzip'd newc cpio.
fn initramfs(
    busybox: &Path,
    modules: &[kmod::Module],
    tree: guest::ModuleTree,
    files: &[ExtraFile],
) -> Result<Vec<u8>> {
    guest::busybox_initramfs(&guest::Initramfs {
        tool: "cargo xtask terminal-guest",
        busybox,
        init: INIT_SH,
        modules,
        module_tree: Some(tree),
        extra_dirs: &[
            "home/clinic",
            "etc/airlock",
            "etc/modprobe.d",
            "etc/udev/rules.d",
        ],
        extra_files: files,
        compression: Compression::default(),
    })
}

/// Does a boot module list leave every storage module unloaded (so that only the guard
/// decides whether one ever loads)?
#[cfg(test)]
fn boot_list_loads_no_storage_module(list: &str) -> bool {
    use airlock_testkit::artifacts::TERMINAL_FORBIDDEN_MODULES as FORBIDDEN_MODULES;
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
    fn the_boot_list_loads_no_storage_module() {
        assert!(boot_list_loads_no_storage_module(MODULES_TXT));
        assert!(!boot_list_loads_no_storage_module("usbcore\nusb-storage\n"));
        assert!(!boot_list_loads_no_storage_module(STORAGE_MODULES_TXT));
    }
}
