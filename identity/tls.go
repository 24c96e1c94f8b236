package identity

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"google.golang.org/grpc/credentials"
)

// Authorizer decides whether a peer's verified SPIFFE ID may connect; it is
// go-spiffe's tlsconfig.Authorizer, so tlsconfig.AuthorizeID,
// AuthorizeOneOf, AuthorizeMemberOf… fit.
type Authorizer = tlsconfig.Authorizer

// ServerTLS returns a TLS 1.3 server configuration that presents the
// source's current SVID and requires every client to present an X.509-SVID
// that chains to the current bundle of the server's own trust domain and
// that authorize accepts. A nil authorize admits any ID of the trust domain
// (the broker authorizes each RPC itself). A client without a certificate,
// from another trust domain, with an expired or otherwise invalid SVID fails
// the handshake.
//
// The client chain is verified twice: by crypto/tls against the bundle (a
// per-connection configuration from GetConfigForClient, so the verified
// chains reach credentials.TLSInfo and PeerID), then by go-spiffe's X.509-SVID
// rules (exactly one SPIFFE URI SAN, leaf not a CA). Session tickets are off:
// every connection is a full handshake against the current bundle.
func ServerTLS(src Source, authorize Authorizer) (*tls.Config, error) {
	if src == nil {
		return nil, errors.New("identity: server TLS needs an identity source")
	}
	svid, err := src.GetX509SVID()
	if err != nil {
		return nil, fmt.Errorf("identity: server SVID: %w", err)
	}
	td := svid.ID.TrustDomain()
	if authorize == nil {
		authorize = tlsconfig.AuthorizeMemberOf(td)
	}
	bundles := trustDomainBundle{src: src, td: td}

	verify := func(raw [][]byte, _ [][]*x509.Certificate) error {
		id, chains, err := x509svid.ParseAndVerify(raw, bundles)
		if err != nil {
			return fmt.Errorf("identity: client X.509-SVID rejected: %w", err)
		}
		if !id.MemberOf(td) {
			// Unreachable: bundles only serves td. Kept as the invariant.
			return fmt.Errorf("identity: client %s is not in trust domain %s", id, td)
		}
		if err := authorize(id, chains); err != nil {
			return fmt.Errorf("identity: client %s not authorized: %w", id, err)
		}
		return nil
	}
	getCert := tlsconfig.GetCertificate(src)
	newConfig := func() *tls.Config {
		return &tls.Config{
			MinVersion:             tls.VersionTLS13,
			ClientAuth:             tls.RequireAndVerifyClientCert,
			GetCertificate:         getCert,
			VerifyPeerCertificate:  verify,
			SessionTicketsDisabled: true,
		}
	}
	cfg := newConfig()
	cfg.GetConfigForClient = func(*tls.ClientHelloInfo) (*tls.Config, error) {
		b, err := bundles.GetX509BundleForTrustDomain(td)
		if err != nil {
			return nil, err
		}
		pool := x509.NewCertPool()
		for _, c := range b.X509Authorities() {
			pool.AddCert(c)
		}
		c := newConfig()
		c.ClientCAs = pool
		return c, nil
	}
	return cfg, nil
}

// ClientTLS returns a TLS 1.3 client configuration that presents the
// source's current SVID and accepts the server only if it presents a valid
// X.509-SVID (against the source's current bundle) for exactly serverID. A
// zero serverID is an error: the loader must never talk to an impostor.
//
// Host name verification is replaced by this SPIFFE ID check, so the
// address dialled does not need to appear in the server certificate.
// crypto/tls therefore leaves the client side's verified chains empty and
// PeerID works only on the server side; the client already knows the
// server's ID, since no other is accepted.
func ClientTLS(src Source, serverID spiffeid.ID) (*tls.Config, error) {
	if src == nil {
		return nil, errors.New("identity: client TLS needs an identity source")
	}
	if serverID.IsZero() {
		return nil, errors.New("identity: the expected server SPIFFE ID is required")
	}
	if serverID.Path() == "" {
		return nil, fmt.Errorf("identity: expected server SPIFFE ID %s names a trust domain, not a workload", serverID)
	}
	return &tls.Config{
		MinVersion:           tls.VersionTLS13,
		GetClientCertificate: tlsconfig.GetClientCertificate(src),
		// Standard verification needs a DNS name in the server certificate;
		// VerifyPeerCertificate below verifies the chain and the SPIFFE ID.
		InsecureSkipVerify: true,
		VerifyPeerCertificate: func(raw [][]byte, _ [][]*x509.Certificate) error {
			id, _, err := x509svid.ParseAndVerify(raw, src)
			if err != nil {
				return fmt.Errorf("identity: server X.509-SVID rejected: %w", err)
			}
			if id != serverID {
				return fmt.Errorf("identity: server presented SPIFFE ID %s, expected %s", id, serverID)
			}
			return nil
		},
	}, nil
}

// ServerCredentials is ServerTLS as gRPC transport credentials.
func ServerCredentials(src Source, authorize Authorizer) (credentials.TransportCredentials, error) {
	cfg, err := ServerTLS(src, authorize)
	if err != nil {
		return nil, err
	}
	return credentials.NewTLS(cfg), nil
}

// ClientCredentials is ClientTLS as gRPC transport credentials.
func ClientCredentials(src Source, serverID spiffeid.ID) (credentials.TransportCredentials, error) {
	cfg, err := ClientTLS(src, serverID)
	if err != nil {
		return nil, err
	}
	return credentials.NewTLS(cfg), nil
}

// trustDomainBundle serves only one trust domain's bundle from src, so a
// server never accepts a client of a federated domain.
type trustDomainBundle struct {
	src x509bundle.Source
	td  spiffeid.TrustDomain
}

func (b trustDomainBundle) GetX509BundleForTrustDomain(td spiffeid.TrustDomain) (*x509bundle.Bundle, error) {
	if td != b.td {
		return nil, fmt.Errorf("identity: trust domain %q is not accepted (only %q)", td.Name(), b.td.Name())
	}
	bundle, err := b.src.GetX509BundleForTrustDomain(td)
	if err != nil {
		return nil, fmt.Errorf("identity: trust bundle for %q: %w", td.Name(), err)
	}
	if bundle.Empty() {
		return nil, fmt.Errorf("identity: trust bundle for %q is empty", td.Name())
	}
	return bundle, nil
}
