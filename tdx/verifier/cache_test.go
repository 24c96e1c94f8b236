package verifier

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"errors"
	"fmt"
	"reflect"
	"sync"
	"testing"
	"time"

	"github.com/google/go-tdx-guest/abi"
	pb "github.com/google/go-tdx-guest/proto/tdx"

	"github.com/cml-project/cml/tdx/collateral"
	"github.com/cml-project/cml/tdx/tdxsim"
)

// tdLevel is a TD TCB level for the platform p with TEE TCB SVN tee.
func tdLevel(p tdxsim.Platform, tee [16]byte, status string) map[string]any {
	sgx := make([]any, len(p.CPUSVN))
	for i, s := range p.CPUSVN {
		sgx[i] = map[string]any{"svn": s}
	}
	return level(map[string]any{"sgxtcbcomponents": sgx, "pcesvn": p.PCESVN, "tdxtcbcomponents": tdxComponents(tee)}, status)
}

// collateralVariants are TCB info and QE identity documents, validly
// signed, that the default simulator quote passes or fails only by TCB
// status, with richer level lists than the simulator issues.
func collateralVariants(t testing.TB, f *forger) map[string]memSource {
	p := f.s.Platform()
	tee := p.TEETCBSVN // 5 1 2 0...
	bump := func(i int, d int) [16]byte { x := tee; x[i] = byte(int(x[i]) + d); return x }
	qeLevels := func(m map[string]any) {
		m["tcbLevels"] = []any{
			level(map[string]any{"isvsvn": 6}, "UpToDate"),
			level(map[string]any{"isvsvn": 4}, "SWHardeningNeeded"),
			level(map[string]any{"isvsvn": 3}, "OutOfDate"),
			level(map[string]any{"isvsvn": 1}, "Revoked"),
		}
	}
	return map[string]memSource{
		"default":   f.collateralWith(),
		"qe levels": f.collateralWith(f.doc(t, collateral.KindQEIdentity, qeLevels)),
		"qe masks": f.collateralWith(f.doc(t, collateral.KindQEIdentity, func(m map[string]any) {
			m["miscselect"], m["miscselectMask"] = "00000000", "0F000000" // MISCSELECT & 0xf must be 0
			m["attributes"], m["attributesMask"] = "10000000000000000000000000000000", "F0FFFFFFFFFFFFFF0000000000000001"
		})),
		"td levels": f.collateralWith(f.doc(t, collateral.KindTCBInfo, func(m map[string]any) {
			m["tcbLevels"] = []any{
				tdLevel(p, bump(2, 2), "UpToDate"),
				tdLevel(p, bump(3, 1), "ConfigurationNeeded"),
				tdLevel(p, tee, "SWHardeningNeeded"),
				tdLevel(p, bump(2, -1), "OutOfDateConfigurationNeeded"),
				tdLevel(p, [16]byte{}, "Revoked"),
			}
		})),
		"module levels and seam mask": f.collateralWith(f.doc(t, collateral.KindTCBInfo, func(m map[string]any) {
			m["tdxModule"] = map[string]any{"mrsigner": fmt.Sprintf("%096x", 0), "attributes": "0000000000000000", "attributesMask": "00000000000000FF"}
			m["tdxModuleIdentities"] = []any{
				map[string]any{"id": "TDX_01", "mrsigner": fmt.Sprintf("%096x", 0), "attributes": "0000000000000000", "attributesMask": "FFFFFFFFFFFFFFFF",
					"tcbLevels": []any{
						level(map[string]any{"isvsvn": 7}, "UpToDate"),
						level(map[string]any{"isvsvn": 5}, "ConfigurationAndSWHardeningNeeded"),
						level(map[string]any{"isvsvn": 3}, "OutOfDate"),
					}},
				map[string]any{"id": "TDX_01", "mrsigner": fmt.Sprintf("%096x", 0), "attributes": "0000000000000000", "attributesMask": "FFFFFFFFFFFFFFFF",
					"tcbLevels": []any{level(map[string]any{"isvsvn": 0}, "UpToDate")}},
				map[string]any{"id": "TDX_03", "mrsigner": fmt.Sprintf("%096x", 0), "attributes": "0000000000000000", "attributesMask": "FFFFFFFFFFFFFFFF",
					"tcbLevels": []any{level(map[string]any{"isvsvn": 1}, "UpToDate")}},
			}
			m["tcbLevels"] = []any{
				tdLevel(p, bump(2, 1), "UpToDate"),
				tdLevel(p, tee, "UpToDate"),
				tdLevel(p, [16]byte{0, 0, 1}, "OutOfDate"),
			}
		})),
	}
}

