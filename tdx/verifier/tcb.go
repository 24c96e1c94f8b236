package verifier

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"

	"github.com/google/go-tdx-guest/pcs"
	pb "github.com/google/go-tdx-guest/proto/tdx"
)

// go-tdx-guest v0.3.1 accepts only UpToDate: for any other status it stops
// at its status check (and, for the TD TCB level, before checking the QE
// report against the QE identity). This file evaluates the status itself,
// with the same level-matching rules, so the claims carry the real status
// and a policy can decide; and it repeats the QE identity check that
// go-tdx-guest skipped in that case. See Verifier.Verify.

var errNoTCBLevel = errors.New("no matching TCB level")

// tcbResult is the evaluated TCB status.
type tcbResult struct {
	status      TCBStatus
	advisoryIDs []string
	tcbDate     string
}

// evaluateTCB finds the TD's TCB level in the TCB info (first level whose
// SGX component SVNs, PCE SVN and TDX component SVNs are all ≤ the
// platform's), the TDX module identity's level when the module major
// version is non-zero, and the QE identity level (first with ISVSVN ≤ the
// QE's), and combines their statuses (see combine).
func evaluateTCB(ti *pcs.TcbInfo, qe *pcs.EnclaveIdentity, body *pb.TDQuoteBody, ext *pcs.PckExtensions, qeISVSVN uint32) (tcbResult, error) {
	var res tcbResult
	tee := body.GetTeeTcbSvn()
	if len(tee) != 16 {
		return res, fmt.Errorf("tee tcb svn is %d bytes", len(tee))
	}
	td := findTDLevel(ti, tee, ext)
	if td == nil {
		return res, fmt.Errorf("tcb info: %w", errNoTCBLevel)
	}
	statuses := []pcs.TcbComponentStatus{td.TcbStatus}
	res.advisoryIDs = append(res.advisoryIDs, td.AdvisoryIDs...)
	res.tcbDate = td.TcbDate

	if tee[1] > 0 {
		mod, id := findModuleLevel(ti, tee)
		if mod == nil {
			return res, fmt.Errorf("tdx module identity %s: %w", id, errNoTCBLevel)
		}
		statuses = append(statuses, mod.TcbStatus)
		res.advisoryIDs = append(res.advisoryIDs, mod.AdvisoryIDs...)
	}

	qeLevel := findQELevel(qe, qeISVSVN)
	if qeLevel == nil {
		return res, fmt.Errorf("qe identity: %w", errNoTCBLevel)
	}
	statuses = append(statuses, qeLevel.TcbStatus)
	res.advisoryIDs = append(res.advisoryIDs, qeLevel.AdvisoryIDs...)
	res.status = combine(statuses...)
	return res, nil
}

// findTDLevel returns the first TCB level whose SGX component SVNs, PCE
// SVN and TDX component SVNs are all ≤ the platform's (go-tdx-guest's
// getMatchingTcbLevel), or nil. tee is 16 bytes.
func findTDLevel(ti *pcs.TcbInfo, tee []byte, ext *pcs.PckExtensions) *pcs.TcbLevel {
	for i := range ti.TcbLevels {
		l := &ti.TcbLevels[i]
		if svnsAtLeast(ext.TCB.CPUSvnComponents, l.Tcb.SgxTcbcomponents, 0) &&
			ext.TCB.PCESvn >= l.Tcb.Pcesvn &&
			svnsAtLeast(tee, l.Tcb.TdxTcbcomponents, tdxStart(tee)) {
			return l
		}
	}
	return nil
}

// findModuleLevel returns the TDX module identity's level for a non-zero
// module major version (go-tdx-guest's getMatchingTdxModuleTcbLevel: the
// first identity with the ID, its first level with ISVSVN ≤ the module's
// minor SVN), or nil, and the identity's ID. tee is 16 bytes.
func findModuleLevel(ti *pcs.TcbInfo, tee []byte) (*pcs.TcbLevel, string) {
	id := "TDX_" + hex.EncodeToString(tee[1:2])
	for _, m := range ti.TdxModuleIdentities {
		if m.ID != id {
			continue
		}
		for i := range m.TcbLevels {
			if uint32(tee[0]) >= m.TcbLevels[i].Tcb.Isvsvn {
				return &m.TcbLevels[i], id
			}
		}
		return nil, id
	}
	return nil, id
}

