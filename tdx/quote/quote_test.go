package quote_test

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/pem"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-configfs-tsm/configfs/configfsi"
	"github.com/google/go-configfs-tsm/configfs/faketsm"

	"github.com/cml-project/cml/tdx/quote"
	"github.com/cml-project/cml/tdx/tdxsim"
	"github.com/cml-project/cml/tdx/verifier"
)

var epoch = time.Date(2025, time.March, 1, 12, 0, 0, 0, time.UTC)

func newSim(t *testing.T) *tdxsim.Simulator {
	t.Helper()
	s, err := tdxsim.New(tdxsim.Options{Now: epoch, Seed: []byte("quote-test-seed-0123456789abcdef")})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// fakeTSM is go-configfs-tsm's fake report subsystem answering as a TDX
// guest would: provider tdx_guest, outblob from produce(inblob).
func fakeTSM(provider string, produce func(inblob []byte) ([]byte, error)) configfsi.Client {
	rs := faketsm.Report611(0)
	base := rs.ReadAttr
	rs.ReadAttr = func(e *faketsm.ReportEntry, attr string) ([]byte, error) {
		switch attr {
		case "provider":
			return []byte(provider + "\n"), nil
		case "outblob":
			return produce(e.InAttrs["inblob"].Value)
		}
		return base(e, attr)
	}
	return &faketsm.Client{Subsystems: map[string]configfsi.Client{"report": rs}}
}

func verify(t *testing.T, s *tdxsim.Simulator, q []byte) *verifier.Claims {
	t.Helper()
	blk, _ := pem.Decode(s.RootPEM())
	root, _ := x509.ParseCertificate(blk.Bytes)
	v, err := verifier.New(verifier.Config{ExtraRoots: []*x509.Certificate{root}, Now: func() time.Time { return epoch.Add(time.Hour) }, Checks: verifier.CheckSignatureChain})
	if err != nil {
		t.Fatal(err)
	}
	c, err := v.Verify(context.Background(), q)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestConfigFS(t *testing.T) {
	s := newSim(t)
	p := quote.NewConfigFSWithClient(fakeTSM("tdx_guest", func(in []byte) ([]byte, error) {
		var rd [64]byte
		copy(rd[:], in)
		return s.Quote(rd, s.DefaultTD())
	}))
	rd := [64]byte{1, 2, 3, 63: 9}
	q, err := p.GetQuote(context.Background(), rd)
	if err != nil {
		t.Fatal(err)
	}
	if c := verify(t, s, q); c.ReportData != rd {
		t.Errorf("REPORTDATA %x, want %x", c.ReportData[:4], rd[:4])
	}
}

func TestConfigFSRejects(t *testing.T) {
	s := newSim(t)
	good := func(in []byte) ([]byte, error) {
		var rd [64]byte
		copy(rd[:], in)
		return s.Quote(rd, s.DefaultTD())
	}
	for name, tc := range map[string]struct {
		provider string
		produce  func([]byte) ([]byte, error)
		want     string
	}{
		"other provider": {"sev_guest", good, "provider"},
		"empty quote":    {"tdx_guest", func([]byte) ([]byte, error) { return nil, nil }, "empty quote"},
		"not a quote":    {"tdx_guest", func(in []byte) ([]byte, error) { return []byte("privlevel: 0\ninblob: 00"), nil }, "TDX"},
		"short":          {"tdx_guest", func([]byte) ([]byte, error) { return []byte{4, 0}, nil }, "too short"},
	} {
		_, err := quote.NewConfigFSWithClient(fakeTSM(tc.provider, tc.produce)).GetQuote(context.Background(), [64]byte{})
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: error %v, want it to mention %q", name, err, tc.want)
		}
	}
}

func TestConfigFSContext(t *testing.T) {
	s := newSim(t)
	var calls atomic.Int32
	release := make(chan struct{})
	p := quote.NewConfigFSWithClient(fakeTSM("tdx_guest", func(in []byte) ([]byte, error) {
		calls.Add(1)
		<-release // the host's quoting service is slow
		return s.Quote([64]byte{}, s.DefaultTD())
	}))
	defer close(release)
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	start := time.Now()
	if _, err := p.GetQuote(ctx, [64]byte{}); err == nil || !strings.Contains(err.Error(), "deadline") {
		t.Errorf("slow quote: %v", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("GetQuote ignored its context for %v", d)
	}
	done, cancelDone := context.WithCancel(context.Background())
	cancelDone()
	if _, err := p.GetQuote(done, [64]byte{}); err == nil {
		t.Error("canceled context: no error")
	}
}

func TestSimulated(t *testing.T) {
	s := newSim(t)
	td := s.DefaultTD()
	td.Debug = true
	p := quote.NewSimulated(s, td)
	rd := [64]byte{0xee}
	q, err := p.GetQuote(context.Background(), rd)
	if err != nil {
		t.Fatal(err)
	}
	c := verify(t, s, q)
	if c.ReportData != rd || !c.Debug || !bytes.Equal(c.MRTD[:], td.MRTD[:]) {
		t.Error("simulated quote does not carry the TD")
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := p.GetQuote(ctx, rd); err == nil {
		t.Error("canceled context: no error")
	}
}
