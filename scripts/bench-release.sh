#!/usr/bin/env bash
# Key release benchmark: releases/s and p50/p99 latency of whole key releases
# against a real kbs process on loopback (mTLS, TDX simulator quotes with full
# collateral and CRL checks, collateral cached, one audit record per release),
# at 1, 16 and 64 concurrent callers, each on its own connection. Each release
# is GetChallenge + quote + ReleaseKey + HPKE open (cmd/kbs BenchmarkRelease).
#
# Two ways to run it:
#   scripts/bench-release.sh           standalone: prints the table, exit 1 on failure
#                                      (and on a MISS with BENCH_STRICT=1)
#   source scripts/bench-release.sh    from scripts/bench.sh: defines the section
#                                      function bench_release, which uses bench.sh's
#                                      log/heading helpers and FAILED/MISSES counters
#
# Environment: BENCH_RELEASE_TIME (go test -benchtime per caller count,
# default 5s), BENCH_RELEASE_MIN_RPS (default 300) and BENCH_RELEASE_MAX_P99_MS
# (default 100): the targets, checked at 64 callers.

bench_release() {
	local root=${ROOT:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)}
	local benchtime=${BENCH_RELEASE_TIME:-5s}
	local min_rps=${BENCH_RELEASE_MIN_RPS:-300} max_p99=${BENCH_RELEASE_MAX_P99_MS:-100}
	heading "key release: kbs on loopback, mTLS + simulated TDX quotes, full verification ($benchtime per row)"
	log "running BenchmarkRelease in cmd/kbs ($(nproc) CPUs, load average $(cut -d' ' -f1-3 /proc/loadavg))"
	local out
	if ! out=$(cd "$root" && go test -run '^$' -bench '^BenchmarkRelease$' -benchtime "$benchtime" -count 1 ./cmd/kbs 2>&1); then
		printf '%s\n' "$out" >&2
		log "key release benchmark failed"
		FAILED=1
		return
	fi
	# Lines look like:
	# BenchmarkRelease/callers=64-2  3000  3333 ns/op  1.0 client-cpu-ms/op  4.7 kbs-cpu-ms/op
	#   150.1 p50-ms  210.3 p99-ms  301.2 releases/s
	local rows
	rows=$(printf '%s\n' "$out" | awk -v min_rps="$min_rps" -v max_p99="$max_p99" '
		/^BenchmarkRelease\/callers=/ {
			split($1, a, "[=-]"); callers = a[2]
			rps = p50 = p99 = kcpu = ccpu = ""
			for (i = 3; i < NF; i++) {
				if ($(i + 1) == "releases/s") rps = $i
				if ($(i + 1) == "p50-ms") p50 = $i
				if ($(i + 1) == "p99-ms") p99 = $i
				if ($(i + 1) == "kbs-cpu-ms/op") kcpu = $i
				if ($(i + 1) == "client-cpu-ms/op") ccpu = $i
			}
			target = "-"; verdict = ""
			if (callers == 64) {
				target = sprintf(">=%d/s,p99<=%dms", min_rps, max_p99)
				verdict = (rps + 0 >= min_rps && p99 + 0 <= max_p99) ? "PASS" : "MISS"
			}
			printf "%-8s %8d %11.1f %8.2f %8.2f %9.2f %9.2f   %-20s %s\n", callers, $2, rps, p50, p99, kcpu, ccpu, target, verdict
		}')
	if [[ -z $rows ]]; then
		printf '%s\n' "$out" >&2
		log "no benchmark rows in the output"
		FAILED=1
		return
	fi
	printf '%-8s %8s %11s %8s %8s %9s %9s   %-20s %s\n' callers releases "releases/s" "p50(ms)" "p99(ms)" "kbs-CPU" "cli-CPU" target result
	printf '%s\n' "$rows"
	printf '(client and kbs share this machine; each release = GetChallenge + simulator quote + ReleaseKey + HPKE open;\n kbs-CPU / cli-CPU = CPU milliseconds per release of the kbs process / the benchmark client)\n'
	local misses
	misses=$(printf '%s\n' "$rows" | grep -c 'MISS$' || true)
	MISSES=$((${MISSES:-0} + misses))
}

# Standalone: minimal versions of bench.sh's helpers, then the section.
if [[ ${BASH_SOURCE[0]} == "$0" ]]; then
	set -euo pipefail
	log() { printf 'bench: %s\n' "$*" >&2; }
	heading() { printf '\n== %s\n' "$*"; }
	FAILED=0
	MISSES=0
	bench_release
	[[ $FAILED == 0 ]] || exit 1
	if [[ ${BENCH_STRICT:-0} == 1 && $MISSES != 0 ]]; then exit 1; fi
fi
