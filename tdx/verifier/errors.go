package verifier

import (
	"context"
	"errors"
	"strings"

	"github.com/google/go-tdx-guest/abi"
	"github.com/google/go-tdx-guest/verify"

	"github.com/cml-project/cml/tdx/collateral"
)

// Reason is a stable, short code for why a quote was rejected. The key
// broker returns it to the caller and writes it to the audit log, so the
// values never change meaning.
type Reason string

// Reasons. Every verification failure maps to exactly one.
const (
	// The quote bytes.
	ReasonQuoteMalformed   Reason = "quote_malformed"   // truncated, inconsistent sizes, unparsable
	ReasonQuoteTooLarge    Reason = "quote_too_large"   // larger than Config.MaxQuoteSize
	ReasonQuoteUnsupported Reason = "quote_unsupported" // not a v4 TDX quote with an ECDSA-P256 attestation key

	// Signatures inside the quote.
	ReasonQuoteSignatureInvalid    Reason = "quote_signature_invalid"     // header+body signature by the attestation key
	ReasonQEReportSignatureInvalid Reason = "qe_report_signature_invalid" // QE report signature by the PCK key
	ReasonQEReportDataMismatch     Reason = "qe_report_data_mismatch"     // QE report does not bind the attestation key and auth data

	// Certificates and revocation.
	ReasonPCKChainInvalid    Reason = "pck_chain_invalid"   // PCK chain missing, unparsable, wrong names or signatures
	ReasonPCKChainUntrusted  Reason = "pck_chain_untrusted" // PCK chain does not lead to a trusted root
	ReasonCertificateExpired Reason = "certificate_expired" // a certificate is outside its validity (expired or not yet valid)
	ReasonPCKRevoked         Reason = "pck_revoked"         // PCK certificate or its CA is on a CRL
	ReasonCRLInvalid         Reason = "crl_invalid"         // a CRL's issuer or signature is wrong

	// Collateral.
	ReasonCollateralMissing     Reason = "collateral_missing"     // not available offline / not published
	ReasonCollateralExpired     Reason = "collateral_expired"     // past its nextUpdate
	ReasonCollateralUnavailable Reason = "collateral_unavailable" // fetching failed (network, timeout, canceled)
	ReasonCollateralInvalid     Reason = "collateral_invalid"     // unparsable, bad signature, wrong id/version, revoked signer

	// The quote against the collateral.
	ReasonTCBInfoMismatch    Reason = "tcb_info_mismatch"    // FMSPC, PCE-ID, TDX module signer or attributes differ from TCB info
	ReasonQEIdentityMismatch Reason = "qe_identity_mismatch" // QE report does not match the QE identity
	ReasonTCBUnsupported     Reason = "tcb_unsupported"      // no TCB level (or TDX module / QE level) matches

	// TCB status other than UpToDate. The quote is authentic: Error.Claims
	// is set, so a policy that explicitly accepts the status can proceed.
	ReasonTCBOutOfDate                         Reason = "tcb_out_of_date" // OutOfDate or OutOfDateConfigurationNeeded
	ReasonTCBRevoked                           Reason = "tcb_revoked"
	ReasonTCBSWHardeningNeeded                 Reason = "tcb_sw_hardening_needed"
	ReasonTCBConfigurationNeeded               Reason = "tcb_configuration_needed"
	ReasonTCBConfigurationAndSWHardeningNeeded Reason = "tcb_configuration_and_sw_hardening_needed"

	// Everything else: fail closed.
	ReasonCanceled           Reason = "verification_canceled" // the context ended before verification started
	ReasonVerificationFailed Reason = "verification_failed"   // an error this package does not recognise
)

// Reasons lists every reason code.
func Reasons() []Reason {
	return []Reason{
		ReasonQuoteMalformed, ReasonQuoteTooLarge, ReasonQuoteUnsupported,
		ReasonQuoteSignatureInvalid, ReasonQEReportSignatureInvalid, ReasonQEReportDataMismatch,
		ReasonPCKChainInvalid, ReasonPCKChainUntrusted, ReasonCertificateExpired, ReasonPCKRevoked, ReasonCRLInvalid,
		ReasonCollateralMissing, ReasonCollateralExpired, ReasonCollateralUnavailable, ReasonCollateralInvalid,
		ReasonTCBInfoMismatch, ReasonQEIdentityMismatch, ReasonTCBUnsupported,
		ReasonTCBOutOfDate, ReasonTCBRevoked, ReasonTCBSWHardeningNeeded, ReasonTCBConfigurationNeeded,
		ReasonTCBConfigurationAndSWHardeningNeeded,
		ReasonCanceled, ReasonVerificationFailed,
	}
}

// Error is the error Verify returns. Reason is the stable code; Err the
// detail for logs (it may name certificates and values, never secrets).
type Error struct {
	Reason Reason
	Err    error
	// Claims is set only for TCB status reasons (tcb_out_of_date,
	// tcb_revoked, tcb_sw_hardening_needed, tcb_configuration_needed,
	// tcb_configuration_and_sw_hardening_needed): everything else verified,
	// and the claims are authentic. A caller may accept the quote only if
	// its policy explicitly allows Claims.TCBStatus.
	Claims *Claims
}

