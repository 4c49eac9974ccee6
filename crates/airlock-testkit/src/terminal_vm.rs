//! The terminal VM (`cargo xtask terminal-guest`, docs/terminal-vm.md): a busybox Linux
//! with a real USB stack and no storage drivers (the guard), running the static
//! `airlock` binary, with a USB CD drive and optionally a USB stick on its xHCI bus.
//! Its console is a [`Shell`]; it reaches the broker over QEMU user networking.
use crate::artifacts::TerminalManifest;
use crate::broker::TERMINAL_TOKEN;
use crate::process::{tail, Proc, RunDir};
use crate::qmp::Qmp;
use crate::shell::Shell;
use crate::tools::QEMU;
use anyhow::{ensure, Context, Result};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Where the terminal VM reaches the broker with [`TerminalNet::GuestFwd`] (the VM's
/// network is `restrict=on`, so this is the only thing it can reach).
pub const TERMINAL_BROKER_ADDR: &str = "10.0.2.100";

/// How the terminal VM reaches the broker (QEMU user networking either way).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TerminalNet {
    /// `restrict=on` plus one `guestfwd`: TCP to `10.0.2.100:80` runs
    /// `PUMP 127.0.0.1:<broker port>` on the host per connection, where PUMP is the
    /// kit's `tcp-pump` binary. The VM can reach nothing else, not even the host.
    GuestFwd {
        /// The `tcp-pump` binary ([`crate::artifacts::HostBinaries::tcp_pump`]).
        pump: PathBuf,
    },
    /// Plain slirp: the broker is `10.0.2.2:<broker port>` (the host's loopback),
    /// reached through slirp's own host socket. The VM could also reach other hosts
    /// through slirp's NAT. Much faster than `GuestFwd` for bulk transfers: slirp hands
    /// a `cmd:` guestfwd one end of a loopback TCP pair whose other end, inside QEMU,
    /// has no TCP_NODELAY, so short writes towards the host wait for delayed ACKs (tens
    /// of ms per USB transfer; see docs/benchmarks.md, "Disc reading").
    HostLoopback,
}

/// What to plug into the terminal VM at boot.
#[derive(Debug, Clone)]
pub struct TerminalOptions {
    /// A USB CD drive (usb-bot + scsi-cd) with this image, `id=cd0`, scsi-cd `id=cd0-cd`.
    pub cd_iso: Option<PathBuf>,
    /// A USB stick (usb-storage) with this raw disk image, `id=stick0`.
    pub stick: Option<PathBuf>,
    /// vCPUs (the TCG terminal's own TCP stack is the slow part of its network path; a
    /// second vCPU about doubles it).
    pub smp: u32,
    pub memory_mib: u64,
    pub net: TerminalNet,
    /// Boot a guarded terminal (`airlock guard install` before udev starts), as a site
    /// would; `false` boots a stock terminal (`airlock.guard=0`), for the guard's tests.
    pub guard: bool,
}

impl TerminalOptions {
    /// A guarded terminal of 1 vCPU and 256 MiB with a USB CD drive holding `cd_iso` (or
    /// none), reaching the broker only through the kit's `tcp-pump` at `pump`.
    pub fn guarded(cd_iso: Option<PathBuf>, pump: PathBuf) -> TerminalOptions {
        TerminalOptions {
            cd_iso,
            stick: None,
            smp: 1,
            memory_mib: 256,
            net: TerminalNet::GuestFwd { pump },
            guard: true,
        }
    }
}

/// A raw image file as QEMU block node `node`.
fn usb_disk(cmd: &mut Command, node: &str, file: &Path, read_only: bool) {
    let ro = if read_only {
        ",read-only=on,file.read-only=on"
    } else {
        ""
    };
    cmd.arg("-blockdev").arg(format!(
        "driver=raw,node-name={node}{ro},file.driver=file,file.filename={}",
        file.display()
    ));
}

