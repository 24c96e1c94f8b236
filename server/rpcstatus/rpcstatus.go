package rpcstatus

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/cml-project/cml/identity"
	kbsv1 "github.com/cml-project/cml/proto/cml/kbs/v1"
	"github.com/cml-project/cml/server/policy"
	"github.com/cml-project/cml/server/store"
)

// RequestIDHeader is the response header that carries the request id of
// every call, successful or not.
const RequestIDHeader = "cml-request-id"

// Error is an error on its way to becoming a gRPC status: the code, the
// stable reason code, an optional message that is safe to show the caller,
// and the inner error, which only the log sees.
type Error struct {
	Code   codes.Code
	Reason string
	// Message, if set, is the status message; it must hold nothing but
	// facts about the caller's own input (validation errors). Empty: the
	// status message is the reason code.
	Message string
	// Err is the cause, for the log only.
	Err error
}

func (e *Error) Error() string {
	switch {
	case e.Err != nil:
		return fmt.Sprintf("rpcstatus: %s: %v", e.Reason, e.Err)
	case e.Message != "":
		return fmt.Sprintf("rpcstatus: %s: %s", e.Reason, e.Message)
	}
	return "rpcstatus: " + e.Reason
}

func (e *Error) Unwrap() error { return e.Err }

// New returns an error with the given code and reason; err is logged, never
// returned to the caller.
func New(code codes.Code, reason string, err error) *Error {
	return &Error{Code: code, Reason: reason, Err: err}
}

// Deny returns a PermissionDenied error with reason; err is logged only.
func Deny(reason string, err error) *Error {
	return &Error{Code: codes.PermissionDenied, Reason: reason, Err: err}
}

// Invalid returns an InvalidArgument error (reason invalid_argument) whose
// message, formatted from the arguments, is shown to the caller: it must
// describe the caller's own input and contain no secret.
func Invalid(format string, args ...any) *Error {
	msg := fmt.Sprintf(format, args...)
	return &Error{Code: codes.InvalidArgument, Reason: policy.ReasonInvalidArgument, Message: msg, Err: errors.New(msg)}
}

// Classify returns err as an *Error: itself if it is one (anywhere in its
// chain), else by its cause: context errors, the keystore's sentinels (as
// the admin service reports them), and anything else as Internal.
func Classify(err error) *Error {
	if err == nil {
		return nil
	}
	if e, ok := errors.AsType[*Error](err); ok {
		return e
	}
	switch {
	case errors.Is(err, context.Canceled):
		return New(codes.Canceled, policy.ReasonCanceled, err)
	case errors.Is(err, context.DeadlineExceeded):
		return New(codes.DeadlineExceeded, policy.ReasonDeadlineExceeded, err)
	case errors.Is(err, identity.ErrNoPeerID):
		return New(codes.Unauthenticated, policy.ReasonUnauthenticated, err)
	case errors.Is(err, store.ErrKeyNotFound):
		return New(codes.NotFound, policy.ReasonKeyNotFound, err)
	case errors.Is(err, store.ErrVersionNotFound):
		return New(codes.NotFound, policy.ReasonKeyVersionNotFound, err)
	case errors.Is(err, store.ErrPolicyNotFound):
		return New(codes.NotFound, policy.ReasonNoPolicy, err)
	case errors.Is(err, store.ErrKeyExists):
		return New(codes.AlreadyExists, policy.ReasonKeyExists, err)
	case errors.Is(err, store.ErrKeyDestroyed):
		return New(codes.FailedPrecondition, policy.ReasonKeyDestroyed, err)
	case errors.Is(err, store.ErrKeyDisabled):
		return New(codes.FailedPrecondition, policy.ReasonKeyDisabled, err)
	case errors.Is(err, store.ErrInvalidArgument):
		// The keystore's validation messages name the caller's input (key
		// id, label, sizes) and never key material, so the admin sees them.
		return &Error{Code: codes.InvalidArgument, Reason: policy.ReasonInvalidArgument, Message: err.Error(), Err: err}
	case errors.Is(err, store.ErrPrimaryVersion):
		// The request is well-formed; the key's state (which version is
		// primary) forbids it. The message names the key and version and
		// says what to do instead (rotate, or destroy the key).
		return &Error{Code: codes.FailedPrecondition, Reason: policy.ReasonPrimaryVersion, Message: err.Error(), Err: err}
	}
	return New(codes.Internal, policy.ReasonInternal, err)
}

