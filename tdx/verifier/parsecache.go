package verifier

import (
	"crypto/sha256"
	"crypto/x509"
	"encoding/json"
	"sync"
	"time"

	"github.com/google/go-tdx-guest/pcs"
)

// parseCache memoises what this package derives from bytes go-tdx-guest has
// already verified: the PCK certificate's SGX extensions, the parsed TCB
// info and QE identity, and CRL nextUpdate dates. Entries are keyed by the
// SHA-256 of the exact bytes and hold values computed from those bytes
// alone, so a hit is the same as re-parsing; nothing here skips a check.
// The inputs repeat (one PCK chain per platform, collateral for weeks), so
// the hit rate is high; the cache is bounded by clearing it when full.
type parseCache struct {
	mu sync.Mutex
	m  map[cacheKey]any
}

type cacheKey struct {
	kind   byte
	digest [sha256.Size]byte
}

const (
	cachePCKExt byte = iota + 1
	cacheTCBInfo
	cacheQEIdentity
	cacheCRLNext

	maxCacheEntries = 512
)

func (c *parseCache) get(kind byte, b []byte, parse func([]byte) (any, error)) (any, error) {
	k := cacheKey{kind, sha256.Sum256(b)}
	c.mu.Lock()
	v, ok := c.m[k]
	c.mu.Unlock()
	if ok {
		return v, nil
	}
	v, err := parse(b)
	if err != nil {
		return nil, err // errors are not cached
	}
	c.mu.Lock()
	if c.m == nil || len(c.m) >= maxCacheEntries {
		c.m = make(map[cacheKey]any)
	}
	c.m[k] = v
	c.mu.Unlock()
	return v, nil
}

// The returned values are shared between calls: callers must not modify
// them.

func (c *parseCache) pckExtensions(chain []byte) (*pcs.PckExtensions, error) {
	v, err := c.get(cachePCKExt, chain, func(b []byte) (any, error) { return pckExtensions(b) })
	if err != nil {
		return nil, err
	}
	return v.(*pcs.PckExtensions), nil
}

func (c *parseCache) tcbInfo(body []byte) (*pcs.TdxTcbInfo, error) {
	v, err := c.get(cacheTCBInfo, body, func(b []byte) (any, error) {
		var ti pcs.TdxTcbInfo
		err := json.Unmarshal(b, &ti)
		return &ti, err
	})
	if err != nil {
		return nil, err
	}
	return v.(*pcs.TdxTcbInfo), nil
}

func (c *parseCache) qeIdentity(body []byte) (*pcs.QeIdentity, error) {
	v, err := c.get(cacheQEIdentity, body, func(b []byte) (any, error) {
		var qe pcs.QeIdentity
		err := json.Unmarshal(b, &qe)
		return &qe, err
	})
	if err != nil {
		return nil, err
	}
	return v.(*pcs.QeIdentity), nil
}

func (c *parseCache) crlNextUpdate(der []byte) (time.Time, error) {
	v, err := c.get(cacheCRLNext, der, func(b []byte) (any, error) {
		crl, err := x509.ParseRevocationList(b)
		if err != nil {
			return nil, err
		}
		return crl.NextUpdate, nil
	})
	if err != nil {
		return time.Time{}, err
	}
	return v.(time.Time), nil
}
