package emdl_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/cml-project/cml/emdl"
)

// file is a plaintext file of a test model.
type file struct {
	data []byte
	mode fs.FileMode
}

func testKey(b byte) []byte { return bytes.Repeat([]byte{b}, emdl.KeySize) }

func randBytes(seed uint64, n int) []byte {
	b := make([]byte, n)
	r := rand.NewChaCha8([32]byte{byte(seed), byte(seed >> 8)})
	r.Read(b)
	return b
}

// writeTree writes files (slash paths) under a new directory and returns it.
func writeTree(t *testing.T, files map[string]file) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "plain")
	for p, f := range files {
		full := filepath.Join(dir, filepath.FromSlash(p))
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(full, f.data, 0o600); err != nil {
			t.Fatal(err)
		}
		mode := f.mode
		if mode == 0 {
			mode = 0o644
		}
		if err := os.Chmod(full, mode); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func encryptOpts() emdl.EncryptOptions {
	return emdl.EncryptOptions{KeyID: "model-a", KeyVersion: 2, ChunkSize: 64}
}

// encryptTree encrypts files with key and returns the model directory.
func encryptTree(t *testing.T, key []byte, files map[string]file) string {
	t.Helper()
	model := filepath.Join(t.TempDir(), "model")
	if _, err := emdl.Encrypt(context.Background(), key, writeTree(t, files), model, encryptOpts()); err != nil {
		t.Fatalf("Encrypt: %v", err)
	}
	return model
}

// decrypt decrypts model into a new path and returns it with the error.
func decrypt(t *testing.T, key []byte, model string, opts emdl.DecryptOptions) (string, error) {
	t.Helper()
	out := filepath.Join(t.TempDir(), "out")
	_, err := emdl.Decrypt(context.Background(), key, model, out, opts)
	return out, err
}

// wantRefusal checks that err is an *Error wrapping sentinel whose Path is
// one of paths and whose message names that path, and that nothing was
// written at out (when out != "").
func wantRefusal(t *testing.T, err error, sentinel error, out string, paths ...string) {
	t.Helper()
	if err == nil {
		t.Fatalf("got no error, want %v", sentinel)
	}
	if !errors.Is(err, sentinel) {
		t.Fatalf("got %v, want %v", err, sentinel)
	}
	var e *emdl.Error
	if !errors.As(err, &e) {
		t.Fatalf("got %T (%v), want *emdl.Error", err, err)
	}
	found := false
	for _, p := range paths {
		if e.Path == p {
			found = true
		}
	}
	if !found {
		t.Errorf("error names %q, want one of %q (%v)", e.Path, paths, err)
	}
	if !strings.Contains(err.Error(), e.Path) || !strings.HasPrefix(err.Error(), "emdl: ") {
		t.Errorf("message %q does not name %q", err, e.Path)
	}
	if out != "" {
		assertNoOutput(t, out)
	}
}

// assertNoOutput checks that neither out nor any partial of it exists.
func assertNoOutput(t *testing.T, out string) {
	t.Helper()
	if _, err := os.Lstat(out); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("output %s exists after a failure (err %v)", out, err)
	}
	entries, _ := os.ReadDir(filepath.Dir(out))
	for _, de := range entries {
		if strings.Contains(de.Name(), ".emdl-partial-") {
			t.Errorf("partial output %s left behind", de.Name())
		}
	}
}

