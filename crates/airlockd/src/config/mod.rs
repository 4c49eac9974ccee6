//! The broker's TOML configuration: parsed strictly (unknown keys are errors) and
//! validated, with every error naming the key and the fix.
use airlock_core::rate::Limit;
use airlock_core::{CpuError, CpuList, CpuPlacement, DesktopId, ResetMethod, TerminalName};
use airlock_pool::{DisplayConfig, DisplayTls, PoolConfig, QueueConfig};
use airlock_qemu::qga_probe::{Logon, QgaProbe};
use airlock_qemu::{Accel, Boot, DisplayProtocol, DriverConfig, Readiness};
use sha2::{Digest, Sha256};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use airlock_core::config_key::invalid;
pub use airlock_core::config_key::ConfigError;

mod export;
mod forward;
mod hardware;
mod raw;
#[cfg(test)]
mod tests;

pub use export::ExportSettings;
pub use forward::AuditForwarding;

use raw::*;

/// A terminal the broker accepts.
#[derive(Debug, Clone)]
pub struct Terminal {
    pub name: TerminalName,
    pub token_sha256: [u8; 32],
}

/// Rate limits of the HTTP API (`[limits]`; the lease limit is the pool's).
#[derive(Debug, Clone, PartialEq)]
pub struct RateLimits {
    /// `POST /v1/leases` per terminal.
    pub acquire: Limit,
    /// Failed authentications per client address.
    pub auth_failure: Limit,
}

/// Where the audit chain's head is anchored (`[audit]`).
#[derive(Debug, Clone, PartialEq)]
pub struct AuditAnchoring {
    /// The append-only anchor file.
    pub file: PathBuf,
    /// How often the head is anchored (when it moved).
    pub interval: Duration,
    /// Also send each anchor to the local syslog (`/dev/log`).
    pub syslog: bool,
    /// How often the whole chain is hashed again (`audit.full_verify_interval_s`).
    pub full_verify_interval: Duration,
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    pub tls: Option<(PathBuf, PathBuf)>,
    pub max_body_bytes: usize,
    pub admin_token_sha256: [u8; 32],
    pub terminals: Vec<Terminal>,
    pub pool: PoolConfig,
    pub limits: RateLimits,
    pub audit: AuditAnchoring,
    /// `[audit.forward]`: audit records to a syslog server (`None`: not forwarded).
    pub audit_forward: Option<AuditForwarding>,
    /// SHA-256 of the bearer token `/metrics` asks for (`None`: open).
    pub metrics_token_sha256: Option<[u8; 32]>,
    /// The web console (`[console]`).
    pub console: ConsoleSettings,
    /// Key images: captures, the PACS, the worklist (`[export]`).
    pub export: ExportSettings,
}

/// `[console]`, validated: who may log in, how long a login lasts, the headroom.
#[derive(Debug, Clone)]
pub struct ConsoleSettings {
    pub credentials: airlock_console::login::Credentials,
    pub session_ttl: Duration,
    pub min_clean: usize,
}

/// `[console]`: the accounts must be well-formed with argon2 hashes; a login lasts 5
/// minutes to 7 days.
fn console_settings(
    raw: &RawConsole,
    admin_token_sha256: [u8; 32],
    desktops: usize,
) -> Result<ConsoleSettings, ConfigError> {
    let accounts = raw
        .accounts
        .iter()
        .map(|a| airlock_console::login::Account {
            name: a.name.clone(),
            password_hash: a.password_hash.clone(),
        })
        .collect();
    let credentials = airlock_console::login::Credentials::new(accounts, admin_token_sha256)
        .map_err(|e| {
            invalid(
                "console.accounts",
                e.to_string(),
                "each [[console.accounts]] has a unique name and a password_hash from `airlockd hash-password`",
            )
        })?;
    if !(5..=7 * 24 * 60).contains(&raw.session_minutes) {
        return Err(invalid(
            "console.session_minutes",
            format!("{} is out of range", raw.session_minutes),
            "give 5 to 10080 minutes (default 480: a working day)",
        ));
    }
    if raw.min_clean > desktops {
        return Err(invalid(
            "console.min_clean",
            format!(
                "{} is more than the pool's {desktops} desktops",
                raw.min_clean
            ),
            "give at most pool.size",
        ));
    }
    Ok(ConsoleSettings {
        credentials,
        session_ttl: Duration::from_secs(raw.session_minutes * 60),
        min_clean: raw.min_clean,
    })
}

