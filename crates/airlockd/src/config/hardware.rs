//! `[pool.hardware]`: the desktop's firmware, TPM, clock, pointer, disk bus and graphics
//! card (what a Windows golden image needs), checked against the host: OVMF and swtpm
//! must be installed when asked for.
use super::{invalid, resolve, ConfigError};
use airlock_core::ResetMethod;
use airlock_qemu::{DiskBus, Firmware, MachineShape, Uefi, Vga};
use serde::Deserialize;
use std::path::{Path, PathBuf};

/// Debian's OVMF (package `ovmf`): 4 MiB flash images.
pub const OVMF_CODE: &str = "/usr/share/OVMF/OVMF_CODE_4M.fd";
pub const OVMF_VARS: &str = "/usr/share/OVMF/OVMF_VARS_4M.fd";
/// With Secure Boot: the SMM build, and variables with Microsoft's keys enrolled (what
/// Windows and shim-signed Linux boot with).
pub const OVMF_CODE_SECBOOT: &str = "/usr/share/OVMF/OVMF_CODE_4M.secboot.fd";
pub const OVMF_VARS_MS: &str = "/usr/share/OVMF/OVMF_VARS_4M.ms.fd";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawHardware {
    #[serde(default = "default_firmware")]
    firmware: String,
    #[serde(default)]
    secure_boot: bool,
    ovmf_code: Option<PathBuf>,
    ovmf_vars: Option<PathBuf>,
    #[serde(default)]
    tpm: bool,
    #[serde(default = "default_swtpm")]
    swtpm: PathBuf,
    #[serde(default = "default_rtc")]
    rtc: String,
    #[serde(default = "default_pointer")]
    pointer: String,
    #[serde(default = "default_disk_bus")]
    disk_bus: String,
    #[serde(default = "default_vga")]
    vga: String,
}

impl Default for RawHardware {
    fn default() -> Self {
        RawHardware {
            firmware: default_firmware(),
            secure_boot: false,
            ovmf_code: None,
            ovmf_vars: None,
            tpm: false,
            swtpm: default_swtpm(),
            rtc: default_rtc(),
            pointer: default_pointer(),
            disk_bus: default_disk_bus(),
            vga: default_vga(),
        }
    }
}

fn default_firmware() -> String {
    "bios".into()
}
fn default_swtpm() -> PathBuf {
    "swtpm".into()
}
fn default_rtc() -> String {
    "utc".into()
}
fn default_pointer() -> String {
    "mouse".into()
}
fn default_disk_bus() -> String {
    "virtio".into()
}
fn default_vga() -> String {
    "std".into()
}

/// A program named by a bare name is looked up in `PATH`.
fn find_program(p: &Path) -> Option<PathBuf> {
    if p.components().count() > 1 {
        return p.is_file().then(|| p.to_owned());
    }
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(p))
            .find(|c| c.is_file())
    })
}

fn firmware_file(key: &'static str, p: &Path) -> Result<(), ConfigError> {
    match std::fs::metadata(p) {
        Ok(m) if m.is_file() && m.len() > 0 => Ok(()),
        _ => Err(invalid(
            key,
            format!("{} is not a readable firmware file", p.display()),
            "install Debian's ovmf (apt-get install ovmf) or point the key at OVMF's files",
        )),
    }
}

