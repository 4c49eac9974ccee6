//! The operations a desktop pool needs from QEMU.
use crate::confine::{Cgroups, ConfineConfig, Host};
use crate::img::create_overlay;
use crate::process::{host_available_bytes, kill_stale, kill_stale_now, kill_stale_now_except, Vm};
use crate::qga_probe::Depth;
use crate::spec::{
    backing, fds, files, Accel, AgentPort, Boot, Confine, CpuShape, DisplayProtocol, DisplaySpec,
    MachineShape, Memory, VmSpec,
};
use crate::QemuError;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Where a template is built before it is renamed to its key.
pub const BUILD_DIR: &str = ".build";

/// The longest unix socket path the driver creates under a state directory whose desktop
/// ids are at most `max_id_len` long (the kernel's limit is 107 bytes).
pub fn longest_socket_path(state_dir: &Path, max_id_len: usize) -> PathBuf {
    let desktop = state_dir
        .join("desktops")
        .join("x".repeat(max_id_len))
        .join("run")
        .join(files::USBREDIR);
    let template = state_dir
        .join("templates")
        .join(BUILD_DIR)
        .join("run")
        .join(files::USBREDIR);
    if desktop.as_os_str().len() >= template.as_os_str().len() {
        desktop
    } else {
        template
    }
}

/// The kernel's limit on a unix socket path (`sun_path` less the final NUL).
pub const MAX_SOCKET_PATH: usize = 107;

/// How the broker decides that a started guest is ready.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Readiness {
    /// Ping the guest's agent serial port until it answers (docs/guest.md).
    Serial { boot_timeout: Duration },
    /// Wait a fixed time after start (for guests without an agent).
    Delay(Duration),
    /// Ask the stock QEMU guest agent on the agent port ([`crate::qga_probe`]).
    Qga(crate::qga_probe::QgaProbe),
}

impl Readiness {
    /// What answers on the agent port of a pool with this readiness.
    pub fn agent_protocol(&self) -> crate::spec::AgentProtocol {
        match self {
            Readiness::Qga(_) => crate::spec::AgentProtocol::Qga,
            Readiness::Serial { .. } | Readiness::Delay(_) => crate::spec::AgentProtocol::Airlock,
        }
    }
}

/// What every desktop VM of a pool shares.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DriverConfig {
    pub qemu: PathBuf,
    pub qemu_img: PathBuf,
    pub accel: Accel,
    pub machine: String,
    /// The guest CPU model and Hyper-V flags (`None`: QEMU's default model).
    #[serde(default)]
    pub cpu: Option<CpuShape>,
    pub memory_mib: u64,
    pub vcpus: u32,
    pub boot: Boot,
    /// The golden disk image every desktop starts from.
    pub golden: PathBuf,
    pub control_channel: bool,
    /// The device of the guest agent's port.
    #[serde(default)]
    pub agent_port: AgentPort,
    /// Firmware, TPM, clock, pointer, disk bus and graphics card.
    #[serde(default)]
    pub shape: MachineShape,
    pub sandbox: bool,
    pub readiness: Readiness,
    /// Host CPUs for the desktops' vCPUs and for QEMU's other threads (`None`: not pinned).
    pub placement: Option<airlock_core::CpuPlacement>,
    /// Each QEMU as its own uid with cgroup limits (`None`: turned off in the config).
    pub confine: Option<ConfineConfig>,
    /// This pool's name among the cgroups (pools on one host must differ).
    pub cgroup_instance: String,
    /// The most bytes a desktop's disk overlay may grow to (`None`: no cap).
    pub disk_cap_bytes: Option<u64>,
    /// The most bytes of one serial log file (two per port with the rotated one).
    pub serial_log_bytes: u64,
    /// Tests only (with the control channel): how long a template clone waits, once its
    /// new process runs, before it kills the frozen old one (a window for a test to
    /// kill the broker in).
    #[serde(default)]
    pub test_clone_pause: Option<Duration>,
}

/// The CPU models `qemu -cpu help` lists (run once, when the config is checked).
pub fn host_cpu_models(qemu: &Path) -> Result<Vec<String>, QemuError> {
    let fail = |reason: String| QemuError::CpuModels {
        qemu: qemu.display().to_string(),
        reason,
    };
    let out = std::process::Command::new(qemu)
        .args(["-cpu", "help"])
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .output()
        .map_err(|e| fail(e.to_string()))?;
    if !out.status.success() {
        return Err(fail(format!("`-cpu help` exited with {}", out.status)));
    }
    let models = crate::spec::parse_cpu_models(&String::from_utf8_lossy(&out.stdout));
    if models.is_empty() {
        return Err(fail("`-cpu help` listed no models".into()));
    }
    Ok(models)
}

/// A frozen template: RAM file, device state and the disk as of the save.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Template {
    pub key: String,
    pub dir: PathBuf,
    pub ram_file: PathBuf,
    pub device_state: PathBuf,
    pub base_disk: PathBuf,
    pub built_at_unix: u64,
    pub build_ms: u64,
    /// SHA-256 of the saved device state: part of every clone's proof of a clean start.
    pub device_state_sha256: String,
    /// What the readiness probe found when the template was frozen (with the stock
    /// guest agent: its version, the guest's OS and devices, the logon waited for).
    #[serde(default)]
    pub guest: Option<Value>,
    /// UEFI: the variable store as of the save; every clone starts on a copy.
    #[serde(default)]
    pub vars: Option<PathBuf>,
}

/// A desktop VM that was started and verified ready.
#[derive(Debug)]
pub struct StartedVm {
    pub vm: Vm,
    /// Facts that prove the clean start, for the audit log.
    pub proof: Value,
}

