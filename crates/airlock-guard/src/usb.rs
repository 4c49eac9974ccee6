//! USB mass-storage devices as sysfs shows them, and their device nodes. At USB level an
//! optical drive cannot be told from a stick (both are class 08, subclass 02 or 06) until
//! a SCSI INQUIRY, which needs a claim; the guard treats every mass-storage device alike,
//! and `airlock usb list` asks each one.
use crate::root::Root;
use std::os::unix::fs::MetadataExt as _;

/// The USB interface class of mass storage.
pub const CLASS_MASS_STORAGE: u8 = 0x08;

/// A USB device model: vendor and product id (`VID:PID` in hex, as `--drive` takes it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Model {
    pub vid: u16,
    pub pid: u16,
}

impl std::str::FromStr for Model {
    type Err = String;

    fn from_str(s: &str) -> Result<Model, String> {
        let bad = || format!("{s:?} is not VID:PID (4 hex digits each, e.g. 0411:01f0)");
        let (v, p) = s.split_once(':').ok_or_else(bad)?;
        let hex4 = |x: &str| {
            (x.len() == 4)
                .then(|| u16::from_str_radix(x, 16).ok())
                .flatten()
                .ok_or_else(bad)
        };
        Ok(Model {
            vid: hex4(v)?,
            pid: hex4(p)?,
        })
    }
}

impl std::fmt::Display for Model {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:04x}:{:04x}", self.vid, self.pid)
    }
}

/// One interface of a device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interface {
    /// Its sysfs name, e.g. `1-1:1.0`.
    pub name: String,
    pub class: u8,
    pub subclass: u8,
    pub protocol: u8,
    /// The kernel driver bound to it (`usbfs` while a program such as the forwarder
    /// holds it).
    pub driver: Option<String>,
}

impl Interface {
    /// `cc:ss:pp`, as USBGuard writes interface types.
    pub fn kind(&self) -> String {
        format!(
            "{:02x}:{:02x}:{:02x}",
            self.class, self.subclass, self.protocol
        )
    }
}

/// A USB device with at least one mass-storage interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StorageDevice {
    /// Its sysfs name, e.g. `1-1`.
    pub name: String,
    pub model: Model,
    pub product: String,
    /// Bus and device number: its usbfs node is `/dev/bus/usb/BUS/DEVICE`.
    pub address: (u16, u16),
    /// sysfs `authorized` (USBGuard's `block` clears it, which also stops usbfs claims).
    pub authorized: bool,
    pub interfaces: Vec<Interface>,
    /// Its usbfs node, when it exists.
    pub node: Option<Node>,
}

impl StorageDevice {
    /// `/dev/bus/usb/BBB/DDD`.
    pub fn node_path(&self) -> String {
        format!("/dev/bus/usb/{:03}/{:03}", self.address.0, self.address.1)
    }

    /// Kernel drivers bound to its interfaces, other than `usbfs`.
    pub fn kernel_drivers(&self) -> Vec<&str> {
        self.interfaces
            .iter()
            .filter_map(|i| i.driver.as_deref())
            .filter(|d| *d != "usbfs")
            .collect()
    }
}

/// Owner, group and mode of a device node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Node {
    pub uid: u32,
    pub gid: u32,
    pub mode: u32,
}

impl Node {
    /// Whether members of group `gid` (who are not its owner) may open it read-write, as a
    /// usbfs claim needs.
    pub fn group_can_claim(&self, gid: u32) -> bool {
        let world = self.mode & 0o006 == 0o006;
        let group = self.gid == gid && self.mode & 0o060 == 0o060;
        world || group
    }
}

fn hex(text: Option<String>) -> Option<u16> {
    u16::from_str_radix(text?.trim(), 16).ok()
}

fn dec(text: Option<String>) -> Option<u16> {
    text?.trim().parse().ok()
}

/// The USB mass-storage devices under `/sys/bus/usb/devices`.
pub fn storage_devices(root: &Root) -> Vec<StorageDevice> {
    let base = "/sys/bus/usb/devices";
    let entries = root.list(base);
    let mut devices = Vec::new();
    for dev in entries.iter().filter(|n| !n.contains(':')) {
        let at = |f: &str| root.read(&format!("{base}/{dev}/{f}"));
        let (Some(vid), Some(pid)) = (hex(at("idVendor")), hex(at("idProduct"))) else {
            continue;
        };
        let prefix = format!("{dev}:");
        let interfaces: Vec<Interface> = entries
            .iter()
            .filter(|n| n.starts_with(&prefix))
            .filter_map(|i| {
                let at = |f: &str| root.read(&format!("{base}/{i}/{f}"));
                let byte = |f: &str| hex(at(f)).and_then(|v| u8::try_from(v).ok());
                Some(Interface {
                    name: i.clone(),
                    class: byte("bInterfaceClass")?,
                    subclass: byte("bInterfaceSubClass")?,
                    protocol: byte("bInterfaceProtocol")?,
                    driver: std::fs::read_link(root.path(&format!("{base}/{i}/driver")))
                        .ok()
                        .and_then(|p| p.file_name()?.to_str().map(str::to_owned)),
                })
            })
            .collect();
        if !interfaces.iter().any(|i| i.class == CLASS_MASS_STORAGE) {
            continue;
        }
        let mut d = StorageDevice {
            name: dev.clone(),
            model: Model { vid, pid },
            product: at("product")
                .map(|p| p.trim().to_owned())
                .unwrap_or_default(),
            address: (
                dec(at("busnum")).unwrap_or(0),
                dec(at("devnum")).unwrap_or(0),
            ),
            authorized: at("authorized").is_none_or(|a| a.trim() != "0"),
            interfaces,
            node: None,
        };
        d.node = std::fs::metadata(root.path(&d.node_path()))
            .ok()
            .map(|m| Node {
                uid: m.uid(),
                gid: m.gid(),
                mode: m.mode() & 0o7777,
            });
        devices.push(d);
    }
    devices
}

