package verifier

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-tdx-guest/abi"
	pb "github.com/google/go-tdx-guest/proto/tdx"

	"github.com/cml-project/cml/tdx/collateral"
	"github.com/cml-project/cml/tdx/tdxsim"
)

// realQuoteTime is inside the validity of the real quote's PCK chain and of
// the Intel collateral in testdata/intel/collateral.
var realQuoteTime = time.Date(2023, time.July, 1, 1, 0, 0, 0, time.UTC)

func readRealQuote(t testing.TB) []byte {
	t.Helper()
	q, err := os.ReadFile("testdata/intel/tdx_prod_quote_SPR_E4.dat")
	if err != nil {
		t.Fatal(err)
	}
	return q
}

func wantReason(t *testing.T, err error, want Reason) *Error {
	t.Helper()
	if err == nil {
		t.Fatalf("Verify succeeded, want reason %s", want)
	}
	var e *Error
	if !errors.As(err, &e) {
		t.Fatalf("Verify error %v is not a *verifier.Error", err)
	}
	if e.Reason != want {
		t.Fatalf("reason = %s, want %s (error: %v)", e.Reason, want, err)
	}
	if e.Claims != nil && !strings.HasPrefix(string(want), "tcb_") {
		t.Fatalf("reason %s carries claims", want)
	}
	return e
}

// wantHits fails a warm run in which no Verify call took the cached path.
func wantHits(t *testing.T, mode pathMode, v *Verifier) {
	t.Helper()
	if mode == warm && v.coll != nil && v.coll.hits.Load() == 0 {
		t.Error("warm run never took the cached path")
	}
}

func TestIntelRoot(t *testing.T) {
	root := IntelRootCA()
	if got := root.Subject.String(); got != "CN=Intel SGX Root CA,O=Intel Corporation,L=Santa Clara,ST=CA,C=US" {
		t.Errorf("subject = %q", got)
	}
	sum := sha256.Sum256(root.Raw)
	if got, want := hex.EncodeToString(sum[:]), "44a0196b2b99f889b8e149e95b807a350e7424964399e885a7cbb8ccfab674d3"; got != want {
		t.Errorf("SHA-256 fingerprint = %s, want %s", got, want)
	}
	if got := root.SerialNumber.Text(16); got != "22650cd65a9d3489f383b49552bf501b392706ac" {
		t.Errorf("serial = %s", got)
	}
	if err := root.CheckSignatureFrom(root); err != nil {
		t.Errorf("not self-signed: %v", err)
	}
	// It is the root of the real Intel-signed quote's PCK chain.
	q, err := abi.QuoteToProto(readRealQuote(t))
	if err != nil {
		t.Fatal(err)
	}
	chain := q.(*pb.QuoteV4).GetSignedData().GetCertificationData().GetQeReportCertificationData().GetPckCertificateChainData().GetPckCertChain()
	var last *pem.Block
	for rest := chain; ; {
		var b *pem.Block
		if b, rest = pem.Decode(rest); b == nil {
			break
		}
		last = b
	}
	if last == nil || !bytes.Equal(last.Bytes, root.Raw) {
		t.Error("embedded root differs from the root in the real quote's PCK chain")
	}
}

