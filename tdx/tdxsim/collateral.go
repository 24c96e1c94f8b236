package tdxsim

import (
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"math/big"
	"time"

	"github.com/cml-project/cml/tdx/collateral"
)

// JSON shapes of Intel PCS v4 TDX TCB info (version 3) and TD_QE identity
// (version 2), field order as Intel's.

type tcbComponent struct {
	SVN byte `json:"svn"`
}

type tcb struct {
	SGXComponents []tcbComponent `json:"sgxtcbcomponents,omitempty"`
	PCESVN        *uint16        `json:"pcesvn,omitempty"`
	TDXComponents []tcbComponent `json:"tdxtcbcomponents,omitempty"`
	ISVSVN        *uint16        `json:"isvsvn,omitempty"`
}

type tcbLevel struct {
	TCB         tcb      `json:"tcb"`
	TCBDate     string   `json:"tcbDate"`
	TCBStatus   string   `json:"tcbStatus"`
	AdvisoryIDs []string `json:"advisoryIDs,omitempty"`
}

type tdxModule struct {
	MRSigner       string `json:"mrsigner"`
	Attributes     string `json:"attributes"`
	AttributesMask string `json:"attributesMask"`
}

type tdxModuleIdentity struct {
	ID string `json:"id"`
	tdxModule
	TCBLevels []tcbLevel `json:"tcbLevels"`
}

type tcbInfo struct {
	ID                      string              `json:"id"`
	Version                 int                 `json:"version"`
	IssueDate               string              `json:"issueDate"`
	NextUpdate              string              `json:"nextUpdate"`
	FMSPC                   string              `json:"fmspc"`
	PCEID                   string              `json:"pceId"`
	TCBType                 int                 `json:"tcbType"`
	TCBEvaluationDataNumber int                 `json:"tcbEvaluationDataNumber"`
	TDXModule               tdxModule           `json:"tdxModule"`
	TDXModuleIdentities     []tdxModuleIdentity `json:"tdxModuleIdentities"`
	TCBLevels               []tcbLevel          `json:"tcbLevels"`
}

type enclaveIdentity struct {
	ID                      string     `json:"id"`
	Version                 int        `json:"version"`
	IssueDate               string     `json:"issueDate"`
	NextUpdate              string     `json:"nextUpdate"`
	TCBEvaluationDataNumber int        `json:"tcbEvaluationDataNumber"`
	MiscSelect              string     `json:"miscselect"`
	MiscSelectMask          string     `json:"miscselectMask"`
	Attributes              string     `json:"attributes"`
	AttributesMask          string     `json:"attributesMask"`
	MRSigner                string     `json:"mrsigner"`
	ISVProdID               int        `json:"isvprodid"`
	TCBLevels               []tcbLevel `json:"tcbLevels"`
}

const (
	tcbEvaluationDataNumber = 17
	timeFormat              = "2006-01-02T15:04:05Z"
)

func components(svns []byte) []tcbComponent {
	out := make([]tcbComponent, len(svns))
	for i, s := range svns {
		out[i] = tcbComponent{SVN: s}
	}
	return out
}

// tcbLevels returns the TCB levels that give the platform the given status.
func tcbLevels(p *Platform, status string, date string) []tcbLevel {
	pcesvn := p.PCESVN
	level := func(tdx [16]byte, st string) tcbLevel {
		l := tcbLevel{
			TCB: tcb{
				SGXComponents: components(p.CPUSVN[:]),
				PCESVN:        &pcesvn,
				TDXComponents: components(tdx[:]),
			},
			TCBDate:   date,
			TCBStatus: st,
		}
		if st != UpToDate {
			l.AdvisoryIDs = []string{"INTEL-SA-00837"}
		}
		return l
	}
	switch status {
	case OutOfDate, OutOfDateConfigurationNeeded, Revoked:
		// A newer level (microcode SVN, index 2, one higher) is UpToDate;
		// the platform only meets the older one.
		newer := p.TEETCBSVN
		newer[2]++
		return []tcbLevel{level(newer, UpToDate), level(p.TEETCBSVN, status)}
	default:
		return []tcbLevel{level(p.TEETCBSVN, status)}
	}
}

