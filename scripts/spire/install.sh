#!/usr/bin/env bash
# Builds pinned spire-server and spire-agent from the Go module proxy and
# prints the directory that holds them.
#
#   dir="$(scripts/spire/install.sh)"            builds on first use, then reuses
#   scripts/spire/install.sh --print-dir         prints the directory, builds nothing
#   SPIRE_VERSION=v1.13.3 scripts/spire/install.sh
#
# The binaries live in a cache OUTSIDE the repository,
#   ${CML_TOOLS_CACHE:-$HOME/.cache/cml-tools}/spire-<version>/{spire-server,spire-agent}
# next to a stamp file; while the stamp names the pinned version and both
# binaries are present, a run returns at once. A cold build takes minutes
# (SPIRE pulls in ~300 modules), so it must not happen on every test run.
#
# `go install …/spire-server@<version>` is refused (SPIRE's go.mod has replace
# directives), so a scratch module in a temporary directory requires both
# commands as tools and builds them. None of this touches the project's
# go.mod. The server needs cgo (its SQLite datastore), so a C compiler must
# be installed.
set -euo pipefail

version="${SPIRE_VERSION:-v1.13.3}"
cache="${CML_TOOLS_CACHE:-$HOME/.cache/cml-tools}/spire-$version"
mod="github.com/spiffe/spire"
stamp="$cache/.stamp"
want_stamp="$mod $version"

case "${1:-}" in
--print-dir)
	echo "$cache"
	exit 0
	;;
"") ;;
*)
	echo "usage: $0 [--print-dir]" >&2
	exit 2
	;;
esac

if [[ -x "$cache/spire-server" && -x "$cache/spire-agent" && -f "$stamp" ]] &&
	[[ "$(cat "$stamp")" == "$want_stamp" ]]; then
	echo "$cache"
	exit 0
fi

# The scratch module must resolve on its own, whatever the caller's
# environment says about workspaces, vendoring or the current module.
export GOWORK=off GOFLAGS="-mod=mod -buildvcs=false" CGO_ENABLED=1

if ! command -v "${CC:-cc}" >/dev/null 2>&1; then
	echo "spire/install: no C compiler (${CC:-cc}); spire-server needs cgo for SQLite (apt-get install gcc)" >&2
	exit 1
fi

mkdir -p "$cache"
# One build at a time: .ci/run starts this in the background while make test
# runs, and test-spire may call it again; the second caller waits, then reuses.
exec 9>"$cache/.lock"
flock 9
if [[ -x "$cache/spire-server" && -x "$cache/spire-agent" && -f "$stamp" ]] &&
	[[ "$(cat "$stamp")" == "$want_stamp" ]]; then
	echo "$cache"
	exit 0
fi
# Build into a temporary directory beside the target and rename, so a
# concurrent caller never runs a half-written binary.
tmp="$(mktemp -d "$cache/build.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT

# SPIRE's Makefile stamps the release tag into the version package; without
# it --version says "<base>-dev-unk".
ldflags="-s -w -X $mod/pkg/common/version.gittag=${version#v}"

echo "spire/install: building spire-server and spire-agent $version into $cache; a cold build takes 5-10 minutes" >&2
start=$SECONDS
(
	cd "$tmp"
	go mod init cml-tools/spire >/dev/null 2>&1
	go get -tool "$mod/cmd/spire-server@$version" "$mod/cmd/spire-agent@$version" >&2
	mkdir out
	# Test tooling only: -N -l skips optimisation, which cuts the cold
	# compile (the longest step of a fresh CI run) without changing behaviour.
	go build -trimpath -gcflags=all="-N -l" -ldflags "$ldflags" -o out/ "$mod/cmd/spire-server" "$mod/cmd/spire-agent" >&2
)

for b in spire-server spire-agent; do
	got="$("$tmp/out/$b" --version 2>&1 || true)"
	if [[ "$got" != *"${version#v}"* ]]; then
		echo "spire/install: built $b reports version '$got', want ${version#v}" >&2
		exit 1
	fi
done
rm -f "$stamp"
mv -f "$tmp/out/spire-server" "$cache/spire-server"
mv -f "$tmp/out/spire-agent" "$cache/spire-agent"
echo "$want_stamp" >"$stamp.tmp" && mv -f "$stamp.tmp" "$stamp"
echo "spire/install: built in $((SECONDS - start))s" >&2
echo "$cache"
