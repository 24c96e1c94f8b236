package devca

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"errors"
	"math/big"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

var (
	td       = spiffeid.RequireTrustDomainFromString("example.org")
	fixedNow = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
)

func clock() time.Time { return fixedNow }

func newCA(t *testing.T, opts Options) *CA {
	t.Helper()
	if opts.Now == nil {
		opts.Now = clock
	}
	ca, err := New(td, opts)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return ca
}

func TestCACertificate(t *testing.T) {
	ca := newCA(t, Options{})
	c := ca.Certificate()
	if !c.IsCA || !c.BasicConstraintsValid || !c.MaxPathLenZero || c.MaxPathLen != 0 {
		t.Errorf("CA basic constraints: IsCA=%v valid=%v maxPathLen=%d zero=%v", c.IsCA, c.BasicConstraintsValid, c.MaxPathLen, c.MaxPathLenZero)
	}
	if c.KeyUsage != x509.KeyUsageCertSign|x509.KeyUsageCRLSign {
		t.Errorf("CA key usage = %v", c.KeyUsage)
	}
	if len(c.URIs) != 1 || c.URIs[0].String() != "spiffe://example.org" {
		t.Errorf("CA URI SANs = %v, want [spiffe://example.org]", c.URIs)
	}
	pub, ok := c.PublicKey.(*ecdsa.PublicKey)
	if !ok || pub.Curve != elliptic.P256() {
		t.Errorf("CA key is %T, want ECDSA P-256", c.PublicKey)
	}
	if !c.NotBefore.Equal(fixedNow.Add(-time.Minute)) || !c.NotAfter.Equal(fixedNow.Add(DefaultCATTL)) {
		t.Errorf("CA validity %s..%s", c.NotBefore, c.NotAfter)
	}
	if !strings.Contains(c.Subject.String(), "NOT FOR PRODUCTION") {
		t.Errorf("CA subject %q does not say it is for development", c.Subject)
	}
	if len(c.PermittedURIDomains) != 0 {
		t.Errorf("name constraints present without the option: %v", c.PermittedURIDomains)
	}
	if got := ca.Bundle().X509Authorities(); len(got) != 1 || !got[0].Equal(c) {
		t.Errorf("Bundle() = %v", got)
	}
}

