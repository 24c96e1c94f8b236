package emdl

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
)

// DecryptOptions configures Decrypt.
type DecryptOptions struct {
	KeyID      string        // if non-empty, the model must be for this key id (else ErrKeyMismatch)
	KeyVersion uint32        // if non-zero, the model must be for this key version (else ErrKeyMismatch)
	Workers    int           // 0 → GOMAXPROCS
	Progress   func(n int64) // optional; plaintext bytes just verified (a delta); called from many goroutines

	// SkipPlaintextHash skips re-hashing each file's plaintext to compare it
	// with the manifest's SHA-256. Every chunk is still authenticated, in
	// order and complete, under a key bound to the file's path and to a
	// header the authenticated manifest lists (SPEC.md §8), so an attacker
	// without the key gains nothing; the hash only re-checks the encryptor's
	// own consistency. It costs a sequential SHA-256 per file (~1.3 GB/s per
	// core), the largest CPU cost of decryption.
	SkipPlaintextHash bool
}

// Info is a model's public metadata, read without any key. Nothing in it is
// verified: Decrypt authenticates it.
type Info struct {
	KeyID      string
	KeyVersion uint32
	Suite      string
	ChunkSize  int
	Files      int
	TotalSize  int64
	SingleFile bool
	ModelID    string // 32 hex digits, random per encryption
}

// Inspect reads a model's public metadata without any key.
func Inspect(dir string) (Info, error) {
	root, err := os.OpenRoot(dir)
	if err != nil {
		return Info{}, &Error{Path: dir, Err: err, Reason: "opening model"}
	}
	defer root.Close()
	raw, err := readManifest(root, manifestHeaderSize(MaxKeyIDLen))
	if err != nil {
		return Info{}, err
	}
	mh, _, err := parseManifestHeader(raw)
	if err != nil {
		return Info{}, withPath(err, ManifestName)
	}
	return Info{
		KeyID:      mh.keyID,
		KeyVersion: mh.keyVersion,
		Suite:      suiteName(mh.suite),
		ChunkSize:  int(mh.chunkSize),
		Files:      int(mh.files),
		TotalSize:  int64(mh.totalSize),
		SingleFile: mh.single(),
		ModelID:    hex.EncodeToString(mh.modelID[:]),
	}, nil
}

// Decrypt verifies and decrypts the model directory in to out: a file for a
// single-file model, a directory otherwise. out must not exist. Nothing
// appears at out unless every chunk, every plaintext hash and the manifest
// verified: the output is written under a temporary name beside out and
// renamed into place at the end; on error or cancellation it is removed.
// in may be a symlink to the model directory; nothing below it may be.
func Decrypt(ctx context.Context, key []byte, in, out string, opts DecryptOptions) (Summary, error) {
	if len(key) != KeySize {
		return Summary{}, fmt.Errorf("emdl: key must be %d bytes, not %d", KeySize, len(key))
	}
	if opts.Workers < 0 {
		return Summary{}, fmt.Errorf("emdl: workers %d is negative", opts.Workers)
	}
	if err := ctx.Err(); err != nil {
		return Summary{}, err
	}
	in, out = filepath.Clean(in), filepath.Clean(out)
	inRoot, err := os.OpenRoot(in)
	if err != nil {
		return Summary{}, &Error{Path: in, Err: err, Reason: "opening model"}
	}
	defer inRoot.Close()

	m, err := openManifest(inRoot, key, opts)
	if err != nil {
		return Summary{}, err
	}
	if err := checkModelTree(in, m.entries); err != nil {
		return Summary{}, err
	}
	if err := checkNotInside(in, out); err != nil {
		return Summary{}, err
	}
	if _, err := checkOutput(out, false); err != nil {
		return Summary{}, err
	}

	single := m.header.single()
	p, err := createPartial(out, !single)
	if err != nil {
		return Summary{}, err
	}
	committed := false
	defer func() {
		if !committed {
			p.abort()
		}
	}()
	d := &decryptor{key: key, skipHash: opts.SkipPlaintextHash, mh: m.header, inRoot: inRoot}
	if single {
		d.single = p.lock
	} else {
		if d.outRoot, err = os.OpenRoot(p.path); err != nil {
			return Summary{}, &Error{Path: out, Err: err, Reason: "opening temporary output"}
		}
		defer d.outRoot.Close()
		paths := make([]string, len(m.entries))
		for i := range m.entries {
			paths[i] = m.entries[i].path
		}
		if err := makeParentDirs(d.outRoot, paths); err != nil {
			return Summary{}, &Error{Path: out, Err: err, Reason: "creating directories"}
		}
	}

	e := newEngine(ctx, opts.Workers, len(m.entries), int(m.header.chunkSize), opts.Progress)
	if err := e.run(len(m.entries), func(i int, s *slot) error {
		return d.file(e, s, &m.entries[i])
	}); err != nil {
		return Summary{}, err
	}
	if !single {
		if err := os.Chmod(p.path, 0o755); err != nil {
			return Summary{}, &Error{Path: out, Err: err, Reason: "setting output mode"}
		}
	}
	if err := ctx.Err(); err != nil {
		return Summary{}, err
	}
	if err := p.commit(false); err != nil {
		return Summary{}, err
	}
	committed = true
	return Summary{Files: len(m.entries), Bytes: int64(m.header.totalSize)}, nil
}

