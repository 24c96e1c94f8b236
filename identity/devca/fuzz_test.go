package devca

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

// FuzzLoad feeds arbitrary CA certificate and key PEM to Load: it must never
// panic, and a CA it accepts must issue SVIDs that verify against it.
// Seeds are in testdata/fuzz/FuzzLoad (a valid CA pair and broken variants).
func FuzzLoad(f *testing.F) {
	f.Fuzz(func(t *testing.T, certPEM, keyPEM []byte) {
		ca, err := Load(certPEM, keyPEM, Options{Now: func() time.Time { return fuzzNow }})
		if err != nil {
			if !strings.HasPrefix(err.Error(), "devca: ") {
				t.Fatalf("error without package prefix: %v", err)
			}
			return
		}
		c := ca.Certificate()
		if fuzzNow.Before(c.NotBefore) || fuzzNow.After(c.NotAfter.Add(-time.Hour)) {
			return // the CA cannot cover a one-hour SVID now
		}
		id := spiffeid.RequireFromPath(ca.TrustDomain(), "/fuzz")
		svid, err := ca.Issue(id, time.Hour)
		if err != nil {
			t.Fatalf("accepted CA cannot issue: %v", err)
		}
		if _, _, err := x509svid.Verify(svid.Certificates, ca.Bundle(), x509svid.WithTime(fuzzNow)); err != nil {
			t.Fatalf("SVID of an accepted CA does not verify: %v", err)
		}
	})
}

// fuzzNow lies inside the validity of the seed CA in testdata.
var fuzzNow = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

// FuzzValidateName checks that every accepted name maps to a SPIFFE ID under
// the trust domain and to plain file names inside the directory.
func FuzzValidateName(f *testing.F) {
	f.Fuzz(func(t *testing.T, name string) {
		if ValidateName(name) != nil {
			return
		}
		id, err := IDForName(td, name)
		if err != nil {
			t.Fatalf("valid name %q: IDForName: %v", name, err)
		}
		if id.Path() != "/"+name || !id.MemberOf(td) {
			t.Fatalf("name %q gave ID %s", name, id)
		}
		certFile, keyFile, err := SVIDFiles(name)
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range []string{certFile, keyFile} {
			if filepath.Base(f) != f || f == BundleFile || f == CAKeyFile || strings.HasPrefix(f, ".") {
				t.Fatalf("name %q gives unsafe file name %q", name, f)
			}
		}
		if certFile == keyFile || strings.HasSuffix(certFile, "-key.pem") {
			t.Fatalf("name %q: cert file %q could collide with a key file", name, certFile)
		}
	})
}

// TestFuzzSeedsAccepted keeps the "valid*" seeds of FuzzLoad loadable, so
// the fuzzer reaches the issuing checks.
func TestFuzzSeedsAccepted(t *testing.T) {
	for _, name := range []string{"valid", "valid-name-constrained"} {
		data, err := os.ReadFile("testdata/fuzz/FuzzLoad/" + name)
		if err != nil {
			t.Fatal(err)
		}
		lines := strings.Split(strings.TrimSpace(string(data)), "\n")
		var args [][]byte
		for _, l := range lines[1:] {
			s, err := strconv.Unquote(strings.TrimSuffix(strings.TrimPrefix(l, "[]byte("), ")"))
			if err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			args = append(args, []byte(s))
		}
		ca, err := Load(args[0], args[1], Options{Now: func() time.Time { return fuzzNow }})
		if err != nil {
			t.Fatalf("seed %s: %v", name, err)
		}
		if _, err := ca.Issue(spiffeid.RequireFromPath(ca.TrustDomain(), "/x"), time.Hour); err != nil {
			t.Fatalf("seed %s cannot issue at fuzzNow: %v", name, err)
		}
	}
}
