//! Why a pool operation failed.
use airlock_core::DesktopState;
use airlock_qemu::QemuError;
use airlock_store::StoreError;

/// Why a pool operation failed.
#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    #[error("no clean desktop is free; retry in {retry_after_s} s")]
    NoFreeDesktop { retry_after_s: u64 },
    #[error("no active lease with that id for this terminal")]
    LeaseNotFound,
    #[error("unknown desktop {0}")]
    UnknownDesktop(String),
    #[error("desktop {desktop} is {state}; only a broken desktop can be repaired")]
    NotBroken {
        desktop: String,
        state: DesktopState,
    },
    #[error("the desktop could not be prepared for the lease ({0}); it is being reset, try again")]
    Setup(String),
    #[error("a USB stream is already open for this lease; close it first")]
    UsbBusy,
    #[error("the desktop's USB port cannot be reached ({0}); try again")]
    UsbUnavailable(String),
    #[error("store: {0}")]
    Store(#[from] StoreError),
    #[error("QEMU: {0}")]
    Qemu(#[from] QemuError),
    #[error("internal error: {0}")]
    Internal(String),
}