func (e *Error) Error() string {
	if e.Err == nil {
		return "verifier: " + string(e.Reason)
	}
	return "verifier: " + string(e.Reason) + ": " + e.Err.Error()
}

func (e *Error) Unwrap() error { return e.Err }

// ReasonOf returns the reason code of an error from Verify, or
// ReasonVerificationFailed for any other non-nil error.
func ReasonOf(err error) Reason {
	var e *Error
	if errors.As(err, &e) {
		return e.Reason
	}
	return ReasonVerificationFailed
}

// statusReason maps a TCB status to its reason ("" for UpToDate).
func statusReason(s TCBStatus) Reason {
	switch s {
	case TCBStatusUpToDate:
		return ""
	case TCBStatusSWHardeningNeeded:
		return ReasonTCBSWHardeningNeeded
	case TCBStatusConfigurationNeeded:
		return ReasonTCBConfigurationNeeded
	case TCBStatusConfigurationAndSWHardeningNeeded:
		return ReasonTCBConfigurationAndSWHardeningNeeded
	case TCBStatusOutOfDate, TCBStatusOutOfDateConfigurationNeeded:
		return ReasonTCBOutOfDate
	case TCBStatusRevoked:
		return ReasonTCBRevoked
	}
	return ReasonVerificationFailed
}

// sourceReason maps an error from the collateral source.
func sourceReason(err error) Reason {
	switch {
	case errors.Is(err, collateral.ErrMissing):
		return ReasonCollateralMissing
	case errors.Is(err, collateral.ErrExpired):
		return ReasonCollateralExpired
	case errors.Is(err, collateral.ErrInvalid):
		return ReasonCollateralInvalid
	default: // ErrUnavailable, context errors, anything else from a source
		return ReasonCollateralUnavailable
	}
}

// Internal markers for go-tdx-guest's two TCB status failures: the quote
// and collateral are otherwise verified, and this package evaluates the
// status itself (see evaluateStatus).
const (
	markTDStatus Reason = "(td tcb status)"
	markQEStatus Reason = "(qe tcb status)"
)

type matcher func(msg string, err error) bool

func prefix(p string) matcher {
	return func(msg string, _ error) bool { return strings.HasPrefix(msg, p) }
}

func contains(s string) matcher {
	return func(msg string, _ error) bool { return strings.Contains(msg, s) }
}

// sentinel matches a go-tdx-guest sentinel, returned as is or wrapped with
// "%v" (which loses the chain but keeps the text at the end).
func sentinel(s error) matcher {
	return func(msg string, err error) bool {
		return errors.Is(err, s) || msg == s.Error() || strings.HasSuffix(msg, ": "+s.Error())
	}
}

func all(ms ...matcher) matcher {
	return func(msg string, err error) bool {
		for _, m := range ms {
			if !m(msg, err) {
				return false
			}
		}
		return true
	}
}

const (
	x509Expired = "x509: certificate has expired or is not yet valid"
	x509Unknown = "x509: certificate signed by unknown authority"
)

