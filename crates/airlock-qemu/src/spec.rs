//! What a desktop VM looks like, and the QEMU command line for it. Pure: no I/O.
//!
//! *Architecture invariant:* a desktop VM has no network interface (`-nic none`,
//! `-nodefaults`). Its only channels are the ticketed display, the usb-redir chardev, the
//! broker's agent port (COM1, or one named virtio-serial port when the pool asks for it)
//! and, only when the config asks for it, a test control port;
//! all of them are unix sockets in the desktop's run directory or a display port the
//! broker chose.
//! No SPICE agent, webdav or SPICE USB channel is ever added, the SPICE server refuses
//! copy-paste and file transfer ([`SPICE_OPTIONS`]), and the broker checks each running
//! QEMU's chardevs against the ones made here ([`crate::chardev_policy`]).
use serde::{Deserialize, Serialize};
use std::net::IpAddr;
use std::path::{Path, PathBuf};

/// The accelerator QEMU runs the guest with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Accel {
    /// Hardware virtualization: the default on real hosts.
    Kvm,
    /// Software emulation: slow, but works everywhere (CI, nested hosts).
    Tcg,
}

impl Accel {
    /// The name QEMU uses.
    pub fn as_str(self) -> &'static str {
        match self {
            Accel::Kvm => "kvm",
            Accel::Tcg => "tcg",
        }
    }
}

/// The device that carries the broker's guest agent port.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AgentPort {
    /// COM1 (ISA 16550, the guest's `ttyS0`/`COM1`): every guest has its driver, but
    /// each byte is a trap (about 0.3 MB/s under TCG).
    #[default]
    Isa,
    /// One virtio-serial port named [`VIRTIO_AGENT_PORT`] on its own controller: far
    /// faster, needs the guest's virtio console driver (`virtio_console`, virtio-win's
    /// `vioser`). The test control port, if any, stays on COM2.
    Virtio,
}

/// The name of the agent's virtio-serial port (`/sys/class/virtio-ports/*/name`).
pub const VIRTIO_AGENT_PORT: &str = "org.airlock.agent.0";

/// The name the stock QEMU guest agent looks for (Linux `qemu-ga`, the Windows service)
/// when the pool's agent is [`AgentProtocol::Qga`] on a virtio-serial port.
pub const VIRTIO_QGA_PORT: &str = "org.qemu.guest_agent.0";

/// What answers on the agent port inside the guest.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AgentProtocol {
    /// Airlock's own line protocol (the demo guest; docs/guest.md): the broker keeps a
    /// connection open and logs what the guest writes.
    #[default]
    Airlock,
    /// The stock QEMU guest agent (`qemu-ga`, [`crate::qga`]): the broker connects only
    /// to ask it something.
    Qga,
}

impl AgentPort {
    /// The config's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            AgentPort::Isa => "isa",
            AgentPort::Virtio => "virtio",
        }
    }

    /// `isa` or `virtio`.
    pub fn parse(s: &str) -> Option<AgentPort> {
        match s {
            "isa" => Some(AgentPort::Isa),
            "virtio" => Some(AgentPort::Virtio),
            _ => None,
        }
    }
}

/// The firmware a desktop boots with.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Firmware {
    /// SeaBIOS, QEMU's default.
    #[default]
    Bios,
    /// OVMF (UEFI), with its variable store.
    Uefi(Uefi),
}

/// UEFI firmware: OVMF's code, the variable store every desktop starts from, and
/// whether Secure Boot is enforced (the `secboot` code build needs SMM: `smm=on`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Uefi {
    /// The firmware code (read-only), e.g. Debian's `OVMF_CODE_4M.secboot.fd`.
    pub code: PathBuf,
    /// The variable store desktops start from when they boot (the template freezes its
    /// own copy), e.g. `OVMF_VARS_4M.ms.fd` (Microsoft's keys enrolled).
    pub vars_template: PathBuf,
    /// SMM on and the flash secured: Secure Boot as the variable store enforces it.
    pub secure_boot: bool,
}

/// The bus of the desktop's disk.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DiskBus {
    /// virtio-blk: fastest; Windows needs the virtio-win driver in its image.
    #[default]
    Virtio,
    /// SATA on the q35 machine's AHCI controller: every OS has its driver.
    Sata,
}

/// The emulated graphics card.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Vga {
    /// The standard VGA with Bochs extensions (every OS; UEFI's GOP).
    #[default]
    Std,
    /// virtio-vga (Linux's virtio-gpu, virtio-win's viogpudo).
    Virtio,
    /// QXL (the SPICE-era card; Windows needs the qxl driver).
    Qxl,
}

impl Vga {
    /// The name `-vga` takes.
    pub fn as_str(self) -> &'static str {
        match self {
            Vga::Std => "std",
            Vga::Virtio => "virtio",
            Vga::Qxl => "qxl",
        }
    }
}

/// The machine a desktop is, beyond CPU and memory: what a Windows image needs.
/// Every field's default is what desktops had before these choices existed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MachineShape {
    #[serde(default)]
    pub firmware: Firmware,
    /// A TPM 2.0 per desktop: the `swtpm` binary to run for each QEMU (`None`: no TPM).
    #[serde(default)]
    pub tpm: Option<PathBuf>,
    /// The RTC in local time (Windows' expectation) rather than UTC; slewed after a
    /// pause either way.
    #[serde(default)]
    pub rtc_localtime: bool,
    /// An absolute pointer (`usb-tablet`): the display client's pointer and the
    /// guest's agree without a SPICE agent.
    #[serde(default)]
    pub tablet: bool,
    #[serde(default)]
    pub disk_bus: DiskBus,
    #[serde(default)]
    pub vga: Vga,
}

