package broker

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/cml-project/cml/keyrelease"
	kbsv1 "github.com/cml-project/cml/proto/cml/kbs/v1"
	"github.com/cml-project/cml/server/rpcstatus"
	"github.com/cml-project/cml/server/store/storetest"
	"github.com/cml-project/cml/tdx/verifier"
)

var t0 = time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)

func TestChallengeLifecycle(t *testing.T) {
	c := newChallenges(time.Minute, 4, 10)
	n, exp, err := c.issue(rand.Reader, "a", "k", t0)
	if err != nil || len(n) != keyrelease.NonceSize || !exp.Equal(t0.Add(time.Minute)) {
		t.Fatalf("issue = %x %v %v", n, exp, err)
	}
	if r := c.consume(n, "a", "k", t0.Add(time.Second)); r != "" {
		t.Fatalf("consume = %q", r)
	}
	if r := c.consume(n, "a", "k", t0.Add(2*time.Second)); r != "nonce_reused" {
		t.Fatalf("reuse = %q", r)
	}
	if r := c.consume(make([]byte, 32), "a", "k", t0); r != "nonce_unknown" {
		t.Fatalf("unknown = %q", r)
	}
	// Forgotten after its grace period: still denied, as unknown.
	if r := c.consume(n, "a", "k", t0.Add(3*time.Minute)); r != "nonce_unknown" {
		t.Fatalf("forgotten = %q", r)
	}
	if c.outstanding(t0) != 0 || c.remembered(t0.Add(3*time.Minute)) != 0 {
		t.Error("state left behind")
	}
}

func TestChallengeBoundsAndSweep(t *testing.T) {
	c := newChallenges(time.Minute, 2, 5)
	var issued [][]byte
	for _, caller := range []string{"a", "a", "b", "b", "c"} {
		n, _, err := c.issue(rand.Reader, caller, "k", t0)
		if err != nil {
			t.Fatal(err)
		}
		issued = append(issued, n)
	}
	if _, _, err := c.issue(rand.Reader, "a", "k", t0); !errors.As(err, new(errTooMany)) {
		t.Fatalf("per caller: %v", err)
	}
	if _, _, err := c.issue(rand.Reader, "d", "k", t0); !errors.As(err, new(errTooMany)) {
		t.Fatalf("total: %v", err)
	}
	// Expiry sweeps them all into the spent memory, which reports them.
	later := t0.Add(time.Minute + time.Second)
	if c.outstanding(later) != 0 || c.remembered(later) != 5 || len(c.perCaller) != 0 {
		t.Fatalf("after expiry: %d outstanding, %d remembered, %v", c.outstanding(later), c.remembered(later), c.perCaller)
	}
	if r := c.consume(issued[0], "a", "k", later); r != "nonce_expired" {
		t.Errorf("expired = %q", r)
	}
}

// TestChallengeMemoryBounded: a caller that issues and consumes as fast as
// it can never grows the store beyond its bounds.
func TestChallengeMemoryBounded(t *testing.T) {
	const max = 50
	c := newChallenges(time.Hour, 4, max)
	now := t0
	for i := range 10 * max {
		n, _, err := c.issue(rand.Reader, "a", "k", now)
		if err != nil {
			t.Fatalf("issue %d: %v", i, err)
		}
		if r := c.consume(n, "a", "k", now); r != "" {
			t.Fatalf("consume %d: %q", i, r)
		}
		now = now.Add(time.Millisecond)
	}
	if c.outstanding(now) != 0 || c.remembered(now) > max || len(c.spent) != c.spentList.Len() || len(c.active) != c.order.Len() {
		t.Fatalf("outstanding %d, remembered %d (bound %d)", c.outstanding(now), c.remembered(now), max)
	}
}

func TestChallengeWrongBinding(t *testing.T) {
	c := newChallenges(time.Minute, 4, 10)
	n, _, _ := c.issue(rand.Reader, "a", "k", t0)
	if r := c.consume(n, "b", "k", t0); r != "nonce_wrong_caller" {
		t.Errorf("other caller = %q", r)
	}
	if r := c.consume(n, "a", "k", t0); r != "nonce_reused" {
		t.Errorf("after a wrong caller = %q (must be burnt)", r)
	}
	n, _, _ = c.issue(rand.Reader, "a", "k", t0)
	if r := c.consume(n, "a", "other", t0); r != "nonce_wrong_key" {
		t.Errorf("other key = %q", r)
	}
	// A broken random source that repeats itself is refused.
	zero := bytes.NewReader(make([]byte, 64))
	if _, _, err := c.issue(zero, "a", "k", t0); err != nil {
		t.Fatal(err)
	}
	if _, _, err := c.issue(zero, "a", "k", t0); err == nil {
		t.Error("a repeated nonce was issued")
	}
	if _, _, err := c.issue(io.LimitReader(rand.Reader, 3), "a", "k", t0); err == nil {
		t.Error("a short read was accepted")
	}
}

type noVerifier struct{}

func (noVerifier) Verify(context.Context, []byte) (*verifier.Claims, error) {
	return nil, errors.New("not reached")
}

// TestHandlersNeedGrant: called without the authorization interceptor,
// both handlers refuse.
func TestHandlersNeedGrant(t *testing.T) {
	s, err := New(Config{Store: storetest.Open(t), Verifier: noVerifier{}, Now: func() time.Time { return t0 }, Rand: rand.Reader, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	_, err = s.GetChallenge(context.Background(), &kbsv1.GetChallengeRequest{KeyId: "k"})
	if rpcstatus.ReasonOf(err) != "not_authorized" {
		t.Errorf("GetChallenge without grant: %v", err)
	}
	_, err = s.ReleaseKey(context.Background(), &kbsv1.ReleaseKeyRequest{KeyId: "k"})
	if rpcstatus.ReasonOf(err) != "not_authorized" {
		t.Errorf("ReleaseKey without grant: %v", err)
	}
	if _, err := New(Config{}); err == nil {
		t.Error("New accepted an empty config")
	}
}
