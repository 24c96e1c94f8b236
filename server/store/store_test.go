package store

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/cml-project/cml/server/kek"
)

var ctx = context.Background()

func TestCreateOpen(t *testing.T) {
	e := newEnv(t)
	if _, err := e.s.CreateKey(ctx, "a", KeyOptions{}); err != nil {
		t.Fatal(err)
	}
	e.close(t)
	if _, err := Create(ctx, e.path, e.opts); !errors.Is(err, fs.ErrExist) {
		t.Fatalf("Create over existing: %v", err)
	}
	if err := e.reopen(t); err != nil {
		t.Fatal(err)
	}
	if _, err := e.s.GetKey(ctx, "a"); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(e.path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Fatalf("database mode %v, want 0600", fi.Mode().Perm())
	}
}

func TestOpenMissingDoesNotCreate(t *testing.T) {
	path := filepath.Join(t.TempDir(), "none.db")
	_, err := Open(ctx, path, Options{KEK: testKEK(t, 1), Now: time.Now})
	if !errors.Is(err, fs.ErrNotExist) || !strings.Contains(err.Error(), "kbs init") {
		t.Fatalf("Open missing: %v", err)
	}
	if _, err := os.Stat(path); !errors.Is(err, fs.ErrNotExist) {
		t.Fatal("Open created the file")
	}
}

func TestOptionsRequired(t *testing.T) {
	path := filepath.Join(t.TempDir(), "x.db")
	if _, err := Create(ctx, path, Options{Now: time.Now}); !errors.Is(err, ErrInvalidArgument) {
		t.Fatalf("no KEK: %v", err)
	}
	if _, err := Create(ctx, path, Options{KEK: testKEK(t, 1)}); !errors.Is(err, ErrInvalidArgument) {
		t.Fatalf("no clock: %v", err)
	}
}

func TestOpenNotAKeystore(t *testing.T) {
	path := filepath.Join(t.TempDir(), "other.db")
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	db.Close()
	_, err = Open(ctx, path, Options{KEK: testKEK(t, 1), Now: time.Now})
	if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "not a kbs keystore") {
		t.Fatalf("Open plain bbolt file: %v", err)
	}
	junk := filepath.Join(t.TempDir(), "junk.db")
	os.WriteFile(junk, bytes.Repeat([]byte("x"), 8192), 0o600)
	if _, err := Open(ctx, junk, Options{KEK: testKEK(t, 1), Now: time.Now}); err == nil {
		t.Fatal("Open of junk succeeded")
	}
}

func TestInit(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	if err := Init(ctx, dir, Options{Now: time.Now}); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{dir, KEKPath(dir), DBPath(dir)} {
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		want := os.FileMode(0o600)
		if fi.IsDir() {
			want = 0o700
		}
		if fi.Mode().Perm() != want {
			t.Errorf("%s mode %v, want %v", p, fi.Mode().Perm(), want)
		}
	}
	kekBefore, _ := os.ReadFile(KEKPath(dir))
	err := Init(ctx, dir, Options{Now: time.Now})
	if !errors.Is(err, fs.ErrExist) {
		t.Fatalf("second Init: %v", err)
	}
	kekAfter, _ := os.ReadFile(KEKPath(dir))
	if !bytes.Equal(kekBefore, kekAfter) {
		t.Fatal("second Init changed the KEK")
	}
	p, err := kek.LoadFile(KEKPath(dir))
	if err != nil {
		t.Fatal(err)
	}
	s, err := Open(ctx, DBPath(dir), Options{KEK: p, Now: time.Now})
	if err != nil {
		t.Fatal(err)
	}
	s.Close()

	// A KEK given by the caller (CML_KEK): no KEK file is written.
	dir2 := filepath.Join(t.TempDir(), "env")
	if err := Init(ctx, dir2, Options{KEK: testKEK(t, 7), Now: time.Now}); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(KEKPath(dir2)); !errors.Is(err, fs.ErrNotExist) {
		t.Fatal("Init wrote a KEK file although a KEK was given")
	}
	// Only the database exists: Init refuses, and creates no KEK file.
	dir3 := filepath.Join(t.TempDir(), "dbonly")
	os.MkdirAll(dir3, 0o700)
	os.WriteFile(DBPath(dir3), nil, 0o600)
	if err := Init(ctx, dir3, Options{Now: time.Now}); !errors.Is(err, fs.ErrExist) {
		t.Fatalf("Init with existing db: %v", err)
	}
	if _, err := os.Stat(KEKPath(dir3)); !errors.Is(err, fs.ErrNotExist) {
		t.Fatal("failed Init left a KEK file")
	}
}

