package main

// Tests of the policy file helpers (policy.go). The tests of the command
// "policy test" are in policy_testcmd_test.go.

import (
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	kbsv1 "github.com/cml-project/cml/proto/cml/kbs/v1"
)

func TestParsePolicy(t *testing.T) {
	p, err := parsePolicy("f", []byte(`{"spiffe_ids": ["spiffe://x/y"], "mrtd": ["AB"], "allowedKemIds": ["HPKE_KEM_MLKEM768_X25519"], "key_id": "ignored-by-the-broker"}`))
	if err != nil {
		t.Fatal(err)
	}
	if len(p.GetSpiffeIds()) != 1 || p.GetMrtd()[0] != "AB" || p.GetAllowedKemIds()[0] != kbsv1.HpkeKem_HPKE_KEM_MLKEM768_X25519 {
		t.Errorf("parsed %v", p)
	}
	for in, want := range map[string]string{
		``:                            "f: the file is empty",
		`{"spiffe_ids": "x"}`:         "f: syntax error (line 1:16)",
		`{"allow_debug": "yes"}`:      `f: (line 1:17): invalid value for bool field allowDebug: "yes"`,
		`{"mrtd": [], "nope": 1}`:     `unknown field "nope"; the policy fields are spiffe_ids, mrtd`,
		`{"spiffe_ids": []} trailing`: "f: ",
		`[]`:                          "a policy file is the JSON form of cml.kbs.v1.Policy",
	} {
		_, err := parsePolicy("f", []byte(in))
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: %v, want %q", in, err, want)
		}
	}
	if names := policyFieldNames(); strings.Contains(names, "created_by") || !strings.HasSuffix(names, "allowed_kem_ids") {
		t.Errorf("field names: %s", names)
	}
}

// FuzzParsePolicy: any input is refused with an error or parses; what
// parses prints (as 'policy get' does) and parses back to the same policy.
func FuzzParsePolicy(f *testing.F) {
	f.Add([]byte(defaultPolicy()))
	f.Add([]byte(`{"spiffeIds": ["spiffe://x/*"], "allowUnpinnedMeasurements": true, "min_tee_tcb_svn": "00"}`))
	f.Add([]byte(`{"key_id": "k", "version": 3, "create_time": "2025-01-01T00:00:00Z"}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		p, err := parsePolicy("f", data)
		if err != nil {
			if p != nil {
				t.Fatal("a policy with an error")
			}
			return
		}
		var out strings.Builder
		if err := printJSON(&out, p); err != nil {
			t.Fatalf("print: %v", err)
		}
		q, err := parsePolicy("f", []byte(out.String()))
		if err != nil {
			t.Fatalf("printed policy does not parse: %v\n%s", err, out.String())
		}
		if !proto.Equal(p, q) {
			t.Fatalf("round trip changed the policy:\n%v\n%v", p, q)
		}
	})
}
