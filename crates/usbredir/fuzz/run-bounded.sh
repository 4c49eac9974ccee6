#!/usr/bin/env bash
# Run the usbredir cargo-fuzz target for a bounded time on the stable toolchain.
#
#   crates/usbredir/fuzz/run-bounded.sh SECONDS
#
# Installs cargo-fuzz if missing. cargo-fuzz needs nightly-only rustc flags
# (-Zsanitizer, sanitizer coverage); RUSTC_BOOTSTRAP=1 lets stable accept them.
# Seeds come from ./seeds (regenerate with
# `cargo test -p usbredir --test fuzz_loop write_fuzz_seeds -- --ignored`);
# new inputs go to ./corpus/decode and crashes to ./artifacts/decode (both
# git-ignored). Exits non-zero if the fuzzer finds a crash.
set -euo pipefail

secs="${1:?usage: run-bounded.sh SECONDS}"
case "$secs" in
    ''|*[!0-9]*) echo "SECONDS must be a whole number, got: $secs" >&2; exit 2 ;;
esac

cd "$(dirname "$0")"

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "installing cargo-fuzz" >&2
    cargo install cargo-fuzz --locked
fi

export RUSTC_BOOTSTRAP=1
# Keep the fuzz build out of the workspace target dir unless told otherwise.
export CARGO_TARGET_DIR="${USBREDIR_FUZZ_TARGET_DIR:-$PWD/target}"

mkdir -p corpus/decode artifacts/decode
cargo fuzz build decode
cargo fuzz run decode corpus/decode seeds -- \
    -max_total_time="$secs" \
    -max_len=65536 \
    -timeout=10 \
    -rss_limit_mb=2048 \
    -print_final_stats=1 \
    -artifact_prefix=artifacts/decode/
