package collateral

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/asn1"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net/url"
	"regexp"
	"strings"
	"time"
)

// Errors returned by this package. The verifier maps each to a stable
// reason code, so callers branch on them with errors.Is.
var (
	// ErrMissing: the collateral is not in the directory (offline) or the
	// collateral service has none for this platform (HTTP 404).
	ErrMissing = errors.New("collateral: missing")
	// ErrExpired: the collateral's nextUpdate has passed.
	ErrExpired = errors.New("collateral: expired")
	// ErrUnavailable: fetching failed (network, timeout, HTTP error).
	ErrUnavailable = errors.New("collateral: unavailable")
	// ErrInvalid: the bytes do not parse, or their issuer chain or
	// signature is inconsistent.
	ErrInvalid = errors.New("collateral: invalid")
)

// Kind names one of the four collateral documents a TDX quote needs.
type Kind string

// The collateral kinds.
const (
	KindTCBInfo    Kind = "tcbinfo"    // TDX TCB info for one FMSPC (JSON, signed)
	KindQEIdentity Kind = "qeidentity" // TDX QE identity (JSON, signed)
	KindPCKCRL     Kind = "pckcrl"     // CRL of a PCK CA ("platform" or "processor"), DER
	KindRootCRL    Kind = "rootcrl"    // CRL of the Intel SGX Root CA, DER
)

// Response header names (canonical MIME form, as go-tdx-guest looks them up)
// that carry each kind's URL-encoded PEM issuer chain.
const (
	headerTCBInfoChain    = "Tcb-Info-Issuer-Chain"
	headerTCBInfoChainOld = "Sgx-Tcb-Info-Issuer-Chain" // PCS v3 name, accepted when fetching
	headerQEIdentityChain = "Sgx-Enclave-Identity-Issuer-Chain"
	headerPCKCRLChain     = "Sgx-Pck-Crl-Issuer-Chain"
)

// maxBodySize bounds every collateral document read from disk or network.
// Real ones are a few KiB (a PCK CRL with many entries can reach a few
// hundred KiB).
const maxBodySize = 4 << 20

var fmspcRE = regexp.MustCompile(`^[0-9a-f]{12}$`)

// Key identifies one collateral document.
type Key struct {
	Kind Kind
	// Param is the FMSPC (12 lowercase hex digits) for KindTCBInfo, the CA
	// ("platform" or "processor") for KindPCKCRL, and empty otherwise.
	Param string
}

func (k Key) String() string {
	if k.Param == "" {
		return string(k.Kind)
	}
	return string(k.Kind) + "-" + k.Param
}

// validate reports whether k names a document this package knows.
func (k Key) validate() error {
	switch k.Kind {
	case KindTCBInfo:
		if !fmspcRE.MatchString(k.Param) {
			return fmt.Errorf("collateral: fmspc %q is not 12 lowercase hex digits: %w", k.Param, ErrInvalid)
		}
	case KindPCKCRL:
		if k.Param != "platform" && k.Param != "processor" {
			return fmt.Errorf("collateral: pck crl ca %q is not platform or processor: %w", k.Param, ErrInvalid)
		}
	case KindQEIdentity, KindRootCRL:
		if k.Param != "" {
			return fmt.Errorf("collateral: %s takes no parameter: %w", k.Kind, ErrInvalid)
		}
	default:
		return fmt.Errorf("collateral: unknown kind %q: %w", k.Kind, ErrInvalid)
	}
	return nil
}

// bodyFile and chainFile are the file names of k in a collateral
// directory; see the package documentation for the layout.
func (k Key) bodyFile() string {
	switch k.Kind {
	case KindTCBInfo, KindQEIdentity:
		return k.String() + ".json"
	default:
		return k.String() + ".der"
	}
}

func (k Key) chainFile() string {
	if k.Kind == KindRootCRL {
		return ""
	}
	return k.String() + ".issuer-chain.pem"
}

func (k Key) chainHeader() string {
	switch k.Kind {
	case KindTCBInfo:
		return headerTCBInfoChain
	case KindQEIdentity:
		return headerQEIdentityChain
	case KindPCKCRL:
		return headerPCKCRLChain
	}
	return ""
}

