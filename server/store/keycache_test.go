package store

import (
	"errors"
	"testing"

	bolt "go.etcd.io/bbolt"
)

// The key cache reuses a decoded record only for identical bytes: a
// changed record is decoded again, and a removed one is not found.
func TestKeyCache(t *testing.T) {
	e := newEnv(t)
	if _, err := e.s.CreateKey(ctx, "model.v1", KeyOptions{}); err != nil {
		t.Fatal(err)
	}
	get := func() (*Key, error) {
		var k *Key
		err := e.s.db.View(func(tx *bolt.Tx) error {
			var err error
			k, err = e.s.keys.get(tx, "model.v1")
			return err
		})
		return k, err
	}
	k1, err := get()
	if err != nil || k1.State != StateEnabled {
		t.Fatalf("%+v %v", k1, err)
	}
	if k2, err := get(); err != nil || k2 != k1 {
		t.Errorf("same bytes decoded again (%p, %p, %v)", k1, k2, err)
	}
	if _, err := e.s.DisableKey(ctx, "model.v1"); err != nil {
		t.Fatal(err)
	}
	if k3, err := get(); err != nil || k3 == k1 || k3.State != StateDisabled || k1.State != StateEnabled {
		t.Fatalf("after DisableKey: %+v %v (cached %+v)", k3, err, k1)
	}
	if err := e.s.db.Update(func(tx *bolt.Tx) error { return tx.Bucket(bucketKeys).Delete([]byte("model.v1")) }); err != nil {
		t.Fatal(err)
	}
	if _, err := get(); !errors.Is(err, ErrKeyNotFound) {
		t.Fatalf("deleted record: %v", err)
	}
}
