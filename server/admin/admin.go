package admin

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"time"

	"google.golang.org/grpc/codes"

	kbsv1 "github.com/cml-project/cml/proto/cml/kbs/v1"
	"github.com/cml-project/cml/server/audit"
	"github.com/cml-project/cml/server/authz"
	"github.com/cml-project/cml/server/policy"
	"github.com/cml-project/cml/server/rpcstatus"
	"github.com/cml-project/cml/server/store"
	"github.com/cml-project/cml/tdx/verifier"
)

// Verifier checks a TDX quote (TestPolicy). *verifier.Verifier implements
// it.
type Verifier interface {
	Verify(ctx context.Context, quote []byte) (*verifier.Claims, error)
}

var _ Verifier = (*verifier.Verifier)(nil)

// Config configures the administration service.
type Config struct {
	Store *store.Store
	// Verifier checks quotes for TestPolicy.
	Verifier Verifier
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

// call runs one RPC body under the caller's grant and writes its audit
// record: operation op, the key id if valid, decision allow when fn
// succeeded and deny with the error's reason code otherwise. fn fills in
// what else the record should hold (versions, digests, details). A call
// whose record cannot be written fails with Internal.
func (s *Service) call(ctx context.Context, op, keyID string, fn func(e *audit.Entry) error) error {
	g, err := authz.Require(ctx)
	if err != nil {
		return err
	}
	e := audit.Entry{RequestID: rpcstatus.RequestID(ctx), Caller: g.Caller.String(), Operation: op}
	if keyID != "" && store.ValidateKeyID(keyID) == nil {
		e.KeyID = keyID
	}
	ferr := fn(&e)
	if ferr != nil {
		e.Decision = audit.Deny
		e.Reasons = []string{rpcstatus.ReasonOf(ferr)}
	} else {
		e.Decision = audit.Allow
	}
	if aerr := s.audit(ctx, e); aerr != nil && ferr == nil {
		return rpcstatus.New(codes.Internal, policy.ReasonInternal, fmt.Errorf("admin: %s carried out but not audited: %w", op, aerr))
	}
	return ferr
}

// audit appends e (audit.Append: even if the caller has gone away).
func (s *Service) audit(ctx context.Context, e audit.Entry) error {
	return audit.Append(ctx, s.cfg.Store, s.cfg.Logger, e)
}

// validKeyID is the InvalidArgument error for a malformed key id, or nil.
func validKeyID(id string) error {
	if err := store.ValidateKeyID(id); err != nil {
		return rpcstatus.Invalid("key_id: %v", err)
	}
	return nil
}
