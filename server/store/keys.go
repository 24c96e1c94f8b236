package store

import (
	"context"
	"crypto/subtle"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"time"
	"unicode/utf8"

	bolt "go.etcd.io/bbolt"

	"github.com/cml-project/cml/server/kek"
)

// DEKSize is the size of every data-encryption key: 256 bits.
const DEKSize = 32

// Limits on key metadata.
const (
	MaxKeyIDLen      = 128
	MaxDescription   = 1024
	MaxLabels        = 64
	MaxLabelKeyLen   = 63
	MaxLabelValueLen = 256
	MaxVersions      = 1000
	DefaultListLimit = 100
	MaxListLimit     = 1000
)

// State is the state of a key or of one of its versions.
type State string

// States. A key is enabled or disabled by DisableKey/EnableKey; a version by
// DisableVersion/EnableVersion. Destroying a key destroys all its versions,
// DestroyVersion one version that is not primary; both are final.
const (
	StateEnabled   State = "enabled"
	StateDisabled  State = "disabled"
	StateDestroyed State = "destroyed"
)

// Origin says where a version's bytes came from.
type Origin string

// Origins.
const (
	OriginGenerated Origin = "generated"
	OriginImported  Origin = "imported"
)

// Version is the metadata of one key version. It never holds key bytes.
type Version struct {
	Version uint32    `json:"version"`
	State   State     `json:"state"`
	Origin  Origin    `json:"origin"`
	Created time.Time `json:"created"`
	Updated time.Time `json:"updated"`
}

// Key is the metadata of a key. It never holds key bytes. It is also the
// stored JSON form of bucket "keys".
type Key struct {
	ID          string            `json:"id"`
	Description string            `json:"description,omitempty"`
	Labels      map[string]string `json:"labels,omitempty"`
	State       State             `json:"state"`
	// Primary is the version new encryptions use: the last one added.
	Primary  uint32    `json:"primary"`
	Versions []Version `json:"versions"` // ascending, Versions[i].Version == i+1
	// PolicyVersion is the latest policy version, 0 if none was written.
	PolicyVersion uint32    `json:"policy_version,omitempty"`
	Created       time.Time `json:"created"`
	Updated       time.Time `json:"updated"`
	Destroyed     time.Time `json:"destroyed,omitzero"`
}

// version returns the metadata of version v, or nil.
func (k *Key) version(v uint32) *Version {
	if v == 0 || uint64(v) > uint64(len(k.Versions)) {
		return nil
	}
	return &k.Versions[v-1]
}

// KeyOptions are the descriptive fields of a new key.
type KeyOptions struct {
	Description string
	Labels      map[string]string
}

// ValidateKeyID checks the key id syntax [A-Za-z0-9._-]{1,128}, shared with
// the encrypted model format.
func ValidateKeyID(id string) error {
	if len(id) == 0 || len(id) > MaxKeyIDLen {
		return fmt.Errorf("%w: key id is %d bytes, want 1 to %d", ErrInvalidArgument, len(id), MaxKeyIDLen)
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '.' || c == '_' || c == '-') {
			return fmt.Errorf("%w: key id %q: byte %d is not in [A-Za-z0-9._-]", ErrInvalidArgument, id, i)
		}
	}
	return nil
}

func (o *KeyOptions) validate() error {
	if len(o.Description) > MaxDescription || !utf8.ValidString(o.Description) {
		return fmt.Errorf("%w: description: want at most %d bytes of UTF-8", ErrInvalidArgument, MaxDescription)
	}
	if len(o.Labels) > MaxLabels {
		return fmt.Errorf("%w: %d labels, at most %d", ErrInvalidArgument, len(o.Labels), MaxLabels)
	}
	for k, v := range o.Labels {
		if len(k) == 0 || len(k) > MaxLabelKeyLen {
			return fmt.Errorf("%w: label name %q: want 1 to %d bytes", ErrInvalidArgument, k, MaxLabelKeyLen)
		}
		for i := 0; i < len(k); i++ {
			c := k[i]
			if !('a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '.' || c == '_' || c == '-' || c == '/') {
				return fmt.Errorf("%w: label name %q: want [a-z0-9._/-]", ErrInvalidArgument, k)
			}
		}
		if len(v) > MaxLabelValueLen || !utf8.ValidString(v) {
			return fmt.Errorf("%w: label %q: value wants at most %d bytes of UTF-8", ErrInvalidArgument, k, MaxLabelValueLen)
		}
	}
	return nil
}

