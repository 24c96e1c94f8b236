package devca

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net/url"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

const (
	// DefaultCATTL is the CA certificate's lifetime when Options.CATTL is 0.
	DefaultCATTL = 365 * 24 * time.Hour

	// backdate is subtracted from "now" for NotBefore so that a peer whose
	// clock is slightly behind still accepts a freshly issued certificate.
	backdate = time.Minute

	// organization marks every certificate so that one found in the wild is
	// recognisable as development material.
	organization = "cml development CA - NOT FOR PRODUCTION"
)

// Options configures New and Load. The zero value is usable.
type Options struct {
	// Now returns the current time; nil means time.Now. It sets the CA's
	// validity (New) and each SVID's validity (Issue).
	Now func() time.Time

	// CATTL is the lifetime of a new CA certificate; 0 means DefaultCATTL.
	CATTL time.Duration

	// NameConstraints adds a critical name constraint to a new CA that
	// permits only URI SANs in its trust domain, so even a misused CA key
	// cannot sign a certificate that verifiers accept for another domain.
	NameConstraints bool
}

// CA is an in-memory development CA for one trust domain. It is safe for
// concurrent use.
type CA struct {
	td   spiffeid.TrustDomain
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	now  func() time.Time
}

// New creates a self-signed ECDSA P-256 CA for td.
func New(td spiffeid.TrustDomain, opts Options) (*CA, error) {
	if td.IsZero() {
		return nil, errors.New("devca: trust domain is required")
	}
	now := nowFunc(opts)
	ttl := opts.CATTL
	if ttl == 0 {
		ttl = DefaultCATTL
	}
	if ttl < 0 {
		return nil, fmt.Errorf("devca: CA lifetime %s is negative", ttl)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("devca: generate CA key: %w", err)
	}
	serial, err := randomSerial()
	if err != nil {
		return nil, err
	}
	t := now()
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject: pkix.Name{
			Organization: []string{organization},
			CommonName:   "cml dev CA for " + td.Name(),
		},
		URIs:                  []*url.URL{td.ID().URL()},
		NotBefore:             t.Add(-backdate),
		NotAfter:              t.Add(ttl),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		// SVIDs are signed directly by this CA: no intermediates.
		MaxPathLenZero: true,
	}
	if opts.NameConstraints {
		tmpl.PermittedURIDomains = []string{td.Name()}
		tmpl.PermittedDNSDomainsCritical = true // marks the whole extension critical
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, fmt.Errorf("devca: create CA certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("devca: parse new CA certificate: %w", err)
	}
	return &CA{td: td, cert: cert, key: key, now: now}, nil
}

// Load parses a CA written by MarshalPEM (ca.pem and ca-key.pem). Only
// opts.Now is used.
func Load(certPEM, keyPEM []byte, opts Options) (*CA, error) {
	cert, err := parseOnePEM(certPEM, "CERTIFICATE")
	if err != nil {
		return nil, fmt.Errorf("devca: CA certificate: %w", err)
	}
	c, err := x509.ParseCertificate(cert)
	if err != nil {
		return nil, fmt.Errorf("devca: CA certificate: %w", err)
	}
	if !c.BasicConstraintsValid || !c.IsCA || c.KeyUsage&x509.KeyUsageCertSign == 0 {
		return nil, errors.New("devca: CA certificate: not a CA (needs basic constraints CA:TRUE and keyCertSign)")
	}
	if len(c.URIs) != 1 {
		return nil, fmt.Errorf("devca: CA certificate: has %d URI SANs, want exactly one spiffe://<trust domain>", len(c.URIs))
	}
	id, err := spiffeid.FromURI(c.URIs[0])
	if err != nil {
		return nil, fmt.Errorf("devca: CA certificate: URI SAN: %w", err)
	}
	if id.Path() != "" {
		return nil, fmt.Errorf("devca: CA certificate: URI SAN %s is not a trust domain ID (it has a path)", id)
	}
	keyDER, err := parseOnePEM(keyPEM, "PRIVATE KEY")
	if err != nil {
		return nil, fmt.Errorf("devca: CA key: %w", err)
	}
	k, err := x509.ParsePKCS8PrivateKey(keyDER)
	if err != nil {
		return nil, fmt.Errorf("devca: CA key: %w", err)
	}
	ek, ok := k.(*ecdsa.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("devca: CA key: is %T, want an ECDSA key", k)
	}
	if !ek.PublicKey.Equal(c.PublicKey) {
		return nil, errors.New("devca: CA key does not match the CA certificate")
	}
	ca := &CA{td: id.TrustDomain(), cert: c, key: ek, now: nowFunc(opts)}
	if err := ca.selfCheck(); err != nil {
		return nil, err
	}
	return ca, nil
}

// selfCheck issues a probe SVID over the CA's whole validity and verifies it
// against the CA's own bundle. It refuses a CA that would issue SVIDs no peer
// accepts: name constraints that exclude its trust domain, an unhandled
// critical extension, a validity period of zero length.
func (ca *CA) selfCheck() error {
	probe, err := spiffeid.FromPath(ca.td, "/devca-load-check")
	if err != nil {
		return fmt.Errorf("devca: CA certificate: %w", err)
	}
	svid, err := ca.IssueValidity(probe, ca.cert.NotBefore, ca.cert.NotAfter)
	if err != nil {
		return fmt.Errorf("devca: CA certificate cannot issue SVIDs: %w", err)
	}
	if _, _, err := x509svid.Verify(svid.Certificates, ca.Bundle(), x509svid.WithTime(ca.cert.NotBefore)); err != nil {
		return fmt.Errorf("devca: CA certificate issues SVIDs for %s that do not verify against it (regenerate the CA with kbsctl dev certs): %w", ca.td, err)
	}
	return nil
}

