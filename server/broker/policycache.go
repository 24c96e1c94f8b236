package broker

import (
	"sync"

	kbsv1 "github.com/cml-project/cml/proto/cml/kbs/v1"
	"github.com/cml-project/cml/server/policy"
)

// policyCache memoises policy.Unmarshal (decode and validate) of stored
// policies, keyed by their exact bytes: GetChallenge and ReleaseKey decode
// the same policy on every call. A hit is the same as decoding the bytes
// again; a new policy version has other bytes. Errors are not cached.
// Values are shared: callers must not modify them. Bounded by clearing it
// when full.
type policyCache struct {
	mu sync.Mutex
	m  map[string]*kbsv1.Policy
}

const maxPolicyCacheEntries = 256

func (c *policyCache) unmarshal(b []byte) (*kbsv1.Policy, error) {
	c.mu.Lock()
	p := c.m[string(b)]
	c.mu.Unlock()
	if p != nil {
		return p, nil
	}
	p, err := policy.Unmarshal(b)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	if c.m == nil || len(c.m) >= maxPolicyCacheEntries {
		c.m = make(map[string]*kbsv1.Policy)
	}
	c.m[string(b)] = p
	c.mu.Unlock()
	return p, nil
}
