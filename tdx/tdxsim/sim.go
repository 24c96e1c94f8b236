package tdxsim

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/binary"
	"encoding/pem"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/google/go-tdx-guest/abi"
	"github.com/google/go-tdx-guest/pcs"
	pb "github.com/google/go-tdx-guest/proto/tdx"

	"github.com/cml-project/cml/tdx/collateral"
)

// Platform is the simulated machine: what Intel would certify in its PCK
// certificate and report in its quotes.
type Platform struct {
	FMSPC     [6]byte
	PCEID     [2]byte
	PCESVN    uint16
	CPUSVN    [16]byte // SGX TCB component SVNs, as in the PCK certificate
	TEETCBSVN [16]byte // TDX module and microcode SVNs; [1] is the module's major version
	MRSEAM    [48]byte // measurement of the TDX module
	QESVN     uint16   // ISV SVN of the quoting enclave
}

// DefaultPlatform returns a plausible Sapphire-Rapids-like platform with a
// TDX module 1.x (so TCB evaluation includes the TDX module identity).
func DefaultPlatform() Platform {
	p := Platform{
		FMSPC:     [6]byte{0x90, 0xc0, 0x6f, 0x00, 0x00, 0x00},
		PCESVN:    13,
		CPUSVN:    [16]byte{7, 7, 2, 2, 3, 1, 0, 5, 0, 0, 0, 0, 0, 0, 0, 0},
		TEETCBSVN: [16]byte{5, 1, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0},
		QESVN:     4,
	}
	p.MRSEAM = sha512.Sum384([]byte("tdxsim/v1/mrseam"))
	return p
}

// TCB statuses the simulator's collateral can assign to its platform
// (Intel's names).
const (
	UpToDate                          = "UpToDate"
	SWHardeningNeeded                 = "SWHardeningNeeded"
	ConfigurationNeeded               = "ConfigurationNeeded"
	ConfigurationAndSWHardeningNeeded = "ConfigurationAndSWHardeningNeeded"
	OutOfDate                         = "OutOfDate"
	OutOfDateConfigurationNeeded      = "OutOfDateConfigurationNeeded"
	Revoked                           = "Revoked"
)

// Defaults for Options.
const (
	DefaultCollateralValidity = 30 * 24 * time.Hour // Intel's TCB info and QE identity cadence
	DefaultCertValidity       = 5 * 365 * 24 * time.Hour
)

// Options configures a new simulated platform.
type Options struct {
	// Now is when certificates and collateral are issued. Required.
	Now time.Time
	// Seed makes every key, serial number and identifier deterministic
	// (tests). Nil: fresh randomness. ECDSA signatures are randomised
	// either way.
	Seed []byte
	// Platform; nil means DefaultPlatform().
	Platform *Platform
	// TCBStatus is the status the TCB info assigns to the platform's TCB
	// level (default UpToDate). OutOfDate, OutOfDateConfigurationNeeded and
	// Revoked come with a newer UpToDate level the platform does not meet,
	// as in Intel's TCB info.
	TCBStatus string
	// RevokePCK lists the PCK certificate in the PCK CRL.
	RevokePCK bool
	// CollateralValidity: nextUpdate = Now + this (DefaultCollateralValidity
	// if 0), for TCB info, QE identity and both CRLs.
	CollateralValidity time.Duration
	// ValidityOverride sets another validity for single documents (may be
	// negative: issued already expired), to test expiry handling.
	ValidityOverride map[collateral.Kind]time.Duration
	// CertValidity: certificates are valid from Now-1h to Now+this
	// (DefaultCertValidity if 0).
	CertValidity time.Duration
	// TD is the default TD returned by DefaultTD; nil means DefaultTDParams().
	TD *TDParams
}

// TDParams are the TD measurements and attributes a quote reports.
type TDParams struct {
	MRTD          [48]byte
	RTMR          [4][48]byte
	MRConfigID    [48]byte
	MROwner       [48]byte
	MROwnerConfig [48]byte
	// Debug sets TDATTRIBUTES bit 0 (DEBUG).
	Debug bool
	// Attributes are the other TDATTRIBUTES bits; bit 0 is ignored (see
	// Debug).
	Attributes uint64
	XFAM       uint64
	// TEETCBSVN overrides the platform's TEE TCB SVN when not all zero.
	TEETCBSVN [16]byte
	// MRSEAM overrides the platform's TDX module measurement when not all zero.
	MRSEAM [48]byte
}

