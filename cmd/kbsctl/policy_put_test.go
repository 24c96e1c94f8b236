package main

import (
	"encoding/json"
	"strings"
	"testing"
	"time"
)

func TestPolicyPut(t *testing.T) {
	b := startBroker(t)
	b.mustRun(t, "key", "create", "k")
	r := b.mustRun(t, "policy", "put", "--key", "k", "--file", tempFile(t, "p.json", defaultPolicy()))
	want := "stored version 1 of the policy of key k; it applies to every release from now on\nspiffe ids: 1, pinned: mrtd,rtmr0, debug allowed: false\n"
	if r.stdout != want {
		t.Errorf("output %q, want %q", r.stdout, want)
	}
	// What get prints, put accepts (output-only fields ignored): version 2.
	got := b.mustRun(t, "policy", "get", "--key", "k").stdout
	r = b.mustRun(t, "policy", "put", "--key", "k", "--file", tempFile(t, "again.json", got), "--json")
	var stored map[string]any
	if err := json.Unmarshal([]byte(r.stdout), &stored); err != nil {
		t.Fatalf("--json: %v\n%s", err, r.stdout)
	}
	if stored["version"] != 2.0 || stored["key_id"] != "k" || stored["created_by"] != "spiffe://example.org/admin" {
		t.Errorf("--json: %v", stored)
	}
	// stdin, camelCase JSON names, uppercase hex (stored lowercase).
	e := &env{now: time.Now, stdin: strings.NewReader(`{"spiffeIds": ["spiffe://example.org/ns/*"], "mrOwner": ["` + strings.Repeat("AB", 48) + `"]}`)}
	r = kbsctlEnv(t.Context(), e, b.as("admin", "policy", "put", "--key", "k", "--file", "-")...)
	if r.code != exitOK || !strings.Contains(r.stdout, "stored version 3") || !strings.Contains(r.stdout, "pinned: mr_owner") {
		t.Fatalf("put from stdin: %v", r)
	}
	if got := b.mustRun(t, "policy", "get", "--key", "k").stdout; !strings.Contains(got, strings.Repeat("ab", 48)) {
		t.Errorf("stored policy:\n%s", got)
	}
	if r := b.mustRun(t, "key", "get", "k"); !strings.Contains(r.stdout, "policy:           version 3") {
		t.Errorf("key get after put:\n%s", r.stdout)
	}
}

func TestPolicyPutErrors(t *testing.T) {
	b := startBroker(t)
	b.mustRun(t, "key", "create", "k")
	good := tempFile(t, "good.json", defaultPolicy())
	unknown := tempFile(t, "unknown.json", "{\n  \"spiffe_ids\": [\"spiffe://example.org/loader\"],\n  \"mrtds\": []\n}")
	badHex := tempFile(t, "bad.json", `{"spiffe_ids": ["spiffe://example.org/loader"], "mrtd": ["abc"]}`)
	unpinned := tempFile(t, "unpinned.json", `{"spiffe_ids": ["spiffe://example.org/loader"]}`)
	b.check(t, []cliCase{
		{"admin", []string{"policy", "put", "--key", "k", "--file", unknown}, exitFailure, `--file ` + unknown + `: (line 3:3): unknown field "mrtds"; the policy fields are spiffe_ids, mrtd, rtmr0`},
		{"admin", []string{"policy", "put", "--key", "k", "--file", tempFile(t, "empty.json", " \n")}, exitFailure, "the file is empty; a policy is a JSON object"},
		{"admin", []string{"policy", "put", "--key", "k", "--file", tempFile(t, "notjson.json", "spiffe_ids: x")}, exitFailure, "a policy file is the JSON form of cml.kbs.v1.Policy"},
		{"admin", []string{"policy", "put", "--key", "k", "--file", t.TempDir() + "/none.json"}, exitFailure, "no such file"},
		// The broker's validation message is shown.
		{"admin", []string{"policy", "put", "--key", "k", "--file", badHex}, exitFailure, "mrtd[0]: 3 hex characters, want 96"},
		{"admin", []string{"policy", "put", "--key", "k", "--file", badHex}, exitFailure, "the key broker refused the policy; fix --file and put it again (nothing was stored)"},
		{"admin", []string{"policy", "put", "--key", "k", "--file", unpinned}, exitFailure, "allow_unpinned_measurements"},
		{"admin", []string{"policy", "put", "--key", "missing", "--file", good}, exitFailure, "policy put --key missing --file " + good + ": no such key (key_not_found"},
		{"admin", []string{"policy", "put", "--file", good}, exitUsage, "--key is required"},
		{"admin", []string{"policy", "put", "--key", "k"}, exitUsage, "--file is required"},
		{"loader", []string{"policy", "put", "--key", "k", "--file", good}, exitRefused, "not_authorized"},
		{"auditor", []string{"policy", "put", "--key", "k", "--file", good}, exitRefused, "not_authorized"},
	})
	if r := b.mustRun(t, "policy", "list", "--key", "k"); !strings.Contains(r.stdout, "has no policy") {
		t.Errorf("a refused put stored something:\n%s", r.stdout)
	}
}
