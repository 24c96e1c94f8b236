package emdl

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"testing"
)

// Seeds: the committed corpus in testdata/fuzz/, plus the known-answer
// model's headers, read at run time.
func katSeeds(f *testing.F, manifest bool) {
	dir := filepath.Join("testdata", "kat", "model")
	if manifest {
		if b, err := os.ReadFile(filepath.Join(dir, ManifestName)); err == nil {
			f.Add(b)
		}
		return
	}
	for _, p := range []string{"README.txt", "empty", "weights/layer0.bin"} {
		if b, err := os.ReadFile(filepath.Join(dir, filepath.FromSlash(p))); err == nil {
			f.Add(b)
		}
	}
}

// checkParseError checks what every parser error must be: an *Error that
// wraps a sentinel.
func checkParseError(t *testing.T, err error) {
	var e *Error
	if !errors.As(err, &e) || !isSentinel(e.Err) || e.Reason == "" {
		t.Fatalf("parser returned %T %v, want an *Error wrapping a sentinel", err, err)
	}
}

// FuzzParseHeader: parsing never panics, and a header that parses
// serializes to exactly the bytes it was parsed from (no malleability: one
// header has one encoding).
func FuzzParseHeader(f *testing.F) {
	katSeeds(f, false)
	f.Add([]byte("EMDL"))
	f.Add([]byte("EMDL\x02F\x00\x01"))
	f.Fuzz(func(t *testing.T, b []byte) {
		h, n, err := parseFileHeader(b)
		if err != nil {
			checkParseError(t, err)
			return
		}
		if n > len(b) || n != fileHeaderSize(len(h.keyID)) {
			t.Fatalf("consumed %d of %d bytes", n, len(b))
		}
		if got := h.marshal(); !bytes.Equal(got, b[:n]) {
			t.Fatalf("re-serialized header differs:\n got %x\nwant %x", got, b[:n])
		}
		if h.chunks() == 0 || h.encryptedSize() < int64(n) {
			t.Fatalf("chunks %d, encrypted size %d", h.chunks(), h.encryptedSize())
		}
	})
}

// FuzzParseManifest parses the manifest header and, treating what follows it
// as a decrypted body, the entries. Neither panics; what parses serializes
// back to the same bytes; parsed entries are safe paths.
func FuzzParseManifest(f *testing.F) {
	katSeeds(f, true)
	// A header followed by a plaintext body, so the entry parser is reached.
	mh := &manifestHeader{suite: suiteAES256GCMStream, chunkSize: 64, files: 2, totalSize: 3, keyVersion: 1, keyID: "k"}
	body := marshalEntries([]entry{{path: "a", size: 1, mode: 0o644}, {path: "d/b", size: 2, mode: 0o600}})
	mh.bodyLen = uint32(len(body) + tagSize)
	f.Add(append(mh.marshal(), body...))
	f.Fuzz(func(t *testing.T, b []byte) {
		h, n, err := parseManifestHeader(b)
		if err != nil {
			checkParseError(t, err)
			return
		}
		if got := h.marshal(); !bytes.Equal(got, b[:n]) {
			t.Fatalf("re-serialized header differs:\n got %x\nwant %x", got, b[:n])
		}
		entries, err := parseEntries(b[n:], h)
		if err != nil {
			checkParseError(t, err)
			return
		}
		if got := marshalEntries(entries); !bytes.Equal(got, b[n:]) {
			t.Fatalf("re-serialized entries differ:\n got %x\nwant %x", got, b[n:])
		}
		for i := range entries {
			if reason := checkPath(entries[i].path); reason != "" {
				t.Fatalf("accepted unsafe path %q: %s", entries[i].path, reason)
			}
			if i > 0 && entries[i-1].path >= entries[i].path {
				t.Fatalf("accepted unsorted or duplicate paths %q, %q", entries[i-1].path, entries[i].path)
			}
		}
	})
}
