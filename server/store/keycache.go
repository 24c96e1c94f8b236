package store

import (
	"bytes"
	"fmt"
	"sync"

	bolt "go.etcd.io/bbolt"
)

// keyCache memoises decodeKey for the read-only lookups of a key release
// (GetPolicy, UnwrapKey: three per release): per key id, the metadata
// decoded from the exact bytes last read. A lookup still reads the record
// in its own transaction and reuses the decoded value only if the bytes
// are identical, so a hit is the same as decoding them; any write changes
// the bytes (the Updated time at least) and the next read decodes afresh.
// Values are shared: callers must not modify them. Bounded by clearing it
// when full.
type keyCache struct {
	mu sync.Mutex
	m  map[string]*decodedKey
}

type decodedKey struct {
	raw []byte // a copy of the record (bbolt's memory is only valid in tx)
	key Key
}

const maxKeyCacheEntries = 1024

// get returns the metadata of key id as stored in tx, read only.
func (c *keyCache) get(tx *bolt.Tx, id string) (*Key, error) {
	v := tx.Bucket(bucketKeys).Get([]byte(id))
	if v == nil {
		return nil, fmt.Errorf("%w: %q", ErrKeyNotFound, id)
	}
	c.mu.Lock()
	d := c.m[id]
	c.mu.Unlock()
	if d != nil && bytes.Equal(d.raw, v) {
		return &d.key, nil
	}
	k, err := decodeKey(id, v)
	if err != nil {
		return nil, err
	}
	d = &decodedKey{raw: bytes.Clone(v), key: k}
	c.mu.Lock()
	if c.m == nil || (len(c.m) >= maxKeyCacheEntries && c.m[id] == nil) {
		c.m = make(map[string]*decodedKey)
	}
	c.m[id] = d
	c.mu.Unlock()
	return &d.key, nil
}
