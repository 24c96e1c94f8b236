package collateral_test

import (
	"context"
	"testing"
	"time"

	"github.com/google/go-tdx-guest/pcs"

	"github.com/cml-project/cml/tdx/collateral"
	"github.com/cml-project/cml/tdx/tdxsim"
)

// quoteURLs are the URLs go-tdx-guest v0.3.1 asks for when it verifies a
// simulator quote with CRL checks, in its order: what the verifier's
// cached path fetches again (and compares) for every quote.
var quoteURLs = []struct{ name, url string }{
	{"pckcrl", pcs.PckCrlURL("platform")},
	{"tcbinfo", pcs.TcbInfoURL(simFMSPC)},
	{"qeidentity", pcs.QeIdentityURL()},
	{"rootcrl", "https://tdxsim.invalid/IntelSGXRootCA.der"},
}

// BenchmarkGet measures the steady state of Getter.Get: every document is
// in memory and unexpired, as for all but the first quote of a platform.
// "quote" is one quote's worth of Get calls (all four documents).
func BenchmarkGet(b *testing.B) {
	s := newSim(b, epoch, tdxsim.Options{})
	dir := b.TempDir()
	if err := s.WriteCollateral(dir); err != nil {
		b.Fatal(err)
	}
	g, err := collateral.New(collateral.Config{Dir: dir, Offline: true, Now: clock(epoch.Add(time.Hour))})
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	for _, u := range quoteURLs {
		if _, _, err := g.Get(ctx, u.url); err != nil {
			b.Fatalf("%s: %v", u.name, err)
		}
	}
	for _, u := range quoteURLs {
		b.Run(u.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, _, err := g.Get(ctx, u.url); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
	b.Run("quote", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			for _, u := range quoteURLs {
				if _, _, err := g.Get(ctx, u.url); err != nil {
					b.Fatal(err)
				}
			}
		}
	})
	b.Run("quote-parallel", func(b *testing.B) {
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				for _, u := range quoteURLs {
					if _, _, err := g.Get(ctx, u.url); err != nil {
						b.Error(err)
						return
					}
				}
			}
		})
	})
}
