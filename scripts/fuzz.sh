#!/usr/bin/env bash
# Runs every Go fuzz target for the given budget each (default 60s): a
# duration (60s) or an input count (100000x). make test uses a count because a
# duration-bounded run can fail spuriously with "context deadline exceeded"
# when the deadline races a worker (go.dev/issue/75804, fixed in Go 1.27).
set -euo pipefail
cd "$(dirname "$0")/.."
t=${1:-60s}
for pkg in $(go list ./...); do
	for f in $(go test -list '^Fuzz' "$pkg" 2>/dev/null | grep '^Fuzz' || true); do
		echo "== $pkg $f ($t)"
		go test -run '^$' -fuzz "^$f\$" -fuzztime "$t" -timeout 10m "$pkg"
	done
done