func TestRealQuoteSignatureAndChain(t *testing.T) {
	v, err := New(Config{Now: fixedClock(realQuoteTime), Checks: CheckSignatureChain})
	if err != nil {
		t.Fatal(err)
	}
	c, err := v.Verify(context.Background(), readRealQuote(t))
	if err != nil {
		t.Fatalf("real Intel quote: %v", err)
	}
	want := map[string]string{
		"MRTD":          "6363b8043668a3ad953278e10389574d326c6749fb78aa810ecd9336923db86f22fc00b8dcd404bc10d5e119d7215cbb",
		"RTMR0":         "2927da70461cd63266f43230cc1849c03ef25ebe490062a801d8fcc80af42976823adf08f833c1e50b51779c6593f32a",
		"RTMR1":         "2c700b8ba9b85783f8be9fb9443647bdc0bb3c50747f06297cc6538c25a5f589c4b56d035c59107c6bc5800db2cacb61",
		"RTMR2":         "8652f0caaba7e215ea442dc36a4499d8fec3362f3a0b2ca151cbe4b3e6466fe59c7368b3c2287fc7c3bf5c924eb4424e",
		"RTMR3":         strings.Repeat("00", 48),
		"MRConfigID":    strings.Repeat("00", 48),
		"MROwner":       strings.Repeat("00", 48),
		"MROwnerConfig": strings.Repeat("00", 48),
		"MRSeam":        "2fd279c16164a93dd5bf373d834328d46008c2b693af9ebb865b08b2ced320c9a89b4869a9fab60fbe9d0c5a5363c656",
		"MRSignerSeam":  strings.Repeat("00", 48),
		"TEETCBSVN":     "03000400000000000000000000000000",
		"ReportData":    "6c62dec1b8191749a31dab490be532a35944dea47caef1f980863993d9899545eb7406a38d1eed313b987a467dacead6f0c87a6d766c66f6f29f8acb281f1113",
	}
	got := map[string]string{
		"MRTD": c.MRTD.Hex(), "RTMR0": c.RTMR[0].Hex(), "RTMR1": c.RTMR[1].Hex(), "RTMR2": c.RTMR[2].Hex(), "RTMR3": c.RTMR[3].Hex(),
		"MRConfigID": c.MRConfigID.Hex(), "MROwner": c.MROwner.Hex(), "MROwnerConfig": c.MROwnerConfig.Hex(),
		"MRSeam": c.MRSeam.Hex(), "MRSignerSeam": c.MRSignerSeam.Hex(),
		"TEETCBSVN": hex.EncodeToString(c.TEETCBSVN[:]), "ReportData": hex.EncodeToString(c.ReportData[:]),
	}
	for k, w := range want {
		if got[k] != w {
			t.Errorf("%s = %s, want %s", k, got[k], w)
		}
	}
	if !strings.HasPrefix(c.MRTD.Hex(), "6363b804") {
		t.Errorf("MRTD does not begin 6363b804")
	}
	if c.Debug || c.TDAttributes != 0x40000000 {
		t.Errorf("TD attributes = %#x, debug = %v; want 0x40000000 (PKS), debug clear", c.TDAttributes, c.Debug)
	}
	if c.XFAM != 0x61ae7 {
		t.Errorf("XFAM = %#x, want 0x61ae7", c.XFAM)
	}
	if c.FMSPC != "50806f000000" {
		t.Errorf("FMSPC = %s", c.FMSPC)
	}
	if c.TCBStatus != TCBStatusNotEvaluated || c.Checks != CheckSignatureChain {
		t.Errorf("TCB status %q with checks %v, want not evaluated", c.TCBStatus, c.Checks)
	}
}

func TestRealQuoteIntelCollateral(t *testing.T) {
	get := func(now time.Time) *collateral.Getter {
		g, err := collateral.New(collateral.Config{Dir: "testdata/intel/collateral", Offline: true, Now: fixedClock(now)})
		if err != nil {
			t.Fatal(err)
		}
		return g
	}
	q := readRealQuote(t)
	// Intel's signatures on the TCB info, QE identity and both CRLs verify
	// against the pinned root, the PCK is not revoked; but go-tdx-guest's
	// sample TCB info (tcbEvaluationDataNumber 15) has no level for this
	// quote's TEE TCB SVN (03 00 04: microcode SVN 4 < 5).
	v, err := New(Config{Collateral: get(realQuoteTime), Now: fixedClock(realQuoteTime)})
	if err != nil {
		t.Fatal(err)
	}
	_, err = v.Verify(context.Background(), q)
	wantReason(t, err, ReasonTCBUnsupported)
	// Again, through the cached path (Intel's collateral verified above).
	_, err = v.Verify(context.Background(), q)
	wantReason(t, err, ReasonTCBUnsupported)
	if v.coll.hits.Load() != 1 {
		t.Error("the second verification of the real quote did not take the cached path")
	}

	// Ten days later the QE identity and PCK CRL are past nextUpdate.
	later := realQuoteTime.Add(10 * 24 * time.Hour)
	v, err = New(Config{Collateral: get(later), Now: fixedClock(later)})
	if err != nil {
		t.Fatal(err)
	}
	_, err = v.Verify(context.Background(), q)
	wantReason(t, err, ReasonCollateralExpired)

	// In 2053 the PCK chain has expired.
	v, err = New(Config{Now: fixedClock(time.Date(2053, 1, 1, 0, 0, 0, 0, time.UTC)), Checks: CheckSignatureChain})
	if err != nil {
		t.Fatal(err)
	}
	_, err = v.Verify(context.Background(), q)
	wantReason(t, err, ReasonCertificateExpired)
}

