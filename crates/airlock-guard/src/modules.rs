//! Kernel modules that would let the terminal read a disc: the USB storage transports,
//! the SCSI CD driver and the disc filesystems. The guard makes every attempt to load
//! them fail (`install NAME /bin/false`, which also stops loads as a dependency or by an
//! explicit `modprobe`, unlike `blacklist`), and checks that none is loaded or built in.
//!
//! Parsing is pure; [`ModuleFacts::read`] gathers the files from a [`Root`].
use crate::root::Root;
use std::collections::{BTreeMap, BTreeSet};

/// The modules the guard blocks, as `modprobe` names them.
pub const GUARDED: [&str; 6] = ["usb-storage", "uas", "sr_mod", "cdrom", "isofs", "udf"];

/// The directories kmod reads `*.conf` from, in priority order.
pub const MODPROBE_DIRS: [&str; 5] = [
    "/etc/modprobe.d",
    "/run/modprobe.d",
    "/usr/local/lib/modprobe.d",
    "/lib/modprobe.d",
    "/usr/lib/modprobe.d",
];

/// A module name as the kernel keeps it (`usb-storage` and `usb_storage` are one module).
pub fn canonical(name: &str) -> String {
    name.replace('-', "_")
}

/// What modprobe's configuration says of the guarded modules.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ModprobeRules {
    /// The first `install` line per module: (file, command).
    pub install: BTreeMap<String, (String, String)>,
    /// Modules with a `blacklist` line.
    pub blacklist: BTreeSet<String>,
}

impl ModprobeRules {
    /// Parses configuration files, (path, text), in the order kmod reads them.
    pub fn parse(files: &[(String, String)]) -> ModprobeRules {
        let mut rules = ModprobeRules::default();
        for (path, text) in files {
            for line in logical_lines(text) {
                let mut words = line.split_whitespace();
                match (words.next(), words.next()) {
                    (Some("install"), Some(module)) => {
                        let command = words.collect::<Vec<_>>().join(" ");
                        rules
                            .install
                            .entry(canonical(module))
                            .or_insert_with(|| (path.clone(), command));
                    }
                    (Some("blacklist"), Some(module)) => {
                        rules.blacklist.insert(canonical(module));
                    }
                    _ => {}
                }
            }
        }
        rules
    }

    /// The file and command of an `install` line that makes loading `module` fail or do
    /// nothing (`/bin/false`, `/bin/true`, …).
    pub fn blocking(&self, module: &str) -> Option<&(String, String)> {
        self.install
            .get(&canonical(module))
            .filter(|(_, cmd)| is_refusal(cmd))
    }
}

/// Lines without comments, with `\` continuations joined.
fn logical_lines(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    for raw in text.lines() {
        let line = raw.trim_end();
        if let Some(head) = line.strip_suffix('\\') {
            cur.push_str(head);
            cur.push(' ');
            continue;
        }
        cur.push_str(line);
        let trimmed = cur.trim();
        if !trimmed.is_empty() && !trimmed.starts_with('#') {
            out.push(trimmed.to_owned());
        }
        cur.clear();
    }
    out
}

/// An `install` command that never loads the module.
fn is_refusal(command: &str) -> bool {
    matches!(
        command.split_whitespace().collect::<Vec<_>>().as_slice(),
        ["/bin/false" | "/usr/bin/false" | "/bin/true" | "/usr/bin/true" | "false" | "true"]
    )
}

/// The module names in `modules.dep` or `modules.builtin` (paths like
/// `kernel/drivers/usb/storage/usb-storage.ko.xz`), canonical.
pub fn module_names(index: &str) -> BTreeSet<String> {
    index
        .lines()
        .filter_map(|l| l.split(':').next())
        .filter_map(|path| path.trim().rsplit('/').next())
        .filter_map(|file| file.split(".ko").next())
        .filter(|name| !name.is_empty())
        .map(canonical)
        .collect()
}

/// The loaded modules of `/proc/modules`, canonical.
pub fn loaded(proc_modules: &str) -> BTreeSet<String> {
    proc_modules
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(canonical)
        .collect()
}

