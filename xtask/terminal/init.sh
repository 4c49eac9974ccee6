#!/bin/busybox sh
# Airlock test "terminal VM": /init (PID 1) of the initramfs built by
# `cargo xtask terminal-guest`. It plays the HIS terminal: a real Linux USB
# stack (xHCI, usbcore, usbfs) with a USB optical drive on it, the `airlock`
# binary, and a network that reaches only the broker. The contract with the
# tests is docs/terminal-vm.md; keep the two in step.
#
#   ttyS0  kernel console (quiet) and a command shell: one command line per
#          line, run with eval in one shell; output comes back on ttyS0.
#          Lines the init prints itself start with AIRLOCK-TERM-.
#
# Like a stock Linux terminal it has the storage modules (usb-storage, uas,
# sr_mod, cdrom, isofs, udf), kmod's modprobe and udev, which loads drivers on
# hotplug and sets device node permissions. The terminal guard is what keeps a
# disc from a driver: /init runs `airlock guard install` before udev starts,
# unless the kernel command line has `airlock.guard=0` (an unguarded terminal,
# for the guard's own tests). The forwarder claims the drive's interface
# through usbfs, as user `clinic` (group `airlock`) or root.

. /lib/airlock/common.sh
export PATH=/sbin:/bin

# The command shell (started below as `/init --shell`).
if [ "$$" != 1 ] && [ "$1" = --shell ]; then
	command_shell
fi

mount_basics
mkdir -p /run /etc/modprobe.d

PORT=/dev/ttyS0
say() { echo "$*" >"$PORT" 2>/dev/null; }

# ---------------------------------------------------------------- modules
# The module index of the kernel's tree, then the boot modules, with kmod's
# tools (they honour modprobe.d; busybox's do not). Full paths: this busybox
# shell runs its own applets before anything on PATH.
/sbin/depmod -a 2>/dev/null || say "AIRLOCK-TERM-ERROR depmod"
while read -r mod args; do
	case "$mod" in '' | '#'*) continue ;; esac
	# shellcheck disable=SC2086 # module parameters, split on purpose
	/sbin/modprobe "$mod" $args 2>/dev/null || say "AIRLOCK-TERM-ERROR modprobe $mod"
done </etc/modules

# ---------------------------------------------------------------- the guard
guard=1
for w in $(cat /proc/cmdline); do
	case "$w" in airlock.guard=0) guard=0 ;; esac
done
if [ "$guard" = 1 ]; then
	airlock guard install >/run/guard-install.log 2>&1 ||
		say "AIRLOCK-TERM-ERROR guard install: $(tr '\n' ' ' </run/guard-install.log)"
fi

# ---------------------------------------------------------------- udev
# Hotplug as on a real terminal: drivers by modalias, device node owners and
# modes by rule (the guard's rule gives group airlock the drive's usbfs node).
/sbin/udevd --daemon 2>/dev/null || say "AIRLOCK-TERM-ERROR udevd"
udevadm trigger --action=add --type=subsystems
udevadm trigger --action=add --type=devices
udevadm settle --timeout=60 || say "AIRLOCK-TERM-ERROR udevadm settle"

# ---------------------------------------------------------------- network
# QEMU user networking (slirp): static address; the broker is reached at the
# address the test puts on the command line (10.0.2.2 = the host's loopback,
# or a guestfwd address).
ip=10.0.2.15/24 gw=10.0.2.2
for w in $(cat /proc/cmdline); do
	case "$w" in
	airlock.ip=*) ip=${w#airlock.ip=} ;;
	airlock.gw=*) gw=${w#airlock.gw=} ;;
	esac
done
ip link set lo up
n=0
while [ ! -e /sys/class/net/eth0 ] && [ $n -lt 50 ]; do
	sleep 0.1
	n=$((n + 1))
done
if ip link set eth0 up && ip addr add "$ip" dev eth0 && ip route add default via "$gw"; then
	say "AIRLOCK-TERM-NET ip=$ip gw=$gw"
else
	say "AIRLOCK-TERM-ERROR network"
fi

# ---------------------------------------------------------------- shell
stty -F "$PORT" raw -echo 115200 2>/dev/null
# PID 1 keeps the port open so input sent before the shell reads is kept.
exec 6<>"$PORT"
(while :; do
	setsid /init --shell <"$PORT" >"$PORT" 2>&1
	sleep 1
done) &

say "AIRLOCK-TERM-READY kernel=$(uname -r) guard=$guard airlock=$(airlock --version 2>&1 | head -n 1)"

while :; do wait; sleep 60; done
