#!/bin/busybox sh
# Airlock demo guest: /init (PID 1) of the initramfs built by `cargo xtask guest`.
#
# The broker and the tests depend on what this script prints; the contract is
# docs/guest.md. Keep the two in step.
#
#   ttyS0  agent port: AIRLOCK-* lines out, airlock-* commands in (raw, no echo);
#          the virtio-serial port org.airlock.agent.0 instead when the broker
#          gives one (pool.agent_port = "virtio")
#   ttyS1  root shell, only with `airlock.control=1` on the kernel command line
#   tty1   human-readable status for the clinician (seen over SPICE/VNC), drawn by
#          fbcon on /dev/fb0; its keyboard: F or Enter is "Finish" (the guest
#          powers off)
#   tty2   the image viewer's (/bin/demo-viewer, crates/demo-viewer): in the
#          foreground while it shows a disc's images; F or Enter there is "Finish"
#          too, the arrow keys page (the viewer reads /dev/input/event*)
#   vda    writable disk (virtio-blk); never mounted, tests write markers to it

. /lib/airlock/common.sh

# The test-only control shell on ttyS1 (started below as `/init --control-shell`).
if [ "$$" != 1 ] && [ "$1" = --control-shell ]; then
	command_shell
fi

mount_basics
mkdir -p /run/airlock/cd /media
mkfifo /run/airlock/view.fifo

AGENT=/dev/ttyS0
SCREEN=/dev/tty1
STATE=/run/airlock/cd
ESC=$(printf '\033')
set -o pipefail

log() { echo "airlock-init: $*" >"$SCREEN" 2>/dev/null; }

# One complete line per write(2), so lines from concurrent writers never mix.
# Through fd 6, which PID 1 holds on the port (below): a virtio-serial port
# has one opener at a time, so nothing opens it again.
agent_say() { echo "$*" >&6 2>/dev/null; }

# ---------------------------------------------------------------- modules
# /etc/modules is written by xtask in dependency order: "name [param=value...]".
while read -r mod args; do
	case "$mod" in '' | '#'*) continue ;; esac
	# shellcheck disable=SC2086 # args are module parameters, split on purpose
	insmod "/lib/modules/$mod.ko" $args 2>/dev/null || log "insmod $mod failed"
done </etc/modules

# ---------------------------------------------------------------- agent port
# COM1, unless the broker gave a virtio-serial port named org.airlock.agent.0;
# it gets the link udev would make, /dev/virtio-ports/<name>. The ports of a
# virtio console device (virtio device id 3) appear shortly after its driver
# loads, once the host has announced them: wait for them when there is one.
has_virtio_console() {
	grep -qx 0x0003 /sys/bus/virtio/devices/*/device 2>/dev/null
}
find_agent_port() {
	for p in /sys/class/virtio-ports/*; do
		[ -r "$p/name" ] || continue
		name=$(cat "$p/name")
		case "$name" in '' | */* | .*) continue ;; esac
		mkdir -p /dev/virtio-ports
		ln -sf "../${p##*/}" "/dev/virtio-ports/$name"
		[ "$name" = org.airlock.agent.0 ] && AGENT=/dev/virtio-ports/$name
	done
}
if has_virtio_console; then
	n=0
	while find_agent_port && [ "$AGENT" = /dev/ttyS0 ] && [ "$n" -lt 100 ]; do
		sleep 0.1
		n=$((n + 1))
	done
fi
[ -e "$AGENT" ] || log "no agent port ($AGENT)"

