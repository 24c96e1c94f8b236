// Package clienttest runs a real key broker in the test process, for tests
// of the client library, the loader and kbsctl: server.New over a throwaway
// keystore (storetest), the real quote verifier trusting a TDX simulator
// (tdxsim) root, and SVIDs from an in-process development CA (devca), served
// with mutual TLS on loopback TCP or on an in-memory bufconn listener.
//
//	b := clienttest.New(t, clienttest.Options{})
//	dek := b.ImportKey(t, "llama", b.DefaultPolicy())   // key + policy, DEK returned
//	c, err := client.New(ctx, b.Addr,
//		client.WithServerID(b.KBSID),
//		client.WithSource(b.Source(t, b.LoaderID)),
//		client.WithDialOptions(b.DialOptions()...))      // bufconn only
//	rk, err := c.ReleaseKey(ctx, "llama", 0, b.Quoter())
//
// With Options.Deferred the broker's address is reserved but nothing listens
// on it until Serve, to test clients that start first. The harness's own
// admin calls (ImportKey, PutPolicy, RotateKey) go to the same services over
// a private in-memory listener, so they work before Serve.
//
// Test-only: the CA, the simulator and the keystore's KEK live in memory or
// in t.TempDir().
package clienttest

import (
	"context"
	"crypto/rand"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"log/slog"
	"net"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/test/bufconn"

	"github.com/cml-project/cml/identity"
	"github.com/cml-project/cml/identity/devca"
	kbsv1 "github.com/cml-project/cml/proto/cml/kbs/v1"
	"github.com/cml-project/cml/server"
	"github.com/cml-project/cml/server/store"
	"github.com/cml-project/cml/server/store/storetest"
	"github.com/cml-project/cml/tdx/collateral"
	"github.com/cml-project/cml/tdx/quote"
	"github.com/cml-project/cml/tdx/tdxsim"
	"github.com/cml-project/cml/tdx/verifier"
)

// TrustDomain of every identity of the harness.
var TrustDomain = spiffeid.RequireTrustDomainFromString("example.org")

// Identities.
var (
	KBSID    = spiffeid.RequireFromPath(TrustDomain, "/ns/cml-system/sa/kbs")
	AdminID  = spiffeid.RequireFromPath(TrustDomain, "/ns/cml-system/sa/kbsctl")
	LoaderID = spiffeid.RequireFromPath(TrustDomain, "/ns/ml/sa/loader")
	// OtherID is a valid identity of the trust domain that DefaultPolicy
	// does not allow.
	OtherID = spiffeid.RequireFromPath(TrustDomain, "/ns/other/sa/intruder")
)

// Options configure New.
type Options struct {
	// Bufconn serves on an in-memory listener instead of loopback TCP;
	// clients then need DialOptions.
	Bufconn bool
	// Deferred reserves the address without listening until Serve.
	Deferred bool
	// SimDir, if set, is where the simulator is created with tdxsim.Init
	// (what cml-loader --dev-insecure-simulated-tdx reads); else it lives in
	// memory.
	SimDir string
	// MaxChallengesPerCaller is the broker's bound on outstanding challenges
	// of one SPIFFE ID (server.Config; 0: the server's default).
	MaxChallengesPerCaller int
}

// Broker is a key broker running in the test process.
type Broker struct {
	Addr     string
	KBSID    spiffeid.ID
	LoaderID spiffeid.ID
	AdminID  spiffeid.ID
	CA       *devca.CA
	Sim      *tdxsim.Simulator
	Store    *store.Store
	Logs     *SyncBuffer // the server's JSON log

	g      *grpc.Server
	setup  *bufconn.Listener // always served: ImportKey and PutPolicy work before Serve
	buf    *bufconn.Listener
	mu     sync.Mutex
	lis    net.Listener
	stop   bool
	served bool
}

