package main

import (
	"encoding/json"
	"regexp"
	"strings"
	"testing"
)

func TestPolicyList(t *testing.T) {
	b := startBroker(t)
	if r := b.mustRun(t, "policy", "list"); r.stdout != "no key has a policy yet\n" {
		t.Errorf("empty: %q", r.stdout)
	}
	b.mustRun(t, "key", "create", "a")
	b.mustRun(t, "key", "create", "b")
	b.mustRun(t, "policy", "put", "--key", "a", "--file", tempFile(t, "p.json", defaultPolicy()))
	b.mustRun(t, "policy", "put", "--key", "a", "--file", tempFile(t, "p.json", `{"spiffe_ids": ["spiffe://example.org/x", "spiffe://example.org/y"], "allow_unpinned_measurements": true, "allow_debug": true}`))
	b.mustRun(t, "policy", "put", "--key", "b", "--file", tempFile(t, "p.json", defaultPolicy()))

	// One key: every version, newest first.
	r := b.run(t, "auditor", "policy", "list", "--key", "a")
	if r.code != exitOK {
		t.Fatalf("policy list: %v", r)
	}
	lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
	if len(lines) != 3 {
		t.Fatalf("want a header and 2 versions:\n%s", r.stdout)
	}
	for i, re := range []string{
		`^KEY +VERSION +CREATED +CREATED BY +SPIFFE IDS +PINNED +DEBUG$`,
		`^a +2 +\S+Z +spiffe://example.org/admin +2 +none \(unpinned\) +allowed$`,
		`^a +1 +\S+Z +spiffe://example.org/admin +1 +mrtd,rtmr0 +denied$`,
	} {
		if !regexp.MustCompile(re).MatchString(lines[i]) {
			t.Errorf("line %d %q does not match %s", i, lines[i], re)
		}
	}

	// Every key: the current versions.
	r = b.mustRun(t, "policy", "list", "--json")
	var got struct {
		Policies []struct {
			KeyID   string `json:"key_id"`
			Version int    `json:"version"`
		} `json:"policies"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &got); err != nil {
		t.Fatalf("--json: %v\n%s", err, r.stdout)
	}
	if len(got.Policies) != 2 || got.Policies[0].KeyID != "a" || got.Policies[0].Version != 2 || got.Policies[1].KeyID != "b" {
		t.Errorf("--json: %+v", got)
	}
}

func TestPolicyListErrors(t *testing.T) {
	b := startBroker(t)
	b.mustRun(t, "key", "create", "k")
	if r := b.mustRun(t, "policy", "list", "--key", "k"); !strings.Contains(r.stdout, "key k has no policy; every release is denied until 'kbsctl policy put --key k --file policy.json'") {
		t.Errorf("no policy: %q", r.stdout)
	}
	b.check(t, []cliCase{
		{"admin", []string{"policy", "list", "--key", "missing"}, exitFailure, "policy list --key missing: no such key (key_not_found"},
		{"loader", []string{"policy", "list"}, exitRefused, "policy list: denied by the key broker: not authorized"},
	})
}
