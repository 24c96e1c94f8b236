package identity_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"net"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cml-project/cml/identity"
	"github.com/cml-project/cml/identity/devca"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
)

var (
	td       = spiffeid.RequireTrustDomainFromString("example.org")
	kbsID    = spiffeid.RequireFromPath(td, "/kbs")
	loaderID = spiffeid.RequireFromPath(td, "/loader")
)

// newCA returns a dev CA whose validity started a day ago, so tests can
// issue SVIDs that already expired.
func newCA(t testing.TB, trustDomain string) *devca.CA {
	t.Helper()
	ca, err := devca.New(spiffeid.RequireTrustDomainFromString(trustDomain), devca.Options{
		Now: func() time.Time { return time.Now().Add(-24 * time.Hour) },
	})
	if err != nil {
		t.Fatal(err)
	}
	return ca
}

// issue makes an SVID valid from now-1m for an hour.
func issue(t testing.TB, ca *devca.CA, id spiffeid.ID) *x509svid.SVID {
	t.Helper()
	now := time.Now()
	svid, err := ca.IssueValidity(id, now.Add(-time.Minute), now.Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	return svid
}

func staticSource(t testing.TB, ca *devca.CA, id spiffeid.ID) identity.Source {
	t.Helper()
	return identity.NewStaticSource(issue(t, ca, id), ca.Bundle())
}

// swapSource is a Source whose SVID a test replaces, standing in for any
// rotating source.
type swapSource struct {
	svid   atomic.Pointer[x509svid.SVID]
	bundle *x509bundle.Bundle
}

func (s *swapSource) GetX509SVID() (*x509svid.SVID, error) { return s.svid.Load(), nil }
func (s *swapSource) GetX509BundleForTrustDomain(td spiffeid.TrustDomain) (*x509bundle.Bundle, error) {
	return s.bundle.GetX509BundleForTrustDomain(td)
}
func (s *swapSource) Close() error { return nil }

// call is what the test server saw for one RPC.
type call struct {
	id     spiffeid.ID
	serial string // of the verified client leaf
}

type recorder struct {
	mu    sync.Mutex
	calls []call
}

func (r *recorder) all() []call {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]call(nil), r.calls...)
}

// startGRPC serves the standard health service on loopback with creds. An
// interceptor records identity.PeerID of each call and refuses the call if
// there is none.
func startGRPC(t *testing.T, creds credentials.TransportCredentials) (string, *recorder) {
	t.Helper()
	rec := &recorder{}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer(grpc.Creds(creds), grpc.UnaryInterceptor(
		func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
			id, err := identity.PeerID(ctx)
			if err != nil {
				return nil, status.Error(codes.Unauthenticated, err.Error())
			}
			p, _ := peer.FromContext(ctx)
			leaf := p.AuthInfo.(credentials.TLSInfo).State.VerifiedChains[0][0]
			rec.mu.Lock()
			rec.calls = append(rec.calls, call{id: id, serial: leaf.SerialNumber.String()})
			rec.mu.Unlock()
			return handler(ctx, req)
		}))
	healthpb.RegisterHealthServer(srv, health.NewServer())
	go srv.Serve(lis)
	t.Cleanup(srv.Stop)
	return lis.Addr().String(), rec
}

// checkHealth makes one RPC on a new connection (so a new TLS handshake)
// and returns the server's leaf certificate.
func checkHealth(t *testing.T, addr string, creds credentials.TransportCredentials) (*x509.Certificate, error) {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(creds))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var p peer.Peer
	if _, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{}, grpc.Peer(&p)); err != nil {
		return nil, err
	}
	return p.AuthInfo.(credentials.TLSInfo).State.PeerCertificates[0], nil
}

func serverCreds(t *testing.T, src identity.Source, authorize identity.Authorizer) credentials.TransportCredentials {
	t.Helper()
	c, err := identity.ServerCredentials(src, authorize)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func clientCreds(t *testing.T, src identity.Source, server spiffeid.ID) credentials.TransportCredentials {
	t.Helper()
	c, err := identity.ClientCredentials(src, server)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// rawHandshake runs one TLS connection over loopback and returns each
// side's error. In TLS 1.3 the client finishes its handshake before the
// server checked the client certificate, so the client also reads one byte
// the server sends after a successful handshake.
func rawHandshake(t testing.TB, serverCfg, clientCfg *tls.Config) (serverErr, clientErr error, state tls.ConnectionState) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	type result struct {
		err   error
		state tls.ConnectionState
	}
	done := make(chan result, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			done <- result{err: err}
			return
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(10 * time.Second))
		tc := tls.Server(c, serverCfg)
		if err := tc.Handshake(); err != nil {
			done <- result{err: err}
			return
		}
		_, err = tc.Write([]byte{1})
		done <- result{err: err, state: tc.ConnectionState()}
	}()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(10 * time.Second))
	tc := tls.Client(c, clientCfg)
	clientErr = tc.Handshake()
	if clientErr == nil {
		_, clientErr = tc.Read(make([]byte, 1))
	}
	tc.Close()
	r := <-done
	return r.err, clientErr, r.state
}

// writeAtomic replaces path the way rotation tools should: a temporary file
// in the same directory, then a rename.
func writeAtomic(t *testing.T, path string, data []byte, perm os.FileMode) {
	t.Helper()
	tmp, err := os.CreateTemp(filepath.Dir(path), ".tmp-*")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tmp.Write(data); err != nil {
		t.Fatal(err)
	}
	if err := tmp.Chmod(perm); err != nil {
		t.Fatal(err)
	}
	if err := tmp.Close(); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		t.Fatal(err)
	}
}

// writeSVIDFiles writes svid (cert, key) and the bundle into dir and
// returns a files-mode Config for them.
func writeSVIDFiles(t *testing.T, dir string, svid *x509svid.SVID, bundle *x509bundle.Bundle) identity.Config {
	t.Helper()
	certPEM, keyPEM, err := devca.MarshalSVID(svid)
	if err != nil {
		t.Fatal(err)
	}
	bundlePEM, err := bundle.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	cfg := identity.Config{
		SVIDCert: filepath.Join(dir, "svid.pem"),
		SVIDKey:  filepath.Join(dir, "svid-key.pem"),
		Bundle:   filepath.Join(dir, "bundle.pem"),
	}
	writeAtomic(t, cfg.SVIDCert, certPEM, 0o644)
	writeAtomic(t, cfg.SVIDKey, keyPEM, 0o600)
	writeAtomic(t, cfg.Bundle, bundlePEM, 0o644)
	return cfg
}

// fakeClock is an injectable clock a test advances.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}