impl MachineShape {
    /// Whether everything is as it was before the shape existed (the template key then
    /// stays what it was).
    pub fn is_default(&self) -> bool {
        *self == MachineShape::default()
    }

    /// The UEFI firmware, if the desktop has it.
    pub fn uefi(&self) -> Option<&Uefi> {
        match &self.firmware {
            Firmware::Uefi(u) => Some(u),
            Firmware::Bios => None,
        }
    }
}

/// The guest CPU: a named QEMU model (the template and its clones use the same) and,
/// under KVM only, the Hyper-V enlightenments a Windows guest uses.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CpuShape {
    /// A model `qemu-system-x86_64 -cpu help` lists, e.g. `Skylake-Client-v4`.
    pub model: String,
    /// Adds [`HYPERV_FLAGS`] (the config refuses it under TCG).
    pub hyperv: bool,
}

/// The Hyper-V enlightenments `pool.hyperv` adds to the CPU model (QEMU enables none by
/// default; `hv-stimer` needs `hv-synic` and `hv-time`, `hv-synic` needs `hv-vpindex`).
pub const HYPERV_FLAGS: &str =
    "hv-relaxed,hv-vapic,hv-spinlocks=0x1fff,hv-time,hv-vpindex,hv-synic,hv-stimer,hv-frequencies";

/// The SPICE server's options besides its socket: no seamless migration, and the
/// clipboard and the agent's file transfer refused by the server itself in both
/// directions, even if a guest runs a SPICE agent (no agent channel exists anyway).
pub const SPICE_OPTIONS: &str =
    "seamless-migration=off,disable-copy-paste=on,disable-agent-file-xfer=on";

/// The CPU model names in the output of `qemu-system-x86_64 -cpu help` (the second word
/// of each `x86 <name> ...` line; the flag list after it is not models).
pub fn parse_cpu_models(help: &str) -> Vec<String> {
    let mut models = Vec::new();
    for line in help.lines() {
        if line.starts_with("Recognized CPUID flags") {
            break;
        }
        let mut words = line.split_whitespace();
        if let (Some("x86"), Some(name)) = (words.next(), words.next()) {
            if !models.iter().any(|m| m == name) {
                models.push(name.to_owned());
            }
        }
    }
    models
}

/// The remote display protocol (the wire contract's: terminals are told the same name).
pub use airlock_core::wire::DisplayProtocol;

/// Where a desktop's display is reached: the broker listens on `listen:port` and forwards
/// each connection to QEMU's display socket in the run directory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DisplaySpec {
    pub protocol: DisplayProtocol,
    pub listen: IpAddr,
    pub port: u16,
}

/// How the guest boots.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Boot {
    /// Direct kernel boot (the demo guest).
    Kernel {
        kernel: PathBuf,
        initrd: PathBuf,
        append: String,
    },
    /// The disk's own boot loader (a full desktop image).
    Disk,
}

/// How guest RAM is backed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Memory {
    /// Ordinary anonymous memory.
    Anonymous,
    /// The template's source VM: RAM in a file, shared, so the file holds the RAM image.
    TemplateSource { ram_file: PathBuf },
    /// A clone: the template's RAM file mapped privately (copy-on-write, loaded lazily).
    TemplateClone { ram_file: PathBuf },
}

/// Everything needed to start one QEMU process for a desktop.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VmSpec {
    /// The desktop's name (for `-name` and logs).
    pub name: String,
    pub qemu: PathBuf,
    pub accel: Accel,
    /// Machine type, e.g. `q35`.
    pub machine: String,
    pub memory_mib: u64,
    pub vcpus: u32,
    pub boot: Boot,
    /// The writable disk (a qcow2 overlay).
    pub disk: PathBuf,
    /// Directory for sockets, pid file and logs.
    pub run_dir: PathBuf,
    pub display: Option<DisplaySpec>,
    pub memory: Memory,
    /// The VM generation id: new for every process, so the guest reseeds its RNG.
    pub vmgenid: String,
    /// Whether the test-only control shell port (second serial port) exists.
    pub control_channel: bool,
    /// The device of the agent port.
    #[serde(default)]
    pub agent_port: AgentPort,
    /// What answers on it.
    #[serde(default)]
    pub agent_protocol: AgentProtocol,
    /// Firmware, TPM, clock, pointer, disk bus and graphics card.
    #[serde(default)]
    pub shape: MachineShape,
    /// The UEFI variable store this process uses (read-write; a copy made for it).
    #[serde(default)]
    pub vars: Option<PathBuf>,
    /// Start paused, waiting for `migrate-incoming`.
    pub incoming: bool,
    /// The guest CPU (`None`: QEMU's default model for the machine, `qemu64`).
    #[serde(default)]
    pub cpu: Option<CpuShape>,
    /// Run QEMU under its seccomp sandbox.
    pub sandbox: bool,
    /// Host CPUs for its vCPU threads and for its other threads (`None`: not pinned).
    pub placement: Option<airlock_core::CpuPlacement>,
    /// The template's frozen disk this desktop's overlay is on (template clones and
    /// internal-snapshot desktops); `None` when the overlay is on the golden image.
    pub base_disk: Option<PathBuf>,
    /// The golden image at the bottom of every disk chain.
    pub golden: PathBuf,
    /// The template's saved device state, loaded with `migrate-incoming` (clones).
    pub device_state: Option<PathBuf>,
    /// Who the process runs as and what it may use (`None`: as the broker's own user,
    /// when the host cannot confine; `/healthz` says so).
    pub confine: Option<Confine>,
    /// The most bytes the writable disk's file may grow to: QEMU reports reaching it
    /// (`BLOCK_WRITE_THRESHOLD` on [`DISK_FILE_NODE`]) and the broker ends the session.
    #[serde(default)]
    pub disk_cap_bytes: Option<u64>,
    /// The most bytes of one serial port's log file; with the rotated file, a port's
    /// logs hold at most twice that (see [`crate::serial_log`]).
    #[serde(default = "default_serial_log_bytes")]
    pub serial_log_bytes: u64,
}

