package store

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"io"
	"io/fs"
	"os"
	"path/filepath"

	bolt "go.etcd.io/bbolt"
)

// CompactTempSuffix names the file Compact writes beside the database
// (PATH + CompactTempSuffix) before renaming it over PATH. A file by that
// name is only ever a leftover of an interrupted compaction: the next
// Compact removes it, and Open never reads it.
const CompactTempSuffix = ".compacting"

// compactTxMaxSize bounds how many bytes of keys and values one write
// transaction of the copy holds, so a large audit log does not need all its
// dirty pages in memory at once. Intermediate commits free only pages
// holding copies of live data.
const compactTxMaxSize = 64 << 20

// scrubChunk is the size of the zero buffer written over the old file.
const scrubChunk = 1 << 20

// CompactResult describes a finished compaction.
type CompactResult struct {
	Path         string // the database, now the compacted file
	SizeBefore   int64  // bytes of the old file
	SizeAfter    int64  // bytes of the new file
	Entries      int    // buckets and key/value pairs copied
	AuditRecords uint64 // length of the audit chain, verified before and after
	// StaleTemp is the leftover of an interrupted compaction that was
	// removed first, or "".
	StaleTemp string
	// Scrubbed reports that the old file's contents were overwritten with
	// zeros and synced after the rename. Best effort: see Warnings and
	// docs/keystore.md for what this cannot reach.
	Scrubbed bool
	// Warnings are things the caller should tell the operator; the new
	// database is in place and verified regardless.
	Warnings []string
}

// Compact rewrites the database at path without its free pages, so the
// sealed bytes of destroyed keys and versions (which bbolt leaves in freed
// pages, see docs/keystore.md) are no longer in the file. It is offline
// maintenance: it takes the database's lock like Open (failing with
// ErrLocked while a kbs holds it, after opts.LockTimeout), and it refuses a
// database that does not pass Check or VerifyAudit.
//
// The copy is written to path+CompactTempSuffix with the old file's mode and
// owner, synced, then reopened and verified: Check, VerifyAudit with the
// same record count and head, and the same logical content (every bucket,
// sequence, key and value). Only then is it renamed over path and the
// directory synced. A crash at any point leaves either the old or the new
// complete database at path. Finally the old file's contents are
// overwritten with zeros (unless it has other hard links) so its blocks do
// not keep them either, as far as the filesystem overwrites in place.
func Compact(ctx context.Context, path string, opts Options) (res CompactResult, err error) {
	if err := opts.setDefaults(); err != nil {
		return res, err
	}
	res.Path = path
	fi, err := os.Lstat(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return res, fmt.Errorf("store: compact: database %s does not exist: %w", path, err)
	case err != nil:
		return res, fmt.Errorf("store: compact: %w", err)
	case !fi.Mode().IsRegular():
		return res, fmt.Errorf("%w: compact: %s is not a regular file (%s); give the path of the database file itself", ErrInvalidArgument, path, fi.Mode().Type())
	}

	src, err := Open(ctx, path, opts)
	switch {
	case errors.Is(err, ErrLocked):
		return res, fmt.Errorf("store: compact %s: database is in use by a running kbs; stop it first: %w", path, err)
	case err != nil:
		return res, fmt.Errorf("store: compact: refusing to copy a database that does not open cleanly: %w", err)
	}
	defer func() {
		if src != nil {
			src.Close()
		}
	}()
	// Stat again under the lock: the file might have changed before it.
	if fi, err = os.Lstat(path); err != nil || !fi.Mode().IsRegular() {
		return res, fmt.Errorf("store: compact: %s changed while it was being opened; nothing was done: %v", path, err)
	}
	res.SizeBefore = fi.Size()
	before, err := src.VerifyAudit(ctx)
	if err != nil {
		return res, fmt.Errorf("store: compact %s: refusing to copy a database whose audit chain does not verify: %w", path, err)
	}
	res.AuditRecords = before.Records
	digest, n, err := src.contentDigest(ctx)
	if err != nil {
		return res, err
	}
	res.Entries = n

	// The lock on path excludes every other Compact of it, so a temp file
	// is a leftover of one that was interrupted.
	tmp := path + CompactTempSuffix
	if err := os.Remove(tmp); err == nil {
		res.StaleTemp = tmp
	} else if !errors.Is(err, fs.ErrNotExist) {
		return res, fmt.Errorf("store: compact: remove stale %s: %w", tmp, err)
	}
	defer func() {
		if err != nil {
			os.Remove(tmp)
		}
	}()
	if err := writeCompacted(ctx, tmp, fi, src, opts); err != nil {
		return res, err
	}
	if err := verifyCompacted(ctx, tmp, opts, before.Records, before.Head.Hash, digest); err != nil {
		return res, err
	}
	nfi, err := os.Stat(tmp)
	if err != nil {
		return res, fmt.Errorf("store: compact: %w", err)
	}
	res.SizeAfter = nfi.Size()

	// Keep a handle on the old file to scrub it once it is unlinked.
	old, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		return res, fmt.Errorf("store: compact: open %s to overwrite it afterwards: %w", path, err)
	}
	defer old.Close()
	if ofi, err := old.Stat(); err != nil || !os.SameFile(ofi, fi) {
		return res, fmt.Errorf("store: compact: %s changed during compaction; nothing was replaced", path)
	}
	if err := os.Rename(tmp, path); err != nil {
		return res, fmt.Errorf("store: compact: replace %s: %w", path, err)
	}
	if err := syncDir(filepath.Dir(path)); err != nil {
		// The rename happened; only its durability is in doubt. Both files
		// are complete, so report it but do not remove anything.
		res.Warnings = append(res.Warnings, fmt.Sprintf("the directory of %s could not be synced (%v): after a power loss the old file may be back; run kbs compact again", path, err))
	}
	// Release the lock (it is on the old, now unlinked, file). An Open
	// that was waiting for it notices the replacement and fails.
	cerr := src.Close()
	src = nil
	if cerr != nil {
		res.Warnings = append(res.Warnings, cerr.Error())
	}
	res.Scrubbed, res.Warnings = scrub(old, path, res.Warnings)
	return res, nil
}

