package verifier

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"testing"
	"time"

	"github.com/cml-project/cml/tdx/collateral"
	"github.com/cml-project/cml/tdx/tdxsim"
)

// simEpoch is the pinned issue time of simulator platforms in tests.
var simEpoch = time.Date(2025, time.March, 1, 12, 0, 0, 0, time.UTC)

// memSource serves collateral entries from memory, without the getter's
// own expiry checks, so go-tdx-guest's checks are what the tests exercise.
type memSource map[collateral.Key]*collateral.Entry

func newMemSource(entries []*collateral.Entry) memSource {
	m := memSource{}
	for _, e := range entries {
		m[e.Key] = e
	}
	return m
}

func (m memSource) Get(_ context.Context, url string) (map[string][]string, []byte, error) {
	k, err := collateral.KeyForURL(url)
	if err != nil {
		return nil, nil, err
	}
	e, ok := m[k]
	if !ok {
		return nil, nil, fmt.Errorf("collateral: %s: %w", k, collateral.ErrMissing)
	}
	return e.Header(), bytes.Clone(e.Body), nil
}

func newSim(t testing.TB, opts tdxsim.Options) *tdxsim.Simulator {
	t.Helper()
	if opts.Now.IsZero() {
		opts.Now = simEpoch
	}
	if opts.Seed == nil {
		opts.Seed = []byte("verifier-test-seed-0123456789abcdef")
	}
	s, err := tdxsim.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func simRoot(t testing.TB, s *tdxsim.Simulator) *x509.Certificate {
	t.Helper()
	blk, _ := pem.Decode(s.RootPEM())
	c, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func fixedClock(t time.Time) func() time.Time { return func() time.Time { return t } }

// simVerifier trusts the simulator's root and serves its collateral from
// memory, at verification time at.
func simVerifier(t testing.TB, s *tdxsim.Simulator, src CollateralSource, at time.Time, checks Checks) *Verifier {
	t.Helper()
	if src == nil {
		src = newMemSource(s.Collateral())
	}
	v, err := New(Config{Collateral: src, ExtraRoots: []*x509.Certificate{simRoot(t, s)}, Now: fixedClock(at), Checks: checks})
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func quote(t testing.TB, s *tdxsim.Simulator, rd [64]byte, td tdxsim.TDParams) []byte {
	t.Helper()
	q, err := s.Quote(rd, td)
	if err != nil {
		t.Fatal(err)
	}
	return q
}

// Offsets into a simulator quote (auth data is 32 bytes, as Intel's).
const (
	offHeaderUserData = 0x1C
	offMRTD           = 0x30 + 0x88
	offReportData     = 0x30 + 0x208
	offQuoteSig       = 0x27C
	offAttKey         = 0x27C + 0x40
	offQEReport       = 0x27C + 0x86
	offQEReportSig    = offQEReport + 0x180
	offQEAuthData     = offQEReport + 0x1C2
	offPCKChain       = offQEAuthData + 32 + 6
)

func flip(q []byte, off int) []byte {
	c := bytes.Clone(q)
	c[off] ^= 0x01
	return c
}
