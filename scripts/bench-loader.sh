#!/usr/bin/env bash
# Loader benchmark: wall time from process start to exit of cml-loader
# loading a model into tmpfs (/dev/shm) — mTLS to a real kbs on loopback, a
# simulated TDX quote with full verification, the key release, then
# authentication and decryption of every chunk (cml-loader's default: no
# plaintext SHA-256 re-check) — against 'cp' ('cp -r' for a
# directory) of the plaintext in the same run, best of BENCH_RUNS each, for
# a 2 GiB single-file model and an 8 x 256 MiB directory model. The broker
# is set up as in 'make demo' (scripts/lib/broker.sh); the model is
# encrypted with its key (kbsctl model encrypt --kbs).
#
# Two ways to run it:
#   scripts/bench-loader.sh          standalone: prints the table, exit 1 on failure
#                                    (and on a MISS with BENCH_STRICT=1)
#   source scripts/bench-loader.sh   from scripts/bench.sh: defines the section
#                                    function bench_loader, which uses bench.sh's
#                                    log/heading helpers and FAILED/MISSES counters
#
# Environment: BENCH_RUNS (default 3), BENCH_LOADER_TARGET (max loader/cp
# ratio, default 1.2), BENCH_SCALE (divides the model sizes, default 1),
# CML_BIN_DIR (binaries, default bin/). Needs bash 5 (EPOCHREALTIME) and about
# 6 GiB free in /dev/shm (checked first); everything it writes there is removed
# on any exit.

# shellcheck source=scripts/lib/broker.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/broker.sh"

_BL_DIR=        # scratch directory of a running bench_loader
_BL_PREV_TRAP=  # the EXIT trap command that was set before bench_loader's

# _bl_cleanup stops the broker and removes the scratch directory.
_bl_cleanup() {
	broker_stop || true
	if [[ -n $_BL_DIR ]]; then rm -rf "$_BL_DIR"; fi
	_BL_DIR=
}

# _bl_timed VAR RSSVAR CMD... runs CMD (output to /dev/null, stderr kept in
# $_BL_DIR/stderr) and stores its wall time in seconds in VAR and its peak
# RSS in KiB in RSSVAR (empty without GNU time). Returns CMD's exit code.
_bl_timed() {
	local -n _t=$1 _r=$2
	shift 2
	local t0 t1 rc=0 rss_file=$_BL_DIR/rss
	_r=''
	if [[ -x /usr/bin/time ]]; then
		t0=$EPOCHREALTIME
		/usr/bin/time -f %M -o "$rss_file" "$@" >/dev/null 2>"$_BL_DIR/stderr" || rc=$?
		t1=$EPOCHREALTIME
		_r=$(tail -n 1 "$rss_file" 2>/dev/null || true)
		[[ $_r =~ ^[0-9]+$ ]] || _r=''
	else
		t0=$EPOCHREALTIME
		"$@" >/dev/null 2>"$_BL_DIR/stderr" || rc=$?
		t1=$EPOCHREALTIME
	fi
	_t=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", b - a }')
	return "$rc"
}

# _bl_min A B prints the smaller of two decimals ("" counts as +inf).
_bl_min() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "" || b + 0 < a + 0) print b; else print a }'; }

# _bl_random SEED BYTES FILE writes BYTES pseudo-random bytes (an AES-CTR
# keystream when openssl is there: incompressible and fast).
_bl_random() {
	local seed=$1 n=$2 file=$3
	if command -v openssl >/dev/null; then
		{ openssl enc -aes-128-ctr -nosalt -pbkdf2 -pass "pass:$seed" </dev/zero 2>/dev/null || true; } | head -c "$n" >"$file"
	else
		head -c "$n" /dev/urandom >"$file"
	fi
	[[ $(stat -c %s "$file") == "$n" ]]
}

# _bl_field NAME FILE: the value of "NAME" in the loader's summary line.
_bl_field() { { grep '"msg":"model decrypted"' "$2" || true; } | sed -n "s/.*\"$1\":\"\{0,1\}\([^\",}]*\).*/\1/p"; }