// TrustDomain returns the CA's trust domain.
func (ca *CA) TrustDomain() spiffeid.TrustDomain { return ca.td }

// Certificate returns the CA certificate. The caller must not modify it.
func (ca *CA) Certificate() *x509.Certificate { return ca.cert }

// Bundle returns a new trust bundle holding the CA certificate.
func (ca *CA) Bundle() *x509bundle.Bundle {
	return x509bundle.FromX509Authorities(ca.td, []*x509.Certificate{ca.cert})
}

// MarshalPEM returns the CA certificate (the bundle file) and its PKCS#8
// private key, both PEM-encoded.
func (ca *CA) MarshalPEM() (certPEM, keyPEM []byte, err error) {
	keyDER, err := x509.MarshalPKCS8PrivateKey(ca.key)
	if err != nil {
		return nil, nil, fmt.Errorf("devca: marshal CA key: %w", err)
	}
	return pemEncode("CERTIFICATE", ca.cert.Raw), pemEncode("PRIVATE KEY", keyDER), nil
}

// Issue makes an X.509-SVID for id valid from now (minus one minute of
// clock-skew allowance) for ttl.
func (ca *CA) Issue(id spiffeid.ID, ttl time.Duration) (*x509svid.SVID, error) {
	if ttl <= 0 {
		return nil, fmt.Errorf("devca: SVID lifetime %s must be positive", ttl)
	}
	t := ca.now()
	return ca.IssueValidity(id, t.Add(-backdate), t.Add(ttl))
}

// IssueValidity makes an X.509-SVID for id with exactly the given validity
// period, which must lie within the CA's. Tests use it for expired SVIDs.
func (ca *CA) IssueValidity(id spiffeid.ID, notBefore, notAfter time.Time) (*x509svid.SVID, error) {
	switch {
	case id.IsZero():
		return nil, errors.New("devca: SPIFFE ID is required")
	case !id.MemberOf(ca.td):
		return nil, fmt.Errorf("devca: SPIFFE ID %s is not in trust domain %s", id, ca.td)
	case id.Path() == "":
		return nil, fmt.Errorf("devca: SPIFFE ID %s has no path; an SVID cannot name the trust domain itself", id)
	case !notAfter.After(notBefore):
		return nil, fmt.Errorf("devca: SVID validity ends (%s) before it starts (%s)", notAfter.UTC().Format(time.RFC3339), notBefore.UTC().Format(time.RFC3339))
	case notBefore.Before(ca.cert.NotBefore) || notAfter.After(ca.cert.NotAfter):
		return nil, fmt.Errorf("devca: SVID validity %s..%s is outside the CA's %s..%s",
			notBefore.UTC().Format(time.RFC3339), notAfter.UTC().Format(time.RFC3339),
			ca.cert.NotBefore.UTC().Format(time.RFC3339), ca.cert.NotAfter.UTC().Format(time.RFC3339))
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("devca: generate SVID key: %w", err)
	}
	serial, err := randomSerial()
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject: pkix.Name{
			Organization: []string{organization},
			CommonName:   id.Path(),
		},
		URIs:                  []*url.URL{id.URL()},
		NotBefore:             notBefore,
		NotAfter:              notAfter,
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		BasicConstraintsValid: true,
		IsCA:                  false,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, key.Public(), ca.key)
	if err != nil {
		return nil, fmt.Errorf("devca: create SVID for %s: %w", id, err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("devca: parse new SVID for %s: %w", id, err)
	}
	return &x509svid.SVID{ID: id, Certificates: []*x509.Certificate{leaf}, PrivateKey: key}, nil
}

// MarshalSVID returns an SVID's certificate chain and PKCS#8 private key,
// both PEM-encoded, in the format the identity package's files mode reads.
func MarshalSVID(svid *x509svid.SVID) (certPEM, keyPEM []byte, err error) {
	if svid == nil || len(svid.Certificates) == 0 {
		return nil, nil, errors.New("devca: SVID has no certificates")
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(svid.PrivateKey)
	if err != nil {
		return nil, nil, fmt.Errorf("devca: marshal SVID key: %w", err)
	}
	var certs bytes.Buffer
	for _, c := range svid.Certificates {
		certs.Write(pemEncode("CERTIFICATE", c.Raw))
	}
	return certs.Bytes(), pemEncode("PRIVATE KEY", keyDER), nil
}

func nowFunc(opts Options) func() time.Time {
	if opts.Now != nil {
		return opts.Now
	}
	return time.Now
}

// randomSerial returns a positive 128-bit serial number (RFC 5280 allows up
// to 20 octets; 128 random bits make collisions irrelevant).
func randomSerial() (*big.Int, error) {
	limit := new(big.Int).Lsh(big.NewInt(1), 128)
	for {
		n, err := rand.Int(rand.Reader, limit)
		if err != nil {
			return nil, fmt.Errorf("devca: serial number: %w", err)
		}
		if n.Sign() > 0 {
			return n, nil
		}
	}
}

func pemEncode(typ string, der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})
}

// parseOnePEM returns the DER of the single PEM block of type want in data.
func parseOnePEM(data []byte, want string) ([]byte, error) {
	block, rest := pem.Decode(data)
	if block == nil {
		return nil, fmt.Errorf("no PEM %s block", want)
	}
	if block.Type != want {
		return nil, fmt.Errorf("PEM block is %q, want %q", block.Type, want)
	}
	if next, _ := pem.Decode(rest); next != nil {
		return nil, fmt.Errorf("more than one PEM block, want one %q", want)
	}
	return block.Bytes, nil
}