func TestSimAccept(t *testing.T) {
	s := newSim(t, tdxsim.Options{})
	td := s.DefaultTD()
	td.MRConfigID[0], td.MROwner[1], td.MROwnerConfig[2] = 0xc0, 0x0e, 0xcf
	td.RTMR[3][47] = 0x33
	rd := [64]byte{0: 0xaa, 63: 0x55}
	at := simEpoch.Add(time.Hour)
	for _, mc := range []struct {
		mode   pathMode
		checks Checks
	}{{cold, CheckFull}, {cold, CheckNoCRL}, {cold, CheckSignatureChain}, {warm, CheckFull}, {warm, CheckNoCRL}} {
		checks := mc.checks
		v := pathVerifier(t, mc.mode, s, nil, at, checks)
		c, err := v.Verify(context.Background(), quote(t, s, rd, td))
		if err != nil {
			t.Fatalf("%v %v: %v", mc.mode, checks, err)
		}
		wantHits(t, mc.mode, v)
		if c.MRTD != Measurement(td.MRTD) || c.RTMR[3] != Measurement(td.RTMR[3]) || c.MRConfigID != Measurement(td.MRConfigID) ||
			c.MROwner != Measurement(td.MROwner) || c.MROwnerConfig != Measurement(td.MROwnerConfig) || c.ReportData != rd {
			t.Errorf("%v: claims do not match the TD", checks)
		}
		if c.Debug || c.TDAttributes != tdxsim.AttrSEPTVEDisable || c.XFAM != td.XFAM {
			t.Errorf("%v: attributes %#x debug %v xfam %#x", checks, c.TDAttributes, c.Debug, c.XFAM)
		}
		if c.TEETCBSVN != s.Platform().TEETCBSVN || c.MRSeam != Measurement(s.Platform().MRSEAM) {
			t.Errorf("%v: TEE TCB SVN or MRSEAM differ", checks)
		}
		if c.FMSPC != "90c06f000000" {
			t.Errorf("%v: FMSPC %s", checks, c.FMSPC)
		}
		wantStatus := TCBStatusUpToDate
		if checks == CheckSignatureChain {
			wantStatus = TCBStatusNotEvaluated
		}
		if c.TCBStatus != wantStatus {
			t.Errorf("%v: TCB status %q, want %q", checks, c.TCBStatus, wantStatus)
		}
		if checks != CheckSignatureChain {
			next := simEpoch.Add(tdxsim.DefaultCollateralValidity)
			if !c.TCBInfoNextUpdate.Equal(next) || !c.QEIdentityNextUpdate.Equal(next) || !c.CollateralNextUpdate.Equal(next) ||
				!c.TCBInfoIssueDate.Equal(simEpoch) || !c.QEIdentityIssueDate.Equal(simEpoch) {
				t.Errorf("%v: collateral dates %v %v %v", checks, c.TCBInfoIssueDate, c.TCBInfoNextUpdate, c.CollateralNextUpdate)
			}
		}
	}

	// DEBUG is decoded, not judged: policy denies it.
	td.Debug = true
	for _, mode := range modes {
		c, err := pathVerifier(t, mode, s, nil, at, CheckFull).Verify(context.Background(), quote(t, s, rd, td))
		if err != nil {
			t.Fatal(err)
		}
		if !c.Debug || c.TDAttributes&TDAttrDebug == 0 {
			t.Errorf("%v: debug TD: Debug = %v, attributes %#x", mode, c.Debug, c.TDAttributes)
		}
	}
}

