#!/bin/sh
# Before removal (deb: "remove"; rpm: 0), not before an upgrade (deb:
# "upgrade"; rpm: 1): stop the agent, which leaves as host.on_exit says
# (default: drainstop, then restore the NIC), and disable it.
set -e
case "$1" in
remove | 0)
	if [ -d /run/systemd/system ]; then
		systemctl stop nlbd.service >/dev/null 2>&1 || true
		systemctl disable nlbd.service >/dev/null 2>&1 || true
	fi
	;;
esac
exit 0