// assertTree checks that dir holds exactly files, with their modes.
func assertTree(t *testing.T, dir string, files map[string]file) {
	t.Helper()
	seen := 0
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		f, ok := files[filepath.ToSlash(rel)]
		if !ok {
			t.Errorf("unexpected file %s", rel)
			return nil
		}
		seen++
		got, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		if !bytes.Equal(got, f.data) {
			t.Errorf("%s: content differs (%d bytes, want %d)", rel, len(got), len(f.data))
		}
		want := f.mode
		if want == 0 {
			want = 0o644
		}
		if fi, _ := os.Stat(p); fi.Mode() != want {
			t.Errorf("%s: mode %v, want %v", rel, fi.Mode(), want)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if seen != len(files) {
		t.Errorf("found %d files, want %d", seen, len(files))
	}
}

func TestRoundTripDirectory(t *testing.T) {
	files := map[string]file{
		"config.json":                {data: []byte(`{"layers": 2}`)},
		"empty":                      {data: nil},
		"one":                        {data: []byte{7}},
		"exact/three-chunks.bin":     {data: randBytes(1, 3*64), mode: 0o600},
		"exact/one-chunk.bin":        {data: randBytes(2, 64)},
		"nested/deeper/still/w.bin":  {data: randBytes(3, 1000), mode: 0o755},
		"nested/deeper/chunk+1.bin":  {data: randBytes(4, 65), mode: 0o440},
		"nested/a-b":                 {data: []byte("sorts before nested/a/...")},
		"nested/a/b":                 {data: []byte("x")},
		"unicode/modèle-ünïcödé.txt": {data: []byte("ok")},
	}
	key := testKey(1)
	in := writeTree(t, files)
	model := filepath.Join(t.TempDir(), "model")
	var encProgress, decProgress atomic.Int64
	opts := encryptOpts()
	opts.Progress = func(n int64) { encProgress.Add(n) }
	sum, err := emdl.Encrypt(context.Background(), key, in, model, opts)
	if err != nil {
		t.Fatal(err)
	}
	var total int64
	for _, f := range files {
		total += int64(len(f.data))
	}
	if sum.Files != len(files) || sum.Bytes != total {
		t.Errorf("Encrypt summary %+v, want %d files %d bytes", sum, len(files), total)
	}
	if encProgress.Load() != total {
		t.Errorf("encrypt progress %d, want %d", encProgress.Load(), total)
	}
	// The plaintext must not appear in the model.
	filepath.WalkDir(model, func(p string, d fs.DirEntry, err error) error {
		if !d.IsDir() {
			b, _ := os.ReadFile(p)
			if bytes.Contains(b, []byte(`"layers"`)) {
				t.Errorf("%s contains plaintext", p)
			}
		}
		return nil
	})

	info, err := emdl.Inspect(model)
	if err != nil {
		t.Fatal(err)
	}
	if info.KeyID != "model-a" || info.KeyVersion != 2 || info.Suite != "AES-256-GCM-STREAM" || info.ChunkSize != 64 ||
		info.Files != len(files) || info.TotalSize != total || info.SingleFile || len(info.ModelID) != 32 {
		t.Errorf("Inspect = %+v", info)
	}

	out := filepath.Join(t.TempDir(), "out")
	sum, err = emdl.Decrypt(context.Background(), key, model, out, emdl.DecryptOptions{
		KeyID: "model-a", KeyVersion: 2, Workers: 3,
		Progress: func(n int64) { decProgress.Add(n) },
	})
	if err != nil {
		t.Fatal(err)
	}
	if sum.Files != len(files) || sum.Bytes != total || decProgress.Load() != total {
		t.Errorf("Decrypt summary %+v progress %d, want %d files %d bytes", sum, decProgress.Load(), len(files), total)
	}
	assertTree(t, out, files)
	if fi, err := os.Stat(out); err != nil || fi.Mode() != fs.ModeDir|0o755 {
		t.Errorf("output directory mode %v (%v)", fi.Mode(), err)
	}
	assertNoOutput(t, filepath.Join(filepath.Dir(out), "nothing-else"))
}

func TestRoundTripSingleFile(t *testing.T) {
	for _, size := range []int{0, 1, 63, 64, 65, 64 * 10, 64*10 + 1, 100_000} {
		data := randBytes(uint64(size), size)
		in := filepath.Join(t.TempDir(), "model.gguf")
		if err := os.WriteFile(in, data, 0o640); err != nil {
			t.Fatal(err)
		}
		os.Chmod(in, 0o640)
		model := filepath.Join(t.TempDir(), "enc")
		if _, err := emdl.Encrypt(context.Background(), testKey(2), in, model, encryptOpts()); err != nil {
			t.Fatalf("size %d: %v", size, err)
		}
		info, err := emdl.Inspect(model)
		if err != nil || !info.SingleFile || info.Files != 1 || info.TotalSize != int64(size) {
			t.Fatalf("size %d: Inspect = %+v, %v", size, info, err)
		}
		// The encrypted file is exactly header + plaintext + one tag per chunk.
		chunks := max(1, (size+63)/64)
		fi, err := os.Stat(filepath.Join(model, "model.gguf"))
		if err != nil || fi.Size() != int64(emdl.FileHeaderSize(len("model-a"))+size+chunks*emdl.TagSize) {
			t.Errorf("size %d: encrypted file size %d (%v)", size, fi.Size(), err)
		}
		out := filepath.Join(t.TempDir(), "weights.gguf")
		sum, err := emdl.Decrypt(context.Background(), testKey(2), model, out, emdl.DecryptOptions{})
		if err != nil {
			t.Fatalf("size %d: %v", size, err)
		}
		got, err := os.ReadFile(out)
		if err != nil || !bytes.Equal(got, data) || sum.Bytes != int64(size) || sum.Files != 1 {
			t.Errorf("size %d: round trip differs (%v, %+v)", size, err, sum)
		}
		if fi, _ := os.Stat(out); fi.Mode() != 0o640 {
			t.Errorf("size %d: mode %v, want 0640", size, fi.Mode())
		}
	}
}

func TestRelativeAndSlashedPaths(t *testing.T) {
	files := map[string]file{"d/x": {data: []byte("x")}, "y": {data: nil}}
	in := writeTree(t, files)
	base := t.TempDir()
	t.Chdir(base)
	rel, err := filepath.Rel(base, in)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := emdl.Encrypt(context.Background(), testKey(4), rel+"/", "model/", encryptOpts()); err != nil {
		t.Fatal(err)
	}
	if _, err := emdl.Decrypt(context.Background(), testKey(4), "./model/", "out", emdl.DecryptOptions{}); err != nil {
		t.Fatal(err)
	}
	assertTree(t, filepath.Join(base, "out"), files)
}

func TestRoundTripDefaultChunkSize(t *testing.T) {
	files := map[string]file{
		"a": {data: randBytes(5, emdl.DefaultChunkSize*2+17)},
		"b": {data: randBytes(6, emdl.DefaultChunkSize)},
		"c": {data: randBytes(7, 5)},
	}
	in := writeTree(t, files)
	model := filepath.Join(t.TempDir(), "model")
	if _, err := emdl.Encrypt(context.Background(), testKey(3), in, model, emdl.EncryptOptions{KeyID: "k", KeyVersion: 1, Workers: 1}); err != nil {
		t.Fatal(err)
	}
	out, err := decrypt(t, testKey(3), model, emdl.DecryptOptions{Workers: 1})
	if err != nil {
		t.Fatal(err)
	}
	assertTree(t, out, files)
}

func TestEncryptIntoEmptyDirectory(t *testing.T) {
	in := writeTree(t, map[string]file{"a": {data: []byte("a")}})
	out := t.TempDir() // exists, empty
	if _, err := emdl.Encrypt(context.Background(), testKey(1), in, out, encryptOpts()); err != nil {
		t.Fatal(err)
	}
	if _, err := emdl.Inspect(out); err != nil {
		t.Fatal(err)
	}
}

func TestEncryptRefusesNonEmptyOutput(t *testing.T) {
	in := writeTree(t, map[string]file{"a": {data: []byte("a")}})
	out := t.TempDir()
	os.WriteFile(filepath.Join(out, "x"), nil, 0o644)
	_, err := emdl.Encrypt(context.Background(), testKey(1), in, out, encryptOpts())
	wantRefusal(t, err, emdl.ErrOutputExists, "", out)

	// An output inside the input is refused before anything is written.
	_, err = emdl.Encrypt(context.Background(), testKey(1), in, filepath.Join(in, "enc"), encryptOpts())
	wantRefusal(t, err, emdl.ErrUnsafePath, filepath.Join(in, "enc"), filepath.Join(in, "enc"))
}

func TestDecryptRefusesExistingOutput(t *testing.T) {
	model := encryptTree(t, testKey(1), map[string]file{"a": {data: []byte("a")}})
	for _, existing := range []string{"file", "emptydir"} {
		out := filepath.Join(t.TempDir(), existing)
		if existing == "file" {
			os.WriteFile(out, []byte("keep"), 0o644)
		} else {
			os.Mkdir(out, 0o755)
		}
		_, err := emdl.Decrypt(context.Background(), testKey(1), model, out, emdl.DecryptOptions{})
		wantRefusal(t, err, emdl.ErrOutputExists, "", out)
		if existing == "file" {
			if b, _ := os.ReadFile(out); string(b) != "keep" {
				t.Error("existing output was modified")
			}
		}
	}
}

func TestEncryptRefusesSymlinksAndSpecialFiles(t *testing.T) {
	in := writeTree(t, map[string]file{"a": {data: []byte("a")}, "d/b": {data: []byte("b")}})
	os.Symlink("a", filepath.Join(in, "link"))
	_, err := emdl.Encrypt(context.Background(), testKey(1), in, filepath.Join(t.TempDir(), "m"), encryptOpts())
	wantRefusal(t, err, emdl.ErrUnsafePath, "", "link")

	in = writeTree(t, map[string]file{"a": {data: []byte("a")}})
	os.Symlink(t.TempDir(), filepath.Join(in, "dirlink"))
	_, err = emdl.Encrypt(context.Background(), testKey(1), in, filepath.Join(t.TempDir(), "m"), encryptOpts())
	wantRefusal(t, err, emdl.ErrUnsafePath, "", "dirlink")

	in = writeTree(t, map[string]file{"a": {data: []byte("a")}})
	os.WriteFile(filepath.Join(in, emdl.ManifestName), nil, 0o644)
	_, err = emdl.Encrypt(context.Background(), testKey(1), in, filepath.Join(t.TempDir(), "m"), encryptOpts())
	wantRefusal(t, err, emdl.ErrUnsafePath, "", emdl.ManifestName)

	in = writeTree(t, map[string]file{"a": {data: []byte("a")}})
	os.WriteFile(filepath.Join(in, "bad\nname"), nil, 0o644)
	_, err = emdl.Encrypt(context.Background(), testKey(1), in, filepath.Join(t.TempDir(), "m"), encryptOpts())
	wantRefusal(t, err, emdl.ErrUnsafePath, "", `"bad\nname"`)
}

func TestEncryptOptionsValidated(t *testing.T) {
	in := writeTree(t, map[string]file{"a": {data: []byte("a")}})
	for name, tc := range map[string]struct {
		key  []byte
		opts emdl.EncryptOptions
	}{
		"short key":        {testKey(1)[:16], encryptOpts()},
		"no key id":        {testKey(1), emdl.EncryptOptions{KeyVersion: 1}},
		"bad key id":       {testKey(1), emdl.EncryptOptions{KeyID: "a/b", KeyVersion: 1}},
		"long key id":      {testKey(1), emdl.EncryptOptions{KeyID: strings.Repeat("k", 129), KeyVersion: 1}},
		"version 0":        {testKey(1), emdl.EncryptOptions{KeyID: "k"}},
		"chunk too small":  {testKey(1), emdl.EncryptOptions{KeyID: "k", KeyVersion: 1, ChunkSize: 63}},
		"chunk too large":  {testKey(1), emdl.EncryptOptions{KeyID: "k", KeyVersion: 1, ChunkSize: emdl.MaxChunkSize + 1}},
		"negative workers": {testKey(1), emdl.EncryptOptions{KeyID: "k", KeyVersion: 1, Workers: -1}},
	} {
		out := filepath.Join(t.TempDir(), "m")
		if _, err := emdl.Encrypt(context.Background(), tc.key, in, out, tc.opts); err == nil {
			t.Errorf("%s: no error", name)
		}
		assertNoOutput(t, out)
	}
	if _, err := emdl.Decrypt(context.Background(), testKey(1)[:31], in, filepath.Join(t.TempDir(), "o"), emdl.DecryptOptions{}); err == nil {
		t.Error("Decrypt accepted a 31-byte key")
	}
}

func TestEncryptEmptyDirectory(t *testing.T) {
	in := t.TempDir()
	os.Mkdir(filepath.Join(in, "sub"), 0o755)
	out := filepath.Join(t.TempDir(), "m")
	_, err := emdl.Encrypt(context.Background(), testKey(1), in, out, encryptOpts())
	if !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("got %v, want an error wrapping fs.ErrNotExist", err)
	}
	assertNoOutput(t, out)
}