# ---------------------------------------------------------------- clock
# Monotonic nanoseconds (immune to airlock-settime). busybox date has no %N;
# /proc/timer_list has ns resolution, /proc/uptime 10 ms as a fallback.
now_ns() {
	t=$(sed -n '3{s/^now at \([0-9]*\) nsecs$/\1/p;q}' /proc/timer_list 2>/dev/null)
	if [ -z "$t" ]; then
		read -r t _ </proc/uptime
		t=$((${t%.*} * 1000000000 + ${t#*.} * 10000000))
	fi
	echo "$t"
}

# ---------------------------------------------------------------- console screen
FINISH_PROMPT='Press F (or Enter) to finish and leave this desktop.'
# The clinician sees tty1: a header and one status block per CD drive.
draw() {
	local f found
	{
		printf '%s[H%s[2J' "$ESC" "$ESC"
		printf '%s[1;37;44m%-80s%s[0m\n\n' "$ESC" "  AIRLOCK  -  isolated CD reader" "$ESC"
		found=
		for f in "$STATE"/*.screen; do
			[ -e "$f" ] || continue
			found=1
			cat "$f"
			echo
		done
		if [ -z "$found" ]; then
			printf '  Connect the CD drive at your terminal and insert a disc.\n'
		fi
		printf '\n%s[1;37;42m%-80s%s[0m\n' "$ESC" "  $FINISH_PROMPT" "$ESC"
	} >"$SCREEN" 2>/dev/null
}

# screen DEV COLOUR TEXT...: replace DEV's status block (COLOUR: ANSI code)
screen() {
	local d=$1 colour=$2 l
	shift 2
	{
		printf '  %s[1;%sm' "$ESC" "$colour"
		printf '%s\n' "$1"
		printf '%s[0m' "$ESC"
		shift
		for l in "$@"; do printf '    %s\n' "$l"; done
	} >"$STATE/$d.screen"
	draw
}

# Only printable ASCII from the disc reaches the consoles.
clean() { tr -c '\n -~' '?'; }

# ---------------------------------------------------------------- image viewer
# The disc's DICOM images full-screen (docs/guest.md, "The image viewer"): one viewer,
# for the disc read last. When it has an image to show it switches to tty2 (empty, no
# cursor: fbcon draws nothing over the image); when its disc goes /init stops it and
# switches back to tty1, whose text fbcon redraws. It prints its AIRLOCK-VIEW lines on
# the agent port (fd 6) and reads paging commands from VIEW_FIFO, which PID 1 holds
# open (fd 8) so that a write to it never waits.
VIEW_PID=$STATE/view.pid
VIEW_FIFO=/run/airlock/view.fifo
VIEW_LOG=/run/airlock/viewer.log

# view_running: is a viewer running (its pid in VIEW_PID, not a zombie)?
view_running() {
	local pid dev
	[ -s "$VIEW_PID" ] && read -r pid dev <"$VIEW_PID" &&
		grep -q demo-viewer "/proc/$pid/cmdline" 2>/dev/null
}

# view_stop [DEV]: stop the viewer (only DEV's, if given) and give the console the
# screen back.
view_stop() {
	local pid dev n=0
	[ -s "$VIEW_PID" ] && read -r pid dev <"$VIEW_PID" || return 0
	[ -n "$1" ] && [ "$1" != "$dev" ] && return 0
	kill "$pid" 2>/dev/null
	wait "$pid" 2>/dev/null
	while grep -q demo-viewer "/proc/$pid/cmdline" 2>/dev/null && [ "$n" -lt 40 ]; do
		sleep 0.05
		n=$((n + 1))
	done
	rm -f "$VIEW_PID"
	chvt 1 2>/dev/null
}

view_start() {
	local d=$1
	view_stop
	/bin/demo-viewer --dev "$d" --root "/media/$d" --font /lib/airlock/font.psf \
		--control "$VIEW_FIFO" --vt 2 >&6 2>>"$VIEW_LOG" </dev/null &
	echo "$! $d" >"$VIEW_PID"
}

# ---------------------------------------------------------------- CD monitor
# Media detection is polled: every 0.5 s each /sys/block/sr* is opened (the
# open makes the kernel revalidate the medium and fails with ENOMEDIUM when
# there is none) and the medium is fingerprinted by its size and the ISO 9660
# primary volume descriptor, so a disc swapped between two polls is still seen.
EMPTY_MD5=d41d8cd98f00b204e9800998ecf8427e
# Readahead for CD drives, set when a drive appears (the kernel's default is
# 128 KiB). Optical media are read sequentially, and every command costs a
# transfer round trip (three for a USB Bulk-Only drive); larger readahead
# windows mean fewer, larger commands, up to the 1 MiB a SuperSpeed USB drive
# takes per command.
CD_READ_AHEAD_KB=1024

cd_fingerprint() {
	local d=$1 size n
	{ :; } 2>/dev/null <"/dev/$d" || return 1
	read -r size <"/sys/block/$d/size" || return 1
	[ "$size" -gt 0 ] 2>/dev/null || return 1
	if dd if="/dev/$d" of="$STATE/$d.pvd" bs=2048 skip=16 count=1 2>/dev/null &&
		[ -s "$STATE/$d.pvd" ]; then
		rm -f "$STATE/$d.retry"
		set -- $(md5sum <"$STATE/$d.pvd")
		echo "$size $1"
		return 0
	fi
	# The drive may still be spinning up: give it a few polls before
	# declaring the medium unreadable (it is then reported by cd_insert).
	n=0
	[ -e "$STATE/$d.retry" ] && read -r n <"$STATE/$d.retry"
	n=$((n + 1))
	echo "$n" >"$STATE/$d.retry"
	[ "$n" -ge 6 ] || return 2
	echo "$size $EMPTY_MD5"
}

cd_insert() {
	local d=$1 mnt=/media/$1 tmp=$STATE/$1 t0 t1 t2 t3 t4 t5 files bytes size name sum ms secs label top mb
	mkdir -p "$mnt"
	echo 3 >/proc/sys/vm/drop_caches 2>/dev/null
	screen "$d" 33 "CD drive $d: disc inserted, reading..."
	t0=$(now_ns)
	if ! mount -t iso9660 -o ro "/dev/$d" "$mnt" 2>/dev/null; then
		agent_say "AIRLOCK-CD-ERROR dev=$d reason=mount-failed"
		screen "$d" 31 "CD drive $d: this disc cannot be read (not an ISO 9660 data disc)."
		return
	fi
	t1=$(now_ns)
	agent_say "AIRLOCK-CD-INSERTED dev=$d"

	t2=$(now_ns)
	# Regular files, sorted by their relative path in C (byte) order.
	if ! (cd "$mnt" && find . -type f -print0 | sort -z) >"$tmp.list0" ||
		! (cd "$mnt" && xargs -0 -r stat -c %s <"$tmp.list0") >"$tmp.sizes"; then
		agent_say "AIRLOCK-CD-ERROR dev=$d reason=list-failed"
		screen "$d" 31 "CD drive $d: the disc's directory cannot be read."
		return
	fi
	t3=$(now_ns)
	# Names are shown with anything but printable ASCII replaced by '?'.
	tr '\n\0' '?\n' <"$tmp.list0" | sed 's|^\./||' | clean >"$tmp.names"
	paste -d ' ' "$tmp.sizes" "$tmp.names" >"$tmp.files"
	files=0 bytes=0
	while read -r size name; do
		agent_say "AIRLOCK-CD-FILE $size $name"
		files=$((files + 1))
		bytes=$((bytes + size))
	done <"$tmp.files"

	t4=$(now_ns)
	if sum=$( (cd "$mnt" && xargs -0 -r cat <"$tmp.list0") | sha256sum); then
		t5=$(now_ns)
		set -- $sum
		sum=$1
		ms=$(((t1 - t0 + t3 - t2 + t5 - t4) / 1000000))
		secs=$(printf '%d.%03d' $((ms / 1000)) $((ms % 1000)))
		agent_say "AIRLOCK-CD dev=$d files=$files bytes=$bytes sha256=$sum seconds=$secs"
		label=$(dd if="$STATE/$d.pvd" bs=1 skip=40 count=32 2>/dev/null | tr -c 'A-Za-z0-9_.-' ' ' | sed 's/ *$//')
		top=$(ls -p "$mnt" 2>/dev/null | head -n 12 | clean | tr '\n' ' ')
		mb=$((bytes / 1000000)).$((bytes % 1000000 / 100000))
		screen "$d" 32 "CD drive $d: disc read OK" \
			"Label:   $label" \
			"Content: $top" \
			"$files files, $mb MB, read in $secs s" \
			"SHA-256: $sum"
		view_start "$d"
	else
		agent_say "AIRLOCK-CD-ERROR dev=$d reason=read-error"
		screen "$d" 31 "CD drive $d: read error; the disc may be damaged."
	fi
	rm -f "$tmp.list0" "$tmp.sizes" "$tmp.names" "$tmp.files"
}

cd_remove() {
	local d=$1
	view_stop "$d"
	if grep -q " /media/$d " /proc/mounts; then
		umount "/media/$d" 2>/dev/null || umount -l "/media/$d" 2>/dev/null
	fi
	rm -f "$STATE/$d.fp" "$STATE/$d.pvd" "$STATE/$d.retry"
	agent_say "AIRLOCK-CD-REMOVED dev=$d"
}

cd_poll() {
	local sys d fp old f
	for sys in /sys/block/sr*; do
		[ -e "$sys" ] || continue
		d=${sys##*/}
		if [ ! -e "$STATE/$d.screen" ]; then
			echo "$CD_READ_AHEAD_KB" >"$sys/queue/read_ahead_kb" 2>/dev/null
			screen "$d" 37 "CD drive $d: connected, no disc."
		fi
		fp=$(cd_fingerprint "$d")
		[ $? = 2 ] && continue
		old=
		[ -e "$STATE/$d.fp" ] && read -r old <"$STATE/$d.fp"
		[ "$fp" = "$old" ] && continue
		if [ -n "$old" ]; then
			cd_remove "$d"
			screen "$d" 37 "CD drive $d: disc removed."
		fi
		if [ -n "$fp" ]; then
			echo "$fp" >"$STATE/$d.fp"
			cd_insert "$d"
		fi
	done
	# Drives that went away (USB unplugged, forwarding ended).
	for f in "$STATE"/*.screen; do
		[ -e "$f" ] || continue
		d=${f##*/}
		d=${d%.screen}
		[ -e "/sys/block/$d" ] && continue
		[ -e "$STATE/$d.fp" ] && cd_remove "$d"
		rm -f "$f"
		draw
	done
}

cd_monitor() {
	cd /
	while :; do
		cd_poll
		sleep 0.5
	done
}

# ---------------------------------------------------------------- finish (tty1, tty2)
# The clinician's way out, like a desktop image's sign-out: F or Enter on the
# console keyboard powers the guest off. The broker sees the shutdown (QMP
# SHUTDOWN), ends the lease as signed out and resets the desktop. Keys go to the
# foreground VT: one reader on tty1 (the text screen), one on tty2 (the viewer's).
finish_keys() {
	local k pid tty=$1
	cd /
	while :; do
		# One key, not echoed; Enter gives an empty line. A failed read (no
		# keyboard yet) is retried.
		if IFS= read -r -s -n 1 k <"$tty" 2>/dev/null; then
			case "$k" in
			f | F | '')
				# The text screen back from the viewer, for the message.
				if view_running; then
					read -r pid _ <"$VIEW_PID"
					kill "$pid" 2>/dev/null
				fi
				chvt 1 2>/dev/null
				{
					printf '%s[H%s[2J\n' "$ESC" "$ESC"
					printf '  Finishing: this desktop is being closed and wiped.\n'
				} >"$SCREEN" 2>/dev/null
				sync
				poweroff -f
				;;
			esac
		else
			sleep 1
		fi
	done
}

# ---------------------------------------------------------------- agent (ttyS0 or virtio)
# printable WORD: set P to WORD less anything but printable non-blank ASCII
# (no fork in the common case: pings arrive every few hundred ms at boot).
printable() {
	P=$1
	case "$P" in *[!!-~]*) P=$(printf '%s' "$1" | tr -cd '!-~' | cut -c1-64) ;; esac
}

