#!/usr/bin/env bash
# make bench — performance numbers, printed as small tables.
#
# Sections (each a function named bench_*; SECTIONS at the bottom lists them
# in order — append new ones there):
#   bench_model_crypto  wall time of 'kbsctl model encrypt|decrypt' (decrypt
#                       by default, as cml-loader, and with
#                       --verify-plaintext-hash) against plain 'cp' of the
#                       same bytes, into tmpfs, best of BENCH_RUNS, for a
#                       2 GiB single file and 8 x 256 MiB; also SHA-256
#                       alone, and the lower bound it puts on encryption
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
FLOORS=()

# cpu_children VAR stores in VAR the CPU seconds (user + system) used so far
# by this shell's finished children. ('times' must run in this shell: a
# subshell's children are not ours.)
cpu_children() {
	local -n _cc=$1
	times >"$WORK/times"
	_cc=$(awk 'NR == 2 { s = 0; for (i = 1; i <= 2; i++) { split($i, a, "m"); s += a[1] * 60 + a[2] } printf "%.3f", s }' "$WORK/times")
}

# measure TVAR CPUVAR CMD... runs CMD and stores its wall time and its CPU
# time (user + system of every process it ran), in seconds.
measure() {
	local -n _mt=$1 _mc=$2
	shift 2
	local c0 c1
	cpu_children c0
	timed _mt "$@"
	cpu_children c1
	_mc=$(awk -v a="$c0" -v b="$c1" 'BEGIN { printf "%.2f", b - a }')
}

# ours TVAR CPUVAR RSSVAR ARGS... runs 'kbsctl model ARGS...', stores its
# wall and CPU time and raises RSSVAR (KiB) to its peak RSS.
ours() {
	local -n _ot=$1 _oc=$2 _orss=$3
	shift 3
	local rss_file=$WORK/rss rss
	measure _ot _oc env KBSCTL_REPORT_RSS=1 "$KBSCTL" model "$@" --quiet >/dev/null 2>"$rss_file"
	rss=$(sed -n 's/^kbsctl: peak-rss-kib=\([0-9]*\)$/\1/p' "$rss_file")
	if ((${rss:-0} > _orss)); then _orss=$rss; fi
}

# hash_only SRC: SHA-256 of every plaintext byte and nothing else, the one
# step encryption cannot spread over cores within a file: one openssl
# process per file, as many at once as there are CPUs. (openssl's SHA-256
# uses the same SHA-NI instructions as Go's crypto/sha256 and is at least as
# fast; bench_go's BenchmarkSHA256 in emdl shows Go's rate.)
hash_only() {
	if [[ -f $1 ]]; then
		openssl dgst -sha256 "$1" >/dev/null
	else
		find "$1" -type f -print0 | xargs -0 -n 1 -P "$(nproc)" openssl dgst -sha256 >/dev/null
	fi
}

# row SHAPE OP OURS CP BYTES CPU RSS_KIB [ref] appends a table row; a row
# over target counts as a MISS unless it is a reference row (ref).
row() {
	local shape=$1 op=$2 ours=$3 cp=$4 bytes=$5 cpu=$6 rss=$7 ref=${8:-} ratio gbps verdict
	ratio=$(awk -v o="$ours" -v c="$cp" 'BEGIN { printf "%.2f", (c > 0 ? o / c : 0) }')
	gbps=$(awk -v o="$ours" -v n="$bytes" 'BEGIN { printf "%.2f", (o > 0 ? n / 1e9 / o : 0) }')
	local target="<=${TARGET}x"
	if [[ -n $ref ]]; then
		verdict='(reference)' target=-
	elif awk -v r="$ratio" -v t="$TARGET" 'BEGIN { exit !(r <= t) }'; then verdict=PASS; else
		verdict=MISS
		MISSES=$((MISSES + 1))
	fi
	[[ -n $rss ]] && rss="$((rss / 1024))MiB"
	ROWS+=("$(printf '%-11s %-23s %7s %7s %6sx %6s %7s %8s   %-7s %s' \
		"$shape" "$op" "$ours" "$cp" "$ratio" "$gbps" "$cpu" "${rss:--}" "$target" "$verdict")")
}