// quoteEdits change one per-quote field that go-tdx-guest matches against
// the collateral.
var quoteEdits = map[string]func(*pb.QuoteV4){
	"none":                  nil,
	"mrsignerseam":          func(p *pb.QuoteV4) { p.TdQuoteBody.MrSignerSeam[0] = 1 },
	"seam attributes low":   func(p *pb.QuoteV4) { p.TdQuoteBody.SeamAttributes[0] = 1 },
	"seam attributes high":  func(p *pb.QuoteV4) { p.TdQuoteBody.SeamAttributes[7] = 0x80 },
	"qe isvsvn 0":           func(p *pb.QuoteV4) { qeReport(p).IsvSvn = 0 },
	"qe isvsvn 2":           func(p *pb.QuoteV4) { qeReport(p).IsvSvn = 2 },
	"qe isvsvn 3":           func(p *pb.QuoteV4) { qeReport(p).IsvSvn = 3 },
	"qe isvsvn 5":           func(p *pb.QuoteV4) { qeReport(p).IsvSvn = 5 },
	"qe isvsvn 9":           func(p *pb.QuoteV4) { qeReport(p).IsvSvn = 9 },
	"qe miscselect 1":       func(p *pb.QuoteV4) { qeReport(p).MiscSelect = 1 },
	"qe miscselect 0x100":   func(p *pb.QuoteV4) { qeReport(p).MiscSelect = 0x100 },
	"qe attributes masked":  func(p *pb.QuoteV4) { qeReport(p).Attributes[0] ^= 0x04 },
	"qe attributes":         func(p *pb.QuoteV4) { qeReport(p).Attributes[0] ^= 0x01 },
	"qe attributes last":    func(p *pb.QuoteV4) { qeReport(p).Attributes[15] ^= 0x01 },
	"qe mrsigner":           func(p *pb.QuoteV4) { qeReport(p).MrSigner[31] ^= 0x01 },
	"qe isvprodid":          func(p *pb.QuoteV4) { qeReport(p).IsvProdId = 3 },
	"tee module svn 3":      func(p *pb.QuoteV4) { p.TdQuoteBody.TeeTcbSvn[0] = 3 },
	"tee module svn 4":      func(p *pb.QuoteV4) { p.TdQuoteBody.TeeTcbSvn[0] = 4 },
	"tee module svn 8":      func(p *pb.QuoteV4) { p.TdQuoteBody.TeeTcbSvn[0] = 8 },
	"tee module major 0":    func(p *pb.QuoteV4) { p.TdQuoteBody.TeeTcbSvn[1] = 0 },
	"tee module major 3":    func(p *pb.QuoteV4) { p.TdQuoteBody.TeeTcbSvn[1] = 3 },
	"tee module major 2":    func(p *pb.QuoteV4) { p.TdQuoteBody.TeeTcbSvn[1] = 2 },
	"tee microcode down":    func(p *pb.QuoteV4) { p.TdQuoteBody.TeeTcbSvn[2] = 1 },
	"tee microcode up":      func(p *pb.QuoteV4) { p.TdQuoteBody.TeeTcbSvn[2] = 3 },
	"tee microcode up 2":    func(p *pb.QuoteV4) { p.TdQuoteBody.TeeTcbSvn[2] = 4 },
	"tee component 3":       func(p *pb.QuoteV4) { p.TdQuoteBody.TeeTcbSvn[3] = 1 },
	"tee component 15":      func(p *pb.QuoteV4) { p.TdQuoteBody.TeeTcbSvn[15] = 1 },
	"tee all zero but 1..2": func(p *pb.QuoteV4) { copy(p.TdQuoteBody.TeeTcbSvn, []byte{0, 0, 1}) },
}

