//! `cargo xtask qga-guest`: the qga test image (issue 15), a stock guest that runs
//! Debian's real `qemu-guest-agent` on the agent port instead of the demo guest's serial
//! marker, so that the broker's `probe = "qga"` path is tested against the real agent.
//!
//! Outputs (in `--out`, default `build/qga-guest/`): `vmlinuz` (the demo guest's Debian
//! kernel), `initrd.img` (busybox, `qemu-ga` with the shared libraries `ldd` finds for
//! it, /init = `xtask/qga-guest/init.sh`), `golden.qcow2` (the demo guest's golden-disk
//! format, for `-kernel` boots), `uefi.img` (a raw GPT disk whose FAT EFI System
//! Partition holds Debian's signed boot chain: shim, GRUB, the kernel) and
//! `manifest.json` ([`airlock_testkit::artifacts::QgaGuestManifest`]). Unless
//! `--no-check`, the build then boots `uefi.img` under OVMF with Secure Boot enforcing
//! and a swtpm TPM (TCG) and records what the guest saw. The contract is docs/guest.md,
//! "The qga test image".

use crate::guest::{self, ExtraFile, Initramfs, Package};
use crate::util::{self, create_dir, mb, run, run_stdout, sha256_hex, write_atomic};
use airlock_qemu::qga::{check_info, Qga, QgaError};
use airlock_testkit::artifacts::{qga_guest_source_sha256, DebianPackage, GuestLibrary, UefiCheck};
use airlock_testkit::process::{tail, Proc, RunDir};
use anyhow::{bail, ensure, Context, Result};
use flate2::Compression;
use std::collections::{BTreeMap, BTreeSet, HashSet, VecDeque};
use std::fs;
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

pub use airlock_testkit::artifacts::QgaGuestManifest as Manifest;

/// The guest's /init.
pub const INIT_SH: &str = include_str!("../qga-guest/init.sh");
/// Its kernel modules (dependencies are added).
pub const MODULES_TXT: &str = include_str!("../qga-guest/modules.txt");
/// The kernel command line, for `-kernel` boots and in the UEFI disk's grub.cfg. No
/// kernel console on ttyS0: that is qemu-ga's port, and its JSON must stay clean. The
/// kernel's (critical) messages go to the test hook's port ttyS1, whose readers skip
/// lines not starting with `AIRLOCK-QGA-GUEST `.
pub const APPEND: &str = "console=ttyS1 console=tty0 quiet loglevel=3";
/// The firmware the UEFI disk is for: Debian `ovmf`'s Secure Boot build and its VARS
/// template with Microsoft's keys enrolled (Secure Boot on), which trust the
/// Microsoft-signed shim.
pub const OVMF_CODE: &str = "/usr/share/OVMF/OVMF_CODE_4M.secboot.fd";
pub const OVMF_VARS: &str = "/usr/share/OVMF/OVMF_VARS_4M.ms.fd";

/// Bump when the way the outputs are built changes, to invalidate caches.
const BUILD_FORMAT: &str = "airlock-qga-guest-build 1";
const QGA_PACKAGE: &str = "qemu-guest-agent";
/// The signed boot chain: shim (signed by Microsoft), MokManager (by Debian), GRUB (by
/// Debian; shim trusts Debian's key).
const SHIM_PACKAGE: &str = "shim-signed";
const MOK_PACKAGE: &str = "shim-helpers-amd64-signed";
const GRUB_PACKAGE: &str = "grub-efi-amd64-signed";
/// (package, file in it, path on the ESP).
const ESP_BINARIES: [(&str, &str, &str); 3] = [
    (
        SHIM_PACKAGE,
        "usr/lib/shim/shimx64.efi.signed",
        "EFI/BOOT/BOOTX64.EFI",
    ),
    (
        MOK_PACKAGE,
        "usr/lib/shim/mmx64.efi.signed",
        "EFI/BOOT/mmx64.efi",
    ),
    (
        GRUB_PACKAGE,
        "usr/lib/grub/x86_64-efi-signed/grubx64.efi.signed",
        "EFI/BOOT/grubx64.efi",
    ),
];
/// Where Debian's signed (monolithic) GRUB reads its configuration: its embedded prefix
/// is `/EFI/debian` on the partition it was loaded from.
const GRUB_CFG_ON_ESP: &str = "EFI/debian/grub.cfg";

/// The UEFI disk: 64 MiB, GPT, one EFI System Partition from 1 MiB to 1 MiB before the
/// end (the backup GPT is in the last 33 sectors).
const UEFI_DISK_SIZE: u64 = 64 << 20;
const SECTOR: u64 = 512;
const ESP_START: u64 = 2048;
const ESP_SECTORS: u64 = UEFI_DISK_SIZE / SECTOR - 2 * ESP_START;
const ESP_TYPE: &str = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B";
/// Fixed identifiers, so that the same inputs give the same disk layout.
const DISK_GUID: &str = "8A1E7C3D-2B4F-4D5A-9C6E-A1B2C3D4E5F6";
const ESP_GUID: &str = "5E1F0A2B-3C4D-4E5F-8A9B-0C1D2E3F4A5B";
const FAT_VOLUME_ID: &str = "41514741";
const FAT_LABEL: &str = "AIRLOCK-ESP";

