package admin

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	kbsv1 "github.com/cml-project/cml/proto/cml/kbs/v1"
	"github.com/cml-project/cml/server/audit"
	"github.com/cml-project/cml/server/authz"
	"github.com/cml-project/cml/server/policy"
	"github.com/cml-project/cml/server/rpcstatus"
	"github.com/cml-project/cml/server/store"
	"github.com/cml-project/cml/tdx/verifier"
)

// MaxQuoteBytes bounds TestPolicyRequest.quote.
const MaxQuoteBytes = verifier.DefaultMaxQuoteSize

// PutPolicy validates and stores a new policy version.
func (s *Service) PutPolicy(ctx context.Context, req *kbsv1.PutPolicyRequest) (*kbsv1.PutPolicyResponse, error) {
	var out *kbsv1.PutPolicyResponse
	err := s.call(ctx, "PutPolicy", req.GetKeyId(), func(e *audit.Entry) error {
		if err := validKeyID(req.GetKeyId()); err != nil {
			return err
		}
		if req.GetPolicy() == nil {
			return rpcstatus.Invalid("policy: required")
		}
		p, err := policy.Normalize(req.GetPolicy())
		if err != nil {
			return rpcstatus.Invalid("%v", err)
		}
		g, _ := authz.FromContext(ctx) // call() checked it
		p.KeyId = req.GetKeyId()
		p.CreatedBy = g.Caller.String()
		b, err := policy.Marshal(p)
		if err != nil {
			return err
		}
		sp, err := s.cfg.Store.PutPolicy(ctx, req.GetKeyId(), b)
		if err != nil {
			return err
		}
		e.PolicyVersion = sp.Version
		p.Version = sp.Version
		p.CreateTime = timestamppb.New(sp.Created)
		out = &kbsv1.PutPolicyResponse{Policy: p}
		return nil
	})
	return out, err
}

// decodeStored returns a stored policy version with its output-only fields
// set. It does not validate: an administrator sees what is stored (the
// broker refuses to release under a policy that does not validate).
func decodeStored(sp store.Policy) (*kbsv1.Policy, error) {
	p := new(kbsv1.Policy)
	if err := proto.Unmarshal(sp.Bytes, p); err != nil {
		return nil, fmt.Errorf("admin: policy version %d of key %q does not decode: %w", sp.Version, sp.KeyID, err)
	}
	p.KeyId = sp.KeyID
	p.Version = sp.Version
	p.CreateTime = timestamppb.New(sp.Created)
	return p, nil
}

// GetPolicy returns the current or a named policy version.
func (s *Service) GetPolicy(ctx context.Context, req *kbsv1.GetPolicyRequest) (*kbsv1.GetPolicyResponse, error) {
	var out *kbsv1.GetPolicyResponse
	err := s.call(ctx, "GetPolicy", req.GetKeyId(), func(e *audit.Entry) error {
		if err := validKeyID(req.GetKeyId()); err != nil {
			return err
		}
		sp, err := s.cfg.Store.GetPolicy(ctx, req.GetKeyId(), req.GetVersion())
		if err != nil {
			return err
		}
		e.PolicyVersion = sp.Version
		p, err := decodeStored(sp)
		if err != nil {
			return err
		}
		out = &kbsv1.GetPolicyResponse{Policy: p}
		return nil
	})
	return out, err
}

// ListPolicies lists every version of one key's policy (newest first), or
// the current policy of every key that has one (by key id).
func (s *Service) ListPolicies(ctx context.Context, req *kbsv1.ListPoliciesRequest) (*kbsv1.ListPoliciesResponse, error) {
	var out *kbsv1.ListPoliciesResponse
	err := s.call(ctx, "ListPolicies", req.GetKeyId(), func(e *audit.Entry) error {
		n, err := pageSize(req.GetPageSize())
		if err != nil {
			return err
		}
		if req.GetKeyId() != "" {
			out, err = s.listVersions(ctx, req.GetKeyId(), req.GetPageToken(), n)
		} else {
			out, err = s.listCurrent(ctx, req.GetPageToken(), n)
		}
		return err
	})
	return out, err
}

func (s *Service) listVersions(ctx context.Context, id, token string, n int) (*kbsv1.ListPoliciesResponse, error) {
	if err := validKeyID(id); err != nil {
		return nil, err
	}
	pos, err := decodeToken(token, "p/"+id)
	if err != nil {
		return nil, err
	}
	below := uint64(0) // list versions < below; 0: from the newest
	if pos != "" {
		if below, err = strconv.ParseUint(pos, 10, 32); err != nil || below == 0 {
			return nil, rpcstatus.Invalid("page_token: not a token this server issued")
		}
	}
	if _, err := s.cfg.Store.GetKey(ctx, id); err != nil {
		return nil, err
	}
	all, err := s.cfg.Store.ListPolicies(ctx, id)
	if err != nil {
		return nil, err
	}
	slices.Reverse(all) // newest first
	out := &kbsv1.ListPoliciesResponse{}
	for _, sp := range all {
		if below != 0 && uint64(sp.Version) >= below {
			continue
		}
		if len(out.Policies) == n {
			last := out.Policies[n-1].Version
			out.NextPageToken = encodeToken("p/"+id, strconv.FormatUint(uint64(last), 10))
			break
		}
		p, err := decodeStored(sp)
		if err != nil {
			return nil, err
		}
		out.Policies = append(out.Policies, p)
	}
	return out, nil
}

