//! A terminal's system tree in a temporary directory, for `airlock guard --root DIR` and
//! `airlock open --guard-root DIR`: a kernel whose module index has the storage modules,
//! `/etc/group`, and optionally a USB CD drive bound to `usb-storage` with its `/dev/sr0`,
//! as sysfs and devtmpfs would show them.
use anyhow::{Context, Result};
use std::path::{Path, PathBuf};

/// The storage modules of the fake kernel (`modules.dep` paths).
const MODULES: [&str; 6] = [
    "kernel/drivers/usb/storage/usb-storage.ko",
    "kernel/drivers/usb/storage/uas.ko",
    "kernel/drivers/scsi/sr_mod.ko",
    "kernel/drivers/cdrom/cdrom.ko",
    "kernel/fs/isofs/isofs.ko",
    "kernel/fs/udf/udf.ko",
];

/// A fake terminal tree, removed on drop.
pub struct FakeTerminal {
    dir: tempfile::TempDir,
}

impl FakeTerminal {
    /// A terminal that never had the guard: the modules can load, no group `airlock`,
    /// no drive attached.
    pub fn unguarded() -> Result<FakeTerminal> {
        let t = FakeTerminal {
            dir: tempfile::tempdir()?,
        };
        let dep: String = MODULES.iter().map(|m| format!("{m}:\n")).collect();
        t.write("/lib/modules/6.1.0-airlock-test/modules.dep", &dep)?;
        t.write("/etc/group", "root:x:0:\n")?;
        std::fs::create_dir_all(t.path().join("etc/modprobe.d"))?;
        Ok(t)
    }

    /// Plugs in a USB CD drive (0411:01f0) that `usb-storage` bound, with `/dev/sr0`.
    pub fn plug_bound_drive(&self) -> Result<()> {
        let dev = "/sys/bus/usb/devices/1-1";
        for (f, v) in [
            ("idVendor", "0411"),
            ("idProduct", "01f0"),
            ("product", "DVD drive"),
            ("busnum", "1"),
            ("devnum", "2"),
            ("authorized", "1"),
        ] {
            self.write(&format!("{dev}/{f}"), &format!("{v}\n"))?;
        }
        let iface = "/sys/bus/usb/devices/1-1:1.0";
        for (f, v) in [
            ("bInterfaceClass", "08"),
            ("bInterfaceSubClass", "06"),
            ("bInterfaceProtocol", "50"),
        ] {
            self.write(&format!("{iface}/{f}"), &format!("{v}\n"))?;
        }
        let driver = self.path().join("sys/bus/usb/drivers/usb-storage");
        std::fs::create_dir_all(&driver)?;
        std::os::unix::fs::symlink(&driver, self.abs(&format!("{iface}/driver")))?;
        self.write("/dev/bus/usb/001/002", "")?;
        self.write("/dev/sr0", "")
    }

    /// The tree's directory.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// The directory as a command-line argument.
    pub fn arg(&self) -> String {
        self.path().display().to_string()
    }

    /// `abs` of the fake system on the host.
    pub fn abs(&self, abs: &str) -> PathBuf {
        self.path().join(abs.trim_start_matches('/'))
    }

    /// Writes `text` to `abs` of the fake system.
    pub fn write(&self, abs: &str, text: &str) -> Result<()> {
        let p = self.abs(abs);
        if let Some(d) = p.parent() {
            std::fs::create_dir_all(d)?;
        }
        std::fs::write(&p, text).with_context(|| format!("writing {}", p.display()))
    }

    /// Every file and directory of the tree with its contents, sorted: to compare the
    /// tree before and after a command.
    pub fn snapshot(&self) -> Vec<(String, Option<Vec<u8>>)> {
        fn walk(root: &Path, dir: &Path, out: &mut Vec<(String, Option<Vec<u8>>)>) {
            let Ok(entries) = std::fs::read_dir(dir) else {
                return;
            };
            for e in entries.flatten() {
                let p = e.path();
                let rel = p.strip_prefix(root).unwrap_or(&p).display().to_string();
                let meta = std::fs::symlink_metadata(&p);
                if meta.as_ref().is_ok_and(|m| m.is_dir()) {
                    out.push((rel, None));
                    walk(root, &p, out);
                } else {
                    out.push((rel, std::fs::read(&p).ok()));
                }
            }
        }
        let mut out = Vec::new();
        walk(self.path(), self.path(), &mut out);
        out.sort();
        out
    }
}
