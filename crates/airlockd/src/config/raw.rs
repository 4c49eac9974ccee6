//! The TOML shape of `airlockd.toml`, with its defaults: parsed strictly (unknown keys
//! are errors); `super` validates it into a [`super::Config`].
use serde::Deserialize;
use std::path::PathBuf;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConfig {
    pub(super) server: RawServer,
    pub(super) admin: RawAdmin,
    #[serde(default)]
    pub(super) terminals: Vec<RawTerminal>,
    pub(super) pool: RawPool,
    #[serde(default)]
    pub(super) limits: RawLimits,
    #[serde(default)]
    pub(super) audit: RawAudit,
    #[serde(default)]
    pub(super) metrics: RawMetrics,
    #[serde(default)]
    pub(super) console: RawConsole,
    #[serde(default)]
    pub(super) export: super::export::RawExport,
}

/// `[console]`: the web console's accounts and settings.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConsole {
    /// Named accounts with argon2 password hashes (`airlockd hash-password`); the
    /// admin token logs in as the account `token` as well.
    #[serde(default)]
    pub(super) accounts: Vec<RawConsoleAccount>,
    #[serde(default = "default_session_minutes")]
    pub(super) session_minutes: u64,
    /// Clean desktops the pool should keep; fewer shows as short.
    #[serde(default = "default_min_clean")]
    pub(super) min_clean: usize,
}

impl Default for RawConsole {
    fn default() -> Self {
        Self {
            accounts: Vec::new(),
            session_minutes: default_session_minutes(),
            min_clean: default_min_clean(),
        }
    }
}

pub(super) fn default_session_minutes() -> u64 {
    480
}

pub(super) fn default_min_clean() -> usize {
    1
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConsoleAccount {
    pub(super) name: String,
    pub(super) password_hash: String,
}

/// `[metrics]`: who may read `/metrics` (open when neither key is set).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawMetrics {
    /// SHA-256 of the bearer token (`airlockd hash-token`).
    pub(super) token_sha256: Option<String>,
    /// A file holding the bearer token itself (the one Prometheus reads too).
    pub(super) token_file: Option<PathBuf>,
}

/// `[limits]`: what one terminal, or one client address, may ask of the broker.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLimits {
    #[serde(default = "default_leases_per_terminal")]
    pub(super) leases_per_terminal: u32,
    #[serde(default = "default_acquire_burst")]
    pub(super) acquire_burst: u32,
    #[serde(default = "default_acquires_per_minute")]
    pub(super) acquires_per_minute: u32,
    #[serde(default = "default_auth_failure_burst")]
    pub(super) auth_failure_burst: u32,
    #[serde(default = "default_auth_failures_per_minute")]
    pub(super) auth_failures_per_minute: u32,
}

impl Default for RawLimits {
    fn default() -> Self {
        Self {
            leases_per_terminal: default_leases_per_terminal(),
            acquire_burst: default_acquire_burst(),
            acquires_per_minute: default_acquires_per_minute(),
            auth_failure_burst: default_auth_failure_burst(),
            auth_failures_per_minute: default_auth_failures_per_minute(),
        }
    }
}

pub(super) fn default_leases_per_terminal() -> u32 {
    1
}
pub(super) fn default_acquire_burst() -> u32 {
    10
}
pub(super) fn default_acquires_per_minute() -> u32 {
    30
}
pub(super) fn default_auth_failure_burst() -> u32 {
    10
}
pub(super) fn default_auth_failures_per_minute() -> u32 {
    10
}

/// `[audit]`: where the audit chain's head is anchored outside the database.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAudit {
    #[serde(default = "default_anchor_file")]
    pub(super) anchor_file: PathBuf,
    #[serde(default = "default_anchor_interval")]
    pub(super) anchor_interval_s: u64,
    #[serde(default)]
    pub(super) syslog: bool,
    /// How often the whole chain is verified again (the incremental check runs every 2 s).
    #[serde(default = "default_full_verify_interval")]
    pub(super) full_verify_interval_s: u64,
    /// `[audit.forward]`: every record to a syslog server (`super::forward`).
    #[serde(default)]
    pub(super) forward: Option<super::forward::RawAuditForward>,
}

pub(super) fn default_full_verify_interval() -> u64 {
    3600
}

impl Default for RawAudit {
    fn default() -> Self {
        Self {
            anchor_file: default_anchor_file(),
            anchor_interval_s: default_anchor_interval(),
            syslog: false,
            full_verify_interval_s: default_full_verify_interval(),
            forward: None,
        }
    }
}

/// Outside the state directory on purpose: someone who can rewrite the database should
/// not find the anchor next to it (see docs/operations.md, "Audit anchoring").
pub const DEFAULT_ANCHOR_FILE: &str = "/var/log/airlock/audit-anchor.log";

