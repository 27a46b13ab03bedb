#!/usr/bin/env bash
# Installs what a fresh Debian or Ubuntu machine lacks to build and test
# nlb (docs/operations.md, "Supported systems"), and warns when the running
# kernel is too old for the data plane.
set -euo pipefail
kernel=$(uname -r)
major=${kernel%%.*}
rest=${kernel#*.}
minor=${rest%%[!0-9]*}
if [ "$major" -lt 6 ] || { [ "$major" -eq 6 ] && [ "$minor" -lt 6 ]; }; then
	echo "deps: warning: kernel $kernel is older than 6.6: nlb's data plane needs TCX (docs/operations.md, Supported systems)" >&2
fi
need=()
command -v clang >/dev/null || need+=(clang llvm)
[ -e /usr/include/bpf/bpf_helpers.h ] || need+=(libbpf-dev)
command -v ip >/dev/null || need+=(iproute2)
command -v nft >/dev/null || need+=(nftables)
command -v tcpdump >/dev/null || need+=(tcpdump)
command -v perf >/dev/null || need+=(linux-perf)
command -v make >/dev/null || need+=(make)
command -v systemd-analyze >/dev/null || need+=(systemd)
command -v dpkg-deb >/dev/null || need+=(dpkg)
command -v promtool >/dev/null || need+=(prometheus)
command -v chromium >/dev/null || need+=(chromium)
[ -x /usr/lib/frr/bgpd ] || need+=(frr)
if [ ${#need[@]} -gt 0 ]; then
	if [ "$(id -u)" != 0 ]; then
		echo "deps: missing ${need[*]}; run as root to install them" >&2
		exit 1
	fi
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq
	apt-get install -y -qq "${need[@]}" >/dev/null
	# The BGP test runs FRR in its own namespace; the system service the
	# package enables is not needed (and not wanted on a build machine).
	if [[ " ${need[*]} " == *" frr "* ]] && command -v systemctl >/dev/null; then
		systemctl disable --now frr >/dev/null 2>&1 || true
	fi
fi
go mod download
