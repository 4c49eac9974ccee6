//! The demo guest booted directly by the kit, without a broker: the same machine,
//! kernel and command line as the broker's desktops, under TCG, with QMP, its agent port
//! and its control port (ttyS1) on Unix sockets in a [`RunDir`]. Options add a
//! cold-plugged empty USB CD drive (`usb-bot` `cd0` + `scsi-cd` `cd0-cd`: the local
//! drive the disc benchmark compares against), or a `usb-redir` chardev (what a broker's
//! desktop has, for the terminal side's tests).
//!
//! By default nobody connects to the agent port and its output is read from QEMU's log
//! file, which is exact only while no client is connected (with a client, a write that
//! would block is logged and then retried, so the file gets doubled bytes; QEMU 7.2
//! `qemu_chr_write_buffer`); the broker's desktops are the same. [`AgentPort::Connect`]
//! talks to the agent instead.
use crate::artifacts::GuestManifest;
use crate::process::{run, tail, Proc, RunDir};
use crate::qmp::Qmp;
use crate::serial::SerialLog;
use crate::shell::Shell;
use crate::tools::QEMU;
use anyhow::{Context, Result};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// How the kit reads the agent port (ttyS0).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AgentPort {
    /// From QEMU's log file; nobody connects (as with the broker's desktops).
    Log,
    /// Connected: [`SerialLog::send`] sends agent commands.
    Connect,
}

/// What to boot.
#[derive(Debug, Clone)]
pub struct GuestVmOptions {
    /// QEMU's `-name` (thread names and `ps` show it).
    pub name: String,
    pub memory_mib: u64,
    /// `airlock.control=1`: the guest runs its control shell on ttyS1 (the port exists
    /// and is connected either way).
    pub control: bool,
    pub agent: AgentPort,
    /// An empty USB CD drive on the xHCI bus: `usb-bot` `cd0` with `scsi-cd` `cd0-cd`.
    pub local_cd: bool,
    /// A `usb-redir` device whose chardev listens at `usbredir.sock`.
    pub usbredir: bool,
}

impl Default for GuestVmOptions {
    fn default() -> Self {
        GuestVmOptions {
            name: "airlock-test-guest".into(),
            memory_mib: 256,
            control: true,
            agent: AgentPort::Log,
            local_cd: false,
            usbredir: false,
        }
    }
}

/// A running demo guest; dropping it kills QEMU and removes its directory.
pub struct GuestVm {
    // Fields drop in order: the VM first, then its directory.
    proc: Proc,
    /// The agent port (ttyS0).
    pub serial: SerialLog,
    pub qmp: Qmp,
    /// The control port (ttyS1).
    pub control: Shell,
    pub dir: RunDir,
    started: Instant,
    next_node: u32,
}

