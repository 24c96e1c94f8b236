package identity_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"math/big"
	"strings"
	"testing"
	"time"

	"github.com/cml-project/cml/identity"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
)

func TestMTLSPeerID(t *testing.T) {
	ca := newCA(t, "example.org")
	addr, rec := startGRPC(t, serverCreds(t, staticSource(t, ca, kbsID), nil))
	loader := issue(t, ca, loaderID)

	serverCert, err := checkHealth(t, addr, clientCreds(t, identity.NewStaticSource(loader, ca.Bundle()), kbsID))
	if err != nil {
		t.Fatalf("health check over mTLS: %v", err)
	}
	if id, _ := x509svid.IDFromCert(serverCert); id != kbsID {
		t.Errorf("client saw server %s, want %s", id, kbsID)
	}
	calls := rec.all()
	if len(calls) != 1 || calls[0].id != loaderID || calls[0].serial != loader.Certificates[0].SerialNumber.String() {
		t.Fatalf("server saw %+v, want one call from %s", calls, loaderID)
	}
}

func TestServerTLSSettings(t *testing.T) {
	ca := newCA(t, "example.org")
	cfg, err := identity.ServerTLS(staticSource(t, ca, kbsID), nil)
	if err != nil {
		t.Fatal(err)
	}
	perConn, err := cfg.GetConfigForClient(&tls.ClientHelloInfo{})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []*tls.Config{cfg, perConn} {
		if c.MinVersion != tls.VersionTLS13 || c.ClientAuth != tls.RequireAndVerifyClientCert || !c.SessionTicketsDisabled {
			t.Errorf("MinVersion=%x ClientAuth=%v SessionTicketsDisabled=%v", c.MinVersion, c.ClientAuth, c.SessionTicketsDisabled)
		}
	}
	if perConn.ClientCAs == nil || !perConn.ClientCAs.Equal(certPool(ca.Certificate())) {
		t.Error("per-connection ClientCAs is not the trust domain bundle")
	}
	ccfg, err := identity.ClientTLS(staticSource(t, ca, loaderID), kbsID)
	if err != nil {
		t.Fatal(err)
	}
	if ccfg.MinVersion != tls.VersionTLS13 || ccfg.GetClientCertificate == nil || ccfg.VerifyPeerCertificate == nil {
		t.Errorf("client config: MinVersion=%x callbacks set: %v %v", ccfg.MinVersion, ccfg.GetClientCertificate != nil, ccfg.VerifyPeerCertificate != nil)
	}
}

func certPool(certs ...*x509.Certificate) *x509.CertPool {
	p := x509.NewCertPool()
	for _, c := range certs {
		p.AddCert(c)
	}
	return p
}

func TestServerRefusesClientWithoutCertificate(t *testing.T) {
	ca := newCA(t, "example.org")
	serverCfg, err := identity.ServerTLS(staticSource(t, ca, kbsID), nil)
	if err != nil {
		t.Fatal(err)
	}
	// The client verifies nothing and has no certificate.
	noCert := &tls.Config{MinVersion: tls.VersionTLS13, InsecureSkipVerify: true}
	serverErr, clientErr, _ := rawHandshake(t, serverCfg, noCert)
	if serverErr == nil || !strings.Contains(serverErr.Error(), "client didn't provide a certificate") {
		t.Errorf("server error = %v", serverErr)
	}
	if clientErr == nil || !strings.Contains(clientErr.Error(), "certificate required") {
		t.Errorf("client error = %v", clientErr)
	}

	addr, rec := startGRPC(t, credentials.NewTLS(serverCfg))
	_, err = checkHealth(t, addr, credentials.NewTLS(noCert))
	if status.Code(err) != codes.Unavailable {
		t.Errorf("RPC without a client certificate: %v, want Unavailable", err)
	}
	if n := len(rec.all()); n != 0 {
		t.Errorf("handler ran %d times without a client certificate", n)
	}
}

