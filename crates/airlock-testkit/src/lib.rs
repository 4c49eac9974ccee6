//! Airlock's test machinery, in one place: every test that starts a process or a VM,
//! and every benchmark, reaches Airlock through this crate.
//!
//! - [`process`]: child processes and temporary directories that never outlive a test
//!   (killed on drop, on panic, and on SIGINT/SIGTERM), process sweeps by path.
//! - [`net`]: free ports, Unix-socket connects that wait for QEMU, nonces.
//! - [`tools`]: which external programs a test needs, and what happens when one is
//!   missing (the test fails, naming the Debian package; see [`tools::require`]).
//! - [`artifacts`]: the demo guest, the terminal VM and the sample discs, found through
//!   their manifests under `build/` or built once by `cargo xtask …` under a file lock;
//!   the host binaries built by cargo.
//! - [`broker`]: `airlockd` as a process: one typed configuration written to TOML,
//!   start, stop, `kill -9`, restart, and its HTTP API.
//! - [`serial`]: the reader of the demo guest's serial contract (`docs/guest.md`):
//!   readiness, agent answers, CD reports.
//! - [`shell`]: the line shell on a serial port (a desktop's control port, the terminal
//!   VM's console). [`qmp`]: a QMP client for the VMs the kit starts.
//! - [`guest_vm`]: the demo guest booted directly, without a broker (the local USB CD
//!   drive baseline, a usb-redir socket, or its agent port). [`terminal_vm`]: a terminal
//!   with a real Linux USB stack. [`iso`]: ISO images made for a test.
//! - [`fake_root`]: a terminal's system tree in a directory, for the guard's tests.
//! - [`browser`]: headless chromium over the DevTools protocol, for the web console.
//! - [`orthanc`]: a private Orthanc as the PACS of the key-image tests; [`worklist`]: a
//!   private Modality Worklist (`wlmscpfs`).
//! - [`rsyslog`]: a private `rsyslogd` receiving syslog over TCP or TLS on loopback.
//! - [`audit_fill`]: a database filled with a large, valid audit trail (a million
//!   records in seconds), for scale tests and benchmarks.
//! - [`audit`]: the audit-trail invariant checker. [`spice`]: a real SPICE client, and a
//!   viewer that stays connected and presses keys. [`tls`]: a site CA and a broker
//!   certificate.
//! - [`terminal_config`]: the terminal's `terminal.toml` for `airlock open`; [`x11`]: an
//!   X server (Xvfb) and its screenshots, for the real display client; [`image`]: PPM
//!   images and finding the desktop's framebuffer in a screenshot.
//!
//! Errors are `anyhow` with context: they are read by a person looking at a failed test.
//! The `tcp-pump` binary of this crate is what a terminal VM's restricted network runs
//! per connection; `usb-control` (built statically by [`artifacts::usb_control`]) is
//! what a hostile disc sends to its drive, run inside a desktop guest.
#![forbid(unsafe_code)]

pub mod artifacts;
pub mod audit;
pub mod audit_fill;
pub mod broker;
pub mod browser;
pub mod fake_root;
pub mod guest_vm;
pub mod image;
pub mod iso;
pub mod net;
pub mod orthanc;
pub mod process;
pub mod qmp;
pub mod rsyslog;
pub mod serial;
pub mod shell;
pub mod spice;
pub mod terminal_config;
pub mod terminal_vm;
pub mod tls;
pub mod tools;
pub mod worklist;
pub mod x11;

pub use artifacts::{Artifacts, FileEntry, FileList, GuestManifest, TerminalManifest};
pub use broker::{Broker, BrokerConfig};
pub use guest_vm::{GuestVm, GuestVmOptions};
pub use process::{Proc, RunDir};
pub use serial::{CdReport, CdSummary, SerialLog};
pub use shell::Shell;
pub use terminal_vm::{TerminalNet, TerminalOptions, TerminalVm};

/// Runs a future to completion from synchronous code (a benchmark, a `#[test]` without
/// a runtime) on one runtime shared by the whole process, so HTTP connections pooled by
/// one call are still usable by the next. Must not be called from inside a runtime.
pub fn block_on<F: std::future::Future>(f: F) -> F::Output {
    static RT: std::sync::OnceLock<tokio::runtime::Runtime> = std::sync::OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap_or_else(|e| panic!("cannot start the test kit's tokio runtime: {e}"))
    })
    .block_on(f)
}

/// The SHA-256 of `data` in lower-case hex.
pub fn sha256_hex(data: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(data))
}