/// What the guard needs to know of one system's modules.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ModuleFacts {
    pub rules: ModprobeRules,
    /// Loaded now (`None`: not the running system, so unknown).
    pub loaded: Option<BTreeSet<String>>,
    /// In `modules.dep` of the kernel (`None`: no index found).
    pub available: Option<BTreeSet<String>>,
    /// Built into the kernel (cannot be blocked by configuration).
    pub builtin: BTreeSet<String>,
}

impl ModuleFacts {
    /// Reads modprobe's configuration, and for the running system `/proc/modules` and the
    /// running kernel's module index; for another root every kernel under `/lib/modules`.
    pub fn read(root: &Root) -> ModuleFacts {
        let rules = ModprobeRules::parse(&root.config_files(&MODPROBE_DIRS, "conf"));
        let loaded = root
            .is_system()
            .then(|| root.read("/proc/modules").map(|t| loaded(&t)))
            .flatten();
        let kernels: Vec<String> = if root.is_system() {
            root.read("/proc/sys/kernel/osrelease")
                .map(|r| vec![r.trim().to_owned()])
                .unwrap_or_default()
        } else {
            root.list("/lib/modules")
        };
        let mut available: Option<BTreeSet<String>> = None;
        let mut builtin = BTreeSet::new();
        for k in kernels {
            if let Some(dep) = root.read(&format!("/lib/modules/{k}/modules.dep")) {
                available
                    .get_or_insert_with(BTreeSet::new)
                    .extend(module_names(&dep));
            }
            if let Some(b) = root.read(&format!("/lib/modules/{k}/modules.builtin")) {
                builtin.extend(module_names(&b));
            }
        }
        ModuleFacts {
            rules,
            loaded,
            available,
            builtin,
        }
    }

    /// The state of `module`.
    pub fn state(&self, module: &str) -> ModuleState {
        let name = canonical(module);
        if self.builtin.contains(&name) {
            return ModuleState::BuiltIn;
        }
        let loaded = self.loaded.as_ref().is_some_and(|l| l.contains(&name));
        match (self.rules.blocking(&name), loaded) {
            (Some(_), true) => ModuleState::LoadedThoughBlocked,
            (None, true) => ModuleState::Loaded,
            (Some((file, command)), false) => ModuleState::Blocked {
                file: file.clone(),
                command: command.clone(),
            },
            (None, false) => match &self.available {
                Some(a) if !a.contains(&name) => ModuleState::Absent,
                _ => ModuleState::CanLoad {
                    blacklisted: self.rules.blacklist.contains(&name),
                },
            },
        }
    }
}

/// One guarded module's state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModuleState {
    /// Every load fails: an `install` line in `file` runs `command` instead.
    Blocked { file: String, command: String },
    /// Not in this kernel's module index (and not built in).
    Absent,
    /// Nothing stops a load (`blacklisted`: only alias-based autoloading is stopped).
    CanLoad { blacklisted: bool },
    /// Loaded now, with nothing to stop the next load.
    Loaded,
    /// Loaded now although blocked: it was loaded before the guard was installed.
    LoadedThoughBlocked,
    /// Built into the kernel: configuration cannot stop it.
    BuiltIn,
}

impl ModuleState {
    /// Whether the terminal is safe as far as this module goes.
    pub fn is_guarded(&self) -> bool {
        matches!(self, ModuleState::Blocked { .. } | ModuleState::Absent)
    }