// Attribute bits of TDATTRIBUTES used here.
const (
	AttrDebug         = uint64(1) << 0
	AttrSEPTVEDisable = uint64(1) << 28
)

// DefaultTDParams returns fixed, recognisable measurements for demos: each
// register is SHA-384 of a label, so a policy can pin them.
func DefaultTDParams() TDParams {
	td := TDParams{
		MRTD:       sha512.Sum384([]byte("tdxsim/v1/default/mrtd")),
		Attributes: AttrSEPTVEDisable,
		XFAM:       0x61ae7,
	}
	for i := range td.RTMR {
		td.RTMR[i] = sha512.Sum384(fmt.Appendf(nil, "tdxsim/v1/default/rtmr%d", i))
	}
	return td
}

// Intel's TDX quoting enclave identity, reproduced in the simulated QE
// report and QE identity.
var (
	qeMRSigner   = mustHex("dc9e2a7c6f948f17474e34a7fc43ed030f7c1563f1babddf6340c82e0e54a8c5")
	qeAttributes = mustHex("1500000000000000e700000000000000")
	qeVendorID   = mustHex("939a7233f79c4ca9940a0db3957f0607")
)

const qeISVProdID = 2

// Simulator is a simulated TDX platform: its PKI, attestation key,
// collateral, and a quote generator. It is safe for concurrent use.
//
// It exists for tests and development. Its root is a private key on disk
// or in memory; a verifier trusts it only when explicitly given its root.
type Simulator struct {
	platform   Platform
	status     string
	pki        *pki
	attKey     *ecdsa.PrivateKey
	chainPEM   []byte
	qeID       []byte
	collateral []*collateral.Entry
	td         TDParams
	// signedQE is the last QE report signed, with its signature: see
	// qeReportSignature.
	signedQE atomic.Pointer[signedReport]
}

// signedReport is a QE report (ABI bytes) and the PCK key's signature of it.
type signedReport struct {
	report, sig []byte
}

// New creates a simulated platform.
func New(opts Options) (*Simulator, error) {
	if opts.Now.IsZero() {
		return nil, errors.New("tdxsim: Options.Now is required")
	}
	if opts.Seed != nil && len(opts.Seed) < 16 {
		return nil, errors.New("tdxsim: Options.Seed must be at least 16 bytes")
	}
	p := DefaultPlatform()
	if opts.Platform != nil {
		p = *opts.Platform
	}
	status := opts.TCBStatus
	if status == "" {
		status = UpToDate
	}
	if !validStatus(status) {
		return nil, fmt.Errorf("tdxsim: unknown TCB status %q", status)
	}
	certValidity := opts.CertValidity
	if certValidity == 0 {
		certValidity = DefaultCertValidity
	}
	now := opts.Now.UTC().Truncate(time.Second)
	ks := keySource{seed: opts.Seed}
	x, err := newPKI(ks, &p, now.Add(-time.Hour), now.Add(certValidity))
	if err != nil {
		return nil, err
	}
	s := &Simulator{platform: p, status: status, pki: x, td: DefaultTDParams()}
	if opts.TD != nil {
		s.td = *opts.TD
	}
	if s.attKey, err = ks.key("attestation"); err != nil {
		return nil, err
	}
	if s.qeID, err = ks.bytes("qe-id", 16); err != nil {
		return nil, err
	}
	s.chainPEM = chainPEM(x)
	validity := func(k collateral.Kind) time.Duration {
		if d, ok := opts.ValidityOverride[k]; ok {
			return d
		}
		if opts.CollateralValidity != 0 {
			return opts.CollateralValidity
		}
		return DefaultCollateralValidity
	}
	if s.collateral, err = issueCollateral(x, &p, status, opts.RevokePCK, now, validity); err != nil {
		return nil, err
	}
	return s, nil
}

func validStatus(s string) bool {
	var st pcs.TcbComponentStatus
	return st.UnmarshalJSON([]byte(`"`+s+`"`)) == nil
}