// CreateKey creates key id with version 1 holding 32 fresh random bytes from
// Options.Rand. It fails with ErrKeyExists if id exists and ErrKeyDestroyed
// if id was destroyed: an id is never reused.
func (s *Store) CreateKey(ctx context.Context, id string, opts KeyOptions) (Key, error) {
	dek := make([]byte, DEKSize)
	defer clear(dek)
	if _, err := io.ReadFull(s.rand, dek); err != nil {
		return Key{}, fmt.Errorf("store: read random DEK: %w", err)
	}
	return s.createKey(ctx, id, dek, OriginGenerated, opts)
}

// ImportKey creates key id with version 1 holding the caller's 32 bytes.
// Errors as CreateKey; an all-zero DEK is refused. dek is not retained.
func (s *Store) ImportKey(ctx context.Context, id string, dek []byte, opts KeyOptions) (Key, error) {
	if err := checkDEK(dek); err != nil {
		return Key{}, err
	}
	return s.createKey(ctx, id, dek, OriginImported, opts)
}

func checkDEK(dek []byte) error {
	if len(dek) != DEKSize {
		return fmt.Errorf("%w: DEK is %d bytes, want %d", ErrInvalidArgument, len(dek), DEKSize)
	}
	if subtle.ConstantTimeCompare(dek, make([]byte, DEKSize)) == 1 {
		return fmt.Errorf("%w: DEK is all zero", ErrInvalidArgument)
	}
	return nil
}

func (s *Store) createKey(ctx context.Context, id string, dek []byte, origin Origin, opts KeyOptions) (Key, error) {
	if err := ValidateKeyID(id); err != nil {
		return Key{}, err
	}
	if err := opts.validate(); err != nil {
		return Key{}, err
	}
	sealed, err := s.kek.Seal(ctx, dek, aad(kindDEK, id, 1))
	if err != nil {
		return Key{}, fmt.Errorf("store: seal DEK of key %q: %w", id, err)
	}
	var out Key
	err = s.batch(ctx, func(tx *bolt.Tx) error {
		kb := tx.Bucket(bucketKeys)
		if v := kb.Get([]byte(id)); v != nil {
			old, err := decodeKey(id, v)
			if err != nil {
				return err
			}
			if old.State == StateDestroyed {
				return fmt.Errorf("%w: %q was destroyed at %s; key ids are never reused", ErrKeyDestroyed, id, old.Destroyed.Format(time.RFC3339))
			}
			return fmt.Errorf("%w: %q", ErrKeyExists, id)
		}
		now := s.timestamp()
		k := Key{
			ID:          id,
			Description: opts.Description,
			Labels:      maps.Clone(opts.Labels),
			State:       StateEnabled,
			Primary:     1,
			Versions:    []Version{{Version: 1, State: StateEnabled, Origin: origin, Created: now, Updated: now}},
			Created:     now,
			Updated:     now,
		}
		if err := putKey(tx, &k); err != nil {
			return err
		}
		if err := tx.Bucket(bucketDEKs).Put(dekKey(id, 1), sealed); err != nil {
			return err
		}
		out = k
		return nil
	})
	if err != nil {
		return Key{}, err
	}
	return out, nil
}

// RotateKey adds a version with 32 fresh random bytes and makes it primary.
// Earlier versions keep their state.
func (s *Store) RotateKey(ctx context.Context, id string) (Key, error) {
	dek := make([]byte, DEKSize)
	defer clear(dek)
	if _, err := io.ReadFull(s.rand, dek); err != nil {
		return Key{}, fmt.Errorf("store: read random DEK: %w", err)
	}
	return s.addVersion(ctx, id, dek, OriginGenerated)
}

// ImportVersion adds a version holding the caller's 32 bytes and makes it
// primary, like RotateKey.
func (s *Store) ImportVersion(ctx context.Context, id string, dek []byte) (Key, error) {
	if err := checkDEK(dek); err != nil {
		return Key{}, err
	}
	return s.addVersion(ctx, id, dek, OriginImported)
}