// KeyForURL maps a URL that go-tdx-guest's verify package asks for to the
// document it names. Only the path and query matter: go-tdx-guest always
// names Intel's hosts, and the getter serves the document from its own
// directory or base URL instead.
//
//	.../tdx/certification/v4/tcb?fmspc=F            KindTCBInfo, F
//	.../tdx/certification/v4/qe/identity            KindQEIdentity
//	.../sgx/certification/v4/pckcrl?ca=C&...        KindPCKCRL, C
//	.../IntelSGXRootCA.der, .../v4/rootcacrl        KindRootCRL
//
// The root CRL URL comes from the CRL distribution point of the root
// certificate in the QE identity's issuer chain; its signature is checked
// against the trusted root, so where it is served from does not matter.
func KeyForURL(raw string) (Key, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return Key{}, fmt.Errorf("collateral: url %q: %v: %w", raw, err, ErrInvalid)
	}
	p := strings.TrimSuffix(u.Path, "/")
	var k Key
	switch {
	case strings.HasSuffix(p, "/tdx/certification/v4/tcb"):
		k = Key{Kind: KindTCBInfo, Param: strings.ToLower(u.Query().Get("fmspc"))}
	case strings.HasSuffix(p, "/tdx/certification/v4/qe/identity"):
		k = Key{Kind: KindQEIdentity}
	case strings.HasSuffix(p, "/sgx/certification/v4/pckcrl"):
		k = Key{Kind: KindPCKCRL, Param: u.Query().Get("ca")}
	case strings.HasSuffix(p, "/IntelSGXRootCA.der"), strings.HasSuffix(p, "/sgx/certification/v4/rootcacrl"):
		k = Key{Kind: KindRootCRL}
	default:
		return Key{}, fmt.Errorf("collateral: url %q names no known collateral: %w", raw, ErrInvalid)
	}
	if err := k.validate(); err != nil {
		return Key{}, err
	}
	return k, nil
}

// Entry is one collateral document exactly as the collateral service
// served it: signatures cover the exact body bytes, so they are never
// re-encoded.
type Entry struct {
	Key
	// Body is the response body: JSON for TCB info and QE identity, DER for
	// CRLs.
	Body []byte
	// IssuerChain is the PEM issuer chain from the response header (signing
	// certificate, then root), URL-decoded. Empty for the root CRL.
	IssuerChain []byte
}

// Info describes a validated entry.
type Info struct {
	Key
	IssueDate  time.Time
	NextUpdate time.Time
}

// Header returns the response header go-tdx-guest expects with e's body:
// the issuer chain, URL-encoded, under its canonical name.
func (e *Entry) Header() map[string][]string {
	h := e.chainHeader()
	if h == "" {
		return map[string][]string{}
	}
	return map[string][]string{h: {url.QueryEscape(string(e.IssuerChain))}}
}

// signedJSON is the envelope of TCB info and QE identity responses.
type signedJSON struct {
	TCBInfo         json.RawMessage `json:"tcbInfo"`
	EnclaveIdentity json.RawMessage `json:"enclaveIdentity"`
	Signature       string          `json:"signature"`
}

type tcbInfoFields struct {
	ID         string    `json:"id"`
	Version    int       `json:"version"`
	IssueDate  time.Time `json:"issueDate"`
	NextUpdate time.Time `json:"nextUpdate"`
	FMSPC      string    `json:"fmspc"`
}

type qeIdentityFields struct {
	ID         string    `json:"id"`
	Version    int       `json:"version"`
	IssueDate  time.Time `json:"issueDate"`
	NextUpdate time.Time `json:"nextUpdate"`
}

// Parse checks that e is well formed for its kind and returns its dates.
// For signed JSON it also checks the signature with the issuer chain's
// signing certificate, and that certificate's signature by the chain's
// root: this catches corruption and mix-ups early. It does NOT decide
// whether the root is trusted; the verifier does that on every quote.
func (e *Entry) Parse() (Info, error) {
	info := Info{Key: e.Key}
	if err := e.Key.validate(); err != nil {
		return info, err
	}
	if len(e.Body) == 0 {
		return info, fmt.Errorf("collateral: %s: empty body: %w", e.Key, ErrInvalid)
	}
	if len(e.Body) > maxBodySize {
		return info, fmt.Errorf("collateral: %s: body of %d bytes exceeds %d: %w", e.Key, len(e.Body), maxBodySize, ErrInvalid)
	}
	var signer *x509.Certificate
	if e.Kind != KindRootCRL {
		chain, err := parseIssuerChain(e.IssuerChain)
		if err != nil {
			return info, fmt.Errorf("collateral: %s: issuer chain: %v: %w", e.Key, err, ErrInvalid)
		}
		signer = chain[0]
	}
	switch e.Kind {
	case KindTCBInfo, KindQEIdentity:
		return e.parseSignedJSON(info, signer)
	default:
		crl, err := x509.ParseRevocationList(e.Body)
		if err != nil {
			return info, fmt.Errorf("collateral: %s: %v: %w", e.Key, err, ErrInvalid)
		}
		if crl.NextUpdate.IsZero() {
			return info, fmt.Errorf("collateral: %s: crl has no nextUpdate: %w", e.Key, ErrInvalid)
		}
		if signer != nil {
			if err := crl.CheckSignatureFrom(signer); err != nil {
				return info, fmt.Errorf("collateral: %s: crl signature: %v: %w", e.Key, err, ErrInvalid)
			}
		}
		info.IssueDate, info.NextUpdate = crl.ThisUpdate, crl.NextUpdate
		return info, nil
	}
}

