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
}
