package spire

import (
	"strings"
	"testing"
)

func TestParseJoinToken(t *testing.T) {
	for _, tc := range []struct {
		in, want, err string
	}{
		{in: `{"value":"0b6e6d2c-5a5c-4a55-9a0e-0b6f2d3c4e5f"}`, want: "0b6e6d2c-5a5c-4a55-9a0e-0b6f2d3c4e5f"},
		{in: "Token: abc\n", err: "unexpected output"},
		{in: `{"value":""}`, err: "unexpected token"},
		{in: `{"value":"a/b"}`, err: "unexpected token"},
	} {
		got, err := parseJoinToken([]byte(tc.in))
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("parseJoinToken(%q) = %q, %v; want error %q", tc.in, got, err, tc.err)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("parseJoinToken(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
		}
	}
}

func TestParseEntryCreate(t *testing.T) {
	for _, tc := range []struct {
		in, want, err string
	}{
		{in: `{"results":[{"status":{"code":0,"message":"OK"},"entry":{"id":"e1","spiffe_id":{"trust_domain":"cml.test","path":"/kbs"}}}]}`, want: "e1"},
		{in: `{"results":[{"status":{"code":6,"message":"similar entry already exists"},"entry":{"id":""}}]}`, err: "status 6: similar entry already exists"},
		{in: `{"results":[]}`, err: "0 results"},
		{in: `{"results":[{"status":{"code":0},"entry":{}}]}`, err: "no entry id"},
		{in: `Entry ID : e1`, err: "unexpected output"},
	} {
		got, err := parseEntryCreate([]byte(tc.in))
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("parseEntryCreate(%q) = %q, %v; want error %q", tc.in, got, err, tc.err)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("parseEntryCreate(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
		}
	}
}

// FuzzParseCLIOutput: the parsers of SPIRE's CLI output never panic and
// never return both a value and an error, or neither.
func FuzzParseCLIOutput(f *testing.F) {
	f.Add([]byte(`{"value":"0b6e6d2c-5a5c-4a55-9a0e-0b6f2d3c4e5f"}`))
	f.Add([]byte(`{"results":[{"status":{"code":0,"message":"OK"},"entry":{"id":"e1"}}]}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		if tok, err := parseJoinToken(b); (tok == "") == (err == nil) {
			t.Fatalf("parseJoinToken(%q) = %q, %v", b, tok, err)
		}
		if id, err := parseEntryCreate(b); (id == "") == (err == nil) {
			t.Fatalf("parseEntryCreate(%q) = %q, %v", b, id, err)
		}
	})
}
