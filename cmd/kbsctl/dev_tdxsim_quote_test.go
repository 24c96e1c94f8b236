package main

import (
	"encoding/hex"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cml-project/cml/tdx/tdxsim"
)

func TestDevTdxsimQuote(t *testing.T) {
	sim := newSim(t)
	v := simVerifier(t, sim)
	def := tdxsim.DefaultTDParams()

	// The default TD, with REPORTDATA padded with zeros.
	out := filepath.Join(t.TempDir(), "td.quote")
	r := kbsctl(t, "dev", "tdxsim", "quote", "--dir", sim, "--out", out, "--report-data", "0xc0ffee")
	if r.code != exitOK || !strings.Contains(r.stdout, "simulated quote to "+out) || !strings.Contains(r.stderr, "DEVELOPMENT ONLY") {
		t.Fatalf("tdxsim quote: %v", r)
	}
	quote, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	claims, err := v.Verify(t.Context(), quote)
	if err != nil {
		t.Fatalf("the quote does not verify: %v", err)
	}
	if claims.MRTD != def.MRTD || claims.Debug {
		t.Errorf("default TD: mrtd %x debug %t", claims.MRTD, claims.Debug)
	}
	if want := append([]byte{0xc0, 0xff, 0xee}, make([]byte, 61)...); string(claims.ReportData[:]) != string(want) {
		t.Errorf("report data %x", claims.ReportData)
	}

	// Another MRTD and DEBUG: what a policy must deny.
	other := strings.Repeat("ab", 48)
	out2 := filepath.Join(t.TempDir(), "other.quote")
	if r := kbsctl(t, "dev", "tdxsim", "quote", "--dir", sim, "--out", out2, "--mrtd", other, "--debug"); r.code != exitOK || !strings.Contains(r.stdout, "mrtd "+other+", debug true") {
		t.Fatalf("tdxsim quote --mrtd --debug: %v", r)
	}
	quote, _ = os.ReadFile(out2)
	claims, err = v.Verify(t.Context(), quote)
	if err != nil {
		t.Fatalf("the quote does not verify: %v", err)
	}
	if hex.EncodeToString(claims.MRTD[:]) != other || !claims.Debug || claims.RTMR[0] != def.RTMR[0] {
		t.Errorf("other TD: mrtd %x debug %t rtmr0 %x", claims.MRTD, claims.Debug, claims.RTMR[0])
	}
}

func TestDevTdxsimQuoteDebugFalse(t *testing.T) {
	sim := newSim(t, "--debug")
	out := filepath.Join(t.TempDir(), "q")
	if r := kbsctl(t, "dev", "tdxsim", "quote", "--dir", sim, "--out", out, "--debug=false"); r.code != exitOK || !strings.Contains(r.stdout, "debug false") {
		t.Fatalf("--debug=false on a debug default TD: %v", r)
	}
	out2 := filepath.Join(t.TempDir(), "q2")
	if r := kbsctl(t, "dev", "tdxsim", "quote", "--dir", sim, "--out", out2); r.code != exitOK || !strings.Contains(r.stdout, "debug true") {
		t.Fatalf("default debug TD: %v", r)
	}
}

func TestDevTdxsimQuoteErrors(t *testing.T) {
	sim := newSim(t)
	exists := filepath.Join(t.TempDir(), "exists")
	if err := os.WriteFile(exists, []byte("keep"), 0o644); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(t.TempDir(), "q")
	missing := filepath.Join(t.TempDir(), "nosim")
	for _, tc := range []struct {
		args []string
		code int
		msg  string
	}{
		{[]string{"dev", "tdxsim", "quote", "--out", out}, exitUsage, "--dir is required"},
		{[]string{"dev", "tdxsim", "quote", "--dir", sim}, exitUsage, "--out is required"},
		{[]string{"dev", "tdxsim", "quote", "--dir", sim, "--out", out, "--report-data", strings.Repeat("00", 65)}, exitUsage, "--report-data: 65 bytes, at most 64"},
		{[]string{"dev", "tdxsim", "quote", "--dir", sim, "--out", out, "--report-data", "xyz"}, exitUsage, "--report-data: not hex"},
		{[]string{"dev", "tdxsim", "quote", "--dir", sim, "--out", out, "--mrtd", "00"}, exitUsage, "--mrtd: 2 hex digits, want 96"},
		{[]string{"dev", "tdxsim", "quote", "--dir", sim, "--out", out, "--debug=maybe"}, exitUsage, `invalid boolean value "maybe" for --debug`},
		{[]string{"dev", "tdxsim", "quote", "--dir", missing, "--out", out}, exitFailure, "create it with 'kbsctl dev tdxsim init " + missing + "'"},
		{[]string{"dev", "tdxsim", "quote", "--dir", sim, "--out", exists}, exitFailure, "--out " + exists + " exists; remove it or choose another file"},
	} {
		r := kbsctl(t, tc.args...)
		if r.code != tc.code || !strings.Contains(r.stderr, tc.msg) {
			t.Errorf("kbsctl %q: want exit %d and %q: %v", tc.args, tc.code, tc.msg, r)
		}
	}
	if _, err := os.Stat(out); err == nil {
		t.Error("a failed run wrote --out")
	}
	if b, _ := os.ReadFile(exists); string(b) != "keep" {
		t.Error("an existing --out was overwritten")
	}
}
