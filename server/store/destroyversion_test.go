package store

import (
	"bytes"
	"errors"
	"fmt"
	"sync"
	"testing"

	bolt "go.etcd.io/bbolt"
)

// sealedOf returns a copy of the sealed DEK record of id/version, or nil.
func (e *env) sealedOf(t *testing.T, id string, version uint32) []byte {
	t.Helper()
	var out []byte
	e.raw(t, func(tx *bolt.Tx) error {
		out = clone(tx.Bucket(bucketDEKs).Get(dekKey(id, version)))
		return nil
	})
	return out
}

// liveTreeContains reports whether b occurs in any bucket key or value of
// the database's B+tree (free pages are not searched: see docs/keystore.md).
func (e *env) liveTreeContains(t *testing.T, b []byte) bool {
	t.Helper()
	found := false
	e.raw(t, func(tx *bolt.Tx) error {
		return tx.ForEach(func(name []byte, bk *bolt.Bucket) error {
			return bk.ForEach(func(k, v []byte) error {
				if bytes.Contains(k, b) || bytes.Contains(v, b) {
					found = true
				}
				return nil
			})
		})
	})
	return found
}

func TestDestroyVersion(t *testing.T) {
	e := newEnv(t)
	s := e.s
	if _, err := s.CreateKey(ctx, "m", KeyOptions{}); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if _, err := s.RotateKey(ctx, "m"); err != nil {
			t.Fatal(err)
		}
	}
	// Blocks 1, 2, 3 of the injected reader are versions 1, 2, 3.
	sealed1 := e.sealedOf(t, "m", 1)
	if sealed1 == nil {
		t.Fatal("no sealed DEK for version 1 before destroy")
	}
	before, err := s.GetKey(ctx, "m")
	if err != nil {
		t.Fatal(err)
	}

	// Refusals change nothing.
	for name, tc := range map[string]struct {
		id      string
		version uint32
		want    error
	}{
		"primary":       {"m", 3, ErrPrimaryVersion},
		"version 0":     {"m", 0, ErrInvalidArgument},
		"no version 9":  {"m", 9, ErrVersionNotFound},
		"missing key":   {"nope", 1, ErrKeyNotFound},
		"bad key id":    {"bad id", 1, ErrInvalidArgument},
		"empty key id":  {"", 1, ErrInvalidArgument},
		"max version":   {"m", ^uint32(0), ErrVersionNotFound},
		"one past last": {"m", 4, ErrVersionNotFound},
	} {
		if _, err := s.DestroyVersion(ctx, tc.id, tc.version); !errors.Is(err, tc.want) {
			t.Errorf("%s: DestroyVersion(%q, %d) = %v, want %v", name, tc.id, tc.version, err, tc.want)
		}
	}
	if got, _ := s.GetKey(ctx, "m"); !got.Updated.Equal(before.Updated) {
		t.Fatal("a refused DestroyVersion changed the key")
	}
	if _, _, err := s.UnwrapKey(ctx, "m", 3); err != nil {
		t.Fatalf("primary after refused destroy: %v", err)
	}

	// Destroy version 1.
	k, err := s.DestroyVersion(ctx, "m", 1)
	if err != nil {
		t.Fatal(err)
	}
	if k.State != StateEnabled || k.Primary != 3 || !k.Destroyed.IsZero() ||
		k.Versions[0].State != StateDestroyed || k.Versions[1].State != StateEnabled || k.Versions[2].State != StateEnabled ||
		!k.Versions[0].Updated.After(before.Versions[0].Updated) || !k.Updated.Equal(k.Versions[0].Updated) {
		t.Fatalf("after DestroyVersion(1): %+v", k)
	}
	if got, err := s.GetKey(ctx, "m"); err != nil || fmt.Sprint(got) != fmt.Sprint(k) {
		t.Fatalf("GetKey = %+v, %v; DestroyVersion returned %+v", got, err, k)
	}
	if _, _, err := s.UnwrapKey(ctx, "m", 1); !errors.Is(err, ErrKeyDestroyed) {
		t.Fatalf("UnwrapKey(v1) after destroy = %v, want ErrKeyDestroyed", err)
	}
	if d, v, err := s.UnwrapKey(ctx, "m", 2); err != nil || v != 2 || !bytes.Equal(d, block(2)) {
		t.Fatalf("UnwrapKey(v2) = %v", err)
	}
	if d, v, err := s.UnwrapKey(ctx, "m", 0); err != nil || v != 3 || !bytes.Equal(d, block(3)) {
		t.Fatalf("UnwrapKey(primary) = v%d %v", v, err)
	}
	// The record is gone from the B+tree, and so are its sealed bytes.
	if e.sealedOf(t, "m", 1) != nil {
		t.Fatal("sealed DEK of version 1 survives DestroyVersion")
	}
	if e.liveTreeContains(t, sealed1) {
		t.Fatal("the sealed bytes of version 1 are still in the database")
	}
	if e.sealedOf(t, "m", 2) == nil || e.sealedOf(t, "m", 3) == nil {
		t.Fatal("DestroyVersion(1) removed another version's DEK")
	}
	if err := s.Check(ctx); err != nil {
		t.Fatalf("Check after DestroyVersion: %v", err)
	}

	// Idempotent: no error, nothing written.
	again, err := s.DestroyVersion(ctx, "m", 1)
	if err != nil || !again.Updated.Equal(k.Updated) || again.Versions[0].State != StateDestroyed {
		t.Fatalf("second DestroyVersion(1) = %+v, %v", again, err)
	}
	// A destroyed version cannot be brought back.
	for name, op := range map[string]func() error{
		"enable":  func() error { _, err := s.EnableVersion(ctx, "m", 1); return err },
		"disable": func() error { _, err := s.DisableVersion(ctx, "m", 1); return err },
	} {
		if err := op(); !errors.Is(err, ErrKeyDestroyed) {
			t.Errorf("%s destroyed version: %v", name, err)
		}
	}

	// A disabled version of a disabled key can be destroyed; destroyed wins
	// over disabled in UnwrapKey, since re-enabling cannot undo it.
	if _, err := s.DisableVersion(ctx, "m", 2); err != nil {
		t.Fatal(err)
	}
	if _, err := s.DisableKey(ctx, "m"); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.UnwrapKey(ctx, "m", 2); !errors.Is(err, ErrKeyDisabled) {
		t.Fatalf("disabled version of disabled key: %v", err)
	}
	if k, err = s.DestroyVersion(ctx, "m", 2); err != nil || k.State != StateDisabled || k.Versions[1].State != StateDestroyed {
		t.Fatalf("DestroyVersion(2) of a disabled key: %+v, %v", k, err)
	}
	if _, _, err := s.UnwrapKey(ctx, "m", 2); !errors.Is(err, ErrKeyDestroyed) {
		t.Fatalf("destroyed version of disabled key: %v", err)
	}
	if _, _, err := s.UnwrapKey(ctx, "m", 3); !errors.Is(err, ErrKeyDisabled) {
		t.Fatalf("live version of disabled key: %v", err)
	}
	if _, err := s.EnableKey(ctx, "m"); err != nil {
		t.Fatal(err)
	}

	// Everything survives a reopen, which runs Check.
	if err := e.reopen(t); err != nil {
		t.Fatalf("reopen: %v", err)
	}
	s = e.s
	k, err = s.GetKey(ctx, "m")
	if err != nil || k.Versions[0].State != StateDestroyed || k.Versions[1].State != StateDestroyed || k.Versions[2].State != StateEnabled {
		t.Fatalf("after reopen: %+v, %v", k, err)
	}
	if _, _, err := s.UnwrapKey(ctx, "m", 1); !errors.Is(err, ErrKeyDestroyed) {
		t.Fatalf("UnwrapKey(v1) after reopen = %v", err)
	}
	if d, _, err := s.UnwrapKey(ctx, "m", 3); err != nil || !bytes.Equal(d, block(3)) {
		t.Fatalf("UnwrapKey(v3) after reopen = %v", err)
	}

	// After a rotation the old primary can go; then the whole key.
	if _, err := s.RotateKey(ctx, "m"); err != nil {
		t.Fatal(err)
	}
	if k, err = s.DestroyVersion(ctx, "m", 3); err != nil || k.Primary != 4 {
		t.Fatalf("DestroyVersion(3) after rotation: %+v, %v", k, err)
	}
	if k, err = s.DestroyKey(ctx, "m"); err != nil || k.State != StateDestroyed {
		t.Fatalf("DestroyKey after DestroyVersion: %+v, %v", k, err)
	}
	// Any version of a destroyed key is already destroyed.
	if got, err := s.DestroyVersion(ctx, "m", 4); err != nil || !got.Updated.Equal(k.Updated) {
		t.Fatalf("DestroyVersion(4) of a destroyed key = %+v, %v", got, err)
	}
	if _, err := s.DestroyVersion(ctx, "m", 5); !errors.Is(err, ErrVersionNotFound) {
		t.Fatalf("DestroyVersion(5) of a destroyed key = %v", err)
	}
	if err := e.reopen(t); err != nil {
		t.Fatalf("reopen after DestroyKey: %v", err)
	}
}

