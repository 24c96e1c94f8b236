package store

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"

	"github.com/cml-project/cml/server/kek"
)

// File names inside a data directory prepared by Init.
const (
	KEKFileName = "kek.hex"
	DBFileName  = "keystore.db"
)

// formatV1 is the value of meta/format. Open refuses any other.
const formatV1 = "cml-keystore/1"

// Defaults for Options.
const (
	DefaultLockTimeout = time.Second
	DefaultBatchDelay  = time.Millisecond
)

// Sentinel errors. Every error the Store returns for one of these cases wraps
// the sentinel, so callers branch with errors.Is; the message adds the key id
// and version, never key material.
var (
	ErrKeyNotFound     = errors.New("store: key not found")
	ErrKeyExists       = errors.New("store: key already exists")
	ErrKeyDestroyed    = errors.New("store: key destroyed")
	ErrKeyDisabled     = errors.New("store: key disabled")
	ErrPrimaryVersion  = errors.New("store: the primary version cannot be destroyed")
	ErrVersionNotFound = errors.New("store: key version not found")
	ErrPolicyNotFound  = errors.New("store: policy not found")
	ErrInvalidArgument = errors.New("store: invalid argument")
	ErrWrongKEK        = errors.New("store: wrong KEK for this database")
	ErrCorrupt         = errors.New("store: database integrity check failed")
	ErrLocked          = errors.New("store: database is locked by another kbs process")
)

// Bucket names and meta keys; see docs/keystore.md for the layout.
var (
	bucketMeta     = []byte("meta")
	bucketKeys     = []byte("keys")
	bucketDEKs     = []byte("deks")
	bucketPolicies = []byte("policies")
	bucketAudit    = []byte("audit")

	metaFormat      = []byte("format")
	metaCreated     = []byte("created")
	metaKEKCheck    = []byte("kek_check")
	metaAuditMACKey = []byte("audit_mac_key")
	metaAuditHead   = []byte("audit_head")

	allBuckets = [][]byte{bucketMeta, bucketKeys, bucketDEKs, bucketPolicies, bucketAudit}
)

// Options configure Create and Open.
type Options struct {
	// KEK seals and opens every secret. Required.
	KEK kek.Provider
	// Now is the clock for every timestamp the store writes. Required.
	Now func() time.Time
	// Rand is the source of new DEKs and of the audit MAC key; nil means
	// crypto/rand.Reader.
	Rand io.Reader
	// LockTimeout bounds how long Open waits for the file lock held by
	// another process before failing with ErrLocked; 0 means
	// DefaultLockTimeout.
	LockTimeout time.Duration
	// BatchDelay is how long a write waits for others to share its commit
	// (bbolt MaxBatchDelay); 0 means DefaultBatchDelay. About one fsync's
	// duration is best: shorter splits concurrent writers over more commits,
	// longer only adds latency (see docs/keystore.md for measurements).
	BatchDelay time.Duration
}

func (o *Options) setDefaults() error {
	if o.KEK == nil {
		return fmt.Errorf("%w: Options.KEK is required", ErrInvalidArgument)
	}
	if o.Now == nil {
		return fmt.Errorf("%w: Options.Now is required", ErrInvalidArgument)
	}
	if o.Rand == nil {
		o.Rand = rand.Reader
	}
	if o.LockTimeout <= 0 {
		o.LockTimeout = DefaultLockTimeout
	}
	if o.BatchDelay <= 0 {
		o.BatchDelay = DefaultBatchDelay
	}
	return nil
}

// Store is the keystore: versioned DEKs sealed under a KEK, per-key policy
// versions, and the audit chain, in one bbolt file. It is safe for
// concurrent use; writes from concurrent callers share commits.
type Store struct {
	db     *bolt.DB
	kek    kek.Provider
	now    func() time.Time
	rand   io.Reader
	macKey []byte // authenticates the audit head; unsealed at Open

	rotateMu sync.Mutex // serialises RotateKey and ImportVersion
	keys     keyCache   // decoded key metadata for read-only lookups
}

// KEKPath and DBPath name the files of a data directory.
func KEKPath(dataDir string) string { return filepath.Join(dataDir, KEKFileName) }

// DBPath names the database file of a data directory.
func DBPath(dataDir string) string { return filepath.Join(dataDir, DBFileName) }