/// What qemu-ga finds in `/etc`: the logged-in user and the OS it reports.
const PASSWD: &str =
    "root:x:0:0:root:/root:/bin/sh\nclinician:x:1000:1000:Clinician:/home/clinician:/bin/sh\n";
const GROUP: &str = "root:x:0:\nclinician:x:1000:\n";
const OS_RELEASE: &str =
    "PRETTY_NAME=\"Airlock qga test guest (Debian 12 kernel and qemu-guest-agent)\"\n\
NAME=\"Airlock qga test guest\"\nID=airlock-qga-guest\nID_LIKE=debian\nVERSION_ID=\"1\"\n";

/// The memory of the UEFI check's VM. With 256 MiB, the kernel's EFI stub cannot
/// decompress the kernel after OVMF and GRUB ("Failed to decompress kernel"); 384 MiB
/// boots.
pub const UEFI_MEMORY_MIB: u32 = 512;
/// The longest the build's UEFI boot may take under TCG.
const CHECK_BOOT_TIMEOUT: Duration = Duration::from_secs(300);

pub struct Options {
    pub out: PathBuf,
    pub force: bool,
    /// Skip the Secure Boot + TPM boot of the UEFI disk.
    pub no_check: bool,
}

pub fn default_out() -> PathBuf {
    util::workspace_root().join("build/qga-guest")
}

struct Outputs {
    kernel: PathBuf,
    initrd: PathBuf,
    golden_disk: PathBuf,
    uefi_disk: PathBuf,
}

impl Outputs {
    fn new(out: &Path) -> Self {
        Outputs {
            kernel: out.join("vmlinuz"),
            initrd: out.join("initrd.img"),
            golden_disk: out.join("golden.qcow2"),
            uefi_disk: out.join("uefi.img"),
        }
    }
    fn all(&self) -> [&Path; 4] {
        [
            &self.kernel,
            &self.initrd,
            &self.golden_disk,
            &self.uefi_disk,
        ]
    }
}