// resign replaces the attestation key with the attacker's and re-signs the
// header and body; with fixQE it also rewrites the QE report data to bind
// the new key (which breaks the QE report signature instead).
func resign(t *testing.T, q []byte, fixQE bool) []byte {
	t.Helper()
	a, err := abi.QuoteToProto(q)
	if err != nil {
		t.Fatal(err)
	}
	p := a.(*pb.QuoteV4)
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	pub, _ := k.PublicKey.Bytes()
	p.SignedData.EcdsaAttestationKey = pub[1:]
	hb, _ := abi.HeaderToAbiBytes(p.Header)
	bb, _ := abi.TdQuoteBodyToAbiBytes(p.TdQuoteBody)
	d := sha256.Sum256(append(hb, bb...))
	r, s, err := ecdsa.Sign(rand.Reader, k, d[:])
	if err != nil {
		t.Fatal(err)
	}
	sig := make([]byte, 64)
	r.FillBytes(sig[:32])
	s.FillBytes(sig[32:])
	p.SignedData.Signature = sig
	if fixQE {
		qe := p.SignedData.CertificationData.QeReportCertificationData
		h := sha256.Sum256(append(pub[1:], qe.QeAuthData.Data...))
		qe.QeReport.ReportData = append(h[:], make([]byte, 32)...)
	}
	out, err := abi.QuoteToAbiBytes(p)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func TestSimQuoteTampering(t *testing.T) {
	s := newSim(t, tdxsim.Options{})
	q := quote(t, s, [64]byte{7}, s.DefaultTD())
	big := append(bytes.Clone(q), make([]byte, DefaultMaxQuoteSize)...)
	for _, mode := range modes {
		t.Run(mode.String(), func(t *testing.T) { testSimQuoteTampering(t, mode, s, q, big) })
	}
}

func testSimQuoteTampering(t *testing.T, mode pathMode, s *tdxsim.Simulator, q, big []byte) {
	v := pathVerifier(t, mode, s, nil, simEpoch.Add(time.Hour), CheckFull)
	if _, err := v.Verify(context.Background(), q); err != nil {
		t.Fatalf("untampered quote: %v", err)
	}
	for _, tc := range []struct {
		name  string
		quote []byte
		want  Reason
	}{
		{"header user data", flip(q, offHeaderUserData), ReasonQuoteSignatureInvalid},
		{"header version", flip(q, 0), ReasonQuoteUnsupported},
		{"header TEE type", flip(q, 4), ReasonQuoteUnsupported},
		{"body MRTD", flip(q, offMRTD), ReasonQuoteSignatureInvalid},
		{"REPORTDATA", flip(q, offReportData), ReasonQuoteSignatureInvalid},
		{"REPORTDATA last byte", flip(q, offReportData+63), ReasonQuoteSignatureInvalid},
		{"quote signature", flip(q, offQuoteSig+5), ReasonQuoteSignatureInvalid},
		{"attestation key", flip(q, offAttKey+10), ReasonQuoteSignatureInvalid},
		{"QE report", flip(q, offQEReport+0x40), ReasonQEReportSignatureInvalid},
		{"QE report data", flip(q, offQEReport+0x140), ReasonQEReportSignatureInvalid},
		{"QE report signature", flip(q, offQEReportSig+3), ReasonQEReportSignatureInvalid},
		{"QE auth data", flip(q, offQEAuthData+1), ReasonQEReportDataMismatch},
		{"attestation key swapped and re-signed", resign(t, q, false), ReasonQEReportDataMismatch},
		{"attestation key swapped, re-signed, QE report data rebound", resign(t, q, true), ReasonQEReportSignatureInvalid},
		{"PCK chain PEM", flip(q, offPCKChain+100), ReasonPCKChainInvalid},
		{"truncated to nothing", nil, ReasonQuoteMalformed},
		{"truncated in header", q[:10], ReasonQuoteMalformed},
		{"truncated after header", q[:0x30], ReasonQuoteMalformed},
		{"truncated in body", q[:0x100], ReasonQuoteMalformed},
		{"truncated after body", q[:0x27C], ReasonQuoteMalformed},
		{"truncated in signed data", q[:0x300], ReasonQuoteMalformed},
		{"truncated by one", q[:len(q)-1], ReasonQuoteMalformed},
		{"oversized", big, ReasonQuoteTooLarge},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := v.Verify(context.Background(), tc.quote)
			wantReason(t, err, tc.want)
		})
	}
	// Bytes after the signed data are covered by no signature and ignored
	// (the real Intel test quote has 39 of them).
	if _, err := v.Verify(context.Background(), append(bytes.Clone(q), "trailing"...)); err != nil {
		t.Errorf("quote with trailing bytes: %v", err)
	}
	wantHits(t, mode, v)
}