/// The QEMU driver for one pool.
#[derive(Debug, Clone)]
pub struct Driver {
    pub cfg: DriverConfig,
    qemu_version: String,
    host: Host,
    /// The templates' RAM as sealed memfds, by template key.
    ram: Arc<Mutex<HashMap<String, Arc<OwnedFd>>>>,
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Hashes a file's identity: its full contents when small, else length + mtime + the
/// first and last MiB (a multi-GiB golden image is not rehashed at every start).
fn file_fingerprint(h: &mut Sha256, path: &Path) -> Result<(), QemuError> {
    use std::io::{Read, Seek, SeekFrom};
    let meta =
        std::fs::metadata(path).map_err(crate::io_error(format!("read {}", path.display())))?;
    h.update(path.display().to_string().as_bytes());
    h.update(meta.len().to_le_bytes());
    let mut f =
        std::fs::File::open(path).map_err(crate::io_error(format!("open {}", path.display())))?;
    if meta.len() <= 256 << 20 {
        let mut buf = Vec::new();
        f.read_to_end(&mut buf)
            .map_err(crate::io_error(format!("read {}", path.display())))?;
        h.update(&buf);
    } else {
        if let Ok(m) = meta.modified() {
            h.update(format!("{m:?}").as_bytes());
        }
        let mut buf = vec![0u8; 1 << 20];
        f.read_exact(&mut buf)
            .map_err(crate::io_error(format!("read {}", path.display())))?;
        h.update(&buf);
        f.seek(SeekFrom::End(-(1 << 20)))
            .map_err(crate::io_error(format!("seek {}", path.display())))?;
        f.read_exact(&mut buf)
            .map_err(crate::io_error(format!("read {}", path.display())))?;
        h.update(&buf);
    }
    Ok(())
}

/// A fresh copy of a UEFI variable store as `run_dir/vars.fd` (written beside it and
/// renamed: a frozen previous process keeps its own). Returns its path.
fn copy_vars(from: &Path, run_dir: &Path) -> Result<PathBuf, QemuError> {
    std::fs::create_dir_all(run_dir)
        .map_err(crate::io_error(format!("create {}", run_dir.display())))?;
    let to = run_dir.join(files::VARS);
    let tmp = run_dir.join(format!("{}.new", files::VARS));
    std::fs::copy(from, &tmp).map_err(crate::io_error(format!(
        "copy the UEFI variable store {}",
        from.display()
    )))?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600))
        .map_err(crate::io_error(format!("restrict {}", tmp.display())))?;
    std::fs::rename(&tmp, &to).map_err(crate::io_error(format!("install {}", to.display())))?;
    Ok(to)
}

fn sha256_file(path: &Path) -> Result<String, QemuError> {
    let data = std::fs::read(path).map_err(crate::io_error(format!("read {}", path.display())))?;
    Ok(hex::encode(Sha256::digest(&data)))
}

impl Driver {
    /// Creates a driver, asking the QEMU binary for its version (which also checks it runs).
    pub async fn new(cfg: DriverConfig) -> Result<Driver, QemuError> {
        let out = tokio::process::Command::new(&cfg.qemu)
            .arg("--version")
            .output()
            .await
            .map_err(|e| QemuError::Spawn {
                qemu: cfg.qemu.display().to_string(),
                reason: e.to_string(),
            })?;
        let qemu_version = String::from_utf8_lossy(&out.stdout)
            .lines()
            .next()
            .unwrap_or("unknown")
            .to_owned();
        let host = Host::detect();
        let driver = Driver {
            cfg,
            qemu_version,
            host,
            ram: Arc::default(),
        };
        for p in driver.confinement_problems() {
            tracing::warn!("{p}");
        }
        if let (Some(c), Some(cg)) = (&driver.cfg.confine, driver.cgroups()) {
            if let Err(e) = crate::confine::prepare_instance(cg, &driver.cfg.cgroup_instance, c) {
                tracing::warn!(error = %e, "cannot set the pool's CPU weight; on a busy host its desktops get less CPU than unconfined ones would");
            }
        }
        Ok(driver)
    }

    /// What keeps the desktops from being confined, each with what to do about it (empty
    /// when every QEMU runs as its own uid inside its cgroups).
    pub fn confinement_problems(&self) -> Vec<String> {
        match &self.cfg.confine {
            Some(_) => self.host.problems(),
            None => vec![
                "desktops are not confined (pool.confine.enabled = false): every QEMU runs as airlockd's user without limits; a QEMU escape is that user"
                    .to_owned(),
            ],
        }
    }

    /// The uid and limits for the process of `slot` (`None`: the template's source VM).
    fn confinement(&self, slot: Option<u32>, name: &str, vmgenid: &str) -> Option<Confine> {
        let c = self.cfg.confine.as_ref().filter(|_| self.host.root)?;
        let process: String = vmgenid.chars().take(8).collect();
        let mut confine = c.for_slot(
            slot,
            self.cfg.memory_mib,
            format!("{}/{name}.{process}", self.cfg.cgroup_instance),
        )?;
        if self.cfg.accel == Accel::Kvm {
            confine.kvm_gid = std::fs::read_to_string("/etc/group")
                .ok()
                .and_then(|g| crate::confine::group_gid(&g, "kvm"));
        }
        Some(confine)
    }

    /// The cgroups to put confined processes in, if the host has them.
    fn cgroups(&self) -> Option<&Cgroups> {
        self.host.cgroups.as_ref().ok().filter(|_| self.host.root)
    }

    /// The template's RAM as a sealed memfd: every clone maps it privately
    /// (copy-on-write) and nobody can write it, not even a QEMU that got out of its
    /// guest. Read from the RAM file once per template.
    async fn template_ram(&self, template: &Template) -> Result<Arc<OwnedFd>, QemuError> {
        if let Some(fd) = self
            .ram
            .lock()
            .ok()
            .and_then(|m| m.get(&template.key).cloned())
        {
            return Ok(fd);
        }
        let path = template.ram_file.clone();
        let name = format!("airlock-template-{}", template.key);
        let fd = tokio::task::spawn_blocking(move || sealed_copy(&path, &name))
            .await
            .map_err(|e| crate::io_error("load the template's RAM")(std::io::Error::other(e)))??;
        let fd = Arc::new(fd);
        if let Ok(mut m) = self.ram.lock() {
            m.retain(|k, _| k == &template.key);
            m.insert(template.key.clone(), fd.clone());
        }
        Ok(fd)
    }

