package verifier

import (
	"context"
	"crypto/sha256"
	"crypto/x509"
	_ "embed"
	"encoding/pem"
	"errors"
	"fmt"
	"time"

	"github.com/google/go-tdx-guest/abi"
	"github.com/google/go-tdx-guest/pcs"
	pb "github.com/google/go-tdx-guest/proto/tdx"
	"github.com/google/go-tdx-guest/verify"

	"github.com/cml-project/cml/tdx/collateral"
)

// intelRootPEM is Intel's SGX Root CA, the root of every genuine PCK
// chain (also go-tdx-guest v0.3.1 verify/trusted_root.pem). TestIntelRoot
// pins its subject and SHA-256 fingerprint.
//
//go:embed intel_sgx_root_ca.pem
var intelRootPEM []byte

// IntelRootCA returns a fresh copy of the pinned Intel SGX Root CA
// certificate.
func IntelRootCA() *x509.Certificate {
	blk, _ := pem.Decode(intelRootPEM)
	if blk == nil {
		panic("verifier: embedded Intel SGX Root CA is not PEM")
	}
	c, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		panic("verifier: embedded Intel SGX Root CA does not parse: " + err.Error())
	}
	return c
}

// DefaultMaxQuoteSize bounds the quote size when Config.MaxQuoteSize is 0.
// Real quotes are about 5 KiB.
const DefaultMaxQuoteSize = 64 << 10

// CollateralSource serves collateral documents for the URLs go-tdx-guest
// asks for: the response header (with the issuer chain) and the exact body.
// *collateral.Getter implements it. Errors should wrap collateral.ErrMissing,
// ErrExpired, ErrUnavailable or ErrInvalid; they become reason codes. The
// returned header and body may be shared with other callers: the verifier
// only reads, hashes and compares them, and copies what it caches.
type CollateralSource interface {
	Get(ctx context.Context, url string) (header map[string][]string, body []byte, err error)
}

var _ CollateralSource = (*collateral.Getter)(nil)

// Checks selects how much Verify checks. The zero value checks everything
// and is the only setting for releasing keys.
type Checks int

const (
	// CheckFull: quote and QE report signatures, PCK chain to a trusted
	// root, TCB info and QE identity (signatures, expiry, match, TCB status),
	// PCK and root CRLs.
	CheckFull Checks = iota
	// CheckNoCRL: CheckFull without the CRLs. Benchmarks and diagnosis only.
	CheckNoCRL
	// CheckSignatureChain: signatures and the PCK chain only; no collateral
	// and no TCB status (Claims.TCBStatus is TCBStatusNotEvaluated).
	// Inspection and benchmarks only.
	CheckSignatureChain
)

func (c Checks) String() string {
	switch c {
	case CheckFull:
		return "full"
	case CheckNoCRL:
		return "no-crl"
	case CheckSignatureChain:
		return "signature-chain"
	}
	return fmt.Sprintf("Checks(%d)", int(c))
}

// Config configures a Verifier.
type Config struct {
	// Collateral serves TCB info, QE identity and CRLs. Required unless
	// Checks is CheckSignatureChain.
	Collateral CollateralSource
	// ExtraRoots are trusted in addition to the pinned Intel SGX Root CA.
	// Leave empty in production; the TDX simulator's root goes here only in
	// development setups.
	ExtraRoots []*x509.Certificate
	// Now is the verification clock. Required.
	Now func() time.Time
	// Checks; the zero value is CheckFull.
	Checks Checks
	// MaxQuoteSize bounds the input (DefaultMaxQuoteSize if 0).
	MaxQuoteSize int
	// DisableCache turns off the verified-collateral cache (see
	// "Caching" in doc.go): every call then runs go-tdx-guest's full
	// collateral verification. The zero value caches; results are the
	// same either way, only the CPU cost differs.
	DisableCache bool
}

// Verifier verifies TDX quotes. It is safe for concurrent use.
type Verifier struct {
	cache     parseCache
	coll      *collateralCache // nil: disabled, or CheckSignatureChain
	src       CollateralSource
	roots     *x509.CertPool
	rootCerts []*x509.Certificate
	now       func() time.Time
	checks    Checks
	maxSize   int
}