impl GuestVm {
    /// Boots the guest (returns once QEMU's sockets answer, not when the guest is
    /// ready: see [`GuestVm::wait_ready`]).
    pub fn boot(guest: &GuestManifest, o: &GuestVmOptions) -> Result<GuestVm> {
        crate::tools::require(crate::tools::VM_TOOLS)?;
        let dir = RunDir::new("airlock-guest-")?;
        let f = |n: &str| dir.join(n);
        run(Command::new("qemu-img")
            .args(["create", "-q", "-f", "qcow2", "-F", "qcow2", "-b"])
            .arg(&guest.golden_disk)
            .arg(f("disk.qcow2")))?;
        let chardev = |id: &str, sock: &str, log: Option<&str>| {
            let mut s = format!(
                "socket,id={id},path={},server=on,wait=off",
                f(sock).display()
            );
            if let Some(log) = log {
                s.push_str(&format!(",logfile={}", f(log).display()));
            }
            s
        };
        let mut append = guest.append.clone();
        if o.control {
            append.push_str(" airlock.control=1");
        }
        let agent_log = (o.agent == AgentPort::Log).then_some("serial.log");
        let mut cmd = Command::new(QEMU);
        cmd.args(["-name", &format!("{},debug-threads=on", o.name)])
            .args(["-accel", "tcg", "-machine", "q35"])
            .args(["-m", &o.memory_mib.to_string(), "-smp", "1"])
            .args(["-nodefaults", "-no-user-config", "-nic", "none"])
            .args(["-display", "none", "-vga", "std"])
            .arg("-kernel")
            .arg(&guest.kernel)
            .arg("-initrd")
            .arg(&guest.initrd)
            .args(["-append", &append])
            .args(["-chardev", &chardev("agent0", "agent.sock", agent_log)])
            .args(["-serial", "chardev:agent0"])
            .args([
                "-chardev",
                &chardev("control0", "control.sock", Some("control.log")),
            ])
            .args(["-serial", "chardev:control0"])
            .arg("-qmp")
            .arg(format!(
                "unix:{},server=on,wait=off",
                f("qmp.sock").display()
            ))
            .arg("-drive")
            .arg(format!(
                "file={},if=virtio,format=qcow2",
                f("disk.qcow2").display()
            ))
            .args(["-device", "qemu-xhci,id=xhci"]);
        if o.local_cd {
            cmd.args(["-device", "usb-bot,id=cd0,bus=xhci.0"])
                .args(["-device", "scsi-cd,id=cd0-cd,bus=cd0.0"]);
        }
        if o.usbredir {
            cmd.args(["-chardev", &chardev("ur0", "usbredir.sock", None)])
                .args(["-device", "usb-redir,chardev=ur0,id=redir0,bus=xhci.0"]);
        }
        let log = std::fs::File::create(f("qemu.log"))?;
        let proc = Proc::spawn(
            cmd.stdin(Stdio::null())
                .stdout(log.try_clone()?)
                .stderr(log),
            &format!("QEMU ({})", o.name),
        )?;
        let started = Instant::now();
        let qmp = Qmp::connect(&f("qmp.sock"))
            .with_context(|| format!("QEMU log: {}", tail(&f("qemu.log"), 20)))?;
        let serial = match o.agent {
            AgentPort::Log => SerialLog::file(f("serial.log")),
            AgentPort::Connect => SerialLog::connect(&f("agent.sock"))?,
        };
        let control = Shell::connect(&f("control.sock"), None)?;
        Ok(GuestVm {
            proc,
            serial,
            qmp,
            control,
            dir,
            started,
            next_node: 0,
        })
    }

    /// The guest with a `usb-redir` device (chardev at [`GuestVm::usbredir_sock`]) and no
    /// control shell, as a broker's desktop is seen from a terminal; ready.
    pub fn with_usbredir(guest: &GuestManifest) -> Result<GuestVm> {
        let mut vm = GuestVm::boot(
            guest,
            &GuestVmOptions {
                usbredir: true,
                control: false,
                ..GuestVmOptions::default()
            },
        )?;
        vm.wait_ready(Duration::from_secs(60))?;
        Ok(vm)
    }

    /// Waits for `AIRLOCK-READY boot`; an exited QEMU is reported with its log.
    pub fn wait_ready(&mut self, timeout: Duration) -> Result<()> {
        let r = self.serial.wait_ready(timeout);
        if r.is_err() && !self.proc.running() {
            anyhow::bail!("QEMU exited; its log: {}", self.qemu_log());
        }
        r.map(|_| ())
    }

    /// Seconds since QEMU started.
    pub fn elapsed(&self) -> f64 {
        self.started.elapsed().as_secs_f64()
    }

    pub fn qemu_pid(&self) -> u32 {
        self.proc.id()
    }

    pub fn running(&mut self) -> bool {
        self.proc.running()
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The usb-redir chardev's socket (with [`GuestVmOptions::usbredir`]).
    pub fn usbredir_sock(&self) -> PathBuf {
        self.dir.join("usbredir.sock")
    }

    /// The end of QEMU's own log.
    pub fn qemu_log(&self) -> String {
        tail(&self.dir.join("qemu.log"), 30)
    }

    /// Hot-plugs a USB CD drive `id` (`usb-bot` `id` + `scsi-cd` `id-cd`), with `iso`
    /// in it or empty.
    pub fn plug_cd_drive(&mut self, id: &str, iso: Option<&Path>) -> Result<()> {
        self.next_node += 1;
        let node = format!("iso{}", self.next_node);
        self.qmp.plug_cd(id, iso, &node)
    }

    /// Puts `iso` in drive `id`.
    pub fn insert(&mut self, id: &str, iso: &Path) -> Result<()> {
        self.qmp.insert(&format!("{id}-cd"), iso)
    }

    /// Ejects the disc of drive `id`.
    pub fn eject(&mut self, id: &str) -> Result<()> {
        self.qmp.eject(&format!("{id}-cd"))
    }

    /// Unplugs drive `id` (`device_del`, without waiting).
    pub fn unplug_cd_drive(&mut self, id: &str) -> Result<()> {
        self.qmp
            .cmd("device_del", serde_json::json!({"id": id}))
            .map(|_| ())
    }
}
