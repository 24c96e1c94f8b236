package verifier

import (
	"encoding/binary"
	"fmt"
)

// Quote v4 layout (Intel TDX DCAP Quote Generation Library and Quote
// Verification Library, "Quote Format"). All integers little-endian.
//
//	0x000  header (0x30): version u16, attestation key type u16, TEE type u32,
//	       PCE SVN, QE SVN, QE vendor id, user data
//	0x030  TD quote body (0x248)
//	0x278  signed data size u32
//	0x27C  signed data:
//	         +0x00 quote signature (r ‖ s, 0x40)
//	         +0x40 attestation public key (X ‖ Y, 0x40)
//	         +0x80 certification data type u16 (6: QE report certification data)
//	         +0x82 certification data size u32
//	         +0x86 QE report certification data:
//	                +0x000 QE report (0x180)
//	                +0x180 QE report signature (0x40)
//	                +0x1C0 QE auth data size u16, QE auth data
//	                +....  certification data type u16 (5: PCK chain), size u32, PEM chain
//	       (bytes after the signed data are not covered by any signature;
//	       they are ignored, as go-tdx-guest does)
const (
	hdrSize          = 0x30
	bodyEnd          = 0x278
	signedDataStart  = 0x27C
	quoteVersion     = 4
	attKeyECDSAP256  = 2
	teeTypeTDX       = 0x81
	certTypeQEReport = 6
	certTypePCKChain = 5
	qeReportSize     = 0x180
	sigSize          = 0x40
)

// layoutError is a structural problem with the quote bytes.
type layoutError struct {
	reason Reason
	msg    string
}

func (e *layoutError) Error() string { return e.msg }

func malformed(format string, args ...any) error {
	return &layoutError{ReasonQuoteMalformed, fmt.Sprintf(format, args...)}
}

// checkLayout checks that b is structurally a TDX quote v4 with an
// ECDSA-P256 attestation key: every length field is consistent with the
// bytes present. go-tdx-guest's parser slices by these fields without
// checking them all (it panics on, for example, a signed data size below
// 0x80), so nothing reaches it that fails here.
func checkLayout(b []byte) error {
	if len(b) < hdrSize {
		return malformed("quote is %d bytes, shorter than its %d-byte header", len(b), hdrSize)
	}
	if v := binary.LittleEndian.Uint16(b[0:]); v != quoteVersion {
		return &layoutError{ReasonQuoteUnsupported, fmt.Sprintf("quote version %d, want %d", v, quoteVersion)}
	}
	if t := binary.LittleEndian.Uint16(b[2:]); t != attKeyECDSAP256 {
		return &layoutError{ReasonQuoteUnsupported, fmt.Sprintf("attestation key type %d, want %d (ECDSA-P256)", t, attKeyECDSAP256)}
	}
	if t := binary.LittleEndian.Uint32(b[4:]); t != teeTypeTDX {
		return &layoutError{ReasonQuoteUnsupported, fmt.Sprintf("TEE type %#x, want %#x (TDX)", t, teeTypeTDX)}
	}
	if len(b) < signedDataStart {
		return malformed("quote is %d bytes, shorter than header, TD quote body and signed data size (%d)", len(b), signedDataStart)
	}
	signedSize := uint64(binary.LittleEndian.Uint32(b[bodyEnd:]))
	avail := uint64(len(b) - signedDataStart)
	if signedSize > avail {
		return malformed("signed data size %d exceeds the %d bytes present", signedSize, avail)
	}
	sd := b[signedDataStart : signedDataStart+signedSize]
	const certStart = 2*sigSize + 6
	if len(sd) < certStart {
		return malformed("signed data is %d bytes, shorter than signature, attestation key and certification data header (%d)", len(sd), certStart)
	}
	if t := binary.LittleEndian.Uint16(sd[2*sigSize:]); t != certTypeQEReport {
		return malformed("certification data type %d, want %d (QE report certification data)", t, certTypeQEReport)
	}
	certSize := uint64(binary.LittleEndian.Uint32(sd[2*sigSize+2:]))
	cert := sd[certStart:]
	if certSize != uint64(len(cert)) {
		return malformed("certification data size %d, but %d bytes follow", certSize, len(cert))
	}
	const authStart = qeReportSize + sigSize
	if len(cert) < authStart+2 {
		return malformed("QE report certification data is %d bytes, shorter than QE report, signature and auth data size (%d)", len(cert), authStart+2)
	}
	authSize := int(binary.LittleEndian.Uint16(cert[authStart:]))
	chainHdr := authStart + 2 + authSize
	if len(cert) < chainHdr+6 {
		return malformed("QE auth data of %d bytes leaves no room for the PCK certificate chain header", authSize)
	}
	if t := binary.LittleEndian.Uint16(cert[chainHdr:]); t != certTypePCKChain {
		return malformed("PCK certification data type %d, want %d (PEM certificate chain)", t, certTypePCKChain)
	}
	chainSize := uint64(binary.LittleEndian.Uint32(cert[chainHdr+2:]))
	if chainSize != uint64(len(cert)-chainHdr-6) {
		return malformed("PCK certificate chain size %d, but %d bytes follow", chainSize, len(cert)-chainHdr-6)
	}
	if chainSize == 0 {
		return malformed("PCK certificate chain is empty")
	}
	return nil
}
