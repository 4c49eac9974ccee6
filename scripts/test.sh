#!/usr/bin/env bash
# Sets up a fresh machine and runs every test: formatting, lints, the whole test suite
# (real QEMU under TCG, real SQLite, a real SPICE client), and a bounded fuzz run.
set -euo pipefail
cd "$(dirname "$0")/.."
say() { printf '\033[1m==> %s\033[0m\n' "$*"; }

scripts/setup.sh
say "building the terminal VM image for the end-to-end tests (cargo xtask terminal-guest)"
cargo xtask terminal-guest

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
