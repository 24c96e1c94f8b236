package client

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"io/fs"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/credentials"

	"github.com/cml-project/cml/identity"
	kbsv1 "github.com/cml-project/cml/proto/cml/kbs/v1"
)

// ErrNoServerID is returned by New without WithServerID: a client never
// talks to a broker whose identity it does not know.
var ErrNoServerID = errors.New("client: the broker's SPIFFE ID is required (WithServerID)")

// ErrServerIdentity is wrapped by the errors of calls that failed because
// the broker presented a certificate that is not a valid X.509-SVID for the
// expected SPIFFE ID (an impostor or a misconfiguration). Such calls are
// never retried.
var ErrServerIdentity = errors.New("client: key broker identity rejected")

// Client is a connection to a key broker (kbs). It is safe for concurrent
// use. The connection is made lazily, at the first call, and re-made when it
// breaks.
type Client struct {
	opts      options
	conn      *grpc.ClientConn
	src       identity.Source
	ownSource bool
	// lastRejection is the error of the latest TLS handshake if the
	// broker's certificate was rejected in it, nil if it was accepted.
	lastRejection atomic.Pointer[error]

	broker kbsv1.KeyBrokerServiceClient
	admin  kbsv1.AdminServiceClient
}

// New returns a client of the broker at addr ("host:port", or any gRPC
// target). WithServerID and exactly one identity option (WithWorkloadAPI,
// WithSVIDFiles or WithSource) are required.
//
// With WithRetry, New waits up to maxWait for the identity source: a SPIRE
// agent that is not up yet, or SVID files that do not exist yet.
func New(ctx context.Context, addr string, opts ...Option) (*Client, error) {
	var o options
	for _, opt := range opts {
		opt(&o)
	}
	if addr == "" {
		return nil, errors.New("client: the key broker address is empty")
	}
	if o.serverID.IsZero() {
		return nil, ErrNoServerID
	}
	if o.serverID.Path() == "" {
		return nil, fmt.Errorf("client: broker SPIFFE ID %s names a trust domain, not a workload", o.serverID)
	}
	haveCfg := o.idCfg.Socket != "" || o.idCfg.SVIDCert != "" || o.idCfg.SVIDKey != "" || o.idCfg.Bundle != ""
	if (o.src != nil) == haveCfg {
		return nil, errors.New("client: exactly one of WithWorkloadAPI, WithSVIDFiles and WithSource is required")
	}
	if o.timeout < 0 || o.retryWait < 0 {
		return nil, errors.New("client: timeout and retry wait must not be negative")
	}

	c := &Client{opts: o, src: o.src}
	if c.src == nil {
		src, err := c.openSource(ctx)
		if err != nil {
			return nil, err
		}
		c.src, c.ownSource = src, true
	}
	tlsCfg, err := identity.ClientTLS(c.src, o.serverID)
	if err != nil {
		c.closeSource()
		return nil, fmt.Errorf("client: %w", err)
	}
	verify := tlsCfg.VerifyPeerCertificate
	tlsCfg.VerifyPeerCertificate = func(raw [][]byte, chains [][]*x509.Certificate) error {
		err := verify(raw, chains)
		if err != nil {
			c.lastRejection.Store(&err)
		} else {
			c.lastRejection.Store(nil)
		}
		return err
	}
	dial := []grpc.DialOption{
		grpc.WithTransportCredentials(credentials.NewTLS(tlsCfg)),
		// Reconnect quickly: the loader typically starts before the broker
		// or the network is ready, and each retry also resets the backoff.
		grpc.WithConnectParams(grpc.ConnectParams{
			Backoff:           backoff.Config{BaseDelay: 100 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: 5 * time.Second},
			MinConnectTimeout: 10 * time.Second,
		}),
		grpc.WithChainUnaryInterceptor(c.unaryInterceptor),
	}
	dial = append(dial, o.dialOpts...)
	conn, err := grpc.NewClient(addr, dial...)
	if err != nil {
		c.closeSource()
		return nil, fmt.Errorf("client: broker address %q: %w", addr, err)
	}
	c.conn = conn
	c.broker = kbsv1.NewKeyBrokerServiceClient(conn)
	c.admin = kbsv1.NewAdminServiceClient(conn)
	return c, nil
}

// openSource opens the identity source of the options, retrying within the
// retry budget while it is not available yet.
func (c *Client) openSource(ctx context.Context) (identity.Source, error) {
	cfg := c.opts.idCfg
	if c.opts.retryWait <= 0 {
		src, err := identity.Open(ctx, cfg)
		if err != nil {
			return nil, fmt.Errorf("client: %w", err)
		}
		return src, nil
	}
	ctx, cancel := context.WithTimeout(ctx, c.opts.retryWait)
	defer cancel()
	var lastErr error
	for b := newBackoff(); ; {
		src, err := identity.Open(ctx, cfg)
		if err == nil {
			return src, nil
		}
		lastErr = err
		// Files that exist but do not parse are a configuration error, not
		// a slow start: only their absence is waited out.
		if cfg.Socket == "" && !errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("client: %w", err)
		}
		if !b.wait(ctx) {
			return nil, &UnavailableError{What: "identity source", Err: lastErr}
		}
	}
}

func (c *Client) closeSource() {
	if c.ownSource && c.src != nil {
		c.src.Close()
	}
}

// Close closes the connection, and the identity source if New opened it
// (not one given with WithSource).
func (c *Client) Close() error {
	err := c.conn.Close()
	if c.ownSource {
		if e := c.src.Close(); e != nil && err == nil {
			err = e
		}
	}
	return err
}

// Admin returns the raw AdminService client, for kbsctl. Every call gets the
// WithTimeout timeout; WithRetry retries only the read-only methods (a
// state-changing call that failed with Unavailable may or may not have taken
// effect: check, then repeat it yourself).
func (c *Client) Admin() kbsv1.AdminServiceClient { return c.admin }

// KeyBroker returns the raw KeyBrokerService client. ReleaseKey is the
// whole protocol; use this only to exercise the service directly.
func (c *Client) KeyBroker() kbsv1.KeyBrokerServiceClient { return c.broker }

// UnavailableError reports that the broker (or the identity source) could
// not be reached within the retry budget, or was still refusing challenges
// with too_many_challenges when it ran out. Err is the last failure; it keeps
// its gRPC status, so status.Code(err) is Unavailable, DeadlineExceeded or
// ResourceExhausted.
type UnavailableError struct {
	What string // "key broker" or "identity source"
	Err  error
}

func (e *UnavailableError) Error() string {
	return "client: " + e.What + " unavailable: " + e.Err.Error()
}

func (e *UnavailableError) Unwrap() error { return e.Err }