// New returns a Verifier for cfg.
func New(cfg Config) (*Verifier, error) {
	if cfg.Now == nil {
		return nil, errors.New("verifier: Config.Now is required")
	}
	switch cfg.Checks {
	case CheckFull, CheckNoCRL:
		if cfg.Collateral == nil {
			return nil, fmt.Errorf("verifier: Config.Collateral is required for checks %s", cfg.Checks)
		}
	case CheckSignatureChain:
	default:
		return nil, fmt.Errorf("verifier: unknown checks %d", int(cfg.Checks))
	}
	roots := x509.NewCertPool()
	rootCerts := []*x509.Certificate{IntelRootCA()}
	roots.AddCert(rootCerts[0])
	for i, c := range cfg.ExtraRoots {
		if c == nil || !c.IsCA || !c.BasicConstraintsValid {
			return nil, fmt.Errorf("verifier: extra root %d is not a CA certificate", i)
		}
		if err := c.CheckSignatureFrom(c); err != nil {
			return nil, fmt.Errorf("verifier: extra root %d (%s) is not self-signed: %w", i, c.Subject, err)
		}
		roots.AddCert(c)
		rootCerts = append(rootCerts, c)
	}
	maxSize := cfg.MaxQuoteSize
	if maxSize <= 0 {
		maxSize = DefaultMaxQuoteSize
	}
	v := &Verifier{src: cfg.Collateral, roots: roots, rootCerts: rootCerts, now: cfg.Now, checks: cfg.Checks, maxSize: maxSize}
	if !cfg.DisableCache && cfg.Checks != CheckSignatureChain {
		v.coll = &collateralCache{}
	}
	return v, nil
}

// callSource adapts the CollateralSource to go-tdx-guest's context-free
// getter for one Verify call. go-tdx-guest formats getter errors with %v,
// so it keeps the first one (for its type), the bodies it served (for the
// TCB evaluation) and every successful fetch in order (for the collateral
// cache). One call runs on one goroutine.
type callSource struct {
	ctx    context.Context
	src    CollateralSource
	err    error
	bodies map[collateral.Kind][]byte
	served []served
}

func newCallSource(ctx context.Context, src CollateralSource) *callSource {
	return &callSource{ctx: ctx, src: src, bodies: map[collateral.Kind][]byte{}}
}

func (c *callSource) Get(url string) (map[string][]string, []byte, error) {
	if err := c.ctx.Err(); err != nil {
		if c.err == nil {
			c.err = fmt.Errorf("collateral: %w (%w)", collateral.ErrUnavailable, err)
		}
		return nil, nil, c.err
	}
	h, b, err := c.src.Get(c.ctx, url)
	if err != nil {
		if c.err == nil {
			c.err = err
		}
		return nil, nil, err
	}
	if k, kerr := collateral.KeyForURL(url); kerr == nil {
		c.bodies[k.Kind] = b
	}
	c.served = append(c.served, served{url: url, header: h, body: b})
	return h, b, nil
}

func fail(r Reason, err error) *Error { return &Error{Reason: r, Err: err} }

