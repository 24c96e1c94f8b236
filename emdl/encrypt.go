package emdl

import (
	"context"
	crand "crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"sort"
	"unicode/utf8"
)

// EncryptOptions configures Encrypt.
type EncryptOptions struct {
	KeyID      string        // required; [A-Za-z0-9._-]{1,128}
	KeyVersion uint32        // required, ≥ 1
	ChunkSize  int           // 0 → DefaultChunkSize; MinChunkSize..MaxChunkSize
	Workers    int           // 0 → GOMAXPROCS
	Progress   func(n int64) // optional; plaintext bytes just processed (a delta); called from many goroutines

	// rand is the source of the model id and salts; nil means crypto/rand.
	// Only tests set it (export_test.go), to produce known-answer vectors.
	rand io.Reader
}

// Summary counts the plaintext files and bytes of a model.
type Summary struct {
	Files int
	Bytes int64
}

// inputFile is one regular file to encrypt.
type inputFile struct {
	path string // model path (slash separated, relative)
	src  string // OS path relative to the input root; "" for a single file
}

// Encrypt encrypts the file or directory at in into the new model directory
// out, which must not exist or be an empty directory. key is the DEK. The
// output is written to a temporary directory beside out and renamed into
// place once complete; on error nothing is left behind.
//
// A directory's regular files are encrypted with their paths relative to
// in; directories are recreated as needed, empty ones are not kept. A
// symlink or other non-regular file anywhere below in is refused
// (ErrUnsafePath); in itself may be a symlink.
func Encrypt(ctx context.Context, key []byte, in, out string, opts EncryptOptions) (Summary, error) {
	if len(key) != KeySize {
		return Summary{}, fmt.Errorf("emdl: key must be %d bytes, not %d", KeySize, len(key))
	}
	if !validKeyID(opts.KeyID) {
		return Summary{}, fmt.Errorf("emdl: key id %q: must match [A-Za-z0-9._-]{1,%d}", opts.KeyID, MaxKeyIDLen)
	}
	if opts.KeyVersion == 0 {
		return Summary{}, errors.New("emdl: key version must be at least 1")
	}
	chunkSize := opts.ChunkSize
	if chunkSize == 0 {
		chunkSize = DefaultChunkSize
	}
	if chunkSize < MinChunkSize || chunkSize > MaxChunkSize {
		return Summary{}, fmt.Errorf("emdl: chunk size %d outside %d..%d", chunkSize, MinChunkSize, MaxChunkSize)
	}
	if opts.Workers < 0 {
		return Summary{}, fmt.Errorf("emdl: workers %d is negative", opts.Workers)
	}
	if err := ctx.Err(); err != nil {
		return Summary{}, err
	}
	in, out = filepath.Clean(in), filepath.Clean(out)

	files, single, err := listInput(in)
	if err != nil {
		return Summary{}, err
	}
	if !single {
		if err := checkNotInside(in, out); err != nil {
			return Summary{}, err
		}
	}
	replace, err := checkOutput(out, true)
	if err != nil {
		return Summary{}, err
	}

	// All randomness is drawn up front, in a fixed order, so that a fixed
	// source gives a byte-for-byte reproducible model (known-answer tests).
	rnd := opts.rand
	if rnd == nil {
		rnd = crand.Reader
	}
	mh := &manifestHeader{
		suite:      suiteAES256GCMStream,
		chunkSize:  uint32(chunkSize),
		files:      uint32(len(files)),
		keyVersion: opts.KeyVersion,
		keyID:      opts.KeyID,
	}
	if single {
		mh.flags |= flagSingleFile
	}
	salts := make([][saltSize]byte, len(files))
	if _, err := io.ReadFull(rnd, mh.modelID[:]); err != nil {
		return Summary{}, fmt.Errorf("emdl: reading randomness: %w", err)
	}
	if _, err := io.ReadFull(rnd, mh.salt[:]); err != nil {
		return Summary{}, fmt.Errorf("emdl: reading randomness: %w", err)
	}
	for i := range salts {
		if _, err := io.ReadFull(rnd, salts[i][:]); err != nil {
			return Summary{}, fmt.Errorf("emdl: reading randomness: %w", err)
		}
	}

	p, err := createPartial(out, true)
	if err != nil {
		return Summary{}, err
	}
	committed := false
	defer func() {
		if !committed {
			p.abort()
		}
	}()
	outRoot, err := os.OpenRoot(p.path)
	if err != nil {
		return Summary{}, &Error{Path: out, Err: err, Reason: "opening temporary output"}
	}
	defer outRoot.Close()
	if err := makeDirs(outRoot, files); err != nil {
		return Summary{}, &Error{Path: out, Err: err, Reason: "creating directories"}
	}
	var inRoot *os.Root
	if !single {
		if inRoot, err = os.OpenRoot(in); err != nil {
			return Summary{}, &Error{Path: in, Err: err, Reason: "opening input"}
		}
		defer inRoot.Close()
	}

	entries := make([]entry, len(files))
	enc := &encryptor{key: key, mh: mh, in: in, inRoot: inRoot, outRoot: outRoot}
	e := newEngine(ctx, opts.Workers, len(files), chunkSize, opts.Progress)
	err = e.run(len(files), func(i int, s *slot) error {
		return enc.file(e, s, files[i], &salts[i], &entries[i])
	})
	if err != nil {
		return Summary{}, err
	}

	var total uint64
	for i := range entries {
		total += entries[i].size
	}
	if total > MaxFileSize {
		return Summary{}, newError("", ErrUnsupported, fmt.Sprintf("model of %d bytes exceeds the limit of %d bytes", total, uint64(MaxFileSize)))
	}
	mh.totalSize = total
	manifest, err := sealManifest(key, mh, entries)
	if err != nil {
		return Summary{}, err
	}
	if err := writeFile(outRoot, ManifestName, manifest); err != nil {
		return Summary{}, &Error{Path: ManifestName, Err: err, Reason: "writing manifest"}
	}
	if err := os.Chmod(p.path, 0o755); err != nil {
		return Summary{}, &Error{Path: out, Err: err, Reason: "setting output mode"}
	}
	if err := ctx.Err(); err != nil {
		return Summary{}, err
	}
	if err := p.commit(replace); err != nil {
		return Summary{}, err
	}
	committed = true
	return Summary{Files: len(entries), Bytes: int64(total)}, nil
}