// TestRoundTripManyChunksPerJob uses 4 KiB chunks, which the pipeline groups
// into jobs of 256 chunks (1 MiB): files end inside a job, at a job's end
// and inside a chunk; a chunk modified in the middle of a later job is named
// exactly, and no output is left.
func TestRoundTripManyChunksPerJob(t *testing.T) {
	const chunk = 4096
	files := map[string]file{
		"a": {data: randBytes(21, 3<<20+100)}, // 4 jobs, the last one short
		"b": {data: randBytes(22, 2<<20)},     // exactly 2 jobs
		"c": {data: randBytes(23, 1<<20-1)},   // 1 job, last chunk short
		"d": {data: randBytes(24, chunk+1)},
	}
	in := writeTree(t, files)
	model := filepath.Join(t.TempDir(), "model")
	opts := emdl.EncryptOptions{KeyID: "k", KeyVersion: 1, ChunkSize: chunk}
	if _, err := emdl.Encrypt(context.Background(), testKey(4), in, model, opts); err != nil {
		t.Fatal(err)
	}
	for _, verify := range []bool{false, true} {
		out, err := decrypt(t, testKey(4), model, emdl.DecryptOptions{SkipPlaintextHash: !verify})
		if err != nil {
			t.Fatalf("verify hash %v: %v", verify, err)
		}
		assertTree(t, out, files)
	}

	const bad = 256 + 44 // the second job's 45th chunk
	hdr := emdl.FileHeaderSize(len("k"))
	edit(t, model, "a", xorAt(hdr+bad*(chunk+emdl.TagSize)+100, 0x01))
	out := filepath.Join(t.TempDir(), "out")
	_, err := emdl.Decrypt(context.Background(), testKey(4), model, out, emdl.DecryptOptions{SkipPlaintextHash: true})
	wantRefusal(t, err, emdl.ErrTampered, out, "a")
	if want := fmt.Sprintf("chunk %d failed authentication", bad); !strings.Contains(err.Error(), want) {
		t.Errorf("message %q does not say %q", err, want)
	}
}
