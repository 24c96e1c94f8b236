#!/usr/bin/env bash
# Runs the tests against a real SPIRE server and agent (make test-spire).
#
#   scripts/spire/test.sh                 build SPIRE if needed, run ./test/spire
#   scripts/spire/test.sh -run Rotation -v    extra arguments go to go test
#
# spire-server and spire-agent come from scripts/spire/install.sh, which
# builds them once into a cache outside the repository (minutes) and then
# reuses them (instant). The tests build kbs, kbsctl and cml-loader, start
# SPIRE on 127.0.0.1 under a temporary directory, and stop everything when
# they end. See docs/spire.md.
set -euo pipefail
cd "$(dirname "$0")/../.."

dir="$(scripts/spire/install.sh)"
echo "spire/test: SPIRE binaries in $dir" >&2
CML_SPIRE_DIR="$dir" exec go test -race -count=1 -timeout 10m "$@" ./test/spire/...