    /// QEMU's version line.
    pub fn qemu_version(&self) -> &str {
        &self.qemu_version
    }

    /// The key of the template for the current configuration: it changes when the golden
    /// image, kernel, initrd, QEMU binary or VM shape changes, which triggers a rebuild.
    pub fn template_key(&self) -> Result<String, QemuError> {
        let mut h = Sha256::new();
        // v2: disks refer to the images below them by fd set (see `spec::backing`).
        h.update(b"airlock-template-v2\n");
        h.update(self.qemu_version.as_bytes());
        let c = &self.cfg;
        h.update(
            format!(
                "{}|{}|{}|{}|{}|{}",
                c.accel.as_str(),
                c.machine,
                c.memory_mib,
                c.vcpus,
                c.control_channel,
                c.sandbox
            )
            .as_bytes(),
        );
        // The CPU a clone runs on must be the template's: its model and flags are part
        // of the key (nothing is added for QEMU's default, so keys stay as they were).
        if let Some(cpu) = &c.cpu {
            h.update(format!("|cpu={}|hyperv={}", cpu.model, cpu.hyperv).as_bytes());
        }
        // So is the agent port's device (likewise nothing for the default), and what
        // answers on it (a virtio port's name depends on it).
        if c.agent_port != AgentPort::Isa {
            h.update(format!("|agent={}", c.agent_port.as_str()).as_bytes());
        }
        if !c.shape.is_default() {
            h.update(b"|shape=");
            h.update(
                serde_json::to_string(&c.shape)
                    .unwrap_or_default()
                    .as_bytes(),
            );
            if let Some(u) = c.shape.uefi() {
                file_fingerprint(&mut h, &u.code)?;
                file_fingerprint(&mut h, &u.vars_template)?;
            }
        }
        if let Readiness::Qga(q) = &c.readiness {
            // Accepting program and file commands is checked when the template is
            // built: a change must build it again.
            h.update(if q.accept_exec {
                b"|qga+exec".as_slice()
            } else {
                b"|qga".as_slice()
            });
            if let Some(l) = &q.logon {
                h.update(format!("|logon={}", l.user).as_bytes());
            }
        }
        file_fingerprint(&mut h, &c.golden)?;
        if let Boot::Kernel {
            kernel,
            initrd,
            append,
        } = &c.boot
        {
            file_fingerprint(&mut h, kernel)?;
            file_fingerprint(&mut h, initrd)?;
            h.update(append.as_bytes());
        }
        Ok(hex::encode(h.finalize()).chars().take(16).collect())
    }

    /// The VM spec for the desktop in `slot` (its position in the pool: it decides the
    /// uid; `None` for the template's source VM), before the per-start choices (memory
    /// mode, incoming).
    pub fn spec(
        &self,
        name: &str,
        slot: Option<u32>,
        disk: &Path,
        run_dir: &Path,
        display: Option<DisplaySpec>,
    ) -> VmSpec {
        let vmgenid = uuid::Uuid::new_v4().to_string();
        VmSpec {
            confine: self.confinement(slot, name, &vmgenid),
            base_disk: None,
            golden: self.cfg.golden.clone(),
            device_state: None,
            disk_cap_bytes: self.cfg.disk_cap_bytes,
            serial_log_bytes: self.cfg.serial_log_bytes,
            name: name.to_owned(),
            qemu: self.cfg.qemu.clone(),
            accel: self.cfg.accel,
            machine: self.cfg.machine.clone(),
            memory_mib: self.cfg.memory_mib,
            vcpus: self.cfg.vcpus,
            boot: self.cfg.boot.clone(),
            disk: disk.to_owned(),
            run_dir: run_dir.to_owned(),
            display,
            memory: Memory::Anonymous,
            vmgenid,
            control_channel: self.cfg.control_channel,
            agent_port: self.cfg.agent_port,
            agent_protocol: self.cfg.readiness.agent_protocol(),
            shape: self.cfg.shape.clone(),
            vars: None,
            incoming: false,
            cpu: self.cfg.cpu.clone(),
            sandbox: self.cfg.sandbox,
            placement: self.cfg.placement.clone(),
        }
    }

    async fn wait_ready(
        &self,
        vm: &Vm,
        spec: &VmSpec,
        timeout: Duration,
    ) -> Result<Value, QemuError> {
        self.wait_ready_as(vm, spec, timeout, Depth::Clone).await
    }

    /// [`Self::wait_ready`] after a boot or for the template's source VM: with the
    /// stock agent, its guest is checked and described for the proof (and, for the
    /// template of desktops that log on, waited for).
    async fn wait_ready_as(
        &self,
        vm: &Vm,
        spec: &VmSpec,
        timeout: Duration,
        depth: Depth,
    ) -> Result<Value, QemuError> {
        match &self.cfg.readiness {
            Readiness::Qga(probe) => {
                crate::qga_probe::ready(vm, &spec.name, probe, timeout, depth).await
            }
            Readiness::Delay(d) => {
                tokio::time::sleep(*d).await;
                Ok(json!({ "probe": "delay", "delay_ms": d.as_millis() as u64 }))
            }
            Readiness::Serial { .. } => {
                let nonce = uuid::Uuid::new_v4().simple().to_string();
                let not_ready = |source| QemuError::NotReady {
                    desktop: spec.name.clone(),
                    source,
                };
                let agent = vm.agent(timeout).await.map_err(not_ready)?;
                let took = agent.ping(&nonce, timeout).await.map_err(not_ready)?;
                // A restored guest's clock is as old as its template: set it. Not fatal.
                let clock = agent.set_time(unix_now(), Duration::from_secs(2)).await;
                if let Err(e) = &clock {
                    tracing::warn!(desktop = %spec.name, error = %e, "could not set the guest clock");
                }
                Ok(json!({
                    "probe": "serial-ping",
                    "nonce": nonce,
                    "answered_ms": took.as_millis() as u64,
                    "clock_set": clock.is_ok(),
                }))
            }
        }
    }

