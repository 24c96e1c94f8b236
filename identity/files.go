package identity

import (
	"crypto"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

// filePaths names the three files of the files mode; errors quote them.
type filePaths struct {
	cert, key, bundle string
}

// fileSource is the files mode: an SVID and bundle read from PEM files and
// reloaded when a stat shows one of them changed.
type fileSource struct {
	paths    filePaths
	now      func() time.Time
	interval time.Duration
	log      *slog.Logger

	mu        sync.Mutex
	closed    bool
	svid      *x509svid.SVID
	bundle    *x509bundle.Bundle
	stamps    [3]os.FileInfo // of the files svid and bundle were read from
	nextCheck time.Time
}

func openFiles(cfg Config) (*fileSource, error) {
	s := &fileSource{
		paths:    filePaths{cert: cfg.SVIDCert, key: cfg.SVIDKey, bundle: cfg.Bundle},
		now:      cfg.Now,
		interval: cfg.ReloadInterval,
		log:      logger(cfg),
	}
	if s.now == nil {
		s.now = time.Now
	}
	if s.interval == 0 {
		s.interval = DefaultReloadInterval
	}
	if s.interval < 0 {
		return nil, fmt.Errorf("identity: reload interval %s is negative", s.interval)
	}
	now := s.now()
	stamps, err := s.stat()
	if err != nil {
		return nil, err
	}
	svid, bundle, err := loadFiles(s.paths, now)
	if err != nil {
		return nil, err
	}
	s.svid, s.bundle, s.stamps = svid, bundle, stamps
	s.nextCheck = now.Add(s.interval)
	s.log.Info("identity: loaded X.509-SVID from files", svidAttrs(s.paths, svid)...)
	return s, nil
}

func (s *fileSource) GetX509SVID() (*x509svid.SVID, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, errors.New("identity: source is closed")
	}
	now := s.now()
	s.refresh(now)
	// Fail closed locally with a clear message rather than let the peer
	// reject an expired certificate with a bare TLS alert.
	if leaf := s.svid.Certificates[0]; now.After(leaf.NotAfter) {
		return nil, fmt.Errorf("identity: svid cert %s expired at %s and no valid replacement was loaded", s.paths.cert, leaf.NotAfter.UTC().Format(time.RFC3339))
	}
	return s.svid, nil
}

func (s *fileSource) GetX509BundleForTrustDomain(td spiffeid.TrustDomain) (*x509bundle.Bundle, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, errors.New("identity: source is closed")
	}
	s.refresh(s.now())
	if td != s.bundle.TrustDomain() {
		return nil, fmt.Errorf("identity: no X.509 bundle for trust domain %q (bundle %s is for %q)", td.Name(), s.paths.bundle, s.bundle.TrustDomain().Name())
	}
	return s.bundle, nil
}

func (s *fileSource) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	return nil
}

// refresh reloads the files if the reload interval passed and a stat shows
// that one changed. A failed reload keeps the current material and leaves
// the recorded stamps alone, so it is retried after the next interval:
// rotation tools may briefly leave a new certificate beside the old key.
// The caller holds s.mu.
func (s *fileSource) refresh(now time.Time) {
	if now.Before(s.nextCheck) {
		return
	}
	s.nextCheck = now.Add(s.interval)
	stamps, err := s.stat()
	if err != nil {
		s.log.Warn("identity: cannot check SVID files; keeping the current SVID", "error", err)
		return
	}
	if sameStamps(stamps, s.stamps) {
		return
	}
	svid, bundle, err := loadFiles(s.paths, now)
	if err != nil {
		s.log.Error("identity: reloading SVID files failed; keeping the current SVID", "error", err)
		return
	}
	s.svid, s.bundle, s.stamps = svid, bundle, stamps
	s.log.Info("identity: reloaded X.509-SVID from files", svidAttrs(s.paths, svid)...)
}

