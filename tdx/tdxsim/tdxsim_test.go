package tdxsim_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/x509"
	"encoding/binary"
	"encoding/json"
	"encoding/pem"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-tdx-guest/abi"
	"github.com/google/go-tdx-guest/pcs"
	pb "github.com/google/go-tdx-guest/proto/tdx"

	"github.com/cml-project/cml/tdx/collateral"
	"github.com/cml-project/cml/tdx/tdxsim"
	"github.com/cml-project/cml/tdx/verifier"
)

var epoch = time.Date(2025, time.March, 1, 12, 0, 0, 0, time.UTC)

var seed = []byte("tdxsim-test-seed-0123456789abcdef")

func rootOf(t *testing.T, s *tdxsim.Simulator) *x509.Certificate {
	t.Helper()
	blk, _ := pem.Decode(s.RootPEM())
	c, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func parse(t *testing.T, q []byte) *pb.QuoteV4 {
	t.Helper()
	a, err := abi.QuoteToProto(q)
	if err != nil {
		t.Fatal(err)
	}
	return a.(*pb.QuoteV4)
}

func TestNewOptions(t *testing.T) {
	for name, o := range map[string]tdxsim.Options{
		"no time":    {},
		"short seed": {Now: epoch, Seed: []byte("short")},
		"bad status": {Now: epoch, TCBStatus: "Fine"},
	} {
		if _, err := tdxsim.New(o); err == nil {
			t.Errorf("%s: New succeeded", name)
		}
	}
}

func TestDeterministicKeys(t *testing.T) {
	a, err := tdxsim.New(tdxsim.Options{Now: epoch, Seed: seed})
	if err != nil {
		t.Fatal(err)
	}
	b, _ := tdxsim.New(tdxsim.Options{Now: epoch.Add(time.Hour), Seed: seed})
	c, _ := tdxsim.New(tdxsim.Options{Now: epoch})
	ra, rb, rc := rootOf(t, a), rootOf(t, b), rootOf(t, c)
	if !ra.PublicKey.(*ecdsa.PublicKey).Equal(rb.PublicKey) || ra.SerialNumber.Cmp(rb.SerialNumber) != 0 {
		t.Error("same seed, different root key or serial")
	}
	if ra.PublicKey.(*ecdsa.PublicKey).Equal(rc.PublicKey) {
		t.Error("random simulator has the seeded root key")
	}
	if ra.Subject.CommonName != "Intel SGX Root CA" || !strings.Contains(ra.Subject.String(), "not Intel") {
		t.Errorf("root subject %q", ra.Subject)
	}
}

func TestQuoteContents(t *testing.T) {
	s, err := tdxsim.New(tdxsim.Options{Now: epoch, Seed: seed})
	if err != nil {
		t.Fatal(err)
	}
	td := s.DefaultTD()
	td.Debug = true
	td.MRConfigID[5] = 5
	td.TEETCBSVN = [16]byte{7, 1, 3}
	rd := [64]byte{0xde, 0xad}
	q := parse(t, mustQuote(t, s, rd, td))
	b := q.GetTdQuoteBody()
	if !bytes.Equal(b.GetMrTd(), td.MRTD[:]) || !bytes.Equal(b.GetMrConfigId(), td.MRConfigID[:]) || !bytes.Equal(b.GetReportData(), rd[:]) {
		t.Error("body does not carry the TD parameters")
	}
	if attrs := binary.LittleEndian.Uint64(b.GetTdAttributes()); attrs != tdxsim.AttrDebug|tdxsim.AttrSEPTVEDisable {
		t.Errorf("TD attributes %#x", attrs)
	}
	if !bytes.Equal(b.GetTeeTcbSvn(), td.TEETCBSVN[:]) {
		t.Error("TEE TCB SVN override ignored")
	}
	if q.GetHeader().GetTeeType() != abi.TeeTDX || q.GetHeader().GetVersion() != 4 {
		t.Error("not a TDX v4 quote")
	}
	// The PCK certificate carries the platform in its SGX extension, as
	// go-tdx-guest reads it.
	chain := q.GetSignedData().GetCertificationData().GetQeReportCertificationData().GetPckCertificateChainData().GetPckCertChain()
	blk, _ := pem.Decode(chain)
	pck, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	ext, err := pcs.PckCertificateExtensions(pck)
	if err != nil {
		t.Fatal(err)
	}
	p := s.Platform()
	if ext.FMSPC != "90c06f000000" || ext.PCEID != "0000" || ext.TCB.PCESvn != p.PCESVN || !bytes.Equal(ext.TCB.CPUSvnComponents, p.CPUSVN[:]) || len(ext.PPID) != 32 {
		t.Errorf("PCK extensions %+v", ext)
	}
}

func mustQuote(t *testing.T, s *tdxsim.Simulator, rd [64]byte, td tdxsim.TDParams) []byte {
	t.Helper()
	q, err := s.Quote(rd, td)
	if err != nil {
		t.Fatal(err)
	}
	return q
}

func TestInitLoad(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "sim")
	s, err := tdxsim.Init(dir, tdxsim.Options{Now: epoch})
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"root", "platform-ca", "pck", "tcb-signing", "attestation"} {
		fi, err := os.Stat(filepath.Join(dir, "keys", k+".key"))
		if err != nil || fi.Mode().Perm() != 0o600 {
			t.Errorf("key %s: %v %v", k, fi.Mode(), err)
		}
	}
	if fi, _ := os.Stat(filepath.Join(dir, "keys")); fi.Mode().Perm() != 0o700 {
		t.Errorf("keys dir mode %v", fi.Mode())
	}
	if _, err := tdxsim.Init(dir, tdxsim.Options{Now: epoch}); err == nil {
		t.Error("Init over an existing simulator succeeded")
	}
	l, err := tdxsim.Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(l.RootPEM(), s.RootPEM()) || l.DefaultTD() != s.DefaultTD() || l.Platform() != s.Platform() || l.TCBStatus() != s.TCBStatus() {
		t.Error("loaded simulator differs from the created one")
	}

	// The broker's development setup: collateral from dir/collateral,
	// offline, the simulator root passed explicitly.
	at := epoch.Add(time.Hour)
	g, err := collateral.New(collateral.Config{Dir: filepath.Join(dir, tdxsim.CollateralDir), Offline: true, Now: func() time.Time { return at }})
	if err != nil {
		t.Fatal(err)
	}
	v, err := verifier.New(verifier.Config{Collateral: g, ExtraRoots: []*x509.Certificate{rootOf(t, l)}, Now: func() time.Time { return at }})
	if err != nil {
		t.Fatal(err)
	}
	rd := [64]byte{42}
	c, err := v.Verify(context.Background(), mustQuote(t, l, rd, l.DefaultTD()))
	if err != nil {
		t.Fatalf("loaded simulator's quote: %v", err)
	}
	if c.ReportData != rd || c.MRTD != verifier.Measurement(tdxsim.DefaultTDParams().MRTD) || c.TCBStatus != verifier.TCBStatusUpToDate {
		t.Errorf("claims %+v", c)
	}
	// Without the explicit root, the same quote is refused.
	v, _ = verifier.New(verifier.Config{Collateral: g, Now: func() time.Time { return at }})
	if _, err := v.Verify(context.Background(), mustQuote(t, l, rd, l.DefaultTD())); verifier.ReasonOf(err) != verifier.ReasonPCKChainUntrusted {
		t.Errorf("untrusted simulator root: %v", err)
	}

	// A swapped PCK key is detected on load.
	other := filepath.Join(t.TempDir(), "other")
	if _, err := tdxsim.Init(other, tdxsim.Options{Now: epoch}); err != nil {
		t.Fatal(err)
	}
	k, _ := os.ReadFile(filepath.Join(other, "keys", "pck.key"))
	os.Chmod(filepath.Join(dir, "keys", "pck.key"), 0o600)
	if err := os.WriteFile(filepath.Join(dir, "keys", "pck.key"), k, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := tdxsim.Load(dir); err == nil || !strings.Contains(err.Error(), "does not match") {
		t.Errorf("mismatched PCK key: %v", err)
	}
}

