package client_test

import (
	"context"
	"crypto/rand"
	"errors"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/test/bufconn"

	"github.com/cml-project/cml/client"
	"github.com/cml-project/cml/identity"
	"github.com/cml-project/cml/identity/devca"
	"github.com/cml-project/cml/keyrelease"
	kbsv1 "github.com/cml-project/cml/proto/cml/kbs/v1"
)

// fakeBroker is a scripted broker for what a real one never does: wrong
// answers, slowness, transient failures. It seals like the real one but
// checks no quote.
type fakeBroker struct {
	kbsv1.UnimplementedKeyBrokerServiceServer
	kbsv1.UnimplementedAdminServiceServer

	dek      []byte
	sealKey  []byte // sealed instead of dek if set
	version  uint32 // version sealed and returned (default: the one asked, or 1)
	nonceLen int
	delay    time.Duration
	mutate   func(*kbsv1.ReleaseKeyResponse)
	fail     atomic.Int32 // fail this many calls with Unavailable
	// busy fails this many GetChallenge calls with busyCode (default
	// ResourceExhausted) and an ErrorDetail of busyReason (default
	// too_many_challenges; "-" for no detail at all).
	busy       atomic.Int32
	busyCode   codes.Code
	busyReason string
	calls      atomic.Int32 // GetChallenge, GetKey and CreateKey calls
	releases   atomic.Int32
}

func (f *fakeBroker) start() error {
	f.calls.Add(1)
	if f.fail.Load() > 0 {
		f.fail.Add(-1)
		return status.Error(codes.Unavailable, "scripted outage")
	}
	return nil
}