func (s *fileSource) stat() ([3]os.FileInfo, error) {
	var out [3]os.FileInfo
	for i, p := range []string{s.paths.cert, s.paths.key, s.paths.bundle} {
		fi, err := os.Stat(p)
		if err != nil {
			return out, fmt.Errorf("identity: %w", err)
		}
		out[i] = fi
	}
	return out, nil
}

// sameStamps reports whether no file changed: same file (device and inode,
// so a rename or a Kubernetes symlink swap counts as a change), same size,
// same modification time.
func sameStamps(a, b [3]os.FileInfo) bool {
	for i := range a {
		if a[i] == nil || b[i] == nil || !os.SameFile(a[i], b[i]) || a[i].Size() != b[i].Size() || !a[i].ModTime().Equal(b[i].ModTime()) {
			return false
		}
	}
	return true
}

func svidAttrs(p filePaths, svid *x509svid.SVID) []any {
	leaf := svid.Certificates[0]
	return []any{"spiffe_id", svid.ID.String(), "serial", leaf.SerialNumber.Text(16),
		"not_after", leaf.NotAfter.UTC().Format(time.RFC3339), "cert", p.cert}
}

// maxFileSize bounds what the files mode reads: a certificate chain, key
// or bundle is a few kilobytes.
const maxFileSize = 1 << 20

func loadFiles(p filePaths, now time.Time) (*x509svid.SVID, *x509bundle.Bundle, error) {
	certPEM, err := readSmall(p.cert, "svid cert")
	if err != nil {
		return nil, nil, err
	}
	keyPEM, err := readSmall(p.key, "svid key")
	if err != nil {
		return nil, nil, err
	}
	bundlePEM, err := readSmall(p.bundle, "bundle")
	if err != nil {
		return nil, nil, err
	}
	return parseMaterial(p, certPEM, keyPEM, bundlePEM, now)
}

func readSmall(path, what string) ([]byte, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("identity: %s: %w", what, err)
	}
	if fi.Size() > maxFileSize {
		return nil, fmt.Errorf("identity: %s %s: %d bytes, larger than the %d allowed", what, path, fi.Size(), maxFileSize)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("identity: %s: %w", what, err)
	}
	return b, nil
}

