#!/usr/bin/env bash
# Installs the pinned code-generation and lint tools into .tools/bin.
#
#   scripts/install-tools.sh          (what `make tools` runs)
#
# The versions are pinned in tools/go.mod, a separate Go module whose `tool`
# directives name buf, protoc-gen-go and protoc-gen-go-grpc, so the project's
# own go.mod never carries them. The binaries are built with `go build` from
# that module; only Go and the Go module proxy are needed.
#
# A stamp file records what the binaries were built from (Go version and the
# hash of tools/go.mod and tools/go.sum). When it still matches and every
# binary is present, the script exits at once, so `make lint` stays fast.
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
moddir="$root/tools"
bindir="$root/.tools/bin"
stamp="$bindir/.stamp"

# Package path of each tool; the module version comes from tools/go.mod.
pkgs=(
	github.com/bufbuild/buf/cmd/buf
	google.golang.org/protobuf/cmd/protoc-gen-go
	google.golang.org/grpc/cmd/protoc-gen-go-grpc
)

# The tools module must be resolved on its own, whatever the caller's
# environment says about workspaces.
export GOWORK=off

sha256() {
	if command -v sha256sum >/dev/null 2>&1; then
		sha256sum "$@"
	else
		shasum -a 256 "$@"
	fi
}

want_stamp() {
	go env GOVERSION
	(cd "$moddir" && sha256 go.mod go.sum)
}

up_to_date() {
	[[ -f "$stamp" ]] || return 1
	local p
	for p in "${pkgs[@]}"; do
		[[ -x "$bindir/${p##*/}" ]] || return 1
	done
	[[ "$(cat "$stamp")" == "$(want_stamp)" ]]
}

if up_to_date; then
	exit 0
fi

mkdir -p "$bindir"
# Build into a temporary directory and move into place, so a concurrent
# `make` never runs a half-written binary.
tmp="$(mktemp -d "$root/.tools/build.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT

echo "install-tools: building ${pkgs[*]##*/} from tools/go.mod" >&2
(cd "$moddir" && go build -trimpath -o "$tmp/" "${pkgs[@]}")

# Check that each binary embeds exactly the module version tools/go.mod pins.
for p in "${pkgs[@]}"; do
	name="${p##*/}"
	want="$(cd "$moddir" && go list -f '{{.Module.Path}} {{.Module.Version}}' "$p")"
	got="$(go version -m "$tmp/$name" | awk '$1 == "mod" { print $2, $3; exit }')"
	if [[ "$got" != "$want" ]]; then
		echo "install-tools: $name: built $got, tools/go.mod pins $want" >&2
		exit 1
	fi
	mv -f "$tmp/$name" "$bindir/$name"
	echo "install-tools: $name $want" >&2
done

want_stamp >"$stamp"