func TestSimTrust(t *testing.T) {
	s := newSim(t, tdxsim.Options{})
	q := quote(t, s, [64]byte{}, s.DefaultTD())
	at := simEpoch.Add(time.Hour)

	// Without the simulator's root, only Intel's is trusted.
	for _, checks := range []Checks{CheckFull, CheckSignatureChain} {
		v, err := New(Config{Collateral: newMemSource(s.Collateral()), Now: fixedClock(at), Checks: checks})
		if err != nil {
			t.Fatal(err)
		}
		_, err = v.Verify(context.Background(), q)
		wantReason(t, err, ReasonPCKChainUntrusted)
	}

	other := newSim(t, tdxsim.Options{Seed: []byte("attacker-seed-0123456789abcdefgh")})
	for _, mode := range modes {
		// Another simulator's quote (the attacker's own CA with Intel's names).
		_, err := pathVerifier(t, mode, s, nil, at, CheckFull).Verify(context.Background(), quote(t, other, [64]byte{}, other.DefaultTD()))
		wantReason(t, err, ReasonPCKChainUntrusted)

		// Collateral signed under another root.
		mixed := newMemSource(s.Collateral())
		for _, e := range other.Collateral() {
			if e.Kind == collateral.KindTCBInfo {
				mixed[e.Key] = e
			}
		}
		_, err = pathVerifier(t, mode, s, mixed, at, CheckFull).Verify(context.Background(), q)
		wantReason(t, err, ReasonCollateralInvalid)

		// CRLs from another root or CA.
		for _, kind := range []collateral.Kind{collateral.KindRootCRL, collateral.KindPCKCRL} {
			mixed := newMemSource(s.Collateral())
			for _, e := range other.Collateral() {
				if e.Kind == kind {
					mixed[e.Key] = e
				}
			}
			_, err = pathVerifier(t, mode, s, mixed, at, CheckFull).Verify(context.Background(), q)
			wantReason(t, err, ReasonCRLInvalid)
		}
	}
}

func TestSimRevokedPCK(t *testing.T) {
	s := newSim(t, tdxsim.Options{RevokePCK: true})
	q := quote(t, s, [64]byte{}, s.DefaultTD())
	for _, mode := range modes {
		_, err := pathVerifier(t, mode, s, nil, simEpoch.Add(time.Hour), CheckFull).Verify(context.Background(), q)
		wantReason(t, err, ReasonPCKRevoked)
		// Without CRL checks the revocation is not seen: CheckNoCRL is for
		// benchmarks and diagnosis only.
		if _, err := pathVerifier(t, mode, s, nil, simEpoch.Add(time.Hour), CheckNoCRL).Verify(context.Background(), q); err != nil {
			t.Errorf("%v: CheckNoCRL: %v", mode, err)
		}
	}
}