func (e *Entry) parseSignedJSON(info Info, signer *x509.Certificate) (Info, error) {
	var env signedJSON
	if err := json.Unmarshal(e.Body, &env); err != nil {
		return info, fmt.Errorf("collateral: %s: %v: %w", e.Key, err, ErrInvalid)
	}
	signed := env.TCBInfo
	if e.Kind == KindQEIdentity {
		signed = env.EnclaveIdentity
	}
	if len(signed) == 0 {
		return info, fmt.Errorf("collateral: %s: signed body field missing: %w", e.Key, ErrInvalid)
	}
	switch e.Kind {
	case KindTCBInfo:
		var f tcbInfoFields
		if err := json.Unmarshal(signed, &f); err != nil {
			return info, fmt.Errorf("collateral: %s: %v: %w", e.Key, err, ErrInvalid)
		}
		if f.ID != "TDX" || f.Version != 3 {
			return info, fmt.Errorf("collateral: %s: tcb info id %q version %d, want TDX version 3: %w", e.Key, f.ID, f.Version, ErrInvalid)
		}
		if strings.ToLower(f.FMSPC) != e.Param {
			return info, fmt.Errorf("collateral: %s: body is for fmspc %q: %w", e.Key, f.FMSPC, ErrInvalid)
		}
		info.IssueDate, info.NextUpdate = f.IssueDate, f.NextUpdate
	case KindQEIdentity:
		var f qeIdentityFields
		if err := json.Unmarshal(signed, &f); err != nil {
			return info, fmt.Errorf("collateral: %s: %v: %w", e.Key, err, ErrInvalid)
		}
		if f.ID != "TD_QE" || f.Version != 2 {
			return info, fmt.Errorf("collateral: %s: qe identity id %q version %d, want TD_QE version 2: %w", e.Key, f.ID, f.Version, ErrInvalid)
		}
		info.IssueDate, info.NextUpdate = f.IssueDate, f.NextUpdate
	}
	if info.NextUpdate.IsZero() {
		return info, fmt.Errorf("collateral: %s: no nextUpdate: %w", e.Key, ErrInvalid)
	}
	sig, err := hex.DecodeString(env.Signature)
	if err != nil || len(sig) != 64 {
		return info, fmt.Errorf("collateral: %s: signature is not 64 hex-encoded bytes: %w", e.Key, ErrInvalid)
	}
	pub, ok := signer.PublicKey.(*ecdsa.PublicKey)
	if !ok {
		return info, fmt.Errorf("collateral: %s: signing certificate key is not ECDSA: %w", e.Key, ErrInvalid)
	}
	digest := sha256.Sum256(signed)
	r, s := new(big.Int).SetBytes(sig[:32]), new(big.Int).SetBytes(sig[32:])
	if !ecdsa.Verify(pub, digest[:], r, s) {
		return info, fmt.Errorf("collateral: %s: signature does not verify with the issuer chain's signing certificate: %w", e.Key, ErrInvalid)
	}
	return info, nil
}

// parseIssuerChain parses exactly two PEM certificates (signing, root) and
// checks that the root signed the signing certificate.
func parseIssuerChain(b []byte) ([]*x509.Certificate, error) {
	var certs []*x509.Certificate
	rest := bytes.TrimSpace(b)
	for len(rest) > 0 {
		var blk *pem.Block
		blk, rest = pem.Decode(rest)
		if blk == nil {
			return nil, errors.New("not PEM")
		}
		if blk.Type != "CERTIFICATE" {
			return nil, fmt.Errorf("unexpected PEM block %q", blk.Type)
		}
		c, err := x509.ParseCertificate(blk.Bytes)
		if err != nil {
			return nil, err
		}
		certs = append(certs, c)
		rest = bytes.TrimSpace(rest)
		if len(certs) > 2 {
			break
		}
	}
	if len(certs) != 2 {
		return nil, fmt.Errorf("%d certificates, want 2 (signing, root)", len(certs))
	}
	if err := certs[0].CheckSignatureFrom(certs[1]); err != nil {
		return nil, fmt.Errorf("signing certificate not signed by chain root: %v", err)
	}
	return certs, nil
}

// normalizeCRL returns DER for a CRL body that is DER already, hex (some
// PCCS versions serve CRLs hex-encoded) or PEM. Decoding is lossless: the
// signed bytes are unchanged.
func normalizeCRL(body []byte) []byte {
	if len(body) > 0 && body[0] == 0x30 {
		var raw asn1.RawValue
		if _, err := asn1.Unmarshal(body, &raw); err == nil {
			return body
		}
	}
	trimmed := bytes.TrimSpace(body)
	if der, err := hex.DecodeString(string(trimmed)); err == nil {
		return der
	}
	if blk, rest := pem.Decode(trimmed); blk != nil && blk.Type == "X509 CRL" && len(bytes.TrimSpace(rest)) == 0 {
		return blk.Bytes
	}
	return body
}
