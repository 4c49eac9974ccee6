//! The Windows terminal's policy: text files that keep a HIS terminal from ever giving its USB
//! optical drive a local driver, while the drive is still forwarded at USB level into the
//! disposable remote desktop. Pure text generation: [`windows_policy`] returns the files and
//! the CLI (`airlock guard windows-policy --out DIR`) writes them.
//!
//! # What the files do
//!
//! - **Device Installation Restrictions** (all sites): Windows may install no driver for a
//!   device of the CD-ROM setup class, also for such devices that are already installed
//!   (retroactive), and an administrator cannot override this. A disc in the drive then never
//!   meets `cdrom.sys`, a file system driver, AutoPlay or Explorer on the terminal.
//! - **RemoteFX USB redirection client policy** (sites whose desktops are reached over RDP):
//!   lets the Remote Desktop client offer the drive for redirection at USB level.
//! - **UsbDk persistent hide rules** (sites whose terminals run a SPICE viewer, virt-viewer or
//!   remote-viewer on Windows): UsbDk hides the drive from the Windows PnP manager, so no
//!   Windows driver binds to it, yet UsbDk still hands it to the viewer when it redirects.
//!
//! # Why the class deny is on the terminal only
//!
//! Microsoft documents that the Device Installation Restriction policies also act on devices
//! redirected into a remote desktop. Set in the desktop image, the same CD-ROM deny would keep
//! the forwarded drive from working in the one place where the disc is meant to be read. Every
//! file says so: terminal only, never in the desktop image.
//!
//! # Why persistent UsbDk rules
//!
//! spice-gtk (the SPICE client library inside virt-viewer) sets UsbDk hide rules itself, but
//! through a hider handle: the rules exist only while the viewer runs, and are gone when it
//! exits. A drive plugged in (or a disc inserted) while no viewer runs would meet the Windows
//! drivers. Persistent rules are kept in the registry by UsbDk and hold from boot on.
//!
//! # Design
//!
//! One table (`PARTS`) lists every registry value; the `.reg` file, both PowerShell scripts
//! and the checks are rendered from it, so they cannot drift apart. The UsbDk rules are built
//! from [`WindowsOptions::drives`] as typed values and rendered as validated hex. All text is
//! ASCII with CRLF line ends (what Windows PowerShell 5.1, `regedit` and Notepad expect); [`reg`]
//! reads the `.reg` format back, for the tests and for anyone who wants to check a file.

mod powershell;
#[cfg(test)]
mod ps_lint;
mod readme;
pub mod reg;
mod regfile;

pub use crate::usb::Model;

/// What to generate.
#[derive(Debug, Clone, Default)]
pub struct WindowsOptions {
    /// Approved drive models; empty = hide every mass-storage device from Windows (UsbDk class rule).
    pub drives: Vec<Model>,
}

/// One output file: its file name (no directories) and its text.
///
/// Every text is plain ASCII with CRLF line ends. The `.reg` file is written as such too:
/// `regedit` and `reg import` accept a version 5 file (header
/// `Windows Registry Editor Version 5.00`) in plain ASCII as well as the UTF-16LE form that
/// `regedit` writes when it exports; ASCII keeps the file readable by every tool and diffable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyFile {
    pub name: &'static str,
    pub text: String,
}

/// The registry policy file.
const REG_FILE: &str = "airlock-terminal-guard.reg";
/// The installer script.
const INSTALL_SCRIPT: &str = "Install-AirlockGuard.ps1";
/// The checker script.
const CHECK_SCRIPT: &str = "Check-AirlockGuard.ps1";
/// The notes for the administrator.
const README: &str = "README.txt";

