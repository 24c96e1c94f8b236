package rpcstatus

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"testing/iotest"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/cml-project/cml/identity"
	"github.com/cml-project/cml/server/audit"
	"github.com/cml-project/cml/server/store"
)

func TestClassify(t *testing.T) {
	for _, tc := range []struct {
		err    error
		code   codes.Code
		reason string
	}{
		{Deny("mrtd_not_allowed", errors.New("inner")), codes.PermissionDenied, "mrtd_not_allowed"},
		{fmt.Errorf("wrapped: %w", Deny("debug_td", nil)), codes.PermissionDenied, "debug_td"},
		{context.Canceled, codes.Canceled, "canceled"},
		{fmt.Errorf("x: %w", context.DeadlineExceeded), codes.DeadlineExceeded, "deadline_exceeded"},
		{fmt.Errorf("%w: no peer", identity.ErrNoPeerID), codes.Unauthenticated, "unauthenticated"},
		{fmt.Errorf("%w: \"k\"", store.ErrKeyNotFound), codes.NotFound, "key_not_found"},
		{store.ErrVersionNotFound, codes.NotFound, "key_version_not_found"},
		{store.ErrPolicyNotFound, codes.NotFound, "no_policy"},
		{store.ErrKeyExists, codes.AlreadyExists, "key_exists"},
		{store.ErrKeyDestroyed, codes.FailedPrecondition, "key_destroyed"},
		{store.ErrKeyDisabled, codes.FailedPrecondition, "key_disabled"},
		{store.ErrInvalidArgument, codes.InvalidArgument, "invalid_argument"},
		{fmt.Errorf("%w: version 2 of key \"k\" is primary", store.ErrPrimaryVersion), codes.FailedPrecondition, "primary_version"},
		{store.ErrCorrupt, codes.Internal, "internal"},
		{audit.ErrInvalid, codes.Internal, "internal"},
		{errors.New("anything"), codes.Internal, "internal"},
	} {
		e := Classify(tc.err)
		if e.Code != tc.code || e.Reason != tc.reason {
			t.Errorf("Classify(%v) = %s %s, want %s %s", tc.err, e.Code, e.Reason, tc.code, tc.reason)
		}
	}
	if Classify(nil) != nil || ReasonOf(nil) != "" {
		t.Error("nil error classified")
	}
}

func TestStatusHidesInnerError(t *testing.T) {
	secret := "INNER-DETAIL-with-certificate-names"
	for _, err := range []error{
		Deny("pck_revoked", errors.New(secret)),
		New(codes.Internal, "internal", errors.New(secret)),
		fmt.Errorf("%w: %s", store.ErrKeyNotFound, secret),
		errors.New(secret),
	} {
		st := Status(err, "0123456789abcdef")
		if strings.Contains(st.Message(), secret) || strings.Contains(fmt.Sprint(st.Proto()), secret) {
			t.Errorf("status of %v leaks the inner error: %v", err, st.Proto())
		}
		d := DetailOf(st.Err())
		if d.GetReasonCode() != Classify(err).Reason || d.GetRequestId() != "0123456789abcdef" || st.Message() != d.GetReasonCode() {
			t.Errorf("status of %v = %v", err, st.Proto())
		}
	}
	// Validation messages are the caller's own input and are shown.
	st := Status(Invalid("key_id: %q is too long", "x"), "r")
	if st.Code() != codes.InvalidArgument || st.Message() != `key_id: "x" is too long` {
		t.Errorf("invalid = %v", st.Proto())
	}
	if DetailOf(errors.New("plain")) != nil || DetailOf(status.Error(codes.Internal, "x")) != nil {
		t.Error("DetailOf invents a detail")
	}
}

func TestInterceptor(t *testing.T) {
	var buf bytes.Buffer
	log := slog.New(slog.NewJSONHandler(&buf, nil))
	now := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	ic := UnaryInterceptor(Options{Logger: log, Rand: rand.Reader, Now: func() time.Time { return now }})
	info := &grpc.UnaryServerInfo{FullMethod: "/cml.kbs.v1.KeyBrokerService/ReleaseKey"}

	var seen string
	resp, err := ic(context.Background(), nil, info, func(ctx context.Context, _ any) (any, error) {
		seen = RequestID(ctx)
		return "ok", nil
	})
	if err != nil || resp != "ok" || len(seen) != 16 {
		t.Fatalf("ok call: %v %v %q", resp, err, seen)
	}
	_, err = ic(context.Background(), nil, info, func(ctx context.Context, _ any) (any, error) {
		seen = RequestID(ctx)
		return nil, Deny("nonce_reused", errors.New("inner detail"))
	})
	d := DetailOf(err)
	if status.Code(err) != codes.PermissionDenied || d.GetReasonCode() != "nonce_reused" || d.GetRequestId() != seen {
		t.Fatalf("denied call: %v", err)
	}

	// One line per call, with the fields; the inner error only in the log.
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 2 {
		t.Fatalf("%d log lines, want 2:\n%s", len(lines), buf.String())
	}
	var m map[string]any
	if err := json.Unmarshal([]byte(lines[1]), &m); err != nil {
		t.Fatal(err)
	}
	if m["level"] != "WARN" || m["method"] != info.FullMethod || m["request_id"] != seen || m["reason"] != "nonce_reused" ||
		m["code"] != "PermissionDenied" || m["error"] != "inner detail" {
		t.Errorf("log line = %v", m)
	}

	// No randomness: fail closed.
	_, err = UnaryInterceptor(Options{Logger: log, Rand: iotest.ErrReader(errors.New("no entropy")), Now: time.Now})(
		context.Background(), nil, info, func(context.Context, any) (any, error) { t.Fatal("handler ran"); return nil, nil })
	if status.Code(err) != codes.Internal {
		t.Errorf("without randomness: %v", err)
	}
}

func TestNewRequestID(t *testing.T) {
	a, _ := NewRequestID(rand.Reader)
	b, _ := NewRequestID(rand.Reader)
	if len(a) != 16 || a == b || strings.Trim(a, "0123456789abcdef") != "" {
		t.Errorf("request ids %q %q", a, b)
	}
}
