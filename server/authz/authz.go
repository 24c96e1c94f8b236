package authz

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"path"
	"slices"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"

	"github.com/cml-project/cml/identity"
	kbsv1 "github.com/cml-project/cml/proto/cml/kbs/v1"
	"github.com/cml-project/cml/server/audit"
	"github.com/cml-project/cml/server/policy"
	"github.com/cml-project/cml/server/rpcstatus"
	"github.com/cml-project/cml/server/store"
)

// Role is what a caller may do.
type Role string

// Roles.
const (
	// Loader is any authenticated caller; the handler decides from the
	// key's release policy whether it gets anything.
	Loader Role = "loader"
	// Admin may call every RPC.
	Admin Role = "admin"
	// Auditor may call the read-only AdminService RPCs.
	Auditor Role = "auditor"
)

// table lists, for every RPC served on the broker's listener, the roles
// allowed to call it. A method not in the table is denied.
var table = map[string][]Role{
	kbsv1.KeyBrokerService_GetChallenge_FullMethodName: {Loader},
	kbsv1.KeyBrokerService_ReleaseKey_FullMethodName:   {Loader},

	kbsv1.AdminService_CreateKey_FullMethodName:  {Admin},
	kbsv1.AdminService_ImportKey_FullMethodName:  {Admin},
	kbsv1.AdminService_RotateKey_FullMethodName:  {Admin},
	kbsv1.AdminService_DisableKey_FullMethodName: {Admin},
	kbsv1.AdminService_EnableKey_FullMethodName:  {Admin},
	kbsv1.AdminService_DestroyKey_FullMethodName: {Admin},
	kbsv1.AdminService_PutPolicy_FullMethodName:  {Admin},
	kbsv1.AdminService_ExportKey_FullMethodName:  {Admin},

	kbsv1.AdminService_GetKey_FullMethodName:           {Admin, Auditor},
	kbsv1.AdminService_ListKeys_FullMethodName:         {Admin, Auditor},
	kbsv1.AdminService_GetPolicy_FullMethodName:        {Admin, Auditor},
	kbsv1.AdminService_ListPolicies_FullMethodName:     {Admin, Auditor},
	kbsv1.AdminService_TestPolicy_FullMethodName:       {Admin, Auditor},
	kbsv1.AdminService_ListAuditRecords_FullMethodName: {Admin, Auditor},
	kbsv1.AdminService_VerifyAuditLog_FullMethodName:   {Admin, Auditor},
}

// Table returns a copy of the authorization table: full method name → roles
// allowed.
func Table() map[string][]Role {
	out := make(map[string][]Role, len(table))
	for m, r := range table {
		out[m] = slices.Clone(r)
	}
	return out
}

// Methods returns the full method names of the table, sorted.
func Methods() []string { return slices.Sorted(maps.Keys(table)) }

// AuditAppender records a denied call. *store.Store implements it.
type AuditAppender interface {
	AppendAudit(ctx context.Context, e audit.Entry) (audit.Record, error)
}

// Authorizer maps callers to roles and enforces the table.
type Authorizer struct {
	admins   []policy.IDPattern
	auditors []policy.IDPattern
}

// New returns an Authorizer whose admin and auditor roles are held by the
// SPIFFE IDs matching adminIDs and auditorIDs (exact IDs or
// "spiffe://td/path/*" prefixes). An invalid pattern is an error naming it.
func New(adminIDs, auditorIDs []string) (*Authorizer, error) {
	admins, err := parsePatterns("admin", adminIDs)
	if err != nil {
		return nil, err
	}
	auditors, err := parsePatterns("auditor", auditorIDs)
	if err != nil {
		return nil, err
	}
	return &Authorizer{admins: admins, auditors: auditors}, nil
}

func parsePatterns(role string, ss []string) ([]policy.IDPattern, error) {
	out := make([]policy.IDPattern, 0, len(ss))
	for i, s := range ss {
		p, err := policy.ParseIDPattern(s)
		if err != nil {
			return nil, fmt.Errorf("authz: %s IDs[%d]: %v", role, i, err)
		}
		out = append(out, p)
	}
	return out, nil
}

// Roles returns the roles id holds: always Loader, plus Admin and Auditor
// when id matches their patterns.
func (a *Authorizer) Roles(id spiffeid.ID) []Role {
	if id.IsZero() {
		return nil
	}
	roles := []Role{Loader}
	if policy.MatchAny(a.admins, id) {
		roles = append(roles, Admin)
	}
	if policy.MatchAny(a.auditors, id) {
		roles = append(roles, Auditor)
	}
	return roles
}