    /// Checks the running QEMU's chardevs (`query-chardev`) against the ones its spec
    /// creates ([`crate::chardev_policy`]): a desktop with any other channel (a SPICE
    /// agent, webdav, a SPICE USB channel, ...) is not started. Returns the checked
    /// labels for the proof of the clean start.
    pub async fn check_chardevs(&self, vm: &Vm, spec: &VmSpec) -> Result<Value, QemuError> {
        let answer = vm
            .qmp
            .execute("query-chardev", None, Duration::from_secs(5))
            .await
            .map_err(crate::qmp_error(&spec.name))?;
        let refused = |source| QemuError::Chardevs {
            desktop: spec.name.clone(),
            source,
        };
        let present = crate::chardev_policy::parse(&answer).map_err(refused)?;
        let labels = crate::chardev_policy::check(&crate::chardev_policy::allowed(spec), &present)
            .map_err(refused)?;
        Ok(json!(labels))
    }

    fn boot_timeout(&self) -> Duration {
        match &self.cfg.readiness {
            Readiness::Serial { boot_timeout } => *boot_timeout,
            Readiness::Qga(q) => q.boot_timeout,
            Readiness::Delay(d) => *d + Duration::from_secs(10),
        }
    }

    /// Returns the current template for this configuration, building it if it is missing
    /// or stale (first start, golden image changed). Building boots the golden image once,
    /// waits until it is ready, pauses it and saves its device state; RAM stays in a file.
    pub async fn ensure_template(&self, templates_dir: &Path) -> Result<Template, QemuError> {
        let key = self.template_key()?;
        let dir = templates_dir.join(&key);
        let meta_path = dir.join("template.json");
        if let Ok(text) = std::fs::read_to_string(&meta_path) {
            if let Ok(t) = serde_json::from_str::<Template>(&text) {
                if t.ram_file.exists()
                    && t.device_state.exists()
                    && t.base_disk.exists()
                    && t.vars.as_ref().is_none_or(|v| v.exists())
                {
                    tracing::info!(key = %key, "using existing template");
                    return Ok(t);
                }
            }
        }
        tracing::info!(key = %key, accel = self.cfg.accel.as_str(), "building template: booting the golden image once");
        let started = Instant::now();
        // A short fixed name: unix socket paths under it must stay within 107 bytes.
        let building = templates_dir.join(BUILD_DIR);
        if building.exists() {
            kill_stale(&building.join("run")).await;
            std::fs::remove_dir_all(&building)
                .map_err(crate::io_error("remove a half-built template"))?;
        }
        std::fs::create_dir_all(&building)
            .map_err(crate::io_error(format!("create {}", building.display())))?;
        let base_disk = building.join("base.qcow2");
        create_overlay(
            &self.cfg.qemu_img,
            &self.cfg.golden,
            backing::GOLDEN,
            &base_disk,
        )
        .await?;
        // The source VM writes its RAM and device state in its own run directory.
        let run = building.join("run");
        let ram_file = building.join("ram");
        let mut spec = self.spec("template", None, &base_disk, &run, None);
        spec.memory = Memory::TemplateSource {
            ram_file: run.join("ram"),
        };
        if let Some(u) = self.cfg.shape.uefi() {
            std::fs::create_dir_all(&run)
                .map_err(crate::io_error(format!("create {}", run.display())))?;
            spec.vars = Some(copy_vars(&u.vars_template, &run)?);
        }
        let vm = Vm::spawn(&spec, None, self.cgroups()).await?;
        let result = self.save_template(&vm, &spec).await;
        vm.kill().await;
        let guest = result?;
        // Freeze: root's, read-only to everyone. The clones get the RAM as a sealed
        // memfd, the disk and device state as read-only descriptors.
        let mut frozen = vec![
            (run.join("ram"), ram_file.clone()),
            (run.join("device.state"), building.join("device.state")),
            (base_disk.clone(), base_disk.clone()),
        ];
        if spec.vars.is_some() {
            frozen.push((run.join(files::VARS), building.join(files::VARS)));
        }
        for (from, to) in frozen {
            std::fs::rename(&from, &to)
                .map_err(crate::io_error(format!("move {}", from.display())))?;
            rustix::fs::chown(
                &to,
                Some(rustix::fs::Uid::ROOT),
                Some(rustix::fs::Gid::ROOT),
            )
            .or_else(|e| if self.host.root { Err(e) } else { Ok(()) })
            .map_err(|e| crate::io_error(format!("give {} to root", to.display()))(e.into()))?;
            std::fs::set_permissions(&to, std::fs::Permissions::from_mode(0o444))
                .map_err(crate::io_error(format!("freeze {}", to.display())))?;
        }
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::rename(&building, &dir).map_err(crate::io_error("install the template"))?;
        let device_state = dir.join("device.state");
        let t = Template {
            key: key.clone(),
            ram_file: dir.join("ram"),
            base_disk: dir.join("base.qcow2"),
            device_state_sha256: sha256_file(&device_state)?,
            device_state,
            dir: dir.clone(),
            built_at_unix: unix_now(),
            build_ms: started.elapsed().as_millis() as u64,
            guest: Some(guest),
            vars: spec.vars.as_ref().map(|_| dir.join(files::VARS)),
        };
        let text = serde_json::to_string_pretty(&t).map_err(|e| QemuError::Operation {
            desktop: "template".into(),
            what: "write template.json".into(),
            reason: e.to_string(),
        })?;
        std::fs::write(&meta_path, text).map_err(crate::io_error("write template.json"))?;
        tracing::info!(key = %key, ms = t.build_ms, "template built");
        Ok(t)
    }

