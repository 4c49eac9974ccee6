//! `cargo xtask guest`: the demo guest, built from Debian packages alone.
//!
//! Outputs (in `--out`, default `build/guest/`): `vmlinuz`, `initrd.img`
//! (gzip'd newc cpio: busybox, kernel modules, /init), `golden.qcow2` (the
//! writable disk) and `manifest.json`. The guest's behaviour is specified in
//! docs/guest.md; its /init is `xtask/guest/init.sh`.

use crate::util::{self, create_dir, mb, run, sha256_hex, write_atomic};
use crate::{cpio, kmod};
use anyhow::{bail, ensure, Context, Result};
use flate2::{write::GzEncoder, Compression};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The guest's /init.
pub const INIT_SH: &str = include_str!("../guest/init.sh");
/// What every xtask initramfs has at /lib/airlock/common.sh, sourced by its /init.
pub const COMMON_SH: &str = include_str!("../initramfs/common.sh");

/// The manifests' `init_sha256`: of the shared script, then the image's /init (the
/// test kit hashes the same two files to know whether a build is current).
pub fn init_sha256(init: &str) -> String {
    sha256_hex(format!("{COMMON_SH}{init}").as_bytes())
}
/// The kernel modules in the initramfs (dependencies are added).
pub const MODULES_TXT: &str = include_str!("../guest/modules.txt");
/// Recommended kernel command line. ttyS0 carries the kernel console too
/// (quiet: only critical messages), so a panic is seen on the agent port.
/// `block.events_dfl_poll_msecs` makes the kernel poll CD drives for media
/// changes. `video=800x600` is the screen's mode (the bochs driver would take QEMU's
/// EDID preference, 1280x800): fbcon draws fewer pixels under TCG, and the desktop fits
/// unscaled in a viewer's window on a 1024x768 screen.
pub const APPEND: &str =
    "console=ttyS0 console=tty0 quiet loglevel=3 block.events_dfl_poll_msecs=1000 video=800x600";
/// What /dev/vda starts with on the golden disk.
pub use airlock_testkit::artifacts::GOLDEN_HEADER;
pub const GOLDEN_SIZE: u64 = 64 << 20;

const KERNEL_META_PACKAGE: &str = "linux-image-amd64";
const BUSYBOX_PACKAGE: &str = "busybox-static";
/// Bump when the way the outputs are built changes, to invalidate caches.
const BUILD_FORMAT: &str = "airlock-guest-build 2";
/// The console font the image viewer draws its text with: the build host's Debian
/// console font (package `console-setup-linux`), decompressed into the initramfs as
/// `/lib/airlock/font.psf` (the test kit names it: tests render with it too).
pub use airlock_testkit::artifacts::VIEWER_FONT;
/// Where the viewer and its font are in the initramfs.
const VIEWER_BIN: &str = "bin/demo-viewer";
const VIEWER_FONT_IN_INITRD: &str = "lib/airlock/font.psf";

pub struct Options {
    pub out: PathBuf,
    pub force: bool,
}

pub fn default_out() -> PathBuf {
    util::workspace_root().join("build/guest")
}

/// `manifest.json`: what a broker config (or a test) needs to boot the guest (the type
/// lives in the test kit, which reads it).
pub use airlock_testkit::GuestManifest as Manifest;

/// A package as `apt-cache show` describes its candidate version.
#[derive(Debug, Clone)]
pub(crate) struct Package {
    pub(crate) name: String,
    pub(crate) version: String,
    arch: String,
    size: u64,
    pub(crate) depends: String,
}

impl Package {
    /// The file name `apt-get download` gives it.
    fn deb_name(&self) -> String {
        format!(
            "{}_{}_{}.deb",
            self.name,
            self.version.replace(':', "%3a"),
            self.arch
        )
    }
}

