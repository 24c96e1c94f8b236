package main

import (
	"encoding/json"
	"regexp"
	"strings"
	"testing"

	"github.com/cml-project/cml/tdx/tdxsim"
)

const loaderID = "spiffe://" + testTD + "/loader"

func TestPolicyTestAllow(t *testing.T) {
	b := startBroker(t)
	b.mustRun(t, "key", "create", "k")
	b.mustRun(t, "policy", "put", "--key", "k", "--file", tempFile(t, "p.json", defaultPolicy()))
	quote := b.quote(t)

	// The auditor may dry-run.
	r := b.run(t, "auditor", "policy", "test", "--key", "k", "--quote", quote, "--spiffe-id", loaderID, "--kem", "x25519")
	if r.code != exitOK || r.stderr != "" {
		t.Fatalf("policy test: %v", r)
	}
	def := tdxsim.DefaultTDParams().JSON()
	for _, re := range []string{
		`(?m)^policy: version 1 of the policy of key k$`,
		`(?m)^caller: ` + regexp.QuoteMeta(loaderID) + `$`,
		`(?m)^quote: +verified against the TDX SIMULATOR's root`,
		`(?m)^PASS  quote$`,
		`(?m)^PASS  spiffe_id\n      expected: ` + regexp.QuoteMeta(loaderID) + `\n      actual:   ` + regexp.QuoteMeta(loaderID) + `$`,
		`(?m)^PASS  mrtd\n      expected: ` + def.MRTD + `\n      actual:   ` + def.MRTD + `$`,
		`(?m)^PASS  debug$`,
		`(?m)^PASS  tcb_status$`,
		`(?m)^PASS  kem$`,
		`(?m)^decision: ALLOW$`,
	} {
		if !regexp.MustCompile(re).MatchString(r.stdout) {
			t.Errorf("output lacks %s:\n%s", re, r.stdout)
		}
	}
	if strings.Contains(r.stdout, "FAIL") {
		t.Errorf("a FAIL in an allow:\n%s", r.stdout)
	}
}