func qeReport(p *pb.QuoteV4) *pb.EnclaveReport {
	return p.SignedData.CertificationData.QeReportCertificationData.QeReport
}

// sameResult fails unless two Verify results are identical: both succeed
// with equal claims, or both fail with the same reason and equal claims.
func sameResult(t testing.TB, name string, c1 *Claims, err1 error, c2 *Claims, err2 error) {
	t.Helper()
	if (err1 == nil) != (err2 == nil) {
		t.Fatalf("%s: cold %v, warm %v", name, err1, err2)
	}
	if err1 != nil {
		var e1, e2 *Error
		if !errors.As(err1, &e1) || !errors.As(err2, &e2) {
			t.Fatalf("%s: errors are not *Error: %v, %v", name, err1, err2)
		}
		if e1.Reason != e2.Reason {
			t.Fatalf("%s: cold reason %s (%v), warm reason %s (%v)", name, e1.Reason, err1, e2.Reason, err2)
		}
		c1, c2 = e1.Claims, e2.Claims
	}
	if !reflect.DeepEqual(c1, c2) {
		t.Fatalf("%s: claims differ:\ncold %+v\nwarm %+v", name, c1, c2)
	}
}

// warmVerifier returns a verifier with the cache on, serving src, that has
// verified the default quote of f (which src must accept or fail only by
// TCB status), so src's tuple is cached.
func warmVerifier(t testing.TB, f *forger, src CollateralSource, at time.Time) *Verifier {
	t.Helper()
	v := simVerifier(t, f.s, src, at, CheckFull)
	v.Verify(context.Background(), quote(t, f.s, [64]byte{0xee}, f.s.DefaultTD()))
	if !hasEntry(v, f.s) {
		t.Fatal("warming quote left no cache entry")
	}
	return v
}