    /// Waits for the source VM's guest, then saves it. Returns what the readiness probe
    /// found.
    async fn save_template(&self, vm: &Vm, spec: &VmSpec) -> Result<Value, QemuError> {
        self.check_chardevs(vm, spec).await?;
        let guest = self
            .wait_ready_as(vm, spec, self.boot_timeout(), Depth::Template)
            .await?;
        let q = &vm.qmp;
        let op = |what: &str| {
            let what = what.to_owned();
            move |e: crate::QmpError| QemuError::Operation {
                desktop: "template".into(),
                what,
                reason: e.to_string(),
            }
        };
        let t = Duration::from_secs(10);
        q.execute("stop", None, t).await.map_err(op("stop"))?;
        q.execute(
            "migrate-set-capabilities",
            Some(json!({"capabilities": [{"capability": "x-ignore-shared", "state": true}]})),
            t,
        )
        .await
        .map_err(op("migrate-set-capabilities"))?;
        // Relative to the source VM's working directory, its run directory.
        let uri = "exec:cat > device.state".to_owned();
        q.execute("migrate", Some(json!({ "uri": uri })), t)
            .await
            .map_err(op("migrate"))?;
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let r = q
                .execute("query-migrate", None, t)
                .await
                .map_err(op("query-migrate"))?;
            match r.get("status").and_then(Value::as_str) {
                Some("completed") => return Ok(guest),
                Some("failed") | Some("cancelled") => {
                    return Err(QemuError::Operation {
                        desktop: "template".into(),
                        what: "save device state".into(),
                        reason: r
                            .get("error-desc")
                            .and_then(Value::as_str)
                            .unwrap_or("migration failed")
                            .to_owned(),
                    })
                }
                _ if Instant::now() > deadline => {
                    return Err(QemuError::Operation {
                        desktop: "template".into(),
                        what: "save device state".into(),
                        reason: "did not complete within 120 s".into(),
                    })
                }
                _ => tokio::time::sleep(Duration::from_millis(10)).await,
            }
        }
    }

    /// Starts a desktop as a clone of `template` in a fresh QEMU process: a new overlay
    /// on the frozen base, the RAM file mapped copy-on-write, the saved device state
    /// loaded, a new VM generation id; then waits until the guest answers.
    ///
    /// `replacing` is the desktop's previous process, if the caller has one: it is
    /// frozen at once (SIGSTOP: no guest code runs from then on) and killed only when
    /// the clone has started or failed to. The kernel frees a killed process's memory
    /// on CPU time, page by page for a clone's copy-on-write RAM (about a quarter of a
    /// second of CPU for 4 GiB dirtied here); done later, that work no longer competes
    /// with the clone's start. Until then the frozen process keeps its memory.
    pub async fn start_clone(
        &self,
        template: &Template,
        mut spec: VmSpec,
        replacing: Option<&Vm>,
    ) -> Result<StartedVm, QemuError> {
        let t0 = Instant::now();
        // Freeze the old process only if the host can hold its memory a moment longer
        // (its resident size plus 1 GiB to spare); otherwise kill it first.
        let retire = replacing.map(|old| {
            let rss = old.resident_bytes().unwrap_or(u64::MAX);
            let room = host_available_bytes().unwrap_or(0);
            if room >= rss.saturating_add(1 << 30) {
                old.freeze();
                (old, RetireOld::FrozenUntilReady)
            } else {
                tracing::debug!(desktop = %spec.name, rss, available = room,
                    "little free memory: killing the old process before starting the clone");
                old.kill_now();
                (old, RetireOld::KilledFirst)
            }
        });
        kill_stale_now_except(&spec.run_dir, replacing.map(|v| v.pid));
        let mut result = self.clone_process(template, &mut spec, t0).await;
        if let Some(pause) = self
            .cfg
            .test_clone_pause
            .filter(|_| self.cfg.control_channel)
        {
            tokio::time::sleep(pause).await;
        }
        if let Some((old, how)) = retire {
            if how == RetireOld::FrozenUntilReady {
                old.kill_now();
            }
            if let Ok(StartedVm { proof, .. }) = &mut result {
                proof["old_process"] = json!(how.as_str());
            }
        }
        result
    }

    async fn clone_process(
        &self,
        template: &Template,
        spec: &mut VmSpec,
        t0: Instant,
    ) -> Result<StartedVm, QemuError> {
        let ram = self.template_ram(template).await?;
        create_overlay(
            &self.cfg.qemu_img,
            &template.base_disk,
            backing::BASE,
            &spec.disk,
        )
        .await?;
        spec.memory = Memory::TemplateClone {
            ram_file: template.ram_file.clone(),
        };
        spec.base_disk = Some(template.base_disk.clone());
        spec.device_state = Some(template.device_state.clone());
        spec.incoming = true;
        if self.cfg.shape.uefi().is_some() {
            let from = template.vars.as_ref().ok_or_else(|| QemuError::Operation {
                desktop: spec.name.clone(),
                what: "start a UEFI clone".into(),
                reason: "the template has no UEFI variable store; remove the templates directory to rebuild it".into(),
            })?;
            spec.vars = Some(copy_vars(from, &spec.run_dir)?);
        }
        let vm = Vm::spawn(spec, Some(&ram), self.cgroups()).await?;
        match self.finish_clone(&vm, spec, template, t0).await {
            Ok(proof) => Ok(StartedVm { vm, proof }),
            Err(e) => {
                vm.kill().await;
                Err(e)
            }
        }
    }

    async fn finish_clone(
        &self,
        vm: &Vm,
        spec: &VmSpec,
        template: &Template,
        t0: Instant,
    ) -> Result<Value, QemuError> {
        let q = &vm.qmp;
        let op = |what: &'static str| {
            let desktop = spec.name.clone();
            move |e: crate::QmpError| QemuError::Operation {
                desktop,
                what: what.into(),
                reason: e.to_string(),
            }
        };
        let t = Duration::from_secs(10);
        q.execute(
            "migrate-set-capabilities",
            Some(json!({"capabilities": [{"capability": "x-ignore-shared", "state": true}]})),
            t,
        )
        .await
        .map_err(op("migrate-set-capabilities"))?;
        // The device state is an inherited descriptor: desktops may not start programs.
        let uri = format!("fd:{}", fds::DEVICE_STATE);
        q.execute("migrate-incoming", Some(json!({ "uri": uri })), t)
            .await
            .map_err(op("migrate-incoming"))?;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let s = q.status().await.map_err(op("query-status"))?;
            match s.as_str() {
                "inmigrate" | "prelaunch" if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
                "paused" => {
                    q.execute("cont", None, t).await.map_err(op("cont"))?;
                    break;
                }
                "running" => break,
                other => {
                    let r = q.execute("query-migrate", None, t).await.ok();
                    return Err(QemuError::Operation {
                        desktop: spec.name.clone(),
                        what: "load the template's device state".into(),
                        reason: format!(
                            "VM state {other}; migration: {}",
                            r.map(|v| v.to_string()).unwrap_or_default()
                        ),
                    });
                }
            }
        }
        let running_ms = t0.elapsed().as_millis() as u64;
        let chardevs = self.check_chardevs(vm, spec).await?;
        let readiness = self.wait_ready(vm, spec, Duration::from_secs(30)).await?;
        Ok(json!({
            "method": "template_clone",
            "fresh_process": true,
            "pid": vm.pid,
            "accel": self.cfg.accel.as_str(),
            "template_key": template.key,
            "device_state_sha256": template.device_state_sha256,
            "new_overlay_on": template.base_disk.display().to_string(),
            "vmgenid": spec.vmgenid,
            "running_ms": running_ms,
            "start_steps_ms": vm.start_steps,
            "chardevs": chardevs,
            "readiness": readiness,
        }))
    }

    /// Cold-boots a desktop from the golden image on a new overlay (the repair path, and
    /// the start path when templates are not used).
    pub async fn cold_boot(&self, mut spec: VmSpec) -> Result<StartedVm, QemuError> {
        let t0 = Instant::now();
        kill_stale_now(&spec.run_dir);
        create_overlay(
            &self.cfg.qemu_img,
            &self.cfg.golden,
            backing::GOLDEN,
            &spec.disk,
        )
        .await?;
        spec.memory = Memory::Anonymous;
        spec.incoming = false;
        spec.base_disk = None;
        spec.device_state = None;
        if let Some(u) = self.cfg.shape.uefi() {
            spec.vars = Some(copy_vars(&u.vars_template, &spec.run_dir)?);
        }
        let vm = Vm::spawn(&spec, None, self.cgroups()).await?;
        let ready = match self.check_chardevs(&vm, &spec).await {
            Ok(chardevs) => self
                .wait_ready_as(&vm, &spec, self.boot_timeout(), Depth::Boot)
                .await
                .map(|r| (chardevs, r)),
            Err(e) => Err(e),
        };
        match ready {
            Ok((chardevs, readiness)) => {
                let proof = json!({
                    "method": "rebuild",
                    "fresh_process": true,
                    "pid": vm.pid,
                    "accel": self.cfg.accel.as_str(),
                    "new_overlay_on": self.cfg.golden.display().to_string(),
                    "vmgenid": spec.vmgenid,
                    "boot_ms": t0.elapsed().as_millis() as u64,
                    "chardevs": chardevs,
                    "readiness": readiness,
                });
                Ok(StartedVm { vm, proof })
            }
            Err(e) => {
                vm.kill().await;
                Err(e)
            }
        }
    }

    async fn run_job(
        &self,
        vm: &Vm,
        name: &str,
        command: &str,
        args: Value,
    ) -> Result<(), QemuError> {
        let q = &vm.qmp;
        let fail = |reason: String| QemuError::Operation {
            desktop: name.to_owned(),
            what: command.to_owned(),
            reason,
        };
        let job_id = format!("airlock-{}", uuid::Uuid::new_v4().simple());
        let mut a = args;
        if let Some(o) = a.as_object_mut() {
            o.insert("job-id".into(), job_id.clone().into());
        }
        q.execute(command, Some(a), Duration::from_secs(600))
            .await
            .map_err(|e| fail(e.to_string()))?;
        let deadline = Instant::now() + Duration::from_secs(600);
        loop {
            let jobs = q
                .execute("query-jobs", None, Duration::from_secs(10))
                .await
                .map_err(|e| fail(e.to_string()))?;
            let job = jobs
                .as_array()
                .and_then(|v| {
                    v.iter()
                        .find(|j| j.get("id").and_then(Value::as_str) == Some(&job_id))
                })
                .cloned();
            let Some(job) = job else {
                return Err(fail("the job vanished".into()));
            };
            if job.get("status").and_then(Value::as_str) == Some("concluded") {
                let _ = q
                    .execute(
                        "job-dismiss",
                        Some(json!({ "id": job_id })),
                        Duration::from_secs(10),
                    )
                    .await;
                return match job.get("error").and_then(Value::as_str) {
                    Some(err) => Err(fail(err.to_owned())),
                    None => Ok(()),
                };
            }
            if Instant::now() > deadline {
                return Err(fail("did not finish within 600 s".into()));
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Saves the running VM's state as the internal snapshot `airlock-clean` (snapshot
    /// restore mode takes it right after a verified clean boot).
    pub async fn snapshot_save(&self, vm: &Vm, name: &str) -> Result<(), QemuError> {
        // A previous snapshot with the same tag would make the save fail.
        let _ = self
            .run_job(
                vm,
                name,
                "snapshot-delete",
                json!({"tag": "airlock-clean", "devices": ["disk0"]}),
            )
            .await;
        self.run_job(
            vm,
            name,
            "snapshot-save",
            json!({"tag": "airlock-clean", "vmstate": "disk0", "devices": ["disk0"]}),
        )
        .await?;
        // snapshot-save leaves the VM running when it was running.
        if vm.qmp.status().await.ok().as_deref() == Some("paused") {
            let _ = vm.qmp.execute("cont", None, Duration::from_secs(10)).await;
        }
        Ok(())
    }

    /// Loads the internal snapshot `airlock-clean` in place and waits until the guest
    /// answers. RAM, devices and disk go back to the snapshot; the process and its VM
    /// generation id stay (see docs/threat-model.md).
    pub async fn snapshot_load(&self, vm: &Vm, spec: &VmSpec) -> Result<Value, QemuError> {
        let t0 = Instant::now();
        // A guest that powered off (`-no-shutdown`) leaves the VM in `shutdown`, which
        // nothing resumes but a system reset (to `prelaunch`); the load then replaces
        // everything the reset touched.
        let before = vm
            .qmp
            .status()
            .await
            .map_err(crate::qmp_error(&spec.name))?;
        if before == "shutdown" {
            vm.qmp
                .execute("system_reset", None, Duration::from_secs(10))
                .await
                .map_err(crate::qmp_error(&spec.name))?;
        }
        self.run_job(
            vm,
            &spec.name,
            "snapshot-load",
            json!({"tag": "airlock-clean", "vmstate": "disk0", "devices": ["disk0"]}),
        )
        .await?;
        // A failed load leaves the VM paused; a successful one resumes it if it ran (and
        // leaves it in `prelaunch` after the reset above).
        let status = vm
            .qmp
            .status()
            .await
            .map_err(crate::qmp_error(&spec.name))?;
        if status == "paused" || status == "prelaunch" {
            vm.qmp
                .execute("cont", None, Duration::from_secs(10))
                .await
                .map_err(crate::qmp_error(&spec.name))?;
        }
        let chardevs = self.check_chardevs(vm, spec).await?;
        let readiness = self.wait_ready(vm, spec, Duration::from_secs(30)).await?;
        Ok(json!({
            "method": "snapshot_restore",
            "fresh_process": false,
            "pid": vm.pid,
            "accel": self.cfg.accel.as_str(),
            "snapshot": "airlock-clean",
            "vm_state_before": before,
            "vmgenid": spec.vmgenid,
            "load_ms": t0.elapsed().as_millis() as u64,
            "chardevs": chardevs,
            "readiness": readiness,
        }))
    }

    /// Sets the display password for a new lease, valid until it is revoked; existing
    /// clients are disconnected.
    pub async fn set_display_password(
        &self,
        vm: &Vm,
        protocol: DisplayProtocol,
        password: &str,
    ) -> Result<(), QmpErrorWithContext> {
        set_password(vm, protocol, password).await?;
        // QEMU keeps an expiry apart from the password, and a revoke set it to "now": a
        // process that lives on (snapshot restore) would refuse every later password.
        expire_password(vm, protocol, "never").await
    }

    /// Revokes a lease's display password: replaces it with a random one nobody knows and
    /// expires it at once, disconnecting SPICE clients.
    pub async fn revoke_display_password(
        &self,
        vm: &Vm,
        protocol: DisplayProtocol,
    ) -> Result<(), QmpErrorWithContext> {
        let random = uuid::Uuid::new_v4().simple().to_string();
        set_password(vm, protocol, &random).await?;
        expire_password(vm, protocol, "now").await
    }
}

/// QMP `set_password`; SPICE clients are disconnected.
async fn set_password(
    vm: &Vm,
    protocol: DisplayProtocol,
    password: &str,
) -> Result<(), QmpErrorWithContext> {
    let connected = match protocol {
        DisplayProtocol::Spice => "disconnect",
        // QEMU's VNC server only supports "keep".
        DisplayProtocol::Vnc => "keep",
    };
    vm.qmp
        .execute(
            "set_password",
            Some(json!({"protocol": protocol.as_str(), "password": password, "connected": connected})),
            Duration::from_secs(5),
        )
        .await
        .map_err(|e| QmpErrorWithContext(format!("set_password: {e}")))?;
    Ok(())
}

/// QMP `expire_password` at `time` (`now`, `never`, ...).
async fn expire_password(
    vm: &Vm,
    protocol: DisplayProtocol,
    time: &str,
) -> Result<(), QmpErrorWithContext> {
    vm.qmp
        .execute(
            "expire_password",
            Some(json!({"protocol": protocol.as_str(), "time": time})),
            Duration::from_secs(5),
        )
        .await
        .map_err(|e| QmpErrorWithContext(format!("expire_password: {e}")))?;
    Ok(())
}

/// A display-password failure, with the command that failed.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct QmpErrorWithContext(pub String);

/// What a template-clone reset did with the desktop's previous process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RetireOld {
    /// Stopped at once, killed when the clone had started (or failed to).
    FrozenUntilReady,
    /// Killed before the clone started: the host was short of memory.
    KilledFirst,
}

impl RetireOld {
    fn as_str(self) -> &'static str {
        match self {
            RetireOld::FrozenUntilReady => "frozen_until_ready",
            RetireOld::KilledFirst => "killed_first",
        }
    }
}

