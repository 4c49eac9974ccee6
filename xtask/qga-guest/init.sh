#!/bin/busybox sh
# Airlock qga test guest: /init (PID 1) of the initramfs built by `cargo xtask qga-guest`.
#
# A stock guest for the broker's `probe = "qga"` path: Debian's own qemu-guest-agent on
# the agent port, no Airlock marker. The contract is docs/guest.md ("The qga test
# image"); keep the two in step.
#
#   ttyS0  agent port (qemu-ga -m isa-serial), unless the virtio-serial port
#          org.qemu.guest_agent.0 exists (qemu-ga -m virtio-serial there)
#   ttyS1  test hook, only when the port exists: one AIRLOCK-QGA-GUEST line a second
#   tty1   the logged-in user `clinician` (a login shell; its utmp record is what
#          guest-get-users reports)
#
# Switches, as words on the kernel command line or as SMBIOS OEM strings (QEMU
# `-smbios type=11,value=WORD`, for disk boots whose command line is in grub.cfg):
#   airlock.agent=isa|virtio          the agent port (default: virtio if the port exists)
#   airlock.qga_allow_exec=1          run qemu-ga without its block list
#   airlock.qga_mode=garbage|overlong|wrong-id|silent
#                                     a hostile stand-in instead of qemu-ga

. /lib/airlock/common.sh

mount_basics
mkdir -p /run/qga /var/log
QGA=/usr/sbin/qemu-ga
LOG=/run/qga/init.log
log() { echo "airlock-qga-init: $*" >>"$LOG"; echo "airlock-qga-init: $*" >/dev/tty1 2>/dev/null; }

# ---------------------------------------------------------------- modules
# /etc/modules is written by xtask in dependency order: "name [param=value...]".
while read -r mod args; do
	case "$mod" in '' | '#'*) continue ;; esac
	# shellcheck disable=SC2086 # args are module parameters, split on purpose
	insmod "/lib/modules/$mod.ko" $args 2>/dev/null || log "insmod $mod failed"
done </etc/modules

# UEFI variables (the SecureBoot state of the test hook); absent under SeaBIOS.
if [ -d /sys/firmware/efi/efivars ]; then
	mount -t efivarfs efivarfs /sys/firmware/efi/efivars || log "mounting efivarfs failed"
fi

# ---------------------------------------------------------------- switches
# The SMBIOS OEM strings (type 11): after the structure's formatted part (its length is
# byte 1), NUL-terminated strings.
oem_strings() {
	local e len
	for e in /sys/firmware/dmi/entries/11-*; do
		[ -r "$e/raw" ] || continue
		len=$(od -An -tu1 -j1 -N1 "$e/raw" | tr -d ' ')
		[ -n "$len" ] || continue
		tail -c +$((len + 1)) "$e/raw" | tr '\0' '\n'
	done
}

AGENT_KIND=auto
QGA_MODE=agent
ALLOW_EXEC=0
for w in $(cat /proc/cmdline) $(oem_strings); do
	case "$w" in
	airlock.agent=*) AGENT_KIND=${w#*=} ;;
	airlock.qga_mode=*) QGA_MODE=${w#*=} ;;
	airlock.qga_allow_exec=1) ALLOW_EXEC=1 ;;
	esac
done
case "$QGA_MODE" in
agent | garbage | overlong | wrong-id | silent) ;;
*)
	log "unknown airlock.qga_mode=$QGA_MODE: running qemu-ga"
	QGA_MODE=agent
	;;
esac

# ---------------------------------------------------------------- agent port
# COM1, or the virtio-serial port named org.qemu.guest_agent.0 (the stock agent's name, which the broker gives it in qga pools),
# linked as udev would at /dev/virtio-ports/<name>. The ports of a virtio console
# device appear shortly after its driver loads: wait for them when there is one.
AGENT=/dev/ttyS0
METHOD=isa-serial
VPORT=/dev/virtio-ports/org.qemu.guest_agent.0
has_virtio_console() {
	grep -qx 0x0003 /sys/bus/virtio/devices/*/device 2>/dev/null
}
link_virtio_ports() {
	local p name
	for p in /sys/class/virtio-ports/*; do
		[ -r "$p/name" ] || continue
		name=$(cat "$p/name")
		case "$name" in '' | */* | .*) continue ;; esac
		mkdir -p /dev/virtio-ports
		ln -sf "../${p##*/}" "/dev/virtio-ports/$name"
	done
}
case "$AGENT_KIND" in
isa | isa-serial) ;;
virtio | virtio-serial | auto)
	n=0
	while has_virtio_console && [ ! -e "$VPORT" ] && [ "$n" -lt 100 ]; do
		link_virtio_ports
		[ -e "$VPORT" ] || sleep 0.1
		n=$((n + 1))
	done
	if [ -e "$VPORT" ]; then
		AGENT=$VPORT
		METHOD=virtio-serial
	elif [ "$AGENT_KIND" != auto ]; then
		log "airlock.agent=$AGENT_KIND but no virtio-serial port org.qemu.guest_agent.0: using COM1"
	fi
	;;
*) log "unknown airlock.agent=$AGENT_KIND: using COM1" ;;
esac

# ---------------------------------------------------------------- the user's session
# `clinician` logged in on tty1 as a real login does it: busybox login writes the
# USER_PROCESS record to /var/run/utmp (and /var/log/wtmp) that qemu-ga's
# guest-get-users reads with getutxent(3), then runs the user's shell there.
chown 1000:1000 /home/clinician
: >/var/run/utmp
: >/var/log/wtmp
setsid sh -c 'exec login -f clinician </dev/tty1 >/dev/tty1 2>&1' &

