//! `airlock guard status`: every check with its verdict, and the overall one. A terminal
//! is *guarded* when no check fails.
use crate::files::{self, GROUP, UDEV_PATH};
use crate::modules::{ModuleFacts, GUARDED};
use crate::root::Root;
use crate::usb::{self, StorageDevice};
use crate::usbguard::{DeviceView, Policy, Target, Verdict};

/// A check's verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Ok,
    /// For information only.
    Info,
    /// Worth a look; does not make the terminal unguarded.
    Warn,
    /// The terminal is not guarded.
    Fail,
}

impl Level {
    /// As `status` prints it.
    pub fn label(self) -> &'static str {
        match self {
            Level::Ok => "ok",
            Level::Info => "info",
            Level::Warn => "warn",
            Level::Fail => "FAIL",
        }
    }
}

/// One check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    pub level: Level,
    /// What was checked, e.g. `module usb-storage`.
    pub what: String,
    /// What was found, and what to do when it fails.
    pub detail: String,
}

/// Every check of one system.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    pub checks: Vec<Check>,
}

impl Status {
    /// Whether the terminal is guarded (no check failed).
    pub fn guarded(&self) -> bool {
        self.failures().next().is_none()
    }

    /// The failed checks.
    pub fn failures(&self) -> impl Iterator<Item = &Check> {
        self.checks.iter().filter(|c| c.level == Level::Fail)
    }

    /// The report: a line per check, then the overall verdict.
    pub fn render(&self) -> String {
        let mut s = String::new();
        for c in &self.checks {
            s.push_str(&format!(
                "{:<5} {}: {}\n",
                c.level.label(),
                c.what,
                c.detail
            ));
        }
        let n = self.failures().count();
        if n == 0 {
            s.push_str("guarded\n");
        } else {
            s.push_str(&format!(
                "not guarded ({n} problem{}): run `airlock guard install` as root, then \
                 `airlock guard status` again\n",
                if n == 1 { "" } else { "s" }
            ));
        }
        s
    }

    /// Reads `root` and checks it.
    pub fn read(root: &Root) -> Status {
        let mut checks = Vec::new();
        let mut add = |level, what: &str, detail: String| {
            checks.push(Check {
                level,
                what: what.to_owned(),
                detail,
            })
        };
        let facts = ModuleFacts::read(root);
        for m in GUARDED {
            let state = facts.state(m);
            let level = if state.is_guarded() {
                Level::Ok
            } else {
                Level::Fail
            };
            add(level, &format!("module {m}"), state.describe(m));
        }
        let srs = usb::cd_block_devices(root);
        if srs.is_empty() {
            add(Level::Ok, "CD block devices", "none (/dev/sr*)".into());
        } else {
            add(
                Level::Fail,
                "CD block devices",
                format!(
                    "{} exist: a kernel driver serves a drive; run `airlock guard install`, \
                     then unplug the drive or reboot",
                    srs.join(", ")
                ),
            );
        }
        let gid = usb::group_id(root, GROUP);
        match gid {
            Some(g) => add(Level::Ok, "group", format!("{GROUP} (gid {g})")),
            None => add(
                Level::Fail,
                "group",
                format!(
                    "no group {GROUP}: the forwarder needs it to claim the drive without \
                     root; run `airlock guard install`"
                ),
            ),
        }
        let udev_ok = root
            .read(UDEV_PATH)
            .is_some_and(|t| files::is_ours(&t) && t.contains("UDISKS_IGNORE"));
        if udev_ok {
            add(
                Level::Ok,
                "udev rule",
                format!("{UDEV_PATH}: group {GROUP} may claim USB mass storage; udisks ignores it"),
            );
        } else {
            add(
                Level::Fail,
                "udev rule",
                format!(
                    "{UDEV_PATH} is missing: the drive is neither claimable by group {GROUP} \
                     nor hidden from udisks; run `airlock guard install`"
                ),
            );
        }
        let devices = usb::storage_devices(root);
        if devices.is_empty() {
            add(
                Level::Info,
                "USB drives",
                "no USB mass-storage device attached (plug the drive in to check it too)".into(),
            );
        }
        for d in &devices {
            let (level, detail) = device_check(d, gid);
            add(level, &format!("USB drive {}", d.name), detail);
        }
        match Policy::read(root) {
            None => add(
                Level::Info,
                "USBGuard",
                "not installed (optional: `airlock guard install --usbguard` with it)".into(),
            ),
            Some(p) => {
                for (level, what, detail) in usbguard_checks(&p, &devices) {
                    add(level, &what, detail);
                }
            }
        }
        Status { checks }
    }
}

