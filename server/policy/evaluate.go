package policy

import (
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"slices"
	"strings"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	kbsv1 "github.com/cml-project/cml/proto/cml/kbs/v1"
	"github.com/cml-project/cml/tdx/verifier"
)

// Check names, in evaluation order (PolicyCheck.name).
const (
	CheckPolicy        = "policy" // only when there is no usable policy
	CheckQuote         = "quote"
	CheckSPIFFEID      = "spiffe_id"
	CheckDebug         = "debug"
	CheckMinTEETCBSVN  = "min_tee_tcb_svn"
	CheckTCBStatus     = "tcb_status"
	CheckKEM           = "kem"
	maxCheckTextLength = 4096
)

// Check is the outcome of one check.
type Check struct {
	Name     string
	Passed   bool
	Reason   string // reason code when failed, "" when passed
	Expected string // what the policy allows, for humans
	Actual   string // what was presented, for humans
}

// Result is the outcome of an evaluation: every check run, in order, and
// the decision. Allowed is true only if at least the quote and SPIFFE ID
// checks ran and every check passed.
type Result struct {
	Allowed bool
	Checks  []Check
}

// Reasons returns the reason codes of the failed checks, in order.
func (r Result) Reasons() []string {
	var out []string
	for _, c := range r.Checks {
		if !c.Passed {
			out = append(out, c.Reason)
		}
	}
	return out
}

// Reason returns the reason code of the first failed check, or "" if the
// result is an allow. A denial without a failed check (impossible by
// construction) reports policy_invalid, so a caller never sees an empty
// reason for a denial.
func (r Result) Reason() string {
	for _, c := range r.Checks {
		if !c.Passed {
			return c.Reason
		}
	}
	if !r.Allowed {
		return ReasonPolicyInvalid
	}
	return ""
}

// Proto returns the checks as PolicyCheck messages.
func (r Result) Proto() []*kbsv1.PolicyCheck {
	out := make([]*kbsv1.PolicyCheck, len(r.Checks))
	for i, c := range r.Checks {
		out[i] = &kbsv1.PolicyCheck{Name: c.Name, Passed: c.Passed, ReasonCode: c.Reason, Expected: clip(c.Expected), Actual: clip(c.Actual)}
	}
	return out
}

func clip(s string) string {
	if len(s) <= maxCheckTextLength {
		return s
	}
	return s[:maxCheckTextLength-3] + "..."
}

// Evaluate checks the caller's SPIFFE ID, the TD's claims and the KEM the TD
// asked for against p, running every check (it does not stop at the first
// failure) in this order: quote, spiffe_id, mrtd, rtmr0..rtmr3,
// mr_config_id, mr_owner, mr_owner_config, mr_seam, debug, min_tee_tcb_svn,
// tcb_status, kem.
//
// claims are the verified quote's claims — also when the verifier returned a
// TCB status error with claims (for example OutOfDate): the tcb_status check
// then decides. A nil claims fails the quote check (quote_missing) and skips
// the checks that need one. kem HPKE_KEM_UNSPECIFIED skips the kem check
// (a dry run that does not know the KEM).
//
// It fails closed: a nil policy is a single failed "policy" check
// (no_policy), and a policy that does not validate a single failed "policy"
// check (policy_invalid).
func Evaluate(p *kbsv1.Policy, caller spiffeid.ID, claims *verifier.Claims, kem kbsv1.HpkeKem) Result {
	return evaluate(p, caller, claims, ReasonQuoteMissing, kem)
}

// EvaluateFailedQuote is Evaluate for a quote that did not verify: the quote
// check fails with the verifier's reason code, the checks that need claims
// are skipped, and the others (spiffe_id, kem) still run and are reported.
func EvaluateFailedQuote(p *kbsv1.Policy, caller spiffeid.ID, reason string, kem kbsv1.HpkeKem) Result {
	if reason == "" {
		reason = ReasonQuoteMissing
	}
	return evaluate(p, caller, nil, reason, kem)
}

