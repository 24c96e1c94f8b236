#!/usr/bin/env bash
# make bench — performance numbers, printed as small tables.
#
# Sections (each a function named bench_*; SECTIONS at the bottom lists them
# in order — append new ones there):
#   bench_model_crypto  wall time of 'kbsctl model encrypt|decrypt' (decrypt
#                       also with --skip-plaintext-hash, what cml-loader does
#                       by default) against plain 'cp' of the same bytes,
#                       into tmpfs, best of BENCH_RUNS, for a 2 GiB single
#                       file and 8 x 256 MiB
#   bench_loader        cml-loader (attest + decrypt, process start to exit)
#                       against cp, into tmpfs (scripts/bench-loader.sh)
#   bench_release       key releases/s and latency against a kbs process
#                       (scripts/bench-release.sh)
#   bench_go            'go test -bench' of every package that has benchmarks,
#                       except those a section above already runs
#
# Environment: BENCH_RUNS (default 3), BENCH_TARGET (max ours/cp ratio,
# default 1.15), BENCH_SCALE (divides the model sizes, default 1; e.g. 8 for
# a quick check), BENCH_GO_BENCHTIME (default 1s), BENCH_STRICT=1 (exit 1 on
# any MISS); BENCH_LOADER_TARGET and BENCH_RELEASE_* (see the section
# scripts). Needs bash 5 (EPOCHREALTIME).
#
# A quick smoke run of every section (numbers meaningless):
#   BENCH_SCALE=64 BENCH_RUNS=1 BENCH_RELEASE_TIME=20x BENCH_GO_BENCHTIME=1x make bench
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
KBSCTL=$ROOT/bin/kbsctl
RUNS=${BENCH_RUNS:-3}
TARGET=${BENCH_TARGET:-1.15}
SCALE=${BENCH_SCALE:-1}
NEED_GIB=8 # plaintext + ciphertext + output of the larger shape, with margin
MIB=$((1 << 20))

FAILED=0 # set by a section that could not run; makes the exit status 1
MISSES=0 # rows over target

log() { printf 'bench: %s\n' "$*" >&2; }
die() { log "$*"; exit 1; }
heading() { printf '\n== %s\n' "$*"; }

# ---------------------------------------------------------------------------
# Shared setup: a scratch directory in tmpfs, removed on any exit.

setup() {
	[[ -n ${EPOCHREALTIME:-} ]] || die "needs bash 5 or later (EPOCHREALTIME)"
	[[ -x $KBSCTL ]] || die "$KBSCTL is missing; run 'make build' (or 'make bench', which builds first)"
	local base=/dev/shm
	if [[ ! -d $base || ! -w $base ]]; then
		base=${TMPDIR:-/tmp}
		log "warning: /dev/shm is not available; using $base, which may be a disk: the numbers then measure the disk"
	fi
	local avail_kib need_kib=$((NEED_GIB * 1024 * 1024 / SCALE))
	avail_kib=$(df -Pk "$base" | awk 'NR == 2 { print $4 }')
	if ((avail_kib < need_kib)); then
		die "$base has $((avail_kib / 1024)) MiB free; the model benchmark needs $((need_kib / 1024)) MiB (plaintext, ciphertext and output of a $((2048 / SCALE)) MiB model). Free some space, or run with BENCH_SCALE=4 for smaller models"
	fi
	WORK=$(mktemp -d "$base/cml-bench.XXXXXX")
	trap cleanup EXIT
	trap 'exit 130' INT TERM
	log "scratch directory $WORK ($((avail_kib / 1024)) MiB free), $(nproc) CPUs, load average $(cut -d' ' -f1-3 /proc/loadavg)"
}

cleanup() { [[ -n ${WORK:-} ]] && rm -rf "$WORK"; }

# random_bytes SEED BYTES FILE writes BYTES pseudo-random bytes (an AES-CTR
# keystream: incompressible, and far faster than /dev/urandom).
random_bytes() {
	local seed=$1 n=$2 file=$3
	if command -v openssl >/dev/null; then
		{ openssl enc -aes-128-ctr -nosalt -pbkdf2 -pass "pass:$seed" </dev/zero 2>/dev/null || true; } | head -c "$n" >"$file"
	else
		head -c "$n" /dev/urandom >"$file"
	fi
	[[ $(stat -c %s "$file") == "$n" ]] || die "could not generate $file"
}