func coldVerifier(t testing.TB, f *forger, src CollateralSource, at time.Time) *Verifier {
	t.Helper()
	v, err := New(Config{Collateral: src, ExtraRoots: []*x509.Certificate{simRoot(t, f.s)}, Now: fixedClock(at), DisableCache: true})
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// TestCachedPathMatchesFull is the differential test of the cached path:
// for every collateral variant and every per-quote field change (validly
// re-signed), the warm verifier, whose cache holds the collateral's tuple,
// must return exactly what go-tdx-guest's full verification path returns
// (same reason, same claims), through the cached path.
func TestCachedPathMatchesFull(t *testing.T) {
	f := newForger(t, tdxsim.Options{})
	at := simEpoch.Add(time.Hour)
	reasons := map[Reason]int{}
	for cname, src := range collateralVariants(t, f) {
		coldV, warmV := coldVerifier(t, f, src, at), warmVerifier(t, f, src, at)
		for qname, edit := range quoteEdits {
			name := cname + " / " + qname
			q := f.quote(t, [64]byte{1}, edit)
			hits := warmV.coll.hits.Load()
			c1, err1 := coldV.Verify(context.Background(), q)
			c2, err2 := warmV.Verify(context.Background(), q)
			if warmV.coll.hits.Load() != hits+1 {
				t.Fatalf("%s: warm verifier did not take the cached path", name)
			}
			sameResult(t, name, c1, err1, c2, err2)
			if err1 == nil {
				reasons["ok"]++
			} else {
				reasons[ReasonOf(err1)]++
			}
		}
	}
	t.Logf("outcomes: %v", reasons)
	// The cases must cover every per-quote outcome.
	for _, r := range []Reason{"ok", ReasonTCBInfoMismatch, ReasonQEIdentityMismatch, ReasonTCBUnsupported, ReasonTCBOutOfDate,
		ReasonTCBRevoked, ReasonTCBSWHardeningNeeded, ReasonTCBConfigurationNeeded, ReasonTCBConfigurationAndSWHardeningNeeded} {
		if reasons[r] == 0 {
			t.Errorf("no case ended with %s", r)
		}
	}
}

// FuzzCachedPath is the fuzzed form of TestCachedPathMatchesFull: the
// input picks a collateral variant and sets the per-quote fields (TEE TCB
// SVN, QE report SVN, MISCSELECT, attributes, MRSIGNER and ISVPRODID,
// MRSIGNERSEAM, SEAM attributes); the quote is validly signed, and the
// cold and warm verifiers must agree.
func FuzzCachedPath(f *testing.F) {
	fg := newForger(f, tdxsim.Options{})
	at := simEpoch.Add(time.Hour)
	variants := collateralVariants(f, fg)
	type pair struct{ cold, warm *Verifier }
	var pairs []pair
	for _, name := range []string{"default", "qe levels", "qe masks", "td levels", "module levels and seam mask"} {
		pairs = append(pairs, pair{coldVerifier(f, fg, variants[name], at), warmVerifier(f, fg, variants[name], at)})
	}
	p := fg.s.Platform()
	f.Add(byte(0), p.TEETCBSVN[:], uint16(4), uint32(0), byte(0), byte(0), byte(0), uint16(2), byte(0), byte(0))
	f.Add(byte(3), []byte{5, 1, 3, 1}, uint16(5), uint32(1), byte(4), byte(0), byte(0), uint16(2), byte(0), byte(1))
	f.Add(byte(4), []byte{6, 1, 2}, uint16(2), uint32(0x10), byte(1), byte(1), byte(1), uint16(3), byte(1), byte(0x80))
	f.Fuzz(func(t *testing.T, variant byte, tee []byte, qeSVN uint16, misc uint32, attr0, attr15, mrsigner byte, prodID uint16, signerSeam, seamAttr byte) {
		v := pairs[int(variant)%len(pairs)]
		q := fg.quote(t, [64]byte{2}, func(p *pb.QuoteV4) {
			copy(p.TdQuoteBody.TeeTcbSvn, tee)
			r := qeReport(p)
			r.IsvSvn, r.MiscSelect, r.IsvProdId = uint32(qeSVN), misc, uint32(prodID)
			r.Attributes[0] ^= attr0
			r.Attributes[15] ^= attr15
			r.MrSigner[0] ^= mrsigner
			p.TdQuoteBody.MrSignerSeam[47] = signerSeam
			p.TdQuoteBody.SeamAttributes[int(seamAttr)%8] = seamAttr
		})
		hits := v.warm.coll.hits.Load()
		c1, err1 := v.cold.Verify(context.Background(), q)
		c2, err2 := v.warm.Verify(context.Background(), q)
		if v.warm.coll.hits.Load() == hits {
			t.Fatal("warm verifier did not take the cached path")
		}
		sameResult(t, "fuzz", c1, err1, c2, err2)
	})
}

// Collateral replaced by a different valid document: a miss, the full
// path, and the new tuple is cached; by a tampered one: a miss and the
// full path's rejection; the old bytes again: a miss (the entry now holds
// the newer set), then hits.
func TestCacheCollateralReplaced(t *testing.T) {
	f := newForger(t, tdxsim.Options{})
	sw := &switchSource{src: f.collateralWith()}
	v := simVerifier(t, f.s, sw, warmTime, CheckFull)
	q := quote(t, f.s, [64]byte{3}, f.s.DefaultTD())
	step := func(name string, src CollateralSource, want Reason, wantHit bool) {
		t.Helper()
		if src != nil {
			sw.set(src)
		}
		h := v.coll.hits.Load()
		_, err := v.Verify(context.Background(), q)
		if want == "" && err != nil {
			t.Fatalf("%s: %v", name, err)
		} else if want != "" {
			wantReason(t, err, want)
		}
		if hit := v.coll.hits.Load() != h; hit != wantHit {
			t.Fatalf("%s: cached path taken = %v, want %v", name, hit, wantHit)
		}
	}
	step("first", nil, "", false)
	step("same collateral", nil, "", true)
	newer := f.collateralWith(f.doc(t, collateral.KindTCBInfo, func(m map[string]any) { m["tcbEvaluationDataNumber"] = 18 }))
	step("newer valid TCB info", newer, "", false)
	step("newer valid TCB info again", nil, "", true)
	tampered := f.collateralWith()
	editBody(tampered, collateral.KindQEIdentity, `"isvprodid":2`, `"isvprodid":3`)
	step("tampered QE identity", tampered, ReasonCollateralInvalid, false)
	status := f.collateralWith(f.doc(t, collateral.KindTCBInfo, func(m map[string]any) {
		m["tcbLevels"] = []any{tdLevel(f.s.Platform(), f.s.Platform().TEETCBSVN, "OutOfDate")}
	}))
	step("TCB info now says OutOfDate", status, ReasonTCBOutOfDate, false)
	step("OutOfDate again", nil, ReasonTCBOutOfDate, true)
	step("original collateral", f.collateralWith(), "", false)
	step("original again", nil, "", true)
	if n := v.coll.len(); n != 1 {
		t.Errorf("cache holds %d entries for one PCK chain", n)
	}
}

// The clock moves past the earliest nextUpdate after caching: expiry is
// checked on every call.
func TestCacheExpiry(t *testing.T) {
	f := newForger(t, tdxsim.Options{})
	clk := &testClock{t: warmTime}
	v, err := New(Config{Collateral: f.collateralWith(), ExtraRoots: []*x509.Certificate{simRoot(t, f.s)}, Now: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	q := quote(t, f.s, [64]byte{4}, f.s.DefaultTD())
	if _, err := v.Verify(context.Background(), q); err != nil {
		t.Fatal(err)
	}
	next := simEpoch.Add(tdxsim.DefaultCollateralValidity)
	for _, tc := range []struct {
		at      time.Time
		want    Reason
		wantHit bool
	}{
		{next.Add(-time.Second), "", true},
		{next, "", true}, // go-tdx-guest: expired only after nextUpdate
		{next.Add(time.Nanosecond), ReasonCollateralExpired, false},
		{next.Add(time.Hour), ReasonCollateralExpired, false},
		{simEpoch, "", true}, // the issue date
		// Before the collateral's issue date: outside the window, so the
		// full path (which accepts: go-tdx-guest does not check issue dates).
		{simEpoch.Add(-time.Second), "", false},
		{simEpoch.Add(-2 * time.Hour), ReasonCertificateExpired, false},
		{warmTime, "", true},
	} {
		clk.set(tc.at)
		h := v.coll.hits.Load()
		_, err := v.Verify(context.Background(), q)
		if tc.want == "" && err != nil {
			t.Fatalf("at %v: %v", tc.at, err)
		} else if tc.want != "" {
			wantReason(t, err, tc.want)
		}
		if hit := v.coll.hits.Load() != h; hit != tc.wantHit {
			t.Errorf("at %v: cached path taken = %v, want %v", tc.at, hit, tc.wantHit)
		}
	}
}

// The PCK is revoked in a new PCK CRL after its tuple was cached.
func TestCachePCKRevokedLater(t *testing.T) {
	f := newForger(t, tdxsim.Options{})
	revoking := newSim(t, tdxsim.Options{RevokePCK: true}) // same seed: same PCK serial and CA key
	sw := &switchSource{src: f.collateralWith()}
	v := simVerifier(t, f.s, sw, warmTime, CheckFull)
	q := quote(t, f.s, [64]byte{5}, f.s.DefaultTD())
	if _, err := v.Verify(context.Background(), q); err != nil {
		t.Fatal(err)
	}
	m := f.collateralWith()
	for _, e := range revoking.Collateral() {
		if e.Kind == collateral.KindPCKCRL {
			m[e.Key] = e
		}
	}
	sw.set(m)
	_, err := v.Verify(context.Background(), q)
	wantReason(t, err, ReasonPCKRevoked)
	_, err = v.Verify(context.Background(), q)
	wantReason(t, err, ReasonPCKRevoked)
	if v.coll.hits.Load() != 0 {
		t.Error("a quote took the cached path with a new CRL")
	}
}

// Quotes from the same platform (same PCK chain, so cache hits) whose QE
// report or TEE TCB SVN differ get their own TCB evaluation.
func TestCacheQuoteDependent(t *testing.T) {
	f := newForger(t, tdxsim.Options{TCBStatus: tdxsim.OutOfDate})
	v := warmVerifier(t, f, f.collateralWith(), warmTime)
	// The platform's level is OutOfDate (claims carried).
	_, err := v.Verify(context.Background(), quote(t, f.s, [64]byte{}, f.s.DefaultTD()))
	wantReason(t, err, ReasonTCBOutOfDate)
	// A newer microcode SVN meets the UpToDate level.
	td := f.s.DefaultTD()
	td.TEETCBSVN = f.s.Platform().TEETCBSVN
	td.TEETCBSVN[2]++
	c, err := v.Verify(context.Background(), quote(t, f.s, [64]byte{}, td))
	if err != nil || c.TCBStatus != TCBStatusUpToDate {
		t.Fatalf("newer TEE TCB SVN: %v, status %q", err, c.TCBStatus)
	}
	// A QE SVN below the QE identity's only level.
	_, err = v.Verify(context.Background(), f.quote(t, [64]byte{}, func(p *pb.QuoteV4) { qeReport(p).IsvSvn = 3 }))
	wantReason(t, err, ReasonTCBUnsupported)
	// A different QE MRSIGNER.
	_, err = v.Verify(context.Background(), f.quote(t, [64]byte{}, func(p *pb.QuoteV4) { qeReport(p).MrSigner[0] ^= 1 }))
	wantReason(t, err, ReasonQEIdentityMismatch)
	if h := v.coll.hits.Load(); h != 4 {
		t.Errorf("%d cached-path calls, want 4", h)
	}
}

func TestCacheBounded(t *testing.T) {
	var c collateralCache
	for i := 0; i < 3*maxCollateralEntries; i++ {
		c.store(sha256.Sum256(fmt.Appendf(nil, "chain-%d", i)), &verifiedSet{})
		if c.len() > maxCollateralEntries {
			t.Fatalf("cache grew to %d entries", c.len())
		}
	}
	last := sha256.Sum256(fmt.Appendf(nil, "chain-%d", 3*maxCollateralEntries-1))
	if c.lookup(last) == nil {
		t.Error("latest entry missing")
	}
	// Replacing the entry of a known chain in a full cache keeps the rest.
	n := c.len()
	c.store(last, &verifiedSet{})
	if c.len() != n {
		t.Errorf("replacing an entry changed the size from %d to %d", n, c.len())
	}
}

func TestDisableCache(t *testing.T) {
	s := newSim(t, tdxsim.Options{})
	if v := pathVerifier(t, cold, s, nil, warmTime, CheckFull); v.coll != nil {
		t.Error("DisableCache: cache present")
	}
	if v := simVerifier(t, s, nil, warmTime, CheckSignatureChain); v.coll != nil {
		t.Error("CheckSignatureChain: cache present")
	}
	if v := simVerifier(t, s, nil, warmTime, CheckFull); v.coll == nil {
		t.Error("zero Config: no cache")
	}
}

// TestCacheConcurrent verifies good, tampered, forged and status-changing
// quotes from 8 goroutines while another swaps the collateral between two
// valid versions and a revoking CRL (run with -race).
func TestCacheConcurrent(t *testing.T) {
	f := newForger(t, tdxsim.Options{})
	revoking := newSim(t, tdxsim.Options{RevokePCK: true})
	a := f.collateralWith()
	b := f.collateralWith(f.doc(t, collateral.KindTCBInfo, func(m map[string]any) { m["tcbEvaluationDataNumber"] = 18 }))
	r := f.collateralWith()
	for _, e := range revoking.Collateral() {
		if e.Kind == collateral.KindPCKCRL {
			r[e.Key] = e
		}
	}
	sw := &switchSource{src: a}
	v := simVerifier(t, f.s, sw, warmTime, CheckFull)
	good := quote(t, f.s, [64]byte{1}, f.s.DefaultTD())
	bad := flip(good, offReportData)
	lowQE := f.quote(t, [64]byte{2}, func(p *pb.QuoteV4) { qeReport(p).IsvSvn = 3 })

	var revoked sync.RWMutex // held while the revoking CRL is served
	stop := make(chan struct{})
	var swapper sync.WaitGroup
	swapper.Add(1)
	go func() {
		defer swapper.Done()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			case <-time.After(time.Millisecond):
			}
			switch i % 5 {
			case 4:
				revoked.Lock()
				sw.set(r)
				time.Sleep(time.Millisecond)
				sw.set(a)
				revoked.Unlock()
			case 2:
				sw.set(b)
			default:
				sw.set(a)
			}
		}
	}()
	const workers, rounds = 8, 8
	var wg sync.WaitGroup
	errs := make(chan string, workers*rounds*3)
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < rounds; i++ {
				// The revoking CRL may be served at any moment, except
				// while a worker holds it out.
				revoked.RLock()
				c, err := v.Verify(context.Background(), good)
				revoked.RUnlock()
				if err != nil || c.ReportData[0] != 1 || c.TCBStatus != TCBStatusUpToDate {
					errs <- fmt.Sprintf("good quote: %v", err)
				}
				if _, err := v.Verify(context.Background(), bad); ReasonOf(err) != ReasonQuoteSignatureInvalid && ReasonOf(err) != ReasonPCKRevoked {
					errs <- "tampered quote: reason " + string(ReasonOf(err))
				}
				if _, err := v.Verify(context.Background(), lowQE); ReasonOf(err) != ReasonTCBUnsupported && ReasonOf(err) != ReasonPCKRevoked {
					errs <- "low QE SVN quote: reason " + string(ReasonOf(err))
				}
			}
		}()
	}
	wg.Wait()
	close(stop)
	swapper.Wait()
	close(errs)
	for e := range errs {
		t.Error(e)
	}
	if v.coll.hits.Load() == 0 || v.coll.misses.Load() == 0 {
		t.Errorf("hits %d, misses %d: both paths should have run", v.coll.hits.Load(), v.coll.misses.Load())
	}
}