type manifest struct {
	header  *manifestHeader
	entries []entry
}

// openManifest reads, authenticates and parses the manifest. The checks run
// from the cheapest and least specific to the most: structure and version,
// the caller's key id and version, sizes, the key check (ErrWrongKey), the
// header MAC, the body's tag, the entries (SPEC.md §8).
func openManifest(root *os.Root, key []byte, opts DecryptOptions) (*manifest, error) {
	raw, err := readManifest(root, manifestHeaderSize(MaxKeyIDLen)+MaxManifestSize+tagSize+1)
	if err != nil {
		return nil, err
	}
	mh, hlen, err := parseManifestHeader(raw)
	if err != nil {
		return nil, withPath(err, ManifestName)
	}
	if opts.KeyID != "" && opts.KeyID != mh.keyID {
		return nil, newError(ManifestName, ErrKeyMismatch, fmt.Sprintf("model is for key id %q, not %q", mh.keyID, opts.KeyID))
	}
	if opts.KeyVersion != 0 && opts.KeyVersion != mh.keyVersion {
		return nil, newError(ManifestName, ErrKeyMismatch, fmt.Sprintf("model is for key %q version %d, not version %d", mh.keyID, mh.keyVersion, opts.KeyVersion))
	}
	switch want := hlen + int(mh.bodyLen); {
	case len(raw) < want:
		return nil, newError(ManifestName, ErrTruncated, fmt.Sprintf("truncated: %d bytes, its header says %d", len(raw), want))
	case len(raw) > want:
		return nil, newError(ManifestName, ErrExtended, fmt.Sprintf("extended: data after the %d bytes its header says", want))
	}
	if !keyCheckMatches(key, mh.salt[:], mh.keyCheck[:]) {
		return nil, newError(ManifestName, ErrWrongKey, fmt.Sprintf("key check failed: not the key the model was encrypted with (key %q version %d), or the manifest's salt or key check was altered", mh.keyID, mh.keyVersion))
	}
	keys, err := newFileKeys(mh.suite, manifestKey(key, mh.salt[:], mh.suite))
	if err != nil {
		return nil, err
	}
	if !keys.verifyMAC(raw[:hlen-macSize], raw[hlen-macSize:hlen]) {
		return nil, newError(ManifestName, ErrTampered, "manifest header failed authentication")
	}
	digest := sha256.Sum256(raw[:hlen])
	var nonce [nonceSize]byte
	body, err := openChunk(keys.aead, digest[:], &nonce, 0, true, raw[hlen:])
	if err != nil {
		return nil, newError(ManifestName, ErrTampered, "manifest body failed authentication")
	}
	entries, err := parseEntries(body, mh)
	if err != nil {
		return nil, withPath(err, ManifestName)
	}
	return &manifest{header: mh, entries: entries}, nil
}