func TestIssueSVID(t *testing.T) {
	ca := newCA(t, Options{})
	id := spiffeid.RequireFromPath(td, "/kbs")
	svid, err := ca.Issue(id, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	leaf := svid.Certificates[0]
	if len(svid.Certificates) != 1 {
		t.Errorf("chain has %d certificates, want the leaf only", len(svid.Certificates))
	}
	if svid.ID != id || len(leaf.URIs) != 1 || leaf.URIs[0].String() != id.String() {
		t.Errorf("ID %s, URI SANs %v", svid.ID, leaf.URIs)
	}
	if leaf.IsCA || !leaf.BasicConstraintsValid {
		t.Errorf("leaf IsCA=%v basicConstraintsValid=%v", leaf.IsCA, leaf.BasicConstraintsValid)
	}
	if leaf.KeyUsage != x509.KeyUsageDigitalSignature {
		t.Errorf("leaf key usage = %v, want digitalSignature only", leaf.KeyUsage)
	}
	if len(leaf.ExtKeyUsage) != 2 || leaf.ExtKeyUsage[0] != x509.ExtKeyUsageServerAuth || leaf.ExtKeyUsage[1] != x509.ExtKeyUsageClientAuth {
		t.Errorf("leaf EKU = %v", leaf.ExtKeyUsage)
	}
	if len(leaf.DNSNames)+len(leaf.IPAddresses)+len(leaf.EmailAddresses) != 0 {
		t.Errorf("leaf has non-URI SANs")
	}
	if !leaf.NotBefore.Equal(fixedNow.Add(-time.Minute)) || !leaf.NotAfter.Equal(fixedNow.Add(time.Hour)) {
		t.Errorf("leaf validity %s..%s", leaf.NotBefore, leaf.NotAfter)
	}
	gotID, _, err := x509svid.Verify(svid.Certificates, ca.Bundle(), x509svid.WithTime(fixedNow))
	if err != nil || gotID != id {
		t.Fatalf("x509svid.Verify = %s, %v", gotID, err)
	}
	// The PEM form is what go-spiffe (and the identity files mode) reads.
	certPEM, keyPEM, err := MarshalSVID(svid)
	if err != nil {
		t.Fatal(err)
	}
	parsed, err := x509svid.Parse(certPEM, keyPEM)
	if err != nil {
		t.Fatalf("x509svid.Parse: %v", err)
	}
	if parsed.ID != id || !parsed.Certificates[0].Equal(leaf) {
		t.Errorf("round trip changed the SVID")
	}
	other, err := ca.Issue(id, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if other.Certificates[0].SerialNumber.Cmp(leaf.SerialNumber) == 0 {
		t.Error("two SVIDs share a serial number")
	}
}

func TestIssueErrors(t *testing.T) {
	ca := newCA(t, Options{CATTL: 48 * time.Hour})
	kbs := spiffeid.RequireFromPath(td, "/kbs")
	tests := []struct {
		name      string
		id        spiffeid.ID
		nbf, naft time.Time
		want      string
	}{
		{"zero id", spiffeid.ID{}, fixedNow, fixedNow.Add(time.Hour), "SPIFFE ID is required"},
		{"other trust domain", spiffeid.RequireFromString("spiffe://evil.test/kbs"), fixedNow, fixedNow.Add(time.Hour), "not in trust domain"},
		{"trust domain id", td.ID(), fixedNow, fixedNow.Add(time.Hour), "has no path"},
		{"empty period", kbs, fixedNow, fixedNow, "ends"},
		{"after CA", kbs, fixedNow, fixedNow.Add(49 * time.Hour), "outside the CA's"},
		{"before CA", kbs, fixedNow.Add(-time.Hour), fixedNow, "outside the CA's"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ca.IssueValidity(tc.id, tc.nbf, tc.naft)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error = %v, want it to contain %q", err, tc.want)
			}
		})
	}
	if _, err := ca.Issue(kbs, 0); err == nil || !strings.Contains(err.Error(), "must be positive") {
		t.Errorf("Issue(ttl 0) = %v", err)
	}
	if _, err := New(spiffeid.TrustDomain{}, Options{}); err == nil {
		t.Error("New accepted a zero trust domain")
	}
	if _, err := New(td, Options{CATTL: -time.Hour}); err == nil {
		t.Error("New accepted a negative CA lifetime")
	}
}