// stillAtPath checks that the file Open locked is still the one at path:
// Compact renames a new file over path while it holds the old file's lock,
// so an Open that waited for that lock would otherwise serve the unlinked
// old file and lose every write.
func stillAtPath(path string, locked *os.File) error {
	lfi, err := locked.Stat()
	if err != nil {
		return fmt.Errorf("store: open database %s: %w", path, err)
	}
	pfi, err := os.Stat(path)
	if err != nil || !os.SameFile(lfi, pfi) {
		return fmt.Errorf("%w: %s was replaced (by kbs compact) while this process waited for its lock; start again", ErrLocked, path)
	}
	return nil
}

// writeCompacted copies src into a new bbolt file at tmp with the mode and
// owner of fi, and syncs it.
func writeCompacted(ctx context.Context, tmp string, fi fs.FileInfo, src *Store, opts Options) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("store: %w", err)
	}
	var created *os.File
	dst, err := bolt.Open(tmp, 0o600, boltOptions(opts, func(name string, flag int, perm os.FileMode) (*os.File, error) {
		f, err := os.OpenFile(name, flag|os.O_CREATE|os.O_EXCL, perm)
		created = f
		return f, err
	}))
	if err != nil {
		return fmt.Errorf("store: compact: create %s: %w", tmp, err)
	}
	// Mode and owner first, before any key material is written.
	if err := created.Chmod(fi.Mode().Perm()); err != nil {
		dst.Close()
		return fmt.Errorf("store: compact: set mode of %s: %w", tmp, err)
	}
	if err := copyOwner(created, fi); err != nil {
		dst.Close()
		return fmt.Errorf("store: compact: give %s the owner of the database (run kbs compact as the database's owner or as root): %w", tmp, err)
	}
	// Every commit of dst is fsynced by bbolt (NoSync is off).
	if err := bolt.Compact(dst, src.db, compactTxMaxSize); err != nil {
		dst.Close()
		return fmt.Errorf("store: compact: copy into %s: %w", tmp, err)
	}
	if err := dst.Close(); err != nil {
		return fmt.Errorf("store: compact: close %s: %w", tmp, err)
	}
	// One more fsync of our own covers the mode and owner changes.
	f, err := os.Open(tmp)
	if err != nil {
		return fmt.Errorf("store: compact: %w", err)
	}
	defer f.Close()
	if err := f.Sync(); err != nil {
		return fmt.Errorf("store: compact: sync %s: %w", tmp, err)
	}
	return nil
}