/// A sealed memfd with the content of `path`: anyone may map it privately, nobody can
/// write it (`F_SEAL_WRITE`), grow or shrink it.
fn sealed_copy(path: &Path, name: &str) -> Result<OwnedFd, QemuError> {
    use rustix::fs::{MemfdFlags, SealFlags};
    let what = || format!("copy {} into a sealed memfd", path.display());
    let fd = rustix::fs::memfd_create(name, MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING)
        .map_err(|e| crate::io_error(what())(e.into()))?;
    let mut src = std::fs::File::open(path).map_err(crate::io_error(what()))?;
    let mut dst = std::fs::File::from(fd);
    std::io::copy(&mut src, &mut dst).map_err(crate::io_error(what()))?;
    let fd = OwnedFd::from(dst);
    rustix::fs::fcntl_add_seals(
        &fd,
        SealFlags::WRITE | SealFlags::GROW | SealFlags::SHRINK | SealFlags::SEAL,
    )
    .map_err(|e| crate::io_error(what())(e.into()))?;
    Ok(fd)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn driver(golden: &Path, cpu: Option<CpuShape>) -> Driver {
        Driver {
            cfg: DriverConfig {
                qemu: "qemu-system-x86_64".into(),
                qemu_img: "qemu-img".into(),
                accel: Accel::Kvm,
                machine: "q35".into(),
                cpu,
                memory_mib: 2048,
                vcpus: 2,
                boot: Boot::Disk,
                golden: golden.to_owned(),
                control_channel: false,
                agent_port: AgentPort::Isa,
                shape: MachineShape::default(),
                sandbox: true,
                readiness: Readiness::Delay(Duration::from_secs(1)),
                placement: None,
                confine: None,
                cgroup_instance: "airlock-test".into(),
                disk_cap_bytes: None,
                serial_log_bytes: 1 << 20,
                test_clone_pause: None,
            },
            qemu_version: "QEMU emulator version 7.2.22".into(),
            host: Host::detect(),
            ram: Arc::default(),
        }
    }

    #[test]
    fn the_template_key_covers_the_cpu_model_and_flags() {
        let d = tempfile::tempdir().unwrap();
        let golden = d.path().join("golden.qcow2");
        std::fs::write(&golden, b"golden").unwrap();
        let shape = |model: &str, hyperv| {
            Some(CpuShape {
                model: model.into(),
                hyperv,
            })
        };
        let keys: Vec<String> = [
            None,
            shape("Skylake-Client-v4", false),
            shape("Skylake-Client-v4", true),
            shape("EPYC-Rome", false),
        ]
        .into_iter()
        .map(|cpu| driver(&golden, cpu).template_key().unwrap())
        .collect();
        for (i, a) in keys.iter().enumerate() {
            for b in &keys[i + 1..] {
                assert_ne!(a, b, "{keys:?}");
            }
        }
        // Same shape, same key; the spec carries the shape to every process.
        let again = driver(&golden, shape("Skylake-Client-v4", true));
        assert_eq!(again.template_key().unwrap(), keys[2]);
        let spec = again.spec("desk-01", Some(0), Path::new("/d"), Path::new("/r"), None);
        assert_eq!(spec.cpu, again.cfg.cpu);
    }

    #[test]
    fn the_template_key_covers_the_machine_shape_and_the_agent() {
        use crate::qga_probe::QgaProbe;
        use crate::spec::{DiskBus, Firmware, Uefi, Vga};
        let d = tempfile::tempdir().unwrap();
        let golden = d.path().join("golden.qcow2");
        std::fs::write(&golden, b"golden").unwrap();
        let code = d.path().join("code.fd");
        let vars = d.path().join("vars.fd");
        std::fs::write(&code, b"code").unwrap();
        std::fs::write(&vars, b"vars").unwrap();
        let uefi = |secure_boot| {
            Firmware::Uefi(Uefi {
                code: code.clone(),
                vars_template: vars.clone(),
                secure_boot,
            })
        };
        let shapes = [
            MachineShape::default(),
            MachineShape {
                firmware: uefi(false),
                ..Default::default()
            },
            MachineShape {
                firmware: uefi(true),
                ..Default::default()
            },
            MachineShape {
                tpm: Some("/usr/bin/swtpm".into()),
                ..Default::default()
            },
            MachineShape {
                rtc_localtime: true,
                ..Default::default()
            },
            MachineShape {
                tablet: true,
                ..Default::default()
            },
            MachineShape {
                disk_bus: DiskBus::Sata,
                ..Default::default()
            },
            MachineShape {
                vga: Vga::Virtio,
                ..Default::default()
            },
        ];
        let mut keys: Vec<String> = shapes
            .iter()
            .map(|shape| {
                let mut dr = driver(&golden, None);
                dr.cfg.shape = shape.clone();
                dr.template_key().unwrap()
            })
            .collect();
        let mut qga = driver(&golden, None);
        qga.cfg.readiness = Readiness::Qga(QgaProbe {
            boot_timeout: Duration::from_secs(60),
            accept_exec: false,
            logon: None,
        });
        keys.push(qga.template_key().unwrap());
        for (i, a) in keys.iter().enumerate() {
            for b in &keys[i + 1..] {
                assert_ne!(a, b, "{keys:?}");
            }
        }
        // The default shape keeps the key desktops had before shapes existed: the same
        // as a driver that never heard of them.
        assert_eq!(keys[0], driver(&golden, None).template_key().unwrap());
        // A changed VARS template is a new template.
        std::fs::write(&vars, b"other vars").unwrap();
        let mut dr = driver(&golden, None);
        dr.cfg.shape = shapes[1].clone();
        assert_ne!(dr.template_key().unwrap(), keys[1]);
        // The qga pool's processes speak qga on the agent port.
        let spec = qga.spec("desk-01", Some(0), Path::new("/d"), Path::new("/r"), None);
        assert_eq!(spec.agent_protocol, crate::spec::AgentProtocol::Qga);
    }
}
