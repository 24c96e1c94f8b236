#!/usr/bin/env bash
# Validates everything under deploy/ without a cluster or a Docker engine.
#
#   scripts/check-deploy.sh                 (what `make test-deploy` runs)
#   CML_UPDATE=1 scripts/check-deploy.sh    also rewrites deploy/examples/vllm.yaml
#
# 1. helm (pinned, built by scripts/install-helm.sh into a cache outside the
#    repository) lints both charts with their default values and with every
#    deploy/helm/<chart>/ci/*.yaml, and renders each into a temporary dir.
# 2. The charts must refuse values that would break the broker.
# 3. deploy/examples/vllm.yaml must equal the example chart's default rendering.
# 4. deploy/spire/entries.sh must parse and print its four registrations;
#    the shell scripts are linted with shellcheck if it is installed.
# 5. The Go tests in deploy/validate (a separate module) decode every
#    rendered and example object strictly into its k8s.io/api type and check
#    the security settings, the SPIRE registrations and the Dockerfiles.
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
helm="$(scripts/install-helm.sh)"

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp/rendered"

fail() { echo "check-deploy: $*" >&2; exit 1; }

# chart → release name and namespace used for rendering.
declare -A release=([cml]=kbs [cml-inference-example]=vllm)
declare -A namespace=([cml]=cml-system [cml-inference-example]=inference)

n=0
for chart in cml cml-inference-example; do
	dir="deploy/helm/$chart"
	for values in default "$dir"/ci/*.yaml; do
		args=(--namespace "${namespace[$chart]}")
		name=default
		if [[ "$values" != default ]]; then
			args+=(-f "$values")
			name="$(basename "$values" .yaml)"
		fi
		"$helm" lint --strict --quiet "$dir" "${args[@]}" >"$tmp/lint.log" 2>&1 ||
			{ cat "$tmp/lint.log" >&2; fail "helm lint $dir ($name) failed"; }
		"$helm" template "${release[$chart]}" "$dir" "${args[@]}" >"$tmp/rendered/$chart--$name.yaml" 2>"$tmp/template.log" ||
			{ cat "$tmp/template.log" >&2; fail "helm template $dir ($name) failed"; }
		n=$((n + 1))
	done
done
echo "check-deploy: helm lint + template: $n chart/values combinations" >&2

# Values the broker chart must refuse, each with the reason it must name.
refuse() {
	local want="$1"
	shift
	if "$helm" template kbs deploy/helm/cml --namespace cml-system "$@" >/dev/null 2>"$tmp/refuse.log"; then
		fail "deploy/helm/cml accepted $* (want an error mentioning '$want')"
	fi
	grep -q -- "$want" "$tmp/refuse.log" ||
		{ cat "$tmp/refuse.log" >&2; fail "deploy/helm/cml refused $* without mentioning '$want'"; }
}
refuse "replicaCount" --set replicaCount=2
refuse "kek.existingSecret" --set kek.existingSecret=
refuse "socketVolume" --set spire.socketVolume=none
refuse "collateral.pccs" --set collateral.mode=pccs
refuse "collateral.mode=dir" --set collateral.mode=dir
refuse "collateral.mode" --set collateral.mode=offline
refuse "adminIDs" --set 'adminIDs[0]=not-a-spiffe-id'
refuse "challenges.maxPerCaller" --set challenges.max=8
refuse "challenges/max" --set challenges.max=0
# kubelet makes a Secret file group-readable under fsGroup, and kbs refuses
# such a KEK file: with the default fsGroup, and with one set explicitly.
# (ci/kek-file.yaml renders kek.source=file with podSecurity.fsGroup=null.)
refuse "kek.source=file does not work with podSecurity.fsGroup" --set kek.source=file
refuse "kek.source=file does not work with podSecurity.fsGroup" --set kek.source=file --set podSecurity.fsGroup=1000

# The plain example is the example chart's default rendering.
example=deploy/examples/vllm.yaml
{
	echo "# Generated from deploy/helm/cml-inference-example with its default values"
	echo "# (helm template vllm deploy/helm/cml-inference-example --namespace inference)."
	echo "# Do not edit: change the chart, then run CML_UPDATE=1 scripts/check-deploy.sh."
	cat "$tmp/rendered/cml-inference-example--default.yaml"
} >"$tmp/vllm.yaml"
if [[ -n "${CML_UPDATE:-}" ]]; then
	cp "$tmp/vllm.yaml" "$example"
elif ! diff -u "$example" "$tmp/vllm.yaml" >"$tmp/diff" 2>&1; then
	head -40 "$tmp/diff" >&2
	fail "$example is stale: run CML_UPDATE=1 scripts/check-deploy.sh"
fi

bash -n deploy/spire/entries.sh
got="$(DRY_RUN=1 deploy/spire/entries.sh | grep -c ' entry create ')"
[[ "$got" == 4 ]] || fail "deploy/spire/entries.sh printed $got entry create commands, want 4"
# Shell scripts, when shellcheck is installed (CI machines may not have it:
# then this step is skipped, not failed).
scripts=(deploy/spire/entries.sh scripts/check-deploy.sh scripts/install-helm.sh scripts/fuzz-smoke.sh
	scripts/demo.sh scripts/lib/broker.sh scripts/bench.sh scripts/bench-loader.sh scripts/bench-release.sh
	scripts/spire/*.sh)
if command -v shellcheck >/dev/null 2>&1; then
	shellcheck -x "${scripts[@]}"
	echo "check-deploy: shellcheck: ${#scripts[@]} scripts" >&2
else
	echo "check-deploy: shellcheck is not installed; skipping the lint of ${#scripts[@]} shell scripts" >&2
fi

cd deploy/validate
GOWORK=off GOFLAGS=-mod=readonly CML_RENDERED_DIR="$tmp/rendered" go test -count=1 ./...
