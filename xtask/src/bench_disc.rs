//! `cargo xtask bench disc`: how long the desktop guest takes to read the
//! sample referral disc, by path:
//!
//! - **(a) local**: a `usb-bot` + `scsi-cd` attached directly to a desktop VM
//!   (the "local USB drive" baseline; QEMU serves the ISO itself);
//! - **(b) emulated**: `airlock usb forward --iso` on this machine, through
//!   the broker's relay to a leased desktop's `usb-redir`;
//! - **(c) terminal**: the terminal VM's USB CD drive (real Linux USB stack,
//!   nusb/usbfs), forwarded by `airlock` in that VM over slirp and the relay.
//!
//! The figure is the guest's own `seconds=` (docs/guest.md: mount, list and
//! read every file, hashing as it reads; the page cache is dropped first).
//! Each run is a fresh disc insertion (eject + insert: QMP for (a) and (c),
//! the CLI's `eject` / `insert` for (b)); every path starts with one
//! insertion that is not counted (for (b) and (c) the one at attach time). After each guest read, a raw `dd`
//! of the whole device (page cache dropped) measures the transport alone.
//! All VMs run under TCG on this machine. Every process it starts is stopped
//! at the end, also on error (the test kit's Drop guards).

use crate::bench_broker::stats::median;
use crate::disc::FileList;
use crate::{disc, terminal, util};
use airlock_core::wire::LeaseGrant;
use airlock_testkit::broker::TERMINAL_TOKEN;
use airlock_testkit::guest_vm::{GuestVm, GuestVmOptions};
use airlock_testkit::process::{self, Stat};
use airlock_testkit::tools::{QEMU, VM_TOOLS};
use airlock_testkit::{block_on, Broker, BrokerConfig, SerialLog, Shell};
use airlock_testkit::{TerminalNet, TerminalOptions, TerminalVm};
use anyhow::{ensure, Context, Result};
use serde::Serialize;
use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

/// `cargo xtask bench disc` options.
#[derive(Debug, Clone, clap::Args)]
pub struct DiscArgs {
    /// Insertions per path (the median is reported).
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
    /// The disc [default: build/discs/sample.iso]; needs NAME.files.json beside it.
    #[arg(long)]
    pub iso: Option<PathBuf>,
    /// Only these paths (comma-separated: a,b,c).
    #[arg(long, value_delimiter = ',')]
    pub only: Vec<String>,
    /// vCPUs of the terminal VM.
    #[arg(long, default_value_t = 1)]
    pub terminal_smp: u32,
    /// How the terminal VM reaches the broker: `loopback` (slirp to
    /// 10.0.2.2) or `guestfwd` (restrict=on, one guestfwd running the test
    /// kit's TCP_NODELAY `tcp-pump` on the host per connection; slower, see
    /// docs/benchmarks.md).
    #[arg(long, default_value = "loopback")]
    pub terminal_net: String,
    /// Shell command run in the desktop guest before each measured insertion
    /// ({dev} = its block device), e.g. 'echo 1024 >/sys/block/{dev}/queue/read_ahead_kb'.
    #[arg(long)]
    pub guest_setup: Option<String>,
    // (b) reads an image file and cannot be throttled.
    /// Throttle the QEMU drives of (a) and (c) to this many MB/s, like a real
    /// drive (52x CD ~ 7.8, 16x DVD ~ 22).
    #[arg(long)]
    pub drive_mbps: Option<f64>,
    /// Host CPU placement, the same for every path: `auto` (desktop vCPUs on the
    /// first CPU, everything else on the others, as airlockd's [pool.cpus] does),
    /// `none`, or DESKTOPS:HOUSEKEEPING CPU lists such as 0:1.
    #[arg(long, default_value = "auto")]
    pub cpus: String,
    #[command(flatten)]
    pub common: util::BenchCommon,
}

/// What a run does: the options, with the network and the CPU placement resolved.
pub struct Options {
    pub args: DiscArgs,
    /// How the terminal VM reaches the broker.
    pub terminal_net: TerminalNet,
    /// Host CPU placement for every path alike: desktop vCPUs on the desktop CPUs;
    /// QEMU's other threads, airlockd, the `airlock` CLI and the terminal VM (which
    /// stands for another computer) on the housekeeping CPUs. `None`: unpinned.
    pub cpus: Option<airlock_core::CpuPlacement>,
}

