package collateral_test

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/pem"
	"maps"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/cml-project/cml/tdx/collateral"
	"github.com/cml-project/cml/tdx/tdxsim"
	"github.com/cml-project/cml/tdx/verifier"
)

// TestVerifierLeavesServedCollateral enforces the contract of Getter.Get
// that lets it return its cached header and body without copying: its
// callers — the verifier and, through it, go-tdx-guest's verify package —
// never modify them. Quotes are verified concurrently through the full
// go-tdx-guest path (cache disabled), the cached path and without CRLs;
// under -race a write into a shared body or header races with the other
// goroutines' reads, and afterwards every document the getter serves (the
// very memory the verifier was given) must equal a copy taken before.
func TestVerifierLeavesServedCollateral(t *testing.T) {
	ctx := context.Background()
	s := newSim(t, epoch, tdxsim.Options{})
	dir := t.TempDir()
	if err := s.WriteCollateral(dir); err != nil {
		t.Fatal(err)
	}
	at := epoch.Add(time.Hour)
	g, err := collateral.New(collateral.Config{Dir: dir, Offline: true, Now: clock(at)})
	if err != nil {
		t.Fatal(err)
	}
	type served struct {
		header map[string][]string
		body   []byte
	}
	before := map[string]served{}
	for _, u := range quoteURLs {
		h, b, err := g.Get(ctx, u.url)
		if err != nil {
			t.Fatalf("%s: %v", u.name, err)
		}
		hc := make(map[string][]string, len(h))
		for k, vs := range h {
			hc[k] = slices.Clone(vs)
		}
		before[u.url] = served{hc, bytes.Clone(b)}
	}

	blk, _ := pem.Decode(s.RootPEM())
	root, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	var vs []*verifier.Verifier
	for _, cfg := range []verifier.Config{
		{Checks: verifier.CheckFull, DisableCache: true},
		{Checks: verifier.CheckFull},
		{Checks: verifier.CheckNoCRL, DisableCache: true},
	} {
		cfg.Collateral, cfg.ExtraRoots, cfg.Now = g, []*x509.Certificate{root}, clock(at)
		v, err := verifier.New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		vs = append(vs, v)
	}
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Go(func() {
			for i := range 3 {
				q, err := s.Quote([64]byte{byte(w), byte(i)}, s.DefaultTD())
				if err != nil {
					t.Error(err)
					return
				}
				for _, v := range vs {
					if _, err := v.Verify(ctx, q); err != nil {
						t.Errorf("verify: %v", err)
					}
				}
			}
		})
	}
	wg.Wait()

	for _, u := range quoteURLs {
		h, b, err := g.Get(ctx, u.url)
		if err != nil {
			t.Fatalf("%s: %v", u.name, err)
		}
		if !bytes.Equal(b, before[u.url].body) {
			t.Errorf("%s: served body was modified by a caller", u.name)
		}
		if !maps.EqualFunc(h, before[u.url].header, slices.Equal[[]string]) {
			t.Errorf("%s: served header was modified by a caller", u.name)
		}
	}
}