// addVersion seals outside the write transaction (a KEK may be a remote
// KMS) for the version number read just before, so additions of versions
// are serialised by rotateMu; the transaction re-checks the number.
func (s *Store) addVersion(ctx context.Context, id string, dek []byte, origin Origin) (Key, error) {
	s.rotateMu.Lock()
	defer s.rotateMu.Unlock()
	cur, err := s.GetKey(ctx, id)
	if err != nil {
		return Key{}, err
	}
	if cur.State == StateDestroyed {
		return Key{}, fmt.Errorf("%w: %q", ErrKeyDestroyed, id)
	}
	next := uint32(len(cur.Versions)) + 1
	if next > MaxVersions {
		return Key{}, fmt.Errorf("%w: key %q has %d versions, the maximum", ErrInvalidArgument, id, MaxVersions)
	}
	sealed, err := s.kek.Seal(ctx, dek, aad(kindDEK, id, next))
	if err != nil {
		return Key{}, fmt.Errorf("store: seal DEK of key %q version %d: %w", id, next, err)
	}
	var out Key
	err = s.batch(ctx, func(tx *bolt.Tx) error {
		k, err := getKey(tx, id)
		if err != nil {
			return err
		}
		if k.State == StateDestroyed {
			return fmt.Errorf("%w: %q", ErrKeyDestroyed, id)
		}
		if uint32(len(k.Versions))+1 != next {
			// Only addVersion adds versions, under rotateMu, and the file
			// lock excludes other processes.
			return fmt.Errorf("%w: key %q gained a version during rotation", ErrCorrupt, id)
		}
		now := s.timestamp()
		k.Versions = append(k.Versions, Version{Version: next, State: StateEnabled, Origin: origin, Created: now, Updated: now})
		k.Primary = next
		k.Updated = now
		if err := putKey(tx, &k); err != nil {
			return err
		}
		if err := tx.Bucket(bucketDEKs).Put(dekKey(id, next), sealed); err != nil {
			return err
		}
		out = k
		return nil
	})
	if err != nil {
		return Key{}, err
	}
	return out, nil
}

// GetKey returns the metadata of key id, including a destroyed key's
// tombstone.
func (s *Store) GetKey(ctx context.Context, id string) (Key, error) {
	if err := ValidateKeyID(id); err != nil {
		return Key{}, err
	}
	var k Key
	err := s.view(ctx, func(tx *bolt.Tx) error {
		var err error
		k, err = getKey(tx, id)
		return err
	})
	return k, err
}

// ListKeys returns up to limit keys (DefaultListLimit if limit ≤ 0, at most
// MaxListLimit) with ids greater than after, in id order. Pass the last id
// returned as after to get the next page.
func (s *Store) ListKeys(ctx context.Context, after string, limit int) ([]Key, error) {
	limit = listLimit(limit)
	var out []Key
	err := s.view(ctx, func(tx *bolt.Tx) error {
		out = nil
		c := tx.Bucket(bucketKeys).Cursor()
		k, v := c.Seek([]byte(after))
		if k != nil && string(k) == after {
			k, v = c.Next()
		}
		for ; k != nil && len(out) < limit; k, v = c.Next() {
			key, err := decodeKey(string(k), v)
			if err != nil {
				return err
			}
			out = append(out, key)
		}
		return nil
	})
	return out, err
}

func listLimit(n int) int {
	if n <= 0 {
		return DefaultListLimit
	}
	return min(n, MaxListLimit)
}

// DisableKey disables the whole key: UnwrapKey refuses every version with
// ErrKeyDisabled until EnableKey. Version states are kept.
func (s *Store) DisableKey(ctx context.Context, id string) (Key, error) {
	return s.setKeyState(ctx, id, StateDisabled)
}

// EnableKey undoes DisableKey.
func (s *Store) EnableKey(ctx context.Context, id string) (Key, error) {
	return s.setKeyState(ctx, id, StateEnabled)
}

func (s *Store) setKeyState(ctx context.Context, id string, st State) (Key, error) {
	return s.mutateKey(ctx, id, func(_ *bolt.Tx, k *Key, now time.Time) error {
		k.State = st
		return nil
	})
}

// DisableVersion disables one version: UnwrapKey refuses it with
// ErrKeyDisabled. Disabling the primary version is allowed (it stops
// releases of the current key until EnableVersion or a rotation).
func (s *Store) DisableVersion(ctx context.Context, id string, version uint32) (Key, error) {
	return s.setVersionState(ctx, id, version, StateDisabled)
}

// EnableVersion undoes DisableVersion. Both refuse a destroyed version
// (ErrKeyDestroyed).
func (s *Store) EnableVersion(ctx context.Context, id string, version uint32) (Key, error) {
	return s.setVersionState(ctx, id, version, StateEnabled)
}

func (s *Store) setVersionState(ctx context.Context, id string, version uint32, st State) (Key, error) {
	return s.mutateKey(ctx, id, func(_ *bolt.Tx, k *Key, now time.Time) error {
		v := k.version(version)
		if v == nil {
			return fmt.Errorf("%w: key %q has no version %d", ErrVersionNotFound, id, version)
		}
		if v.State == StateDestroyed {
			return fmt.Errorf("%w: version %d of key %q", ErrKeyDestroyed, version, id)
		}
		v.State = st
		v.Updated = now
		return nil
	})
}

