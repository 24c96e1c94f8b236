package broker

import (
	"testing"

	"google.golang.org/protobuf/proto"

	kbsv1 "github.com/cml-project/cml/proto/cml/kbs/v1"
)

func TestPolicyCache(t *testing.T) {
	enc := func(p *kbsv1.Policy) []byte {
		b, err := proto.Marshal(p)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	v1 := enc(&kbsv1.Policy{SpiffeIds: []string{"spiffe://example.org/a"}, AllowUnpinnedMeasurements: true})
	v2 := enc(&kbsv1.Policy{SpiffeIds: []string{"spiffe://example.org/b"}, AllowUnpinnedMeasurements: true})
	var c policyCache
	p1, err := c.unmarshal(v1)
	if err != nil {
		t.Fatal(err)
	}
	if again, err := c.unmarshal(append([]byte(nil), v1...)); err != nil || again != p1 {
		t.Errorf("same bytes decoded again: %v", err)
	}
	p2, err := c.unmarshal(v2)
	if err != nil || p2 == p1 || p2.GetSpiffeIds()[0] != "spiffe://example.org/b" {
		t.Fatalf("other bytes: %v %v", p2, err)
	}
	// Invalid policies are refused every time, never cached.
	bad := enc(&kbsv1.Policy{SpiffeIds: []string{"spiffe://example.org/a"}}) // pins nothing
	for range 2 {
		if _, err := c.unmarshal(bad); err == nil {
			t.Fatal("a policy that pins no measurement was accepted")
		}
	}
	if _, err := c.unmarshal([]byte{0xff}); err == nil {
		t.Fatal("garbage accepted")
	}
}
