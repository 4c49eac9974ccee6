//! What a QEMU child process does between `fork` and `exec`: enter its run directory
//! (while still root, so the 0700 state directory above it can be traversed), then drop
//! to its own uid and gid with no supplementary groups. QEMU is thus *started* as that
//! uid (its `-sandbox elevateprivileges=deny` forbids `-runas`).
//!
//! It joins its cgroups right after `exec`, moved there by the broker
//! ([`join_cgroups`]) while it starts: on cgroup v1 moving a process waits for an RCU
//! grace period (about 10 ms here, per start), which in the child would delay QEMU's
//! whole start-up.
//!
//! The only unsafe code of the crate: `pre_exec` is unsafe because the closure runs in
//! the forked child, where only async-signal-safe work is allowed.
#![allow(unsafe_code)]

use crate::QemuError;
use std::ffi::CString;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// Moves process `pid` into the cgroups whose `cgroup.procs` files are open in `procs`
/// (blocking: each move may wait for an RCU grace period).
pub fn join_cgroups(pid: i32, procs: &[OwnedFd]) -> std::io::Result<()> {
    let text = pid.to_string();
    for f in procs {
        rustix::io::write(f, text.as_bytes())?;
    }
    Ok(())
}

/// Arranges for `cmd`'s child to work in `run_dir` and run as `uid` (gid the same number)
/// if given, with no supplementary group but the `kvm` one if given.
pub fn become_desktop(
    cmd: &mut tokio::process::Command,
    run_dir: &Path,
    ids: Option<(u32, Option<u32>)>,
) -> Result<(), QemuError> {
    // Everything the closure uses is made here, before the fork: it allocates nothing.
    let dir = CString::new(run_dir.as_os_str().as_bytes()).map_err(|_| QemuError::Operation {
        desktop: run_dir.display().to_string(),
        what: "enter the run directory".into(),
        reason: "the path has a NUL byte".into(),
    })?;
    let ids = ids.map(|(u, kvm)| {
        (
            rustix::thread::Uid::from_raw(u),
            rustix::thread::Gid::from_raw(u),
            kvm.map(rustix::thread::Gid::from_raw),
        )
    });
    let closure = move || -> std::io::Result<()> {
        rustix::process::chdir(dir.as_c_str())?;
        if let Some((uid, gid, kvm)) = ids {
            // The raw syscalls change only the calling thread, which in the forked child
            // is the only one.
            match kvm {
                Some(k) => rustix::thread::set_thread_groups(&[k])?,
                None => rustix::thread::set_thread_groups(&[])?,
            }
            rustix::thread::set_thread_res_gid(gid, gid, gid)?;
            rustix::thread::set_thread_res_uid(uid, uid, uid)?;
        }
        Ok(())
    };
    // SAFETY: the closure runs in the child between fork and exec. It only makes raw
    // system calls through rustix (chdir, setgroups, setresgid, setresuid) on data
    // prepared before the fork; it takes no lock and allocates no memory, so it is
    // async-signal-safe as `pre_exec` requires.
    unsafe {
        cmd.pre_exec(closure);
    }
    Ok(())
}
