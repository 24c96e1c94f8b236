// Package policy is the key release policy: its validation when an
// administrator writes it, and its evaluation against a caller and a
// verified TDX quote. The policy is data — the kbsv1.Policy message — and
// this package decides nothing about authenticity: the quote verifier
// (tdx/verifier) says whether a quote is genuine, this package whether what
// it says is acceptable.
//
// Usage:
//
//	p, err := policy.Normalize(req.Policy) // PutPolicy: validate, lowercase, clear output-only fields
//	b, err := policy.Marshal(p)           // deterministic bytes for the keystore
//
//	p, err := policy.Unmarshal(stored.Bytes) // a stored policy that fails to decode or validate: deny
//	res := policy.Evaluate(p, callerID, claims, kbsv1.HpkeKem_HPKE_KEM_DHKEM_X25519_HKDF_SHA256)
//	if !res.Allowed { deny(res.Reason()) }   // res.Checks: every check with expected/actual
//
// # Validation (write time)
//
//   - spiffe_ids: required, 1 to 256 entries, each an exact SPIFFE ID with a
//     path or a prefix "spiffe://td/path/*" (see IDPattern), at most 2048
//     bytes.
//   - mrtd, rtmr0..rtmr3, mr_config_id, mr_owner, mr_owner_config, mr_seam:
//     at most 256 entries each, each exactly 48 bytes of hex (96
//     characters, either case; stored lowercase).
//   - At least one of those lists is non-empty, unless
//     allow_unpinned_measurements is true.
//   - min_tee_tcb_svn: empty or exactly 16 bytes of hex.
//   - allowed_tcb_status: at most 8 entries, each one of UpToDate,
//     SWHardeningNeeded, ConfigurationNeeded,
//     ConfigurationAndSWHardeningNeeded, OutOfDate,
//     OutOfDateConfigurationNeeded. Revoked is refused.
//   - allowed_kem_ids: at most 8 entries, each HPKE_KEM_DHKEM_X25519_HKDF_SHA256
//     or HPKE_KEM_MLKEM768_X25519.
//
// Validate reports every problem at once (*ValidationError), each naming
// the field, the entry index and the fix.
//
// # Evaluation
//
// Every check runs, in a fixed order, and reports what the policy expected
// and what was presented (Result.Checks), so a dry run (AdminService
// TestPolicy) shows all problems at once; the decision is an allow only if
// every check passed. The checks:
//
//	quote            the quote verified (claims present)               quote_missing or the verifier's code
//	spiffe_id        the caller matches an entry of spiffe_ids          spiffe_id_not_allowed
//	mrtd … mr_seam   the TD value equals an entry (empty list: any)     mrtd_not_allowed, rtmr0_not_allowed, …
//	debug            DEBUG clear, unless allow_debug                    debug_td
//	min_tee_tcb_svn  every one of the 16 components ≥ the minimum's     tee_tcb_svn_too_low
//	tcb_status       Intel's status is in allowed_tcb_status            tcb_out_of_date, tcb_sw_hardening_needed, …,
//	                 (default ["UpToDate"]; Revoked and "not              or tcb_status_not_allowed
//	                 evaluated" never pass)
//	kem              the TD's HPKE KEM is in allowed_kem_ids (default   kem_not_allowed
//	                 both); skipped if the KEM is unspecified
//
// It fails closed: a nil policy, a stored policy that does not validate, or
// missing claims is a denial. min_tee_tcb_svn is compared component by
// component, as Intel's TCB levels are: each byte of the TD's TEE_TCB_SVN
// must be at least the byte at the same position, so a higher major version
// does not compensate a lower minor one.
//
// A TCB status the policy does not allow is reported with the verifier's
// code for that status (an OutOfDate platform gives tcb_out_of_date, as if
// the verifier had refused it), so the reason a workload sees does not
// depend on whether the policy or the verifier's default refused it;
// tcb_status_not_allowed is left for a status without such a code (UpToDate
// when the policy lists only other statuses, or no evaluation at all).
//
// Measurements and SPIFFE IDs are public, so they are compared with ordinary
// string comparisons: constant-time comparison protects secrets, and there
// is none here.
//
// # Reason codes
//
// The reason codes of the whole server — policy checks, the key release
// protocol (nonce_*, report_data_mismatch, key_*), and generic ones
// (invalid_argument, not_authorized, request_too_large, internal) — are the
// constants of this package; AllReasons adds the quote verifier's
// (verifier.Reasons). They are stable: clients branch on them and the audit
// log keeps them.
package policy
