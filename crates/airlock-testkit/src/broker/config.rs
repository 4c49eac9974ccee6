//! The one typed configuration of a test broker, written to TOML in one place
//! ([`BrokerConfig::to_toml`]). Tests and benchmarks start from
//! [`BrokerConfig::new`] and change what they measure.
use crate::artifacts::{GuestManifest, QgaGuestManifest};
use anyhow::{Context, Result};
use serde::Serialize;
use serde_with::skip_serializing_none;
use std::path::{Path, PathBuf};

/// The first test terminal's token (a test secret, nothing else); its name is `term-1`.
pub const TERMINAL_TOKEN: &str = "test-terminal-token-1";
/// The second test terminal's token; its name is `term-2`.
pub const TERMINAL2_TOKEN: &str = "test-terminal-token-2";
/// The test broker's admin token.
pub const ADMIN_TOKEN: &str = "test-admin-token";

/// A terminal the broker knows.
#[derive(Debug, Clone)]
pub struct TerminalEntry {
    pub name: String,
    /// In clear: the config gets its SHA-256.
    pub token: String,
}

impl TerminalEntry {
    /// Test terminal `n`: `term-n` with the token `test-terminal-token-n` (so
    /// `numbered(1)` and `numbered(2)` are the default config's two terminals).
    pub fn numbered(n: usize) -> TerminalEntry {
        TerminalEntry {
            name: format!("term-{n}"),
            token: format!("test-terminal-token-{n}"),
        }
    }
}

/// `[limits]` of the broker: `None` leaves a key out (the broker's default).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Limits {
    pub leases_per_terminal: Option<u32>,
    pub acquire_burst: Option<u32>,
    pub acquires_per_minute: Option<u32>,
    pub auth_failure_burst: Option<u32>,
    pub auth_failures_per_minute: Option<u32>,
}

impl Limits {
    /// What the kit's brokers run with unless a test says otherwise: each test terminal
    /// stands for many terminals (tests lease several desktops from `term-1` and send
    /// hundreds of requests at once), so the per-terminal and per-address limits are far
    /// out of the way. Tests of the limits start from [`Limits::default`] (the broker's
    /// own defaults) instead.
    pub fn generous() -> Limits {
        Limits {
            leases_per_terminal: Some(500),
            acquire_burst: Some(10_000),
            acquires_per_minute: Some(600_000),
            auth_failure_burst: Some(10_000),
            auth_failures_per_minute: Some(600_000),
        }
    }
}

/// TLS for the broker's listener.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// The CA the kit's HTTP client trusts.
    pub ca: PathBuf,
}