/// The terminal VM, running: its console shell, its QMP, and the process (killed on
/// drop).
pub struct TerminalVm {
    // Fields drop in order: the VM first, then its directory.
    proc: Proc,
    pub shell: Shell,
    pub qmp: Qmp,
    pub dir: RunDir,
    /// The broker's URL as the VM sees it.
    pub broker_url: String,
}

impl TerminalVm {
    /// Boots it; the broker (at 127.0.0.1:`broker_port`) is reachable from the VM at
    /// [`TerminalVm::broker_url`].
    pub fn boot(m: &TerminalManifest, broker_port: u16, o: &TerminalOptions) -> Result<TerminalVm> {
        crate::tools::require(crate::tools::VM_TOOLS)?;
        let dir = RunDir::new("airlock-term-")?;
        let f = |n: &str| dir.join(n);
        let mut cmd = Command::new(QEMU);
        cmd.args(["-name", "airlock-terminal-vm,debug-threads=on"])
            .args(["-accel", "tcg", "-machine", "q35"])
            .args(["-m", &o.memory_mib.max(128).to_string()])
            .args(["-smp", &o.smp.max(1).to_string()])
            .args(["-nodefaults", "-no-user-config", "-display", "none"])
            .arg("-kernel")
            .arg(&m.kernel)
            .arg("-initrd")
            .arg(&m.initrd)
            .args([
                "-append",
                &if o.guard {
                    m.append.clone()
                } else {
                    format!("{} airlock.guard=0", m.append)
                },
            ])
            .arg("-chardev")
            .arg(format!(
                "socket,id=ser0,path={},server=on,wait=off,logfile={}",
                f("ser0.sock").display(),
                f("serial.log").display()
            ))
            .args(["-serial", "chardev:ser0"])
            .arg("-qmp")
            .arg(format!(
                "unix:{},server=on,wait=off",
                f("qmp.sock").display()
            ))
            .args(["-device", "virtio-net-pci,netdev=net0"])
            .args(["-device", "qemu-xhci,id=xhci"]);
        let broker_url = match &o.net {
            TerminalNet::GuestFwd { pump } => {
                cmd.arg("-netdev").arg(format!(
                    "user,id=net0,restrict=on,guestfwd=tcp:{TERMINAL_BROKER_ADDR}:80-cmd:{} 127.0.0.1:{broker_port}",
                    pump.display()
                ));
                format!("http://{TERMINAL_BROKER_ADDR}:80")
            }
            TerminalNet::HostLoopback => {
                cmd.args(["-netdev", "user,id=net0"]);
                format!("http://10.0.2.2:{broker_port}")
            }
        };
        if let Some(iso) = &o.cd_iso {
            usb_disk(&mut cmd, "cdimg", iso, true);
            cmd.args([
                "-device",
                "usb-bot,id=cd0,bus=xhci.0,serial=AIRLOCK-CD0",
                "-device",
                "scsi-cd,id=cd0-cd,bus=cd0.0,drive=cdimg",
            ]);
        }
        if let Some(stick) = &o.stick {
            usb_disk(&mut cmd, "stickimg", stick, false);
            cmd.args([
                "-device",
                "usb-storage,id=stick0,bus=xhci.0,drive=stickimg,serial=AIRLOCK-STICK0",
            ]);
        }
        let log = std::fs::File::create(f("qemu.log"))?;
        let proc = Proc::spawn(
            cmd.stdin(Stdio::null())
                .stdout(log.try_clone()?)
                .stderr(log),
            "the terminal VM",
        )?;
        let shell = Shell::connect(&f("ser0.sock"), None)?;
        let qmp = Qmp::connect(&f("qmp.sock"))?;
        Ok(TerminalVm {
            proc,
            shell,
            qmp,
            dir,
            broker_url,
        })
    }