pub fn build(opts: &Options) -> Result<Manifest> {
    util::require_tools(&[
        ("apt-get", "apt"),
        ("apt-cache", "apt"),
        ("dpkg-deb", "dpkg"),
        ("qemu-img", "qemu-utils"),
    ])?;
    let out = util::absolute(&opts.out)?;
    create_dir(&out)?;
    let cache = out.join("cache");
    create_dir(&cache.join("debs"))?;

    let mut updated = false;
    let (kernel_pkg, busybox_pkg) = resolve_packages(&mut updated)?;
    let manifest_path = out.join("manifest.json");
    let outputs = Outputs::new(&out);
    let viewer = Viewer::build()?;

    let key = cache_key(&kernel_pkg, &busybox_pkg, &viewer);
    let stamp = out.join(".cache-key");
    if let Some(manifest) =
        util::up_to_date_manifest::<Manifest>(&out, &key, &outputs.all(), opts.force)?
    {
        // The build directory may have moved: the manifest names the files
        // where they are now.
        let manifest = Manifest {
            kernel: outputs.kernel.clone(),
            initrd: outputs.initrd.clone(),
            golden_disk: outputs.golden_disk.clone(),
            viewer_sha256: sha256_hex(&viewer.binary),
            viewer_source_sha256: viewer.source_sha256.clone(),
            ..manifest
        };
        write_atomic(&manifest_path, &serde_json::to_vec_pretty(&manifest)?)?;
        println!(
            "guest is up to date ({} {}, {} {}); use --force to rebuild",
            kernel_pkg.name, kernel_pkg.version, busybox_pkg.name, busybox_pkg.version
        );
        print_summary(&manifest_path, &manifest);
        return Ok(manifest);
    }
    let _ = fs::remove_file(&stamp);

    let debs = unpack(&cache, &kernel_pkg, &busybox_pkg, &mut updated)?;
    copy_atomic(&debs.vmlinuz, &outputs.kernel)?;

    println!("building initramfs");
    let modules = debs.modules(MODULES_TXT, "xtask/guest/modules.txt")?;
    for m in modules.iter().filter(|m| m.implied) {
        println!("  adding module {} (a dependency)", m.stem);
    }
    let initrd = initramfs(&debs.busybox, &modules, &viewer)?;
    write_atomic(&outputs.initrd, &initrd)?;
    println!(
        "  {} ({} modules, image viewer {}, {})",
        outputs.initrd.display(),
        modules.len(),
        mb(viewer.binary.len() as u64),
        mb(initrd.len() as u64)
    );

    println!("creating the golden disk ({} MiB qcow2)", GOLDEN_SIZE >> 20);
    golden_disk(&outputs.golden_disk)?;

    let manifest = Manifest {
        kernel: outputs.kernel.clone(),
        initrd: outputs.initrd.clone(),
        golden_disk: outputs.golden_disk.clone(),
        append: APPEND.to_string(),
        kernel_version: debs.kernel_version,
        kernel_package_version: kernel_pkg.version.clone(),
        busybox_version: busybox_pkg.version.clone(),
        init_sha256: init_sha256(INIT_SH),
        viewer_sha256: sha256_hex(&viewer.binary),
        viewer_source_sha256: viewer.source_sha256.clone(),
    };
    write_atomic(&manifest_path, &serde_json::to_vec_pretty(&manifest)?)?;
    write_atomic(&stamp, key.as_bytes())?;
    println!("guest built");
    print_summary(&manifest_path, &manifest);
    Ok(manifest)
}

struct Outputs {
    kernel: PathBuf,
    initrd: PathBuf,
    golden_disk: PathBuf,
}

impl Outputs {
    fn new(out: &Path) -> Self {
        Outputs {
            kernel: out.join("vmlinuz"),
            initrd: out.join("initrd.img"),
            golden_disk: out.join("golden.qcow2"),
        }
    }
    fn all(&self) -> [&Path; 3] {
        [&self.kernel, &self.initrd, &self.golden_disk]
    }
}

fn cache_key(kernel: &Package, busybox: &Package, viewer: &Viewer) -> String {
    util::cache_key(&[
        BUILD_FORMAT,
        &kernel.name,
        &kernel.version,
        &busybox.name,
        &busybox.version,
        APPEND,
        &init_sha256(INIT_SH),
        &sha256_hex(MODULES_TXT.as_bytes()),
        &sha256_hex(GOLDEN_HEADER),
        &GOLDEN_SIZE.to_string(),
        &sha256_hex(&viewer.binary),
        &sha256_hex(&viewer.font),
    ])
}

/// The demo guest's image viewer (`crates/demo-viewer`), built statically, and its font.
pub(crate) struct Viewer {
    pub binary: Vec<u8>,
    /// `airlock_testkit::artifacts::viewer_source_sha256()` when it was built.
    pub source_sha256: String,
    /// The PSF font, decompressed.
    pub font: Vec<u8>,
}

