package tdxsim

import (
	"testing"
	"time"
)

// FuzzParseConfig: parsing tdxsim.json never panics, and what it accepts
// survives a round trip of its TD parameters. Seed
// (testdata/fuzz/FuzzParseConfig): the file Init writes.
func FuzzParseConfig(f *testing.F) {
	f.Add([]byte(`{"format":"tdxsim/v1","tcb_status":"UpToDate","td":{"mrtd":"00"}}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		_, _, td, err := parseConfig(b)
		if err != nil {
			return
		}
		back, err := td.JSON().Params()
		if err != nil || back != td {
			t.Fatalf("TD parameters do not round-trip: %v", err)
		}
	})
}

func TestParseConfigInit(t *testing.T) {
	dir := t.TempDir() + "/sim"
	if _, err := Init(dir, Options{Now: time.Date(2025, 3, 1, 0, 0, 0, 0, time.UTC)}); err != nil {
		t.Fatal(err)
	}
	b, err := readSmall(dir + "/" + ConfigFile)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, _, err := parseConfig(b); err != nil {
		t.Fatal(err)
	}
	for _, bad := range []string{
		`{}`,
		`{"format":"tdxsim/v2"}`,
		`{"format":"tdxsim/v1","tcb_status":"Fine"}`,
		`{"format":"tdxsim/v1","tcb_status":"UpToDate","platform":{"fmspc":"xyz"}}`,
		`{"format":"tdxsim/v1","tcb_status":"UpToDate","extra":1}`,
	} {
		if _, _, _, err := parseConfig([]byte(bad)); err == nil {
			t.Errorf("parseConfig(%s) succeeded", bad)
		}
	}
}
