package devca

import (
	"bytes"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

func TestWriteDir(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "certs")
	written, err := WriteDir(dir, td, []string{"kbs", "loader", "admin", "ns/demo/loader"}, 24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"ca.pem", "ca-key.pem", "kbs.pem", "kbs-key.pem", "loader.pem", "loader-key.pem",
		"admin.pem", "admin-key.pem", "ns_demo_loader.pem", "ns_demo_loader-key.pem"}
	var got []string
	for _, p := range written {
		got = append(got, filepath.Base(p))
	}
	if !slices.Equal(got, want) {
		t.Fatalf("written = %v, want %v", got, want)
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != len(want) {
		t.Fatalf("directory holds %d entries, want %d", len(entries), len(want))
	}
	if fi, _ := os.Stat(dir); fi.Mode().Perm() != 0o700 {
		t.Errorf("directory mode %v, want 0700", fi.Mode().Perm())
	}
	for _, name := range want {
		fi, err := os.Stat(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		if strings.HasSuffix(name, "-key.pem") && fi.Mode().Perm() != 0o600 {
			t.Errorf("%s mode %v, want 0600", name, fi.Mode().Perm())
		}
		if fi.Mode().Perm()&0o022 != 0 {
			t.Errorf("%s is group/world writable: %v", name, fi.Mode().Perm())
		}
	}

	bundle, err := x509bundle.Load(td, filepath.Join(dir, BundleFile))
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"kbs", "loader", "admin", "ns/demo/loader"} {
		certFile, keyFile, _ := SVIDFiles(name)
		svid, err := x509svid.Load(filepath.Join(dir, certFile), filepath.Join(dir, keyFile))
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if svid.ID.String() != "spiffe://example.org/"+name {
			t.Errorf("%s: ID %s", name, svid.ID)
		}
		if _, _, err := x509svid.Verify(svid.Certificates, bundle); err != nil {
			t.Errorf("%s does not verify against ca.pem: %v", name, err)
		}
		if d := svid.Certificates[0].NotAfter.Sub(svid.Certificates[0].NotBefore); d != 24*time.Hour+time.Minute {
			t.Errorf("%s lifetime %s", name, d)
		}
	}
}

func TestWriteDirRefusesToOverwrite(t *testing.T) {
	dir := t.TempDir()
	if _, err := WriteDir(dir, td, []string{"kbs"}, time.Hour); err != nil {
		t.Fatal(err)
	}
	before := snapshot(t, dir)
	_, err := WriteDir(dir, td, []string{"loader"}, time.Hour)
	if err == nil || !strings.Contains(err.Error(), "ca.pem already exists; refusing to overwrite") {
		t.Fatalf("second WriteDir = %v", err)
	}
	if after := snapshot(t, dir); !equalSnapshots(before, after) {
		t.Fatal("a refused WriteDir changed the directory")
	}

	// One pre-existing SVID file: nothing at all is written.
	dir2 := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir2, "loader-key.pem"), []byte("mine"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err = WriteDir(dir2, td, []string{"kbs", "loader"}, time.Hour)
	if err == nil || !strings.Contains(err.Error(), "loader-key.pem already exists") {
		t.Fatalf("WriteDir over an existing key = %v", err)
	}
	if s := snapshot(t, dir2); len(s) != 1 || string(s["loader-key.pem"]) != "mine" {
		t.Fatalf("directory after refusal: %v", keys(s))
	}
}

func TestWriteDirErrors(t *testing.T) {
	for _, tc := range []struct {
		names []string
		ttl   time.Duration
		want  string
	}{
		{[]string{"kbs", "kbs"}, time.Hour, "given twice"},
		{[]string{"ca"}, time.Hour, "reserved"},
		{[]string{"Bad"}, time.Hour, "not allowed"},
		{[]string{"kbs"}, 0, "must be positive"},
	} {
		dir := t.TempDir()
		_, err := WriteDir(dir, td, tc.names, tc.ttl)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("WriteDir(%v, %s) = %v, want %q", tc.names, tc.ttl, err, tc.want)
		}
		if s := snapshot(t, dir); len(s) != 0 {
			t.Errorf("WriteDir(%v) failed but wrote %v", tc.names, keys(s))
		}
	}
	// A lifetime longer than the default CA lifetime stretches the CA.
	dir := t.TempDir()
	if _, err := WriteDir(dir, td, []string{"kbs"}, 2*DefaultCATTL); err != nil {
		t.Fatalf("WriteDir with a two-year SVID: %v", err)
	}
}