func TestSimCollateral(t *testing.T) {
	at := simEpoch.Add(time.Hour)
	expired := func(k collateral.Kind) tdxsim.Options {
		return tdxsim.Options{ValidityOverride: map[collateral.Kind]time.Duration{k: -time.Minute}}
	}
	for _, tc := range []struct {
		name string
		opts tdxsim.Options
		edit func(memSource)
		want Reason
	}{
		{"expired TCB info", expired(collateral.KindTCBInfo), nil, ReasonCollateralExpired},
		{"expired QE identity", expired(collateral.KindQEIdentity), nil, ReasonCollateralExpired},
		{"expired PCK CRL", expired(collateral.KindPCKCRL), nil, ReasonCollateralExpired},
		{"expired root CRL", expired(collateral.KindRootCRL), nil, ReasonCollateralExpired},
		{"altered TCB info", tdxsim.Options{}, func(m memSource) {
			editBody(m, collateral.KindTCBInfo, `"tcbEvaluationDataNumber":17`, `"tcbEvaluationDataNumber":18`)
		}, ReasonCollateralInvalid},
		{"altered TCB info status", tdxsim.Options{TCBStatus: tdxsim.OutOfDate}, func(m memSource) {
			editBody(m, collateral.KindTCBInfo, `"tcbStatus":"OutOfDate"`, `"tcbStatus":"UpToDate"`)
		}, ReasonCollateralInvalid},
		{"altered QE identity", tdxsim.Options{}, func(m memSource) {
			editBody(m, collateral.KindQEIdentity, `"isvprodid":2`, `"isvprodid":3`)
		}, ReasonCollateralInvalid},
		{"TCB info signature", tdxsim.Options{}, func(m memSource) {
			editBody(m, collateral.KindTCBInfo, `"signature":"`, `"signature":"00`)
		}, ReasonCollateralInvalid},
		{"missing TCB info", tdxsim.Options{}, func(m memSource) { deleteKind(m, collateral.KindTCBInfo) }, ReasonCollateralMissing},
		{"missing QE identity", tdxsim.Options{}, func(m memSource) { deleteKind(m, collateral.KindQEIdentity) }, ReasonCollateralMissing},
		{"missing PCK CRL", tdxsim.Options{}, func(m memSource) { deleteKind(m, collateral.KindPCKCRL) }, ReasonCollateralMissing},
		{"missing root CRL", tdxsim.Options{}, func(m memSource) { deleteKind(m, collateral.KindRootCRL) }, ReasonCollateralMissing},
		{"TCB info issuer chain without root", tdxsim.Options{}, func(m memSource) {
			for k, e := range m {
				if k.Kind == collateral.KindTCBInfo {
					blk, _ := pem.Decode(e.IssuerChain)
					e.IssuerChain = pem.EncodeToMemory(blk)
				}
			}
		}, ReasonCollateralInvalid},
	} {
		for _, mode := range modes {
			t.Run(tc.name+"/"+mode.String(), func(t *testing.T) {
				s := newSim(t, tc.opts)
				m := newMemSource(s.Collateral())
				if tc.edit != nil {
					tc.edit(m)
				}
				_, err := pathVerifier(t, mode, s, m, at, CheckFull).Verify(context.Background(), quote(t, s, [64]byte{}, s.DefaultTD()))
				wantReason(t, err, tc.want)
			})
		}
	}
}

func editBody(m memSource, kind collateral.Kind, old, new string) {
	for k, e := range m {
		if k.Kind == kind {
			if !bytes.Contains(e.Body, []byte(old)) {
				panic("test: " + old + " not in " + string(kind))
			}
			e.Body = bytes.Replace(e.Body, []byte(old), []byte(new), 1)
		}
	}
}

func deleteKind(m memSource, kind collateral.Kind) {
	for k := range m {
		if k.Kind == kind {
			delete(m, k)
		}
	}
}

func TestSimTCBStatus(t *testing.T) {
	at := simEpoch.Add(time.Hour)
	for _, tc := range []struct {
		status string
		want   Reason
	}{
		{tdxsim.OutOfDate, ReasonTCBOutOfDate},
		{tdxsim.OutOfDateConfigurationNeeded, ReasonTCBOutOfDate},
		{tdxsim.Revoked, ReasonTCBRevoked},
		{tdxsim.SWHardeningNeeded, ReasonTCBSWHardeningNeeded},
		{tdxsim.ConfigurationNeeded, ReasonTCBConfigurationNeeded},
		{tdxsim.ConfigurationAndSWHardeningNeeded, ReasonTCBConfigurationAndSWHardeningNeeded},
	} {
		for _, mode := range modes {
			t.Run(tc.status+"/"+mode.String(), func(t *testing.T) {
				s := newSim(t, tdxsim.Options{TCBStatus: tc.status})
				rd := [64]byte{1}
				v := pathVerifier(t, mode, s, nil, at, CheckFull)
				_, err := v.Verify(context.Background(), quote(t, s, rd, s.DefaultTD()))
				e := wantReason(t, err, tc.want)
				wantHits(t, mode, v)
				if e.Claims == nil {
					t.Fatal("TCB status error carries no claims")
				}
				if string(e.Claims.TCBStatus) != tc.status || e.Claims.ReportData != rd || e.Claims.MRTD != Measurement(s.DefaultTD().MRTD) {
					t.Errorf("claims: status %q report data %x", e.Claims.TCBStatus, e.Claims.ReportData[:2])
				}
				if len(e.Claims.AdvisoryIDs) == 0 {
					t.Error("no advisory IDs")
				}
				if e.Claims.TCBInfoNextUpdate.IsZero() || e.Claims.CollateralNextUpdate.IsZero() {
					t.Error("collateral dates missing")
				}
			})
		}
	}

	s := newSim(t, tdxsim.Options{})
	for _, mode := range modes {
		v := pathVerifier(t, mode, s, nil, at, CheckFull)
		// A TEE TCB SVN below every TCB level (microcode SVN 1 < 2).
		td := s.DefaultTD()
		td.TEETCBSVN = s.Platform().TEETCBSVN
		td.TEETCBSVN[2] = 1
		_, err := v.Verify(context.Background(), quote(t, s, [64]byte{}, td))
		wantReason(t, err, ReasonTCBUnsupported)
		// A TDX module SVN below the module identity's levels.
		td.TEETCBSVN = s.Platform().TEETCBSVN
		td.TEETCBSVN[0] = 4
		_, err = v.Verify(context.Background(), quote(t, s, [64]byte{}, td))
		wantReason(t, err, ReasonTCBUnsupported)
		// A TDX module major version the TCB info does not know.
		td.TEETCBSVN = s.Platform().TEETCBSVN
		td.TEETCBSVN[1] = 2
		_, err = v.Verify(context.Background(), quote(t, s, [64]byte{}, td))
		wantReason(t, err, ReasonTCBUnsupported)
		wantHits(t, mode, v)
	}
}