func chainPEM(x *pki) []byte {
	var b []byte
	for _, c := range []*[]byte{&x.pck.Raw, &x.ca.Raw, &x.root.Raw} {
		b = append(b, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: *c})...)
	}
	return b
}

// RootPEM returns the simulator's root certificate (PEM): the one a
// verifier must be given, explicitly, to accept the simulator's quotes.
func (s *Simulator) RootPEM() []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: s.pki.root.Raw})
}

// Platform returns the simulated platform.
func (s *Simulator) Platform() Platform { return s.platform }

// TCBStatus returns the TCB status the collateral assigns to the platform.
func (s *Simulator) TCBStatus() string { return s.status }

// DefaultTD returns the TD parameters the simulator was created with.
func (s *Simulator) DefaultTD() TDParams { return s.td }

// Collateral returns copies of the simulator's collateral documents.
func (s *Simulator) Collateral() []*collateral.Entry {
	out := make([]*collateral.Entry, len(s.collateral))
	for i, e := range s.collateral {
		c := *e
		c.Body = append([]byte(nil), e.Body...)
		c.IssuerChain = append([]byte(nil), e.IssuerChain...)
		out[i] = &c
	}
	return out
}

// WriteCollateral writes the collateral in the collateral directory layout,
// so a broker loads it exactly like imported collateral.
func (s *Simulator) WriteCollateral(dir string) error {
	for _, e := range s.collateral {
		if err := collateral.WriteEntry(dir, e); err != nil {
			return err
		}
	}
	return nil
}

// Quote returns a TDX quote v4 over reportData for a TD with the given
// parameters: the TD quote body signed by the attestation key, and a QE
// report binding that key (SHA-256 of key ‖ QE auth data in its report
// data) signed by the PCK key, followed by the PCK certificate chain.
func (s *Simulator) Quote(reportData [64]byte, td TDParams) ([]byte, error) {
	teeTCBSVN := s.platform.TEETCBSVN
	if td.TEETCBSVN != ([16]byte{}) {
		teeTCBSVN = td.TEETCBSVN
	}
	mrSeam := s.platform.MRSEAM
	if td.MRSEAM != ([48]byte{}) {
		mrSeam = td.MRSEAM
	}
	attrs := td.Attributes &^ AttrDebug
	if td.Debug {
		attrs |= AttrDebug
	}
	header := &pb.Header{
		Version:            abi.QuoteVersion,
		AttestationKeyType: abi.AttestationKeyType,
		TeeType:            abi.TeeTDX,
		PceSvn:             le16(s.platform.PCESVN),
		QeSvn:              le16(s.platform.QESVN),
		QeVendorId:         clone(qeVendorID),
		UserData:           append(clone(s.qeID), 0, 0, 0, 0),
	}
	body := &pb.TDQuoteBody{
		TeeTcbSvn:      teeTCBSVN[:],
		MrSeam:         mrSeam[:],
		MrSignerSeam:   make([]byte, 48), // Intel-signed TDX module
		SeamAttributes: make([]byte, 8),
		TdAttributes:   le64(attrs),
		Xfam:           le64(td.XFAM),
		MrTd:           clone(td.MRTD[:]),
		MrConfigId:     clone(td.MRConfigID[:]),
		MrOwner:        clone(td.MROwner[:]),
		MrOwnerConfig:  clone(td.MROwnerConfig[:]),
		ReportData:     clone(reportData[:]),
	}
	for i := range td.RTMR {
		body.Rtmrs = append(body.Rtmrs, clone(td.RTMR[i][:]))
	}
	hb, err := abi.HeaderToAbiBytes(header)
	if err != nil {
		return nil, fmt.Errorf("tdxsim: %w", err)
	}
	bb, err := abi.TdQuoteBodyToAbiBytes(body)
	if err != nil {
		return nil, fmt.Errorf("tdxsim: %w", err)
	}
	quoteSig, err := sign(s.attKey, append(hb, bb...))
	if err != nil {
		return nil, err
	}
	attPub, err := s.attKey.PublicKey.Bytes() // 0x04 ‖ X ‖ Y
	if err != nil {
		return nil, fmt.Errorf("tdxsim: %w", err)
	}
	attPub = attPub[1:]
	authData := make([]byte, 32)
	for i := range authData {
		authData[i] = byte(i) // what Intel's QE puts there
	}
	qeReportData := sha256.Sum256(append(clone(attPub), authData...))
	mrEnclave := sha256.Sum256([]byte("tdxsim/v1/qe-mrenclave"))
	qeReport := &pb.EnclaveReport{
		CpuSvn:     clone(s.platform.CPUSVN[:]),
		MiscSelect: 0,
		Reserved1:  make([]byte, 28),
		Attributes: clone(qeAttributes),
		MrEnclave:  mrEnclave[:],
		Reserved2:  make([]byte, 32),
		MrSigner:   clone(qeMRSigner),
		Reserved3:  make([]byte, 96),
		IsvProdId:  qeISVProdID,
		IsvSvn:     uint32(s.platform.QESVN),
		Reserved4:  make([]byte, 60),
		ReportData: append(qeReportData[:], make([]byte, 32)...),
	}
	rb, err := abi.EnclaveReportToAbiBytes(qeReport)
	if err != nil {
		return nil, fmt.Errorf("tdxsim: %w", err)
	}
	qeSig, err := s.qeReportSignature(rb)
	if err != nil {
		return nil, err
	}
	const (
		qeReportCertDataType = 6 // certification data: QE report certification data
		pckChainDataType     = 5 // PCK leaf ‖ intermediate ‖ root, PEM
	)
	qeCert := &pb.QEReportCertificationData{
		QeReport:          qeReport,
		QeReportSignature: qeSig,
		QeAuthData:        &pb.QeAuthData{ParsedDataSize: uint32(len(authData)), Data: authData},
		PckCertificateChainData: &pb.PCKCertificateChainData{
			CertificateDataType: pckChainDataType,
			Size:                uint32(len(s.chainPEM)),
			PckCertChain:        clone(s.chainPEM),
		},
	}
	certSize := 0x180 + 0x40 + 2 + len(authData) + 6 + len(s.chainPEM)
	q := &pb.QuoteV4{
		Header:         header,
		TdQuoteBody:    body,
		SignedDataSize: uint32(0x40 + 0x40 + 6 + certSize),
		SignedData: &pb.Ecdsa256BitQuoteV4AuthData{
			Signature:           quoteSig,
			EcdsaAttestationKey: attPub,
			CertificationData: &pb.CertificationData{
				CertificateDataType:       qeReportCertDataType,
				Size:                      uint32(certSize),
				QeReportCertificationData: qeCert,
			},
		},
	}
	out, err := abi.QuoteToAbiBytes(q)
	if err != nil {
		return nil, fmt.Errorf("tdxsim: %w", err)
	}
	return out, nil
}