impl Options {
    /// Resolves `--terminal-net` (`guestfwd` builds the release `tcp-pump`) and `--cpus`.
    pub fn new(args: DiscArgs) -> Result<Options> {
        let terminal_net = match args.terminal_net.as_str() {
            "guestfwd" => TerminalNet::GuestFwd {
                pump: airlock_testkit::artifacts::host_binaries(true)?.tcp_pump(),
            },
            "loopback" => TerminalNet::HostLoopback,
            other => anyhow::bail!("--terminal-net is loopback or guestfwd, not {other:?}"),
        };
        let cpus = parse_cpus(&args.cpus)?;
        Ok(Options {
            args,
            terminal_net,
            cpus,
        })
    }
}

/// `--cpus`: `auto` (the first CPU this process may use for the desktop, the others
/// for housekeeping; unpinned on a single CPU), `none`, or `DESKTOPS:HOUSEKEEPING`
/// as CPU lists (`0:1`, `2-5:0-1`).
fn parse_cpus(arg: &str) -> Result<Option<airlock_core::CpuPlacement>> {
    use airlock_core::{CpuList, CpuPlacement};
    let allowed = airlock_qemu::affinity::allowed_cpus()?;
    match arg {
        "none" => Ok(None),
        "auto" => {
            if allowed.len() < 2 {
                return Ok(None);
            }
            let first = CpuList::from_cpus(allowed.iter().take(1));
            Ok(Some(CpuPlacement::new(first, None, &allowed)?))
        }
        _ => {
            let (d, h) = arg
                .split_once(':')
                .context("--cpus is auto, none or DESKTOPS:HOUSEKEEPING (e.g. 0:1)")?;
            Ok(Some(CpuPlacement::new(
                CpuList::parse(d)?,
                Some(CpuList::parse(h)?),
                &allowed,
            )?))
        }
    }
}

/// Pins process `pid` as airlockd pins a desktop (`desktop`: vCPU threads, named
/// `CPU n/TCG`, on the desktop CPUs, its other threads on the housekeeping CPUs) or
/// wholly on the housekeeping CPUs. Called again before every run, for threads
/// started since.
fn place(p: Option<&airlock_core::CpuPlacement>, pid: u32, desktop: bool) -> Result<()> {
    let Some(p) = p else { return Ok(()) };
    let pid = i32::try_from(pid)?;
    airlock_qemu::affinity::pin_process(pid, p.housekeeping())?;
    if desktop {
        for tid in airlock_qemu::affinity::threads(pid)? {
            let comm =
                std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/comm")).unwrap_or_default();
            if comm.trim_end().ends_with("/TCG") {
                airlock_qemu::affinity::pin_thread(tid, p.desktops())?;
            }
        }
    }
    Ok(())
}

/// One path's measurements.
#[derive(Debug, Clone, Serialize)]
pub struct Series {
    pub key: String,
    pub label: String,
    /// The guest's `seconds=` per run.
    pub seconds: Vec<f64>,
    /// Raw `dd` of the whole device per run, seconds.
    pub raw_seconds: Vec<f64>,
    /// From the insertion to the guest's report, per run.
    pub wall_seconds: Vec<f64>,
    /// CPU seconds per component over the same interval, per run.
    pub cpu: Vec<BTreeMap<String, f64>>,
    /// How the guest sees the drive: USB speed (Mb/s), largest request
    /// (max_sectors_kb) and readahead (read_ahead_kb).
    pub device: String,
    /// The drive's block device in the guest (sr0).
    #[serde(skip)]
    dev: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub date: String,
    pub iso: PathBuf,
    pub iso_size: u64,
    pub files: u64,
    pub bytes: u64,
    pub runs: usize,
    pub terminal_smp: u32,
    pub terminal_net: String,
    pub guest_setup: Option<String>,
    pub drive_mbps: Option<f64>,
    /// Host CPU placement (`--cpus`), or `none`.
    pub cpus: String,
    pub host_cpus: usize,
    /// /proc/loadavg before and after (the machine may be shared).
    pub loadavg_before: String,
    pub loadavg_after: String,
    pub qemu: String,
    pub series: Vec<Series>,
}

