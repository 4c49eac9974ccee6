//! External programs the tests need, and the one rule for a missing one: the test
//! fails, naming the Debian package to install. A developer without QEMU may set
//! `AIRLOCK_SKIP_VM_TESTS=1` to make VM tests pass with a printed `SKIPPED` line
//! instead; CI never sets it, so there a missing tool is always a failure.
use anyhow::{bail, Result};
use std::ffi::OsStr;

/// The QEMU system emulator every VM test runs.
pub const QEMU: &str = "qemu-system-x86_64";

/// The variable that lets VM tests skip when a tool is missing (never set in CI).
pub const SKIP_ENV: &str = "AIRLOCK_SKIP_VM_TESTS";

/// What a VM test needs: QEMU and qemu-img (Debian 12: `qemu-system-x86 qemu-utils`).
pub const VM_TOOLS: &[(&str, &str)] = &[(QEMU, "qemu-system-x86"), ("qemu-img", "qemu-utils")];

/// Is `program` on PATH?
pub fn have(program: impl AsRef<OsStr>) -> bool {
    let program = program.as_ref();
    std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).any(|dir| dir.join(program).is_file()))
        .unwrap_or(false)
}

/// Fails, with the Debian packages to install, if any of `tools` (program, package) is
/// missing.
pub fn require(tools: &[(&str, &str)]) -> Result<()> {
    let missing: Vec<_> = tools.iter().filter(|(tool, _)| !have(tool)).collect();
    if missing.is_empty() {
        return Ok(());
    }
    let names: Vec<_> = missing.iter().map(|(t, _)| *t).collect();
    let mut pkgs: Vec<_> = missing.iter().map(|(_, p)| *p).collect();
    pkgs.dedup();
    bail!(
        "missing tool(s): {}; install them with `apt-get install -y --no-install-recommends {}` \
         (scripts/setup.sh does)",
        names.join(", "),
        pkgs.join(" ")
    )
}

/// For a test that needs `tools`: `Ok(true)` to go on, `Ok(false)` to skip (only with
/// `AIRLOCK_SKIP_VM_TESTS=1`, and said on stderr), or the error naming what to install.
pub fn available_or_skip(tools: &[(&str, &str)]) -> Result<bool> {
    match require(tools) {
        Ok(()) => Ok(true),
        Err(e) if std::env::var_os(SKIP_ENV).is_some_and(|v| v == "1") => {
            eprintln!("SKIPPED ({SKIP_ENV}=1): {e}");
            Ok(false)
        }
        Err(e) => Err(e),
    }
}

/// [`available_or_skip`] for QEMU, panicking with the install hint when it is missing:
/// the first line of a VM test, `if !airlock_testkit::tools::vm_test() { return; }`.
pub fn vm_test() -> bool {
    available_or_skip(VM_TOOLS).unwrap_or_else(|e| panic!("{e:#}"))
}