func (s *Service) listCurrent(ctx context.Context, token string, n int) (*kbsv1.ListPoliciesResponse, error) {
	after, err := decodeToken(token, "P")
	if err != nil {
		return nil, err
	}
	if after != "" && store.ValidateKeyID(after) != nil {
		return nil, rpcstatus.Invalid("page_token: not a token this server issued")
	}
	out := &kbsv1.ListPoliciesResponse{}
	for {
		keys, err := s.cfg.Store.ListKeys(ctx, after, store.MaxListLimit)
		if err != nil {
			return nil, err
		}
		for _, k := range keys {
			if k.PolicyVersion == 0 {
				continue
			}
			if len(out.Policies) == n {
				out.NextPageToken = encodeToken("P", out.Policies[n-1].KeyId)
				return out, nil
			}
			sp, err := s.cfg.Store.GetPolicy(ctx, k.ID, 0)
			if err != nil {
				return nil, err
			}
			p, err := decodeStored(sp)
			if err != nil {
				return nil, err
			}
			out.Policies = append(out.Policies, p)
		}
		if len(keys) < store.MaxListLimit {
			return out, nil
		}
		after = keys[len(keys)-1].ID
	}
}

// TestPolicy evaluates a stored or draft policy against a quote and a
// SPIFFE ID, releasing nothing.
func (s *Service) TestPolicy(ctx context.Context, req *kbsv1.TestPolicyRequest) (*kbsv1.TestPolicyResponse, error) {
	var out *kbsv1.TestPolicyResponse
	err := s.call(ctx, "TestPolicy", req.GetKeyId(), func(e *audit.Entry) error {
		var err error
		out, err = s.testPolicy(ctx, req, e)
		return err
	})
	return out, err
}

func (s *Service) testPolicy(ctx context.Context, req *kbsv1.TestPolicyRequest, e *audit.Entry) (*kbsv1.TestPolicyResponse, error) {
	hasKey, hasDraft := req.GetKeyId() != "", req.GetPolicy() != nil
	switch {
	case hasKey == hasDraft:
		return nil, rpcstatus.Invalid("key_id and policy: set exactly one (a stored policy, or a draft)")
	case hasDraft && req.GetPolicyVersion() != 0:
		return nil, rpcstatus.Invalid("policy_version: only with key_id")
	}
	if req.GetSpiffeId() == "" {
		return nil, rpcstatus.Invalid("spiffe_id: required (the workload SPIFFE ID to test)")
	}
	caller, err := spiffeid.FromString(req.GetSpiffeId())
	if err != nil {
		return nil, rpcstatus.Invalid("spiffe_id: %q is not a SPIFFE ID: %v", req.GetSpiffeId(), err)
	}
	if n := len(req.GetQuote()); n == 0 {
		return nil, rpcstatus.Invalid("quote: required")
	} else if n > MaxQuoteBytes {
		return nil, rpcstatus.New(codes.ResourceExhausted, policy.ReasonRequestTooLarge, fmt.Errorf("admin: quote is %d bytes, at most %d", n, MaxQuoteBytes))
	}
	e.QuoteDigest = audit.Digest(req.GetQuote())

	var (
		p        *kbsv1.Policy
		pVersion uint32
	)
	if hasKey {
		if err := validKeyID(req.GetKeyId()); err != nil {
			return nil, err
		}
		sp, err := s.cfg.Store.GetPolicy(ctx, req.GetKeyId(), req.GetPolicyVersion())
		if err != nil {
			return nil, err
		}
		pVersion = sp.Version
		e.PolicyVersion = sp.Version
		if p, err = decodeStored(sp); err != nil {
			return nil, err
		}
	} else if p, err = policy.Normalize(req.GetPolicy()); err != nil {
		return nil, rpcstatus.Invalid("policy: %v", err)
	}

	claims, verr := s.cfg.Verifier.Verify(ctx, req.GetQuote())
	var res policy.Result
	switch ve, ok := errors.AsType[*verifier.Error](verr); {
	case verr == nil && claims != nil:
		res = policy.Evaluate(p, caller, claims, req.GetKemId())
	case ok && ve.Claims != nil && policy.IsTCBStatusReason(ve.Reason):
		claims = ve.Claims
		res = policy.Evaluate(p, caller, claims, req.GetKemId())
	default:
		reason := verifier.ReasonOf(verr)
		if verr == nil {
			reason = verifier.ReasonVerificationFailed
		}
		if reason == verifier.ReasonCollateralUnavailable || reason == verifier.ReasonCanceled {
			return nil, rpcstatus.New(codes.Unavailable, string(reason), verr)
		}
		claims = nil
		res = policy.EvaluateFailedQuote(p, caller, string(reason), req.GetKemId())
	}

	out := &kbsv1.TestPolicyResponse{
		Decision:      kbsv1.Decision_DECISION_DENY,
		Checks:        res.Proto(),
		ReasonCodes:   res.Reasons(),
		PolicyVersion: pVersion,
		TdClaims:      policy.ClaimsProto(claims),
		Simulated:     s.cfg.Simulated && claims != nil,
	}
	dry := "deny"
	if res.Allowed {
		out.Decision = kbsv1.Decision_DECISION_ALLOW
		dry = "allow"
	}
	e.Measurements = policy.Measurements(claims)
	e.Simulated = out.Simulated
	e.Details = map[string]string{"dry_run_decision": dry, "tested_spiffe_id": clipDetail(caller.String())}
	if rs := res.Reasons(); len(rs) > 0 {
		e.Details["dry_run_reasons"] = clipDetail(strings.Join(rs, ","))
	}
	if !hasKey {
		e.Details["draft"] = "true"
	}
	return out, nil
}

// clipDetail keeps an audit detail within its 256-byte limit.
func clipDetail(s string) string {
	if len(s) <= 256 {
		return s
	}
	return s[:253] + "..."
}
