package store

import (
	"context"
	"encoding/binary"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"
)

// MaxPolicySize bounds one serialized policy.
const MaxPolicySize = 1 << 20

// Policy is one stored version of a key's release policy: the serialized
// policy message, opaque to the store. Policies are not secret and are
// stored unsealed.
type Policy struct {
	KeyID   string
	Version uint32 // 1, 2, … per key
	Created time.Time
	Bytes   []byte
}

// PutPolicy stores policy as the next version of key id's policy and
// returns it. The key must exist and not be destroyed.
func (s *Store) PutPolicy(ctx context.Context, id string, policy []byte) (Policy, error) {
	if err := ValidateKeyID(id); err != nil {
		return Policy{}, err
	}
	if len(policy) == 0 || len(policy) > MaxPolicySize {
		return Policy{}, fmt.Errorf("%w: policy for key %q is %d bytes, want 1 to %d", ErrInvalidArgument, id, len(policy), MaxPolicySize)
	}
	policy = clone(policy) // bbolt keeps a reference until commit
	var out Policy
	err := s.batch(ctx, func(tx *bolt.Tx) error {
		k, err := getKey(tx, id)
		if err != nil {
			return err
		}
		if k.State == StateDestroyed {
			return fmt.Errorf("%w: %q: its policy cannot change", ErrKeyDestroyed, id)
		}
		now := s.timestamp()
		k.PolicyVersion++
		k.Updated = now
		if err := putKey(tx, &k); err != nil {
			return err
		}
		if err := tx.Bucket(bucketPolicies).Put(dekKey(id, k.PolicyVersion), encodePolicy(now, policy)); err != nil {
			return err
		}
		out = Policy{KeyID: id, Version: k.PolicyVersion, Created: now, Bytes: policy}
		return nil
	})
	if err != nil {
		return Policy{}, err
	}
	return out, nil
}

// GetPolicy returns version of key id's policy; version 0 means the latest.
// It returns ErrKeyNotFound for an unknown key and ErrPolicyNotFound when
// the key has no such policy version. A destroyed key's policies stay
// readable as history.
func (s *Store) GetPolicy(ctx context.Context, id string, version uint32) (Policy, error) {
	if err := ValidateKeyID(id); err != nil {
		return Policy{}, err
	}
	var out Policy
	err := s.view(ctx, func(tx *bolt.Tx) error {
		k, err := s.keys.get(tx, id) // shared: read only
		if err != nil {
			return err
		}
		if version == 0 {
			version = k.PolicyVersion
		}
		if version == 0 || version > k.PolicyVersion {
			return fmt.Errorf("%w: key %q has no policy version %d", ErrPolicyNotFound, id, version)
		}
		out, err = decodePolicy(id, version, tx.Bucket(bucketPolicies).Get(dekKey(id, version)))
		return err
	})
	return out, err
}

// ListPolicies returns every policy version of key id, oldest first.
func (s *Store) ListPolicies(ctx context.Context, id string) ([]Policy, error) {
	if err := ValidateKeyID(id); err != nil {
		return nil, err
	}
	var out []Policy
	err := s.view(ctx, func(tx *bolt.Tx) error {
		k, err := getKey(tx, id)
		if err != nil {
			return err
		}
		out = make([]Policy, 0, k.PolicyVersion)
		b := tx.Bucket(bucketPolicies)
		for v := uint32(1); v <= k.PolicyVersion; v++ {
			p, err := decodePolicy(id, v, b.Get(dekKey(id, v)))
			if err != nil {
				return err
			}
			out = append(out, p)
		}
		return nil
	})
	return out, err
}

// encodePolicy is the stored value: i64 created (Unix ns, big-endian) ‖ bytes.
func encodePolicy(created time.Time, policy []byte) []byte {
	b := binary.BigEndian.AppendUint64(make([]byte, 0, 8+len(policy)), uint64(created.UnixNano()))
	return append(b, policy...)
}

func decodePolicy(id string, version uint32, v []byte) (Policy, error) {
	if len(v) < 9 {
		return Policy{}, fmt.Errorf("%w: policy version %d of key %q is missing or truncated", ErrCorrupt, version, id)
	}
	return Policy{
		KeyID:   id,
		Version: version,
		Created: time.Unix(0, int64(binary.BigEndian.Uint64(v))).UTC(),
		Bytes:   clone(v[8:]),
	}, nil
}
