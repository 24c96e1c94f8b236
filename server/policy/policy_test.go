package policy

import (
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/protobuf/proto"

	kbsv1 "github.com/cml-project/cml/proto/cml/kbs/v1"
	"github.com/cml-project/cml/tdx/verifier"
)

const (
	x25519 = kbsv1.HpkeKem_HPKE_KEM_DHKEM_X25519_HKDF_SHA256
	mlkem  = kbsv1.HpkeKem_HPKE_KEM_MLKEM768_X25519
)

var loader = spiffeid.RequireFromString("spiffe://example.org/ns/ml/sa/loader")

func meas(b byte) verifier.Measurement {
	var m verifier.Measurement
	for i := range m {
		m[i] = b
	}
	return m
}

func testClaims() *verifier.Claims {
	c := &verifier.Claims{
		MRTD:       meas(0x01),
		RTMR:       [4]verifier.Measurement{meas(0x10), meas(0x11), meas(0x12), meas(0x13)},
		MRConfigID: meas(0x20), MROwner: meas(0x21), MROwnerConfig: meas(0x22), MRSeam: meas(0x23),
		TEETCBSVN: [16]byte{3, 1, 2},
		TCBStatus: verifier.TCBStatusUpToDate,
		FMSPC:     "00906ed50000",
	}
	return c
}

func testPolicy() *kbsv1.Policy {
	return &kbsv1.Policy{
		SpiffeIds: []string{"spiffe://example.org/ns/ml/*"},
		Mrtd:      []string{meas(0x01).Hex()},
		Rtmr0:     []string{meas(0xee).Hex(), strings.ToUpper(meas(0x10).Hex())},
	}
}

func TestValidate(t *testing.T) {
	if err := Validate(testPolicy()); err != nil {
		t.Fatalf("valid policy: %v", err)
	}
	if err := Validate(nil); !errors.Is(err, ErrNoPolicy) {
		t.Errorf("Validate(nil) = %v", err)
	}
	long := make([]string, MaxValues+1)
	for i := range long {
		long[i] = meas(1).Hex()
	}
	for _, tc := range []struct {
		name string
		mod  func(*kbsv1.Policy)
		want string // substring of the one problem
	}{
		{"no spiffe ids", func(p *kbsv1.Policy) { p.SpiffeIds = nil }, "spiffe_ids: required"},
		{"bad spiffe id", func(p *kbsv1.Policy) { p.SpiffeIds = []string{"https://example.org/x"} }, "spiffe_ids[0]"},
		{"trust domain only", func(p *kbsv1.Policy) { p.SpiffeIds = []string{"spiffe://example.org"} }, `write "spiffe://example.org/*"`},
		{"star inside", func(p *kbsv1.Policy) { p.SpiffeIds = []string{"spiffe://example.org/ns/*/sa"} }, "final path segment"},
		{"star suffix without slash", func(p *kbsv1.Policy) { p.SpiffeIds = []string{"spiffe://example.org/ns*"} }, "final path segment"},
		{"short mrtd", func(p *kbsv1.Policy) { p.Mrtd = []string{"abcd"} }, "mrtd[0]: 4 hex characters, want 96"},
		{"non-hex rtmr", func(p *kbsv1.Policy) { p.Rtmr3 = []string{strings.Repeat("zz", 48)} }, "rtmr3[0]: not hex"},
		{"0x prefix", func(p *kbsv1.Policy) { p.MrSeam = []string{"0x" + meas(1).Hex()[2:]} }, "mr_seam[0]: not hex"},
		{"too many", func(p *kbsv1.Policy) { p.MrOwner = long }, "mr_owner: 257 entries"},
		{"unpinned", func(p *kbsv1.Policy) { p.Mrtd, p.Rtmr0 = nil, nil }, "no TD measurement is pinned"},
		{"svn length", func(p *kbsv1.Policy) { p.MinTeeTcbSvn = "0102" }, "min_tee_tcb_svn: 4 hex characters, want 32"},
		{"revoked", func(p *kbsv1.Policy) { p.AllowedTcbStatus = []string{"Revoked"} }, "never allowed"},
		{"unknown status", func(p *kbsv1.Policy) { p.AllowedTcbStatus = []string{"uptodate"} }, `"uptodate" is not a TCB status`},
		{"unknown kem", func(p *kbsv1.Policy) { p.AllowedKemIds = []kbsv1.HpkeKem{0x10} }, "allowed_kem_ids[0]"},
		{"unspecified kem", func(p *kbsv1.Policy) { p.AllowedKemIds = []kbsv1.HpkeKem{0} }, "allowed_kem_ids[0]"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := testPolicy()
			tc.mod(p)
			err := Validate(p)
			var ve *ValidationError
			if !errors.As(err, &ve) {
				t.Fatalf("err = %v, want *ValidationError", err)
			}
			if len(ve.Problems) != 1 || !strings.Contains(ve.Problems[0], tc.want) {
				t.Fatalf("problems = %q, want one containing %q", ve.Problems, tc.want)
			}
		})
	}

	// Every problem is reported at once.
	p := &kbsv1.Policy{Mrtd: []string{"x"}, MinTeeTcbSvn: "y", AllowedTcbStatus: []string{"z"}}
	var ve *ValidationError
	if !errors.As(Validate(p), &ve) || len(ve.Problems) != 4 {
		t.Fatalf("want 4 problems, got %v", Validate(p))
	}

	// Development: unpinned allowed when asked.
	p = &kbsv1.Policy{SpiffeIds: []string{"spiffe://example.org/*"}, AllowUnpinnedMeasurements: true}
	if err := Validate(p); err != nil {
		t.Errorf("unpinned with allow_unpinned_measurements: %v", err)
	}
}

