package main

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/cml-project/cml/client"
	kbsv1 "github.com/cml-project/cml/proto/cml/kbs/v1"
)

// explain is exercised end to end by every online command's test; these
// cases cover the errors a live broker does not easily produce.
func TestExplain(t *testing.T) {
	c := &conn{addr: "kbs:8443", timeout: 5 * time.Second}
	withDetail := func(code codes.Code, msg, reason string) error {
		st, err := status.New(code, msg).WithDetails(&kbsv1.ErrorDetail{ReasonCode: reason, RequestId: "r1"})
		if err != nil {
			t.Fatal(err)
		}
		return st.Err()
	}
	canceled, cancel := context.WithCancel(t.Context())
	cancel()
	for _, tc := range []struct {
		ctx  context.Context
		err  error
		code int
		msg  string
	}{
		{t.Context(), &client.DeniedError{Reason: "not_authorized", RequestID: "r2"}, exitRefused,
			"op: denied by the key broker: not authorized (not_authorized, request id r2); kbsctl's SPIFFE ID must be in the broker's admin list"},
		{t.Context(), fmt.Errorf("client: ExportKey: %w", withDetail(codes.NotFound, "key_not_found", "key_not_found")), exitFailure,
			"op: no such key (key_not_found, request id r1)"},
		{t.Context(), withDetail(codes.InvalidArgument, "policy: invalid: mrtd[0]: bad", "invalid_argument"), exitFailure,
			"op: policy: invalid: mrtd[0]: bad (invalid_argument, request id r1)"},
		{t.Context(), status.Error(codes.DeadlineExceeded, "deadline"), exitFailure,
			"op: no answer from the key broker at kbs:8443 within 5s; retry, or raise --timeout"},
		{t.Context(), status.Error(codes.Unauthenticated, "unauthenticated"), exitFailure,
			"op: the key broker did not accept kbsctl's identity"},
		{t.Context(), status.Error(codes.Internal, "internal"), exitFailure, "op: internal"},
		{t.Context(), fmt.Errorf("%w: x", client.ErrServerIdentity), exitFailure, "op: the server at kbs:8443 is not the key broker kbsctl expects"},
		{t.Context(), errors.New("hpke: open failed"), exitFailure, "op: hpke: open failed"},
		{canceled, status.Error(codes.Canceled, "context canceled"), exitInterrupted, "op: interrupted"},
	} {
		err := c.explain(tc.ctx, "op", tc.err, nil)
		e := &env{}
		if got := e.exitCode(tc.ctx, err); got != tc.code || !strings.HasPrefix(err.Error(), tc.msg) {
			t.Errorf("%v: exit %d %q; want %d %q", tc.err, got, err, tc.code, tc.msg)
		}
	}
}