# _bl_shape NAME SRC BYTES measures cml-loader against cp for the model at
# SRC and prints one row. Sets _BL_NOTE.
_bl_shape() {
	local name=$1 src=$2 bytes=$3 target=$4
	local enc=$_BL_DIR/$name.emdl out=$_BL_DIR/$name.out
	local t rss i best_cp='' best_ours='' best_rss=0 att='' mbs=''
	log "$name: encrypting with the broker's key"
	if ! kbsctl model encrypt --kbs "$BROKER_ADDR" --key-id bench-model --in "$src" --out "$enc" --quiet >/dev/null; then
		log "$name: kbsctl model encrypt failed"
		return 1
	fi
	log "$name: cml-loader vs cp, best of $RUNS"
	for ((i = 1; i <= RUNS; i++)); do
		rm -rf "$out" && sync
		_bl_timed t rss cp -r "$src" "$out" || { log "cp failed: $(cat "$_BL_DIR/stderr")"; return 1; }
		best_cp=$(_bl_min "$best_cp" "$t")
		rm -rf "$out" && sync
		if ! _bl_timed t rss "$BIN_DIR/cml-loader" "${BROKER_LOADER_FLAGS[@]}" --key bench-model --src "$enc" --dst "$out" --timeout 30s; then
			cat "$_BL_DIR/stderr" >&2
			log "$name: cml-loader failed"
			return 1
		fi
		if [[ -z $best_ours ]] || awk -v a="$t" -v b="$best_ours" 'BEGIN { exit !(a < b) }'; then
			att=$(_bl_field attestation_ms "$_BL_DIR/stderr")
			mbs=$(_bl_field throughput_mb_s "$_BL_DIR/stderr")
		fi
		best_ours=$(_bl_min "$best_ours" "$t")
		if ((${rss:-0} > best_rss)); then best_rss=$rss; fi
	done
	if ! cmp -s <(cd "$src" 2>/dev/null && find . -type f -print0 | sort -z | xargs -0 cat || cat "$src") \
		<(cd "$out" 2>/dev/null && find . -type f -print0 | sort -z | xargs -0 cat || cat "$out"); then
		log "$name: the loader's output differs from the plaintext"
		return 1
	fi
	rm -rf "$out" "$enc"

	local ratio gbps verdict rss_col=-
	ratio=$(awk -v o="$best_ours" -v c="$best_cp" 'BEGIN { printf "%.2f", (c > 0 ? o / c : 0) }')
	gbps=$(awk -v o="$best_ours" -v n="$bytes" 'BEGIN { printf "%.2f", (o > 0 ? n / 1e9 / o : 0) }')
	if awk -v r="$ratio" -v t="$target" 'BEGIN { exit !(r <= t) }'; then verdict=PASS; else
		verdict=MISS
		MISSES=$((${MISSES:-0} + 1))
	fi
	if ((best_rss > 0)); then rss_col="$((best_rss / 1024))MiB"; fi
	_BL_ROWS+=("$(printf '%-16s %-8s %8s %8s %6sx %6s %9s   <=%sx   %s' \
		"$name" load "$best_ours" "$best_cp" "$ratio" "$gbps" "$rss_col" "$target" "$verdict")")
	_BL_NOTES+=("$name: fastest run spent ${att:-?} ms attesting (challenge, quote, release) and decrypted at ${mbs:-?} MB/s")
}

# _bl_set_prev_trap trap -- CMD EXIT: called with the words of 'trap -p EXIT'.
_bl_set_prev_trap() { _BL_PREV_TRAP=$3; }