// signatureEdits break the per-quote signatures and bindings that the
// cached path checks itself (checkQuoteSignatures) instead of running
// go-tdx-guest: each is applied to a validly signed quote's bytes.
func signatureEdits(t testing.TB, f *forger) map[string][]byte {
	good := f.quote(t, [64]byte{7}, nil)
	other, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	// Another attestation key that validly signs header and body, but
	// which the QE report does not bind.
	swapped := func() []byte {
		a, err := abi.QuoteToProto(good)
		if err != nil {
			t.Fatal(err)
		}
		p := a.(*pb.QuoteV4)
		pub, err := other.PublicKey.Bytes()
		if err != nil {
			t.Fatal(err)
		}
		p.SignedData.EcdsaAttestationKey = pub[1:]
		hb, _ := abi.HeaderToAbiBytes(p.Header)
		bb, _ := abi.TdQuoteBodyToAbiBytes(p.TdQuoteBody)
		p.SignedData.Signature = signRS(t, other, append(hb, bb...))
		out, err := abi.QuoteToAbiBytes(p)
		if err != nil {
			t.Fatal(err)
		}
		return out
	}()
	notOnCurve := bytes.Clone(good)
	for i := range 64 {
		notOnCurve[offAttKey+i] = 1
	}
	return map[string][]byte{
		"good":                         good,
		"header byte":                  flip(good, 8),
		"body mrtd":                    flip(good, offMRTD),
		"body report data":             flip(good, offReportData+63),
		"quote signature r":            flip(good, offQuoteSig),
		"quote signature s":            flip(good, offQuoteSig+63),
		"attestation key":              flip(good, offAttKey+5),
		"attestation key not on curve": notOnCurve,
		"qe report cpusvn":             flip(good, offQEReport),
		"qe report data":               flip(good, offQEReport+0x140),
		"qe report data padding":       flip(good, offQEReport+0x17F),
		"qe report signature":          flip(good, offQEReportSig+10),
		"qe auth data":                 flip(good, offQEAuthData+3),
		"other attestation key":        swapped,
	}
}