# bench_shape NAME SRC BYTES measures encrypt, decrypt (the default, without
# the plaintext-hash re-check, as cml-loader), decrypt
# --verify-plaintext-hash and SHA-256 alone of SRC (a file or a directory)
# against cp, best of RUNS each, adds their rows and says whether the
# encrypt target is within reach at all.
bench_shape() {
	local name=$1 src=$2 bytes=$3
	local enc=$WORK/$name.emdl out=$WORK/$name.out key=$WORK/bench.key
	local t c i best_cp='' cp_cpu='' best_enc='' enc_cpu='' enc_rss=0 best_hash='' hash_cpu=''
	# Each round times cp, encrypt and SHA-256 alone back to back, so that
	# they see about the same machine load; a column's CPU is that of its
	# best (fastest) run.
	log "$name: encrypt and SHA-256 alone vs cp, best of $RUNS"
	for ((i = 1; i <= RUNS; i++)); do
		fresh "$out"
		measure t c cp -r "$src" "$out"
		if [[ -z $best_cp || $(min "$best_cp" "$t") != "$best_cp" ]]; then best_cp=$t cp_cpu=$c; fi
		fresh "$out" "$enc"
		ours t c enc_rss encrypt --key-file "$key" --key-id bench --in "$src" --out "$enc"
		if [[ -z $best_enc || $(min "$best_enc" "$t") != "$best_enc" ]]; then best_enc=$t enc_cpu=$c; fi
		if command -v openssl >/dev/null; then
			fresh
			measure t c hash_only "$src"
			if [[ -z $best_hash || $(min "$best_hash" "$t") != "$best_hash" ]]; then best_hash=$t hash_cpu=$c; fi
		fi
	done
	row "$name" encrypt "$best_enc" "$best_cp" "$bytes" "$enc_cpu" "$enc_rss"
	if [[ -n $best_hash ]]; then
		row "$name" "SHA-256 alone" "$best_hash" "$best_cp" "$bytes" "$hash_cpu" "" ref
		# Any encryptor must at least read, hash and write every byte. Even
		# with AES-GCM for free and perfect overlap it needs the longer of
		# SHA-256 alone (sequential within a file) and that CPU (hashing,
		# plus what cp spends reading and writing) over all CPUs.
		local floor
		floor=$(awk -v h="$best_hash" -v hc="$hash_cpu" -v cc="$cp_cpu" -v n="$(nproc)" \
			'BEGIN { f = (hc + cc) / n; if (h > f) f = h; printf "%.2f", f }')
		FLOORS+=("$(awk -v f="$floor" -v cp="$best_cp" -v t="$TARGET" -v name="$name" -v h="$best_hash" -v hc="$hash_cpu" -v cc="$cp_cpu" -v n="$(nproc)" -v e="$best_enc" -v ec="$enc_cpu" 'BEGIN {
			r = f / cp
			printf "%s encrypt: lower bound %.2f s = %.2fx cp (SHA-256 alone %.2f s; hash %.2f + cp %.2f CPU-s over %d CPUs, AES-GCM not counted) -> %s; ours %.2f s, %.2f CPU-s",
				name, f, r, h, hc, cc, n, (r > t ? "the " t "x target is out of reach here" : "the " t "x target is reachable in principle"), e, ec
		}')")
	fi

	# The last encrypt's output is the ciphertext for decrypt.
	local best_dec='' dec_cpu='' dec_rss=0 best_ver='' ver_cpu='' ver_rss=0
	best_cp='' cp_cpu=''
	log "$name: decrypt (default, and with --verify-plaintext-hash) vs cp, best of $RUNS"
	for ((i = 1; i <= RUNS; i++)); do
		fresh "$out"
		measure t c cp -r "$src" "$out"
		if [[ -z $best_cp || $(min "$best_cp" "$t") != "$best_cp" ]]; then best_cp=$t cp_cpu=$c; fi
		fresh "$out"
		ours t c dec_rss decrypt --key-file "$key" --in "$enc" --out "$out"
		if [[ -z $best_dec || $(min "$best_dec" "$t") != "$best_dec" ]]; then best_dec=$t dec_cpu=$c; fi
		fresh "$out"
		ours t c ver_rss decrypt --key-file "$key" --in "$enc" --out "$out" --verify-plaintext-hash
		if [[ -z $best_ver || $(min "$best_ver" "$t") != "$best_ver" ]]; then best_ver=$t ver_cpu=$c; fi
	done
	row "$name" decrypt "$best_dec" "$best_cp" "$bytes" "$dec_cpu" "$dec_rss"
	row "$name" "decrypt --verify-hash" "$best_ver" "$best_cp" "$bytes" "$ver_cpu" "$ver_rss"
	fresh "$out" "$enc"
}

bench_model_crypto() {
	heading "model encrypt/decrypt vs cp (tmpfs to tmpfs, best of $RUNS, wall time)"
	"$KBSCTL" model keygen "$WORK/bench.key" >/dev/null
	log "load average $(cut -d' ' -f1-3 /proc/loadavg)"

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

	printf '%-11s %-23s %7s %7s %7s %6s %7s %8s   %-7s %s\n' shape op "ours(s)" "cp(s)" ratio "GB/s" "cpu(s)" "peak RSS" target result
	printf '%s\n' "${ROWS[@]}"
	printf '(ours = bin/kbsctl with default workers; decrypt = the default, which authenticates every chunk but does\n'
	printf ' not re-check the plaintext SHA-256, as cml-loader; --verify-hash adds that re-check; ratio = ours / cp of\n'
	printf ' the same round; GB/s of plaintext; cpu = user + system CPU-seconds; SHA-256 alone = openssl dgst, one\n'
	printf ' process per file, %s at a time; %s CPUs, load average now %s: a loaded machine inflates\n' "$(nproc)" "$(nproc)" "$(cut -d' ' -f1-3 /proc/loadavg)"
	printf ' both columns unevenly)\n'
	if ((${#FLOORS[@]} > 0)); then printf '%s\n' "${FLOORS[@]}"; fi
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