impl Viewer {
    /// `RUSTFLAGS="-C target-feature=+crt-static" cargo build --release --target
    /// x86_64-unknown-linux-gnu --target-dir <target>/demo-viewer -p demo-viewer` (the
    /// guest has no libc; its own target directory, as the test kit's static tools), and
    /// the console font from [`VIEWER_FONT`].
    fn build() -> Result<Viewer> {
        let source_sha256 = airlock_testkit::artifacts::viewer_source_sha256();
        let target = airlock_testkit::artifacts::STATIC_TARGET;
        let dir = crate::terminal::target_dir()?.join("demo-viewer");
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let mut cmd = Command::new(cargo);
        cmd.current_dir(util::workspace_root())
            .env("RUSTFLAGS", "-C target-feature=+crt-static")
            .args([
                "build",
                "--quiet",
                "--release",
                "--target",
                target,
                "--target-dir",
            ])
            .arg(&dir)
            .args(["-p", "demo-viewer", "--bin", "demo-viewer"]);
        println!("building the image viewer ({target}, +crt-static)");
        run(&mut cmd).context("building the demo guest's image viewer")?;
        let bin = dir.join(target).join("release").join("demo-viewer");
        let binary = fs::read(&bin).with_context(|| format!("reading {}", bin.display()))?;
        crate::terminal::check_static(&binary)
            .with_context(|| format!("checking {}", bin.display()))?;
        let gz = fs::read(VIEWER_FONT).with_context(|| {
            format!(
                "reading the console font {VIEWER_FONT}: install Debian's console-setup-linux \
                 (scripts/setup.sh does)"
            )
        })?;
        let mut font = Vec::new();
        std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&gz[..]), &mut font)
            .with_context(|| format!("decompressing {VIEWER_FONT}"))?;
        ensure!(
            font.starts_with(&[0x36, 0x04]) || font.starts_with(&[0x72, 0xb5, 0x4a, 0x86]),
            "{VIEWER_FONT} is not a PSF font"
        );
        Ok(Viewer {
            binary,
            source_sha256,
            font,
        })
    }
}

fn print_summary(manifest_path: &Path, m: &Manifest) {
    println!(
        "  kernel       {} ({})",
        m.kernel.display(),
        m.kernel_version
    );
    println!("  initrd       {}", m.initrd.display());
    println!("  golden disk  {}", m.golden_disk.display());
    println!("  manifest     {}", manifest_path.display());
    println!("  append       {}", m.append);
    println!(
        "next: point the broker's desktop config at these files (see docs/guest.md), or try it:"
    );
    println!(
        "  qemu-img create -f qcow2 -b {} -F qcow2 /tmp/airlock-demo.qcow2",
        m.golden_disk.display()
    );
    println!(
        "  qemu-system-x86_64 -accel tcg -machine q35 -m 256 -nodefaults -nic none \\\n    \
         -vga std -display none -vnc 127.0.0.1:0 \\\n    \
         -kernel {} -initrd {} \\\n    -append '{} airlock.control=1' \\\n    \
         -serial stdio -serial pty -device qemu-xhci,id=xhci \\\n    \
         -drive file=/tmp/airlock-demo.qcow2,if=virtio,format=qcow2",
        m.kernel.display(),
        m.initrd.display(),
        m.append
    );
    println!(
        "  then type `airlock-ping 1` (answer: AIRLOCK-READY 1; Ctrl-C quits), watch the console with a VNC \
         viewer on :0; `cargo xtask sample-disc` makes discs to hot-plug"
    );
}

// ------------------------------------------------------------------ apt

/// Candidate versions of the kernel (the package `linux-image-amd64` depends
/// on) and of busybox-static. Runs `apt-get update` once if apt knows neither.
pub(crate) fn resolve_packages(updated: &mut bool) -> Result<(Package, Package)> {
    loop {
        let meta = apt_show(KERNEL_META_PACKAGE)?;
        let busybox = apt_show(BUSYBOX_PACKAGE)?;
        match (meta, busybox) {
            (Some(meta), Some(busybox)) => {
                let kernel_name = meta
                    .depends
                    .split(',')
                    .map(|d| d.trim().split([' ', '(']).next().unwrap_or_default())
                    .find(|d| d.starts_with("linux-image-"))
                    .with_context(|| {
                        format!("{KERNEL_META_PACKAGE} depends on no linux-image-* package: {}", meta.depends)
                    })?
                    .to_string();
                let kernel = apt_show(&kernel_name)?.with_context(|| {
                    format!("apt knows {KERNEL_META_PACKAGE} but not its dependency {kernel_name}; run `apt-get update`")
                })?;
                return Ok((kernel, busybox));
            }
            _ if !*updated => {
                println!(
                    "apt does not know {KERNEL_META_PACKAGE} / {BUSYBOX_PACKAGE} (package lists missing or stale): running `apt-get update` once"
                );
                apt_update()?;
                *updated = true;
            }
            _ => bail!(
                "apt cannot find {KERNEL_META_PACKAGE} and {BUSYBOX_PACKAGE} even after `apt-get update`; \
                 check /etc/apt/sources.list* (Debian 12 `main` is needed)"
            ),
        }
    }
}