/// What a test broker runs with (the parts of `airlockd.toml` tests vary).
#[derive(Debug, Clone)]
pub struct BrokerConfig {
    pub size: usize,
    /// `pool.reset`: `template_clone`, `snapshot_restore` or `rebuild`.
    pub reset: String,
    pub heartbeat_timeout_s: u64,
    pub memory_mib: u64,
    pub accel: String,
    /// `pool.guest.disk`.
    pub disk: PathBuf,
    pub kernel: PathBuf,
    pub initrd: PathBuf,
    /// The guest's kernel command line.
    pub append: String,
    /// Boot the disk's own boot loader (`pool.guest` without kernel and initrd: a UEFI
    /// disk) instead of the kernel.
    pub boot_from_disk: bool,
    /// `[pool.hardware]` (`None`: left out, the broker's defaults).
    pub hardware: Option<Hardware>,
    /// `pool.readiness.probe`.
    pub probe: String,
    /// `pool.readiness.timeout_s`.
    pub ready_timeout_s: u64,
    /// `pool.readiness.accept_exec` (`probe = "qga"` only; `None`: left out).
    pub accept_exec: Option<bool>,
    /// `[pool.readiness.logon]` (`probe = "qga"` only; `None`: left out).
    pub logon: Option<Logon>,
    /// `pool.display.protocol` (`spice` or `vnc`), or no display.
    pub display: Option<String>,
    /// `pool.display.grace_s` (`None`: the broker's default).
    pub display_grace_s: Option<u64>,
    /// `pool.display.host_subject` (with `tls` only).
    pub display_host_subject: Option<String>,
    /// `pool.display.max_connections` and `idle_timeout_s` (`None`: the broker's
    /// defaults).
    pub display_max_connections: Option<usize>,
    pub display_idle_timeout_s: Option<u64>,
    /// `[pool.cpus]`: (desktops, housekeeping).
    pub cpus: Option<(String, Option<String>)>,
    pub tls: Option<TlsFiles>,
    pub terminals: Vec<TerminalEntry>,
    pub admin_token: String,
    /// `pool.test_control_channel`: desktops get the control shell on ttyS1.
    pub test_control_channel: bool,
    /// `pool.agent_port` (`None`: the broker's default, COM1).
    pub agent_port: Option<String>,
    /// `AIRLOCK_LOG` of the broker process.
    pub log_filter: String,
    /// `[limits]` ([`Limits::generous`] by default).
    pub limits: Limits,
    /// `audit.anchor_interval_s` (`None`: the broker's default).
    pub anchor_interval_s: Option<u64>,
    /// `[audit.forward]`: audit records to a syslog server (`None`: not forwarded).
    pub audit_forward: Option<AuditForward>,
    /// `pool.disk_cap_mib` (`None`: the broker's default).
    pub disk_cap_mib: Option<u64>,
    /// `pool.serial_log_kib` (`None`: the broker's default).
    pub serial_log_kib: Option<u64>,
    /// `pool.readiness.idle_probe_s` (`None`: the broker's default).
    pub idle_probe_s: Option<u64>,
    /// `pool.test_clone_pause_ms`: a template clone waits this long before it kills
    /// the desktop's frozen old process.
    pub test_clone_pause_ms: Option<u64>,
    /// `pool.confine.enabled`: each desktop's QEMU as its own uid in its own cgroups
    /// (on by default, as the broker's own default; `false` writes
    /// `[pool.confine] enabled = false`, the unconfined baseline of `bench broker`).
    pub confine: bool,
    /// `[metrics]`: the bearer token `/metrics` asks for (`None`: open).
    pub metrics_token: Option<String>,
    /// `[[console.accounts]]`: web console accounts, as (name, argon2 password hash).
    pub console_accounts: Vec<(String, String)>,
    /// `[export]` (`None`: the broker's defaults: captures, no PACS, no worklist).
    pub export: Option<Export>,
}

/// `[export]` of a test broker; `None` leaves a key out (the broker's default).
#[skip_serializing_none]
#[derive(Debug, Clone, Default, Serialize)]
pub struct Export {
    pub retention_hours: Option<u64>,
    pub captures_per_minute: Option<u32>,
    pub uid_root: Option<String>,
    /// `utf8` or `iso2022-ir87`.
    pub charset: Option<String>,
    pub station: Option<String>,
    pub calling_ae: Option<String>,
    pub pacs: Option<DicomPeer>,
    pub worklist: Option<DicomPeer>,
}

/// `[export.pacs]` or `[export.worklist]`.
#[skip_serializing_none]
#[derive(Debug, Clone, Serialize)]
pub struct DicomPeer {
    pub host: String,
    pub port: u16,
    pub called_ae: String,
    pub timeout_s: Option<u64>,
}

impl DicomPeer {
    /// A peer on this machine.
    pub fn local(port: u16, called_ae: &str) -> DicomPeer {
        DicomPeer {
            host: "127.0.0.1".into(),
            port,
            called_ae: called_ae.into(),
            timeout_s: Some(10),
        }
    }
}

impl BrokerConfig {
    /// Two desktops of the demo guest under TCG, 256 MiB each, template-clone resets,
    /// SPICE, serial readiness, a 60 s heartbeat timeout, the control channel on, and
    /// the terminals `term-1` and `term-2`.
    pub fn new(guest: &GuestManifest) -> BrokerConfig {
        BrokerConfig {
            size: 2,
            reset: "template_clone".into(),
            heartbeat_timeout_s: 60,
            memory_mib: 256,
            accel: "tcg".into(),
            disk: guest.golden_disk.clone(),
            kernel: guest.kernel.clone(),
            initrd: guest.initrd.clone(),
            append: guest.append.clone(),
            boot_from_disk: false,
            hardware: None,
            probe: "serial".into(),
            ready_timeout_s: 180,
            accept_exec: None,
            logon: None,
            display: Some("spice".into()),
            display_grace_s: None,
            display_host_subject: None,
            display_max_connections: None,
            display_idle_timeout_s: None,
            cpus: None,
            tls: None,
            terminals: vec![TerminalEntry::numbered(1), TerminalEntry::numbered(2)],
            admin_token: ADMIN_TOKEN.into(),
            test_control_channel: true,
            agent_port: None,
            log_filter: "info,airlock_qemu=debug".into(),
            limits: Limits::generous(),
            anchor_interval_s: None,
            audit_forward: None,
            disk_cap_mib: None,
            serial_log_kib: None,
            idle_probe_s: None,
            test_clone_pause_ms: None,
            confine: true,
            metrics_token: None,
            console_accounts: Vec::new(),
            export: None,
        }
    }