// issueCollateral creates the four collateral documents.
func issueCollateral(x *pki, p *Platform, status string, revokePCK bool, now time.Time, validity func(collateral.Kind) time.Duration) ([]*collateral.Entry, error) {
	dates := func(k collateral.Kind) (issue, next time.Time) {
		next = now.Add(validity(k))
		issue = now
		if !issue.Before(next) {
			issue = next.Add(-time.Hour)
		}
		return issue, next
	}
	tcbDate := now.Add(-30 * 24 * time.Hour).Format(timeFormat)
	tcbChain := append(pemCert(x.tcb.Raw), pemCert(x.root.Raw)...)

	issue, next := dates(collateral.KindTCBInfo)
	zeros48 := hex.EncodeToString(make([]byte, 48))
	moduleSVN := uint16(p.TEETCBSVN[0])
	ti := tcbInfo{
		ID:                      "TDX",
		Version:                 3,
		IssueDate:               issue.Format(timeFormat),
		NextUpdate:              next.Format(timeFormat),
		FMSPC:                   hex.EncodeToString(p.FMSPC[:]),
		PCEID:                   hex.EncodeToString(p.PCEID[:]),
		TCBEvaluationDataNumber: tcbEvaluationDataNumber,
		TDXModule:               tdxModule{MRSigner: zeros48, Attributes: "0000000000000000", AttributesMask: "FFFFFFFFFFFFFFFF"},
		TDXModuleIdentities: []tdxModuleIdentity{{
			ID:        fmt.Sprintf("TDX_%02x", p.TEETCBSVN[1]),
			tdxModule: tdxModule{MRSigner: zeros48, Attributes: "0000000000000000", AttributesMask: "FFFFFFFFFFFFFFFF"},
			TCBLevels: []tcbLevel{{TCB: tcb{ISVSVN: &moduleSVN}, TCBDate: tcbDate, TCBStatus: UpToDate}},
		}},
		TCBLevels: tcbLevels(p, status, tcbDate),
	}
	tcbBody, err := signedJSON("tcbInfo", ti, x)
	if err != nil {
		return nil, err
	}

	issue, next = dates(collateral.KindQEIdentity)
	qeSVN := p.QESVN
	qi := enclaveIdentity{
		ID:                      "TD_QE",
		Version:                 2,
		IssueDate:               issue.Format(timeFormat),
		NextUpdate:              next.Format(timeFormat),
		TCBEvaluationDataNumber: tcbEvaluationDataNumber,
		MiscSelect:              "00000000",
		MiscSelectMask:          "FFFFFFFF",
		Attributes:              "11000000000000000000000000000000",
		AttributesMask:          "FBFFFFFFFFFFFFFF0000000000000000",
		MRSigner:                hex.EncodeToString(qeMRSigner),
		ISVProdID:               qeISVProdID,
		TCBLevels:               []tcbLevel{{TCB: tcb{ISVSVN: &qeSVN}, TCBDate: tcbDate, TCBStatus: UpToDate}},
	}
	qeBody, err := signedJSON("enclaveIdentity", qi, x)
	if err != nil {
		return nil, err
	}

	issue, next = dates(collateral.KindRootCRL)
	rootCRL, err := crl(x.root, x.rootKey, 1, issue, next)
	if err != nil {
		return nil, err
	}
	issue, next = dates(collateral.KindPCKCRL)
	var revoked []*big.Int
	if revokePCK {
		revoked = append(revoked, x.pck.SerialNumber)
	}
	pckCRL, err := crl(x.ca, x.caKey, 1, issue, next, revoked...)
	if err != nil {
		return nil, err
	}
	return []*collateral.Entry{
		{Key: collateral.Key{Kind: collateral.KindTCBInfo, Param: ti.FMSPC}, Body: tcbBody, IssuerChain: tcbChain},
		{Key: collateral.Key{Kind: collateral.KindQEIdentity}, Body: qeBody, IssuerChain: clone(tcbChain)},
		{Key: collateral.Key{Kind: collateral.KindPCKCRL, Param: "platform"}, Body: pckCRL, IssuerChain: append(pemCert(x.ca.Raw), pemCert(x.root.Raw)...)},
		{Key: collateral.Key{Kind: collateral.KindRootCRL}, Body: rootCRL},
	}, nil
}

// signedJSON returns {"<field>":<v>,"signature":"<hex r‖s>"}, the signature
// by the TCB signing key over the exact bytes of <v>.
func signedJSON(field string, v any, x *pki) ([]byte, error) {
	inner, err := json.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("tdxsim: %w", err)
	}
	sig, err := sign(x.tcbKey, inner)
	if err != nil {
		return nil, err
	}
	out := fmt.Appendf(nil, `{"%s":`, field)
	out = append(out, inner...)
	return fmt.Appendf(out, `,"signature":"%s"}`, hex.EncodeToString(sig)), nil
}

func pemCert(der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

func mustHex(s string) []byte {
	b, err := hex.DecodeString(s)
	if err != nil {
		panic("tdxsim: bad constant: " + s)
	}
	return b
}