agent() {
	local line
	while IFS= read -r line; do
		line=${line%"$CR"}
		set -f
		# shellcheck disable=SC2086 # split the command line into words
		set -- $line
		set +f
		case "$1" in
		'') ;;
		airlock-ping)
			printable "$2"
			agent_say "AIRLOCK-READY $P"
			;;
		airlock-settime)
			case "$2" in
			'' | *[!0-9]*)
				printable "$2"
				agent_say "AIRLOCK-TIME-ERROR $P"
				;;
			*)
				if date -s "@$2" >/dev/null 2>&1; then
					agent_say "AIRLOCK-TIME-SET $2"
				else
					agent_say "AIRLOCK-TIME-ERROR $2"
				fi
				;;
			esac
			;;
		airlock-view)
			case "$2" in
			next | prev | first | last)
				if view_running; then
					echo "$2" >"$VIEW_FIFO"
				else
					agent_say "AIRLOCK-VIEW-ERROR no-viewer"
				fi
				;;
			*)
				printable "$2"
				agent_say "AIRLOCK-VIEW-ERROR bad-command $P"
				;;
			esac
			;;
		*)
			printable "$1"
			agent_say "AIRLOCK-ERROR unknown-command $P"
			;;
		esac
	done
}

# ---------------------------------------------------------------- start
stty -F "$AGENT" raw -echo 115200 2>/dev/null
# PID 1 keeps both ports open for good: while a port is open its termios
# stay set and input is buffered, so nothing sent is lost while a reader
# starts or restarts.
# Everything started from here inherits fd 6 (agent_say, the agent loop).
# On a virtio-serial port a read sees end-of-file while the broker is not
# connected: the loop waits and reads again.
exec 6<>"$AGENT"
# The image viewer's control FIFO, held open so that the agent's writes never wait.
exec 8<>/run/airlock/view.fifo
(while :; do
	agent <&6
	sleep 0.2
done) &

control=
for w in $(cat /proc/cmdline); do
	[ "$w" = airlock.control=1 ] && control=1
done
if [ -n "$control" ]; then
	# Test-only root shell (see --control-shell above): a script, so not
	# interactive (no prompt, no line editing, no echo). Restarted if it
	# exits (`exit`).
	stty -F /dev/ttyS1 raw -echo 115200 2>/dev/null
	exec 7<>/dev/ttyS1
	(while :; do
		setsid /init --control-shell </dev/ttyS1 >/dev/ttyS1 2>&1
		sleep 1
	done) &
fi

# Console blanking off (setterm's ESC [ 9 ; 0 ]), on all VTs; nothing echoes on the
# viewer's VT, even between two reads of its keys.
printf '%s[9;0]' "$ESC" >"$SCREEN" 2>/dev/null
stty -F /dev/tty2 -echo 2>/dev/null
draw
cd_monitor &
finish_keys /dev/tty1 &
finish_keys /dev/tty2 &
agent_say "AIRLOCK-READY boot"

# PID 1 must not exit; reap orphans.
while :; do wait; sleep 60; done
