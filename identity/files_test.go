package identity_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cml-project/cml/identity"
	"github.com/cml-project/cml/identity/devca"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

func TestOpenConfigErrors(t *testing.T) {
	tests := []struct {
		name string
		cfg  identity.Config
		want string
	}{
		{"nothing", identity.Config{}, "no identity configured"},
		{"both modes", identity.Config{Socket: "unix:///run/agent.sock", SVIDCert: "a.pem"}, "not both"},
		{"files partly", identity.Config{SVIDCert: "a.pem", Bundle: "b.pem"}, "missing: [SVID key]"},
		{"files key only", identity.Config{SVIDKey: "k.pem"}, "missing: [SVID certificate bundle]"},
		{"bad socket scheme", identity.Config{Socket: "http://127.0.0.1:80"}, `spiffe socket "http://127.0.0.1:80"`},
		{"tcp host name", identity.Config{Socket: "tcp://localhost:80"}, "must be an IP:port"},
		{"negative timeout", identity.Config{Socket: "/run/agent.sock", StartupTimeout: -time.Second}, "negative"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			src, err := identity.Open(context.Background(), tc.cfg)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Open = %v, %v; want an error with %q", src, err, tc.want)
			}
		})
	}
}

// TestOpenFilesErrors: each broken file gives an error naming the file and
// the problem.
func TestOpenFilesErrors(t *testing.T) {
	ca := newCA(t, "example.org")
	dir := t.TempDir()
	good := writeSVIDFiles(t, dir, issue(t, ca, loaderID), ca.Bundle())
	goodCert, _ := os.ReadFile(good.SVIDCert)
	goodKey, _ := os.ReadFile(good.SVIDKey)
	goodBundle, _ := os.ReadFile(good.Bundle)

	now := time.Now()
	expired, _ := ca.IssueValidity(loaderID, now.Add(-2*time.Hour), now.Add(-time.Hour))
	expiredCert, expiredKey, _ := devca.MarshalSVID(expired)
	notYet, _ := ca.IssueValidity(loaderID, now.Add(time.Hour), now.Add(2*time.Hour))
	notYetCert, notYetKey, _ := devca.MarshalSVID(notYet)
	other := issue(t, ca, loaderID)
	_, otherKey, _ := devca.MarshalSVID(other)
	rogue := newCA(t, "example.org")
	rogueBundle, _ := rogue.Bundle().Marshal()
	caCert, _, _ := ca.MarshalPEM()
	plain := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: plainCert(t).Raw})
	ecKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	sec1DER, _ := x509.MarshalECPrivateKey(ecKey)
	sec1 := pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: sec1DER})
	leafAsBundle := goodCert

	type files struct{ cert, key, bundle []byte }
	tests := []struct {
		name  string
		files files
		want  string // after the file path
	}{
		{"cert not PEM", files{[]byte("hello"), goodKey, goodBundle}, "svid cert " + filepath.Join(dir, "c", "svid.pem") + ": no PEM CERTIFICATE block"},
		{"cert is a key", files{goodKey, goodKey, goodBundle}, `PEM block 1 is "PRIVATE KEY", want CERTIFICATE`},
		{"cert DER broken", files{pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: []byte{0x30, 0x03, 1, 2, 3}}), goodKey, goodBundle}, "PEM block 1: x509:"},
		{"not a SPIFFE SVID", files{plain, goodKey, goodBundle}, "not a SPIFFE X.509-SVID: certificate contains no URI SAN"},
		{"CA as SVID", files{caCert, goodKey, goodBundle}, "names a trust domain, not a workload"},
		{"expired", files{expiredCert, expiredKey, goodBundle}, "expired at " + expired.Certificates[0].NotAfter.UTC().Format(time.RFC3339)},
		{"not yet valid", files{notYetCert, notYetKey, goodBundle}, "not valid before"},
		{"key of another SVID", files{goodCert, otherKey, goodBundle}, "does not match the certificate in"},
		{"key SEC1", files{goodCert, sec1, goodBundle}, `key is "EC PRIVATE KEY" (SEC 1/PKCS#1), want PKCS#8`},
		{"key empty", files{goodCert, nil, goodBundle}, "no PEM PRIVATE KEY block"},
		{"key encrypted", files{goodCert, pem.EncodeToMemory(&pem.Block{Type: "ENCRYPTED PRIVATE KEY", Bytes: []byte{1}}), goodBundle}, "key is encrypted"},
		{"key DER broken", files{goodCert, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: []byte{1, 2}}), goodBundle}, "not a valid PKCS#8 private key"},
		{"key twice", files{goodCert, append(append([]byte{}, goodKey...), goodKey...), goodBundle}, "more than one PEM block"},
		{"bundle empty", files{goodCert, goodKey, nil}, "bundle " + filepath.Join(dir, "c", "bundle.pem") + ": bundle empty"},
		{"bundle not PEM", files{goodCert, goodKey, []byte("not pem")}, "bundle empty"},
		{"bundle holds a leaf", files{goodCert, goodKey, leafAsBundle}, "certificate 1 (\"CN=/loader"},
		{"bundle of another CA", files{goodCert, goodKey, rogueBundle}, "does not verify against bundle"},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			d := filepath.Join(dir, "c")
			if i > 0 {
				os.RemoveAll(d)
			}
			if err := os.MkdirAll(d, 0o700); err != nil {
				t.Fatal(err)
			}
			cfg := identity.Config{SVIDCert: filepath.Join(d, "svid.pem"), SVIDKey: filepath.Join(d, "svid-key.pem"), Bundle: filepath.Join(d, "bundle.pem")}
			os.WriteFile(cfg.SVIDCert, tc.files.cert, 0o644)
			os.WriteFile(cfg.SVIDKey, tc.files.key, 0o600)
			os.WriteFile(cfg.Bundle, tc.files.bundle, 0o644)
			_, err := identity.Open(context.Background(), cfg)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Open error = %v\nwant it to contain %q", err, tc.want)
			}
			if !strings.HasPrefix(err.Error(), "identity: ") {
				t.Errorf("error lacks the package prefix: %v", err)
			}
			if bytes.Contains([]byte(err.Error()), goodKey[40:80]) || bytes.Contains([]byte(err.Error()), otherKey[40:80]) {
				t.Fatal("error contains key material")
			}
		})
	}

	missing := good
	missing.SVIDKey = filepath.Join(dir, "nope-key.pem")
	if _, err := identity.Open(context.Background(), missing); err == nil || !strings.Contains(err.Error(), "nope-key.pem: no such file") {
		t.Errorf("missing key file: %v", err)
	}
}