// TestCachedPathSignaturesMatchFull: quotes whose signatures or QE report
// binding are broken take the cached path (their PCK chain is the cached
// one) and must fail exactly as go-tdx-guest's full path fails them.
func TestCachedPathSignaturesMatchFull(t *testing.T) {
	f := newForger(t, tdxsim.Options{})
	at := simEpoch.Add(time.Hour)
	src := f.collateralWith()
	coldV, warmV := coldVerifier(t, f, src, at), warmVerifier(t, f, src, at)
	reasons := map[Reason]int{}
	for name, q := range signatureEdits(t, f) {
		hits := warmV.coll.hits.Load()
		c1, err1 := coldV.Verify(context.Background(), q)
		c2, err2 := warmV.Verify(context.Background(), q)
		sameResult(t, name, c1, err1, c2, err2)
		if warmV.coll.hits.Load() != hits+1 {
			t.Fatalf("%s: warm verifier did not take the cached path (cold: %v)", name, err1)
		}
		if (name == "good") != (err1 == nil) {
			t.Errorf("%s: %v", name, err1)
		}
		if err1 == nil {
			reasons["ok"]++
		} else {
			reasons[ReasonOf(err1)]++
		}
	}
	t.Logf("outcomes: %v", reasons)
	for _, r := range []Reason{ReasonQuoteSignatureInvalid, ReasonQEReportSignatureInvalid, ReasonQEReportDataMismatch} {
		if reasons[r] == 0 {
			t.Errorf("no case ended with %s", r)
		}
	}
}

