package policy

import (
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strings"

	"google.golang.org/protobuf/proto"

	kbsv1 "github.com/cml-project/cml/proto/cml/kbs/v1"
	"github.com/cml-project/cml/tdx/verifier"
)

// Limits on a policy, checked by Validate.
const (
	MaxSPIFFEIDs     = 256 // entries of spiffe_ids
	MaxValues        = 256 // entries of each measurement list
	MaxTCBStatuses   = 8   // entries of allowed_tcb_status
	MaxKEMs          = 8   // entries of allowed_kem_ids
	MeasurementBytes = 48  // MRTD, RTMRs, MRCONFIGID, MROWNER, MROWNERCONFIG, MRSEAM
	TEETCBSVNBytes   = 16  // min_tee_tcb_svn
	// MaxEncodedSize bounds a serialized policy; with the limits above a
	// policy is at most about 1 MiB.
	MaxEncodedSize = 1 << 20
)

// DefaultTCBStatuses is what an empty allowed_tcb_status means.
var DefaultTCBStatuses = []string{string(verifier.TCBStatusUpToDate)}

// tcbStatuses a policy may allow, in Intel's spelling. Revoked is never
// allowed.
var tcbStatuses = []verifier.TCBStatus{
	verifier.TCBStatusUpToDate,
	verifier.TCBStatusSWHardeningNeeded,
	verifier.TCBStatusConfigurationNeeded,
	verifier.TCBStatusConfigurationAndSWHardeningNeeded,
	verifier.TCBStatusOutOfDate,
	verifier.TCBStatusOutOfDateConfigurationNeeded,
}

// SupportedKEMs are the KEMs the server seals to; an empty allowed_kem_ids
// means all of them.
var SupportedKEMs = []kbsv1.HpkeKem{
	kbsv1.HpkeKem_HPKE_KEM_DHKEM_X25519_HKDF_SHA256,
	kbsv1.HpkeKem_HPKE_KEM_MLKEM768_X25519,
}

// measurementField names one pinned-measurement list of a policy and how to
// read it from the policy and from the claims.
type measurementField struct {
	name   string // check and field name
	reason string
	list   func(*kbsv1.Policy) []string
	set    func(*kbsv1.Policy, []string)
	claim  func(*verifier.Claims) verifier.Measurement
}

var measurementFields = []measurementField{
	{"mrtd", ReasonMRTDNotAllowed, (*kbsv1.Policy).GetMrtd, func(p *kbsv1.Policy, v []string) { p.Mrtd = v }, func(c *verifier.Claims) verifier.Measurement { return c.MRTD }},
	{"rtmr0", ReasonRTMR0NotAllowed, (*kbsv1.Policy).GetRtmr0, func(p *kbsv1.Policy, v []string) { p.Rtmr0 = v }, func(c *verifier.Claims) verifier.Measurement { return c.RTMR[0] }},
	{"rtmr1", ReasonRTMR1NotAllowed, (*kbsv1.Policy).GetRtmr1, func(p *kbsv1.Policy, v []string) { p.Rtmr1 = v }, func(c *verifier.Claims) verifier.Measurement { return c.RTMR[1] }},
	{"rtmr2", ReasonRTMR2NotAllowed, (*kbsv1.Policy).GetRtmr2, func(p *kbsv1.Policy, v []string) { p.Rtmr2 = v }, func(c *verifier.Claims) verifier.Measurement { return c.RTMR[2] }},
	{"rtmr3", ReasonRTMR3NotAllowed, (*kbsv1.Policy).GetRtmr3, func(p *kbsv1.Policy, v []string) { p.Rtmr3 = v }, func(c *verifier.Claims) verifier.Measurement { return c.RTMR[3] }},
	{"mr_config_id", ReasonMRConfigIDNotAllowed, (*kbsv1.Policy).GetMrConfigId, func(p *kbsv1.Policy, v []string) { p.MrConfigId = v }, func(c *verifier.Claims) verifier.Measurement { return c.MRConfigID }},
	{"mr_owner", ReasonMROwnerNotAllowed, (*kbsv1.Policy).GetMrOwner, func(p *kbsv1.Policy, v []string) { p.MrOwner = v }, func(c *verifier.Claims) verifier.Measurement { return c.MROwner }},
	{"mr_owner_config", ReasonMROwnerConfigNotAllowed, (*kbsv1.Policy).GetMrOwnerConfig, func(p *kbsv1.Policy, v []string) { p.MrOwnerConfig = v }, func(c *verifier.Claims) verifier.Measurement { return c.MROwnerConfig }},
	{"mr_seam", ReasonMRSeamNotAllowed, (*kbsv1.Policy).GetMrSeam, func(p *kbsv1.Policy, v []string) { p.MrSeam = v }, func(c *verifier.Claims) verifier.Measurement { return c.MRSeam }},
}

// ValidationError lists every problem of a policy. Its text is meant for
// the administrator who wrote the policy: each problem names the field, the
// entry, what is wrong and what is expected.
type ValidationError struct {
	Problems []string
}

func (e *ValidationError) Error() string {
	return "policy: invalid: " + strings.Join(e.Problems, "; ")
}

// ErrNoPolicy is returned by Validate for a nil policy.
var ErrNoPolicy = errors.New("policy: no policy")

