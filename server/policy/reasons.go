package policy

import (
	"slices"

	"github.com/cml-project/cml/tdx/verifier"
)

// Reason codes. They are returned to callers (ErrorDetail.reason_code,
// PolicyCheck.reason_code), written to the audit log and used as metric
// labels, so their values never change meaning. The quote verifier's codes
// (verifier.Reason: quote_malformed, pck_revoked, collateral_expired,
// tcb_out_of_date, ...) are part of the same space; AllReasons lists both.
const (
	// Policy checks (Evaluate).
	ReasonPolicyInvalid           = "policy_invalid" // the stored policy does not decode or validate: fail closed
	ReasonQuoteMissing            = "quote_missing"  // no verified claims were given to Evaluate
	ReasonSPIFFEIDNotAllowed      = "spiffe_id_not_allowed"
	ReasonMRTDNotAllowed          = "mrtd_not_allowed"
	ReasonRTMR0NotAllowed         = "rtmr0_not_allowed"
	ReasonRTMR1NotAllowed         = "rtmr1_not_allowed"
	ReasonRTMR2NotAllowed         = "rtmr2_not_allowed"
	ReasonRTMR3NotAllowed         = "rtmr3_not_allowed"
	ReasonMRConfigIDNotAllowed    = "mr_config_id_not_allowed"
	ReasonMROwnerNotAllowed       = "mr_owner_not_allowed"
	ReasonMROwnerConfigNotAllowed = "mr_owner_config_not_allowed"
	ReasonMRSeamNotAllowed        = "mr_seam_not_allowed"
	ReasonDebugTD                 = "debug_td"
	ReasonTEETCBSVNTooLow         = "tee_tcb_svn_too_low"
	ReasonTCBStatusNotAllowed     = "tcb_status_not_allowed" // a status with no verifier code (UpToDate, or not evaluated) is not allowed
	ReasonKEMNotAllowed           = "kem_not_allowed"

	// Key release (the broker).
	ReasonNonceUnknown       = "nonce_unknown"      // never issued, or forgotten after its grace period
	ReasonNonceExpired       = "nonce_expired"      // issued, but its TTL passed before ReleaseKey
	ReasonNonceReused        = "nonce_reused"       // already consumed by an earlier ReleaseKey
	ReasonNonceWrongCaller   = "nonce_wrong_caller" // issued to another SPIFFE ID (the nonce is burnt)
	ReasonNonceWrongKey      = "nonce_wrong_key"    // issued for another key id (the nonce is burnt)
	ReasonTooManyChallenges  = "too_many_challenges"
	ReasonReportDataMismatch = "report_data_mismatch"
	ReasonKeyNotFound        = "key_not_found"
	ReasonKeyVersionNotFound = "key_version_not_found"
	ReasonKeyDisabled        = "key_disabled"
	ReasonKeyDestroyed       = "key_destroyed"
	ReasonKeyExists          = "key_exists"
	ReasonNoPolicy           = "no_policy"
	ReasonTooManyVersions    = "too_many_versions"
	ReasonPrimaryVersion     = "primary_version" // DestroyKey of the primary version alone: rotate first, or destroy the whole key

	// Any RPC.
	ReasonRequestTooLarge  = "request_too_large"
	ReasonInvalidArgument  = "invalid_argument"
	ReasonNotAuthorized    = "not_authorized"
	ReasonUnauthenticated  = "unauthenticated"
	ReasonCanceled         = "canceled"
	ReasonDeadlineExceeded = "deadline_exceeded"
	ReasonUnimplemented    = "unimplemented"
	ReasonInternal         = "internal"
)

// ownReasons are the codes defined above, in the order of the reference
// table in docs/server.md.
var ownReasons = []string{
	ReasonPolicyInvalid, ReasonQuoteMissing, ReasonSPIFFEIDNotAllowed,
	ReasonMRTDNotAllowed, ReasonRTMR0NotAllowed, ReasonRTMR1NotAllowed,
	ReasonRTMR2NotAllowed, ReasonRTMR3NotAllowed, ReasonMRConfigIDNotAllowed,
	ReasonMROwnerNotAllowed, ReasonMROwnerConfigNotAllowed, ReasonMRSeamNotAllowed,
	ReasonDebugTD, ReasonTEETCBSVNTooLow, ReasonTCBStatusNotAllowed,
	ReasonKEMNotAllowed,
	ReasonNonceUnknown, ReasonNonceExpired, ReasonNonceReused,
	ReasonNonceWrongCaller, ReasonNonceWrongKey, ReasonTooManyChallenges,
	ReasonReportDataMismatch, ReasonKeyNotFound, ReasonKeyVersionNotFound,
	ReasonKeyDisabled, ReasonKeyDestroyed, ReasonKeyExists, ReasonNoPolicy,
	ReasonTooManyVersions, ReasonPrimaryVersion,
	ReasonRequestTooLarge, ReasonInvalidArgument, ReasonNotAuthorized,
	ReasonUnauthenticated, ReasonCanceled, ReasonDeadlineExceeded,
	ReasonUnimplemented, ReasonInternal,
}

// AllReasons returns every reason code the server can return or record:
// the ones defined in this package, then the quote verifier's.
func AllReasons() []string {
	out := slices.Clone(ownReasons)
	for _, r := range verifier.Reasons() {
		out = append(out, string(r))
	}
	return out
}
