package broker

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"time"

	kbsv1 "github.com/cml-project/cml/proto/cml/kbs/v1"
	"github.com/cml-project/cml/server/audit"
	"github.com/cml-project/cml/server/store"
	"github.com/cml-project/cml/tdx/verifier"
)

// Defaults for Config.
const (
	DefaultChallengeTTL           = 60 * time.Second
	DefaultMaxChallengesPerCaller = 16
	DefaultMaxChallenges          = 100_000
)

// Store is the part of the keystore the broker uses. *store.Store
// implements it.
type Store interface {
	GetPolicy(ctx context.Context, id string, version uint32) (store.Policy, error)
	UnwrapKey(ctx context.Context, id string, version uint32) ([]byte, uint32, error)
	AppendAudit(ctx context.Context, e audit.Entry) (audit.Record, error)
}

var _ Store = (*store.Store)(nil)

// Verifier checks a TDX quote. *verifier.Verifier implements it.
type Verifier interface {
	Verify(ctx context.Context, quote []byte) (*verifier.Claims, error)
}

var _ Verifier = (*verifier.Verifier)(nil)

// Metrics receives release decisions and quote verification times; the
// cmd/kbs Prometheus metrics implement it.
type Metrics interface {
	ReleaseDecision(decision, reason string)
	QuoteVerified(d time.Duration)
}

// Config configures the key release service.
type Config struct {
	Store    Store
	Verifier Verifier
	// Simulated marks every audit record of a verified quote as simulated
	// (the verifier trusts the TDX simulator's root).
	Simulated bool

	ChallengeTTL           time.Duration // 0: DefaultChallengeTTL
	MaxChallengesPerCaller int           // 0: DefaultMaxChallengesPerCaller
	MaxChallenges          int           // 0: DefaultMaxChallenges

	Now     func() time.Time // required
	Rand    io.Reader        // required
	Logger  *slog.Logger     // required
	Metrics Metrics          // nil: none
}

// Service implements kbsv1.KeyBrokerServiceServer.
type Service struct {
	kbsv1.UnimplementedKeyBrokerServiceServer
	cfg Config
}

var _ kbsv1.KeyBrokerServiceServer = (*Service)(nil)

// New returns the service for cfg.
func New(cfg Config) (*Service, error) {
	if cfg.Store == nil || cfg.Verifier == nil || cfg.Now == nil || cfg.Rand == nil || cfg.Logger == nil {
		return nil, errors.New("broker: Store, Verifier, Now, Rand and Logger are required")
	}
	return &Service{cfg: cfg}, nil
}