func evaluate(p *kbsv1.Policy, caller spiffeid.ID, claims *verifier.Claims, quoteReason string, kem kbsv1.HpkeKem) Result {
	if p == nil {
		return Result{Checks: []Check{{Name: CheckPolicy, Reason: ReasonNoPolicy, Expected: "a release policy", Actual: "none"}}}
	}
	if err := Validate(p); err != nil {
		return Result{Checks: []Check{{Name: CheckPolicy, Reason: ReasonPolicyInvalid, Expected: "a valid release policy", Actual: err.Error()}}}
	}
	var checks []Check

	// quote
	if claims == nil {
		checks = append(checks, Check{Name: CheckQuote, Reason: quoteReason, Expected: "an authentic TDX quote", Actual: "not verified: " + quoteReason})
	} else {
		checks = append(checks, Check{Name: CheckQuote, Passed: true, Expected: "an authentic TDX quote", Actual: "verified"})
	}

	// spiffe_id
	patterns := make([]IDPattern, 0, len(p.GetSpiffeIds()))
	for _, s := range p.GetSpiffeIds() {
		if pat, err := ParseIDPattern(s); err == nil {
			patterns = append(patterns, pat)
		}
	}
	actual := caller.String()
	if caller.IsZero() {
		actual = "none"
	}
	checks = append(checks, result(CheckSPIFFEID, MatchAny(patterns, caller), ReasonSPIFFEIDNotAllowed, strings.Join(p.GetSpiffeIds(), ", "), actual))

	if claims != nil {
		// Measurements are public values (anyone with the TD image can
		// compute them), so they are compared as plain lowercase hex; no
		// constant-time comparison is needed or used.
		for _, f := range measurementFields {
			got := f.claim(claims).Hex()
			allowed := f.list(p)
			if len(allowed) == 0 {
				checks = append(checks, Check{Name: f.name, Passed: true, Expected: "any", Actual: got})
				continue
			}
			ok := slices.ContainsFunc(allowed, func(v string) bool { return strings.EqualFold(v, got) })
			checks = append(checks, result(f.name, ok, f.reason, strings.ToLower(strings.Join(allowed, ", ")), got))
		}

		// debug
		exp := "DEBUG attribute clear"
		if p.GetAllowDebug() {
			exp = "any (allow_debug)"
		}
		act := "DEBUG attribute clear"
		if claims.Debug {
			act = "DEBUG attribute set"
		}
		checks = append(checks, result(CheckDebug, !claims.Debug || p.GetAllowDebug(), ReasonDebugTD, exp, act))

		// min_tee_tcb_svn
		got := hex.EncodeToString(claims.TEETCBSVN[:])
		if m := p.GetMinTeeTcbSvn(); m == "" {
			checks = append(checks, Check{Name: CheckMinTEETCBSVN, Passed: true, Expected: "any", Actual: got})
		} else {
			minSVN, _ := hex.DecodeString(m) // validated
			ok, first := svnAtLeast(claims.TEETCBSVN, minSVN)
			if !ok {
				got = fmt.Sprintf("%s (component %d is %d, below %d)", got, first, claims.TEETCBSVN[first], minSVN[first])
			}
			checks = append(checks, result(CheckMinTEETCBSVN, ok, ReasonTEETCBSVNTooLow, "each component >= "+strings.ToLower(m), got))
		}

		// tcb_status
		allowed := p.GetAllowedTcbStatus()
		if len(allowed) == 0 {
			allowed = DefaultTCBStatuses
		}
		status := claims.TCBStatus
		ok := status != verifier.TCBStatusNotEvaluated && status != verifier.TCBStatusRevoked && slices.Contains(allowed, string(status))
		act = string(status)
		if status == verifier.TCBStatusNotEvaluated {
			act = "not evaluated"
		}
		if len(claims.AdvisoryIDs) > 0 {
			act += " (" + strings.Join(claims.AdvisoryIDs, ", ") + ")"
		}
		checks = append(checks, result(CheckTCBStatus, ok, TCBStatusReason(status), strings.Join(allowed, ", "), act))
	}

	// kem
	if kem != kbsv1.HpkeKem_HPKE_KEM_UNSPECIFIED {
		allowed := p.GetAllowedKemIds()
		if len(allowed) == 0 {
			allowed = SupportedKEMs
		}
		names := make([]string, len(allowed))
		for i, k := range allowed {
			names[i] = k.String()
		}
		ok := slices.Contains(SupportedKEMs, kem) && slices.Contains(allowed, kem)
		checks = append(checks, result(CheckKEM, ok, ReasonKEMNotAllowed, strings.Join(names, ", "), kem.String()))
	}

	allow := claims != nil
	for _, c := range checks {
		allow = allow && c.Passed
	}
	return Result{Allowed: allow, Checks: checks}
}

func result(name string, ok bool, reason, expected, actual string) Check {
	c := Check{Name: name, Passed: ok, Expected: expected, Actual: actual}
	if !ok {
		c.Reason = reason
	}
	return c
}