// New starts (or, with Deferred, prepares) a broker; t.Cleanup stops it.
func New(t testing.TB, o Options) *Broker {
	t.Helper()
	now := time.Now()
	simOpts := tdxsim.Options{Now: now.Add(-time.Minute)}
	var (
		sim *tdxsim.Simulator
		err error
	)
	if o.SimDir != "" {
		sim, err = tdxsim.Init(o.SimDir, simOpts)
	} else {
		sim, err = tdxsim.New(simOpts)
	}
	if err != nil {
		t.Fatalf("clienttest: simulator: %v", err)
	}
	colDir := t.TempDir()
	if err := sim.WriteCollateral(colDir); err != nil {
		t.Fatalf("clienttest: collateral: %v", err)
	}
	getter, err := collateral.New(collateral.Config{Dir: colDir, Offline: true, Now: time.Now})
	if err != nil {
		t.Fatalf("clienttest: collateral: %v", err)
	}
	blk, _ := pem.Decode(sim.RootPEM())
	if blk == nil {
		t.Fatal("clienttest: the simulator root is not PEM")
	}
	root, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		t.Fatalf("clienttest: simulator root: %v", err)
	}
	v, err := verifier.New(verifier.Config{Collateral: getter, ExtraRoots: []*x509.Certificate{root}, Now: time.Now})
	if err != nil {
		t.Fatalf("clienttest: verifier: %v", err)
	}
	st := storetest.Open(t)
	logs := &SyncBuffer{}
	srv, err := server.New(server.Config{
		Store:                  st,
		Verifier:               v,
		Simulated:              true,
		AdminIDs:               []string{AdminID.String()},
		MaxChallengesPerCaller: o.MaxChallengesPerCaller,
		Now:                    time.Now,
		Logger:                 slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
	})
	if err != nil {
		t.Fatalf("clienttest: server: %v", err)
	}
	ca, err := devca.New(TrustDomain, devca.Options{})
	if err != nil {
		t.Fatalf("clienttest: CA: %v", err)
	}
	svid, err := ca.Issue(KBSID, time.Hour)
	if err != nil {
		t.Fatalf("clienttest: broker SVID: %v", err)
	}
	creds, err := identity.ServerCredentials(identity.NewStaticSource(svid, ca.Bundle()), nil)
	if err != nil {
		t.Fatalf("clienttest: server credentials: %v", err)
	}
	g := grpc.NewServer(append(srv.ServerOptions(), grpc.Creds(creds))...)
	srv.Register(g)

	b := &Broker{KBSID: KBSID, LoaderID: LoaderID, AdminID: AdminID, CA: ca, Sim: sim, Store: st, Logs: logs, g: g}
	// A second gRPC server over the same services, in memory, for the
	// harness's own admin calls.
	gSetup := grpc.NewServer(append(srv.ServerOptions(), grpc.Creds(creds))...)
	srv.Register(gSetup)
	b.setup = bufconn.Listen(1 << 20)
	go gSetup.Serve(b.setup)
	t.Cleanup(gSetup.Stop)
	if o.Bufconn {
		b.buf = bufconn.Listen(1 << 20)
		b.Addr = "passthrough:///kbs.bufconn"
		b.lis = b.buf
	} else {
		lis, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatalf("clienttest: listen: %v", err)
		}
		b.Addr = lis.Addr().String()
		if o.Deferred {
			lis.Close() // nothing listens: clients get "connection refused"
		} else {
			b.lis = lis
		}
	}
	t.Cleanup(b.Stop)
	if !o.Deferred {
		b.Serve(t)
	}
	return b
}

// Serve starts a Deferred broker on its reserved address.
func (b *Broker) Serve(t testing.TB) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.stop || b.served {
		return
	}
	b.served = true
	if b.lis == nil {
		var lis net.Listener
		var err error
		// The port was released when it was reserved; another process may
		// hold it for a moment (TIME_WAIT does not block a listener).
		for i := 0; i < 50; i++ {
			if lis, err = net.Listen("tcp", b.Addr); err == nil || !errors.Is(err, syscall.EADDRINUSE) {
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
		if err != nil {
			t.Errorf("clienttest: listen on the reserved address %s: %v", b.Addr, err)
			return
		}
		b.lis = lis
	}
	go b.g.Serve(b.lis)
}

// Stop stops the broker at once.
func (b *Broker) Stop() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.stop = true
	b.g.Stop()
	if b.buf != nil {
		b.buf.Close()
	}
}

// DialOptions are what a client needs to reach a Bufconn broker (nil for
// TCP).
func (b *Broker) DialOptions() []grpc.DialOption {
	if b.buf == nil {
		return nil
	}
	return []grpc.DialOption{grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) {
		return b.buf.DialContext(ctx)
	})}
}

// Source returns an identity source holding a fresh SVID for id from the
// harness CA, with the CA as trust bundle.
func (b *Broker) Source(t testing.TB, id spiffeid.ID) identity.Source {
	t.Helper()
	svid, err := b.CA.Issue(id, time.Hour)
	if err != nil {
		t.Fatalf("clienttest: SVID for %s: %v", id, err)
	}
	return identity.NewStaticSource(svid, b.CA.Bundle())
}