    /// This pool as a Windows-shaped one: the qga test image's UEFI disk booted by OVMF
    /// with Secure Boot enforcing, a swtpm TPM per desktop, a USB tablet, and the stock
    /// QEMU guest agent as the readiness probe. Its RAM is the caller's: the Debian
    /// kernel needs at least 384 MiB after OVMF and GRUB.
    pub fn uefi_tpm(self, qga: &QgaGuestManifest) -> BrokerConfig {
        BrokerConfig {
            disk: qga.uefi_disk.clone(),
            boot_from_disk: true,
            probe: "qga".into(),
            hardware: Some(Hardware {
                firmware: Some("uefi".into()),
                secure_boot: Some(true),
                ovmf_code: Some(qga.ovmf_code.clone()),
                ovmf_vars: Some(qga.ovmf_vars.clone()),
                tpm: Some(true),
                pointer: Some("tablet".into()),
                ..Hardware::default()
            }),
            ..self
        }
    }

    /// The pool of an `airlockd.toml` (the demo's, `examples/demo.toml`): its size,
    /// accelerator, memory, reset method, heartbeat timeout, kernel command line,
    /// readiness, display protocol and grace time, CPU placement and control channel, with
    /// the kit's guest files, tokens and log filter. The bool says whether the file
    /// serves TLS (`server.tls_cert`); its certificate files are the site's, so a test
    /// makes its own ([`crate::tls::site_ca`]) and sets [`BrokerConfig::tls`].
    pub fn from_file(guest: &GuestManifest, path: &Path) -> Result<(BrokerConfig, bool)> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let v: toml::Value =
            toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
        let get = |keys: &[&str]| -> Option<&toml::Value> {
            keys.iter().try_fold(&v, |at, k| at.get(*k))
        };
        let num = |keys: &[&str]| -> Result<Option<u64>> {
            get(keys)
                .map(|x| {
                    x.as_integer()
                        .and_then(|n| u64::try_from(n).ok())
                        .with_context(|| {
                            format!("{} in {} is not a count", keys.join("."), path.display())
                        })
                })
                .transpose()
        };
        let text_of = |keys: &[&str]| -> Option<String> {
            get(keys).and_then(|x| x.as_str()).map(str::to_string)
        };
        let mut c = BrokerConfig::new(guest);
        if let Some(n) = num(&["pool", "size"])? {
            c.size = usize::try_from(n)?;
        }
        if let Some(n) = num(&["pool", "memory_mib"])? {
            c.memory_mib = n;
        }
        if let Some(n) = num(&["pool", "heartbeat_timeout_s"])? {
            c.heartbeat_timeout_s = n;
        }
        if let Some(n) = num(&["pool", "readiness", "timeout_s"])? {
            c.ready_timeout_s = n;
        }
        c.display_grace_s = num(&["pool", "display", "grace_s"])?;
        c.accel = text_of(&["pool", "accel"]).unwrap_or(c.accel);
        c.reset = text_of(&["pool", "reset"]).unwrap_or(c.reset);
        c.append = text_of(&["pool", "guest", "append"]).unwrap_or(c.append);
        c.probe = text_of(&["pool", "readiness", "probe"]).unwrap_or(c.probe);
        c.display = text_of(&["pool", "display", "protocol"]);
        c.display_host_subject = text_of(&["pool", "display", "host_subject"]);
        c.cpus = text_of(&["pool", "cpus", "desktops"])
            .map(|d| (d, text_of(&["pool", "cpus", "housekeeping"])));
        c.test_control_channel = get(&["pool", "test_control_channel"])
            .and_then(toml::Value::as_bool)
            .unwrap_or(false);
        let tls = get(&["server", "tls_cert"]).is_some();
        Ok((c, tls))
    }

    /// The audit anchor file of a broker whose state directory is `state_dir`: next to
    /// it, outside it.
    pub fn anchor_file(state_dir: &Path) -> PathBuf {
        state_dir.with_file_name("audit-anchor.log")
    }

    /// The TOML text, with the state directory and the first display port.
    pub fn to_toml(&self, state_dir: &Path, display_port_base: u16) -> Result<String> {
        let l = &self.limits;
        let file = File {
            server: Server {
                listen: "127.0.0.1:0",
                state_dir,
                tls_cert: self.tls.as_ref().map(|t| t.cert.as_path()),
                tls_key: self.tls.as_ref().map(|t| t.key.as_path()),
            },
            admin: Token {
                name: None,
                token_sha256: crate::sha256_hex(self.admin_token.as_bytes()),
            },
            terminals: self
                .terminals
                .iter()
                .map(|t| Token {
                    name: Some(&t.name),
                    token_sha256: crate::sha256_hex(t.token.as_bytes()),
                })
                .collect(),
            pool: Pool {
                size: self.size,
                accel: &self.accel,
                memory_mib: self.memory_mib,
                vcpus: 1,
                reset: &self.reset,
                heartbeat_timeout_s: self.heartbeat_timeout_s,
                test_control_channel: self.test_control_channel,
                agent_port: self.agent_port.as_deref(),
                disk_cap_mib: self.disk_cap_mib,
                serial_log_kib: self.serial_log_kib,
                test_clone_pause_ms: self.test_clone_pause_ms,
                guest: Guest {
                    disk: &self.disk,
                    kernel: (!self.boot_from_disk).then_some(self.kernel.as_path()),
                    initrd: (!self.boot_from_disk).then_some(self.initrd.as_path()),
                    append: (!self.boot_from_disk).then_some(self.append.as_str()),
                },
                hardware: self.hardware.as_ref(),
                readiness: Readiness {
                    probe: &self.probe,
                    timeout_s: self.ready_timeout_s,
                    idle_probe_s: self.idle_probe_s,
                    accept_exec: self.accept_exec,
                    logon: self.logon.as_ref(),
                },
                display: self.display.as_deref().map(|protocol| Display {
                    protocol,
                    listen: "127.0.0.1",
                    port_base: display_port_base,
                    grace_s: self.display_grace_s,
                    host_subject: self.display_host_subject.as_deref(),
                    max_connections: self.display_max_connections,
                    idle_timeout_s: self.display_idle_timeout_s,
                }),
                cpus: self.cpus.as_ref().map(|(desktops, housekeeping)| Cpus {
                    desktops,
                    housekeeping: housekeeping.as_deref(),
                }),
                // On: the section is left out (the broker's default).
                confine: (!self.confine).then_some(Confine { enabled: false }),
            },
            limits: LimitsSection {
                leases_per_terminal: l.leases_per_terminal,
                acquire_burst: l.acquire_burst,
                acquires_per_minute: l.acquires_per_minute,
                auth_failure_burst: l.auth_failure_burst,
                auth_failures_per_minute: l.auth_failures_per_minute,
            },
            audit: Audit {
                anchor_file: Self::anchor_file(state_dir),
                anchor_interval_s: self.anchor_interval_s,
                forward: self.audit_forward.as_ref(),
            },
            metrics: self.metrics_token.as_ref().map(|t| MetricsSection {
                token_sha256: crate::sha256_hex(t.as_bytes()),
            }),
            console: (!self.console_accounts.is_empty()).then(|| ConsoleSection {
                accounts: self
                    .console_accounts
                    .iter()
                    .map(|(name, password_hash)| ConsoleAccount {
                        name,
                        password_hash,
                    })
                    .collect(),
            }),
            export: self.export.as_ref(),
        };
        toml::to_string(&file).context("writing the broker's config as TOML")
    }
}