func TestAddSVID(t *testing.T) {
	dir := t.TempDir()
	if _, err := WriteDir(dir, td, []string{"kbs", "loader"}, time.Hour); err != nil {
		t.Fatal(err)
	}
	id, written, err := AddSVID(dir, "intruder", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if id.String() != "spiffe://example.org/intruder" || len(written) != 2 {
		t.Fatalf("AddSVID = %s, %v", id, written)
	}
	bundle, err := x509bundle.Load(td, filepath.Join(dir, BundleFile))
	if err != nil {
		t.Fatal(err)
	}
	svid, err := x509svid.Load(filepath.Join(dir, "intruder.pem"), filepath.Join(dir, "intruder-key.pem"))
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := x509svid.Verify(svid.Certificates, bundle); err != nil {
		t.Fatalf("intruder SVID does not chain to the directory's CA: %v", err)
	}
	before := snapshot(t, dir)
	if _, _, err := AddSVID(dir, "loader", time.Hour); err == nil || !strings.Contains(err.Error(), "loader.pem already exists") {
		t.Fatalf("AddSVID over an existing identity = %v", err)
	}
	if !equalSnapshots(before, snapshot(t, dir)) {
		t.Fatal("refused AddSVID changed the directory")
	}
	if _, _, err := AddSVID(t.TempDir(), "x", time.Hour); err == nil || !strings.Contains(err.Error(), "read CA certificate") {
		t.Fatalf("AddSVID without a CA = %v", err)
	}
}

func TestCAWriteDirWithClock(t *testing.T) {
	ca := newCA(t, Options{})
	dir := t.TempDir()
	if _, err := ca.WriteDir(dir, []string{"kbs"}, time.Hour); err != nil {
		t.Fatal(err)
	}
	svid, err := x509svid.Load(filepath.Join(dir, "kbs.pem"), filepath.Join(dir, "kbs-key.pem"))
	if err != nil {
		t.Fatal(err)
	}
	if !svid.Certificates[0].NotAfter.Equal(fixedNow.Add(time.Hour)) {
		t.Fatalf("NotAfter %s, want the injected clock + 1h", svid.Certificates[0].NotAfter)
	}
	loaded, err := LoadDir(dir, Options{Now: clock})
	if err != nil {
		t.Fatal(err)
	}
	id, _, err := loaded.WriteSVID(dir, "later/one", time.Hour)
	if err != nil || id != spiffeid.RequireFromString("spiffe://example.org/later/one") {
		t.Fatalf("WriteSVID = %s, %v", id, err)
	}
	if _, err := os.Stat(filepath.Join(dir, "later_one.pem")); err != nil {
		t.Fatal(err)
	}
}

func snapshot(t *testing.T, dir string) map[string][]byte {
	t.Helper()
	out := map[string][]byte{}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		out[e.Name()] = b
	}
	return out
}

func equalSnapshots(a, b map[string][]byte) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if !bytes.Equal(v, b[k]) {
			return false
		}
	}
	return true
}

func keys(m map[string][]byte) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

func TestWriteOrExtendDir(t *testing.T) {
	dir := t.TempDir()
	if _, err := WriteOrExtendDir(dir, spiffeid.TrustDomain{}, []string{"kbs"}, time.Hour); err == nil || !strings.Contains(err.Error(), "trust domain is required") {
		t.Fatalf("new directory without a trust domain: %v", err)
	}
	written, err := WriteOrExtendDir(dir, td, []string{"kbs", "loader"}, time.Hour)
	if err != nil || len(written) != 6 {
		t.Fatalf("first run: %v, %v", written, err)
	}
	caBefore, _ := os.ReadFile(filepath.Join(dir, BundleFile))

	// Second run: same CA, only the new SVIDs, trust domain optional.
	written, err = WriteOrExtendDir(dir, spiffeid.TrustDomain{}, []string{"intruder", "ns/x"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, p := range written {
		got = append(got, filepath.Base(p))
	}
	if !slices.Equal(got, []string{"intruder.pem", "intruder-key.pem", "ns_x.pem", "ns_x-key.pem"}) {
		t.Fatalf("second run wrote %v", got)
	}
	if caAfter, _ := os.ReadFile(filepath.Join(dir, BundleFile)); !bytes.Equal(caBefore, caAfter) {
		t.Fatal("ca.pem changed")
	}
	bundle, _ := x509bundle.Load(td, filepath.Join(dir, BundleFile))
	svid, err := x509svid.Load(filepath.Join(dir, "intruder.pem"), filepath.Join(dir, "intruder-key.pem"))
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := x509svid.Verify(svid.Certificates, bundle); err != nil {
		t.Fatalf("added SVID does not chain to ca.pem: %v", err)
	}

	before := snapshot(t, dir)
	for _, tc := range []struct {
		td    spiffeid.TrustDomain
		names []string
		want  string
	}{
		{spiffeid.RequireTrustDomainFromString("other.test"), []string{"x"}, "is for trust domain example.org, not other.test"},
		{td, []string{"new", "kbs"}, "kbs.pem already exists"},
		{td, nil, "no identity names were given"},
	} {
		if _, err := WriteOrExtendDir(dir, tc.td, tc.names, time.Hour); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("WriteOrExtendDir(%s, %v) = %v, want %q", tc.td, tc.names, err, tc.want)
		}
	}
	if !equalSnapshots(before, snapshot(t, dir)) {
		t.Fatal("a refused run changed the directory")
	}
}
