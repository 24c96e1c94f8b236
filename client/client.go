package client

import (
	"context"
	"errors"

	"google.golang.org/grpc"

	"github.com/cml-project/cml/identity"
	kbsv1 "github.com/cml-project/cml/proto/cml/kbs/v1"
	"github.com/cml-project/cml/tdx/quote"
)

// Client is a connection to a key broker. It is safe for concurrent use.
type Client struct {
	opts      options
	conn      *grpc.ClientConn
	src       identity.Source
	ownSource bool
	broker    kbsv1.KeyBrokerServiceClient
	admin     kbsv1.AdminServiceClient
}

// New returns a client of the broker at addr.
func New(ctx context.Context, addr string, opts ...Option) (*Client, error) {
	return nil, errors.New("client: not implemented yet")
}

// Close closes the connection, and the identity source if New opened it.
func (c *Client) Close() error { return nil }

// Admin returns the raw AdminService client.
func (c *Client) Admin() kbsv1.AdminServiceClient { return c.admin }

// KeyBroker returns the raw KeyBrokerService client.
func (c *Client) KeyBroker() kbsv1.KeyBrokerServiceClient { return c.broker }

// ReleasedKey is a key released by the broker, in clear.
type ReleasedKey struct {
	KeyID         string
	Version       uint32
	Algorithm     string
	PolicyVersion uint32 // 0 for an export
	RequestID     string
	Key           []byte
}

// Zero overwrites the key bytes.
func (k *ReleasedKey) Zero() {
	if k != nil {
		clear(k.Key)
	}
}

// ReleaseKey runs the key release protocol.
func (c *Client) ReleaseKey(ctx context.Context, keyID string, version uint32, qp quote.Provider) (*ReleasedKey, error) {
	return nil, errors.New("client: not implemented yet")
}

// ExportKey exports a key version to an administrator.
func (c *Client) ExportKey(ctx context.Context, keyID string, version uint32) (*ReleasedKey, error) {
	return nil, errors.New("client: not implemented yet")
}
