package broker

import (
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/cml-project/cml/keyrelease"
	kbsv1 "github.com/cml-project/cml/proto/cml/kbs/v1"
	"github.com/cml-project/cml/server/audit"
	"github.com/cml-project/cml/server/authz"
	"github.com/cml-project/cml/server/policy"
	"github.com/cml-project/cml/server/rpcstatus"
	"github.com/cml-project/cml/server/store"
	"github.com/cml-project/cml/tdx/verifier"
)

// Defaults for Config.
const (
	DefaultChallengeTTL           = 60 * time.Second
	DefaultMaxChallengesPerCaller = 16
	DefaultMaxChallenges          = 100_000
)

// Request limits checked by ReleaseKey before anything else.
const (
	// MaxQuoteBytes bounds ReleaseKeyRequest.quote (the verifier's own
	// bound); real quotes are about 5 KiB.
	MaxQuoteBytes = verifier.DefaultMaxQuoteSize
	// MaxPublicKeyBytes bounds tee_public_key before its KEM is looked at;
	// the largest supported key (MLKEM768X25519) is 1216 bytes.
	MaxPublicKeyBytes = 4096
)

// Operation names in audit records.
const (
	OpGetChallenge = "GetChallenge"
	OpReleaseKey   = "ReleaseKey"
)

// Store is the part of the keystore the broker uses. *store.Store
// implements it.
type Store interface {
	GetPolicy(ctx context.Context, id string, version uint32) (store.Policy, error)
	UnwrapKey(ctx context.Context, id string, version uint32) ([]byte, uint32, error)
	audit.Appender
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
	cfg      Config
	ch       *challenges
	policies policyCache
}

var _ kbsv1.KeyBrokerServiceServer = (*Service)(nil)

// New returns the service for cfg.
func New(cfg Config) (*Service, error) {
	if cfg.Store == nil || cfg.Verifier == nil || cfg.Now == nil || cfg.Rand == nil || cfg.Logger == nil {
		return nil, errors.New("broker: Store, Verifier, Now, Rand and Logger are required")
	}
	if cfg.ChallengeTTL < 0 || cfg.MaxChallengesPerCaller < 0 || cfg.MaxChallenges < 0 {
		return nil, errors.New("broker: challenge limits must not be negative")
	}
	if cfg.ChallengeTTL == 0 {
		cfg.ChallengeTTL = DefaultChallengeTTL
	}
	if cfg.MaxChallengesPerCaller == 0 {
		cfg.MaxChallengesPerCaller = DefaultMaxChallengesPerCaller
	}
	if cfg.MaxChallenges == 0 {
		cfg.MaxChallenges = DefaultMaxChallenges
	}
	return &Service{cfg: cfg, ch: newChallenges(cfg.ChallengeTTL, cfg.MaxChallengesPerCaller, cfg.MaxChallenges)}, nil
}