/// Checks `[pool.hardware]`; `machine` is `pool.machine` (q35 is needed for SMM), `base`
/// the config file's directory.
pub(super) fn machine_shape(
    m: &RawHardware,
    machine: &str,
    reset: ResetMethod,
    base: &Path,
) -> Result<MachineShape, ConfigError> {
    let firmware = match m.firmware.as_str() {
        "bios" => {
            for (key, set) in [
                ("pool.hardware.secure_boot", m.secure_boot),
                ("pool.hardware.ovmf_code", m.ovmf_code.is_some()),
                ("pool.hardware.ovmf_vars", m.ovmf_vars.is_some()),
            ] {
                if set {
                    return Err(invalid(
                        key,
                        "is set but the firmware is \"bios\"",
                        "set firmware = \"uefi\", or remove it",
                    ));
                }
            }
            Firmware::Bios
        }
        "uefi" => {
            if m.secure_boot && !machine.starts_with("q35") && !machine.starts_with("pc-q35") {
                return Err(invalid(
                    "pool.hardware.secure_boot",
                    format!("needs SMM, which the {machine:?} machine has not"),
                    "set pool.machine = \"q35\"",
                ));
            }
            let (code_default, vars_default) = if m.secure_boot {
                (OVMF_CODE_SECBOOT, OVMF_VARS_MS)
            } else {
                (OVMF_CODE, OVMF_VARS)
            };
            let code = m
                .ovmf_code
                .as_deref()
                .map(|p| resolve(base, p))
                .unwrap_or_else(|| code_default.into());
            let vars = m
                .ovmf_vars
                .as_deref()
                .map(|p| resolve(base, p))
                .unwrap_or_else(|| vars_default.into());
            firmware_file("pool.hardware.ovmf_code", &code)?;
            firmware_file("pool.hardware.ovmf_vars", &vars)?;
            Firmware::Uefi(Uefi {
                code,
                vars_template: vars,
                secure_boot: m.secure_boot,
            })
        }
        other => {
            return Err(invalid(
                "pool.hardware.firmware",
                format!("{other:?} is not a firmware"),
                "use \"bios\" (SeaBIOS) or \"uefi\" (OVMF)",
            ))
        }
    };
    let tpm = if m.tpm {
        let found = find_program(&m.swtpm).ok_or_else(|| {
            invalid(
                "pool.hardware.swtpm",
                format!("{} is not an installed program", m.swtpm.display()),
                "install swtpm (apt-get install swtpm swtpm-tools), or set swtpm to its path",
            )
        })?;
        Some(found)
    } else {
        None
    };
    if reset == ResetMethod::SnapshotRestore && (firmware != Firmware::Bios || tpm.is_some()) {
        return Err(invalid(
            "pool.reset",
            "\"snapshot_restore\" cannot keep a UEFI variable store or a TPM in the disk's snapshot",
            "use reset = \"template_clone\" (the default) or \"rebuild\"",
        ));
    }
    let rtc_localtime = match m.rtc.as_str() {
        "utc" => false,
        "localtime" => true,
        other => {
            return Err(invalid(
                "pool.hardware.rtc",
                format!("{other:?} is not a clock base"),
                "use \"utc\" (Linux) or \"localtime\" (Windows)",
            ))
        }
    };
    let tablet = match m.pointer.as_str() {
        "mouse" => false,
        "tablet" => true,
        other => {
            return Err(invalid(
                "pool.hardware.pointer",
                format!("{other:?} is not a pointer"),
                "use \"mouse\" (PS/2) or \"tablet\" (absolute, usb-tablet)",
            ))
        }
    };
    let disk_bus = match m.disk_bus.as_str() {
        "virtio" => DiskBus::Virtio,
        "sata" => DiskBus::Sata,
        other => {
            return Err(invalid(
                "pool.hardware.disk_bus",
                format!("{other:?} is not a disk bus"),
                "use \"virtio\" (needs virtio drivers in the image) or \"sata\"",
            ))
        }
    };
    let vga = match m.vga.as_str() {
        "std" => Vga::Std,
        "virtio" => Vga::Virtio,
        "qxl" => Vga::Qxl,
        other => {
            return Err(invalid(
                "pool.hardware.vga",
                format!("{other:?} is not a graphics card"),
                "use \"std\", \"virtio\" or \"qxl\"",
            ))
        }
    };
    Ok(MachineShape {
        firmware,
        tpm,
        rtc_localtime,
        tablet,
        disk_bus,
        vga,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> RawHardware {
        toml::from_str(text).unwrap()
    }

    fn check(text: &str) -> Result<MachineShape, ConfigError> {
        machine_shape(
            &parse(text),
            "q35",
            ResetMethod::TemplateClone,
            Path::new("/"),
        )
    }

    fn err(text: &str) -> String {
        check(text).unwrap_err().to_string()
    }

    #[test]
    fn the_default_is_the_shape_desktops_always_had() {
        assert_eq!(check("").unwrap(), MachineShape::default());
    }

    #[test]
    fn every_choice_is_checked_with_a_fix() {
        assert!(err("firmware = \"coreboot\"").contains("pool.hardware.firmware"));
        assert!(err("secure_boot = true").contains("set firmware = \"uefi\""));
        assert!(err("rtc = \"gmt\"").contains("pool.hardware.rtc"));
        assert!(err("pointer = \"pen\"").contains("pool.hardware.pointer"));
        assert!(err("disk_bus = \"scsi\"").contains("pool.hardware.disk_bus"));
        assert!(err("vga = \"cirrus\"").contains("pool.hardware.vga"));
        assert!(err("tpm = true\nswtpm = \"/nonexistent/swtpm\"").contains("apt-get install swtpm"));
        assert!(err("firmware = \"uefi\"\novmf_code = \"/nonexistent.fd\"")
            .contains("apt-get install ovmf"));
        let e = machine_shape(
            &parse("firmware = \"uefi\"\nsecure_boot = true"),
            "pc",
            ResetMethod::TemplateClone,
            Path::new("/"),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("SMM"), "{e}");
    }

    #[test]
    fn uefi_secure_boot_and_a_tpm_on_this_host() {
        let d = tempfile::tempdir().unwrap();
        let code = d.path().join("code.fd");
        let vars = d.path().join("vars.fd");
        std::fs::write(&code, b"c").unwrap();
        std::fs::write(&vars, b"v").unwrap();
        let text = String::from(
            "firmware = \"uefi\"\nsecure_boot = true\novmf_code = \"code.fd\"\novmf_vars = \"vars.fd\"\ntpm = true\nswtpm = \"/bin/sh\"\nrtc = \"localtime\"\npointer = \"tablet\"\ndisk_bus = \"sata\"\nvga = \"virtio\""
        );
        let s = machine_shape(&parse(&text), "q35", ResetMethod::TemplateClone, d.path()).unwrap();
        assert_eq!(
            s.firmware,
            Firmware::Uefi(Uefi {
                code,
                vars_template: vars,
                secure_boot: true
            })
        );
        assert_eq!(s.tpm.as_deref(), Some(Path::new("/bin/sh")));
        assert!(s.rtc_localtime && s.tablet);
        assert_eq!((s.disk_bus, s.vga), (DiskBus::Sata, Vga::Virtio));
        // Internal snapshots cannot hold the variable store or the TPM.
        let e = machine_shape(&parse(&text), "q35", ResetMethod::SnapshotRestore, d.path())
            .unwrap_err()
            .to_string();
        assert!(e.contains("snapshot_restore"), "{e}");
    }
}
