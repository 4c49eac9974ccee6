//! Airlock's QEMU driver: one QEMU process per desktop, driven over QMP.
//!
//! - [`qmp`]: an async QMP client (replies routed by id, events broadcast).
//! - [`spec`]: the VM description and its command line (pure).
//! - [`process`]: start, re-attach, kill.
//! - [`confine`]: each QEMU's own uid and its cgroup limits.
//! - [`affinity`]: pinning QEMU's threads to host CPUs.
//! - [`tpm`]: a swtpm TPM 2.0 per desktop process.
//! - [`chardev_policy`]: the chardevs a desktop may have, checked against `query-chardev`.
//! - [`agent`]: readiness ping and clock setting over the guest's serial agent port.
//! - [`qga`], [`qga_probe`]: the same, and the template's facts, from a stock QEMU guest
//!   agent.
//! - [`session`]: what QMP events say about a session (the guest powered off, a display
//!   client came or went).
//! - [`driver`]: the operations a pool needs: build a template, start a template clone,
//!   cold-boot from the golden image, save/load an internal snapshot, set and revoke
//!   display passwords.
// Denied everywhere but in `child`, which documents its one `pre_exec`.
#![deny(unsafe_code)]

pub mod affinity;
pub mod agent;
pub mod chardev_policy;
mod child;
pub mod confine;
pub mod driver;
pub mod img;
pub mod process;
pub mod qga;
pub mod qga_probe;
pub mod qmp;
pub mod serial_log;
pub mod session;
pub mod spec;
pub mod tpm;

pub use confine::{ConfineConfig, Host};
pub use driver::{Driver, DriverConfig, Readiness, StartedVm, Template};
pub use process::Vm;
pub use qmp::{Qmp, QmpError, QmpEvent};
pub use spec::{
    Accel, AgentPort, AgentProtocol, Boot, Confine, CpuShape, DiskBus, DisplayProtocol,
    DisplaySpec, Firmware, MachineShape, Memory, Uefi, Vga, VmSpec,
};

/// What went wrong driving QEMU.
#[derive(Debug, thiserror::Error)]
pub enum QemuError {
    #[error("cannot start {qemu}: {reason}; is QEMU installed (apt-get install qemu-system-x86)?")]
    Spawn { qemu: String, reason: String },
    #[error("QEMU for {desktop} exited during start-up: {log}")]
    Exited { desktop: String, log: String },
    #[error("QEMU for {desktop} is not running: {why}")]
    NotRunning { desktop: String, why: String },
    #[error("QEMU monitor (QMP) of {desktop} failed")]
    Qmp {
        desktop: String,
        #[source]
        source: QmpError,
    },
    #[error("cannot {what}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("qemu-img could not {what}: {reason}")]
    Image { what: String, reason: String },
    #[error("guest of {desktop} is not ready")]
    NotReady {
        desktop: String,
        #[source]
        source: agent::AgentError,
    },
    #[error("the guest agent (qemu-ga) of {desktop} is not ready")]
    QgaNotReady {
        desktop: String,
        #[source]
        source: qga::QgaError,
    },
    #[error("QEMU of {desktop} has a channel that is not allowed")]
    Chardevs {
        desktop: String,
        #[source]
        source: chardev_policy::ChardevRefused,
    },
    #[error("cannot list the CPU models of {qemu}: {reason}")]
    CpuModels { qemu: String, reason: String },
    #[error("{desktop}: {what} failed: {reason}")]
    Operation {
        desktop: String,
        what: String,
        reason: String,
    },
}

/// Makes a QMP error of `desktop`'s QEMU into [`QemuError::Qmp`].
pub(crate) fn qmp_error(desktop: impl Into<String>) -> impl FnOnce(QmpError) -> QemuError {
    let desktop = desktop.into();
    move |source| QemuError::Qmp { desktop, source }
}

/// Makes an I/O error into [`QemuError::Io`]; `what` failed (e.g. "create /run/x").
pub(crate) fn io_error(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> QemuError {
    let what = what.into();
    move |source| QemuError::Io { what, source }
}