# timed VAR CMD... runs CMD and stores its wall time in seconds in VAR.
timed() {
	local -n _out=$1
	shift
	local t0=$EPOCHREALTIME
	"$@"
	local t1=$EPOCHREALTIME
	_out=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", b - a }')
}

# min A B prints the smaller of two decimals ("" counts as +inf).
min() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "" || b + 0 < a + 0) print b; else print a }'; }

# fresh PATH... removes outputs and flushes, so every run starts alike.
fresh() {
	rm -rf "$@"
	sync
}

# ---------------------------------------------------------------------------
# Section: model encrypt/decrypt vs cp.

ROWS=()

# row SHAPE OP OURS CP BYTES RSS_KIB appends a table row and counts a MISS.
row() {
	local shape=$1 op=$2 ours=$3 cp=$4 bytes=$5 rss=$6 ratio gbps verdict
	ratio=$(awk -v o="$ours" -v c="$cp" 'BEGIN { printf "%.2f", (c > 0 ? o / c : 0) }')
	gbps=$(awk -v o="$ours" -v n="$bytes" 'BEGIN { printf "%.2f", (o > 0 ? n / 1e9 / o : 0) }')
	if awk -v r="$ratio" -v t="$TARGET" 'BEGIN { exit !(r <= t) }'; then verdict=PASS; else
		verdict=MISS
		MISSES=$((MISSES + 1))
	fi
	ROWS+=("$(printf '%-16s %-19s %8s %8s %6sx %6s %9s   <=%sx   %s' \
		"$shape" "$op" "$ours" "$cp" "$ratio" "$gbps" "${rss:--}" "$TARGET" "$verdict")")
}

# bench_shape NAME SRC BYTES measures encrypt, decrypt and decrypt with
# --skip-plaintext-hash of SRC (a file or a directory) against cp, best of
# RUNS each, and adds three rows.
bench_shape() {
	local name=$1 src=$2 bytes=$3
	local enc=$WORK/$name.emdl out=$WORK/$name.out key=$WORK/bench.key
	local t best_cp='' best_ours='' i
	log "$name: encrypt vs cp, best of $RUNS"
	for ((i = 1; i <= RUNS; i++)); do
		fresh "$out"
		timed t cp -r "$src" "$out"
		best_cp=$(min "$best_cp" "$t")
		fresh "$out" "$enc"
		timed t "$KBSCTL" model encrypt --quiet --key-file "$key" --key-id bench --in "$src" --out "$enc" >/dev/null
		best_ours=$(min "$best_ours" "$t")
	done
	row "$name" encrypt "$best_ours" "$best_cp" "$bytes" ""

	# The last encrypt's output is the ciphertext for decrypt. Each round
	# times cp, decrypt and decrypt --skip-plaintext-hash back to back, so
	# the three see about the same machine load.
	local best_skip='' rss_hash=0 rss_skip=0
	best_cp='' best_ours=''
	log "$name: decrypt (with and without the plaintext hash) vs cp, best of $RUNS"
	for ((i = 1; i <= RUNS; i++)); do
		fresh "$out"
		timed t cp -r "$src" "$out"
		best_cp=$(min "$best_cp" "$t")
		fresh "$out"
		decrypt_once t rss_hash "$key" "$enc" "$out"
		best_ours=$(min "$best_ours" "$t")
		fresh "$out"
		decrypt_once t rss_skip "$key" "$enc" "$out" --skip-plaintext-hash
		best_skip=$(min "$best_skip" "$t")
	done
	row "$name" decrypt "$best_ours" "$best_cp" "$bytes" "$((rss_hash / 1024))MiB"
	row "$name" "decrypt (skip hash)" "$best_skip" "$best_cp" "$bytes" "$((rss_skip / 1024))MiB"
	fresh "$out" "$enc"
}

# decrypt_once TVAR RSSVAR KEY ENC OUT [FLAGS...] runs 'kbsctl model decrypt',
# stores its wall time in TVAR and raises RSSVAR (KiB) to its peak RSS.
decrypt_once() {
	local -n _dt=$1 _drss=$2
	local key=$3 enc=$4 out=$5 rss_file=$WORK/rss rss
	shift 5
	timed _dt env KBSCTL_REPORT_RSS=1 "$KBSCTL" model decrypt --quiet --key-file "$key" --in "$enc" --out "$out" "$@" >/dev/null 2>"$rss_file"
	rss=$(sed -n 's/^kbsctl: peak-rss-kib=\([0-9]*\)$/\1/p' "$rss_file")
	if ((${rss:-0} > _drss)); then _drss=$rss; fi
}

