package main

import (
	"regexp"
	"strings"
	"testing"
)

func TestKeyEnable(t *testing.T) {
	b := startBroker(t)
	b.mustRun(t, "key", "create", "k")
	b.mustRun(t, "key", "rotate", "k")
	b.mustRun(t, "key", "disable", "k", "--version", "1")
	b.mustRun(t, "key", "disable", "k")

	// Enabling the key leaves version 1 disabled.
	r := b.mustRun(t, "key", "enable", "k")
	if !strings.Contains(r.stdout, "key k is enabled") {
		t.Errorf("output: %q", r.stdout)
	}
	r = b.mustRun(t, "key", "get", "k")
	if !regexp.MustCompile(`(?m)^state: +enabled$`).MatchString(r.stdout) || !regexp.MustCompile(`(?m)^  1 +disabled`).MatchString(r.stdout) {
		t.Errorf("after enabling the key:\n%s", r.stdout)
	}
	r = b.mustRun(t, "key", "enable", "k", "--version", "1")
	if r.stdout != "version 1 of key k is enabled\n" {
		t.Errorf("output: %q", r.stdout)
	}
	r = b.mustRun(t, "key", "get", "k")
	if !regexp.MustCompile(`(?m)^  1 +enabled`).MatchString(r.stdout) {
		t.Errorf("after enabling version 1:\n%s", r.stdout)
	}
}

func TestKeyEnableErrors(t *testing.T) {
	b := startBroker(t)
	b.mustRun(t, "key", "create", "k")
	b.mustRun(t, "key", "destroy", "k", "--yes")
	b.check(t, []cliCase{
		{"admin", []string{"key", "enable", "k"}, exitFailure, "key enable k: "},
		{"admin", []string{"key", "enable", "k", "--version", "1"}, exitFailure, "a destroyed key or version is final"},
		{"admin", []string{"key", "enable", "missing"}, exitFailure, "no such key (key_not_found"},
		{"loader", []string{"key", "enable", "k"}, exitRefused, "not_authorized"},
	})
}