// findQELevel returns the QE identity's first level with ISVSVN ≤ the
// QE's (go-tdx-guest's checkQeTcbStatus), or nil.
func findQELevel(qe *pcs.EnclaveIdentity, isvsvn uint32) *pcs.TcbLevel {
	for i := range qe.TcbLevels {
		if qe.TcbLevels[i].Tcb.Isvsvn <= isvsvn {
			return &qe.TcbLevels[i]
		}
	}
	return nil
}

// tdxStart mirrors go-tdx-guest: with a TDX module major version (index 1)
// above zero, indices 0 and 1 are judged by the TDX module identity
// instead of the TCB level.
func tdxStart(tee []byte) int {
	if tee[1] > 0 {
		return 2
	}
	return 0
}

func svnsAtLeast(have []byte, want []pcs.TcbComponent, start int) bool {
	if len(have) != len(want) {
		return false
	}
	for i := start; i < len(have); i++ {
		if have[i] < want[i].Svn {
			return false
		}
	}
	return true
}

// combine merges component statuses: Revoked dominates; otherwise the
// flags "out of date", "configuration needed" and "SW hardening needed" are
// united and mapped back to Intel's names (out of date absorbs SW
// hardening).
func combine(ss ...pcs.TcbComponentStatus) TCBStatus {
	var revoked, outOfDate, config, sw bool
	for _, s := range ss {
		switch s {
		case pcs.TcbComponentStatusRevoked:
			revoked = true
		case pcs.TcbComponentStatusOutOfDate:
			outOfDate = true
		case pcs.TcbComponentStatusOutOfDateConfigurationNeeded:
			outOfDate, config = true, true
		case pcs.TcbComponentStatusConfigurationNeeded:
			config = true
		case pcs.TcbComponentStatusSwHardeningNeeded:
			sw = true
		case pcs.TcbComponentStatusConfigurationAndSWHardeningNeeded:
			config, sw = true, true
		case pcs.TcbComponentStatusUpToDate:
		default: // unknown: fail closed
			revoked = true
		}
	}
	switch {
	case revoked:
		return TCBStatusRevoked
	case outOfDate && config:
		return TCBStatusOutOfDateConfigurationNeeded
	case outOfDate:
		return TCBStatusOutOfDate
	case config && sw:
		return TCBStatusConfigurationAndSWHardeningNeeded
	case config:
		return TCBStatusConfigurationNeeded
	case sw:
		return TCBStatusSWHardeningNeeded
	}
	return TCBStatusUpToDate
}

// matchQEIdentity checks the QE report against the QE identity exactly as
// go-tdx-guest's verifyQeReport does (MISCSELECT and attributes under
// their masks, MRSIGNER, ISV PRODID), minus the status check.
func matchQEIdentity(id *pcs.EnclaveIdentity, r *pb.EnclaveReport) error {
	if len(id.MiscselectMask.Bytes) != 4 || len(id.Miscselect.Bytes) != 4 {
		return errors.New("qe identity miscselect fields are not 4 bytes")
	}
	mask := binary.LittleEndian.Uint32(id.MiscselectMask.Bytes)
	if r.GetMiscSelect()&mask != binary.LittleEndian.Uint32(id.Miscselect.Bytes) {
		return errors.New("QE report MISCSELECT does not match the QE identity")
	}
	attrs := r.GetAttributes()
	if len(id.AttributesMask.Bytes) != len(attrs) || len(id.Attributes.Bytes) != len(attrs) {
		return errors.New("qe identity attributes size differs from the QE report's")
	}
	for i := range attrs {
		if attrs[i]&id.AttributesMask.Bytes[i] != id.Attributes.Bytes[i] {
			return errors.New("QE report attributes do not match the QE identity")
		}
	}
	if !bytes.Equal(id.Mrsigner.Bytes, r.GetMrSigner()) {
		return errors.New("QE report MRSIGNER does not match the QE identity")
	}
	if r.GetIsvProdId() != uint32(id.IsvProdID) {
		return errors.New("QE report ISVPRODID does not match the QE identity")
	}
	return nil
}