fn apt_update() -> Result<()> {
    run(Command::new("apt-get").arg("update"))
        .context("`apt-get update` failed: check the network and /etc/apt/sources.list*, or run it by hand as root")?;
    Ok(())
}

pub(crate) fn apt_show(name: &str) -> Result<Option<Package>> {
    let out = Command::new("apt-cache")
        .args(["show", "--no-all-versions", name])
        .output()
        .context("could not run apt-cache")?;
    if !out.status.success() || out.stdout.is_empty() {
        return Ok(None);
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let field = |f: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(f).and_then(|r| r.strip_prefix(':')))
            .map(|v| v.trim().to_string())
    };
    let version = field("Version").with_context(|| format!("apt-cache show {name}: no Version"))?;
    Ok(Some(Package {
        name: name.to_string(),
        version,
        arch: field("Architecture").unwrap_or_else(|| "amd64".into()),
        size: field("Size").and_then(|s| s.parse().ok()).unwrap_or(0),
        depends: field("Depends").unwrap_or_default(),
    }))
}

/// `apt-get download` into the cache (skipped when the .deb is there).
/// The kernel and busybox packages, unpacked.
pub(crate) struct Unpacked {
    /// The kernel image, `boot/vmlinuz-<uname -r>`.
    pub vmlinuz: PathBuf,
    /// `uname -r` of the kernel.
    pub kernel_version: String,
    /// `lib/modules/<uname -r>` of the kernel package.
    pub modules_dir: PathBuf,
    /// The static busybox.
    pub busybox: PathBuf,
}

/// Downloads (into `cache`, unless there already) and unpacks the kernel and busybox
/// packages; `updated` as for [`resolve_packages`].
pub(crate) fn unpack(
    cache: &Path,
    kernel: &Package,
    busybox: &Package,
    updated: &mut bool,
) -> Result<Unpacked> {
    let kernel_deb = download(cache, kernel, updated)?;
    let busybox_deb = download(cache, busybox, updated)?;
    let kernel_root = extract(cache, kernel, &kernel_deb)?;
    let busybox_root = extract(cache, busybox, &busybox_deb)?;
    let (vmlinuz, kernel_version) = find_kernel(&kernel_root)?;
    Ok(Unpacked {
        vmlinuz,
        modules_dir: kernel_root.join("lib/modules").join(&kernel_version),
        kernel_version,
        busybox: busybox_root.join("bin/busybox"),
    })
}

impl Unpacked {
    /// The modules a `modules.txt` names (`what` in errors), with their dependencies,
    /// in load order.
    pub fn modules(&self, list: &str, what: &str) -> Result<Vec<kmod::Module>> {
        let index = kmod::index(&self.modules_dir).with_context(|| {
            format!(
                "indexing the kernel modules in {}",
                self.modules_dir.display()
            )
        })?;
        kmod::resolve(list, &index).with_context(|| format!("resolving {what}"))
    }
}

pub(crate) fn download(cache: &Path, pkg: &Package, updated: &mut bool) -> Result<PathBuf> {
    let dir = cache.join("debs");
    let deb = dir.join(pkg.deb_name());
    if deb.is_file() {
        return Ok(deb);
    }
    println!(
        "downloading {} {} ({})",
        pkg.name,
        pkg.version,
        mb(pkg.size)
    );
    let mut cmd = Command::new("apt-get");
    cmd.current_dir(&dir)
        .arg("download")
        .arg(format!("{}={}", pkg.name, pkg.version));
    if let Err(e) = run(&mut cmd) {
        if *updated {
            return Err(e).context(format!("downloading {}", pkg.name));
        }
        println!("download failed ({e:#}); running `apt-get update` once and retrying");
        apt_update()?;
        *updated = true;
        run(&mut cmd).with_context(|| {
            format!(
                "downloading {} {} failed even after `apt-get update` (the version may have left the mirror: \
                 run `cargo xtask guest` again to pick the current one)",
                pkg.name, pkg.version
            )
        })?;
    }
    if !deb.is_file() {
        bail!(
            "`apt-get download` did not leave {} in {}",
            pkg.deb_name(),
            dir.display()
        );
    }
    Ok(deb)
}