func TestPolicyTestDeny(t *testing.T) {
	b := startBroker(t)
	b.mustRun(t, "key", "create", "k")
	b.mustRun(t, "policy", "put", "--key", "k", "--file", tempFile(t, "p.json", defaultPolicy()))
	other := strings.Repeat("ab", 48)
	quote := b.quote(t, "--mrtd", other, "--debug")

	r := b.run(t, "admin", "policy", "test", "--key", "k", "--quote", quote, "--spiffe-id", "spiffe://example.org/intruder")
	if r.code != exitRefused {
		t.Fatalf("want exit %d: %v", exitRefused, r)
	}
	def := tdxsim.DefaultTDParams().JSON()
	for _, re := range []string{
		`(?m)^PASS  quote$`,
		`(?m)^FAIL  spiffe_id  spiffe_id_not_allowed\n      expected: ` + regexp.QuoteMeta(loaderID) + `\n      actual:   spiffe://example.org/intruder$`,
		`(?m)^FAIL  mrtd  mrtd_not_allowed\n      expected: ` + def.MRTD + `\n      actual:   ` + other + `$`,
		`(?m)^PASS  rtmr0$`,
		`(?m)^FAIL  debug  debug_td$`,
		`(?m)^decision: DENY \(spiffe_id_not_allowed, mrtd_not_allowed, debug_td\)$`,
	} {
		if !regexp.MustCompile(re).MatchString(r.stdout) {
			t.Errorf("output lacks %s:\n%s", re, r.stdout)
		}
	}
	if !strings.Contains(r.stderr, "policy test: denied by version 1 of the policy of key k: spiffe_id_not_allowed, mrtd_not_allowed, debug_td") {
		t.Errorf("stderr: %q", r.stderr)
	}

	// --json: the response, and still exit 3.
	r = b.run(t, "admin", "policy", "test", "--key", "k", "--quote", quote, "--spiffe-id", loaderID, "--json")
	var got struct {
		Decision    string   `json:"decision"`
		ReasonCodes []string `json:"reason_codes"`
		Simulated   bool     `json:"simulated"`
		TDClaims    struct {
			MRTD string `json:"mrtd"`
		} `json:"td_claims"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &got); err != nil {
		t.Fatalf("--json: %v\n%s", err, r.stdout)
	}
	if r.code != exitRefused || got.Decision != "DECISION_DENY" || strings.Join(got.ReasonCodes, ",") != "mrtd_not_allowed,debug_td" || !got.Simulated || got.TDClaims.MRTD != other {
		t.Errorf("--json: exit %d %+v", r.code, got)
	}

	// A draft that allows this TD, not stored.
	draft := tempFile(t, "draft.json", `{"spiffe_ids": ["`+loaderID+`"], "mrtd": ["`+other+`"], "allow_debug": true}`)
	r = b.run(t, "admin", "policy", "test", "--policy-file", draft, "--quote", quote, "--spiffe-id", loaderID)
	if r.code != exitOK || !strings.Contains(r.stdout, "policy: draft policy "+draft+" (not stored)") || !strings.Contains(r.stdout, "decision: ALLOW") {
		t.Errorf("draft: %v", r)
	}
	if r := b.mustRun(t, "policy", "get", "--key", "k"); !strings.Contains(r.stdout, `"version": 1`) {
		t.Errorf("the draft was stored:\n%s", r.stdout)
	}

	// Garbage is a failed quote check, not an error.
	r = b.run(t, "admin", "policy", "test", "--key", "k", "--quote", tempFile(t, "junk.quote", "not a quote"), "--spiffe-id", loaderID)
	if r.code != exitRefused || !regexp.MustCompile(`(?m)^FAIL  quote  \S+`).MatchString(r.stdout) {
		t.Errorf("junk quote: %v", r)
	}
}

func TestPolicyTestErrors(t *testing.T) {
	b := startBroker(t)
	b.mustRun(t, "key", "create", "nopolicy")
	quote := b.quote(t)
	big := tempFile(t, "big.quote", strings.Repeat("x", 64<<10+1))
	b.check(t, []cliCase{
		{"admin", []string{"policy", "test", "--key", "nopolicy", "--quote", quote, "--spiffe-id", loaderID}, exitFailure, "policy test --key nopolicy: "},
		{"admin", []string{"policy", "test", "--key", "missing", "--quote", quote, "--spiffe-id", loaderID}, exitFailure, "no such key (key_not_found"},
		{"admin", []string{"policy", "test", "--quote", quote, "--spiffe-id", loaderID}, exitUsage, "--key (the stored policy) or --policy-file (a draft) is required"},
		{"admin", []string{"policy", "test", "--key", "k", "--spiffe-id", loaderID}, exitUsage, "--quote is required"},
		{"admin", []string{"policy", "test", "--key", "k", "--quote", quote}, exitUsage, "--spiffe-id is required"},
		{"admin", []string{"policy", "test", "--key", "k", "--quote", quote, "--spiffe-id", "loader"}, exitUsage, `--spiffe-id "loader": want a SPIFFE ID`},
		{"admin", []string{"policy", "test", "--key", "k", "--quote", quote, "--spiffe-id", loaderID, "--kem", "rsa"}, exitUsage, `--kem "rsa": want x25519 or mlkem768x25519`},
		{"admin", []string{"policy", "test", "--policy-file", "d.json", "--version", "2", "--quote", quote, "--spiffe-id", loaderID}, exitUsage, "--version names a stored policy"},
		{"admin", []string{"policy", "test", "--key", "k", "--quote", t.TempDir() + "/none", "--spiffe-id", loaderID}, exitFailure, "no such file; get a quote from the TD, or a simulated one with 'kbsctl dev tdxsim quote'"},
		{"admin", []string{"policy", "test", "--key", "k", "--quote", big, "--spiffe-id", loaderID}, exitFailure, "larger than 65536 bytes"},
		{"admin", []string{"policy", "test", "--policy-file", tempFile(t, "bad.json", `{"spiffe_ids": []}`), "--quote", quote, "--spiffe-id", loaderID}, exitFailure, "fix the draft in --policy-file"},
		{"loader", []string{"policy", "test", "--key", "nopolicy", "--quote", quote, "--spiffe-id", loaderID}, exitRefused, "not_authorized"},
	})
}
