//! `airlock guard`: makes and checks a terminal that never reads a disc itself (the
//! logic is in the `airlock-guard` library; this prints and maps to exit codes).
use std::path::{Path, PathBuf};
use std::process::Command;

use airlock_guard::files::Model;
use airlock_guard::install::{self, InstallOptions};
use airlock_guard::modules::{ModuleFacts, ModuleState, GUARDED};
use airlock_guard::status::Status;
use airlock_guard::windows::{self, WindowsOptions};
use airlock_guard::Root;
use anyhow::Context as _;
use clap::{Args, Subcommand};

/// Exit code of `guard status` for a terminal that is not guarded.
pub const NOT_GUARDED: u8 = 8;

#[derive(Debug, Subcommand)]
pub enum GuardCommand {
    /// Check this terminal: a line per check, then `guarded` (exit 0) or `not guarded`
    /// (exit 8).
    Status(RootArg),
    /// Install the guard (as root): storage modules refused, the drive claimable by
    /// group `airlock`, udisks told to ignore it. Idempotent; all or nothing.
    Install(InstallArgs),
    /// Remove what `install` wrote (the group stays).
    Uninstall(RootArg),
    /// Write the Windows terminal's policy (.reg, PowerShell install and check scripts,
    /// README) to a directory.
    WindowsPolicy(WindowsArgs),
}

#[derive(Debug, Args)]
pub struct RootArg {
    /// Act on the system under DIR (an image being built, a test tree) instead of `/`.
    #[arg(long, value_name = "DIR")]
    root: Option<PathBuf>,
}

impl RootArg {
    fn root(&self) -> Root {
        self.root.as_ref().map_or_else(Root::system, Root::new)
    }
}

#[derive(Debug, Args)]
pub struct InstallArgs {
    #[command(flatten)]
    root: RootArg,
    /// Also write a USBGuard rule file that blocks devices combining mass storage with a
    /// keyboard or network interface (the drive itself must stay allowed).
    #[arg(long)]
    usbguard: bool,
    /// Grant group access only to this approved drive model (repeatable); default: every
    /// USB mass-storage device.
    #[arg(long, value_name = "VID:PID")]
    drive: Vec<Model>,
}

#[derive(Debug, Args)]
pub struct WindowsArgs {
    /// The directory to write the files to (created if missing).
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// Hide only this approved drive model from Windows with UsbDk (repeatable); default:
    /// every mass-storage device.
    #[arg(long, value_name = "VID:PID")]
    drive: Vec<Model>,
}

/// Runs a guard command; its exit code.
pub fn run(cmd: &GuardCommand) -> anyhow::Result<u8> {
    match cmd {
        GuardCommand::Status(r) => {
            let status = Status::read(&r.root());
            print!("{}", status.render());
            Ok(if status.guarded() { 0 } else { NOT_GUARDED })
        }
        GuardCommand::Install(a) => install(a),
        GuardCommand::Uninstall(r) => uninstall(&r.root()),
        GuardCommand::WindowsPolicy(a) => windows_policy(a),
    }
}

fn install(a: &InstallArgs) -> anyhow::Result<u8> {
    let root = a.root.root();
    let opts = InstallOptions {
        usbguard: a.usbguard,
        drives: a.drive.clone(),
    };
    let applied = install::apply(&root, &install::install_plan(&opts), true)?;
    if applied.created_group {
        println!("created group airlock: add the clinicians' accounts (usermod -aG airlock USER)");
    }
    for p in &applied.changed {
        println!("wrote {p}");
    }
    for p in &applied.unchanged {
        println!("unchanged {p}");
    }
    if applied.changed.is_empty() && !applied.created_group {
        println!("the guard was already installed: nothing changed");
        return Ok(0);
    }
    after_change(&root);
    // What the new files cannot undo by themselves.
    let facts = ModuleFacts::read(&root);
    for m in GUARDED {
        if facts.state(m) == ModuleState::LoadedThoughBlocked {
            println!(
                "{m} is loaded now and was left loaded: `modprobe -r {m}` once no drive is \
                 in use, or reboot"
            );
        }
    }
    if !airlock_guard::usb::cd_block_devices(&root).is_empty() {
        println!("a CD block device exists: unplug and replug the drive (or reboot)");
    }
    if root.path("/etc/initramfs-tools").is_dir() {
        println!("run `update-initramfs -u` so that the initramfs refuses the modules too");
    }
    println!("next: `airlock guard status`");
    Ok(0)
}

fn uninstall(root: &Root) -> anyhow::Result<u8> {
    let applied = install::apply(root, &install::uninstall_plan(root)?, false)?;
    if applied.changed.is_empty() {
        println!("the guard was not installed: nothing changed");
        return Ok(0);
    }
    for p in &applied.changed {
        println!("removed {p}");
    }
    after_change(root);
    println!(
        "the terminal is no longer guarded (group airlock stays); unplug and replug the \
         drive for udev to apply the change"
    );
    Ok(0)
}

/// On the running system, has udev read its rules again and re-apply them to USB devices.
fn after_change(root: &Root) {
    if !root.is_system() {
        return;
    }
    let udevadm = |args: &[&str]| Command::new("udevadm").args(args).status();
    match udevadm(&["control", "--reload-rules"]) {
        Ok(s) if s.success() => {
            let _ = udevadm(&["trigger", "--action=change", "--subsystem-match=usb"]);
            println!("udev rules reloaded and applied to USB devices");
        }
        _ => println!(
            "udev did not take the new rules (`udevadm control --reload-rules` failed): \
             they apply when udev next starts"
        ),
    }
}

fn windows_policy(a: &WindowsArgs) -> anyhow::Result<u8> {
    let opts = WindowsOptions {
        drives: a.drive.clone(),
    };
    std::fs::create_dir_all(&a.out)
        .with_context(|| format!("cannot create {}", a.out.display()))?;
    for f in windows::windows_policy(&opts) {
        let path: &Path = &a.out.join(f.name);
        std::fs::write(path, f.text.as_bytes())
            .with_context(|| format!("cannot write {}", path.display()))?;
        println!("wrote {}", path.display());
    }
    println!(
        "next: read {} (terminal only, never the desktop image), then run \
         Install-AirlockGuard.ps1 as administrator on the terminal",
        a.out.join("README.txt").display()
    );
    Ok(0)
}