// ReasonOf returns the reason code Classify assigns to err, or "" for nil.
func ReasonOf(err error) string {
	if err == nil {
		return ""
	}
	return Classify(err).Reason
}

// Status converts err into the status returned to the caller: code, message
// (the public message, or just the reason code) and an ErrorDetail with the
// reason code and request id. The inner error text is never included.
func Status(err error, requestID string) *status.Status {
	e := Classify(err)
	msg := e.Message
	if msg == "" {
		msg = e.Reason
	}
	st := status.New(e.Code, msg)
	if d, derr := st.WithDetails(&kbsv1.ErrorDetail{ReasonCode: e.Reason, RequestId: requestID}); derr == nil {
		st = d
	}
	return st
}

// DetailOf extracts the ErrorDetail from an error returned by a client
// call, or nil if it has none.
func DetailOf(err error) *kbsv1.ErrorDetail {
	st, ok := status.FromError(err)
	if !ok {
		return nil
	}
	for _, d := range st.Details() {
		if ed, ok := d.(*kbsv1.ErrorDetail); ok {
			return ed
		}
	}
	return nil
}

type requestIDKey struct{}

// WithRequestID returns ctx carrying the request id.
func WithRequestID(ctx context.Context, id string) context.Context {
	return context.WithValue(ctx, requestIDKey{}, id)
}

// RequestID returns the request id the interceptor put in ctx, or "".
func RequestID(ctx context.Context) string {
	id, _ := ctx.Value(requestIDKey{}).(string)
	return id
}

// NewRequestID returns 16 lowercase hex characters (64 random bits) from r.
func NewRequestID(r io.Reader) (string, error) {
	var b [8]byte
	if _, err := io.ReadFull(r, b[:]); err != nil {
		return "", fmt.Errorf("rpcstatus: read random request id: %w", err)
	}
	return hex.EncodeToString(b[:]), nil
}

// Options configure the interceptor.
type Options struct {
	// Logger receives one line per call. Required.
	Logger *slog.Logger
	// Rand is the source of request ids. Required.
	Rand io.Reader
	// Now times calls. Required.
	Now func() time.Time
}

// UnaryInterceptor is the outermost interceptor: it gives each call a
// request id (in the context, and in the cml-request-id response header),
// turns the error of any inner interceptor or handler into a status with an
// ErrorDetail, and logs the call once with its method, caller, request id,
// code, reason, duration and inner error.
func UnaryInterceptor(opts Options) grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		start := opts.Now()
		id, err := NewRequestID(opts.Rand)
		if err != nil {
			opts.Logger.LogAttrs(ctx, slog.LevelError, "rpc", slog.String("method", info.FullMethod), slog.String("error", err.Error()))
			return nil, Status(New(codes.Internal, policy.ReasonInternal, err), "").Err()
		}
		ctx = WithRequestID(ctx, id)
		_ = grpc.SetHeader(ctx, metadata.Pairs(RequestIDHeader, id)) // fails only outside a real RPC (tests calling the interceptor directly)
		resp, herr := handler(ctx, req)
		attrs := []slog.Attr{
			slog.String("method", info.FullMethod),
			slog.String("caller", callerString(ctx)),
			slog.String("request_id", id),
			slog.Duration("duration", opts.Now().Sub(start)),
		}
		if herr == nil {
			opts.Logger.LogAttrs(ctx, slog.LevelInfo, "rpc", append(attrs, slog.String("code", codes.OK.String()))...)
			return resp, nil
		}
		e := Classify(herr)
		attrs = append(attrs, slog.String("code", e.Code.String()), slog.String("reason", e.Reason))
		if e.Err != nil {
			attrs = append(attrs, slog.String("error", e.Err.Error()))
		}
		opts.Logger.LogAttrs(ctx, levelOf(e.Code), "rpc", attrs...)
		return nil, Status(e, id).Err()
	}
}

func callerString(ctx context.Context) string {
	id, err := identity.PeerID(ctx)
	if err != nil {
		return ""
	}
	return id.String()
}

// levelOf: the caller's problems are warnings, the server's are errors.
func levelOf(c codes.Code) slog.Level {
	switch c {
	case codes.Internal, codes.Unknown, codes.DataLoss, codes.Unavailable, codes.Unimplemented:
		return slog.LevelError
	}
	return slog.LevelWarn
}