func (f *fakeBroker) GetChallenge(ctx context.Context, _ *kbsv1.GetChallengeRequest) (*kbsv1.GetChallengeResponse, error) {
	if err := f.start(); err != nil {
		return nil, err
	}
	if f.busy.Load() > 0 {
		f.busy.Add(-1)
		return nil, f.busyErr()
	}
	select {
	case <-time.After(f.delay):
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	n := f.nonceLen
	if n == 0 {
		n = keyrelease.NonceSize
	}
	nonce := make([]byte, n)
	rand.Read(nonce)
	return &kbsv1.GetChallengeResponse{Nonce: nonce}, nil
}

// busyErr is the scripted refusal of GetChallenge, shaped like the real
// broker's: the reason is both the message and the ErrorDetail.
func (f *fakeBroker) busyErr() error {
	code, reason := f.busyCode, f.busyReason
	if code == codes.OK {
		code = codes.ResourceExhausted
	}
	if reason == "" {
		reason = "too_many_challenges"
	}
	if reason == "-" {
		return status.Error(code, "scripted refusal")
	}
	st, err := status.New(code, reason).WithDetails(&kbsv1.ErrorDetail{ReasonCode: reason, RequestId: "00000000000000ff"})
	if err != nil {
		panic(err)
	}
	return st.Err()
}

func (f *fakeBroker) ReleaseKey(_ context.Context, req *kbsv1.ReleaseKeyRequest) (*kbsv1.ReleaseKeyResponse, error) {
	f.releases.Add(1)
	v := f.version
	if v == 0 {
		v = max(req.KeyVersion, 1)
	}
	key := f.dek
	if f.sealKey != nil {
		key = f.sealKey
	}
	kem := keyrelease.KEM(req.KemId)
	enc, ct, err := keyrelease.Seal(kem, req.TeePublicKey, keyrelease.ReleaseInfo(req.KeyId, v, req.Nonce), key)
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	resp := &kbsv1.ReleaseKeyResponse{
		SealedKey: &kbsv1.SealedKey{KemId: req.KemId, KdfId: kbsv1.HpkeKdf_HPKE_KDF_HKDF_SHA256, AeadId: kbsv1.HpkeAead_HPKE_AEAD_AES_256_GCM, Enc: enc, Ciphertext: ct},
		KeyId:     req.KeyId, KeyVersion: v, Algorithm: kbsv1.KeyAlgorithm_KEY_ALGORITHM_AES_256_GCM,
		PolicyVersion: 1, RequestId: "0123456789abcdef",
	}
	if f.mutate != nil {
		f.mutate(resp)
	}
	return resp, nil
}

func (f *fakeBroker) GetKey(context.Context, *kbsv1.GetKeyRequest) (*kbsv1.GetKeyResponse, error) {
	if err := f.start(); err != nil {
		return nil, err
	}
	return &kbsv1.GetKeyResponse{}, nil
}

func (f *fakeBroker) CreateKey(context.Context, *kbsv1.CreateKeyRequest) (*kbsv1.CreateKeyResponse, error) {
	if err := f.start(); err != nil {
		return nil, err
	}
	return &kbsv1.CreateKeyResponse{}, nil
}

// fakeQuoter returns a fixed quote, or err.
type fakeQuoter struct {
	err   error
	calls atomic.Int32
}

func (q *fakeQuoter) GetQuote(context.Context, [64]byte) ([]byte, error) {
	q.calls.Add(1)
	if q.err != nil {
		return nil, q.err
	}
	return []byte("not a real quote"), nil
}

var (
	fakeTD  = spiffeid.RequireTrustDomainFromString("example.org")
	fakeKBS = spiffeid.RequireFromPath(fakeTD, "/kbs")
)

// startFake serves f over bufconn with mTLS and returns a client of it.
func startFake(t *testing.T, f *fakeBroker, opts ...client.Option) *client.Client {
	t.Helper()
	if f.dek == nil {
		f.dek = make([]byte, 32)
		rand.Read(f.dek)
	}
	ca, err := devca.New(fakeTD, devca.Options{})
	if err != nil {
		t.Fatal(err)
	}
	issue := func(id spiffeid.ID) identity.Source {
		svid, err := ca.Issue(id, time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		return identity.NewStaticSource(svid, ca.Bundle())
	}
	creds, err := identity.ServerCredentials(issue(fakeKBS), nil)
	if err != nil {
		t.Fatal(err)
	}
	g := grpc.NewServer(grpc.Creds(creds))
	kbsv1.RegisterKeyBrokerServiceServer(g, f)
	kbsv1.RegisterAdminServiceServer(g, f)
	lis := bufconn.Listen(1 << 20)
	go g.Serve(lis)
	t.Cleanup(g.Stop)
	opts = append([]client.Option{
		client.WithServerID(fakeKBS),
		client.WithSource(issue(spiffeid.RequireFromPath(fakeTD, "/loader"))),
		client.WithDialOptions(grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return lis.DialContext(ctx) })),
	}, opts...)
	c, err := client.New(context.Background(), "passthrough:///fake", opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func TestResponseChecks(t *testing.T) {
	for _, tc := range []struct {
		name    string
		f       *fakeBroker
		version uint32
		want    string
		is      error
	}{
		{name: "other key id", f: &fakeBroker{mutate: func(r *kbsv1.ReleaseKeyResponse) { r.KeyId = "other" }}, want: `answered for key id "other"`},
		{name: "other version", f: &fakeBroker{version: 4}, version: 3, want: "answered with version 4"},
		{name: "version 0", f: &fakeBroker{mutate: func(r *kbsv1.ReleaseKeyResponse) { r.KeyVersion = 0 }}, want: "answered with version 0"},
		{name: "version relabelled", f: &fakeBroker{mutate: func(r *kbsv1.ReleaseKeyResponse) { r.KeyVersion = 2 }}, is: keyrelease.ErrOpen},
		{name: "no sealed key", f: &fakeBroker{mutate: func(r *kbsv1.ReleaseKeyResponse) { r.SealedKey = nil }}, want: "no sealed key"},
		{name: "other kem", f: &fakeBroker{mutate: func(r *kbsv1.ReleaseKeyResponse) { r.SealedKey.KemId = kbsv1.HpkeKem_HPKE_KEM_MLKEM768_X25519 }}, want: "sealed the key with KEM"},
		{name: "other aead", f: &fakeBroker{mutate: func(r *kbsv1.ReleaseKeyResponse) { r.SealedKey.AeadId = 3 }}, want: "unsupported AEAD"},
		{name: "other kdf", f: &fakeBroker{mutate: func(r *kbsv1.ReleaseKeyResponse) { r.SealedKey.KdfId = 2 }}, want: "unsupported KDF"},
		{name: "tampered ciphertext", f: &fakeBroker{mutate: func(r *kbsv1.ReleaseKeyResponse) { r.SealedKey.Ciphertext[0] ^= 1 }}, is: keyrelease.ErrOpen},
		{name: "tampered enc", f: &fakeBroker{mutate: func(r *kbsv1.ReleaseKeyResponse) { r.SealedKey.Enc[0] ^= 1 }}, is: keyrelease.ErrOpen},
		{name: "unknown algorithm", f: &fakeBroker{mutate: func(r *kbsv1.ReleaseKeyResponse) { r.Algorithm = 0 }}, want: "unsupported algorithm"},
		{name: "short key", f: &fakeBroker{sealKey: make([]byte, 16)}, want: "is 16 bytes, want 32"},
		{name: "short nonce", f: &fakeBroker{nonceLen: 16}, want: "16-byte nonce"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := startFake(t, tc.f)
			rk, err := c.ReleaseKey(context.Background(), "m", tc.version, &fakeQuoter{})
			if err == nil {
				t.Fatalf("ReleaseKey accepted the answer: %+v", rk)
			}
			if tc.want != "" && !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q, want it to contain %q", err, tc.want)
			}
			if tc.is != nil && !errors.Is(err, tc.is) {
				t.Errorf("error %v, want %v", err, tc.is)
			}
		})
	}
	// The unmodified fake is accepted: the checks above fail for their
	// own reason only.
	f := &fakeBroker{}
	rk, err := startFake(t, f).ReleaseKey(context.Background(), "m", 0, &fakeQuoter{})
	if err != nil || string(rk.Key) != string(f.dek) {
		t.Fatalf("honest fake: %v", err)
	}
}

