package identity_test

import (
	"bytes"
	"context"
	"crypto/x509"
	"log/slog"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cml-project/cml/identity"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/proto/spiffe/workload"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// fakeWorkloadAPI is a minimal SPIFFE Workload API (what the SPIRE agent
// serves): FetchX509SVID streams the current response and every later one.
type fakeWorkloadAPI struct {
	workload.UnimplementedSpiffeWorkloadAPIServer

	mu   sync.Mutex
	resp *workload.X509SVIDResponse
	err  error // returned instead of a response, e.g. "no identity issued"
	subs map[chan struct{}]struct{}
}

// startWorkloadAPI serves the fake on a unix socket in a temporary
// directory and returns the socket path.
func startWorkloadAPI(t *testing.T) (*fakeWorkloadAPI, string) {
	t.Helper()
	f := &fakeWorkloadAPI{subs: map[chan struct{}]struct{}{}}
	path := filepath.Join(t.TempDir(), "agent.sock")
	lis, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	workload.RegisterSpiffeWorkloadAPIServer(srv, f)
	go srv.Serve(lis)
	t.Cleanup(srv.Stop)
	return f, path
}

func (f *fakeWorkloadAPI) set(resp *workload.X509SVIDResponse, err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.resp, f.err = resp, err
	for ch := range f.subs {
		select {
		case ch <- struct{}{}:
		default:
		}
	}
}

func (f *fakeWorkloadAPI) setSVID(svid *x509svid.SVID, bundle *x509bundle.Bundle) {
	key, err := x509.MarshalPKCS8PrivateKey(svid.PrivateKey)
	if err != nil {
		panic(err)
	}
	f.set(&workload.X509SVIDResponse{Svids: []*workload.X509SVID{{
		SpiffeId:    svid.ID.String(),
		X509Svid:    concatDER(svid.Certificates),
		X509SvidKey: key,
		Bundle:      concatDER(bundle.X509Authorities()),
	}}}, nil)
}

func concatDER(certs []*x509.Certificate) []byte {
	var b bytes.Buffer
	for _, c := range certs {
		b.Write(c.Raw)
	}
	return b.Bytes()
}

func (f *fakeWorkloadAPI) FetchX509SVID(_ *workload.X509SVIDRequest, stream workload.SpiffeWorkloadAPI_FetchX509SVIDServer) error {
	// Like SPIRE, insist on the header that proves a Workload API client.
	md, _ := metadata.FromIncomingContext(stream.Context())
	if v := md.Get("workload.spiffe.io"); len(v) != 1 || v[0] != "true" {
		return status.Error(codes.InvalidArgument, "security header missing from request")
	}
	ch := make(chan struct{}, 1)
	f.mu.Lock()
	f.subs[ch] = struct{}{}
	f.mu.Unlock()
	defer func() {
		f.mu.Lock()
		delete(f.subs, ch)
		f.mu.Unlock()
	}()
	for {
		f.mu.Lock()
		resp, err := f.resp, f.err
		f.mu.Unlock()
		if err != nil {
			return err
		}
		if resp != nil {
			if err := stream.Send(resp); err != nil {
				return err
			}
		}
		select {
		case <-ch:
		case <-stream.Context().Done():
			return nil
		}
	}
}

// TestWorkloadAPIMTLSAndRotation: the broker takes its SVID from the
// Workload API, serves mTLS with it, and a rotated SVID pushed on the stream
// is presented by the next handshake without restarting anything.
func TestWorkloadAPIMTLSAndRotation(t *testing.T) {
	ca := newCA(t, "example.org")
	api, sock := startWorkloadAPI(t)
	first := issue(t, ca, kbsID)
	api.setSVID(first, ca.Bundle())

	var logs syncBuffer
	for _, addr := range []string{sock, "unix://" + sock} {
		src, err := identity.Open(context.Background(), identity.Config{Socket: addr, StartupTimeout: 10 * time.Second,
			Logger: slog.New(slog.NewTextHandler(&logs, nil))})
		if err != nil {
			t.Fatalf("Open(%q): %v", addr, err)
		}
		svid, err := src.GetX509SVID()
		if err != nil || svid.ID != kbsID {
			t.Fatalf("Open(%q): SVID %v, %v", addr, svid, err)
		}
		if addr == sock {
			src.Close()
			continue
		}
		defer src.Close()

		addrGRPC, rec := startGRPC(t, serverCreds(t, src, nil))
		creds := clientCreds(t, staticSource(t, ca, loaderID), kbsID)
		serverCert, err := checkHealth(t, addrGRPC, creds)
		if err != nil {
			t.Fatal(err)
		}
		if serverCert.SerialNumber.Cmp(first.Certificates[0].SerialNumber) != 0 {
			t.Fatalf("server presented serial %s, want %s", serverCert.SerialNumber, first.Certificates[0].SerialNumber)
		}
		if calls := rec.all(); len(calls) != 1 || calls[0].id != loaderID {
			t.Fatalf("calls = %+v", calls)
		}

		second := issue(t, ca, kbsID)
		api.setSVID(second, ca.Bundle())
		waitFor(t, func() bool {
			s, err := src.GetX509SVID()
			return err == nil && s.Certificates[0].SerialNumber.Cmp(second.Certificates[0].SerialNumber) == 0
		})
		serverCert, err = checkHealth(t, addrGRPC, creds)
		if err != nil {
			t.Fatal(err)
		}
		if serverCert.SerialNumber.Cmp(second.Certificates[0].SerialNumber) != 0 {
			t.Fatalf("after rotation the server presented serial %s, want %s", serverCert.SerialNumber, second.Certificates[0].SerialNumber)
		}
	}
	waitFor(t, func() bool { return strings.Contains(logs.String(), "X.509-SVID updated by the Workload API") })
}

// TestWorkloadAPIBundleRotation: a new CA pushed in the bundle is trusted
// for the next client handshake.
func TestWorkloadAPIBundleRotation(t *testing.T) {
	oldCA := newCA(t, "example.org")
	nextCA := newCA(t, "example.org")
	api, sock := startWorkloadAPI(t)
	api.setSVID(issue(t, oldCA, kbsID), oldCA.Bundle())
	src, err := identity.Open(context.Background(), identity.Config{Socket: sock})
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	addr, _ := startGRPC(t, serverCreds(t, src, nil))
	// The client's SVID is from the new CA, which the server does not trust yet.
	client := identity.NewStaticSource(issue(t, nextCA, loaderID), x509bundle.FromX509Authorities(td, []*x509.Certificate{oldCA.Certificate(), nextCA.Certificate()}))
	creds := clientCreds(t, client, kbsID)
	if _, err := checkHealth(t, addr, creds); status.Code(err) != codes.Unavailable {
		t.Fatalf("client of an untrusted CA: %v", err)
	}
	both := x509bundle.FromX509Authorities(td, []*x509.Certificate{oldCA.Certificate(), nextCA.Certificate()})
	api.setSVID(issue(t, oldCA, kbsID), both)
	waitFor(t, func() bool {
		b, err := src.GetX509BundleForTrustDomain(td)
		return err == nil && len(b.X509Authorities()) == 2
	})
	if _, err := checkHealth(t, addr, creds); err != nil {
		t.Fatalf("after the bundle update: %v", err)
	}
}

// TestWorkloadAPINoIdentity: an agent that knows no registration entry for
// the workload answers PermissionDenied; Open gives up after the startup
// timeout and says why.
func TestWorkloadAPINoIdentity(t *testing.T) {
	api, sock := startWorkloadAPI(t)
	api.set(nil, status.Error(codes.PermissionDenied, "no identity issued"))
	start := time.Now()
	_, err := identity.Open(context.Background(), identity.Config{Socket: sock, StartupTimeout: 500 * time.Millisecond})
	if err == nil {
		t.Fatal("Open succeeded without an identity")
	}
	for _, want := range []string{"no X.509-SVID from the SPIFFE Workload API at unix://" + sock, "within 500ms", "no identity issued"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not contain %q", err, want)
		}
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("Open took %s with a 500ms startup timeout", d)
	}

	// A cancelled parent context stops the wait too.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := identity.Open(ctx, identity.Config{Socket: sock}); err == nil || strings.Contains(err.Error(), "within") {
		t.Errorf("cancelled context: %v", err)
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 10s")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
