package admin

import (
	"errors"
	"io"
	"log/slog"
	"time"

	kbsv1 "github.com/cml-project/cml/proto/cml/kbs/v1"
	"github.com/cml-project/cml/server/broker"
	"github.com/cml-project/cml/server/store"
)

// Config configures the administration service.
type Config struct {
	Store *store.Store
	// Verifier checks quotes for TestPolicy.
	Verifier broker.Verifier
	// Simulated: the verifier trusts the TDX simulator's root.
	Simulated bool
	Now       func() time.Time // required
	Rand      io.Reader        // required
	Logger    *slog.Logger     // required
}

// Service implements kbsv1.AdminServiceServer.
type Service struct {
	kbsv1.UnimplementedAdminServiceServer
	cfg Config
}

var _ kbsv1.AdminServiceServer = (*Service)(nil)

// New returns the service for cfg.
func New(cfg Config) (*Service, error) {
	if cfg.Store == nil || cfg.Verifier == nil || cfg.Now == nil || cfg.Rand == nil || cfg.Logger == nil {
		return nil, errors.New("admin: Store, Verifier, Now, Rand and Logger are required")
	}
	return &Service{cfg: cfg}, nil
}
