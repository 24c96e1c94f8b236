package verifier

import (
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"time"

	pb "github.com/google/go-tdx-guest/proto/tdx"
)

// Measurement is a 48-byte (SHA-384) TD measurement register.
type Measurement [48]byte

// Hex returns m as 96 lowercase hex digits.
func (m Measurement) Hex() string { return hex.EncodeToString(m[:]) }

// String returns m.Hex().
func (m Measurement) String() string { return m.Hex() }

// ParseMeasurement parses 96 hex digits (either case).
func ParseMeasurement(s string) (Measurement, error) {
	var m Measurement
	b, err := hex.DecodeString(s)
	if err != nil || len(b) != len(m) {
		return m, fmt.Errorf("verifier: measurement %q is not %d hex-encoded bytes", s, len(m))
	}
	copy(m[:], b)
	return m, nil
}

// TCBStatus is Intel's TCB status of the platform, after combining the
// status of the matching TCB level, the TDX module identity and the QE
// identity. Its values are Intel's names.
type TCBStatus string

// TCB statuses.
const (
	// TCBStatusNotEvaluated: verification ran without collateral
	// (CheckSignatureChain), so no status is known. Never acceptable for a
	// key release.
	TCBStatusNotEvaluated                      TCBStatus = ""
	TCBStatusUpToDate                          TCBStatus = "UpToDate"
	TCBStatusSWHardeningNeeded                 TCBStatus = "SWHardeningNeeded"
	TCBStatusConfigurationNeeded               TCBStatus = "ConfigurationNeeded"
	TCBStatusConfigurationAndSWHardeningNeeded TCBStatus = "ConfigurationAndSWHardeningNeeded"
	TCBStatusOutOfDate                         TCBStatus = "OutOfDate"
	TCBStatusOutOfDateConfigurationNeeded      TCBStatus = "OutOfDateConfigurationNeeded"
	TCBStatusRevoked                           TCBStatus = "Revoked"
)

// TD attribute bits (TDATTRIBUTES, Intel TDX module ABI).
const (
	TDAttrDebug         uint64 = 1 << 0  // the TD's state is readable by the host: never trust it
	TDAttrSEPTVEDisable uint64 = 1 << 28 // EPT violations do not become #VE
	TDAttrPKS           uint64 = 1 << 30
	TDAttrKL            uint64 = 1 << 31
	TDAttrPerfmon       uint64 = 1 << 63
)

// Claims are what a verified quote says about a TD and its platform. Every
// field is covered by the quote signature or comes from verified
// collateral.
type Claims struct {
	MRTD          Measurement    // initial TD contents (firmware)
	RTMR          [4]Measurement // runtime measurement registers 0-3
	MRConfigID    Measurement
	MROwner       Measurement
	MROwnerConfig Measurement
	MRSeam        Measurement // TDX module measurement
	MRSignerSeam  Measurement // TDX module signer (zero for Intel's)

	// TDAttributes is TDATTRIBUTES as an integer (the quote stores it
	// little-endian); Debug is its bit 0, decoded for policy.
	TDAttributes uint64
	Debug        bool
	// XFAM is the TD's extended feature mask.
	XFAM uint64
	// TEETCBSVN is the TEE TCB SVN: [0] TDX module minor SVN, [1] TDX
	// module major version, [2..] further components.
	TEETCBSVN [16]byte
	// ReportData is the TD's 64-byte REPORTDATA.
	ReportData [64]byte

	// FMSPC is the platform's family-model-stepping-platform code from the
	// PCK certificate (12 lowercase hex digits).
	FMSPC string

	// TCBStatus is Intel's verdict on the platform TCB (see TCBStatus);
	// TCBNotEvaluated without collateral. AdvisoryIDs lists the Intel
	// security advisories of the matching TCB levels.
	TCBStatus   TCBStatus
	AdvisoryIDs []string
	// TCBDate is the date of the matching TCB level.
	TCBDate string

	// Collateral dates (zero without collateral).
	TCBInfoIssueDate     time.Time
	TCBInfoNextUpdate    time.Time
	QEIdentityIssueDate  time.Time
	QEIdentityNextUpdate time.Time
	// CollateralNextUpdate is the earliest nextUpdate of all collateral
	// used (including CRLs when checked): the claims are no better than
	// this date.
	CollateralNextUpdate time.Time

	// Checks records which checks produced these claims.
	Checks Checks
}

// claimsFromBody copies the TD quote body. Sizes were checked by the
// layout parser and go-tdx-guest, so the copies are exact.
func claimsFromBody(b *pb.TDQuoteBody) *Claims {
	c := &Claims{}
	copy(c.MRTD[:], b.GetMrTd())
	for i, r := range b.GetRtmrs() {
		if i < len(c.RTMR) {
			copy(c.RTMR[i][:], r)
		}
	}
	copy(c.MRConfigID[:], b.GetMrConfigId())
	copy(c.MROwner[:], b.GetMrOwner())
	copy(c.MROwnerConfig[:], b.GetMrOwnerConfig())
	copy(c.MRSeam[:], b.GetMrSeam())
	copy(c.MRSignerSeam[:], b.GetMrSignerSeam())
	if a := b.GetTdAttributes(); len(a) == 8 {
		c.TDAttributes = binary.LittleEndian.Uint64(a)
	}
	c.Debug = c.TDAttributes&TDAttrDebug != 0
	if x := b.GetXfam(); len(x) == 8 {
		c.XFAM = binary.LittleEndian.Uint64(x)
	}
	copy(c.TEETCBSVN[:], b.GetTeeTcbSvn())
	copy(c.ReportData[:], b.GetReportData())
	return c
}