// Verify checks that quote is a genuine TDX quote and returns its claims.
// On failure the error is an *Error whose Reason is a stable code; for TCB
// statuses other than UpToDate the *Error also carries the (authentic)
// claims. Verify never decides policy: the caller checks the claims
// (measurements, DEBUG, REPORTDATA, TCB status) against its own.
//
// Network access, if the collateral source needs it, is bounded by ctx.
func (v *Verifier) Verify(ctx context.Context, quote []byte) (*Claims, error) {
	if len(quote) > v.maxSize {
		return nil, fail(ReasonQuoteTooLarge, fmt.Errorf("quote is %d bytes, limit %d", len(quote), v.maxSize))
	}
	if err := checkLayout(quote); err != nil {
		var le *layoutError
		if errors.As(err, &le) {
			return nil, fail(le.reason, err)
		}
		return nil, fail(ReasonQuoteMalformed, err)
	}
	if err := ctx.Err(); err != nil {
		return nil, fail(ReasonCanceled, err)
	}
	q, err := parseQuote(quote)
	if err != nil {
		return nil, fail(ReasonQuoteMalformed, err)
	}
	now := v.now()
	qeCert := q.GetSignedData().GetCertificationData().GetQeReportCertificationData()
	chain := qeCert.GetPckCertificateChainData().GetPckCertChain()
	var chainDigest [32]byte
	if v.coll != nil {
		chainDigest = sha256.Sum256(chain)
		if set := v.coll.lookup(chainDigest); set != nil && !now.Before(set.notBefore) && !now.After(set.notAfter) {
			if set.matches(ctx, v.src, chain) {
				v.coll.hits.Add(1)
				return v.verifyCached(q, set)
			}
		}
		v.coll.misses.Add(1)
	}

	src := newCallSource(ctx, v.src)
	// A fresh Options per call: go-tdx-guest stores its working state in it.
	opts := &verify.Options{
		GetCollateral:    v.checks != CheckSignatureChain,
		CheckRevocations: v.checks == CheckFull,
		Getter:           src,
		Now:              now,
		TrustedRoots:     v.roots,
	}
	verr := runVerify(q, opts)
	var reason Reason
	if verr != nil {
		reason = classify(verr, src.err)
		if reason != markTDStatus && reason != markQEStatus {
			return nil, fail(reason, verr)
		}
	}
	// The quote verified, or failed only its TCB status.
	if v.checks == CheckSignatureChain {
		return v.finish(q, reason, verr, nil)
	}
	// Read the collateral from the same bytes go-tdx-guest just verified.
	var coll verifiedCollateral
	if coll.ti, err = v.cache.tcbInfo(src.bodies[collateral.KindTCBInfo]); err != nil {
		return nil, fail(ReasonVerificationFailed, fmt.Errorf("re-reading verified tcb info: %w", err))
	}
	if coll.qe, err = v.cache.qeIdentity(src.bodies[collateral.KindQEIdentity]); err != nil {
		return nil, fail(ReasonVerificationFailed, fmt.Errorf("re-reading verified qe identity: %w", err))
	}
	if v.checks == CheckFull {
		for _, k := range []collateral.Kind{collateral.KindPCKCRL, collateral.KindRootCRL} {
			next, err := v.cache.crlNextUpdate(src.bodies[k])
			if err != nil {
				return nil, fail(ReasonVerificationFailed, fmt.Errorf("re-reading verified %s: %w", k, err))
			}
			coll.crlNext = earliest(coll.crlNext, next)
		}
	}
	// go-tdx-guest has passed every check that depends only on the PCK
	// chain, the collateral and the time: remember the tuple (only if
	// every fetch succeeded, so its fetch sequence is the one it makes).
	if v.coll != nil && src.err == nil {
		if set, err := v.newVerifiedSet(chain, src.served, coll); err == nil {
			v.coll.store(chainDigest, set)
		}
	}
	return v.finish(q, reason, verr, &coll)
}

// verifyCached verifies a quote whose PCK chain and collateral form a
// cached verified set (the quote carries the set's exact chain bytes, the
// source serves the same collateral bytes, now is inside the set's
// window): checkQuoteSignatures replays go-tdx-guest's per-quote signature
// checks with the set's already verified PCK leaf, then replayQuoteMatch
// its per-quote collateral checks. The result is what the full path would
// return.
func (v *Verifier) verifyCached(q *pb.QuoteV4, set *verifiedSet) (*Claims, error) {
	if err := checkQuoteSignatures(q, set); err != nil {
		return nil, fail(classify(err, nil), err)
	}
	qeCert := q.GetSignedData().GetCertificationData().GetQeReportCertificationData()
	ext, err := v.cache.pckExtensions(qeCert.GetPckCertificateChainData().GetPckCertChain())
	if err != nil { // cannot happen after go-tdx-guest parsed the same chain
		return nil, fail(ReasonPCKChainInvalid, err)
	}
	reason, merr := replayQuoteMatch(&set.coll.ti.TcbInfo, &set.coll.qe.EnclaveIdentity, q.GetTdQuoteBody(), qeCert.GetQeReport(), ext)
	if reason != "" && reason != markTDStatus && reason != markQEStatus {
		return nil, fail(reason, merr)
	}
	return v.finish(q, reason, merr, &set.coll)
}

