package store

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"

	bolt "go.etcd.io/bbolt"

	"github.com/cml-project/cml/server/audit"
)

// maxProblems bounds how many problems Check reports.
const maxProblems = 10

type sealedDEK struct {
	id      string
	version uint32
	sealed  []byte
}

// Check verifies the database; Open runs it. It checks bbolt's page
// structure (tx.Check), that the KEK check value opens, and the keystore's
// invariants: every key's metadata decodes under its own id; versions are
// numbered 1…n with a primary among them, which is destroyed only if the
// whole key is; enabled and disabled versions have a sealed DEK that opens
// under the KEK for exactly that key and version, and destroyed ones
// (DestroyVersion, or every version of a destroyed key) have none; no sealed
// DEK or policy belongs to no key;
// policy versions are 1…latest; the audit head is authenticated and matches
// the last record. It does not walk the whole audit chain (VerifyAudit
// does). The error wraps ErrCorrupt (or ErrWrongKEK) and lists up to ten
// problems.
func (s *Store) Check(ctx context.Context) error {
	var problems []error
	report := func(format string, args ...any) {
		if len(problems) < maxProblems {
			problems = append(problems, fmt.Errorf(format, args...))
		}
	}
	var check []byte
	var deks []sealedDEK
	err := s.view(ctx, func(tx *bolt.Tx) error {
		problems, deks = nil, nil
		for err := range tx.Check() {
			report("bbolt: %v", err)
		}
		for _, name := range allBuckets {
			if tx.Bucket(name) == nil {
				report("bucket %q missing", name)
			}
		}
		if len(problems) > 0 {
			return nil
		}
		check = clone(tx.Bucket(bucketMeta).Get(metaKEKCheck))
		deks = checkKeys(tx, report)
		checkAuditHead(tx, s.macKey, report)
		return nil
	})
	if err != nil {
		return err
	}
	if len(problems) == 0 {
		if err := openKEKCheck(ctx, s.kek, check); err != nil {
			return err
		}
		for _, d := range deks {
			dek, err := s.openDEK(ctx, d.id, d.version, d.sealed)
			clear(dek)
			if err != nil {
				report("%v", err)
			}
		}
	}
	if len(problems) > 0 {
		return fmt.Errorf("%w: %w", ErrCorrupt, errors.Join(problems...))
	}
	return nil
}

// checkKeys checks keys, sealed DEKs and policies, and returns the sealed
// DEKs (copied) for the caller to open outside the transaction.
func checkKeys(tx *bolt.Tx, report func(string, ...any)) []sealedDEK {
	keys := map[string]*Key{}
	_ = tx.Bucket(bucketKeys).ForEach(func(k, v []byte) error {
		id := string(k)
		if err := ValidateKeyID(id); err != nil {
			report("keys: %v", err)
			return nil
		}
		key, err := decodeKey(id, v)
		if err != nil {
			report("keys: %v", err)
			return nil
		}
		switch key.State {
		case StateEnabled, StateDisabled, StateDestroyed:
		default:
			report("key %q: unknown state %q", id, key.State)
		}
		if p := key.version(key.Primary); p == nil {
			report("key %q: primary version %d does not exist (%d versions)", id, key.Primary, len(key.Versions))
		} else if p.State == StateDestroyed && key.State != StateDestroyed {
			report("key %q (%s): primary version %d is destroyed", id, key.State, key.Primary)
		}
		for i, v := range key.Versions {
			if v.Version != uint32(i+1) {
				report("key %q: version %d listed at position %d", id, v.Version, i+1)
			}
			okState := v.State == StateEnabled || v.State == StateDisabled || v.State == StateDestroyed
			if key.State == StateDestroyed {
				okState = v.State == StateDestroyed
			}
			if !okState {
				report("key %q (%s): version %d in state %q", id, key.State, v.Version, v.State)
			}
		}
		keys[id] = &key
		return nil
	})

	var deks []sealedDEK
	seen := map[string]int{}
	_ = tx.Bucket(bucketDEKs).ForEach(func(k, v []byte) error {
		id, ver, ok := splitRecordKey(k)
		if !ok {
			report("deks: malformed bucket key %x", k)
			return nil
		}
		key := keys[id]
		if key == nil {
			report("deks: sealed DEK for unknown key %q version %d", id, ver)
			return nil
		}
		if mv := key.version(ver); mv == nil || mv.State == StateDestroyed {
			report("deks: sealed DEK for key %q version %d, which is missing or destroyed", id, ver)
			return nil
		}
		seen[id]++
		deks = append(deks, sealedDEK{id: id, version: ver, sealed: clone(v)})
		return nil
	})
	for id, key := range keys {
		live := 0
		for _, v := range key.Versions {
			if v.State != StateDestroyed {
				live++
			}
		}
		if seen[id] != live {
			report("key %q: %d versions not destroyed but %d sealed DEKs", id, live, seen[id])
		}
	}

	policies := map[string]uint32{}
	_ = tx.Bucket(bucketPolicies).ForEach(func(k, v []byte) error {
		id, ver, ok := splitRecordKey(k)
		if !ok {
			report("policies: malformed bucket key %x", k)
			return nil
		}
		key := keys[id]
		switch {
		case key == nil:
			report("policies: policy for unknown key %q", id)
		case ver != policies[id]+1 || ver > key.PolicyVersion:
			report("key %q: policy version %d out of sequence (latest %d)", id, ver, key.PolicyVersion)
		case len(v) < 9:
			report("key %q: policy version %d truncated", id, ver)
		}
		policies[id] = ver
		return nil
	})
	for id, key := range keys {
		if policies[id] != key.PolicyVersion {
			report("key %q: latest policy version %d but %d stored", id, key.PolicyVersion, policies[id])
		}
	}
	return deks
}

// checkAuditHead authenticates the audit head and compares it with the last
// stored record.
func checkAuditHead(tx *bolt.Tx, macKey []byte, report func(string, ...any)) {
	head, err := decodeHead(macKey, tx.Bucket(bucketMeta).Get(metaAuditHead))
	if err != nil {
		report("%v", err)
		return
	}
	k, v := tx.Bucket(bucketAudit).Cursor().Last()
	if k == nil {
		if head.Seq != 0 {
			report("audit: head says seq %d but the log is empty", head.Seq)
		}
		return
	}
	if len(k) != 8 || binary.BigEndian.Uint64(k) != head.Seq {
		report("audit: last record is at key %x, head says seq %d", k, head.Seq)
		return
	}
	r, err := audit.Decode(v)
	if err != nil {
		report("audit: last record: %v", err)
		return
	}
	if r.Hash != head.Hash {
		report("audit: last record's hash does not match the authenticated head")
	}
}
