#!/usr/bin/env bash
# Installs what Airlock needs on a Debian 12 machine (idempotent), then builds the demo
# guest and the sample discs. Used by scripts/demo.sh, scripts/test.sh and .ci/run.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '\033[1m==> %s\033[0m\n' "$*"; }

SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi

need_pkgs=()
for p in qemu-system-x86 qemu-utils xorriso python3-gi gir1.2-spiceclientglib-2.0 curl; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || need_pkgs+=("$p")
done
# qemu-img must match the QEMU it drives (Debian 12: 7.2); the image may carry a newer one.
if command -v qemu-system-x86_64 >/dev/null && command -v qemu-img >/dev/null; then
    qv=$(qemu-system-x86_64 --version | head -1 | grep -oE '[0-9]+\.[0-9]+' | head -1)
    iv=$(qemu-img --version | head -1 | grep -oE '[0-9]+\.[0-9]+' | head -1)
    [ "$qv" = "$iv" ] || need_pkgs+=(qemu-utils)
fi
if [ ${#need_pkgs[@]} -gt 0 ]; then
    say "installing Debian packages: ${need_pkgs[*]}"
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get update -qq
    qver=$(apt-cache policy qemu-system-x86 | awk '/Candidate:/ {print $2}')
    pkgs=()
    for p in "${need_pkgs[@]}"; do
        case "$p" in
            qemu-utils) pkgs+=("qemu-utils=$qver") ;;
            *) pkgs+=("$p") ;;
        esac
    done
    $SUDO apt-get install -y -qq --no-install-recommends --allow-downgrades \
        qemu-system-x86 "${pkgs[@]}" >/dev/null
fi
say "QEMU: $(qemu-system-x86_64 --version | head -1); qemu-img: $(qemu-img --version | head -1)"

command -v cargo >/dev/null || { echo "cargo is missing: install Rust (https://rustup.rs)"; exit 1; }

say "building the demo guest (cargo xtask guest)"
cargo xtask guest
say "building the sample discs (cargo xtask sample-disc)"
cargo xtask sample-disc