bench_model_crypto() {
	heading "model encrypt/decrypt vs cp (tmpfs to tmpfs, best of $RUNS, wall time)"
	"$KBSCTL" model keygen "$WORK/bench.key" >/dev/null

	local size=$((2048 * MIB / SCALE))
	log "generating a $((size / MIB)) MiB single-file model"
	random_bytes bench-single "$size" "$WORK/single.bin"
	bench_shape "1x$((size / MIB))MiB" "$WORK/single.bin" "$size"
	rm -f "$WORK/single.bin"

	local shard=$((256 * MIB / SCALE))
	log "generating an 8 x $((shard / MIB)) MiB directory model"
	mkdir "$WORK/dir"
	for i in 1 2 3 4 5 6 7 8; do
		random_bytes "bench-shard-$i" "$shard" "$WORK/dir/model-0000$i-of-00008.safetensors"
	done
	bench_shape "8x$((shard / MIB))MiB" "$WORK/dir" $((8 * shard))
	rm -rf "$WORK/dir"

	printf '%-16s %-19s %8s %8s %7s %6s %9s   %-7s %s\n' shape op "ours(s)" "cp(s)" ratio "GB/s" "peak RSS" target result
	printf '%s\n' "${ROWS[@]}"
	printf '(ours = bin/kbsctl with default workers; skip hash = decrypt --skip-plaintext-hash, as cml-loader does by\n'
	printf ' default; ratio = ours / cp; GB/s of plaintext; peak RSS of decrypt;\n'
	printf ' %s CPUs, load average now %s: a loaded machine inflates both columns unevenly)\n' "$(nproc)" "$(cut -d' ' -f1-3 /proc/loadavg)"
}

# ---------------------------------------------------------------------------
# Section: Go benchmarks of every package that has any.

# Packages bench_go leaves out, relative to the module: cmd/kbs holds only
# BenchmarkRelease, a kbs process under load that bench_release runs and
# tabulates; test/... are process-level suites (they build the binaries and
# start kbs or SPIRE) whose numbers would duplicate the sections above.
GO_BENCH_SKIP=(cmd/kbs 'test/*')

bench_go() {
	heading "Go benchmarks (go test -bench . -benchmem)"
	local pkgs=() pkg dir rel skip module
	cd "$ROOT"
	module=$(go list -m)
	while read -r pkg dir; do
		rel=${pkg#"$module"/}
		for skip in "${GO_BENCH_SKIP[@]}"; do
			# shellcheck disable=SC2053 # $skip is a glob on purpose
			if [[ $rel == $skip ]]; then continue 2; fi
		done
		if grep -qsE '^func Benchmark[A-Z0-9_]' "$dir"/*_test.go; then pkgs+=("$pkg"); fi
	done < <(go list -f '{{.ImportPath}} {{.Dir}}' ./... 2>/dev/null)
	if ((${#pkgs[@]} == 0)); then
		printf 'no package has benchmarks yet\n'
		return
	fi
	if ! go test -run '^$' -bench . -benchmem -benchtime "${BENCH_GO_BENCHTIME:-1s}" "${pkgs[@]}"; then
		log "go benchmarks failed"
		FAILED=1
	fi
}

# ---------------------------------------------------------------------------

# shellcheck source=scripts/bench-loader.sh
source "$ROOT/scripts/bench-loader.sh" # bench_loader
# shellcheck source=scripts/bench-release.sh
source "$ROOT/scripts/bench-release.sh" # bench_release
SECTIONS=(bench_model_crypto bench_loader bench_release bench_go)

main() {
	setup
	local s
	for s in "${SECTIONS[@]}"; do "$s"; done
	heading "summary"
	printf '%d row(s) over target; %s\n' "$MISSES" "$([[ $FAILED == 0 ]] && echo "all sections ran" || echo "a section FAILED")"
	[[ $FAILED == 0 ]] || exit 1
	if [[ ${BENCH_STRICT:-0} == 1 && $MISSES != 0 ]]; then exit 1; fi
}

main "$@"