#[derive(Serialize)]
struct File<'a> {
    server: Server<'a>,
    admin: Token<'a>,
    terminals: Vec<Token<'a>>,
    pool: Pool<'a>,
    limits: LimitsSection,
    audit: Audit<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    metrics: Option<MetricsSection>,
    #[serde(skip_serializing_if = "Option::is_none")]
    console: Option<ConsoleSection<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    export: Option<&'a Export>,
}

#[derive(Serialize)]
struct ConsoleSection<'a> {
    accounts: Vec<ConsoleAccount<'a>>,
}

#[derive(Serialize)]
struct ConsoleAccount<'a> {
    name: &'a str,
    password_hash: &'a str,
}

#[derive(Serialize)]
struct MetricsSection {
    token_sha256: String,
}

#[skip_serializing_none]
#[derive(Serialize)]
struct LimitsSection {
    leases_per_terminal: Option<u32>,
    acquire_burst: Option<u32>,
    acquires_per_minute: Option<u32>,
    auth_failure_burst: Option<u32>,
    auth_failures_per_minute: Option<u32>,
}

#[skip_serializing_none]
#[derive(Serialize)]
struct Audit<'a> {
    anchor_file: PathBuf,
    anchor_interval_s: Option<u64>,
    forward: Option<&'a AuditForward>,
}

