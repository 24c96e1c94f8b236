package main

import (
	"strings"
	"testing"
)

func TestTopLevelHelp(t *testing.T) {
	for _, args := range [][]string{{"--help"}, {"-h"}, {"help"}} {
		code, stdout, stderr := runInProcess(t, nil, args...)
		if code != exitOK || stderr != "" {
			t.Fatalf("%v: exit %d, stderr %q", args, code, stderr)
		}
		if !containsAll(stdout, "\n  init ", "\n  serve ", "KBS_DATA_DIR", "which wins over the default", "Exit codes:", "  2  usage error", "  3  init only") {
			t.Errorf("%v: help incomplete:\n%s", args, stdout)
		}
	}
}

func TestCommandHelp(t *testing.T) {
	for _, args := range [][]string{{"serve", "--help"}, {"help", "serve"}, {"serve", "-h"}} {
		code, stdout, _ := runInProcess(t, nil, args...)
		if code != exitOK {
			t.Fatalf("%v: exit %d", args, code)
		}
		// Every flag, its environment variable and its default.
		for _, want := range []string{
			"--data-dir", "[KBS_DATA_DIR]", "--listen", "(default :8443)", "--health-listen", "(default :8081)",
			"--metrics-listen", "(default :9090)", "[KBS_METRICS_LISTEN]", "--pprof-listen", "[KBS_PPROF_LISTEN]", "--spiffe-socket", "--svid-cert", "--svid-key",
			"--bundle", "--admin-ids", "--auditor-ids", "--kek-file", "CML_KEK", "--collateral-dir", "--pcs-url",
			"--pccs-url", "--pccs-ca", "--collateral-cache", "--challenge-ttl", "(default 1m0s)", "--max-request-bytes",
			"--max-challenges-per-caller N", "[KBS_MAX_CHALLENGES_PER_CALLER]", "(default 16)", "too_many_challenges",
			"--max-challenges N", "[KBS_MAX_CHALLENGES]", "(default 100000)",
			"--log-level", "(default info)", "--shutdown-timeout", "--dev-insecure-simulated-tdx",
			"[KBS_DEV_INSECURE_SIMULATED_TDX]", "Exit codes:", "NOT_SERVING",
		} {
			if !strings.Contains(stdout, want) {
				t.Errorf("%v: help lacks %q", args, want)
			}
		}
	}
	code, stdout, _ := runInProcess(t, nil, "init", "--help")
	if code != exitOK || !containsAll(stdout, "--data-dir", "--kek-file", "--exist-ok", "CML_KEK", "[KBS_EXIST_OK]", "Exit codes:") {
		t.Errorf("init --help: exit %d:\n%s", code, stdout)
	}
}

func TestUsageErrors(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{nil, "missing command"},
		{[]string{"frobnicate"}, `unknown command "frobnicate"`},
		{[]string{"--data-dir", "x"}, "unknown flag --data-dir before the command"},
		{[]string{"help", "nope"}, `unknown command "nope"`},
		{[]string{"init"}, "--data-dir is required"},
		{[]string{"init", "--bogus"}, "unknown flag --bogus"},
		{[]string{"init", "--data-dir"}, "flag --data-dir needs a value"},
		{[]string{"init", "--data-dir", "d", "extra"}, `unexpected argument "extra"`},
		{[]string{"init", "--data-dir", "d", "--exist-ok=maybe"}, "--exist-ok"},
		{[]string{"serve"}, "--data-dir is required"},
	} {
		code, stdout, stderr := runInProcess(t, nil, tc.args...)
		if code != exitUsage {
			t.Errorf("%q: exit %d, want %d", tc.args, code, exitUsage)
		}
		if !strings.Contains(stderr, tc.want) || !strings.Contains(stderr, "--help' for usage") {
			t.Errorf("%q: stderr %q lacks %q", tc.args, stderr, tc.want)
		}
		if tc.args == nil && stdout != "" {
			t.Errorf("usage went to stdout")
		}
	}
}

func TestEnvName(t *testing.T) {
	for flag, want := range map[string]string{
		"data-dir": "KBS_DATA_DIR", "dev-insecure-simulated-tdx": "KBS_DEV_INSECURE_SIMULATED_TDX", "listen": "KBS_LISTEN",
	} {
		if got := envName(flag); got != want {
			t.Errorf("envName(%s) = %s, want %s", flag, got, want)
		}
	}
}

func TestEnvBadValue(t *testing.T) {
	code, _, stderr := runInProcess(t, map[string]string{"KBS_EXIST_OK": "perhaps"}, "init", "--data-dir", t.TempDir())
	if code != exitUsage || !strings.Contains(stderr, "environment variable KBS_EXIST_OK: invalid value for --exist-ok") {
		t.Errorf("exit %d, stderr %q", code, stderr)
	}
}
