package verifier

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/cml-project/cml/tdx/tdxsim"
)

func TestParseCacheBounded(t *testing.T) {
	var c parseCache
	calls := 0
	parse := func(b []byte) (any, error) { calls++; return string(b), nil }
	for i := 0; i < 3*maxCacheEntries; i++ {
		v, err := c.get(cacheCRLNext, fmt.Appendf(nil, "doc-%d", i), parse)
		if err != nil || v.(string) != fmt.Sprintf("doc-%d", i) {
			t.Fatalf("get %d = %v, %v", i, v, err)
		}
		if len(c.m) > maxCacheEntries {
			t.Fatalf("cache grew to %d entries", len(c.m))
		}
	}
	before := calls
	c.get(cacheCRLNext, []byte("doc-1535"), parse)
	if calls != before {
		t.Error("recent entry was not cached")
	}
	// The kind is part of the key.
	c.get(cacheTCBInfo, []byte("doc-1535"), parse)
	if calls != before+1 {
		t.Error("entries of different kinds collide")
	}
	if _, err := c.get(cacheTCBInfo, []byte("x"), func([]byte) (any, error) { return nil, fmt.Errorf("bad") }); err == nil {
		t.Error("parse error lost")
	}
	if _, ok := c.m[cacheKey{kind: cacheTCBInfo}]; ok {
		t.Error("error cached")
	}
}

// Claims returned to one caller share nothing mutable with the cache or
// with other callers.
func TestClaimsDoNotAlias(t *testing.T) {
	s := newSim(t, tdxsim.Options{TCBStatus: tdxsim.OutOfDate})
	v := simVerifier(t, s, nil, simEpoch.Add(time.Hour), CheckFull)
	q := quote(t, s, [64]byte{}, s.DefaultTD())
	_, err := v.Verify(context.Background(), q)
	first := wantReason(t, err, ReasonTCBOutOfDate).Claims
	if len(first.AdvisoryIDs) == 0 {
		t.Fatal("no advisory IDs")
	}
	first.AdvisoryIDs[0] = "changed"
	_, err = v.Verify(context.Background(), q)
	if second := wantReason(t, err, ReasonTCBOutOfDate).Claims; second.AdvisoryIDs[0] == "changed" {
		t.Error("advisory IDs alias between calls")
	}
}