// ErrNotAuthorized is wrapped by Authorize's denials.
var ErrNotAuthorized = errors.New("authz: not authorized")

// Authorize returns the role under which id may call method, preferring the
// most specific (admin, then auditor, then loader), or an error wrapping
// ErrNotAuthorized. A method the table does not list is denied.
func (a *Authorizer) Authorize(method string, id spiffeid.ID) (Role, error) {
	allowed, ok := table[method]
	if !ok {
		return "", fmt.Errorf("%w: %s is not in the authorization table", ErrNotAuthorized, method)
	}
	held := a.Roles(id)
	for _, want := range []Role{Admin, Auditor, Loader} {
		if slices.Contains(allowed, want) && slices.Contains(held, want) {
			return want, nil
		}
	}
	return "", fmt.Errorf("%w: %s holds %v, %s needs one of %v", ErrNotAuthorized, id, held, method, allowed)
}

// Grant is what the interceptor established about a call.
type Grant struct {
	Caller spiffeid.ID
	Role   Role
}

type grantKey struct{}

// FromContext returns the grant the interceptor put in ctx. Handlers refuse
// to run without one, so a server built without the interceptor fails
// closed.
func FromContext(ctx context.Context) (Grant, bool) {
	g, ok := ctx.Value(grantKey{}).(Grant)
	return g, ok && !g.Caller.IsZero()
}

// Require returns the caller's grant from ctx, or the error a handler must
// return when the authorization interceptor did not run.
func Require(ctx context.Context) (Grant, error) {
	g, ok := FromContext(ctx)
	if !ok {
		return Grant{}, rpcstatus.Deny(policy.ReasonNotAuthorized, errors.New("authz: no authorization grant in the context; the server was built without the authorization interceptor"))
	}
	return g, nil
}

// WithGrant returns ctx carrying g. Only the interceptor and tests of
// handlers call it.
func WithGrant(ctx context.Context, g Grant) context.Context {
	return context.WithValue(ctx, grantKey{}, g)
}

// UnaryInterceptor enforces the table. It takes the caller's SPIFFE ID from
// the verified peer certificate (identity.PeerID); a call without one is
// Unauthenticated. A denied call is PermissionDenied "not_authorized" and,
// when log is not nil, one audit record (operation = method name, the key
// id if the request names one). It must run inside
// rpcstatus.UnaryInterceptor, which supplies the request id.
func (a *Authorizer) UnaryInterceptor(log AuditAppender, logger *slog.Logger) grpc.UnaryServerInterceptor {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		caller, err := identity.PeerID(ctx)
		if err != nil {
			return nil, rpcstatus.New(codes.Unauthenticated, policy.ReasonUnauthenticated, err)
		}
		role, err := a.Authorize(info.FullMethod, caller)
		if err != nil {
			if log != nil {
				e := audit.Entry{
					RequestID: rpcstatus.RequestID(ctx),
					Caller:    caller.String(),
					Operation: path.Base(info.FullMethod),
					Decision:  audit.Deny,
					Reasons:   []string{policy.ReasonNotAuthorized},
				}
				if k, ok := req.(interface{ GetKeyId() string }); ok && store.ValidateKeyID(k.GetKeyId()) == nil {
					e.KeyID = k.GetKeyId()
				}
				if _, aerr := log.AppendAudit(context.WithoutCancel(ctx), e); aerr != nil {
					logger.LogAttrs(ctx, slog.LevelError, "audit append failed", slog.String("operation", e.Operation), slog.String("request_id", e.RequestID), slog.String("error", aerr.Error()))
				}
			}
			return nil, rpcstatus.Deny(policy.ReasonNotAuthorized, err)
		}
		return handler(WithGrant(ctx, Grant{Caller: caller, Role: role}), req)
	}
}

// StreamInterceptor denies every streaming call: the services have none,
// so any stream (reflection, health watch) registered on the broker's
// server by mistake is refused rather than served unauthorised.
func (a *Authorizer) StreamInterceptor() grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		return rpcstatus.Status(rpcstatus.Deny(policy.ReasonNotAuthorized, fmt.Errorf("%w: streaming method %s", ErrNotAuthorized, info.FullMethod)), "").Err()
	}
}
