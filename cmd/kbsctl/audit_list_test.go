package main

import (
	"encoding/json"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestAuditList(t *testing.T) {
	b := startBroker(t)
	b.mustRun(t, "key", "create", "k")
	b.mustRun(t, "key", "rotate", "k")
	b.run(t, "loader", "key", "get", "k")    // denied: not_authorized
	b.run(t, "admin", "key", "get", "other") // denied: key_not_found
	b.mustRun(t, "key", "create", "other")
	b.mustRun(t, "policy", "test", "--key", "k", "--policy-file", tempFile(t, "d.json", defaultPolicy()), "--quote", b.quote(t), "--spiffe-id", loaderID)

	// Everything, a few records per call: pages are followed.
	r := b.run(t, "auditor", "audit", "list", "--page-size", "2")
	if r.code != exitOK {
		t.Fatalf("audit list: %v", r)
	}
	lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
	want := []string{
		`^SEQ +TIME +CALLER +OP +KEY@VER +DECISION +REASONS$`,
		`^1 +\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ +spiffe://example.org/admin +CreateKey +k@1 +allow +-$`,
		`^2 +\S+ +spiffe://example.org/admin +RotateKey +k@2 +allow +-$`,
		`^3 +\S+ +spiffe://example.org/loader +GetKey +k +deny +not_authorized$`,
		`^4 +\S+ +spiffe://example.org/admin +GetKey +other +deny +key_not_found$`,
		`^5 +\S+ +spiffe://example.org/admin +CreateKey +other@1 +allow +-$`,
		`^6 +\S+ +spiffe://example.org/admin +TestPolicy +\S* +allow \(sim\) +`,
	}
	if len(lines) < len(want) {
		t.Fatalf("want at least %d lines:\n%s", len(want), r.stdout)
	}
	for i, re := range want {
		if !regexp.MustCompile(re).MatchString(lines[i]) {
			t.Errorf("line %d %q does not match %s", i, lines[i], re)
		}
	}

	// Filters.
	r = b.mustRun(t, "audit", "list", "--key", "k", "--decision", "deny")
	if lines := strings.Split(strings.TrimSpace(r.stdout), "\n"); len(lines) != 2 || !strings.Contains(lines[1], "not_authorized") {
		t.Errorf("--key k --decision deny:\n%s", r.stdout)
	}
	r = b.mustRun(t, "audit", "list", "--limit", "3", "--page-size", "2", "--json")
	var got struct {
		Records []struct {
			Sequence   string `json:"sequence"`
			RecordHash string `json:"record_hash"`
			PrevHash   string `json:"prev_hash"`
		} `json:"records"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &got); err != nil {
		t.Fatalf("--json: %v\n%s", err, r.stdout)
	}
	if len(got.Records) != 3 || got.Records[2].Sequence != "3" || got.Records[1].PrevHash != got.Records[0].RecordHash {
		t.Errorf("--limit 3 --json: %+v", got.Records)
	}
	if r := b.mustRun(t, "audit", "list", "--since", "2999-01-01"); r.stdout != "no audit records match\n" {
		t.Errorf("--since in the future: %q", r.stdout)
	}
	until := time.Now().Add(time.Hour).UTC().Format(time.RFC3339)
	r = b.mustRun(t, "audit", "list", "--since", "1h", "--until", until, "--decision", "allow")
	if n := strings.Count(r.stdout, "\n"); n < 4 || strings.Contains(r.stdout, " deny ") {
		t.Errorf("--since 1h --until %s --decision allow (%d lines):\n%s", until, n, r.stdout)
	}
}

func TestAuditListErrors(t *testing.T) {
	b := startBroker(t)
	b.check(t, []cliCase{
		{"loader", []string{"audit", "list"}, exitRefused, "audit list: denied by the key broker: not authorized (not_authorized"},
		{"admin", []string{"audit", "list", "--decision", "maybe"}, exitUsage, `--decision "maybe": want allow or deny`},
		{"admin", []string{"audit", "list", "--since", "yesterday"}, exitUsage, `--since "yesterday": want an RFC 3339 time`},
		{"admin", []string{"audit", "list", "--since", "-1h"}, exitUsage, "--since -1h: a duration means that long ago"},
		{"admin", []string{"audit", "list", "--since", "1h", "--until", "2h"}, exitUsage, "--since 1h is not before --until 2h"},
		{"admin", []string{"audit", "list", "--limit", "-1"}, exitUsage, "--limit -1"},
		{"admin", []string{"audit", "list", "--page-size", strconv.Itoa(maxPageSize + 1)}, exitUsage, "--page-size 1001: want 1 to 1000"},
		{"admin", []string{"audit", "list", "--key", "bad key"}, exitUsage, `--key "bad key"`},
	})
}