// DestroyKey erases the sealed bytes of every version of key id
// (crypto-shredding) and keeps its metadata as a tombstone in state
// destroyed, so the id is never reused. Destroying a destroyed key returns
// the tombstone and no error. See docs/keystore.md for what remains in the
// file's free pages.
func (s *Store) DestroyKey(ctx context.Context, id string) (Key, error) {
	k, err := s.mutateKey(ctx, id, func(tx *bolt.Tx, k *Key, now time.Time) error {
		d := tx.Bucket(bucketDEKs)
		for i := range k.Versions {
			if err := d.Delete(dekKey(id, k.Versions[i].Version)); err != nil {
				return err
			}
			k.Versions[i].State = StateDestroyed
			k.Versions[i].Updated = now
		}
		k.State = StateDestroyed
		k.Destroyed = now
		return nil
	})
	if errors.Is(err, ErrKeyDestroyed) {
		return s.GetKey(ctx, id)
	}
	return k, err
}

// DestroyVersion erases the sealed bytes of one version of key id
// (crypto-shredding) and keeps its metadata in state destroyed; UnwrapKey
// refuses it with ErrKeyDestroyed and the other versions are unaffected.
// The primary version cannot be destroyed (ErrPrimaryVersion): the key
// would be left with no version for new encryptions, and a later rotation
// would silently make a new one. Rotate first so another version is
// primary, or destroy the whole key with DestroyKey. A version in any other
// state, of an enabled or a disabled key, can be destroyed. Destroying a
// destroyed version, or any version of a destroyed key, returns the key
// unchanged and no error. Version 0 is refused (ErrInvalidArgument): it
// would mean the primary elsewhere; a missing version is
// ErrVersionNotFound.
func (s *Store) DestroyVersion(ctx context.Context, id string, version uint32) (Key, error) {
	if err := ValidateKeyID(id); err != nil {
		return Key{}, err
	}
	if version == 0 {
		return Key{}, fmt.Errorf("%w: version 0: name the version of key %q to destroy", ErrInvalidArgument, id)
	}
	var out Key
	err := s.batch(ctx, func(tx *bolt.Tx) error {
		k, err := getKey(tx, id)
		if err != nil {
			return err
		}
		v := k.version(version)
		switch {
		case v == nil:
			return fmt.Errorf("%w: key %q has no version %d", ErrVersionNotFound, id, version)
		case v.State == StateDestroyed:
			// Also every version of a destroyed key: nothing to write.
			out = k
			return nil
		case version == k.Primary:
			return fmt.Errorf("%w: version %d of key %q is primary; rotate the key first so another version is primary, or destroy the whole key", ErrPrimaryVersion, version, id)
		}
		if err := tx.Bucket(bucketDEKs).Delete(dekKey(id, version)); err != nil {
			return err
		}
		now := s.timestamp()
		v.State = StateDestroyed
		v.Updated = now
		k.Updated = now
		if err := putKey(tx, &k); err != nil {
			return err
		}
		out = k
		return nil
	})
	if err != nil {
		return Key{}, err
	}
	return out, nil
}

// mutateKey applies mut to key id in a write transaction, refusing a
// destroyed key, and stores the result with Updated = now.
func (s *Store) mutateKey(ctx context.Context, id string, mut func(tx *bolt.Tx, k *Key, now time.Time) error) (Key, error) {
	if err := ValidateKeyID(id); err != nil {
		return Key{}, err
	}
	var out Key
	err := s.batch(ctx, func(tx *bolt.Tx) error {
		k, err := getKey(tx, id)
		if err != nil {
			return err
		}
		if k.State == StateDestroyed {
			return fmt.Errorf("%w: %q", ErrKeyDestroyed, id)
		}
		now := s.timestamp()
		if err := mut(tx, &k, now); err != nil {
			return err
		}
		k.Updated = now
		if err := putKey(tx, &k); err != nil {
			return err
		}
		out = k
		return nil
	})
	if err != nil {
		return Key{}, err
	}
	return out, nil
}