func TestTransientUnavailableRetried(t *testing.T) {
	f := &fakeBroker{}
	f.fail.Store(2)
	c := startFake(t, f, client.WithRetry(20*time.Second))
	if _, err := c.ReleaseKey(context.Background(), "m", 0, &fakeQuoter{}); err != nil {
		t.Fatalf("ReleaseKey after two outages: %v", err)
	}
	if n := f.calls.Load(); n != 3 {
		t.Errorf("%d GetChallenge calls, want 3", n)
	}
}

// TestTooManyChallengesRetried: a GetChallenge refused with
// ResourceExhausted too_many_challenges is temporary and retried with
// WithRetry; nothing else that looks like it is.
func TestTooManyChallengesRetried(t *testing.T) {
	f := &fakeBroker{}
	f.busy.Store(3)
	rk, err := startFake(t, f, client.WithRetry(20*time.Second)).ReleaseKey(context.Background(), "m", 0, &fakeQuoter{})
	if err != nil {
		t.Fatalf("ReleaseKey after three too_many_challenges: %v", err)
	}
	if string(rk.Key) != string(f.dek) {
		t.Error("released key differs")
	}
	if n, r := f.calls.Load(), f.releases.Load(); n != 4 || r != 1 {
		t.Errorf("%d GetChallenge and %d ReleaseKey calls, want 4 and 1", n, r)
	}

	// Without WithRetry: the refusal as it is, reason readable.
	f = &fakeBroker{}
	f.busy.Store(1)
	_, err = startFake(t, f).ReleaseKey(context.Background(), "m", 0, &fakeQuoter{})
	var u *client.UnavailableError
	if reason, _, _ := client.ReasonOf(err); status.Code(err) != codes.ResourceExhausted || reason != "too_many_challenges" || errors.As(err, &u) {
		t.Errorf("without retry: %v (reason %q), want ResourceExhausted too_many_challenges", err, reason)
	}
	if n := f.calls.Load(); n != 1 {
		t.Errorf("without retry: %d GetChallenge calls, want 1", n)
	}

	// With a budget that runs out while the broker stays busy: an
	// UnavailableError that keeps the code and the reason.
	f = &fakeBroker{}
	f.busy.Store(1 << 20)
	start := time.Now()
	_, err = startFake(t, f, client.WithRetry(700*time.Millisecond)).ReleaseKey(context.Background(), "m", 0, &fakeQuoter{})
	if reason, _, _ := client.ReasonOf(err); !errors.As(err, &u) || status.Code(err) != codes.ResourceExhausted || reason != "too_many_challenges" {
		t.Errorf("budget spent: %v (reason %q), want an UnavailableError with ResourceExhausted too_many_challenges", err, reason)
	}
	if n, el := f.calls.Load(), time.Since(start); n < 2 || el > 5*time.Second {
		t.Errorf("budget spent: %d attempts in %s, want several in about 700ms", n, el)
	}
	if f.releases.Load() != 0 {
		t.Error("ReleaseKey called without a challenge")
	}
}

func TestOtherRefusalsOfGetChallengeNotRetried(t *testing.T) {
	for _, tc := range []struct {
		name   string
		code   codes.Code
		reason string
	}{
		{"resource exhausted, other reason", codes.ResourceExhausted, "request_too_large"},
		{"resource exhausted, no detail", codes.ResourceExhausted, "-"},
		{"permission denied", codes.PermissionDenied, "spiffe_id_not_allowed"},
		{"permission denied, same reason", codes.PermissionDenied, "too_many_challenges"},
		{"failed precondition, same reason", codes.FailedPrecondition, "too_many_challenges"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := &fakeBroker{busyCode: tc.code, busyReason: tc.reason}
			f.busy.Store(1)
			_, err := startFake(t, f, client.WithRetry(20*time.Second)).ReleaseKey(context.Background(), "m", 0, &fakeQuoter{})
			if status.Code(err) != tc.code {
				t.Errorf("ReleaseKey: %v, want code %s", err, tc.code)
			}
			if n := f.calls.Load(); n != 1 {
				t.Errorf("%d GetChallenge calls, want 1 (not retried)", n)
			}
		})
	}
}

