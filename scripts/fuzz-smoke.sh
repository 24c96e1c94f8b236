#!/usr/bin/env bash
# Runs every Go fuzz target in the module for a few seconds each.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${FUZZ_SECONDS:-5}
log=$(mktemp)
trap 'rm -f "$log"' EXIT
for pkg in $(go list ./...); do
  dir=$(go list -f '{{.Dir}}' "$pkg")
  for fz in $(grep -hoE '^func (Fuzz[A-Za-z0-9_]+)\(' "$dir"/*_test.go 2>/dev/null | sed -E 's/^func (Fuzz[A-Za-z0-9_]+)\(/\1/' | sort -u); do
    echo "fuzz $pkg $fz (${secs}s)"
    go test -run='^$' -fuzz="^${fz}\$" -fuzztime="${secs}s" -fuzzminimizetime=300x "$pkg" >"$log" 2>&1 && continue
    # Go 1.26's fuzz coordinator can fail a clean run with a bare "context
    # deadline exceeded" when -fuzztime ends (golang/go#75804, fixed in Go
    # 1.27), more often on a loaded machine. That alone, with no crasher
    # written and the seed corpus passing, is not a finding.
    if grep -qx '    context deadline exceeded' "$log" && ! grep -q 'Failing input written' "$log" &&
      go test -count=1 -run="^${fz}\$" "$pkg" >/dev/null 2>&1; then
      echo "  ignored: Go fuzz coordinator deadline race (golang/go#75804), no crasher written"
      continue
    fi
    cat "$log"
    exit 1
  done
done
