package server

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/keepalive"

	kbsv1 "github.com/cml-project/cml/proto/cml/kbs/v1"
	"github.com/cml-project/cml/server/admin"
	"github.com/cml-project/cml/server/authz"
	"github.com/cml-project/cml/server/broker"
	"github.com/cml-project/cml/server/rpcstatus"
	"github.com/cml-project/cml/server/store"
	"github.com/cml-project/cml/tdx/verifier"
)

// Defaults for Config.
const (
	DefaultChallengeTTL           = broker.DefaultChallengeTTL
	DefaultMaxChallengesPerCaller = broker.DefaultMaxChallengesPerCaller
	DefaultMaxChallenges          = broker.DefaultMaxChallenges
	// DefaultMaxRequestBytes bounds a request message. A ReleaseKeyRequest
	// is a quote (at most 64 KiB, about 5 KiB in practice) plus a public key
	// (at most 1216 bytes); an ImportKey or PutPolicy is much smaller.
	DefaultMaxRequestBytes = 256 << 10
)

// Connection settings of ServerOptions.
const (
	// MaxConnectionAge bounds how long a connection lives, so a client
	// whose SVID rotated (or was not renewed) handshakes again against the
	// current bundle: mTLS is checked per connection, not per call.
	MaxConnectionAge      = 30 * time.Minute
	MaxConnectionAgeGrace = 30 * time.Second
	MaxConnectionIdle     = 5 * time.Minute
	// KeepaliveTime and KeepaliveTimeout: the server pings an idle client
	// after KeepaliveTime and drops it if no answer comes in
	// KeepaliveTimeout.
	KeepaliveTime    = 2 * time.Minute
	KeepaliveTimeout = 20 * time.Second
	// KeepaliveMinTime: clients pinging more often are disconnected.
	KeepaliveMinTime = 20 * time.Second
	// MaxConcurrentStreams per connection.
	MaxConcurrentStreams = 64
	// ConnectionTimeout bounds the TLS handshake of a new connection.
	ConnectionTimeout = 10 * time.Second
)

// QuoteVerifier checks that a TDX quote is authentic and returns its claims.
// *verifier.Verifier implements it. An authentic quote whose TCB status is
// not UpToDate comes back as a *verifier.Error with Claims set; the key's
// policy decides whether that status is acceptable.
type QuoteVerifier interface {
	Verify(ctx context.Context, quote []byte) (*verifier.Claims, error)
}

var _ QuoteVerifier = (*verifier.Verifier)(nil)

// Metrics receives what the server observes besides RPC counts (which a
// gRPC interceptor of the metrics implementation counts). The cmd/kbs
// Prometheus metrics (server/metrics) implement it.
type Metrics interface {
	// ReleaseDecision counts one ReleaseKey outcome: decision "allow" or
	// "deny", reason a stable reason code ("ok" for an allow).
	ReleaseDecision(decision, reason string)
	// QuoteVerified records how long one quote verification took.
	QuoteVerified(d time.Duration)
}

// Config configures the server. Zero values mean the documented default;
// Store, Verifier and Now are required.
type Config struct {
	// Store is the open keystore: keys, policies and the audit log.
	Store *store.Store
	// Verifier checks TDX quotes (ReleaseKey and TestPolicy).
	Verifier QuoteVerifier
	// Simulated says the verifier trusts the TDX simulator's root
	// (development only): audit records of decisions on a quote are marked
	// simulated, TestPolicy reports it, and New logs a warning.
	Simulated bool

	// AdminIDs hold the admin role (every RPC); AuditorIDs the auditor role
	// (read-only AdminService RPCs). Each entry is an exact SPIFFE ID or a
	// prefix "spiffe://td/path/*". Every caller holds the loader role
	// (KeyBrokerService), which a key's policy then restricts.
	AdminIDs   []string
	AuditorIDs []string

	// ChallengeTTL is how long a GetChallenge nonce stays valid
	// (DefaultChallengeTTL if 0).
	ChallengeTTL time.Duration
	// MaxChallengesPerCaller bounds the outstanding (issued, unconsumed,
	// unexpired) challenges of one SPIFFE ID; MaxChallenges bounds them all.
	// Beyond either, GetChallenge fails with ResourceExhausted
	// "too_many_challenges" (DefaultMaxChallengesPerCaller,
	// DefaultMaxChallenges if 0).
	MaxChallengesPerCaller int
	MaxChallenges          int
	// MaxRequestBytes bounds a request message (grpc.MaxRecvMsgSize);
	// larger requests fail with ResourceExhausted before any handler runs
	// (DefaultMaxRequestBytes if 0).
	MaxRequestBytes int

	// Now is the clock. Required (cmd/kbs passes time.Now; tests pin it).
	Now func() time.Time
	// Rand is the source of challenge nonces and request ids; nil means
	// crypto/rand.Reader. (New keys come from the store's own Options.Rand.)
	Rand io.Reader
	// Logger receives one line per call and the server's warnings; nil
	// discards them.
	Logger *slog.Logger
	// Metrics; nil records nothing.
	Metrics Metrics
}

// Server is the key broker's gRPC services, ready to be registered.
type Server struct {
	cfg    Config
	authz  *authz.Authorizer
	broker *broker.Service
	admin  *admin.Service
}