// Validate checks a policy as PutPolicy stores it (see the package
// documentation for the rules). Hex values may be in either case. It
// returns ErrNoPolicy for nil and a *ValidationError listing every problem
// otherwise. Output-only fields (key_id, version, create_time, created_by)
// are not checked.
func Validate(p *kbsv1.Policy) error {
	if p == nil {
		return ErrNoPolicy
	}
	var probs []string
	add := func(format string, args ...any) { probs = append(probs, fmt.Sprintf(format, args...)) }

	switch n := len(p.GetSpiffeIds()); {
	case n == 0:
		add("spiffe_ids: required: list at least one workload SPIFFE ID (\"spiffe://td/path\") or prefix (\"spiffe://td/path/*\")")
	case n > MaxSPIFFEIDs:
		add("spiffe_ids: %d entries, at most %d: use a prefix \"spiffe://td/path/*\" for a group of workloads", n, MaxSPIFFEIDs)
	default:
		for i, s := range p.GetSpiffeIds() {
			if _, err := ParseIDPattern(s); err != nil {
				add("spiffe_ids[%d]: %v", i, err)
			}
		}
	}

	pinned := false
	for _, f := range measurementFields {
		vals := f.list(p)
		if len(vals) > 0 {
			pinned = true
		}
		if len(vals) > MaxValues {
			add("%s: %d entries, at most %d", f.name, len(vals), MaxValues)
			continue
		}
		for i, v := range vals {
			if err := checkHex(v, MeasurementBytes); err != nil {
				add("%s[%d]: %v", f.name, i, err)
			}
		}
	}
	if !pinned && !p.GetAllowUnpinnedMeasurements() {
		add("no TD measurement is pinned: set at least one of mrtd, rtmr0..rtmr3, mr_config_id, mr_owner, mr_owner_config, mr_seam (or allow_unpinned_measurements: true, for development only)")
	}

	if v := p.GetMinTeeTcbSvn(); v != "" {
		if err := checkHex(v, TEETCBSVNBytes); err != nil {
			add("min_tee_tcb_svn: %v", err)
		}
	}

	if n := len(p.GetAllowedTcbStatus()); n > MaxTCBStatuses {
		add("allowed_tcb_status: %d entries, at most %d", n, MaxTCBStatuses)
	} else {
		for i, s := range p.GetAllowedTcbStatus() {
			switch {
			case s == string(verifier.TCBStatusRevoked):
				add("allowed_tcb_status[%d]: %q is never allowed: a revoked TCB cannot be trusted", i, s)
			case !slices.Contains(tcbStatuses, verifier.TCBStatus(s)):
				add("allowed_tcb_status[%d]: %q is not a TCB status; use one of %s (Intel's spelling, case-sensitive)", i, s, joinStatuses())
			}
		}
	}

	if n := len(p.GetAllowedKemIds()); n > MaxKEMs {
		add("allowed_kem_ids: %d entries, at most %d", n, MaxKEMs)
	} else {
		for i, k := range p.GetAllowedKemIds() {
			if !slices.Contains(SupportedKEMs, k) {
				add("allowed_kem_ids[%d]: %s (%d) is not supported; use HPKE_KEM_DHKEM_X25519_HKDF_SHA256 or HPKE_KEM_MLKEM768_X25519, or leave the list empty for both", i, k, int32(k))
			}
		}
	}

	if len(probs) > 0 {
		return &ValidationError{Problems: probs}
	}
	return nil
}

func joinStatuses() string {
	s := make([]string, len(tcbStatuses))
	for i, t := range tcbStatuses {
		s[i] = string(t)
	}
	return strings.Join(s, ", ")
}

// checkHex checks that s is exactly n bytes of hex (either case).
func checkHex(s string, n int) error {
	if len(s) != 2*n {
		return fmt.Errorf("%d hex characters, want %d (%d bytes, no \"0x\" prefix)", len(s), 2*n, n)
	}
	if _, err := hex.DecodeString(s); err != nil {
		return fmt.Errorf("not hex: want %d characters from [0-9a-fA-F]", 2*n)
	}
	return nil
}

// Normalize validates p and returns a copy in the form the server stores:
// hex values lowercase, SPIFFE ID patterns canonical, output-only fields
// cleared. p is not modified.
func Normalize(p *kbsv1.Policy) (*kbsv1.Policy, error) {
	if err := Validate(p); err != nil {
		return nil, err
	}
	q := proto.CloneOf(p)
	q.KeyId, q.Version, q.CreateTime, q.CreatedBy = "", 0, nil, ""
	for i, s := range q.SpiffeIds {
		pat, _ := ParseIDPattern(s) // validated above
		q.SpiffeIds[i] = pat.String()
	}
	for _, f := range measurementFields {
		vals := f.list(q)
		for i := range vals {
			vals[i] = strings.ToLower(vals[i])
		}
		f.set(q, vals)
	}
	q.MinTeeTcbSvn = strings.ToLower(q.MinTeeTcbSvn)
	return q, nil
}

// Marshal returns the deterministic protobuf encoding of p, the bytes the
// keystore holds for a policy version.
func Marshal(p *kbsv1.Policy) ([]byte, error) {
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(p)
	if err != nil {
		return nil, fmt.Errorf("policy: marshal: %w", err)
	}
	return b, nil
}

// Unmarshal parses a stored policy and validates it. A policy that does
// not parse or validate is an error: the caller must deny (fail closed).
func Unmarshal(b []byte) (*kbsv1.Policy, error) {
	if len(b) > MaxEncodedSize {
		return nil, fmt.Errorf("policy: stored policy is %d bytes, at most %d", len(b), MaxEncodedSize)
	}
	p := new(kbsv1.Policy)
	if err := proto.Unmarshal(b, p); err != nil {
		return nil, fmt.Errorf("policy: stored policy does not decode: %w", err)
	}
	if err := Validate(p); err != nil {
		return nil, err
	}
	return p, nil
}
