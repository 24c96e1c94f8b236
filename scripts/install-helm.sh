#!/usr/bin/env bash
# Builds a pinned helm from the Go module proxy and prints the binary's path.
#
#   helm="$(scripts/install-helm.sh)"          (what scripts/check-deploy.sh does)
#   HELM_VERSION=v3.22.0 scripts/install-helm.sh
#
# The binary lives in a cache OUTSIDE the repository,
#   ${CML_TOOLS_CACHE:-$HOME/.cache/cml-tools}/helm-<version>/helm
# and is reused while it reports the pinned version, so only the first run
# pays for the build. Only Go and the Go module proxy are needed: no
# get.helm.sh download, no checksum of a foreign tarball to trust.
#
# helm's own Makefile stamps the version and the Kubernetes version that
# `helm lint`/`helm template` assume (.Capabilities.KubeVersion) with
# -ldflags -X; without them the binary would claim Kubernetes 1.20 and reject
# charts that need a newer cluster. The same flags are passed here, with the
# Kubernetes version derived from the k8s.io/client-go that helm's go.mod pins,
# exactly as its Makefile does.
set -euo pipefail

version="${HELM_VERSION:-v3.22.0}"
cache="${CML_TOOLS_CACHE:-$HOME/.cache/cml-tools}/helm-$version"
bin="$cache/helm"
mod="helm.sh/helm/v3"

# The module must be resolved on its own, whatever the caller's environment
# says about workspaces or the current directory's module.
export GOWORK=off GOFLAGS=-buildvcs=false

if [[ -x "$bin" ]] && [[ "$("$bin" version --template '{{.Version}}' 2>/dev/null)" == "$version" ]]; then
	echo "$bin"
	exit 0
fi

mkdir -p "$cache"
# One build at a time: .ci/run starts this in the background while make test
# runs; a second caller waits for the first, then reuses its binary.
exec 9>"$cache/.lock"
flock 9
if [[ -x "$bin" ]] && [[ "$("$bin" version --template '{{.Version}}' 2>/dev/null)" == "$version" ]]; then
	echo "$bin"
	exit 0
fi
# Build into a temporary directory beside the target and rename, so a
# concurrent caller never runs a half-written binary.
tmp="$(mktemp -d "$cache/build.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT

gomod="$(cd "$tmp" && go mod download -json "$mod@$version" | sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",*$/\1/p')"
if [[ -z "$gomod" || ! -f "$gomod" ]]; then
	echo "install-helm: cannot download $mod@$version from the module proxy" >&2
	exit 1
fi
clientgo="$(awk '$1 == "k8s.io/client-go" { print $2; exit }' "$gomod")" # e.g. v0.37.0
if [[ ! "$clientgo" =~ ^v0\.([0-9]+)\. ]]; then
	echo "install-helm: cannot find the k8s.io/client-go version in $gomod" >&2
	exit 1
fi
k8s_minor="${BASH_REMATCH[1]}"
ldflags="-s -w"
ldflags+=" -X $mod/internal/version.version=$version"
ldflags+=" -X $mod/internal/version.metadata="
ldflags+=" -X $mod/internal/version.gitTreeState=clean"
for p in pkg/lint/rules pkg/chartutil; do
	ldflags+=" -X $mod/$p.k8sVersionMajor=1 -X $mod/$p.k8sVersionMinor=$k8s_minor"
done

echo "install-helm: building $mod/cmd/helm@$version (Kubernetes 1.$k8s_minor) into $cache; the first build takes minutes" >&2
start=$SECONDS
if ! GOBIN="$tmp" go install -trimpath -gcflags=all="-N -l" -ldflags "$ldflags" "$mod/cmd/helm@$version" >&2; then
	# `go install pkg@version` refuses modules with replace directives; a
	# scratch module that requires helm as a tool builds it the same way.
	echo "install-helm: go install refused; building from a scratch module" >&2
	(
		cd "$tmp"
		go mod init cml-tools/helm >/dev/null 2>&1
		go get -tool "$mod/cmd/helm@$version" >&2
		go build -trimpath -gcflags=all="-N -l" -ldflags "$ldflags" -o "$tmp/helm" "$mod/cmd/helm" >&2
	)
fi

got="$("$tmp/helm" version --template '{{.Version}}')"
if [[ "$got" != "$version" ]]; then
	echo "install-helm: built helm reports $got, want $version" >&2
	exit 1
fi
mv -f "$tmp/helm" "$bin"
echo "install-helm: helm $version built in $((SECONDS - start))s" >&2
echo "$bin"
