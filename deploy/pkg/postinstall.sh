#!/bin/sh
# After install or upgrade (deb: "configure" [old version]; rpm: 1 install,
# 2 upgrade). A fresh install starts nothing: the configuration and the
# cluster key must be written first (docs/operations.md). An upgrade hands
# the running agent over to the new binary without dropping a connection:
# SIGUSR2 makes it exit keeping its data plane and NIC, and systemd
# (Restart=always) starts the new nlbd, which adopts them.
# NLB_TEST_SYSTEMCTL stands in for systemctl in the package-upgrade test
# (deploy.TestPackageUpgrade), which has no systemd to restart the agent.
set -e
systemctl=${NLB_TEST_SYSTEMCTL:-systemctl}
if [ -d /run/systemd/system ] || [ -n "${NLB_TEST_SYSTEMCTL:-}" ]; then
	$systemctl daemon-reload >/dev/null 2>&1 || true
	if $systemctl is-active --quiet nlbd.service; then
		$systemctl kill --signal=USR2 nlbd.service || true
	fi
fi
exit 0
