package identity

import (
	"bytes"
	"crypto/x509"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
)

// fuzzNow lies inside the validity of the SVIDs in the seed corpus
// (testdata/fuzz/FuzzParseMaterial, issued by devca for 2026-03-01).
var fuzzNow = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

// FuzzParseMaterial feeds arbitrary certificate, key and bundle PEM to the
// files-mode parser. It must never panic; an error must carry the package
// prefix and name a file; accepted material must satisfy go-spiffe's own
// X.509-SVID validation and verify against the bundle.
func FuzzParseMaterial(f *testing.F) {
	p := filePaths{cert: "CERTFILE", key: "KEYFILE", bundle: "BUNDLEFILE"}
	f.Fuzz(func(t *testing.T, certPEM, keyPEM, bundlePEM []byte) {
		svid, bundle, err := parseMaterial(p, certPEM, keyPEM, bundlePEM, fuzzNow)
		if err != nil {
			msg := err.Error()
			if !strings.HasPrefix(msg, "identity: ") {
				t.Fatalf("error without package prefix: %q", msg)
			}
			if !strings.Contains(msg, "CERTFILE") && !strings.Contains(msg, "KEYFILE") && !strings.Contains(msg, "BUNDLEFILE") {
				t.Fatalf("error names no file: %q", msg)
			}
			return
		}
		if svid.ID.Path() == "" || bundle.Empty() || bundle.TrustDomain() != svid.ID.TrustDomain() {
			t.Fatalf("accepted SVID %s with bundle for %s (%d authorities)", svid.ID, bundle.TrustDomain(), len(bundle.X509Authorities()))
		}
		if _, _, err := x509svid.Verify(svid.Certificates, bundle, x509svid.WithTime(fuzzNow)); err != nil {
			t.Fatalf("accepted SVID does not verify: %v", err)
		}
		var chain bytes.Buffer
		for _, c := range svid.Certificates {
			chain.Write(c.Raw)
		}
		keyDER, err := x509.MarshalPKCS8PrivateKey(svid.PrivateKey)
		if err != nil {
			t.Fatalf("accepted key cannot be re-encoded: %v", err)
		}
		if _, err := x509svid.ParseRaw(chain.Bytes(), keyDER); err != nil {
			t.Fatalf("go-spiffe rejects what we accepted: %v", err)
		}
	})
}

// FuzzWorkloadAddress: whatever --spiffe-socket holds, workloadAddress
// either refuses it or returns an address go-spiffe accepts.
func FuzzWorkloadAddress(f *testing.F) {
	f.Fuzz(func(t *testing.T, s string) {
		addr, err := workloadAddress(s)
		if err != nil {
			if !strings.HasPrefix(err.Error(), "identity: spiffe socket ") {
				t.Fatalf("error %q does not name the socket setting", err)
			}
			return
		}
		if err := workloadapi.ValidateAddress(addr); err != nil {
			t.Fatalf("workloadAddress(%q) = %q, which go-spiffe rejects: %v", s, addr, err)
		}
		if !strings.HasPrefix(addr, "unix:") && !strings.HasPrefix(addr, "tcp:") {
			t.Fatalf("workloadAddress(%q) = %q: neither unix nor tcp", s, addr)
		}
	})
}

// TestFuzzSeedsAccepted keeps the "valid*" seeds of FuzzParseMaterial
// valid at fuzzNow, so the fuzzer starts from inputs that reach the
// invariant checks rather than only the error paths.
func TestFuzzSeedsAccepted(t *testing.T) {
	for _, name := range []string{"valid", "valid-name-constrained", "valid-chain-with-root"} {
		args := readSeed(t, "testdata/fuzz/FuzzParseMaterial/"+name)
		if _, _, err := parseMaterial(filePaths{}, args[0], args[1], args[2], fuzzNow); err != nil {
			t.Errorf("seed %s: %v", name, err)
		}
	}
}

// readSeed parses a corpus file of []byte values ("go test fuzz v1").
func readSeed(t *testing.T, path string) [][]byte {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(string(data)), "\n")
	if lines[0] != "go test fuzz v1" {
		t.Fatalf("%s: not a fuzz corpus file", path)
	}
	var out [][]byte
	for _, l := range lines[1:] {
		q, ok := strings.CutPrefix(l, "[]byte(")
		if !ok || !strings.HasSuffix(q, ")") {
			t.Fatalf("%s: unexpected line %q", path, l)
		}
		s, err := strconv.Unquote(strings.TrimSuffix(q, ")"))
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		out = append(out, []byte(s))
	}
	return out
}
