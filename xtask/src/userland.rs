//! The terminal VM's userland beyond busybox: kmod (`modprobe`, `depmod`, … honouring
//! modprobe.d's `install` lines, which busybox's modprobe ignores) and udev (`udevd`, the
//! rules that load drivers on hotplug and set device node permissions), as a real Linux
//! terminal has them, so the guard is tested against the real tools.
//!
//! The binaries and rules come from Debian's `kmod` and `udev` packages (downloaded and
//! unpacked like the kernel); their shared libraries are copied from this build host
//! (Debian 12 too), found with `ldd`.
use crate::guest::{self, ExtraFile, Package};
use anyhow::{bail, ensure, Context, Result};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The Debian packages taken.
const PACKAGES: [&str; 2] = ["kmod", "udev"];

/// kmod's names, as links to `/sbin/kmod`.
const KMOD_LINKS: [&str; 6] = ["modprobe", "depmod", "insmod", "rmmod", "lsmod", "modinfo"];

/// udev's helper programs the rules run (in `/lib/udev`).
const UDEV_HELPERS: [&str; 3] = ["ata_id", "cdrom_id", "scsi_id"];

/// The unpacked packages.
pub struct Userland {
    pub packages: Vec<Package>,
    kmod: PathBuf,
    udev: PathBuf,
}

impl Userland {
    /// Resolves, downloads (into `cache`) and unpacks the packages.
    pub fn fetch(cache: &Path, updated: &mut bool) -> Result<Userland> {
        let mut packages = Vec::new();
        let mut roots = Vec::new();
        for name in PACKAGES {
            let pkg = guest::apt_show(name)?.with_context(|| {
                format!(
                    "apt does not know {name}: run `apt-get update` (Debian 12 `main` is needed)"
                )
            })?;
            let deb = guest::download(cache, &pkg, updated)?;
            roots.push(guest::extract(cache, &pkg, &deb)?);
            packages.push(pkg);
        }
        let [kmod, udev] =
            <[PathBuf; 2]>::try_from(roots).map_err(|_| anyhow::anyhow!("two packages"))?;
        Ok(Userland {
            packages,
            kmod,
            udev,
        })
    }

    /// Every file and link to add to the initramfs.
    pub fn files(&self) -> Result<Vec<ExtraFile>> {
        let mut out = Vec::new();
        let mut programs = Vec::new();
        let mut add_program = |out: &mut Vec<ExtraFile>, from: PathBuf, to: &str| -> Result<()> {
            let data = fs::read(&from).with_context(|| format!("reading {}", from.display()))?;
            out.push(ExtraFile::File(to.to_owned(), 0o755, data));
            programs.push(from);
            Ok(())
        };
        add_program(&mut out, self.kmod.join("bin/kmod"), "sbin/kmod")?;
        for l in KMOD_LINKS {
            out.push(ExtraFile::Link(format!("sbin/{l}"), "kmod".into()));
        }
        add_program(&mut out, self.udev.join("bin/udevadm"), "sbin/udevadm")?;
        out.push(ExtraFile::Link("sbin/udevd".into(), "udevadm".into()));
        for h in UDEV_HELPERS {
            add_program(
                &mut out,
                self.udev.join("lib/udev").join(h),
                &format!("lib/udev/{h}"),
            )?;
        }
        let rules = self.udev.join("lib/udev/rules.d");
        let mut names: Vec<_> = fs::read_dir(&rules)
            .with_context(|| format!("reading {}", rules.display()))?
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter(|n| n.ends_with(".rules"))
            .collect();
        names.sort();
        for n in names {
            let data = fs::read(rules.join(&n))?;
            out.push(ExtraFile::File(
                format!("lib/udev/rules.d/{n}"),
                0o644,
                data,
            ));
        }
        let conf = fs::read(self.udev.join("etc/udev/udev.conf"))?;
        out.push(ExtraFile::File("etc/udev/udev.conf".into(), 0o644, conf));
        for lib in shared_libraries(&programs)? {
            let data = fs::read(&lib).with_context(|| format!("reading {}", lib.display()))?;
            let to = lib.to_str().context("a library path is not UTF-8")?;
            out.push(ExtraFile::File(
                to.trim_start_matches('/').to_owned(),
                0o755,
                data,
            ));
        }
        Ok(out)
    }
}

/// The shared libraries (and the program loader) `programs` need, from `ldd` on this
/// host, deduplicated and sorted.
fn shared_libraries(programs: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let mut libs = std::collections::BTreeSet::new();
    for p in programs {
        let out = Command::new("ldd")
            .arg(p)
            .output()
            .context("could not run ldd (package libc-bin)")?;
        let text = String::from_utf8_lossy(&out.stdout);
        if text.contains("not a dynamic executable") {
            continue;
        }
        ensure!(out.status.success(), "ldd {} failed: {text}", p.display());
        for line in text.lines() {
            let line = line.trim();
            if line.contains("not found") {
                bail!(
                    "{} needs {line} on this host to copy it into the terminal VM: \
                     install the Debian package that has it (apt-get install kmod udev \
                     brings them all)",
                    p.display()
                );
            }
            // `libx.so.1 => /lib/.../libx.so.1 (0x…)` or `/lib64/ld-linux-x86-64.so.2 (0x…)`.
            let path = line
                .split_once("=>")
                .map_or(line, |(_, r)| r)
                .split_whitespace()
                .next()
                .unwrap_or_default();
            if path.starts_with('/') {
                libs.insert(PathBuf::from(path));
            }
        }
    }
    Ok(libs.into_iter().collect())
}
