package verifier

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"maps"
	"net/url"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/go-tdx-guest/pcs"

	"github.com/cml-project/cml/tdx/collateral"
)

// collateralCache remembers, per PCK certificate chain, the last set of
// collateral with which go-tdx-guest fully verified a quote from that
// chain: the PCK chain to a trusted root, the CRL signatures and
// revocation of the PCK and its CA, the TCB info and QE identity
// signatures, issuer chains, IDs and versions, and the FMSPC and PCE-ID
// match. Each of those checks is a pure function of the PCK chain bytes,
// the collateral bytes (headers and bodies, as served), the trusted roots
// (fixed per Verifier) and the time; and every time-dependent one passes
// for any time inside [notBefore, notAfter] once it passed at one time
// inside it (they compare the time with certificate validity, CRL
// nextUpdate and collateral nextUpdate only).
//
// So a later quote with the same PCK chain bytes, verified while the
// collateral source serves byte-identical collateral for the same URLs,
// at a time inside the window, needs only the per-quote checks: the quote
// signature, the QE report signature (by the cached, verified PCK leaf)
// and report data binding (checkQuoteSignatures), and the matching of the
// quote against the collateral (replayQuoteMatch). The PCK chain's own
// checks (signatures to a trusted root, names, validity, revocation) are
// functions of the chain bytes, the roots, the CRL bytes and the time, so
// they are not repeated.
//
// Bounded: cleared when it reaches maxCollateralEntries (one entry per
// platform PCK certificate). Entries are immutable once stored.
type collateralCache struct {
	mu sync.Mutex
	m  map[[sha256.Size]byte]*verifiedSet
	// hits and misses count Verify calls that did and did not take the
	// cached path (tests and diagnosis).
	hits, misses atomic.Uint64
}

const maxCollateralEntries = 256

// verifiedSet is a cached (PCK chain, collateral) tuple that verified.
// Everything but qeReport is immutable once stored.
type verifiedSet struct {
	chain   []byte   // the PCK chain bytes (a copy)
	fetches []served // what go-tdx-guest fetched, in its order (copies)
	// The validity window: the latest NotBefore / issue date and the
	// earliest NotAfter / nextUpdate of every certificate, CRL and
	// collateral document involved, and of the trusted roots.
	notBefore, notAfter time.Time
	coll                verifiedCollateral
	// pck is the parsed leaf of the verified chain (shared, read only):
	// the cached path checks the QE report signature with its key.
	pck *x509.Certificate
	// qeReport is the last QE report whose signature pck verified on the
	// cached path (see checkQuoteSignatures); nil until then.
	qeReport atomic.Pointer[signedQEReport]
}

// signedQEReport is a QE report (its ABI bytes) and the signature over it,
// as a quote carries them.
type signedQEReport struct {
	report, sig []byte
}

// verifiedCollateral is the parsed collateral of a verified set.
type verifiedCollateral struct {
	ti      *pcs.TdxTcbInfo
	qe      *pcs.QeIdentity
	crlNext time.Time // earliest CRL nextUpdate; zero without CRL checks
}

// served is one successful fetch by go-tdx-guest during a full
// verification.
type served struct {
	url    string
	header map[string][]string
	body   []byte
}

func (c *collateralCache) lookup(chain [sha256.Size]byte) *verifiedSet {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.m[chain]
}

func (c *collateralCache) store(chain [sha256.Size]byte, s *verifiedSet) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil || (len(c.m) >= maxCollateralEntries && c.m[chain] == nil) {
		c.m = make(map[[sha256.Size]byte]*verifiedSet)
	}
	c.m[chain] = s
}

func (c *collateralCache) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.m)
}

