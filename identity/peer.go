package identity

import (
	"context"
	"errors"
	"fmt"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
)

// ErrNoPeerID is returned (wrapped) by PeerID when the connection carries no
// verified SPIFFE ID. A server maps it to codes.Unauthenticated.
var ErrNoPeerID = errors.New("identity: no verified peer SPIFFE ID")

// PeerID returns the SPIFFE ID of the gRPC caller, taken only from the leaf
// of the peer certificate chain that the TLS handshake verified
// (credentials.TLSInfo.State.VerifiedChains) — never from request data, and
// not from gRPC's own TLSInfo.SPIFFEID, which is read from the unverified
// peer certificates. It works on servers built with ServerTLS or
// ServerCredentials; on any other connection it returns an error wrapping
// ErrNoPeerID.
func PeerID(ctx context.Context) (spiffeid.ID, error) {
	p, ok := peer.FromContext(ctx)
	if !ok || p == nil {
		return spiffeid.ID{}, fmt.Errorf("%w: no gRPC peer in the context", ErrNoPeerID)
	}
	info, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok {
		return spiffeid.ID{}, fmt.Errorf("%w: connection is not TLS (auth info %T)", ErrNoPeerID, p.AuthInfo)
	}
	chains := info.State.VerifiedChains
	if len(chains) == 0 || len(chains[0]) == 0 {
		return spiffeid.ID{}, fmt.Errorf("%w: the peer certificate was not verified", ErrNoPeerID)
	}
	id, err := x509svid.IDFromCert(chains[0][0])
	if err != nil {
		return spiffeid.ID{}, fmt.Errorf("%w: verified peer certificate: %v", ErrNoPeerID, err)
	}
	if id.Path() == "" {
		return spiffeid.ID{}, fmt.Errorf("%w: verified peer certificate names trust domain %s, not a workload", ErrNoPeerID, id)
	}
	return id, nil
}
