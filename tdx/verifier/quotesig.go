package verifier

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/sha256"
	"crypto/x509"
	"errors"
	"fmt"

	"github.com/google/go-tdx-guest/abi"
	pb "github.com/google/go-tdx-guest/proto/tdx"
	"github.com/google/go-tdx-guest/verify"
)

// attestationKeySize is the size of the quote's raw ECDSA P-256
// attestation key (X ‖ Y, go-tdx-guest's pubKeySize).
const attestationKeySize = 64

// checkQuoteSignatures is the cached path's replay of the checks
// go-tdx-guest v0.3.1 runs on a quote whose PCK certificate chain it has
// already verified (verify.tdxQuoteV4 without collateral: abi.CheckQuoteV4,
// the TEE type, then verifyQuote): the quote signature over header ‖ body
// by the attestation key, the QE report signature by the PCK leaf key, and
// the QE report data binding SHA-256(attestation key ‖ QE auth data). The
// order and the error texts are go-tdx-guest's, so classify maps a failure
// to the same reason. set.pck is the parsed leaf of a chain that
// go-tdx-guest verified (to a trusted root, with CRLs, inside the current
// validity window: see collateralCache); the caller guarantees the quote
// carries exactly that chain's bytes.
//
// It runs at most 2 ECDSA verifications where go-tdx-guest runs 7: the
// other 5 (the root self-signature, then intermediate and leaf twice, by
// hand and by crypto/x509) depend only on the chain bytes, the trusted
// roots and the time, and passed for these bytes at a time inside the
// window. The QE report signature is checked only when the QE report or
// its signature differs from the last one set.pck verified (the same
// bytes verify the same way; a platform's quoting enclave puts one signed
// QE report in all its quotes), so the steady state is 1: the quote
// signature, which covers this quote's REPORTDATA.
func checkQuoteSignatures(q *pb.QuoteV4, set *verifiedSet) error {
	if err := abi.CheckQuoteV4(q); err != nil {
		return fmt.Errorf("QuoteV4 invalid: %v", err)
	}
	if q.GetHeader().GetTeeType() != abi.TeeTDX {
		return abi.ErrTeeType
	}
	sd := q.GetSignedData()
	attPub, err := attestationKey(sd.GetEcdsaAttestationKey())
	if err != nil {
		return fmt.Errorf("attestation key in the quote is invalid: %v", err)
	}
	sig, err := abi.SignatureToDER(sd.GetSignature())
	if err != nil {
		return fmt.Errorf("unable to convert QuoteV4's signature to DER format: %v", err)
	}
	header, err := abi.HeaderToAbiBytes(q.GetHeader())
	if err != nil {
		return fmt.Errorf("could not get message digest for verification: could not convert header to ABI bytes: %v", err)
	}
	body, err := abi.TdQuoteBodyToAbiBytes(q.GetTdQuoteBody())
	if err != nil {
		return fmt.Errorf("could not get message digest for verification: could not convert TD Quote Body to ABI bytes: %v", err)
	}
	digest := sha256.Sum256(append(header, body...))
	if !ecdsa.VerifyASN1(attPub, digest[:], sig) {
		return verify.ErrHashVerificationFail
	}

	qeCert := sd.GetCertificationData().GetQeReportCertificationData()
	report, err := abi.EnclaveReportToAbiBytes(qeCert.GetQeReport())
	if err != nil {
		return fmt.Errorf("error verifying QE report signature: could not parse QE report: %v", err)
	}
	qeSig, err := abi.SignatureToDER(qeCert.GetQeReportSignature())
	if err != nil {
		return fmt.Errorf("error verifying QE report signature: unable to convert QE report's signature to DER format: %v", err)
	}
	if !set.qeReportVerified(report, qeSig) {
		if err := set.pck.CheckSignature(x509.ECDSAWithSHA256, report, qeSig); err != nil {
			return fmt.Errorf("error verifying QE report signature: QE report's signature verification using PCK Leaf Certificate failed: %v", err)
		}
		set.rememberQEReport(report, qeSig)
	}

	// verify.verifyHash256: the QE report data is SHA-256(attestation key ‖
	// QE auth data) padded with zeros.
	reportData := qeCert.GetQeReport().GetReportData()
	bound := sha256.Sum256(append(bytes.Clone(sd.GetEcdsaAttestationKey()), qeCert.GetQeAuthData().GetData()...))
	if len(reportData) < len(bound) || !bytes.Equal(reportData[:len(bound)], bound[:]) || !allZero(reportData[len(bound):]) {
		return fmt.Errorf("error verifying QE report data: %v", verify.ErrSHA56VerificationFail)
	}
	return nil
}

// attestationKey parses the raw X ‖ Y attestation key. Like go-tdx-guest,
// it refuses any other size and a point not on P-256.
func attestationKey(b []byte) (*ecdsa.PublicKey, error) {
	if len(b) != attestationKeySize {
		return nil, verify.ErrPublicKeySize
	}
	k, err := ecdsa.ParseUncompressedPublicKey(elliptic.P256(), append([]byte{4}, b...))
	if err != nil {
		return nil, errors.New(`public key is not on curve "P-256"`)
	}
	return k, nil
}

func allZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}