/// A storage device: no kernel driver, authorized, claimable by the group.
fn device_check(d: &StorageDevice, gid: Option<u32>) -> (Level, String) {
    let who = format!("{} {}", d.model, d.product);
    let drivers = d.kernel_drivers();
    if !drivers.is_empty() {
        return (
            Level::Fail,
            format!(
                "{who}: kernel driver {} bound; run `airlock guard install`, then unplug \
                 and replug it",
                drivers.join(", ")
            ),
        );
    }
    if !d.authorized {
        return (
            Level::Fail,
            format!(
                "{who}: de-authorized (USBGuard `block`?), so the forwarder cannot claim \
                 it either; allow it in the USBGuard policy"
            ),
        );
    }
    let claimable = match (d.node, gid) {
        (Some(n), Some(g)) => n.group_can_claim(g),
        _ => false,
    };
    if !claimable {
        return (
            Level::Fail,
            format!(
                "{who}: {} is not read-write for group {GROUP}; run `airlock guard \
                 install`, then unplug and replug it",
                d.node_path()
            ),
        );
    }
    let held = if d
        .interfaces
        .iter()
        .any(|i| i.driver.as_deref() == Some("usbfs"))
    {
        " (held through usbfs now)"
    } else {
        ""
    };
    (
        Level::Ok,
        format!("{who}: no kernel driver; group {GROUP} may claim it{held}"),
    )
}

/// What USBGuard does to the attached drives and to a storage+keyboard combo.
fn usbguard_checks(p: &Policy, devices: &[StorageDevice]) -> Vec<(Level, String, String)> {
    let mut out = Vec::new();
    for line in &p.unreadable {
        out.push((
            Level::Warn,
            "USBGuard rule".to_owned(),
            format!("not understood here, check it by hand: {line}"),
        ));
    }
    for d in devices {
        let view = DeviceView {
            vid: Some(d.model.vid),
            pid: Some(d.model.pid),
            interfaces: d
                .interfaces
                .iter()
                .map(|i| [i.class, i.subclass, i.protocol])
                .collect(),
        };
        let (level, detail) = match p.verdict(&view) {
            Verdict::Decided {
                target: Target::Allow,
                rule,
            } => (Level::Ok, format!("allowed ({})", rule_name(rule))),
            Verdict::Decided { target, rule } => (
                Level::Fail,
                format!(
                    "{} ({}): the forwarder could not claim it; allow the drive \
                     (e.g. `allow id {} with-interface equals {{ 08:*:* }}`) before any rule that blocks it",
                    format!("{target:?}").to_lowercase(),
                    rule_name(rule),
                    d.model
                ),
            ),
            Verdict::Unsure { rule } => (
                Level::Warn,
                format!("depends on a condition not evaluated here: {rule}"),
            ),
        };
        out.push((level, format!("USBGuard, drive {}", d.name), detail));
    }
    let combo = DeviceView {
        vid: None,
        pid: None,
        interfaces: vec![[8, 6, 0x50], [3, 1, 1]],
    };
    let detail = match p.verdict(&combo) {
        Verdict::Decided {
            target: Target::Block | Target::Reject,
            ..
        } => (
            Level::Ok,
            "blocks devices combining storage and a keyboard".to_owned(),
        ),
        Verdict::Decided { rule, .. } => (
            Level::Warn,
            format!(
                "would allow a device combining storage and a keyboard ({}); `airlock guard \
                 install --usbguard`, and put its rules before any broader allow",
                rule_name(rule)
            ),
        ),
        Verdict::Unsure { rule } => (
            Level::Warn,
            format!("storage+keyboard devices depend on a condition not evaluated here: {rule}"),
        ),
    };
    out.push((detail.0, "USBGuard, storage+keyboard".to_owned(), detail.1));
    out
}