/// `dpkg-deb -x` into the cache (skipped when already complete).
pub(crate) fn extract(cache: &Path, pkg: &Package, deb: &Path) -> Result<PathBuf> {
    let dir =
        cache
            .join("extract")
            .join(format!("{}_{}", pkg.name, pkg.version.replace(':', "%3a")));
    let done = dir.join(".complete");
    if done.is_file() {
        return Ok(dir);
    }
    println!(
        "extracting {}",
        deb.file_name().unwrap_or_default().to_string_lossy()
    );
    if dir.exists() {
        fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))?;
    }
    create_dir(&dir)?;
    run(Command::new("dpkg-deb").arg("-x").arg(deb).arg(&dir)).with_context(|| {
        format!(
            "extracting {} (delete it to download it again)",
            deb.display()
        )
    })?;
    fs::write(&done, b"").with_context(|| format!("writing {}", done.display()))?;
    Ok(dir)
}

fn find_kernel(root: &Path) -> Result<(PathBuf, String)> {
    let boot = root.join("boot");
    for entry in fs::read_dir(&boot).with_context(|| format!("reading {}", boot.display()))? {
        let path = entry?.path();
        let name = path
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        if let Some(version) = name.strip_prefix("vmlinuz-") {
            return Ok((path.clone(), version.to_string()));
        }
    }
    bail!(
        "no boot/vmlinuz-* in the kernel package ({})",
        root.display()
    )
}

fn copy_atomic(from: &Path, to: &Path) -> Result<()> {
    let data = fs::read(from).with_context(|| format!("reading {}", from.display()))?;
    write_atomic(to, &data)
}

// ------------------------------------------------------------------ initramfs

/// The initramfs: busybox, /init and its shared script, the modules and /etc/modules,
/// the image viewer and its font, gzip'd.
fn initramfs(busybox: &Path, modules: &[kmod::Module], viewer: &Viewer) -> Result<Vec<u8>> {
    busybox_initramfs(&Initramfs {
        tool: "cargo xtask guest",
        busybox,
        init: INIT_SH,
        modules,
        module_tree: None,
        extra_dirs: &["media"],
        extra_files: &[
            ExtraFile::File(VIEWER_BIN.into(), 0o755, viewer.binary.clone()),
            ExtraFile::File(VIEWER_FONT_IN_INITRD.into(), 0o644, viewer.font.clone()),
        ],
        compression: Compression::best(),
    })
}

/// A file of an initramfs besides busybox and /init.
pub(crate) enum ExtraFile {
    /// A regular file: path (relative), mode, contents.
    File(String, u32, Vec<u8>),
    /// A symbolic link: path, target.
    Link(String, String),
}

impl ExtraFile {
    fn path(&self) -> &str {
        match self {
            ExtraFile::File(p, ..) | ExtraFile::Link(p, _) => p,
        }
    }
}

/// Modules in the kernel's own tree, for depmod and modprobe.
pub(crate) struct ModuleTree<'a> {
    /// `uname -r`: they go to `/lib/modules/<version>/`.
    pub kernel_version: &'a str,
    /// The package's `lib/modules/<version>`: each module keeps its path below it.
    pub source: &'a Path,
    /// Present but not loaded at boot (not in /etc/modules).
    pub present: &'a [kmod::Module],
}

/// What goes into a busybox initramfs (the demo guest's and the terminal VM's).
pub(crate) struct Initramfs<'a> {
    /// The command that wrote it, for the header of /etc/modules.
    pub tool: &'a str,
    pub busybox: &'a Path,
    /// The /init script.
    pub init: &'a str,
    /// Listed, in load order, in /etc/modules; copied to /lib/modules/NAME.ko (loaded
    /// by insmod) unless `module_tree` is set.
    pub modules: &'a [kmod::Module],
    /// Put the modules in the kernel's module tree instead (loaded by modprobe).
    pub module_tree: Option<ModuleTree<'a>>,
    /// Directories besides the standard ones.
    pub extra_dirs: &'a [&'a str],
    /// Files and links besides busybox (their directories are added).
    pub extra_files: &'a [ExtraFile],
    pub compression: Compression,
}

