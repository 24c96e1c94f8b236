package storetest_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/cml-project/cml/server/store"
	"github.com/cml-project/cml/server/store/storetest"
)

func TestOpen(t *testing.T) {
	ctx := context.Background()
	a, b := storetest.Open(t), storetest.Open(t)
	if _, err := a.CreateKey(ctx, "k", store.KeyOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, _, err := a.UnwrapKey(ctx, "k", 0); err != nil {
		t.Fatal(err)
	}
	if _, err := b.GetKey(ctx, "k"); !errors.Is(err, store.ErrKeyNotFound) {
		t.Fatalf("stores share state: %v", err)
	}
}

func TestOpenWithClock(t *testing.T) {
	fixed := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	s := storetest.OpenWith(t, store.Options{Now: func() time.Time { return fixed }})
	k, err := s.CreateKey(context.Background(), "k", store.KeyOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if !k.Created.Equal(fixed) {
		t.Fatalf("created %v, want the injected clock's %v", k.Created, fixed)
	}
}