func TestWrongKEK(t *testing.T) {
	e := newEnv(t)
	e.close(t)
	e.opts.KEK = testKEK(t, 99)
	err := e.reopen(t)
	if !errors.Is(err, ErrWrongKEK) || !strings.Contains(err.Error(), e.path) {
		t.Fatalf("Open with wrong KEK: %v", err)
	}
}

func TestLocked(t *testing.T) {
	e := newEnv(t)
	opts := e.opts
	opts.LockTimeout = 50 * time.Millisecond
	start := time.Now()
	_, err := Open(ctx, e.path, opts)
	if !errors.Is(err, ErrLocked) || !strings.Contains(err.Error(), e.path) {
		t.Fatalf("second Open: %v", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("second Open waited %v", d)
	}
}

func TestKeyLifecycle(t *testing.T) {
	e := newEnv(t)
	s := e.s
	k, err := s.CreateKey(ctx, "model.v1", KeyOptions{Description: "a model", Labels: map[string]string{"team": "ml"}})
	if err != nil {
		t.Fatal(err)
	}
	// Block 0 was the audit MAC key; the first DEK is block 1 of the injected reader.
	if k.ID != "model.v1" || k.State != StateEnabled || k.Primary != 1 || len(k.Versions) != 1 ||
		k.Versions[0].Origin != OriginGenerated || !k.Created.Equal(t0.Add(time.Second)) || k.Labels["team"] != "ml" {
		t.Fatalf("created key %+v", k)
	}
	dek1, v, err := s.UnwrapKey(ctx, "model.v1", 0)
	if err != nil || v != 1 || !bytes.Equal(dek1, block(1)) {
		t.Fatalf("UnwrapKey primary = %x v%d %v, want block 1", dek1, v, err)
	}

	k, err = s.RotateKey(ctx, "model.v1")
	if err != nil {
		t.Fatal(err)
	}
	if k.Primary != 2 || len(k.Versions) != 2 || k.Versions[1].State != StateEnabled {
		t.Fatalf("rotated key %+v", k)
	}
	dek2, v, err := s.UnwrapKey(ctx, "model.v1", 0)
	if err != nil || v != 2 || !bytes.Equal(dek2, block(2)) {
		t.Fatalf("primary after rotate = v%d %v", v, err)
	}
	if old, _, err := s.UnwrapKey(ctx, "model.v1", 1); err != nil || !bytes.Equal(old, dek1) {
		t.Fatalf("old version after rotate: %v", err)
	}
	imported := bytes.Repeat([]byte{0x42}, 32)
	if k, err = s.ImportVersion(ctx, "model.v1", imported); err != nil || k.Primary != 3 || k.Versions[2].Origin != OriginImported {
		t.Fatalf("ImportVersion: %+v %v", k, err)
	}
	if got, _, _ := s.UnwrapKey(ctx, "model.v1", 3); !bytes.Equal(got, imported) {
		t.Fatal("imported version bytes differ")
	}
	if _, _, err := s.UnwrapKey(ctx, "model.v1", 4); !errors.Is(err, ErrVersionNotFound) {
		t.Fatalf("v4: %v", err)
	}

	// Disable/enable one version.
	if k, err = s.DisableVersion(ctx, "model.v1", 1); err != nil || k.Versions[0].State != StateDisabled {
		t.Fatalf("DisableVersion: %v", err)
	}
	if _, _, err := s.UnwrapKey(ctx, "model.v1", 1); !errors.Is(err, ErrKeyDisabled) {
		t.Fatalf("disabled version: %v", err)
	}
	if _, _, err := s.UnwrapKey(ctx, "model.v1", 2); err != nil {
		t.Fatalf("other version after disabling v1: %v", err)
	}
	if _, err := s.EnableVersion(ctx, "model.v1", 1); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.UnwrapKey(ctx, "model.v1", 1); err != nil {
		t.Fatalf("re-enabled version: %v", err)
	}
	if _, err := s.DisableVersion(ctx, "model.v1", 9); !errors.Is(err, ErrVersionNotFound) {
		t.Fatalf("disable v9: %v", err)
	}

	// Disable/enable the whole key.
	if k, err = s.DisableKey(ctx, "model.v1"); err != nil || k.State != StateDisabled {
		t.Fatal(err)
	}
	for _, v := range []uint32{0, 1, 2, 3} {
		if _, _, err := s.UnwrapKey(ctx, "model.v1", v); !errors.Is(err, ErrKeyDisabled) {
			t.Fatalf("disabled key v%d: %v", v, err)
		}
	}
	if _, err := s.EnableKey(ctx, "model.v1"); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.UnwrapKey(ctx, "model.v1", 0); err != nil {
		t.Fatal(err)
	}

	// Destroy.
	k, err = s.DestroyKey(ctx, "model.v1")
	if err != nil || k.State != StateDestroyed || k.Destroyed.IsZero() {
		t.Fatalf("DestroyKey: %+v %v", k, err)
	}
	for _, v := range k.Versions {
		if v.State != StateDestroyed {
			t.Fatalf("version %d state %s after destroy", v.Version, v.State)
		}
	}
	e.raw(t, func(tx *bolt.Tx) error {
		c := tx.Bucket(bucketDEKs).Cursor()
		for k, _ := c.First(); k != nil; k, _ = c.Next() {
			if id, _, _ := splitRecordKey(k); id == "model.v1" {
				t.Errorf("sealed DEK %x survives destroy", k)
			}
		}
		return nil
	})
	for _, v := range []uint32{0, 1, 2, 3} {
		if _, _, err := s.UnwrapKey(ctx, "model.v1", v); !errors.Is(err, ErrKeyDestroyed) {
			t.Fatalf("destroyed v%d: %v", v, err)
		}
	}
	if _, err := s.CreateKey(ctx, "model.v1", KeyOptions{}); !errors.Is(err, ErrKeyDestroyed) {
		t.Fatalf("create destroyed id: %v", err)
	}
	if _, err := s.ImportKey(ctx, "model.v1", imported, KeyOptions{}); !errors.Is(err, ErrKeyDestroyed) {
		t.Fatalf("import destroyed id: %v", err)
	}
	for name, op := range map[string]func() error{
		"rotate":         func() error { _, err := s.RotateKey(ctx, "model.v1"); return err },
		"disable":        func() error { _, err := s.DisableKey(ctx, "model.v1"); return err },
		"enable version": func() error { _, err := s.EnableVersion(ctx, "model.v1", 1); return err },
	} {
		if err := op(); !errors.Is(err, ErrKeyDestroyed) {
			t.Errorf("%s destroyed key: %v", name, err)
		}
	}
	if again, err := s.DestroyKey(ctx, "model.v1"); err != nil || !again.Destroyed.Equal(k.Destroyed) {
		t.Fatalf("second destroy: %v", err)
	}
	// The tombstone and states survive a reopen, and Check accepts them.
	if err := e.reopen(t); err != nil {
		t.Fatal(err)
	}
	if got, err := e.s.GetKey(ctx, "model.v1"); err != nil || got.State != StateDestroyed || len(got.Versions) != 3 {
		t.Fatalf("tombstone after reopen: %+v %v", got, err)
	}
}

func TestKeyErrors(t *testing.T) {
	s := newEnv(t).s
	if _, err := s.CreateKey(ctx, "k", KeyOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.CreateKey(ctx, "k", KeyOptions{}); !errors.Is(err, ErrKeyExists) {
		t.Fatalf("create twice: %v", err)
	}
	if _, err := s.ImportKey(ctx, "k", bytes.Repeat([]byte{1}, 32), KeyOptions{}); !errors.Is(err, ErrKeyExists) {
		t.Fatalf("import over existing: %v", err)
	}
	for _, id := range []string{"", "a/b", "a b", "é", "a\x00b", strings.Repeat("x", 129), "../x"} {
		if _, err := s.CreateKey(ctx, id, KeyOptions{}); !errors.Is(err, ErrInvalidArgument) {
			t.Errorf("CreateKey(%q): %v", id, err)
		}
		if _, _, err := s.UnwrapKey(ctx, id, 0); !errors.Is(err, ErrInvalidArgument) {
			t.Errorf("UnwrapKey(%q): %v", id, err)
		}
	}
	for _, id := range []string{"a", "A.b_c-9", strings.Repeat("x", 128)} {
		if err := ValidateKeyID(id); err != nil {
			t.Errorf("ValidateKeyID(%q): %v", id, err)
		}
	}
	for _, dek := range [][]byte{nil, make([]byte, 31), make([]byte, 33), make([]byte, 32)} {
		if _, err := s.ImportKey(ctx, "imp", dek, KeyOptions{}); !errors.Is(err, ErrInvalidArgument) {
			t.Errorf("ImportKey(%d bytes): %v", len(dek), err)
		}
	}
	for name, o := range map[string]KeyOptions{
		"long description": {Description: strings.Repeat("d", MaxDescription+1)},
		"bad utf8":         {Description: "\xff"},
		"label name":       {Labels: map[string]string{"Team": "x"}},
		"empty label":      {Labels: map[string]string{"": "x"}},
		"long label value": {Labels: map[string]string{"a": strings.Repeat("v", MaxLabelValueLen+1)}},
	} {
		if _, err := s.CreateKey(ctx, "opts", o); !errors.Is(err, ErrInvalidArgument) {
			t.Errorf("%s: %v", name, err)
		}
	}
	for name, op := range map[string]func() error{
		"get":     func() error { _, err := s.GetKey(ctx, "nope"); return err },
		"rotate":  func() error { _, err := s.RotateKey(ctx, "nope"); return err },
		"disable": func() error { _, err := s.DisableKey(ctx, "nope"); return err },
		"destroy": func() error { _, err := s.DestroyKey(ctx, "nope"); return err },
		"unwrap":  func() error { _, _, err := s.UnwrapKey(ctx, "nope", 0); return err },
		"policy":  func() error { _, err := s.PutPolicy(ctx, "nope", []byte("p")); return err },
	} {
		if err := op(); !errors.Is(err, ErrKeyNotFound) {
			t.Errorf("%s unknown key: %v", name, err)
		}
	}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := s.CreateKey(cctx, "late", KeyOptions{}); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled create: %v", err)
	}
}

func TestListKeys(t *testing.T) {
	s := newEnv(t).s
	ids := []string{"a", "b", "c", "d", "e"}
	for _, id := range ids {
		if _, err := s.CreateKey(ctx, id, KeyOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	var got []string
	after := ""
	for {
		page, err := s.ListKeys(ctx, after, 2)
		if err != nil {
			t.Fatal(err)
		}
		if len(page) == 0 {
			break
		}
		if len(page) > 2 {
			t.Fatalf("page of %d", len(page))
		}
		for _, k := range page {
			got = append(got, k.ID)
		}
		after = page[len(page)-1].ID
	}
	if strings.Join(got, ",") != strings.Join(ids, ",") {
		t.Fatalf("paged ids %v", got)
	}
	all, _ := s.ListKeys(ctx, "", 0)
	if len(all) != 5 {
		t.Fatalf("default limit returned %d", len(all))
	}
	from, _ := s.ListKeys(ctx, "bb", 10)
	if len(from) != 3 || from[0].ID != "c" {
		t.Fatalf("after non-existent id: %v", from)
	}
}

func TestPolicies(t *testing.T) {
	s := newEnv(t).s
	if _, err := s.CreateKey(ctx, "k", KeyOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.GetPolicy(ctx, "k", 0); !errors.Is(err, ErrPolicyNotFound) {
		t.Fatalf("no policy yet: %v", err)
	}
	in := []byte("policy one")
	p1, err := s.PutPolicy(ctx, "k", in)
	if err != nil || p1.Version != 1 {
		t.Fatalf("PutPolicy: %+v %v", p1, err)
	}
	in[0] = 'X' // the store kept its own copy
	p2, err := s.PutPolicy(ctx, "k", []byte("policy two"))
	if err != nil || p2.Version != 2 || !p2.Created.After(p1.Created) {
		t.Fatalf("PutPolicy 2: %+v %v", p2, err)
	}
	latest, err := s.GetPolicy(ctx, "k", 0)
	if err != nil || latest.Version != 2 || string(latest.Bytes) != "policy two" || !latest.Created.Equal(p2.Created) {
		t.Fatalf("latest: %+v %v", latest, err)
	}
	first, err := s.GetPolicy(ctx, "k", 1)
	if err != nil || string(first.Bytes) != "policy one" {
		t.Fatalf("v1: %+v %v", first, err)
	}
	if _, err := s.GetPolicy(ctx, "k", 3); !errors.Is(err, ErrPolicyNotFound) {
		t.Fatalf("v3: %v", err)
	}
	list, err := s.ListPolicies(ctx, "k")
	if err != nil || len(list) != 2 || list[0].Version != 1 || list[1].Version != 2 {
		t.Fatalf("ListPolicies: %+v %v", list, err)
	}
	if k, _ := s.GetKey(ctx, "k"); k.PolicyVersion != 2 {
		t.Fatalf("key policy version %d", k.PolicyVersion)
	}
	if _, err := s.PutPolicy(ctx, "k", nil); !errors.Is(err, ErrInvalidArgument) {
		t.Fatalf("empty policy: %v", err)
	}
	if _, err := s.PutPolicy(ctx, "k", make([]byte, MaxPolicySize+1)); !errors.Is(err, ErrInvalidArgument) {
		t.Fatalf("huge policy: %v", err)
	}
	if _, err := s.GetPolicy(ctx, "nope", 0); !errors.Is(err, ErrKeyNotFound) {
		t.Fatalf("unknown key: %v", err)
	}
	// Policies of a destroyed key: no new version; history stays readable.
	if _, err := s.DestroyKey(ctx, "k"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.PutPolicy(ctx, "k", []byte("three")); !errors.Is(err, ErrKeyDestroyed) {
		t.Fatalf("policy for destroyed key: %v", err)
	}
	if p, err := s.GetPolicy(ctx, "k", 0); err != nil || p.Version != 2 {
		t.Fatalf("history after destroy: %v", err)
	}
}

// TestSealedRecordsCannotBeMoved copies raw sealed values between keys and
// versions in the bbolt file: none opens.
func TestSealedRecordsCannotBeMoved(t *testing.T) {
	e := newEnv(t)
	s := e.s
	for _, id := range []string{"a", "b"} {
		if _, err := s.CreateKey(ctx, id, KeyOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.RotateKey(ctx, "a"); err != nil {
		t.Fatal(err)
	}
	copyValue := func(from, to []byte) {
		e.raw(t, func(tx *bolt.Tx) error {
			b := tx.Bucket(bucketDEKs)
			return b.Put(to, clone(b.Get(from)))
		})
	}
	// a/1 → b/1: another key, same version.
	saved := func(k []byte) (v []byte) {
		e.raw(t, func(tx *bolt.Tx) error { v = clone(tx.Bucket(bucketDEKs).Get(k)); return nil })
		return v
	}
	b1 := saved(dekKey("b", 1))
	copyValue(dekKey("a", 1), dekKey("b", 1))
	if _, _, err := s.UnwrapKey(ctx, "b", 1); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("DEK moved to another key: %v", err)
	}
	if err := s.Check(ctx); !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), `"b" version 1`) {
		t.Fatalf("Check after move: %v", err)
	}
	e.raw(t, func(tx *bolt.Tx) error { return tx.Bucket(bucketDEKs).Put(dekKey("b", 1), b1) })
	if _, _, err := s.UnwrapKey(ctx, "b", 1); err != nil {
		t.Fatalf("restored value: %v", err)
	}
	// a/1 → a/2: same key, another version.
	copyValue(dekKey("a", 1), dekKey("a", 2))
	if _, _, err := s.UnwrapKey(ctx, "a", 2); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("DEK moved to another version: %v", err)
	}
	// KEK check value moved into a DEK slot, and a flipped byte.
	e.raw(t, func(tx *bolt.Tx) error {
		return tx.Bucket(bucketDEKs).Put(dekKey("a", 1), clone(tx.Bucket(bucketMeta).Get(metaKEKCheck)))
	})
	if _, _, err := s.UnwrapKey(ctx, "a", 1); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("KEK check moved into DEK slot: %v", err)
	}
	e.raw(t, func(tx *bolt.Tx) error {
		v := clone(tx.Bucket(bucketDEKs).Get(dekKey("b", 1)))
		v[len(v)/2] ^= 1
		return tx.Bucket(bucketDEKs).Put(dekKey("b", 1), v)
	})
	if _, _, err := s.UnwrapKey(ctx, "b", 1); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("flipped byte: %v", err)
	}
	// Open refuses the database.
	if err := e.reopen(t); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("reopen tampered database: %v", err)
	}
}