type encryptor struct {
	key     []byte
	mh      *manifestHeader
	in      string
	inRoot  *os.Root // nil for a single file
	outRoot *os.Root
}

// file encrypts one input file into the output and fills in its entry.
func (c *encryptor) file(e *engine, s *slot, f inputFile, salt *[saltSize]byte, ent *entry) error {
	var src *os.File
	var err error
	if c.inRoot == nil {
		src, err = os.Open(c.in)
	} else {
		src, err = c.inRoot.Open(f.src)
	}
	if err != nil {
		return &Error{Path: f.path, Err: err, Reason: "opening input"}
	}
	defer src.Close()
	// The size and mode are taken from the open file, not from the listing.
	fi, err := src.Stat()
	if err != nil {
		return &Error{Path: f.path, Err: err, Reason: "reading input"}
	}
	if !fi.Mode().IsRegular() {
		return newError(f.path, ErrUnsafePath, "not a regular file")
	}
	if fi.Size() > MaxFileSize {
		return newError(f.path, ErrUnsupported, fmt.Sprintf("file of %d bytes exceeds the limit of %d bytes", fi.Size(), uint64(MaxFileSize)))
	}

	h := &fileHeader{
		suite:      c.mh.suite,
		chunkSize:  c.mh.chunkSize,
		length:     uint64(fi.Size()),
		modelID:    c.mh.modelID,
		salt:       *salt,
		keyVersion: c.mh.keyVersion,
		keyID:      c.mh.keyID,
	}
	copy(h.keyCheck[:], keyCheck(c.key, h.salt[:]))
	keys, err := newFileKeys(h.suite, fileKey(c.key, h.salt[:], h.suite, f.path))
	if err != nil {
		return err
	}
	raw := h.marshal()
	copy(raw[len(raw)-macSize:], keys.mac(raw[:len(raw)-macSize]))
	digest := sha256.Sum256(raw)

	dst, err := c.outRoot.OpenFile(f.path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return &Error{Path: f.path, Err: err, Reason: "creating output"}
	}
	defer dst.Close()
	if _, err := dst.Write(raw); err != nil {
		return &Error{Path: f.path, Err: err, Reason: "writing header"}
	}
	t := &fileTask{
		path: f.path,
		aead: keys.aead,
		aad:  digest[:],
		out:  dst,
		base: int64(len(raw)),
		slot: s,
	}
	sum, err := e.encryptStream(t, src, h.length, h.chunks())
	if err != nil {
		return err
	}
	if err := dst.Chmod(0o644); err != nil {
		return &Error{Path: f.path, Err: err, Reason: "setting mode"}
	}
	if err := dst.Sync(); err != nil {
		return &Error{Path: f.path, Err: err, Reason: "syncing output"}
	}
	if err := dst.Close(); err != nil {
		return &Error{Path: f.path, Err: err, Reason: "closing output"}
	}
	*ent = entry{path: f.path, size: h.length, mode: uint32(fi.Mode().Perm()), sha256: sum, headerDigest: digest}
	return nil
}