// errorTable maps go-tdx-guest v0.3.1 verify errors to reasons. Most of its
// errors are formatted with %v, so only text survives; this table is the
// one place that reads it. Order matters: the first match wins. Every row
// is covered by TestErrorTable (with the library's exact messages) and most
// by end-to-end tests against the simulator. Errors from the collateral
// source are mapped before this table, by type (sourceReason).
var errorTable = []struct {
	match  matcher
	reason Reason
}{
	// TCB status: everything else was verified before these checks.
	{prefix("TDX TCB info reported by Intel PCS failed TCB status check: "), markTDStatus},
	{prefix("QE Identity reported by Intel PCS failed TCB status check: "), markQEStatus},

	// Quote signature and QE report (verifyQuote).
	{sentinel(verify.ErrHashVerificationFail), ReasonQuoteSignatureInvalid},
	{prefix("attestation key in the quote is invalid"), ReasonQuoteSignatureInvalid},
	{prefix("unable to convert QuoteV4's signature to DER format"), ReasonQuoteMalformed},
	{prefix("could not get message digest for verification"), ReasonQuoteMalformed},
	{prefix("error verifying QE report signature"), ReasonQEReportSignatureInvalid},
	{prefix("error verifying QE report data"), ReasonQEReportDataMismatch},
	{contains("Intel PCS's reported TDX TCB info"), ReasonTCBInfoMismatch},
	{contains("Intel PCS's reported QE Identity"), ReasonQEIdentityMismatch},

	// PCK chain and its CRLs (verifyPCKCertificationChain).
	{prefix("PCK Leaf certificate in PCK certificate chain was revoked"), ReasonPCKRevoked},
	{prefix("intermediate certificate in PCK certificate chain was revoked"), ReasonPCKRevoked},
	{prefix("root CA CRL verification failed using root certificate in PCK Certificate chain"), ReasonCRLInvalid},
	{prefix("PCK CRL verification failed using intermediate certificate"), ReasonCRLInvalid},
	{all(prefix("issuer's name("), contains("in PCK CRL does not match")), ReasonCRLInvalid},
	{prefix("error verifying PCK Certificate: " + x509Unknown), ReasonPCKChainUntrusted},
	{prefix("error verifying PCK Certificate: " + x509Expired), ReasonCertificateExpired},
	{prefix("error verifying PCK Certificate"), ReasonPCKChainInvalid},
	{prefix("unable to validate root cert"), ReasonPCKChainInvalid},
	{prefix("unable to validate Intermediate CA certificate"), ReasonPCKChainInvalid},
	{prefix("unable to validate PCK leaf certificate"), ReasonPCKChainInvalid},
	{sentinel(verify.ErrRootCaCertExpired), ReasonCertificateExpired},
	{sentinel(verify.ErrIntermediateCaCertExpired), ReasonCertificateExpired},
	{sentinel(verify.ErrPckLeafCertExpired), ReasonCertificateExpired},
	{sentinel(verify.ErrPCKCertChainNil), ReasonPCKChainInvalid},
	{sentinel(verify.ErrPCKCertChainInvalid), ReasonPCKChainInvalid},
	{sentinel(verify.ErrPckCertCANil), ReasonPCKChainInvalid},
	{prefix("could not interpret PCK leaf certificate"), ReasonPCKChainInvalid},
	{prefix("could not interpret Intermediate CA certificate"), ReasonPCKChainInvalid},
	{prefix("could not interpret Root CA certificate"), ReasonPCKChainInvalid},
	{prefix("unexpected trailing bytes were found in PCK Certificate Chain"), ReasonPCKChainInvalid},
	{prefix("could not get PCK certificate extensions"), ReasonPCKChainInvalid},

	// Collateral expiry and presence (verifyCollateral).
	{sentinel(verify.ErrTcbInfoExpired), ReasonCollateralExpired},
	{sentinel(verify.ErrQeIdentityExpired), ReasonCollateralExpired},
	{sentinel(verify.ErrRootCaCrlExpired), ReasonCollateralExpired},
	{sentinel(verify.ErrPCKCrlExpired), ReasonCollateralExpired},
	{sentinel(verify.ErrTcbInfoSigningCertExpired), ReasonCertificateExpired},
	{sentinel(verify.ErrTcbInfoRootCertExpired), ReasonCertificateExpired},
	{sentinel(verify.ErrQeIdentitySigningCertExpired), ReasonCertificateExpired},
	{sentinel(verify.ErrQeIdentityRootCertExpired), ReasonCertificateExpired},
	{sentinel(verify.ErrPCKCrlSigningCertExpired), ReasonCertificateExpired},
	{sentinel(verify.ErrPCKCrlRootCertExpired), ReasonCertificateExpired},
	{prefix("could not verify collaterals obtained"), ReasonCollateralInvalid},

	// TCB info and QE identity signatures (verifyTCBinfo, verifyQeIdentity).
	{all(contains("response verification failed"), contains(x509Expired)), ReasonCertificateExpired},
	{all(contains("response verification failed"), contains("CRL verification failed")), ReasonCRLInvalid},
	{prefix("tcbInfo response verification failed"), ReasonCollateralInvalid},
	{prefix("QeIdentity response verification failed"), ReasonCollateralInvalid},
	{prefix("tcbInfo ID "), ReasonCollateralInvalid},
	{prefix("tcbInfo version "), ReasonCollateralInvalid},
	{prefix("QeIdentity ID "), ReasonCollateralInvalid},
	{prefix("QeIdentity version "), ReasonCollateralInvalid},
	{sentinel(verify.ErrTcbInfoTcbLevelsMissing), ReasonCollateralInvalid},
	{sentinel(verify.ErrQeIdentityTcbLevelsMissing), ReasonCollateralInvalid},

	// Fetched but unparsable collateral (obtainCollateral); fetch failures
	// themselves are mapped by type before this table.
	{prefix("unable to receive "), ReasonCollateralInvalid},
	{sentinel(verify.ErrEmptyRootCRLUrl), ReasonCollateralInvalid},

	// Quote structure (normally caught by this package's own parser first).
	{sentinel(abi.ErrTeeType), ReasonQuoteUnsupported},
	{prefix("QuoteV4 invalid"), ReasonQuoteMalformed},
	{prefix("unsupported quote type"), ReasonQuoteUnsupported},
}

// classify maps a go-tdx-guest error to a reason; srcErr is the first error
// the collateral source returned during the call, if any.
func classify(err, srcErr error) Reason {
	msg := err.Error()
	// go-tdx-guest wraps every fetch failure as "unable to receive ...: %v".
	if srcErr != nil && strings.HasPrefix(msg, "unable to receive ") {
		return sourceReason(srcErr)
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return ReasonCollateralUnavailable
	}
	for _, row := range errorTable {
		if row.match(msg, err) {
			return row.reason
		}
	}
	return ReasonVerificationFailed
}