/// SHA-256 of a token, as stored in the config.
pub fn hash_token(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

fn parse_hash(key: &'static str, s: &str) -> Result<[u8; 32], ConfigError> {
    let fix = "put the output of `airlockd hash-token` here (64 hex digits)";
    let bytes = hex::decode(s).map_err(|_| invalid(key, "is not hex", fix))?;
    bytes
        .try_into()
        .map_err(|_| invalid(key, "is not 32 bytes (64 hex digits)", fix))
}

fn resolve(base: &Path, p: &Path) -> PathBuf {
    let joined = if p.is_absolute() {
        p.to_owned()
    } else {
        base.join(p)
    };
    normalize(&joined)
}

/// Removes `.` and `..` components lexically (`/a/b/../c` → `/a/c`), so logs and the
/// QEMU command line show plain paths.
fn normalize(p: &Path) -> PathBuf {
    use std::path::Component;
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                if !out.pop() {
                    out.push("..");
                }
            }
            other => out.push(other.as_os_str()),
        }
    }
    out
}

/// Paths like `qemu-system-x86_64` (no slash) are looked up on PATH, not resolved.
fn resolve_program(base: &Path, p: &Path) -> PathBuf {
    if p.components().count() == 1 {
        p.to_owned()
    } else {
        resolve(base, p)
    }
}

fn must_exist(key: &'static str, p: &Path, fix: &str) -> Result<(), ConfigError> {
    if p.is_file() {
        Ok(())
    } else {
        Err(invalid(key, format!("{} does not exist", p.display()), fix))
    }
}

/// The display's TLS: the server's certificate when it has one (then there is no
/// plaintext display); without one, a plaintext display only on loopback unless
/// `allow_plaintext` says otherwise.
fn display_tls(
    d: &RawDisplay,
    protocol: DisplayProtocol,
    listen: IpAddr,
    server_tls: Option<&(PathBuf, PathBuf)>,
) -> Result<Option<DisplayTls>, ConfigError> {
    let Some((cert, key)) = server_tls else {
        if d.host_subject.is_some() {
            return Err(invalid(
                "pool.display.host_subject",
                "is set but the broker has no TLS",
                "set server.tls_cert and server.tls_key (the display then uses TLS), or remove it",
            ));
        }
        if !listen.is_loopback() && !d.allow_plaintext {
            return Err(invalid(
                "pool.display.listen",
                format!("{listen} is not a loopback address and the broker has no TLS, so display passwords and pixels would cross the network in clear"),
                "set server.tls_cert and server.tls_key (the display then uses TLS), or set pool.display.allow_plaintext = true to accept a plaintext display",
            ));
        }
        return Ok(None);
    };
    if d.allow_plaintext {
        return Err(invalid(
            "pool.display.allow_plaintext",
            "is set but the broker has TLS, and with TLS the display has no plaintext path",
            "remove it",
        ));
    }
    if protocol == DisplayProtocol::Vnc {
        return Err(invalid(
            "pool.display.protocol",
            "\"vnc\" cannot be encrypted by the broker (VNC clients negotiate TLS inside the VNC handshake, VeNCrypt, not as a TLS connection), and with TLS the display has no plaintext path",
            "use protocol = \"spice\"",
        ));
    }
    if let Some(s) = &d.host_subject {
        if s.trim().is_empty() || s.chars().any(char::is_control) {
            return Err(invalid(
                "pool.display.host_subject",
                format!("{s:?} is not a certificate subject"),
                "write the subject of server.tls_cert, e.g. \"O=Airlock,CN=broker.example\", or remove it to have clients check the host name",
            ));
        }
    }
    Ok(Some(DisplayTls {
        cert: cert.clone(),
        key: key.clone(),
        host_subject: d.host_subject.clone(),
    }))
}

/// `[pool.readiness.logon]`: the user is a plain account name, the times in range.
fn logon(l: &RawLogon) -> Result<Logon, ConfigError> {
    let user = l.user.trim();
    if user.is_empty()
        || user.len() > 256
        || user
            .chars()
            .any(|c| c.is_control() || c == '\\' || c == '@')
    {
        return Err(invalid(
            "pool.readiness.logon.user",
            format!("{:?} is not an account name", l.user),
            "write the auto-logon account's name as guest-get-users reports it, without domain (e.g. \"clinician\")",
        ));
    }
    in_range("pool.readiness.logon.quiet_s", l.quiet_s, 1..=600, " s")?;
    in_range(
        "pool.readiness.logon.busy_percent",
        l.busy_percent,
        1..=100,
        " %",
    )?;
    in_range(
        "pool.readiness.logon.timeout_s",
        l.timeout_s,
        10..=7200,
        " s",
    )?;
    if l.timeout_s <= l.quiet_s {
        return Err(invalid(
            "pool.readiness.logon.timeout_s",
            format!(
                "{} s leaves no room for quiet_s = {} s",
                l.timeout_s, l.quiet_s
            ),
            "make timeout_s longer than quiet_s",
        ));
    }
    Ok(Logon {
        user: user.to_owned(),
        quiet: Duration::from_secs(l.quiet_s),
        busy_percent: l.busy_percent,
        timeout: Duration::from_secs(l.timeout_s),
    })
}