func TestTDJSON(t *testing.T) {
	td := tdxsim.DefaultTDParams()
	td.Debug = true
	td.TEETCBSVN[0] = 9
	got, err := td.JSON().Params()
	if err != nil || got != td {
		t.Errorf("round trip: %v", err)
	}
	j := td.JSON()
	j.MRTD = "abcd"
	if _, err := j.Params(); err == nil {
		t.Error("short MRTD accepted")
	}
	j = td.JSON()
	j.XFAM = "zz"
	if _, err := j.Params(); err == nil {
		t.Error("bad XFAM accepted")
	}
	b, _ := json.Marshal(td.JSON())
	if !strings.Contains(string(b), `"mrtd":"`) {
		t.Errorf("JSON form %s", b)
	}
}

func TestStatusLevels(t *testing.T) {
	for _, st := range []string{tdxsim.UpToDate, tdxsim.OutOfDate, tdxsim.SWHardeningNeeded, tdxsim.Revoked} {
		s, err := tdxsim.New(tdxsim.Options{Now: epoch, Seed: seed, TCBStatus: st})
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range s.Collateral() {
			if e.Kind != collateral.KindTCBInfo {
				continue
			}
			var ti pcs.TdxTcbInfo
			if err := json.Unmarshal(e.Body, &ti); err != nil {
				t.Fatal(err)
			}
			last := ti.TcbInfo.TcbLevels[len(ti.TcbInfo.TcbLevels)-1]
			if string(last.TcbStatus) != st {
				t.Errorf("%s: platform level has status %s", st, last.TcbStatus)
			}
			if st != tdxsim.UpToDate && st != tdxsim.SWHardeningNeeded && ti.TcbInfo.TcbLevels[0].TcbStatus != pcs.TcbComponentStatusUpToDate {
				t.Errorf("%s: no newer UpToDate level", st)
			}
		}
	}
}