// Init prepares a data directory, as `kbs init --data-dir D` does: it
// creates D (mode 0700) if needed, a new KEK file D/kek.hex (mode 0600)
// unless opts.KEK is set (for example from CML_KEK), and an empty database
// D/keystore.db sealed under that KEK. It refuses if either file exists and,
// on failure, removes what it created.
func Init(ctx context.Context, dataDir string, opts Options) (err error) {
	kekPath, dbPath := KEKPath(dataDir), DBPath(dataDir)
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		return fmt.Errorf("store: create data directory: %w", err)
	}
	for _, p := range []string{kekPath, dbPath} {
		if opts.KEK != nil && p == kekPath {
			continue
		}
		if _, err := os.Lstat(p); err == nil {
			return fmt.Errorf("store: %s already exists; refusing to initialise over it: %w", p, fs.ErrExist)
		} else if !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("store: %w", err)
		}
	}
	if opts.KEK == nil {
		if err := kek.Init(kekPath); err != nil {
			return fmt.Errorf("store: %w", err)
		}
		defer func() {
			if err != nil {
				os.Remove(kekPath)
			}
		}()
		p, err := kek.LoadFile(kekPath)
		if err != nil {
			return fmt.Errorf("store: %w", err)
		}
		opts.KEK = p
	}
	s, err := Create(ctx, dbPath, opts)
	if err != nil {
		return err
	}
	return s.Close()
}

// Create creates a new, empty database at path (mode 0600) and returns it
// open. It fails if path exists.
func Create(ctx context.Context, path string, opts Options) (_ *Store, err error) {
	if err := opts.setDefaults(); err != nil {
		return nil, err
	}
	macKey := make([]byte, 32)
	if _, err := io.ReadFull(opts.Rand, macKey); err != nil {
		return nil, fmt.Errorf("store: read random audit MAC key: %w", err)
	}
	defer clear(macKey)
	sealedMAC, err := opts.KEK.Seal(ctx, macKey, aad(kindAuditMACKey, "", 0))
	if err != nil {
		return nil, fmt.Errorf("store: seal audit MAC key: %w", err)
	}
	check, err := opts.KEK.Seal(ctx, []byte(kekCheckPlaintext), aad(kindKEKCheck, "", 0))
	if err != nil {
		return nil, fmt.Errorf("store: seal KEK check value: %w", err)
	}

	db, err := bolt.Open(path, 0o600, boltOptions(opts, func(name string, flag int, perm os.FileMode) (*os.File, error) {
		return os.OpenFile(name, flag|os.O_CREATE|os.O_EXCL, perm)
	}))
	if err != nil {
		if errors.Is(err, fs.ErrExist) {
			return nil, fmt.Errorf("store: %s already exists; refusing to create a database over it: %w", path, err)
		}
		return nil, fmt.Errorf("store: create database %s: %w", path, err)
	}
	defer func() {
		if err != nil {
			db.Close()
			os.Remove(path)
		}
	}()
	now := opts.Now().UTC()
	err = db.Update(func(tx *bolt.Tx) error {
		for _, name := range allBuckets {
			if _, err := tx.CreateBucket(name); err != nil {
				return err
			}
		}
		m := tx.Bucket(bucketMeta)
		return errors.Join(
			m.Put(metaFormat, []byte(formatV1)),
			m.Put(metaCreated, []byte(now.Format(time.RFC3339Nano))),
			m.Put(metaKEKCheck, check),
			m.Put(metaAuditMACKey, sealedMAC),
			m.Put(metaAuditHead, encodeHead(macKey, headZero)),
		)
	})
	if err != nil {
		return nil, fmt.Errorf("store: initialise database %s: %w", path, err)
	}
	if err := syncDir(filepath.Dir(path)); err != nil {
		return nil, err
	}
	return newStore(db, opts, macKey), nil
}

// Open opens an existing database, verifies it (see Check) and returns it.
// A missing file, a file locked by another process (ErrLocked), a wrong KEK
// (ErrWrongKEK) and a failed integrity check (ErrCorrupt) are distinct
// errors that name the file.
func Open(ctx context.Context, path string, opts Options) (_ *Store, err error) {
	if err := opts.setDefaults(); err != nil {
		return nil, err
	}
	var locked *os.File
	db, err := bolt.Open(path, 0o600, boltOptions(opts, func(name string, flag int, perm os.FileMode) (*os.File, error) {
		f, err := os.OpenFile(name, flag&^os.O_CREATE, perm)
		locked = f
		return f, err
	}))
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return nil, fmt.Errorf("store: database %s does not exist (run kbs init): %w", path, err)
	case errors.Is(err, bolterrors.ErrTimeout):
		return nil, fmt.Errorf("%w: %s (waited %s for its lock)", ErrLocked, path, opts.LockTimeout)
	case err != nil:
		return nil, fmt.Errorf("store: open database %s: %w", path, err)
	}
	defer func() {
		if err != nil {
			db.Close()
		}
	}()
	if err := stillAtPath(path, locked); err != nil {
		return nil, err
	}

	var format, check, sealedMAC []byte
	err = db.View(func(tx *bolt.Tx) error {
		m := tx.Bucket(bucketMeta)
		if m == nil {
			return fmt.Errorf("%w: %s has no meta bucket; not a kbs keystore", ErrCorrupt, path)
		}
		format = clone(m.Get(metaFormat))
		check = clone(m.Get(metaKEKCheck))
		sealedMAC = clone(m.Get(metaAuditMACKey))
		return nil
	})
	if err != nil {
		return nil, err
	}
	if string(format) != formatV1 {
		return nil, fmt.Errorf("%w: %s has format %q, want %q", ErrCorrupt, path, format, formatV1)
	}
	if err := openKEKCheck(ctx, opts.KEK, check); err != nil {
		return nil, fmt.Errorf("%w: %s", err, path)
	}
	macKey, err := opts.KEK.Open(ctx, sealedMAC, aad(kindAuditMACKey, "", 0))
	if err != nil || len(macKey) != 32 {
		return nil, fmt.Errorf("%w: %s: sealed audit MAC key does not open", ErrCorrupt, path)
	}
	s := newStore(db, opts, macKey)
	clear(macKey)
	if err := s.Check(ctx); err != nil {
		return nil, fmt.Errorf("store: open %s: %w", path, err)
	}
	return s, nil
}