// finish builds the claims of a quote that verified or failed only its TCB
// status (reason markTDStatus or markQEStatus, with libErr the library's
// error) and evaluates the TCB status from coll (nil for
// CheckSignatureChain).
func (v *Verifier) finish(q *pb.QuoteV4, reason Reason, libErr error, coll *verifiedCollateral) (*Claims, error) {
	claims := claimsFromBody(q.GetTdQuoteBody())
	claims.Checks = v.checks
	qeCert := q.GetSignedData().GetCertificationData().GetQeReportCertificationData()
	ext, err := v.cache.pckExtensions(qeCert.GetPckCertificateChainData().GetPckCertChain())
	if err != nil { // cannot happen after go-tdx-guest parsed the same chain
		return nil, fail(ReasonPCKChainInvalid, err)
	}
	claims.FMSPC = ext.FMSPC
	if coll == nil {
		return claims, nil
	}
	ti, qe := coll.ti, coll.qe
	claims.TCBInfoIssueDate, claims.TCBInfoNextUpdate = ti.TcbInfo.IssueDate, ti.TcbInfo.NextUpdate
	claims.QEIdentityIssueDate, claims.QEIdentityNextUpdate = qe.EnclaveIdentity.IssueDate, qe.EnclaveIdentity.NextUpdate
	claims.CollateralNextUpdate = earliest(earliest(ti.TcbInfo.NextUpdate, qe.EnclaveIdentity.NextUpdate), coll.crlNext)
	if reason == markTDStatus {
		// go-tdx-guest stopped before comparing the QE report with the QE
		// identity; do it here.
		if err := matchQEIdentity(&qe.EnclaveIdentity, qeCert.GetQeReport()); err != nil {
			return nil, fail(ReasonQEIdentityMismatch, err)
		}
	}
	res, err := evaluateTCB(&ti.TcbInfo, &qe.EnclaveIdentity, q.GetTdQuoteBody(), ext, qeCert.GetQeReport().GetIsvSvn())
	if err != nil {
		if libErr != nil && errors.Is(err, errNoTCBLevel) {
			return nil, fail(ReasonTCBUnsupported, fmt.Errorf("%w (go-tdx-guest: %v)", err, libErr))
		}
		return nil, fail(ReasonVerificationFailed, fmt.Errorf("tcb evaluation disagrees with go-tdx-guest: %w", err))
	}
	claims.TCBStatus, claims.AdvisoryIDs, claims.TCBDate = res.status, res.advisoryIDs, res.tcbDate
	sr := statusReason(res.status)
	switch {
	case libErr == nil && sr == "":
		return claims, nil
	case libErr == nil || sr == "":
		// Fail closed if the two evaluations ever disagree.
		return nil, fail(ReasonVerificationFailed, fmt.Errorf("tcb status %q disagrees with go-tdx-guest (%v)", res.status, libErr))
	default:
		return nil, &Error{Reason: sr, Err: fmt.Errorf("tcb status %s", res.status), Claims: claims}
	}
}

func earliest(a, b time.Time) time.Time {
	if a.IsZero() || (!b.IsZero() && b.Before(a)) {
		return b
	}
	return a
}

// parseQuote converts checked bytes to go-tdx-guest's form, turning any
// panic in the library into an error.
func parseQuote(b []byte) (q *pb.QuoteV4, err error) {
	defer func() {
		if r := recover(); r != nil {
			q, err = nil, fmt.Errorf("quote parser panicked: %v", r)
		}
	}()
	a, err := abi.QuoteToProto(b)
	if err != nil {
		return nil, err
	}
	q, ok := a.(*pb.QuoteV4)
	if !ok {
		return nil, fmt.Errorf("unexpected quote type %T", a)
	}
	return q, nil
}

// runVerify calls go-tdx-guest, turning any panic into an error (which
// classifies as verification_failed).
func runVerify(q *pb.QuoteV4, opts *verify.Options) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("go-tdx-guest verify panicked: %v", r)
		}
	}()
	return verify.TdxQuote(q, opts)
}

// pckExtensions parses the PCK leaf (the first PEM block) and its SGX
// extension.
func pckExtensions(chain []byte) (*pcs.PckExtensions, error) {
	blk, _ := pem.Decode(chain)
	if blk == nil {
		return nil, errors.New("PCK chain is not PEM")
	}
	c, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		return nil, err
	}
	return pcs.PckCertificateExtensions(c)
}
