package store

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"path/filepath"
	"sync"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/cml-project/cml/server/kek"
)

// fakeClock returns t0, t0+1s, t0+2s, … on successive calls.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

var t0 = time.Date(2026, 4, 1, 9, 0, 0, 0, time.UTC)

func newClock() *fakeClock { return &fakeClock{t: t0} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	t := c.t
	c.t = c.t.Add(time.Second)
	return t
}

// streamReader is a deterministic "random" source: block i is SHA-256(i).
type streamReader struct {
	mu  sync.Mutex
	n   uint64
	buf []byte
}

func (r *streamReader) Read(p []byte) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for len(r.buf) < len(p) {
		h := sha256.Sum256(binary.BigEndian.AppendUint64(nil, r.n))
		r.n++
		r.buf = append(r.buf, h[:]...)
	}
	n := copy(p, r.buf)
	r.buf = r.buf[n:]
	return n, nil
}

// block returns what streamReader yields as its i-th 32-byte block.
func block(i uint64) []byte {
	h := sha256.Sum256(binary.BigEndian.AppendUint64(nil, i))
	return h[:]
}

func testKEK(t testing.TB, seed byte) *kek.Local {
	t.Helper()
	k := make([]byte, kek.Size)
	for i := range k {
		k[i] = seed + byte(i)
	}
	p, err := kek.New(k)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

type env struct {
	path string
	opts Options
	s    *Store
}

// newEnv creates a store with a fixed KEK, a fake clock and a deterministic
// random stream (block 0 is the audit MAC key, block 1 the first DEK).
func newEnv(t testing.TB) *env {
	t.Helper()
	e := &env{
		path: filepath.Join(t.TempDir(), DBFileName),
		opts: Options{KEK: testKEK(t, 1), Now: newClock().Now, Rand: &streamReader{}},
	}
	s, err := Create(context.Background(), e.path, e.opts)
	if err != nil {
		t.Fatal(err)
	}
	e.s = s
	t.Cleanup(func() {
		if e.s != nil {
			e.s.Close()
		}
	})
	return e
}

func (e *env) close(t testing.TB) {
	t.Helper()
	if err := e.s.Close(); err != nil {
		t.Fatal(err)
	}
	e.s = nil
}

func (e *env) reopen(t testing.TB) error {
	t.Helper()
	if e.s != nil {
		e.close(t)
	}
	s, err := Open(context.Background(), e.path, e.opts)
	e.s = s
	return err
}

// raw runs fn in a bbolt write transaction on the open store's database:
// the tests' way to tamper with stored bytes.
func (e *env) raw(t testing.TB, fn func(tx *bolt.Tx) error) {
	t.Helper()
	if err := e.s.db.Update(fn); err != nil {
		t.Fatal(err)
	}
}