func TestServerRefusesOtherTrustDomain(t *testing.T) {
	ca := newCA(t, "example.org")
	serverCfg, err := identity.ServerTLS(staticSource(t, ca, kbsID), nil)
	if err != nil {
		t.Fatal(err)
	}
	evil := newCA(t, "evil.test")
	// Another CA that claims the same trust domain name.
	rogue := newCA(t, "example.org")
	tests := []struct {
		name       string
		svid       *x509svid.SVID
		serverWant string
	}{
		{"foreign trust domain", issue(t, evil, spiffeid.RequireFromString("spiffe://evil.test/loader")), "certificate signed by unknown authority"},
		{"rogue CA for our trust domain", issue(t, rogue, loaderID), "certificate signed by unknown authority"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			// The client trusts the server; only its own SVID is foreign.
			src := identity.NewStaticSource(tc.svid, x509bundle.NewSet(ca.Bundle(), evil.Bundle()))
			clientCfg, err := identity.ClientTLS(src, kbsID)
			if err != nil {
				t.Fatal(err)
			}
			serverErr, clientErr, _ := rawHandshake(t, serverCfg, clientCfg)
			if serverErr == nil || !strings.Contains(serverErr.Error(), tc.serverWant) {
				t.Errorf("server error = %v, want %q", serverErr, tc.serverWant)
			}
			if clientErr == nil || !strings.Contains(clientErr.Error(), "unknown certificate authority") {
				t.Errorf("client error = %v", clientErr)
			}

			addr, rec := startGRPC(t, credentials.NewTLS(serverCfg))
			if _, err := checkHealth(t, addr, credentials.NewTLS(clientCfg)); status.Code(err) != codes.Unavailable {
				t.Errorf("RPC: %v, want Unavailable", err)
			}
			if n := len(rec.all()); n != 0 {
				t.Errorf("handler ran %d times", n)
			}
		})
	}
}

// TestServerRejectsFederatedBundle: even if the server's source carries the
// bundle of another trust domain (federation), a client of that domain is
// refused — the default is the server's own trust domain only.
func TestServerRejectsFederatedBundle(t *testing.T) {
	ca := newCA(t, "example.org")
	evil := newCA(t, "evil.test")
	serverSrc := identity.NewStaticSource(issue(t, ca, kbsID), x509bundle.NewSet(ca.Bundle(), evil.Bundle()))
	serverCfg, err := identity.ServerTLS(serverSrc, tlsconfig.AuthorizeAny())
	if err != nil {
		t.Fatal(err)
	}
	clientSrc := identity.NewStaticSource(issue(t, evil, spiffeid.RequireFromString("spiffe://evil.test/loader")), ca.Bundle())
	clientCfg, _ := identity.ClientTLS(clientSrc, kbsID)
	serverErr, _, _ := rawHandshake(t, serverCfg, clientCfg)
	if serverErr == nil {
		t.Fatal("client of a federated trust domain was accepted")
	}
}

