package main

import (
	"strings"
	"testing"
)

func TestParseSize(t *testing.T) {
	for in, want := range map[string]int64{
		"4096": 4096, "1MiB": 1 << 20, "1mib": 1 << 20, "64KiB": 64 << 10, "64k": 64 << 10,
		"4M": 4 << 20, "2G": 2 << 30, "2GiB": 2 << 30, "512B": 512, " 1 MiB ": 1 << 20, "0": 0,
		"8589934591GiB": 8589934591 << 30,
	} {
		got, err := parseSize(in)
		if err != nil || got != want {
			t.Errorf("parseSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for in, msg := range map[string]string{
		"":                     "empty size",
		"1MB":                  "decimal units are ambiguous",
		"4kb":                  "decimal units are ambiguous",
		"1.5MiB":               "want a whole number",
		"-1":                   "want a whole number",
		"+1":                   "want a whole number",
		"0x10":                 "want a whole number",
		"1_000":                "want a whole number",
		"MiB":                  "want a whole number",
		"1TiB":                 "want a whole number",
		"8589934592GiB":        "too large",
		"99999999999999999999": "want a whole number",
	} {
		got, err := parseSize(in)
		if err == nil || !strings.Contains(err.Error(), msg) {
			t.Errorf("parseSize(%q) = %d, %v; want error %q", in, got, err, msg)
		}
	}
}

func TestSizeFlagString(t *testing.T) {
	for n, want := range map[int64]string{0: "0", 1 << 20: "1MiB", 3 << 10: "3KiB", 5 << 30: "5GiB", 1000: "1000"} {
		f := sizeFlag{n}
		if got := f.String(); got != want {
			t.Errorf("sizeFlag{%d}.String() = %q, want %q", n, got, want)
		}
	}
}

// FuzzParseSize checks that parseSize never panics, never returns a
// negative size, and that String round-trips through it.
func FuzzParseSize(f *testing.F) {
	for _, s := range []string{"1MiB", "4096", "64k", "2G", "1MB", "-5", "9223372036854775807"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		n, err := parseSize(s)
		if err != nil {
			return
		}
		if n < 0 {
			t.Fatalf("parseSize(%q) = %d", s, n)
		}
		back, err := parseSize((&sizeFlag{n}).String())
		if err != nil || back != n {
			t.Fatalf("round trip of %d: %d, %v", n, back, err)
		}
	})
}