// replayQuoteMatch repeats, for a quote whose signatures and PCK chain
// go-tdx-guest has just verified without collateral, the per-quote part of
// go-tdx-guest v0.3.1's collateral verification (verifyQuote after the
// QE report data check: verifyTdQuoteBody, then verifyQeReport), in the
// same order and against the same parsed TCB info and QE identity. It
// returns what classify would return for go-tdx-guest's error: "" (the
// library would have accepted), ReasonTCBInfoMismatch,
// ReasonQEIdentityMismatch, markTDStatus or markQEStatus. Everything else
// go-tdx-guest checks with collateral depends only on the collateral
// bytes, the PCK chain bytes and the time (see collateralCache).
//
// TestReplayMatchesLibrary compares it with go-tdx-guest on forged quotes.
func replayQuoteMatch(ti *pcs.TcbInfo, qe *pcs.EnclaveIdentity, body *pb.TDQuoteBody, r *pb.EnclaveReport, ext *pcs.PckExtensions) (Reason, error) {
	// verifyTdQuoteBody.
	if ext.FMSPC != ti.Fmspc {
		return ReasonTCBInfoMismatch, fmt.Errorf("PCK FMSPC %s differs from the TCB info's %s", ext.FMSPC, ti.Fmspc)
	}
	if ext.PCEID != ti.PceID {
		return ReasonTCBInfoMismatch, fmt.Errorf("PCK PCE-ID %s differs from the TCB info's %s", ext.PCEID, ti.PceID)
	}
	if !bytes.Equal(ti.TdxModule.Mrsigner.Bytes, body.GetMrSignerSeam()) {
		return ReasonTCBInfoMismatch, errors.New("MRSIGNERSEAM differs from the TCB info's TDX module signer")
	}
	mask, attrs := ti.TdxModule.AttributesMask.Bytes, body.GetSeamAttributes()
	if len(mask) != len(attrs) {
		return ReasonTCBInfoMismatch, fmt.Errorf("SEAM attributes are %d bytes, the TCB info's mask %d", len(attrs), len(mask))
	}
	masked := make([]byte, len(mask))
	for i := range mask {
		masked[i] = mask[i] & attrs[i]
	}
	if !bytes.Equal(ti.TdxModule.Attributes.Bytes, masked) {
		return ReasonTCBInfoMismatch, errors.New("SEAM attributes do not match the TCB info's TDX module attributes")
	}
	// checkTcbInfoTcbStatus: a TCB level, the TDX module level (module
	// major version > 0) and both UpToDate.
	tee := body.GetTeeTcbSvn()
	if len(tee) != 16 {
		return ReasonVerificationFailed, fmt.Errorf("tee tcb svn is %d bytes", len(tee))
	}
	td := findTDLevel(ti, tee, ext)
	if td == nil {
		return markTDStatus, errors.New("TD TCB status check: no matching TCB level")
	}
	if tee[1] > 0 {
		mod, id := findModuleLevel(ti, tee)
		if mod == nil {
			return markTDStatus, fmt.Errorf("TD TCB status check: no TCB level of TDX module identity %s", id)
		}
		if mod.TcbStatus != pcs.TcbComponentStatusUpToDate {
			return markTDStatus, fmt.Errorf("TD TCB status check: TDX module status %s", mod.TcbStatus)
		}
	}
	if td.TcbStatus != pcs.TcbComponentStatusUpToDate {
		return markTDStatus, fmt.Errorf("TD TCB status check: status %s", td.TcbStatus)
	}
	// verifyQeReport.
	if err := matchQEIdentity(qe, r); err != nil {
		return ReasonQEIdentityMismatch, err
	}
	l := findQELevel(qe, r.GetIsvSvn())
	if l == nil {
		return markQEStatus, errors.New("QE TCB status check: no matching QE TCB level")
	}
	if l.TcbStatus != pcs.TcbComponentStatusUpToDate {
		return markQEStatus, fmt.Errorf("QE TCB status check: status %s", l.TcbStatus)
	}
	return "", nil
}
