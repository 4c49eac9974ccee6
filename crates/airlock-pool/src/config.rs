use airlock_core::{DesktopId, ResetMethod};
use airlock_qemu::{DisplayProtocol, DriverConfig};
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

/// How desktops' displays are reached.
#[derive(Debug, Clone, PartialEq)]
pub struct DisplayConfig {
    pub protocol: DisplayProtocol,
    /// Address QEMU's display server listens on.
    pub listen: IpAddr,
    /// Host name or address terminals are told to connect to.
    pub advertise_host: String,
    /// Port of the first desktop; desktop `n` (0-based) gets `port_base + n`.
    pub port_base: u16,
    /// TLS on the display ports (`None`: plaintext, which the config allows only on
    /// loopback unless the site says otherwise).
    pub tls: Option<DisplayTls>,
    /// How long a leased desktop's display client may stay away before the lease ends
    /// (`display_lost`).
    pub grace: Duration,
    /// At most this many forwarded display connections per lease at once (a SPICE client
    /// opens one per channel); more are closed at once.
    pub max_connections: usize,
    /// A forwarded display connection with no bytes either way for this long is closed.
    pub idle_timeout: Duration,
}

/// The display proxy's TLS: the broker's certificate and key (PEM), and the certificate
/// subject display clients are told to check.
#[derive(Debug, Clone, PartialEq)]
pub struct DisplayTls {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// SPICE `host-subject`, e.g. `O=Airlock,CN=broker.example` (`None`: clients check
    /// the advertised host name).
    pub host_subject: Option<String>,
}

impl DisplayConfig {
    /// Whether pixels and passwords cross the network in clear: no TLS on an address
    /// other than loopback.
    pub fn plaintext_on_network(&self) -> bool {
        self.tls.is_none() && !self.listen.is_loopback()
    }
}

/// The waiting line (`[pool.queue]`): see `engine/queue.rs`.
#[derive(Debug, Clone, PartialEq)]
pub struct QueueConfig {
    /// How long a desktop freed for the head ticket is held for it.
    pub hold: Duration,
    /// How often a waiting terminal is told to ask again.
    pub poll_interval: Duration,
    /// A ticket not asked about for this long (after the end of its last poll) leaves
    /// the line.
    pub ticket_timeout: Duration,
}

impl Default for QueueConfig {
    /// Hold 15 s; poll every 2 s; drop a ticket after 3 missed polls (6 s).
    fn default() -> Self {
        QueueConfig {
            hold: Duration::from_secs(15),
            poll_interval: Duration::from_secs(2),
            ticket_timeout: Duration::from_secs(6),
        }
    }
}

/// Everything the pool engine needs.
#[derive(Debug, Clone, PartialEq)]
pub struct PoolConfig {
    pub desktops: Vec<DesktopId>,
    pub reset_method: ResetMethod,
    pub lease_timeout: Duration,
    pub display: Option<DisplayConfig>,
    pub state_dir: PathBuf,
    pub driver: DriverConfig,
    /// How often to look for leases whose heartbeats stopped.
    pub sweep_interval: Duration,
    /// How often to check that the golden image, kernel or initrd changed.
    pub golden_check_interval: Duration,
    /// How often to ping idle clean desktops (`None`: never).
    pub idle_probe_interval: Option<Duration>,
    /// The waiting line.
    pub queue: QueueConfig,
    /// At most this many active leases per terminal (enforced in the acquire
    /// transaction).
    pub leases_per_terminal: u32,
}
