package loader_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/cml-project/cml/client/clienttest"
	"github.com/cml-project/cml/emdl"
	"github.com/cml-project/cml/loader"
)

const keyID = "llama-3-8b"

// fixture is a broker holding a key, a plaintext model and its encryption.
type fixture struct {
	b     *clienttest.Broker
	dek   []byte
	plain string // plaintext model directory
	src   string // encrypted model
	out   string // an empty directory to put --dst in
	logs  *bytes.Buffer
}

// plainFiles is the test model: nested directories, an empty file, a file
// of several chunks.
var plainFiles = map[string]int{
	"config.json":             200,
	"tokenizer/vocab.txt":     5000,
	"weights/model-00001.bin": 3<<20 + 17,
	"weights/empty.bin":       0,
	"weights/model-00002.bin": 1 << 20,
}

func newFixture(t *testing.T, o clienttest.Options) *fixture {
	t.Helper()
	b := clienttest.New(t, o)
	f := &fixture{b: b, dek: b.ImportKey(t, keyID, b.DefaultPolicy()), logs: &bytes.Buffer{}}
	f.plain = t.TempDir()
	for name, size := range plainFiles {
		p := filepath.Join(f.plain, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		data := make([]byte, size)
		rand.Read(data)
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	f.src = filepath.Join(t.TempDir(), "model.emdl")
	f.encrypt(t, f.plain, f.src, f.dek, 1)
	f.out = t.TempDir()
	return f
}

func (f *fixture) encrypt(t *testing.T, in, out string, dek []byte, version uint32) {
	t.Helper()
	if _, err := emdl.Encrypt(context.Background(), dek, in, out, emdl.EncryptOptions{KeyID: keyID, KeyVersion: version, ChunkSize: 1 << 16}); err != nil {
		t.Fatalf("encrypt: %v", err)
	}
}

// config returns a loader configuration for the fixture, into dst.
func (f *fixture) config(t *testing.T, dst string) loader.Config {
	return loader.Config{
		KBS:     f.b.Addr,
		KBSID:   f.b.KBSID,
		KeyID:   keyID,
		Src:     f.src,
		Dst:     dst,
		Source:  f.b.Source(t, f.b.LoaderID),
		Quote:   f.b.Quoter(),
		Timeout: 30 * time.Second,
		Logger:  slog.New(slog.NewJSONHandler(f.logs, nil)),
	}
}

// tree lists the regular files under dir with their contents' lengths and
// a check that each equals the plaintext.
func tree(t *testing.T, dir string) []string {
	t.Helper()
	var out []string
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		if rel == "." {
			return nil
		}
		if d.IsDir() {
			out = append(out, filepath.ToSlash(rel)+"/")
		} else {
			out = append(out, filepath.ToSlash(rel))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	sort.Strings(out)
	return out
}

// checkModel fails unless dir holds exactly the plaintext model.
func (f *fixture) checkModel(t *testing.T, dir string) {
	t.Helper()
	want := tree(t, f.plain)
	got := tree(t, dir)
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("decrypted tree\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	for name := range plainFiles {
		a, err := os.ReadFile(filepath.Join(f.plain, name))
		if err != nil {
			t.Fatal(err)
		}
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(a, b) {
			t.Fatalf("%s differs from the plaintext", name)
		}
	}
}

// logLines parses the JSON log lines.
func logLines(t *testing.T, buf *bytes.Buffer) []map[string]any {
	t.Helper()
	var out []map[string]any
	for _, line := range strings.Split(strings.TrimSpace(buf.String()), "\n") {
		if line == "" {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("log line %q is not JSON: %v", line, err)
		}
		out = append(out, m)
	}
	return out
}

// entries lists the names in dir.
func entries(t *testing.T, dir string) []string {
	t.Helper()
	des, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, d := range des {
		out = append(out, d.Name())
	}
	return out
}
