package collateral_test

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-tdx-guest/pcs"

	"github.com/cml-project/cml/tdx/collateral"
	"github.com/cml-project/cml/tdx/tdxsim"
)

var epoch = time.Date(2025, time.March, 1, 12, 0, 0, 0, time.UTC)

const simFMSPC = "90c06f000000"

func clock(t time.Time) func() time.Time { return func() time.Time { return t } }

func newSim(t testing.TB, now time.Time, opts tdxsim.Options) *tdxsim.Simulator {
	t.Helper()
	opts.Now = now
	if opts.Seed == nil {
		opts.Seed = []byte("collateral-test-seed-0123456789ab")
	}
	s, err := tdxsim.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestKeyForURL(t *testing.T) {
	for _, tc := range []struct {
		url  string
		want collateral.Key
	}{
		{pcs.TcbInfoURL("50806f000000"), collateral.Key{Kind: collateral.KindTCBInfo, Param: "50806f000000"}},
		{pcs.TcbInfoURL("50806F000000"), collateral.Key{Kind: collateral.KindTCBInfo, Param: "50806f000000"}},
		{pcs.QeIdentityURL(), collateral.Key{Kind: collateral.KindQEIdentity}},
		{pcs.PckCrlURL("platform"), collateral.Key{Kind: collateral.KindPCKCRL, Param: "platform"}},
		{pcs.PckCrlURL("processor"), collateral.Key{Kind: collateral.KindPCKCRL, Param: "processor"}},
		{collateral.IntelRootCRLURL, collateral.Key{Kind: collateral.KindRootCRL}},
		{"https://tdxsim.invalid/IntelSGXRootCA.der", collateral.Key{Kind: collateral.KindRootCRL}},
		{"https://pccs:8081/sgx/certification/v4/rootcacrl", collateral.Key{Kind: collateral.KindRootCRL}},
	} {
		got, err := collateral.KeyForURL(tc.url)
		if err != nil || got != tc.want {
			t.Errorf("KeyForURL(%q) = %v, %v; want %v", tc.url, got, err, tc.want)
		}
	}
	for _, bad := range []string{
		"https://api.trustedservices.intel.com/tdx/certification/v4/tcb?fmspc=../../etc",
		"https://api.trustedservices.intel.com/tdx/certification/v4/tcb",
		"https://api.trustedservices.intel.com/sgx/certification/v4/pckcrl?ca=other",
		"https://api.trustedservices.intel.com/sgx/certification/v4/pckcert",
		"https://example.com/whatever",
		"%zz",
	} {
		if _, err := collateral.KeyForURL(bad); !errors.Is(err, collateral.ErrInvalid) {
			t.Errorf("KeyForURL(%q) error = %v, want ErrInvalid", bad, err)
		}
	}
}

func TestParseSimulatorAndIntel(t *testing.T) {
	s := newSim(t, epoch, tdxsim.Options{})
	for _, e := range s.Collateral() {
		info, err := e.Parse()
		if err != nil {
			t.Fatalf("%s: %v", e.Key, err)
		}
		if !info.NextUpdate.Equal(epoch.Add(tdxsim.DefaultCollateralValidity)) {
			t.Errorf("%s: nextUpdate %v", e.Key, info.NextUpdate)
		}
	}
	// Intel's real collateral from go-tdx-guest's testdata, in the layout.
	entries, err := collateral.ReadDir("../verifier/testdata/intel/collateral")
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{
		"pckcrl-platform":      "2023-07-08T07:27:52Z",
		"qeidentity":           "2023-07-08T07:24:59Z",
		"rootcrl":              "2024-04-02T10:22:51Z",
		"tcbinfo-50806f000000": "2023-07-18T08:42:58Z",
	}
	if len(entries) != len(want) {
		t.Fatalf("%d entries, want %d", len(entries), len(want))
	}
	for _, e := range entries {
		info, err := e.Parse()
		if err != nil {
			t.Fatalf("%s: %v", e.Key, err)
		}
		if got := info.NextUpdate.UTC().Format(time.RFC3339); got != want[e.Key.String()] {
			t.Errorf("%s: nextUpdate %s, want %s", e.Key, got, want[e.Key.String()])
		}
	}
}

func entryOf(t *testing.T, s *tdxsim.Simulator, kind collateral.Kind) *collateral.Entry {
	t.Helper()
	for _, e := range s.Collateral() {
		if e.Kind == kind {
			return e
		}
	}
	t.Fatalf("no %s", kind)
	return nil
}

func TestParseRejects(t *testing.T) {
	s := newSim(t, epoch, tdxsim.Options{})
	other := newSim(t, epoch, tdxsim.Options{Seed: []byte("another-seed-0123456789abcdefghij")})
	tcb := entryOf(t, s, collateral.KindTCBInfo)
	for name, edit := range map[string]func(e *collateral.Entry){
		"altered body": func(e *collateral.Entry) {
			e.Body = bytes.Replace(e.Body, []byte(`"version":3`), []byte(`"version":3 `), 1)
		},
		"altered signature": func(e *collateral.Entry) {
			e.Body = bytes.Replace(e.Body, []byte(`"signature":"`), []byte(`"signature":"0`), 1)
		},
		"wrong fmspc":     func(e *collateral.Entry) { e.Param = "00806f050000" },
		"not JSON":        func(e *collateral.Entry) { e.Body = []byte("<html>") },
		"empty body":      func(e *collateral.Entry) { e.Body = nil },
		"no issuer chain": func(e *collateral.Entry) { e.IssuerChain = nil },
		"other issuer":    func(e *collateral.Entry) { e.IssuerChain = entryOf(t, other, collateral.KindTCBInfo).IssuerChain },
		"chain of 3":      func(e *collateral.Entry) { e.IssuerChain = append(bytes.Clone(e.IssuerChain), e.IssuerChain...) },
		"bad key":         func(e *collateral.Entry) { e.Kind = "pckcert" },
	} {
		e := *tcb
		edit(&e)
		if _, err := e.Parse(); err == nil {
			t.Errorf("%s: Parse succeeded", name)
		}
	}
	crl := *entryOf(t, s, collateral.KindPCKCRL)
	crl.IssuerChain = entryOf(t, other, collateral.KindPCKCRL).IssuerChain
	if _, err := crl.Parse(); !errors.Is(err, collateral.ErrInvalid) {
		t.Errorf("PCK CRL with another issuer: %v", err)
	}
	qe := *entryOf(t, s, collateral.KindQEIdentity)
	qe.Body = bytes.Replace(qe.Body, []byte(`"TD_QE"`), []byte(`"QE"`), 1)
	if _, err := qe.Parse(); !errors.Is(err, collateral.ErrInvalid) {
		t.Errorf("QE identity with another id: %v", err)
	}
}

func TestDirRoundTrip(t *testing.T) {
	s := newSim(t, epoch, tdxsim.Options{})
	dir := t.TempDir()
	if err := s.WriteCollateral(dir); err != nil {
		t.Fatal(err)
	}
	names, _ := filepath.Glob(filepath.Join(dir, "*"))
	var base []string
	for _, n := range names {
		base = append(base, filepath.Base(n))
	}
	want := "pckcrl-platform.der pckcrl-platform.issuer-chain.pem qeidentity.issuer-chain.pem qeidentity.json rootcrl.der tcbinfo-90c06f000000.issuer-chain.pem tcbinfo-90c06f000000.json"
	if got := strings.Join(base, " "); got != want {
		t.Errorf("layout:\n got %s\nwant %s", got, want)
	}
	entries, err := collateral.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	orig := s.Collateral()
	if len(entries) != len(orig) {
		t.Fatalf("read %d entries, wrote %d", len(entries), len(orig))
	}
	for _, o := range orig {
		e, err := collateral.ReadEntry(dir, o.Key)
		if err != nil || !bytes.Equal(e.Body, o.Body) || !bytes.Equal(e.IssuerChain, o.IssuerChain) {
			t.Errorf("%s: not read back byte for byte (%v)", o.Key, err)
		}
	}
	if _, err := collateral.ReadEntry(dir, collateral.Key{Kind: collateral.KindPCKCRL, Param: "processor"}); !errors.Is(err, collateral.ErrMissing) {
		t.Errorf("missing entry: %v", err)
	}
	os.WriteFile(filepath.Join(dir, "notes.txt"), []byte("x"), 0o644)
	if _, err := collateral.ReadDir(dir); err == nil || !strings.Contains(err.Error(), "notes.txt") {
		t.Errorf("unknown file: %v", err)
	}
	os.Remove(filepath.Join(dir, "notes.txt"))
	os.Remove(filepath.Join(dir, "qeidentity.json"))
	if _, err := collateral.ReadDir(dir); err == nil || !strings.Contains(err.Error(), "qeidentity.issuer-chain.pem") {
		t.Errorf("orphan chain: %v", err)
	}
}

func TestImport(t *testing.T) {
	ctx := context.Background()
	s := newSim(t, epoch, tdxsim.Options{})
	src, dst := t.TempDir(), filepath.Join(t.TempDir(), "collateral")
	if err := s.WriteCollateral(src); err != nil {
		t.Fatal(err)
	}
	now := epoch.Add(time.Hour)
	res, err := collateral.Import(ctx, src, dst, now)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range res {
		if r.Action != collateral.Installed {
			t.Errorf("%s: %s, want installed", r.Key, r.Action)
		}
	}
	if res, err = collateral.Import(ctx, src, dst, now); err != nil || res[0].Action != collateral.Unchanged {
		t.Errorf("re-import: %v %v", res, err)
	}

	// An older bundle (same keys, issued a week earlier) does not roll back.
	old := newSim(t, epoch.Add(-7*24*time.Hour), tdxsim.Options{})
	oldDir := t.TempDir()
	if err := old.WriteCollateral(oldDir); err != nil {
		t.Fatal(err)
	}
	if res, err = collateral.Import(ctx, oldDir, dst, now); err != nil {
		t.Fatal(err)
	}
	for _, r := range res {
		if r.Action != collateral.KeptNewer {
			t.Errorf("older %s: %s, want kept-newer", r.Key, r.Action)
		}
	}
	e, _ := collateral.ReadEntry(dst, collateral.Key{Kind: collateral.KindQEIdentity})
	if !bytes.Equal(e.Body, entryOf(t, s, collateral.KindQEIdentity).Body) {
		t.Error("older import replaced the installed QE identity")
	}

	// Expired or corrupt bundles are refused as a whole.
	fresh := filepath.Join(t.TempDir(), "fresh")
	if _, err := collateral.Import(ctx, src, fresh, epoch.Add(tdxsim.DefaultCollateralValidity+time.Second)); !errors.Is(err, collateral.ErrExpired) {
		t.Errorf("expired import: %v", err)
	}
	if err := os.WriteFile(filepath.Join(src, "rootcrl.der"), []byte("garbage"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := collateral.Import(ctx, src, fresh, now); !errors.Is(err, collateral.ErrInvalid) || !strings.Contains(err.Error(), "rootcrl.der") {
		t.Errorf("corrupt import: %v", err)
	}
	if _, err := os.Stat(fresh); !errors.Is(err, os.ErrNotExist) {
		t.Error("a refused import wrote files")
	}
	if _, err := collateral.Import(ctx, t.TempDir(), fresh, now); !errors.Is(err, collateral.ErrMissing) {
		t.Errorf("empty import: %v", err)
	}
}

func TestGetterOffline(t *testing.T) {
	ctx := context.Background()
	s := newSim(t, epoch, tdxsim.Options{})
	dir := t.TempDir()
	if err := s.WriteCollateral(dir); err != nil {
		t.Fatal(err)
	}
	now := epoch.Add(time.Hour)
	g, err := collateral.New(collateral.Config{Dir: dir, Offline: true, Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	tcbURL := pcs.TcbInfoURL(simFMSPC)
	h, body, err := g.Get(ctx, tcbURL)
	if err != nil {
		t.Fatal(err)
	}
	want := entryOf(t, s, collateral.KindTCBInfo)
	if !bytes.Equal(body, want.Body) {
		t.Error("body not served byte for byte")
	}
	chain, err := url.QueryUnescape(h["Tcb-Info-Issuer-Chain"][0])
	if err != nil || chain != string(want.IssuerChain) {
		t.Errorf("issuer chain header does not round-trip: %v", err)
	}
	// Callers share the cached copy (no per-call copy; they must not modify
	// it, see TestVerifierLeavesServedCollateral), but appending to the
	// body cannot write into the cache: its capacity is its length.
	if cap(body) != len(body) {
		t.Errorf("body capacity %d > length %d: an append would write into shared memory", cap(body), len(body))
	}
	_ = append(body, 'X')
	h2, b2, _ := g.Get(ctx, tcbURL)
	if &b2[0] != &body[0] || len(b2) != len(body) {
		t.Error("steady-state Get did not return the cached body")
	}
	if fmt.Sprint(h2) != fmt.Sprint(h) {
		t.Error("steady-state Get returned a different header")
	}
	if _, _, err := g.Get(ctx, pcs.PckCrlURL("processor")); !errors.Is(err, collateral.ErrMissing) {
		t.Errorf("missing: %v", err)
	}
	if _, _, err := g.Get(ctx, "https://example.com/x"); !errors.Is(err, collateral.ErrInvalid) {
		t.Errorf("unknown url: %v", err)
	}
	// Past nextUpdate: expired, immediately.
	now = epoch.Add(tdxsim.DefaultCollateralValidity + time.Minute)
	start := time.Now()
	if _, _, err := g.Get(ctx, tcbURL); !errors.Is(err, collateral.ErrExpired) {
		t.Errorf("expired: %v", err)
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("offline expiry took %v", d)
	}
	// A newer bundle imported into the directory is picked up.
	newer := newSim(t, epoch.Add(20*24*time.Hour), tdxsim.Options{})
	if err := newer.WriteCollateral(dir); err != nil {
		t.Fatal(err)
	}
	if _, b, err := g.Get(ctx, tcbURL); err != nil || !bytes.Equal(b, entryOf(t, newer, collateral.KindTCBInfo).Body) {
		t.Errorf("newer collateral not picked up: %v", err)
	}
	// A caller still holding the old document sees it unchanged.
	if !bytes.Equal(body, want.Body) || h["Tcb-Info-Issuer-Chain"][0] != url.QueryEscape(string(want.IssuerChain)) {
		t.Error("replacing a document changed a previously served header or body")
	}
}

// pcsServer emulates Intel PCS (or a PCCS) serving a simulator's
// collateral, counting requests per path.
type pcsServer struct {
	*httptest.Server
	mu       sync.Mutex
	entries  map[string]*collateral.Entry // by request path (and query)
	hits     map[string]int
	status   atomic.Int32 // non-zero: answer every request with it
	delay    atomic.Int64 // nanoseconds before answering
	hexCRLs  bool
	requests atomic.Int32
}

func newPCSServer(t *testing.T, s *tdxsim.Simulator, pccs bool) *pcsServer {
	p := &pcsServer{entries: map[string]*collateral.Entry{}, hits: map[string]int{}, hexCRLs: pccs}
	for _, e := range s.Collateral() {
		var path string
		switch e.Kind {
		case collateral.KindTCBInfo:
			path = "/tdx/certification/v4/tcb?fmspc=" + e.Param
		case collateral.KindQEIdentity:
			path = "/tdx/certification/v4/qe/identity"
		case collateral.KindPCKCRL:
			path = "/sgx/certification/v4/pckcrl?ca=" + e.Param + "&encoding=der"
		case collateral.KindRootCRL:
			path = "/IntelSGXRootCA.der"
			if pccs {
				path = "/sgx/certification/v4/rootcacrl"
			}
		}
		p.entries[path] = e
	}
	p.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p.requests.Add(1)
		if d := p.delay.Load(); d > 0 {
			select {
			case <-time.After(time.Duration(d)):
			case <-r.Context().Done():
				return
			}
		}
		if st := p.status.Load(); st != 0 {
			w.WriteHeader(int(st))
			return
		}
		key := r.URL.Path
		if r.URL.RawQuery != "" {
			key += "?" + r.URL.RawQuery
		}
		p.mu.Lock()
		e, ok := p.entries[key]
		p.hits[key]++
		p.mu.Unlock()
		if !ok {
			http.NotFound(w, r)
			return
		}
		for k, v := range e.Header() {
			w.Header()[k] = v
		}
		body := e.Body
		if p.hexCRLs && (e.Kind == collateral.KindPCKCRL || e.Kind == collateral.KindRootCRL) {
			body = []byte(hex.EncodeToString(body))
		}
		w.Write(body)
	}))
	t.Cleanup(p.Close)
	return p
}

func TestGetterOnline(t *testing.T) {
	ctx := context.Background()
	s := newSim(t, epoch, tdxsim.Options{})
	for _, pccs := range []bool{false, true} {
		t.Run(fmt.Sprintf("pccs=%v", pccs), func(t *testing.T) {
			srv := newPCSServer(t, s, pccs)
			dir := t.TempDir()
			cfg := collateral.Config{Dir: dir, BaseURL: srv.URL, HTTPClient: srv.Client(), Now: clock(epoch.Add(time.Hour))}
			if !pccs {
				cfg.RootCRLURL = srv.URL + "/IntelSGXRootCA.der"
			}
			g, err := collateral.New(cfg)
			if err != nil {
				t.Fatal(err)
			}
			urls := []string{pcs.TcbInfoURL(simFMSPC), pcs.QeIdentityURL(), pcs.PckCrlURL("platform"), "https://tdxsim.invalid/IntelSGXRootCA.der"}
			for round := 0; round < 3; round++ {
				for _, u := range urls {
					k, _ := collateral.KeyForURL(u)
					_, body, err := g.Get(ctx, u)
					if err != nil {
						t.Fatalf("%s: %v", u, err)
					}
					if want := entryOf(t, s, k.Kind).Body; !bytes.Equal(body, want) {
						t.Errorf("%s: body differs from what the service signed", u)
					}
				}
			}
			if n := srv.requests.Load(); n != 4 {
				t.Errorf("%d requests for 4 documents fetched 3 times; want 4 (cached)", n)
			}
			// Persisted: a restarted getter serves from the directory.
			g2, _ := collateral.New(cfg)
			for _, u := range urls {
				if _, _, err := g2.Get(ctx, u); err != nil {
					t.Fatal(err)
				}
			}
			if n := srv.requests.Load(); n != 4 {
				t.Errorf("restart refetched: %d requests", n)
			}
			// The persisted directory is a valid offline bundle.
			if _, err := collateral.Import(ctx, dir, t.TempDir(), epoch.Add(time.Hour)); err != nil {
				t.Errorf("persisted directory does not import: %v", err)
			}
		})
	}
}

func TestGetterOnlineFailures(t *testing.T) {
	ctx := context.Background()
	s := newSim(t, epoch, tdxsim.Options{})
	srv := newPCSServer(t, s, false)
	newGetter := func(now time.Time, timeout time.Duration) *collateral.Getter {
		g, err := collateral.New(collateral.Config{Dir: t.TempDir(), BaseURL: srv.URL, RootCRLURL: srv.URL + "/IntelSGXRootCA.der",
			HTTPClient: srv.Client(), Now: clock(now), FetchTimeout: timeout})
		if err != nil {
			t.Fatal(err)
		}
		return g
	}
	now := epoch.Add(time.Hour)
	if _, _, err := newGetter(now, 0).Get(ctx, pcs.TcbInfoURL("00806f050000")); !errors.Is(err, collateral.ErrMissing) {
		t.Errorf("404: %v", err)
	}
	srv.status.Store(http.StatusServiceUnavailable)
	if _, _, err := newGetter(now, 0).Get(ctx, pcs.QeIdentityURL()); !errors.Is(err, collateral.ErrUnavailable) {
		t.Errorf("503: %v", err)
	}
	srv.status.Store(0)
	// The service hands out a document that has already expired.
	if _, _, err := newGetter(epoch.Add(tdxsim.DefaultCollateralValidity+time.Hour), 0).Get(ctx, pcs.QeIdentityURL()); !errors.Is(err, collateral.ErrExpired) {
		t.Errorf("expired fetch: %v", err)
	}
	// A hanging service: bounded by the fetch timeout and by the context.
	srv.delay.Store(int64(time.Minute))
	start := time.Now()
	if _, _, err := newGetter(now, 200*time.Millisecond).Get(ctx, pcs.QeIdentityURL()); !errors.Is(err, collateral.ErrUnavailable) {
		t.Errorf("slow service: %v", err)
	}
	cctx, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
	defer cancel()
	if _, _, err := newGetter(now, time.Minute).Get(cctx, pcs.QeIdentityURL()); !errors.Is(err, collateral.ErrUnavailable) {
		t.Errorf("canceled: %v", err)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("hanging service held Get for %v", d)
	}
	srv.delay.Store(0)
	// Missing issuer chain header.
	srv.mu.Lock()
	e := *srv.entries["/tdx/certification/v4/qe/identity"]
	e.IssuerChain = nil
	e.Kind = collateral.KindRootCRL // Header() of a root CRL is empty
	srv.entries["/tdx/certification/v4/qe/identity"] = &e
	srv.mu.Unlock()
	if _, _, err := newGetter(now, 0).Get(ctx, pcs.QeIdentityURL()); !errors.Is(err, collateral.ErrInvalid) {
		t.Errorf("no issuer chain: %v", err)
	}
}

func TestGetterRefreshAndConcurrency(t *testing.T) {
	ctx := context.Background()
	s := newSim(t, epoch, tdxsim.Options{})
	srv := newPCSServer(t, s, false)
	var now atomic.Int64
	now.Store(epoch.Add(time.Hour).UnixNano())
	g, err := collateral.New(collateral.Config{Dir: t.TempDir(), BaseURL: srv.URL, HTTPClient: srv.Client(),
		RefreshAfter: 24 * time.Hour, Now: func() time.Time { return time.Unix(0, now.Load()).UTC() }})
	if err != nil {
		t.Fatal(err)
	}
	srv.delay.Store(int64(50 * time.Millisecond))
	var wg sync.WaitGroup
	for i := 0; i < 16; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, _, err := g.Get(ctx, pcs.QeIdentityURL()); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	srv.delay.Store(0)
	if n := srv.requests.Load(); n != 1 {
		t.Errorf("16 concurrent misses made %d requests, want 1", n)
	}
	// After RefreshAfter the document is refetched...
	now.Add(int64(25 * time.Hour))
	g.Get(ctx, pcs.QeIdentityURL())
	if n := srv.requests.Load(); n != 2 {
		t.Errorf("refresh: %d requests, want 2", n)
	}
	// ...and if the refetch fails, the unexpired copy is still served.
	now.Add(int64(25 * time.Hour))
	srv.status.Store(http.StatusInternalServerError)
	if _, _, err := g.Get(ctx, pcs.QeIdentityURL()); err != nil {
		t.Errorf("failed refresh of an unexpired document: %v", err)
	}
}

func TestPrefetch(t *testing.T) {
	ctx := context.Background()
	s := newSim(t, epoch, tdxsim.Options{})
	srv := newPCSServer(t, s, false)
	// The simulator has no processor-CA CRL: serve the platform one there.
	srv.entries["/sgx/certification/v4/pckcrl?ca=processor&encoding=der"] = srv.entries["/sgx/certification/v4/pckcrl?ca=platform&encoding=der"]
	dir := t.TempDir()
	g, err := collateral.New(collateral.Config{Dir: dir, BaseURL: srv.URL, RootCRLURL: srv.URL + "/IntelSGXRootCA.der",
		HTTPClient: srv.Client(), Now: clock(epoch.Add(time.Hour))})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := g.Prefetch(ctx, "00806f050000"); !errors.Is(err, collateral.ErrMissing) {
		t.Errorf("prefetch of an unknown FMSPC: %v", err)
	}
	infos, err := g.Prefetch(ctx, strings.ToUpper(simFMSPC))
	if err != nil {
		t.Fatal(err)
	}
	if len(infos) != 5 {
		t.Errorf("prefetched %d documents, want 5", len(infos))
	}
	if _, err := collateral.Import(ctx, dir, t.TempDir(), epoch.Add(time.Hour)); err != nil {
		t.Errorf("prefetched bundle does not import: %v", err)
	}
	if _, err := g.Prefetch(ctx, "xyz"); !errors.Is(err, collateral.ErrInvalid) {
		t.Errorf("bad FMSPC: %v", err)
	}
}

func TestNewConfig(t *testing.T) {
	for name, cfg := range map[string]collateral.Config{
		"no dir":         {Offline: true, Now: time.Now},
		"no clock":       {Dir: "x", Offline: true},
		"no http client": {Dir: "x", Now: time.Now},
		"bad base url":   {Dir: "x", Now: time.Now, HTTPClient: http.DefaultClient, BaseURL: "ftp://x"},
	} {
		if _, err := collateral.New(cfg); err == nil {
			t.Errorf("%s: New succeeded", name)
		}
	}
}

func TestGetterBogusFMSPCs(t *testing.T) {
	ctx := context.Background()
	g, err := collateral.New(collateral.Config{Dir: t.TempDir(), Offline: true, Now: clock(epoch)})
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 1000; i++ {
		if _, _, err := g.Get(ctx, pcs.TcbInfoURL(fmt.Sprintf("%012x", i))); !errors.Is(err, collateral.ErrMissing) {
			t.Fatal(err)
		}
	}
	if n := collateral.SlotCount(g); n != 0 {
		t.Errorf("%d slots kept for missing documents", n)
	}
	if n := collateral.KeyCount(g); n != 0 {
		t.Errorf("%d URLs memoised for missing documents", n)
	}
}

// TestGetterURLMemo: URLs of served documents are memoised, boundedly, and
// a memoised URL serves what KeyForURL maps it to.
func TestGetterURLMemo(t *testing.T) {
	ctx := context.Background()
	s := newSim(t, epoch, tdxsim.Options{})
	dir := t.TempDir()
	if err := s.WriteCollateral(dir); err != nil {
		t.Fatal(err)
	}
	g, err := collateral.New(collateral.Config{Dir: dir, Offline: true, Now: clock(epoch.Add(time.Hour))})
	if err != nil {
		t.Fatal(err)
	}
	want := map[collateral.Kind][]byte{}
	for _, e := range s.Collateral() {
		want[e.Kind] = e.Body
	}
	// Many spellings of the same documents (extra query parameters,
	// uppercase FMSPC): twice each, the second from the memo.
	for i := range 3 * collateral.MaxKeys {
		for _, u := range []string{
			pcs.TcbInfoURL(strings.ToUpper(simFMSPC)) + fmt.Sprintf("&n=%d", i),
			pcs.PckCrlURL("platform") + fmt.Sprintf("&n=%d", i),
		} {
			k, err := collateral.KeyForURL(u)
			if err != nil {
				t.Fatal(err)
			}
			for range 2 {
				if _, b, err := g.Get(ctx, u); err != nil || !bytes.Equal(b, want[k.Kind]) {
					t.Fatalf("Get(%q): wrong document (%v)", u, err)
				}
			}
			if n := collateral.KeyCount(g); n > collateral.MaxKeys || n == 0 {
				t.Fatalf("%d URLs memoised, want 1..%d", n, collateral.MaxKeys)
			}
		}
	}
	if _, _, err := g.Get(ctx, "https://example.com/x"); !errors.Is(err, collateral.ErrInvalid) {
		t.Errorf("unknown url: %v", err)
	}
}