/// `[audit.forward]` of a test broker (see docs/operations.md, "Audit forwarding
/// (syslog)"); `None` leaves a key out (the broker's default).
#[skip_serializing_none]
#[derive(Debug, Clone, Default, Serialize)]
pub struct AuditForward {
    /// `host:port` of the syslog server.
    pub address: String,
    /// `tcp` or `tls`.
    pub transport: String,
    pub ca_file: Option<PathBuf>,
    pub client_cert: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
    pub server_name: Option<String>,
    pub hostname: Option<String>,
    pub sd_id: Option<String>,
    pub retry_max_s: Option<u64>,
    pub problem_after_s: Option<u64>,
}

#[skip_serializing_none]
#[derive(Serialize)]
struct Server<'a> {
    listen: &'a str,
    state_dir: &'a Path,
    tls_cert: Option<&'a Path>,
    tls_key: Option<&'a Path>,
}

#[skip_serializing_none]
#[derive(Serialize)]
struct Token<'a> {
    name: Option<&'a str>,
    token_sha256: String,
}

#[skip_serializing_none]
#[derive(Serialize)]
struct Pool<'a> {
    size: usize,
    accel: &'a str,
    memory_mib: u64,
    vcpus: u32,
    reset: &'a str,
    heartbeat_timeout_s: u64,
    test_control_channel: bool,
    agent_port: Option<&'a str>,
    disk_cap_mib: Option<u64>,
    serial_log_kib: Option<u64>,
    test_clone_pause_ms: Option<u64>,
    guest: Guest<'a>,
    hardware: Option<&'a Hardware>,
    readiness: Readiness<'a>,
    display: Option<Display<'a>>,
    cpus: Option<Cpus<'a>>,
    confine: Option<Confine>,
}

#[derive(Serialize)]
struct Confine {
    enabled: bool,
}

#[skip_serializing_none]
#[derive(Serialize)]
struct Guest<'a> {
    disk: &'a Path,
    kernel: Option<&'a Path>,
    initrd: Option<&'a Path>,
    append: Option<&'a str>,
}

/// `[pool.hardware]` of a test broker; `None` leaves a key out (the broker's default).
#[skip_serializing_none]
#[derive(Debug, Clone, Default, Serialize)]
pub struct Hardware {
    /// `bios` or `uefi`.
    pub firmware: Option<String>,
    pub secure_boot: Option<bool>,
    pub ovmf_code: Option<PathBuf>,
    pub ovmf_vars: Option<PathBuf>,
    pub tpm: Option<bool>,
    pub rtc: Option<String>,
    pub pointer: Option<String>,
    pub disk_bus: Option<String>,
    pub vga: Option<String>,
}

#[skip_serializing_none]
#[derive(Serialize)]
struct Readiness<'a> {
    probe: &'a str,
    timeout_s: u64,
    idle_probe_s: Option<u64>,
    accept_exec: Option<bool>,
    logon: Option<&'a Logon>,
}

/// `[pool.readiness.logon]` of a test broker.
#[skip_serializing_none]
#[derive(Debug, Clone, Serialize)]
pub struct Logon {
    pub user: String,
    pub quiet_s: Option<u64>,
    pub busy_percent: Option<u32>,
    pub timeout_s: Option<u64>,
}

#[skip_serializing_none]
#[derive(Serialize)]
struct Display<'a> {
    protocol: &'a str,
    listen: &'a str,
    port_base: u16,
    grace_s: Option<u64>,
    host_subject: Option<&'a str>,
    max_connections: Option<usize>,
    idle_timeout_s: Option<u64>,
}

