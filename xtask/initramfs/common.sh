# Shared by the /init scripts of the demo guest and the terminal VM (both busybox
# initramfs images built by xtask); installed as /lib/airlock/common.sh and sourced
# first. Part of the contract in docs/guest.md and docs/terminal-vm.md.

export PATH=/bin LC_ALL=C HOME=/root
umask 022
CR=$(printf '\r')

# The command shell of the tests: runs each line it reads in this one shell, so
# that the working directory and variables persist. A line that does not parse
# prints the error and sets $? to 2 instead of killing the shell. Commands get
# /dev/null as stdin, so they cannot eat the lines that follow. Never returns.
command_shell() {
	setstatus() { return "$1"; }
	cd /
	rc=0
	while IFS= read -r line; do
		line=${line%"$CR"}
		if sh -n -c "$line" 2>/dev/null; then
			setstatus "$rc" # so that `$?` in the line is the last line's status
			eval "$line" </dev/null
			rc=$?
		else
			sh -n -c "$line" 2>&1
			rc=2
		fi
	done
	exit 0
}

# PID 1's first steps: busybox's applets, then /proc, /sys, /dev and /tmp.
mount_basics() {
	/bin/busybox --install -s /bin
	mount -t proc proc /proc
	mount -t sysfs sysfs /sys
	mount -t devtmpfs devtmpfs /dev
	mount -t tmpfs -o mode=1777 tmpfs /tmp
}