/// `value` of `key` within `range`, or the error that says the range (with `unit`, e.g.
/// `" seconds"`, after its bounds).
fn in_range<T>(
    key: &'static str,
    value: T,
    range: std::ops::RangeInclusive<T>,
    unit: &str,
) -> Result<(), ConfigError>
where
    T: PartialOrd + std::fmt::Display,
{
    if range.contains(&value) {
        return Ok(());
    }
    Err(invalid(
        key,
        format!("{value} is out of range"),
        format!("use {} to {}{unit}", range.start(), range.end()),
    ))
}

/// Two keys that go together: both set, or neither. The error names the missing one.
fn both_or_neither<A, B>(
    (key_a, a): (&'static str, Option<A>),
    (key_b, b): (&'static str, Option<B>),
) -> Result<Option<(A, B)>, ConfigError> {
    let short = |key: &'static str| key.rsplit('.').next().unwrap_or(key);
    let fix = format!("set both {} and {}, or neither", short(key_a), short(key_b));
    match (a, b) {
        (Some(a), Some(b)) => Ok(Some((a, b))),
        (None, None) => Ok(None),
        (Some(_), None) => Err(invalid(
            key_b,
            format!("is missing while {key_a} is set"),
            fix,
        )),
        (None, Some(_)) => Err(invalid(
            key_a,
            format!("is missing while {key_b} is set"),
            fix,
        )),
    }
}

impl Config {
    /// Reads and validates a config file. Relative paths are relative to the file's
    /// directory; `state_dir_override` replaces `server.state_dir`.
    pub fn load(path: &Path, state_dir_override: Option<&Path>) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            what: "config file",
            path: path.to_path_buf(),
            source,
        })?;
        let base = path
            .parent()
            .map(|p| {
                if p.as_os_str().is_empty() {
                    Path::new(".")
                } else {
                    p
                }
            })
            .unwrap_or(Path::new("."));
        let base = std::fs::canonicalize(base).unwrap_or_else(|_| base.to_owned());
        Self::parse(
            &text,
            &path.display().to_string(),
            &base,
            state_dir_override,
        )
    }

    /// Parses config text; `base` anchors relative paths.
    pub fn parse(
        text: &str,
        name: &str,
        base: &Path,
        state_dir_override: Option<&Path>,
    ) -> Result<Config, ConfigError> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| ConfigError::Syntax {
            path: PathBuf::from(name),
            message: e.to_string().trim().replace('\n', " "),
        })?;
        let s = raw.server;
        let listen: SocketAddr = s.listen.parse().map_err(|_| {
            invalid(
                "server.listen",
                format!("{:?} is not an address:port", s.listen),
                "write e.g. \"127.0.0.1:7480\"",
            )
        })?;
        let tls = match both_or_neither(
            ("server.tls_cert", s.tls_cert),
            ("server.tls_key", s.tls_key),
        )? {
            None => None,
            Some((c, k)) => {
                let (c, k) = (resolve(base, &c), resolve(base, &k));
                must_exist("server.tls_cert", &c, "give the PEM certificate chain file")?;
                must_exist("server.tls_key", &k, "give the PEM private key file")?;
                Some((c, k))
            }
        };
        if tls.is_none() && !listen.ip().is_loopback() {
            tracing::warn!(listen = %listen, "serving plain HTTP on a non-loopback address: tokens and display passwords cross the network in clear; set server.tls_cert and server.tls_key");
        }
        in_range(
            "server.max_body_bytes",
            s.max_body_bytes,
            1024..=16 * 1024 * 1024,
            "",
        )?;
        let state_dir = match state_dir_override {
            Some(d) => normalize(&std::path::absolute(d).unwrap_or_else(|_| d.to_owned())),
            None => resolve(base, &s.state_dir),
        };
        let admin_token_sha256 = parse_hash("admin.token_sha256", &raw.admin.token_sha256)?;
        let mut terminals = Vec::new();
        for t in raw.terminals {
            let name = TerminalName::parse(&t.name).map_err(|e| {
                invalid("terminals.name", e.to_string(), "use a-z, 0-9, '-' and '_'")
            })?;
            if terminals.iter().any(|x: &Terminal| x.name == name) {
                return Err(invalid(
                    "terminals.name",
                    format!("{name} appears twice"),
                    "give every terminal its own name",
                ));
            }
            let token_sha256 = parse_hash("terminals.token_sha256", &t.token_sha256)?;
            terminals.push(Terminal { name, token_sha256 });
        }
        if terminals.is_empty() {
            tracing::warn!("no [[terminals]] configured: no terminal can lease a desktop");
        }
        let p = raw.pool;
        in_range("pool.size", p.size, 1..=500, "")?;
        let desktops = (1..=p.size)
            .map(|n| DesktopId::numbered(&p.name_prefix, n))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| {
                invalid(
                    "pool.name_prefix",
                    e.to_string(),
                    "use a short lower-case name like \"desk\"",
                )
            })?;
        let accel = match p.accel.as_str() {
            "kvm" => Accel::Kvm,
            "tcg" => Accel::Tcg,
            other => {
                return Err(invalid(
                    "pool.accel",
                    format!("{other:?} is not an accelerator"),
                    "use \"kvm\" (hardware, the default) or \"tcg\" (software emulation)",
                ))
            }
        };
        let agent_port = airlock_qemu::AgentPort::parse(&p.agent_port).ok_or_else(|| {
            invalid(
                "pool.agent_port",
                format!("{:?} is not an agent port", p.agent_port),
                "use \"isa\" (COM1, every guest has its driver; the default) or \"virtio\" (a virtio-serial port: faster, needs the guest's virtio console driver)",
            )
        })?;
        if accel == Accel::Kvm && !Path::new("/dev/kvm").exists() {
            return Err(invalid(
                "pool.accel",
                "is \"kvm\" but /dev/kvm does not exist",
                "enable virtualization in the BIOS and load kvm_intel/kvm_amd, or set accel = \"tcg\" (slow)",
            ));
        }
        in_range("pool.memory_mib", p.memory_mib, 64..=1024 * 1024, "")?;
        in_range("pool.vcpus", p.vcpus, 1..=64, "")?;
        if p.machine.is_empty()
            || !p
                .machine
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.' || c == '_')
        {
            return Err(invalid(
                "pool.machine",
                format!("{:?} is not a machine type", p.machine),
                "use e.g. \"q35\"",
            ));
        }
        let reset_method = ResetMethod::parse(&p.reset).ok_or_else(|| {
            invalid(
                "pool.reset",
                format!("{:?} is not a reset method", p.reset),
                "use \"template_clone\" (default), \"snapshot_restore\" or \"rebuild\"",
            )
        })?;
        in_range(
            "pool.heartbeat_timeout_s",
            p.heartbeat_timeout_s,
            3..=86_400,
            " seconds",
        )?;
        let golden = resolve(base, &p.guest.disk);
        must_exist(
            "pool.guest.disk",
            &golden,
            "build the demo guest with `cargo xtask guest`, or give your golden qcow2 image",
        )?;
        let boot = match both_or_neither(
            ("pool.guest.kernel", p.guest.kernel),
            ("pool.guest.initrd", p.guest.initrd),
        )? {
            Some((k, i)) => {
                let (k, i) = (resolve(base, &k), resolve(base, &i));
                must_exist(
                    "pool.guest.kernel",
                    &k,
                    "build the demo guest with `cargo xtask guest`",
                )?;
                must_exist(
                    "pool.guest.initrd",
                    &i,
                    "build the demo guest with `cargo xtask guest`",
                )?;
                Boot::Kernel {
                    kernel: k,
                    initrd: i,
                    append: p.guest.append.unwrap_or_default(),
                }
            }
            None => {
                if p.guest.append.is_some() {
                    return Err(invalid(
                        "pool.guest.append",
                        "is set without a kernel",
                        "remove it, or set kernel and initrd",
                    ));
                }
                Boot::Disk
            }
        };
        in_range(
            "pool.readiness.idle_probe_s",
            p.readiness.idle_probe_s,
            0..=86400,
            " s",
        )?;
        let idle_probe = (p.readiness.idle_probe_s > 0
            && (p.readiness.probe == "serial" || p.readiness.probe == "qga"))
            .then(|| Duration::from_secs(p.readiness.idle_probe_s));
        if p.readiness.probe != "qga" {
            if p.readiness.accept_exec.is_some() {
                return Err(invalid(
                    "pool.readiness.accept_exec",
                    "is set but the probe is not \"qga\"",
                    "remove it, or set probe = \"qga\"",
                ));
            }
            if p.readiness.logon.is_some() {
                return Err(invalid("pool.readiness.logon", "is set but the probe is not \"qga\"", "remove it, or set probe = \"qga\" (the user's session is seen through the guest agent)"));
            }
        }
        let readiness = match p.readiness.probe.as_str() {
            "serial" => {
                if p.readiness.delay_s.is_some() {
                    return Err(invalid("pool.readiness.delay_s", "is set but the probe is \"serial\"", "remove it, or set probe = \"delay\""));
                }
                in_range("pool.readiness.timeout_s", p.readiness.timeout_s, 1..=3600, "")?;
                Readiness::Serial { boot_timeout: Duration::from_secs(p.readiness.timeout_s) }
            }
            "qga" => {
                if p.readiness.delay_s.is_some() {
                    return Err(invalid("pool.readiness.delay_s", "is set but the probe is \"qga\"", "remove it, or set probe = \"delay\""));
                }
                in_range("pool.readiness.timeout_s", p.readiness.timeout_s, 1..=3600, "")?;
                let logon = match &p.readiness.logon {
                    None => None,
                    Some(l) => Some(logon(l)?),
                };
                Readiness::Qga(QgaProbe {
                    boot_timeout: Duration::from_secs(p.readiness.timeout_s),
                    accept_exec: p.readiness.accept_exec.unwrap_or(false),
                    logon,
                })
            }
            "delay" => {
                let d = p.readiness.delay_s.ok_or_else(|| invalid("pool.readiness.delay_s", "is missing", "set how many seconds a guest needs to become usable"))?;
                Readiness::Delay(Duration::from_secs(d))
            }
            other => {
                return Err(invalid(
                    "pool.readiness.probe",
                    format!("{other:?} is not a probe"),
                    "use \"serial\" (the Airlock guest agent answers a ping on the first serial port), \"qga\" (the QEMU guest agent) or \"delay\"",
                ))
            }
        };
        let display = match p.display {
            None => None,
            Some(d) => {
                let protocol = match d.protocol.as_str() {
                    "spice" => DisplayProtocol::Spice,
                    "vnc" => DisplayProtocol::Vnc,
                    other => {
                        return Err(invalid(
                            "pool.display.protocol",
                            format!("{other:?} is not a protocol"),
                            "use \"spice\" or \"vnc\"",
                        ))
                    }
                };
                let listen: IpAddr = d.listen.parse().map_err(|_| {
                    invalid(
                        "pool.display.listen",
                        format!("{:?} is not an IP address", d.listen),
                        "write e.g. \"127.0.0.1\" or \"0.0.0.0\"",
                    )
                })?;
                let last = usize::from(d.port_base) + p.size - 1;
                if d.port_base < 1024 || last > 65535 {
                    return Err(invalid(
                        "pool.display.port_base",
                        format!("ports {}..={last} are out of range", d.port_base),
                        "use a base from 1024 with room for every desktop",
                    ));
                }
                if protocol == DisplayProtocol::Vnc && (d.port_base < 5900 || last > 5900 + 99) {
                    return Err(invalid(
                        "pool.display.port_base",
                        "VNC displays must use ports 5900 to 5999",
                        "use port_base = 5900 or above, with room for the pool",
                    ));
                }
                let tls = display_tls(&d, protocol, listen, tls.as_ref())?;
                let advertise_host = d.advertise_host.unwrap_or_else(|| listen.to_string());
                in_range("pool.display.grace_s", d.grace_s, 1..=3600, " seconds")?;
                in_range(
                    "pool.display.max_connections",
                    d.max_connections,
                    1..=256,
                    " connections per lease (a SPICE client needs about 8)",
                )?;
                in_range(
                    "pool.display.idle_timeout_s",
                    d.idle_timeout_s,
                    5..=86_400,
                    " seconds",
                )?;
                Some(DisplayConfig {
                    protocol,
                    listen,
                    advertise_host,
                    port_base: d.port_base,
                    tls,
                    grace: Duration::from_secs(d.grace_s),
                    max_connections: d.max_connections,
                    idle_timeout: Duration::from_secs(d.idle_timeout_s),
                })
            }
        };
        let placement = match p.cpus {
            None => None,
            Some(c) => {
                let fix = "write host CPU numbers like \"2-7\" or \"0,2\"";
                let desktops = CpuList::parse(&c.desktops)
                    .map_err(|e| invalid("pool.cpus.desktops", e.to_string(), fix))?;
                let housekeeping = c
                    .housekeeping
                    .as_deref()
                    .map(CpuList::parse)
                    .transpose()
                    .map_err(|e| invalid("pool.cpus.housekeeping", e.to_string(), fix))?;
                let allowed = airlock_qemu::affinity::allowed_cpus().map_err(|e| {
                    invalid(
                        "pool.cpus",
                        e.to_string(),
                        "remove the [pool.cpus] section to run unpinned",
                    )
                })?;
                let placement =
                    CpuPlacement::new(desktops, housekeeping, &allowed).map_err(|e| {
                        let key = match e {
                            CpuError::NotAllowed {
                                what: "desktop", ..
                            }
                            | CpuError::Empty { what: "desktop" }
                            | CpuError::NoneLeft { .. } => "pool.cpus.desktops",
                            _ => "pool.cpus.housekeeping",
                        };
                        invalid(
                            key,
                            e.to_string(),
                            "see the pool.cpus section of docs/operations.md",
                        )
                    })?;
                Some(placement)
            }
        };
        let queue = queue_config(&p.queue)?;
        let l = &raw.limits;
        in_range(
            "limits.leases_per_terminal",
            l.leases_per_terminal,
            1..=500,
            " active leases",
        )?;
        let limits = rate_limits(l)?;
        let audit = audit_anchoring(base, &raw.audit)?;
        if audit.file.starts_with(&state_dir) {
            return Err(invalid(
                "audit.anchor_file",
                format!(
                    "{} is inside the state directory {}, next to the database it anchors",
                    audit.file.display(),
                    state_dir.display()
                ),
                format!("put it outside, e.g. {DEFAULT_ANCHOR_FILE:?} (the default)"),
            ));
        }
        let longest = airlock_qemu::driver::longest_socket_path(
            &state_dir,
            desktops.iter().map(|d| d.as_str().len()).max().unwrap_or(0),
        );
        let excess = longest
            .as_os_str()
            .len()
            .saturating_sub(airlock_qemu::driver::MAX_SOCKET_PATH);
        if excess > 0 {
            return Err(invalid(
                "server.state_dir",
                format!(
                    "{} is {excess} characters too long: QEMU's sockets under it (e.g. {}) would pass the kernel's 107-byte limit for unix socket paths",
                    state_dir.display(),
                    longest.display()
                ),
                format!(
                    "use a state directory of at most {} characters (e.g. /var/lib/airlock), or a shorter pool.name_prefix",
                    state_dir.as_os_str().len() - excess
                ),
            ));
        }
        let confine = if p.confine.enabled {
            let c = &p.confine;
            let need = u32::try_from(desktops.len())
                .unwrap_or(u32::MAX)
                .saturating_add(1);
            in_range("pool.confine.uid_base", c.uid_base, 1..=u32::MAX - 1, "")?;
            in_range(
                "pool.confine.uid_count",
                c.uid_count,
                need..=u32::MAX - c.uid_base,
                " (one uid per desktop and one for the template)",
            )?;
            in_range(
                "pool.confine.memory_overhead_mib",
                c.memory_overhead_mib,
                64..=65536,
                " MiB",
            )?;
            in_range("pool.confine.pids_max", c.pids_max, 32..=65536, "")?;
            in_range("pool.confine.cpu_weight", c.cpu_weight, 1..=10000, "")?;
            Some(airlock_qemu::ConfineConfig {
                uid_base: c.uid_base,
                uid_count: c.uid_count,
                memory_overhead_mib: c.memory_overhead_mib,
                pids_max: c.pids_max,
                cpu_weight: c.cpu_weight,
                processes: need,
            })
        } else {
            None
        };
        in_range("pool.disk_cap_mib", p.disk_cap_mib, 16..=16 << 20, " MiB")?;
        in_range(
            "pool.serial_log_kib",
            p.serial_log_kib,
            16..=1 << 20,
            " KiB",
        )?;
        if p.test_clone_pause_ms.is_some() && !p.test_control_channel {
            return Err(invalid(
                "pool.test_clone_pause_ms",
                "is a test hook",
                "remove it (it works only with pool.test_control_channel, in tests)",
            ));
        }
        // Pools on one host (tests run many) keep their cgroups apart.
        let cgroup_instance = format!(
            "airlock-{}",
            &hex::encode(Sha256::digest(state_dir.as_os_str().as_encoded_bytes()))[..12]
        );
        let cpu = cpu_shape(
            &resolve_program(base, &p.qemu),
            accel,
            p.cpu_model.as_deref(),
            p.hyperv,
        )?;
        let shape = hardware::machine_shape(&p.hardware, &p.machine, reset_method, base)?;
        let pool = PoolConfig {
            desktops,
            reset_method,
            lease_timeout: Duration::from_secs(p.heartbeat_timeout_s),
            display,
            state_dir,
            driver: DriverConfig {
                qemu: resolve_program(base, &p.qemu),
                qemu_img: resolve_program(base, &p.qemu_img),
                accel,
                machine: p.machine,
                cpu,
                memory_mib: p.memory_mib,
                vcpus: p.vcpus,
                boot,
                golden,
                control_channel: p.test_control_channel,
                agent_port,
                shape,
                sandbox: p.sandbox,
                readiness,
                placement,
                confine,
                cgroup_instance,
                disk_cap_bytes: Some(p.disk_cap_mib << 20),
                serial_log_bytes: p.serial_log_kib << 10,
                test_clone_pause: p.test_clone_pause_ms.map(Duration::from_millis),
            },
            sweep_interval: Duration::from_millis(500),
            golden_check_interval: Duration::from_secs(5),
            idle_probe_interval: idle_probe,
            queue,
            leases_per_terminal: l.leases_per_terminal,
        };
        let console = console_settings(&raw.console, admin_token_sha256, pool.desktops.len())?;
        Ok(Config {
            console,
            listen,
            tls,
            max_body_bytes: s.max_body_bytes,
            admin_token_sha256,
            terminals,
            pool,
            limits,
            audit,
            audit_forward: forward::audit_forwarding(base, raw.audit.forward.as_ref())?,
            export: export::export_settings(base, &raw.export)?,
            metrics_token_sha256: metrics_token(base, &raw.metrics)?,
        })
    }
}