// svnAtLeast compares TEE_TCB_SVN component-wise, as Intel's TCB level
// matching does: every one of the 16 bytes must be greater than or equal to
// the minimum's byte at the same position. It is not a lexicographic or
// numeric comparison: 0x0300... is not "at least" 0x0201... because
// component 1 (0x00) is below 0x01. It returns the first failing component.
func svnAtLeast(got [16]byte, minimum []byte) (bool, int) {
	for i := range got {
		if i < len(minimum) && got[i] < minimum[i] {
			return false, i
		}
	}
	return true, 0
}

// TCBStatusReason returns the reason code for a TCB status a policy does not
// allow: the verifier's code for the status (tcb_out_of_date,
// tcb_sw_hardening_needed, ...), or tcb_status_not_allowed for a status that
// has none (UpToDate missing from the list, or no status at all).
func TCBStatusReason(s verifier.TCBStatus) string {
	switch s {
	case verifier.TCBStatusOutOfDate, verifier.TCBStatusOutOfDateConfigurationNeeded:
		return string(verifier.ReasonTCBOutOfDate)
	case verifier.TCBStatusSWHardeningNeeded:
		return string(verifier.ReasonTCBSWHardeningNeeded)
	case verifier.TCBStatusConfigurationNeeded:
		return string(verifier.ReasonTCBConfigurationNeeded)
	case verifier.TCBStatusConfigurationAndSWHardeningNeeded:
		return string(verifier.ReasonTCBConfigurationAndSWHardeningNeeded)
	case verifier.TCBStatusRevoked:
		return string(verifier.ReasonTCBRevoked)
	}
	return ReasonTCBStatusNotAllowed
}

// IsTCBStatusReason reports whether r is one of the verifier's TCB status
// reasons, for which a *verifier.Error carries authentic claims that the
// policy's tcb_status check must judge.
func IsTCBStatusReason(r verifier.Reason) bool {
	switch r {
	case verifier.ReasonTCBOutOfDate, verifier.ReasonTCBSWHardeningNeeded,
		verifier.ReasonTCBConfigurationNeeded, verifier.ReasonTCBConfigurationAndSWHardeningNeeded,
		verifier.ReasonTCBRevoked:
		return true
	}
	return false
}

// ClaimsProto returns the claims as a TdClaims message (lowercase hex).
func ClaimsProto(c *verifier.Claims) *kbsv1.TdClaims {
	if c == nil {
		return nil
	}
	return &kbsv1.TdClaims{
		Mrtd:          c.MRTD.Hex(),
		Rtmr0:         c.RTMR[0].Hex(),
		Rtmr1:         c.RTMR[1].Hex(),
		Rtmr2:         c.RTMR[2].Hex(),
		Rtmr3:         c.RTMR[3].Hex(),
		MrConfigId:    c.MRConfigID.Hex(),
		MrOwner:       c.MROwner.Hex(),
		MrOwnerConfig: c.MROwnerConfig.Hex(),
		MrSeam:        c.MRSeam.Hex(),
		MrSignerSeam:  c.MRSignerSeam.Hex(),
		TdAttributes:  le64Hex(c.TDAttributes),
		Debug:         c.Debug,
		Xfam:          le64Hex(c.XFAM),
		TeeTcbSvn:     hex.EncodeToString(c.TEETCBSVN[:]),
		TcbStatus:     string(c.TCBStatus),
		AdvisoryIds:   slices.Clone(c.AdvisoryIDs),
		Fmspc:         c.FMSPC,
		ReportData:    hex.EncodeToString(c.ReportData[:]),
	}
}

// le64Hex is a uint64 field in the byte order of the quote body
// (little-endian), as TdClaims documents.
func le64Hex(v uint64) string {
	return hex.EncodeToString(binary.LittleEndian.AppendUint64(nil, v))
}

// Measurements returns the TD values an audit record keeps, by name, in
// lowercase hex. It never includes REPORTDATA (it binds the nonce).
func Measurements(c *verifier.Claims) map[string]string {
	if c == nil {
		return nil
	}
	m := map[string]string{
		"tee_tcb_svn":    hex.EncodeToString(c.TEETCBSVN[:]),
		"td_attributes":  le64Hex(c.TDAttributes),
		"xfam":           le64Hex(c.XFAM),
		"mr_signer_seam": c.MRSignerSeam.Hex(),
	}
	for _, f := range measurementFields {
		m[f.name] = f.claim(c).Hex()
	}
	if _, err := hex.DecodeString(c.FMSPC); err == nil && c.FMSPC != "" {
		m["fmspc"] = strings.ToLower(c.FMSPC)
	}
	return m
}