// UnwrapKey returns the 32 bytes of version of key id (version 0 means the
// primary version) and the version returned. It refuses a missing key
// (ErrKeyNotFound) or version (ErrVersionNotFound), a destroyed key or
// version (ErrKeyDestroyed, which wins over disabled: it is final), and a
// disabled key or version (ErrKeyDisabled). A
// sealed value that does not open under the KEK for this key and version —
// corrupted, or copied from another record — is ErrCorrupt. The caller owns
// the returned slice and should clear it when done.
func (s *Store) UnwrapKey(ctx context.Context, id string, version uint32) ([]byte, uint32, error) {
	if err := ValidateKeyID(id); err != nil {
		return nil, 0, err
	}
	var sealed []byte
	err := s.view(ctx, func(tx *bolt.Tx) error {
		k, err := s.keys.get(tx, id) // shared: read only
		if err != nil {
			return err
		}
		if k.State == StateDestroyed {
			return fmt.Errorf("%w: %q", ErrKeyDestroyed, id)
		}
		if version == 0 {
			version = k.Primary
		}
		v := k.version(version)
		switch {
		case v == nil:
			return fmt.Errorf("%w: key %q has no version %d", ErrVersionNotFound, id, version)
		case v.State == StateDestroyed:
			return fmt.Errorf("%w: version %d of key %q", ErrKeyDestroyed, version, id)
		case k.State != StateEnabled:
			return fmt.Errorf("%w: %q", ErrKeyDisabled, id)
		case v.State != StateEnabled:
			return fmt.Errorf("%w: version %d of key %q is %s", ErrKeyDisabled, version, id, v.State)
		}
		sealed = clone(tx.Bucket(bucketDEKs).Get(dekKey(id, version)))
		if sealed == nil {
			return fmt.Errorf("%w: sealed DEK of key %q version %d is missing", ErrCorrupt, id, version)
		}
		return nil
	})
	if err != nil {
		return nil, 0, err
	}
	dek, err := s.openDEK(ctx, id, version, sealed)
	if err != nil {
		return nil, 0, err
	}
	return dek, version, nil
}

func (s *Store) openDEK(ctx context.Context, id string, version uint32, sealed []byte) ([]byte, error) {
	dek, err := s.kek.Open(ctx, sealed, aad(kindDEK, id, version))
	if errors.Is(err, kek.ErrAuth) {
		return nil, fmt.Errorf("%w: sealed DEK of key %q version %d does not open (corrupted, or moved from another record)", ErrCorrupt, id, version)
	}
	if err != nil {
		return nil, fmt.Errorf("store: open DEK of key %q version %d: %w", id, version, err)
	}
	if len(dek) != DEKSize {
		clear(dek)
		return nil, fmt.Errorf("%w: DEK of key %q version %d has the wrong size", ErrCorrupt, id, version)
	}
	return dek, nil
}

// getKey reads and decodes key id inside tx.
func getKey(tx *bolt.Tx, id string) (Key, error) {
	v := tx.Bucket(bucketKeys).Get([]byte(id))
	if v == nil {
		return Key{}, fmt.Errorf("%w: %q", ErrKeyNotFound, id)
	}
	return decodeKey(id, v)
}

func decodeKey(id string, v []byte) (Key, error) {
	var k Key
	if err := json.Unmarshal(v, &k); err != nil {
		return Key{}, fmt.Errorf("%w: metadata of key %q does not decode: %v", ErrCorrupt, id, err)
	}
	if k.ID != id {
		return Key{}, fmt.Errorf("%w: metadata stored under key %q names key %q", ErrCorrupt, id, k.ID)
	}
	return k, nil
}

func putKey(tx *bolt.Tx, k *Key) error {
	b, err := json.Marshal(k)
	if err != nil {
		return fmt.Errorf("store: encode key %q: %w", k.ID, err)
	}
	return tx.Bucket(bucketKeys).Put([]byte(k.ID), b)
}

// dekKey is the bbolt key of a sealed DEK, also used for policies:
// keyID ‖ 0x00 ‖ u32 version (big-endian). 0x00 cannot occur in a key id, so
// the encoding is unambiguous and one key's records sort together.
func dekKey(id string, version uint32) []byte {
	b := make([]byte, 0, len(id)+5)
	b = append(b, id...)
	b = append(b, 0)
	return binary.BigEndian.AppendUint32(b, version)
}

// splitRecordKey parses a dekKey.
func splitRecordKey(b []byte) (string, uint32, bool) {
	if len(b) < 6 || b[len(b)-5] != 0 {
		return "", 0, false
	}
	id := string(b[:len(b)-5])
	if ValidateKeyID(id) != nil {
		return "", 0, false
	}
	return id, binary.BigEndian.Uint32(b[len(b)-4:]), true
}