bench_loader() {
	local runs=${BENCH_RUNS:-3} target=${BENCH_LOADER_TARGET:-1.2} scale=${BENCH_SCALE:-1}
	local RUNS=$runs MIB=$((1 << 20))
	heading "cml-loader: attest + decrypt into tmpfs vs cp (best of $runs, process start to exit)"
	if [[ -z ${EPOCHREALTIME:-} ]]; then
		log "the loader benchmark needs bash 5 or later (EPOCHREALTIME)"
		FAILED=1
		return
	fi
	broker_check_bins || { FAILED=1; return; }
	local base=/dev/shm
	if [[ ! -d $base || ! -w $base ]]; then
		base=${TMPDIR:-/tmp}
		log "warning: /dev/shm is not available; using $base, which may be a disk: the numbers then measure the disk"
	fi
	local size=$((2048 * MIB / scale)) shard=$((256 * MIB / scale))
	local avail_kib need_kib=$((3 * size / 1024 + 256 * 1024))
	avail_kib=$(df -Pk "$base" | awk 'NR == 2 { print $4 }')
	if ((avail_kib < need_kib)); then
		log "$base has $((avail_kib / 1024)) MiB free; the loader benchmark needs $((need_kib / 1024)) MiB (plaintext, encrypted model and output of a $((size / MIB)) MiB model). Free some space, or set BENCH_SCALE=4"
		FAILED=1
		return
	fi

	# Stop the broker and remove the scratch directory on any exit, then run
	# whatever EXIT trap was there before (bench.sh's cleanup).
	local prev
	prev=$(trap -p EXIT)
	_BL_PREV_TRAP=
	if [[ -n $prev ]]; then eval "_bl_set_prev_trap $prev"; fi
	trap '_bl_cleanup; eval "$_BL_PREV_TRAP"' EXIT
	[[ -n $prev ]] || trap 'exit 130' INT TERM

	_BL_DIR=$(mktemp -d "$base/cml-bench-loader.XXXXXX")
	_BL_ROWS=()
	_BL_NOTES=()
	log "scratch directory $_BL_DIR; starting a kbs (simulated TDX) as in make demo"
	BROKER_DIR=$_BL_DIR/broker BROKER_VERBOSE=0
	mkdir -p "$BROKER_DIR"
	local ok=1
	if broker_setup && kbsctl key create bench-model >/dev/null &&
		printf '{"spiffe_ids": ["%s"], "mrtd": ["%s"]}\n' "$BROKER_LOADER_ID" "$BROKER_MRTD" >"$_BL_DIR/policy.json" &&
		kbsctl policy put --key bench-model --file "$_BL_DIR/policy.json" >/dev/null; then
		log "kbs (pid $BROKER_PID) on $BROKER_ADDR; log $BROKER_LOG"
		log "generating a $((size / MIB)) MiB single-file model"
		if _bl_random bench-loader-single "$size" "$_BL_DIR/single.bin"; then
			_bl_shape "1x$((size / MIB))MiB" "$_BL_DIR/single.bin" "$size" "$target" || ok=0
		else
			ok=0
		fi
		rm -f "$_BL_DIR/single.bin"
		if ((ok)); then
			log "generating an 8 x $((shard / MIB)) MiB directory model"
			mkdir "$_BL_DIR/dir"
			local i
			for i in 1 2 3 4 5 6 7 8; do
				_bl_random "bench-loader-shard-$i" "$shard" "$_BL_DIR/dir/model-0000$i-of-00008.safetensors" || ok=0
			done
			((ok)) && { _bl_shape "8x$((shard / MIB))MiB" "$_BL_DIR/dir" $((8 * shard)) "$target" || ok=0; }
		fi
	else
		ok=0
	fi
	if ((!ok)); then
		log "loader benchmark failed (kbs log: $BROKER_LOG):"
		{ tail -n 10 "$BROKER_LOG" 2>/dev/null || true; } >&2
		FAILED=1
	fi
	_bl_cleanup
	if [[ -n $prev ]]; then eval "$prev"; else trap - EXIT INT TERM; fi

	if ((${#_BL_ROWS[@]} > 0)); then
		printf '%-16s %-8s %8s %8s %7s %6s %9s   %-7s %s\n' shape op "ours(s)" "cp(s)" ratio "GB/s" "peak RSS" target result
		printf '%s\n' "${_BL_ROWS[@]}"
		printf '(ours = bin/cml-loader from exec to exit: mTLS, simulated quote verified by kbs, key release, verify +\n'
		printf ' decrypt into tmpfs; ratio = ours / cp of the plaintext; GB/s of plaintext; peak RSS of the loader;\n'
		printf ' %s CPUs, load average now %s)\n' "$(nproc)" "$(cut -d' ' -f1-3 /proc/loadavg)"
		printf ' %s\n' "${_BL_NOTES[@]}"
	fi
}

# Standalone: minimal versions of bench.sh's helpers, then the section.
if [[ ${BASH_SOURCE[0]} == "$0" ]]; then
	set -euo pipefail
	log() { printf 'bench: %s\n' "$*" >&2; }
	heading() { printf '\n== %s\n' "$*"; }
	FAILED=0
	MISSES=0
	bench_loader
	[[ $FAILED == 0 ]] || exit 1
	if [[ ${BENCH_STRICT:-0} == 1 && $MISSES != 0 ]]; then exit 1; fi
fi