// TestCheckDestroyedVersion: Check accepts a destroyed version without a
// DEK record and refuses the ways the record and metadata can disagree.
func TestCheckDestroyedVersion(t *testing.T) {
	var sealed1 []byte
	cases := map[string]func(tx *bolt.Tx) error{
		"DEK back for destroyed version": func(tx *bolt.Tx) error {
			return tx.Bucket(bucketDEKs).Put(dekKey("k", 1), sealed1)
		},
		"destroyed version marked enabled": func(tx *bolt.Tx) error {
			k, _ := getKey(tx, "k")
			k.Versions[0].State = StateEnabled
			return putKey(tx, &k)
		},
		"primary destroyed": func(tx *bolt.Tx) error {
			k, _ := getKey(tx, "k")
			k.Versions[1].State = StateDestroyed
			if err := tx.Bucket(bucketDEKs).Delete(dekKey("k", 2)); err != nil {
				return err
			}
			return putKey(tx, &k)
		},
		"unknown version state": func(tx *bolt.Tx) error {
			k, _ := getKey(tx, "k")
			k.Versions[0].State = "shredded"
			return putKey(tx, &k)
		},
	}
	for name, tamper := range cases {
		t.Run(name, func(t *testing.T) {
			e := newEnv(t)
			if _, err := e.s.CreateKey(ctx, "k", KeyOptions{}); err != nil {
				t.Fatal(err)
			}
			if _, err := e.s.RotateKey(ctx, "k"); err != nil {
				t.Fatal(err)
			}
			sealed1 = e.sealedOf(t, "k", 1)
			if _, err := e.s.DestroyVersion(ctx, "k", 1); err != nil {
				t.Fatal(err)
			}
			if err := e.s.Check(ctx); err != nil {
				t.Fatalf("Check before tampering: %v", err)
			}
			e.raw(t, tamper)
			if err := e.s.Check(ctx); !errors.Is(err, ErrCorrupt) {
				t.Fatalf("Check = %v, want ErrCorrupt", err)
			}
			if err := e.reopen(t); !errors.Is(err, ErrCorrupt) {
				t.Fatalf("Open = %v, want ErrCorrupt", err)
			}
		})
	}
}

