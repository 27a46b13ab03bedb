#!/usr/bin/env bash
# make bench: runs the benchmarks of docs/benchmarks.md (about 15 minutes on
# a 2-core machine) and regenerates that report from the figures.
set -euo pipefail
cd "$(dirname "$0")/.."
GO=${GO:-go}
out=${BENCH_OUT:-docs/bench-results.txt}
start=$(date +%s)
{
	$GO test -run '^$' -bench 'BenchmarkDatapath' -benchtime 2000000x -count 5 ./filter/datapath
	$GO test -run '^$' -bench 'BenchmarkBucketTable|BenchmarkFailover/crash' -benchtime 20x -count 3 ./convergence
	$GO test -run '^$' -bench 'BenchmarkHeartbeatBandwidth' -benchtime 1x ./convergence
	$GO test -run '^$' -bench 'BenchmarkHeartbeatVerify' -benchtime 200000x -count 3 ./heartbeat
	$GO test -run '^$' -bench 'BenchmarkNonOwnerDrop|BenchmarkFailoverNamespaces|BenchmarkAgentFootprint' -benchtime 1x -timeout 20m ./bench
	$GO test -run '^$' -bench 'BenchmarkHTTP' -benchtime 1x -count 5 -timeout 20m ./bench
	$GO test -run '^$' -bench 'BenchmarkRequestCPU' -benchtime 1x -timeout 20m ./bench
} 2>&1 | tee "$out"
$GO run ./internal/benchreport -in "$out" -soak docs/bench-soak.txt -seconds $(( $(date +%s) - start )) -out docs/benchmarks.md
echo "wrote docs/benchmarks.md from $out"