// FuzzCachedPathSignatures flips arbitrary bits of a validly signed quote
// outside the PCK chain (so the warm verifier takes the cached path
// whenever the layout still parses): the cold and warm verifiers must
// agree on every input.
func FuzzCachedPathSignatures(f *testing.F) {
	fg := newForger(f, tdxsim.Options{})
	at := simEpoch.Add(time.Hour)
	src := fg.collateralWith()
	coldV, warmV := coldVerifier(f, fg, src, at), warmVerifier(f, fg, src, at)
	good := fg.quote(f, [64]byte{7}, nil)
	f.Add(uint16(0), byte(0), uint16(0), byte(0))
	f.Add(uint16(offQuoteSig), byte(1), uint16(offQEReportSig+1), byte(0x80))
	f.Add(uint16(offQEReport+0x140), byte(4), uint16(offQEAuthData), byte(1))
	f.Add(uint16(offAttKey), byte(0xff), uint16(8), byte(2))
	f.Fuzz(func(t *testing.T, off1 uint16, x1 byte, off2 uint16, x2 byte) {
		q := bytes.Clone(good)
		for _, e := range []struct {
			off uint16
			x   byte
		}{{off1, x1}, {off2, x2}} {
			q[int(e.off)%offPCKChain] ^= e.x
		}
		c1, err1 := coldV.Verify(context.Background(), q)
		c2, err2 := warmV.Verify(context.Background(), q)
		sameResult(t, "fuzz", c1, err1, c2, err2)
	})
}

