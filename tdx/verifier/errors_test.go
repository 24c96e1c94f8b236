package verifier

import (
	"errors"
	"fmt"
	"testing"

	"github.com/google/go-tdx-guest/abi"
	"github.com/google/go-tdx-guest/verify"
)

// TestErrorTable feeds the classifier go-tdx-guest v0.3.1's own error texts
// (copied from verify/verify.go, formatted as the library formats them) and
// checks every row of errorTable is reached by at least one.
func TestErrorTable(t *testing.T) {
	wrap := func(format string, err error) error { return fmt.Errorf(format, err) }
	cases := []struct {
		err  error
		want Reason
	}{
		{errors.New(`TDX TCB info reported by Intel PCS failed TCB status check: TCB Status is not "UpToDate", found "OutOfDate"`), markTDStatus},
		{errors.New(`QE Identity reported by Intel PCS failed TCB status check: TCB Status is not "UpToDate", found "OutOfDate"`), markQEStatus},
		{verify.ErrHashVerificationFail, ReasonQuoteSignatureInvalid},
		{errors.New(`attestation key in the quote is invalid: public key is not on curve "P-256"`), ReasonQuoteSignatureInvalid},
		{errors.New(`unable to convert QuoteV4's signature to DER format: signature size is 3 bytes. Expected 64 bytes`), ReasonQuoteMalformed},
		{errors.New(`could not get message digest for verification: could not convert header to ABI bytes: x`), ReasonQuoteMalformed},
		{errors.New(`error verifying QE report signature: QE report's signature verification using PCK Leaf Certificate failed: x509: ECDSA verification failure`), ReasonQEReportSignatureInvalid},
		{wrap("error verifying QE report data: %v", verify.ErrSHA56VerificationFail), ReasonQEReportDataMismatch},
		{errors.New(`PCEID from PCK Certificate("0000") is not equal to PCEID from Intel PCS's reported TDX TCB info("0001")`), ReasonTCBInfoMismatch},
		{errors.New(`AttributesMask value("00") is not equal to TdxModule.Attributes field in Intel PCS's reported TDX TCB info("01")`), ReasonTCBInfoMismatch},
		{errors.New(`MRSIGNER value("aa") in QE Report is not equal to MRSIGNER value("bb") in Intel PCS's reported QE Identity`), ReasonQEIdentityMismatch},
		{errors.New(`AttributesMask value([1]) is not equal to Attributes value({[2]}) in Intel PCS's reported QE Identity`), ReasonQEIdentityMismatch},
		{errors.New(`PCK Leaf certificate in PCK certificate chain was revoked at 2024-01-01 00:00:00 +0000 UTC`), ReasonPCKRevoked},
		{errors.New(`intermediate certificate in PCK certificate chain was revoked at 2024-01-01 00:00:00 +0000 UTC`), ReasonPCKRevoked},
		{errors.New(`root CA CRL verification failed using root certificate in PCK Certificate chain: CRL is empty`), ReasonCRLInvalid},
		{errors.New(`PCK CRL verification failed using intermediate certificate in PCK Certificate chain: CRL is empty`), ReasonCRLInvalid},
		{errors.New(`issuer's name("CN=a") in PCK CRL does not match with PCK Leaf Certificate's issuer name("CN=b")`), ReasonCRLInvalid},
		{errors.New(`error verifying PCK Certificate: x509: certificate signed by unknown authority (true)`), ReasonPCKChainUntrusted},
		{errors.New(`error verifying PCK Certificate: x509: certificate has expired or is not yet valid: current time ... (true)`), ReasonCertificateExpired},
		{errors.New(`error verifying PCK Certificate: x509: too many intermediates for path length constraint (true)`), ReasonPCKChainInvalid},
		{errors.New(`unable to validate root cert: certificate signature verification using parent certificate failed: x`), ReasonPCKChainInvalid},
		{errors.New(`unable to validate Intermediate CA certificate: "x" is not expected in certificate's subject name. Expected "Intel SGX PCK Platform CA"`), ReasonPCKChainInvalid},
		{errors.New(`unable to validate PCK leaf certificate: certificate's version found 1. Expected 3`), ReasonPCKChainInvalid},
		{verify.ErrRootCaCertExpired, ReasonCertificateExpired},
		{verify.ErrIntermediateCaCertExpired, ReasonCertificateExpired},
		{verify.ErrPckLeafCertExpired, ReasonCertificateExpired},
		{verify.ErrPCKCertChainNil, ReasonPCKChainInvalid},
		{verify.ErrPCKCertChainInvalid, ReasonPCKChainInvalid},
		{verify.ErrPckCertCANil, ReasonPCKChainInvalid},
		{errors.New(`could not interpret PCK leaf certificate DER bytes: x509: malformed certificate`), ReasonPCKChainInvalid},
		{errors.New(`could not interpret Intermediate CA certificate DER bytes: x509: malformed certificate`), ReasonPCKChainInvalid},
		{errors.New(`could not interpret Root CA certificate DER bytes: x509: malformed certificate`), ReasonPCKChainInvalid},
		{errors.New(`unexpected trailing bytes were found in PCK Certificate Chain: 3 byte(s)`), ReasonPCKChainInvalid},
		{errors.New(`could not get PCK certificate extensions: PCK certificate extensions length found 5. Expected 6`), ReasonPCKChainInvalid},
		{wrap("could not verify collaterals obtained: %v", verify.ErrTcbInfoExpired), ReasonCollateralExpired},
		{wrap("could not verify collaterals obtained: %v", verify.ErrQeIdentityExpired), ReasonCollateralExpired},
		{wrap("could not verify collaterals obtained: %v", verify.ErrRootCaCrlExpired), ReasonCollateralExpired},
		{wrap("could not verify collaterals obtained: %v", verify.ErrPCKCrlExpired), ReasonCollateralExpired},
		{wrap("could not verify collaterals obtained: %v", verify.ErrTcbInfoSigningCertExpired), ReasonCertificateExpired},
		{wrap("could not verify collaterals obtained: %v", verify.ErrTcbInfoRootCertExpired), ReasonCertificateExpired},
		{wrap("could not verify collaterals obtained: %v", verify.ErrQeIdentitySigningCertExpired), ReasonCertificateExpired},
		{wrap("could not verify collaterals obtained: %v", verify.ErrQeIdentityRootCertExpired), ReasonCertificateExpired},
		{wrap("could not verify collaterals obtained: %v", verify.ErrPCKCrlSigningCertExpired), ReasonCertificateExpired},
		{wrap("could not verify collaterals obtained: %v", verify.ErrPCKCrlRootCertExpired), ReasonCertificateExpired},
		{wrap("could not verify collaterals obtained: %v", verify.ErrMissingPckCrl), ReasonCollateralInvalid},
		{errors.New(`tcbInfo response verification failed: unable to verify signing certificate: x509: certificate has expired or is not yet valid: x`), ReasonCertificateExpired},
		{errors.New(`QeIdentity response verification failed: root CA CRL verification failed using root certificate in the issuer's chain: CRL is empty`), ReasonCRLInvalid},
		{errors.New(`tcbInfo response verification failed: could not verify response body using the signing certificate: x509: ECDSA verification failure`), ReasonCollateralInvalid},
		{errors.New(`QeIdentity response verification failed: signing certificate was revoked at 2024-01-01`), ReasonCollateralInvalid},
		{errors.New(`tcbInfo ID "SGX" does not match with expected ID "TDX"`), ReasonCollateralInvalid},
		{errors.New(`tcbInfo version 2 does not match with expected version 3`), ReasonCollateralInvalid},
		{errors.New(`QeIdentity ID "QE" does not match with expected ID "TD_QE"`), ReasonCollateralInvalid},
		{errors.New(`QeIdentity version 1 does not match with expected version 2`), ReasonCollateralInvalid},
		{verify.ErrTcbInfoTcbLevelsMissing, ReasonCollateralInvalid},
		{verify.ErrQeIdentityTcbLevelsMissing, ReasonCollateralInvalid},
		{errors.New(`unable to receive tcbInfo: "Tcb-Info-Issuer-Chain" is empty`), ReasonCollateralInvalid},
		{verify.ErrEmptyRootCRLUrl, ReasonCollateralInvalid},
		{abi.ErrTeeType, ReasonQuoteUnsupported},
		{errors.New(`QuoteV4 invalid: QuoteV4 Header error: header is nil`), ReasonQuoteMalformed},
		{errors.New(`unsupported quote type: *tdx.QuoteV5`), ReasonQuoteUnsupported},
		{errors.New(`something new in a later go-tdx-guest`), ReasonVerificationFailed},
		{errors.New(`go-tdx-guest verify panicked: runtime error: index out of range`), ReasonVerificationFailed},
	}
	hit := make([]bool, len(errorTable))
	for _, tc := range cases {
		if got := classify(tc.err, nil); got != tc.want {
			t.Errorf("classify(%q) = %s, want %s", tc.err, got, tc.want)
		}
		for i, row := range errorTable {
			if row.match(tc.err.Error(), tc.err) {
				hit[i] = true
				break
			}
		}
	}
	for i, h := range hit {
		if !h {
			t.Errorf("errorTable row %d (reason %s) is not exercised", i, errorTable[i].reason)
		}
	}
}

func TestReasonOf(t *testing.T) {
	if got := ReasonOf(fmt.Errorf("wrapped: %w", &Error{Reason: ReasonPCKRevoked})); got != ReasonPCKRevoked {
		t.Errorf("ReasonOf = %s", got)
	}
	if got := ReasonOf(errors.New("other")); got != ReasonVerificationFailed {
		t.Errorf("ReasonOf(other) = %s", got)
	}
	seen := map[Reason]bool{}
	for _, r := range Reasons() {
		if seen[r] {
			t.Errorf("duplicate reason %s", r)
		}
		seen[r] = true
	}
	for _, s := range []TCBStatus{TCBStatusSWHardeningNeeded, TCBStatusConfigurationNeeded, TCBStatusConfigurationAndSWHardeningNeeded,
		TCBStatusOutOfDate, TCBStatusOutOfDateConfigurationNeeded, TCBStatusRevoked} {
		if r := statusReason(s); !seen[r] {
			t.Errorf("status %s maps to unlisted reason %q", s, r)
		}
	}
}