// New checks cfg, applies defaults and builds the services.
func New(cfg Config) (*Server, error) {
	if cfg.Store == nil {
		return nil, errors.New("server: Config.Store is required")
	}
	if cfg.Verifier == nil {
		return nil, errors.New("server: Config.Verifier is required")
	}
	if cfg.Now == nil {
		return nil, errors.New("server: Config.Now is required")
	}
	if cfg.ChallengeTTL < 0 || cfg.MaxChallengesPerCaller < 0 || cfg.MaxChallenges < 0 || cfg.MaxRequestBytes < 0 {
		return nil, errors.New("server: ChallengeTTL, MaxChallengesPerCaller, MaxChallenges and MaxRequestBytes must not be negative")
	}
	if cfg.ChallengeTTL == 0 {
		cfg.ChallengeTTL = DefaultChallengeTTL
	}
	if cfg.MaxChallengesPerCaller == 0 {
		cfg.MaxChallengesPerCaller = DefaultMaxChallengesPerCaller
	}
	if cfg.MaxChallenges == 0 {
		cfg.MaxChallenges = DefaultMaxChallenges
	}
	if cfg.MaxChallengesPerCaller > cfg.MaxChallenges {
		return nil, fmt.Errorf("server: MaxChallengesPerCaller (%d) exceeds MaxChallenges (%d)", cfg.MaxChallengesPerCaller, cfg.MaxChallenges)
	}
	if cfg.MaxRequestBytes == 0 {
		cfg.MaxRequestBytes = DefaultMaxRequestBytes
	}
	if cfg.Rand == nil {
		cfg.Rand = rand.Reader
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	az, err := authz.New(cfg.AdminIDs, cfg.AuditorIDs)
	if err != nil {
		return nil, fmt.Errorf("server: %w", err)
	}
	var m broker.Metrics
	if cfg.Metrics != nil {
		m = cfg.Metrics
	}
	b, err := broker.New(broker.Config{
		Store:                  cfg.Store,
		Verifier:               cfg.Verifier,
		Simulated:              cfg.Simulated,
		ChallengeTTL:           cfg.ChallengeTTL,
		MaxChallengesPerCaller: cfg.MaxChallengesPerCaller,
		MaxChallenges:          cfg.MaxChallenges,
		Now:                    cfg.Now,
		Rand:                   cfg.Rand,
		Logger:                 cfg.Logger,
		Metrics:                m,
	})
	if err != nil {
		return nil, fmt.Errorf("server: %w", err)
	}
	a, err := admin.New(admin.Config{
		Store:     cfg.Store,
		Verifier:  cfg.Verifier,
		Simulated: cfg.Simulated,
		Now:       cfg.Now,
		Rand:      cfg.Rand,
		Logger:    cfg.Logger,
	})
	if err != nil {
		return nil, fmt.Errorf("server: %w", err)
	}
	if cfg.Simulated {
		cfg.Logger.Warn("the quote verifier trusts the TDX SIMULATOR's root: releases prove nothing about real hardware; development only",
			slog.Bool("simulated", true))
	}
	if len(cfg.AdminIDs) == 0 {
		cfg.Logger.Warn("no admin SPIFFE IDs configured: every AdminService write is denied")
	}
	return &Server{cfg: cfg, authz: az, broker: b, admin: a}, nil
}

// ServerOptions returns the grpc.ServerOptions the services need: the
// interceptor chain (request id, logging and error-to-status conversion,
// then authorization), the request size limit and the connection settings.
// Add the transport credentials (identity.ServerCredentials) and, if wanted,
// a metrics interceptor; a metrics interceptor placed before these sees the
// final status codes.
func (s *Server) ServerOptions() []grpc.ServerOption {
	return []grpc.ServerOption{
		grpc.ChainUnaryInterceptor(
			rpcstatus.UnaryInterceptor(rpcstatus.Options{Logger: s.cfg.Logger, Rand: s.cfg.Rand, Now: s.cfg.Now}),
			s.authz.UnaryInterceptor(s.cfg.Store, s.cfg.Logger),
		),
		grpc.ChainStreamInterceptor(s.authz.StreamInterceptor()),
		grpc.MaxRecvMsgSize(s.cfg.MaxRequestBytes),
		grpc.MaxConcurrentStreams(MaxConcurrentStreams),
		grpc.ConnectionTimeout(ConnectionTimeout),
		grpc.KeepaliveParams(keepalive.ServerParameters{
			MaxConnectionIdle:     MaxConnectionIdle,
			MaxConnectionAge:      MaxConnectionAge,
			MaxConnectionAgeGrace: MaxConnectionAgeGrace,
			Time:                  KeepaliveTime,
			Timeout:               KeepaliveTimeout,
		}),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{
			MinTime:             KeepaliveMinTime,
			PermitWithoutStream: true,
		}),
	}
}

// Register registers KeyBrokerService and AdminService on g. g must have
// been created with ServerOptions (and mTLS credentials): without the
// authorization interceptor every handler refuses to run.
func (s *Server) Register(g *grpc.Server) {
	kbsv1.RegisterKeyBrokerServiceServer(g, s.broker)
	kbsv1.RegisterAdminServiceServer(g, s.admin)
}