pub fn run(o: &Options) -> Result<Report> {
    ensure!(o.args.runs >= 1, "--runs must be at least 1");
    airlock_testkit::process::stop_everything_on_signal();
    util::require_tools(VM_TOOLS)?;
    for k in &o.args.only {
        ensure!(
            ["a", "b", "c"].contains(&k.as_str()),
            "--only takes a, b and c, not {k:?}"
        );
    }
    let want = |k: &str| o.args.only.is_empty() || o.args.only.iter().any(|x| x == k);

    println!("== preparing (guest, discs, terminal VM, release binaries)");
    let (g, disc) = disc::guest_and_disc(o.args.iso.as_deref())?;
    let term = if want("c") {
        Some(terminal::build(&terminal::Options {
            out: terminal::default_out(),
            force: false,
            airlock_bin: None,
        })?)
    } else {
        None
    };
    let bins = airlock_testkit::artifacts::host_binaries(true)?;
    // The ISO in the host's page cache for every path alike.
    std::io::copy(&mut std::fs::File::open(&disc.iso)?, &mut std::io::sink())?;

    match &o.cpus {
        Some(p) => println!(
            "== CPU placement (all paths): desktop vCPUs on CPUs {}; QEMU device models, airlockd, the airlock CLI and the terminal VM on CPUs {}",
            p.desktops(),
            p.housekeeping()
        ),
        None => println!("== no CPU placement: every thread may run on every CPU"),
    }
    let loadavg_before = util::loadavg();
    let mut series = Vec::new();
    if want("a") {
        println!("== (a) local USB drive: usb-bot + scsi-cd on the desktop VM");
        let mut d = GuestVm::boot(
            &g,
            &GuestVmOptions {
                name: "airlock-local-desktop".into(),
                local_cd: true,
                ..GuestVmOptions::default()
            },
        )?;
        d.wait_ready(Duration::from_secs(120))?;
        let mut s = Series::new("a", "local USB drive (usb-bot + scsi-cd in the desktop VM)");
        let qemu_pid = d.qemu_pid();
        let watch = vec![Watch::qemu("desktop QEMU", qemu_pid)];
        let mut reader = Reader::new(&d.serial, &mut d.control, &disc);
        for run in 0..=o.args.runs {
            place(o.cpus.as_ref(), qemu_pid, true)?;
            setup(reader.control, o, &s, run)?;
            let cpu = CpuSample::take(&watch);
            d.qmp.insert("cd0-cd", &disc.iso)?;
            if let (0, Some(mbps)) = (run, o.args.drive_mbps) {
                d.qmp.throttle_reads("cd0-cd", (mbps * 1e6) as u64)?;
            }
            reader.measure(&mut s, run, &cpu, &mut || Ok(()))?;
            d.qmp.eject("cd0-cd")?;
            reader.wait_removed()?;
        }
        series.push(s);
    }

    if want("b") || want("c") {
        let broker = Broker::start(
            &o.args.common.airlockd(|| Ok(bins.airlockd()))?,
            BrokerConfig {
                size: 1,
                heartbeat_timeout_s: 3600,
                cpus: o
                    .cpus
                    .as_ref()
                    .map(|p| (p.desktops().to_string(), Some(p.housekeeping().to_string()))),
                log_filter: "info".into(),
                ..BrokerConfig::new(&g)
            },
        )?;
        if want("b") {
            println!("== (b) emulated CD over the broker relay (airlock usb forward --iso)");
            let mut l = Leased::new(&broker, "bench-emulated")?;
            let mut s = Series::new("b", "emulated CD over the broker relay");
            let mut reader = Reader::new(&l.serial, &mut l.control, &disc);
            let log = broker.state.join("bench-forward-b.log");
            let mut cpu = CpuSample::take(&l.watch);
            let mut fwd = broker.forward_iso(
                &bins.airlock(),
                &l.lease.lease_id.to_string(),
                &disc.iso,
                &log,
            )?;
            l.watch
                .push(Watch::process("airlock (emulated CD)", fwd.id()));
            cpu.add(&l.watch[2]);
            let mut stdin = fwd.child().stdin.take().context("stdin")?;
            for run in 0..=o.args.runs {
                place(o.cpus.as_ref(), fwd.id(), false)?;
                if run > 0 {
                    setup(reader.control, o, &s, run)?;
                    cpu = CpuSample::take(&l.watch);
                    writeln!(stdin, "insert {}", disc.iso.display())?;
                }
                let fwd_log = || std::fs::read_to_string(&log).unwrap_or_default();
                reader
                    .measure(&mut s, run, &cpu, &mut || {
                        ensure!(fwd.running(), "airlock usb forward exited: {}", fwd_log());
                        Ok(())
                    })
                    .with_context(|| format!("forward log: {}", fwd_log()))?;
                writeln!(stdin, "eject")?;
                reader.wait_removed()?;
            }
            writeln!(stdin, "unplug")?;
            let _ = fwd.wait_timeout(Duration::from_secs(30));
            block_on(broker.release(TERMINAL_TOKEN, &l.lease.lease_id))?;
            series.push(s);
        }
        if let Some(term) = &term {
            println!(
                "== (c) the terminal VM's USB drive over slirp and the broker relay (terminal -smp {})",
                o.args.terminal_smp
            );
            let mut t = TerminalVm::boot(
                term,
                broker.port,
                &TerminalOptions {
                    cd_iso: Some(disc.iso.clone()),
                    stick: None,
                    smp: o.args.terminal_smp,
                    memory_mib: 256,
                    net: o.terminal_net.clone(),
                    guard: true,
                },
            )?;
            t.wait_ready(Duration::from_secs(120))?;
            t.wait_usb_devices(1, Duration::from_secs(30))?;
            if let Some(mbps) = o.args.drive_mbps {
                t.qmp.throttle_reads("cd0-cd", (mbps * 1e6) as u64)?;
            }
            let mut l = Leased::new(&broker, "bench-terminal")?;
            l.watch.push(Watch::qemu("terminal VM QEMU", t.qemu_pid()));
            let mut s = Series::new("c", "terminal VM's USB drive over slirp + the broker relay");
            let mut reader = Reader::new(&l.serial, &mut l.control, &disc);
            let mut cpu = CpuSample::take(&l.watch);
            t.start_forward("bench", &l.lease.lease_id.to_string(), "auto")?;
            // The guestfwd's `nc` starts with the connection.
            std::thread::sleep(Duration::from_millis(500));
            for pid in children(t.qemu_pid()) {
                let w = Watch::process("busybox nc (guestfwd)", pid);
                cpu.add(&w);
                l.watch.push(w);
            }
            for run in 0..=o.args.runs {
                place(o.cpus.as_ref(), t.qemu_pid(), false)?;
                for pid in children(t.qemu_pid()) {
                    place(o.cpus.as_ref(), pid, false)?;
                }
                if run > 0 {
                    setup(reader.control, o, &s, run)?;
                    cpu = CpuSample::take(&l.watch);
                    t.qmp.insert("cd0-cd", &disc.iso)?;
                }
                let mut alive = || {
                    ensure!(
                        t.forward_running("bench")?,
                        "airlock usb forward in the terminal VM exited: {}",
                        t.forward_log("bench").unwrap_or_default()
                    );
                    Ok(())
                };
                reader.measure(&mut s, run, &cpu, &mut alive)?;
                t.qmp.eject("cd0-cd")?;
                reader.wait_removed()?;
            }
            let log = t.stop_forward("bench")?;
            println!("terminal forward log:\n{log}");
            block_on(broker.release(TERMINAL_TOKEN, &l.lease.lease_id))?;
            series.push(s);
        }
    }

    let report = Report {
        date: util::run_stdout(Command::new("date").args(["-u", "+%Y-%m-%d %H:%M UTC"]))?
            .trim()
            .to_string(),
        iso: disc.iso.clone(),
        iso_size: disc.iso_size,
        files: disc.files,
        bytes: disc.bytes,
        runs: o.args.runs,
        terminal_smp: o.args.terminal_smp,
        terminal_net: format!("{:?}", o.terminal_net),
        guest_setup: o.args.guest_setup.clone(),
        drive_mbps: o.args.drive_mbps,
        cpus: o
            .cpus
            .as_ref()
            .map(|p| {
                format!(
                    "desktops {}, housekeeping {}",
                    p.desktops(),
                    p.housekeeping()
                )
            })
            .unwrap_or_else(|| "none".into()),
        host_cpus: std::thread::available_parallelism().map_or(0, |n| n.get()),
        loadavg_before,
        loadavg_after: util::loadavg(),
        qemu: util::run_stdout(Command::new(QEMU).arg("--version"))?
            .lines()
            .next()
            .unwrap_or_default()
            .to_string(),
        series,
    };
    let json = o.args.common.save("disc.json", &report)?;
    println!();
    println!("{}", table(&report));
    println!("{}", cpu_table(&report));
    util::print_load_and_results(&report.loadavg_before, &report.loadavg_after, &json);
    Ok(report)
}

