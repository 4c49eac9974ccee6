//! The files `airlock guard install` writes, as text. Each starts with [`MARKER`], by which
//! `uninstall` knows its own files (it never removes one without it).
use crate::modules::GUARDED;
pub use crate::usb::Model;

/// The first line of every file the guard writes.
pub const MARKER: &str =
    "# Written by `airlock guard install`; `airlock guard uninstall` removes it.";

/// The group whose members may claim USB mass-storage devices through usbfs.
pub const GROUP: &str = "airlock";

/// modprobe's configuration: every guarded module refused.
pub const MODPROBE_PATH: &str = "/etc/modprobe.d/airlock-guard.conf";

/// The udev rule: group access for the forwarder, udisks told to ignore.
pub const UDEV_PATH: &str = "/etc/udev/rules.d/70-airlock-guard.rules";

/// `/etc/modprobe.d/airlock-guard.conf`.
pub fn modprobe_conf() -> String {
    let mut s = format!(
        "{MARKER}\n\
         # A disc in this terminal's drive never gets a driver here: every load of these\n\
         # modules fails, also as a dependency or by an explicit modprobe (a blacklist\n\
         # line alone stops only autoloading). The drive goes to a desktop at USB level.\n"
    );
    for m in GUARDED {
        s.push_str(&format!("blacklist {m}\ninstall {m} /bin/false\n"));
    }
    s
}

/// `/etc/udev/rules.d/70-airlock-guard.rules`; `models` narrows group access to approved
/// drive models (empty: every USB mass-storage device).
pub fn udev_rules(models: &[Model]) -> String {
    let mut s = format!(
        "{MARKER}\n\
         # USB mass-storage devices (the terminal's optical drive): members of group\n\
         # {GROUP} may claim them through usbfs, so `airlock open` forwards the drive\n\
         # without root; udisks ignores them and any CD block device.\n"
    );
    let base = "ACTION==\"add|change\", SUBSYSTEM==\"usb\", ENV{DEVTYPE}==\"usb_device\", \
                IMPORT{builtin}=\"usb_id\", ENV{ID_USB_INTERFACES}==\"*:08????:*\"";
    let grant = format!("GROUP=\"{GROUP}\", MODE=\"0660\", ENV{{UDISKS_IGNORE}}=\"1\"");
    if models.is_empty() {
        s.push_str(&format!("{base}, {grant}\n"));
    } else {
        s.push_str(&format!("{base}, ENV{{UDISKS_IGNORE}}=\"1\"\n"));
        for m in models {
            s.push_str(&format!(
                "{base}, ATTR{{idVendor}}==\"{:04x}\", ATTR{{idProduct}}==\"{:04x}\", {grant}\n",
                m.vid, m.pid
            ));
        }
    }
    s.push_str("SUBSYSTEM==\"block\", KERNEL==\"sr[0-9]*\", ENV{UDISKS_IGNORE}=\"1\"\n");
    s
}

/// `/etc/usbguard/rules.d/70-airlock-guard.conf`.
pub fn usbguard_snippet() -> String {
    let mut s = format!(
        "{MARKER}\n\
         # Devices that combine mass storage with a keyboard or a network interface are\n\
         # blocked. The drive itself must stay allowed (a blocked device cannot be claimed\n\
         # by the forwarder either); rules.conf is read first, so an earlier `allow` that\n\
         # matches such a device wins: `airlock guard status` checks it.\n"
    );
    for r in crate::usbguard::SNIPPET_RULES {
        s.push_str(r);
        s.push('\n');
    }
    s
}

/// Whether `text` is a file the guard wrote.
pub fn is_ours(text: &str) -> bool {
    text.lines().next() == Some(MARKER)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modprobe_conf_refuses_every_guarded_module() {
        let text = modprobe_conf();
        assert!(is_ours(&text));
        let rules = crate::modules::ModprobeRules::parse(&[(MODPROBE_PATH.into(), text)]);
        for m in GUARDED {
            assert!(rules.blocking(m).is_some(), "{m}");
        }
    }

    #[test]
    fn udev_rules_grant_the_group_and_silence_udisks() {
        let all = udev_rules(&[]);
        assert!(is_ours(&all));
        assert!(all.contains("GROUP=\"airlock\", MODE=\"0660\""));
        assert!(all.contains("ENV{ID_USB_INTERFACES}==\"*:08????:*\""));
        assert_eq!(all.matches("UDISKS_IGNORE").count(), 2);
        let one = udev_rules(&["0411:01f0".parse().unwrap()]);
        assert!(
            one.contains("ATTR{idVendor}==\"0411\", ATTR{idProduct}==\"01f0\", GROUP=\"airlock\"")
        );
        assert_eq!(one.matches("GROUP=").count(), 1, "only the approved model");
    }

    #[test]
    fn models_are_checked() {
        assert_eq!(
            "0411:01F0".parse::<Model>(),
            Ok(Model {
                vid: 0x0411,
                pid: 0x01f0
            })
        );
        for bad in ["0411", "411:1f0", "zzzz:0000", "0411:01f0:1", ""] {
            assert!(bad.parse::<Model>().is_err(), "{bad}");
        }
    }

    #[test]
    fn the_snippet_is_ours_and_parses() {
        let s = usbguard_snippet();
        assert!(is_ours(&s));
        let p = crate::usbguard::Policy::parse("", &[("x".into(), s)]);
        assert_eq!(p.rules.len(), 4);
        assert!(p.unreadable.is_empty());
    }
}
