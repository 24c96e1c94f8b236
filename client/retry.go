package client

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	kbsv1 "github.com/cml-project/cml/proto/cml/kbs/v1"
)

// Backoff between retries: exponential from retryBase to retryMax with ±20 %
// jitter, so many loaders started at once do not hammer the broker in step.
const (
	retryBase = 100 * time.Millisecond
	retryMax  = 5 * time.Second
)

type backoffTimer struct{ next time.Duration }

func newBackoff() *backoffTimer { return &backoffTimer{next: retryBase} }

// wait sleeps for the next backoff interval, or less if ctx ends first; it
// reports false if ctx ended (no time left to retry).
func (b *backoffTimer) wait(ctx context.Context) bool {
	d := b.next
	d += time.Duration((rand.Float64()*0.4 - 0.2) * float64(d))
	b.next = min(2*b.next, retryMax)
	if dl, ok := ctx.Deadline(); ok && time.Until(dl) < d {
		// Sleeping past the deadline would only report a timeout late; one
		// last attempt right at the deadline would fail anyway.
		return false
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// reasonTooManyChallenges is the reason code with which GetChallenge refuses
// a caller holding too many outstanding challenges (ResourceExhausted; see
// key_broker.proto). It clears as soon as one of them is used or expires.
const reasonTooManyChallenges = "too_many_challenges"

// retryable reports whether an attempt that failed with err may succeed
// later: the broker was unreachable (Unavailable: connection refused or
// reset, handshake failed, broker shutting down, collateral unavailable), an
// RPC ran into the WithTimeout limit, or GetChallenge was refused because
// too many challenges are outstanding (ResourceExhausted with the reason
// too_many_challenges: other loaders of the same SPIFFE ID, or of the whole
// broker, are mid-release). Never PermissionDenied, InvalidArgument,
// ResourceExhausted with another reason or none (a request too large stays
// too large), or any other answer of the broker.
func retryable(err error) bool {
	switch status.Code(err) {
	case codes.Unavailable, codes.DeadlineExceeded:
		return true
	case codes.ResourceExhausted:
		st, _ := status.FromError(err)
		reason, _ := errorDetail(st)
		return reason == reasonTooManyChallenges
	}
	return false
}

// do runs attempt until it succeeds, fails for good, or the WithRetry
// budget is spent (then the error is an *UnavailableError wrapping the last
// failure). Without WithRetry it runs attempt once. An attempt that failed
// because the broker's certificate was rejected is not retried: that is an
// impostor or a misconfiguration, not a slow start.
func (c *Client) do(ctx context.Context, attempt func(context.Context) error) error {
	parent := ctx
	if c.opts.retryWait > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, c.opts.retryWait)
		defer cancel()
	}
	b := newBackoff()
	// cause is the latest failure that made us retry. When the budget runs
	// out in the middle of an attempt, that attempt only says
	// DeadlineExceeded; the error then reports cause, which says why the
	// broker was not answering (too_many_challenges, connection refused).
	var cause error
	spent := func(err error) error {
		if cause != nil && status.Code(err) == codes.DeadlineExceeded && ctx.Err() != nil && parent.Err() == nil {
			err = cause
		}
		return &UnavailableError{What: "key broker", Err: err}
	}
	for {
		err := attempt(ctx)
		if err == nil {
			return nil
		}
		// Unavailable while the latest handshake rejected the broker's
		// certificate: the connection failed for that reason.
		if last := c.lastRejection.Load(); last != nil && status.Code(err) == codes.Unavailable {
			return fmt.Errorf("%w: %w (%w)", ErrServerIdentity, *last, err)
		}
		if c.opts.retryWait <= 0 || !retryable(err) || parent.Err() == context.Canceled {
			return err
		}
		if ctx.Err() != nil {
			return spent(err)
		}
		cause = err
		if status.Code(err) == codes.Unavailable {
			// Reconnect now rather than when gRPC's own backoff expires.
			c.conn.ResetConnectBackoff()
		}
		if !b.wait(ctx) {
			return spent(err)
		}
	}
}

// readOnlyMethods may be retried by the interceptor: repeating them changes
// nothing on the broker (beyond an audit record for some).
var readOnlyMethods = map[string]bool{
	kbsv1.AdminService_GetKey_FullMethodName:           true,
	kbsv1.AdminService_ListKeys_FullMethodName:         true,
	kbsv1.AdminService_GetPolicy_FullMethodName:        true,
	kbsv1.AdminService_ListPolicies_FullMethodName:     true,
	kbsv1.AdminService_TestPolicy_FullMethodName:       true,
	kbsv1.AdminService_ListAuditRecords_FullMethodName: true,
	kbsv1.AdminService_VerifyAuditLog_FullMethodName:   true,
}

// unaryInterceptor gives every RPC the WithTimeout limit, retries the
// read-only ones, and turns PermissionDenied into a *DeniedError.
func (c *Client) unaryInterceptor(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
	once := func(ctx context.Context) error {
		if c.opts.timeout > 0 {
			var cancel context.CancelFunc
			ctx, cancel = context.WithTimeout(ctx, c.opts.timeout)
			defer cancel()
		}
		return invoker(ctx, method, req, reply, cc, opts...)
	}
	var err error
	if readOnlyMethods[method] {
		err = c.do(ctx, once)
	} else {
		err = once(ctx)
	}
	return asDenied(err)
}

// asDenied turns a PermissionDenied status into a *DeniedError that keeps
// the status; other errors are returned as they are.
func asDenied(err error) error {
	var d *DeniedError
	if err == nil || errors.As(err, &d) {
		return err
	}
	st, ok := status.FromError(err)
	if !ok || st.Code() != codes.PermissionDenied {
		return err
	}
	reason, requestID := errorDetail(st)
	return &DeniedError{Reason: reason, RequestID: requestID, st: st}
}