func TestNormalize(t *testing.T) {
	in := testPolicy()
	in.KeyId, in.Version, in.CreatedBy = "k", 7, "spiffe://example.org/admin"
	in.MinTeeTcbSvn = "0A0B0000000000000000000000000000"
	orig := proto.Clone(in)
	out, err := Normalize(in)
	if err != nil {
		t.Fatal(err)
	}
	if !proto.Equal(in, orig) {
		t.Error("Normalize modified its input")
	}
	if out.Rtmr0[1] != meas(0x10).Hex() || out.MinTeeTcbSvn != "0a0b0000000000000000000000000000" {
		t.Errorf("not lowercased: %v %v", out.Rtmr0, out.MinTeeTcbSvn)
	}
	if out.KeyId != "" || out.Version != 0 || out.CreatedBy != "" {
		t.Error("output-only fields kept")
	}
	if _, err := Normalize(&kbsv1.Policy{}); err == nil {
		t.Error("Normalize accepted an empty policy")
	}
	b, err := Marshal(out)
	if err != nil {
		t.Fatal(err)
	}
	back, err := Unmarshal(b)
	if err != nil || !proto.Equal(back, out) {
		t.Fatalf("Unmarshal(Marshal) = %v, %v", back, err)
	}
	if _, err := Unmarshal([]byte{0xff}); err == nil {
		t.Error("Unmarshal accepted garbage")
	}
	empty, _ := Marshal(&kbsv1.Policy{})
	if _, err := Unmarshal(empty); err == nil {
		t.Error("Unmarshal accepted a stored policy that does not validate")
	}
}

func TestIDPattern(t *testing.T) {
	for _, tc := range []struct {
		pattern string
		id      string
		want    bool
	}{
		{"spiffe://example.org/ns/ml/sa/loader", "spiffe://example.org/ns/ml/sa/loader", true},
		{"spiffe://example.org/ns/ml/sa/loader", "spiffe://example.org/ns/ml/sa/loader2", false},
		{"spiffe://example.org/ns/ml/*", "spiffe://example.org/ns/ml/sa/loader", true},
		{"spiffe://example.org/ns/ml/*", "spiffe://example.org/ns/ml/x", true},
		{"spiffe://example.org/ns/ml/*", "spiffe://example.org/ns/ml", false},
		{"spiffe://example.org/ns/ml/*", "spiffe://example.org/ns/mlx/a", false},
		{"spiffe://example.org/ns/ml/*", "spiffe://other.org/ns/ml/a", false},
		{"spiffe://example.org/*", "spiffe://example.org/anything/at/all", true},
		{"spiffe://example.org/*", "spiffe://example.org.evil/a", false},
	} {
		p, err := ParseIDPattern(tc.pattern)
		if err != nil {
			t.Fatal(err)
		}
		if got := p.Match(spiffeid.RequireFromString(tc.id)); got != tc.want {
			t.Errorf("%s matches %s = %v, want %v", tc.pattern, tc.id, got, tc.want)
		}
	}
	if (IDPattern{}).Match(loader) {
		t.Error("zero pattern matches")
	}
	p, _ := ParseIDPattern("spiffe://example.org/*")
	if p.Match(spiffeid.ID{}) {
		t.Error("pattern matches the zero ID")
	}
	if _, err := ParseIDPattern(strings.Repeat("a", MaxIDPatternLen+1)); err == nil {
		t.Error("overlong pattern accepted")
	}
}