fn default_serial_log_bytes() -> u64 {
    1 << 20
}

/// The agent's virtio-serial controller (with [`AgentPort::Virtio`]): one port, the agent's.
const VIRTIO_SERIAL_CONTROLLER: &str = "virtio-serial-pci,id=vser0,max_ports=2";

/// The node name of the writable disk's file (the host file, whose size the cap limits).
pub const DISK_FILE_NODE: &str = "disk0-file";

/// The unprivileged identity and the limits of one QEMU process.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Confine {
    /// Its own uid (no other QEMU shares it); the gid has the same number.
    pub uid: u32,
    /// Memory limit of its cgroup in bytes (guest RAM plus QEMU's own overhead).
    pub memory_bytes: u64,
    /// Most processes and threads in its cgroup.
    pub pids_max: u32,
    /// CPU weight (cgroup v2 `cpu.weight`, 1–10000; 100 is the default share).
    pub cpu_weight: u32,
    /// Its cgroup, relative to each controller's root: `<instance>/<desktop>.<process>`.
    pub cgroup: String,
    /// Its one supplementary group: `kvm`, so a KVM desktop can open `/dev/kvm` (the
    /// device is usually `root:kvm 0660`); `None` under TCG.
    #[serde(default)]
    pub kvm_gid: Option<u32>,
}

/// The file descriptors a QEMU process inherits (the broker opens the files: a confined
/// QEMU reaches nothing by path outside its run directory, its working directory).
pub mod fds {
    /// The template's RAM, a sealed memfd (clones).
    pub const RAM: i32 = 3;
    pub const KERNEL: i32 = 4;
    pub const INITRD: i32 = 5;
    /// The template's device state (clones): `migrate-incoming fd:6`.
    pub const DEVICE_STATE: i32 = 6;
    /// The desktop's writable disk, read-write and read-only (fd set 1).
    pub const DISK_RW: i32 = 10;
    pub const DISK_RO: i32 = 11;
    /// The template's frozen disk, read-only (fd set 2).
    pub const BASE: i32 = 12;
    /// The golden image, read-only (fd set 3).
    pub const GOLDEN: i32 = 13;
    /// UEFI: the firmware code, read-only (fd set 4).
    pub const FIRMWARE_CODE: i32 = 14;
    /// UEFI: the process's variable store, read-write and read-only (fd set 5).
    pub const VARS_RW: i32 = 15;
    pub const VARS_RO: i32 = 16;
}

/// How a disk refers to the image below it: an fd set the process was given, so the
/// reference holds for a QEMU that cannot open the path.
pub mod backing {
    /// What the desktop's disk is (`-drive file=`).
    pub const DISK: &str = "/dev/fdset/1";
    /// The backing reference of an overlay on the template's frozen disk.
    pub const BASE: &str = "/dev/fdset/2";
    /// The backing reference of an overlay on the golden image (and of the template's
    /// frozen disk itself).
    pub const GOLDEN: &str = "/dev/fdset/3";
}

/// The sandbox a desktop runs under. The template's source VM, which boots the golden
/// image before any disc and saves its device state through `exec:`, drops `spawn=deny`.
pub const SANDBOX: &str = "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny";
const SANDBOX_WITH_SPAWN: &str = "on,obsolete=deny,elevateprivileges=deny,resourcecontrol=deny";

/// File names inside a run directory.
pub mod files {
    pub const QMP: &str = "qmp.sock";
    pub const AGENT: &str = "agent.sock";
    pub const AGENT_LOG: &str = "serial.log";
    pub const CONTROL: &str = "control.sock";
    pub const CONTROL_LOG: &str = "control.log";
    /// A second QMP monitor for tests (with the control channel only), e.g. to compare
    /// a `screendump` with what a display client shows.
    pub const TEST_QMP: &str = "test-qmp.sock";
    pub const USBREDIR: &str = "usbredir.sock";
    pub const DISPLAY: &str = "display.sock";
    pub const PID: &str = "qemu.pid";
    pub const LOG: &str = "qemu.log";
    /// The TPM emulator's control socket, state directory, pid file and log.
    pub const SWTPM: &str = "swtpm.sock";
    pub const SWTPM_STATE: &str = "tpm";
    pub const SWTPM_PID: &str = "swtpm.pid";
    pub const SWTPM_LOG: &str = "swtpm.log";
    /// The process's copy of the UEFI variable store.
    pub const VARS: &str = "vars.fd";
}

