package verifier

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-tdx-guest/abi"

	"github.com/cml-project/cml/tdx/tdxsim"
)

// FuzzVerify feeds arbitrary bytes to Verify, against a simulator-trusting
// verifier with full checks and a signature-only verifier pinned at the
// real quote's time. Seeds (testdata/fuzz/FuzzVerify): the real Intel quote,
// simulator quotes (from the same deterministic seed as newSim), and
// truncated or inconsistent variants. Properties: no panic; a failure is a
// *Error with a listed reason, with claims only for TCB status reasons; a
// success returns claims that match the quote bytes.
func FuzzVerify(f *testing.F) {
	s := newSim(f, tdxsim.Options{})
	full := simVerifier(f, s, nil, simEpoch.Add(time.Hour), CheckFull)
	sigOnly, err := New(Config{Now: fixedClock(realQuoteTime), Checks: CheckSignatureChain})
	if err != nil {
		f.Fatal(err)
	}
	f.Add(quote(f, s, [64]byte{9}, s.DefaultTD()))
	known := map[Reason]bool{}
	for _, r := range Reasons() {
		known[r] = true
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		for _, v := range []*Verifier{full, sigOnly} {
			c, err := v.Verify(context.Background(), b)
			if err != nil {
				var e *Error
				if !errors.As(err, &e) || !known[e.Reason] {
					t.Fatalf("error %v is not a *Error with a known reason", err)
				}
				if e.Claims != nil && !strings.HasPrefix(string(e.Reason), "tcb_") {
					t.Fatalf("reason %s carries claims", e.Reason)
				}
				continue
			}
			if c == nil {
				t.Fatal("nil claims without error")
			}
			if !bytes.Equal(c.ReportData[:], b[offReportData:offReportData+64]) || !bytes.Equal(c.MRTD[:], b[offMRTD:offMRTD+48]) {
				t.Fatal("claims differ from the quote bytes")
			}
		}
	})
}

// FuzzCheckLayout: the layout check never panics, and whatever it accepts
// go-tdx-guest's parser handles without panicking (which is why it exists).
func FuzzCheckLayout(f *testing.F) {
	s := newSim(f, tdxsim.Options{})
	f.Add(quote(f, s, [64]byte{}, s.DefaultTD()))
	f.Fuzz(func(t *testing.T, b []byte) {
		if checkLayout(b) != nil {
			return
		}
		if _, err := parseQuote(b); err != nil && strings.Contains(err.Error(), "panicked") {
			t.Fatalf("layout accepted a quote the parser panics on: %v", err)
		}
	})
}

// readSeed reads a committed fuzz seed (the "go test fuzz v1" format).
func readSeed(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", "fuzz", "FuzzVerify", name))
	if err != nil {
		t.Fatal(err)
	}
	lit := strings.TrimSuffix(strings.TrimPrefix(string(b), "go test fuzz v1\n[]byte("), ")\n")
	s, err := strconv.Unquote(lit)
	if err != nil {
		t.Fatalf("seed %s: %v", name, err)
	}
	return []byte(s)
}

// TestFuzzSeeds keeps the committed seeds meaningful: the simulator seed
// still verifies (regenerate it if the simulator's certificates change),
// and the seed that makes go-tdx-guest's parser panic is stopped first.
func TestFuzzSeeds(t *testing.T) {
	s := newSim(t, tdxsim.Options{})
	v := simVerifier(t, s, nil, simEpoch.Add(time.Hour), CheckFull)
	if _, err := v.Verify(context.Background(), readSeed(t, "sim-quote")); err != nil {
		t.Errorf("seed sim-quote: %v", err)
	}
	bad := readSeed(t, "sim-signed-size-zero")
	panicked := func() (p bool) {
		defer func() { p = recover() != nil }()
		abi.QuoteToProto(bad)
		return false
	}()
	t.Logf("go-tdx-guest abi.QuoteToProto panics on a zero signed data size: %v", panicked)
	_, err := v.Verify(context.Background(), bad)
	wantReason(t, err, ReasonQuoteMalformed)
}