// GetChallenge issues a nonce bound to the caller and the key, if the key's
// current policy names the caller. A caller the policy does not name —
// also when the key does not exist, has no policy, or its policy does not
// decode — gets spiffe_id_not_allowed and learns nothing about the key; the
// audit record has the exact reason.
func (s *Service) GetChallenge(ctx context.Context, req *kbsv1.GetChallengeRequest) (*kbsv1.GetChallengeResponse, error) {
	g, err := authz.Require(ctx)
	if err != nil {
		return nil, err
	}
	e := audit.Entry{RequestID: rpcstatus.RequestID(ctx), Caller: g.Caller.String(), Operation: OpGetChallenge}
	deny := func(rerr *rpcstatus.Error, auditReason string, pv uint32) (*kbsv1.GetChallengeResponse, error) {
		e.Decision, e.Reasons, e.PolicyVersion = audit.Deny, []string{auditReason}, pv
		s.audit(ctx, e)
		return nil, rerr
	}

	keyID := req.GetKeyId()
	if err := store.ValidateKeyID(keyID); err != nil {
		return deny(rpcstatus.Invalid("key_id: %v", err), policy.ReasonInvalidArgument, 0)
	}
	e.KeyID = keyID

	stored, err := s.cfg.Store.GetPolicy(ctx, keyID, 0)
	switch {
	case errors.Is(err, store.ErrKeyNotFound):
		return deny(rpcstatus.Deny(policy.ReasonSPIFFEIDNotAllowed, err), policy.ReasonKeyNotFound, 0)
	case errors.Is(err, store.ErrPolicyNotFound):
		return deny(rpcstatus.Deny(policy.ReasonSPIFFEIDNotAllowed, err), policy.ReasonNoPolicy, 0)
	case err != nil:
		return deny(rpcstatus.New(codes.Internal, policy.ReasonInternal, err), policy.ReasonInternal, 0)
	}
	p, err := s.policies.unmarshal(stored.Bytes) // shared: read only
	if err != nil {
		return deny(rpcstatus.Deny(policy.ReasonSPIFFEIDNotAllowed, err), policy.ReasonPolicyInvalid, stored.Version)
	}
	if !callerNamed(p, g.Caller) {
		return deny(rpcstatus.Deny(policy.ReasonSPIFFEIDNotAllowed, fmt.Errorf("broker: policy version %d of key %q does not name %s", stored.Version, keyID, g.Caller)),
			policy.ReasonSPIFFEIDNotAllowed, stored.Version)
	}

	nonce, expiry, err := s.ch.issue(s.cfg.Rand, g.Caller.String(), keyID, s.cfg.Now())
	if tm, ok := errors.AsType[errTooMany](err); ok {
		return deny(rpcstatus.New(codes.ResourceExhausted, policy.ReasonTooManyChallenges, tm), policy.ReasonTooManyChallenges, stored.Version)
	} else if err != nil {
		return deny(rpcstatus.New(codes.Internal, policy.ReasonInternal, err), policy.ReasonInternal, stored.Version)
	}
	// Issuing a challenge is not a decision on the key: no audit record
	// (the release that consumes it records its digest).
	return &kbsv1.GetChallengeResponse{Nonce: nonce, ExpireTime: timestamppb.New(expiry)}, nil
}

func callerNamed(p *kbsv1.Policy, caller spiffeid.ID) bool {
	for _, s := range p.GetSpiffeIds() {
		if pat, err := policy.ParseIDPattern(s); err == nil && pat.Match(caller) {
			return true
		}
	}
	return false
}

// ReleaseKey runs the release protocol (see the package documentation for
// the order of the steps) and writes exactly one audit record, allow or
// deny.
func (s *Service) ReleaseKey(ctx context.Context, req *kbsv1.ReleaseKeyRequest) (*kbsv1.ReleaseKeyResponse, error) {
	g, err := authz.Require(ctx)
	if err != nil {
		return nil, err
	}
	r := &release{
		entry: audit.Entry{
			RequestID:  rpcstatus.RequestID(ctx),
			Caller:     g.Caller.String(),
			Operation:  OpReleaseKey,
			KeyVersion: req.GetKeyVersion(),
			Details:    map[string]string{},
		},
	}
	resp, rerr := s.release(ctx, g.Caller, req, r)
	if rerr != nil {
		r.entry.Decision = audit.Deny
		if len(r.entry.Reasons) == 0 {
			r.entry.Reasons = []string{rerr.Reason}
		}
		s.audit(ctx, r.entry)
		s.metric(audit.Deny, rerr.Reason)
		return nil, rerr
	}
	r.entry.Decision = audit.Allow
	if err := s.audit(ctx, r.entry); err != nil {
		// No unaudited release: the sealed key is dropped.
		s.metric(audit.Deny, policy.ReasonInternal)
		return nil, rpcstatus.New(codes.Internal, policy.ReasonInternal, fmt.Errorf("broker: release allowed but not audited, withheld: %w", err))
	}
	s.metric(audit.Allow, "ok")
	return resp, nil
}

// release is the state of one ReleaseKey call that its audit record needs.
type release struct {
	entry audit.Entry
}