func checkByName(r Result, name string) (Check, bool) {
	for _, c := range r.Checks {
		if c.Name == name {
			return c, true
		}
	}
	return Check{}, false
}

func TestEvaluateAllow(t *testing.T) {
	r := Evaluate(testPolicy(), loader, testClaims(), x25519)
	if !r.Allowed || r.Reason() != "" || len(r.Reasons()) != 0 {
		t.Fatalf("denied: %+v", r)
	}
	var names []string
	for _, c := range r.Checks {
		names = append(names, c.Name)
	}
	want := []string{"quote", "spiffe_id", "mrtd", "rtmr0", "rtmr1", "rtmr2", "rtmr3", "mr_config_id", "mr_owner", "mr_owner_config", "mr_seam", "debug", "min_tee_tcb_svn", "tcb_status", "kem"}
	if !slices.Equal(names, want) {
		t.Errorf("checks = %v, want %v", names, want)
	}
	if c, _ := checkByName(r, "rtmr1"); c.Expected != "any" || c.Actual != meas(0x11).Hex() {
		t.Errorf("unconstrained check = %+v", c)
	}
	if len(r.Proto()) != len(r.Checks) {
		t.Error("Proto lost checks")
	}
	// Unspecified KEM: the kem check does not run.
	r = Evaluate(testPolicy(), loader, testClaims(), kbsv1.HpkeKem_HPKE_KEM_UNSPECIFIED)
	if _, ok := checkByName(r, "kem"); ok || !r.Allowed {
		t.Errorf("unspecified KEM: %+v", r)
	}
}