/// `[metrics]`: the hash of the token `/metrics` asks for, given as a hash or read from
/// a file (relative to the config file) that holds the token; `None` when neither is
/// set (then `/metrics` is open).
fn metrics_token(base: &Path, m: &RawMetrics) -> Result<Option<[u8; 32]>, ConfigError> {
    match (&m.token_sha256, &m.token_file) {
        (None, None) => Ok(None),
        (Some(_), Some(_)) => Err(invalid(
            "metrics.token_file",
            "is set together with metrics.token_sha256",
            "keep one of them",
        )),
        (Some(h), None) => parse_hash("metrics.token_sha256", h).map(Some),
        (None, Some(f)) => {
            let path = resolve(base, f);
            let fix = "give a file holding the token on one line (e.g. `openssl rand -hex 32`), readable by the broker";
            let text = std::fs::read(&path).map_err(|e| {
                invalid(
                    "metrics.token_file",
                    format!("{}: {e}", path.display()),
                    fix,
                )
            })?;
            let token = std::str::from_utf8(&text).map(str::trim).unwrap_or("");
            if token.len() < 16 || token.len() > 4096 || token.chars().any(char::is_whitespace) {
                return Err(invalid(
                    "metrics.token_file",
                    format!(
                        "{} does not hold one token of 16 to 4096 characters",
                        path.display()
                    ),
                    fix,
                ));
            }
            Ok(Some(Sha256::digest(token.as_bytes()).into()))
        }
    }
}