// verifyCompacted opens the new file as a store (which runs Check) and
// checks that its audit chain and its logical content equal the source's.
func verifyCompacted(ctx context.Context, tmp string, opts Options, records uint64, head [32]byte, digest [32]byte) error {
	s, err := Open(ctx, tmp, opts)
	if err != nil {
		return fmt.Errorf("store: compact: the compacted copy does not open cleanly; nothing was replaced: %w", err)
	}
	defer s.Close()
	rep, err := s.VerifyAudit(ctx)
	if err != nil {
		return fmt.Errorf("store: compact: the compacted copy's audit chain does not verify; nothing was replaced: %w", err)
	}
	if rep.Records != records || rep.Head.Hash != head {
		return fmt.Errorf("%w: compact: the compacted copy's audit chain has %d records, the original %d (or another head); nothing was replaced", ErrCorrupt, rep.Records, records)
	}
	got, _, err := s.contentDigest(ctx)
	if err != nil {
		return err
	}
	if got != digest {
		return fmt.Errorf("%w: compact: the compacted copy's content differs from the original; nothing was replaced", ErrCorrupt)
	}
	return nil
}

// contentDigest hashes the logical content of the database: every bucket
// (recursively) with its sequence, and every key and value, in order, each
// length-prefixed. Two files with the same digest hold the same data,
// whatever their page layout. It also returns the number of entries.
func (s *Store) contentDigest(ctx context.Context) ([32]byte, int, error) {
	var sum [32]byte
	var n int
	err := s.view(ctx, func(tx *bolt.Tx) error {
		h := sha256.New()
		n = 0
		err := tx.ForEach(func(name []byte, b *bolt.Bucket) error {
			return digestBucket(h, &n, name, b)
		})
		h.Sum(sum[:0])
		return err
	})
	if err != nil {
		return sum, 0, fmt.Errorf("store: compact: read content: %w", err)
	}
	return sum, n, nil
}

func digestBucket(h hash.Hash, n *int, name []byte, b *bolt.Bucket) error {
	*n++
	writeField(h, 'B', name)
	h.Write(binary.BigEndian.AppendUint64(nil, b.Sequence()))
	err := b.ForEach(func(k, v []byte) error {
		if v == nil {
			if child := b.Bucket(k); child != nil {
				return digestBucket(h, n, k, child)
			}
		}
		*n++
		writeField(h, 'K', k)
		writeField(h, 'V', v)
		return nil
	})
	writeField(h, 'E', nil) // end of bucket
	return err
}

func writeField(w io.Writer, tag byte, b []byte) {
	w.Write(binary.BigEndian.AppendUint64([]byte{tag}, uint64(len(b))))
	w.Write(b)
}

// scrub overwrites the old database file (already unlinked by the rename)
// with zeros and syncs it, unless another hard link still names it. On a
// filesystem that overwrites in place (ext4, xfs without reflinks) this
// removes the old pages from the disk blocks; copy-on-write filesystems,
// snapshots and SSD wear levelling keep old blocks out of its reach.
func scrub(old *os.File, path string, warnings []string) (bool, []string) {
	fi, err := old.Stat()
	if err != nil {
		return false, append(warnings, fmt.Sprintf("the old file was not overwritten: %v", err))
	}
	if links, ok := linkCount(fi); ok && links > 0 {
		return false, append(warnings, fmt.Sprintf("the old file was not overwritten: it has %d other hard link(s), which still hold the destroyed keys' sealed bytes; remove them", links))
	}
	zero := make([]byte, scrubChunk)
	for off := int64(0); off < fi.Size(); off += scrubChunk {
		if _, err := old.WriteAt(zero[:min(scrubChunk, fi.Size()-off)], off); err != nil {
			return false, append(warnings, fmt.Sprintf("overwriting the old file of %s failed: %v", path, err))
		}
	}
	if err := old.Sync(); err != nil {
		return false, append(warnings, fmt.Sprintf("syncing the overwritten old file of %s failed: %v", path, err))
	}
	return true, warnings
}
