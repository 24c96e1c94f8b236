package verifier

import (
	"context"
	"crypto/sha256"
	"crypto/x509"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cml-project/cml/tdx/tdxsim"
)

// Every simulator test runs twice: with the collateral cache disabled
// (cold) and with a cache that already holds a verified set for the
// simulator's PCK chain (warm), and must give the same result. In the warm
// run, quotes that share the PCK chain and collateral bytes with the
// warming quote take the cached path (verifyCached); the others miss and
// take the full path.

type pathMode int

const (
	cold pathMode = iota
	warm
)

var modes = []pathMode{cold, warm}

func (m pathMode) String() string {
	if m == cold {
		return "cold"
	}
	return "warm"
}

// switchSource serves from another CollateralSource that tests can swap.
type switchSource struct {
	mu  sync.Mutex
	src CollateralSource
}

func (s *switchSource) set(src CollateralSource) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.src = src
}

func (s *switchSource) Get(ctx context.Context, url string) (map[string][]string, []byte, error) {
	s.mu.Lock()
	src := s.src
	s.mu.Unlock()
	return src.Get(ctx, url)
}

// testClock is a settable verification clock.
type testClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *testClock) set(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = t
}

func (c *testClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

// warmTime is when warm verifiers verify their warming quote.
var warmTime = simEpoch.Add(time.Hour)

// pathVerifier returns a verifier trusting s's root that serves src (s's
// own collateral if nil) at time at. Cold: cache disabled. Warm: cache
// enabled, and before returning it verifies a quote from s at warmTime,
// against s's own collateral or, if that does not verify (a test case
// that breaks it), against collateral for s's platform from a simulator
// with the same seed (same keys); then it switches to src and at. Warm
// verifiers with collateral checks always hold an entry for s's chain.
func pathVerifier(t testing.TB, mode pathMode, s *tdxsim.Simulator, src CollateralSource, at time.Time, checks Checks) *Verifier {
	t.Helper()
	if src == nil {
		src = newMemSource(s.Collateral())
	}
	cfg := Config{ExtraRoots: []*x509.Certificate{simRoot(t, s)}, Checks: checks}
	if mode == cold {
		cfg.Collateral, cfg.Now, cfg.DisableCache = src, fixedClock(at), true
		v, err := New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	sw := &switchSource{src: newMemSource(s.Collateral())}
	clk := &testClock{t: warmTime}
	cfg.Collateral, cfg.Now = sw, clk.Now
	v, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	warmWith(t, v, s)
	if checks != CheckSignatureChain && !hasEntry(v, s) {
		p := s.Platform()
		sw.set(newMemSource(newSim(t, tdxsim.Options{Platform: &p}).Collateral()))
		warmWith(t, v, s)
		if !hasEntry(v, s) {
			t.Fatal("warming left no cache entry for the simulator's PCK chain")
		}
	}
	sw.set(src)
	clk.set(at)
	return v
}

func warmWith(t testing.TB, v *Verifier, s *tdxsim.Simulator) {
	t.Helper()
	_, err := v.Verify(context.Background(), quote(t, s, [64]byte{0xee}, s.DefaultTD()))
	if err != nil && !strings.HasPrefix(string(ReasonOf(err)), "tcb_") {
		t.Logf("warming quote: %v", err)
	}
}

// hasEntry reports whether v's cache holds a verified set for s's chain.
func hasEntry(v *Verifier, s *tdxsim.Simulator) bool {
	if v.coll == nil {
		return false
	}
	b, err := s.Quote([64]byte{}, s.DefaultTD())
	if err != nil {
		panic(err)
	}
	q, err := parseQuote(b)
	if err != nil {
		panic(err)
	}
	chain := q.GetSignedData().GetCertificationData().GetQeReportCertificationData().GetPckCertificateChainData().GetPckCertChain()
	return v.coll.lookup(sha256.Sum256(chain)) != nil
}