// Quoter returns a quote provider for the simulator's default TD, which
// DefaultPolicy allows.
func (b *Broker) Quoter() quote.Provider { return quote.NewSimulated(b.Sim, b.Sim.DefaultTD()) }

// DefaultPolicy allows LoaderID (any ID under spiffe://example.org/ns/ml/)
// in the simulator's default TD.
func (b *Broker) DefaultPolicy() *kbsv1.Policy {
	d := b.Sim.DefaultTD()
	return &kbsv1.Policy{
		SpiffeIds: []string{"spiffe://example.org/ns/ml/*"},
		Mrtd:      []string{hex.EncodeToString(d.MRTD[:])},
		Rtmr0:     []string{hex.EncodeToString(d.RTMR[0][:])},
		Rtmr1:     []string{hex.EncodeToString(d.RTMR[1][:])},
		Rtmr2:     []string{hex.EncodeToString(d.RTMR[2][:])},
	}
}

// ImportKey creates keyID with a random DEK as version 1, puts policy on it
// (unless nil) and returns the DEK. It goes through AdminService as
// AdminID, on a connection of its own.
func (b *Broker) ImportKey(t testing.TB, keyID string, policy *kbsv1.Policy) []byte {
	t.Helper()
	dek := make([]byte, 32)
	rand.Read(dek)
	a := b.adminClient(t)
	ctx := context.Background()
	if _, err := a.ImportKey(ctx, &kbsv1.ImportKeyRequest{KeyId: keyID, KeyMaterial: dek}); err != nil {
		t.Fatalf("clienttest: ImportKey %s: %v", keyID, err)
	}
	if policy != nil {
		b.PutPolicy(t, keyID, policy)
	}
	return dek
}

// RotateKey adds a new random version to keyID and returns it and its DEK.
func (b *Broker) RotateKey(t testing.TB, keyID string) (uint32, []byte) {
	t.Helper()
	dek := make([]byte, 32)
	rand.Read(dek)
	resp, err := b.adminClient(t).ImportKey(context.Background(), &kbsv1.ImportKeyRequest{KeyId: keyID, KeyMaterial: dek, NewVersion: true})
	if err != nil {
		t.Fatalf("clienttest: ImportKey %s new version: %v", keyID, err)
	}
	return resp.GetKey().GetPrimaryVersion(), dek
}

// PutPolicy stores policy for keyID.
func (b *Broker) PutPolicy(t testing.TB, keyID string, policy *kbsv1.Policy) {
	t.Helper()
	if _, err := b.adminClient(t).PutPolicy(context.Background(), &kbsv1.PutPolicyRequest{KeyId: keyID, Policy: policy}); err != nil {
		t.Fatalf("clienttest: PutPolicy %s: %v", keyID, err)
	}
}

func (b *Broker) adminClient(t testing.TB) kbsv1.AdminServiceClient {
	t.Helper()
	creds, err := identity.ClientCredentials(b.Source(t, AdminID), KBSID)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := grpc.NewClient("passthrough:///kbs.setup",
		grpc.WithTransportCredentials(creds),
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return b.setup.DialContext(ctx) }))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return kbsv1.NewAdminServiceClient(conn)
}

// WriteSVIDFiles writes an SVID for the devca name (spiffe://example.org/
// plus name, e.g. "ns/ml/sa/loader") and the trust bundle into dir, and
// returns the three file paths, for the files mode of package identity.
func (b *Broker) WriteSVIDFiles(t testing.TB, dir, name string) (cert, key, bundle string) {
	t.Helper()
	if _, err := b.CA.WriteDir(dir, []string{name}, time.Hour); err != nil {
		t.Fatalf("clienttest: writing SVID files: %v", err)
	}
	c, k, err := devca.SVIDFiles(name)
	if err != nil {
		t.Fatal(err)
	}
	return filepath.Join(dir, c), filepath.Join(dir, k), filepath.Join(dir, devca.BundleFile)
}

// SyncBuffer is a bytes.Buffer safe for concurrent writers.
type SyncBuffer struct {
	mu sync.Mutex
	b  []byte
}

func (s *SyncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.b = append(s.b, p...)
	return len(p), nil
}

func (s *SyncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return string(s.b)
}