func (s *Service) release(ctx context.Context, caller spiffeid.ID, req *kbsv1.ReleaseKeyRequest, r *release) (*kbsv1.ReleaseKeyResponse, *rpcstatus.Error) {
	// 1. Size limits and syntax. Nothing is consumed yet, so a malformed
	// request does not burn the caller's nonce.
	if n := len(req.GetQuote()); n > MaxQuoteBytes {
		return nil, rpcstatus.New(codes.ResourceExhausted, policy.ReasonRequestTooLarge, fmt.Errorf("broker: quote is %d bytes, at most %d", n, MaxQuoteBytes))
	}
	if n := len(req.GetTeePublicKey()); n > MaxPublicKeyBytes {
		return nil, rpcstatus.New(codes.ResourceExhausted, policy.ReasonRequestTooLarge, fmt.Errorf("broker: tee_public_key is %d bytes, at most %d", n, MaxPublicKeyBytes))
	}
	keyID := req.GetKeyId()
	if err := store.ValidateKeyID(keyID); err != nil {
		return nil, rpcstatus.Invalid("key_id: %v", err)
	}
	r.entry.KeyID = keyID
	if len(req.GetQuote()) > 0 {
		r.entry.QuoteDigest = audit.Digest(req.GetQuote())
	}
	nonce := req.GetNonce()
	if len(nonce) != keyrelease.NonceSize {
		return nil, rpcstatus.Invalid("nonce: %d bytes, want %d (the nonce from GetChallenge)", len(nonce), keyrelease.NonceSize)
	}
	kem := keyrelease.KEM(req.GetKemId())
	r.entry.Details["kem"] = kem.String()
	if !kem.Supported() {
		return nil, rpcstatus.Invalid("kem_id: %s is not supported; use HPKE_KEM_DHKEM_X25519_HKDF_SHA256 or HPKE_KEM_MLKEM768_X25519", req.GetKemId())
	}
	if err := keyrelease.CheckPublicKey(kem, req.GetTeePublicKey()); err != nil {
		return nil, rpcstatus.Invalid("tee_public_key: %v", err)
	}
	if len(req.GetQuote()) == 0 {
		return nil, rpcstatus.Invalid("quote: required")
	}

	// 2. Consume the nonce: bound to this caller and key, unexpired, unused.
	r.entry.NonceDigest = audit.Digest(nonce)
	if reason := s.ch.consume(nonce, caller.String(), keyID, s.cfg.Now()); reason != "" {
		return nil, rpcstatus.Deny(reason, fmt.Errorf("broker: challenge refused: %s", reason))
	}

	// 3. Verify the quote.
	start := s.cfg.Now()
	claims, verr := s.cfg.Verifier.Verify(ctx, req.GetQuote())
	if s.cfg.Metrics != nil {
		s.cfg.Metrics.QuoteVerified(s.cfg.Now().Sub(start))
	}
	if verr != nil {
		ve, ok := errors.AsType[*verifier.Error](verr)
		if !ok || ve.Claims == nil || !policy.IsTCBStatusReason(ve.Reason) {
			reason := string(verifier.ReasonOf(verr))
			code := codes.PermissionDenied
			if reason == string(verifier.ReasonCollateralUnavailable) || reason == string(verifier.ReasonCanceled) {
				code = codes.Unavailable // retryable; the release still fails closed
			}
			return nil, rpcstatus.New(code, reason, verr)
		}
		// Authentic, but the platform's TCB status is not UpToDate: the
		// policy's tcb_status check decides.
		claims = ve.Claims
		r.entry.Details["verifier_reason"] = string(ve.Reason)
	}
	if claims == nil {
		return nil, rpcstatus.Deny(string(verifier.ReasonVerificationFailed), errors.New("broker: verifier returned neither claims nor error"))
	}
	r.entry.Measurements = policy.Measurements(claims)
	r.entry.Simulated = s.cfg.Simulated
	r.entry.Details["tcb_status"] = string(claims.TCBStatus)

	// 4. REPORTDATA binds this nonce and this public key.
	want := keyrelease.ReportData(nonce, kem, req.GetTeePublicKey())
	if subtle.ConstantTimeCompare(want[:], claims.ReportData[:]) != 1 {
		return nil, rpcstatus.Deny(policy.ReasonReportDataMismatch, errors.New("broker: REPORTDATA does not bind the nonce and tee_public_key"))
	}

	// 5. The key's current policy.
	stored, err := s.cfg.Store.GetPolicy(ctx, keyID, 0)
	switch {
	case errors.Is(err, store.ErrKeyNotFound):
		return nil, rpcstatus.Deny(policy.ReasonKeyNotFound, err)
	case errors.Is(err, store.ErrPolicyNotFound):
		return nil, rpcstatus.Deny(policy.ReasonNoPolicy, err)
	case err != nil:
		return nil, rpcstatus.New(codes.Internal, policy.ReasonInternal, err)
	}
	r.entry.PolicyVersion = stored.Version
	p, err := s.policies.unmarshal(stored.Bytes) // shared: read only
	if err != nil {
		return nil, rpcstatus.Deny(policy.ReasonPolicyInvalid, err)
	}
	res := policy.Evaluate(p, caller, claims, kbsv1.HpkeKem(kem))
	if !res.Allowed {
		r.entry.Reasons = capReasons(res.Reasons())
		return nil, rpcstatus.Deny(res.Reason(), fmt.Errorf("broker: policy version %d denies: %v", stored.Version, res.Reasons()))
	}

	// 6. Unwrap the requested (or primary) version.
	dek, version, err := s.cfg.Store.UnwrapKey(ctx, keyID, req.GetKeyVersion())
	switch {
	case errors.Is(err, store.ErrKeyDisabled):
		return nil, rpcstatus.Deny(policy.ReasonKeyDisabled, err)
	case errors.Is(err, store.ErrKeyDestroyed):
		return nil, rpcstatus.Deny(policy.ReasonKeyDestroyed, err)
	case errors.Is(err, store.ErrKeyNotFound):
		return nil, rpcstatus.Deny(policy.ReasonKeyNotFound, err)
	case errors.Is(err, store.ErrVersionNotFound):
		return nil, rpcstatus.Deny(policy.ReasonKeyVersionNotFound, err)
	case err != nil:
		return nil, rpcstatus.New(codes.Internal, policy.ReasonInternal, err)
	}
	r.entry.KeyVersion = version

	// 7. Seal to the TD's key, bound to key id, version and nonce.
	enc, ct, err := keyrelease.Seal(kem, req.GetTeePublicKey(), keyrelease.ReleaseInfo(keyID, version, nonce), dek)
	clear(dek)
	if err != nil {
		return nil, rpcstatus.Invalid("tee_public_key: %v", err)
	}
	return &kbsv1.ReleaseKeyResponse{
		SealedKey: &kbsv1.SealedKey{
			KemId:      kbsv1.HpkeKem(kem),
			KdfId:      kbsv1.HpkeKdf_HPKE_KDF_HKDF_SHA256,
			AeadId:     kbsv1.HpkeAead_HPKE_AEAD_AES_256_GCM,
			Enc:        enc,
			Ciphertext: ct,
		},
		KeyId:         keyID,
		KeyVersion:    version,
		Algorithm:     kbsv1.KeyAlgorithm_KEY_ALGORITHM_AES_256_GCM,
		PolicyVersion: stored.Version,
		RequestId:     rpcstatus.RequestID(ctx),
	}, nil
}

// capReasons keeps at most the 32 reason codes an audit record holds.
func capReasons(rs []string) []string {
	if len(rs) > 32 {
		return rs[:32]
	}
	return rs
}

func (s *Service) metric(d audit.Decision, reason string) {
	if s.cfg.Metrics != nil {
		s.cfg.Metrics.ReleaseDecision(string(d), reason)
	}
}

// audit appends e (audit.Append: even if the caller has gone away).
func (s *Service) audit(ctx context.Context, e audit.Entry) error {
	return audit.Append(ctx, s.cfg.Store, s.cfg.Logger, e)
}
