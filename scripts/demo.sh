#!/usr/bin/env bash
# make demo — the Confidential Model Loader's main job, end to end on this
# machine: a key broker (kbs) holds the model key; the model owner encrypts a
# sample model with it; the loader proves with a (simulated) TDX quote and
# its SPIFFE ID that it may have the key, receives it and decrypts the model;
# every file is checked against the original; a TD with another MRTD and a
# workload with another SPIFFE ID are denied; the audit log shows all of it
# and its hash chain verifies.
#
# Each step is a function; main() at the bottom lists them in order. The
# broker setup is shared with scripts/bench-loader.sh (scripts/lib/broker.sh).
#
# Environment: DEMO_MODEL_MIB (weight shards together, default 48),
# DEMO_KEEP=1 keeps the working directory (and kbs's log) for a look
# afterwards, CML_BIN_DIR runs the binaries from another directory than bin/.
# Exit status: 0 if every expectation held, 1 otherwise.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
MODEL_MIB=${DEMO_MODEL_MIB:-48}
KEY_ID=demo-llama
BROKER_VERBOSE=1
# shellcheck source=scripts/lib/broker.sh
source "$ROOT/scripts/lib/broker.sh"

if [[ -t 1 ]]; then BOLD=$'\033[1m' DIM=$'\033[2m' RESET=$'\033[0m'; else BOLD='' DIM='' RESET=''; fi

step() { printf '\n%s== %s%s\n' "$BOLD" "$*" "$RESET"; }
say() { printf '%s%s%s\n' "$DIM" "$*" "$RESET"; }
show() { broker_show "$@"; }
die() {
	printf '%sdemo: FAILED: %s%s\n' "$BOLD" "$*" "$RESET" >&2
	exit 1
}

# random_bytes SEED BYTES FILE writes BYTES pseudo-random bytes from a seeded
# generator (AES-CTR keystream; /dev/urandom when openssl is missing).
random_bytes() {
	local seed=$1 n=$2 file=$3
	if command -v openssl >/dev/null; then
		{ openssl enc -aes-128-ctr -nosalt -pbkdf2 -pass "pass:$seed" </dev/zero 2>/dev/null || true; } | head -c "$n" >"$file"
	else
		head -c "$n" /dev/urandom >"$file"
	fi
	[[ $(stat -c %s "$file") == "$n" ]] || die "could not generate $file"
}

# json_field NAME FILE prints the value of "NAME" in the last JSON log line
# of FILE that has it (a string without its quotes, or a number).
json_field() {
	grep "\"$1\":" "$2" | tail -n 1 | sed -n "s/.*\"$1\":\"\{0,1\}\([^\",}]*\).*/\1/p"
}

LOADER_RUNS=0

# run_loader WANT_RC WANT_REASON DST ARG... runs cml-loader --dst DST ARG...
# (shown, with its log lines), then checks the exit code, and for a denial
# the reason code and that nothing was written to DST.
run_loader() {
	local want_rc=$1 want_reason=$2 dst=$3
	shift 3
	local log rc=0
	LOADER_RUNS=$((LOADER_RUNS + 1))
	log=loader-$LOADER_RUNS.log
	printf '$ %s\n' "$(broker_quote cml-loader "$@" --dst "$dst")"
	cml-loader "$@" --dst "$dst" 2>"$log" || rc=$?
	cat "$log"
	if [[ $rc != "$want_rc" ]]; then
		die "cml-loader exited with code $rc; expected $want_rc${want_reason:+ (denied: $want_reason)}"
	fi
	if [[ $rc == 0 ]]; then
		say "-> exit 0: $(json_field files "$log") files, $(json_field bytes "$log") bytes decrypted into $dst;" \
			"key $(json_field key "$log") v$(json_field key_version "$log") released after $(json_field attestation_ms "$log") ms of attestation" \
			"(audit request id $(json_field request_id "$log"))"
		return
	fi
	local reason
	reason=$(json_field reason "$log")
	[[ $reason == "$want_reason" ]] || die "cml-loader was denied with reason '$reason'; expected '$want_reason'"
	[[ ! -e $dst ]] || die "a denied loader left $dst behind"
	say "-> exit 3, denied: $reason (audit request id $(json_field request_id "$log")); nothing written to $dst"
}

setup() {
	broker_check_bins || exit 1
	START=$SECONDS
	WORK=$(mktemp -d "${TMPDIR:-/tmp}/cml-demo.XXXXXX")
	trap cleanup EXIT
	trap 'exit 130' INT TERM
	cd "$WORK"
	printf '%sConfidential Model Loader demo%s: key broker, model owner and loader on this machine\n' "$BOLD" "$RESET"
	if [[ ${DEMO_KEEP:-0} == 1 ]]; then
		say "working in $WORK (kept: DEMO_KEEP=1)"
	else
		say "working in $WORK (removed at the end; DEMO_KEEP=1 keeps it)"
	fi
}

