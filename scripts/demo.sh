#!/usr/bin/env bash
# make demo — the model owner's side of the Confidential Model Loader, end to
# end on the local machine: generate a key, encrypt a sample model, inspect
# it, decrypt it and check every byte, then watch a wrong key and a tampered
# model be refused.
#
# Each step is a function; main() at the bottom lists them in order. Later
# releases add the key broker (kbs) and the loader as further steps.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
KBSCTL_BIN="$ROOT/bin/kbsctl"
MODEL_MIB=${DEMO_MODEL_MIB:-48} # size of the two weight shards together
KEY_ID=demo-llama

if [[ -t 1 ]]; then BOLD=$'\033[1m' DIM=$'\033[2m' RESET=$'\033[0m'; else BOLD='' DIM='' RESET=''; fi

# step prints a step heading.
step() { printf '\n%s== %s%s\n' "$BOLD" "$*" "$RESET"; }
# say prints one line of explanation.
say() { printf '%s%s%s\n' "$DIM" "$*" "$RESET"; }
# show prints a command, then runs it.
show() { printf '$ %s\n' "$*"; "$@"; }
die() { printf 'demo: %s\n' "$*" >&2; exit 1; }

# kbsctl is what the commands shown call, so they read as a user would type them.
kbsctl() { "$KBSCTL_BIN" "$@"; }

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

setup() {
	[[ -x $KBSCTL_BIN ]] || die "$KBSCTL_BIN is missing; run 'make build' (or 'make demo', which builds first)"
	WORK=$(mktemp -d "${TMPDIR:-/tmp}/cml-demo.XXXXXX")
	trap 'rm -rf "$WORK"' EXIT
	trap 'exit 130' INT TERM
	cd "$WORK"
	say "working in $WORK (removed at the end)"
}

step_sample_model() {
	step "1. A sample model"
	say "A model is a directory of files: a config, a tokenizer and weight shards."
	mkdir -p llama-demo
	cat >llama-demo/config.json <<-'EOF'
		{"architectures": ["LlamaForCausalLM"], "hidden_size": 4096, "num_hidden_layers": 32}
	EOF
	random_bytes demo-tokenizer $((2 << 20)) llama-demo/tokenizer.json
	local shard=$((MODEL_MIB / 2 << 20))
	random_bytes demo-shard-1 "$shard" llama-demo/model-00001-of-00002.safetensors
	random_bytes demo-shard-2 "$shard" llama-demo/model-00002-of-00002.safetensors
	show ls -l llama-demo
	(cd llama-demo && sha256sum -- *) >llama-demo.sha256
}

step_keygen() {
	step "2. Generate a model key"
	say "A 256-bit key, written as hex with mode 0600. Keep it secret; with a key broker it lives in kbs."
	show kbsctl model keygen model.key
	show ls -l model.key
}

step_encrypt() {
	step "3. Encrypt the model"
	say "Every file is encrypted in 1 MiB chunks (AES-256-GCM) under a per-file key; a manifest lists and authenticates them all."
	show kbsctl model encrypt --key-file model.key --key-id "$KEY_ID" --in llama-demo --out llama-demo.emdl
	show ls -l llama-demo.emdl
}

step_inspect() {
	step "4. Inspect the encrypted model (no key needed)"
	show kbsctl model inspect llama-demo.emdl
	show kbsctl model inspect llama-demo.emdl --json
}

step_decrypt() {
	step "5. Decrypt and verify every file"
	say "This is what the loader does inside the TD, into an in-memory volume."
	show kbsctl model decrypt --key-file model.key --key-id "$KEY_ID" --in llama-demo.emdl --out llama-demo.out
	say "SHA-256 of every decrypted file against the original:"
	(cd llama-demo.out && show sha256sum -c ../llama-demo.sha256) || die "decrypted model differs from the original"
}

# expect_refused runs a kbsctl command that must fail with exit code 3
# (model refused) and shows its message.
expect_refused() {
	printf '$ %s\n' "$*"
	local rc=0
	"$@" 2>&1 || rc=$? # stderr to stdout: keeps the message in order in a log
	[[ $rc == 3 ]] || die "expected exit code 3 (model refused), got $rc"
	say "(exit code $rc: model refused)"
}

step_wrong_key() {
	step "6. A wrong key is refused"
	kbsctl model keygen other.key >/dev/null
	expect_refused kbsctl model decrypt --key-file other.key --in llama-demo.emdl --out wrong-key.out
	[[ ! -e wrong-key.out ]] || die "a refused decrypt left wrong-key.out behind"
}

step_tampered() {
	step "7. A tampered model is refused"
	cp -r llama-demo.emdl tampered.emdl
	local victim offset byte
	victim=$(find tampered.emdl -type f -size +1M | sort | head -n 1)
	offset=$(($(stat -c %s "$victim") / 2))
	byte=$(od -An -tu1 -j "$offset" -N1 "$victim" | tr -d ' ')
	printf '%b' "\\0$(printf '%03o' $((byte ^ 1)))" | dd of="$victim" bs=1 seek="$offset" conv=notrunc status=none
	say "flipped one bit at offset $offset of $victim"
	expect_refused kbsctl model decrypt --key-file model.key --in tampered.emdl --out tampered.out
	[[ ! -e tampered.out ]] || die "a refused decrypt left tampered.out behind"
	say "Nothing was written: output appears only after the whole model verified."
}

walkthrough() {
	step "Done"
	cat <<-EOF
		What happened:
		  1. a $((MODEL_MIB + 2)) MiB sample model (config, tokenizer, two weight shards)
		  2. kbsctl model keygen   — a fresh 256-bit key (mode 0600)
		  3. kbsctl model encrypt  — the EMDL model: per-file keys, 1 MiB AES-256-GCM chunks, authenticated manifest
		  4. kbsctl model inspect  — key id/version, suite and size, readable without the key
		  5. kbsctl model decrypt  — every file verified and byte-identical (sha256sum -c)
		  6. a wrong key           — refused, exit code 3, nothing written
		  7. one flipped bit       — refused, exit code 3, nothing written
		In a cluster, the key stays in kbs and cml-loader performs step 5 inside an
		attested TDX guest. See docs/kbsctl.md.
	EOF
}

main() {
	setup
	step_sample_model
	step_keygen
	step_encrypt
	step_inspect
	step_decrypt
	step_wrong_key
	step_tampered
	walkthrough
}

main "$@"
