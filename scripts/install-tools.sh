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
# buf is the big one (~860 packages, minutes of CPU on a cold cache). On
# linux/amd64 with npm, the script instead fetches buf's official prebuilt
# binary of the same version (npm package @bufbuild/buf-linux-x64), checks the
# tarball against the sha512 pinned below and the binary's --version, and
# falls back to building from source if any of that fails. BUF_FROM_SOURCE=1
# forces the source build.
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

# The npm registry's integrity value (sha512, base64) of
# @bufbuild/buf-linux-x64 at the version tools/go.mod pins. Changing the
# pinned buf version means updating both.
buf_npm_version=1.73.0
buf_npm_sha512=dMe6lBQrlHTU7DzqzaR7Udky7R78EDzzxtYZQdjkZun9jKdjGR4fLbPWEPyY4rLGVyk6UUnrtkf5qoIK2SC6qw==

# fetch_buf puts the prebuilt buf into $tmp/buf, or fails without output
# there. It is only tried when tools/go.mod pins the version above.
fetch_buf() {
	[[ "${BUF_FROM_SOURCE:-}" != 1 ]] || return 1
	[[ "$(go env GOOS)/$(go env GOARCH)" == linux/amd64 ]] || return 1
	command -v npm >/dev/null 2>&1 && command -v openssl >/dev/null 2>&1 || return 1
	local want
	want="$(cd "$moddir" && go list -m -f '{{.Version}}' github.com/bufbuild/buf)"
	[[ "$want" == "v$buf_npm_version" ]] || return 1
	local dl="$tmp/npm"
	mkdir -p "$dl"
	(cd "$dl" && npm pack --silent "@bufbuild/buf-linux-x64@$buf_npm_version" >/dev/null 2>&1) || return 1
	local tgz="$dl/bufbuild-buf-linux-x64-$buf_npm_version.tgz"
	[[ -f "$tgz" && "$(openssl dgst -sha512 -binary "$tgz" | base64 -w0)" == "$buf_npm_sha512" ]] || {
		echo "install-tools: the npm tarball of buf $buf_npm_version does not match the pinned sha512" >&2
		return 1
	}
	tar -xzf "$tgz" -C "$dl" package/bin/buf || return 1
	[[ "$("$dl/package/bin/buf" --version 2>/dev/null)" == "$buf_npm_version" ]] || return 1
	mv "$dl/package/bin/buf" "$tmp/buf"
}

build=("${pkgs[@]}") buf_prebuilt=0
if fetch_buf; then
	buf_prebuilt=1
	echo "install-tools: buf v$buf_npm_version: prebuilt binary from npm (@bufbuild/buf-linux-x64, sha512 checked)" >&2
	build=("${pkgs[@]:1}")
else
	rm -rf "$tmp/npm" "$tmp/buf"
fi
echo "install-tools: building ${build[*]##*/} from tools/go.mod" >&2
(cd "$moddir" && go build -trimpath -o "$tmp/" "${build[@]}")

# Check that each binary embeds exactly the module version tools/go.mod
# pins (the prebuilt buf was checked by its --version above: its build info
# says "(devel)").
for p in "${pkgs[@]}"; do
	name="${p##*/}"
	if [[ "$name" == buf && "$buf_prebuilt" == 1 ]]; then
		# Checked in fetch_buf; `go list` of the package here would
		# download buf's whole dependency tree for nothing.
		mv -f "$tmp/buf" "$bindir/buf"
		echo "install-tools: buf github.com/bufbuild/buf v$buf_npm_version (prebuilt)" >&2
		continue
	fi
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
