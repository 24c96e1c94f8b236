// Package storetest opens throwaway keystores for tests of packages that use
// server/store.
//
// Usage:
//
//	st := storetest.Open(t)                     // random KEK, real clock
//	st := storetest.OpenWith(t, store.Options{Now: clock.Now})
//
// The database lives in t.TempDir() and is closed by t.Cleanup.
package storetest

import (
	"context"
	"crypto/rand"
	"path/filepath"
	"testing"
	"time"

	"github.com/cml-project/cml/server/kek"
	"github.com/cml-project/cml/server/store"
)

// Open returns a new empty store under a random KEK, using time.Now.
func Open(t testing.TB) *store.Store {
	t.Helper()
	return OpenWith(t, store.Options{})
}

// OpenWith returns a new empty store created with opts; a nil KEK becomes a
// random one and a nil Now becomes time.Now.
func OpenWith(t testing.TB, opts store.Options) *store.Store {
	t.Helper()
	if opts.KEK == nil {
		opts.KEK = RandomKEK(t)
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	s, err := store.Create(context.Background(), filepath.Join(t.TempDir(), store.DBFileName), opts)
	if err != nil {
		t.Fatalf("storetest: %v", err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("storetest: %v", err)
		}
	})
	return s
}

// RandomKEK returns a local KEK provider with a random key.
func RandomKEK(t testing.TB) *kek.Local {
	t.Helper()
	key := make([]byte, kek.Size)
	rand.Read(key)
	p, err := kek.New(key)
	if err != nil {
		t.Fatalf("storetest: %v", err)
	}
	return p
}