/// The SCSI CD-ROM block devices (`/dev/sr*`) there are.
pub fn cd_block_devices(root: &Root) -> Vec<String> {
    root.list("/dev")
        .into_iter()
        .filter(|n| {
            n.strip_prefix("sr")
                .is_some_and(|d| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit()))
        })
        .map(|n| format!("/dev/{n}"))
        .collect()
}

/// The id of group `name` in the root's `/etc/group`.
pub fn group_id(root: &Root, name: &str) -> Option<u32> {
    root.read("/etc/group")?.lines().find_map(|l| {
        let mut f = l.split(':');
        (f.next()? == name).then_some(())?;
        f.next();
        f.next()?.parse().ok()
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::path::Path;

    /// Writes a device with `interfaces` (class, subclass, protocol, driver) into a fake
    /// sysfs under `root`.
    pub(crate) fn fake_device(
        root: &Path,
        name: &str,
        ids: (u16, u16),
        interfaces: &[(u8, u8, u8, Option<&str>)],
    ) {
        let base = root.join("sys/bus/usb/devices");
        let dev = base.join(name);
        std::fs::create_dir_all(&dev).unwrap();
        for (f, v) in [
            ("idVendor", format!("{:04x}", ids.0)),
            ("idProduct", format!("{:04x}", ids.1)),
            ("product", "Test drive".into()),
            ("busnum", "1".into()),
            ("devnum", "2".into()),
            ("authorized", "1".into()),
        ] {
            std::fs::write(dev.join(f), format!("{v}\n")).unwrap();
        }
        let drivers = root.join("sys/bus/usb/drivers");
        for (n, (c, s, p, driver)) in interfaces.iter().enumerate() {
            let i = base.join(format!("{name}:1.{n}"));
            std::fs::create_dir_all(&i).unwrap();
            for (f, v) in [
                ("bInterfaceClass", c),
                ("bInterfaceSubClass", s),
                ("bInterfaceProtocol", p),
            ] {
                std::fs::write(i.join(f), format!("{v:02x}\n")).unwrap();
            }
            if let Some(d) = driver {
                std::fs::create_dir_all(drivers.join(d)).unwrap();
                std::os::unix::fs::symlink(drivers.join(d), i.join("driver")).unwrap();
            }
        }
    }

    #[test]
    fn finds_mass_storage_devices_their_drivers_and_node() {
        let t = tempfile::tempdir().unwrap();
        fake_device(
            t.path(),
            "1-1",
            (0x0411, 0x01f0),
            &[(8, 6, 0x50, Some("usb-storage"))],
        );
        fake_device(
            t.path(),
            "1-2",
            (0x046d, 0xc077),
            &[(3, 1, 2, Some("usbhid"))],
        );
        fake_device(
            t.path(),
            "2-1",
            (0x0e8d, 0x1887),
            &[(8, 2, 0x50, Some("usbfs")), (3, 0, 0, None)],
        );
        let node = t.path().join("dev/bus/usb/001/002");
        std::fs::create_dir_all(node.parent().unwrap()).unwrap();
        std::fs::write(&node, "").unwrap();
        let root = Root::new(t.path());
        let d = storage_devices(&root);
        assert_eq!(d.len(), 2, "{d:?}");
        assert_eq!(d[0].model.to_string(), "0411:01f0");
        assert_eq!(d[0].kernel_drivers(), ["usb-storage"]);
        assert_eq!(d[0].interfaces[0].kind(), "08:06:50");
        assert!(d[0].authorized && d[0].node.is_some());
        assert!(
            d[1].kernel_drivers().is_empty(),
            "usbfs is a claim, not a driver"
        );
    }

    #[test]
    fn group_access_to_a_node() {
        let n = Node {
            uid: 0,
            gid: 120,
            mode: 0o660,
        };
        assert!(n.group_can_claim(120));
        assert!(!n.group_can_claim(121));
        assert!(!Node { mode: 0o640, ..n }.group_can_claim(120));
        assert!(Node {
            gid: 0,
            mode: 0o666,
            ..n
        }
        .group_can_claim(120));
    }

    #[test]
    fn block_devices_and_groups() {
        let t = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(t.path().join("dev")).unwrap();
        std::fs::create_dir_all(t.path().join("etc")).unwrap();
        for n in ["sr0", "sr1", "sda", "srx", "sr"] {
            std::fs::write(t.path().join("dev").join(n), "").unwrap();
        }
        std::fs::write(
            t.path().join("etc/group"),
            "root:x:0:\nairlock:x:998:alice,bob\n",
        )
        .unwrap();
        let root = Root::new(t.path());
        assert_eq!(cd_block_devices(&root), ["/dev/sr0", "/dev/sr1"]);
        assert_eq!(group_id(&root, "airlock"), Some(998));
        assert_eq!(group_id(&root, "nobody"), None);
    }
}