// The QE report does not depend on the quote: quotes share its signature
// (signed once), each quote has its own signature, and every one of them,
// also from concurrent callers, verifies.
func TestQEReportSignedOnce(t *testing.T) {
	s, err := tdxsim.New(tdxsim.Options{Now: epoch, Seed: seed})
	if err != nil {
		t.Fatal(err)
	}
	v, err := verifier.New(verifier.Config{Checks: verifier.CheckSignatureChain, ExtraRoots: []*x509.Certificate{rootOf(t, s)}, Now: func() time.Time { return epoch }})
	if err != nil {
		t.Fatal(err)
	}
	qs, errs := make([][]byte, 8), make([]error, 8)
	var wg sync.WaitGroup
	for i := range qs {
		wg.Go(func() { qs[i], errs[i] = s.Quote([64]byte{byte(i)}, s.DefaultTD()) })
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	qeSig := func(q []byte) []byte {
		return parse(t, q).GetSignedData().GetCertificationData().GetQeReportCertificationData().GetQeReportSignature()
	}
	for i, q := range qs {
		if _, err := v.Verify(context.Background(), q); err != nil {
			t.Fatalf("quote %d: %v", i, err)
		}
		if i > 0 && bytes.Equal(parse(t, q).GetSignedData().GetSignature(), parse(t, qs[0]).GetSignedData().GetSignature()) {
			t.Errorf("quotes 0 and %d have the same quote signature", i)
		}
	}
	// Every quote after the first signer's reuses one QE report signature
	// (a few concurrent first calls may each have signed).
	same := 0
	last := qeSig(mustQuote(t, s, [64]byte{0xff}, s.DefaultTD()))
	for _, q := range qs {
		if bytes.Equal(qeSig(q), last) {
			same++
		}
	}
	if again := qeSig(mustQuote(t, s, [64]byte{0xfe}, s.DefaultTD())); !bytes.Equal(again, last) || same == 0 {
		t.Errorf("the QE report is signed again for every quote (%d of %d share the last signature)", same, len(qs))
	}
}