// The cached path skips the QE report signature check only for the exact
// QE report and signature that last verified under the cached PCK leaf:
// a changed report, a changed signature, or a report signed anew (a
// different valid signature) is checked, and a failure is not remembered.
func TestCacheQEReportSignature(t *testing.T) {
	f := newForger(t, tdxsim.Options{})
	v := warmVerifier(t, f, f.collateralWith(), warmTime)
	ctx := context.Background()
	good := quote(t, f.s, [64]byte{1}, f.s.DefaultTD())
	if _, err := v.Verify(ctx, good); err != nil {
		t.Fatal(err)
	}
	// The same QE report (the simulator signs it once) under a broken
	// signature, and a changed report under the remembered signature.
	_, err := v.Verify(ctx, flip(quote(t, f.s, [64]byte{2}, f.s.DefaultTD()), offQEReportSig+7))
	wantReason(t, err, ReasonQEReportSignatureInvalid)
	_, err = v.Verify(ctx, flip(quote(t, f.s, [64]byte{3}, f.s.DefaultTD()), offQEReport+1))
	wantReason(t, err, ReasonQEReportSignatureInvalid)
	// Re-signed by the PCK key (a new, valid signature): verifies, and
	// becomes the remembered one; the original verifies again.
	for i, q := range [][]byte{f.quote(t, [64]byte{4}, nil), good, flip(good, offQEReportSig+7)} {
		_, err := v.Verify(ctx, q)
		if i < 2 && err != nil {
			t.Fatalf("quote %d: %v", i, err)
		}
		if i == 2 {
			wantReason(t, err, ReasonQEReportSignatureInvalid)
		}
	}
	if m := v.coll.misses.Load(); m != 1 {
		t.Errorf("%d cache misses, want only the warming one", m)
	}
}