/// The chardev id of the TPM emulator's control socket.
pub const TPM_CHARDEV: &str = "tpmchr0";

/// The usb-redir device's own filter (QEMU `usbredirfilter` rules,
/// `class:vendor:product:version:allow` joined by `|`, -1 for any): mass storage (class
/// 0x08) only, everything else refused. The second layer behind the broker's relay
/// policy (see docs/threat-model.md).
pub const USBREDIR_FILTER: &str = "0x08:-1:-1:-1:1|-1:-1:-1:-1:0";

fn p(path: &Path) -> String {
    // QEMU option values use ',' as separator; ",," escapes a comma.
    path.display().to_string().replace(',', ",,")
}

impl VmSpec {
    /// The name of the agent's virtio-serial port: what the guest's agent looks for.
    pub fn virtio_agent_port(&self) -> &'static str {
        match self.agent_protocol {
            AgentProtocol::Airlock => VIRTIO_AGENT_PORT,
            AgentProtocol::Qga => VIRTIO_QGA_PORT,
        }
    }

    /// A run-directory path.
    pub fn run_file(&self, name: &str) -> PathBuf {
        self.run_dir.join(name)
    }

    /// The QEMU command line (without the binary).
    pub fn argv(&self) -> Vec<String> {
        let mut a: Vec<String> = Vec::new();
        let mut push = |s: &str| a.push(s.to_owned());
        push("-name");
        push(&format!("guest=airlock-{},debug-threads=on", self.name));
        push("-nodefaults");
        push("-no-user-config");
        push("-accel");
        push(self.accel.as_str());
        let mut machine = self.machine.replace(',', ",,");
        // Paths QEMU opens itself are relative to its working directory, the run
        // directory; the rest are descriptors it inherits (see [`fds`]).
        let ram_backend = match &self.memory {
            Memory::Anonymous => None,
            Memory::TemplateSource { ram_file } => Some((self.in_run_dir(ram_file), "on")),
            Memory::TemplateClone { .. } => Some((format!("/proc/self/fd/{}", fds::RAM), "off")),
        };
        if ram_backend.is_some() {
            machine.push_str(",memory-backend=ram0");
        }
        let uefi = self.shape.uefi();
        if uefi.is_some_and(|u| u.secure_boot) {
            machine.push_str(",smm=on");
        }
        push("-machine");
        push(&machine);
        push("-m");
        push(&format!("{}M", self.memory_mib));
        if let Some((file, share)) = ram_backend {
            push("-object");
            push(&format!(
                "memory-backend-file,id=ram0,size={}M,mem-path={file},share={share}",
                self.memory_mib,
            ));
        }
        if let Some(cpu) = &self.cpu {
            push("-cpu");
            let model = cpu.model.replace(',', ",,");
            if cpu.hyperv {
                push(&format!("{model},{HYPERV_FLAGS}"));
            } else {
                push(&model);
            }
        }
        push("-smp");
        push(&self.vcpus.to_string());
        push("-nic");
        push("none");
        push("-display");
        push("none");
        // A guest that powers off stops but its process stays: the broker sees the
        // SHUTDOWN event, ends the lease as signed out and resets the desktop.
        push("-no-shutdown");
        push("-vga");
        push(self.shape.vga.as_str());
        push("-rtc");
        push(if self.shape.rtc_localtime {
            "base=localtime,driftfix=slew"
        } else {
            "base=utc,driftfix=slew"
        });
        if let Boot::Kernel { append, .. } = &self.boot {
            push("-kernel");
            push(&format!("/proc/self/fd/{}", fds::KERNEL));
            push("-initrd");
            push(&format!("/proc/self/fd/{}", fds::INITRD));
            push("-append");
            if self.control_channel {
                // The demo guest starts its test control shell only when told to.
                push(&format!("{append} airlock.control=1"));
            } else {
                push(append);
            }
        }
        let mut add_fd = |fd: i32, set: u32| {
            push("-add-fd");
            push(&format!("fd={fd},set={set}"));
        };
        add_fd(fds::DISK_RW, 1);
        add_fd(fds::DISK_RO, 1);
        if self.base_disk.is_some() {
            add_fd(fds::BASE, 2);
        }
        add_fd(fds::GOLDEN, 3);
        if let Some(u) = uefi {
            add_fd(fds::FIRMWARE_CODE, 4);
            add_fd(fds::VARS_RW, 5);
            add_fd(fds::VARS_RO, 5);
            if u.secure_boot {
                push("-global");
                push("driver=cfi.pflash01,property=secure,value=on");
            }
            push("-drive");
            push("if=pflash,format=raw,unit=0,readonly=on,file=/dev/fdset/4");
            push("-drive");
            push("if=pflash,format=raw,unit=1,file=/dev/fdset/5");
        }
        match self.shape.disk_bus {
            DiskBus::Virtio => {
                push("-drive");
                push(&format!(
                    "file={},file.node-name={DISK_FILE_NODE},if=virtio,format=qcow2,node-name=disk0,discard=unmap",
                    backing::DISK
                ));
            }
            DiskBus::Sata => {
                push("-drive");
                push(&format!(
                    "file={},file.node-name={DISK_FILE_NODE},if=none,id=drive0,format=qcow2,node-name=disk0,discard=unmap",
                    backing::DISK
                ));
                push("-device");
                push("ide-hd,drive=drive0,bus=ide.0");
            }
        }
        push("-qmp");
        push(&format!("unix:{},server=on,wait=off", files::QMP));
        // The agent port: its log is written by the broker's reader (`crate::agent`).
        push("-chardev");
        push(&format!(
            "socket,id=agent0,path={},server=on,wait=off",
            files::AGENT
        ));
        if self.control_channel {
            // The test-only control port, with QEMU's copy of what the guest writes in a
            // FIFO the broker reads into a bounded file.
            push("-chardev");
            push(&format!(
                "socket,id=control0,path={},server=on,wait=off,logfile={},logappend=on",
                files::CONTROL,
                crate::serial_log::fifo_name(files::CONTROL_LOG)
            ));
        }
        match self.agent_port {
            AgentPort::Isa => {
                push("-serial");
                push("chardev:agent0");
            }
            AgentPort::Virtio => {
                push("-device");
                push(VIRTIO_SERIAL_CONTROLLER);
                push("-device");
                push(&format!(
                    "virtserialport,bus=vser0.0,nr=1,chardev=agent0,name={}",
                    self.virtio_agent_port()
                ));
            }
        }
        if self.control_channel {
            // COM2 (`ttyS1`) whatever carries the agent.
            push("-device");
            push("isa-serial,chardev=control0,index=1");
            push("-qmp");
            push(&format!("unix:{},server=on,wait=off", files::TEST_QMP));
        }
        push("-device");
        push("qemu-xhci,id=xhci");
        push("-chardev");
        push(&format!(
            "socket,id=usbredir0,path={},server=on,wait=off",
            files::USBREDIR
        ));
        push("-device");
        push(&format!(
            "usb-redir,chardev=usbredir0,id=redir0,bus=xhci.0,filter={USBREDIR_FILTER}"
        ));
        push("-device");
        push(&format!("vmgenid,guid={}", self.vmgenid));
        if self.shape.tablet {
            push("-device");
            push("usb-tablet,bus=xhci.0");
        }
        if self.shape.tpm.is_some() {
            push("-chardev");
            push(&format!("socket,id={TPM_CHARDEV},path={}", files::SWTPM));
            push("-tpmdev");
            push(&format!("emulator,id=tpm0,chardev={TPM_CHARDEV}"));
            push("-device");
            push("tpm-crb,tpmdev=tpm0");
        }
        if let Some(d) = &self.display {
            // QEMU's display server listens on a unix socket in the run directory; the
            // broker owns the TCP port clients connect to and forwards to it.
            let sock = files::DISPLAY;
            match d.protocol {
                DisplayProtocol::Spice => {
                    push("-spice");
                    // No password yet: SPICE refuses every client until a lease sets one.
                    push(&format!("unix=on,addr={sock},{SPICE_OPTIONS}"));
                }
                DisplayProtocol::Vnc => {
                    push("-vnc");
                    push(&format!("unix:{sock},password=on"));
                }
            }
        }
        if self.incoming {
            push("-incoming");
            push("defer");
        }
        if self.sandbox {
            push("-sandbox");
            if matches!(self.memory, Memory::TemplateSource { .. }) {
                push(SANDBOX_WITH_SPAWN);
            } else {
                push(SANDBOX);
            }
        }
        // No -pidfile: QEMU resolves its path from the root, which a confined QEMU
        // cannot; the broker writes the pid file itself.
        a
    }

    /// `path` as QEMU, working in the run directory, names it.
    fn in_run_dir(&self, path: &Path) -> String {
        p(path.strip_prefix(&self.run_dir).unwrap_or(path))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    fn spec() -> VmSpec {
        VmSpec {
            name: "desk-01".into(),
            qemu: "qemu-system-x86_64".into(),
            accel: Accel::Tcg,
            machine: "q35".into(),
            memory_mib: 256,
            vcpus: 1,
            boot: Boot::Kernel {
                kernel: "/g/vmlinuz".into(),
                initrd: "/g/initrd.img".into(),
                append: "console=ttyS0".into(),
            },
            disk: "/s/desk-01/disk.qcow2".into(),
            run_dir: "/s/desk-01/run".into(),
            display: Some(DisplaySpec {
                protocol: DisplayProtocol::Spice,
                listen: "127.0.0.1".parse().unwrap(),
                port: 5930,
            }),
            memory: Memory::TemplateClone {
                ram_file: "/s/t/ram".into(),
            },
            vmgenid: "6b1b0b5e-0000-4000-8000-000000000001".into(),
            control_channel: false,
            agent_port: AgentPort::Isa,
            agent_protocol: AgentProtocol::Airlock,
            shape: MachineShape::default(),
            vars: None,
            incoming: true,
            cpu: None,
            sandbox: true,
            placement: None,
            base_disk: Some("/s/t/base.qcow2".into()),
            golden: "/g/golden.qcow2".into(),
            device_state: Some("/s/t/device.state".into()),
            confine: Some(Confine {
                uid: 64001,
                memory_bytes: 512 << 20,
                pids_max: 256,
                cpu_weight: 100,
                cgroup: "airlock-1/desk-01.1".into(),
                kvm_gid: None,
            }),
            disk_cap_bytes: Some(1 << 30),
            serial_log_bytes: 1 << 20,
        }
    }

    fn has_pair(a: &[String], k: &str, v: &str) -> bool {
        a.windows(2).any(|w| w[0] == k && w[1] == v)
    }

    #[test]
    fn no_network_and_required_devices() {
        let a = spec().argv();
        assert!(has_pair(&a, "-nic", "none"));
        assert!(a.contains(&"-nodefaults".to_string()));
        assert!(!a
            .iter()
            .any(|x| x.contains("netdev") || x.contains("virtio-net")));
        assert!(has_pair(&a, "-device", "qemu-xhci,id=xhci"));
        assert!(has_pair(
            &a,
            "-device",
            "usb-redir,chardev=usbredir0,id=redir0,bus=xhci.0,filter=0x08:-1:-1:-1:1|-1:-1:-1:-1:0"
        ));
        assert!(a.contains(&"-no-shutdown".to_string()));
        assert!(has_pair(
            &a,
            "-device",
            "vmgenid,guid=6b1b0b5e-0000-4000-8000-000000000001"
        ));
        assert!(has_pair(&a, "-accel", "tcg"));
        assert!(has_pair(&a, "-incoming", "defer"));
    }

    #[test]
    fn clone_maps_ram_privately_and_source_shares_it() {
        let a = spec().argv();
        assert!(has_pair(&a, "-machine", "q35,memory-backend=ram0"));
        assert!(a
            .iter()
            .any(|x| x.ends_with("mem-path=/proc/self/fd/3,share=off")));
        let mut s = spec();
        s.memory = Memory::TemplateSource {
            ram_file: "/s/desk-01/run/ram".into(),
        };
        assert!(s
            .argv()
            .iter()
            .any(|x| x.ends_with("mem-path=ram,share=on")));
        s.memory = Memory::Anonymous;
        assert!(has_pair(&s.argv(), "-machine", "q35"));
    }

    #[test]
    fn control_channel_only_when_asked() {
        let a = spec().argv();
        assert!(!a
            .iter()
            .any(|x| x.contains("control0") || x.contains("test-qmp")));
        assert!(has_pair(&a, "-append", "console=ttyS0"));
        let mut s = spec();
        s.control_channel = true;
        assert!(s.argv().iter().any(|x| x.contains("control.sock")));
        assert!(s.argv().iter().any(|x| x.contains("test-qmp.sock")));
        assert!(has_pair(
            &s.argv(),
            "-append",
            "console=ttyS0 airlock.control=1"
        ));
    }

    #[test]
    fn displays() {
        let a = spec().argv();
        assert!(has_pair(
            &a,
            "-spice",
            "unix=on,addr=display.sock,seamless-migration=off,disable-copy-paste=on,disable-agent-file-xfer=on"
        ));
        let mut s = spec();
        s.display = Some(DisplaySpec {
            protocol: DisplayProtocol::Vnc,
            listen: "127.0.0.1".parse().unwrap(),
            port: 5901,
        });
        assert!(has_pair(&s.argv(), "-vnc", "unix:display.sock,password=on"));
        assert!(
            !s.argv().iter().any(|x| x.contains("5901")),
            "QEMU never binds the port"
        );
        s.display = None;
        assert!(!s.argv().iter().any(|x| x == "-vnc" || x == "-spice"));
    }

    #[test]
    fn commas_in_paths_are_escaped() {
        let mut s = spec();
        s.memory = Memory::TemplateSource {
            ram_file: "/elsewhere/a,b".into(),
        };
        assert!(s
            .argv()
            .iter()
            .any(|x| x.contains("mem-path=/elsewhere/a,,b,")));
    }

    #[test]
    fn a_windows_shape_uefi_secure_boot_tpm_and_the_rest() {
        let mut s = spec();
        s.shape = MachineShape {
            firmware: Firmware::Uefi(Uefi {
                code: "/usr/share/OVMF/OVMF_CODE_4M.secboot.fd".into(),
                vars_template: "/usr/share/OVMF/OVMF_VARS_4M.ms.fd".into(),
                secure_boot: true,
            }),
            tpm: Some("/usr/bin/swtpm".into()),
            rtc_localtime: true,
            tablet: true,
            disk_bus: DiskBus::Sata,
            vga: Vga::Virtio,
        };
        s.vars = Some("/s/desk-01/run/vars.fd".into());
        let a = s.argv();
        assert!(values(&a, "-machine")[0].ends_with(",smm=on"), "{a:?}");
        assert_eq!(
            values(&a, "-global"),
            ["driver=cfi.pflash01,property=secure,value=on"]
        );
        // Firmware and variables come as descriptors, never by path.
        let drives = values(&a, "-drive");
        assert!(drives.contains(&"if=pflash,format=raw,unit=0,readonly=on,file=/dev/fdset/4"));
        assert!(drives.contains(&"if=pflash,format=raw,unit=1,file=/dev/fdset/5"));
        for fd in ["fd=14,set=4", "fd=15,set=5", "fd=16,set=5"] {
            assert!(values(&a, "-add-fd").contains(&fd), "{fd} in {a:?}");
        }
        assert!(!a.iter().any(|x| x.contains("OVMF")), "{a:?}");
        // SATA disk, virtio-vga, local-time RTC, a tablet on the xHCI bus, a CRB TPM on
        // the swtpm socket in the run directory.
        assert!(drives.iter().any(|d| d.contains("if=none,id=drive0")));
        let devices = values(&a, "-device");
        for d in [
            "ide-hd,drive=drive0,bus=ide.0",
            "usb-tablet,bus=xhci.0",
            "tpm-crb,tpmdev=tpm0",
        ] {
            assert!(devices.contains(&d), "{d} in {devices:?}");
        }
        assert_eq!(values(&a, "-vga"), ["virtio"]);
        assert_eq!(values(&a, "-rtc"), ["base=localtime,driftfix=slew"]);
        assert_eq!(values(&a, "-tpmdev"), ["emulator,id=tpm0,chardev=tpmchr0"]);
        assert!(values(&a, "-chardev").contains(&"socket,id=tpmchr0,path=swtpm.sock"));
        // The TPM's socket is the one chardev QEMU connects to rather than listens on,
        // and the policy knows it.
        let allowed = crate::chardev_policy::allowed(&s);
        assert!(allowed
            .iter()
            .any(|c| c.label == TPM_CHARDEV && c.socket == files::SWTPM && !c.server));
        // UEFI without Secure Boot: no SMM, no secured flash.
        if let Firmware::Uefi(u) = &mut s.shape.firmware {
            u.secure_boot = false;
        }
        let a = s.argv();
        assert!(!values(&a, "-machine")[0].contains("smm"));
        assert!(values(&a, "-global").is_empty());
        // The default shape: SeaBIOS, virtio disk, std VGA, UTC, no tablet, no TPM.
        let a = spec().argv();
        assert!(values(&a, "-drive").iter().all(|d| !d.contains("pflash")));
        assert!(values(&a, "-tpmdev").is_empty());
        assert_eq!(values(&a, "-vga"), ["std"]);
        assert_eq!(values(&a, "-rtc"), ["base=utc,driftfix=slew"]);
    }

    #[test]
    fn files_come_as_descriptors_and_names_in_the_run_directory() {
        let a = spec().argv();
        for (fd, set) in [(10, 1), (11, 1), (12, 2), (13, 3)] {
            assert!(
                has_pair(&a, "-add-fd", &format!("fd={fd},set={set}")),
                "{fd}"
            );
        }
        assert!(a.iter().any(|x| x.starts_with("file=/dev/fdset/1,")));
        assert!(has_pair(&a, "-kernel", "/proc/self/fd/4"));
        assert!(has_pair(&a, "-initrd", "/proc/self/fd/5"));
        assert!(has_pair(&a, "-qmp", "unix:qmp.sock,server=on,wait=off"));
        // Nothing names a path outside the run directory.
        assert!(
            !a.iter().any(|x| x.contains("/s/") || x.contains("/g/")),
            "{a:?}"
        );
        let mut s = spec();
        s.base_disk = None;
        assert!(!has_pair(&s.argv(), "-add-fd", "fd=12,set=2"));
    }

    #[test]
    fn desktops_may_not_spawn_the_template_source_may() {
        assert!(has_pair(&spec().argv(), "-sandbox", SANDBOX));
        assert!(SANDBOX.contains("spawn=deny"));
        let mut s = spec();
        s.memory = Memory::TemplateSource {
            ram_file: "/s/desk-01/run/ram".into(),
        };
        let a = s.argv();
        let i = a.iter().position(|x| x == "-sandbox").unwrap();
        assert!(!a[i + 1].contains("spawn") && a[i + 1].contains("elevateprivileges=deny"));
        s.sandbox = false;
        assert!(!s.argv().iter().any(|x| x == "-sandbox"));
    }

    /// Every combination of the spec's choices (display, control channel, memory mode,
    /// boot, CPU, sandbox, incoming).
    pub(crate) fn every_variant() -> Vec<VmSpec> {
        let displays = [
            None,
            Some(DisplayProtocol::Spice),
            Some(DisplayProtocol::Vnc),
        ];
        let memories = [
            Memory::Anonymous,
            Memory::TemplateSource {
                ram_file: "/s/desk-01/run/ram".into(),
            },
            Memory::TemplateClone {
                ram_file: "/s/t/ram".into(),
            },
        ];
        let cpus = [
            None,
            Some(CpuShape {
                model: "Skylake-Client-v4".into(),
                hyperv: false,
            }),
            Some(CpuShape {
                model: "Skylake-Client-v4".into(),
                hyperv: true,
            }),
        ];
        let mut out = Vec::new();
        for display in displays {
            for memory in &memories {
                for cpu in &cpus {
                    for control in [false, true] {
                        for disk_boot in [false, true] {
                            for (flags, agent_port) in [false, true]
                                .into_iter()
                                .flat_map(|f| [(f, AgentPort::Isa), (f, AgentPort::Virtio)])
                            {
                                let mut s = spec();
                                s.agent_port = agent_port;
                                s.display = display.map(|protocol| DisplaySpec {
                                    protocol,
                                    listen: "127.0.0.1".parse().unwrap(),
                                    port: 5930,
                                });
                                s.memory = memory.clone();
                                s.cpu = cpu.clone();
                                s.control_channel = control;
                                if disk_boot {
                                    s.boot = Boot::Disk;
                                }
                                s.sandbox = flags;
                                s.incoming = flags;
                                out.push(s);
                            }
                        }
                    }
                }
            }
        }
        out
    }

    /// The values of every `flag` in `a`.
    fn values<'a>(a: &'a [String], flag: &str) -> Vec<&'a str> {
        a.windows(2)
            .filter(|w| w[0] == flag)
            .map(|w| w[1].as_str())
            .collect()
    }

    #[test]
    fn no_spice_agent_webdav_or_usb_channel_in_any_variant() {
        let forbidden = [
            "vdagent",
            "spicevmc",
            "spiceport",
            "webdav",
            "com.redhat.spice",
            "org.spice-space",
            "virtio-serial",
            "virtserialport",
            "virtconsole",
            "usb-host",
            "usb-storage",
            "clipboard",
        ];
        let variants = every_variant();
        assert_eq!(variants.len(), 3 * 3 * 3 * 2 * 2 * 2 * 2);
        // With `AgentPort::Virtio`, exactly these two devices carry the agent's port.
        let agent_port =
            format!("virtserialport,bus=vser0.0,nr=1,chardev=agent0,name={VIRTIO_AGENT_PORT}");
        for s in variants {
            let a = s.argv();
            let virtio_agent = [VIRTIO_SERIAL_CONTROLLER, agent_port.as_str()];
            for arg in &a {
                if s.agent_port == AgentPort::Virtio && virtio_agent.contains(&arg.as_str()) {
                    continue;
                }
                let lower = arg.to_ascii_lowercase();
                for f in forbidden {
                    assert!(!lower.contains(f), "{f} in {arg:?} of {a:?}");
                }
            }
            // The only devices: the xHCI controller, the filtered usb-redir, vmgenid, the
            // agent's virtio-serial port when asked for, COM2 for the test control port.
            let devices = values(&a, "-device");
            for d in &devices {
                assert!(
                    *d == "qemu-xhci,id=xhci"
                        || d.starts_with(
                            "usb-redir,chardev=usbredir0,id=redir0,bus=xhci.0,filter="
                        )
                        || d.starts_with("vmgenid,guid=")
                        || (s.agent_port == AgentPort::Virtio && virtio_agent.contains(d))
                        || (s.control_channel && *d == "isa-serial,chardev=control0,index=1"),
                    "unexpected device {d:?}"
                );
            }
            let serials = values(&a, "-serial");
            match s.agent_port {
                AgentPort::Isa => assert_eq!(serials, ["chardev:agent0"]),
                AgentPort::Virtio => {
                    assert!(serials.is_empty(), "{serials:?}");
                    assert_eq!(
                        devices.iter().filter(|d| virtio_agent.contains(d)).count(),
                        2,
                        "{devices:?}"
                    );
                }
            }
            // Every chardev is a unix socket server in the run directory.
            for c in values(&a, "-chardev") {
                assert!(c.starts_with("socket,id="), "{c:?}");
                assert!(c.contains(",server=on,"), "{c:?}");
            }
            for q in values(&a, "-qmp") {
                assert!(q.starts_with("unix:") && !q.contains('/'), "{q:?}");
            }
            // The SPICE server refuses the clipboard and file transfer.
            for sp in values(&a, "-spice") {
                assert!(sp.ends_with(SPICE_OPTIONS), "{sp:?}");
            }
            assert!(!a.iter().any(|x| x == "-usb" || x == "-usbdevice"));
        }
    }

    #[test]
    fn cpu_model_and_hyperv_flags() {
        let mut s = spec();
        assert!(!s.argv().iter().any(|x| x == "-cpu"), "QEMU's default");
        s.cpu = Some(CpuShape {
            model: "Skylake-Client-v4".into(),
            hyperv: false,
        });
        assert!(has_pair(&s.argv(), "-cpu", "Skylake-Client-v4"));
        s.cpu = Some(CpuShape {
            model: "Skylake-Client-v4".into(),
            hyperv: true,
        });
        assert!(has_pair(
            &s.argv(),
            "-cpu",
            "Skylake-Client-v4,hv-relaxed,hv-vapic,hv-spinlocks=0x1fff,hv-time,hv-vpindex,hv-synic,hv-stimer,hv-frequencies"
        ));
        s.cpu = Some(CpuShape {
            model: "a,b".into(),
            hyperv: false,
        });
        assert!(has_pair(&s.argv(), "-cpu", "a,,b"));
    }

    #[test]
    fn cpu_models_are_read_from_cpu_help() {
        let help = "Available CPUs:\n\
x86 486                   (alias configured by machine type)\n\
x86 Broadwell-v1          Intel Core Processor (Broadwell)\n\
x86 qemu64                (alias configured by machine type)\n\
x86 qemu64                duplicate\n\
x86 host                  processor with all supported host features \n\
\n\
Recognized CPUID flags:\n\
  3dnow 3dnowext x86 abm\n\
x86 not-a-model-after-the-flags\n";
        assert_eq!(
            parse_cpu_models(help),
            ["486", "Broadwell-v1", "qemu64", "host"]
        );
        assert!(parse_cpu_models("").is_empty());
        assert!(parse_cpu_models("garbage\nx86\n").is_empty());
    }
}
