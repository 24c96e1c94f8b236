# shellcheck shell=bash
# shellcheck disable=SC2034 # BROKER_* variables are this library's outputs
# scripts/lib/broker.sh — a development key broker for scripts, on this
# machine: a SPIFFE CA with SVIDs for kbs, the loader, an admin and an
# intruder; a simulated TDX platform; an initialised data directory; and
# `kbs serve` in the background on free loopback ports. Sourced by
# scripts/demo.sh and scripts/bench-loader.sh.
#
#   source "$ROOT/scripts/lib/broker.sh"
#   BROKER_DIR=$work                     # before the first call; "." for short relative paths
#   trap broker_stop EXIT                # stop the kbs this script started (by its PID)
#   broker_setup                         # = broker_certs broker_tdxsim broker_init broker_start
#   kbsctl key create my-key             # as the admin: broker_start exports CML_*
#   cml-loader "${BROKER_LOADER_FLAGS[@]}" --key my-key --src m.emdl --dst out
#   broker_stop                          # SIGTERM, wait; SIGKILL after BROKER_STOP_TIMEOUT
#
# Inputs (set before sourcing or before the calls): BIN_DIR (default:
# $CML_BIN_DIR, else bin/ of the repository), BROKER_DIR (default "."),
# BROKER_TRUST_DOMAIN (default demo.example), BROKER_VERBOSE=1 to print each
# command as "$ command" and its output (the demo), else output is kept
# quiet and shown only when a command fails. BROKER_START_TIMEOUT and
# BROKER_STOP_TIMEOUT are in seconds (defaults 20 and 10).
#
# Outputs: BROKER_CERTS, BROKER_TDXSIM, BROKER_DATA, BROKER_LOG (kbs's log
# file), BROKER_MRTD (the simulated TD's MRTD, 96 hex digits), BROKER_ADDR
# (host:port of the mTLS gRPC server), BROKER_PID, the SPIFFE IDs
# BROKER_{KBS,LOADER,ADMIN,INTRUDER}_ID, and BROKER_LOADER_FLAGS (the
# loader's identity and simulated quote provider). After broker_start,
# CML_KBS, CML_KBS_SPIFFE_ID and CML_BUNDLE are exported (both kbsctl and
# cml-loader read them) and CML_SVID_CERT/CML_SVID_KEY name the admin's SVID
# for kbsctl; the loader flags name the loader's SVID, and a flag wins over
# the environment.
#
# Needs bash 4.3 or later and Linux /proc (to tell a live kbs from one that
# exited but was not yet waited for).

_BROKER_LIB_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
BIN_DIR=${BIN_DIR:-${CML_BIN_DIR:-$(cd "$_BROKER_LIB_DIR/../.." && pwd)/bin}}
BROKER_DIR=${BROKER_DIR:-.}
BROKER_TRUST_DOMAIN=${BROKER_TRUST_DOMAIN:-demo.example}
BROKER_START_TIMEOUT=${BROKER_START_TIMEOUT:-20}
BROKER_STOP_TIMEOUT=${BROKER_STOP_TIMEOUT:-10}
BROKER_PID=

# The commands shown are the ones a user types: these wrappers run the
# binaries in BIN_DIR under their plain names.
kbs() { "$BIN_DIR/kbs" "$@"; }
kbsctl() { "$BIN_DIR/kbsctl" "$@"; }
cml-loader() { "$BIN_DIR/cml-loader" "$@"; }

broker_log() { printf 'broker: %s\n' "$*" >&2; }

# broker_check_bins fails unless the three binaries are in BIN_DIR.
broker_check_bins() {
	local b
	for b in kbs kbsctl cml-loader; do
		if [[ ! -x $BIN_DIR/$b ]]; then
			broker_log "$BIN_DIR/$b is missing; run 'make build' (make demo and make bench build first)"
			return 1
		fi
	done
}

# broker_quote ARG... prints the arguments as a shell command line, quoting
# only those that need it.
broker_quote() {
	local a out=()
	for a in "$@"; do
		if [[ $a =~ ^[A-Za-z0-9_./:@%+=,-]+$ ]]; then out+=("$a"); else out+=("'${a//\'/\'\\\'\'}'"); fi
	done
	printf '%s' "${out[*]}"
}