// window computes the validity window of a verified set: every
// certificate in the PCK chain, in any issuer chain header, and the
// trusted roots; the TCB info and QE identity; and, with CRL checks, the
// CRLs. It is a superset of what go-tdx-guest checks against the time, so
// the window is never wider than the one in which go-tdx-guest would pass.
func window(chain []byte, fetches []served, roots []*x509.Certificate, coll verifiedCollateral, withCRLs bool) (notBefore, notAfter time.Time, err error) {
	var certs []*x509.Certificate
	addPEM := func(b []byte, strict bool) error {
		for rest := b; ; {
			var blk *pem.Block
			blk, rest = pem.Decode(rest)
			if blk == nil {
				return nil
			}
			c, err := x509.ParseCertificate(blk.Bytes)
			if err != nil {
				if strict {
					return err
				}
				continue
			}
			certs = append(certs, c)
		}
	}
	if err := addPEM(chain, true); err != nil {
		return notBefore, notAfter, fmt.Errorf("pck chain: %w", err)
	}
	for _, f := range fetches {
		for _, vs := range f.header {
			for _, v := range vs {
				// go-tdx-guest URL-unescapes issuer chains; values that are
				// not PEM certificates add nothing.
				if u, err := url.QueryUnescape(v); err == nil {
					_ = addPEM([]byte(u), false)
				}
			}
		}
	}
	certs = append(certs, roots...)
	later := func(t time.Time) {
		if t.After(notBefore) {
			notBefore = t
		}
	}
	earlier := func(t time.Time) {
		if notAfter.IsZero() || t.Before(notAfter) {
			notAfter = t
		}
	}
	for _, c := range certs {
		later(c.NotBefore)
		earlier(c.NotAfter)
	}
	ti, qe := &coll.ti.TcbInfo, &coll.qe.EnclaveIdentity
	if ti.NextUpdate.IsZero() || qe.NextUpdate.IsZero() {
		return notBefore, notAfter, errors.New("collateral without nextUpdate")
	}
	later(ti.IssueDate)
	earlier(ti.NextUpdate)
	later(qe.IssueDate)
	earlier(qe.NextUpdate)
	if withCRLs {
		n := 0
		for _, f := range fetches {
			k, err := collateral.KeyForURL(f.url)
			if err != nil {
				return notBefore, notAfter, err
			}
			if k.Kind != collateral.KindPCKCRL && k.Kind != collateral.KindRootCRL {
				continue
			}
			crl, err := x509.ParseRevocationList(f.body)
			if err != nil {
				return notBefore, notAfter, fmt.Errorf("%s: %w", k.Kind, err)
			}
			if crl.NextUpdate.IsZero() {
				return notBefore, notAfter, fmt.Errorf("%s without nextUpdate", k.Kind)
			}
			later(crl.ThisUpdate)
			earlier(crl.NextUpdate)
			n++
		}
		if n != 2 {
			return notBefore, notAfter, fmt.Errorf("%d CRLs fetched, want 2", n)
		}
	}
	if len(certs) == 0 || notAfter.Before(notBefore) {
		return notBefore, notAfter, errors.New("empty validity window")
	}
	return notBefore, notAfter, nil
}

// newVerifiedSet builds the cache entry after a full verification in
// which go-tdx-guest passed every collateral check (it accepted the
// quote, or failed only a TCB status check, its last checks).
func (v *Verifier) newVerifiedSet(chain []byte, fetches []served, coll verifiedCollateral) (*verifiedSet, error) {
	nb, na, err := window(chain, fetches, v.rootCerts, coll, v.checks == CheckFull)
	if err != nil {
		return nil, err
	}
	// The leaf is the first PEM block, as go-tdx-guest reads it.
	blk, _ := pem.Decode(chain)
	if blk == nil {
		return nil, errors.New("pck chain is not PEM")
	}
	pck, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		return nil, fmt.Errorf("pck leaf: %w", err)
	}
	s := &verifiedSet{
		chain:     bytes.Clone(chain),
		pck:       pck,
		notBefore: nb,
		notAfter:  na,
		coll:      coll,
	}
	for _, f := range fetches {
		h := make(map[string][]string, len(f.header))
		for k, vs := range f.header {
			h[k] = slices.Clone(vs)
		}
		s.fetches = append(s.fetches, served{url: f.url, header: h, body: bytes.Clone(f.body)})
	}
	return s, nil
}

// matches reports whether chain is the set's PCK chain and the source
// now serves exactly the cached collateral (headers and bodies) for the
// set's URLs, fetching them in go-tdx-guest's order. Any fetch error, or
// the end of ctx, is a miss: the full path reports it.
func (s *verifiedSet) matches(ctx context.Context, src CollateralSource, chain []byte) bool {
	if !bytes.Equal(chain, s.chain) {
		return false
	}
	for _, f := range s.fetches {
		if ctx.Err() != nil {
			return false
		}
		h, b, err := src.Get(ctx, f.url)
		if err != nil || !bytes.Equal(b, f.body) || !maps.EqualFunc(h, f.header, slices.Equal[[]string]) {
			return false
		}
	}
	return true
}

// qeReportVerified reports whether report and sig are the QE report and
// signature that pck last verified on the cached path. ECDSA verification
// is a function of the key, the message and the signature only, so the
// same bytes under the same (cached) PCK key verify again: a real quoting
// enclave puts the same signed QE report in every quote of a platform.
func (s *verifiedSet) qeReportVerified(report, sig []byte) bool {
	c := s.qeReport.Load()
	return c != nil && bytes.Equal(c.report, report) && bytes.Equal(c.sig, sig)
}

// rememberQEReport records a QE report and signature that pck verified.
func (s *verifiedSet) rememberQEReport(report, sig []byte) {
	s.qeReport.Store(&signedQEReport{report: bytes.Clone(report), sig: bytes.Clone(sig)})
}