pub fn build(opts: &Options) -> Result<Manifest> {
    util::require_tools(&[
        ("apt-get", "apt"),
        ("apt-cache", "apt"),
        ("dpkg-deb", "dpkg"),
        ("dpkg-query", "dpkg"),
        ("ldd", "libc-bin"),
        ("qemu-img", "qemu-utils"),
        ("sfdisk", "fdisk"),
        ("mkfs.vfat", "dosfstools"),
        ("mmd", "mtools"),
        ("mcopy", "mtools"),
        ("mdir", "mtools"),
    ])?;
    if !opts.no_check {
        util::require_tools(&[
            (airlock_testkit::tools::QEMU, "qemu-system-x86"),
            ("swtpm", "swtpm"),
        ])?;
        for f in [OVMF_CODE, OVMF_VARS] {
            ensure!(
                Path::new(f).is_file(),
                "{f} is missing: install Debian's ovmf (scripts/setup.sh does), or build \
                 with --no-check"
            );
        }
    }
    let out = util::absolute(&opts.out)?;
    create_dir(&out)?;
    // The demo guest's package cache: the same kernel and busybox.
    let cache = guest::default_out().join("cache");
    create_dir(&cache.join("debs"))?;

    let mut updated = false;
    let (kernel_pkg, busybox_pkg) = guest::resolve_packages(&mut updated)?;
    let fetch = |name: &str, updated: &mut bool| -> Result<(Package, PathBuf)> {
        let pkg = guest::apt_show(name)?.with_context(|| {
            format!("apt does not know {name}: run `apt-get update` (Debian 12 `main` is needed)")
        })?;
        let deb = guest::download(&cache, &pkg, updated)?;
        let root = guest::extract(&cache, &pkg, &deb)?;
        Ok((pkg, root))
    };
    let (qga_pkg, qga_root) = fetch(QGA_PACKAGE, &mut updated)?;
    let mut boot = BTreeMap::new();
    for name in [SHIM_PACKAGE, MOK_PACKAGE, GRUB_PACKAGE] {
        boot.insert(name, fetch(name, &mut updated)?);
    }
    let qemu_ga = qga_root.join("usr/sbin/qemu-ga");
    let libs = libraries(&qemu_ga, &qga_pkg, &cache, &mut updated)?;

    let ovmf = if opts.no_check {
        String::from("not checked")
    } else {
        format!(
            "{} {}",
            sha256_hex(&fs::read(OVMF_CODE).with_context(|| format!("reading {OVMF_CODE}"))?),
            sha256_hex(&fs::read(OVMF_VARS).with_context(|| format!("reading {OVMF_VARS}"))?)
        )
    };
    let mut key_inputs = vec![
        BUILD_FORMAT.to_owned(),
        format!("{} {}", kernel_pkg.name, kernel_pkg.version),
        format!("{} {}", busybox_pkg.name, busybox_pkg.version),
        format!("{} {}", qga_pkg.name, qga_pkg.version),
        APPEND.to_owned(),
        guest::init_sha256(INIT_SH),
        qga_guest_source_sha256(),
        sha256_hex(guest::GOLDEN_HEADER),
        guest::GOLDEN_SIZE.to_string(),
        ovmf,
    ];
    for (pkg, _) in boot.values() {
        key_inputs.push(format!("{} {}", pkg.name, pkg.version));
    }
    for l in &libs {
        key_inputs.push(format!(
            "{} {} {} {}",
            l.guest_path, l.package, l.version, l.source
        ));
    }
    let key = util::cache_key(&key_inputs.iter().map(String::as_str).collect::<Vec<_>>());

    let manifest_path = out.join("manifest.json");
    let outputs = Outputs::new(&out);
    let stamp = out.join(".cache-key");
    if let Some(manifest) =
        util::up_to_date_manifest::<Manifest>(&out, &key, &outputs.all(), opts.force)?
    {
        // The build directory may have moved: the manifest names the files where they
        // are now.
        let manifest = Manifest {
            kernel: outputs.kernel.clone(),
            initrd: outputs.initrd.clone(),
            golden_disk: outputs.golden_disk.clone(),
            uefi_disk: outputs.uefi_disk.clone(),
            ..manifest
        };
        write_atomic(&manifest_path, &serde_json::to_vec_pretty(&manifest)?)?;
        println!(
            "qga guest is up to date ({} {}, {} {}); use --force to rebuild",
            kernel_pkg.name, kernel_pkg.version, qga_pkg.name, qga_pkg.version
        );
        print_summary(&manifest_path, &manifest);
        return Ok(manifest);
    }
    let _ = fs::remove_file(&stamp);

    let debs = guest::unpack(&cache, &kernel_pkg, &busybox_pkg, &mut updated)?;
    let vmlinuz =
        fs::read(&debs.vmlinuz).with_context(|| format!("reading {}", debs.vmlinuz.display()))?;
    write_atomic(&outputs.kernel, &vmlinuz)?;

    println!("building the initramfs (qemu-ga {})", qga_pkg.version);
    let modules = debs.modules(MODULES_TXT, "xtask/qga-guest/modules.txt")?;
    for m in modules.iter().filter(|m| m.implied) {
        println!("  adding module {} (a dependency)", m.stem);
    }
    let mut files = vec![ExtraFile::File(
        "usr/sbin/qemu-ga".into(),
        0o755,
        fs::read(&qemu_ga).with_context(|| format!("reading {}", qemu_ga.display()))?,
    )];
    for l in &libs {
        let data = fs::read(&l.from).with_context(|| format!("reading {}", l.from.display()))?;
        files.push(ExtraFile::File(
            l.guest_path.trim_start_matches('/').to_owned(),
            0o755,
            data,
        ));
    }
    files.extend([
        // qemu-ga's guest-set-time runs /sbin/hwclock -w and fails without it.
        ExtraFile::Link("sbin/hwclock".into(), "../bin/busybox".into()),
        // utmp is /var/run/utmp for glibc.
        ExtraFile::Link("var/run".into(), "../run".into()),
        ExtraFile::File("etc/passwd".into(), 0o644, PASSWD.into()),
        ExtraFile::File("etc/group".into(), 0o644, GROUP.into()),
        ExtraFile::File("etc/os-release".into(), 0o644, OS_RELEASE.into()),
    ]);
    let initrd = guest::busybox_initramfs(&Initramfs {
        tool: "cargo xtask qga-guest",
        busybox: &debs.busybox,
        init: INIT_SH,
        modules: &modules,
        module_tree: None,
        extra_dirs: &["var/log", "home/clinician"],
        extra_files: &files,
        compression: Compression::best(),
    })?;
    write_atomic(&outputs.initrd, &initrd)?;
    println!(
        "  {} ({} modules, {} libraries, {})",
        outputs.initrd.display(),
        modules.len(),
        libs.len(),
        mb(initrd.len() as u64)
    );

    println!(
        "creating the golden disk ({} MiB qcow2)",
        guest::GOLDEN_SIZE >> 20
    );
    guest::golden_disk(&outputs.golden_disk)?;

    println!("creating the UEFI disk (GPT, EFI System Partition, Debian's signed shim and GRUB)");
    let mut esp = Vec::new();
    for (package, file, to) in ESP_BINARIES {
        let (pkg, root) = &boot[package];
        let from = root.join(file);
        let data = fs::read(&from).with_context(|| format!("reading {}", from.display()))?;
        ensure!(
            pe_signed(&data)
                .with_context(|| format!("reading {} as a PE image", from.display()))?,
            "{} (package {} {}) carries no signature: Secure Boot would refuse it",
            from.display(),
            pkg.name,
            pkg.version
        );
        esp.push((to.to_owned(), data));
    }
    ensure!(
        pe_signed(&vmlinuz).context("reading the kernel as a PE image")?,
        "the kernel {} carries no signature: Secure Boot would refuse it",
        debs.vmlinuz.display()
    );
    esp.push((GRUB_CFG_ON_ESP.to_owned(), grub_cfg().into_bytes()));
    esp.push(("vmlinuz".to_owned(), vmlinuz));
    esp.push(("initrd.img".to_owned(), initrd));
    uefi_disk(&outputs.uefi_disk, &esp)?;

    let mut packages = vec![
        deb_package(&kernel_pkg, "the kernel and its modules"),
        deb_package(&busybox_pkg, "/bin/busybox and /init's tools"),
        deb_package(&qga_pkg, "/usr/sbin/qemu-ga"),
    ];
    for (name, role) in [
        (
            SHIM_PACKAGE,
            "EFI/BOOT/BOOTX64.EFI (shim, signed by Microsoft)",
        ),
        (MOK_PACKAGE, "EFI/BOOT/mmx64.efi (MokManager)"),
        (
            GRUB_PACKAGE,
            "EFI/BOOT/grubx64.efi (GRUB, signed by Debian)",
        ),
    ] {
        packages.push(deb_package(&boot[name].0, role));
    }
    let mut seen = BTreeSet::new();
    for l in &libs {
        if seen.insert((l.package.clone(), l.version.clone())) {
            packages.push(DebianPackage {
                name: l.package.clone(),
                version: l.version.clone(),
                role: format!("shared libraries of qemu-ga ({})", l.source),
            });
        }
    }
    let mut manifest = Manifest {
        kernel: outputs.kernel.clone(),
        initrd: outputs.initrd.clone(),
        golden_disk: outputs.golden_disk.clone(),
        uefi_disk: outputs.uefi_disk.clone(),
        append: APPEND.to_owned(),
        ovmf_code: OVMF_CODE.into(),
        ovmf_vars: OVMF_VARS.into(),
        kernel_version: debs.kernel_version.clone(),
        kernel_package_version: kernel_pkg.version.clone(),
        busybox_version: busybox_pkg.version.clone(),
        qemu_ga_version: qga_pkg.version.clone(),
        packages,
        libraries: libs
            .iter()
            .map(|l| GuestLibrary {
                path: l.guest_path.clone(),
                package: l.package.clone(),
                version: l.version.clone(),
                source: l.source.to_owned(),
            })
            .collect(),
        uefi_check: None,
        init_sha256: guest::init_sha256(INIT_SH),
        source_sha256: qga_guest_source_sha256(),
    };
    if !opts.no_check {
        println!(
            "booting the UEFI disk: OVMF ({OVMF_CODE}), Secure Boot enforcing, a swtpm TPM 2.0, TCG"
        );
        let check = check_uefi(&manifest)?;
        println!(
            "  {} after {:.1} s; qemu-ga {} answered after {:.1} s",
            check.status_line, check.boot_seconds, check.agent_version, check.agent_seconds
        );
        manifest.uefi_check = Some(check);
    }
    write_atomic(&manifest_path, &serde_json::to_vec_pretty(&manifest)?)?;
    write_atomic(&stamp, key.as_bytes())?;
    println!("qga guest built");
    print_summary(&manifest_path, &manifest);
    Ok(manifest)
}

