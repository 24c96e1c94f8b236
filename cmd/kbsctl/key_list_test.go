package main

import (
	"encoding/json"
	"regexp"
	"strings"
	"testing"
	"time"
)

func TestKeyList(t *testing.T) {
	b := startBroker(t)
	if r := b.mustRun(t, "key", "list"); !strings.Contains(r.stdout, "no keys; create one with 'kbsctl key create ID'") {
		t.Errorf("empty list: %q", r.stdout)
	}
	b.mustRun(t, "key", "create", "b-key", "--description", strings.Repeat("long description ", 5))
	b.mustRun(t, "key", "create", "a-key")
	b.mustRun(t, "key", "rotate", "a-key")
	b.mustRun(t, "key", "disable", "b-key")

	// The auditor may list.
	r := b.run(t, "auditor", "key", "list")
	if r.code != exitOK {
		t.Fatalf("key list: %v", r)
	}
	lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
	if len(lines) != 3 || !strings.HasPrefix(lines[0], "KEY ") {
		t.Fatalf("want a header and 2 keys:\n%s", r.stdout)
	}
	for i, re := range []string{
		`^a-key +enabled +2 +2 +- +\d{4}-\d\d-\d\dT\S+Z +-$`,
		`^b-key +disabled +1 +1 +- +\S+ +long description long description long…$`,
	} {
		if !regexp.MustCompile(re).MatchString(lines[i+1]) {
			t.Errorf("line %d %q does not match %s", i+1, lines[i+1], re)
		}
	}

	r = b.mustRun(t, "key", "list", "--json")
	var got struct {
		Keys []struct {
			KeyID string `json:"key_id"`
		} `json:"keys"`
		NextPageToken string `json:"next_page_token"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &got); err != nil {
		t.Fatalf("--json: %v\n%s", err, r.stdout)
	}
	if len(got.Keys) != 2 || got.Keys[0].KeyID != "a-key" || got.Keys[1].KeyID != "b-key" || got.NextPageToken != "" {
		t.Errorf("--json: %+v", got)
	}
}

func TestKeyListErrors(t *testing.T) {
	b := startBroker(t)
	b.check(t, []cliCase{
		{"loader", []string{"key", "list"}, exitRefused, "key list: denied by the key broker: not authorized (not_authorized, request id "},
		{"admin", []string{"key", "list", "extra"}, exitUsage, `list takes no arguments, got ["extra"]`},
	})
	// Connection problems name the flag to fix.
	for _, tc := range []struct {
		args []string
		code int
		msg  string
	}{
		{[]string{"key", "list"}, exitUsage, "--kbs is required: the key broker's host:port"},
		{[]string{"key", "list", "--kbs", b.addr}, exitUsage, "--kbs-spiffe-id is required"},
		{[]string{"key", "list", "--kbs", b.addr, "--kbs-spiffe-id", "kbs"}, exitUsage, `--kbs-spiffe-id "kbs": `},
		{[]string{"key", "list", "--kbs", b.addr, "--kbs-spiffe-id", b.serverID}, exitUsage, "no identity for kbsctl: give --spiffe-socket"},
		{[]string{"key", "list", "--kbs", b.addr, "--kbs-spiffe-id", b.serverID, "--svid-cert", "x.pem"}, exitUsage, "needs all of --svid-cert, --svid-key and --bundle"},
		{[]string{"key", "list", "--kbs", b.addr, "--kbs-spiffe-id", b.serverID, "--svid-cert", "x.pem", "--spiffe-socket", "/s"}, exitUsage, "two identity modes"},
		{append(b.as("admin", "key", "list"), "--timeout", "0s"), exitUsage, "--timeout 0s: want a positive duration"},
	} {
		r := kbsctl(t, tc.args...)
		if r.code != tc.code || !strings.Contains(r.stderr, tc.msg) {
			t.Errorf("kbsctl %q: want exit %d and %q: %v", tc.args, tc.code, tc.msg, r)
		}
	}
	// The wrong broker identity is refused by kbsctl before any call.
	r := kbsctl(t, append(b.as("admin", "key", "list"), "--kbs-spiffe-id", "spiffe://example.org/impostor")...)
	if r.code != exitFailure || !strings.Contains(r.stderr, "key list: the server at "+b.addr+" is not the key broker kbsctl expects: ") ||
		!strings.Contains(r.stderr, "--kbs-spiffe-id must be the SPIFFE ID in the key broker's certificate") {
		t.Errorf("wrong --kbs-spiffe-id: %v", r)
	}
}

// The connection flags fall back to the environment; flags win.
func TestConnectionFlagsFromEnvironment(t *testing.T) {
	b := startBroker(t)
	b.mustRun(t, "key", "create", "k")
	vars := map[string]string{
		envKBS:         b.addr,
		envKBSSPIFFEID: b.serverID,
		envSVIDCert:    b.certs + "/admin.pem",
		envSVIDKey:     b.certs + "/admin-key.pem",
		envBundle:      b.certs + "/ca.pem",
	}
	e := func() *env { return &env{now: time.Now, getenv: func(k string) string { return vars[k] }} }
	if r := kbsctlEnv(t.Context(), e(), "key", "get", "k"); r.code != exitOK || !strings.Contains(r.stdout, "key:") {
		t.Errorf("key get from the environment: %v", r)
	}
	// A flag wins: the loader's files instead of the admin's (the bundle
	// still from the environment).
	r := kbsctlEnv(t.Context(), e(), "key", "get", "k", "--svid-cert", b.certs+"/loader.pem", "--svid-key", b.certs+"/loader-key.pem")
	if r.code != exitRefused || !strings.Contains(r.stderr, "not_authorized") {
		t.Errorf("flags over the environment: %v", r)
	}
	vars[envSPIFFESocket] = "/nonexistent.sock"
	if r := kbsctlEnv(t.Context(), e(), "key", "get", "k"); r.code != exitUsage || !strings.Contains(r.stderr, "both SPIFFE_ENDPOINT_SOCKET and CML_SVID_CERT") {
		t.Errorf("both identity modes in the environment: %v", r)
	}
}
