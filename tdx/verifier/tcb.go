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
	var td *pcs.TcbLevel
	for i := range ti.TcbLevels {
		l := &ti.TcbLevels[i]
		if svnsAtLeast(ext.TCB.CPUSvnComponents, l.Tcb.SgxTcbcomponents, 0) &&
			ext.TCB.PCESvn >= l.Tcb.Pcesvn &&
			svnsAtLeast(tee, l.Tcb.TdxTcbcomponents, tdxStart(tee)) {
			td = l
			break
		}
	}
	if td == nil {
		return res, fmt.Errorf("tcb info: %w", errNoTCBLevel)
	}
	statuses := []pcs.TcbComponentStatus{td.TcbStatus}
	res.advisoryIDs = append(res.advisoryIDs, td.AdvisoryIDs...)
	res.tcbDate = td.TcbDate

	if tee[1] > 0 {
		id := "TDX_" + hex.EncodeToString(tee[1:2])
		var mod *pcs.TcbLevel
		for _, m := range ti.TdxModuleIdentities {
			if m.ID != id {
				continue
			}
			for i := range m.TcbLevels {
				if uint32(tee[0]) >= m.TcbLevels[i].Tcb.Isvsvn {
					mod = &m.TcbLevels[i]
					break
				}
			}
			break
		}
		if mod == nil {
			return res, fmt.Errorf("tdx module identity %s: %w", id, errNoTCBLevel)
		}
		statuses = append(statuses, mod.TcbStatus)
		res.advisoryIDs = append(res.advisoryIDs, mod.AdvisoryIDs...)
	}

	var qeLevel *pcs.TcbLevel
	for i := range qe.TcbLevels {
		if qe.TcbLevels[i].Tcb.Isvsvn <= qeISVSVN {
			qeLevel = &qe.TcbLevels[i]
			break
		}
	}
	if qeLevel == nil {
		return res, fmt.Errorf("qe identity: %w", errNoTCBLevel)
	}
	statuses = append(statuses, qeLevel.TcbStatus)
	res.advisoryIDs = append(res.advisoryIDs, qeLevel.AdvisoryIDs...)
	res.status = combine(statuses...)
	return res, nil
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