fn deb_package(pkg: &Package, role: &str) -> DebianPackage {
    DebianPackage {
        name: pkg.name.clone(),
        version: pkg.version.clone(),
        role: role.to_owned(),
    }
}

fn print_summary(manifest_path: &Path, m: &Manifest) {
    println!("  manifest:   {}", manifest_path.display());
    println!(
        "  kernel:     {} ({})",
        m.kernel.display(),
        m.kernel_version
    );
    println!(
        "  initrd:     {} (qemu-ga {})",
        m.initrd.display(),
        m.qemu_ga_version
    );
    println!("  golden:     {}", m.golden_disk.display());
    println!("  UEFI disk:  {}", m.uefi_disk.display());
    println!("  append:     {}", m.append);
    match &m.uefi_check {
        Some(c) => println!(
            "  checked with {} + {}: {} (boot {:.1} s, agent {:.1} s)",
            m.ovmf_code.display(),
            m.ovmf_vars.display(),
            c.status_line,
            c.boot_seconds,
            c.agent_seconds
        ),
        None => println!("  the UEFI disk was not booted (--no-check)"),
    }
    println!("try it (the agent on COM1 at /tmp/qga.sock, the test hook on stdout):");
    println!(
        "  qemu-system-x86_64 -accel tcg -machine q35 -m 256 -nodefaults -nic none -display none \\\n    \
         -kernel {} -initrd {} -append '{}' \\\n    \
         -chardev socket,id=qga0,path=/tmp/qga.sock,server=on,wait=off -serial chardev:qga0 -serial stdio",
        m.kernel.display(),
        m.initrd.display(),
        m.append
    );
}

// ------------------------------------------------------------------ libraries

/// A shared library (or the program loader) to copy with qemu-ga.
struct Library {
    /// Where it is read from.
    from: PathBuf,
    /// Its path in the guest (where the loader finds it).
    guest_path: String,
    package: String,
    version: String,
    source: &'static str,
}