func TestIssueValidityExpired(t *testing.T) {
	ca := newCA(t, Options{})
	svid, err := ca.IssueValidity(spiffeid.RequireFromPath(td, "/loader"), fixedNow, fixedNow.Add(time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	_, _, err = x509svid.Verify(svid.Certificates, ca.Bundle(), x509svid.WithTime(fixedNow.Add(2*time.Minute)))
	var invalid x509.CertificateInvalidError
	if !errors.As(err, &invalid) || invalid.Reason != x509.Expired {
		t.Fatalf("verifying after NotAfter: %v, want an expired error", err)
	}
}

// TestNameConstraints proves the option has teeth: a certificate the CA key
// signs for another trust domain verifies without the constraint and fails
// with it.
func TestNameConstraints(t *testing.T) {
	for _, constrained := range []bool{false, true} {
		ca := newCA(t, Options{NameConstraints: constrained})
		if constrained {
			c := ca.Certificate()
			if len(c.PermittedURIDomains) != 1 || c.PermittedURIDomains[0] != "example.org" || !c.PermittedDNSDomainsCritical {
				t.Fatalf("constraints = %v critical=%v", c.PermittedURIDomains, c.PermittedDNSDomainsCritical)
			}
		}
		rogue := signRogueLeaf(t, ca, "spiffe://evil.test/kbs")
		_, err := rogue.Verify(x509.VerifyOptions{Roots: certPool(ca.Certificate()), CurrentTime: fixedNow})
		if constrained && err == nil {
			t.Error("name-constrained CA: leaf for another trust domain verified")
		}
		if !constrained && err != nil {
			t.Errorf("unconstrained CA: %v", err)
		}
		good, err := ca.Issue(spiffeid.RequireFromPath(td, "/kbs"), time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := good.Certificates[0].Verify(x509.VerifyOptions{Roots: certPool(ca.Certificate()), CurrentTime: fixedNow}); err != nil {
			t.Errorf("constrained=%v: SVID of the trust domain: %v", constrained, err)
		}
	}
}

func signRogueLeaf(t *testing.T, ca *CA, uri string) *x509.Certificate {
	t.Helper()
	u, _ := url.Parse(uri)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(7), URIs: []*url.URL{u},
		NotBefore: fixedNow.Add(-time.Minute), NotAfter: fixedNow.Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, key.Public(), ca.key)
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func certPool(certs ...*x509.Certificate) *x509.CertPool {
	p := x509.NewCertPool()
	for _, c := range certs {
		p.AddCert(c)
	}
	return p
}

func TestLoadRoundTrip(t *testing.T) {
	ca := newCA(t, Options{})
	certPEM, keyPEM, err := ca.MarshalPEM()
	if err != nil {
		t.Fatal(err)
	}
	loaded, err := Load(certPEM, keyPEM, Options{Now: clock})
	if err != nil {
		t.Fatal(err)
	}
	if loaded.TrustDomain() != td || !loaded.Certificate().Equal(ca.Certificate()) {
		t.Fatal("loaded CA differs")
	}
	svid, err := loaded.Issue(spiffeid.RequireFromPath(td, "/intruder"), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := x509svid.Verify(svid.Certificates, ca.Bundle(), x509svid.WithTime(fixedNow)); err != nil {
		t.Fatalf("SVID of the loaded CA does not verify against the original: %v", err)
	}
}

func TestLoadErrors(t *testing.T) {
	ca := newCA(t, Options{})
	certPEM, keyPEM, _ := ca.MarshalPEM()
	other := newCA(t, Options{})
	_, otherKey, _ := other.MarshalPEM()
	leaf, err := ca.Issue(spiffeid.RequireFromPath(td, "/kbs"), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	leafPEM, leafKey, _ := MarshalSVID(leaf)
	tests := []struct {
		name       string
		cert, key  []byte
		wantSubstr string
	}{
		{"empty cert", nil, keyPEM, "no PEM CERTIFICATE block"},
		{"key as cert", keyPEM, keyPEM, `PEM block is "PRIVATE KEY", want "CERTIFICATE"`},
		{"two certs", append(append([]byte{}, certPEM...), certPEM...), keyPEM, "more than one PEM block"},
		{"leaf is not a CA", leafPEM, leafKey, "not a CA"},
		{"garbage DER", pemEncode("CERTIFICATE", []byte("junk")), keyPEM, "CA certificate"},
		{"wrong key", certPEM, otherKey, "does not match"},
		{"no key", certPEM, nil, "no PEM PRIVATE KEY block"},
		{"bad key DER", certPEM, pemEncode("PRIVATE KEY", []byte{1, 2, 3}), "CA key"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Load(tc.cert, tc.key, Options{})
			if err == nil || !strings.Contains(err.Error(), tc.wantSubstr) {
				t.Fatalf("Load error = %v, want it to contain %q", err, tc.wantSubstr)
			}
			if bytes.Contains([]byte(err.Error()), keyPEM[30:60]) {
				t.Fatal("error contains key material")
			}
		})
	}
}

func TestValidateName(t *testing.T) {
	good := []string{"kbs", "loader", "admin", "a", "ns/demo/sa/loader", "x-1", "0"}
	for _, n := range good {
		if err := ValidateName(n); err != nil {
			t.Errorf("ValidateName(%q) = %v", n, err)
		}
	}
	bad := map[string]string{
		"":                               "empty",
		"Kbs":                            "not allowed",
		"a_b":                            "not allowed",
		"a.b":                            "not allowed",
		"../x":                           "not allowed",
		"/kbs":                           "empty path segment",
		"kbs/":                           "empty path segment",
		"a//b":                           "empty path segment",
		"ca":                             "reserved",
		"kbs-key":                        `must not end in "-key"`,
		strings.Repeat("a", 201):         "at most 200",
		"caf\u00e9":                      "not allowed",
		"with space":                     "not allowed",
		"tab\t":                          "not allowed",
		"ns/" + strings.Repeat("b", 198): "at most 200",
	}
	for n, want := range bad {
		err := ValidateName(n)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("ValidateName(%q) = %v, want it to contain %q", n, err, want)
		}
	}
	cert, key, err := SVIDFiles("ns/demo/loader")
	if err != nil || cert != "ns_demo_loader.pem" || key != "ns_demo_loader-key.pem" {
		t.Errorf("SVIDFiles = %q, %q, %v", cert, key, err)
	}
	id, err := IDForName(td, "ns/demo/loader")
	if err != nil || id.String() != "spiffe://example.org/ns/demo/loader" {
		t.Errorf("IDForName = %s, %v", id, err)
	}
}
