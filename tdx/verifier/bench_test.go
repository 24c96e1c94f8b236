package verifier

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"testing"
	"time"

	"github.com/cml-project/cml/tdx/collateral"
	"github.com/cml-project/cml/tdx/tdxsim"
)

// ECDSA P-256 verifications per Verify call, counted from go-tdx-guest
// v0.3.1's verify.go (the same for a simulator quote, whose certificate
// names differ from Intel's, as for an Intel one):
//
//	signature + chain (7):
//	  PCK chain checked by hand: root self-signature, intermediate, leaf  3
//	  crypto/x509 Verify of the same chain: leaf, intermediate            2
//	  quote signature (attestation key), QE report signature (PCK key)    2
//	collateral (15): the above, plus for each of TCB info and QE identity:
//	  root self-signature, signing certificate by hand, crypto/x509
//	  Verify of the signing certificate, body signature                   2×4
//	collateral + CRLs (19): the above, plus the root CRL and the PCK CRL
//	  against the PCK chain, and the root CRL again for each of TCB info
//	  and QE identity                                                     4
//
// The collateral getter checks each document's signature once, when it
// loads or fetches it, not per quote.
//
//	cached (1): a quote whose PCK chain and collateral bytes match a
//	  cached verified set gets its quote signature checked; the QE report
//	  signature too (by the cached, verified PCK leaf), unless the same
//	  QE report and signature verified last time, as they do in every
//	  quote of a platform (2 then); its chain's 5 verifications passed
//	  for the same bytes, and it is matched against the cached parsed
//	  collateral without any signature check
const (
	ecdsaSigChain      = 7
	ecdsaCollateral    = 15
	ecdsaCollateralCRL = 19
	ecdsaCached        = 1
)

// benchVerify measures one quote verified repeatedly; the uncached
// benchmarks disable the collateral cache.
func benchVerify(b *testing.B, checks Checks, cached bool, ecdsaPerOp int) {
	s := newSim(b, tdxsim.Options{})
	dir := b.TempDir()
	if err := s.WriteCollateral(dir); err != nil {
		b.Fatal(err)
	}
	at := simEpoch.Add(time.Hour)
	// Collateral comes from the getter's in-memory cache (loaded from the
	// directory on first use).
	g, err := collateral.New(collateral.Config{Dir: dir, Offline: true, Now: fixedClock(at)})
	if err != nil {
		b.Fatal(err)
	}
	v, err := New(Config{Collateral: g, ExtraRoots: []*x509.Certificate{simRoot(b, s)}, Now: fixedClock(at), Checks: checks, DisableCache: !cached})
	if err != nil {
		b.Fatal(err)
	}
	q := quote(b, s, [64]byte{1}, s.DefaultTD())
	ctx := context.Background()
	if _, err := v.Verify(ctx, q); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	cpu0 := processCPUTime()
	for b.Loop() {
		if _, err := v.Verify(ctx, q); err != nil {
			b.Fatal(err)
		}
	}
	// CPU time of the process per op (includes the GC): on a loaded
	// machine, ns/op also counts time spent waiting for a core.
	if cpu := processCPUTime() - cpu0; cpu > 0 {
		b.ReportMetric(float64(cpu.Nanoseconds())/float64(b.N), "cpu-ns/op")
	}
	b.ReportMetric(float64(ecdsaPerOp), "ecdsa/op")
	if cached && (v.coll == nil || v.coll.misses.Load() != 1) {
		b.Fatal("cached benchmark: every call after the first must hit the cache")
	}
}

// BenchmarkVerifySigChain: quote and QE report signatures and the PCK chain.
func BenchmarkVerifySigChain(b *testing.B) { benchVerify(b, CheckSignatureChain, false, ecdsaSigChain) }

// BenchmarkVerifyCollateral: plus TCB info and QE identity (cached).
func BenchmarkVerifyCollateral(b *testing.B) { benchVerify(b, CheckNoCRL, false, ecdsaCollateral) }

// BenchmarkVerifyCollateralCRL: plus the PCK and root CRLs (cached), with
// the verified-collateral cache disabled: what the key broker runs for the
// first quote of a platform and after each collateral update.
func BenchmarkVerifyCollateralCRL(b *testing.B) {
	benchVerify(b, CheckFull, false, ecdsaCollateralCRL)
}

// BenchmarkVerifyCollateralCRLCached: full checks in the steady state (the
// cache holds the platform's verified PCK chain and collateral): what the
// key broker runs for every other quote.
func BenchmarkVerifyCollateralCRLCached(b *testing.B) {
	benchVerify(b, CheckFull, true, ecdsaCached)
}

// BenchmarkECDSAP256Verify is the unit the others are made of: one ECDSA
// P-256 signature verification (crypto/ecdsa.VerifyASN1).
func BenchmarkECDSAP256Verify(b *testing.B) {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		b.Fatal(err)
	}
	d := sha256.Sum256([]byte("benchmark"))
	sig, err := ecdsa.SignASN1(rand.Reader, k, d[:])
	if err != nil {
		b.Fatal(err)
	}
	cpu0 := processCPUTime()
	for b.Loop() {
		if !ecdsa.VerifyASN1(&k.PublicKey, d[:], sig) {
			b.Fatal("signature does not verify")
		}
	}
	if cpu := processCPUTime() - cpu0; cpu > 0 {
		b.ReportMetric(float64(cpu.Nanoseconds())/float64(b.N), "cpu-ns/op")
	}
}