/// The libraries `ldd` resolves for `program` on this host. Any it cannot find are taken
/// from Debian packages: `qga`'s dependencies (and theirs) are downloaded and unpacked
/// into the cache, and `ldd` runs again with their library directories.
fn libraries(
    program: &Path,
    qga: &Package,
    cache: &Path,
    updated: &mut bool,
) -> Result<Vec<Library>> {
    // Unpacked dependency packages: (package, its root).
    let mut unpacked: Vec<(Package, PathBuf)> = Vec::new();
    let mut queue: VecDeque<String> = dependency_names(&qga.depends).into();
    let mut seen: HashSet<String> = HashSet::new();
    loop {
        let dirs: Vec<PathBuf> = unpacked
            .iter()
            .flat_map(|(_, root)| {
                ["lib/x86_64-linux-gnu", "usr/lib/x86_64-linux-gnu"].map(|d| root.join(d))
            })
            .filter(|d| d.is_dir())
            .collect();
        let (found, missing) = ldd(program, &dirs)?;
        if missing.is_empty() {
            return found
                .into_iter()
                .map(|path| library(path, &unpacked))
                .collect();
        }
        // Unpack the next package of the dependency closure (libc6 is the host's: ldd
        // itself runs with it).
        let mut fetched = false;
        while let Some(name) = queue.pop_front() {
            if name == "libc6" || !seen.insert(name.clone()) {
                continue;
            }
            let Some(pkg) = guest::apt_show(&name)? else {
                continue;
            };
            println!(
                "this host lacks {} (needed by qemu-ga): looking in {} {}",
                missing.join(", "),
                pkg.name,
                pkg.version
            );
            let deb = guest::download(cache, &pkg, updated)?;
            let root = guest::extract(cache, &pkg, &deb)?;
            queue.extend(dependency_names(&pkg.depends));
            unpacked.push((pkg, root));
            fetched = true;
            break;
        }
        if !fetched {
            bail!(
                "qemu-ga needs {} and neither this host nor the packages it depends on have it: \
                 install qemu-guest-agent's library dependencies (apt-get install {})",
                missing.join(", "),
                dependency_names(&qga.depends).join(" ")
            );
        }
    }
}

/// The package names of a `Depends` field (the first of each set of alternatives).
fn dependency_names(depends: &str) -> Vec<String> {
    depends
        .split(',')
        .filter_map(|d| {
            let first = d.split('|').next()?.trim();
            let name = first.split([' ', '(', ':']).next()?.trim();
            (!name.is_empty()).then(|| name.to_owned())
        })
        .collect()
}

