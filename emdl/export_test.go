package emdl

import (
	"crypto/sha256"
	"io"
	"os"
	"path/filepath"
)

// Test hooks for the external test package.

// SetRand makes Encrypt draw its model id and salts from r.
func SetRand(o *EncryptOptions, r io.Reader) { o.rand = r }

// TestEntry is a manifest entry as tests see it.
type TestEntry struct {
	Path         string
	Size         uint64
	Mode         uint32
	SHA256       [32]byte
	HeaderDigest [32]byte
}

// ReadEntries authenticates and returns the manifest entries of a model.
func ReadEntries(dir string, key []byte) ([]TestEntry, error) {
	root, err := os.OpenRoot(dir)
	if err != nil {
		return nil, err
	}
	defer root.Close()
	m, err := openManifest(root, key, DecryptOptions{})
	if err != nil {
		return nil, err
	}
	out := make([]TestEntry, len(m.entries))
	for i, e := range m.entries {
		out[i] = TestEntry{e.path, e.size, e.mode, e.sha256, e.headerDigest}
	}
	return out, nil
}

// RewriteManifest re-seals a model's manifest, correctly authenticated under
// key, with the entries edit returns, in the order returned and without any
// check: it plays an encryptor that holds the key but misbehaves. The file
// count and total size in the header follow the new entries.
func RewriteManifest(dir string, key []byte, edit func([]TestEntry) []TestEntry) error {
	es, err := ReadEntries(dir, key)
	if err != nil {
		return err
	}
	raw, err := os.ReadFile(filepath.Join(dir, ManifestName))
	if err != nil {
		return err
	}
	mh, _, err := parseManifestHeader(raw)
	if err != nil {
		return err
	}
	es = edit(es)
	entries := make([]entry, len(es))
	mh.files, mh.totalSize = uint32(len(es)), 0
	for i, e := range es {
		entries[i] = entry{e.Path, e.Size, e.Mode, e.SHA256, e.HeaderDigest}
		mh.totalSize += e.Size
	}
	b, err := sealManifest(key, mh, entries)
	if err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, ManifestName), b, 0o644)
}

// FileHeaderSize is the size of a file header for a key id of n bytes.
func FileHeaderSize(n int) int { return fileHeaderSize(n) }

// ManifestHeaderSize is the size of the manifest header for a key id of n bytes.
func ManifestHeaderSize(n int) int { return manifestHeaderSize(n) }

// HeaderDigest is the digest of a file header, as the manifest records it.
func HeaderDigest(hdr []byte) [32]byte { return sha256.Sum256(hdr) }

const TagSize = tagSize