    /// Waits for `AIRLOCK-TERM-READY`; returns that line.
    pub fn wait_ready(&mut self, timeout: Duration) -> Result<String> {
        let text = self
            .shell
            .wait_for("AIRLOCK-TERM-READY", timeout)
            .with_context(|| format!("terminal VM; qemu log: {}", self.qemu_log()))?;
        let line = text
            .lines()
            .find(|l| l.contains("AIRLOCK-TERM-READY"))
            .unwrap_or_default()
            .to_string();
        let boot = self.shell.take();
        ensure!(
            !boot.contains("AIRLOCK-TERM-ERROR"),
            "the terminal VM reported an error at boot: {boot}"
        );
        Ok(line)
    }

    pub fn qemu_log(&self) -> String {
        tail(&self.dir.join("qemu.log"), 30)
    }

    pub fn running(&mut self) -> bool {
        self.proc.running()
    }

    /// The terminal VM's QEMU process id.
    pub fn qemu_pid(&self) -> u32 {
        self.proc.id()
    }

    /// Waits until the VM's USB bus shows `n` devices besides the root hubs.
    pub fn wait_usb_devices(&mut self, n: usize, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            let out = self.shell.sh(
                "for d in /sys/bus/usb/devices/[0-9]*-[0-9]*; do [ -e $d/idVendor ] && echo $d; done; true",
            )?;
            let have = out.lines().filter(|l| !l.trim().is_empty()).count();
            if have == n {
                return Ok(());
            }
            ensure!(
                Instant::now() < deadline,
                "the terminal VM has {have} USB devices, expected {n}: {out}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Starts `command` in the VM's shell in the background (output in /tmp/NAME.log,
    /// pid in /tmp/NAME.pid).
    pub fn start_background(&mut self, name: &str, command: &str) -> Result<()> {
        self.shell.sh(&format!(
            "{command} >/tmp/{name}.log 2>&1 & echo $! >/tmp/{name}.pid"
        ))?;
        Ok(())
    }

    /// Starts `airlock usb forward` in the VM in the background (see
    /// [`TerminalVm::start_background`]).
    pub fn start_forward(&mut self, name: &str, lease: &str, device: &str) -> Result<()> {
        self.start_background(
            name,
            &format!(
                "AIRLOCK_TOKEN={TERMINAL_TOKEN} airlock usb forward --broker {} \
                 --lease {lease} --device {device}",
                self.broker_url
            ),
        )
    }

    /// Is the background command `name` still running?
    pub fn forward_running(&mut self, name: &str) -> Result<bool> {
        let (_, st) = self.shell.run(
            &format!("kill -0 $(cat /tmp/{name}.pid) 2>/dev/null"),
            Duration::from_secs(30),
        )?;
        Ok(st == 0)
    }

    /// The output of a background command so far.
    pub fn forward_log(&mut self, name: &str) -> Result<String> {
        self.shell.sh(&format!("cat /tmp/{name}.log"))
    }

    /// Stops a background command with `signal` (e.g. INT: a forward unplugs the drive
    /// from the desktop), waits for it to exit (SIGKILL after 10 s), and returns its exit
    /// status and output.
    pub fn stop_background(&mut self, name: &str, signal: &str) -> Result<(i32, String)> {
        let out = self.shell.sh(&format!(
            "p=$(cat /tmp/{name}.pid); kill -{signal} $p; n=0; while kill -0 $p 2>/dev/null && [ $n -lt 100 ]; do sleep 0.1; n=$((n+1)); done; kill -0 $p 2>/dev/null && kill -9 $p; wait $p; echo \"EXIT=$?\""
        ))?;
        let status = out
            .lines()
            .rev()
            .find_map(|l| l.strip_prefix("EXIT="))
            .and_then(|c| c.trim().parse().ok())
            .unwrap_or(-1);
        Ok((status, self.forward_log(name)?))
    }

    /// Stops a background forward with SIGINT (it unplugs the drive from the desktop)
    /// and returns its output.
    pub fn stop_forward(&mut self, name: &str) -> Result<String> {
        Ok(self.stop_background(name, "INT")?.1)
    }
}