func TestEvaluateDeny(t *testing.T) {
	for _, tc := range []struct {
		name   string
		policy func(*kbsv1.Policy)
		claims func(*verifier.Claims)
		caller spiffeid.ID
		kem    kbsv1.HpkeKem
		want   []string
	}{
		{name: "spiffe id", caller: spiffeid.RequireFromString("spiffe://example.org/ns/other/sa/x"), want: []string{ReasonSPIFFEIDNotAllowed}},
		{name: "zero caller", caller: spiffeid.ID{}, want: []string{ReasonSPIFFEIDNotAllowed}},
		{name: "mrtd", claims: func(c *verifier.Claims) { c.MRTD = meas(9) }, want: []string{ReasonMRTDNotAllowed}},
		{name: "rtmr0", claims: func(c *verifier.Claims) { c.RTMR[0] = meas(9) }, want: []string{ReasonRTMR0NotAllowed}},
		{name: "rtmr3 pinned", policy: func(p *kbsv1.Policy) { p.Rtmr3 = []string{meas(1).Hex()} }, want: []string{ReasonRTMR3NotAllowed}},
		{name: "mr_seam pinned", policy: func(p *kbsv1.Policy) { p.MrSeam = []string{meas(1).Hex()} }, want: []string{ReasonMRSeamNotAllowed}},
		{name: "several", policy: func(p *kbsv1.Policy) { p.MrOwner = []string{meas(1).Hex()} }, claims: func(c *verifier.Claims) { c.MRTD = meas(9); c.Debug = true },
			want: []string{ReasonMRTDNotAllowed, ReasonMROwnerNotAllowed, ReasonDebugTD}},
		{name: "debug", claims: func(c *verifier.Claims) { c.Debug = true }, want: []string{ReasonDebugTD}},
		{name: "svn minor below", policy: func(p *kbsv1.Policy) { p.MinTeeTcbSvn = "0302" + strings.Repeat("00", 14) }, want: []string{ReasonTEETCBSVNTooLow}},
		// Component-wise: a higher component 0 does not make up for a lower component 1.
		{name: "svn component-wise", policy: func(p *kbsv1.Policy) { p.MinTeeTcbSvn = "0202" + strings.Repeat("00", 14) }, want: []string{ReasonTEETCBSVNTooLow}},
		{name: "out of date", claims: func(c *verifier.Claims) { c.TCBStatus = verifier.TCBStatusOutOfDate }, want: []string{"tcb_out_of_date"}},
		{name: "sw hardening", claims: func(c *verifier.Claims) { c.TCBStatus = verifier.TCBStatusSWHardeningNeeded }, want: []string{"tcb_sw_hardening_needed"}},
		{name: "revoked even if listed", policy: func(p *kbsv1.Policy) { p.AllowedTcbStatus = []string{"UpToDate"} }, claims: func(c *verifier.Claims) { c.TCBStatus = verifier.TCBStatusRevoked }, want: []string{"tcb_revoked"}},
		{name: "not evaluated", claims: func(c *verifier.Claims) { c.TCBStatus = verifier.TCBStatusNotEvaluated }, want: []string{ReasonTCBStatusNotAllowed}},
		{name: "uptodate not listed", policy: func(p *kbsv1.Policy) { p.AllowedTcbStatus = []string{"OutOfDate"} }, want: []string{ReasonTCBStatusNotAllowed}},
		{name: "kem", policy: func(p *kbsv1.Policy) { p.AllowedKemIds = []kbsv1.HpkeKem{mlkem} }, want: []string{ReasonKEMNotAllowed}},
		{name: "unsupported kem", kem: kbsv1.HpkeKem(0x10), want: []string{ReasonKEMNotAllowed}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, c := testPolicy(), testClaims()
			if tc.policy != nil {
				tc.policy(p)
			}
			if tc.claims != nil {
				tc.claims(c)
			}
			caller := loader
			if tc.name == "spiffe id" || tc.name == "zero caller" {
				caller = tc.caller
			}
			kem := tc.kem
			if kem == 0 {
				kem = x25519
			}
			r := Evaluate(p, caller, c, kem)
			if r.Allowed {
				t.Fatal("allowed")
			}
			if !slices.Equal(r.Reasons(), tc.want) {
				t.Fatalf("reasons = %v, want %v", r.Reasons(), tc.want)
			}
			if r.Reason() != tc.want[0] {
				t.Errorf("Reason() = %q, want %q", r.Reason(), tc.want[0])
			}
		})
	}
}

func TestEvaluateAllowedByPolicy(t *testing.T) {
	p := testPolicy()
	p.AllowDebug = true
	p.AllowedTcbStatus = []string{"UpToDate", "OutOfDate"}
	p.MinTeeTcbSvn = "0301" + strings.Repeat("00", 14)
	p.AllowedKemIds = []kbsv1.HpkeKem{mlkem}
	c := testClaims()
	c.Debug = true
	c.TCBStatus = verifier.TCBStatusOutOfDate
	if r := Evaluate(p, loader, c, mlkem); !r.Allowed {
		t.Fatalf("denied: %v", r.Reasons())
	}
}

func TestEvaluateFailClosed(t *testing.T) {
	if r := Evaluate(nil, loader, testClaims(), x25519); r.Allowed || r.Reason() != ReasonNoPolicy {
		t.Errorf("nil policy: %+v", r)
	}
	if r := Evaluate(&kbsv1.Policy{}, loader, testClaims(), x25519); r.Allowed || r.Reason() != ReasonPolicyInvalid {
		t.Errorf("zero policy: %+v", r)
	}
	r := Evaluate(testPolicy(), loader, nil, x25519)
	if r.Allowed || r.Reason() != ReasonQuoteMissing {
		t.Errorf("nil claims: %+v", r)
	}
	if _, ok := checkByName(r, "mrtd"); ok {
		t.Error("TD checks ran without claims")
	}
	r = EvaluateFailedQuote(testPolicy(), spiffeid.RequireFromString("spiffe://example.org/x"), "pck_revoked", x25519)
	if r.Allowed || !slices.Equal(r.Reasons(), []string{"pck_revoked", ReasonSPIFFEIDNotAllowed}) {
		t.Errorf("failed quote: %v", r.Reasons())
	}
	if (Result{}).Reason() != ReasonPolicyInvalid {
		t.Error("an empty denial has no reason")
	}
}