// readManifest reads at most limit bytes of the manifest.
func readManifest(root *os.Root, limit int) ([]byte, error) {
	fi, err := root.Lstat(ManifestName)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, newError(ManifestName, ErrMissingFile, "no manifest: not an EMDL model directory")
	}
	if err != nil {
		return nil, &Error{Path: ManifestName, Err: err, Reason: "reading manifest"}
	}
	if !fi.Mode().IsRegular() {
		return nil, newError(ManifestName, ErrUnsafePath, "manifest is not a regular file")
	}
	f, err := root.Open(ManifestName)
	if err != nil {
		return nil, &Error{Path: ManifestName, Err: err, Reason: "reading manifest"}
	}
	defer f.Close()
	raw, err := io.ReadAll(io.LimitReader(f, int64(limit)))
	if err != nil {
		return nil, &Error{Path: ManifestName, Err: err, Reason: "reading manifest"}
	}
	return raw, nil
}

// checkModelTree checks that the model directory holds exactly the manifest,
// the files it lists and their parent directories: no symlink or other
// non-regular file anywhere, nothing extra, nothing missing.
func checkModelTree(in string, entries []entry) error {
	files := make(map[string]bool, len(entries))
	dirs := map[string]bool{}
	for i := range entries {
		p := entries[i].path
		files[p] = false
		for d := path.Dir(p); d != "."; d = path.Dir(d) {
			dirs[d] = true
		}
	}
	err := filepath.WalkDir(in, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return &Error{Path: in, Err: err, Reason: "listing model"}
		}
		if p == in {
			return nil
		}
		rel, err := filepath.Rel(in, p)
		if err != nil {
			return &Error{Path: in, Err: err, Reason: "listing model"}
		}
		rel = filepath.ToSlash(rel)
		switch t := d.Type(); {
		case t&fs.ModeSymlink != 0:
			return newError(displayPath(rel), ErrUnsafePath, "symlink in the model directory")
		case t.IsDir():
			if !dirs[rel] {
				return newError(displayPath(rel), ErrNotInManifest, "directory not in the manifest")
			}
		case !t.IsRegular():
			return newError(displayPath(rel), ErrUnsafePath, "not a regular file")
		case rel == ManifestName:
		default:
			if _, ok := files[rel]; !ok {
				return newError(displayPath(rel), ErrNotInManifest, "file not in the manifest")
			}
			files[rel] = true
		}
		return nil
	})
	if err != nil {
		return err
	}
	for i := range entries {
		if !files[entries[i].path] {
			return newError(entries[i].path, ErrMissingFile, "listed in the manifest but missing from the model directory")
		}
	}
	return nil
}

type decryptor struct {
	key      []byte
	skipHash bool
	mh       *manifestHeader
	inRoot   *os.Root
	outRoot  *os.Root // nil for a single-file model
	single   *os.File // the output of a single-file model
}