// TestDestroyVersionConcurrent: concurrent DestroyVersion calls on one key
// share batches (which bbolt may re-run) and each destroys its version
// exactly once, while the primary stays readable.
func TestDestroyVersionConcurrent(t *testing.T) {
	e := newEnv(t)
	s := e.s
	const n = 12
	if _, err := s.CreateKey(ctx, "c", KeyOptions{}); err != nil {
		t.Fatal(err)
	}
	for range n {
		if _, err := s.RotateKey(ctx, "c"); err != nil {
			t.Fatal(err)
		}
	}
	var wg sync.WaitGroup
	errs := make(chan error, 3*n)
	for v := uint32(1); v <= n; v++ {
		wg.Go(func() {
			for range 2 { // the second call is the idempotent one
				if _, err := s.DestroyVersion(ctx, "c", v); err != nil {
					errs <- fmt.Errorf("DestroyVersion(%d): %w", v, err)
				}
			}
			if _, _, err := s.UnwrapKey(ctx, "c", 0); err != nil {
				errs <- fmt.Errorf("UnwrapKey(primary): %w", err)
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	k, err := s.GetKey(ctx, "c")
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range k.Versions {
		if want := v.Version != n+1; (v.State == StateDestroyed) != want {
			t.Errorf("version %d is %s", v.Version, v.State)
		}
	}
	if err := e.reopen(t); err != nil {
		t.Fatalf("reopen: %v", err)
	}
}