# broker_show CMD... prints "$ CMD" and runs it.
broker_show() {
	printf '$ %s\n' "$(broker_quote "$@")"
	"$@"
}

# broker_run CMD... runs a setup command: shown with its output when
# BROKER_VERBOSE=1; otherwise quietly, printing its output only on failure.
broker_run() {
	if [[ ${BROKER_VERBOSE:-0} == 1 ]]; then
		broker_show "$@"
		return
	fi
	local out rc=0
	out=$("$@" 2>&1) || rc=$?
	if ((rc != 0)); then
		printf '%s\n' "$out" >&2
		broker_log "failed (exit code $rc): $(broker_quote "$@")"
	fi
	return "$rc"
}

# _broker_path NAME is NAME inside BROKER_DIR, without a "./" prefix.
_broker_path() {
	if [[ $BROKER_DIR == . ]]; then printf '%s' "$1"; else printf '%s/%s' "$BROKER_DIR" "$1"; fi
}

_broker_paths() {
	BROKER_CERTS=$(_broker_path certs)
	BROKER_TDXSIM=$(_broker_path tdxsim)
	BROKER_DATA=$(_broker_path data)
	BROKER_LOG=$(_broker_path kbs.log)
	BROKER_KBS_ID=spiffe://$BROKER_TRUST_DOMAIN/kbs
	BROKER_LOADER_ID=spiffe://$BROKER_TRUST_DOMAIN/loader
	BROKER_ADMIN_ID=spiffe://$BROKER_TRUST_DOMAIN/admin
	BROKER_INTRUDER_ID=spiffe://$BROKER_TRUST_DOMAIN/intruder
	BROKER_LOADER_FLAGS=(--svid-cert "$BROKER_CERTS/loader.pem" --svid-key "$BROKER_CERTS/loader-key.pem"
		--quote-provider simulated --dev-insecure-simulated-tdx "$BROKER_TDXSIM")
}
_broker_paths

# broker_certs writes a development SPIFFE CA and SVIDs for kbs, loader and
# admin, then one for an intruder, issued later by the same CA.
broker_certs() {
	_broker_paths
	broker_run kbsctl dev certs "$BROKER_CERTS" --trust-domain "$BROKER_TRUST_DOMAIN" --id kbs --id loader --id admin &&
		broker_run kbsctl dev certs "$BROKER_CERTS" --id intruder
}

# broker_tdxsim creates the simulated TDX platform and reads its default
# TD's MRTD into BROKER_MRTD.
broker_tdxsim() {
	_broker_paths
	broker_run kbsctl dev tdxsim init "$BROKER_TDXSIM" || return
	BROKER_MRTD=$(broker_td_mrtd "$BROKER_TDXSIM") || return
}

# broker_td_mrtd DIR prints the MRTD of the default TD of the simulator in DIR.
broker_td_mrtd() {
	local m
	m=$(sed -n 's/^ *"mrtd": *"\([0-9a-f]\{96\}\)",\{0,1\}$/\1/p' "$1/tdxsim.json")
	if [[ ! $m =~ ^[0-9a-f]{96}$ ]]; then
		broker_log "no MRTD of 96 hex digits in $1/tdxsim.json"
		return 1
	fi
	printf '%s\n' "$m"
}

# broker_init creates the broker's data directory (KEK file and keystore).
broker_init() {
	_broker_paths
	broker_run kbs init --data-dir "$BROKER_DATA"
}