// parseMaterial parses and checks an X.509-SVID chain, its private key and
// the trust bundle, all PEM. Errors name the file (from p) and the reason.
// The bundle's trust domain is the SVID's. The SVID must be valid at now and
// chain to the bundle.
func parseMaterial(p filePaths, certPEM, keyPEM, bundlePEM []byte, now time.Time) (*x509svid.SVID, *x509bundle.Bundle, error) {
	certs, err := parseCertificates(certPEM)
	if err != nil {
		return nil, nil, fmt.Errorf("identity: svid cert %s: %w", p.cert, err)
	}
	leaf := certs[0]
	id, err := x509svid.IDFromCert(leaf)
	if err != nil {
		return nil, nil, fmt.Errorf("identity: svid cert %s: not a SPIFFE X.509-SVID: %w", p.cert, err)
	}
	switch {
	case id.Path() == "":
		return nil, nil, fmt.Errorf("identity: svid cert %s: not a SPIFFE X.509-SVID: %s names a trust domain, not a workload", p.cert, id)
	case leaf.IsCA:
		return nil, nil, fmt.Errorf("identity: svid cert %s: not a SPIFFE X.509-SVID: the first certificate is a CA", p.cert)
	case leaf.KeyUsage&x509.KeyUsageDigitalSignature == 0:
		return nil, nil, fmt.Errorf("identity: svid cert %s: not a SPIFFE X.509-SVID: key usage lacks digitalSignature", p.cert)
	case leaf.KeyUsage&(x509.KeyUsageCertSign|x509.KeyUsageCRLSign) != 0:
		return nil, nil, fmt.Errorf("identity: svid cert %s: not a SPIFFE X.509-SVID: key usage has keyCertSign or cRLSign", p.cert)
	case now.Before(leaf.NotBefore):
		return nil, nil, fmt.Errorf("identity: svid cert %s: not valid before %s", p.cert, leaf.NotBefore.UTC().Format(time.RFC3339))
	case now.After(leaf.NotAfter):
		return nil, nil, fmt.Errorf("identity: svid cert %s: expired at %s", p.cert, leaf.NotAfter.UTC().Format(time.RFC3339))
	}
	for i, c := range certs[1:] {
		if !c.IsCA || c.KeyUsage&x509.KeyUsageCertSign == 0 {
			return nil, nil, fmt.Errorf("identity: svid cert %s: certificate %d after the leaf is not a signing CA", p.cert, i+2)
		}
	}

	key, err := parsePrivateKey(keyPEM)
	if err != nil {
		return nil, nil, fmt.Errorf("identity: svid key %s: %w", p.key, err)
	}
	pub, ok := key.Public().(interface{ Equal(crypto.PublicKey) bool })
	if !ok || !pub.Equal(leaf.PublicKey) {
		return nil, nil, fmt.Errorf("identity: svid key %s does not match the certificate in %s", p.key, p.cert)
	}

	roots, err := parseCertificates(bundlePEM)
	if err != nil {
		if errors.Is(err, errNoCertificates) {
			return nil, nil, fmt.Errorf("identity: bundle %s: bundle empty: no PEM CERTIFICATE block", p.bundle)
		}
		return nil, nil, fmt.Errorf("identity: bundle %s: %w", p.bundle, err)
	}
	for i, c := range roots {
		if !c.IsCA {
			return nil, nil, fmt.Errorf("identity: bundle %s: certificate %d (%q) is not a CA", p.bundle, i+1, c.Subject.String())
		}
	}
	bundle := x509bundle.FromX509Authorities(id.TrustDomain(), roots)
	if _, _, err := x509svid.Verify(certs, bundle, x509svid.WithTime(now)); err != nil {
		return nil, nil, fmt.Errorf("identity: svid cert %s does not verify against bundle %s: %w", p.cert, p.bundle, err)
	}
	return &x509svid.SVID{ID: id, Certificates: certs, PrivateKey: key}, bundle, nil
}

var errNoCertificates = errors.New("no PEM CERTIFICATE block")

// parseCertificates parses every PEM block of data, which must all be
// CERTIFICATE blocks. Text between blocks (openssl's "Bag Attributes") is
// ignored.
func parseCertificates(data []byte) ([]*x509.Certificate, error) {
	var certs []*x509.Certificate
	for n := 1; ; n++ {
		var block *pem.Block
		block, data = pem.Decode(data)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			return nil, fmt.Errorf("PEM block %d is %q, want CERTIFICATE", n, block.Type)
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("PEM block %d: %w", n, err)
		}
		certs = append(certs, c)
	}
	if len(certs) == 0 {
		return nil, errNoCertificates
	}
	return certs, nil
}

// parsePrivateKey parses the single PKCS#8 "PRIVATE KEY" PEM block of data.
// Error messages never include key bytes.
func parsePrivateKey(data []byte) (crypto.Signer, error) {
	block, rest := pem.Decode(data)
	if block == nil {
		return nil, errors.New("no PEM PRIVATE KEY block")
	}
	switch block.Type {
	case "PRIVATE KEY":
	case "EC PRIVATE KEY", "RSA PRIVATE KEY":
		return nil, fmt.Errorf("key is %q (SEC 1/PKCS#1), want PKCS#8 \"PRIVATE KEY\" (convert with: openssl pkcs8 -topk8 -nocrypt)", block.Type)
	case "ENCRYPTED PRIVATE KEY":
		return nil, errors.New("key is encrypted; an unencrypted PKCS#8 key is required")
	default:
		return nil, fmt.Errorf("PEM block is %q, want PRIVATE KEY", block.Type)
	}
	if next, _ := pem.Decode(rest); next != nil {
		return nil, errors.New("more than one PEM block, want exactly one PRIVATE KEY")
	}
	k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("not a valid PKCS#8 private key: %v", err)
	}
	signer, ok := k.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("key type %T cannot sign", k)
	}
	return signer, nil
}