# cleanup stops the kbs this demo started (by its PID) and removes the
# working directory; on failure it shows the end of kbs's log first.
cleanup() {
	local rc=$?
	trap - EXIT
	if [[ $rc != 0 && $rc != 130 && -n ${WORK:-} && -s $WORK/kbs.log ]]; then
		printf '\nlast lines of the kbs log (%s):\n' "$WORK/kbs.log" >&2
		tail -n 15 "$WORK/kbs.log" >&2
	fi
	broker_stop || rc=1
	cd /
	if [[ -n ${WORK:-} && ${DEMO_KEEP:-0} != 1 ]]; then rm -rf "$WORK"; fi
	exit "$rc"
}

step_identities() {
	step "1. Identities: SPIFFE X.509-SVIDs"
	say "In a cluster the SPIRE agent hands these out; here a development CA writes them as files."
	broker_certs
	say "The intruder is a real workload of the same trust domain, just not one the policy names."
}

step_platform() {
	step "2. A simulated Intel TDX platform"
	say "A test CA with Intel's certificate layout, signed collateral and a default TD: quotes from it go through the real verifier."
	broker_tdxsim
	say "The loader's TD has MRTD $BROKER_MRTD"
}

step_broker() {
	step "3. Start the key broker"
	say "kbs keeps keys in bbolt, sealed under a KEK; it trusts the simulator only because of the development flag."
	broker_init
	say "Every listener on 127.0.0.1:0: the kernel picks free ports, and kbs logs which."
	broker_start
	say "kbs (pid $BROKER_PID) serves mTLS gRPC on $BROKER_ADDR; its log: $WORK/$BROKER_LOG"
	say "kbsctl and cml-loader read the broker's address and identity from the environment; kbsctl acts as the admin:"
	printf '$ export CML_KBS=%s CML_KBS_SPIFFE_ID=%s CML_BUNDLE=%s\n' "$CML_KBS" "$CML_KBS_SPIFFE_ID" "$CML_BUNDLE"
	printf '$ export CML_SVID_CERT=%s CML_SVID_KEY=%s\n' "$CML_SVID_CERT" "$CML_SVID_KEY"
}

step_key_policy() {
	step "4. A model key and its release policy"
	say "The broker generates the key; it never leaves the broker in clear. Then the policy: this loader, in this TD only."
	show kbsctl key create "$KEY_ID" --description "demo model key"
	cat >policy.json <<-EOF
		{
		  "spiffe_ids": ["$BROKER_LOADER_ID"],
		  "mrtd": ["$BROKER_MRTD"],
		  "allowed_tcb_status": ["UpToDate"]
		}
	EOF
	show cat policy.json
	show kbsctl policy put --key "$KEY_ID" --file policy.json
}

step_sample_model() {
	step "5. A sample model"
	say "A directory of files: a config, a tokenizer and two weight shards (random bytes)."
	mkdir -p llama-demo
	cat >llama-demo/config.json <<-'EOF'
		{"architectures": ["LlamaForCausalLM"], "hidden_size": 4096, "num_hidden_layers": 32}
	EOF
	random_bytes demo-tokenizer $((2 << 20)) llama-demo/tokenizer.json
	local shard=$(((MODEL_MIB << 20) / 2))
	random_bytes demo-shard-1 "$shard" llama-demo/model-00001-of-00002.safetensors
	random_bytes demo-shard-2 "$shard" llama-demo/model-00002-of-00002.safetensors
	show ls -l llama-demo
	(cd llama-demo && sha256sum -- *) >llama-demo.sha256
}

step_encrypt() {
	step "6. Encrypt the model with the broker's key"
	say "kbsctl gets the key sealed to a one-time key pair of its own (audited), encrypts, and forgets it."
	show kbsctl model encrypt --kbs "$CML_KBS" --key-id "$KEY_ID" --in llama-demo --out llama-demo.emdl
	say "The encrypted model can sit on untrusted storage; its header names the key, readable without it:"
	show kbsctl model inspect llama-demo.emdl
}