impl Series {
    fn new(key: &str, label: &str) -> Series {
        Series {
            key: key.into(),
            label: label.into(),
            seconds: Vec::new(),
            raw_seconds: Vec::new(),
            wall_seconds: Vec::new(),
            cpu: Vec::new(),
            device: String::new(),
            dev: String::new(),
        }
    }
}

/// What one path's insertions are read through: the desktop guest's serial log (from a
/// cursor on), its control shell and the disc it must find.
struct Reader<'a> {
    serial: &'a SerialLog,
    control: &'a mut Shell,
    disc: &'a FileList,
    mark: usize,
}

impl<'a> Reader<'a> {
    /// Reads what the guest reports from now on.
    fn new(serial: &'a SerialLog, control: &'a mut Shell, disc: &'a FileList) -> Reader<'a> {
        Reader {
            mark: serial.mark(),
            serial,
            control,
            disc,
        }
    }

    /// Waits for the guest to report the disc gone (after an eject).
    fn wait_removed(&mut self) -> Result<()> {
        self.mark = self
            .serial
            .wait_removed(self.mark, Duration::from_secs(60))?;
        Ok(())
    }

    /// [`measure`] of the next insertion.
    fn measure(
        &mut self,
        s: &mut Series,
        run: usize,
        cpu: &CpuSample,
        alive: &mut dyn FnMut() -> Result<()>,
    ) -> Result<()> {
        self.mark = measure(self, s, run, cpu, alive)?;
        Ok(())
    }
}

/// Wait for the guest's report of the disc inserted after the reader's cursor, check
/// it and record it with the CPU time each watched process spent since `cpu`; then
/// time a raw read of the whole device. Returns the new log cursor.
fn measure(
    reader: &mut Reader,
    s: &mut Series,
    run: usize,
    cpu: &CpuSample,
    alive: &mut dyn FnMut() -> Result<()>,
) -> Result<usize> {
    let (serial, control, disc) = (reader.serial, &mut *reader.control, reader.disc);
    let t0 = Instant::now();
    let r = serial.wait_cd_while(reader.mark, Duration::from_secs(900), alive)?;
    let wall = t0.elapsed().as_secs_f64();
    let used = cpu.since();
    r.check(disc)?;
    let secs = r.summary.as_ref().map_or(f64::NAN, |x| x.seconds);
    // Raw transport: the whole device, page cache dropped, 1 MiB reads.
    let now = "$(sed -n '3{s/^now at \\([0-9]*\\) nsecs$/\\1/p;q}' /proc/timer_list)";
    let (out, _) = control.run(
        &format!(
            "echo 3 >/proc/sys/vm/drop_caches; a={now}; n=$(dd if=/dev/{dev} of=/dev/null bs=1M 2>&1 | sed -n 's/ records in$//p'); \
             b={now}; echo RAW $(( (b - a) / 1000000 )) $n",
            dev = r.dev
        ),
        Duration::from_secs(900),
    )?;
    let raw_line = out
        .lines()
        .find_map(|l| l.strip_prefix("RAW "))
        .with_context(|| format!("no RAW line in {out:?}"))?;
    let (ms, n) = raw_line.trim().split_once(' ').context("bad RAW line")?;
    let raw_ms: f64 = ms.parse()?;
    // busybox dd reports "FULL+PARTIAL records in" (1 MiB records).
    let expected = format!(
        "{}+{}",
        disc.iso_size >> 20,
        u64::from(disc.iso_size % (1 << 20) != 0)
    );
    ensure!(
        n.trim() == expected,
        "the raw read of /dev/{} got {n} records, the disc has {expected}",
        r.dev
    );
    let raw = raw_ms / 1000.0;
    if run == 0 {
        s.dev = r.dev.clone();
    }
    if run == 1 {
        let q = format!("/sys/block/{}/queue", r.dev);
        let info = control.sh(&format!(
            "for d in /sys/bus/usb/devices/[0-9]*-[0-9]*; do [ -e $d/speed ] && echo speed=$(cat $d/speed); done; \
             echo max_sectors_kb=$(cat {q}/max_sectors_kb) read_ahead_kb=$(cat {q}/read_ahead_kb)"
        ))?;
        s.device = info.split_whitespace().collect::<Vec<_>>().join(" ");
        println!("      the guest's drive: {}", s.device);
    }
    let which = if run == 0 {
        "warm-up (not counted)".to_string()
    } else {
        format!("run {run}")
    };
    println!(
        "  ({}) {which}: guest seconds={secs:.3} ({:.1} MB/s), raw dd {raw:.3} s ({:.1} MB/s); wall {wall:.1} s",
        s.key,
        disc.bytes as f64 / secs / 1e6,
        disc.iso_size as f64 / raw / 1e6,
    );
    println!(
        "      CPU seconds from insertion to the guest's report: {}",
        used.iter()
            .map(|(k, v)| format!("{k} {v:.2}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    if run > 0 {
        s.seconds.push(secs);
        s.raw_seconds.push(raw);
        s.wall_seconds.push(wall);
        s.cpu.push(used);
    }
    Ok(r.end)
}

/// A desktop leased on the first terminal, with what the measurement reads of it.
struct Leased {
    lease: LeaseGrant,
    serial: SerialLog,
    control: Shell,
    /// Its QEMU and the broker, whose CPU time counts.
    watch: Vec<Watch>,
}

impl Leased {
    /// Waits for a clean desktop and leases it for `user`.
    fn new(broker: &Broker, user: &str) -> Result<Leased> {
        block_on(broker.wait_clean(1, Duration::from_secs(180)))?;
        let lease = block_on(broker.acquire_ok(user))?;
        let desktop = lease.desktop_id.to_string();
        Ok(Leased {
            serial: broker.serial_log(&desktop),
            control: broker.control(&desktop)?,
            watch: vec![
                Watch::qemu("desktop QEMU", broker.desktop_qemu_pid(&desktop)?),
                Watch::process("airlockd", broker.pid().context("broker pid")?),
            ],
            lease,
        })
    }
}

/// Run `--guest-setup` in the desktop guest before a measured insertion.
fn setup(control: &mut Shell, o: &Options, s: &Series, run: usize) -> Result<()> {
    let Some(cmd) = &o.args.guest_setup else {
        return Ok(());
    };
    if run == 0 || s.dev.is_empty() {
        return Ok(());
    }
    let cmd = cmd.replace("{dev}", &s.dev);
    let out = control
        .sh(&cmd)
        .with_context(|| format!("--guest-setup `{cmd}`"))?;
    if run == 1 {
        println!("      guest setup `{cmd}`: {}", out.trim());
    }
    Ok(())
}

// ------------------------------------------------------------------ CPU accounting

/// A process whose CPU time is recorded; QEMU's threads are split into its
/// vCPU threads (named `CPU n/TCG` with `debug-threads=on`) and the rest
/// (main loop: device emulation, chardevs, usb-redir, slirp).
#[derive(Debug, Clone)]
pub struct Watch {
    label: String,
    pid: u32,
    qemu: bool,
}

impl Watch {
    pub fn qemu(label: &str, pid: u32) -> Watch {
        Watch {
            label: label.into(),
            pid,
            qemu: true,
        }
    }
    pub fn process(label: &str, pid: u32) -> Watch {
        Watch {
            label: label.into(),
            pid,
            qemu: false,
        }
    }
}

/// CPU ticks per (label, thread group) at one moment.
pub struct CpuSample {
    at: BTreeMap<String, u64>,
    watch: Vec<Watch>,
}

/// utime + stime (fields 14 and 15) of every thread of `pid`, by thread name.
fn thread_ticks(pid: u32) -> Vec<(String, u64)> {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| Stat::read(&e.path().join("stat")))
        .map(|s| {
            let ticks = s.number(14).unwrap_or(0) + s.number(15).unwrap_or(0);
            (s.comm, ticks)
        })
        .collect()
}

/// Child processes of `pid` (field 4 of their `stat` is the parent's pid).
pub fn children(pid: u32) -> Vec<u32> {
    process::pids()
        .into_iter()
        .filter(|&p| Stat::of(p).and_then(|s| s.number(4)) == Some(u64::from(pid)))
        .collect()
}

fn sample_into(at: &mut BTreeMap<String, u64>, w: &Watch) {
    for (comm, ticks) in thread_ticks(w.pid) {
        let key = if !w.qemu {
            w.label.clone()
        } else if comm.starts_with("CPU ") {
            format!("{} vCPU", w.label)
        } else {
            format!("{} other threads", w.label)
        };
        *at.entry(key).or_default() += ticks;
    }
}

impl CpuSample {
    pub fn take(watch: &[Watch]) -> CpuSample {
        let mut at = BTreeMap::new();
        for w in watch {
            sample_into(&mut at, w);
        }
        CpuSample {
            at,
            watch: watch.to_vec(),
        }
    }

    /// Start watching one more process from now.
    pub fn add(&mut self, w: &Watch) {
        sample_into(&mut self.at, w);
        self.watch.push(w.clone());
    }

    /// CPU seconds per label since the sample was taken.
    pub fn since(&self) -> BTreeMap<String, f64> {
        let now = CpuSample::take(&self.watch);
        let hz = clock_ticks_per_second();
        now.at
            .iter()
            .map(|(k, v)| {
                let before = self.at.get(k).copied().unwrap_or(0);
                (k.clone(), v.saturating_sub(before) as f64 / hz)
            })
            .collect()
    }
}

fn clock_ticks_per_second() -> f64 {
    static HZ: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *HZ.get_or_init(|| {
        util::run_stdout(Command::new("getconf").arg("CLK_TCK"))
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(100.0)
    })
}

/// The results as a Markdown table.
pub fn table(r: &Report) -> String {
    let base = r
        .series
        .iter()
        .find(|s| s.key == "a")
        .map(|s| (median(&s.seconds), median(&s.raw_seconds)));
    let mut t = String::from(
        "| path | guest `seconds=` per run | median | vs (a) | raw `dd` of the device, median | vs (a) |\n\
         |---|---|---|---|---|---|\n",
    );
    for s in &r.series {
        let m = median(&s.seconds);
        let raw = median(&s.raw_seconds);
        let runs = s
            .seconds
            .iter()
            .map(|x| format!("{x:.3}"))
            .collect::<Vec<_>>()
            .join(", ");
        let (ratio, raw_ratio) = match base {
            Some((b, braw)) => (format!("{:.2}", m / b), format!("{:.2}", raw / braw)),
            None => ("–".into(), "–".into()),
        };
        t.push_str(&format!(
            "| ({}) {} | {runs} | {m:.3} s ({:.1} MB/s) | {ratio} | {raw:.3} s ({:.1} MB/s) | {raw_ratio} |\n",
            s.key,
            s.label,
            r.bytes as f64 / m / 1e6,
            r.iso_size as f64 / raw / 1e6,
        ));
    }
    t
}

/// Median CPU seconds per component from insertion to the guest's report,
/// as a Markdown table (one column per path).
pub fn cpu_table(r: &Report) -> String {
    let mut labels: Vec<String> = Vec::new();
    for s in &r.series {
        for run in &s.cpu {
            for k in run.keys() {
                if !labels.contains(k) {
                    labels.push(k.clone());
                }
            }
        }
    }
    labels.sort();
    let mut t = String::from("| CPU seconds (median) |");
    let mut rule = String::from("|---|");
    for s in &r.series {
        t.push_str(&format!(" ({}) |", s.key));
        rule.push_str("---|");
    }
    t.push('\n');
    t.push_str(&rule);
    t.push('\n');
    let mut row = |name: &str, f: &dyn Fn(&Series) -> f64| {
        t.push_str(&format!("| {name} |"));
        for s in &r.series {
            let v = f(s);
            if v.is_nan() {
                t.push_str(" – |");
            } else {
                t.push_str(&format!(" {v:.2} |"));
            }
        }
        t.push('\n');
    };
    row("wall time, insertion to report", &|s| {
        median(&s.wall_seconds)
    });
    for l in &labels {
        row(l, &|s| {
            let v: Vec<f64> = s.cpu.iter().filter_map(|c| c.get(l).copied()).collect();
            median(&v)
        });
    }
    t
}