// qeReportSignature returns the PCK key's signature of the QE report rb.
// The QE report depends only on the platform and the attestation key, not
// on the quote, so, as with a real quoting enclave, one signature serves
// every quote: it is reused while the report bytes are the same. This
// halves the signing work per quote (the benchmarks' client shares the
// CPU with the broker it measures).
func (s *Simulator) qeReportSignature(rb []byte) ([]byte, error) {
	if c := s.signedQE.Load(); c != nil && bytes.Equal(c.report, rb) {
		return clone(c.sig), nil
	}
	sig, err := sign(s.pki.pckKey, rb)
	if err != nil {
		return nil, err
	}
	s.signedQE.Store(&signedReport{report: clone(rb), sig: clone(sig)})
	return sig, nil
}

// sign returns the ECDSA-P256-SHA256 signature of msg as r ‖ s (32 bytes
// each), the encoding quotes and Intel's collateral use.
func sign(k *ecdsa.PrivateKey, msg []byte) ([]byte, error) {
	d := sha256.Sum256(msg)
	r, s, err := ecdsa.Sign(rand.Reader, k, d[:])
	if err != nil {
		return nil, fmt.Errorf("tdxsim: sign: %w", err)
	}
	out := make([]byte, 64)
	r.FillBytes(out[:32])
	s.FillBytes(out[32:])
	return out, nil
}

func le16(v uint16) []byte  { return binary.LittleEndian.AppendUint16(nil, v) }
func le64(v uint64) []byte  { return binary.LittleEndian.AppendUint64(nil, v) }
func clone(b []byte) []byte { return append([]byte(nil), b...) }
