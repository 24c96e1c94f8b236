package emdl_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cml-project/cml/emdl"
)

// The fixture: chunk size 64, key id "model-a" (7 bytes).
var (
	fixture = map[string]file{
		"weights/w.bin": {data: randBytes(10, 4*64)}, // exactly 4 chunks
		"a.bin":         {data: randBytes(11, 100)},  // 2 chunks, same size as b.bin
		"b.bin":         {data: randBytes(12, 100)},
		"empty":         {data: nil},
	}
	fixtureKey = testKey(42)
	fileHdr    = emdl.FileHeaderSize(len("model-a"))
	manHdr     = emdl.ManifestHeaderSize(len("model-a"))
)

const encChunk = 64 + emdl.TagSize

// fixtureModel encrypts the fixture into a fresh model directory.
func fixtureModel(t *testing.T) string {
	t.Helper()
	return encryptTree(t, fixtureKey, fixture)
}

func readFile(t *testing.T, p string) []byte {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func writeFile(t *testing.T, p string, b []byte) {
	t.Helper()
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// edit rewrites the file p of model with f's result.
func edit(t *testing.T, model, p string, f func([]byte) []byte) {
	t.Helper()
	full := filepath.Join(model, filepath.FromSlash(p))
	writeFile(t, full, f(readFile(t, full)))
}

func xorAt(off int, v byte) func([]byte) []byte {
	return func(b []byte) []byte { b[off] ^= v; return b }
}

// decryptFixture decrypts model with the fixture key and checks a refusal.
func decryptFixture(t *testing.T, model string, opts emdl.DecryptOptions, sentinel error, paths ...string) error {
	t.Helper()
	out := filepath.Join(t.TempDir(), "out")
	_, err := emdl.Decrypt(context.Background(), fixtureKey, model, out, opts)
	wantRefusal(t, err, sentinel, out, paths...)
	return err
}

func TestFixtureDecrypts(t *testing.T) {
	out, err := decrypt(t, fixtureKey, fixtureModel(t), emdl.DecryptOptions{KeyID: "model-a", KeyVersion: 2})
	if err != nil {
		t.Fatal(err)
	}
	assertTree(t, out, fixture)
}

func TestWrongKey(t *testing.T) {
	model := fixtureModel(t)
	out := filepath.Join(t.TempDir(), "out")
	_, err := emdl.Decrypt(context.Background(), testKey(43), model, out, emdl.DecryptOptions{})
	wantRefusal(t, err, emdl.ErrWrongKey, out, emdl.ManifestName)
	if errors.Is(err, emdl.ErrTampered) {
		t.Error("a wrong key is reported as tampering")
	}
}

func TestWrongKeyIDOrVersion(t *testing.T) {
	model := fixtureModel(t)
	decryptFixture(t, model, emdl.DecryptOptions{KeyID: "model-b"}, emdl.ErrKeyMismatch, emdl.ManifestName)
	decryptFixture(t, model, emdl.DecryptOptions{KeyVersion: 3}, emdl.ErrKeyMismatch, emdl.ManifestName)
	decryptFixture(t, model, emdl.DecryptOptions{KeyID: "model-a", KeyVersion: 1}, emdl.ErrKeyMismatch, emdl.ManifestName)
}

func TestTamperedFileHeader(t *testing.T) {
	// Every field of a file header (SPEC.md §3.1); whatever changes, the
	// header is no longer the one the manifest lists.
	for name, off := range map[string]int{
		"magic":       0,
		"version":     4,
		"kind":        5,
		"suite":       7,
		"chunk size":  11,
		"length":      19,
		"model id":    20,
		"salt":        36,
		"key version": 71,
		"key id len":  72,
		"key id":      73,
		"key check":   73 + 7,
		"mac":         fileHdr - 1,
	} {
		t.Run(name, func(t *testing.T) {
			model := fixtureModel(t)
			edit(t, model, "weights/w.bin", xorAt(off, 0x01))
			decryptFixture(t, model, emdl.DecryptOptions{}, emdl.ErrTampered, "weights/w.bin")
		})
	}
}

func TestTamperedManifestHeader(t *testing.T) {
	for name, tc := range map[string]struct {
		off      int
		sentinel error
	}{
		"magic":       {0, emdl.ErrTampered},
		"kind":        {5, emdl.ErrTampered},
		"chunk size":  {11, emdl.ErrTampered},
		"file count":  {15, emdl.ErrTampered},
		"total size":  {23, emdl.ErrTampered},
		"flags":       {24, emdl.ErrTampered}, // single-file flag on a 4-file model
		"model id":    {30, emdl.ErrTampered},
		"key version": {76, emdl.ErrTampered},
		"key id":      {78, emdl.ErrTampered},
		"mac":         {manHdr - 1, emdl.ErrTampered},
		"body":        {manHdr + 5, emdl.ErrTampered},
		"body tag":    {-1, emdl.ErrTampered},
		// The salt and key check are inputs of the key check: altering them
		// is indistinguishable from a wrong key (SPEC.md §6).
		"salt":      {41, emdl.ErrWrongKey},
		"key check": {manHdr - 64, emdl.ErrWrongKey},
		// The body length says where the manifest ends.
		"body length +": {manHdr - 65, emdl.ErrTruncated},
	} {
		t.Run(name, func(t *testing.T) {
			model := fixtureModel(t)
			edit(t, model, emdl.ManifestName, func(b []byte) []byte {
				off := tc.off
				if off < 0 {
					off += len(b)
				}
				b[off] ^= 0x01
				return b
			})
			decryptFixture(t, model, emdl.DecryptOptions{}, tc.sentinel, emdl.ManifestName)
		})
	}
}

func TestUnknownVersionAndSuite(t *testing.T) {
	for name, f := range map[string]func([]byte) []byte{
		"version 2":       func(b []byte) []byte { b[4] = 2; return b },
		"version 0":       func(b []byte) []byte { b[4] = 0; return b },
		"suite 2 (SIV)":   func(b []byte) []byte { binary.BigEndian.PutUint16(b[6:], 2); return b },
		"suite 3 (FIPS)":  func(b []byte) []byte { binary.BigEndian.PutUint16(b[6:], 3); return b },
		"suite 0":         func(b []byte) []byte { binary.BigEndian.PutUint16(b[6:], 0); return b },
		"suite 0x1234":    func(b []byte) []byte { binary.BigEndian.PutUint16(b[6:], 0x1234); return b },
		"unknown flag":    func(b []byte) []byte { b[24] |= 0x80; return b },
		"huge chunk size": func(b []byte) []byte { binary.BigEndian.PutUint32(b[8:], 1<<30); return b },
	} {
		t.Run(name, func(t *testing.T) {
			model := fixtureModel(t)
			edit(t, model, emdl.ManifestName, f)
			decryptFixture(t, model, emdl.DecryptOptions{}, emdl.ErrUnsupported, emdl.ManifestName)
			_, err := emdl.Inspect(model)
			wantRefusal(t, err, emdl.ErrUnsupported, "", emdl.ManifestName)
		})
	}
}

func TestTamperedChunk(t *testing.T) {
	for _, off := range []int{0, 63, 64, 79} { // first and last plaintext byte, first and last tag byte
		t.Run(fmt.Sprint(off), func(t *testing.T) {
			model := fixtureModel(t)
			edit(t, model, "weights/w.bin", xorAt(fileHdr+2*encChunk+off, 0x80))
			err := decryptFixture(t, model, emdl.DecryptOptions{}, emdl.ErrTampered, "weights/w.bin")
			if !strings.Contains(err.Error(), "chunk 2 failed authentication") {
				t.Errorf("message %q does not name chunk 2", err)
			}
		})
	}
}

func TestTruncated(t *testing.T) {
	for name, f := range map[string]func([]byte) []byte{
		"last chunk dropped": func(b []byte) []byte { return b[:len(b)-encChunk] },
		"cut mid-chunk":      func(b []byte) []byte { return b[:fileHdr+encChunk+10] },
		"one byte short":     func(b []byte) []byte { return b[:len(b)-1] },
		"header only":        func(b []byte) []byte { return b[:fileHdr] },
		"cut in header":      func(b []byte) []byte { return b[:fileHdr/2] },
		"empty":              func(b []byte) []byte { return nil },
	} {
		t.Run(name, func(t *testing.T) {
			model := fixtureModel(t)
			edit(t, model, "weights/w.bin", f)
			decryptFixture(t, model, emdl.DecryptOptions{}, emdl.ErrTruncated, "weights/w.bin")
		})
	}
	t.Run("manifest", func(t *testing.T) {
		model := fixtureModel(t)
		edit(t, model, emdl.ManifestName, func(b []byte) []byte { return b[:len(b)-1] })
		decryptFixture(t, model, emdl.DecryptOptions{}, emdl.ErrTruncated, emdl.ManifestName)
	})
	t.Run("empty file's only chunk", func(t *testing.T) {
		model := fixtureModel(t)
		edit(t, model, "empty", func(b []byte) []byte { return b[:fileHdr] })
		decryptFixture(t, model, emdl.DecryptOptions{}, emdl.ErrTruncated, "empty")
	})
}

func TestExtended(t *testing.T) {
	for name, f := range map[string]func([]byte) []byte{
		"last chunk repeated": func(b []byte) []byte { return append(b, b[len(b)-encChunk:]...) },
		"one byte":            func(b []byte) []byte { return append(b, 0) },
		"tag-sized":           func(b []byte) []byte { return append(b, make([]byte, emdl.TagSize)...) },
	} {
		t.Run(name, func(t *testing.T) {
			model := fixtureModel(t)
			edit(t, model, "weights/w.bin", f)
			decryptFixture(t, model, emdl.DecryptOptions{}, emdl.ErrExtended, "weights/w.bin")
		})
	}
	t.Run("manifest", func(t *testing.T) {
		model := fixtureModel(t)
		edit(t, model, emdl.ManifestName, func(b []byte) []byte { return append(b, 0) })
		decryptFixture(t, model, emdl.DecryptOptions{}, emdl.ErrExtended, emdl.ManifestName)
	})
}

func TestSkipPlaintextHashStillAuthenticates(t *testing.T) {
	skip := emdl.DecryptOptions{SkipPlaintextHash: true}
	model := fixtureModel(t)
	edit(t, model, "weights/w.bin", xorAt(fileHdr+encChunk+3, 0x04))
	decryptFixture(t, model, skip, emdl.ErrTampered, "weights/w.bin")
	model = fixtureModel(t)
	edit(t, model, "weights/w.bin", func(b []byte) []byte { return b[:len(b)-encChunk] })
	decryptFixture(t, model, skip, emdl.ErrTruncated, "weights/w.bin")
	model = fixtureModel(t)
	edit(t, model, "a.bin", xorAt(40, 0x04))
	decryptFixture(t, model, skip, emdl.ErrTampered, "a.bin")
}

func TestReorderedChunks(t *testing.T) {
	model := fixtureModel(t)
	edit(t, model, "weights/w.bin", func(b []byte) []byte {
		c0 := bytes.Clone(b[fileHdr : fileHdr+encChunk])
		copy(b[fileHdr:], b[fileHdr+encChunk:fileHdr+2*encChunk])
		copy(b[fileHdr+encChunk:], c0)
		return b
	})
	err := decryptFixture(t, model, emdl.DecryptOptions{}, emdl.ErrTampered, "weights/w.bin")
	if !strings.Contains(err.Error(), "chunk 0") {
		t.Errorf("message %q does not name chunk 0", err)
	}
}

func TestChunkSplicedFromAnotherFile(t *testing.T) {
	model := fixtureModel(t)
	a := readFile(t, filepath.Join(model, "a.bin"))
	edit(t, model, "b.bin", func(b []byte) []byte {
		copy(b[fileHdr:], a[fileHdr:fileHdr+encChunk])
		return b
	})
	decryptFixture(t, model, emdl.DecryptOptions{}, emdl.ErrTampered, "b.bin")
}

func TestRenamedWithinModel(t *testing.T) {
	t.Run("to a new name", func(t *testing.T) {
		model := fixtureModel(t)
		os.Rename(filepath.Join(model, "b.bin"), filepath.Join(model, "c.bin"))
		decryptFixture(t, model, emdl.DecryptOptions{}, emdl.ErrNotInManifest, "c.bin")
	})
	t.Run("two files swapped", func(t *testing.T) {
		model := fixtureModel(t)
		a, b := filepath.Join(model, "a.bin"), filepath.Join(model, "b.bin")
		os.Rename(a, a+".tmp")
		os.Rename(b, a)
		os.Rename(a+".tmp", b)
		decryptFixture(t, model, emdl.DecryptOptions{}, emdl.ErrTampered, "a.bin", "b.bin")
	})
	t.Run("path bound into the key", func(t *testing.T) {
		// An encryptor holding the key lists b.bin's header under the name
		// a.bin: the header digest now matches, but K_file binds the path.
		model := fixtureModel(t)
		os.Rename(filepath.Join(model, "b.bin"), filepath.Join(model, "a.bin"))
		if err := emdl.RewriteManifest(model, fixtureKey, func(es []emdl.TestEntry) []emdl.TestEntry {
			var a, b int
			for i := range es {
				switch es[i].Path {
				case "a.bin":
					a = i
				case "b.bin":
					b = i
				}
			}
			es[b].Path = "a.bin"
			es[a] = es[b]
			return append(es[:b], es[b+1:]...)
		}); err != nil {
			t.Fatal(err)
		}
		err := decryptFixture(t, model, emdl.DecryptOptions{}, emdl.ErrTampered, "a.bin")
		if !strings.Contains(err.Error(), "header failed authentication") {
			t.Errorf("message %q: want the header MAC to fail", err)
		}
	})
}

func TestSwappedBetweenModels(t *testing.T) {
	// Same key, same paths, same plaintext: only the random model id and
	// salts differ.
	model1, model2 := fixtureModel(t), fixtureModel(t)
	writeFile(t, filepath.Join(model1, "a.bin"), readFile(t, filepath.Join(model2, "a.bin")))
	err := decryptFixture(t, model1, emdl.DecryptOptions{}, emdl.ErrTampered, "a.bin")
	if !strings.Contains(err.Error(), "another model") {
		t.Errorf("message %q does not say the file is from another model", err)
	}
	// The manifest of one model does not open the other's files either.
	model3 := fixtureModel(t)
	writeFile(t, filepath.Join(model3, emdl.ManifestName), readFile(t, filepath.Join(model2, emdl.ManifestName)))
	decryptFixture(t, model3, emdl.DecryptOptions{}, emdl.ErrTampered, "a.bin", "b.bin", "empty", "weights/w.bin")
}

func TestMissingFile(t *testing.T) {
	model := fixtureModel(t)
	os.Remove(filepath.Join(model, "weights/w.bin"))
	decryptFixture(t, model, emdl.DecryptOptions{}, emdl.ErrMissingFile, "weights/w.bin")

	model = fixtureModel(t)
	os.Remove(filepath.Join(model, emdl.ManifestName))
	decryptFixture(t, model, emdl.DecryptOptions{}, emdl.ErrMissingFile, emdl.ManifestName)
	_, err := emdl.Inspect(model)
	wantRefusal(t, err, emdl.ErrMissingFile, "", emdl.ManifestName)
}

func TestExtraFile(t *testing.T) {
	for _, extra := range []string{"extra", "weights/extra.bin", ".hidden"} {
		model := fixtureModel(t)
		writeFile(t, filepath.Join(model, filepath.FromSlash(extra)), []byte("x"))
		decryptFixture(t, model, emdl.DecryptOptions{}, emdl.ErrNotInManifest, extra)
	}
	model := fixtureModel(t)
	os.Mkdir(filepath.Join(model, "emptydir"), 0o755)
	decryptFixture(t, model, emdl.DecryptOptions{}, emdl.ErrNotInManifest, "emptydir")
}

func TestSymlinkInModel(t *testing.T) {
	t.Run("file", func(t *testing.T) {
		model := fixtureModel(t)
		a := filepath.Join(model, "a.bin")
		elsewhere := filepath.Join(t.TempDir(), "a.bin")
		os.Rename(a, elsewhere)
		os.Symlink(elsewhere, a) // same bytes, but a symlink
		decryptFixture(t, model, emdl.DecryptOptions{}, emdl.ErrUnsafePath, "a.bin")
	})
	t.Run("directory", func(t *testing.T) {
		model := fixtureModel(t)
		w := filepath.Join(model, "weights")
		elsewhere := filepath.Join(t.TempDir(), "weights")
		os.Rename(w, elsewhere)
		os.Symlink(elsewhere, w)
		decryptFixture(t, model, emdl.DecryptOptions{}, emdl.ErrUnsafePath, "weights")
	})
	t.Run("manifest", func(t *testing.T) {
		model := fixtureModel(t)
		m := filepath.Join(model, emdl.ManifestName)
		elsewhere := filepath.Join(t.TempDir(), "m")
		os.Rename(m, elsewhere)
		os.Symlink(elsewhere, m)
		decryptFixture(t, model, emdl.DecryptOptions{}, emdl.ErrUnsafePath, emdl.ManifestName)
	})
	t.Run("extra dangling", func(t *testing.T) {
		model := fixtureModel(t)
		os.Symlink("/etc/passwd", filepath.Join(model, "passwd"))
		decryptFixture(t, model, emdl.DecryptOptions{}, emdl.ErrUnsafePath, "passwd")
	})
}

func TestUnsafeManifestEntries(t *testing.T) {
	rename := func(from, to string) func([]emdl.TestEntry) []emdl.TestEntry {
		return func(es []emdl.TestEntry) []emdl.TestEntry {
			for i := range es {
				if es[i].Path == from {
					es[i].Path = to
				}
			}
			return es
		}
	}
	for name, f := range map[string]func([]emdl.TestEntry) []emdl.TestEntry{
		"absolute":            rename("a.bin", "/etc/cron.d/x"),
		"dot-dot":             rename("a.bin", "../escape"),
		"escaping":            rename("weights/w.bin", "weights/../../escape"),
		"dot":                 rename("a.bin", "./a.bin"),
		"empty element":       rename("weights/w.bin", "weights//w.bin"),
		"trailing slash":      rename("a.bin", "a.bin/"),
		"backslash":           rename("a.bin", `..\escape`),
		"NUL":                 rename("a.bin", "a\x00.bin"),
		"newline":             rename("a.bin", "a\n.bin"),
		"empty":               rename("a.bin", ""),
		"invalid UTF-8":       rename("a.bin", "a\xff.bin"),
		"reserved name":       rename("a.bin", emdl.ManifestName),
		"too long":            rename("a.bin", strings.Repeat("d/", 600)+"a"),
		"file is a directory": rename("empty", "weights"),
		"duplicate":           func(es []emdl.TestEntry) []emdl.TestEntry { return append(es, es[len(es)-1]) },
		"symlink mode":        func(es []emdl.TestEntry) []emdl.TestEntry { es[0].Mode = 0o120777; return es },
		"go symlink mode bit": func(es []emdl.TestEntry) []emdl.TestEntry { es[0].Mode = 1<<27 | 0o777; return es },
		"setuid":              func(es []emdl.TestEntry) []emdl.TestEntry { es[0].Mode = 0o4755; return es },
		"directory mode":      func(es []emdl.TestEntry) []emdl.TestEntry { es[0].Mode = 0o40755; return es },
	} {
		t.Run(name, func(t *testing.T) {
			model := fixtureModel(t)
			if err := emdl.RewriteManifest(model, fixtureKey, f); err != nil {
				t.Fatal(err)
			}
			parent := t.TempDir()
			out := filepath.Join(parent, "sub", "out")
			os.Mkdir(filepath.Dir(out), 0o755)
			_, err := emdl.Decrypt(context.Background(), fixtureKey, model, out, emdl.DecryptOptions{})
			wantRefusal(t, err, emdl.ErrUnsafePath, out, emdl.ManifestName)
			if _, err := os.Lstat(filepath.Join(parent, "escape")); err == nil {
				t.Error("a file escaped the output directory")
			}
		})
	}
	t.Run("unsorted", func(t *testing.T) {
		model := fixtureModel(t)
		emdl.RewriteManifest(model, fixtureKey, func(es []emdl.TestEntry) []emdl.TestEntry {
			es[0], es[1] = es[1], es[0]
			return es
		})
		decryptFixture(t, model, emdl.DecryptOptions{}, emdl.ErrTampered, emdl.ManifestName)
	})
	t.Run("single file in a directory", func(t *testing.T) {
		in := filepath.Join(t.TempDir(), "m.bin")
		writeFile(t, in, []byte("x"))
		model := filepath.Join(t.TempDir(), "model")
		if _, err := emdl.Encrypt(context.Background(), fixtureKey, in, model, encryptOpts()); err != nil {
			t.Fatal(err)
		}
		emdl.RewriteManifest(model, fixtureKey, rename("m.bin", "../m.bin"))
		decryptFixture(t, model, emdl.DecryptOptions{}, emdl.ErrUnsafePath, emdl.ManifestName)
	})
	t.Run("wrong plaintext hash", func(t *testing.T) {
		model := fixtureModel(t)
		emdl.RewriteManifest(model, fixtureKey, func(es []emdl.TestEntry) []emdl.TestEntry {
			for i := range es {
				if es[i].Path == "b.bin" {
					es[i].SHA256[0] ^= 1
				}
			}
			return es
		})
		err := decryptFixture(t, model, emdl.DecryptOptions{}, emdl.ErrTampered, "b.bin")
		if !strings.Contains(err.Error(), "SHA-256") {
			t.Errorf("message %q does not name the hash", err)
		}
		// SkipPlaintextHash skips exactly this check.
		out, err := decrypt(t, fixtureKey, model, emdl.DecryptOptions{SkipPlaintextHash: true})
		if err != nil {
			t.Fatalf("SkipPlaintextHash: %v", err)
		}
		assertTree(t, out, fixture)
	})
	t.Run("wrong size", func(t *testing.T) {
		model := fixtureModel(t)
		emdl.RewriteManifest(model, fixtureKey, func(es []emdl.TestEntry) []emdl.TestEntry {
			es[0].Size++
			return es
		})
		decryptFixture(t, model, emdl.DecryptOptions{}, emdl.ErrTampered, "a.bin")
	})
}