func TestServerRefusesExpiredClient(t *testing.T) {
	ca := newCA(t, "example.org")
	serverCfg, err := identity.ServerTLS(staticSource(t, ca, kbsID), nil)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	expired, err := ca.IssueValidity(loaderID, now.Add(-2*time.Hour), now.Add(-time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	notYet, err := ca.IssueValidity(loaderID, now.Add(time.Hour), now.Add(2*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	for name, svid := range map[string]*x509svid.SVID{"expired": expired, "not yet valid": notYet} {
		t.Run(name, func(t *testing.T) {
			clientCfg, _ := identity.ClientTLS(identity.NewStaticSource(svid, ca.Bundle()), kbsID)
			serverErr, clientErr, _ := rawHandshake(t, serverCfg, clientCfg)
			if serverErr == nil || !strings.Contains(serverErr.Error(), "certificate has expired or is not yet valid") {
				t.Errorf("server error = %v", serverErr)
			}
			if clientErr == nil || !strings.Contains(clientErr.Error(), "expired certificate") {
				t.Errorf("client error = %v", clientErr)
			}
			addr, rec := startGRPC(t, credentials.NewTLS(serverCfg))
			if _, err := checkHealth(t, addr, credentials.NewTLS(clientCfg)); status.Code(err) != codes.Unavailable {
				t.Errorf("RPC: %v, want Unavailable", err)
			}
			if n := len(rec.all()); n != 0 {
				t.Errorf("handler ran %d times", n)
			}
		})
	}
}

func TestServerAuthorizer(t *testing.T) {
	ca := newCA(t, "example.org")
	addr, rec := startGRPC(t, serverCreds(t, staticSource(t, ca, kbsID), tlsconfig.AuthorizeID(loaderID)))
	if _, err := checkHealth(t, addr, clientCreds(t, staticSource(t, ca, loaderID), kbsID)); err != nil {
		t.Fatalf("authorized loader: %v", err)
	}
	admin := spiffeid.RequireFromPath(td, "/admin")
	if _, err := checkHealth(t, addr, clientCreds(t, staticSource(t, ca, admin), kbsID)); status.Code(err) != codes.Unavailable {
		t.Fatalf("unauthorized admin: %v, want Unavailable", err)
	}
	if calls := rec.all(); len(calls) != 1 || calls[0].id != loaderID {
		t.Fatalf("calls = %+v", calls)
	}

	serverCfg, _ := identity.ServerTLS(staticSource(t, ca, kbsID), tlsconfig.AuthorizeID(loaderID))
	clientCfg, _ := identity.ClientTLS(staticSource(t, ca, admin), kbsID)
	serverErr, _, _ := rawHandshake(t, serverCfg, clientCfg)
	if serverErr == nil || !strings.Contains(serverErr.Error(), "client spiffe://example.org/admin not authorized") {
		t.Fatalf("server error = %v", serverErr)
	}
}

func TestClientRefusesWrongServer(t *testing.T) {
	ca := newCA(t, "example.org")
	evil := newCA(t, "evil.test")
	now := time.Now()
	expiredKBS, err := ca.IssueValidity(kbsID, now.Add(-2*time.Hour), now.Add(-time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name   string
		server identity.Source
		want   string
	}{
		{"impostor ID in our trust domain", staticSource(t, ca, spiffeid.RequireFromPath(td, "/impostor")),
			"server presented SPIFFE ID spiffe://example.org/impostor, expected spiffe://example.org/kbs"},
		{"another workload's SVID", staticSource(t, ca, loaderID), "server presented SPIFFE ID spiffe://example.org/loader"},
		{"right path, other trust domain", identity.NewStaticSource(issue(t, evil, spiffeid.RequireFromString("spiffe://evil.test/kbs")), evil.Bundle()),
			`no X.509 bundle found for trust domain: "evil.test"`},
		{"rogue CA", staticSource(t, newCA(t, "example.org"), kbsID), "certificate signed by unknown authority"},
		{"expired server SVID", identity.NewStaticSource(expiredKBS, ca.Bundle()), "certificate has expired"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			serverCfg, err := identity.ServerTLS(tc.server, tlsconfig.AuthorizeAny())
			if err != nil {
				t.Fatal(err)
			}
			clientCfg, err := identity.ClientTLS(staticSource(t, ca, loaderID), kbsID)
			if err != nil {
				t.Fatal(err)
			}
			_, clientErr, _ := rawHandshake(t, serverCfg, clientCfg)
			if clientErr == nil || !strings.Contains(clientErr.Error(), tc.want) {
				t.Fatalf("client error = %v, want %q", clientErr, tc.want)
			}
			addr, rec := startGRPC(t, credentials.NewTLS(serverCfg))
			if _, err := checkHealth(t, addr, credentials.NewTLS(clientCfg)); status.Code(err) != codes.Unavailable {
				t.Errorf("RPC: %v, want Unavailable", err)
			}
			if n := len(rec.all()); n != 0 {
				t.Errorf("handler ran %d times", n)
			}
		})
	}
}

func TestClientTLSRequiresServerID(t *testing.T) {
	ca := newCA(t, "example.org")
	src := staticSource(t, ca, loaderID)
	if _, err := identity.ClientTLS(src, spiffeid.ID{}); err == nil || !strings.Contains(err.Error(), "expected server SPIFFE ID is required") {
		t.Errorf("zero server ID: %v", err)
	}
	if _, err := identity.ClientCredentials(src, spiffeid.ID{}); err == nil {
		t.Error("ClientCredentials accepted a zero server ID")
	}
	if _, err := identity.ClientTLS(src, td.ID()); err == nil || !strings.Contains(err.Error(), "names a trust domain") {
		t.Errorf("trust domain ID as server ID: %v", err)
	}
	if _, err := identity.ClientTLS(nil, kbsID); err == nil {
		t.Error("ClientTLS accepted a nil source")
	}
	if _, err := identity.ServerTLS(nil, nil); err == nil {
		t.Error("ServerTLS accepted a nil source")
	}
	if _, err := identity.ServerTLS(identity.NewStaticSource(nil, ca.Bundle()), nil); err == nil {
		t.Error("ServerTLS accepted a source without an SVID")
	}
}

func TestTLS12Refused(t *testing.T) {
	ca := newCA(t, "example.org")
	serverCfg, _ := identity.ServerTLS(staticSource(t, ca, kbsID), nil)
	loader := issue(t, ca, loaderID)
	old := &tls.Config{
		MaxVersion:           tls.VersionTLS12,
		InsecureSkipVerify:   true,
		GetClientCertificate: tlsconfig.GetClientCertificate(loader),
	}
	serverErr, _, _ := rawHandshake(t, serverCfg, old)
	if serverErr == nil || !strings.Contains(serverErr.Error(), "client offered only unsupported versions") {
		t.Fatalf("TLS 1.2 client: server error = %v", serverErr)
	}
}

// TestConfigsFollowTheSource: one tls.Config, the source's SVID replaced in
// between, and each new handshake presents the current SVID on both sides.
func TestConfigsFollowTheSource(t *testing.T) {
	ca := newCA(t, "example.org")
	server := &swapSource{bundle: ca.Bundle()}
	server.svid.Store(issue(t, ca, kbsID))
	client := &swapSource{bundle: ca.Bundle()}
	client.svid.Store(issue(t, ca, loaderID))

	addr, rec := startGRPC(t, serverCreds(t, server, nil))
	creds := clientCreds(t, client, kbsID)
	for i := range 3 {
		if i > 0 {
			server.svid.Store(issue(t, ca, kbsID))
			client.svid.Store(issue(t, ca, loaderID))
		}
		serverCert, err := checkHealth(t, addr, creds)
		if err != nil {
			t.Fatalf("round %d: %v", i, err)
		}
		if want := server.svid.Load().Certificates[0].SerialNumber; serverCert.SerialNumber.Cmp(want) != 0 {
			t.Errorf("round %d: server presented serial %s, want the current %s", i, serverCert.SerialNumber, want)
		}
		calls := rec.all()
		if got, want := calls[len(calls)-1].serial, client.svid.Load().Certificates[0].SerialNumber.String(); got != want {
			t.Errorf("round %d: server saw client serial %s, want the current %s", i, got, want)
		}
	}
}

func TestPeerIDErrors(t *testing.T) {
	ca := newCA(t, "example.org")
	leaf := issue(t, ca, loaderID).Certificates[0]
	tests := []struct {
		name string
		ctx  context.Context
		want string
	}{
		{"no peer", context.Background(), "no gRPC peer"},
		{"not TLS", peer.NewContext(context.Background(), &peer.Peer{AuthInfo: fakeAuthInfo{}}), "connection is not TLS"},
		{"no auth info", peer.NewContext(context.Background(), &peer.Peer{}), "connection is not TLS"},
		// What a client-side connection or a server without client
		// verification looks like: a certificate, but no verified chain.
		{"unverified certificate", peer.NewContext(context.Background(), &peer.Peer{AuthInfo: credentials.TLSInfo{
			State:    tls.ConnectionState{PeerCertificates: []*x509.Certificate{leaf}},
			SPIFFEID: loaderID.URL(),
		}}), "was not verified"},
		{"verified trust domain ID", peer.NewContext(context.Background(), &peer.Peer{AuthInfo: credentials.TLSInfo{
			State: tls.ConnectionState{VerifiedChains: [][]*x509.Certificate{{ca.Certificate()}}},
		}}), "names trust domain spiffe://example.org"},
		{"verified chain without URI SAN", peer.NewContext(context.Background(), &peer.Peer{AuthInfo: credentials.TLSInfo{
			State: tls.ConnectionState{VerifiedChains: [][]*x509.Certificate{{plainCert(t)}}},
		}}), "certificate contains no URI SAN"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			id, err := identity.PeerID(tc.ctx)
			if !errors.Is(err, identity.ErrNoPeerID) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("PeerID = %s, %v; want ErrNoPeerID with %q", id, err, tc.want)
			}
			if !id.IsZero() {
				t.Fatalf("PeerID returned %s with an error", id)
			}
		})
	}
	ok := peer.NewContext(context.Background(), &peer.Peer{AuthInfo: credentials.TLSInfo{
		State: tls.ConnectionState{VerifiedChains: [][]*x509.Certificate{{leaf, ca.Certificate()}}},
	}})
	if id, err := identity.PeerID(ok); err != nil || id != loaderID {
		t.Fatalf("PeerID = %s, %v", id, err)
	}
}

// plainCert is an ordinary TLS server certificate: a DNS name, no SPIFFE ID.
func plainCert(t *testing.T) *x509.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "kbs.example.org"},
		DNSNames: []string{"kbs.example.org"}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

type fakeAuthInfo struct{}

func (fakeAuthInfo) AuthType() string { return "fake" }

// BenchmarkMTLSHandshake measures one full TLS 1.3 mutual handshake over
// loopback with ServerTLS and ClientTLS (ECDSA P-256 SVIDs, both chains
// verified, the server's twice).
func BenchmarkMTLSHandshake(b *testing.B) {
	ca := newCA(b, "example.org")
	serverCfg, err := identity.ServerTLS(staticSource(b, ca, kbsID), nil)
	if err != nil {
		b.Fatal(err)
	}
	clientCfg, err := identity.ClientTLS(staticSource(b, ca, loaderID), kbsID)
	if err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		if serverErr, clientErr, _ := rawHandshake(b, serverCfg, clientCfg); serverErr != nil || clientErr != nil {
			b.Fatal(serverErr, clientErr)
		}
	}
}
