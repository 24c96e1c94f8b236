package policy

import (
	"os"
	"strings"
	"testing"

	"google.golang.org/protobuf/encoding/protojson"

	kbsv1 "github.com/cml-project/cml/proto/cml/kbs/v1"
	"github.com/cml-project/cml/tdx/tdxsim"
	"github.com/cml-project/cml/tdx/verifier"
)

// TestServerDoc keeps docs/server.md honest: its example policy is valid
// and admits the simulator's default TD, and its reason code table lists
// every code.
func TestServerDoc(t *testing.T) {
	b, err := os.ReadFile("../../docs/server.md")
	if err != nil {
		t.Fatal(err)
	}
	doc := string(b)
	_, rest, ok := strings.Cut(doc, "```json\n")
	if !ok {
		t.Fatal("no JSON example")
	}
	js, _, _ := strings.Cut(rest, "```")
	p := new(kbsv1.Policy)
	if err := protojson.Unmarshal([]byte(js), p); err != nil {
		t.Fatalf("example policy: %v", err)
	}
	if err := Validate(p); err != nil {
		t.Fatalf("example policy: %v", err)
	}
	d := tdxsim.DefaultTDParams()
	c := &verifier.Claims{MRTD: d.MRTD, RTMR: [4]verifier.Measurement{d.RTMR[0], d.RTMR[1], d.RTMR[2], d.RTMR[3]},
		TEETCBSVN: [16]byte{3, 1}, TCBStatus: verifier.TCBStatusUpToDate}
	if r := Evaluate(p, loader, c, mlkem); !r.Allowed {
		t.Errorf("example policy denies the simulator's default TD: %v", r.Reasons())
	}
	for _, r := range AllReasons() {
		if !strings.Contains(doc, "`"+r+"`") {
			t.Errorf("docs/server.md does not list reason %q", r)
		}
	}
}