/// `ldd program` with `dirs` searched first: the paths it resolves (the loader
/// included), and the sonames it cannot find.
fn ldd(program: &Path, dirs: &[PathBuf]) -> Result<(Vec<PathBuf>, Vec<String>)> {
    let mut cmd = Command::new("ldd");
    cmd.arg(program);
    if !dirs.is_empty() {
        cmd.env("LD_LIBRARY_PATH", std::env::join_paths(dirs)?);
    }
    let out = cmd
        .output()
        .context("could not run ldd (package libc-bin)")?;
    let text = String::from_utf8_lossy(&out.stdout);
    ensure!(
        out.status.success(),
        "ldd {} failed: {text}{}",
        program.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let mut found = BTreeSet::new();
    let mut missing = Vec::new();
    for line in text.lines().map(str::trim) {
        // `libx.so.1 => /lib/.../libx.so.1 (0x…)`, `libx.so.1 => not found` or
        // `/lib64/ld-linux-x86-64.so.2 (0x…)`.
        if let Some((soname, rest)) = line.split_once("=>") {
            if rest.trim() == "not found" {
                missing.push(soname.trim().to_owned());
                continue;
            }
        }
        let path = line
            .split_once("=>")
            .map_or(line, |(_, r)| r)
            .split_whitespace()
            .next()
            .unwrap_or_default();
        if path.starts_with('/') {
            found.insert(PathBuf::from(path));
        }
    }
    ensure!(
        !found.is_empty() || !missing.is_empty(),
        "ldd found no libraries for {} (is it a static binary?): {text}",
        program.display()
    );
    Ok((found.into_iter().collect(), missing))
}

/// Where a resolved library comes from: an unpacked package (by its root) or the host's
/// package database.
fn library(path: PathBuf, unpacked: &[(Package, PathBuf)]) -> Result<Library> {
    for (pkg, root) in unpacked {
        if let Ok(rel) = path.strip_prefix(root) {
            let guest_path = format!("/{}", rel.to_str().context("a library path is not UTF-8")?);
            return Ok(Library {
                guest_path,
                package: pkg.name.clone(),
                version: pkg.version.clone(),
                source: "deb",
                from: path,
            });
        }
    }
    let guest_path = path
        .to_str()
        .context("a library path is not UTF-8")?
        .to_owned();
    let (package, version) = host_package(&path)?;
    Ok(Library {
        guest_path,
        package,
        version,
        source: "host",
        from: path,
    })
}

/// The installed Debian package that owns `path`, and its version. With merged /usr the
/// loader's path and dpkg's may differ by a `/usr` prefix or a symbolic link: each
/// spelling is asked.
fn host_package(path: &Path) -> Result<(String, String)> {
    let mut candidates = vec![path.to_path_buf()];
    if let Ok(real) = fs::canonicalize(path) {
        candidates.push(real);
    }
    for c in candidates.clone() {
        if let Ok(rest) = c.strip_prefix("/usr") {
            candidates.push(Path::new("/").join(rest));
        } else {
            candidates.push(Path::new("/usr").join(c.strip_prefix("/").unwrap_or(&c)));
        }
    }
    for c in &candidates {
        let Ok(out) = Command::new("dpkg-query").arg("-S").arg(c).output() else {
            continue;
        };
        if !out.status.success() {
            continue;
        }
        // `libudev1:amd64: /usr/lib/x86_64-linux-gnu/libudev.so.1`
        let text = String::from_utf8_lossy(&out.stdout);
        let Some(owner) = text
            .lines()
            .filter(|l| !l.starts_with("diversion"))
            .find_map(|l| l.split_once(": ").map(|(p, _)| p.trim().to_owned()))
        else {
            continue;
        };
        let package = owner
            .split(',')
            .next()
            .unwrap_or_default()
            .trim()
            .to_owned();
        let version = run_stdout(
            Command::new("dpkg-query")
                .args(["-W", "-f", "${Version}"])
                .arg(&package),
        )
        .with_context(|| format!("asking dpkg for the version of {package}"))?;
        let name = package.split(':').next().unwrap_or_default().to_owned();
        return Ok((name, version.trim().to_owned()));
    }
    bail!(
        "no installed Debian package owns {} (dpkg-query -S): qemu-ga's libraries must come \
         from Debian packages",
        path.display()
    )
}

// ------------------------------------------------------------------ UEFI disk

/// Has this PE image a certificate table (an Authenticode signature)?
fn pe_signed(image: &[u8]) -> Result<bool> {
    let u16_at = |off: usize| -> Result<u16> {
        Ok(u16::from_le_bytes(
            image
                .get(off..off + 2)
                .context("truncated PE")?
                .try_into()?,
        ))
    };
    let u32_at = |off: usize| -> Result<u32> {
        Ok(u32::from_le_bytes(
            image
                .get(off..off + 4)
                .context("truncated PE")?
                .try_into()?,
        ))
    };
    ensure!(image.get(..2) == Some(&b"MZ"[..]), "no MZ header");
    let pe = usize::try_from(u32_at(0x3c)?)?;
    ensure!(
        image.get(pe..pe + 4) == Some(&b"PE\0\0"[..]),
        "no PE header"
    );
    let optional = pe + 24;
    // The data directories follow the optional header's fixed part: 96 bytes in PE32,
    // 112 in PE32+; the certificate table is the fifth.
    let directories = match u16_at(optional)? {
        0x10b => optional + 96,
        0x20b => optional + 112,
        m => bail!("unknown optional header magic {m:#x}"),
    };
    let size = u32_at(directories + 4 * 8 + 4)?;
    Ok(size > 0)
}

/// The grub.cfg of the UEFI disk: boot the kernel on the EFI System Partition at once.
fn grub_cfg() -> String {
    format!(
        "# Written by `cargo xtask qga-guest` (xtask/src/qga_guest.rs): the qga test image.\n\
         set timeout=0\n\
         set default=0\n\
         menuentry \"Airlock qga test guest\" {{\n\
         \tlinux /vmlinuz {APPEND}\n\
         \tinitrd /initrd.img\n\
         }}\n"
    )
}

/// Writes the raw GPT disk with one FAT EFI System Partition holding `files` (path on
/// the partition, contents), without loop mounts: sfdisk on the disk file, mkfs.vfat and
/// mtools on a partition image, which is then copied to the partition's offset.
fn uefi_disk(path: &Path, files: &[(String, Vec<u8>)]) -> Result<()> {
    let work = tempfile::Builder::new()
        .prefix("airlock-qga-esp-")
        .tempdir()
        .context("creating a temporary directory")?;
    let fat = work.path().join("esp.fat");
    let disk = util::tmp_path(path);
    let result = (|| -> Result<()> {
        // The partition table.
        {
            let f =
                fs::File::create(&disk).with_context(|| format!("creating {}", disk.display()))?;
            f.set_len(UEFI_DISK_SIZE)?;
        }
        let script = format!(
            "label: gpt\nlabel-id: {DISK_GUID}\nunit: sectors\nfirst-lba: {ESP_START}\n\n\
             start={ESP_START}, size={ESP_SECTORS}, type={ESP_TYPE}, uuid={ESP_GUID}, name=\"EFI System\"\n"
        );
        let mut sfdisk = Command::new("sfdisk");
        sfdisk
            .args([
                "--quiet",
                "--no-reread",
                "--no-tell-kernel",
                "--wipe",
                "always",
            ])
            .arg(&disk)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = sfdisk.spawn().context("starting sfdisk (package fdisk)")?;
        child
            .stdin
            .take()
            .context("sfdisk's stdin")?
            .write_all(script.as_bytes())?;
        let out = child.wait_with_output()?;
        ensure!(
            out.status.success(),
            "sfdisk failed on {}: {}",
            disk.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );

        // The file system, in its own image (FAT32, 512-byte clusters).
        run(Command::new("mkfs.vfat")
            .args([
                "-C",
                "-F",
                "32",
                "-s",
                "1",
                "-i",
                FAT_VOLUME_ID,
                "-n",
                FAT_LABEL,
            ])
            .args(["-h", &ESP_START.to_string()])
            .arg(&fat)
            .arg((ESP_SECTORS * SECTOR / 1024).to_string()))
        .context("creating the EFI System Partition's FAT (mkfs.vfat, package dosfstools)")?;
        let mut dirs = BTreeSet::new();
        for (p, _) in files {
            let mut parent = Path::new(p).parent();
            while let Some(d) = parent.filter(|d| !d.as_os_str().is_empty()) {
                dirs.insert(d.to_string_lossy().into_owned());
                parent = d.parent();
            }
        }
        let mtools = |tool: &str| {
            let mut c = Command::new(tool);
            c.env("MTOOLS_SKIP_CHECK", "1").arg("-i").arg(&fat);
            c
        };
        for d in &dirs {
            run(mtools("mmd").arg(format!("::/{d}")))
                .with_context(|| format!("mmd {d} (package mtools)"))?;
        }
        let staging = work.path().join("files");
        create_dir(&staging)?;
        for (i, (p, data)) in files.iter().enumerate() {
            let src = staging.join(i.to_string());
            fs::write(&src, data).with_context(|| format!("writing {}", src.display()))?;
            run(mtools("mcopy").arg(&src).arg(format!("::/{p}")))
                .with_context(|| format!("mcopy {p} (package mtools)"))?;
        }
        let listing = run_stdout(mtools("mdir").args(["-/", "-b", "::/"]))
            .context("listing the EFI System Partition (mdir)")?;
        for (p, _) in files {
            ensure!(
                listing
                    .lines()
                    .any(|l| l.trim().eq_ignore_ascii_case(&format!("::/{p}"))),
                "{p} is not on the EFI System Partition after mcopy: {listing}"
            );
        }

        // The file system into its partition.
        let image = fs::read(&fat).with_context(|| format!("reading {}", fat.display()))?;
        ensure!(
            image.len() as u64 == ESP_SECTORS * SECTOR,
            "the FAT image is {} bytes, the partition {}",
            image.len(),
            ESP_SECTORS * SECTOR
        );
        let mut f = fs::OpenOptions::new()
            .write(true)
            .open(&disk)
            .with_context(|| format!("opening {}", disk.display()))?;
        f.seek(SeekFrom::Start(ESP_START * SECTOR))?;
        f.write_all(&image)?;
        f.sync_all()?;
        Ok(())
    })();
    if let Err(e) = result {
        let _ = fs::remove_file(&disk);
        return Err(e.context(format!("creating the UEFI disk {}", path.display())));
    }
    fs::rename(&disk, path).with_context(|| format!("renaming {} into place", disk.display()))
}

// ------------------------------------------------------------------ the UEFI check

/// Boots the UEFI disk under OVMF with Secure Boot enforcing (a fresh copy of the VARS
/// template) and a swtpm TPM 2.0, under TCG; requires the test hook to report
/// `tpm=yes efi=yes secureboot=1` and qemu-ga to answer with its dangerous commands
/// blocked and the user logged in.
fn check_uefi(m: &Manifest) -> Result<UefiCheck> {
    let dir = RunDir::new("airlock-qga-uefi-")?;
    let vars = dir.join("vars.fd");
    fs::copy(&m.ovmf_vars, &vars).with_context(|| format!("copying {}", m.ovmf_vars.display()))?;
    let tpm_state = dir.join("tpm");
    create_dir(&tpm_state)?;
    let tpm_sock = dir.join("swtpm.sock");
    let agent_sock = dir.join("agent.sock");
    let ctl_log = dir.join("ctl.log");
    let qemu_log = dir.join("qemu.log");
    let swtpm_log = dir.join("swtpm.log");

    let mut swtpm_cmd = Command::new("swtpm");
    swtpm_cmd
        .args(["socket", "--tpm2", "--terminate"])
        .arg("--tpmstate")
        .arg(format!("dir={}", tpm_state.display()))
        .arg("--ctrl")
        .arg(format!("type=unixio,path={}", tpm_sock.display()))
        .arg("--log")
        .arg(format!("file={}", swtpm_log.display()))
        .stdin(Stdio::null());
    let mut swtpm = Proc::spawn(&mut swtpm_cmd, "swtpm")?;
    let t = Instant::now();
    while !tpm_sock.exists() {
        if !swtpm.running() || t.elapsed() > Duration::from_secs(10) {
            bail!(
                "swtpm did not open its socket; its log: {}",
                tail(&swtpm_log, 20)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }

    let log = fs::File::create(&qemu_log)?;
    let mut qemu_cmd = Command::new(airlock_testkit::tools::QEMU);
    qemu_cmd.args(uefi_qemu_args(m, &vars, &agent_sock, &ctl_log, &tpm_sock));
    qemu_cmd
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    let started = Instant::now();
    let mut qemu = Proc::spawn(&mut qemu_cmd, "QEMU (UEFI check of the qga guest)")?;
    let status_line = loop {
        let text = airlock_testkit::process::read_or_empty(&ctl_log);
        if let Some(l) = text.lines().find(|l| l.starts_with("AIRLOCK-QGA-GUEST ")) {
            break l.to_owned();
        }
        if !qemu.running() {
            bail!("QEMU exited; its log: {}", tail(&qemu_log, 20));
        }
        if started.elapsed() > CHECK_BOOT_TIMEOUT {
            bail!(
                "no AIRLOCK-QGA-GUEST line on ttyS1 within {CHECK_BOOT_TIMEOUT:?} of booting the \
                 UEFI disk (Secure Boot refusing the boot chain?); ttyS1: {}; QEMU: {}",
                tail(&ctl_log, 20),
                tail(&qemu_log, 20)
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let boot_seconds = started.elapsed().as_secs_f64();
    for want in ["tpm=yes", "efi=yes", "secureboot=1"] {
        ensure!(
            status_line.split_whitespace().any(|w| w == want),
            "the guest booted from the UEFI disk says `{status_line}`, not {want}"
        );
    }

    let (info, users, agent_seconds) = airlock_testkit::block_on(async {
        const T: Duration = Duration::from_secs(10);
        let deadline = Instant::now() + Duration::from_secs(120);
        let mut q = loop {
            match Qga::connect(&agent_sock, T).await {
                Ok(q) => break q,
                // Not up yet, or a late answer to an earlier attempt's sync.
                Err(e @ (QgaError::Timeout { .. } | QgaError::WrongSyncId { .. }))
                    if Instant::now() < deadline =>
                {
                    eprintln!("  qemu-ga not answering yet ({e})");
                }
                Err(e) => return Err(anyhow::Error::new(e).context("talking to qemu-ga")),
            }
        };
        let agent_seconds = started.elapsed().as_secs_f64();
        q.ping(T).await.context("guest-ping")?;
        let info = q.info(T).await.context("guest-info")?;
        let users = loop {
            let users = q.users(T).await.context("guest-get-users")?;
            if users.iter().any(|u| u.user == "clinician") || Instant::now() > deadline {
                break users;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        };
        anyhow::Ok((info, users, agent_seconds))
    })?;
    check_info(&info, false).context("qemu-ga's block list")?;
    ensure!(
        users.iter().any(|u| u.user == "clinician"),
        "guest-get-users does not list clinician: {users:?}"
    );
    qemu.kill();
    // swtpm --terminate ends with its client.
    if swtpm.wait_timeout(Duration::from_secs(5)).is_err() {
        bail!("swtpm did not end with QEMU");
    }
    Ok(UefiCheck {
        ovmf_version: run_stdout(Command::new("dpkg-query").args([
            "-W",
            "-f",
            "${Version}",
            "ovmf",
        ]))
        .map(|v| v.trim().to_owned())
        .unwrap_or_else(|_| "not from a Debian package".into()),
        status_line,
        boot_seconds,
        agent_seconds,
        agent_version: info.version,
    })
}

/// The QEMU command line of the UEFI check (docs/guest.md gives it too): q35 with SMM,
/// the Secure Boot firmware read-only with `secure=on` pflash, a private VARS copy, the
/// disk read-only, the agent on COM1, the test hook on COM2 (a file) and a TPM 2.0
/// (tpm-crb) through swtpm.
fn uefi_qemu_args(
    m: &Manifest,
    vars: &Path,
    agent_sock: &Path,
    ctl_log: &Path,
    tpm_sock: &Path,
) -> Vec<String> {
    let memory = UEFI_MEMORY_MIB.to_string();
    [
        "-name",
        "airlock-qga-uefi-check",
        "-machine",
        "q35,smm=on,accel=tcg",
        "-m",
        memory.as_str(),
        "-smp",
        "1",
        "-nodefaults",
        "-no-user-config",
        "-nic",
        "none",
        "-display",
        "none",
        "-global",
        "driver=cfi.pflash01,property=secure,value=on",
    ]
    .map(String::from)
    .into_iter()
    .chain([
        "-drive".into(),
        format!(
            "if=pflash,format=raw,unit=0,file={},readonly=on",
            m.ovmf_code.display()
        ),
        "-drive".into(),
        format!("if=pflash,format=raw,unit=1,file={}", vars.display()),
        "-drive".into(),
        format!(
            "file={},format=raw,if=virtio,readonly=on",
            m.uefi_disk.display()
        ),
        "-chardev".into(),
        format!(
            "socket,id=agent0,path={},server=on,wait=off",
            agent_sock.display()
        ),
        "-serial".into(),
        "chardev:agent0".into(),
        "-chardev".into(),
        format!("file,id=ctl0,path={}", ctl_log.display()),
        "-serial".into(),
        "chardev:ctl0".into(),
        "-chardev".into(),
        format!("socket,id=chrtpm,path={}", tpm_sock.display()),
        "-tpmdev".into(),
        "emulator,id=tpm0,chardev=chrtpm".into(),
        "-device".into(),
        "tpm-crb,tpmdev=tpm0".into(),
    ])
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dependency_names_take_the_first_alternative() {
        assert_eq!(
            dependency_names(
                "libc6 (>= 2.34), libglib2.0-0 (>= 2.63.3), foo:any | bar, libudev1 (>= 183)"
            ),
            ["libc6", "libglib2.0-0", "foo", "libudev1"]
        );
        assert!(dependency_names("").is_empty());
    }

    #[test]
    fn grub_cfg_boots_the_kernel_with_the_command_line() {
        let cfg = grub_cfg();
        assert!(cfg.contains(&format!("linux /vmlinuz {APPEND}\n")), "{cfg}");
        assert!(cfg.contains("initrd /initrd.img\n"), "{cfg}");
    }

    #[test]
    fn unsigned_and_broken_pe_images() {
        // A minimal PE32+ header with an empty certificate table, then with one.
        let mut pe = vec![0u8; 0x200];
        pe[..2].copy_from_slice(b"MZ");
        pe[0x3c..0x40].copy_from_slice(&0x80u32.to_le_bytes());
        pe[0x80..0x84].copy_from_slice(b"PE\0\0");
        pe[0x98..0x9a].copy_from_slice(&0x20bu16.to_le_bytes());
        assert!(!pe_signed(&pe).unwrap());
        let cert_size = 0x98 + 112 + 4 * 8 + 4;
        pe[cert_size..cert_size + 4].copy_from_slice(&1472u32.to_le_bytes());
        assert!(pe_signed(&pe).unwrap());
        assert!(pe_signed(b"MZ").is_err());
        assert!(pe_signed(b"not a PE").is_err());
    }
}
