package main

import (
	"regexp"
	"strings"
	"testing"
)

func TestKeyDisable(t *testing.T) {
	b := startBroker(t)
	b.mustRun(t, "key", "create", "k")
	b.mustRun(t, "key", "rotate", "k")

	r := b.mustRun(t, "key", "disable", "k", "--version", "1")
	if !strings.Contains(r.stdout, "version 1 of key k is disabled: it is not released or exported until 'kbsctl key enable k --version 1'") {
		t.Errorf("output: %q", r.stdout)
	}
	r = b.mustRun(t, "key", "get", "k")
	if !regexp.MustCompile(`(?m)^state: +enabled$`).MatchString(r.stdout) || !regexp.MustCompile(`(?m)^  1 +disabled`).MatchString(r.stdout) {
		t.Errorf("after disabling version 1:\n%s", r.stdout)
	}
	// Nothing disabled is exported: model encrypt --kbs refuses version 1.
	model := newModelDir(t)
	r = b.run(t, "admin", "model", "encrypt", "--key-id", "k", "--key-version", "1", "--in", model, "--out", t.TempDir()+"/enc")
	if r.code == exitOK || !strings.Contains(r.stderr, "export version 1") {
		t.Errorf("export of a disabled version: %v", r)
	}

	r = b.mustRun(t, "key", "disable", "k")
	if !strings.Contains(r.stdout, "key k is disabled: none of its versions is released or exported until 'kbsctl key enable k'") {
		t.Errorf("output: %q", r.stdout)
	}
	// Disabling something disabled succeeds.
	b.mustRun(t, "key", "disable", "k")
	r = b.mustRun(t, "key", "get", "k", "--json")
	if !strings.Contains(r.stdout, `"state": "KEY_STATE_DISABLED"`) {
		t.Errorf("key state after disable:\n%s", r.stdout)
	}
}

func TestKeyDisableErrors(t *testing.T) {
	b := startBroker(t)
	b.mustRun(t, "key", "create", "k")
	b.check(t, []cliCase{
		{"admin", []string{"key", "disable", "missing"}, exitFailure, "key disable missing: no such key (key_not_found"},
		{"admin", []string{"key", "disable", "k", "--version", "9"}, exitFailure, "key disable k --version 9: no such key version (key_version_not_found"},
		{"admin", []string{"key", "disable", "k", "--version", "4294967296"}, exitUsage, "--version 4294967296 is out of range"},
		{"auditor", []string{"key", "disable", "k"}, exitRefused, "not_authorized"},
	})
}