/// `[limits]`' rates: lease requests per terminal, failed authentications per address.
fn rate_limits(l: &RawLimits) -> Result<RateLimits, ConfigError> {
    in_range("limits.acquire_burst", l.acquire_burst, 1..=10_000, "")?;
    in_range(
        "limits.acquires_per_minute",
        l.acquires_per_minute,
        1..=600_000,
        "",
    )?;
    in_range(
        "limits.auth_failure_burst",
        l.auth_failure_burst,
        1..=10_000,
        "",
    )?;
    in_range(
        "limits.auth_failures_per_minute",
        l.auth_failures_per_minute,
        1..=600_000,
        "",
    )?;
    let limit = |burst, per_minute| {
        Limit::new(burst, per_minute).ok_or_else(|| {
            invalid(
                "limits",
                "a rate is 0",
                "give every burst and rate a positive number",
            )
        })
    };
    Ok(RateLimits {
        acquire: limit(l.acquire_burst, l.acquires_per_minute)?,
        auth_failure: limit(l.auth_failure_burst, l.auth_failures_per_minute)?,
    })
}

/// `[audit]`: the anchor file (an absolute path, or relative to the config file), how
/// often, and syslog.
fn audit_anchoring(base: &Path, a: &RawAudit) -> Result<AuditAnchoring, ConfigError> {
    in_range(
        "audit.anchor_interval_s",
        a.anchor_interval_s,
        1..=86_400,
        " seconds",
    )?;
    if a.anchor_file.as_os_str().is_empty() || a.anchor_file.file_name().is_none() {
        return Err(invalid(
            "audit.anchor_file",
            format!("{:?} is not a file path", a.anchor_file),
            format!("name a file outside the state directory, e.g. {DEFAULT_ANCHOR_FILE:?}"),
        ));
    }
    in_range(
        "audit.full_verify_interval_s",
        a.full_verify_interval_s,
        60..=604_800,
        " seconds (how often the whole audit chain is verified again)",
    )?;
    Ok(AuditAnchoring {
        file: resolve(base, &a.anchor_file),
        interval: Duration::from_secs(a.anchor_interval_s),
        syslog: a.syslog,
        full_verify_interval: Duration::from_secs(a.full_verify_interval_s),
    })
}