step_load() {
	step "7. The loader: attest, receive the key, decrypt"
	say "What the Kubernetes init container runs: a fresh quote binds the broker's challenge and a one-time HPKE key;"
	say "the broker checks quote and policy, seals the key to that HPKE key; the loader decrypts into models/ (tmpfs in a pod)."
	mkdir -p models
	run_loader 0 "" models/llama-demo --key "$KEY_ID" --src llama-demo.emdl "${BROKER_LOADER_FLAGS[@]}"
	say "SHA-256 of every decrypted file against the original:"
	printf '$ (cd models/llama-demo && sha256sum -c ../../llama-demo.sha256)\n'
	(cd models/llama-demo && sha256sum -c ../../llama-demo.sha256) || die "the decrypted model differs from the original"
	local want got
	want=$(cd llama-demo && find . -type f | sort)
	got=$(cd models/llama-demo && find . -type f | sort)
	[[ $want == "$got" ]] || die "models/llama-demo does not hold exactly the model's files"
}

# other_td DIR MRTD makes DIR a copy of the simulator whose default TD has
# MRTD: the same platform (and PCK) running another TD image.
other_td() {
	local dir=$1 mrtd=$2
	cp -R "$BROKER_TDXSIM" "$dir"
	sed "s/\"mrtd\": \"$BROKER_MRTD\"/\"mrtd\": \"$mrtd\"/" "$BROKER_TDXSIM/tdxsim.json" >"$dir/tdxsim.json"
	[[ $(broker_td_mrtd "$dir") == "$mrtd" ]] || die "could not set the MRTD in $dir/tdxsim.json"
}

step_other_mrtd() {
	step "8. Denied: the same machine running another TD image"
	local mrtd
	mrtd=$(printf 'another TD image' | sha384sum | cut -c1-96)
	other_td tdxsim-other "$mrtd"
	say "tdxsim-other/ is the same simulated platform, its TD measured as MRTD $mrtd."
	say "A genuine quote, a genuine SVID: only the measurement is not the one the policy pins."
	run_loader 3 mrtd_not_allowed models/other-td --key "$KEY_ID" --src llama-demo.emdl \
		--svid-cert "$BROKER_CERTS/loader.pem" --svid-key "$BROKER_CERTS/loader-key.pem" \
		--quote-provider simulated --dev-insecure-simulated-tdx tdxsim-other
}

step_intruder() {
	step "9. Denied: a workload with another SPIFFE ID"
	say "The right TD, but the intruder's SVID: the broker refuses before it even issues a challenge."
	run_loader 3 spiffe_id_not_allowed models/intruder --key "$KEY_ID" --src llama-demo.emdl \
		--svid-cert "$BROKER_CERTS/intruder.pem" --svid-key "$BROKER_CERTS/intruder-key.pem" \
		--quote-provider simulated --dev-insecure-simulated-tdx "$BROKER_TDXSIM"
}

step_audit() {
	step "10. The audit log"
	say "One record per decision, allow or deny, with the caller and the reasons; (sim) marks simulator quotes."
	show kbsctl audit list | tee audit.txt
	grep -Eq "$BROKER_LOADER_ID +ReleaseKey +$KEY_ID@1 +allow" audit.txt || die "no allowed ReleaseKey by the loader in the audit log"
	grep -Eq "$BROKER_LOADER_ID +ReleaseKey +$KEY_ID@1 +deny.* mrtd_not_allowed" audit.txt || die "no ReleaseKey denied with mrtd_not_allowed in the audit log"
	grep -Eq "$BROKER_INTRUDER_ID +[A-Za-z]+ +${KEY_ID}[@0-9]* +deny.* spiffe_id_not_allowed" audit.txt || die "no call by the intruder denied with spiffe_id_not_allowed in the audit log"
	say "Each record holds the SHA-256 of the one before; the broker recomputes the chain:"
	show kbsctl audit verify || die "the audit log does not verify"
}

finish() {
	step "Done in $((SECONDS - START)) s"
	cat <<-EOF
		What happened:
		  1-3. development SVIDs, a simulated TDX platform, kbs serving on $BROKER_ADDR
		  4.   key $KEY_ID created in the broker; policy: $BROKER_LOADER_ID in a TD with the pinned MRTD
		  5-6. a $((MODEL_MIB + 2)) MiB model encrypted with the broker's key (kbsctl never wrote the key to disk)
		  7.   cml-loader attested, received the key sealed to its one-time key, decrypted: every SHA-256 matches
		  8.   another MRTD            -> denied, mrtd_not_allowed, exit 3
		  9.   another SPIFFE ID       -> denied, spiffe_id_not_allowed, exit 3
		  10.  every decision is in the audit log, and its hash chain verifies
		Next: docs/demo.md, docs/loader.md (the init container), docs/kubernetes.md.
	EOF
}

main() {
	setup
	step_identities
	step_platform
	step_broker
	step_key_policy
	step_sample_model
	step_encrypt
	step_load
	step_other_mrtd
	step_intruder
	step_audit
	finish
}

main "$@"