/// Renders the Windows terminal policy: the `.reg` file, the install and check scripts and
/// the README, in that order.
pub fn windows_policy(opts: &WindowsOptions) -> Vec<PolicyFile> {
    let rules = hide_rules(&opts.drives);
    let (install, check) = powershell::scripts(PARTS, &rules);
    vec![
        PolicyFile {
            name: REG_FILE,
            text: crlf(&regfile::render(PARTS)),
        },
        PolicyFile {
            name: INSTALL_SCRIPT,
            text: crlf(&install),
        },
        PolicyFile {
            name: CHECK_SCRIPT,
            text: crlf(&check),
        },
        PolicyFile {
            name: README,
            text: crlf(&readme::render(&rules)),
        },
    ]
}

/// The CD-ROM device setup class (class name `CDROM`).
const CDROM_CLASS: &str = "{4d36e965-e325-11ce-bfc1-08002be10318}";

/// The Device Installation Restrictions policy key (below `HKEY_LOCAL_MACHINE`).
const RESTRICTIONS_KEY: &str = r"SOFTWARE\Policies\Microsoft\Windows\DeviceInstall\Restrictions";
/// The list of denied device setup classes.
const DENY_CLASSES_KEY: &str =
    r"SOFTWARE\Policies\Microsoft\Windows\DeviceInstall\Restrictions\DenyDeviceClasses";
/// The Remote Desktop Connection client policy key.
const RDP_CLIENT_KEY: &str = r"SOFTWARE\Policies\Microsoft\Windows NT\Terminal Services\Client";

/// One group of registry values, with the words that explain it.
struct Part {
    /// A short title, for the `.reg` comments and the scripts' output.
    title: &'static str,
    /// What the part does and where it is needed, one comment line each.
    about: &'static [&'static str],
    /// The values, grouped by key in the order they are written.
    settings: &'static [Setting],
}

/// One registry value below `HKEY_LOCAL_MACHINE`.
struct Setting {
    key: &'static str,
    name: &'static str,
    data: Data,
    check: Check,
    /// What the value means, one line (the Group Policy wording where there is one).
    what: &'static str,
}

/// The data of a [`Setting`].
#[derive(Clone, Copy)]
enum Data {
    /// A `REG_DWORD`.
    Dword(u32),
    /// A `REG_SZ` entry of a list key, where Windows reads every value whatever its name. The
    /// setting's name is the one the `.reg` file uses; the installer keeps other entries and
    /// takes the next free number when that name holds something else.
    ListEntry(&'static str),
}

/// How the checker judges a [`Setting`].
#[derive(Clone, Copy)]
enum Check {
    /// Must be set to the data.
    Required,
    /// Must be the data or absent; the words say why absent is fine.
    OrAbsent(&'static str),
    /// Only reported; the words say where it matters.
    Info(&'static str),
}

/// Everything the `.reg` file and the scripts set, in order.
const PARTS: &[Part] = &[
    Part {
        title: "Device Installation Restrictions: no driver for the CD-ROM setup class",
        about: &[
            "No driver may be installed for a device of the CD-ROM setup class, also for such",
            "devices that are already installed (retroactive), and administrators cannot",
            "override this. A disc in the terminal's drive never meets a driver, a file system,",
            "AutoPlay or Explorer here. The retroactive flag covers every class in the list:",
            "keep the CD-ROM class the only one (retroactive on DiskDrive can remove disks).",
            "This file names the list entry \"1\" and so replaces a value \"1\" already there;",
            "Install-AirlockGuard.ps1 keeps other entries and takes the next free number.",
        ],
        settings: &[
            Setting {
                key: RESTRICTIONS_KEY,
                name: "DenyDeviceClasses",
                data: Data::Dword(1),
                check: Check::Required,
                what: "Prevent installation of devices using drivers that match these device setup classes: enabled",
            },
            Setting {
                key: RESTRICTIONS_KEY,
                name: "DenyDeviceClassesRetroactive",
                data: Data::Dword(1),
                check: Check::Required,
                what: "Also apply to matching devices that are already installed",
            },
            Setting {
                key: RESTRICTIONS_KEY,
                name: "AllowAdminInstall",
                data: Data::Dword(0),
                check: Check::OrAbsent("default: off"),
                what: "Allow administrators to override Device Installation Restriction policies: disabled",
            },
            Setting {
                key: DENY_CLASSES_KEY,
                name: "1",
                data: Data::ListEntry(CDROM_CLASS),
                check: Check::Required,
                what: "The CD-ROM device setup class (CDROM)",
            },
        ],
    },
    Part {
        title: "RemoteFX USB redirection client policy (RDP sites)",
        about: &[
            "Lets the Remote Desktop Connection client on this terminal offer USB devices,",
            "the optical drive among them, for RemoteFX USB redirection into the remote",
            "desktop, for administrators and users. Needed only where the desktops are reached",
            "over RDP; harmless elsewhere. Takes effect after a restart of the terminal.",
        ],
        settings: &[Setting {
            key: RDP_CLIENT_KEY,
            name: "fUsbRedirectionEnableMode",
            data: Data::Dword(2),
            check: Check::Info("needed on RDP sites only"),
            what: "Allow RDP redirection of other supported RemoteFX USB devices from this computer: Administrators and Users",
        }],
    },
];

/// The UsbDk rule types (`USBDK_HIDER_RULE_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RuleType {
    /// VID, PID, BCD and the device descriptor's class, each exact or any.
    Default = 0,
    /// The class field is a bitmask of device types, taken from the device and all its
    /// interfaces ("determinative types").
    DeterminativeTypes = 1,
}

/// `1 << USB_DEVICE_CLASS_STORAGE` (class 08h): the mass-storage bit of a
/// [`RuleType::DeterminativeTypes`] class mask.
const STORAGE_TYPE_MASK: u32 = 1 << 8;

/// One UsbDk persistent hide rule; `None` matches any value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct HideRule {
    kind: RuleType,
    vid: Option<u16>,
    pid: Option<u16>,
    bcd: Option<u16>,
    class: Option<u32>,
}

impl HideRule {
    /// Hides every device that has a mass-storage interface.
    fn all_mass_storage() -> Self {
        HideRule {
            kind: RuleType::DeterminativeTypes,
            vid: None,
            pid: None,
            bcd: None,
            class: Some(STORAGE_TYPE_MASK),
        }
    }

