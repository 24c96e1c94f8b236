package main

import (
	"crypto/x509"
	"encoding/pem"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// svidID reads the one URI SAN of a PEM certificate file.
func svidID(t *testing.T, path string) (string, time.Duration) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(data)
	if block == nil {
		t.Fatalf("%s: no PEM", path)
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	if len(cert.URIs) != 1 {
		t.Fatalf("%s: %d URI SANs", path, len(cert.URIs))
	}
	return cert.URIs[0].String(), cert.NotAfter.Sub(cert.NotBefore)
}

func TestDevCerts(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "certs")
	r := kbsctl(t, "dev", "certs", dir, "--trust-domain", "example.org", "--id", "kbs", "--id", "loader", "--id", "ns/demo/admin", "--ttl", "2h")
	if r.code != exitOK {
		t.Fatalf("dev certs: %v", r)
	}
	if !strings.Contains(r.stderr, "DEVELOPMENT ONLY") {
		t.Errorf("no development-only note on stderr: %q", r.stderr)
	}
	for _, f := range []string{"ca.pem", "ca-key.pem", "kbs.pem", "kbs-key.pem", "loader.pem", "loader-key.pem", "ns_demo_admin.pem", "ns_demo_admin-key.pem"} {
		p := filepath.Join(dir, f)
		fi, err := os.Stat(p)
		if err != nil {
			t.Errorf("%s not written: %v", f, err)
			continue
		}
		if !strings.Contains(r.stdout, "wrote "+p+"\n") {
			t.Errorf("output does not list %s:\n%s", p, r.stdout)
		}
		if strings.HasSuffix(f, "-key.pem") && fi.Mode().Perm() != 0o600 {
			t.Errorf("%s has mode %04o, want 0600", f, fi.Mode().Perm())
		}
	}
	if id, ttl := svidID(t, filepath.Join(dir, "ns_demo_admin.pem")); id != "spiffe://example.org/ns/demo/admin" || ttl < 2*time.Hour || ttl > 2*time.Hour+2*time.Minute {
		t.Errorf("admin SVID: %s valid %s", id, ttl)
	}
	if !strings.Contains(r.stdout, "spiffe://example.org/loader: --svid-cert "+filepath.Join(dir, "loader.pem")) {
		t.Errorf("output lacks the loader's flags:\n%s", r.stdout)
	}

	// Extending: the CA in dir issues the new name; no trust domain needed.
	r = kbsctl(t, "dev", "certs", dir, "--id", "intruder")
	if r.code != exitOK || !strings.Contains(r.stdout, "wrote "+filepath.Join(dir, "intruder.pem")) {
		t.Fatalf("dev certs --id intruder: %v", r)
	}
	if id, _ := svidID(t, filepath.Join(dir, "intruder.pem")); id != "spiffe://example.org/intruder" {
		t.Errorf("intruder SVID: %s", id)
	}
}

func TestDevCertsErrors(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "certs")
	if r := kbsctl(t, "dev", "certs", dir, "--trust-domain", "example.org", "--id", "kbs"); r.code != exitOK {
		t.Fatalf("dev certs: %v", r)
	}
	before, _ := os.ReadFile(filepath.Join(dir, "kbs.pem"))
	empty := filepath.Join(t.TempDir(), "new")
	for _, tc := range []struct {
		args []string
		code int
		msg  string
	}{
		{[]string{"dev", "certs", empty, "--trust-domain", "example.org"}, exitUsage, "at least one --id NAME is required"},
		{[]string{"dev", "certs", empty, "--id", "kbs"}, exitUsage, "--trust-domain is required: " + empty + " holds no CA yet"},
		{[]string{"dev", "certs", empty, "--trust-domain", "Not A Domain", "--id", "kbs"}, exitUsage, `--trust-domain "Not A Domain"`},
		{[]string{"dev", "certs", empty, "--trust-domain", "example.org", "--id", "Bad_Name"}, exitUsage, `--id "Bad_Name"`},
		{[]string{"dev", "certs", empty, "--trust-domain", "example.org", "--id", "ca"}, exitUsage, `--id "ca"`},
		{[]string{"dev", "certs", empty, "--trust-domain", "example.org", "--id", "x", "--ttl", "0s"}, exitUsage, "--ttl 0s"},
		// Existing files are never overwritten, and nothing else is written.
		{[]string{"dev", "certs", dir, "--id", "new", "--id", "kbs"}, exitFailure, "nothing was written"},
		{[]string{"dev", "certs", dir, "--trust-domain", "other.org", "--id", "y"}, exitFailure, "not other.org"},
	} {
		r := kbsctl(t, tc.args...)
		if r.code != tc.code || !strings.Contains(r.stderr, tc.msg) {
			t.Errorf("kbsctl %q: want exit %d and %q: %v", tc.args, tc.code, tc.msg, r)
		}
	}
	if after, _ := os.ReadFile(filepath.Join(dir, "kbs.pem")); string(after) != string(before) {
		t.Error("kbs.pem was overwritten")
	}
	for _, f := range []string{"new.pem", "y.pem"} {
		if _, err := os.Stat(filepath.Join(dir, f)); err == nil {
			t.Errorf("a failed run wrote %s", f)
		}
	}
	if _, err := os.Stat(empty); err == nil {
		t.Errorf("a usage error created %s", empty)
	}
}
