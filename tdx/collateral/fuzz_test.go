package collateral_test

import (
	"errors"
	"testing"

	"github.com/cml-project/cml/tdx/collateral"
	"github.com/cml-project/cml/tdx/tdxsim"
)

var fuzzKeys = []collateral.Key{
	{Kind: collateral.KindTCBInfo, Param: simFMSPC},
	{Kind: collateral.KindTCBInfo, Param: "50806f000000"},
	{Kind: collateral.KindQEIdentity},
	{Kind: collateral.KindPCKCRL, Param: "platform"},
	{Kind: collateral.KindRootCRL},
}

// FuzzParseEntry: Entry.Parse never panics, and every failure wraps
// ErrInvalid. Seeds (testdata/fuzz/FuzzParseEntry): Intel's real
// collateral and the simulator's.
func FuzzParseEntry(f *testing.F) {
	for i, e := range newSim(f, epoch, tdxsim.Options{}).Collateral() {
		f.Add(uint8(i), e.Body, e.IssuerChain)
	}
	f.Fuzz(func(t *testing.T, k uint8, body, chain []byte) {
		e := collateral.Entry{Key: fuzzKeys[int(k)%len(fuzzKeys)], Body: body, IssuerChain: chain}
		if _, err := e.Parse(); err != nil && !errors.Is(err, collateral.ErrInvalid) {
			t.Fatalf("error %v does not wrap ErrInvalid", err)
		}
	})
}

// FuzzKeyForURL: never panics; an accepted URL names a valid key that maps
// back to itself through its canonical PCS URL.
func FuzzKeyForURL(f *testing.F) {
	for _, u := range []string{
		"https://api.trustedservices.intel.com/tdx/certification/v4/tcb?fmspc=50806f000000",
		"https://api.trustedservices.intel.com/tdx/certification/v4/qe/identity",
		"https://api.trustedservices.intel.com/sgx/certification/v4/pckcrl?ca=platform&encoding=der",
		"https://certificates.trustedservices.intel.com/IntelSGXRootCA.der",
	} {
		f.Add(u)
	}
	f.Fuzz(func(t *testing.T, u string) {
		k, err := collateral.KeyForURL(u)
		if err != nil {
			if !errors.Is(err, collateral.ErrInvalid) {
				t.Fatalf("error %v does not wrap ErrInvalid", err)
			}
			return
		}
		if k.Kind == "" {
			t.Fatal("accepted URL with empty kind")
		}
	})
}
