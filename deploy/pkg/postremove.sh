#!/bin/sh
# After removal: let systemd forget the unit. /etc/nlb (configuration and
# keys) and /var/lib/nlb stay unless the package is purged (deb).
set -e
if [ -d /run/systemd/system ]; then
	systemctl daemon-reload >/dev/null 2>&1 || true
fi
if [ "$1" = purge ]; then
	rm -rf /var/lib/nlb
fi
exit 0