# _broker_alive PID: is PID running (not exited, not a zombie waiting for us)?
_broker_alive() {
	local stat
	stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
	stat=${stat##*) } # the fields after "(comm) "
	[[ ${stat%% *} != Z ]]
}

# broker_start runs kbs serve in the background, its log in BROKER_LOG, on
# port 0 of 127.0.0.1 for every listener (the kernel picks free ports), and
# waits until its "kbs serving" log line names the gRPC address and an admin
# call through it succeeds. It sets BROKER_PID and BROKER_ADDR and exports
# the CML_* connection variables.
broker_start() {
	_broker_paths
	local args=(serve --data-dir "$BROKER_DATA"
		--listen 127.0.0.1:0 --health-listen 127.0.0.1:0 --metrics-listen 127.0.0.1:0
		--svid-cert "$BROKER_CERTS/kbs.pem" --svid-key "$BROKER_CERTS/kbs-key.pem" --bundle "$BROKER_CERTS/ca.pem"
		--admin-ids "$BROKER_ADMIN_ID" --dev-insecure-simulated-tdx "$BROKER_TDXSIM")
	if [[ ${BROKER_VERBOSE:-0} == 1 ]]; then
		printf '$ %s >%s 2>&1 &\n' "$(broker_quote kbs "${args[@]}")" "$BROKER_LOG"
	fi
	"$BIN_DIR/kbs" "${args[@]}" >"$BROKER_LOG" 2>&1 &
	BROKER_PID=$!

	local deadline=$((SECONDS + BROKER_START_TIMEOUT)) line=''
	while :; do
		line=$(grep -m1 '"msg":"kbs serving"' "$BROKER_LOG" 2>/dev/null) && break
		if ! _broker_alive "$BROKER_PID"; then
			local rc=0
			wait "$BROKER_PID" || rc=$?
			BROKER_PID=
			broker_log "kbs exited with code $rc before serving; its log ($BROKER_LOG):"
			tail -n 20 "$BROKER_LOG" >&2
			return 1
		fi
		if ((SECONDS >= deadline)); then
			broker_log "kbs did not log 'kbs serving' within ${BROKER_START_TIMEOUT}s; its log ($BROKER_LOG):"
			tail -n 20 "$BROKER_LOG" >&2
			return 1
		fi
		sleep 0.05
	done
	BROKER_ADDR=$(printf '%s\n' "$line" | sed -n 's/.*"grpc":"\([^"]*\)".*/\1/p')
	if [[ ! $BROKER_ADDR =~ ^127\.0\.0\.1:[0-9]+$ ]]; then
		broker_log "cannot read the gRPC address from kbs's log line: $line"
		return 1
	fi
	export CML_KBS=$BROKER_ADDR CML_KBS_SPIFFE_ID=$BROKER_KBS_ID CML_BUNDLE=$BROKER_CERTS/ca.pem
	export CML_SVID_CERT=$BROKER_CERTS/admin.pem CML_SVID_KEY=$BROKER_CERTS/admin-key.pem

	# Ready means an authenticated admin call goes through, not only a bound port.
	local out
	until out=$(kbsctl key list --timeout 2s 2>&1); do
		if ! _broker_alive "$BROKER_PID" || ((SECONDS >= deadline)); then
			printf '%s\n' "$out" >&2
			broker_log "kbs at $BROKER_ADDR does not answer 'kbsctl key list'; its log ($BROKER_LOG):"
			tail -n 20 "$BROKER_LOG" >&2
			return 1
		fi
		sleep 0.2
	done
}

# broker_setup = broker_certs, broker_tdxsim, broker_init, broker_start.
broker_setup() {
	broker_check_bins && broker_certs && broker_tdxsim && broker_init && broker_start
}

# broker_stop stops the kbs that broker_start started, by its saved PID:
# SIGTERM, then up to BROKER_STOP_TIMEOUT seconds for the graceful shutdown,
# then SIGKILL, and unsets the CML_* variables broker_start exported. Safe
# to call twice and from an EXIT trap. Returns 1 if kbs had to be killed or
# exited with a non-zero code.
broker_stop() {
	local pid=${BROKER_PID:-}
	[[ -n $pid ]] || return 0
	BROKER_PID=
	unset CML_KBS CML_KBS_SPIFFE_ID CML_BUNDLE CML_SVID_CERT CML_SVID_KEY
	local i rc=0
	if _broker_alive "$pid"; then
		kill -TERM "$pid" 2>/dev/null || true
		for ((i = 0; i < BROKER_STOP_TIMEOUT * 20; i++)); do
			_broker_alive "$pid" || break
			sleep 0.05
		done
		if _broker_alive "$pid"; then
			broker_log "kbs (pid $pid) still running ${BROKER_STOP_TIMEOUT}s after SIGTERM; sending SIGKILL"
			kill -KILL "$pid" 2>/dev/null || true
			wait "$pid" 2>/dev/null || true
			return 1
		fi
	fi
	wait "$pid" 2>/dev/null || rc=$?
	if ((rc != 0)); then
		broker_log "kbs (pid $pid) exited with code $rc; its log: $BROKER_LOG"
		return 1
	fi
}
