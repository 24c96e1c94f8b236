package verifier

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/google/go-tdx-guest/abi"
	pb "github.com/google/go-tdx-guest/proto/tdx"

	"github.com/cml-project/cml/tdx/collateral"
	"github.com/cml-project/cml/tdx/tdxsim"
)

// forger holds a simulator's private keys (tdxsim.Init writes them), so
// tests can make validly signed quotes and collateral with any field
// values: quotes with another QE report or SEAM fields, collateral with
// other TCB levels.
type forger struct {
	s             *tdxsim.Simulator
	pck, att, tcb *ecdsa.PrivateKey
}

func newForger(t testing.TB, opts tdxsim.Options) *forger {
	t.Helper()
	if opts.Now.IsZero() {
		opts.Now = simEpoch
	}
	if opts.Seed == nil {
		opts.Seed = []byte("verifier-test-seed-0123456789abcdef")
	}
	dir := filepath.Join(t.TempDir(), "sim")
	s, err := tdxsim.Init(dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	key := func(name string) *ecdsa.PrivateKey {
		b, err := os.ReadFile(filepath.Join(dir, tdxsim.KeysDir, name+".key"))
		if err != nil {
			t.Fatal(err)
		}
		blk, _ := pem.Decode(b)
		k, err := x509.ParsePKCS8PrivateKey(blk.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		return k.(*ecdsa.PrivateKey)
	}
	return &forger{s: s, pck: key("pck"), att: key("attestation"), tcb: key("tcb-signing")}
}

func signRS(t testing.TB, k *ecdsa.PrivateKey, msg []byte) []byte {
	t.Helper()
	d := sha256.Sum256(msg)
	r, s, err := ecdsa.Sign(rand.Reader, k, d[:])
	if err != nil {
		t.Fatal(err)
	}
	out := make([]byte, 64)
	r.FillBytes(out[:32])
	s.FillBytes(out[32:])
	return out
}

// quote returns a quote from the simulator after edit changed its parsed
// form, with the QE report re-signed by the PCK key and the header and
// body re-signed by the attestation key (which the QE report still
// binds).
func (f *forger) quote(t testing.TB, rd [64]byte, edit func(*pb.QuoteV4)) []byte {
	t.Helper()
	a, err := abi.QuoteToProto(quote(t, f.s, rd, f.s.DefaultTD()))
	if err != nil {
		t.Fatal(err)
	}
	p := a.(*pb.QuoteV4)
	if edit != nil {
		edit(p)
	}
	qe := p.SignedData.CertificationData.QeReportCertificationData
	rb, err := abi.EnclaveReportToAbiBytes(qe.QeReport)
	if err != nil {
		t.Fatal(err)
	}
	qe.QeReportSignature = signRS(t, f.pck, rb)
	hb, err := abi.HeaderToAbiBytes(p.Header)
	if err != nil {
		t.Fatal(err)
	}
	bb, err := abi.TdQuoteBodyToAbiBytes(p.TdQuoteBody)
	if err != nil {
		t.Fatal(err)
	}
	p.SignedData.Signature = signRS(t, f.att, append(hb, bb...))
	out, err := abi.QuoteToAbiBytes(p)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// doc re-issues the simulator's TCB info or QE identity after edit changed
// its signed JSON object, signed with the TCB signing key.
func (f *forger) doc(t testing.TB, kind collateral.Kind, edit func(map[string]any)) *collateral.Entry {
	t.Helper()
	field := map[collateral.Kind]string{collateral.KindTCBInfo: "tcbInfo", collateral.KindQEIdentity: "enclaveIdentity"}[kind]
	for _, e := range f.s.Collateral() {
		if e.Kind != kind {
			continue
		}
		var env map[string]json.RawMessage
		if err := json.Unmarshal(e.Body, &env); err != nil {
			t.Fatal(err)
		}
		d := json.NewDecoder(bytes.NewReader(env[field]))
		d.UseNumber()
		var inner map[string]any
		if err := d.Decode(&inner); err != nil {
			t.Fatal(err)
		}
		edit(inner)
		raw, err := json.Marshal(inner)
		if err != nil {
			t.Fatal(err)
		}
		body := fmt.Appendf(nil, `{"%s":%s,"signature":"%s"}`, field, raw, hex.EncodeToString(signRS(t, f.tcb, raw)))
		return &collateral.Entry{Key: e.Key, Body: body, IssuerChain: bytes.Clone(e.IssuerChain)}
	}
	t.Fatalf("simulator has no %s", kind)
	return nil
}

// collateralWith returns the simulator's collateral with entries replaced.
func (f *forger) collateralWith(entries ...*collateral.Entry) memSource {
	m := newMemSource(f.s.Collateral())
	for _, e := range entries {
		m[e.Key] = e
	}
	return m
}

// level is a TCB level for doc edits.
func level(tcb map[string]any, status string) map[string]any {
	return map[string]any{"tcb": tcb, "tcbDate": "2025-01-29T00:00:00Z", "tcbStatus": status, "advisoryIDs": []string{"INTEL-SA-TEST-" + status}}
}

// tdxComponents is the "tdxtcbcomponents" list for a TEE TCB SVN.
func tdxComponents(svn [16]byte) []any {
	out := make([]any, len(svn))
	for i, s := range svn {
		out[i] = map[string]any{"svn": s}
	}
	return out
}