func TestPerRPCTimeout(t *testing.T) {
	f := &fakeBroker{delay: 3 * time.Second}
	_, err := startFake(t, f, client.WithTimeout(100*time.Millisecond)).ReleaseKey(context.Background(), "m", 0, &fakeQuoter{})
	if status.Code(err) != codes.DeadlineExceeded {
		t.Fatalf("slow broker, 100ms timeout: %v, want DeadlineExceeded", err)
	}
	// With a retry budget, each slow attempt times out and is retried until
	// the budget is spent.
	f2 := &fakeBroker{delay: 3 * time.Second}
	start := time.Now()
	_, err = startFake(t, f2, client.WithTimeout(100*time.Millisecond), client.WithRetry(time.Second)).ReleaseKey(context.Background(), "m", 0, &fakeQuoter{})
	var u *client.UnavailableError
	if !errors.As(err, &u) {
		t.Fatalf("slow broker with retry: %v, want an UnavailableError", err)
	}
	if n := f2.calls.Load(); n < 2 {
		t.Errorf("%d attempts, want several", n)
	}
	if el := time.Since(start); el > 3*time.Second {
		t.Errorf("gave up after %s, want about 1s", el)
	}
}

func TestAdminRetriesOnlyReadOnly(t *testing.T) {
	f := &fakeBroker{}
	c := startFake(t, f, client.WithRetry(20*time.Second))
	ctx := context.Background()
	f.fail.Store(2)
	if _, err := c.Admin().GetKey(ctx, &kbsv1.GetKeyRequest{KeyId: "m"}); err != nil {
		t.Fatalf("GetKey after two outages: %v", err)
	}
	if n := f.calls.Swap(0); n != 3 {
		t.Errorf("GetKey: %d calls, want 3", n)
	}
	f.fail.Store(2)
	if _, err := c.Admin().CreateKey(ctx, &kbsv1.CreateKeyRequest{KeyId: "m"}); status.Code(err) != codes.Unavailable {
		t.Fatalf("CreateKey during an outage: %v, want Unavailable", err)
	}
	if n := f.calls.Load(); n != 1 {
		t.Errorf("CreateKey: %d calls, want 1 (a state change is never repeated)", n)
	}
}

func TestQuoteErrorNotRetried(t *testing.T) {
	f := &fakeBroker{}
	q := &fakeQuoter{err: errors.New("configfs-tsm: no such device")}
	_, err := startFake(t, f, client.WithRetry(20*time.Second)).ReleaseKey(context.Background(), "m", 0, q)
	if !errors.Is(err, q.err) || !strings.Contains(err.Error(), "TDX quote") {
		t.Fatalf("ReleaseKey with a failing quote provider: %v", err)
	}
	if q.calls.Load() != 1 || f.releases.Load() != 0 {
		t.Errorf("quote calls %d, releases %d; want 1 and 0", q.calls.Load(), f.releases.Load())
	}
}

func TestReasonOf(t *testing.T) {
	withDetail := func(c codes.Code, reason, id string) error {
		st, err := status.New(c, reason).WithDetails(&kbsv1.ErrorDetail{ReasonCode: reason, RequestId: id})
		if err != nil {
			t.Fatal(err)
		}
		return st.Err()
	}
	for _, tc := range []struct {
		name       string
		err        error
		reason, id string
		ok         bool
	}{
		{"nil", nil, "", "", false},
		{"plain", errors.New("x"), "", "", false},
		{"status without detail", status.Error(codes.Internal, "x"), "", "", false},
		{"status with detail", withDetail(codes.ResourceExhausted, "too_many_challenges", "r1"), "too_many_challenges", "r1", true},
		{"denied", &client.DeniedError{Reason: "debug_td", RequestID: "r2"}, "debug_td", "r2", true},
		{"control characters", withDetail(codes.ResourceExhausted, "a\x1b[2Jb\nc", "r\x00"), "a?[2Jb?c", "r?", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, id, ok := client.ReasonOf(tc.err)
			if r != tc.reason || id != tc.id || ok != tc.ok {
				t.Errorf("ReasonOf = %q %q %v, want %q %q %v", r, id, ok, tc.reason, tc.id, tc.ok)
			}
		})
	}
	var d error = &client.DeniedError{Reason: "x"}
	if status.Code(d) != codes.PermissionDenied {
		t.Errorf("status.Code of a bare DeniedError = %s", status.Code(d))
	}
}