func TestReasonsUnique(t *testing.T) {
	seen := map[string]bool{}
	for _, r := range AllReasons() {
		if seen[r] {
			t.Errorf("duplicate reason %q", r)
		}
		seen[r] = true
		if len(r) > 64 || r == "" || strings.Trim(r, "abcdefghijklmnopqrstuvwxyz0123456789_") != "" || r[0] < 'a' || r[0] > 'z' {
			t.Errorf("reason %q is not ^[a-z][a-z0-9_]*$ of at most 64 bytes", r)
		}
	}
	for _, r := range []string{"pck_revoked", "tcb_out_of_date", "nonce_reused", "kem_not_allowed"} {
		if !seen[r] {
			t.Errorf("AllReasons lacks %q", r)
		}
	}
}

func TestMeasurementsAndClaims(t *testing.T) {
	c := testClaims()
	c.TDAttributes = 1 | 1<<28
	c.Debug = true
	m := Measurements(c)
	if m["mrtd"] != meas(1).Hex() || m["rtmr3"] != meas(0x13).Hex() || m["td_attributes"] != "0100001000000000" || m["fmspc"] != "00906ed50000" {
		t.Errorf("measurements = %v", m)
	}
	if _, ok := m["report_data"]; ok {
		t.Error("measurements include REPORTDATA")
	}
	if len(m) > 32 {
		t.Errorf("%d measurements, audit records hold at most 32", len(m))
	}
	pc := ClaimsProto(c)
	if pc.Mrtd != meas(1).Hex() || !pc.Debug || pc.TcbStatus != "UpToDate" || len(pc.ReportData) != 128 {
		t.Errorf("claims proto = %v", pc)
	}
	if ClaimsProto(nil) != nil || Measurements(nil) != nil {
		t.Error("nil claims")
	}
}

// FuzzUnmarshal: arbitrary stored bytes never panic; what Unmarshal accepts
// validates, normalizes idempotently, and evaluates without panicking.
func FuzzUnmarshal(f *testing.F) {
	b, _ := Marshal(testPolicy())
	f.Add(b)
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		p, err := Unmarshal(b)
		if err != nil {
			return
		}
		if err := Validate(p); err != nil {
			t.Fatalf("Unmarshal returned an invalid policy: %v", err)
		}
		n, err := Normalize(p)
		if err != nil {
			t.Fatalf("Normalize failed on a valid policy: %v", err)
		}
		n2, err := Normalize(n)
		if err != nil || !proto.Equal(n, n2) {
			t.Fatal("Normalize is not idempotent")
		}
		_ = Evaluate(p, loader, testClaims(), x25519)
	})
}

// FuzzParseIDPattern: a parsed pattern re-parses to itself, and a prefix
// pattern never matches an ID of another trust domain.
func FuzzParseIDPattern(f *testing.F) {
	for _, s := range []string{"spiffe://example.org/ns/ml/*", "spiffe://example.org/a", "spiffe://example.org/*", "spiffe://x/*/y", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		p, err := ParseIDPattern(s)
		if err != nil {
			return
		}
		q, err := ParseIDPattern(p.String())
		if err != nil || q != p {
			t.Fatalf("%q: re-parse of %q = %v, %v", s, p.String(), q, err)
		}
		if p.Match(spiffeid.RequireFromString("spiffe://other-domain.test/ns/ml/sa/loader")) && !strings.HasPrefix(s, "spiffe://other-domain.test/") {
			t.Fatalf("%q matches another trust domain", s)
		}
	})
}
