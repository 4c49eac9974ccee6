#!/usr/bin/env bash
# Sets up a fresh machine and runs every test: formatting, lints, the whole test suite
# (real QEMU under TCG, real SQLite, a real SPICE client), and a bounded fuzz run.
set -euo pipefail
cd "$(dirname "$0")/.."
say() { printf '\033[1m==> %s\033[0m\n' "$*"; }

# A one-shot run gains nothing from incremental caches (3.6 GB on a clean build).
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"
# A clean build and the VM tests' disks need about 12 GB; say so before a linker dies of it.
need_gb=12
target_dir="${CARGO_TARGET_DIR:-target}"
[ -d "$target_dir" ] || target_dir=.
free_gb=$(df -Pk "$target_dir" | awk 'NR==2 {print int($4/1048576)}' || true)
if [ -n "$free_gb" ] && [ "$free_gb" -lt "$need_gb" ]; then
    echo "error: only ${free_gb} GB free here; the build and tests need about ${need_gb} GB." >&2
    echo "       Free disk space (or set CARGO_TARGET_DIR to a larger disk) and run again." >&2
    exit 1
fi

scripts/setup.sh
say "building the terminal VM image for the end-to-end tests (cargo xtask terminal-guest)"
cargo xtask terminal-guest
# What a hostile disc runs in a desktop in the end-to-end tests, static (the demo guest has
# no libc); the same build as airlock_testkit::artifacts::usb_control, done here so that
# no test waits for it.
say "building the end-to-end tests' guest tool (usb-control, static)"
RUSTFLAGS="-C target-feature=+crt-static" cargo build --release \
    --target x86_64-unknown-linux-gnu --target-dir "${CARGO_TARGET_DIR:-target}/usb-control" \
    -p airlock-testkit --bin usb-control

say "cargo fmt --check"
cargo fmt --all -- --check
say "cargo clippy --all-targets -D warnings"
cargo clippy --workspace --all-targets -- -D warnings
say "test suite (cargo nextest; VM tests run in a limited-parallelism group)"
if cargo nextest --version >/dev/null 2>&1; then
    cargo nextest run --workspace --profile ci
else
    cargo test --workspace -- --test-threads=3
fi
say "bounded fuzzing of the usbredir codec (${FUZZ_SECONDS:-60} s)"
crates/usbredir/fuzz/run-bounded.sh "${FUZZ_SECONDS:-60}"
say "all tests passed"