/// `[pool.queue]`: the hold time, the poll interval terminals are told, and the ticket
/// timeout (by default three missed polls).
fn queue_config(q: &RawQueue) -> Result<QueueConfig, ConfigError> {
    in_range(
        "pool.queue.hold_s",
        q.hold_s,
        1..=300,
        " seconds (how long a freed desktop waits for the head of the line)",
    )?;
    in_range(
        "pool.queue.poll_interval_s",
        q.poll_interval_s,
        1..=60,
        " seconds",
    )?;
    let timeout = q.ticket_timeout_s.unwrap_or(3 * q.poll_interval_s);
    if timeout < 2 * q.poll_interval_s || timeout > 600 {
        return Err(invalid(
            "pool.queue.ticket_timeout_s",
            format!(
                "{timeout} is out of range for a poll interval of {} s",
                q.poll_interval_s
            ),
            format!(
                "use {} to 600 seconds (at least two poll intervals, so one lost poll does not drop a terminal from the line), or leave it out for three poll intervals",
                2 * q.poll_interval_s
            ),
        ));
    }
    Ok(QueueConfig {
        hold: Duration::from_secs(q.hold_s),
        poll_interval: Duration::from_secs(q.poll_interval_s),
        ticket_timeout: Duration::from_secs(timeout),
    })
}