fn rule_name(rule: Option<String>) -> String {
    rule.map_or("the implicit policy".to_owned(), |r| format!("rule `{r}`"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::usb::tests::fake_device;
    use std::path::Path;

    fn write(root: &Path, abs: &str, text: &str) {
        let p = root.join(abs.trim_start_matches('/'));
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }

    /// A terminal image with the storage modules in its kernel and a drive bound to
    /// usb-storage.
    fn unguarded(root: &Path) {
        write(
            root,
            "/lib/modules/6.1.0-test/modules.dep",
            "kernel/drivers/usb/storage/usb-storage.ko: \nkernel/drivers/usb/storage/uas.ko: \n\
             kernel/drivers/scsi/sr_mod.ko: \nkernel/drivers/cdrom/cdrom.ko: \n\
             kernel/fs/isofs/isofs.ko: \nkernel/fs/udf/udf.ko: \n",
        );
        write(root, "/etc/group", "root:x:0:\n");
        write(root, "/dev/sr0", "");
        fake_device(
            root,
            "1-1",
            (0x0411, 0x01f0),
            &[(8, 6, 0x50, Some("usb-storage"))],
        );
    }

    #[test]
    fn an_unguarded_terminal_fails_every_layer() {
        let t = tempfile::tempdir().unwrap();
        unguarded(t.path());
        let s = Status::read(&Root::new(t.path()));
        assert!(!s.guarded());
        let failed: Vec<&str> = s.failures().map(|c| c.what.as_str()).collect();
        for what in [
            "module usb-storage",
            "module udf",
            "CD block devices",
            "group",
            "udev rule",
            "USB drive 1-1",
        ] {
            assert!(
                failed.contains(&what),
                "{what} did not fail: {}",
                s.render()
            );
        }
        assert!(s
            .render()
            .ends_with("run `airlock guard install` as root, then `airlock guard status` again\n"));
    }

    #[test]
    fn a_guarded_terminal_passes_and_usbguard_is_judged() {
        let t = tempfile::tempdir().unwrap();
        unguarded(t.path());
        // What install and a replug leave: the files, the group, no driver, no sr0.
        write(t.path(), files::MODPROBE_PATH, &files::modprobe_conf());
        write(t.path(), UDEV_PATH, &files::udev_rules(&[]));
        write(t.path(), "/etc/group", "root:x:0:\nairlock:x:0:\n");
        std::fs::remove_file(t.path().join("dev/sr0")).unwrap();
        std::fs::remove_file(t.path().join("sys/bus/usb/devices/1-1:1.0/driver")).unwrap();
        let node = t.path().join("dev/bus/usb/001/002");
        write(t.path(), "/dev/bus/usb/001/002", "");
        std::fs::set_permissions(&node, std::os::unix::fs::PermissionsExt::from_mode(0o660))
            .unwrap();
        let root = Root::new(t.path());
        let s = Status::read(&root);
        assert!(s.guarded(), "{}", s.render());
        assert!(s.render().ends_with("guarded\n"));

        // USBGuard that blocks everything but combos is a failure for the drive.
        write(
            t.path(),
            "/etc/usbguard/usbguard-daemon.conf",
            "ImplicitPolicyTarget=block\n",
        );
        write(
            t.path(),
            "/etc/usbguard/rules.conf",
            "allow with-interface one-of { 03:*:* }\n",
        );
        let s = Status::read(&root);
        assert!(!s.guarded());
        let c = s.failures().next().unwrap();
        assert_eq!(c.what, "USBGuard, drive 1-1");
        assert!(c.detail.contains("allow id 0411:01f0"), "{}", c.detail);
        // Allowing the drive, with the snippet first: guarded, and combos blocked.
        write(
            t.path(),
            "/etc/usbguard/rules.conf",
            &format!(
                "{}\nallow id 0411:01f0\n",
                crate::usbguard::SNIPPET_RULES.join("\n")
            ),
        );
        let s = Status::read(&root);
        assert!(s.guarded(), "{}", s.render());
        assert!(s
            .checks
            .iter()
            .any(|c| c.what == "USBGuard, storage+keyboard" && c.level == Level::Ok));
    }
}