    /// In words, with what to do when it is not guarded.
    pub fn describe(&self, module: &str) -> String {
        match self {
            ModuleState::Blocked { file, command } => {
                format!("blocked (`install {module} {command}` in {file})")
            }
            ModuleState::Absent => "not in this kernel".into(),
            ModuleState::CanLoad { blacklisted: true } => {
                "can load: only blacklisted, which a dependency or an explicit modprobe \
                 bypasses; run `airlock guard install`"
                    .into()
            }
            ModuleState::CanLoad { blacklisted: false } => {
                "can load; run `airlock guard install`".into()
            }
            ModuleState::Loaded => format!(
                "loaded, and can load again; run `airlock guard install`, then \
                 `modprobe -r {module}` once no drive is in use (or reboot)"
            ),
            ModuleState::LoadedThoughBlocked => format!(
                "loaded (from before the guard); `modprobe -r {module}` once no drive is \
                 in use, or reboot"
            ),
            ModuleState::BuiltIn => {
                "built into the kernel: configuration cannot block it; use a kernel with \
                 it as a module"
                    .into()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(text: &str) -> ModprobeRules {
        ModprobeRules::parse(&[("/etc/modprobe.d/x.conf".into(), text.into())])
    }

    #[test]
    fn install_false_blocks_and_blacklist_alone_does_not() {
        let r = rules(
            "# comment\nblacklist uas\ninstall usb-storage /bin/false\n\
             install sr_mod /sbin/modprobe --ignore-install sr_mod\ninstall isofs \\\n /bin/true\n",
        );
        assert!(r.blocking("usb_storage").is_some());
        assert!(r.blocking("usb-storage").is_some());
        assert!(
            r.blocking("isofs").is_some(),
            "continuation lines are joined"
        );
        assert!(
            r.blocking("sr_mod").is_none(),
            "an install line that loads it"
        );
        assert!(r.blocking("uas").is_none());
        assert!(r.blacklist.contains("uas"));
    }

    #[test]
    fn the_first_install_line_wins() {
        let r = ModprobeRules::parse(&[
            (
                "/etc/modprobe.d/a.conf".into(),
                "install cdrom /bin/false".into(),
            ),
            (
                "/lib/modprobe.d/b.conf".into(),
                "install cdrom /sbin/insmod".into(),
            ),
        ]);
        assert_eq!(
            r.blocking("cdrom"),
            Some(&(
                "/etc/modprobe.d/a.conf".to_string(),
                "/bin/false".to_string()
            ))
        );
    }

    #[test]
    fn module_indexes_give_canonical_names() {
        let dep =
            "kernel/drivers/usb/storage/usb-storage.ko.xz: kernel/drivers/scsi/scsi_mod.ko.xz\n\
                   kernel/fs/isofs/isofs.ko: \nkernel/drivers/usb/storage/uas.ko.zst:\n";
        let names = module_names(dep);
        assert!(names.contains("usb_storage") && names.contains("isofs") && names.contains("uas"));
        assert!(
            !names.contains("scsi_mod"),
            "dependencies are not modules of the index"
        );
        let procm = "usb_storage 81920 0 - Live 0x0\nuas 32768 0 - Live 0x0\n";
        assert_eq!(
            loaded(procm),
            ["uas", "usb_storage"].map(String::from).into()
        );
    }

    #[test]
    fn every_state_and_its_verdict() {
        let mut f = ModuleFacts {
            rules: rules("install usb-storage /bin/false\ninstall uas /bin/false\nblacklist cdrom"),
            loaded: Some(["uas".to_string(), "sr_mod".to_string()].into()),
            available: Some(
                ["usb_storage", "uas", "sr_mod", "cdrom", "isofs"]
                    .map(String::from)
                    .into(),
            ),
            builtin: ["udf".to_string()].into(),
        };
        assert!(matches!(
            f.state("usb-storage"),
            ModuleState::Blocked { .. }
        ));
        assert_eq!(f.state("uas"), ModuleState::LoadedThoughBlocked);
        assert_eq!(f.state("sr_mod"), ModuleState::Loaded);
        assert_eq!(f.state("cdrom"), ModuleState::CanLoad { blacklisted: true });
        assert_eq!(
            f.state("isofs"),
            ModuleState::CanLoad { blacklisted: false }
        );
        assert_eq!(f.state("udf"), ModuleState::BuiltIn);
        f.builtin.clear();
        assert_eq!(f.state("udf"), ModuleState::Absent);
        f.available = None;
        assert_eq!(f.state("udf"), ModuleState::CanLoad { blacklisted: false });
        let guarded: Vec<bool> = GUARDED.iter().map(|m| f.state(m).is_guarded()).collect();
        assert_eq!(guarded, [true, false, false, false, false, false]);
        for m in GUARDED {
            assert!(!f.state(m).describe(m).is_empty());
        }
    }
}
