#!/usr/bin/env bash
# Installs what Airlock needs on a Debian 12 machine (idempotent), then builds the demo
# guest and the sample discs. Used by scripts/demo.sh, scripts/test.sh and .ci/run.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '\033[1m==> %s\033[0m\n' "$*"; }

SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi

need_pkgs=()
# The libraries of kmod and udev, which `cargo xtask terminal-guest` copies into the
# terminal VM from this host (usually installed already). The tests also use setpriv
# (util-linux: run as a desktop's uid) and sqlite3 (read the broker's database); the
# console, metrics and audit-forwarding tests use chromium + chromium-driver, promtool
# (prometheus) and a private rsyslogd (rsyslog, rsyslog-gnutls); the key-image tests check
# DICOM objects with dciodvfy (dicom3tools), dcmdump (dcmtk) and pydicom, and send them
# to a private Orthanc. The demo guest's image viewer draws with a Debian console font
# (console-setup-linux: /usr/share/consolefonts). UEFI desktops use OVMF (ovmf) and a TPM per
# desktop swtpm (swtpm, swtpm-tools). `cargo xtask qga-guest` makes its UEFI disk without
# loop mounts: sfdisk (fdisk), mkfs.vfat (dosfstools), mmd/mcopy/mdir (mtools).
for p in console-setup-linux ovmf swtpm swtpm-tools fdisk dosfstools mtools xorriso genisoimage python3-gi gir1.2-spiceclientglib-2.0 curl virt-viewer xvfb imagemagick sqlite3 util-linux \
    chromium chromium-driver prometheus rsyslog rsyslog-gnutls dicom3tools dcmtk python3-pydicom orthanc \
    libkmod2 libacl1 libblkid1 libcap2 libselinux1 libzstd1 liblzma5 libssl3 libpcre2-8-0; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || need_pkgs+=("$p")
done
# QEMU and qemu-img must be the same version (Debian 12: 7.2); the machine image may
# carry a newer qemu-utils, which blocks installing QEMU 7.2 unless both are named.
need_qemu=no
if ! command -v qemu-system-x86_64 >/dev/null || ! command -v qemu-img >/dev/null; then
    need_qemu=yes
else
    qv=$(qemu-system-x86_64 --version | head -1 | grep -oE '[0-9]+\.[0-9]+' | head -1)
    iv=$(qemu-img --version | head -1 | grep -oE '[0-9]+\.[0-9]+' | head -1)
    [ "$qv" = "$iv" ] || need_qemu=yes
fi
if [ ${#need_pkgs[@]} -gt 0 ] || [ "$need_qemu" = yes ]; then
    export DEBIAN_FRONTEND=noninteractive
    say "updating the package lists"
    $SUDO apt-get update -qq
    if [ "$need_qemu" = yes ]; then
        qver=$(apt-cache policy qemu-system-x86 | awk '/Candidate:/ {print $2}')
        need_pkgs+=("qemu-system-x86=$qver" "qemu-utils=$qver")
    fi
    say "installing Debian packages: ${need_pkgs[*]}"
    $SUDO apt-get install -y -qq --no-install-recommends --allow-downgrades "${need_pkgs[@]}" >/dev/null
fi
say "QEMU: $(qemu-system-x86_64 --version | head -1); qemu-img: $(qemu-img --version | head -1)"

command -v cargo >/dev/null || { echo "cargo is missing: install Rust (https://rustup.rs)"; exit 1; }

say "building the demo guest (cargo xtask guest)"
cargo xtask guest
say "building the sample discs (cargo xtask sample-disc)"
cargo xtask sample-disc