    /// Hides every device of one model.
    fn model(model: Model) -> Self {
        HideRule {
            kind: RuleType::Default,
            vid: Some(model.vid),
            pid: Some(model.pid),
            bcd: None,
            class: None,
        }
    }

    /// The arguments of `UsbDkController` that add this rule as a persistent one:
    /// `-P TYPE VID PID BCD Class Hide`, every field hex, `-1` for any, hide = 1.
    fn command(&self) -> String {
        fn hex16(v: Option<u16>) -> String {
            v.map_or_else(|| "-1".to_owned(), |v| format!("{v:04x}"))
        }
        let class = self
            .class
            .map_or_else(|| "-1".to_owned(), |c| format!("{c:x}"));
        format!(
            "-P {} {} {} {} {class} 1",
            self.kind as u8,
            hex16(self.vid),
            hex16(self.pid),
            hex16(self.bcd),
        )
    }

    /// What the rule hides, in words.
    fn about(&self) -> String {
        match (self.vid, self.pid) {
            (Some(vid), Some(pid)) => format!("drive model {}", Model { vid, pid }),
            _ => "every USB mass-storage device".to_owned(),
        }
    }
}

/// The hide rules for the approved drives: one per model (duplicates dropped), or the
/// mass-storage class rule when no model is named.
fn hide_rules(drives: &[Model]) -> Vec<HideRule> {
    if drives.is_empty() {
        return vec![HideRule::all_mass_storage()];
    }
    let mut rules: Vec<HideRule> = Vec::with_capacity(drives.len());
    for rule in drives.iter().copied().map(HideRule::model) {
        if !rules.contains(&rule) {
            rules.push(rule);
        }
    }
    rules
}

/// Turns LF line ends into CRLF.
fn crlf(text: &str) -> String {
    debug_assert!(!text.contains('\r'), "the renderers write LF only");
    text.replace('\n', "\r\n")
}

#[cfg(test)]
mod tests {
    use super::reg::{RegFile, RegValue};
    use super::*;

