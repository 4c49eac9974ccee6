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
# The guard: no storage driver is ever bound to a USB device here. The
# initramfs has no usb-storage, uas, scsi_mod, sr_mod or sd_mod module at all,
# module autoloading is pointed at a stub that refuses (and logs) every
# request, and modprobe.d says the same for anyone calling modprobe. The
# forwarder claims the drive's interface through usbfs.

. /lib/airlock/common.sh

# The command shell (started below as `/init --shell`).
if [ "$$" != 1 ] && [ "$1" = --shell ]; then
	command_shell
fi

mount_basics
mkdir -p /run /etc/modprobe.d

PORT=/dev/ttyS0
say() { echo "$*" >"$PORT" 2>/dev/null; }

# ---------------------------------------------------------------- the guard
# Any module the kernel asks for (request_module) goes to this stub, which
# refuses it and writes its name to /run/modprobe-refused.
cat >/bin/modprobe-refuse <<'EOF'
#!/bin/sh
echo "$*" >>/run/modprobe-refused
exit 1
EOF
chmod 755 /bin/modprobe-refuse
echo /bin/modprobe-refuse >/proc/sys/kernel/modprobe
# No uevent helper either: nothing loads drivers by modalias on hotplug.
[ -w /proc/sys/kernel/hotplug ] && echo >/proc/sys/kernel/hotplug
cat >/etc/modprobe.d/airlock-guard.conf <<'EOF'
# The terminal never binds a storage driver to a disc drive.
install usb_storage /bin/false
install uas /bin/false
install sr_mod /bin/false
install sd_mod /bin/false
install cdrom /bin/false
install isofs /bin/false
install udf /bin/false
EOF

# ---------------------------------------------------------------- modules
while read -r mod args; do
	case "$mod" in '' | '#'*) continue ;; esac
	# shellcheck disable=SC2086 # module parameters, split on purpose
	insmod "/lib/modules/$mod.ko" $args 2>/dev/null || say "AIRLOCK-TERM-ERROR insmod $mod"
done </etc/modules

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

say "AIRLOCK-TERM-READY kernel=$(uname -r) airlock=$(airlock --version 2>&1 | head -n 1)"

while :; do wait; sleep 60; done
