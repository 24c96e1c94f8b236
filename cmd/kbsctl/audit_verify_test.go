package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/cml-project/cml/server/store"
	"github.com/cml-project/cml/server/store/storetest"
)

func TestAuditVerify(t *testing.T) {
	b := startBroker(t)
	if r := b.mustRun(t, "audit", "verify"); r.stdout != "audit log OK: empty\n" {
		t.Errorf("empty log: %q", r.stdout)
	}
	b.mustRun(t, "key", "create", "k")
	b.mustRun(t, "key", "rotate", "k")

	// The auditor may verify; the verification itself is not audited, so
	// the count is exact.
	r := b.run(t, "auditor", "audit", "verify")
	if r.code != exitOK || r.stderr != "" {
		t.Fatalf("audit verify: %v", r)
	}
	m := regexp.MustCompile(`^audit log OK: (\d+) records checked\nhead: sequence (\d+), hash ([0-9a-f]{64})\nrecords from \S+Z to \S+Z\n$`).FindStringSubmatch(r.stdout)
	if m == nil || m[1] != m[2] || m[1] == "0" {
		t.Fatalf("output:\n%s", r.stdout)
	}
	r = b.mustRun(t, "audit", "verify", "--json")
	var got struct {
		OK       bool   `json:"ok"`
		HeadHash string `json:"head_hash"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &got); err != nil || !got.OK || len(got.HeadHash) != 64 {
		t.Errorf("--json: %v %+v\n%s", err, got, r.stdout)
	}
}

// Editing the database file behind the broker's back is detected and
// named: exit 3 with the first bad sequence.
func TestAuditVerifyBroken(t *testing.T) {
	b := newBroker(t)
	kek := storetest.RandomKEK(t)
	path := filepath.Join(t.TempDir(), store.DBFileName)
	st, err := store.Create(t.Context(), path, store.Options{KEK: kek, Now: time.Now})
	if err != nil {
		t.Fatal(err)
	}
	stop := b.serve(t, st)
	b.mustRun(t, "key", "create", "k")
	// A denied call leaves a record holding a string found nowhere else.
	if r := b.run(t, "admin", "key", "get", "tamper-marker"); r.code != exitFailure {
		t.Fatalf("key get: %v", r)
	}
	b.mustRun(t, "key", "rotate", "k")
	stop()
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}

	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(data, []byte("tamper-marker")) {
		t.Fatal("the marker is not in the database file")
	}
	if err := os.WriteFile(path, bytes.ReplaceAll(data, []byte("tamper-marker"), []byte("tamper-market")), 0o600); err != nil {
		t.Fatal(err)
	}
	st, err = store.Open(t.Context(), path, store.Options{KEK: kek, Now: time.Now})
	if err != nil {
		t.Fatalf("reopen: %v", err)
	}
	t.Cleanup(func() { st.Close() })
	b.serve(t, st)

	r := b.run(t, "auditor", "audit", "verify")
	if r.code != exitRefused {
		t.Fatalf("want exit %d: %v", exitRefused, r)
	}
	if r.stdout != "audit log BROKEN at sequence 2: modified\n" {
		t.Errorf("stdout: %q", r.stdout)
	}
	if !strings.Contains(r.stderr, "audit verify: the audit log is BROKEN at sequence 2: modified") || !strings.Contains(r.stderr, "1 record before it verified") {
		t.Errorf("stderr: %q", r.stderr)
	}
	r = b.run(t, "auditor", "audit", "verify", "--json")
	if r.code != exitRefused || !strings.Contains(r.stdout, `"first_bad_sequence": "2"`) || !strings.Contains(r.stdout, `"failure": "modified"`) {
		t.Errorf("--json: %v", r)
	}
}

func TestAuditVerifyErrors(t *testing.T) {
	b := startBroker(t)
	b.check(t, []cliCase{
		{"loader", []string{"audit", "verify"}, exitRefused, "audit verify: denied by the key broker: not authorized (not_authorized"},
		{"admin", []string{"audit", "verify", "x"}, exitUsage, `verify takes no arguments`},
	})
	// A broker that is not there.
	args := append(b.as("admin", "audit", "verify"), "--kbs", "127.0.0.1:1", "--timeout", "3s")
	if r := kbsctl(t, args...); r.code != exitFailure || !strings.Contains(r.stderr, "127.0.0.1:1") {
		t.Errorf("unreachable broker: %v", r)
	}
}
