#!/usr/bin/env bash
# Runs every Go fuzz target in the module for a few seconds each.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${FUZZ_SECONDS:-5}
for pkg in $(go list ./...); do
  dir=$(go list -f '{{.Dir}}' "$pkg")
  for fz in $(grep -hoE '^func (Fuzz[A-Za-z0-9_]+)\(' "$dir"/*_test.go 2>/dev/null | sed -E 's/^func (Fuzz[A-Za-z0-9_]+)\(/\1/' | sort -u); do
    echo "fuzz $pkg $fz (${secs}s)"
    go test -run='^$' -fuzz="^${fz}\$" -fuzztime="${secs}s" "$pkg" >/tmp/fuzz.$$.log 2>&1 || { cat /tmp/fuzz.$$.log; exit 1; }
  done
done