func TestSimQEIdentityLevel(t *testing.T) {
	// Same seed, so same keys: a platform whose QE SVN (3) is below the QE
	// identity's only level (4). go-tdx-guest fails the QE status check;
	// no QE TCB level matches.
	s := newSim(t, tdxsim.Options{})
	p := tdxsim.DefaultPlatform()
	p.QESVN = 3
	old := newSim(t, tdxsim.Options{Platform: &p})
	for _, mode := range modes {
		_, err := pathVerifier(t, mode, s, nil, simEpoch.Add(time.Hour), CheckFull).Verify(context.Background(), quote(t, old, [64]byte{}, old.DefaultTD()))
		wantReason(t, err, ReasonTCBUnsupported)
	}
}

func TestSimTCBInfoMismatch(t *testing.T) {
	// A platform with another FMSPC (same keys); the collateral service
	// answers its FMSPC with the first platform's TCB info.
	s := newSim(t, tdxsim.Options{})
	p := tdxsim.DefaultPlatform()
	p.FMSPC = [6]byte{0x00, 0x80, 0x6f, 0x05, 0x00, 0x00}
	other := newSim(t, tdxsim.Options{Platform: &p})
	m := newMemSource(s.Collateral())
	for k, e := range m {
		if k.Kind == collateral.KindTCBInfo {
			m[collateral.Key{Kind: collateral.KindTCBInfo, Param: "00806f050000"}] = e
		}
	}
	for _, mode := range modes {
		_, err := pathVerifier(t, mode, other, m, simEpoch.Add(time.Hour), CheckFull).Verify(context.Background(), quote(t, other, [64]byte{}, other.DefaultTD()))
		wantReason(t, err, ReasonTCBInfoMismatch)
	}
}

func TestSimClock(t *testing.T) {
	s := newSim(t, tdxsim.Options{CertValidity: 365 * 24 * time.Hour})
	q := quote(t, s, [64]byte{}, s.DefaultTD())
	for _, tc := range []struct {
		name   string
		at     time.Time
		checks Checks
		want   Reason
	}{
		{"before certificates are valid", simEpoch.Add(-2 * time.Hour), CheckFull, ReasonCertificateExpired},
		{"after collateral nextUpdate", simEpoch.Add(tdxsim.DefaultCollateralValidity + time.Second), CheckFull, ReasonCollateralExpired},
		{"after collateral nextUpdate, no CRLs", simEpoch.Add(tdxsim.DefaultCollateralValidity + time.Second), CheckNoCRL, ReasonCollateralExpired},
		{"after certificates expired", simEpoch.Add(366 * 24 * time.Hour), CheckSignatureChain, ReasonCertificateExpired},
	} {
		for _, mode := range modes {
			t.Run(tc.name+"/"+mode.String(), func(t *testing.T) {
				_, err := pathVerifier(t, mode, s, nil, tc.at, tc.checks).Verify(context.Background(), q)
				wantReason(t, err, tc.want)
			})
		}
	}
}

