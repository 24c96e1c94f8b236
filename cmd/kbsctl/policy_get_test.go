package main

import (
	"encoding/json"
	"strings"
	"testing"
)

func TestPolicyGet(t *testing.T) {
	b := startBroker(t)
	b.mustRun(t, "key", "create", "k")
	b.mustRun(t, "policy", "put", "--key", "k", "--file", tempFile(t, "p1.json", defaultPolicy()))
	b.mustRun(t, "policy", "put", "--key", "k", "--file", tempFile(t, "p2.json", `{"spiffe_ids": ["spiffe://example.org/other"], "allow_unpinned_measurements": true}`))

	r := b.run(t, "auditor", "policy", "get", "--key", "k")
	if r.code != exitOK {
		t.Fatalf("policy get: %v", r)
	}
	var cur struct {
		KeyID     string   `json:"key_id"`
		Version   int      `json:"version"`
		SpiffeIDs []string `json:"spiffe_ids"`
		MRTD      []string `json:"mrtd"`
		Unpinned  bool     `json:"allow_unpinned_measurements"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &cur); err != nil {
		t.Fatalf("not JSON: %v\n%s", err, r.stdout)
	}
	if cur.KeyID != "k" || cur.Version != 2 || len(cur.SpiffeIDs) != 1 || cur.SpiffeIDs[0] != "spiffe://example.org/other" || !cur.Unpinned {
		t.Errorf("current policy: %+v", cur)
	}
	// Stable formatting: two-space indentation, proto field names.
	if !strings.HasPrefix(r.stdout, "{\n  \"key_id\": \"k\",\n  \"version\": 2,\n") {
		t.Errorf("formatting:\n%s", r.stdout)
	}

	r = b.mustRun(t, "policy", "get", "--key", "k", "--version", "1")
	if err := json.Unmarshal([]byte(r.stdout), &cur); err != nil {
		t.Fatal(err)
	}
	if cur.Version != 1 || len(cur.MRTD) != 1 {
		t.Errorf("version 1: %+v", cur)
	}
}

func TestPolicyGetErrors(t *testing.T) {
	b := startBroker(t)
	b.mustRun(t, "key", "create", "nopolicy")
	b.check(t, []cliCase{
		{"admin", []string{"policy", "get", "--key", "nopolicy"}, exitFailure, "policy get --key nopolicy: "},
		{"admin", []string{"policy", "get", "--key", "nopolicy"}, exitFailure, "'kbsctl policy put --key ID --file policy.json'"},
		{"admin", []string{"policy", "get", "--key", "missing"}, exitFailure, "no such key (key_not_found"},
		{"admin", []string{"policy", "get"}, exitUsage, "--key is required"},
		{"loader", []string{"policy", "get", "--key", "nopolicy"}, exitRefused, "not_authorized"},
	})
}