pub(super) fn default_anchor_file() -> PathBuf {
    DEFAULT_ANCHOR_FILE.into()
}
pub(super) fn default_anchor_interval() -> u64 {
    60
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawServer {
    #[serde(default = "default_listen")]
    pub(super) listen: String,
    pub(super) tls_cert: Option<PathBuf>,
    pub(super) tls_key: Option<PathBuf>,
    pub(super) state_dir: PathBuf,
    #[serde(default = "default_body")]
    pub(super) max_body_bytes: usize,
}

pub(super) fn default_listen() -> String {
    "127.0.0.1:7480".into()
}

pub(super) fn default_body() -> usize {
    16 * 1024
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAdmin {
    pub(super) token_sha256: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTerminal {
    pub(super) name: String,
    pub(super) token_sha256: String,
}

fn default_agent_port() -> String {
    "isa".into()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPool {
    pub(super) size: usize,
    #[serde(default = "default_prefix")]
    pub(super) name_prefix: String,
    #[serde(default = "default_accel")]
    pub(super) accel: String,
    #[serde(default = "default_memory")]
    pub(super) memory_mib: u64,
    #[serde(default = "default_vcpus")]
    pub(super) vcpus: u32,
    #[serde(default = "default_machine")]
    pub(super) machine: String,
    /// A named CPU model the host QEMU knows (`None`: QEMU's default, `qemu64`).
    pub(super) cpu_model: Option<String>,
    /// Hyper-V enlightenments (KVM only; needs `cpu_model`).
    #[serde(default)]
    pub(super) hyperv: bool,
    #[serde(default = "default_reset")]
    pub(super) reset: String,
    #[serde(default = "default_heartbeat")]
    pub(super) heartbeat_timeout_s: u64,
    #[serde(default = "default_qemu")]
    pub(super) qemu: PathBuf,
    #[serde(default = "default_qemu_img")]
    pub(super) qemu_img: PathBuf,
    #[serde(default = "yes")]
    pub(super) sandbox: bool,
    #[serde(default)]
    pub(super) test_control_channel: bool,
    /// The guest agent port's device: `isa` (COM1, the default) or `virtio`.
    #[serde(default = "default_agent_port")]
    pub(super) agent_port: String,
    pub(super) guest: RawGuest,
    #[serde(default)]
    pub(super) readiness: RawReadiness,
    #[serde(default)]
    pub(super) confine: RawConfine,
    #[serde(default = "default_disk_cap")]
    pub(super) disk_cap_mib: u64,
    #[serde(default = "default_serial_log")]
    pub(super) serial_log_kib: u64,
    /// Tests only: see `DriverConfig::test_clone_pause`.
    pub(super) test_clone_pause_ms: Option<u64>,
    pub(super) display: Option<RawDisplay>,
    pub(super) cpus: Option<RawCpus>,
    #[serde(default)]
    pub(super) queue: RawQueue,
    /// `[pool.hardware]`: firmware, TPM, clock, pointer, disk bus, graphics card.
    #[serde(default)]
    pub(super) hardware: super::hardware::RawHardware,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawQueue {
    #[serde(default = "default_hold")]
    pub(super) hold_s: u64,
    #[serde(default = "default_poll_interval")]
    pub(super) poll_interval_s: u64,
    pub(super) ticket_timeout_s: Option<u64>,
}

impl Default for RawQueue {
    fn default() -> Self {
        Self {
            hold_s: default_hold(),
            poll_interval_s: default_poll_interval(),
            ticket_timeout_s: None,
        }
    }
}

pub(super) fn default_hold() -> u64 {
    15
}
pub(super) fn default_poll_interval() -> u64 {
    2
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCpus {
    pub(super) desktops: String,
    pub(super) housekeeping: Option<String>,
}

pub(super) fn default_prefix() -> String {
    "desk".into()
}
pub(super) fn default_accel() -> String {
    "kvm".into()
}
pub(super) fn default_memory() -> u64 {
    2048
}
pub(super) fn default_vcpus() -> u32 {
    2
}
pub(super) fn default_machine() -> String {
    "q35".into()
}
pub(super) fn default_reset() -> String {
    "template_clone".into()
}
pub(super) fn default_heartbeat() -> u64 {
    30
}
pub(super) fn default_qemu() -> PathBuf {
    "qemu-system-x86_64".into()
}
pub(super) fn default_qemu_img() -> PathBuf {
    "qemu-img".into()
}
pub(super) fn yes() -> bool {
    true
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawGuest {
    pub(super) disk: PathBuf,
    pub(super) kernel: Option<PathBuf>,
    pub(super) initrd: Option<PathBuf>,
    pub(super) append: Option<String>,
}

/// `[pool.confine]`: each desktop's QEMU as its own uid, with cgroup limits.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConfine {
    #[serde(default = "yes")]
    pub(super) enabled: bool,
    #[serde(default = "default_uid_base")]
    pub(super) uid_base: u32,
    #[serde(default = "default_uid_count")]
    pub(super) uid_count: u32,
    #[serde(default = "default_memory_overhead")]
    pub(super) memory_overhead_mib: u64,
    #[serde(default = "default_pids_max")]
    pub(super) pids_max: u32,
    #[serde(default = "default_cpu_weight")]
    pub(super) cpu_weight: u32,
}

impl Default for RawConfine {
    fn default() -> Self {
        Self {
            enabled: true,
            uid_base: default_uid_base(),
            uid_count: default_uid_count(),
            memory_overhead_mib: default_memory_overhead(),
            pids_max: default_pids_max(),
            cpu_weight: default_cpu_weight(),
        }
    }
}

/// Far from login accounts (1000–59999), Debian's and systemd's reserved ranges
/// (60000–65535) and the usual container sub-uid ranges (100000 + 65536·n).
pub(super) fn default_uid_base() -> u32 {
    3_800_000_000
}
/// A session may write this much to its disk overlay (images copied from a disc, the
/// viewer's caches) before it is ended `quota` and reset.
pub(super) fn default_disk_cap() -> u64 {
    8192
}
/// Per serial log file; a port keeps two (the current and the rotated one).
pub(super) fn default_serial_log() -> u64 {
    1024
}
pub(super) fn default_uid_count() -> u32 {
    1000
}
/// QEMU's own memory beside guest RAM (code, device models, TCG's translation cache).
pub(super) fn default_memory_overhead() -> u64 {
    512
}
pub(super) fn default_pids_max() -> u32 {
    512
}
pub(super) fn default_cpu_weight() -> u32 {
    100
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawReadiness {
    #[serde(default = "default_probe")]
    pub(super) probe: String,
    #[serde(default = "default_ready_timeout")]
    pub(super) timeout_s: u64,
    pub(super) delay_s: Option<u64>,
    #[serde(default = "default_idle_probe")]
    pub(super) idle_probe_s: u64,
    /// `probe = "qga"`: accept a guest agent that runs programs or touches files.
    pub(super) accept_exec: Option<bool>,
    /// `probe = "qga"`: the template of a desktop that logs on waits for it.
    pub(super) logon: Option<RawLogon>,
}

impl Default for RawReadiness {
    fn default() -> Self {
        Self {
            probe: default_probe(),
            timeout_s: default_ready_timeout(),
            delay_s: None,
            idle_probe_s: default_idle_probe(),
            accept_exec: None,
            logon: None,
        }
    }
}

/// `[pool.readiness.logon]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLogon {
    pub(super) user: String,
    #[serde(default = "default_logon_quiet")]
    pub(super) quiet_s: u64,
    #[serde(default = "default_logon_busy")]
    pub(super) busy_percent: u32,
    #[serde(default = "default_logon_timeout")]
    pub(super) timeout_s: u64,
}

pub(super) fn default_logon_quiet() -> u64 {
    20
}
pub(super) fn default_logon_busy() -> u32 {
    5
}
pub(super) fn default_logon_timeout() -> u64 {
    900
}

pub(super) fn default_probe() -> String {
    "serial".into()
}
/// Idle clean desktops are pinged this often (0: never).
pub(super) fn default_idle_probe() -> u64 {
    60
}
pub(super) fn default_ready_timeout() -> u64 {
    300
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDisplay {
    #[serde(default = "default_protocol")]
    pub(super) protocol: String,
    #[serde(default = "default_display_listen")]
    pub(super) listen: String,
    pub(super) advertise_host: Option<String>,
    pub(super) port_base: u16,
    /// The certificate subject display clients check (SPICE `host-subject`); TLS only.
    pub(super) host_subject: Option<String>,
    /// A plaintext display on an address other than loopback (no server TLS).
    #[serde(default)]
    pub(super) allow_plaintext: bool,
    #[serde(default = "default_grace")]
    pub(super) grace_s: u64,
    #[serde(default = "default_display_connections")]
    pub(super) max_connections: usize,
    #[serde(default = "default_display_idle")]
    pub(super) idle_timeout_s: u64,
}

pub(super) fn default_grace() -> u64 {
    30
}
/// A SPICE client opens one connection per channel (main, display, inputs, cursor,
/// sound, ...): about eight, and a reconnecting one briefly more.
pub(super) fn default_display_connections() -> usize {
    16
}
pub(super) fn default_display_idle() -> u64 {
    3600
}

pub(super) fn default_protocol() -> String {
    "spice".into()
}
pub(super) fn default_display_listen() -> String {
    "127.0.0.1".into()
}