/// How many CPU models an unknown-model error names.
const CPU_MODELS_SHOWN: usize = 16;

/// `pool.cpu_model` and `pool.hyperv`: the model must be one the host QEMU lists in
/// `-cpu help` (asked once, here); Hyper-V enlightenments need KVM and a named model.
fn cpu_shape(
    qemu: &Path,
    accel: Accel,
    model: Option<&str>,
    hyperv: bool,
) -> Result<Option<airlock_qemu::CpuShape>, ConfigError> {
    if hyperv && accel == Accel::Tcg {
        return Err(invalid(
            "pool.hyperv",
            "Hyper-V enlightenments need KVM, but pool.accel is \"tcg\"",
            "set accel = \"kvm\" or remove hyperv",
        ));
    }
    let Some(model) = model else {
        if hyperv {
            return Err(invalid(
                "pool.hyperv",
                "needs a named pool.cpu_model",
                "set cpu_model, e.g. \"Skylake-Client-v4\" (see `qemu-system-x86_64 -cpu help`)",
            ));
        }
        return Ok(None);
    };
    if model.is_empty()
        || model.len() > 64
        || !model
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.' || c == '_')
    {
        return Err(invalid(
            "pool.cpu_model",
            format!("{model:?} is not a CPU model name"),
            "use a name `qemu-system-x86_64 -cpu help` lists, e.g. \"Skylake-Client-v4\"",
        ));
    }
    let known = airlock_qemu::driver::host_cpu_models(qemu).map_err(|e| {
        invalid(
            "pool.cpu_model",
            e.to_string(),
            "check pool.qemu, or remove cpu_model to use QEMU's default",
        )
    })?;
    if !known.iter().any(|k| k == model) {
        // The base names first (`Skylake-Client`, not each `-vN` version of it).
        let is_version = |m: &str| {
            m.rsplit_once("-v")
                .is_some_and(|(_, n)| !n.is_empty() && n.chars().all(|c| c.is_ascii_digit()))
        };
        let mut shown: Vec<&str> = known
            .iter()
            .map(String::as_str)
            .filter(|m| !is_version(m))
            .collect();
        let more = known
            .len()
            .saturating_sub(CPU_MODELS_SHOWN.min(shown.len()));
        shown.truncate(CPU_MODELS_SHOWN);
        return Err(invalid(
            "pool.cpu_model",
            format!(
                "{model:?} is not a CPU model {} knows; it knows {}, and {more} more",
                qemu.display(),
                shown.join(", ")
            ),
            format!("see `{} -cpu help`", qemu.display()),
        ));
    }
    Ok(Some(airlock_qemu::CpuShape {
        model: model.to_owned(),
        hyperv,
    }))
}