// The broker's setup: collateral from a directory, offline.
func TestSimOfflineDirectory(t *testing.T) {
	s := newSim(t, tdxsim.Options{})
	q := quote(t, s, [64]byte{}, s.DefaultTD())
	for _, mode := range modes {
		dir := t.TempDir()
		if err := s.WriteCollateral(dir); err != nil {
			t.Fatal(err)
		}
		verifierAt := func(dir string, at time.Time) *Verifier {
			g, err := collateral.New(collateral.Config{Dir: dir, Offline: true, Now: fixedClock(at)})
			if err != nil {
				t.Fatal(err)
			}
			return pathVerifier(t, mode, s, g, at, CheckFull)
		}
		at := simEpoch.Add(time.Hour)
		v := verifierAt(dir, at)
		if _, err := v.Verify(context.Background(), q); err != nil {
			t.Fatalf("%v: offline directory: %v", mode, err)
		}
		wantHits(t, mode, v)
		start := time.Now()
		_, err := verifierAt(t.TempDir(), at).Verify(context.Background(), q)
		wantReason(t, err, ReasonCollateralMissing)
		_, err = verifierAt(dir, simEpoch.Add(tdxsim.DefaultCollateralValidity+time.Minute)).Verify(context.Background(), q)
		wantReason(t, err, ReasonCollateralExpired)
		if d := time.Since(start); d > 2*time.Second {
			t.Errorf("%v: offline failures took %v; they must be immediate", mode, d)
		}
		if err := os.Remove(filepath.Join(dir, "rootcrl.der")); err != nil {
			t.Fatal(err)
		}
		_, err = verifierAt(dir, at).Verify(context.Background(), q)
		wantReason(t, err, ReasonCollateralMissing)
	}
}

type failingSource struct{ err error }

func (f failingSource) Get(context.Context, string) (map[string][]string, []byte, error) {
	return nil, nil, f.err
}

func TestCollateralSourceErrors(t *testing.T) {
	s := newSim(t, tdxsim.Options{})
	q := quote(t, s, [64]byte{}, s.DefaultTD())
	at := simEpoch.Add(time.Hour)
	for _, tc := range []struct {
		err  error
		want Reason
	}{
		{collateral.ErrMissing, ReasonCollateralMissing},
		{collateral.ErrExpired, ReasonCollateralExpired},
		{collateral.ErrUnavailable, ReasonCollateralUnavailable},
		{collateral.ErrInvalid, ReasonCollateralInvalid},
		{context.DeadlineExceeded, ReasonCollateralUnavailable},
		{errors.New("some source failure"), ReasonCollateralUnavailable},
	} {
		for _, mode := range modes {
			_, err := pathVerifier(t, mode, s, failingSource{tc.err}, at, CheckFull).Verify(context.Background(), q)
			wantReason(t, err, tc.want)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	for _, mode := range modes {
		_, err := pathVerifier(t, mode, s, nil, at, CheckFull).Verify(ctx, q)
		wantReason(t, err, ReasonCanceled)
	}
}

func TestNewConfig(t *testing.T) {
	now := fixedClock(simEpoch)
	if _, err := New(Config{}); err == nil {
		t.Error("New without Now succeeded")
	}
	if _, err := New(Config{Now: now}); err == nil {
		t.Error("New with full checks and no collateral source succeeded")
	}
	if _, err := New(Config{Now: now, Checks: Checks(7), Collateral: memSource{}}); err == nil {
		t.Error("New with unknown checks succeeded")
	}
	s := newSim(t, tdxsim.Options{})
	blk, _ := pem.Decode(s.RootPEM())
	root, _ := x509.ParseCertificate(blk.Bytes)
	if _, err := New(Config{Now: now, Collateral: memSource{}, ExtraRoots: []*x509.Certificate{nil}}); err == nil {
		t.Error("nil extra root accepted")
	}
	// A leaf is not a root.
	chain, _ := os.ReadFile("testdata/intel/collateral/qeidentity.issuer-chain.pem")
	blk, _ = pem.Decode(chain)
	leaf, _ := x509.ParseCertificate(blk.Bytes)
	if _, err := New(Config{Now: now, Collateral: memSource{}, ExtraRoots: []*x509.Certificate{leaf}}); err == nil {
		t.Error("non-CA extra root accepted")
	}
	if _, err := New(Config{Now: now, Collateral: memSource{}, ExtraRoots: []*x509.Certificate{root}}); err != nil {
		t.Error(err)
	}
}