func TestCheckInvariants(t *testing.T) {
	cases := map[string]func(tx *bolt.Tx) error{
		"orphan DEK": func(tx *bolt.Tx) error {
			return tx.Bucket(bucketDEKs).Put(dekKey("ghost", 1), []byte("x"))
		},
		"missing DEK": func(tx *bolt.Tx) error {
			return tx.Bucket(bucketDEKs).Delete(dekKey("k", 1))
		},
		"primary missing": func(tx *bolt.Tx) error {
			k, _ := getKey(tx, "k")
			k.Primary = 7
			return putKey(tx, &k)
		},
		"metadata under another id": func(tx *bolt.Tx) error {
			return tx.Bucket(bucketKeys).Put([]byte("other"), tx.Bucket(bucketKeys).Get([]byte("k")))
		},
		"metadata not JSON": func(tx *bolt.Tx) error {
			return tx.Bucket(bucketKeys).Put([]byte("k"), []byte("{"))
		},
		"policy gap": func(tx *bolt.Tx) error {
			return tx.Bucket(bucketPolicies).Delete(dekKey("k", 1))
		},
		"audit head": func(tx *bolt.Tx) error {
			v := clone(tx.Bucket(bucketMeta).Get(metaAuditHead))
			v[10] ^= 1
			return tx.Bucket(bucketMeta).Put(metaAuditHead, v)
		},
		"bucket missing": func(tx *bolt.Tx) error { return tx.DeleteBucket(bucketPolicies) },
	}
	for name, tamper := range cases {
		t.Run(name, func(t *testing.T) {
			e := newEnv(t)
			if _, err := e.s.CreateKey(ctx, "k", KeyOptions{}); err != nil {
				t.Fatal(err)
			}
			if _, err := e.s.PutPolicy(ctx, "k", []byte("p")); err != nil {
				t.Fatal(err)
			}
			if _, err := e.s.AppendAudit(ctx, entry("r1")); err != nil {
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

// TestNoDEKInFile: neither raw nor encoded DEK bytes appear anywhere in the
// database file, for generated and imported keys, live and destroyed, and a
// single destroyed version's sealed bytes are gone from the B+tree.
func TestNoDEKInFile(t *testing.T) {
	e := newEnv(t)
	s := e.s
	known := bytes.Repeat([]byte("K3y!"), 8)
	if _, err := s.ImportKey(ctx, "imported", known, KeyOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.ImportVersion(ctx, "imported", bytes.Repeat([]byte{0xd7}, 32)); err != nil {
		t.Fatal(err)
	}
	var deks [][]byte
	deks = append(deks, known, bytes.Repeat([]byte{0xd7}, 32))
	for _, id := range []string{"gen1", "gen2", "shredded", "partial"} {
		if _, err := s.CreateKey(ctx, id, KeyOptions{}); err != nil {
			t.Fatal(err)
		}
		if _, err := s.RotateKey(ctx, id); err != nil {
			t.Fatal(err)
		}
		for v := uint32(1); v <= 2; v++ {
			d, _, err := s.UnwrapKey(ctx, id, v)
			if err != nil {
				t.Fatal(err)
			}
			deks = append(deks, d)
		}
	}
	if _, err := s.DestroyKey(ctx, "shredded"); err != nil {
		t.Fatal(err)
	}
	sealedPartial1 := e.sealedOf(t, "partial", 1)
	if _, err := s.DestroyVersion(ctx, "partial", 1); err != nil {
		t.Fatal(err)
	}
	if e.sealedOf(t, "partial", 1) != nil || e.liveTreeContains(t, sealedPartial1) {
		t.Fatal("the sealed DEK of a destroyed version is still in the B+tree")
	}
	e.close(t)
	file, err := os.ReadFile(e.path)
	if err != nil {
		t.Fatal(err)
	}
	if len(file) == 0 {
		t.Fatal("empty file")
	}
	for i, d := range deks {
		for _, enc := range [][]byte{
			d, d[:16], d[16:],
			[]byte(hex.EncodeToString(d)), []byte(strings.ToUpper(hex.EncodeToString(d))),
			[]byte(base64.StdEncoding.EncodeToString(d)), []byte(base64.RawURLEncoding.EncodeToString(d)),
		} {
			if bytes.Contains(file, enc) {
				t.Fatalf("DEK %d found in the database file in encoding %q…", i, enc[:8])
			}
		}
	}
}

func TestConcurrentKeys(t *testing.T) {
	e := newEnv(t)
	s := e.s
	const workers, perWorker = 16, 12
	if _, err := s.CreateKey(ctx, "shared", KeyOptions{}); err != nil {
		t.Fatal(err)
	}
	errs := make(chan error, workers*perWorker*4)
	done := make(chan struct{})
	for w := range workers {
		go func() {
			defer func() { done <- struct{}{} }()
			for i := range perWorker {
				id := "w" + string(rune('a'+w)) + "-" + string(rune('a'+i))
				if _, err := s.CreateKey(ctx, id, KeyOptions{}); err != nil {
					errs <- err
				}
				// Everyone races to create the same id: exactly one wins.
				if _, err := s.CreateKey(ctx, "race-"+string(rune('a'+i)), KeyOptions{}); err != nil && !errors.Is(err, ErrKeyExists) {
					errs <- err
				}
				if _, err := s.RotateKey(ctx, "shared"); err != nil {
					errs <- err
				}
				if _, err := s.AppendAudit(ctx, entry(id)); err != nil {
					errs <- err
				}
				if _, _, err := s.UnwrapKey(ctx, "shared", 0); err != nil {
					errs <- err
				}
			}
		}()
	}
	for range workers {
		<-done
	}
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	keys, err := s.ListKeys(ctx, "", MaxListLimit)
	if err != nil {
		t.Fatal(err)
	}
	if want := 1 + workers*perWorker + perWorker; len(keys) != want {
		t.Fatalf("%d keys, want %d", len(keys), want)
	}
	shared, _ := s.GetKey(ctx, "shared")
	if want := 1 + workers*perWorker; len(shared.Versions) != want || int(shared.Primary) != want {
		t.Fatalf("shared key has %d versions, primary %d, want %d", len(shared.Versions), shared.Primary, want)
	}
	rep, err := s.VerifyAudit(ctx)
	if err != nil || rep.Records != workers*perWorker {
		t.Fatalf("VerifyAudit: %+v %v", rep, err)
	}
	if err := e.reopen(t); err != nil {
		t.Fatal(err)
	}
}

func FuzzRecordKey(f *testing.F) {
	f.Add("key", uint32(1))
	f.Add("a.b-c_D", uint32(0xffffffff))
	f.Fuzz(func(t *testing.T, id string, v uint32) {
		gotID, gotV, ok := splitRecordKey(dekKey(id, v))
		if valid := ValidateKeyID(id) == nil; ok != valid {
			t.Fatalf("split ok=%v for id valid=%v", ok, valid)
		}
		if ok && (gotID != id || gotV != v) {
			t.Fatalf("round trip %q %d → %q %d", id, v, gotID, gotV)
		}
		// Any byte string: no panic.
		splitRecordKey([]byte(id))
	})
}
