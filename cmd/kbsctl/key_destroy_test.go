package main

import (
	"regexp"
	"strings"
	"testing"
	"time"
)

func TestKeyDestroy(t *testing.T) {
	b := startBroker(t)
	b.mustRun(t, "key", "create", "k")
	b.mustRun(t, "key", "rotate", "k")

	// One version, with --yes (scripts): no question is asked.
	r := b.mustRun(t, "key", "destroy", "k", "--version", "1", "--yes")
	if r.stdout != "destroyed version 1 of key k: the key bytes are erased; the metadata stays as a tombstone\n" || r.stderr != "" {
		t.Errorf("destroy --version 1 --yes: %v", r)
	}
	r = b.mustRun(t, "key", "get", "k")
	if !regexp.MustCompile(`(?m)^  1 +destroyed`).MatchString(r.stdout) || !regexp.MustCompile(`(?m)^state: +enabled$`).MatchString(r.stdout) {
		t.Errorf("after destroying version 1:\n%s", r.stdout)
	}
	if r := b.run(t, "admin", "key", "enable", "k", "--version", "1"); r.code != exitFailure || !strings.Contains(r.stderr, "a destroyed key or version is final") {
		t.Errorf("enable of a destroyed version: %v", r)
	}

	b.mustRun(t, "key", "create", "scripted")
	r = b.mustRun(t, "key", "destroy", "scripted", "--yes")
	if r.stdout != "destroyed every version of key scripted: the key bytes are erased; the metadata stays as a tombstone\n" || r.stderr != "" {
		t.Errorf("destroy --yes: %v", r)
	}

	// The whole key, confirmed on a terminal by typing its id.
	e := &env{now: time.Now, stdinTerminal: true, stdin: strings.NewReader("k\n")}
	r = kbsctlEnv(t.Context(), e, b.as("admin", "key", "destroy", "k")...)
	if r.code != exitOK || !strings.Contains(r.stderr, "Type the key id (k) to confirm: ") || !strings.Contains(r.stdout, "destroyed every version of key k") {
		t.Fatalf("confirmed destroy: %v", r)
	}
	r = b.mustRun(t, "key", "get", "k")
	if !regexp.MustCompile(`(?m)^state: +destroyed$`).MatchString(r.stdout) || !regexp.MustCompile(`(?m)^destroyed: +\S+Z$`).MatchString(r.stdout) {
		t.Errorf("after destroying the key:\n%s", r.stdout)
	}
	// Destroying something destroyed succeeds.
	b.mustRun(t, "key", "destroy", "k", "--yes")
}

func TestKeyDestroyRefusals(t *testing.T) {
	b := startBroker(t)
	b.mustRun(t, "key", "create", "k")
	// Not a terminal and no --yes: refused before any call.
	b.check(t, []cliCase{
		{"admin", []string{"key", "destroy", "k"}, exitUsage, "refusing to destroy every version of key k without --yes when stdin is not a terminal"},
		{"admin", []string{"key", "destroy", "missing", "--yes"}, exitFailure, "key destroy missing: no such key (key_not_found"},
		{"loader", []string{"key", "destroy", "k", "--yes"}, exitRefused, "key destroy k: denied by the key broker: not authorized (not_authorized"},
		// The primary version alone: the broker's reason, and the commands
		// that do what was meant.
		{"admin", []string{"key", "destroy", "k", "--version", "1", "--yes"}, exitFailure,
			"key destroy k --version 1: version 1 is the primary version of key \"k\": rotate the key first (a new version becomes primary), then destroy version 1; or destroy the whole key (primary_version, request id "},
		{"admin", []string{"key", "destroy", "k", "--version", "1", "--yes"}, exitFailure,
			"); run 'kbsctl key rotate k', then 'kbsctl key destroy k --version 1' again; 'kbsctl key destroy k' destroys the whole key\n"},
	})
	// A terminal where something else is typed, or nothing.
	for _, typed := range []string{"K\n", "k \n", "", "kk\n"} {
		e := &env{now: time.Now, stdinTerminal: true, stdin: strings.NewReader(typed)}
		r := kbsctlEnv(t.Context(), e, b.as("admin", "key", "destroy", "k")...)
		if r.code != exitFailure || !strings.Contains(r.stderr, "not confirmed") || !strings.Contains(r.stderr, "nothing was destroyed") {
			t.Errorf("typed %q: %v", typed, r)
		}
	}
	if r := b.mustRun(t, "key", "get", "k"); !regexp.MustCompile(`(?m)^state: +enabled$`).MatchString(r.stdout) {
		t.Errorf("the key was destroyed without confirmation:\n%s", r.stdout)
	}
}