# ---------------------------------------------------------------- the agent
# What qemu-ga may answer: the broker's readiness, clock and template proof. Every other
# command (guest-exec*, guest-file-*, passwords, SSH keys, freezing, suspend, shutdown,
# ...) is blocked: qemu-ga 7.2 has --block-rpcs only, so the block list is every command
# this qemu-ga knows (`qemu-ga -b help`) but these.
ALLOWED="guest-sync-delimited guest-sync guest-ping guest-info guest-get-time guest-set-time guest-get-osinfo guest-get-users guest-get-devices"
block_list() {
	local c out=
	for c in $("$QGA" -b help); do
		case " $ALLOWED " in *" $c "*) ;; *) out=$out${out:+,}$c ;; esac
	done
	echo "$out"
}

# qemu-ga, restarted if it ever exits.
run_qemu_ga() {
	set -- -m "$METHOD" -p "$AGENT" -t /run/qga -f /run/qga/qemu-ga.pid
	if [ "$ALLOW_EXEC" = 1 ]; then
		log "qemu-ga without a block list (airlock.qga_allow_exec=1)"
	else
		set -- "$@" -b "$(block_list)"
	fi
	while :; do
		"$QGA" "$@" >>/run/qga/qemu-ga.log 2>&1
		log "qemu-ga exited ($?); restarting it"
		sleep 1
	done
}

# A hostile stand-in for qemu-ga on the same port (airlock.qga_mode). It holds the port
# as fd 6; every answer is written with one printf. A virtio-serial port reads as end of
# file while no host side is connected: then it waits and reads again, as qemu-ga does.
hostile_agent() {
	if [ "$METHOD" = isa-serial ]; then
		stty -F "$AGENT" raw -echo 2>/dev/null || log "stty $AGENT failed"
	fi
	exec 6<>"$AGENT"
	while :; do
		if [ "$QGA_MODE" = silent ]; then
			cat <&6 >/dev/null
		else
			hostile_answers
		fi
		sleep 0.2
	done
}
hostile_answers() {
	local line id
	while IFS= read -r line <&6; do
		case "$QGA_MODE" in
		garbage)
			# The sync sentinel, then a line that is not JSON.
			printf '\377<html>airlock garbage: not JSON {{{\n' >&6
			;;
		overlong)
			# The sentinel, then one line of 10 MiB (its newline at the very end).
			{
				printf '\377'
				head -c 10485760 /dev/zero | tr '\0' x
				printf '\n'
			} >&6
			;;
		wrong-id)
			# A well-formed answer to the sync, with an id it was not sent.
			id=$(echo "$line" | sed -n 's/.*"id"[^0-9]*\([0-9][0-9]*\).*/\1/p')
			case "$line" in
			*guest-sync-delimited*) printf '\377{"return": %s}\n' "$((${id:-0} + 1))" >&6 ;;
			*guest-sync*) printf '{"return": %s}\n' "$((${id:-0} + 1))" >&6 ;;
			*guest-ping*) printf '{"return": {}}\n' >&6 ;;
			*) printf '{"error": {"class": "CommandNotFound", "desc": "airlock wrong-id mode"}}\n' >&6 ;;
			esac
			;;
		esac
	done
}

log "agent: $QGA_MODE on $AGENT ($METHOD)"
if [ "$QGA_MODE" = agent ]; then
	run_qemu_ga &
else
	hostile_agent &
fi

# The agent (or its stand-in) has the port open: a reader connecting after the first
# test-hook line finds it listening. At most 10 s.
agent_port_open() {
	local real fd
	real=$(readlink -f "$AGENT")
	for fd in /proc/[0-9]*/fd/*; do
		[ "$(readlink "$fd" 2>/dev/null)" = "$real" ] && return 0
	done
	return 1
}
n=0
while ! agent_port_open && [ "$n" -lt 100 ]; do
	sleep 0.1
	n=$((n + 1))
done
agent_port_open || log "nothing has $AGENT open after 10 s"

# ---------------------------------------------------------------- test hook (ttyS1)
# Only when COM2 is really there (the kernel lists every legacy port; an absent one is
# "uart:unknown").
has_com2() {
	grep -q '^1: uart:' /proc/tty/driver/serial 2>/dev/null &&
		! grep -q '^1: uart:unknown' /proc/tty/driver/serial
}
SB_VAR=/sys/firmware/efi/efivars/SecureBoot-8be4df61-93ca-11d2-aa0d-00e098032b8c
status_line() {
	local tpm=no efi=no sb=none v
	if [ -e /sys/class/tpm/tpm0 ]; then
		v=$(cat /sys/class/tpm/tpm0/tpm_version_major 2>/dev/null)
		if [ -z "$v" ] || [ "$v" = 2 ]; then tpm=yes; fi
	fi
	[ -d /sys/firmware/efi ] && efi=yes
	if [ -r "$SB_VAR" ]; then
		# 4 bytes of attributes, then the value: its last byte.
		v=$(od -An -tu1 -v "$SB_VAR" | tr -s ' \n' '\n\n' | sed '/^$/d' | tail -n 1)
		[ -n "$v" ] && sb=$v
	fi
	echo "AIRLOCK-QGA-GUEST tpm=$tpm efi=$efi secureboot=$sb clock=$(date +%s)"
}
if has_com2; then
	stty -F /dev/ttyS1 raw -echo 2>/dev/null
	exec 7>/dev/ttyS1
	# Firmware (OVMF, GRUB) may have left half a line on the port: end it, so every
	# status line starts a line.
	echo >&7
	while :; do
		status_line >&7
		sleep 1
	done
fi
while :; do sleep 3600; done