// sealManifest builds the manifest: the clear header, authenticated, then
// the entries sealed as one last chunk with AAD = the header's digest.
func sealManifest(key []byte, mh *manifestHeader, entries []entry) ([]byte, error) {
	body := marshalEntries(entries)
	if len(body) > MaxManifestSize {
		return nil, newError(ManifestName, ErrUnsupported, fmt.Sprintf("manifest of %d bytes exceeds the limit of %d bytes", len(body), MaxManifestSize))
	}
	mh.bodyLen = uint32(len(body) + tagSize)
	copy(mh.keyCheck[:], keyCheck(key, mh.salt[:]))
	keys, err := newFileKeys(mh.suite, manifestKey(key, mh.salt[:], mh.suite))
	if err != nil {
		return nil, err
	}
	raw := mh.marshal()
	copy(raw[len(raw)-macSize:], keys.mac(raw[:len(raw)-macSize]))
	digest := sha256.Sum256(raw)
	var nonce [nonceSize]byte
	buf := append(raw, make([]byte, len(body)+tagSize)...)
	copy(buf[len(raw):], body)
	sealChunk(keys.aead, digest[:], &nonce, 0, true, buf[len(raw):], len(body))
	return buf, nil
}

// listInput lists the regular files to encrypt, sorted by path.
func listInput(in string) ([]inputFile, bool, error) {
	fi, err := os.Stat(in)
	if err != nil {
		return nil, false, &Error{Path: in, Err: err, Reason: "reading input"}
	}
	if fi.Mode().IsRegular() {
		name := filepath.Base(in)
		if reason := checkPath(name); reason != "" {
			return nil, false, newError(displayPath(name), ErrUnsafePath, reason)
		}
		return []inputFile{{path: name}}, true, nil
	}
	if !fi.IsDir() {
		return nil, false, newError(in, ErrUnsafePath, "not a regular file or directory")
	}
	var files []inputFile
	manifestSize := 0
	err = filepath.WalkDir(in, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return &Error{Path: in, Err: err, Reason: "listing input"}
		}
		if p == in {
			return nil
		}
		rel, err := filepath.Rel(in, p)
		if err != nil {
			return &Error{Path: in, Err: err, Reason: "listing input"}
		}
		rel = filepath.ToSlash(rel)
		switch t := d.Type(); {
		case t&fs.ModeSymlink != 0:
			return newError(displayPath(rel), ErrUnsafePath, "symlinks are not supported")
		case t.IsDir():
			return nil
		case !t.IsRegular():
			return newError(displayPath(rel), ErrUnsafePath, "not a regular file")
		}
		if reason := checkPath(rel); reason != "" {
			return newError(displayPath(rel), ErrUnsafePath, reason)
		}
		if len(files) == MaxFiles {
			return newError(in, ErrUnsupported, fmt.Sprintf("more than %d files", MaxFiles))
		}
		manifestSize += entryFixed + len(rel)
		if manifestSize > MaxManifestSize {
			return newError(in, ErrUnsupported, fmt.Sprintf("manifest would exceed %d bytes", MaxManifestSize))
		}
		files = append(files, inputFile{path: rel, src: filepath.FromSlash(rel)})
		return nil
	})
	if err != nil {
		return nil, false, err
	}
	if len(files) == 0 {
		return nil, false, &Error{Path: in, Err: fs.ErrNotExist, Reason: "no regular files to encrypt"}
	}
	sort.Slice(files, func(i, j int) bool { return files[i].path < files[j].path })
	return files, false, nil
}

// makeDirs creates the parent directories of files in root, mode 0755.
func makeDirs(root *os.Root, files []inputFile) error {
	paths := make([]string, len(files))
	for i := range files {
		paths[i] = files[i].path
	}
	return makeParentDirs(root, paths)
}

func makeParentDirs(root *os.Root, paths []string) error {
	made := map[string]bool{}
	for _, p := range paths {
		var dirs []string
		for d := path.Dir(p); d != "." && !made[d]; d = path.Dir(d) {
			dirs = append(dirs, d)
		}
		for i := len(dirs) - 1; i >= 0; i-- {
			d := dirs[i]
			if err := root.Mkdir(d, 0o755); err != nil {
				return err
			}
			if err := root.Chmod(d, 0o755); err != nil {
				return err
			}
			made[d] = true
		}
	}
	return nil
}

func writeFile(root *os.Root, name string, data []byte) error {
	f, err := root.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Chmod(0o644); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// displayPath makes a path found on disk safe to print: a path that is not
// a valid model path (control characters, invalid UTF-8, …) is quoted.
func displayPath(p string) string {
	if !utf8.ValidString(p) {
		return fmt.Sprintf("%q", p)
	}
	for _, r := range p {
		if r < 0x20 || r == 0x7f {
			return fmt.Sprintf("%q", p)
		}
	}
	return p
}