// file verifies and decrypts one file. Before any chunk is read, its header
// must be byte for byte the one the manifest lists (which also refuses a
// file from another model, or another encryption of this one), then the key
// check and header MAC must pass, and its size must be exact.
func (d *decryptor) file(e *engine, s *slot, ent *entry) error {
	src, err := d.inRoot.Open(ent.path)
	if err != nil {
		return &Error{Path: ent.path, Err: err, Reason: "opening"}
	}
	defer src.Close()
	fi, err := src.Stat()
	if err != nil {
		return &Error{Path: ent.path, Err: err, Reason: "reading"}
	}
	if !fi.Mode().IsRegular() {
		return newError(ent.path, ErrUnsafePath, "not a regular file")
	}
	raw := make([]byte, fileHeaderSize(len(d.mh.keyID)))
	if _, err := io.ReadFull(src, raw); err != nil {
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return newError(ent.path, ErrTruncated, "truncated: shorter than its header")
		}
		return &Error{Path: ent.path, Err: err, Reason: "reading header"}
	}
	digest := sha256.Sum256(raw)
	if digest != ent.headerDigest {
		return d.headerMismatch(ent.path, raw)
	}
	h, _, err := parseFileHeader(raw)
	if err != nil {
		return withPath(err, ent.path)
	}
	if !keyCheckMatches(d.key, h.salt[:], h.keyCheck[:]) {
		return newError(ent.path, ErrWrongKey, "key check failed")
	}
	keys, err := newFileKeys(h.suite, fileKey(d.key, h.salt[:], h.suite, ent.path))
	if err != nil {
		return err
	}
	if !keys.verifyMAC(raw[:len(raw)-macSize], raw[len(raw)-macSize:]) {
		return newError(ent.path, ErrTampered, "header failed authentication")
	}
	// With the digest equal these hold; checked so that no later code relies
	// on an assumption about the encryptor.
	if h.length != ent.size || h.chunkSize != d.mh.chunkSize || h.suite != d.mh.suite ||
		h.modelID != d.mh.modelID || h.keyID != d.mh.keyID || h.keyVersion != d.mh.keyVersion {
		return newError(ent.path, ErrTampered, "header disagrees with the manifest")
	}
	switch want := h.encryptedSize(); {
	case fi.Size() < want:
		return newError(ent.path, ErrTruncated, fmt.Sprintf("truncated: %d bytes, its header says %d", fi.Size(), want))
	case fi.Size() > want:
		return newError(ent.path, ErrExtended, fmt.Sprintf("extended: %d bytes, its header says %d", fi.Size(), want))
	}

	dst := d.single
	if dst == nil {
		dst, err = d.outRoot.OpenFile(ent.path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if err != nil {
			return &Error{Path: ent.path, Err: err, Reason: "creating output"}
		}
		defer dst.Close()
	}
	t := &fileTask{path: ent.path, decrypt: true, aead: keys.aead, aad: digest[:], out: dst, slot: s}
	sum, err := e.decryptStream(t, src, h.length, h.chunks(), d.skipHash)
	if err != nil {
		return err
	}
	if !d.skipHash && sum != ent.sha256 {
		return newError(ent.path, ErrTampered, "plaintext SHA-256 does not match the manifest")
	}
	if err := dst.Chmod(fs.FileMode(ent.mode)); err != nil {
		return &Error{Path: ent.path, Err: err, Reason: "setting mode"}
	}
	if d.single == nil {
		if err := dst.Sync(); err != nil {
			return &Error{Path: ent.path, Err: err, Reason: "syncing output"}
		}
		if err := dst.Close(); err != nil {
			return &Error{Path: ent.path, Err: err, Reason: "closing output"}
		}
	}
	return nil
}

// headerMismatch explains why a file's header is not the one in the manifest.
func (d *decryptor) headerMismatch(p string, raw []byte) error {
	h, _, err := parseFileHeader(raw)
	switch {
	case err != nil:
		var e *Error
		if errors.As(err, &e) {
			return newError(p, ErrTampered, "header does not match the manifest: "+e.Reason)
		}
		return newError(p, ErrTampered, "header does not match the manifest")
	case h.modelID != d.mh.modelID:
		return newError(p, ErrTampered, "header does not match the manifest: the file belongs to another model")
	}
	return newError(p, ErrTampered, "header does not match the manifest")
}

// withPath sets the path of a parser's *Error.
func withPath(err error, p string) error {
	var e *Error
	if errors.As(err, &e) && e.Path == "" {
		e.Path = p
	}
	return err
}
