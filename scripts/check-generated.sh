#!/usr/bin/env bash
# Rebuilds the eBPF objects in a scratch copy and compares them with the
# committed ones, so a change to filter/datapath/bpf/*.c without `make generate`
# fails the build.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! ls filter/datapath/*_bpfel.o >/dev/null 2>&1; then
	echo "check-generated: no generated eBPF objects yet"; exit 0
fi
if ! command -v clang >/dev/null; then
	echo "check-generated: clang missing (make deps)" >&2; exit 1
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cp -r go.mod go.sum filter "$tmp/"
(cd "$tmp/filter/datapath" && go generate ./... >/dev/null)
fail=0
for f in filter/datapath/*_bpfel.o filter/datapath/*_bpfel.go; do
	if ! cmp -s "$f" "$tmp/$f"; then
		echo "check-generated: $f differs from what filter/datapath/bpf/*.c generates; run make generate" >&2
		fail=1
	fi
done
[ $fail = 0 ] && echo "check-generated: committed eBPF objects match the C source"
exit $fail