func TestFilesMode(t *testing.T) {
	ca := newCA(t, "example.org")
	cfg := writeSVIDFiles(t, t.TempDir(), issue(t, ca, kbsID), ca.Bundle())
	src, err := identity.Open(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	svid, err := src.GetX509SVID()
	if err != nil || svid.ID != kbsID {
		t.Fatalf("GetX509SVID = %v, %v", svid, err)
	}
	if b, err := src.GetX509BundleForTrustDomain(td); err != nil || !b.Equal(ca.Bundle()) {
		t.Fatalf("bundle = %v, %v", b, err)
	}
	if _, err := src.GetX509BundleForTrustDomain(spiffeid.RequireTrustDomainFromString("evil.test")); err == nil ||
		!strings.Contains(err.Error(), `no X.509 bundle for trust domain "evil.test"`) {
		t.Fatalf("other trust domain: %v", err)
	}
	if err := src.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := src.GetX509SVID(); err == nil || !strings.Contains(err.Error(), "closed") {
		t.Fatalf("after Close: %v", err)
	}
}

// TestFilesReload: a server and a client in files mode keep running while
// their files are replaced; the next handshake uses the new SVIDs, and not
// before the reload interval passed.
func TestFilesReload(t *testing.T) {
	ca := newCA(t, "example.org")
	clock := &fakeClock{t: time.Now()}
	var logs bytes.Buffer
	log := slog.New(slog.NewTextHandler(&logs, nil))

	serverCfg := writeSVIDFiles(t, t.TempDir(), issue(t, ca, kbsID), ca.Bundle())
	serverCfg.Now, serverCfg.Logger = clock.Now, log
	serverSrc, err := identity.Open(context.Background(), serverCfg)
	if err != nil {
		t.Fatal(err)
	}
	defer serverSrc.Close()
	clientCfg := writeSVIDFiles(t, t.TempDir(), issue(t, ca, loaderID), ca.Bundle())
	clientCfg.Now = clock.Now
	clientSrc, err := identity.Open(context.Background(), clientCfg)
	if err != nil {
		t.Fatal(err)
	}
	defer clientSrc.Close()

	addr, rec := startGRPC(t, serverCreds(t, serverSrc, nil))
	creds := clientCreds(t, clientSrc, kbsID)
	serverCert, err := checkHealth(t, addr, creds)
	if err != nil {
		t.Fatal(err)
	}
	firstServer := serverCert.SerialNumber.String()
	firstClient := rec.all()[0].serial

	newServer := issue(t, ca, kbsID)
	newClient := issue(t, ca, loaderID)
	writeSVIDFiles(t, filepath.Dir(serverCfg.SVIDCert), newServer, ca.Bundle())
	writeSVIDFiles(t, filepath.Dir(clientCfg.SVIDCert), newClient, ca.Bundle())

	// Within the reload interval the old SVIDs are still used.
	serverCert, err = checkHealth(t, addr, creds)
	if err != nil {
		t.Fatal(err)
	}
	if serverCert.SerialNumber.String() != firstServer || rec.all()[1].serial != firstClient {
		t.Fatal("files were re-read before the reload interval passed")
	}

	clock.Advance(identity.DefaultReloadInterval)
	serverCert, err = checkHealth(t, addr, creds)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := serverCert.SerialNumber, newServer.Certificates[0].SerialNumber; got.Cmp(want) != 0 {
		t.Errorf("server presented serial %s after rotation, want %s", got, want)
	}
	if got, want := rec.all()[2].serial, newClient.Certificates[0].SerialNumber.String(); got != want {
		t.Errorf("client presented serial %s after rotation, want %s", got, want)
	}
	if !strings.Contains(logs.String(), "reloaded X.509-SVID from files") {
		t.Errorf("no reload log line in:\n%s", logs.String())
	}
}

// TestFilesReloadKeepsGoodMaterial: a half-rotated pair (new certificate,
// old key) is not loaded; the old SVID stays in use until the key arrives.
func TestFilesReloadKeepsGoodMaterial(t *testing.T) {
	ca := newCA(t, "example.org")
	clock := &fakeClock{t: time.Now()}
	var logs bytes.Buffer
	first := issue(t, ca, kbsID)
	cfg := writeSVIDFiles(t, t.TempDir(), first, ca.Bundle())
	cfg.Now, cfg.ReloadInterval, cfg.Logger = clock.Now, time.Second, slog.New(slog.NewTextHandler(&logs, nil))
	src, err := identity.Open(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	second := issue(t, ca, kbsID)
	certPEM, keyPEM, _ := devca.MarshalSVID(second)
	writeAtomic(t, cfg.SVIDCert, certPEM, 0o644)
	clock.Advance(time.Second)
	if svid, err := src.GetX509SVID(); err != nil || svid.Certificates[0].SerialNumber.Cmp(first.Certificates[0].SerialNumber) != 0 {
		t.Fatalf("half-rotated files: got %v, %v; want the first SVID", svid, err)
	}
	if !strings.Contains(logs.String(), "does not match the certificate") {
		t.Errorf("the failed reload was not logged:\n%s", logs.String())
	}
	writeAtomic(t, cfg.SVIDKey, keyPEM, 0o600)
	if svid, _ := src.GetX509SVID(); svid.Certificates[0].SerialNumber.Cmp(first.Certificates[0].SerialNumber) != 0 {
		t.Fatal("reloaded before the interval passed")
	}
	clock.Advance(time.Second)
	if svid, err := src.GetX509SVID(); err != nil || svid.Certificates[0].SerialNumber.Cmp(second.Certificates[0].SerialNumber) != 0 {
		t.Fatalf("after the key arrived: got %v, %v; want the second SVID", svid, err)
	}
	// A file that disappears keeps the current SVID too.
	os.Remove(cfg.Bundle)
	clock.Advance(time.Second)
	if svid, err := src.GetX509SVID(); err != nil || svid.Certificates[0].SerialNumber.Cmp(second.Certificates[0].SerialNumber) != 0 {
		t.Fatalf("bundle file removed: %v, %v", svid, err)
	}
}

// TestFilesExpireWithoutReplacement: once the loaded SVID expired and no new
// one was written, the source refuses to hand it out.
func TestFilesExpireWithoutReplacement(t *testing.T) {
	ca := newCA(t, "example.org")
	clock := &fakeClock{t: time.Now()}
	svid := issue(t, ca, kbsID)
	cfg := writeSVIDFiles(t, t.TempDir(), svid, ca.Bundle())
	cfg.Now = clock.Now
	src, err := identity.Open(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	clock.t = svid.Certificates[0].NotAfter.Add(time.Second)
	if _, err := src.GetX509SVID(); err == nil || !strings.Contains(err.Error(), "expired at") || !strings.Contains(err.Error(), cfg.SVIDCert) {
		t.Fatalf("expired SVID: %v", err)
	}
}

func TestWorkloadSocketForms(t *testing.T) {
	// Each form must reach the dialer: with nothing listening, Open times
	// out rather than rejecting the address.
	dir := t.TempDir()
	for _, s := range []string{filepath.Join(dir, "a.sock"), "unix://" + filepath.Join(dir, "b.sock"), "tcp://127.0.0.1:1"} {
		_, err := identity.Open(context.Background(), identity.Config{Socket: s, StartupTimeout: 200 * time.Millisecond})
		if err == nil || !strings.Contains(err.Error(), "no X.509-SVID from the SPIFFE Workload API") || !strings.Contains(err.Error(), "within 200ms") {
			t.Errorf("Open(%q) = %v", s, err)
		}
	}
}