    fn policy(drives: &[Model]) -> Vec<PolicyFile> {
        windows_policy(&WindowsOptions {
            drives: drives.to_vec(),
        })
    }

    fn file<'a>(files: &'a [PolicyFile], name: &str) -> &'a str {
        &files
            .iter()
            .find(|f| f.name == name)
            .unwrap_or_else(|| panic!("no file {name}"))
            .text
    }

    fn hklm(key: &str) -> String {
        format!(r"HKEY_LOCAL_MACHINE\{key}")
    }

    const DRIVE: Model = Model {
        vid: 0x0411,
        pid: 0x01f0,
    };

    #[test]
    fn the_four_files_in_order() {
        let names: Vec<_> = policy(&[]).iter().map(|f| f.name).collect();
        assert_eq!(
            names,
            [
                "airlock-terminal-guard.reg",
                "Install-AirlockGuard.ps1",
                "Check-AirlockGuard.ps1",
                "README.txt"
            ]
        );
    }

    #[test]
    fn every_file_is_ascii_with_crlf_line_ends() {
        for drives in [&[][..], &[DRIVE]] {
            for f in policy(drives) {
                assert!(f.text.is_ascii(), "{} has non-ASCII text", f.name);
                assert!(f.text.ends_with("\r\n"), "{} must end with CRLF", f.name);
                let bytes = f.text.as_bytes();
                for (i, &b) in bytes.iter().enumerate() {
                    if b == b'\n' {
                        assert!(i > 0 && bytes[i - 1] == b'\r', "{}: LF without CR", f.name);
                    }
                    if b == b'\r' {
                        assert_eq!(bytes.get(i + 1), Some(&b'\n'), "{}: CR without LF", f.name);
                    }
                }
            }
        }
    }

    #[test]
    fn reg_file_parses_and_holds_the_policy() {
        let files = policy(&[]);
        let text = file(&files, REG_FILE);
        assert!(text.starts_with("Windows Registry Editor Version 5.00\r\n\r\n"));
        let reg = RegFile::parse(text).expect("the generated .reg file parses");

        let restrictions = hklm(RESTRICTIONS_KEY);
        assert_eq!(
            reg.value(&restrictions, "DenyDeviceClasses"),
            Some(&RegValue::Dword(1))
        );
        assert_eq!(
            reg.value(&restrictions, "DenyDeviceClassesRetroactive"),
            Some(&RegValue::Dword(1))
        );
        assert_eq!(
            reg.value(&restrictions, "AllowAdminInstall"),
            Some(&RegValue::Dword(0))
        );

        let list = r"HKEY_LOCAL_MACHINE\SOFTWARE\Policies\Microsoft\Windows\DeviceInstall\Restrictions\DenyDeviceClasses";
        let classes: Vec<_> = reg.values(list).map(|(_, v)| v.clone()).collect();
        assert_eq!(
            classes,
            [RegValue::String(
                "{4d36e965-e325-11ce-bfc1-08002be10318}".to_owned()
            )],
            "the CD-ROM class, and only it (retroactive must not reach other classes)"
        );
        assert_eq!(
            reg.value(list, "1"),
            Some(&RegValue::String(CDROM_CLASS.to_owned()))
        );

        let rdp =
            r"HKEY_LOCAL_MACHINE\SOFTWARE\Policies\Microsoft\Windows NT\Terminal Services\Client";
        assert_eq!(
            reg.value(rdp, "fUsbRedirectionEnableMode"),
            Some(&RegValue::Dword(2))
        );

        let keys: Vec<_> = reg.sections.iter().map(|s| s.key.as_str()).collect();
        assert_eq!(keys, [restrictions.as_str(), list, rdp]);
    }

    #[test]
    fn reg_file_comments_say_terminal_only() {
        let files = policy(&[]);
        let comments: String = file(&files, REG_FILE)
            .lines()
            .filter(|l| l.starts_with(';'))
            .collect::<Vec<_>>()
            .join(" ");
        for needle in [
            "TERMINAL ONLY",
            "never",
            "desktop image",
            "redirected",
            "CD-ROM",
            "RemoteFX",
            "UsbDk",
        ] {
            assert!(comments.contains(needle), "comments lack {needle:?}");
        }
    }

    #[test]
    fn reg_file_is_the_same_whatever_the_drives() {
        // The drives only shape the UsbDk rules, which a .reg file cannot set.
        assert_eq!(
            file(&policy(&[]), REG_FILE),
            file(&policy(&[DRIVE]), REG_FILE)
        );
    }

    /// Every value of the `.reg` file is set by one line of the installer and checked by one
    /// line of the checker, with the same key, name and data; and the installer sets nothing
    /// else.
    #[test]
    fn scripts_set_and_check_what_the_reg_file_sets() {
        let files = policy(&[]);
        let reg = RegFile::parse(file(&files, REG_FILE)).expect("parses");
        let install = file(&files, INSTALL_SCRIPT);
        let check = file(&files, CHECK_SCRIPT);
        let line_with = |script: &str, parts: &[String]| {
            script
                .lines()
                .any(|l| parts.iter().all(|p| l.contains(p.as_str())))
        };

        let mut entries = 0;
        for section in &reg.sections {
            let ps_key = section
                .key
                .strip_prefix(r"HKEY_LOCAL_MACHINE\")
                .map(|k| format!(r"-Path 'HKLM:\{k}'"))
                .expect("every key is below HKEY_LOCAL_MACHINE");
            for entry in &section.entries {
                entries += 1;
                let name = entry.name.as_deref().expect("no default (@) values");
                let name_arg = format!("-Name '{name}'");
                match &entry.value {
                    RegValue::Dword(v) => {
                        let call = |command: &str, arg: String| {
                            [command.to_owned(), ps_key.clone(), name_arg.clone(), arg]
                        };
                        let set = call("Set-AirlockDword ", format!("-Value {v}"));
                        assert!(line_with(install, &set), "installer lacks {set:?}");
                        let test = call("Test-AirlockDword ", format!("-Expected {v}"));
                        assert!(line_with(check, &test), "checker lacks {test:?}");
                    }
                    RegValue::String(data) => {
                        let add = [
                            "Add-AirlockListEntry ".to_owned(),
                            ps_key.clone(),
                            name_arg,
                            format!("-Value '{data}'"),
                        ];
                        assert!(line_with(install, &add), "installer lacks {add:?}");
                        // Windows reads every entry of the list, so the checker looks for the
                        // data under any value name.
                        let test = [
                            "Test-AirlockListEntry ".to_owned(),
                            ps_key.clone(),
                            format!("-Value '{data}'"),
                        ];
                        assert!(line_with(check, &test), "checker lacks {test:?}");
                    }
                }
            }
        }
        let setters = install
            .lines()
            .filter(|l| {
                l.starts_with("Set-AirlockDword ") || l.starts_with("Add-AirlockListEntry ")
            })
            .count();
        assert_eq!(
            setters, entries,
            "the installer sets exactly what the .reg sets"
        );
    }

    #[test]
    fn install_script_shape() {
        let files = policy(&[]);
        let install = file(&files, INSTALL_SCRIPT);
        assert!(install.starts_with("#Requires -RunAsAdministrator\r\n"));
        for needle in [
            "Set-StrictMode -Version Latest",
            "$ErrorActionPreference = 'Stop'",
            r#"[string]$UsbDkController = "$env:ProgramFiles\UsbDk Runtime Library\UsbDkController.exe""#,
            "New-Item -Path $Path -Force",
            "-PropertyType DWord",
            "-PropertyType String",
            "-Force",
            "gpupdate",
            "reboot",
            "'Invalid|failed'",
        ] {
            assert!(install.contains(needle), "installer lacks {needle:?}");
        }
        // param() comes before the first statement.
        let param = install.find("param(").expect("param block");
        let strict = install.find("Set-StrictMode").expect("strict mode");
        assert!(param < strict);
    }

    #[test]
    fn check_script_shape() {
        let files = policy(&[]);
        let check = file(&files, CHECK_SCRIPT);
        for needle in [
            "Set-StrictMode -Version Latest",
            "$ErrorActionPreference = 'Stop'",
            "Get-ItemProperty -LiteralPath $Path -Name $Name -ErrorAction SilentlyContinue",
            "Get-PnpDevice -Class CDROM -PresentOnly",
            "Write-Host 'guarded'",
            "Write-Host 'not guarded'",
            "-Mode 'Info'",
            "-Mode 'OrAbsent' -Note 'default: off'",
        ] {
            assert!(check.contains(needle), "checker lacks {needle:?}");
        }
        assert!(
            !check.contains("#Requires -RunAsAdministrator"),
            "a user can check"
        );
        let tail: Vec<_> = check.lines().rev().take(6).collect();
        assert_eq!(
            tail,
            [
                "exit 1",
                "Write-Host 'not guarded'",
                "}",
                "    exit 0",
                "    Write-Host 'guarded'",
                "if ($script:FailCount -eq 0) {",
            ],
            "the checker ends with its verdict and exit code"
        );
    }

    #[test]
    fn scripts_are_well_formed_powershell() {
        for drives in [&[][..], &[DRIVE, Model { vid: 1, pid: 2 }]] {
            let files = policy(drives);
            for name in [INSTALL_SCRIPT, CHECK_SCRIPT] {
                let text = file(&files, name);
                let scan = ps_lint::scan(text).unwrap_or_else(|e| panic!("{name}: {e}"));
                assert_eq!(
                    ps_lint::bad_variable_colons(&scan),
                    Vec::<String>::new(),
                    "{name}"
                );
                assert_eq!(
                    ps_lint::automatic_variable_writes(&scan),
                    Vec::<String>::new(),
                    "{name}"
                );
            }
        }
    }

    /// Where PowerShell is installed, its own parser must accept both scripts.
    #[test]
    fn scripts_parse_with_pwsh_if_present() {
        let Some(pwsh) = find_on_path("pwsh") else {
            eprintln!("pwsh is not on PATH: the scripts were checked by structure only");
            return;
        };
        let dir = tempfile::tempdir().expect("temp dir");
        for f in policy(&[DRIVE]) {
            if !f.name.ends_with(".ps1") {
                continue;
            }
            let path = dir.path().join(f.name);
            std::fs::write(&path, &f.text).expect("write script");
            let command = format!(
                "$tokens = $null; $errors = $null; \
                 [void][System.Management.Automation.Language.Parser]::ParseFile('{}', [ref]$tokens, [ref]$errors); \
                 $errors | ForEach-Object {{ $_.ToString() }}; exit $errors.Count",
                path.display().to_string().replace('\'', "''")
            );
            let out = std::process::Command::new(&pwsh)
                .args(["-NoProfile", "-NonInteractive", "-Command", &command])
                .output()
                .expect("run pwsh");
            assert!(
                out.status.success(),
                "{}: {}{}",
                f.name,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }

    fn find_on_path(program: &str) -> Option<std::path::PathBuf> {
        let path = std::env::var_os("PATH")?;
        std::env::split_paths(&path)
            .map(|dir| dir.join(program))
            .find(|candidate| candidate.is_file())
    }

    #[test]
    fn usbdk_rule_for_one_drive_model() {
        let files = policy(&[DRIVE]);
        let install = file(&files, INSTALL_SCRIPT);
        assert!(install.contains("Command = '-P 0 0411 01f0 -1 -1 1'"));
        assert!(
            !install.contains("-P 1 -1 -1 -1 100 1"),
            "no class rule when models are named"
        );
        // The registry form UsbDk stores the rule in, for the already-present test and the checker.
        let stored = "Type = 0; ShouldHide = 1; VID = 0x0411; PID = 0x01f0; BCD = -1; Class = -1";
        assert!(install.contains(stored));
        assert!(file(&files, CHECK_SCRIPT).contains(stored));
    }

    #[test]
    fn usbdk_class_rule_without_drive_models() {
        let files = policy(&[]);
        let install = file(&files, INSTALL_SCRIPT);
        assert!(install.contains("Command = '-P 1 -1 -1 -1 100 1'"));
        let stored = "Type = 1; ShouldHide = 1; VID = -1; PID = -1; BCD = -1; Class = 0x100";
        assert!(install.contains(stored));
        assert!(file(&files, CHECK_SCRIPT).contains(stored));
    }

    #[test]
    fn usbdk_rules_are_four_digit_hex_and_deduplicated() {
        let odd = Model {
            vid: 0x1,
            pid: 0xabcd,
        };
        let files = policy(&[DRIVE, odd, DRIVE]);
        let install = file(&files, INSTALL_SCRIPT);
        assert_eq!(
            install
                .matches("Command = '-P 0 0411 01f0 -1 -1 1'")
                .count(),
            1
        );
        assert_eq!(
            install
                .matches("Command = '-P 0 0001 abcd -1 -1 1'")
                .count(),
            1
        );
    }

    /// Every generated command passes the same validation the installer applies before it
    /// runs UsbDkController (`^-P [01]( (-1|[0-9a-f]{1,8})){4} 1$`).
    #[test]
    fn usbdk_commands_pass_the_installers_validation() {
        let install = file(&policy(&[]), INSTALL_SCRIPT).to_owned();
        assert!(install.contains(r"'^-P [01]( (-1|[0-9a-f]{1,8})){4} 1$'"));
        let models = [
            DRIVE,
            Model { vid: 0, pid: 0 },
            Model {
                vid: 0xffff,
                pid: 0xffff,
            },
        ];
        let rules = hide_rules(&models)
            .into_iter()
            .chain(hide_rules(&[]))
            .collect::<Vec<_>>();
        for rule in rules {
            let command = rule.command();
            let fields: Vec<_> = command.split(' ').collect();
            assert_eq!(fields.len(), 7, "{command}");
            assert_eq!(fields[0], "-P");
            assert!(matches!(fields[1], "0" | "1"), "{command}");
            for f in &fields[2..6] {
                let hex = (1..=8).contains(&f.len())
                    && f.bytes()
                        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
                assert!(*f == "-1" || hex, "{command}: field {f:?}");
            }
            assert_eq!(fields[6], "1");
        }
    }

    #[test]
    fn readme_covers_placement_sites_gpo_and_limits() {
        let files = policy(&[DRIVE]);
        let readme = file(&files, README);
        for needle in [
            REG_FILE,
            INSTALL_SCRIPT,
            CHECK_SCRIPT,
            "TERMINAL ONLY",
            "never in the desktop image",
            "RDP",
            "RemoteFX",
            "SPICE",
            "UsbDk",
            "DenyDeviceClassesRetroactive",
            "DiskDrive",
            "Computer Configuration > Administrative Templates > System > Device Installation > Device Installation Restrictions",
            "Prevent installation of devices using drivers that match these device setup classes",
            "Also apply to matching devices that are already installed",
            "Allow administrators to override Device Installation Restriction policies",
            "Not verified on real Windows here",
            "fEnableUsbBlockDeviceBySetupClass",
            "-P 0 0411 01f0 -1 -1 1",
            "-D 0 0411 01f0 -1 -1 1",
            CDROM_CLASS,
        ] {
            assert!(readme.contains(needle), "README lacks {needle:?}");
        }
    }

    #[test]
    fn usb_model_displays_as_vid_pid() {
        assert_eq!(DRIVE.to_string(), "0411:01f0");
    }
}