/// A gzip'd newc cpio of `spec`.
pub(crate) fn busybox_initramfs(spec: &Initramfs) -> Result<Vec<u8>> {
    let busybox_bin =
        fs::read(spec.busybox).with_context(|| format!("reading {}", spec.busybox.display()))?;
    let mut list = format!("# written by {}: name [params], in load order\n", spec.tool);
    for m in spec.modules {
        list.push_str(m.stem.trim());
        if !m.params.is_empty() {
            list.push(' ');
            list.push_str(&m.params);
        }
        list.push('\n');
    }

    // (path in the archive, source file) of every module.
    let mut module_files: Vec<(String, &Path)> = Vec::new();
    match &spec.module_tree {
        None => {
            for m in spec.modules {
                module_files.push((format!("lib/modules/{}.ko", m.stem), &m.path));
            }
        }
        Some(tree) => {
            for m in spec.modules.iter().chain(tree.present) {
                let rel = m.path.strip_prefix(tree.source).with_context(|| {
                    format!(
                        "{} is not below {}",
                        m.path.display(),
                        tree.source.display()
                    )
                })?;
                let rel = rel.to_str().context("a module path is not UTF-8")?;
                module_files.push((
                    format!("lib/modules/{}/{rel}", tree.kernel_version),
                    &m.path,
                ));
            }
        }
    }

    let gz = GzEncoder::new(Vec::new(), spec.compression);
    let mut w = cpio::Writer::new(gz);
    let mut dirs: std::collections::BTreeSet<String> = [
        "bin",
        "dev",
        "etc",
        "lib",
        "lib/airlock",
        "lib/modules",
        "proc",
        "root",
        "run",
        "sys",
        "tmp",
    ]
    .iter()
    .chain(spec.extra_dirs)
    .map(|d| d.to_string())
    .collect();
    // Every parent directory of every file, before the file (a BTreeSet sorts a
    // directory before what is in it).
    let paths = spec
        .extra_files
        .iter()
        .map(ExtraFile::path)
        .chain(module_files.iter().map(|(p, _)| p.as_str()));
    for p in paths {
        let mut parent = Path::new(p).parent();
        while let Some(d) = parent.filter(|d| !d.as_os_str().is_empty()) {
            dirs.insert(d.to_string_lossy().into_owned());
            parent = d.parent();
        }
    }
    for dir in &dirs {
        w.dir(dir, if dir == "tmp" { 0o1777 } else { 0o755 })?;
    }
    w.char_dev("dev/console", 0o600, 5, 1)?;
    w.file("bin/busybox", 0o755, &busybox_bin)?;
    w.symlink("bin/sh", "busybox")?;
    for f in spec.extra_files {
        match f {
            ExtraFile::File(path, mode, data) => w.file(path, *mode, data)?,
            ExtraFile::Link(path, target) => w.symlink(path, target)?,
        }
    }
    w.file("lib/airlock/common.sh", 0o644, COMMON_SH.as_bytes())?;
    w.file("init", 0o755, spec.init.as_bytes())?;
    w.file("etc/modules", 0o644, list.as_bytes())?;
    for (name, path) in &module_files {
        let data = fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        w.file(name, 0o644, &data)?;
    }
    let gz = w.finish().context("writing the initramfs")?;
    gz.finish().context("compressing the initramfs")
}

/// The golden disk: GOLDEN_SIZE bytes, GOLDEN_HEADER at offset 0, zeros
/// elsewhere, as qcow2.
pub(crate) fn golden_disk(path: &Path) -> Result<()> {
    let raw = util::tmp_path(&path.with_extension("raw"));
    {
        let f = fs::File::create(&raw).with_context(|| format!("creating {}", raw.display()))?;
        let mut header = GOLDEN_HEADER.to_vec();
        header.resize(512, 0);
        std::io::Write::write_all(&mut &f, &header)?;
        f.set_len(GOLDEN_SIZE)?;
    }
    let tmp = util::tmp_path(path);
    let result = run(Command::new("qemu-img")
        .args(["convert", "-q", "-f", "raw", "-O", "qcow2"])
        .arg(&raw)
        .arg(&tmp));
    let _ = fs::remove_file(&raw);
    result.context("creating the golden disk with qemu-img")?;
    fs::rename(&tmp, path).with_context(|| format!("renaming {} into place", tmp.display()))?;
    Ok(())
}