#[skip_serializing_none]
#[derive(Serialize)]
struct Cpus<'a> {
    desktops: &'a str,
    housekeeping: Option<&'a str>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_the_sections_airlockd_reads() {
        let g = GuestManifest {
            kernel: "/g/vmlinuz".into(),
            initrd: "/g/initrd.img".into(),
            golden_disk: "/g/golden \"q\".qcow2".into(),
            append: "console=ttyS0 quiet".into(),
            kernel_version: String::new(),
            kernel_package_version: String::new(),
            busybox_version: String::new(),
            init_sha256: String::new(),
            viewer_sha256: String::new(),
            viewer_source_sha256: String::new(),
        };
        let mut c = BrokerConfig::new(&g);
        c.cpus = Some(("0".into(), None));
        c.display_grace_s = Some(3);
        let text = c.to_toml(Path::new("/s"), 30000).unwrap();
        let v: toml::Value = toml::from_str(&text).unwrap();
        assert_eq!(v["server"]["state_dir"].as_str(), Some("/s"));
        assert!(v["server"].get("tls_cert").is_none());
        assert_eq!(v["terminals"][1]["name"].as_str(), Some("term-2"));
        assert_eq!(
            v["terminals"][1]["token_sha256"].as_str(),
            Some(crate::sha256_hex(TERMINAL2_TOKEN.as_bytes()).as_str())
        );
        assert_eq!(TerminalEntry::numbered(1).token, TERMINAL_TOKEN);
        assert_eq!(v["admin"]["token_sha256"].as_str().map(str::len), Some(64));
        assert_eq!(
            v["pool"]["guest"]["disk"].as_str(),
            Some("/g/golden \"q\".qcow2")
        );
        assert_eq!(v["pool"]["display"]["port_base"].as_integer(), Some(30000));
        assert_eq!(v["pool"]["display"]["grace_s"].as_integer(), Some(3));
        assert!(v["pool"]["display"].get("host_subject").is_none());
        assert_eq!(v["pool"]["cpus"]["desktops"].as_str(), Some("0"));
        assert!(v["pool"]["cpus"].get("housekeeping").is_none());
        assert_eq!(
            v["audit"]["anchor_file"].as_str(),
            Some("/audit-anchor.log")
        );
        assert_eq!(v["limits"]["leases_per_terminal"].as_integer(), Some(500));
        c.limits = Limits::default();
        let v: toml::Value = toml::from_str(&c.to_toml(Path::new("/s"), 1).unwrap()).unwrap();
        assert!(v["limits"].as_table().unwrap().is_empty());
        assert!(v["pool"].get("confine").is_none());
        c.confine = false;
        let v: toml::Value = toml::from_str(&c.to_toml(Path::new("/s"), 1).unwrap()).unwrap();
        assert_eq!(v["pool"]["confine"]["enabled"].as_bool(), Some(false));
    }

    #[test]
    fn reads_the_pool_of_the_demo_config() {
        let g = GuestManifest {
            kernel: "/g/vmlinuz".into(),
            initrd: "/g/initrd.img".into(),
            golden_disk: "/g/golden.qcow2".into(),
            append: "console=ttyS0".into(),
            kernel_version: String::new(),
            kernel_package_version: String::new(),
            busybox_version: String::new(),
            init_sha256: String::new(),
            viewer_sha256: String::new(),
            viewer_source_sha256: String::new(),
        };
        let demo = crate::artifacts::workspace_root().join("examples/demo.toml");
        let (c, tls) = BrokerConfig::from_file(&g, &demo).unwrap();
        assert_eq!(
            (c.size, c.memory_mib, c.reset.as_str()),
            (2, 256, "template_clone")
        );
        assert_eq!(c.display.as_deref(), Some("spice"));
        assert_eq!(c.disk, g.golden_disk);
        assert!(c.append.contains("console=tty0"), "{}", c.append);
        assert!(!c.test_control_channel && !tls);

        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("a.toml");
        std::fs::write(
            &f,
            "[server]\ntls_cert = \"c.pem\"\n[pool]\nsize = 1\n[pool.cpus]\ndesktops = \"1\"\n",
        )
        .unwrap();
        let (c, tls) = BrokerConfig::from_file(&g, &f).unwrap();
        assert!(tls && c.size == 1 && c.display.is_none());
        assert_eq!(c.cpus, Some(("1".to_string(), None)));
    }
}
