package main

import (
	"encoding/json"
	"strings"
	"testing"
)

func TestKeyRotate(t *testing.T) {
	b := startBroker(t)
	b.mustRun(t, "key", "create", "k")
	r := b.mustRun(t, "key", "rotate", "k")
	if r.stdout != "rotated key k: version 2 is now primary; older versions stay usable for decryption until disabled\n" {
		t.Errorf("output: %q", r.stdout)
	}
	r = b.mustRun(t, "key", "rotate", "k", "--json")
	var got struct {
		PrimaryVersion int `json:"primary_version"`
		Versions       []struct {
			Version int    `json:"version"`
			Origin  string `json:"origin"`
		} `json:"versions"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &got); err != nil {
		t.Fatalf("--json: %v\n%s", err, r.stdout)
	}
	if got.PrimaryVersion != 3 || len(got.Versions) != 3 || got.Versions[2].Origin != "KEY_ORIGIN_GENERATED" {
		t.Errorf("--json: %+v", got)
	}
}

func TestKeyRotateErrors(t *testing.T) {
	b := startBroker(t)
	b.mustRun(t, "key", "create", "gone")
	b.mustRun(t, "key", "destroy", "gone", "--yes")
	b.check(t, []cliCase{
		{"admin", []string{"key", "rotate", "missing"}, exitFailure, "key rotate missing: no such key (key_not_found, request id "},
		{"admin", []string{"key", "rotate", "gone"}, exitFailure, "key rotate gone: "},
		{"admin", []string{"key", "rotate", "gone"}, exitFailure, "a destroyed key or version is final; create a new key"},
		{"admin", []string{"key", "rotate"}, exitUsage, "rotate: missing ID"},
		{"auditor", []string{"key", "rotate", "gone"}, exitRefused, "denied by the key broker: not authorized (not_authorized"},
	})
	if r := b.mustRun(t, "key", "get", "gone"); strings.Contains(r.stdout, "  2 ") {
		t.Errorf("a failed rotate added a version:\n%s", r.stdout)
	}
}