func newStore(db *bolt.DB, opts Options, macKey []byte) *Store {
	db.MaxBatchDelay = opts.BatchDelay
	return &Store{db: db, kek: opts.KEK, now: opts.Now, rand: opts.Rand, macKey: clone(macKey)}
}

func boltOptions(opts Options, openFile func(string, int, os.FileMode) (*os.File, error)) *bolt.Options {
	return &bolt.Options{
		Timeout: opts.LockTimeout,
		// The hashmap freelist is faster for any realistic size; with
		// NoFreelistSync commits write fewer pages and bbolt rebuilds the
		// freelist by scanning at open (fast at keystore sizes).
		FreelistType:   bolt.FreelistMapType,
		NoFreelistSync: true,
		OpenFile:       openFile,
	}
}

// Close closes the database. It waits for running transactions.
func (s *Store) Close() error {
	clear(s.macKey)
	if err := s.db.Close(); err != nil {
		return fmt.Errorf("store: close: %w", err)
	}
	return nil
}

// batch runs fn in a group-committed write transaction. fn may run more than
// once (bbolt re-runs a batch without a failing call, and re-runs that call
// alone), so it must derive everything from tx and assign, never append to,
// variables outside it.
func (s *Store) batch(ctx context.Context, fn func(tx *bolt.Tx) error) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("store: %w", err)
	}
	return s.db.Batch(fn)
}

func (s *Store) view(ctx context.Context, fn func(tx *bolt.Tx) error) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("store: %w", err)
	}
	return s.db.View(fn)
}

// timestamp returns the current time from the injected clock, in UTC and
// without a monotonic reading.
func (s *Store) timestamp() time.Time { return s.now().UTC().Round(0) }

// Record kinds bound into the AAD of every sealed value.
const (
	kindDEK         = "dek"
	kindKEKCheck    = "kek-check"
	kindAuditMACKey = "audit-mac-key"
)

const (
	aadLabel          = "cml/v1/keystore"
	kekCheckPlaintext = "cml/v1/kek-check"
)

// aad returns the additional data of a sealed record:
// "cml/v1/keystore" ‖ 0x00 ‖ u16 len(kind) ‖ kind ‖ u16 len(keyID) ‖ keyID ‖ u32 version,
// integers big-endian. Length prefixes make it unambiguous.
func aad(kind, keyID string, version uint32) []byte {
	b := make([]byte, 0, len(aadLabel)+1+2+len(kind)+2+len(keyID)+4)
	b = append(b, aadLabel...)
	b = append(b, 0)
	b = binary.BigEndian.AppendUint16(b, uint16(len(kind)))
	b = append(b, kind...)
	b = binary.BigEndian.AppendUint16(b, uint16(len(keyID)))
	b = append(b, keyID...)
	return binary.BigEndian.AppendUint32(b, version)
}

func openKEKCheck(ctx context.Context, p kek.Provider, sealed []byte) error {
	if sealed == nil {
		return fmt.Errorf("%w: KEK check value missing", ErrCorrupt)
	}
	pt, err := p.Open(ctx, sealed, aad(kindKEKCheck, "", 0))
	if errors.Is(err, kek.ErrAuth) || (err == nil && string(pt) != kekCheckPlaintext) {
		return fmt.Errorf("%w: the KEK check value does not open; start kbs with the KEK this database was created with (KEK file or CML_KEK)", ErrWrongKEK)
	}
	if err != nil {
		return fmt.Errorf("store: open KEK check value: %w", err)
	}
	return nil
}

// syncDir fsyncs a directory so a newly created file's entry is durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("store: open directory %s: %w", dir, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("store: sync directory %s: %w", dir, err)
	}
	return nil
}

// clone copies b out of bbolt memory (nil stays nil).
func clone(b []byte) []byte {
	if b == nil {
		return nil
	}
	return append(make([]byte, 0, len(b)), b...)
}
